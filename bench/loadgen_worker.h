/* loadgen_worker.h: one load-generator thread: an epoll loop driving its share of the
 * connections (see loadgen.c for the flags and the report).
 *
 * A run has two phases. Setup: every connection is opened, and each idle connection sends its
 * one GET and reads the answer; then the worker waits at a barrier until the driver has set the
 * clock (t_start, t_measure, t_end). Load: closed loop (each connection sends its next request as
 * soon as the previous answer is in) or open loop (request k is due at a fixed intended time;
 * when it is due it goes to a free connection, or waits for one, and its latency is counted from
 * the intended time, so a stall is never hidden: coordinated omission). Latency is recorded for
 * answers with the expected status (and body substring); everything else counts as an error.
 *
 * Zero allocation after setup: the requests are pre-encoded once and shared read-only by all
 * connections (sent with writev), every connection owns one read buffer, and responses are parsed
 * as a stream (loadgen_http.h) without ever being held whole.
 *
 * A run has one request body (--body) or many (--body-lines). Every request is the shared prefix
 * (request line and headers), then its body's own framing tail (Content-Length), then the body,
 * so a million bodies do not repeat the headers a million times. Which body a request carries:
 * every load connection has its own cursor, which starts at body j * N / C for the connection's
 * global index j (over all workers) of C connections and N bodies (spread evenly) and moves to the
 * next body, wrapping, each time the connection starts a request. A request that is resent (on a
 * fresh connection, after the server dropped a keep-alive one) resends the same body. So with one
 * connection the bodies go out in file order, and with C connections the first C requests carry C
 * different bodies (as far as there are that many).
 */
#ifndef OX_LG_WORKER_H
#define OX_LG_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loadgen_hist.h"
#include "loadgen_http.h"

/* Kinds of errors other than an unexpected status. */
#define OX_LG_ERR_KINDS(X)                                                           \
  X(CONNECT, "connect")   /* connection refused, reset or timed out while opening */ \
  X(TIMEOUT, "timeout")   /* no complete answer within --timeout-ms */               \
  X(IO, "io")             /* connection reset or closed before the answer ended */   \
  X(PROTOCOL, "protocol") /* malformed answer, or bytes nobody asked for */          \
  X(BODY, "body")         /* expected status, but --check-body not found */

/* clang-format off */
typedef enum {
#define OX_LG_ERR_ENUM(e, name) OX_LG_ERR_##e,
  OX_LG_ERR_KINDS(OX_LG_ERR_ENUM)
#undef OX_LG_ERR_ENUM
  OX_LG_ERR_COUNT_
} ox_lg_err_kind_t;
/* clang-format on */

/* One request of the run, sent after the shared prefix (ox_lg_config_t.prefix). */
typedef struct {
  const char *tail; /* end of the head: "Content-Length: N\r\n\r\n", or "\r\n" without one */
  size_t tail_len;
  const char *body; /* borrowed (NULL when body_len is 0) */
  size_t body_len;
} ox_lg_req_t;

/* The pre-encoded requests of a run: one per body. */
typedef struct {
  ox_lg_req_t *reqs; /* owned: n entries (tails point into tails_, bodies are borrowed) */
  size_t n;
  char *tails_; /* owned: every tail, back to back */
} ox_lg_reqs_t;

/* Encodes one request per body into rq. The bytes bodies[0..n) point to are borrowed and must
 * outlive rq; the array itself may be freed after the call. A body gets a
 * Content-Length when it is not empty, or always if length_always (POST and PUT send
 * "Content-Length: 0"). Returns 0, OX_EINVALID if n is 0 or above UINT32_MAX, OX_ENOMEM.
 * Free with ox_lg_reqs_destroy (also safe after a failed create). */
int ox_lg_reqs_create(ox_lg_reqs_t *rq, const ox_lg_slice_t *bodies, size_t n, int length_always);
void ox_lg_reqs_destroy(ox_lg_reqs_t *rq);

/* What every worker shares; read-only once the load phase starts. */
typedef struct {
  struct sockaddr_storage addr;
  socklen_t addrlen;
  const char *prefix; /* request line and headers of every request (no final CRLF), borrowed */
  size_t prefix_len;
  const ox_lg_req_t *reqs; /* nreqs >= 1 requests, borrowed; see the file comment for the order */
  size_t nreqs;
  const char *idle_req; /* the idle connections' GET, borrowed */
  size_t idle_req_len;
  int head_request; /* method is HEAD: answers have no body */
  int expect_status;
  const ox_lg_match_t *match; /* --check-body, or NULL */
  uint64_t timeout_ns;
  double rate; /* total requests per second over all workers; 0: closed loop */
  int nworkers;
  size_t nconns; /* load connections over all workers (spreads their starting bodies) */
  /* Set by the driver between the two barriers, monotonic ns: */
  uint64_t t_start;           /* load starts (open loop: request 0 is due) */
  uint64_t t_measure;         /* warm-up ends: requests intended from here on count */
  uint64_t t_end;             /* no request is sent or counted from here on; UINT64_MAX: none */
  pthread_barrier_t *barrier; /* workers + driver, used twice */
  atomic_int *stop;           /* set by SIGINT: end now */
} ox_lg_config_t;

typedef struct ox_lg_conn ox_lg_conn_t;

typedef struct {
  /* Set by the driver: */
  const ox_lg_config_t *cfg;
  int id;                /* 0..nworkers-1 */
  int nconns, nidle;     /* load and idle connections of this worker */
  int conn_base;         /* global index of its first load connection (earlier workers' nconns) */
  uint64_t max_requests; /* counted requests to send; UINT64_MAX: no limit */

  /* Results (valid after ox_lg_worker_run returns): */
  ox_lg_hist_t hist; /* latency of good answers, ns */
  uint64_t requests; /* counted requests that ended (answered, failed or timed out) */
  uint64_t ok;
  uint64_t errors; /* failed requests plus connect failures */
  uint64_t by_status[1000];
  uint64_t by_kind[OX_LG_ERR_COUNT_];
  uint64_t incomplete;                 /* counted requests due or in flight when the run ended */
  uint64_t bytes_sent, bytes_received; /* during the measured window */
  uint64_t t_done;                     /* when this worker's measured window ended (monotonic ns) */
  uint64_t lag_sum, lag_max;           /* counted requests: first byte sent minus intended time, ns
                                          (open loop: the client's own lateness plus waiting for a free
                                          connection; both are inside the latency) */
  int idle_ready;                      /* idle connections that got their answer */
  int idle_open;                       /* ... and were still open at the end */
  int setup_error; /* 0, or a negative errno from setup (reported by the driver) */

  /* Private: */
  int epfd_;
  ox_lg_conn_t *conns_; /* nconns load then nidle idle connections */
} ox_lg_worker_t;

/* Thread body: runs setup, the two barriers and the load phase of one worker (arg is an
 * ox_lg_worker_t). Always reaches both barriers, even after a setup failure. */
void *ox_lg_worker_run(void *arg);

/* Frees the worker's connections and buffers (closes every socket). */
void ox_lg_worker_destroy(ox_lg_worker_t *w);

#endif
