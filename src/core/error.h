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

/* X(NAME, message). What a code means to a protocol (an HTTP status, a gRPC status) is decided
 * by that protocol's front end, in one mapping function each (ox_http_status_of, http/conn.h). */
#define OX_ERR_MAP(X)                                                         \
  X(NEED_MORE, "need more bytes")                                             \
  X(INVALID, "invalid input")                                                 \
  X(NOMEM, "out of memory")                                                   \
  X(TOO_LARGE, "too large")                                                   \
  X(URI_TOO_LONG, "request line too long")                                    \
  X(HEADERS_TOO_LARGE, "request header fields too large")                     \
  X(NOT_IMPLEMENTED, "not implemented")                                       \
  X(NOT_FOUND, "not found")                                                   \
  X(METHOD, "method not allowed")                                             \
  X(UNAVAILABLE, "service unavailable")                                       \
  X(TIMEOUT, "timeout")                                                       \
  X(INTERNAL, "internal error")                                               \
  X(DEPTH, "nesting too deep")                                                \
  X(OVERFLOW, "size overflow")                                                \
  X(RUNTIME, "inference runtime error")                                       \
  X(PENDING, "answer pending")                                                \
  X(QUOTA, "quota exceeded")                                                  \
  X(STORE_FULL, "store full")                                                 \
  X(DEADLINE, "deadline expired before the work ran") /* retry may succeed */ \
  X(CANCELLED, "the client went away")                                        \
  X(UNSUPPORTED, "unsupported content encoding")

enum ox_err_index {
#define OX_ERR_IDX(name, msg) OX_ERRIDX_##name,
  OX_ERR_MAP(OX_ERR_IDX)
#undef OX_ERR_IDX
      OX_ERRIDX_COUNT_
};

enum {
#define OX_ERR_ENUM(name, msg) OX_E##name = -(OX_ERR_BASE + OX_ERRIDX_##name),
  OX_ERR_MAP(OX_ERR_ENUM)
#undef OX_ERR_ENUM
};

/* Name ("OX_EINVALID", "ENOENT", ...) of an error code. Returns a static string. */
const char *ox_err_name(int err);
/* Human-readable message of an error code (strerror for -errno). Static or thread-local. */
const char *ox_strerror(int err);

#endif
