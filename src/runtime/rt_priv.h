/* rt_priv.h: what the files of src/runtime/ share with each other (and with
 * tests/unit/runtime_test.c), without ONNX Runtime's header.
 *
 * repo.c does the file-system half of loading (scan, name checks, containment, reading the
 * bytes) and hands each model file to ox_rt_model_load, which does the ORT half (model.c).
 * Not part of the module's API: the server codes against runtime.h only.
 */
#ifndef OX_RUNTIME_RT_PRIV_H
#define OX_RUNTIME_RT_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"

/* Creates a session from a model's bytes and reads its inputs and outputs into a new ox_model_t.
 * data/len: the model file's contents (borrowed; ORT parses them during the call and keeps no
 * reference). dir: absolute real path of the version directory, where ORT looks for external
 * weights (NULL: none). name is copied. Returns 0 with *out (owned: ox_rt_model_free), or
 * OX_ERUNTIME / OX_ENOMEM / OX_EINVALID (a non-tensor or unsupported input or output) with a
 * one-line reason in err that names no file path. */
int ox_rt_model_load(const char *name, int64_t version, const void *data, size_t len,
                     const char *dir, ox_model_t **out, char *err, size_t errcap);
/* Frees a model from ox_rt_model_load and its session. NULL is a no-op. */
void ox_rt_model_free(ox_model_t *m);

/* ORT objects onnxd currently holds that outlive one call: sessions, run options, input and
 * output OrtValues. 0 once every repository is closed, every output released and every run
 * control destroyed; tests check it because LeakSanitizer cannot see into ORT (see
 * tests/lsan.supp). */
long ox_rt_live_objects(void);

/* 1 once ox_runtime_init has succeeded (and ox_runtime_shutdown has not run since). */
int ox_rt_ready(void);

/* Copies msg into dst (capacity cap, always NUL-terminated when cap > 0) as one line fit to
 * show to a client: control bytes become spaces, a token that starts with '/' (an absolute
 * path) becomes "<path>", and a source location ("/x/y.cc:123", "y.h:45") is dropped with its
 * trailing space. Returns dst. */
char *ox_rt_sanitize_message(char *dst, size_t cap, const char *msg);

/* The highest C API version an ONNX Runtime version string promises: N for "1.N", "1.N.x" or
 * "1.N.x-suffix" (ORT's release 1.N provides C API versions 1..N); -1 for any other form.
 * ox_runtime_init refuses a library whose N is below the header's ORT_API_VERSION. */
int ox_ort_version_api(const char *version);

#endif
