/* breaker_test.c: the circuit breaker (features/breaker) on its own: its state machine driven by a
 * fake clock, its counts under threads, and what admitting or refusing a call costs (printed as
 * a "# l3 breaker" line). The tiers' use of it against real servers is in l3_redis_test.c and
 * l3_pg_test.c.
 */
#include <pthread.h>

#include "core/error.h"
#include "features/breaker.h"
#include "test.h"

#define MS INT64_C(1000000)

static int64_t now_ns(void) {
  return ox_mono_ns();
}

#define T0 INT64_C(1000000000000)

static ox_breaker_t *mk_breaker(int failures, int cooldown_ms) {
  ox_breaker_t *b = NULL;
  ox_breaker_opts_t o = {.failures = failures, .cooldown_ms = cooldown_ms};
  CHECK_INT(ox_breaker_create(&o, &b), 0);
  return b;
}

/* One admitted call with the given outcome; returns allow's result. */
static int call_with(ox_breaker_t *b, int64_t t, ox_breaker_outcome_t o) {
  ox_breaker_ticket_t tk;
  int rc = ox_breaker_allow(b, t, &tk);
  if (rc == 0) ox_breaker_done(b, &tk, o, t);
  return rc;
}

TEST(breaker_opens_after_consecutive_failures) {
  ox_breaker_t *b = mk_breaker(3, 100);
  CHECK_INT(call_with(b, T0, OX_BREAKER_FAILURE), 0);
  CHECK_INT(call_with(b, T0, OX_BREAKER_TIMEOUT), 0);
  CHECK_INT(call_with(b, T0, OX_BREAKER_SUCCESS), 0); /* resets the run */
  CHECK_INT(call_with(b, T0, OX_BREAKER_FAILURE), 0);
  CHECK_INT(call_with(b, T0, OX_BREAKER_IGNORED), 0); /* neither breaks nor extends the run */
  CHECK_INT(call_with(b, T0, OX_BREAKER_FAILURE), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  CHECK_INT(call_with(b, T0, OX_BREAKER_TIMEOUT), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  CHECK_INT(call_with(b, T0 + 99 * MS, OX_BREAKER_SUCCESS), OX_EUNAVAILABLE);
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(s.calls, 7);
  CHECK_INT(s.successes, 1);
  CHECK_INT(s.failures, 3);
  CHECK_INT(s.timeouts, 2);
  CHECK_INT(s.short_circuited, 1);
  CHECK_INT(s.opened, 1);
  CHECK_STR(ox_breaker_state_name(s.state), "open");
  ox_breaker_destroy(b);
}

TEST(breaker_half_open_admits_one_probe) {
  ox_breaker_t *b = mk_breaker(2, 100);
  call_with(b, T0, OX_BREAKER_FAILURE);
  call_with(b, T0, OX_BREAKER_FAILURE);
  ox_breaker_ticket_t probe, other;
  CHECK_INT(ox_breaker_allow(b, T0 + 100 * MS - 1, &other), OX_EUNAVAILABLE);
  CHECK_INT(ox_breaker_allow(b, T0 + 100 * MS, &probe), 0);
  CHECK_INT(probe.probe, 1);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_HALF_OPEN);
  CHECK_INT(ox_breaker_allow(b, T0 + 100 * MS, &other), OX_EUNAVAILABLE); /* probe out */
  ox_breaker_done(b, &probe, OX_BREAKER_SUCCESS, T0 + 101 * MS);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  CHECK_INT(ox_breaker_allow(b, T0 + 101 * MS, &other), 0);
  CHECK_INT(other.probe, 0);
  ox_breaker_done(b, &other, OX_BREAKER_SUCCESS, T0 + 101 * MS);
  /* closing forgot the old run: one failure does not reopen it */
  CHECK_INT(call_with(b, T0 + 102 * MS, OX_BREAKER_FAILURE), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(s.probes, 1);
  CHECK_INT(s.short_circuited, 2);
  ox_breaker_destroy(b);
}

TEST(breaker_probe_failure_reopens) {
  ox_breaker_t *b = mk_breaker(1, 100);
  call_with(b, T0, OX_BREAKER_FAILURE);
  int64_t t = T0 + 100 * MS;
  CHECK_INT(call_with(b, t, OX_BREAKER_TIMEOUT), 0); /* the probe */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  CHECK_INT(call_with(b, t + 99 * MS, OX_BREAKER_SUCCESS), OX_EUNAVAILABLE); /* new cool-down */
  /* an ignored probe (bad input) lets the next caller probe at once */
  CHECK_INT(call_with(b, t + 100 * MS, OX_BREAKER_IGNORED), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_HALF_OPEN);
  CHECK_INT(call_with(b, t + 100 * MS, OX_BREAKER_SUCCESS), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(s.opened, 2);
  CHECK_INT(s.probes, 3);
  ox_breaker_destroy(b);
}

TEST(breaker_lost_probe_expires) {
  ox_breaker_t *b = mk_breaker(1, 100);
  call_with(b, T0, OX_BREAKER_FAILURE);
  ox_breaker_ticket_t lost, next;
  CHECK_INT(ox_breaker_allow(b, T0 + 100 * MS, &lost), 0); /* never reported */
  CHECK_INT(ox_breaker_allow(b, T0 + 199 * MS, &next), OX_EUNAVAILABLE);
  CHECK_INT(ox_breaker_allow(b, T0 + 200 * MS, &next), 0);
  CHECK_INT(next.probe, 1);
  ox_breaker_done(b, &next, OX_BREAKER_SUCCESS, T0 + 200 * MS);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  ox_breaker_done(b, &lost, OX_BREAKER_FAILURE, T0 + 201 * MS); /* stale: no effect */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  ox_breaker_destroy(b);
}

TEST(breaker_stale_outcomes_change_nothing) {
  ox_breaker_t *b = mk_breaker(2, 100);
  ox_breaker_ticket_t slow;
  CHECK_INT(ox_breaker_allow(b, T0, &slow), 0); /* admitted while closed, answers late */
  call_with(b, T0, OX_BREAKER_FAILURE);
  call_with(b, T0, OX_BREAKER_FAILURE);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  ox_breaker_done(b, &slow, OX_BREAKER_SUCCESS, T0 + MS);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN); /* a late success does not close it */
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(s.successes, 1); /* but it is counted */
  ox_breaker_destroy(b);
}

TEST(breaker_failure_ratio_window) {
  ox_breaker_t *b = NULL;
  ox_breaker_opts_t o = {
      .failures = -1, .failure_ratio = 0.5, .min_calls = 10, .window_ms = 1000, .cooldown_ms = 100};
  CHECK_INT(ox_breaker_create(&o, &b), 0);
  for (int i = 0; i < 6; i++) call_with(b, T0, OX_BREAKER_SUCCESS);
  for (int i = 0; i < 5; i++) call_with(b, T0, OX_BREAKER_FAILURE); /* 5/11 */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  call_with(b, T0, OX_BREAKER_FAILURE); /* 6/12 */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  call_with(b, T0 + 100 * MS, OX_BREAKER_SUCCESS); /* probe closes; window starts over */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  for (int i = 0; i < 9; i++) call_with(b, T0 + 200 * MS, OX_BREAKER_FAILURE); /* < min_calls */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  /* a new window forgets those nine */
  for (int i = 0; i < 9; i++) call_with(b, T0 + 1300 * MS, OX_BREAKER_FAILURE);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  call_with(b, T0 + 1300 * MS, OX_BREAKER_FAILURE);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  ox_breaker_destroy(b);
  /* bad options */
  ox_breaker_opts_t bad = {.failure_ratio = 1.5};
  CHECK_INT(ox_breaker_create(&bad, &b), OX_EINVALID);
  bad = (ox_breaker_opts_t){.cooldown_ms = -1};
  CHECK_INT(ox_breaker_create(&bad, &b), OX_EINVALID);
}

typedef struct {
  ox_breaker_t *b;
  unsigned seed;
  long admitted, refused;
} bthr_t;

static void *breaker_hammer(void *p) {
  bthr_t *a = p;
  for (int i = 0; i < 50000; i++) {
    ox_breaker_ticket_t t;
    if (ox_breaker_allow(a->b, now_ns(), &t)) {
      a->refused++;
      continue;
    }
    a->admitted++;
    unsigned r = rand_r(&a->seed) % 16;
    ox_breaker_done(a->b, &t,
                    r == 0   ? OX_BREAKER_FAILURE
                    : r == 1 ? OX_BREAKER_TIMEOUT
                             : OX_BREAKER_SUCCESS,
                    now_ns());
  }
  return NULL;
}

TEST(breaker_threads_keep_counts) {
  ox_breaker_t *b = mk_breaker(3, 1);
  bthr_t a[8];
  pthread_t th[8];
  for (int i = 0; i < 8; i++) {
    a[i] = (bthr_t){.b = b, .seed = (unsigned)i + 1};
    pthread_create(&th[i], NULL, breaker_hammer, &a[i]);
  }
  long admitted = 0, refused = 0;
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    admitted += a[i].admitted;
    refused += a[i].refused;
  }
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(admitted + refused, 8 * 50000);
  CHECK_INT(s.calls, admitted);
  CHECK_INT(s.short_circuited, refused);
  CHECK_INT(s.successes + s.failures + s.timeouts, admitted);
  ox_breaker_destroy(b);
}

/* ==== measurements ========================================================================= */

TEST(breaker_latency_report) {
  /* breaker alone: admit+report while closed, refusal while open */
  ox_breaker_t *b = mk_breaker(1, 60000);
  ox_breaker_ticket_t t;
  int64_t t0 = now_ns();
  for (int i = 0; i < 1000000; i++) {
    ox_breaker_allow(b, t0, &t);
    ox_breaker_done(b, &t, OX_BREAKER_SUCCESS, t0);
  }
  double closed_ns = (double)(now_ns() - t0) / 1e6;
  call_with(b, t0, OX_BREAKER_FAILURE);
  t0 = now_ns();
  int refused = 0;
  for (int i = 0; i < 1000000; i++) refused += ox_breaker_allow(b, t0, &t) == OX_EUNAVAILABLE;
  double open_ns = (double)(now_ns() - t0) / 1e6;
  CHECK_INT(refused, 1000000);
  printf("# l3 breaker: allow+done (closed) %.1f ns, refusal (open) %.1f ns\n", closed_ns, open_ns);
  ox_breaker_destroy(b);
}

TEST_MAIN(T(breaker_opens_after_consecutive_failures), T(breaker_half_open_admits_one_probe),
          T(breaker_probe_failure_reopens), T(breaker_lost_probe_expires),
          T(breaker_stale_outcomes_change_nothing), T(breaker_failure_ratio_window),
          T(breaker_threads_keep_counts), T(breaker_latency_report))
