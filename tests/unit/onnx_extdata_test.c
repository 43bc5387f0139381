/* onnx_extdata_test.c: the ONNX external-data scanner and checks (runtime/onnx_extdata.h):
 * tensors found wherever ONNX puts them (initializers, sparse initializers, node attributes,
 * subgraphs, functions), malformed and too-deep input refused, every prefix of a model handled,
 * input flush against a guard page, lexical location checks, and the file-system checks on a
 * temporary directory (missing, symlink out, directory, offset/length beyond the file). */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "runtime/onnx_extdata.h"
#include "test.h"

/* ---- a tiny protobuf writer ---- */
typedef struct {
  uint8_t b[8192];
  size_t n;
} pb_t;

static void pb_varint(pb_t *p, uint64_t v) {
  do {
    uint8_t c = v & 0x7f;
    v >>= 7;
    p->b[p->n++] = c | (v ? 0x80 : 0);
  } while (v);
}
static void pb_bytes(pb_t *p, unsigned field, const void *d, size_t n) {
  pb_varint(p, (uint64_t)field << 3 | 2);
  pb_varint(p, n);
  memcpy(p->b + p->n, d, n);
  p->n += n;
}
static void pb_str(pb_t *p, unsigned field, const char *s) {
  pb_bytes(p, field, s, strlen(s));
}
static void pb_msg(pb_t *p, unsigned field, const pb_t *m) {
  pb_bytes(p, field, m->b, m->n);
}
static void pb_int(pb_t *p, unsigned field, uint64_t v) {
  pb_varint(p, (uint64_t)field << 3);
  pb_varint(p, v);
}
static void entry(pb_t *t, const char *k, const char *v) {
  pb_t e = {.n = 0};
  pb_str(&e, 1, k);
  pb_str(&e, 2, v);
  pb_msg(t, 13, &e);
}
/* A FLOAT tensor of dims {n} with external data at location (offset/length may be NULL). */
static void ext_tensor(pb_t *t, const char *name, uint64_t n, const char *loc, const char *off,
                       const char *len) {
  t->n = 0;
  pb_int(t, 1, n);
  pb_int(t, 2, 1);
  pb_str(t, 8, name);
  entry(t, "location", loc);
  if (off) entry(t, "offset", off);
  if (len) entry(t, "length", len);
  pb_int(t, 14, 1);
}

typedef struct {
  int n;
  char names[8][32];
  ox_onnx_ext_t last;
} seen_t;

static int collect(void *ctx, const ox_onnx_ext_t *e, char *err, size_t cap) {
  seen_t *s = ctx;
  if (s->n < 8) snprintf(s->names[s->n], 32, "%.*s", (int)e->name.len, e->name.ptr);
  s->n++;
  s->last = *e;
  return 0;
}

static int scan(const pb_t *m, seen_t *s, char *err) {
  memset(s, 0, sizeof *s);
  return ox_onnx_extdata_scan(m->b, m->n, collect, s, err, 256);
}

/* model { graph { initializer W; node { attribute { g { initializer SUB } t C } };
 * sparse_initializer { values V } } functions { node { attribute { tensors F } } } } */
static void build_model(pb_t *model) {
  pb_t w, sub, subg, c, attr, node, v, sp, graph, f, fattr, fnode, fn;
  ext_tensor(&w, "W", 4, "w.bin", "0", "16");
  ext_tensor(&sub, "SUB", 2, "w.bin", "16", NULL);
  subg.n = 0;
  pb_msg(&subg, 5, &sub);
  ext_tensor(&c, "C", 1, "c.bin", NULL, NULL);
  attr.n = 0;
  pb_str(&attr, 1, "then_branch");
  pb_msg(&attr, 6, &subg);
  pb_msg(&attr, 5, &c);
  node.n = 0;
  pb_str(&node, 4, "If");
  pb_msg(&node, 5, &attr);
  ext_tensor(&v, "V", 3, "sparse.bin", NULL, "12");
  sp.n = 0;
  pb_msg(&sp, 1, &v);
  graph.n = 0;
  pb_msg(&graph, 5, &w);
  pb_msg(&graph, 1, &node);
  pb_msg(&graph, 15, &sp);
  ext_tensor(&f, "F", 1, "f.bin", NULL, NULL);
  fattr.n = 0;
  pb_msg(&fattr, 10, &f);
  fnode.n = 0;
  pb_msg(&fnode, 5, &fattr);
  fn.n = 0;
  pb_msg(&fn, 7, &fnode);
  model->n = 0;
  pb_int(model, 1, 8);
  pb_msg(model, 7, &graph);
  pb_msg(model, 25, &fn);
}

TEST(test_finds_every_place) {
  pb_t m;
  build_model(&m);
  seen_t s;
  char err[256] = "";
  CHECK_INT(scan(&m, &s, err), 0);
  CHECK_INT(s.n, 5);
  CHECK_STR(s.names[0], "W");
  CHECK_STR(s.names[1], "SUB");
  CHECK_STR(s.names[2], "C");
  CHECK_STR(s.names[3], "V");
  CHECK_STR(s.names[4], "F");
  CHECK_INT(s.last.has_expected, 1);
  CHECK_INT(s.last.expected, 4);
}

TEST(test_plain_model_and_rules) {
  pb_t m = {.n = 0}, g = {.n = 0}, t = {.n = 0};
  seen_t s;
  char err[256];
  pb_int(&t, 2, 1);
  pb_str(&t, 9, "\0\0\x80?");
  pb_msg(&g, 5, &t);
  pb_msg(&m, 7, &g);
  CHECK_INT(scan(&m, &s, err), 0);
  CHECK_INT(s.n, 0);
  /* EXTERNAL without a location */
  t.n = 0;
  pb_int(&t, 14, 1);
  g.n = m.n = 0;
  pb_msg(&g, 5, &t);
  pb_msg(&m, 7, &g);
  CHECK_INT(scan(&m, &s, err), OX_EINVALID);
  CHECK(strstr(err, "no location") != NULL);
  /* two locations */
  t.n = 0;
  entry(&t, "location", "a");
  entry(&t, "location", "b");
  g.n = m.n = 0;
  pb_msg(&g, 5, &t);
  pb_msg(&m, 7, &g);
  CHECK_INT(scan(&m, &s, err), OX_EINVALID);
  /* bad offset */
  ext_tensor(&t, "X", 1, "a", "-1", NULL);
  g.n = m.n = 0;
  pb_msg(&g, 5, &t);
  pb_msg(&m, 7, &g);
  CHECK_INT(scan(&m, &s, err), OX_EINVALID);
  /* a singular attribute tensor given twice (protobuf would merge the two) */
  pb_t a = {.n = 0}, nd = {.n = 0};
  ext_tensor(&t, "X", 1, "a", NULL, NULL);
  pb_msg(&a, 5, &t);
  pb_msg(&a, 5, &t);
  pb_msg(&nd, 5, &a);
  g.n = m.n = 0;
  pb_msg(&g, 1, &nd);
  pb_msg(&m, 7, &g);
  CHECK_INT(scan(&m, &s, err), OX_EINVALID);
}

TEST(test_malformed_and_prefixes) {
  pb_t m;
  build_model(&m);
  seen_t s;
  char err[256];
  for (size_t n = 0; n < m.n; n++) {
    int rc = ox_onnx_extdata_scan(m.b, n, collect, &s, err, sizeof err);
    CHECK(rc == 0 || rc == OX_EINVALID);
  }
  const uint8_t bad[][4] = {{0x00}, {0x3b, 0}, {0x3a, 0x05, 0}, {0xff, 0xff, 0xff, 0xff}};
  for (size_t i = 0; i < 4; i++)
    CHECK_INT(ox_onnx_extdata_scan(bad[i], i + 1, collect, &s, err, sizeof err), OX_EINVALID);
  /* nesting: graph { node { attribute { g { node ... } } } } deeper than the limit */
  static pb_t deep[2];
  pb_t *cur = &deep[0], *nxt = &deep[1];
  cur->n = 0;
  for (int i = 0; i < 40; i++) {
    pb_t a = {.n = 0}, nd = {.n = 0};
    pb_msg(&a, 6, cur);
    pb_msg(&nd, 5, &a);
    nxt->n = 0;
    pb_msg(nxt, 1, &nd);
    pb_t *tmp = cur;
    cur = nxt;
    nxt = tmp;
  }
  nxt->n = 0;
  pb_msg(nxt, 7, cur);
  CHECK_INT(ox_onnx_extdata_scan(nxt->b, nxt->n, collect, &s, err, sizeof err), OX_EDEPTH);
}

TEST(test_guard_page) {
  pb_t m;
  build_model(&m);
  long pg = sysconf(_SC_PAGESIZE);
  uint8_t *mem =
      mmap(NULL, (size_t)pg * 3, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(mem != MAP_FAILED);
  if (mem == MAP_FAILED) return;
  CHECK_INT(mprotect(mem + 2 * pg, (size_t)pg, PROT_NONE), 0);
  seen_t s;
  char err[256];
  for (size_t n = 0; n <= m.n; n++) {
    uint8_t *p = mem + 2 * pg - n;
    memcpy(p, m.b, n);
    int rc = ox_onnx_extdata_scan(p, n, collect, &s, err, sizeof err);
    CHECK(rc == 0 || rc == OX_EINVALID);
  }
  munmap(mem, (size_t)pg * 3);
}

TEST(test_location_lexical) {
  const char *good[] = {"w.bin", "sub/w.bin", "..w", "w..", "a/..b/c", "./w.bin"};
  const char *bad[] = {"",          "/etc/passwd", "..",   "../w",
                       "a/../../w", "a/..",        "x\ny", "*/_ORT_MEM_ADDR_/*"};
  const char *why;
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    CHECK_INT(ox_onnx_extdata_location_ok(ox_slice(good[i], strlen(good[i])), &why), 0);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK_INT(ox_onnx_extdata_location_ok(ox_slice(bad[i], strlen(bad[i])), &why), -1);
  CHECK_INT(ox_onnx_extdata_location_ok(ox_slice("a\0b", 3), &why), -1);
}

static void one_tensor_model(pb_t *m, const char *loc, const char *off, const char *len,
                             uint64_t dims) {
  pb_t t, g = {.n = 0};
  ext_tensor(&t, "T", dims, loc, off, len);
  pb_msg(&g, 5, &t);
  m->n = 0;
  pb_msg(m, 7, &g);
}

static int check(const char *dir, const char *loc, const char *off, const char *len, uint64_t dims,
                 char *err) {
  pb_t m;
  one_tensor_model(&m, loc, off, len, dims);
  err[0] = '\0';
  return ox_onnx_extdata_check(m.b, m.n, dir, err, 256);
}

TEST(test_file_checks) {
  char root[] = "/tmp/onnx_extdata_test.XXXXXX";
  CHECK(mkdtemp(root) != NULL);
  char dir[256], path[300], outside[300];
  snprintf(dir, sizeof dir, "%s/v1", root);
  CHECK_INT(mkdir(dir, 0700), 0);
  snprintf(path, sizeof path, "%s/w.bin", dir);
  int fd = open(path, O_CREAT | O_WRONLY, 0600);
  CHECK(fd >= 0 && write(fd, "0123456789abcdef", 16) == 16);
  close(fd);
  snprintf(outside, sizeof outside, "%s/secret", root);
  fd = open(outside, O_CREAT | O_WRONLY, 0600);
  CHECK(fd >= 0 && write(fd, "0123456789abcdef", 16) == 16);
  close(fd);
  snprintf(path, sizeof path, "%s/link", dir);
  CHECK_INT(symlink(outside, path), 0);
  snprintf(path, sizeof path, "%s/sub", dir);
  CHECK_INT(mkdir(path, 0700), 0);
  char err[256];
  CHECK_INT(check(dir, "w.bin", "0", "16", 4, err), 0);
  CHECK_INT(check(dir, "w.bin", "8", NULL, 2, err), 0);
  CHECK_INT(check(dir, "w.bin", "8", NULL, 3, err), OX_EINVALID); /* 12 bytes from 8 */
  CHECK(strstr(err, "length beyond") != NULL);
  CHECK_INT(check(dir, "w.bin", "17", "0", 0, err), OX_EINVALID);
  CHECK(strstr(err, "offset beyond") != NULL);
  CHECK_INT(check(dir, "w.bin", "0", "17", 4, err), OX_EINVALID);
  CHECK_INT(check(dir, "w.bin", "9223372036854775807", "9223372036854775807", 4, err), OX_EINVALID);
  CHECK_INT(check(dir, "link", NULL, NULL, 1, err), OX_EINVALID);
  CHECK_STR(err, "external data 'link': outside the model directory");
  CHECK_INT(check(dir, "../secret", NULL, NULL, 1, err), OX_EINVALID);
  CHECK_STR(err, "external data '../secret': outside the model directory");
  CHECK_INT(check(dir, outside, NULL, NULL, 1, err), OX_EINVALID);
  CHECK_INT(check(dir, "missing", NULL, NULL, 1, err), OX_EINVALID);
  CHECK(strstr(err, "file not found") != NULL);
  CHECK_INT(check(dir, "sub", NULL, NULL, 1, err), OX_EINVALID);
  CHECK(strstr(err, "not a regular file") != NULL);
  CHECK_INT(check(NULL, "w.bin", NULL, NULL, 1, err), OX_EINVALID);
  CHECK(strstr(err, "no directory") != NULL);
  unlink(path - 0);
  snprintf(path, sizeof path, "%s/link", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/sub", dir);
  rmdir(path);
  snprintf(path, sizeof path, "%s/w.bin", dir);
  unlink(path);
  rmdir(dir);
  unlink(outside);
  rmdir(root);
}

TEST_MAIN(T(test_finds_every_place), T(test_plain_model_and_rules), T(test_malformed_and_prefixes),
          T(test_guard_page), T(test_location_lexical), T(test_file_checks))
