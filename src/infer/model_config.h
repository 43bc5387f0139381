/* model_config.h: a model's optional DIR/<model>/config.json, with Triton's names.
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

typedef struct {
  ox_sched_config_t sched;
  ox_feature_view_t view; /* "feature_view" (view.enabled 0 when absent) */
  int from_file;          /* a config.json was read */
  ox_warmup_t *warmup;    /* owned (malloc) */
  size_t num_warmup;
} ox_model_config_t;

/* Reads repo_dir/<model>/config.json if present and fills cfg with it and the defaults.
 * Returns 0, or OX_EINVALID with a one-line reason in err ("config.json: unknown key 'x'"). */
int ox_model_config_load(const char *repo_dir, const ox_model_t *m, int infer_threads,
                         ox_model_config_t *cfg, char *err, size_t errcap);
void ox_model_config_free(ox_model_config_t *cfg);
/* Appends the effective configuration as JSON (GET /v2/models/{m}/config). */
int ox_model_config_json(ox_buf_t *out, const ox_model_t *m, const ox_model_config_t *cfg);

#endif
