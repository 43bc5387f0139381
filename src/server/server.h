/* server.h: the Open Inference Protocol application: routes HTTP requests to the health,
 * metadata and inference handlers. Joins http/ (connections), proto/ (codecs), runtime/
 * (models) and sched/ (workers). Metadata is answered on the loop thread (cheap); inference
 * requests are parsed, validated, run and encoded on a worker thread, and their response is
 * posted back to the connection's loop.
 */
#ifndef OX_SERVER_H
#define OX_SERVER_H

#include <stdatomic.h>
#include <stddef.h>

#include "http/conn.h"
#include "runtime/runtime.h"
#include "sched/pool.h"

#define OX_VERSION "0.1.0"

typedef struct {
  ox_repo_t *repo;        /* borrowed */
  ox_pool_t *pool;        /* borrowed */
  atomic_int draining;    /* set at SIGTERM: readiness false, new inference refused (503) */
  atomic_long inflight;   /* inference requests accepted and not yet answered */
} ox_server_t;

/* The ox_http_handler_t for the server (app is an ox_server_t*). */
void ox_server_handle(void *app, ox_conn_t *c, const ox_http_request_t *head,
                      ox_http_body_t *body);

/* Runs an inference job on a worker (see infer.c). Takes ownership of body. */
void ox_server_infer(ox_server_t *s, ox_conn_t *c, ox_model_t *m, const ox_http_request_t *head,
                     ox_http_body_t *body);

/* Percent-decodes a URL path segment into out (room for seg.len bytes); returns the decoded
 * length or -1 for a bad escape or a decoded NUL or '/'. */
long ox_url_decode_segment(ox_slice_t seg, char *out);

#endif
