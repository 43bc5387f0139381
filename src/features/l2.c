/* l2.c: see l2.h. The environment (open/close, error mapping) and the read side: readers that
 * keep one read-only transaction and cursor each, reset between reads and renewed for the next;
 * row lookups and event scans hand out slices of the map. The write side is l2_writer.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/log.h"
#include "features/l2_priv.h"

struct ox_l2_reader {
  ox_l2_t *l2;
  MDB_txn *txn;    /* read-only, reset between reads: keeps its reader slot */
  MDB_cursor *cur; /* on events, renewed with the txn */
  int in_snapshot; /* between ox_l2_read_begin and ox_l2_read_end */
};

int ox_l2_map_err(int rc, const char *what) {
  if (rc == 0) return 0;
  if (rc == MDB_NOTFOUND) return OX_ENOT_FOUND;
  if (rc == MDB_MAP_FULL) return OX_ESTORE_FULL; /* not an error yet: logged if growth fails */
  ox_error("l2: %s: %s", what, mdb_strerror(rc));
  if (rc > 0) return -rc; /* LMDB passes system errors through as positive errno values */
  switch (rc) {
    case MDB_BAD_VALSIZE:
      return OX_ETOO_LARGE;
    case MDB_READERS_FULL:
      return OX_EUNAVAILABLE;
    default:
      return OX_EINTERNAL;
  }
}

/* ---- open and close ----------------------------------------------------------------------- */

int ox_l2_open(const char *path, const ox_l2_opts_t *opts, ox_l2_t **out) {
  ox_l2_t *l2 = calloc(1, sizeof *l2);
  if (!l2) return OX_ENOMEM;
  if (opts) l2->o = *opts;
  ox_l2_opts_t *o = &l2->o;
  if (!o->map_size) o->map_size = 1ULL << 30;
  if (!o->map_initial) {
    o->map_initial = (size_t)64 << 20;
    char file[4096];
    struct stat sb;
    snprintf(file, sizeof file, "%s/data.mdb", path);
    if (stat(file, &sb) == 0 && (uint64_t)sb.st_size > o->map_initial)
      o->map_initial = (size_t)sb.st_size;
  }
  if (o->map_initial > o->map_size) o->map_initial = o->map_size;
  if (!o->max_readers) o->max_readers = 126;
  if (!o->batch_max_ops) o->batch_max_ops = 1024;
  if (!o->batch_wait_ms) o->batch_wait_ms = 2;
  if (!o->queue_max_ops) o->queue_max_ops = 65536;
  if (!o->purge_every_ms) o->purge_every_ms = 60000;
  unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
  if (o->sync == OX_L2_SYNC_NONE) flags |= MDB_NOSYNC; /* else LMDB fsyncs data and meta */
  if (o->sync == OX_L2_SYNC_NOMETA) flags |= MDB_NOMETASYNC;

  int rc = 0;
  if (mkdir(path, 0700) != 0 && errno != EEXIST) {
    rc = -errno;
    ox_error("l2: cannot create %s: %s", path, ox_strerror(rc));
    free(l2);
    return rc;
  }
  MDB_txn *txn = NULL;
  rc = ox_l2_map_err(mdb_env_create(&l2->env), "env create");
  if (!rc) rc = ox_l2_map_err(mdb_env_set_mapsize(l2->env, o->map_initial), "set map size");
  if (!rc) rc = ox_l2_map_err(mdb_env_set_maxreaders(l2->env, o->max_readers), "set max readers");
  if (!rc) rc = ox_l2_map_err(mdb_env_set_maxdbs(l2->env, 3), "set max dbs");
  if (!rc) rc = ox_l2_map_err(mdb_env_open(l2->env, path, flags, 0600), "open");
  int dead = 0; /* free reader slots left by processes that died holding them */
  if (!rc && mdb_reader_check(l2->env, &dead) == 0 && dead > 0)
    ox_warn("l2: %s: cleared %d stale reader slot(s)", path, dead);
  if (!rc) rc = ox_l2_map_err(mdb_txn_begin(l2->env, NULL, 0, &txn), "txn begin");
  if (!rc) rc = ox_l2_map_err(mdb_dbi_open(txn, "rows", MDB_CREATE, &l2->rows), "open rows");
  if (!rc) rc = ox_l2_map_err(mdb_dbi_open(txn, "events", MDB_CREATE, &l2->events), "open events");
  if (!rc) rc = ox_l2_map_err(mdb_dbi_open(txn, "ids", MDB_CREATE, &l2->ids), "open ids");
  if (!rc)
    rc = ox_l2_map_err(mdb_txn_commit(txn), "commit");
  else if (txn)
    mdb_txn_abort(txn);
  if (rc) {
    if (l2->env) mdb_env_close(l2->env);
    free(l2);
    return rc;
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&l2->wake, &ca);
  pthread_condattr_destroy(&ca);
  pthread_cond_init(&l2->done, NULL);
  pthread_mutex_init(&l2->lock, NULL);
  pthread_rwlockattr_t ra; /* a waiting remap must not starve behind a stream of readers */
  pthread_rwlockattr_init(&ra);
  pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&l2->maplock, &ra);
  pthread_rwlockattr_destroy(&ra);
  MDB_envinfo ei;
  mdb_env_info(l2->env, &ei); /* LMDB rounds the size up to the data already in the file */
  atomic_init(&l2->mapsize, ei.me_mapsize);
  atomic_init(&l2->readers, 0);
  rc = pthread_create(&l2->writer, NULL, ox_l2_writer_main, l2);
  if (rc) {
    pthread_cond_destroy(&l2->wake);
    pthread_cond_destroy(&l2->done);
    pthread_mutex_destroy(&l2->lock);
    pthread_rwlock_destroy(&l2->maplock);
    mdb_env_close(l2->env);
    free(l2);
    return -rc;
  }
  *out = l2;
  return 0;
}

void ox_l2_close(ox_l2_t *l2) {
  if (!l2) return;
  pthread_mutex_lock(&l2->lock);
  l2->stopping = 1;
  pthread_cond_signal(&l2->wake);
  pthread_mutex_unlock(&l2->lock);
  pthread_join(l2->writer, NULL); /* it commits what is queued first */
  int open_readers = atomic_load(&l2->readers);
  if (open_readers) ox_error("l2: closed with %d reader(s) still open", open_readers);
  mdb_env_close(l2->env);
  pthread_cond_destroy(&l2->wake);
  pthread_cond_destroy(&l2->done);
  pthread_mutex_destroy(&l2->lock);
  pthread_rwlock_destroy(&l2->maplock);
  free(l2);
}

int ox_l2_grow(ox_l2_t *l2) {
  size_t cur = atomic_load(&l2->mapsize), max = l2->o.map_size;
  if (cur >= max) return OX_ESTORE_FULL;
  size_t next = cur > max / 2 ? max : cur * 2;
  pthread_rwlock_wrlock(&l2->maplock); /* no read snapshot open in this process */
  int rc = mdb_env_set_mapsize(l2->env, next);
  pthread_rwlock_unlock(&l2->maplock);
  if (rc) return ox_l2_map_err(rc, "grow the map");
  atomic_store(&l2->mapsize, next);
  ox_info("l2: map grown from %zu to %zu bytes (at most %zu)", cur, next, max);
  return 0;
}

int ox_l2_copy_fd(ox_l2_t *l2, int fd) {
  pthread_rwlock_rdlock(&l2->maplock); /* the copy reads the map through its own snapshot */
  int rc = mdb_env_copyfd2(l2->env, fd, MDB_CP_COMPACT);
  pthread_rwlock_unlock(&l2->maplock);
  return ox_l2_map_err(rc, "copy");
}

void ox_l2_usage(ox_l2_t *l2, uint64_t *used, uint64_t *map, uint64_t *max) {
  MDB_envinfo ei;
  MDB_stat st;
  pthread_rwlock_rdlock(&l2->maplock); /* mdb_env_info reads the meta pages in the map */
  mdb_env_info(l2->env, &ei);
  mdb_env_stat(l2->env, &st);
  pthread_rwlock_unlock(&l2->maplock);
  *used = ((uint64_t)ei.me_last_pgno + 1) * st.ms_psize;
  *map = atomic_load(&l2->mapsize);
  *max = l2->o.map_size;
}

/* ---- readers ------------------------------------------------------------------------------ */

int ox_l2_reader_open(ox_l2_t *l2, ox_l2_reader_t **out) {
  ox_l2_reader_t *r = calloc(1, sizeof *r);
  if (!r) return OX_ENOMEM;
  r->l2 = l2;
  int rc = ox_l2_map_err(mdb_txn_begin(l2->env, NULL, MDB_RDONLY, &r->txn), "reader begin");
  if (!rc) {
    rc = ox_l2_map_err(mdb_cursor_open(r->txn, l2->events, &r->cur), "reader cursor");
    if (rc) mdb_txn_abort(r->txn);
  }
  if (rc) {
    free(r);
    return rc;
  }
  mdb_txn_reset(r->txn); /* keeps the slot, releases the snapshot */
  atomic_fetch_add(&l2->readers, 1);
  *out = r;
  return 0;
}

void ox_l2_reader_close(ox_l2_reader_t *r) {
  if (!r) return;
  mdb_cursor_close(r->cur); /* read-only cursors outlive their transaction: close explicitly */
  mdb_txn_abort(r->txn);
  atomic_fetch_sub(&r->l2->readers, 1);
  free(r);
}

int ox_l2_read_begin(ox_l2_reader_t *r) {
  if (r->in_snapshot) return OX_EINVALID;
  pthread_rwlock_rdlock(&r->l2->maplock); /* held until read_end: the map stays put */
  int rc = ox_l2_map_err(mdb_txn_renew(r->txn), "reader renew");
  if (!rc) rc = ox_l2_map_err(mdb_cursor_renew(r->txn, r->cur), "cursor renew");
  if (rc) {
    mdb_txn_reset(r->txn);
    pthread_rwlock_unlock(&r->l2->maplock);
    return rc;
  }
  r->in_snapshot = 1;
  return 0;
}

void ox_l2_read_end(ox_l2_reader_t *r) {
  if (!r->in_snapshot) return;
  mdb_txn_reset(r->txn);
  pthread_rwlock_unlock(&r->l2->maplock);
  r->in_snapshot = 0;
}

/* Opens a snapshot for one call unless the caller holds one; *own says whether to end it. */
static int snap_enter(ox_l2_reader_t *r, int *own) {
  *own = !r->in_snapshot;
  return *own ? ox_l2_read_begin(r) : 0;
}
static void snap_leave(ox_l2_reader_t *r, int own) {
  if (own) ox_l2_read_end(r);
}

int ox_l2_get_row(ox_l2_reader_t *r, ox_slice_t key, ox_l2_row_fn fn, void *arg) {
  if (key.len == 0 || key.len > OX_L2_MAX_KEY) return OX_ENOT_FOUND;
  int own, rc = snap_enter(r, &own);
  if (rc) return rc;
  MDB_val k = {key.len, (void *)key.ptr}, v;
  rc = ox_l2_map_err(mdb_get(r->txn, r->l2->rows, &k, &v), "row get");
  if (!rc) fn(arg, ox_slice(v.mv_data, v.mv_size));
  snap_leave(r, own);
  return rc;
}

int ox_l2_has_id(ox_l2_reader_t *r, ox_slice_t id) {
  if (id.len == 0 || id.len > OX_L2_MAX_ID) return 0;
  char k[1 + OX_L2_MAX_ID];
  k[0] = 'i';
  memcpy(k + 1, id.ptr, id.len);
  int own, rc = snap_enter(r, &own);
  if (rc) return rc;
  MDB_val key = {1 + id.len, k}, v;
  rc = ox_l2_map_err(mdb_get(r->txn, r->l2->ids, &key, &v), "id get");
  snap_leave(r, own);
  return rc == 0 ? 1 : rc == OX_ENOT_FOUND ? 0 : rc;
}

typedef struct {
  void *out;
  size_t cap, *len;
  int rc;
} copy_ctx_t;

static void copy_row(void *arg, ox_slice_t val) {
  copy_ctx_t *c = arg;
  *c->len = val.len;
  if (val.len <= c->cap)
    memcpy(c->out, val.ptr, val.len);
  else
    c->rc = OX_ETOO_LARGE;
}

int ox_l2_get_row_copy(ox_l2_reader_t *r, ox_slice_t key, void *out, size_t cap, size_t *len) {
  copy_ctx_t c = {out, cap, len, 0};
  int rc = ox_l2_get_row(r, key, copy_row, &c);
  return rc ? rc : c.rc;
}

int ox_l2_scan_events(ox_l2_reader_t *r, ox_slice_t entity, int64_t since_ms, int64_t until_ms,
                      ox_l2_event_fn fn, void *arg) {
  if (entity.len == 0 || entity.len > OX_L2_MAX_ENTITY || since_ms > until_ms) return 0;
  char probe[OX_L2_MAX_KEY];
  size_t plen = 2 + entity.len, n = l2_event_key(probe, entity, since_ms);
  l2_put_be(probe + n, 0, 4);
  int own, rc = snap_enter(r, &own);
  if (rc) return rc;
  MDB_val k = {n + 4, probe}, v;
  int count = 0;
  rc = mdb_cursor_get(r->cur, &k, &v, MDB_SET_RANGE);
  while (rc == 0 && k.mv_size == plen + L2_KEY_EXTRA - 2 && !memcmp(k.mv_data, probe, plen)) {
    ox_l2_event_t ev = {.ts_ms = l2_event_ts(&k, plen),
                        .seq = (uint32_t)l2_get_be((const char *)k.mv_data + plen + 8, 4),
                        .payload = ox_slice(v.mv_data, v.mv_size)};
    if (ev.ts_ms > until_ms) break;
    count++;
    if (fn(arg, &ev)) break;
    rc = mdb_cursor_get(r->cur, &k, &v, MDB_NEXT);
  }
  snap_leave(r, own);
  if (rc != 0 && rc != MDB_NOTFOUND) return ox_l2_map_err(rc, "event scan");
  return count;
}
