/* models.h: the live model set and its manager: which model versions are served now, loading,
 * unloading and hot-swapping them while requests run.
 *
 * Design. Every loaded version (ox_model_t with its ox_model_state_t in m->app) is reference
 * counted. The live set holds one reference per served version; ox_models_get returns a
 * version with a reference of its own, which a request keeps until ox_infer_release and a
 * loop handler until it has answered (ox_models_put). Lookups take only the read side of a
 * rwlock, for the search and the increment. A load builds everything (ORT session, config,
 * batcher, warm-up) with no lock held, then takes the write side only to swap the entry's
 * version list: a request for a version being replaced gets the old or the new one, never an
 * error. When the last reference goes, the version is handed to the manager thread, which
 * waits until its batcher is idle, frees it and calls malloc_trim(0) so the memory goes back
 * to the system.
 *
 * Loads and unloads run on the manager thread, one at a time, in the order asked (so one
 * model's operations are serialised). A load queued while another load of the same model
 * (with no config override) is queued is answered with that load's outcome: it loads once.
 * Completion is reported through a callback on the manager thread.
 */
#ifndef OX_INFER_MODELS_H
#define OX_INFER_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"
#include "runtime/runtime.h"
#include "sched/pool.h"

typedef struct ox_models ox_models_t;

/* The states of the repository index (Triton's names). */
typedef enum { OX_MS_READY, OX_MS_UNAVAILABLE, OX_MS_LOADING, OX_MS_UNLOADING } ox_model_st_t;

typedef struct {
  ox_repo_t *repo;      /* borrowed, outlives the manager; its loaded versions are adopted */
  ox_pool_t *pool;      /* borrowed: batchers run on it */
  const char *repo_dir; /* borrowed: config and warm-up files */
  int infer_threads;
} ox_models_opts_t;

/* Called on the manager thread when a load or unload is over: rc 0, or an OX_E* code with msg
 * (NUL-terminated, valid during the call). */
typedef void (*ox_models_cb)(void *arg, int rc, const char *msg);

/* Creates the manager, adopts every version opts->repo loaded (configured, warmed up, served)
 * and starts its thread. 0 or OX_ENOMEM. */
int ox_models_open(const ox_models_opts_t *opts, ox_models_t **out);

/* Any thread: the version of name (empty version: the highest served) with a new reference
 * (release with ox_models_put). OX_ENOT_FOUND with a message in why (whycap bytes): unknown
 * model, model not loaded (with its reason), or unknown version. */
int ox_models_get(ox_models_t *mgr, ox_slice_t name, ox_slice_t version, ox_model_t **out,
                  char *why, size_t whycap);
/* Any thread: one more reference to m (from ox_models_get or another reference). */
void ox_models_ref(ox_model_t *m);
/* Any thread: drops a reference; the last one hands the version to the manager's thread. */
void ox_models_put(ox_model_t *m);

/* Every served version, by name then version, each with a reference: *out malloc'd (free it
 * after ox_models_put on each), *n of them. 0 or OX_ENOMEM. */
int ox_models_snapshot(ox_models_t *mgr, ox_model_t ***out, size_t *n);

/* Served versions of name, ascending: writes up to max, returns how many there are. */
size_t ox_models_versions(ox_models_t *mgr, const char *name, int64_t *out, size_t max);

/* Queues a load (or reload) of name from the repository. override: a config text to use
 * instead of the files (copied; NULL: files). dir: a directory laid out as a repository,
 * dir/<name>/<version>/model.onnx, whose versions replace the repository's (the path is
 * copied; the caller keeps the directory until cb, then removes it; NULL: the repository).
 * Config and warm-up files still come from the repository. cb(arg, ...) is called once, on
 * the manager thread (also when the manager closes first: OX_EUNAVAILABLE). 0, or OX_ENOMEM /
 * OX_EUNAVAILABLE (closing) and cb is not called. */
int ox_models_load(ox_models_t *mgr, const char *name, const char *override, size_t override_len,
                   const char *dir, ox_models_cb cb, void *arg);
/* Queues an unload of name: served versions leave the live set (new requests get 404), the
 * ones running finish; cb as above. */
int ox_models_unload(ox_models_t *mgr, const char *name, ox_models_cb cb, void *arg);

/* Appends the repository index as Triton's JSON array: every model directory on disk and every
 * model known, [{"name","version","state","reason"}]; ready_only: served versions only. */
int ox_models_index_json(ox_models_t *mgr, int ready_only, ox_buf_t *b);

/* Appends onnxd_model_loads_total{model,result}, onnxd_model_load_duration_seconds and
 * onnxd_model_state{model,version,state} in Prometheus text (model names are [A-Za-z0-9_.-]:
 * no escaping needed). 0 or OX_ENOMEM. */
int ox_models_metrics(ox_models_t *mgr, ox_buf_t *b);

/* Shutdown, after the worker pool has stopped: answers queued operations (OX_EUNAVAILABLE),
 * joins the thread, drops the live set's references and destroys every batcher (requests still
 * queued in one are failed: their answers go to the loops). Versions still referenced are
 * freed by ox_models_destroy. */
void ox_models_stop(ox_models_t *mgr);
/* After every reference is gone (loops' pending tasks run, listeners destroyed): frees it all. */
void ox_models_destroy(ox_models_t *mgr);

/* Asks every run in progress to stop (drain deadline passed). */
void ox_models_terminate_runs(ox_models_t *mgr);
/* 1 if a served version has a feature view. */
int ox_models_need_features(ox_models_t *mgr);

#endif
