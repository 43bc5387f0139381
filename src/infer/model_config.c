/* model_config.c: reads, validates and renders a model's config.json (see model_config.h).
 * Parsed with the bounded JSON scanner of proto/json.h; a config file is at most 1 MiB. */
#include "infer/model_config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "core/text.h"
#include "proto/json.h"
#include "proto/numconv.h"
#include "proto/pbtxt.h"

#define OX_CONFIG_MAX_BYTES ((size_t)1 << 20)

typedef struct {
  ox_json_t js;
  const char *file; /* "config.json", "config.pbtxt" or "config" (an override) */
  char *err;
  size_t errcap;
} cfg_parser_t;

__attribute__((format(printf, 2, 3))) static int cfg_fail(cfg_parser_t *p, const char *fmt, ...) {
  char msg[240];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(p->err, p->errcap, "%s: %s", p->file, msg);
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

/* An integer at the cursor: a JSON number, or a string of decimal digits with an optional '-'
 * (protobuf's JSON form writes 64-bit fields as strings: Triton's GET config gives
 * "dims": ["4"], and clients send that back). Returns 0 with the sign and magnitude. */
static int cfg_json_int(cfg_parser_t *p, int strings, int *neg, uint64_t *mag) {
  ox_json_ws(&p->js);
  if (strings && p->js.p < p->js.end && *p->js.p == '"') {
    ox_slice_t sl;
    int esc;
    if (ox_json_string(&p->js, &sl, &esc) || esc || !sl.len) return OX_EINVALID;
    size_t i = 0;
    *neg = sl.ptr[0] == '-';
    i = (size_t)*neg;
    if (i == sl.len) return OX_EINVALID;
    uint64_t v = 0;
    for (; i < sl.len; i++) {
      if (sl.ptr[i] < '0' || sl.ptr[i] > '9') return OX_EINVALID;
      if (__builtin_mul_overflow(v, 10u, &v) ||
          __builtin_add_overflow(v, (uint64_t)(sl.ptr[i] - '0'), &v))
        return OX_EINVALID;
    }
    *mag = v;
    return 0;
  }
  ox_json_number_t n;
  if (p->js.p >= p->js.end || (*p->js.p != '-' && (*p->js.p < '0' || *p->js.p > '9')) ||
      ox_json_number(&p->js, &n) || !n.integral || n.overflow)
    return OX_EINVALID;
  *neg = n.neg;
  *mag = n.mag;
  return 0;
}

/* An unsigned integer from min to max. 32-bit fields take JSON numbers only; the 64-bit ones
 * (cfg_uint64) also take protobuf's string form. */
static int cfg_uint_any(cfg_parser_t *p, const char *key, uint64_t min, uint64_t max, int strings,
                        uint64_t *out) {
  int neg = 0;
  uint64_t mag = 0;
  if (cfg_json_int(p, strings, &neg, &mag) || (neg && mag) || mag < min || mag > max) {
    char msg[160];
    snprintf(msg, sizeof msg, "'%s' must be an integer from %" PRIu64 " to %" PRIu64, key, min,
             max);
    return cfg_fail(p, "%s", msg);
  }
  *out = mag;
  return 0;
}

static int cfg_uint(cfg_parser_t *p, const char *key, uint64_t min, uint64_t max, uint64_t *out) {
  return cfg_uint_any(p, key, min, max, 0, out);
}
static int cfg_uint64(cfg_parser_t *p, const char *key, uint64_t min, uint64_t max, uint64_t *out) {
  return cfg_uint_any(p, key, min, max, 1, out);
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

#define CFG_MAX_IO 64

/* One declared "input" or "output" entry, checked against the model once all keys are read. */
typedef struct {
  char name[128];
  ox_dtype_t dtype;
  int rank; /* -1: no "dims" */
  int64_t dims[OX_RT_MAX_RANK];
  int side;             /* 0 input, 1 output */
  char label_file[256]; /* output: "label_filename" (Triton's classification labels) */
} cfg_io_t;

typedef struct {
  ox_model_config_t *cfg;
  const ox_model_t *m; /* NULL when only the version policy is read */
  const char *name;    /* the model's (folder's) name; NULL: not checked (single-model mode) */
  int seen_vp, seen_ig;
  uint64_t instances; /* sum of instance_group counts */
  cfg_io_t *io;       /* the entry being read */
  cfg_io_t decl[2][CFG_MAX_IO];
  size_t num_decl[2];
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
static int fview_check(const ox_model_t *m, ox_feature_view_t *v, const char *file, char *err,
                       size_t errcap) {
  if (!v->input[0]) {
    snprintf(err, errcap, "%s: 'feature_view.input' is missing", file);
    return OX_EINVALID;
  }
  if (!v->num_cols) {
    snprintf(err, errcap, "%s: 'feature_view.columns' is missing or empty", file);
    return OX_EINVALID;
  }
  uint64_t width = 0;
  for (size_t i = 0; i < v->num_cols; i++) width += v->cols[i].width;
  if (width > OX_FVIEW_MAX_WIDTH) {
    snprintf(err, errcap,
             "%s: the feature_view's columns add up to %" PRIu64
             " values, "
             "more than %d",
             file, width, OX_FVIEW_MAX_WIDTH);
    return OX_EINVALID;
  }
  v->width = (uint32_t)width;
  size_t k = 0;
  while (k < m->num_inputs && strcmp(m->inputs[k].name, v->input)) k++;
  if (k == m->num_inputs) {
    snprintf(err, errcap, "%s: 'feature_view.input' '%.100s' is not an input of the model", file,
             v->input);
    return OX_EINVALID;
  }
  const ox_tensor_info_t *in = &m->inputs[k];
  if (in->dtype != OX_DT_FP32 || in->rank != 2 || (in->dims[0] != -1 && in->dims[0] != 1) ||
      (in->dims[1] != -1 && in->dims[1] != (int64_t)width)) {
    snprintf(err, errcap,
             "%s: 'feature_view.input' '%.100s' must be FP32 of shape "
             "[N, %u] to take the view's %u values",
             file, v->input, v->width, v->width);
    return OX_EINVALID;
  }
  for (size_t i = 0; i < v->num_cols; i++) {
    const ox_fcol_t *c = &v->cols[i];
    if (c->kind != OX_FCOL_RAW) continue;
    if (!strcmp(c->name, v->input)) {
      snprintf(err, errcap,
               "%s: feature_view.columns[%zu]: raw input '%s' is the "
               "assembled input itself",
               file, i, c->name);
      return OX_EINVALID;
    }
  }
  v->input_idx = k;
  v->enabled = 1;
  return 0;
}

static int dqp_member(cfg_parser_t *p, const char *key, void *vctx);

static int db_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_sched_config_t *s = &c->cfg->sched;
  uint64_t v = 0;
  int rc;
  if (!strcmp(key, "max_queue_delay_microseconds")) {
    rc = cfg_uint64(p, key, 0, 10000000, &v);
    if (!rc) s->max_queue_delay_us = v;
  } else if (!strcmp(key, "max_queue_size")) {
    rc = cfg_uint(p, key, 0, 1000000, &v);
    if (!rc) s->max_queue_size = (uint32_t)v;
  } else if (!strcmp(key, "default_timeout_microseconds")) {
    rc = cfg_uint64(p, key, 0, 3600000000ull, &v);
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
  } else if (!strcmp(key, "default_queue_policy")) {
    return cfg_object(p, "'dynamic_batching.default_queue_policy'", dqp_member, c);
  } else if (!strcmp(key, "priority_levels") || !strcmp(key, "default_priority_level")) {
    rc = cfg_uint64(p, key, 0, 0, &v); /* 0 means "no priorities"; levels are not supported */
    if (rc)
      return cfg_fail(p, "'dynamic_batching.%s' is not supported: onnxd has no priority levels",
                      key);
  } else if (!strcmp(key, "priority_queue_policy")) {
    if (cfg_char(p, '{') || cfg_char(p, '}')) /* empty, as Triton's GET config writes it: fine */
      return cfg_fail(p,
                      "'dynamic_batching.priority_queue_policy' is not supported: onnxd has no "
                      "priority levels");
    return 0;
  } else if (!strcmp(key, "preserve_ordering")) {
    int b; /* responses are per request; nothing to reorder */
    rc = cfg_bool(p, "dynamic_batching.preserve_ordering", &b);
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

/* Triton's data_type names ("TYPE_FP32"; "TYPE_STRING" is BYTES). */
static ox_dtype_t cfg_triton_dtype(const char *t) {
  if (strncmp(t, "TYPE_", 5)) return OX_DT_INVALID;
  if (!strcmp(t + 5, "STRING")) return OX_DT_BYTES;
  return ox_dtype_from_name(t + 5, strlen(t + 5));
}

/* A JSON array of integers, each from min to max (dims: -1 allowed as "variable"). */
static int cfg_int_array(cfg_parser_t *p, const char *key, int64_t min, int64_t max, int64_t *out,
                         size_t cap, size_t *n) {
  if (cfg_char(p, '[')) return cfg_fail(p, "'%s' must be an array", key);
  *n = 0;
  if (cfg_peek(p, ']')) {
    p->js.p++;
    return 0;
  }
  for (;;) {
    int neg = 0;
    uint64_t mag = 0;
    if (cfg_json_int(p, 1, &neg, &mag) || mag > (uint64_t)INT64_MAX)
      return cfg_fail(p, "'%s' must hold integers", key);
    int64_t v = neg ? -(int64_t)mag : (int64_t)mag;
    if (v < min || v > max)
      return cfg_fail(p, "'%s' values must be from %" PRId64 " to %" PRId64, key, min, max);
    if (*n == cap) return cfg_fail(p, "'%s' has more than %zu values", key, cap);
    out[(*n)++] = v;
    if (cfg_peek(p, ',')) {
      p->js.p++;
      continue;
    }
    if (cfg_char(p, ']')) return cfg_fail(p, "bad '%s' array", key);
    return 0;
  }
}

/* Iterates a JSON array of objects. */
static int cfg_object_array(cfg_parser_t *p, const char *what, int (*each)(cfg_parser_t *, void *),
                            void *ctx) {
  if (cfg_char(p, '[')) return cfg_fail(p, "'%s' must be an array", what);
  if (cfg_peek(p, ']')) {
    p->js.p++;
    return 0;
  }
  for (;;) {
    int rc = each(p, ctx);
    if (rc) return rc;
    if (cfg_peek(p, ',')) {
      p->js.p++;
      continue;
    }
    if (cfg_char(p, ']')) return cfg_fail(p, "bad '%s' array", what);
    return 0;
  }
}

static int cfg_skip_value(cfg_parser_t *p) {
  ox_json_ws(&p->js);
  return ox_json_skip(&p->js, 1) ? cfg_fail(p, "bad value") : 0;
}

/* A label_filename names a file inside the model's directory: relative, no ".." component. */
static int label_path_ok(const char *f) {
  if (f[0] == '/') return 0;
  for (const char *p = f; *p;) {
    const char *e = strchr(p, '/');
    size_t l = e ? (size_t)(e - p) : strlen(p);
    if (l == 2 && p[0] == '.' && p[1] == '.') return 0;
    p += l + (e ? 1 : 0);
  }
  return 1;
}

static int io_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  cfg_io_t *io = c->io;
  if (!strcmp(key, "name")) return cfg_str(p, "input.name", io->name, sizeof io->name);
  if (!strcmp(key, "data_type")) {
    char t[32];
    int rc = cfg_str(p, "data_type", t, sizeof t);
    if (rc) return rc;
    io->dtype = cfg_triton_dtype(t);
    if (io->dtype == OX_DT_INVALID) return cfg_fail(p, "unknown data_type '%s'", t);
    return 0;
  }
  if (!strcmp(key, "dims")) {
    size_t n = 0;
    int rc = cfg_int_array(p, "dims", -1, INT64_MAX, io->dims, OX_RT_MAX_RANK, &n);
    io->rank = (int)n;
    return rc;
  }
  if (!strcmp(key, "reshape"))
    return cfg_fail(p, "'reshape' of '%.100s' is not supported: declare the model's own shape",
                    io->name);
  if (!strcmp(key, "allow_ragged_batch")) {
    int b;
    int rc = cfg_bool(p, "allow_ragged_batch", &b);
    if (!rc && b) return cfg_fail(p, "'allow_ragged_batch' of '%.100s' is not supported", io->name);
    return rc;
  }
  if (!strcmp(key, "label_filename") && io->side == 1) {
    int rc = cfg_str(p, "label_filename", io->label_file, sizeof io->label_file);
    if (rc) return rc;
    if (io->label_file[0] && !label_path_ok(io->label_file)) /* "": none, as Triton has it */
      return cfg_fail(p,
                      "label_filename '%.200s' of '%.100s' must be a relative path inside the "
                      "model directory",
                      io->label_file, io->name);
    return 0;
  }
  if (!strcmp(key, "format") || !strcmp(key, "label_filename") || !strcmp(key, "optional") ||
      !strcmp(key, "is_shape_tensor") || !strcmp(key, "is_non_linear_format_io")) {
    ox_info("%s: '%s' of '%.100s' ignored", p->file, key, io->name);
    return cfg_skip_value(p);
  }
  return cfg_fail(p, "unsupported key '%s' in input/output '%.100s'", key, io->name);
}

static int io_list(cfg_parser_t *p, cfg_ctx_t *c, int side) {
  const char *what = side ? "output" : "input";
  if (cfg_char(p, '[')) return cfg_fail(p, "'%s' must be an array", what);
  if (cfg_peek(p, ']')) {
    p->js.p++;
    return 0;
  }
  for (;;) {
    if (c->num_decl[side] == CFG_MAX_IO)
      return cfg_fail(p, "more than %d '%s' entries", CFG_MAX_IO, what);
    c->io = &c->decl[side][c->num_decl[side]++];
    memset(c->io, 0, sizeof *c->io);
    c->io->rank = -1;
    c->io->side = side;
    int rc = cfg_object(p, what, io_member, c);
    if (rc) return rc;
    if (!c->io->name[0]) return cfg_fail(p, "an '%s' entry has no 'name'", what);
    if (cfg_peek(p, ',')) {
      p->js.p++;
      continue;
    }
    if (cfg_char(p, ']')) return cfg_fail(p, "bad '%s' array", what);
    return 0;
  }
}

/* Each declared input/output exists in the model with the same dtype and compatible dims. */
static int io_check(const cfg_ctx_t *c, const char *file, char *err, size_t errcap) {
  const ox_model_t *m = c->m;
  uint32_t mbs = c->cfg->sched.max_batch_size;
  for (int side = 0; side < 2; side++) {
    const char *what = side ? "output" : "input";
    const ox_tensor_info_t *ti = side ? m->outputs : m->inputs;
    size_t nt = side ? m->num_outputs : m->num_inputs;
    for (size_t i = 0; i < c->num_decl[side]; i++) {
      const cfg_io_t *d = &c->decl[side][i];
      size_t k = 0;
      while (k < nt && strcmp(ti[k].name, d->name)) k++;
      if (k == nt) {
        snprintf(err, errcap, "%s: %s '%.100s' is not an %s of the model", file, what, d->name,
                 what);
        return OX_EINVALID;
      }
      const ox_tensor_info_t *t = &ti[k];
      if (d->dtype != OX_DT_INVALID && d->dtype != t->dtype) {
        snprintf(err, errcap, "%s: %s '%.100s': data_type is TYPE_%s, the model has TYPE_%s", file,
                 what, d->name, ox_dtype_name(d->dtype), ox_dtype_name(t->dtype));
        return OX_EINVALID;
      }
      if (d->rank < 0) continue;
      int off = mbs > 0 ? 1 : 0; /* Triton: dims exclude the batch dimension */
      if (d->rank + off != t->rank) {
        snprintf(err, errcap, "%s: %s '%.100s': dims has %d values, the model's rank is %d%s", file,
                 what, d->name, d->rank, t->rank,
                 off ? " (dims exclude the batch dimension when max_batch_size > 0)" : "");
        return OX_EINVALID;
      }
      for (int j = 0; j < d->rank; j++) {
        int64_t want = d->dims[j], have = t->dims[j + off];
        if (want != -1 && have != -1 && want != have) {
          snprintf(err, errcap,
                   "%s: %s '%.100s': dims[%d] is %" PRId64 ", the model's dimension is %" PRId64,
                   file, what, d->name, j, want, have);
          return OX_EINVALID;
        }
        if (want != -1 && have == -1) {
          snprintf(err, errcap,
                   "%s: %s '%.100s': dims[%d] is %" PRId64
                   ", the model's dimension is variable (use -1)",
                   file, what, d->name, j, want);
          return OX_EINVALID;
        }
      }
    }
  }
  return 0;
}

static int ig_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  if (!strcmp(key, "count")) {
    uint64_t v;
    int rc = cfg_uint(p, "instance_group.count", 1, 64, &v);
    if (!rc) c->instances += v;
    return rc;
  }
  if (!strcmp(key, "kind")) {
    char k[32];
    int rc = cfg_str(p, "instance_group.kind", k, sizeof k);
    if (rc) return rc;
    if (!strcmp(k, "KIND_CPU") || !strcmp(k, "KIND_AUTO")) return 0;
    if (!strcmp(k, "KIND_GPU"))
      return cfg_fail(p, "instance_group kind KIND_GPU is not supported: onnxd runs on the CPU");
    return cfg_fail(p, "instance_group kind '%s' is not supported (KIND_CPU only)", k);
  }
  if (!strcmp(key, "gpus")) {
    int64_t g[64];
    size_t n = 0;
    int rc = cfg_int_array(p, "instance_group.gpus", 0, 1024, g, 64, &n);
    if (!rc && n)
      return cfg_fail(p, "instance_group 'gpus' is not supported: onnxd runs on the CPU");
    return rc;
  }
  if (!strcmp(key, "name") || !strcmp(key, "profile") || !strcmp(key, "passive") ||
      !strcmp(key, "host_policy") || !strcmp(key, "rate_limiter") ||
      !strcmp(key, "secondary_devices")) {
    ox_info("%s: 'instance_group.%s' ignored", p->file, key);
    return cfg_skip_value(p);
  }
  return cfg_fail(p, "unknown key 'instance_group.%s'", key);
}

static int ig_entry(cfg_parser_t *p, void *vctx) {
  cfg_ctx_t *c = vctx;
  uint64_t before = c->instances;
  int rc = cfg_object(p, "an instance_group entry", ig_member, c);
  if (!rc && c->instances == before) c->instances++; /* Triton: count defaults to 1 */
  return rc;
}

typedef struct {
  ox_version_policy_t *vp;
  int seen;
} vp_ctx_t;

static int vp_inner(cfg_parser_t *p, const char *key, void *vctx) {
  ox_version_policy_t *vp = vctx;
  if (vp->kind == 0 && !strcmp(key, "num_versions")) {
    uint64_t v;
    int rc = cfg_uint(p, "version_policy.latest.num_versions", 1, 1000000, &v);
    if (!rc) vp->num_versions = (uint32_t)v;
    return rc;
  }
  if (vp->kind == 2 && !strcmp(key, "versions")) {
    int64_t v[256];
    size_t n = 0;
    int rc = cfg_int_array(p, "version_policy.specific.versions", 1, INT64_MAX, v, 256, &n);
    if (rc) return rc;
    free(vp->versions);
    vp->versions = n ? malloc(n * sizeof *v) : NULL;
    if (n && !vp->versions) return OX_ENOMEM;
    if (n) memcpy(vp->versions, v, n * sizeof *v);
    vp->num_specific = n;
    return 0;
  }
  static const char *const kinds[] = {"latest", "all", "specific"};
  return cfg_fail(p, "unknown key 'version_policy.%s.%s'", kinds[vp->kind], key);
}

static int vp_member(cfg_parser_t *p, const char *key, void *vctx) {
  vp_ctx_t *v = vctx;
  int kind = !strcmp(key, "latest")     ? 0
             : !strcmp(key, "all")      ? 1
             : !strcmp(key, "specific") ? 2
                                        : -1;
  if (kind < 0)
    return cfg_fail(p, "unknown key 'version_policy.%s' (latest, all or specific)", key);
  if (v->seen++)
    return cfg_fail(p, "'version_policy' must have exactly one of latest, all, specific");
  ox_version_policy_free(v->vp);
  v->vp->kind = kind;
  v->vp->num_versions = 1;
  int rc = cfg_object(p, "'version_policy'", vp_inner, v->vp);
  if (!rc && kind == 2 && !v->vp->num_specific)
    return cfg_fail(p, "'version_policy.specific.versions' is missing or empty");
  return rc;
}

static int dqp_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_sched_config_t *s = &c->cfg->sched;
  uint64_t v = 0;
  int rc;
  if (!strcmp(key, "max_queue_size")) {
    rc = cfg_uint(p, "default_queue_policy.max_queue_size", 0, 1000000, &v);
    if (!rc) s->max_queue_size = (uint32_t)v;
    return rc;
  }
  if (!strcmp(key, "default_timeout_microseconds")) {
    rc = cfg_uint64(p, "default_queue_policy.default_timeout_microseconds", 0, 3600000000ull, &v);
    if (!rc) s->default_timeout_us = v;
    return rc;
  }
  if (!strcmp(key, "timeout_action")) {
    char a[32];
    rc = cfg_str(p, "default_queue_policy.timeout_action", a, sizeof a);
    if (!rc && strcmp(a, "REJECT"))
      return cfg_fail(p, "default_queue_policy.timeout_action '%s' is not supported (REJECT only)",
                      a);
    return rc;
  }
  if (!strcmp(key, "allow_timeout_override")) {
    int b;
    return cfg_bool(p, "default_queue_policy.allow_timeout_override", &b);
  }
  return cfg_fail(p, "unknown key 'dynamic_batching.default_queue_policy.%s'", key);
}

/* Triton fields that change nothing onnxd does: logged and skipped. */
static const char *const cfg_ignored[] = {
    "optimization",       "parameters",       "model_transaction_policy",
    "response_cache",     "model_operations", "model_repository_agents",
    "cc_model_filenames", "metric_tags",      "default_model_filename",
    "label_filename",     "runtime",          "model_metrics"};
/* Triton fields whose semantics onnxd does not have: refused. */
static const char *const cfg_refused[] = {"sequence_batching", "ensemble_scheduling", "batch_input",
                                          "batch_output"};

/* ---- "image_inputs": model inputs sent as JPEG/PNG files (image/image.h) */

/* What one image_inputs entry set explicitly (defaults depend on dtype, applied after). */
typedef struct {
  ox_image_input_t *ii;
  int seen_scale, seen_mean, seen_std, seen_resize;
  size_t n_mean, n_std;
} img_ctx_t;

static int cfg_float_array(cfg_parser_t *p, const char *key, float *out, size_t cap, size_t *n) {
  if (cfg_char(p, '[')) return cfg_fail(p, "'%s' must be an array of numbers", key);
  *n = 0;
  for (;;) {
    if (*n == cap) return cfg_fail(p, "'%s' has more than %zu values", key, cap);
    int rc = cfg_float(p, key, &out[*n]);
    if (rc) return rc;
    (*n)++;
    if (cfg_peek(p, ',')) {
      p->js.p++;
      continue;
    }
    if (cfg_char(p, ']')) return cfg_fail(p, "bad '%s' array", key);
    return 0;
  }
}

static const char *const img_filters[] = {
    [OX_IMG_BILINEAR] = "bilinear", [OX_IMG_NEAREST] = "nearest", [OX_IMG_BICUBIC] = "bicubic",
    [OX_IMG_BOX] = "box",           [OX_IMG_HAMMING] = "hamming", [OX_IMG_LANCZOS] = "lanczos"};

static int img_resize_member(cfg_parser_t *p, const char *key, void *vctx) {
  img_ctx_t *c = vctx;
  ox_img_spec_t *s = &c->ii->spec;
  uint64_t v = 0;
  int rc;
  char what[200];
  snprintf(what, sizeof what, "image_inputs.%s.resize.%s", c->ii->input, key);
  if (!strcmp(key, "filter")) {
    char f[32];
    if ((rc = cfg_str(p, what, f, sizeof f))) return rc;
    for (size_t i = 0; i < sizeof img_filters / sizeof img_filters[0]; i++)
      if (!strcmp(f, img_filters[i])) {
        s->filter = (ox_img_filter_t)i;
        return 0;
      }
    return cfg_fail(p, "'%s' must be nearest, bilinear, bicubic, box, hamming or lanczos", what);
  }
  if (strcmp(key, "shorter_side") && strcmp(key, "width") && strcmp(key, "height"))
    return cfg_fail(p, "unknown key '%s'", what);
  if ((rc = cfg_uint(p, what, 1, 65535, &v))) return rc;
  if (key[0] == 's') {
    s->shorter_side = (uint32_t)v;
  } else if (key[0] == 'w') {
    s->resize_w = (uint32_t)v;
  } else {
    s->resize_h = (uint32_t)v;
  }
  return 0;
}

static int img_member(cfg_parser_t *p, const char *key, void *vctx) {
  img_ctx_t *c = vctx;
  ox_img_spec_t *s = &c->ii->spec;
  char what[200], val[32];
  int rc;
  snprintf(what, sizeof what, "image_inputs.%s.%s", c->ii->input, key);
  if (!strcmp(key, "decode")) {
    if ((rc = cfg_str(p, what, val, sizeof val))) return rc;
    if (!strcmp(val, "rgb")) {
      s->color = OX_IMG_RGB;
    } else if (!strcmp(val, "bgr")) {
      s->color = OX_IMG_BGR;
    } else if (!strcmp(val, "gray")) {
      s->color = OX_IMG_GRAY;
    } else {
      return cfg_fail(p, "'%s' must be rgb, bgr or gray", what);
    }
    return 0;
  }
  if (!strcmp(key, "resize")) {
    c->seen_resize = 1;
    rc = cfg_object(p, what, img_resize_member, c);
    if (rc) return rc;
    if (s->shorter_side && !s->resize_w && !s->resize_h) {
      s->resize = OX_IMG_RESIZE_SHORTER;
    } else if (!s->shorter_side && s->resize_w && s->resize_h) {
      s->resize = OX_IMG_RESIZE_EXACT;
    } else {
      return cfg_fail(p, "'%s' needs either 'shorter_side' or both 'height' and 'width'", what);
    }
    return 0;
  }
  if (!strcmp(key, "center_crop")) {
    int64_t d[2];
    size_t n = 0;
    if (cfg_peek(p, '[')) {
      rc = cfg_int_array(p, what, 1, 65535, d, 2, &n);
    } else {
      uint64_t v = 0;
      rc = cfg_uint(p, what, 1, 65535, &v);
      d[0] = (int64_t)v;
      n = 1;
    }
    if (rc) return rc;
    if (n == 0) return cfg_fail(p, "'%s' must be [height, width] or one number", what);
    s->crop_h = (uint32_t)d[0];
    s->crop_w = (uint32_t)(n == 2 ? d[1] : d[0]);
    return 0;
  }
  if (!strcmp(key, "scale")) {
    c->seen_scale = 1;
    return cfg_float(p, what, &s->scale);
  }
  if (!strcmp(key, "mean")) {
    c->seen_mean = 1;
    return cfg_float_array(p, what, s->mean, 3, &c->n_mean);
  }
  if (!strcmp(key, "std")) {
    c->seen_std = 1;
    return cfg_float_array(p, what, s->std, 3, &c->n_std);
  }
  if (!strcmp(key, "layout")) {
    if ((rc = cfg_str(p, what, val, sizeof val))) return rc;
    if (!strcmp(val, "NCHW")) {
      s->layout = OX_IMG_NCHW;
    } else if (!strcmp(val, "NHWC")) {
      s->layout = OX_IMG_NHWC;
    } else {
      return cfg_fail(p, "'%s' must be NCHW or NHWC", what);
    }
    return 0;
  }
  if (!strcmp(key, "dtype")) {
    if ((rc = cfg_str(p, what, val, sizeof val))) return rc;
    const char *v = strncmp(val, "TYPE_", 5) ? val : val + 5;
    ox_dtype_t dt = ox_dtype_from_name(v, strlen(v));
    if (dt != OX_DT_FP32 && dt != OX_DT_FP16 && dt != OX_DT_UINT8)
      return cfg_fail(p, "'%s' must be FP32, FP16 or UINT8", what);
    s->dtype = dt;
    return 0;
  }
  if (!strcmp(key, "exif_orientation")) return cfg_bool(p, what, &s->exif_orientation);
  if (!strcmp(key, "max_pixels")) {
    uint64_t v = 0;
    rc = cfg_uint64(p, what, 1, (uint64_t)1 << 40, &v);
    s->max_pixels = v;
    return rc;
  }
  return cfg_fail(p, "unknown key '%s'", what);
}

static int images_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_model_config_t *cfg = c->cfg;
  for (size_t i = 0; i < cfg->num_images; i++)
    if (!strcmp(cfg->images[i].input, key))
      return cfg_fail(p, "duplicate key 'image_inputs.%.100s'", key);
  if (cfg->num_images == OX_MAX_IMAGE_INPUTS)
    return cfg_fail(p, "more than %d image_inputs", OX_MAX_IMAGE_INPUTS);
  ox_image_input_t *ni = realloc(cfg->images, sizeof *ni * (cfg->num_images + 1));
  if (!ni) return OX_ENOMEM;
  cfg->images = ni;
  ox_image_input_t *ii = &ni[cfg->num_images++];
  memset(ii, 0, sizeof *ii);
  snprintf(ii->input, sizeof ii->input, "%s", key);
  ox_img_spec_init(&ii->spec);
  img_ctx_t ic = {.ii = ii};
  char what[200];
  snprintf(what, sizeof what, "'image_inputs.%.100s'", key);
  int rc = cfg_object(p, what, img_member, &ic);
  if (rc) return rc;
  ox_img_spec_t *s = &ii->spec;
  size_t ch = s->color == OX_IMG_GRAY ? 1 : 3;
  if (!ic.seen_scale) s->scale = s->dtype == OX_DT_UINT8 ? 1.0f : 255.0f;
  if ((ic.seen_mean && ic.n_mean != ch && ic.n_mean != 1) ||
      (ic.seen_std && ic.n_std != ch && ic.n_std != 1))
    return cfg_fail(p, "image_inputs.%.100s: 'mean' and 'std' need 1 or %zu values", key, ch);
  for (size_t i = 1; i < 3; i++) {
    if (ic.seen_mean && ic.n_mean == 1) s->mean[i] = s->mean[0];
    if (ic.seen_std && ic.n_std == 1) s->std[i] = s->std[0];
  }
  return 0;
}

/* Each image input against the model: an input of rank 4 (batch and NCHW/NHWC) or 3 (one
 * image, no batch dimension) whose datatype and fixed dimensions are what the spec produces,
 * not also the feature view's; the spec fixes the image size (a crop or an exact resize), so
 * rows can share a tensor. */
static int img_check(const cfg_ctx_t *ctx, const char *file, char *err, size_t errcap) {
  const ox_model_t *m = ctx->m;
  ox_model_config_t *cfg = ctx->cfg;
  for (size_t i = 0; i < cfg->num_images; i++) {
    ox_image_input_t *ii = &cfg->images[i];
    ox_img_spec_t *s = &ii->spec;
    char why[200];
    size_t k = 0;
    while (k < m->num_inputs && strcmp(m->inputs[k].name, ii->input)) k++;
    if (k == m->num_inputs) {
      snprintf(err, errcap, "%s: image_inputs: '%.100s' is not an input of the model", file,
               ii->input);
      return OX_EINVALID;
    }
    if (cfg->view.enabled && cfg->view.input_idx == k) {
      snprintf(err, errcap, "%s: image_inputs: '%.100s' is the feature_view's input", file,
               ii->input);
      return OX_EINVALID;
    }
    ii->input_idx = k;
    if (ox_img_spec_check(s, why, sizeof why)) {
      snprintf(err, errcap, "%s: image_inputs.%.100s: %s", file, ii->input, why);
      return OX_EINVALID;
    }
    uint32_t c, h, w;
    if (!ox_img_spec_fixed_dims(s, &c, &h, &w)) {
      snprintf(err, errcap,
               "%s: image_inputs.%.100s: give 'center_crop' or a resize to 'height' and "
               "'width', so that every image makes a row of the same shape",
               file, ii->input);
      return OX_EINVALID;
    }
    const ox_tensor_info_t *t = &m->inputs[k];
    if (t->dtype != s->dtype) {
      snprintf(err, errcap, "%s: image_inputs.%.100s: dtype %s, but the model's input is %s", file,
               ii->input, ox_dtype_name(s->dtype), ox_dtype_name(t->dtype));
      return OX_EINVALID;
    }
    if (t->rank != 3 && t->rank != 4) {
      snprintf(err, errcap,
               "%s: image_inputs.%.100s: the model's input has rank %d; an image input needs "
               "[batch, C, H, W] / [batch, H, W, C] or one image [C, H, W] / [H, W, C]",
               file, ii->input, t->rank);
      return OX_EINVALID;
    }
    int off = t->rank - 3;
    int64_t want[3];
    if (s->layout == OX_IMG_NCHW) {
      want[0] = c, want[1] = h, want[2] = w;
    } else {
      want[0] = h, want[1] = w, want[2] = c;
    }
    for (int d = 0; d < 3; d++) {
      int64_t have = t->dims[off + d];
      if (have >= 0 && have != want[d]) {
        snprintf(err, errcap,
                 "%s: image_inputs.%.100s: the spec makes rows of %s [%" PRId64 ",%" PRId64
                 ",%" PRId64 "], the model's input dimension %d is %" PRId64,
                 file, ii->input, s->layout == OX_IMG_NCHW ? "CHW" : "HWC", want[0], want[1],
                 want[2], off + d, have);
        return OX_EINVALID;
      }
    }
    if (off && t->dims[0] >= 0 && t->dims[0] != 1) {
      snprintf(err, errcap,
               "%s: image_inputs.%.100s: the model's batch dimension is fixed at %" PRId64
               " (dynamic or 1 needed)",
               file, ii->input, t->dims[0]);
      return OX_EINVALID;
    }
  }
  return 0;
}

static int top_member(cfg_parser_t *p, const char *key, void *vctx) {
  cfg_ctx_t *c = vctx;
  ox_sched_config_t *s = &c->cfg->sched;
  uint64_t v = 0;
  int rc;
  if (!strcmp(key, "name")) {
    char name[256];
    rc = cfg_str(p, key, name, sizeof name);
    if (!rc && c->name && strcmp(name, c->name))
      return cfg_fail(p, "'name' is '%.100s', not the folder's name", name);
    return rc;
  }
  if (!strcmp(key, "version_policy")) {
    if (c->seen_vp++) return cfg_fail(p, "duplicate key 'version_policy'");
    vp_ctx_t vc = {.vp = &c->cfg->version_policy};
    rc = cfg_object(p, "'version_policy'", vp_member, &vc);
    if (!rc && !vc.seen)
      return cfg_fail(p, "'version_policy' must have one of latest, all, specific");
    return rc;
  }
  if (!c->m) return cfg_skip_value(p); /* reading the version policy only */
  if (!strcmp(key, "platform") || !strcmp(key, "backend")) {
    char val[64];
    rc = cfg_str(p, key, val, sizeof val);
    if (rc) return rc;
    int ok = key[0] == 'p' ? !strcmp(val, "onnxruntime_onnx") || !strcmp(val, "onnx_onnxv1")
                           : !strcmp(val, "onnxruntime");
    if (!ok)
      return cfg_fail(p, "%s '%.60s' is not supported (onnxd serves %s)", key, val,
                      key[0] == 'p' ? "platform \"onnxruntime_onnx\"" : "backend \"onnxruntime\"");
    return 0;
  }
  if (!strcmp(key, "input")) return io_list(p, c, 0);
  if (!strcmp(key, "output")) return io_list(p, c, 1);
  if (!strcmp(key, "instance_group")) {
    c->seen_ig = 1;
    return cfg_object_array(p, "instance_group", ig_entry, c);
  }
  for (size_t i = 0; i < sizeof cfg_ignored / sizeof cfg_ignored[0]; i++)
    if (!strcmp(key, cfg_ignored[i])) {
      ox_info("%s: '%s' of model '%s' ignored", p->file, key, c->name);
      return cfg_skip_value(p);
    }
  for (size_t i = 0; i < sizeof cfg_refused / sizeof cfg_refused[0]; i++) {
    if (strcmp(key, cfg_refused[i])) continue;
    /* an empty list (batch_input: [] in Triton's GET config) asks for nothing */
    if (cfg_peek(p, '[')) {
      p->js.p++;
      if (cfg_peek(p, ']')) {
        p->js.p++;
        return 0;
      }
    }
    return cfg_fail(p, "'%s' is not supported by onnxd", key);
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
  if (!strcmp(key, "image_inputs")) {
    if (c->cfg->num_images) return cfg_fail(p, "duplicate key 'image_inputs'");
    return cfg_object(p, "'image_inputs'", images_member, c);
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

static int cfg_check(const cfg_ctx_t *ctx, int can_batch, const char *file, char *err,
                     size_t errcap);
static int config_load(const char *model_dir, const char *name, const ox_model_t *m,
                       int infer_threads, const char *override_json, size_t override_len,
                       ox_model_config_t *cfg, char *err, size_t errcap);
static int policy_read(const char *model_dir, const char *name, const char *override_json,
                       size_t override_len, ox_version_policy_t *p, char *err, size_t errcap);

/* model_dir = repo_dir/<name> into out (cap bytes), after checking name (the path must stay
 * inside the repository). 0, or OX_EINVALID with err (file: the name errors use). */
static int cfg_model_dir(const char *repo_dir, const char *name, const char *file, char *out,
                         size_t cap, char *err, size_t errcap) {
  if (!*name || !ox_name_valid(name, strlen(name)) || !strcmp(name, ".") || !strcmp(name, "..")) {
    snprintf(err, errcap, "%s: '%.100s' is not a model name", file, name);
    return OX_EINVALID;
  }
  int n = snprintf(out, cap, "%s/%s", repo_dir, name);
  if (n < 0 || (size_t)n >= cap) {
    snprintf(err, errcap, "%s: path too long", file);
    return OX_EINVALID;
  }
  return 0;
}

/* Reads model_dir/<file> whole: a regular file of at most max bytes (refused from its size
 * before anything is read). Returns 0 with *text (owned, malloc) and *len, 1 when the file
 * does not exist, or an error (message starting with file). */
static int cfg_read_file(const char *model_dir, const char *file, size_t max, char **text,
                         size_t *len, char *err, size_t errcap) {
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/%s", model_dir, file);
  if (n < 0 || (size_t)n >= sizeof path) {
    snprintf(err, errcap, "%s: path too long", file);
    return OX_EINVALID;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return 1;
    snprintf(err, errcap, "%s: cannot open (%s)", file, strerror(errno));
    return OX_EINVALID;
  }
  struct stat st;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    close(fd);
    snprintf(err, errcap, "%s: not a regular file", file);
    return OX_EINVALID;
  }
  if ((uint64_t)st.st_size > max) {
    close(fd);
    snprintf(err, errcap, "%s: larger than %zu MiB", file, max >> 20);
    return OX_EINVALID;
  }
  /* One byte more than the size: a file that grew meanwhile is seen, and refused if too big. */
  size_t cap = (size_t)st.st_size + 1;
  char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    return OX_ENOMEM;
  }
  size_t got = 0;
  while (got < cap) {
    ssize_t r = read(fd, buf + got, cap - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      snprintf(err, errcap, "%s: read failed (%s)", file, strerror(errno));
      close(fd);
      free(buf);
      return OX_EINVALID;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got == cap) {
    free(buf);
    snprintf(err, errcap, "%s: changed while being read", file);
    return OX_EINVALID;
  }
  *text = buf;
  *len = got;
  return 0;
}

/* Reads the label file of every output that names one (model outputs by index into
 * cfg->labels). */
static int labels_load(const cfg_ctx_t *ctx, const char *model_dir, const char *file, char *err,
                       size_t errcap) {
  const ox_model_t *m = ctx->m;
  ox_model_config_t *cfg = ctx->cfg;
  for (size_t i = 0; i < ctx->num_decl[1]; i++) {
    const cfg_io_t *d = &ctx->decl[1][i];
    if (!d->label_file[0]) continue;
    size_t k = 0;
    while (k < m->num_outputs && strcmp(m->outputs[k].name, d->name)) k++;
    if (k == m->num_outputs) continue; /* io_check refused it already */
    char why[256];
    if (!model_dir) {
      snprintf(err, errcap, "%s: output '%.100s': label_filename needs the model's directory", file,
               d->name);
      return OX_EINVALID;
    }
    if (!cfg->labels) {
      if (!(cfg->labels = calloc(m->num_outputs, sizeof *cfg->labels))) return OX_ENOMEM;
      cfg->num_labels = m->num_outputs;
    }
    ox_output_labels_t *ol = &cfg->labels[k];
    if (ol->file[0]) {
      snprintf(err, errcap, "%s: output '%.100s' is declared twice with a label_filename", file,
               d->name);
      return OX_EINVALID;
    }
    snprintf(ol->file, sizeof ol->file, "%s", d->label_file);
    char *text = NULL;
    size_t len = 0;
    int rc =
        cfg_read_file(model_dir, d->label_file, OX_LABELS_MAX_BYTES, &text, &len, why, sizeof why);
    if (rc == 1) {
      snprintf(err, errcap,
               "%s: output '%.100s': label_filename '%.200s' not found in the model directory",
               file, d->name, d->label_file);
      return OX_EINVALID;
    }
    if (rc == OX_ENOMEM) return rc;
    if (rc) {
      snprintf(err, errcap, "%s: output '%.100s': label_filename %s", file, d->name, why);
      return OX_EINVALID;
    }
    rc = ox_labels_parse(text, len, &ol->labels, why, sizeof why);
    free(text);
    if (rc == OX_ENOMEM) return rc;
    if (rc) {
      snprintf(err, errcap, "%s: output '%.100s': label_filename '%.200s': %s", file, d->name,
               d->label_file, why);
      return OX_EINVALID;
    }
  }
  return 0;
}

/* Fields that are repeated in Triton's model_config.proto: always JSON arrays. */
static const char *const pb_repeated[] = {"input",
                                          "output",
                                          "dims",
                                          "instance_group",
                                          "model_warmup",
                                          "preferred_batch_size",
                                          "versions",
                                          "gpus",
                                          "profile",
                                          "secondary_devices",
                                          "batch_input",
                                          "batch_output",
                                          "cc_model_filenames",
                                          "shape"};
/* Map fields (`inputs { key: "x" value { ... } }`): JSON objects keyed by "key". */
static const char *const pb_maps[] = {"inputs",    "parameters", "metric_tags",
                                      "input_map", "output_map", "priority_queue_policy"};

static int pb_in(const ox_pbtxt_node_t *n, const char *const *set, size_t k) {
  for (size_t i = 0; i < k; i++)
    if (ox_pbtxt_key_is(n, set[i])) return 1;
  return 0;
}

static int pb_json_msg(ox_buf_t *o, const ox_pbtxt_node_t *msg, char *err, size_t errcap);

static int pb_json_value(ox_buf_t *o, const ox_pbtxt_node_t *n, char *err, size_t errcap) {
  switch (n->kind) {
    case OX_PBTXT_MESSAGE:
      return pb_json_msg(o, n, err, errcap);
    case OX_PBTXT_STRING:
      return ox_buf_append_json_string(o, n->text.ptr, n->text.len);
    case OX_PBTXT_IDENT:
      if (ox_slice_eq(n->text, "true") || ox_slice_eq(n->text, "True") || ox_slice_eq(n->text, "t"))
        return ox_buf_puts(o, "true");
      if (ox_slice_eq(n->text, "false") || ox_slice_eq(n->text, "False") ||
          ox_slice_eq(n->text, "f"))
        return ox_buf_puts(o, "false");
      return ox_buf_append_json_string(o, n->text.ptr, n->text.len);
    case OX_PBTXT_NUMBER: {
      int64_t v;
      if (!ox_pbtxt_int(n, &v)) return ox_buf_printf(o, "%" PRId64, v);
      /* not an integer: kept as text; fields onnxd reads are integers and say so */
      return ox_buf_append_json_string(o, n->text.ptr, n->text.len);
    }
  }
  return 0;
}

/* A map entry's "key" as a JSON object key, then ':' and its "value". */
static int pb_json_map(ox_buf_t *o, const ox_pbtxt_node_t *first, char *err, size_t errcap) {
  int rc = ox_buf_puts(o, "{");
  int k = 0;
  for (const ox_pbtxt_node_t *e = first; e && !rc; e = ox_pbtxt_find_next(e)) {
    const ox_pbtxt_node_t *key = ox_pbtxt_find(e, "key"), *val = ox_pbtxt_find(e, "value");
    if (!key || key->kind == OX_PBTXT_MESSAGE || !val) {
      snprintf(err, errcap, "config.pbtxt: %u:%u: a '%.*s' entry needs 'key' and 'value'", e->line,
               e->col, (int)(e->key.len > 64 ? 64 : e->key.len), e->key.ptr);
      return OX_EINVALID;
    }
    rc |= ox_buf_puts(o, k++ ? "," : "");
    rc |= ox_buf_append_json_string(o, key->text.ptr, key->text.len);
    rc |= ox_buf_puts(o, ":");
    if (!rc) rc = pb_json_value(o, val, err, errcap);
  }
  return rc ? rc : ox_buf_puts(o, "}");
}

/* A message as a JSON object: each key once, in order of first appearance; repeated fields (or
 * keys written more than once) as arrays. Quadratic in a message's field count, which the
 * caller bounds. */
static int pb_json_msg(ox_buf_t *o, const ox_pbtxt_node_t *msg, char *err, size_t errcap) {
  int rc = ox_buf_puts(o, "{");
  int k = 0;
  for (const ox_pbtxt_node_t *c = msg->child; c && !rc; c = c->next) {
    const ox_pbtxt_node_t *prev = msg->child;
    while (prev != c &&
           !(prev->key.len == c->key.len && !memcmp(prev->key.ptr, c->key.ptr, c->key.len)))
      prev = prev->next;
    if (prev != c) continue; /* written with its first occurrence */
    rc |= ox_buf_puts(o, k++ ? "," : "");
    rc |= ox_buf_append_json_string(o, c->key.ptr, c->key.len);
    rc |= ox_buf_puts(o, ":");
    if (rc) break;
    if (pb_in(c, pb_maps, sizeof pb_maps / sizeof pb_maps[0]) && c->kind == OX_PBTXT_MESSAGE) {
      rc = pb_json_map(o, c, err, errcap);
      continue;
    }
    int arr =
        pb_in(c, pb_repeated, sizeof pb_repeated / sizeof pb_repeated[0]) || ox_pbtxt_find_next(c);
    if (arr) rc |= ox_buf_puts(o, "[");
    for (const ox_pbtxt_node_t *e = c; e && !rc; e = arr ? ox_pbtxt_find_next(e) : NULL) {
      if (e != c) rc |= ox_buf_puts(o, ",");
      if (!rc) rc = pb_json_value(o, e, err, errcap);
    }
    if (arr && !rc) rc = ox_buf_puts(o, "]");
  }
  return rc ? rc : ox_buf_puts(o, "}");
}

#define OX_CONFIG_MAX_PBTXT_NODES 8192

/* config.pbtxt's text into Triton's JSON form in *out (owned by the caller: ox_buf_free). */
static int pbtxt_to_json(const char *text, size_t len, ox_buf_t *out, char *err, size_t errcap) {
  ox_pbtxt_doc_t doc;
  char perr[200];
  int rc = ox_pbtxt_parse(text, len, &doc, perr, sizeof perr);
  if (rc) {
    snprintf(err, errcap, "config.pbtxt: %s", perr);
    return rc;
  }
  if (doc.num_nodes > OX_CONFIG_MAX_PBTXT_NODES) {
    ox_pbtxt_free(&doc);
    snprintf(err, errcap, "config.pbtxt: more than %d fields", OX_CONFIG_MAX_PBTXT_NODES);
    return OX_EINVALID;
  }
  ox_buf_init(out);
  rc = pb_json_msg(out, ox_pbtxt_root(&doc), err, errcap);
  ox_pbtxt_free(&doc);
  if (rc == OX_ENOMEM) snprintf(err, errcap, "config.pbtxt: out of memory");
  return rc;
}

/* Parses one JSON configuration text into cfg through ctx. */
static int cfg_parse(cfg_ctx_t *ctx, const char *file, const char *text, size_t len, char *err,
                     size_t errcap) {
  cfg_parser_t p = {.file = file, .err = err, .errcap = errcap};
  ox_json_init(&p.js, text, len);
  int rc = ox_json_validate(&p.js);
  if (rc) {
    snprintf(err, errcap, "%s: invalid JSON (%s)", file, p.js.err ? p.js.err : "syntax");
    return OX_EINVALID;
  }
  ox_json_init(&p.js, text, len);
  rc = cfg_object(&p, file, top_member, ctx);
  return rc == OX_ENOMEM ? rc : rc ? OX_EINVALID : 0;
}

/* Finds and parses the configuration: override_json, else config.json, else config.pbtxt.
 * *file is set to the name errors use; cfg->from_file to whether one was found. */
static int cfg_source(cfg_ctx_t *ctx, const char *model_dir, const char *override_json,
                      size_t override_len, const char **file, char *err, size_t errcap) {
  *file = "config.json";
  if (override_json) {
    *file = "config";
    ctx->cfg->from_file = 1;
    return cfg_parse(ctx, *file, override_json, override_len, err, errcap);
  }
  char *text = NULL;
  size_t len = 0;
  int rc = cfg_read_file(model_dir, "config.json", OX_CONFIG_MAX_BYTES, &text, &len, err, errcap);
  if (rc == 1) {
    *file = "config.pbtxt";
    rc = cfg_read_file(model_dir, "config.pbtxt", OX_CONFIG_MAX_BYTES, &text, &len, err, errcap);
    if (rc == 1) return 0;
    if (rc) return rc;
    ox_buf_t js;
    rc = pbtxt_to_json(text, len, &js, err, errcap);
    free(text);
    if (rc) return rc;
    ctx->cfg->from_file = 1;
    rc = cfg_parse(ctx, *file, js.data ? js.data : "{}", js.data ? js.len : 2, err, errcap);
    ox_buf_free(&js);
    return rc;
  }
  if (rc) return rc;
  ctx->cfg->from_file = 1;
  rc = cfg_parse(ctx, *file, text, len, err, errcap);
  free(text);
  return rc;
}

int ox_model_config_load(const char *repo_dir, const ox_model_t *m, int infer_threads,
                         ox_model_config_t *cfg, char *err, size_t errcap) {
  return ox_model_config_load_text(repo_dir, m, infer_threads, NULL, 0, cfg, err, errcap);
}

int ox_model_config_load_text(const char *repo_dir, const ox_model_t *m, int infer_threads,
                              const char *override_json, size_t override_len,
                              ox_model_config_t *cfg, char *err, size_t errcap) {
  char dir[4096];
  memset(cfg, 0, sizeof *cfg);
  /* An override replaces the files, not the directory: label files are still read there. */
  int bad_dir = cfg_model_dir(repo_dir, m->name, "config.json", dir, sizeof dir, err, errcap);
  if (bad_dir && !override_json) return OX_EINVALID;
  return config_load(bad_dir ? NULL : dir, m->name, m, infer_threads, override_json, override_len,
                     cfg, err, errcap);
}

int ox_model_config_load_dir(const char *model_dir, const char *check_name, const ox_model_t *m,
                             int infer_threads, const char *override_json, size_t override_len,
                             ox_model_config_t *cfg, char *err, size_t errcap) {
  return config_load(model_dir, check_name, m, infer_threads, override_json, override_len, cfg, err,
                     errcap);
}

/* The configuration of m from model_dir's files (or override_json); name: the name the file's
 * "name" must equal (NULL: not checked). */
static int config_load(const char *model_dir, const char *name, const ox_model_t *m,
                       int infer_threads, const char *override_json, size_t override_len,
                       ox_model_config_t *cfg, char *err, size_t errcap) {
  memset(cfg, 0, sizeof *cfg);
  int can_batch = batchable(m);
  cfg->sched.max_batch_size = can_batch ? 32 : 0;
  cfg->sched.instance_count = (uint32_t)(infer_threads > 0 ? infer_threads : 1);
  cfg->version_policy.num_versions = 1;
  cfg_ctx_t *ctxp = calloc(1, sizeof *ctxp);
  if (!ctxp) return OX_ENOMEM;
  cfg_ctx_t *ctx = ctxp;
  ctx->cfg = cfg;
  ctx->m = m;
  ctx->name = name;
  const char *file;
  int rc = cfg_source(ctx, model_dir, override_json, override_len, &file, err, errcap);
  if (!rc && ctx->seen_view) rc = fview_check(m, &cfg->view, file, err, errcap);
  if (!rc && ctx->seen_ig)
    cfg->sched.instance_count = (uint32_t)(ctx->instances > 64 ? 64 : ctx->instances);
  if (!rc) rc = cfg_check(ctx, can_batch, file, err, errcap);
  if (!rc) rc = labels_load(ctx, model_dir, file, err, errcap);
  free(ctxp);
  if (rc) ox_model_config_free(cfg);
  return rc;
}

static int cfg_check(const cfg_ctx_t *ctx, int can_batch, const char *file, char *err,
                     size_t errcap) {
  const ox_model_t *m = ctx->m;
  ox_model_config_t *cfg = ctx->cfg;
  ox_sched_config_t *s = &cfg->sched;
  if (s->max_batch_size > 0 && !can_batch) {
    snprintf(err, errcap,
             "%s: 'max_batch_size' needs a dynamic first dimension on every "
             "input and output",
             file);
    return OX_EINVALID;
  }
  for (size_t i = 0; i < s->num_preferred; i++) {
    if (s->preferred_batch_size[i] > s->max_batch_size) {
      snprintf(err, errcap,
               "%s: 'dynamic_batching.preferred_batch_size' %u exceeds "
               "'max_batch_size' %u",
               file, s->preferred_batch_size[i], s->max_batch_size);
      return OX_EINVALID;
    }
  }
  int rc = io_check(ctx, file, err, errcap);
  if (!rc) rc = img_check(ctx, file, err, errcap);
  if (rc) return rc;
  for (size_t k = 0; k < cfg->num_warmup; k++) {
    ox_warmup_t *w = &cfg->warmup[k];
    for (size_t i = 0; i < w->num_inputs; i++) {
      size_t j = 0;
      while (j < m->num_inputs && strcmp(m->inputs[j].name, w->inputs[i].name)) j++;
      if (j == m->num_inputs) {
        snprintf(err, errcap,
                 "%s: warm-up '%.60s': input '%.100s' is not an input of "
                 "the model",
                 file, w->name, w->inputs[i].name);
        return OX_EINVALID;
      }
      if (w->inputs[i].dtype == OX_DT_INVALID) {
        snprintf(err, errcap, "%s: warm-up input '%s' has no data_type", file, w->inputs[i].name);
        return OX_EINVALID;
      }
    }
  }
  return 0;
}

int ox_version_policy_read(const char *repo_dir, const char *name, const char *override_json,
                           size_t override_len, ox_version_policy_t *p, char *err, size_t errcap) {
  char dir[4096];
  memset(p, 0, sizeof *p);
  if (!override_json && cfg_model_dir(repo_dir, name, "config.json", dir, sizeof dir, err, errcap))
    return OX_EINVALID;
  return policy_read(override_json ? NULL : dir, name, override_json, override_len, p, err, errcap);
}

int ox_version_policy_read_dir(const char *model_dir, const char *check_name,
                               const char *override_json, size_t override_len,
                               ox_version_policy_t *p, char *err, size_t errcap) {
  return policy_read(model_dir, check_name, override_json, override_len, p, err, errcap);
}

/* The version policy of model_dir's files (or override_json); name as in config_load. */
static int policy_read(const char *model_dir, const char *name, const char *override_json,
                       size_t override_len, ox_version_policy_t *p, char *err, size_t errcap) {
  memset(p, 0, sizeof *p);
  p->num_versions = 1;
  ox_model_config_t *cfg = calloc(1, sizeof *cfg);
  cfg_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (!cfg || !ctx) {
    free(cfg);
    free(ctx);
    return OX_ENOMEM;
  }
  cfg->version_policy.num_versions = 1;
  ctx->cfg = cfg;
  ctx->name = name;
  const char *file;
  int rc = cfg_source(ctx, model_dir, override_json, override_len, &file, err, errcap);
  if (!rc) {
    *p = cfg->version_policy;
    cfg->version_policy.versions = NULL;
  }
  ox_model_config_free(cfg);
  free(cfg);
  free(ctx);
  return rc;
}

void ox_version_policy_free(ox_version_policy_t *p) {
  free(p->versions);
  p->versions = NULL;
  p->num_specific = 0;
}

size_t ox_version_policy_select(const ox_version_policy_t *p, const int64_t *available, size_t n,
                                int64_t *out) {
  size_t k = 0;
  if (p->kind == 1) {
    memcpy(out, available, n * sizeof *out);
    return n;
  }
  if (p->kind == 2) {
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < p->num_specific; j++)
        if (p->versions[j] == available[i]) {
          out[k++] = available[i];
          break;
        }
    return k;
  }
  size_t want = p->num_versions ? p->num_versions : 1;
  size_t from = n > want ? n - want : 0;
  for (size_t i = from; i < n; i++) out[k++] = available[i];
  return k;
}

void ox_model_config_free(ox_model_config_t *cfg) {
  if (cfg->labels) {
    for (size_t i = 0; i < cfg->num_labels; i++) ox_labels_free(&cfg->labels[i].labels);
    free(cfg->labels);
    cfg->labels = NULL;
  }
  free(cfg->view.cols);
  cfg->view.cols = NULL;
  cfg->view.num_cols = 0;
  free(cfg->warmup);
  cfg->warmup = NULL;
  cfg->num_warmup = 0;
  free(cfg->images);
  cfg->images = NULL;
  cfg->num_images = 0;
  ox_version_policy_free(&cfg->version_policy);
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
  for (size_t i = 0; i < cfg->num_images; i++) {
    const ox_image_input_t *ii = &cfg->images[i];
    const ox_img_spec_t *sp = &ii->spec;
    static const char *const colors[] = {"rgb", "bgr", "gray"};
    rc |= ox_buf_puts(o, i ? "," : ",\"image_inputs\":{");
    rc |= ox_buf_append_json_string(o, ii->input, strlen(ii->input));
    rc |= ox_buf_printf(o, ":{\"decode\":\"%s\"", colors[sp->color]);
    if (sp->resize == OX_IMG_RESIZE_SHORTER)
      rc |= ox_buf_printf(o, ",\"resize\":{\"shorter_side\":%u,\"filter\":\"%s\"}",
                          sp->shorter_side, img_filters[sp->filter]);
    else if (sp->resize == OX_IMG_RESIZE_EXACT)
      rc |= ox_buf_printf(o, ",\"resize\":{\"height\":%u,\"width\":%u,\"filter\":\"%s\"}",
                          sp->resize_h, sp->resize_w, img_filters[sp->filter]);
    if (sp->crop_w) rc |= ox_buf_printf(o, ",\"center_crop\":[%u,%u]", sp->crop_h, sp->crop_w);
    char num[40];
    size_t n = ox_format_f32(sp->scale, num);
    rc |= ox_buf_printf(o, ",\"scale\":%.*s", (int)n, num);
    int nch = sp->color == OX_IMG_GRAY ? 1 : 3;
    for (int a = 0; a < 2; a++) {
      const float *v = a ? sp->std : sp->mean;
      rc |= ox_buf_puts(o, a ? "],\"std\":[" : ",\"mean\":[");
      for (int j = 0; j < nch; j++) {
        n = ox_format_f32(v[j], num);
        rc |= ox_buf_printf(o, j ? ",%.*s" : "%.*s", (int)n, num);
      }
    }
    rc |= ox_buf_printf(o,
                        "],\"layout\":\"%s\",\"dtype\":\"%s\",\"exif_orientation\":%s,"
                        "\"max_pixels\":%" PRIu64 "}",
                        sp->layout == OX_IMG_NCHW ? "NCHW" : "NHWC", ox_dtype_name(sp->dtype),
                        sp->exif_orientation ? "true" : "false",
                        sp->max_pixels ? sp->max_pixels : (uint64_t)OX_IMG_DEFAULT_MAX_PIXELS);
    if (i + 1 == cfg->num_images) rc |= ox_buf_puts(o, "}");
  }
  /* Outputs with a label file (Triton's "output" entries, only their label_filename here). */
  for (size_t i = 0, n = 0; cfg->labels && i < cfg->num_labels; i++) {
    if (!cfg->labels[i].file[0]) continue;
    rc |= ox_buf_puts(o, n++ ? ",{\"name\":" : ",\"output\":[{\"name\":");
    rc |= ox_buf_append_json_string(o, m->outputs[i].name, strlen(m->outputs[i].name));
    rc |= ox_buf_puts(o, ",\"label_filename\":");
    rc |= ox_buf_append_json_string(o, cfg->labels[i].file, strlen(cfg->labels[i].file));
    rc |= ox_buf_puts(o, "}");
    size_t more = i + 1;
    while (more < cfg->num_labels && !cfg->labels[more].file[0]) more++;
    if (more == cfg->num_labels) rc |= ox_buf_puts(o, "]");
  }
  rc |= ox_buf_printf(o, ",\"model_warmup_count\":%zu,\"config_file\":%s}", cfg->num_warmup,
                      cfg->from_file ? "true" : "false");
  return rc ? OX_ENOMEM : 0;
}
