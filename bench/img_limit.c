/* img_limit.c: onnxd-img-limit, S5's ceiling: image classification from JPEG bytes in-process,
 * no HTTP, no queue: decode + preprocess (ox_img_preprocess, the code onnxd runs for an image
 * input) + ONNX Runtime's Run (ox_model_run, onnxd's runtime adapter) + the top K formatted as
 * Triton's classification strings ("score:index:label"), with onnxd's default threads.
 *
 *   onnxd-img-limit --repo models --model mobilenetv2 --image build/bench/s5/photo.jpg \
 *     --shorter-side 256 --crop 224 --duration 5 --warmup 1
 *
 * The model is the plain one (FP32 [N,3,224,224] input, no config.json), the preprocessing is
 * given by flags (defaults: S5's config.json: RGB, shorter side 256 bilinear, centre crop
 * 224x224, / 255, ImageNet mean and std, NCHW FP32). --threads T workers (default: one per core,
 * like onnxd's --infer-threads; ONNX Runtime's global intra-op pool of --intra-op-threads, 1 by
 * default, as onnxd) each loop: ox_img_preprocess of the file's bytes (read once at start: a
 * server has them from the socket) into their own input tensor, ox_model_run, top K. Reports
 * runs/s, latency percentiles of the whole loop body (the load generator's histogram), the mean
 * split between preprocessing and the run, and CPU seconds per 1000 runs; --json as
 * onnxd-ort-limit's, so bench/run.py reads both alike.
 *
 * Built only where src/image/image.h exists (the Makefile's rule is conditional on it).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/flags.h"
#include "core/log.h"
#include "image/image.h"
#include "timed_run.h"
#include "runtime/runtime.h"

#define MAX_TOPK 100

typedef struct {
  const char *repo, *model, *version, *json, *image, *filter, *labels;
  long threads, intra_op_threads, shorter_side, crop, topk;
  double duration, warmup;
} opts_t;

static const ox_flag_t k_flags[] = {
#define O(field) offsetof(opts_t, field)
    {"repo", OX_FLAG_STR, O(repo), 0, 0, "model repository: DIR/<model>/<version>/model.onnx"},
    {"model", OX_FLAG_STR, O(model), 0, 0, "model name (an FP32 [N,3,H,W] input)"},
    {"version", OX_FLAG_STR, O(version), 0, 0, "model version (default: the highest)"},
    {"image", OX_FLAG_STR, O(image), 0, 0, "the JPEG or PNG file classified on every run"},
    {"shorter-side", OX_FLAG_INT, O(shorter_side), 0, 65535,
     "resize the shorter side to this (0: no resize)"},
    {"crop", OX_FLAG_INT, O(crop), 1, 65535, "centre crop, square"},
    {"filter", OX_FLAG_STR, O(filter), 0, 0,
     "resampling: bilinear, nearest, bicubic, box, hamming, lanczos"},
    {"labels", OX_FLAG_STR, O(labels), 0, 0,
     "labels, one per line (default: class_0, class_1, ...)"},
    {"topk", OX_FLAG_INT, O(topk), 1, MAX_TOPK, "classes formatted per run"},
    {"threads", OX_FLAG_INT, O(threads), 1, 256, "worker threads (default: one per core)"},
    {"intra-op-threads", OX_FLAG_INT, O(intra_op_threads), 1, 256,
     "ONNX Runtime's global intra-op pool size (onnxd's default 1)"},
    {"duration", OX_FLAG_DEC, O(duration), 0.001, 1e6, "seconds measured"},
    {"warmup", OX_FLAG_DEC, O(warmup), 0, 1e6, "seconds of runs before measuring"},
    {"json", OX_FLAG_STR, O(json), 0, 0, "write machine-readable results to this file"},
#undef O
};

static const ox_flags_spec_t k_spec = {
    .prog = "onnxd-img-limit",
    .flags = k_flags,
    .nflags = sizeof k_flags / sizeof k_flags[0],
    .usage_head =
        "usage: onnxd-img-limit --image FILE [--flag value | --flag=value]...\n\n"
        "Decodes, preprocesses and classifies an image in-process, no server: S5's "
        "ceiling.\n\n",
    .usage_tail =
        "\ndefaults: --repo ./models --model mobilenetv2 --shorter-side 256 --crop 224\n"
        "  --filter bilinear --topk 5 --intra-op-threads 1 --duration 10 --warmup 1\n",
    .name_width = 18,
};

/* Reads a whole regular file of at most max bytes into *out (malloc'ed). 0 or -errno. */
static int read_all(const char *path, size_t max, char **out, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
    close(fd);
    return -EINVAL;
  }
  size_t n = (size_t)st.st_size, got = 0;
  char *p = malloc(n + 1);
  if (!p) {
    close(fd);
    return -ENOMEM;
  }
  while (got < n) {
    ssize_t k = read(fd, p + got, n - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      free(p);
      close(fd);
      return k < 0 ? -errno : -EIO;
    }
    got += (size_t)k;
  }
  close(fd);
  p[n] = 0;
  *out = p;
  *len = n;
  return 0;
}

/* ---- workers ------------------------------------------------------------------------------ */

typedef struct {
  ox_tr_worker_t h; /* first: ox_tr_run's part (timed_run.h) */
  ox_model_t *model;
  const ox_img_spec_t *spec;
  const uint8_t *image;
  size_t image_len;
  const char *const *labels;
  size_t nlabels;
  int topk;
  ox_tensor_in_t in;
  int64_t shape[4];
  float *data;
  size_t out_idx;
  ox_tensor_out_t out;
  uint64_t pre_ns, run_ns, out_bytes; /* measured runs: time in preprocessing, in Run; bytes out */
} worker_t;

/* The top K of scores, best first (ties: the lower index), formatted as Triton's classification
 * extension does ("%f:%d:%s") into buf; returns the bytes written. */
static size_t topk_format(const float *s, size_t n, int k, const char *const *labels,
                          size_t nlabels, char *buf, size_t cap) {
  size_t idx[MAX_TOPK];
  int have = 0;
  for (size_t i = 0; i < n; i++) {
    if (have == k && !(s[i] > s[idx[k - 1]])) continue;
    int j = have < k ? have++ : k - 1;
    while (j > 0 && s[idx[j - 1]] < s[i]) {
      idx[j] = idx[j - 1];
      j--;
    }
    idx[j] = i;
  }
  size_t len = 0;
  for (int j = 0; j < have; j++) {
    const char *lab = idx[j] < nlabels ? labels[idx[j]] : "";
    int w = snprintf(buf + len, cap - len, "%f:%zu:%s", (double)s[idx[j]], idx[j], lab);
    if (w < 0 || (size_t)w >= cap - len) break;
    len += (size_t)w + 1; /* one string per class, NUL-separated */
  }
  return len;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  char strings[MAX_TOPK * 80];
  for (;;) {
    uint64_t t0 = ox_tr_now_ns();
    if (t0 >= w->h.t_end || atomic_load(w->h.failed)) break;
    int rc = ox_img_preprocess(w->spec, w->image, w->image_len, w->data, w->in.nbytes, w->h.err,
                               sizeof w->h.err);
    uint64_t t1 = ox_tr_now_ns();
    if (!rc)
      rc = ox_model_run(w->model, &w->in, &w->out_idx, 1, &w->out, NULL, w->h.err, sizeof w->h.err);
    uint64_t t2 = ox_tr_now_ns();
    if (rc) {
      atomic_store(w->h.failed, rc);
      break;
    }
    size_t nb = topk_format((const float *)w->out.data, (size_t)w->out.count, w->topk, w->labels,
                            w->nlabels, strings, sizeof strings);
    ox_tensor_out_release(&w->out);
    uint64_t t3 = ox_tr_now_ns();
    if (t3 >= w->h.t_measure && t3 < w->h.t_end) {
      w->h.runs++;
      w->pre_ns += t1 - t0;
      w->run_ns += t2 - t1;
      w->out_bytes += nb;
      ox_lg_hist_record(&w->h.hist, t3 - t0);
    }
  }
  return NULL;
}

/* ---- main --------------------------------------------------------------------------------- */

static int parse_filter(const char *s, ox_img_filter_t *f) {
  static const struct {
    const char *name;
    ox_img_filter_t f;
  } k[] = {{"bilinear", OX_IMG_BILINEAR}, {"nearest", OX_IMG_NEAREST}, {"bicubic", OX_IMG_BICUBIC},
           {"box", OX_IMG_BOX},           {"hamming", OX_IMG_HAMMING}, {"lanczos", OX_IMG_LANCZOS}};
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
    if (!strcmp(s, k[i].name)) {
      *f = k[i].f;
      return 0;
    }
  return -1;
}

/* Labels: the file's lines, or class_<i> for n classes. *block owns the text. */
static int load_labels(const char *path, size_t n, char ***labels, size_t *count, char **block) {
  if (path && path[0]) {
    size_t len;
    int rc = read_all(path, 64u << 20, block, &len);
    if (rc) return rc;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += (*block)[i] == '\n';
    *labels = calloc(lines, sizeof **labels);
    if (!*labels) return -ENOMEM;
    size_t c = 0;
    for (char *p = *block, *end = *block + len; p < end;) {
      char *nl = memchr(p, '\n', (size_t)(end - p));
      if (!nl) nl = end;
      *nl = 0;
      (*labels)[c++] = p;
      p = nl + 1;
    }
    *count = c;
    return 0;
  }
  *block = malloc(n * 16 + 1);
  *labels = calloc(n + 1, sizeof **labels);
  if (!*block || !*labels) return -ENOMEM;
  char *p = *block;
  for (size_t i = 0; i < n; i++) {
    (*labels)[i] = p;
    p += snprintf(p, 16, "class_%zu", i) + 1;
  }
  *count = n;
  return 0;
}

int main(int argc, char **argv) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  opts_t o = {.repo = "./models",
              .model = "mobilenetv2",
              .version = "",
              .image = "",
              .filter = "bilinear",
              .labels = "",
              .threads = ncpu < 1 ? 1 : ncpu,
              .intra_op_threads = 1,
              .shorter_side = 256,
              .crop = 224,
              .topk = 5,
              .duration = 10,
              .warmup = 1};
  int frc = ox_flags_parse(&k_spec, argc, argv, &o, stderr);
  if (frc == OX_FLAGS_HELP) ox_flags_usage(&k_spec, NULL, stdout);
  if (frc) return frc == OX_FLAGS_HELP ? 0 : 2;
  ox_log_level = OX_LOG_WARN;
  if (!o.image[0]) {
    fprintf(stderr, "onnxd-img-limit: --image FILE is required\n");
    return 2;
  }

  char err[512];
  ox_img_spec_t spec;
  ox_img_spec_init(&spec);
  spec.color = OX_IMG_RGB;
  spec.resize = o.shorter_side ? OX_IMG_RESIZE_SHORTER : OX_IMG_RESIZE_NONE;
  spec.shorter_side = (uint32_t)o.shorter_side;
  spec.crop_w = spec.crop_h = (uint32_t)o.crop;
  spec.dtype = OX_DT_FP32;
  spec.layout = OX_IMG_NCHW;
  spec.scale = 255.0f;
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  memcpy(spec.mean, mean, sizeof mean);
  memcpy(spec.std, sd, sizeof sd);
  if (parse_filter(o.filter, &spec.filter)) {
    fprintf(stderr, "onnxd-img-limit: --filter: unknown '%s'\n", o.filter);
    return 2;
  }
  if (ox_img_spec_check(&spec, err, sizeof err)) {
    fprintf(stderr, "onnxd-img-limit: %s\n", err);
    return 2;
  }
  char *image = NULL;
  size_t image_len = 0;
  int frd = read_all(o.image, 1u << 30, &image, &image_len);
  if (frd) {
    fprintf(stderr, "onnxd-img-limit: cannot read --image '%s': %s\n", o.image,
            strerror(frd == -EINVAL ? EINVAL : -frd));
    return 2;
  }

  ox_repo_t *repo = NULL;
  ox_model_t *m = NULL;
  int orc = ox_tr_open_model("onnxd-img-limit", (int)o.intra_op_threads, o.repo, o.model, o.version,
                             &repo, &m);
  if (orc) return orc;
  const ox_tensor_info_t *ti = &m->inputs[0];
  if (m->num_inputs != 1 || ti->dtype != OX_DT_FP32 || ti->rank != 4 || m->num_outputs < 1 ||
      m->outputs[0].dtype != OX_DT_FP32) {
    fprintf(stderr, "onnxd-img-limit: '%s' needs one FP32 [N,3,H,W] input and an FP32 output\n",
            o.model);
    return 2;
  }
  uint32_t c = 0, h = 0, wd = 0;
  ox_img_spec_fixed_dims(&spec, &c, &h, &wd);
  int64_t shape[4] = {1, c, h, wd};
  size_t nbytes = (size_t)c * h * wd * sizeof(float);
  for (int d = 1; d < 4; d++)
    if (ti->dims[d] >= 0 && ti->dims[d] != shape[d]) {
      fprintf(stderr,
              "onnxd-img-limit: the model's input is [N,%" PRId64 ",%" PRId64 ",%" PRId64
              "], the preprocessing gives [1,%u,%u,%u]\n",
              ti->dims[1], ti->dims[2], ti->dims[3], c, h, wd);
      return 2;
    }
  size_t nclasses =
      m->outputs[0].rank >= 2 && m->outputs[0].dims[1] > 0 ? (size_t)m->outputs[0].dims[1] : 1000;
  char **labels = NULL, *label_block = NULL;
  size_t nlabels = 0;
  if (load_labels(o.labels, nclasses, &labels, &nlabels, &label_block)) {
    fprintf(stderr, "onnxd-img-limit: cannot read --labels '%s'\n", o.labels);
    return 2;
  }

  int nt = (int)o.threads, rc = 0;
  worker_t *w = calloc((size_t)nt, sizeof *w);
  if (!w) return 1;
  for (int i = 0; i < nt; i++) {
    w[i].model = m;
    w[i].spec = &spec;
    w[i].image = (const uint8_t *)image;
    w[i].image_len = image_len;
    w[i].labels = (const char *const *)labels;
    w[i].nlabels = nlabels;
    w[i].topk = (int)o.topk;
    memcpy(w[i].shape, shape, sizeof shape);
    w[i].data = aligned_alloc(64, (nbytes + 63) / 64 * 64);
    if (!w[i].data) return 1;
    w[i].in = (ox_tensor_in_t){.dtype = OX_DT_FP32,
                               .rank = 4,
                               .shape = w[i].shape,
                               .data = w[i].data,
                               .nbytes = nbytes,
                               .count = nbytes / sizeof(float)};
    w[i].out_idx = 0;
  }
  static ox_tr_result_t res;
  if (ox_tr_run("onnxd-img-limit", w, sizeof *w, nt, worker_main, o.warmup, o.duration, &res))
    return 1;
  const ox_lg_hist_t *hist = &res.hist;
  uint64_t runs = res.runs, pre_ns = 0, run_ns = 0, out_bytes = 0;
  for (int i = 0; i < nt; i++) {
    pre_ns += w[i].pre_ns;
    run_ns += w[i].run_ns;
    out_bytes += w[i].out_bytes;
  }
  double dur = o.duration, rps = (double)runs / dur;
  double cpu_user = res.cpu_user, cpu_sys = res.cpu_sys;
  double cpu_1k = runs ? (cpu_user + cpu_sys) * 1000 / (double)runs : 0;
  double pre_ms = runs ? (double)pre_ns / (double)runs / 1e6 : 0,
         run_ms = runs ? (double)run_ns / (double)runs / 1e6 : 0;
  printf("onnxd-img-limit: %s v%" PRId64 " in-process from %s (%zu bytes), ONNX Runtime %s\n",
         m->name, m->version, o.image, image_len, ox_runtime_version());
  printf("  %d threads, intra-op threads %ld, %.2f s measured after %.2f s warm-up\n", nt,
         o.intra_op_threads, dur, o.warmup);
  printf("  runs      %" PRIu64 "  %.1f images/s\n", runs, rps);
  printf("  mean      preprocess %.3f ms  run %.3f ms\n", pre_ms, run_ms);
  printf(
      "  latency   p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  "
      "mean %.3f ms\n",
      ox_lg_hist_percentile(hist, 50) / 1e6, ox_lg_hist_percentile(hist, 90) / 1e6,
      ox_lg_hist_percentile(hist, 99) / 1e6, ox_lg_hist_percentile(hist, 99.9) / 1e6,
      hist->total ? (double)hist->max / 1e6 : 0, ox_lg_hist_mean(hist) / 1e6);
  printf("  CPU       %.2f s user + %.2f s sys (%.3f s per 1000 runs)\n", cpu_user, cpu_sys,
         cpu_1k);

  if (o.json) {
    ox_buf_t b;
    ox_buf_init(&b);
    int jr = ox_buf_puts(&b, "{\"model\": ");
    if (!jr) jr = ox_buf_append_json_string(&b, m->name, strlen(m->name));
    if (!jr) jr = ox_buf_puts(&b, ", \"image\": ");
    if (!jr) jr = ox_buf_append_json_string(&b, o.image, strlen(o.image));
    if (!jr)
      jr = ox_buf_printf(
          &b,
          ", \"image_bytes\": %zu, \"version\": %" PRId64
          ", \"threads\": %d, \"intra_op_threads\": %ld, \"batch\": 1"
          ", \"runs\": %" PRIu64
          ", \"duration_s\": %.6f, \"runs_per_s\": %.3f, \"rows_per_s\": %.3f"
          ", \"preprocess_ms_mean\": %.4f, \"run_ms_mean\": %.4f, \"topk\": %ld"
          ", \"latency_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f"
          ", \"p999\": %.1f, \"max\": %.1f, \"mean\": %.1f}, \"cpu_user_s\": %.3f"
          ", \"cpu_sys_s\": %.3f, \"cpu_s_per_1k_runs\": %.4f, \"warmup_s\": %.3f"
          ", \"ort_version\": \"%s\"}\n",
          image_len, m->version, nt, o.intra_op_threads, runs, dur, rps, rps, pre_ms, run_ms,
          o.topk, ox_tr_us(ox_lg_hist_percentile(hist, 50)),
          ox_tr_us(ox_lg_hist_percentile(hist, 90)), ox_tr_us(ox_lg_hist_percentile(hist, 99)),
          ox_tr_us(ox_lg_hist_percentile(hist, 99.9)), hist->total ? ox_tr_us(hist->max) : 0,
          ox_lg_hist_mean(hist) / 1e3, cpu_user, cpu_sys, cpu_1k, o.warmup, ox_runtime_version());
    FILE *f = jr ? NULL : fopen(o.json, "w");
    int werr = !f;
    if (f) {
      werr |= fwrite(b.data, 1, b.len, f) != b.len;
      werr |= fclose(f) != 0;
    }
    if (werr) {
      fprintf(stderr, "onnxd-img-limit: cannot write --json '%s'\n", o.json);
      rc = 1;
    }
    ox_buf_free(&b);
  }

  for (int i = 0; i < nt; i++) free(w[i].data);
  free(w);
  free(labels);
  free(label_block);
  free(image);
  ox_repo_close(repo);
  ox_runtime_shutdown();
  return rc;
}
