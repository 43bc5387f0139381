/* grpc_h2_test.c: the gRPC transport (src/grpc/h2.c) over a real loopback socket. A listener
 * runs on a loop in its own thread with a small application (Echo sends each message back from
 * where it lies and finishes OK; Status finishes with a chosen status and message; Hold keeps
 * the call until on_abort; Refuse refuses in on_open); the test drives it with a blocking
 * nghttp2 client session. Covered: unary echo small and 10 MB (flow control both ways), the
 * message limit (RESOURCE_EXHAUSTED, the connection serves the next call), the compressed flag
 * (UNIMPLEMENTED / INTERNAL), grpc-timeout (DEADLINE_EXCEEDED + on_abort; malformed: INTERNAL),
 * client RST_STREAM (on_abort), the stream limit (REFUSED_STREAM), rapid reset and PING floods
 * (GOAWAY ENHANCE_YOUR_CALM), a bad preface and a silent connection (closed), align_offset,
 * percent-encoded grpc-message, HTTP 415, drain (GOAWAY, the held call finishes, then close),
 * SETTINGS and empty-DATA floods, the header list bound, the connection cap, the buffered-bytes
 * budget (RESOURCE_EXHAUSTED when full; back at 0 at the end). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>

#include "core/error.h"
#include "grpc/h2.h"
#include "loop/loop.h"
#include "test.h"

/* ---------------------------------------------------------------------------------------- */
/* the server side: a loop thread and a test application */

#define ALIGN_AT 7 /* Echo asks for message offset 7 to be 64-byte aligned */

static ox_loop_t *g_loop;
static ox_grpc_listener_t *g_l;
static uint16_t g_port;
static pthread_t g_thread;
static atomic_int g_aborts, g_held, g_misaligned, g_align_calls;
static atomic_ullong g_last_timeout;
static ox_grpc_call_t *_Atomic g_hold_call;

enum { P_ECHO = 1, P_STATUS, P_HOLD };

static int app_open(void *app, ox_grpc_call_t *call, ox_slice_t path, uint64_t timeout_us,
                    const char **msg) {
  atomic_store(&g_last_timeout, timeout_us);
  intptr_t kind = 0;
  if (ox_slice_eq(path, "/t.S/Echo")) kind = P_ECHO;
  if (ox_slice_eq(path, "/t.S/Status")) kind = P_STATUS;
  if (ox_slice_eq(path, "/t.S/Hold")) kind = P_HOLD;
  if (ox_slice_eq(path, "/t.S/Refuse")) {
    *msg = "refused: no";
    return OX_GRPC_PERMISSION_DENIED;
  }
  if (!kind) {
    *msg = "unknown method";
    return OX_GRPC_UNIMPLEMENTED;
  }
  ox_grpc_call_set_data(call, (void *)kind);
  if (kind == P_HOLD) {
    atomic_store(&g_hold_call, call);
    atomic_fetch_add(&g_held, 1);
  }
  return 0;
}

static size_t app_align(void *app, ox_grpc_call_t *call, const char *prefix, size_t n,
                        size_t msg_len) {
  atomic_fetch_add(&g_align_calls, 1);
  return ALIGN_AT;
}

static void msg_release(void *arg) {
  ox_grpc_msg_free(arg);
  free(arg);
}

static void app_message(void *app, ox_grpc_call_t *call, ox_grpc_msg_t *msg) {
  if ((intptr_t)ox_grpc_call_data(call) != P_ECHO) {
    ox_grpc_msg_free(msg);
    return;
  }
  if (msg->len > ALIGN_AT && ((uintptr_t)(msg->data + ALIGN_AT)) % 64 != 0)
    atomic_fetch_add(&g_misaligned, 1);
  ox_grpc_msg_t *m = malloc(sizeof *m);
  *m = *msg;
  ox_grpc_out_t out = {0};
  out.iov = malloc(sizeof *out.iov);
  out.iov[0] = (struct iovec){m->data, m->len};
  out.iovcnt = 1;
  out.release = msg_release;
  out.release_arg = m;
  ox_grpc_call_send(call, &out); /* the message's own bytes, written from where they lie */
}

static void app_half_close(void *app, ox_grpc_call_t *call) {
  intptr_t kind = (intptr_t)ox_grpc_call_data(call);
  if (kind == P_ECHO) ox_grpc_call_finish(call, OX_GRPC_OK, NULL);
  if (kind == P_STATUS) ox_grpc_call_finish(call, OX_GRPC_NOT_FOUND, "na\xc3\xafve 100% sure\n");
}

static void app_abort(void *app, ox_grpc_call_t *call) {
  atomic_fetch_add(&g_aborts, 1);
  if ((intptr_t)ox_grpc_call_data(call) == P_HOLD) {
    ox_grpc_call_t *expect = call;
    atomic_compare_exchange_strong(&g_hold_call, &expect, NULL);
  }
  ox_grpc_call_finish(call, OX_GRPC_CANCELLED, "aborted");
}

static const ox_grpc_handler_t g_handler = {.on_open = app_open,
                                            .align_offset = app_align,
                                            .on_message = app_message,
                                            .on_half_close = app_half_close,
                                            .on_abort = app_abort};
static ox_grpc_config_t g_cfg = {.max_concurrent_streams = 4,
                                 .max_message_bytes = 11u << 20,
                                 .max_header_list_bytes = 16384,
                                 .window_bytes = 1u << 20,
                                 .max_buffered_bytes = 64u << 20,
                                 .idle_timeout_ms = 1000,
                                 .max_connections = 100,
                                 .handler = &g_handler};

static void *loop_main(void *arg) {
  ox_loop_run(g_loop);
  return NULL;
}

static void server_start(void) {
  if (ox_loop_create(&g_loop)) abort();
  g_port = 0;
  if (ox_grpc_listener_create(g_loop, "127.0.0.1", &g_port, &g_cfg, &g_l)) abort();
  pthread_create(&g_thread, NULL, loop_main, NULL);
}

static void server_stop(void) {
  ox_loop_stop(g_loop);
  pthread_join(g_thread, NULL);
  ox_grpc_listener_destroy(g_l);
  ox_loop_run_pending(g_loop);
  ox_loop_destroy(g_loop);
}

/* Runs fn on the loop thread and waits for it. */
typedef struct {
  ox_task_t t;
  void (*fn)(void);
  atomic_int done;
} on_loop_t;
static void on_loop_run(ox_loop_t *loop, ox_task_t *t) {
  on_loop_t *o = (on_loop_t *)t;
  o->fn();
  atomic_store(&o->done, 1);
}
static void on_loop(void (*fn)(void)) {
  on_loop_t o = {.t.fn = on_loop_run, .fn = fn};
  ox_loop_post(g_loop, &o.t);
  while (!atomic_load(&o.done)) usleep(1000);
}

/* ---------------------------------------------------------------------------------------- */
/* a blocking nghttp2 client */

typedef struct {
  const char *body; /* request body (prefix included) */
  size_t body_len, body_pos;
  int end; /* send END_STREAM after the body */
  int http_status, grpc_status;
  char grpc_message[256];
  char *resp;
  size_t resp_len, resp_cap;
  int closed;
  uint32_t close_err;
} req_t;

typedef struct {
  int fd;
  nghttp2_session *s;
  int eof;
  int goaway;
  uint32_t goaway_err;
} client_t;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static ssize_t c_send(nghttp2_session *s, const uint8_t *d, size_t n, int fl, void *ud) {
  client_t *c = ud;
  ssize_t w = send(c->fd, d, n, MSG_NOSIGNAL);
  if (w < 0) return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
  return w;
}
static int c_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                    const uint8_t *value, size_t vl, uint8_t fl, void *ud) {
  req_t *r = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!r) return 0;
  char v[256];
  size_t n = vl < sizeof v - 1 ? vl : sizeof v - 1;
  memcpy(v, value, n);
  v[n] = 0;
  if (nl == 7 && !memcmp(name, ":status", 7)) r->http_status = atoi(v);
  if (nl == 11 && !memcmp(name, "grpc-status", 11)) r->grpc_status = atoi(v);
  if (nl == 12 && !memcmp(name, "grpc-message", 12)) strcpy(r->grpc_message, v);
  return 0;
}
static int c_data(nghttp2_session *s, uint8_t fl, int32_t id, const uint8_t *d, size_t n,
                  void *ud) {
  req_t *r = nghttp2_session_get_stream_user_data(s, id);
  if (!r) return 0;
  if (r->resp_len + n > r->resp_cap) {
    r->resp_cap = (r->resp_len + n) * 2;
    r->resp = realloc(r->resp, r->resp_cap);
  }
  memcpy(r->resp + r->resp_len, d, n);
  r->resp_len += n;
  return 0;
}
static int c_close(nghttp2_session *s, int32_t id, uint32_t err, void *ud) {
  req_t *r = nghttp2_session_get_stream_user_data(s, id);
  if (r) {
    r->closed = 1;
    r->close_err = err;
  }
  return 0;
}
static int c_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud) {
  client_t *c = ud;
  if (f->hd.type == NGHTTP2_GOAWAY) {
    c->goaway = 1;
    c->goaway_err = f->goaway.error_code;
  }
  return 0;
}
static ssize_t c_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                      nghttp2_data_source *src, void *ud) {
  req_t *r = src->ptr;
  size_t n = r->body_len - r->body_pos;
  if (n > len) n = len;
  memcpy(buf, r->body + r->body_pos, n);
  r->body_pos += n;
  if (r->body_pos == r->body_len) {
    if (!r->end) return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

static int tcp_connect(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(g_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) abort();
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static void client_open(client_t *c) {
  memset(c, 0, sizeof *c);
  c->fd = tcp_connect();
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, c_send);
  nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_close);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame);
  nghttp2_session_client_new(&c->s, cb, c);
  nghttp2_session_callbacks_del(cb);
  nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, NULL, 0); /* default 64 KB windows */
}

static void client_close(client_t *c) {
  nghttp2_session_del(c->s);
  close(c->fd);
}

/* Sends what nghttp2 has, reads what comes, until *flag is set or timeout: 0 or -1. */
static int client_pump(client_t *c, const int *flag, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  while (now_ms() < end) {
    if (!c->eof && nghttp2_session_send(c->s)) c->eof = 1;
    if (flag && *flag) return 0;
    if (c->eof) return flag ? -1 : 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, 20) > 0) {
      uint8_t buf[65536];
      ssize_t r = recv(c->fd, buf, sizeof buf, 0);
      if (r <= 0) {
        c->eof = 1;
        continue;
      }
      if (nghttp2_session_mem_recv(c->s, buf, (size_t)r) < 0) c->eof = 1;
    }
  }
  return !flag || *flag ? 0 : -1;
}

/* Starts a call on path with body (already framed) and the extra header (may be NULL). */
static int32_t client_call(client_t *c, req_t *r, const char *path, const char *ctype,
                           const char *xname, const char *xvalue) {
  nghttp2_nv h[8];
  int n = 0;
#define HV(a, b) h[n++] = (nghttp2_nv){(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), 0}
  HV(":method", "POST");
  HV(":scheme", "http");
  HV(":authority", "localhost");
  HV(":path", path);
  HV("content-type", ctype ? ctype : "application/grpc");
  HV("te", "trailers");
  if (xname) HV(xname, xvalue);
  nghttp2_data_provider prd = {.source.ptr = r, .read_callback = c_read};
  return nghttp2_submit_request(c->s, NULL, h, (size_t)n, &prd, r);
}

/* A gRPC frame: prefix (flag, length) + payload. */
static char *frame_msg(const char *p, size_t n, int flag, size_t *out_len) {
  char *b = malloc(n + 5);
  b[0] = (char)flag;
  uint32_t be = htonl((uint32_t)n);
  memcpy(b + 1, &be, 4);
  if (n) memcpy(b + 5, p, n);
  *out_len = n + 5;
  return b;
}

static void req_free(req_t *r) {
  free(r->resp);
  free((char *)r->body);
}

/* One unary call start to end on c. */
static int unary(client_t *c, req_t *r, const char *path, const char *payload, size_t n,
                 const char *xname, const char *xvalue) {
  memset(r, 0, sizeof *r);
  r->body = frame_msg(payload, n, 0, &r->body_len);
  r->end = 1;
  r->http_status = r->grpc_status = -1;
  if (client_call(c, r, path, NULL, xname, xvalue) < 0) return -1;
  return client_pump(c, &r->closed, 20000);
}

static void wait_for(atomic_int *v, int want, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  while (atomic_load(v) < want && now_ms() < end) usleep(1000);
}

/* ---------------------------------------------------------------------------------------- */
/* tests */

TEST(test_echo_small) {
  client_t c;
  client_open(&c);
  req_t r;
  int align_before = atomic_load(&g_align_calls);
  CHECK_INT(unary(&c, &r, "/t.S/Echo", "hello, grpc over h2", 19, NULL, NULL), 0);
  CHECK_INT(r.http_status, 200);
  CHECK_INT(r.grpc_status, 0);
  CHECK_INT(r.resp_len, 24);
  if (r.resp_len == 24) {
    CHECK_MEM(r.resp, "\0\0\0\0\x13", 5);
    CHECK_MEM(r.resp + 5, "hello, grpc over h2", 19);
  }
  CHECK_INT(atomic_load(&g_align_calls), align_before + 1);
  CHECK_INT(atomic_load(&g_misaligned), 0);
  req_free(&r);
  client_close(&c);
}

TEST(test_echo_10mb) {
  client_t c;
  client_open(&c);
  size_t n = 10u << 20;
  char *p = malloc(n);
  for (size_t i = 0; i < n; i++) p[i] = (char)(i * 2654435761u >> 13);
  req_t r;
  CHECK_INT(unary(&c, &r, "/t.S/Echo", p, n, NULL, NULL), 0);
  CHECK_INT(r.grpc_status, 0);
  CHECK_INT(r.resp_len, n + 5);
  if (r.resp_len == n + 5) CHECK(memcmp(r.resp + 5, p, n) == 0);
  CHECK_INT(atomic_load(&g_misaligned), 0);
  req_free(&r);
  /* the same connection: a second small call */
  CHECK_INT(unary(&c, &r, "/t.S/Echo", "x", 1, NULL, NULL), 0);
  CHECK_INT(r.grpc_status, 0);
  req_free(&r);
  free(p);
  client_close(&c);
}

TEST(test_message_too_large) {
  client_t c;
  client_open(&c);
  req_t r;
  memset(&r, 0, sizeof r);
  size_t bl;
  char *b = frame_msg("0123456789", 10, 0, &bl);
  uint32_t be = htonl(12u << 20); /* claims 12 MiB, over the 11 MiB limit */
  memcpy(b + 1, &be, 4);
  r.body = b;
  r.body_len = bl;
  r.end = 1;
  r.grpc_status = -1;
  client_call(&c, &r, "/t.S/Echo", NULL, NULL, NULL);
  CHECK_INT(client_pump(&c, &r.closed, 5000), 0);
  CHECK_INT(r.grpc_status, OX_GRPC_RESOURCE_EXHAUSTED);
  CHECK(strstr(r.grpc_message, "max_message_bytes") != NULL);
  req_free(&r);
  CHECK_INT(unary(&c, &r, "/t.S/Echo", "next", 4, NULL, NULL), 0);
  CHECK_INT(r.grpc_status, 0);
  CHECK_INT(r.resp_len, 9);
  req_free(&r);
  client_close(&c);
}

static void compressed_call(const char *enc, int want_status, const char *want_msg_part) {
  client_t c;
  client_open(&c);
  req_t r;
  memset(&r, 0, sizeof r);
  r.body = frame_msg("abc", 3, 1, &r.body_len);
  r.end = 1;
  r.grpc_status = -1;
  client_call(&c, &r, "/t.S/Echo", NULL, enc ? "grpc-encoding" : NULL, enc);
  CHECK_INT(client_pump(&c, &r.closed, 5000), 0);
  CHECK_INT(r.grpc_status, want_status);
  CHECK(strstr(r.grpc_message, want_msg_part) != NULL);
  CHECK_INT(r.resp_len, 0);
  req_free(&r);
  client_close(&c);
}

TEST(test_compressed) {
  compressed_call("gzip", OX_GRPC_UNIMPLEMENTED, "(grpc-encoding: identity)");
  compressed_call(NULL, OX_GRPC_INTERNAL, "no grpc-encoding");
}

TEST(test_deadline) {
  client_t c;
  client_open(&c);
  req_t r;
  int aborts = atomic_load(&g_aborts);
  uint64_t t0 = now_ms();
  CHECK_INT(unary(&c, &r, "/t.S/Hold", "", 0, "grpc-timeout", "100m"), 0);
  uint64_t took = now_ms() - t0;
  CHECK_INT(r.grpc_status, OX_GRPC_DEADLINE_EXCEEDED);
  CHECK(took >= 100 && took < 2000);
  CHECK_INT(atomic_load(&g_last_timeout), 100000);
  wait_for(&g_aborts, aborts + 1, 2000);
  CHECK_INT(atomic_load(&g_aborts), aborts + 1);
  req_free(&r);
  /* malformed: as grpc-go, INTERNAL; 9 digits are too many */
  CHECK_INT(unary(&c, &r, "/t.S/Echo", "", 0, "grpc-timeout", "123456789S"), 0);
  CHECK_INT(r.grpc_status, OX_GRPC_INTERNAL);
  req_free(&r);
  CHECK_INT(unary(&c, &r, "/t.S/Echo", "", 0, "grpc-timeout", "5x"), 0);
  CHECK_INT(r.grpc_status, OX_GRPC_INTERNAL);
  req_free(&r);
  CHECK_INT(unary(&c, &r, "/t.S/Echo", "", 0, "grpc-timeout", "2S"), 0);
  CHECK_INT(r.grpc_status, OX_GRPC_OK);
  CHECK_INT(atomic_load(&g_last_timeout), 2000000);
  req_free(&r);
  client_close(&c);
}

TEST(test_client_reset_aborts) {
  client_t c;
  client_open(&c);
  req_t r;
  memset(&r, 0, sizeof r);
  int held = atomic_load(&g_held), aborts = atomic_load(&g_aborts);
  r.body = frame_msg("", 0, 0, &r.body_len);
  int32_t id = client_call(&c, &r, "/t.S/Hold", NULL, NULL, NULL);
  client_pump(&c, NULL, 100);
  wait_for(&g_held, held + 1, 2000);
  CHECK_INT(atomic_load(&g_held), held + 1);
  nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  client_pump(&c, NULL, 50);
  wait_for(&g_aborts, aborts + 1, 2000);
  CHECK_INT(atomic_load(&g_aborts), aborts + 1);
  req_free(&r);
  client_close(&c);
}

TEST(test_stream_limit) {
  client_t c;
  client_open(&c);
  /* All six go out before the client has read the server's SETTINGS (else nghttp2's client
   * would hold the extra two back itself). */
  req_t r[6];
  int32_t id[6];
  uint64_t refused = ox_grpc_counter(OX_GRPC_REFUSED_STREAMS);
  int aborts = atomic_load(&g_aborts);
  for (int i = 0; i < 6; i++) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].body = frame_msg("", 0, 0, &r[i].body_len);
    id[i] = client_call(&c, &r[i], "/t.S/Hold", NULL, NULL, NULL);
  }
  client_pump(&c, NULL, 300);
  int n_refused = 0, n_open = 0;
  for (int i = 0; i < 6; i++) {
    n_refused += r[i].closed && r[i].close_err == NGHTTP2_REFUSED_STREAM;
    n_open += !r[i].closed;
  }
  CHECK_INT(n_refused, 2);
  CHECK_INT(n_open, 4);
  CHECK_INT(ox_grpc_counter(OX_GRPC_REFUSED_STREAMS), refused + 2);
  for (int i = 0; i < 6; i++)
    if (!r[i].closed) nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id[i], NGHTTP2_CANCEL);
  client_pump(&c, NULL, 50);
  wait_for(&g_aborts, aborts + 4, 2000);
  CHECK_INT(atomic_load(&g_aborts), aborts + 4);
  for (int i = 0; i < 6; i++) req_free(&r[i]);
  client_close(&c);
}

TEST(test_rapid_reset) {
  client_t c;
  client_open(&c);
  uint64_t floods = ox_grpc_counter(OX_GRPC_FLOODS);
  req_t r[40];
  for (int i = 0; i < 40 && !c.eof; i++) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].body = frame_msg("", 0, 0, &r[i].body_len);
    int32_t id = client_call(&c, &r[i], "/t.S/Hold", NULL, NULL, NULL);
    nghttp2_session_send(c.s);
    nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    nghttp2_session_send(c.s);
  }
  client_pump(&c, &c.eof, 3000);
  CHECK(c.goaway);
  CHECK_INT(c.goaway_err, NGHTTP2_ENHANCE_YOUR_CALM);
  CHECK(c.eof);
  CHECK_INT(ox_grpc_counter(OX_GRPC_FLOODS), floods + 1);
  for (int i = 0; i < 40; i++) req_free(&r[i]);
  client_close(&c);
}

TEST(test_ping_flood) {
  client_t c;
  client_open(&c);
  for (int i = 0; i < 1000; i++) nghttp2_submit_ping(c.s, NGHTTP2_FLAG_NONE, NULL);
  client_pump(&c, &c.eof, 3000);
  CHECK(c.goaway);
  CHECK_INT(c.goaway_err, NGHTTP2_ENHANCE_YOUR_CALM);
  CHECK(c.eof);
  client_close(&c);
  /* The server still serves others. */
  client_open(&c);
  req_t r;
  CHECK_INT(unary(&c, &r, "/t.S/Echo", "ok", 2, NULL, NULL), 0);
  CHECK_INT(r.grpc_status, 0);
  req_free(&r);
  client_close(&c);
}

/* Reads until EOF or error: 1 if the server closed within timeout_ms. */
static int closed_within(int fd, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  while (now_ms() < end) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 20) > 0) {
      char buf[4096];
      ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r <= 0) return 1;
    }
  }
  return 0;
}

TEST(test_bad_preface_and_silence) {
  uint64_t bad = ox_grpc_counter(OX_GRPC_BAD_PREFACES);
  int fd = tcp_connect();
  const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK_INT(send(fd, get, sizeof get - 1, 0), sizeof get - 1);
  uint64_t t0 = now_ms();
  CHECK(closed_within(fd, 2000));
  CHECK(now_ms() - t0 < 500);
  CHECK_INT(ox_grpc_counter(OX_GRPC_BAD_PREFACES), bad + 1);
  close(fd);
  /* silent: closed after the idle timeout (1 s) */
  fd = tcp_connect();
  t0 = now_ms();
  CHECK(closed_within(fd, 3000));
  uint64_t took = now_ms() - t0;
  CHECK(took >= 900 && took < 2500);
  close(fd);
}

TEST(test_status_trailers) {
  client_t c;
  client_open(&c);
  req_t r;
  CHECK_INT(unary(&c, &r, "/t.S/Status", "", 0, NULL, NULL), 0);
  CHECK_INT(r.http_status, 200);
  CHECK_INT(r.grpc_status, OX_GRPC_NOT_FOUND);
  CHECK_STR(r.grpc_message, "na%C3%AFve 100%25 sure%0A");
  req_free(&r);
  /* refused in on_open: trailers-only */
  CHECK_INT(unary(&c, &r, "/t.S/Refuse", "", 0, NULL, NULL), 0);
  CHECK_INT(r.http_status, 200);
  CHECK_INT(r.grpc_status, OX_GRPC_PERMISSION_DENIED);
  CHECK_STR(r.grpc_message, "refused: no");
  req_free(&r);
  /* not gRPC: HTTP 415, no grpc-status */
  memset(&r, 0, sizeof r);
  r.body = frame_msg("", 0, 0, &r.body_len);
  r.end = 1;
  r.grpc_status = -1;
  client_call(&c, &r, "/t.S/Echo", "text/plain", NULL, NULL);
  CHECK_INT(client_pump(&c, &r.closed, 5000), 0);
  CHECK_INT(r.http_status, 415);
  CHECK_INT(r.grpc_status, -1);
  req_free(&r);
  client_close(&c);
}

TEST(test_settings_and_empty_data_floods) {
  client_t c;
  client_open(&c);
  uint64_t floods = ox_grpc_counter(OX_GRPC_FLOODS);
  for (int i = 0; i < 200; i++) nghttp2_submit_settings(c.s, NGHTTP2_FLAG_NONE, NULL, 0);
  client_pump(&c, &c.eof, 3000);
  CHECK(c.goaway);
  CHECK_INT(c.goaway_err, NGHTTP2_ENHANCE_YOUR_CALM);
  CHECK_INT(ox_grpc_counter(OX_GRPC_FLOODS), floods + 1);
  client_close(&c);
  /* empty DATA frames on an open call, written by hand after the call's HEADERS */
  client_open(&c);
  req_t r;
  memset(&r, 0, sizeof r);
  r.body = frame_msg("", 0, 0, &r.body_len);
  r.body_pos = r.body_len; /* nothing: the provider defers */
  int32_t id = client_call(&c, &r, "/t.S/Hold", NULL, NULL, NULL);
  client_pump(&c, NULL, 100);
  uint8_t fr[9 * 300];
  for (int i = 0; i < 300; i++) {
    uint8_t *f = fr + 9 * i;
    memset(f, 0, 9);
    f[3] = NGHTTP2_DATA;
    uint32_t be = htonl((uint32_t)id);
    memcpy(f + 5, &be, 4);
  }
  CHECK_INT(send(c.fd, fr, sizeof fr, MSG_NOSIGNAL), sizeof fr);
  client_pump(&c, &c.eof, 3000);
  CHECK(c.goaway);
  CHECK_INT(c.goaway_err, NGHTTP2_ENHANCE_YOUR_CALM);
  CHECK_INT(ox_grpc_counter(OX_GRPC_FLOODS), floods + 2);
  req_free(&r);
  client_close(&c);
}

TEST(test_header_list_bound) {
  client_t c;
  client_open(&c);
  uint64_t ends = ox_grpc_counter(OX_GRPC_LIMIT_ENDS);
  char *big = malloc(20000);
  memset(big, 'a', 19999);
  big[19999] = 0;
  req_t r;
  memset(&r, 0, sizeof r);
  r.body = frame_msg("", 0, 0, &r.body_len);
  r.end = 1;
  r.grpc_status = -1;
  client_call(&c, &r, "/t.S/Echo", NULL, "x-big", big); /* before the server's SETTINGS */
  CHECK_INT(client_pump(&c, &r.closed, 3000), 0);
  CHECK(r.close_err != 0); /* reset, not answered */
  CHECK_INT(r.grpc_status, -1);
  CHECK_INT(ox_grpc_counter(OX_GRPC_LIMIT_ENDS), ends + 1);
  req_free(&r);
  CHECK_INT(unary(&c, &r, "/t.S/Echo", "still", 5, NULL, NULL), 0);
  CHECK_INT(r.grpc_status, 0);
  req_free(&r);
  free(big);
  client_close(&c);
}

static void cap_one(void) {
  g_cfg.max_connections = 1;
}
static void cap_back(void) {
  g_cfg.max_connections = 100;
}

TEST(test_connection_cap) {
  on_loop(cap_one);
  uint64_t refused = ox_grpc_counter(OX_GRPC_CONN_REFUSALS);
  client_t a, b;
  client_open(&a);
  client_pump(&a, NULL, 100);
  client_open(&b);
  client_pump(&b, &b.eof, 2000);
  CHECK(b.goaway);
  CHECK_INT(b.goaway_err, NGHTTP2_NO_ERROR);
  CHECK(b.eof);
  CHECK_INT(ox_grpc_counter(OX_GRPC_CONN_REFUSALS), refused + 1);
  client_close(&b);
  req_t r;
  CHECK_INT(unary(&a, &r, "/t.S/Echo", "a", 1, NULL, NULL), 0); /* the first one is served */
  CHECK_INT(r.grpc_status, 0);
  req_free(&r);
  client_close(&a);
  on_loop(cap_back);
}

static void budget_small(void) {
  g_cfg.max_buffered_bytes = 1000;
}
static void budget_back(void) {
  g_cfg.max_buffered_bytes = 64u << 20;
}

TEST(test_buffered_budget) {
  on_loop(budget_small);
  client_t c;
  client_open(&c);
  char p[2000];
  memset(p, 'b', sizeof p);
  req_t r;
  CHECK_INT(unary(&c, &r, "/t.S/Echo", p, sizeof p, NULL, NULL), 0);
  CHECK_INT(r.grpc_status, OX_GRPC_RESOURCE_EXHAUSTED);
  CHECK(strstr(r.grpc_message, "memory budget") != NULL);
  CHECK_INT(r.resp_len, 0);
  req_free(&r);
  CHECK_INT(unary(&c, &r, "/t.S/Echo", p, 500, NULL, NULL), 0); /* fits */
  CHECK_INT(r.grpc_status, 0);
  CHECK_INT(r.resp_len, 505);
  req_free(&r);
  client_close(&c);
  on_loop(budget_back);
}

TEST(test_zero_window_waits_then_idle) {
  client_t c;
  client_open(&c);
  nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0};
  nghttp2_submit_settings(c.s, NGHTTP2_FLAG_NONE, &iv, 1); /* the server may send no DATA */
  req_t r;
  memset(&r, 0, sizeof r);
  r.body = frame_msg("stuck", 5, 0, &r.body_len);
  r.end = 1;
  r.grpc_status = -1;
  client_call(&c, &r, "/t.S/Echo", NULL, NULL, NULL);
  uint64_t t0 = now_ms();
  client_pump(&c, NULL, 500);
  CHECK(!c.eof); /* waiting on the window, not failed */
  CHECK_INT(r.http_status, 200);
  CHECK_INT(r.resp_len, 0);
  client_pump(&c, &c.eof, 3000);
  uint64_t took = now_ms() - t0;
  CHECK(c.eof); /* the idle timeout (1 s) applies */
  CHECK(took >= 900 && took < 2500);
  CHECK_INT(r.grpc_status, -1);
  req_free(&r);
  client_close(&c);
}

static void drain_now(void) {
  ox_grpc_listener_drain(g_l);
}
static void finish_hold(void) {
  ox_grpc_call_t *call = atomic_exchange(&g_hold_call, NULL);
  if (call) ox_grpc_call_finish(call, OX_GRPC_OK, NULL);
}

/* Last: the listener drains. */
TEST(test_drain) {
  client_t c;
  client_open(&c);
  req_t r;
  memset(&r, 0, sizeof r);
  int held = atomic_load(&g_held);
  r.body = frame_msg("", 0, 0, &r.body_len);
  r.end = 1;
  r.grpc_status = -1;
  client_call(&c, &r, "/t.S/Hold", NULL, NULL, NULL);
  client_pump(&c, NULL, 100);
  wait_for(&g_held, held + 1, 2000);
  on_loop(drain_now);
  client_pump(&c, &c.goaway, 2000);
  CHECK(c.goaway);
  CHECK(!r.closed); /* the call in flight goes on */
  on_loop(finish_hold);
  CHECK_INT(client_pump(&c, &r.closed, 2000), 0);
  CHECK_INT(r.grpc_status, OX_GRPC_OK);
  client_pump(&c, &c.eof, 2000);
  CHECK(c.eof); /* closed once its last call ended */
  req_free(&r);
  client_close(&c);
}

TEST(test_budget_back_to_zero) {
  usleep(100 * 1000);
  CHECK_INT(ox_grpc_buffered_bytes(), 0);
  CHECK_INT(ox_grpc_busy(), 0);
}

TEST(test_server_start) {
  ox_grpc_config_t d = {.handler = &g_handler, .window_bytes = 1000};
  ox_loop_t *loop;
  ox_grpc_listener_t *l;
  uint16_t port = 0;
  CHECK_INT(ox_loop_create(&loop), 0);
  CHECK_INT(ox_grpc_listener_create(loop, "127.0.0.1", &port, &d, &l), OX_EINVALID); /* window */
  d.window_bytes = 0;
  ox_grpc_config_defaults(&d);
  CHECK_INT(d.max_concurrent_streams, 128);
  CHECK_INT(d.window_bytes, 16u << 20);
  CHECK_INT(d.max_connections, 10000);
  CHECK_INT(ox_grpc_listener_create(loop, "127.0.0.1", &port, &d, &l), 0);
  CHECK(port != 0);
  ox_grpc_listener_destroy(l);
  ox_loop_destroy(loop);
  server_start();
  CHECK(g_port != 0);
}
TEST(test_server_stop) {
  server_stop();
  CHECK_INT(ox_grpc_open_connections(), 0);
}

TEST_MAIN(T(test_server_start), T(test_echo_small), T(test_echo_10mb), T(test_message_too_large),
          T(test_compressed), T(test_deadline), T(test_client_reset_aborts), T(test_stream_limit),
          T(test_rapid_reset), T(test_ping_flood), T(test_bad_preface_and_silence),
          T(test_status_trailers), T(test_settings_and_empty_data_floods),
          T(test_header_list_bound), T(test_connection_cap), T(test_buffered_budget),
          T(test_zero_window_waits_then_idle), T(test_drain), T(test_budget_back_to_zero),
          T(test_server_stop))
