/* router.c: the REST routes of the Open Inference Protocol (KServe v2), as Triton serves them,
 * and the handlers that need no worker: health, server and model metadata.
 *
 *   GET  /v2                                      server metadata
 *   GET  /v2/health/live | /v2/health/ready       {"live": true}, {"ready": true} (503 while
 *                                                 draining: {"ready": false, "error": ...})
 *   GET  /v2/models/{m}[/versions/{v}]            model metadata
 *   GET  /v2/models/{m}[/versions/{v}]/ready      {"name": m, "ready": true} (503: false, error)
 *   POST /v2/models/{m}[/versions/{v}]/infer      inference (worker thread, rest_infer.c)
 *   GET  /v2/models/{m}[/versions/{v}]/config     effective configuration
 *   GET  /v2/models[/{m}[/versions/{v}]]/stats    statistics extension (Triton's JSON)
 *   GET  /metrics                                 Prometheus text
 *   POST /v2/repository/index                     model repository index (models.c)
 *   POST /v2/repository/models/{m}/load|unload    load, reload or unload a model (models.c)
 *   POST /v1/events                               ingest events (feature store, events.c)
 *   GET|PUT /v1/features/{table}/{key}            read or store a feature row (events.c)
 *
 * The routes are declared in one table (ox_routes: methods, path pattern, handler, flags); a
 * request is answered, in this order: 404 when no route has its path (or the admin listener does
 * not serve it), 400/404 when the {model}[/versions/{version}] it names is invalid or unknown,
 * 405 with Allow (every method of the path's routes) when no route of the path takes its
 * method, 400 for a bad feature row address, then the admin gate, the drain refusal of new
 * inference (503), and the handler. Handlers borrow the body: the connection frees it when the
 * request is answered.
 *
 * A {model} is looked up in the live set (infer/models.h) with a reference that the router
 * drops when the handler returns (inference calls take their own).
 *
 * Admin endpoints (the mutating ones: POST /v1/events, PUT /v1/features, repository load and
 * unload) pass admin_gate:
 * with --admin-port they are served only on the admin listener (404 on the public one, as if
 * absent), and with --admin-token-file they need the bearer token. The admin listener serves
 * /v1/... and /v2/health/... only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/text.h"
#include "server/server.h"

#define OX_MAX_SEGMENTS 8
#define OX_MAX_SEGMENT 256

long ox_url_decode_segment(ox_slice_t seg, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < seg.len; i++) {
    char ch = seg.ptr[i];
    if (ch == '%') {
      if (i + 2 >= seg.len) return -1;
      int v = 0;
      for (int k = 1; k <= 2; k++) {
        char h = seg.ptr[i + (size_t)k];
        v <<= 4;
        if (h >= '0' && h <= '9')
          v |= h - '0';
        else if (h >= 'a' && h <= 'f')
          v |= h - 'a' + 10;
        else if (h >= 'A' && h <= 'F')
          v |= h - 'A' + 10;
        else
          return -1;
      }
      if (v == 0 || v == '/') return -1;
      out[o++] = (char)v;
      i += 2;
    } else {
      out[o++] = ch;
    }
  }
  return (long)o;
}

/* a == the expected token t (NUL-terminated, tlen bytes), in time that depends only on tlen. */
static int token_equal(ox_slice_t a, const char *t, size_t tlen) {
  unsigned char d = a.len != tlen;
  for (size_t i = 0; i < tlen; i++) d |= (unsigned char)((i < a.len ? a.ptr[i] : 0) ^ t[i]);
  return d == 0;
}

/* The checks of an admin endpoint. Returns 1 when the request may go on; otherwise it has been
 * answered: 404 on the public listener when admin endpoints have a listener of
 * their own, 401 with WWW-Authenticate when the bearer token is missing, 403 when wrong. */
static int admin_gate(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head) {
  if (s->admin_split && ox_conn_tag(c) != OX_LISTENER_ADMIN) {
    ox_conn_respond_error(c, 404,
                          "no such endpoint on this port (admin endpoints are served "
                          "on the admin port)");
    return 0;
  }
  if (!s->admin_token) return 1;
  ox_slice_t v = ox_http_header(head, "Authorization");
  static const char scheme[] = "Bearer ";
  size_t sl = sizeof scheme - 1;
  ox_slice_t tok = ox_slice(NULL, 0);
  if (v.ptr && v.len > sl && ox_slice_eq_nocase(ox_slice(v.ptr, sl - 1), "Bearer") &&
      v.ptr[sl - 1] == ' ') {
    tok = ox_slice(v.ptr + sl, v.len - sl);
    while (tok.len && tok.ptr[0] == ' ') tok = ox_slice(tok.ptr + 1, tok.len - 1);
  }
  if (!tok.len) {
    ox_http_resp_t r;
    ox_http_resp_init(&r, 401);
    ox_http_resp_error(&r, 401, "this endpoint needs Authorization: Bearer <admin token>");
    ox_buf_puts(&r.extra_headers, "WWW-Authenticate: Bearer realm=\"onnxd-admin\"\r\n");
    ox_conn_respond(c, &r);
    return 0;
  }
  if (!token_equal(tok, s->admin_token, s->admin_token_len)) {
    ox_conn_respond_error(c, 403, "wrong admin token");
    return 0;
  }
  return 1;
}

static void respond_json(ox_conn_t *c, int status, ox_buf_t *body) {
  ox_http_resp_t r;
  ox_http_resp_init(&r, status);
  r.body = *body;
  ox_buf_init(body);
  ox_conn_respond(c, &r);
}

/* A health answer in the shape KServe's server sends and its SDK parses: {"live": true},
 * {"ready": true}, {"name": "m", "ready": true} with 200; the same with false plus the reason
 * as "error" with 503 (the SDK raises with that message; Triton's clients read the status
 * only). name: a model name (may be NULL), key: "live" or "ready", why: NULL when ok. */
static void respond_health(ox_conn_t *c, const char *name, const char *key, const char *why) {
  ox_buf_t b;
  ox_buf_init(&b);
  int rc = ox_buf_puts(&b, "{");
  if (name) {
    rc |= ox_buf_puts(&b, "\"name\":");
    rc |= ox_buf_append_json_string(&b, name, strlen(name));
    rc |= ox_buf_puts(&b, ",");
  }
  rc |= ox_buf_printf(&b, "\"%s\":%s", key, why ? "false" : "true");
  if (why) {
    rc |= ox_buf_puts(&b, ",\"error\":");
    rc |= ox_buf_append_json_string(&b, why, strlen(why));
  }
  rc |= ox_buf_puts(&b, "}");
  if (rc) {
    ox_buf_free(&b);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  respond_json(c, why ? 503 : 200, &b);
}

static int append_tensor_meta(ox_buf_t *b, const ox_tensor_info_t *t, size_t n) {
  int rc = ox_buf_puts(b, "[");
  for (size_t i = 0; i < n && !rc; i++) {
    rc |= ox_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
    rc |= ox_buf_append_json_string(b, t[i].name, strlen(t[i].name));
    rc |= ox_buf_printf(b, ",\"datatype\":\"%s\",\"shape\":[", ox_dtype_name(t[i].dtype));
    for (int d = 0; d < t[i].rank; d++)
      rc |= ox_buf_printf(b, d ? ",%lld" : "%lld", (long long)t[i].dims[d]);
    rc |= ox_buf_puts(b, "]}");
  }
  rc |= ox_buf_puts(b, "]");
  return rc;
}

static void model_metadata(ox_server_t *s, ox_conn_t *c, ox_model_t *m) {
  ox_buf_t b;
  ox_buf_init(&b);
  int64_t versions[64];
  size_t nv = ox_models_versions(s->models, m->name, versions, 64);
  int rc = ox_buf_puts(&b, "{\"name\":");
  rc |= ox_buf_append_json_string(&b, m->name, strlen(m->name));
  rc |= ox_buf_puts(&b, ",\"versions\":[");
  for (size_t i = 0; i < nv && i < 64; i++)
    rc |= ox_buf_printf(&b, i ? ",\"%lld\"" : "\"%lld\"", (long long)versions[i]);
  rc |= ox_buf_puts(&b, "],\"platform\":\"onnx_onnxv1\",\"inputs\":");
  rc |= append_tensor_meta(&b, m->inputs, m->num_inputs);
  rc |= ox_buf_puts(&b, ",\"outputs\":");
  rc |= append_tensor_meta(&b, m->outputs, m->num_outputs);
  rc |= ox_buf_puts(&b, "}");
  if (rc) {
    ox_buf_free(&b);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  respond_json(c, 200, &b);
}

static void server_metadata(ox_conn_t *c) {
  ox_buf_t b;
  ox_buf_init(&b);
  if (ox_buf_puts(&b, "{\"name\":\"onnxd\",\"version\":\"" OX_VERSION
                      "\",\"extensions\":[\"binary_tensor_data\",\"classification\",\"statistics\","
                      "\"model_configuration\",\"model_repository\"]}")) {
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  respond_json(c, 200, &b);
}

static ox_metrics_model_t metrics_view(ox_model_t *m) {
  ox_model_state_t *st = m->app;
  return (ox_metrics_model_t){.model = m->name,
                              .version = m->version,
                              .stats = &st->stats,
                              .pending = st->batcher ? ox_batcher_pending(st->batcher) : 0};
}

/* Statistics of one model version, every version of a model (name), or everything (NULL). */
static void stats_json(ox_server_t *s, ox_conn_t *c, const char *name, ox_model_t *one) {
  ox_buf_t b;
  ox_buf_init(&b);
  ox_model_t **all = NULL;
  size_t nall = 0;
  int rc = ox_models_snapshot(s->models, &all, &nall);
  rc |= ox_buf_puts(&b, "{\"model_stats\":[");
  int first = 1;
  for (size_t i = 0; i < nall; i++) {
    ox_model_t *m = all[i];
    if ((one && m != one) || (name && strcmp(name, m->name))) continue;
    if (!first) rc |= ox_buf_puts(&b, ",");
    ox_metrics_model_t v = metrics_view(m);
    rc |= ox_metrics_stats_json(&b, &v);
    first = 0;
  }
  for (size_t i = 0; i < nall; i++) ox_models_put(all[i]);
  free(all);
  rc |= ox_buf_puts(&b, "]}");
  if (rc) {
    ox_buf_free(&b);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  respond_json(c, 200, &b);
}

static void metrics_text(ox_server_t *s, ox_conn_t *c) {
  ox_model_t **all = NULL;
  size_t nall = 0;
  int rc = ox_models_snapshot(s->models, &all, &nall);
  ox_metrics_model_t *v = rc ? NULL : calloc(nall + 1, sizeof *v);
  ox_buf_t b;
  ox_buf_init(&b);
  if (!v) {
    for (size_t i = 0; i < nall; i++) ox_models_put(all[i]);
    free(all);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  for (size_t i = 0; i < nall; i++) v[i] = metrics_view(all[i]);
  rc = ox_metrics_render(&b, v, nall, ox_http_open_connections());
  if (!rc)
    rc = ox_buf_printf(
        &b,
        "# HELP onnxd_inflight_body_bytes Request body bytes reserved plus response bytes "
        "waiting for slow readers (--max-inflight-bytes)\n"
        "# TYPE onnxd_inflight_body_bytes gauge\nonnxd_inflight_body_bytes %zu\n"
        "# HELP onnxd_inflight_refused_total Requests refused 503 because the in-flight budget "
        "was full\n# TYPE onnxd_inflight_refused_total counter\nonnxd_inflight_refused_total "
        "%llu\n"
        "# HELP onnxd_idle_evictions_total Idle keep-alive connections closed to make room at "
        "--max-connections\n# TYPE onnxd_idle_evictions_total counter\n"
        "onnxd_idle_evictions_total %llu\n",
        ox_http_inflight_bytes(), (unsigned long long)ox_http_inflight_refusals(),
        (unsigned long long)ox_http_idle_evictions());
  if (!rc)
    rc = ox_buf_printf(
        &b,
        "# HELP onnxd_grpc_open_connections gRPC (HTTP/2) connections open\n"
        "# TYPE onnxd_grpc_open_connections gauge\nonnxd_grpc_open_connections %zu\n"
        "# HELP onnxd_grpc_buffered_bytes Received gRPC message bytes held (being reassembled "
        "or served)\n# TYPE onnxd_grpc_buffered_bytes gauge\nonnxd_grpc_buffered_bytes %zu\n"
        "# HELP onnxd_grpc_refused_streams_total HTTP/2 streams refused over "
        "--grpc-max-streams\n# TYPE onnxd_grpc_refused_streams_total counter\n"
        "onnxd_grpc_refused_streams_total %llu\n"
        "# HELP onnxd_grpc_floods_total Connections ended for a flood (rapid reset, PING, "
        "SETTINGS, empty frames, CONTINUATION)\n# TYPE onnxd_grpc_floods_total counter\n"
        "onnxd_grpc_floods_total %llu\n"
        "# HELP onnxd_grpc_bad_prefaces_total Connections closed that did not start with the "
        "HTTP/2 preface\n# TYPE onnxd_grpc_bad_prefaces_total counter\n"
        "onnxd_grpc_bad_prefaces_total %llu\n"
        "# HELP onnxd_grpc_connection_refusals_total gRPC connections refused at "
        "--max-connections\n# TYPE onnxd_grpc_connection_refusals_total counter\n"
        "onnxd_grpc_connection_refusals_total %llu\n"
        "# HELP onnxd_grpc_limit_ends_total gRPC calls ended by a limit (message size, "
        "buffered bytes, header list, deadline)\n# TYPE onnxd_grpc_limit_ends_total counter\n"
        "onnxd_grpc_limit_ends_total %llu\n",
        ox_grpc_open_connections(), ox_grpc_buffered_bytes(),
        (unsigned long long)ox_grpc_counter(OX_GRPC_REFUSED_STREAMS),
        (unsigned long long)ox_grpc_counter(OX_GRPC_FLOODS),
        (unsigned long long)ox_grpc_counter(OX_GRPC_BAD_PREFACES),
        (unsigned long long)ox_grpc_counter(OX_GRPC_CONN_REFUSALS),
        (unsigned long long)ox_grpc_counter(OX_GRPC_LIMIT_ENDS));
  if (!rc && s->features) rc = ox_fstore_metrics(s->features, &b);
  if (!rc && s->stream) rc = ox_fstream_metrics(s->stream, &b);
  if (!rc) rc = ox_models_metrics(s->models, &b);
  free(v);
  for (size_t i = 0; i < nall; i++) ox_models_put(all[i]);
  free(all);
  if (rc) {
    ox_buf_free(&b);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  ox_http_resp_t r;
  ox_http_resp_init(&r, 200);
  r.content_type = "text/plain; version=0.0.4";
  r.body = b;
  ox_conn_respond(c, &r);
}

static void model_config(ox_conn_t *c, ox_model_t *m) {
  ox_model_state_t *st = m->app;
  ox_buf_t b;
  ox_buf_init(&b);
  if (ox_model_config_json(&b, m, &st->cfg)) {
    ox_buf_free(&b);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  respond_json(c, 200, &b);
}

/* ---- the route table ------------------------------------------------------------------ */

/* What a route's path parameters resolved to (borrowed: valid during the handler call). */
typedef struct {
  ox_model_t *model;     /* {model}[/versions/{version}]: the model version it names */
  ox_slice_t version;    /* decoded {version}; empty when the path names none */
  ox_slice_t table, key; /* decoded {table} and {key} */
  ox_slice_t name;       /* decoded and checked {name}: a model name not looked up */
} route_args_t;

/* A route's handler, on the loop thread. body is borrowed (the connection frees it in
 * ox_conn_respond); the handler answers (ox_conn_respond) now or later, exactly once. */
typedef void (*route_fn)(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                         ox_slice_t body, const route_args_t *a);

enum {
  M_GET = 1, /* and HEAD */
  M_POST = 2,
  M_PUT = 4,
};

enum {
  /* Mutating admin endpoint: with --admin-port only on the admin listener (404 elsewhere),
   * with --admin-token-file only with the bearer token (admin_gate). */
  R_ADMIN = 1,
  /* Also served on the admin listener (which serves nothing else). */
  R_ADMIN_PORT = 2,
  /* New work: refused with 503 while draining. */
  R_NEW_WORK = 4,
};

typedef struct {
  unsigned methods;
  /* Segments after '/': literals, or {model}, {version}, {table}, {key} (any one segment). */
  const char *pattern;
  route_fn fn;
  unsigned flags;
} route_t;

static void h_server_metadata(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                              ox_slice_t body, const route_args_t *a) {
  (void)s, (void)head, (void)body, (void)a;
  server_metadata(c);
}

static void h_live(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                   const route_args_t *a) {
  (void)s, (void)head, (void)body, (void)a;
  respond_health(c, NULL, "live", NULL);
}

int ox_server_ready(ox_server_t *s, char *why, size_t cap) {
  if (atomic_load(&s->draining)) {
    snprintf(why, cap, "server is shutting down");
    return 0;
  }
  return !s->stream || ox_fstream_ready(s->stream, why, cap);
}

static void h_ready(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                    const route_args_t *a) {
  (void)head, (void)body, (void)a;
  char why[256];
  respond_health(c, NULL, "ready", ox_server_ready(s, why, sizeof why) ? NULL : why);
}

static void h_metrics(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                      const route_args_t *a) {
  (void)head, (void)body, (void)a;
  metrics_text(s, c);
}

static void h_stats_all(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                        ox_slice_t body, const route_args_t *a) {
  (void)head, (void)body, (void)a;
  stats_json(s, c, NULL, NULL);
}

static void h_model_metadata(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                             ox_slice_t body, const route_args_t *a) {
  (void)head, (void)body;
  model_metadata(s, c, a->model);
}

static void h_model_ready(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                          ox_slice_t body, const route_args_t *a) {
  (void)head, (void)body;
  const ox_model_state_t *st = a->model->app;
  char why[320] = "server is shutting down";
  int draining = atomic_load(&s->draining);
  if (!draining && st->unavailable) snprintf(why, sizeof why, "model is not ready: %s", st->reason);
  respond_health(c, a->model->name, "ready", draining || st->unavailable ? why : NULL);
}

static void h_model_config(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                           ox_slice_t body, const route_args_t *a) {
  (void)s, (void)head, (void)body;
  model_config(c, a->model);
}

static void h_model_stats(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                          ox_slice_t body, const route_args_t *a) {
  (void)head, (void)body;
  if (a->version.len)
    stats_json(s, c, NULL, a->model);
  else
    stats_json(s, c, a->model->name, NULL);
}

static void h_infer(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                    const route_args_t *a) {
  ox_server_infer(s, c, a->model, head, body);
}

static void h_repo_index(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                         ox_slice_t body, const route_args_t *a) {
  (void)head, (void)a;
  ox_server_repo_index(s, c, body);
}

static void h_repo_load(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                        ox_slice_t body, const route_args_t *a) {
  (void)head;
  ox_server_repo_load(s, c, a->name, body);
}

static void h_repo_unload(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                          ox_slice_t body, const route_args_t *a) {
  (void)head;
  ox_server_repo_unload(s, c, a->name, body);
}

static void h_events(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                     const route_args_t *a) {
  (void)head, (void)a;
  ox_server_events(s, c, body);
}

static void h_snapshot(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                       const route_args_t *a) {
  (void)head, (void)a, (void)body;
  ox_server_feature_snapshot(s, c);
}

static void h_stream(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                     const route_args_t *a) {
  (void)head, (void)a, (void)body;
  ox_server_feature_stream(s, c);
}

static void h_row_get(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                      const route_args_t *a) {
  (void)head;
  ox_server_feature_row(s, c, 0, a->table, a->key, body);
}

static void h_row_put(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head, ox_slice_t body,
                      const route_args_t *a) {
  (void)head;
  ox_server_feature_row(s, c, 1, a->table, a->key, body);
}

/* Every endpoint. First match wins (so /v2/models/stats is not a model named "stats"); routes
 * of one path with different methods follow each other, and 405's Allow lists them all. */
static const route_t ox_routes[] = {
    {M_GET, "/v2", h_server_metadata, 0},
    {M_GET, "/v2/health/live", h_live, R_ADMIN_PORT},
    {M_GET, "/v2/health/ready", h_ready, R_ADMIN_PORT},
    {M_GET, "/v2/models/stats", h_stats_all, 0},
    {M_GET, "/v2/models/{model}", h_model_metadata, 0},
    {M_GET, "/v2/models/{model}/versions/{version}", h_model_metadata, 0},
    {M_GET, "/v2/models/{model}/ready", h_model_ready, 0},
    {M_GET, "/v2/models/{model}/versions/{version}/ready", h_model_ready, 0},
    {M_POST, "/v2/models/{model}/infer", h_infer, R_NEW_WORK},
    {M_POST, "/v2/models/{model}/versions/{version}/infer", h_infer, R_NEW_WORK},
    {M_GET, "/v2/models/{model}/config", h_model_config, 0},
    {M_GET, "/v2/models/{model}/versions/{version}/config", h_model_config, 0},
    {M_GET, "/v2/models/{model}/stats", h_model_stats, 0},
    {M_GET, "/v2/models/{model}/versions/{version}/stats", h_model_stats, 0},
    {M_GET, "/metrics", h_metrics, 0},
    {M_POST, "/v2/repository/index", h_repo_index, 0},
    {M_POST, "/v2/repository/models/{name}/load", h_repo_load, R_ADMIN | R_ADMIN_PORT | R_NEW_WORK},
    {M_POST, "/v2/repository/models/{name}/unload", h_repo_unload,
     R_ADMIN | R_ADMIN_PORT | R_NEW_WORK},
    {M_POST, "/v1/events", h_events, R_ADMIN | R_ADMIN_PORT},
    {M_GET, "/v1/features/snapshot", h_snapshot, R_ADMIN | R_ADMIN_PORT},
    {M_GET, "/v1/features/stream", h_stream, R_ADMIN_PORT},
    {M_GET, "/v1/features/{table}/{key}", h_row_get, R_ADMIN_PORT},
    {M_PUT, "/v1/features/{table}/{key}", h_row_put, R_ADMIN | R_ADMIN_PORT},
};
#define OX_NUM_ROUTES (sizeof ox_routes / sizeof ox_routes[0])

/* Path parameter kinds, by the position of their segment (at most one of each per route). */
enum { P_MODEL, P_VERSION, P_TABLE, P_KEY, P_NAME, P_COUNT };

/* Matches the path's segments against a pattern; on a match, param[k] is the index of the
 * segment of parameter kind k (-1: absent). Returns 1 on a match. */
static int route_match(const char *pat, const ox_slice_t *seg, size_t nseg, int *param) {
  for (int k = 0; k < P_COUNT; k++) param[k] = -1;
  size_t i = 0;
  while (*pat == '/') {
    pat++;
    const char *q = pat;
    while (*q && *q != '/') q++;
    size_t n = (size_t)(q - pat);
    if (i == nseg) return 0;
    if (n > 2 && pat[0] == '{') {
      int k = pat[1] == 'm'   ? P_MODEL
              : pat[1] == 'v' ? P_VERSION
              : pat[1] == 't' ? P_TABLE
              : pat[1] == 'n' ? P_NAME
                              : P_KEY;
      param[k] = (int)i;
    } else if (seg[i].len != n || memcmp(seg[i].ptr, pat, n) != 0) {
      return 0;
    }
    i++;
    pat = q;
  }
  return i == nseg;
}

static void respond_405(ox_conn_t *c, unsigned allowed) {
  ox_http_resp_t r;
  ox_http_resp_init(&r, 405);
  ox_http_resp_error(&r, 405, "method not allowed for this endpoint");
  ox_buf_puts(&r.extra_headers, "Allow: ");
  const char *sep = "";
  if (allowed & M_GET) {
    ox_buf_puts(&r.extra_headers, "GET, HEAD");
    sep = ", ";
  }
  if (allowed & M_POST) {
    ox_buf_printf(&r.extra_headers, "%sPOST", sep);
    sep = ", ";
  }
  if (allowed & M_PUT) ox_buf_printf(&r.extra_headers, "%sPUT", sep);
  ox_buf_puts(&r.extra_headers, "\r\n");
  ox_conn_respond(c, &r);
}

/* Resolves {model}[/versions/{version}] (segments decoded into name and ver, which have room
 * for OX_MAX_SEGMENT bytes). Returns 1 with a->model set, else 0 after answering: 404 for an
 * empty or overlong segment or an unknown model or version, 400 for an invalid name. */
static int bind_model(ox_server_t *s, ox_conn_t *c, const ox_slice_t *seg, const int *param,
                      char *name, char *ver, route_args_t *a) {
  ox_slice_t ms = seg[param[P_MODEL]];
  if (ms.len == 0 || ms.len >= OX_MAX_SEGMENT) {
    ox_conn_respond_error(c, 404, "no such endpoint");
    return 0;
  }
  long nl = ox_url_decode_segment(ms, name);
  if (nl <= 0 || !ox_name_valid(name, (size_t)nl) || (nl == 1 && name[0] == '.') ||
      (nl == 2 && name[0] == '.' && name[1] == '.')) {
    ox_conn_respond_error(c, 400, "invalid model name");
    return 0;
  }
  a->version = ox_slice("", 0);
  if (param[P_VERSION] >= 0) {
    ox_slice_t vs = seg[param[P_VERSION]];
    if (vs.len == 0 || vs.len >= OX_MAX_SEGMENT) {
      ox_conn_respond_error(c, 404, "no such endpoint");
      return 0;
    }
    long vl = ox_url_decode_segment(vs, ver);
    if (vl <= 0) {
      ox_conn_respond_error(c, 404, "unknown version of the model");
      return 0;
    }
    a->version = ox_slice(ver, (size_t)vl);
  }
  ox_slice_t nm = ox_slice(name, (size_t)nl);
  char why[512];
  if (ox_models_get(s->models, nm, a->version, &a->model, why, sizeof why) != 0) {
    ox_conn_respond_error(c, 404, why);
    return 0;
  }
  return 1;
}

void ox_server_handle(void *app, ox_conn_t *c, const ox_http_request_t *head,
                      const ox_http_body_t *body) {
  ox_server_t *s = app;
  /* Split the path into segments (one more than any route has is enough to match none). */
  ox_slice_t seg[OX_MAX_SEGMENTS + 1];
  size_t nseg = 0;
  const char *p = head->path.ptr, *end = p + head->path.len;
  if (p == end || *p != '/') {
    ox_conn_respond_error(c, 400, "request target must be an absolute path");
    return;
  }
  while (p < end && nseg <= OX_MAX_SEGMENTS) {
    p++; /* skip '/' */
    const char *q = p;
    while (q < end && *q != '/') q++;
    seg[nseg++] = ox_slice(p, (size_t)(q - p));
    p = q;
  }
  unsigned method = ox_slice_eq(head->method, "GET") || ox_slice_eq(head->method, "HEAD") ? M_GET
                    : ox_slice_eq(head->method, "POST")                                   ? M_POST
                    : ox_slice_eq(head->method, "PUT")                                    ? M_PUT
                                                                                          : 0;
  /* The first route of the path, the one for the method, and every method the path takes. */
  const route_t *path_route = NULL, *route = NULL;
  int param[P_COUNT] = {-1, -1, -1, -1, -1}, mparam[P_COUNT];
  unsigned allowed = 0;
  for (size_t i = 0; i < OX_NUM_ROUTES; i++) {
    const route_t *r = &ox_routes[i];
    if (!route_match(r->pattern, seg, nseg, mparam)) continue;
    if (!path_route) {
      path_route = r;
      memcpy(param, mparam, sizeof param);
    }
    allowed |= r->methods;
    if (!route && (r->methods & method)) route = r;
  }
  if (!path_route || (ox_conn_tag(c) == OX_LISTENER_ADMIN &&
                      !((route ? route : path_route)->flags & R_ADMIN_PORT))) {
    ox_conn_respond_error(c, 404, "no such endpoint");
    return;
  }
  route_args_t a = {0};
  /* A model that does not exist is 404 whatever the method. */
  char name[OX_MAX_SEGMENT], ver[OX_MAX_SEGMENT];
  if (param[P_MODEL] >= 0 && !bind_model(s, c, seg, param, name, ver, &a)) return;
  if (!route) {
    respond_405(c, allowed);
    ox_models_put(a.model);
    return;
  }
  if (param[P_NAME] >= 0) {
    ox_slice_t ns = seg[param[P_NAME]];
    long nl = ns.len && ns.len < OX_MAX_SEGMENT ? ox_url_decode_segment(ns, name) : -1;
    if (nl <= 0 || !ox_name_valid(name, (size_t)nl) || (nl == 1 && name[0] == '.') ||
        (nl == 2 && name[0] == '.' && name[1] == '.')) {
      ox_conn_respond_error(c, 400, "invalid model name");
      return;
    }
    a.name = ox_slice(name, (size_t)nl);
  }
  char table[OX_MAX_SEGMENT], key[OX_MAX_SEGMENT];
  if (param[P_TABLE] >= 0) {
    ox_slice_t ts = seg[param[P_TABLE]], ks = seg[param[P_KEY]];
    long tl = ts.len < OX_MAX_SEGMENT ? ox_url_decode_segment(ts, table) : -1;
    long kl = ks.len < OX_MAX_SEGMENT ? ox_url_decode_segment(ks, key) : -1;
    if (tl <= 0 || kl <= 0) {
      ox_conn_respond_error(c, 400, "bad feature row address: /v1/features/{table}/{key}");
      return;
    }
    a.table = ox_slice(table, (size_t)tl);
    a.key = ox_slice(key, (size_t)kl);
  }
  if ((route->flags & R_ADMIN) && !admin_gate(s, c, head)) {
    ox_models_put(a.model);
    return;
  }
  if ((route->flags & R_NEW_WORK) && atomic_load(&s->draining)) {
    ox_conn_respond_error(c, 503, "server is shutting down");
    ox_models_put(a.model);
    return;
  }
  route->fn(s, c, head, ox_slice(body->data, body->len), &a);
  ox_models_put(a.model); /* the handler's reference (an inference call holds its own) */
}
