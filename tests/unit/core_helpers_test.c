/* core_helpers_test.c: the shared helpers of core/ that replaced per-file copies: the name
 * check and the decimal parsers of core/text.h (bounds, overflow at the exact limits, signs),
 * ox_container_of (core/container.h) and the clocks of core/clock.h. */
#include <stdint.h>
#include <string.h>

#include "core/clock.h"
#include "core/container.h"
#include "core/text.h"
#include "test.h"

#define S(lit) (lit), (sizeof(lit) - 1)

TEST(test_name_check) {
  CHECK(ox_name_valid(S("Model_1.v-2")));
  CHECK(ox_name_valid("", 0)); /* length bounds are the callers' */
  const char *bad[] = {"a/b", "a:b", "~ev", "a b", "a\\b", "%2e", "a\x80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK(!ox_name_valid(bad[i], strlen(bad[i])));
  CHECK(!ox_name_valid("ab\0c", 4)); /* NUL inside */
  for (int c = 0; c < 256; c++) {
    int want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == '-';
    CHECK_INT(ox_name_char((char)c), want);
  }
}

TEST(test_dec_prefix) {
  uint64_t v;
  int ovf;
  CHECK_INT(ox_dec_prefix(S("123,4"), &v, &ovf), 3);
  CHECK(v == 123 && !ovf);
  CHECK_INT(ox_dec_prefix(S("x1"), &v, &ovf), 0);
  CHECK(v == 0 && !ovf);
  CHECK_INT(ox_dec_prefix(S("18446744073709551615"), &v, &ovf), 20);
  CHECK(v == UINT64_MAX && !ovf);
  CHECK_INT(ox_dec_prefix(S("18446744073709551616 "), &v, &ovf), 20);
  CHECK(ovf);
  CHECK_INT(ox_dec_prefix(S("123456789012345678901234567890"), &v, &ovf), 30);
  CHECK(ovf);
  CHECK_INT(ox_dec_prefix("12345", 2, &v, &ovf), 2); /* stops at n */
  CHECK(v == 12);
}

TEST(test_dec_u64) {
  uint64_t v = 7;
  CHECK_INT(ox_dec_u64(S("0"), UINT64_MAX, &v), 0);
  CHECK(v == 0);
  CHECK_INT(ox_dec_u64(S("007"), UINT64_MAX, &v), 0);
  CHECK(v == 7);
  CHECK_INT(ox_dec_u64(S("9223372036854775807"), INT64_MAX, &v), 0);
  CHECK(v == INT64_MAX);
  v = 1;
  const char *bad[] = {"", "-1", "+1", " 1", "1 ", "1.0", "0x1", "9223372036854775808"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_INT(ox_dec_u64(bad[i], strlen(bad[i]), INT64_MAX, &v), -1);
  CHECK(v == 1); /* untouched */
  CHECK_INT(ox_dec_u64(S("18446744073709551616"), UINT64_MAX, &v), -1);
}

TEST(test_dec_i64) {
  int64_t v = 5;
  CHECK_INT(ox_dec_i64(S("-9223372036854775808"), &v), 0);
  CHECK(v == INT64_MIN);
  CHECK_INT(ox_dec_i64(S("9223372036854775807"), &v), 0);
  CHECK(v == INT64_MAX);
  CHECK_INT(ox_dec_i64(S("-0"), &v), 0);
  CHECK(v == 0);
  CHECK_INT(ox_dec_i64(S("1712345678901"), &v), 0);
  CHECK(v == INT64_C(1712345678901));
  v = 5;
  const char *bad[] = {
      "", "-", "--1", "+1", "1-", "-9223372036854775809", "9223372036854775808", "1.5", "1e3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_INT(ox_dec_i64(bad[i], strlen(bad[i]), &v), -1);
  CHECK(v == 5);
}

typedef struct {
  int a;
  struct {
    double x;
    long member;
  } inner;
} outer_t;

TEST(test_container_of) {
  outer_t o;
  CHECK(ox_container_of(&o.inner.member, outer_t, inner.member) == &o);
  CHECK(ox_container_of(&o.a, outer_t, a) == &o);
}

TEST(test_clocks) {
  int64_t a = ox_mono_ns(), b = ox_mono_ns();
  CHECK(a > 0 && b >= a);
  int64_t ms = ox_mono_ms();
  CHECK(ms >= a / 1000000 && ms <= ox_mono_ns() / 1000000);
  int64_t w = ox_wall_ms();
  CHECK(w > INT64_C(1600000000000)); /* after 2020: CLOCK_REALTIME, not the monotonic clock */
}

TEST_MAIN(T(test_name_check), T(test_dec_prefix), T(test_dec_u64), T(test_dec_i64),
          T(test_container_of), T(test_clocks))
