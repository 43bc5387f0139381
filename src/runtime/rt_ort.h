/* rt_ort.h: ONNX Runtime glue shared by runtime.c, model.c and run.c (private to src/runtime/).
 *
 * The only header in onnxd that includes onnxruntime_c_api.h. Holds the process-wide OrtApi,
 * OrtEnv and CPU memory info set by ox_runtime_init, the status-to-error conversion, the
 * element type <-> datatype table, and the private parts of ox_model_t and ox_run_ctl_t.
 */
#ifndef OX_RUNTIME_RT_ORT_H
#define OX_RUNTIME_RT_ORT_H

#include <onnxruntime_c_api.h>

#include "core/dtype.h"
#include "runtime/rt_priv.h"

/* ONNX Runtime's entry point (OrtGetApiBase). The normal build links the library
 * (ort_linked.c); the single-file build carries it and loads it from memory on the first call
 * (ort_embed.c, after checking its SHA-256). Returns the API base (static, valid for the life
 * of the process), or NULL with a one-line reason in err (err may be NULL). Thread-safe: the
 * load happens once, and a failure is final. */
const OrtApiBase *ox_ort_api_base(char *err, size_t errcap);
/* How the library was found, for the start-up log line: "linked" or "embedded, ..." (static
 * string; meaningful after ox_ort_api_base succeeded). */
const char *ox_ort_origin(void);
/* Set by ox_runtime_init, cleared by ox_runtime_shutdown; read-only in between. */
extern const OrtApi *ox_ort;
extern OrtEnv *ox_ort_env;
extern OrtMemoryInfo *ox_ort_cpu; /* CPU memory info for zero-copy input tensors */

/* Turns st into an onnxd error and releases it. st NULL: returns 0 and leaves err alone.
 * Otherwise writes "<what>: <ORT message, sanitized>" into err (what may be NULL), logs the raw
 * message at debug level, and returns OX_EINVALID for ORT_INVALID_ARGUMENT, OX_ENOMEM when the
 * message reports an allocation failure, else OX_ERUNTIME. */
int ox_ort_status(OrtStatus *st, const char *what, char *err, size_t errcap);

/* Adjusts the count behind ox_rt_live_objects (atomic; any thread). */
void ox_rt_live_add(long delta);

/* ONNX element type <-> datatype; OX_DT_INVALID / ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED when
 * there is no counterpart. */
ox_dtype_t ox_ort_to_dtype(ONNXTensorElementDataType t);
ONNXTensorElementDataType ox_ort_from_dtype(ox_dtype_t dt);
/* ONNX's lower-case name of an element type ("float8e4m3fn"), for messages. Static string. */
const char *ox_ort_elem_name(ONNXTensorElementDataType t);

struct ox_model_impl {
  OrtSession *session;
  const char **input_names;  /* point into m->inputs[i].name; in session order */
  const char **output_names; /* point into m->outputs[i].name */
};

struct ox_run_ctl {
  OrtRunOptions *opts;
};

#endif
