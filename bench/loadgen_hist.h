/* loadgen_hist.h: a log-linear latency histogram (HdrHistogram's layout), shared by onnxd-bench
 * and onnxd-ort-limit so both report percentiles the same way.
 *
 * Values are nanoseconds. Values below 256 ns get a bucket each; above, every power-of-two range
 * [2^k, 2^(k+1)) is cut into 128 equal buckets, so a bucket is never wider than 1/128 (0.8 %) of
 * the values in it: 1 ns resolution at the bottom, ~1 % relative precision up to 60 s. Values
 * above 60 s are counted in the top bucket (the exact maximum and sum are kept separately).
 * Recording is a few instructions and never allocates; 30 KiB of counters per histogram.
 */
#ifndef OX_LG_HIST_H
#define OX_LG_HIST_H

#include <stdint.h>

#define OX_LG_HIST_MAX_NS 60000000000ULL /* 60 s */
#define OX_LG_HIST_SUB 128               /* buckets per power of two above 256 ns */
#define OX_LG_HIST_BUCKETS 3840          /* index of OX_LG_HIST_MAX_NS, plus one */

typedef struct {
  uint64_t counts[OX_LG_HIST_BUCKETS];
  uint64_t total;   /* values recorded */
  uint64_t min, max; /* exact, in ns (min is UINT64_MAX while empty) */
  uint64_t sum;     /* exact, in ns (overflows only after 584 years of latency) */
} ox_lg_hist_t;

void ox_lg_hist_init(ox_lg_hist_t *h);
/* Records one value in ns. */
void ox_lg_hist_record(ox_lg_hist_t *h, uint64_t ns);
/* Adds src's counts into dst. */
void ox_lg_hist_merge(ox_lg_hist_t *dst, const ox_lg_hist_t *src);
/* The value at percentile p (0..100] in ns: the highest value equivalent to the bucket holding
 * the ceil(p% * total)-th smallest value, capped by the exact maximum (so p=100 gives max).
 * 0 when empty. */
uint64_t ox_lg_hist_percentile(const ox_lg_hist_t *h, double p);
/* Exact mean in ns, 0 when empty. */
double ox_lg_hist_mean(const ox_lg_hist_t *h);

/* Bucket index of a value, and the range of values [lo, hi] a bucket holds (for tests). */
unsigned ox_lg_hist_index(uint64_t ns);
void ox_lg_hist_range(unsigned idx, uint64_t *lo, uint64_t *hi);

#endif
