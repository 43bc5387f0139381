/* fstore_test.c: the feature store (features/fstore.h) on a real LMDB directory, no L3.
 *
 * Velocity reads are held against features/velocity.h computed from every event of the entity
 * kept here in memory (the definition, no cache), for random streams that interleave ingests
 * with reads at the stream's time, in the past and in the future, with equal timestamps and
 * out-of-order events; across a close and reopen (the Bloom filter rebuilt from the index,
 * lists refilled from L2); which tier answered is read from the store's counters.
 */
#include "features/fstore.h"

#include <ftw.h>
#include <time.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "features/fstore_priv.h"
#include "test.h"

static char dir_tmpl[] = "/tmp/onnxd-fstore-XXXXXX";
static char *dir;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
  return remove(p);
}

static ox_fstore_t *open_store(int64_t ttl_ms) {
  ox_fstore_opts_t o = {.dir = dir,
                        .l1_bytes = 8 << 20,
                        .l1_ttl_ms = ttl_ms,
                        .bloom_items = 10000,
                        .max_readers = 16,
                        .sync_none = 1};
  ox_fstore_t *fs = NULL;
  char err[256] = "";
  int rc = ox_fstore_open(&o, &fs, err, sizeof err);
  if (rc) fprintf(stderr, "open: %s\n", err);
  CHECK_INT(rc, 0);
  return fs;
}

static uint64_t count(ox_fstore_t *fs, ox_tier_t t, fs_result_t r) {
  return atomic_load(&fs->tiers[t].result[r]);
}

/* ---- a reference: every event, in insertion order --------------------------------------- */

#define MAXEV 40000
static struct {
  int ent;
  ox_feat_event_t ev;
} ref[MAXEV];
static size_t nref;

static void ref_velocity(int ent, int64_t t, float out[8]) {
  static ox_feat_event_t evs[MAXEV];
  size_t n = 0;
  for (size_t i = 0; i < nref; i++)
    if (ref[i].ent == ent) evs[n++] = ref[i].ev;
  /* stable sort by ts (insertion order among equal ts) */
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && evs[j - 1].ts_ms > evs[j].ts_ms; j--) {
      ox_feat_event_t tmp = evs[j];
      evs[j] = evs[j - 1];
      evs[j - 1] = tmp;
    }
  CHECK_INT(ox_feat_velocity(evs, n, t, -1.0f, out), 0);
}

static char names[64][32]; /* written once by setup: reader threads share them */
static ox_slice_t ent_name(int e) {
  return ox_slice(names[e], strlen(names[e]));
}

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static int check_entity(ox_fstore_t *fs, int e, int64_t t) {
  float got[8], want[8];
  ref_velocity(e, t, want);
  int rc = ox_fstore_velocity(fs, ent_name(e), t, got);
  CHECK_INT(rc, 0);
  if (memcmp(got, want, sizeof got)) {
    fprintf(stderr, "  entity %d at t=%lld:", e, (long long)t);
    for (int i = 0; i < 8; i++) fprintf(stderr, " %g/%g", got[i], want[i]);
    fprintf(stderr, "\n");
    return 0;
  }
  return 1;
}

#define NENT 12
static int64_t now_ts = 1700000000000;

/* Ingests a batch of random events (two entities each: a user and a card), mostly in order. */
static void ingest_batch(ox_fstore_t *fs, size_t n) {
  ox_fstore_event_t evs[64];
  for (size_t i = 0; i < n; i++) {
    uint64_t r = rnd();
    if (r % 5) now_ts += (int64_t)(rnd() % 7200000); /* up to 2 h; 1 in 5: same ts */
    int64_t ts = now_ts;
    if (r % 97 == 0) ts -= (int64_t)(rnd() % (3 * 86400000ll)); /* out of order */
    int u = (int)(rnd() % (NENT / 2)) * 2, c = (int)(rnd() % (NENT / 2)) * 2 + 1;
    evs[i] = (ox_fstore_event_t){
        .ev = {.ts_ms = ts, .amount = (double)(rnd() % 100000) / 100.0, .merchant = rnd() % 7},
        .num_entities = 2};
    evs[i].entities[0] = ent_name(u);
    evs[i].entities[1] = ent_name(c);
    ref[nref].ent = u;
    ref[nref++].ev = evs[i].ev;
    ref[nref].ent = c;
    ref[nref++].ev = evs[i].ev;
  }
  int l3err = -1;
  CHECK_INT(ox_fstore_ingest(fs, evs, n, &l3err, NULL), 0);
  CHECK_INT(l3err, 0); /* no write-through configured: nothing to fail */
}

TEST(velocity_matches_definition_through_l1_and_l2) {
  ox_fstore_t *fs = open_store(0);
  int bad = 0;
  for (int round = 0; round < 400 && !bad; round++) {
    ingest_batch(fs, 1 + rnd() % 5);
    for (int q = 0; q < 6 && !bad; q++) {
      int e = (int)(rnd() % NENT);
      int64_t t = now_ts;
      uint64_t k = rnd() % 10;
      if (k == 0) t -= (int64_t)(rnd() % (2 * 86400000ll)); /* the past */
      if (k == 1) t += (int64_t)(rnd() % (2 * 86400000ll)); /* the future */
      bad |= !check_entity(fs, e, t);
    }
  }
  CHECK(!bad);
  CHECK(count(fs, OX_TIER_L1, FS_HIT) > 1000); /* ingests keep the lists in L1 */
  CHECK(count(fs, OX_TIER_L2, FS_HIT) > 0);
  ox_fstore_close(fs);

  /* Reopened: nothing in L1, the Bloom filter rebuilt from the index. */
  fs = open_store(0);
  for (int e = 0; e < NENT && !bad; e++) bad |= !check_entity(fs, e, now_ts);
  CHECK_INT(count(fs, OX_TIER_L2, FS_HIT), NENT);
  CHECK_INT(count(fs, OX_TIER_L1, FS_HIT), 0);
  for (int e = 0; e < NENT && !bad; e++) bad |= !check_entity(fs, e, now_ts + 1000);
  CHECK_INT(count(fs, OX_TIER_L1, FS_HIT), NENT);
  CHECK_INT(atomic_load(&fs->bloom_neg), 0);
  /* more events after the restart, then far in the future (quiet > 24 h: secs_since_last) */
  for (int round = 0; round < 50 && !bad; round++) {
    ingest_batch(fs, 3);
    bad |= !check_entity(fs, (int)(rnd() % NENT), now_ts);
  }
  for (int e = 0; e < NENT && !bad; e++) bad |= !check_entity(fs, e, now_ts + 5 * 86400000ll);
  CHECK(!bad);
  ox_fstore_close(fs);
}

TEST(never_seen_entity_skips_l1_and_l2) {
  ox_fstore_t *fs = open_store(0);
  float out[8];
  uint64_t l1 = count(fs, OX_TIER_L1, FS_MISS) + count(fs, OX_TIER_L1, FS_HIT);
  CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("user:nobody"), now_ts, out), 0);
  for (int i = 0; i < 7; i++) CHECK(out[i] == 0.0f);
  CHECK(out[7] == -1.0f);
  CHECK_INT(atomic_load(&fs->bloom_neg), 1);
  CHECK_INT(count(fs, OX_TIER_L1, FS_MISS) + count(fs, OX_TIER_L1, FS_HIT), l1);
  ox_fstore_close(fs);
}

/* Events with an id: one already stored, or earlier in the same call, is skipped and counted;
 * the call's events are one commit, remembered across a reopen. */
TEST(event_ids_deduplicate) {
  ox_fstore_t *fs = open_store(0);
  ox_slice_t ent = OX_SLICE_LIT("user:dedup");
  ox_fstore_event_t evs[5];
  const char *ids[5] = {"a", "b", "a", "", "c"};
  for (int i = 0; i < 5; i++) {
    evs[i] = (ox_fstore_event_t){.ev = {.ts_ms = 1000 + i, .amount = 1.0}, .num_entities = 1};
    evs[i].entities[0] = ent;
    evs[i].id = ox_slice(ids[i], strlen(ids[i]));
  }
  size_t dups = 99;
  CHECK_INT(ox_fstore_ingest(fs, evs, 4, NULL, &dups), 0); /* a b a (none) */
  CHECK_INT(dups, 1);
  float out[8];
  CHECK_INT(ox_fstore_velocity(fs, ent, 2000, out), 0);
  CHECK(out[0] == 3.0f);
  CHECK_INT(ox_fstore_ingest(fs, evs, 5, NULL, &dups), 0); /* all known but c, and the one
                                                              without an id */
  CHECK_INT(dups, 3);
  CHECK_INT(ox_fstore_velocity(fs, ent, 2000, out), 0);
  CHECK(out[0] == 5.0f);
  ox_fstore_close(fs);
  fs = open_store(0);
  CHECK_INT(ox_fstore_ingest(fs, evs + 4, 1, NULL, &dups), 0); /* c, after a reopen */
  CHECK_INT(dups, 1);
  CHECK_INT(ox_fstore_velocity(fs, ent, 2000, out), 0);
  CHECK(out[0] == 5.0f);
  char big[OX_FSTORE_MAX_EVENT_ID + 1];
  memset(big, 'x', sizeof big);
  evs[0].id = ox_slice(big, sizeof big);
  CHECK_INT(ox_fstore_ingest(fs, evs, 1, NULL, &dups), OX_EINVALID);
  ox_fstore_close(fs);
}

TEST(events_to_redis_needs_redis) {
  ox_fstore_opts_t o = {.dir = dir,
                        .l1_bytes = 8 << 20,
                        .bloom_items = 100,
                        .max_readers = 16,
                        .sync_none = 1,
                        .events_to_redis = 1};
  ox_fstore_t *fs = NULL;
  char err[256] = "";
  CHECK_INT(ox_fstore_open(&o, &fs, err, sizeof err), OX_EINVALID);
  CHECK(fs == NULL);
  CHECK(strstr(err, "--redis") != NULL);
}

TEST(rows_fall_through_promote_and_expire) {
  ox_fstore_t *fs = open_store(100);
  float v[3] = {1.5f, -2.0f, 3.25f};
  int l3err = -1;
  CHECK_INT(ox_fstore_row_put(fs, OX_SLICE_LIT("profile:a"), v, sizeof v, 0, &l3err), 0);
  CHECK_INT(l3err, 0);
  ox_buf_t b;
  ox_buf_init(&b);
  ox_tier_t tier;
  CHECK_INT(ox_fstore_row_get(fs, OX_SLICE_LIT("profile:a"), &b, 0, &tier), 0);
  CHECK_INT(tier, OX_TIER_L1);
  CHECK_INT(b.len, sizeof v);
  CHECK_MEM(b.data, v, sizeof v);
  usleep(150000); /* TTL */
  b.len = 0;
  CHECK_INT(ox_fstore_row_get(fs, OX_SLICE_LIT("profile:a"), &b, 0, &tier), 0);
  CHECK_INT(tier, OX_TIER_L2);
  CHECK_MEM(b.data, v, sizeof v);
  b.len = 0;
  CHECK_INT(ox_fstore_row_get(fs, OX_SLICE_LIT("profile:a"), &b, 0, &tier), 0);
  CHECK_INT(tier, OX_TIER_L1);
  b.len = 0;
  CHECK_INT(ox_fstore_row_get(fs, OX_SLICE_LIT("profile:none"), &b, 0, &tier), OX_ENOT_FOUND);
  CHECK_INT(ox_fstore_row_get(fs, OX_SLICE_LIT("profile:none"), &b, 0, &tier), OX_ENOT_FOUND);
  CHECK_INT(tier, OX_TIER_L1); /* the miss is cached */
  float w[1] = {9.0f};
  CHECK_INT(ox_fstore_row_put(fs, OX_SLICE_LIT("profile:none"), w, sizeof w, 0, &l3err), 0);
  CHECK_INT(ox_fstore_row_get(fs, OX_SLICE_LIT("profile:none"), &b, 0, &tier), 0);
  CHECK_INT(b.len, sizeof w);
  CHECK_MEM(b.data, w, sizeof w);
  ox_buf_free(&b);
  ox_fstore_close(fs);
}

/* Readers fill L1 from L2 while ingests run: no list may end up stale or with an event twice. */
static ox_fstore_t *race_fs;
static atomic_int race_stop;
static _Atomic int64_t race_t; /* the readers' time: the stream's, published after each batch */
static void *race_reader(void *arg) {
  uint64_t r = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
  float out[8];
  while (!atomic_load(&race_stop)) {
    r ^= r << 13;
    r ^= r >> 7;
    r ^= r << 17;
    ox_fstore_velocity(race_fs, ent_name((int)(r % NENT)), atomic_load(&race_t), out);
    if (r % 7 == 0) { /* and rows, while they are rewritten */
      ox_buf_t b;
      ox_buf_init(&b);
      ox_tier_t tier;
      ox_fstore_row_get(race_fs, OX_SLICE_LIT("profile:race"), &b, 0, &tier);
      ox_buf_free(&b);
    }
  }
  return NULL;
}

TEST(concurrent_readers_never_leave_stale_lists) {
  ox_fstore_t *fs = open_store(0);
  race_fs = fs;
  atomic_store(&race_t, now_ts);
  atomic_store(&race_stop, 0);
  pthread_t th[3];
  for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, race_reader, (void *)(uintptr_t)(i + 1));
  float last = 0;
  for (int round = 0; round < 1500; round++) {
    ingest_batch(fs, 1 + rnd() % 3);
    atomic_store(&race_t, now_ts);
    last = (float)round;
    int l3err;
    ox_fstore_row_put(fs, OX_SLICE_LIT("profile:race"), &last, sizeof last, 0, &l3err);
  }
  atomic_store(&race_stop, 1);
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  int bad = 0;
  for (int pass = 0; pass < 2; pass++) /* the first may fill L1, the second reads it */
    for (int e = 0; e < NENT && !bad; e++) bad |= !check_entity(fs, e, now_ts);
  CHECK(!bad);
  ox_buf_t b;
  ox_buf_init(&b);
  ox_tier_t tier;
  CHECK_INT(ox_fstore_row_get(fs, OX_SLICE_LIT("profile:race"), &b, 0, &tier), 0);
  CHECK_INT(tier, OX_TIER_L1);
  CHECK(b.len == sizeof last && !memcmp(b.data, &last, sizeof last));
  ox_buf_free(&b);
  ox_fstore_close(fs);
}

static void setup(void) {
  for (int e = 0; e < 64; e++)
    snprintf(names[e], sizeof names[e], "%s:%d", e % 2 ? "card" : "user", e);
  dir = mkdtemp(dir_tmpl);
  if (!dir) {
    perror("mkdtemp");
    exit(1);
  }
}

/* ---- the merchant identity: a keyed hash under a secret kept in the store ---------------- */

static ox_fstore_t *open_dir(const char *d, int *rc, char *err, size_t errcap) {
  ox_fstore_opts_t o = {
      .dir = d, .l1_bytes = 1 << 20, .bloom_items = 100, .max_readers = 8, .sync_none = 1};
  ox_fstore_t *fs = NULL;
  *rc = ox_fstore_open(&o, &fs, err, errcap);
  return fs;
}

static uint64_t fnv1a64(const char *s) { /* the old, unkeyed merchant hash */
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

TEST(merchant_identity_is_keyed_per_store_and_stable) {
  char d1[] = "/tmp/onnxd-fstore-mk-XXXXXX", d2[] = "/tmp/onnxd-fstore-mk-XXXXXX";
  CHECK(mkdtemp(d1) && mkdtemp(d2));
  char err[400] = "";
  int rc;
  ox_fstore_t *a = open_dir(d1, &rc, err, sizeof err);
  CHECK_INT(rc, 0);
  ox_fstore_t *b = open_dir(d2, &rc, err, sizeof err);
  CHECK_INT(rc, 0);
  if (a && b) {
    uint64_t ha = ox_fstore_merchant_hash(a, "m1", 2), hb = ox_fstore_merchant_hash(b, "m1", 2);
    CHECK(ha != fnv1a64("m1") && hb != fnv1a64("m1"));
    CHECK(ha != hb); /* each store has its own secret */
    CHECK(ha == ox_siphash("m1", 2, ox_fstore_merchant_key(a)));
    CHECK(ox_fstore_merchant_hash(a, "m2", 2) != ha);
    /* an event in the store: the key survives a reopen */
    ox_fstore_event_t ev = {.ev = {.ts_ms = 1000, .amount = 1, .merchant = ha}, .num_entities = 1};
    ev.entities[0] = OX_SLICE_LIT("user:mk");
    CHECK_INT(ox_fstore_ingest(a, &ev, 1, NULL, NULL), 0);
    ox_fstore_close(a);
    a = open_dir(d1, &rc, err, sizeof err);
    CHECK_INT(rc, 0);
    if (a) CHECK(ox_fstore_merchant_hash(a, "m1", 2) == ha);
  }
  ox_fstore_close(a);
  ox_fstore_close(b);
  nftw(d1, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  nftw(d2, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TEST(store_with_fnv_merchants_is_refused) {
  /* a store as an older onnxd left it: events and the entity index, no merchant key */
  char d[] = "/tmp/onnxd-fstore-old-XXXXXX";
  CHECK(mkdtemp(d) != NULL);
  ox_l2_opts_t lo = {
      .map_size = 64 << 20, .max_readers = 4, .queue_max_ops = 1024, .sync = OX_L2_SYNC_NONE};
  ox_l2_t *l2 = NULL;
  CHECK_INT(ox_l2_open(d, &lo, &l2), 0);
  if (l2) {
    unsigned char rec[OX_FEAT_EVENT_BYTES];
    ox_feat_event_encode(&(ox_feat_event_t){.ts_ms = 5, .amount = 1, .merchant = fnv1a64("m1")},
                         rec);
    CHECK_INT(ox_l2_append_event(l2, OX_SLICE_LIT("user:old"), 5, rec, sizeof rec), 0);
    CHECK_INT(ox_l2_append_event(l2, OX_SLICE_LIT(FS_INDEX_ENTITY), 5, "user:old", 8), 0);
    CHECK_INT(ox_l2_flush(l2), 0);
    ox_l2_close(l2);
  }
  char err[400] = "";
  int rc;
  ox_fstore_t *fs = open_dir(d, &rc, err, sizeof err);
  CHECK(fs == NULL);
  CHECK_INT(rc, OX_EINVALID);
  CHECK(strstr(err, "older onnxd") && strstr(err, "FNV-1a") && strstr(err, d));
  ox_fstore_close(fs);
  nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- the per-entity cap: any 24 h window, all or nothing --------------------------------- */

static ox_fstore_t *open_capped(const char *d, uint64_t cap, size_t l1_bytes) {
  ox_fstore_opts_t o = {.dir = d,
                        .l1_bytes = l1_bytes,
                        .bloom_items = 100,
                        .max_readers = 8,
                        .sync_none = 1,
                        .max_events_24h = cap};
  ox_fstore_t *fs = NULL;
  char err[400] = "";
  CHECK_INT(ox_fstore_open(&o, &fs, err, sizeof err), 0);
  return fs;
}

#define T0 1700000000000LL
#define DAY 86400000LL

static int ingest_one(ox_fstore_t *fs, const char *ent, const char *other, int64_t ts) {
  ox_fstore_event_t ev = {.ev = {.ts_ms = ts, .amount = 1, .merchant = (uint64_t)ts},
                          .num_entities = other ? 2 : 1};
  ev.entities[0] = ox_slice(ent, strlen(ent));
  if (other) ev.entities[1] = ox_slice(other, strlen(other));
  return ox_fstore_ingest(fs, &ev, 1, NULL, NULL);
}

TEST(cap_refuses_the_whole_request) {
  char d[] = "/tmp/onnxd-fstore-cap-XXXXXX";
  CHECK(mkdtemp(d) != NULL);
  ox_fstore_t *fs = open_capped(d, 100, 1 << 20);
  if (!fs) return;
  ox_fstore_event_t evs[101];
  for (int i = 0; i < 101; i++) {
    evs[i] =
        (ox_fstore_event_t){.ev = {.ts_ms = T0 + i, .amount = 1, .merchant = 1}, .num_entities = 1};
    evs[i].entities[0] = OX_SLICE_LIT("user:cap");
  }
  /* 101 in one request: refused, nothing stored */
  CHECK_INT(ox_fstore_ingest(fs, evs, 101, NULL, NULL), OX_EQUOTA);
  char ent[300];
  CHECK_INT(ox_fstore_quota_entity(fs, ent, sizeof ent), 100);
  CHECK_STR(ent, "user:cap");
  float f[8];
  CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("user:cap"), T0 + 1000, f), 0);
  CHECK(f[2] == 0.0f);
  /* 100: accepted */
  CHECK_INT(ox_fstore_ingest(fs, evs, 100, NULL, NULL), 0);
  CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("user:cap"), T0 + 1000, f), 0);
  CHECK(f[2] == 100.0f);
  /* one more in the window, with another entity: refused whole (the other one gets nothing) */
  CHECK_INT(ingest_one(fs, "card:other", "user:cap", T0 + 500), OX_EQUOTA);
  CHECK_INT(ox_fstore_quota_entity(fs, ent, sizeof ent), 100);
  CHECK_STR(ent, "user:cap");
  CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("card:other"), T0 + 1000, f), 0);
  CHECK(f[2] == 0.0f && f[7] == -1.0f);
  /* backfill: a window ending at a later stored event would hold 101 */
  CHECK_INT(ingest_one(fs, "user:cap", NULL, T0 - 1), OX_EQUOTA);
  /* outside every full window: accepted */
  CHECK_INT(ingest_one(fs, "user:cap", NULL, T0 - DAY), 0);
  CHECK_INT(ingest_one(fs, "user:cap", NULL, T0 + 99 + DAY), 0);
  CHECK_INT(ingest_one(fs, "user:cap", "card:other", T0 + 2 * DAY), 0);
  CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("card:other"), T0 + 2 * DAY, f), 0);
  CHECK(f[2] == 1.0f);
  /* extreme times do not overflow the check */
  CHECK_INT(ingest_one(fs, "user:edge", NULL, INT64_MAX), 0);
  CHECK_INT(ingest_one(fs, "user:edge", NULL, INT64_MIN), 0);
  ox_fstore_close(fs);
  nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Far-future events are read ahead only up to t + 24h and the cap: the answer stays exact, and
 * such a list is not cached (it would be wrong for later requests). */
TEST(velocity_reads_a_bounded_look_ahead) {
  char d[] = "/tmp/onnxd-fstore-ahead-XXXXXX";
  CHECK(mkdtemp(d) != NULL);
  ox_fstore_t *fs = open_capped(d, 50, 1 << 20);
  if (!fs) return;
  ox_feat_event_t want_evs[8 * 50];
  size_t nw = 0;
  for (int day = 0; day < 8; day++) {
    ox_fstore_event_t evs[50];
    for (int i = 0; i < 50; i++) {
      evs[i] = (ox_fstore_event_t){
          .ev = {.ts_ms = T0 + day * 2 * DAY + i, .amount = 0.5 + i, .merchant = (uint64_t)i % 7},
          .num_entities = 1};
      evs[i].entities[0] = OX_SLICE_LIT("user:ahead");
      want_evs[nw++] = evs[i].ev;
    }
    CHECK_INT(ox_fstore_ingest(fs, evs, 50, NULL, NULL), 0);
  }
  for (int k = 0; k < 3; k++) {
    int64_t t = T0 + 2 * DAY + 40; /* inside the second day's burst */
    float got[8], want[8];
    uint64_t l1hit = count(fs, OX_TIER_L1, FS_HIT);
    CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("user:ahead"), t, got), 0);
    CHECK_INT(ox_feat_velocity(want_evs, nw, t, -1.0f, want), 0);
    CHECK_MEM(got, want, sizeof got);
    CHECK_INT(count(fs, OX_TIER_L1, FS_HIT), l1hit); /* never served from L1 */
  }
  /* the last burst has nothing after it: cached as usual */
  int64_t t = T0 + 14 * DAY + 49;
  float f[8];
  CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("user:ahead"), t, f), 0);
  uint64_t l1hit = count(fs, OX_TIER_L1, FS_HIT);
  CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("user:ahead"), t, f), 0);
  CHECK_INT(count(fs, OX_TIER_L1, FS_HIT), l1hit + 1);
  CHECK(f[2] == 50.0f);
  ox_fstore_close(fs);
  nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* One score of an entity at its cap, all merchants distinct, from L2 then L1: well within the
 * README's bound (at most 2 x cap + 1 events, a few hundred ns each: 20,000 events here, so
 * about 10 ms at most; 1 s allowed for sanitizers and a loaded machine). */
TEST(score_at_the_cap_is_bounded) {
  enum { CAP = 20000 };
  char d[] = "/tmp/onnxd-fstore-bound-XXXXXX";
  CHECK(mkdtemp(d) != NULL);
  ox_fstore_t *fs = open_capped(d, CAP, 64 << 20);
  if (!fs) return;
  ox_fstore_event_t *evs = calloc(CAP, sizeof *evs);
  for (size_t i = 0; i < CAP; i++) {
    evs[i] = (ox_fstore_event_t){
        .ev = {.ts_ms = T0 + (int64_t)i * 4000, .amount = 1e12, .merchant = rnd()},
        .num_entities = 1};
    evs[i].entities[0] = OX_SLICE_LIT("user:full");
  }
  CHECK_INT(ox_fstore_ingest(fs, evs, CAP, NULL, NULL), 0);
  CHECK_INT(ingest_one(fs, "user:full", NULL, T0 + CAP * 4000LL), OX_EQUOTA);
  for (int k = 0; k < 2; k++) {
    float f[8];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    CHECK_INT(ox_fstore_velocity(fs, OX_SLICE_LIT("user:full"), T0 + CAP * 4000LL, f), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    CHECK(ms < 1000);
    CHECK(f[2] == (float)CAP && f[6] == (float)CAP && f[5] == (float)(CAP * 1e12));
  }
  free(evs);
  ox_fstore_close(fs);
  nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- applying a log (ox_fstore_apply): the same outcome as one request at a time ---------- */

#define AP_ENTRIES 300
#define AP_MAXN 12

/* A store applying entries in batches of any size ends equal to one that ingested them as
 * separate requests: every entry's outcome (stored, duplicates, refused by the cap) and every
 * entity's velocity features, and the position row holds the last entry's value. */
TEST(apply_equals_one_request_at_a_time) {
  char da[] = "/tmp/onnxd-fstore-apa-XXXXXX", db[] = "/tmp/onnxd-fstore-apb-XXXXXX";
  CHECK(mkdtemp(da) != NULL && mkdtemp(db) != NULL);
  /* one store at a time: a thread's cached reader belongs to the last store it used */
  ox_fstore_t *a = open_capped(da, 6, 1 << 20);
  if (!a) return;
  static ox_fstore_event_t evs[AP_ENTRIES][AP_MAXN];
  static char ids[AP_ENTRIES][AP_MAXN][16];
  static const char *const ents[] = {"user:a", "user:b", "user:c", "card:x", "card:y"};
  ox_fstore_entry_t entries[AP_ENTRIES];
  size_t want_acc[AP_ENTRIES], want_dup[AP_ENTRIES];
  int want_rc[AP_ENTRIES];
  char posv[AP_ENTRIES][24];
  ox_slice_t pos[AP_ENTRIES];
  uint64_t r = 12345;
  for (int i = 0; i < AP_ENTRIES; i++) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    size_t n = 1 + (r >> 33) % AP_MAXN;
    for (size_t j = 0; j < n; j++) {
      r = r * 6364136223846793005ull + 1442695040888963407ull;
      ox_fstore_event_t *e = &evs[i][j];
      *e = (ox_fstore_event_t){.ev = {.ts_ms = T0 + (int64_t)((r >> 20) % (3 * DAY)),
                                      .amount = (double)((r >> 8) % 1000) / 8,
                                      .merchant = (r >> 40) % 7},
                               .num_entities = 2};
      e->entities[0] = ox_slice(ents[(r >> 13) % 3], 6);
      e->entities[1] = ox_slice(ents[3 + (r >> 17) % 2], 6);
      if ((r >> 50) % 3 == 0) { /* an id, often seen before */
        int k = snprintf(ids[i][j], sizeof ids[i][j], "id%u", (unsigned)((r >> 45) % 200));
        e->id = ox_slice(ids[i][j], (size_t)k);
      }
    }
    size_t dups = 0;
    want_rc[i] = ox_fstore_ingest(a, evs[i], n, NULL, &dups);
    CHECK(want_rc[i] == 0 || want_rc[i] == OX_EQUOTA);
    want_acc[i] = want_rc[i] ? 0 : n - dups;
    want_dup[i] = want_rc[i] ? 0 : dups;
    entries[i] = (ox_fstore_entry_t){.evs = evs[i], .n = n, .now_ms = T0};
    pos[i] = ox_slice(posv[i], (size_t)snprintf(posv[i], sizeof posv[i], "%d-0", i + 1));
  }
  static float want_f[5][40][8];
  for (int e = 0; e < 5; e++)
    for (int k = 0; k < 35; k++)
      CHECK_INT(ox_fstore_velocity(a, ox_slice(ents[e], 6), T0 - DAY + k * (DAY / 7), want_f[e][k]),
                0);
  ox_fstore_close(a);
  ox_fstore_t *b = open_capped(db, 6, 1 << 20);
  if (!b) return;
  ox_slice_t key = OX_SLICE_LIT("~meta:stream:t");
  int refused = 0, stored = 0;
  for (int i = 0; i < AP_ENTRIES;) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    int m = 1 + (int)((r >> 33) % 40);
    if (m > AP_ENTRIES - i) m = AP_ENTRIES - i;
    CHECK_INT(ox_fstore_apply(b, entries + i, (size_t)m, key, pos + i), 0);
    char v[32];
    size_t len = 0;
    CHECK_INT(ox_fstore_meta_get(b, key, v, sizeof v, &len), 0);
    CHECK(len == pos[i + m - 1].len && !memcmp(v, pos[i + m - 1].ptr, len));
    i += m;
  }
  for (int i = 0; i < AP_ENTRIES; i++) {
    CHECK_INT(entries[i].rc, want_rc[i]);
    CHECK_INT(entries[i].accepted, want_acc[i]);
    CHECK_INT(entries[i].duplicates, want_dup[i]);
    refused += entries[i].rc != 0;
    stored += entries[i].rc == 0;
  }
  CHECK(refused > 10 && stored > 10); /* both kinds happened */
  for (int e = 0; e < 5; e++)
    for (int k = 0; k < 35; k++) {
      float fb[8];
      CHECK_INT(ox_fstore_velocity(b, ox_slice(ents[e], 6), T0 - DAY + k * (DAY / 7), fb), 0);
      CHECK(!memcmp(want_f[e][k], fb, sizeof fb));
    }
  ox_fstore_close(b);
  nftw(da, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  nftw(db, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void teardown(void) {
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TEST_MAIN(T(setup), T(velocity_matches_definition_through_l1_and_l2),
          T(never_seen_entity_skips_l1_and_l2), T(event_ids_deduplicate),
          T(events_to_redis_needs_redis), T(rows_fall_through_promote_and_expire),
          T(concurrent_readers_never_leave_stale_lists),
          T(merchant_identity_is_keyed_per_store_and_stable),
          T(store_with_fnv_merchants_is_refused), T(cap_refuses_the_whole_request),
          T(velocity_reads_a_bounded_look_ahead), T(score_at_the_cap_is_bounded),
          T(apply_equals_one_request_at_a_time), T(teardown))
