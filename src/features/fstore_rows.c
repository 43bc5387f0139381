/* fstore_rows.c: feature rows: reads through the tiers (synchronous, and the local part of an
 * asynchronous read whose L3 part the fetcher thread answers), writes, and the fetcher.
 * See fstore.h. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "features/breaker.h"
#include "features/fstore_priv.h"

#define FETCH_MAX_WANTS 256 /* rows one fetcher round asks L3 for (one MGET per backend) */

/* L1 row values: one byte (1: the row follows, 0: known absent everywhere), then the row. */
static void l1_put_row(ox_fstore_t *fs, ox_slice_t key, const void *val, size_t len, int present,
                       ox_buf_t *tmp) {
  tmp->len = 0;
  unsigned char flag = (unsigned char)present;
  if (ox_buf_append(tmp, &flag, 1) || (len && ox_buf_append(tmp, val, len))) return;
  if (ox_l1_put(fs->l1, key, tmp->data, tmp->len, fs->ttl_ms, ox_mono_ms()))
    ox_l1_del(fs->l1, key); /* too large for L1: at least nothing stale stays */
}

/* The L2 key of key's L3 copy in kb (OX_L2_MAX_KEY + 1 bytes); empty when it would not fit. */
static ox_slice_t l3copy_key(char *kb, ox_slice_t key) {
  size_t pl = sizeof FS_L3COPY_PREFIX - 1;
  if (pl + key.len > OX_L2_MAX_KEY) return ox_slice(kb, 0);
  memcpy(kb, FS_L3COPY_PREFIX, pl);
  memcpy(kb + pl, key.ptr, key.len);
  return ox_slice(kb, pl + key.len);
}

/* What a promotion does to the key's L3 copy in L2. */
typedef enum { COPY_KEEP, COPY_PUT, COPY_DEL } copy_op_t;

/* Puts what a reader found in a lower tier into the tiers above (and updates the L3 copy in L2),
 * unless a writer touched the key since the reader noted gen. */
static void promote_row(ox_fstore_t *fs, fs_tctx_t *x, ox_slice_t key, uint64_t gen,
                        const void *val, size_t len, int present, copy_op_t copy) {
  char kb[OX_L2_MAX_KEY + 1];
  ox_slice_t ck = copy != COPY_KEEP ? l3copy_key(kb, key) : ox_slice(kb, 0);
  if (copy == COPY_PUT && ck.len) {
    unsigned char hdr[8];
    int64_t now = ox_wall_ms();
    for (int i = 0; i < 8; i++) hdr[i] = (unsigned char)((uint64_t)now >> (8 * i));
    x->c.len = 0;
    if (ox_buf_append(&x->c, hdr, 8) || (len && ox_buf_append(&x->c, val, len))) ck.len = 0;
  }
  fs_stripe_t *st = ox_fstore_stripe(fs, key);
  pthread_mutex_lock(&st->mu);
  if (atomic_load(&st->gen) == gen) {
    /* a full L2 queue drops the copy: it is only a cache */
    if (copy == COPY_PUT && ck.len) ox_l2_put_row(fs->l2, ck, x->c.data, x->c.len);
    if (copy == COPY_DEL && ck.len) ox_l2_del_row(fs->l2, ck);
    l1_put_row(fs, key, val, len, present, &x->b);
  }
  pthread_mutex_unlock(&st->mu);
}

typedef struct {
  ox_buf_t *out;
  int rc;
} row_copy_t;

static void row_copy(void *arg, ox_slice_t val) {
  row_copy_t *c = arg;
  c->rc = ox_buf_append(c->out, val.ptr, val.len);
}

static fs_result_t l3_result(int rc) {
  if (rc == 0) return FS_HIT;
  if (rc == OX_ENOT_FOUND) return FS_MISS;
  if (rc == OX_ETIMEOUT) return FS_TIMEOUT;
  return FS_ERROR;
}

/* ---- reads ------------------------------------------------------------------------------ */

typedef struct {
  ox_buf_t *out;
  int rc; /* -1: no usable entry; else the answer: 0 (row appended), OX_ENOT_FOUND, OX_ENOMEM */
} l1_row_t;

/* An L1 row value (see l1_put_row) appended to the caller's buffer in place. */
static void l1_row(void *arg, const void *val, size_t len) {
  l1_row_t *r = arg;
  const unsigned char *v = val;
  if (len < 1) return;
  r->rc = v[0] == 0 ? OX_ENOT_FOUND : ox_buf_append(r->out, v + 1, len - 1);
}

int ox_fstore_row_local(ox_fstore_t *fs, ox_slice_t key, ox_buf_t *out, ox_tier_t *tier,
                        ox_fstore_want_t *want) {
  fs_tctx_t *x = ox_fstore_ctx(fs);
  if (!x) return OX_EUNAVAILABLE;
  *tier = OX_TIER_NONE;
  int64_t t0 = ox_mono_ns();
  l1_row_t lr = {out, -1};
  int rc = ox_l1_view(fs->l1, key, ox_mono_ms(), l1_row, &lr);
  if (rc == 0 && lr.rc != -1) {
    ox_fstore_record(fs, OX_TIER_L1, FS_HIT, t0);
    *tier = OX_TIER_L1;
    return lr.rc;
  }
  ox_fstore_record(fs, OX_TIER_L1, FS_MISS, t0);
  uint64_t gen = atomic_load(&ox_fstore_stripe(fs, key)->gen);

  t0 = ox_mono_ns();
  size_t start = out->len;
  row_copy_t rcp = {out, 0};
  int l2rc = ox_l2_get_row(x->r, key, row_copy, &rcp);
  if (l2rc == 0 && rcp.rc) return rcp.rc;
  /* L2 is one lookup in the metrics: its own rows, then (below) its copies of L3 rows */
  int copies = l2rc == OX_ENOT_FOUND && (fs->redis || fs->pg) && fs->l3_cache_ms > 0;
  if (!copies)
    ox_fstore_record(fs, OX_TIER_L2,
                     l2rc == 0               ? FS_HIT
                     : l2rc == OX_ENOT_FOUND ? FS_MISS
                                             : FS_ERROR,
                     t0);
  if (l2rc == 0) {
    *tier = OX_TIER_L2;
    promote_row(fs, x, key, gen, out->data + start, out->len - start, 1, COPY_KEEP);
    return 0;
  }
  if (!fs->redis && !fs->pg) {
    if (l2rc == OX_ENOT_FOUND) promote_row(fs, x, key, gen, NULL, 0, 0, COPY_KEEP);
    return l2rc;
  }

  /* The L3 copy in L2: fresh, it answers; stale, it is the fallback if L3 fails. */
  memset(want, 0, sizeof *want);
  if (copies) {
    char kb[OX_L2_MAX_KEY + 1];
    ox_slice_t ck = l3copy_key(kb, key);
    row_copy_t cc = {&want->stale_, 0};
    int crc = ck.len ? ox_l2_get_row(x->r, ck, row_copy, &cc) : OX_ENOT_FOUND;
    if (crc == 0 && cc.rc) {
      ox_buf_free(&want->stale_);
      return cc.rc;
    }
    int have = crc == 0 && want->stale_.len >= 8;
    int64_t fetched = 0;
    for (int i = 0; have && i < 8; i++)
      fetched |= (int64_t)((uint64_t)(unsigned char)want->stale_.data[i] << (8 * i));
    int64_t now = ox_wall_ms();
    int fresh = have && now - fetched < fs->l3_cache_ms && now >= fetched;
    ox_fstore_record(fs, OX_TIER_L2,
                     fresh                              ? FS_HIT
                     : crc == 0 || crc == OX_ENOT_FOUND ? FS_MISS
                                                        : FS_ERROR,
                     t0);
    if (fresh) {
      *tier = OX_TIER_L2;
      rc = ox_buf_append(out, want->stale_.data + 8, want->stale_.len - 8);
      if (!rc)
        promote_row(fs, x, key, gen, want->stale_.data + 8, want->stale_.len - 8, 1, COPY_KEEP);
      ox_buf_free(&want->stale_);
      return rc;
    }
    want->has_stale_ = have;
    if (!have) ox_buf_free(&want->stale_);
  }
  want->key = key;
  want->gen_ = gen;
  want->l2_err_ = l2rc == OX_ENOT_FOUND ? 0 : l2rc;
  return OX_EPENDING;
}

/* The end of a want: its answer from L3 (found, with the row in w->val; or the first error, 0
 * for a definitive miss), promoted into the tiers above, or the stale copy when L3 failed. */
static void want_finish(ox_fstore_t *fs, fs_tctx_t *x, ox_fstore_want_t *w, int found, int err) {
  if (found) {
    w->rc = 0;
    w->tier = OX_TIER_L3;
    promote_row(fs, x, w->key, w->gen_, w->val.data, w->val.len, 1,
                fs->l3_cache_ms > 0 ? COPY_PUT : COPY_KEEP);
  } else if (err && w->has_stale_) { /* L3 failed: the stale copy beats defaults */
    atomic_fetch_add_explicit(&fs->l3_stale, 1, memory_order_relaxed);
    w->val.len = 0;
    w->rc = ox_buf_append(&w->val, w->stale_.data + 8, w->stale_.len - 8);
    w->tier = OX_TIER_L2;
  } else if (err) {
    w->rc = err;
  } else {
    w->rc = OX_ENOT_FOUND;
    promote_row(fs, x, w->key, w->gen_, NULL, 0, 0, w->has_stale_ ? COPY_DEL : COPY_KEEP);
  }
  ox_buf_free(&w->stale_);
  w->has_stale_ = 0;
}

/* Asks L3 for n wants at once: Redis MGET, then PostgreSQL for what Redis did not have, each
 * bounded by the earliest deadline among the wants still in time (a want already past its own
 * deadline times out alone). tmp: scratch for the answers. */
static void l3_resolve(ox_fstore_t *fs, fs_tctx_t *x, ox_fstore_want_t **ws, size_t n,
                       ox_buf_t *tmp) {
  ox_slice_t keys[FETCH_MAX_WANTS], vals[FETCH_MAX_WANTS];
  size_t idx[FETCH_MAX_WANTS];
  int err[FETCH_MAX_WANTS], found[FETCH_MAX_WANTS];
  int64_t t0 = ox_mono_ns(), deadline = INT64_MAX;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    found[i] = 0;
    err[i] = ws[i]->l2_err_;
    ws[i]->val.len = 0;
    if (t0 >= ws[i]->deadline_) {
      err[i] = OX_ETIMEOUT;
      continue;
    }
    if (ws[i]->deadline_ < deadline) deadline = ws[i]->deadline_;
    idx[m] = i;
    keys[m++] = ws[i]->key;
  }
  for (int backend = 0; backend < 2 && m; backend++) {
    if (backend == 0 ? !fs->redis : !fs->pg) continue;
    if (ox_mono_ns() >= deadline) {
      for (size_t j = 0; j < m; j++)
        if (!err[idx[j]]) err[idx[j]] = OX_ETIMEOUT;
      break;
    }
    tmp->len = 0;
    int r = backend == 0 ? ox_l3_redis_mget(fs->redis, keys, m, tmp, vals, deadline)
                         : ox_l3_pg_mget(fs->pg, keys, m, tmp, vals, deadline);
    size_t left = 0;
    for (size_t j = 0; j < m; j++) {
      size_t i = idx[j];
      if (r >= 0 && vals[j].ptr) {
        found[i] = 1;
        if (ox_buf_append(&ws[i]->val, vals[j].ptr, vals[j].len)) {
          found[i] = 0;
          err[i] = OX_ENOMEM;
        }
        continue;
      }
      if (r < 0 && !err[i]) err[i] = r;
      idx[left] = i; /* not found here: the next backend is asked */
      keys[left++] = ws[i]->key;
    }
    m = left;
  }
  for (size_t i = 0; i < n; i++) {
    ox_fstore_record(fs, OX_TIER_L3, l3_result(found[i] ? 0 : err[i] ? err[i] : OX_ENOT_FOUND), t0);
    want_finish(fs, x, ws[i], found[i], found[i] ? 0 : err[i]);
  }
}

int ox_fstore_row_get(ox_fstore_t *fs, ox_slice_t key, ox_buf_t *out, int64_t deadline_ns,
                      ox_tier_t *tier) {
  ox_fstore_want_t w;
  int rc = ox_fstore_row_local(fs, key, out, tier, &w);
  if (rc != OX_EPENDING) return rc;
  fs_tctx_t *x = ox_fstore_ctx(fs); /* row_local succeeded in getting it */
  ox_fstore_want_t *ws = &w;
  w.deadline_ = deadline_ns;
  l3_resolve(fs, x, &ws, 1, &x->a);
  rc = w.rc;
  *tier = rc == 0 ? w.tier : OX_TIER_NONE;
  if (rc == 0) rc = ox_buf_append(out, w.val.data, w.val.len);
  ox_fstore_want_free(&w);
  return rc;
}

void ox_fstore_want_free(ox_fstore_want_t *w) {
  ox_buf_free(&w->val);
  ox_buf_free(&w->stale_);
  w->has_stale_ = 0;
}

/* ---- the fetcher ------------------------------------------------------------------------ */

/* Answers f's wants without asking L3 (stopping): the stale copy or OX_EUNAVAILABLE. */
static void fetch_refuse(ox_fstore_t *fs, fs_tctx_t *x, ox_fstore_fetch_t *f) {
  for (size_t i = 0; i < f->n; i++) {
    f->wants[i].val.len = 0;
    if (x)
      want_finish(fs, x, &f->wants[i], 0, OX_EUNAVAILABLE);
    else
      f->wants[i].rc = OX_EUNAVAILABLE;
  }
}

int ox_fstore_fetch(ox_fstore_t *fs, ox_fstore_fetch_t *f) {
  pthread_mutex_lock(&fs->fq_mu);
  int ok = fs->fq_started && !fs->fq_stop;
  if (ok) {
    for (size_t i = 0; i < f->n; i++) f->wants[i].deadline_ = f->deadline_ns;
    f->next_ = NULL;
    if (fs->fq_tail)
      fs->fq_tail->next_ = f;
    else
      fs->fq_head = f;
    fs->fq_tail = f;
    pthread_cond_signal(&fs->fq_cv);
  }
  pthread_mutex_unlock(&fs->fq_mu);
  if (!ok) fetch_refuse(fs, ox_fstore_ctx(fs), f);
  return ok ? 0 : OX_EUNAVAILABLE;
}

static void *fetcher_main(void *arg) {
  ox_fstore_t *fs = arg;
  fs_tctx_t *x = ox_fstore_ctx(fs); /* NULL (no reader slot): every fetch is refused */
  ox_fstore_want_t *ws[FETCH_MAX_WANTS];
  ox_buf_t tmp;
  ox_buf_init(&tmp);
  pthread_mutex_lock(&fs->fq_mu);
  for (;;) {
    while (!fs->fq_head && !fs->fq_stop) pthread_cond_wait(&fs->fq_cv, &fs->fq_mu);
    if (!fs->fq_head) break; /* stopping, nothing left */
    /* whole fetches, up to FETCH_MAX_WANTS wants (the first one whatever its size: a view has
     * at most OX_FVIEW_MAX_COLUMNS = 64 rows) */
    ox_fstore_fetch_t *batch = fs->fq_head, *last = batch;
    size_t n = batch->n;
    while (last->next_ && n + last->next_->n <= FETCH_MAX_WANTS) {
      last = last->next_;
      n += last->n;
    }
    fs->fq_head = last->next_;
    if (!fs->fq_head) fs->fq_tail = NULL;
    last->next_ = NULL;
    int stopping = fs->fq_stop;
    pthread_mutex_unlock(&fs->fq_mu);

    size_t k = 0;
    for (ox_fstore_fetch_t *f = batch; f; f = f->next_)
      for (size_t i = 0; i < f->n && k < FETCH_MAX_WANTS; i++) ws[k++] = &f->wants[i];
    if (stopping || !x || k < n) {
      for (ox_fstore_fetch_t *f = batch; f; f = f->next_) fetch_refuse(fs, x, f);
    } else {
      l3_resolve(fs, x, ws, k, &tmp);
    }
    atomic_fetch_add_explicit(&fs->fetch_rounds, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&fs->fetch_wants, k, memory_order_relaxed);
    for (ox_fstore_fetch_t *f = batch, *next; f; f = next) {
      next = f->next_; /* done may free f */
      f->done(f);
    }
    pthread_mutex_lock(&fs->fq_mu);
  }
  pthread_mutex_unlock(&fs->fq_mu);
  ox_buf_free(&tmp);
  return NULL;
}

int ox_fstore_fetcher_start(ox_fstore_t *fs) {
  if (!fs->redis && !fs->pg) return 0;
  if (pthread_create(&fs->fq_thread, NULL, fetcher_main, fs)) return OX_ENOMEM;
  fs->fq_started = 1;
  return 0;
}

void ox_fstore_stop_fetcher(ox_fstore_t *fs) {
  if (!fs) return;
  pthread_mutex_lock(&fs->fq_mu);
  int join = fs->fq_started && !fs->fq_stop;
  fs->fq_stop = 1;
  pthread_cond_broadcast(&fs->fq_cv);
  pthread_mutex_unlock(&fs->fq_mu);
  if (join) pthread_join(fs->fq_thread, NULL);
}

/* ---- writes ----------------------------------------------------------------------------- */

int ox_fstore_row_put(ox_fstore_t *fs, ox_slice_t key, const void *val, size_t len,
                      int64_t deadline_ns, int *l3_err) {
  fs_tctx_t *x = ox_fstore_ctx(fs);
  *l3_err = 0;
  if (!x) return OX_EUNAVAILABLE;
  fs_stripe_t *st = ox_fstore_stripe(fs, key);
  /* Queued under the stripe lock: a reader's promotion of an older value is either queued
   * before this write or sees the new generation and gives up. */
  pthread_mutex_lock(&st->mu);
  atomic_fetch_add(&st->gen, 1);
  int rc = ox_l2_put_row(fs->l2, key, val, len);
  pthread_mutex_unlock(&st->mu);
  if (!rc) rc = ox_l2_flush(fs->l2);
  pthread_mutex_lock(&st->mu);
  atomic_fetch_add(&st->gen, 1);
  if (rc)
    ox_l1_del(fs->l1, key);
  else
    l1_put_row(fs, key, val, len, 1, &x->b);
  pthread_mutex_unlock(&st->mu);
  if (rc) return rc;
  atomic_fetch_add_explicit(&fs->rows_put, 1, memory_order_relaxed);
  ox_slice_t v = ox_slice(val, len);
  if (fs->redis) {
    int e = ox_l3_redis_set(fs->redis, key, v, 0, deadline_ns);
    if (e && !*l3_err) *l3_err = e;
  }
  if (fs->pg) {
    int e = ox_l3_pg_put(fs->pg, key, v, deadline_ns);
    if (e && !*l3_err) *l3_err = e;
  }
  return 0;
}
