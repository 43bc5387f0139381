/* l1.h: the feature store's L1 tier, a sharded in-process hash map with TTLs and a memory bound.
 *
 * Maps a key (entity type and entity id bytes, by convention "type:id", e.g. "user:u123") to an
 * opaque value blob (a feature row, an entity's recent events; the caller chooses the encoding).
 * Built for request-time lookups by many worker threads: a read takes one shard's read lock,
 * copies the value out (or lends it to a callback) and allocates nothing.
 *
 * Design
 * - Shards: a power-of-two count (64 by default), chosen by the top bits of a keyed 64-bit
 *   hash (SipHash-2-4, core/siphash.h, under a random key per map: clients choose keys but
 *   cannot aim them at one shard or chain); each has its own rwlock (writer-preferring, so a
 *   stream of readers cannot starve a put), chained bucket array (grown x2 at load factor 1)
 *   and memory budget mem_bytes / shards. There is no global lock.
 * - Memory bound: every entry is charged OX_L1_ENTRY_COST(klen, vlen) bytes (header, key, value
 *   and glibc malloc's chunk rounding), and bucket arrays 8 bytes per bucket. A put that would
 *   take its shard over budget first reclaims expired entries and evicts others, so the bytes
 *   reported by ox_l1_stats never exceed mem_bytes. A value too big for one shard's budget is
 *   refused (OX_ETOO_LARGE).
 * - Eviction: CLOCK per shard (second chance, an approximation of LRU). Entries sit on a ring;
 *   a read sets the entry's reference bit (a relaxed atomic store, and only when it is clear,
 *   so hot entries do not bounce cache lines between readers); the hand skips and clears
 *   referenced entries and evicts the first unreferenced one. New entries join just behind the
 *   hand, so they get a full turn before they can be evicted.
 * - TTL: an entry is live while now_ms < its expiry. An expired entry is a miss at once and is
 *   reclaimed by whichever comes first: the get that finds it (which briefly takes the write
 *   lock), the CLOCK hand, ox_l1_sweep, a put or a del of the same key.
 * - Times are caller-supplied milliseconds on any clock every caller shares; the map never reads
 *   a clock itself (tests drive time directly).
 */
#ifndef OX_FEATURES_L1_H
#define OX_FEATURES_L1_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define OX_L1_DEFAULT_SHARDS 64
#define OX_L1_MAX_SHARDS 4096
#define OX_L1_MAX_KEY 65535u        /* bytes */
#define OX_L1_MAX_VALUE 0x7fffffffu /* bytes; the memory budget is usually the tighter limit */
#define OX_L1_NO_TTL 0              /* ttl_ms meaning "never expires" */

/* Bytes charged for an entry with a klen-byte key and a vlen-byte value: a 56-byte header plus
 * the bytes, rounded as glibc malloc rounds a chunk (8-byte size field, 16-byte multiple). */
#define OX_L1_ENTRY_COST(klen, vlen) \
  ((((size_t)(klen) + (size_t)(vlen) + 56 + 8 + 15) & ~(size_t)15))

/* A NULL map is a disabled cache (every call below but create accepts it): get and view miss
 * (OX_ENOT_FOUND, nothing counted), put stores nothing and returns 0 once its arguments are
 * valid, del returns OX_ENOT_FOUND, sweep 0, stats all zero. */
typedef struct ox_l1 ox_l1_t;

typedef struct {
  uint64_t hits;        /* gets/views that found a live entry (including OX_ETOO_LARGE ones) */
  uint64_t misses;      /* gets/views that found nothing, or an expired entry */
  uint64_t evictions;   /* live entries removed to make room */
  uint64_t expirations; /* expired entries reclaimed (by get, hand, sweep, put or del) */
  uint64_t bytes;       /* bytes charged now: entries plus bucket arrays; <= budget */
  uint64_t entries;     /* entries stored now (expired ones not yet reclaimed included) */
  uint64_t budget;      /* the bound: mem_bytes rounded down to a multiple of the shard count */
} ox_l1_stats_t;

/* Creates an empty map bounded to mem_bytes, split over `shards` shards (0 means
 * OX_L1_DEFAULT_SHARDS; other values are rounded up to a power of two, at most
 * OX_L1_MAX_SHARDS). Each shard needs a budget of at least 4 KiB.
 * Returns 0 and *out (owned by the caller, freed by ox_l1_destroy), OX_EINVALID for a budget
 * too small for the shard count, or OX_ENOMEM. */
int ox_l1_create(size_t mem_bytes, unsigned shards, ox_l1_t **out);

/* Frees the map and every entry. No other call may be running or follow. NULL is allowed. */
void ox_l1_destroy(ox_l1_t *c);

/* Looks key up at time now_ms. On a live entry: *len = the value's length and, if it fits in
 * cap bytes, the value is copied to out and 0 is returned; if not, out is untouched and
 * OX_ETOO_LARGE is returned (call again with a buffer of *len bytes). OX_ENOT_FOUND when the
 * key is absent or expired (*len untouched). Allocates nothing; safe from any thread. */
int ox_l1_get(ox_l1_t *c, ox_slice_t key, int64_t now_ms, void *out, size_t cap, size_t *len);

/* fn receives a borrowed view of a value, valid only during the call, made under the shard's
 * read lock: it must be short, and must not call into the same map (a put from inside it can
 * deadlock). */
typedef void (*ox_l1_view_fn)(void *arg, const void *val, size_t len);

/* Like ox_l1_get, but hands the value to fn(arg, val, len) in place instead of copying it.
 * Returns 0 after fn ran, or OX_ENOT_FOUND (fn not called). */
int ox_l1_view(ox_l1_t *c, ox_slice_t key, int64_t now_ms, ox_l1_view_fn fn, void *arg);

/* Stores a copy of val[0..len) under a copy of key, replacing any previous value; it expires at
 * now_ms + ttl_ms (ttl_ms == OX_L1_NO_TTL: never). Evicts other entries of the same shard as
 * needed to stay within the budget. Allocates the entry before taking the shard lock and frees
 * whatever it replaced or evicted after releasing it.
 * Returns 0; OX_EINVALID (negative ttl, now_ms + ttl_ms overflowing, empty key);
 * OX_ETOO_LARGE (key over OX_L1_MAX_KEY, value over OX_L1_MAX_VALUE, or the entry alone over
 * the shard's budget; nothing changed); OX_ENOMEM. */
int ox_l1_put(ox_l1_t *c, ox_slice_t key, const void *val, size_t len, int64_t ttl_ms,
              int64_t now_ms);

/* Removes key. Returns 0 if an entry was stored (live, or expired and not yet reclaimed), or
 * OX_ENOT_FOUND. */
int ox_l1_del(ox_l1_t *c, ox_slice_t key);

/* Reclaims expired entries: walks up to max_per_shard entries of each shard from its CLOCK hand
 * (without touching reference bits). Meant for a periodic timer so that expired entries of keys
 * nobody reads do not hold memory until eviction. Returns the number reclaimed. */
size_t ox_l1_sweep(ox_l1_t *c, int64_t now_ms, size_t max_per_shard);

/* Fills *out with counters summed over the shards (each shard read under its lock: the totals
 * are consistent per shard, not across shards). */
void ox_l1_stats(ox_l1_t *c, ox_l1_stats_t *out);

#endif
