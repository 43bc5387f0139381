/* loadgen_hist.c: the log-linear histogram declared in loadgen_hist.h. */
#include "loadgen_hist.h"

#include <math.h>
#include <string.h>

/* Buckets 0..255 hold one value each. A value v >= 256 with highest set bit m (m >= 8) falls in
 * power-of-two range k = m - 8, whose 128 buckets are 2^(k+1) wide: index 256 + 128k + the 7 bits
 * after the highest. */
unsigned ox_lg_hist_index(uint64_t ns) {
  if (ns > OX_LG_HIST_MAX_NS) ns = OX_LG_HIST_MAX_NS;
  if (ns < 2 * OX_LG_HIST_SUB) return (unsigned)ns;
  unsigned shift = (unsigned)(63 - __builtin_clzll(ns)) - 7; /* >= 1 */
  return 2 * OX_LG_HIST_SUB + (shift - 1) * OX_LG_HIST_SUB +
         (unsigned)((ns >> shift) - OX_LG_HIST_SUB);
}

void ox_lg_hist_range(unsigned idx, uint64_t *lo, uint64_t *hi) {
  if (idx < 2 * OX_LG_HIST_SUB) {
    *lo = *hi = idx;
    return;
  }
  unsigned shift = (idx - 2 * OX_LG_HIST_SUB) / OX_LG_HIST_SUB + 1;
  uint64_t top = OX_LG_HIST_SUB + (idx - 2 * OX_LG_HIST_SUB) % OX_LG_HIST_SUB;
  *lo = top << shift;
  *hi = *lo + (1ULL << shift) - 1;
}

void ox_lg_hist_init(ox_lg_hist_t *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

void ox_lg_hist_record(ox_lg_hist_t *h, uint64_t ns) {
  h->counts[ox_lg_hist_index(ns)]++;
  h->total++;
  h->sum += ns;
  if (ns > h->max) h->max = ns;
  if (ns < h->min) h->min = ns;
}

void ox_lg_hist_merge(ox_lg_hist_t *dst, const ox_lg_hist_t *src) {
  for (unsigned i = 0; i < OX_LG_HIST_BUCKETS; i++) dst->counts[i] += src->counts[i];
  dst->total += src->total;
  dst->sum += src->sum;
  if (src->max > dst->max) dst->max = src->max;
  if (src->min < dst->min) dst->min = src->min;
}

uint64_t ox_lg_hist_percentile(const ox_lg_hist_t *h, double p) {
  if (h->total == 0) return 0;
  if (p >= 100) return h->max;
  double want_d = ceil(p / 100 * (double)h->total);
  uint64_t want = want_d < 1 ? 1 : (uint64_t)want_d;
  uint64_t seen = 0;
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

double ox_lg_hist_mean(const ox_lg_hist_t *h) {
  return h->total ? (double)h->sum / (double)h->total : 0;
}
