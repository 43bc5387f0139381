/* models.c: the model repository extension over REST (Triton's names and answers):
 *
 *   POST /v2/repository/index                 [{"name","version","state","reason"}]
 *   POST /v2/repository/models/{m}/load       200 {} when the new version serves, 400 on failure
 *   POST /v2/repository/models/{m}/unload     200 {} once new requests get 404
 *
 * The handlers run on the loop thread; a load or unload goes to the model manager
 * (infer/models.h), whose thread calls back when it is over; the callback posts the outcome
 * to the connection's loop (ox_loop_post), which answers. A client that goes away meanwhile is
 * not cancelled: the operation completes and the answer is dropped by the connection. With
 * --model-control-mode none, load and unload answer 400 as Triton does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/container.h"
#include "core/error.h"
#include "proto/json.h"
#include "server/server.h"

#define OX_MAX_CONFIG_TEXT (1u << 20)

/* One load or unload waiting for the manager: freed on the loop after answering. */
typedef struct {
  ox_task_t task;
  ox_conn_t *conn;
  int rc;
  char msg[512];
} repo_op_t;

static void op_answer(ox_loop_t *loop, ox_task_t *task) {
  (void)loop;
  repo_op_t *op = ox_container_of(task, repo_op_t, task);
  if (op->rc) {
    ox_conn_respond_error(op->conn, op->rc == OX_EUNAVAILABLE ? 503 : 400, op->msg);
  } else {
    ox_http_resp_t r;
    ox_http_resp_init(&r, 200);
    if (ox_buf_puts(&r.body, "{}")) {
      ox_http_resp_free(&r);
      ox_conn_respond_error(op->conn, 500, "out of memory");
    } else {
      ox_conn_respond(op->conn, &r);
    }
  }
  free(op);
}

/* Manager thread: the operation is over; answer on the connection's loop. */
static void op_done(void *arg, int rc, const char *msg) {
  repo_op_t *op = arg;
  op->rc = rc;
  snprintf(op->msg, sizeof op->msg, "%s", msg && msg[0] ? msg : "failed");
  op->task.fn = op_answer;
  ox_loop_post(ox_conn_loop(op->conn), &op->task);
}

/* The member key of object at js's cursor ('{' consumed by the caller's loop). Reads
 * {"parameters": {"config": "<text>", ...}} and {"ready": bool}; unknown members are skipped.
 * config (malloc'd, unescaped) is NULL when absent. 0 or OX_EINVALID with a message in err. */
static int parse_body(ox_slice_t body, int *ready, char **config, size_t *config_len, int *has_file,
                      const char **err) {
  *ready = 0;
  *config = NULL;
  *config_len = 0;
  *has_file = 0;
  ox_json_t js;
  ox_json_init(&js, body.ptr, body.len);
  ox_json_ws(&js);
  if (js.p == js.end) return 0; /* no body */
  *err = "request body must be a JSON object";
  if (ox_json_validate(&js)) return OX_EINVALID;
  ox_json_init(&js, body.ptr, body.len);
  ox_json_ws(&js);
  if (*js.p != '{') return OX_EINVALID;
  js.p++;
  int depth = 0; /* 0: top object, 1: parameters */
  for (;;) {
    ox_json_ws(&js);
    if (*js.p == '}') {
      js.p++;
      if (depth == 0) return 0;
      depth = 0;
      continue;
    }
    if (*js.p == ',') {
      js.p++;
      ox_json_ws(&js);
    }
    ox_slice_t key;
    int esc;
    if (ox_json_string(&js, &key, &esc)) return OX_EINVALID;
    ox_json_ws(&js);
    js.p++; /* ':' (validated) */
    ox_json_ws(&js);
    if (depth == 0 && ox_slice_eq(key, "parameters") && *js.p == '{') {
      js.p++;
      depth = 1;
      continue;
    }
    if (depth == 0 && ox_slice_eq(key, "ready")) {
      *ready = *js.p == 't';
    } else if (depth == 1 && ox_slice_eq(key, "config")) {
      if (*js.p != '"') {
        *err = "parameters.config must be a string holding the model's JSON configuration";
        free(*config);
        *config = NULL;
        return OX_EINVALID;
      }
      ox_slice_t v;
      int vesc;
      if (ox_json_string(&js, &v, &vesc)) return OX_EINVALID;
      if (v.len > OX_MAX_CONFIG_TEXT || *config) {
        *err = "parameters.config is too long or repeated";
        free(*config);
        *config = NULL;
        return OX_EINVALID;
      }
      if (!(*config = malloc(v.len + 1))) {
        *err = "out of memory";
        return OX_ENOMEM;
      }
      long n = vesc ? ox_json_unescape(v.ptr, v.len, *config) : (long)v.len;
      if (!vesc) memcpy(*config, v.ptr, v.len);
      *config_len = n < 0 ? 0 : (size_t)n;
      (*config)[*config_len] = 0;
      continue;
    } else if (depth == 1 && key.len > 5 && !memcmp(key.ptr, "file:", 5)) {
      *has_file = 1;
    }
    if (ox_json_skip(&js, depth + 1)) return OX_EINVALID;
  }
}

void ox_server_repo_index(ox_server_t *s, ox_conn_t *c, ox_slice_t body) {
  int ready, has_file;
  char *config;
  size_t clen;
  const char *err = "";
  if (parse_body(body, &ready, &config, &clen, &has_file, &err)) {
    free(config);
    ox_conn_respond_error(c, 400, err);
    return;
  }
  free(config);
  ox_http_resp_t r;
  ox_http_resp_init(&r, 200);
  if (ox_models_index_json(s->models, ready, &r.body)) {
    ox_http_resp_free(&r);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  ox_conn_respond(c, &r);
}

/* Common part of load and unload. */
static void repo_op(ox_server_t *s, ox_conn_t *c, ox_slice_t name, ox_slice_t body, int unload) {
  if (s->control_mode != OX_CONTROL_EXPLICIT) {
    ox_conn_respond_error(c, 400,
                          s->control_mode == OX_CONTROL_POLL
                              ? "explicit model load / unload is not allowed if polling is enabled"
                              : "explicit model load / unload is not allowed with "
                                "--model-control-mode none");
    return;
  }
  int ready, has_file;
  char *config = NULL;
  size_t clen = 0;
  const char *err = "";
  int rc = parse_body(body, &ready, &config, &clen, &has_file, &err);
  if (!rc && has_file) {
    rc = OX_EINVALID;
    err = "file: parameters (model bytes in the request) are not supported yet";
  }
  char nm[256];
  if (!rc && name.len >= sizeof nm) {
    rc = OX_EINVALID;
    err = "invalid model name";
  }
  repo_op_t *op = rc ? NULL : calloc(1, sizeof *op);
  if (!rc && !op) {
    rc = OX_ENOMEM;
    err = "out of memory";
  }
  if (rc) {
    free(config);
    ox_conn_respond_error(c, rc == OX_ENOMEM ? 500 : 400, err);
    return;
  }
  memcpy(nm, name.ptr, name.len);
  nm[name.len] = 0;
  op->conn = c;
  rc = unload ? ox_models_unload(s->models, nm, op_done, op)
              : ox_models_load(s->models, nm, config, clen, op_done, op);
  free(config);
  if (rc) {
    free(op);
    ox_conn_respond_error(c, rc == OX_ENOMEM ? 500 : 503,
                          rc == OX_ENOMEM ? "out of memory" : "server is shutting down");
  }
}

void ox_server_repo_load(ox_server_t *s, ox_conn_t *c, ox_slice_t name, ox_slice_t body) {
  repo_op(s, c, name, body, 0);
}

void ox_server_repo_unload(ox_server_t *s, ox_conn_t *c, ox_slice_t name, ox_slice_t body) {
  repo_op(s, c, name, body, 1);
}
