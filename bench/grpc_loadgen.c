/* grpc_loadgen.c: onnxd-grpc-bench, a gRPC unary load generator over cleartext HTTP/2 (nghttp2's
 * client API) for the Open Inference Protocol's gRPC service and any other unary method: flags,
 * the pre-built request, threads and the report.
 *
 *   onnxd-grpc-bench --url 127.0.0.1:8001 --message mlp16.pb --connections 4 --streams 16 \
 *     --duration 10 --warmup 2 --json out.json
 *
 * --message is a serialized request message (for ModelInfer, a ModelInferRequest); every call
 * sends it as one gRPC message: the 5-byte prefix (not compressed, 32-bit big-endian length) and
 * the bytes, built once. Closed loop: each of the --connections keeps --streams calls in flight.
 *
 * It mirrors onnxd-bench (loadgen.c) so the two tools' numbers compare: the same phases
 * (connect, warm-up, measured window), the same histogram (loadgen_hist.h), the same JSON keys
 * where they apply ("requests" are calls), and the load generator's own CPU over the measured
 * window per 1000 calls, so its share of a shared machine is known. A call is good when the
 * answer has :status 200, grpc-status 0 and a whole response message; errors are counted by
 * grpc-status ("errors_by_grpc_status"), by HTTP status other than 200 ("errors_by_status") and
 * by kind (connect, timeout, io, protocol, no_message).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/flags.h"
#include "grpc_loadgen_worker.h"

#define WINDOW (16 * 1024 * 1024)      /* receive window announced, per stream and connection */
#define MAX_MESSAGE (64 * 1024 * 1024) /* larger requests are not what this tool measures */

typedef struct {
  const char *url, *method, *message, *json;
  long connections, streams, threads, timeout_ms;
  double duration, warmup;
} opts_t;

static const ox_flag_t k_flags[] = {
#define O(field) offsetof(opts_t, field)
    {"url", OX_FLAG_STR, O(url), 0, 0, "server, HOST:PORT (also http://HOST:PORT, [IPv6]:PORT)"},
    {"method", OX_FLAG_STR, O(method), 0, 0, "gRPC method path, /package.Service/Method"},
    {"message", OX_FLAG_STR, O(message), 0, 0,
     "file holding the serialized request message, sent as one gRPC message per call"},
    {"connections", OX_FLAG_INT, O(connections), 1, 10000, "HTTP/2 connections"},
    {"streams", OX_FLAG_INT, O(streams), 1, 10000, "calls in flight per connection"},
    {"duration", OX_FLAG_DEC, O(duration), 0.001, 1e6, "seconds measured"},
    {"warmup", OX_FLAG_DEC, O(warmup), 0, 1e6, "seconds of load before measuring (dropped)"},
    {"threads", OX_FLAG_INT, O(threads), 1, 256, "load-generator threads (connections are split)"},
    {"timeout-ms", OX_FLAG_INT, O(timeout_ms), 1, 86400000, "per connect and per call"},
    {"json", OX_FLAG_STR, O(json), 0, 0, "write machine-readable results to this file"},
#undef O
};

static const ox_flags_spec_t k_spec = {
    .prog = "onnxd-grpc-bench",
    .flags = k_flags,
    .nflags = sizeof k_flags / sizeof k_flags[0],
    .usage_head =
        "usage: onnxd-grpc-bench --message FILE [--flag value | --flag=value]...\n\n"
        "gRPC unary load generator (HTTP/2 cleartext), closed loop.\n\n",
    .usage_tail =
        "\ndefaults: --url 127.0.0.1:8001 --method /inference.GRPCInferenceService/ModelInfer\n"
        "  --connections 1 --streams 10 --duration 10 --warmup 0 --threads 1 --timeout-ms 30000\n",
    .name_width = 14,
};

static atomic_int g_stop;

static void on_sigint(int sig) {
  (void)sig;
  atomic_store(&g_stop, 1);
}

/* Splits HOST:PORT (after an optional http:// and before an optional trailing '/'). */
static int parse_url(const char *url, char *host, size_t hcap, char *port, size_t pcap,
                     char *authority, size_t acap) {
  if (!strncmp(url, "http://", 7)) url += 7;
  size_t n = strcspn(url, "/");
  if (n == 0 || n >= acap) return -1;
  memcpy(authority, url, n);
  authority[n] = 0;
  const char *colon;
  size_t hl;
  if (authority[0] == '[') {
    const char *rb = strchr(authority, ']');
    if (!rb || rb[1] != ':') return -1;
    hl = (size_t)(rb - authority - 1);
    memcpy(host, authority + 1, hl < hcap ? hl : 0);
    colon = rb + 1;
  } else {
    colon = strrchr(authority, ':');
    if (!colon) return -1;
    hl = (size_t)(colon - authority);
    memcpy(host, authority, hl < hcap ? hl : 0);
  }
  if (hl == 0 || hl >= hcap) return -1;
  host[hl] = 0;
  const char *d = colon + 1;
  long pv = 0;
  for (; *d >= '0' && *d <= '9' && pv <= 65535; d++) pv = pv * 10 + (*d - '0');
  if (*d || d == colon + 1 || pv < 1 || pv > 65535 || strlen(colon + 1) >= pcap) return -1;
  strcpy(port, colon + 1);
  return 0;
}

/* Reads the message file into a new buffer, leaving 5 bytes in front for the gRPC prefix.
 * *out is owned by the caller (free). Returns 0, -errno, OX_ETOO_LARGE. */
static int read_message(const char *path, uint8_t **out, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return -EINVAL;
  }
  if (st.st_size > MAX_MESSAGE) {
    close(fd);
    return OX_ETOO_LARGE;
  }
  size_t n = (size_t)st.st_size, got = 0;
  uint8_t *p = malloc(n + 5);
  if (!p) {
    close(fd);
    return OX_ENOMEM;
  }
  while (got < n) {
    ssize_t k = read(fd, p + 5 + got, n - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      int e = k < 0 ? -errno : -EIO;
      free(p);
      close(fd);
      return e;
    }
    got += (size_t)k;
  }
  close(fd);
  p[0] = 0; /* not compressed */
  p[1] = (uint8_t)(n >> 24);
  p[2] = (uint8_t)(n >> 16);
  p[3] = (uint8_t)(n >> 8);
  p[4] = (uint8_t)n;
  *out = p;
  *len = n + 5;
  return 0;
}

/* ---- report ------------------------------------------------------------------------------- */

typedef struct {
  ox_lg_hist_t hist;
  uint64_t calls, ok, errors, incomplete, bytes_sent, bytes_received;
  uint64_t by_grpc[OX_GLG_GRPC_CODES], by_http[1000], by_kind[OX_GLG_ERR_COUNT_];
  double duration_s, cpu_user_s, cpu_sys_s;
} totals_t;

static const char *const k_kind_names[] = {
#define OX_GLG_ERR_NAME(e, name) name,
    OX_GLG_ERR_KINDS(OX_GLG_ERR_NAME)
#undef OX_GLG_ERR_NAME
};

static double us(uint64_t ns) {
  return (double)ns / 1e3;
}

static void print_summary(const opts_t *o, const char *authority, size_t msg_len,
                          const totals_t *t) {
  const ox_lg_hist_t *h = &t->hist;
  printf("onnxd-grpc-bench: %s on %s (%zu-byte request message)\n", o->method, authority, msg_len);
  printf(
      "  %ld connections x %ld streams, %ld thread%s, closed loop, %.2f s measured after "
      "%.2f s warm-up\n",
      o->connections, o->streams, o->threads, o->threads > 1 ? "s" : "", t->duration_s, o->warmup);
  printf("  calls     %" PRIu64 " (ok %" PRIu64 ", errors %" PRIu64 ", incomplete %" PRIu64
         ")  %.1f calls/s\n",
         t->calls, t->ok, t->errors, t->incomplete,
         t->duration_s > 0 ? (double)t->calls / t->duration_s : 0);
  printf(
      "  latency   p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  "
      "mean %.3f ms\n",
      ox_lg_hist_percentile(h, 50) / 1e6, ox_lg_hist_percentile(h, 90) / 1e6,
      ox_lg_hist_percentile(h, 99) / 1e6, ox_lg_hist_percentile(h, 99.9) / 1e6,
      (double)h->max / 1e6 * (h->total > 0), ox_lg_hist_mean(h) / 1e6);
  printf("  transfer  sent %.1f MB, received %.1f MB\n", (double)t->bytes_sent / 1e6,
         (double)t->bytes_received / 1e6);
  if (t->errors) {
    printf("  errors   ");
    for (int s = 0; s < OX_GLG_GRPC_CODES; s++)
      if (t->by_grpc[s]) printf(" grpc-status %d: %" PRIu64 ";", s, t->by_grpc[s]);
    for (int s = 0; s < 1000; s++)
      if (t->by_http[s]) printf(" :status %d: %" PRIu64 ";", s, t->by_http[s]);
    for (int k = 0; k < OX_GLG_ERR_COUNT_; k++)
      if (t->by_kind[k]) printf(" %s: %" PRIu64 ";", k_kind_names[k], t->by_kind[k]);
    printf("\n");
  }
  double cpu = t->cpu_user_s + t->cpu_sys_s;
  printf("  CPU       load generator %.2f s user + %.2f s sys (%.3f s per 1000 calls)\n",
         t->cpu_user_s, t->cpu_sys_s, t->calls ? cpu * 1000 / (double)t->calls : 0);
}

static int write_json(const opts_t *o, const char *authority, size_t msg_len, const totals_t *t) {
  const ox_lg_hist_t *h = &t->hist;
  ox_buf_t b;
  ox_buf_init(&b);
  double cpu = t->cpu_user_s + t->cpu_sys_s;
  int rc = ox_buf_printf(&b,
                         "{\"requests\": %" PRIu64 ", \"ok\": %" PRIu64 ", \"errors\": %" PRIu64
                         ", \"errors_by_grpc_status\": {",
                         t->calls, t->ok, t->errors);
  const char *sep = "";
  for (int s = 0; s < OX_GLG_GRPC_CODES && !rc; s++)
    if (t->by_grpc[s]) {
      rc = ox_buf_printf(&b, "%s\"%d\": %" PRIu64, sep, s, t->by_grpc[s]);
      sep = ", ";
    }
  if (!rc) rc = ox_buf_puts(&b, "}, \"errors_by_status\": {");
  sep = "";
  for (int s = 0; s < 1000 && !rc; s++)
    if (t->by_http[s]) {
      rc = ox_buf_printf(&b, "%s\"%d\": %" PRIu64, sep, s, t->by_http[s]);
      sep = ", ";
    }
  if (!rc) rc = ox_buf_puts(&b, "}, \"errors_by_kind\": {");
  for (int k = 0; k < OX_GLG_ERR_COUNT_ && !rc; k++)
    rc = ox_buf_printf(&b, "%s\"%s\": %" PRIu64, k ? ", " : "", k_kind_names[k], t->by_kind[k]);
  if (!rc)
    rc = ox_buf_printf(
        &b,
        "}, \"incomplete\": %" PRIu64
        ", \"duration_s\": %.6f, \"rps\": %.3f, \"latency_us\": "
        "{\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f, \"mean\": "
        "%.1f}, \"bytes_sent\": %" PRIu64 ", \"bytes_received\": %" PRIu64
        ", \"connections\": %ld, \"streams\": %ld, \"threads\": %ld, \"mode\": \"closed\""
        ", \"warmup_s\": %.3f, \"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f"
        ", \"cpu_s_per_1k_requests\": %.4f, \"request_message_bytes\": %zu, \"method\": ",
        t->incomplete, t->duration_s, t->duration_s > 0 ? (double)t->calls / t->duration_s : 0,
        us(ox_lg_hist_percentile(h, 50)), us(ox_lg_hist_percentile(h, 90)),
        us(ox_lg_hist_percentile(h, 99)), us(ox_lg_hist_percentile(h, 99.9)),
        h->total ? us(h->max) : 0, ox_lg_hist_mean(h) / 1e3, t->bytes_sent, t->bytes_received,
        o->connections, o->streams, o->threads, o->warmup, t->cpu_user_s, t->cpu_sys_s,
        t->calls ? cpu * 1000 / (double)t->calls : 0, msg_len);
  if (!rc) rc = ox_buf_append_json_string(&b, o->method, strlen(o->method));
  if (!rc) rc = ox_buf_puts(&b, ", \"url\": ");
  if (!rc) rc = ox_buf_append_json_string(&b, authority, strlen(authority));
  if (!rc) rc = ox_buf_puts(&b, "}\n");
  FILE *f = rc ? NULL : fopen(o->json, "w");
  if (f) {
    if (fwrite(b.data, 1, b.len, f) != b.len) rc = -EIO;
    if (fclose(f) != 0 && !rc) rc = -errno;
  } else if (!rc) {
    rc = -errno;
  }
  ox_buf_free(&b);
  return rc;
}

/* ---- main --------------------------------------------------------------------------------- */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static double cpu_s(const struct timeval *tv) {
  return (double)tv->tv_sec + tv->tv_usec / 1e6;
}

#define NV(n, v)                                                     \
  {                                                                  \
    (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, 0,                \
        NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE \
  }

int main(int argc, char **argv) {
  opts_t o = {.url = "127.0.0.1:8001",
              .method = "/inference.GRPCInferenceService/ModelInfer",
              .connections = 1,
              .streams = 10,
              .threads = 1,
              .timeout_ms = 30000,
              .duration = 10};
  int frc = ox_flags_parse(&k_spec, argc, argv, &o, stderr);
  if (frc == OX_FLAGS_HELP) ox_flags_usage(&k_spec, NULL, stdout);
  if (frc) return frc == OX_FLAGS_HELP ? 0 : 2;
  if (!o.message) {
    fprintf(stderr, "onnxd-grpc-bench: --message FILE is required\n");
    return 2;
  }
  if (o.threads > o.connections) {
    fprintf(stderr, "onnxd-grpc-bench: --threads cannot exceed --connections\n");
    return 2;
  }
  char host[256], port[8], authority[300];
  if (parse_url(o.url, host, sizeof host, port, sizeof port, authority, sizeof authority)) {
    fprintf(stderr, "onnxd-grpc-bench: --url must be HOST:PORT, not '%s'\n", o.url);
    return 2;
  }
  int bad_method = o.method[0] != '/' || !strchr(o.method + 1, '/');
  for (const char *p = o.method; *p; p++)
    bad_method |= (unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f;
  if (bad_method) {
    fprintf(stderr, "onnxd-grpc-bench: bad --method '%s': /package.Service/Method\n", o.method);
    return 2;
  }

  ox_glg_config_t cfg = {.streams = (int)o.streams,
                         .window = WINDOW,
                         .timeout_ns = (uint64_t)o.timeout_ms * 1000000ULL,
                         .stop = &g_stop};
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV},
                  *ai = NULL;
  int gai = getaddrinfo(host, port, &hints, &ai);
  if (gai || !ai || ai->ai_addrlen > sizeof cfg.addr) {
    fprintf(stderr, "onnxd-grpc-bench: cannot resolve '%s': %s\n", host,
            gai ? gai_strerror(gai) : "?");
    if (ai) freeaddrinfo(ai);
    return 2;
  }
  memcpy(&cfg.addr, ai->ai_addr, ai->ai_addrlen);
  cfg.addrlen = ai->ai_addrlen;
  freeaddrinfo(ai);

  uint8_t *msg = NULL;
  size_t msg_len = 0;
  int rc = read_message(o.message, &msg, &msg_len);
  if (rc) {
    fprintf(stderr, "onnxd-grpc-bench: cannot read --message '%s': %s\n", o.message,
            rc == OX_ETOO_LARGE ? "larger than 64 MiB" : ox_strerror(rc));
    return 2;
  }
  cfg.msg = msg;
  cfg.msg_len = msg_len;
  /* The request headers, the same for every call; nghttp2 encodes them (HPACK) per call, and
   * after the first call they are all indexed in its dynamic table: a few bytes each. */
  nghttp2_nv nva[] = {
      NV(":method", "POST"),
      NV(":scheme", "http"),
      NV(":path", o.method),
      NV(":authority", authority),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
      NV("user-agent", "onnxd-grpc-bench"),
  };
  nva[2].valuelen = strlen(o.method);
  nva[3].valuelen = strlen(authority);
  for (size_t i = 0; i < sizeof nva / sizeof nva[0]; i++)
    if (i != 2 && i != 3) nva[i].valuelen = strlen((const char *)nva[i].value);
  cfg.nva = nva;
  cfg.nvlen = sizeof nva / sizeof nva[0];

  struct rlimit nofile;
  rlim_t want = (rlim_t)(o.connections + 64);
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < want) {
    nofile.rlim_cur = want < nofile.rlim_max ? want : nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  struct sigaction sa = {.sa_handler = on_sigint};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int nt = (int)o.threads;
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)nt + 1);
  cfg.barrier = &barrier;
  ox_glg_worker_t *w = calloc((size_t)nt, sizeof *w);
  pthread_t *tids = calloc((size_t)nt, sizeof *tids);
  totals_t *t = calloc(1, sizeof *t);
  if (!w || !tids || !t) {
    fprintf(stderr, "onnxd-grpc-bench: out of memory\n");
    return 1;
  }
  for (int i = 0; i < nt; i++) {
    w[i].cfg = &cfg;
    w[i].id = i;
    w[i].epfd_ = -1;
    w[i].nconns = (int)(o.connections / nt + (i < o.connections % nt));
    if ((rc = pthread_create(&tids[i], NULL, ox_glg_worker_run, &w[i])) != 0) {
      fprintf(stderr, "onnxd-grpc-bench: cannot start threads: %s\n", strerror(rc));
      return 1;
    }
  }

  pthread_barrier_wait(&barrier); /* every connection opened */
  int setup_err = 0;
  for (int i = 0; i < nt; i++)
    if (w[i].setup_error && !setup_err) setup_err = w[i].setup_error;
  if (setup_err) {
    fprintf(stderr, "onnxd-grpc-bench: cannot connect to %s: %s\n", authority,
            ox_strerror(setup_err));
    atomic_store(&g_stop, 1);
  }
  uint64_t t0 = now_ns();
  cfg.t_start = t0;
  cfg.t_measure = t0 + (uint64_t)(o.warmup * 1e9);
  cfg.t_end = cfg.t_measure + (uint64_t)(o.duration * 1e9);
  pthread_barrier_wait(&barrier); /* the clock is set: load starts */

  struct timespec ts = {(time_t)(cfg.t_measure / 1000000000ULL),
                        (long)(cfg.t_measure % 1000000000ULL)};
  while (!atomic_load(&g_stop) &&
         clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  for (int i = 0; i < nt; i++) pthread_join(tids[i], NULL);
  getrusage(RUSAGE_SELF, &ru1);

  ox_lg_hist_init(&t->hist);
  uint64_t t_done = cfg.t_measure;
  int load_err = 0;
  for (int i = 0; i < nt; i++) {
    ox_glg_worker_t *x = &w[i];
    ox_lg_hist_merge(&t->hist, &x->hist);
    t->calls += x->calls;
    t->ok += x->ok;
    t->errors += x->errors;
    t->incomplete += x->incomplete;
    t->bytes_sent += x->bytes_sent;
    t->bytes_received += x->bytes_received;
    for (int s = 0; s < OX_GLG_GRPC_CODES; s++) t->by_grpc[s] += x->by_grpc_status[s];
    for (int s = 0; s < 1000; s++) t->by_http[s] += x->by_http_status[s];
    for (int k = 0; k < OX_GLG_ERR_COUNT_; k++) t->by_kind[k] += x->by_kind[k];
    if (x->t_done > t_done) t_done = x->t_done;
    if (!setup_err && x->setup_error && !load_err) load_err = x->setup_error;
    ox_glg_worker_destroy(x);
  }
  if (load_err) fprintf(stderr, "onnxd-grpc-bench: event loop failed: %s\n", ox_strerror(load_err));
  t->duration_s = (double)(t_done - cfg.t_measure) / 1e9;
  t->cpu_user_s = cpu_s(&ru1.ru_utime) - cpu_s(&ru0.ru_utime);
  t->cpu_sys_s = cpu_s(&ru1.ru_stime) - cpu_s(&ru0.ru_stime);
  if (!setup_err) print_summary(&o, authority, msg_len, t);
  int json_err = 0;
  if (!setup_err && o.json && (json_err = write_json(&o, authority, msg_len, t)) != 0)
    fprintf(stderr, "onnxd-grpc-bench: cannot write --json '%s': %s\n", o.json,
            ox_strerror(json_err));

  free(t);
  free(w);
  free(tids);
  pthread_barrier_destroy(&barrier);
  free(msg);
  return setup_err || load_err || json_err ? 1 : 0;
}
