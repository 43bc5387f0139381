/* breaker.c: see breaker.h.
 *
 * `word` = generation << 2 | state. Every transition bumps the generation under `mu`, and
 * writes `open_until` before publishing the new word (release), so a lock-free reader that sees
 * OPEN (acquire) also sees its cool-down. Counters are relaxed atomics: they feed metrics, not
 * decisions. The ratio window is approximate by design: successes are added without the lock and
 * may land in the window just rolled over.
 */
#include "features/breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/error.h"

#define NS_PER_MS INT64_C(1000000)

struct ox_breaker {
  /* settings, fixed after create */
  int failures;
  double ratio;
  uint64_t min_calls;
  int64_t window_ns, cooldown_ns;

  _Atomic uint64_t word;
  _Atomic int64_t open_until;
  _Atomic uint32_t consecutive;
  _Atomic uint64_t win_calls, win_fails;
  _Atomic int64_t win_end;

  pthread_mutex_t mu;
  int probe_out;         /* under mu: the half-open probe is in flight */
  int64_t probe_expires; /* under mu: after this a lost probe no longer blocks another */

  _Atomic uint64_t n_calls, n_ok, n_fail, n_timeout, n_short, n_opened, n_probes;
};

static inline uint64_t word_of(uint64_t gen, ox_breaker_state_t s) {
  return gen << 2 | (uint64_t)s;
}
static inline ox_breaker_state_t state_of(uint64_t w) {
  return (ox_breaker_state_t)(w & 3);
}
static inline uint64_t gen_of(uint64_t w) {
  return w >> 2;
}
static inline void inc(_Atomic uint64_t *c) {
  atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

int ox_breaker_create(const ox_breaker_opts_t *opts, ox_breaker_t **out) {
  ox_breaker_opts_t o = opts ? *opts : (ox_breaker_opts_t){0};
  if (o.cooldown_ms < 0 || o.window_ms < 0 || o.min_calls < 0 || !(o.failure_ratio >= 0) ||
      o.failure_ratio > 1)
    return OX_EINVALID;
  ox_breaker_t *b = calloc(1, sizeof *b);
  if (!b) return OX_ENOMEM;
  b->failures = o.failures == 0 ? 5 : o.failures;
  b->ratio = o.failure_ratio;
  b->min_calls = (uint64_t)(o.min_calls ? o.min_calls : 20);
  b->window_ns = (o.window_ms ? o.window_ms : 10000) * NS_PER_MS;
  b->cooldown_ns = (o.cooldown_ms ? o.cooldown_ms : 1000) * NS_PER_MS;
  atomic_init(&b->word, word_of(0, OX_BREAKER_CLOSED));
  atomic_init(&b->win_end, 0);
  pthread_mutex_init(&b->mu, NULL);
  *out = b;
  return 0;
}

void ox_breaker_destroy(ox_breaker_t *b) {
  if (!b) return;
  pthread_mutex_destroy(&b->mu);
  free(b);
}

/* Under mu. */
static void window_roll(ox_breaker_t *b, int64_t now_ns) {
  if (now_ns < atomic_load_explicit(&b->win_end, memory_order_relaxed)) return;
  atomic_store_explicit(&b->win_calls, 0, memory_order_relaxed);
  atomic_store_explicit(&b->win_fails, 0, memory_order_relaxed);
  atomic_store_explicit(&b->win_end, now_ns + b->window_ns, memory_order_relaxed);
}

/* Under mu: publishes a new state with the next generation. */
static void transition(ox_breaker_t *b, ox_breaker_state_t s, int64_t now_ns) {
  uint64_t gen = gen_of(atomic_load_explicit(&b->word, memory_order_relaxed)) + 1;
  if (s == OX_BREAKER_OPEN) {
    atomic_store_explicit(&b->open_until, now_ns + b->cooldown_ns, memory_order_relaxed);
    inc(&b->n_opened);
  }
  if (s == OX_BREAKER_CLOSED) {
    atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
    atomic_store_explicit(&b->win_end, 0, memory_order_relaxed);
    window_roll(b, now_ns);
  }
  b->probe_out = 0;
  atomic_store_explicit(&b->word, word_of(gen, s), memory_order_release);
}

int ox_breaker_allow(ox_breaker_t *b, int64_t now_ns, ox_breaker_ticket_t *ticket) {
  uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
  if (state_of(w) == OX_BREAKER_CLOSED) {
    ticket->gen = gen_of(w);
    ticket->probe = 0;
    inc(&b->n_calls);
    return 0;
  }
  if (state_of(w) == OX_BREAKER_OPEN &&
      now_ns < atomic_load_explicit(&b->open_until, memory_order_relaxed)) {
    inc(&b->n_short);
    return OX_EUNAVAILABLE;
  }
  int rc = 0;
  pthread_mutex_lock(&b->mu);
  w = atomic_load_explicit(&b->word, memory_order_relaxed);
  switch (state_of(w)) {
    case OX_BREAKER_CLOSED:
      ticket->gen = gen_of(w);
      ticket->probe = 0;
      inc(&b->n_calls);
      break;
    case OX_BREAKER_OPEN:
      if (now_ns < atomic_load_explicit(&b->open_until, memory_order_relaxed)) {
        rc = OX_EUNAVAILABLE;
        break;
      }
      transition(b, OX_BREAKER_HALF_OPEN, now_ns);
      w = atomic_load_explicit(&b->word, memory_order_relaxed);
      __attribute__((fallthrough)); /* this caller is the probe */
    case OX_BREAKER_HALF_OPEN:
    default:
      if (b->probe_out && now_ns < b->probe_expires) {
        rc = OX_EUNAVAILABLE;
        break;
      }
      b->probe_out = 1;
      b->probe_expires = now_ns + b->cooldown_ns;
      ticket->gen = gen_of(w);
      ticket->probe = 1;
      inc(&b->n_calls);
      inc(&b->n_probes);
      break;
  }
  pthread_mutex_unlock(&b->mu);
  if (rc) inc(&b->n_short);
  return rc;
}

void ox_breaker_done(ox_breaker_t *b, const ox_breaker_ticket_t *t, ox_breaker_outcome_t outcome,
                     int64_t now_ns) {
  switch (outcome) {
    case OX_BREAKER_SUCCESS:
      inc(&b->n_ok);
      break;
    case OX_BREAKER_FAILURE:
      inc(&b->n_fail);
      break;
    case OX_BREAKER_TIMEOUT:
      inc(&b->n_timeout);
      break;
    case OX_BREAKER_IGNORED:
      break;
  }
  uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
  if (gen_of(w) != t->gen) return; /* the state moved on since this call was admitted */
  int bad = outcome == OX_BREAKER_FAILURE || outcome == OX_BREAKER_TIMEOUT;

  if (state_of(w) == OX_BREAKER_CLOSED && !bad) {
    if (outcome == OX_BREAKER_IGNORED) return;
    /* The healthy path: no lock, and no store unless there is something to reset. */
    if (atomic_load_explicit(&b->consecutive, memory_order_relaxed))
      atomic_store_explicit(&b->consecutive, 0, memory_order_relaxed);
    if (b->ratio > 0) {
      if (now_ns >= atomic_load_explicit(&b->win_end, memory_order_relaxed)) {
        pthread_mutex_lock(&b->mu);
        window_roll(b, now_ns);
        pthread_mutex_unlock(&b->mu);
      }
      inc(&b->win_calls);
    }
    return;
  }

  pthread_mutex_lock(&b->mu);
  if (atomic_load_explicit(&b->word, memory_order_relaxed) != w) goto out;
  if (state_of(w) == OX_BREAKER_CLOSED) { /* a failure or timeout */
    uint32_t n = atomic_load_explicit(&b->consecutive, memory_order_relaxed) + 1;
    atomic_store_explicit(&b->consecutive, n, memory_order_relaxed);
    int trip = b->failures > 0 && n >= (uint32_t)b->failures;
    if (b->ratio > 0) {
      window_roll(b, now_ns);
      uint64_t calls = atomic_fetch_add_explicit(&b->win_calls, 1, memory_order_relaxed) + 1;
      uint64_t fails = atomic_fetch_add_explicit(&b->win_fails, 1, memory_order_relaxed) + 1;
      if (calls >= b->min_calls && (double)fails >= b->ratio * (double)calls) trip = 1;
    }
    if (trip) transition(b, OX_BREAKER_OPEN, now_ns);
  } else if (state_of(w) == OX_BREAKER_HALF_OPEN && t->probe) {
    if (outcome == OX_BREAKER_SUCCESS)
      transition(b, OX_BREAKER_CLOSED, now_ns);
    else if (bad)
      transition(b, OX_BREAKER_OPEN, now_ns);
    else
      b->probe_out = 0; /* ignored: let the next caller probe */
  }
out:
  pthread_mutex_unlock(&b->mu);
}

ox_breaker_state_t ox_breaker_state(const ox_breaker_t *b) {
  return state_of(atomic_load_explicit(&((ox_breaker_t *)b)->word, memory_order_relaxed));
}

void ox_breaker_stats(const ox_breaker_t *b, ox_breaker_stats_t *out) {
  ox_breaker_t *m = (ox_breaker_t *)b; /* atomic loads want a non-const object in C11 */
#define LD(f) atomic_load_explicit(&m->f, memory_order_relaxed)
  out->state = state_of(LD(word));
  out->calls = LD(n_calls);
  out->successes = LD(n_ok);
  out->failures = LD(n_fail);
  out->timeouts = LD(n_timeout);
  out->short_circuited = LD(n_short);
  out->opened = LD(n_opened);
  out->probes = LD(n_probes);
#undef LD
}

const char *ox_breaker_state_name(ox_breaker_state_t s) {
  switch (s) {
    case OX_BREAKER_CLOSED:
      return "closed";
    case OX_BREAKER_OPEN:
      return "open";
    case OX_BREAKER_HALF_OPEN:
      return "half_open";
  }
  return "unknown";
}
