/* binary_ext_test.c: the binary tensor extension's framing (src/proto/binary_ext.c): header
 * values, splitting a body into JSON header and binary section, the alignment offset, and
 * values placed flush against a guard page. */
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"
#include "proto/binary_ext.h"
#include "test.h"

static int parse1(const char *v, ox_binext_t *f, const char **why) {
  ox_slice_t s = ox_slice(v, strlen(v));
  return ox_binext_parse(&s, 1, f, why);
}

TEST(test_absent_header_frames_nothing) {
  ox_binext_t f = {.present = 1, .header_len = 7};
  const char *why = NULL;
  CHECK_INT(ox_binext_parse(NULL, 0, &f, &why), 0);
  CHECK_INT(f.present, 0);
  char body[] = "{\"inputs\":[]}";
  ox_slice_t json, bin;
  char err[128];
  CHECK_INT(ox_binext_split(&f, ox_slice(body, sizeof body - 1), &json, &bin, err, sizeof err), 0);
  CHECK(json.ptr == body && json.len == sizeof body - 1);
  CHECK_INT(bin.len, 0);
  /* No body at all: empty slices, no arithmetic on NULL. */
  CHECK_INT(ox_binext_split(&f, ox_slice(NULL, 0), &json, &bin, err, sizeof err), 0);
  CHECK(json.ptr == NULL && json.len == 0 && bin.ptr == NULL && bin.len == 0);
}

TEST(test_values) {
  ox_binext_t f;
  const char *why = NULL;
  CHECK_INT(parse1("0", &f, &why), 0);
  CHECK(f.present && f.header_len == 0);
  CHECK_INT(parse1("1234", &f, &why), 0);
  CHECK_INT(f.header_len, 1234);
  CHECK_INT(parse1("9999999999999999999", &f, &why), 0); /* 19 digits: the largest */
  CHECK(f.header_len == 9999999999999999999ULL);
  const char *bad[] = {"", "+1", "-1", " 1", "1 ", "0x10", "1.5", "12a", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why = NULL;
    CHECK_INT(parse1(bad[i], &f, &why), OX_EINVALID);
    CHECK_STR(why, "Inference-Header-Content-Length must be a decimal byte count");
  }
}

TEST(test_duplicate_header) {
  ox_slice_t v[2] = {OX_SLICE_LIT("10"), OX_SLICE_LIT("10")};
  ox_binext_t f;
  const char *why = NULL;
  CHECK_INT(ox_binext_parse(v, 2, &f, &why), OX_EINVALID);
  CHECK_STR(why, "Inference-Header-Content-Length appears more than once");
  CHECK_INT(f.present, 0);
}

TEST(test_split) {
  char body[] = "{\"a\":1}BINARY";
  ox_binext_t f = {.present = 1, .header_len = 7};
  ox_slice_t json, bin;
  char err[128];
  CHECK_INT(ox_binext_split(&f, ox_slice(body, 13), &json, &bin, err, sizeof err), 0);
  CHECK(json.ptr == body && json.len == 7);
  CHECK(bin.ptr == body + 7 && bin.len == 6);
  f.header_len = 13; /* all header, empty binary section */
  CHECK_INT(ox_binext_split(&f, ox_slice(body, 13), &json, &bin, err, sizeof err), 0);
  CHECK(json.len == 13 && bin.ptr == body + 13 && bin.len == 0);
  f.header_len = 14;
  CHECK_INT(ox_binext_split(&f, ox_slice(body, 13), &json, &bin, err, sizeof err), OX_EINVALID);
  CHECK_STR(err, "Inference-Header-Content-Length (14) is larger than the body (13)");
  f.header_len = UINT64_MAX; /* beyond size_t's range on 32-bit: still "larger" */
  CHECK_INT(ox_binext_split(&f, ox_slice(body, 13), &json, &bin, err, 8), OX_EINVALID);
  CHECK_INT(strlen(err), 7); /* bounded by errcap */
}

TEST(test_align_offset) {
  CHECK_INT(ox_binext_align_offset(OX_SLICE_LIT("100")), 100);
  CHECK_INT(ox_binext_align_offset(OX_SLICE_LIT("0")), 0);
  CHECK_INT(ox_binext_align_offset(ox_slice(NULL, 0)), 0);  /* absent */
  CHECK_INT(ox_binext_align_offset(OX_SLICE_LIT("1x")), 0); /* refused later */
  CHECK_INT(ox_binext_align_offset(OX_SLICE_LIT("-64")), 0);
  CHECK_INT(ox_binext_align_offset(OX_SLICE_LIT("99999999999999999999")), 0);
}

/* Values whose last byte is the last byte before a PROT_NONE page: nothing reads past len. */
TEST(test_guard_page) {
  long pg;
  char *m = ox_test_guard_map(&pg);
  if (!m) return;
  const char *cases[] = {"7", "1234567890123456789", "12345678901234567890", "12z"};
  int want[] = {0, 0, OX_EINVALID, OX_EINVALID};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i]);
    char *v = m + pg - n;
    memcpy(v, cases[i], n);
    ox_slice_t s = ox_slice(v, n);
    ox_binext_t f;
    const char *why = NULL;
    CHECK_INT(ox_binext_parse(&s, 1, &f, &why), want[i]);
    CHECK_INT(ox_binext_align_offset(s), want[i] ? 0 : (long long)f.header_len);
    /* A body flush against the guard, split at every point. */
    for (uint64_t h = 0; h <= n + 1; h++) {
      ox_binext_t g = {.present = 1, .header_len = h};
      ox_slice_t json, bin;
      char err[128];
      int rc = ox_binext_split(&g, s, &json, &bin, err, sizeof err);
      CHECK_INT(rc, h <= n ? 0 : OX_EINVALID);
      if (!rc) CHECK(json.len + bin.len == n && bin.ptr + bin.len == m + pg);
    }
  }
  ox_test_guard_free(m, pg);
}

TEST_MAIN(T(test_absent_header_frames_nothing), T(test_values), T(test_duplicate_header),
          T(test_split), T(test_align_offset), T(test_guard_page))
