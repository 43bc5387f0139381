/* hist.h: fixed-bucket histograms recorded without locks (a few relaxed atomic adds), shared by
 * the per-model statistics (metrics/) and the feature store's per-tier latencies (features/),
 * which is why they live in core/ rather than in metrics/: every module may record into one.
 *
 * Buckets are per-value counts (bucket[i] counts values <= bounds[i] and > bounds[i - 1]; the
 * last one, +Inf, the rest); they are made cumulative only when rendered.
 */
#ifndef OX_CORE_HIST_H
#define OX_CORE_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/buf.h"

#define OX_HIST_US_BUCKETS 18
#define OX_HIST_BATCH_BUCKETS 10

typedef struct {
  atomic_uint_fast64_t count, sum;                     /* sum in the histogram's unit */
  atomic_uint_fast64_t bucket[OX_HIST_US_BUCKETS + 1]; /* last: +Inf */
} ox_hist_t;

/* Upper bounds of the buckets: microseconds (50 us to 30 s) and rows per run (1 to 512). */
extern const uint64_t ox_hist_us_bounds[OX_HIST_US_BUCKETS];
extern const uint64_t ox_hist_batch_bounds[OX_HIST_BATCH_BUCKETS];

/* Records value (microseconds, or rows for batch_size histograms). Any thread. */
void ox_hist_record_us(ox_hist_t *h, uint64_t us);
void ox_hist_record_batch(ox_hist_t *h, uint64_t rows);

/* Appends the Prometheus sample lines of one microsecond histogram: name_bucket{labels,le="..."}
 * for each bound and +Inf (cumulative), name_sum{labels}, name_count{labels}. labels is the text
 * inside the braces (e.g. tier="l1"), without them. The # HELP/# TYPE lines are the caller's.
 * 0 or OX_ENOMEM. */
int ox_hist_render_us(ox_buf_t *out, const char *name, const char *labels, const ox_hist_t *h);

#endif
