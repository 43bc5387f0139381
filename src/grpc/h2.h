/* h2.h: gRPC's transport: HTTP/2 over cleartext TCP (h2c with prior knowledge, as gRPC clients
 * connect) on an event loop, with nghttp2 doing the HTTP/2 framing, and gRPC's own layer on
 * top: the 5-byte message prefix, grpc-timeout, grpc-encoding and the grpc-status /
 * grpc-message trailers. The application (server/grpc_service.c) sees calls (one per HTTP/2
 * stream) and whole messages; it never sees a frame.
 *
 * Design. One ox_grpc_listener_t per I/O thread, each with its own listening socket
 * (SO_REUSEPORT) and loop, as http/conn.h. A connection reads into a buffer and feeds it to
 * nghttp2 (nghttp2_session_mem_recv); a call's DATA is reassembled into one buffer per message
 * (the one copy on the receive path: a message spans many frames). The buffer is allocated when
 * the message's first bytes are in (up to OX_GRPC_PREFIX_PEEK of them, or the whole message if
 * smaller), placed so that the offset the application names (align_offset: for ModelInfer,
 * where the first raw input starts) is 64-byte aligned: tensors point into it. Responses are
 * sent with nghttp2's no-copy data path: the message prefix and the application's segments
 * (e.g. ONNX Runtime's output memory) are written with writev straight from where they lie,
 * released when written or when the call dies.
 *
 * Limits (all enforced here, before the application sees anything): concurrent streams per
 * connection (SETTINGS_MAX_CONCURRENT_STREAMS; more are refused with RST_STREAM
 * REFUSED_STREAM), header list size, message size (RESOURCE_EXHAUSTED, the call ends), bytes
 * buffered (a global budget), flow-control windows (raised from HTTP/2's 64 KB so large tensors
 * stream; the peer's zero window never stalls the loop: a call that cannot send waits, bounded
 * by the connection's idle timeout), connection idle timeout, and the floods HTTP/2 allows: rapid
 * reset (streams opened and reset faster than they are served), SETTINGS, PING and empty-frame
 * floods, CONTINUATION floods (header blocks beyond the list size). A connection that breaks a
 * rule gets GOAWAY with the matching error code and is closed; other connections go on.
 *
 * Threads: everything here runs on the listener's loop thread, except where noted.
 */
#ifndef OX_GRPC_H2_H
#define OX_GRPC_H2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/buf.h"
#include "core/slice.h"
#include "loop/loop.h"

/* gRPC status codes (the wire values). */
typedef enum {
  OX_GRPC_OK = 0,
  OX_GRPC_CANCELLED = 1,
  OX_GRPC_UNKNOWN = 2,
  OX_GRPC_INVALID_ARGUMENT = 3,
  OX_GRPC_DEADLINE_EXCEEDED = 4,
  OX_GRPC_NOT_FOUND = 5,
  OX_GRPC_ALREADY_EXISTS = 6,
  OX_GRPC_PERMISSION_DENIED = 7,
  OX_GRPC_RESOURCE_EXHAUSTED = 8,
  OX_GRPC_FAILED_PRECONDITION = 9,
  OX_GRPC_ABORTED = 10,
  OX_GRPC_OUT_OF_RANGE = 11,
  OX_GRPC_UNIMPLEMENTED = 12,
  OX_GRPC_INTERNAL = 13,
  OX_GRPC_UNAVAILABLE = 14,
  OX_GRPC_DATA_LOSS = 15,
  OX_GRPC_UNAUTHENTICATED = 16
} ox_grpc_status_t;

/* Bytes of a message that align_offset may look at (fewer when the message is shorter). */
#define OX_GRPC_PREFIX_PEEK 4096

typedef struct ox_grpc_listener ox_grpc_listener_t;
typedef struct ox_grpc_call ox_grpc_call_t;

/* One received message: the application owns it from on_message until ox_grpc_msg_free (any
 * thread). data is len bytes, placed as align_offset asked. */
typedef struct {
  char *data;
  size_t len;
  void *base_;      /* the block; for ox_grpc_msg_free */
  size_t reserved_; /* bytes of the buffered-bytes budget it holds */
} ox_grpc_msg_t;
/* Any thread: frees the message's buffer and gives its bytes back to the budget. */
void ox_grpc_msg_free(ox_grpc_msg_t *m);

/* What the application does for the transport. Every callback runs on the loop thread. */
typedef struct {
  /* A new call whose request headers are complete: path is ":path" (e.g.
   * "/inference.GRPCInferenceService/ModelInfer"), timeout_us the grpc-timeout header (0:
   * none). Return 0 to take the call; the application then owns it and must end it with
   * ox_grpc_call_finish exactly once (even after on_abort). Non-zero: a gRPC status; the
   * transport answers it (trailers only, with *msg, a static string) and the call never reaches
   * the application again. */
  int (*on_open)(void *app, ox_grpc_call_t *call, ox_slice_t path, uint64_t timeout_us,
                 const char **msg);
  /* May be NULL. The first min(n, OX_GRPC_PREFIX_PEEK) bytes of a message of msg_len bytes are
   * in prefix; returns the offset in the message that must be 64-byte aligned (any value is
   * safe: taken modulo 64). */
  size_t (*align_offset)(void *app, ox_grpc_call_t *call, const char *prefix, size_t n,
                         size_t msg_len);
  /* A complete message of the call (*msg is the application's now). */
  void (*on_message)(void *app, ox_grpc_call_t *call, ox_grpc_msg_t *msg);
  /* The client half-closed the call (END_STREAM): no more messages will come. A unary call
   * gets this after its one message. */
  void (*on_half_close)(void *app, ox_grpc_call_t *call);
  /* The call is gone before the application finished it: RST_STREAM from the client, the
   * connection closed, its deadline passed (the transport then sends DEADLINE_EXCEEDED
   * itself), or a limit ended it. Further sends are dropped; ox_grpc_call_finish must still be
   * called. May be NULL. */
  void (*on_abort)(void *app, ox_grpc_call_t *call);
} ox_grpc_handler_t;

typedef struct {
  uint32_t max_concurrent_streams; /* per connection (default 128) */
  size_t max_message_bytes;        /* a received message (default 64 MiB): RESOURCE_EXHAUSTED */
  uint32_t max_header_list_bytes;  /* (default 16 KiB) */
  uint32_t window_bytes;           /* initial stream and connection windows (default 16 MiB) */
  size_t max_buffered_bytes;       /* received message bytes held (being reassembled or held
                                      by the application), all connections (default 1 GiB): a
                                      message that does not fit ends its call with
                                      RESOURCE_EXHAUSTED before its bytes are read */
  uint32_t idle_timeout_ms;        /* no open call and no frame: GOAWAY and close (300 s) */
  uint32_t max_connections;        /* gRPC connections, all listeners (default 10000): over it,
                                      a new connection gets GOAWAY at once */
  const ox_grpc_handler_t *handler;
  void *app;
} ox_grpc_config_t;

/* Sets every zero limit of cfg to its default (above); handler and app are left alone. */
void ox_grpc_config_defaults(ox_grpc_config_t *cfg);

/* Creates a listener bound to host:port on loop (SO_REUSEPORT). cfg is borrowed for the
 * listener's lifetime. *port 0: the kernel picks one and *port receives it. 0 or -errno /
 * OX_EINVALID (bad host, no handler / on_open / on_message, a zero limit, or a window outside
 * HTTP/2's 65535..2^31-1). */
int ox_grpc_listener_create(ox_loop_t *loop, const char *host, uint16_t *port,
                            const ox_grpc_config_t *cfg, ox_grpc_listener_t **out);
/* Drain: every connection gets GOAWAY (last stream id: the highest it has seen), new streams are
 * refused, calls already open finish; a connection closes when its last call ends. New
 * connections are still accepted and get GOAWAY at once. */
void ox_grpc_listener_drain(ox_grpc_listener_t *l);
/* Stops accepting (closes the listening socket). */
void ox_grpc_listener_stop_accepting(ox_grpc_listener_t *l);
/* Closes every connection and frees the listener; calls the application still holds keep their
 * call alive until ox_grpc_call_finish. */
void ox_grpc_listener_destroy(ox_grpc_listener_t *l);
/* Open gRPC connections (all listeners) and calls the application holds (any thread). */
size_t ox_grpc_open_connections(void);
size_t ox_grpc_busy(void);
/* Received message bytes held now (reassembling or held by the application; all listeners). */
size_t ox_grpc_buffered_bytes(void);
/* Hardening counters since start (any thread): streams refused (REFUSED_STREAM sent), floods
 * answered with GOAWAY ENHANCE_YOUR_CALM (rapid reset, PING, SETTINGS, empty DATA,
 * CONTINUATION, or nghttp2's own ACK flood bound), connections closed for a bad preface,
 * connections refused at the cap, calls ended by a limit (message size, budget, header list,
 * deadline). */
typedef enum {
  OX_GRPC_REFUSED_STREAMS,
  OX_GRPC_FLOODS,
  OX_GRPC_BAD_PREFACES,
  OX_GRPC_CONN_REFUSALS,
  OX_GRPC_LIMIT_ENDS
} ox_grpc_counter_t;
uint64_t ox_grpc_counter(ox_grpc_counter_t which);

/* The call's loop (for workers to post completions to). */
ox_loop_t *ox_grpc_call_loop(const ox_grpc_call_t *call);
/* 1 once the call is gone (on_abort ran): sends are dropped. */
int ox_grpc_call_closed(const ox_grpc_call_t *call);
/* The application's pointer for the call (NULL until set). */
void ox_grpc_call_set_data(ox_grpc_call_t *call, void *data);
void *ox_grpc_call_data(const ox_grpc_call_t *call);

/* One response message: head (owned; may be empty) then iovcnt further segments (borrowed
 * until release runs). The transport adds the 5-byte prefix (uncompressed). release (may be
 * NULL) runs once, when the bytes are written or dropped. */
typedef struct {
  ox_buf_t head;
  struct iovec *iov; /* owned (malloc) array, may be NULL */
  int iovcnt;
  void (*release)(void *arg);
  void *release_arg;
} ox_grpc_out_t;

/* Queues a response message on the call (the response headers go first, once); takes
 * ownership of *out (its fields are zeroed). Dropped (release runs) if the call is closed.
 * Returns 0, or OX_ENOMEM (the message is dropped; the call is closed). Neither this nor
 * ox_grpc_call_finish writes or calls back into the application: what they queue is written
 * once per batch of loop events (every answer a batch produced for a connection in one
 * writev), and a connection that fails then gets its on_abort calls at that point. */
int ox_grpc_call_send(ox_grpc_call_t *call, ox_grpc_out_t *out);
/* Ends the call: trailers grpc-status (and grpc-message, percent-encoded, when msg is not
 * NULL) after every queued message; a call that sent nothing gets a trailers-only response.
 * Exactly once per call taken in on_open. The call is freed when its last bytes are written
 * (or at once if it is closed). */
void ox_grpc_call_finish(ox_grpc_call_t *call, ox_grpc_status_t status, const char *msg);

#endif
