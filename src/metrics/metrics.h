/* metrics.h: counters and histograms recorded without locks, rendered as Prometheus text and
 * as the statistics extension's JSON.
 *
 * Recording is a few relaxed atomic adds on the recording thread's behalf: no lock is shared
 * between threads on the hot path. Histograms are core/hist.h's (fixed bucket bounds in
 * microseconds or batch sizes, cumulative only when rendered).
 */
#ifndef OX_METRICS_H
#define OX_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/hist.h"

#define OX_MAX_BATCH_STATS 256

typedef struct {
  atomic_uint_fast64_t count, ns;
} ox_stat_pair_t;

typedef struct {
  ox_stat_pair_t compute_input, compute_infer, compute_output;
} ox_batch_stat_t;

/* Statistics of one model version (Triton's names in comments). */
typedef struct {
  ox_stat_pair_t success, fail, queue, compute_input, compute_infer, compute_output;
  atomic_uint_fast64_t inference_count;   /* rows inferred (nv_inference_count) */
  atomic_uint_fast64_t execution_count;   /* model runs (nv_inference_exec_count) */
  atomic_uint_fast64_t last_inference_ms; /* wall clock, ms since the epoch */
  atomic_uint_fast64_t gone_unparsed;     /* dropped unparsed: the client left while it waited
                                             for a worker (also counted in fail) */
  ox_hist_t request_us, queue_us, input_us, infer_us, output_us;
  ox_hist_t batch_size;                             /* rows per run */
  ox_batch_stat_t by_batch[OX_MAX_BATCH_STATS + 1]; /* index = rows (last: larger) */
} ox_model_stats_t;

static inline void ox_stat_add(ox_stat_pair_t *p, uint64_t ns) {
  atomic_fetch_add_explicit(&p->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->ns, ns, memory_order_relaxed);
}

/* HTTP statuses counted one by one (100..599); anything else counts as OX_STATUS_OTHER. */
#define OX_STATUS_MIN 100
#define OX_STATUS_MAX 599
#define OX_STATUS_OTHER (OX_STATUS_MAX - OX_STATUS_MIN + 1)

/* Process-wide counters. responses: responses started, by status (index status - 100). */
#define OX_GRPC_CODES 17 /* gRPC status codes 0..16 */
typedef struct {
  atomic_uint_fast64_t bytes_in, bytes_out;
  atomic_uint_fast64_t responses[OX_STATUS_OTHER + 1];
  atomic_uint_fast64_t grpc_calls[OX_GRPC_CODES + 1]; /* by status; last: out of range */
} ox_process_stats_t;
extern ox_process_stats_t ox_process_stats;

/* Counts one response with HTTP status `status` (any int: out of 100..599 counts as "other"),
 * for onnxd_http_responses_total{code}. A relaxed atomic add; callable from any thread. */
static inline void ox_metrics_count_response(int status) {
  size_t i = status >= OX_STATUS_MIN && status <= OX_STATUS_MAX ? (size_t)(status - OX_STATUS_MIN)
                                                                : OX_STATUS_OTHER;
  atomic_fetch_add_explicit(&ox_process_stats.responses[i], 1, memory_order_relaxed);
}

/* Counts one gRPC call ended with status code (for onnxd_grpc_calls_total{code}). Any thread. */
static inline void ox_metrics_count_grpc(int code) {
  size_t i = code >= 0 && code < OX_GRPC_CODES ? (size_t)code : OX_GRPC_CODES;
  atomic_fetch_add_explicit(&ox_process_stats.grpc_calls[i], 1, memory_order_relaxed);
}

/* One model version to render (all borrowed for the call). pending: requests waiting. */
typedef struct {
  const char *model;
  int64_t version;
  const ox_model_stats_t *stats;
  uint64_t pending;
} ox_metrics_model_t;
/* Appends the Prometheus text of the n model versions of models (each metric's # HELP/# TYPE
 * once, then one sample per version, labels model and version), then the process's metrics:
 * open_connections, bytes received and sent, responses by status (every status seen so far;
 * code="other" for one outside 100..599), resident memory and CPU time. 0 or OX_ENOMEM. */
int ox_metrics_render(ox_buf_t *out, const ox_metrics_model_t *models, size_t n,
                      uint64_t open_connections);
/* Appends one model version's entry of the statistics extension ({"name":...}). */
int ox_metrics_stats_json(ox_buf_t *out, const ox_metrics_model_t *m);

#endif
