/* infer.c: the inference core (infer.h): from the request value to the response value.
 *
 * One allocation per request: the call (below) followed by the front end's context. The call
 * embeds its pool job, its loop task, its arena, the scheduler request and the feature view's
 * fetch state, so nothing else is allocated per request but the arena's blocks and the
 * scheduler's output array. The request is decoded once (ops.decode) and matched to the
 * model's inputs once; a request whose feature rows only L3 has runs prepare twice (the second
 * time from the view on, see prepare).
 */
#include "infer/infer.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
#include "core/clock.h"
#include "core/container.h"
#include "core/error.h"
#include "core/log.h"
#include "infer/classify.h"
#include "infer/features_view.h"
#include "infer/models.h"
#include "proto/tensor_json.h"

#define ERRCAP 512

struct ox_infer_call {
  ox_job_t job;
  ox_task_t done;
  ox_infer_env_t env;
  ox_model_t *model;
  size_t ctx_off; /* the front end's context starts here */
  ox_arena_t arena;
  ox_infer_request_t req;
  ox_infer_response_t resp;
  ox_sched_req_t sreq;
  uint64_t t_recv; /* ns, when the request was complete */
  int has_view;    /* the model input of the model's feature view was assembled */
  ox_fview_out_t view;
  ox_fview_fetch_t fetch;            /* rows of the view only L3 has: asked for, then answered */
  int has_class;                     /* some requested output asked for "classification" */
  const ox_infer_input_t **by_model; /* request input per model input (match_inputs) */
  ox_tensor_in_t *tin;               /* model inputs being built; NULL until decoded */
  char msg[ERRCAP];                  /* resp.msg */
};

static ox_model_state_t *state_of(ox_model_t *m) {
  return m->app;
}

/* A failure of the server's own (logged), not of the request or of load. */
static int is_fault(int err) {
  return err == OX_ENOMEM || err == OX_EINTERNAL || err == OX_ERUNTIME;
}

const ox_infer_param_t *ox_infer_param(const ox_infer_request_t *req, const char *name) {
  for (size_t i = 0; i < req->num_params; i++)
    if (ox_slice_eq(req->params[i].key, name)) return &req->params[i];
  return NULL;
}

/* Formats a shape as "[1,3,224,224]" into out. */
static const char *fmt_shape(char *out, size_t cap, const int64_t *dims, int rank) {
  size_t o = 0;
  out[o++] = '[';
  for (int i = 0; i < rank && o + 24 < cap; i++)
    o += (size_t)snprintf(out + o, cap - o, i ? ",%" PRId64 : "%" PRId64, dims[i]);
  if (o + 2 > cap) o = cap - 2;
  out[o++] = ']';
  out[o] = 0;
  return out;
}

#define NAMEFMT "'%.*s'"
#define NAMEARG(sl) (int)((sl).len > 128 ? 128 : (sl).len), (sl).ptr

/* BYTES elements in the binary extension: 4-byte little-endian length, then the bytes. */
static int split_bytes(ox_slice_t bin, uint64_t count, ox_slice_t *out) {
  size_t pos = 0;
  for (uint64_t i = 0; i < count; i++) {
    if (bin.len - pos < 4) return -1;
    const unsigned char *p = (const unsigned char *)bin.ptr + pos;
    uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    pos += 4;
    if (n > bin.len - pos) return -1;
    out[i] = ox_slice(bin.ptr + pos, n);
    pos += n;
  }
  return pos == bin.len ? 0 : -2;
}

/* Builds the run input for one request input. Returns 0 or an error code (msg in err). */
static int build_input(ox_infer_call_t *call, const ox_infer_input_t *in,
                       const ox_tensor_info_t *info, ox_tensor_in_t *t, char *err) {
  char s1[160], s2[160];
  if (in->dtype != info->dtype) {
    snprintf(err, ERRCAP, "input " NAMEFMT ": datatype %s does not match the model's %s",
             NAMEARG(in->name), ox_dtype_name(in->dtype), ox_dtype_name(info->dtype));
    return OX_EINVALID;
  }
  if (info->rank >= 0) {
    int bad = in->rank != info->rank;
    for (int d = 0; !bad && d < info->rank; d++)
      bad = info->dims[d] >= 0 && in->shape[d] != info->dims[d];
    if (bad) {
      snprintf(err, ERRCAP, "input " NAMEFMT ": shape %s does not match the model's %s",
               NAMEARG(in->name), fmt_shape(s1, sizeof s1, in->shape, in->rank),
               fmt_shape(s2, sizeof s2, info->dims, info->rank));
      return OX_EINVALID;
    }
  }
  t->dtype = in->dtype;
  t->rank = in->rank;
  t->shape = in->shape;
  t->count = in->count;
  size_t esz = ox_dtype_size(in->dtype);
  if (in->has_binary) {
    if (in->dtype == OX_DT_BYTES) {
      if (in->count > in->binary.len / 4) {
        snprintf(err, ERRCAP,
                 "input " NAMEFMT ": %" PRIu64
                 " BYTES elements need more than "
                 "binary_data_size %zu bytes",
                 NAMEARG(in->name), in->count, in->binary.len);
        return OX_EINVALID;
      }
      ox_slice_t *sl = ox_arena_alloc(&call->arena, (size_t)in->count * sizeof *sl + 1);
      if (!sl) return OX_ENOMEM;
      int rc = split_bytes(in->binary, in->count, sl);
      if (rc) {
        snprintf(err, ERRCAP,
                 rc == -1 ? "input " NAMEFMT
                            ": a BYTES length prefix runs past its "
                            "binary data"
                          : "input " NAMEFMT ": bytes left over after %" PRIu64 " BYTES elements",
                 NAMEARG(in->name), in->count);
        return OX_EINVALID;
      }
      t->strings = sl;
      return 0;
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(in->count, (uint64_t)esz, &nbytes) || nbytes != in->binary.len) {
      snprintf(err, ERRCAP,
               "input " NAMEFMT
               ": binary_data_size is %zu bytes, but shape %s of %s "
               "needs %" PRIu64,
               NAMEARG(in->name), in->binary.len, fmt_shape(s1, sizeof s1, in->shape, in->rank),
               ox_dtype_name(in->dtype), in->count * (uint64_t)esz);
      return OX_EINVALID;
    }
    const char *data = in->binary.ptr;
    if ((uintptr_t)data % (esz ? esz : 1)) {
      /* Misaligned (follows an odd-sized input): one copy into aligned memory. */
      char *copy = ox_arena_alloc_aligned(&call->arena, nbytes ? nbytes : 1, 64);
      if (!copy) return OX_ENOMEM;
      memcpy(copy, data, nbytes);
      data = copy;
    }
    t->data = data;
    t->nbytes = nbytes;
    return 0;
  }
  if (!in->data_json.ptr) {
    snprintf(err, ERRCAP, "input " NAMEFMT " has no data", NAMEARG(in->name));
    return OX_EINVALID;
  }
  /* Every element takes at least one byte of JSON text: bounds what we allocate. */
  if (in->count > in->data_json.len) {
    snprintf(err, ERRCAP,
             "input " NAMEFMT ": shape %s has %" PRIu64
             " elements, more than the "
             "data holds",
             NAMEARG(in->name), fmt_shape(s1, sizeof s1, in->shape, in->rank), in->count);
    return OX_EINVALID;
  }
  size_t nbytes =
      in->dtype == OX_DT_BYTES ? (size_t)in->count * sizeof(ox_slice_t) : (size_t)in->count * esz;
  void *buf = ox_arena_alloc_aligned(&call->arena, nbytes ? nbytes : 1, 64);
  if (!buf) return OX_ENOMEM;
  char derr[256];
  int rc = ox_tensor_json_decode(in->data_json, in->dtype, in->count, buf, &call->arena, derr,
                                 sizeof derr);
  if (rc == OX_ENOMEM) return OX_ENOMEM;
  if (rc) {
    snprintf(err, ERRCAP, "input " NAMEFMT ": %s", NAMEARG(in->name), derr);
    return OX_EINVALID;
  }
  if (in->dtype == OX_DT_BYTES) {
    t->strings = buf;
  } else {
    t->data = buf;
    t->nbytes = nbytes;
  }
  return 0;
}

/* The process-wide cap on decoded image pixels (--image-max-pixels); a model's own max_pixels
 * may only lower it. */
static _Atomic uint64_t image_max_pixels = OX_IMG_DEFAULT_MAX_PIXELS;

void ox_infer_set_image_max_pixels(uint64_t n) {
  atomic_store(&image_max_pixels, n ? n : OX_IMG_DEFAULT_MAX_PIXELS);
}

/* The image input of model input k, or NULL. */
static const ox_image_input_t *image_input_of(const ox_model_config_t *cfg, size_t k) {
  for (size_t i = 0; i < cfg->num_images; i++)
    if (cfg->images[i].input_idx == k) return &cfg->images[i];
  return NULL;
}

/* Builds a model input declared in "image_inputs" from the request's BYTES elements (one JPEG
 * or PNG file per row; JSON strings are base64): each file is decoded and preprocessed straight
 * into its row of the tensor. Returns 0 or an error code (msg in err, naming the row). */
static int build_image_input(ox_infer_call_t *call, const ox_infer_input_t *in,
                             const ox_tensor_info_t *info, const ox_image_input_t *img,
                             uint32_t max_rows, ox_tensor_in_t *t, char *err) {
  char s1[160];
  if (in->dtype != OX_DT_BYTES) {
    snprintf(err, ERRCAP,
             "input " NAMEFMT
             " takes image files (JPEG or PNG) as BYTES, one per batch row; got %s",
             NAMEARG(in->name), ox_dtype_name(in->dtype));
    return OX_EINVALID;
  }
  uint64_t rows = in->count;
  int ok = info->rank == 4 ? in->rank == 1 || (in->rank == 2 && in->shape[1] == 1)
                           : in->count == 1 && in->rank <= 2;
  if (ok && info->rank == 4) rows = (uint64_t)in->shape[0];
  if (ok && info->rank == 4 && info->dims[0] == 1 && rows != 1) ok = 0;
  if (!ok || rows == 0) {
    snprintf(err, ERRCAP, "input " NAMEFMT ": shape %s; an image input takes %s (one file per row)",
             NAMEARG(in->name), fmt_shape(s1, sizeof s1, in->shape, in->rank),
             info->rank == 4 && info->dims[0] != 1 ? "[N] or [N,1] BYTES, N >= 1" : "[1] BYTES");
    return OX_EINVALID;
  }
  if (max_rows && rows > max_rows) {
    snprintf(err, ERRCAP, "batch size %" PRIu64 " exceeds the model's max_batch_size %u", rows,
             max_rows);
    return OX_EINVALID;
  }
  /* The files as BYTES elements, checked and split exactly as any BYTES input's. */
  const ox_tensor_info_t as_bytes = {.dtype = OX_DT_BYTES, .rank = -1};
  ox_tensor_in_t files;
  int rc = build_input(call, in, &as_bytes, &files, err);
  if (rc) return rc;
  ox_slice_t *el = (ox_slice_t *)files.strings; /* the call's arena: ours to rewrite */
  if (!in->has_binary) {
    for (uint64_t r = 0; r < in->count; r++) { /* JSON carries the files in base64 */
      size_t cap = ox_base64_decoded_max(el[r].len), n = 0;
      unsigned char *b = ox_arena_alloc(&call->arena, cap + 1);
      if (!b) return OX_ENOMEM;
      if (ox_base64_decode(el[r].ptr, el[r].len, b, cap, &n)) {
        snprintf(err, ERRCAP,
                 "input " NAMEFMT " row %" PRIu64
                 ": not base64 (in JSON, image files are base64 strings; or send them as "
                 "binary data)",
                 NAMEARG(in->name), r);
        return OX_EINVALID;
      }
      el[r] = ox_slice((const char *)b, n);
    }
  }
  ox_img_spec_t spec = img->spec;
  uint64_t cap = atomic_load(&image_max_pixels);
  if (!spec.max_pixels || spec.max_pixels > cap) spec.max_pixels = cap;
  uint32_t c, h, w;
  ox_img_spec_fixed_dims(&spec, &c, &h, &w); /* fixed: checked when the model loaded */
  size_t row_elems = (size_t)c * h * w, row_bytes = row_elems * ox_dtype_size(spec.dtype);
  size_t total;
  if (__builtin_mul_overflow(row_bytes, (size_t)rows, &total)) return OX_ENOMEM;
  char *buf = ox_arena_alloc_aligned(&call->arena, total ? total : 1, 64);
  int64_t *shape = ox_arena_alloc(&call->arena, sizeof(int64_t) * 4);
  if (!buf || !shape) return OX_ENOMEM;
  for (uint64_t r = 0; r < rows; r++) {
    char ierr[256];
    rc = ox_img_preprocess(&spec, (const uint8_t *)el[r].ptr, el[r].len, buf + r * row_bytes,
                           row_bytes, ierr, sizeof ierr);
    if (rc == OX_ENOMEM) return rc;
    if (rc) {
      snprintf(err, ERRCAP, "input " NAMEFMT " row %" PRIu64 ": %s", NAMEARG(in->name), r, ierr);
      return OX_EINVALID;
    }
  }
  int n = 0;
  if (info->rank == 4) shape[n++] = (int64_t)rows;
  if (spec.layout == OX_IMG_NCHW) {
    shape[n++] = c, shape[n++] = h, shape[n++] = w;
  } else {
    shape[n++] = h, shape[n++] = w, shape[n++] = c;
  }
  *t = (ox_tensor_in_t){.dtype = spec.dtype,
                        .rank = n,
                        .shape = shape,
                        .data = buf,
                        .nbytes = total,
                        .count = (uint64_t)row_elems * rows};
  return 0;
}

/* Worker: has the front end decode the request, then matches its inputs to the model's
 * (call->by_model; call->tin zeroed). Returns 0 or an error code with the message in err. */
static int decode_request(ox_infer_call_t *call, const ox_feature_view_t *view, char *err) {
  ox_model_t *m = call->model;
  ox_infer_request_t *req = &call->req;
  memset(req, 0, sizeof *req);
  req->model = m;
  int rc = call->env.ops->decode(ox_infer_ctx(call), req, &call->arena, err, ERRCAP);
  if (rc) return rc;
  /* Match request inputs to the model's, in the model's order. */
  const ox_infer_input_t **by_model =
      ox_arena_alloc(&call->arena, sizeof(void *) * (m->num_inputs + 1));
  ox_tensor_in_t *tin = ox_arena_alloc(&call->arena, sizeof *tin * (m->num_inputs + 1));
  if (!by_model || !tin) return OX_ENOMEM;
  memset(by_model, 0, sizeof(void *) * m->num_inputs);
  memset(tin, 0, sizeof *tin * m->num_inputs);
  for (size_t i = 0; i < req->num_inputs; i++) {
    const ox_infer_input_t *in = &req->inputs[i];
    size_t k = 0;
    while (k < m->num_inputs && !ox_slice_eq(in->name, m->inputs[k].name)) k++;
    if (k == m->num_inputs) {
      if (view && ox_fview_takes_input(view, in->name)) continue;
      snprintf(err, ERRCAP, "unknown input " NAMEFMT " for model '%s'", NAMEARG(in->name), m->name);
      return OX_EINVALID;
    }
    if (view && k == view->input_idx) {
      snprintf(err, ERRCAP,
               "input '%s' of model '%s' is assembled by the server (feature_view): "
               "send the keys and raw values instead",
               m->inputs[k].name, m->name);
      return OX_EINVALID;
    }
    by_model[k] = in;
  }
  for (size_t k = 0; k < m->num_inputs; k++) {
    if (!by_model[k] && !(view && k == view->input_idx)) {
      snprintf(err, ERRCAP, "missing input '%s' for model '%s'", m->inputs[k].name, m->name);
      return OX_EINVALID;
    }
  }
  call->by_model = by_model;
  call->tin = tin;
  return 0;
}

/* Builds the model's inputs and the scheduler request. Runs twice for a request whose feature
 * rows the L3 fetcher must bring (OX_FVIEW_FETCH the first time): the request is decoded once
 * and the view is assembled before the other inputs, so the second run starts there. */
static int prepare(ox_infer_call_t *call, char *err) {
  ox_model_t *m = call->model;
  /* A feature view's input is assembled here, from the request's keys and raw values. */
  const ox_feature_view_t *view = state_of(m)->cfg.view.enabled ? &state_of(m)->cfg.view : NULL;
  if (!call->tin) {
    int st = decode_request(call, view, err);
    if (st) return st;
  }
  ox_infer_request_t *req = &call->req;
  const ox_infer_input_t **by_model = call->by_model;
  ox_tensor_in_t *tin = call->tin;
  if (view) {
    size_t k = view->input_idx;
    int64_t deadline = (int64_t)call->t_recv + (int64_t)view->deadline_us * 1000;
    int st = ox_fview_assemble(call->env.features, view, req, &call->arena, deadline, &call->fetch,
                               &call->view, err, ERRCAP);
    if (st) return st;
    if (m->inputs[k].dims[0] == 1 && call->view.shape[0] != 1) {
      snprintf(err, ERRCAP, "model '%s' takes one row of features, the request has %" PRId64,
               m->name, call->view.shape[0]);
      return OX_EINVALID;
    }
    call->has_view = 1;
    tin[k] = (ox_tensor_in_t){.dtype = OX_DT_FP32,
                              .rank = 2,
                              .shape = call->view.shape,
                              .count = call->view.count,
                              .data = call->view.data,
                              .nbytes = call->view.count * sizeof(float)};
  }
  for (size_t k = 0; k < m->num_inputs; k++) {
    if (view && k == view->input_idx) continue;
    const ox_model_config_t *cfg = &state_of(m)->cfg;
    const ox_image_input_t *img = image_input_of(cfg, k);
    int st = img ? build_image_input(call, by_model[k], &m->inputs[k], img,
                                     cfg->from_file ? cfg->sched.max_batch_size : 0, &tin[k], err)
                 : build_input(call, by_model[k], &m->inputs[k], &tin[k], err);
    if (st) {
      if (st == OX_ENOMEM && !err[0]) snprintf(err, ERRCAP, "out of memory");
      return st;
    }
  }
  /* Requested outputs (all when none are named), in the order asked for. */
  size_t n_out = req->num_outputs ? req->num_outputs : m->num_outputs;
  size_t *out_idx = ox_arena_alloc(&call->arena, sizeof(size_t) * (n_out + 1));
  if (!out_idx) return OX_ENOMEM;
  for (size_t j = 0; j < n_out; j++) {
    if (!req->num_outputs) {
      out_idx[j] = j;
      continue;
    }
    const ox_infer_output_t *o = &req->outputs[j];
    size_t k = 0;
    while (k < m->num_outputs && !ox_slice_eq(o->name, m->outputs[k].name)) k++;
    if (k == m->num_outputs) {
      snprintf(err, ERRCAP, "unknown output " NAMEFMT " for model '%s'", NAMEARG(o->name), m->name);
      return OX_EINVALID;
    }
    if (o->classification && !ox_classify_supported(m->outputs[k].dtype)) {
      snprintf(err, ERRCAP,
               "output " NAMEFMT
               ": classification is not available for datatype %s (it needs an integer, FP32 "
               "or FP64 output)",
               NAMEARG(o->name), ox_dtype_name(m->outputs[k].dtype));
      return OX_EINVALID;
    }
    call->has_class |= o->classification != 0;
    out_idx[j] = k;
  }
  /* Rows: the batch dimension, which every input must agree on when the model batches. */
  ox_model_state_t *st = state_of(m);
  uint64_t rows = 1;
  if (m->num_inputs && tin[0].rank >= 1) rows = (uint64_t)tin[0].shape[0];
  if (st->cfg.sched.max_batch_size > 0) {
    for (size_t k = 1; k < m->num_inputs; k++) {
      if (tin[k].rank < 1 || (uint64_t)tin[k].shape[0] != rows) {
        snprintf(err, ERRCAP,
                 "input '%s': batch dimension %" PRId64
                 " differs from input '%s''s "
                 "%" PRIu64,
                 m->inputs[k].name, tin[k].rank ? tin[k].shape[0] : 0, m->inputs[0].name, rows);
        return OX_EINVALID;
      }
    }
  }
  if (st->cfg.from_file && st->cfg.sched.max_batch_size > 0 &&
      rows > st->cfg.sched.max_batch_size) {
    snprintf(err, ERRCAP, "batch size %" PRIu64 " exceeds the model's max_batch_size %u", rows,
             st->cfg.sched.max_batch_size);
    return OX_EINVALID;
  }
  ox_sched_req_t *sr = &call->sreq;
  sr->model = m;
  sr->inputs = tin;
  sr->out_idx = out_idx;
  sr->n_out = n_out;
  sr->rows = rows;
  /* Triton: a timeout of 0 means "not set", so the model default applies. A timeout too
   * large for the clock (up to 2^64-1 us is valid) saturates: a deadline that never comes. */
  uint64_t timeout_us = req->timeout_us ? req->timeout_us : st->cfg.sched.default_timeout_us;
  uint64_t deadline = 0;
  if (timeout_us && (__builtin_mul_overflow(timeout_us, 1000u, &deadline) ||
                     __builtin_add_overflow(deadline, call->t_recv, &deadline)))
    deadline = UINT64_MAX;
  sr->deadline_ns = deadline;
  sr->outs = calloc(n_out + 1, sizeof *sr->outs);
  if (!sr->outs) return OX_ENOMEM;
  return 0;
}

static void record_stats(ox_infer_call_t *call, int ok, uint64_t t_end) {
  ox_model_stats_t *s = &state_of(call->model)->stats;
  ox_sched_req_t *sr = &call->sreq;
  uint64_t total = t_end - call->t_recv;
  ox_stat_add(ok ? &s->success : &s->fail, total);
  ox_hist_record_us(&s->request_us, total / 1000);
  if (!ok || !sr->t_start) return;
  uint64_t queue = sr->t_start - sr->t_enqueue;
  uint64_t input = (sr->t_enqueue - call->t_recv) + (sr->t_infer - sr->t_start);
  uint64_t infer = sr->t_output - sr->t_infer;
  uint64_t output = t_end - sr->t_output;
  ox_stat_add(&s->queue, queue);
  ox_stat_add(&s->compute_input, input);
  ox_stat_add(&s->compute_infer, infer);
  ox_stat_add(&s->compute_output, output);
  ox_hist_record_us(&s->queue_us, queue / 1000);
  ox_hist_record_us(&s->input_us, input / 1000);
  ox_hist_record_us(&s->infer_us, infer / 1000);
  ox_hist_record_us(&s->output_us, output / 1000);
  atomic_fetch_add_explicit(&s->inference_count, sr->rows, memory_order_relaxed);
  if (sr->first_in_batch) {
    atomic_fetch_add_explicit(&s->execution_count, 1, memory_order_relaxed);
    ox_hist_record_batch(&s->batch_size, sr->batch_rows);
    uint32_t bi = sr->batch_rows <= OX_MAX_BATCH_STATS ? sr->batch_rows : OX_MAX_BATCH_STATS;
    ox_stat_add(&s->by_batch[bi].compute_input, sr->t_infer - sr->t_start);
    ox_stat_add(&s->by_batch[bi].compute_infer, infer);
    ox_stat_add(&s->by_batch[bi].compute_output, output);
  }
  atomic_store_explicit(&s->last_inference_ms, (uint64_t)ox_wall_ms(), memory_order_relaxed);
}

/* The call failed with error code err (message msg): its response value, rendered. */
static void fail(ox_infer_call_t *call, int err, const char *msg) {
  ox_infer_response_t *r = &call->resp;
  if (msg != call->msg) snprintf(call->msg, sizeof call->msg, "%s", msg);
  r->status = err;
  r->msg = call->msg;
  r->outputs = NULL;
  r->out_idx = NULL;
  r->num_outputs = 0;
  call->env.ops->encode(ox_infer_ctx(call), r);
}

/* Loop thread: the call is over for the core. */
static void call_done(ox_loop_t *loop, ox_task_t *t) {
  (void)loop;
  ox_infer_call_t *call = ox_container_of(t, ox_infer_call_t, done);
  call->env.ops->done(ox_infer_ctx(call), &call->resp);
}

static void post(ox_infer_call_t *call) {
  ox_loop_post(call->env.loop, &call->done);
}

/* The response's outputs with each one asked for "classification" replaced by its top-K
 * BYTES tensor (infer/classify.h), in the call's arena; ORT's outputs stay where they are (the
 * batch still owns them). Returns 0 with *outs, or an error code with the message in call->msg. */
static int classify_outputs(ox_infer_call_t *call, const ox_sched_req_t *sr,
                            const ox_tensor_out_t **outs) {
  ox_model_state_t *st = state_of(call->model);
  const ox_infer_request_t *req = &call->req;
  ox_tensor_out_t *o = ox_arena_alloc(&call->arena, sr->n_out * sizeof *o + 1);
  if (!o) return OX_ENOMEM;
  memcpy(o, sr->outs, sr->n_out * sizeof *o);
  for (size_t j = 0; j < sr->n_out; j++) {
    uint64_t k = req->outputs[j].classification;
    if (!k) continue;
    size_t mi = sr->out_idx[j];
    const ox_labels_t *labels = st->cfg.labels ? &st->cfg.labels[mi].labels : NULL;
    char why[256];
    int rc = ox_classify_output(&sr->outs[j], st->cfg.sched.max_batch_size > 0, k, labels,
                                &call->arena, &o[j], why, sizeof why);
    if (rc == OX_ENOMEM) {
      snprintf(call->msg, sizeof call->msg, "out of memory");
      return rc;
    }
    if (rc) {
      snprintf(call->msg, sizeof call->msg, "output '%s': %s", call->model->outputs[mi].name, why);
      return rc;
    }
  }
  *outs = o;
  return 0;
}

/* Batcher callback (worker or timer thread): the request ran or failed. */
static void sreq_done(ox_sched_req_t *sr) {
  ox_infer_call_t *call = ox_container_of(sr, ox_infer_call_t, sreq);
  ox_infer_response_t *r = &call->resp;
  int status = sr->status;
  const ox_tensor_out_t *outs = sr->outs;
  if (status) {
    snprintf(call->msg, sizeof call->msg, "%s", sr->err);
  } else if (call->has_class) {
    status = classify_outputs(call, sr, &outs); /* on error call->msg says why */
  }
  if (!status) {
    r->outputs = outs;
    r->out_idx = sr->out_idx;
    r->num_outputs = sr->n_out;
    if (call->has_view) {
      r->features = call->view.return_features ? call->view.data : NULL;
      r->num_features = call->view.return_features ? call->view.count : 0;
      r->features_degraded = call->view.degraded;
    }
    /* The front end renders from ORT's memory (and the request, which lives in the received
     * bytes: the front end keeps them until ox_infer_release). */
    status = call->env.ops->encode(ox_infer_ctx(call), r);
    if (status) snprintf(call->msg, sizeof call->msg, "out of memory");
  }
  record_stats(call, status == 0, ox_mono_ns());
  if (status) {
    if (is_fault(status)) ox_warn("infer %s: %s", call->model->name, call->msg);
    fail(call, status, call->msg);
  }
  post(call);
}

static void job_cancel(ox_job_t *j);

/* Fetcher thread: the view's L3 rows are answered; the job runs again (its prepare then uses
 * them), ahead of new requests. */
static void fetch_done(ox_fstore_fetch_t *f) {
  ox_infer_call_t *call = ox_container_of(f, ox_infer_call_t, fetch.f);
  call->fetch.answered = 1;
  if (ox_pool_submit_front(call->env.pool, &call->job)) job_cancel(&call->job);
}

static void job_run(ox_job_t *j) {
  ox_infer_call_t *call = ox_container_of(j, ox_infer_call_t, job);
  char *err = call->msg;
  err[0] = 0;
  ox_model_state_t *st = state_of(call->model);
  if (!call->tin && atomic_load(&call->sreq.cancelled)) {
    /* The client hung up while the job waited for a worker: nobody will read the answer, so
     * the request is not decoded at all (the front end drops the answer). */
    ox_batcher_unreserve(st->batcher);
    atomic_fetch_add_explicit(&st->stats.gone_unparsed, 1, memory_order_relaxed);
    record_stats(call, 0, ox_mono_ns());
    fail(call, OX_ECANCELLED, "client closed the connection");
    post(call);
    return;
  }
  int status = prepare(call, err);
  if (status == OX_FVIEW_FETCH) {
    /* Rows only L3 has: the fetcher asks for them together with other requests' and runs this
     * job again (prepare then goes on from the view); this thread goes on with other work. */
    call->fetch.f.done = fetch_done;
    if (ox_fstore_fetch(call->env.features, &call->fetch.f) == 0) return;
    call->fetch.answered = 1; /* refused (stopping): the wants hold their answers already */
    status = prepare(call, err);
  }
  if (status == 0) {
    call->sreq.done = sreq_done;
    ox_batcher_enqueue(st->batcher, &call->sreq); /* sreq_done posts the response */
    return;
  }
  ox_batcher_unreserve(st->batcher);
  if (!err[0]) snprintf(err, ERRCAP, "%s", status == OX_ENOMEM ? "out of memory" : "bad request");
  if (is_fault(status)) ox_warn("infer %s: %s", call->model->name, err);
  record_stats(call, 0, ox_mono_ns());
  fail(call, status, err);
  post(call);
}

/* The pool shuts down with the job queued (or the fetcher's answer could not be queued). */
static void job_cancel(ox_job_t *j) {
  ox_infer_call_t *call = ox_container_of(j, ox_infer_call_t, job);
  ox_batcher_unreserve(state_of(call->model)->batcher);
  fail(call, OX_EUNAVAILABLE, "server is shutting down");
  post(call);
}

static void record_fail_fast(ox_model_state_t *st) {
  ox_stat_add(&st->stats.fail, 0);
}

int ox_infer_check_model(ox_model_t *m, const char **why) {
  if (!state_of(m)->unavailable) return 0;
  *why = "model is not available: its configuration or warm-up failed";
  return OX_EUNAVAILABLE;
}

/* Where the front end's context starts: after the call, aligned for any type. */
#define CTX_OFF ((sizeof(ox_infer_call_t) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

int ox_infer_create(ox_model_t *m, size_t ctx_size, ox_infer_call_t **out, const char **why) {
  ox_model_state_t *st = state_of(m);
  /* Backpressure before any parsing: a full model queue is refused at once. */
  if (ox_batcher_reserve(st->batcher) != 0) {
    record_fail_fast(st);
    *why = "model queue is full; retry later";
    return OX_EUNAVAILABLE;
  }
  ox_infer_call_t *call = ctx_size > SIZE_MAX - CTX_OFF ? NULL : calloc(1, CTX_OFF + ctx_size);
  if (!call) {
    ox_batcher_unreserve(st->batcher);
    *why = "out of memory";
    return OX_ENOMEM;
  }
  ox_models_ref(m); /* the call's reference, dropped by ox_infer_release */
  call->t_recv = ox_mono_ns();
  call->job.run = job_run;
  call->job.cancel = job_cancel;
  call->done.fn = call_done;
  call->model = m;
  call->ctx_off = CTX_OFF;
  call->resp.model = m;
  call->resp.req = &call->req;
  ox_arena_init(&call->arena);
  *out = call;
  return 0;
}

void *ox_infer_ctx(ox_infer_call_t *call) {
  return (char *)call + call->ctx_off;
}

int ox_infer_submit(ox_infer_call_t *call, const ox_infer_env_t *env, const char **why) {
  call->env = *env;
  if (ox_pool_submit(env->pool, &call->job) == 0) return 0;
  ox_model_state_t *st = state_of(call->model);
  ox_batcher_unreserve(st->batcher);
  ox_infer_release(call);
  record_fail_fast(st);
  *why = "server is overloaded: inference queue is full; retry later";
  return OX_EUNAVAILABLE;
}

void ox_infer_cancel(ox_infer_call_t *call) {
  atomic_store(&call->sreq.cancelled, 1);
}

void ox_infer_release_outputs(ox_infer_call_t *call) {
  ox_batch_release(call->sreq.batch);
  call->sreq.batch = NULL;
}

void ox_infer_release(ox_infer_call_t *call) {
  ox_batch_release(call->sreq.batch);
  free(call->sreq.outs);
  ox_fview_fetch_release(&call->fetch);
  ox_arena_free(&call->arena);
  ox_model_t *m = call->model;
  free(call);
  ox_models_put(m); /* the last reference hands the version to the model manager */
}
