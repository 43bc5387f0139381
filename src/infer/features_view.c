/* features_view.c: see features_view.h. Runs on the worker that prepares the request; the only
 * blocking calls are the remote (L3) row reads, bounded by the view's deadline. */
#include "infer/features_view.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/text.h"
#include "proto/numconv.h"
#include "proto/tensor_json.h"

int ox_fview_takes_input(const ox_feature_view_t *v, ox_slice_t name) {
  for (size_t i = 0; i < v->num_cols; i++)
    if (v->cols[i].kind == OX_FCOL_RAW && ox_slice_eq(name, v->cols[i].name)) return 1;
  return 0;
}

/* A raw input's values as floats. Returns 0, OX_EINVALID with err, or OX_ENOMEM. */
static int raw_input(const ox_infer_input_t *in, ox_arena_t *a, float **vals, uint64_t *n,
                     char *err, size_t errcap) {
  int nl = (int)(in->name.len > 100 ? 100 : in->name.len);
  if (in->dtype != OX_DT_FP32 && in->dtype != OX_DT_FP64 && in->dtype != OX_DT_INT32 &&
      in->dtype != OX_DT_INT64) {
    snprintf(err, errcap, "input '%.*s' (a raw feature) must be FP32, FP64, INT32 or INT64", nl,
             in->name.ptr);
    return OX_EINVALID;
  }
  if (in->rank > 2 || (in->rank == 2 && in->shape[1] != 1) || in->count == 0) {
    snprintf(err, errcap,
             "input '%.*s' (a raw feature) must have shape [N], [N,1] or [1] with "
             "N >= 1",
             nl, in->name.ptr);
    return OX_EINVALID;
  }
  size_t esz = ox_dtype_size(in->dtype);
  uint64_t count = in->count;
  if (in->has_binary ? in->binary.len / esz != count || in->binary.len % esz
                     : !in->data_json.ptr || count > in->data_json.len) {
    snprintf(err, errcap,
             "input '%.*s' (a raw feature): its data does not hold %" PRIu64 " %s values", nl,
             in->name.ptr, count, ox_dtype_name(in->dtype));
    return OX_EINVALID;
  }
  void *buf = ox_arena_alloc_aligned(a, (size_t)count * 8, 8);
  float *f = ox_arena_alloc_aligned(a, (size_t)count * sizeof(float), 64);
  if (!buf || !f) return OX_ENOMEM;
  if (in->has_binary) {
    memcpy(buf, in->binary.ptr, in->binary.len);
  } else {
    char derr[200];
    int rc = ox_tensor_json_decode(in->data_json, in->dtype, count, buf, a, derr, sizeof derr);
    if (rc == OX_ENOMEM) return OX_ENOMEM;
    if (rc) {
      snprintf(err, errcap, "input '%.*s': %s", nl, in->name.ptr, derr);
      return OX_EINVALID;
    }
  }
  for (uint64_t i = 0; i < count; i++) {
    switch (in->dtype) {
      case OX_DT_FP32:
        f[i] = ((const float *)buf)[i];
        break;
      case OX_DT_FP64:
        f[i] = (float)((const double *)buf)[i];
        break;
      case OX_DT_INT32:
        f[i] = (float)((const int32_t *)buf)[i];
        break;
      default:
        f[i] = (float)((const int64_t *)buf)[i];
        break;
    }
  }
  for (uint64_t i = 0; i < count; i++)
    if (!__builtin_isfinite(f[i])) {
      snprintf(err, errcap,
               "input '%.*s' (a raw feature): value %" PRIu64
               " is not finite or outside float32's range",
               nl, in->name.ptr, i);
      return OX_EINVALID;
    }
  *vals = f;
  *n = count;
  return 0;
}

/* The value of key parameter name as text (a string, or an integer's digits). */
static int key_param(const ox_infer_request_t *req, const char *name, ox_slice_t *out, char *err,
                     size_t errcap) {
  const ox_infer_param_t *p = ox_infer_param(req, name);
  int ok =
      p && ((p->kind == OX_PARAM_STRING && p->value.len > 0) ||
            (p->kind == OX_PARAM_NUMBER && !memchr(p->value.ptr, '.', p->value.len) &&
             !memchr(p->value.ptr, 'e', p->value.len) && !memchr(p->value.ptr, 'E', p->value.len)));
  if (!ok) {
    snprintf(err, errcap, "parameter '%s' (a feature key) is %s: send it as a non-empty string",
             name, p ? "not a string or an integer" : "missing");
    return OX_EINVALID;
  }
  if (p->value.len > OX_FSTORE_MAX_ID || memchr(p->value.ptr, 0, p->value.len)) {
    snprintf(err, errcap, "parameter '%s' (a feature key) is longer than %d bytes or holds NUL",
             name, OX_FSTORE_MAX_ID);
    return OX_EINVALID;
  }
  *out = p->value;
  return 0;
}

/* Request time: parameter "ts" (integer ms since the epoch), else the wall clock. */
static int request_ts(const ox_infer_request_t *req, int64_t *t, char *err, size_t errcap) {
  const ox_infer_param_t *p = ox_infer_param(req, "ts");
  if (!p) {
    *t = ox_wall_ms();
    return 0;
  }
  int64_t v = 0;
  if (p->kind != OX_PARAM_NUMBER || ox_dec_i64(p->value.ptr, p->value.len, &v)) {
    snprintf(err, errcap, "parameter 'ts' must be an integer number of milliseconds");
    return OX_EINVALID;
  }
  *t = v;
  return 0;
}

static void velocity_defaults(float *out) {
  memset(out, 0, sizeof(float) * OX_FEAT_VELOCITY_N);
  out[7] = -1.0f;
}

/* Row 0 of a row column from a lookup's answer: rc 0 (the row in val), OX_ENOT_FOUND (defaults),
 * or a failure (defaults, *degraded set, the first reason in why). */
static void row_fill(const ox_fcol_t *col, float *dst, int rc, const void *val, size_t len,
                     ox_slice_t key, int *degraded, char *why, size_t whycap) {
  size_t have = rc == 0 ? len / sizeof(float) : 0;
  if (have > col->width) have = col->width;
  if (have) memcpy(dst, val, have * sizeof(float));
  for (size_t j = have; j < col->width; j++) dst[j] = col->dflt;
  if (rc && rc != OX_ENOT_FOUND) {
    *degraded = 1;
    if (!why[0])
      snprintf(why, whycap, "row '%.*s': %s", (int)(key.len > 100 ? 100 : key.len), key.ptr,
               rc == OX_ETIMEOUT ? "deadline passed" : ox_strerror(rc));
  }
}

/* The last guard before the model and any JSON answer: a feature that is not finite (a stored
 * row or event written before ingestion refused such values, or a row an L3 writer stored) is
 * replaced by its column's default (velocity: 0, secs_since_last -1; raw: 0), counted, and
 * flags the result degraded. Raw values were checked on the way in. Returns how many. */
static uint64_t replace_nonfinite(const ox_feature_view_t *v, float *data, uint64_t rows, char *why,
                                  size_t whycap) {
  uint64_t bad = 0;
  uint32_t off = 0;
  for (size_t c = 0; c < v->num_cols; off += v->cols[c].width, c++) {
    const ox_fcol_t *col = &v->cols[c];
    for (uint64_t r = 0; r < rows; r++)
      for (uint32_t j = 0; j < col->width; j++) {
        float *x = &data[r * v->width + off + j];
        if (__builtin_isfinite(*x)) continue;
        *x = col->kind == OX_FCOL_ROW                  ? col->dflt
             : col->kind == OX_FCOL_VELOCITY && j == 7 ? -1.0f
                                                       : 0.0f;
        if (!bad++ && !why[0])
          snprintf(why, whycap, "feature %u of column %zu is not finite (replaced by its default)",
                   (unsigned)j, c);
      }
  }
  return bad;
}

/* The end of an assembly: OX_EUNAVAILABLE for a degraded mandatory view, else the output
 * (non-finite values replaced). why has room for 160 bytes. */
static int finish(ox_fstore_t *fs, const ox_feature_view_t *v, float *data, uint64_t rows,
                  int degraded, char *why, ox_fview_out_t *out, char *err, size_t errcap) {
  if (degraded && v->mandatory) {
    snprintf(err, errcap, "a mandatory feature is unavailable (%s)", why);
    return OX_EUNAVAILABLE;
  }
  /* after the mandatory check: a bad stored value is answered with defaults, flagged, not
   * turned into a refusal for as long as it stays stored */
  uint64_t bad = replace_nonfinite(v, data, rows, why, 160);
  if (bad) {
    degraded = 1;
    if (fs) ox_fstore_count_nonfinite(fs, bad);
  }
  if (degraded && fs) ox_fstore_count_degraded(fs);
  out->data = data;
  out->shape[0] = (int64_t)rows;
  out->shape[1] = v->width;
  out->count = rows * v->width;
  out->degraded = degraded;
  return 0;
}

/* The second call for a request whose rows were fetched: the first call's data with the
 * fetched columns filled in. */
static int fill_fetched(ox_fstore_t *fs, const ox_feature_view_t *v, ox_fview_fetch_t *fx,
                        ox_fview_out_t *out, char *err, size_t errcap) {
  out->return_features = fx->return_features;
  for (size_t i = 0; i < fx->f.n; i++) {
    const ox_fstore_want_t *ans = &fx->f.wants[i];
    const ox_fcol_t *col = &v->cols[fx->col[i]];
    float *dst = fx->data + fx->off[i];
    row_fill(col, dst, ans->rc, ans->val.data, ans->val.len, ans->key, &fx->degraded, fx->why,
             sizeof fx->why);
    for (uint64_t r = 1; r < fx->rows; r++)
      memcpy(dst + r * v->width, dst, col->width * sizeof(float));
  }
  return finish(fs, v, fx->data, fx->rows, fx->degraded, fx->why, out, err, errcap);
}

int ox_fview_assemble(ox_fstore_t *fs, const ox_feature_view_t *v, const ox_infer_request_t *req,
                      ox_arena_t *arena, int64_t deadline_ns, ox_fview_fetch_t *fx,
                      ox_fview_out_t *out, char *err, size_t errcap) {
  memset(out, 0, sizeof *out);
  if (fx && fx->answered && fx->data) return fill_fetched(fs, v, fx, out, err, errcap);
  float **raw = ox_arena_alloc(arena, sizeof(float *) * v->num_cols);
  uint64_t *raw_n = ox_arena_alloc(arena, sizeof(uint64_t) * v->num_cols);
  if (!raw || !raw_n) return OX_ENOMEM;
  int rc;
  const ox_infer_param_t *rf = ox_infer_param(req, "return_features");
  out->return_features = rf && rf->kind == OX_PARAM_BOOL && ox_slice_eq(rf->value, "true");

  /* Raw columns first: they decide the number of rows. */
  uint64_t rows = 1;
  for (size_t c = 0; c < v->num_cols; c++) {
    const ox_fcol_t *col = &v->cols[c];
    if (col->kind != OX_FCOL_RAW) continue;
    const ox_infer_input_t *in = NULL;
    for (size_t i = 0; i < req->num_inputs && !in; i++)
      if (ox_slice_eq(req->inputs[i].name, col->name)) in = &req->inputs[i];
    if (in) {
      int st = raw_input(in, arena, &raw[c], &raw_n[c], err, errcap);
      if (st) return st;
    } else {
      const ox_infer_param_t *p = ox_infer_param(req, col->name);
      double d;
      if (!p || p->kind != OX_PARAM_NUMBER ||
          ox_parse_f64(p->value.ptr, p->value.len, &d) != p->value.len) {
        snprintf(err, errcap,
                 "raw feature '%s' is missing: send it as an input or as a number "
                 "parameter",
                 col->name);
        return OX_EINVALID;
      }
      if (!__builtin_isfinite((float)d)) {
        snprintf(err, errcap, "raw feature '%s' is outside float32's range", col->name);
        return OX_EINVALID;
      }
      raw[c] = ox_arena_alloc(arena, sizeof(float));
      if (!raw[c]) return OX_ENOMEM;
      raw[c][0] = (float)d;
      raw_n[c] = 1;
    }
    if (raw_n[c] > 1 && rows > 1 && raw_n[c] != rows) {
      snprintf(err, errcap, "raw feature '%s' has %" PRIu64 " values, another has %" PRIu64,
               col->name, raw_n[c], rows);
      return OX_EINVALID;
    }
    if (raw_n[c] > rows) rows = raw_n[c];
  }
  int64_t t = 0;
  int need_t = 0;
  for (size_t c = 0; c < v->num_cols; c++) need_t |= v->cols[c].kind == OX_FCOL_VELOCITY;
  if (need_t && (rc = request_ts(req, &t, err, errcap))) return rc;
  if (rows > 1u << 20) {
    snprintf(err, errcap, "too many rows (%" PRIu64 ")", rows);
    return OX_EINVALID;
  }
  uint32_t w = v->width;
  float *data = ox_arena_alloc_aligned(arena, (size_t)rows * w * sizeof(float), 64);
  if (!data) return OX_ENOMEM;

  ox_buf_t rowbuf;
  ox_buf_init(&rowbuf);
  char why[160] = "";
  int degraded = 0;
  int asking = fx && !fx->answered && fs; /* rows only L3 has are listed, not waited for */
  if (asking) {
    fx->f.wants = ox_arena_alloc(arena, sizeof *fx->f.wants * v->num_cols);
    fx->col = ox_arena_alloc(arena, sizeof *fx->col * v->num_cols);
    fx->off = ox_arena_alloc(arena, sizeof *fx->off * v->num_cols);
    if (!fx->f.wants || !fx->col || !fx->off) return OX_ENOMEM;
    fx->f.n = 0;
    fx->f.deadline_ns = deadline_ns;
  }
  uint32_t off = 0;
  for (size_t c = 0; c < v->num_cols; off += v->cols[c].width, c++) {
    const ox_fcol_t *col = &v->cols[c];
    if (col->kind == OX_FCOL_RAW) {
      for (uint64_t r = 0; r < rows; r++) data[r * w + off] = raw[c][raw_n[c] == 1 ? 0 : r];
      continue;
    }
    ox_slice_t value;
    if ((rc = key_param(req, col->name, &value, err, errcap))) {
      ox_buf_free(&rowbuf);
      return rc;
    }
    float *dst = data + off; /* row 0; copied to the others below */
    char key[OX_FSTORE_MAX_ENTITY + 72];
    if (col->kind == OX_FCOL_VELOCITY) {
      int n = snprintf(key, sizeof key, "%s:%.*s", col->etype, (int)value.len, value.ptr);
      rc = fs ? ox_fstore_velocity(fs, ox_slice(key, (size_t)n), t, dst) : OX_EUNAVAILABLE;
      if (rc) {
        velocity_defaults(dst);
        degraded = 1;
        if (!why[0]) snprintf(why, sizeof why, "events of '%.100s': %s", key, ox_strerror(rc));
      }
    } else {
      int n = snprintf(key, sizeof key, "%s:%.*s", col->table, (int)value.len, value.ptr);
      ox_slice_t ks = ox_slice(key, (size_t)n);
      rowbuf.len = 0;
      ox_tier_t tier;
      if (asking) {
        ox_fstore_want_t *want = &fx->f.wants[fx->f.n];
        rc = ox_fstore_row_local(fs, ks, &rowbuf, &tier, want);
        if (rc == OX_EPENDING) { /* filled by the second call */
          char *kc = ox_arena_alloc(arena, (size_t)n);
          if (!kc) {
            ox_fstore_want_free(want);
            ox_buf_free(&rowbuf);
            return OX_ENOMEM;
          }
          memcpy(kc, key, (size_t)n);
          want->key = ox_slice(kc, (size_t)n);
          fx->col[fx->f.n] = (uint32_t)c;
          fx->off[fx->f.n++] = off;
          continue;
        }
      } else {
        rc = fs ? ox_fstore_row_get(fs, ks, &rowbuf, deadline_ns, &tier) : OX_EUNAVAILABLE;
      }
      if (rc == OX_ENOMEM) {
        ox_buf_free(&rowbuf);
        return OX_ENOMEM;
      }
      row_fill(col, dst, rc, rowbuf.data, rowbuf.len, ks, &degraded, why, sizeof why);
    }
    for (uint64_t r = 1; r < rows; r++) memcpy(data + r * w + off, dst, col->width * sizeof(float));
  }
  ox_buf_free(&rowbuf);
  if (asking && fx->f.n) { /* everything else is done: the second call only fills in */
    fx->data = data;
    fx->rows = rows;
    fx->degraded = degraded;
    fx->return_features = out->return_features;
    memcpy(fx->why, why, sizeof why);
    return OX_FVIEW_FETCH;
  }
  return finish(fs, v, data, rows, degraded, why, out, err, errcap);
}

void ox_fview_fetch_release(ox_fview_fetch_t *fx) {
  if (!fx) return;
  for (size_t i = 0; i < fx->f.n; i++) ox_fstore_want_free(&fx->f.wants[i]);
  fx->f.n = 0;
}
