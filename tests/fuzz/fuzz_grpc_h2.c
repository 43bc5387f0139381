/* fuzz_grpc_h2.c: libFuzzer harness for the gRPC transport (src/grpc/h2.c) as a whole: the
 * input is what a client sends on one connection (the committed corpus: nghttp2 client
 * sessions' bytes for unary calls, resets, PINGs, SETTINGS, CONTINUATIONs, compressed and
 * oversized messages, then mutations). A listener runs on a loop in this thread with a small
 * application (Echo answers from the message's own bytes; Hold keeps the call until on_abort;
 * other paths are refused); the input is written over a loopback socket as the server reads it,
 * then the client half-closes and reads until the server closes. Beyond crashes and sanitizer
 * reports it checks, after every input: the connection is closed, no call is held and no
 * message byte is still counted in the buffered-bytes budget (the application frees every
 * message). Everything is deterministic but the kernel's segmenting of the stream.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grpc/h2.h"
#include "loop/loop.h"

#define REQUIRE(cond)                                                                  \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "fuzz_grpc_h2: %s:%d: broken: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                         \
    }                                                                                  \
  } while (0)

static int app_open(void *app, ox_grpc_call_t *call, ox_slice_t path, uint64_t timeout_us,
                    const char **msg) {
  if (ox_slice_eq(path, "/f.S/Echo")) {
    ox_grpc_call_set_data(call, (void *)1);
    return 0;
  }
  if (ox_slice_eq(path, "/f.S/Hold")) {
    ox_grpc_call_set_data(call, (void *)2);
    return 0;
  }
  *msg = "unknown method";
  return OX_GRPC_UNIMPLEMENTED;
}

static size_t app_align(void *app, ox_grpc_call_t *call, const char *prefix, size_t n,
                        size_t msg_len) {
  return n ? (unsigned char)prefix[0] : 0; /* attacker-chosen: any value must be safe */
}

static void msg_release(void *arg) {
  ox_grpc_msg_free(arg);
  free(arg);
}

static void app_message(void *app, ox_grpc_call_t *call, ox_grpc_msg_t *msg) {
  if (ox_grpc_call_data(call) != (void *)1) {
    ox_grpc_msg_free(msg);
    return;
  }
  ox_grpc_msg_t *m = malloc(sizeof *m);
  REQUIRE(m);
  *m = *msg;
  ox_grpc_out_t out = {0};
  REQUIRE(ox_buf_append(&out.head, "e", 1) == 0);
  out.iov = malloc(sizeof *out.iov);
  REQUIRE(out.iov);
  out.iov[0] = (struct iovec){m->data, m->len};
  out.iovcnt = 1;
  out.release = msg_release;
  out.release_arg = m;
  ox_grpc_call_send(call, &out);
}

static void app_half_close(void *app, ox_grpc_call_t *call) {
  if (ox_grpc_call_data(call) == (void *)1) ox_grpc_call_finish(call, OX_GRPC_OK, NULL);
}

static void app_abort(void *app, ox_grpc_call_t *call) {
  ox_grpc_call_finish(call, OX_GRPC_CANCELLED, "gone");
}

static const ox_grpc_handler_t handler = {.on_open = app_open,
                                          .align_offset = app_align,
                                          .on_message = app_message,
                                          .on_half_close = app_half_close,
                                          .on_abort = app_abort};
static ox_grpc_config_t cfg = {.max_concurrent_streams = 8,
                               .max_message_bytes = 1 << 20,
                               .max_header_list_bytes = 4096,
                               .window_bytes = 1 << 20,
                               .max_buffered_bytes = 4 << 20,
                               .idle_timeout_ms = 1000,
                               .max_connections = 4,
                               .handler = &handler};

/* One input's client side, driven from the loop's tick. */
static struct {
  int fd;
  const uint8_t *data;
  size_t size, sent;
  int shut, server_closed;
  int ticks;
} cl;

static void client_tick(ox_loop_t *lp, void *unused) {
  cl.ticks++;
  while (cl.sent < cl.size) {
    ssize_t w = send(cl.fd, cl.data + cl.sent, cl.size - cl.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w <= 0) {
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) break;
      cl.sent = cl.size; /* the server has gone */
      break;
    }
    cl.sent += (size_t)w;
  }
  if (cl.sent == cl.size && !cl.shut) {
    shutdown(cl.fd, SHUT_WR);
    cl.shut = 1;
  }
  char buf[65536];
  for (;;) {
    ssize_t r = recv(cl.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) continue;
    if (r == 0 || (errno != EAGAIN && errno != EINTR)) cl.server_closed = 1;
    break;
  }
  /* Done when the server closed and freed the connection; 5 s at most (a Hold call on a
   * connection that is still open ends at the 1 s idle timeout). */
  if ((cl.server_closed && ox_grpc_open_connections() == 0) || cl.ticks > 5000) ox_loop_stop(lp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A loop and listener per input (a stopped loop stays stopped); this also runs destroy. */
  ox_loop_t *loop;
  ox_grpc_listener_t *listener;
  uint16_t port = 0;
  REQUIRE(ox_loop_create(&loop) == 0);
  REQUIRE(ox_grpc_listener_create(loop, "127.0.0.1", &port, &cfg, &listener) == 0);
  ox_loop_set_tick(loop, 1, client_tick, NULL);
  memset(&cl, 0, sizeof cl);
  cl.fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(cl.fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(cl.fd, (struct sockaddr *)&a, sizeof a) == 0);
  cl.data = data;
  cl.size = size;
  ox_loop_run(loop);
  REQUIRE(cl.ticks <= 5000);
  REQUIRE(ox_grpc_open_connections() == 0);
  REQUIRE(ox_grpc_busy() == 0);
  REQUIRE(ox_grpc_buffered_bytes() == 0);
  ox_grpc_listener_destroy(listener);
  ox_loop_run_pending(loop);
  ox_loop_destroy(loop);
  close(cl.fd);
  return 0;
}
