/* infer_test.c: the inference core (infer/infer.h) driven by a front end that is not HTTP:
 * the request value is built by hand from typed tensor views, the response value is read
 * directly. Needs ONNXD_TEST_MODELS (identity_fp32) like runtime_test. Checks the threads the
 * ops run on (decode and encode on a worker, done on the loop), the outputs as views of ORT's
 * memory, errors as OX_E* codes with their message, and cancellation before decode. */
#include "infer/infer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "test.h"

static ox_repo_t *repo;
static ox_pool_t *pool;
static ox_loop_t *loop;
static ox_model_t *model;
static pthread_t loop_thread;

/* One request of the test front end. */
typedef struct {
  ox_infer_call_t *call;
  ox_dtype_t dtype;       /* the datatype the request claims */
  int decode_err;         /* decode fails with this code ("no such thing") */
  ox_infer_input_t input; /* a typed view of data */
  float data[8];
  int decoded, encoded, done; /* calls of each op */
  int decode_off_loop, encode_off_loop, done_on_loop;
  int status;
  char msg[256];
  float out[8];
  size_t out_n;
  char out_name[64];
} fe_t;

static int fe_decode(void *ctx, ox_infer_request_t *req, ox_arena_t *arena, char *err,
                     size_t errcap) {
  (void)arena;
  fe_t *f = ctx;
  f->decoded++;
  f->decode_off_loop = !pthread_equal(pthread_self(), loop_thread);
  if (f->decode_err) {
    snprintf(err, errcap, "no such thing");
    return f->decode_err;
  }
  ox_infer_input_t *in = &f->input;
  in->name = ox_slice(model->inputs[0].name, strlen(model->inputs[0].name));
  in->dtype = f->dtype;
  in->rank = model->inputs[0].rank;
  in->count = 1;
  for (int d = 0; d < in->rank; d++) {
    in->shape[d] = model->inputs[0].dims[d] >= 0 ? model->inputs[0].dims[d] : 2;
    in->count *= (uint64_t)in->shape[d];
  }
  for (uint64_t e = 0; e < in->count && e < 8; e++) f->data[e] = 0.5f + (float)e;
  in->has_binary = 1;
  in->binary = ox_slice((const char *)f->data, (size_t)in->count * sizeof(float));
  req->inputs = in;
  req->num_inputs = 1;
  return 0;
}

static int fe_encode(void *ctx, const ox_infer_response_t *r) {
  fe_t *f = ctx;
  f->encoded++;
  f->encode_off_loop = !pthread_equal(pthread_self(), loop_thread);
  f->status = r->status;
  snprintf(f->msg, sizeof f->msg, "%s", r->status ? r->msg : "");
  if (!r->status && r->num_outputs == 1) {
    snprintf(f->out_name, sizeof f->out_name, "%s", ox_infer_output_name(r, 0));
    f->out_n = r->outputs[0].count < 8 ? r->outputs[0].count : 8;
    memcpy(f->out, r->outputs[0].data, f->out_n * sizeof(float));
  }
  return 0;
}

static void fe_done(void *ctx, const ox_infer_response_t *r) {
  (void)r;
  fe_t *f = ctx;
  f->done++;
  f->done_on_loop = pthread_equal(pthread_self(), loop_thread);
}

static const ox_infer_ops_t fe_ops = {.decode = fe_decode, .encode = fe_encode, .done = fe_done};

/* Submits one request as set up by setup() and runs the loop's tasks until it is done. */
static fe_t run_one(void (*setup)(fe_t *), int cancel_first) {
  fe_t res;
  memset(&res, 0, sizeof res);
  ox_infer_call_t *call = NULL;
  const char *why = NULL;
  CHECK_INT(ox_infer_create(model, sizeof(fe_t), &call, &why), 0);
  if (!call) return res;
  fe_t *f = ox_infer_ctx(call);
  f->call = call;
  f->dtype = OX_DT_FP32;
  if (setup) setup(f);
  if (cancel_first) ox_infer_cancel(call);
  ox_infer_env_t env = {.pool = pool, .features = NULL, .loop = loop, .ops = &fe_ops};
  CHECK_INT(ox_infer_submit(call, &env, &why), 0);
  /* This thread is the loop's: it runs the posted completion (generous bound: 10 s). */
  for (int i = 0; i < 10000 && !f->done; i++) {
    ox_loop_run_pending(loop);
    if (!f->done) usleep(1000);
  }
  res = *f;
  CHECK_INT(res.done, 1);
  if (!res.done) return res; /* still running somewhere: leaked rather than freed under it */
  ox_infer_release(call);
  return res;
}

TEST(test_setup) {
  const char *dir = getenv("ONNXD_TEST_MODELS");
  CHECK(dir && *dir);
  if (!dir || !*dir) exit(1);
  char err[256] = "";
  ox_runtime_opts_t o = {1, 1, 0};
  CHECK_INT(ox_runtime_init(&o, err, sizeof err), 0);
  CHECK_INT(ox_repo_open(dir, &repo, err, sizeof err), 0);
  CHECK_INT(ox_repo_find(repo, ox_slice("identity_fp32", 13), ox_slice("", 0), &model), 0);
  if (!model) exit(1);
  ox_model_state_t *st = calloc(1, sizeof *st);
  CHECK_INT(ox_model_config_load(dir, model, 1, &st->cfg, err, sizeof err), 0);
  CHECK_INT(ox_pool_create(1, 16, &pool), 0);
  CHECK_INT(ox_batcher_create(model, &st->cfg.sched, pool, &st->batcher), 0);
  model->app = st;
  CHECK_INT(ox_batch_timer_start(), 0);
  CHECK_INT(ox_loop_create(&loop), 0);
  loop_thread = pthread_self();
}

/* A request value made by hand runs: the output is the identity of the input, read from ORT's
 * memory in encode on a worker; done comes on the loop thread. */
TEST(test_run) {
  fe_t f = run_one(NULL, 0);
  CHECK_INT(f.status, 0);
  CHECK_INT(f.decoded, 1);
  CHECK_INT(f.encoded, 1);
  CHECK_INT(f.done, 1);
  CHECK(f.decode_off_loop);
  CHECK(f.encode_off_loop);
  CHECK(f.done_on_loop);
  CHECK_STR(f.out_name, model->outputs[0].name);
  CHECK(f.out_n > 0);
  CHECK(f.out_n == f.input.count);
  CHECK_MEM(f.out, f.data, f.out_n * sizeof(float));
}

static void wrong_dtype(fe_t *f) {
  f->dtype = OX_DT_INT32;
}
static void decode_fails(fe_t *f) {
  f->decode_err = OX_EDEPTH;
}

/* Validation answers an OX_E* code with a message naming the input; nothing runs. */
TEST(test_invalid) {
  fe_t f = run_one(wrong_dtype, 0);
  CHECK_INT(f.status, OX_EINVALID);
  CHECK(strstr(f.msg, "datatype INT32 does not match the model's FP32") != NULL);
  CHECK_INT(f.encoded, 1);
  CHECK_INT(f.done, 1);
}

/* The front end's decode error reaches the response as it was given. */
TEST(test_decode_error) {
  fe_t f = run_one(decode_fails, 0);
  CHECK_INT(f.status, OX_EDEPTH);
  CHECK_STR(f.msg, "no such thing");
  CHECK_INT(f.done, 1);
}

/* Cancelled before a worker took it: never decoded, answered OX_ECANCELLED. */
TEST(test_cancel_before_decode) {
  fe_t f = run_one(NULL, 1);
  CHECK_INT(f.decoded, 0);
  CHECK_INT(f.status, OX_ECANCELLED);
  CHECK_INT(f.encoded, 1);
  CHECK_INT(f.done, 1);
}

TEST(test_teardown) {
  ox_pool_destroy(pool);
  ox_batch_timer_stop();
  ox_model_state_t *st = model->app;
  ox_batcher_destroy(st->batcher);
  ox_model_config_free(&st->cfg);
  free(st);
  model->app = NULL;
  ox_loop_run_pending(loop);
  ox_loop_destroy(loop);
  ox_repo_close(repo);
  ox_runtime_shutdown();
}

TEST_MAIN(T(test_setup), T(test_run), T(test_invalid), T(test_decode_error),
          T(test_cancel_before_decode), T(test_teardown))
