/* l1_test.c: unit tests for the L1 feature map (src/features/l1.c): get/put/del/view, value
 * too big for the caller's buffer, TTL expiry and its reclamation (get, put, sweep), the memory
 * bound under eviction, CLOCK keeping a hot key, entries too big for a shard, bad arguments, and
 * threads hammering get/put/del on shared keys (values are self-checking, so a torn read shows;
 * run under -fsanitize=thread too). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "features/l1.h"
#include "test.h"

static ox_slice_t S(const char *s) {
  return ox_slice(s, strlen(s));
}

static void viewer(void *arg, const void *val, size_t len) {
  char *dst = arg;
  memcpy(dst, val, len);
  dst[len] = 0;
}

TEST(test_basic) {
  ox_l1_t *c = NULL;
  CHECK_INT(ox_l1_create(1 << 20, 0, &c), 0);
  char out[64];
  size_t len = 0;
  CHECK_INT(ox_l1_get(c, S("user:u1"), 0, out, sizeof out, &len), OX_ENOT_FOUND);
  CHECK_INT(ox_l1_put(c, S("user:u1"), "alpha", 5, OX_L1_NO_TTL, 0), 0);
  CHECK_INT(ox_l1_get(c, S("user:u1"), 0, out, sizeof out, &len), 0);
  CHECK_INT(len, 5);
  CHECK_MEM(out, "alpha", 5);
  /* overwrite with a longer value; prefixes and other types are different keys */
  CHECK_INT(ox_l1_put(c, S("user:u1"), "alphabet", 8, OX_L1_NO_TTL, 0), 0);
  CHECK_INT(ox_l1_put(c, S("card:u1"), "visa", 4, OX_L1_NO_TTL, 0), 0);
  CHECK_INT(ox_l1_get(c, S("user:u1"), 0, out, sizeof out, &len), 0);
  CHECK_INT(len, 8);
  CHECK_MEM(out, "alphabet", 8);
  CHECK_INT(ox_l1_get(c, S("user:u"), 0, out, sizeof out, &len), OX_ENOT_FOUND);
  /* buffer too small: the length is reported, the buffer untouched */
  memset(out, 'x', sizeof out);
  len = 0;
  CHECK_INT(ox_l1_get(c, S("user:u1"), 0, out, 4, &len), OX_ETOO_LARGE);
  CHECK_INT(len, 8);
  CHECK_INT(out[0], 'x');
  /* zero-copy view */
  char viewed[16] = {0};
  CHECK_INT(ox_l1_view(c, S("card:u1"), 0, viewer, viewed), 0);
  CHECK_STR(viewed, "visa");
  CHECK_INT(ox_l1_view(c, S("card:u2"), 0, viewer, viewed), OX_ENOT_FOUND);
  /* empty value */
  CHECK_INT(ox_l1_put(c, S("dev:d1"), NULL, 0, OX_L1_NO_TTL, 0), 0);
  CHECK_INT(ox_l1_get(c, S("dev:d1"), 0, NULL, 0, &len), 0);
  CHECK_INT(len, 0);
  /* a NULL buffer of capacity 0 asks for the length */
  CHECK_INT(ox_l1_get(c, S("card:u1"), 0, NULL, 0, &len), OX_ETOO_LARGE);
  CHECK_INT(len, 4);
  /* del */
  CHECK_INT(ox_l1_del(c, S("user:u1")), 0);
  CHECK_INT(ox_l1_del(c, S("user:u1")), OX_ENOT_FOUND);
  CHECK_INT(ox_l1_get(c, S("user:u1"), 0, out, sizeof out, &len), OX_ENOT_FOUND);

  ox_l1_stats_t st;
  ox_l1_stats(c, &st);
  CHECK_INT(st.hits, 6);
  CHECK_INT(st.misses, 4);
  CHECK_INT(st.entries, 2);
  CHECK_INT(st.evictions, 0);
  CHECK_INT(st.budget, 1 << 20);
  CHECK(st.bytes >= 2 * OX_L1_ENTRY_COST(7, 4) && st.bytes <= st.budget);
  ox_l1_destroy(c);
}

TEST(test_bad_arguments) {
  ox_l1_t *c = NULL;
  CHECK_INT(ox_l1_create(64 * 4095, 64, &c), OX_EINVALID); /* under 4 KiB per shard */
  CHECK_INT(ox_l1_create(33 * 4096, 33, &c), OX_EINVALID); /* 33 rounds up to 64 shards */
  CHECK_INT(ox_l1_create(64 * 4096, 33, &c), 0);
  ox_l1_stats_t st;
  ox_l1_stats(c, &st);
  CHECK_INT(st.budget, 64 * 4096);
  ox_l1_destroy(c);
  CHECK_INT(ox_l1_create(1 << 20, 3, &c), 0);
  CHECK_INT(ox_l1_put(c, S(""), "v", 1, 0, 0), OX_EINVALID);
  CHECK_INT(ox_l1_put(c, S("k"), "v", 1, -1, 0), OX_EINVALID);
  CHECK_INT(ox_l1_put(c, S("k"), "v", 1, 10, INT64_MAX), OX_EINVALID); /* expiry overflows */
  CHECK_INT(ox_l1_put(c, S("k"), "v", 1, OX_L1_NO_TTL, INT64_MAX), 0);
  ox_l1_stats(c, &st);
  CHECK_INT(st.budget, 1 << 20); /* 4 shards */
  CHECK_INT(st.entries, 1);
  ox_l1_destroy(c);
  ox_l1_destroy(NULL);
}

TEST(test_ttl) {
  ox_l1_t *c = NULL;
  CHECK_INT(ox_l1_create(1 << 20, 4, &c), 0);
  char out[16];
  size_t len;
  CHECK_INT(ox_l1_put(c, S("a"), "1", 1, 100, 1000), 0); /* live while now < 1100 */
  CHECK_INT(ox_l1_put(c, S("b"), "2", 1, OX_L1_NO_TTL, 1000), 0);
  CHECK_INT(ox_l1_get(c, S("a"), 1099, out, sizeof out, &len), 0);
  CHECK_INT(ox_l1_get(c, S("a"), 1100, out, sizeof out, &len), OX_ENOT_FOUND);
  CHECK_INT(ox_l1_get(c, S("b"), INT64_MAX - 1, out, sizeof out, &len), 0);
  char viewed[4];
  CHECK_INT(ox_l1_view(c, S("a"), 1100, viewer, viewed), OX_ENOT_FOUND);
  ox_l1_stats_t st;
  ox_l1_stats(c, &st);
  CHECK_INT(st.expirations, 1); /* the get that saw it expired reclaimed it */
  CHECK_INT(st.entries, 1);
  /* a put over an expired entry replaces it and counts the expiration */
  CHECK_INT(ox_l1_put(c, S("c"), "3", 1, 10, 0), 0);
  CHECK_INT(ox_l1_put(c, S("c"), "4", 1, 10, 50), 0);
  CHECK_INT(ox_l1_get(c, S("c"), 55, out, sizeof out, &len), 0);
  CHECK_INT(out[0], '4');
  ox_l1_stats(c, &st);
  CHECK_INT(st.expirations, 2);
  /* sweep reclaims expired entries nobody reads */
  for (int i = 0; i < 100; i++) {
    char k[16];
    snprintf(k, sizeof k, "s%d", i);
    CHECK_INT(ox_l1_put(c, S(k), "x", 1, i < 60 ? 10 : 1000, 0), 0);
  }
  CHECK_INT(ox_l1_sweep(c, 500, 1000), 61); /* the 60 plus "c" */
  ox_l1_stats(c, &st);
  CHECK_INT(st.entries, 41);
  CHECK_INT(st.expirations, 63);
  CHECK_INT(ox_l1_sweep(c, 500, 1000), 0);
  ox_l1_destroy(c);
}

TEST(test_eviction_bound) {
  ox_l1_t *c = NULL;
  const size_t mem = 64 * 1024;
  CHECK_INT(ox_l1_create(mem, 4, &c), 0);
  char val[100], out[100];
  memset(val, 'v', sizeof val);
  ox_l1_stats_t st;
  int over = 0;
  for (int i = 0; i < 10000; i++) {
    char k[32];
    snprintf(k, sizeof k, "user:%08d", i);
    CHECK_INT(ox_l1_put(c, S(k), val, sizeof val, OX_L1_NO_TTL, 0), 0);
    ox_l1_stats(c, &st);
    if (st.bytes > mem) over++;
  }
  CHECK_INT(over, 0);
  ox_l1_stats(c, &st);
  size_t cost = OX_L1_ENTRY_COST(13, 100);
  CHECK(st.entries * cost < mem && st.entries * cost > mem / 2); /* tables take the rest */
  CHECK_INT(st.evictions, 10000 - st.entries);
  /* the newest key is still there; a key from the start is gone */
  size_t len;
  CHECK_INT(ox_l1_get(c, S("user:00009999"), 0, out, sizeof out, &len), 0);
  CHECK_INT(ox_l1_get(c, S("user:00000000"), 0, out, sizeof out, &len), OX_ENOT_FOUND);
  ox_l1_destroy(c);
}

TEST(test_clock_keeps_hot_key) {
  ox_l1_t *c = NULL;
  CHECK_INT(ox_l1_create(16 * 1024, 1, &c), 0); /* one shard: every key competes */
  char val[200], out[200];
  memset(val, 'h', sizeof val);
  size_t len;
  CHECK_INT(ox_l1_put(c, S("hot"), val, sizeof val, OX_L1_NO_TTL, 0), 0);
  int lost = 0;
  for (int i = 0; i < 2000; i++) {
    char k[32];
    snprintf(k, sizeof k, "cold:%d", i);
    CHECK_INT(ox_l1_put(c, S(k), val, sizeof val, OX_L1_NO_TTL, 0), 0);
    if (ox_l1_get(c, S("hot"), 0, out, sizeof out, &len) != 0) lost++;
  }
  CHECK_INT(lost, 0);
  ox_l1_stats_t st;
  ox_l1_stats(c, &st);
  CHECK(st.evictions > 1500);
  /* expired entries go before live unreferenced ones */
  CHECK_INT(ox_l1_put(c, S("short"), val, sizeof val, 5, 0), 0);
  for (int i = 0; i < 200; i++) {
    char k[32];
    snprintf(k, sizeof k, "more:%d", i);
    CHECK_INT(ox_l1_put(c, S(k), val, sizeof val, OX_L1_NO_TTL, 10), 0);
  }
  ox_l1_stats(c, &st);
  CHECK_INT(st.expirations, 1);
  ox_l1_destroy(c);
}

TEST(test_too_large) {
  ox_l1_t *c = NULL;
  CHECK_INT(ox_l1_create(64 * 1024, 4, &c), 0); /* 16 KiB per shard */
  static char big[20000];
  CHECK_INT(ox_l1_put(c, S("k"), "small", 5, OX_L1_NO_TTL, 0), 0);
  CHECK_INT(ox_l1_put(c, S("k"), big, sizeof big, OX_L1_NO_TTL, 0), OX_ETOO_LARGE);
  char out[8];
  size_t len;
  CHECK_INT(ox_l1_get(c, S("k"), 0, out, sizeof out, &len), 0); /* the old value survived */
  CHECK_INT(len, 5);
  CHECK_INT(ox_l1_put(c, S("k"), big, 16000, OX_L1_NO_TTL, 0), 0); /* fits: the shard empties */
  ox_l1_stats_t st;
  ox_l1_stats(c, &st);
  CHECK(st.bytes <= st.budget);
  ox_l1_destroy(c);
}

/* ---- threads ------------------------------------------------------------------------------ */

#define NKEYS 512
#define VLEN 96

typedef struct {
  ox_l1_t *c;
  int id, writer;
  atomic_int *stop;
  uint64_t reads, hits, torn;
} worker_t;

/* value of key i, version v: every byte (i + v) & 0xff, so a mix of two writes shows */
static void *worker_main(void *arg) {
  worker_t *w = arg;
  uint64_t x = 0x9E3779B97F4A7C15ULL * (uint64_t)(w->id + 1);
  char k[32], val[VLEN], out[VLEN];
  for (int n = 0; n < 200000 && !atomic_load_explicit(w->stop, memory_order_relaxed); n++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int i = (int)(x % NKEYS);
    snprintf(k, sizeof k, "user:%d", i);
    if (w->writer && x % 7 == 0) {
      ox_l1_del(w->c, S(k));
    } else if (w->writer) {
      memset(val, (int)((i + (int)(x >> 40)) & 0xff), sizeof val);
      ox_l1_put(w->c, S(k), val, sizeof val, 50, n / 100); /* TTLs expire as "time" goes on */
    } else {
      size_t len = 0;
      w->reads++;
      if (ox_l1_get(w->c, S(k), n / 100, out, sizeof out, &len) == 0) {
        w->hits++;
        int bad = len != VLEN;
        for (size_t j = 1; !bad && j < len; j++) bad = out[j] != out[0];
        w->torn += bad;
      }
    }
  }
  return NULL;
}

TEST(test_threads) {
  ox_l1_t *c = NULL;
  /* small enough that eviction runs all the time: 512 keys x 176 B > 64 KiB */
  CHECK_INT(ox_l1_create(64 * 1024, 8, &c), 0);
  enum { NT = 6 };
  worker_t w[NT];
  pthread_t t[NT];
  atomic_int stop = 0;
  for (int i = 0; i < NT; i++) {
    w[i] = (worker_t){.c = c, .id = i, .writer = i < 2, .stop = &stop};
    CHECK_INT(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
  }
  uint64_t reads = 0, hits = 0, torn = 0;
  for (int i = 0; i < NT; i++) {
    pthread_join(t[i], NULL);
    reads += w[i].reads;
    hits += w[i].hits;
    torn += w[i].torn;
  }
  CHECK_INT(torn, 0);
  CHECK(hits > 0);
  ox_l1_stats_t st;
  ox_l1_stats(c, &st);
  CHECK_INT(st.hits, hits);
  CHECK_INT(st.hits + st.misses, reads);
  CHECK(st.bytes <= st.budget);
  CHECK(st.evictions > 0);
  ox_l1_destroy(c);
}

/* Keys built to collide under the old unkeyed-in-effect hash (a wyhash-style mix whose first
 * 16-byte round multiplies by (first 8 bytes ^ 0xe7037ed1a0b428db): zero for such keys, which
 * erased the seed and left bytes 8..15 unread): with SipHash under a secret they spread over
 * the shards like any keys. The old hash put all 20,000 in one shard (1/64 of the budget), so
 * most were evicted at once. */
TEST(test_crafted_keys_spread_over_shards) {
  ox_l1_t *c = NULL;
  CHECK_INT(ox_l1_create(64 << 20, 64, &c), 0);
  if (!c) return;
  enum { N = 20000 };
  for (uint64_t i = 0; i < N; i++) {
    unsigned char k[32];
    uint64_t p1 = 0xe7037ed1a0b428dbULL;
    for (int b = 0; b < 8; b++) {
      k[b] = (unsigned char)(p1 >> (8 * b));
      k[8 + b] = (unsigned char)(i >> (8 * b));
    }
    memset(k + 16, 'x', 16);
    CHECK_INT(ox_l1_put(c, ox_slice((const char *)k, sizeof k), "v", 1, 0, 0), 0);
  }
  ox_l1_stats_t st;
  ox_l1_stats(c, &st);
  CHECK_INT(st.evictions, 0);
  CHECK_INT(st.entries, N);
  ox_l1_destroy(c);
}

TEST_MAIN(T(test_crafted_keys_spread_over_shards), T(test_basic), T(test_bad_arguments),
          T(test_ttl), T(test_eviction_bound), T(test_clock_keeps_hot_key), T(test_too_large),
          T(test_threads))
