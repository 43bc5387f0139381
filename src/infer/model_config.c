/* model_config.c: reads, validates and renders a model's config.json (see model_config.h).
 * Parsed with the bounded JSON scanner of proto/json.h; a config file is at most 1 MiB. */
#include "infer/model_config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/log.h"
#include "core/text.h"
#include "proto/json.h"
#include "proto/numconv.h"

#define OX_CONFIG_MAX_BYTES (1 << 20)

typedef struct {
  ox_json_t js;
  char *err;
  size_t errcap;
} cfg_parser_t;

__attribute__((format(printf, 2, 3))) static int cfg_fail(cfg_parser_t *p, const char *fmt, ...) {
  char msg[240];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(p->err, p->errcap, "config.json: %s", msg);
  return OX_EINVALID;
}

static int cfg_char(cfg_parser_t *p, char c) {
  ox_json_ws(&p->js);
  if (p->js.p >= p->js.end || *p->js.p != c) return OX_EINVALID;
  p->js.p++;
  return 0;
}

static int cfg_peek(cfg_parser_t *p, char c) {
  ox_json_ws(&p->js);
  return p->js.p < p->js.end && *p->js.p == c;
}

/* Reads an object key into key (NUL-terminated, escapes not allowed) and the colon. */
static int cfg_key(cfg_parser_t *p, char *key, size_t cap) {
  ox_json_ws(&p->js);
  ox_slice_t s;
  int esc;
  if (p->js.p >= p->js.end || *p->js.p != '"' || ox_json_string(&p->js, &s, &esc) || esc ||
      s.len >= cap)
    return cfg_fail(p, "bad object key");
  memcpy(key, s.ptr, s.len);
  key[s.len] = 0;
  if (cfg_char(p, ':')) return cfg_fail(p, "expected ':' after \"%s\"", key);
  return 0;
}

static int cfg_uint(cfg_parser_t *p, const char *key, uint64_t min, uint64_t max, uint64_t *out) {
  ox_json_ws(&p->js);
  ox_json_number_t n;
  if (p->js.p >= p->js.end || (*p->js.p != '-' && (*p->js.p < '0' || *p->js.p > '9')) ||
      ox_json_number(&p->js, &n) || !n.integral || n.overflow || (n.neg && n.mag) || n.mag < min ||
      n.mag > max) {
    char msg[160];
    snprintf(msg, sizeof msg, "'%s' must be an integer from %" PRIu64 " to %" PRIu64, key, min,
             max);
    return cfg_fail(p, "%s", msg);
  }
  *out = n.mag;
  return 0;
}

static int cfg_bool(cfg_parser_t *p, const char *key, int *out) {
  ox_json_ws(&p->js);
  size_t left = (size_t)(p->js.end - p->js.p);
  if (left >= 4 && !memcmp(p->js.p, "true", 4)) {
    p->js.p += 4;
    *out = 1;
    return 0;
  }
  if (left >= 5 && !memcmp(p->js.p, "false", 5)) {
    p->js.p += 5;
    *out = 0;
    return 0;
  }
  return cfg_fail(p, "'%s' must be true or false", key);
}

static int cfg_str(cfg_parser_t *p, const char *key, char *out, size_t cap) {
  ox_json_ws(&p->js);
  ox_slice_t s;
  int esc;
  if (p->js.p >= p->js.end || *p->js.p != '"' || ox_json_string(&p->js, &s, &esc) || esc ||
      s.len >= cap)
    return cfg_fail(p, "'%s' must be a short string without escapes", key);
  memcpy(out, s.ptr, s.len);
  out[s.len] = 0;
  return 0;
}

/* Iterates an object: calls fn for each key with the cursor at its value. */
typedef int (*cfg_member_fn)(cfg_parser_t *p, const char *key, void *ctx);
static int cfg_object(cfg_parser_t *p, const char *what, cfg_member_fn fn, void *ctx) {
  if (cfg_char(p, '{')) return cfg_fail(p, "%s must be an object", what);
  if (cfg_peek(p, '}')) {
    p->js.p++;
    return 0;
  }
  for (;;) {
    char key[128];
    int rc = cfg_key(p, key, sizeof key);
    if (rc) return rc;
    rc = fn(p, key, ctx);
    if (rc) return rc;
    if (cfg_peek(p, ',')) {
      p->js.p++;
      continue;
    }
    if (cfg_char(p, '}')) return cfg_fail(p, "expected ',' or '}' in %s", what);
    return 0;
  }
}

typedef struct {
  ox_model_config_t *cfg;
  const ox_model_t *m;
  int seen_max_batch, seen_db, seen_view;
  ox_warmup_t *w;
  ox_fcol_t *col; /* the feature_view column being read */
  size_t col_index;
  unsigned col_seen; /* which of its keys were seen (FK_* bits) */
} cfg_ctx_t;

/* A finite JSON number, correctly rounded to float32. */
static int cfg_float(cfg_parser_t *p, const char *key, float *out) {
  ox_json_ws(&p->js);
  ox_json_number_t n;
  float v;
  if (p->js.p >= p->js.end || (*p->js.p != '-' && (*p->js.p < '0' || *p->js.p > '9')) ||
      ox_json_number(&p->js, &n) || ox_parse_f32(n.text.ptr, n.text.len, &v) != n.text.len ||
      !__builtin_isfinite(v))
    return cfg_fail(p, "'%s' must be a finite number", key);
  *out = v;
  return 0;
}

/* Names of tables and key parameters: [A-Za-z0-9_.-]+, so "table:key" and the server's own
 * "~..." keys never collide. */
static int cfg_ident_ok(const char *s) {
  return *s && ox_name_valid(s, strlen(s));
}

enum { FK_RAW = 1, FK_VELOCITY = 2, FK_ROW = 4, FK_TABLE = 8, FK_WIDTH = 16, FK_DEFAULT = 32 };

static int fcol_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_fcol_t *col = c->col;
  static const struct {
    const char *name;
    unsigned bit;
  } keys[] = {{"raw", FK_RAW},     {"velocity", FK_VELOCITY}, {"row", FK_ROW},
              {"table", FK_TABLE}, {"width", FK_WIDTH},       {"default", FK_DEFAULT}};
  unsigned bit = 0;
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (!strcmp(key, keys[i].name)) bit = keys[i].bit;
  if (!bit) return cfg_fail(p, "unknown key 'feature_view.columns[%zu].%s'", c->col_index, key);
  if (c->col_seen & bit)
    return cfg_fail(p, "duplicate key 'feature_view.columns[%zu].%s'", c->col_index, key);
  c->col_seen |= bit;
  char what[96];
  snprintf(what, sizeof what, "feature_view.columns[%zu].%s", c->col_index, key);
  if (bit & (FK_RAW | FK_VELOCITY | FK_ROW)) {
    if (c->col_seen & (FK_RAW | FK_VELOCITY | FK_ROW) & ~bit)
      return cfg_fail(p,
                      "feature_view.columns[%zu] must have exactly one of 'raw', 'velocity', "
                      "'row'",
                      c->col_index);
    col->kind = bit == FK_RAW ? OX_FCOL_RAW : bit == FK_VELOCITY ? OX_FCOL_VELOCITY : OX_FCOL_ROW;
    int rc = cfg_str(p, what, col->name, sizeof col->name);
    if (!rc && !cfg_ident_ok(col->name))
      return cfg_fail(p, "'%s' must be a name of letters, digits, '_', '.' or '-'", what);
    return rc;
  }
  if (bit == FK_TABLE) {
    int rc = cfg_str(p, what, col->table, sizeof col->table);
    if (!rc && !cfg_ident_ok(col->table))
      return cfg_fail(p, "'%s' must be a name of letters, digits, '_', '.' or '-'", what);
    return rc;
  }
  if (bit == FK_WIDTH) {
    uint64_t v = 0;
    int rc = cfg_uint(p, what, 1, OX_FVIEW_MAX_ROW, &v);
    col->width = (uint32_t)v;
    return rc;
  }
  return cfg_float(p, what, &col->dflt);
}

static int fview_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_feature_view_t *v = &c->cfg->view;
  if (!strcmp(key, "input")) return cfg_str(p, "feature_view.input", v->input, sizeof v->input);
  if (!strcmp(key, "mandatory")) return cfg_bool(p, "feature_view.mandatory", &v->mandatory);
  if (!strcmp(key, "deadline_us"))
    return cfg_uint(p, "feature_view.deadline_us", 1, 60000000, &v->deadline_us);
  if (strcmp(key, "columns")) return cfg_fail(p, "unknown key 'feature_view.%s'", key);
  if (cfg_char(p, '[')) return cfg_fail(p, "'feature_view.columns' must be an array");
  free(v->cols);
  v->cols = NULL;
  v->num_cols = 0;
  if (cfg_peek(p, ']')) {
    p->js.p++;
    return 0;
  }
  for (;;) {
    if (v->num_cols == OX_FVIEW_MAX_COLUMNS)
      return cfg_fail(p, "more than %d feature_view.columns", OX_FVIEW_MAX_COLUMNS);
    ox_fcol_t *nc = realloc(v->cols, sizeof *nc * (v->num_cols + 1));
    if (!nc) return OX_ENOMEM;
    v->cols = nc;
    c->col = &nc[v->num_cols];
    c->col_index = v->num_cols++;
    c->col_seen = 0;
    memset(c->col, 0, sizeof *c->col);
    char what[64];
    snprintf(what, sizeof what, "feature_view.columns[%zu]", c->col_index);
    int rc = cfg_object(p, what, fcol_member, c);
    if (rc) return rc;
    ox_fcol_t *col = c->col;
    unsigned seen = c->col_seen;
    if (!(seen & (FK_RAW | FK_VELOCITY | FK_ROW)))
      return cfg_fail(p, "%s needs one of 'raw', 'velocity', 'row'", what);
    if (col->kind == OX_FCOL_ROW) {
      if (!(seen & FK_TABLE) || !(seen & FK_WIDTH))
        return cfg_fail(p, "%s: a 'row' column needs 'table' and 'width'", what);
    } else if (seen & (FK_TABLE | FK_WIDTH | FK_DEFAULT)) {
      return cfg_fail(p, "%s: 'table', 'width' and 'default' belong to 'row' columns", what);
    }
    if (col->kind == OX_FCOL_RAW) col->width = 1;
    if (col->kind == OX_FCOL_VELOCITY) {
      col->width = 8; /* OX_FEAT_VELOCITY_N */
      size_t n = strlen(col->name);
      if (n > 3 && !strcmp(col->name + n - 3, "_id")) n -= 3;
      memcpy(col->etype, col->name, n);
      col->etype[n] = 0;
    }
    if (cfg_peek(p, ',')) {
      p->js.p++;
      continue;
    }
    if (cfg_char(p, ']')) return cfg_fail(p, "bad 'feature_view.columns' array");
    return 0;
  }
}

/* Checks a parsed feature_view against the model: the input it fills exists, is FP32 and has
 * shape [N, width] (N dynamic or 1, width dynamic or equal). */
static int fview_check(const ox_model_t *m, ox_feature_view_t *v, char *err, size_t errcap) {
  if (!v->input[0]) {
    snprintf(err, errcap, "config.json: 'feature_view.input' is missing");
    return OX_EINVALID;
  }
  if (!v->num_cols) {
    snprintf(err, errcap, "config.json: 'feature_view.columns' is missing or empty");
    return OX_EINVALID;
  }
  uint64_t width = 0;
  for (size_t i = 0; i < v->num_cols; i++) width += v->cols[i].width;
  if (width > OX_FVIEW_MAX_WIDTH) {
    snprintf(err, errcap,
             "config.json: the feature_view's columns add up to %" PRIu64
             " values, "
             "more than %d",
             width, OX_FVIEW_MAX_WIDTH);
    return OX_EINVALID;
  }
  v->width = (uint32_t)width;
  size_t k = 0;
  while (k < m->num_inputs && strcmp(m->inputs[k].name, v->input)) k++;
  if (k == m->num_inputs) {
    snprintf(err, errcap, "config.json: 'feature_view.input' '%.100s' is not an input of the model",
             v->input);
    return OX_EINVALID;
  }
  const ox_tensor_info_t *in = &m->inputs[k];
  if (in->dtype != OX_DT_FP32 || in->rank != 2 || (in->dims[0] != -1 && in->dims[0] != 1) ||
      (in->dims[1] != -1 && in->dims[1] != (int64_t)width)) {
    snprintf(err, errcap,
             "config.json: 'feature_view.input' '%.100s' must be FP32 of shape "
             "[N, %u] to take the view's %u values",
             v->input, v->width, v->width);
    return OX_EINVALID;
  }
  for (size_t i = 0; i < v->num_cols; i++) {
    const ox_fcol_t *c = &v->cols[i];
    if (c->kind != OX_FCOL_RAW) continue;
    if (!strcmp(c->name, v->input)) {
      snprintf(err, errcap,
               "config.json: feature_view.columns[%zu]: raw input '%s' is the "
               "assembled input itself",
               i, c->name);
      return OX_EINVALID;
    }
  }
  v->input_idx = k;
  v->enabled = 1;
  return 0;
}

static int db_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_sched_config_t *s = &c->cfg->sched;
  uint64_t v = 0;
  int rc;
  if (!strcmp(key, "max_queue_delay_microseconds")) {
    rc = cfg_uint(p, key, 0, 10000000, &v);
    if (!rc) s->max_queue_delay_us = v;
  } else if (!strcmp(key, "max_queue_size")) {
    rc = cfg_uint(p, key, 0, 1000000, &v);
    if (!rc) s->max_queue_size = (uint32_t)v;
  } else if (!strcmp(key, "default_timeout_microseconds")) {
    rc = cfg_uint(p, key, 0, 3600000000ull, &v);
    if (!rc) s->default_timeout_us = v;
  } else if (!strcmp(key, "preferred_batch_size")) {
    if (cfg_char(p, '[')) return cfg_fail(p, "'%s' must be an array", key);
    s->num_preferred = 0;
    if (cfg_peek(p, ']')) {
      p->js.p++;
      return 0;
    }
    for (;;) {
      if (s->num_preferred == OX_MAX_PREFERRED)
        return cfg_fail(p, "too many preferred_batch_size values");
      rc = cfg_uint(p, key, 1, 1024, &v);
      if (rc) return rc;
      s->preferred_batch_size[s->num_preferred++] = (uint32_t)v;
      if (cfg_peek(p, ',')) {
        p->js.p++;
        continue;
      }
      if (cfg_char(p, ']')) return cfg_fail(p, "bad '%s' array", key);
      return 0;
    }
  } else {
    return cfg_fail(p, "unknown key 'dynamic_batching.%s'", key);
  }
  return rc;
}

static int warm_input_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_warmup_t *w = c->w;
  typeof(w->inputs[0]) *in = &w->inputs[w->num_inputs - 1];
  if (!strcmp(key, "data_type")) {
    char t[32];
    int rc = cfg_str(p, key, t, sizeof t);
    if (rc) return rc;
    static const struct {
      const char *n;
      ox_dtype_t d;
    } map[] = {
        {"TYPE_BOOL", OX_DT_BOOL},     {"TYPE_UINT8", OX_DT_UINT8},   {"TYPE_UINT16", OX_DT_UINT16},
        {"TYPE_UINT32", OX_DT_UINT32}, {"TYPE_UINT64", OX_DT_UINT64}, {"TYPE_INT8", OX_DT_INT8},
        {"TYPE_INT16", OX_DT_INT16},   {"TYPE_INT32", OX_DT_INT32},   {"TYPE_INT64", OX_DT_INT64},
        {"TYPE_FP16", OX_DT_FP16},     {"TYPE_BF16", OX_DT_BF16},     {"TYPE_FP32", OX_DT_FP32},
        {"TYPE_FP64", OX_DT_FP64},     {"TYPE_STRING", OX_DT_BYTES}};
    in->dtype = OX_DT_INVALID;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
      if (!strcmp(map[i].n, t)) in->dtype = map[i].d;
    if (in->dtype == OX_DT_INVALID) return cfg_fail(p, "unknown warm-up data_type '%s'", t);
    return 0;
  }
  if (!strcmp(key, "dims")) {
    if (cfg_char(p, '[')) return cfg_fail(p, "'dims' must be an array");
    in->rank = 0;
    if (cfg_peek(p, ']')) {
      p->js.p++;
      return 0;
    }
    for (;;) {
      uint64_t v = 0;
      if (in->rank == OX_RT_MAX_RANK - 1) return cfg_fail(p, "too many warm-up dims");
      int rc = cfg_uint(p, "dims", 0, 1 << 20, &v);
      if (rc) return rc;
      in->dims[in->rank++] = (int64_t)v;
      if (cfg_peek(p, ',')) {
        p->js.p++;
        continue;
      }
      if (cfg_char(p, ']')) return cfg_fail(p, "bad 'dims' array");
      return 0;
    }
  }
  int b;
  if (!strcmp(key, "zero_data")) {
    int rc = cfg_bool(p, key, &b);
    if (!rc && b) in->kind = 0;
    return rc;
  }
  if (!strcmp(key, "random_data")) {
    int rc = cfg_bool(p, key, &b);
    if (!rc && b) in->kind = 1;
    return rc;
  }
  if (!strcmp(key, "input_data_file")) {
    in->kind = 2;
    int rc = cfg_str(p, key, in->file, sizeof in->file);
    if (!rc && (strchr(in->file, '/') || !strcmp(in->file, "..") || !strcmp(in->file, ".")))
      return cfg_fail(p, "input_data_file '%s' must be a file name in the model's warmup/ folder",
                      in->file);
    return rc;
  }
  return cfg_fail(p, "unknown key 'model_warmup.inputs.*.%s'", key);
}

static int warm_inputs_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_warmup_t *w = c->w;
  if (w->num_inputs == sizeof w->inputs / sizeof w->inputs[0])
    return cfg_fail(p, "too many warm-up inputs");
  typeof(w->inputs[0]) *in = &w->inputs[w->num_inputs++];
  memset(in, 0, sizeof *in);
  if (strlen(key) >= sizeof in->name) return cfg_fail(p, "warm-up input name too long");
  strcpy(in->name, key);
  return cfg_object(p, "a warm-up input", warm_input_member, c);
}

static int warm_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  uint64_t v = 0;
  if (!strcmp(key, "name")) return cfg_str(p, key, c->w->name, sizeof c->w->name);
  if (!strcmp(key, "batch_size")) {
    int rc = cfg_uint(p, key, 1, 1024, &v);
    if (!rc) c->w->batch_size = (uint32_t)v;
    return rc;
  }
  if (!strcmp(key, "count")) {
    int rc = cfg_uint(p, key, 1, 1000, &v);
    if (!rc) c->w->count = (uint32_t)v;
    return rc;
  }
  if (!strcmp(key, "inputs")) return cfg_object(p, "'model_warmup.inputs'", warm_inputs_member, c);
  return cfg_fail(p, "unknown key 'model_warmup.%s'", key);
}

static int top_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_sched_config_t *s = &c->cfg->sched;
  uint64_t v = 0;
  int rc;
  if (!strcmp(key, "name")) {
    char name[256];
    rc = cfg_str(p, key, name, sizeof name);
    if (!rc && strcmp(name, c->m->name))
      return cfg_fail(p, "'name' is '%.100s', not the folder's name", name);
    return rc;
  }
  if (!strcmp(key, "max_batch_size")) {
    rc = cfg_uint(p, key, 0, 1024, &v);
    if (!rc) s->max_batch_size = (uint32_t)v;
    c->seen_max_batch = 1;
    return rc;
  }
  if (!strcmp(key, "instance_count")) {
    rc = cfg_uint(p, key, 1, 64, &v);
    if (!rc) s->instance_count = (uint32_t)v;
    return rc;
  }
  if (!strcmp(key, "dynamic_batching")) {
    c->seen_db = 1;
    return cfg_object(p, "'dynamic_batching'", db_member, c);
  }
  if (!strcmp(key, "feature_view")) {
    if (c->seen_view) return cfg_fail(p, "duplicate key 'feature_view'");
    c->seen_view = 1;
    c->cfg->view.deadline_us = 20000;
    return cfg_object(p, "'feature_view'", fview_member, c);
  }
  if (!strcmp(key, "model_warmup")) {
    if (cfg_char(p, '[')) return cfg_fail(p, "'model_warmup' must be an array");
    if (cfg_peek(p, ']')) {
      p->js.p++;
      return 0;
    }
    for (;;) {
      if (c->cfg->num_warmup == 16) return cfg_fail(p, "more than 16 model_warmup entries");
      ox_warmup_t *nw = realloc(c->cfg->warmup, sizeof *nw * (c->cfg->num_warmup + 1));
      if (!nw) return OX_ENOMEM;
      c->cfg->warmup = nw;
      c->w = &nw[c->cfg->num_warmup++];
      memset(c->w, 0, sizeof *c->w);
      c->w->batch_size = 1;
      c->w->count = 1;
      rc = cfg_object(p, "a model_warmup entry", warm_member, c);
      if (rc) return rc;
      if (cfg_peek(p, ',')) {
        p->js.p++;
        continue;
      }
      if (cfg_char(p, ']')) return cfg_fail(p, "bad 'model_warmup' array");
      return 0;
    }
  }
  return cfg_fail(p, "unknown key '%s'", key);
}

static int batchable(const ox_model_t *m) {
  for (size_t i = 0; i < m->num_inputs; i++)
    if (m->inputs[i].rank < 1 || m->inputs[i].dims[0] != -1) return 0;
  for (size_t i = 0; i < m->num_outputs; i++)
    if (m->outputs[i].rank < 1 || m->outputs[i].dims[0] != -1) return 0;
  return m->num_inputs > 0;
}

int ox_model_config_load(const char *repo_dir, const ox_model_t *m, int infer_threads,
                         ox_model_config_t *cfg, char *err, size_t errcap) {
  memset(cfg, 0, sizeof *cfg);
  int can_batch = batchable(m);
  cfg->sched.max_batch_size = can_batch ? 32 : 0;
  cfg->sched.instance_count = (uint32_t)(infer_threads > 0 ? infer_threads : 1);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s/config.json", repo_dir, m->name);
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  cfg->from_file = 1;
  char *text = malloc(OX_CONFIG_MAX_BYTES + 1);
  size_t len = text ? fread(text, 1, OX_CONFIG_MAX_BYTES + 1, f) : 0;
  fclose(f);
  if (!text) return OX_ENOMEM;
  if (len > OX_CONFIG_MAX_BYTES) {
    free(text);
    snprintf(err, errcap, "config.json: larger than 1 MiB");
    return OX_EINVALID;
  }
  cfg_parser_t p = {.err = err, .errcap = errcap};
  ox_json_init(&p.js, text, len);
  cfg_ctx_t ctx = {.cfg = cfg, .m = m};
  int rc = ox_json_validate(&p.js);
  if (rc) {
    snprintf(err, errcap, "config.json: invalid JSON (%s)", p.js.err ? p.js.err : "syntax");
  } else {
    ox_json_init(&p.js, text, len);
    rc = cfg_object(&p, "config.json", top_member, &ctx);
  }
  free(text);
  if (!rc && ctx.seen_view) rc = fview_check(m, &cfg->view, err, errcap);
  if (rc) return rc == OX_ENOMEM ? rc : OX_EINVALID;
  ox_sched_config_t *s = &cfg->sched;
  if (s->max_batch_size > 0 && !can_batch) {
    snprintf(err, errcap,
             "config.json: 'max_batch_size' needs a dynamic first dimension on every "
             "input and output");
    return OX_EINVALID;
  }
  for (size_t i = 0; i < s->num_preferred; i++) {
    if (s->preferred_batch_size[i] > s->max_batch_size) {
      snprintf(err, errcap,
               "config.json: 'dynamic_batching.preferred_batch_size' %u exceeds "
               "'max_batch_size' %u",
               s->preferred_batch_size[i], s->max_batch_size);
      return OX_EINVALID;
    }
  }
  for (size_t k = 0; k < cfg->num_warmup; k++) {
    ox_warmup_t *w = &cfg->warmup[k];
    for (size_t i = 0; i < w->num_inputs; i++) {
      size_t j = 0;
      while (j < m->num_inputs && strcmp(m->inputs[j].name, w->inputs[i].name)) j++;
      if (j == m->num_inputs) {
        snprintf(err, errcap,
                 "config.json: warm-up '%.60s': input '%.100s' is not an input of "
                 "the model",
                 w->name, w->inputs[i].name);
        return OX_EINVALID;
      }
      if (w->inputs[i].dtype == OX_DT_INVALID) {
        snprintf(err, errcap, "config.json: warm-up input '%s' has no data_type",
                 w->inputs[i].name);
        return OX_EINVALID;
      }
    }
  }
  return 0;
}

void ox_model_config_free(ox_model_config_t *cfg) {
  free(cfg->view.cols);
  cfg->view.cols = NULL;
  cfg->view.num_cols = 0;
  free(cfg->warmup);
  cfg->warmup = NULL;
  cfg->num_warmup = 0;
}

int ox_model_config_json(ox_buf_t *o, const ox_model_t *m, const ox_model_config_t *cfg) {
  const ox_sched_config_t *s = &cfg->sched;
  int rc = ox_buf_puts(o, "{\"name\":");
  rc |= ox_buf_append_json_string(o, m->name, strlen(m->name));
  rc |= ox_buf_printf(o,
                      ",\"platform\":\"onnx_onnxv1\",\"backend\":\"onnxruntime\","
                      "\"max_batch_size\":%u,\"instance_count\":%u",
                      s->max_batch_size, s->instance_count);
  if (s->max_batch_size > 0) {
    rc |= ox_buf_printf(o,
                        ",\"dynamic_batching\":{\"max_queue_delay_microseconds\":%" PRIu64
                        ",\"preferred_batch_size\":[",
                        s->max_queue_delay_us);
    for (size_t i = 0; i < s->num_preferred; i++)
      rc |= ox_buf_printf(o, i ? ",%u" : "%u", s->preferred_batch_size[i]);
    rc |= ox_buf_printf(o, "],\"max_queue_size\":%u,\"default_timeout_microseconds\":%" PRIu64 "}",
                        s->max_queue_size, s->default_timeout_us);
  } else {
    rc |= ox_buf_printf(o, ",\"max_queue_size\":%u,\"default_timeout_microseconds\":%" PRIu64,
                        s->max_queue_size, s->default_timeout_us);
  }
  if (cfg->view.enabled) {
    const ox_feature_view_t *v = &cfg->view;
    rc |= ox_buf_puts(o, ",\"feature_view\":{\"input\":");
    rc |= ox_buf_append_json_string(o, v->input, strlen(v->input));
    rc |= ox_buf_puts(o, ",\"columns\":[");
    for (size_t i = 0; i < v->num_cols; i++) {
      const ox_fcol_t *c = &v->cols[i];
      static const char *const kinds[] = {"raw", "velocity", "row"};
      rc |= ox_buf_printf(o, "%s{\"%s\":\"%s\"", i ? "," : "", kinds[c->kind], c->name);
      if (c->kind == OX_FCOL_ROW) {
        char num[40];
        size_t n = ox_format_f32(c->dflt, num);
        rc |= ox_buf_printf(o, ",\"table\":\"%s\",\"width\":%u,\"default\":%.*s", c->table,
                            c->width, (int)n, num);
      }
      rc |= ox_buf_puts(o, "}");
    }
    rc |= ox_buf_printf(o, "],\"width\":%u,\"mandatory\":%s,\"deadline_us\":%" PRIu64 "}", v->width,
                        v->mandatory ? "true" : "false", v->deadline_us);
  }
  rc |= ox_buf_printf(o, ",\"model_warmup_count\":%zu,\"config_file\":%s}", cfg->num_warmup,
                      cfg->from_file ? "true" : "false");
  return rc ? OX_ENOMEM : 0;
}
