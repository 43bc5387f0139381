/* grpc_service.c: the Open Inference Protocol's gRPC binding, the second front end of the
 * inference core (infer/infer.h), over the gRPC transport (grpc/h2.h):
 *
 *   /inference.GRPCInferenceService/ServerLive | ServerReady | ModelReady
 *                                  /ServerMetadata | ModelMetadata
 *                                  /ModelInfer            unary, on a worker like REST
 *                                  /ModelStreamInfer      bidirectional: every request message
 *                                                         is a call; each answer (or its error
 *                                                         as error_message) carries its id
 *                                  /ModelConfig | ModelStatistics
 *                                  /RepositoryIndex | RepositoryModelLoad | RepositoryModelUnload
 *                                  (Triton's extensions; they answer like their REST twins)
 *                                  shared memory, trace and log RPCs: UNIMPLEMENTED
 *   /grpc.health.v1.Health/Check | Watch                  what Kubernetes' gRPC probes call
 *
 * A call's context (gcall_t) lives from on_open to ox_grpc_call_finish. A unary call keeps its
 * one message and is served when the client half-closes. ModelInfer finds the model on the loop
 * thread (fields 1 and 2 of the message, a scan that skips the tensors by their length), is
 * admitted to its queue before anything else is parsed, and is then decoded on a worker
 * (proto/kserve_pb.h: raw_input_contents stay in the received message buffer, which the
 * transport placed so that the first one is 64-byte aligned). The answer is encoded on the
 * worker around ONNX Runtime's output memory and sent from it, released when written.
 *
 * Errors are onnxd's codes mapped once (ox_grpc_status_of) to gRPC statuses, with the messages
 * REST sends. The smaller messages are written here with proto/pb.h; their field numbers are
 * those of the published protocol (KServe's grpc_predict_v2, Triton's grpc_service and
 * model_config, grpc.health.v1).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/container.h"
#include "core/error.h"
#include "core/log.h"
#include "core/text.h"
#include "grpc/h2.h"
#include "proto/json.h"
#include "proto/kserve_pb.h"
#include "proto/pb.h"
#include "proto/tensor_json.h"
#include "server/server.h"

typedef enum {
  M_LIVE,
  M_READY,
  M_MODEL_READY,
  M_SERVER_META,
  M_MODEL_META,
  M_INFER,
  M_STREAM_INFER,
  M_CONFIG,
  M_STATS,
  M_REPO_INDEX,
  M_REPO_LOAD,
  M_REPO_UNLOAD,
  M_HEALTH_CHECK,
  M_HEALTH_WATCH,
} method_t;

#define SVC "/inference.GRPCInferenceService/"
static const struct {
  const char *path;
  int method; /* method_t, or -1: UNIMPLEMENTED with msg */
  const char *msg;
} ox_methods[] = {
    {SVC "ServerLive", M_LIVE, NULL},
    {SVC "ServerReady", M_READY, NULL},
    {SVC "ModelReady", M_MODEL_READY, NULL},
    {SVC "ServerMetadata", M_SERVER_META, NULL},
    {SVC "ModelMetadata", M_MODEL_META, NULL},
    {SVC "ModelInfer", M_INFER, NULL},
    {SVC "ModelStreamInfer", M_STREAM_INFER, NULL},
    {SVC "ModelConfig", M_CONFIG, NULL},
    {SVC "ModelStatistics", M_STATS, NULL},
    {SVC "RepositoryIndex", M_REPO_INDEX, NULL},
    {SVC "RepositoryModelLoad", M_REPO_LOAD, NULL},
    {SVC "RepositoryModelUnload", M_REPO_UNLOAD, NULL},
    {"/grpc.health.v1.Health/Check", M_HEALTH_CHECK, NULL},
    {"/grpc.health.v1.Health/Watch", M_HEALTH_WATCH, NULL},
    {SVC "SystemSharedMemoryStatus", -1, "shared memory is not supported by onnxd"},
    {SVC "SystemSharedMemoryRegister", -1, "shared memory is not supported by onnxd"},
    {SVC "SystemSharedMemoryUnregister", -1, "shared memory is not supported by onnxd"},
    {SVC "CudaSharedMemoryStatus", -1, "CUDA shared memory is not supported by onnxd"},
    {SVC "CudaSharedMemoryRegister", -1, "CUDA shared memory is not supported by onnxd"},
    {SVC "CudaSharedMemoryUnregister", -1, "CUDA shared memory is not supported by onnxd"},
    {SVC "TraceSetting", -1, "tracing is not supported by onnxd"},
    {SVC "LogSettings", -1, "log settings are not supported by onnxd"},
};

struct ox_grpc_service {
  ox_server_t *s;
  ox_grpc_config_t cfg;  /* the listener's (borrowed by it) */
  struct gcall *streams; /* open Health/Watch and ModelStreamInfer calls of this loop */
  int draining;
};

struct ginfer;

/* One call, from on_open to ox_grpc_call_finish. */
typedef struct gcall {
  ox_grpc_service_t *svc;
  ox_grpc_call_t *call;
  method_t m;
  uint64_t timeout_us; /* grpc-timeout, 0: none */
  ox_grpc_msg_t msg;   /* a unary call's request message */
  int have_msg;
  int half_closed;
  int aborted;
  int pending;           /* repository operation or inference calls not yet done */
  struct ginfer *infers; /* inference calls in flight (to cancel on abort) */
  struct gcall *next_stream, **pprev_stream; /* svc->streams */
} gcall_t;

/* ---- the error mapping -------------------------------------------------------------------- */

/* The gRPC front end's one mapping from an error code (core/error.h, or -errno) to a status. */
static ox_grpc_status_t ox_grpc_status_of(int err) {
  switch (err) {
    case 0:
      return OX_GRPC_OK;
    case OX_EINVALID:
    case OX_EDEPTH:
    case OX_EOVERFLOW:
    case OX_EURI_TOO_LONG:
    case OX_EHEADERS_TOO_LARGE:
      return OX_GRPC_INVALID_ARGUMENT;
    case OX_ENOT_FOUND:
      return OX_GRPC_NOT_FOUND;
    case OX_EUNAVAILABLE:
      return OX_GRPC_UNAVAILABLE;
    case OX_EDEADLINE:
    case OX_ETIMEOUT:
      return OX_GRPC_DEADLINE_EXCEEDED;
    case OX_ETOO_LARGE:
    case OX_EQUOTA:
    case OX_ESTORE_FULL:
    case OX_ENOMEM:
      return OX_GRPC_RESOURCE_EXHAUSTED;
    case OX_ENOT_IMPLEMENTED:
    case OX_EUNSUPPORTED:
    case OX_EMETHOD:
      return OX_GRPC_UNIMPLEMENTED;
    case OX_ECANCELLED:
      return OX_GRPC_CANCELLED;
    default:
      return OX_GRPC_INTERNAL;
  }
}

/* ---- calls -------------------------------------------------------------------------------- */

static void gcall_finish(gcall_t *gc, ox_grpc_status_t st, const char *msg) {
  if (gc->pprev_stream) {
    *gc->pprev_stream = gc->next_stream;
    if (gc->next_stream) gc->next_stream->pprev_stream = gc->pprev_stream;
  }
  if (gc->have_msg) ox_grpc_msg_free(&gc->msg);
  ox_metrics_count_grpc((int)st);
  ox_grpc_call_finish(gc->call, st, msg);
  free(gc);
}

/* Sends one message of head's bytes (taken) on the call. */
static int send_buf(gcall_t *gc, ox_buf_t *head) {
  ox_grpc_out_t out = {.head = *head};
  ox_buf_init(head);
  return ox_grpc_call_send(gc->call, &out);
}

/* Answers a unary call with the message in b (taken), or INTERNAL when building it failed. */
static void reply(gcall_t *gc, ox_buf_t *b, int rc) {
  if (rc || send_buf(gc, b)) {
    ox_buf_free(b);
    gcall_finish(gc, OX_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  gcall_finish(gc, OX_GRPC_OK, NULL);
}

/* The string fields 1 and 2 of a small request message (name and version, as ModelReady,
 * ModelMetadata, ModelConfig and ModelStatistics requests carry them). 0 or OX_EINVALID. */
static int name_version(ox_slice_t msg, ox_slice_t *name, ox_slice_t *version) {
  ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
  ox_pb_field_t f;
  int rc;
  *name = *version = ox_slice("", 0);
  while ((rc = ox_pb_next(&r, &f)) == 1) {
    if (f.num == 1 && f.wire == OX_PB_LEN) *name = f.s;
    if (f.num == 2 && f.wire == OX_PB_LEN) *version = f.s;
  }
  return rc;
}

/* The model a request names, with a reference (ox_models_put), or an answer already sent. */
static ox_model_t *lookup(gcall_t *gc, ox_slice_t name, ox_slice_t version) {
  char why[512];
  ox_model_t *m = NULL;
  if (name.len == 0) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, "the request names no model");
    return NULL;
  }
  if (ox_models_get(gc->svc->s->models, name, version, &m, why, sizeof why)) {
    gcall_finish(gc, OX_GRPC_NOT_FOUND, why);
    return NULL;
  }
  return m;
}

/* Registers a long-lived call (the drain ends it). */
static void link_stream(gcall_t *gc) {
  ox_grpc_service_t *svc = gc->svc;
  gc->next_stream = svc->streams;
  if (svc->streams) svc->streams->pprev_stream = &gc->next_stream;
  svc->streams = gc;
  gc->pprev_stream = &svc->streams;
}

/* ---- health, metadata --------------------------------------------------------------------- */

static int server_ready(ox_server_t *s) {
  char why[256];
  return ox_server_ready(s, why, sizeof why);
}

static void rpc_bool(gcall_t *gc, int v) {
  ox_buf_t b;
  ox_buf_init(&b);
  int rc = v ? ox_pb_put_uint(&b, 1, 1) : 0; /* proto3: false is the empty message */
  reply(gc, &b, rc);
}

static void rpc_model_ready(gcall_t *gc, ox_slice_t msg) {
  ox_slice_t name, version;
  if (name_version(msg, &name, &version)) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, "malformed ModelReadyRequest");
    return;
  }
  char why[512];
  ox_model_t *m = NULL;
  int ready = 0;
  if (name.len && !ox_models_get(gc->svc->s->models, name, version, &m, why, sizeof why)) {
    const ox_model_state_t *st = m->app;
    ready = !st->unavailable && server_ready(gc->svc->s);
    ox_models_put(m);
  }
  rpc_bool(gc, ready);
}

static void rpc_server_metadata(gcall_t *gc) {
  static const char *const ext[] = {"binary_tensor_data", "classification", "statistics",
                                    "model_configuration", "model_repository"};
  ox_buf_t b;
  ox_buf_init(&b);
  int rc = ox_pb_put_str(&b, 1, "onnxd");
  rc |= ox_pb_put_str(&b, 2, OX_VERSION);
  for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) rc |= ox_pb_put_str(&b, 3, ext[i]);
  reply(gc, &b, rc);
}

/* TensorMetadata {1 name, 2 datatype, 3 repeated int64 shape (packed)} as field num. */
static int put_tensor_meta(ox_buf_t *b, uint32_t num, const ox_tensor_info_t *t) {
  long mark = ox_pb_begin(b, num);
  if (mark < 0) return (int)mark;
  int rc = ox_pb_put_str(b, 1, t->name);
  rc |= ox_pb_put_str(b, 2, ox_dtype_name(t->dtype));
  if (t->rank > 0) {
    long sm = ox_pb_begin(b, 3);
    if (sm < 0) return (int)sm;
    for (int d = 0; d < t->rank; d++) rc |= ox_pb_put_varint(b, (uint64_t)t->dims[d]);
    rc |= ox_pb_end(b, sm);
  }
  return rc | ox_pb_end(b, mark);
}

static void rpc_model_metadata(gcall_t *gc, ox_slice_t msg) {
  ox_slice_t name, version;
  if (name_version(msg, &name, &version)) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, "malformed ModelMetadataRequest");
    return;
  }
  ox_model_t *m = lookup(gc, name, version);
  if (!m) return;
  int64_t versions[64];
  size_t nv = ox_models_versions(gc->svc->s->models, m->name, versions, 64);
  ox_buf_t b;
  ox_buf_init(&b);
  int rc = ox_pb_put_str(&b, 1, m->name);
  for (size_t i = 0; i < nv && i < 64; i++) {
    char v[24];
    snprintf(v, sizeof v, "%" PRId64, versions[i]);
    rc |= ox_pb_put_str(&b, 2, v);
  }
  rc |= ox_pb_put_str(&b, 3, "onnx_onnxv1");
  for (size_t i = 0; i < m->num_inputs && !rc; i++) rc |= put_tensor_meta(&b, 4, &m->inputs[i]);
  for (size_t i = 0; i < m->num_outputs && !rc; i++) rc |= put_tensor_meta(&b, 5, &m->outputs[i]);
  ox_models_put(m);
  reply(gc, &b, rc);
}

/* grpc.health.v1: HealthCheckResponse {1 status: SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3}.
 * The server's readiness answers for "" and for the inference service. */
static int health_status(gcall_t *gc, ox_slice_t msg, int *status) {
  ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
  ox_pb_field_t f;
  ox_slice_t service = ox_slice("", 0);
  int rc;
  while ((rc = ox_pb_next(&r, &f)) == 1)
    if (f.num == 1 && f.wire == OX_PB_LEN) service = f.s;
  if (rc) return rc;
  if (service.len && !ox_slice_eq(service, "inference.GRPCInferenceService")) {
    *status = 3;
    return 0;
  }
  *status = server_ready(gc->svc->s) && !gc->svc->draining ? 1 : 2;
  return 0;
}

static void rpc_health_check(gcall_t *gc, ox_slice_t msg) {
  int status;
  if (health_status(gc, msg, &status)) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, "malformed HealthCheckRequest");
    return;
  }
  if (status == 3) { /* the protocol: Check of an unknown service is NOT_FOUND */
    gcall_finish(gc, OX_GRPC_NOT_FOUND, "unknown service");
    return;
  }
  ox_buf_t b;
  ox_buf_init(&b);
  reply(gc, &b, ox_pb_put_uint(&b, 1, (uint64_t)status));
}

/* Watch: the status now, then NOT_SERVING when the server drains (the stream then ends). */
static void rpc_health_watch(gcall_t *gc, ox_slice_t msg) {
  int status;
  if (health_status(gc, msg, &status)) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, "malformed HealthCheckRequest");
    return;
  }
  ox_buf_t b;
  ox_buf_init(&b);
  if (ox_pb_put_uint(&b, 1, (uint64_t)status) || send_buf(gc, &b)) {
    ox_buf_free(&b);
    gcall_finish(gc, OX_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (status == 2 && gc->svc->draining) {
    gcall_finish(gc, OX_GRPC_OK, NULL);
    return;
  }
  link_stream(gc);
}

/* ---- inference ---------------------------------------------------------------------------- */

/* One inference call's front end context (in the core's call: ox_infer_ctx). */
typedef struct ginfer {
  ox_infer_call_t *call;
  gcall_t *gc;
  ox_server_t *s;
  ox_grpc_msg_t msg; /* the request message (owned) */
  uint64_t grpc_timeout_us;
  int stream;
  ox_pb_infer_request_t preq;
  /* rendered on a worker by encode */
  int status; /* gRPC status of a unary answer */
  const char *err;
  ox_grpc_out_t out;
  int have_out;
  ox_buf_t tail, bytes_out;
  ox_pb_out_tensor_t *outs;
  struct ginfer *next, **pprev; /* gc->infers */
} ginfer_t;

static int g_decode(void *arg, ox_infer_request_t *req, ox_arena_t *arena, char *err,
                    size_t errcap) {
  ginfer_t *x = arg;
  ox_pb_infer_request_t *p = &x->preq;
  int rc = ox_pb_infer_request_decode(x->msg.data, x->msg.len, arena, p, err, errcap);
  if (rc) return rc;
  req->inputs = p->inputs;
  req->num_inputs = p->num_inputs;
  req->outputs = p->outputs;
  req->num_outputs = p->num_outputs;
  req->params = p->params;
  req->num_params = p->num_params;
  uint64_t t = p->has_timeout ? p->timeout_us : 0;
  if (x->grpc_timeout_us && (!t || x->grpc_timeout_us < t)) t = x->grpc_timeout_us;
  req->timeout_us = t;
  req->id = p->id;
  return 0;
}

static void out_release(void *arg);

/* Worker: a successful response -> a ModelInferResponse (or its stream form) around ORT's
 * memory. 0 or OX_ENOMEM. */
static int encode_ok(ginfer_t *x, const ox_infer_response_t *r) {
  size_t n = r->num_outputs, bytes_total = 0;
  x->outs = calloc(n ? n : 1, sizeof *x->outs);
  x->out.iov = calloc(2 * n + 1, sizeof *x->out.iov);
  if (!x->outs || !x->out.iov) return OX_ENOMEM;
  for (size_t j = 0; j < n; j++) {
    const ox_tensor_out_t *o = &r->outputs[j];
    if (o->dtype == OX_DT_BYTES)
      for (uint64_t e = 0; e < o->count; e++) bytes_total += 4 + o->strings[e].len;
  }
  if (bytes_total && ox_buf_reserve(&x->bytes_out, bytes_total)) return OX_ENOMEM;
  for (size_t j = 0; j < n; j++) {
    const ox_tensor_out_t *o = &r->outputs[j];
    ox_pb_out_tensor_t *t = &x->outs[j];
    t->name = ox_infer_output_name(r, j);
    t->dtype = o->dtype;
    t->rank = o->rank;
    t->shape = o->shape;
    if (o->dtype == OX_DT_BYTES) {
      size_t start = x->bytes_out.len;
      for (uint64_t e = 0; e < o->count; e++) {
        uint32_t len = (uint32_t)o->strings[e].len;
        unsigned char le[4] = {(unsigned char)len, (unsigned char)(len >> 8),
                               (unsigned char)(len >> 16), (unsigned char)(len >> 24)};
        ox_buf_append(&x->bytes_out, le, 4); /* reserved above: cannot fail */
        ox_buf_append(&x->bytes_out, o->strings[e].ptr, o->strings[e].len);
      }
      t->data = x->bytes_out.data + start;
      t->nbytes = x->bytes_out.len - start;
    } else {
      t->data = o->data;
      t->nbytes = o->nbytes;
    }
  }
  /* The feature view's extras, as REST's response parameters: the features as JSON text. */
  ox_pb_param_t params[2];
  size_t np = 0;
  ox_buf_t feat;
  ox_buf_init(&feat);
  if (r->features) {
    if (ox_tensor_json_encode(&feat, OX_DT_FP32, r->features, r->num_features)) return OX_ENOMEM;
    params[np++] = (ox_pb_param_t){
        .key = "features", .kind = OX_PARAM_STRING, .s = ox_slice(feat.data, feat.len)};
  }
  if (r->features_degraded)
    params[np++] = (ox_pb_param_t){.key = "features_degraded", .kind = OX_PARAM_BOOL, .b = 1};
  char ver[24];
  snprintf(ver, sizeof ver, "%" PRId64, r->model->version);
  ox_pb_infer_response_t pr = {.model_name = r->model->name,
                               .model_version = ver,
                               .id = x->preq.id,
                               .outputs = x->outs,
                               .num_outputs = n,
                               .params = params,
                               .num_params = np};
  int iovcnt = 0;
  int rc = ox_pb_infer_response_encode(&pr, x->stream, &x->out.head, &x->tail, x->out.iov, &iovcnt);
  ox_buf_free(&feat);
  if (rc) return OX_ENOMEM;
  x->out.iovcnt = iovcnt;
  return 0;
}

static int g_encode(void *arg, const ox_infer_response_t *r) {
  ginfer_t *x = arg;
  ox_buf_free(&x->out.head);
  ox_buf_free(&x->tail);
  ox_buf_free(&x->bytes_out);
  free(x->out.iov);
  free(x->outs);
  x->out.iov = NULL;
  x->outs = NULL;
  x->out.iovcnt = 0;
  x->have_out = 0;
  if (!r->status) {
    int rc = encode_ok(x, r);
    if (rc) return rc;
    x->status = OX_GRPC_OK;
    x->have_out = 1;
    return 0;
  }
  x->status = ox_grpc_status_of(r->status);
  x->err = r->msg;
  if (x->stream) { /* a stream goes on: the error is a message of it */
    if (!ox_pb_stream_error_encode(&x->out.head, r->msg)) x->have_out = 1;
  }
  return 0;
}

/* After the socket took the answer (or the call dropped it): the core's call goes. */
static void out_release(void *arg) {
  ginfer_t *x = arg;
  ox_buf_free(&x->tail);
  ox_buf_free(&x->bytes_out);
  free(x->outs);
  ox_grpc_msg_free(&x->msg);
  ox_infer_release(x->call); /* frees x too */
}

/* Releases an answer that is not sent. */
static void release_unsent(ginfer_t *x) {
  ox_buf_free(&x->out.head);
  free(x->out.iov);
  out_release(x);
}

/* Sends x's rendered answer on the call; it is released once written (or dropped). */
static void send_out(gcall_t *gc, ginfer_t *x) {
  ox_grpc_out_t out = x->out;
  memset(&x->out, 0, sizeof x->out);
  out.release = out_release;
  out.release_arg = x;
  ox_grpc_call_send(gc->call, &out); /* on failure it has run release already */
}

/* An aborted call ends once nothing of it is pending. */
static void finish_if_aborted(gcall_t *gc) {
  if (gc->aborted && gc->pending == 0) gcall_finish(gc, OX_GRPC_CANCELLED, "cancelled");
}

/* Loop thread: the core is done with the call. */
static void g_done(void *arg, const ox_infer_response_t *r) {
  (void)r;
  ginfer_t *x = arg;
  gcall_t *gc = x->gc;
  atomic_fetch_sub(&x->s->inflight, 1);
  *x->pprev = x->next;
  if (x->next) x->next->pprev = x->pprev;
  gc->pending--;
  if (gc->aborted) {
    release_unsent(x);
    finish_if_aborted(gc);
    return;
  }
  if (gc->m == M_INFER) {
    if (x->status == OX_GRPC_OK && x->have_out) {
      send_out(gc, x);
      gcall_finish(gc, OX_GRPC_OK, NULL);
    } else {
      /* the message lives in the core's call: finish (which copies it) before the release */
      gcall_finish(gc, x->status ? (ox_grpc_status_t)x->status : OX_GRPC_INTERNAL,
                   x->err ? x->err : "out of memory");
      release_unsent(x);
    }
    return;
  }
  if (x->have_out)
    send_out(gc, x);
  else
    release_unsent(x);
  if ((gc->half_closed || gc->svc->draining) && gc->pending == 0)
    gcall_finish(gc, OX_GRPC_OK, NULL);
}

static const ox_infer_ops_t grpc_ops = {.decode = g_decode, .encode = g_encode, .done = g_done};

/* The model_name and model_version of a ModelInferRequest (fields 1 and 2), found by walking
 * its top-level fields: the tensors are skipped by their lengths, not read. */
static int infer_target(const ox_grpc_msg_t *m, ox_slice_t *name, ox_slice_t *version) {
  return name_version(ox_slice(m->data, m->len), name, version);
}

/* Loop thread: one inference request message (owned) of gc. Unary: its answer finishes gc;
 * stream: its answer (or error) is one message of gc. */
static void start_infer(gcall_t *gc, ox_grpc_msg_t *msg) {
  ox_server_t *s = gc->svc->s;
  int stream = gc->m == M_STREAM_INFER;
  ox_slice_t name, version;
  const char *why = NULL;
  char whybuf[512];
  int rc = 0;
  ox_model_t *m = NULL;
  if (infer_target(msg, &name, &version)) {
    rc = OX_EINVALID;
    why = "malformed ModelInferRequest";
  } else if (atomic_load(&s->draining)) {
    rc = OX_EUNAVAILABLE;
    why = "server is shutting down";
  } else if (name.len == 0) {
    rc = OX_EINVALID;
    why = "the request names no model (model_name is empty)";
  } else if ((rc = ox_models_get(s->models, name, version, &m, whybuf, sizeof whybuf))) {
    why = whybuf;
  } else if (!(rc = ox_infer_check_model(m, &why))) {
    ox_infer_call_t *call;
    rc = ox_infer_create(m, sizeof(ginfer_t), &call, &why);
    if (!rc) {
      ginfer_t *x = ox_infer_ctx(call);
      x->call = call;
      x->gc = gc;
      x->s = s;
      x->msg = *msg;
      x->grpc_timeout_us = gc->timeout_us;
      x->stream = stream;
      ginfer_t *old_head = gc->infers;
      x->next = old_head;
      if (old_head) old_head->pprev = &x->next;
      gc->infers = x;
      x->pprev = &gc->infers;
      gc->pending++;
      atomic_fetch_add(&s->inflight, 1);
      ox_infer_env_t env = {.pool = s->pool,
                            .features = s->features,
                            .loop = ox_grpc_call_loop(gc->call),
                            .ops = &grpc_ops};
      rc = ox_infer_submit(call, &env, &why); /* on failure the call (x with it) is freed */
      if (!rc) {
        ox_models_put(m);
        return;
      }
      atomic_fetch_sub(&s->inflight, 1);
      gc->pending--;
      gc->infers = old_head; /* x was the head */
      if (old_head) old_head->pprev = &gc->infers;
    }
  }
  if (m) ox_models_put(m);
  ox_grpc_msg_free(msg);
  if (!stream) {
    gcall_finish(gc, ox_grpc_status_of(rc), why);
    return;
  }
  ox_buf_t b;
  ox_buf_init(&b);
  if (ox_pb_stream_error_encode(&b, why) || send_buf(gc, &b)) ox_buf_free(&b);
}

/* ---- statistics, configuration, repository ------------------------------------------------ */

static int put_duration(ox_buf_t *b, uint32_t num, const ox_stat_pair_t *p) {
  long mark = ox_pb_begin(b, num);
  if (mark < 0) return (int)mark;
  uint64_t count = atomic_load_explicit(&p->count, memory_order_relaxed);
  uint64_t ns = atomic_load_explicit(&p->ns, memory_order_relaxed);
  int rc = count ? ox_pb_put_uint(b, 1, count) : 0;
  rc |= ns ? ox_pb_put_uint(b, 2, ns) : 0;
  return rc | ox_pb_end(b, mark);
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* ModelStatistics of one version, as field 1 of ModelStatisticsResponse. */
static int put_model_stats(ox_buf_t *b, const ox_model_t *m) {
  const ox_model_state_t *st = m->app;
  const ox_model_stats_t *s = &st->stats;
  char ver[24];
  snprintf(ver, sizeof ver, "%" PRId64, m->version);
  long mark = ox_pb_begin(b, 1);
  if (mark < 0) return (int)mark;
  int rc = ox_pb_put_str(b, 1, m->name);
  rc |= ox_pb_put_str(b, 2, ver);
  rc |= ox_pb_put_uint(b, 3, LD(s->last_inference_ms));
  rc |= ox_pb_put_uint(b, 4, LD(s->inference_count));
  rc |= ox_pb_put_uint(b, 5, LD(s->execution_count));
  long im = ox_pb_begin(b, 6);
  if (im < 0) return (int)im;
  rc |= put_duration(b, 1, &s->success);
  rc |= put_duration(b, 2, &s->fail);
  rc |= put_duration(b, 3, &s->queue);
  rc |= put_duration(b, 4, &s->compute_input);
  rc |= put_duration(b, 5, &s->compute_infer);
  rc |= put_duration(b, 6, &s->compute_output);
  rc |= ox_pb_end(b, im);
  for (size_t k = 1; k <= OX_MAX_BATCH_STATS && !rc; k++) {
    const ox_batch_stat_t *bs = &s->by_batch[k];
    if (!LD(bs->compute_infer.count)) continue;
    long bm = ox_pb_begin(b, 7);
    if (bm < 0) return (int)bm;
    rc |= ox_pb_put_uint(b, 1, k);
    rc |= put_duration(b, 2, &bs->compute_input);
    rc |= put_duration(b, 3, &bs->compute_infer);
    rc |= put_duration(b, 4, &bs->compute_output);
    rc |= ox_pb_end(b, bm);
  }
  return rc | ox_pb_end(b, mark);
}

/* ModelStatistics: every version of every model (no name), of one model, or one version. */
static void rpc_stats(gcall_t *gc, ox_slice_t msg) {
  ox_slice_t name, version;
  if (name_version(msg, &name, &version)) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, "malformed ModelStatisticsRequest");
    return;
  }
  ox_model_t *one = NULL;
  if (name.len && !(one = lookup(gc, name, version))) return;
  ox_model_t **all = NULL;
  size_t nall = 0;
  ox_buf_t b;
  ox_buf_init(&b);
  int rc = ox_models_snapshot(gc->svc->s->models, &all, &nall);
  for (size_t i = 0; i < nall && !rc; i++) {
    ox_model_t *m = all[i];
    if (one && (version.len ? m != one : strcmp(m->name, one->name))) continue;
    rc = put_model_stats(&b, m);
  }
  for (size_t i = 0; i < nall; i++) ox_models_put(all[i]);
  free(all);
  if (one) ox_models_put(one);
  reply(gc, &b, rc);
}

/* Triton's DataType enum value of a datatype. */
static uint64_t triton_type(ox_dtype_t dt) {
  static const struct {
    const char *name;
    uint64_t v;
  } map[] = {{"BOOL", 1},  {"UINT8", 2}, {"UINT16", 3}, {"UINT32", 4}, {"UINT64", 5},
             {"INT8", 6},  {"INT16", 7}, {"INT32", 8},  {"INT64", 9},  {"FP16", 10},
             {"FP32", 11}, {"FP64", 12}, {"BYTES", 13}, {"BF16", 14}};
  const char *n = ox_dtype_name(dt);
  for (size_t i = 0; n && i < sizeof map / sizeof map[0]; i++)
    if (!strcmp(map[i].name, n)) return map[i].v;
  return 0;
}

/* ModelInput / ModelOutput {1 name, 2 data_type, dims (4 for inputs, 3 for outputs)}: the
 * model's tensors, without the batch dimension when the model batches (as Triton shows them). */
static int put_config_tensor(ox_buf_t *b, uint32_t num, uint32_t dims_num,
                             const ox_tensor_info_t *t, int batched) {
  long mark = ox_pb_begin(b, num);
  if (mark < 0) return (int)mark;
  int rc = ox_pb_put_str(b, 1, t->name);
  rc |= ox_pb_put_uint(b, 2, triton_type(t->dtype));
  if (t->rank > batched) {
    long dm = ox_pb_begin(b, dims_num);
    if (dm < 0) return (int)dm;
    for (int d = batched; d < t->rank; d++) rc |= ox_pb_put_varint(b, (uint64_t)t->dims[d]);
    rc |= ox_pb_end(b, dm);
  }
  return rc | ox_pb_end(b, mark);
}

/* ModelConfigResponse {1 ModelConfig}: the effective configuration, in Triton's message (the
 * fields REST's /config shows that ModelConfig has; feature views are REST's only). */
static void rpc_config(gcall_t *gc, ox_slice_t msg) {
  ox_slice_t name, version;
  if (name_version(msg, &name, &version)) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, "malformed ModelConfigRequest");
    return;
  }
  ox_model_t *m = lookup(gc, name, version);
  if (!m) return;
  const ox_model_state_t *st = m->app;
  const ox_sched_config_t *sc = &st->cfg.sched;
  int batched = sc->max_batch_size > 0;
  ox_buf_t b;
  ox_buf_init(&b);
  long cm = ox_pb_begin(&b, 1);
  int rc = cm < 0 ? (int)cm : 0;
  rc |= ox_pb_put_str(&b, 1, m->name);
  rc |= ox_pb_put_str(&b, 2, "onnxruntime_onnx");
  rc |= ox_pb_put_uint(&b, 4, sc->max_batch_size);
  for (size_t i = 0; i < m->num_inputs && !rc; i++)
    rc |= put_config_tensor(&b, 5, 4, &m->inputs[i], batched);
  for (size_t i = 0; i < m->num_outputs && !rc; i++)
    rc |= put_config_tensor(&b, 6, 3, &m->outputs[i], batched);
  long ig = rc ? -1 : ox_pb_begin(&b, 7); /* instance_group {2 count, 4 kind: KIND_CPU 2} */
  if (ig >= 0) {
    rc |= ox_pb_put_uint(&b, 2, sc->instance_count);
    rc |= ox_pb_put_uint(&b, 4, 2);
    rc |= ox_pb_end(&b, ig);
  }
  if (batched && !rc) { /* dynamic_batching {1 preferred_batch_size, 2 max_queue_delay_us,
                           6 default_queue_policy {2 default_timeout_us, 4 max_queue_size}} */
    long db = ox_pb_begin(&b, 11);
    if (db >= 0) {
      if (sc->num_preferred) {
        long pb = ox_pb_begin(&b, 1);
        for (size_t i = 0; pb >= 0 && i < sc->num_preferred; i++)
          rc |= ox_pb_put_varint(&b, sc->preferred_batch_size[i]);
        rc |= pb < 0 ? (int)pb : ox_pb_end(&b, pb);
      }
      rc |= ox_pb_put_uint(&b, 2, sc->max_queue_delay_us);
      long qp = ox_pb_begin(&b, 6);
      if (qp >= 0) {
        rc |= ox_pb_put_uint(&b, 2, sc->default_timeout_us);
        rc |= ox_pb_put_uint(&b, 4, sc->max_queue_size);
        rc |= ox_pb_end(&b, qp);
      }
      rc |= qp < 0 ? (int)qp : ox_pb_end(&b, db);
    } else {
      rc = (int)db;
    }
  }
  rc |= ox_pb_put_str(&b, 17, "onnxruntime");
  if (cm >= 0) rc |= ox_pb_end(&b, cm);
  ox_models_put(m);
  reply(gc, &b, rc);
}

/* A JSON string member's value in a repository index entry (our own JSON: no escapes but in
 * reasons, which are unescaped here). */
static int index_entry(ox_buf_t *b, ox_json_t *js) {
  long mark = ox_pb_begin(b, 1);
  if (mark < 0) return (int)mark;
  int rc = 0;
  if (js->p >= js->end || *js->p != '{') return OX_EINVALID;
  js->p++;
  for (;;) {
    ox_json_ws(js);
    if (js->p < js->end && *js->p == '}') {
      js->p++;
      break;
    }
    if (js->p < js->end && *js->p == ',') js->p++;
    ox_json_ws(js);
    ox_slice_t key, val;
    int esc;
    if (ox_json_string(js, &key, &esc)) return OX_EINVALID;
    ox_json_ws(js);
    if (js->p >= js->end || *js->p != ':') return OX_EINVALID;
    js->p++;
    ox_json_ws(js);
    if (ox_json_string(js, &val, &esc)) return OX_EINVALID;
    uint32_t num = ox_slice_eq(key, "name")      ? 1
                   : ox_slice_eq(key, "version") ? 2
                   : ox_slice_eq(key, "state")   ? 3
                   : ox_slice_eq(key, "reason")  ? 4
                                                 : 0;
    if (!num) continue;
    if (!esc) {
      rc |= ox_pb_put_bytes(b, num, val.ptr, val.len);
    } else {
      char *u = malloc(val.len + 1);
      long n = u ? ox_json_unescape(val.ptr, val.len, u) : -1;
      rc |= n < 0 ? OX_ENOMEM : ox_pb_put_bytes(b, num, u, (size_t)n);
      free(u);
    }
  }
  return rc | ox_pb_end(b, mark);
}

/* RepositoryIndex {2 ready}: the index REST answers (ox_models_index_json, one source),
 * rewritten as RepositoryIndexResponse {1 repeated ModelIndex {1 name, 2 version, 3 state,
 * 4 reason}}. */
static void rpc_repo_index(gcall_t *gc, ox_slice_t msg) {
  ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
  ox_pb_field_t f;
  int ready = 0, rc;
  while ((rc = ox_pb_next(&r, &f)) == 1)
    if (f.num == 2 && f.wire == OX_PB_VARINT) ready = f.u64 != 0;
  if (rc) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, "malformed RepositoryIndexRequest");
    return;
  }
  ox_buf_t j, b;
  ox_buf_init(&j);
  ox_buf_init(&b);
  rc = ox_models_index_json(gc->svc->s->models, ready, &j);
  if (!rc) {
    ox_json_t js;
    ox_json_init(&js, j.data, j.len);
    ox_json_ws(&js);
    if (js.p < js.end && *js.p == '[') js.p++;
    for (;;) {
      ox_json_ws(&js);
      if (js.p >= js.end || *js.p == ']') break;
      if (*js.p == ',') {
        js.p++;
        ox_json_ws(&js);
      }
      if ((rc = index_entry(&b, &js))) break;
    }
  }
  ox_buf_free(&j);
  reply(gc, &b, rc);
}

/* Loop thread: a load or unload is over. */
static void repo_answer(void *arg, int rc, const char *msg) {
  gcall_t *gc = arg;
  gc->pending--;
  if (gc->aborted) {
    finish_if_aborted(gc);
    return;
  }
  if (rc) {
    gcall_finish(gc, rc == OX_EUNAVAILABLE ? OX_GRPC_UNAVAILABLE : OX_GRPC_INVALID_ARGUMENT, msg);
    return;
  }
  ox_buf_t b;
  ox_buf_init(&b);
  reply(gc, &b, 0); /* the empty RepositoryModelLoadResponse / UnloadResponse */
}

#define MAX_REPO_FILES 64

/* RepositoryModelLoad / Unload {1 repository_name, 2 model_name, 3 map<string,
 * ModelRepositoryParameter {1 bool, 2 int64, 3 string, 4 bytes}> parameters}: "config" (string)
 * and "file:<version>/<file>" (bytes, not base64: gRPC carries bytes) as REST's load. */
static void rpc_repo_op(gcall_t *gc, ox_slice_t msg, int unload) {
  ox_server_t *s = gc->svc->s;
  if (s->admin_token || s->admin_split) {
    gcall_finish(gc, OX_GRPC_PERMISSION_DENIED,
                 "repository load and unload are served over REST only when --admin-port or "
                 "--admin-token-file is set");
    return;
  }
  ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
  ox_pb_field_t f;
  ox_slice_t name = ox_slice("", 0), config = ox_slice(NULL, 0);
  ox_repo_file_t files[MAX_REPO_FILES];
  size_t nfiles = 0;
  const char *bad = NULL;
  int rc;
  while (!bad && (rc = ox_pb_next(&r, &f)) == 1) {
    if (f.num == 2 && f.wire == OX_PB_LEN) name = f.s;
    if (f.num != 3 || f.wire != OX_PB_LEN) continue;
    /* one map entry {1 key, 2 value} */
    ox_pb_reader_t er = ox_pb_reader(f.s.ptr, f.s.len);
    ox_pb_field_t ef, vf;
    ox_slice_t key = ox_slice("", 0), val = ox_slice(NULL, 0);
    int kind = 0;
    while ((rc = ox_pb_next(&er, &ef)) == 1) {
      if (ef.num == 1 && ef.wire == OX_PB_LEN) key = ef.s;
      if (ef.num != 2 || ef.wire != OX_PB_LEN) continue;
      ox_pb_reader_t vr = ox_pb_reader(ef.s.ptr, ef.s.len);
      while ((rc = ox_pb_next(&vr, &vf)) == 1)
        if (vf.wire == OX_PB_LEN && (vf.num == 3 || vf.num == 4)) {
          kind = (int)vf.num;
          val = vf.s;
        }
      if (rc) break;
    }
    if (rc) break;
    if (ox_slice_eq(key, "config")) {
      if (kind != 3) bad = "parameters[\"config\"] must be a string_param holding the JSON config";
      config = val;
    } else if (key.len >= 5 && !memcmp(key.ptr, "file:", 5)) {
      if (kind != 4)
        bad = "parameters[\"file:<version>/<file>\"] must be a bytes_param";
      else if (nfiles == MAX_REPO_FILES)
        bad = "too many upload files";
      else
        files[nfiles++] = (ox_repo_file_t){ox_slice(key.ptr + 5, key.len - 5), val};
    }
  }
  if (rc && !bad)
    bad =
        unload ? "malformed RepositoryModelUnloadRequest" : "malformed RepositoryModelLoadRequest";
  if (bad) {
    gcall_finish(gc, OX_GRPC_INVALID_ARGUMENT, bad);
    return;
  }
  /* The config text must be NUL-terminated for the manager (it copies it). */
  char *cfg = NULL;
  if (config.ptr && !(cfg = malloc(config.len + 1))) {
    gcall_finish(gc, OX_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (cfg) {
    memcpy(cfg, config.ptr, config.len);
    cfg[config.len] = 0;
  }
  char err[512];
  gc->pending++;
  rc = ox_server_repo_start(s, ox_grpc_call_loop(gc->call), name, unload, cfg, config.len, files,
                            unload ? 0 : nfiles, repo_answer, gc, err, sizeof err);
  free(cfg);
  if (rc) {
    gc->pending--;
    gcall_finish(gc,
                 rc == OX_EINVALID                  ? OX_GRPC_INVALID_ARGUMENT
                 : rc == OX_EUNAVAILABLE            ? OX_GRPC_UNAVAILABLE
                 : rc == -ENOSPC || rc == OX_ENOMEM ? OX_GRPC_RESOURCE_EXHAUSTED
                                                    : OX_GRPC_INTERNAL,
                 err);
  }
}

/* ---- the transport's callbacks ------------------------------------------------------------ */

/* A unary call's message is complete and the client half-closed: serve it. */
static void dispatch(gcall_t *gc) {
  ox_slice_t msg = ox_slice(gc->have_msg ? gc->msg.data : "", gc->have_msg ? gc->msg.len : 0);
  switch (gc->m) {
    case M_LIVE:
      rpc_bool(gc, 1);
      return;
    case M_READY:
      rpc_bool(gc, server_ready(gc->svc->s));
      return;
    case M_MODEL_READY:
      rpc_model_ready(gc, msg);
      return;
    case M_SERVER_META:
      rpc_server_metadata(gc);
      return;
    case M_MODEL_META:
      rpc_model_metadata(gc, msg);
      return;
    case M_CONFIG:
      rpc_config(gc, msg);
      return;
    case M_STATS:
      rpc_stats(gc, msg);
      return;
    case M_REPO_INDEX:
      rpc_repo_index(gc, msg);
      return;
    case M_REPO_LOAD:
      rpc_repo_op(gc, msg, 0);
      return;
    case M_REPO_UNLOAD:
      rpc_repo_op(gc, msg, 1);
      return;
    case M_HEALTH_CHECK:
      rpc_health_check(gc, msg);
      return;
    case M_HEALTH_WATCH:
      rpc_health_watch(gc, msg);
      return;
    case M_INFER: {
      if (!gc->have_msg) {
        gcall_finish(gc, OX_GRPC_INTERNAL, "the call carried no request message");
        return;
      }
      ox_grpc_msg_t m = gc->msg;
      gc->have_msg = 0;
      start_infer(gc, &m);
      return;
    }
    case M_STREAM_INFER:
      return; /* not unary */
  }
}

static int g_on_open(void *app, ox_grpc_call_t *call, ox_slice_t path, uint64_t timeout_us,
                     const char **msg) {
  ox_grpc_service_t *svc = app;
  for (size_t i = 0; i < sizeof ox_methods / sizeof ox_methods[0]; i++) {
    if (!ox_slice_eq(path, ox_methods[i].path)) continue;
    if (ox_methods[i].method < 0) {
      *msg = ox_methods[i].msg;
      ox_metrics_count_grpc(OX_GRPC_UNIMPLEMENTED);
      return OX_GRPC_UNIMPLEMENTED;
    }
    gcall_t *gc = calloc(1, sizeof *gc);
    if (!gc) {
      *msg = "out of memory";
      ox_metrics_count_grpc(OX_GRPC_RESOURCE_EXHAUSTED);
      return OX_GRPC_RESOURCE_EXHAUSTED;
    }
    gc->svc = svc;
    gc->call = call;
    gc->m = (method_t)ox_methods[i].method;
    gc->timeout_us = timeout_us;
    ox_grpc_call_set_data(call, gc);
    if (gc->m == M_STREAM_INFER) link_stream(gc);
    return 0;
  }
  *msg = "unknown method";
  ox_metrics_count_grpc(OX_GRPC_UNIMPLEMENTED);
  return OX_GRPC_UNIMPLEMENTED;
}

static size_t g_align_offset(void *app, ox_grpc_call_t *call, const char *prefix, size_t n,
                             size_t msg_len) {
  (void)app;
  const gcall_t *gc = ox_grpc_call_data(call);
  if (!gc || (gc->m != M_INFER && gc->m != M_STREAM_INFER)) return 0;
  return ox_pb_infer_request_raw_offset(prefix, n, msg_len);
}

static void g_on_message(void *app, ox_grpc_call_t *call, ox_grpc_msg_t *msg) {
  (void)app;
  gcall_t *gc = ox_grpc_call_data(call);
  if (gc->aborted || gc->half_closed) {
    ox_grpc_msg_free(msg);
    return;
  }
  if (gc->m == M_STREAM_INFER) {
    start_infer(gc, msg);
    return;
  }
  if (gc->have_msg) { /* a unary method takes one message, as gRPC's servers say */
    ox_grpc_msg_free(msg);
    gc->aborted = 1; /* further callbacks are ignored until the finish below */
    ox_grpc_msg_free(&gc->msg);
    gc->have_msg = 0;
    gcall_finish(gc, OX_GRPC_INTERNAL, "more than one request message for a unary method");
    return;
  }
  gc->msg = *msg;
  gc->have_msg = 1;
}

static void g_on_half_close(void *app, ox_grpc_call_t *call) {
  (void)app;
  gcall_t *gc = ox_grpc_call_data(call);
  if (gc->aborted || gc->half_closed) return;
  gc->half_closed = 1;
  if (gc->m != M_STREAM_INFER) {
    dispatch(gc);
    return;
  }
  if (gc->pending == 0) gcall_finish(gc, OX_GRPC_OK, NULL);
}

static void g_on_abort(void *app, ox_grpc_call_t *call) {
  (void)app;
  gcall_t *gc = ox_grpc_call_data(call);
  if (gc->aborted) return;
  gc->aborted = 1;
  for (ginfer_t *x = gc->infers; x; x = x->next) ox_infer_cancel(x->call);
  finish_if_aborted(gc);
}

static const ox_grpc_handler_t grpc_handler = {.on_open = g_on_open,
                                               .align_offset = g_align_offset,
                                               .on_message = g_on_message,
                                               .on_half_close = g_on_half_close,
                                               .on_abort = g_on_abort};

int ox_grpc_service_create(ox_server_t *s, const ox_grpc_config_t *limits,
                           ox_grpc_service_t **out) {
  ox_grpc_service_t *svc = calloc(1, sizeof *svc);
  if (!svc) return OX_ENOMEM;
  svc->s = s;
  svc->cfg = *limits;
  svc->cfg.handler = &grpc_handler;
  svc->cfg.app = svc;
  *out = svc;
  return 0;
}

const ox_grpc_config_t *ox_grpc_service_config(const ox_grpc_service_t *svc) {
  return &svc->cfg;
}

void ox_grpc_service_drain(ox_grpc_service_t *svc) {
  svc->draining = 1;
  for (gcall_t *gc = svc->streams, *next; gc; gc = next) {
    next = gc->next_stream;
    if (gc->m == M_HEALTH_WATCH) {
      ox_buf_t b;
      ox_buf_init(&b);
      if (ox_pb_put_uint(&b, 1, 2) || send_buf(gc, &b)) ox_buf_free(&b); /* NOT_SERVING */
      gcall_finish(gc, OX_GRPC_OK, NULL);
    } else if (gc->pending == 0 && !gc->aborted) {
      /* an idle inference stream ends; one with requests in flight ends after them (g_done) */
      gcall_finish(gc, OX_GRPC_OK, NULL);
    }
  }
}

void ox_grpc_service_destroy(ox_grpc_service_t *svc) {
  free(svc);
}
