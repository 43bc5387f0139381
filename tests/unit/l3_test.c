/* l3_test.c: the remote feature tier (features/breaker, l3_redis, l3_pg) against real servers.
 *
 * The breaker tests drive its state machine with a fake clock. The Redis and PostgreSQL tests
 * start their own servers as children on free loopback ports, in one temporary directory:
 *   redis-server --port P --bind 127.0.0.1 --save "" --appendonly no --daemonize no ...
 *   initdb (trust auth, no fsync) + postgres -D DIR -k DIR -p P -c listen_addresses=127.0.0.1
 * and wait for them to answer (bounded). PostgreSQL refuses to run as root, and CI runs as root:
 * then the test creates a system user `onnxd-test` if it is missing (useradd) and runs initdb
 * and postgres as that user. It drops privileges itself in the forked child (setgroups, setgid,
 * setuid), which is what `runuser -u onnxd-test --` would do, but keeps postgres a direct child
 * of the test: runuser forks and waits, so a parent-death signal set on it would not reach
 * postgres. Children get PR_SET_PDEATHSIG (SIGKILL for redis, SIGQUIT = immediate shutdown for
 * postgres), so they die with the test even when it aborts (ASan); at a normal exit or on
 * SIGINT/SIGTERM they are stopped (the directory too at a normal exit). The directory is
 * /tmp/onnxd-l3-<pid>-XXXXXX: each run first sweeps the directories of runs that are no longer
 * alive, stopping any server still running from one (by the pid in that directory, checked
 * against its command line) and removing it, so a killed run costs no disk and no ports.
 *
 * Missing binaries are a failure, not a skip: redis-server comes from the Debian package
 * redis-server, initdb and postgres from postgresql (/usr/lib/postgresql/N/bin); scripts/setup.sh
 * installs both. ONNXD_REDIS_SERVER and ONNXD_PG_BINDIR override where they are looked for.
 *
 * Timing checks allow SLACK_MS over each deadline. The "latency" test prints the measured
 * loopback latencies and the breaker's fast-fail cost as "# l3 ..." lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "features/breaker.h"
#include "features/l3_pg.h"
#include "features/l3_redis.h"
#include "test.h"

#define SLACK_MS 30
#define MS INT64_C(1000000)
#define REDIS_PASS "l3-test-secret"
#define TEST_USER "onnxd-test"

static int64_t now_ns(void) {
  return ox_breaker_now_ns();
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

/* ==== breaker (fake clock) ================================================================= */

#define T0 INT64_C(1000000000000)

static ox_breaker_t *mk_breaker(int failures, int cooldown_ms) {
  ox_breaker_t *b = NULL;
  ox_breaker_opts_t o = {.failures = failures, .cooldown_ms = cooldown_ms};
  CHECK_INT(ox_breaker_create(&o, &b), 0);
  return b;
}

/* One admitted call with the given outcome; returns allow's result. */
static int call_with(ox_breaker_t *b, int64_t t, ox_breaker_outcome_t o) {
  ox_breaker_ticket_t tk;
  int rc = ox_breaker_allow(b, t, &tk);
  if (rc == 0) ox_breaker_done(b, &tk, o, t);
  return rc;
}

TEST(breaker_opens_after_consecutive_failures) {
  ox_breaker_t *b = mk_breaker(3, 100);
  CHECK_INT(call_with(b, T0, OX_BREAKER_FAILURE), 0);
  CHECK_INT(call_with(b, T0, OX_BREAKER_TIMEOUT), 0);
  CHECK_INT(call_with(b, T0, OX_BREAKER_SUCCESS), 0); /* resets the run */
  CHECK_INT(call_with(b, T0, OX_BREAKER_FAILURE), 0);
  CHECK_INT(call_with(b, T0, OX_BREAKER_IGNORED), 0); /* neither breaks nor extends the run */
  CHECK_INT(call_with(b, T0, OX_BREAKER_FAILURE), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  CHECK_INT(call_with(b, T0, OX_BREAKER_TIMEOUT), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  CHECK_INT(call_with(b, T0 + 99 * MS, OX_BREAKER_SUCCESS), OX_EUNAVAILABLE);
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(s.calls, 7);
  CHECK_INT(s.successes, 1);
  CHECK_INT(s.failures, 3);
  CHECK_INT(s.timeouts, 2);
  CHECK_INT(s.short_circuited, 1);
  CHECK_INT(s.opened, 1);
  CHECK_STR(ox_breaker_state_name(s.state), "open");
  ox_breaker_destroy(b);
}

TEST(breaker_half_open_admits_one_probe) {
  ox_breaker_t *b = mk_breaker(2, 100);
  call_with(b, T0, OX_BREAKER_FAILURE);
  call_with(b, T0, OX_BREAKER_FAILURE);
  ox_breaker_ticket_t probe, other;
  CHECK_INT(ox_breaker_allow(b, T0 + 100 * MS - 1, &other), OX_EUNAVAILABLE);
  CHECK_INT(ox_breaker_allow(b, T0 + 100 * MS, &probe), 0);
  CHECK_INT(probe.probe, 1);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_HALF_OPEN);
  CHECK_INT(ox_breaker_allow(b, T0 + 100 * MS, &other), OX_EUNAVAILABLE); /* probe out */
  ox_breaker_done(b, &probe, OX_BREAKER_SUCCESS, T0 + 101 * MS);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  CHECK_INT(ox_breaker_allow(b, T0 + 101 * MS, &other), 0);
  CHECK_INT(other.probe, 0);
  ox_breaker_done(b, &other, OX_BREAKER_SUCCESS, T0 + 101 * MS);
  /* closing forgot the old run: one failure does not reopen it */
  CHECK_INT(call_with(b, T0 + 102 * MS, OX_BREAKER_FAILURE), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(s.probes, 1);
  CHECK_INT(s.short_circuited, 2);
  ox_breaker_destroy(b);
}

TEST(breaker_probe_failure_reopens) {
  ox_breaker_t *b = mk_breaker(1, 100);
  call_with(b, T0, OX_BREAKER_FAILURE);
  int64_t t = T0 + 100 * MS;
  CHECK_INT(call_with(b, t, OX_BREAKER_TIMEOUT), 0); /* the probe */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  CHECK_INT(call_with(b, t + 99 * MS, OX_BREAKER_SUCCESS), OX_EUNAVAILABLE); /* new cool-down */
  /* an ignored probe (bad input) lets the next caller probe at once */
  CHECK_INT(call_with(b, t + 100 * MS, OX_BREAKER_IGNORED), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_HALF_OPEN);
  CHECK_INT(call_with(b, t + 100 * MS, OX_BREAKER_SUCCESS), 0);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(s.opened, 2);
  CHECK_INT(s.probes, 3);
  ox_breaker_destroy(b);
}

TEST(breaker_lost_probe_expires) {
  ox_breaker_t *b = mk_breaker(1, 100);
  call_with(b, T0, OX_BREAKER_FAILURE);
  ox_breaker_ticket_t lost, next;
  CHECK_INT(ox_breaker_allow(b, T0 + 100 * MS, &lost), 0); /* never reported */
  CHECK_INT(ox_breaker_allow(b, T0 + 199 * MS, &next), OX_EUNAVAILABLE);
  CHECK_INT(ox_breaker_allow(b, T0 + 200 * MS, &next), 0);
  CHECK_INT(next.probe, 1);
  ox_breaker_done(b, &next, OX_BREAKER_SUCCESS, T0 + 200 * MS);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  ox_breaker_done(b, &lost, OX_BREAKER_FAILURE, T0 + 201 * MS); /* stale: no effect */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  ox_breaker_destroy(b);
}

TEST(breaker_stale_outcomes_change_nothing) {
  ox_breaker_t *b = mk_breaker(2, 100);
  ox_breaker_ticket_t slow;
  CHECK_INT(ox_breaker_allow(b, T0, &slow), 0); /* admitted while closed, answers late */
  call_with(b, T0, OX_BREAKER_FAILURE);
  call_with(b, T0, OX_BREAKER_FAILURE);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  ox_breaker_done(b, &slow, OX_BREAKER_SUCCESS, T0 + MS);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN); /* a late success does not close it */
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(s.successes, 1); /* but it is counted */
  ox_breaker_destroy(b);
}

TEST(breaker_failure_ratio_window) {
  ox_breaker_t *b = NULL;
  ox_breaker_opts_t o = {
      .failures = -1, .failure_ratio = 0.5, .min_calls = 10, .window_ms = 1000, .cooldown_ms = 100};
  CHECK_INT(ox_breaker_create(&o, &b), 0);
  for (int i = 0; i < 6; i++) call_with(b, T0, OX_BREAKER_SUCCESS);
  for (int i = 0; i < 5; i++) call_with(b, T0, OX_BREAKER_FAILURE); /* 5/11 */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  call_with(b, T0, OX_BREAKER_FAILURE); /* 6/12 */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  call_with(b, T0 + 100 * MS, OX_BREAKER_SUCCESS); /* probe closes; window starts over */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  for (int i = 0; i < 9; i++) call_with(b, T0 + 200 * MS, OX_BREAKER_FAILURE); /* < min_calls */
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  /* a new window forgets those nine */
  for (int i = 0; i < 9; i++) call_with(b, T0 + 1300 * MS, OX_BREAKER_FAILURE);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_CLOSED);
  call_with(b, T0 + 1300 * MS, OX_BREAKER_FAILURE);
  CHECK_INT(ox_breaker_state(b), OX_BREAKER_OPEN);
  ox_breaker_destroy(b);
  /* bad options */
  ox_breaker_opts_t bad = {.failure_ratio = 1.5};
  CHECK_INT(ox_breaker_create(&bad, &b), OX_EINVALID);
  bad = (ox_breaker_opts_t){.cooldown_ms = -1};
  CHECK_INT(ox_breaker_create(&bad, &b), OX_EINVALID);
}

typedef struct {
  ox_breaker_t *b;
  unsigned seed;
  long admitted, refused;
} bthr_t;

static void *breaker_hammer(void *p) {
  bthr_t *a = p;
  for (int i = 0; i < 50000; i++) {
    ox_breaker_ticket_t t;
    if (ox_breaker_allow(a->b, now_ns(), &t)) {
      a->refused++;
      continue;
    }
    a->admitted++;
    unsigned r = rand_r(&a->seed) % 16;
    ox_breaker_done(a->b, &t,
                    r == 0   ? OX_BREAKER_FAILURE
                    : r == 1 ? OX_BREAKER_TIMEOUT
                             : OX_BREAKER_SUCCESS,
                    now_ns());
  }
  return NULL;
}

TEST(breaker_threads_keep_counts) {
  ox_breaker_t *b = mk_breaker(3, 1);
  bthr_t a[8];
  pthread_t th[8];
  for (int i = 0; i < 8; i++) {
    a[i] = (bthr_t){.b = b, .seed = (unsigned)i + 1};
    pthread_create(&th[i], NULL, breaker_hammer, &a[i]);
  }
  long admitted = 0, refused = 0;
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    admitted += a[i].admitted;
    refused += a[i].refused;
  }
  ox_breaker_stats_t s;
  ox_breaker_stats(b, &s);
  CHECK_INT(admitted + refused, 8 * 50000);
  CHECK_INT(s.calls, admitted);
  CHECK_INT(s.short_circuited, refused);
  CHECK_INT(s.successes + s.failures + s.timeouts, admitted);
  ox_breaker_destroy(b);
}

/* ==== servers ============================================================================== */

static struct {
  int init;
  char dir[64]; /* temporary base directory */
  char redis_bin[256], pg_bindir[256];
  uid_t uid; /* postgres runs as this user (us, or onnxd-test when we are root) */
  gid_t gid;
  pid_t parent;
  volatile pid_t redis_pid, pg_pid;
  int redis_port, pg_port;
  int redis_ok, pg_ok;
  char pg_conninfo[256];
  char why_redis[1024], why_pg[1024];
} g;

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
    if (getppid() != g.parent) _exit(125);
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
  stop_child(&g.redis_pid, SIGKILL);
  stop_child(&g.pg_pid, SIGINT); /* fast shutdown */
  if (g.dir[0]) nftw(g.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void on_signal(int sig) {
  if (g.redis_pid > 0) kill(g.redis_pid, SIGKILL);
  if (g.pg_pid > 0) kill(g.pg_pid, SIGQUIT);
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

static void fixture_init(void) {
  if (g.init) return;
  g.init = 1;
  g.parent = getpid();
  signal(SIGPIPE, SIG_IGN);
  ox_log_level = OX_LOG_ERROR; /* connect failures are expected here; keep the log readable */
  sweep_stale_dirs();
  snprintf(g.dir, sizeof g.dir, "/tmp/onnxd-l3-%ld-XXXXXX", (long)g.parent);
  if (!mkdtemp(g.dir)) {
    g.dir[0] = 0;
    snprintf(g.why_redis, sizeof g.why_redis, "mkdtemp: %s", strerror(errno));
    snprintf(g.why_pg, sizeof g.why_pg, "mkdtemp: %s", strerror(errno));
    return;
  }
  chmod(g.dir, 0711); /* the postgres user must reach its own subdirectory */
  atexit(cleanup);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);

  /* redis-server */
  const char *env = getenv("ONNXD_REDIS_SERVER");
  if (env) {
    if (is_exec(env)) snprintf(g.redis_bin, sizeof g.redis_bin, "%s", env);
  } else if (is_exec("/usr/bin/redis-server")) {
    strcpy(g.redis_bin, "/usr/bin/redis-server");
  } else if (is_exec("/usr/local/bin/redis-server")) {
    strcpy(g.redis_bin, "/usr/local/bin/redis-server");
  }
  if (!g.redis_bin[0])
    snprintf(g.why_redis, sizeof g.why_redis,
             "redis-server not found ($ONNXD_REDIS_SERVER, /usr/bin, /usr/local/bin): install "
             "the Debian package redis-server (scripts/setup.sh does)");

  /* PostgreSQL binaries: the highest /usr/lib/postgresql/N/bin */
  env = getenv("ONNXD_PG_BINDIR");
  if (env) {
    snprintf(g.pg_bindir, sizeof g.pg_bindir, "%s", env);
  } else {
    glob_t gl;
    if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &gl) == 0) {
      /* glob sorts "10" before "9": pick the longest, then the last */
      const char *best = gl.gl_pathv[0];
      for (size_t i = 1; i < gl.gl_pathc; i++)
        if (strlen(gl.gl_pathv[i]) >= strlen(best)) best = gl.gl_pathv[i];
      snprintf(g.pg_bindir, sizeof g.pg_bindir, "%.*s", (int)(strlen(best) - 9), best);
      globfree(&gl);
    }
  }
  char p1[600], p2[600];
  snprintf(p1, sizeof p1, "%s/postgres", g.pg_bindir);
  snprintf(p2, sizeof p2, "%s/initdb", g.pg_bindir);
  if (!g.pg_bindir[0] || !is_exec(p1) || !is_exec(p2)) {
    snprintf(g.why_pg, sizeof g.why_pg,
             "PostgreSQL server binaries (initdb, postgres) not found in %s: install the Debian "
             "package postgresql (scripts/setup.sh does) or set ONNXD_PG_BINDIR",
             g.pg_bindir[0] ? g.pg_bindir : "/usr/lib/postgresql/*/bin");
    g.pg_bindir[0] = 0;
  }

  /* The user postgres runs as. */
  g.uid = getuid();
  g.gid = getgid();
  if (g.uid == 0 && g.pg_bindir[0]) {
    struct passwd *pw = getpwnam(TEST_USER);
    if (!pw) {
      char log[128];
      snprintf(log, sizeof log, "%s/useradd.log", g.dir);
      char *argv[] = {
          "/usr/sbin/useradd", "--system", "--user-group",      "--no-create-home", "--home-dir",
          "/nonexistent",      "--shell",  "/usr/sbin/nologin", TEST_USER,          NULL};
      pid_t pid = is_exec(argv[0]) ? spawn(argv, log, 0, 0, SIGKILL) : -1;
      if (pid > 0) wait_exit(pid, 10000);
      pw = getpwnam(TEST_USER);
    }
    if (!pw) {
      snprintf(g.why_pg, sizeof g.why_pg,
               "running as root and no user " TEST_USER
               " (useradd failed): PostgreSQL refuses "
               "to run as root; create it with: useradd --system --user-group " TEST_USER);
      g.pg_bindir[0] = 0;
    } else {
      g.uid = pw->pw_uid;
      g.gid = pw->pw_gid;
    }
  }
}

/* ---- Redis ---- */

static redisContext *redis_admin(void) {
  redisContext *c = redisConnectWithTimeout("127.0.0.1", g.redis_port, (struct timeval){0, 200000});
  if (!c || c->err) {
    if (c) redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, (struct timeval){2, 0});
  redisReply *r = redisCommand(c, "AUTH %s", REDIS_PASS);
  int ok = r && r->type == REDIS_REPLY_STATUS;
  if (r) freeReplyObject(r);
  r = ok ? redisCommand(c, "SELECT 2") : NULL;
  ok = r && r->type == REDIS_REPLY_STATUS;
  if (r) freeReplyObject(r);
  if (!ok) {
    redisFree(c);
    return NULL;
  }
  return c;
}

/* Starts redis-server on g.redis_port (a new free port when 0); 1 when it answers PING. */
static int redis_start(void) {
  for (int attempt = 0; attempt < 3; attempt++) {
    int fresh = g.redis_port == 0;
    if (fresh) g.redis_port = free_port();
    char port[16], rdir[128], log[160];
    snprintf(port, sizeof port, "%d", g.redis_port);
    snprintf(rdir, sizeof rdir, "%s/redis", g.dir);
    snprintf(log, sizeof log, "%s/redis.log", g.dir);
    mkdir(rdir, 0700);
    char pidfile[160];
    snprintf(pidfile, sizeof pidfile, "%s/redis.pid", g.dir);
    char *argv[] = {g.redis_bin, "--port",           port,    "--bind",
                    "127.0.0.1", "--save",           "",      "--appendonly",
                    "no",        "--daemonize",      "no",    "--dir",
                    rdir,        "--pidfile",        pidfile, "--requirepass",
                    REDIS_PASS,  "--protected-mode", "no",    NULL};
    g.redis_pid = spawn(argv, log, getuid(), getgid(), SIGKILL);
    if (g.redis_pid < 0) break;
    int64_t until = in_ms(5000);
    while (now_ns() < until) {
      if (wait_exit(g.redis_pid, 0) != -1) break; /* died: port taken? */
      redisContext *c = redis_admin();
      if (c) {
        redisReply *r = redisCommand(c, "PING");
        int ok = r && r->type == REDIS_REPLY_STATUS;
        if (r) freeReplyObject(r);
        redisFree(c);
        if (ok) return 1;
      }
      sleep_ms(10);
    }
    stop_child(&g.redis_pid, SIGKILL);
    if (!fresh) break;
    g.redis_port = 0;
  }
  snprintf(g.why_redis, sizeof g.why_redis, "redis-server did not start; see %s/redis.log", g.dir);
  return 0;
}

static void redis_kill(void) {
  stop_child(&g.redis_pid, SIGKILL);
}

static int need_redis(void) {
  fixture_init();
  /* (re)start it unless it is running or cannot run; a failed test may have left it stopped */
  if (g.redis_pid <= 0 && g.redis_bin[0] && !g.why_redis[0]) g.redis_ok = redis_start();
  if (!g.redis_ok || g.redis_pid <= 0) {
    fprintf(stderr, "  FAIL [%s]: %s\n", ox_t_current,
            g.why_redis[0] ? g.why_redis : "redis is not running");
    ox_t_failed_checks++;
    return 0;
  }
  return 1;
}

static ox_l3_redis_t *mk_redis(int port, int pool, int failures, int cooldown_ms) {
  ox_l3_redis_opts_t o = {.host = "127.0.0.1",
                          .port = port,
                          .password = REDIS_PASS,
                          .db = 2,
                          .pool_size = pool,
                          .connect_timeout_ms = 200,
                          .command_timeout_ms = 1000,
                          .breaker = {.failures = failures, .cooldown_ms = cooldown_ms}};
  ox_l3_redis_t *r = NULL;
  CHECK_INT(ox_l3_redis_create(&o, &r), 0);
  return r;
}

/* ---- PostgreSQL ---- */

static int pg_ping(void) {
  return PQping(g.pg_conninfo) == PQPING_OK;
}

static int pg_start(void) {
  char pgdir[128], data[160], log[160];
  snprintf(pgdir, sizeof pgdir, "%s/pg", g.dir);
  snprintf(data, sizeof data, "%s/data", pgdir);
  snprintf(log, sizeof log, "%s/postgres.log", pgdir);
  struct stat st;
  if (stat(data, &st) != 0) { /* first start: initdb */
    mkdir(pgdir, 0700);
    if (chown(pgdir, g.uid, g.gid) != 0) {
      snprintf(g.why_pg, sizeof g.why_pg, "chown %s: %s", pgdir, strerror(errno));
      return 0;
    }
    char bin[600], ilog[160];
    snprintf(bin, sizeof bin, "%s/initdb", g.pg_bindir);
    snprintf(ilog, sizeof ilog, "%s/initdb.log", pgdir);
    char *argv[] = {bin,     "-D", data,   "-U",          "onnxd", "-A",
                    "trust", "-E", "UTF8", "--no-locale", "-N",    NULL};
    pid_t pid = spawn(argv, ilog, g.uid, g.gid, SIGKILL);
    int rc = pid > 0 ? wait_exit(pid, 60000) : -1;
    if (rc == -1 && pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
    }
    if (rc != 0) {
      snprintf(g.why_pg, sizeof g.why_pg, "initdb failed (status %d); see %s", rc, ilog);
      return 0;
    }
  }
  for (int attempt = 0; attempt < 3; attempt++) {
    int fresh = g.pg_port == 0;
    if (fresh) g.pg_port = free_port();
    snprintf(g.pg_conninfo, sizeof g.pg_conninfo,
             "host=127.0.0.1 port=%d dbname=postgres user=onnxd connect_timeout=5", g.pg_port);
    char bin[600], port[16];
    snprintf(bin, sizeof bin, "%s/postgres", g.pg_bindir);
    snprintf(port, sizeof port, "%d", g.pg_port);
    char *argv[] = {bin,
                    "-D",
                    data,
                    "-k",
                    pgdir,
                    "-p",
                    port,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=60",
                    "-c",
                    "shared_buffers=16MB",
                    NULL};
    g.pg_pid = spawn(argv, log, g.uid, g.gid, SIGQUIT);
    if (g.pg_pid < 0) break;
    int64_t until = in_ms(15000);
    while (now_ns() < until) {
      if (wait_exit(g.pg_pid, 0) != -1) break;
      if (pg_ping()) return 1;
      sleep_ms(20);
    }
    stop_child(&g.pg_pid, SIGQUIT);
    if (!fresh) break;
    g.pg_port = 0;
  }
  snprintf(g.why_pg, sizeof g.why_pg, "postgres did not start; see %s", log);
  return 0;
}

static int need_pg(void) {
  fixture_init();
  if (g.pg_pid <= 0 && g.pg_bindir[0] && !g.why_pg[0]) g.pg_ok = pg_start();
  if (!g.pg_ok || g.pg_pid <= 0) {
    fprintf(stderr, "  FAIL [%s]: %s\n", ox_t_current,
            g.why_pg[0] ? g.why_pg : "postgres is not running");
    ox_t_failed_checks++;
    return 0;
  }
  return 1;
}

static ox_l3_pg_t *mk_pg(const char *conninfo, int pool, int failures, int cooldown_ms,
                         int command_ms, int statement_ms) {
  ox_l3_pg_opts_t o = {.conninfo = conninfo,
                       .pool_size = pool,
                       .connect_timeout_ms = 2000,
                       .command_timeout_ms = command_ms,
                       .statement_timeout_ms = statement_ms,
                       .breaker = {.failures = failures, .cooldown_ms = cooldown_ms}};
  ox_l3_pg_t *pg = NULL;
  CHECK_INT(ox_l3_pg_create(&o, &pg), 0);
  return pg;
}

static PGconn *pg_admin(void) {
  PGconn *c = PQconnectdb(g.pg_conninfo);
  if (PQstatus(c) != CONNECTION_OK) {
    fprintf(stderr, "  admin connection: %s", PQerrorMessage(c));
    PQfinish(c);
    return NULL;
  }
  return c;
}

static int pg_admin_exec(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) fprintf(stderr, "  admin %s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return ok;
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

static int redis_get_call(void *r, ox_buf_t *buf, int64_t deadline) {
  return ox_l3_redis_get(r, S("storm:key"), buf, deadline);
}
static int pg_get_call(void *pg, ox_buf_t *buf, int64_t deadline) {
  return ox_l3_pg_get(pg, S("storm:key"), buf, deadline);
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

/* ==== Redis ================================================================================ */

TEST(redis_read_through_and_write_through) {
  if (!need_redis()) return;
  ox_l3_redis_t *r = mk_redis(g.redis_port, 4, 3, 150);
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_redis_get(r, S("t:miss"), &out, in_ms(500)), OX_ENOT_FOUND);
  CHECK_INT(ox_l3_redis_set(r, S("t:a"), S("alpha"), 0, in_ms(500)), 0);
  CHECK_INT(ox_l3_redis_get(r, S("t:a"), &out, in_ms(500)), 0);
  CHECK_INT(out.len, 5);
  CHECK_MEM(out.data, "alpha", 5);
  /* binary, empty and large values */
  static const char bin[] = {'\0', '\r', '\n', '$', '\xff', '\0'};
  CHECK_INT(ox_l3_redis_set(r, S("t:bin"), ox_slice(bin, sizeof bin), 0, in_ms(500)), 0);
  CHECK_INT(ox_l3_redis_set(r, S("t:empty"), ox_slice(NULL, 0), 0, in_ms(500)), 0);
  size_t big_n = 1 << 20;
  char *big = malloc(big_n);
  for (size_t i = 0; i < big_n; i++) big[i] = (char)(i * 7);
  CHECK_INT(ox_l3_redis_set(r, S("t:big"), ox_slice(big, big_n), 0, in_ms(2000)), 0);
  out.len = 0;
  CHECK_INT(ox_l3_redis_get(r, S("t:big"), &out, in_ms(2000)), 0);
  CHECK(out.len == big_n && memcmp(out.data, big, big_n) == 0);
  out.len = 0;
  CHECK_INT(ox_l3_redis_get(r, S("t:empty"), &out, in_ms(500)), 0);
  CHECK_INT(out.len, 0);
  /* MGET: hits, a miss, an empty hit, in order */
  ox_slice_t keys[] = {S("t:a"), S("t:miss"), S("t:bin"), S("t:empty")};
  ox_slice_t vals[4];
  out.len = 0;
  CHECK_INT(ox_l3_redis_mget(r, keys, 4, &out, vals, in_ms(500)), 3);
  CHECK(vals[0].len == 5 && memcmp(vals[0].ptr, "alpha", 5) == 0);
  CHECK(vals[1].ptr == NULL);
  CHECK(vals[2].len == sizeof bin && memcmp(vals[2].ptr, bin, sizeof bin) == 0);
  CHECK(vals[3].ptr != NULL && vals[3].len == 0);
  CHECK_INT(ox_l3_redis_mget(r, keys, 0, &out, vals, in_ms(500)), 0);
  /* the handshake selected db 2: db 0 does not have the key */
  redisContext *adm = redis_admin();
  CHECK(adm != NULL);
  if (adm) {
    redisReply *rep = redisCommand(adm, "SELECT 0");
    freeReplyObject(rep);
    rep = redisCommand(adm, "EXISTS t:a");
    CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    freeReplyObject(rep);
    redisFree(adm);
  }
  ox_l3_redis_stats_t st;
  ox_l3_redis_stats(r, &st);
  CHECK_INT(st.breaker.state, OX_BREAKER_CLOSED);
  CHECK_INT(st.breaker.failures + st.breaker.timeouts, 0);
  CHECK_INT(st.connects, 1); /* one thread: one connection, reused */
  CHECK_INT(st.dropped, 0);
  free(big);
  ox_buf_free(&out);
  ox_l3_redis_destroy(r);
}

TEST(redis_pipelined_writes_ttl_and_error_replies) {
  if (!need_redis()) return;
  ox_l3_redis_t *r = mk_redis(g.redis_port, 2, 3, 150);
  enum { N = 200 };
  char kb[N][16], vb[N][24];
  ox_slice_t keys[N], vals[N], got[N];
  for (int i = 0; i < N; i++) {
    keys[i] = ox_slice(kb[i], (size_t)snprintf(kb[i], sizeof kb[i], "p:%d", i));
    vals[i] = ox_slice(vb[i], (size_t)snprintf(vb[i], sizeof vb[i], "value-%d", i * i));
  }
  CHECK_INT(ox_l3_redis_mset(r, keys, vals, N, 0, in_ms(1000)), 0);
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_redis_mget(r, keys, N, &out, got, in_ms(1000)), N);
  int same = 1;
  for (int i = 0; i < N; i++)
    same &= got[i].len == vals[i].len && memcmp(got[i].ptr, vals[i].ptr, vals[i].len) == 0;
  CHECK(same);
  /* TTL */
  CHECK_INT(ox_l3_redis_set(r, S("t:ttl"), S("short"), 60, in_ms(500)), 0);
  out.len = 0;
  CHECK_INT(ox_l3_redis_get(r, S("t:ttl"), &out, in_ms(500)), 0);
  sleep_ms(150);
  CHECK_INT(ox_l3_redis_get(r, S("t:ttl"), &out, in_ms(500)), OX_ENOT_FOUND);
  /* an error reply (WRONGTYPE) is the request's fault: no breaker count, connection kept */
  redisContext *adm = redis_admin();
  CHECK(adm != NULL);
  if (adm) {
    freeReplyObject(redisCommand(adm, "DEL t:list"));
    freeReplyObject(redisCommand(adm, "LPUSH t:list x"));
    redisFree(adm);
  }
  CHECK_INT(ox_l3_redis_get(r, S("t:list"), &out, in_ms(500)), OX_EINTERNAL);
  CHECK_INT(ox_l3_redis_mget(r, keys, 1, &out, got, in_ms(500)), 1);
  ox_l3_redis_stats_t st;
  ox_l3_redis_stats(r, &st);
  CHECK_INT(st.breaker.failures, 0);
  CHECK_INT(st.dropped, 0);
  CHECK_INT(st.connects, 1);
  ox_buf_free(&out);
  ox_l3_redis_destroy(r);
}

TEST(redis_rpush_many_appends_in_order_and_reports_wrongtype) {
  if (!need_redis()) return;
  ox_l3_redis_t *r = mk_redis(g.redis_port, 2, 3, 150);
  redisContext *adm = redis_admin();
  CHECK(adm != NULL);
  if (!adm) goto out;
  freeReplyObject(redisCommand(adm, "DEL l:a l:b l:str"));
  /* two lists, interleaved, with binary values (24-byte records hold \0, \r, \n) */
  enum { N = 300 };
  static char vb[N][24];
  ox_slice_t keys[N], vals[N];
  for (int i = 0; i < N; i++) {
    for (int b = 0; b < 24; b++) vb[i][b] = (char)(i * 31 + b * 7);
    vb[i][5] = '\r';
    vb[i][6] = '\n';
    vb[i][7] = '\0';
    keys[i] = i % 3 ? S("l:a") : S("l:b");
    vals[i] = ox_slice(vb[i], sizeof vb[i]);
  }
  CHECK_INT(ox_l3_redis_rpush_many(r, keys, vals, N, in_ms(1000)), 0);
  CHECK_INT(ox_l3_redis_rpush_many(r, keys, vals, 0, in_ms(1000)), 0); /* nothing to do */
  const char *lists[] = {"l:a", "l:b"};
  for (int l = 0; l < 2; l++) {
    redisReply *rep = redisCommand(adm, "LRANGE %s 0 -1", lists[l]);
    CHECK(rep && rep->type == REDIS_REPLY_ARRAY);
    size_t k = 0;
    int same = 1;
    for (int i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i < N; i++) {
      if ((i % 3 ? 0 : 1) != l) continue;
      same &= k < rep->elements && rep->element[k]->type == REDIS_REPLY_STRING &&
              rep->element[k]->len == 24 && memcmp(rep->element[k]->str, vb[i], 24) == 0;
      k++;
    }
    CHECK(same);
    CHECK(rep && rep->elements == k);
    if (rep) freeReplyObject(rep);
  }
  /* a key holding a string: WRONGTYPE is an error, the other appends of the round still
   * happen, the breaker does not count it and the connection is kept */
  freeReplyObject(redisCommand(adm, "SET l:str x"));
  ox_slice_t k3[] = {S("l:a"), S("l:str"), S("l:b")};
  ox_slice_t v3[] = {S("tail-a"), S("nope"), S("tail-b")};
  CHECK_INT(ox_l3_redis_rpush_many(r, k3, v3, 3, in_ms(1000)), OX_EINTERNAL);
  redisReply *rep = redisCommand(adm, "LINDEX l:a -1");
  CHECK(rep && rep->type == REDIS_REPLY_STRING && rep->len == 6 && !memcmp(rep->str, "tail-a", 6));
  if (rep) freeReplyObject(rep);
  rep = redisCommand(adm, "LLEN l:b");
  CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == N / 3 + 1);
  if (rep) freeReplyObject(rep);
  ox_l3_redis_stats_t st;
  ox_l3_redis_stats(r, &st);
  CHECK_INT(st.breaker.failures, 0);
  CHECK_INT(st.dropped, 0);
  CHECK_INT(st.connects, 1);
  /* and the connection still answers in step */
  CHECK_INT(ox_l3_redis_rpush_many(r, k3, v3, 1, in_ms(1000)), 0);
  /* a deadline already gone: no call */
  CHECK_INT(ox_l3_redis_rpush_many(r, k3, v3, 1, now_ns() - 1), OX_ETIMEOUT);
  freeReplyObject(redisCommand(adm, "DEL l:a l:b l:str"));
  redisFree(adm);
out:
  ox_l3_redis_destroy(r);
}

typedef struct {
  ox_l3_redis_t *r;
  int deadline_ms, rc;
  int64_t took;
} rget_t;

static void *redis_get_thread(void *p) {
  rget_t *a = p;
  ox_buf_t b;
  ox_buf_init(&b);
  int64_t t0 = now_ns();
  a->rc = ox_l3_redis_get(a->r, S("t:a"), &b, t0 + a->deadline_ms * MS);
  a->took = now_ns() - t0;
  ox_buf_free(&b);
  return NULL;
}

TEST(redis_slow_server_deadline_and_pool_exhaustion) {
  if (!need_redis()) return;
  ox_l3_redis_t *r = mk_redis(g.redis_port, 1, 3, 150);
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_redis_set(r, S("t:a"), S("alpha"), 0, in_ms(500)), 0);
  /* a deadline already gone: no call at all */
  ox_l3_redis_stats_t before, after;
  ox_l3_redis_stats(r, &before);
  CHECK_INT(ox_l3_redis_get(r, S("t:a"), &out, now_ns() - 1), OX_ETIMEOUT);
  ox_l3_redis_stats(r, &after);
  CHECK_INT(after.breaker.calls, before.breaker.calls);
  /* Redis stalls (CLIENT PAUSE): the call returns at its deadline */
  redisContext *adm = redis_admin();
  CHECK(adm != NULL);
  if (!adm) goto out;
  freeReplyObject(redisCommand(adm, "CLIENT PAUSE 400"));
  int64_t t0 = now_ns();
  CHECK_INT(ox_l3_redis_get(r, S("t:a"), &out, t0 + 50 * MS), OX_ETIMEOUT);
  int64_t took = now_ns() - t0;
  CHECK(took >= 49 * MS && took <= (50 + SLACK_MS) * MS);
  /* pool of one, held by a stalled call: the next caller is refused at once, not queued */
  rget_t a = {.r = r, .deadline_ms = 200};
  pthread_t th;
  pthread_create(&th, NULL, redis_get_thread, &a);
  sleep_ms(30);
  t0 = now_ns();
  CHECK_INT(ox_l3_redis_get(r, S("t:a"), &out, t0 + 200 * MS), OX_EUNAVAILABLE);
  CHECK(now_ns() - t0 < 5 * MS);
  pthread_join(th, NULL);
  CHECK_INT(a.rc, OX_ETIMEOUT);
  CHECK(a.took <= (200 + SLACK_MS) * MS);
  ox_l3_redis_stats(r, &after);
  CHECK_INT(after.pool_exhausted, 1);
  CHECK_INT(after.breaker.timeouts, 2);
  CHECK_INT(after.breaker.state, OX_BREAKER_CLOSED); /* 2 < 3 */
  /* once Redis moves again the slot reconnects and serves */
  sleep_ms(200);
  out.len = 0;
  CHECK_INT(ox_l3_redis_get(r, S("t:a"), &out, in_ms(500)), 0);
  CHECK(out.len == 5 && memcmp(out.data, "alpha", 5) == 0);
  ox_l3_redis_stats(r, &after);
  CHECK_INT(after.dropped, 1);          /* the call that timed out on a live connection */
  CHECK_INT(after.connect_failures, 1); /* the stalled one timed out in its handshake */
  redisFree(adm);
out:
  ox_buf_free(&out);
  ox_l3_redis_destroy(r);
}

TEST(redis_down_breaker_opens_then_closes_by_itself) {
  if (!need_redis()) return;
  ox_l3_redis_t *r = mk_redis(g.redis_port, 8, 3, 150);
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_redis_set(r, S("storm:key"), S("v"), 0, in_ms(500)), 0);
  redis_kill(); /* mid-run: the pool holds a live connection */
  for (int i = 0; i < 3; i++) {
    int64_t t0 = now_ns();
    int rc = ox_l3_redis_get(r, S("storm:key"), &out, t0 + 100 * MS);
    CHECK(rc == -ECONNREFUSED || rc == -ECONNRESET);
    CHECK(now_ns() - t0 <= (100 + SLACK_MS) * MS);
  }
  CHECK_INT(ox_breaker_state(ox_l3_redis_breaker(r)), OX_BREAKER_OPEN);
  /* open: fast failure, no network */
  int64_t t0 = now_ns();
  int all = 1;
  for (int i = 0; i < 10000; i++)
    all &= ox_l3_redis_get(r, S("k"), &out, in_ms(100)) == OX_EUNAVAILABLE;
  int64_t per = (now_ns() - t0) / 10000;
  CHECK(all);
  CHECK(per < 20000); /* well under 20 us per refused call, even under sanitizers */
  /* 8 threads keep calling while Redis is down: nobody waits past the deadline */
  storm_t sum;
  int64_t worst = storm(8, redis_get_call, r, 20, 50, 10, &sum);
  CHECK(worst <= (50 + SLACK_MS) * MS);
  CHECK_INT(sum.ok, 0);
  CHECK(sum.unavailable > 0);
  /* Redis comes back (same port): after the cool-down a probe closes the breaker by itself */
  CHECK(redis_start());
  g.redis_ok = g.redis_pid > 0;
  int rc = -1;
  int64_t until = in_ms(3000);
  while (now_ns() < until) {
    rc = ox_l3_redis_get(r, S("storm:key"), &out, in_ms(100));
    if (rc == 0 || rc == OX_ENOT_FOUND) break; /* restarted empty: a miss is an answer */
    sleep_ms(20);
  }
  CHECK_INT(rc, OX_ENOT_FOUND);
  CHECK_INT(ox_breaker_state(ox_l3_redis_breaker(r)), OX_BREAKER_CLOSED);
  CHECK_INT(ox_l3_redis_set(r, S("storm:key"), S("v2"), 0, in_ms(500)), 0);
  worst = storm(8, redis_get_call, r, 20, 100, 0, &sum);
  CHECK_INT(sum.ok, 160);
  ox_l3_redis_stats_t st;
  ox_l3_redis_stats(r, &st);
  CHECK(st.breaker.opened >= 1);
  CHECK(st.breaker.probes >= 1);
  CHECK(st.breaker.short_circuited >= 10000);
  printf(
      "# l3 redis down: %lld ns per short-circuited call; storm worst %.1f ms; "
      "opened %llu, probes %llu, stale %llu, connect failures %llu\n",
      (long long)per, (double)worst / 1e6, (unsigned long long)st.breaker.opened,
      (unsigned long long)st.breaker.probes, (unsigned long long)st.stale,
      (unsigned long long)st.connect_failures);
  ox_buf_free(&out);
  ox_l3_redis_destroy(r);
}

TEST(redis_blackhole_no_thread_pileup) {
  fixture_init();
  int port = 0, fd = blackhole(&port);
  CHECK(fd >= 0);
  if (fd < 0) return;
  ox_l3_redis_t *r = mk_redis(port, 8, 3, 1000);
  storm_t sum;
  int64_t worst = storm(8, redis_get_call, r, 5, 50, 0, &sum);
  CHECK(worst <= (50 + SLACK_MS) * MS);
  CHECK_INT(sum.ok + sum.other, 0);
  /* The first wave times out; a thread may start its second call before the third timeout is
   * reported (still closed), so at most two waves get through; then the breaker refuses. */
  CHECK(sum.timeouts >= 3 && sum.timeouts <= 16);
  CHECK(sum.unavailable >= 24);
  CHECK_INT(sum.timeouts + sum.unavailable, 40);
  CHECK_INT(ox_breaker_state(ox_l3_redis_breaker(r)), OX_BREAKER_OPEN);
  ox_l3_redis_destroy(r);
  close(fd);
}

/* ==== PostgreSQL =========================================================================== */

TEST(pg_read_through_and_write_through) {
  if (!need_pg()) return;
  ox_l3_pg_t *pg = mk_pg(g.pg_conninfo, 4, 3, 150, 1000, 0);
  CHECK_INT(ox_l3_pg_ensure_schema(pg, in_ms(5000)), 0);
  CHECK_INT(ox_l3_pg_ensure_schema(pg, in_ms(5000)), 0); /* idempotent */
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_pg_get(pg, S("e:miss"), &out, in_ms(1000)), OX_ENOT_FOUND);
  static const char bin[] = {'\0', 'a', '\\', '\xff', '\0'};
  CHECK_INT(ox_l3_pg_put(pg, S("e:1"), ox_slice(bin, sizeof bin), in_ms(1000)), 0);
  CHECK_INT(ox_l3_pg_get(pg, S("e:1"), &out, in_ms(1000)), 0);
  CHECK(out.len == sizeof bin && memcmp(out.data, bin, sizeof bin) == 0);
  CHECK_INT(ox_l3_pg_put(pg, S("e:1"), S("second"), in_ms(1000)), 0); /* upsert */
  out.len = 0;
  CHECK_INT(ox_l3_pg_get(pg, S("e:1"), &out, in_ms(1000)), 0);
  CHECK(out.len == 6 && memcmp(out.data, "second", 6) == 0);
  CHECK_INT(ox_l3_pg_put(pg, S("e:\"q\\b,{}"), S("odd key"), in_ms(1000)), 0);
  CHECK_INT(ox_l3_pg_put(pg, S("e:empty"), ox_slice(NULL, 0), in_ms(1000)), 0);
  CHECK_INT(ox_l3_pg_exec(pg,
                          "INSERT INTO features (entity, value) VALUES ('e:null', NULL) "
                          "ON CONFLICT (entity) DO UPDATE SET value = NULL",
                          in_ms(1000)),
            0);
  CHECK_INT(ox_l3_pg_get(pg, S("e:null"), &out, in_ms(1000)), OX_ENOT_FOUND);
  ox_slice_t keys[] = {S("e:1"), S("e:miss"), S("e:\"q\\b,{}"), S("e:empty"), S("e:null")};
  ox_slice_t vals[5];
  out.len = 0;
  CHECK_INT(ox_l3_pg_mget(pg, keys, 5, &out, vals, in_ms(1000)), 3);
  CHECK(vals[0].len == 6 && memcmp(vals[0].ptr, "second", 6) == 0);
  CHECK(vals[1].ptr == NULL);
  CHECK(vals[2].len == 7 && memcmp(vals[2].ptr, "odd key", 7) == 0);
  CHECK(vals[3].ptr != NULL && vals[3].len == 0);
  CHECK(vals[4].ptr == NULL);
  /* entities the server refuses: the caller's fault, not the tier's */
  CHECK_INT(ox_l3_pg_get(pg, S("bad\xff"), &out, in_ms(1000)), OX_EINVALID);
  ox_slice_t nul[] = {ox_slice("a\0b", 3)};
  CHECK_INT(ox_l3_pg_mget(pg, nul, 1, &out, vals, in_ms(1000)), OX_EINVALID);
  ox_l3_pg_stats_t st;
  ox_l3_pg_stats(pg, &st);
  CHECK_INT(st.breaker.failures + st.breaker.timeouts, 0);
  CHECK_INT(st.breaker.state, OX_BREAKER_CLOSED);
  CHECK_INT(st.dropped, 0);
  CHECK_INT(st.connects, 1);
  /* a table that does not exist: an SQL error, no breaker count */
  ox_l3_pg_opts_t o = {.conninfo = g.pg_conninfo, .table = "no_such_table"};
  ox_l3_pg_t *nt = NULL;
  CHECK_INT(ox_l3_pg_create(&o, &nt), 0);
  CHECK_INT(ox_l3_pg_get(nt, S("x"), &out, in_ms(1000)), OX_EINTERNAL);
  ox_l3_pg_stats(nt, &st);
  CHECK_INT(st.breaker.failures, 0);
  ox_l3_pg_destroy(nt);
  o.table = "x; DROP TABLE features";
  CHECK_INT(ox_l3_pg_create(&o, &nt), OX_EINVALID);
  ox_buf_free(&out);
  ox_l3_pg_destroy(pg);
}

TEST(pg_bulk_load_csv) {
  if (!need_pg()) return;
  ox_l3_pg_t *pg = mk_pg(g.pg_conninfo, 2, 3, 150, 1000, 0);
  CHECK_INT(ox_l3_pg_ensure_schema(pg, in_ms(5000)), 0);
  char path[128];
  snprintf(path, sizeof path, "%s/features.csv", g.dir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fputs("entity,value\n", f);
  fputs("c:1,\\x0102ff\n", f);
  fputs("c:2,plain text\n", f);
  fputs("\"c:3,comma\",\"quoted, value\"\n", f);
  for (int i = 0; i < 1000; i++) fprintf(f, "c:bulk:%d,v%d\n", i, i);
  fclose(f);
  uint64_t rows = 0;
  CHECK_INT(ox_l3_pg_load_csv(pg, path, 1, in_ms(10000), &rows), 0);
  CHECK_INT(rows, 1003);
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_pg_get(pg, S("c:1"), &out, in_ms(1000)), 0);
  CHECK(out.len == 3 && memcmp(out.data, "\x01\x02\xff", 3) == 0);
  out.len = 0;
  CHECK_INT(ox_l3_pg_get(pg, S("c:3,comma"), &out, in_ms(1000)), 0);
  CHECK(out.len == 13 && memcmp(out.data, "quoted, value", 13) == 0);
  out.len = 0;
  CHECK_INT(ox_l3_pg_get(pg, S("c:bulk:999"), &out, in_ms(1000)), 0);
  CHECK(out.len == 4 && memcmp(out.data, "v999", 4) == 0);
  /* loading again upserts */
  f = fopen(path, "w");
  fputs("c:2,changed\n", f);
  fclose(f);
  CHECK_INT(ox_l3_pg_load_csv(pg, path, 0, in_ms(10000), &rows), 0);
  CHECK_INT(rows, 1);
  out.len = 0;
  CHECK_INT(ox_l3_pg_get(pg, S("c:2"), &out, in_ms(1000)), 0);
  CHECK(out.len == 7 && memcmp(out.data, "changed", 7) == 0);
  /* a bad file loads nothing */
  f = fopen(path, "w");
  fputs("c:new,1\nc:bad,1,extra\n", f);
  fclose(f);
  CHECK(ox_l3_pg_load_csv(pg, path, 0, in_ms(10000), &rows) < 0);
  CHECK_INT(ox_l3_pg_get(pg, S("c:new"), &out, in_ms(1000)), OX_ENOT_FOUND);
  CHECK_INT(ox_l3_pg_load_csv(pg, "/nonexistent/x.csv", 0, in_ms(1000), &rows), -ENOENT);
  ox_buf_free(&out);
  ox_l3_pg_destroy(pg);
}

TEST(pg_slow_query_times_out_and_connection_recovers) {
  if (!need_pg()) return;
  ox_l3_pg_t *pg = mk_pg(g.pg_conninfo, 2, 3, 150, 1000, 0);
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_pg_put(pg, S("s:1"), S("slow"), in_ms(1000)), 0);
  PGconn *adm = pg_admin();
  CHECK(adm != NULL);
  if (!adm) goto out;
  /* A reader blocked behind a lock: the call returns at its 50 ms deadline. */
  CHECK(pg_admin_exec(adm, "BEGIN; LOCK TABLE features IN ACCESS EXCLUSIVE MODE"));
  int64_t t0 = now_ns();
  CHECK_INT(ox_l3_pg_get(pg, S("s:1"), &out, t0 + 50 * MS), OX_ETIMEOUT);
  int64_t took = now_ns() - t0;
  CHECK(took >= 49 * MS && took <= (50 + SLACK_MS) * MS);
  /* A slow statement (pg_sleep 0.5 s) on the admin path: same bound. */
  t0 = now_ns();
  CHECK_INT(ox_l3_pg_exec(pg, "SELECT pg_sleep(0.5)", t0 + 50 * MS), OX_ETIMEOUT);
  took = now_ns() - t0;
  CHECK(took <= (50 + SLACK_MS) * MS);
  CHECK(pg_admin_exec(adm, "COMMIT"));
  /* the tier is usable right after */
  out.len = 0;
  CHECK_INT(ox_l3_pg_get(pg, S("s:1"), &out, in_ms(1000)), 0);
  CHECK(out.len == 4 && memcmp(out.data, "slow", 4) == 0);
  ox_l3_pg_stats_t st;
  ox_l3_pg_stats(pg, &st);
  CHECK_INT(st.dropped, 2);
  CHECK_INT(st.breaker.timeouts, 1);
  CHECK_INT(st.breaker.state, OX_BREAKER_CLOSED);
  /* Server-side statement_timeout (100 ms) inside a longer deadline: OX_ETIMEOUT, and the
   * connection is kept (the server cancelled the statement, the session is idle again). */
  ox_l3_pg_t *st_pg = mk_pg(g.pg_conninfo, 1, 3, 150, 2000, 100);
  CHECK_INT(ox_l3_pg_get(st_pg, S("s:1"), &out, in_ms(1000)), 0);
  CHECK(pg_admin_exec(adm, "BEGIN; LOCK TABLE features IN ACCESS EXCLUSIVE MODE"));
  t0 = now_ns();
  CHECK_INT(ox_l3_pg_get(st_pg, S("s:1"), &out, t0 + 1000 * MS), OX_ETIMEOUT);
  took = now_ns() - t0;
  CHECK(took >= 90 * MS && took <= 500 * MS);
  CHECK(pg_admin_exec(adm, "COMMIT"));
  CHECK_INT(ox_l3_pg_get(st_pg, S("s:1"), &out, in_ms(1000)), 0);
  ox_l3_pg_stats(st_pg, &st);
  CHECK_INT(st.connects, 1);
  CHECK_INT(st.dropped, 0);
  ox_l3_pg_destroy(st_pg);
  PQfinish(adm);
out:
  ox_buf_free(&out);
  ox_l3_pg_destroy(pg);
}

typedef struct {
  ox_l3_pg_t *pg;
  int rc;
  int64_t took;
} pget_t;

static void *pg_get_thread(void *p) {
  pget_t *a = p;
  ox_buf_t b;
  ox_buf_init(&b);
  int64_t t0 = now_ns();
  a->rc = ox_l3_pg_get(a->pg, S("s:1"), &b, t0 + 2000 * MS);
  a->took = now_ns() - t0;
  ox_buf_free(&b);
  return NULL;
}

TEST(pg_backend_reset_mid_query) {
  if (!need_pg()) return;
  ox_l3_pg_t *pg = mk_pg(g.pg_conninfo, 1, 3, 150, 3000, 5000); /* one slot: one connection */
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_pg_put(pg, S("s:1"), S("slow"), in_ms(1000)), 0);
  PGconn *adm = pg_admin();
  CHECK(adm != NULL);
  if (!adm) goto out;
  CHECK(pg_admin_exec(adm, "BEGIN; LOCK TABLE features IN ACCESS EXCLUSIVE MODE"));
  PGconn *killer = pg_admin();
  CHECK(killer != NULL);
  pget_t a = {.pg = pg};
  pthread_t th;
  pthread_create(&th, NULL, pg_get_thread, &a);
  /* find the waiting backend and terminate it */
  int killed = 0;
  for (int i = 0; killer && i < 100 && !killed; i++) {
    PGresult *res = PQexec(killer,
                           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'onnxd' AND wait_event_type = 'Lock'");
    killed = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) >= 1;
    PQclear(res);
    if (!killed) sleep_ms(10);
  }
  CHECK(killed);
  pthread_join(th, NULL);
  CHECK(a.rc == OX_EUNAVAILABLE || a.rc == -ECONNRESET);
  CHECK(a.took < 1000 * MS); /* the reset is seen at once, not at the deadline */
  CHECK(pg_admin_exec(adm, "COMMIT"));
  ox_l3_pg_stats_t before, after;
  ox_l3_pg_stats(pg, &before);
  CHECK_INT(ox_l3_pg_get(pg, S("s:1"), &out, in_ms(1000)), 0); /* reconnects */
  ox_l3_pg_stats(pg, &after);
  CHECK_INT(after.connects, before.connects + 1);
  CHECK_INT(after.breaker.state, OX_BREAKER_CLOSED);
  /* an idle pooled connection terminated by the server is noticed before use: no error */
  PGresult *res = PQexec(killer,
                         "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE application_name = 'onnxd'");
  PQclear(res);
  sleep_ms(50);
  CHECK_INT(ox_l3_pg_get(pg, S("s:1"), &out, in_ms(1000)), 0);
  ox_l3_pg_stats(pg, &after);
  CHECK(after.stale >= 1);
  PQfinish(killer);
  PQfinish(adm);
out:
  ox_buf_free(&out);
  ox_l3_pg_destroy(pg);
}

TEST(pg_down_breaker_opens_then_closes_by_itself) {
  if (!need_pg()) return;
  ox_l3_pg_t *pg = mk_pg(g.pg_conninfo, 8, 3, 200, 1000, 0);
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_pg_put(pg, S("storm:key"), S("v"), in_ms(1000)), 0);
  stop_child(&g.pg_pid, SIGINT); /* fast shutdown: sessions are terminated */
  for (int i = 0; i < 3; i++) {
    int64_t t0 = now_ns();
    int rc = ox_l3_pg_get(pg, S("storm:key"), &out, t0 + 100 * MS);
    CHECK(rc == -ECONNREFUSED || rc == -ECONNRESET || rc == OX_EUNAVAILABLE);
    CHECK(now_ns() - t0 <= (100 + SLACK_MS) * MS);
  }
  CHECK_INT(ox_breaker_state(ox_l3_pg_breaker(pg)), OX_BREAKER_OPEN);
  int64_t t0 = now_ns();
  int all = 1;
  for (int i = 0; i < 10000; i++)
    all &= ox_l3_pg_get(pg, S("k"), &out, in_ms(100)) == OX_EUNAVAILABLE;
  int64_t per = (now_ns() - t0) / 10000;
  CHECK(all);
  CHECK(per < 20000);
  storm_t sum;
  int64_t worst = storm(8, pg_get_call, pg, 10, 50, 10, &sum);
  CHECK(worst <= (50 + SLACK_MS) * MS);
  CHECK_INT(sum.ok, 0);
  /* back up on the same port: the breaker closes by itself */
  g.pg_ok = pg_start();
  CHECK(g.pg_ok);
  int rc = -1;
  int64_t until = in_ms(3000);
  while (now_ns() < until) {
    out.len = 0;
    rc = ox_l3_pg_get(pg, S("storm:key"), &out, in_ms(200));
    if (rc == 0) break;
    sleep_ms(20);
  }
  CHECK_INT(rc, 0);
  CHECK(out.len == 1 && out.data[0] == 'v'); /* durable: the row survived the restart */
  CHECK_INT(ox_breaker_state(ox_l3_pg_breaker(pg)), OX_BREAKER_CLOSED);
  worst = storm(8, pg_get_call, pg, 20, 200, 0, &sum);
  CHECK_INT(sum.ok, 160);
  ox_l3_pg_stats_t st;
  ox_l3_pg_stats(pg, &st);
  printf(
      "# l3 pg down: %lld ns per short-circuited call; opened %llu, probes %llu, "
      "connect failures %llu\n",
      (long long)per, (unsigned long long)st.breaker.opened, (unsigned long long)st.breaker.probes,
      (unsigned long long)st.connect_failures);
  ox_buf_free(&out);
  ox_l3_pg_destroy(pg);
}

TEST(pg_blackhole_no_thread_pileup) {
  fixture_init();
  int port = 0, fd = blackhole(&port);
  CHECK(fd >= 0);
  if (fd < 0) return;
  char ci[128];
  snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=x user=x", port);
  ox_l3_pg_t *pg = mk_pg(ci, 8, 3, 1000, 1000, 0);
  storm_t sum;
  int64_t worst = storm(8, pg_get_call, pg, 5, 50, 0, &sum);
  CHECK(worst <= (50 + SLACK_MS) * MS);
  CHECK_INT(sum.ok + sum.other, 0);
  CHECK(sum.timeouts >= 3 && sum.timeouts <= 16); /* see redis_blackhole_no_thread_pileup */
  CHECK(sum.unavailable >= 24);
  CHECK_INT(sum.timeouts + sum.unavailable, 40);
  CHECK_INT(ox_breaker_state(ox_l3_pg_breaker(pg)), OX_BREAKER_OPEN);
  ox_l3_pg_destroy(pg);
  close(fd);
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

TEST(latency_report) {
  enum { N = 5000 };
  int64_t *v = malloc(sizeof(int64_t) * N);
  ox_buf_t out;
  ox_buf_init(&out);
  double p50, p99;
  /* breaker alone: admit+report while closed, refusal while open */
  ox_breaker_t *b = mk_breaker(1, 60000);
  ox_breaker_ticket_t t;
  int64_t t0 = now_ns();
  for (int i = 0; i < 1000000; i++) {
    ox_breaker_allow(b, t0, &t);
    ox_breaker_done(b, &t, OX_BREAKER_SUCCESS, t0);
  }
  double closed_ns = (double)(now_ns() - t0) / 1e6;
  call_with(b, t0, OX_BREAKER_FAILURE);
  t0 = now_ns();
  int refused = 0;
  for (int i = 0; i < 1000000; i++) refused += ox_breaker_allow(b, t0, &t) == OX_EUNAVAILABLE;
  double open_ns = (double)(now_ns() - t0) / 1e6;
  CHECK_INT(refused, 1000000);
  printf("# l3 breaker: allow+done (closed) %.1f ns, refusal (open) %.1f ns\n", closed_ns, open_ns);
  ox_breaker_destroy(b);

  if (need_redis()) {
    ox_l3_redis_t *r = mk_redis(g.redis_port, 1, 3, 150);
    char val[64];
    memset(val, 'x', sizeof val);
    CHECK_INT(ox_l3_redis_set(r, S("bench:k"), ox_slice(val, sizeof val), 0, in_ms(500)), 0);
    for (int i = 0; i < 500; i++) {
      out.len = 0;
      ox_l3_redis_get(r, S("bench:k"), &out, in_ms(100));
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
      out.len = 0;
      int64_t s = now_ns();
      bad += ox_l3_redis_get(r, S("bench:k"), &out, s + 100 * MS) != 0;
      v[i] = now_ns() - s;
    }
    CHECK_INT(bad, 0);
    percentiles(v, N, &p50, &p99);
    printf("# l3 redis GET 64 B (loopback, 1 connection): p50 %.1f us, p99 %.1f us\n", p50, p99);
    CHECK(p99 < 50000);
    ox_slice_t keys[16];
    ox_slice_t vals[16];
    for (int i = 0; i < 16; i++) keys[i] = S("bench:k");
    for (int i = 0; i < N; i++) {
      out.len = 0;
      int64_t s = now_ns();
      bad += ox_l3_redis_mget(r, keys, 16, &out, vals, s + 100 * MS) != 16;
      v[i] = now_ns() - s;
    }
    CHECK_INT(bad, 0);
    percentiles(v, N, &p50, &p99);
    printf("# l3 redis MGET 16 x 64 B: p50 %.1f us, p99 %.1f us\n", p50, p99);
    ox_l3_redis_destroy(r);
  }
  if (need_pg()) {
    ox_l3_pg_t *pg = mk_pg(g.pg_conninfo, 1, 3, 150, 1000, 0);
    char val[64];
    memset(val, 'y', sizeof val);
    CHECK_INT(ox_l3_pg_put(pg, S("bench:k"), ox_slice(val, sizeof val), in_ms(1000)), 0);
    for (int i = 0; i < 500; i++) {
      out.len = 0;
      ox_l3_pg_get(pg, S("bench:k"), &out, in_ms(100));
    }
    int bad = 0;
    for (int i = 0; i < N; i++) {
      out.len = 0;
      int64_t s = now_ns();
      bad += ox_l3_pg_get(pg, S("bench:k"), &out, s + 100 * MS) != 0;
      v[i] = now_ns() - s;
    }
    CHECK_INT(bad, 0);
    percentiles(v, N, &p50, &p99);
    printf("# l3 pg prepared SELECT 64 B (loopback, 1 connection): p50 %.1f us, p99 %.1f us\n", p50,
           p99);
    CHECK(p99 < 50000);
    ox_slice_t keys[16];
    ox_slice_t vals[16];
    for (int i = 0; i < 16; i++) keys[i] = S("bench:k");
    for (int i = 0; i < N / 5; i++) {
      out.len = 0;
      int64_t s = now_ns();
      bad += ox_l3_pg_mget(pg, keys, 16, &out, vals, s + 100 * MS) != 16;
      v[i] = now_ns() - s;
    }
    CHECK_INT(bad, 0);
    percentiles(v, N / 5, &p50, &p99);
    printf("# l3 pg mget 16 keys: p50 %.1f us, p99 %.1f us\n", p50, p99);
    ox_l3_pg_destroy(pg);
  }
  ox_buf_free(&out);
  free(v);
}

TEST_MAIN(T(breaker_opens_after_consecutive_failures), T(breaker_half_open_admits_one_probe),
          T(breaker_probe_failure_reopens), T(breaker_lost_probe_expires),
          T(breaker_stale_outcomes_change_nothing), T(breaker_failure_ratio_window),
          T(breaker_threads_keep_counts), T(redis_read_through_and_write_through),
          T(redis_pipelined_writes_ttl_and_error_replies),
          T(redis_rpush_many_appends_in_order_and_reports_wrongtype),
          T(redis_slow_server_deadline_and_pool_exhaustion),
          T(redis_down_breaker_opens_then_closes_by_itself), T(redis_blackhole_no_thread_pileup),
          T(pg_read_through_and_write_through), T(pg_bulk_load_csv),
          T(pg_slow_query_times_out_and_connection_recovers), T(pg_backend_reset_mid_query),
          T(pg_down_breaker_opens_then_closes_by_itself), T(pg_blackhole_no_thread_pileup),
          T(latency_report))
