/* onnx_extdata.h: finds every tensor of an ONNX model whose data lives in an external file, and
 * checks each such file before ONNX Runtime is allowed to open it.
 *
 * ORT resolves a TensorProto's external_data "location" relative to the version directory, so
 * a hostile model.onnx could name "../../etc/passwd", an absolute path, or a symlink leading out.
 * ox_onnx_extdata_scan walks the protobuf wire format once (ModelProto.graph, training_info,
 * functions -> GraphProto.initializer / sparse_initializer / node -> AttributeProto t, tensors,
 * sparse_tensor(s), g, graphs -> TensorProto.external_data / data_location), with an explicit
 * stack bounded at protobuf's own recursion limit, never recursing and never allocating.
 * ox_onnx_extdata_check then checks each location lexically and on the file system.
 *
 * The scanner is at least as strict as protobuf where it matters: a singular tensor field given
 * twice (which protobuf would merge) is refused, so no location/offset pairing can hide.
 */
#ifndef OX_RUNTIME_ONNX_EXTDATA_H
#define OX_RUNTIME_ONNX_EXTDATA_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define OX_ONNX_MAX_DEPTH 100 /* protobuf's default recursion limit */
#define OX_ONNX_MAX_LOCATION 4095

/* One tensor with external data. Slices borrow the model bytes given to the scan. */
typedef struct {
  ox_slice_t name;     /* TensorProto.name (may be empty) */
  ox_slice_t location; /* the one "location" value */
  uint64_t offset;     /* "offset", 0 when absent */
  uint64_t length;     /* "length" when has_length */
  uint64_t expected;   /* bytes implied by dims x data_type when has_expected */
  int has_length, has_expected;
} ox_onnx_ext_t;

/* Called per external tensor; a non-zero return stops the scan and is returned by it. */
typedef int (*ox_onnx_ext_fn)(void *ctx, const ox_onnx_ext_t *ext, char *err, size_t errcap);

/* Scans model bytes data[0..len) (borrowed for the call). Returns 0, OX_EINVALID (malformed
 * protobuf, an external tensor without exactly one location, a bad offset/length), OX_EDEPTH,
 * or fn's return value; a one-line reason in err. */
int ox_onnx_extdata_scan(const void *data, size_t len, ox_onnx_ext_fn fn, void *ctx, char *err,
                         size_t errcap);

/* Lexical check of a location: non-empty, at most OX_ONNX_MAX_LOCATION bytes, no NUL or control
 * byte, relative, no ".." component, not ORT's in-memory address tag. 0, or -1 with *why (a
 * static string). */
int ox_onnx_extdata_location_ok(ox_slice_t loc, const char **why);

/* Scans the model and checks every external file: the location is lexically fine, the file
 * exists below dir (the real path of the descriptor opened lies inside dir's real path; dir
 * borrowed, NULL: the model has none, so any external tensor is refused), is a regular file,
 * and offset (+ length, or the size implied by the tensor's shape) lies within it.
 * Returns 0 or OX_EINVALID / OX_EDEPTH / OX_ENOMEM with "external data 'x': reason" in err.
 * Note: ORT opens the files again by name afterwards; the repository's directories are trusted
 * not to change in between (whoever can write there can replace model.onnx itself). */
int ox_onnx_extdata_check(const void *data, size_t len, const char *dir, char *err, size_t errcap);

#endif
