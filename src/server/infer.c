/* infer.c: POST /v2/models/{m}[/versions/{v}]/infer, from request body to response segments.
 *
 * On the loop thread the handler checks the framing headers, takes a place in the model's
 * queue (a full queue is refused at once, before any parsing) and queues a prepare job. On a
 * worker the job parses the request header JSON (slices into the body), validates every input
 * against the model's metadata before anything is allocated from declared sizes, and builds
 * the input tensors (binary inputs: zero-copy pointers into the body, which the connection
 * placed 64-byte aligned; JSON inputs: numbers parsed straight into one arena buffer per
 * tensor). The model's batcher runs it, alone or merged with others, and calls back on a
 * worker, where the response is encoded: JSON outputs as text, binary outputs as iovecs
 * pointing at ONNX Runtime's own output memory, released only after the socket has taken them.
 * A model with a feature view (model_config.h) gets the view's input assembled in prepare from
 * the request's keys and raw values (features_view.h); the response then carries parameters
 * "features" (when asked for) and "features_degraded".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/container.h"
#include "core/error.h"
#include "core/log.h"
#include "core/text.h"
#include "proto/binary_ext.h"
#include "proto/infer_req.h"
#include "proto/tensor_json.h"
#include "infer/features_view.h"
#include "server/server.h"

#define ERRCAP 512

typedef struct {
  ox_job_t job;
  ox_task_t done;
  ox_server_t *s;
  ox_conn_t *conn;
  ox_model_t *model;
  ox_slice_t body;     /* borrowed from the connection until ox_conn_respond (job_done) */
  ox_binext_t framing; /* binary tensor extension: where the JSON header ends */
  ox_arena_t arena;
  ox_http_resp_t resp;
  ox_infer_header_t req;
  int *binary; /* per requested output: binary extension or JSON */
  ox_sched_req_t sreq;
  uint64_t t_recv;    /* ns, when the request was complete */
  ox_buf_t bytes_out; /* serialized BYTES outputs for the binary extension */
  int has_view;       /* the model input of the model's feature view was assembled */
  ox_fview_out_t view;
  ox_fview_fetch_t fetch;            /* rows of the view only L3 has: asked for, then answered */
  const ox_infer_input_t **by_model; /* request input per model input (parse_request) */
  ox_tensor_in_t *tin;               /* model inputs being built; NULL until parsed */
} infer_job_t;

static ox_model_state_t *state_of(ox_model_t *m) {
  return m->app;
}

/* A failure of the server's own (logged), not of the request or of load. */
static int is_fault(int err) {
  return err == OX_ENOMEM || err == OX_EINTERNAL || err == OX_ERUNTIME;
}

/* Answers the request now with error code err (loop thread). */
static void respond_err(ox_conn_t *c, int err, const char *msg) {
  ox_conn_respond_error(c, ox_http_status_of(err), msg);
}

static void job_free(void *arg) {
  infer_job_t *job = arg;
  ox_batch_release(job->sreq.batch);
  free(job->sreq.outs);
  ox_buf_free(&job->bytes_out);
  ox_fview_fetch_release(&job->fetch);
  ox_arena_free(&job->arena);
  free(job);
}

/* Loop thread: hand the finished response to the connection. */
static void job_done(ox_loop_t *loop, ox_task_t *t) {
  infer_job_t *job = ox_container_of(t, infer_job_t, done);
  atomic_fetch_sub(&job->s->inflight, 1);
  ox_http_resp_t resp = job->resp;
  memset(&job->resp, 0, sizeof job->resp);
  if (!resp.release) {
    resp.release = job_free;
    resp.release_arg = job;
  }
  ox_conn_respond(job->conn, &resp);
}

/* The request failed with error code err: its HTTP answer. */
static void job_fail(infer_job_t *job, int err, const char *msg) {
  int status = ox_http_status_of(err);
  ox_http_resp_free(&job->resp);
  ox_http_resp_init(&job->resp, status);
  if (ox_http_resp_error(&job->resp, status, msg)) job->resp.body.len = 0;
  job->resp.release = job_free;
  job->resp.release_arg = job;
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
static int build_input(infer_job_t *job, const ox_infer_input_t *in, const ox_tensor_info_t *info,
                       ox_tensor_in_t *t, char *err) {
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
      ox_slice_t *sl = ox_arena_alloc(&job->arena, (size_t)in->count * sizeof *sl + 1);
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
      char *copy = ox_arena_alloc_aligned(&job->arena, nbytes ? nbytes : 1, 64);
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
  void *buf = ox_arena_alloc_aligned(&job->arena, nbytes ? nbytes : 1, 64);
  if (!buf) return OX_ENOMEM;
  char derr[256];
  int rc = ox_tensor_json_decode(in->data_json, in->dtype, in->count, buf, &job->arena, derr,
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

/* Worker: parses the request and matches its inputs to the model's (job->by_model; job->tin
 * zeroed). Returns 0 or an error code with the message in err. */
static int parse_request(infer_job_t *job, const ox_feature_view_t *view, char *err) {
  ox_model_t *m = job->model;
  ox_slice_t json, bin;
  if (ox_binext_split(&job->framing, job->body, &json, &bin, err, ERRCAP)) return OX_EINVALID;
  if (json.len == 0 || !json.ptr) {
    snprintf(err, ERRCAP, "empty request body");
    return OX_EINVALID;
  }
  ox_infer_header_t *req = &job->req;
  int rc = ox_infer_request_parse(json.ptr, json.len, &job->arena, req, err, ERRCAP);
  if (rc) return rc; /* OX_EINVALID, OX_EDEPTH, OX_EOVERFLOW or OX_ENOMEM */
  if (job->framing.present) {
    rc = ox_infer_request_split_binary(req, bin.ptr, bin.len, err, ERRCAP);
    if (rc) return rc == OX_ENOMEM ? OX_ENOMEM : OX_EINVALID;
  } else {
    for (size_t i = 0; i < req->num_inputs; i++) {
      if (req->inputs[i].has_binary) {
        snprintf(err, ERRCAP,
                 "input " NAMEFMT
                 " has binary_data_size but the request has no "
                 "Inference-Header-Content-Length header",
                 NAMEARG(req->inputs[i].name));
        return OX_EINVALID;
      }
    }
  }
  /* Match request inputs to the model's, in the model's order. */
  const ox_infer_input_t **by_model =
      ox_arena_alloc(&job->arena, sizeof(void *) * (m->num_inputs + 1));
  ox_tensor_in_t *tin = ox_arena_alloc(&job->arena, sizeof *tin * (m->num_inputs + 1));
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
  job->by_model = by_model;
  job->tin = tin;
  return 0;
}

/* Builds the model's inputs and the scheduler request. Runs twice for a request whose feature
 * rows the L3 fetcher must bring (OX_FVIEW_FETCH the first time): the request is parsed once
 * and the view is assembled before the other inputs, so the second run starts there. */
static int prepare(infer_job_t *job, char *err) {
  ox_model_t *m = job->model;
  /* A feature view's input is assembled here, from the request's keys and raw values. */
  const ox_feature_view_t *view = state_of(m)->cfg.view.enabled ? &state_of(m)->cfg.view : NULL;
  if (!job->tin) {
    int st = parse_request(job, view, err);
    if (st) return st;
  }
  ox_infer_header_t *req = &job->req;
  const ox_infer_input_t **by_model = job->by_model;
  ox_tensor_in_t *tin = job->tin;
  if (view) {
    size_t k = view->input_idx;
    int64_t deadline = (int64_t)job->t_recv + (int64_t)view->deadline_us * 1000;
    int st = ox_fview_assemble(job->s->features, view, req, &job->arena, deadline, &job->fetch,
                               &job->view, err, ERRCAP);
    if (st) return st;
    if (m->inputs[k].dims[0] == 1 && job->view.shape[0] != 1) {
      snprintf(err, ERRCAP, "model '%s' takes one row of features, the request has %" PRId64,
               m->name, job->view.shape[0]);
      return OX_EINVALID;
    }
    job->has_view = 1;
    tin[k] = (ox_tensor_in_t){.dtype = OX_DT_FP32,
                              .rank = 2,
                              .shape = job->view.shape,
                              .count = job->view.count,
                              .data = job->view.data,
                              .nbytes = job->view.count * sizeof(float)};
  }
  for (size_t k = 0; k < m->num_inputs; k++) {
    if (view && k == view->input_idx) continue;
    int st = build_input(job, by_model[k], &m->inputs[k], &tin[k], err);
    if (st) {
      if (st == OX_ENOMEM && !err[0]) snprintf(err, ERRCAP, "out of memory");
      return st;
    }
  }
  /* Requested outputs (all when none are named) and whether each goes binary. */
  size_t n_out = req->num_outputs ? req->num_outputs : m->num_outputs;
  size_t *out_idx = ox_arena_alloc(&job->arena, sizeof(size_t) * (n_out + 1));
  job->binary = ox_arena_alloc(&job->arena, sizeof(int) * (n_out + 1));
  if (!out_idx || !job->binary) return OX_ENOMEM;
  int bin_default = req->binary_data_output == 1;
  for (size_t j = 0; j < n_out; j++) {
    if (!req->num_outputs) {
      out_idx[j] = j;
      job->binary[j] = bin_default;
      continue;
    }
    const ox_infer_output_t *o = &req->outputs[j];
    size_t k = 0;
    while (k < m->num_outputs && !ox_slice_eq(o->name, m->outputs[k].name)) k++;
    if (k == m->num_outputs) {
      snprintf(err, ERRCAP, "unknown output " NAMEFMT " for model '%s'", NAMEARG(o->name), m->name);
      return OX_EINVALID;
    }
    out_idx[j] = k;
    job->binary[j] = o->binary_data >= 0 ? o->binary_data : bin_default;
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
  ox_sched_req_t *sr = &job->sreq;
  sr->model = m;
  sr->inputs = tin;
  sr->out_idx = out_idx;
  sr->n_out = n_out;
  sr->rows = rows;
  /* Triton: a timeout of 0 means "not set", so the model default applies. A timeout too
   * large for the clock (up to 2^64-1 us is valid) saturates: a deadline that never comes. */
  uint64_t timeout_us =
      req->has_timeout && req->timeout_us ? req->timeout_us : st->cfg.sched.default_timeout_us;
  uint64_t deadline = 0;
  if (timeout_us && (__builtin_mul_overflow(timeout_us, 1000u, &deadline) ||
                     __builtin_add_overflow(deadline, job->t_recv, &deadline)))
    deadline = UINT64_MAX;
  sr->deadline_ns = deadline;
  sr->outs = calloc(n_out + 1, sizeof *sr->outs);
  if (!sr->outs) return OX_ENOMEM;
  return 0;
}

/* Worker: encode the response of a finished run into job->resp. Returns 0 or OX_ENOMEM. */
static int encode(infer_job_t *job) {
  ox_model_t *m = job->model;
  ox_sched_req_t *sr = &job->sreq;
  ox_infer_header_t *req = &job->req;
  ox_buf_t *b = &job->resp.body;
  size_t n_out = sr->n_out;
  int rc = ox_buf_reserve(b, 256);
  rc |= ox_buf_puts(b, "{\"model_name\":");
  rc |= ox_buf_append_json_string(b, m->name, strlen(m->name));
  rc |= ox_buf_printf(b, ",\"model_version\":\"%" PRId64 "\"", m->version);
  if (req->id_json.ptr) {
    rc |= ox_buf_puts(b, ",\"id\":");
    rc |= ox_buf_append(b, req->id_json.ptr, req->id_json.len);
  }
  rc |= ox_buf_puts(b, ",\"outputs\":[");
  size_t n_bin = 0, bytes_total = 0;
  for (size_t j = 0; j < n_out && !rc; j++) {
    ox_tensor_out_t *o = &sr->outs[j];
    const char *name = m->outputs[sr->out_idx[j]].name;
    rc |= ox_buf_puts(b, j ? ",{\"name\":" : "{\"name\":");
    rc |= ox_buf_append_json_string(b, name, strlen(name));
    rc |= ox_buf_printf(b, ",\"datatype\":\"%s\",\"shape\":[", ox_dtype_name(o->dtype));
    for (int d = 0; d < o->rank; d++)
      rc |= ox_buf_printf(b, d ? ",%" PRId64 : "%" PRId64, o->shape[d]);
    rc |= ox_buf_puts(b, "]");
    if (job->binary[j]) {
      size_t size = o->nbytes;
      if (o->dtype == OX_DT_BYTES) {
        size = 0;
        for (uint64_t e = 0; e < o->count; e++) size += 4 + o->strings[e].len;
        bytes_total += size;
      }
      rc |= ox_buf_printf(b, ",\"parameters\":{\"binary_data_size\":%zu}}", size);
      n_bin++;
    } else {
      rc |= ox_buf_puts(b, ",\"data\":");
      rc |= ox_tensor_json_encode(
          b, o->dtype, o->dtype == OX_DT_BYTES ? (const void *)o->strings : o->data, o->count);
      rc |= ox_buf_puts(b, "}");
    }
  }
  rc |= ox_buf_puts(b, "]");
  if (job->has_view && (job->view.return_features || job->view.degraded)) {
    rc |= ox_buf_puts(b, ",\"parameters\":{");
    if (job->view.return_features) {
      rc |= ox_buf_puts(b, "\"features\":");
      rc |= ox_tensor_json_encode(b, OX_DT_FP32, job->view.data, job->view.count);
    }
    if (job->view.degraded)
      rc |= ox_buf_puts(b, job->view.return_features ? ",\"features_degraded\":true"
                                                     : "\"features_degraded\":true");
    rc |= ox_buf_puts(b, "}");
  }
  rc |= ox_buf_puts(b, "}");
  if (rc) return OX_ENOMEM;
  if (n_bin == 0) {
    /* Everything is in the text: give the run's output memory back now. */
    ox_batch_release(sr->batch);
    sr->batch = NULL;
    return 0;
  }
  /* Binary outputs: segments after the JSON header, from ORT's memory (BYTES serialized). */
  if (bytes_total && ox_buf_reserve(&job->bytes_out, bytes_total)) return OX_ENOMEM;
  job->resp.iov = calloc(n_bin, sizeof(struct iovec));
  if (!job->resp.iov) return OX_ENOMEM;
  for (size_t j = 0; j < n_out; j++) {
    if (!job->binary[j]) continue;
    ox_tensor_out_t *o = &sr->outs[j];
    struct iovec *v = &job->resp.iov[job->resp.iovcnt++];
    if (o->dtype == OX_DT_BYTES) {
      size_t start = job->bytes_out.len;
      for (uint64_t e = 0; e < o->count; e++) {
        uint32_t n = (uint32_t)o->strings[e].len;
        unsigned char le[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                               (unsigned char)(n >> 24)};
        ox_buf_append(&job->bytes_out, le, 4);
        ox_buf_append(&job->bytes_out, o->strings[e].ptr, o->strings[e].len);
      }
      v->iov_base = job->bytes_out.data + start;
      v->iov_len = job->bytes_out.len - start;
    } else {
      v->iov_base = (void *)o->data;
      v->iov_len = o->nbytes;
    }
  }
  job->resp.content_type = "application/octet-stream";
  if (ox_buf_printf(&job->resp.extra_headers, "Inference-Header-Content-Length: %zu\r\n", b->len))
    return OX_ENOMEM;
  return 0;
}

static void record_stats(infer_job_t *job, int ok, uint64_t t_end) {
  ox_model_stats_t *s = &state_of(job->model)->stats;
  ox_sched_req_t *sr = &job->sreq;
  uint64_t total = t_end - job->t_recv;
  ox_stat_add(ok ? &s->success : &s->fail, total);
  ox_hist_record_us(&s->request_us, total / 1000);
  if (!ok || !sr->t_start) return;
  uint64_t queue = sr->t_start - sr->t_enqueue;
  uint64_t input = (sr->t_enqueue - job->t_recv) + (sr->t_infer - sr->t_start);
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

static void job_post(infer_job_t *job) {
  ox_loop_post(ox_conn_loop(job->conn), &job->done);
}

/* Batcher callback (worker or timer thread): the request ran or failed. */
static void sreq_done(ox_sched_req_t *sr) {
  infer_job_t *job = ox_container_of(sr, infer_job_t, sreq);
  int status = sr->status;
  char err[ERRCAP];
  if (!status) {
    /* The id is read from the body, which the connection frees once it has the response. */
    status = encode(job);
    if (status) snprintf(err, sizeof err, "out of memory");
  } else {
    snprintf(err, sizeof err, "%s", sr->err);
  }
  record_stats(job, status == 0, ox_mono_ns());
  if (status) {
    if (is_fault(status)) ox_warn("infer %s: %s", job->model->name, err);
    job_fail(job, status, err);
  } else {
    job->resp.release = job_free;
    job->resp.release_arg = job;
  }
  job_post(job);
}

static void job_cancel(ox_job_t *j);

/* Fetcher thread: the view's L3 rows are answered; the job runs again (its prepare then uses
 * them), ahead of new requests. */
static void fetch_done(ox_fstore_fetch_t *f) {
  infer_job_t *job = ox_container_of(f, infer_job_t, fetch.f);
  job->fetch.answered = 1;
  if (ox_pool_submit_front(job->s->pool, &job->job)) job_cancel(&job->job);
}

static void job_run(ox_job_t *j) {
  infer_job_t *job = (infer_job_t *)j;
  char err[ERRCAP];
  err[0] = 0;
  ox_http_resp_init(&job->resp, 200);
  ox_model_state_t *st = state_of(job->model);
  if (!job->tin && atomic_load(&job->sreq.cancelled)) {
    /* The client hung up while the job waited for a worker: nobody will read the answer, so
     * the body is not parsed at all (the connection drops the 499). */
    ox_batcher_unreserve(st->batcher);
    atomic_fetch_add_explicit(&st->stats.gone_unparsed, 1, memory_order_relaxed);
    record_stats(job, 0, ox_mono_ns());
    job_fail(job, OX_ECANCELLED, "client closed the connection");
    job_post(job);
    return;
  }
  int status = prepare(job, err);
  if (status == OX_FVIEW_FETCH) {
    /* Rows only L3 has: the fetcher asks for them together with other requests' and runs this
     * job again (prepare then goes on from the view); this thread goes on with other work. */
    job->fetch.f.done = fetch_done;
    if (ox_fstore_fetch(job->s->features, &job->fetch.f) == 0) return;
    job->fetch.answered = 1; /* refused (stopping): the wants hold their answers already */
    ox_http_resp_init(&job->resp, 200);
    status = prepare(job, err);
  }
  if (status == 0) {
    job->sreq.done = sreq_done;
    ox_batcher_enqueue(st->batcher, &job->sreq); /* sreq_done posts the response */
    return;
  }
  ox_batcher_unreserve(st->batcher);
  if (!err[0])
    snprintf(err, sizeof err, "%s", status == OX_ENOMEM ? "out of memory" : "bad request");
  if (is_fault(status)) ox_warn("infer %s: %s", job->model->name, err);
  record_stats(job, 0, ox_mono_ns());
  job_fail(job, status, err);
  job_post(job);
}

static void job_cancel(ox_job_t *j) {
  infer_job_t *job = (infer_job_t *)j;
  ox_batcher_unreserve(state_of(job->model)->batcher);
  job_fail(job, OX_EUNAVAILABLE, "server is shutting down");
  job_post(job);
}

static void record_fail_fast(ox_model_state_t *st) {
  ox_stat_add(&st->stats.fail, 0);
}

void ox_server_abort(void *app, ox_conn_t *c, void *request) {
  infer_job_t *job = request; /* feature store jobs (events.c) register no request */
  atomic_store(&job->sreq.cancelled, 1);
}

void ox_server_infer(ox_server_t *s, ox_conn_t *c, ox_model_t *m, const ox_http_request_t *head,
                     ox_slice_t body) {
  ox_model_state_t *st = state_of(m);
  if (st->unavailable) {
    respond_err(c, OX_EUNAVAILABLE, "model is not available: its configuration or warm-up failed");
    return;
  }
  ox_slice_t enc = ox_http_header(head, "Content-Encoding");
  if (enc.ptr && !ox_slice_eq_nocase(enc, "identity")) {
    respond_err(c, OX_EUNSUPPORTED,
                "Content-Encoding is not supported; send the body uncompressed");
    return;
  }
  /* The binary extension's framing: every value of its header (two are already too many). */
  ox_slice_t ihcl[2];
  size_t n_ihcl = 0;
  for (size_t i = 0; i < head->num_headers; i++)
    if (ox_slice_eq_nocase(head->headers[i].name, "Inference-Header-Content-Length")) {
      if (n_ihcl < 2) ihcl[n_ihcl] = head->headers[i].value;
      n_ihcl++;
    }
  ox_binext_t framing;
  const char *why = NULL;
  if (ox_binext_parse(ihcl, n_ihcl < 2 ? n_ihcl : 2, &framing, &why)) {
    respond_err(c, OX_EINVALID, why);
    return;
  }
  /* Backpressure before any parsing: a full model queue is refused at once. */
  if (ox_batcher_reserve(st->batcher) != 0) {
    record_fail_fast(st);
    respond_err(c, OX_EUNAVAILABLE, "model queue is full; retry later");
    return;
  }
  infer_job_t *job = calloc(1, sizeof *job);
  if (!job) {
    ox_batcher_unreserve(st->batcher);
    respond_err(c, OX_ENOMEM, "out of memory");
    return;
  }
  job->t_recv = ox_mono_ns();
  job->job.run = job_run;
  job->job.cancel = job_cancel;
  job->done.fn = job_done;
  job->s = s;
  job->conn = c;
  job->model = m;
  job->body = body;
  job->framing = framing;
  ox_arena_init(&job->arena);
  atomic_fetch_add(&s->inflight, 1);
  ox_conn_set_request(c, job);
  if (ox_pool_submit(s->pool, &job->job) != 0) {
    atomic_fetch_sub(&s->inflight, 1);
    ox_batcher_unreserve(st->batcher);
    ox_conn_set_request(c, NULL);
    job_free(job);
    record_fail_fast(st);
    respond_err(c, OX_EUNAVAILABLE, "server is overloaded: inference queue is full; retry later");
  }
}

size_t ox_server_body_align_offset(void *app, const ox_http_request_t *head) {
  (void)app;
  return ox_binext_align_offset(ox_http_header(head, "Inference-Header-Content-Length"));
}
