/* h2.c: gRPC over HTTP/2 (h2c, prior knowledge) on an event loop, with nghttp2 doing the framing
 * (see h2.h for the design).
 *
 * Bytes in: read() into a stack buffer, the first 24 checked against the client preface (a
 * connection that does not start with it is closed at once, it is not HTTP/2), then
 * nghttp2_session_mem_recv. Its callbacks build calls (on_begin_headers / on_header /
 * on_frame_recv), reassemble messages (on_data_chunk_recv) and count the frames that floods are
 * made of (on_begin_frame).
 *
 * Bytes out: nghttp2_session_send with our send_callback (control frames: copied, small) and
 * send_data_callback (DATA: the 9-byte frame header copied, then references to the message
 * prefix, head and the application's segments). Both append to the connection's output queue,
 * which writev drains; a queue entry may carry a message whose bytes end there, released once
 * written. The queue is bounded: past OX_H2_OUTQ_MAX bytes the callbacks answer WOULDBLOCK and
 * nghttp2 keeps the rest until the socket drains.
 *
 * Lifetimes. A call belongs to its stream and, from on_open's 0 until ox_grpc_call_finish, to
 * the application too; it is freed when both have let go. A connection is never freed inside
 * an nghttp2 callback or during an epoll batch that may still name it: closed connections wait
 * on a zombie list that the listener's own timer (a timerfd, so that an HTTP listener's tick on
 * the same loop is untouched) frees one tick later. A connection closed after our GOAWAY first
 * lingers (write side shut, input read and dropped, OX_H2_LINGER_MS at most) so that the client
 * reads the GOAWAY instead of a reset; a client that shuts its write side gets the calls
 * already in answered, then the close.
 *
 * Hardening, on top of nghttp2's own (Debian's 1.52.0-1+deb12u1 has the CVE-2023-44487 rapid
 * reset bound, deb12u2 the CVE-2024-28182 CONTINUATION bound): per connection and second, at
 * most OX_H2_RESET_CAP (and 2x the stream limit) client RST_STREAMs, OX_H2_PING_CAP PINGs,
 * OX_H2_SETTINGS_CAP SETTINGS and OX_H2_EMPTY_DATA_CAP empty DATA frames, else GOAWAY
 * ENHANCE_YOUR_CALM and close; OX_H2_CONTINUATION_CAP CONTINUATIONs per header block and
 * max_header_list_bytes per stream. Each is counted (ox_grpc_counter) and logged.
 */
#include "grpc/h2.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "core/bigbuf.h"
#include "core/error.h"
#include "core/log.h"
#include "metrics/metrics.h"

#define OX_H2_TICK_MS 50          /* deadline and idle sweep period */
#define OX_H2_READ_CHUNK 65536    /* bytes per read() */
#define OX_H2_OUTQ_MAX (4u << 20) /* queued output bytes before nghttp2 is told to wait */
#define OX_H2_ALIGN 64            /* message data alignment */
#define OX_H2_MSG_HDR 64          /* block header before a message (its mapping size) */
#define OX_H2_RESET_CAP 200       /* client RST_STREAMs per second, at most ... */
#define OX_H2_PING_CAP 100        /* PING frames per second */
#define OX_H2_SETTINGS_CAP 50     /* SETTINGS frames per second */
#define OX_H2_EMPTY_DATA_CAP 100  /* DATA frames without payload or END_STREAM per second */
#define OX_H2_CONTINUATION_CAP 16 /* CONTINUATION frames in one header block */
#define OX_H2_MAX_OUTBOUND_ACK                                                            \
  1000                       /* ACKs nghttp2 may queue (its bound; ours above fire first) \
                              */
#define OX_H2_LINGER_MS 1000 /* reading after a GOAWAY before the close */
static const char ox_h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define OX_H2_PREFACE_LEN 24

typedef struct ox_h2_conn ox_h2_conn_t;

/* A response message queued on a call: [prefix 5][head][iov...]; seg/off: how far its bytes
 * have gone into the output queue. */
typedef struct ox_h2_out {
  struct ox_h2_out *next;
  ox_grpc_out_t o;
  unsigned char prefix[5];
  int seg;    /* segment being queued: 0 prefix, 1 head, 2.. iov */
  size_t off; /* bytes of that segment queued */
} ox_h2_out_t;

/* One output queue entry: len bytes at p (own: freed with it), then done released. */
typedef struct {
  const char *p;
  size_t len;
  void *own;
  ox_h2_out_t *done;
} ox_h2_qent_t;

struct ox_grpc_call {
  ox_h2_conn_t *c; /* NULL once the stream or connection is gone */
  ox_loop_t *loop;
  ox_grpc_call_t *prev, *next; /* connection's list */
  int32_t id;
  int held;   /* the application holds it (on_open returned 0, no finish yet) */
  int stream; /* the stream is open in nghttp2 */
  int closed; /* on_abort ran / sends dropped */
  int ended;  /* the response's end (trailers) is decided */
  int hdrs_sent;
  int rst_after; /* RST_STREAM NO_ERROR once the final HEADERS are out (client still sending) */
  int half_closed;
  int refused; /* answered in on_open or validation; data ignored */
  void *data;
  /* request headers */
  size_t hdr_bytes;
  int n_cont;
  char path[256];
  size_t path_len;
  int method_post, ctype_ok, path_long, timeout_bad, encoded;
  uint64_t timeout_us;
  uint64_t deadline_ms; /* 0: none */
  /* message reassembly */
  unsigned char mhdr[5];
  size_t mhdr_len;
  size_t mlen; /* current message's length (once mhdr complete) */
  char *peek;  /* first bytes while align_offset waits for them */
  size_t peek_len;
  ox_grpc_msg_t cur;   /* the buffer being filled (cur.base_ set once allocated) */
  size_t cur_reserved; /* budget held for the message before its buffer exists */
  /* response */
  ox_h2_out_t *out_head, *out_tail;
  ox_grpc_status_t status;
  char *status_msg; /* percent-encoded, owned */
};

struct ox_h2_conn {
  ox_io_t io;
  ox_grpc_listener_t *l;
  ox_loop_t *loop;
  ox_h2_conn_t *prev, *next;
  nghttp2_session *s;
  int dead;  /* closed */
  int in_cb; /* inside nghttp2 (no send, no close) */
  int dirty; /* on the listener's dirty list: flushed once after this batch of events */
  ox_h2_conn_t *dirty_next;
  int want_close; /* close once out of the callbacks */
  int goaway;     /* a final GOAWAY is queued: close once written */
  int notice;     /* drain: the shutdown notice went */
  int peer_eof;   /* the client shut its write side: no more reading */
  size_t preface_seen;
  uint64_t last_io_ms;
  uint64_t linger_until;
  uint64_t win_start_ms; /* flood counters' one-second window */
  uint32_t n_rst, n_ping, n_settings, n_empty;
  size_t ncalls;
  ox_grpc_call_t *calls;
  ox_h2_qent_t *q;
  size_t q_head, q_len, q_cap, q_bytes;
};

struct ox_grpc_listener {
  ox_io_t io;
  ox_io_t timer;
  ox_loop_t *loop;
  const ox_grpc_config_t *cfg;
  ox_h2_conn_t *conns;
  ox_h2_conn_t *lingering; /* closed after a GOAWAY, draining input (conn_linger_on_io) */
  ox_h2_conn_t *zombies, *zombies_old;
  ox_h2_conn_t *dirty; /* connections with output the application queued in this batch */
  int draining;
};

static atomic_size_t ox_open_conns;
static atomic_size_t ox_busy;
static atomic_size_t ox_buffered;
/* Hardening counters (since start), also logged when they fire. */
static atomic_uint_fast64_t ox_h2_refused_streams, ox_h2_floods, ox_h2_bad_prefaces,
    ox_h2_conn_refusals, ox_h2_limit_ends;

size_t ox_grpc_open_connections(void) {
  return atomic_load(&ox_open_conns);
}
size_t ox_grpc_busy(void) {
  return atomic_load(&ox_busy);
}
size_t ox_grpc_buffered_bytes(void) {
  return atomic_load(&ox_buffered);
}
uint64_t ox_grpc_counter(ox_grpc_counter_t which) {
  switch (which) {
    case OX_GRPC_REFUSED_STREAMS:
      return atomic_load(&ox_h2_refused_streams);
    case OX_GRPC_FLOODS:
      return atomic_load(&ox_h2_floods);
    case OX_GRPC_BAD_PREFACES:
      return atomic_load(&ox_h2_bad_prefaces);
    case OX_GRPC_CONN_REFUSALS:
      return atomic_load(&ox_h2_conn_refusals);
    case OX_GRPC_LIMIT_ENDS:
      return atomic_load(&ox_h2_limit_ends);
  }
  return 0;
}

static int budget_reserve(size_t max, size_t n) {
  size_t cur = atomic_load_explicit(&ox_buffered, memory_order_relaxed);
  do {
    if (n > max || cur > max - n) return -1;
  } while (!atomic_compare_exchange_weak_explicit(&ox_buffered, &cur, cur + n, memory_order_relaxed,
                                                  memory_order_relaxed));
  return 0;
}
static void budget_release(size_t n) {
  if (n) atomic_fetch_sub_explicit(&ox_buffered, n, memory_order_relaxed);
}

static void conn_close(ox_h2_conn_t *c);
static void conn_flush(ox_h2_conn_t *c);
static void conn_flush_app(ox_h2_conn_t *c);
static void call_end(ox_grpc_call_t *call, ox_grpc_status_t st, const char *msg);

/* ---------------------------------------------------------------------------------------- */
/* messages */

void ox_grpc_msg_free(ox_grpc_msg_t *m) {
  if (!m || !m->base_) return;
  size_t mapped;
  memcpy(&mapped, m->base_, sizeof mapped);
  if (mapped)
    ox_bigbuf_free(m->base_, mapped);
  else
    free(m->base_);
  budget_release(m->reserved_);
  memset(m, 0, sizeof *m);
}

/* A block for a message of len bytes with data + align_off 64-byte aligned. 0 or OX_ENOMEM. */
static int msg_alloc(ox_grpc_msg_t *m, size_t len, size_t align_off) {
  size_t total;
  if (__builtin_add_overflow(len, (size_t)OX_H2_MSG_HDR + OX_H2_ALIGN, &total)) return OX_ENOMEM;
  size_t mapped = 0;
  char *base = NULL;
  if (total >= OX_BIGBUF_MIN) {
    base = ox_bigbuf_alloc(total, &mapped);
  } else if (posix_memalign((void **)&base, OX_H2_ALIGN, total)) {
    base = NULL;
  }
  if (!base) return OX_ENOMEM;
  memcpy(base, &mapped, sizeof mapped);
  size_t pad = (OX_H2_ALIGN - (align_off % OX_H2_ALIGN)) % OX_H2_ALIGN;
  m->base_ = base;
  m->data = base + OX_H2_MSG_HDR + pad;
  m->len = 0;
  return 0;
}

static void out_free(ox_h2_out_t *o) {
  ox_buf_free(&o->o.head);
  free(o->o.iov);
  if (o->o.release) o->o.release(o->o.release_arg);
  free(o);
}

static size_t out_seg_len(const ox_h2_out_t *o, int seg) {
  if (seg == 0) return 5;
  if (seg == 1) return o->o.head.len;
  return o->o.iov[seg - 2].iov_len;
}
static const char *out_seg_ptr(const ox_h2_out_t *o, int seg) {
  if (seg == 0) return (const char *)o->prefix;
  if (seg == 1) return o->o.head.data;
  return o->o.iov[seg - 2].iov_base;
}
static size_t out_left(const ox_h2_out_t *o) {
  size_t n = 0;
  for (int s = o->seg; s < 2 + o->o.iovcnt; s++) n += out_seg_len(o, s);
  return n - o->off;
}

/* ---------------------------------------------------------------------------------------- */
/* output queue */

static int q_push(ox_h2_conn_t *c, const char *p, size_t len, void *own, ox_h2_out_t *done) {
  if (c->q_head + c->q_len == c->q_cap) {
    if (c->q_head) {
      memmove(c->q, c->q + c->q_head, c->q_len * sizeof *c->q);
      c->q_head = 0;
    } else {
      size_t cap = c->q_cap ? c->q_cap * 2 : 64;
      ox_h2_qent_t *q = realloc(c->q, cap * sizeof *q);
      if (!q) return OX_ENOMEM;
      c->q = q;
      c->q_cap = cap;
    }
  }
  c->q[c->q_head + c->q_len++] = (ox_h2_qent_t){p, len, own, done};
  c->q_bytes += len;
  return 0;
}

static void q_pop(ox_h2_conn_t *c) {
  ox_h2_qent_t *e = &c->q[c->q_head++];
  c->q_len--;
  c->q_bytes -= e->len;
  free(e->own);
  if (e->done) out_free(e->done);
  if (!c->q_len) c->q_head = 0;
}

/* A message whose bytes will not all be sent (the call ended): released after what is queued. */
static void out_retire(ox_grpc_call_t *call, ox_h2_out_t *o) {
  if (!call->c || call->c->dead || q_push(call->c, NULL, 0, NULL, o)) out_free(o);
}

static ssize_t cb_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud) {
  ox_h2_conn_t *c = ud;
  if (c->q_bytes >= OX_H2_OUTQ_MAX) return NGHTTP2_ERR_WOULDBLOCK;
  char *p = malloc(len);
  if (!p) return NGHTTP2_ERR_CALLBACK_FAILURE;
  memcpy(p, data, len);
  if (q_push(c, p, len, p, NULL)) {
    free(p);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return (ssize_t)len;
}

static int cb_send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud) {
  ox_h2_conn_t *c = ud;
  /* Not src->ptr: a frame retried after WOULDBLOCK may outlive its stream (and call). */
  ox_grpc_call_t *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
  if (c->q_bytes >= OX_H2_OUTQ_MAX) return NGHTTP2_ERR_WOULDBLOCK;
  char *hd = malloc(9);
  if (!hd) return NGHTTP2_ERR_CALLBACK_FAILURE;
  memcpy(hd, framehd, 9);
  if (q_push(c, hd, 9, hd, NULL)) {
    free(hd);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  while (length) {
    ox_h2_out_t *o = call ? call->out_head : NULL;
    if (!o) {
      /* The bytes cb_read promised are gone (the stream closed, or its call ended, between
       * the promise and this retry): the frame must still be whole, so zeros fill it; the
       * stream is closed or ends with an error status, and the connection lives on. */
      static const char zeros[4096];
      size_t take = length < sizeof zeros ? length : sizeof zeros;
      if (q_push(c, zeros, take, NULL, NULL)) return NGHTTP2_ERR_CALLBACK_FAILURE;
      length -= take;
      continue;
    }
    size_t sl = out_seg_len(o, o->seg);
    size_t take = sl - o->off < length ? sl - o->off : length;
    if (take && q_push(c, out_seg_ptr(o, o->seg) + o->off, take, NULL, NULL))
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    o->off += take;
    length -= take;
    while (o->seg < 2 + o->o.iovcnt && o->off == out_seg_len(o, o->seg)) {
      o->seg++;
      o->off = 0;
    }
    if (o->seg == 2 + o->o.iovcnt) { /* all of it queued: release once written */
      call->out_head = o->next;
      if (!call->out_head) call->out_tail = NULL;
      if (q_push(c, NULL, 0, NULL, o)) {
        out_free(o);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* responses */

/* grpc-message: percent-encoding of every byte outside printable ASCII, and of '%'. */
static char *pct_encode(const char *m) {
  size_t n = strlen(m);
  if (n > 4096) n = 4096;
  char *out = malloc(n * 3 + 1);
  if (!out) return NULL;
  static const char hex[] = "0123456789ABCDEF";
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)m[i];
    if (b < 0x20 || b > 0x7e || b == '%') {
      out[k++] = '%';
      out[k++] = hex[b >> 4];
      out[k++] = hex[b & 15];
    } else {
      out[k++] = (char)b;
    }
  }
  out[k] = 0;
  return out;
}

#define NV(n, v, vl) \
  { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vl), NGHTTP2_NV_FLAG_NO_COPY_NAME }

/* The status fields into nv (room for 3; st: 12 bytes the first points into): grpc-status,
 * grpc-message when there is one, and for UNAVAILABLE grpc-retry-pushback-ms, gRPC's retry
 * hint (REST's Retry-After: 1 on a 503). Returns how many. */
static size_t status_trailers(const ox_grpc_call_t *call, nghttp2_nv *nv, char st[12]) {
  size_t n = 0;
  int sl = snprintf(st, 12, "%d", (int)call->status);
  nv[n++] = (nghttp2_nv)NV("grpc-status", st, (size_t)sl);
  if (call->status_msg)
    nv[n++] = (nghttp2_nv)NV("grpc-message", call->status_msg, strlen(call->status_msg));
  if (call->status == OX_GRPC_UNAVAILABLE)
    nv[n++] = (nghttp2_nv)NV("grpc-retry-pushback-ms", "1000", 4);
  return n;
}

static ssize_t cb_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud) {
  ox_grpc_call_t *call = src->ptr;
  size_t pending = 0;
  for (ox_h2_out_t *o = call->out_head; o && pending < length; o = o->next) pending += out_left(o);
  if (pending == 0) {
    if (!call->ended) return NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    nghttp2_nv tr[3];
    char st[12];
    if (nghttp2_submit_trailer(s, id, tr, status_trailers(call, tr, st)))
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
  }
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  return (ssize_t)(pending < length ? pending : length);
}

/* Response headers (with the data provider) before the first message. */
static int call_start_response(ox_grpc_call_t *call) {
  if (call->hdrs_sent) return 0;
  nghttp2_nv h[2] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16)};
  nghttp2_data_provider prd = {.source.ptr = call, .read_callback = cb_read};
  if (nghttp2_submit_response(call->c->s, call->id, h, 2, &prd)) return OX_ENOMEM;
  call->hdrs_sent = 1;
  return 0;
}

/* The end of the response is decided (status, status_msg set): trailers after what is queued,
 * or a trailers-only response. */
static void call_submit_end(ox_grpc_call_t *call) {
  ox_h2_conn_t *c = call->c;
  if (!c || c->dead || !call->stream) return;
  if (call->hdrs_sent) {
    nghttp2_session_resume_data(c->s, call->id);
  } else {
    char st[12];
    nghttp2_nv h[5] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16)};
    nghttp2_submit_response(c->s, call->id, h, 2 + status_trailers(call, h + 2, st), NULL);
    call->hdrs_sent = 1;
  }
  if (!call->half_closed) call->rst_after = 1;
}

/* Plain HTTP answer (no gRPC status): content-type or method refused. */
static void call_http_error(ox_grpc_call_t *call, const char *status) {
  nghttp2_nv h[1] = {NV(":status", status, strlen(status))};
  nghttp2_submit_response(call->c->s, call->id, h, 1, NULL);
  call->hdrs_sent = call->ended = call->refused = 1;
  if (!call->half_closed) call->rst_after = 1;
}

static void call_set_status(ox_grpc_call_t *call, ox_grpc_status_t st, const char *msg) {
  call->status = st;
  free(call->status_msg);
  call->status_msg = msg ? pct_encode(msg) : NULL;
  call->ended = 1;
}

static void call_free_rx(ox_grpc_call_t *call) {
  free(call->peek);
  call->peek = NULL;
  call->peek_len = 0;
  ox_grpc_msg_free(&call->cur);
  budget_release(call->cur_reserved);
  call->cur_reserved = 0;
}

static void call_maybe_free(ox_grpc_call_t *call) {
  if (call->held || call->stream) return;
  call_free_rx(call);
  while (call->out_head) {
    ox_h2_out_t *o = call->out_head;
    call->out_head = o->next;
    out_free(o);
  }
  free(call->status_msg);
  free(call);
}

/* The transport ends a call the application may hold: status to the client, on_abort. */
static void call_end_ex(ox_grpc_call_t *call, ox_grpc_status_t st, const char *msg, int notify) {
  if (call->ended) return;
  call_set_status(call, st, msg);
  call_free_rx(call); /* queued responses still go (nghttp2 may have promised their bytes) */
  call->refused = 1;
  int was_open = call->held && !call->closed;
  call->closed = 1;
  call_submit_end(call);
  const ox_grpc_handler_t *h = call->c->l->cfg->handler;
  if (notify && was_open && h->on_abort) h->on_abort(call->c->l->cfg->app, call);
}

static void call_end(ox_grpc_call_t *call, ox_grpc_status_t st, const char *msg) {
  call_end_ex(call, st, msg, 1);
}

/* ---------------------------------------------------------------------------------------- */
/* public call API */

ox_loop_t *ox_grpc_call_loop(const ox_grpc_call_t *call) {
  return call->loop;
}
int ox_grpc_call_closed(const ox_grpc_call_t *call) {
  return call->closed;
}
void ox_grpc_call_set_data(ox_grpc_call_t *call, void *data) {
  call->data = data;
}
void *ox_grpc_call_data(const ox_grpc_call_t *call) {
  return call->data;
}

int ox_grpc_call_send(ox_grpc_call_t *call, ox_grpc_out_t *out) {
  ox_h2_out_t *o = NULL;
  if (call->closed || call->ended || !call->c || (o = calloc(1, sizeof *o)) == NULL) {
    int rc = call->closed || call->ended || !call->c ? 0 : OX_ENOMEM;
    ox_buf_free(&out->head);
    free(out->iov);
    if (out->release) out->release(out->release_arg);
    memset(out, 0, sizeof *out);
    return rc;
  }
  o->o = *out;
  memset(out, 0, sizeof *out);
  size_t n = o->o.head.len;
  for (int i = 0; i < o->o.iovcnt; i++) n += o->o.iov[i].iov_len;
  o->prefix[0] = 0;
  uint32_t be = htonl((uint32_t)n);
  memcpy(o->prefix + 1, &be, 4);
  if (call->out_tail)
    call->out_tail->next = o;
  else
    call->out_head = o;
  call->out_tail = o;
  ox_h2_conn_t *c = call->c;
  if (!call->hdrs_sent) {
    if (call_start_response(call)) {
      /* Inside the application's own call: no on_abort under it (it learns from the return
       * value; the call is closed, so further sends are dropped). */
      call_end_ex(call, OX_GRPC_INTERNAL, "out of memory", 0);
      return OX_ENOMEM;
    }
  } else {
    nghttp2_session_resume_data(c->s, call->id);
  }
  if (!c->in_cb) conn_flush_app(c);
  return 0;
}

void ox_grpc_call_finish(ox_grpc_call_t *call, ox_grpc_status_t status, const char *msg) {
  if (!call->held) return;
  call->held = 0;
  atomic_fetch_sub(&ox_busy, 1);
  ox_h2_conn_t *c = NULL;
  if (!call->closed && !call->ended && call->c) {
    call_set_status(call, status, msg);
    call_submit_end(call);
    c = call->c;
  }
  call_maybe_free(call);
  /* Last: writing may close the stream, which frees the call (a closed connection stays
   * allocated until the listener's next tick). */
  if (c && !c->in_cb) conn_flush_app(c);
}

/* ---------------------------------------------------------------------------------------- */
/* receiving */

static void conn_calm(ox_h2_conn_t *c, const char *what) {
  atomic_fetch_add(&ox_h2_floods, 1);
  ox_warn("grpc: %s: GOAWAY ENHANCE_YOUR_CALM, closing the connection", what);
  nghttp2_session_terminate_session(c->s, NGHTTP2_ENHANCE_YOUR_CALM);
  c->goaway = 1;
}

static void flood_window(ox_h2_conn_t *c) {
  uint64_t now = ox_loop_now_ms(c->loop);
  if (now - c->win_start_ms >= 1000) {
    c->win_start_ms = now;
    c->n_rst = c->n_ping = c->n_settings = c->n_empty = 0;
  }
}

static int cb_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud) {
  ox_h2_conn_t *c = ud;
  if (c->goaway) return 0;
  flood_window(c);
  const ox_grpc_config_t *cfg = c->l->cfg;
  switch (hd->type) {
    case NGHTTP2_PING:
      if (!(hd->flags & NGHTTP2_FLAG_ACK) && ++c->n_ping > OX_H2_PING_CAP)
        conn_calm(c, "PING flood");
      break;
    case NGHTTP2_SETTINGS:
      if (!(hd->flags & NGHTTP2_FLAG_ACK) && ++c->n_settings > OX_H2_SETTINGS_CAP)
        conn_calm(c, "SETTINGS flood");
      break;
    case NGHTTP2_DATA:
      if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM) &&
          ++c->n_empty > OX_H2_EMPTY_DATA_CAP)
        conn_calm(c, "empty DATA frame flood");
      break;
    case NGHTTP2_RST_STREAM: {
      uint32_t cap = cfg->max_concurrent_streams * 2;
      if (cap > OX_H2_RESET_CAP) cap = OX_H2_RESET_CAP;
      if (cap < 8) cap = 8;
      if (++c->n_rst > cap) conn_calm(c, "rapid reset (client RST_STREAM rate)");
      break;
    }
    case NGHTTP2_CONTINUATION: {
      ox_grpc_call_t *call = nghttp2_session_get_stream_user_data(s, hd->stream_id);
      if (call && ++call->n_cont > OX_H2_CONTINUATION_CAP) conn_calm(c, "CONTINUATION flood");
      break;
    }
    default:
      break;
  }
  return 0;
}

static int cb_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  ox_h2_conn_t *c = ud;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  /* Drain (the shutdown notice told the client), or over the stream limit (nghttp2 refuses
   * too once our SETTINGS are acknowledged; before that only this check does): the stream gets
   * RST_STREAM REFUSED_STREAM (counted when sent) and no call; its headers are ignored. */
  if (c->l->draining || c->notice || c->ncalls >= c->l->cfg->max_concurrent_streams) {
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
    return 0;
  }
  ox_grpc_call_t *call = calloc(1, sizeof *call);
  if (!call) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  call->c = c;
  call->loop = c->loop;
  call->id = f->hd.stream_id;
  call->stream = 1;
  call->next = c->calls;
  if (c->calls) c->calls->prev = call;
  c->calls = call;
  c->ncalls++;
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, call);
  return 0;
}

static int hdr_eq(const uint8_t *p, size_t n, const char *lit) {
  size_t l = strlen(lit);
  return n == l && memcmp(p, lit, l) == 0;
}

/* grpc-timeout: 1..8 ASCII digits and a unit (H M S m u n); microseconds (at least 1), or -1. */
static int64_t parse_timeout(const uint8_t *v, size_t n) {
  if (n < 2 || n > 9) return -1;
  uint64_t x = 0;
  for (size_t i = 0; i < n - 1; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (uint64_t)(v[i] - '0');
  }
  uint64_t us;
  switch (v[n - 1]) {
    case 'H':
      us = x * 3600000000ull;
      break;
    case 'M':
      us = x * 60000000ull;
      break;
    case 'S':
      us = x * 1000000ull;
      break;
    case 'm':
      us = x * 1000ull;
      break;
    case 'u':
      us = x;
      break;
    case 'n':
      us = (x + 999) / 1000;
      break;
    default:
      return -1;
  }
  return (int64_t)(us ? us : 1); /* 99999999H fits: < 2^62 */
}

static int cb_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
  ox_h2_conn_t *c = ud;
  ox_grpc_call_t *call = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!call || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0; /* trailers: ignored */
  call->hdr_bytes += namelen + valuelen + 32;
  if (call->hdr_bytes > c->l->cfg->max_header_list_bytes) {
    atomic_fetch_add(&ox_h2_limit_ends, 1);
    ox_debug("grpc: stream %d: header list over %u bytes: reset", (int)call->id,
             (unsigned)c->l->cfg->max_header_list_bytes);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  if (hdr_eq(name, namelen, ":method")) {
    call->method_post = hdr_eq(value, valuelen, "POST");
  } else if (hdr_eq(name, namelen, ":path")) {
    call->path_long = valuelen >= sizeof call->path; /* no method is that long */
    size_t n = call->path_long ? 0 : valuelen;
    memcpy(call->path, value, n);
    call->path_len = n;
  } else if (hdr_eq(name, namelen, "content-type")) {
    /* application/grpc, optionally followed by "+proto" / ";..." (gRPC's HTTP/2 spec) */
    call->ctype_ok = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                     (valuelen == 16 || value[16] == '+' || value[16] == ';');
  } else if (hdr_eq(name, namelen, "grpc-timeout")) {
    int64_t us = parse_timeout(value, valuelen);
    if (us < 0)
      call->timeout_bad = 1;
    else
      call->timeout_us = (uint64_t)us;
  } else if (hdr_eq(name, namelen, "grpc-encoding")) {
    call->encoded = !hdr_eq(value, valuelen, "identity");
  }
  return 0;
}

/* Request headers complete: validate, then offer the call to the application. */
static void call_open(ox_h2_conn_t *c, ox_grpc_call_t *call) {
  const ox_grpc_config_t *cfg = c->l->cfg;
  if (!call->method_post) {
    call_http_error(call, "405");
    return;
  }
  if (!call->ctype_ok) { /* gRPC spec: not application/grpc*: HTTP 415 */
    call_http_error(call, "415");
    return;
  }
  call->refused = 1;       /* until taken */
  if (call->timeout_bad) { /* as grpc-go: INTERNAL, "malformed grpc-timeout" */
    call_set_status(call, OX_GRPC_INTERNAL, "malformed grpc-timeout header");
    call_submit_end(call);
    return;
  }
  if (call->path_long) {
    call_set_status(call, OX_GRPC_UNIMPLEMENTED, "method path too long");
    call_submit_end(call);
    return;
  }
  if (call->timeout_us) {
    call->deadline_ms = ox_loop_now_ms(c->loop) + (call->timeout_us + 999) / 1000;
  }
  const char *msg = NULL;
  int st = cfg->handler->on_open(cfg->app, call, ox_slice(call->path, call->path_len),
                                 call->timeout_us, &msg);
  if (st) {
    call_set_status(call, (ox_grpc_status_t)st, msg);
    call_submit_end(call);
    return;
  }
  call->refused = 0;
  call->held = 1;
  atomic_fetch_add(&ox_busy, 1);
}

static void call_half_close(ox_h2_conn_t *c, ox_grpc_call_t *call) {
  call->half_closed = 1;
  call->rst_after = 0;
  if (call->refused || call->closed || !call->held || call->ended) return;
  if (call->mhdr_len || call->cur_reserved || call->cur.base_) {
    call_end(call, OX_GRPC_INTERNAL, "the request ended inside a message");
    return;
  }
  const ox_grpc_handler_t *h = c->l->cfg->handler;
  if (h->on_half_close) h->on_half_close(c->l->cfg->app, call);
}

static int cb_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  ox_h2_conn_t *c = ud;
  ox_grpc_call_t *call = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!call) return 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    call->n_cont = 0;
    call_open(c, call);
  }
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    call_half_close(c, call);
  return 0;
}

/* The message being received is complete: hand it over. */
static void call_deliver(ox_h2_conn_t *c, ox_grpc_call_t *call) {
  ox_grpc_msg_t m = call->cur;
  m.reserved_ = call->cur_reserved;
  call->cur_reserved = 0;
  memset(&call->cur, 0, sizeof call->cur);
  call->mhdr_len = 0;
  c->l->cfg->handler->on_message(c->l->cfg->app, call, &m);
}

static int call_alloc_msg(ox_h2_conn_t *c, ox_grpc_call_t *call) {
  const ox_grpc_config_t *cfg = c->l->cfg;
  size_t off = 0;
  if (cfg->handler->align_offset)
    off = cfg->handler->align_offset(cfg->app, call, call->peek ? call->peek : "", call->peek_len,
                                     call->mlen);
  if (msg_alloc(&call->cur, call->mlen, off)) return OX_ENOMEM;
  if (call->peek_len) memcpy(call->cur.data, call->peek, call->peek_len);
  call->cur.len = call->peek_len;
  free(call->peek);
  call->peek = NULL;
  call->peek_len = 0;
  return 0;
}

static int cb_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud) {
  ox_h2_conn_t *c = ud;
  ox_grpc_call_t *call = nghttp2_session_get_stream_user_data(s, id);
  /* Only calls the application holds take messages (not refused, ended or finished ones). */
  if (!call || call->refused || call->closed || !call->held) return 0;
  const ox_grpc_config_t *cfg = c->l->cfg;
  while (len && call->held && !call->closed && !call->ended) {
    if (call->mhdr_len < 5) {
      size_t take = 5 - call->mhdr_len < len ? 5 - call->mhdr_len : len;
      memcpy(call->mhdr + call->mhdr_len, data, take);
      call->mhdr_len += take;
      data += take;
      len -= take;
      if (call->mhdr_len < 5) break;
      uint32_t be;
      memcpy(&be, call->mhdr + 1, 4);
      call->mlen = ntohl(be);
      if (call->mhdr[0] > 1) {
        call_end(call, OX_GRPC_INTERNAL, "bad message prefix: the compressed flag is not 0 or 1");
        break;
      }
      if (call->mhdr[0] == 1) {
        if (call->encoded)
          call_end(call, OX_GRPC_UNIMPLEMENTED,
                   "compressed messages are not supported; send uncompressed "
                   "(grpc-encoding: identity)");
        else /* as grpc does: flag 1 without an encoding */
          call_end(call, OX_GRPC_INTERNAL,
                   "compressed flag set on a message but no grpc-encoding header");
        break;
      }
      if (call->mlen > cfg->max_message_bytes) {
        char why[160];
        snprintf(why, sizeof why,
                 "received message larger than max (%zu vs. %zu bytes: the server's "
                 "max_message_bytes)",
                 call->mlen, cfg->max_message_bytes);
        atomic_fetch_add(&ox_h2_limit_ends, 1);
        call_end(call, OX_GRPC_RESOURCE_EXHAUSTED, why);
        break;
      }
      if (budget_reserve(cfg->max_buffered_bytes, call->mlen ? call->mlen : 1)) {
        atomic_fetch_add(&ox_h2_limit_ends, 1);
        call_end(call, OX_GRPC_RESOURCE_EXHAUSTED,
                 "server busy: received messages held use the whole memory budget; retry");
        break;
      }
      call->cur_reserved = call->mlen ? call->mlen : 1;
      size_t want_peek = call->mlen < OX_GRPC_PREFIX_PEEK ? call->mlen : OX_GRPC_PREFIX_PEEK;
      if (want_peek == 0 || !cfg->handler->align_offset) {
        if (call_alloc_msg(c, call)) {
          call_end(call, OX_GRPC_RESOURCE_EXHAUSTED, "out of memory");
          break;
        }
      }
    }
    if (!call->cur.base_) { /* gathering the first bytes for align_offset */
      size_t want_peek = call->mlen < OX_GRPC_PREFIX_PEEK ? call->mlen : OX_GRPC_PREFIX_PEEK;
      if (!call->peek && (call->peek = malloc(OX_GRPC_PREFIX_PEEK)) == NULL) {
        call_end(call, OX_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
      size_t take = want_peek - call->peek_len < len ? want_peek - call->peek_len : len;
      memcpy(call->peek + call->peek_len, data, take);
      call->peek_len += take;
      data += take;
      len -= take;
      if (call->peek_len < want_peek) break;
      if (call_alloc_msg(c, call)) {
        call_end(call, OX_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        break;
      }
    }
    size_t take = call->mlen - call->cur.len < len ? call->mlen - call->cur.len : len;
    memcpy(call->cur.data + call->cur.len, data, take);
    call->cur.len += take;
    data += take;
    len -= take;
    if (call->cur.len == call->mlen) call_deliver(c, call);
  }
  return 0;
}

static int cb_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  if (f->hd.type == NGHTTP2_RST_STREAM && f->rst_stream.error_code == NGHTTP2_REFUSED_STREAM)
    atomic_fetch_add(&ox_h2_refused_streams, 1);
  if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
  ox_grpc_call_t *call = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  /* The response is complete while the client still sends: stop its upload (RFC 9113 8.1). */
  if (call && call->rst_after && !call->half_closed)
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
  return 0;
}

/* Detaches the call from its stream; the application hears of it if it still holds it. */
static void call_detach(ox_h2_conn_t *c, ox_grpc_call_t *call) {
  if (call->prev)
    call->prev->next = call->next;
  else
    c->calls = call->next;
  if (call->next) call->next->prev = call->prev;
  call->prev = call->next = NULL;
  c->ncalls--;
  call->stream = 0;
  call_free_rx(call);
  while (call->out_head) { /* queued but never to be sent */
    ox_h2_out_t *o = call->out_head;
    call->out_head = o->next;
    out_retire(call, o);
  }
  call->out_tail = NULL;
  int abort = call->held && !call->closed;
  call->closed = 1;
  call->c = NULL;
  const ox_grpc_config_t *cfg = c->l->cfg;
  if (abort && cfg->handler->on_abort)
    cfg->handler->on_abort(cfg->app, call); /* may finish (and so free) the call */
  else
    call_maybe_free(call);
}

static int cb_stream_close(nghttp2_session *s, int32_t id, uint32_t err, void *ud) {
  ox_h2_conn_t *c = ud;
  ox_grpc_call_t *call = nghttp2_session_get_stream_user_data(s, id);
  if (call) {
    nghttp2_session_set_stream_user_data(s, id, NULL);
    call_detach(c, call);
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* connection */

static void conn_set_events(ox_h2_conn_t *c) {
  if (c->dead) return;
  uint32_t ev = c->peer_eof ? 0 : EPOLLIN | EPOLLRDHUP; /* level-triggered EOF: not again */
  if (c->q_len) ev |= EPOLLOUT;
  ox_loop_modify(c->loop, &c->io, ev);
}

/* Writes the output queue; refills it from nghttp2 while the socket takes bytes. */
static void conn_flush(ox_h2_conn_t *c) {
  if (c->dead || c->in_cb) return;
  for (;;) {
    while (c->q_len && c->q[c->q_head].len == 0) q_pop(c); /* release markers */
    if (!c->q_len) {
      if (c->want_close) break;
      c->in_cb = 1;
      int rv = nghttp2_session_send(c->s);
      c->in_cb = 0;
      if (rv) {
        c->want_close = 1;
        break;
      }
      while (c->q_len && c->q[c->q_head].len == 0) q_pop(c);
      if (!c->q_len) break;
    }
    struct iovec iov[64];
    int n = 0;
    for (size_t i = c->q_head; i < c->q_head + c->q_len && n < 64; i++)
      if (c->q[i].len) iov[n++] = (struct iovec){(void *)c->q[i].p, c->q[i].len};
    ssize_t w = writev(c->io.fd, iov, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      c->want_close = 1;
      break;
    }
    c->last_io_ms = ox_loop_now_ms(c->loop);
    atomic_fetch_add_explicit(&ox_process_stats.bytes_out, (uint64_t)w, memory_order_relaxed);
    size_t left = (size_t)w;
    while (c->q_len) {
      ox_h2_qent_t *e = &c->q[c->q_head];
      if (left < e->len) {
        e->p += left;
        e->len -= left;
        c->q_bytes -= left;
        break;
      }
      left -= e->len;
      q_pop(c);
    }
  }
  if (!c->want_close && !c->q_len &&
      ((!nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s)) ||
       ((c->goaway || (c->peer_eof && !c->ncalls)) && !nghttp2_session_want_write(c->s))))
    c->want_close = 1;
  if (c->want_close)
    conn_close(c);
  else
    conn_set_events(c);
}

/* Output the application queued (send, finish): written once per batch of loop events, by
 * listener_after, so that the answers a batch of completions produced for one connection leave
 * in one nghttp2_session_send and one writev (and never under the application's call). */
static void conn_flush_app(ox_h2_conn_t *c) {
  if (c->dirty || c->dead) return;
  c->dirty = 1;
  c->dirty_next = c->l->dirty;
  c->l->dirty = c;
}

static void listener_after(ox_loop_t *loop, void *arg) {
  (void)loop;
  ox_grpc_listener_t *l = arg;
  while (l->dirty) {
    ox_h2_conn_t *c = l->dirty;
    l->dirty = c->dirty_next;
    c->dirty = 0;
    c->dirty_next = NULL;
    conn_flush(c);
  }
}

/* A closing connection leaves the dirty list (it may be freed before the batch ends). */
static void conn_undirty(ox_h2_conn_t *c) {
  if (!c->dirty) return;
  for (ox_h2_conn_t **p = &c->l->dirty; *p; p = &(*p)->dirty_next)
    if (*p == c) {
      *p = c->dirty_next;
      break;
    }
  c->dirty = 0;
  c->dirty_next = NULL;
}

static void conn_unlink(ox_h2_conn_t **head, ox_h2_conn_t *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    *head = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

/* The socket goes; the struct waits on the zombie list. */
static void conn_release(ox_h2_conn_t *c) {
  ox_loop_remove(c->loop, &c->io);
  close(c->io.fd);
  c->io.fd = -1;
  atomic_fetch_sub(&ox_open_conns, 1);
  c->next = c->l->zombies;
  c->l->zombies = c;
}

/* Lingering after a GOAWAY: input is read and dropped until the client closes or
 * OX_H2_LINGER_MS pass, so that closing with unread bytes does not reset the connection
 * before the client has read the GOAWAY. */
static void conn_linger_on_io(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  ox_h2_conn_t *c = io->data;
  char sink[4096];
  for (int i = 0; i < 16; i++) {
    ssize_t r = read(c->io.fd, sink, sizeof sink);
    if (r > 0) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    break;
  }
  conn_unlink(&c->l->lingering, c);
  conn_release(c);
}

/* Closes the socket, aborts the calls, frees the session; the struct goes on the zombie list. */
static void conn_close(ox_h2_conn_t *c) {
  if (c->dead) return;
  c->dead = 1;
  conn_undirty(c);
  conn_unlink(&c->l->conns, c);
  c->in_cb = 1; /* the application may call send/finish from on_abort: no flushing */
  while (c->calls) call_detach(c, c->calls);
  int unsent = c->q_len > 0;
  while (c->q_len) q_pop(c);
  free(c->q);
  c->q = NULL;
  nghttp2_session_del(c->s);
  c->s = NULL;
  if (c->goaway && !unsent && shutdown(c->io.fd, SHUT_WR) == 0) {
    c->io.cb = conn_linger_on_io;
    c->linger_until = ox_loop_now_ms(c->loop) + OX_H2_LINGER_MS;
    ox_loop_modify(c->loop, &c->io, EPOLLIN | EPOLLRDHUP);
    c->next = c->l->lingering;
    if (c->next) c->next->prev = c;
    c->l->lingering = c;
    return;
  }
  conn_release(c);
}

static void conn_on_readable(ox_h2_conn_t *c) {
  uint8_t buf[OX_H2_READ_CHUNK];
  for (int rounds = 0; rounds < 16 && !c->dead && !c->want_close && !c->peer_eof; rounds++) {
    ssize_t r = read(c->io.fd, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) c->want_close = 1;
      break;
    }
    if (r == 0) {
      /* The client shut its write side: answer the calls already in (it may still read),
       * then close. */
      c->peer_eof = 1;
      break;
    }
    atomic_fetch_add_explicit(&ox_process_stats.bytes_in, (uint64_t)r, memory_order_relaxed);
    c->last_io_ms = ox_loop_now_ms(c->loop);
    if (c->preface_seen < OX_H2_PREFACE_LEN) {
      size_t n = OX_H2_PREFACE_LEN - c->preface_seen;
      if ((size_t)r < n) n = (size_t)r;
      if (memcmp(buf, ox_h2_preface + c->preface_seen, n) != 0) {
        atomic_fetch_add(&ox_h2_bad_prefaces, 1);
        ox_debug("grpc: connection does not start with the HTTP/2 preface: closed");
        c->want_close = 1;
        break;
      }
      c->preface_seen += n;
    }
    if (c->goaway) continue; /* terminating: input is drained, not processed */
    c->in_cb = 1;
    ssize_t rv = nghttp2_session_mem_recv(c->s, buf, (size_t)r);
    c->in_cb = 0;
    if (rv < 0) {
      ox_debug("grpc: HTTP/2 session error: %s", nghttp2_strerror((int)rv));
      if (rv == NGHTTP2_ERR_FLOODED) {
        atomic_fetch_add(&ox_h2_floods, 1);
        ox_warn("grpc: peer floods the connection (unread ACKs): closing");
      }
      c->want_close = 1;
      break;
    }
    if ((size_t)r < sizeof buf) break;
  }
  conn_flush(c);
}

static void conn_on_io(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  ox_h2_conn_t *c = io->data;
  if (c->dead) return;
  if (events & (EPOLLERR | EPOLLHUP)) {
    conn_close(c);
    return;
  }
  if (events & (EPOLLIN | EPOLLRDHUP))
    conn_on_readable(c);
  else if (events & EPOLLOUT)
    conn_flush(c);
}

static int conn_session_new(ox_h2_conn_t *c) {
  const ox_grpc_config_t *cfg = c->l->cfg;
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs)) return OX_ENOMEM;
  nghttp2_session_callbacks_set_send_callback(cbs, cb_send);
  nghttp2_session_callbacks_set_send_data_callback(cbs, cb_send_data);
  nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, cb_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, cb_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, cb_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, cb_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, cb_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, cb_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, cb_stream_close);
  nghttp2_option *opt;
  if (nghttp2_option_new(&opt)) {
    nghttp2_session_callbacks_del(cbs);
    return OX_ENOMEM;
  }
  nghttp2_option_set_max_outbound_ack(opt, OX_H2_MAX_OUTBOUND_ACK);
  nghttp2_option_set_max_settings(opt, 32); /* entries in one SETTINGS frame */
  int rv = nghttp2_session_server_new2(&c->s, cbs, c, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv) return OX_ENOMEM;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg->window_bytes},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_header_list_bytes},
  };
  if (nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) ||
      nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, (int32_t)cfg->window_bytes))
    return OX_ENOMEM;
  return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* listener */

static void listener_on_accept(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  ox_grpc_listener_t *l = io->data;
  for (int i = 0; i < 64; i++) {
    int fd = accept4(l->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) ox_warn("grpc accept: %s", strerror(errno));
      return;
    }
    ox_h2_conn_t *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->io = (ox_io_t){.fd = fd, .cb = conn_on_io, .data = c};
    c->l = l;
    c->loop = loop;
    c->last_io_ms = c->win_start_ms = ox_loop_now_ms(loop);
    if (conn_session_new(c) || ox_loop_add(loop, &c->io, EPOLLIN | EPOLLRDHUP)) {
      if (c->s) nghttp2_session_del(c->s);
      close(fd);
      free(c);
      continue;
    }
    atomic_fetch_add(&ox_open_conns, 1);
    c->next = l->conns;
    if (l->conns) l->conns->prev = c;
    l->conns = c;
    int over = atomic_load(&ox_open_conns) > l->cfg->max_connections;
    if (over || l->draining) {
      /* Over the cap or draining: SETTINGS then GOAWAY (NO_ERROR, last stream 0: nothing was
       * processed, a client may retry elsewhere) at once. */
      if (over) {
        atomic_fetch_add(&ox_h2_conn_refusals, 1);
        ox_debug("grpc: connection cap (%u) reached: GOAWAY", (unsigned)l->cfg->max_connections);
      }
      static const char why_cap[] = "connection limit", why_drain[] = "draining";
      nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR,
                            (const uint8_t *)(over ? why_cap : why_drain),
                            over ? sizeof why_cap - 1 : sizeof why_drain - 1);
      c->goaway = 1;
    }
    conn_flush(c);
  }
}

static void listener_free_zombies(ox_h2_conn_t *z) {
  while (z) {
    ox_h2_conn_t *n = z->next;
    free(z);
    z = n;
  }
}

static void conn_drain_step(ox_h2_conn_t *c) {
  if (!c->notice) {
    nghttp2_submit_shutdown_notice(c->s);
    c->notice = 1;
  }
  if (!c->goaway && c->ncalls == 0) {
    nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    c->goaway = 1;
  }
}

static void listener_on_timer(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  ox_grpc_listener_t *l = io->data;
  uint64_t exp;
  ssize_t r = read(l->timer.fd, &exp, sizeof exp);
  (void)r;
  /* Zombies closed before the previous tick can no longer be named by any epoll batch. */
  listener_free_zombies(l->zombies_old);
  l->zombies_old = l->zombies;
  l->zombies = NULL;
  uint64_t now = ox_loop_now_ms(loop);
  for (ox_h2_conn_t *c = l->lingering, *next; c; c = next) {
    next = c->next;
    if (now >= c->linger_until) {
      conn_unlink(&l->lingering, c);
      conn_release(c);
    }
  }
  const ox_grpc_config_t *cfg = l->cfg;
  ox_h2_conn_t *c = l->conns;
  while (c) {
    ox_h2_conn_t *next = c->next;
    c->in_cb = 1;
    for (ox_grpc_call_t *call = c->calls; call; call = call->next)
      if (call->deadline_ms && now >= call->deadline_ms && !call->ended) {
        atomic_fetch_add(&ox_h2_limit_ends, 1);
        call_end(call, OX_GRPC_DEADLINE_EXCEEDED, "deadline exceeded (grpc-timeout)");
      }
    c->in_cb = 0;
    /* Idle: no call, calls waiting on the peer (output stuck) or a peer that shut its side,
     * and no bytes either way. */
    int waiting = c->q_len > 0 || c->peer_eof;
    for (ox_grpc_call_t *call = c->calls; call && !waiting; call = call->next)
      waiting = call->out_head != NULL;
    if ((c->ncalls == 0 || waiting) && now - c->last_io_ms >= cfg->idle_timeout_ms) {
      ox_debug("grpc: connection idle for %u ms: closed", (unsigned)cfg->idle_timeout_ms);
      if (!c->goaway && c->ncalls == 0) {
        nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->s), NGHTTP2_NO_ERROR, NULL,
                              0);
        c->goaway = 1;
        conn_flush(c); /* best effort, then closed */
      }
      conn_close(c);
    } else {
      if (l->draining) conn_drain_step(c);
      conn_flush(c);
    }
    c = next;
  }
}

void ox_grpc_config_defaults(ox_grpc_config_t *cfg) {
  if (!cfg->max_concurrent_streams) cfg->max_concurrent_streams = 128;
  if (!cfg->max_message_bytes) cfg->max_message_bytes = 64u << 20;
  if (!cfg->max_header_list_bytes) cfg->max_header_list_bytes = 16u << 10;
  if (!cfg->window_bytes) cfg->window_bytes = 16u << 20;
  if (!cfg->max_buffered_bytes) cfg->max_buffered_bytes = (size_t)1 << 30;
  if (!cfg->idle_timeout_ms) cfg->idle_timeout_ms = 300000;
  if (!cfg->max_connections) cfg->max_connections = 10000;
}

int ox_grpc_listener_create(ox_loop_t *loop, const char *host, uint16_t *port,
                            const ox_grpc_config_t *cfg, ox_grpc_listener_t **out) {
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%u", (unsigned)*port);
  if (!cfg || !cfg->handler || !cfg->handler->on_open || !cfg->handler->on_message ||
      !cfg->max_concurrent_streams || !cfg->max_message_bytes || !cfg->max_header_list_bytes ||
      cfg->window_bytes < 65535 || cfg->window_bytes > 0x7fffffffu || !cfg->max_buffered_bytes ||
      !cfg->idle_timeout_ms || !cfg->max_connections)
    return OX_EINVALID;
  if (getaddrinfo(host, portstr, &hints, &ai) != 0 || !ai) return OX_EINVALID;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(ai);
    return -errno;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
    int e = -errno;
    close(fd);
    freeaddrinfo(ai);
    return e;
  }
  freeaddrinfo(ai);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
  ox_grpc_listener_t *l = calloc(1, sizeof *l);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (!l || tfd < 0) {
    int e = !l ? OX_ENOMEM : -errno;
    if (tfd >= 0) close(tfd);
    close(fd);
    free(l);
    return e;
  }
  struct itimerspec its = {.it_interval = {0, OX_H2_TICK_MS * 1000000L},
                           .it_value = {0, OX_H2_TICK_MS * 1000000L}};
  timerfd_settime(tfd, 0, &its, NULL);
  l->io = (ox_io_t){.fd = fd, .cb = listener_on_accept, .data = l};
  l->timer = (ox_io_t){.fd = tfd, .cb = listener_on_timer, .data = l};
  l->loop = loop;
  l->cfg = cfg;
  int rc = ox_loop_add(loop, &l->io, EPOLLIN);
  if (!rc && (rc = ox_loop_add(loop, &l->timer, EPOLLIN)) != 0) ox_loop_remove(loop, &l->io);
  if (!rc && (rc = ox_loop_add_after(loop, listener_after, l)) != 0) {
    ox_loop_remove(loop, &l->io);
    ox_loop_remove(loop, &l->timer);
  }
  if (rc) {
    close(fd);
    close(tfd);
    free(l);
    return rc;
  }
  *out = l;
  return 0;
}

void ox_grpc_listener_drain(ox_grpc_listener_t *l) {
  l->draining = 1;
  for (ox_h2_conn_t *c = l->conns, *next; c; c = next) {
    next = c->next;
    conn_drain_step(c);
    conn_flush(c);
  }
}

void ox_grpc_listener_stop_accepting(ox_grpc_listener_t *l) {
  if (l->io.fd >= 0) {
    ox_loop_remove(l->loop, &l->io);
    close(l->io.fd);
    l->io.fd = -1;
  }
}

void ox_grpc_listener_destroy(ox_grpc_listener_t *l) {
  if (!l) return;
  ox_grpc_listener_stop_accepting(l);
  while (l->conns) conn_close(l->conns);
  while (l->lingering) {
    ox_h2_conn_t *c = l->lingering;
    conn_unlink(&l->lingering, c);
    conn_release(c);
  }
  ox_loop_remove(l->loop, &l->timer);
  ox_loop_remove_after(l->loop, listener_after, l);
  close(l->timer.fd);
  listener_free_zombies(l->zombies_old);
  listener_free_zombies(l->zombies);
  free(l);
}
