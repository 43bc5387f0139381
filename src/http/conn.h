/* conn.h: HTTP/1.1 server connections on an event loop: accept, read a request (head, then a
 * Content-Length or chunked body), hand it to the application, write its response, repeat.
 *
 * Design. One ox_http_listener_t per I/O thread, each with its own listening socket
 * (SO_REUSEPORT) and loop. A connection handles one request at a time: while the application
 * holds a request, the connection stops reading, so pipelined requests wait in the kernel and
 * responses leave in request order. The body is read straight into one buffer that the
 * application reads in place (no copy for Content-Length bodies; chunked bodies are decoded into
 * it), placed so that the offset the application names (body_align_offset: for an inference
 * request, where its binary section starts) is 64-byte aligned: tensors can point into it. The
 * body belongs to the request: the connection frees it once, in ox_conn_respond, whatever the
 * path (the application never frees it). Responses are written with writev
 * from the segments the application provides (e.g. ONNX Runtime's output memory), released only
 * when written or when the connection dies.
 *
 * Threads: everything here runs on the listener's loop thread. ox_conn_respond must be called on
 * that thread (workers post a task to the loop: ox_conn_loop()).
 */
#ifndef OX_HTTP_CONN_H
#define OX_HTTP_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <limits.h>
#include <sys/uio.h>

#include "core/buf.h"
#include "http/http_parser.h"
#include "loop/loop.h"

typedef struct ox_conn ox_conn_t;
typedef struct ox_http_listener ox_http_listener_t;

/* A request body. The connection owns it: it is handed to the application borrowed (valid until
 * ox_conn_respond, which frees it) and freed by the connection on every other path.
 * ox_http_body_free also gives its reservation back to the in-flight budget (any thread). */
typedef struct {
  char *base; /* the block (ox_http_body_free releases it) */
  char *data; /* body bytes start here (inside base) */
  size_t len;
  size_t cap;      /* usable bytes from data */
  size_t mapped;   /* > 0: base is an ox_bigbuf mapping of this size, else malloc'd */
  size_t reserved; /* bytes of the in-flight budget this body holds */
} ox_http_body_t;
/* For the connection (the owner) only. */
void ox_http_body_free(ox_http_body_t *b);

/* A response. The connection adds the status line, Content-Length, Connection and Date-less
 * standard headers. Ownership passes to the connection in ox_conn_respond. */
typedef struct ox_http_resp {
  int status;
  const char *content_type; /* static string, e.g. "application/json" */
  ox_buf_t extra_headers;   /* owned: complete "Name: value\r\n" lines, may be empty */
  ox_buf_t body;            /* owned: first body segment */
  struct iovec *iov;        /* owned (malloc) array of further body segments, may be NULL */
  int iovcnt;
  int close;                  /* close the connection after this response */
  void (*release)(void *arg); /* called once when the response is written or dropped */
  void *release_arg;
} ox_http_resp_t;

/* Initialises an empty response with a status. */
void ox_http_resp_init(ox_http_resp_t *r, int status);
/* Fills r with {"error": msg} (msg escaped) and status; a 503 also gets Retry-After: 1.
 * 0 or OX_ENOMEM. */
int ox_http_resp_error(ox_http_resp_t *r, int status, const char *msg);
/* Drops everything r owns (runs release). */
void ox_http_resp_free(ox_http_resp_t *r);
/* The HTTP front end's one mapping from an error code (core/error.h, or -errno) to the status
 * that answers it: 400 invalid input, 404 not found, 413/414/431 limits, 415 unsupported
 * encoding, 429 quota, 499 client gone (logged, never sent), 503 unavailable or deadline
 * expired (ox_http_resp_error adds Retry-After to every 503), 507 store full, 500 otherwise. */
int ox_http_status_of(int err);
/* Reason phrase for a status code. */
const char *ox_http_reason(int status);

/* The application's request callback, on the loop thread. head's slices and body (zeroed when
 * the request has none) are borrowed: valid, from any thread, until ox_conn_respond is called;
 * the connection frees the body then. The application must call ox_conn_respond exactly once
 * for every call, now or later, even if the client has gone away meanwhile. */
typedef void (*ox_http_handler_t)(void *app, ox_conn_t *c, const ox_http_request_t *head,
                                  const ox_http_body_t *body);

typedef struct {
  ox_http_limits_t limits;
  uint32_t request_timeout_ms; /* whole head+body must arrive within it: 408 (default 10 s) */
  /* A new connection must deliver its first request head within request_timeout_ms (silent
   * ones are closed); idle_timeout_ms applies only between the requests of a keep-alive
   * connection. */
  uint32_t idle_timeout_ms; /* keep-alive connection with no request: closed (default 300 s) */
  /* At the cap, the listener's idle keep-alive connection idle longest is closed to make room;
   * only when it has none, the new connection gets 503 and is closed. The count is global, the
   * eviction per listener (each I/O thread evicts among its own connections). */
  uint32_t max_connections;
  /* Budget (all listeners) for request body bytes being received or held by the application,
   * plus response bytes waiting for slow readers. A Content-Length body is reserved whole when
   * its head is complete; a chunked body as its buffer grows. A request whose body does not fit
   * gets 503 + Retry-After and the connection closes, before its body is read. */
  size_t max_inflight_bytes;
  int tag; /* the application's label for this listener's connections (ox_conn_tag) */
  ox_http_handler_t handler;
  /* Body placement (may be NULL): called (loop thread) when a request head with a body is
   * complete, before the body buffer is allocated; returns the offset in the body that must be
   * 64-byte aligned (0: the start). Any value is safe (taken modulo 64). */
  size_t (*body_align_offset)(void *app, const ox_http_request_t *head);
  /* Called (loop thread) when the connection of a request the application holds closes
   * before ox_conn_respond: the client is gone. request is what ox_conn_set_request stored.
   * ox_conn_respond must still be called. May be NULL. */
  void (*on_abort)(void *app, ox_conn_t *c, void *request);
  void *app;
} ox_http_config_t;

/* Creates a listener bound to host:port on loop (SO_REUSEPORT, so several listeners on
 * different loops share one port). cfg is borrowed for the listener's lifetime. If *port is 0,
 * the kernel picks one and *port receives it. 0 or -errno / OX_EINVALID (bad host). */
int ox_http_listener_create(ox_loop_t *loop, const char *host, uint16_t *port,
                            const ox_http_config_t *cfg, ox_http_listener_t **out);
/* Stops accepting (closes the listening socket); existing connections go on. */
void ox_http_listener_stop_accepting(ox_http_listener_t *l);
/* Drain mode: idle keep-alive connections are closed, and every further response carries
 * Connection: close. The listener keeps accepting (so that readiness probes get an answer,
 * which the application makes 503) until it is destroyed. */
void ox_http_listener_drain(ox_http_listener_t *l);
/* Number of connections (all listeners) with a request held by the application or a response
 * being written. */
size_t ox_http_busy(void);
/* Closes every connection and frees the listener. Requests still held by the application
 * keep their ox_conn_t alive until ox_conn_respond. Call on the loop thread. */
void ox_http_listener_destroy(ox_http_listener_t *l);

/* Global count of open connections (all listeners). */
size_t ox_http_open_connections(void);
/* Bytes counted in the in-flight budget now (all listeners; see max_inflight_bytes). */
size_t ox_http_inflight_bytes(void);
/* Requests refused (503) because the in-flight budget was full, since start. */
uint64_t ox_http_inflight_refusals(void);
/* Idle keep-alive connections closed to make room at the connection cap, since start. */
uint64_t ox_http_idle_evictions(void);

/* Sends the response for the request currently held (see ox_http_handler_t); takes ownership
 * of *resp (its fields are zeroed). Loop thread only. */
void ox_conn_respond(ox_conn_t *c, ox_http_resp_t *resp);
/* Associates the application's request object with the held request (for on_abort). */
void ox_conn_set_request(ox_conn_t *c, void *request);
/* ox_conn_respond with an {"error": msg} response (ox_http_resp_error). Loop thread only. */
void ox_conn_respond_error(ox_conn_t *c, int status, const char *msg);
/* The loop the connection lives on (for workers to post completions to). */
ox_loop_t *ox_conn_loop(const ox_conn_t *c);
/* 1 if the client is gone (the response will be dropped). */
int ox_conn_closed(const ox_conn_t *c);
/* The tag of the listener that accepted the connection (ox_http_config_t.tag). */
int ox_conn_tag(const ox_conn_t *c);

#endif
