/* fstore.h: the feature store: the tiers of features/ wired together for request-time lookups
 * (feature rows and velocity features) and for ingestion (events, rows). It depends on core/
 * only; the HTTP face of events and rows (server/events.c) and the assembly of a model's
 * feature view (infer/features_view.c) are the inference core's and call the functions below.
 *
 *   L1   features/l1.h, in RAM, with a TTL: feature rows ("<table>:<key>") and each entity's
 *        recent event list ("~ev:<entity>", see below).
 *   L2   features/l2.h, LMDB in --feature-dir: rows, and every event of every entity.
 *   L3   features/l3_redis.h then features/l3_pg.h (each optional): rows, read-through with
 *        the caller's deadline, written through by ox_fstore_row_put. With events_to_redis,
 *        Redis also gets every ingested event, appended (RPUSH) to the list "~ev:<entity>" as
 *        its 24-byte record (ox_feat_event_encode), after the L2 commit: a copy for other
 *        consumers, never read back here (L2 is the events' store of record).
 *   Bloom  features/bloom.h, "has this entity ever had an event": an entity never seen skips
 *        L1 and L2 entirely (a fraud stream is full of first-time cards). It is rebuilt at
 *        start-up from L2's entity index, so it stays exact across restarts. Deliberately not
 *        a 24 h window: secs_since_last is defined over the entity's whole history
 *        (tools/fraud/features.py), so an entity quiet for more than a day still needs L2.
 *
 * Rows are float32 little-endian arrays in every tier (the same bytes in Redis and in
 * PostgreSQL's bytea). A row read goes L1 -> L2 -> L3 and promotes a hit into the tiers above
 * it (L2 hit -> L1; L3 hit -> L1 and L2); a definitive miss everywhere is cached in L1 too.
 * L2 holds two kinds of rows: rows written here (ox_fstore_row_put: L2 owns them, they never
 * expire) and copies of rows read from L3, under "~l3:<key>" with the wall-clock ms they were
 * fetched at in front (8 bytes, little-endian). A copy younger than l3_cache_ms answers like an
 * L2 row; an older one sends the read to L3 again and is replaced by the answer, deleted on a
 * definitive miss, and served (counted as stale) when L3 fails: a remote store that is down
 * costs freshness, not answers, for keys read before.
 *
 * L1 can be disabled (l1_bytes 0): every read then starts at L2.
 *
 * Retention: with retention_ms, L2's writer purges events older than wall clock - retention_ms
 * every minute, keeping each entity's newest event before the cutoff (features/l2.h), so
 * velocity features stay exact for request times after cutoff + 24 h (retention_ms is at least
 * 24 h; older request times see fewer events).
 *
 * Events: an entity ("user:u1") has a list of (ts, amount, merchant) events. L2 keeps them
 * all; L1 caches, per entity, the events with ts >= `since` (all of them, complete) plus the
 * largest ts below `since` (for secs_since_last); a request at time t is served from L1 when
 * since <= t - 24h + 1. Ingestion updates those L1 lists in place after its L2 commit, so a
 * score right after an ingest still hits L1.
 *
 * Consistency between readers that fill L1 from L2/L3 and writers: keys hash (SipHash-2-4 under
 * the per-process key, so clients cannot pile their keys onto one stripe) to one of 1024
 * stripes, each a mutex and a generation. Writers bump the generation (under the mutex) around
 * their writes; a reader notes the generation before reading the lower tier and promotes only
 * if it is unchanged, under the mutex. So a promotion never puts back a value older than a
 * write that finished before it, and event lists never get an event twice.
 *
 * L2 readers: one per thread, opened on the thread's first read and closed by
 * ox_fstore_close (they are registered here), so reader slots = threads that read.
 *
 * Threads: every function may be called from any worker thread, concurrently, except open and
 * close. Ingestion is serialized by one mutex (LMDB has one writer anyway).
 */
#ifndef OX_FEATURES_FSTORE_H
#define OX_FEATURES_FSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/siphash.h"
#include "core/slice.h"
#include "features/velocity.h"

typedef struct {
  const char *dir;         /* LMDB environment directory (created if needed) */
  size_t l1_bytes;         /* L1 memory bound */
  int64_t l1_ttl_ms;       /* L1 entries expire after this (0: never) */
  uint64_t bloom_items;    /* entities the Bloom filter is sized for (1% false positives) */
  unsigned max_readers;    /* L2 reader slots: threads that may read, plus a few */
  const char *redis;       /* "HOST:PORT" or NULL/"" */
  const char *postgres;    /* libpq conninfo or NULL/"" */
  int l3_pool;             /* connections per L3 backend (the worker count) */
  int sync_none;           /* L2 without fsync (tests, tmpfs); else every commit is fsynced */
  int sync_nometa;         /* L2's meta page fsynced with the next commit (OX_L2_SYNC_NOMETA) */
  size_t max_bytes;        /* L2's maximum size (its map grows up to it; full: OX_ESTORE_FULL)
                              [4 GiB] */
  int64_t l3_cache_ms;     /* how long a row read from L3 is kept in L2 (0: not kept) */
  int64_t retention_ms;    /* events older than this are purged from L2 (0: kept forever) */
  int events_to_redis;     /* also append every ingested event to Redis list "~ev:<entity>"
                              (ox_fstore_ingest); needs redis, else ox_fstore_open fails */
  uint64_t max_events_24h; /* most events one entity may hold in any 24 h window (ingestion
                              refuses more: see ox_fstore_ingest); 0: no cap (tests) */
} ox_fstore_opts_t;

typedef struct ox_fstore ox_fstore_t;

typedef enum { OX_TIER_NONE = 0, OX_TIER_L1, OX_TIER_L2, OX_TIER_L3 } ox_tier_t;

/* Opens the tiers and rebuilds the Bloom filter from L2. Returns 0 and *out (owned, freed by
 * ox_fstore_close), or an error with a one-line reason in err. */
int ox_fstore_open(const ox_fstore_opts_t *opts, ox_fstore_t **out, char *err, size_t errcap);
/* Flushes and closes everything (L2 writer drained, readers closed). No call may be running.
 * NULL is allowed. */
void ox_fstore_close(ox_fstore_t *fs);

/* ---- rows ------------------------------------------------------------------------------- */

/* Reads row key ("table:key") through the tiers, L3 calls bounded by deadline_ns
 * (CLOCK_MONOTONIC ns). 0: the row's bytes are appended to out and *tier says where it was
 * found; OX_ENOT_FOUND: no tier has it (every tier answered); OX_ETIMEOUT / OX_EUNAVAILABLE /
 * another error: a tier needed could not answer (the row may exist). */
int ox_fstore_row_get(ox_fstore_t *fs, ox_slice_t key, ox_buf_t *out, int64_t deadline_ns,
                      ox_tier_t *tier);

/* ---- rows without waiting on L3 (inference requests) ------------------------------------ */

/* A row that only L3 can answer, for one request: ox_fstore_row_local sets it up, the fetcher
 * answers it (ox_fstore_fetch), ox_fstore_want_free frees it. */
typedef struct {
  ox_slice_t key; /* the caller's bytes: keep them valid until the want is answered */
  int rc;         /* the answer: 0 (the row is in val), OX_ENOT_FOUND, or an error */
  ox_tier_t tier; /* with rc 0: OX_TIER_L3, or OX_TIER_L2 for an expired copy served because
                     L3 failed */
  ox_buf_t val;   /* the row (owned) */
  /* private */
  uint64_t gen_;
  int l2_err_, has_stale_;
  int64_t deadline_;
  ox_buf_t stale_; /* an expired L2 copy (fetch time + row): the answer if L3 fails */
} ox_fstore_want_t;

/* One request's wants. The fetcher thread gathers the wants of every fetch queued while it
 * waited on the previous round (up to 256 rows) into one Redis MGET (then one PostgreSQL
 * query for what Redis did not have), so that concurrent requests share round trips and no
 * request thread waits on the network. */
typedef struct ox_fstore_fetch {
  ox_fstore_want_t *wants;
  size_t n;
  int64_t deadline_ns;                     /* CLOCK_MONOTONIC ns: later, a want times out */
  void (*done)(struct ox_fstore_fetch *f); /* called once, when every want is answered */
  struct ox_fstore_fetch *next_;           /* private */
} ox_fstore_fetch_t;

/* Reads row key from L1, then L2 (its rows, then fresh copies of L3 rows), as
 * ox_fstore_row_get, but never calls L3: OX_EPENDING when only L3 can answer, with *want set
 * up for the key (want->key = key). Other returns as ox_fstore_row_get; *want is then unused
 * and needs no freeing. */
int ox_fstore_row_local(ox_fstore_t *fs, ox_slice_t key, ox_buf_t *out, ox_tier_t *tier,
                        ox_fstore_want_t *want);
/* Queues f (borrowed until done) for the fetcher and returns; f->done(f) is later called on the
 * fetcher thread. OX_EUNAVAILABLE when there is no L3 or the fetcher is stopping: the wants
 * are then answered at once (stale copies, or OX_EUNAVAILABLE) and done is NOT called. */
int ox_fstore_fetch(ox_fstore_t *fs, ox_fstore_fetch_t *f);
void ox_fstore_want_free(ox_fstore_want_t *w);
/* Stops the fetcher: fetches still queued are answered as refused ones (done IS called for
 * them), later ones are refused. Call while whatever done uses still exists; ox_fstore_close
 * calls it too. NULL allowed; idempotent. */
void ox_fstore_stop_fetcher(ox_fstore_t *fs);

/* Stores a row in L1 and L2 (committed before return) and writes it through to the L3
 * backends within deadline_ns. Returns 0 or the L2 error; *l3_err receives the first L3
 * error (0 when every configured backend took it, or when there is none). */
int ox_fstore_row_put(ox_fstore_t *fs, ox_slice_t key, const void *val, size_t len,
                      int64_t deadline_ns, int *l3_err);

/* ---- events ----------------------------------------------------------------------------- */

#define OX_FSTORE_MAX_ENTITIES 8 /* entities one event belongs to */
#define OX_FSTORE_MAX_ENTITY 256 /* bytes of an entity name ("user:u1") */
#define OX_FSTORE_MAX_ID 180     /* bytes of the id in it: type names are at most 63 bytes */

#define OX_FSTORE_MAX_EVENT_ID 128 /* bytes of an event id (= OX_L2_MAX_ID) */

typedef struct {
  ox_feat_event_t ev;                          /* ts, amount, merchant hash */
  ox_slice_t id;                               /* optional idempotency key (event_id, see
                                                  ox_fstore_ingest; len 0: none), borrowed */
  ox_slice_t entities[OX_FSTORE_MAX_ENTITIES]; /* borrowed for the call */
  size_t num_entities;
} ox_fstore_event_t;

/* Appends events (validated by the caller) to every entity they name, in order, and returns
 * once they are committed and visible to ox_fstore_velocity. The whole call is ONE L2
 * transaction (ox_l2_commit): all of its events are stored or none, across a crash too, and a
 * commit that returned survives kill -9 (and power loss, unless sync_none).
 * Idempotency: an event with an id that is already stored, or that an earlier event of the
 * same call carries, is not stored; *duplicates (may be NULL) receives how many were skipped.
 * Ids are stored with the events and remembered until the retention purge forgets them: an
 * id's time is the later of the ingestion's wall-clock ms and the event's ts, and the purge
 * forgets ids whose time is below its cutoff, so an id outlives every event of it that the
 * purge deletes (without retention, ids are kept forever, like events). Lookups go through
 * LMDB's B-tree and one sort per call (no hash of client bytes).
 * Returns 0 or an error, with nothing of the call stored: OX_EINVALID (an entity name empty or
 * over OX_FSTORE_MAX_ENTITY bytes or starting with '~', an id over OX_FSTORE_MAX_EVENT_ID
 * bytes), OX_ESTORE_FULL (the store would exceed max_bytes), OX_EUNAVAILABLE (closing), OX_ENOMEM,
 * or another L2 error.
 * With events_to_redis, the committed events are then appended to the Redis lists
 * "~ev:<entity>" of the entities they name, in the order given, in one pipelined round trip per
 * 8192 events, each bounded by 1 s (and by the Redis client's command timeout); a Redis
 * failure does not fail the call (L2 is the store of record): *l3_err (may be NULL) receives
 * the first Redis error, 0 when every append succeeded or write-through is off, and the events
 * of a failed round trip are counted in onnxd_feature_events_l3_failed_total (some of them may
 * be in Redis). */
int ox_fstore_ingest(ox_fstore_t *fs, const ox_fstore_event_t *evs, size_t n, int *l3_err,
                     size_t *duplicates);

/* ---- applying a replicated log (features/fstream.h) ------------------------------------- */

/* One entry of the log: one request's events, validated (as for ox_fstore_ingest). */
typedef struct {
  const ox_fstore_event_t *evs; /* borrowed for the call */
  size_t n;
  int64_t now_ms; /* the entry's time in the log: ids are remembered from it (not from the
                     wall clock), so that every replica keeps them alike */
  /* the outcome, set by ox_fstore_apply */
  int rc;                                      /* 0, or OX_EQUOTA: refused whole */
  size_t accepted, duplicates;                 /* with rc 0 */
  char quota_entity[OX_FSTORE_MAX_ENTITY + 1]; /* with OX_EQUOTA: the entity over its cap */
} ox_fstore_entry_t;

/* Applies entries in order, each as ox_fstore_ingest would apply it as one request (ids,
 * duplicates and the per-entity cap included: an entry that would take an entity over its cap
 * is refused whole and the others are applied), and stores row key = vals[i] in the same
 * transaction as entry i (the log position it has reached). The outcome depends only on the
 * store's contents and the entries, so replicas that apply the same log agree. Entries are
 * applied in as few transactions as that allows (one, unless an entry is refused).
 * Returns 0 (every entry applied or refused, the position stored) or an error: then a prefix
 * of the entries may be committed with its position, which the caller reads back
 * (ox_fstore_meta_get) to go on from there. */
int ox_fstore_apply(ox_fstore_t *fs, ox_fstore_entry_t *entries, size_t n, ox_slice_t key,
                    const ox_slice_t *vals);
/* (ox_fstore_apply returns OX_EINVALID, storing nothing, when an entry's events fail
 * ox_fstore_events_valid: the caller skips such entries first.) */
/* Reads an internal row of L2 (written by ox_fstore_apply) into out: 0 with *len set,
 * OX_ENOT_FOUND, OX_ETOO_LARGE (cap too small), or an error. */
int ox_fstore_meta_get(ox_fstore_t *fs, ox_slice_t key, char *out, size_t cap, size_t *len);
/* Writes a consistent copy of L2 to fd (ox_l2_copy_fd): a data.mdb for another replica's
 * --feature-dir. 0 or an error. */
int ox_fstore_snapshot(ox_fstore_t *fs, int fd);

/* 1 when every event may be stored: at most OX_FSTORE_MAX_ENTITIES entities, each of 1 to
 * OX_FSTORE_MAX_ENTITY bytes and not starting with '~', an id of at most OX_FSTORE_MAX_EVENT_ID
 * bytes (the checks ox_fstore_ingest and ox_fstore_apply make first); else 0. */
int ox_fstore_events_valid(const ox_fstore_event_t *evs, size_t n);

/* The L2 store's size: *used bytes in use, *capacity its maximum (max_bytes). */
void ox_fstore_usage(ox_fstore_t *fs, uint64_t *used, uint64_t *capacity);
/* The per-entity cap (opts.max_events_24h): before anything is stored, ox_fstore_ingest checks,
 * for every entity the events name, that no 24 h window (t - 24h < ts <= t) containing one of
 * the new events would hold more than max_events_24h events, stored and new together. If one
 * would, nothing of the call is stored and it returns OX_EQUOTA; ox_fstore_quota_entity then
 * names the (first) entity, on the same thread, until its next ingest, and returns the cap.
 * The check reads the
 * entity's stored event times within 24 h of the new events (at most about twice the cap per
 * distinct new-event day). */
uint64_t ox_fstore_quota_entity(ox_fstore_t *fs, char *out, size_t cap);

/* The per-entity cap (opts.max_events_24h; 0: none). Any thread. */
uint64_t ox_fstore_event_cap(const ox_fstore_t *fs);

/* 1 when ox_fstore_ingest appends events to Redis (opts.events_to_redis), else 0. */
int ox_fstore_events_to_redis(const ox_fstore_t *fs);

/* The 8 velocity features (features/velocity.h, default_secs -1) of entity at t_ms, from its
 * stored events. 0 or an error (an L2 read failure).
 * Bounded work: the events read are those with t - 24h < ts <= t (at most the cap, by the
 * ingestion check) and, read ahead so that the list can be cached for later requests, those
 * after t up to t + 24h and at most cap of them; an entity with more events beyond that is
 * answered from L2 (the list is then not cached). So one call decodes and processes at most
 * 2 x cap + 1 events (see velocity.h for the cost per event). */
int ox_fstore_velocity(ox_fstore_t *fs, ox_slice_t entity, int64_t t_ms,
                       float out[OX_FEAT_VELOCITY_N]);

/* ---- metrics ---------------------------------------------------------------------------- */

/* Counts one inference request whose features fell back to defaults (a tier failed). */
void ox_fstore_count_degraded(ox_fstore_t *fs);
/* Counts n features that were not finite and were replaced by defaults before reaching a model
 * (onnxd_feature_nonfinite_total). */
void ox_fstore_count_nonfinite(ox_fstore_t *fs, uint64_t n);
/* Appends the store's Prometheus text (lookups and latency per tier, Bloom, L1 and L2 state,
 * breakers). 0 or OX_ENOMEM. */
int ox_fstore_metrics(ox_fstore_t *fs, ox_buf_t *out);

/* The merchant identity stored in events: SipHash-2-4 of the merchant_id's bytes under the
 * store's merchant key. The key is 16 random bytes created with the store and kept in L2 (row
 * "~meta:merchant_key"), so the value is stable across restarts and the same for every process
 * that opens the store; without the key a client cannot make two merchant ids collide except by
 * chance (2^-64 per pair). A store written before the key existed (merchants as unkeyed FNV-1a
 * 64) is refused by ox_fstore_open with a message saying so. */
uint64_t ox_fstore_merchant_hash(const ox_fstore_t *fs, const void *p, size_t n);
/* The store's merchant key (borrowed, valid until ox_fstore_close). */
const ox_siphash_key_t *ox_fstore_merchant_key(const ox_fstore_t *fs);

#endif
