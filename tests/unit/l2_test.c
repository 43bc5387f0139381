/* l2_test.c: unit tests for the LMDB tier (src/features/l2.c, l2_writer.c), each in a fresh
 * directory under $TMPDIR: rows (zero-copy and copying reads, too-small buffers, delete), events
 * (per-entity isolation of "u1"/"u12", (ts, seq) order with equal and negative times, inclusive
 * ranges, early stop), restart with data and sequence numbers intact, the batched writer (fewer
 * transactions than operations, concurrent producers), a full queue, a full map reported by
 * flush, reader slots (the last one refused, none lost under load), purges (each entity's
 * newest old event kept as its anchor, also among equal times; '~' entities untouched; prefix
 * entities independent; exact counts across chunk boundaries; a repeated purge deletes nothing;
 * periodic by retention while writes keep coming), and velocity features from a 24 h scan.
 * Groups (ox_l2_commit): all or nothing when the map cannot hold them, the map growing up to
 * its maximum for one that fits, usage reported; idempotency keys stored with a group, a
 * repeated one failing its whole group, and forgotten by a purge past their time. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "features/l2.h"
#include "features/velocity.h"
#include "test.h"

static ox_slice_t S(const char *s) {
  return ox_slice(s, strlen(s));
}

/* ---- helpers ------------------------------------------------------------------------------ */

static char g_dir[256];

static const char *fresh_dir(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/onnxd-l2-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(g_dir)) return NULL;
  return g_dir;
}

static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static const ox_l2_opts_t k_fast = {.map_size = 64 << 20, .sync = OX_L2_SYNC_NONE};

static ox_l2_t *open_fresh(const ox_l2_opts_t *o) {
  ox_l2_t *l2 = NULL;
  const char *dir = fresh_dir();
  CHECK(dir != NULL);
  if (!dir) return NULL;
  CHECK_INT(ox_l2_open(dir, o ? o : &k_fast, &l2), 0);
  return l2;
}

static void close_and_remove(ox_l2_t *l2) {
  ox_l2_close(l2);
  remove_dir(g_dir);
}

static void row_cb(void *arg, ox_slice_t v) {
  char *out = arg;
  memcpy(out, v.ptr, v.len);
  out[v.len] = 0;
}

typedef struct {
  int n;
  int64_t ts[64];
  uint32_t seq[64];
  char payload[64][16];
  int stop_after;
} events_t;

static int ev_cb(void *arg, const ox_l2_event_t *ev) {
  events_t *e = arg;
  if (e->n < 64) {
    e->ts[e->n] = ev->ts_ms;
    e->seq[e->n] = ev->seq;
    snprintf(e->payload[e->n], 16, "%.*s", (int)ev->payload.len, ev->payload.ptr);
  }
  e->n++;
  return e->stop_after && e->n >= e->stop_after;
}

static int scan(ox_l2_reader_t *r, const char *entity, int64_t since, int64_t until, events_t *e) {
  memset(e, 0, sizeof *e);
  return ox_l2_scan_events(r, S(entity), since, until, ev_cb, e);
}

/* ---- tests -------------------------------------------------------------------------------- */

TEST(test_rows) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  char out[64];
  size_t len = 0;
  CHECK_INT(ox_l2_get_row_copy(r, S("user:u1"), out, sizeof out, &len), OX_ENOT_FOUND);
  CHECK_INT(ox_l2_put_row(l2, S("user:u1"), "row-one", 7), 0);
  CHECK_INT(ox_l2_put_row(l2, S("user:u2"), "row-two", 7), 0);
  CHECK_INT(ox_l2_put_row(l2, S("user:u1"), "row-one-v2", 10), 0); /* later op wins */
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(ox_l2_get_row_copy(r, S("user:u1"), out, sizeof out, &len), 0);
  CHECK_INT(len, 10);
  CHECK_MEM(out, "row-one-v2", 10);
  CHECK_INT(ox_l2_get_row_copy(r, S("user:u1"), out, 3, &len), OX_ETOO_LARGE);
  CHECK_INT(len, 10);
  char view[64] = {0};
  CHECK_INT(ox_l2_get_row(r, S("user:u2"), row_cb, view), 0);
  CHECK_STR(view, "row-two");
  /* one snapshot for several reads */
  CHECK_INT(ox_l2_read_begin(r), 0);
  CHECK_INT(ox_l2_read_begin(r), OX_EINVALID);
  CHECK_INT(ox_l2_get_row(r, S("user:u1"), row_cb, view), 0);
  CHECK_INT(ox_l2_get_row(r, S("user:u3"), row_cb, view), OX_ENOT_FOUND);
  ox_l2_read_end(r);
  CHECK_INT(ox_l2_del_row(l2, S("user:u1")), 0);
  CHECK_INT(ox_l2_del_row(l2, S("user:never")), 0); /* deleting nothing is fine */
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(ox_l2_get_row_copy(r, S("user:u1"), out, sizeof out, &len), OX_ENOT_FOUND);
  /* argument checks */
  static char big[OX_L2_MAX_VALUE + 1];
  char longkey[OX_L2_MAX_KEY + 2];
  memset(longkey, 'k', sizeof longkey);
  CHECK_INT(ox_l2_put_row(l2, S(""), "x", 1), OX_EINVALID);
  CHECK_INT(ox_l2_put_row(l2, ox_slice(longkey, OX_L2_MAX_KEY + 1), "x", 1), OX_ETOO_LARGE);
  CHECK_INT(ox_l2_put_row(l2, ox_slice(longkey, OX_L2_MAX_KEY), "x", 1), 0);
  CHECK_INT(ox_l2_put_row(l2, S("k"), big, sizeof big), OX_ETOO_LARGE);
  CHECK_INT(ox_l2_append_event(l2, ox_slice(longkey, OX_L2_MAX_ENTITY + 1), 1, "x", 1),
            OX_ETOO_LARGE);
  CHECK_INT(ox_l2_append_event(l2, ox_slice(longkey, OX_L2_MAX_ENTITY), 1, "x", 1), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  events_t e = {.n = 0};
  CHECK_INT(ox_l2_scan_events(r, ox_slice(longkey, OX_L2_MAX_ENTITY), 0, 9, ev_cb, &e), 1);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_events) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  /* "u1" and "u12": a prefix of each other, must not mix; ts equal, negative, out of order */
  CHECK_INT(ox_l2_append_event(l2, S("u1"), 300, "c", 1), 0);
  CHECK_INT(ox_l2_append_event(l2, S("u12"), 150, "x", 1), 0);
  CHECK_INT(ox_l2_append_event(l2, S("u1"), 100, "a", 1), 0);
  CHECK_INT(ox_l2_append_event(l2, S("u1"), 200, "b0", 2), 0);
  CHECK_INT(ox_l2_flush(l2), 0); /* the equal-ts run spans two transactions */
  CHECK_INT(ox_l2_append_event(l2, S("u1"), 200, "b1", 2), 0);
  CHECK_INT(ox_l2_append_event(l2, S("u1"), 200, "b2", 2), 0);
  CHECK_INT(ox_l2_append_event(l2, S("u1"), -5, "neg", 3), 0);
  CHECK_INT(ox_l2_append_event(l2, S("u"), 200, "y", 1), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  events_t e;
  CHECK_INT(scan(r, "u1", INT64_MIN, INT64_MAX, &e), 6);
  const int64_t ts[] = {-5, 100, 200, 200, 200, 300};
  const char *pl[] = {"neg", "a", "b0", "b1", "b2", "c"};
  const uint32_t seq[] = {0, 0, 0, 1, 2, 0};
  for (int i = 0; i < 6 && i < e.n; i++) {
    CHECK_INT(e.ts[i], ts[i]);
    CHECK_STR(e.payload[i], pl[i]);
    CHECK_INT(e.seq[i], seq[i]);
  }
  /* inclusive bounds */
  CHECK_INT(scan(r, "u1", 100, 200, &e), 4);
  CHECK_INT(scan(r, "u1", 101, 199, &e), 0);
  CHECK_INT(scan(r, "u1", 200, 200, &e), 3);
  CHECK_INT(scan(r, "u1", 301, INT64_MAX, &e), 0);
  CHECK_INT(scan(r, "u1", 300, 100, &e), 0); /* empty range */
  CHECK_INT(scan(r, "u12", INT64_MIN, INT64_MAX, &e), 1);
  CHECK_STR(e.payload[0], "x");
  CHECK_INT(scan(r, "u", INT64_MIN, INT64_MAX, &e), 1);
  CHECK_INT(scan(r, "u2", INT64_MIN, INT64_MAX, &e), 0);
  CHECK_INT(scan(r, "", INT64_MIN, INT64_MAX, &e), 0);
  /* early stop: the callback's nonzero return ends the scan */
  memset(&e, 0, sizeof e);
  e.stop_after = 2;
  CHECK_INT(ox_l2_scan_events(r, S("u1"), INT64_MIN, INT64_MAX, ev_cb, &e), 2);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_restart) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  char dir[256];
  snprintf(dir, sizeof dir, "%s", g_dir);
  for (int i = 0; i < 1000; i++) {
    char k[32], v[32];
    snprintf(k, sizeof k, "user:%d", i);
    snprintf(v, sizeof v, "value-%d", i);
    CHECK_INT(ox_l2_put_row(l2, S(k), v, strlen(v)), 0);
    CHECK_INT(ox_l2_append_event(l2, S("card:1"), 1000 + i / 10, v, strlen(v)), 0);
  }
  ox_l2_close(l2); /* no flush: close commits what is queued */
  l2 = NULL;
  ox_l2_opts_t o = {.sync = OX_L2_SYNC_FULL};
  CHECK_INT(ox_l2_open(dir, &o, &l2), 0);
  if (!l2) return;
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  int bad = 0;
  for (int i = 0; i < 1000; i++) {
    char k[32], v[32], out[32];
    size_t len = 0;
    snprintf(k, sizeof k, "user:%d", i);
    snprintf(v, sizeof v, "value-%d", i);
    bad += ox_l2_get_row_copy(r, S(k), out, sizeof out, &len) != 0 || len != strlen(v) ||
           memcmp(out, v, len) != 0;
  }
  CHECK_INT(bad, 0);
  events_t e;
  CHECK_INT(scan(r, "card:1", 1099, 1099, &e), 10);
  CHECK_STR(e.payload[9], "value-999");
  CHECK_INT(e.seq[9], 9);
  /* sequence numbers continue after the restart */
  CHECK_INT(ox_l2_append_event(l2, S("card:1"), 1099, "after", 5), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(scan(r, "card:1", 1099, 1099, &e), 11);
  CHECK_INT(e.seq[10], 10);
  CHECK_STR(e.payload[10], "after");
  CHECK_INT(scan(r, "card:1", INT64_MIN, INT64_MAX, &e), 1001);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

typedef struct {
  ox_l2_t *l2;
  int id;
  int errors;
} producer_t;

static void *producer(void *arg) {
  producer_t *p = arg;
  for (int i = 0; i < 2000; i++) {
    char k[32];
    snprintf(k, sizeof k, "p%d:%d", p->id, i);
    p->errors += ox_l2_put_row(p->l2, S(k), k, strlen(k)) != 0;
  }
  return NULL;
}

TEST(test_batched_writer) {
  ox_l2_opts_t o = k_fast;
  o.batch_max_ops = 100;
  o.batch_wait_ms = 20;
  ox_l2_t *l2 = open_fresh(&o);
  if (!l2) return;
  for (int i = 0; i < 1000; i++) {
    char k[32];
    snprintf(k, sizeof k, "k%d", i);
    CHECK_INT(ox_l2_put_row(l2, S(k), "v", 1), 0);
  }
  CHECK_INT(ox_l2_flush(l2), 0);
  ox_l2_stats_t st;
  ox_l2_stats(l2, &st);
  CHECK_INT(st.committed, 1000);
  CHECK_INT(st.enqueued, 1000);
  CHECK(st.batches >= 10 && st.batches <= 50); /* at most 100 per batch, and batched */
  CHECK_INT(st.queued, 0);
  /* concurrent producers, then one flush: everything is visible */
  enum { NP = 4 };
  producer_t p[NP];
  pthread_t t[NP];
  for (int i = 0; i < NP; i++) {
    p[i] = (producer_t){.l2 = l2, .id = i};
    CHECK_INT(pthread_create(&t[i], NULL, producer, &p[i]), 0);
  }
  for (int i = 0; i < NP; i++) {
    pthread_join(t[i], NULL);
    CHECK_INT(p[i].errors, 0);
  }
  CHECK_INT(ox_l2_flush(l2), 0);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  char out[32];
  size_t len;
  CHECK_INT(ox_l2_get_row_copy(r, S("p3:1999"), out, sizeof out, &len), 0);
  CHECK_INT(ox_l2_get_row_copy(r, S("p0:0"), out, sizeof out, &len), 0);
  ox_l2_stats(l2, &st);
  CHECK_INT(st.committed, 1000 + NP * 2000);
  CHECK(st.batches < st.committed / 10);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_queue_full) {
  ox_l2_opts_t o = k_fast;
  o.queue_max_ops = 10;
  o.batch_max_ops = 1000;
  o.batch_wait_ms = 2000; /* the writer lingers while the queue fills */
  ox_l2_t *l2 = open_fresh(&o);
  if (!l2) return;
  int refused = 0;
  for (int i = 0; i < 20; i++) refused += ox_l2_put_row(l2, S("k"), "v", 1) == OX_EUNAVAILABLE;
  CHECK_INT(refused, 10);
  CHECK_INT(ox_l2_flush(l2), 0); /* a barrier is never refused, and ends the lingering */
  ox_l2_stats_t st;
  ox_l2_stats(l2, &st);
  CHECK_INT(st.rejected, 10);
  CHECK_INT(st.committed, 10);
  close_and_remove(l2);
}

TEST(test_map_full) {
  ox_l2_opts_t o = k_fast;
  o.map_size = 256 << 10;
  o.map_initial = 128 << 10; /* it grows once, then is full */
  ox_l2_t *l2 = open_fresh(&o);
  if (!l2) return;
  CHECK_INT(ox_l2_put_row(l2, S("first"), "kept", 4), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  static char v[100000];
  for (int i = 0; i < 5; i++) {
    char k[16];
    snprintf(k, sizeof k, "big%d", i);
    CHECK_INT(ox_l2_put_row(l2, S(k), v, sizeof v), 0);
  }
  CHECK_INT(ox_l2_flush(l2), OX_ESTORE_FULL); /* MDB_MAP_FULL at map_size, reported once */
  CHECK_INT(ox_l2_flush(l2), 0);
  ox_l2_stats_t st;
  ox_l2_stats(l2, &st);
  CHECK(st.failed > 0);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  char out[8];
  size_t len;
  CHECK_INT(ox_l2_get_row_copy(r, S("first"), out, sizeof out, &len), 0);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

typedef struct {
  ox_l2_reader_t *r;
  int errors, hits;
} reader_arg_t;

static void *reader_main(void *arg) {
  reader_arg_t *a = arg;
  for (int i = 0; i < 5000; i++) {
    char k[32], out[32];
    size_t len;
    snprintf(k, sizeof k, "k%d", i % 500);
    int rc = ox_l2_get_row_copy(a->r, S(k), out, sizeof out, &len);
    if (rc == 0)
      a->hits++;
    else if (rc != OX_ENOT_FOUND)
      a->errors++;
    events_t e;
    if (scan(a->r, "ent", INT64_MIN, INT64_MAX, &e) < 0) a->errors++;
  }
  return NULL;
}

TEST(test_readers) {
  ox_l2_opts_t o = k_fast;
  o.max_readers = 4;
  ox_l2_t *l2 = open_fresh(&o);
  if (!l2) return;
  ox_l2_reader_t *r[5] = {0};
  for (int i = 0; i < 4; i++) CHECK_INT(ox_l2_reader_open(l2, &r[i]), 0);
  CHECK_INT(ox_l2_reader_open(l2, &r[4]), OX_EUNAVAILABLE); /* slots are taken at open */
  /* 4 threads read while the writer writes: no slot errors, no other errors */
  reader_arg_t a[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (reader_arg_t){.r = r[i]};
    CHECK_INT(pthread_create(&t[i], NULL, reader_main, &a[i]), 0);
  }
  for (int i = 0; i < 2000; i++) {
    char k[32];
    snprintf(k, sizeof k, "k%d", i % 500);
    ox_l2_put_row(l2, S(k), k, strlen(k));
    ox_l2_append_event(l2, S("ent"), i, "e", 1);
  }
  CHECK_INT(ox_l2_flush(l2), 0);
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    CHECK_INT(a[i].errors, 0);
  }
  for (int i = 0; i < 4; i++) ox_l2_reader_close(r[i]);
  CHECK_INT(ox_l2_reader_open(l2, &r[0]), 0); /* a closed reader gives its slot back */
  ox_l2_reader_close(r[0]);
  close_and_remove(l2);
}

/* ---- purges ------------------------------------------------------------------------------- */

static void append_run(ox_l2_t *l2, const char *ent, int64_t from, int64_t to) {
  int bad = 0;
  for (int64_t t = from; t <= to; t++) {
    char p[16];
    snprintf(p, sizeof p, "t%lld", (long long)t);
    bad += ox_l2_append_event(l2, S(ent), t, p, strlen(p)) != 0;
  }
  CHECK_INT(bad, 0);
}

/* Purges with cutoff and waits; returns the events deleted by it. */
static uint64_t purge(ox_l2_t *l2, int64_t cutoff) {
  ox_l2_stats_t a, b;
  ox_l2_stats(l2, &a);
  CHECK_INT(ox_l2_purge_before(l2, cutoff), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  ox_l2_stats(l2, &b);
  return b.purged - a.purged;
}

/* True if entity's events are exactly ts from..to, one each (with payloads "t<ts>"). */
static int has_run(ox_l2_reader_t *r, const char *ent, int64_t from, int64_t to) {
  events_t e;
  int n = scan(r, ent, INT64_MIN, INT64_MAX, &e);
  if (n != to - from + 1 || n > 64) return 0;
  for (int i = 0; i < n; i++) {
    char p[16];
    snprintf(p, sizeof p, "t%lld", (long long)(from + i));
    if (e.ts[i] != from + i || strcmp(e.payload[i], p) != 0) return 0;
  }
  return 1;
}

TEST(test_purge_anchor) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  append_run(l2, "a", 1, 10);
  CHECK_INT(ox_l2_put_row(l2, S("row"), "r", 1), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(purge(l2, 6), 4); /* 1..4; 5 is the newest before the cutoff: kept */
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  CHECK(has_run(r, "a", 5, 10));
  events_t e;
  CHECK_INT(scan(r, "a", INT64_MIN, 4, &e), 0);
  char out[4];
  size_t len;
  CHECK_INT(ox_l2_get_row_copy(r, S("row"), out, sizeof out, &len), 0); /* rows untouched */
  CHECK_INT(purge(l2, 6), 0); /* the same cutoff again: the anchor stays, nothing to delete */
  CHECK(has_run(r, "a", 5, 10));
  CHECK_INT(purge(l2, 8), 2); /* a later cutoff: 5 and 6 go, 7 is the new anchor */
  CHECK(has_run(r, "a", 7, 10));
  CHECK_INT(purge(l2, 100), 3); /* everything old: only the newest remains */
  CHECK(has_run(r, "a", 10, 10));
  ox_l2_stats_t st;
  ox_l2_stats(l2, &st);
  CHECK_INT(st.purged, 9);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_purge_all_old) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  append_run(l2, "old", -3, 20); /* negative times sort before positive ones */
  append_run(l2, "one", 7, 7);   /* a single old event is its own anchor */
  append_run(l2, "new", 50, 52);
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(purge(l2, 30), 23);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  CHECK(has_run(r, "old", 20, 20));
  CHECK(has_run(r, "one", 7, 7));
  CHECK(has_run(r, "new", 50, 52));
  CHECK_INT(purge(l2, 30), 0);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_purge_equal_ts) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  CHECK_INT(ox_l2_append_event(l2, S("eq"), 1, "a", 1), 0);
  CHECK_INT(ox_l2_append_event(l2, S("eq"), 3, "b0", 2), 0);
  CHECK_INT(ox_l2_append_event(l2, S("eq"), 3, "b1", 2), 0);
  CHECK_INT(ox_l2_flush(l2), 0); /* the equal-ts run spans two transactions */
  CHECK_INT(ox_l2_append_event(l2, S("eq"), 3, "b2", 2), 0);
  CHECK_INT(ox_l2_append_event(l2, S("eq"), 2, "c", 1), 0);
  CHECK_INT(ox_l2_append_event(l2, S("eq"), 5, "d0", 2), 0);
  CHECK_INT(ox_l2_append_event(l2, S("eq"), 5, "d1", 2), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(purge(l2, 5), 4); /* 1, 2, 3/0, 3/1; the anchor is 3/2, the last of the ts-3 run */
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  events_t e;
  CHECK_INT(scan(r, "eq", INT64_MIN, INT64_MAX, &e), 3);
  CHECK_INT(e.ts[0], 3);
  CHECK_INT(e.seq[0], 2);
  CHECK_STR(e.payload[0], "b2");
  CHECK_INT(e.ts[1], 5); /* events at the cutoff itself are not before it */
  CHECK_STR(e.payload[1], "d0");
  CHECK_STR(e.payload[2], "d1");
  CHECK_INT(purge(l2, 6), 2); /* 3/2 and 5/0 go; 5/1 is the anchor */
  CHECK_INT(scan(r, "eq", INT64_MIN, INT64_MAX, &e), 1);
  CHECK_INT(e.seq[0], 1);
  CHECK_STR(e.payload[0], "d1");
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_purge_reserved) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  append_run(l2, "~entities", 1, 40); /* the server's index: old times, must all survive */
  append_run(l2, "~", 1, 3);
  append_run(l2, "x~", 1, 3); /* '~' only at the start counts */
  append_run(l2, "~x", 100, 101);
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(purge(l2, 50), 2);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  CHECK(has_run(r, "~entities", 1, 40));
  CHECK(has_run(r, "~", 1, 3));
  CHECK(has_run(r, "x~", 3, 3));
  CHECK(has_run(r, "~x", 100, 101));
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_purge_prefix_entities) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  /* "u", "u1", "u12": prefixes of each other, each with its own anchor; interleaved writes */
  for (int64_t t = 1; t <= 9; t++) {
    if (t <= 5) append_run(l2, "u1", t, t);
    if (t >= 2) append_run(l2, "u12", t, t);
    if (t <= 3) append_run(l2, "u", t, t);
  }
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(purge(l2, 6), 4 + 3 + 2);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  CHECK(has_run(r, "u1", 5, 5));
  CHECK(has_run(r, "u12", 5, 9));
  CHECK(has_run(r, "u", 3, 3));
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_purge_chunks) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  /* More than 3 purge transactions (10,000 deletions each), with boundaries inside one
   * entity's long run and among the small ones. Key order: entities of 2 bytes (e0..e9), then
   * of 3 ("big", e10..e39, "~ix"). */
  enum { NE = 40, EV = 400, CUT = 300, BIG = 25000 };
  for (int en = 0; en < NE; en++) {
    char ent[16];
    snprintf(ent, sizeof ent, "e%d", en);
    int bad = 0;
    for (int i = 0; i < EV; i++) bad += ox_l2_append_event(l2, S(ent), i, "p", 1) != 0;
    CHECK_INT(bad, 0);
  }
  int bad = 0;
  for (int i = 0; i < BIG; i++) bad += ox_l2_append_event(l2, S("big"), i / 100, "b", 1) != 0;
  for (int i = 0; i < 5; i++) bad += ox_l2_append_event(l2, S("big"), 1000, "n", 1) != 0;
  for (int i = 0; i < 50; i++) bad += ox_l2_append_event(l2, S("~ix"), i, "i", 1) != 0;
  CHECK_INT(bad, 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  const uint64_t want = NE * (CUT - 1) + (BIG - 1);
  CHECK_INT(purge(l2, CUT), want);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  events_t e;
  int wrong = 0;
  for (int en = 0; en < NE; en++) {
    char ent[16];
    snprintf(ent, sizeof ent, "e%d", en);
    wrong += scan(r, ent, INT64_MIN, INT64_MAX, &e) != EV - CUT + 1 || e.ts[0] != CUT - 1 ||
             e.ts[1] != CUT || e.ts[63] != CUT + 62;
  }
  CHECK_INT(wrong, 0);
  CHECK_INT(scan(r, "big", INT64_MIN, INT64_MAX, &e), 6);
  CHECK_INT(e.ts[0], (BIG - 1) / 100); /* the last of the ts-249 run (seq 0..99) */
  CHECK_INT(e.seq[0], 99);
  CHECK_STR(e.payload[0], "b");
  CHECK_INT(e.ts[1], 1000);
  CHECK_INT(e.ts[5], 1000);
  CHECK_INT(scan(r, "~ix", INT64_MIN, INT64_MAX, &e), 50);
  CHECK_INT(purge(l2, CUT), 0);
  ox_l2_stats_t st;
  ox_l2_stats(l2, &st);
  CHECK_INT(st.purged, want);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST(test_purge_chunk_edges) {
  /* "u" with 10,000, 10,001 and 20,001 deletions to make, then "v" with one: the first
   * transaction fills up just as u's run ends (it stops at v's pending event); stops with u's
   * anchor as the next key; two stops inside one run */
  const int olds[] = {10001, 10002, 20002};
  for (size_t c = 0; c < sizeof olds / sizeof olds[0]; c++) {
    ox_l2_t *l2 = open_fresh(NULL);
    if (!l2) return;
    int bad = 0;
    for (int i = 0; i < olds[c]; i++) bad += ox_l2_append_event(l2, S("u"), i, "o", 1) != 0;
    bad += ox_l2_append_event(l2, S("u"), olds[c] + 10, "n", 1) != 0;
    bad += ox_l2_append_event(l2, S("v"), 0, "v0", 2) != 0;
    bad += ox_l2_append_event(l2, S("v"), 1, "v1", 2) != 0;
    CHECK_INT(bad, 0);
    CHECK_INT(ox_l2_flush(l2), 0);
    CHECK_INT(purge(l2, olds[c]), (olds[c] - 1) + 1); /* u's, and v's first */
    ox_l2_reader_t *r = NULL;
    CHECK_INT(ox_l2_reader_open(l2, &r), 0);
    events_t e;
    CHECK_INT(scan(r, "u", INT64_MIN, INT64_MAX, &e), 2);
    CHECK_INT(e.ts[0], olds[c] - 1);
    CHECK_INT(e.ts[1], olds[c] + 10);
    CHECK_INT(scan(r, "v", INT64_MIN, INT64_MAX, &e), 1);
    CHECK_STR(e.payload[0], "v1");
    ox_l2_reader_close(r);
    close_and_remove(l2);
  }
}

TEST(test_periodic_purge) {
  ox_l2_opts_t o = k_fast;
  o.retention_ms = 3600000;
  o.purge_every_ms = 20;
  ox_l2_t *l2 = open_fresh(&o);
  if (!l2) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  CHECK_INT(ox_l2_append_event(l2, S("u"), now - 9000000, "oldest", 6), 0);
  CHECK_INT(ox_l2_append_event(l2, S("u"), now - 7200000, "old", 3), 0);
  CHECK_INT(ox_l2_append_event(l2, S("u"), now - 60000, "recent", 6), 0);
  CHECK_INT(ox_l2_append_event(l2, S("~idx"), now - 9000000, "index", 5), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  ox_l2_stats_t st = {0};
  /* keep the writer busy meanwhile: the periodic purge must not wait for an idle queue */
  for (int i = 0; i < 2000 && st.purged == 0; i++) {
    for (int j = 0; j < 20; j++) ox_l2_put_row(l2, S("busy"), "x", 1);
    usleep(1000);
    ox_l2_stats(l2, &st);
  }
  CHECK_INT(st.purged, 1);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  events_t e;
  CHECK_INT(scan(r, "u", INT64_MIN, INT64_MAX, &e), 2);
  CHECK_STR(e.payload[0], "old"); /* the anchor */
  CHECK_STR(e.payload[1], "recent");
  CHECK_INT(scan(r, "~idx", INT64_MIN, INT64_MAX, &e), 1);
  usleep(100000); /* later periodic purges find nothing more */
  ox_l2_stats(l2, &st);
  CHECK_INT(st.purged, 1);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

/* ---- velocity from a 24 h scan (the serving path) ------------------------------------------ */

typedef struct {
  ox_feat_event_t ev[128];
  size_t n;
  int bad;
} collect_t;

static int collect(void *arg, const ox_l2_event_t *ev) {
  collect_t *c = arg;
  if (c->n == 128 || ox_feat_event_decode(ev->payload.ptr, ev->payload.len, &c->ev[c->n])) {
    c->bad++;
    return 1;
  }
  c->n++;
  return 0;
}

TEST(test_velocity_from_scan) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  const int64_t t = 1700000000000LL;
  /* 60 events, one every 30 minutes back from t: 48 in the last 24 h (t - 24h excluded) */
  for (int i = 59; i >= 0; i--) {
    ox_feat_event_t ev = {t - (int64_t)i * 1800000, 10.0 + i, (uint64_t)(i % 7)};
    unsigned char b[OX_FEAT_EVENT_BYTES];
    ox_feat_event_encode(&ev, b);
    CHECK_INT(ox_l2_append_event(l2, S("card:9"), ev.ts_ms, b, sizeof b), 0);
  }
  CHECK_INT(ox_l2_flush(l2), 0);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  collect_t c = {.n = 0};
  CHECK_INT(ox_l2_scan_events(r, S("card:9"), t - OX_FEAT_W_24H + 1, t, collect, &c), 48);
  CHECK_INT(c.bad, 0);
  float f[OX_FEAT_VELOCITY_N];
  CHECK_INT(ox_feat_velocity(c.ev, c.n, t, -1.0f, f), 0);
  CHECK(f[0] == 1.0f && f[1] == 2.0f && f[2] == 48.0f);
  CHECK(f[3] == 10.0f && f[4] == 21.0f);
  CHECK(f[5] == (float)(48 * 10 + 47 * 48 / 2)); /* 10 + 11 + ... + 57 */
  CHECK(f[6] == 7.0f);
  CHECK(f[7] == 0.0f);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

static int row_exists(ox_l2_t *l2, const char *key) {
  ox_l2_reader_t *r = NULL;
  if (ox_l2_reader_open(l2, &r)) return -1;
  char out[8];
  size_t len;
  int rc = ox_l2_get_row_copy(r, S(key), out, sizeof out, &len);
  ox_l2_reader_close(r);
  return rc == OX_ENOT_FOUND ? 0 : rc == 0 || rc == OX_ETOO_LARGE ? 1 : rc;
}

TEST(test_group_grows_then_full) {
  ox_l2_opts_t o = k_fast;
  o.map_size = 4 << 20;
  o.map_initial = 256 << 10;
  ox_l2_t *l2 = open_fresh(&o);
  if (!l2) return;
  uint64_t used, map, max;
  ox_l2_usage(l2, &used, &map, &max);
  CHECK_INT(map, 256 << 10);
  CHECK_INT(max, 4 << 20);
  CHECK(used > 0 && used <= map);
  static char v[100000];
  ox_l2_group_t *g = NULL;
  CHECK_INT(ox_l2_group_create(&g), 0);
  if (!g) return;
  /* 1.5 MB in one group: the map doubles (256K -> 512K -> 1M -> 2M) until it fits */
  for (int i = 0; i < 15; i++) {
    char k[16];
    snprintf(k, sizeof k, "a%d", i);
    CHECK_INT(ox_l2_group_put_row(g, S(k), v, sizeof v), 0);
  }
  CHECK_INT(ox_l2_group_len(g), 15);
  CHECK_INT(ox_l2_commit(l2, g), 0);
  CHECK_INT(row_exists(l2, "a0"), 1);
  CHECK_INT(row_exists(l2, "a14"), 1);
  ox_l2_usage(l2, &used, &map, &max);
  CHECK_INT(map, 2 << 20);
  CHECK(used > 1500000);
  ox_l2_group_destroy(g);
  /* 3 MB more cannot fit in 4 MiB: refused whole, the map at its maximum */
  CHECK_INT(ox_l2_group_create(&g), 0);
  for (int i = 0; i < 30; i++) {
    char k[16];
    snprintf(k, sizeof k, "b%d", i);
    CHECK_INT(ox_l2_group_put_row(g, S(k), v, sizeof v), 0);
    CHECK_INT(ox_l2_group_append_event(g, S("user:1"), 1000 + i, "e", 1), 0);
  }
  CHECK_INT(ox_l2_commit(l2, g), OX_ESTORE_FULL);
  ox_l2_group_destroy(g);
  CHECK_INT(row_exists(l2, "b0"), 0);
  CHECK_INT(row_exists(l2, "b29"), 0);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  collect_t c = {.n = 0};
  CHECK_INT(ox_l2_scan_events(r, S("user:1"), INT64_MIN, INT64_MAX, collect, &c), 0);
  ox_l2_reader_close(r);
  ox_l2_usage(l2, &used, &map, &max);
  CHECK_INT(map, 4 << 20);
  /* what fits still does, and flush is not disturbed by the group's error */
  CHECK_INT(ox_l2_put_row(l2, S("small"), "x", 1), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(row_exists(l2, "small"), 1);
  CHECK_INT(row_exists(l2, "a7"), 1);
  close_and_remove(l2);
}

TEST(test_group_ids) {
  ox_l2_t *l2 = open_fresh(NULL);
  if (!l2) return;
  ox_l2_group_t *g = NULL;
  CHECK_INT(ox_l2_group_create(&g), 0);
  if (!g) return;
  CHECK_INT(ox_l2_group_put_id(g, S(""), 5), OX_EINVALID);
  char longid[OX_L2_MAX_ID + 2];
  memset(longid, 'x', sizeof longid - 1);
  longid[sizeof longid - 1] = 0;
  CHECK_INT(ox_l2_group_put_id(g, S(longid), 5), OX_ETOO_LARGE);
  CHECK_INT(ox_l2_group_len(g), 0);
  CHECK_INT(ox_l2_commit(l2, g), 0); /* empty: nothing to do */
  CHECK_INT(ox_l2_group_put_id(g, S("ev-1"), 5000), 0);
  CHECK_INT(ox_l2_group_put_id(g, S("ev-2"), 9000), 0);
  CHECK_INT(ox_l2_group_put_row(g, S("r1"), "1", 1), 0);
  CHECK_INT(ox_l2_commit(l2, g), 0);
  ox_l2_group_destroy(g);
  ox_l2_reader_t *r = NULL;
  CHECK_INT(ox_l2_reader_open(l2, &r), 0);
  CHECK_INT(ox_l2_has_id(r, S("ev-1")), 1);
  CHECK_INT(ox_l2_has_id(r, S("ev-2")), 1);
  CHECK_INT(ox_l2_has_id(r, S("ev-3")), 0);
  CHECK_INT(ox_l2_has_id(r, S("ev-")), 0);
  /* a group repeating a stored id fails whole */
  CHECK_INT(ox_l2_group_create(&g), 0);
  CHECK_INT(ox_l2_group_put_row(g, S("r2"), "2", 1), 0);
  CHECK_INT(ox_l2_group_put_id(g, S("ev-3"), 5000), 0);
  CHECK_INT(ox_l2_group_put_id(g, S("ev-1"), 5000), 0);
  CHECK_INT(ox_l2_commit(l2, g), OX_EINVALID);
  ox_l2_group_destroy(g);
  CHECK_INT(row_exists(l2, "r2"), 0);
  CHECK_INT(ox_l2_has_id(r, S("ev-3")), 0);
  /* a purge forgets the ids whose time is below the cutoff, and only those */
  CHECK_INT(ox_l2_purge_before(l2, 6000), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(ox_l2_has_id(r, S("ev-1")), 0);
  CHECK_INT(ox_l2_has_id(r, S("ev-2")), 1);
  CHECK_INT(ox_l2_purge_before(l2, 9001), 0);
  CHECK_INT(ox_l2_flush(l2), 0);
  CHECK_INT(ox_l2_has_id(r, S("ev-2")), 0);
  ox_l2_reader_close(r);
  close_and_remove(l2);
}

TEST_MAIN(T(test_rows), T(test_events), T(test_restart), T(test_batched_writer), T(test_queue_full),
          T(test_map_full), T(test_readers), T(test_purge_anchor), T(test_purge_all_old),
          T(test_purge_equal_ts), T(test_purge_reserved), T(test_purge_prefix_entities),
          T(test_purge_chunks), T(test_purge_chunk_edges), T(test_periodic_purge),
          T(test_velocity_from_scan), T(test_group_grows_then_full), T(test_group_ids))
