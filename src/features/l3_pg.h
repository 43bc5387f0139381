/* l3_pg.h: the PostgreSQL half of the remote feature tier (L3): one table of feature rows
 *   features(entity text PRIMARY KEY, value bytea, updated_at timestamptz NOT NULL DEFAULT now())
 * read through prepared statements, written through with an upsert, bulk-loaded from CSV with
 * COPY, behind a circuit breaker.
 *
 * Deadlines: every call takes the caller's deadline (absolute CLOCK_MONOTONIC ns, the clock of
 * ox_mono_ns()). Connections are non-blocking (PQconnectStartParams/PQconnectPoll,
 * PQsetnonblocking) and every wait is a poll() on the connection's socket bounded by the time
 * left, so a call never blocks past min(deadline, start + command_timeout_ms); connecting is
 * bounded by connect_timeout_ms as well. A call that runs out of time drops its connection (libpq
 * has no cancel that cannot block: PQcancel opens a second connection synchronously) and the slot
 * reconnects on its next use; the abandoned statement is ended on the server by
 * statement_timeout, which every connection sets on connect. A statement the server cancels
 * (statement_timeout) returns OX_ETIMEOUT with the connection kept.
 *
 * Connections: a fixed pool, checked out lock-free as in l3_redis.h (l3_pool.h; size it to the
 * calling threads; no free slot = OX_EUNAVAILABLE at once). Opened lazily; statements are
 * prepared on each connection on first use. Before use an idle connection is polled (zero
 * timeout); if the server closed it (restart, pg_terminate_backend) the slot reconnects instead of
 * failing the call. Server notices go to the debug log, not to stderr.
 *
 * conninfo is any libpq connection string or URI; onnxd adds application_name=onnxd and
 * gssencmode=disable (no Kerberos look-up on the request path) unless conninfo sets them. Use a
 * numeric host (or hostaddr): name resolution in libpq blocks.
 *
 * Results: 0 / a hit count, OX_ENOT_FOUND (get: no row, or a NULL value), OX_ETIMEOUT,
 * OX_EUNAVAILABLE (breaker open, pool exhausted, server shutting down/starting/overloaded),
 * -ECONNREFUSED / -ECONNRESET (connection failed or broke), OX_EINVALID (an entity the server
 * refuses, e.g. not valid UTF-8 or containing NUL), OX_EINTERNAL (any other SQL error, e.g.
 * a missing table), OX_ENOMEM. Only the first group and connection errors count against the
 * breaker; admin calls (schema, load, exec) bypass it.
 */
#ifndef OX_FEATURES_L3_PG_H
#define OX_FEATURES_L3_PG_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"
#include "features/breaker.h"
#include "features/l3_pool.h"

typedef struct {
  const char *conninfo;      /* required, e.g. "host=127.0.0.1 port=5432 dbname=x user=y" */
  const char *table;         /* NULL = "features"; [A-Za-z_][A-Za-z0-9_]*, optionally schema. */
  int pool_size;             /* 0 = 8 */
  int connect_timeout_ms;    /* 0 = 1000; cut shorter by the call's deadline */
  int command_timeout_ms;    /* cap on one read/write call whatever its deadline; 0 = 500 */
  int statement_timeout_ms;  /* SET statement_timeout on connect; 0 = 1000, < 0 = server's */
  ox_breaker_opts_t breaker; /* zero fields take the breaker's defaults */
} ox_l3_pg_opts_t;

/* connects, connect_failures, dropped, stale, pool_exhausted, breaker: see l3_pool.h. */
typedef ox_l3_stats_t ox_l3_pg_stats_t;

typedef struct ox_l3_pg ox_l3_pg_t;

/* libpq is not linked: it is loaded (dlopen "libpq.so.5") on the first call of this function,
 * which ox_l3_pg_create makes; main.c calls it at start-up when --postgres is given, so that a
 * missing libpq stops onnxd at once with a clear message. Thread-safe; the outcome of the first
 * call is final. 0, or OX_EUNAVAILABLE with the loader's reason in err (err may be NULL). */
int ox_l3_pg_load_library(char *err, size_t errcap);

/* Creates the pool (no connection yet; strings copied). 0, OX_EINVALID (no conninfo, bad table
 * name, bad numbers), OX_EUNAVAILABLE (libpq cannot be loaded: ox_l3_pg_load_library says why)
 * or OX_ENOMEM. Owned: ox_l3_pg_destroy once no call is running. */
int ox_l3_pg_create(const ox_l3_pg_opts_t *opts, ox_l3_pg_t **out);
void ox_l3_pg_destroy(ox_l3_pg_t *pg);

/* SELECT value FROM table WHERE entity = $1. 0: the value is appended to out (caller-owned);
 * OX_ENOT_FOUND: no row or a NULL value; errors as above. Thread-safe. */
int ox_l3_pg_get(ox_l3_pg_t *pg, ox_slice_t entity, ox_buf_t *out, int64_t deadline_ns);

/* n entities in one statement (unnest ... WITH ORDINALITY JOIN table). Values are appended to
 * out; vals[i] points into out->data (valid until out next changes) or is {NULL, 0} for a miss.
 * Returns the number of hits (>= 0) or an error (vals undefined). n == 0 returns 0, no call. */
int ox_l3_pg_mget(ox_l3_pg_t *pg, const ox_slice_t *entities, size_t n, ox_buf_t *out,
                  ox_slice_t *vals, int64_t deadline_ns);

/* Write-through upsert: INSERT ... ON CONFLICT (entity) DO UPDATE, updated_at = now().
 * 0 or an error. Thread-safe. */
int ox_l3_pg_put(ox_l3_pg_t *pg, ox_slice_t entity, ox_slice_t value, int64_t deadline_ns);

/* Admin: CREATE TABLE IF NOT EXISTS for the table above. 0 or an error. No breaker, no
 * command_timeout cap (the deadline alone bounds it). */
int ox_l3_pg_ensure_schema(ox_l3_pg_t *pg, int64_t deadline_ns);

/* Admin: bulk upsert from a CSV file of "entity,value" lines (value in bytea text input form:
 * "\x0a0b..." hex, or plain text), the first line skipped when header is non-zero. One
 * transaction: COPY into a temporary table, then INSERT ... ON CONFLICT DO UPDATE into the table
 * (an entity twice in one file is an error). *rows (may be NULL) receives the rows copied.
 * 0, -errno (opening/reading the file), or an error as above; on error nothing is loaded. */
int ox_l3_pg_load_csv(ox_l3_pg_t *pg, const char *path, int header, int64_t deadline_ns,
                      uint64_t *rows);

/* Admin/test: runs sql (one or more statements, simple protocol, results discarded) on a pooled
 * connection. 0 or an error as above. No breaker, no command_timeout cap. */
int ox_l3_pg_exec(ox_l3_pg_t *pg, const char *sql, int64_t deadline_ns);

/* The tier's breaker (borrowed, lives as long as pg). */
ox_breaker_t *ox_l3_pg_breaker(ox_l3_pg_t *pg);
void ox_l3_pg_stats(ox_l3_pg_t *pg, ox_l3_pg_stats_t *out);

#endif
