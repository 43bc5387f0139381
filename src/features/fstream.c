/* fstream.c: see fstream.h. */
#include "features/fstream.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "features/l3_redis.h"

#define BLOCK_MS 500          /* an XREAD waits at most this long at the stream's end */
#define READ_BYTES (8u << 20) /* aim for reads of about this many bytes of entries */
#define READ_MAX 128          /* entries per read, at most */
#define OFFSET_EVERY_MS 30000 /* clock offset measured again */
#define GAP_EVERY_MS 30000    /* gap checked again (and after every failure) */
#define FIND_BACK_MS 1000     /* the lookup of a lost reply starts this far before the send */

static ox_slice_t cs(const char *p) {
  return ox_slice(p, strlen(p));
}

/* Upper bounds of the apply-delay histogram, microseconds: 1, 1.5, 2, 3, 5, 7 per decade, from
 * 100 us to 30 s (fine enough to read percentiles from it). */
#define DELAY_BUCKETS 34
static const uint64_t delay_bounds[DELAY_BUCKETS] = {
    100,     150,     200,     300,      500,      700,      1000,    1500,    2000,
    3000,    5000,    7000,    10000,    15000,    20000,    30000,   50000,   70000,
    100000,  150000,  200000,  300000,   500000,   700000,   1000000, 1500000, 2000000,
    3000000, 5000000, 7000000, 10000000, 15000000, 20000000, 30000000};

/* A stream ID: <ms>-<seq>. */
typedef struct {
  uint64_t ms, seq;
} sid_t;

static int sid_parse(const char *p, size_t n, sid_t *out) {
  uint64_t v[2] = {0, 0};
  int part = 0, digits = 0;
  for (size_t i = 0; i < n; i++) {
    if (p[i] == '-' && part == 0 && digits) {
      part = 1;
      digits = 0;
    } else if (p[i] >= '0' && p[i] <= '9') {
      if (v[part] > (UINT64_MAX - 9) / 10) return -1;
      v[part] = v[part] * 10 + (uint64_t)(p[i] - '0');
      digits++;
    } else {
      return -1;
    }
  }
  if (!digits) return -1;
  out->ms = v[0];
  out->seq = v[1];
  return 0;
}

static int sid_cmp(sid_t a, sid_t b) {
  if (a.ms != b.ms) return a.ms < b.ms ? -1 : 1;
  return a.seq < b.seq ? -1 : a.seq > b.seq;
}

static int sid_fmt(sid_t s, char *out, size_t cap) {
  return snprintf(out, cap, "%" PRIu64 "-%" PRIu64, s.ms, s.seq);
}

typedef enum {
  ST_STARTING,
  ST_FOLLOWING,
  ST_CATCHING_UP,
  ST_REDIS_DOWN,
  ST_GAP,
  ST_APPLY_FAILING /* the store refuses the commit (full, I/O error): retried, lag grows */
} state_t;
static const char *const state_names[] = {"starting",   "following", "catching_up",
                                          "redis_down", "gap",       "apply_failing"};

/* A request's state (ox_fstream_req_t.state). */
enum { Q_QUEUED, Q_SENT, Q_UNKNOWN, Q_APPENDED };

struct ox_fstream {
  ox_fstore_t *fs;
  ox_fstream_opts_t o;
  char *key;
  char *lock_key;    /* "<key>:trim-lock" */
  char *trimmed_key; /* "<key>:trimmed": the largest ID the trims deleted */
  char poskey[512];
  size_t poskey_len;
  ox_l3_redis_t *w; /* appends and lookups: a pool for the workers */
  ox_l3_redis_t *r; /* the applier's connection */
  char origin[17];  /* this process's origin token prefix (random, hex) */
  atomic_uint_fast64_t seq;
  atomic_int_fast64_t offset_ms; /* Redis's clock minus ours */

  pthread_mutex_t mu;              /* pending, the queue, applied, closing */
  pthread_cond_t cv;               /* wakes the appender */
  ox_fstream_req_t *pending;       /* submitted, not completed (through next) */
  ox_fstream_req_t *qhead, *qtail; /* submitted, not sent yet (through qnext) */
  int closing;
  sid_t applied;
  pthread_mutex_t apply_mu; /* held while a batch is applied; a snapshot takes it */

  pthread_t thread, athread;
  int started, astarted;
  atomic_int stop;
  atomic_int state;
  atomic_int caught_up_once;
  atomic_int at_end;              /* the last read came back short: nothing more was there */
  atomic_int_fast64_t blocked_ns; /* mono time the current read was sent (0: none) */
  atomic_int_fast64_t caught_ms;  /* wall ms up to which every entry is known applied */
  atomic_int_fast64_t applied_ms; /* ms part of the applied ID */
  atomic_uint_fast64_t entries, events, bad_entries, refused_entries, append_failures, trims,
      trimmed, apply_errors;
  atomic_uint_fast64_t delay[DELAY_BUCKETS + 1]; /* apply delay histogram (last: +Inf) */
  atomic_uint_fast64_t delay_sum_us;
};

/* ---- scripts ------------------------------------------------------------------------------ */

/* KEYS[1] stream; ARGV: deadline (Redis ms), body, keys, origin. */
static const char append_lua[] =
    "local t = redis.call('TIME')\n"
    "if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[1]) then\n"
    "  return redis.error_reply('ONNXD_LATE the append reached Redis after its deadline')\n"
    "end\n"
    "return redis.call('XADD', KEYS[1], '*', 'o', ARGV[4], 'k', ARGV[3], 'b', ARGV[2])\n";

/* KEYS[1] stream; ARGV: first ID to look at, origin. Returns {id or '', Redis ms}. */
static const char find_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local r = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', 100000)\n"
    "for i = 1, #r do\n"
    "  local f = r[i][2]\n"
    "  if f[1] == 'o' and f[2] == ARGV[2] then return {r[i][1], now} end\n"
    "end\n"
    "return {'', now}\n";

/* ---- helpers ------------------------------------------------------------------------------ */

static int64_t redis_now_ms(ox_fstream_t *s) {
  return ox_wall_ms() + atomic_load(&s->offset_ms);
}

/* One command on the applier's connection. *rep owned by the caller. */
static int call1(ox_l3_redis_t *r, const ox_slice_t *argv, size_t argc, redisReply **rep,
                 int timeout_ms) {
  return ox_l3_redis_call(r, argv, &argc, 1, rep, timeout_ms,
                          ox_mono_ns() + (int64_t)timeout_ms * 1000000);
}

static void measure_offset(ox_fstream_t *s) {
  ox_slice_t a[] = {OX_SLICE_LIT("TIME")};
  redisReply *rep = NULL;
  int64_t t0 = ox_wall_ms();
  if (call1(s->r, a, 1, &rep, 1000)) return;
  int64_t t1 = ox_wall_ms();
  if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
      rep->element[0]->type == REDIS_REPLY_STRING && rep->element[1]->type == REDIS_REPLY_STRING) {
    int64_t ms = strtoll(rep->element[0]->str, NULL, 10) * 1000 +
                 strtoll(rep->element[1]->str, NULL, 10) / 1000;
    atomic_store(&s->offset_ms, ms - (t0 + t1) / 2);
  }
  ox_l3_redis_reply_free(rep);
}

/* 1 when entries after `pos` were deleted (a gap), 0 when not (or the stream does not exist
 * yet), or an error: the largest deleted ID is the larger of "<key>:trimmed" (written by the
 * trim) and XINFO STREAM's max-deleted-entry-id (entries deleted otherwise, Redis 7). */
static int check_gap(ox_fstream_t *s, sid_t pos) {
  ox_slice_t a[] = {OX_SLICE_LIT("GET"), cs(s->trimmed_key), OX_SLICE_LIT("XINFO"),
                    OX_SLICE_LIT("STREAM"), cs(s->key)};
  size_t argc[] = {2, 3};
  redisReply *rep[2] = {NULL, NULL};
  int rc = ox_l3_redis_call(s->r, a, argc, 2, rep, 2000, ox_mono_ns() + INT64_C(2000000000));
  if (rc) return rc;
  int gap = 0;
  sid_t del;
  if (rep[0]->type == REDIS_REPLY_STRING && !sid_parse(rep[0]->str, rep[0]->len, &del))
    gap = sid_cmp(del, pos) > 0;
  else if (rep[0]->type == REDIS_REPLY_ERROR)
    rc = OX_EUNAVAILABLE;
  redisReply *x = rep[1];
  if (x->type == REDIS_REPLY_ERROR) {
    if (!strstr(x->str, "no such key")) {
      ox_warn("feature stream: XINFO STREAM %s: %s", s->key, x->str);
      rc = OX_EUNAVAILABLE;
    }
  } else if (x->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i + 1 < x->elements; i += 2) {
      redisReply *k = x->element[i], *v = x->element[i + 1];
      if (k->type == REDIS_REPLY_STRING && !strcmp(k->str, "max-deleted-entry-id") &&
          v->type == REDIS_REPLY_STRING && !sid_parse(v->str, v->len, &del) &&
          sid_cmp(del, pos) > 0)
        gap = 1;
    }
  }
  ox_l3_redis_reply_free(rep[0]);
  ox_l3_redis_reply_free(rep[1]);
  return rc ? rc : gap;
}

/* KEYS[1] stream, KEYS[2] "<key>:trimmed"; ARGV[1] the cut (an ID). Deletes the entries below
 * the cut and records the largest deleted ID in KEYS[2] (it only moves forward): XTRIM does not
 * update XINFO's max-deleted-entry-id in Redis 7.0, so replicas read this key to find gaps.
 * Returns {entries deleted, KEYS[2]'s value}. */
static const char trim_lua[] =
    "local r = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)\n"
    "if #r == 0 then return {0, redis.call('GET', KEYS[2]) or ''} end\n"
    "local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])\n"
    "local function split(id)\n"
    "  local d = string.find(id, '-', 1, true)\n"
    "  return tonumber(string.sub(id, 1, d - 1)), tonumber(string.sub(id, d + 1))\n"
    "end\n"
    "local last = r[1][1]\n"
    "local cur = redis.call('GET', KEYS[2])\n"
    "if cur then\n"
    "  local a, b = split(cur)\n"
    "  local c, d = split(last)\n"
    "  if a > c or (a == c and b >= d) then last = cur end\n"
    "end\n"
    "redis.call('SET', KEYS[2], last)\n"
    "return {n, last}\n";

static void trim(ox_fstream_t *s) {
  char px[24], minid[32];
  snprintf(px, sizeof px, "%" PRId64, 2 * s->o.trim_every_ms);
  ox_slice_t a[] = {OX_SLICE_LIT("SET"), cs(s->lock_key), cs(s->origin),       OX_SLICE_LIT("NX"),
                    OX_SLICE_LIT("PX"),  cs(px),          OX_SLICE_LIT("GET"), cs(s->lock_key)};
  size_t argc[] = {6, 2};
  redisReply *rep[2] = {NULL, NULL};
  if (ox_l3_redis_call(s->r, a, argc, 2, rep, 1000, ox_mono_ns() + INT64_C(1000000000))) return;
  int holder = rep[1]->type == REDIS_REPLY_STRING && !strcmp(rep[1]->str, s->origin);
  ox_l3_redis_reply_free(rep[0]);
  ox_l3_redis_reply_free(rep[1]);
  if (!holder) return;
  int64_t cut = redis_now_ms(s) - s->o.trim_ms;
  if (cut <= 0) return;
  snprintf(minid, sizeof minid, "%" PRId64 "-0", cut);
  ox_slice_t t[] = {OX_SLICE_LIT("EVAL"), ox_slice(trim_lua, sizeof trim_lua - 1),
                    OX_SLICE_LIT("2"),    cs(s->key),
                    cs(s->trimmed_key),   cs(minid)};
  redisReply *tr = NULL;
  if (call1(s->r, t, 6, &tr, 5000)) return;
  if (tr->type == REDIS_REPLY_ARRAY && tr->elements == 2 &&
      tr->element[0]->type == REDIS_REPLY_INTEGER) {
    atomic_fetch_add(&s->trims, 1);
    atomic_fetch_add(&s->trimmed, (uint64_t)tr->element[0]->integer);
    if (tr->element[0]->integer)
      ox_info("feature stream: trimmed %lld entries of %s before %s", tr->element[0]->integer,
              s->key, minid);
  } else if (tr->type == REDIS_REPLY_ERROR) {
    ox_warn("feature stream: trimming %s: %s", s->key, tr->str);
  }
  ox_l3_redis_reply_free(tr);
}

/* ---- applying ----------------------------------------------------------------------------- */

static redisReply *field(redisReply *fields, const char *name) {
  for (size_t i = 0; i + 1 < fields->elements; i += 2)
    if (fields->element[i]->type == REDIS_REPLY_STRING && !strcmp(fields->element[i]->str, name) &&
        fields->element[i + 1]->type == REDIS_REPLY_STRING)
      return fields->element[i + 1];
  return NULL;
}

/* Our origin's seq in entry fields, or 0. */
static uint64_t own_seq(ox_fstream_t *s, redisReply *o) {
  if (!o || o->len < 18 || memcmp(o->str, s->origin, 16) || o->str[16] != '-') return 0;
  return strtoull(o->str + 17, NULL, 10);
}

/* ---- requests ---------------------------------------------------------------------------- */

static ox_fstream_req_t *find_pending(ox_fstream_t *s, uint64_t seq) {
  for (ox_fstream_req_t *q = s->pending; q; q = q->next)
    if (q->seq == seq) return q;
  return NULL;
}

/* Takes q off the pending list (and the queue) and chains it on *done with its outcome rc in
 * fail_rc; call_done calls the callbacks once the lock is released. Under mu. */
static void finish_locked(ox_fstream_t *s, ox_fstream_req_t *q, int rc, ox_fstream_req_t **done) {
  for (ox_fstream_req_t **p = &s->pending; *p; p = &(*p)->next)
    if (*p == q) {
      *p = q->next;
      break;
    }
  if (q->state == Q_QUEUED) {
    ox_fstream_req_t *prev = NULL;
    for (ox_fstream_req_t *x = s->qhead; x; prev = x, x = x->qnext)
      if (x == q) {
        if (prev)
          prev->qnext = q->qnext;
        else
          s->qhead = q->qnext;
        if (s->qtail == q) s->qtail = prev;
        break;
      }
  }
  if (rc == OX_EUNAVAILABLE || rc == OX_ETIMEOUT) atomic_fetch_add(&s->append_failures, 1);
  q->fail_rc = rc;
  q->dnext = *done;
  *done = q;
}

static void call_done(ox_fstream_req_t *done) {
  while (done) {
    ox_fstream_req_t *next = done->dnext;
    done->done(done, done->fail_rc);
    done = next;
  }
}

/* Applies the entries of one XREAD reply (rep->element[...] = [id, fields]). Returns 0 or an
 * error (nothing, or a prefix, applied: the caller reloads its position). */
static int apply_entries(ox_fstream_t *s, redisReply *list, ox_arena_t *arena) {
  size_t n = list->elements;
  ox_fstore_entry_t *ents = calloc(n, sizeof *ents);
  ox_slice_t *pos = calloc(n, sizeof *pos);
  sid_t *ids = calloc(n, sizeof *ids);
  ox_fstore_event_t **evs = calloc(n, sizeof *evs);
  int rc = ents && pos && ids && evs ? 0 : OX_ENOMEM;
  for (size_t i = 0; i < n && !rc; i++) {
    redisReply *e = list->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[0]->type != REDIS_REPLY_STRING ||
        sid_parse(e->element[0]->str, e->element[0]->len, &ids[i])) {
      rc = OX_EINTERNAL;
      break;
    }
    pos[i] = ox_slice(e->element[0]->str, e->element[0]->len);
    ents[i].now_ms = (int64_t)ids[i].ms;
    redisReply *f = e->element[1], *b = NULL, *k = NULL;
    if (f->type == REDIS_REPLY_ARRAY) {
      b = field(f, "b");
      k = field(f, "k");
    }
    int drc = b && k ? s->o.decode(s->o.decode_arg, ox_slice(b->str, b->len),
                                   ox_slice(k->str, k->len), arena, &evs[i], &ents[i].n)
                     : OX_EINVALID;
    if (!drc && !ox_fstore_events_valid(evs[i], ents[i].n))
      drc = OX_EINVALID; /* another writer's */
    if (drc == OX_ENOMEM) {
      rc = drc;
    } else if (drc) { /* not an entry of ours: skipped alike everywhere */
      atomic_fetch_add(&s->bad_entries, 1);
      ox_warn("feature stream: entry %s of %s is not a valid request; skipped", pos[i].ptr, s->key);
      ents[i].n = 0;
    }
    ents[i].evs = evs[i];
  }
  if (!rc) {
    pthread_mutex_lock(&s->apply_mu);
    rc = ox_fstore_apply(s->fs, ents, n, ox_slice(s->poskey, s->poskey_len), pos);
    if (!rc) {
      pthread_mutex_lock(&s->mu);
      s->applied = ids[n - 1];
      pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_unlock(&s->apply_mu);
  }
  if (!rc) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    uint64_t nev = 0;
    for (size_t i = 0; i < n; i++) {
      nev += ents[i].accepted;
      if (ents[i].rc) atomic_fetch_add(&s->refused_entries, 1);
      int64_t d = now_us + atomic_load(&s->offset_ms) * 1000 - (int64_t)ids[i].ms * 1000;
      uint64_t us = d > 0 ? (uint64_t)d : 0;
      size_t b = 0;
      while (b < DELAY_BUCKETS && us > delay_bounds[b]) b++;
      atomic_fetch_add_explicit(&s->delay[b], 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&s->delay_sum_us, us, memory_order_relaxed);
    }
    atomic_fetch_add(&s->entries, n);
    atomic_fetch_add(&s->events, nev);
    atomic_store(&s->applied_ms, (int64_t)ids[n - 1].ms);
    /* complete the appends of this process among them */
    ox_fstream_req_t *done = NULL;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < n && s->pending; i++) {
      redisReply *f = list->element[i]->element[1];
      uint64_t seq = f->type == REDIS_REPLY_ARRAY ? own_seq(s, field(f, "o")) : 0;
      ox_fstream_req_t *q = seq ? find_pending(s, seq) : NULL;
      if (!q) continue;
      sid_fmt(ids[i], q->result.id, sizeof q->result.id);
      q->result.accepted = ents[i].accepted;
      q->result.duplicates = ents[i].duplicates;
      memcpy(q->result.quota_entity, ents[i].quota_entity, sizeof q->result.quota_entity);
      q->applied = 1;
      q->applied_rc = ents[i].rc;
      if (!q->busy) finish_locked(s, q, ents[i].rc, &done); /* else the appender finishes it */
    }
    pthread_mutex_unlock(&s->mu);
    call_done(done);
  }
  for (size_t i = 0; evs && i < n; i++) free(evs[i]);
  free(evs);
  free(ents);
  free(pos);
  free(ids);
  return rc;
}

static int load_pos(ox_fstream_t *s, sid_t *pos) {
  char v[64];
  size_t len = 0;
  int rc = ox_fstore_meta_get(s->fs, ox_slice(s->poskey, s->poskey_len), v, sizeof v - 1, &len);
  if (rc == OX_ENOT_FOUND) {
    *pos = (sid_t){0, 0};
    return 0;
  }
  if (rc) return rc;
  return sid_parse(v, len, pos) ? OX_EINTERNAL : 0;
}

static void nap(ox_fstream_t *s, int64_t ms) {
  for (int64_t end = ox_mono_ms() + ms; !atomic_load(&s->stop) && ox_mono_ms() < end;) {
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  }
}

int ox_fstream_ready(ox_fstream_t *s, char *why, size_t cap);

static void *applier(void *arg) {
  ox_fstream_t *s = arg;
  sid_t pos = s->applied;
  int64_t next_offset = 0, next_gap = 0, next_trim = 0, backoff = 100;
  size_t count = 16; /* until the entries' size is known */
  ox_arena_t arena;
  ox_arena_init(&arena);
  while (!atomic_load(&s->stop)) {
    int64_t now = ox_mono_ms();
    if (now >= next_offset) {
      measure_offset(s);
      next_offset = now + OFFSET_EVERY_MS;
    }
    if (s->o.trim_ms && now >= next_trim) {
      trim(s);
      next_trim = now + s->o.trim_every_ms;
    }
    if (now >= next_gap || atomic_load(&s->state) == ST_GAP) {
      int g = check_gap(s, pos);
      if (g < 0) {
        atomic_store(&s->state, ST_REDIS_DOWN);
        nap(s, backoff);
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
        continue;
      }
      if (g) {
        if (atomic_exchange(&s->state, ST_GAP) != ST_GAP) {
          char p[48];
          sid_fmt(pos, p, sizeof p);
          ox_error(
              "feature stream: %s was trimmed past this store's position %s: entries are "
              "missing; start this replica from a peer's snapshot (an empty --feature-dir "
              "with --feature-bootstrap)",
              s->key, p);
        }
        nap(s, 1000);
        continue;
      }
      next_gap = now + GAP_EVERY_MS;
    }
    char cnt[24], from[48];
    snprintf(cnt, sizeof cnt, "%zu", count);
    sid_fmt(pos, from, sizeof from);
    ox_slice_t a[] = {
        OX_SLICE_LIT("XREAD"), OX_SLICE_LIT("COUNT"),   cs(cnt),    OX_SLICE_LIT("BLOCK"),
        OX_SLICE_LIT("500"),   OX_SLICE_LIT("STREAMS"), cs(s->key), cs(from)};
    redisReply *rep = NULL;
    int64_t sent_wall = ox_wall_ms();
    atomic_store(&s->blocked_ns, ox_mono_ns());
    int rc = call1(s->r, a, 8, &rep, BLOCK_MS + 2000);
    atomic_store(&s->blocked_ns, 0);
    if (!rc && rep->type == REDIS_REPLY_ERROR) {
      if (atomic_load(&s->state) != ST_REDIS_DOWN)
        ox_warn("feature stream: XREAD %s: %s", s->key, rep->str);
      rc = OX_EUNAVAILABLE;
    }
    if (rc) {
      ox_l3_redis_reply_free(rep);
      if (atomic_exchange(&s->state, ST_REDIS_DOWN) != ST_REDIS_DOWN)
        ox_warn("feature stream: reading %s failed (%s); scoring goes on from local state", s->key,
                ox_strerror(rc));
      atomic_store(&s->at_end, 0);
      next_gap = 0; /* entries may have been trimmed meanwhile */
      nap(s, backoff);
      backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
      continue;
    }
    backoff = 100;
    redisReply *list = NULL;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
        rep->element[0]->type == REDIS_REPLY_ARRAY && rep->element[0]->elements == 2 &&
        rep->element[0]->element[1]->type == REDIS_REPLY_ARRAY)
      list = rep->element[0]->element[1];
    size_t got = list ? list->elements : 0;
    if (got) {
      size_t bytes = 0;
      for (size_t i = 0; i < got; i++) {
        redisReply *f =
            list->element[i]->type == REDIS_REPLY_ARRAY && list->element[i]->elements == 2
                ? list->element[i]->element[1]
                : NULL;
        redisReply *b = f && f->type == REDIS_REPLY_ARRAY ? field(f, "b") : NULL;
        bytes += b ? b->len : 0;
      }
      rc = apply_entries(s, list, &arena);
      ox_arena_free(&arena);
      ox_arena_init(&arena);
      if (rc) {
        /* logged when it starts failing and then once a minute: it retries every second */
        if (atomic_exchange(&s->state, ST_APPLY_FAILING) != ST_APPLY_FAILING ||
            atomic_load(&s->apply_errors) % 60 == 0)
          ox_error(
              "feature stream: applying entries of %s failed (%s); retrying every second, "
              "scoring goes on from what is applied",
              s->key, ox_strerror(rc));
        atomic_fetch_add(&s->apply_errors, 1);
        ox_l3_redis_reply_free(rep);
        if (load_pos(s, &pos) == 0) {
          pthread_mutex_lock(&s->mu);
          s->applied = pos;
          pthread_mutex_unlock(&s->mu);
        }
        nap(s, 1000);
        continue;
      }
      pos = s->applied;
      size_t avg = bytes / got + 1;
      count = READ_BYTES / avg;
      if (count < 1) count = 1;
      if (count > READ_MAX) count = READ_MAX;
    }
    ox_l3_redis_reply_free(rep);
    int end = got < count || got == 0;
    atomic_store(&s->at_end, end);
    if (end) atomic_store(&s->caught_ms, sent_wall);
    atomic_store(&s->state, end ? ST_FOLLOWING : ST_CATCHING_UP);
    if (!atomic_load(&s->caught_up_once)) {
      char why[256];
      ox_fstream_ready(s, why, sizeof why); /* notes the first time the lag is within bounds */
    }
  }
  ox_arena_free(&arena);
  return NULL;
}

/* ---- lag and readiness -------------------------------------------------------------------- */

static double lag_seconds(ox_fstream_t *s) {
  int64_t now = ox_wall_ms(), blocked = atomic_load(&s->blocked_ns);
  if (blocked && atomic_load(&s->at_end) && ox_mono_ns() - blocked < (BLOCK_MS + 1000) * 1000000LL)
    return 0.0; /* waiting at the stream's end: anything added would come back at once */
  int64_t known = atomic_load(&s->caught_ms), a = atomic_load(&s->applied_ms);
  if (a > known) known = a;
  if (!known) return -1.0; /* nothing known yet */
  return now > known ? (double)(now - known) / 1000.0 : 0.0;
}

int ox_fstream_ready(ox_fstream_t *s, char *why, size_t cap) {
  int st = atomic_load(&s->state);
  if (st == ST_GAP) {
    snprintf(why, cap,
             "feature stream: entries this store needs were trimmed from %s; start it from a "
             "peer's snapshot (--feature-bootstrap)",
             s->key);
    return 0;
  }
  if (atomic_load(&s->caught_up_once)) return 1;
  double lag = lag_seconds(s);
  if (lag >= 0 && lag * 1000.0 <= (double)s->o.ready_lag_ms && st != ST_REDIS_DOWN &&
      st != ST_APPLY_FAILING && st != ST_STARTING) {
    atomic_store(&s->caught_up_once, 1);
    return 1;
  }
  if (lag < 0)
    snprintf(why, cap, "feature stream: not caught up yet with %s (%s)", s->key, state_names[st]);
  else
    snprintf(why, cap, "feature stream: catching up with %s (lag %.1f s > %.1f s)", s->key, lag,
             (double)s->o.ready_lag_ms / 1000.0);
  return 0;
}

/* ---- appending ---------------------------------------------------------------------------- */

#define FIND_EVERY_MS 50 /* a lost reply is looked up again after this */
#define FIND_MAX_MS 200  /* one lookup waits at most this long */

/* The appender's treatment of a batch reply: q was sent (busy); rep its reply or NULL when the
 * call failed with rc. Under mu. */
static void on_append_reply(ox_fstream_t *s, ox_fstream_req_t *q, redisReply *rep, int rc,
                            ox_fstream_req_t **done) {
  q->busy = 0;
  sid_t id;
  if (rep && rep->type == REDIS_REPLY_STRING && !sid_parse(rep->str, rep->len, &id)) {
    sid_fmt(id, q->result.id, sizeof q->result.id);
    q->state = Q_APPENDED;
    if (q->applied) finish_locked(s, q, q->applied_rc, done);
  } else if (rep) { /* an error reply: nothing was added */
    snprintf(q->result.why, sizeof q->result.why,
             "the event log (Redis) refused the append: %.200s",
             rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    if (rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "ONNXD_LATE", 10))
      snprintf(q->result.why, sizeof q->result.why,
               "the event log (Redis) did not run the append within %" PRId64 " ms",
               s->o.timeout_ms);
    finish_locked(s, q, OX_EUNAVAILABLE, done);
  } else if (rc == -ECONNREFUSED || rc == OX_EUNAVAILABLE || rc == OX_ENOMEM) {
    /* never sent: a refused connection, an open breaker, no free connection */
    snprintf(q->result.why, sizeof q->result.why, "the event log (Redis) is unavailable: %s",
             ox_strerror(rc));
    finish_locked(s, q, OX_EUNAVAILABLE, done);
  } else { /* sent, no reply: look it up until the deadline */
    q->state = Q_UNKNOWN;
    q->fail_rc = rc;
    q->next_find_ns = 0;
    if (q->applied) finish_locked(s, q, q->applied_rc, done);
  }
}

/* Sends the appends of batch[0..n) (busy) in one pipelined round trip and files the replies. */
static void send_batch(ox_fstream_t *s, ox_fstream_req_t **batch, size_t n, ox_slice_t *argv,
                       size_t *argc, redisReply **reps) {
  int64_t deadline = INT64_MAX;
  for (size_t i = 0; i < n; i++) {
    ox_fstream_req_t *q = batch[i];
    char *dl = q->origin + strlen(q->origin) + 1; /* the deadline's digits, after the origin */
    ox_slice_t *a = argv + 8 * i;
    a[0] = OX_SLICE_LIT("EVAL");
    a[1] = ox_slice(append_lua, sizeof append_lua - 1);
    a[2] = OX_SLICE_LIT("1");
    a[3] = cs(s->key);
    a[4] = cs(dl);
    a[5] = q->body;
    a[6] = q->keys;
    a[7] = cs(q->origin);
    argc[i] = 8;
    if (q->deadline_ns < deadline) deadline = q->deadline_ns;
  }
  int64_t left = (deadline - ox_mono_ns()) / 1000000;
  int rc = ox_l3_redis_call(s->w, argv, argc, n, reps, left > 0 ? (int)left : 1, deadline);
  ox_fstream_req_t *done = NULL;
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < n; i++) on_append_reply(s, batch[i], rc ? NULL : reps[i], rc, &done);
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; !rc && i < n; i++) ox_l3_redis_reply_free(reps[i]);
  call_done(done);
}

/* Looks the lost appends of batch[0..n) (busy) up by their origin tokens. */
static void find_batch(ox_fstream_t *s, ox_fstream_req_t **batch, size_t n, ox_slice_t *argv,
                       size_t *argc, redisReply **reps) {
  char from[32];
  int64_t oldest = INT64_MAX;
  for (size_t i = 0; i < n; i++)
    if (batch[i]->redis_deadline_ms < oldest) oldest = batch[i]->redis_deadline_ms;
  snprintf(from, sizeof from, "%" PRId64, oldest - s->o.timeout_ms - FIND_BACK_MS);
  for (size_t i = 0; i < n; i++) {
    ox_slice_t *a = argv + 6 * i;
    a[0] = OX_SLICE_LIT("EVAL");
    a[1] = ox_slice(find_lua, sizeof find_lua - 1);
    a[2] = OX_SLICE_LIT("1");
    a[3] = cs(s->key);
    a[4] = cs(from);
    a[5] = cs(batch[i]->origin);
    argc[i] = 6;
  }
  int rc = ox_l3_redis_call(s->w, argv, argc, n, reps, FIND_MAX_MS,
                            ox_mono_ns() + FIND_MAX_MS * INT64_C(1000000));
  ox_fstream_req_t *done = NULL;
  int64_t next = ox_mono_ns() + FIND_EVERY_MS * INT64_C(1000000);
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < n; i++) {
    ox_fstream_req_t *q = batch[i];
    redisReply *rep = rc ? NULL : reps[i];
    sid_t id;
    q->busy = 0;
    q->next_find_ns = next;
    if (q->applied) {
      finish_locked(s, q, q->applied_rc, &done);
    } else if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
               rep->element[0]->type == REDIS_REPLY_STRING &&
               rep->element[1]->type == REDIS_REPLY_INTEGER) {
      if (rep->element[0]->len && !sid_parse(rep->element[0]->str, rep->element[0]->len, &id)) {
        sid_fmt(id, q->result.id, sizeof q->result.id);
        q->state = Q_APPENDED;
      } else if (!rep->element[0]->len && rep->element[1]->integer > q->redis_deadline_ms) {
        snprintf(q->result.why, sizeof q->result.why,
                 "the event log (Redis) did not take the append in time (%s)",
                 ox_strerror(q->fail_rc));
        finish_locked(s, q, OX_EUNAVAILABLE, &done);
      }
    }
  }
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; !rc && i < n; i++) ox_l3_redis_reply_free(reps[i]);
  call_done(done);
}

/* A request at its deadline: its answer (under mu). */
static void expire_locked(ox_fstream_t *s, ox_fstream_req_t *q, ox_fstream_req_t **done) {
  if (q->state == Q_APPENDED) {
    snprintf(q->result.why, sizeof q->result.why,
             "appended to the event log as %s; not applied here within %" PRId64
             " ms (it will be, on every replica)",
             q->result.id, s->o.timeout_ms);
    finish_locked(s, q, OX_EPENDING, done);
  } else if (q->state == Q_UNKNOWN && q->fail_rc != OX_ETIMEOUT) {
    /* the connection broke after the append was sent, and Redis could not be asked again */
    snprintf(q->result.why, sizeof q->result.why,
             "the connection to the event log (Redis) failed after the append was sent (%s) and "
             "Redis could not be asked again within %" PRId64
             " ms: the events may or may not be in the stream",
             ox_strerror(q->fail_rc), s->o.timeout_ms);
    finish_locked(s, q, OX_ETIMEOUT, done);
  } else {
    /* not sent, or sent on a connection that stayed up without an answer: the append carries
     * a deadline before this one, so Redis refuses it if it runs it now */
    snprintf(q->result.why, sizeof q->result.why,
             "the event log (Redis) did not answer within %" PRId64
             " ms; the append expires unapplied",
             s->o.timeout_ms);
    finish_locked(s, q, OX_EUNAVAILABLE, done);
  }
}

#define APPEND_BATCH 256             /* appends a round trip, at most */
#define APPEND_BYTES (8u << 20)      /* and about this many bytes of bodies */
#define SEND_MIN_NS (20 * 1000000LL) /* a request with less time left is not sent */

static void *appender(void *arg) {
  ox_fstream_t *s = arg;
  ox_fstream_req_t *batch[APPEND_BATCH];
  ox_slice_t argv[8 * APPEND_BATCH];
  size_t argc[APPEND_BATCH];
  redisReply *reps[APPEND_BATCH];
  pthread_mutex_lock(&s->mu);
  while (!s->closing) {
    ox_fstream_req_t *done = NULL;
    int64_t now = ox_mono_ns(), wake = now + FIND_EVERY_MS * INT64_C(1000000);
    for (ox_fstream_req_t *q = s->pending, *nx; q; q = nx) {
      nx = q->next;
      if (q->busy) continue;
      if (now >= q->deadline_ns)
        expire_locked(s, q, &done);
      else if (q->deadline_ns < wake)
        wake = q->deadline_ns;
    }
    size_t n = 0, bytes = 0; /* appends to send, and their bodies' bytes */
    while (s->qhead && n < APPEND_BATCH && bytes < APPEND_BYTES) {
      ox_fstream_req_t *q = s->qhead;
      s->qhead = q->qnext;
      if (!s->qhead) s->qtail = NULL;
      if (q->deadline_ns - now < SEND_MIN_NS) { /* too late to wait for an answer: not sent */
        q->state = Q_SENT;                      /* off the queue already */
        snprintf(q->result.why, sizeof q->result.why,
                 "the event log (Redis) did not take the append within %" PRId64 " ms",
                 s->o.timeout_ms);
        finish_locked(s, q, OX_EUNAVAILABLE, &done);
        continue;
      }
      q->state = Q_SENT;
      q->busy = 1;
      batch[n++] = q;
      bytes += q->body.len;
    }
    size_t m = 0; /* lost replies to look up */
    if (!n)
      for (ox_fstream_req_t *q = s->pending; q && m < APPEND_BATCH; q = q->next)
        if (q->state == Q_UNKNOWN && !q->busy && q->next_find_ns <= now) {
          q->busy = 1;
          batch[m++] = q;
        }
    if (!n && !m && !done) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      int64_t left = wake - now;
      ts.tv_sec += left / 1000000000;
      ts.tv_nsec += left % 1000000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&s->cv, &s->mu, &ts);
      continue;
    }
    pthread_mutex_unlock(&s->mu);
    call_done(done);
    if (n) send_batch(s, batch, n, argv, argc, reps);
    if (m) find_batch(s, batch, m, argv, argc, reps);
    pthread_mutex_lock(&s->mu);
  }
  /* closing (the applier has stopped): every request still here gets its answer */
  ox_fstream_req_t *done = NULL;
  while (s->pending) {
    ox_fstream_req_t *q = s->pending;
    if (q->state == Q_APPENDED || q->state == Q_UNKNOWN) {
      expire_locked(s, q, &done);
    } else {
      snprintf(q->result.why, sizeof q->result.why, "the server is shutting down");
      finish_locked(s, q, OX_EUNAVAILABLE, &done);
    }
  }
  pthread_mutex_unlock(&s->mu);
  call_done(done);
  return NULL;
}

void ox_fstream_submit(ox_fstream_t *s, ox_fstream_req_t *q) {
  memset(&q->result, 0, sizeof q->result);
  q->next = q->qnext = q->dnext = NULL;
  q->state = Q_QUEUED;
  q->busy = q->applied = q->applied_rc = q->fail_rc = 0;
  q->deadline_ns = ox_mono_ns() + s->o.timeout_ms * 1000000;
  int64_t margin = s->o.timeout_ms / 4 > 100 ? s->o.timeout_ms / 4 : 100;
  if (margin > s->o.timeout_ms / 2) margin = s->o.timeout_ms / 2;
  q->redis_deadline_ms = redis_now_ms(s) + s->o.timeout_ms - margin;
  q->seq = atomic_fetch_add(&s->seq, 1) + 1;
  /* "<origin>-<seq>\0<deadline digits>": the script's arguments, kept with the request */
  int k = snprintf(q->origin, sizeof q->origin, "%s-%" PRIu64, s->origin, q->seq);
  snprintf(q->origin + k + 1, sizeof q->origin - (size_t)k - 1, "%" PRId64, q->redis_deadline_ms);
  pthread_mutex_lock(&s->mu);
  if (s->closing) {
    pthread_mutex_unlock(&s->mu);
    snprintf(q->result.why, sizeof q->result.why, "the server is shutting down");
    q->done(q, OX_EUNAVAILABLE);
    return;
  }
  q->next = s->pending;
  s->pending = q;
  if (s->qtail)
    s->qtail->qnext = q;
  else
    s->qhead = q;
  s->qtail = q;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* ---- status, metrics, snapshot ------------------------------------------------------------ */

int ox_fstream_status_json(ox_fstream_t *s, ox_buf_t *out) {
  char id[48];
  pthread_mutex_lock(&s->mu);
  sid_fmt(s->applied, id, sizeof id);
  pthread_mutex_unlock(&s->mu);
  char why[256];
  int ready = ox_fstream_ready(s, why, sizeof why);
  double lag = lag_seconds(s);
  int rc = ox_buf_puts(out, "{\"key\":");
  rc |= ox_buf_append_json_string(out, s->key, strlen(s->key));
  rc |= ox_buf_printf(out,
                      ",\"applied_id\":\"%s\",\"lag_seconds\":%.3f,\"caught_up\":%s,"
                      "\"state\":\"%s\",\"entries_applied\":%" PRIu64 ",\"events_applied\":%" PRIu64
                      ",\"entries_refused\":%" PRIu64 ",\"entries_skipped\":%" PRIu64 "}",
                      id, lag < 0 ? 0.0 : lag, ready ? "true" : "false",
                      state_names[atomic_load(&s->state)], (uint64_t)atomic_load(&s->entries),
                      (uint64_t)atomic_load(&s->events), (uint64_t)atomic_load(&s->refused_entries),
                      (uint64_t)atomic_load(&s->bad_entries));
  return rc ? OX_ENOMEM : 0;
}

/* Appends v as a Prometheus label value (backslash, quote and newline escaped). */
static int label_value(ox_buf_t *b, const char *v) {
  int rc = 0;
  for (; *v && !rc; v++) {
    if (*v == '\\' || *v == '"')
      rc = ox_buf_printf(b, "\\%c", *v);
    else if (*v == '\n')
      rc = ox_buf_puts(b, "\\n");
    else
      rc = ox_buf_append(b, v, 1);
  }
  return rc;
}

int ox_fstream_metrics(ox_fstream_t *s, ox_buf_t *out) {
  char id[48];
  pthread_mutex_lock(&s->mu);
  sid_fmt(s->applied, id, sizeof id);
  pthread_mutex_unlock(&s->mu);
  double lag = lag_seconds(s);
  int rc = ox_buf_printf(
      out,
      "# HELP onnxd_feature_stream_lag_seconds Age of the oldest event of the stream that may "
      "not be applied here yet (0 while waiting at the stream's end).\n"
      "# TYPE onnxd_feature_stream_lag_seconds gauge\n"
      "onnxd_feature_stream_lag_seconds %.3f\n"
      "# HELP onnxd_feature_stream_applied_total Events applied from the stream.\n"
      "# TYPE onnxd_feature_stream_applied_total counter\n"
      "onnxd_feature_stream_applied_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_stream_entries_applied_total Stream entries (requests) applied, "
      "refused ones (an entity over its cap) and skipped ones (not valid) included.\n"
      "# TYPE onnxd_feature_stream_entries_applied_total counter\n"
      "onnxd_feature_stream_entries_applied_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_stream_entries_refused_total Entries refused whole by the "
      "per-entity cap.\n"
      "# TYPE onnxd_feature_stream_entries_refused_total counter\n"
      "onnxd_feature_stream_entries_refused_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_stream_entries_skipped_total Entries that were not valid requests.\n"
      "# TYPE onnxd_feature_stream_entries_skipped_total counter\n"
      "onnxd_feature_stream_entries_skipped_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_stream_apply_errors_total Batches whose commit failed (retried).\n"
      "# TYPE onnxd_feature_stream_apply_errors_total counter\n"
      "onnxd_feature_stream_apply_errors_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_stream_last_applied_ms Time part of the last applied stream ID.\n"
      "# TYPE onnxd_feature_stream_last_applied_ms gauge\n"
      "onnxd_feature_stream_last_applied_ms %" PRId64
      "\n"
      "# HELP onnxd_feature_stream_append_failures_total Requests not appended (503).\n"
      "# TYPE onnxd_feature_stream_append_failures_total counter\n"
      "onnxd_feature_stream_append_failures_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_stream_trims_total Trims of the stream done by this replica, and "
      "the entries they deleted.\n"
      "# TYPE onnxd_feature_stream_trims_total counter\n"
      "onnxd_feature_stream_trims_total %" PRIu64
      "\n"
      "# TYPE onnxd_feature_stream_trimmed_entries_total counter\n"
      "onnxd_feature_stream_trimmed_entries_total %" PRIu64
      "\n"
      "# HELP onnxd_feature_stream_info The stream followed and the last applied ID.\n"
      "# TYPE onnxd_feature_stream_info gauge\n"
      "onnxd_feature_stream_info{key=\"",
      lag < 0 ? 0.0 : lag, (uint64_t)atomic_load(&s->events), (uint64_t)atomic_load(&s->entries),
      (uint64_t)atomic_load(&s->refused_entries), (uint64_t)atomic_load(&s->bad_entries),
      (uint64_t)atomic_load(&s->apply_errors), (int64_t)atomic_load(&s->applied_ms),
      (uint64_t)atomic_load(&s->append_failures), (uint64_t)atomic_load(&s->trims),
      (uint64_t)atomic_load(&s->trimmed));
  rc |= label_value(out, s->key);
  rc |= ox_buf_printf(out, "\",applied_id=\"%s\",state=\"%s\"} 1\n", id,
                      state_names[atomic_load(&s->state)]);
  rc |= ox_buf_puts(out,
                    "# HELP onnxd_feature_stream_apply_delay_seconds Time from an entry's append "
                    "(its ID) to its apply here.\n"
                    "# TYPE onnxd_feature_stream_apply_delay_seconds histogram\n");
  uint64_t cum = 0; /* kept in microseconds, rendered in seconds */
  for (size_t i = 0; i <= DELAY_BUCKETS && !rc; i++) {
    cum += (uint64_t)atomic_load(&s->delay[i]);
    if (i < DELAY_BUCKETS)
      rc |= ox_buf_printf(
          out, "onnxd_feature_stream_apply_delay_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
          (double)delay_bounds[i] / 1e6, cum);
    else
      rc |= ox_buf_printf(
          out, "onnxd_feature_stream_apply_delay_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
  }
  rc |= ox_buf_printf(out,
                      "onnxd_feature_stream_apply_delay_seconds_sum %.6f\n"
                      "onnxd_feature_stream_apply_delay_seconds_count %" PRIu64 "\n",
                      (double)atomic_load(&s->delay_sum_us) / 1e6, cum);
  return rc ? OX_ENOMEM : 0;
}

int ox_fstream_snapshot(ox_fstream_t *s, int fd, char *id, size_t cap) {
  pthread_mutex_lock(&s->apply_mu);
  pthread_mutex_lock(&s->mu);
  sid_fmt(s->applied, id, cap);
  pthread_mutex_unlock(&s->mu);
  int rc = ox_fstore_snapshot(s->fs, fd);
  pthread_mutex_unlock(&s->apply_mu);
  return rc;
}

/* The L2 row holding the applied position for stream key: "~meta:stream:<key>" (value
 * "<ms>-<seq>", written by ox_fstore_apply with the events). Returns its length. */
static size_t pos_key(const char *key, char *out, size_t cap) {
  int n = snprintf(out, cap, "~meta:stream:%s", key);
  return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static int make_redis(const char *addr, int pool, int timeout_ms, ox_l3_redis_t **out) {
  char host[256];
  int port;
  if (ox_l3_redis_split_addr(addr, host, sizeof host, &port)) return OX_EINVALID;
  ox_l3_redis_opts_t ro = {.host = host,
                           .port = port,
                           .pool_size = pool,
                           .connect_timeout_ms = 500,
                           .command_timeout_ms = timeout_ms};
  /* a short cool-down: appends should find Redis again soon after it returns */
  ro.breaker.cooldown_ms = 500;
  return ox_l3_redis_create(&ro, out);
}

int ox_fstream_open(ox_fstore_t *fs, const ox_fstream_opts_t *o, ox_fstream_t **out, char *err,
                    size_t errcap) {
  if (!o->key || !o->key[0] || strlen(o->key) > 200 || !o->redis || !o->redis[0] || !o->decode) {
    snprintf(err, errcap, "--feature-events-stream needs a key (1 to 200 bytes) and --redis");
    return OX_EINVALID;
  }
  ox_fstream_t *s = calloc(1, sizeof *s);
  if (!s) return OX_ENOMEM;
  s->fs = fs;
  s->o = *o;
  if (!s->o.timeout_ms) s->o.timeout_ms = 2000;
  if (!s->o.ready_lag_ms) s->o.ready_lag_ms = 5000;
  if (!s->o.trim_every_ms) s->o.trim_every_ms = 60000;
  s->key = strdup(o->key);
  s->lock_key = malloc(strlen(o->key) + 16);
  s->trimmed_key = malloc(strlen(o->key) + 16);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_mutex_init(&s->apply_mu, NULL);
  int rc = s->key && s->lock_key && s->trimmed_key ? 0 : OX_ENOMEM;
  if (!rc) {
    sprintf(s->lock_key, "%s:trim-lock", o->key);
    sprintf(s->trimmed_key, "%s:trimmed", o->key);
    s->poskey_len = pos_key(o->key, s->poskey, sizeof s->poskey);
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) rc = -errno;
    for (int i = 0; i < 8; i++) sprintf(s->origin + 2 * i, "%02x", rnd[i]);
  }
  if (!rc && (rc = make_redis(o->redis, 1, (int)s->o.timeout_ms, &s->w)) == 0)
    rc = make_redis(o->redis, 1, BLOCK_MS + 2000, &s->r);
  if (rc) {
    snprintf(err, errcap, "cannot set up the event stream on Redis %s: %s", o->redis,
             ox_strerror(rc));
    ox_fstream_close(s);
    return rc;
  }
  sid_t pos;
  if ((rc = load_pos(s, &pos))) {
    snprintf(err, errcap, "cannot read the stream position from the feature store: %s",
             ox_strerror(rc));
    ox_fstream_close(s);
    return rc;
  }
  s->applied = pos;
  atomic_store(&s->applied_ms, (int64_t)pos.ms);
  if (pthread_create(&s->thread, NULL, applier, s)) {
    snprintf(err, errcap, "cannot start the stream applier");
    ox_fstream_close(s);
    return OX_ENOMEM;
  }
  s->started = 1;
  if (pthread_create(&s->athread, NULL, appender, s)) {
    snprintf(err, errcap, "cannot start the stream appender");
    ox_fstream_close(s);
    return OX_ENOMEM;
  }
  s->astarted = 1;
  char p[48];
  sid_fmt(pos, p, sizeof p);
  ox_info("feature stream: following %s on %s from %s%s", s->key, o->redis, p,
          pos.ms || pos.seq ? "" : " (the start)");
  *out = s;
  return 0;
}

void ox_fstream_close(ox_fstream_t *s) {
  if (!s) return;
  atomic_store(&s->stop, 1);
  if (s->started) pthread_join(s->thread, NULL); /* no apply completes requests any more */
  pthread_mutex_lock(&s->mu);
  s->closing = 1; /* the appender answers what is left, then exits */
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  if (s->astarted) pthread_join(s->athread, NULL);
  ox_l3_redis_destroy(s->w);
  ox_l3_redis_destroy(s->r);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->apply_mu);
  free(s->key);
  free(s->lock_key);
  free(s->trimmed_key);
  free(s);
}
