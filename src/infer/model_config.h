/* model_config.h: a model's optional DIR/<model>/config.json (or Triton's config.pbtxt), with
 * Triton's names. config.pbtxt is read when there is no config.json: protobuf text format
 * (proto/pbtxt.h), turned into Triton's JSON form and read by the same code, so the two accept
 * the same fields. Triton's fields besides those below: "platform" ("onnxruntime_onnx") and
 * "backend" ("onnxruntime"); "input"/"output" ([{name, data_type, dims}], checked against the
 * model; dims without the batch dimension when max_batch_size > 0; "reshape" refused; an
 * output's "label_filename": a file in the model's directory, one class label per line, read
 * at load (at most 16 MiB, valid UTF-8; missing: the load fails) and used by the
 * classification extension, infer/classify.h);
 * "instance_group" ([{count, kind KIND_CPU|KIND_AUTO}], counts summed; KIND_GPU refused);
 * "version_policy" ({"latest": {"num_versions": N}}, {"all": {}},
 * {"specific": {"versions": [..]}}); "dynamic_batching.default_queue_policy" (max_queue_size,
 * default_timeout_microseconds, timeout_action REJECT); fields that change nothing onnxd does
 * (optimization, parameters, model_transaction_policy, response_cache, ...) are logged and
 * ignored; fields whose semantics onnxd lacks (sequence_batching, ensemble_scheduling,
 * priority levels, batch_input, ...) are refused.
 *
 *   {
 *     "max_batch_size": 32,                      rows merged into one run (0: no merging)
 *     "dynamic_batching": {
 *       "max_queue_delay_microseconds": 500,     how long a batch may wait to grow
 *       "preferred_batch_size": [8, 16],         run at once when a batch reaches one of these
 *       "max_queue_size": 256,                   waiting requests; beyond: 503 (0: unbounded)
 *       "default_timeout_microseconds": 0        queue deadline when a request sets none
 *     },
 *     "instance_count": 2,                       concurrent runs of the model
 *     "model_warmup": [{"name": "w", "batch_size": 1, "count": 1,
 *                       "inputs": {"input": {"data_type": "TYPE_FP32", "dims": [3, 224, 224],
 *                                            "zero_data": true}}}]   (or "random_data": true,
 *                                            or "input_data_file": "x.bin" under warmup/)
 *     "image_inputs": {                          model inputs sent as JPEG/PNG files
 *       "input": {"decode": "rgb",               rgb | bgr | gray (PIL convert("RGB") / ("L"))
 *                 "resize": {"shorter_side": 256, "filter": "bilinear"},
 *                                                or {"height": H, "width": W, "filter": ..};
 *                                                filters: nearest bilinear bicubic box hamming
 *                                                lanczos (Pillow's); absent: no resize
 *                 "center_crop": [224, 224],     [height, width] (or one number)
 *                 "scale": 255.0,                x / scale (default 255 for FP32/FP16, as
 *                                                ToTensor; 1 for UINT8)
 *                 "mean": [0.485, 0.456, 0.406], then (x - mean) / std per channel
 *                 "std": [0.229, 0.224, 0.225],  (defaults 0 and 1)
 *                 "layout": "NCHW",              NCHW | NHWC
 *                 "dtype": "FP32",               FP32 | FP16 | UINT8: the model input's
 *                 "exif_orientation": false,     true: apply the JPEG's EXIF orientation
 *                 "max_pixels": 40000000}        decoded pixels allowed (capped by
 *     },                                         --image-max-pixels)
 *     "feature_view": {                          the server assembles one model input
 *       "input": "features",                     FP32 [N, width] input it fills
 *       "columns": [{"raw": "amount"},           1 value: request input or parameter "amount"
 *                   {"velocity": "user_id"},     8 velocity features of "user:<user_id>"
 *                   {"row": "user_id", "table": "profile", "width": 4, "default": 0.0}],
 *                                                4 values of stored row "profile:<user_id>"
 *       "mandatory": false,                      true: 503 instead of defaults when a tier fails
 *       "deadline_us": 20000                     time for the remote lookups, from receipt
 *     }
 *   }
 *
 * Defaults when absent: merging (max_batch_size 32, delay 0, so requests merge only when they
 * queue behind busy instances and no latency is added) when every input and output has a
 * dynamic first dimension, else none; instance_count = the number of inference threads.
 * Unknown keys and out-of-range values are errors naming the key.
 */
#ifndef OX_INFER_MODEL_CONFIG_H
#define OX_INFER_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "image/image.h"
#include "infer/classify.h"
#include "runtime/runtime.h"
#include "sched/batcher.h"

/* One "model_warmup" entry, as parsed (run by server/models.c when the model is loaded). */
typedef struct {
  char name[64];
  uint32_t batch_size;
  uint32_t count;
  size_t num_inputs;
  struct {
    char name[128];
    ox_dtype_t dtype;
    int rank;
    int64_t dims[OX_RT_MAX_RANK];
    int kind; /* 0 zero, 1 random, 2 file */
    char file[256];
  } inputs[8];
} ox_warmup_t;

/* One column group of a feature view (see infer/features_view.h for what each computes). */
typedef enum { OX_FCOL_RAW, OX_FCOL_VELOCITY, OX_FCOL_ROW } ox_fcol_kind_t;

#define OX_FVIEW_MAX_COLUMNS 64
#define OX_FVIEW_MAX_WIDTH 4096 /* floats per assembled row */
#define OX_FVIEW_MAX_ROW 1024   /* floats of one stored row column */

typedef struct {
  ox_fcol_kind_t kind;
  char name[64];  /* raw: input or parameter name; velocity/row: the key parameter */
  char table[64]; /* row: table name ([A-Za-z0-9_.-]) */
  char etype[64]; /* velocity: entity type, name without its "_id" suffix ("user") */
  uint32_t width; /* floats this column contributes: 1, 8 or the row's width */
  float dflt;     /* row: value for missing or unavailable values */
} ox_fcol_t;

typedef struct {
  int enabled;
  char input[128];  /* the model input assembled */
  size_t input_idx; /* its index in the model's inputs */
  ox_fcol_t *cols;  /* owned (malloc) */
  size_t num_cols;
  uint32_t width; /* sum of the columns' widths */
  int mandatory;
  uint64_t deadline_us; /* default 20000 */
} ox_feature_view_t;

/* An output's label file: its name as configured and its lines (infer/classify.h). */
typedef struct {
  char file[256]; /* "label_filename", empty: none */
  ox_labels_t labels;
} ox_output_labels_t;

/* Which versions of a model are served ("version_policy"): kind 0 latest num_versions, 1 all,
 * 2 specific (versions: owned, malloc, num_specific values). */
typedef struct {
  int kind; /* 0 latest, 1 all, 2 specific */
  uint32_t num_versions;
  int64_t *versions;
  size_t num_specific;
} ox_version_policy_t;

/* One "image_inputs" entry: model input input_idx takes JPEG/PNG files (BYTES [N], one file per
 * row) and the server turns each into a row of the model's tensor with spec (image/image.h). */
#define OX_MAX_IMAGE_INPUTS 8
typedef struct {
  char input[128];
  size_t input_idx;
  ox_img_spec_t spec;
} ox_image_input_t;

typedef struct {
  ox_sched_config_t sched;
  ox_version_policy_t version_policy; /* default latest 1 */
  ox_feature_view_t view;             /* "feature_view" (view.enabled 0 when absent) */
  int from_file;                      /* a config.json or config.pbtxt (or an override) was read */
  ox_warmup_t *warmup;                /* owned (malloc) */
  size_t num_warmup;
  ox_image_input_t *images; /* "image_inputs" (owned, malloc); num_images 0 when absent */
  size_t num_images;
  /* Classification labels per model output ("output": [{"label_filename"}]), read when the
   * model loads: owned (malloc), num_labels = the model's outputs, an entry's file empty when
   * it has none; NULL/0 when no output has one. */
  ox_output_labels_t *labels;
  size_t num_labels;
} ox_model_config_t;

/* Reads repo_dir/<model>/config.json if present and fills cfg with it and the defaults.
 * Returns 0, or OX_EINVALID with a one-line reason in err ("config.json: unknown key 'x'"). */
int ox_model_config_load(const char *repo_dir, const ox_model_t *m, int infer_threads,
                         ox_model_config_t *cfg, char *err, size_t errcap);
/* ox_model_config_load with the configuration taken from override_json[0..override_len) (a
 * JSON object, e.g. the "config" parameter of a repository load request) when it is non-NULL;
 * errors then start with "config:". */
int ox_model_config_load_text(const char *repo_dir, const ox_model_t *m, int infer_threads,
                              const char *override_json, size_t override_len,
                              ox_model_config_t *cfg, char *err, size_t errcap);
/* ox_model_config_load_text reading model_dir/config.json (else config.pbtxt) instead of
 * repo_dir/<model>/...; a "name" in the file must equal check_name (NULL: not checked, for
 * single-model mode, where the directory is not named after the model). */
int ox_model_config_load_dir(const char *model_dir, const char *check_name, const ox_model_t *m,
                             int infer_threads, const char *override_json, size_t override_len,
                             ox_model_config_t *cfg, char *err, size_t errcap);
void ox_model_config_free(ox_model_config_t *cfg);

/* Reads only the version policy of repo_dir/<name>/ (config.json, else config.pbtxt; latest 1
 * when neither sets one), or of override_json when non-NULL. Returns 0 with *p filled (free
 * with ox_version_policy_free), or OX_EINVALID with a reason in err, or OX_ENOMEM. */
int ox_version_policy_read(const char *repo_dir, const char *name, const char *override_json,
                           size_t override_len, ox_version_policy_t *p, char *err, size_t errcap);
/* ox_version_policy_read of model_dir's own files; check_name as in ox_model_config_load_dir. */
int ox_version_policy_read_dir(const char *model_dir, const char *check_name,
                               const char *override_json, size_t override_len,
                               ox_version_policy_t *p, char *err, size_t errcap);
void ox_version_policy_free(ox_version_policy_t *p);
/* The versions p serves among available[0..n) (ascending): written ascending into out (room for
 * n); returns their number. */
size_t ox_version_policy_select(const ox_version_policy_t *p, const int64_t *available, size_t n,
                                int64_t *out);
/* Appends the effective configuration as JSON (GET /v2/models/{m}/config). */
int ox_model_config_json(ox_buf_t *out, const ox_model_t *m, const ox_model_config_t *cfg);

#endif
