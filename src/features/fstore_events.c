/* fstore_events.c: entities' event lists: velocity reads (Bloom -> L1 -> L2) and ingestion.
 *
 * An event list, as cached in L1 under "~ev:<entity>" and as built from L2, is
 *     since (int64 LE) | before (int64 LE) | events (24 bytes each, ox_feat_event_encode)
 * where the events are ALL the entity's events with ts >= since, in event order (ts, then
 * insertion), and before is the largest ts below since (INT64_MIN: none, or not needed: see
 * fill_from_l2). A request at t is answered from a list when since <= t - 24h + 1: the 24 h
 * window's events are all there, and the last event at or before t is either in the list or
 * is `before`, which enters ox_feat_velocity as one extra event outside every window (it only
 * sets secs_since_last).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/log.h"
#include "features/breaker.h"
#include "features/fstore_priv.h"

#define W24 ((int64_t)OX_FEAT_W_24H)
#define HDR 16
#define EVB OX_FEAT_EVENT_BYTES

static int64_t rd64(const void *p) {
  const unsigned char *s = p;
  uint64_t v = 0;
  for (int b = 7; b >= 0; b--) v = v << 8 | s[b];
  return (int64_t)v;
}

static void wr64(void *p, int64_t v) {
  unsigned char *d = p;
  for (int b = 0; b < 8; b++) d[b] = (unsigned char)((uint64_t)v >> (8 * b));
}

/* The lowest ts inside the 24 h window ending at t: t - 24h + 1, saturated. */
static int64_t window_lo(int64_t t) {
  return t < INT64_MIN + W24 ? INT64_MIN : t - W24 + 1;
}

static int list_valid(const ox_buf_t *b) {
  return b->len >= HDR && (b->len - HDR) % EVB == 0;
}

/* Makes a key "<prefix><entity>" in out (room for 16 + OX_FSTORE_MAX_ENTITY bytes). */
static ox_slice_t make_key(char *out, const char *prefix, ox_slice_t entity) {
  size_t pl = strlen(prefix);
  memcpy(out, prefix, pl);
  memcpy(out + pl, entity.ptr, entity.len);
  return ox_slice(out, pl + entity.len);
}

static int list_velocity(fs_tctx_t *x, const unsigned char *list, size_t len, int64_t t,
                         float out[OX_FEAT_VELOCITY_N]) {
  size_t n = (len - HDR) / EVB;
  if (x->evcap < n + 1) {
    size_t cap = x->evcap ? x->evcap : 64;
    while (cap < n + 1) cap *= 2;
    ox_feat_event_t *e = realloc(x->evs, cap * sizeof *e);
    if (!e) return OX_ENOMEM;
    x->evs = e;
    x->evcap = cap;
  }
  size_t k = 0;
  int64_t before = rd64(list + 8);
  if (before != INT64_MIN) x->evs[k++] = (ox_feat_event_t){.ts_ms = before};
  for (size_t i = 0; i < n; i++) ox_feat_event_decode(list + HDR + i * EVB, EVB, &x->evs[k++]);
  return ox_feat_velocity(x->evs, k, t, -1.0f, out);
}

typedef struct {
  ox_buf_t *b;
  int rc;
  int64_t t;          /* the request time */
  uint64_t ahead;     /* events read after t */
  uint64_t max_ahead; /* stop after this many events after t (0: no limit) */
  int truncated;      /* stopped early: the list lacks later events */
} scan_ctx_t;

static int scan_append(void *arg, const ox_l2_event_t *ev) {
  scan_ctx_t *c = arg;
  if (ev->payload.len != EVB) {
    c->rc = OX_EINTERNAL; /* not an event record of ours */
    return 1;
  }
  if (ev->ts_ms > c->t) { /* read ahead for later requests, within bounds */
    if ((c->max_ahead && c->ahead >= c->max_ahead) || ev->ts_ms - c->t > W24) {
      c->truncated = 1;
      return 1;
    }
    c->ahead++;
  }
  c->rc = ox_buf_append(c->b, ev->payload.ptr, EVB);
  return c->rc;
}

static int scan_last(void *arg, const ox_l2_event_t *ev) {
  *(int64_t *)arg = ev->ts_ms;
  return 0;
}

/* Reads entity's last-ts row with reader r: 1 (found, *last set), 0 (absent) or an error. */
static int read_last(ox_l2_reader_t *r, ox_slice_t entity, int64_t *last) {
  char kb[16 + OX_FSTORE_MAX_ENTITY];
  unsigned char v[8];
  size_t len = 0;
  int rc = ox_l2_get_row_copy(r, make_key(kb, FS_LAST_PREFIX, entity), v, sizeof v, &len);
  if (rc == OX_ENOT_FOUND) return 0;
  if (rc == OX_ETOO_LARGE || (!rc && len != 8)) return OX_EINTERNAL;
  if (rc) return rc;
  *last = rd64(v);
  return 1;
}

/* Builds entity's event list for a request at t from L2, in one snapshot, into b: every event
 * with ts >= t - 24h + 1 (future ones too, so the list serves later requests), and `before`.
 * The events after t are read only up to t + 24h and max_ahead of them (0: no limit): past
 * that *truncated is set, the list is right for t only and must not be cached.
 * before is only needed when no listed event is <= t; it is then the last-ts row when that is
 * older than the window, else (events only after t) found by a scan below the window. When a
 * listed event is <= t, every request the list may serve (t' >= t) has one too, and before
 * stays INT64_MIN. *found: the entity has any event. */
static int fill_from_l2(fs_tctx_t *x, ox_slice_t entity, int64_t t, uint64_t max_ahead, ox_buf_t *b,
                        int *found, int *truncated) {
  int64_t since = window_lo(t), before = INT64_MIN, last = 0;
  b->len = 0;
  if (ox_buf_reserve(b, HDR)) return OX_ENOMEM;
  b->len = HDR;
  int rc = ox_l2_read_begin(x->r);
  if (rc) return rc;
  scan_ctx_t sc = {.b = b, .t = t, .max_ahead = max_ahead};
  int n = ox_l2_scan_events(x->r, entity, since, INT64_MAX, scan_append, &sc);
  if (n >= 0 && sc.rc) n = sc.rc;
  *truncated = sc.truncated;
  int has_last = n >= 0 ? read_last(x->r, entity, &last) : 0;
  if (n < 0 || has_last < 0) {
    ox_l2_read_end(x->r);
    return n < 0 ? n : has_last;
  }
  *found = n > 0 || has_last;
  int listed_le_t = b->len > HDR && rd64(b->data + HDR) <= t;
  if (!listed_le_t && has_last) {
    if (last < since) {
      before = last;
    } else if (since > INT64_MIN) {
      rc = ox_l2_scan_events(x->r, entity, INT64_MIN, since - 1, scan_last, &before);
      if (rc < 0) {
        ox_l2_read_end(x->r);
        return rc;
      }
    }
  }
  ox_l2_read_end(x->r);
  wr64(b->data, since);
  wr64(b->data + 8, before);
  return 0;
}

int ox_fstore_velocity(ox_fstore_t *fs, ox_slice_t entity, int64_t t,
                       float out[OX_FEAT_VELOCITY_N]) {
  if (entity.len == 0 || entity.len > OX_FSTORE_MAX_ENTITY) return OX_EINVALID;
  if (!ox_bloom_check(fs->bloom, entity, 0)) {
    atomic_fetch_add_explicit(&fs->bloom_neg, 1, memory_order_relaxed);
    memset(out, 0, sizeof(float) * OX_FEAT_VELOCITY_N);
    out[7] = -1.0f;
    return 0;
  }
  atomic_fetch_add_explicit(&fs->bloom_pos, 1, memory_order_relaxed);
  fs_tctx_t *x = ox_fstore_ctx(fs);
  if (!x) return OX_EUNAVAILABLE;
  char kb[16 + OX_FSTORE_MAX_ENTITY];
  ox_slice_t key = make_key(kb, FS_EV_PREFIX, entity);
  int64_t t0 = ox_mono_ns();
  int rc = ox_fstore_l1_get(fs, key, &x->a);
  if (rc == 0 && list_valid(&x->a) && rd64(x->a.data) <= window_lo(t)) {
    ox_fstore_record(fs, OX_TIER_L1, FS_HIT, t0);
    return list_velocity(x, (const unsigned char *)x->a.data, x->a.len, t, out);
  }
  ox_fstore_record(fs, OX_TIER_L1, FS_MISS, t0);
  fs_stripe_t *st = ox_fstore_stripe(fs, key);
  uint64_t gen = atomic_load(&st->gen);
  t0 = ox_mono_ns();
  int found = 0, truncated = 0;
  rc = fill_from_l2(x, entity, t, fs->max_events_24h, &x->a, &found, &truncated);
  ox_fstore_record(fs, OX_TIER_L2, rc ? FS_ERROR : found ? FS_HIT : FS_MISS, t0);
  if (rc) return rc;
  rc = list_velocity(x, (const unsigned char *)x->a.data, x->a.len, t, out);
  if (truncated) return rc; /* right for t only: not for L1 */
  pthread_mutex_lock(&st->mu);
  if (atomic_load(&st->gen) == gen &&
      ox_l1_put(fs->l1, key, x->a.data, x->a.len, fs->ttl_ms, ox_mono_ms()))
    ox_l1_del(fs->l1, key);
  pthread_mutex_unlock(&st->mu);
  return rc;
}

/* ---- ingestion -------------------------------------------------------------------------- */

_Static_assert(OX_FSTORE_MAX_EVENT_ID == OX_L2_MAX_ID, "event ids are L2 idempotency keys");

#define REDIS_CHUNK 8192     /* events_to_redis: events per pipelined round trip */
#define REDIS_APPEND_MS 1000 /* bound on one round trip's appends */

typedef struct {
  ox_slice_t name;
  uint32_t head, tail; /* the entity's events in this chunk: a list through pair_t.next */
  int64_t max_ts, first_ts, old_last;
  int has_last;
  unsigned char *saved; /* its L1 list before the write (malloc), or NULL */
  size_t saved_len;
} ent_t;

typedef struct {
  uint32_t ev, next; /* next: index + 1 of the entity's next pair, 0 at the end */
} pair_t;

/* Merges the entity's new encoded events (nb events at b, in event order) into the old list,
 * then drops the events that fell out of the newest event's 24 h window into `before`. */
static int merge_list(ox_buf_t *out, const unsigned char *old, size_t oldlen,
                      const unsigned char *b, size_t nb) {
  int64_t since = rd64(old), before = rd64(old + 8);
  const unsigned char *a = old + HDR;
  size_t na = (oldlen - HDR) / EVB, i = 0, j = 0;
  out->len = 0;
  if (ox_buf_reserve(out, oldlen + nb * EVB)) return OX_ENOMEM;
  out->len = HDR;
  while (i < na || j < nb) {
    if (j < nb && rd64(b + j * EVB) < since) { /* before the list's range: only `before` */
      int64_t ts = rd64(b + j * EVB);
      if (ts > before) before = ts;
      j++;
      continue;
    }
    /* ties go to the old list: its events were inserted first */
    const unsigned char *e = (j == nb || (i < na && rd64(a + i * EVB) <= rd64(b + j * EVB)))
                                 ? a + EVB * i++
                                 : b + EVB * j++;
    memcpy(out->data + out->len, e, EVB);
    out->len += EVB;
  }
  size_t n = (out->len - HDR) / EVB;
  if (n) {
    int64_t lo = window_lo(rd64(out->data + HDR + (n - 1) * EVB));
    if (lo > since) {
      size_t k = 0;
      while (k < n && rd64(out->data + HDR + k * EVB) < lo) k++;
      if (k) {
        int64_t ts = rd64(out->data + HDR + (k - 1) * EVB);
        if (ts > before) before = ts;
        memmove(out->data + HDR, out->data + HDR + k * EVB, (n - k) * EVB);
        out->len -= k * EVB;
      }
      since = lo;
    }
  }
  wr64(out->data, since);
  wr64(out->data + 8, before);
  return 0;
}

/* The chunk's events of entity e, encoded, in event order (a stable sort by ts of the chunk's
 * order, which is the order L2 stores them in), into b. */
static int entity_events(const ox_fstore_event_t *evs, const pair_t *pairs, const ent_t *e,
                         ox_buf_t *b) {
  b->len = 0;
  for (uint32_t p = e->head; p; p = pairs[p - 1].next) {
    if (ox_buf_reserve(b, EVB)) return OX_ENOMEM;
    unsigned char *dst = (unsigned char *)b->data + b->len;
    ox_feat_event_encode(&evs[pairs[p - 1].ev].ev, dst);
    b->len += EVB;
    /* insertion step: move it back past later-ts events */
    while (dst > (unsigned char *)b->data && rd64(dst - EVB) > rd64(dst)) {
      unsigned char tmp[EVB];
      memcpy(tmp, dst - EVB, EVB);
      memcpy(dst - EVB, dst, EVB);
      memcpy(dst, tmp, EVB);
      dst -= EVB;
    }
  }
  return 0;
}

/* events_to_redis: appends the request's events (committed to L2) to the Redis lists
 * "~ev:<entity>", one RPUSH per (event, entity), pipelined in one round trip per REDIS_CHUNK
 * events (each bounded by REDIS_APPEND_MS). The commands of a round are grouped by entity, each
 * entity's events in request order (as posted, not sorted by ts). The keys and records are
 * built in x->c; keys and values point into it. Returns 0 or the first error; *failed gets the
 * number of events of the rounds that failed. */
static int append_redis(ox_fstore_t *fs, fs_tctx_t *x, const ox_fstore_event_t *evs, size_t n,
                        const ent_t *ents, size_t nents, const pair_t *pairs, size_t npairs,
                        size_t *failed) {
  *failed = 0;
  if (npairs == 0) return 0;
  size_t pl = strlen(FS_REDIS_EV_PREFIX), bytes = n * EVB;
  for (size_t k = 0; k < nents; k++) bytes += pl + ents[k].name.len;
  size_t round = (size_t)REDIS_CHUNK * OX_FSTORE_MAX_ENTITIES; /* at most, pairs of a round */
  if (round > npairs) round = npairs;
  ox_slice_t *kv = malloc(2 * round * sizeof *kv); /* keys, then values */
  ox_slice_t *keys = malloc(nents * sizeof *keys);
  uint32_t *cur = malloc(nents * sizeof *cur); /* each entity's next pair */
  x->c.len = 0;
  if (!kv || !keys || !cur || ox_buf_reserve(&x->c, bytes)) { /* reserved whole: the slices
                                                                  stay valid */
    free(kv);
    free(keys);
    free(cur);
    return OX_ENOMEM;
  }
  unsigned char *recs = (unsigned char *)x->c.data;
  for (size_t i = 0; i < n; i++) ox_feat_event_encode(&evs[i].ev, recs + i * EVB);
  char *kp = x->c.data + n * EVB;
  for (size_t k = 0; k < nents; k++) {
    keys[k] = make_key(kp, FS_REDIS_EV_PREFIX, ents[k].name);
    kp += keys[k].len;
    cur[k] = ents[k].head;
  }
  int first = 0;
  for (size_t lo = 0; lo < n; lo += REDIS_CHUNK) {
    size_t hi = n - lo < REDIS_CHUNK ? n : lo + REDIS_CHUNK, m = 0;
    for (size_t k = 0; k < nents; k++) /* pairs are in event order: take those below hi */
      for (; cur[k] && pairs[cur[k] - 1].ev < hi; cur[k] = pairs[cur[k] - 1].next) {
        kv[m] = keys[k];
        kv[round + m] = ox_slice((const char *)recs + pairs[cur[k] - 1].ev * EVB, EVB);
        m++;
      }
    if (!m) continue;
    int rc = ox_l3_redis_rpush_many(fs->redis, kv, kv + round, m,
                                    ox_mono_ns() + REDIS_APPEND_MS * INT64_C(1000000));
    if (rc) {
      *failed += hi - lo;
      if (!first) first = rc;
    }
  }
  free(kv);
  free(keys);
  free(cur);
  return first;
}

/* Stores a request's events in L2 (one transaction: all or nothing) and L1 (returns 0 or the L2
 * error) and then, with events_to_redis, appends them to Redis (*l3_err: 0 or the Redis error).
 * Events with an id record it, remembered until max(now_ms, their ts) (see fstore.h). */
static int ingest_chunk(ox_fstore_t *fs, fs_tctx_t *x, const ox_fstore_event_t *evs, size_t n,
                        int64_t now_ms, const int64_t *nows, ox_slice_t xkey, ox_slice_t xval,
                        int *l3_err) {
  size_t npairs = 0;
  for (size_t i = 0; i < n; i++) npairs += evs[i].num_entities;
  size_t cap = 16;
  while (cap < 2 * npairs) cap *= 2;
  uint32_t *slots = calloc(cap, sizeof *slots); /* index + 1 into ents, 0 = empty */
  ent_t *ents = calloc(npairs + 1, sizeof *ents);
  pair_t *pairs = calloc(npairs + 1, sizeof *pairs);
  if (!slots || !ents || !pairs) {
    free(slots);
    free(ents);
    free(pairs);
    return OX_ENOMEM;
  }
  size_t nents = 0, np = 0;
  const ox_siphash_key_t *hkey = ox_siphash_process_key(); /* clients choose the names */
  for (size_t i = 0; i < n; i++) {
    for (size_t k = 0; k < evs[i].num_entities; k++) {
      ox_slice_t name = evs[i].entities[k];
      size_t h = (size_t)ox_siphash(name.ptr, name.len, hkey) & (cap - 1);
      while (slots[h] && !(ents[slots[h] - 1].name.len == name.len &&
                           !memcmp(ents[slots[h] - 1].name.ptr, name.ptr, name.len)))
        h = (h + 1) & (cap - 1);
      if (!slots[h]) {
        ents[nents] = (ent_t){.name = name, .max_ts = INT64_MIN, .first_ts = evs[i].ev.ts_ms};
        slots[h] = (uint32_t)++nents;
      }
      ent_t *e = &ents[slots[h] - 1];
      pairs[np] = (pair_t){.ev = (uint32_t)i};
      if (e->tail)
        pairs[e->tail - 1].next = (uint32_t)(np + 1);
      else
        e->head = (uint32_t)(np + 1);
      e->tail = (uint32_t)(np + 1);
      np++;
      if (evs[i].ev.ts_ms > e->max_ts) e->max_ts = evs[i].ev.ts_ms;
    }
  }
  free(slots);

  /* 1. what is stored: each entity's last ts (and whether it is new) */
  int rc = 0;
  for (size_t k = 0; k < nents && !rc; k++) {
    int r = read_last(x->r, ents[k].name, &ents[k].old_last);
    if (r < 0)
      rc = r;
    else
      ents[k].has_last = r;
  }
  /* 2. take the L1 lists out, so no reader serves or refills them from a half-written state */
  char kb[16 + OX_FSTORE_MAX_ENTITY];
  for (size_t k = 0; k < nents && !rc; k++) {
    ox_slice_t key = make_key(kb, FS_EV_PREFIX, ents[k].name);
    fs_stripe_t *st = ox_fstore_stripe(fs, key);
    pthread_mutex_lock(&st->mu);
    atomic_fetch_add(&st->gen, 1);
    if (ox_fstore_l1_get(fs, key, &x->a) == 0 && list_valid(&x->a)) {
      ents[k].saved = malloc(x->a.len);
      if (ents[k].saved) {
        memcpy(ents[k].saved, x->a.data, x->a.len);
        ents[k].saved_len = x->a.len;
      }
    }
    ox_l1_del(fs->l1, key);
    pthread_mutex_unlock(&st->mu);
  }
  /* 3. write and commit, in one transaction: events, ids, last-ts rows, the index of new
   * entities */
  ox_l2_group_t *g = NULL;
  if (!rc) rc = ox_l2_group_create(&g);
  for (size_t i = 0; i < n && !rc; i++) {
    unsigned char payload[EVB];
    ox_feat_event_encode(&evs[i].ev, payload);
    for (size_t k = 0; k < evs[i].num_entities && !rc; k++)
      rc = ox_l2_group_append_event(g, evs[i].entities[k], evs[i].ev.ts_ms, payload, EVB);
    int64_t t = nows ? nows[i] : now_ms;
    if (!rc && evs[i].id.len)
      rc = ox_l2_group_put_id(g, evs[i].id, evs[i].ev.ts_ms > t ? evs[i].ev.ts_ms : t);
  }
  if (!rc && xkey.len) rc = ox_l2_group_put_row(g, xkey, xval.ptr, xval.len);
  for (size_t k = 0; k < nents && !rc; k++) {
    ent_t *e = &ents[k];
    if (!e->has_last || e->max_ts > e->old_last) {
      unsigned char v[8];
      wr64(v, e->max_ts);
      rc = ox_l2_group_put_row(g, make_key(kb, FS_LAST_PREFIX, e->name), v, 8);
    }
    if (!rc && !e->has_last)
      rc = ox_l2_group_append_event(g, OX_SLICE_LIT(FS_INDEX_ENTITY), e->first_ts, e->name.ptr,
                                    e->name.len);
  }
  if (!rc) rc = ox_l2_commit(fs->l2, g);
  ox_l2_group_destroy(g);
  /* 4. new entities into the Bloom filter; the L1 lists back, with the new events */
  for (size_t k = 0; k < nents; k++) {
    ent_t *e = &ents[k];
    if (!rc && !e->has_last) ox_bloom_add(fs->bloom, e->name, 0);
    ox_slice_t key = make_key(kb, FS_EV_PREFIX, e->name);
    fs_stripe_t *st = ox_fstore_stripe(fs, key);
    int put = 0;
    if (!rc && e->saved && entity_events(evs, pairs, e, &x->b) == 0 &&
        merge_list(&x->a, e->saved, e->saved_len, (const unsigned char *)x->b.data,
                   x->b.len / EVB) == 0)
      put = 1;
    pthread_mutex_lock(&st->mu);
    atomic_fetch_add(&st->gen, 1);
    if (!put || ox_l1_put(fs->l1, key, x->a.data, x->a.len, fs->ttl_ms, ox_mono_ms()))
      ox_l1_del(fs->l1, key);
    pthread_mutex_unlock(&st->mu);
    free(e->saved);
  }
  /* 5. with events_to_redis, the committed events to Redis (after L1, so readers are not kept
   * on L2 while Redis answers) */
  *l3_err = 0;
  if (!rc && fs->events_to_redis) {
    size_t failed = 0;
    *l3_err = append_redis(fs, x, evs, n, ents, nents, pairs, npairs, &failed);
    if (failed) atomic_fetch_add_explicit(&fs->events_l3_failed, failed, memory_order_relaxed);
  }
  free(ents);
  free(pairs);
  if (!rc) atomic_fetch_add_explicit(&fs->events_ingested, n, memory_order_relaxed);
  return rc;
}

/* ---- the per-entity cap (fstore.h) ----------------------------------------------------- */

typedef struct {
  ox_slice_t name;
  int64_t ts;
} cap_pair_t;

typedef struct {
  int64_t ts;
  int fresh; /* one of the request's events */
} cap_ev_t;

static int cap_pair_cmp(const void *pa, const void *pb) {
  const cap_pair_t *a = pa, *b = pb;
  size_t l = a->name.len < b->name.len ? a->name.len : b->name.len;
  int c = memcmp(a->name.ptr, b->name.ptr, l);
  if (c) return c;
  if (a->name.len != b->name.len) return a->name.len < b->name.len ? -1 : 1;
  return a->ts < b->ts ? -1 : a->ts > b->ts;
}

static int scan_ts(void *arg, const ox_l2_event_t *ev) {
  return ox_buf_append(arg, &ev->ts_ms, sizeof ev->ts_ms);
}

/* For b <= a: b is in the 24 h window ending at a (a - b < 24h, without overflow). */
static int in_24h(int64_t a, int64_t b) {
  int64_t d;
  return !__builtin_sub_overflow(a, b, &d) && d < W24;
}

static int64_t sat_add(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? (b > 0 ? INT64_MAX : INT64_MIN) : r;
}

/* One entity: its new event times nt[0..m) (sorted). Reads the stored times within 24 h of
 * them and checks every window ending at an event, that holds a new one. 1: over the cap. */
static int cap_entity(ox_fstore_t *fs, fs_tctx_t *x, ox_slice_t name, const cap_pair_t *nt,
                      size_t m) {
  x->c.len = 0;
  int rc = 0;
  for (size_t i = 0; i < m && !rc;) { /* merged ranges [ts - 24h + 1, ts + 24h - 1] */
    int64_t lo = sat_add(nt[i].ts, -W24 + 1), hi = sat_add(nt[i].ts, W24 - 1);
    for (i++; i < m && sat_add(nt[i].ts, -W24 + 1) <= hi; i++) hi = sat_add(nt[i].ts, W24 - 1);
    int k = ox_l2_scan_events(x->r, name, lo, hi, scan_ts, &x->c);
    if (k < 0) rc = k;
  }
  if (rc) return rc;
  size_t ne = x->c.len / sizeof(int64_t), total = ne + m;
  cap_ev_t *all = malloc(total * sizeof *all);
  if (!all) return OX_ENOMEM;
  const char *old = x->c.data;
  for (size_t i = 0, j = 0, k = 0; k < total; k++) { /* merge: stored times are sorted too */
    int64_t ots = 0;
    if (i < ne) memcpy(&ots, old + i * sizeof ots, sizeof ots);
    if (j == m || (i < ne && ots <= nt[j].ts)) {
      all[k] = (cap_ev_t){ots, 0};
      i++;
    } else {
      all[k] = (cap_ev_t){nt[j++].ts, 1};
    }
  }
  size_t lo = 0, fresh = 0;
  int over = 0;
  for (size_t k = 0; k < total && !over; k++) { /* window (all[k].ts - 24h, all[k].ts] */
    fresh += all[k].fresh;
    while (!in_24h(all[k].ts, all[lo].ts)) fresh -= all[lo++].fresh;
    over = fresh && k - lo + 1 > fs->max_events_24h;
  }
  free(all);
  return over;
}

/* Checks the cap for every entity of evs (under ingest_mu). 0, OX_EQUOTA (x->quota_entity
 * names the entity), or an error. */
static int check_cap(ox_fstore_t *fs, fs_tctx_t *x, const ox_fstore_event_t *evs, size_t n) {
  if (!fs->max_events_24h) return 0;
  size_t np = 0;
  for (size_t i = 0; i < n; i++) np += evs[i].num_entities;
  cap_pair_t *p = malloc((np ? np : 1) * sizeof *p);
  if (!p) return OX_ENOMEM;
  np = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < evs[i].num_entities; k++)
      p[np++] = (cap_pair_t){evs[i].entities[k], evs[i].ev.ts_ms};
  qsort(p, np, sizeof *p, cap_pair_cmp); /* by entity, then ts: no hash of client names */
  int rc = ox_l2_read_begin(x->r);
  for (size_t i = 0, j; i < np && !rc; i = j) {
    for (j = i + 1; j < np && p[j].name.len == p[i].name.len &&
                    !memcmp(p[j].name.ptr, p[i].name.ptr, p[i].name.len);
         j++) {
    }
    rc = cap_entity(fs, x, p[i].name, p + i, j - i);
    if (rc == 1) {
      snprintf(x->quota_entity, sizeof x->quota_entity, "%.*s", (int)p[i].name.len, p[i].name.ptr);
      rc = OX_EQUOTA;
    }
  }
  ox_l2_read_end(x->r);
  free(p);
  return rc;
}

uint64_t ox_fstore_event_cap(const ox_fstore_t *fs) {
  return fs->max_events_24h;
}

uint64_t ox_fstore_quota_entity(ox_fstore_t *fs, char *out, size_t cap) {
  fs_tctx_t *x = ox_fstore_ctx(fs);
  snprintf(out, cap, "%s", x ? x->quota_entity : "");
  return fs->max_events_24h;
}

/* ---- ingestion ------------------------------------------------------------------------ */

typedef struct {
  const ox_fstore_event_t *evs;
} id_sort_t;

/* Orders event indexes by id bytes, then by index (so the first of equal ids comes first). */
static int id_cmp(const void *a, const void *b, void *arg) {
  const ox_fstore_event_t *evs = ((const id_sort_t *)arg)->evs;
  uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
  ox_slice_t x = evs[i].id, y = evs[j].id;
  int c = memcmp(x.ptr, y.ptr, x.len < y.len ? x.len : y.len);
  if (c) return c;
  if (x.len != y.len) return x.len < y.len ? -1 : 1;
  return i < j ? -1 : i > j;
}

/* Marks in drop[] the events whose id an earlier event of the call carries, or that L2 has
 * already stored; returns how many (>= 0) or an error. Caller holds ingest_mu, so no other
 * ingestion stores ids in between. */
static long find_duplicates(fs_tctx_t *x, const ox_fstore_event_t *evs, size_t n,
                            unsigned char *drop) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++) m += evs[i].id.len > 0;
  if (!m) return 0;
  uint32_t *idx = malloc(m * sizeof *idx);
  if (!idx) return OX_ENOMEM;
  m = 0;
  for (size_t i = 0; i < n; i++)
    if (evs[i].id.len) idx[m++] = (uint32_t)i;
  id_sort_t arg = {evs};
  qsort_r(idx, m, sizeof *idx, id_cmp, &arg);
  long dups = 0;
  int brc = ox_l2_read_begin(x->r), rc = brc; /* one snapshot for every lookup */
  for (size_t j = 0; j < m && !rc; j++) {
    ox_slice_t id = evs[idx[j]].id, prev = j ? evs[idx[j - 1]].id : id;
    if (j > 0 && prev.len == id.len && !memcmp(prev.ptr, id.ptr, id.len)) {
      drop[idx[j]] = 1;
      dups++;
      continue;
    }
    int r = ox_l2_has_id(x->r, id);
    if (r < 0) rc = r;
    if (r > 0) {
      drop[idx[j]] = 1;
      dups++;
    }
  }
  if (!brc) ox_l2_read_end(x->r);
  free(idx);
  return rc ? rc : dups;
}

int ox_fstore_events_valid(const ox_fstore_event_t *evs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (evs[i].num_entities > OX_FSTORE_MAX_ENTITIES || evs[i].id.len > OX_FSTORE_MAX_EVENT_ID)
      return 0;
    for (size_t k = 0; k < evs[i].num_entities; k++) {
      ox_slice_t e = evs[i].entities[k];
      if (!e.len || e.len > OX_FSTORE_MAX_ENTITY || e.ptr[0] == '~') return 0;
    }
  }
  return 1;
}

int ox_fstore_ingest(ox_fstore_t *fs, const ox_fstore_event_t *evs, size_t n, int *l3_err,
                     size_t *duplicates) {
  int l3_dummy;
  size_t dup_dummy;
  if (!l3_err) l3_err = &l3_dummy;
  if (!duplicates) duplicates = &dup_dummy;
  *l3_err = 0;
  *duplicates = 0;
  if (n > UINT32_MAX / 2) return OX_ETOO_LARGE;
  if (!ox_fstore_events_valid(evs, n)) return OX_EINVALID;
  fs_tctx_t *x = ox_fstore_ctx(fs);
  if (!x) return OX_EUNAVAILABLE;
  unsigned char *drop = calloc(n ? n : 1, 1);
  if (!drop) return OX_ENOMEM;
  int64_t now_ms = ox_wall_ms();
  /* One request, one transaction. The Redis appends happen under the ingestion lock too, so
   * concurrent requests reach each Redis list in the order they were committed to L2. */
  pthread_mutex_lock(&fs->ingest_mu);
  long dups = find_duplicates(x, evs, n, drop);
  int rc = dups < 0 ? (int)dups : 0;
  const ox_fstore_event_t *use = evs;
  ox_fstore_event_t *kept = NULL;
  size_t nk = n;
  if (dups > 0) {
    nk = n - (size_t)dups;
    kept = malloc((nk ? nk : 1) * sizeof *kept);
    if (!kept) rc = OX_ENOMEM;
    for (size_t i = 0, k = 0; kept && i < n; i++)
      if (!drop[i]) kept[k++] = evs[i];
    use = kept;
  }
  x->quota_entity[0] = 0;
  /* nothing is stored when an entity would exceed its cap (duplicates do not count) */
  if (!rc && nk) rc = check_cap(fs, x, use, nk);
  if (!rc && nk)
    rc = ingest_chunk(fs, x, use, nk, now_ms, NULL, ox_slice(NULL, 0), ox_slice(NULL, 0), l3_err);
  pthread_mutex_unlock(&fs->ingest_mu);
  free(kept);
  free(drop);
  if (!rc) *duplicates = (size_t)dups;
  return rc;
}

/* ---- applying a replicated log --------------------------------------------------------- */

/* Applies entries[lo, hi) in one transaction with the position row (key, vals[hi - 1]), under
 * ingest_mu. Ids are checked and stored as one call would (an earlier entry's id makes a later
 * event a duplicate). OX_EQUOTA: the cap check failed for the range (nothing stored). */
static int apply_range(ox_fstore_t *fs, fs_tctx_t *x, ox_fstore_entry_t *entries, size_t lo,
                       size_t hi, ox_slice_t key, const ox_slice_t *vals) {
  size_t total = 0;
  for (size_t i = lo; i < hi; i++) total += entries[i].n;
  if (total > UINT32_MAX / 2) return OX_ETOO_LARGE;
  ox_fstore_event_t *all = malloc((total ? total : 1) * sizeof *all);
  int64_t *nows = malloc((total ? total : 1) * sizeof *nows);
  uint32_t *owner = malloc((total ? total : 1) * sizeof *owner);
  unsigned char *drop = calloc(total ? total : 1, 1);
  int rc = all && nows && owner && drop ? 0 : OX_ENOMEM;
  size_t k = 0;
  for (size_t i = lo; i < hi && !rc; i++)
    for (size_t j = 0; j < entries[i].n; j++, k++) {
      all[k] = entries[i].evs[j];
      nows[k] = entries[i].now_ms;
      owner[k] = (uint32_t)i;
    }
  long dups = rc ? 0 : find_duplicates(x, all, total, drop);
  if (dups < 0) rc = (int)dups;
  size_t nk = 0;
  for (size_t i = 0; i < total && !rc; i++) /* keep the others, in order, in place */
    if (!drop[i]) {
      all[nk] = all[i];
      nows[nk++] = nows[i];
    }
  x->quota_entity[0] = 0;
  if (!rc && nk) rc = check_cap(fs, x, all, nk);
  int l3 = 0;
  if (!rc) rc = ingest_chunk(fs, x, all, nk, 0, nows, key, vals[hi - 1], &l3);
  if (!rc) {
    for (size_t i = lo; i < hi; i++) {
      entries[i].rc = 0;
      entries[i].accepted = entries[i].n;
      entries[i].duplicates = 0;
    }
    for (size_t i = 0; i < total; i++)
      if (drop[i]) {
        entries[owner[i]].accepted--;
        entries[owner[i]].duplicates++;
      }
  }
  free(all);
  free(nows);
  free(owner);
  free(drop);
  return rc;
}

int ox_fstore_apply(ox_fstore_t *fs, ox_fstore_entry_t *entries, size_t n, ox_slice_t key,
                    const ox_slice_t *vals) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!ox_fstore_events_valid(entries[i].evs, entries[i].n)) return OX_EINVALID;
  fs_tctx_t *x = ox_fstore_ctx(fs);
  if (!x) return OX_EUNAVAILABLE;
  pthread_mutex_lock(&fs->ingest_mu);
  int rc = apply_range(fs, x, entries, 0, n, key, vals);
  /* Some entry takes an entity over its cap: apply them one at a time, as separate requests
   * would have been, so that only those entries are refused (the same ones on every replica:
   * the outcome depends only on the store and the log). */
  for (size_t i = 0; rc == OX_EQUOTA && i < n; i++) {
    int r = apply_range(fs, x, entries, i, i + 1, key, vals);
    if (r == OX_EQUOTA) {
      entries[i].rc = OX_EQUOTA;
      entries[i].accepted = entries[i].duplicates = 0;
      snprintf(entries[i].quota_entity, sizeof entries[i].quota_entity, "%s", x->quota_entity);
      /* nothing of it is stored, but the position moves past it */
      r = ingest_chunk(fs, x, NULL, 0, 0, NULL, key, vals[i], &(int){0});
    }
    if (r) {
      rc = r; /* entries before i are committed; the caller retries from i */
      break;
    }
    if (i == n - 1) rc = 0;
  }
  pthread_mutex_unlock(&fs->ingest_mu);
  return rc;
}

int ox_fstore_meta_get(ox_fstore_t *fs, ox_slice_t key, char *out, size_t cap, size_t *len) {
  fs_tctx_t *x = ox_fstore_ctx(fs);
  if (!x) return OX_EUNAVAILABLE;
  return ox_l2_get_row_copy(x->r, key, out, cap, len);
}

int ox_fstore_snapshot(ox_fstore_t *fs, int fd) {
  return ox_l2_copy_fd(fs->l2, fd);
}

static int index_add(void *arg, const ox_l2_event_t *ev) {
  void **a = arg;
  ox_bloom_add(a[0], ev->payload, 0);
  (*(uint64_t *)a[1])++;
  return 0;
}

int ox_fstore_bloom_rebuild(ox_fstore_t *fs, uint64_t *entities) {
  ox_l2_reader_t *r = NULL;
  int rc = ox_l2_reader_open(fs->l2, &r);
  if (rc) return rc;
  *entities = 0;
  void *arg[2] = {fs->bloom, entities};
  rc = ox_l2_scan_events(r, OX_SLICE_LIT(FS_INDEX_ENTITY), INT64_MIN, INT64_MAX, index_add, arg);
  ox_l2_reader_close(r);
  return rc < 0 ? rc : 0;
}
