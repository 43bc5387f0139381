/* server.h: the Open Inference Protocol application over HTTP: routes requests to the health,
 * metadata, inference and feature store handlers. Joins http/ (connections), proto/ (codecs),
 * runtime/ (models), infer/ (the inference core) and sched/ (workers). Metadata is answered on
 * the loop thread (cheap); inference requests are parsed, validated, run and encoded on a
 * worker thread (the REST front end, rest_infer.c, over the core, infer/infer.h), and their
 * response is posted back to the connection's loop.
 */
#ifndef OX_SERVER_H
#define OX_SERVER_H

#include <stdatomic.h>
#include <stddef.h>

#include "features/fstore.h"
#include "features/fstream.h"
#include "grpc/h2.h"
#include "http/conn.h"
#include "infer/infer.h"
#include "infer/models.h"
#include "metrics/metrics.h"
#include "runtime/runtime.h"
#include "sched/batcher.h"
#include "sched/pool.h"

#define OX_VERSION "0.1.0"

typedef struct {
  ox_repo_t *repo;      /* borrowed */
  ox_pool_t *pool;      /* borrowed */
  const char *repo_dir; /* borrowed */
  int infer_threads;
  ox_models_t *models;     /* borrowed: the live model set (infer/models.h) */
  int control_mode;        /* OX_CONTROL_*: whether the repository API may load and unload */
  atomic_int draining;     /* set at SIGTERM: readiness false, new inference refused (503) */
  atomic_long inflight;    /* inference requests accepted and not yet answered */
  ox_fstore_t *features;   /* borrowed; NULL when the feature store is not open */
  ox_fstream_t *stream;    /* borrowed; NULL unless --feature-events-stream (fstream.h) */
  const char *feature_dir; /* borrowed: where snapshots are staged (unlinked files) */
  const char *event_keys;  /* borrowed: comma-separated event fields naming entities */
  /* Protection of the admin (mutating) endpoints, checked at routing (router.c):
   * admin_token: borrowed, NUL-terminated; when set, those endpoints need
   * "Authorization: Bearer <token>" (missing: 401, wrong: 403; compared in constant time).
   * admin_split: set with --admin-port: those endpoints are served only on connections of the
   * OX_LISTENER_ADMIN listener (404 elsewhere), which serves nothing else but health. */
  const char *admin_token;
  size_t admin_token_len;
  int admin_split;
} ox_server_t;

/* Listener tags (ox_http_config_t.tag): which listener accepted a connection. */
enum { OX_LISTENER_PUBLIC = 0, OX_LISTENER_ADMIN = 1 };

/* --model-control-mode. */
enum { OX_CONTROL_NONE = 0, OX_CONTROL_POLL = 1, OX_CONTROL_EXPLICIT = 2 };

/* The model repository extension (models.c), loop thread; body borrowed as for events:
 *   POST /v2/repository/index                 Triton's index (optional {"ready": true})
 *   POST /v2/repository/models/{m}/load       load or reload; answered when it is over
 *   POST /v2/repository/models/{m}/unload     unload; answered when served no more */
void ox_server_repo_index(ox_server_t *s, ox_conn_t *c, ox_slice_t body);
void ox_server_repo_load(ox_server_t *s, ox_conn_t *c, ox_slice_t name, ox_slice_t body);
void ox_server_repo_unload(ox_server_t *s, ox_conn_t *c, ox_slice_t name, ox_slice_t body);
/* The same load or unload for another front end (gRPC), on the loop thread: files are the
 * uploaded files ("<version>/<file>" and their bytes, borrowed for the call), config the
 * override (NULL: the files). answer(arg, rc, msg) runs on loop when the operation is over
 * (rc 0, or OX_EUNAVAILABLE when the server closed first, else a failed load). Returns 0, or
 * an error to answer now with the message in err: OX_EINVALID (refused: control mode, name,
 * upload names), -ENOSPC / -EIO (the upload could not be stored), OX_ENOMEM, OX_EUNAVAILABLE
 * (shutting down). */
typedef struct {
  ox_slice_t path;  /* "<version>/<file>" */
  ox_slice_t bytes; /* the file */
} ox_repo_file_t;
int ox_server_repo_start(ox_server_t *s, ox_loop_t *loop, ox_slice_t name, int unload,
                         const char *config, size_t config_len, const ox_repo_file_t *files,
                         size_t nfiles, void (*answer)(void *, int, const char *), void *arg,
                         char *err, size_t errcap);
/* The connection of a request held by the server closed (client gone): drop its work
 * (ox_infer_cancel on the inference call registered with ox_conn_set_request). */
void ox_server_abort(void *app, ox_conn_t *c, void *request);

/* Readiness, for every front end (REST /v2/health/ready, gRPC ServerReady and health): not
 * while draining, nor, with --feature-events-stream, before the replica has caught up
 * (ox_fstream_ready). 1, or 0 with the reason in why. Any thread. */
int ox_server_ready(ox_server_t *s, char *why, size_t cap);

/* The ox_http_handler_t for the server (app is an ox_server_t*): the route table (router.c). */
void ox_server_handle(void *app, ox_conn_t *c, const ox_http_request_t *head,
                      const ox_http_body_t *body);

/* Loop thread: the REST front end of an inference request (rest_infer.c): checks the framing
 * headers, admits the request to the model's queue and submits it to the inference core, which
 * runs it on a worker; the answer is sent from the core's completion on this connection's loop.
 * body is borrowed from the connection, valid until that ox_conn_respond (the connection frees
 * it then). */
void ox_server_infer(ox_server_t *s, ox_conn_t *c, ox_model_t *m, const ox_http_request_t *head,
                     ox_slice_t body);

/* The connection's body placement hook (ox_http_config_t.body_align_offset): an inference
 * body is placed so that its binary section (proto/binary_ext.h) starts 64-byte aligned. */
size_t ox_server_body_align_offset(void *app, const ox_http_request_t *head);

/* Feature store endpoints (events.c), on a worker thread; body is borrowed as above:
 *   POST /v1/events                 ingest events (JSON lines or a JSON array)
 *   GET|PUT /v1/features/{t}/{k}    read or store a feature row */
void ox_server_events(ox_server_t *s, ox_conn_t *c, ox_slice_t body);
/* GET /v1/features/snapshot (a worker copies the store; admin endpoint) and
 * GET /v1/features/stream (the replication status, answered at once), loop thread. */
void ox_server_feature_snapshot(ox_server_t *s, ox_conn_t *c);
void ox_server_feature_stream(ox_server_t *s, ox_conn_t *c);
/* The stream applier's ox_fstream_decode_fn: an entry's body parsed as POST /v1/events does,
 * with the store (arg, an ox_fstore_t*) giving the merchant key. */
int ox_server_stream_decode(void *arg, ox_slice_t body, ox_slice_t keyspec, ox_arena_t *a,
                            ox_fstore_event_t **evs, size_t *n);
void ox_server_feature_row(ox_server_t *s, ox_conn_t *c, int put, ox_slice_t table, ox_slice_t key,
                           ox_slice_t body);

/* The gRPC front end (grpc_service.c): one service per I/O loop, whose listener's config it
 * holds (ox_grpc_service_config). Loop thread, except create and destroy (before the loop runs,
 * after it stopped). */
typedef struct ox_grpc_service ox_grpc_service_t;
int ox_grpc_service_create(ox_server_t *s, const ox_grpc_config_t *limits, ox_grpc_service_t **out);
/* The listener's configuration: limits as given, the service's handler and app. */
const ox_grpc_config_t *ox_grpc_service_config(const ox_grpc_service_t *svc);
/* Drain: health watchers are told NOT_SERVING and their calls end. */
void ox_grpc_service_drain(ox_grpc_service_t *svc);
void ox_grpc_service_destroy(ox_grpc_service_t *svc);

/* Percent-decodes a URL path segment into out (room for seg.len bytes); returns the decoded
 * length or -1 for a bad escape or a decoded NUL or '/'. */
long ox_url_decode_segment(ox_slice_t seg, char *out);

#endif
