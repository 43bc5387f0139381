/* model_config_test.c: a model's config.json (infer/model_config.h) without ONNX Runtime.
 *
 * ox_model_config_load only looks at a model's name and at its inputs' and outputs' ranks and
 * dimensions, so the models here are ox_model_t structs built by hand. Every test writes its
 * config.json into DIR/<model>/ of one temporary repository (removed at the end), loads it and
 * checks the effective settings, or the exact one-line error, which must name the key.
 * ox_model_config_json is checked byte for byte (GET /v2/models/{m}/config serves it).
 */
#include "infer/model_config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "test.h"

/* ---- fixtures --------------------------------------------------------------------------- */

static char repo_dir[] = "/tmp/onnxd-mcfg-XXXXXX";
static int repo_ok;

#define T2(n, d0, d1)                                                          \
  {                                                                            \
    .name = (char *)(n), .dtype = OX_DT_FP32, .rank = 2, .dims = {(d0), (d1) } \
  }

/* Batchable: every input and output has a dynamic first dimension. */
static ox_tensor_info_t bm_in[] = {T2("input", -1, 4), T2("mask", -1, -1)};
static ox_tensor_info_t bm_out[] = {T2("output", -1, 1)};
static ox_model_t bm = {.name = "bm",
                        .version = 1,
                        .inputs = bm_in,
                        .num_inputs = 2,
                        .outputs = bm_out,
                        .num_outputs = 1};
/* Fixed shapes. */
static ox_tensor_info_t fm_in[] = {T2("x", 2, 3)};
static ox_tensor_info_t fm_out[] = {T2("y", 2, 3)};
static ox_model_t fm = {.name = "fm",
                        .version = 1,
                        .inputs = fm_in,
                        .num_inputs = 1,
                        .outputs = fm_out,
                        .num_outputs = 1};
/* Dynamic input, fixed output first dimension. */
static ox_tensor_info_t om_in[] = {T2("x", -1, 3)};
static ox_tensor_info_t om_out[] = {T2("y", 1, 3)};
static ox_model_t om = {.name = "om",
                        .version = 1,
                        .inputs = om_in,
                        .num_inputs = 1,
                        .outputs = om_out,
                        .num_outputs = 1};
/* Second input fixed in dimension 0. */
static ox_tensor_info_t sm_in[] = {T2("a", -1, 3), T2("b", 1, 3)};
static ox_tensor_info_t sm_out[] = {T2("y", -1, 3)};
static ox_model_t sm = {.name = "sm",
                        .version = 1,
                        .inputs = sm_in,
                        .num_inputs = 2,
                        .outputs = sm_out,
                        .num_outputs = 1};
/* A rank-0 input and one of unknown rank. */
static ox_tensor_info_t rm_in[] = {{.name = "s", .dtype = OX_DT_FP32, .rank = 0}};
static ox_tensor_info_t rm_out[] = {T2("y", -1, 3)};
static ox_model_t rm = {.name = "rm",
                        .version = 1,
                        .inputs = rm_in,
                        .num_inputs = 1,
                        .outputs = rm_out,
                        .num_outputs = 1};
static ox_tensor_info_t um_in[] = {{.name = "u", .dtype = OX_DT_FP32, .rank = -1}};
static ox_model_t um = {.name = "um",
                        .version = 1,
                        .inputs = um_in,
                        .num_inputs = 1,
                        .outputs = rm_out,
                        .num_outputs = 1};
/* No inputs at all (a constant model). */
static ox_model_t nm = {.name = "nm",
                        .version = 1,
                        .inputs = NULL,
                        .num_inputs = 0,
                        .outputs = bm_out,
                        .num_outputs = 1};

static int setup_repo(void) {
  if (repo_ok) return 1;
  if (!mkdtemp(repo_dir)) {
    fprintf(stderr, "  FAIL [%s]: mkdtemp: %s\n", ox_t_current, strerror(errno));
    ox_t_failed_checks++;
    return 0;
  }
  const char *names[] = {"bm", "fm", "om", "sm", "rm", "um", "nm"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", repo_dir, names[i]);
    if (mkdir(p, 0755)) {
      fprintf(stderr, "  FAIL [%s]: mkdir %s: %s\n", ox_t_current, p, strerror(errno));
      ox_t_failed_checks++;
      return 0;
    }
  }
  repo_ok = 1;
  return 1;
}

static void cfg_path(const ox_model_t *m, char *p, size_t cap) {
  snprintf(p, cap, "%s/%s/config.json", repo_dir, m->name);
}

/* Writes (len bytes of) text as m's config.json; NULL removes the file. */
static void write_cfg_n(const ox_model_t *m, const char *text, size_t len) {
  char p[PATH_MAX];
  cfg_path(m, p, sizeof p);
  if (!text) {
    unlink(p);
    return;
  }
  FILE *f = fopen(p, "wb");
  CHECK(f != NULL);
  if (!f) return;
  CHECK_INT(fwrite(text, 1, len, f), len);
  fclose(f);
}
static void write_cfg(const ox_model_t *m, const char *text) {
  write_cfg_n(m, text, text ? strlen(text) : 0);
}

static char err[512];

/* Loads text as m's config (infer_threads 3). Returns the status; err holds the reason. */
static int load_text(const ox_model_t *m, const char *text, ox_model_config_t *cfg) {
  if (!setup_repo()) {
    memset(cfg, 0, sizeof *cfg);
    return -1;
  }
  write_cfg(m, text);
  memset(err, 0, sizeof err);
  int rc = ox_model_config_load(repo_dir, m, 3, cfg, err, sizeof err);
  write_cfg(m, NULL);
  return rc;
}

/* The config must be refused with exactly this message. */
static void expect_error(const ox_model_t *m, const char *text, const char *msg, int line) {
  ox_model_config_t cfg;
  int rc = load_text(m, text, &cfg);
  if (rc != OX_EINVALID || strcmp(err, msg) != 0) {
    fprintf(stderr, "  FAIL %s:%d [%s]: config %s\n    got rc %d err \"%s\"\n    want \"%s\"\n",
            __FILE__, line, ox_t_current, text, rc, err, msg);
    ox_t_failed_checks++;
  }
  ox_model_config_free(&cfg);
}
#define EXPECT_ERROR(m, text, msg) expect_error(&(m), (text), (msg), __LINE__)

/* The config must be refused with a message starting with prefix. */
static void expect_error_prefix(const ox_model_t *m, const char *text, const char *prefix,
                                int line) {
  ox_model_config_t cfg;
  int rc = load_text(m, text, &cfg);
  if (rc != OX_EINVALID || strncmp(err, prefix, strlen(prefix)) != 0) {
    fprintf(stderr, "  FAIL %s:%d [%s]: config %s\n    got rc %d err \"%s\"\n    want \"%s...\"\n",
            __FILE__, line, ox_t_current, text, rc, err, prefix);
    ox_t_failed_checks++;
  }
  ox_model_config_free(&cfg);
}
#define EXPECT_ERROR_PREFIX(m, text, p) expect_error_prefix(&(m), (text), (p), __LINE__)

static void expect_ok(const ox_model_t *m, const char *text, ox_model_config_t *cfg, int line) {
  int rc = load_text(m, text, cfg);
  if (rc != 0) {
    fprintf(stderr, "  FAIL %s:%d [%s]: config %s\n    refused: rc %d err \"%s\"\n", __FILE__, line,
            ox_t_current, text, rc, err);
    ox_t_failed_checks++;
  }
}
#define EXPECT_OK(m, text, cfg) expect_ok(&(m), (text), (cfg), __LINE__)

/* ox_model_config_json of cfg must be exactly want. */
static void expect_json(const ox_model_t *m, const ox_model_config_t *cfg, const char *want,
                        int line) {
  ox_buf_t b;
  ox_buf_init(&b);
  int rc = ox_model_config_json(&b, m, cfg);
  ox_buf_puts(&b, ""); /* room for the terminator below */
  if (rc || !b.data || b.len != strlen(want) || memcmp(b.data, want, b.len) != 0) {
    fprintf(stderr, "  FAIL %s:%d [%s]: config JSON\n    got  %.*s\n    want %s\n", __FILE__, line,
            ox_t_current, (int)b.len, b.data ? b.data : "", want);
    ox_t_failed_checks++;
  }
  ox_buf_free(&b);
}
#define EXPECT_JSON(m, cfg, want) expect_json(&(m), (cfg), (want), __LINE__)

/* ---- defaults --------------------------------------------------------------------------- */

TEST(defaults_batchable_without_file) {
  ox_model_config_t cfg;
  EXPECT_OK(bm, NULL, &cfg);
  CHECK_INT(cfg.from_file, 0);
  CHECK_INT(cfg.sched.max_batch_size, 32);
  CHECK_INT(cfg.sched.max_queue_delay_us, 0);
  CHECK_INT(cfg.sched.num_preferred, 0);
  CHECK_INT(cfg.sched.max_queue_size, 0);
  CHECK_INT(cfg.sched.default_timeout_us, 0);
  CHECK_INT(cfg.sched.instance_count, 3);
  CHECK_INT(cfg.num_warmup, 0);
  CHECK(cfg.warmup == NULL);
  EXPECT_JSON(bm, &cfg,
              "{\"name\":\"bm\",\"platform\":\"onnx_onnxv1\",\"backend\":\"onnxruntime\","
              "\"max_batch_size\":32,\"instance_count\":3,\"dynamic_batching\":{"
              "\"max_queue_delay_microseconds\":0,\"preferred_batch_size\":[],"
              "\"max_queue_size\":0,\"default_timeout_microseconds\":0},"
              "\"model_warmup_count\":0,\"config_file\":false}");
  ox_model_config_free(&cfg);
}

TEST(defaults_fixed_without_file) {
  ox_model_config_t cfg;
  EXPECT_OK(fm, NULL, &cfg);
  CHECK_INT(cfg.from_file, 0);
  CHECK_INT(cfg.sched.max_batch_size, 0);
  CHECK_INT(cfg.sched.instance_count, 3);
  EXPECT_JSON(fm, &cfg,
              "{\"name\":\"fm\",\"platform\":\"onnx_onnxv1\",\"backend\":\"onnxruntime\","
              "\"max_batch_size\":0,\"instance_count\":3,\"max_queue_size\":0,"
              "\"default_timeout_microseconds\":0,\"model_warmup_count\":0,\"config_file\":false}");
  ox_model_config_free(&cfg);
}

/* Any input or output without a dynamic first dimension (fixed, rank 0, unknown rank), or
 * no inputs at all: no merging by default. */
TEST(defaults_not_batchable_variants) {
  const ox_model_t *ms[] = {&om, &sm, &rm, &um, &nm};
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
    ox_model_config_t cfg;
    expect_ok(ms[i], NULL, &cfg, __LINE__);
    if (cfg.sched.max_batch_size != 0)
      fprintf(stderr, "  model %s: max_batch_size %u\n", ms[i]->name, cfg.sched.max_batch_size);
    CHECK_INT(cfg.sched.max_batch_size, 0);
    ox_model_config_free(&cfg);
  }
}

TEST(defaults_instance_count_at_least_one) {
  if (!setup_repo()) return;
  ox_model_config_t cfg;
  CHECK_INT(ox_model_config_load(repo_dir, &bm, 0, &cfg, err, sizeof err), 0);
  CHECK_INT(cfg.sched.instance_count, 1);
  ox_model_config_free(&cfg);
  CHECK_INT(ox_model_config_load(repo_dir, &bm, 7, &cfg, err, sizeof err), 0);
  CHECK_INT(cfg.sched.instance_count, 7);
  ox_model_config_free(&cfg);
}

/* An empty object is a file with nothing changed: the defaults stay. */
TEST(empty_object_keeps_defaults) {
  ox_model_config_t cfg;
  EXPECT_OK(bm, " { } \n", &cfg);
  CHECK_INT(cfg.from_file, 1);
  CHECK_INT(cfg.sched.max_batch_size, 32);
  CHECK_INT(cfg.sched.instance_count, 3);
  ox_model_config_free(&cfg);
  EXPECT_OK(fm, "{}", &cfg);
  CHECK_INT(cfg.sched.max_batch_size, 0);
  CHECK_INT(cfg.from_file, 1);
  EXPECT_JSON(fm, &cfg,
              "{\"name\":\"fm\",\"platform\":\"onnx_onnxv1\",\"backend\":\"onnxruntime\","
              "\"max_batch_size\":0,\"instance_count\":3,\"max_queue_size\":0,"
              "\"default_timeout_microseconds\":0,\"model_warmup_count\":0,\"config_file\":true}");
  ox_model_config_free(&cfg);
}

/* ---- a valid, complete configuration ---------------------------------------------------- */

static const char *FULL =
    "{\n"
    "  \"name\": \"bm\",\n"
    "  \"max_batch_size\": 16,\n"
    "  \"dynamic_batching\": {\n"
    "    \"max_queue_delay_microseconds\": 2500,\n"
    "    \"preferred_batch_size\": [4, 8, 16],\n"
    "    \"max_queue_size\": 64,\n"
    "    \"default_timeout_microseconds\": 250000\n"
    "  },\n"
    "  \"instance_count\": 2,\n"
    "  \"model_warmup\": [\n"
    "    {\"name\": \"zeros\", \"batch_size\": 4, \"count\": 2,\n"
    "     \"inputs\": {\"input\": {\"data_type\": \"TYPE_FP32\", \"dims\": [4], \"zero_data\": "
    "true},\n"
    "                \"mask\": {\"data_type\": \"TYPE_FP32\", \"dims\": [7], \"random_data\": "
    "true}}},\n"
    "    {\"name\": \"file\",\n"
    "     \"inputs\": {\"input\": {\"dims\": [4], \"input_data_file\": \"in.bin\", \"data_type\": "
    "\"TYPE_FP32\"},\n"
    "                \"mask\": {\"data_type\": \"TYPE_FP32\", \"dims\": [1], \"zero_data\": "
    "true}}}\n"
    "  ]\n"
    "}\n";

TEST(full_config) {
  ox_model_config_t cfg;
  EXPECT_OK(bm, FULL, &cfg);
  const ox_sched_config_t *s = &cfg.sched;
  CHECK_INT(cfg.from_file, 1);
  CHECK_INT(s->max_batch_size, 16);
  CHECK_INT(s->max_queue_delay_us, 2500);
  CHECK_INT(s->num_preferred, 3);
  CHECK_INT(s->preferred_batch_size[0], 4);
  CHECK_INT(s->preferred_batch_size[1], 8);
  CHECK_INT(s->preferred_batch_size[2], 16);
  CHECK_INT(s->max_queue_size, 64);
  CHECK_INT(s->default_timeout_us, 250000);
  CHECK_INT(s->instance_count, 2);
  CHECK_INT(cfg.num_warmup, 2);
  if (cfg.num_warmup == 2) {
    const ox_warmup_t *w = &cfg.warmup[0];
    CHECK_STR(w->name, "zeros");
    CHECK_INT(w->batch_size, 4);
    CHECK_INT(w->count, 2);
    CHECK_INT(w->num_inputs, 2);
    CHECK_STR(w->inputs[0].name, "input");
    CHECK_INT(w->inputs[0].dtype, OX_DT_FP32);
    CHECK_INT(w->inputs[0].rank, 1);
    CHECK_INT(w->inputs[0].dims[0], 4);
    CHECK_INT(w->inputs[0].kind, 0);
    CHECK_STR(w->inputs[1].name, "mask");
    CHECK_INT(w->inputs[1].dims[0], 7);
    CHECK_INT(w->inputs[1].kind, 1);
    w = &cfg.warmup[1];
    CHECK_STR(w->name, "file");
    CHECK_INT(w->batch_size, 1); /* defaults */
    CHECK_INT(w->count, 1);
    CHECK_INT(w->num_inputs, 2);
    CHECK_INT(w->inputs[0].kind, 2);
    CHECK_STR(w->inputs[0].file, "in.bin");
    CHECK_INT(w->inputs[0].dtype, OX_DT_FP32);
    CHECK_INT(w->inputs[1].kind, 0);
  }
  EXPECT_JSON(bm, &cfg,
              "{\"name\":\"bm\",\"platform\":\"onnx_onnxv1\",\"backend\":\"onnxruntime\","
              "\"max_batch_size\":16,\"instance_count\":2,\"dynamic_batching\":{"
              "\"max_queue_delay_microseconds\":2500,\"preferred_batch_size\":[4,8,16],"
              "\"max_queue_size\":64,\"default_timeout_microseconds\":250000},"
              "\"model_warmup_count\":2,\"config_file\":true}");
  ox_model_config_free(&cfg);
  CHECK(cfg.warmup == NULL);
  CHECK_INT(cfg.num_warmup, 0);
  ox_model_config_free(&cfg); /* twice is fine */
}

/* Queue settings apply without merging too; max_batch_size 0 leaves dynamic_batching out of
 * the JSON but keeps its queue keys at the top level. */
TEST(fixed_model_with_queue_settings) {
  ox_model_config_t cfg;
  EXPECT_OK(fm,
            "{\"max_batch_size\":0,\"instance_count\":1,\"dynamic_batching\":"
            "{\"max_queue_size\":2,\"default_timeout_microseconds\":1000}}",
            &cfg);
  CHECK_INT(cfg.sched.max_batch_size, 0);
  CHECK_INT(cfg.sched.max_queue_size, 2);
  CHECK_INT(cfg.sched.default_timeout_us, 1000);
  CHECK_INT(cfg.sched.instance_count, 1);
  EXPECT_JSON(fm, &cfg,
              "{\"name\":\"fm\",\"platform\":\"onnx_onnxv1\",\"backend\":\"onnxruntime\","
              "\"max_batch_size\":0,\"instance_count\":1,\"max_queue_size\":2,"
              "\"default_timeout_microseconds\":1000,\"model_warmup_count\":0,"
              "\"config_file\":true}");
  ox_model_config_free(&cfg);
}

/* Every bound is inclusive. */
TEST(limits_inclusive) {
  ox_model_config_t cfg;
  EXPECT_OK(bm,
            "{\"max_batch_size\":1024,\"instance_count\":64,\"dynamic_batching\":{"
            "\"max_queue_delay_microseconds\":10000000,\"max_queue_size\":1000000,"
            "\"default_timeout_microseconds\":3600000000,"
            "\"preferred_batch_size\":[1,2,3,4,5,6,7,1024]},"
            "\"model_warmup\":[{\"batch_size\":1024,\"count\":1000,\"inputs\":{}}]}",
            &cfg);
  CHECK_INT(cfg.sched.max_batch_size, 1024);
  CHECK_INT(cfg.sched.instance_count, 64);
  CHECK_INT(cfg.sched.max_queue_delay_us, 10000000);
  CHECK_INT(cfg.sched.max_queue_size, 1000000);
  CHECK_INT(cfg.sched.default_timeout_us, 3600000000ll);
  CHECK_INT(cfg.sched.num_preferred, 8);
  CHECK_INT(cfg.sched.preferred_batch_size[7], 1024);
  CHECK_INT(cfg.num_warmup, 1);
  if (cfg.num_warmup == 1) {
    CHECK_INT(cfg.warmup[0].batch_size, 1024);
    CHECK_INT(cfg.warmup[0].count, 1000);
  }
  ox_model_config_free(&cfg);
  EXPECT_OK(bm,
            "{\"max_batch_size\":0,\"instance_count\":1,\"dynamic_batching\":{"
            "\"max_queue_delay_microseconds\":0,\"max_queue_size\":0,"
            "\"default_timeout_microseconds\":0,\"preferred_batch_size\":[]}}",
            &cfg);
  CHECK_INT(cfg.sched.max_batch_size, 0);
  CHECK_INT(cfg.sched.num_preferred, 0);
  ox_model_config_free(&cfg);
}

TEST(name_must_match_folder) {
  ox_model_config_t cfg;
  EXPECT_OK(bm, "{\"name\":\"bm\"}", &cfg);
  ox_model_config_free(&cfg);
  EXPECT_ERROR(bm, "{\"name\":\"other\"}", "config.json: 'name' is 'other', not the folder's name");
  EXPECT_ERROR(bm, "{\"name\":7}", "config.json: 'name' must be a short string without escapes");
}

/* ---- unknown keys, at every level ------------------------------------------------------- */

TEST(unknown_key_top_level) {
  EXPECT_ERROR(bm, "{\"max_batch_size\":4,\"bogus\":1}", "config.json: unknown key 'bogus'");
  /* Triton keys whose semantics onnxd lacks are refused, not silently ignored. */
  EXPECT_ERROR(bm, "{\"sequence_batching\":{}}",
               "config.json: 'sequence_batching' is not supported by onnxd");
  EXPECT_ERROR(bm, "{\"ensemble_scheduling\":{\"step\":[]}}",
               "config.json: 'ensemble_scheduling' is not supported by onnxd");
  EXPECT_ERROR(bm, "{\"Max_Batch_Size\":4}", "config.json: unknown key 'Max_Batch_Size'");
}

TEST(unknown_key_dynamic_batching) {
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"max_queue_delay\":5}}",
               "config.json: unknown key 'dynamic_batching.max_queue_delay'");
  EXPECT_ERROR(bm,
               "{\"dynamic_batching\":{\"preferred_batch_size\":[2],\"default_queue_policy\":"
               "{\"x\":1}}}",
               "config.json: unknown key 'dynamic_batching.default_queue_policy.x'");
}

TEST(unknown_key_model_warmup) {
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"name\":\"w\",\"bogus\":true}]}",
               "config.json: unknown key 'model_warmup.bogus'");
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"name\":\"w\"},{\"name\":\"v\",\"Count\":2}]}",
               "config.json: unknown key 'model_warmup.Count'");
}

TEST(unknown_key_warmup_input) {
  EXPECT_ERROR(bm,
               "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\","
               "\"dims\":[4],\"zero_data\":true,\"shape\":[4]}}}]}",
               "config.json: unknown key 'model_warmup.inputs.*.shape'");
}

/* ---- out-of-range and mistyped values --------------------------------------------------- */

TEST(out_of_range_top_level) {
  const char *mbs = "config.json: 'max_batch_size' must be an integer from 0 to 1024";
  EXPECT_ERROR(bm, "{\"max_batch_size\":1025}", mbs);
  EXPECT_ERROR(bm, "{\"max_batch_size\":-1}", mbs);
  EXPECT_ERROR(bm, "{\"max_batch_size\":1.5}", mbs);
  EXPECT_ERROR(bm, "{\"max_batch_size\":\"8\"}", mbs);
  EXPECT_ERROR(bm, "{\"max_batch_size\":true}", mbs);
  EXPECT_ERROR(bm, "{\"max_batch_size\":null}", mbs);
  EXPECT_ERROR(bm, "{\"max_batch_size\":99999999999999999999999}", mbs);
  const char *ic = "config.json: 'instance_count' must be an integer from 1 to 64";
  EXPECT_ERROR(bm, "{\"instance_count\":0}", ic);
  EXPECT_ERROR(bm, "{\"instance_count\":65}", ic);
  EXPECT_ERROR(bm, "{\"instance_count\":-2}", ic);
}

TEST(out_of_range_dynamic_batching) {
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"max_queue_delay_microseconds\":10000001}}",
               "config.json: 'max_queue_delay_microseconds' must be an integer from 0 to 10000000");
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"max_queue_delay_microseconds\":-1}}",
               "config.json: 'max_queue_delay_microseconds' must be an integer from 0 to 10000000");
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"max_queue_size\":1000001}}",
               "config.json: 'max_queue_size' must be an integer from 0 to 1000000");
  EXPECT_ERROR(
      bm, "{\"dynamic_batching\":{\"default_timeout_microseconds\":3600000001}}",
      "config.json: 'default_timeout_microseconds' must be an integer from 0 to 3600000000");
  const char *pbs = "config.json: 'preferred_batch_size' must be an integer from 1 to 1024";
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"preferred_batch_size\":[0]}}", pbs);
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"preferred_batch_size\":[2,1025]}}", pbs);
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"preferred_batch_size\":[\"2\"]}}", pbs);
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"preferred_batch_size\":4}}",
               "config.json: 'preferred_batch_size' must be an array");
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"preferred_batch_size\":[1,2,3,4,5,6,7,8,9]}}",
               "config.json: too many preferred_batch_size values");
  EXPECT_ERROR(bm, "{\"dynamic_batching\":[]}",
               "config.json: 'dynamic_batching' must be an object");
  EXPECT_ERROR(bm, "{\"dynamic_batching\":true}",
               "config.json: 'dynamic_batching' must be an object");
}

TEST(out_of_range_model_warmup) {
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"batch_size\":0}]}",
               "config.json: 'batch_size' must be an integer from 1 to 1024");
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"batch_size\":1025}]}",
               "config.json: 'batch_size' must be an integer from 1 to 1024");
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"count\":0}]}",
               "config.json: 'count' must be an integer from 1 to 1000");
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"count\":1001}]}",
               "config.json: 'count' must be an integer from 1 to 1000");
  EXPECT_ERROR(bm, "{\"model_warmup\":{}}", "config.json: 'model_warmup' must be an array");
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"inputs\":[]}]}",
               "config.json: 'model_warmup.inputs' must be an object");
  EXPECT_ERROR(
      bm,
      "{\"model_warmup\":[{\"name\":\"w\",\"inputs\":{\"input\":{\"data_type\":\"TYPE_FOO\"}}}]}",
      "config.json: unknown warm-up data_type 'TYPE_FOO'");
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"FP32\"}}}]}",
               "config.json: unknown warm-up data_type 'FP32'");
  EXPECT_ERROR(bm,
               "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\",\"dims\":["
               "1048577]}}}]}",
               "config.json: 'dims' must be an integer from 0 to 1048576");
  EXPECT_ERROR(
      bm,
      "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\",\"dims\":[-1]}}}]}",
      "config.json: 'dims' must be an integer from 0 to 1048576");
  EXPECT_ERROR(
      bm, "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\",\"dims\":4}}}]}",
      "config.json: 'dims' must be an array");
  EXPECT_ERROR(bm,
               "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\","
               "\"dims\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}}}]}",
               "config.json: too many warm-up dims");
  EXPECT_ERROR(
      bm,
      "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\",\"zero_data\":1}}}]}",
      "config.json: 'zero_data' must be true or false");
  EXPECT_ERROR(bm,
               "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\",\"random_"
               "data\":\"yes\"}}}]}",
               "config.json: 'random_data' must be true or false");
  EXPECT_ERROR(
      bm,
      "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\","
      "\"input_data_file\":\"../x.bin\"}}}]}",
      "config.json: input_data_file '../x.bin' must be a file name in the model's warmup/ folder");
  EXPECT_ERROR(
      bm,
      "{\"model_warmup\":[{\"inputs\":{\"input\":{\"data_type\":\"TYPE_FP32\","
      "\"input_data_file\":\"..\"}}}]}",
      "config.json: input_data_file '..' must be a file name in the model's warmup/ folder");
  EXPECT_ERROR(bm,
               "{\"model_warmup\":[{\"inputs\":{\"input\":{\"dims\":[4],\"zero_data\":true}}}]}",
               "config.json: warm-up input 'input' has no data_type");
}

TEST(warmup_limits) {
  /* At most 8 inputs per warm-up; names bounded by their buffers. */
  char text[2048];
  size_t o = (size_t)snprintf(text, sizeof text, "{\"model_warmup\":[{\"inputs\":{");
  for (int i = 0; i < 9; i++)
    o += (size_t)snprintf(text + o, sizeof text - o,
                          "%s\"in%d\":{\"data_type\":\"TYPE_FP32\",\"zero_data\":true}",
                          i ? "," : "", i);
  snprintf(text + o, sizeof text - o, "}}]}");
  EXPECT_ERROR(bm, text, "config.json: too many warm-up inputs");
  char name[200];
  memset(name, 'n', 64);
  name[64] = 0;
  snprintf(text, sizeof text, "{\"model_warmup\":[{\"name\":\"%s\"}]}", name);
  EXPECT_ERROR(bm, text, "config.json: 'name' must be a short string without escapes");
  name[63] = 0; /* 63 characters fit */
  snprintf(text, sizeof text, "{\"model_warmup\":[{\"name\":\"%s\"}]}", name);
  ox_model_config_t cfg;
  EXPECT_OK(bm, text, &cfg);
  if (cfg.num_warmup == 1) CHECK_INT(strlen(cfg.warmup[0].name), 63);
  ox_model_config_free(&cfg);
  memset(name, 'i', 128);
  name[128] = 0;
  snprintf(text, sizeof text,
           "{\"model_warmup\":[{\"inputs\":{\"%s\":{\"data_type\":\"TYPE_FP32\"}}}]}", name);
  EXPECT_ERROR(bm, text, "config.json: bad object key");
  EXPECT_ERROR(bm, "{\"model_warmup\":[{\"name\":\"a\\u0041\"}]}",
               "config.json: 'name' must be a short string without escapes");
}

TEST(too_many_warmups) {
  char text[4096];
  size_t o = (size_t)snprintf(text, sizeof text, "{\"model_warmup\":[");
  for (int i = 0; i < 17; i++)
    o += (size_t)snprintf(text + o, sizeof text - o, "%s{\"name\":\"w%d\"}", i ? "," : "", i);
  snprintf(text + o, sizeof text - o, "]}");
  EXPECT_ERROR(bm, text, "config.json: more than 16 model_warmup entries");
  /* 16 are fine. */
  o = (size_t)snprintf(text, sizeof text, "{\"model_warmup\":[");
  for (int i = 0; i < 16; i++)
    o += (size_t)snprintf(text + o, sizeof text - o, "%s{\"name\":\"w%d\"}", i ? "," : "", i);
  snprintf(text + o, sizeof text - o, "]}");
  ox_model_config_t cfg;
  EXPECT_OK(bm, text, &cfg);
  CHECK_INT(cfg.num_warmup, 16);
  if (cfg.num_warmup == 16) CHECK_STR(cfg.warmup[15].name, "w15");
  ox_model_config_free(&cfg);
}

/* ---- cross-key checks ------------------------------------------------------------------- */

TEST(preferred_larger_than_max) {
  EXPECT_ERROR(bm, "{\"max_batch_size\":4,\"dynamic_batching\":{\"preferred_batch_size\":[2,8]}}",
               "config.json: 'dynamic_batching.preferred_batch_size' 8 exceeds 'max_batch_size' 4");
  /* The order of the keys does not matter. */
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"preferred_batch_size\":[5]},\"max_batch_size\":4}",
               "config.json: 'dynamic_batching.preferred_batch_size' 5 exceeds 'max_batch_size' 4");
  /* The default max_batch_size (32) bounds them too. */
  EXPECT_ERROR(
      bm, "{\"dynamic_batching\":{\"preferred_batch_size\":[64]}}",
      "config.json: 'dynamic_batching.preferred_batch_size' 64 exceeds 'max_batch_size' 32");
  ox_model_config_t cfg;
  EXPECT_OK(bm, "{\"max_batch_size\":4,\"dynamic_batching\":{\"preferred_batch_size\":[4]}}", &cfg);
  ox_model_config_free(&cfg);
}

TEST(max_batch_size_needs_dynamic_first_dim) {
  const char *msg =
      "config.json: 'max_batch_size' needs a dynamic first dimension on every input "
      "and output";
  EXPECT_ERROR(fm, "{\"max_batch_size\":4}", msg);
  EXPECT_ERROR(om, "{\"max_batch_size\":1}", msg);
  EXPECT_ERROR(sm, "{\"max_batch_size\":8}", msg);
  EXPECT_ERROR(rm, "{\"max_batch_size\":8}", msg);
  EXPECT_ERROR(um, "{\"max_batch_size\":8}", msg);
  EXPECT_ERROR(nm, "{\"max_batch_size\":8}", msg);
  ox_model_config_t cfg;
  EXPECT_OK(fm, "{\"max_batch_size\":0}", &cfg);
  ox_model_config_free(&cfg);
}

/* A refused value must not land in cfg: the server still builds the unavailable model's
 * scheduler from cfg->sched (models.c), so nothing in it may be out of range or garbage
 * (an uninitialised instance_count made calloc fail: "out of memory setting up the models").
 * The stack is filled with a pattern first so that an uninitialised read shows. */
static void __attribute__((noinline)) poison_stack(void) {
  volatile unsigned char buf[64 * 1024];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = 0xA5;
}

TEST(refused_values_do_not_land_in_config) {
  static const char *bad[] = {
      "{\"instance_count\":0}",
      "{\"instance_count\":65}",
      "{\"instance_count\":\"2\"}",
      "{\"max_batch_size\":1025}",
      "{\"max_batch_size\":-3}",
      "{\"dynamic_batching\":{\"max_queue_size\":1000001}}",
      "{\"dynamic_batching\":{\"max_queue_delay_microseconds\":true}}",
      "{\"dynamic_batching\":{\"default_timeout_microseconds\":-1}}",
      "{\"model_warmup\":[{\"batch_size\":0}]}",
      "{\"model_warmup\":[{\"count\":1001}]}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (!setup_repo()) return;
    write_cfg(&bm, bad[i]);
    ox_model_config_t cfg;
    poison_stack();
    int rc = ox_model_config_load(repo_dir, &bm, 3, &cfg, err, sizeof err);
    write_cfg(&bm, NULL);
    CHECK_INT(rc, OX_EINVALID);
    const ox_sched_config_t *s = &cfg.sched;
    if (s->instance_count > 64 || s->max_batch_size > 1024 || s->max_queue_size > 1000000 ||
        s->max_queue_delay_us > 10000000 || s->default_timeout_us > 3600000000ull) {
      fprintf(stderr,
              "  FAIL %s:%d [%s]: after refusing %s: instance_count %u, max_batch_size "
              "%u, max_queue_size %u, delay %llu, timeout %llu\n",
              __FILE__, __LINE__, ox_t_current, bad[i], s->instance_count, s->max_batch_size,
              s->max_queue_size, (unsigned long long)s->max_queue_delay_us,
              (unsigned long long)s->default_timeout_us);
      ox_t_failed_checks++;
    }
    for (size_t k = 0; k < cfg.num_warmup; k++) {
      CHECK(cfg.warmup[k].batch_size >= 1 && cfg.warmup[k].batch_size <= 1024);
      CHECK(cfg.warmup[k].count >= 1 && cfg.warmup[k].count <= 1000);
    }
    ox_model_config_free(&cfg);
  }
}

/* ---- malformed files -------------------------------------------------------------------- */

TEST(bad_json) {
  EXPECT_ERROR_PREFIX(bm, "{", "config.json: invalid JSON");
  EXPECT_ERROR_PREFIX(bm, "", "config.json: invalid JSON");
  EXPECT_ERROR_PREFIX(bm, "{\"max_batch_size\":4,}", "config.json: invalid JSON");
  EXPECT_ERROR_PREFIX(bm, "{\"max_batch_size\":4} {}", "config.json: invalid JSON");
  EXPECT_ERROR_PREFIX(bm, "{'max_batch_size':4}", "config.json: invalid JSON");
  EXPECT_ERROR_PREFIX(bm, "{\"max_batch_size\":4", "config.json: invalid JSON");
  EXPECT_ERROR_PREFIX(bm, "max_batch_size: 4", "config.json: invalid JSON");
  /* Valid JSON, but not an object. */
  EXPECT_ERROR(bm, "[]", "config.json: config.json must be an object");
  EXPECT_ERROR(bm, "4", "config.json: config.json must be an object");
}

TEST(nul_byte_in_file) {
  /* A NUL inside the text is not JSON whitespace: refused, not read as the end of the file. */
  if (!setup_repo()) return;
  static const char text[] = "{\"max_batch_size\":4}\0{\"bogus\":1}";
  write_cfg_n(&bm, text, sizeof text - 1);
  ox_model_config_t cfg;
  int rc = ox_model_config_load(repo_dir, &bm, 3, &cfg, err, sizeof err);
  CHECK_INT(rc, OX_EINVALID);
  CHECK(strncmp(err, "config.json: invalid JSON", 25) == 0);
  ox_model_config_free(&cfg);
  write_cfg(&bm, NULL);
}

TEST(too_large_file) {
  if (!setup_repo()) return;
  size_t mib = 1u << 20;
  char *text = malloc(mib + 1);
  CHECK(text != NULL);
  if (!text) return;
  /* {"max_batch_size":4  <spaces>  } : valid JSON of exactly 1 MiB, then one byte more. */
  memset(text, ' ', mib + 1);
  memcpy(text, "{\"max_batch_size\":4", 19);
  text[mib - 1] = '}';
  write_cfg_n(&bm, text, mib);
  ox_model_config_t cfg;
  CHECK_INT(ox_model_config_load(repo_dir, &bm, 3, &cfg, err, sizeof err), 0);
  CHECK_INT(cfg.sched.max_batch_size, 4);
  ox_model_config_free(&cfg);
  text[mib - 1] = ' ';
  text[mib] = '}';
  write_cfg_n(&bm, text, mib + 1);
  CHECK_INT(ox_model_config_load(repo_dir, &bm, 3, &cfg, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "config.json: larger than 1 MiB");
  ox_model_config_free(&cfg);
  write_cfg(&bm, NULL);
  free(text);
}

/* A tiny error buffer truncates the message; nothing is written past it. */
TEST(small_error_buffer) {
  if (!setup_repo()) return;
  write_cfg(&bm, "{\"bogus\":1}");
  char small[12];
  memset(small, 'X', sizeof small);
  ox_model_config_t cfg;
  CHECK_INT(ox_model_config_load(repo_dir, &bm, 3, &cfg, small, 8), OX_EINVALID);
  CHECK_STR(small, "config.");
  CHECK(small[8] == 'X' && small[11] == 'X');
  ox_model_config_free(&cfg);
  write_cfg(&bm, NULL);
}

/* Removes the temporary repository (last). */

/* ---- config.pbtxt, Triton's JSON fields, version_policy, the override text --------------- */

/* Writes text as m's config.pbtxt (NULL removes it). */
static void write_pbtxt(const ox_model_t *m, const char *text) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s/config.pbtxt", repo_dir, m->name);
  if (!text) {
    unlink(p);
    return;
  }
  FILE *f = fopen(p, "wb");
  CHECK(f != NULL);
  if (!f) return;
  CHECK_INT(fwrite(text, 1, strlen(text), f), strlen(text));
  fclose(f);
}

static int load_pbtxt(const ox_model_t *m, const char *text, ox_model_config_t *cfg) {
  if (!setup_repo()) {
    memset(cfg, 0, sizeof *cfg);
    return -1;
  }
  write_pbtxt(m, text);
  memset(err, 0, sizeof err);
  int rc = ox_model_config_load(repo_dir, m, 3, cfg, err, sizeof err);
  write_pbtxt(m, NULL);
  return rc;
}

static void expect_pb_error(const ox_model_t *m, const char *text, const char *msg, int line) {
  ox_model_config_t cfg;
  int rc = load_pbtxt(m, text, &cfg);
  if (rc != OX_EINVALID || strcmp(err, msg) != 0) {
    fprintf(stderr,
            "  FAIL %s:%d [%s]: config.pbtxt %s\n    got rc %d err \"%s\"\n    want \"%s\"\n",
            __FILE__, line, ox_t_current, text, rc, err, msg);
    ox_t_failed_checks++;
  }
  ox_model_config_free(&cfg);
}
#define EXPECT_PB_ERROR(m, text, msg) expect_pb_error(&(m), (text), (msg), __LINE__)

/* Written the way Triton's model_configuration.md shows a config. */
static const char bm_pbtxt[] =
    "name: \"bm\"\n"
    "platform: \"onnxruntime_onnx\"\n"
    "max_batch_size: 16\n"
    "input [\n"
    "  {\n"
    "    name: \"input\"\n"
    "    data_type: TYPE_FP32\n"
    "    dims: [ 4 ]\n"
    "  },\n"
    "  {\n"
    "    name: \"mask\"\n"
    "    data_type: TYPE_FP32\n"
    "    dims: [ -1 ]\n"
    "  }\n"
    "]\n"
    "output [\n"
    "  {\n"
    "    name: \"output\"\n"
    "    data_type: TYPE_FP32\n"
    "    dims: [ 1 ]\n"
    "  }\n"
    "]\n"
    "instance_group [\n"
    "  { count: 2 kind: KIND_CPU },\n"
    "  { count: 3 kind: KIND_CPU }\n"
    "]\n"
    "version_policy: { latest { num_versions: 2 } }\n"
    "dynamic_batching {\n"
    "  preferred_batch_size: [ 4, 8 ]\n"
    "  max_queue_delay_microseconds: 100\n"
    "  default_queue_policy { max_queue_size: 64 default_timeout_microseconds: 5000 "
    "timeout_action: REJECT }\n"
    "}\n"
    "optimization { input_pinned_memory { enable: true } }\n"
    "parameters { key: \"intra_op_thread_count\" value: { string_value: \"1\" } }\n"
    "model_warmup [\n"
    "  {\n"
    "    name: \"w\"\n"
    "    batch_size: 2\n"
    "    inputs { key: \"input\" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }\n"
    "    inputs { key: \"mask\" value: { data_type: TYPE_FP32 dims: [ 4 ] random_data: true } }\n"
    "  }\n"
    "]\n";

TEST(pbtxt_triton_config) {
  ox_model_config_t cfg;
  CHECK_INT(load_pbtxt(&bm, bm_pbtxt, &cfg), 0);
  CHECK_STR(err, "");
  CHECK_INT(cfg.from_file, 1);
  CHECK_INT(cfg.sched.max_batch_size, 16);
  CHECK_INT(cfg.sched.instance_count, 5);
  CHECK_INT(cfg.sched.max_queue_delay_us, 100);
  CHECK_INT(cfg.sched.num_preferred, 2);
  CHECK_INT(cfg.sched.preferred_batch_size[1], 8);
  CHECK_INT(cfg.sched.max_queue_size, 64);
  CHECK_INT(cfg.sched.default_timeout_us, 5000);
  CHECK_INT(cfg.version_policy.kind, 0);
  CHECK_INT(cfg.version_policy.num_versions, 2);
  CHECK_INT(cfg.num_warmup, 1);
  if (cfg.num_warmup == 1) {
    CHECK_STR(cfg.warmup[0].name, "w");
    CHECK_INT(cfg.warmup[0].batch_size, 2);
    CHECK_INT(cfg.warmup[0].num_inputs, 2);
    CHECK_STR(cfg.warmup[0].inputs[1].name, "mask");
    CHECK_INT(cfg.warmup[0].inputs[1].kind, 1);
    CHECK_INT(cfg.warmup[0].inputs[0].rank, 1);
  }
  ox_model_config_free(&cfg);
}

TEST(pbtxt_config_json_wins) {
  ox_model_config_t cfg;
  if (!setup_repo()) return;
  write_pbtxt(&bm, "max_batch_size: 4");
  CHECK_INT(load_text(&bm, "{\"max_batch_size\":8}", &cfg), 0);
  CHECK_INT(cfg.sched.max_batch_size, 8);
  ox_model_config_free(&cfg);
  CHECK_INT(load_text(&bm, NULL, &cfg), 0); /* no config.json: the pbtxt */
  CHECK_INT(cfg.sched.max_batch_size, 4);
  CHECK_INT(cfg.from_file, 1);
  ox_model_config_free(&cfg);
  write_pbtxt(&bm, NULL);
}

TEST(pbtxt_refusals) {
  EXPECT_PB_ERROR(bm, "name: \"x\"", "config.pbtxt: 'name' is 'x', not the folder's name");
  EXPECT_PB_ERROR(bm, "platform: \"tensorrt_plan\"",
                  "config.pbtxt: platform 'tensorrt_plan' is not supported (onnxd serves "
                  "platform \"onnxruntime_onnx\")");
  EXPECT_PB_ERROR(bm, "backend: \"python\"",
                  "config.pbtxt: backend 'python' is not supported (onnxd serves backend "
                  "\"onnxruntime\")");
  EXPECT_PB_ERROR(bm, "instance_group [ { count: 1 kind: KIND_GPU } ]",
                  "config.pbtxt: instance_group kind KIND_GPU is not supported: onnxd runs on the "
                  "CPU");
  EXPECT_PB_ERROR(bm, "instance_group { count: 1 gpus: [ 0 ] }",
                  "config.pbtxt: instance_group 'gpus' is not supported: onnxd runs on the CPU");
  EXPECT_PB_ERROR(bm, "sequence_batching { }",
                  "config.pbtxt: 'sequence_batching' is not supported by onnxd");
  EXPECT_PB_ERROR(bm, "dynamic_batching { priority_levels: 2 }",
                  "config.pbtxt: 'dynamic_batching.priority_levels' is not supported: onnxd has no "
                  "priority levels");
  EXPECT_PB_ERROR(bm, "dynamic_batching { default_queue_policy { timeout_action: DELAY } }",
                  "config.pbtxt: default_queue_policy.timeout_action 'DELAY' is not supported "
                  "(REJECT only)");
  EXPECT_PB_ERROR(bm,
                  "input { name: \"input\" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 2, "
                  "2 ] } }",
                  "config.pbtxt: 'reshape' of 'input' is not supported: declare the model's own "
                  "shape");
  EXPECT_PB_ERROR(bm, "max_batch_size: 4\nbogus: 1", "config.pbtxt: unknown key 'bogus'");
  EXPECT_PB_ERROR(bm, "max_batch_size 4",
                  "config.pbtxt: 1:16: expected ':' or '{' after "
                  "'max_batch_size'");
  EXPECT_PB_ERROR(bm, "max_batch_size: -1",
                  "config.pbtxt: 'max_batch_size' must be an integer from 0 to 1024");
}

TEST(declared_io_checked_against_model) {
  /* batchable bm: input [-1,4], mask [-1,-1], output [-1,1] */
  EXPECT_PB_ERROR(bm, "input { name: \"nope\" data_type: TYPE_FP32 dims: [ 4 ] }",
                  "config.pbtxt: input 'nope' is not an input of the model");
  EXPECT_PB_ERROR(bm, "output { name: \"input\" data_type: TYPE_FP32 dims: [ 4 ] }",
                  "config.pbtxt: output 'input' is not an output of the model");
  EXPECT_PB_ERROR(bm, "input { name: \"input\" data_type: TYPE_INT64 dims: [ 4 ] }",
                  "config.pbtxt: input 'input': data_type is TYPE_INT64, the model has TYPE_FP32");
  EXPECT_PB_ERROR(bm, "input { name: \"input\" data_type: TYPE_FP32 dims: [ 5 ] }",
                  "config.pbtxt: input 'input': dims[0] is 5, the model's dimension is 4");
  EXPECT_PB_ERROR(bm, "input { name: \"input\" data_type: TYPE_FP32 dims: [ -1, 4 ] }",
                  "config.pbtxt: input 'input': dims has 2 values, the model's rank is 2 (dims "
                  "exclude the batch dimension when max_batch_size > 0)");
  EXPECT_PB_ERROR(bm, "input { name: \"mask\" data_type: TYPE_FP32 dims: [ 3 ] }",
                  "config.pbtxt: input 'mask': dims[0] is 3, the model's dimension is variable "
                  "(use -1)");
  EXPECT_PB_ERROR(bm, "input { name: \"input\" data_type: TYPE_FOO }",
                  "config.pbtxt: unknown data_type 'TYPE_FOO'");
  /* max_batch_size 0: dims are the whole shape */
  ox_model_config_t cfg;
  CHECK_INT(load_pbtxt(&fm,
                       "max_batch_size: 0 input { name: \"x\" data_type: TYPE_FP32 dims: [ 2, 3 ] "
                       "} output { name: \"y\" data_type: TYPE_FP32 dims: [ 2, 3 ] }",
                       &cfg),
            0);
  CHECK_STR(err, "");
  ox_model_config_free(&cfg);
  EXPECT_PB_ERROR(fm, "input { name: \"x\" data_type: TYPE_FP32 dims: [ 3 ] }",
                  "config.pbtxt: input 'x': dims has 1 values, the model's rank is 2");
}

TEST(triton_json_fields_in_config_json) {
  ox_model_config_t cfg;
  EXPECT_OK(bm,
            "{\"name\":\"bm\",\"platform\":\"onnxruntime_onnx\",\"backend\":\"onnxruntime\","
            "\"max_batch_size\":8,\"input\":[{\"name\":\"input\",\"data_type\":\"TYPE_FP32\","
            "\"dims\":[4]}],\"output\":[{\"name\":\"output\",\"data_type\":\"TYPE_FP32\","
            "\"dims\":[1]}],\"instance_group\":[{\"count\":2,\"kind\":\"KIND_CPU\"},{}],"
            "\"version_policy\":{\"specific\":{\"versions\":[1,3]}},"
            "\"parameters\":{\"x\":{\"string_value\":\"1\"}}}",
            &cfg);
  CHECK_INT(cfg.sched.instance_count, 3); /* 2 + a group with the default count 1 */
  CHECK_INT(cfg.version_policy.kind, 2);
  CHECK_INT(cfg.version_policy.num_specific, 2);
  if (cfg.version_policy.num_specific == 2) CHECK_INT(cfg.version_policy.versions[1], 3);
  ox_model_config_free(&cfg);
  /* protobuf's JSON form: 64-bit integers as strings, as Triton's GET config writes them */
  EXPECT_OK(bm,
            "{\"max_batch_size\":8,\"input\":[{\"name\":\"input\",\"data_type\":\"TYPE_FP32\","
            "\"dims\":[\"4\"]}],\"dynamic_batching\":{\"max_queue_delay_microseconds\":\"250\"},"
            "\"version_policy\":{\"specific\":{\"versions\":[\"2\"]}}}",
            &cfg);
  CHECK_INT(cfg.sched.max_queue_delay_us, 250);
  CHECK_INT(cfg.version_policy.num_specific, 1);
  ox_model_config_free(&cfg);
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"max_queue_delay_microseconds\":\"4x\"}}",
               "config.json: 'max_queue_delay_microseconds' must be an integer from 0 to 10000000");
  EXPECT_ERROR(bm, "{\"version_policy\":{\"latest\":{\"num_versions\":0}}}",
               "config.json: 'version_policy.latest.num_versions' must be an integer from 1 to "
               "1000000");
  EXPECT_ERROR(bm, "{\"version_policy\":{\"all\":{},\"latest\":{}}}",
               "config.json: 'version_policy' must have exactly one of latest, all, specific");
  EXPECT_ERROR(bm, "{\"version_policy\":{}}",
               "config.json: 'version_policy' must have one of latest, all, specific");
  EXPECT_ERROR(bm, "{\"version_policy\":{\"specific\":{\"versions\":[]}}}",
               "config.json: 'version_policy.specific.versions' is missing or empty");
  EXPECT_ERROR(bm, "{\"version_policy\":{\"newest\":{}}}",
               "config.json: unknown key 'version_policy.newest' (latest, all or specific)");
}

/* What Triton's GET /v2/models/{m}/config answers for an ONNX model, sent back as the
 * config of a load request (tritonclient load_model(config=json.dumps(cfg))). */
TEST(triton_get_config_round_trip) {
  ox_model_config_t cfg;
  EXPECT_OK(bm,
            "{\"name\":\"bm\",\"platform\":\"onnxruntime_onnx\",\"backend\":\"onnxruntime\","
            "\"runtime\":\"\",\"version_policy\":{\"latest\":{\"num_versions\":1}},"
            "\"max_batch_size\":4,\"input\":[{\"name\":\"input\",\"data_type\":\"TYPE_FP32\","
            "\"format\":\"FORMAT_NONE\",\"dims\":[\"4\"],\"is_shape_tensor\":false,"
            "\"allow_ragged_batch\":false,\"optional\":false}],\"output\":[{\"name\":\"output\","
            "\"data_type\":\"TYPE_FP32\",\"dims\":[\"1\"],\"label_filename\":\"\","
            "\"is_shape_tensor\":false}],\"batch_input\":[],\"batch_output\":[],"
            "\"optimization\":{\"priority\":\"PRIORITY_DEFAULT\",\"input_pinned_memory\":"
            "{\"enable\":true}},\"dynamic_batching\":{\"preferred_batch_size\":[],"
            "\"max_queue_delay_microseconds\":\"0\",\"preserve_ordering\":false,"
            "\"priority_levels\":\"0\",\"default_priority_level\":\"0\","
            "\"default_queue_policy\":{\"timeout_action\":\"REJECT\","
            "\"default_timeout_microseconds\":\"0\",\"allow_timeout_override\":false,"
            "\"max_queue_size\":0},\"priority_queue_policy\":{}},\"instance_group\":[{\"name\":"
            "\"bm\",\"kind\":\"KIND_CPU\",\"count\":2,\"gpus\":[],\"secondary_devices\":[],"
            "\"profile\":[],\"passive\":false,\"host_policy\":\"\"}],\"default_model_filename\":"
            "\"model.onnx\",\"cc_model_filenames\":{},\"metric_tags\":{},\"parameters\":{},"
            "\"model_warmup\":[]}",
            &cfg);
  CHECK_INT(cfg.sched.max_batch_size, 4);
  CHECK_INT(cfg.sched.instance_count, 2);
  ox_model_config_free(&cfg);
  EXPECT_ERROR(bm, "{\"batch_input\":[{\"kind\":\"BATCH_ELEMENT_COUNT\"}]}",
               "config.json: 'batch_input' is not supported by onnxd");
  EXPECT_ERROR(bm, "{\"dynamic_batching\":{\"priority_queue_policy\":{\"1\":{}}}}",
               "config.json: 'dynamic_batching.priority_queue_policy' is not supported: onnxd has "
               "no priority levels");
  EXPECT_ERROR(bm, "{\"input\":[{\"name\":\"input\",\"allow_ragged_batch\":true}]}",
               "config.json: 'allow_ragged_batch' of 'input' is not supported");
}

TEST(override_text) {
  ox_model_config_t cfg;
  if (!setup_repo()) return;
  write_cfg(&bm, "{\"max_batch_size\":4}");
  const char *o = "{\"max_batch_size\":2,\"instance_group\":[{\"count\":4}]}";
  CHECK_INT(ox_model_config_load_text(repo_dir, &bm, 3, o, strlen(o), &cfg, err, sizeof err), 0);
  CHECK_INT(cfg.sched.max_batch_size, 2);
  CHECK_INT(cfg.sched.instance_count, 4);
  ox_model_config_free(&cfg);
  o = "{\"bogus\":1}";
  CHECK_INT(ox_model_config_load_text(repo_dir, &bm, 3, o, strlen(o), &cfg, err, sizeof err),
            OX_EINVALID);
  CHECK_STR(err, "config: unknown key 'bogus'");
  ox_model_config_free(&cfg);
  write_cfg(&bm, NULL);
}

TEST(version_policy_read_and_select) {
  ox_version_policy_t p;
  if (!setup_repo()) return;
  CHECK_INT(ox_version_policy_read(repo_dir, "bm", NULL, 0, &p, err, sizeof err), 0);
  CHECK_INT(p.kind, 0);
  CHECK_INT(p.num_versions, 1);
  ox_version_policy_free(&p);
  write_pbtxt(&bm, "version_policy: { all { } }\ninput { name: \"whatever\" }");
  CHECK_INT(ox_version_policy_read(repo_dir, "bm", NULL, 0, &p, err, sizeof err), 0);
  CHECK_INT(p.kind, 1);
  ox_version_policy_free(&p);
  write_pbtxt(&bm, "version_policy: { specific { versions: [ 2, 5 ] } }");
  CHECK_INT(ox_version_policy_read(repo_dir, "bm", NULL, 0, &p, err, sizeof err), 0);
  CHECK_INT(p.kind, 2);
  int64_t avail[] = {1, 2, 3, 4, 5}, out[5];
  CHECK_INT(ox_version_policy_select(&p, avail, 5, out), 2);
  CHECK(out[0] == 2 && out[1] == 5);
  ox_version_policy_free(&p);
  write_pbtxt(&bm, "version_policy: { bogus { } }");
  CHECK_INT(ox_version_policy_read(repo_dir, "bm", NULL, 0, &p, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "config.pbtxt: unknown key 'version_policy.bogus' (latest, all or specific)");
  write_pbtxt(&bm, NULL);
  write_cfg(&bm, "{\"version_policy\":{\"latest\":{\"num_versions\":3}}}");
  CHECK_INT(ox_version_policy_read(repo_dir, "bm", NULL, 0, &p, err, sizeof err), 0);
  CHECK_INT(p.num_versions, 3);
  CHECK_INT(ox_version_policy_select(&p, avail, 5, out), 3);
  CHECK(out[0] == 3 && out[2] == 5);
  CHECK_INT(ox_version_policy_select(&p, avail, 2, out), 2);
  ox_version_policy_free(&p);
  write_cfg(&bm, NULL);
  const char *o = "{\"version_policy\":{\"all\":{}}}";
  CHECK_INT(ox_version_policy_read(repo_dir, "bm", o, strlen(o), &p, err, sizeof err), 0);
  CHECK_INT(p.kind, 1);
  CHECK_INT(ox_version_policy_select(&p, avail, 5, out), 5);
  ox_version_policy_free(&p);
  /* the name must keep the path inside the repository */
  CHECK_INT(ox_version_policy_read(repo_dir, "..", NULL, 0, &p, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "config.json: '..' is not a model name");
  CHECK_INT(ox_version_policy_read(repo_dir, "a/b", NULL, 0, &p, err, sizeof err), OX_EINVALID);
}

/* Single-model mode: the model's own directory, read by path; a "name" in it is not checked
 * (the folder it came from had its own name), everything else is. */
TEST(model_dir_reads_without_name_check) {
  if (!setup_repo()) return;
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/bm", repo_dir);
  ox_model_config_t cfg;
  write_cfg(&bm, "{\"name\":\"exported_as\",\"max_batch_size\":4}");
  CHECK_INT(ox_model_config_load(repo_dir, &bm, 3, &cfg, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "config.json: 'name' is 'exported_as', not the folder's name");
  CHECK_INT(ox_model_config_load_dir(dir, NULL, &bm, 3, NULL, 0, &cfg, err, sizeof err), 0);
  CHECK_INT(cfg.sched.max_batch_size, 4);
  CHECK_INT(cfg.from_file, 1);
  ox_model_config_free(&cfg);
  write_cfg(&bm, "{\"bogus\":1}");
  CHECK_INT(ox_model_config_load_dir(dir, NULL, &bm, 3, NULL, 0, &cfg, err, sizeof err),
            OX_EINVALID);
  CHECK_STR(err, "config.json: unknown key 'bogus'");
  write_cfg(&bm, "{\"version_policy\":{\"all\":{}},\"name\":\"x\"}");
  ox_version_policy_t p;
  CHECK_INT(ox_version_policy_read_dir(dir, NULL, NULL, 0, &p, err, sizeof err), 0);
  CHECK_INT(p.kind, 1);
  ox_version_policy_free(&p);
  write_cfg(&bm, NULL);
  CHECK_INT(ox_model_config_load_dir(dir, NULL, &bm, 3, NULL, 0, &cfg, err, sizeof err), 0);
  CHECK_INT(cfg.from_file, 0); /* no file: the defaults */
  ox_model_config_free(&cfg);
}

TEST(cleanup) {
  if (!repo_ok) return;
  const char *names[] = {"bm", "fm", "om", "sm", "rm", "um", "nm"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s/config.json", repo_dir, names[i]);
    unlink(p);
    snprintf(p, sizeof p, "%s/%s", repo_dir, names[i]);
    CHECK_INT(rmdir(p), 0);
  }
  CHECK_INT(rmdir(repo_dir), 0);
}

TEST_MAIN(T(defaults_batchable_without_file), T(defaults_fixed_without_file),
          T(defaults_not_batchable_variants), T(defaults_instance_count_at_least_one),
          T(empty_object_keeps_defaults), T(full_config), T(fixed_model_with_queue_settings),
          T(limits_inclusive), T(name_must_match_folder), T(unknown_key_top_level),
          T(unknown_key_dynamic_batching), T(unknown_key_model_warmup), T(unknown_key_warmup_input),
          T(out_of_range_top_level), T(out_of_range_dynamic_batching), T(out_of_range_model_warmup),
          T(warmup_limits), T(too_many_warmups), T(preferred_larger_than_max),
          T(max_batch_size_needs_dynamic_first_dim), T(refused_values_do_not_land_in_config),
          T(bad_json), T(nul_byte_in_file), T(too_large_file), T(small_error_buffer),
          T(pbtxt_triton_config), T(pbtxt_config_json_wins), T(pbtxt_refusals),
          T(declared_io_checked_against_model), T(triton_json_fields_in_config_json),
          T(triton_get_config_round_trip), T(override_text), T(version_policy_read_and_select),
          T(model_dir_reads_without_name_check), T(cleanup))
