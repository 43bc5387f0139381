/* feature_bench.c: onnxd-feature-bench, in-process latency of the feature store's local tiers,
 * through the same calls the server makes, no HTTP:
 *
 *   onnxd-feature-bench [--keys 100000] [--gets 1000000] [--json FILE]
 *                       [--redis HOST:PORT] [--postgres CONNINFO] [--l3-keys 10000]
 *
 * - L1: --keys keys ("user:u<n>") of --value-bytes bytes in a 256 MiB, 64-shard map; --gets
 *   uniformly random gets per thread, with 1 thread and then 2 threads at once.
 * - Bloom: a 1 h, 4-generation filter sized for --keys items at 1 %, holding --keys keys;
 *   --gets checks of present keys and of absent keys, timed in bulk (ns per check) and one by
 *   one (percentiles).
 * - L2: an LMDB environment in --l2-dir (default: a fresh directory under $TMPDIR, removed at
 *   the end) with --keys rows of --value-bytes bytes and --entities entities holding one event
 *   every 29 minutes over 48 h (~50 in any 24 h); --l2-gets random row gets and --scans 24 h
 *   event scans (decoding each 24-byte event), and the same scans followed by the velocity
 *   features. The page cache is warm (the data was just written).
 * - L3 (only with --redis and/or --postgres): --l3-keys rows ("l3bench:u<n>", --value-bytes
 *   each) are written into the backend through the server's own calls (ox_l3_redis_set with a
 *   1 h TTL, so they expire by themselves; ox_l3_pg_ensure_schema + ox_l3_pg_put into the
 *   "features" table, deleted again at the end), then --l3-gets random single-key gets are timed
 *   one by one on one connection (pool size 1), each with a 1 s deadline and the breaker never
 *   opening, so every get is a real round trip. Each value read is checked against the one
 *   written. A miss or an error in the timed loop is counted and printed, and makes the exit
 *   status 1: the percentiles are valid only when both counts are 0.
 *
 * Each operation is timed alone with CLOCK_MONOTONIC (vDSO) reads before and after, recorded in
 * the load generator's histogram (loadgen_hist.h, ~1 % resolution); the timer's own cost, which
 * every percentile includes, is measured and printed as timer_overhead_ns.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/flags.h"
#include "features/bloom.h"
#include "features/breaker.h"
#include "features/l1.h"
#include "features/l2.h"
#include "features/l3_pg.h"
#include "features/l3_redis.h"
#include "features/velocity.h"
#include "loadgen_hist.h"

typedef struct {
  long keys, gets, value_bytes, entities, l2_gets, scans, l3_keys, l3_gets;
  const char *l2_dir, *json, *redis, *postgres;
} opts_t;

static const ox_flag_t k_flags[] = {
#define O(f) offsetof(opts_t, f)
    {"keys", OX_FLAG_INT, O(keys), 1, 100000000, "L1 keys, Bloom items and L2 rows [100000]"},
    {"gets", OX_FLAG_INT, O(gets), 1, 1000000000, "L1 gets per thread and Bloom checks [1000000]"},
    {"value-bytes", OX_FLAG_INT, O(value_bytes), 1, 1 << 20, "L1, L2 and L3 value size [128]"},
    {"entities", OX_FLAG_INT, O(entities), 1, 10000000, "L2 entities with events [2000]"},
    {"l2-gets", OX_FLAG_INT, O(l2_gets), 1, 1000000000, "L2 row gets [200000]"},
    {"scans", OX_FLAG_INT, O(scans), 1, 1000000000, "L2 24 h event scans [20000]"},
    {"l2-dir", OX_FLAG_STR, O(l2_dir), 0, 0, "LMDB directory (created; default: a temporary one)"},
    {"json", OX_FLAG_STR, O(json), 0, 0, "also write the results as JSON to this file"},
    {"redis", OX_FLAG_STR, O(redis), 0, 0,
     "HOST:PORT: also time L3 Redis GETs (writes l3bench:* keys)"},
    {"postgres", OX_FLAG_STR, O(postgres), 0, 0,
     "CONNINFO: also time L3 PostgreSQL gets (table features)"},
    {"l3-keys", OX_FLAG_INT, O(l3_keys), 1, 100000000, "L3 rows written to each backend [10000]"},
    {"l3-gets", OX_FLAG_INT, O(l3_gets), 1, 1000000000, "L3 gets per backend, one by one [20000]"},
#undef O
};

static const ox_flags_spec_t k_spec = {
    .prog = "onnxd-feature-bench",
    .flags = k_flags,
    .nflags = sizeof k_flags / sizeof k_flags[0],
    .usage_head = "usage: onnxd-feature-bench [--flag value | --flag=value]...\n\n",
    .name_width = 12,
};

/* ---- helpers ------------------------------------------------------------------------------ */

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline uint64_t rng(uint64_t *x) { /* xorshift64 */
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

typedef struct {
  char s[24];
  size_t len;
} bkey_t;

static bkey_t *make_keys(long n, const char *prefix) {
  bkey_t *k = malloc((size_t)n * sizeof *k);
  if (!k) return NULL;
  for (long i = 0; i < n; i++)
    k[i].len = (size_t)snprintf(k[i].s, sizeof k[i].s, "%s%ld", prefix, i);
  return k;
}
static ox_slice_t KS(const bkey_t *k) {
  return ox_slice(k->s, k->len);
}

typedef struct {
  double p50, p99, p999, mean, max; /* ns */
} pct_t;

static pct_t pct(const ox_lg_hist_t *h) {
  return (pct_t){(double)ox_lg_hist_percentile(h, 50), (double)ox_lg_hist_percentile(h, 99),
                 (double)ox_lg_hist_percentile(h, 99.9), ox_lg_hist_mean(h),
                 h->total ? (double)h->max : 0};
}

static void print_pct(const char *what, pct_t p, double scale, const char *unit) {
  printf("  %-26s p50 %8.3f %s  p99 %8.3f %s  p99.9 %8.3f %s  mean %8.3f %s\n", what, p.p50 / scale,
         unit, p.p99 / scale, unit, p.p999 / scale, unit, p.mean / scale, unit);
}

static int json_pct(ox_buf_t *b, const char *name, pct_t p, double scale, const char *unit) {
  return ox_buf_printf(b,
                       "\"%s\": {\"p50_%s\": %.3f, \"p99_%s\": %.3f, \"p999_%s\": %.3f, "
                       "\"mean_%s\": %.3f, \"max_%s\": %.3f}",
                       name, unit, p.p50 / scale, unit, p.p99 / scale, unit, p.p999 / scale, unit,
                       p.mean / scale, unit, p.max / scale);
}

/* ---- L1 ----------------------------------------------------------------------------------- */

typedef struct {
  ox_l1_t *c;
  const bkey_t *keys;
  long nkeys, gets;
  size_t vbytes;
  uint64_t seed, misses;
  ox_lg_hist_t h;
} l1_worker_t;

static void *l1_worker(void *arg) {
  l1_worker_t *w = arg;
  char *out = malloc(w->vbytes);
  if (!out) return NULL;
  ox_lg_hist_init(&w->h);
  for (long i = 0; i < w->gets; i++) {
    bkey_t k = w->keys[rng(&w->seed) % (uint64_t)w->nkeys]; /* as in a request: in cache */
    size_t len;
    uint64_t t0 = now_ns();
    int rc = ox_l1_get(w->c, KS(&k), 1000, out, w->vbytes, &len);
    uint64_t t1 = now_ns();
    w->misses += rc != 0;
    ox_lg_hist_record(&w->h, t1 - t0);
  }
  free(out);
  return NULL;
}

static int bench_l1(const opts_t *o, const bkey_t *keys, pct_t res[2], uint64_t *misses) {
  ox_l1_t *c = NULL;
  int rc = ox_l1_create(256u << 20, 64, &c);
  char *val = calloc(1, (size_t)o->value_bytes);
  if (rc || !val) return rc ? rc : OX_ENOMEM;
  for (long i = 0; i < o->keys && !rc; i++)
    rc = ox_l1_put(c, KS(&keys[i]), val, (size_t)o->value_bytes, 0, 0);
  for (int nt = 1; nt <= 2 && !rc; nt++) {
    static l1_worker_t w[2];
    pthread_t t[2];
    static ox_lg_hist_t all;
    ox_lg_hist_init(&all);
    for (int i = 0; i < nt; i++) {
      w[i] = (l1_worker_t){.c = c,
                           .keys = keys,
                           .nkeys = o->keys,
                           .gets = o->gets,
                           .vbytes = (size_t)o->value_bytes,
                           .seed = 0x9E3779B97F4A7C15ULL + (uint64_t)i};
      if (pthread_create(&t[i], NULL, l1_worker, &w[i])) {
        fprintf(stderr, "onnxd-feature-bench: cannot start threads\n");
        exit(1);
      }
    }
    for (int i = 0; i < nt; i++) {
      pthread_join(t[i], NULL);
      ox_lg_hist_merge(&all, &w[i].h);
      *misses += w[i].misses;
    }
    res[nt - 1] = pct(&all);
  }
  ox_l1_destroy(c);
  free(val);
  return rc;
}

/* ---- Bloom -------------------------------------------------------------------------------- */

typedef struct {
  double present_ns, absent_ns, fp_rate;
  pct_t one;
} bloom_res_t;

static int bench_bloom(const opts_t *o, const bkey_t *keys, const bkey_t *absent,
                       bloom_res_t *res) {
  ox_bloom_t *b = NULL;
  int rc = ox_bloom_create(3600000, 4, (uint64_t)o->keys, 0.01, &b);
  if (rc) return rc;
  const int64_t now = 1700000000000LL;
  for (long i = 0; i < o->keys; i++) ox_bloom_add(b, KS(&keys[i]), now);
  uint64_t x = 12345, hits = 0, t0 = now_ns();
  for (long i = 0; i < o->gets; i++)
    hits += (uint64_t)ox_bloom_check(b, KS(&keys[rng(&x) % (uint64_t)o->keys]), now);
  uint64_t t1 = now_ns(), fps = 0;
  for (long i = 0; i < o->gets; i++)
    fps += (uint64_t)ox_bloom_check(b, KS(&absent[rng(&x) % (uint64_t)o->keys]), now);
  uint64_t t2 = now_ns();
  res->present_ns = (double)(t1 - t0) / (double)o->gets;
  res->absent_ns = (double)(t2 - t1) / (double)o->gets;
  res->fp_rate = (double)fps / (double)o->gets;
  if (hits != (uint64_t)o->gets) fprintf(stderr, "bloom: false negatives!\n");
  static ox_lg_hist_t h;
  ox_lg_hist_init(&h);
  uint64_t sink = 0;
  for (long i = 0; i < o->gets; i++) {
    bkey_t k = (i & 1) ? keys[rng(&x) % (uint64_t)o->keys] : absent[rng(&x) % (uint64_t)o->keys];
    uint64_t a = now_ns();
    sink += (uint64_t)ox_bloom_check(b, KS(&k), now);
    ox_lg_hist_record(&h, now_ns() - a);
  }
  res->one = pct(&h);
  res->fp_rate += 0 * (double)sink; /* keeps the checks' results live */
  ox_bloom_destroy(b);
  return 0;
}

/* ---- L2 ----------------------------------------------------------------------------------- */

typedef struct {
  ox_feat_event_t ev[256];
  size_t n;
} scan_buf_t;

static int collect(void *arg, const ox_l2_event_t *ev) {
  scan_buf_t *s = arg;
  if (s->n < 256 && ox_feat_event_decode(ev->payload.ptr, ev->payload.len, &s->ev[s->n]) == 0)
    s->n++;
  return 0;
}

static void noop_row(void *arg, ox_slice_t v) {
  *(size_t *)arg += v.len;
}

typedef struct {
  pct_t row, scan, velocity;
  double events_per_scan;
} l2_res_t;

static int bench_l2(const opts_t *o, const char *dir, const bkey_t *keys, l2_res_t *res) {
  ox_l2_t *l2 = NULL;
  ox_l2_opts_t lo = {.map_size = 4ULL << 30, .max_readers = 16, .sync = OX_L2_SYNC_NONE};
  int rc = ox_l2_open(dir, &lo, &l2);
  if (rc) return rc;
  char *val = calloc(1, (size_t)o->value_bytes);
  const int64_t t_end = 1700000000000LL, step = 29 * 60000, span = 48 * 3600000LL;
  for (long i = 0; i < o->keys && !rc && val; i++) {
    while ((rc = ox_l2_put_row(l2, KS(&keys[i]), val, (size_t)o->value_bytes)) == OX_EUNAVAILABLE)
      rc = ox_l2_flush(l2); /* queue full: let the writer catch up */
  }
  char ent[32];
  for (long e = 0; e < o->entities && !rc; e++) {
    size_t elen = (size_t)snprintf(ent, sizeof ent, "card:%ld", e);
    for (int64_t ts = t_end - span + (e * 7919) % step; ts <= t_end && !rc; ts += step) {
      ox_feat_event_t ev = {ts, 12.5, (uint64_t)(ts % 13)};
      unsigned char b[OX_FEAT_EVENT_BYTES];
      ox_feat_event_encode(&ev, b);
      while ((rc = ox_l2_append_event(l2, ox_slice(ent, elen), ts, b, sizeof b)) == OX_EUNAVAILABLE)
        rc = ox_l2_flush(l2);
    }
  }
  if (!rc) rc = ox_l2_flush(l2);
  ox_l2_reader_t *r = NULL;
  if (!rc) rc = ox_l2_reader_open(l2, &r);
  static ox_lg_hist_t hr, hs, hv;
  ox_lg_hist_init(&hr);
  ox_lg_hist_init(&hs);
  ox_lg_hist_init(&hv);
  uint64_t x = 777, events = 0;
  size_t sink = 0;
  for (long i = 0; i < o->l2_gets && !rc; i++) {
    bkey_t k = keys[rng(&x) % (uint64_t)o->keys];
    uint64_t t0 = now_ns();
    rc = ox_l2_get_row(r, KS(&k), noop_row, &sink);
    ox_lg_hist_record(&hr, now_ns() - t0);
  }
  static scan_buf_t sb;
  for (long i = 0; i < 2 * o->scans && !rc; i++) {
    size_t elen =
        (size_t)snprintf(ent, sizeof ent, "card:%" PRIu64, rng(&x) % (uint64_t)o->entities);
    float f[OX_FEAT_VELOCITY_N];
    sb.n = 0;
    uint64_t t0 = now_ns();
    int n =
        ox_l2_scan_events(r, ox_slice(ent, elen), t_end - OX_FEAT_W_24H + 1, t_end, collect, &sb);
    if (i & 1) rc = ox_feat_velocity(sb.ev, sb.n, t_end, -1.0f, f); /* odd rounds: + features */
    uint64_t t1 = now_ns();
    if (n < 0) rc = n;
    ox_lg_hist_record((i & 1) ? &hv : &hs, t1 - t0);
    if (!(i & 1)) events += (uint64_t)n;
  }
  if (!rc) {
    res->row = pct(&hr);
    res->scan = pct(&hs);
    res->velocity = pct(&hv);
    res->events_per_scan = (double)events / (double)o->scans;
  }
  ox_l2_reader_close(r);
  ox_l2_close(l2);
  free(val);
  return rc;
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[4096];
  while ((e = readdir(d)))
    if (e->d_name[0] != '.' && snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
      unlink(p);
  closedir(d);
  rmdir(dir);
}

/* ---- L3 ----------------------------------------------------------------------------------- */

#define L3_DEADLINE_NS (1000 * INT64_C(1000000)) /* per call: generous, a timeout is an error */
#define L3_TTL_MS 3600000                        /* Redis rows expire by themselves */

/* One remote backend behind the two calls the bench makes (the server makes the same ones). */
typedef struct {
  void *h;
  int (*put)(void *h, ox_slice_t key, ox_slice_t val, int64_t deadline_ns);
  int (*get)(void *h, ox_slice_t key, ox_buf_t *out, int64_t deadline_ns);
} l3_backend_t;

static int redis_put(void *h, ox_slice_t key, ox_slice_t val, int64_t deadline_ns) {
  return ox_l3_redis_set(h, key, val, L3_TTL_MS, deadline_ns);
}
static int redis_get(void *h, ox_slice_t key, ox_buf_t *out, int64_t deadline_ns) {
  return ox_l3_redis_get(h, key, out, deadline_ns);
}
static int pg_put(void *h, ox_slice_t key, ox_slice_t val, int64_t deadline_ns) {
  return ox_l3_pg_put(h, key, val, deadline_ns);
}
static int pg_get(void *h, ox_slice_t key, ox_buf_t *out, int64_t deadline_ns) {
  return ox_l3_pg_get(h, key, out, deadline_ns);
}

typedef struct {
  int ran;
  pct_t get;
  uint64_t misses, errors;
  char first_error[128]; /* what the first error was ("" when none) */
} l3_res_t;

/* Row n's value: distinct per row, so a get that returns another row's value is caught. */
static void l3_value(char *v, size_t len, long n) {
  for (size_t j = 0; j < len; j++) v[j] = (char)(unsigned char)((uint64_t)n * 131 + j);
}

/* Writes o->l3_keys rows, then times o->l3_gets random gets one by one; misses, errors and
 * wrong values are counted in res. Returns 0, or the error that stopped the rows' loading
 * (*stage then says what was being done). */
static int bench_l3(const opts_t *o, const l3_backend_t *be, const bkey_t *keys, l3_res_t *res,
                    const char **stage) {
  size_t vb = (size_t)o->value_bytes;
  char *val = malloc(vb), *want = malloc(vb);
  int rc = val && want ? 0 : OX_ENOMEM;
  *stage = "writing rows";
  for (long i = 0; i < o->l3_keys && !rc; i++) {
    l3_value(val, vb, i);
    rc = be->put(be->h, KS(&keys[i]), ox_slice(val, vb), ox_mono_ns() + L3_DEADLINE_NS);
  }
  static ox_lg_hist_t h;
  ox_lg_hist_init(&h);
  ox_buf_t out;
  ox_buf_init(&out);
  uint64_t x = 4242;
  for (long i = 0; i < o->l3_gets && !rc; i++) {
    long n = (long)(rng(&x) % (uint64_t)o->l3_keys);
    out.len = 0; /* reused: no allocation once it has grown */
    int64_t deadline = ox_mono_ns() + L3_DEADLINE_NS;
    uint64_t t0 = now_ns();
    int g = be->get(be->h, KS(&keys[n]), &out, deadline);
    ox_lg_hist_record(&h, now_ns() - t0);
    const char *what = NULL;
    if (g == OX_ENOT_FOUND)
      res->misses++;
    else if (g)
      what = ox_strerror(g);
    else if (l3_value(want, vb, n), out.len != vb || memcmp(out.data, want, vb))
      what = "a value other than the one written";
    if (what && !res->errors++) snprintf(res->first_error, sizeof res->first_error, "%s", what);
  }
  if (!rc) {
    res->ran = 1;
    res->get = pct(&h);
  }
  ox_buf_free(&out);
  free(val);
  free(want);
  return rc;
}

/* Sets up the backend named by --redis (i == 0) or --postgres (i == 1) with one connection, runs
 * bench_l3 on it and tears it down. 0, or an error already printed to stderr. */
static int run_l3(const opts_t *o, int i, const bkey_t *keys, l3_res_t *res) {
  /* Every call bounded by its own 1 s deadline; a breaker that never opens. */
  const ox_breaker_opts_t never = {.failures = -1};
  const int64_t admin_ns = 10 * L3_DEADLINE_NS;
  l3_backend_t be = {0};
  const char *stage = "setting up";
  int rc = 0;
  if (i == 0) {
    char host[256];
    const char *colon = strrchr(o->redis, ':'), *s = colon ? colon + 1 : "";
    long port = 0;
    for (; *s >= '0' && *s <= '9' && port <= 65535; s++) port = port * 10 + (*s - '0');
    size_t hl = colon ? (size_t)(colon - o->redis) : 0;
    if (hl == 0 || hl >= sizeof host || *s || s == colon + 1 || port < 1 || port > 65535) {
      fprintf(stderr, "onnxd-feature-bench: --redis must be HOST:PORT, not '%s'\n", o->redis);
      return OX_EINVALID;
    }
    memcpy(host, o->redis, hl);
    host[hl] = 0;
    ox_l3_redis_opts_t ro = {.host = host,
                             .port = (int)port,
                             .pool_size = 1,
                             .connect_timeout_ms = 1000,
                             .command_timeout_ms = 1000,
                             .breaker = never};
    ox_l3_redis_t *r = NULL;
    rc = ox_l3_redis_create(&ro, &r);
    be = (l3_backend_t){r, redis_put, redis_get};
    if (!rc) rc = bench_l3(o, &be, keys, res, &stage);
    ox_l3_redis_destroy(r);
  } else {
    ox_l3_pg_opts_t po = {.conninfo = o->postgres,
                          .pool_size = 1,
                          .connect_timeout_ms = 1000,
                          .command_timeout_ms = 1000,
                          .breaker = never};
    ox_l3_pg_t *pg = NULL;
    rc = ox_l3_pg_create(&po, &pg);
    be = (l3_backend_t){pg, pg_put, pg_get};
    if (!rc) {
      stage = "creating the table";
      rc = ox_l3_pg_ensure_schema(pg, ox_mono_ns() + admin_ns);
    }
    if (!rc) {
      rc = bench_l3(o, &be, keys, res, &stage);
      /* The rows go again, even after an error (best effort: the server may be the problem). */
      int dr = ox_l3_pg_exec(pg, "DELETE FROM features WHERE entity LIKE 'l3bench:%'",
                             ox_mono_ns() + admin_ns);
      if (dr && !rc)
        fprintf(stderr, "onnxd-feature-bench: L3 postgres: deleting the rows: %s\n",
                ox_strerror(dr));
    }
    ox_l3_pg_destroy(pg);
  }
  if (rc)
    fprintf(stderr, "onnxd-feature-bench: L3 %s: %s: %s\n", i ? "postgres" : "redis", stage,
            ox_strerror(rc));
  return rc;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
  opts_t o = {.keys = 100000,
              .gets = 1000000,
              .value_bytes = 128,
              .entities = 2000,
              .l2_gets = 200000,
              .scans = 20000,
              .l3_keys = 10000,
              .l3_gets = 20000};
  int frc = ox_flags_parse(&k_spec, argc, argv, &o, stderr);
  if (frc == OX_FLAGS_HELP) ox_flags_usage(&k_spec, NULL, stdout);
  if (frc) return frc == OX_FLAGS_HELP ? 0 : 2;
  bkey_t *keys = make_keys(o.keys, "user:u"), *absent = make_keys(o.keys, "user:absent");
  bkey_t *l3keys = o.redis || o.postgres ? make_keys(o.l3_keys, "l3bench:u") : NULL;
  if (!keys || !absent || ((o.redis || o.postgres) && !l3keys)) return 1;

  static ox_lg_hist_t th; /* the timer's own cost: two back-to-back reads */
  ox_lg_hist_init(&th);
  for (int i = 0; i < 100000; i++) {
    uint64_t a = now_ns();
    ox_lg_hist_record(&th, now_ns() - a);
  }
  double timer_ns = (double)ox_lg_hist_percentile(&th, 50);

  pct_t l1[2];
  uint64_t l1_misses = 0;
  int rc = bench_l1(&o, keys, l1, &l1_misses);
  bloom_res_t bl = {0};
  if (!rc) rc = bench_bloom(&o, keys, absent, &bl);
  char tmpl[512];
  const char *dir = o.l2_dir;
  if (!dir) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpl, sizeof tmpl, "%s/onnxd-feature-bench-XXXXXX", t && *t ? t : "/tmp");
    dir = mkdtemp(tmpl);
    if (!dir) rc = -errno;
  }
  l2_res_t l2 = {0};
  if (!rc) rc = bench_l2(&o, dir, keys, &l2);
  if (!o.l2_dir && dir) remove_dir(dir);
  if (rc) {
    fprintf(stderr, "onnxd-feature-bench: %s\n", ox_strerror(rc));
    return 1;
  }
  l3_res_t l3[2] = {{0}, {0}}; /* redis, postgres */
  const char *const l3_names[2] = {"redis", "postgres"};
  uint64_t l3_failed = 0;
  for (int i = 0; i < 2 && !rc; i++) {
    if (!(i ? o.postgres : o.redis)) continue;
    rc = run_l3(&o, i, l3keys, &l3[i]); /* an error is printed there */
    l3_failed += l3[i].misses + l3[i].errors;
  }
  if (rc) {
    free(keys);
    free(absent);
    free(l3keys);
    return 1;
  }

  printf(
      "onnxd-feature-bench: %ld keys, %ld-byte values; timer overhead %.0f ns (included below)\n",
      o.keys, o.value_bytes, timer_ns);
  print_pct("L1 get, 1 thread", l1[0], 1, "ns");
  print_pct("L1 get, 2 threads", l1[1], 1, "ns");
  printf("  %-26s present %.1f ns  absent %.1f ns (bulk)  fp rate %.4f\n", "Bloom check",
         bl.present_ns, bl.absent_ns, bl.fp_rate);
  print_pct("Bloom check, one by one", bl.one, 1, "ns");
  print_pct("L2 row get", l2.row, 1000, "us");
  print_pct("L2 24h event scan", l2.scan, 1000, "us");
  print_pct("L2 24h scan + velocity", l2.velocity, 1000, "us");
  printf("  %-26s %.1f events per scan; L1 misses %" PRIu64 "\n", "", l2.events_per_scan,
         l1_misses);
  for (int i = 0; i < 2; i++) {
    if (!l3[i].ran) continue;
    char what[32];
    snprintf(what, sizeof what, "L3 %s GET", l3_names[i]);
    print_pct(what, l3[i].get, 1000, "us");
    printf("  %-26s %ld rows, %ld gets, 1 connection; misses %" PRIu64 ", errors %" PRIu64 "%s%s\n",
           "", o.l3_keys, o.l3_gets, l3[i].misses, l3[i].errors, l3[i].errors ? "; first: " : "",
           l3[i].first_error);
  }
  if (l3_failed)
    fprintf(stderr,
            "onnxd-feature-bench: L3 gets missed or failed: the L3 results are not valid\n");

  if (o.json) {
    ox_buf_t b;
    ox_buf_init(&b);
    int jr = ox_buf_printf(&b,
                           "{\"keys\": %ld, \"value_bytes\": %ld, \"timer_overhead_ns\": %.0f,\n"
                           " \"l1\": {",
                           o.keys, o.value_bytes, timer_ns);
    if (!jr) jr = json_pct(&b, "get_1_thread", l1[0], 1, "ns");
    if (!jr) jr = ox_buf_puts(&b, ", ");
    if (!jr) jr = json_pct(&b, "get_2_threads", l1[1], 1, "ns");
    if (!jr)
      jr = ox_buf_printf(&b,
                         "},\n \"bloom\": {\"check_present_ns\": %.2f, \"check_absent_ns\": "
                         "%.2f, \"fp_rate\": %.5f, ",
                         bl.present_ns, bl.absent_ns, bl.fp_rate);
    if (!jr) jr = json_pct(&b, "check_one", bl.one, 1, "ns");
    if (!jr) jr = ox_buf_puts(&b, "},\n \"l2\": {");
    if (!jr) jr = json_pct(&b, "row_get", l2.row, 1000, "us");
    if (!jr) jr = ox_buf_puts(&b, ", ");
    if (!jr) jr = json_pct(&b, "scan_24h", l2.scan, 1000, "us");
    if (!jr) jr = ox_buf_puts(&b, ", ");
    if (!jr) jr = json_pct(&b, "scan_24h_velocity", l2.velocity, 1000, "us");
    if (!jr) jr = ox_buf_printf(&b, ", \"events_per_scan\": %.1f}", l2.events_per_scan);
    if (!jr && (o.redis || o.postgres))
      jr = ox_buf_printf(&b, ",\n \"l3\": {\"keys\": %ld, \"gets\": %ld", o.l3_keys, o.l3_gets);
    for (int i = 0; i < 2 && !jr; i++) {
      if (!l3[i].ran) continue;
      char name[32];
      snprintf(name, sizeof name, "%s_get", l3_names[i]);
      jr = ox_buf_puts(&b, ", ");
      if (!jr) jr = json_pct(&b, name, l3[i].get, 1000, "us");
      if (!jr)
        jr = ox_buf_printf(&b, ", \"%s_misses\": %" PRIu64 ", \"%s_errors\": %" PRIu64, l3_names[i],
                           l3[i].misses, l3_names[i], l3[i].errors);
    }
    if (!jr && (o.redis || o.postgres)) jr = ox_buf_puts(&b, "}");
    if (!jr) jr = ox_buf_puts(&b, "}\n");
    FILE *f = jr ? NULL : fopen(o.json, "w");
    int werr = !f;
    if (f) {
      werr |= fwrite(b.data, 1, b.len, f) != b.len;
      werr |= fclose(f) != 0;
    }
    ox_buf_free(&b);
    if (werr) {
      fprintf(stderr, "onnxd-feature-bench: cannot write --json '%s'\n", o.json);
      rc = 1;
    }
  }
  free(keys);
  free(absent);
  free(l3keys);
  return rc || l3_failed ? 1 : 0;
}
