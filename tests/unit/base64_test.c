/* base64_test.c: the strict base64 decoder (src/core/base64.c): RFC 4648's test vectors, every
 * byte string of length 0..3 round-tripped, each kind of bad input refused, and input placed
 * flush against a guard page. */
#include <sys/mman.h>
#include <unistd.h>

#include "base64_ref.h"
#include "core/base64.h"
#include "core/error.h"
#include "test.h"

/* Decodes s; 0 with the bytes in out (NUL-terminated), or the error. */
static int dec(const char *s, char *out, size_t *len) {
  size_t n = strlen(s);
  int rc = ox_base64_decode(s, n, (unsigned char *)out, ox_base64_decoded_max(n), len);
  out[rc ? 0 : *len] = 0;
  return rc;
}

TEST(test_rfc4648_vectors) {
  const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  const char *raw[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  for (size_t i = 0; i < sizeof enc / sizeof enc[0]; i++) {
    char out[16];
    size_t len = 99;
    CHECK_INT(dec(enc[i], out, &len), 0);
    CHECK_INT(len, strlen(raw[i]));
    CHECK_STR(out, raw[i]);
  }
  char out[8];
  size_t len;
  CHECK_INT(dec("+/+/", out, &len), 0); /* the last two characters of the alphabet */
  CHECK_INT(len, 3);
  CHECK_MEM(out, "\xfb\xff\xbf", 3);
}

static void enc(const unsigned char *in, size_t n, char *out) {
  out[ox_test_base64_encode(in, n, out)] = 0;
}

TEST(test_round_trip) {
  int bad = 0;
  unsigned char in[3];
  for (unsigned x = 0; x < 256 * 256; x++) { /* every 1- and 2-byte string, 3 bytes sampled */
    in[0] = (unsigned char)x;
    in[1] = (unsigned char)(x >> 8);
    in[2] = (unsigned char)(x * 31);
    for (size_t n = 1; n <= 3; n++) {
      char e[8], out[8];
      size_t len;
      enc(in, n, e);
      bad += dec(e, out, &len) != 0 || len != n || memcmp(out, in, n) != 0;
    }
  }
  CHECK_INT(bad, 0);
}

TEST(test_refused) {
  const char *bad[] = {
      "!!!not base64!!!", /* characters outside the alphabet */
      "Zm9v\n",           /* whitespace */
      "Zm 9",
      "Zm9", /* length not a multiple of four */
      "Zg",  /* missing padding */
      "Zg=a",
      "Z===",
      "====",
      "Zg==Zg==",
      "=Zm9", /* misplaced padding */
      "Zh==", /* unused bits set ("f" is Zg==) */
      "Zm9=", /* unused bits set ("fo" is Zm8=) */
      "Zm9-",
      "Zm9_", /* URL-safe alphabet */
      "Zm9\xc3",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char out[16];
    size_t len = 99;
    int rc = dec(bad[i], out, &len);
    if (rc != OX_EINVALID) fprintf(stderr, "  accepted '%s'\n", bad[i]);
    CHECK_INT(rc, OX_EINVALID);
    CHECK_INT(len, 0);
  }
  /* An output buffer too small is refused before anything is written. */
  unsigned char small[2] = {0x55, 0x55};
  size_t len;
  CHECK_INT(ox_base64_decode("Zm9v", 4, small, 2, &len), OX_EINVALID);
  CHECK(small[0] == 0x55 && small[1] == 0x55);
  CHECK_INT(ox_base64_decoded_max((size_t)-1), ((size_t)-1) / 4 * 3);
}

/* Input whose last byte is the last before a PROT_NONE page: nothing is read past n. */
TEST(test_guard_page) {
  long pg;
  char *m = ox_test_guard_map(&pg);
  if (!m) return;
  const char *cases[] = {"Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy", "Zm9vYmF", "Zm9vYm=="};
  int want[] = {0, 0, 0, OX_EINVALID, OX_EINVALID};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i]);
    memcpy(m + pg - n, cases[i], n);
    unsigned char out[8];
    size_t len;
    CHECK_INT(ox_base64_decode(m + pg - n, n, out, sizeof out, &len), want[i]);
  }
  ox_test_guard_free(m, pg);
}

TEST_MAIN(T(test_rfc4648_vectors), T(test_round_trip), T(test_refused), T(test_guard_page))
