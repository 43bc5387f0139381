/* bloom_test.c: unit tests for the time-windowed Bloom filters (src/features/bloom.c): sizing,
 * no false negatives, the empirical false-positive rate against the configured one (100k items,
 * 1M absent keys, within 1.5x), the window edges with lazy rotation and with rotation by adds,
 * check_add, bad parameters, and adders racing checkers across rotations (no false negatives for
 * a key published after its add; run under -fsanitize=thread too). Also the hash itself:
 * every length 0..64 reads only its bytes (ASan) and single-bit changes spread. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "features/bloom.h"
#include "core/siphash.h"
#include "test.h"

static ox_slice_t key_of(char *buf, size_t cap, const char *prefix, uint64_t i) {
  int n = snprintf(buf, cap, "%s%llu", prefix, (unsigned long long)i);
  return ox_slice(buf, (size_t)n);
}

TEST(test_sizing) {
  ox_bloom_t *b = NULL;
  CHECK_INT(ox_bloom_create(60000, 4, 100000, 0.01, &b), 0);
  ox_bloom_info_t in;
  ox_bloom_info(b, &in);
  CHECK_INT(in.span_ms, 20000);
  CHECK_INT(in.generations, 4);
  CHECK_INT(in.k, 7);
  CHECK(in.bits >= 958506 && in.bits < 958506 + 64); /* ceil(-n ln p / ln2^2) */
  CHECK_INT(in.bits % 64, 0);
  CHECK_INT(in.bytes, 5 * in.bits / 8); /* G + 1 arrays */
  ox_bloom_destroy(b);
  /* W not divisible by G-1: the span rounds up */
  CHECK_INT(ox_bloom_create(1000, 4, 10, 0.001, &b), 0);
  ox_bloom_info(b, &in);
  CHECK_INT(in.span_ms, 334);
  CHECK_INT(in.bits, 192); /* 144 rounded up to whole words, */
  CHECK_INT(in.k, 13);     /* and k follows the real m/n */
  ox_bloom_destroy(b);
}

TEST(test_bad_parameters) {
  ox_bloom_t *b = NULL;
  CHECK_INT(ox_bloom_create(60000, 1, 100, 0.01, &b), OX_EINVALID);
  CHECK_INT(ox_bloom_create(60000, 65, 100, 0.01, &b), OX_EINVALID);
  CHECK_INT(ox_bloom_create(60000, 4, 0, 0.01, &b), OX_EINVALID);
  CHECK_INT(ox_bloom_create(60000, 4, 100, 0, &b), OX_EINVALID);
  CHECK_INT(ox_bloom_create(60000, 4, 100, 1, &b), OX_EINVALID);
  CHECK_INT(ox_bloom_create(2, 4, 100, 0.01, &b), OX_EINVALID);
  CHECK_INT(ox_bloom_create(60000, 4, 1ULL << 40, 1e-9, &b), OX_ETOO_LARGE);
  ox_bloom_destroy(NULL);
}

TEST(test_fp_rate) {
  const double rates[] = {0.01, 0.001};
  for (int r = 0; r < 2; r++) {
    double p = rates[r];
    ox_bloom_t *b = NULL;
    CHECK_INT(ox_bloom_create(60000, 4, 100000, p, &b), 0);
    char k[32];
    for (uint64_t i = 0; i < 100000; i++) ox_bloom_add(b, key_of(k, sizeof k, "user:", i), 1000);
    int missing = 0;
    for (uint64_t i = 0; i < 100000; i++)
      missing += !ox_bloom_check(b, key_of(k, sizeof k, "user:", i), 1000);
    CHECK_INT(missing, 0);
    uint64_t fp = 0, trials = 1000000;
    for (uint64_t i = 0; i < trials; i++)
      fp += (uint64_t)ox_bloom_check(b, key_of(k, sizeof k, "absent:", i), 1000);
    double rate = (double)fp / (double)trials;
    fprintf(stderr, "  configured fp %.4f, measured %.5f (%llu / %llu)\n", p, rate,
            (unsigned long long)fp, (unsigned long long)trials);
    CHECK(rate <= 1.5 * p && rate >= p / 1.5);
    ox_bloom_destroy(b);
  }
}

/* An item added at t is present at t + W and absent at t + W + S (W = 60 s, G = 4, S = 20 s),
 * both when nothing else is added (lazy: stale generations are ignored) and when other adds
 * rotate the generations every 100 ms of filter time. */
TEST(test_window) {
  for (int busy = 0; busy < 2; busy++) {
    ox_bloom_t *b = NULL;
    /* sized so that the noise adds cannot produce a false positive in the whole test */
    CHECK_INT(ox_bloom_create(60000, 4, 100000, 0.0001, &b), 0);
    const int64_t W = 60000, S = 20000;
    const int64_t starts[] = {1000000, 1000001, 1019999, 1020000, 1039123};
    char k[32];
    for (int s = 0; s < 5; s++) {
      int64_t t = starts[s];
      ox_slice_t key = key_of(k, sizeof k, "seen:", (uint64_t)t);
      CHECK_INT(ox_bloom_check(b, key, t), 0);
      ox_bloom_add(b, key, t);
      int64_t gone = (t / S + 4) * S; /* start of the span G spans after t's */
      for (int64_t now = t; now <= t + W + S; now += busy ? 100 : 997) {
        if (busy) ox_bloom_add(b, key_of(k, sizeof k, "noise:", (uint64_t)now), now);
        key = key_of(k, sizeof k, "seen:", (uint64_t)t);
        int want = now < gone;
        if (ox_bloom_check(b, key, now) != want) {
          fprintf(stderr, "  busy=%d t=%lld now=%lld: want %d\n", busy, (long long)t,
                  (long long)now, want);
          CHECK(0);
          break;
        }
      }
      key = key_of(k, sizeof k, "seen:", (uint64_t)t);
      CHECK_INT(ox_bloom_check(b, key, t + W), 1);     /* the promise: at least until t + W */
      CHECK_INT(ox_bloom_check(b, key, gone - 1), 1);  /* exact last ms */
      CHECK_INT(ox_bloom_check(b, key, gone), 0);      /* exact first ms absent */
      CHECK_INT(ox_bloom_check(b, key, t + W + S), 0); /* the promise: gone by t + W + S */
      CHECK(gone > t + W && gone <= t + W + S);
    }
    ox_bloom_destroy(b);
  }
}

TEST(test_old_add_and_negative_time) {
  ox_bloom_t *b = NULL;
  CHECK_INT(ox_bloom_create(3000, 4, 100, 0.01, &b), 0); /* S = 1000 */
  ox_slice_t x = OX_SLICE_LIT("x"), y = OX_SLICE_LIT("y");
  ox_bloom_add(b, x, 100000);
  ox_bloom_add(b, y, 100000 - 5000); /* its slot now holds a newer span: dropped */
  CHECK_INT(ox_bloom_check(b, y, 100000 - 5000), 0);
  CHECK_INT(ox_bloom_check(b, x, 100000), 1);
  ox_bloom_destroy(b);
  CHECK_INT(ox_bloom_create(3000, 4, 100, 0.01, &b), 0);
  ox_bloom_add(b, y, -1500); /* negative times floor correctly: span -2 */
  CHECK_INT(ox_bloom_check(b, y, -1500), 1);
  CHECK_INT(ox_bloom_check(b, y, 999), 1);  /* span 0: -2 is within the last 4 */
  CHECK_INT(ox_bloom_check(b, y, 1000), 1); /* span 1 */
  CHECK_INT(ox_bloom_check(b, y, 2000), 0); /* span 2: window is spans -1..2 */
  ox_bloom_destroy(b);
}

TEST(test_check_add) {
  ox_bloom_t *b = NULL;
  CHECK_INT(ox_bloom_create(60000, 4, 1000, 0.001, &b), 0);
  ox_slice_t k = OX_SLICE_LIT("card:4111");
  CHECK_INT(ox_bloom_check_add(b, k, 5), 0);
  CHECK_INT(ox_bloom_check_add(b, k, 6), 1);
  CHECK_INT(ox_bloom_check(b, k, 7), 1);
  ox_bloom_destroy(b);
}

TEST(test_hash) {
  ox_siphash_key_t k42 = {42, 0}, k7 = {7, 0}, k8 = {8, 0};
  /* every length reads exactly its bytes: place the input flush against the end of a heap
   * block (ASan reports any overread) */
  uint64_t seen[65];
  for (size_t n = 0; n <= 64; n++) {
    unsigned char *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 1);
    seen[n] = ox_siphash(p, n, &k42);
    free(p);
  }
  int dup = 0;
  for (int i = 0; i <= 64; i++)
    for (int j = 0; j < i; j++) dup += seen[i] == seen[j];
  CHECK_INT(dup, 0);
  /* flipping any one input bit changes about half the output bits */
  unsigned char buf[24] = "user:u1234567890abcdef";
  uint64_t h0 = ox_siphash(buf, sizeof buf, &k7), flips = 0;
  for (size_t bit = 0; bit < sizeof buf * 8; bit++) {
    buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    flips += (uint64_t)__builtin_popcountll(h0 ^ ox_siphash(buf, sizeof buf, &k7));
    buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
  }
  double avg = (double)flips / (sizeof buf * 8);
  CHECK(avg > 28 && avg < 36);
  CHECK(ox_siphash(buf, sizeof buf, &k7) != ox_siphash(buf, sizeof buf, &k8));
}

/* ---- threads: adds publish an index; checkers verify every published key is present ------- */

typedef struct {
  ox_bloom_t *b;
  atomic_uint_fast64_t *published;
  int id;
  uint64_t missing;
} worker_t;

#define NADD 40000
#define T0 1000000 /* filter time of add i: T0 + i (ms), so rotations happen during the run */

static void *adder(void *arg) {
  worker_t *w = arg;
  char k[32];
  for (uint64_t i = 0; i < NADD; i++) {
    ox_bloom_add(w->b, key_of(k, sizeof k, "k", i), T0 + (int64_t)i);
    atomic_store_explicit(w->published, i + 1, memory_order_release);
  }
  return NULL;
}

static void *checker(void *arg) {
  worker_t *w = arg;
  char k[32];
  uint64_t x = (uint64_t)w->id * 0x9E3779B97F4A7C15ULL + 1;
  while (!atomic_load_explicit(w->published, memory_order_acquire)) sched_yield();
  for (int n = 0; n < 100000; n++) {
    uint64_t pub = atomic_load_explicit(w->published, memory_order_acquire);
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    uint64_t i = x % pub; /* added at T0 + i <= T0 + pub - 1: inside a 60 s window */
    w->missing += !ox_bloom_check(w->b, key_of(k, sizeof k, "k", i), T0 + (int64_t)pub - 1);
  }
  return NULL;
}

TEST(test_threads) {
  ox_bloom_t *b = NULL;
  CHECK_INT(ox_bloom_create(60000, 4, NADD, 0.01, &b), 0); /* spans of 20 s: 2 rotations */
  atomic_uint_fast64_t published = 0;
  worker_t w[3];
  pthread_t t[3];
  for (int i = 0; i < 3; i++) {
    w[i] = (worker_t){.b = b, .published = &published, .id = i};
    CHECK_INT(pthread_create(&t[i], NULL, i == 0 ? adder : checker, &w[i]), 0);
  }
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  CHECK_INT(w[1].missing + w[2].missing, 0);
  ox_bloom_destroy(b);
}

TEST_MAIN(T(test_sizing), T(test_bad_parameters), T(test_fp_rate), T(test_window),
          T(test_old_add_and_negative_time), T(test_check_add), T(test_hash), T(test_threads))
