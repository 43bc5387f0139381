/* l3_pg_lib.h: libpq, loaded when PostgreSQL is used (dlopen of libpq.so.5), never linked.
 *
 * Why: linking libpq makes every onnxd process load it and what it needs (libssl, libcrypto,
 * Kerberos, LDAP, SASL: about twenty libraries) at start-up, with or without --postgres, and
 * makes the executable refuse to start where libpq is not installed. The single-file onnxd
 * must run on a minimal system. So l3_pg.c calls libpq through ox_pq, a table of function
 * pointers that ox_l3_pg_load_library (l3_pg.h) fills once; types and constants still come from
 * libpq-fe.h at build time (libpq keeps its ABI within soname 5). Private to l3_pg.c and
 * l3_pg_lib.c.
 */
#ifndef OX_FEATURES_L3_PG_LIB_H
#define OX_FEATURES_L3_PG_LIB_H

#include <libpq-fe.h>

/* Every libpq function onnxd calls. A new call in l3_pg.c needs its line here. */
#define OX_PQ_FUNCS(X)    \
  X(PQclear)              \
  X(PQcmdTuples)          \
  X(PQconnectPoll)        \
  X(PQconnectStartParams) \
  X(PQconsumeInput)       \
  X(PQerrorMessage)       \
  X(PQfinish)             \
  X(PQflush)              \
  X(PQgetResult)          \
  X(PQgetisnull)          \
  X(PQgetlength)          \
  X(PQgetvalue)           \
  X(PQisBusy)             \
  X(PQntuples)            \
  X(PQputCopyData)        \
  X(PQputCopyEnd)         \
  X(PQresultErrorField)   \
  X(PQresultErrorMessage) \
  X(PQresultStatus)       \
  X(PQsendPrepare)        \
  X(PQsendQuery)          \
  X(PQsendQueryPrepared)  \
  X(PQsetNoticeProcessor) \
  X(PQsetnonblocking)     \
  X(PQsocket)             \
  X(PQstatus)             \
  X(PQtransactionStatus)

/* One pointer per function, named and typed as libpq declares it: ox_pq.PQclear(res). */
typedef struct {
#define OX_PQ_MEMBER(f) __typeof__(f) *f;
  OX_PQ_FUNCS(OX_PQ_MEMBER)
#undef OX_PQ_MEMBER
} ox_pq_api_t;

/* Filled by the first successful ox_l3_pg_load_library, read-only afterwards. ox_l3_pg_create
 * loads it, so every ox_l3_pg_t call finds it filled. */
extern ox_pq_api_t ox_pq;

#endif
