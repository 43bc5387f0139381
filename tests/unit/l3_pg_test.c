/* l3_pg_test.c: the PostgreSQL half of the remote feature tier (features/l3_pg) against a real
 * server this test starts (l3_servers.h: where, how, and the clean-up). PostgreSQL refuses to run
 * as root, and CI runs as root: then the test creates a system user `onnxd-test` if it is missing
 * (useradd) and runs initdb and postgres as that user. It drops privileges itself in the forked
 * child (setgroups, setgid, setuid), which is what `runuser -u onnxd-test --` would do, but keeps
 * postgres a direct child of the test: runuser forks and waits, so a parent-death signal set on
 * it would not reach postgres. The "latency" test prints the measured loopback latencies as
 * "# l3 ..." lines.
 */
#include <libpq-fe.h>
#include <pwd.h>

#include "features/l3_pg.h"
#include "l3_servers.h"

#define TEST_USER "onnxd-test"

static struct {
  int looked; /* pg_find ran */
  char bindir[256];
  uid_t uid; /* postgres runs as this user (us, or onnxd-test when we are root) */
  gid_t gid;
  int port; /* kept across restarts: the tier must find the server again on the same port */
  int ok;   /* it answered when last started */
  char conninfo[256];
  char why[1024];
} g;

/* Sets the fixture up (postgres: fast shutdown at exit, immediate if the test dies), finds the
 * PostgreSQL binaries and the user to run them as, once. */
static void pg_find(void) {
  fixture_init(SIGINT, SIGQUIT);
  if (g.looked) return;
  g.looked = 1;
  if (!fx.dir[0]) {
    snprintf(g.why, sizeof g.why, "%s", fx.why);
    return;
  }
  /* PostgreSQL binaries: the highest /usr/lib/postgresql/N/bin */
  const char *env = getenv("ONNXD_PG_BINDIR");
  if (env) {
    snprintf(g.bindir, sizeof g.bindir, "%s", env);
  } else {
    glob_t gl;
    if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &gl) == 0) {
      /* glob sorts "10" before "9": pick the longest, then the last */
      const char *best = gl.gl_pathv[0];
      for (size_t i = 1; i < gl.gl_pathc; i++)
        if (strlen(gl.gl_pathv[i]) >= strlen(best)) best = gl.gl_pathv[i];
      snprintf(g.bindir, sizeof g.bindir, "%.*s", (int)(strlen(best) - 9), best);
      globfree(&gl);
    }
  }
  char p1[600], p2[600];
  snprintf(p1, sizeof p1, "%s/postgres", g.bindir);
  snprintf(p2, sizeof p2, "%s/initdb", g.bindir);
  if (!g.bindir[0] || !is_exec(p1) || !is_exec(p2)) {
    snprintf(g.why, sizeof g.why,
             "PostgreSQL server binaries (initdb, postgres) not found in %s: install the Debian "
             "package postgresql (scripts/setup.sh does) or set ONNXD_PG_BINDIR",
             g.bindir[0] ? g.bindir : "/usr/lib/postgresql/*/bin");
    g.bindir[0] = 0;
  }

  /* The user postgres runs as. */
  g.uid = getuid();
  g.gid = getgid();
  if (g.uid == 0 && g.bindir[0]) {
    struct passwd *pw = getpwnam(TEST_USER);
    if (!pw) {
      char log[128];
      snprintf(log, sizeof log, "%s/useradd.log", fx.dir);
      char *argv[] = {
          "/usr/sbin/useradd", "--system", "--user-group",      "--no-create-home", "--home-dir",
          "/nonexistent",      "--shell",  "/usr/sbin/nologin", TEST_USER,          NULL};
      pid_t pid = is_exec(argv[0]) ? spawn(argv, log, 0, 0, SIGKILL) : -1;
      if (pid > 0) wait_exit(pid, 10000);
      pw = getpwnam(TEST_USER);
    }
    if (!pw) {
      snprintf(g.why, sizeof g.why,
               "running as root and no user " TEST_USER
               " (useradd failed): PostgreSQL refuses "
               "to run as root; create it with: useradd --system --user-group " TEST_USER);
      g.bindir[0] = 0;
    } else {
      g.uid = pw->pw_uid;
      g.gid = pw->pw_gid;
    }
  }
}

static int pg_ping(void) {
  return PQping(g.conninfo) == PQPING_OK;
}

static int pg_start(void) {
  char pgdir[128], data[160], log[160];
  snprintf(pgdir, sizeof pgdir, "%s/pg", fx.dir);
  snprintf(data, sizeof data, "%s/data", pgdir);
  snprintf(log, sizeof log, "%s/postgres.log", pgdir);
  struct stat st;
  if (stat(data, &st) != 0) { /* first start: initdb */
    mkdir(pgdir, 0700);
    if (chown(pgdir, g.uid, g.gid) != 0) {
      snprintf(g.why, sizeof g.why, "chown %s: %s", pgdir, strerror(errno));
      return 0;
    }
    char bin[600], ilog[160];
    snprintf(bin, sizeof bin, "%s/initdb", g.bindir);
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
      snprintf(g.why, sizeof g.why, "initdb failed (status %d); see %s", rc, ilog);
      return 0;
    }
  }
  for (int attempt = 0; attempt < 3; attempt++) {
    int fresh = g.port == 0;
    if (fresh) g.port = free_port();
    snprintf(g.conninfo, sizeof g.conninfo,
             "host=127.0.0.1 port=%d dbname=postgres user=onnxd connect_timeout=5", g.port);
    char bin[600], port[16];
    snprintf(bin, sizeof bin, "%s/postgres", g.bindir);
    snprintf(port, sizeof port, "%d", g.port);
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
    fx.pid = spawn(argv, log, g.uid, g.gid, SIGQUIT);
    if (fx.pid < 0) break;
    int64_t until = in_ms(15000);
    while (now_ns() < until) {
      if (wait_exit(fx.pid, 0) != -1) break;
      if (pg_ping()) return 1;
      sleep_ms(20);
    }
    stop_child(&fx.pid, SIGQUIT);
    if (!fresh) break;
    g.port = 0;
  }
  snprintf(g.why, sizeof g.why, "postgres did not start; see %s", log);
  return 0;
}

/* 1 when postgres runs; else records a failure of the current test and returns 0. */
static int need_pg(void) {
  pg_find();
  /* (re)start it unless it is running or cannot run; a failed test may have left it stopped */
  if (fx.pid <= 0 && g.bindir[0] && !g.why[0]) g.ok = pg_start();
  if (!g.ok || fx.pid <= 0) return server_missing(g.why[0] ? g.why : "postgres is not running");
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
  PGconn *c = PQconnectdb(g.conninfo);
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

static int pg_get_call(void *pg, ox_buf_t *buf, int64_t deadline) {
  return ox_l3_pg_get(pg, S("storm:key"), buf, deadline);
}

/* ==== tests ================================================================================ */

TEST(pg_read_through_and_write_through) {
  if (!need_pg()) return;
  ox_l3_pg_t *pg = mk_pg(g.conninfo, 4, 3, 150, 1000, 0);
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
  ox_l3_pg_opts_t o = {.conninfo = g.conninfo, .table = "no_such_table"};
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
  ox_l3_pg_t *pg = mk_pg(g.conninfo, 2, 3, 150, 1000, 0);
  CHECK_INT(ox_l3_pg_ensure_schema(pg, in_ms(5000)), 0);
  char path[128];
  snprintf(path, sizeof path, "%s/features.csv", fx.dir);
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
  ox_l3_pg_t *pg = mk_pg(g.conninfo, 2, 3, 150, 1000, 0);
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
  ox_l3_pg_t *st_pg = mk_pg(g.conninfo, 1, 3, 150, 2000, 100);
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
  ox_l3_pg_t *pg = mk_pg(g.conninfo, 1, 3, 150, 3000, 5000); /* one slot: one connection */
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
  ox_l3_pg_t *pg = mk_pg(g.conninfo, 8, 3, 200, 1000, 0);
  ox_buf_t out;
  ox_buf_init(&out);
  CHECK_INT(ox_l3_pg_put(pg, S("storm:key"), S("v"), in_ms(1000)), 0);
  stop_child(&fx.pid, SIGINT); /* fast shutdown: sessions are terminated */
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
  g.ok = pg_start();
  CHECK(g.ok);
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
  pg_find(); /* the fixture: SIGPIPE ignored, quiet log */
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

TEST(pg_latency_report) {
  if (!need_pg()) return;
  enum { N = 5000 };
  int64_t *v = malloc(sizeof(int64_t) * N);
  ox_buf_t out;
  ox_buf_init(&out);
  double p50, p99;
  ox_l3_pg_t *pg = mk_pg(g.conninfo, 1, 3, 150, 1000, 0);
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
  ox_buf_free(&out);
  free(v);
}

TEST_MAIN(T(pg_read_through_and_write_through), T(pg_bulk_load_csv),
          T(pg_slow_query_times_out_and_connection_recovers), T(pg_backend_reset_mid_query),
          T(pg_down_breaker_opens_then_closes_by_itself), T(pg_blackhole_no_thread_pileup),
          T(pg_latency_report))
