/* infer.h: the inference core, independent of the wire: one request value in, one response
 * value out; validation, feature assembly, scheduling, running and output selection between.
 *
 * A protocol front end (server/rest_infer.c for REST JSON and the binary extension; tomorrow
 * gRPC) checks its framing on the loop thread, creates a call (ox_infer_create: admission to
 * the model's queue, before any parsing; one allocation that also holds the front end's
 * context) and submits it (ox_infer_submit). On a worker the core asks the front end to turn
 * the received bytes into the request value (ops.decode), matches its inputs to the model's,
 * validates every one before anything is allocated from declared sizes, builds the input
 * tensors (binary inputs: pointers into the received bytes; JSON inputs: numbers parsed into one
 * arena buffer per tensor), assembles a feature view's input (features_view.h; rows only L3 has
 * are fetched without holding the worker), selects the requested outputs and hands the request
 * to the model's batcher. When it ran or failed, the core fills the response value and calls
 * ops.encode on the worker (the front end renders its bytes there, off the loop), then
 * ops.done on the loop thread the front end named (it writes them). The response's outputs
 * are views into ONNX Runtime's memory, valid until ox_infer_release (or
 * ox_infer_release_outputs): the front end writes from them with no copy.
 *
 * Errors are OX_E* codes (core/error.h) with a message; which status a protocol answers them
 * with is the front end's one mapping (REST: server/rest_infer.c maps them to HTTP statuses).
 */
#ifndef OX_INFER_INFER_H
#define OX_INFER_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/slice.h"
#include "features/fstore.h"
#include "infer/model_config.h"
#include "loop/loop.h"
#include "metrics/metrics.h"
#include "proto/infer_req.h"
#include "runtime/runtime.h"
#include "sched/batcher.h"
#include "sched/pool.h"

/* The inference core's state for one model version (ox_model_t.app), created when the model is
 * loaded (server/models.c) and freed after the worker pool has stopped. */
typedef struct ox_model_state {
  ox_model_config_t cfg;
  ox_batcher_t *batcher;
  ox_model_stats_t stats;
  int unavailable; /* config or warm-up failed: not ready, inference refused */
  char reason[256];
  /* Owned by the model manager (infer/models.h): references to this version (the live set's
   * one, one per call from ox_models_get to ox_infer_release, one per loop handler); at zero
   * the manager's thread frees the version. */
  _Atomic int refs;
  struct ox_models *mgr;
  ox_model_t *model;
  struct ox_model_state *next_all, *next_dead; /* the manager's lists, under its lock */
} ox_model_state_t;

/* The request value. Every pointer borrows the received bytes (or the call's arena) and stays
 * valid until ox_infer_release. Filled by the front end's decode (worker thread). */
typedef struct {
  ox_model_t *model; /* set by the core before decode */
  /* Inputs as typed tensor views (proto/infer_req.h): name, datatype, shape, element count and
   * either `binary` (the elements' bytes where they lie in the received body, little-endian;
   * BYTES: each element a 4-byte little-endian length then its bytes) or `data_json` (the text
   * of a JSON array, decoded straight into the tensor later). In request order. */
  const ox_infer_input_t *inputs;
  size_t num_inputs;
  /* Requested outputs by name; 0: all, in the model's order. The response's outputs come in
   * this order, so a per-output option (REST: binary_data) stays the front end's business;
   * .classification (Triton's extension, infer/classify.h) is the core's: such an output is
   * answered as its top-K BYTES tensor, checked here (the datatype) before the run. */
  const ox_infer_output_t *outputs;
  size_t num_outputs;
  /* Every request parameter, in request order: feature keys and raw values are read here. */
  const ox_infer_param_t *params;
  size_t num_params;
  uint64_t timeout_us; /* from receipt; 0: the model's default timeout (may be none) */
  ox_slice_t id;       /* the request's id, opaque here (REST: the raw JSON token), may be empty */
} ox_infer_request_t;

/* The response value, valid from ops.encode until ox_infer_release. */
typedef struct {
  int status;      /* 0, or an OX_E* code */
  const char *msg; /* status != 0: NUL-terminated message for the client */
  ox_model_t *model;
  const ox_infer_request_t *req; /* the request value (zeroed if the call failed before decode) */
  /* status 0: the selected outputs, in the order asked for; output j is the model's output
   * out_idx[j] (ox_infer_output_name). Views into ONNX Runtime's memory (BYTES: `strings`),
   * valid until ox_infer_release_outputs or ox_infer_release; a classified output is a BYTES
   * tensor in the call's arena instead (valid until ox_infer_release). */
  const ox_tensor_out_t *outputs;
  const size_t *out_idx;
  size_t num_outputs;
  /* A model with a feature view: the assembled features when the request asked for them
   * (parameter "return_features": true), else NULL; and whether a tier gave defaults. */
  const float *features;
  uint64_t num_features;
  int features_degraded;
} ox_infer_response_t;

/* The model's name of a response's output j. */
static inline const char *ox_infer_output_name(const ox_infer_response_t *r, size_t j) {
  return r->model->outputs[r->out_idx[j]].name;
}

/* The request parameter named name (NUL-terminated), or NULL. Linear in num_params. */
const ox_infer_param_t *ox_infer_param(const ox_infer_request_t *req, const char *name);

typedef struct ox_infer_call ox_infer_call_t;

/* What a front end does for the core. ctx is the front end's context (ox_infer_ctx). */
typedef struct {
  /* Worker thread, at most once, before anything else reads the request: fill *req from the
   * received bytes (req->model is set; the rest zeroed). Memory from arena (freed by
   * ox_infer_release). Returns 0, or an OX_E* code with a message in err (errcap bytes). */
  int (*decode)(void *ctx, ox_infer_request_t *req, ox_arena_t *arena, char *err, size_t errcap);
  /* Worker thread (or the pool's cancelling thread), once per outcome: render the response
   * (its bytes are the front end's). Returns 0, or OX_ENOMEM when rendering a status-0
   * response failed: the core then calls encode again with that error (which must not fail:
   * a front end sends what it can). */
  int (*encode)(void *ctx, const ox_infer_response_t *resp);
  /* The loop thread given at submit, once: the call is over for the core; send the bytes. The
   * front end calls ox_infer_release once it no longer needs the response (after writing). */
  void (*done)(void *ctx, const ox_infer_response_t *resp);
} ox_infer_ops_t;

/* Where a call runs. Everything borrowed, and must outlive the call. */
typedef struct {
  ox_pool_t *pool;           /* the workers */
  ox_fstore_t *features;     /* NULL when the feature store is not open */
  ox_loop_t *loop;           /* the thread ops->done runs on */
  const ox_infer_ops_t *ops; /* static */
} ox_infer_env_t;

/* The process-wide cap on the pixels of one decoded image (--image-max-pixels; 0: the default
 * OX_IMG_DEFAULT_MAX_PIXELS). A model's image_inputs max_pixels may only lower it. Call before
 * serving. */
void ox_infer_set_image_max_pixels(uint64_t n);

/* 0 if model m takes requests, else OX_EUNAVAILABLE with a static message in *why. Any thread. */
int ox_infer_check_model(ox_model_t *m, const char **why);

/* Loop thread: admits a request for m (a place in its queue, taken before any parsing, so a
 * full queue is refused at once) and allocates its call, with ctx_size bytes of zeroed front
 * end context at ox_infer_ctx (aligned for any type). Returns 0 and *out; or OX_EUNAVAILABLE
 * (queue full) / OX_ENOMEM with a static message in *why, and nothing to release. */
int ox_infer_create(ox_model_t *m, size_t ctx_size, ox_infer_call_t **out, const char **why);
/* The front end's context of call. */
void *ox_infer_ctx(ox_infer_call_t *call);
/* Loop thread: queues the call on a worker. 0: ops.encode then ops.done will be called once
 * (and the front end must end with ox_infer_release). OX_EUNAVAILABLE (the pool's queue is
 * full), with a static message in *why: nothing was called, the call is freed (ctx with it). */
int ox_infer_submit(ox_infer_call_t *call, const ox_infer_env_t *env, const char **why);
/* Any thread, between submit and done: the client is gone. A call not yet decoded is not
 * decoded at all; a queued one is dropped without running (OX_ECANCELLED). */
void ox_infer_cancel(ox_infer_call_t *call);
/* Any thread, after ops.encode: gives ONNX Runtime's output memory back early (the front end
 * copied what it needs); the response's output views are invalid from then on. */
void ox_infer_release_outputs(ox_infer_call_t *call);
/* Any thread, after ops.done: frees the call, its arena, its outputs and the front end's
 * context. */
void ox_infer_release(ox_infer_call_t *call);

#endif
