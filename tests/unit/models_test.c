/* models_test.c: the live model set (infer/models.h): loads and unloads through the manager
 * thread, lookups with references, and versions swapped while threads look them up (run it
 * under TSan: make test SANITIZE=thread ONNXD_SUITES=unit). Needs ONNXD_TEST_MODELS. */
#include "infer/models.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "infer/infer.h"
#include "test.h"

static ox_repo_t *repo;
static ox_pool_t *pool;
static ox_models_t *mgr;
static const char *dir;

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int pending, last_rc, failures;
  char msg[512];
} waiter_t;

static waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, ""};

static void cb(void *arg, int rc, const char *msg) {
  waiter_t *x = arg;
  pthread_mutex_lock(&x->mu);
  x->pending--;
  x->last_rc = rc;
  x->failures += rc != 0;
  snprintf(x->msg, sizeof x->msg, "%s", msg);
  pthread_cond_signal(&x->cv);
  pthread_mutex_unlock(&x->mu);
}

static void wait_all(void) {
  pthread_mutex_lock(&w.mu);
  while (w.pending) pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);
}

static int op(int unload, const char *name) {
  pthread_mutex_lock(&w.mu);
  w.pending++;
  pthread_mutex_unlock(&w.mu);
  int rc = unload ? ox_models_unload(mgr, name, cb, &w)
                  : ox_models_load(mgr, name, NULL, 0, NULL, cb, &w);
  if (rc) {
    pthread_mutex_lock(&w.mu);
    w.pending--;
    pthread_mutex_unlock(&w.mu);
  }
  return rc;
}

static int sync_op(int unload, const char *name) {
  if (op(unload, name)) return -1;
  wait_all();
  return w.last_rc;
}

#define S(s) ox_slice(s, strlen(s))

TEST(test_setup) {
  dir = getenv("ONNXD_TEST_MODELS");
  CHECK(dir && *dir);
  if (!dir || !*dir) exit(1);
  char err[256] = "";
  ox_runtime_opts_t o = {1, 1, 0};
  CHECK_INT(ox_runtime_init(&o, err, sizeof err), 0);
  CHECK_INT(ox_repo_open_ex(dir, 0, &repo, err, sizeof err), 0); /* explicit: nothing loaded */
  CHECK_INT(ox_pool_create(2, 64, &pool), 0);
  CHECK_INT(ox_batch_timer_start(), 0);
  ox_models_opts_t mo = {.repo = repo, .pool = pool, .repo_dir = dir, .infer_threads = 2};
  CHECK_INT(ox_models_open(&mo, &mgr), 0);
  if (!mgr) exit(1);
}

/* Nothing is served before a load; unknown and not-loaded models say which. */
TEST(test_load_unload) {
  ox_model_t *m = NULL;
  char why[256];
  CHECK_INT(ox_models_get(mgr, S("identity_fp32"), S(""), &m, why, sizeof why), OX_ENOT_FOUND);
  CHECK(strstr(why, "is not loaded") != NULL); /* on disk, not loaded */
  CHECK_INT(ox_models_get(mgr, S("nosuch"), S(""), &m, why, sizeof why), OX_ENOT_FOUND);
  CHECK_STR(why, "unknown model");
  CHECK_INT(sync_op(0, "identity_fp32"), 0);
  CHECK_INT(ox_models_get(mgr, S("identity_fp32"), S(""), &m, why, sizeof why), 0);
  CHECK(m != NULL);
  if (m) CHECK_STR(m->name, "identity_fp32");
  CHECK_INT(sync_op(1, "identity_fp32"), 0);
  /* Unloaded: new lookups fail at once, the reference held still works. */
  ox_model_t *m2 = NULL;
  CHECK_INT(ox_models_get(mgr, S("identity_fp32"), S(""), &m2, why, sizeof why), OX_ENOT_FOUND);
  CHECK(strstr(why, "is not loaded") != NULL);
  if (m) CHECK_STR(m->name, "identity_fp32");
  ox_models_put(m);
  CHECK_INT(sync_op(0, "nosuch"), OX_EINVALID);
  CHECK_INT(sync_op(0, "broken"), OX_EINVALID);
  CHECK(strstr(w.msg, "broken") != NULL);
}

/* Several versions; an explicit version and the highest. */
TEST(test_versions) {
  CHECK_INT(sync_op(0, "versioned"), 0);
  ox_model_t *m = NULL;
  char why[256];
  CHECK_INT(ox_models_get(mgr, S("versioned"), S("1"), &m, why, sizeof why), 0);
  if (m) CHECK_INT(m->version, 1);
  ox_models_put(m);
  CHECK_INT(ox_models_get(mgr, S("versioned"), S(""), &m, why, sizeof why), 0);
  if (m) CHECK(m->version > 1);
  ox_models_put(m);
  CHECK_INT(ox_models_get(mgr, S("versioned"), S("77"), &m, why, sizeof why), OX_ENOT_FOUND);
  CHECK_INT(ox_models_get(mgr, S("versioned"), S("01"), &m, why, sizeof why), OX_ENOT_FOUND);
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_models_index_json(mgr, 1, &b), 0);
  static const char want[] = "\"name\":\"versioned\",\"version\":\"1\",\"state\":\"READY\"";
  CHECK(b.len && memmem(b.data, b.len, want, sizeof want - 1) != NULL);
  ox_buf_free(&b);
}

static atomic_int stop_readers;
static atomic_long lookups, lookup_errors;

static void *reader(void *arg) {
  (void)arg;
  while (!atomic_load(&stop_readers)) {
    ox_model_t *m = NULL;
    char why[256];
    if (ox_models_get(mgr, S("identity_fp32"), S(""), &m, why, sizeof why) != 0) {
      atomic_fetch_add(&lookup_errors, 1);
      continue;
    }
    /* The version stays whole while referenced, whatever the manager does meanwhile. */
    ox_model_state_t *st = m->app;
    if (!st || st->model != m || strcmp(m->name, "identity_fp32"))
      atomic_fetch_add(&lookup_errors, 1);
    ox_models_put(m);
    atomic_fetch_add(&lookups, 1);
  }
  return NULL;
}

/* Reloads while four threads look the model up: every lookup succeeds. Two loads queued at
 * once are both answered. */
TEST(test_swap_under_lookups) {
  CHECK_INT(sync_op(0, "identity_fp32"), 0);
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, reader, NULL);
  ox_model_t *first = NULL;
  char why[256];
  CHECK_INT(ox_models_get(mgr, S("identity_fp32"), S(""), &first, why, sizeof why), 0);
  for (int i = 0; i < 20; i++) {
    CHECK_INT(op(0, "identity_fp32"), 0);
    CHECK_INT(op(0, "identity_fp32"), 0);
    wait_all();
  }
  atomic_store(&stop_readers, 1);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  CHECK_INT(atomic_load(&lookup_errors), 0);
  CHECK(atomic_load(&lookups) > 0);
  CHECK_INT(w.failures, 2); /* the two failed loads of test_load_unload */
  ox_model_t *now = NULL;
  CHECK_INT(ox_models_get(mgr, S("identity_fp32"), S(""), &now, why, sizeof why), 0);
  CHECK(now != first); /* swapped; first is still valid while referenced */
  if (first) CHECK_STR(first->name, "identity_fp32");
  ox_models_put(now);
  ox_models_put(first);
}

TEST(test_shutdown) {
  ox_pool_destroy(pool);
  ox_models_stop(mgr);
  ox_models_destroy(mgr);
  ox_batch_timer_stop();
  ox_repo_close(repo);
  ox_runtime_shutdown();
}

TEST_MAIN(T(test_setup), T(test_load_unload), T(test_versions), T(test_swap_under_lookups),
          T(test_shutdown))
