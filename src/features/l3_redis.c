/* l3_redis.c: see l3_redis.h.
 *
 * A call is: rd_begin (l3_pool: deadline check, breaker, slot checkout; then liveness check,
 * connect if needed), build RESP into the slot's scratch buffer, rd_send, rd_recv per reply,
 * rd_end (drop the connection when its state is unknown; l3_pool: breaker outcome, check the slot
 * back in). The slot's connection and buffer belong to whoever holds its busy flag, so nothing
 * below takes a lock.
 */
#include "features/l3_redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/error.h"
#include "core/log.h"
#include "features/l3_pool.h"

typedef struct {
  _Alignas(64) ox_l3_slot_t base; /* one cache line per slot: no false sharing between workers */
  redisContext *c;                /* NULL when not connected */
  ox_buf_t cmd;                   /* the request being built; reused */
} rd_slot_t;

struct ox_l3_redis {
  char *host, *password;
  int port, db;
  ox_l3_pool_t pool; /* of rd_slot_t; every call is guarded by the breaker */
};

/* The call's state (l3_pool.h). A whole error reply sets classified and outcome. */
typedef ox_l3_call_t rd_call_t;

/* ---- pool ------------------------------------------------------------------------------- */

static void rd_drop(rd_slot_t *s) {
  if (!s->c) return;
  redisFree(s->c);
  s->c = NULL;
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
      int rc = ox_l3_wait_fd(s->c->fd, POLLOUT, deadline, NULL);
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
    int rc = ox_l3_wait_fd(s->c->fd, POLLIN, deadline, NULL);
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
  call->classified = 1;
  for (size_t i = 0; i < sizeof busy / sizeof busy[0]; i++) {
    if (strncmp(rep->str, busy[i], strlen(busy[i])) == 0) {
      call->outcome = OX_BREAKER_FAILURE;
      return OX_EUNAVAILABLE;
    }
  }
  ox_debug("l3_redis: error reply: %.*s", (int)rep->len, rep->str);
  call->outcome = OX_BREAKER_IGNORED;
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
  deadline = ox_l3_pool_connect_deadline(&r->pool, deadline);
  errno = 0;
  redisContext *c = redisConnectNonBlock(r->host, r->port);
  int rc = 0;
  if (!c) return OX_ENOMEM;
  if (c->err) {
    rc = c->err == REDIS_ERR_IO && errno ? -errno : -ECONNREFUSED;
  } else {
    rc = ox_l3_wait_fd(c->fd, POLLOUT, deadline, NULL);
    int err = 0;
    socklen_t len = sizeof err;
    if (!rc && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) rc = -errno;
    if (!rc && err) rc = -err;
  }
  if (rc) {
    ox_l3_count(&r->pool.connect_failures);
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
    ox_l3_count(&r->pool.connect_failures);
    ox_warn("l3_redis: handshake with %s:%d: %s", r->host, r->port, ox_strerror(rc));
    rd_drop(s);
    /* A refused AUTH or SELECT is a configuration error; the breaker may as well open. */
    return rc == OX_EINTERNAL ? OX_EUNAVAILABLE : rc;
  }
  ox_l3_count(&r->pool.connects);
  return 0;
}

/* ---- calls ------------------------------------------------------------------------------ */

static int rd_end(ox_l3_redis_t *r, rd_call_t *call, int rc);

/* guarded: the call is capped by the pool's command timeout (else by deadline alone). */
static int rd_begin_ex(ox_l3_redis_t *r, int64_t deadline, int guarded, rd_call_t *call) {
  int rc = ox_l3_pool_begin(&r->pool, deadline, guarded, call);
  if (rc) return rc;
  rd_slot_t *s = call->slot;
  if (s->c && !ox_l3_idle_ok(s->c->fd)) { /* Redis never speaks first: the server closed it */
    ox_l3_count(&r->pool.stale);
    rd_drop(s);
  }
  if (!s->c) {
    rc = rd_connect(r, s, call->deadline);
    if (rc) return rd_end(r, call, rc);
  }
  s->cmd.len = 0;
  return 0;
}

static int rd_begin(ox_l3_redis_t *r, int64_t deadline, rd_call_t *call) {
  return rd_begin_ex(r, deadline, 1, call);
}

/* Drops the connection if its state is unknown: any error not read from a whole reply (timeout,
 * I/O or protocol error, or ENOMEM/EINVALID with a reply maybe half read: a reply may still be on
 * its way). Then l3_pool reports the outcome to the breaker and checks the slot in. Returns rc. */
static int rd_end(ox_l3_redis_t *r, rd_call_t *call, int rc) {
  rd_slot_t *s = call->slot;
  if (!call->classified && rc < 0 && rc != OX_ENOT_FOUND && s->c) {
    ox_l3_count(&r->pool.dropped);
    rd_drop(s);
  }
  s->cmd.len = 0;
  return ox_l3_pool_end(&r->pool, call, rc);
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
        call.classified = 1;
        call.outcome = OX_BREAKER_IGNORED;
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
        call.classified = 1;
        call.outcome = OX_BREAKER_IGNORED;
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

int ox_l3_redis_call(ox_l3_redis_t *r, const ox_slice_t *argv, const size_t *argc, size_t n,
                     redisReply **reps, int timeout_ms, int64_t deadline_ns) {
  for (size_t i = 0; i < n; i++) reps[i] = NULL;
  if (n == 0) return 0;
  if (timeout_ms > 0) {
    int64_t cap = ox_mono_ns() + (int64_t)timeout_ms * 1000000;
    if (cap < deadline_ns) deadline_ns = cap;
  }
  rd_call_t call;
  int rc = rd_begin_ex(r, deadline_ns, timeout_ms <= 0, &call);
  if (rc) return rc;
  rd_slot_t *s = call.slot;
  const ox_slice_t *a = argv;
  for (size_t i = 0; !rc && i < n; a += argc[i], i++) {
    rc = cmd_begin(&s->cmd, argc[i]);
    for (size_t k = 0; !rc && k < argc[i]; k++) rc = cmd_arg(&s->cmd, a[k].ptr, a[k].len);
  }
  if (!rc) rc = rd_send(s, call.deadline);
  int busy = 0;
  for (size_t i = 0; !rc && i < n; i++) {
    rc = rd_recv(s, &reps[i], call.deadline);
    if (!rc && reps[i]->type == REDIS_REPLY_ERROR) {
      rd_call_t tmp = {0};
      if (rd_reply_error(&tmp, reps[i]) == OX_EUNAVAILABLE) busy = 1;
    }
  }
  if (rc) {
    for (size_t i = 0; i < n; i++) {
      if (reps[i]) freeReplyObject(reps[i]);
      reps[i] = NULL;
    }
  } else {
    call.classified = 1; /* every reply was read whole: the connection is in step */
    call.outcome = busy ? OX_BREAKER_FAILURE : OX_BREAKER_SUCCESS;
  }
  return rd_end(r, &call, rc);
}

void ox_l3_redis_reply_free(redisReply *rep) {
  if (rep) freeReplyObject(rep);
}

/* ---- lifecycle and metrics -------------------------------------------------------------- */

int ox_l3_redis_split_addr(const char *addr, char *host, size_t hostcap, int *port) {
  const char *colon = strrchr(addr, ':');
  long p = 6379;
  size_t hl = colon ? (size_t)(colon - addr) : strlen(addr);
  if (colon) {
    char *end;
    p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 1 || p > 65535) return OX_EINVALID;
  }
  if (hl == 0 || hl >= hostcap) return OX_EINVALID;
  memcpy(host, addr, hl);
  host[hl] = 0;
  *port = (int)p;
  return 0;
}

int ox_l3_redis_create(const ox_l3_redis_opts_t *opts, ox_l3_redis_t **out) {
  ox_l3_redis_opts_t o = opts ? *opts : (ox_l3_redis_opts_t){0};
  if (o.port < 0 || o.port > 65535 || o.pool_size < 0 || o.pool_size > 4096 ||
      o.connect_timeout_ms < 0 || o.command_timeout_ms < 0 || o.db < 0)
    return OX_EINVALID;
  ox_l3_redis_t *r = calloc(1, sizeof *r);
  if (!r) return OX_ENOMEM;
  r->port = o.port ? o.port : 6379;
  r->db = o.db;
  r->host = strdup(o.host ? o.host : "127.0.0.1");
  r->password = o.password ? strdup(o.password) : NULL;
  int rc = (!r->host || (o.password && !r->password)) ? OX_ENOMEM : 0;
  if (!rc)
    rc = ox_l3_pool_init(&r->pool, OX_L3_KIND_REDIS, sizeof(rd_slot_t),
                         o.pool_size ? o.pool_size : 8,
                         o.connect_timeout_ms ? o.connect_timeout_ms : 200,
                         o.command_timeout_ms ? o.command_timeout_ms : 200, &o.breaker);
  if (rc) {
    ox_l3_redis_destroy(r);
    return rc;
  }
  *out = r;
  return 0;
}

void ox_l3_redis_destroy(ox_l3_redis_t *r) {
  if (!r) return;
  for (int i = 0; i < r->pool.nslots; i++) {
    rd_slot_t *s = ox_l3_pool_slot(&r->pool, i);
    rd_drop(s);
    ox_buf_free(&s->cmd);
  }
  ox_l3_pool_fini(&r->pool);
  free(r->host);
  free(r->password);
  free(r);
}

ox_breaker_t *ox_l3_redis_breaker(ox_l3_redis_t *r) {
  return r->pool.breaker;
}

void ox_l3_redis_stats(ox_l3_redis_t *r, ox_l3_redis_stats_t *out) {
  ox_l3_pool_stats(&r->pool, out);
}
