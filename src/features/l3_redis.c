/* l3_redis.c: see l3_redis.h.
 *
 * A call is: rd_begin (deadline check, breaker, slot checkout, liveness check, connect if
 * needed), build RESP into the slot's scratch buffer, rd_send, rd_recv per reply, rd_end (breaker
 * outcome, drop the connection when its state is unknown, check the slot back in). The slot's
 * connection and buffer belong to whoever holds its busy flag, so nothing below takes a lock.
 */
#include "features/l3_redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/error.h"
#include "core/log.h"

#define NS_PER_MS INT64_C(1000000)

typedef struct {
  _Alignas(64) atomic_int busy; /* one cache line per slot: no false sharing between workers */
  redisContext *c;              /* NULL when not connected */
  ox_buf_t cmd;                 /* the request being built; reused */
} rd_slot_t;

struct ox_l3_redis {
  char *host, *password;
  int port, db, nslots;
  int64_t connect_ns, command_ns;
  ox_breaker_t *breaker;
  rd_slot_t *slots;
  _Atomic uint64_t connects, connect_failures, dropped, stale, exhausted;
};

typedef struct {
  rd_slot_t *slot;
  ox_breaker_ticket_t ticket;
  int64_t deadline; /* min(caller's deadline, start + command timeout) */
  int reply_err;    /* an error reply was seen: its outcome is reply_outcome */
  ox_breaker_outcome_t reply_outcome;
} rd_call_t;

static inline void inc(_Atomic uint64_t *c) {
  atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- time and waiting ------------------------------------------------------------------ */

/* Waits until fd is ready for events or the deadline passes: 0 (ready, or an error/hang-up the
 * next read or write will report), OX_ETIMEOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - ox_breaker_now_ns();
    if (left <= 0) return OX_ETIMEOUT;
    struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
    struct pollfd p = {.fd = fd, .events = events};
    int n = ppoll(&p, 1, &ts, NULL);
    if (n > 0) return (p.revents & POLLNVAL) ? -EBADF : 0;
    if (n < 0 && errno != EINTR) return -errno;
  }
}

/* ---- pool ------------------------------------------------------------------------------- */

static _Thread_local int rd_hint = -1;
static atomic_uint rd_next_hint;

static rd_slot_t *checkout(ox_l3_redis_t *r) {
  if (rd_hint < 0) rd_hint = (int)(atomic_fetch_add(&rd_next_hint, 1) % 1024);
  for (int i = 0; i < r->nslots; i++) {
    rd_slot_t *s = &r->slots[(rd_hint + i) % r->nslots];
    int free_ = 0;
    if (atomic_load_explicit(&s->busy, memory_order_relaxed) == 0 &&
        atomic_compare_exchange_strong_explicit(&s->busy, &free_, 1, memory_order_acquire,
                                                memory_order_relaxed))
      return s;
  }
  return NULL;
}

static void checkin(rd_slot_t *s) {
  atomic_store_explicit(&s->busy, 0, memory_order_release);
}

static void rd_drop(rd_slot_t *s) {
  if (!s->c) return;
  redisFree(s->c);
  s->c = NULL;
}

/* An idle connection must have nothing to read: Redis never speaks first, so readable means the
 * server closed it (or the stream is out of step). One poll() with a zero timeout. */
static int rd_idle_ok(rd_slot_t *s) {
  struct pollfd p = {.fd = s->c->fd, .events = POLLIN};
  return poll(&p, 1, 0) <= 0;
}

/* ---- RESP requests ---------------------------------------------------------------------- */

/* Appends "<tag><n>\r\n" with a digit loop (no printf on the hot path). */
static int put_len(ox_buf_t *b, char tag, size_t n) {
  char tmp[24];
  char *p = tmp + sizeof tmp;
  *--p = '\n';
  *--p = '\r';
  do {
    *--p = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  *--p = tag;
  return ox_buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

static int cmd_begin(ox_buf_t *b, size_t argc) {
  return put_len(b, '*', argc);
}

static int cmd_arg(ox_buf_t *b, const void *p, size_t n) {
  int rc = put_len(b, '$', n);
  if (!rc) rc = ox_buf_append(b, p, n);
  if (!rc) rc = ox_buf_append(b, "\r\n", 2);
  return rc;
}

static int cmd_str(ox_buf_t *b, const char *s) {
  return cmd_arg(b, s, strlen(s));
}

static int cmd_set(ox_buf_t *b, ox_slice_t key, ox_slice_t val, int ttl_ms) {
  int rc = cmd_begin(b, ttl_ms > 0 ? 5 : 3);
  if (!rc) rc = cmd_str(b, "SET");
  if (!rc) rc = cmd_arg(b, key.ptr, key.len);
  if (!rc) rc = cmd_arg(b, val.ptr, val.len);
  if (!rc && ttl_ms > 0) {
    char num[16];
    int n = 0;
    for (unsigned v = (unsigned)ttl_ms; v; v /= 10) num[n++] = (char)('0' + v % 10);
    for (int i = 0; i < n / 2; i++) {
      char t = num[i];
      num[i] = num[n - 1 - i];
      num[n - 1 - i] = t;
    }
    rc = cmd_str(b, "PX");
    if (!rc) rc = cmd_arg(b, num, (size_t)n);
  }
  return rc;
}

/* ---- I/O -------------------------------------------------------------------------------- */

static int rd_send(rd_slot_t *s, int64_t deadline) {
  const char *p = s->cmd.data;
  size_t off = 0, len = s->cmd.len;
  while (off < len) {
    ssize_t n = send(s->c->fd, p + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int rc = wait_fd(s->c->fd, POLLOUT, deadline);
      if (rc) return rc;
    } else {
      return n < 0 ? -errno : -EPIPE;
    }
  }
  return 0;
}

/* Reads until one whole reply is parsed. *out owned by the caller (freeReplyObject). */
static int rd_recv(rd_slot_t *s, redisReply **out, int64_t deadline) {
  redisReader *rd = s->c->reader;
  for (;;) {
    void *rep = NULL;
    if (redisReaderGetReply(rd, &rep) != REDIS_OK) {
      ox_warn("l3_redis: protocol error: %s", rd->errstr);
      return OX_EINTERNAL;
    }
    if (rep) {
      *out = rep;
      return 0;
    }
    int rc = wait_fd(s->c->fd, POLLIN, deadline);
    if (rc) return rc;
    char buf[16384];
    ssize_t n = recv(s->c->fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (redisReaderFeed(rd, buf, (size_t)n) != REDIS_OK) return OX_ENOMEM;
    } else if (n == 0) {
      return -ECONNRESET; /* the server closed the connection */
    } else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
      return -errno;
    }
  }
}

/* An error reply. LOADING/BUSY/MASTERDOWN/TRYAGAIN say Redis cannot serve now (the breaker
 * counts a failure); anything else (WRONGTYPE, NOAUTH, ...) is about the request or the
 * configuration, not Redis's health. */
static int rd_reply_error(rd_call_t *call, const redisReply *rep) {
  static const char *const busy[] = {"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN"};
  call->reply_err = 1;
  for (size_t i = 0; i < sizeof busy / sizeof busy[0]; i++) {
    if (strncmp(rep->str, busy[i], strlen(busy[i])) == 0) {
      call->reply_outcome = OX_BREAKER_FAILURE;
      return OX_EUNAVAILABLE;
    }
  }
  ox_debug("l3_redis: error reply: %.*s", (int)rep->len, rep->str);
  call->reply_outcome = OX_BREAKER_IGNORED;
  return OX_EINTERNAL;
}

/* Sends the slot's command buffer, then reads n replies that must each be of type `type`
 * (REDIS_REPLY_STATUS for +OK, REDIS_REPLY_INTEGER for RPUSH's new length). Every reply is read
 * even after an error reply, so the connection stays in step; returns the first error. */
static int rd_expect(rd_slot_t *s, rd_call_t *call, size_t n, int type, int64_t deadline) {
  int rc = rd_send(s, deadline), first = 0;
  for (size_t i = 0; !rc && i < n; i++) {
    redisReply *rep = NULL;
    rc = rd_recv(s, &rep, deadline);
    if (rc) break;
    int e = 0;
    if (rep->type == REDIS_REPLY_ERROR)
      e = rd_reply_error(call, rep);
    else if (rep->type != type)
      e = OX_EINTERNAL;
    if (e && !first) first = e;
    freeReplyObject(rep);
  }
  return rc ? rc : first;
}

static int rd_expect_ok(rd_slot_t *s, rd_call_t *call, size_t n, int64_t deadline) {
  return rd_expect(s, call, n, REDIS_REPLY_STATUS, deadline);
}

/* ---- connecting ------------------------------------------------------------------------- */

static int rd_connect(ox_l3_redis_t *r, rd_slot_t *s, int64_t deadline) {
  int64_t now = ox_breaker_now_ns();
  if (now + r->connect_ns < deadline) deadline = now + r->connect_ns;
  errno = 0;
  redisContext *c = redisConnectNonBlock(r->host, r->port);
  int rc = 0;
  if (!c) return OX_ENOMEM;
  if (c->err) {
    rc = c->err == REDIS_ERR_IO && errno ? -errno : -ECONNREFUSED;
  } else {
    rc = wait_fd(c->fd, POLLOUT, deadline);
    int err = 0;
    socklen_t len = sizeof err;
    if (!rc && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) rc = -errno;
    if (!rc && err) rc = -err;
  }
  if (rc) {
    inc(&r->connect_failures);
    ox_warn("l3_redis: connect %s:%d: %s", r->host, r->port, c->err ? c->errstr : ox_strerror(rc));
    redisFree(c);
    return rc;
  }
  s->c = c;
  /* Handshake: AUTH and SELECT pipelined, within the same deadline. */
  size_t n = 0;
  s->cmd.len = 0;
  if (r->password) {
    rc = cmd_begin(&s->cmd, 2);
    if (!rc) rc = cmd_str(&s->cmd, "AUTH");
    if (!rc) rc = cmd_str(&s->cmd, r->password);
    n++;
  }
  if (!rc && r->db > 0) {
    char num[12];
    int k = snprintf(num, sizeof num, "%d", r->db);
    rc = cmd_begin(&s->cmd, 2);
    if (!rc) rc = cmd_str(&s->cmd, "SELECT");
    if (!rc) rc = cmd_arg(&s->cmd, num, (size_t)k);
    n++;
  }
  if (!rc && n) {
    rd_call_t hs = {0};
    rc = rd_expect_ok(s, &hs, n, deadline);
  }
  s->cmd.len = 0;
  if (rc) {
    inc(&r->connect_failures);
    ox_warn("l3_redis: handshake with %s:%d: %s", r->host, r->port, ox_strerror(rc));
    rd_drop(s);
    /* A refused AUTH or SELECT is a configuration error; the breaker may as well open. */
    return rc == OX_EINTERNAL ? OX_EUNAVAILABLE : rc;
  }
  inc(&r->connects);
  return 0;
}

/* ---- calls ------------------------------------------------------------------------------ */

static int rd_end(ox_l3_redis_t *r, rd_call_t *call, int rc);

static int rd_begin(ox_l3_redis_t *r, int64_t deadline, rd_call_t *call) {
  int64_t now = ox_breaker_now_ns();
  if (deadline <= now) return OX_ETIMEOUT;
  memset(call, 0, sizeof *call);
  call->deadline = now + r->command_ns < deadline ? now + r->command_ns : deadline;
  int rc = ox_breaker_allow(r->breaker, now, &call->ticket);
  if (rc) return rc;
  call->slot = checkout(r);
  if (!call->slot) {
    inc(&r->exhausted);
    ox_breaker_done(r->breaker, &call->ticket, OX_BREAKER_IGNORED, now);
    return OX_EUNAVAILABLE;
  }
  rd_slot_t *s = call->slot;
  if (s->c && !rd_idle_ok(s)) {
    inc(&r->stale);
    rd_drop(s);
  }
  if (!s->c) {
    rc = rd_connect(r, s, call->deadline);
    if (rc) return rd_end(r, call, rc);
  }
  s->cmd.len = 0;
  return 0;
}

/* Reports the outcome to the breaker, drops the connection if its state is unknown (timeout,
 * I/O or protocol error: a reply may still be on its way), checks the slot in. Returns rc. */
static int rd_end(ox_l3_redis_t *r, rd_call_t *call, int rc) {
  ox_breaker_outcome_t o;
  int drop = 0;
  if (call->reply_err) {
    o = call->reply_outcome;
  } else if (rc >= 0 || rc == OX_ENOT_FOUND) {
    o = OX_BREAKER_SUCCESS;
  } else if (rc == OX_ETIMEOUT) {
    o = OX_BREAKER_TIMEOUT;
    drop = 1;
  } else if (rc == OX_ENOMEM || rc == OX_EINVALID) {
    o = OX_BREAKER_IGNORED;
    drop = 1; /* a reply may be half read */
  } else {
    o = OX_BREAKER_FAILURE;
    drop = 1;
  }
  if (drop && call->slot->c) {
    inc(&r->dropped);
    rd_drop(call->slot);
  }
  call->slot->cmd.len = 0;
  checkin(call->slot);
  ox_breaker_done(r->breaker, &call->ticket, o, ox_breaker_now_ns());
  return rc;
}

int ox_l3_redis_get(ox_l3_redis_t *r, ox_slice_t key, ox_buf_t *out, int64_t deadline_ns) {
  rd_call_t call;
  int rc = rd_begin(r, deadline_ns, &call);
  if (rc) return rc;
  rd_slot_t *s = call.slot;
  rc = cmd_begin(&s->cmd, 2);
  if (!rc) rc = cmd_str(&s->cmd, "GET");
  if (!rc) rc = cmd_arg(&s->cmd, key.ptr, key.len);
  if (!rc) rc = rd_send(s, call.deadline);
  redisReply *rep = NULL;
  if (!rc) rc = rd_recv(s, &rep, call.deadline);
  if (!rc) {
    if (rep->type == REDIS_REPLY_STRING) {
      rc = ox_buf_append(out, rep->str, rep->len);
      if (rc) { /* the reply was read whole: the connection is fine */
        call.reply_err = 1;
        call.reply_outcome = OX_BREAKER_IGNORED;
      }
    } else if (rep->type == REDIS_REPLY_NIL) {
      rc = OX_ENOT_FOUND;
    } else if (rep->type == REDIS_REPLY_ERROR) {
      rc = rd_reply_error(&call, rep);
    } else {
      rc = OX_EINTERNAL;
    }
  }
  if (rep) freeReplyObject(rep);
  return rd_end(r, &call, rc);
}

/* Copies an MGET array reply into out, pointing vals into it. Returns hits or an error. */
static int mget_collect(const redisReply *rep, size_t n, ox_buf_t *out, ox_slice_t *vals) {
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != n) return OX_EINTERNAL;
  size_t total = 1; /* +1: out->data is non-NULL afterwards, so an empty hit is not a miss */
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = rep->element[i];
    if (e->type == REDIS_REPLY_STRING) {
      if (__builtin_add_overflow(total, e->len, &total)) return OX_ENOMEM;
    } else if (e->type != REDIS_REPLY_NIL) {
      return OX_EINTERNAL;
    }
  }
  int rc = ox_buf_reserve(out, total); /* no reallocation below: vals stay valid */
  if (rc) return rc;
  int hits = 0;
  for (size_t i = 0; i < n; i++) {
    const redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_STRING) {
      vals[i] = (ox_slice_t){NULL, 0};
      continue;
    }
    vals[i] = (ox_slice_t){out->data + out->len, e->len};
    ox_buf_append(out, e->str, e->len);
    hits++;
  }
  return hits;
}

int ox_l3_redis_mget(ox_l3_redis_t *r, const ox_slice_t *keys, size_t n, ox_buf_t *out,
                     ox_slice_t *vals, int64_t deadline_ns) {
  if (n == 0) return 0;
  if (n > INT_MAX - 1) return OX_EINVALID;
  rd_call_t call;
  int rc = rd_begin(r, deadline_ns, &call);
  if (rc) return rc;
  rd_slot_t *s = call.slot;
  rc = cmd_begin(&s->cmd, n + 1);
  if (!rc) rc = cmd_str(&s->cmd, "MGET");
  for (size_t i = 0; !rc && i < n; i++) rc = cmd_arg(&s->cmd, keys[i].ptr, keys[i].len);
  if (!rc) rc = rd_send(s, call.deadline);
  redisReply *rep = NULL;
  if (!rc) rc = rd_recv(s, &rep, call.deadline);
  if (!rc) {
    if (rep->type == REDIS_REPLY_ERROR) {
      rc = rd_reply_error(&call, rep);
    } else {
      rc = mget_collect(rep, n, out, vals);
      if (rc < 0) { /* whole reply read: keep the connection */
        call.reply_err = 1;
        call.reply_outcome = OX_BREAKER_IGNORED;
      }
    }
  }
  if (rep) freeReplyObject(rep);
  return rd_end(r, &call, rc);
}

int ox_l3_redis_mset(ox_l3_redis_t *r, const ox_slice_t *keys, const ox_slice_t *vals, size_t n,
                     int ttl_ms, int64_t deadline_ns) {
  if (n == 0) return 0;
  rd_call_t call;
  int rc = rd_begin(r, deadline_ns, &call);
  if (rc) return rc;
  rd_slot_t *s = call.slot;
  for (size_t i = 0; !rc && i < n; i++) rc = cmd_set(&s->cmd, keys[i], vals[i], ttl_ms);
  if (!rc) rc = rd_expect_ok(s, &call, n, call.deadline);
  return rd_end(r, &call, rc);
}

int ox_l3_redis_rpush_many(ox_l3_redis_t *r, const ox_slice_t *keys, const ox_slice_t *vals,
                           size_t n, int64_t deadline_ns) {
  if (n == 0) return 0;
  rd_call_t call;
  int rc = rd_begin(r, deadline_ns, &call);
  if (rc) return rc;
  rd_slot_t *s = call.slot;
  for (size_t i = 0; !rc && i < n; i++) {
    rc = cmd_begin(&s->cmd, 3);
    if (!rc) rc = cmd_str(&s->cmd, "RPUSH");
    if (!rc) rc = cmd_arg(&s->cmd, keys[i].ptr, keys[i].len);
    if (!rc) rc = cmd_arg(&s->cmd, vals[i].ptr, vals[i].len);
  }
  if (!rc) rc = rd_expect(s, &call, n, REDIS_REPLY_INTEGER, call.deadline);
  return rd_end(r, &call, rc);
}

int ox_l3_redis_set(ox_l3_redis_t *r, ox_slice_t key, ox_slice_t val, int ttl_ms,
                    int64_t deadline_ns) {
  return ox_l3_redis_mset(r, &key, &val, 1, ttl_ms, deadline_ns);
}

/* ---- lifecycle and metrics -------------------------------------------------------------- */

int ox_l3_redis_create(const ox_l3_redis_opts_t *opts, ox_l3_redis_t **out) {
  ox_l3_redis_opts_t o = opts ? *opts : (ox_l3_redis_opts_t){0};
  if (o.port < 0 || o.port > 65535 || o.pool_size < 0 || o.pool_size > 4096 ||
      o.connect_timeout_ms < 0 || o.command_timeout_ms < 0 || o.db < 0)
    return OX_EINVALID;
  ox_l3_redis_t *r = calloc(1, sizeof *r);
  if (!r) return OX_ENOMEM;
  r->port = o.port ? o.port : 6379;
  r->db = o.db;
  r->nslots = o.pool_size ? o.pool_size : 8;
  r->connect_ns = (o.connect_timeout_ms ? o.connect_timeout_ms : 200) * NS_PER_MS;
  r->command_ns = (o.command_timeout_ms ? o.command_timeout_ms : 200) * NS_PER_MS;
  r->host = strdup(o.host ? o.host : "127.0.0.1");
  r->password = o.password ? strdup(o.password) : NULL;
  r->slots = aligned_alloc(64, sizeof(rd_slot_t) * (size_t)r->nslots);
  int rc = (!r->host || (o.password && !r->password) || !r->slots) ? OX_ENOMEM : 0;
  if (r->slots) memset(r->slots, 0, sizeof(rd_slot_t) * (size_t)r->nslots);
  if (!rc) rc = ox_breaker_create(&o.breaker, &r->breaker);
  if (rc) {
    ox_l3_redis_destroy(r);
    return rc;
  }
  *out = r;
  return 0;
}

void ox_l3_redis_destroy(ox_l3_redis_t *r) {
  if (!r) return;
  for (int i = 0; r->slots && i < r->nslots; i++) {
    rd_drop(&r->slots[i]);
    ox_buf_free(&r->slots[i].cmd);
  }
  free(r->slots);
  ox_breaker_destroy(r->breaker);
  free(r->host);
  free(r->password);
  free(r);
}

ox_breaker_t *ox_l3_redis_breaker(ox_l3_redis_t *r) {
  return r->breaker;
}

void ox_l3_redis_stats(ox_l3_redis_t *r, ox_l3_redis_stats_t *out) {
#define LD(f) atomic_load_explicit(&r->f, memory_order_relaxed)
  out->connects = LD(connects);
  out->connect_failures = LD(connect_failures);
  out->dropped = LD(dropped);
  out->stale = LD(stale);
  out->pool_exhausted = LD(exhausted);
#undef LD
  ox_breaker_stats(r->breaker, &out->breaker);
}
