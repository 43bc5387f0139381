/* breaker.h: a circuit breaker for one remote dependency (one feature tier: Redis, PostgreSQL).
 *
 * closed -> open after `failures` consecutive failures or timeouts, or when the failure ratio over
 * a tumbling window reaches `failure_ratio` (once the window has `min_calls` calls). Open: every
 * call is refused at once, with no network, for `cooldown_ms`. Then half-open: exactly one probe
 * call goes through; its success closes the breaker, its failure opens it for another cool-down.
 * Nothing outside has to poke it: the first call after the cool-down is the probe, so a tier that
 * comes back is used again by itself.
 *
 * Design: the state and a generation number share one atomic word, so the common paths (closed:
 * admit; open within the cool-down: refuse; success while closed) are atomic loads and relaxed
 * increments, no lock. Failures and transitions take a small mutex. Every admitted call carries a
 * ticket with the generation it was admitted in: an outcome reported after the state moved on (a
 * slow call that started before the breaker opened) is counted but changes no state. A probe
 * whose outcome is never reported stops blocking other probes after one cool-down.
 *
 * Time is CLOCK_MONOTONIC nanoseconds passed in by the caller (ox_mono_ns()), which keeps
 * the state machine testable without sleeping. The feature tiers use the same clock for their
 * absolute deadlines.
 */
#ifndef OX_FEATURES_BREAKER_H
#define OX_FEATURES_BREAKER_H

#include <stdint.h>
#include <time.h>

#include "core/clock.h"

typedef struct {
  int failures;         /* consecutive failures/timeouts that open it; 0 = 5, < 0 = never */
  double failure_ratio; /* open at failures/calls >= this within a window; 0 = off */
  int min_calls;        /* calls a window needs before the ratio counts; 0 = 20 */
  int window_ms;        /* length of the ratio window; 0 = 10000 */
  int cooldown_ms;      /* open -> half-open after this; 0 = 1000 */
} ox_breaker_opts_t;

typedef enum { OX_BREAKER_CLOSED, OX_BREAKER_OPEN, OX_BREAKER_HALF_OPEN } ox_breaker_state_t;

typedef enum {
  OX_BREAKER_SUCCESS, /* the dependency answered (a miss is a success) */
  OX_BREAKER_FAILURE, /* connection refused/reset, server unavailable */
  OX_BREAKER_TIMEOUT, /* no answer within the call's deadline */
  OX_BREAKER_IGNORED  /* says nothing about the dependency (bad input, local ENOMEM): no count */
} ox_breaker_outcome_t;

/* Handed out by ox_breaker_allow, given back to ox_breaker_done. Plain value, no resources. */
typedef struct {
  uint64_t gen;
  int probe;
} ox_breaker_ticket_t;

typedef struct {
  ox_breaker_state_t state;
  uint64_t calls; /* admitted, probes included */
  uint64_t successes;
  uint64_t failures;
  uint64_t timeouts;
  uint64_t short_circuited; /* refused without a call */
  uint64_t opened;          /* transitions to open */
  uint64_t probes;          /* half-open probes admitted */
} ox_breaker_stats_t;

typedef struct ox_breaker ox_breaker_t;

/* Creates a closed breaker. opts may be NULL (all defaults); zero fields take the defaults above.
 * 0, OX_EINVALID (negative cool-down/window, ratio outside [0, 1]) or OX_ENOMEM. Owned: free with
 * ox_breaker_destroy. */
int ox_breaker_create(const ox_breaker_opts_t *opts, ox_breaker_t **out);
void ox_breaker_destroy(ox_breaker_t *b);

/* Asks to make a call at now_ns. 0: go ahead, then report with ox_breaker_done(*ticket) exactly
 * once; OX_EUNAVAILABLE: open (or half-open with the probe out): do not call. Thread-safe. */
int ox_breaker_allow(ox_breaker_t *b, int64_t now_ns, ox_breaker_ticket_t *ticket);

/* Reports how an admitted call went. Thread-safe. */
void ox_breaker_done(ox_breaker_t *b, const ox_breaker_ticket_t *ticket,
                     ox_breaker_outcome_t outcome, int64_t now_ns);

/* Current state (a relaxed snapshot). */
ox_breaker_state_t ox_breaker_state(const ox_breaker_t *b);
/* Counters since creation, for metrics; each field is read atomically, the set is not a
 * snapshot. */
void ox_breaker_stats(const ox_breaker_t *b, ox_breaker_stats_t *out);
/* "closed", "open" or "half_open". */
const char *ox_breaker_state_name(ox_breaker_state_t s);

#endif
