/* l2_writer.c: the L2 tier's write side (see l2.h): the bounded operation queue and the one
 * writer thread that applies it in batched transactions, assigns event sequence numbers and runs
 * the chunked purge.
 *
 * Queue: a singly linked FIFO of owned operations under one mutex. Producers signal the writer
 * only when it may be asleep with nothing to do (queue was empty), when a batch is full, or for
 * a barrier or purge, so a busy producer does not pay a futex wake per write. Barriers (flush)
 * and purges end a batch: a barrier is answered after the transaction before it commits, a
 * purge runs in its own chunked transactions after it. A group (ox_l2_commit) ends a batch too
 * and runs in a transaction of its own after it, so its result is its own.
 *
 * Growth: a transaction that fails with MDB_MAP_FULL is aborted (LMDB leaves it unusable), the
 * map doubled (ox_l2_grow) and the transaction applied again from the start, until it fits or
 * the map is at map_size (OX_ESTORE_FULL). Every transaction is built from data the writer
 * still holds (the batch's ops, the group, the purge's cutoff), so applying it again is exact. */
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "features/l2_priv.h"

#define PURGE_CHUNK 10000 /* deletions per purge transaction */

/* ---- queue -------------------------------------------------------------------------------- */

static int enqueue(ox_l2_t *l2, op_t *op) {
  pthread_mutex_lock(&l2->lock);
  if (op->kind != OP_BARRIER && op->kind != OP_GROUP &&
      (l2->stopping || l2->queued >= l2->o.queue_max_ops)) {
    l2->st.rejected++;
    pthread_mutex_unlock(&l2->lock);
    free(op);
    return OX_EUNAVAILABLE;
  }
  int was_empty = l2->head == NULL;
  op->next = NULL;
  if (l2->tail)
    l2->tail->next = op;
  else
    l2->head = op;
  l2->tail = op;
  if (op->kind != OP_BARRIER && op->kind != OP_GROUP) {
    l2->queued++;
    l2->st.enqueued++;
  }
  if (op->kind >= OP_PURGE) l2->urgent++;
  if (was_empty || op->kind >= OP_PURGE || l2->queued == l2->o.batch_max_ops)
    pthread_cond_signal(&l2->wake);
  pthread_mutex_unlock(&l2->lock);
  return 0;
}

static op_t *op_new(op_kind_t kind, size_t klen, size_t vlen) {
  op_t *op = malloc(sizeof *op + klen + vlen);
  if (!op) return NULL;
  memset(op, 0, sizeof *op);
  op->kind = kind;
  op->klen = (uint32_t)klen;
  op->vlen = (uint32_t)vlen;
  return op;
}

int ox_l2_put_row(ox_l2_t *l2, ox_slice_t key, const void *val, size_t len) {
  if (key.len == 0) return OX_EINVALID;
  if (key.len > OX_L2_MAX_KEY || len > OX_L2_MAX_VALUE) return OX_ETOO_LARGE;
  op_t *op = op_new(OP_PUT, key.len, len);
  if (!op) return OX_ENOMEM;
  memcpy(op->data, key.ptr, key.len);
  if (len) memcpy(op->data + key.len, val, len);
  return enqueue(l2, op);
}

int ox_l2_del_row(ox_l2_t *l2, ox_slice_t key) {
  if (key.len == 0) return OX_EINVALID;
  if (key.len > OX_L2_MAX_KEY) return OX_ETOO_LARGE;
  op_t *op = op_new(OP_DEL, key.len, 0);
  if (!op) return OX_ENOMEM;
  memcpy(op->data, key.ptr, key.len);
  return enqueue(l2, op);
}

int ox_l2_append_event(ox_l2_t *l2, ox_slice_t entity, int64_t ts_ms, const void *payload,
                       size_t len) {
  if (entity.len == 0) return OX_EINVALID;
  if (entity.len > OX_L2_MAX_ENTITY || len > OX_L2_MAX_VALUE) return OX_ETOO_LARGE;
  op_t *op = op_new(OP_EVENT, entity.len + L2_KEY_EXTRA - 4, len);
  if (!op) return OX_ENOMEM;
  l2_event_key(op->data, entity, ts_ms);
  if (len) memcpy(op->data + op->klen, payload, len);
  return enqueue(l2, op);
}

int ox_l2_purge_before(ox_l2_t *l2, int64_t cutoff_ms) {
  op_t *op = op_new(OP_PURGE, 0, 0);
  if (!op) return OX_ENOMEM;
  op->ts = cutoff_ms;
  return enqueue(l2, op);
}

/* ---- groups ------------------------------------------------------------------------------- */

int ox_l2_group_create(ox_l2_group_t **out) {
  *out = calloc(1, sizeof **out);
  return *out ? 0 : OX_ENOMEM;
}

void ox_l2_group_destroy(ox_l2_group_t *g) {
  if (!g) return;
  free(g->data);
  free(g);
}

size_t ox_l2_group_len(const ox_l2_group_t *g) {
  return g->n;
}

/* Appends a record with room for klen + vlen bytes; returns its key's address or NULL. */
static char *group_rec(ox_l2_group_t *g, op_kind_t kind, size_t klen, size_t vlen) {
  size_t need = L2_REC_HDR + klen + vlen;
  if (g->cap - g->len < need) {
    size_t cap = g->cap ? g->cap : 4096;
    while (cap - g->len < need) {
      if (cap > SIZE_MAX / 2) return NULL;
      cap *= 2;
    }
    char *d = realloc(g->data, cap);
    if (!d) return NULL;
    g->data = d;
    g->cap = cap;
  }
  char *p = g->data + g->len;
  uint32_t kl = (uint32_t)klen, vl = (uint32_t)vlen;
  p[0] = (char)kind;
  memcpy(p + 1, &kl, 4);
  memcpy(p + 5, &vl, 4);
  g->len += need;
  g->n++;
  return p + L2_REC_HDR;
}

int ox_l2_group_put_row(ox_l2_group_t *g, ox_slice_t key, const void *val, size_t len) {
  if (key.len == 0) return OX_EINVALID;
  if (key.len > OX_L2_MAX_KEY || len > OX_L2_MAX_VALUE) return OX_ETOO_LARGE;
  char *p = group_rec(g, OP_PUT, key.len, len);
  if (!p) return OX_ENOMEM;
  memcpy(p, key.ptr, key.len);
  if (len) memcpy(p + key.len, val, len);
  return 0;
}

int ox_l2_group_append_event(ox_l2_group_t *g, ox_slice_t entity, int64_t ts_ms,
                             const void *payload, size_t len) {
  if (entity.len == 0) return OX_EINVALID;
  if (entity.len > OX_L2_MAX_ENTITY || len > OX_L2_MAX_VALUE) return OX_ETOO_LARGE;
  size_t klen = entity.len + L2_KEY_EXTRA - 4;
  char *p = group_rec(g, OP_EVENT, klen, len);
  if (!p) return OX_ENOMEM;
  l2_event_key(p, entity, ts_ms);
  if (len) memcpy(p + klen, payload, len);
  return 0;
}

int ox_l2_group_put_id(ox_l2_group_t *g, ox_slice_t id, int64_t until_ms) {
  if (id.len == 0) return OX_EINVALID;
  if (id.len > OX_L2_MAX_ID) return OX_ETOO_LARGE;
  char *p = group_rec(g, OP_ID, id.len, 8);
  if (!p) return OX_ENOMEM;
  memcpy(p, id.ptr, id.len);
  l2_put_be(p + id.len, (uint64_t)until_ms ^ (1ULL << 63), 8);
  return 0;
}

int ox_l2_commit(ox_l2_t *l2, const ox_l2_group_t *g) {
  if (g->n == 0) return 0;
  barrier_t b = {0, 0};
  op_t *op = op_new(OP_GROUP, 0, 0);
  if (!op) return OX_ENOMEM;
  op->barrier = &b;
  op->group = g;
  pthread_mutex_lock(&l2->lock);
  int stopping = l2->stopping;
  pthread_mutex_unlock(&l2->lock);
  if (stopping) {
    free(op);
    return OX_EUNAVAILABLE;
  }
  enqueue(l2, op); /* like a barrier, never refused: the writer commits it before stopping */
  pthread_mutex_lock(&l2->lock);
  while (!b.done) pthread_cond_wait(&l2->done, &l2->lock);
  pthread_mutex_unlock(&l2->lock);
  return b.rc;
}

int ox_l2_flush(ox_l2_t *l2) {
  barrier_t b = {0, 0};
  op_t *op = op_new(OP_BARRIER, 0, 0);
  if (!op) return OX_ENOMEM;
  op->barrier = &b;
  enqueue(l2, op);
  pthread_mutex_lock(&l2->lock);
  while (!b.done) pthread_cond_wait(&l2->done, &l2->lock);
  pthread_mutex_unlock(&l2->lock);
  return b.rc;
}

void ox_l2_stats(ox_l2_t *l2, ox_l2_stats_t *out) {
  pthread_mutex_lock(&l2->lock);
  *out = l2->st;
  out->queued = l2->queued;
  pthread_mutex_unlock(&l2->lock);
}

/* ---- the writer --------------------------------------------------------------------------- */

/* One write as the writer applies it: a queued op's fields or a group's record. */
typedef struct {
  op_kind_t kind;
  uint32_t klen, vlen;
  const char *data; /* key, then value */
} rec_t;

/* Stores one event: its seq is one more than the last stored event's with the same entity and
 * ts (this transaction's earlier puts included), else 0. */
static int put_event(ox_l2_t *l2, MDB_txn *txn, MDB_cursor *cur, const rec_t *op) {
  char k[OX_L2_MAX_KEY];
  memcpy(k, op->data, op->klen);
  l2_put_be(k + op->klen, UINT32_MAX, 4);
  MDB_val key = {op->klen + 4, k}, found = key, v;
  int rc = mdb_cursor_get(cur, &found, &v, MDB_SET_RANGE);
  rc = mdb_cursor_get(cur, &found, &v, rc == 0 ? MDB_PREV : MDB_LAST);
  uint32_t seq = 0;
  if (rc == 0 && found.mv_size == key.mv_size && memcmp(found.mv_data, k, op->klen) == 0) {
    uint64_t last = l2_get_be((const char *)found.mv_data + op->klen, 4);
    if (last == UINT32_MAX) return OX_EOVERFLOW;
    seq = (uint32_t)last + 1;
  } else if (rc != 0 && rc != MDB_NOTFOUND) {
    return ox_l2_map_err(rc, "event seq lookup");
  }
  l2_put_be(k + op->klen, seq, 4);
  MDB_val val = {op->vlen, (void *)(op->data + op->klen)};
  return ox_l2_map_err(mdb_put(txn, l2->events, &key, &val, MDB_NOOVERWRITE), "event put");
}

/* Stores idempotency key id (the op's key) with the big-endian ms in its value, in both orders
 * (see l2.h); an id already stored fails with OX_EINVALID. */
static int put_id(ox_l2_t *l2, MDB_txn *txn, const rec_t *op) {
  char k[1 + 8 + OX_L2_MAX_ID];
  k[0] = 'i';
  memcpy(k + 1, op->data, op->klen);
  MDB_val key = {1 + op->klen, k}, val = {8, (void *)(op->data + op->klen)};
  int rc = mdb_put(txn, l2->ids, &key, &val, MDB_NOOVERWRITE);
  if (rc == MDB_KEYEXIST) return OX_EINVALID;
  if (rc) return ox_l2_map_err(rc, "id put");
  k[0] = 't';
  memcpy(k + 1, op->data + op->klen, 8);
  memcpy(k + 9, op->data, op->klen);
  key = (MDB_val){9 + op->klen, k};
  val = (MDB_val){0, ""};
  return ox_l2_map_err(mdb_put(txn, l2->ids, &key, &val, 0), "id time put");
}

/* Applies one data operation (OP_PUT, OP_DEL, OP_EVENT, OP_ID) in txn; *cur is the events
 * cursor, opened on first use. */
static int apply_op(ox_l2_t *l2, MDB_txn *txn, MDB_cursor **cur, const rec_t *op) {
  MDB_val k = {op->klen, (void *)op->data}, v = {op->vlen, (void *)(op->data + op->klen)};
  int rc = 0;
  switch (op->kind) {
    case OP_PUT:
      return ox_l2_map_err(mdb_put(txn, l2->rows, &k, &v, 0), "row put");
    case OP_DEL:
      rc = ox_l2_map_err(mdb_del(txn, l2->rows, &k, NULL), "row del");
      return rc == OX_ENOT_FOUND ? 0 : rc;
    case OP_EVENT:
      if (!*cur) rc = ox_l2_map_err(mdb_cursor_open(txn, l2->events, cur), "cursor open");
      return rc ? rc : put_event(l2, txn, *cur, op);
    case OP_ID:
      return put_id(l2, txn, op);
    default:
      return 0; /* barriers, purges and groups are handled around the transaction */
  }
}

/* Applies the data operations of a batch (the list ops), or the group g, in one transaction.
 * Returns 0 or the first error (the transaction is then aborted: none of it is stored). */
static int apply_txn(ox_l2_t *l2, const op_t *ops, const ox_l2_group_t *g) {
  MDB_txn *txn;
  MDB_cursor *cur = NULL;
  int rc = ox_l2_map_err(mdb_txn_begin(l2->env, NULL, 0, &txn), "write txn begin");
  if (rc) return rc;
  for (size_t off = 0; g && off < g->len && !rc;) { /* the group's packed records */
    const char *p = g->data + off;
    rec_t r = {.kind = (op_kind_t)p[0], .data = p + L2_REC_HDR};
    memcpy(&r.klen, p + 1, 4);
    memcpy(&r.vlen, p + 5, 4);
    rc = apply_op(l2, txn, &cur, &r);
    off += L2_REC_HDR + (size_t)r.klen + r.vlen;
  }
  for (const op_t *op = ops; op && !rc; op = op->next) {
    rec_t r = {op->kind, op->klen, op->vlen, op->data};
    rc = apply_op(l2, txn, &cur, &r);
  }
  if (rc) {
    mdb_txn_abort(txn); /* also frees the write cursor */
    return rc;
  }
  return ox_l2_map_err(mdb_txn_commit(txn), "commit");
}

/* apply_txn, growing the map and applying again while it is full (see the top). */
static int apply_growing(ox_l2_t *l2, const op_t *ops, const ox_l2_group_t *g) {
  int rc;
  while ((rc = apply_txn(l2, ops, g)) == OX_ESTORE_FULL) {
    int grc = ox_l2_grow(l2);
    if (grc) {
      if (grc == OX_ESTORE_FULL) ox_warn("l2: store full: a write of the maximum size refused");
      return grc == OX_ESTORE_FULL ? rc : grc;
    }
  }
  return rc;
}

/* Moves the cursor to the first key after every key of the entity whose prefix (u16 length and
 * entity bytes, plen bytes) starts key *k: one seek instead of a step per event. probe is
 * scratch space of OX_L2_MAX_KEY bytes. Returns 0, MDB_NOTFOUND at the end, or an LMDB error. */
static int seek_past_entity(MDB_cursor *cur, MDB_val *k, MDB_val *v, char *probe, size_t plen) {
  memcpy(probe, k->mv_data, plen);
  memset(probe + plen, 0xff, L2_KEY_EXTRA - 2);
  *k = (MDB_val){plen + L2_KEY_EXTRA - 2, probe};
  int rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
  if (rc == 0 && k->mv_size == plen + L2_KEY_EXTRA - 2 && !memcmp(k->mv_data, probe, k->mv_size))
    rc = mdb_cursor_get(cur, k, v, MDB_NEXT);
  return rc;
}

/* Deletes, per entity, every event with ts < cutoff except the newest of them (the anchor, which
 * keeps "time since the entity's last event" exact for any time >= cutoff); entities whose name
 * begins with '~' are the caller's own indexes and are skipped. Adds the count deleted to
 * *deleted.
 *
 * One forward walk: an old event is "pending" (maybe the anchor) until the next key shows
 * whether it is: the entity's next event, also old, means it was not (step back, delete it, the
 * newer one becomes pending); a recent event, another entity, or the end means it was (keep it,
 * and seek past the rest of the entity). Since the pending event is always the key just before
 * the cursor, the walk needs no copy of it. Transactions hold at most PURGE_CHUNK deletions; one
 * that is full stops at the pending event and the next transaction resumes there, so that
 * event is judged again with what follows it. Keys that are not event keys (the writer writes
 * none, a foreign tool could) are left alone and end a run: the event before one is kept. */
static int purge_run(ox_l2_t *l2, int64_t cutoff, uint64_t *deleted) {
  char resume[OX_L2_MAX_KEY], probe[OX_L2_MAX_KEY], ent[OX_L2_MAX_KEY];
  size_t rlen = 0;
  for (;;) {
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = ox_l2_map_err(mdb_txn_begin(l2->env, NULL, 0, &txn), "purge txn begin");
    if (rc) return rc;
    rc = mdb_cursor_open(txn, l2->events, &cur);
    MDB_val k = {rlen, resume}, v;
    if (!rc) rc = mdb_cursor_get(cur, &k, &v, rlen ? MDB_SET_RANGE : MDB_FIRST);
    size_t n = 0, elen = 0; /* ent[0..elen): the pending event's entity prefix */
    int more = 0, pending = 0;
    while (rc == 0) {
      size_t plen = l2_event_prefix_len(&k);
      const char *kd = k.mv_data;
      if (!plen) {
        pending = 0;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* not ours: leave it */
      } else if ((plen > 2 && kd[2] == '~') || l2_event_ts(&k, plen) >= cutoff) {
        pending = 0; /* an index entity, or the rest of this one is recent */
        rc = seek_past_entity(cur, &k, &v, probe, plen);
      } else if (pending && plen == elen && !memcmp(kd, ent, plen)) {
        /* an older event of this entity is pending, and this one is newer and old too */
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV); /* back to the pending one */
        if (rc) break;
        if (n == PURGE_CHUNK) { /* the next transaction starts at the pending event */
          memcpy(resume, k.mv_data, k.mv_size);
          rlen = k.mv_size;
          more = 1;
          break;
        }
        rc = mdb_cursor_del(cur, 0);
        if (!rc) rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* after a delete: the next key */
        if (!rc) rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); /* this one is pending now */
        n++;
      } else { /* the entity's first old event (in this transaction) */
        memcpy(ent, kd, plen);
        elen = plen;
        pending = 1;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
      }
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
      mdb_txn_abort(txn);
      return ox_l2_map_err(rc, "purge");
    }
    rc = ox_l2_map_err(mdb_txn_commit(txn), "purge commit");
    if (rc) return rc;
    *deleted += n;
    if (!more) return 0;
  }
}

/* Forgets the idempotency keys whose time is below cutoff: walks the "t" keys in time order,
 * deleting each with its "i" key, at most PURGE_CHUNK per transaction. The cursor seeks the
 * first "t" key again after each deletion: only its own operations move it. */
static int purge_ids(ox_l2_t *l2, int64_t cutoff) {
  char end[9];
  end[0] = 't';
  l2_put_be(end + 1, (uint64_t)cutoff ^ (1ULL << 63), 8);
  for (;;) {
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = ox_l2_map_err(mdb_txn_begin(l2->env, NULL, 0, &txn), "id purge txn begin");
    if (rc) return rc;
    rc = mdb_cursor_open(txn, l2->ids, &cur);
    size_t n = 0;
    while (rc == 0 && n < PURGE_CHUNK) {
      MDB_val k = {1, "t"}, v;
      rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
      if (rc) break;
      if (k.mv_size < 9 || memcmp(k.mv_data, end, 9) >= 0) { /* the rest is newer */
        rc = MDB_NOTFOUND;
        break;
      }
      char ik[1 + OX_L2_MAX_ID];
      size_t il = k.mv_size - 9;
      int has_i = il >= 1 && il <= OX_L2_MAX_ID;
      if (has_i) {
        ik[0] = 'i';
        memcpy(ik + 1, (const char *)k.mv_data + 9, il);
      }
      rc = mdb_cursor_del(cur, 0);
      if (!rc && has_i) {
        k = (MDB_val){1 + il, ik};
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
        if (!rc) rc = mdb_cursor_del(cur, 0);
        if (rc == MDB_NOTFOUND) rc = 0;
      }
      n++;
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
      mdb_txn_abort(txn);
      return ox_l2_map_err(rc, "id purge");
    }
    rc = ox_l2_map_err(mdb_txn_commit(txn), "id purge commit");
    if (rc || n < PURGE_CHUNK) return rc;
  }
}

/* The whole purge (events, then ids), growing the map while it is full: deletions copy pages
 * too. Purging again with the same cutoff is harmless, so a retry is exact. */
static int purge_all(ox_l2_t *l2, int64_t cutoff, uint64_t *deleted) {
  int rc;
  for (;;) {
    rc = purge_run(l2, cutoff, deleted);
    if (!rc) rc = purge_ids(l2, cutoff);
    if (rc != OX_ESTORE_FULL || ox_l2_grow(l2) != 0) return rc;
  }
}

static void deadline_ts(struct timespec *ts, int64_t mono_ms) {
  ts->tv_sec = (time_t)(mono_ms / 1000);
  ts->tv_nsec = (long)(mono_ms % 1000) * 1000000;
}

void *ox_l2_writer_main(void *arg) {
  ox_l2_t *l2 = arg;
  const int64_t never = INT64_MAX;
  int64_t next_purge = l2->o.retention_ms > 0 ? ox_mono_ms() : never; /* at once */
  struct timespec ts;
  pthread_mutex_lock(&l2->lock);
  for (;;) {
    while (!l2->head && !l2->stopping && ox_mono_ms() < next_purge) {
      if (next_purge == never) {
        pthread_cond_wait(&l2->wake, &l2->lock);
      } else {
        deadline_ts(&ts, next_purge);
        pthread_cond_timedwait(&l2->wake, &l2->lock, &ts);
      }
    }
    if (!l2->head && l2->stopping) break;
    int64_t cutoff = INT64_MIN;
    op_t *batch = NULL;
    size_t ndata = 0;
    int explicit_purge = 0;
    if (ox_mono_ms() >= next_purge) { /* periodic purge due (even under load) */
      cutoff = ox_wall_ms() - l2->o.retention_ms;
      next_purge = ox_mono_ms() + l2->o.purge_every_ms;
    }
    if (l2->head) {
      /* linger for a fuller batch, unless stopping or someone waits on a barrier/purge */
      int64_t until = ox_mono_ms() + l2->o.batch_wait_ms;
      deadline_ts(&ts, until);
      while (!l2->stopping && !l2->urgent && l2->queued < l2->o.batch_max_ops &&
             ox_mono_ms() < until)
        pthread_cond_timedwait(&l2->wake, &l2->lock, &ts);
      op_t *last = l2->head;
      for (size_t n = 1; n < l2->o.batch_max_ops && last->kind < OP_PURGE && last->next; n++)
        last = last->next;
      batch = l2->head;
      l2->head = last->next;
      if (!l2->head) l2->tail = NULL;
      last->next = NULL;
      for (op_t *op = batch; op; op = op->next) {
        if (op->kind != OP_BARRIER && op->kind != OP_GROUP) l2->queued--;
        if (op->kind >= OP_PURGE) l2->urgent--;
        if (op->kind < OP_PURGE) ndata++;
        if (op->kind == OP_PURGE) { /* at most one per batch; the later cutoff covers both */
          explicit_purge = 1;
          if (op->ts > cutoff) cutoff = op->ts;
        }
      }
    }
    pthread_mutex_unlock(&l2->lock);

    int rc = ndata ? apply_growing(l2, batch, NULL) : 0;
    uint64_t purged = 0;
    int prc = cutoff != INT64_MIN ? purge_all(l2, cutoff, &purged) : 0;
    op_t *group = NULL; /* a group ends its batch: it is the last op */
    for (op_t *op = batch; op; op = op->next)
      if (op->kind == OP_GROUP) group = op;
    int grc = group ? apply_growing(l2, NULL, group->group) : 0;

    pthread_mutex_lock(&l2->lock);
    if (ndata) {
      if (rc)
        l2->st.failed += ndata;
      else
        l2->st.committed += ndata, l2->st.batches++;
    }
    if (explicit_purge) {
      if (prc)
        l2->st.failed++;
      else
        l2->st.committed++;
    }
    l2->st.purged += purged;
    if (group) {
      if (grc)
        l2->st.failed += group->group->n;
      else
        l2->st.committed += group->group->n, l2->st.batches++;
      group->barrier->rc = grc; /* its own result, not reported to flush */
      group->barrier->done = 1;
      pthread_cond_broadcast(&l2->done);
    }
    if (!l2->first_err) l2->first_err = rc ? rc : prc;
    for (op_t *op = batch; op; op = op->next) {
      if (op->kind != OP_BARRIER) continue;
      op->barrier->rc = l2->first_err; /* the flusher's stack: not touched after done is set */
      op->barrier->done = 1;
      l2->first_err = 0;
      pthread_cond_broadcast(&l2->done);
    }
    pthread_mutex_unlock(&l2->lock);
    for (op_t *op = batch, *nx; op; op = nx) {
      nx = op->next;
      free(op);
    }
    pthread_mutex_lock(&l2->lock);
  }
  pthread_mutex_unlock(&l2->lock);
  return NULL;
}
