/* l2.h: the feature store's L2 tier: an embedded LMDB environment on local disk (no server).
 *
 * Three databases in one environment (a directory holding data.mdb and lock.mdb):
 * - "rows":   key -> blob (a feature row; the caller chooses the encoding);
 * - "events": an entity's recent events. Key = u16 big-endian entity length, the entity bytes,
 *   the event time as 8 big-endian bytes of (uint64)ts_ms ^ 2^63 (so signed times sort), and a
 *   u32 big-endian sequence number; value = the event payload (a blob, e.g. the 24-byte record of
 *   features/velocity.h). The length prefix makes one entity's keys a contiguous range no other
 *   entity's keys fall into ("u1" and "u12" never interleave), ordered by (ts, seq), so a scan is
 *   one cursor seek plus sequential steps. seq numbers events with equal (entity, ts) in
 *   insertion order, 0, 1, 2, ...; the writer assigns it from the last stored key, so it stays
 *   unique across restarts.
 * - "ids":    idempotency keys (the caller's event ids): "i" + id -> 8-byte big-endian ms (when
 *   the id may be forgotten: see "Expiry"), and "t" + those 8 bytes + id -> empty, the same set
 *   ordered by time so a purge walks only what it deletes (a B-tree: no hash an attacker could
 *   aim at).
 *
 * Reads are zero-copy: rows and payloads are handed out as slices of the memory map, valid inside
 * the read transaction (the callback, or until ox_l2_read_end). Each reading thread owns an
 * ox_l2_reader_t: one read-only transaction and one cursor, created once (that is when the
 * reader slot is taken, so a too-small max_readers fails at start-up, never under load) and then
 * only reset and renewed around each read, which costs a few hundred ns instead of a
 * begin/abort. The environment is opened with MDB_NOTLS so a reader may move between threads
 * (one at a time) and does not tie a slot to a thread, and with MDB_NORDAHEAD (point reads:
 * read-ahead would only evict useful pages once the data outgrows RAM). Slots left behind by
 * processes that died are reclaimed at open (mdb_reader_check).
 *
 * Writes are asynchronous through ONE writer thread (LMDB allows one write transaction at a
 * time anyway): put_row, del_row, append_event and purge_before queue an owned copy of the
 * operation (bounded queue: OX_EUNAVAILABLE when full, the caller drops the write) and return.
 * The writer takes up to batch_max_ops operations, waiting at most batch_wait_ms after the first
 * for more to arrive, applies them in one transaction and commits. A failed batch is aborted as a
 * whole; its error is counted and reported by the next ox_l2_flush. ox_l2_flush is the barrier:
 * it returns once everything queued before it is committed.
 *
 * Groups: ox_l2_commit applies a group of writes (ox_l2_group_t, built by the caller) in ONE
 * transaction of its own and waits for it: all of it is committed, or none of it (across a
 * crash too: an LMDB transaction is atomic), and its error is its own (not reported to flush).
 * A group is not split by batch_max_ops; its size is bounded by what the caller puts in it.
 *
 * Size: the memory map starts at map_initial (by default 64 MiB or the file's size, whichever is
 * larger, at most map_size) and doubles when a transaction finds it full (MDB_MAP_FULL: the
 * transaction is aborted whole, the map grown, and the transaction applied again), up to
 * map_size. A transaction that does not fit in map_size fails with OX_ESTORE_FULL and stores
 * nothing. Growing remaps the file (mdb_env_set_mapsize, which LMDB allows only while this
 * process has no transaction open): the writer takes a lock that every read snapshot holds
 * shared (ox_l2_read_begin to ox_l2_read_end, or one read call), so it waits for the snapshots
 * in progress to end and new ones wait for the remap (microseconds; only when the map grows).
 * Never hold a snapshot while waiting for a write (flush, commit): the writer may need it.
 *
 * Expiry: ox_l2_purge_before(cutoff) deletes, per entity, every event with ts < cutoff except
 * the newest of them (largest (ts, seq) below cutoff: the entity's "anchor"). What survives is
 * exactly the events with ts >= cutoff plus each entity's anchor, so the time since an entity's
 * last event stays exact for any time >= cutoff while the store stays bounded per entity.
 * Ids whose time (see ox_l2_group_put_id) is below the cutoff are forgotten by the same purge.
 * Entities whose name begins with '~' are never purged: they are reserved for the caller's own
 * indexes, whose events may carry old times. Deletions run in transactions of at most 10,000 so
 * other writes are not held up for long; a purge interrupted by an error leaves a consistent
 * store (each transaction deletes only events that are not anchors), and purging again with the
 * same cutoff deletes nothing. With retention_ms set the writer also purges right after open and
 * then every purge_every_ms, with cutoff = wall-clock ms - retention_ms (events' ts must then be
 * Unix epoch ms).
 *
 * Error codes from LMDB never escape this module: they are logged and mapped to project codes
 * (MDB_NOTFOUND -> OX_ENOT_FOUND, MDB_MAP_FULL at map_size -> OX_ESTORE_FULL, MDB_BAD_VALSIZE ->
 * OX_ETOO_LARGE, MDB_READERS_FULL -> OX_EUNAVAILABLE, system errors -> -errno, anything else ->
 * OX_EINTERNAL).
 */
#ifndef OX_FEATURES_L2_H
#define OX_FEATURES_L2_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define OX_L2_MAX_KEY 511           /* LMDB's default maximum key size */
#define OX_L2_MAX_ENTITY (511 - 14) /* entity bytes left after the prefix, ts and seq */
#define OX_L2_MAX_VALUE (16u << 20) /* bytes per row or event payload */
#define OX_L2_MAX_ID 128            /* bytes of an idempotency key (ox_l2_group_put_id) */

typedef enum {
  OX_L2_SYNC_DATA = 0, /* (default) fsync data and meta on every commit: a commit that returned
                          survives an OS crash or power loss */
  OX_L2_SYNC_FULL = OX_L2_SYNC_DATA, /* the same (kept for callers that name it) */
  OX_L2_SYNC_NOMETA = 1, /* MDB_NOMETASYNC: data fsynced on every commit, the meta page only with
                            the next commit: an OS crash or power loss may lose the last commit
                            (the store stays consistent, as of the commit before); one fsync a
                            commit instead of two */
  OX_L2_SYNC_NONE = 2,   /* MDB_NOSYNC: a process crash loses nothing, an OS crash may lose or
                            corrupt the database; for tmpfs, tests and rebuildable caches */
} ox_l2_sync_t;

/* Zero fields take the defaults in brackets. */
typedef struct {
  size_t map_size;         /* maximum database size in bytes: the map grows up to it [1 GiB] */
  size_t map_initial;      /* the map's first size [64 MiB or the file's size if larger, at
                              most map_size] */
  unsigned max_readers;    /* reader slots: readers the process may open [126]; size it for the
                              worker threads plus tools (mdb_stat) */
  unsigned batch_max_ops;  /* operations per write transaction [1024] */
  unsigned batch_wait_ms;  /* wait for more operations after the first of a batch [2] */
  size_t queue_max_ops;    /* queued operations before writes are refused [65536] */
  int64_t retention_ms;    /* purge events older than this, periodically, each entity's newest
                              kept (see "Expiry") [0: never] */
  unsigned purge_every_ms; /* period of that purge [60000] */
  ox_l2_sync_t sync;
} ox_l2_opts_t;

typedef struct ox_l2 ox_l2_t;
typedef struct ox_l2_reader ox_l2_reader_t;

typedef struct {
  uint64_t enqueued;  /* operations accepted by put_row/del_row/append_event/purge_before */
  uint64_t rejected;  /* operations refused because the queue was full or closing */
  uint64_t committed; /* operations committed */
  uint64_t failed;    /* operations lost in failed batches */
  uint64_t batches;   /* write transactions committed */
  uint64_t purged;    /* events deleted by purges */
  uint64_t queued;    /* operations waiting now */
} ox_l2_stats_t;

/* Opens (creating if needed: the directory, mode 0700, and the databases) the environment in
 * directory path and starts the writer thread. opts may be NULL (all defaults).
 * Returns 0 and *out (owned, closed by ox_l2_close), or an error (logged with LMDB's message). */
int ox_l2_open(const char *path, const ox_l2_opts_t *opts, ox_l2_t **out);

/* Stops the writer after it commits everything queued, then closes the environment. Every
 * reader must have been closed and no other call may be running. NULL is allowed. */
void ox_l2_close(ox_l2_t *l2);

/* ---- writes (asynchronous; any thread) ------------------------------------------------------ */

/* Each copies its arguments into one queued operation and returns without waiting.
 * Returns 0; OX_ETOO_LARGE (key over OX_L2_MAX_KEY, entity over OX_L2_MAX_ENTITY, value over
 * OX_L2_MAX_VALUE); OX_EINVALID (empty key or entity); OX_EUNAVAILABLE (queue full, or closing);
 * OX_ENOMEM. The effect is visible to readers after the batch commits (ox_l2_flush to wait). */
int ox_l2_put_row(ox_l2_t *l2, ox_slice_t key, const void *val, size_t len);
int ox_l2_del_row(ox_l2_t *l2, ox_slice_t key);
int ox_l2_append_event(ox_l2_t *l2, ox_slice_t entity, int64_t ts_ms, const void *payload,
                       size_t len);
/* Deletes the events with ts_ms < cutoff_ms of every entity not beginning with '~', except
 * each entity's newest such event (see "Expiry" above). */
int ox_l2_purge_before(ox_l2_t *l2, int64_t cutoff_ms);

/* Waits until every operation queued before this call has been committed (or failed).
 * Returns 0 if all operations since the previous flush succeeded, else the first error
 * (e.g. OX_ESTORE_FULL when the map is full at map_size). Never refused for a full queue. */
int ox_l2_flush(ox_l2_t *l2);

void ox_l2_stats(ox_l2_t *l2, ox_l2_stats_t *out);

/* The database's size: *used = bytes of the file in use (pages up to the last one used, free
 * pages inside included: what a full map is measured by), *map = the map's current size,
 * *max = map_size (what it may grow to). Any thread. */
void ox_l2_usage(ox_l2_t *l2, uint64_t *used, uint64_t *map, uint64_t *max);

/* Writes a consistent copy of the environment (one read snapshot, free pages left out: LMDB's
 * compacting copy) to fd, as a data.mdb file that ox_l2_open can open. Blocks for the copy's
 * duration; writers go on meanwhile (a remap waits for it). 0 or an error. */
int ox_l2_copy_fd(ox_l2_t *l2, int fd);

/* ---- groups: all-or-nothing writes --------------------------------------------------------- */

/* A list of writes built by one thread, applied by ox_l2_commit. Records are packed in one
 * growing buffer (no allocation per write). */
typedef struct ox_l2_group ox_l2_group_t;

/* Returns 0 and *out (owned, freed by ox_l2_group_destroy) or OX_ENOMEM. */
int ox_l2_group_create(ox_l2_group_t **out);
/* NULL is allowed. */
void ox_l2_group_destroy(ox_l2_group_t *g);
/* Each appends one write (arguments copied) and returns 0, or the errors of ox_l2_put_row /
 * ox_l2_append_event (OX_EINVALID, OX_ETOO_LARGE, OX_ENOMEM); the group is unchanged then. */
int ox_l2_group_put_row(ox_l2_group_t *g, ox_slice_t key, const void *val, size_t len);
int ox_l2_group_append_event(ox_l2_group_t *g, ox_slice_t entity, int64_t ts_ms,
                             const void *payload, size_t len);
/* Records idempotency key id (1..OX_L2_MAX_ID bytes) as stored, to be remembered until a purge
 * with a cutoff above until_ms. An id already stored makes the whole group fail with
 * OX_EINVALID (check with ox_l2_has_id first, with writes of ids serialized by the caller). */
int ox_l2_group_put_id(ox_l2_group_t *g, ox_slice_t id, int64_t until_ms);
/* Writes in the group. */
size_t ox_l2_group_len(const ox_l2_group_t *g);

/* Applies g in one transaction and waits for its commit (see "Groups"). g stays the caller's
 * and unchanged. Returns 0 (all committed; an empty group commits nothing), OX_ESTORE_FULL
 * (does not fit in map_size), OX_EUNAVAILABLE (closing), or another error: nothing of g is
 * stored then. Never refused for a full queue. */
int ox_l2_commit(ox_l2_t *l2, const ox_l2_group_t *g);

/* ---- reads (one reader per thread at a time) --------------------------------------------- */

/* Creates a reader: takes one of max_readers slots. Returns 0 and *out (owned, closed by
 * ox_l2_reader_close), OX_EUNAVAILABLE if every slot is taken, OX_ENOMEM. */
int ox_l2_reader_open(ox_l2_t *l2, ox_l2_reader_t **out);
/* Releases the reader's slot. NULL is allowed. */
void ox_l2_reader_close(ox_l2_reader_t *r);

/* Optional: opens a snapshot that the reads below then share (several lookups that must agree)
 * until ox_l2_read_end; slices handed out stay valid until then. Without it each read call
 * takes its own snapshot. Returns 0 or an error; begin/end do not nest. */
int ox_l2_read_begin(ox_l2_reader_t *r);
void ox_l2_read_end(ox_l2_reader_t *r);

/* 1 if idempotency key id is stored, 0 if not, or an error. */
int ox_l2_has_id(ox_l2_reader_t *r, ox_slice_t id);

/* Receives a row in place: val is valid only during the call (or until ox_l2_read_end). */
typedef void (*ox_l2_row_fn)(void *arg, ox_slice_t val);

/* Looks key up; calls fn(arg, value) on a hit. Returns 0, OX_ENOT_FOUND, or an error.
 * Allocates nothing. */
int ox_l2_get_row(ox_l2_reader_t *r, ox_slice_t key, ox_l2_row_fn fn, void *arg);

/* Looks key up and copies the value: as ox_l1_get (0 with the value in out[0..*len); OX_ETOO_LARGE
 * with *len set when cap is too small; OX_ENOT_FOUND). */
int ox_l2_get_row_copy(ox_l2_reader_t *r, ox_slice_t key, void *out, size_t cap, size_t *len);

typedef struct {
  int64_t ts_ms;
  uint32_t seq;       /* insertion order among the entity's events with the same ts_ms */
  ox_slice_t payload; /* borrowed from the map: valid only during the callback (or until
                         ox_l2_read_end); no alignment guarantee, decode with memcpy */
} ox_l2_event_t;

/* Receives one event; returns 0 to go on, anything else to stop the scan. */
typedef int (*ox_l2_event_fn)(void *arg, const ox_l2_event_t *ev);

/* Calls fn for each event of entity with since_ms <= ts_ms <= until_ms, in (ts_ms, seq) order.
 * Returns the number of events passed to fn (>= 0), or an error. Allocates nothing. */
int ox_l2_scan_events(ox_l2_reader_t *r, ox_slice_t entity, int64_t since_ms, int64_t until_ms,
                      ox_l2_event_fn fn, void *arg);

#endif
