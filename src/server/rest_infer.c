/* rest_infer.c: POST /v2/models/{m}[/versions/{v}]/infer, the REST front end of the inference
 * core (infer/infer.h): JSON and the binary tensor extension.
 *
 * On the loop thread the handler checks the framing headers (Content-Encoding,
 * Inference-Header-Content-Length through proto/binary_ext.h), creates the core's call (a full
 * model queue is refused at once, before any parsing) and submits it. On a worker the core
 * calls decode: the body (which the connection placed so that its binary section is 64-byte
 * aligned) is split at the JSON header's end, the header parsed into slices of the body
 * (proto/infer_req.h) and the binary inputs located, and the request value points at them: no
 * tensor byte is copied. When the request ran or failed the core calls encode, still on a
 * worker: the response value becomes the JSON answer (outputs as text, the feature view's
 * parameters) or, for outputs asked as binary, a JSON header plus iovecs pointing at ONNX
 * Runtime's own output memory. done, on the connection's loop, hands that to ox_conn_respond;
 * the call is released (ORT's memory with it) only after the socket has taken the bytes.
 * Error codes become HTTP statuses in one place, ox_http_status_of.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/text.h"
#include "infer/infer.h"
#include "proto/binary_ext.h"
#include "proto/infer_req.h"
#include "proto/tensor_json.h"
#include "server/server.h"

/* The front end's context of one request: lives in the core's call (ox_infer_ctx), so one
 * allocation per request holds both. */
typedef struct {
  ox_infer_call_t *call;
  ox_server_t *s;
  ox_conn_t *conn;
  ox_slice_t body;       /* borrowed from the connection until ox_conn_respond (done) */
  ox_binext_t framing;   /* binary tensor extension: where the JSON header ends */
  ox_infer_header_t hdr; /* the parsed JSON header: slices of body, arrays in the call's arena */
  ox_http_resp_t resp;   /* rendered on a worker by encode, handed over by done */
  ox_buf_t bytes_out;    /* serialized BYTES outputs for the binary extension */
} rest_ctx_t;

#define NAMEFMT "'%.*s'"
#define NAMEARG(sl) (int)((sl).len > 128 ? 128 : (sl).len), (sl).ptr

/* Answers the request now with error code err (loop thread). */
static void respond_err(ox_conn_t *c, int err, const char *msg) {
  ox_conn_respond_error(c, ox_http_status_of(err), msg);
}

/* Worker: body -> request value (ox_infer_ops_t.decode). */
static int rest_decode(void *arg, ox_infer_request_t *req, ox_arena_t *arena, char *err,
                       size_t errcap) {
  rest_ctx_t *x = arg;
  ox_slice_t json, bin;
  if (ox_binext_split(&x->framing, x->body, &json, &bin, err, errcap)) return OX_EINVALID;
  if (json.len == 0 || !json.ptr) {
    snprintf(err, errcap, "empty request body");
    return OX_EINVALID;
  }
  ox_infer_header_t *h = &x->hdr;
  int rc = ox_infer_request_parse(json.ptr, json.len, arena, h, err, errcap);
  if (rc) return rc; /* OX_EINVALID, OX_EDEPTH, OX_EOVERFLOW or OX_ENOMEM */
  if (x->framing.present) {
    rc = ox_infer_request_split_binary(h, bin.ptr, bin.len, err, errcap);
    if (rc) return rc == OX_ENOMEM ? OX_ENOMEM : OX_EINVALID;
  } else {
    for (size_t i = 0; i < h->num_inputs; i++) {
      if (h->inputs[i].has_binary) {
        snprintf(err, errcap,
                 "input " NAMEFMT
                 " has binary_data_size but the request has no "
                 "Inference-Header-Content-Length header",
                 NAMEARG(h->inputs[i].name));
        return OX_EINVALID;
      }
    }
  }
  req->inputs = h->inputs;
  req->num_inputs = h->num_inputs;
  req->outputs = h->outputs;
  req->num_outputs = h->num_outputs;
  req->params = h->params;
  req->num_params = h->num_params;
  req->timeout_us = h->has_timeout ? h->timeout_us : 0;
  req->id = h->id_json;
  return 0;
}

/* Whether the response's output j goes as binary (the binary extension) or as JSON. */
static int output_binary(const ox_infer_header_t *h, size_t j) {
  int def = h->binary_data_output == 1;
  if (!h->num_outputs) return def;
  return h->outputs[j].binary_data >= 0 ? h->outputs[j].binary_data : def;
}

/* Worker: a successful response value -> JSON (and binary segments). 0 or OX_ENOMEM. */
static int encode_ok(rest_ctx_t *x, const ox_infer_response_t *r) {
  ox_model_t *m = r->model;
  const ox_infer_header_t *h = &x->hdr;
  ox_http_resp_t *resp = &x->resp;
  ox_buf_t *b = &resp->body;
  size_t n_out = r->num_outputs;
  int rc = ox_buf_reserve(b, 256);
  rc |= ox_buf_puts(b, "{\"model_name\":");
  rc |= ox_buf_append_json_string(b, m->name, strlen(m->name));
  rc |= ox_buf_printf(b, ",\"model_version\":\"%" PRId64 "\"", m->version);
  if (h->id_json.ptr) {
    rc |= ox_buf_puts(b, ",\"id\":");
    rc |= ox_buf_append(b, h->id_json.ptr, h->id_json.len);
  }
  rc |= ox_buf_puts(b, ",\"outputs\":[");
  size_t n_bin = 0, bytes_total = 0;
  for (size_t j = 0; j < n_out && !rc; j++) {
    const ox_tensor_out_t *o = &r->outputs[j];
    const char *name = ox_infer_output_name(r, j);
    rc |= ox_buf_puts(b, j ? ",{\"name\":" : "{\"name\":");
    rc |= ox_buf_append_json_string(b, name, strlen(name));
    rc |= ox_buf_printf(b, ",\"datatype\":\"%s\",\"shape\":[", ox_dtype_name(o->dtype));
    for (int d = 0; d < o->rank; d++)
      rc |= ox_buf_printf(b, d ? ",%" PRId64 : "%" PRId64, o->shape[d]);
    rc |= ox_buf_puts(b, "]");
    if (output_binary(h, j)) {
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
  if (r->features || r->features_degraded) {
    rc |= ox_buf_puts(b, ",\"parameters\":{");
    if (r->features) {
      rc |= ox_buf_puts(b, "\"features\":");
      rc |= ox_tensor_json_encode(b, OX_DT_FP32, r->features, r->num_features);
    }
    if (r->features_degraded)
      rc |= ox_buf_puts(b,
                        r->features ? ",\"features_degraded\":true" : "\"features_degraded\":true");
    rc |= ox_buf_puts(b, "}");
  }
  rc |= ox_buf_puts(b, "}");
  if (rc) return OX_ENOMEM;
  if (n_bin == 0) {
    /* Everything is in the text: give the run's output memory back now. */
    ox_infer_release_outputs(x->call);
    return 0;
  }
  /* Binary outputs: segments after the JSON header, from ORT's memory (BYTES serialized). */
  if (bytes_total && ox_buf_reserve(&x->bytes_out, bytes_total)) return OX_ENOMEM;
  resp->iov = calloc(n_bin, sizeof(struct iovec));
  if (!resp->iov) return OX_ENOMEM;
  for (size_t j = 0; j < n_out; j++) {
    if (!output_binary(h, j)) continue;
    const ox_tensor_out_t *o = &r->outputs[j];
    struct iovec *v = &resp->iov[resp->iovcnt++];
    if (o->dtype == OX_DT_BYTES) {
      size_t start = x->bytes_out.len;
      for (uint64_t e = 0; e < o->count; e++) {
        uint32_t n = (uint32_t)o->strings[e].len;
        unsigned char le[4] = {(unsigned char)n, (unsigned char)(n >> 8), (unsigned char)(n >> 16),
                               (unsigned char)(n >> 24)};
        ox_buf_append(&x->bytes_out, le, 4);
        ox_buf_append(&x->bytes_out, o->strings[e].ptr, o->strings[e].len);
      }
      v->iov_base = x->bytes_out.data + start;
      v->iov_len = x->bytes_out.len - start;
    } else {
      v->iov_base = (void *)o->data;
      v->iov_len = o->nbytes;
    }
  }
  resp->content_type = "application/octet-stream";
  if (ox_buf_printf(&resp->extra_headers, "Inference-Header-Content-Length: %zu\r\n", b->len))
    return OX_ENOMEM;
  return 0;
}

/* Worker: response value -> HTTP response (ox_infer_ops_t.encode). */
static int rest_encode(void *arg, const ox_infer_response_t *r) {
  rest_ctx_t *x = arg;
  ox_http_resp_free(&x->resp);
  if (!r->status) {
    ox_http_resp_init(&x->resp, 200);
    return encode_ok(x, r);
  }
  int status = ox_http_status_of(r->status);
  ox_http_resp_init(&x->resp, status);
  if (ox_http_resp_error(&x->resp, status, r->msg)) x->resp.body.len = 0;
  return 0;
}

/* After the socket has taken the response (or the connection dropped it). */
static void rest_release(void *arg) {
  rest_ctx_t *x = arg;
  ox_buf_free(&x->bytes_out);
  ox_infer_release(x->call); /* frees x too */
}

/* Loop thread: hand the finished response to the connection (ox_infer_ops_t.done). */
static void rest_done(void *arg, const ox_infer_response_t *r) {
  (void)r;
  rest_ctx_t *x = arg;
  atomic_fetch_sub(&x->s->inflight, 1);
  ox_http_resp_t resp = x->resp;
  memset(&x->resp, 0, sizeof x->resp);
  resp.release = rest_release;
  resp.release_arg = x;
  ox_conn_respond(x->conn, &resp);
}

static const ox_infer_ops_t rest_ops = {
    .decode = rest_decode, .encode = rest_encode, .done = rest_done};

void ox_server_abort(void *app, ox_conn_t *c, void *request) {
  (void)app, (void)c;
  rest_ctx_t *x = request; /* feature store jobs (events.c) register no request */
  ox_infer_cancel(x->call);
}

void ox_server_infer(ox_server_t *s, ox_conn_t *c, ox_model_t *m, const ox_http_request_t *head,
                     ox_slice_t body) {
  const char *why = NULL;
  int rc = ox_infer_check_model(m, &why);
  if (rc) {
    respond_err(c, rc, why);
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
  if (ox_binext_parse(ihcl, n_ihcl < 2 ? n_ihcl : 2, &framing, &why)) {
    respond_err(c, OX_EINVALID, why);
    return;
  }
  ox_infer_call_t *call;
  rc = ox_infer_create(m, sizeof(rest_ctx_t), &call, &why);
  if (rc) {
    respond_err(c, rc, why);
    return;
  }
  rest_ctx_t *x = ox_infer_ctx(call);
  x->call = call;
  x->s = s;
  x->conn = c;
  x->body = body;
  x->framing = framing;
  atomic_fetch_add(&s->inflight, 1);
  ox_conn_set_request(c, x);
  ox_infer_env_t env = {
      .pool = s->pool, .features = s->features, .loop = ox_conn_loop(c), .ops = &rest_ops};
  rc = ox_infer_submit(call, &env, &why); /* on failure the call (x with it) is freed */
  if (rc) {
    atomic_fetch_sub(&s->inflight, 1);
    ox_conn_set_request(c, NULL);
    respond_err(c, rc, why);
  }
}

size_t ox_server_body_align_offset(void *app, const ox_http_request_t *head) {
  (void)app;
  return ox_binext_align_offset(ox_http_header(head, "Inference-Header-Content-Length"));
}
