/* l2_writer.c: the L2 tier's write side (see l2.h): the bounded operation queue and the one
 * writer thread that applies it in batched transactions, assigns event sequence numbers and runs
 * the chunked purge.
 *
 * Queue: a singly linked FIFO of owned operations under one mutex. Producers signal the writer
 * only when it may be asleep with nothing to do (queue was empty), when a batch is full, or for
 * a barrier or purge, so a busy producer does not pay a futex wake per write. Barriers (flush)
 * and purges end a batch: a barrier is answered after the transaction before it commits, a
 * purge runs in its own chunked transactions after it. */
#include <stdlib.h>
#include <time.h>

#include "core/error.h"
#include "features/l2_priv.h"

#define PURGE_CHUNK 10000 /* deletions per purge transaction */

static int64_t clock_ms(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- queue -------------------------------------------------------------------------------- */

static int enqueue(ox_l2_t *l2, op_t *op) {
  pthread_mutex_lock(&l2->lock);
  if (op->kind != OP_BARRIER && (l2->stopping || l2->queued >= l2->o.queue_max_ops)) {
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
  if (op->kind != OP_BARRIER) {
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

/* Stores one event: its seq is one more than the last stored event's with the same entity and
 * ts (this transaction's earlier puts included), else 0. */
static int put_event(ox_l2_t *l2, MDB_txn *txn, MDB_cursor *cur, const op_t *op) {
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

/* Applies the data operations of a batch in one transaction. Returns 0 or the first error (the
 * transaction is then aborted: none of the batch is stored). */
static int apply_batch(ox_l2_t *l2, const op_t *ops) {
  MDB_txn *txn;
  MDB_cursor *cur = NULL;
  int rc = ox_l2_map_err(mdb_txn_begin(l2->env, NULL, 0, &txn), "write txn begin");
  if (rc) return rc;
  for (const op_t *op = ops; op && !rc; op = op->next) {
    MDB_val k = {op->klen, (void *)op->data}, v = {op->vlen, (void *)(op->data + op->klen)};
    switch (op->kind) {
      case OP_PUT:
        rc = ox_l2_map_err(mdb_put(txn, l2->rows, &k, &v, 0), "row put");
        break;
      case OP_DEL:
        rc = ox_l2_map_err(mdb_del(txn, l2->rows, &k, NULL), "row del");
        if (rc == OX_ENOT_FOUND) rc = 0;
        break;
      case OP_EVENT:
        if (!cur) rc = ox_l2_map_err(mdb_cursor_open(txn, l2->events, &cur), "cursor open");
        if (!rc) rc = put_event(l2, txn, cur, op);
        break;
      default:
        break; /* barriers and purges are handled around the transaction */
    }
  }
  if (rc) {
    mdb_txn_abort(txn); /* also frees the write cursor */
    return rc;
  }
  return ox_l2_map_err(mdb_txn_commit(txn), "commit");
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

static void deadline_ts(struct timespec *ts, int64_t mono_ms) {
  ts->tv_sec = (time_t)(mono_ms / 1000);
  ts->tv_nsec = (long)(mono_ms % 1000) * 1000000;
}

void *ox_l2_writer_main(void *arg) {
  ox_l2_t *l2 = arg;
  const int64_t never = INT64_MAX;
  int64_t next_purge = l2->o.retention_ms > 0 ? clock_ms(CLOCK_MONOTONIC) : never; /* at once */
  struct timespec ts;
  pthread_mutex_lock(&l2->lock);
  for (;;) {
    while (!l2->head && !l2->stopping && clock_ms(CLOCK_MONOTONIC) < next_purge) {
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
    if (clock_ms(CLOCK_MONOTONIC) >= next_purge) { /* periodic purge due (even under load) */
      cutoff = clock_ms(CLOCK_REALTIME) - l2->o.retention_ms;
      next_purge = clock_ms(CLOCK_MONOTONIC) + l2->o.purge_every_ms;
    }
    if (l2->head) {
      /* linger for a fuller batch, unless stopping or someone waits on a barrier/purge */
      int64_t until = clock_ms(CLOCK_MONOTONIC) + l2->o.batch_wait_ms;
      deadline_ts(&ts, until);
      while (!l2->stopping && !l2->urgent && l2->queued < l2->o.batch_max_ops &&
             clock_ms(CLOCK_MONOTONIC) < until)
        pthread_cond_timedwait(&l2->wake, &l2->lock, &ts);
      op_t *last = l2->head;
      for (size_t n = 1; n < l2->o.batch_max_ops && last->kind < OP_PURGE && last->next; n++)
        last = last->next;
      batch = l2->head;
      l2->head = last->next;
      if (!l2->head) l2->tail = NULL;
      last->next = NULL;
      for (op_t *op = batch; op; op = op->next) {
        if (op->kind != OP_BARRIER) l2->queued--;
        if (op->kind >= OP_PURGE) l2->urgent--;
        if (op->kind < OP_PURGE) ndata++;
        if (op->kind == OP_PURGE) { /* at most one per batch; the later cutoff covers both */
          explicit_purge = 1;
          if (op->ts > cutoff) cutoff = op->ts;
        }
      }
    }
    pthread_mutex_unlock(&l2->lock);

    int rc = ndata ? apply_batch(l2, batch) : 0;
    uint64_t purged = 0;
    int prc = cutoff != INT64_MIN ? purge_run(l2, cutoff, &purged) : 0;

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
