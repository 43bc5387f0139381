/* hash.h: the 64-bit keyed hash shared by the in-process feature tiers (L1 map, Bloom filters).
 *
 * A wyhash-style construction written for onnxd: 64x64->128-bit multiplies folded by XOR
 * ("mum"), 16 bytes per round, the tail read with overlapping loads so no byte loop runs for any
 * length. About 2-4 ns for a 16-byte entity key, against 15-25 ns for SipHash-1-3.
 *
 * Why not SipHash: keys here are entity ids (user, card, device, merchant), some of which a
 * client can choose. What an attacker gains from collisions is longer chains in one L1 shard
 * (bounded by the shard's memory budget, and only that shard slows down) or Bloom false
 * positives for crafted ids. Both tiers draw a random seed per instance from getrandom(), so
 * colliding keys cannot be computed offline; recovering the seed would take observing hash
 * outputs, which nothing exposes. That is the same trade redis makes for its dict hash before
 * it moved to SipHash; should a tier ever hash keys whose outputs leak (e.g. a persistent
 * filter), switch that tier to SipHash-1-3, the call sites take a seed already.
 *
 * Header-only so the hot paths inline it. Not a stable on-disk format: never persist its values.
 */
#ifndef OX_FEATURES_HASH_H
#define OX_FEATURES_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

#define OX_FEAT_HASH_P0 0xa0761d6478bd642fULL
#define OX_FEAT_HASH_P1 0xe7037ed1a0b428dbULL
#define OX_FEAT_HASH_P2 0x8ebc6af09c88c6e3ULL

/* Full 128-bit product of a and b, folded to 64 bits by XOR of its halves. */
static inline uint64_t ox_feat_mix(uint64_t a, uint64_t b) {
  __uint128_t r = (__uint128_t)a * b;
  return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t ox_feat_r8(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
static inline uint64_t ox_feat_r4(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* Hash of n bytes at p under seed. Any n (p may be NULL when n is 0); never reads outside
 * [p, p+n). Equal inputs and seeds give equal outputs within one build. */
static inline uint64_t ox_feat_hash64(const void *p, size_t n, uint64_t seed) {
  const uint8_t *s = p;
  uint64_t a, b;
  seed ^= ox_feat_mix(seed ^ OX_FEAT_HASH_P0, OX_FEAT_HASH_P1);
  if (n <= 16) {
    if (n >= 4) { /* two overlapping 4-byte loads from each end cover 4..16 bytes */
      size_t q = (n >> 3) << 2;
      a = (ox_feat_r4(s) << 32) | ox_feat_r4(s + q);
      b = (ox_feat_r4(s + n - 4) << 32) | ox_feat_r4(s + n - 4 - q);
    } else if (n > 0) {
      a = ((uint64_t)s[0] << 16) | ((uint64_t)s[n >> 1] << 8) | s[n - 1];
      b = 0;
    } else {
      a = b = 0;
    }
  } else {
    size_t i = n;
    for (; i > 16; i -= 16, s += 16)
      seed = ox_feat_mix(ox_feat_r8(s) ^ OX_FEAT_HASH_P1, ox_feat_r8(s + 8) ^ seed);
    a = ox_feat_r8(s + i - 16); /* the last 16 bytes, overlapping the final round */
    b = ox_feat_r8(s + i - 8);
  }
  a ^= OX_FEAT_HASH_P1;
  b ^= seed;
  __uint128_t r = (__uint128_t)a * b;
  a = (uint64_t)r;
  b = (uint64_t)(r >> 64);
  return ox_feat_mix(a ^ OX_FEAT_HASH_P0 ^ (uint64_t)n, b ^ OX_FEAT_HASH_P1);
}

/* A second, independent-looking 64-bit value derived from a hash (for double hashing). */
static inline uint64_t ox_feat_rehash(uint64_t h) {
  return ox_feat_mix(h ^ OX_FEAT_HASH_P2, OX_FEAT_HASH_P0);
}

/* A seed from getrandom(2), falling back to a clock/address mix if the call fails. */
static inline uint64_t ox_feat_random_seed(void) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v) return v;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ox_feat_mix((uint64_t)ts.tv_nsec ^ OX_FEAT_HASH_P2,
                     (uint64_t)(uintptr_t)&v ^ OX_FEAT_HASH_P1);
}

#endif
