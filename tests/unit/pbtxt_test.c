/* pbtxt_test.c: the protobuf text-format parser (proto/pbtxt.h): the syntax Triton's
 * config.pbtxt files use, the tree and lookups, every error with its line:column, the bounds,
 * and input placed flush against a guard page. */
#include "proto/pbtxt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"
#include "test.h"

static char err[256];

static int parse(const char *text, ox_pbtxt_doc_t *doc) {
  memset(err, 0, sizeof err);
  return ox_pbtxt_parse(text, strlen(text), doc, err, sizeof err);
}

static void expect_err(const char *text, const char *want, int line) {
  ox_pbtxt_doc_t doc;
  int rc = parse(text, &doc);
  if (rc != OX_EINVALID || strcmp(err, want)) {
    fprintf(stderr, "  FAIL %s:%d [%s]: %s\n    got rc %d \"%s\"\n    want \"%s\"\n", __FILE__,
            line, ox_t_current, text, rc, err, want);
    ox_t_failed_checks++;
  }
  ox_pbtxt_free(&doc);
}
#define EXPECT_ERR(text, want) expect_err((text), (want), __LINE__)

static const char triton_doc[] =
    "# from Triton's model_configuration.md\n"
    "name: \"mymodel\"\n"
    "platform: \"onnxruntime_onnx\"\n"
    "max_batch_size: 8\n"
    "input [\n"
    "  {\n"
    "    name: \"input0\"\n"
    "    data_type: TYPE_FP32\n"
    "    dims: [ 16 ]\n"
    "  },\n"
    "  {\n"
    "    name: \"input1\"\n"
    "    data_type: TYPE_FP32\n"
    "    dims: [ -1, 0x10 ]\n"
    "  }\n"
    "]\n"
    "output { name: 'output0' data_type: TYPE_FP32 dims: 16 dims: 2 }\n"
    "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
    "version_policy: { latest { num_versions: 2 } }\n"
    "dynamic_batching { preferred_batch_size: [ 4, 8 ]; max_queue_delay_microseconds: 100, }\n"
    "optimization < input_pinned_memory: { enable: true } >\n";

TEST(triton_config) {
  ox_pbtxt_doc_t doc;
  CHECK_INT(parse(triton_doc, &doc), 0);
  const ox_pbtxt_node_t *r = ox_pbtxt_root(&doc);
  const ox_pbtxt_node_t *n = ox_pbtxt_find(r, "name");
  CHECK(n && n->kind == OX_PBTXT_STRING && ox_slice_eq(n->text, "mymodel"));
  CHECK(n && n->line == 2 && n->col == 1);
  int64_t v = 0;
  n = ox_pbtxt_find(r, "max_batch_size");
  CHECK(n && !ox_pbtxt_int(n, &v) && v == 8);
  CHECK_INT(ox_pbtxt_count(r, "input"), 2);
  const ox_pbtxt_node_t *in1 = ox_pbtxt_find_next(ox_pbtxt_find(r, "input"));
  CHECK(in1 && in1->kind == OX_PBTXT_MESSAGE);
  CHECK(in1 && in1->line == 11 && in1->col == 3);
  const ox_pbtxt_node_t *d = ox_pbtxt_find(in1, "dims");
  CHECK(d && !ox_pbtxt_int(d, &v) && v == -1);
  d = d ? ox_pbtxt_find_next(d) : NULL;
  CHECK(d && !ox_pbtxt_int(d, &v) && v == 16);
  CHECK(d && !ox_pbtxt_find_next(d));
  n = ox_pbtxt_find(in1, "data_type");
  CHECK(n && n->kind == OX_PBTXT_IDENT && ox_slice_eq(n->text, "TYPE_FP32"));
  const ox_pbtxt_node_t *out = ox_pbtxt_find(r, "output");
  CHECK(out && ox_pbtxt_count(out, "dims") == 2);
  n = ox_pbtxt_find(out, "name");
  CHECK(n && ox_slice_eq(n->text, "output0"));
  const ox_pbtxt_node_t *vp = ox_pbtxt_find(ox_pbtxt_find(r, "version_policy"), "latest");
  n = ox_pbtxt_find(vp, "num_versions");
  CHECK(n && !ox_pbtxt_int(n, &v) && v == 2);
  const ox_pbtxt_node_t *db = ox_pbtxt_find(r, "dynamic_batching");
  CHECK_INT(ox_pbtxt_count(db, "preferred_batch_size"), 2);
  n = ox_pbtxt_find(db, "max_queue_delay_microseconds");
  CHECK(n && !ox_pbtxt_int(n, &v) && v == 100);
  n = ox_pbtxt_find(ox_pbtxt_find(ox_pbtxt_find(r, "optimization"), "input_pinned_memory"),
                    "enable");
  CHECK(n && n->kind == OX_PBTXT_IDENT && ox_slice_eq(n->text, "true"));
  CHECK(!ox_pbtxt_find(r, "nope"));
  CHECK(!ox_pbtxt_find(n, "x")); /* a scalar has no fields */
  ox_pbtxt_free(&doc);
}

TEST(strings_and_escapes) {
  ox_pbtxt_doc_t doc;
  CHECK_INT(parse("s: \"a\\n\\t\\\\\\'\\\"\\x41\\101\\0z\" t: 'x' \"y\" 'z' e: ''", &doc), 0);
  const ox_pbtxt_node_t *s = ox_pbtxt_find(ox_pbtxt_root(&doc), "s");
  CHECK(s && s->text.len == 10 && !memcmp(s->text.ptr, "a\n\t\\'\"AA\0z", 10));
  const ox_pbtxt_node_t *t = ox_pbtxt_find(ox_pbtxt_root(&doc), "t");
  CHECK(t && ox_slice_eq(t->text, "xyz"));
  const ox_pbtxt_node_t *e = ox_pbtxt_find(ox_pbtxt_root(&doc), "e");
  CHECK(e && e->kind == OX_PBTXT_STRING && e->text.len == 0);
  ox_pbtxt_free(&doc);
}

TEST(numbers) {
  ox_pbtxt_doc_t doc;
  CHECK_INT(parse("a: 0 b: -9223372036854775808 c: 9223372036854775807 d: 0xFF e: 1.5e-3 "
                  "f: -inf g: 9223372036854775808 h: - 4 i: 1e+5",
                  &doc),
            0);
  const ox_pbtxt_node_t *r = ox_pbtxt_root(&doc);
  int64_t v = 1;
  CHECK(!ox_pbtxt_int(ox_pbtxt_find(r, "a"), &v) && v == 0);
  CHECK(!ox_pbtxt_int(ox_pbtxt_find(r, "b"), &v) && v == INT64_MIN);
  CHECK(!ox_pbtxt_int(ox_pbtxt_find(r, "c"), &v) && v == INT64_MAX);
  CHECK(!ox_pbtxt_int(ox_pbtxt_find(r, "d"), &v) && v == 255);
  const ox_pbtxt_node_t *e = ox_pbtxt_find(r, "e");
  CHECK(e && e->kind == OX_PBTXT_NUMBER && ox_slice_eq(e->text, "1.5e-3"));
  CHECK_INT(ox_pbtxt_int(e, &v), OX_EINVALID);
  const ox_pbtxt_node_t *f = ox_pbtxt_find(r, "f");
  CHECK(f && f->kind == OX_PBTXT_NUMBER && ox_slice_eq(f->text, "-inf"));
  CHECK_INT(ox_pbtxt_int(ox_pbtxt_find(r, "g"), &v), OX_EINVALID); /* overflow */
  CHECK(!ox_pbtxt_int(ox_pbtxt_find(r, "h"), &v) && v == -4);
  const ox_pbtxt_node_t *i = ox_pbtxt_find(r, "i");
  CHECK(i && ox_slice_eq(i->text, "1e+5"));
  ox_pbtxt_free(&doc);
}

TEST(empty_and_comments) {
  ox_pbtxt_doc_t doc;
  CHECK_INT(parse("", &doc), 0);
  CHECK(ox_pbtxt_root(&doc)->child == NULL);
  ox_pbtxt_free(&doc);
  CHECK_INT(parse("# only a comment", &doc), 0);
  ox_pbtxt_free(&doc);
  CHECK_INT(parse("a {} b: [] c <>  # trailing", &doc), 0);
  const ox_pbtxt_node_t *r = ox_pbtxt_root(&doc);
  CHECK(ox_pbtxt_find(r, "a") && ox_pbtxt_find(r, "a")->kind == OX_PBTXT_MESSAGE);
  CHECK(!ox_pbtxt_find(r, "b")); /* an empty list adds no field */
  CHECK(ox_pbtxt_find(r, "c") && !ox_pbtxt_find(r, "c")->child);
  ox_pbtxt_free(&doc);
}

TEST(errors_name_line_and_column) {
  EXPECT_ERR("a: 1\nb 2", "2:3: expected ':' or '{' after 'b'");
  EXPECT_ERR("a: \"x", "1:4: unterminated string");
  EXPECT_ERR("a: \"x\ny\"", "1:4: unterminated string");
  EXPECT_ERR("a {\n  b: 1\n", "3:1: expected '}' before the end");
  EXPECT_ERR("a: }", "1:4: expected a value");
  EXPECT_ERR("}", "1:1: expected a field name");
  EXPECT_ERR("a: [1 2]", "1:7: expected ',' or ']' in the list 'a'");
  EXPECT_ERR("[ext.field]: 1", "1:1: extension and Any fields are not supported");
  EXPECT_ERR("a: \"\\q\"", "1:5: unknown escape '\\q'");
  EXPECT_ERR("a: \"\\x\"", "1:5: \\x needs a hex digit");
  EXPECT_ERR("a: \"\\777\"", "1:5: octal escape above \\377");
  EXPECT_ERR("a: 1 >", "1:6: expected a field name");
  EXPECT_ERR("a: -", "1:4: expected a value");
}

TEST(depth_bound) {
  char text[512] = "";
  for (int i = 0; i < OX_PBTXT_MAX_DEPTH; i++) strcat(text, "a{");
  for (int i = 0; i < OX_PBTXT_MAX_DEPTH; i++) strcat(text, "}");
  ox_pbtxt_doc_t doc;
  CHECK_INT(parse(text, &doc), 0);
  ox_pbtxt_free(&doc);
  strcpy(text, "");
  for (int i = 0; i <= OX_PBTXT_MAX_DEPTH; i++) strcat(text, "a{");
  char want[64];
  snprintf(want, sizeof want, "1:%d: messages nested deeper than %d", 2 * OX_PBTXT_MAX_DEPTH + 2,
           OX_PBTXT_MAX_DEPTH);
  EXPECT_ERR(text, want);
}

TEST(node_and_size_bounds) {
  size_t n = OX_PBTXT_MAX_NODES; /* root + n-1 fields is the limit */
  char *text = malloc(n * 4 + 1);
  CHECK(text != NULL);
  if (!text) return;
  for (size_t i = 0; i < n; i++) memcpy(text + i * 4, "a:1 ", 4);
  ox_pbtxt_doc_t doc;
  CHECK_INT(ox_pbtxt_parse(text, (n - 1) * 4, &doc, err, sizeof err), 0);
  CHECK_INT(doc.num_nodes, n);
  ox_pbtxt_free(&doc);
  CHECK_INT(ox_pbtxt_parse(text, n * 4, &doc, err, sizeof err), OX_EINVALID);
  CHECK(strstr(err, "more than 65536 fields") != NULL);
  free(text);
  CHECK_INT(ox_pbtxt_parse("", OX_PBTXT_MAX_BYTES + 1, &doc, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "1:1: larger than 1048576 bytes");
}

/* Input ending flush against an unmapped page: any read past it faults. */
TEST(guard_page) {
  long pg = sysconf(_SC_PAGESIZE);
  char *mem =
      mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(mem != MAP_FAILED);
  if (mem == MAP_FAILED) return;
  CHECK_INT(mprotect(mem + pg, (size_t)pg, PROT_NONE), 0);
  const char *cases[] = {"a: 12", "a: \"x", "a: 'x\\", "a { b: c",  "a: -",     "a: 0x",
                         "# c",   "a: [1,", "a: 1e",   "a: \"\\x4", "a: \"\\12"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t len = strlen(cases[i]);
    char *p = mem + pg - len;
    memcpy(p, cases[i], len);
    ox_pbtxt_doc_t doc;
    int rc = ox_pbtxt_parse(p, len, &doc, err, sizeof err);
    CHECK(rc == 0 || rc == OX_EINVALID);
    ox_pbtxt_free(&doc);
  }
  munmap(mem, (size_t)pg * 2);
}

TEST_MAIN(T(triton_config), T(strings_and_escapes), T(numbers), T(empty_and_comments),
          T(errors_name_line_and_column), T(depth_bound), T(node_and_size_bounds), T(guard_page))
