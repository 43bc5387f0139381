/* fstore.c: the tiers wired together: lifecycle, per-thread L2 readers, metrics. Rows (reads,
 * writes, the L3 fetcher) are in fstore_rows.c, event lists (velocity reads and ingestion) in
 * fstore_events.c. See fstore.h. */
#include "features/fstore.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/siphash.h"
#include "features/breaker.h"
#include "features/fstore_priv.h"

static atomic_uint_fast64_t fs_ids = 1;
static _Thread_local fs_tctx_t *tl_ctx;
static _Thread_local uint64_t tl_id;

uint64_t ox_fstore_merchant_hash(const ox_fstore_t *fs, const void *p, size_t n) {
  return ox_siphash(p, n, &fs->merchant_key);
}

const ox_siphash_key_t *ox_fstore_merchant_key(const ox_fstore_t *fs) {
  return &fs->merchant_key;
}

fs_stripe_t *ox_fstore_stripe(ox_fstore_t *fs, ox_slice_t l1key) {
  return &fs->stripes[ox_siphash(l1key.ptr, l1key.len, ox_siphash_process_key()) &
                      (FS_STRIPES - 1)];
}

void ox_fstore_record(ox_fstore_t *fs, ox_tier_t tier, fs_result_t res, int64_t t0_ns) {
  if (tier == OX_TIER_L1 && !fs->l1) return; /* disabled: no lookups to count */
  fs_tier_stats_t *t = &fs->tiers[tier];
  atomic_fetch_add_explicit(&t->result[res], 1, memory_order_relaxed);
  int64_t d = ox_mono_ns() - t0_ns;
  ox_hist_record_us(&t->us, d > 0 ? (uint64_t)d / 1000 : 0);
}

fs_tctx_t *ox_fstore_ctx(ox_fstore_t *fs) {
  if (tl_ctx && tl_id == fs->id) return tl_ctx;
  fs_tctx_t *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  int rc = ox_l2_reader_open(fs->l2, &x->r);
  if (rc) {
    ox_warn("feature store: cannot open an L2 reader: %s (raise the reader slots)",
            ox_strerror(rc));
    free(x);
    return NULL;
  }
  pthread_mutex_lock(&fs->ctx_mu);
  x->next = fs->ctxs;
  fs->ctxs = x;
  pthread_mutex_unlock(&fs->ctx_mu);
  tl_ctx = x;
  tl_id = fs->id;
  return x;
}

int ox_fstore_l1_get(ox_fstore_t *fs, ox_slice_t key, ox_buf_t *out) {
  size_t len = 0;
  if (!out->cap && ox_buf_reserve(out, 4096)) return OX_ENOMEM;
  for (;;) {
    int rc = ox_l1_get(fs->l1, key, ox_mono_ms(), out->data, out->cap, &len);
    if (rc == OX_ETOO_LARGE) {
      out->len = 0;
      if (ox_buf_reserve(out, len)) return OX_ENOMEM;
      continue;
    }
    out->len = rc ? 0 : len;
    return rc;
  }
}

/* ---- lifecycle -------------------------------------------------------------------------- */

static void *sweeper_main(void *arg) {
  ox_fstore_t *fs = arg;
  pthread_mutex_lock(&fs->sw_mu);
  while (!fs->sw_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&fs->sw_cv, &fs->sw_mu, &ts);
    if (fs->sw_stop) break;
    pthread_mutex_unlock(&fs->sw_mu);
    ox_l1_sweep(fs->l1, ox_mono_ms(), 256);
    pthread_mutex_lock(&fs->sw_mu);
  }
  pthread_mutex_unlock(&fs->sw_mu);
  return NULL;
}

static int open_redis(ox_fstore_t *fs, const ox_fstore_opts_t *o, char *err, size_t errcap) {
  char host[256];
  int port;
  if (ox_l3_redis_split_addr(o->redis, host, sizeof host, &port)) {
    snprintf(err, errcap, "--redis must be HOST:PORT, not '%.100s'", o->redis);
    return OX_EINVALID;
  }
  ox_l3_redis_opts_t ro = {.host = host, .port = port, .pool_size = o->l3_pool};
  int rc = ox_l3_redis_create(&ro, &fs->redis);
  if (rc) snprintf(err, errcap, "cannot set up Redis %s: %s", o->redis, ox_strerror(rc));
  return rc;
}

static int open_pg(ox_fstore_t *fs, const ox_fstore_opts_t *o, char *err, size_t errcap) {
  ox_l3_pg_opts_t po = {.conninfo = o->postgres, .pool_size = o->l3_pool};
  int rc = ox_l3_pg_create(&po, &fs->pg);
  if (rc) {
    char why[256] = "";
    if (rc == OX_EUNAVAILABLE) ox_l3_pg_load_library(why, sizeof why); /* libpq missing */
    snprintf(err, errcap, "cannot set up PostgreSQL: %s", why[0] ? why : ox_strerror(rc));
    return rc;
  }
  /* The table is created if missing; a server that is down now is not fatal (reads then fail
   * over to defaults, and the breaker takes it back when it answers). */
  rc = ox_l3_pg_ensure_schema(fs->pg, ox_mono_ns() + 2000 * INT64_C(1000000));
  if (rc)
    ox_warn("feature store: PostgreSQL schema check failed: %s (continuing)", ox_strerror(rc));
  return 0;
}

/* The store's merchant key (see fstore.h): read from L2, or created in a store without events.
 * A store with events but no key was written with the old unkeyed FNV-1a merchant hash: it is
 * refused, since its merchant identities cannot be converted. */
static int merchant_key_load(ox_fstore_t *fs, const char *dir, uint64_t entities, char *err,
                             size_t errcap) {
  ox_l2_reader_t *r = NULL;
  int rc = ox_l2_reader_open(fs->l2, &r);
  if (rc) {
    snprintf(err, errcap, "cannot read the feature store: %s", ox_strerror(rc));
    return rc;
  }
  unsigned char k[OX_SIPHASH_KEY_BYTES];
  size_t len = 0;
  rc = ox_l2_get_row_copy(r, OX_SLICE_LIT(FS_MERCHANT_KEY_ROW), k, sizeof k, &len);
  ox_l2_reader_close(r);
  if (rc == 0 && len == sizeof k) {
    fs->merchant_key = ox_siphash_key_from_bytes(k);
    return 0;
  }
  if (rc != OX_ENOT_FOUND) {
    snprintf(err, errcap, "the feature store's merchant key is unreadable: %s",
             rc ? ox_strerror(rc) : "wrong size");
    return rc ? rc : OX_EINTERNAL;
  }
  if (entities) {
    snprintf(err, errcap,
             "the feature store '%.200s' was written by an older onnxd (merchant ids stored as "
             "unkeyed FNV-1a hashes, which clients can forge); its events cannot be converted: "
             "move the directory away and ingest the events again",
             dir);
    return OX_EINVALID;
  }
  if ((rc = ox_random_bytes(k, sizeof k))) {
    snprintf(err, errcap, "no random source for the merchant key: %s", ox_strerror(rc));
    return rc;
  }
  rc = ox_l2_put_row(fs->l2, OX_SLICE_LIT(FS_MERCHANT_KEY_ROW), k, sizeof k);
  if (!rc) rc = ox_l2_flush(fs->l2);
  if (rc) {
    snprintf(err, errcap, "cannot store the merchant key: %s", ox_strerror(rc));
    return rc;
  }
  fs->merchant_key = ox_siphash_key_from_bytes(k);
  return 0;
}

int ox_fstore_open(const ox_fstore_opts_t *o, ox_fstore_t **out, char *err, size_t errcap) {
  if (o->events_to_redis && !(o->redis && o->redis[0])) {
    snprintf(err, errcap, "appending events to Redis needs a Redis server (--redis HOST:PORT)");
    return OX_EINVALID;
  }
  ox_fstore_t *fs = calloc(1, sizeof *fs);
  if (!fs) return OX_ENOMEM;
  fs->id = atomic_fetch_add(&fs_ids, 1);
  fs->ttl_ms = o->l1_ttl_ms;
  fs->l3_cache_ms = o->l3_cache_ms;
  fs->events_to_redis = o->events_to_redis;
  fs->max_events_24h = o->max_events_24h;
  pthread_mutex_init(&fs->ctx_mu, NULL);
  pthread_mutex_init(&fs->ingest_mu, NULL);
  pthread_mutex_init(&fs->sw_mu, NULL);
  pthread_mutex_init(&fs->fq_mu, NULL);
  pthread_cond_init(&fs->fq_cv, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&fs->sw_cv, &ca);
  pthread_condattr_destroy(&ca);
  for (size_t i = 0; i < FS_STRIPES; i++) pthread_mutex_init(&fs->stripes[i].mu, NULL);
  int rc = o->l1_bytes ? ox_l1_create(o->l1_bytes, 0, &fs->l1) : 0;
  if (rc) {
    snprintf(err, errcap, "cannot create the L1 feature cache of %zu bytes: %s", o->l1_bytes,
             ox_strerror(rc));
    goto fail;
  }
  /* An "ever seen" filter: the windowed filter at a fixed time never rotates. */
  rc = ox_bloom_create(1, 2, o->bloom_items ? o->bloom_items : 1, 0.01, &fs->bloom);
  if (rc) {
    snprintf(err, errcap, "cannot create the entity Bloom filter: %s", ox_strerror(rc));
    goto fail;
  }
  ox_l2_opts_t lo = {.map_size = o->max_bytes ? o->max_bytes : (size_t)4 << 30,
                     .max_readers = o->max_readers,
                     .queue_max_ops = 1 << 20,
                     .retention_ms = o->retention_ms,
                     .sync = o->sync_none     ? OX_L2_SYNC_NONE
                             : o->sync_nometa ? OX_L2_SYNC_NOMETA
                                              : OX_L2_SYNC_DATA};
  rc = ox_l2_open(o->dir, &lo, &fs->l2);
  if (rc) {
    snprintf(err, errcap, "cannot open the feature store '%.200s': %s", o->dir, ox_strerror(rc));
    goto fail;
  }
  if (o->redis && o->redis[0] && (rc = open_redis(fs, o, err, errcap))) goto fail;
  if (o->postgres && o->postgres[0] && (rc = open_pg(fs, o, err, errcap))) goto fail;
  uint64_t entities = 0;
  rc = ox_fstore_bloom_rebuild(fs, &entities);
  if (rc) {
    snprintf(err, errcap, "cannot read the feature store's entity index: %s", ox_strerror(rc));
    goto fail;
  }
  if ((rc = merchant_key_load(fs, o->dir, entities, err, errcap))) goto fail;
  if (pthread_create(&fs->sweeper, NULL, sweeper_main, fs)) {
    rc = OX_ENOMEM;
    snprintf(err, errcap, "cannot start the L1 sweeper thread");
    goto fail;
  }
  fs->sweeper_started = 1;
  if ((rc = ox_fstore_fetcher_start(fs))) {
    snprintf(err, errcap, "cannot start the L3 fetcher thread");
    goto fail;
  }
  char l1desc[64], keep[48];
  if (fs->l1)
    snprintf(l1desc, sizeof l1desc, "L1 %zu MiB, TTL %lld ms", o->l1_bytes >> 20,
             (long long)o->l1_ttl_ms);
  else
    snprintf(l1desc, sizeof l1desc, "L1 off");
  if (o->retention_ms)
    snprintf(keep, sizeof keep, "events kept %lld h", (long long)(o->retention_ms / 3600000));
  else
    snprintf(keep, sizeof keep, "events kept forever");
  ox_info("feature store: '%s', %" PRIu64 " entities with events; %s; %s%s%s%s%s", o->dir, entities,
          l1desc, keep, fs->redis ? "; Redis " : "", fs->redis ? o->redis : "",
          fs->events_to_redis ? " (rows, events)" : "", fs->pg ? "; PostgreSQL" : "");
  *out = fs;
  return 0;
fail:
  ox_fstore_close(fs);
  return rc;
}

void ox_fstore_close(ox_fstore_t *fs) {
  if (!fs) return;
  if (fs->sweeper_started) {
    pthread_mutex_lock(&fs->sw_mu);
    fs->sw_stop = 1;
    pthread_cond_signal(&fs->sw_cv);
    pthread_mutex_unlock(&fs->sw_mu);
    pthread_join(fs->sweeper, NULL);
  }
  ox_fstore_stop_fetcher(fs); /* it has a thread context */
  for (fs_tctx_t *x = fs->ctxs, *next; x; x = next) {
    next = x->next;
    ox_l2_reader_close(x->r);
    ox_buf_free(&x->a);
    ox_buf_free(&x->b);
    ox_buf_free(&x->c);
    free(x->evs);
    free(x);
  }
  fs->ctxs = NULL;
  if (fs->l2) {
    int rc = ox_l2_flush(fs->l2);
    if (rc) ox_warn("feature store: last L2 writes failed: %s", ox_strerror(rc));
    ox_l2_close(fs->l2);
  }
  ox_l3_redis_destroy(fs->redis);
  ox_l3_pg_destroy(fs->pg);
  ox_bloom_destroy(fs->bloom);
  ox_l1_destroy(fs->l1);
  for (size_t i = 0; i < FS_STRIPES; i++) pthread_mutex_destroy(&fs->stripes[i].mu);
  pthread_mutex_destroy(&fs->ctx_mu);
  pthread_mutex_destroy(&fs->ingest_mu);
  pthread_mutex_destroy(&fs->sw_mu);
  pthread_cond_destroy(&fs->sw_cv);
  pthread_mutex_destroy(&fs->fq_mu);
  pthread_cond_destroy(&fs->fq_cv);
  free(fs);
}

int ox_fstore_events_to_redis(const ox_fstore_t *fs) {
  return fs->events_to_redis;
}

/* ---- metrics ---------------------------------------------------------------------------- */

void ox_fstore_count_degraded(ox_fstore_t *fs) {
  atomic_fetch_add_explicit(&fs->degraded, 1, memory_order_relaxed);
}

void ox_fstore_count_nonfinite(ox_fstore_t *fs, uint64_t n) {
  atomic_fetch_add_explicit(&fs->nonfinite, n, memory_order_relaxed);
}

#define LD(x) ((uint64_t)atomic_load_explicit(&(x), memory_order_relaxed))

static int breaker_lines(ox_buf_t *o, const char *backend, ox_breaker_t *b, int part) {
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  if (part == 0)
    return ox_buf_printf(o, "onnxd_feature_breaker_state{backend=\"%s\"} %d\n", backend,
                         (int)s.state);
  if (part == 1)
    return ox_buf_printf(o, "onnxd_feature_breaker_opened_total{backend=\"%s\"} %" PRIu64 "\n",
                         backend, s.opened);
  return ox_buf_printf(o,
                       "onnxd_feature_breaker_short_circuited_total{backend=\"%s\"} %" PRIu64 "\n",
                       backend, s.short_circuited);
}

int ox_fstore_metrics(ox_fstore_t *fs, ox_buf_t *o) {
  static const char *const tiers[] = {"", "l1", "l2", "l3"};
  static const char *const results[] = {"hit", "miss", "error", "timeout"};
  int rc = ox_buf_puts(o,
                       "# HELP onnxd_feature_lookups_total Feature store lookups by tier and "
                       "result\n# TYPE onnxd_feature_lookups_total counter\n");
  for (int t = 1; t <= 3; t++)
    for (int r = 0; r < FS_RESULTS; r++)
      rc |= ox_buf_printf(o, "onnxd_feature_lookups_total{tier=\"%s\",result=\"%s\"} %" PRIu64 "\n",
                          tiers[t], results[r], LD(fs->tiers[t].result[r]));
  rc |= ox_buf_puts(o,
                    "# HELP onnxd_feature_lookup_duration_us Feature store lookup latency per "
                    "tier (microseconds)\n# TYPE onnxd_feature_lookup_duration_us histogram\n");
  for (int t = 1; t <= 3; t++) {
    char lab[32];
    snprintf(lab, sizeof lab, "tier=\"%s\"", tiers[t]);
    rc |= ox_hist_render_us(o, "onnxd_feature_lookup_duration_us", lab, &fs->tiers[t].us);
  }
  ox_l1_stats_t l1;
  ox_l1_stats(fs->l1, &l1);
  ox_l2_stats_t l2;
  ox_l2_stats(fs->l2, &l2);
  rc |= ox_buf_printf(
      o,
      "# HELP onnxd_feature_degraded_total Inference requests answered with default features "
      "because a tier was slow or down\n# TYPE onnxd_feature_degraded_total counter\n"
      "onnxd_feature_degraded_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_bloom_checks_total Entity Bloom filter checks (negative: never seen, "
      "no tier read)\n# TYPE onnxd_feature_bloom_checks_total counter\n"
      "onnxd_feature_bloom_checks_total{result=\"negative\"} %" PRIu64
      "\n"
      "onnxd_feature_bloom_checks_total{result=\"positive\"} %" PRIu64
      "\n"
      "# HELP onnxd_feature_events_ingested_total Events stored by POST /v1/events\n"
      "# TYPE onnxd_feature_events_ingested_total counter\n"
      "onnxd_feature_events_ingested_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_rows_written_total Rows stored by PUT /v1/features\n"
      "# TYPE onnxd_feature_rows_written_total counter\n"
      "onnxd_feature_rows_written_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_l3_stale_total Row reads answered from an expired L2 copy of an L3 "
      "row because L3 failed\n# TYPE onnxd_feature_l3_stale_total counter\n"
      "onnxd_feature_l3_stale_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_l1_bytes L1 memory charged\n# TYPE onnxd_feature_l1_bytes gauge\n"
      "onnxd_feature_l1_bytes %" PRIu64
      "\n"
      "# HELP onnxd_feature_l1_entries L1 entries\n# TYPE onnxd_feature_l1_entries gauge\n"
      "onnxd_feature_l1_entries %" PRIu64
      "\n"
      "# HELP onnxd_feature_l1_evictions_total L1 entries evicted for room\n"
      "# TYPE onnxd_feature_l1_evictions_total counter\n"
      "onnxd_feature_l1_evictions_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_l1_expirations_total L1 entries expired (TTL)\n"
      "# TYPE onnxd_feature_l1_expirations_total counter\n"
      "onnxd_feature_l1_expirations_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_l2_committed_total L2 write operations committed\n"
      "# TYPE onnxd_feature_l2_committed_total counter\n"
      "onnxd_feature_l2_committed_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_l2_failed_total L2 write operations lost in failed batches\n"
      "# TYPE onnxd_feature_l2_failed_total counter\n"
      "onnxd_feature_l2_failed_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_l2_purged_total Events deleted by the retention purge\n"
      "# TYPE onnxd_feature_l2_purged_total counter\n"
      "onnxd_feature_l2_purged_total %" PRIu64 "\n",
      LD(fs->degraded), LD(fs->bloom_neg), LD(fs->bloom_pos), LD(fs->events_ingested),
      LD(fs->rows_put), LD(fs->l3_stale), l1.bytes, l1.entries, l1.evictions, l1.expirations,
      l2.committed, l2.failed, l2.purged);
  uint64_t used, map, max;
  ox_l2_usage(fs->l2, &used, &map, &max); /* under the map's read lock: safe during growth */
  rc |= ox_buf_printf(o,
                      "# HELP onnxd_feature_store_used_bytes Bytes of the L2 store file in use "
                      "(pages up to the last one used)\n"
                      "# TYPE onnxd_feature_store_used_bytes gauge\n"
                      "onnxd_feature_store_used_bytes %" PRIu64
                      "\n"
                      "# HELP onnxd_feature_store_capacity_bytes Size the L2 store may grow to "
                      "(--feature-store-max-bytes)\n"
                      "# TYPE onnxd_feature_store_capacity_bytes gauge\n"
                      "onnxd_feature_store_capacity_bytes %" PRIu64
                      "\n"
                      "# HELP onnxd_feature_store_map_bytes The L2 store's current memory map "
                      "(grows by doubling up to the capacity)\n"
                      "# TYPE onnxd_feature_store_map_bytes gauge\n"
                      "onnxd_feature_store_map_bytes %" PRIu64 "\n",
                      used, max, map);
  rc |= ox_buf_printf(o,
                      "# HELP onnxd_feature_nonfinite_total Features that were not finite "
                      "(stored before ingestion refused such values) and were replaced by "
                      "defaults\n# TYPE onnxd_feature_nonfinite_total counter\n"
                      "onnxd_feature_nonfinite_total %" PRIu64 "\n",
                      LD(fs->nonfinite));
  if (fs->redis || fs->pg) {
    rc |= ox_buf_printf(
        o,
        "# HELP onnxd_feature_l3_fetch_rounds_total Rounds of the L3 fetcher (one MGET per "
        "backend each)\n# TYPE onnxd_feature_l3_fetch_rounds_total counter\n"
        "onnxd_feature_l3_fetch_rounds_total %" PRIu64
        "\n"
        "# HELP onnxd_feature_l3_fetch_rows_total Rows the L3 fetcher asked for, over all "
        "requests\n# TYPE onnxd_feature_l3_fetch_rows_total counter\n"
        "onnxd_feature_l3_fetch_rows_total %" PRIu64 "\n",
        LD(fs->fetch_rounds), LD(fs->fetch_wants));
    if (fs->events_to_redis)
      rc |= ox_buf_printf(
          o,
          "# HELP onnxd_feature_events_l3_failed_total Events stored in L2 whose append to "
          "their Redis lists failed\n# TYPE onnxd_feature_events_l3_failed_total counter\n"
          "onnxd_feature_events_l3_failed_total %" PRIu64 "\n",
          LD(fs->events_l3_failed));
    static const char *const help[] = {
        "# HELP onnxd_feature_breaker_state L3 circuit breaker: 0 closed, 1 open, 2 half-open\n"
        "# TYPE onnxd_feature_breaker_state gauge\n",
        "# HELP onnxd_feature_breaker_opened_total L3 circuit breaker openings\n"
        "# TYPE onnxd_feature_breaker_opened_total counter\n",
        "# HELP onnxd_feature_breaker_short_circuited_total L3 calls refused by an open breaker\n"
        "# TYPE onnxd_feature_breaker_short_circuited_total counter\n"};
    for (int part = 0; part < 3; part++) {
      rc |= ox_buf_puts(o, help[part]);
      if (fs->redis) rc |= breaker_lines(o, "redis", ox_l3_redis_breaker(fs->redis), part);
      if (fs->pg) rc |= breaker_lines(o, "postgres", ox_l3_pg_breaker(fs->pg), part);
    }
  }
  return rc ? OX_ENOMEM : 0;
}

void ox_fstore_usage(ox_fstore_t *fs, uint64_t *used, uint64_t *capacity) {
  uint64_t map;
  ox_l2_usage(fs->l2, used, &map, capacity);
}
