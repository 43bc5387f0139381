/* grpc_loadgen_worker.h: one thread of onnxd-grpc-bench: an epoll loop driving its share of the
 * HTTP/2 connections, each an nghttp2 client session with --streams unary calls in flight
 * (see grpc_loadgen.c for the flags and the report).
 *
 * A run has two phases, as in onnxd-bench (loadgen_worker.h). Setup: every connection is opened
 * and its connection preface and SETTINGS are sent; then the worker waits at a barrier until the
 * driver has set the clock (t_start, t_measure, t_end). Load: closed loop; every connection keeps
 * --streams calls in flight, starting the next call on a slot as soon as the previous one has
 * ended. A call counts when it started inside the measured window and ended before its end; it
 * is good when the answer had :status 200, grpc-status 0 and at least one whole response message
 * (5-byte prefix plus its length). Its latency runs from the submit to the stream's close.
 *
 * What is shared and what is per call: the request's header list and the message (5-byte gRPC
 * prefix plus the serialized request, one buffer) are built once by the driver and shared
 * read-only; every call slot is preallocated per connection and its DATA is copied by nghttp2
 * straight out of the shared message. Our code allocates nothing per call; nghttp2 allocates its
 * own stream object and frame items per stream (a few small mallocs, its design).
 *
 * The price of nghttp2's memory interface: a request's bytes are copied twice (into nghttp2's
 * frame buffer, then into the connection's output buffer) before the kernel copies them. For
 * S2g's 600 KB message that is measured at 0.33-0.48 CPU s per 1000 calls (onnxd-bench's writev
 * of S2's body: 0.18), 0.02-0.03 cores at S2g's rates; for S3g's 107 bytes it does not show
 * (0.004-0.05 CPU s per 1000 calls, dominated by system calls). Zero copy would need
 * nghttp2_session_send with NGHTTP2_DATA_FLAG_NO_COPY and our own queue of borrowed segments.
 */
#ifndef OX_GLG_WORKER_H
#define OX_GLG_WORKER_H

#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loadgen_hist.h"

/* Kinds of errors other than a non-zero grpc-status or an HTTP :status other than 200. */
#define OX_GLG_ERR_KINDS(X)                                                                 \
  X(CONNECT, "connect")       /* connection refused, reset or timed out while opening */    \
  X(TIMEOUT, "timeout")       /* no end of the call within --timeout-ms (then cancelled) */ \
  X(IO, "io")                 /* connection lost, or the stream reset, before the end */    \
  X(PROTOCOL, "protocol")     /* HTTP/2 error, or an answer without grpc-status */          \
  X(NO_MESSAGE, "no_message") /* grpc-status 0, but no whole response message */

/* clang-format off */
typedef enum {
#define OX_GLG_ERR_ENUM(e, name) OX_GLG_ERR_##e,
  OX_GLG_ERR_KINDS(OX_GLG_ERR_ENUM)
#undef OX_GLG_ERR_ENUM
  OX_GLG_ERR_COUNT_
} ox_glg_err_kind_t;
/* clang-format on */

#define OX_GLG_GRPC_CODES                                                 \
  17 /* grpc-status 0..16 are counted each; any other is a protocol error \
      */

/* What every worker shares; read-only once the load phase starts. */
typedef struct {
  struct sockaddr_storage addr;
  socklen_t addrlen;
  const nghttp2_nv *nva; /* request headers, borrowed */
  size_t nvlen;
  const uint8_t *msg; /* the gRPC message: 5-byte prefix and the serialized request, borrowed */
  size_t msg_len;
  int streams;    /* calls in flight per connection */
  int32_t window; /* stream and connection receive window we announce, bytes */
  uint64_t timeout_ns;
  /* Set by the driver between the two barriers, monotonic ns: */
  uint64_t t_start;           /* load starts */
  uint64_t t_measure;         /* warm-up ends: calls started from here on count */
  uint64_t t_end;             /* no call is started or counted from here on */
  pthread_barrier_t *barrier; /* workers + driver, used twice */
  atomic_int *stop;           /* set by SIGINT: end now */
} ox_glg_config_t;

typedef struct ox_glg_conn ox_glg_conn_t;

typedef struct {
  /* Set by the driver: */
  const ox_glg_config_t *cfg;
  int id;     /* 0..threads-1 */
  int nconns; /* connections of this worker */

  /* Results (valid after ox_glg_worker_run returns): */
  ox_lg_hist_t hist; /* latency of good calls, ns */
  uint64_t calls;    /* counted calls that ended (good, failed or timed out) */
  uint64_t ok;
  uint64_t errors; /* failed calls plus connect failures */
  uint64_t by_grpc_status[OX_GLG_GRPC_CODES];
  uint64_t by_http_status[1000];
  uint64_t by_kind[OX_GLG_ERR_COUNT_];
  uint64_t incomplete;                 /* counted calls in flight when the run ended */
  uint64_t bytes_sent, bytes_received; /* socket bytes during the measured window */
  uint64_t t_done;                     /* when this worker's measured window ended */
  int setup_error; /* 0, or a negative errno from setup (reported by the driver) */

  /* Private: */
  int epfd_;
  ox_glg_conn_t *conns_; /* owned: nconns */
} ox_glg_worker_t;

/* Thread body: setup, the two barriers and the load phase of one worker (arg is an
 * ox_glg_worker_t). Always reaches both barriers, even after a setup failure. */
void *ox_glg_worker_run(void *arg);

/* Frees the worker's sessions and buffers and closes every socket. */
void ox_glg_worker_destroy(ox_glg_worker_t *w);

#endif
