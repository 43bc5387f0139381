/* fstore.h: the server's feature store: the tiers of features/ wired together for request-time
 * lookups (feature rows and velocity features) and for ingestion (events, rows).
 *
 *   L1   features/l1.h, in RAM, with a TTL: feature rows ("<table>:<key>") and each entity's
 *        recent event list ("~ev:<entity>", see below).
 *   L2   features/l2.h, LMDB in --feature-dir: rows, and every event of every entity.
 *   L3   features/l3_redis.h then features/l3_pg.h (each optional): rows only, read-through
 *        with the caller's deadline, written through by ox_fstore_row_put.
 *   Bloom  features/bloom.h, "has this entity ever had an event": an entity never seen skips
 *        L1 and L2 entirely (a fraud stream is full of first-time cards). It is rebuilt at
 *        start-up from L2's entity index, so it stays exact across restarts. Deliberately not
 *        a 24 h window: secs_since_last is defined over the entity's whole history
 *        (tools/fraud/features.py), so an entity quiet for more than a day still needs L2.
 *
 * Rows are float32 little-endian arrays in every tier (the same bytes in Redis and in
 * PostgreSQL's bytea). A row read goes L1 -> L2 -> L3 and promotes a hit into the tiers above
 * it (L2 hit -> L1; L3 hit -> L1 and L2); a definitive miss everywhere is cached in L1 too.
 *
 * Events: an entity ("user:u1") has a list of (ts, amount, merchant) events. L2 keeps them
 * all; L1 caches, per entity, the events with ts >= `since` (all of them, complete) plus the
 * largest ts below `since` (for secs_since_last); a request at time t is served from L1 when
 * since <= t - 24h + 1. Ingestion updates those L1 lists in place after its L2 commit, so a
 * score right after an ingest still hits L1.
 *
 * Consistency between readers that fill L1 from L2/L3 and writers: keys hash to one of 1024
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
#ifndef OX_SERVER_FSTORE_H
#define OX_SERVER_FSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"
#include "features/velocity.h"

typedef struct {
  const char *dir;      /* LMDB environment directory (created if needed) */
  size_t l1_bytes;      /* L1 memory bound */
  int64_t l1_ttl_ms;    /* L1 entries expire after this (0: never) */
  uint64_t bloom_items; /* entities the Bloom filter is sized for (1% false positives) */
  unsigned max_readers; /* L2 reader slots: threads that may read, plus a few */
  const char *redis;    /* "HOST:PORT" or NULL/"" */
  const char *postgres; /* libpq conninfo or NULL/"" */
  int l3_pool;          /* connections per L3 backend (the worker count) */
  int sync_none;        /* L2 without fsync (tests, tmpfs) */
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

/* Stores a row in L1 and L2 (committed before return) and writes it through to the L3
 * backends within deadline_ns. Returns 0 or the L2 error; *l3_err receives the first L3
 * error (0 when every configured backend took it, or when there is none). */
int ox_fstore_row_put(ox_fstore_t *fs, ox_slice_t key, const void *val, size_t len,
                      int64_t deadline_ns, int *l3_err);

/* ---- events ----------------------------------------------------------------------------- */

#define OX_FSTORE_MAX_ENTITIES 8 /* entities one event belongs to */
#define OX_FSTORE_MAX_ENTITY 256 /* bytes of an entity name ("user:u1") */
#define OX_FSTORE_MAX_ID 180     /* bytes of the id in it: type names are at most 63 bytes */

typedef struct {
  ox_feat_event_t ev;                          /* ts, amount, merchant hash */
  ox_slice_t entities[OX_FSTORE_MAX_ENTITIES]; /* borrowed for the call */
  size_t num_entities;
} ox_fstore_event_t;

/* Appends events (validated by the caller) to every entity they name, in order, and returns
 * once they are committed and visible to ox_fstore_velocity. 0 or an error: OX_EINVALID (an
 * entity name empty or over OX_FSTORE_MAX_ENTITY bytes, or starting with '~': nothing is
 * stored), OX_EUNAVAILABLE (closing), an L2 error (some events may then be stored). */
int ox_fstore_ingest(ox_fstore_t *fs, const ox_fstore_event_t *evs, size_t n);

/* The 8 velocity features (features/velocity.h, default_secs -1) of entity at t_ms, from its
 * stored events. 0 or an error (an L2 read failure). */
int ox_fstore_velocity(ox_fstore_t *fs, ox_slice_t entity, int64_t t_ms,
                       float out[OX_FEAT_VELOCITY_N]);

/* ---- metrics ---------------------------------------------------------------------------- */

/* Counts one inference request whose features fell back to defaults (a tier failed). */
void ox_fstore_count_degraded(ox_fstore_t *fs);
/* Appends the store's Prometheus text (lookups and latency per tier, Bloom, L1 and L2 state,
 * breakers). 0 or OX_ENOMEM. */
int ox_fstore_metrics(ox_fstore_t *fs, ox_buf_t *out);

/* The restart-stable 64-bit hash of merchant ids in stored events: FNV-1a 64 of the bytes. */
uint64_t ox_fstore_fnv1a64(const void *p, size_t n);

#endif
