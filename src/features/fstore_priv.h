/* fstore_priv.h: the feature store's internals, shared by fstore.c (lifecycle, metrics),
 * fstore_rows.c (rows, the L3 fetcher) and fstore_events.c (event lists, velocity, ingestion).
 * Not for other files (the unit test excepted). Functions shared between those files carry the
 * ox_fstore_ prefix like the public ones but are declared only here. */
#ifndef OX_FEATURES_FSTORE_PRIV_H
#define OX_FEATURES_FSTORE_PRIV_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/clock.h"
#include "core/hist.h"
#include "features/bloom.h"
#include "features/fstore.h"
#include "features/l1.h"
#include "features/l2.h"
#include "features/l3_pg.h"
#include "features/l3_redis.h"

#define FS_STRIPES 1024

typedef enum { FS_HIT, FS_MISS, FS_ERROR, FS_TIMEOUT, FS_RESULTS } fs_result_t;

typedef struct {
  pthread_mutex_t mu;
  atomic_uint_fast64_t gen; /* bumped (under mu) by every write to a key of the stripe */
} fs_stripe_t;

typedef struct {
  atomic_uint_fast64_t result[FS_RESULTS];
  ox_hist_t us;
} fs_tier_stats_t;

/* Per-thread state: the thread's L2 reader and scratch buffers, owned by the store. */
typedef struct fs_tctx {
  struct fs_tctx *next;
  ox_l2_reader_t *r;
  ox_buf_t a, b, c;     /* scratch: L1 copies, L2 scans, values being built */
  ox_feat_event_t *evs; /* decoded events for ox_feat_velocity */
  size_t evcap;
  char quota_entity[OX_FSTORE_MAX_ENTITY + 1]; /* the entity of the last OX_EQUOTA */
} fs_tctx_t;

struct ox_fstore {
  ox_l1_t *l1;
  ox_bloom_t *bloom;
  ox_l2_t *l2;
  ox_l3_redis_t *redis; /* NULL when not configured */
  ox_l3_pg_t *pg;       /* NULL when not configured */
  int64_t ttl_ms;
  int64_t l3_cache_ms;
  uint64_t max_events_24h; /* per-entity cap (fstore.h), 0: none */
  int events_to_redis; /* ingestion appends events to Redis lists "~ev:<entity>" (fs->redis set) */
  ox_siphash_key_t merchant_key; /* the store's secret for merchant identities (fstore.h) */
  uint64_t id;                   /* tells this store's thread contexts from a previous store's */
  pthread_mutex_t ctx_mu;
  fs_tctx_t *ctxs;
  pthread_mutex_t ingest_mu;
  fs_stripe_t stripes[FS_STRIPES];
  pthread_t sweeper;
  int sweeper_started, sw_stop;
  pthread_mutex_t sw_mu;
  pthread_cond_t sw_cv;
  fs_tier_stats_t tiers[4]; /* by ox_tier_t */
  atomic_uint_fast64_t degraded, bloom_neg, bloom_pos, events_ingested, rows_put, l3_stale;
  atomic_uint_fast64_t events_l3_failed; /* events whose append to Redis failed */
  atomic_uint_fast64_t nonfinite;        /* features replaced because not finite */
  /* the L3 fetcher (fstore_rows.c): a queue of fetches, one thread */
  pthread_mutex_t fq_mu;
  pthread_cond_t fq_cv;
  ox_fstore_fetch_t *fq_head, *fq_tail;
  pthread_t fq_thread;
  int fq_started, fq_stop;
  atomic_uint_fast64_t fetch_rounds, fetch_wants;
};

/* The entity index: an L2 event list whose payloads are the names of every entity that has
 * events (one event each, at its first event's ts). The Bloom filter is rebuilt from it. */
#define FS_INDEX_ENTITY "~entities"
/* L2 row holding an entity's largest event ts (8 bytes, little-endian): "~last:<entity>". */
#define FS_LAST_PREFIX "~last:"
/* L2 key of a copy of an L3 row: "~l3:<key>", value = 8-byte fetch time (wall-clock ms) + row. */
#define FS_L3COPY_PREFIX "~l3:"
/* L2 row holding the store's merchant key (16 random bytes, created with the store). */
#define FS_MERCHANT_KEY_ROW "~meta:merchant_key"
/* L1 key of an entity's event list: "~ev:<entity>". */
#define FS_EV_PREFIX "~ev:"
/* Redis list of an entity's events, with events_to_redis: "~ev:<entity>". Rows share Redis's
 * key space as "<table>:<key>", and table names are names of core/text.h (letters, digits, '_',
 * '.' and '-', checked by server/events.c and infer/model_config.c), so no row key can start
 * with '~': internal keys live apart from rows. */
#define FS_REDIS_EV_PREFIX "~ev:"

fs_tctx_t *ox_fstore_ctx(ox_fstore_t *fs);
fs_stripe_t *ox_fstore_stripe(ox_fstore_t *fs, ox_slice_t l1key);
/* Copies key's L1 value into out (grown as needed). 0, OX_ENOT_FOUND or OX_ENOMEM. */
int ox_fstore_l1_get(ox_fstore_t *fs, ox_slice_t key, ox_buf_t *out);
void ox_fstore_record(ox_fstore_t *fs, ox_tier_t tier, fs_result_t res, int64_t t0_ns);
/* Starts the L3 fetcher thread when an L3 backend is configured. 0 or OX_ENOMEM. */
int ox_fstore_fetcher_start(ox_fstore_t *fs);
/* Adds every indexed entity to the Bloom filter (start-up). */
int ox_fstore_bloom_rebuild(ox_fstore_t *fs, uint64_t *entities);

#endif
