/* l1.c: see l1.h. Per shard: a rwlock, a chained bucket array, and a doubly linked CLOCK ring
 * through the same entries. Entries are one malloc each (header, key, value); a put allocates
 * and fills its entry before locking and frees what it displaced after unlocking, so the write
 * lock is held only for pointer surgery (and, rarely, a bucket-array doubling). */
#include "features/l1.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/siphash.h"

typedef struct entry {
  struct entry *next;          /* hash chain */
  struct entry *rprev, *rnext; /* CLOCK ring (circular) */
  uint64_t hash;
  int64_t expire_ms; /* INT64_MAX: never */
  uint32_t klen, vlen;
  atomic_uchar ref; /* CLOCK reference bit: set by readers, cleared by the hand */
  char data[];      /* key bytes, then value bytes */
} entry_t;

_Static_assert(offsetof(entry_t, data) <= 56, "OX_L1_ENTRY_COST assumes a 56-byte header");

typedef struct {
  pthread_rwlock_t lock;
  _Atomic uint64_t hits, misses; /* bumped by readers holding only the read lock */
  /* the rest is read and written under the lock (write lock to modify) */
  entry_t **buckets;
  size_t mask;   /* buckets - 1 */
  entry_t *hand; /* NULL when the shard is empty */
  size_t bytes, budget, entries;
  uint64_t evictions, expirations;
} __attribute__((aligned(64))) shard_t;

struct ox_l1 {
  shard_t *shards;
  unsigned shard_bits;
  ox_siphash_key_t key; /* secret per map: clients choose keys, not their shards or chains */
};

#define INITIAL_BUCKETS 16

static inline shard_t *shard_of(ox_l1_t *c, uint64_t h) {
  return &c->shards[c->shard_bits ? h >> (64 - c->shard_bits) : 0];
}

static inline bool expired(const entry_t *e, int64_t now_ms) {
  return now_ms >= e->expire_ms;
}

/* The entry's first cache line is a demand load; its next three (key and value bytes of a
 * typical ~200-byte entry) are prefetched at the same time, so a hit on a cold entry costs about
 * one memory latency instead of two (the value copy would otherwise miss again). Prefetching
 * past a short entry's end is harmless: prefetches never fault. */
static entry_t *find(const shard_t *s, uint64_t h, ox_slice_t key) {
  for (entry_t *e = s->buckets[h & s->mask]; e; e = e->next) {
    __builtin_prefetch((const char *)e + 64);
    __builtin_prefetch((const char *)e + 128);
    __builtin_prefetch((const char *)e + 192);
    if (e->hash == h && e->klen == key.len && memcmp(e->data, key.ptr, key.len) == 0) return e;
  }
  return NULL;
}

/* ---- ring and chain surgery (write lock held) --------------------------------------------- */

/* Puts e on the ring just behind the hand: the last entry the hand will reach. */
static void ring_insert(shard_t *s, entry_t *e) {
  if (!s->hand) {
    e->rprev = e->rnext = e;
    s->hand = e;
    return;
  }
  e->rnext = s->hand;
  e->rprev = s->hand->rprev;
  e->rprev->rnext = e;
  s->hand->rprev = e;
}

/* Unlinks e from its chain and the ring, uncharges it and pushes it on *freelist (via next). */
static void unlink_entry(shard_t *s, entry_t *e, entry_t **freelist) {
  entry_t **pp = &s->buckets[e->hash & s->mask];
  while (*pp != e) pp = &(*pp)->next;
  *pp = e->next;
  if (e->rnext == e) {
    s->hand = NULL;
  } else {
    if (s->hand == e) s->hand = e->rnext;
    e->rprev->rnext = e->rnext;
    e->rnext->rprev = e->rprev;
  }
  s->bytes -= OX_L1_ENTRY_COST(e->klen, e->vlen);
  s->entries--;
  e->next = *freelist;
  *freelist = e;
}

static void free_list(entry_t *e) {
  while (e) {
    entry_t *n = e->next;
    free(e);
    e = n;
  }
}

/* Runs the CLOCK hand until `need` more bytes fit in the budget or the shard is empty. Expired
 * entries go first whatever their reference bit. Terminates: each step either removes an entry
 * or clears a bit, and after one turn every bit is clear. */
static void make_room(shard_t *s, size_t need, int64_t now_ms, entry_t **freelist) {
  while (s->hand && s->bytes + need > s->budget) {
    entry_t *e = s->hand;
    if (expired(e, now_ms)) {
      unlink_entry(s, e, freelist);
      s->expirations++;
    } else if (atomic_load_explicit(&e->ref, memory_order_relaxed)) {
      atomic_store_explicit(&e->ref, 0, memory_order_relaxed);
      s->hand = e->rnext;
    } else {
      unlink_entry(s, e, freelist);
      s->evictions++;
    }
  }
}

/* Doubles the bucket array when the load factor passes 1 and the budget allows; on allocation
 * failure the chains just get longer. */
static void maybe_grow(shard_t *s) {
  size_t n = s->mask + 1;
  if (s->entries <= n || n > (SIZE_MAX / sizeof(entry_t *)) / 4) return;
  size_t extra = n * sizeof(entry_t *); /* the new array is 2n, the old n is given back */
  if (s->bytes + extra > s->budget) return;
  entry_t **nb = calloc(2 * n, sizeof *nb);
  if (!nb) return;
  for (size_t i = 0; i < n; i++) {
    for (entry_t *e = s->buckets[i], *nx; e; e = nx) {
      nx = e->next;
      e->next = nb[e->hash & (2 * n - 1)];
      nb[e->hash & (2 * n - 1)] = e;
    }
  }
  free(s->buckets);
  s->buckets = nb;
  s->mask = 2 * n - 1;
  s->bytes += extra;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

int ox_l1_create(size_t mem_bytes, unsigned shards, ox_l1_t **out) {
  if (shards == 0) shards = OX_L1_DEFAULT_SHARDS;
  if (shards > OX_L1_MAX_SHARDS) shards = OX_L1_MAX_SHARDS;
  unsigned bits = 0;
  while ((1u << bits) < shards) bits++;
  shards = 1u << bits;
  size_t budget = mem_bytes / shards;
  if (budget < 4096) return OX_EINVALID;

  ox_l1_t *c = calloc(1, sizeof *c);
  if (!c) return OX_ENOMEM;
  c->shard_bits = bits;
  if (ox_siphash_random_key(&c->key)) c->key = *ox_siphash_process_key();
  c->shards = aligned_alloc(64, sizeof(shard_t) * shards);
  if (!c->shards) {
    free(c);
    return OX_ENOMEM;
  }
  memset(c->shards, 0, sizeof(shard_t) * shards);
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  unsigned made = 0;
  int rc = 0;
  for (; made < shards; made++) {
    shard_t *s = &c->shards[made];
    s->buckets = calloc(INITIAL_BUCKETS, sizeof *s->buckets);
    if (!s->buckets) {
      rc = OX_ENOMEM;
      break;
    }
    s->mask = INITIAL_BUCKETS - 1;
    s->budget = budget;
    s->bytes = INITIAL_BUCKETS * sizeof *s->buckets;
    pthread_rwlock_init(&s->lock, &attr);
  }
  pthread_rwlockattr_destroy(&attr);
  if (rc) {
    for (unsigned i = 0; i < made; i++) {
      pthread_rwlock_destroy(&c->shards[i].lock);
      free(c->shards[i].buckets);
    }
    free(c->shards);
    free(c);
    return rc;
  }
  *out = c;
  return 0;
}

void ox_l1_destroy(ox_l1_t *c) {
  if (!c) return;
  for (unsigned i = 0; i < (1u << c->shard_bits); i++) {
    shard_t *s = &c->shards[i];
    for (size_t b = 0; b <= s->mask; b++) free_list(s->buckets[b]);
    free(s->buckets);
    pthread_rwlock_destroy(&s->lock);
  }
  free(c->shards);
  free(c);
}

/* ---- reads -------------------------------------------------------------------------------- */

/* Removes key's entry if it is (still) expired; called after a reader saw it expired. */
static void reclaim_expired(shard_t *s, uint64_t h, ox_slice_t key, int64_t now_ms) {
  entry_t *freelist = NULL;
  pthread_rwlock_wrlock(&s->lock);
  entry_t *e = find(s, h, key);
  if (e && expired(e, now_ms)) {
    unlink_entry(s, e, &freelist);
    s->expirations++;
  }
  pthread_rwlock_unlock(&s->lock);
  free_list(freelist);
}

/* Shared by get and view: finds a live entry under the read lock and either copies it (fn ==
 * NULL) or lends it to fn. */
static int lookup(ox_l1_t *c, ox_slice_t key, int64_t now_ms, void *out, size_t cap, size_t *len,
                  ox_l1_view_fn fn, void *arg) {
  uint64_t h = ox_siphash(key.ptr, key.len, &c->key);
  shard_t *s = shard_of(c, h);
  pthread_rwlock_rdlock(&s->lock);
  entry_t *e = find(s, h, key);
  if (!e || expired(e, now_ms)) {
    bool stale = e != NULL;
    pthread_rwlock_unlock(&s->lock);
    atomic_fetch_add_explicit(&s->misses, 1, memory_order_relaxed);
    if (stale) reclaim_expired(s, h, key, now_ms);
    return OX_ENOT_FOUND;
  }
  int rc = 0;
  const char *val = e->data + e->klen;
  if (fn) {
    fn(arg, val, e->vlen);
  } else {
    *len = e->vlen;
    if (e->vlen > cap)
      rc = OX_ETOO_LARGE;
    else if (e->vlen)
      memcpy(out, val, e->vlen); /* out may be NULL when cap is 0 */
  }
  if (!atomic_load_explicit(&e->ref, memory_order_relaxed))
    atomic_store_explicit(&e->ref, 1, memory_order_relaxed);
  pthread_rwlock_unlock(&s->lock);
  atomic_fetch_add_explicit(&s->hits, 1, memory_order_relaxed);
  return rc;
}

int ox_l1_get(ox_l1_t *c, ox_slice_t key, int64_t now_ms, void *out, size_t cap, size_t *len) {
  if (!c) return OX_ENOT_FOUND;
  return lookup(c, key, now_ms, out, cap, len, NULL, NULL);
}

int ox_l1_view(ox_l1_t *c, ox_slice_t key, int64_t now_ms, ox_l1_view_fn fn, void *arg) {
  if (!c) return OX_ENOT_FOUND;
  return lookup(c, key, now_ms, NULL, 0, NULL, fn, arg);
}

/* ---- writes ------------------------------------------------------------------------------- */

int ox_l1_put(ox_l1_t *c, ox_slice_t key, const void *val, size_t len, int64_t ttl_ms,
              int64_t now_ms) {
  if (key.len == 0 || ttl_ms < 0) return OX_EINVALID;
  if (!c) return 0;
  if (key.len > OX_L1_MAX_KEY || len > OX_L1_MAX_VALUE) return OX_ETOO_LARGE;
  int64_t expire = INT64_MAX;
  if (ttl_ms != OX_L1_NO_TTL && __builtin_add_overflow(now_ms, ttl_ms, &expire)) return OX_EINVALID;
  size_t cost = OX_L1_ENTRY_COST(key.len, len);
  uint64_t h = ox_siphash(key.ptr, key.len, &c->key);
  shard_t *s = shard_of(c, h);
  /* The bucket array never shrinks below INITIAL_BUCKETS, so an entry that does not fit next to
   * that never will: refuse it before allocating anything. */
  if (cost > s->budget - INITIAL_BUCKETS * sizeof(entry_t *)) return OX_ETOO_LARGE;

  entry_t *e = malloc(offsetof(entry_t, data) + key.len + len);
  if (!e) return OX_ENOMEM;
  e->hash = h;
  e->expire_ms = expire;
  e->klen = (uint32_t)key.len;
  e->vlen = (uint32_t)len;
  atomic_init(&e->ref, 0);
  memcpy(e->data, key.ptr, key.len);
  if (len) memcpy(e->data + key.len, val, len);

  entry_t *freelist = NULL;
  int rc = 0;
  pthread_rwlock_wrlock(&s->lock);
  if (cost + (s->mask + 1) * sizeof(entry_t *) > s->budget) {
    /* does not fit next to this shard's (grown) bucket array even with the shard emptied:
     * refuse before touching anything */
    rc = OX_ETOO_LARGE;
    e->next = freelist;
    freelist = e;
  } else {
    entry_t *old = find(s, h, key);
    if (old) {
      atomic_store_explicit(&e->ref, atomic_load_explicit(&old->ref, memory_order_relaxed),
                            memory_order_relaxed);
      unlink_entry(s, old, &freelist);
      if (expired(old, now_ms)) s->expirations++;
    }
    make_room(s, cost, now_ms, &freelist); /* can always succeed: see the test above */
    size_t b = h & s->mask;
    e->next = s->buckets[b];
    s->buckets[b] = e;
    ring_insert(s, e);
    s->bytes += cost;
    s->entries++;
    maybe_grow(s);
  }
  pthread_rwlock_unlock(&s->lock);
  free_list(freelist);
  return rc;
}

int ox_l1_del(ox_l1_t *c, ox_slice_t key) {
  if (!c) return OX_ENOT_FOUND;
  uint64_t h = ox_siphash(key.ptr, key.len, &c->key);
  shard_t *s = shard_of(c, h);
  entry_t *freelist = NULL;
  pthread_rwlock_wrlock(&s->lock);
  entry_t *e = find(s, h, key);
  if (e) unlink_entry(s, e, &freelist);
  pthread_rwlock_unlock(&s->lock);
  free_list(freelist);
  return e ? 0 : OX_ENOT_FOUND;
}

size_t ox_l1_sweep(ox_l1_t *c, int64_t now_ms, size_t max_per_shard) {
  size_t total = 0;
  if (!c) return 0;
  for (unsigned i = 0; i < (1u << c->shard_bits); i++) {
    shard_t *s = &c->shards[i];
    entry_t *freelist = NULL;
    pthread_rwlock_wrlock(&s->lock);
    size_t steps = s->entries < max_per_shard ? s->entries : max_per_shard;
    entry_t *e = s->hand;
    /* e is always on the ring: only e itself is ever unlinked, after its successor is noted. */
    for (size_t n = 0; n < steps && s->hand; n++) {
      entry_t *nx = e->rnext;
      if (expired(e, now_ms)) {
        unlink_entry(s, e, &freelist);
        s->expirations++;
        total++;
      }
      e = nx;
    }
    pthread_rwlock_unlock(&s->lock);
    free_list(freelist);
  }
  return total;
}

void ox_l1_stats(ox_l1_t *c, ox_l1_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!c) return;
  for (unsigned i = 0; i < (1u << c->shard_bits); i++) {
    shard_t *s = &c->shards[i];
    pthread_rwlock_rdlock(&s->lock);
    out->hits += atomic_load_explicit(&s->hits, memory_order_relaxed);
    out->misses += atomic_load_explicit(&s->misses, memory_order_relaxed);
    out->evictions += s->evictions;
    out->expirations += s->expirations;
    out->bytes += s->bytes;
    out->entries += s->entries;
    out->budget += s->budget;
    pthread_rwlock_unlock(&s->lock);
  }
}
