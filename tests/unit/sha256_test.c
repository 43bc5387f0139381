/* sha256_test.c: SHA-256 (src/core/sha256.c) against the FIPS 180-4 example vectors, with the
 * portable block function and with the SHA extensions (where the CPU has them), the two against
 * each other on many lengths, streaming in pieces against one shot, and input placed flush
 * against a guard page. */
#include "core/sha256.h"
#include "test.h"

static const struct {
  const char *msg;
  const char *hex;
} vectors[] = {
    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlm"
     "nopqrsmnopqrstnopqrstu",
     "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
};

static void hex_of(const void *p, size_t n, char out[65]) {
  unsigned char d[OX_SHA256_BYTES];
  ox_sha256(p, n, d);
  ox_sha256_hex(d, out);
}

static void check_vectors(void) {
  char hex[65];
  for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
    hex_of(vectors[i].msg, strlen(vectors[i].msg), hex);
    CHECK_STR(hex, vectors[i].hex);
  }
  /* One million 'a' (FIPS 180-4's long example), fed in uneven pieces. */
  static char a[1000000];
  memset(a, 'a', sizeof a);
  ox_sha256_t s;
  ox_sha256_init(&s);
  size_t off = 0, step = 1;
  while (off < sizeof a) {
    size_t n = step < sizeof a - off ? step : sizeof a - off;
    ox_sha256_update(&s, a + off, n);
    off += n;
    step = step * 7 % 4099 + 1;
  }
  unsigned char d[OX_SHA256_BYTES];
  ox_sha256_final(&s, d);
  ox_sha256_hex(d, hex);
  CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  ox_sha256(NULL, 0, d);
  ox_sha256_hex(d, hex);
  CHECK_STR(hex, vectors[0].hex);
}

TEST(test_vectors_portable) {
  CHECK_STR(ox_sha256_set_accel(0), "portable");
  check_vectors();
  ox_sha256_set_accel(1);
}

TEST(test_vectors_default) {
  const char *impl = ox_sha256_set_accel(1);
  printf("  block function: %s\n", impl);
  check_vectors();
}

/* xorshift64: deterministic test bytes. */
static void fill(unsigned char *p, size_t n, uint64_t seed) {
  uint64_t x = seed | 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (unsigned char)(x >> 32);
  }
}

TEST(test_accel_equals_portable) {
  static unsigned char buf[70000];
  fill(buf, sizeof buf, 42);
  int differ = 0;
  for (size_t n = 0; n <= sizeof buf; n = n < 300 ? n + 1 : n * 3 / 2 + 13) {
    unsigned char d0[OX_SHA256_BYTES], d1[OX_SHA256_BYTES];
    ox_sha256_set_accel(0);
    ox_sha256(buf, n, d0);
    ox_sha256_set_accel(1);
    ox_sha256(buf, n, d1);
    if (memcmp(d0, d1, sizeof d0)) {
      if (!differ) fprintf(stderr, "  first difference at length %zu\n", n);
      differ++;
    }
  }
  CHECK_INT(differ, 0);
}

TEST(test_streaming_equals_one_shot) {
  static unsigned char buf[5000];
  fill(buf, sizeof buf, 7);
  unsigned char one[OX_SHA256_BYTES];
  ox_sha256(buf, sizeof buf, one);
  /* Every split point around block boundaries, in two and three pieces. */
  static const size_t cuts[] = {0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 4095, 4999};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    for (size_t j = i; j < sizeof cuts / sizeof cuts[0]; j++) {
      ox_sha256_t s;
      ox_sha256_init(&s);
      ox_sha256_update(&s, buf, cuts[i]);
      ox_sha256_update(&s, buf + cuts[i], cuts[j] - cuts[i]);
      ox_sha256_update(&s, buf + cuts[j], sizeof buf - cuts[j]);
      unsigned char d[OX_SHA256_BYTES];
      ox_sha256_final(&s, d);
      CHECK_MEM(d, one, sizeof d);
    }
  }
  /* A one-bit change changes the digest. */
  buf[2500] ^= 1;
  unsigned char d[OX_SHA256_BYTES];
  ox_sha256(buf, sizeof buf, d);
  CHECK(memcmp(d, one, sizeof d) != 0);
}

TEST(test_guard_page) {
  long pg;
  char *m = ox_test_guard_map(&pg);
  if (!m) return;
  for (int accel = 0; accel <= 1; accel++) {
    ox_sha256_set_accel(accel);
    /* The input ends exactly at the guard page: whole blocks, a partial one, streaming. */
    const size_t lens[] = {3, 64, 200, (size_t)pg};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
      char *p = m + pg - lens[i];
      memset(p, 'a', lens[i]);
      unsigned char d[OX_SHA256_BYTES], e[OX_SHA256_BYTES];
      ox_sha256(p, lens[i], d);
      ox_sha256_t s;
      ox_sha256_init(&s);
      ox_sha256_update(&s, p, 1);
      ox_sha256_update(&s, p + 1, lens[i] - 1);
      ox_sha256_final(&s, e);
      CHECK_MEM(d, e, sizeof d);
    }
  }
  ox_sha256_set_accel(1);
  char hex[65];
  memset(m + pg - 3, 0, 3);
  memcpy(m + pg - 3, "abc", 3);
  hex_of(m + pg - 3, 3, hex);
  CHECK_STR(hex, vectors[1].hex);
  ox_test_guard_free(m, pg);
}

TEST_MAIN(T(test_vectors_portable), T(test_vectors_default), T(test_accel_equals_portable),
          T(test_streaming_equals_one_shot), T(test_guard_page))
