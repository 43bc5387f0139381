/* l3_pg.c: see l3_pg.h.
 *
 * A call is: pg_begin (l3_pool: deadline, breaker, slot checkout; then liveness check, connect if
 * needed), prepare the statement on this connection if it is the first use, PQsendQueryPrepared,
 * flush and read the results with poll() against the deadline, pg_end (drop the connection unless
 * it is idle and healthy; l3_pool: breaker outcome, check the slot in). Whether to drop is read
 * from the connection itself (PQstatus, PQtransactionStatus), so a timed-out statement that is
 * still running, a broken socket and an aborted COPY all end the same way.
 *
 * Every libpq call goes through ox_pq (l3_pg_lib.h): libpq is loaded at run time, not linked.
 */
#include "features/l3_pg.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/text.h"
#include "features/l3_pg_lib.h"
#include "features/l3_pool.h"

#define OID_TEXT 25
#define OID_BYTEA 17

enum { ST_GET, ST_MGET, ST_PUT, ST_COUNT };

static const struct {
  const char *name, *fmt; /* fmt: "@T" stands for the table */
  int nparams;
  Oid types[2];
} pg_stmts[ST_COUNT] = {
    [ST_GET] = {"ox_l3_get", "SELECT value FROM @T WHERE entity = $1", 1, {OID_TEXT}},
    [ST_MGET] = {"ox_l3_mget",
                 "SELECT k.i, f.value FROM unnest($1::text[]) WITH ORDINALITY AS k(entity, i) "
                 "JOIN @T f ON f.entity = k.entity",
                 1,
                 {0}},
    [ST_PUT] = {"ox_l3_put",
                "INSERT INTO @T AS f (entity, value, updated_at) VALUES ($1, $2, now()) "
                "ON CONFLICT (entity) DO UPDATE SET value = EXCLUDED.value, "
                "updated_at = EXCLUDED.updated_at",
                2,
                {OID_TEXT, OID_BYTEA}},
};

typedef struct {
  _Alignas(64) ox_l3_slot_t base;
  PGconn *c;         /* NULL when not connected */
  unsigned prepared; /* bit per ST_* prepared on c */
  ox_buf_t scratch;  /* mget's array literal; reused */
} pg_slot_t;

struct ox_l3_pg {
  char *conninfo, *table;
  char *sql[ST_COUNT];
  int statement_timeout_ms;
  ox_l3_pool_t pool; /* of pg_slot_t */
};

/* The call's state (l3_pool.h). An error result sets classified and outcome (pg_check). */
typedef ox_l3_call_t pg_call_t;

static inline pg_slot_t *pg_slot(const pg_call_t *call) {
  return call->slot;
}

/* ---- I/O -------------------------------------------------------------------------------- */

/* Sends what libpq has buffered (non-blocking mode), reading input meanwhile as libpq asks. */
static int pg_flush(PGconn *c, int64_t deadline) {
  for (;;) {
    int r = ox_pq.PQflush(c);
    if (r == 0) return 0;
    if (r < 0) return -ECONNRESET;
    short ev = 0;
    int rc = ox_l3_wait_fd(ox_pq.PQsocket(c), POLLOUT | POLLIN, deadline, &ev);
    if (rc) return rc;
    if ((ev & POLLIN) && !ox_pq.PQconsumeInput(c)) return -ECONNRESET;
  }
}

/* Reads the results of the command just sent until libpq has no more (or a COPY starts).
 * *first receives the first error result if any, else the first result (owned by the caller:
 * PQclear; may be NULL). 0, OX_ETIMEOUT, or -ECONNRESET when the connection broke. */
static int pg_results(PGconn *c, int64_t deadline, PGresult **first) {
  *first = NULL;
  for (;;) {
    while (ox_pq.PQisBusy(c)) {
      int rc = ox_l3_wait_fd(ox_pq.PQsocket(c), POLLIN, deadline, NULL);
      if (rc) return rc;
      if (!ox_pq.PQconsumeInput(c)) return -ECONNRESET;
    }
    PGresult *res = ox_pq.PQgetResult(c);
    if (!res) return 0;
    ExecStatusType st = ox_pq.PQresultStatus(res);
    int is_err = st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
    if (!*first || (is_err && ox_pq.PQresultStatus(*first) != PGRES_FATAL_ERROR)) {
      ox_pq.PQclear(*first);
      *first = res;
    } else {
      ox_pq.PQclear(res);
    }
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT) return 0;
  }
}

/* libpq refused to queue a command: a broken connection, or a bug (a command in progress). */
static int pg_send_err(PGconn *c) {
  if (ox_pq.PQstatus(c) == CONNECTION_BAD) return -ECONNRESET;
  ox_warn("l3_pg: cannot send: %s", ox_pq.PQerrorMessage(c));
  return OX_EINTERNAL;
}

/* 0 when res has status want; otherwise the error code, and the breaker outcome in call. */
static int pg_check(pg_call_t *call, PGconn *c, const PGresult *res, ExecStatusType want) {
  if (res && ox_pq.PQresultStatus(res) == want) return 0;
  if (!res || ox_pq.PQstatus(c) == CONNECTION_BAD) return -ECONNRESET; /* outcome: failure */
  const char *code = ox_pq.PQresultErrorField(res, PG_DIAG_SQLSTATE);
  if (!code) code = "";
  call->classified = 1;
  int rc;
  if (strcmp(code, "57014") == 0) { /* query_canceled: statement_timeout */
    call->outcome = OX_BREAKER_TIMEOUT;
    rc = OX_ETIMEOUT;
  } else if (strncmp(code, "57P", 3) == 0 || strncmp(code, "53", 2) == 0) {
    call->outcome = OX_BREAKER_FAILURE; /* shutting down, starting up, out of resources */
    rc = OX_EUNAVAILABLE;
  } else if (strncmp(code, "08", 2) == 0) {
    call->outcome = OX_BREAKER_FAILURE;
    rc = -ECONNRESET;
  } else if (strncmp(code, "22", 2) == 0) { /* data exception: the entity or value */
    call->outcome = OX_BREAKER_IGNORED;
    rc = OX_EINVALID;
  } else {
    call->outcome = OX_BREAKER_IGNORED;
    rc = OX_EINTERNAL;
  }
  if (rc == OX_EINTERNAL || rc == OX_EUNAVAILABLE)
    ox_debug("l3_pg: %s %s", code, ox_pq.PQresultErrorMessage(res));
  return rc;
}

/* ---- pool ------------------------------------------------------------------------------- */

static void pg_drop(pg_slot_t *s) {
  if (!s->c) return;
  ox_pq.PQfinish(s->c); /* non-blocking connection: the Terminate message is sent if it fits */
  s->c = NULL;
  s->prepared = 0;
}

static void pg_notice(void *arg, const char *msg) {
  (void)arg;
  size_t n = strlen(msg);
  while (n && msg[n - 1] == '\n') n--;
  ox_debug("l3_pg: %.*s", (int)n, msg);
}

/* ---- connecting ------------------------------------------------------------------------- */

static int pg_connect(ox_l3_pg_t *pg, pg_slot_t *s, int64_t deadline) {
  deadline = ox_l3_pool_connect_deadline(&pg->pool, deadline);
  /* Keywords before dbname are defaults conninfo may override (libpq keeps the last one). */
  const char *kw[] = {"application_name", "gssencmode", "dbname", NULL};
  const char *val[] = {"onnxd", "disable", pg->conninfo, NULL};
  PGconn *c = ox_pq.PQconnectStartParams(kw, val, 1);
  if (!c) return OX_ENOMEM;
  int rc = 0;
  if (ox_pq.PQstatus(c) == CONNECTION_BAD) rc = -ECONNREFUSED;
  /* Before the first PQconnectPoll, behave as if it returned PGRES_POLLING_WRITING. */
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (!rc && st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) {
      rc = strstr(ox_pq.PQerrorMessage(c), "refused") ? -ECONNREFUSED : OX_EUNAVAILABLE;
      break;
    }
    rc = ox_l3_wait_fd(ox_pq.PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline,
                       NULL);
    if (!rc) st = ox_pq.PQconnectPoll(c);
  }
  if (!rc && ox_pq.PQsetnonblocking(c, 1) != 0) rc = OX_EINTERNAL;
  if (rc) {
    ox_l3_count(&pg->pool.connect_failures);
    const char *m = ox_pq.PQerrorMessage(c);
    size_t n = strlen(m);
    while (n && m[n - 1] == '\n') n--;
    ox_warn("l3_pg: connect: %s", rc == OX_ETIMEOUT ? "timed out" : n ? m : ox_strerror(rc));
    ox_pq.PQfinish(c);
    return rc;
  }
  ox_pq.PQsetNoticeProcessor(c, pg_notice, NULL);
  s->c = c;
  s->prepared = 0;
  if (pg->statement_timeout_ms > 0) {
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %d", pg->statement_timeout_ms);
    pg_call_t tmp = {0};
    PGresult *res = NULL;
    rc = ox_pq.PQsendQuery(c, sql) ? 0 : pg_send_err(c);
    if (!rc) rc = pg_flush(c, deadline);
    if (!rc) rc = pg_results(c, deadline, &res);
    if (!rc) rc = pg_check(&tmp, c, res, PGRES_COMMAND_OK);
    ox_pq.PQclear(res);
    if (rc) {
      ox_l3_count(&pg->pool.connect_failures);
      ox_warn("l3_pg: connect: setting statement_timeout: %s", ox_strerror(rc));
      pg_drop(s);
      return rc == OX_EINTERNAL ? OX_EUNAVAILABLE : rc;
    }
  }
  ox_l3_count(&pg->pool.connects);
  return 0;
}

/* ---- calls ------------------------------------------------------------------------------ */

static int pg_end(ox_l3_pg_t *pg, pg_call_t *call, int rc);

/* guarded: through the breaker and capped by command_timeout (the admin calls are not). */
static int pg_begin(ox_l3_pg_t *pg, int64_t deadline, int guarded, pg_call_t *call) {
  int rc = ox_l3_pool_begin(&pg->pool, deadline, guarded, call);
  if (rc) return rc;
  pg_slot_t *s = call->slot;
  /* Nothing arrives unprompted on our idle connections (no LISTEN, no SET after connect): a
   * readable one is the server closing it, its FATAL message followed by EOF. Reading the message
   * alone would leave libpq thinking the connection is fine until the next query fails, so a
   * readable idle connection is simply replaced. */
  if (s->c && !ox_l3_idle_ok(ox_pq.PQsocket(s->c))) {
    ox_l3_count(&pg->pool.stale);
    pg_drop(s);
  }
  if (!s->c) {
    rc = pg_connect(pg, s, call->deadline);
    if (rc) return pg_end(pg, call, rc);
  }
  return 0;
}

static int pg_end(ox_l3_pg_t *pg, pg_call_t *call, int rc) {
  pg_slot_t *s = call->slot;
  /* Keep the connection only if it is idle and healthy: a statement still running (timeout), a
   * broken socket or a transaction left open all drop it. */
  if (s->c && (ox_pq.PQstatus(s->c) != CONNECTION_OK ||
               ox_pq.PQtransactionStatus(s->c) != PQTRANS_IDLE || ox_pq.PQisBusy(s->c))) {
    ox_l3_count(&pg->pool.dropped);
    pg_drop(s);
  }
  return ox_l3_pool_end(&pg->pool, call, rc);
}

static int pg_prepare(ox_l3_pg_t *pg, pg_call_t *call, int st) {
  pg_slot_t *s = call->slot;
  if (s->prepared & (1u << st)) return 0;
  PGconn *c = s->c;
  const Oid *types = pg_stmts[st].types[0] ? pg_stmts[st].types : NULL;
  int rc = ox_pq.PQsendPrepare(c, pg_stmts[st].name, pg->sql[st], pg_stmts[st].nparams, types)
               ? 0
               : pg_send_err(c);
  PGresult *res = NULL;
  if (!rc) rc = pg_flush(c, call->deadline);
  if (!rc) rc = pg_results(c, call->deadline, &res);
  if (!rc) rc = pg_check(call, c, res, PGRES_COMMAND_OK);
  ox_pq.PQclear(res);
  if (!rc) s->prepared |= 1u << st;
  return rc;
}

/* Runs prepared statement st with binary parameters (lengths given) or, when lens is NULL, text
 * ones; binary results, which must have status want. *res owned by the caller. */
static int pg_run(ox_l3_pg_t *pg, pg_call_t *call, int st, const char *const *vals, const int *lens,
                  ExecStatusType want, PGresult **res) {
  *res = NULL;
  int rc = pg_prepare(pg, call, st);
  if (rc) return rc;
  static const int binary[2] = {1, 1};
  PGconn *c = pg_slot(call)->c;
  if (!ox_pq.PQsendQueryPrepared(c, pg_stmts[st].name, pg_stmts[st].nparams, vals, lens,
                                 lens ? binary : NULL, 1))
    return pg_send_err(c);
  rc = pg_flush(c, call->deadline);
  if (!rc) rc = pg_results(c, call->deadline, res);
  if (!rc) rc = pg_check(call, c, *res, want);
  return rc;
}

int ox_l3_pg_get(ox_l3_pg_t *pg, ox_slice_t entity, ox_buf_t *out, int64_t deadline_ns) {
  if (entity.len > INT_MAX) return OX_EINVALID;
  pg_call_t call;
  int rc = pg_begin(pg, deadline_ns, 1, &call);
  if (rc) return rc;
  const char *v[1] = {entity.ptr ? entity.ptr : ""}; /* NULL would mean SQL NULL */
  int l[1] = {(int)entity.len};
  PGresult *res = NULL;
  rc = pg_run(pg, &call, ST_GET, v, l, PGRES_TUPLES_OK, &res);
  if (!rc) {
    if (ox_pq.PQntuples(res) < 1 || ox_pq.PQgetisnull(res, 0, 0))
      rc = OX_ENOT_FOUND;
    else
      rc = ox_buf_append(out, ox_pq.PQgetvalue(res, 0, 0), (size_t)ox_pq.PQgetlength(res, 0, 0));
  }
  ox_pq.PQclear(res);
  return pg_end(pg, &call, rc);
}

/* {"a","b\"c"}: a text[] literal, NUL-terminated. Entities with NUL are refused. */
static int array_literal(ox_buf_t *b, const ox_slice_t *keys, size_t n) {
  b->len = 0;
  int rc = ox_buf_append(b, "{", 1);
  for (size_t i = 0; !rc && i < n; i++) {
    if (i) rc = ox_buf_append(b, ",", 1);
    if (!rc) rc = ox_buf_append(b, "\"", 1);
    for (size_t j = 0; !rc && j < keys[i].len; j++) {
      char ch = keys[i].ptr[j];
      if (ch == '\0') return OX_EINVALID;
      if (ch == '"' || ch == '\\') rc = ox_buf_append(b, "\\", 1);
      if (!rc) rc = ox_buf_append(b, &ch, 1);
    }
    if (!rc) rc = ox_buf_append(b, "\"", 1);
  }
  if (!rc) rc = ox_buf_append(b, "}", 2); /* with the terminating NUL */
  return rc;
}

/* Rows (ordinal int8 big-endian, value bytea) into out and vals. Returns hits or an error. */
static int mget_collect(const PGresult *res, size_t n, ox_buf_t *out, ox_slice_t *vals) {
  int rows = ox_pq.PQntuples(res);
  size_t total = 1; /* out->data non-NULL afterwards, so an empty hit is not a miss */
  for (int i = 0; i < rows; i++) {
    if (ox_pq.PQgetlength(res, i, 0) != 8) return OX_EINTERNAL;
    if (!ox_pq.PQgetisnull(res, i, 1)) total += (size_t)ox_pq.PQgetlength(res, i, 1);
  }
  int rc = ox_buf_reserve(out, total); /* no reallocation below: vals stay valid */
  if (rc) return rc;
  for (size_t i = 0; i < n; i++) vals[i] = (ox_slice_t){NULL, 0};
  int hits = 0;
  for (int i = 0; i < rows; i++) {
    const unsigned char *p = (const unsigned char *)ox_pq.PQgetvalue(res, i, 0);
    uint64_t ord = 0;
    for (int k = 0; k < 8; k++) ord = ord << 8 | p[k];
    if (ord < 1 || ord > n) return OX_EINTERNAL;
    if (ox_pq.PQgetisnull(res, i, 1) || vals[ord - 1].ptr) continue;
    size_t len = (size_t)ox_pq.PQgetlength(res, i, 1);
    vals[ord - 1] = (ox_slice_t){out->data + out->len, len};
    (void)ox_buf_append(out, ox_pq.PQgetvalue(res, i, 1), len);
    hits++;
  }
  return hits;
}

int ox_l3_pg_mget(ox_l3_pg_t *pg, const ox_slice_t *entities, size_t n, ox_buf_t *out,
                  ox_slice_t *vals, int64_t deadline_ns) {
  if (n == 0) return 0;
  if (n > INT_MAX) return OX_EINVALID;
  pg_call_t call;
  int rc = pg_begin(pg, deadline_ns, 1, &call);
  if (rc) return rc;
  PGresult *res = NULL;
  rc = array_literal(&pg_slot(&call)->scratch, entities, n);
  if (!rc) {
    const char *v[1] = {pg_slot(&call)->scratch.data};
    rc = pg_run(pg, &call, ST_MGET, v, NULL, PGRES_TUPLES_OK, &res);
  }
  if (!rc) rc = mget_collect(res, n, out, vals);
  ox_pq.PQclear(res);
  return pg_end(pg, &call, rc);
}

int ox_l3_pg_put(ox_l3_pg_t *pg, ox_slice_t entity, ox_slice_t value, int64_t deadline_ns) {
  if (entity.len > INT_MAX || value.len > INT_MAX) return OX_EINVALID;
  pg_call_t call;
  int rc = pg_begin(pg, deadline_ns, 1, &call);
  if (rc) return rc;
  const char *v[2] = {entity.ptr ? entity.ptr : "", value.ptr ? value.ptr : ""};
  int l[2] = {(int)entity.len, (int)value.len};
  PGresult *res = NULL;
  rc = pg_run(pg, &call, ST_PUT, v, l, PGRES_COMMAND_OK, &res);
  ox_pq.PQclear(res);
  return pg_end(pg, &call, rc);
}

/* ---- admin ------------------------------------------------------------------------------ */

/* One simple-protocol query string on the call's connection; every result must be OK. */
static int pg_simple(pg_call_t *call, const char *sql) {
  PGconn *c = pg_slot(call)->c;
  if (!ox_pq.PQsendQuery(c, sql)) return pg_send_err(c);
  int rc = pg_flush(c, call->deadline);
  PGresult *res = NULL;
  if (!rc) rc = pg_results(c, call->deadline, &res);
  if (!rc && res && ox_pq.PQresultStatus(res) == PGRES_TUPLES_OK)
    rc = 0;
  else if (!rc)
    rc = pg_check(call, c, res, PGRES_COMMAND_OK);
  ox_pq.PQclear(res);
  return rc;
}

int ox_l3_pg_exec(ox_l3_pg_t *pg, const char *sql, int64_t deadline_ns) {
  pg_call_t call;
  int rc = pg_begin(pg, deadline_ns, 0, &call);
  if (rc) return rc;
  return pg_end(pg, &call, pg_simple(&call, sql));
}

int ox_l3_pg_ensure_schema(ox_l3_pg_t *pg, int64_t deadline_ns) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "CREATE TABLE IF NOT EXISTS %s (entity text PRIMARY KEY, value bytea, "
           "updated_at timestamptz NOT NULL DEFAULT now())",
           pg->table);
  return ox_l3_pg_exec(pg, sql, deadline_ns);
}

/* Queues one COPY chunk (or the end when data is NULL), waiting for room as needed. */
static int copy_put(PGconn *c, const char *data, int n, int64_t deadline) {
  for (;;) {
    int r = data ? ox_pq.PQputCopyData(c, data, n) : ox_pq.PQputCopyEnd(c, NULL);
    if (r == 1) return 0;
    if (r < 0) return ox_pq.PQstatus(c) == CONNECTION_BAD ? -ECONNRESET : OX_EINTERNAL;
    short ev = 0; /* r == 0: libpq's buffer is full */
    int rc = ox_l3_wait_fd(ox_pq.PQsocket(c), POLLOUT | POLLIN, deadline, &ev);
    if (rc) return rc;
    if ((ev & POLLIN) && !ox_pq.PQconsumeInput(c)) return -ECONNRESET;
    if (ox_pq.PQflush(c) < 0) return -ECONNRESET;
  }
}

static uint64_t parse_u64(const char *s) {
  uint64_t v;
  int ovf;
  ox_dec_prefix(s, strlen(s), &v, &ovf);
  return ovf ? UINT64_MAX : v;
}

int ox_l3_pg_load_csv(ox_l3_pg_t *pg, const char *path, int header, int64_t deadline_ns,
                      uint64_t *rows) {
  FILE *f = fopen(path, "rb");
  if (!f) return -errno;
  pg_call_t call;
  int rc = pg_begin(pg, deadline_ns, 0, &call);
  if (rc) {
    fclose(f);
    return rc;
  }
  PGconn *c = pg_slot(&call)->c;
  char sql[512];
  rc = pg_simple(&call,
                 "BEGIN; CREATE TEMP TABLE ox_l3_load (entity text, value bytea) ON COMMIT DROP");
  if (!rc) {
    snprintf(sql, sizeof sql, "COPY ox_l3_load (entity, value) FROM STDIN WITH (FORMAT csv%s)",
             header ? ", HEADER true" : "");
    rc = ox_pq.PQsendQuery(c, sql) ? pg_flush(c, call.deadline) : pg_send_err(c);
  }
  PGresult *res = NULL;
  if (!rc) rc = pg_results(c, call.deadline, &res);
  if (!rc) rc = pg_check(&call, c, res, PGRES_COPY_IN);
  ox_pq.PQclear(res);
  res = NULL;
  if (!rc) {
    char buf[65536];
    size_t n;
    while (!rc && (n = fread(buf, 1, sizeof buf, f)) > 0)
      rc = copy_put(c, buf, (int)n, call.deadline);
    if (!rc && ferror(f)) {
      rc = -EIO;
      ox_pq.PQputCopyEnd(c, "read error"); /* aborts the COPY; the connection is dropped below */
    }
    if (!rc) rc = copy_put(c, NULL, 0, call.deadline);
    if (!rc) rc = pg_flush(c, call.deadline);
    if (!rc) rc = pg_results(c, call.deadline, &res);
    if (!rc) rc = pg_check(&call, c, res, PGRES_COMMAND_OK);
    if (!rc && rows) *rows = parse_u64(ox_pq.PQcmdTuples(res));
    ox_pq.PQclear(res);
  }
  if (!rc) {
    snprintf(sql, sizeof sql,
             "INSERT INTO %s AS f (entity, value, updated_at) SELECT entity, value, now() "
             "FROM ox_l3_load ON CONFLICT (entity) DO UPDATE SET value = EXCLUDED.value, "
             "updated_at = EXCLUDED.updated_at; COMMIT",
             pg->table);
    rc = pg_simple(&call, sql);
  }
  fclose(f);
  if (rc && rc != OX_ETIMEOUT && pg_slot(&call)->c)
    ox_warn("l3_pg: load %s: %s", path, ox_pq.PQerrorMessage(c));
  return pg_end(pg, &call, rc); /* an open transaction (any error) drops the connection */
}

/* ---- lifecycle and metrics -------------------------------------------------------------- */

static int table_ok(const char *t) {
  int dots = 0, start = 1;
  if (!*t || strlen(t) > 127) return 0;
  for (const char *p = t; *p; p++) {
    char ch = *p;
    if (ch == '.') {
      if (start || ++dots > 1) return 0;
      start = 1;
      continue;
    }
    int alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
    if (!alpha && !(ch >= '0' && ch <= '9' && !start)) return 0;
    start = 0;
  }
  return !start;
}

int ox_l3_pg_create(const ox_l3_pg_opts_t *opts, ox_l3_pg_t **out) {
  ox_l3_pg_opts_t o = opts ? *opts : (ox_l3_pg_opts_t){0};
  const char *table = o.table ? o.table : "features";
  if (!o.conninfo || !table_ok(table) || o.pool_size < 0 || o.pool_size > 4096 ||
      o.connect_timeout_ms < 0 || o.command_timeout_ms < 0)
    return OX_EINVALID;
  if (ox_l3_pg_load_library(NULL, 0)) return OX_EUNAVAILABLE;
  ox_l3_pg_t *pg = calloc(1, sizeof *pg);
  if (!pg) return OX_ENOMEM;
  pg->statement_timeout_ms = o.statement_timeout_ms ? o.statement_timeout_ms : 1000;
  pg->conninfo = strdup(o.conninfo);
  pg->table = strdup(table);
  int rc = (!pg->conninfo || !pg->table) ? OX_ENOMEM : 0;
  for (int i = 0; !rc && i < ST_COUNT; i++) {
    const char *fmt = pg_stmts[i].fmt, *at = strstr(fmt, "@T");
    ox_buf_t b;
    ox_buf_init(&b);
    rc = ox_buf_append(&b, fmt, (size_t)(at - fmt));
    if (!rc) rc = ox_buf_puts(&b, table);
    if (!rc) rc = ox_buf_append(&b, at + 2, strlen(at + 2) + 1); /* with the NUL */
    if (rc)
      ox_buf_free(&b);
    else
      pg->sql[i] = b.data;
  }
  if (!rc)
    rc = ox_l3_pool_init(&pg->pool, OX_L3_KIND_PG, sizeof(pg_slot_t), o.pool_size ? o.pool_size : 8,
                         o.connect_timeout_ms ? o.connect_timeout_ms : 1000,
                         o.command_timeout_ms ? o.command_timeout_ms : 500, &o.breaker);
  if (rc) {
    ox_l3_pg_destroy(pg);
    return rc;
  }
  *out = pg;
  return 0;
}

void ox_l3_pg_destroy(ox_l3_pg_t *pg) {
  if (!pg) return;
  for (int i = 0; i < pg->pool.nslots; i++) {
    pg_slot_t *s = ox_l3_pool_slot(&pg->pool, i);
    pg_drop(s);
    ox_buf_free(&s->scratch);
  }
  ox_l3_pool_fini(&pg->pool);
  for (int i = 0; i < ST_COUNT; i++) free(pg->sql[i]);
  free(pg->conninfo);
  free(pg->table);
  free(pg);
}

ox_breaker_t *ox_l3_pg_breaker(ox_l3_pg_t *pg) {
  return pg->pool.breaker;
}

void ox_l3_pg_stats(ox_l3_pg_t *pg, ox_l3_pg_stats_t *out) {
  ox_l3_pool_stats(&pg->pool, out);
}
