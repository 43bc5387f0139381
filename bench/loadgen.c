/* loadgen.c: onnxd-bench, an HTTP/1.1 load generator for the Open Inference Protocol (and any
 * HTTP/1.1 server): flags, the pre-encoded request, threads, and the report.
 *
 *   onnxd-bench --url 127.0.0.1:8000 --path /v2/models/mobilenetv2/infer --body req.bin \
 *     --header 'Inference-Header-Content-Length: 123' --connections 10 --duration 10 --warmup 2
 *
 * --body-lines FILE (instead of --body) sends many bodies: FILE holds one body per line (LF or
 * CRLF line ends, a last line without one counts; empty lines are an error; at most 1,000,000
 * lines and 1 GiB). Every body gets its own pre-encoded Content-Length at setup. The order is
 * per connection: connection j of C (numbered over all threads, from 0) sends line j * N / C
 * first (C connections spread evenly over the file), then
 * the next line for each request it starts, wrapping after the last (a request resent after the
 * server dropped a keep-alive connection keeps its body). One connection sends the lines in file
 * order; C connections start on C different lines. Nothing coordinates connections after that,
 * so over a run every line is sent about equally often but not in a global round robin.
 *
 * Built to cost the server as little CPU as possible on a small machine: one thread by default,
 * epoll, non-blocking keep-alive sockets, the requests encoded once and sent with writev,
 * answers parsed as a stream, no allocation per request (loadgen_worker.c). Closed loop by
 * default; --rate R makes it open loop, with latency measured from each request's intended send
 * time so a stalled server cannot hide its stall (coordinated omission).
 *
 * What is counted: "requests" are requests intended inside the measured window (after the
 * warm-up, before the end) that ended in it: answered, failed or timed out; "rps" is requests
 * over the window. Latency percentiles cover the good answers (expected status and body);
 * everything else is an error, by status or by kind (connect, timeout, io, protocol, body).
 * Requests still in flight or, in the open loop, due but not yet sent when the window closes
 * are reported as "incomplete". The CPU the load generator used during the window is reported
 * per 1000 requests, so its share of a shared machine is known.
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
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/flags.h"
#include "loadgen_worker.h"

#define MAX_HEADERS 64
#define MAX_BODY_LINES 1000000
#define MAX_BODY_LINES_FILE (1ULL << 30) /* 1 GiB */

typedef struct {
  const char *url, *method, *path, *body, *body_lines, *idle_path, *json, *check_body;
  ox_flag_list_t headers; /* --header values, in an array main provides */
  long connections, idle_connections, threads, expect_status, timeout_ms, requests;
  double duration, warmup, rate;
} opts_t;

static const ox_flag_t k_flags[] = {
#define O(field) offsetof(opts_t, field)
    {"url", OX_FLAG_STR, O(url), 0, 0, "server, HOST:PORT (also http://HOST:PORT, [IPv6]:PORT)"},
    {"method", OX_FLAG_STR, O(method), 0, 0, "request method"},
    {"path", OX_FLAG_STR, O(path), 0, 0, "request target"},
    {"body", OX_FLAG_STR, O(body), 0, 0,
     "file holding the request body, sent as is (JSON or binary)"},
    {"body-lines", OX_FLAG_STR, O(body_lines), 0, 0,
     "file of request bodies, one per line (instead of --body; LF or CRLF, no empty lines, at "
     "most 1000000 lines and 1 GiB); connection j of C (over all threads) starts at line j * N / C "
     "and takes the next line, wrapping, for each request it starts (a resend keeps its line)"},
    {"header", OX_FLAG_LIST, O(headers), 0, 0, "'Name: value' added to every request (repeatable)"},
    {"connections", OX_FLAG_INT, O(connections), 1, 100000, "keep-alive connections sending load"},
    {"duration", OX_FLAG_DEC, O(duration), 0.001, 1e6,
     "seconds measured (default 10 unless --requests is given)"},
    {"requests", OX_FLAG_INT, O(requests), 1, 1e15, "stop after this many measured requests"},
    {"warmup", OX_FLAG_DEC, O(warmup), 0, 1e6,
     "seconds of load before measuring (results dropped)"},
    {"rate", OX_FLAG_DEC, O(rate), 0.001, 1e8,
     "open loop at this many requests/s in total (default: closed loop)"},
    {"expect-status", OX_FLAG_INT, O(expect_status), 100, 999, "other statuses count as errors"},
    {"check-body", OX_FLAG_STR, O(check_body), 0, 0, "answers must contain this substring"},
    {"idle-connections", OX_FLAG_INT, O(idle_connections), 0, 1000000,
     "extra connections that send one GET --idle-path, then stay open and idle"},
    {"idle-path", OX_FLAG_STR, O(idle_path), 0, 0, "target of the idle connections' GET"},
    {"threads", OX_FLAG_INT, O(threads), 1, 256, "load-generator threads (connections are split)"},
    {"timeout-ms", OX_FLAG_INT, O(timeout_ms), 1, 86400000, "per connect and per request"},
    {"json", OX_FLAG_STR, O(json), 0, 0, "write machine-readable results to this file"},
#undef O
};

static const ox_flags_spec_t k_spec = {
    .prog = "onnxd-bench",
    .flags = k_flags,
    .nflags = sizeof k_flags / sizeof k_flags[0],
    .usage_head =
        "usage: onnxd-bench [--flag value | --flag=value]...\n\n"
        "HTTP/1.1 load generator: closed loop, or open loop with --rate.\n\n",
    .usage_tail =
        "\ndefaults: --url 127.0.0.1:8000 --method POST --path /v2/models/mobilenetv2/infer\n"
        "  --connections 10 --warmup 0 --expect-status 200 --idle-path /v2/health/ready\n"
        "  --threads 1 --timeout-ms 30000\n",
    .name_width = 18,
};

static atomic_int g_stop;

static void on_sigint(int sig) {
  (void)sig;
  atomic_store(&g_stop, 1);
}

/* ---- the request -------------------------------------------------------------------------- */

static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
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

/* Reads a whole file of at most max bytes; *out is owned by the caller (free). Returns 0, -errno,
 * OX_ETOO_LARGE (*len then receives the file's size). */
static int read_file(const char *path, uint64_t max, char **out, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return -EINVAL;
  }
  if ((uint64_t)st.st_size > max) {
    close(fd);
    *len = (size_t)st.st_size;
    return OX_ETOO_LARGE;
  }
  size_t n = (size_t)st.st_size, got = 0;
  char *p = malloc(n ? n : 1);
  if (!p) {
    close(fd);
    return -ENOMEM;
  }
  while (got < n) {
    ssize_t k = read(fd, p + got, n - got);
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
  *out = p;
  *len = n;
  return 0;
}

/* Checks one --header and tells which framing headers it would clash with. */
static int check_header(const char *h, int *is_host) {
  const char *colon = strchr(h, ':');
  if (!colon || colon == h) return -1;
  for (const char *p = h; p < colon; p++)
    if (!is_tchar((unsigned char)*p)) return -1;
  for (const char *p = colon + 1; *p; p++)
    if ((unsigned char)*p < 0x20 && *p != '\t') return -1;
  size_t nl = (size_t)(colon - h);
  if ((nl == 14 && !strncasecmp(h, "content-length", nl)) ||
      (nl == 17 && !strncasecmp(h, "transfer-encoding", nl)))
    return -2;
  *is_host = nl == 4 && !strncasecmp(h, "host", nl);
  return 0;
}

/* ---- report ------------------------------------------------------------------------------- */

typedef struct {
  ox_lg_hist_t hist;
  uint64_t requests, ok, errors, incomplete, bytes_sent, bytes_received, issued, lag_sum, lag_max;
  uint64_t by_status[1000], by_kind[OX_LG_ERR_COUNT_];
  int idle_ready, idle_open;
  double duration_s, cpu_user_s, cpu_sys_s;
} totals_t;

static const char *const k_kind_names[] = {
#define OX_LG_ERR_NAME(e, name) name,
    OX_LG_ERR_KINDS(OX_LG_ERR_NAME)
#undef OX_LG_ERR_NAME
};

/* The request bodies, as the report describes them. */
typedef struct {
  int from_lines;     /* --body-lines (else one body, maybe empty) */
  size_t n, min, max; /* bodies and their smallest and largest size in bytes */
  double mean;        /* mean size in bytes */
} bodies_t;

static double us(uint64_t ns) {
  return (double)ns / 1e3;
}

static void print_summary(const opts_t *o, const char *authority, const bodies_t *bd,
                          const totals_t *t) {
  const ox_lg_hist_t *h = &t->hist;
  if (bd->from_lines)
    printf("onnxd-bench: %s http://%s%s (%zu bodies, %zu to %zu bytes, mean %.1f)\n", o->method,
           authority, o->path, bd->n, bd->min, bd->max, bd->mean);
  else
    printf("onnxd-bench: %s http://%s%s (%zu-byte body)\n", o->method, authority, o->path, bd->max);
  printf("  %ld connections, %ld thread%s, ", o->connections, o->threads,
         o->threads > 1 ? "s" : "");
  if (o->rate > 0)
    printf("open loop at %.1f req/s", o->rate);
  else
    printf("closed loop");
  printf(", %.2f s measured after %.2f s warm-up\n", t->duration_s, o->warmup);
  printf("  requests  %" PRIu64 " (ok %" PRIu64 ", errors %" PRIu64 ", incomplete %" PRIu64
         ")  %.1f req/s\n",
         t->requests, t->ok, t->errors, t->incomplete,
         t->duration_s > 0 ? (double)t->requests / t->duration_s : 0);
  printf(
      "  latency   p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  "
      "mean %.3f ms\n",
      ox_lg_hist_percentile(h, 50) / 1e6, ox_lg_hist_percentile(h, 90) / 1e6,
      ox_lg_hist_percentile(h, 99) / 1e6, ox_lg_hist_percentile(h, 99.9) / 1e6,
      (double)h->max / 1e6 * (h->total > 0), ox_lg_hist_mean(h) / 1e6);
  if (o->rate > 0)
    printf("  send lag  mean %.3f ms, max %.3f ms after the intended time (inside the latency)\n",
           t->issued ? (double)t->lag_sum / (double)t->issued / 1e6 : 0, (double)t->lag_max / 1e6);
  printf("  transfer  sent %.1f MB, received %.1f MB\n", (double)t->bytes_sent / 1e6,
         (double)t->bytes_received / 1e6);
  if (t->errors) {
    printf("  errors   ");
    for (int s = 0; s < 1000; s++)
      if (t->by_status[s]) printf(" status %d: %" PRIu64 ";", s, t->by_status[s]);
    for (int k = 0; k < OX_LG_ERR_COUNT_; k++)
      if (t->by_kind[k]) printf(" %s: %" PRIu64 ";", k_kind_names[k], t->by_kind[k]);
    printf("\n");
  }
  double cpu = t->cpu_user_s + t->cpu_sys_s;
  printf("  CPU       load generator %.2f s user + %.2f s sys (%.3f s per 1000 requests)\n",
         t->cpu_user_s, t->cpu_sys_s, t->requests ? cpu * 1000 / (double)t->requests : 0);
  if (o->idle_connections)
    printf("  idle      %ld opened, %d answered, %d still open at the end\n", o->idle_connections,
           t->idle_ready, t->idle_open);
}

static int write_json(const opts_t *o, const char *authority, const bodies_t *bd,
                      const totals_t *t) {
  const ox_lg_hist_t *h = &t->hist;
  ox_buf_t b;
  ox_buf_init(&b);
  double cpu = t->cpu_user_s + t->cpu_sys_s;
  int rc = ox_buf_printf(&b,
                         "{\"requests\": %" PRIu64 ", \"ok\": %" PRIu64 ", \"errors\": %" PRIu64
                         ", \"errors_by_status\": {",
                         t->requests, t->ok, t->errors);
  const char *sep = "";
  for (int s = 0; s < 1000 && !rc; s++)
    if (t->by_status[s]) {
      rc = ox_buf_printf(&b, "%s\"%d\": %" PRIu64, sep, s, t->by_status[s]);
      sep = ", ";
    }
  if (!rc) rc = ox_buf_puts(&b, "}, \"errors_by_kind\": {");
  for (int k = 0; k < OX_LG_ERR_COUNT_ && !rc; k++)
    rc = ox_buf_printf(&b, "%s\"%s\": %" PRIu64, k ? ", " : "", k_kind_names[k], t->by_kind[k]);
  if (!rc)
    rc = ox_buf_printf(
        &b,
        "}, \"incomplete\": %" PRIu64
        ", \"duration_s\": %.6f, \"rps\": %.3f, \"latency_us\": "
        "{\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f, \"mean\": "
        "%.1f}, \"bytes_sent\": %" PRIu64 ", \"bytes_received\": %" PRIu64
        ", \"connections\": %ld, \"idle_connections\": %ld, \"idle_ready\": %d, \"idle_open\": %d"
        ", \"threads\": %ld, \"mode\": \"%s\", \"rate\": %.3f, \"warmup_s\": %.3f"
        ", \"cpu_user_s\": %.3f, \"cpu_sys_s\": %.3f, \"cpu_s_per_1k_requests\": %.4f"
        ", \"send_lag_us\": {\"mean\": %.1f, \"max\": %.1f}",
        t->incomplete, t->duration_s, t->duration_s > 0 ? (double)t->requests / t->duration_s : 0,
        us(ox_lg_hist_percentile(h, 50)), us(ox_lg_hist_percentile(h, 90)),
        us(ox_lg_hist_percentile(h, 99)), us(ox_lg_hist_percentile(h, 99.9)),
        h->total ? us(h->max) : 0, ox_lg_hist_mean(h) / 1e3, t->bytes_sent, t->bytes_received,
        o->connections, o->idle_connections, t->idle_ready, t->idle_open, o->threads,
        o->rate > 0 ? "open" : "closed", o->rate, o->warmup, t->cpu_user_s, t->cpu_sys_s,
        t->requests ? cpu * 1000 / (double)t->requests : 0,
        t->issued ? (double)t->lag_sum / (double)t->issued / 1e3 : 0, us(t->lag_max));
  /* request_body_bytes: the body's size, or with --body-lines the mean size of the bodies. */
  if (!rc)
    rc = bd->from_lines ? ox_buf_printf(&b, ", \"request_body_bytes\": %.1f", bd->mean)
                        : ox_buf_printf(&b, ", \"request_body_bytes\": %zu", bd->max);
  if (!rc) rc = ox_buf_printf(&b, ", \"bodies\": %zu, \"method\": ", bd->n);
  if (!rc) rc = ox_buf_append_json_string(&b, o->method, strlen(o->method));
  if (!rc) rc = ox_buf_puts(&b, ", \"url\": ");
  if (!rc) rc = ox_buf_append_json_string(&b, authority, strlen(authority));
  if (!rc) rc = ox_buf_puts(&b, ", \"path\": ");
  if (!rc) rc = ox_buf_append_json_string(&b, o->path, strlen(o->path));
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

/* Share i of n split over k parts, the remainder going to the first ones. */
static uint64_t share(uint64_t n, long k, long i) {
  return n / (uint64_t)k + ((uint64_t)i < n % (uint64_t)k);
}

int main(int argc, char **argv) {
  opts_t o = {.url = "127.0.0.1:8000",
              .method = "POST",
              .path = "/v2/models/mobilenetv2/infer",
              .idle_path = "/v2/health/ready",
              .connections = 10,
              .threads = 1,
              .expect_status = 200,
              .timeout_ms = 30000,
              .duration = -1};
  const char *header_items[MAX_HEADERS];
  o.headers = (ox_flag_list_t){header_items, 0, MAX_HEADERS};
  int frc = ox_flags_parse(&k_spec, argc, argv, &o, stderr);
  if (frc == OX_FLAGS_HELP) ox_flags_usage(&k_spec, NULL, stdout);
  if (frc) return frc == OX_FLAGS_HELP ? 0 : 2;
  if (o.duration < 0 && !o.requests) o.duration = 10;
  if (o.threads > o.connections) {
    fprintf(stderr, "onnxd-bench: --threads cannot exceed --connections\n");
    return 2;
  }
  if (o.requests && o.requests < o.threads) {
    fprintf(stderr, "onnxd-bench: --requests must be at least --threads\n");
    return 2;
  }
  char host[256], port[8], authority[300];
  if (parse_url(o.url, host, sizeof host, port, sizeof port, authority, sizeof authority)) {
    fprintf(stderr, "onnxd-bench: --url must be HOST:PORT, not '%s'\n", o.url);
    return 2;
  }
  int bad_method = !o.method[0];
  for (const char *p = o.method; *p; p++) bad_method |= !is_tchar((unsigned char)*p);
  if (bad_method) {
    fprintf(stderr, "onnxd-bench: bad --method '%s'\n", o.method);
    return 2;
  }
  const char *const paths[] = {o.path, o.idle_path};
  for (int k = 0; k < 2; k++) {
    int bad_path = paths[k][0] != '/';
    for (const char *p = paths[k]; *p; p++)
      bad_path |= (unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f;
    if (bad_path) {
      fprintf(stderr, "onnxd-bench: bad %s '%s': must start with '/', no spaces or controls\n",
              k ? "--idle-path" : "--path", paths[k]);
      return 2;
    }
  }

  ox_lg_config_t cfg = {.expect_status = (int)o.expect_status,
                        .timeout_ns = (uint64_t)o.timeout_ms * 1000000ULL,
                        .rate = o.rate,
                        .nworkers = (int)o.threads,
                        .nconns = (size_t)o.connections,
                        .stop = &g_stop};
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV},
                  *ai = NULL;
  int gai = getaddrinfo(host, port, &hints, &ai);
  if (gai || !ai || ai->ai_addrlen > sizeof cfg.addr) {
    fprintf(stderr, "onnxd-bench: cannot resolve '%s': %s\n", host, gai ? gai_strerror(gai) : "?");
    return 2;
  }
  memcpy(&cfg.addr, ai->ai_addr, ai->ai_addrlen);
  cfg.addrlen = ai->ai_addrlen;
  freeaddrinfo(ai);

  /* Arguments checked before anything is allocated, so every error exit leaves nothing behind. */
  int has_host = 0;
  for (size_t i = 0; i < o.headers.n; i++) {
    const char *hdr = o.headers.items[i];
    int h_host = 0, bad = check_header(hdr, &h_host);
    if (bad) {
      fprintf(stderr, "onnxd-bench: --header '%s': %s\n", hdr,
              bad == -2 ? "framing headers are computed from the body" : "not 'Name: value'");
      return 2;
    }
    has_host |= h_host;
  }
  if (o.check_body && !o.check_body[0]) {
    fprintf(stderr, "onnxd-bench: --check-body must not be empty\n");
    return 2;
  }

  /* The bodies: one file read whole, and with --body-lines views of its lines. */
  if (o.body && o.body_lines) {
    fprintf(stderr, "onnxd-bench: --body and --body-lines exclude each other\n");
    return 2;
  }
  const char *body_path = o.body_lines ? o.body_lines : o.body;
  char *file = NULL;
  size_t file_len = 0;
  if (body_path) {
    int rc =
        read_file(body_path, o.body_lines ? MAX_BODY_LINES_FILE : UINT64_MAX, &file, &file_len);
    if (rc == OX_ETOO_LARGE) {
      fprintf(stderr,
              "onnxd-bench: --body-lines '%s' has %zu bytes, more than the limit of 1 GiB\n",
              body_path, file_len);
      return 2;
    }
    if (rc) {
      fprintf(stderr, "onnxd-bench: cannot read --%s '%s': %s\n",
              o.body_lines ? "body-lines" : "body", body_path, ox_strerror(rc));
      return 2;
    }
  }
  ox_lg_slice_t one = {file, file_len}, *lines = &one;
  size_t nbodies = 1;
  if (o.body_lines) {
    size_t bad = 0;
    int rc = ox_lg_body_lines(file, file_len, MAX_BODY_LINES, NULL, &nbodies, &bad);
    if (!rc && !(lines = malloc(nbodies * sizeof *lines))) rc = OX_ENOMEM;
    if (!rc) rc = ox_lg_body_lines(file, file_len, nbodies, lines, &nbodies, &bad);
    if (rc) {
      free(file);
      if (lines != &one) free(lines);
    }
    if (rc == OX_ENOMEM) {
      fprintf(stderr, "onnxd-bench: out of memory\n");
      return 1;
    }
    if (rc == OX_ETOO_LARGE)
      fprintf(stderr, "onnxd-bench: --body-lines '%s' has more than %d lines\n", body_path,
              MAX_BODY_LINES);
    else if (rc && bad == 0)
      fprintf(stderr, "onnxd-bench: --body-lines '%s' is empty: it needs one body per line\n",
              body_path);
    else if (rc)
      fprintf(stderr, "onnxd-bench: --body-lines '%s': line %zu is empty (each line is a body)\n",
              body_path, bad);
    if (rc) return 2;
  }
  bodies_t bodies = {.from_lines = o.body_lines != NULL, .n = nbodies, .min = SIZE_MAX};
  double bytes = 0;
  for (size_t i = 0; i < nbodies; i++) {
    if (lines[i].len < bodies.min) bodies.min = lines[i].len;
    if (lines[i].len > bodies.max) bodies.max = lines[i].len;
    bytes += (double)lines[i].len;
  }
  bodies.mean = bytes / (double)nbodies;

  /* The requests, encoded once for the whole run: the shared prefix (request line and headers),
   * then per body its own tail (Content-Length) and the body. */
  ox_buf_t prefix, idle;
  ox_buf_init(&prefix);
  ox_buf_init(&idle);
  ox_lg_reqs_t reqs = {0};
  int rc = ox_buf_printf(&prefix, "%s %s HTTP/1.1\r\n", o.method, o.path);
  for (size_t i = 0; i < o.headers.n && !rc; i++)
    rc = ox_buf_printf(&prefix, "%s\r\n", o.headers.items[i]);
  if (!rc && !has_host) rc = ox_buf_printf(&prefix, "Host: %s\r\n", authority);
  int length_always = !strcmp(o.method, "POST") || !strcmp(o.method, "PUT");
  if (!rc) rc = ox_lg_reqs_create(&reqs, lines, nbodies, length_always);
  if (!rc) rc = ox_buf_printf(&idle, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", o.idle_path, authority);
  if (lines != &one) free(lines); /* the requests keep views of the file, not of this array */
  if (rc) {
    fprintf(stderr, "onnxd-bench: out of memory\n");
    return 1;
  }
  cfg.prefix = prefix.data;
  cfg.prefix_len = prefix.len;
  cfg.reqs = reqs.reqs;
  cfg.nreqs = reqs.n;
  cfg.idle_req = idle.data;
  cfg.idle_req_len = idle.len;
  cfg.head_request = !strcmp(o.method, "HEAD");
  ox_lg_match_t match;
  if (o.check_body) {
    if (ox_lg_match_create(&match, o.check_body, strlen(o.check_body))) {
      fprintf(stderr, "onnxd-bench: out of memory\n");
      return 1;
    }
    cfg.match = &match;
  }

  /* Every connection is a descriptor: raise the soft limit as far as needed and allowed. */
  struct rlimit nofile;
  rlim_t want = (rlim_t)(o.connections + o.idle_connections + 64);
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
  ox_lg_worker_t *w = calloc((size_t)nt, sizeof *w);
  pthread_t *tids = calloc((size_t)nt, sizeof *tids);
  if (!w || !tids) {
    fprintf(stderr, "onnxd-bench: out of memory\n");
    return 1;
  }
  for (int i = 0, base = 0; i < nt; i++) {
    w[i].cfg = &cfg;
    w[i].id = i;
    w[i].epfd_ = -1;
    w[i].conn_base = base;
    w[i].nconns = (int)share((uint64_t)o.connections, nt, i);
    base += w[i].nconns;
    w[i].nidle = (int)share((uint64_t)o.idle_connections, nt, i);
    w[i].max_requests = o.requests ? share((uint64_t)o.requests, nt, i) : UINT64_MAX;
    if ((rc = pthread_create(&tids[i], NULL, ox_lg_worker_run, &w[i])) != 0) {
      fprintf(stderr, "onnxd-bench: cannot start threads: %s\n", strerror(rc));
      return 1;
    }
  }

  pthread_barrier_wait(&barrier); /* every connection opened, idle ones answered */
  int setup_err = 0;
  for (int i = 0; i < nt; i++)
    if (w[i].setup_error && !setup_err) setup_err = w[i].setup_error;
  if (setup_err) {
    fprintf(stderr, "onnxd-bench: cannot connect to %s: %s\n", authority, ox_strerror(setup_err));
    atomic_store(&g_stop, 1);
  }
  uint64_t t0 = now_ns();
  cfg.t_start = t0;
  cfg.t_measure = t0 + (uint64_t)(o.warmup * 1e9);
  cfg.t_end = o.duration > 0 ? cfg.t_measure + (uint64_t)(o.duration * 1e9) : UINT64_MAX;
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

  totals_t *t = calloc(1, sizeof *t);
  if (!t) return 1;
  ox_lg_hist_init(&t->hist);
  uint64_t t_done = cfg.t_measure;
  int load_err = 0;
  for (int i = 0; i < nt; i++) {
    ox_lg_worker_t *x = &w[i];
    ox_lg_hist_merge(&t->hist, &x->hist);
    t->requests += x->requests;
    t->ok += x->ok;
    t->errors += x->errors;
    t->incomplete += x->incomplete;
    t->issued += x->requests + x->incomplete;
    t->lag_sum += x->lag_sum;
    if (x->lag_max > t->lag_max) t->lag_max = x->lag_max;
    t->bytes_sent += x->bytes_sent;
    t->bytes_received += x->bytes_received;
    for (int s = 0; s < 1000; s++) t->by_status[s] += x->by_status[s];
    for (int k = 0; k < OX_LG_ERR_COUNT_; k++) t->by_kind[k] += x->by_kind[k];
    t->idle_ready += x->idle_ready;
    t->idle_open += x->idle_open;
    if (x->t_done > t_done) t_done = x->t_done;
    if (!setup_err && x->setup_error && !load_err) load_err = x->setup_error;
    ox_lg_worker_destroy(x);
  }
  if (load_err) fprintf(stderr, "onnxd-bench: event loop failed: %s\n", ox_strerror(load_err));
  t->duration_s = (double)(t_done - cfg.t_measure) / 1e9;
  t->cpu_user_s = cpu_s(&ru1.ru_utime) - cpu_s(&ru0.ru_utime);
  t->cpu_sys_s = cpu_s(&ru1.ru_stime) - cpu_s(&ru0.ru_stime);
  if (!setup_err) print_summary(&o, authority, &bodies, t);
  int json_err = 0;
  if (!setup_err && o.json && (json_err = write_json(&o, authority, &bodies, t)) != 0)
    fprintf(stderr, "onnxd-bench: cannot write --json '%s': %s\n", o.json, ox_strerror(json_err));

  free(t);
  free(w);
  free(tids);
  pthread_barrier_destroy(&barrier);
  if (o.check_body) ox_lg_match_destroy(&match);
  ox_lg_reqs_destroy(&reqs);
  ox_buf_free(&prefix);
  ox_buf_free(&idle);
  free(file);
  return setup_err || load_err || json_err ? 1 : 0;
}
