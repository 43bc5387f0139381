/* events.c: the feature store's HTTP endpoints, run on a worker thread (never the loop's):
 *
 *   POST /v1/events                  body: JSON lines, or one JSON array, of events
 *        {"ts": 1700000000000, "user_id": "u1", "card_id": "c1", "merchant_id": "m1",
 *         "amount": 12.5, ...}       (other fields are ignored)
 *      Every event is appended to each entity its key fields name (--event-keys, by default
 *      user_id and card_id: entities "user:<user_id>" and "card:<card_id>") with payload
 *      (ts, amount, merchant: the store's keyed hash of the merchant_id text, see
 *      ox_fstore_merchant_hash). All lines are validated before
 *      anything is stored: a bad one is a 400 naming its line (array: element) number, and
 *      nothing of the request is applied. The request is stored in one transaction: all of it
 *      or, on any error or crash, none of it. An event may carry "event_id" (a string of 1 to
 *      128 bytes): an event whose id is already stored, or repeated in the request, is not
 *      stored again (ids are remembered at least as long as --feature-retention-ms keeps
 *      events), so a client may retry a request whose answer it did not get. The answer,
 *      {"accepted": n, "duplicates": d} (stored, and skipped as duplicates), comes once the
 *      events are committed (and fsynced, unless --feature-sync none), so the next inference
 *      sees them. A store that would grow past --feature-store-max-bytes answers 507
 *      {"error": "feature store full: ..."} with nothing stored; scoring goes on. An entity
 *      may hold at most --feature-max-events-per-entity-24h events in any 24 h window: a
 *      request that would take one over is refused whole with 429 naming the entity (nothing
 *      of it is stored). With --feature-events-to-redis the events are then appended to Redis
 *      lists "~ev:<entity>" too, and the answer says how that went: {"accepted": n,
 *      "duplicates": d, "write_through": "ok" | "<error>"}; a Redis failure does not fail the
 *      request (the events are stored).
 *   PUT /v1/features/{table}/{key}   body: a JSON array of numbers, stored as float32 row
 *      "table:key" in L1 and L2 and written through to Redis/PostgreSQL when configured.
 *      {"table", "key", "width", "write_through": "ok" | "none" | "<error>"}
 *   GET /v1/features/{table}/{key}   {"table", "key", "values": [...], "tier": "l1|l2|l3"},
 *      or 404; 503 when a tier that might hold it is down. A value that is not finite (only
 *      another writer of Redis/PostgreSQL can store one: PUT refuses them) is null.
 *   Both: table of letters, digits, '_', '.' and '-' (at most 63 bytes: it can never start
 *   with '~', which marks the store's internal keys), key of 1 to 200 bytes of valid UTF-8
 *   (after percent-decoding); anything else is a 400.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/clock.h"
#include "core/container.h"
#include "core/error.h"
#include "core/log.h"
#include "core/text.h"
#include "core/utf8.h"
#include "proto/json.h"
#include "proto/numconv.h"
#include "proto/tensor_json.h"
#include "server/event_parse.h"
#include "server/server.h"

#define MAX_ROW_VALUES 4096 /* per stored row */
#define ROW_GET_DEADLINE_MS 500
#define ROW_PUT_DEADLINE_MS 1000

typedef enum { FJ_EVENTS, FJ_ROW_GET, FJ_ROW_PUT, FJ_SNAPSHOT } fjob_kind_t;

typedef struct {
  ox_job_t job;
  ox_task_t done;
  ox_server_t *s;
  ox_conn_t *conn;
  fjob_kind_t kind;
  ox_slice_t body; /* borrowed from the connection until ox_conn_respond */
  char table[256], key[256];
  size_t tlen, klen;
  ox_http_resp_t resp;
  ox_fstream_req_t sreq; /* stream mode: the append (fstream.h) */
  size_t nevents;
} fjob_t;

/* Answers the request now with error code err (loop thread). */
static void respond_err(ox_conn_t *c, int err, const char *msg) {
  ox_conn_respond_error(c, ox_http_status_of(err), msg);
}

static void fjob_done(ox_loop_t *loop, ox_task_t *t) {
  fjob_t *j = ox_container_of(t, fjob_t, done);
  atomic_fetch_sub(&j->s->inflight, 1);
  ox_conn_respond(j->conn, &j->resp);
  free(j);
}

/* The job's answer: status with {"error": msg}. */
static void fjob_error_status(fjob_t *j, int status, const char *msg) {
  ox_http_resp_free(&j->resp);
  ox_http_resp_init(&j->resp, status);
  if (ox_http_resp_error(&j->resp, status, msg)) j->resp.body.len = 0;
}

/* The job failed with error code err: its HTTP answer. */
static void fjob_error(fjob_t *j, int err, const char *msg) {
  fjob_error_status(j, ox_http_status_of(err), msg);
}

/* Answers 200 with the JSON in b (taken over), or 500 when building it ran out of memory (oom
 * non-zero: b is freed). */
static void fjob_json(fjob_t *j, ox_buf_t *b, int oom) {
  if (oom) {
    ox_buf_free(b);
    fjob_error(j, OX_ENOMEM, "out of memory");
    return;
  }
  ox_http_resp_free(&j->resp);
  ox_http_resp_init(&j->resp, 200);
  j->resp.body = *b;
  ox_buf_init(b);
}

/* ---- events ----------------------------------------------------------------------------- */

static const char *event_keys_spec(const ox_server_t *s) {
  return s->event_keys ? s->event_keys : "user_id,card_id";
}

/* Stream mode, on the stream's thread: the outcome of the request's append (features/fstream.h)
 * becomes its answer, posted to the connection's loop. */
static void stream_done(ox_fstream_req_t *q, int rc) {
  fjob_t *j = ox_container_of(q, fjob_t, sreq);
  ox_fstream_result_t *r = &q->result;
  char err[800];
  size_t errcap = sizeof err;
  ox_buf_t b;
  ox_buf_init(&b);
  int e = 0;
  if (rc == 0) {
    e = ox_buf_printf(&b, "{\"accepted\":%zu,\"duplicates\":%zu,\"stream_id\":\"%s\"}", r->accepted,
                      r->duplicates, r->id);
    fjob_json(j, &b, e);
  } else if (rc == OX_EPENDING) {
    e = ox_buf_printf(&b, "{\"stream_id\":\"%s\",\"applied\":false,\"detail\":", r->id);
    e |= ox_buf_append_json_string(&b, r->why, strlen(r->why));
    e |= ox_buf_puts(&b, "}");
    fjob_json(j, &b, e);
    if (!e) j->resp.status = 202;
  } else if (rc == OX_EQUOTA) {
    snprintf(err, errcap,
             "entity '%s' would hold more than %" PRIu64
             " events in a 24 h window (--feature-max-events-per-entity-24h); no event of this "
             "request was stored (stream entry %s is refused by every replica)",
             r->quota_entity, ox_fstore_event_cap(j->s->features), r->id);
    fjob_error(j, OX_EQUOTA, err);
  } else if (rc == OX_EUNAVAILABLE) {
    ox_warn("POST /v1/events: %zu events not appended: %s", j->nevents, r->why);
    snprintf(err, errcap, "%s; nothing of this request was stored", r->why);
    fjob_error(j, OX_EUNAVAILABLE, err);
  } else if (rc == OX_ETIMEOUT) { /* 504: not "refused", the outcome is unknown */
    ox_warn("POST /v1/events: %zu events, outcome unknown: %s", j->nevents, r->why);
    snprintf(err, errcap,
             "%s; send the same request again (with event_id on every event, a retry stores "
             "each event once)",
             r->why);
    fjob_error_status(j, 504, err);
  } else {
    fjob_error(j, rc, ox_strerror(rc));
  }
  ox_loop_post(ox_conn_loop(j->conn), &j->done);
}

/* Returns 1 when the answer will be posted by someone else (stream mode), else 0. */
static int run_events(fjob_t *j) {
  if (j->s->stream && j->body.len > OX_FSTREAM_MAX_ENTRY) {
    char msg[200];
    snprintf(msg, sizeof msg,
             "request body of %zu bytes: with --feature-events-stream a request is one stream "
             "entry of at most %u bytes; send fewer events a request",
             j->body.len, OX_FSTREAM_MAX_ENTRY);
    fjob_error(j, OX_ETOO_LARGE, msg);
    return 0;
  }
  ox_event_keys_t keys;
  ox_event_keys_parse(event_keys_spec(j->s), &keys);
  keys.merchant_key = ox_fstore_merchant_key(j->s->features);
  ox_arena_t arena;
  ox_arena_init(&arena);
  ox_fstore_event_t *evs = NULL;
  size_t n = 0;
  char err[400];
  int rc = ox_events_parse(j->body.ptr, j->body.len, &keys, &arena, &evs, &n, err, sizeof err);
  if (rc == OX_ENOMEM) {
    fjob_error(j, OX_ENOMEM, "out of memory");
  } else if (rc) {
    fjob_error(j, OX_EINVALID, err);
  } else if (j->s->stream) {
    /* appended and answered by the stream's threads: this worker moves on (j is theirs now) */
    const char *spec = event_keys_spec(j->s);
    j->nevents = n;
    j->sreq.body = j->body;
    j->sreq.keys = ox_slice(spec, strlen(spec));
    j->sreq.done = stream_done;
    free(evs);
    ox_arena_free(&arena);
    ox_fstream_submit(j->s->stream, &j->sreq);
    return 1;
  } else {
    int l3err = 0;
    size_t dups = 0;
    rc = ox_fstore_ingest(j->s->features, evs, n, &l3err, &dups);
    if (rc == OX_EQUOTA) {
      char ent[OX_FSTORE_MAX_ENTITY + 1];
      uint64_t cap = ox_fstore_quota_entity(j->s->features, ent, sizeof ent);
      snprintf(err, sizeof err,
               "entity '%s' would hold more than %" PRIu64
               " events in a 24 h window (--feature-max-events-per-entity-24h); no event of "
               "this request was stored",
               ent, cap);
      fjob_error(j, OX_EQUOTA, err);
    } else if (rc == OX_ESTORE_FULL) {
      uint64_t used, cap;
      ox_fstore_usage(j->s->features, &used, &cap);
      ox_warn("POST /v1/events: %zu events refused: the feature store is full", n);
      snprintf(err, sizeof err,
               "feature store full: %zu events would not fit in its maximum size of %" PRIu64
               " bytes (--feature-store-max-bytes; %" PRIu64
               " in use); nothing of this request was stored",
               n, cap, used);
      fjob_error(j, OX_ESTORE_FULL, err);
    } else if (rc) {
      ox_warn("POST /v1/events: storing %zu events failed: %s", n, ox_strerror(rc));
      snprintf(err, sizeof err,
               "storing the events failed (%s); nothing of this request was stored",
               ox_strerror(rc));
      fjob_error(j, rc == OX_EUNAVAILABLE ? OX_EUNAVAILABLE : OX_EINTERNAL, err);
    } else {
      ox_buf_t b;
      ox_buf_init(&b);
      int e = ox_buf_printf(&b, "{\"accepted\":%zu,\"duplicates\":%zu", n - dups, dups);
      if (ox_fstore_events_to_redis(j->s->features)) {
        const char *wt = l3err ? ox_strerror(l3err) : "ok";
        e |= ox_buf_puts(&b, ",\"write_through\":");
        e |= ox_buf_append_json_string(&b, wt, strlen(wt));
      }
      e |= ox_buf_puts(&b, "}");
      fjob_json(j, &b, e);
    }
  }
  free(evs);
  ox_arena_free(&arena);
  return 0;
}

/* ---- rows ------------------------------------------------------------------------------- */

static int row_head(ox_buf_t *b, const fjob_t *j) {
  int rc = ox_buf_puts(b, "{\"table\":");
  rc |= ox_buf_append_json_string(b, j->table, j->tlen);
  rc |= ox_buf_puts(b, ",\"key\":");
  rc |= ox_buf_append_json_string(b, j->key, j->klen);
  return rc;
}

/* A row's values as a JSON array: a value that is not finite (stored by another writer of an
 * L3 backend: PUT refuses them) is null, so the answer stays JSON for strict parsers. */
static int row_values_json(ox_buf_t *b, const float *v, size_t n) {
  size_t i = 0;
  while (i < n && __builtin_isfinite(v[i])) i++;
  if (i == n) return ox_tensor_json_encode(b, OX_DT_FP32, v, n); /* the common case */
  int e = ox_buf_puts(b, "[");
  for (i = 0; i < n && !e; i++) {
    if (i) e |= ox_buf_puts(b, ",");
    if (!__builtin_isfinite(v[i])) {
      e |= ox_buf_puts(b, "null");
      continue;
    }
    size_t at = b->len; /* one value as "[x]", then its brackets dropped */
    e |= ox_tensor_json_encode(b, OX_DT_FP32, &v[i], 1);
    if (!e) {
      memmove(b->data + at, b->data + at + 1, b->len - at - 2);
      b->len -= 2;
    }
  }
  return e | ox_buf_puts(b, "]");
}

static void run_row_get(fjob_t *j, ox_slice_t key) {
  ox_buf_t row, b;
  ox_buf_init(&row);
  ox_buf_init(&b);
  ox_tier_t tier;
  int64_t deadline = ox_mono_ns() + ROW_GET_DEADLINE_MS * INT64_C(1000000);
  int rc = ox_fstore_row_get(j->s->features, key, &row, deadline, &tier);
  if (rc == OX_ENOT_FOUND) {
    fjob_error(j, OX_ENOT_FOUND, "no such feature row");
  } else if (rc) {
    char err[200];
    snprintf(err, sizeof err, "the feature row could not be read: %s",
             rc == OX_ETIMEOUT ? "a tier missed the deadline" : ox_strerror(rc));
    fjob_error(j, rc == OX_ENOMEM ? OX_ENOMEM : OX_EUNAVAILABLE, err);
  } else {
    static const char *const names[] = {"none", "l1", "l2", "l3"};
    int e = row_head(&b, j);
    e |= ox_buf_puts(&b, ",\"values\":");
    /* the row's float32 values, read in place (a buffer's start is malloc-aligned) */
    e |= row_values_json(&b, (const float *)row.data, row.len / sizeof(float));
    e |= ox_buf_printf(&b, ",\"tier\":\"%s\"}", names[tier]);
    fjob_json(j, &b, e);
  }
  ox_buf_free(&b);
  ox_buf_free(&row);
}

static void run_row_put(fjob_t *j, ox_slice_t key) {
  ox_json_t js;
  ox_json_init(&js, j->body.ptr ? j->body.ptr : "", j->body.len);
  float *vals = malloc(MAX_ROW_VALUES * sizeof(float));
  size_t n = 0;
  const char *bad = NULL;
  if (!vals) {
    fjob_error(j, OX_ENOMEM, "out of memory");
    return;
  }
  ox_json_ws(&js);
  if (js.p >= js.end || *js.p != '[')
    bad = "the body must be a JSON array of numbers";
  else
    js.p++;
  ox_json_ws(&js);
  if (!bad && js.p < js.end && *js.p == ']')
    js.p++;
  else
    while (!bad) {
      ox_json_ws(&js);
      ox_json_number_t num;
      float f;
      if (js.p >= js.end || (*js.p != '-' && (*js.p < '0' || *js.p > '9')) ||
          ox_json_number(&js, &num) ||
          ox_parse_f32(num.text.ptr, num.text.len, &f) != num.text.len || !__builtin_isfinite(f)) {
        bad = "the body must be a JSON array of finite numbers (float32)";
        break;
      }
      if (n == MAX_ROW_VALUES) {
        bad = "a feature row holds at most 4096 values";
        break;
      }
      vals[n++] = f;
      ox_json_ws(&js);
      if (js.p < js.end && *js.p == ',') {
        js.p++;
        continue;
      }
      if (js.p < js.end && *js.p == ']') {
        js.p++;
        break;
      }
      bad = "the body must be a JSON array of numbers";
    }
  ox_json_ws(&js);
  if (!bad && js.p != js.end) bad = "unexpected text after the JSON array";
  if (bad) {
    fjob_error(j, OX_EINVALID, bad);
    free(vals);
    return;
  }
  int l3err = 0;
  int64_t deadline = ox_mono_ns() + ROW_PUT_DEADLINE_MS * INT64_C(1000000);
  int rc = ox_fstore_row_put(j->s->features, key, vals, n * sizeof(float), deadline, &l3err);
  free(vals);
  if (rc) {
    char err[200];
    snprintf(err, sizeof err, "%s: %s",
             rc == OX_ESTORE_FULL ? "feature store full (--feature-store-max-bytes)"
                                  : "storing the feature row failed",
             ox_strerror(rc));
    fjob_error(j, rc == OX_ESTORE_FULL ? OX_ESTORE_FULL : OX_EUNAVAILABLE, err);
    return;
  }
  ox_buf_t b;
  ox_buf_init(&b);
  int e = row_head(&b, j);
  e |= ox_buf_printf(&b, ",\"width\":%zu,\"write_through\":", n);
  const char *wt = l3err ? ox_strerror(l3err) : "ok";
  e |= ox_buf_append_json_string(&b, wt, strlen(wt));
  e |= ox_buf_puts(&b, "}");
  fjob_json(j, &b, e);
}

/* ---- snapshot ----------------------------------------------------------------------------- */

typedef struct {
  void *map;
  size_t len;
} snap_map_t;

static void snap_release(void *arg) {
  snap_map_t *m = arg;
  munmap(m->map, m->len);
  free(m);
}

/* An unlinked file in dir (O_TMPFILE, or a named one removed at once). fd or -errno. */
static int tmp_file(const char *dir) {
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
    return fd < 0 ? -errno : fd;
  char path[4096];
  snprintf(path, sizeof path, "%s/.snapshot-XXXXXX", dir);
  fd = mkostemp(path, O_CLOEXEC);
  if (fd < 0) return -errno;
  unlink(path);
  return fd;
}

/* GET /v1/features/snapshot: the store copied to an unlinked file beside it, then sent from a
 * read-only mapping of that file (the response's iov; unmapped when written or dropped). */
static void run_snapshot(fjob_t *j) {
  char id[48] = "0-0";
  int fd = tmp_file(j->s->feature_dir ? j->s->feature_dir : ".");
  int rc = fd < 0 ? fd : 0;
  if (!rc)
    rc = j->s->stream ? ox_fstream_snapshot(j->s->stream, fd, id, sizeof id)
                      : ox_fstore_snapshot(j->s->features, fd);
  struct stat st;
  if (!rc && fstat(fd, &st)) rc = -errno;
  snap_map_t *m = NULL;
  if (!rc) {
    m = calloc(1, sizeof *m);
    if (!m) rc = OX_ENOMEM;
  }
  if (!rc) {
    m->len = (size_t)st.st_size;
    m->map = mmap(NULL, m->len, PROT_READ, MAP_SHARED, fd, 0);
    if (m->map == MAP_FAILED) {
      rc = -errno;
      free(m);
    }
  }
  if (fd >= 0) close(fd); /* the mapping keeps the file */
  if (rc) {
    ox_warn("GET /v1/features/snapshot: %s", ox_strerror(rc));
    fjob_error(j, OX_EINTERNAL, "the snapshot of the feature store failed");
    return;
  }
  ox_http_resp_free(&j->resp);
  ox_http_resp_init(&j->resp, 200);
  j->resp.content_type = "application/octet-stream";
  j->resp.iov = malloc(sizeof *j->resp.iov);
  if (!j->resp.iov || ox_buf_printf(&j->resp.extra_headers, "X-Onnxd-Stream-Id: %s\r\n", id)) {
    snap_release(m);
    fjob_error(j, OX_ENOMEM, "out of memory");
    return;
  }
  j->resp.iov[0] = (struct iovec){m->map, m->len};
  j->resp.iovcnt = 1;
  j->resp.release = snap_release;
  j->resp.release_arg = m;
  ox_info("GET /v1/features/snapshot: %zu bytes at stream position %s", m->len, id);
}

int ox_server_stream_decode(void *arg, ox_slice_t body, ox_slice_t keyspec, ox_arena_t *a,
                            ox_fstore_event_t **evs, size_t *n) {
  char spec[1024];
  if (keyspec.len >= sizeof spec) return OX_EINVALID;
  memcpy(spec, keyspec.ptr, keyspec.len);
  spec[keyspec.len] = 0;
  ox_event_keys_t keys;
  ox_event_keys_parse(spec, &keys);
  keys.merchant_key = ox_fstore_merchant_key(arg);
  char err[256];
  return ox_events_parse(body.ptr, body.len, &keys, a, evs, n, err, sizeof err);
}

/* ---- jobs ------------------------------------------------------------------------------- */

static void fjob_run(ox_job_t *job) {
  fjob_t *j = (fjob_t *)job;
  ox_http_resp_init(&j->resp, 200);
  char key[600];
  int kl = snprintf(key, sizeof key, "%.*s:%.*s", (int)j->tlen, j->table, (int)j->klen, j->key);
  if (j->kind == FJ_EVENTS) {
    if (run_events(j)) return; /* the stream answers it; j may be gone already */
  } else if (j->kind == FJ_SNAPSHOT) {
    run_snapshot(j);
  } else if (j->kind == FJ_ROW_GET) {
    run_row_get(j, ox_slice(key, (size_t)kl));
  } else {
    run_row_put(j, ox_slice(key, (size_t)kl));
  }
  ox_loop_post(ox_conn_loop(j->conn), &j->done);
}

static void fjob_cancel(ox_job_t *job) {
  fjob_t *j = (fjob_t *)job;
  fjob_error(j, OX_EUNAVAILABLE, "server is shutting down");
  ox_loop_post(ox_conn_loop(j->conn), &j->done);
}

static void submit(ox_server_t *s, ox_conn_t *c, fjob_t *j, ox_slice_t body) {
  if (!s->features) {
    free(j);
    respond_err(c, OX_ENOT_FOUND,
                "the feature store is not enabled: start onnxd with --feature-dir, or "
                "serve a model with a feature_view");
    return;
  }
  if (atomic_load(&s->draining)) {
    free(j);
    respond_err(c, OX_EUNAVAILABLE, "server is shutting down");
    return;
  }
  j->job.run = fjob_run;
  j->job.cancel = fjob_cancel;
  j->done.fn = fjob_done;
  j->s = s;
  j->conn = c;
  j->body = body;
  atomic_fetch_add(&s->inflight, 1);
  if (ox_pool_submit(s->pool, &j->job) != 0) {
    atomic_fetch_sub(&s->inflight, 1);
    free(j);
    respond_err(c, OX_EUNAVAILABLE, "server is overloaded: the worker queue is full; retry later");
  }
}

void ox_server_events(ox_server_t *s, ox_conn_t *c, ox_slice_t body) {
  fjob_t *j = calloc(1, sizeof *j);
  if (!j) {
    respond_err(c, OX_ENOMEM, "out of memory");
    return;
  }
  j->kind = FJ_EVENTS;
  submit(s, c, j, body);
}

void ox_server_feature_snapshot(ox_server_t *s, ox_conn_t *c) {
  fjob_t *j = calloc(1, sizeof *j);
  if (!j) {
    respond_err(c, OX_ENOMEM, "out of memory");
    return;
  }
  j->kind = FJ_SNAPSHOT;
  submit(s, c, j, ox_slice(NULL, 0));
}

void ox_server_feature_stream(ox_server_t *s, ox_conn_t *c) {
  if (!s->stream) {
    respond_err(c, OX_ENOT_FOUND,
                "no event stream: start onnxd with --feature-events-stream KEY --redis HOST:PORT");
    return;
  }
  ox_http_resp_t r;
  ox_http_resp_init(&r, 200);
  if (ox_fstream_status_json(s->stream, &r.body)) {
    ox_http_resp_free(&r);
    respond_err(c, OX_ENOMEM, "out of memory");
    return;
  }
  ox_conn_respond(c, &r);
}

void ox_server_feature_row(ox_server_t *s, ox_conn_t *c, int put, ox_slice_t table, ox_slice_t key,
                           ox_slice_t body) {
  fjob_t *j = calloc(1, sizeof *j);
  if (!j) {
    respond_err(c, OX_ENOMEM, "out of memory");
    return;
  }
  int ok = table.len > 0 && table.len <= 63 && key.len > 0 && key.len <= 200 &&
           ox_name_valid(table.ptr, table.len);
  if (!ok) {
    free(j);
    respond_err(c, OX_EINVALID,
                "bad feature row address: /v1/features/{table}/{key}, table of letters, "
                "digits, '_', '.' or '-' (at most 63), key of 1 to 200 bytes");
    return;
  }
  if (!ox_utf8_valid(key.ptr, key.len)) {
    free(j);
    respond_err(c, OX_EINVALID, "bad feature row address: the key must be valid UTF-8");
    return;
  }
  memcpy(j->table, table.ptr, table.len);
  j->tlen = table.len;
  memcpy(j->key, key.ptr, key.len);
  j->klen = key.len;
  j->kind = put ? FJ_ROW_PUT : FJ_ROW_GET;
  submit(s, c, j, body);
}
