/* error.h: onnxd's one error vocabulary.
 *
 * Functions return int: 0 (or a non-negative count) on success, a negative code otherwise.
 * System call failures are returned as -errno; project codes live below OX_ERR_BASE so the
 * two never collide. OX_ENEED_MORE ("need more bytes") is distinct from every "invalid"
 * code, as picohttpparser's -2 is distinct from its -1.
 */
#ifndef OX_CORE_ERROR_H
#define OX_CORE_ERROR_H

#define OX_ERR_BASE 10000

/* X(NAME, http_status, message) */
#define OX_ERR_MAP(X)                                          \
  X(NEED_MORE, 0, "need more bytes")                           \
  X(INVALID, 400, "invalid input")                             \
  X(NOMEM, 500, "out of memory")                               \
  X(TOO_LARGE, 413, "too large")                               \
  X(URI_TOO_LONG, 414, "request line too long")                \
  X(HEADERS_TOO_LARGE, 431, "request header fields too large") \
  X(NOT_IMPLEMENTED, 501, "not implemented")                   \
  X(NOT_FOUND, 404, "not found")                               \
  X(METHOD, 405, "method not allowed")                         \
  X(UNAVAILABLE, 503, "service unavailable")                   \
  X(TIMEOUT, 408, "timeout")                                   \
  X(INTERNAL, 500, "internal error")                           \
  X(DEPTH, 400, "nesting too deep")                            \
  X(OVERFLOW, 400, "size overflow")                            \
  X(RUNTIME, 500, "inference runtime error")                   \
  X(PENDING, 0, "answer pending")                              \
  X(QUOTA, 429, "quota exceeded")                              \
  X(STORE_FULL, 507, "store full")

enum ox_err_index {
#define OX_ERR_IDX(name, status, msg) OX_ERRIDX_##name,
  OX_ERR_MAP(OX_ERR_IDX)
#undef OX_ERR_IDX
  OX_ERRIDX_COUNT_
};

enum {
#define OX_ERR_ENUM(name, status, msg) OX_E##name = -(OX_ERR_BASE + OX_ERRIDX_##name),
  OX_ERR_MAP(OX_ERR_ENUM)
#undef OX_ERR_ENUM
};

/* Name ("OX_EINVALID", "ENOENT", ...) of an error code. Returns a static string. */
const char *ox_err_name(int err);
/* Human-readable message of an error code (strerror for -errno). Static or thread-local. */
const char *ox_strerror(int err);
/* HTTP status that best answers an error code (500 for unknown and system errors). */
int ox_err_status(int err);

#endif
