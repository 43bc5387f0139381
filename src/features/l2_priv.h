/* l2_priv.h: what l2.c (environment, readers) and l2_writer.c (queue, writer thread) share:
 * the environment struct, the queued operation, and the event key codec. Not for other modules. */
#ifndef OX_FEATURES_L2_PRIV_H
#define OX_FEATURES_L2_PRIV_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "features/l2.h"

/* Kinds from OP_PURGE on are "urgent": each ends the batch it is in. */
typedef enum { OP_PUT, OP_DEL, OP_EVENT, OP_PURGE, OP_BARRIER, OP_GROUP, OP_ID } op_kind_t;

typedef struct barrier {
  int done, rc;
} barrier_t;

typedef struct op {
  struct op *next;
  op_kind_t kind;
  int64_t ts;          /* OP_PURGE: the cutoff */
  uint32_t klen, vlen; /* OP_EVENT: klen covers prefix, entity and ts; the writer adds seq */
  barrier_t *barrier;  /* OP_BARRIER, OP_GROUP: lives on the waiting thread's stack */
  const struct ox_l2_group *group; /* OP_GROUP: the caller's, borrowed until the barrier */
  char data[];                     /* key, then value */
} op_t;

/* A group's records, packed: kind (1 byte: OP_PUT, OP_EVENT or OP_ID), klen and vlen (4 bytes
 * each, native order), key, value. For OP_EVENT the key is as in op_t (no seq); for OP_ID the
 * key is the id and the value the 8-byte big-endian ms. */
#define L2_REC_HDR 9
struct ox_l2_group {
  char *data;
  size_t len, cap, n;
};

struct ox_l2 {
  MDB_env *env;
  MDB_dbi rows, events, ids;
  ox_l2_opts_t o;
  pthread_rwlock_t maplock; /* shared by read snapshots, exclusive for a remap (growth) */
  atomic_size_t mapsize;    /* the map's current size */
  pthread_t writer;
  pthread_mutex_t lock;
  pthread_cond_t wake; /* writer waits for work */
  pthread_cond_t done; /* flushers wait for their barrier */
  /* under lock: */
  op_t *head, *tail;
  size_t queued; /* operations in the queue other than barriers (the bound applies to these) */
  size_t urgent; /* barriers and purges in the queue: the writer stops lingering for these */
  int stopping;
  int first_err; /* first error since the last flush */
  ox_l2_stats_t st;
  atomic_int readers; /* open readers, checked at close */
};

#define L2_KEY_EXTRA 14 /* u16 length prefix + 8 bytes ts + 4 bytes seq */

/* Logs a failed LMDB call (except MDB_NOTFOUND) and maps its code: see l2.h. 0 stays 0. */
int ox_l2_map_err(int rc, const char *what);
/* Grows the map (doubling, at most o.map_size); the writer thread only, between
 * transactions. 0, or OX_ESTORE_FULL when it is already at map_size, or an error. */
int ox_l2_grow(ox_l2_t *l2);
/* The writer thread's body (l2_writer.c); arg is the ox_l2_t. */
void *ox_l2_writer_main(void *arg);

/* ---- event key codec ------------------------------------------------------------------------ */

static inline void l2_put_be(char *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v >>= 8) p[i] = (char)(v & 0xff);
}
static inline uint64_t l2_get_be(const char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = v << 8 | (unsigned char)p[i];
  return v;
}

/* Writes the entity prefix (u16 length, bytes) and ts into k; returns the bytes written. */
static inline size_t l2_event_key(char *k, ox_slice_t entity, int64_t ts) {
  l2_put_be(k, entity.len, 2);
  memcpy(k + 2, entity.ptr, entity.len);
  l2_put_be(k + 2 + entity.len, (uint64_t)ts ^ (1ULL << 63), 8);
  return 2 + entity.len + 8;
}

/* If key is a well-formed event key, its prefix length (2 + entity length), else 0. */
static inline size_t l2_event_prefix_len(const MDB_val *key) {
  if (key->mv_size < L2_KEY_EXTRA) return 0;
  size_t n = (size_t)l2_get_be(key->mv_data, 2);
  return key->mv_size == n + L2_KEY_EXTRA ? n + 2 : 0;
}
static inline int64_t l2_event_ts(const MDB_val *key, size_t plen) {
  return (int64_t)(l2_get_be((const char *)key->mv_data + plen, 8) ^ (1ULL << 63));
}

#endif
