/* l3_redis_test.c: the Redis half of the remote feature tier (features/l3_redis) against a real
 * redis-server this test starts (l3_servers.h: where, how, and the clean-up), with a password
 * and db 2 so that the handshake (AUTH, SELECT) is exercised. The "latency" test prints the
 * measured loopback latencies as "# l3 ..." lines.
 */
#include <hiredis/hiredis.h>

#include "features/l3_redis.h"
#include "l3_servers.h"

#define REDIS_PASS "l3-test-secret"

static struct {
  int looked; /* redis_find ran */
  char bin[256];
  int port; /* kept across restarts: the tier must find the server again on the same port */
  int ok;   /* it answered when last started */
  char why[1024];
} g;

/* Sets the fixture up and finds redis-server, once. */
static void redis_find(void) {
  fixture_init(SIGKILL, SIGKILL);
  if (g.looked) return;
  g.looked = 1;
  if (!fx.dir[0]) {
    snprintf(g.why, sizeof g.why, "%s", fx.why);
    return;
  }
  const char *env = getenv("ONNXD_REDIS_SERVER");
  if (env) {
    if (is_exec(env)) snprintf(g.bin, sizeof g.bin, "%s", env);
  } else if (is_exec("/usr/bin/redis-server")) {
    strcpy(g.bin, "/usr/bin/redis-server");
  } else if (is_exec("/usr/local/bin/redis-server")) {
    strcpy(g.bin, "/usr/local/bin/redis-server");
  }
  if (!g.bin[0])
    snprintf(g.why, sizeof g.why,
             "redis-server not found ($ONNXD_REDIS_SERVER, /usr/bin, /usr/local/bin): install "
             "the Debian package redis-server (scripts/setup.sh does)");
}

static redisContext *redis_admin(void) {
  redisContext *c = redisConnectWithTimeout("127.0.0.1", g.port, (struct timeval){0, 200000});
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

/* Starts redis-server on g.port (a new free port when 0); 1 when it answers PING. */
static int redis_start(void) {
  for (int attempt = 0; attempt < 3; attempt++) {
    int fresh = g.port == 0;
    if (fresh) g.port = free_port();
    char port[16], rdir[128], log[160];
    snprintf(port, sizeof port, "%d", g.port);
    snprintf(rdir, sizeof rdir, "%s/redis", fx.dir);
    snprintf(log, sizeof log, "%s/redis.log", fx.dir);
    mkdir(rdir, 0700);
    char pidfile[160];
    snprintf(pidfile, sizeof pidfile, "%s/redis.pid", fx.dir);
    char *argv[] = {g.bin,       "--port",           port,    "--bind",
                    "127.0.0.1", "--save",           "",      "--appendonly",
                    "no",        "--daemonize",      "no",    "--dir",
                    rdir,        "--pidfile",        pidfile, "--requirepass",
                    REDIS_PASS,  "--protected-mode", "no",    NULL};
    fx.pid = spawn(argv, log, getuid(), getgid(), SIGKILL);
    if (fx.pid < 0) break;
    int64_t until = in_ms(5000);
    while (now_ns() < until) {
      if (wait_exit(fx.pid, 0) != -1) break; /* died: port taken? */
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
    stop_child(&fx.pid, SIGKILL);
    if (!fresh) break;
    g.port = 0;
  }
  snprintf(g.why, sizeof g.why, "redis-server did not start; see %s/redis.log", fx.dir);
  return 0;
}

static void redis_kill(void) {
  stop_child(&fx.pid, SIGKILL);
}

/* 1 when redis-server runs; else records a failure of the current test and returns 0. */
static int need_redis(void) {
  redis_find();
  /* (re)start it unless it is running or cannot run; a failed test may have left it stopped */
  if (fx.pid <= 0 && g.bin[0] && !g.why[0]) g.ok = redis_start();
  if (!g.ok || fx.pid <= 0) return server_missing(g.why[0] ? g.why : "redis is not running");
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

static int redis_get_call(void *r, ox_buf_t *buf, int64_t deadline) {
  return ox_l3_redis_get(r, S("storm:key"), buf, deadline);
}

/* ==== tests ================================================================================ */

TEST(redis_read_through_and_write_through) {
  if (!need_redis()) return;
  ox_l3_redis_t *r = mk_redis(g.port, 4, 3, 150);
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
  ox_l3_redis_t *r = mk_redis(g.port, 2, 3, 150);
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
  ox_l3_redis_t *r = mk_redis(g.port, 2, 3, 150);
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
  ox_l3_redis_t *r = mk_redis(g.port, 1, 3, 150);
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
  ox_l3_redis_t *r = mk_redis(g.port, 8, 3, 150);
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
  g.ok = fx.pid > 0;
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
  redis_find(); /* the fixture: SIGPIPE ignored, quiet log */
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

/* ==== measurements ========================================================================= */

TEST(redis_latency_report) {
  if (!need_redis()) return;
  enum { N = 5000 };
  int64_t *v = malloc(sizeof(int64_t) * N);
  ox_buf_t out;
  ox_buf_init(&out);
  double p50, p99;
  ox_l3_redis_t *r = mk_redis(g.port, 1, 3, 150);
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
  ox_buf_free(&out);
  free(v);
}

TEST_MAIN(T(redis_read_through_and_write_through), T(redis_pipelined_writes_ttl_and_error_replies),
          T(redis_rpush_many_appends_in_order_and_reports_wrongtype),
          T(redis_slow_server_deadline_and_pool_exhaustion),
          T(redis_down_breaker_opens_then_closes_by_itself), T(redis_blackhole_no_thread_pileup),
          T(redis_latency_report))
