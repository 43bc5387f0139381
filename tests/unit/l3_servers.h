/* l3_servers.h: what the L3 tests (l3_redis_test.c, l3_pg_test.c) share: a temporary directory
 * for the real server they start, its stopping at exit or on a signal, the sweep of what killed
 * runs left behind, a storm of calls from many threads, a listener that never answers, and
 * percentiles. Header-only (static functions, each used by both tests), because the Makefile
 * builds each tests/unit/<name>_test.c alone into its binary.
 *
 * Each test binary starts its own server as a child on a free loopback port, in one temporary
 * directory:
 *   redis-server --port P --bind 127.0.0.1 --save "" --appendonly no --daemonize no ...
 *   initdb (trust auth, no fsync) + postgres -D DIR -k DIR -p P -c listen_addresses=127.0.0.1
 * and waits for it to answer (bounded). Children get PR_SET_PDEATHSIG (SIGKILL for redis, SIGQUIT
 * = immediate shutdown for postgres), so they die with the test even when it aborts (ASan); at a
 * normal exit or on SIGINT/SIGTERM they are stopped (the directory too at a normal exit). The
 * directory is /tmp/onnxd-l3-<pid>-XXXXXX: each run first sweeps the directories of runs that
 * are no longer alive, stopping any server still running from one (by the pid in that directory,
 * checked against its working directory) and removing it, so a killed run costs no disk and no
 * ports.
 *
 * Missing binaries are a failure, not a skip: redis-server comes from the Debian package
 * redis-server, initdb and postgres from postgresql (/usr/lib/postgresql/N/bin); scripts/setup.sh
 * installs both. ONNXD_REDIS_SERVER and ONNXD_PG_BINDIR override where they are looked for.
 *
 * Timing checks allow SLACK_MS over each deadline.
 */
#ifndef OX_TEST_L3_SERVERS_H
#define OX_TEST_L3_SERVERS_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "core/slice.h"
#include "features/breaker.h"
#include "test.h"

#define SLACK_MS 30
#define MS INT64_C(1000000)

static int64_t now_ns(void) {
  return ox_mono_ns();
}
static int64_t in_ms(int ms) {
  return now_ns() + ms * MS;
}
static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}
static ox_slice_t S(const char *s) {
  return ox_slice(s, strlen(s));
}

/* ==== the fixture ========================================================================== */

static struct {
  int init;
  char dir[64]; /* temporary base directory; "" when it could not be made (why says why) */
  char why[1024];
  pid_t parent;
  volatile pid_t pid; /* the server this test runs, 0 when stopped */
  int stop_sig;       /* how a normal exit stops it (stop_child) */
  int death_sig;      /* what it gets when the test dies (PR_SET_PDEATHSIG, SIGINT, SIGTERM) */
} fx;

static char *child_env[] = {"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL=C", "LANG=C", "TZ=UTC",
                            NULL};

/* Forks and execs argv[0] with stdout/stderr to log (appended). Runs as uid/gid when they
 * differ from ours; deathsig reaches the child if the test dies. Returns the pid or -1. */
static pid_t spawn(char *const argv[], const char *log, uid_t uid, gid_t gid, int deathsig) {
  int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t pid = fork();
  if (pid == 0) { /* only async-signal-safe calls from here to exec */
    if (uid != getuid()) {
      if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) _exit(126);
    }
    prctl(PR_SET_PDEATHSIG, deathsig); /* after setuid, which would clear it */
    if (getppid() != fx.parent) _exit(125);
    dup2(devnull, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    close_range(3, ~0U, 0);
    execve(argv[0], argv, child_env);
    _exit(127);
  }
  close(fd);
  if (devnull >= 0) close(devnull);
  return pid;
}

/* Waits up to ms for pid to exit. Its wait status, or -1 if it is still running. */
static int wait_exit(pid_t pid, int ms) {
  for (int waited = 0;; waited += 5) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0) return 0; /* not our child any more */
    if (waited >= ms) return -1;
    sleep_ms(5);
  }
}

static void stop_child(volatile pid_t *pid, int sig) {
  if (*pid <= 0) return;
  kill(*pid, sig);
  if (wait_exit(*pid, 5000) == -1) {
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
  }
  *pid = 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

static void cleanup(void) {
  stop_child(&fx.pid, fx.stop_sig);
  if (fx.dir[0]) nftw(fx.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void on_signal(int sig) {
  if (fx.pid > 0) kill(fx.pid, fx.death_sig);
  _exit(128 + sig);
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

static int is_exec(const char *p) {
  return access(p, X_OK) == 0;
}

/* Stops the process whose pid is on the first line of pidfile if its working directory is under
 * dir (both servers chdir there; a recycled pid is left alone); waits up to 3 s for it to go. */
static void stop_orphan(const char *pidfile, const char *dir, int sig) {
  FILE *f = fopen(pidfile, "r");
  long pid = 0;
  if (!f) return;
  if (fscanf(f, "%ld", &pid) != 1) pid = 0;
  fclose(f);
  if (pid <= 1) return;
  char path[64], cwd[4096];
  snprintf(path, sizeof path, "/proc/%ld/cwd", pid);
  ssize_t n = readlink(path, cwd, sizeof cwd - 1);
  if (n <= 0) return;
  cwd[n] = 0;
  if (strncmp(cwd, dir, strlen(dir)) != 0) return;
  kill((pid_t)pid, sig);
  for (int i = 0; i < 300 && kill((pid_t)pid, 0) == 0; i++) sleep_ms(10);
}

/* Removes what runs that died without cleaning up left behind (see the top of the file). */
static void sweep_stale_dirs(void) {
  glob_t gl;
  if (glob("/tmp/onnxd-l3-*-*", GLOB_ONLYDIR, NULL, &gl) != 0) return;
  for (size_t i = 0; i < gl.gl_pathc; i++) {
    const char *d = gl.gl_pathv[i];
    long owner = strtol(d + strlen("/tmp/onnxd-l3-"), NULL, 10);
    if (owner <= 0 || kill((pid_t)owner, 0) == 0 || errno != ESRCH) continue; /* alive */
    char pidfile[600];
    snprintf(pidfile, sizeof pidfile, "%s/pg/data/postmaster.pid", d);
    stop_orphan(pidfile, d, SIGQUIT);
    snprintf(pidfile, sizeof pidfile, "%s/redis.pid", d);
    stop_orphan(pidfile, d, SIGKILL);
    nftw(d, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  }
  globfree(&gl);
}

/* Makes the temporary directory (sweeping stale ones first) and installs the clean-up for the
 * server this test runs: at exit, stop_sig (then SIGKILL after 5 s); on SIGINT/SIGTERM/SIGHUP,
 * death_sig. Once per process; fx.dir is "" and fx.why set if the directory cannot be made. */
static void fixture_init(int stop_sig, int death_sig) {
  if (fx.init) return;
  fx.init = 1;
  fx.parent = getpid();
  fx.stop_sig = stop_sig;
  fx.death_sig = death_sig;
  signal(SIGPIPE, SIG_IGN);
  ox_log_level = OX_LOG_ERROR; /* connect failures are expected here; keep the log readable */
  sweep_stale_dirs();
  snprintf(fx.dir, sizeof fx.dir, "/tmp/onnxd-l3-%ld-XXXXXX", (long)fx.parent);
  if (!mkdtemp(fx.dir)) {
    fx.dir[0] = 0;
    snprintf(fx.why, sizeof fx.why, "mkdtemp: %s", strerror(errno));
    return;
  }
  chmod(fx.dir, 0711); /* the postgres user must reach its own subdirectory */
  atexit(cleanup);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);
}

/* Records a failure of the current test (the server is missing or down) and returns 0. */
static int server_missing(const char *why) {
  fprintf(stderr, "  FAIL [%s]: %s\n", ox_t_current, why);
  ox_t_failed_checks++;
  return 0;
}

/* ==== a storm of calls from many threads =================================================== */

typedef int (*call_fn)(void *target, ox_buf_t *buf, int64_t deadline);

typedef struct {
  call_fn fn;
  void *target;
  int calls, deadline_ms, gap_ms;
  int64_t worst_ns;
  int ok, timeouts, unavailable, other;
  pthread_barrier_t *start;
} storm_t;

static void *storm_main(void *p) {
  storm_t *a = p;
  ox_buf_t buf;
  ox_buf_init(&buf);
  pthread_barrier_wait(a->start);
  for (int i = 0; i < a->calls; i++) {
    buf.len = 0;
    int64_t t0 = now_ns();
    int rc = a->fn(a->target, &buf, t0 + a->deadline_ms * MS);
    int64_t dt = now_ns() - t0;
    if (dt > a->worst_ns) a->worst_ns = dt;
    if (rc == 0 || rc == OX_ENOT_FOUND)
      a->ok++;
    else if (rc == OX_ETIMEOUT)
      a->timeouts++;
    else if (rc == OX_EUNAVAILABLE)
      a->unavailable++;
    else
      a->other++;
    if (a->gap_ms) sleep_ms(a->gap_ms);
  }
  ox_buf_free(&buf);
  return NULL;
}

/* Runs nthreads x calls; returns the slowest call in ns and sums the outcomes into *sum. */
static int64_t storm(int nthreads, call_fn fn, void *target, int calls, int deadline_ms, int gap_ms,
                     storm_t *sum) {
  storm_t a[16];
  pthread_t th[16];
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, (unsigned)nthreads);
  for (int i = 0; i < nthreads; i++) {
    a[i] = (storm_t){.fn = fn,
                     .target = target,
                     .calls = calls,
                     .deadline_ms = deadline_ms,
                     .gap_ms = gap_ms,
                     .start = &bar};
    pthread_create(&th[i], NULL, storm_main, &a[i]);
  }
  *sum = (storm_t){0};
  for (int i = 0; i < nthreads; i++) {
    pthread_join(th[i], NULL);
    if (a[i].worst_ns > sum->worst_ns) sum->worst_ns = a[i].worst_ns;
    sum->ok += a[i].ok;
    sum->timeouts += a[i].timeouts;
    sum->unavailable += a[i].unavailable;
    sum->other += a[i].other;
  }
  pthread_barrier_destroy(&bar);
  return sum->worst_ns;
}

/* A listener that completes TCP handshakes (kernel backlog) and never answers. */
static int blackhole(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
    if (fd >= 0) close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

/* ==== measurements ========================================================================= */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static void percentiles(int64_t *v, int n, double *p50, double *p99) {
  qsort(v, (size_t)n, sizeof *v, cmp_i64);
  *p50 = (double)v[n / 2] / 1000.0;
  *p99 = (double)v[n * 99 / 100] / 1000.0;
}

#endif
