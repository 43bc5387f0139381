/* event_parse.h: the body of POST /v1/events, parsed and validated (pure: no I/O, no store).
 *
 * The body is JSON lines (one event object a line; blank lines allowed) or one JSON array of
 * event objects. An event has "ts" (integer ms), "amount" (a number from -OX_EVENT_MAX_AMOUNT to
 * OX_EVENT_MAX_AMOUNT: finite, and small enough that no window's sum can leave float32's range),
 * "merchant_id" and every key field (a non-empty string of at most OX_FSTORE_MAX_ID bytes, or an
 * integer taken as its digits); "event_id" is optional (a string of 1 to OX_FSTORE_MAX_EVENT_ID
 * bytes, no control characters: the event's idempotency key, see ox_fstore_ingest); other fields
 * are skipped (validated as JSON). Each key field X_id
 * gives the event the entity "X:<value>"; merchant_id becomes SipHash-2-4 of its text under the
 * store's merchant key (ox_fstore_merchant_hash). Bounded: at most OX_EVENTS_MAX events, nesting as
 * proto/json.h allows, numbers checked for overflow.
 */
#ifndef OX_SERVER_EVENT_PARSE_H
#define OX_SERVER_EVENT_PARSE_H

#include <stddef.h>

#include "core/arena.h"
#include "features/fstore.h"

#define OX_EVENTS_MAX 100000 /* events per request */
/* Largest |amount| of an event. A 24 h window holds at most the per-entity cap (fstore.h, at
 * most 2^32) of events, so its sum stays below 2^32 * 1e12 ~ 4.3e21, far inside float32's
 * range (3.4e38): a velocity feature can never become infinite. */
#define OX_EVENT_MAX_AMOUNT 1e12

typedef struct {
  const char *names[OX_FSTORE_MAX_ENTITIES]; /* event fields naming entities ("user_id") */
  size_t lens[OX_FSTORE_MAX_ENTITIES];
  size_t etype_lens[OX_FSTORE_MAX_ENTITIES]; /* their entity type: the name without "_id" */
  size_t n;
  /* the store's merchant key (ox_fstore_merchant_key), borrowed; NULL (as set by
   * ox_event_keys_parse) means the all-zero key, for tests without a store only */
  const ox_siphash_key_t *merchant_key;
} ox_event_keys_t;

/* Splits a comma-separated list of key fields ("user_id,card_id"; borrowed, must outlive k)
 * into k, at most OX_FSTORE_MAX_ENTITIES, empty names skipped. */
void ox_event_keys_parse(const char *spec, ox_event_keys_t *k);

/* Parses body[0..len) (NULL when len is 0). On success *out is a malloc'd array of *n >= 1
 * events (free it) whose entity names live in arena. Returns 0, OX_ENOMEM, or OX_EINVALID with
 * a message in err naming the line ("line 3: missing field 'card_id'; ...") or the array
 * element ("event 2 (of the array): ..."); nothing is returned then. */
int ox_events_parse(const char *body, size_t len, const ox_event_keys_t *keys, ox_arena_t *a,
                    ox_fstore_event_t **out, size_t *n, char *err, size_t errcap);

#endif
