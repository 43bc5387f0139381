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
 *
 * Uploads: a load's parameters["file:<version>/<file>"] (base64, as tritonclient's
 * load_model(files=...) sends them; Triton requires parameters.config with them) are decoded
 * into a private temporary directory (mkdtemp under $TMPDIR or /tmp, mode 0700) laid out as a
 * repository, <tmp>/<model>/<version>/<file>; the manager reads the versions from there (config
 * from parameters.config, warm-up files from the repository) and the directory is removed when
 * the load is over, on the manager thread, whatever the outcome. Nothing is written into the
 * repository. The upload is decoded and written on the loop thread: it is an operator's call,
 * bounded by the body limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base64.h"
#include "core/container.h"
#include "core/error.h"
#include "core/text.h"
#include "proto/json.h"
#include "server/server.h"

#define OX_MAX_CONFIG_TEXT (1u << 20)
#define OX_MAX_UPLOAD_FILES 64

/* One load or unload waiting for the manager: freed on the loop after answering. */
typedef struct {
  ox_task_t task;
  ox_loop_t *loop;                                    /* where answer runs */
  void (*answer)(void *arg, int rc, const char *msg); /* the front end's */
  void *arg;
  int rc;
  char msg[512];
  char dir[PATH_MAX]; /* the upload's temporary directory, removed when the load is over ("": none)
                       */
} repo_op_t;

/* One parameters["file:<version>/<file>"]: slices of the request body (borrowed). */
typedef struct {
  ox_slice_t path; /* after "file:" */
  ox_slice_t data; /* REST: the JSON string's raw text (escaped when esc); raw: the bytes */
  int esc;
  int raw; /* gRPC's bytes_param: data is the file itself, not base64 */
} upload_file_t;

/* The request body's members that matter. */
typedef struct {
  int ready;
  char *config; /* malloc'd, unescaped; NULL when absent */
  size_t config_len;
  upload_file_t files[OX_MAX_UPLOAD_FILES];
  size_t nfiles;
} repo_body_t;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0; /* go on: remove what can be removed */
}

/* Removes an upload's temporary directory and everything in it (no symlink followed). */
static void rm_upload(const char *dir) {
  if (dir[0]) nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void op_answer(ox_loop_t *loop, ox_task_t *task) {
  (void)loop;
  repo_op_t *op = ox_container_of(task, repo_op_t, task);
  op->answer(op->arg, op->rc, op->msg);
  free(op);
}

/* Manager thread: the operation is over; answer on the front end's loop. */
static void op_done(void *arg, int rc, const char *msg) {
  repo_op_t *op = arg;
  rm_upload(op->dir);
  op->rc = rc;
  snprintf(op->msg, sizeof op->msg, "%s", msg && msg[0] ? msg : "failed");
  op->task.fn = op_answer;
  ox_loop_post(op->loop, &op->task);
}

/* REST's answer to a load or unload: 200 {}, or 400 (503 when the server is closing). */
static void rest_answer(void *arg, int rc, const char *msg) {
  ox_conn_t *c = arg;
  if (rc) {
    ox_conn_respond_error(c, rc == OX_EUNAVAILABLE ? 503 : 400, msg);
    return;
  }
  ox_http_resp_t r;
  ox_http_resp_init(&r, 200);
  if (ox_buf_puts(&r.body, "{}")) {
    ox_http_resp_free(&r);
    ox_conn_respond_error(c, 500, "out of memory");
  } else {
    ox_conn_respond(c, &r);
  }
}

/* 1 if path (after "file:") is "<version>/<file>": a positive decimal version without leading
 * zeros that fits in int64, one '/', and a plain file name ([A-Za-z0-9_.-], not "." or ".."). */
static int upload_path_valid(ox_slice_t path) {
  size_t d = 0;
  while (d < path.len && path.ptr[d] >= '0' && path.ptr[d] <= '9') d++;
  if (d == 0 || d > 18 || path.ptr[0] == '0' || d == path.len || path.ptr[d] != '/') return 0;
  const char *f = path.ptr + d + 1;
  size_t n = path.len - d - 1;
  return n > 0 && n <= 255 && ox_name_valid(f, n) && !(n == 1 && f[0] == '.') &&
         !(n == 2 && f[0] == '.' && f[1] == '.');
}

/* Reads {"parameters": {"config": "<text>", "file:<version>/<file>": "<base64>", ...}} and
 * {"ready": bool} into *out (files as slices of body); unknown members are skipped. 0, or
 * OX_EINVALID / OX_ENOMEM with a message in err; out->config is freed on error. */
static int parse_body(ox_slice_t body, repo_body_t *out, const char **err) {
  memset(out, 0, sizeof *out);
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
  int rc = 0;
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
    if (ox_json_string(&js, &key, &esc)) {
      rc = OX_EINVALID;
      break;
    }
    ox_json_ws(&js);
    js.p++; /* ':' (validated) */
    ox_json_ws(&js);
    if (depth == 0 && ox_slice_eq(key, "parameters") && *js.p == '{') {
      js.p++;
      depth = 1;
      continue;
    }
    if (depth == 0 && ox_slice_eq(key, "ready")) {
      out->ready = *js.p == 't';
    } else if (depth == 1 && ox_slice_eq(key, "config")) {
      ox_slice_t v;
      int vesc;
      rc = OX_EINVALID;
      *err = "parameters.config must be a string holding the model's JSON configuration";
      if (*js.p != '"' || ox_json_string(&js, &v, &vesc)) break;
      *err = "parameters.config is too long or repeated";
      if (v.len > OX_MAX_CONFIG_TEXT || out->config) break;
      rc = OX_ENOMEM;
      *err = "out of memory";
      if (!(out->config = malloc(v.len + 1))) break;
      long n = vesc ? ox_json_unescape(v.ptr, v.len, out->config) : (long)v.len;
      if (!vesc) memcpy(out->config, v.ptr, v.len);
      out->config_len = n < 0 ? 0 : (size_t)n;
      out->config[out->config_len] = 0;
      rc = 0;
      continue;
    } else if (depth == 1 && key.len >= 5 && !memcmp(key.ptr, "file:", 5)) {
      ox_slice_t path = ox_slice(key.ptr + 5, key.len - 5);
      rc = OX_EINVALID;
      *err =
          "bad upload file name: parameters \"file:<version>/<file>\" take a version number "
          "and a plain file name";
      if (esc || !upload_path_valid(path)) break;
      *err = "an upload file's value must be a base64 string";
      if (*js.p != '"') break;
      *err = "too many upload files";
      if (out->nfiles == OX_MAX_UPLOAD_FILES) break;
      upload_file_t *f = &out->files[out->nfiles++];
      f->path = path;
      if (ox_json_string(&js, &f->data, &f->esc)) break;
      rc = 0;
      continue;
    }
    if (ox_json_skip(&js, depth + 1)) {
      *err = "request body must be a JSON object";
      rc = OX_EINVALID;
      break;
    }
  }
  free(out->config);
  out->config = NULL;
  return rc;
}

static int write_upload_bytes(const char *base, const upload_file_t *f, const unsigned char *bytes,
                              size_t len, char *err, size_t errcap);

/* Writes one uploaded file: base dir (the model's directory inside the temporary one) / path,
 * the version directory made if needed. 0, or an error with the reason in err. */
static int write_upload_file(const char *base, const upload_file_t *f, char *err, size_t errcap) {
  char *raw = NULL;
  const char *text = f->data.ptr;
  size_t tlen = f->data.len;
  if (f->raw) return write_upload_bytes(base, f, (const unsigned char *)text, tlen, err, errcap);
  if (f->esc) { /* JSON may escape '/' as "\/": the base64 text is what the string holds */
    if (!(raw = malloc(f->data.len + 1))) goto nomem;
    long n = ox_json_unescape(f->data.ptr, f->data.len, raw);
    text = raw;
    tlen = n < 0 ? 0 : (size_t)n;
  }
  size_t cap = ox_base64_decoded_max(tlen);
  unsigned char *bytes = malloc(cap ? cap : 1);
  if (!bytes) {
    free(raw);
    goto nomem;
  }
  size_t len = 0;
  int rc = ox_base64_decode(text, tlen, bytes, cap, &len);
  free(raw);
  if (rc) {
    free(bytes);
    snprintf(err, errcap, "parameters[\"file:%.*s\"] is not valid base64", (int)f->path.len,
             f->path.ptr);
    return OX_EINVALID;
  }
  rc = write_upload_bytes(base, f, bytes, len, err, errcap);
  free(bytes);
  return rc;
nomem:
  snprintf(err, errcap, "out of memory");
  return OX_ENOMEM;
}

/* Writes bytes[0..len) as the uploaded file f under base. */
static int write_upload_bytes(const char *base, const upload_file_t *f, const unsigned char *bytes,
                              size_t len, char *err, size_t errcap) {
  char path[PATH_MAX];
  const char *slash = memchr(f->path.ptr, '/', f->path.len);
  int vlen = (int)(slash - f->path.ptr), fd = -1;
  int pn = snprintf(path, sizeof path, "%s/%.*s", base, vlen, f->path.ptr);
  errno = ENAMETOOLONG;
  if (pn > 0 && (size_t)pn < sizeof path && (mkdir(path, 0700) == 0 || errno == EEXIST)) {
    pn = snprintf(path, sizeof path, "%s/%.*s", base, (int)f->path.len, f->path.ptr);
    errno = ENAMETOOLONG;
    if (pn > 0 && (size_t)pn < sizeof path)
      fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  }
  if (fd < 0 && errno == EEXIST) {
    snprintf(err, errcap, "parameters[\"file:%.*s\"] is repeated", (int)f->path.len, f->path.ptr);
    return OX_EINVALID;
  }
  size_t off = 0;
  while (fd >= 0 && off < len) {
    ssize_t w = write(fd, bytes + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    off += (size_t)w;
  }
  int ok = fd >= 0 && off == len, e = errno ? errno : EIO;
  if (fd >= 0 && close(fd) != 0 && ok) {
    ok = 0;
    e = errno;
  }
  if (!ok) { /* the disk is full: 507, as for the feature stores; anything else: 500 */
    snprintf(err, errcap, "cannot store the uploaded files: %s", strerror(e));
    return e == ENOSPC || e == EDQUOT ? -ENOSPC : -EIO;
  }
  return 0;
}

/* Makes the private temporary directory for an upload, <tmp>/<name>/, and writes every file
 * into it. On success dir holds the temporary directory's path (the caller removes it); on
 * error it is removed already and err says why. */
static int write_upload(const char *name, const upload_file_t *files, size_t nfiles, char *dir,
                        size_t dircap, char *err, size_t errcap) {
  const char *tmp = getenv("TMPDIR");
  if (!tmp || tmp[0] != '/') tmp = "/tmp";
  int n = snprintf(dir, dircap, "%s/onnxd-upload-XXXXXX", tmp);
  if (n < 0 || (size_t)n >= dircap || !mkdtemp(dir)) { /* mkdtemp makes it 0700 */
    snprintf(err, errcap, "cannot store the uploaded files: %s",
             n < 0 || (size_t)n >= dircap ? "TMPDIR too long" : strerror(errno));
    dir[0] = 0;
    return -EIO;
  }
  char base[PATH_MAX];
  int rc = 0;
  n = snprintf(base, sizeof base, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= sizeof base - 300 || mkdir(base, 0700) != 0) {
    snprintf(err, errcap, "cannot store the uploaded files");
    rc = -EIO;
  }
  for (size_t i = 0; !rc && i < nfiles; i++) rc = write_upload_file(base, &files[i], err, errcap);
  if (rc) {
    rm_upload(dir);
    dir[0] = 0;
  }
  return rc;
}

void ox_server_repo_index(ox_server_t *s, ox_conn_t *c, ox_slice_t body) {
  repo_body_t *b = malloc(sizeof *b);
  const char *err = "out of memory";
  int rc = b ? parse_body(body, b, &err) : OX_ENOMEM;
  int ready = b && b->ready;
  if (b) free(b->config);
  free(b);
  if (rc) {
    ox_conn_respond_error(c, rc == OX_ENOMEM ? 500 : 400, err);
    return;
  }
  ox_http_resp_t r;
  ox_http_resp_init(&r, 200);
  if (ox_models_index_json(s->models, ready, &r.body)) {
    ox_http_resp_free(&r);
    ox_conn_respond_error(c, 500, "out of memory");
    return;
  }
  ox_conn_respond(c, &r);
}

/* The load or unload behind both front ends, on the loop thread: checks the control mode and
 * the name, writes uploaded files, queues the operation; answer(arg, rc, msg) then runs on loop
 * when it is over. Returns 0, or an error answered by the caller: OX_EINVALID (refused: control
 * mode, name, upload), -ENOSPC / -EIO (the upload could not be stored), OX_ENOMEM,
 * OX_EUNAVAILABLE (closing), with the message in err (errcap bytes). */
static int repo_start(ox_server_t *s, ox_loop_t *loop, ox_slice_t name, int unload,
                      const char *config, size_t config_len, const upload_file_t *files,
                      size_t nfiles, void (*answer)(void *, int, const char *), void *arg,
                      char *err, size_t errcap) {
  if (s->control_mode != OX_CONTROL_EXPLICIT) {
    snprintf(err, errcap, "%s",
             s->control_mode == OX_CONTROL_POLL
                 ? "explicit model load / unload is not allowed if polling is enabled"
                 : "explicit model load / unload is not allowed with --model-control-mode none");
    return OX_EINVALID;
  }
  char nm[256];
  if (name.len == 0 || name.len >= sizeof nm || !ox_name_valid(name.ptr, name.len) ||
      ox_slice_eq(name, ".") || ox_slice_eq(name, "..")) {
    snprintf(err, errcap, "invalid model name");
    return OX_EINVALID;
  }
  memcpy(nm, name.ptr, name.len);
  nm[name.len] = 0;
  if (!unload && nfiles && !config) { /* as Triton */
    snprintf(err, errcap,
             "load parameters \"file:<version>/<file>\" need parameters.config as well");
    return OX_EINVALID;
  }
  repo_op_t *op = calloc(1, sizeof *op);
  if (!op) {
    snprintf(err, errcap, "out of memory");
    return OX_ENOMEM;
  }
  int rc = 0;
  if (!unload && nfiles) {
    rc = write_upload(nm, files, nfiles, op->dir, sizeof op->dir, err, errcap);
    if (rc) {
      free(op);
      return rc;
    }
  }
  op->loop = loop;
  op->answer = answer;
  op->arg = arg;
  rc = unload ? ox_models_unload(s->models, nm, op_done, op)
              : ox_models_load(s->models, nm, config, config_len, op->dir[0] ? op->dir : NULL,
                               op_done, op);
  if (rc) {
    rm_upload(op->dir);
    free(op);
    snprintf(err, errcap, "%s", rc == OX_ENOMEM ? "out of memory" : "server is shutting down");
  }
  return rc;
}

/* REST: parses the body and starts the operation; answers errors at once. */
static void repo_op(ox_server_t *s, ox_conn_t *c, ox_slice_t name, ox_slice_t body, int unload) {
  char err[512];
  const char *perr = "out of memory";
  repo_body_t *b = calloc(1, sizeof *b);
  int rc = b ? parse_body(body, b, &perr) : OX_ENOMEM;
  if (!rc)
    rc = repo_start(s, ox_conn_loop(c), name, unload, b->config, b->config_len, b->files,
                    unload ? 0 : b->nfiles, rest_answer, c, err, sizeof err);
  else
    snprintf(err, sizeof err, "%s", perr);
  if (b) free(b->config);
  free(b);
  if (rc)
    ox_conn_respond_error(c,
                          rc == OX_EINVALID       ? 400
                          : rc == -ENOSPC         ? 507
                          : rc == OX_EUNAVAILABLE ? 503
                                                  : 500,
                          err);
}

void ox_server_repo_load(ox_server_t *s, ox_conn_t *c, ox_slice_t name, ox_slice_t body) {
  repo_op(s, c, name, body, 0);
}

void ox_server_repo_unload(ox_server_t *s, ox_conn_t *c, ox_slice_t name, ox_slice_t body) {
  repo_op(s, c, name, body, 1);
}

int ox_server_repo_start(ox_server_t *s, ox_loop_t *loop, ox_slice_t name, int unload,
                         const char *config, size_t config_len, const ox_repo_file_t *files,
                         size_t nfiles, void (*answer)(void *, int, const char *), void *arg,
                         char *err, size_t errcap) {
  if (nfiles > OX_MAX_UPLOAD_FILES) {
    snprintf(err, errcap, "too many upload files");
    return OX_EINVALID;
  }
  upload_file_t up[OX_MAX_UPLOAD_FILES];
  for (size_t i = 0; i < nfiles; i++) {
    if (!upload_path_valid(files[i].path)) {
      snprintf(err, errcap,
               "bad upload file name: parameters \"file:<version>/<file>\" take a version "
               "number and a plain file name");
      return OX_EINVALID;
    }
    up[i] = (upload_file_t){.path = files[i].path, .data = files[i].bytes, .raw = 1};
  }
  return repo_start(s, loop, name, unload, config, config_len, up, nfiles, answer, arg, err,
                    errcap);
}
