/* runtime.h: the ONNX Runtime adapter and the model repository.
 *
 * The only module that includes onnxruntime_c_api.h. OrtStatus never escapes: every ORT error
 * becomes an onnxd error code plus a message (no file paths) and the status is released on the
 * spot. One OrtEnv with global thread pools (CreateEnvWithGlobalThreadPools), every session
 * created with DisablePerSessionThreads, so the whole process has one intra-op pool.
 *
 * Repository layout: DIR/<model>/<version>/model.onnx, version a positive decimal integer,
 * model names [A-Za-z0-9_.-]+ (not "." or ".."), optional DIR/<model>/config.json (not read
 * here: infer/model_config.c parses it, server/models.c runs its warm-up). Model files are
 * opened only when they are regular files whose real path lies inside the repository (no
 * symlink escapes). Single-model mode (ox_repo_open_single): DIR is one model's directory.
 *
 * Thread safety: after ox_repo_open returns, the repository is read-only; ox_model_run may be
 * called concurrently from any number of threads on the same model (ORT sessions allow it).
 */
#ifndef OX_RUNTIME_H
#define OX_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/slice.h"

#define OX_RT_MAX_RANK 16

typedef struct {
  int intra_op_threads; /* global intra-op pool size (including the calling thread); >= 1 */
  int inter_op_threads; /* global inter-op pool size; >= 1 */
  int allow_spinning;   /* 0: pool threads sleep when idle (the right default on few cores) */
} ox_runtime_opts_t;

/* Creates the process-wide ORT environment, with ONNX Runtime's telemetry off (sets
 * ORT_DISABLE_TELEMETRY=1 in the process environment: call it before starting other threads).
 * Call once before ox_repo_open. Returns 0, or OX_ERUNTIME with a message in err. */
int ox_runtime_init(const ox_runtime_opts_t *opts, char *err, size_t errcap);
/* Releases the environment (after every repository is closed). */
void ox_runtime_shutdown(void);
/* ONNX Runtime library version string ("1.30.0"), valid after init (static). */
const char *ox_runtime_version(void);
/* API version of the header onnxd was compiled with (ORT_API_VERSION). */
int ox_runtime_header_api(void);

typedef struct {
  char *name;                   /* owned by the model */
  ox_dtype_t dtype;             /* OX_DT_INVALID if ORT's type has no OIP datatype */
  int rank;                     /* -1: rank unknown (no shape in the model) */
  int64_t dims[OX_RT_MAX_RANK]; /* -1 for a dynamic or symbolic dimension */
} ox_tensor_info_t;

typedef struct ox_model {
  char *name; /* owned */
  int64_t version;
  ox_tensor_info_t *inputs; /* owned, in the session's input order */
  size_t num_inputs;
  ox_tensor_info_t *outputs; /* owned, in the session's output order */
  size_t num_outputs;
  struct ox_model_impl *impl; /* ORT session and names; private to runtime */
  void *app;                  /* the application's per-model state (scheduler, statistics);
                                 NULL after load, set and freed by the application */
} ox_model_t;

typedef struct ox_repo ox_repo_t;

/* Scans dir and loads every version of every model. A model version that fails to load (not
 * ONNX, unsupported operator, non-tensor inputs or outputs, bad name) is logged with the
 * reason and left out; the repository still opens. Returns 0, or an error with a one-line
 * reason in err when dir itself is unusable (missing, not a directory, unreadable).
 * *out is owned by the caller: ox_repo_close. */
int ox_repo_open(const char *dir, ox_repo_t **out, char *err, size_t errcap);
void ox_repo_close(ox_repo_t *repo);
/* Like ox_repo_open; load 0 only scans (no version loaded: explicit model control). */
int ox_repo_open_ex(const char *dir, int load, ox_repo_t **out, char *err, size_t errcap);
/* How a directory is laid out, for --model-name (ox_repo_layout). */
typedef enum {
  OX_REPO_EMPTY,     /* none of the below */
  OX_REPO_BARE,      /* DIR/model.onnx: one model's directory, the model is version 1 */
  OX_REPO_VERSIONS,  /* DIR/<n>/model.onnx: one model's directory with version directories */
  OX_REPO_MODELS,    /* DIR/<model>/<n>/model.onnx: a repository of model directories */
  OX_REPO_AMBIGUOUS, /* both DIR/model.onnx and DIR/<n>/model.onnx */
} ox_repo_layout_t;
/* Looks at dir's entries (no file is opened; a top-level <n>/model.onnx counts as a version,
 * even where a model could be named <n>). An unreadable dir is OX_REPO_EMPTY. */
ox_repo_layout_t ox_repo_layout(const char *dir);
/* Single-model mode: opens dir as the directory of one model served as name (a checked model
 * name): DIR/model.onnx (version 1; its version directory, where external data must lie, is DIR)
 * or DIR/<n>/model.onnx; config and warm-up files are DIR's own. Loads like ox_repo_open (a
 * version that fails is logged and left out). 0, or OX_EINVALID with err naming dir when it
 * holds neither layout or both (ox_repo_layout), or an error as ox_repo_open's.
 * *out is owned by the caller: ox_repo_close. */
int ox_repo_open_single(const char *dir, const char *name, ox_repo_t **out, char *err,
                        size_t errcap);
/* The directory of model (its versions, config and warmup/ files) into out (cap bytes):
 * <root>/<model>, or in single-model mode <root> itself. 0; OX_EINVALID when model is not a
 * model name (so no path leaves the repository) or, in single-model mode, not the model's
 * name; -ENAMETOOLONG. */
int ox_repo_model_dir(const ox_repo_t *repo, const char *model, char *out, size_t cap);
/* Real path of the repository directory (borrowed: valid until ox_repo_close). */
const char *ox_repo_root(const ox_repo_t *repo);
/* Single-model mode: the model's name (borrowed: valid until ox_repo_close), whose directory
 * is ox_repo_root; NULL for a repository of model directories. */
const char *ox_repo_single(const ox_repo_t *repo);
/* The loaded versions now belong to the caller (found with ox_repo_find before this call,
 * freed with ox_repo_model_free); the repository forgets them and lists no model. */
void ox_repo_disown(ox_repo_t *repo);
void ox_repo_model_free(ox_model_t *m);
/* The valid version directories of model name on disk now, ascending: *out malloc'd (free),
 * *n of them. 0, OX_EINVALID (bad name), OX_ENOT_FOUND (no such model directory), OX_ENOMEM. */
int ox_repo_disk_versions(const ox_repo_t *repo, const char *name, int64_t **out, size_t *n);
/* Loads one version from disk with the checks of ox_repo_open (any thread; the repository is
 * not changed). *out owned by the caller (ox_repo_model_free). 0 or an error with err. */
int ox_repo_load_version(const ox_repo_t *repo, const char *name, int64_t version, ox_model_t **out,
                         char *err, size_t errcap);

/* Finds a model version. version: empty slice for the highest loaded version, else a positive
 * decimal integer. Returns 0 with *out (borrowed: valid until ox_repo_close), OX_ENOT_FOUND for
 * an unknown model, unknown version or a version string that is not a positive integer. */
int ox_repo_find(const ox_repo_t *repo, ox_slice_t name, ox_slice_t version, ox_model_t **out);
/* Number of distinct model names, and the i-th (sorted by name) model's loaded versions in
 * ascending order: fills up to max entries of versions, returns the count, and its name. */
size_t ox_repo_num_models(const ox_repo_t *repo);
const char *ox_repo_model_name(const ox_repo_t *repo, size_t i);
/* Loaded versions of the named model, ascending; returns the number (0 if unknown). */
size_t ox_repo_versions(const ox_repo_t *repo, ox_slice_t name, int64_t *versions, size_t max);

/* One input for a run. For every dtype except BYTES, data points to nbytes of tensor memory,
 * aligned for the element type, that stays valid and unchanged until ox_model_run returns
 * (zero-copy: wrapped with CreateTensorWithDataAsOrtValue). For BYTES, strings points to
 * count slices (copied into an ORT string tensor). */
typedef struct {
  ox_dtype_t dtype;
  int rank;
  const int64_t *shape;
  const void *data;
  size_t nbytes;
  const ox_slice_t *strings;
  uint64_t count; /* element count (product of shape) */
} ox_tensor_in_t;

/* One output of a run. For every dtype except BYTES, data/nbytes are ORT's own output memory
 * (no copy), valid until ox_tensor_out_release. For BYTES, strings is an array of count
 * slices into one block. */
typedef struct {
  ox_dtype_t dtype;
  int rank;
  int64_t shape[OX_RT_MAX_RANK];
  uint64_t count;
  const void *data;
  size_t nbytes;
  ox_slice_t *strings;
  void *value_;    /* private: OrtValue* */
  void *strblock_; /* private */
} ox_tensor_out_t;

/* Opaque per-run control (wraps OrtRunOptions) so another thread can terminate a run. */
typedef struct ox_run_ctl ox_run_ctl_t;
ox_run_ctl_t *ox_run_ctl_create(void);
void ox_run_ctl_terminate(ox_run_ctl_t *ctl); /* thread-safe; the run returns OX_ERUNTIME */
void ox_run_ctl_destroy(ox_run_ctl_t *ctl);

/* Runs the model. inputs: exactly m->num_inputs entries in m->inputs order (already validated
 * by the caller against m->inputs). out_idx: indices into m->outputs of the outputs wanted,
 * n_out of them; outs receives n_out results in that order. ctl may be NULL.
 * Returns 0, or OX_ERUNTIME / OX_ENOMEM / OX_EINVALID (ORT rejected an input, e.g. a
 * shape its kernels refuse) with a message in err. On error nothing needs releasing. */
int ox_model_run(ox_model_t *m, const ox_tensor_in_t *inputs, const size_t *out_idx, size_t n_out,
                 ox_tensor_out_t *outs, ox_run_ctl_t *ctl, char *err, size_t errcap);
/* Releases one output's ORT memory. Safe on a zeroed struct and from any thread. */
void ox_tensor_out_release(ox_tensor_out_t *out);

#endif
