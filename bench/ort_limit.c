/* ort_limit.c: onnxd-ort-limit, the ceiling a server cannot beat: the same model run in-process
 * with no HTTP, no JSON and no queue, through the very code path onnxd uses (ox_runtime_init
 * with global thread pools, ox_repo_open, ox_model_run), with onnxd's default thread settings.
 *
 *   onnxd-ort-limit --repo models --model mobilenetv2 --duration 10 --warmup 2
 *
 * --threads T workers (default: one per core, like onnxd's --infer-threads) each run the model
 * in a closed loop on their own preallocated input: random values, batch --batch B, shape from
 * the model's metadata with every dynamic dimension set to B. Runs that end inside the measured
 * window count. Reports runs/s, rows/s, per-run latency percentiles (the load generator's
 * histogram, so the two tools compare directly) and the process's CPU seconds per 1000 runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/flags.h"
#include "core/log.h"
#include "timed_run.h"
#include "runtime/runtime.h"

typedef struct {
  const char *repo, *model, *version, *json;
  long threads, intra_op_threads, batch;
  double duration, warmup;
} opts_t;

static const ox_flag_t k_flags[] = {
#define O(field) offsetof(opts_t, field)
    {"repo", OX_FLAG_STR, O(repo), 0, 0, "model repository: DIR/<model>/<version>/model.onnx"},
    {"model", OX_FLAG_STR, O(model), 0, 0, "model name"},
    {"version", OX_FLAG_STR, O(version), 0, 0, "model version (default: the highest)"},
    {"threads", OX_FLAG_INT, O(threads), 1, 256, "threads calling Run (default: one per core)"},
    {"intra-op-threads", OX_FLAG_INT, O(intra_op_threads), 1, 256,
     "ONNX Runtime's global intra-op pool size (onnxd's default 1)"},
    {"batch", OX_FLAG_INT, O(batch), 1, 1 << 20,
     "rows per run: every dynamic dimension is set to it"},
    {"duration", OX_FLAG_DEC, O(duration), 0.001, 1e6, "seconds measured"},
    {"warmup", OX_FLAG_DEC, O(warmup), 0, 1e6, "seconds of runs before measuring"},
    {"json", OX_FLAG_STR, O(json), 0, 0, "write machine-readable results to this file"},
#undef O
};

static const ox_flags_spec_t k_spec = {
    .prog = "onnxd-ort-limit",
    .flags = k_flags,
    .nflags = sizeof k_flags / sizeof k_flags[0],
    .usage_head =
        "usage: onnxd-ort-limit [--flag value | --flag=value]...\n\n"
        "Runs a model in-process through onnxd's runtime adapter, no server: the "
        "ceiling.\n\n",
    .usage_tail =
        "\ndefaults: --repo ./models --model mobilenetv2 --intra-op-threads 1 --batch 1\n"
        "  --duration 10 --warmup 1\n",
    .name_width = 18,
};

/* ---- inputs ------------------------------------------------------------------------------- */

typedef struct {
  ox_tensor_in_t *in; /* owned: one per model input */
  int64_t *shapes;    /* owned: OX_RT_MAX_RANK per input */
  void **data;        /* owned: one aligned buffer per input */
  size_t n;
} inputs_t;

static uint64_t g_rng = 0x9E3779B97F4A7C15ULL;
static uint64_t rng_next(void) { /* xorshift64*: reproducible, good enough for test data */
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return g_rng * 0x2545F4914F6CDD1DULL;
}

/* Fills count elements of type dt: floats uniform in [0, 1), integers 0..9, BOOL 0/1. */
static void fill(void *p, ox_dtype_t dt, uint64_t count) {
  size_t es = ox_dtype_size(dt);
  for (uint64_t i = 0; i < count; i++) {
    uint64_t r = rng_next();
    double u = (double)(r >> 11) / 9007199254740992.0;
    char *e = (char *)p + i * es;
    switch (dt) {
      case OX_DT_FP32:
        *(float *)e = (float)u;
        break;
      case OX_DT_FP64:
        *(double *)e = u;
        break;
      case OX_DT_BOOL:
        *(uint8_t *)e = (uint8_t)(r & 1);
        break;
      case OX_DT_FP16:
        *(uint16_t *)e = 0x3800;
        break; /* 0.5 */
      case OX_DT_BF16:
        *(uint16_t *)e = 0x3f00;
        break; /* 0.5 */
      default: {
        uint64_t v = r % 10;
        memcpy(e, &v, es); /* little-endian: the low bytes carry the value */
      }
    }
  }
}

/* Builds one set of inputs for model m at batch b. Returns 0, or an error with a message. */
static int inputs_create(const ox_model_t *m, int64_t b, inputs_t *x, char *err, size_t errcap) {
  memset(x, 0, sizeof *x);
  x->n = m->num_inputs;
  x->in = calloc(x->n + 1, sizeof *x->in);
  x->shapes = calloc((x->n + 1) * OX_RT_MAX_RANK, sizeof *x->shapes);
  x->data = calloc(x->n + 1, sizeof *x->data);
  if (!x->in || !x->shapes || !x->data) return OX_ENOMEM;
  for (size_t i = 0; i < x->n; i++) {
    const ox_tensor_info_t *ti = &m->inputs[i];
    size_t es = ox_dtype_size(ti->dtype);
    if (ti->rank < 0 || es == 0) {
      snprintf(
          err, errcap, "input '%s': %s", ti->name,
          ti->rank < 0 ? "the model gives no shape" : "only fixed-size datatypes are supported");
      return OX_EINVALID;
    }
    int64_t *shape = x->shapes + i * OX_RT_MAX_RANK;
    uint64_t count = 1;
    for (int d = 0; d < ti->rank; d++) {
      shape[d] = ti->dims[d] < 0 ? b : ti->dims[d];
      if (__builtin_mul_overflow(count, (uint64_t)shape[d], &count)) return OX_EOVERFLOW;
    }
    size_t nbytes;
    if (__builtin_mul_overflow((size_t)count, es, &nbytes)) return OX_EOVERFLOW;
    x->data[i] = aligned_alloc(64, (nbytes + 63) / 64 * 64 + 64);
    if (!x->data[i]) return OX_ENOMEM;
    fill(x->data[i], ti->dtype, count);
    x->in[i] = (ox_tensor_in_t){.dtype = ti->dtype,
                                .rank = ti->rank,
                                .shape = shape,
                                .data = x->data[i],
                                .nbytes = nbytes,
                                .count = count};
  }
  return 0;
}

static void inputs_destroy(inputs_t *x) {
  for (size_t i = 0; x->data && i < x->n; i++) free(x->data[i]);
  free(x->data);
  free(x->shapes);
  free(x->in);
}

/* ---- workers ------------------------------------------------------------------------------ */

typedef struct {
  ox_tr_worker_t h; /* first: ox_tr_run's part (timed_run.h) */
  ox_model_t *model;
  inputs_t inputs;
  size_t *out_idx;
  ox_tensor_out_t *outs;
} worker_t;

static void *worker_main(void *arg) {
  worker_t *w = arg;
  ox_model_t *m = w->model;
  for (;;) {
    uint64_t t0 = ox_tr_now_ns();
    if (t0 >= w->h.t_end || atomic_load(w->h.failed)) break;
    int rc = ox_model_run(m, w->inputs.in, w->out_idx, m->num_outputs, w->outs, NULL, w->h.err,
                          sizeof w->h.err);
    uint64_t t1 = ox_tr_now_ns();
    if (rc) {
      atomic_store(w->h.failed, rc);
      break;
    }
    for (size_t j = 0; j < m->num_outputs; j++) ox_tensor_out_release(&w->outs[j]);
    if (t1 >= w->h.t_measure && t1 < w->h.t_end) {
      w->h.runs++;
      ox_lg_hist_record(&w->h.hist, t1 - t0);
    }
  }
  return NULL;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  opts_t o = {.repo = "./models",
              .model = "mobilenetv2",
              .version = "",
              .threads = ncpu < 1 ? 1 : ncpu,
              .intra_op_threads = 1,
              .batch = 1,
              .duration = 10,
              .warmup = 1};
  int frc = ox_flags_parse(&k_spec, argc, argv, &o, stderr);
  if (frc == OX_FLAGS_HELP) ox_flags_usage(&k_spec, NULL, stdout);
  if (frc) return frc == OX_FLAGS_HELP ? 0 : 2;
  ox_log_level = OX_LOG_WARN;

  char err[512];
  ox_repo_t *repo = NULL;
  ox_model_t *m = NULL;
  int orc = ox_tr_open_model("onnxd-ort-limit", (int)o.intra_op_threads, o.repo, o.model, o.version,
                             &repo, &m);
  if (orc) return orc;

  int nt = (int)o.threads, rc = 0;
  worker_t *w = calloc((size_t)nt, sizeof *w);
  size_t *out_idx = calloc(m->num_outputs + 1, sizeof *out_idx);
  if (!w || !out_idx) rc = OX_ENOMEM;
  for (size_t j = 0; !rc && j < m->num_outputs; j++) out_idx[j] = j;
  err[0] = 0;
  for (int i = 0; !rc && i < nt; i++) {
    rc = inputs_create(m, o.batch, &w[i].inputs, err, sizeof err);
    w[i].outs = calloc(m->num_outputs + 1, sizeof *w[i].outs);
    if (!rc && !w[i].outs) rc = OX_ENOMEM;
    w[i].model = m;
    w[i].out_idx = out_idx;
  }
  if (rc) {
    fprintf(stderr, "onnxd-ort-limit: cannot build inputs: %s\n", err[0] ? err : ox_strerror(rc));
    return 1;
  }
  static ox_tr_result_t res;
  if (ox_tr_run("onnxd-ort-limit", w, sizeof *w, nt, worker_main, o.warmup, o.duration, &res))
    return 1;
  const ox_lg_hist_t *h = &res.hist;
  uint64_t runs = res.runs;
  double dur = o.duration, rps = (double)runs / dur;
  double cpu_user = res.cpu_user, cpu_sys = res.cpu_sys;
  double cpu_1k = runs ? (cpu_user + cpu_sys) * 1000 / (double)runs : 0;
  printf("onnxd-ort-limit: %s v%" PRId64 " in-process, ONNX Runtime %s\n", m->name, m->version,
         ox_runtime_version());
  printf("  %d threads, intra-op threads %ld, batch %ld, %.2f s measured after %.2f s warm-up\n",
         nt, o.intra_op_threads, o.batch, dur, o.warmup);
  printf("  runs      %" PRIu64 "  %.1f runs/s  %.1f rows/s\n", runs, rps, rps * (double)o.batch);
  printf(
      "  latency   p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  "
      "mean %.3f ms\n",
      ox_lg_hist_percentile(h, 50) / 1e6, ox_lg_hist_percentile(h, 90) / 1e6,
      ox_lg_hist_percentile(h, 99) / 1e6, ox_lg_hist_percentile(h, 99.9) / 1e6,
      h->total ? (double)h->max / 1e6 : 0, ox_lg_hist_mean(h) / 1e6);
  printf("  CPU       %.2f s user + %.2f s sys (%.3f s per 1000 runs)\n", cpu_user, cpu_sys,
         cpu_1k);

  if (o.json) {
    ox_buf_t b;
    ox_buf_init(&b);
    int jr = ox_buf_puts(&b, "{\"model\": ");
    if (!jr) jr = ox_buf_append_json_string(&b, m->name, strlen(m->name));
    if (!jr)
      jr = ox_buf_printf(
          &b,
          ", \"version\": %" PRId64
          ", \"threads\": %d, \"intra_op_threads\": %ld, \"batch\": %ld"
          ", \"runs\": %" PRIu64
          ", \"duration_s\": %.6f, \"runs_per_s\": %.3f"
          ", \"rows_per_s\": %.3f, \"latency_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f"
          ", \"p999\": %.1f, \"max\": %.1f, \"mean\": %.1f}, \"cpu_user_s\": %.3f"
          ", \"cpu_sys_s\": %.3f, \"cpu_s_per_1k_runs\": %.4f, \"warmup_s\": %.3f"
          ", \"ort_version\": \"%s\"}\n",
          m->version, nt, o.intra_op_threads, o.batch, runs, dur, rps, rps * (double)o.batch,
          ox_tr_us(ox_lg_hist_percentile(h, 50)), ox_tr_us(ox_lg_hist_percentile(h, 90)),
          ox_tr_us(ox_lg_hist_percentile(h, 99)), ox_tr_us(ox_lg_hist_percentile(h, 99.9)),
          h->total ? ox_tr_us(h->max) : 0, ox_lg_hist_mean(h) / 1e3, cpu_user, cpu_sys, cpu_1k,
          o.warmup, ox_runtime_version());
    FILE *f = jr ? NULL : fopen(o.json, "w");
    int werr = !f;
    if (f) {
      werr |= fwrite(b.data, 1, b.len, f) != b.len;
      werr |= fclose(f) != 0;
    }
    if (werr) {
      fprintf(stderr, "onnxd-ort-limit: cannot write --json '%s'\n", o.json);
      rc = 1;
    }
    ox_buf_free(&b);
  }

  for (int i = 0; i < nt; i++) {
    inputs_destroy(&w[i].inputs);
    free(w[i].outs);
  }
  free(w);
  free(out_idx);
  ox_repo_close(repo);
  ox_runtime_shutdown();
  return rc;
}
