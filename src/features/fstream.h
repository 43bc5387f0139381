/* fstream.h: the feature store replicated through one Redis Stream (--feature-events-stream).
 *
 * Every replica of a fraud-scoring deployment must see every event, whichever replica a client
 * posted it to. The stream is the one ordered log: a replica that takes a request appends it
 * (one entry per request: fields o = origin token, k = the event key fields, b = the request
 * body, as validated) and every replica, the one that appended included, runs one applier
 * thread that reads the stream in order (XREAD BLOCK from the last applied ID) and commits each
 * entry's events to its L2 with the entry's ID in the same transaction (ox_fstore_apply). So
 * applying is exactly-once across crashes (the ID and the events commit together), and every
 * replica holds the same events in the same order, with the same outcome for each entry
 * (duplicates by event_id, the per-entity cap) because that outcome depends only on the log.
 *
 * Appending: the entry is added by a Lua script that refuses itself ("ONNXD_LATE") when Redis
 * runs it after a deadline on Redis's own clock (the local deadline minus a margin, converted
 * with the measured offset between the clocks). So once the caller's deadline has passed, an
 * append that Redis had not run can never be added later (a paused Redis that wakes up), and
 * an answer of "not appended" is true. When the connection fails after the request was sent
 * (the reply lost), the outcome is looked up: the applier may apply the entry (its origin token
 * is ours), or a second script searches the recent entries for the token; the caller is told
 * "not appended" only when Redis says the entry is absent after the script's deadline, and
 * "unknown" when Redis cannot be asked again before the deadline (a crash with the reply lost:
 * the entry may be in the stream; a retry with the same event ids is then safe). Then the
 * caller waits for the local applier to apply the entry (read your writes).
 *
 * Retention: with trim_ms, one replica at a time (the holder of the Redis key "<key>:trim-lock",
 * taken with SET NX PX for two trim periods) deletes the entries older than trim_ms
 * (XTRIM MINID, exact) every trim_every_ms, in a Lua script that also records the largest ID
 * it deleted in "<key>:trimmed" (Redis 7.0's XTRIM does not update XINFO STREAM's
 * max-deleted-entry-id; that one is read too, for entries deleted by other means). A replica
 * whose position is below the largest deleted ID has a gap: it applies nothing, is not ready,
 * and says so; it must be started again from a peer's snapshot (--feature-bootstrap).
 *
 * Lag: the applier knows that every entry added before some time T is applied (T = the time it
 * sent a read that came back with the stream's end, or the time of the last applied ID);
 * lag = now - T, and 0 while it waits at the stream's end. Readiness: a replica becomes ready
 * once its lag has been within ready_lag_ms (it has caught up), and stays ready while Redis is
 * down (scoring goes on from local state; the lag grows and is exported), unless it has a gap.
 *
 * Threads: one applier thread; append, ready, status, metrics and snapshot from any thread.
 */
#ifndef OX_FEATURES_FSTREAM_H
#define OX_FEATURES_FSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/slice.h"
#include "features/fstore.h"

/* Turns an entry's body into events, as POST /v1/events would: keys is the entry's key-field
 * spec. *evs is malloc'd (freed by the caller), names in a. 0 or an error (the entry is then
 * skipped by every replica alike: counted and logged). */
typedef int (*ox_fstream_decode_fn)(void *arg, ox_slice_t body, ox_slice_t keys, ox_arena_t *a,
                                    ox_fstore_event_t **evs, size_t *n);

/* Largest request body appended as one entry. A read takes at most READ_MAX (128) entries, so
 * one read's reply stays below 256 MiB whatever the entries (they are usually far smaller: the
 * applier aims at about 8 MiB a read). */
#define OX_FSTREAM_MAX_ENTRY (2u << 20)

typedef struct {
  const char *key;       /* the stream's Redis key */
  const char *redis;     /* "HOST:PORT" */
  int64_t timeout_ms;    /* append + local apply, per request [2000] */
  int64_t ready_lag_ms;  /* ready once the lag is within this [5000] */
  int64_t trim_ms;       /* trim entries older than this (0: never) */
  int64_t trim_every_ms; /* [60000] */
  ox_fstream_decode_fn decode;
  void *decode_arg;
} ox_fstream_opts_t;

typedef struct ox_fstream ox_fstream_t;

/* Reads the store's position and starts the applier (it connects in the background: Redis may
 * be down at start). 0 and *out, or an error with a reason in err. */
int ox_fstream_open(ox_fstore_t *fs, const ox_fstream_opts_t *o, ox_fstream_t **out, char *err,
                    size_t errcap);
/* Stops the applier (within about a second) and frees everything; appends still waiting are
 * answered first. No append may start after. NULL allowed. */
void ox_fstream_close(ox_fstream_t *s);

typedef struct {
  char id[48];                                 /* the entry's stream ID, once appended */
  size_t accepted, duplicates;                 /* applied here: the entry's outcome */
  char quota_entity[OX_FSTORE_MAX_ENTITY + 1]; /* with OX_EQUOTA */
  char why[320];                               /* with an error: what happened */
} ox_fstream_result_t;

/* One request to append (ox_fstream_submit). The caller fills body, keys and done, and keeps
 * body and keys valid until done is called. */
typedef struct ox_fstream_req {
  ox_slice_t body, keys; /* the request body (validated) and its key-field spec */
  /* Called exactly once, on one of the stream's threads (or in ox_fstream_submit when the
   * stream is closing), with the outcome: 0 (appended and applied here: result's accepted and
   * duplicates set), OX_EQUOTA (appended, refused whole by every replica: quota_entity),
   * OX_EPENDING (appended, id set, not applied here within the timeout), OX_EUNAVAILABLE (not
   * appended: Redis down, slow or refusing; why says which), OX_ETIMEOUT (the connection failed
   * after the append was sent and Redis could not be asked again before the deadline: the
   * entry may or may not be in the stream). */
  void (*done)(struct ox_fstream_req *q, int rc);
  ox_fstream_result_t result;
  /* private */
  struct ox_fstream_req *next, *qnext, *dnext;
  uint64_t seq;
  int64_t deadline_ns, redis_deadline_ms, next_find_ns;
  int state, fail_rc, busy, applied, applied_rc;
  char origin[80]; /* "<token>-<seq>", then (after its NUL) the deadline's digits */
} ox_fstream_req_t;

/* Queues q for the appender thread and returns at once: no caller's thread waits on Redis or
 * on the applier. The appender pipelines the queued appends on one connection; the applier
 * completes each once it has applied its entry (read your writes); the appender completes the
 * ones that fail or time out (--feature-stream-timeout-ms from this call). */
void ox_fstream_submit(ox_fstream_t *s, ox_fstream_req_t *q);

/* 1 when ready (caught up once, no gap); else 0 with the reason in why. */
int ox_fstream_ready(ox_fstream_t *s, char *why, size_t cap);
/* GET /v1/features/stream's JSON object. 0 or OX_ENOMEM. */
int ox_fstream_status_json(ox_fstream_t *s, ox_buf_t *out);
/* The stream's Prometheus text. 0 or OX_ENOMEM. */
int ox_fstream_metrics(ox_fstream_t *s, ox_buf_t *out);
/* Writes a consistent copy of the store to fd and the stream ID it includes to id (applying
 * waits meanwhile). 0 or an error. */
int ox_fstream_snapshot(ox_fstream_t *s, int fd, char *id, size_t cap);

/* --feature-bootstrap: when dir holds no store (no data.mdb), fetches url's snapshot
 * (GET <url>/v1/features/snapshot, with "Authorization: Bearer <token>" when token is set)
 * into dir/data.mdb (written aside, fsynced, renamed), retrying for up to wait_ms while the
 * peer cannot be reached. Returns 0 (installed), 1 (dir already holds a store: kept), or -1
 * with the reason in err (the caller may start with an empty store). */
int ox_fstream_bootstrap(const char *url, const char *dir, const char *token, int64_t wait_ms,
                         char *err, size_t errcap);

/* The head of the snapshot's HTTP answer, buf[0..len) as received so far (not NUL-terminated):
 * 0 when it does not hold the whole head yet; -1 when the status line or Content-Length is not
 * valid; 1 with *status, *clen (-1: none), id (X-Onnxd-Stream-Id, "" when absent, cut to
 * idcap - 1 bytes of digits and '-') and *body_off (where the body starts). Reads only
 * buf[0..len). */
int ox_fstream_parse_head(const char *buf, size_t len, int *status, long long *clen, char *id,
                          size_t idcap, size_t *body_off);

#endif
