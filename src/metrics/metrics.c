/* metrics.c: see metrics.h. */
#include "metrics/metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/error.h"

ox_process_stats_t ox_process_stats;

#define LD(x) ((uint64_t)atomic_load_explicit(&(x), memory_order_relaxed))

static int labels(ox_buf_t *o, const ox_metrics_model_t *m) {
  int rc = ox_buf_puts(o, "{model=");
  rc |= ox_buf_append_json_string(o, m->model, strlen(m->model)); /* same escapes as Prometheus */
  rc |= ox_buf_printf(o, ",version=\"%" PRId64 "\"}", m->version);
  return rc;
}

typedef enum {
  F_SUCCESS,
  F_FAIL,
  F_ICOUNT,
  F_ECOUNT,
  F_REQ_US,
  F_QUEUE_US,
  F_IN_US,
  F_INFER_US,
  F_OUT_US,
  F_PENDING,
  F_GONE_UNPARSED
} field_t;

static uint64_t field(const ox_metrics_model_t *m, field_t f) {
  const ox_model_stats_t *s = m->stats;
  switch (f) {
    case F_SUCCESS:
      return LD(s->success.count);
    case F_FAIL:
      return LD(s->fail.count);
    case F_ICOUNT:
      return LD(s->inference_count);
    case F_ECOUNT:
      return LD(s->execution_count);
    case F_REQ_US:
      return (LD(s->success.ns) + LD(s->fail.ns)) / 1000;
    case F_QUEUE_US:
      return LD(s->queue.ns) / 1000;
    case F_IN_US:
      return LD(s->compute_input.ns) / 1000;
    case F_INFER_US:
      return LD(s->compute_infer.ns) / 1000;
    case F_OUT_US:
      return LD(s->compute_output.ns) / 1000;
    case F_GONE_UNPARSED:
      return LD(s->gone_unparsed);
    case F_PENDING:
      return m->pending;
  }
  return 0;
}

static int hist(ox_buf_t *o, const char *name, const char *help, const ox_metrics_model_t *ms,
                size_t n, size_t off, const uint64_t *bounds, size_t nb) {
  int rc = ox_buf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  for (size_t k = 0; k < n; k++) {
    const ox_hist_t *h = (const ox_hist_t *)((const char *)ms[k].stats + off);
    uint64_t cum = 0;
    for (size_t i = 0; i <= nb; i++) {
      cum += LD(h->bucket[i]);
      rc |= ox_buf_printf(o, "%s_bucket{model=", name);
      rc |= ox_buf_append_json_string(o, ms[k].model, strlen(ms[k].model));
      if (i < nb)
        rc |= ox_buf_printf(o, ",version=\"%" PRId64 "\",le=\"%" PRIu64 "\"} %" PRIu64 "\n",
                            ms[k].version, bounds[i], cum);
      else
        rc |= ox_buf_printf(o, ",version=\"%" PRId64 "\",le=\"+Inf\"} %" PRIu64 "\n", ms[k].version,
                            cum);
    }
    rc |= ox_buf_printf(o, "%s_sum", name);
    rc |= labels(o, &ms[k]);
    rc |= ox_buf_printf(o, " %" PRIu64 "\n%s_count", LD(h->sum), name);
    rc |= labels(o, &ms[k]);
    rc |= ox_buf_printf(o, " %" PRIu64 "\n", cum);
  }
  return rc;
}

int ox_metrics_render(ox_buf_t *o, const ox_metrics_model_t *ms, size_t n,
                      uint64_t open_connections) {
  static const struct {
    const char *name, *type, *help;
    field_t f;
  } fams[] = {
      {"nv_inference_request_success", "counter", "Successful inference requests", F_SUCCESS},
      {"nv_inference_request_failure", "counter", "Failed inference requests", F_FAIL},
      {"nv_inference_count", "counter",
       "Inferences performed (rows; batched requests count by rows)", F_ICOUNT},
      {"nv_inference_exec_count", "counter",
       "Model executions (runs); inference_count / exec_count is the mean batch size", F_ECOUNT},
      {"nv_inference_request_duration_us", "counter",
       "Cumulative request duration, receipt to response", F_REQ_US},
      {"nv_inference_queue_duration_us", "counter", "Cumulative time requests waited in the queue",
       F_QUEUE_US},
      {"nv_inference_compute_input_duration_us", "counter", "Cumulative time preparing inputs",
       F_IN_US},
      {"nv_inference_compute_infer_duration_us", "counter", "Cumulative model run time",
       F_INFER_US},
      {"nv_inference_compute_output_duration_us", "counter", "Cumulative time producing outputs",
       F_OUT_US},
      {"nv_inference_pending_request_count", "gauge", "Requests waiting to run", F_PENDING},
      {"onnxd_inference_client_gone_unparsed_total", "counter",
       "Requests dropped without parsing: the client closed the connection before a worker started "
       "on them",
       F_GONE_UNPARSED},
  };
  int rc = 0;
  for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
    rc |= ox_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", fams[f].name, fams[f].help, fams[f].name,
                        fams[f].type);
    for (size_t k = 0; k < n; k++) {
      rc |= ox_buf_puts(o, fams[f].name);
      rc |= labels(o, &ms[k]);
      rc |= ox_buf_printf(o, " %" PRIu64 "\n", field(&ms[k], fams[f].f));
    }
  }
#define H(name, help, member, b, nb) \
  rc |= hist(o, name, help, ms, n, offsetof(ox_model_stats_t, member), b, nb)
  H("onnxd_request_duration_us", "Request duration, receipt to response (microseconds)", request_us,
    ox_hist_us_bounds, OX_HIST_US_BUCKETS);
  H("onnxd_queue_duration_us", "Time in the queue (microseconds)", queue_us, ox_hist_us_bounds,
    OX_HIST_US_BUCKETS);
  H("onnxd_compute_input_duration_us", "Input preparation: parse, validate, build tensors, merge",
    input_us, ox_hist_us_bounds, OX_HIST_US_BUCKETS);
  H("onnxd_compute_infer_duration_us", "Model run time (microseconds)", infer_us, ox_hist_us_bounds,
    OX_HIST_US_BUCKETS);
  H("onnxd_compute_output_duration_us", "Output split and encoding (microseconds)", output_us,
    ox_hist_us_bounds, OX_HIST_US_BUCKETS);
  H("onnxd_batch_size", "Rows per model run", batch_size, ox_hist_batch_bounds,
    OX_HIST_BATCH_BUCKETS);
#undef H
  rc |= ox_buf_printf(o,
                      "# HELP onnxd_open_connections Open client connections\n"
                      "# TYPE onnxd_open_connections gauge\nonnxd_open_connections %" PRIu64
                      "\n"
                      "# HELP onnxd_http_received_bytes_total Request bytes received\n"
                      "# TYPE onnxd_http_received_bytes_total counter\n"
                      "onnxd_http_received_bytes_total %" PRIu64
                      "\n"
                      "# HELP onnxd_http_sent_bytes_total Response bytes sent\n"
                      "# TYPE onnxd_http_sent_bytes_total counter\n"
                      "onnxd_http_sent_bytes_total %" PRIu64 "\n",
                      open_connections, LD(ox_process_stats.bytes_in),
                      LD(ox_process_stats.bytes_out));
  rc |= ox_buf_puts(o,
                    "# HELP onnxd_http_responses_total HTTP responses by status code (every "
                    "endpoint; codes not seen yet are left out)\n"
                    "# TYPE onnxd_http_responses_total counter\n");
  for (size_t i = 0; i <= OX_STATUS_OTHER; i++) {
    uint64_t v = LD(ox_process_stats.responses[i]);
    if (!v) continue;
    if (i == OX_STATUS_OTHER)
      rc |= ox_buf_printf(o, "onnxd_http_responses_total{code=\"other\"} %" PRIu64 "\n", v);
    else
      rc |= ox_buf_printf(o, "onnxd_http_responses_total{code=\"%zu\"} %" PRIu64 "\n",
                          i + OX_STATUS_MIN, v);
  }
  static const char *const grpc_names[OX_GRPC_CODES + 1] = {"OK",
                                                            "CANCELLED",
                                                            "UNKNOWN",
                                                            "INVALID_ARGUMENT",
                                                            "DEADLINE_EXCEEDED",
                                                            "NOT_FOUND",
                                                            "ALREADY_EXISTS",
                                                            "PERMISSION_DENIED",
                                                            "RESOURCE_EXHAUSTED",
                                                            "FAILED_PRECONDITION",
                                                            "ABORTED",
                                                            "OUT_OF_RANGE",
                                                            "UNIMPLEMENTED",
                                                            "INTERNAL",
                                                            "UNAVAILABLE",
                                                            "DATA_LOSS",
                                                            "UNAUTHENTICATED",
                                                            "other"};
  rc |= ox_buf_puts(o,
                    "# HELP onnxd_grpc_calls_total gRPC calls by the status they ended with "
                    "(every method; codes not seen yet are left out)\n"
                    "# TYPE onnxd_grpc_calls_total counter\n");
  for (size_t i = 0; i <= OX_GRPC_CODES; i++) {
    uint64_t v = LD(ox_process_stats.grpc_calls[i]);
    if (v)
      rc |= ox_buf_printf(o, "onnxd_grpc_calls_total{code=\"%s\"} %" PRIu64 "\n", grpc_names[i], v);
  }
  /* Process: resident memory from /proc/self/statm, CPU from getrusage. */
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
  rc |= ox_buf_printf(o,
                      "# HELP process_resident_memory_bytes Resident memory size in bytes\n"
                      "# TYPE process_resident_memory_bytes gauge\n"
                      "process_resident_memory_bytes %ld\n"
                      "# HELP process_cpu_seconds_total User and system CPU time in seconds\n"
                      "# TYPE process_cpu_seconds_total counter\n"
                      "process_cpu_seconds_total %.6f\n",
                      rss * sysconf(_SC_PAGESIZE), cpu);
  return rc ? OX_ENOMEM : 0;
}

static int pair(ox_buf_t *o, const char *name, const ox_stat_pair_t *p, int comma) {
  return ox_buf_printf(o, "%s\"%s\":{\"count\":%" PRIu64 ",\"ns\":%" PRIu64 "}", comma ? "," : "",
                       name, LD(p->count), LD(p->ns));
}

int ox_metrics_stats_json(ox_buf_t *o, const ox_metrics_model_t *m) {
  const ox_model_stats_t *s = m->stats;
  int rc = ox_buf_puts(o, "{\"name\":");
  rc |= ox_buf_append_json_string(o, m->model, strlen(m->model));
  rc |= ox_buf_printf(
      o,
      ",\"version\":\"%" PRId64 "\",\"last_inference\":%" PRIu64 ",\"inference_count\":%" PRIu64
      ",\"execution_count\":%" PRIu64 ",\"inference_stats\":{",
      m->version, LD(s->last_inference_ms), LD(s->inference_count), LD(s->execution_count));
  rc |= pair(o, "success", &s->success, 0);
  rc |= pair(o, "fail", &s->fail, 1);
  rc |= pair(o, "queue", &s->queue, 1);
  rc |= pair(o, "compute_input", &s->compute_input, 1);
  rc |= pair(o, "compute_infer", &s->compute_infer, 1);
  rc |= pair(o, "compute_output", &s->compute_output, 1);
  rc |= ox_buf_puts(o, "},\"batch_stats\":[");
  int first = 1;
  for (size_t b = 1; b <= OX_MAX_BATCH_STATS; b++) {
    const ox_batch_stat_t *bs = &s->by_batch[b];
    if (!LD(bs->compute_infer.count)) continue;
    rc |= ox_buf_printf(o, "%s{\"batch_size\":%zu,", first ? "" : ",", b);
    rc |= pair(o, "compute_input", &bs->compute_input, 0);
    rc |= pair(o, "compute_infer", &bs->compute_infer, 1);
    rc |= pair(o, "compute_output", &bs->compute_output, 1);
    rc |= ox_buf_puts(o, "}");
    first = 0;
  }
  rc |= ox_buf_puts(o, "]}");
  return rc ? OX_ENOMEM : 0;
}
