/* ort_linked.c: ONNX Runtime as the normal build finds it: linked (-lonnxruntime), located by
 * the dynamic loader through the executable's rpath (or the system's library path). The
 * single-file build replaces this file with ort_embed.c (see the Makefile's single-file part).
 */
#include <stddef.h>

#include "runtime/rt_ort.h"

const OrtApiBase *ox_ort_api_base(char *err, size_t errcap) {
  (void)err;
  (void)errcap;
  return OrtGetApiBase();
}

const char *ox_ort_origin(void) {
  return "linked";
}
