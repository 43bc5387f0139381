/* loadgen_hist.h: a log-linear latency histogram (HdrHistogram's layout), shared by onnxd-bench
 * and onnxd-ort-limit so both report percentiles the same way.
 *
 * Values are nanoseconds. Values below 256 ns get a bucket each; above, every power-of-two range
 * [2^k, 2^(k+1)) is cut into 128 equal buckets, so a bucket is never wider than 1/128 (0.8 %) of
 * the values in it: 1 ns resolution at the bottom, ~1 % relative precision up to 60 s. Values
 * above 60 s are counted in the top bucket (the exact maximum and sum are kept separately).
 * Recording is a few instructions and never allocates; 30 KiB of counters per histogram.
 *
 * Header-only on purpose: the Makefile builds the two tools from disjoint source lists
 * (bench/loadgen*.c, bench/ort_limit*.c) and links every .c a target's dependency file names,
 * so a shared .c included by one of them would be linked twice; static functions in a header
 * are shared safely (and the recording path inlines into the hot loops).
 */
#ifndef OX_LG_HIST_H
#define OX_LG_HIST_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define OX_LG_HIST_MAX_NS 60000000000ULL /* 60 s */
#define OX_LG_HIST_SUB 128               /* buckets per power of two above 256 ns */
#define OX_LG_HIST_BUCKETS 3840          /* covers every value below 2^36 ns (68.7 s) */

typedef struct {
  uint64_t counts[OX_LG_HIST_BUCKETS];
  uint64_t total;    /* values recorded */
  uint64_t min, max; /* exact, in ns (min is UINT64_MAX while empty) */
  uint64_t sum;      /* exact, in ns (overflows only after 584 years of latency) */
} ox_lg_hist_t;

/* Bucket index of a value. Buckets 0..255 hold one value each. A value v >= 256 whose highest
 * set bit is m (m >= 8) falls in power-of-two range k = m - 8, whose 128 buckets are 2^(k+1)
 * wide: index 256 + 128k + the 7 bits after the highest. */
static inline unsigned ox_lg_hist_index(uint64_t ns) {
  if (ns > OX_LG_HIST_MAX_NS) ns = OX_LG_HIST_MAX_NS;
  if (ns < 2 * OX_LG_HIST_SUB) return (unsigned)ns;
  unsigned shift = (unsigned)(63 - __builtin_clzll(ns)) - 7; /* >= 1 */
  return 2 * OX_LG_HIST_SUB + (shift - 1) * OX_LG_HIST_SUB +
         (unsigned)((ns >> shift) - OX_LG_HIST_SUB);
}

/* The values [*lo, *hi] that bucket idx holds. */
static inline void ox_lg_hist_range(unsigned idx, uint64_t *lo, uint64_t *hi) {
  if (idx < 2 * OX_LG_HIST_SUB) {
    *lo = *hi = idx;
    return;
  }
  unsigned shift = (idx - 2 * OX_LG_HIST_SUB) / OX_LG_HIST_SUB + 1;
  uint64_t top = OX_LG_HIST_SUB + (idx - 2 * OX_LG_HIST_SUB) % OX_LG_HIST_SUB;
  *lo = top << shift;
  *hi = *lo + (1ULL << shift) - 1;
}

static inline void ox_lg_hist_init(ox_lg_hist_t *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

/* Records one value in ns. */
static inline void ox_lg_hist_record(ox_lg_hist_t *h, uint64_t ns) {
  h->counts[ox_lg_hist_index(ns)]++;
  h->total++;
  h->sum += ns;
  if (ns > h->max) h->max = ns;
  if (ns < h->min) h->min = ns;
}

/* Adds src's values into dst. */
static inline void ox_lg_hist_merge(ox_lg_hist_t *dst, const ox_lg_hist_t *src) {
  for (unsigned i = 0; i < OX_LG_HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
  dst->total += src->total;
  dst->sum += src->sum;
  if (src->max > dst->max) dst->max = src->max;
  if (src->min < dst->min) dst->min = src->min;
}

/* The value at percentile p (0..100] in ns: the highest value equivalent to the bucket holding
 * the ceil(p% * total)-th smallest value, clamped to the exact [min, max] (so p=100 gives the
 * maximum). 0 when empty. */
static inline uint64_t ox_lg_hist_percentile(const ox_lg_hist_t *h, double p) {
  if (h->total == 0) return 0;
  if (p >= 100) return h->max;
  double want_d = ceil(p / 100 * (double)h->total);
  uint64_t want = want_d < 1 ? 1 : (uint64_t)want_d, seen = 0;
  for (unsigned i = 0; i < OX_LG_HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= want) {
      uint64_t lo, hi;
      ox_lg_hist_range(i, &lo, &hi);
      if (hi > h->max) hi = h->max;
      if (hi < h->min) hi = h->min;
      return hi;
    }
  }
  return h->max;
}

/* Exact mean in ns, 0 when empty. */
static inline double ox_lg_hist_mean(const ox_lg_hist_t *h) {
  return h->total ? (double)h->sum / (double)h->total : 0;
}

#endif
