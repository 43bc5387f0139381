/* runtime_test.c: the ONNX Runtime adapter and model repository against real ORT sessions.
 *
 * Needs the test repository built by tools/make_test_models.py; its path comes from the
 * environment variable ONNXD_TEST_MODELS (the test runner generates it into build/test-models).
 * Nothing is generated here: without the variable every test fails with a message saying so.
 * Tests run in the order of TEST_MAIN and share one runtime and one opened repository; the
 * last test closes both so that LeakSanitizer checks everything the adapter allocated.
 */
#include "runtime/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "runtime/rt_priv.h"
#include "test.h"

static const char *models_dir;
static ox_repo_t *repo;

#define S(lit) OX_SLICE_LIT(lit)
#define NOVER ox_slice(NULL, 0)

/* ---- helpers --------------------------------------------------------------------------- */

static int have_repo(void) {
  if (repo) return 1;
  fprintf(stderr, "  FAIL %s: no repository (see test_open)\n", ox_t_current);
  ox_t_failed_checks++;
  return 0;
}

static ox_model_t *find(const char *name) {
  ox_model_t *m = NULL;
  int rc = ox_repo_find(repo, ox_slice(name, strlen(name)), NOVER, &m);
  CHECK_INT(rc, 0);
  if (rc) fprintf(stderr, "  model %s not found\n", name);
  return rc ? NULL : m;
}

/* stderr capture, to check what the repository scan logs. */
static int cap_saved = -1;
static FILE *cap_file;

static void capture_begin(void) {
  fflush(stderr);
  cap_file = tmpfile();
  cap_saved = dup(2);
  dup2(fileno(cap_file), 2);
}

static char *capture_end(void) {
  fflush(stderr);
  dup2(cap_saved, 2);
  close(cap_saved);
  long n = ftell(cap_file);
  char *s = calloc(1, n > 0 ? (size_t)n + 1 : 1);
  rewind(cap_file);
  if (n > 0 && fread(s, 1, (size_t)n, cap_file) != (size_t)n) s[0] = '\0';
  fclose(cap_file);
  fputs(s, stderr); /* still show it */
  return s;
}

/* The log line that mentions needle, or NULL. */
static const char *line_with(const char *log, const char *needle, char *buf, size_t cap) {
  const char *p = strstr(log, needle);
  if (!p) return NULL;
  const char *b = p, *e = p;
  while (b > log && b[-1] != '\n') b--;
  while (*e && *e != '\n') e++;
  size_t n = (size_t)(e - b) < cap - 1 ? (size_t)(e - b) : cap - 1;
  memcpy(buf, b, n);
  buf[n] = '\0';
  return buf;
}

static int copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
  char buf[65536];
  size_t n;
  int ok = in && out;
  while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
  if (in) fclose(in);
  if (out && fclose(out) != 0) ok = 0;
  return ok ? 0 : -1;
}

static void path_join(char *dst, size_t cap, const char *a, const char *b) {
  int n = snprintf(dst, cap, "%s/%s", a, b);
  if (n < 0 || (size_t)n >= cap) {
    fprintf(stderr, "path too long: %s/%s\n", a, b);
    abort();
  }
}

/* rm -rf for the small trees the tests make (does not follow symlinks). */
static void rm_tree(const char *path) {
  char cmd[PATH_MAX + 32];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) fprintf(stderr, "  (could not remove %s)\n", path);
}

static void fill_bytes(void *p, size_t n, unsigned seed) {
  unsigned char *b = p;
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    b[i] = (unsigned char)(seed >> 16);
  }
}

/* ---- setup ----------------------------------------------------------------------------- */

TEST(test_init) {
  char err[256] = "";
  ox_runtime_opts_t o = {2, 1, 0};
  CHECK_INT(ox_runtime_init(&o, err, sizeof err), 0);
  CHECK_STR(err, "");
  CHECK_INT(ox_runtime_init(&o, err, sizeof err), OX_EINVALID); /* only once */
  const char *v = ox_runtime_version();
  CHECK(v && v[0] >= '1' && v[0] <= '9' && strchr(v, '.'));
  CHECK(ox_runtime_header_api() >= 1);
}

TEST(test_open) {
  models_dir = getenv("ONNXD_TEST_MODELS");
  if (!models_dir || !*models_dir) {
    fprintf(stderr,
            "  FAIL: ONNXD_TEST_MODELS is not set. Generate the test repository with\n"
            "    .venv/bin/python tools/make_test_models.py build/test-models\n"
            "  and run with ONNXD_TEST_MODELS=build/test-models (make test does both).\n");
    ox_t_failed_checks++;
    return;
  }
  char err[256] = "";
  capture_begin();
  int rc = ox_repo_open(models_dir, &repo, err, sizeof err);
  char *log = capture_end();
  CHECK_INT(rc, 0);
  if (rc) {
    fprintf(stderr, "  cannot open %s: %s\n", models_dir, err);
    free(log);
    return;
  }
  /* Loaded models, sorted; the broken ones left out with a reason and no path. */
  static const char *const want[] = {
      "add_sub_fp32",    "add_sub_int32",  "fixed_fp32",    "identity_bf16",    "identity_bool",
      "identity_bytes",  "identity_fp16",  "identity_fp32", "identity_fp64",    "identity_int16",
      "identity_int32",  "identity_int64", "identity_int8", "identity_uint16",  "identity_uint32",
      "identity_uint64", "identity_uint8", "mlp16_alt",     "passthrough_fp32", "scalar_fp32",
      "versioned"};
  size_t nwant = sizeof want / sizeof want[0];
  CHECK_INT(ox_repo_num_models(repo), nwant);
  for (size_t i = 0; i < nwant && i < ox_repo_num_models(repo); i++)
    CHECK_STR(ox_repo_model_name(repo, i), want[i]);
  CHECK(ox_repo_model_name(repo, nwant) == NULL);

  char line[1024];
  CHECK(line_with(log, "model 'broken' version 1 not loaded", line, sizeof line));
  CHECK(line_with(log,
                  "model 'broken_type' version 1 not loaded: input 'f8' has unsupported "
                  "type float8e4m3fn",
                  line, sizeof line));
  CHECK(line_with(log,
                  "model 'broken_seq' version 1 not loaded: input 's' is a sequence, not "
                  "a tensor",
                  line, sizeof line));
  char real[PATH_MAX];
  CHECK(realpath(models_dir, real) != NULL);
  CHECK(strstr(log, real) == NULL); /* no paths in what is logged at warn */
  CHECK(strstr(log, "model.onnx") == NULL || strstr(log, "/model.onnx") == NULL);
  free(log);
}

/* ---- repository ------------------------------------------------------------------------ */

TEST(test_versions) {
  if (!have_repo()) return;
  int64_t v[4] = {0};
  CHECK_INT(ox_repo_versions(repo, S("versioned"), v, 4), 2);
  CHECK_INT(v[0], 1);
  CHECK_INT(v[1], 3);
  int64_t one[1] = {0};
  CHECK_INT(ox_repo_versions(repo, S("versioned"), one, 1), 2); /* count even if truncated */
  CHECK_INT(one[0], 1);
  CHECK_INT(ox_repo_versions(repo, S("identity_fp32"), v, 4), 1);
  CHECK_INT(ox_repo_versions(repo, S("nope"), v, 4), 0);
  CHECK_INT(ox_repo_versions(repo, S("broken"), v, 4), 0);
}

TEST(test_find) {
  if (!have_repo()) return;
  ox_model_t *m = NULL;
  CHECK_INT(ox_repo_find(repo, S("versioned"), NOVER, &m), 0);
  CHECK(m && m->version == 3);
  CHECK_INT(ox_repo_find(repo, S("versioned"), S("1"), &m), 0);
  CHECK(m && m->version == 1 && strcmp(m->name, "versioned") == 0);
  CHECK_INT(ox_repo_find(repo, S("versioned"), S("3"), &m), 0);
  CHECK(m && m->version == 3);
  static const char *const bad[] = {"2",
                                    "0",
                                    "01",
                                    "-1",
                                    "+1",
                                    "x",
                                    "1 ",
                                    " 1",
                                    "1.0",
                                    "3x",
                                    "9223372036854775808",
                                    "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    m = (ox_model_t *)1;
    int rc = ox_repo_find(repo, S("versioned"), ox_slice(bad[i], strlen(bad[i])), &m);
    CHECK_INT(rc, OX_ENOT_FOUND);
    CHECK(m == NULL);
    if (rc != OX_ENOT_FOUND) fprintf(stderr, "  version '%s' accepted\n", bad[i]);
  }
  CHECK_INT(ox_repo_find(repo, S("versioned"), S("9223372036854775807"), &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(repo, S("nope"), NOVER, &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(repo, S("broken"), NOVER, &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(repo, S("broken"), S("1"), &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(repo, NOVER, NOVER, &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(repo, S("identity_fp3"), NOVER, &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(repo, S("identity_fp322"), NOVER, &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(repo, ox_slice("identity_fp32\0", 14), NOVER, &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(repo, S("../identity_fp32"), NOVER, &m), OX_ENOT_FOUND);
  /* First and last names (binary search edges). */
  CHECK_INT(ox_repo_find(repo, S("add_sub_fp32"), NOVER, &m), 0);
  CHECK_INT(ox_repo_find(repo, S("versioned"), NOVER, &m), 0);
}

/* ---- metadata -------------------------------------------------------------------------- */

static const struct {
  const char *model;
  ox_dtype_t dt;
} identities[] = {
    {"identity_bool", OX_DT_BOOL},     {"identity_uint8", OX_DT_UINT8},
    {"identity_uint16", OX_DT_UINT16}, {"identity_uint32", OX_DT_UINT32},
    {"identity_uint64", OX_DT_UINT64}, {"identity_int8", OX_DT_INT8},
    {"identity_int16", OX_DT_INT16},   {"identity_int32", OX_DT_INT32},
    {"identity_int64", OX_DT_INT64},   {"identity_fp16", OX_DT_FP16},
    {"identity_bf16", OX_DT_BF16},     {"identity_fp32", OX_DT_FP32},
    {"identity_fp64", OX_DT_FP64},     {"identity_bytes", OX_DT_BYTES},
};
#define NIDENT (sizeof identities / sizeof identities[0])

TEST(test_metadata) {
  if (!have_repo()) return;
  CHECK_INT(NIDENT, OX_DT_COUNT_ - 1); /* every datatype has its identity model */
  for (size_t i = 0; i < NIDENT; i++) {
    ox_model_t *m = find(identities[i].model);
    if (!m) continue;
    CHECK_INT(m->version, 1);
    CHECK_INT(m->num_inputs, 1);
    CHECK_INT(m->num_outputs, 1);
    CHECK_STR(m->inputs[0].name, "INPUT0");
    CHECK_STR(m->outputs[0].name, "OUTPUT0");
    CHECK_INT(m->inputs[0].dtype, identities[i].dt);
    CHECK_INT(m->outputs[0].dtype, identities[i].dt);
    CHECK_INT(m->inputs[0].rank, 2);
    CHECK_INT(m->inputs[0].dims[0], -1); /* symbolic "N" */
    CHECK_INT(m->inputs[0].dims[1], -1); /* no value at all */
  }
  ox_model_t *m = find("add_sub_fp32");
  if (m) {
    CHECK_INT(m->num_inputs, 2);
    CHECK_INT(m->num_outputs, 2);
    CHECK_STR(m->inputs[1].name, "INPUT1");
    CHECK_STR(m->outputs[1].name, "OUTPUT1");
    CHECK_INT(m->inputs[0].dtype, OX_DT_FP32);
    CHECK_INT(m->inputs[0].rank, 2);
    CHECK_INT(m->inputs[0].dims[0], 1);
    CHECK_INT(m->inputs[0].dims[1], 16);
    CHECK_INT(m->outputs[1].dims[1], 16);
  }
  if ((m = find("add_sub_int32"))) CHECK_INT(m->outputs[0].dtype, OX_DT_INT32);
  if ((m = find("fixed_fp32"))) {
    CHECK_STR(m->inputs[0].name, "x");
    CHECK_INT(m->inputs[0].rank, 2);
    CHECK_INT(m->inputs[0].dims[0], 2);
    CHECK_INT(m->inputs[0].dims[1], 3);
  }
  if ((m = find("versioned"))) {
    CHECK_INT(m->inputs[0].rank, 1);
    CHECK_INT(m->inputs[0].dims[0], -1);
  }
  /* A real scalar has rank 0; a tensor declared without any shape has rank -1. */
  if ((m = find("scalar_fp32"))) {
    CHECK_INT(m->num_inputs, 2);
    CHECK_STR(m->inputs[0].name, "x");
    CHECK_INT(m->inputs[0].rank, 0);
    CHECK_STR(m->inputs[1].name, "u");
    CHECK_INT(m->inputs[1].rank, -1);
    CHECK_INT(m->outputs[0].rank, -1);
  }
}

/* ---- runs ------------------------------------------------------------------------------ */

/* Runs a one-input identity model on shape [rows, 3] and checks the output bit for bit. */
static void check_identity(const char *model, ox_dtype_t dt, int64_t rows) {
  ox_model_t *m = find(model);
  if (!m) return;
  int64_t shape[2] = {rows, 3};
  uint64_t count = (uint64_t)rows * 3;
  size_t nbytes = (size_t)count * ox_dtype_size(dt);
  void *data = malloc(nbytes ? nbytes : 1);
  fill_bytes(data, nbytes, (unsigned)dt * 7u + (unsigned)rows);
  if (dt == OX_DT_BOOL)
    for (size_t i = 0; i < nbytes; i++) ((unsigned char *)data)[i] &= 1;
  ox_tensor_in_t in = {
      .dtype = dt, .rank = 2, .shape = shape, .data = data, .nbytes = nbytes, .count = count};
  size_t idx = 0;
  ox_tensor_out_t out;
  char err[256] = "";
  int rc = ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err);
  CHECK_INT(rc, 0);
  if (rc) {
    fprintf(stderr, "  %s: %s\n", model, err);
  } else {
    CHECK_INT(out.dtype, dt);
    CHECK_INT(out.rank, 2);
    CHECK_INT(out.shape[0], rows);
    CHECK_INT(out.shape[1], 3);
    CHECK_INT(out.count, count);
    CHECK_INT(out.nbytes, nbytes);
    CHECK(out.data != NULL);
    CHECK(out.data != data); /* never the caller's buffer */
    if (out.data && nbytes) CHECK_MEM(out.data, data, nbytes);
    CHECK(out.strings == NULL);
  }
  free(data);
  /* The input buffer is gone; the output must still be readable (ASan would tell). */
  if (!rc && nbytes) {
    volatile unsigned char sink = ((const unsigned char *)out.data)[nbytes - 1];
    (void)sink;
  }
  ox_tensor_out_release(&out);
  CHECK(out.value_ == NULL && out.data == NULL);
}

TEST(test_identity_all_dtypes) {
  if (!have_repo()) return;
  for (size_t i = 0; i < NIDENT; i++) {
    if (identities[i].dt == OX_DT_BYTES) continue;
    check_identity(identities[i].model, identities[i].dt, 2);
    check_identity(identities[i].model, identities[i].dt, 1000);
  }
}

TEST(test_identity_zero_elements) {
  if (!have_repo()) return;
  for (size_t i = 0; i < NIDENT; i++) {
    if (identities[i].dt != OX_DT_BYTES) check_identity(identities[i].model, identities[i].dt, 0);
  }
}

static void check_bytes(const ox_slice_t *strs, int64_t rows, int64_t cols) {
  ox_model_t *m = find("identity_bytes");
  if (!m) return;
  int64_t shape[2] = {rows, cols};
  uint64_t count = (uint64_t)(rows * cols);
  ox_tensor_in_t in = {
      .dtype = OX_DT_BYTES, .rank = 2, .shape = shape, .strings = strs, .count = count};
  size_t idx = 0;
  ox_tensor_out_t out;
  char err[256] = "";
  int rc = ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err);
  CHECK_INT(rc, 0);
  if (rc) {
    fprintf(stderr, "  identity_bytes: %s\n", err);
    return;
  }
  CHECK_INT(out.dtype, OX_DT_BYTES);
  CHECK_INT(out.rank, 2);
  CHECK_INT(out.shape[0], rows);
  CHECK_INT(out.shape[1], cols);
  CHECK_INT(out.count, count);
  CHECK(out.strings != NULL);
  for (uint64_t i = 0; i < count && out.strings; i++) {
    CHECK_INT(out.strings[i].len, strs[i].len);
    if (out.strings[i].len == strs[i].len && strs[i].len)
      CHECK_MEM(out.strings[i].ptr, strs[i].ptr, strs[i].len);
  }
  ox_tensor_out_release(&out);
  CHECK(out.strings == NULL && out.strblock_ == NULL);
}

TEST(test_identity_bytes) {
  if (!have_repo()) return;
  static char big[5000];
  memset(big, 'z', sizeof big);
  big[17] = '\0';
  const ox_slice_t strs[6] = {
      S("hello"),
      S(""),
      ox_slice("a\0b", 3),
      ox_slice(big, sizeof big),
      S("\xc3\xa9t\xc3\xa9"),
      ox_slice("\0", 1),
  };
  check_bytes(strs, 2, 3);
  check_bytes(strs, 6, 1);
  const ox_slice_t empties[2] = {S(""), S("")};
  check_bytes(empties, 1, 2);
  check_bytes(strs, 0, 3); /* zero elements */
}

static void fill_add_sub(float *a, float *b, int seed) {
  for (int i = 0; i < 16; i++) {
    a[i] = (float)(seed * 100 + i);
    b[i] = (float)(seed - 2 * i) * 0.5f;
  }
}

TEST(test_add_sub) {
  if (!have_repo()) return;
  ox_model_t *m = find("add_sub_fp32");
  if (m) {
    float a[16], b[16];
    fill_add_sub(a, b, 3);
    int64_t shape[2] = {1, 16};
    ox_tensor_in_t in[2] = {
        {.dtype = OX_DT_FP32,
         .rank = 2,
         .shape = shape,
         .data = a,
         .nbytes = sizeof a,
         .count = 16},
        {.dtype = OX_DT_FP32,
         .rank = 2,
         .shape = shape,
         .data = b,
         .nbytes = sizeof b,
         .count = 16},
    };
    size_t idx[2] = {0, 1};
    ox_tensor_out_t out[2];
    char err[256] = "";
    CHECK_INT(ox_model_run(m, in, idx, 2, out, NULL, err, sizeof err), 0);
    CHECK_INT(out[0].count, 16);
    CHECK_INT(out[1].nbytes, 64);
    const float *sum = out[0].data, *diff = out[1].data;
    for (int i = 0; i < 16 && sum && diff; i++) {
      CHECK(sum[i] == a[i] + b[i]);
      CHECK(diff[i] == a[i] - b[i]);
    }
    ox_tensor_out_release(&out[0]);
    ox_tensor_out_release(&out[1]);
  }
  if ((m = find("add_sub_int32"))) {
    int32_t a[16], b[16];
    for (int i = 0; i < 16; i++) {
      a[i] = i * 1000 - 7;
      b[i] = -3 * i + 1;
    }
    int64_t shape[2] = {1, 16};
    ox_tensor_in_t in[2] = {
        {.dtype = OX_DT_INT32,
         .rank = 2,
         .shape = shape,
         .data = a,
         .nbytes = sizeof a,
         .count = 16},
        {.dtype = OX_DT_INT32,
         .rank = 2,
         .shape = shape,
         .data = b,
         .nbytes = sizeof b,
         .count = 16},
    };
    size_t idx[2] = {0, 1};
    ox_tensor_out_t out[2];
    char err[256] = "";
    CHECK_INT(ox_model_run(m, in, idx, 2, out, NULL, err, sizeof err), 0);
    const int32_t *sum = out[0].data, *diff = out[1].data;
    for (int i = 0; i < 16 && sum && diff; i++) {
      CHECK_INT(sum[i], a[i] + b[i]);
      CHECK_INT(diff[i], a[i] - b[i]);
    }
    ox_tensor_out_release(&out[0]);
    ox_tensor_out_release(&out[1]);
  }
}

TEST(test_output_subset) {
  if (!have_repo()) return;
  ox_model_t *m = find("add_sub_fp32");
  if (!m) return;
  float a[16], b[16];
  fill_add_sub(a, b, 5);
  int64_t shape[2] = {1, 16};
  ox_tensor_in_t in[2] = {
      {.dtype = OX_DT_FP32, .rank = 2, .shape = shape, .data = a, .nbytes = sizeof a, .count = 16},
      {.dtype = OX_DT_FP32, .rank = 2, .shape = shape, .data = b, .nbytes = sizeof b, .count = 16},
  };
  char err[256] = "";
  size_t only1 = 1;
  ox_tensor_out_t out[2];
  CHECK_INT(ox_model_run(m, in, &only1, 1, out, NULL, err, sizeof err), 0);
  const float *d = out[0].data;
  for (int i = 0; i < 16 && d; i++) CHECK(d[i] == a[i] - b[i]);
  ox_tensor_out_release(&out[0]);

  size_t rev[2] = {1, 0}; /* outputs come back in the order asked for */
  CHECK_INT(ox_model_run(m, in, rev, 2, out, NULL, err, sizeof err), 0);
  const float *d0 = out[0].data, *s1 = out[1].data;
  for (int i = 0; i < 16 && d0 && s1; i++) {
    CHECK(d0[i] == a[i] - b[i]);
    CHECK(s1[i] == a[i] + b[i]);
  }
  ox_tensor_out_release(&out[0]);
  ox_tensor_out_release(&out[1]);
}

TEST(test_versioned_run) {
  if (!have_repo()) return;
  for (int64_t v = 1; v <= 3; v += 2) {
    ox_model_t *m = NULL;
    char vs[4];
    snprintf(vs, sizeof vs, "%d", (int)v);
    CHECK_INT(ox_repo_find(repo, S("versioned"), ox_slice(vs, strlen(vs)), &m), 0);
    if (!m) continue;
    float x[5] = {0, 1, 2, 3, -4};
    int64_t shape[1] = {5};
    ox_tensor_in_t in = {
        .dtype = OX_DT_FP32, .rank = 1, .shape = shape, .data = x, .nbytes = sizeof x, .count = 5};
    size_t idx = 0;
    ox_tensor_out_t out;
    char err[256] = "";
    CHECK_INT(ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err), 0);
    const float *y = out.data;
    for (int i = 0; i < 5 && y; i++) CHECK(y[i] == x[i] + (float)v);
    ox_tensor_out_release(&out);
  }
}

/* ORT returns a graph input that is also a graph output in the caller's own buffer; the
 * adapter must copy it, since input buffers are only valid until ox_model_run returns. */
TEST(test_passthrough_copied) {
  if (!have_repo()) return;
  ox_model_t *m = find("passthrough_fp32");
  if (!m) return;
  CHECK_INT(m->num_outputs, 2);
  CHECK_STR(m->outputs[1].name, "INPUT0");
  float *x = malloc(4 * sizeof *x);
  for (int i = 0; i < 4; i++) x[i] = (float)i + 0.5f;
  int64_t shape[1] = {4};
  ox_tensor_in_t in = {.dtype = OX_DT_FP32,
                       .rank = 1,
                       .shape = shape,
                       .data = x,
                       .nbytes = 4 * sizeof *x,
                       .count = 4};
  size_t idx[2] = {0, 1};
  ox_tensor_out_t out[2];
  char err[256] = "";
  CHECK_INT(ox_model_run(m, &in, idx, 2, out, NULL, err, sizeof err), 0);
  CHECK(out[1].data != x);
  CHECK_INT(out[1].nbytes, 16);
  float want[4];
  memcpy(want, x, sizeof want);
  free(x); /* the caller's buffer is gone; ASan checks that the output does not point there */
  for (int i = 0; i < 2; i++)
    if (out[i].data) CHECK_MEM(out[i].data, want, sizeof want);
  ox_tensor_out_release(&out[0]);
  ox_tensor_out_release(&out[1]);
}

typedef struct {
  ox_model_t *m;
  int seed;
  int runs;
  int failures;
} worker_t;

static void *worker_main(void *arg) {
  worker_t *w = arg;
  for (int r = 0; r < w->runs; r++) {
    float a[16], b[16];
    fill_add_sub(a, b, w->seed * 1000 + r);
    int64_t shape[2] = {1, 16};
    ox_tensor_in_t in[2] = {
        {.dtype = OX_DT_FP32,
         .rank = 2,
         .shape = shape,
         .data = a,
         .nbytes = sizeof a,
         .count = 16},
        {.dtype = OX_DT_FP32,
         .rank = 2,
         .shape = shape,
         .data = b,
         .nbytes = sizeof b,
         .count = 16},
    };
    size_t idx[2] = {0, 1};
    ox_tensor_out_t out[2];
    char err[256];
    if (ox_model_run(w->m, in, idx, 2, out, NULL, err, sizeof err) != 0) {
      w->failures++;
      continue;
    }
    const float *s = out[0].data, *d = out[1].data;
    for (int i = 0; i < 16; i++)
      if (s[i] != a[i] + b[i] || d[i] != a[i] - b[i]) {
        w->failures++;
        break;
      }
    ox_tensor_out_release(&out[0]);
    ox_tensor_out_release(&out[1]);
  }
  return NULL;
}

TEST(test_concurrent_runs) {
  if (!have_repo()) return;
  ox_model_t *m = find("add_sub_fp32");
  if (!m) return;
  enum { NT = 4 };
  pthread_t t[NT];
  worker_t w[NT];
  for (int i = 0; i < NT; i++) {
    w[i] = (worker_t){m, i + 1, 300, 0};
    CHECK_INT(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
  }
  for (int i = 0; i < NT; i++) {
    pthread_join(t[i], NULL);
    CHECK_INT(w[i].failures, 0);
  }
}

/* ---- errors ---------------------------------------------------------------------------- */

TEST(test_ort_rejects) {
  if (!have_repo()) return;
  ox_model_t *m = find("fixed_fp32");
  if (!m) return;
  float x[6] = {1, 2, 3, 4, 5, 6};
  size_t idx = 0;
  char err[256] = "";
  ox_tensor_out_t out;

  int64_t rank1[1] = {6}; /* wrong rank: the caller's validation bypassed */
  ox_tensor_in_t in = {
      .dtype = OX_DT_FP32, .rank = 1, .shape = rank1, .data = x, .nbytes = sizeof x, .count = 6};
  int rc = ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err);
  CHECK_INT(rc, OX_EINVALID);
  CHECK(err[0] != '\0');
  CHECK(err[0] != '/' && strstr(err, " /") == NULL && strchr(err, '\n') == NULL); /* no paths */
  CHECK(out.value_ == NULL && out.data == NULL && out.strblock_ == NULL);
  fprintf(stderr, "  (ORT said: %s)\n", err);

  int64_t swapped[2] = {3, 2}; /* right rank, wrong fixed dimensions */
  in.rank = 2;
  in.shape = swapped;
  err[0] = '\0';
  CHECK_INT(ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err), OX_EINVALID);
  CHECK(err[0] != '\0');

  int64_t ok[2] = {2, 3}; /* too few bytes for the shape */
  in.shape = ok;
  in.nbytes = sizeof x - 4;
  err[0] = '\0';
  CHECK(ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err) != 0);
  CHECK(err[0] != '\0');

  /* Argument checks of our own. */
  in.nbytes = sizeof x;
  CHECK_INT(ox_model_run(m, &in, &idx, 0, &out, NULL, err, sizeof err), OX_EINVALID);
  size_t bad_idx = 1;
  CHECK_INT(ox_model_run(m, &in, &bad_idx, 1, &out, NULL, err, sizeof err), OX_EINVALID);
  in.dtype = OX_DT_FP64;
  CHECK_INT(ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err), OX_EINVALID);
  in.dtype = OX_DT_FP32;
  in.rank = OX_RT_MAX_RANK + 1;
  CHECK_INT(ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err), OX_EINVALID);

  /* And the model still works afterwards. */
  in.rank = 2;
  CHECK_INT(ox_model_run(m, &in, &idx, 1, &out, NULL, err, sizeof err), 0);
  const float *y = out.data;
  for (int i = 0; i < 6 && y; i++) CHECK(y[i] == 2 * x[i]);
  ox_tensor_out_release(&out);
}

TEST(test_terminate) {
  if (!have_repo()) return;
  ox_model_t *m = find("fixed_fp32");
  if (!m) return;
  float x[6] = {1, 2, 3, 4, 5, 6};
  int64_t shape[2] = {2, 3};
  ox_tensor_in_t in = {
      .dtype = OX_DT_FP32, .rank = 2, .shape = shape, .data = x, .nbytes = sizeof x, .count = 6};
  size_t idx = 0;
  ox_tensor_out_t out;
  char err[256] = "";
  ox_run_ctl_t *ctl = ox_run_ctl_create();
  CHECK(ctl != NULL);
  CHECK_INT(ox_model_run(m, &in, &idx, 1, &out, ctl, err, sizeof err), 0); /* not terminated */
  ox_tensor_out_release(&out);
  ox_run_ctl_terminate(ctl);
  ox_run_ctl_terminate(ctl); /* idempotent */
  CHECK_INT(ox_model_run(m, &in, &idx, 1, &out, ctl, err, sizeof err), OX_ERUNTIME);
  CHECK(err[0] != '\0');
  CHECK(out.value_ == NULL && out.data == NULL);
  fprintf(stderr, "  (terminated: %s)\n", err);
  ox_run_ctl_destroy(ctl);
  ox_run_ctl_destroy(NULL);
  ox_run_ctl_terminate(NULL);
  ox_tensor_out_release(NULL);
}

/* One round of every path that allocates ORT objects: good runs, runs ORT rejects, a run
 * terminated by its control, string tensors in and out. */
static int leak_round(ox_model_t *fixed, ox_model_t *bytes) {
  float x[6] = {1, 2, 3, 4, 5, 6};
  int64_t ok[2] = {2, 3}, bad[1] = {6};
  ox_tensor_in_t in = {
      .dtype = OX_DT_FP32, .rank = 2, .shape = ok, .data = x, .nbytes = sizeof x, .count = 6};
  size_t idx = 0;
  ox_tensor_out_t out;
  char err[256];
  int fails = 0;
  fails += ox_model_run(fixed, &in, &idx, 1, &out, NULL, err, sizeof err) != 0;
  ox_tensor_out_release(&out);
  in.rank = 1;
  in.shape = bad;
  fails += ox_model_run(fixed, &in, &idx, 1, &out, NULL, err, sizeof err) != OX_EINVALID;
  in.rank = 2;
  in.shape = ok;
  ox_run_ctl_t *ctl = ox_run_ctl_create();
  ox_run_ctl_terminate(ctl);
  fails += ox_model_run(fixed, &in, &idx, 1, &out, ctl, err, sizeof err) != OX_ERUNTIME;
  ox_run_ctl_destroy(ctl);
  const ox_slice_t strs[3] = {S("a long enough string to leave the SSO buffer"), S(""), S("x")};
  int64_t shape[2] = {1, 3};
  ox_tensor_in_t sin = {
      .dtype = OX_DT_BYTES, .rank = 2, .shape = shape, .strings = strs, .count = 3};
  fails += ox_model_run(bytes, &sin, &idx, 1, &out, NULL, err, sizeof err) != 0;
  ox_tensor_out_release(&out);
  return fails;
}

TEST(test_no_leaks) {
  if (!have_repo()) return;
  ox_model_t *fixed = find("fixed_fp32"), *bytes = find("identity_bytes");
  if (!fixed || !bytes) return;
  long live = ox_rt_live_objects(); /* the sessions */
  CHECK_INT(live, 22);
  int fails = 0;
  for (int i = 0; i < 500; i++) fails += leak_round(fixed, bytes);
  CHECK_INT(fails, 0);
  CHECK_INT(ox_rt_live_objects(), live);
  /* Outputs are live until released. */
  float x[6] = {0};
  int64_t ok[2] = {2, 3};
  ox_tensor_in_t in = {
      .dtype = OX_DT_FP32, .rank = 2, .shape = ok, .data = x, .nbytes = sizeof x, .count = 6};
  size_t idx = 0;
  ox_tensor_out_t out;
  char err[256];
  CHECK_INT(ox_model_run(fixed, &in, &idx, 1, &out, NULL, err, sizeof err), 0);
  CHECK_INT(ox_rt_live_objects(), live + 1);
  ox_tensor_out_release(&out);
  CHECK_INT(ox_rt_live_objects(), live);
}

TEST(test_repo_errors) {
  char err[256] = "";
  ox_repo_t *r = (ox_repo_t *)1;
  CHECK_INT(ox_repo_open("/nonexistent/onnxd-models", &r, err, sizeof err), -ENOENT);
  CHECK(r == NULL);
  CHECK(err[0] != '\0' && strchr(err, '\n') == NULL);
  err[0] = '\0';
  CHECK_INT(ox_repo_open("/etc/hostname", &r, err, sizeof err), -ENOTDIR);
  CHECK(strstr(err, "not a directory") != NULL);

  char dir[] = "/tmp/onnxd-rt-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  CHECK_INT(ox_repo_open(dir, &r, err, sizeof err), 0); /* empty repository: fine */
  CHECK_INT(ox_repo_num_models(r), 0);
  ox_model_t *m = (ox_model_t *)1;
  CHECK_INT(ox_repo_find(r, S("x"), NOVER, &m), OX_ENOT_FOUND);
  ox_repo_close(r);
  if (geteuid() != 0) { /* root reads anything */
    chmod(dir, 0);
    err[0] = '\0';
    CHECK_INT(ox_repo_open(dir, &r, err, sizeof err), -EACCES);
    CHECK(err[0] != '\0');
    chmod(dir, 0700);
  }
  rmdir(dir);
  ox_repo_close(NULL);
}

/* Builds a repository with every kind of entry the scan must refuse, next to an outside tree
 * that symlinks point into. */
TEST(test_repo_refusals) {
  if (!models_dir) {
    ox_t_failed_checks++;
    return;
  }
  char src[PATH_MAX], base[] = "/tmp/onnxd-rt-XXXXXX", r[PATH_MAX], o[PATH_MAX], p[PATH_MAX],
                      q[PATH_MAX];
  snprintf(src, sizeof src, "%s/identity_fp32/1/model.onnx", models_dir);
  CHECK(mkdtemp(base) != NULL);
  path_join(r, sizeof r, base, "repo");
  path_join(o, sizeof o, base, "outside");
  const char *dirs[] = {"repo",          "outside",         "outside/m",
                        "outside/m/1",   "repo/ok",         "repo/ok/1",
                        "repo/ok/2",     "repo/ok/01",      "repo/ok/0",
                        "repo/ok/abc",   "repo/escfile",    "repo/escfile/1",
                        "repo/bad name", "repo/bad name/1", "repo/fifo",
                        "repo/fifo/1",   "repo/empty",      "repo/empty/1",
                        "repo/dirfile",  "repo/dirfile/1",  "repo/dirfile/1/model.onnx"};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    path_join(p, sizeof p, base, dirs[i]);
    CHECK_INT(mkdir(p, 0755), 0);
  }
  const char *copies[] = {"outside/m/1/model.onnx", "repo/ok/1/model.onnx",
                          "repo/ok/2/model.onnx",   "repo/ok/01/model.onnx",
                          "repo/ok/0/model.onnx",   "repo/bad name/1/model.onnx"};
  for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++) {
    path_join(p, sizeof p, base, copies[i]);
    CHECK_INT(copy_file(src, p), 0);
  }
  path_join(p, sizeof p, r, "ok/config.json");
  CHECK_INT(copy_file("/etc/hostname", p), 0); /* extra files in a model dir are ignored */
  path_join(p, sizeof p, r, "README");
  CHECK_INT(copy_file("/etc/hostname", p), 0); /* and in the repository */
  /* A symlinked model directory leading out, a symlinked model file leading out, and a
   * symlinked model directory that stays inside (allowed). */
  path_join(p, sizeof p, o, "m");
  path_join(q, sizeof q, r, "esc");
  CHECK_INT(symlink(p, q), 0);
  path_join(p, sizeof p, o, "m/1/model.onnx");
  path_join(q, sizeof q, r, "escfile/1/model.onnx");
  CHECK_INT(symlink(p, q), 0);
  path_join(q, sizeof q, r, "alias");
  CHECK_INT(symlink("ok", q), 0);
  path_join(p, sizeof p, r, "fifo/1/model.onnx");
  CHECK_INT(mkfifo(p, 0644), 0);
  path_join(p, sizeof p, r, "empty/1/model.onnx");
  CHECK_INT(copy_file("/dev/null", p), 0);

  ox_repo_t *rp = NULL;
  char err[256] = "";
  capture_begin();
  int rc = ox_repo_open(r, &rp, err, sizeof err);
  char *log = capture_end();
  CHECK_INT(rc, 0);
  CHECK_INT(ox_repo_num_models(rp), 2);
  CHECK_STR(ox_repo_model_name(rp, 0), "alias");
  CHECK_STR(ox_repo_model_name(rp, 1), "ok");
  int64_t v[4] = {0};
  CHECK_INT(ox_repo_versions(rp, S("ok"), v, 4), 2);
  CHECK_INT(v[0], 1);
  CHECK_INT(v[1], 2);
  ox_model_t *m = NULL;
  CHECK_INT(ox_repo_find(rp, S("esc"), NOVER, &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(rp, S("escfile"), NOVER, &m), OX_ENOT_FOUND);
  CHECK_INT(ox_repo_find(rp, S("alias"), S("2"), &m), 0);
  char line[1024];
  CHECK(line_with(log, "model 'esc' version 1 not loaded: model.onnx is outside the repository",
                  line, sizeof line));
  CHECK(line_with(log,
                  "model 'escfile' version 1 not loaded: model.onnx is outside the "
                  "repository",
                  line, sizeof line));
  CHECK(line_with(log, "model 'fifo' version 1 not loaded: model.onnx is not a regular file", line,
                  sizeof line));
  CHECK(line_with(log, "model 'dirfile' version 1 not loaded: model.onnx is not a regular", line,
                  sizeof line));
  CHECK(line_with(log, "model 'empty' version 1 not loaded", line, sizeof line));
  CHECK(line_with(log, "directory 'bad name' skipped", line, sizeof line));
  CHECK(line_with(log, "directory '01' skipped", line, sizeof line));
  CHECK(line_with(log, "directory '0' skipped", line, sizeof line));
  CHECK(line_with(log, "directory 'abc' skipped", line, sizeof line));
  CHECK(strstr(log, "config.json") == NULL && strstr(log, "README") == NULL);
  CHECK(strstr(log, base) == NULL); /* no paths */
  free(log);
  ox_repo_close(rp);
  rm_tree(base);
}

/* Single-model mode: ox_repo_layout tells the layouts apart, ox_repo_open_single serves one
 * model's own directory (bare model.onnx as version 1, or version directories) under a given
 * name, with the same refusals as a repository. */
TEST(test_repo_single) {
  if (!models_dir) {
    ox_t_failed_checks++;
    return;
  }
  char src[PATH_MAX], base[] = "/tmp/onnxd-rt-XXXXXX", p[PATH_MAX], q[PATH_MAX];
  snprintf(src, sizeof src, "%s/identity_fp32/1/model.onnx", models_dir);
  CHECK(mkdtemp(base) != NULL);
  const char *dirs[] = {"bare",  "bare/warmup", "vers",     "vers/2", "vers/5", "vers/abc",
                        "repo",  "repo/m",      "repo/m/1", "num",    "num/7",  "num/7/1",
                        "empty", "both",        "both/1",   "esc",    "cfgonly"};
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
    path_join(p, sizeof p, base, dirs[i]);
    CHECK_INT(mkdir(p, 0755), 0);
  }
  const char *copies[] = {"bare/model.onnx",     "vers/2/model.onnx",  "vers/5/model.onnx",
                          "repo/m/1/model.onnx", "num/7/1/model.onnx", "both/model.onnx",
                          "both/1/model.onnx",   "model.onnx"};
  for (size_t i = 0; i < sizeof copies / sizeof copies[0]; i++) {
    path_join(p, sizeof p, base, copies[i]);
    CHECK_INT(copy_file(src, p), 0);
  }
  path_join(p, sizeof p, base, "bare/config.json");
  CHECK_INT(copy_file("/etc/hostname", p), 0);
  path_join(p, sizeof p, base, "cfgonly/config.json");
  CHECK_INT(copy_file("/etc/hostname", p), 0);
  path_join(p, sizeof p, base, "model.onnx"); /* outside esc/ */
  path_join(q, sizeof q, base, "esc/model.onnx");
  CHECK_INT(symlink(p, q), 0);

  static const struct {
    const char *dir;
    ox_repo_layout_t want;
  } layouts[] = {
      {"bare", OX_REPO_BARE},      {"vers", OX_REPO_VERSIONS}, {"repo", OX_REPO_MODELS},
      {"num", OX_REPO_MODELS},     {"empty", OX_REPO_EMPTY},   {"cfgonly", OX_REPO_EMPTY},
      {"both", OX_REPO_AMBIGUOUS}, {"esc", OX_REPO_BARE},      {"nope", OX_REPO_EMPTY}};
  for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
    path_join(p, sizeof p, base, layouts[i].dir);
    ox_repo_layout_t got = ox_repo_layout(p);
    CHECK_INT(got, layouts[i].want);
    if (got != layouts[i].want) fprintf(stderr, "  layout of %s\n", layouts[i].dir);
  }

  ox_repo_t *rp = NULL;
  char err[256] = "";
  int64_t v[4] = {0}, *dv = NULL;
  size_t nd = 0;
  ox_model_t *m = NULL;
  path_join(p, sizeof p, base, "bare");
  CHECK_INT(ox_repo_open_single(p, "svc", &rp, err, sizeof err), 0);
  if (rp) {
    CHECK_STR(ox_repo_single(rp), "svc");
    CHECK_INT(ox_repo_num_models(rp), 1);
    CHECK_STR(ox_repo_model_name(rp, 0), "svc");
    CHECK_INT(ox_repo_versions(rp, S("svc"), v, 4), 1);
    CHECK_INT(v[0], 1);
    CHECK_INT(ox_repo_find(rp, S("svc"), S("1"), &m), 0);
    CHECK_INT(ox_repo_find(rp, S("identity_fp32"), NOVER, &m), OX_ENOT_FOUND);
    CHECK_INT(ox_repo_disk_versions(rp, "svc", &dv, &nd), 0);
    CHECK(nd == 1 && dv && dv[0] == 1);
    free(dv);
    CHECK_INT(ox_repo_disk_versions(rp, "warmup", &dv, &nd), OX_ENOT_FOUND);
    CHECK_INT(ox_repo_load_version(rp, "svc", 1, &m, err, sizeof err), 0);
    ox_repo_model_free(m);
    CHECK_INT(ox_repo_load_version(rp, "svc", 2, &m, err, sizeof err), OX_ENOT_FOUND);
    CHECK(strstr(err, "a bare model.onnx is version 1") != NULL);
    ox_repo_close(rp);
  }
  path_join(p, sizeof p, base, "vers");
  rp = NULL;
  CHECK_INT(ox_repo_open_single(p, "svc", &rp, err, sizeof err), 0);
  if (rp) {
    CHECK_INT(ox_repo_versions(rp, S("svc"), v, 4), 2);
    CHECK(v[0] == 2 && v[1] == 5);
    CHECK_INT(ox_repo_disk_versions(rp, "svc", &dv, &nd), 0);
    CHECK(nd == 2 && dv && dv[0] == 2 && dv[1] == 5);
    free(dv);
    ox_repo_close(rp);
  }
  /* A bare model.onnx that is a symlink out of the directory is refused like any other. */
  path_join(p, sizeof p, base, "esc");
  rp = NULL;
  capture_begin();
  CHECK_INT(ox_repo_open_single(p, "svc", &rp, err, sizeof err), 0);
  char *log = capture_end();
  char line[512];
  CHECK(line_with(log, "model 'svc' version 1 not loaded: model.onnx is outside the repository",
                  line, sizeof line));
  free(log);
  CHECK_INT(ox_repo_num_models(rp), 0);
  ox_repo_close(rp);
  /* Neither layout, both, or a bad name: refused, the message naming the directory. */
  const char *bad[] = {"empty", "cfgonly", "both", "repo"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    path_join(p, sizeof p, base, bad[i]);
    rp = (ox_repo_t *)1;
    err[0] = '\0';
    CHECK_INT(ox_repo_open_single(p, "svc", &rp, err, sizeof err), OX_EINVALID);
    CHECK(rp == NULL);
    CHECK(strstr(err, p) != NULL);
    CHECK(strstr(err, i == 2 ? "both a model.onnx and version directories" : "no model.onnx") !=
          NULL);
  }
  path_join(p, sizeof p, base, "bare");
  CHECK_INT(ox_repo_open_single(p, "a/b", &rp, err, sizeof err), OX_EINVALID);
  CHECK_INT(ox_repo_open_single(p, "..", &rp, err, sizeof err), OX_EINVALID);
  rm_tree(base);
}

TEST(test_sanitize) {
  char b[128];
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b, "Load model from /tmp/a b/model.onnx failed:x"),
            "Load model from <path> b/model.onnx failed:x");
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b,
                                   "Status Message: /onnxruntime_src/core/x.cc:123 void f() bad"),
            "Status Message: void f() bad");
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b, "path '/etc/passwd' and\nnext line\r\n"),
            "path '<path>' and next line");
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b, "a/b 1/2 N/A"), "a/b 1/2 N/A");
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b, "Error: tensorprotoutils.cc:434 Validate x"),
            "Error: Validate x");
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b, "at a.h:12 b.cc:x c:1 d.onnx:2"),
            "at b.cc:x c:1 d.onnx:2");
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b, "/x"), "<path>");
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b, "(/x/y.onnx)"), "(<path>");
  CHECK_STR(ox_rt_sanitize_message(b, 5, "abcdefgh"), "abcd");
  CHECK_STR(ox_rt_sanitize_message(b, sizeof b, NULL), "");
}

TEST(test_shutdown) {
  ox_repo_close(repo);
  repo = NULL;
  ox_runtime_shutdown();
  ox_runtime_shutdown(); /* idempotent */
  char err[64];
  ox_repo_t *r = (ox_repo_t *)1;
  CHECK_INT(ox_repo_open("/tmp", &r, err, sizeof err), OX_ERUNTIME); /* not initialized */
  CHECK(r == NULL);
  CHECK_INT(ox_rt_live_objects(), 0); /* every session, value and run control released */
}

TEST(test_version_api) {
  CHECK_INT(ox_ort_version_api("1.30.0"), 30);
  CHECK_INT(ox_ort_version_api("1.21"), 21);
  CHECK_INT(ox_ort_version_api("1.9.1-dev"), 9);
  CHECK_INT(ox_ort_version_api("1.22+abc"), 22);
  CHECK_INT(ox_ort_version_api("2.0.0"), -1);
  CHECK_INT(ox_ort_version_api("1."), -1);
  CHECK_INT(ox_ort_version_api("1.x"), -1);
  CHECK_INT(ox_ort_version_api("1.30a"), -1);
  CHECK_INT(ox_ort_version_api("1.1234567"), -1);
  CHECK_INT(ox_ort_version_api(""), -1);
  CHECK_INT(ox_ort_version_api(NULL), -1);
  /* The library this test runs with passes the rule ox_runtime_init applies. */
  CHECK(ox_ort_version_api(ox_runtime_version()) >= ox_runtime_header_api());
}

TEST_MAIN(T(test_init), T(test_open), T(test_versions), T(test_find), T(test_metadata),
          T(test_identity_all_dtypes), T(test_identity_zero_elements), T(test_identity_bytes),
          T(test_add_sub), T(test_output_subset), T(test_versioned_run), T(test_passthrough_copied),
          T(test_concurrent_runs), T(test_ort_rejects), T(test_terminate), T(test_no_leaks),
          T(test_repo_errors), T(test_repo_refusals), T(test_repo_single), T(test_sanitize),
          T(test_version_api), T(test_shutdown))
