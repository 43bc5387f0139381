/* grpc_loadgen_worker.c: onnxd-grpc-bench's per-thread epoll loop (see grpc_loadgen_worker.h).
 *
 * Sockets are non-blocking and registered once, edge-triggered, for both directions. nghttp2 is
 * used through its memory interface: bytes read from the socket go to nghttp2_session_mem_recv,
 * and the frames nghttp2_session_mem_send hands out are gathered into the connection's output
 * buffer and written with one send per 128 KiB, so many small frames (64 calls of a 16-float
 * MLP) cost one system call, not one each. A 600 KB request streams through the same buffer as
 * flow control allows; we announce a 16 MiB stream and connection window so the server's answers
 * never wait for a WINDOW_UPDATE.
 *
 * Connection states: DOWN -(retry every 10 ms)-> UP. Connecting is a blocking connect bounded by
 * --timeout-ms (on loopback it is immediate): it happens at setup and again only when the server
 * has dropped a connection, which a benchmark reports as errors anyway. A lost connection counts
 * every call it had in flight as an io error. Timeouts are found by a scan every 5 ms; a call
 * over its time is counted as a timeout and cancelled with RST_STREAM, and its slot is reused
 * when nghttp2 reports the stream closed.
 */
#include "grpc_loadgen_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"

enum { C_DOWN, C_UP };

#define RBUF (64 * 1024)
#define FLUSH_AT (128 * 1024)    /* gathered output is written once it reaches this */
#define OBUF_INIT (160 * 1024)   /* FLUSH_AT plus one DATA frame and then some */
#define RECONNECT_NS 10000000ULL /* a refused connection is retried after 10 ms */
#define SCAN_NS 5000000ULL       /* timeouts and reconnections are checked every 5 ms */
#define MAX_WAIT_NS 50000000ULL  /* the stop flag is looked at least every 50 ms */
#define MAX_EVENTS 256

/* One call slot: preallocated, reused by the connection's next call when this one ends. */
typedef struct {
  ox_glg_conn_t *conn;
  int32_t stream_id; /* 0 while free */
  uint8_t counted;   /* started inside the measured window */
  uint8_t timed_out; /* counted as a timeout and cancelled; its close is not counted again */
  uint8_t hdr_have;  /* bytes of the current response message's 5-byte prefix seen */
  uint8_t hdr[5];
  int http_status;   /* :status, 0 until seen */
  int grpc_status;   /* grpc-status, -1 until seen, -2 when not a number */
  uint32_t msg_left; /* bytes of the current response message still to come */
  uint32_t messages; /* whole response messages received */
  size_t sent;       /* request message bytes handed to nghttp2 */
  uint64_t start;    /* submit time, ns */
} call_t;

struct ox_glg_conn {
  int fd;
  uint8_t state;
  uint8_t dying; /* being torn down: nghttp2's callbacks change nothing */
  int active;    /* calls in flight (slots with a stream) */
  nghttp2_session *s;
  struct run *run;
  call_t *calls; /* owned: cfg->streams slots */
  int *free_;    /* owned: stack of free slot indexes */
  int nfree;
  uint8_t *obuf; /* owned: gathered output, [ooff, olen) still to write */
  size_t olen, ooff, ocap;
  uint64_t deadline; /* in DOWN: when to reconnect */
};

/* The loop's own state, on the worker thread's stack. */
typedef struct run {
  ox_glg_worker_t *w;
  const ox_glg_config_t *cfg;
  int loading; /* 0 during setup: no call is started */
  uint64_t now;
  uint8_t *rbuf; /* owned: RBUF bytes, shared by the worker's connections */
} run_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int measuring(const run_t *r) {
  return r->loading && r->now >= r->cfg->t_measure && r->now < r->cfg->t_end;
}

static int can_start(const run_t *r) {
  return r->loading && r->now < r->cfg->t_end && !atomic_load(r->cfg->stop);
}

/* ---- outcomes ----------------------------------------------------------------------------- */

static void count_error(run_t *r, ox_glg_err_kind_t kind) {
  if (!measuring(r)) return;
  r->w->errors++;
  r->w->by_kind[kind]++;
}

/* A counted call has ended; kind is OX_GLG_ERR_COUNT_ unless the transport failed. */
static void count_call(run_t *r, const call_t *k, ox_glg_err_kind_t kind) {
  ox_glg_worker_t *w = r->w;
  uint64_t t = now_ns();
  if (t >= r->cfg->t_end) { /* ended after the window closed: not measured */
    w->incomplete++;
    return;
  }
  w->calls++;
  if (kind == OX_GLG_ERR_COUNT_) {
    if (k->http_status && k->http_status != 200) {
      w->errors++;
      w->by_http_status[k->http_status]++;
      return;
    }
    if (k->grpc_status < 0 || k->grpc_status >= OX_GLG_GRPC_CODES)
      kind = OX_GLG_ERR_PROTOCOL;
    else if (k->grpc_status > 0) {
      w->errors++;
      w->by_grpc_status[k->grpc_status]++;
      return;
    } else if (k->messages == 0)
      kind = OX_GLG_ERR_NO_MESSAGE;
  }
  if (kind != OX_GLG_ERR_COUNT_) {
    w->errors++;
    w->by_kind[kind]++;
    return;
  }
  w->ok++;
  ox_lg_hist_record(&w->hist, t - k->start);
}

static void free_slot(ox_glg_conn_t *c, call_t *k) {
  k->stream_id = 0;
  c->active--;
  c->free_[c->nfree++] = (int)(k - c->calls);
}

/* ---- nghttp2 callbacks -------------------------------------------------------------------- */

/* The request body: copied out of the shared message as nghttp2 asks for it. */
static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
  (void)s, (void)id;
  call_t *k = src->ptr;
  const ox_glg_config_t *cfg = ((ox_glg_conn_t *)ud)->run->cfg;
  size_t n = cfg->msg_len - k->sent;
  if (n > len) n = len;
  memcpy(buf, cfg->msg + k->sent, n);
  k->sent += n;
  if (k->sent == cfg->msg_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* A small non-negative decimal, or -2. */
static int parse_code(const uint8_t *v, size_t n) {
  if (n == 0 || n > 4) return -2;
  int x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -2;
    x = x * 10 + (v[i] - '0');
  }
  return x;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud) {
  (void)flags, (void)ud;
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  call_t *k = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!k) return 0;
  if (namelen == 7 && !memcmp(name, ":status", 7)) {
    int st = parse_code(value, valuelen);
    k->http_status = st >= 100 && st < 1000 ? st : 999;
  } else if (namelen == 11 && !memcmp(name, "grpc-status", 11)) {
    k->grpc_status = parse_code(value, valuelen);
  }
  return 0;
}

/* Counts whole response messages: each is a 5-byte prefix (flag, 32-bit big-endian length) and
 * that many bytes, possibly cut anywhere by DATA frames. */
static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud) {
  (void)flags, (void)ud;
  call_t *k = nghttp2_session_get_stream_user_data(s, id);
  if (!k) return 0;
  while (len) {
    if (k->hdr_have < 5) {
      k->hdr[k->hdr_have++] = *data++;
      len--;
      if (k->hdr_have < 5) continue;
      k->msg_left = (uint32_t)k->hdr[1] << 24 | (uint32_t)k->hdr[2] << 16 |
                    (uint32_t)k->hdr[3] << 8 | k->hdr[4];
    } else {
      size_t n = len < k->msg_left ? len : k->msg_left;
      k->msg_left -= (uint32_t)n;
      data += n;
      len -= n;
    }
    if (k->hdr_have == 5 && k->msg_left == 0) {
      k->messages++;
      k->hdr_have = 0;
    }
  }
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud) {
  ox_glg_conn_t *c = ud;
  call_t *k = nghttp2_session_get_stream_user_data(s, id);
  if (!k || c->dying || k->stream_id != id) return 0;
  if (k->counted && !k->timed_out)
    count_call(
        c->run, k,
        error_code != NGHTTP2_NO_ERROR && k->grpc_status == -1 ? OX_GLG_ERR_IO : OX_GLG_ERR_COUNT_);
  free_slot(c, k);
  return 0;
}

static nghttp2_session_callbacks *g_callbacks; /* built once by the first worker, never freed */
static pthread_once_t g_callbacks_once = PTHREAD_ONCE_INIT;

static void make_callbacks(void) {
  if (nghttp2_session_callbacks_new(&g_callbacks) != 0) return;
  nghttp2_session_callbacks_set_on_header_callback(g_callbacks, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_callbacks, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(g_callbacks, on_close);
}

/* ---- connections -------------------------------------------------------------------------- */

/* Writes gathered output, gathering more from nghttp2 as the socket takes it. Returns 0 (all
 * written, or the socket is full and EPOLLOUT will call again), -errno, OX_EINVALID (nghttp2). */
static int conn_flush(run_t *r, ox_glg_conn_t *c) {
  for (;;) {
    while (c->olen - c->ooff < FLUSH_AT) {
      const uint8_t *p;
      ssize_t n = nghttp2_session_mem_send(c->s, &p);
      if (n < 0) return OX_EINVALID;
      if (n == 0) break;
      if (c->ooff && c->olen + (size_t)n > c->ocap) {
        memmove(c->obuf, c->obuf + c->ooff, c->olen - c->ooff);
        c->olen -= c->ooff;
        c->ooff = 0;
      }
      if (c->olen + (size_t)n > c->ocap) { /* a frame larger than expected: grow once */
        uint8_t *nb = realloc(c->obuf, c->olen + (size_t)n);
        if (!nb) return OX_ENOMEM;
        c->obuf = nb;
        c->ocap = c->olen + (size_t)n;
      }
      memcpy(c->obuf + c->olen, p, (size_t)n);
      c->olen += (size_t)n;
    }
    if (c->olen == c->ooff) {
      c->olen = c->ooff = 0;
      return 0;
    }
    ssize_t k = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    c->ooff += (size_t)k;
    if (measuring(r)) r->w->bytes_sent += (uint64_t)k;
  }
}

/* Starts calls on every free slot of an open connection (load phase only). */
static int conn_fill(run_t *r, ox_glg_conn_t *c) {
  const ox_glg_config_t *cfg = r->cfg;
  while (c->nfree && can_start(r)) {
    call_t *k = &c->calls[c->free_[c->nfree - 1]];
    nghttp2_data_provider dp = {.source.ptr = k, .read_callback = read_body};
    k->counted = r->now >= cfg->t_measure;
    k->timed_out = 0;
    k->hdr_have = 0;
    k->http_status = 0;
    k->grpc_status = -1;
    k->msg_left = 0;
    k->messages = 0;
    k->sent = 0;
    k->start = now_ns();
    int32_t id = nghttp2_submit_request(c->s, NULL, cfg->nva, cfg->nvlen, &dp, k);
    if (id < 0) return OX_EINVALID; /* stream ids used up, or the session is going away */
    k->stream_id = id;
    c->nfree--;
    c->active++;
  }
  return 0;
}

/* Ends a connection: its calls in flight fail (io), and it is reopened after RECONNECT_NS. */
static void conn_down(run_t *r, ox_glg_conn_t *c, ox_glg_err_kind_t kind) {
  c->dying = 1;
  for (int i = 0; i < r->cfg->streams; i++) {
    call_t *k = &c->calls[i];
    if (!k->stream_id) continue;
    if (k->counted && !k->timed_out) count_call(r, k, kind);
    free_slot(c, k);
  }
  if (c->s) nghttp2_session_del(c->s);
  c->s = NULL;
  if (c->fd >= 0) close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
  c->olen = c->ooff = 0;
  c->state = C_DOWN;
  c->deadline = r->now + RECONNECT_NS;
  c->dying = 0;
}

/* Opens c: a connect bounded by the timeout, then a client session with our SETTINGS (large
 * windows, no push) queued. Returns 0, -errno, OX_ETIMEOUT, OX_ENOMEM. */
static int conn_open(run_t *r, ox_glg_conn_t *c) {
  const ox_glg_config_t *cfg = r->cfg;
  int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc = 0;
  if (connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) != 0) {
    rc = -errno;
    if (rc == -EINPROGRESS) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      int ms = (int)(cfg->timeout_ns / 1000000);
      int n;
      while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR) {
      }
      int err = 0;
      socklen_t el = sizeof err;
      if (n == 0)
        rc = OX_ETIMEOUT;
      else if (n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
        rc = -errno;
      else
        rc = -err;
    }
  }
  if (rc) {
    close(fd);
    return rc;
  }
  nghttp2_option *opt = NULL;
  if (nghttp2_option_new(&opt) != 0 ||
      nghttp2_session_client_new2(&c->s, g_callbacks, c, opt) != 0) {
    nghttp2_option_del(opt);
    close(fd);
    return OX_ENOMEM;
  }
  nghttp2_option_del(opt);
  nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                 {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)cfg->window}};
  if (nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
      nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, cfg->window) != 0) {
    nghttp2_session_del(c->s);
    c->s = NULL;
    close(fd);
    return OX_ENOMEM;
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, .data.ptr = c};
  if (epoll_ctl(r->w->epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    rc = -errno;
    nghttp2_session_del(c->s);
    c->s = NULL;
    close(fd);
    return rc;
  }
  c->fd = fd;
  c->state = C_UP;
  return 0;
}

/* Reads everything the socket has into the session. Returns 0, 1 when the peer closed, -errno,
 * OX_EINVALID (the peer broke HTTP/2). */
static int conn_read(run_t *r, ox_glg_conn_t *c) {
  for (;;) {
    ssize_t n = recv(c->fd, r->rbuf, RBUF, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    if (n == 0) return 1;
    if (measuring(r)) r->w->bytes_received += (uint64_t)n;
    if (nghttp2_session_mem_recv(c->s, r->rbuf, (size_t)n) < 0) return OX_EINVALID;
  }
}

/* Reads, starts calls on freed slots, writes; takes the connection down on any failure. */
static void conn_service(run_t *r, ox_glg_conn_t *c, int readable) {
  int rc = readable ? conn_read(r, c) : 0;
  /* Writing can free slots too (a cancelled stream closes when its RST_STREAM goes out, and the
   * server sends nothing more on it): one more pass starts calls on those. */
  for (int pass = 0; rc == 0 && pass < 2; pass++) {
    rc = conn_fill(r, c);
    if (rc == 0) rc = conn_flush(r, c);
    if (!c->nfree || !can_start(r)) break;
  }
  if (rc == 0 && !nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s) &&
      c->olen == c->ooff)
    rc = 1; /* GOAWAY handled and nothing left: the session is over */
  if (rc) conn_down(r, c, rc == OX_EINVALID ? OX_GLG_ERR_PROTOCOL : OX_GLG_ERR_IO);
}

/* Timeouts of calls and reconnections of dropped connections. */
static void scan(run_t *r) {
  for (int i = 0; i < r->w->nconns; i++) {
    ox_glg_conn_t *c = &r->w->conns_[i];
    if (c->state == C_DOWN) {
      if (r->now < c->deadline || !can_start(r)) continue;
      if (conn_open(r, c) != 0) {
        count_error(r, OX_GLG_ERR_CONNECT);
        c->deadline = r->now + RECONNECT_NS;
        continue;
      }
      conn_service(r, c, 0);
      continue;
    }
    int cancelled = 0;
    for (int j = 0; j < r->cfg->streams; j++) {
      call_t *k = &c->calls[j];
      if (!k->stream_id || k->timed_out || r->now - k->start < r->cfg->timeout_ns) continue;
      k->timed_out = 1;
      if (k->counted) count_call(r, k, OX_GLG_ERR_TIMEOUT);
      nghttp2_submit_rst_stream(c->s, NGHTTP2_FLAG_NONE, k->stream_id, NGHTTP2_CANCEL);
      cancelled = 1;
    }
    if (cancelled) conn_service(r, c, 0);
  }
}

/* ---- the two phases ----------------------------------------------------------------------- */

static int setup(run_t *r) {
  ox_glg_worker_t *w = r->w;
  pthread_once(&g_callbacks_once, make_callbacks);
  if (!g_callbacks) return OX_ENOMEM;
  w->epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (w->epfd_ < 0) return -errno;
  r->rbuf = malloc(RBUF);
  w->conns_ = calloc((size_t)w->nconns, sizeof *w->conns_);
  if (!r->rbuf || !w->conns_) return OX_ENOMEM;
  int ns = r->cfg->streams;
  for (int i = 0; i < w->nconns; i++) w->conns_[i].fd = -1; /* destroy may run after a failure */
  for (int i = 0; i < w->nconns; i++) {
    ox_glg_conn_t *c = &w->conns_[i];
    c->run = r;
    c->calls = calloc((size_t)ns, sizeof *c->calls);
    c->free_ = malloc((size_t)ns * sizeof *c->free_);
    c->obuf = malloc(OBUF_INIT);
    if (!c->calls || !c->free_ || !c->obuf) return OX_ENOMEM;
    c->ocap = OBUF_INIT;
    for (int j = 0; j < ns; j++) {
      c->calls[j].conn = c;
      c->free_[j] = ns - 1 - j; /* slot 0 is used first */
    }
    c->nfree = ns;
    c->active = 0;
  }
  for (int i = 0; i < w->nconns; i++) {
    ox_glg_conn_t *c = &w->conns_[i];
    int rc = conn_open(r, c);
    if (rc == 0) rc = conn_flush(r, c); /* preface and SETTINGS go out now */
    if (rc) return rc;
  }
  return 0;
}

static int load(run_t *r) {
  ox_glg_worker_t *w = r->w;
  const ox_glg_config_t *cfg = r->cfg;
  struct epoll_event evs[MAX_EVENTS];
  r->loading = 1;
  r->now = now_ns();
  for (int i = 0; i < w->nconns; i++) conn_service(r, &w->conns_[i], 1);
  uint64_t next_scan = r->now + SCAN_NS;
  for (;;) {
    r->now = now_ns();
    if (atomic_load(cfg->stop) || r->now >= cfg->t_end) break;
    if (r->now >= next_scan) {
      scan(r);
      next_scan = r->now + SCAN_NS;
    }
    uint64_t until = r->now + MAX_WAIT_NS;
    if (next_scan < until) until = next_scan;
    if (cfg->t_end < until) until = cfg->t_end;
    int ms = until > r->now ? (int)((until - r->now + 999999) / 1000000) : 0;
    int n = epoll_wait(w->epfd_, evs, MAX_EVENTS, ms);
    if (n < 0 && errno != EINTR) return -errno;
    r->now = now_ns();
    for (int i = 0; i < n; i++) {
      ox_glg_conn_t *c = evs[i].data.ptr;
      if (c->state != C_UP) continue;
      conn_service(r, c, (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
    }
  }
  r->now = now_ns();
  w->t_done = r->now < cfg->t_end ? r->now : cfg->t_end;
  for (int i = 0; i < w->nconns; i++)
    for (int j = 0; j < cfg->streams; j++) {
      const call_t *k = &w->conns_[i].calls[j];
      w->incomplete += k->stream_id && k->counted && !k->timed_out;
    }
  return 0;
}

void *ox_glg_worker_run(void *arg) {
  ox_glg_worker_t *w = arg;
  run_t r = {.w = w, .cfg = w->cfg};
  ox_lg_hist_init(&w->hist);
  int rc = setup(&r);
  if (rc && !w->setup_error) w->setup_error = rc;
  pthread_barrier_wait(w->cfg->barrier); /* setup done everywhere */
  pthread_barrier_wait(w->cfg->barrier); /* the driver has set the clock, or the stop flag */
  if (!w->setup_error && !atomic_load(w->cfg->stop)) {
    rc = load(&r);
    if (rc) w->setup_error = rc;
  }
  /* Sessions end here, on their thread; on_close sees dying and counts nothing more. */
  for (int i = 0; w->conns_ && i < w->nconns; i++) {
    ox_glg_conn_t *c = &w->conns_[i];
    c->dying = 1;
    if (c->s) nghttp2_session_del(c->s);
    c->s = NULL;
  }
  free(r.rbuf);
  return NULL;
}

void ox_glg_worker_destroy(ox_glg_worker_t *w) {
  for (int i = 0; w->conns_ && i < w->nconns; i++) {
    ox_glg_conn_t *c = &w->conns_[i];
    if (c->s) nghttp2_session_del(c->s);
    if (c->fd >= 0) close(c->fd);
    free(c->calls);
    free(c->free_);
    free(c->obuf);
  }
  free(w->conns_);
  w->conns_ = NULL;
  if (w->epfd_ >= 0) close(w->epfd_);
  w->epfd_ = -1;
}
