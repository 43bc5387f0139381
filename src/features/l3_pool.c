/* l3_pool.c: see l3_pool.h. */
#include "features/l3_pool.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"

#define NS_PER_MS INT64_C(1000000)

int ox_l3_pool_init(ox_l3_pool_t *p, ox_l3_kind_t kind, size_t slot_size, int nslots,
                    int connect_timeout_ms, int command_timeout_ms,
                    const ox_breaker_opts_t *bopts) {
  memset(p, 0, sizeof *p);
  p->kind = kind;
  p->slot_size = slot_size;
  p->connect_ns = connect_timeout_ms * NS_PER_MS;
  p->command_ns = command_timeout_ms * NS_PER_MS;
  p->slots = aligned_alloc(64, slot_size * (size_t)nslots);
  if (!p->slots) return OX_ENOMEM;
  memset(p->slots, 0, slot_size * (size_t)nslots);
  p->nslots = nslots;
  return ox_breaker_create(bopts, &p->breaker);
}

void ox_l3_pool_fini(ox_l3_pool_t *p) {
  free(p->slots);
  p->slots = NULL;
  p->nslots = 0;
  ox_breaker_destroy(p->breaker);
  p->breaker = NULL;
}

/* ---- checkout --------------------------------------------------------------------------- */

_Static_assert(OX_L3_KIND_COUNT == 2, "one -1 per kind below");
static _Thread_local int hint[OX_L3_KIND_COUNT] = {-1, -1};
static atomic_uint next_hint[OX_L3_KIND_COUNT];

static void *checkout(ox_l3_pool_t *p) {
  int *h = &hint[p->kind];
  if (*h < 0) *h = (int)(atomic_fetch_add(&next_hint[p->kind], 1) % 1024);
  for (int i = 0; i < p->nslots; i++) {
    ox_l3_slot_t *s = ox_l3_pool_slot(p, (*h + i) % p->nslots);
    int free_ = 0;
    if (atomic_load_explicit(&s->busy, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_strong_explicit(&s->busy, &free_, 1, memory_order_acquire,
                                                memory_order_relaxed))
      return s;
  }
  return NULL;
}

static void checkin(void *slot) {
  ox_l3_slot_t *s = slot;
  atomic_store_explicit(&s->busy, 0, memory_order_release);
}

/* ---- calls ------------------------------------------------------------------------------ */

int ox_l3_pool_begin(ox_l3_pool_t *p, int64_t deadline, int guarded, ox_l3_call_t *call) {
  int64_t now = ox_mono_ns();
  if (deadline <= now) return OX_ETIMEOUT;
  memset(call, 0, sizeof *call);
  call->guarded = guarded;
  call->deadline = deadline;
  if (guarded && now + p->command_ns < deadline) call->deadline = now + p->command_ns;
  if (guarded) {
    int rc = ox_breaker_allow(p->breaker, now, &call->ticket);
    if (rc) return rc;
  }
  call->slot = checkout(p);
  if (!call->slot) {
    ox_l3_count(&p->exhausted);
    if (guarded) ox_breaker_done(p->breaker, &call->ticket, OX_BREAKER_IGNORED, now);
    return OX_EUNAVAILABLE;
  }
  return 0;
}

int ox_l3_pool_end(ox_l3_pool_t *p, ox_l3_call_t *call, int rc) {
  ox_breaker_outcome_t o;
  if (call->classified)
    o = call->outcome;
  else if (rc >= 0 || rc == OX_ENOT_FOUND)
    o = OX_BREAKER_SUCCESS;
  else if (rc == OX_ETIMEOUT)
    o = OX_BREAKER_TIMEOUT;
  else if (rc == OX_ENOMEM || rc == OX_EINVALID)
    o = OX_BREAKER_IGNORED;
  else
    o = OX_BREAKER_FAILURE;
  checkin(call->slot);
  if (call->guarded) ox_breaker_done(p->breaker, &call->ticket, o, ox_mono_ns());
  return rc;
}

int64_t ox_l3_pool_connect_deadline(const ox_l3_pool_t *p, int64_t deadline) {
  int64_t now = ox_mono_ns();
  return now + p->connect_ns < deadline ? now + p->connect_ns : deadline;
}

void ox_l3_pool_stats(const ox_l3_pool_t *p, ox_l3_stats_t *out) {
#define LD(f) atomic_load_explicit(&p->f, memory_order_relaxed)
  out->connects = LD(connects);
  out->connect_failures = LD(connect_failures);
  out->dropped = LD(dropped);
  out->stale = LD(stale);
  out->pool_exhausted = LD(exhausted);
#undef LD
  ox_breaker_stats(p->breaker, &out->breaker);
}

/* ---- waiting ---------------------------------------------------------------------------- */

int ox_l3_wait_fd(int fd, short events, int64_t deadline, short *revents) {
  if (fd < 0) return -EBADF;
  for (;;) {
    int64_t left = deadline - ox_mono_ns();
    if (left <= 0) return OX_ETIMEOUT;
    struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
    struct pollfd pfd = {.fd = fd, .events = events};
    int n = ppoll(&pfd, 1, &ts, NULL);
    if (n > 0) {
      if (revents) *revents = pfd.revents;
      return (pfd.revents & POLLNVAL) ? -EBADF : 0;
    }
    if (n < 0 && errno != EINTR) return -errno;
  }
}

int ox_l3_idle_ok(int fd) {
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  return poll(&pfd, 1, 0) <= 0;
}
