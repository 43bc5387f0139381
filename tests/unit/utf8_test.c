/* utf8_test.c: UTF-8 validation (src/core/utf8.c) on the boundary cases of RFC 3629, and the
 * one JSON string writer (ox_buf_append_json_string) answering valid UTF-8 for any bytes. */
#include "core/buf.h"
#include "core/utf8.h"
#include "test.h"

#define V(s) ox_utf8_valid(s, sizeof(s) - 1)

TEST(test_valid_and_invalid) {
  CHECK(ox_utf8_valid(NULL, 0));
  CHECK(V("plain ascii"));
  CHECK(V("\xc2\x80"));                 /* U+0080 */
  CHECK(V("\xdf\xbf"));                 /* U+07FF */
  CHECK(V("\xe0\xa0\x80"));             /* U+0800 */
  CHECK(V("\xed\x9f\xbf"));             /* U+D7FF */
  CHECK(V("\xee\x80\x80"));             /* U+E000 */
  CHECK(V("\xef\xbf\xbf"));             /* U+FFFF */
  CHECK(V("\xf0\x90\x80\x80"));         /* U+10000 */
  CHECK(V("\xf4\x8f\xbf\xbf"));         /* U+10FFFF */
  CHECK(V("caf\xc3\xa9 \xe2\x82\xac")); /* "café €" */
  CHECK(!V("\xff\xfe"));
  CHECK(!V("\x80"));     /* lone continuation */
  CHECK(!V("\xc0\xaf")); /* overlong '/' */
  CHECK(!V("\xc1\xbf"));
  CHECK(!V("\xe0\x9f\xbf"));     /* overlong */
  CHECK(!V("\xed\xa0\x80"));     /* surrogate U+D800 */
  CHECK(!V("\xf0\x8f\xbf\xbf")); /* overlong */
  CHECK(!V("\xf4\x90\x80\x80")); /* above U+10FFFF */
  CHECK(!V("\xf5\x80\x80\x80"));
  CHECK(!V("\xc3")); /* truncated */
  CHECK(!V("\xe2\x82"));
  CHECK(!V("\xe2\x82x"));
  CHECK_INT(ox_utf8_seq((const unsigned char *)"\xe2\x82\xac", 2), 0); /* bounded by n */
}

static int json_of(const char *s, size_t n, const char *want) {
  ox_buf_t b;
  ox_buf_init(&b);
  int ok = ox_buf_append_json_string(&b, s, n) == 0 && b.len == strlen(want) &&
           memcmp(b.data, want, b.len) == 0 && ox_utf8_valid(b.data, b.len);
  if (!ok) fprintf(stderr, "  got %.*s want %s\n", (int)b.len, b.data, want);
  ox_buf_free(&b);
  return ok;
}

TEST(test_json_string_is_valid_utf8) {
  CHECK(json_of("a\"b\\c\n\x01", 7, "\"a\\\"b\\\\c\\n\\u0001\""));
  CHECK(json_of("caf\xc3\xa9", 5, "\"caf\xc3\xa9\""));
  CHECK(json_of("\xff\xfe", 2, "\"\\ufffd\\ufffd\""));
  CHECK(json_of("x\xe2\x82", 3, "\"x\\ufffd\\ufffd\""));
  CHECK(json_of("\xed\xa0\x80!", 4, "\"\\ufffd\\ufffd\\ufffd!\""));
  /* every single byte, and every byte pair, gives valid UTF-8 */
  int bad = 0;
  for (int a = 0; a < 256; a++)
    for (int c = 0; c < 256; c++) {
      char in[3] = {(char)a, (char)c, (char)0xe2};
      ox_buf_t b;
      ox_buf_init(&b);
      bad += ox_buf_append_json_string(&b, in, 3) != 0 || !ox_utf8_valid(b.data, b.len);
      ox_buf_free(&b);
    }
  CHECK_INT(bad, 0);
}

TEST_MAIN(T(test_valid_and_invalid), T(test_json_string_is_valid_utf8))
