/* metrics.h: counters and histograms recorded without locks, rendered as Prometheus text and
 * as the statistics extension's JSON.
 *
 * Recording is a few relaxed atomic adds on the recording thread's behalf: no lock is shared
 * between threads on the hot path. Histograms have fixed bucket bounds (microseconds, or batch
 * sizes), cumulative only when rendered.
 */
#ifndef OX_METRICS_H
#define OX_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define OX_HIST_US_BUCKETS 18
#define OX_HIST_BATCH_BUCKETS 10
#define OX_MAX_BATCH_STATS 256

typedef struct {
  atomic_uint_fast64_t count, sum; /* sum in the histogram's unit */
  atomic_uint_fast64_t bucket[OX_HIST_US_BUCKETS + 1]; /* last: +Inf */
} ox_hist_t;

typedef struct {
  atomic_uint_fast64_t count, ns;
} ox_stat_pair_t;

typedef struct {
  ox_stat_pair_t compute_input, compute_infer, compute_output;
} ox_batch_stat_t;

/* Statistics of one model version (Triton's names in comments). */
typedef struct {
  ox_stat_pair_t success, fail, queue, compute_input, compute_infer, compute_output;
  atomic_uint_fast64_t inference_count; /* rows inferred (nv_inference_count) */
  atomic_uint_fast64_t execution_count; /* model runs (nv_inference_exec_count) */
  atomic_uint_fast64_t last_inference_ms; /* wall clock, ms since the epoch */
  atomic_uint_fast64_t gone_unparsed;     /* dropped unparsed: the client left while it waited
                                             for a worker (also counted in fail) */
  ox_hist_t request_us, queue_us, input_us, infer_us, output_us;
  ox_hist_t batch_size;                 /* rows per run */
  ox_batch_stat_t by_batch[OX_MAX_BATCH_STATS + 1]; /* index = rows (last: larger) */
} ox_model_stats_t;

/* Records value (microseconds, or rows for batch_size histograms). */
void ox_hist_record_us(ox_hist_t *h, uint64_t us);
void ox_hist_record_batch(ox_hist_t *h, uint64_t rows);
static inline void ox_stat_add(ox_stat_pair_t *p, uint64_t ns) {
  atomic_fetch_add_explicit(&p->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->ns, ns, memory_order_relaxed);
}

/* Process-wide counters. */
typedef struct {
  atomic_uint_fast64_t bytes_in, bytes_out;
} ox_process_stats_t;
extern ox_process_stats_t ox_process_stats;

/* Appends the Prometheus text of one model version's statistics (labels model, version);
 * headers (# HELP/# TYPE) are written when first is set. pending: requests waiting. */
typedef struct {
  const char *model;
  int64_t version;
  const ox_model_stats_t *stats;
  uint64_t pending;
} ox_metrics_model_t;
int ox_metrics_render(ox_buf_t *out, const ox_metrics_model_t *models, size_t n,
                      uint64_t open_connections);
/* Appends the sample lines of one microsecond histogram: name_bucket{labels,le="..."} for each
 * bound and +Inf (cumulative), name_sum{labels}, name_count{labels}. labels is the text inside
 * the braces (e.g. tier="l1"), without them. The # HELP/# TYPE lines are the caller's. */
int ox_metrics_hist_us(ox_buf_t *out, const char *name, const char *labels, const ox_hist_t *h);
/* Appends one model version's entry of the statistics extension ({"name":...}). */
int ox_metrics_stats_json(ox_buf_t *out, const ox_metrics_model_t *m);

#endif
