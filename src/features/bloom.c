/* bloom.c: see bloom.h. The G+1 bit arrays are one 64-byte-aligned block of atomic 64-bit
 * words; generation slot s holds the epoch stored in tag[s] (INT64_MIN: never used). Epoch e
 * lives in slot e mod (G+1). */
#include "features/bloom.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/siphash.h"

struct ox_bloom {
  int64_t window_ms, span_ms;
  unsigned gens, slots, k;
  uint64_t m, words;    /* bits and 64-bit words per generation */
  ox_siphash_key_t key; /* secret per filter */
  pthread_mutex_t rotate_lock;
  _Atomic int64_t tag[OX_BLOOM_MAX_GENERATIONS + 1];
  _Atomic uint64_t *bits; /* slots * words */
};

#define MAX_BYTES (64ULL << 30)

int ox_bloom_create(int64_t window_ms, unsigned generations, uint64_t expected_items,
                    double fp_rate, ox_bloom_t **out) {
  if (generations < 2 || generations > OX_BLOOM_MAX_GENERATIONS || expected_items == 0 ||
      !(fp_rate > 0 && fp_rate < 1) || window_ms < (int64_t)generations - 1)
    return OX_EINVALID;
  double n = (double)expected_items;
  double mbits = ceil(-n * log(fp_rate) / (M_LN2 * M_LN2));
  unsigned slots = generations + 1;
  if (!(mbits < (double)(MAX_BYTES * 8 / slots))) return OX_ETOO_LARGE;
  uint64_t words = ((uint64_t)mbits + 63) / 64;
  if (words == 0) words = 1;

  ox_bloom_t *b = calloc(1, sizeof *b);
  if (!b) return OX_ENOMEM;
  b->window_ms = window_ms;
  b->span_ms = (window_ms + (int64_t)generations - 2) / ((int64_t)generations - 1); /* ceil */
  b->gens = generations;
  b->slots = slots;
  b->words = words;
  b->m = words * 64;
  long k = lround((double)b->m / n * M_LN2);
  b->k = k < 1 ? 1 : k > OX_BLOOM_MAX_K ? OX_BLOOM_MAX_K : (unsigned)k;
  if (ox_siphash_random_key(&b->key)) b->key = *ox_siphash_process_key();
  size_t bytes = (size_t)(slots * words * 8);
  b->bits = aligned_alloc(64, (bytes + 63) & ~(size_t)63); /* C11: size a multiple of align */
  if (!b->bits) {
    free(b);
    return OX_ENOMEM;
  }
  for (uint64_t i = 0; i < slots * words; i++) atomic_init(&b->bits[i], 0);
  for (unsigned s = 0; s < slots; s++) atomic_init(&b->tag[s], INT64_MIN);
  pthread_mutex_init(&b->rotate_lock, NULL);
  *out = b;
  return 0;
}

void ox_bloom_destroy(ox_bloom_t *b) {
  if (!b) return;
  pthread_mutex_destroy(&b->rotate_lock);
  free(b->bits);
  free(b);
}

void ox_bloom_info(const ox_bloom_t *b, ox_bloom_info_t *out) {
  *out = (ox_bloom_info_t){.window_ms = b->window_ms,
                           .span_ms = b->span_ms,
                           .generations = b->gens,
                           .k = b->k,
                           .bits = b->m,
                           .bytes = (size_t)(b->slots * b->words * 8)};
}

/* floor(now / S), correct for negative times too. */
static inline int64_t epoch_of(const ox_bloom_t *b, int64_t now_ms) {
  int64_t q = now_ms / b->span_ms;
  return (now_ms % b->span_ms < 0) ? q - 1 : q;
}

static inline unsigned slot_of(const ox_bloom_t *b, int64_t epoch) {
  int64_t r = epoch % (int64_t)b->slots;
  return (unsigned)(r < 0 ? r + b->slots : r);
}

/* The k bit positions of key: double hashing, each reduced to [0, m) by multiply-shift. */
static inline void positions(const ox_bloom_t *b, ox_slice_t key, uint64_t *pos) {
  uint64_t h1 = ox_siphash(key.ptr, key.len, &b->key);
  /* h1 is already unpredictable without the key: a fixed odd-multiplier mix of its rotation
   * is enough for the second hash */
  uint64_t h2 = (((h1 << 32) | (h1 >> 32)) * 0x9e3779b97f4a7c15ULL) | 1;
  for (unsigned i = 0; i < b->k; i++, h1 += h2) pos[i] = (uint64_t)(((__uint128_t)h1 * b->m) >> 64);
}

static int check_pos(const ox_bloom_t *b, const uint64_t *pos, int64_t now_ms) {
  int64_t oldest = epoch_of(b, now_ms) - (int64_t)b->gens + 1;
  for (unsigned s = 0; s < b->slots; s++) {
    /* acquire pairs with the release in rotate(): a tag in the window means its clear is done */
    if (atomic_load_explicit(&b->tag[s], memory_order_acquire) < oldest) continue;
    const _Atomic uint64_t *w = b->bits + s * b->words;
    unsigned i = 0;
    while (i < b->k &&
           (atomic_load_explicit(&w[pos[i] >> 6], memory_order_relaxed) >> (pos[i] & 63)) & 1)
      i++;
    if (i == b->k) return 1;
  }
  return 0;
}

/* Makes slot hold epoch e, clearing it if it held an older one. Returns 0 if the slot already
 * holds a newer epoch (the add is too old to matter). */
static int rotate(ox_bloom_t *b, unsigned slot, int64_t e) {
  int ok = 1;
  pthread_mutex_lock(&b->rotate_lock);
  int64_t cur = atomic_load_explicit(&b->tag[slot], memory_order_relaxed);
  if (cur < e) {
    _Atomic uint64_t *w = b->bits + slot * b->words;
    for (uint64_t i = 0; i < b->words; i++) atomic_store_explicit(&w[i], 0, memory_order_relaxed);
    atomic_store_explicit(&b->tag[slot], e, memory_order_release);
  } else if (cur > e) {
    ok = 0;
  }
  pthread_mutex_unlock(&b->rotate_lock);
  return ok;
}

static void add_pos(ox_bloom_t *b, const uint64_t *pos, int64_t now_ms) {
  int64_t e = epoch_of(b, now_ms);
  unsigned slot = slot_of(b, e);
  if (atomic_load_explicit(&b->tag[slot], memory_order_acquire) != e && !rotate(b, slot, e)) return;
  _Atomic uint64_t *w = b->bits + slot * b->words;
  for (unsigned i = 0; i < b->k; i++)
    atomic_fetch_or_explicit(&w[pos[i] >> 6], 1ULL << (pos[i] & 63), memory_order_relaxed);
}

void ox_bloom_add(ox_bloom_t *b, ox_slice_t key, int64_t now_ms) {
  uint64_t pos[OX_BLOOM_MAX_K];
  positions(b, key, pos);
  add_pos(b, pos, now_ms);
}

int ox_bloom_check(const ox_bloom_t *b, ox_slice_t key, int64_t now_ms) {
  uint64_t pos[OX_BLOOM_MAX_K];
  positions(b, key, pos);
  return check_pos(b, pos, now_ms);
}

int ox_bloom_check_add(ox_bloom_t *b, ox_slice_t key, int64_t now_ms) {
  uint64_t pos[OX_BLOOM_MAX_K];
  positions(b, key, pos);
  int seen = check_pos(b, pos, now_ms);
  add_pos(b, pos, now_ms);
  return seen;
}
