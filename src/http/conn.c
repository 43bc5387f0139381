/* conn.c: the HTTP/1.1 connection state machine (see conn.h for the design).
 *
 * States: HEAD (reading a request head; idle when nothing is buffered), BODY (Content-Length
 * body read straight into the body buffer), CHUNKED (chunked body decoded from the input buffer
 * into the body buffer), APP (the application holds the request; not reading), WRITE (writing a
 * response), LINGER (response written, write side shut, draining input briefly before close so
 * the client sees the response rather than a reset).
 *
 * Half-close: a FIN while a request is held is probed (conn_peer_eof); a client that only shut
 * its write side gets its complete requests answered, then the connection closes.
 */
#include "http/conn.h"

#include <arpa/inet.h>
#include <limits.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/bigbuf.h"
#include "core/error.h"
#include "core/log.h"
#include "metrics/metrics.h"

#define OX_CONN_IN_INITIAL 4096
#define OX_CONN_LINGER_MS 2000
#define OX_CONN_READ_CHUNK 65536
#define OX_BODY_ALIGN 64

enum { ST_HEAD, ST_BODY, ST_CHUNKED, ST_APP, ST_WRITE, ST_LINGER, ST_CLOSED };

struct ox_conn {
  ox_io_t io;
  ox_http_listener_t *l;
  ox_loop_t *loop;
  ox_conn_t *prev, *next; /* listener's open list, or its zombie list once closed */
  int state;
  int held;          /* the application holds a request: it will call ox_conn_respond */
  void *app_request; /* the application's object for the held request (on_abort) */
  int keep_alive;
  int peer_eof;         /* the client shut its write side (FIN): answer what is complete, close */
  uint32_t served;      /* responses completed on this connection (0: a new connection) */
  uint64_t idle_since;  /* ms: when it last became idle (eviction at the connection cap) */
  size_t resp_reserved; /* bytes of an unsent response counted in the in-flight budget */
  char *in;             /* head and pipelined bytes (malloc) */
  size_t in_len, in_cap;
  size_t head_len; /* bytes of the current request's head at in[0] */
  size_t in_next;  /* in[in_next..in_len) are bytes after the current request */
  ox_http_request_t req;
  ox_http_body_t body;
  uint64_t body_want; /* Content-Length */
  ox_http_chunked_t chunk;
  uint64_t deadline; /* ms; 0 = none */
  /* writing */
  ox_http_resp_t resp;
  char hdr[768];
  struct iovec wiov[8];
  struct iovec *wv; /* wiov, or a malloc'd array for many segments */
  int wv_cnt, wv_pos;
  int close_after;
};

struct ox_http_listener {
  ox_io_t io;
  ox_loop_t *loop;
  const ox_http_config_t *cfg;
  ox_conn_t *conns;   /* open connections */
  ox_conn_t *zombies; /* closed, to free after the current event batch */
  int draining;
};

static atomic_size_t ox_open_conns;
static atomic_size_t ox_busy;     /* requests held by the application or being written */
static atomic_size_t ox_inflight; /* body bytes reserved + unsent response bytes */
static atomic_uint_fast64_t ox_inflight_refusals;
static atomic_uint_fast64_t ox_idle_evictions;

size_t ox_http_open_connections(void) {
  return atomic_load(&ox_open_conns);
}
size_t ox_http_inflight_bytes(void) {
  return atomic_load_explicit(&ox_inflight, memory_order_relaxed);
}
uint64_t ox_http_inflight_refusals(void) {
  return atomic_load(&ox_inflight_refusals);
}
uint64_t ox_http_idle_evictions(void) {
  return atomic_load(&ox_idle_evictions);
}

/* Reserves n bytes of the in-flight budget max: 0, or -1 (nothing reserved) if it would pass. */
static int inflight_reserve(size_t max, size_t n) {
  size_t cur = atomic_load_explicit(&ox_inflight, memory_order_relaxed);
  do {
    if (n > max || cur > max - n) return -1;
  } while (!atomic_compare_exchange_weak_explicit(&ox_inflight, &cur, cur + n, memory_order_relaxed,
                                                  memory_order_relaxed));
  return 0;
}

static void inflight_release(size_t n) {
  if (n) atomic_fetch_sub_explicit(&ox_inflight, n, memory_order_relaxed);
}

static void conn_on_io(ox_loop_t *loop, ox_io_t *io, uint32_t events);
static void conn_close(ox_conn_t *c);
static void conn_process_input(ox_conn_t *c);
static void conn_send_error(ox_conn_t *c, int status, const char *msg);

/* ---------------------------------------------------------------------------------------- */
/* responses */

const char *ox_http_reason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 507:
      return "Insufficient Storage";
    default:
      return "Unknown";
  }
}

int ox_http_status_of(int err) {
  switch (err) {
    case OX_EINVALID:
    case OX_EDEPTH:
    case OX_EOVERFLOW:
      return 400;
    case OX_ENOT_FOUND:
      return 404;
    case OX_EMETHOD:
      return 405;
    case OX_ETIMEOUT:
      return 408;
    case OX_ETOO_LARGE:
      return 413;
    case OX_EURI_TOO_LONG:
      return 414;
    case OX_EUNSUPPORTED:
      return 415;
    case OX_EQUOTA:
      return 429;
    case OX_EHEADERS_TOO_LARGE:
      return 431;
    case OX_ECANCELLED:
      return 499;
    case OX_ENOT_IMPLEMENTED:
      return 501;
    case OX_EUNAVAILABLE:
    case OX_EDEADLINE:
      return 503;
    case OX_ESTORE_FULL:
      return 507;
    default:
      return 500; /* out of memory, internal, runtime, system errors */
  }
}

void ox_http_resp_init(ox_http_resp_t *r, int status) {
  memset(r, 0, sizeof *r);
  r->status = status;
  r->content_type = "application/json";
}

int ox_http_resp_error(ox_http_resp_t *r, int status, const char *msg) {
  r->status = status;
  r->content_type = "application/json";
  r->body.len = 0;
  if (ox_buf_puts(&r->body, "{\"error\":") ||
      ox_buf_append_json_string(&r->body, msg, strlen(msg)) || ox_buf_puts(&r->body, "}"))
    return OX_ENOMEM;
  if (status == 503 && ox_buf_puts(&r->extra_headers, "Retry-After: 1\r\n")) return OX_ENOMEM;
  return 0;
}

void ox_conn_respond_error(ox_conn_t *c, int status, const char *msg) {
  ox_http_resp_t r;
  ox_http_resp_init(&r, status);
  ox_http_resp_error(&r, status, msg);
  ox_conn_respond(c, &r);
}

void ox_http_resp_free(ox_http_resp_t *r) {
  ox_buf_free(&r->extra_headers);
  ox_buf_free(&r->body);
  free(r->iov);
  if (r->release) r->release(r->release_arg);
  memset(r, 0, sizeof *r);
}

/* A 64-byte aligned block of total bytes: large ones from the bigbuf cache, small from malloc. */
static char *body_block(size_t total, size_t *mapped) {
  char *base = NULL;
  *mapped = 0;
  if (total >= OX_BIGBUF_MIN) return ox_bigbuf_alloc(total, mapped);
  if (posix_memalign((void **)&base, OX_BODY_ALIGN, total)) return NULL;
  return base;
}

void ox_http_body_free(ox_http_body_t *b) {
  inflight_release(b->reserved);
  if (b->mapped)
    ox_bigbuf_free(b->base, b->mapped);
  else
    free(b->base);
  memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------------------------------- */
/* listener */

/* The listener's idle keep-alive connection that has been idle longest (served a request,
 * nothing buffered, nothing to send), or NULL. A scan, but only at the connection cap. */
static ox_conn_t *listener_oldest_idle(ox_http_listener_t *l) {
  ox_conn_t *best = NULL;
  for (ox_conn_t *c = l->conns; c; c = c->next)
    if (c->state == ST_HEAD && c->in_len == 0 && c->served &&
        (!best || c->idle_since < best->idle_since))
      best = c;
  return best;
}

static void listener_on_accept(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  ox_http_listener_t *l = io->data;
  for (int i = 0; i < 64; i++) {
    int fd = accept4(l->io.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) ox_warn("accept: %s", strerror(errno));
      return;
    }
    ox_conn_t *victim;
    if (atomic_load(&ox_open_conns) >= l->cfg->max_connections &&
        (victim = listener_oldest_idle(l)) != NULL) {
      conn_close(victim); /* at the cap: the oldest idle keep-alive connection makes room */
      atomic_fetch_add(&ox_idle_evictions, 1);
    }
    if (atomic_load(&ox_open_conns) >= l->cfg->max_connections) {
#define OX_BUSY_BODY "{\"error\":\"too many open connections\"}"
      static const char busy[] =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
          "Retry-After: 1\r\nConnection: close\r\nContent-Length: 37\r\n\r\n" OX_BUSY_BODY;
      _Static_assert(sizeof OX_BUSY_BODY - 1 == 37, "Content-Length of the 503 body");
      ssize_t w = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)w;
      ox_metrics_count_response(503);
      close(fd);
      continue;
    }
    ox_conn_t *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->io = (ox_io_t){.fd = fd, .cb = conn_on_io, .data = c};
    c->l = l;
    c->loop = loop;
    c->state = ST_HEAD;
    /* A new connection must deliver its first request within the request timeout; the idle
     * timeout only applies between the requests of a keep-alive connection. */
    c->deadline = ox_loop_now_ms(loop) + l->cfg->request_timeout_ms;
    if (ox_loop_add(loop, &c->io, EPOLLIN | EPOLLRDHUP)) {
      close(fd);
      free(c);
      continue;
    }
    atomic_fetch_add(&ox_open_conns, 1);
    c->next = l->conns;
    if (l->conns) l->conns->prev = c;
    l->conns = c;
  }
}

static void listener_tick(ox_http_listener_t *l) {
  uint64_t now = ox_loop_now_ms(l->loop);
  ox_conn_t *c = l->conns;
  while (c) {
    ox_conn_t *next = c->next;
    if (c->deadline && now >= c->deadline) {
      switch (c->state) {
        case ST_HEAD:
          if (c->in_len == 0)
            conn_close(c); /* silent new or idle keep-alive connection */
          else
            conn_send_error(c, 408, "request not received in time");
          break;
        case ST_BODY:
        case ST_CHUNKED:
          /* The application never saw it; answer 408 and close. */
          ox_http_body_free(&c->body);
          conn_send_error(c, 408, "request body not received in time");
          break;
        case ST_WRITE: /* the client stopped reading */
        case ST_LINGER:
          conn_close(c);
          break;
        default:
          break;
      }
    }
    c = next;
  }
}

static void listener_after(ox_loop_t *loop, void *data) {
  ox_http_listener_t *l = data;
  ox_conn_t *z = l->zombies;
  l->zombies = NULL;
  while (z) {
    ox_conn_t *n = z->next;
    free(z);
    z = n;
  }
}

static void listener_tick_cb(ox_loop_t *loop, void *data) {
  listener_tick(data);
}

int ox_http_listener_create(ox_loop_t *loop, const char *host, uint16_t *port,
                            const ox_http_config_t *cfg, ox_http_listener_t **out) {
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%u", (unsigned)*port);
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
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
  }
  ox_http_listener_t *l = calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return OX_ENOMEM;
  }
  l->io = (ox_io_t){.fd = fd, .cb = listener_on_accept, .data = l};
  l->loop = loop;
  l->cfg = cfg;
  int rc = ox_loop_add(loop, &l->io, EPOLLIN);
  if (rc) {
    close(fd);
    free(l);
    return rc;
  }
  ox_loop_set_after(loop, listener_after, l);
  ox_loop_set_tick(loop, 250, listener_tick_cb, l);
  *out = l;
  return 0;
}

void ox_http_listener_stop_accepting(ox_http_listener_t *l) {
  if (l->io.fd >= 0) {
    ox_loop_remove(l->loop, &l->io);
    close(l->io.fd);
    l->io.fd = -1;
  }
}

void ox_http_listener_drain(ox_http_listener_t *l) {
  l->draining = 1;
  ox_conn_t *c = l->conns;
  while (c) {
    ox_conn_t *next = c->next;
    if (c->state == ST_HEAD && c->in_len == 0) conn_close(c);
    c = next;
  }
}

size_t ox_http_busy(void) {
  return atomic_load(&ox_busy);
}

void ox_http_listener_destroy(ox_http_listener_t *l) {
  if (!l) return;
  ox_http_listener_stop_accepting(l);
  while (l->conns) conn_close(l->conns);
  listener_after(l->loop, l);
  ox_loop_set_after(l->loop, NULL, NULL);
  ox_loop_set_tick(l->loop, 0, NULL, NULL);
  free(l);
}

ox_loop_t *ox_conn_loop(const ox_conn_t *c) {
  return c->loop;
}
void ox_conn_set_request(ox_conn_t *c, void *request) {
  c->app_request = request;
}
int ox_conn_closed(const ox_conn_t *c) {
  return c->state == ST_CLOSED;
}
int ox_conn_tag(const ox_conn_t *c) {
  return c->l->cfg->tag;
}

/* ---------------------------------------------------------------------------------------- */
/* connection life */

static void conn_set_events(ox_conn_t *c, uint32_t ev) {
  if (c->peer_eof) ev &= ~(uint32_t)EPOLLRDHUP; /* level-triggered: it would fire forever */
  if (c->state != ST_CLOSED) ox_loop_modify(c->loop, &c->io, ev);
}

static void conn_unlink(ox_conn_t *c) {
  ox_http_listener_t *l = c->l;
  if (c->prev)
    c->prev->next = c->next;
  else
    l->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = NULL;
}

/* Closes the socket. The struct lives on while the application holds a request (freed in
 * ox_conn_respond), else until the end of the event batch. */
static void conn_close(ox_conn_t *c) {
  if (c->state == ST_CLOSED) return;
  if (c->state == ST_WRITE) atomic_fetch_sub(&ox_busy, 1);
  ox_loop_remove(c->loop, &c->io);
  close(c->io.fd);
  c->io.fd = -1;
  int was_held = c->held;
  c->state = ST_CLOSED;
  atomic_fetch_sub(&ox_open_conns, 1);
  conn_unlink(c);
  inflight_release(c->resp_reserved);
  c->resp_reserved = 0;
  ox_http_resp_free(&c->resp);
  if (c->wv != c->wiov) free(c->wv);
  c->wv = NULL;
  /* A held request's body is the application's to read until ox_conn_respond, which frees it
   * (a worker may still be parsing it). */
  if (!was_held) ox_http_body_free(&c->body);
  free(c->in);
  c->in = NULL;
  if (!was_held) {
    c->next = c->l->zombies;
    c->l->zombies = c;
  } else if (c->l->cfg->on_abort && c->app_request) {
    c->l->cfg->on_abort(c->l->cfg->app, c, c->app_request);
  }
}

static int conn_grow_in(ox_conn_t *c, size_t want) {
  if (c->in_cap >= want) return 0;
  size_t cap = c->in_cap ? c->in_cap : OX_CONN_IN_INITIAL;
  while (cap < want) cap *= 2;
  char *old = c->in;
  char *p = realloc(c->in, cap);
  if (!p) return OX_ENOMEM;
  c->in = p;
  if (old && p != old && c->head_len) {
    /* A parsed head lives at in[0..head_len): re-point its slices (a re-parse is cheap). */
    ox_http_parse_head(c->in, c->head_len, &c->l->cfg->limits, &c->req, NULL);
  }
  c->in_cap = cap;
  return 0;
}

static size_t conn_head_cap(const ox_conn_t *c) {
  const ox_http_limits_t *lim = &c->l->cfg->limits;
  return lim->max_request_line + lim->max_head + 8;
}

/* Starts writing c->resp. */
static void conn_start_write(ox_conn_t *c) {
  ox_http_resp_t *r = &c->resp;
  ox_metrics_count_response(r->status);
  if (c->l->draining || !c->keep_alive) r->close = 1;
  c->close_after = r->close;
  size_t body_len = r->body.len;
  for (int i = 0; i < r->iovcnt; i++) body_len += r->iov[i].iov_len;
  int n = snprintf(c->hdr, sizeof c->hdr,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s", r->status,
                   ox_http_reason(r->status),
                   r->content_type ? r->content_type : "application/json", body_len,
                   r->close ? "Connection: close\r\n"
                            : (c->req.minor_version == 0 ? "Connection: keep-alive\r\n" : ""));
  if (n < 0 || (size_t)n >= sizeof c->hdr) n = 0;
  /* Segments: status line and standard headers, extra headers, blank line, then the body
   * (its first segment, then the application's own, e.g. ONNX Runtime's output memory). */
  int cnt = 3 + (r->body.len != 0) + r->iovcnt;
  c->wv = c->wiov;
  if (cnt > (int)(sizeof c->wiov / sizeof c->wiov[0])) {
    c->wv = malloc(sizeof(struct iovec) * (size_t)cnt);
    if (!c->wv) {
      conn_close(c);
      return;
    }
  }
  int k = 0;
  static char crlf[] = "\r\n";
  c->wv[k++] = (struct iovec){c->hdr, (size_t)n};
  c->wv[k++] = (struct iovec){r->extra_headers.data, r->extra_headers.len};
  c->wv[k++] = (struct iovec){crlf, 2};
  if (r->body.len) c->wv[k++] = (struct iovec){r->body.data, r->body.len};
  for (int i = 0; i < r->iovcnt; i++) c->wv[k++] = r->iov[i];
  /* HEAD: the same headers (Content-Length of the body a GET would get), no body. */
  if (ox_slice_eq(c->req.method, "HEAD")) k = 3;
  c->wv_cnt = k;
  c->wv_pos = 0;
  c->state = ST_WRITE;
  atomic_fetch_add(&ox_busy, 1);
  c->deadline = ox_loop_now_ms(c->loop) + c->l->cfg->request_timeout_ms;
}

/* Writes as much as the socket takes; on completion moves on to the next request. */
static void conn_write(ox_conn_t *c) {
  while (c->wv_pos < c->wv_cnt) {
    int cnt = c->wv_cnt - c->wv_pos;
    if (cnt > IOV_MAX) cnt = IOV_MAX;
    ssize_t w = writev(c->io.fd, c->wv + c->wv_pos, cnt);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!c->resp_reserved) { /* a slow reader: count what waits in the in-flight gauge */
          size_t left = 0;
          for (int i = c->wv_pos; i < c->wv_cnt; i++) left += c->wv[i].iov_len;
          c->resp_reserved = left ? left : 1;
          atomic_fetch_add_explicit(&ox_inflight, c->resp_reserved, memory_order_relaxed);
        }
        conn_set_events(c, EPOLLOUT | EPOLLRDHUP);
        return;
      }
      conn_close(c);
      return;
    }
    c->deadline = ox_loop_now_ms(c->loop) + c->l->cfg->request_timeout_ms;
    atomic_fetch_add_explicit(&ox_process_stats.bytes_out, (uint64_t)w, memory_order_relaxed);
    size_t left = (size_t)w;
    while (left && c->wv_pos < c->wv_cnt) {
      struct iovec *v = &c->wv[c->wv_pos];
      if (left >= v->iov_len) {
        left -= v->iov_len;
        c->wv_pos++;
      } else {
        v->iov_base = (char *)v->iov_base + left;
        v->iov_len -= left;
        left = 0;
      }
    }
    while (c->wv_pos < c->wv_cnt && c->wv[c->wv_pos].iov_len == 0) c->wv_pos++;
  }
  /* Done. */
  atomic_fetch_sub(&ox_busy, 1);
  inflight_release(c->resp_reserved);
  c->resp_reserved = 0;
  c->served++;
  ox_http_resp_free(&c->resp);
  if (c->wv != c->wiov) free(c->wv);
  c->wv = NULL;
  if (c->close_after) {
    shutdown(c->io.fd, SHUT_WR);
    c->state = ST_LINGER;
    c->deadline = ox_loop_now_ms(c->loop) + OX_CONN_LINGER_MS;
    conn_set_events(c, EPOLLIN | EPOLLRDHUP);
    return;
  }
  /* Keep-alive: drop the finished request's bytes, keep pipelined ones. */
  size_t rest = c->in_len - c->in_next;
  if (rest) memmove(c->in, c->in + c->in_next, rest);
  c->in_len = rest;
  c->in_next = c->head_len = 0;
  if (c->in_len == 0 && c->in_cap > OX_CONN_IN_INITIAL) {
    free(c->in); /* idle connections hold no buffer */
    c->in = NULL;
    c->in_cap = 0;
  }
  c->state = ST_HEAD;
  c->idle_since = ox_loop_now_ms(c->loop);
  c->deadline = ox_loop_now_ms(c->loop) +
                (c->in_len ? c->l->cfg->request_timeout_ms : c->l->cfg->idle_timeout_ms);
  conn_set_events(c, EPOLLIN | EPOLLRDHUP);
  if (c->in_len) conn_process_input(c);
}

void ox_conn_respond(ox_conn_t *c, ox_http_resp_t *resp) {
  ox_http_body_free(&c->body); /* the request ends: its body goes, on every path */
  c->held = 0;
  c->app_request = NULL;
  atomic_fetch_sub(&ox_busy, 1);
  if (c->state == ST_CLOSED) {
    ox_http_resp_free(resp);
    c->next = c->l->zombies; /* freed after this batch */
    c->l->zombies = c;
    return;
  }
  c->resp = *resp;
  memset(resp, 0, sizeof *resp);
  conn_start_write(c);
  if (c->state == ST_WRITE) conn_write(c);
}

/* Answers with an error and closes the connection (framing errors end the connection). */
static void conn_send_error(ox_conn_t *c, int status, const char *msg) {
  ox_http_resp_t r;
  ox_http_resp_init(&r, status);
  if (ox_http_resp_error(&r, status, msg)) {
    ox_http_resp_free(&r);
    conn_close(c);
    return;
  }
  r.close = 1;
  c->in_next = c->in_len;
  c->resp = r;
  conn_start_write(c);
  if (c->state == ST_WRITE) conn_write(c);
}

/* The request is complete: hand it to the application. */
static void conn_dispatch(ox_conn_t *c) {
  c->state = ST_APP;
  c->held = 1;
  c->deadline = 0;
  atomic_fetch_add(&ox_busy, 1);
  conn_set_events(c, EPOLLRDHUP);
  c->l->cfg->handler(c->l->cfg->app, c, &c->req, &c->body);
}

/* Allocates the body buffer so that data + align_off is 64-byte aligned. */
static int conn_alloc_body(ox_conn_t *c, size_t cap, size_t align_off) {
  size_t total;
  if (__builtin_add_overflow(cap, (size_t)OX_BODY_ALIGN * 2, &total)) return OX_ENOMEM;
  size_t mapped;
  char *base = body_block(total, &mapped);
  if (!base) return OX_ENOMEM;
  if (mapped) total = mapped;
  size_t pad = (OX_BODY_ALIGN - (align_off % OX_BODY_ALIGN)) % OX_BODY_ALIGN;
  c->body.base = base;
  c->body.data = base + pad;
  c->body.len = 0;
  c->body.cap = total - pad;
  c->body.mapped = mapped;
  return 0;
}

/* Offset in the body that the application wants 64-byte aligned (body_align_offset). */
static size_t conn_align_offset(const ox_conn_t *c) {
  const ox_http_config_t *cfg = c->l->cfg;
  return cfg->body_align_offset ? cfg->body_align_offset(cfg->app, &c->req) : 0;
}

/* The in-flight budget has no room for this request's body: 503 with Retry-After, close. */
static void conn_refuse_budget(ox_conn_t *c) {
  atomic_fetch_add(&ox_inflight_refusals, 1);
  ox_http_body_free(&c->body);
  conn_send_error(c, 503, "server busy: request bodies in flight use the memory budget; retry");
}

static void conn_feed_chunked(ox_conn_t *c) {
  size_t avail = c->in_len - c->in_next;
  if (avail == 0) return;
  if (c->body.cap - c->body.len < avail) {
    /* Grow the body (aligned, same padding). */
    size_t need, newcap = c->body.cap ? c->body.cap : 4096;
    if (__builtin_add_overflow(c->body.len, avail, &need)) {
      conn_send_error(c, 413, "request body too large");
      return;
    }
    while (newcap < need) newcap *= 2;
    if (newcap > c->body.cap &&
        inflight_reserve(c->l->cfg->max_inflight_bytes, newcap - c->body.cap)) {
      conn_refuse_budget(c);
      return;
    }
    size_t grown = newcap > c->body.cap ? newcap - c->body.cap : 0;
    ox_http_body_t old = c->body;
    size_t pad = old.base ? (size_t)(old.data - old.base) : 0;
    size_t mapped;
    char *base = body_block(newcap + pad, &mapped);
    if (!base) {
      inflight_release(grown);
      conn_send_error(c, 500, "out of memory");
      return;
    }
    if (old.len) memcpy(base + pad, old.data, old.len);
    size_t reserved = old.reserved + grown;
    old.reserved = 0;
    ox_http_body_free(&old);
    c->body.reserved = reserved;
    c->body.base = base;
    c->body.data = base + pad;
    c->body.cap = mapped ? mapped - pad : newcap;
    c->body.mapped = mapped;
  }
  size_t consumed = 0, produced = 0;
  const char *why = NULL;
  int rc = ox_http_chunked_decode(&c->chunk, c->in + c->in_next, avail, c->body.data + c->body.len,
                                  &consumed, &produced, &why);
  c->body.len += produced;
  /* Drop the consumed chunk bytes, keeping the head at in[0..head_len). */
  size_t tail = c->in_len - c->in_next - consumed;
  memmove(c->in + c->in_next, c->in + c->in_next + consumed, tail);
  c->in_len -= consumed;
  if (rc == 0) {
    conn_dispatch(c);
  } else if (rc == OX_ENEED_MORE) {
    return;
  } else if (rc == OX_ETOO_LARGE) {
    ox_http_body_free(&c->body);
    conn_send_error(c, 413, "request body too large");
  } else {
    ox_http_body_free(&c->body);
    conn_send_error(c, 400, why ? why : "bad chunked encoding");
  }
}

/* Expect: 100-continue with the body still to come: invite it (a small best-effort send; if
 * the socket cannot take 25 bytes, the client sends the body after its own timeout anyway). */
static void conn_send_continue(ox_conn_t *c) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  ssize_t w = send(c->io.fd, cont, sizeof cont - 1, MSG_NOSIGNAL);
  (void)w;
}

/* Parses whatever is buffered in HEAD state and moves the request along. */
static void conn_process_input(ox_conn_t *c) {
  if (c->state != ST_HEAD || c->in_len == 0) return;
  const char *why = NULL;
  int rc = ox_http_parse_head(c->in, c->in_len, &c->l->cfg->limits, &c->req, &why);
  if (rc == OX_ENEED_MORE) {
    if (c->in_len >= conn_head_cap(c)) conn_send_error(c, 431, "request head too large");
    return;
  }
  if (rc < 0) {
    int status = ox_http_status_of(rc);
    const char *msg = why ? why : ox_strerror(rc);
    if (rc == OX_ETOO_LARGE) msg = "request body larger than the server's limit";
    conn_send_error(c, status, msg);
    return;
  }
  c->head_len = (size_t)rc;
  c->in_next = c->head_len;
  c->keep_alive = c->req.keep_alive;
  c->deadline = ox_loop_now_ms(c->loop) + c->l->cfg->request_timeout_ms;
  size_t nhost = 0;
  for (size_t i = 0; i < c->req.num_headers; i++)
    nhost += ox_slice_eq_nocase(c->req.headers[i].name, "Host");
  if (nhost > 1 || (nhost == 0 && c->req.minor_version == 1)) {
    conn_send_error(c, 400, nhost ? "more than one Host header" : "missing Host header");
    return;
  }
  if (c->req.minor_version == 0) c->req.expect_continue = 0; /* RFC 9110 10.1.1: ignored */
  ox_slice_t expect = ox_http_header(&c->req, "Expect");
  if (expect.ptr && !c->req.expect_continue && c->req.minor_version == 1) {
    conn_send_error(c, 417, "unsupported Expect value");
    return;
  }
  size_t have = c->in_len - c->in_next;
  if (c->req.chunked) {
    if (c->req.expect_continue && have == 0) conn_send_continue(c);
    memset(&c->chunk, 0, sizeof c->chunk);
    c->chunk.max_body = c->l->cfg->limits.max_body;
    if (inflight_reserve(c->l->cfg->max_inflight_bytes, 4096)) {
      conn_refuse_budget(c);
      return;
    }
    if (conn_alloc_body(c, 4096, conn_align_offset(c))) {
      inflight_release(4096);
      conn_send_error(c, 500, "out of memory");
      return;
    }
    c->body.reserved = 4096;
    c->state = ST_CHUNKED;
    conn_feed_chunked(c);
    return;
  }
  c->body_want = c->req.content_length;
  if (c->body_want == 0) {
    conn_dispatch(c);
    return;
  }
  /* Reserve the whole body in the in-flight budget before reading any of it. */
  if (inflight_reserve(c->l->cfg->max_inflight_bytes, (size_t)c->body_want)) {
    conn_refuse_budget(c);
    return;
  }
  if (conn_alloc_body(c, (size_t)c->body_want, conn_align_offset(c))) {
    inflight_release((size_t)c->body_want);
    conn_send_error(c, 500, "out of memory");
    return;
  }
  c->body.reserved = (size_t)c->body_want;
  size_t take = have < c->body_want ? have : (size_t)c->body_want;
  memcpy(c->body.data, c->in + c->in_next, take);
  c->body.len = take;
  c->in_next += take;
  if (c->body.len == c->body_want) {
    conn_dispatch(c);
    return;
  }
  if (c->req.expect_continue) conn_send_continue(c);
  c->state = ST_BODY;
}

static void conn_on_readable(ox_conn_t *c) {
  for (;;) {
    char *dst;
    size_t room;
    if (c->state == ST_BODY) {
      dst = c->body.data + c->body.len;
      room = (size_t)c->body_want - c->body.len;
    } else if (c->state == ST_HEAD || c->state == ST_CHUNKED) {
      size_t want = c->in_len + (c->state == ST_CHUNKED ? OX_CONN_READ_CHUNK : 2048);
      size_t cap = c->state == ST_CHUNKED ? c->in_len + OX_CONN_READ_CHUNK : conn_head_cap(c);
      if (want > cap) want = cap;
      if (c->in_len >= want) return; /* head buffer full: the parser already decided */
      if (conn_grow_in(c, want)) {
        conn_send_error(c, 500, "out of memory");
        return;
      }
      dst = c->in + c->in_len;
      room = c->in_cap - c->in_len;
      if (c->state == ST_HEAD && room > conn_head_cap(c) - c->in_len)
        room = conn_head_cap(c) - c->in_len;
    } else if (c->state == ST_LINGER) {
      char sink[4096];
      ssize_t r = read(c->io.fd, sink, sizeof sink);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) conn_close(c);
      if (r <= 0) return;
      continue;
    } else {
      return;
    }
    ssize_t r = read(c->io.fd, dst, room);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) conn_close(c);
      return;
    }
    if (r == 0) {
      conn_close(c); /* client closed; anything partial is dropped */
      return;
    }
    atomic_fetch_add_explicit(&ox_process_stats.bytes_in, (uint64_t)r, memory_order_relaxed);
    if (c->state == ST_BODY) {
      c->body.len += (size_t)r;
      if (c->body.len == c->body_want) {
        conn_dispatch(c);
        return;
      }
    } else if (c->state == ST_HEAD) {
      if (c->in_len == 0 && c->served) /* a keep-alive request begins (a new connection's
                                        * deadline runs from the accept) */
        c->deadline = ox_loop_now_ms(c->loop) + c->l->cfg->request_timeout_ms;
      c->in_len += (size_t)r;
      conn_process_input(c);
      if (c->state != ST_HEAD && c->state != ST_BODY && c->state != ST_CHUNKED) return;
    } else { /* ST_CHUNKED */
      c->in_len += (size_t)r;
      conn_feed_chunked(c);
      if (c->state != ST_CHUNKED) return;
    }
    if ((size_t)r < room) return; /* drained the socket for now (level-triggered) */
  }
}

/* The client's FIN arrived while a request is held or a response is being written. TCP cannot
 * tell a half-close (shutdown(SHUT_WR): the client still reads) from a full close, so probe:
 * an HTTP/1.1 client gets an interim "100 Continue" (RFC 9110 15.2: any HTTP/1.1 client must
 * accept 1xx responses before the final one). A client that has closed its socket answers the
 * probe with a reset, which arrives as EPOLLERR: conn_close then runs on_abort and queued work
 * is dropped. A half-closed client reads the probe and, later, its response; the connection
 * then answers whatever complete requests it has and closes at end of input. HTTP/1.0 clients
 * may not be sent 1xx: their request is answered. */
static void conn_peer_eof(ox_conn_t *c) {
  c->peer_eof = 1;
  if (c->state == ST_APP && c->req.minor_version == 1) {
    static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
    ssize_t w = send(c->io.fd, probe, sizeof probe - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      conn_close(c);
      return;
    }
  }
  conn_set_events(c, c->state == ST_WRITE ? EPOLLOUT : 0); /* errors are always reported */
}

static void conn_on_io(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  ox_conn_t *c = io->data;
  if (c->state == ST_CLOSED) return;
  if (events & (EPOLLERR | EPOLLHUP)) {
    conn_close(c);
    return;
  }
  if (c->state == ST_APP) {
    /* Not reading while the application holds the request. */
    if (events & EPOLLRDHUP) conn_peer_eof(c);
    return;
  }
  if (c->state == ST_WRITE) {
    if (events & EPOLLOUT)
      conn_write(c);
    else if (events & EPOLLRDHUP)
      conn_peer_eof(c);
    return;
  }
  if (events & (EPOLLIN | EPOLLRDHUP)) conn_on_readable(c);
}
