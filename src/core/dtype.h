/* dtype.h: the Open Inference Protocol datatypes, as one declarative table.
 *
 * Shared by proto/ (wire names, JSON kinds) and runtime/ (which maps each to ONNX Runtime's
 * element type). BYTES has element size 0: its elements are variable-length strings.
 */
#ifndef OX_CORE_DTYPE_H
#define OX_CORE_DTYPE_H

#include <stddef.h>

/* X(ENUM, wire name, element size in bytes, JSON kind) */
#define OX_DTYPE_MAP(X)              \
  X(BOOL, "BOOL", 1, OX_JK_BOOL)     \
  X(UINT8, "UINT8", 1, OX_JK_UINT)   \
  X(UINT16, "UINT16", 2, OX_JK_UINT) \
  X(UINT32, "UINT32", 4, OX_JK_UINT) \
  X(UINT64, "UINT64", 8, OX_JK_UINT) \
  X(INT8, "INT8", 1, OX_JK_INT)      \
  X(INT16, "INT16", 2, OX_JK_INT)    \
  X(INT32, "INT32", 4, OX_JK_INT)    \
  X(INT64, "INT64", 8, OX_JK_INT)    \
  X(FP16, "FP16", 2, OX_JK_FLOAT)    \
  X(BF16, "BF16", 2, OX_JK_FLOAT)    \
  X(FP32, "FP32", 4, OX_JK_FLOAT)    \
  X(FP64, "FP64", 8, OX_JK_FLOAT)    \
  X(BYTES, "BYTES", 0, OX_JK_STRING)

/* How a datatype's elements are written in JSON. */
typedef enum { OX_JK_BOOL, OX_JK_UINT, OX_JK_INT, OX_JK_FLOAT, OX_JK_STRING } ox_json_kind_t;

typedef enum {
  OX_DT_INVALID = 0,
#define OX_DT_ENUM(e, name, size, kind) OX_DT_##e,
  OX_DTYPE_MAP(OX_DT_ENUM)
#undef OX_DT_ENUM
      OX_DT_COUNT_
} ox_dtype_t;

/* Wire name ("FP32") of a datatype; "INVALID" for OX_DT_INVALID. Static string. */
const char *ox_dtype_name(ox_dtype_t dt);
/* Datatype for a wire name of len bytes (exact, case-sensitive); OX_DT_INVALID if unknown. */
ox_dtype_t ox_dtype_from_name(const char *name, size_t len);
/* Element size in bytes; 0 for BYTES and INVALID. */
size_t ox_dtype_size(ox_dtype_t dt);
/* JSON kind of the datatype's elements. */
ox_json_kind_t ox_dtype_json_kind(ox_dtype_t dt);

#endif
