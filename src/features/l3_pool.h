/* l3_pool.h: what the two L3 clients (l3_redis.c, l3_pg.c) share, below the protocol: a fixed
 * array of connection slots checked out without a lock, the per-call deadline, the circuit
 * breaker's ticket and outcome, and the connection counters. Internal to features/.
 *
 * A call is ox_l3_pool_begin (deadline check, command-timeout cap, breaker, slot checkout), then
 * the client's own work on the slot (liveness check, connect, request, reply), then
 * ox_l3_pool_end (breaker outcome, check-in). The pool knows nothing about connections: each
 * client's slot type starts with an ox_l3_slot_t and carries its connection after it, and the
 * client decides when a connection is stale or must be dropped (counting it here).
 *
 * Checkout: an atomic busy flag per slot, one cache line per slot. Each thread starts scanning at
 * its own slot (a thread-local hint, numbered separately per client kind so that threads which
 * only use Redis do not shift the PostgreSQL numbering), so with pool_size >= the number of
 * calling threads every thread keeps "its" connection. No slot free is OX_EUNAVAILABLE at once
 * rather than a queue. The slot's contents belong to whoever holds its busy flag.
 */
#ifndef OX_FEATURES_L3_POOL_H
#define OX_FEATURES_L3_POOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "features/breaker.h"

/* Counters of one L3 client (ox_l3_redis_stats, ox_l3_pg_stats). */
typedef struct {
  uint64_t connects;         /* connections established (handshake done) */
  uint64_t connect_failures; /* attempts that failed or timed out */
  uint64_t dropped;          /* connections closed after an error or a timeout */
  uint64_t stale;            /* idle connections found closed by the server on checkout */
  uint64_t pool_exhausted;   /* calls refused: every slot busy */
  ox_breaker_stats_t breaker;
} ox_l3_stats_t;

/* Which client a pool serves: each kind numbers the calling threads for its start hints. */
typedef enum { OX_L3_KIND_REDIS, OX_L3_KIND_PG, OX_L3_KIND_COUNT } ox_l3_kind_t;

/* The head of every slot: a client's slot type is
 *   typedef struct { _Alignas(64) ox_l3_slot_t base; <connection>; ... } my_slot_t;
 * (_Alignas(64): one cache line per slot, no false sharing between workers). */
typedef struct {
  atomic_int busy;
} ox_l3_slot_t;

typedef struct {
  unsigned char *slots; /* nslots * slot_size bytes, 64-aligned, zeroed at init */
  size_t slot_size;
  int nslots;
  ox_l3_kind_t kind;
  int64_t connect_ns, command_ns;
  ox_breaker_t *breaker;
  _Atomic uint64_t connects, connect_failures, dropped, stale, exhausted;
} ox_l3_pool_t;

typedef struct {
  void *slot;  /* the client's slot type, checked out for this call */
  int guarded; /* goes through the breaker */
  ox_breaker_ticket_t ticket;
  int64_t
      deadline;   /* guarded: min(caller's deadline, start + command timeout); else the caller's */
  int classified; /* the client read a whole reply and set outcome itself */
  ox_breaker_outcome_t outcome;
} ox_l3_call_t;

/* Sets up p (embedded in the client): nslots zeroed slots of slot_size bytes (a multiple of 64,
 * as sizeof of a slot type declared as above is), the timeouts, a breaker from bopts. 0 or
 * OX_ENOMEM, or the breaker's OX_EINVALID. On error call ox_l3_pool_fini all the same. */
int ox_l3_pool_init(ox_l3_pool_t *p, ox_l3_kind_t kind, size_t slot_size, int nslots,
                    int connect_timeout_ms, int command_timeout_ms, const ox_breaker_opts_t *bopts);
/* Frees the slots and the breaker; the client has closed its slots' connections before. A zeroed
 * or half-initialised p is fine. */
void ox_l3_pool_fini(ox_l3_pool_t *p);

/* Slot i (0 <= i < p->nslots), for set-up and tear-down; NULL when the slots were not allocated. */
static inline void *ox_l3_pool_slot(const ox_l3_pool_t *p, int i) {
  return p->slots ? p->slots + (size_t)i * p->slot_size : NULL;
}

/* Starts a call: OX_ETIMEOUT when the deadline has passed, the breaker's OX_EUNAVAILABLE when
 * guarded and open, OX_EUNAVAILABLE when every slot is busy (counted; the breaker hears
 * nothing). On 0, call->slot is the caller's until ox_l3_pool_end, which must follow exactly once
 * (also when the client's connect fails). */
int ox_l3_pool_begin(ox_l3_pool_t *p, int64_t deadline_ns, int guarded, ox_l3_call_t *call);

/* Ends a call begun with 0: reports the outcome to the breaker (when guarded) and checks the slot
 * in. The outcome is call->outcome when call->classified, else from rc: >= 0 or OX_ENOT_FOUND
 * success, OX_ETIMEOUT timeout, OX_ENOMEM and OX_EINVALID ignored, any other error a failure.
 * The client drops the slot's connection before this if it must. Returns rc. */
int ox_l3_pool_end(ox_l3_pool_t *p, ox_l3_call_t *call, int rc);

/* The deadline for connecting: min(deadline, now + connect timeout). */
int64_t ox_l3_pool_connect_deadline(const ox_l3_pool_t *p, int64_t deadline);

/* Counts one event in one of p's counters (&p->connects, ...). Relaxed. */
static inline void ox_l3_count(_Atomic uint64_t *c) {
  atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

void ox_l3_pool_stats(const ox_l3_pool_t *p, ox_l3_stats_t *out);

/* Waits until fd is ready for events or the deadline passes: 0 (ready, or an error/hang-up the
 * next read or write will report), OX_ETIMEOUT, -EBADF (fd < 0 or not open) or -errno.
 * *revents (may be NULL) receives what fired. */
int ox_l3_wait_fd(int fd, short events, int64_t deadline, short *revents);

/* An idle connection's socket must have nothing to read: neither server speaks unprompted, so a
 * readable one was closed by the server (or is out of step). One zero-timeout poll. 1 = usable. */
int ox_l3_idle_ok(int fd);

#endif
