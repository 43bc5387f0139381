/* fstore_test.c: the server's feature store (server/fstore.h) on a real LMDB directory, no L3.
 *
 * Velocity reads are held against features/velocity.h computed from every event of the entity
 * kept here in memory (the definition, no cache), for random streams that interleave ingests
 * with reads at the stream's time, in the past and in the future, with equal timestamps and
 * out-of-order events; across a close and reopen (the Bloom filter rebuilt from the index,
 * lists refilled from L2); which tier answered is read from the store's counters.
 */
#include "server/fstore.h"

#include <ftw.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "server/fstore_priv.h"
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

static void teardown(void) {
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TEST_MAIN(T(setup), T(velocity_matches_definition_through_l1_and_l2),
          T(never_seen_entity_skips_l1_and_l2), T(event_ids_deduplicate),
          T(events_to_redis_needs_redis), T(rows_fall_through_promote_and_expire),
          T(concurrent_readers_never_leave_stale_lists), T(teardown))
