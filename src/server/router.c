/* router.c: the REST routes of the Open Inference Protocol (KServe v2), as Triton serves them,
 * and the handlers that need no worker: health, server and model metadata.
 *
 *   GET  /v2                                      server metadata
 *   GET  /v2/health/live | /v2/health/ready       liveness, readiness (503 while draining)
 *   GET  /v2/models/{m}[/versions/{v}]            model metadata
 *   GET  /v2/models/{m}[/versions/{v}]/ready      model readiness
 *   POST /v2/models/{m}[/versions/{v}]/infer      inference (worker thread, infer.c)
 *   GET  /v2/models/{m}[/versions/{v}]/config     effective configuration
 *   GET  /v2/models[/{m}[/versions/{v}]]/stats    statistics extension (Triton's JSON)
 *   GET  /metrics                                 Prometheus text
 *   POST /v1/events                               ingest events (feature store, events.c)
 *   GET|PUT /v1/features/{table}/{key}            read or store a feature row (events.c)
 *
 * Admin endpoints (the mutating ones: POST /v1/events, PUT /v1/features) pass admin_gate:
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
        if (h >= '0' && h <= '9') v |= h - '0';
        else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
        else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
        else return -1;
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
 * answered (body freed): 404 on the public listener when admin endpoints have a listener of
 * their own, 401 with WWW-Authenticate when the bearer token is missing, 403 when wrong. */
static int admin_gate(ox_server_t *s, ox_conn_t *c, const ox_http_request_t *head,
                      ox_http_body_t *body) {
  if (s->admin_split && ox_conn_tag(c) != OX_LISTENER_ADMIN) {
    ox_http_body_free(body);
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
    ox_http_body_free(body);
    ox_http_resp_t r;
    ox_http_resp_init(&r, 401);
    ox_http_resp_error(&r, 401, "this endpoint needs Authorization: Bearer <admin token>");
    ox_buf_puts(&r.extra_headers, "WWW-Authenticate: Bearer realm=\"onnxd-admin\"\r\n");
    ox_conn_respond(c, &r);
    return 0;
  }
  if (!token_equal(tok, s->admin_token, s->admin_token_len)) {
    ox_http_body_free(body);
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

static void respond_empty(ox_conn_t *c, int status) {
  ox_http_resp_t r;
  ox_http_resp_init(&r, status);
  r.content_type = "text/plain";
  ox_conn_respond(c, &r);
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
  size_t nv = ox_repo_versions(s->repo, ox_slice(m->name, strlen(m->name)), versions, 64);
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
                      "\",\"extensions\":[\"binary_tensor_data\",\"statistics\","
                      "\"model_configuration\"]}")) {
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  respond_json(c, 200, &b);
}

static ox_metrics_model_t metrics_view(ox_model_t *m) {
  ox_model_state_t *st = m->app;
  return (ox_metrics_model_t){.model = m->name, .version = m->version, .stats = &st->stats,
                              .pending = st->batcher ? ox_batcher_pending(st->batcher) : 0};
}

/* Statistics of one model version, every version of a model (name), or everything (NULL). */
static void stats_json(ox_server_t *s, ox_conn_t *c, const char *name, ox_model_t *one) {
  ox_buf_t b;
  ox_buf_init(&b);
  int rc = ox_buf_puts(&b, "{\"model_stats\":[");
  int first = 1;
  for (size_t i = 0; i < s->num_models; i++) {
    ox_model_t *m = s->models[i];
    if ((one && m != one) || (name && strcmp(name, m->name))) continue;
    if (!first) rc |= ox_buf_puts(&b, ",");
    ox_metrics_model_t v = metrics_view(m);
    rc |= ox_metrics_stats_json(&b, &v);
    first = 0;
  }
  rc |= ox_buf_puts(&b, "]}");
  if (rc) {
    ox_buf_free(&b);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  respond_json(c, 200, &b);
}

static void metrics_text(ox_server_t *s, ox_conn_t *c) {
  ox_metrics_model_t *v = calloc(s->num_models + 1, sizeof *v);
  ox_buf_t b;
  ox_buf_init(&b);
  if (!v) {
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  for (size_t i = 0; i < s->num_models; i++) v[i] = metrics_view(s->models[i]);
  int rc = ox_metrics_render(&b, v, s->num_models, ox_http_open_connections());
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
  if (!rc && s->features) rc = ox_fstore_metrics(s->features, &b);
  free(v);
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

void ox_server_handle(void *app, ox_conn_t *c, const ox_http_request_t *head,
                      ox_http_body_t *body) {
  ox_server_t *s = app;
  /* Split the path into segments. */
  ox_slice_t seg[OX_MAX_SEGMENTS];
  size_t nseg = 0;
  const char *p = head->path.ptr, *end = p + head->path.len;
  if (p == end || *p != '/') {
    ox_http_body_free(body);
    ox_conn_respond_error(c, 400, "request target must be an absolute path");
    return;
  }
  while (p < end) {
    p++; /* skip '/' */
    const char *q = p;
    while (q < end && *q != '/') q++;
    if (nseg == OX_MAX_SEGMENTS) {
      nseg++;
      break;
    }
    seg[nseg++] = ox_slice(p, (size_t)(q - p));
    p = q;
  }
  int is_get = ox_slice_eq(head->method, "GET") || ox_slice_eq(head->method, "HEAD");
  int is_post = ox_slice_eq(head->method, "POST");
  int allow_post = 0; /* which method the matched endpoint takes, for 405's Allow */
  if (ox_conn_tag(c) == OX_LISTENER_ADMIN && !(nseg >= 1 && ox_slice_eq(seg[0], "v1")) &&
      !(nseg == 3 && ox_slice_eq(seg[0], "v2") && ox_slice_eq(seg[1], "health")))
    goto not_found; /* the admin listener serves the admin endpoints and health only */
  if (nseg == 1 && ox_slice_eq(seg[0], "metrics")) {
    if (!is_get) goto bad_method;
    ox_http_body_free(body);
    metrics_text(s, c);
    return;
  }
  if (nseg >= 2 && nseg <= 4 && ox_slice_eq(seg[0], "v1")) {
    if (nseg == 2 && ox_slice_eq(seg[1], "events")) {
      allow_post = 1;
      if (!is_post) goto bad_method;
      if (!admin_gate(s, c, head, body)) return;
      ox_server_events(s, c, body);
      return;
    }
    if (nseg == 4 && ox_slice_eq(seg[1], "features")) {
      int is_put = ox_slice_eq(head->method, "PUT");
      if (!is_get && !is_put) {
        ox_http_body_free(body);
        ox_http_resp_t r;
        ox_http_resp_init(&r, 405);
        ox_http_resp_error(&r, 405, "method not allowed for this endpoint");
        ox_buf_puts(&r.extra_headers, "Allow: GET, HEAD, PUT\r\n");
        ox_conn_respond(c, &r);
        return;
      }
      char table[OX_MAX_SEGMENT], key[OX_MAX_SEGMENT];
      long tl = seg[2].len < OX_MAX_SEGMENT ? ox_url_decode_segment(seg[2], table) : -1;
      long kl = seg[3].len < OX_MAX_SEGMENT ? ox_url_decode_segment(seg[3], key) : -1;
      if (tl <= 0 || kl <= 0) {
        ox_http_body_free(body);
        ox_conn_respond_error(c, 400, "bad feature row address: /v1/features/{table}/{key}");
        return;
      }
      if (is_put && !admin_gate(s, c, head, body)) return;
      ox_server_feature_row(s, c, is_put, ox_slice(table, (size_t)tl), ox_slice(key, (size_t)kl),
                            body);
      return;
    }
    goto not_found;
  }
  if (nseg == 0 || nseg > OX_MAX_SEGMENTS || !ox_slice_eq(seg[0], "v2")) goto not_found;
  if (nseg == 3 && ox_slice_eq(seg[1], "models") && ox_slice_eq(seg[2], "stats")) {
    if (!is_get) goto bad_method;
    ox_http_body_free(body);
    stats_json(s, c, NULL, NULL);
    return;
  }

  if (nseg == 1) {
    if (!is_get) goto bad_method;
    ox_http_body_free(body);
    server_metadata(c);
    return;
  }
  if (nseg == 3 && ox_slice_eq(seg[1], "health")) {
    if (!is_get) goto bad_method;
    ox_http_body_free(body);
    if (ox_slice_eq(seg[2], "live")) {
      respond_empty(c, 200);
      return;
    }
    if (ox_slice_eq(seg[2], "ready"))
      {
      respond_empty(c, atomic_load(&s->draining) ? 503 : 200);
      return;
    }
    goto not_found;
  }
  if (nseg >= 3 && ox_slice_eq(seg[1], "models")) {
    /* models/{m}[/versions/{v}][/ready|/infer] */
    char name[OX_MAX_SEGMENT], ver[OX_MAX_SEGMENT];
    if (seg[2].len == 0 || seg[2].len >= OX_MAX_SEGMENT) goto not_found;
    long nl = ox_url_decode_segment(seg[2], name);
    if (nl <= 0) goto bad_name;
    if (!ox_name_valid(name, (size_t)nl)) goto bad_name;
    if ((nl == 1 && name[0] == '.') || (nl == 2 && name[0] == '.' && name[1] == '.'))
      goto bad_name;
    size_t k = 3;
    ox_slice_t version = ox_slice("", 0);
    if (nseg >= 5 && ox_slice_eq(seg[3], "versions")) {
      if (seg[4].len == 0 || seg[4].len >= OX_MAX_SEGMENT) goto not_found;
      long vl = ox_url_decode_segment(seg[4], ver);
      if (vl <= 0) goto not_found_version;
      version = ox_slice(ver, (size_t)vl);
      k = 5;
    }
    ox_slice_t action = k < nseg ? seg[k] : ox_slice("", 0);
    if (k + 1 < nseg || (k < nseg && !ox_slice_eq(action, "ready") &&
                         !ox_slice_eq(action, "infer") && !ox_slice_eq(action, "config") &&
                         !ox_slice_eq(action, "stats")))
      goto not_found;
    ox_model_t *m = NULL;
    if (ox_repo_find(s->repo, ox_slice(name, (size_t)nl), version, &m) != 0) {
      ox_http_body_free(body);
      int64_t vs[1];
      if (version.len && ox_repo_versions(s->repo, ox_slice(name, (size_t)nl), vs, 1))
        {
      ox_conn_respond_error(c, 404, "unknown version of the model");
      return;
    }
      {
      ox_conn_respond_error(c, 404, "unknown model");
      return;
    }
    }
    if (k == nseg) {
      if (!is_get) goto bad_method;
      ox_http_body_free(body);
      {
      model_metadata(s, c, m);
      return;
    }
    }
    if (ox_slice_eq(action, "ready")) {
      if (!is_get) goto bad_method;
      ox_http_body_free(body);
      int ok = !atomic_load(&s->draining) && !((ox_model_state_t *)m->app)->unavailable;
      respond_empty(c, ok ? 200 : 503);
      return;
    }
    if (ox_slice_eq(action, "config")) {
      if (!is_get) goto bad_method;
      ox_http_body_free(body);
      model_config(c, m);
      return;
    }
    if (ox_slice_eq(action, "stats")) {
      if (!is_get) goto bad_method;
      ox_http_body_free(body);
      if (version.len) stats_json(s, c, NULL, m);
      else stats_json(s, c, m->name, NULL);
      return;
    }
    allow_post = 1;
    if (!is_post) goto bad_method;
    if (atomic_load(&s->draining)) {
      ox_http_body_free(body);
      {
      ox_conn_respond_error(c, 503, "server is shutting down");
      return;
    }
    }
    ox_server_infer(s, c, m, head, body);
    return;
  }
not_found:
  ox_http_body_free(body);
  ox_conn_respond_error(c, 404, "no such endpoint");
  return;
not_found_version:
  ox_http_body_free(body);
  ox_conn_respond_error(c, 404, "unknown version of the model");
  return;
bad_name:
  ox_http_body_free(body);
  ox_conn_respond_error(c, 400, "invalid model name");
  return;
bad_method: {
  ox_http_body_free(body);
  ox_http_resp_t r;
  ox_http_resp_init(&r, 405);
  ox_http_resp_error(&r, 405, "method not allowed for this endpoint");
  ox_buf_puts(&r.extra_headers, allow_post ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n");
  ox_conn_respond(c, &r);
}
}
