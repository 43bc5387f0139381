/* main.c: onnxd's flags, start-up and shutdown: the only file that sees every module.
 *
 * Start-up: parse flags (one declarative table drives parsing, --help and the README), create
 * the ONNX Runtime environment, load the model repository, start the inference workers and one
 * event loop per I/O thread, each with its own listening socket on the same port.
 * Shutdown (SIGTERM, SIGINT or SIGQUIT): readiness turns false (503; listeners keep accepting
 * so that probes get that answer), new inference is refused (503), idle connections close and
 * every response carries Connection: close, requests in flight finish (up to
 * --drain-timeout-ms), then everything is freed and the process exits 0. SIGHUP, SIGUSR1 and
 * SIGUSR2 are logged and ignored.
 */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/bigbuf.h"
#include "core/clock.h"
#include "core/container.h"
#include "core/error.h"
#include "core/flags.h"
#include "core/log.h"
#include "core/text.h"
#include "features/fstream.h"
#include "features/l3_pg.h"
#include "http/conn.h"
#include "infer/poll.h"
#include "loop/loop.h"
#include "runtime/runtime.h"
#include "sched/pool.h"
#include "server/server.h"

typedef struct {
  const char *model_repository;
  const char *host;
  const char *log_level;
  long http_port;
  long grpc_port;
  long grpc_max_streams;
  long io_threads;
  long infer_threads;
  long intra_op_threads;
  long max_body_bytes;
  long image_max_pixels;
  long max_connections;
  long max_queue;
  long request_timeout_ms;
  long idle_timeout_ms;
  long drain_timeout_ms;
  const char *feature_dir;
  long feature_l1_bytes;
  long feature_l1_ttl_ms;
  long feature_l3_cache_ms;
  long feature_retention_ms;
  long feature_bloom_items;
  long feature_max_events_24h;
  const char *feature_sync;
  long feature_store_max_bytes;
  const char *redis;
  long feature_events_to_redis;
  const char *feature_events_stream;
  long feature_stream_timeout_ms;
  long feature_stream_ready_lag_ms;
  long feature_stream_trim_ms;
  long feature_stream_trim_every_ms;
  const char *feature_bootstrap;
  long feature_bootstrap_wait_ms;
  const char *postgres;
  const char *event_keys;
  long max_inflight_bytes;
  const char *admin_token_file;
  long admin_port;
  const char *admin_host;
  const char *model_control_mode;
  long repository_poll_secs;
  ox_flag_list_t load_model;
  const char *model_name;
  int version; /* --version came */
} ox_options_t;

static const char default_feature_dir[] = "./feature-store";

static const ox_flag_t ox_flags[] = {
#define O(field) offsetof(ox_options_t, field)
    {"model-repository", OX_FLAG_STR, O(model_repository), 0, 0,
     "directory of models: DIR/<model>/<version>/model.onnx"},
    {"host", OX_FLAG_STR, O(host), 0, 0, "address to listen on"},
    {"http-port", OX_FLAG_INT, O(http_port), 0, 65535, "HTTP port (0: any free port, logged)"},
    {"grpc-port", OX_FLAG_INT, O(grpc_port), -1, 65535,
     "gRPC port (HTTP/2 cleartext, the Open Inference Protocol's gRPC service and "
     "grpc.health.v1; 0: any free port, logged; -1: no gRPC)"},
    {"grpc-max-streams", OX_FLAG_INT, O(grpc_max_streams), 1, 65536,
     "concurrent gRPC calls per connection (SETTINGS_MAX_CONCURRENT_STREAMS)"},
    {"io-threads", OX_FLAG_INT, O(io_threads), 1, 64, "event-loop threads (connections, HTTP)"},
    {"infer-threads", OX_FLAG_INT, O(infer_threads), 1, 256,
     "worker threads: parse, run and encode inference requests"},
    {"intra-op-threads", OX_FLAG_INT, O(intra_op_threads), 1, 256,
     "ONNX Runtime's global intra-op pool size (threads per Run, caller included)"},
    {"image-max-pixels", OX_FLAG_INT, O(image_max_pixels), 1, 1L << 40,
     "pixels of one decoded image input (JPEG/PNG, image_inputs); larger images get 400 from "
     "their header, before any pixel is decoded; a model's max_pixels may only lower it"},
    {"max-body-bytes", OX_FLAG_INT, O(max_body_bytes), 1, 1L << 40,
     "largest request body; larger ones get 413 before any of it is read"},
    {"max-connections", OX_FLAG_INT, O(max_connections), 1, 1000000,
     "open connections; at the cap the accepting I/O thread closes its connection idle longest "
     "between keep-alive requests to make room, else the new one gets 503 and is closed"},
    {"max-queue", OX_FLAG_INT, O(max_queue), 1, 1000000,
     "inference requests waiting for a worker; beyond it 503 with Retry-After"},
    {"request-timeout-ms", OX_FLAG_INT, O(request_timeout_ms), 1, 3600000,
     "time to receive a whole request (else 408; a new connection's first one counts from the "
     "accept, a silent one is closed) or to send a response"},
    {"idle-timeout-ms", OX_FLAG_INT, O(idle_timeout_ms), 1, 86400000,
     "keep-alive connection with no request after its last response is closed after it"},
    {"drain-timeout-ms", OX_FLAG_INT, O(drain_timeout_ms), 0, 3600000,
     "at SIGTERM, SIGINT or SIGQUIT, how long in-flight requests may take to finish"},
    {"log-level", OX_FLAG_STR, O(log_level), 0, 0, "error, warn, info or debug"},
    {"feature-dir", OX_FLAG_STR, O(feature_dir), 0, 0,
     "feature store (LMDB) directory; opened when given, or when a model has a feature_view"},
    {"feature-l1-bytes", OX_FLAG_INT, O(feature_l1_bytes), 0, 1L << 40,
     "memory bound of the in-process feature cache (L1); 0 turns L1 off, else at least 1 MiB"},
    {"feature-l1-ttl-ms", OX_FLAG_INT, O(feature_l1_ttl_ms), 0, 86400000,
     "L1 entries expire after this (0: never)"},
    {"feature-l3-cache-ms", OX_FLAG_INT, O(feature_l3_cache_ms), 0, 7L * 86400000,
     "how long a row read from Redis/PostgreSQL is kept in L2 (0: not kept)"},
    {"feature-retention-ms", OX_FLAG_INT, O(feature_retention_ms), 0, 100L * 365 * 86400000,
     "purge stored events older than this (Unix-ms ts), keeping each entity's newest; "
     "0: keep every event, else at least 86400000 (24 h)"},
    {"feature-bloom-items", OX_FLAG_INT, O(feature_bloom_items), 1, 1000000000,
     "entities the entity Bloom filter is sized for (1% false positives)"},
    {"feature-max-events-per-entity-24h", OX_FLAG_INT, O(feature_max_events_24h), 1, 100000000,
     "most events one entity may hold in any 24 h window; an ingest that would exceed it is "
     "refused whole (429)"},
    {"feature-sync", OX_FLAG_STR, O(feature_sync), 0, 0,
     "LMDB commits: data (fsync data and meta each commit: an acknowledged write survives "
     "power loss), nometa (one fsync a commit: power loss may undo the last commit, the store "
     "stays consistent; for --feature-events-stream, which applies it again) or none (no "
     "fsync: tests, tmpfs)"},
    {"feature-store-max-bytes", OX_FLAG_INT, O(feature_store_max_bytes), 1L << 20, 1L << 44,
     "maximum size of the feature store (LMDB); it grows up to this, then writes get 507"},
    {"redis", OX_FLAG_STR, O(redis), 0, 0,
     "HOST:PORT of Redis holding feature rows (L3; optional)"},
    {"feature-events-to-redis", OX_FLAG_INT, O(feature_events_to_redis), 0, 1,
     "also append every ingested event to Redis list ~ev:<entity> (needs --redis)"},
    {"feature-events-stream", OX_FLAG_STR, O(feature_events_stream), 0, 0,
     "Redis Stream KEY (on --redis) that every replica applies: POST /v1/events appends to it "
     "and answers once this replica has applied it; for N replicas behind one Service"},
    {"feature-stream-timeout-ms", OX_FLAG_INT, O(feature_stream_timeout_ms), 100, 600000,
     "bound of POST /v1/events with --feature-events-stream: the append (503 if Redis did not "
     "take it) and the local apply (202 if not yet applied here)"},
    {"feature-stream-ready-lag-ms", OX_FLAG_INT, O(feature_stream_ready_lag_ms), 1, 86400000,
     "with --feature-events-stream, not ready (/v2/health/ready 503) until the replication lag "
     "has been within this once since start"},
    {"feature-stream-trim-ms", OX_FLAG_INT, O(feature_stream_trim_ms), 0, 100L * 365 * 86400000,
     "delete stream entries older than this (one replica at a time; 0: never); at least "
     "--feature-retention-ms"},
    {"feature-stream-trim-every-ms", OX_FLAG_INT, O(feature_stream_trim_every_ms), 100, 86400000,
     "period of the trim"},
    {"feature-bootstrap", OX_FLAG_STR, O(feature_bootstrap), 0, 0,
     "http://HOST:PORT of a peer: when --feature-dir holds no store, start from the peer's "
     "snapshot (GET /v1/features/snapshot) and follow the stream from its position"},
    {"feature-bootstrap-wait-ms", OX_FLAG_INT, O(feature_bootstrap_wait_ms), 0, 3600000,
     "how long --feature-bootstrap retries an unreachable peer before starting empty"},
    {"postgres", OX_FLAG_STR, O(postgres), 0, 0,
     "libpq conninfo of PostgreSQL holding feature rows (L3, after Redis; optional)"},
    {"event-keys", OX_FLAG_STR, O(event_keys), 0, 0,
     "fields of POST /v1/events naming the entities an event belongs to (X_id: entity X:<v>)"},
    {"max-inflight-bytes", OX_FLAG_INT, O(max_inflight_bytes), 0, 1L << 50,
     "budget for request bodies being received or held plus responses waiting for slow readers; "
     "a body that does not fit gets 503 + Retry-After before it is read (0: a quarter of "
     "physical memory, at least --max-body-bytes)"},
    {"admin-token-file", OX_FLAG_STR, O(admin_token_file), 0, 0,
     "file whose first line is a token: POST /v1/events and PUT /v1/features then need "
     "Authorization: Bearer <token> (else 401, or 403 if wrong)"},
    {"admin-port", OX_FLAG_INT, O(admin_port), 0, 65535,
     "port of a separate listener that alone serves POST /v1/events and PUT /v1/features "
     "(404 on --http-port), plus health; 0: none"},
    {"admin-host", OX_FLAG_STR, O(admin_host), 0, 0, "address of the --admin-port listener"},
    {"model-control-mode", OX_FLAG_STR, O(model_control_mode), 0, 0,
     "none (load every model at start-up, repository load/unload answer 400), poll (as none, then "
     "rescan the repository every --repository-poll-secs and on SIGHUP: added, changed and "
     "removed models load, reload and unload) or explicit (only --load-model and POST "
     "/v2/repository/models/{m}/load load models)"},
    {"repository-poll-secs", OX_FLAG_INT, O(repository_poll_secs), 0, 86400,
     "poll mode: seconds between repository scans (0: only on SIGHUP)"},
    {"load-model", OX_FLAG_LIST, O(load_model), 0, 0,
     "explicit mode: a model to load at start-up (repeatable, or comma-separated), '*' for all"},
    {"model-name", OX_FLAG_STR, O(model_name), 0, 0,
     "single-model mode (KServe: --model-name {{.Name}}): when --model-repository is one model's "
     "directory (DIR/model.onnx, served as version 1, or DIR/<version>/model.onnx, with "
     "DIR/config.json or config.pbtxt), serve it under this name; control mode none only. A "
     "repository DIR/<model>/<version>/ is served as usual (every model, under its own name)"},
    {"help", OX_FLAG_HELP, 0, 0, 0, "this text"},
    {"version", OX_FLAG_EXIT, O(version), 0, 0, "onnxd and ONNX Runtime versions"},
#undef O
};

static const ox_flags_spec_t ox_flags_spec = {
    .prog = "onnxd",
    .flags = ox_flags,
    .nflags = sizeof ox_flags / sizeof ox_flags[0],
    .usage_head =
        "usage: onnxd [--flag value | --flag=value]...\n\n"
        "Serves ONNX models over the Open Inference Protocol (KServe v2) on HTTP/1.1.\n\n",
    .name_width = 20,
};

typedef struct {
  ox_loop_t *loop;
  ox_http_listener_t *listener;
  ox_grpc_service_t *grpc; /* NULL: no gRPC on this loop (admin loop, --grpc-port -1) */
  ox_grpc_listener_t *grpc_listener;
  pthread_t thread;
  ox_task_t drain_task;
} io_thread_t;

static void *io_main(void *arg) {
  io_thread_t *t = arg;
  int rc = ox_loop_run(t->loop);
  if (rc) ox_error("event loop failed: %s", ox_strerror(rc));
  return NULL;
}

/* Drain: the listener keeps accepting, so that readiness probes see 503 rather than a refused
 * connection; idle connections close and every response carries Connection: close. */
static void io_drain(ox_loop_t *loop, ox_task_t *task) {
  io_thread_t *t = ox_container_of(task, io_thread_t, drain_task);
  ox_http_listener_drain(t->listener);
  if (t->grpc) {
    ox_grpc_service_drain(t->grpc);
    ox_grpc_listener_drain(t->grpc_listener);
  }
}

/* Reads the admin token: the file's first line (without CR/LF), 1 to 4095 bytes. 0 or -1 with a
 * message on stderr. */
/* The listeners set SO_REUSEPORT (one per I/O loop), which would also let a second onnxd (same
 * user) bind the same port and silently take half of its connections. So a fixed port is first
 * bound once without SO_REUSEPORT: in use by anyone, that fails, and onnxd stops with a
 * message. 0, or -errno. */
static int port_in_use(const char *host, long port) {
  if (port <= 0) return 0;
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char ps[24];
  snprintf(ps, sizeof ps, "%ld", port);
  if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) return 0; /* the listener says why */
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = 0;
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* TIME_WAIT is no conflict */
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) rc = -errno;
    close(fd);
  }
  freeaddrinfo(ai);
  return rc == -EADDRINUSE ? rc : 0;
}

static int read_admin_token(const char *path, char *out, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "onnxd: --admin-token-file %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t n = 0;
  int ch;
  while ((ch = fgetc(f)) != EOF && ch != '\n' && ch != '\r' && n + 1 < cap) out[n++] = (char)ch;
  int too_long = n + 1 >= cap && ch != EOF && ch != '\n' && ch != '\r';
  fclose(f);
  out[n] = 0;
  if (n == 0 || too_long) {
    fprintf(stderr,
            "onnxd: --admin-token-file %s: the first line must hold the token (1 to "
            "%zu bytes)\n",
            path, cap - 1);
    return -1;
  }
  return 0;
}

static const char *signal_name(int sig) {
  switch (sig) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGHUP:
      return "SIGHUP";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    default:
      return "signal";
  }
}

/* Comma-separated names of [A-Za-z0-9_.-] (1 to 63 bytes), at most OX_FSTORE_MAX_ENTITIES. */
static int check_event_keys(const char *s) {
  int n = 0, len = 0;
  for (;; s++) {
    if (*s == ',' || !*s) {
      if (!len || len > 63 || ++n > OX_FSTORE_MAX_ENTITIES) return -1;
      len = 0;
      if (!*s) return 0;
      continue;
    }
    if (!ox_name_char(*s)) return -1;
    len++;
  }
}

/* --load-model: waits for each load's outcome (the manager's callback). */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int pending, failed;
} load_wait_t;

static void load_done(void *arg, int rc, const char *msg) {
  load_wait_t *w = arg;
  if (rc) ox_error("--load-model: %s", msg);
  pthread_mutex_lock(&w->mu);
  w->failed |= rc != 0;
  w->pending--;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static int load_one(ox_models_t *models, load_wait_t *w, const char *name) {
  pthread_mutex_lock(&w->mu);
  w->pending++;
  pthread_mutex_unlock(&w->mu);
  if (ox_models_load(models, name, NULL, 0, NULL, load_done, w) == 0) return 0;
  pthread_mutex_lock(&w->mu);
  w->pending--;
  pthread_mutex_unlock(&w->mu);
  return -1;
}

/* Loads the comma-separated models of list ('*': every model directory of dir). 0 or -1. */
static int load_models(ox_models_t *models, const char *dir, const char *list) {
  load_wait_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
  int rc = 0;
  for (const char *p = list; *p && !rc;) {
    const char *q = strchr(p, ',');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    char name[256];
    if (n == 0 || n >= sizeof name) {
      fprintf(stderr, "onnxd: --load-model: bad model name list\n");
      rc = -1;
      break;
    }
    memcpy(name, p, n);
    name[n] = 0;
    if (strcmp(name, "*")) {
      rc = load_one(models, &w, name);
    } else {
      DIR *d = opendir(dir);
      struct dirent *de;
      while (d && !rc && (de = readdir(d)))
        if (de->d_name[0] != '.' && de->d_type != DT_REG &&
            ox_name_valid(de->d_name, strlen(de->d_name)))
          rc = load_one(models, &w, de->d_name);
      if (d) closedir(d);
    }
    p += n + (q != NULL);
  }
  pthread_mutex_lock(&w.mu);
  while (w.pending) pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);
  return rc || w.failed ? -1 : 0;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  if (ncpu < 1) ncpu = 1;
  ox_options_t o = {
      .model_repository = "./models",
      .host = "127.0.0.1",
      .log_level = "info",
      .http_port = 8000,
      .grpc_port = 8001,
      .grpc_max_streams = 128,
      /* two loops from two cores on: one I/O thread was the limit of small-model traffic on 2
       * cores (S3 +43%, S3g +20% measured with two), and the model-bound scenarios did not
       * change; a quarter of the cores beyond 8 */
      .io_threads = ncpu < 2    ? 1
                    : ncpu <= 8 ? 2
                                : ncpu / 4,
      .infer_threads = ncpu,
      .intra_op_threads = 1,
      .max_body_bytes = 64L << 20,
      .image_max_pixels = 40000000,
      .max_connections = 10000,
      .max_queue = 1024,
      .request_timeout_ms = 10000,
      .idle_timeout_ms = 300000,
      .drain_timeout_ms = 10000,
      .feature_dir = default_feature_dir,
      .feature_l1_bytes = 256L << 20,
      .feature_l1_ttl_ms = 60000,
      .feature_l3_cache_ms = 600000,
      .feature_bloom_items = 4000000,
      .feature_max_events_24h = 100000,
      .feature_sync = "data",
      .feature_store_max_bytes = 4L << 30,
      .feature_events_stream = "",
      .feature_stream_timeout_ms = 2000,
      .feature_stream_ready_lag_ms = 5000,
      .feature_stream_trim_every_ms = 60000,
      .feature_bootstrap = "",
      .feature_bootstrap_wait_ms = 10000,
      .redis = "",
      .postgres = "",
      .event_keys = "user_id,card_id",
      .admin_token_file = "",
      .admin_host = "127.0.0.1",
      .model_control_mode = "none",
      .repository_poll_secs = 15,
      .model_name = "",
  };
  static const char *load_items[64];
  o.load_model = (ox_flag_list_t){.items = load_items, .cap = 64};
  const ox_options_t defaults = o;
  int frc = ox_flags_parse(&ox_flags_spec, argc, argv, &o, stderr);
  if (frc == OX_FLAGS_HELP) {
    ox_flags_usage(&ox_flags_spec, &defaults, stdout);
    return 0;
  }
  if (frc == OX_FLAGS_EXIT) { /* --version */
    printf("onnxd %s (ONNX Runtime library %s, header API %d)\n", OX_VERSION, ox_runtime_version(),
           ox_runtime_header_api());
    return 0;
  }
  if (frc) return 2;
  if (ox_log_parse_level(o.log_level, &ox_log_level)) {
    fprintf(stderr, "onnxd: --log-level must be error, warn, info or debug\n");
    return 2;
  }
  if (o.feature_l1_bytes && o.feature_l1_bytes < (1L << 20)) {
    fprintf(stderr, "onnxd: --feature-l1-bytes must be 0 (off) or at least 1048576\n");
    return 2;
  }
  if (o.feature_retention_ms && o.feature_retention_ms < 86400000) {
    fprintf(stderr,
            "onnxd: --feature-retention-ms must be 0 (keep every event) or at least "
            "86400000: velocity features look back 24 h\n");
    return 2;
  }
  if (strcmp(o.feature_sync, "data") && strcmp(o.feature_sync, "nometa") &&
      strcmp(o.feature_sync, "none")) {
    fprintf(stderr, "onnxd: --feature-sync must be data, nometa or none\n");
    return 2;
  }
  if (o.feature_events_to_redis && !o.redis[0]) {
    fprintf(stderr,
            "onnxd: --feature-events-to-redis 1 needs --redis HOST:PORT (the Redis "
            "server the events are appended to)\n");
    return 2;
  }
  if (o.feature_events_stream[0] && !o.redis[0]) {
    fprintf(stderr,
            "onnxd: --feature-events-stream needs --redis HOST:PORT (the Redis server "
            "holding the stream)\n");
    return 2;
  }
  if (o.feature_events_stream[0] && o.feature_events_to_redis) {
    fprintf(stderr,
            "onnxd: --feature-events-stream and --feature-events-to-redis exclude each "
            "other (the stream already holds every event)\n");
    return 2;
  }
  if (o.feature_stream_trim_ms && o.feature_retention_ms &&
      o.feature_stream_trim_ms < o.feature_retention_ms) {
    fprintf(stderr,
            "onnxd: --feature-stream-trim-ms must be at least --feature-retention-ms "
            "(a replica bootstrapping from the stream needs the events the store keeps)\n");
    return 2;
  }
  if (o.feature_bootstrap[0] && !o.feature_events_stream[0]) {
    fprintf(stderr,
            "onnxd: --feature-bootstrap needs --feature-events-stream (a snapshot is "
            "followed by the stream from its position)\n");
    return 2;
  }
  if (check_event_keys(o.event_keys)) {
    fprintf(stderr,
            "onnxd: --event-keys must be 1 to %d comma-separated field names of letters, "
            "digits, '_', '.' or '-'\n",
            OX_FSTORE_MAX_ENTITIES);
    return 2;
  }
  static char admin_token[4096];
  if (o.admin_token_file[0] &&
      read_admin_token(o.admin_token_file, admin_token, sizeof admin_token))
    return 2;
  if (o.admin_port && o.admin_port == o.http_port) {
    fprintf(stderr, "onnxd: --admin-port must differ from --http-port\n");
    return 2;
  }
  if (o.grpc_port > 0 && (o.grpc_port == o.http_port || o.grpc_port == o.admin_port)) {
    fprintf(stderr, "onnxd: --grpc-port must differ from --http-port and --admin-port\n");
    return 2;
  }
  if (o.max_inflight_bytes == 0) { /* a quarter of physical memory, at least one largest body */
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    o.max_inflight_bytes = pages > 0 && psize > 0 ? pages / 4 * psize : 1L << 30;
    if (o.max_inflight_bytes < o.max_body_bytes) o.max_inflight_bytes = o.max_body_bytes;
  }
  int control = !strcmp(o.model_control_mode, "none")       ? OX_CONTROL_NONE
                : !strcmp(o.model_control_mode, "poll")     ? OX_CONTROL_POLL
                : !strcmp(o.model_control_mode, "explicit") ? OX_CONTROL_EXPLICIT
                                                            : -1;
  if (control < 0) {
    fprintf(stderr, "onnxd: --model-control-mode must be none, poll or explicit\n");
    return 2;
  }
  if (o.load_model.n && control != OX_CONTROL_EXPLICIT) {
    fprintf(stderr, "onnxd: --load-model needs --model-control-mode explicit\n");
    return 2;
  }
  for (size_t i = 0; i < o.load_model.n; i++) {
    if (strchr(o.load_model.items[i], '*') &&
        (o.load_model.n > 1 || strcmp(o.load_model.items[i], "*"))) {
      fprintf(stderr, "onnxd: --load-model '*' must be the only --load-model (as in Triton)\n");
      return 2;
    }
  }
  /* libpq is loaded only for --postgres (features/l3_pg_lib.h); without it, stop now with the
   * name of what is missing rather than fail later, after the models have loaded. */
  if (o.postgres[0]) {
    char why[384];
    if (ox_l3_pg_load_library(why, sizeof why)) {
      fprintf(stderr, "onnxd: --postgres needs libpq.so.5 (Debian: apt-get install libpq5): %s\n",
              why);
      return 2;
    }
  }
  struct stat st;
  if (stat(o.model_repository, &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "onnxd: model repository '%s' is not a readable directory\n",
            o.model_repository);
    return 2;
  }
  /* --model-name: single-model mode when the directory is one model's own (what KServe's
   * storage initializer leaves in /mnt/models); a repository of model directories is served as
   * without it. */
  const char *single = NULL;
  if (o.model_name[0]) {
    size_t n = strlen(o.model_name);
    if (!ox_name_valid(o.model_name, n) || !strcmp(o.model_name, ".") ||
        !strcmp(o.model_name, "..")) {
      fprintf(stderr, "onnxd: --model-name must be a model name (A-Z a-z 0-9 _ . -)\n");
      return 2;
    }
    ox_repo_layout_t lay = ox_repo_layout(o.model_repository);
    const char *dir = o.model_repository;
    if (lay == OX_REPO_EMPTY) {
      fprintf(stderr,
              "onnxd: --model-name %s: '%s' holds no model: expected %s/model.onnx, "
              "%s/<version>/model.onnx or a repository %s/<model>/<version>/model.onnx\n",
              o.model_name, dir, dir, dir, dir);
      return 2;
    }
    if (lay == OX_REPO_AMBIGUOUS) {
      fprintf(stderr,
              "onnxd: --model-name %s: '%s' holds both %s/model.onnx and version directories "
              "%s/<version>/model.onnx: keep one or the other\n",
              o.model_name, dir, dir, dir);
      return 2;
    }
    if (lay == OX_REPO_MODELS) {
      ox_info(
          "--model-name %s: '%s' is a model repository (<model>/<version>/model.onnx): "
          "serving its models under their own names",
          o.model_name, o.model_repository);
    } else if (control != OX_CONTROL_NONE) {
      fprintf(stderr,
              "onnxd: --model-name %s: single-model mode ('%s' is one model's directory) "
              "supports --model-control-mode none only\n",
              o.model_name, o.model_repository);
      return 2;
    } else {
      single = o.model_name;
    }
  }

  /* malloc keeps glibc's per-thread arenas. One shared arena (M_ARENA_MAX 1) saved memory
   * while request bodies came from malloc; they now come from core/bigbuf.h's mappings, and
   * the shared arena's lock became the bottleneck of small requests: MLP16 JSON, 64 clients,
   * 65.6k -> 83.0k req/s with per-thread arenas, MobileNetV2 JSON peak RSS 139 -> 145 MB
   * (bench/run.py --quick --only main, 2026-11-27).
   *
   * Fixed thresholds instead of glibc's dynamic ones: after ORT frees a large block glibc raises
   * the mmap threshold up to 32 MiB and the trim threshold up to 64 MiB, and malloc_trim does not
   * shrink the top of a thread's arena, so the memory of unloaded models stayed with the manager
   * and worker arenas (MobileNetV2 load/infer/unload cycles: RSS 50 -> 77 MB after 200, while
   * malloc's in-use bytes stayed at 8-9 MB). With 1 MiB / 4 MiB: 50 -> 47-49 MB over 400 cycles;
   * 4 MiB / 16 MiB plateaued too but swung by 8 MB. S1 and S2 throughput equal within noise
   * across default, 1/4 and 4/16 (4 interleaved runs each, 2026-12-06). The trim threshold is
   * now 1 MiB, with a second malloc_trim 0.5 s after a version is freed (infer/models.c): 300
   * cycles 43.0 -> 46.9 MB (1 request per cycle), 45.3 -> 49.3 MB (4 concurrent). Throughput
   * against glibc's dynamic thresholds (same build without these two calls, 3 interleaved
   * rounds of 8 s, 10 connections, 2026-12-06): S1 median 119.0 vs 117.6 req/s, S2 193.9 vs
   * 181.1. */
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 20);

  /* Signals: SIGPIPE ignored; the ones operators send (TERM, INT, QUIT, HUP, USR1, USR2) are
   * blocked in every thread and taken by sigwait below: TERM, INT and QUIT drain, the others
   * are logged and ignored. */
  signal(SIGPIPE, SIG_IGN);
  sigset_t sigs;
  sigemptyset(&sigs);
  static const int handled[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof handled / sizeof handled[0]; i++) sigaddset(&sigs, handled[i]);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);

  char err[512];
  ox_runtime_opts_t ro = {
      .intra_op_threads = (int)o.intra_op_threads, .inter_op_threads = 1, .allow_spinning = 0};
  if (ox_runtime_init(&ro, err, sizeof err)) {
    fprintf(stderr, "onnxd: cannot start ONNX Runtime: %s\n", err);
    return 1;
  }
  ox_repo_t *repo = NULL;
  if (single ? ox_repo_open_single(o.model_repository, single, &repo, err, sizeof err)
             : ox_repo_open_ex(o.model_repository, control != OX_CONTROL_EXPLICIT, &repo, err,
                               sizeof err)) {
    fprintf(stderr, "onnxd: %s\n", err);
    ox_runtime_shutdown();
    return 2;
  }
  ox_infer_set_image_max_pixels((uint64_t)o.image_max_pixels);
  ox_pool_t *pool = NULL;
  int rc = ox_pool_create((int)o.infer_threads, (size_t)o.max_queue, &pool);
  if (rc) {
    fprintf(stderr, "onnxd: cannot start workers: %s\n", ox_strerror(rc));
    return 1;
  }
  static ox_server_t server;
  server.repo = repo;
  server.control_mode = control;
  server.pool = pool;
  server.repo_dir = o.model_repository;
  server.infer_threads = (int)o.infer_threads;
  ox_models_opts_t mo = {.repo = repo,
                         .pool = pool,
                         .repo_dir = o.model_repository,
                         .infer_threads = (int)o.infer_threads};
  ox_models_t *models = NULL;
  if (ox_models_open(&mo, &models) || ox_batch_timer_start()) {
    fprintf(stderr, "onnxd: out of memory setting up the models\n");
    return 1;
  }
  server.models = models;
  if (single) { /* the one model must serve: a pod that cannot should fail where it is seen */
    ox_model_t *m = NULL;
    char why[512];
    if (ox_models_get(models, ox_slice(single, strlen(single)), ox_slice("", 0), &m, why,
                      sizeof why)) {
      fprintf(stderr,
              "onnxd: --model-name %s: no version in '%s' loaded (the reason is logged "
              "above)\n",
              single, o.model_repository);
      return 2;
    }
    const ox_model_state_t *mst = m->app;
    int bad = mst->unavailable;
    if (bad)
      fprintf(stderr, "onnxd: --model-name %s: the model in '%s' is not available: %s\n", single,
              o.model_repository, mst->reason);
    ox_models_put(m);
    if (bad) return 2;
    ox_info("single-model mode: '%s' served as model '%s'", o.model_repository, single);
  }
  for (size_t i = 0; i < o.load_model.n; i++)
    if (load_models(models, o.model_repository, o.load_model.items[i])) return 2;
  /* The feature store: when asked for, or when a model's feature_view needs it. */
  ox_fstore_t *features = NULL;
  ox_fstream_t *stream = NULL;
  if (ox_models_need_features(models) || o.feature_dir != default_feature_dir || o.redis[0] ||
      o.postgres[0]) {
    if (o.feature_bootstrap[0] &&
        ox_fstream_bootstrap(o.feature_bootstrap, o.feature_dir,
                             admin_token[0] ? admin_token : NULL, o.feature_bootstrap_wait_ms, err,
                             sizeof err) < 0)
      ox_warn(
          "feature bootstrap from %s failed (%s): starting with an empty store, from the "
          "stream's beginning",
          o.feature_bootstrap, err);
    ox_fstore_opts_t fo = {.dir = o.feature_dir,
                           .l1_bytes = (size_t)o.feature_l1_bytes,
                           .l1_ttl_ms = o.feature_l1_ttl_ms,
                           .bloom_items = (uint64_t)o.feature_bloom_items,
                           .max_readers = (unsigned)(o.infer_threads + o.io_threads + 8),
                           .redis = o.redis,
                           .postgres = o.postgres,
                           .l3_pool = (int)o.infer_threads + 2,
                           .sync_none = !strcmp(o.feature_sync, "none"),
                           .sync_nometa = !strcmp(o.feature_sync, "nometa"),
                           .max_bytes = (size_t)o.feature_store_max_bytes,
                           .l3_cache_ms = o.feature_l3_cache_ms,
                           .retention_ms = o.feature_retention_ms,
                           .events_to_redis = (int)o.feature_events_to_redis,
                           .max_events_24h = (uint64_t)o.feature_max_events_24h};
    if (ox_fstore_open(&fo, &features, err, sizeof err)) {
      fprintf(stderr, "onnxd: %s\n", err);
      return 1;
    }
    if (o.feature_events_stream[0]) {
      ox_fstream_opts_t so = {.key = o.feature_events_stream,
                              .redis = o.redis,
                              .timeout_ms = o.feature_stream_timeout_ms,
                              .ready_lag_ms = o.feature_stream_ready_lag_ms,
                              .trim_ms = o.feature_stream_trim_ms,
                              .trim_every_ms = o.feature_stream_trim_every_ms,
                              .decode = ox_server_stream_decode,
                              .decode_arg = features};
      if (ox_fstream_open(features, &so, &stream, err, sizeof err)) {
        fprintf(stderr, "onnxd: %s\n", err);
        ox_fstore_close(features);
        return 1;
      }
    }
  }
  server.features = features;
  server.stream = stream;
  server.feature_dir = o.feature_dir;
  server.event_keys = o.event_keys;
  server.admin_token = admin_token[0] ? admin_token : NULL;
  server.admin_token_len = strlen(admin_token);
  server.admin_split = o.admin_port != 0;

  ox_http_config_t cfg;
  ox_http_limits_default(&cfg.limits);
  cfg.limits.max_body = (uint64_t)o.max_body_bytes;
  cfg.request_timeout_ms = (uint32_t)o.request_timeout_ms;
  cfg.idle_timeout_ms = (uint32_t)o.idle_timeout_ms;
  cfg.max_connections = (uint32_t)o.max_connections;
  cfg.max_inflight_bytes = (size_t)o.max_inflight_bytes;
  cfg.tag = OX_LISTENER_PUBLIC;
  cfg.handler = ox_server_handle;
  cfg.body_align_offset = ox_server_body_align_offset;
  cfg.on_abort = ox_server_abort;
  cfg.app = &server;

  /* The admin listener (--admin-port) gets a loop and thread of its own, after the public ones. */
  ox_http_config_t admin_cfg = cfg;
  admin_cfg.tag = OX_LISTENER_ADMIN;
  int npublic = (int)o.io_threads;
  int nio = npublic + (o.admin_port != 0);
  const struct {
    const char *what, *host;
    long port;
  } ports[] = {{"--http-port", o.host, o.http_port},
               {"--grpc-port", o.host, o.grpc_port},
               {"--admin-port", o.admin_host, o.admin_port}};
  for (size_t i = 0; i < sizeof ports / sizeof ports[0]; i++)
    if (port_in_use(ports[i].host, ports[i].port)) {
      fprintf(stderr, "onnxd: cannot listen on %s:%ld (%s): the address is in use\n", ports[i].host,
              ports[i].port, ports[i].what);
      return 1;
    }
  io_thread_t *io = calloc((size_t)nio, sizeof *io);
  uint16_t port = (uint16_t)o.http_port, admin_port = (uint16_t)o.admin_port;
  for (int i = 0; io && i < nio; i++) {
    int is_admin = i >= npublic;
    rc = ox_loop_create(&io[i].loop);
    if (!rc)
      rc = ox_http_listener_create(io[i].loop, is_admin ? o.admin_host : o.host,
                                   is_admin ? &admin_port : &port, is_admin ? &admin_cfg : &cfg,
                                   &io[i].listener);
    if (rc) {
      fprintf(stderr, "onnxd: cannot listen on %s:%ld: %s\n", is_admin ? o.admin_host : o.host,
              is_admin ? o.admin_port : o.http_port,
              rc == OX_EINVALID ? "bad host address" : ox_strerror(rc));
      return 1;
    }
  }
  /* gRPC on every public loop (same port, SO_REUSEPORT), served by the same workers. */
  ox_grpc_config_t gcfg = {.max_concurrent_streams = (uint32_t)o.grpc_max_streams,
                           .max_message_bytes = (size_t)o.max_body_bytes,
                           .max_header_list_bytes = 16 * 1024,
                           .window_bytes = 16u << 20,
                           .max_buffered_bytes = (size_t)o.max_inflight_bytes,
                           .idle_timeout_ms = (uint32_t)o.idle_timeout_ms,
                           .max_connections = (uint32_t)o.max_connections};
  ox_grpc_config_defaults(&gcfg); /* anything not set above */
  uint16_t grpc_port = (uint16_t)(o.grpc_port < 0 ? 0 : o.grpc_port);
  for (int i = 0; io && o.grpc_port >= 0 && i < npublic; i++) {
    rc = ox_grpc_service_create(&server, &gcfg, &io[i].grpc);
    if (!rc)
      rc = ox_grpc_listener_create(io[i].loop, o.host, &grpc_port,
                                   ox_grpc_service_config(io[i].grpc), &io[i].grpc_listener);
    if (rc) {
      fprintf(stderr, "onnxd: cannot listen for gRPC on %s:%ld: %s\n", o.host, o.grpc_port,
              rc == OX_EINVALID ? "bad host address" : ox_strerror(rc));
      return 1;
    }
  }
  for (int i = 0; i < nio; i++) pthread_create(&io[i].thread, NULL, io_main, &io[i]);
  ox_info("onnxd %s listening on %s:%u: %ld I/O threads, %ld inference threads, ONNX Runtime %s",
          OX_VERSION, o.host, (unsigned)port, o.io_threads, o.infer_threads, ox_runtime_version());
  if (o.grpc_port >= 0) ox_info("gRPC listening on %s:%u", o.host, (unsigned)grpc_port);
  if (o.admin_port) ox_info("admin endpoints on %s:%u only", o.admin_host, (unsigned)admin_port);
  if (server.admin_token) ox_info("admin endpoints need the bearer token of --admin-token-file");

  ox_poll_t *poller = NULL;
  if (control == OX_CONTROL_POLL) {
    int prc = ox_poll_start(models, ox_repo_root(repo), o.repository_poll_secs, &poller);
    if (prc) {
      fprintf(stderr, "onnxd: cannot watch the model repository: %s\n", ox_strerror(prc));
      return 1;
    }
  }
  int sig = 0;
  for (;;) {
    if (sigwait(&sigs, &sig) != 0) continue;
    if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) break;
    if (sig == SIGHUP && poller) {
      ox_info("SIGHUP: rescanning the model repository");
      ox_poll_rescan(poller);
    } else if (sig == SIGHUP)
      ox_info("SIGHUP: ignored (the model repository is re-read in poll mode only)");
    else
      ox_info("%s: ignored", signal_name(sig));
  }
  ox_info("%s: draining (up to %ld ms)", signal_name(sig), o.drain_timeout_ms);
  ox_poll_stop(poller); /* no repository change is applied while draining */
  atomic_store(&server.draining, 1);
  for (int i = 0; i < nio; i++) {
    io[i].drain_task.fn = io_drain;
    ox_loop_post(io[i].loop, &io[i].drain_task);
  }
  uint64_t deadline = (uint64_t)ox_mono_ms() + (uint64_t)o.drain_timeout_ms;
  while ((atomic_load(&server.inflight) > 0 || ox_http_busy() > 0 || ox_grpc_busy() > 0) &&
         (uint64_t)ox_mono_ms() < deadline)
    sleep_ms(5);
  if (atomic_load(&server.inflight) > 0) {
    ox_warn("drain deadline passed with %ld requests in flight: terminating runs",
            atomic_load(&server.inflight));
    ox_models_terminate_runs(models);
  }
  for (int i = 0; i < nio; i++) ox_loop_stop(io[i].loop);
  for (int i = 0; i < nio; i++) pthread_join(io[i].thread, NULL);
  ox_batch_timer_stop();
  ox_fstore_stop_fetcher(features); /* fetches still queued go back to the pool, refused */
  ox_pool_destroy(pool);            /* queued jobs are answered 503; running ones finish */
  ox_models_stop(models);           /* requests still queued in a batcher are answered 503 */
  ox_fstream_close(stream);         /* the applier stops; no append is running any more */
  ox_fstore_close(features);        /* after the workers: L2 writes flushed, readers closed */
  for (int i = 0; i < nio; i++) {
    ox_loop_run_pending(io[i].loop);
    ox_http_listener_destroy(io[i].listener);
    if (io[i].grpc_listener) ox_grpc_listener_destroy(io[i].grpc_listener);
    ox_loop_destroy(io[i].loop);
    if (io[i].grpc) ox_grpc_service_destroy(io[i].grpc);
  }
  free(io);
  ox_models_destroy(models); /* every reference is gone: the loops' answers were released */
  ox_repo_close(repo);
  ox_runtime_shutdown();
  ox_bigbuf_trim();
  ox_info("stopped");
  return 0;
}
