/* feature_view_config_test.c: the "feature_view" of a model's config.json (infer/model_config.h)
 * without ONNX Runtime: parsed against hand-built model metadata, rendered byte for byte as
 * GET /v2/models/{m}/config shows it, and every error naming its key. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "infer/model_config.h"
#include "test.h"

static char repo_dir[] = "/tmp/onnxd-fvcfg-XXXXXX";

#define T2(n, d0, d1)                                                          \
  {                                                                            \
    .name = (char *)(n), .dtype = OX_DT_FP32, .rank = 2, .dims = {(d0), (d1) } \
  }
static ox_tensor_info_t fr_in[] = {T2("features", -1, 17), T2("other", -1, 2)};
static ox_tensor_info_t fr_out[] = {T2("p", -1, 1)};
static ox_model_t fr = {.name = "fr",
                        .version = 1,
                        .inputs = fr_in,
                        .num_inputs = 2,
                        .outputs = fr_out,
                        .num_outputs = 1};
static ox_tensor_info_t dyn_in[] = {T2("x", -1, -1)};
static ox_model_t dyn = {.name = "dyn",
                         .version = 1,
                         .inputs = dyn_in,
                         .num_inputs = 1,
                         .outputs = fr_out,
                         .num_outputs = 1};

static char err[512];

static int load(ox_model_t *m, const char *text, ox_model_config_t *cfg) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", repo_dir, m->name);
  mkdir(p, 0755);
  snprintf(p, sizeof p, "%s/%s/config.json", repo_dir, m->name);
  FILE *f = fopen(p, "wb");
  CHECK(f != NULL);
  if (!f) return -1;
  fputs(text, f);
  fclose(f);
  err[0] = 0;
  return ox_model_config_load(repo_dir, m, 2, cfg, err, sizeof err);
}

#define FRAUD_VIEW                                                                    \
  "{\"feature_view\": {\"input\": \"features\", \"columns\": [{\"raw\": \"amount\"}," \
  " {\"velocity\": \"user_id\"}, {\"velocity\": \"card_id\"}], \"mandatory\": false," \
  " \"deadline_us\": 20000}}"

TEST(fraud_view_parses_and_renders) {
  ox_model_config_t cfg;
  CHECK_INT(load(&fr, FRAUD_VIEW, &cfg), 0);
  const ox_feature_view_t *v = &cfg.view;
  CHECK(v->enabled);
  CHECK_INT(v->input_idx, 0);
  CHECK_INT(v->num_cols, 3);
  CHECK_INT(v->width, 17);
  CHECK_INT(v->cols[0].kind, OX_FCOL_RAW);
  CHECK_STR(v->cols[1].etype, "user");
  CHECK_STR(v->cols[2].etype, "card");
  CHECK_INT(v->cols[2].width, 8);
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_model_config_json(&b, &fr, &cfg), 0);
  CHECK_INT(ox_buf_append(&b, "", 1), 0);
  CHECK(strstr(b.data,
               ",\"feature_view\":{\"input\":\"features\",\"columns\":[{\"raw\":"
               "\"amount\"},{\"velocity\":\"user_id\"},{\"velocity\":\"card_id\"}],"
               "\"width\":17,\"mandatory\":false,\"deadline_us\":20000}") != NULL);
  ox_buf_free(&b);
  ox_model_config_free(&cfg);
}

TEST(row_columns_and_dynamic_width) {
  ox_model_config_t cfg;
  CHECK_INT(load(&dyn,
                 "{\"feature_view\": {\"input\": \"x\", \"mandatory\": true, \"columns\": "
                 "[{\"row\": \"user_id\", \"table\": \"profile\", \"width\": 4, "
                 "\"default\": -0.1}, {\"raw\": \"n\"}]}}",
                 &cfg),
            0);
  CHECK_INT(cfg.view.width, 5);
  CHECK_INT(cfg.view.mandatory, 1);
  CHECK_INT(cfg.view.deadline_us, 20000);
  CHECK(cfg.view.cols[0].dflt == -0.1f);
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_model_config_json(&b, &dyn, &cfg), 0);
  CHECK_INT(ox_buf_append(&b, "", 1), 0);
  CHECK(strstr(b.data,
               "{\"row\":\"user_id\",\"table\":\"profile\",\"width\":4,\"default\":-0.1}") != NULL);
  ox_buf_free(&b);
  ox_model_config_free(&cfg);
}

TEST(errors_name_the_key) {
  static const struct {
    const char *text, *err;
  } cases[] = {
      {"{\"feature_view\": {\"input\": \"features\", \"colums\": []}}",
       "config.json: unknown key 'feature_view.colums'"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"raw\": \"a\", \"bogus\": 1}]}}",
       "config.json: unknown key 'feature_view.columns[0].bogus'"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"raw\": \"a\"}, {\"row\": \"k\"}]}}",
       "config.json: feature_view.columns[1]: a 'row' column needs 'table' and 'width'"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"raw\": \"a\", \"velocity\": "
       "\"b\"}]}}",
       "config.json: feature_view.columns[0] must have exactly one of 'raw', 'velocity', 'row'"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"raw\": \"a\", \"width\": 2}]}}",
       "config.json: feature_view.columns[0]: 'table', 'width' and 'default' belong to 'row' "
       "columns"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"row\": \"k\", \"table\": \"t:x\", "
       "\"width\": 1}]}}",
       "config.json: 'feature_view.columns[0].table' must be a name of letters, digits, '_', '.' "
       "or '-'"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"row\": \"k\", \"table\": \"t\", "
       "\"width\": 0}]}}",
       "config.json: 'feature_view.columns[0].width' must be an integer from 1 to 1024"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"row\": \"k\", \"table\": \"t\", "
       "\"width\": 1, \"default\": \"0\"}]}}",
       "config.json: 'feature_view.columns[0].default' must be a finite number"},
      {"{\"feature_view\": {\"input\": \"nope\", \"columns\": [{\"raw\": \"a\"}]}}",
       "config.json: 'feature_view.input' 'nope' is not an input of the model"},
      {"{\"feature_view\": {\"columns\": [{\"raw\": \"a\"}]}}",
       "config.json: 'feature_view.input' is missing"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": []}}",
       "config.json: 'feature_view.columns' is missing or empty"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"raw\": \"x\"}]}}",
       "config.json: feature_view.columns[0]: raw input 'x' is the assembled input itself"},
      {"{\"feature_view\": {\"input\": \"x\", \"deadline_us\": 0, \"columns\": [{\"raw\": "
       "\"a\"}]}}",
       "config.json: 'feature_view.deadline_us' must be an integer from 1 to 60000000"},
      {"{\"feature_view\": {\"input\": \"x\", \"columns\": [{\"raw\": \"a\"}]}, \"feature_view\": "
       "{}}",
       "config.json: duplicate key 'feature_view'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ox_model_config_t cfg;
    CHECK_INT(load(&dyn, cases[i].text, &cfg), OX_EINVALID);
    if (strcmp(err, cases[i].err)) fprintf(stderr, "  case %zu: got \"%s\"\n", i, err);
    CHECK_STR(err, cases[i].err);
    ox_model_config_free(&cfg);
  }
  ox_model_config_t cfg;
  /* the fraud view on a model whose input has another width */
  CHECK_INT(load(&fr, "{\"feature_view\": {\"input\": \"other\", \"columns\": [{\"raw\": \"a\"}]}}",
                 &cfg),
            OX_EINVALID);
  CHECK_STR(err,
            "config.json: 'feature_view.input' 'other' must be FP32 of shape [N, 1] to take "
            "the view's 1 values");
  ox_model_config_free(&cfg);
}

static void setup(void) {
  if (!mkdtemp(repo_dir)) {
    fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
    exit(1);
  }
}

static void teardown(void) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", repo_dir);
  if (system(cmd)) fprintf(stderr, "could not remove %s\n", repo_dir);
}

TEST_MAIN(T(setup), T(fraud_view_parses_and_renders), T(row_columns_and_dynamic_width),
          T(errors_name_the_key), T(teardown))
