/* loadgen_worker.c: the load generator's per-thread epoll loop (see loadgen_worker.h).
 *
 * Sockets are non-blocking and registered once, edge-triggered, for both directions, so a
 * request costs no epoll_ctl: one writev for the pre-encoded prefix, tail and body, reads until
 * the parser says the answer is complete. Connection states:
 *
 *   DOWN -(retry timer)-> CONNECTING -> FREE -(request)-> WRITING -> READING -> FREE ...
 *                                           idle connections: WRITING -> READING -> PARKED
 *
 * A connection the server closes (Connection: close, an answer delimited by close, or a
 * keep-alive connection it drops between requests) is reopened without counting an error; a
 * request that meets a dropped keep-alive connection before any byte of its answer is resent
 * once on a fresh one (keeping its intended time and its body, so the delay still counts and the
 * body order is kept). Timeouts and reconnections are checked by a scan every few milliseconds,
 * not per-connection timers.
 */
#include "loadgen_worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"

enum { C_DOWN, C_CONNECTING, C_FREE, C_WRITING, C_READING, C_PARKED, C_DEAD };

#define LOAD_RBUF (64 * 1024) /* larger than any head the parser accepts (16 KiB) */
#define IDLE_RBUF (32 * 1024)
#define RECONNECT_NS 10000000ULL /* a refused connection is retried after 10 ms */
#define SCAN_NS 5000000ULL       /* timeouts and reconnections are checked every 5 ms */
#define MAX_WAIT_NS 50000000ULL  /* the stop flag is looked at least every 50 ms */
#define MAX_EVENTS 256

struct ox_lg_conn {
  int fd;
  uint8_t state;
  uint8_t idle;      /* an idle connection: one GET, then parked */
  uint8_t has_req;   /* a request is assigned: being sent, awaited, or waiting for a reconnect */
  uint8_t counted;   /* ... and it counts (intended inside the measured window) */
  uint8_t waited;    /* it sat open with no request (connected ahead of need, or kept alive
                        after an answer): the server may have closed it meanwhile */
  uint8_t retried;   /* the request was already resent once on a fresh connection */
  uint8_t in_free;   /* on the free stack (maybe stale: pop checks the state) */
  uint32_t req;      /* load: index in cfg->reqs of the assigned request */
  uint32_t next_req; /* load: the request the next start() assigns (the connection's cursor) */
  uint64_t intended; /* when the request was due, ns */
  uint64_t deadline; /* connect or answer deadline; in DOWN, when to reconnect (ns) */
  size_t sent;       /* request bytes written */
  char *rbuf;        /* owned */
  size_t rlen, rcap;
  ox_lg_resp_t resp;
  ox_lg_conn_t *next_free;
};

/* The loop's own state, on the worker thread's stack. */
typedef struct {
  ox_lg_worker_t *w;
  const ox_lg_config_t *cfg;
  int loading;        /* 0 during setup: nothing counts */
  uint64_t now;       /* refreshed once per loop turn */
  ox_lg_conn_t *free; /* stack of FREE load connections */
  int busy;           /* load requests assigned and not yet ended */
  uint64_t issued;    /* counted requests started */
  uint64_t k_next;    /* open loop: index of the next request to send */
  double interval_ns; /* open loop: between this worker's requests */
  double offset_ns;   /* open loop: this worker's phase */
} run_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int measuring(const run_t *r) {
  return r->loading && r->now >= r->cfg->t_measure && r->now < r->cfg->t_end;
}

/* Open loop: when this worker's k-th request is due. */
static uint64_t due(const run_t *r, uint64_t k) {
  return r->cfg->t_start + (uint64_t)(r->offset_ns + (double)k * r->interval_ns);
}

static int can_issue(const run_t *r) {
  return r->loading && r->issued < r->w->max_requests && !atomic_load(r->cfg->stop);
}

static void close_fd(ox_lg_conn_t *c) {
  if (c->fd >= 0) close(c->fd); /* also removes it from the epoll set */
  c->fd = -1;
}

/* ---- errors and outcomes ------------------------------------------------------------------ */

/* An error not tied to a request (a refused reconnection, bytes nobody asked for). */
static void count_error(run_t *r, ox_lg_err_kind_t kind) {
  if (!measuring(r)) return;
  r->w->errors++;
  r->w->by_kind[kind]++;
}

/* The current request of c has ended: answered (status >= 100) or failed (status 0, kind). */
static void end_request(run_t *r, ox_lg_conn_t *c, int status, ox_lg_err_kind_t kind) {
  ox_lg_worker_t *w = r->w;
  c->has_req = 0;
  r->busy--;
  if (!c->counted) return;
  uint64_t t = now_ns();
  if (t >= r->cfg->t_end) { /* ended after the window closed: not measured */
    w->incomplete++;
    return;
  }
  w->requests++;
  if (status == r->cfg->expect_status && kind == OX_LG_ERR_COUNT_) {
    w->ok++;
    ox_lg_hist_record(&w->hist, t - c->intended);
    return;
  }
  w->errors++;
  if (status && status != r->cfg->expect_status)
    w->by_status[status]++;
  else
    w->by_kind[kind]++;
}

static void conn_open(run_t *r, ox_lg_conn_t *c);

static void make_free(run_t *r, ox_lg_conn_t *c) {
  c->state = C_FREE;
  c->waited = 1;
  c->deadline = 0;
  if (!c->in_free) {
    c->in_free = 1;
    c->next_free = r->free;
    r->free = c;
  }
}

static ox_lg_conn_t *pop_free(run_t *r) {
  while (r->free) {
    ox_lg_conn_t *c = r->free;
    r->free = c->next_free;
    c->in_free = 0;
    if (c->state == C_FREE) return c;
  }
  return NULL;
}

/* Opening failed (err: negative errno). */
static void connect_failed(run_t *r, ox_lg_conn_t *c, int err) {
  close_fd(c);
  if (c->idle) {
    c->state = C_DEAD;
    return;
  }
  if (!r->loading) { /* setup: the driver reports it and the run does not start */
    if (!r->w->setup_error) r->w->setup_error = err;
    c->state = C_DEAD;
    return;
  }
  if (c->has_req)
    end_request(r, c, 0, OX_LG_ERR_CONNECT);
  else
    count_error(r, OX_LG_ERR_CONNECT);
  c->state = C_DOWN;
  c->deadline = r->now + RECONNECT_NS;
}

/* The current attempt failed. A connection that waited open before this request and is dropped
 * by the server before any byte of the answer arrived gets the request resent once (a server
 * may close an idle connection at any time, an unused new one included: RFC 9112 9.3.1);
 * anything else ends the request. */
static void fail(run_t *r, ox_lg_conn_t *c, ox_lg_err_kind_t kind) {
  close_fd(c);
  if (c->idle) {
    c->has_req = 0;
    c->state = C_DEAD;
    return;
  }
  if (c->has_req) {
    if (kind == OX_LG_ERR_IO && c->waited && !c->retried && ox_lg_resp_idle(&c->resp) &&
        c->rlen == 0) {
      c->retried = 1;
      conn_open(r, c);
      return;
    }
    end_request(r, c, 0, kind);
  } else {
    count_error(r, kind);
  }
  conn_open(r, c);
}

/* ---- sending and receiving ---------------------------------------------------------------- */

static int do_read(run_t *r, ox_lg_conn_t *c, int drain);

/* The pieces of c's request, in order (some may be empty); returns how many. */
static int request_pieces(const ox_lg_config_t *cfg, const ox_lg_conn_t *c, struct iovec *p) {
  if (c->idle) {
    p[0] = (struct iovec){(void *)cfg->idle_req, cfg->idle_req_len};
    return 1;
  }
  const ox_lg_req_t *q = &cfg->reqs[c->req];
  p[0] = (struct iovec){(void *)cfg->prefix, cfg->prefix_len};
  p[1] = (struct iovec){(void *)q->tail, q->tail_len};
  p[2] = (struct iovec){(void *)q->body, q->body_len};
  return 3;
}

static void do_write(run_t *r, ox_lg_conn_t *c) {
  struct iovec piece[3];
  int np = request_pieces(r->cfg, c, piece);
  size_t total = 0;
  for (int i = 0; i < np; i++) total += piece[i].iov_len;
  while (c->sent < total) {
    struct iovec iov[3]; /* what is left of the pieces after the c->sent bytes already written */
    int n = 0;
    size_t skip = c->sent;
    for (int i = 0; i < np; i++) {
      if (skip >= piece[i].iov_len) {
        skip -= piece[i].iov_len;
        continue;
      }
      iov[n++] = (struct iovec){(char *)piece[i].iov_base + skip, piece[i].iov_len - skip};
      skip = 0;
    }
    ssize_t k = writev(c->fd, iov, n);
    if (k > 0) {
      c->sent += (size_t)k;
      if (measuring(r)) r->w->bytes_sent += (uint64_t)k;
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EAGAIN) return; /* the next EPOLLOUT edge resumes */
    /* Reset or closed: the server may have answered early (413) before closing. */
    if (!do_read(r, c, 1)) fail(r, c, OX_LG_ERR_IO);
    return;
  }
  c->state = C_READING;
}

/* Sends c's assigned request (c->req; idle: the GET) from its first byte. */
static void send_request(run_t *r, ox_lg_conn_t *c) {
  c->sent = 0;
  c->rlen = 0;
  ox_lg_resp_begin(&c->resp);
  c->state = C_WRITING;
  c->deadline = now_ns() + r->cfg->timeout_ns;
  do_write(r, c);
}

static void start(run_t *r, ox_lg_conn_t *c, uint64_t intended) {
  const ox_lg_config_t *cfg = r->cfg;
  c->has_req = 1;
  c->intended = intended;
  c->counted = intended >= cfg->t_measure && intended < cfg->t_end;
  c->retried = 0;
  c->req = c->next_req; /* a resend (fail) keeps c->req: the same body goes out again */
  c->next_req = (size_t)c->next_req + 1 == cfg->nreqs ? 0 : c->next_req + 1;
  if (c->counted) {
    r->issued++;
    uint64_t lag = now_ns() - intended;
    r->w->lag_sum += lag;
    if (lag > r->w->lag_max) r->w->lag_max = lag;
  }
  r->busy++;
  send_request(r, c);
}

/* A complete answer; leftover: bytes after it in the buffer; closed: the server closed. */
static void finish(run_t *r, ox_lg_conn_t *c, size_t leftover, int closed) {
  const ox_lg_resp_t *resp = &c->resp;
  int reusable = !leftover && !closed && resp->keep_alive && c->state == C_READING;
  if (c->idle) {
    c->has_req = 0;
    if (!reusable) {
      close_fd(c);
      c->state = C_DEAD;
      return;
    }
    r->w->idle_ready++;
    c->state = C_PARKED;
    c->deadline = 0;
    c->rlen = 0;
    return;
  }
  int body_ok = !r->cfg->match || resp->match_state == r->cfg->match->len;
  end_request(r, c, resp->status,
              body_ok || resp->status != r->cfg->expect_status ? OX_LG_ERR_COUNT_ : OX_LG_ERR_BODY);
  c->rlen = 0;
  if (reusable) {
    make_free(r, c);
    return;
  }
  if (leftover) count_error(r, OX_LG_ERR_PROTOCOL);
  close_fd(c);
  conn_open(r, c);
}

/* Reads and parses until the socket is drained (drain: read to EAGAIN or EOF even after a
 * short read, because the hang-up edge has been consumed). Returns 1 if the attempt ended
 * (answered, failed or resent), 0 if the answer is still awaited. */
static int do_read(run_t *r, ox_lg_conn_t *c, int drain) {
  for (;;) {
    size_t space = c->rcap - c->rlen;
    if (space == 0) { /* cannot happen: heads are refused long before the buffer fills */
      fail(r, c, OX_LG_ERR_PROTOCOL);
      return 1;
    }
    ssize_t k = read(c->fd, c->rbuf + c->rlen, space);
    if (k > 0) {
      if (measuring(r)) r->w->bytes_received += (uint64_t)k;
      c->rlen += (size_t)k;
      size_t used;
      int rc = ox_lg_resp_parse(&c->resp, c->rbuf, c->rlen, &used);
      if (rc == 0) {
        finish(r, c, c->rlen - used, 0);
        return 1;
      }
      if (rc != OX_ENEED_MORE) {
        fail(r, c, OX_LG_ERR_PROTOCOL);
        return 1;
      }
      if (used) memmove(c->rbuf, c->rbuf + used, c->rlen - used);
      c->rlen -= used;
      if ((size_t)k < space && !drain) return 0; /* drained: a new edge comes with new bytes */
      continue;
    }
    if (k == 0) {
      if (ox_lg_resp_eof(&c->resp) == 0)
        finish(r, c, 0, 1);
      else
        fail(r, c, OX_LG_ERR_IO);
      return 1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return 0;
    fail(r, c, OX_LG_ERR_IO);
    return 1;
  }
}

/* ---- connections -------------------------------------------------------------------------- */

static void conn_open(run_t *r, ox_lg_conn_t *c) {
  const ox_lg_config_t *cfg = r->cfg;
  c->rlen = 0;
  c->waited = 0;
  int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    connect_failed(r, c, -errno);
    return;
  }
  c->fd = fd;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
  if ((connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) != 0 &&
       errno != EINPROGRESS) ||
      epoll_ctl(r->w->epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    connect_failed(r, c, -errno);
    return;
  }
  c->state = C_CONNECTING; /* epoll reports EPOLLOUT once the handshake is over */
  c->deadline = now_ns() + cfg->timeout_ns;
}

static void on_connect_event(run_t *r, ox_lg_conn_t *c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err) {
    connect_failed(r, c, -err);
    return;
  }
  if (c->idle || c->has_req)
    send_request(r, c); /* idle GET, or a request being resent */
  else
    make_free(r, c);
}

/* An idle connection: reads and drops whatever the server sent (a 408 before closing, say).
 * Returns 1 while it is open, 0 once the server has closed or reset it (then it is DEAD). */
static int idle_alive(ox_lg_conn_t *c) {
  for (;;) {
    ssize_t k = read(c->fd, c->rbuf, c->rcap);
    if (k > 0) continue;
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EAGAIN) return 1;
    close_fd(c);
    c->state = C_DEAD;
    return 0;
  }
}

/* A readable event on a connection with no request: the server closed it, or sent garbage. */
static void on_unsolicited(run_t *r, ox_lg_conn_t *c) {
  if (c->state == C_PARKED) {
    idle_alive(c);
    return;
  }
  char b;
  ssize_t k = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (k < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (k > 0) count_error(r, OX_LG_ERR_PROTOCOL);
  close_fd(c);
  conn_open(r, c);
}

static void on_event(run_t *r, ox_lg_conn_t *c, uint32_t ev) {
  uint32_t in = ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
  int hup = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
  switch (c->state) {
    case C_CONNECTING:
      if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connect_event(r, c);
      break;
    case C_WRITING:
      if (ev & (EPOLLOUT | EPOLLERR)) do_write(r, c);
      if (in && (c->state == C_WRITING || c->state == C_READING)) do_read(r, c, hup);
      break;
    case C_READING:
      if (in) do_read(r, c, hup);
      break;
    case C_FREE:
    case C_PARKED:
      if (in) on_unsolicited(r, c);
      break;
    default:
      break;
  }
}

/* Deadlines and reconnections; connections [0, n). */
static void scan(run_t *r, int n) {
  for (int i = 0; i < n; i++) {
    ox_lg_conn_t *c = &r->w->conns_[i];
    if (!c->deadline || c->deadline > r->now) continue;
    switch (c->state) {
      case C_CONNECTING:
        connect_failed(r, c, -ETIMEDOUT);
        break;
      case C_WRITING:
      case C_READING:
        fail(r, c, OX_LG_ERR_TIMEOUT);
        break;
      case C_DOWN:
        if (r->loading) conn_open(r, c);
        break;
      default:
        break;
    }
  }
}

/* Starts whatever requests are due on free connections. */
static void dispatch(run_t *r) {
  while (can_issue(r)) {
    uint64_t t;
    if (r->cfg->rate > 0) {
      t = due(r, r->k_next);
      if (t > r->now || t >= r->cfg->t_end) return;
    } else {
      t = 0;
    }
    ox_lg_conn_t *c = pop_free(r);
    if (!c) return;
    if (r->cfg->rate > 0)
      r->k_next++;
    else
      t = now_ns();
    start(r, c, t);
  }
}

/* Waits for events until `until` (monotonic ns) and handles them. */
static int poll_once(run_t *r, uint64_t until) {
  struct epoll_event evs[MAX_EVENTS];
  uint64_t wait = until > r->now ? until - r->now : 0;
  struct timespec ts = {(time_t)(wait / 1000000000ULL), (long)(wait % 1000000000ULL)};
  /* epoll_pwait2 (Linux 5.11) for a nanosecond timeout: open-loop sends are due at exact
   * times, and epoll_wait's milliseconds would add up to 1 ms of lateness to every one. */
  static atomic_int no_pwait2;
  int n = -1, old = atomic_load_explicit(&no_pwait2, memory_order_relaxed);
  if (!old) n = epoll_pwait2(r->w->epfd_, evs, MAX_EVENTS, &ts, NULL);
  if (old || (n < 0 && errno == ENOSYS)) {
    atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
    n = epoll_wait(r->w->epfd_, evs, MAX_EVENTS, (int)((wait + 999999) / 1000000));
  }
  if (n < 0) return errno == EINTR ? 0 : -errno;
  r->now = now_ns();
  for (int i = 0; i < n; i++) on_event(r, evs[i].data.ptr, evs[i].events);
  return 0;
}

/* ---- the two phases ----------------------------------------------------------------------- */

static int setup(run_t *r) {
  ox_lg_worker_t *w = r->w;
  int total = w->nconns + w->nidle;
  w->epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (w->epfd_ < 0) return -errno;
  w->conns_ = calloc(total ? (size_t)total : 1, sizeof *w->conns_);
  if (!w->conns_) return OX_ENOMEM;
  for (int i = 0; i < total; i++) w->conns_[i].fd = -1;
  for (int i = 0; i < total; i++) {
    ox_lg_conn_t *c = &w->conns_[i];
    c->idle = i >= w->nconns;
    c->rcap = c->idle ? IDLE_RBUF : LOAD_RBUF;
    c->rbuf = malloc(c->rcap);
    if (!c->rbuf) return OX_ENOMEM;
    if (!c->idle) {
      c->resp.match = r->cfg->match;
      c->resp.head_request = r->cfg->head_request;
      /* spread: connection j of C starts at body j * N / C, so that C connections cover the
       * N bodies after N / C requests each (not after N, walking the same bodies) */
      size_t j = (size_t)w->conn_base + (size_t)i, nc = r->cfg->nconns > j ? r->cfg->nconns : j + 1;
      c->next_req = (uint32_t)((unsigned __int128)j * r->cfg->nreqs / nc % r->cfg->nreqs);
    }
  }
  r->now = now_ns();
  for (int i = 0; i < total; i++) conn_open(r, &w->conns_[i]);
  for (;;) { /* until every connection is ready or has given up */
    int pending = 0;
    for (int i = 0; i < total; i++) {
      int s = w->conns_[i].state;
      pending += s != C_FREE && s != C_PARKED && s != C_DEAD;
    }
    if (!pending || atomic_load(r->cfg->stop)) break;
    r->now = now_ns();
    scan(r, total);
    int rc = poll_once(r, r->now + SCAN_NS);
    if (rc) return rc;
  }
  return 0;
}

static int load(run_t *r) {
  const ox_lg_config_t *cfg = r->cfg;
  ox_lg_worker_t *w = r->w;
  r->loading = 1;
  if (cfg->rate > 0) {
    r->interval_ns = 1e9 * cfg->nworkers / cfg->rate;
    r->offset_ns = 1e9 * w->id / cfg->rate;
  }
  uint64_t next_scan = 0;
  int rc = 0;
  for (;;) {
    r->now = now_ns();
    if (atomic_load(cfg->stop) || r->now >= cfg->t_end) break;
    if (r->now >= next_scan) {
      scan(r, w->nconns);
      next_scan = r->now + SCAN_NS;
    }
    dispatch(r);
    if (r->issued >= w->max_requests && r->busy == 0) break; /* --requests: all answered */
    uint64_t until = r->now + MAX_WAIT_NS;
    if (next_scan < until) until = next_scan;
    if (cfg->t_end < until) until = cfg->t_end;
    if (cfg->rate > 0 && r->free && can_issue(r) && due(r, r->k_next) < until)
      until = due(r, r->k_next);
    if ((rc = poll_once(r, until)) != 0) break;
  }
  r->now = now_ns();
  w->t_done = r->now < cfg->t_end ? r->now : cfg->t_end;
  /* Requests in flight, and in the open loop those due but never sent, did not finish. */
  for (int i = 0; i < w->nconns; i++) w->incomplete += w->conns_[i].has_req && w->conns_[i].counted;
  if (cfg->rate > 0)
    for (uint64_t k = r->k_next, t; (t = due(r, k)) < w->t_done && r->issued < w->max_requests; k++)
      if (t >= cfg->t_measure) w->incomplete++, r->issued++;
  return rc;
}

void *ox_lg_worker_run(void *arg) {
  ox_lg_worker_t *w = arg;
  run_t r = {.w = w, .cfg = w->cfg};
  ox_lg_hist_init(&w->hist);
  prctl(PR_SET_TIMERSLACK, 1000UL); /* wake within 1 us of a due send, not the default 50 us */
  int rc = setup(&r);
  if (rc && !w->setup_error) w->setup_error = rc;
  pthread_barrier_wait(w->cfg->barrier); /* setup done everywhere */
  pthread_barrier_wait(w->cfg->barrier); /* the driver has set the clock, or the stop flag */
  if (!w->setup_error && !atomic_load(w->cfg->stop)) {
    rc = load(&r);
    if (rc) w->setup_error = rc;
  }
  for (int i = w->nconns; i < w->nconns + w->nidle; i++)
    if (w->conns_[i].state == C_PARKED) w->idle_open += idle_alive(&w->conns_[i]);
  return NULL;
}

void ox_lg_worker_destroy(ox_lg_worker_t *w) {
  for (int i = 0; w->conns_ && i < w->nconns + w->nidle; i++) {
    close_fd(&w->conns_[i]);
    free(w->conns_[i].rbuf);
  }
  free(w->conns_);
  w->conns_ = NULL;
  if (w->epfd_ >= 0) close(w->epfd_);
  w->epfd_ = -1;
}

/* ---- requests ----------------------------------------------------------------------------- */

int ox_lg_reqs_create(ox_lg_reqs_t *rq, const ox_lg_slice_t *bodies, size_t n, int length_always) {
  static const char k_name[] = "Content-Length: ";
  rq->reqs = NULL;
  rq->tails_ = NULL;
  rq->n = 0;
  if (n == 0 || n > UINT32_MAX) return OX_EINVALID;
  /* First the exact size of all tails, so they take one allocation and never move. */
  size_t size = 0;
  for (size_t i = 0; i < n; i++) {
    size_t len = bodies[i].len, tl = 2;
    if (len || length_always) {
      tl += sizeof k_name - 1 + 2 + 1;
      while (len >= 10) len /= 10, tl++;
    }
    if (__builtin_add_overflow(size, tl, &size)) return OX_ENOMEM;
  }
  rq->reqs = calloc(n, sizeof *rq->reqs);
  rq->tails_ = malloc(size + 1); /* + 1: snprintf's terminating NUL after the last tail */
  if (!rq->reqs || !rq->tails_) {
    ox_lg_reqs_destroy(rq);
    return OX_ENOMEM;
  }
  char *p = rq->tails_;
  for (size_t i = 0; i < n; i++) {
    ox_lg_req_t *q = &rq->reqs[i];
    size_t room = size + 1 - (size_t)(p - rq->tails_);
    int k = bodies[i].len || length_always
                ? snprintf(p, room, "%s%zu\r\n\r\n", k_name, bodies[i].len)
                : snprintf(p, room, "\r\n");
    if (k < 0 || (size_t)k >= room) { /* cannot happen: the sizes were counted above */
      ox_lg_reqs_destroy(rq);
      return OX_EINVALID;
    }
    q->tail = p;
    q->tail_len = (size_t)k;
    q->body = bodies[i].len ? bodies[i].ptr : NULL;
    q->body_len = bodies[i].len;
    p += k;
  }
  rq->n = n;
  return 0;
}

void ox_lg_reqs_destroy(ox_lg_reqs_t *rq) {
  free(rq->reqs);
  free(rq->tails_);
  rq->reqs = NULL;
  rq->tails_ = NULL;
  rq->n = 0;
}
