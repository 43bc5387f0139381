/* tensor_json_test.c: unit tests for proto/tensor_json.c and proto/numconv.cc: every datatype
 * decoded and encoded (extremes, rounding ties, specials), every rejection with its message,
 * nesting and depth, bitwise round trips and shortest output on random floats and doubles
 * (checked against the C library), and decoding of input placed flush against a guard page. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/error.h"
#include "proto/json.h"
#include "proto/numconv.h"
#include "proto/tensor_json.h"
#include "test.h"

static ox_arena_t arena;
static char err[256];

/* Decodes the C string json. */
static int dec(const char *json, ox_dtype_t dt, uint64_t count, void *out) {
  err[0] = 0;
  return ox_tensor_json_decode(ox_slice(json, strlen(json)), dt, count, out, &arena, err,
                               sizeof err);
}

/* Encodes and returns the text in a static buffer ("" on failure). */
static const char *enc(ox_dtype_t dt, const void *data, uint64_t count) {
  static char text[4096];
  ox_buf_t b;
  ox_buf_init(&b);
  text[0] = 0;
  if (ox_tensor_json_encode(&b, dt, data, count) == 0 && b.len < sizeof text) {
    memcpy(text, b.data, b.len);
    text[b.len] = 0;
  }
  ox_buf_free(&b);
  return text;
}

static const char *fmt32(float f) {
  static char s[40];
  s[ox_format_f32(f, s)] = 0;
  return s;
}

static const char *fmt64(double v) {
  static char s[40];
  s[ox_format_f64(v, s)] = 0;
  return s;
}

static uint32_t bits32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static uint64_t bits64(double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  return u;
}

static float from32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static double from64(uint64_t u) {
  double v;
  memcpy(&v, &u, 8);
  return v;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* ---- numconv ---------------------------------------------------------------------------- */

TEST(numconv_shortest_known_values) {
  CHECK_STR(fmt32(0.1f), "0.1");
  CHECK_STR(fmt32(1e-45f), "1e-45");
  CHECK_STR(fmt32(FLT_MAX), "3.4028235e+38");
  CHECK_STR(fmt32(FLT_MIN), "1.1754944e-38");
  CHECK_STR(fmt32(1.0f), "1");
  CHECK_STR(fmt32(-3.0f), "-3");
  CHECK_STR(fmt32(0.5f), "0.5");
  CHECK_STR(fmt32(0.0f), "0");
  CHECK_STR(fmt32(-0.0f), "-0");
  CHECK_STR(fmt32(16777216.0f), "16777216");
  CHECK_STR(fmt32(1e20f), "100000000000000000000");
  CHECK_STR(fmt32(1e21f), "1e+21");
  CHECK_STR(fmt32(1.5e-7f), "1.5e-7");
  CHECK_STR(fmt32(1e-6f), "0.000001");
  CHECK_STR(fmt32(123.456f), "123.456");
  CHECK_STR(fmt32(0.3f), "0.3");
  CHECK_STR(fmt32(0.1f + 0.2f), "0.3"); /* in float the sum is 0.3f exactly */
  CHECK_STR(fmt64(0.1 + 0.2), "0.30000000000000004");
  CHECK_STR(fmt64(1.0), "1");
  CHECK_STR(fmt64(-0.0), "-0");
  CHECK_STR(fmt64(0.5), "0.5");
  CHECK_STR(fmt64(1.5e-7), "1.5e-7");
  CHECK_STR(fmt64(1e21), "1e+21");
  CHECK_STR(fmt64(1e20), "100000000000000000000");
  CHECK_STR(fmt64(123456789012345680000.0), "123456789012345680000");
  CHECK_STR(fmt64(DBL_MAX), "1.7976931348623157e+308");
  CHECK_STR(fmt64(5e-324), "5e-324");
  CHECK_STR(fmt64(2.2250738585072014e-308), "2.2250738585072014e-308");
  CHECK_STR(fmt64(-1.2345678901234566e-7), "-1.2345678901234566e-7");
  CHECK_STR(fmt64(0.0000012345678901234567), "0.0000012345678901234567");
  CHECK_STR(fmt64(9007199254740993.0), "9007199254740992");
  CHECK_STR(fmt64(1e100), "1e+100");
  CHECK_STR(fmt64(NAN), "NaN");
  CHECK_STR(fmt64(-INFINITY), "-Infinity");
  CHECK_STR(fmt32(INFINITY), "Infinity");
}

TEST(numconv_parse_grammar) {
  static const char *bad[] = {"",     "-",   "+1",  "01",  "-01",  "1.",       ".5",        "1e",
                              "1e+",  "1E-", "inf", "nan", "NaN",  "Infinity", "-Infinity", "1.2.3",
                              "1e5e", "00",  "--1", " 1",  "1.e5", "e5"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    double v = 42;
    float f = 42;
    size_t n = ox_parse_f64(bad[i], strlen(bad[i]), &v);
    if (n != 0) fprintf(stderr, "  accepted '%s'\n", bad[i]);
    CHECK_INT(n, 0);
    CHECK_INT(ox_parse_f32(bad[i], strlen(bad[i]), &f), 0);
    CHECK(v == 42 && f == 42); /* untouched on failure */
  }
  double v;
  CHECK_INT(ox_parse_f64("1.5,2", 5, &v), 3);
  CHECK(v == 1.5);
  CHECK_INT(ox_parse_f64("-0]", 3, &v), 2);
  CHECK(v == 0 && signbit(v));
  /* The number ends at a byte that cannot continue one; the caller judges what follows. */
  CHECK_INT(ox_parse_f64("0x10", 4, &v), 1);
  CHECK(v == 0);
  CHECK_INT(ox_parse_f64("1E+2 ", 5, &v), 4);
  CHECK(v == 100);
  CHECK_INT(ox_parse_f64("0e-99999999999999", 17, &v), 17);
  CHECK(v == 0);
  /* Only len bytes are looked at: "12" of "123" is the number 12. */
  CHECK_INT(ox_parse_f64("123", 2, &v), 2);
  CHECK(v == 12);
  /* More than 19 significant digits: the exact slow path. 2^-1074 * (1/2 + tiny) rounds up. */
  const char *h =
      "2.4703282292062327208828439643411068618252990130716238221279284125033775364"
      "51e-324";
  CHECK_INT(ox_parse_f64(h, strlen(h), &v), strlen(h));
  CHECK(bits64(v) == 1);
  CHECK_INT(ox_parse_f64("2.4703282292062327e-324", 23, &v), 23); /* just below half: 0 */
  CHECK(bits64(v) == 0);
}

/* Shortest: for random finite values, the formatter never uses more significant digits than
 * the fewest with which printf's %.*e reads back through strtod/strtof (dragonbox may find a
 * shorter one printf's nearest-rounding misses, at powers of two), and the text reads back
 * bitwise through both our parser and the C library's. */
static int sig_digits(const char *s) {
  char d[64];
  int n = 0;
  for (; *s && *s != 'e'; s++)
    if (*s >= '0' && *s <= '9' && (n || *s != '0')) d[n++] = *s;
  while (n > 1 && d[n - 1] == '0') n--; /* "100": the zeros only place the point */
  return n ? n : 1;
}

TEST(numconv_random_doubles_shortest_and_exact) {
  char want[64];
  for (int i = 0; i < 200000; i++) {
    /* half random bit patterns (mostly huge or tiny), half values of every layout: 1e-8 .. 1e23,
     * where the point falls inside, before or after the digits */
    double v = from64(rnd());
    if (i & 1) v = (double)(rnd() >> 11) * 0x1p-53 * pow(10, (int)(rnd() % 32) - 8);
    if (!isfinite(v)) continue;
    const char *s = fmt64(v);
    double back;
    size_t n = strlen(s);
    if (ox_parse_f64(s, n, &back) != n || bits64(back) != bits64(v)) {
      fprintf(stderr, "  %a -> %s does not read back\n", v, s);
      CHECK(0);
      return;
    }
    CHECK(bits64(strtod(s, NULL)) == bits64(v));
    int p = 1;
    for (; p < 17; p++) {
      snprintf(want, sizeof want, "%.*e", p - 1, v);
      if (strtod(want, NULL) == v) break;
    }
    if (sig_digits(s) > p) {
      fprintf(stderr, "  %a -> %s, but %d digits suffice\n", v, s, p);
      CHECK(0);
      return;
    }
  }
}

TEST(numconv_random_floats_shortest_and_exact) {
  char want[64];
  for (int i = 0; i < 200000; i++) {
    float f = from32((uint32_t)rnd());
    if (i & 1) f = (float)((double)(rnd() >> 11) * 0x1p-53 * pow(10, (int)(rnd() % 32) - 8));
    if (!isfinite(f)) continue;
    const char *s = fmt32(f);
    float back;
    size_t n = strlen(s);
    if (ox_parse_f32(s, n, &back) != n || bits32(back) != bits32(f)) {
      fprintf(stderr, "  %a -> %s does not read back\n", (double)f, s);
      CHECK(0);
      return;
    }
    CHECK(bits32(strtof(s, NULL)) == bits32(f));
    int p = 1;
    for (; p < 9; p++) {
      snprintf(want, sizeof want, "%.*e", p - 1, (double)f);
      if (strtof(want, NULL) == f) break;
    }
    if (sig_digits(s) > p) {
      fprintf(stderr, "  %a -> %s, but %d digits suffice\n", (double)f, s, p);
      CHECK(0);
      return;
    }
  }
}

/* Decimal -> float straight from the text, never through double (which would round twice):
 * compared with strtof on random decimals of up to 12 digits near float ties. */
TEST(numconv_parse_f32_correctly_rounded) {
  char s[64];
  for (int i = 0; i < 100000; i++) {
    /* a float halfway point printed exactly ( %.40e is plenty for these magnitudes), then
     * cut to a random number of digits: lands on, just below or just above the tie */
    float f = from32((uint32_t)(rnd() % 0x7f000000u));
    double tie = (double)f + (double)(nextafterf(f, INFINITY) - f) / 2;
    int digits = 1 + (int)(rnd() % 25);
    snprintf(s, sizeof s, "%.*e", digits, tie);
    float got;
    size_t n = strlen(s);
    CHECK_INT(ox_parse_f32(s, n, &got), n);
    if (bits32(got) != bits32(strtof(s, NULL))) {
      fprintf(stderr, "  %s -> %a, strtof %a\n", s, (double)got, (double)strtof(s, NULL));
      CHECK(0);
      return;
    }
  }
}

/* Random decimals in every shape the parser treats differently (short and long significands,
 * leading zeros, exponents in and out of the fast path's range, more than 19 digits) agree
 * bitwise with glibc's strtod and strtof, which round correctly. */
TEST(numconv_parse_random_decimals) {
  char s[96];
  for (int i = 0; i < 300000; i++) {
    int n = 0;
    if (rnd() & 1) s[n++] = '-';
    int int_digits = (int)(rnd() % 4), frac_digits = (int)(rnd() % 24), lead_zeros = 0;
    if (int_digits == 0) {
      s[n++] = '0';
      lead_zeros = (int)(rnd() % 8);
    } else {
      s[n++] = (char)('1' + rnd() % 9);
      int len = int_digits * (1 + (int)(rnd() % 6));
      for (int k = 1; k < len; k++) s[n++] = (char)('0' + rnd() % 10);
    }
    if (frac_digits || lead_zeros) {
      s[n++] = '.';
      for (int k = 0; k < lead_zeros; k++) s[n++] = '0';
      for (int k = 0; k < frac_digits || k == 0; k++) s[n++] = (char)('0' + rnd() % 10);
    }
    if (rnd() % 3 == 0) {
      static const char *const marks[] = {"e", "E", "e+", "E-", "e-"};
      n += snprintf(s + n, sizeof s - (size_t)n, "%s%d", marks[rnd() % 5], (int)(rnd() % 40));
    }
    s[n] = 0;
    double v;
    float f;
    if (ox_parse_f64(s, (size_t)n, &v) != (size_t)n ||
        ox_parse_f32(s, (size_t)n, &f) != (size_t)n) {
      fprintf(stderr, "  rejected %s\n", s);
      CHECK(0);
      return;
    }
    if (bits64(v) != bits64(strtod(s, NULL)) || bits32(f) != bits32(strtof(s, NULL))) {
      fprintf(stderr, "  %s -> %a %a, libc %a %a\n", s, v, (double)f, strtod(s, NULL),
              (double)strtof(s, NULL));
      CHECK(0);
      return;
    }
  }
}

/* ---- half precision --------------------------------------------------------------------- */

TEST(half_conversions) {
  /* Every binary16 and bfloat16 widens exactly and narrows back to itself (NaNs stay NaN). */
  for (uint32_t h = 0; h < 65536; h++) {
    float f = ox_f16_to_f32((uint16_t)h);
    if (isnan(f)) {
      CHECK((ox_f32_to_f16(f) & 0x7c00) == 0x7c00 && (ox_f32_to_f16(f) & 0x3ff));
      continue;
    }
    if (ox_f32_to_f16(f) != h || ox_f64_to_f16((double)f) != h) {
      fprintf(stderr, "  f16 %04x -> %a -> %04x\n", h, (double)f, ox_f32_to_f16(f));
      CHECK(0);
      return;
    }
    float b = ox_bf16_to_f32((uint16_t)h);
    if (!isnan(b) && ox_f64_to_bf16((double)b) != h) {
      fprintf(stderr, "  bf16 %04x -> %a -> %04x\n", h, (double)b, ox_f64_to_bf16(b));
      CHECK(0);
      return;
    }
  }
  CHECK_INT(ox_f32_to_f16(1.0f), 0x3c00);
  CHECK_INT(ox_f32_to_f16(65504.0f), 0x7bff);
  CHECK_INT(ox_f32_to_f16(65519.996f), 0x7bff); /* below the tie with 65536 */
  CHECK_INT(ox_f32_to_f16(65520.0f), 0x7c00);   /* tie, to even: infinity */
  CHECK_INT(ox_f32_to_f16(-1e10f), 0xfc00);
  CHECK_INT(ox_f32_to_f16(2049.0f), 0x6800); /* tie between 2048 and 2050: to even 2048 */
  CHECK_INT(ox_f32_to_f16(2051.0f), 0x6802); /* tie between 2050 and 2052: to even 2052 */
  CHECK_INT(ox_f32_to_f16(0x1p-24f), 0x0001);
  CHECK_INT(ox_f32_to_f16(0x1p-25f), 0x0000);        /* tie with 0: to even */
  CHECK_INT(ox_f32_to_f16(0x1.000002p-25f), 0x0001); /* just above the tie */
  CHECK_INT(ox_f32_to_f16(0x3p-25f), 0x0002);        /* 1.5 units: tie, to even 2 */
  CHECK_INT(ox_f32_to_f16(0x1.ffcp-15f), 0x0400);    /* rounds up into the normals */
  CHECK_INT(ox_f32_to_f16(-0.0f), 0x8000);
  CHECK_INT(ox_f32_to_f16(INFINITY), 0x7c00);
  CHECK_INT(ox_f64_to_f16(0.1), 0x2e66);
  /* double rounding would go wrong here: 1 + 2^-11 + 2^-40 is above the f16 tie, but
   * rounding to float first would land exactly on the tie and then go down to 1 */
  CHECK_INT(ox_f64_to_f16(1.0 + 0x1p-11 + 0x1p-40), 0x3c01);
  CHECK_INT(ox_f64_to_bf16(1.0), 0x3f80);
  CHECK_INT(ox_f64_to_bf16(1.00390625), 0x3f80); /* 1 + 2^-8: tie, to even */
  CHECK_INT(ox_f64_to_bf16(1.01171875), 0x3f82); /* 1 + 3 * 2^-8: tie, to even */
  CHECK_INT(ox_f64_to_bf16(-2.0), 0xc000);
  CHECK_INT(ox_f64_to_bf16(3.4e38), 0x7f80);
  CHECK_INT(ox_f64_to_bf16(0x1p-133), 0x0001);
  CHECK_INT(ox_f64_to_bf16(0x1p-134), 0x0000);
  CHECK_INT(ox_f64_to_bf16(NAN) & 0x7fc0, 0x7fc0);
  CHECK(ox_f16_to_f32(0x0001) == 0x1p-24f);
  CHECK(ox_f16_to_f32(0x7bff) == 65504.0f);
  CHECK(ox_f16_to_f32(0xfc00) == -INFINITY);
  CHECK(ox_bf16_to_f32(0x3f81) == 1.0078125f);
}

/* ---- decoding and encoding per datatype ------------------------------------------------- */

TEST(fp32_round_trip) {
  float v[12];
  CHECK_INT(dec("[0.1, -0, 1e-45, 3.4028235e38, -3.4028235e38, 1.17549435e-38, 1e-50, 16777217,"
                " 0.30000001192092896, 1E+2, 2.5e-1, 0]",
                OX_DT_FP32, 12, v),
            0);
  CHECK(bits32(v[0]) == bits32(0.1f));
  CHECK(bits32(v[1]) == 0x80000000u);
  CHECK(bits32(v[2]) == 0x00000001u);
  CHECK(bits32(v[3]) == 0x7f7fffffu);
  CHECK(bits32(v[4]) == 0xff7fffffu);
  CHECK(bits32(v[5]) == 0x00800000u);
  CHECK(bits32(v[6]) == 0);   /* underflow to zero is fine */
  CHECK(v[7] == 16777216.0f); /* tie, to even */
  CHECK(v[8] == 0.3f);
  CHECK(v[9] == 100.0f && v[10] == 0.25f && bits32(v[11]) == 0);
  CHECK_STR(enc(OX_DT_FP32, v, 12),
            "[0.1,-0,1e-45,3.4028235e+38,-3.4028235e+38,1.1754944e-38,0,16777216,0.3,100,0.25,0]");
  /* just below the rounding boundary to infinity: FLT_MAX; at or above it: out of range */
  CHECK_INT(dec("[3.4028235677973366e38]", OX_DT_FP32, 1, v), 0);
  CHECK(bits32(v[0]) == 0x7f7fffffu);
  CHECK_INT(dec("[3.4028235677973367e38]", OX_DT_FP32, 1, v), OX_EINVALID);
  CHECK_STR(err, "element 0: 3.4028235677973367e38 out of range for FP32");
  CHECK_INT(dec("[1, -1e39]", OX_DT_FP32, 2, v), OX_EINVALID);
  CHECK_STR(err, "element 1: -1e39 out of range for FP32");
  /* specials encode as JSON strings (see nonfinite_outputs_are_valid_json) */
  float sp[3] = {NAN, INFINITY, -INFINITY};
  CHECK_STR(enc(OX_DT_FP32, sp, 3), "[\"NaN\",\"Infinity\",\"-Infinity\"]");
}

TEST(fp64_round_trip) {
  double v[7];
  CHECK_INT(dec("[1.7976931348623157e308, 5e-324, -0.0, 0.1, 2.2250738585072014e-308,"
                " 123456789012345678901234567890, 9007199254740993]",
                OX_DT_FP64, 7, v),
            0);
  CHECK(v[0] == DBL_MAX && bits64(v[1]) == 1 && bits64(v[2]) == 0x8000000000000000ULL);
  CHECK(v[3] == 0.1 && v[4] == DBL_MIN && v[5] == 123456789012345678901234567890.0);
  CHECK(v[6] == 9007199254740992.0); /* tie, to even */
  CHECK_STR(enc(OX_DT_FP64, v, 7),
            "[1.7976931348623157e+308,5e-324,-0,0.1,2.2250738585072014e-308,"
            "1.2345678901234568e+29,9007199254740992]");
  CHECK_INT(dec("[1e309]", OX_DT_FP64, 1, v), OX_EINVALID);
  CHECK_STR(err, "element 0: 1e309 out of range for FP64");
  double sp[3] = {-NAN, INFINITY, -INFINITY};
  CHECK_STR(enc(OX_DT_FP64, sp, 3), "[\"NaN\",\"Infinity\",\"-Infinity\"]");
}

TEST(fp16_round_trip) {
  uint16_t h[9];
  CHECK_INT(dec("[1, 0.1, 65504, 65519.99, 2049, 2051, 5.960464477539063e-8, 2.98e-8, -0]",
                OX_DT_FP16, 9, h),
            0);
  CHECK_INT(h[0], 0x3c00);
  CHECK_INT(h[1], 0x2e66);
  CHECK_INT(h[2], 0x7bff);
  CHECK_INT(h[3], 0x7bff);
  CHECK_INT(h[4], 0x6800);
  CHECK_INT(h[5], 0x6802);
  CHECK_INT(h[6], 0x0001);
  CHECK_INT(h[7], 0x0000);
  CHECK_INT(h[8], 0x8000);
  CHECK_STR(enc(OX_DT_FP16, h, 9), "[1,0.099975586,65504,65504,2048,2052,5.9604645e-8,0,-0]");
  CHECK_INT(dec("[65520]", OX_DT_FP16, 1, h), OX_EINVALID);
  CHECK_STR(err, "element 0: 65520 out of range for FP16");
  CHECK_INT(dec("[1, 1e10]", OX_DT_FP16, 2, h), OX_EINVALID);
  CHECK_STR(err, "element 1: 1e10 out of range for FP16");
  uint16_t sp[3] = {0x7e00, 0x7c00, 0xfc00};
  CHECK_STR(enc(OX_DT_FP16, sp, 3), "[\"NaN\",\"Infinity\",\"-Infinity\"]");
  /* every finite half survives encode + decode */
  static uint16_t all[65536], back[65536];
  uint64_t n = 0;
  for (uint32_t x = 0; x < 65536; x++)
    if ((x & 0x7c00) != 0x7c00) all[n++] = (uint16_t)x;
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_tensor_json_encode(&b, OX_DT_FP16, all, n), 0);
  CHECK_INT(
      ox_tensor_json_decode(ox_slice(b.data, b.len), OX_DT_FP16, n, back, &arena, err, sizeof err),
      0);
  CHECK_MEM(all, back, n * 2);
  ox_buf_free(&b);
}

TEST(bf16_round_trip) {
  uint16_t h[6];
  CHECK_INT(dec("[1, 1.00390625, 1.01171875, -2, 3.3895313892515355e38, 1e-40]", OX_DT_BF16, 6, h),
            0);
  CHECK_INT(h[0], 0x3f80);
  CHECK_INT(h[1], 0x3f80);
  CHECK_INT(h[2], 0x3f82);
  CHECK_INT(h[3], 0xc000);
  CHECK_INT(h[4], 0x7f7f);
  CHECK_INT(h[5], 0x0001); /* 1e-40 is 1.4 bf16 subnormal units */
  CHECK_STR(enc(OX_DT_BF16, h, 6), "[1,1,1.015625,-2,3.3895314e+38,9.1835e-41]");
  CHECK_INT(dec("[3.4e38]", OX_DT_BF16, 1, h), OX_EINVALID);
  CHECK_STR(err, "element 0: 3.4e38 out of range for BF16");
  static uint16_t all[65536], back[65536];
  uint64_t n = 0;
  for (uint32_t x = 0; x < 65536; x++)
    if ((x & 0x7f80) != 0x7f80) all[n++] = (uint16_t)x;
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_tensor_json_encode(&b, OX_DT_BF16, all, n), 0);
  CHECK_INT(
      ox_tensor_json_decode(ox_slice(b.data, b.len), OX_DT_BF16, n, back, &arena, err, sizeof err),
      0);
  CHECK_MEM(all, back, n * 2);
  ox_buf_free(&b);
}

TEST(integer_extremes) {
  int64_t i64[4];
  CHECK_INT(dec("[-9223372036854775808, 9223372036854775807, -0, 0]", OX_DT_INT64, 4, i64), 0);
  CHECK(i64[0] == INT64_MIN && i64[1] == INT64_MAX && i64[2] == 0 && i64[3] == 0);
  CHECK_STR(enc(OX_DT_INT64, i64, 4), "[-9223372036854775808,9223372036854775807,0,0]");
  uint64_t u64[2];
  CHECK_INT(dec("[18446744073709551615, 0]", OX_DT_UINT64, 2, u64), 0);
  CHECK(u64[0] == UINT64_MAX && u64[1] == 0);
  CHECK_STR(enc(OX_DT_UINT64, u64, 2), "[18446744073709551615,0]");
  int8_t i8[3];
  CHECK_INT(dec("[-128, 127, -1]", OX_DT_INT8, 3, i8), 0);
  CHECK(i8[0] == -128 && i8[1] == 127 && i8[2] == -1);
  CHECK_STR(enc(OX_DT_INT8, i8, 3), "[-128,127,-1]");
  uint8_t u8[3];
  CHECK_INT(dec("[0, 255, 7]", OX_DT_UINT8, 3, u8), 0);
  CHECK(u8[0] == 0 && u8[1] == 255 && u8[2] == 7);
  CHECK_STR(enc(OX_DT_UINT8, u8, 3), "[0,255,7]");
  int16_t i16[2];
  CHECK_INT(dec("[-32768, 32767]", OX_DT_INT16, 2, i16), 0);
  CHECK(i16[0] == INT16_MIN && i16[1] == INT16_MAX);
  CHECK_STR(enc(OX_DT_INT16, i16, 2), "[-32768,32767]");
  uint16_t u16[1];
  CHECK_INT(dec("[65535]", OX_DT_UINT16, 1, u16), 0);
  CHECK(u16[0] == 65535);
  CHECK_STR(enc(OX_DT_UINT16, u16, 1), "[65535]");
  int32_t i32[3];
  CHECK_INT(dec("[-2147483648, 2147483647, 10]", OX_DT_INT32, 3, i32), 0);
  CHECK(i32[0] == INT32_MIN && i32[1] == INT32_MAX && i32[2] == 10);
  CHECK_STR(enc(OX_DT_INT32, i32, 3), "[-2147483648,2147483647,10]");
  uint32_t u32[1];
  CHECK_INT(dec("[4294967295]", OX_DT_UINT32, 1, u32), 0);
  CHECK(u32[0] == UINT32_MAX);
  CHECK_STR(enc(OX_DT_UINT32, u32, 1), "[4294967295]");
}

TEST(integer_rejections) {
  int64_t i64[2];
  uint64_t u64[2];
  uint8_t u8[3];
  int8_t i8[1];
  CHECK_INT(dec("[0, 1, 256]", OX_DT_UINT8, 3, u8), OX_EINVALID);
  CHECK_STR(err, "element 2: 256 out of range for UINT8 [0, 255]");
  CHECK_INT(dec("[-1]", OX_DT_UINT8, 1, u8), OX_EINVALID);
  CHECK_STR(err, "element 0: -1 out of range for UINT8 [0, 255]");
  CHECK_INT(dec("[-0]", OX_DT_UINT8, 1, u8), OX_EINVALID);
  CHECK_STR(err, "element 0: expected an unsigned integer, got -0");
  CHECK_INT(dec("[-129]", OX_DT_INT8, 1, i8), OX_EINVALID);
  CHECK_STR(err, "element 0: -129 out of range for INT8 [-128, 127]");
  CHECK_INT(dec("[18446744073709551616]", OX_DT_UINT64, 1, u64), OX_EINVALID);
  CHECK_STR(err,
            "element 0: 18446744073709551616 out of range for UINT64 [0, 18446744073709551615]");
  CHECK_INT(dec("[1, -9223372036854775809]", OX_DT_INT64, 2, i64), OX_EINVALID);
  CHECK_STR(err,
            "element 1: -9223372036854775809 out of range for INT64 [-9223372036854775808, "
            "9223372036854775807]");
  CHECK_INT(dec("[9223372036854775808]", OX_DT_INT64, 1, i64), OX_EINVALID);
  CHECK_INT(dec("[99999999999999999999999999999999999999]", OX_DT_UINT64, 1, u64), OX_EINVALID);
  CHECK(strstr(err, "out of range for UINT64") != NULL);
  CHECK_INT(dec("[1, 1.5]", OX_DT_INT64, 2, i64), OX_EINVALID);
  CHECK_STR(err, "element 1: expected an integer, got 1.5");
  CHECK_INT(dec("[1.0]", OX_DT_INT64, 1, i64), OX_EINVALID);
  CHECK_STR(err, "element 0: expected an integer, got 1.0");
  CHECK_INT(dec("[1e3]", OX_DT_INT32, 1, i64), OX_EINVALID);
  CHECK_STR(err, "element 0: expected an integer, got 1e3");
  CHECK_INT(dec("[01]", OX_DT_INT32, 1, i64), OX_EINVALID);
  CHECK_STR(err, "element 0: invalid number 01");
  CHECK_INT(dec("[+1]", OX_DT_INT32, 1, i64), OX_EINVALID);
  CHECK_STR(err, "element 0: expected an integer, got +1");
  CHECK_INT(dec("[-]", OX_DT_INT32, 1, i64), OX_EINVALID);
  CHECK_STR(err, "element 0: invalid number -");
  CHECK_INT(dec("[\"1\"]", OX_DT_UINT32, 1, i64), OX_EINVALID);
  CHECK_STR(err, "element 0: expected an unsigned integer, got \"1\"");
  CHECK_INT(dec("[true]", OX_DT_INT8, 1, i64), OX_EINVALID);
  CHECK_STR(err, "element 0: expected an integer, got true");
}

TEST(bool_round_trip_and_rejections) {
  uint8_t b[3];
  CHECK_INT(dec("[true,false , true]", OX_DT_BOOL, 3, b), 0);
  CHECK(b[0] == 1 && b[1] == 0 && b[2] == 1);
  uint8_t nz[4] = {0, 1, 2, 255};
  CHECK_STR(enc(OX_DT_BOOL, nz, 4), "[false,true,true,true]");
  CHECK_INT(dec("[1]", OX_DT_BOOL, 1, b), OX_EINVALID);
  CHECK_STR(err, "element 0: expected true or false, got 1");
  CHECK_INT(dec("[\"true\"]", OX_DT_BOOL, 1, b), OX_EINVALID);
  CHECK_STR(err, "element 0: expected true or false, got \"true\"");
  CHECK_INT(dec("[null]", OX_DT_BOOL, 1, b), OX_EINVALID);
  CHECK_INT(dec("[tru]", OX_DT_BOOL, 1, b), OX_EINVALID);
  CHECK_INT(dec("[True]", OX_DT_BOOL, 1, b), OX_EINVALID);
  CHECK_INT(dec("[truex]", OX_DT_BOOL, 1, b), OX_EINVALID);
  CHECK_STR(err, "invalid JSON at byte 5: expected ',' or ']'");
}

TEST(bytes_round_trip) {
  ox_slice_t s[6];
  const char *json =
      "[\"abc\", \"\", \"a\\\"b\\\\c\\n\", \"\\u00e9\\ud83d\\ude00/\\/\", "
      "\"\xc3\xa9\xf0\x9f\x98\x80\", \"\\u0000\\u001f\x7f\"]";
  CHECK_INT(dec(json, OX_DT_BYTES, 6, s), 0);
  CHECK(s[0].len == 3 && memcmp(s[0].ptr, "abc", 3) == 0);
  CHECK(s[0].ptr == json + 2); /* no escapes: borrowed from the text */
  CHECK(s[1].len == 0);
  CHECK(s[2].len == 6 && memcmp(s[2].ptr, "a\"b\\c\n", 6) == 0);
  CHECK(s[3].len == 8 && memcmp(s[3].ptr, "\xc3\xa9\xf0\x9f\x98\x80//", 8) == 0);
  CHECK(s[4].len == 6 && memcmp(s[4].ptr, "\xc3\xa9\xf0\x9f\x98\x80", 6) == 0);
  CHECK(s[5].len == 3 && memcmp(s[5].ptr, "\0\x1f\x7f", 3) == 0);
  CHECK_STR(enc(OX_DT_BYTES, s, 6),
            "[\"abc\",\"\",\"a\\\"b\\\\c\\n\",\"\xc3\xa9\xf0\x9f\x98\x80//\","
            "\"\xc3\xa9\xf0\x9f\x98\x80\",\"\\u0000\\u001f\x7f\"]");
  /* invalid UTF-8 (stray continuation, 0xff, overlong 2- 3- and 4-byte forms, surrogate, above
   * U+10FFFF, truncated) is escaped; the boundary cases next to each exclusion pass */
  ox_slice_t raw[4] = {
      OX_SLICE_LIT("\x80\xff\xc0\x80\xed\xa0\x80 \xe2\x82"),
      OX_SLICE_LIT("\b\f\r\t\x01"),
      OX_SLICE_LIT("\xe0\x9f\xbf\xf0\x8f\xbf\xbf\xf4\x90\x80\x80\xc1\xbf"),
      OX_SLICE_LIT("\xe0\xa0\x80\xed\x9f\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\xc2\x80"),
  };
  CHECK_STR(enc(OX_DT_BYTES, raw, 4),
            "[\"\\u0080\\u00ff\\u00c0\\u0080\\u00ed\\u00a0\\u0080 \\u00e2\\u0082\","
            "\"\\b\\f\\r\\t\\u0001\","
            "\"\\u00e0\\u009f\\u00bf\\u00f0\\u008f\\u00bf\\u00bf\\u00f4\\u0090\\u0080\\u0080"
            "\\u00c1\\u00bf\","
            "\"\xe0\xa0\x80\xed\x9f\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\xc2\x80\"]");
  /* and the decoder accepts exactly the same set */
  ox_slice_t back[1];
  CHECK_INT(dec("[\"\xe0\xa0\x80\xed\x9f\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\xc2\x80\"]",
                OX_DT_BYTES, 1, back),
            0);
  static const char *const bad[] = {
      "[\"\xe0\x9f\xbf\"]", "[\"\xf0\x8f\xbf\xbf\"]", "[\"\xf4\x90\x80\x80\"]",
      "[\"\xc1\xbf\"]",     "[\"\xed\xa0\x80\"]",     "[\"\xe2\x82\"]",
      "[\"\x80\"]"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_INT(dec(bad[i], OX_DT_BYTES, 1, back), OX_EINVALID);
}

TEST(bytes_rejections) {
  ox_slice_t s[2];
  CHECK_INT(dec("[1]", OX_DT_BYTES, 1, s), OX_EINVALID);
  CHECK_STR(err, "element 0: expected a string, got 1");
  CHECK_INT(dec("[\"a\tb\"]", OX_DT_BYTES, 1, s), OX_EINVALID);
  CHECK_STR(err, "element 0: control character in string");
  CHECK_INT(dec("[\"a\", \"\\x\"]", OX_DT_BYTES, 2, s), OX_EINVALID);
  CHECK_STR(err, "element 1: invalid escape in string");
  CHECK_INT(dec("[\"\\ud800\"]", OX_DT_BYTES, 1, s), OX_EINVALID); /* lone surrogate */
  CHECK_INT(dec("[\"\xff\"]", OX_DT_BYTES, 1, s), OX_EINVALID);
  CHECK_STR(err, "element 0: invalid UTF-8 in string");
  CHECK_INT(dec("[\"\xed\xa0\x80\"]", OX_DT_BYTES, 1, s), OX_EINVALID);
  CHECK_INT(dec("[\"abc]", OX_DT_BYTES, 1, s), OX_EINVALID);
  CHECK_STR(err, "element 0: unterminated string");
  CHECK_INT(dec("[\"abc\\\"]", OX_DT_BYTES, 1, s), OX_EINVALID);
  CHECK_STR(err, "element 0: unterminated string");
  /* out of memory while unescaping */
  ox_arena_t small;
  ox_arena_init(&small);
  ox_arena_fail_after = 1;
  const char *j = "[\"\\n\"]";
  CHECK_INT(
      ox_tensor_json_decode(ox_slice(j, strlen(j)), OX_DT_BYTES, 1, s, &small, err, sizeof err),
      OX_ENOMEM);
  ox_arena_fail_after = 0;
  ox_arena_free(&small);
}

TEST(float_rejections) {
  float f[2];
  static const struct {
    const char *json, *msg;
  } cases[] = {
      {"[\"1.5\"]", "element 0: expected a number, got \"1.5\""},
      {"[NaN]", "element 0: expected a number, got NaN"},
      {"[1, Infinity]", "element 1: expected a number, got Infinity"},
      {"[-Infinity]", "element 0: invalid number -Infinity"},
      {"[nan]", "element 0: expected a number, got nan"},
      {"[null]", "element 0: expected a number, got null"},
      {"[true]", "element 0: expected a number, got true"},
      {"[.5]", "element 0: expected a number, got .5"},
      {"[1.]", "element 0: invalid number 1."},
      {"[01.5]", "element 0: invalid number 01.5"},
      {"[+1]", "element 0: expected a number, got +1"},
      {"[0x1p3]", "invalid JSON at byte 2: expected ',' or ']'"},
      {"[1e]", "element 0: invalid number 1e"},
      {"[{}]", "element 0: expected a number, got {"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    CHECK_INT(dec(cases[i].json, OX_DT_FP32, 1 + (i == 2), f), OX_EINVALID);
    CHECK_STR(err, cases[i].msg);
  }
}

TEST(structure_and_counts) {
  float f[8];
  CHECK_INT(dec("[1,2,3,4,5]", OX_DT_FP32, 6, f), OX_EINVALID);
  CHECK_STR(err, "expected 6 elements, got 5");
  CHECK_INT(dec("[1,2,3,4,5,6,7]", OX_DT_FP32, 6, f), OX_EINVALID);
  CHECK_STR(err, "expected 6 elements, got 7");
  CHECK_INT(dec("[[1,2],[3,4]]", OX_DT_FP32, 4, f), 0);
  CHECK(f[0] == 1 && f[1] == 2 && f[2] == 3 && f[3] == 4);
  CHECK_INT(dec(" \t\r\n[ [ ] , [ [ 5 ] ] ,6 , [ ] ] \n", OX_DT_FP32, 2, f), 0);
  CHECK(f[0] == 5 && f[1] == 6);
  CHECK_INT(dec("[]", OX_DT_FP32, 0, f), 0);
  CHECK_INT(dec("[[[]],[]]", OX_DT_FP32, 0, f), 0);
  CHECK_INT(dec("[]", OX_DT_FP32, 1, f), OX_EINVALID);
  CHECK_STR(err, "expected 1 elements, got 0");
  static const struct {
    const char *json, *msg;
  } cases[] = {
      {"", "data must be a JSON array, got end of data"},
      {"   ", "data must be a JSON array, got end of data"},
      {"1", "data must be a JSON array, got 1"},
      {"{\"a\":1}", "data must be a JSON array, got {"},
      {"[1", "invalid JSON: data ends inside an array"},
      {"[1,", "invalid JSON: data ends inside an array"},
      {"[[1]", "invalid JSON: data ends inside an array"},
      {"[", "invalid JSON: data ends inside an array"},
      {"[1,]", "invalid JSON at byte 3: ']' after ','"},
      {"[1 2]", "invalid JSON at byte 3: expected ',' or ']'"},
      {"[1]]", "invalid JSON at byte 3: text after the array"},
      {"[1] x", "invalid JSON at byte 4: text after the array"},
      {"[1][2]", "invalid JSON at byte 3: text after the array"},
      {"[,1]", "element 0: expected a number, got ,"},
      {"[1,,2]", "element 1: expected a number, got ,"},
      {"[1\v]", "invalid JSON at byte 2: expected ',' or ']'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int rc = dec(cases[i].json, OX_DT_FP32, 1, f);
    CHECK_INT(rc, OX_EINVALID);
    if (strcmp(err, cases[i].msg) != 0) fprintf(stderr, "  input '%s'\n", cases[i].json);
    CHECK_STR(err, cases[i].msg);
  }
  CHECK_INT(dec("[1]", OX_DT_INVALID, 1, f), OX_EINVALID);
  CHECK_INT(dec("[1]", (ox_dtype_t)99, 1, f), OX_EINVALID);
}

TEST(depth_limit) {
  char json[300];
  float f;
  for (int depth = 63; depth <= 66; depth++) {
    int n = 0;
    for (int i = 0; i < depth; i++) json[n++] = '[';
    json[n++] = '7';
    for (int i = 0; i < depth; i++) json[n++] = ']';
    json[n] = 0;
    f = 0;
    int rc = dec(json, OX_DT_FP32, 1, &f);
    if (depth <= 64) {
      CHECK_INT(rc, 0);
      CHECK(f == 7);
    } else {
      CHECK_INT(rc, OX_EDEPTH);
      CHECK_STR(err, "arrays nested deeper than 64");
    }
  }
  /* a megabyte of '[' stops at the 65th */
  size_t big = 1 << 20;
  char *deep = malloc(big + 1);
  memset(deep, '[', big);
  deep[big] = 0;
  CHECK_INT(dec(deep, OX_DT_FP32, 1, &f), OX_EDEPTH);
  free(deep);
}

TEST(error_buffer_small_or_absent) {
  float f;
  char tiny[8];
  const char *j = "[\"no\"]";
  CHECK_INT(
      ox_tensor_json_decode(ox_slice(j, strlen(j)), OX_DT_FP32, 1, &f, NULL, tiny, sizeof tiny),
      OX_EINVALID);
  CHECK_STR(tiny, "element");
  CHECK_INT(ox_tensor_json_decode(ox_slice(j, strlen(j)), OX_DT_FP32, 1, &f, NULL, NULL, 0),
            OX_EINVALID);
  /* long tokens are shortened in messages */
  char long_tok[200];
  memset(long_tok, '9', sizeof long_tok);
  long_tok[0] = '[';
  long_tok[198] = ']';
  long_tok[199] = 0;
  uint8_t u8;
  CHECK_INT(dec(long_tok, OX_DT_UINT8, 1, &u8), OX_EINVALID);
  CHECK(strlen(err) < 120 && strstr(err, "...") != NULL);
}

TEST(encode_appends_and_empty) {
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_buf_puts(&b, "{\"data\":"), 0);
  float f[2] = {1.5f, -2};
  CHECK_INT(ox_tensor_json_encode(&b, OX_DT_FP32, f, 2), 0);
  CHECK_INT(ox_tensor_json_encode(&b, OX_DT_INT32, NULL, 0), 0);
  CHECK_INT(ox_tensor_json_encode(&b, OX_DT_BYTES, NULL, 0), 0);
  CHECK(b.len == 20 && memcmp(b.data, "{\"data\":[1.5,-2][][]", 20) == 0);
  CHECK_INT(ox_tensor_json_encode(&b, OX_DT_INVALID, f, 1), OX_EINVALID);
  ox_buf_free(&b);
  /* the reserved bound is an upper bound: worst-case elements, then a tight buffer */
  double worst[3] = {-0.0000012345678901234567, -1e20, -1.2345678901234568e-300};
  CHECK_STR(enc(OX_DT_FP64, worst, 3),
            "[-0.0000012345678901234567,-100000000000000000000,-1.2345678901234568e-300]");
  CHECK_INT(strlen(fmt64(worst[0])), 25);
  CHECK_INT(strlen(fmt32(-1e20f)), 22);
}

/* The encoder reserves its upper bound once and then writes unchecked: a buffer one byte too
 * small for the longest elements of each type must be grown, not overrun (ASan would see it). */
TEST(encode_bound_covers_worst_case) {
  enum { N = 1000 };
  static union {
    uint8_t u8[N];
    uint16_t u16[N];
    uint32_t u32[N];
    uint64_t u64[N];
    float f32[N];
    double f64[N];
    ox_slice_t s[N];
  } v;
  for (int dt = OX_DT_BOOL; dt <= OX_DT_BYTES; dt++) {
    for (int i = 0; i < N; i++) {
      switch (dt) {
        case OX_DT_BOOL:
          v.u8[i] = 0;
          break; /* "false" */
        case OX_DT_UINT8:
          v.u8[i] = UINT8_MAX;
          break;
        case OX_DT_INT8:
          v.u8[i] = (uint8_t)INT8_MIN;
          break;
        case OX_DT_UINT16:
          v.u16[i] = UINT16_MAX;
          break;
        case OX_DT_INT16:
          v.u16[i] = (uint16_t)INT16_MIN;
          break;
        case OX_DT_FP16:
          v.u16[i] = 0x8001;
          break; /* -5.9604645e-8 */
        case OX_DT_BF16:
          v.u16[i] = 0xe0ae;
          break; /* -100304170000000000000 */
        case OX_DT_UINT32:
          v.u32[i] = UINT32_MAX;
          break;
        case OX_DT_INT32:
          v.u32[i] = (uint32_t)INT32_MIN;
          break;
        case OX_DT_FP32:
          v.f32[i] = -1e20f;
          break;
        case OX_DT_UINT64:
          v.u64[i] = UINT64_MAX;
          break;
        case OX_DT_INT64:
          v.u64[i] = (uint64_t)INT64_MIN;
          break;
        case OX_DT_FP64:
          v.f64[i] = -0.0000012345678901234567;
          break;
        case OX_DT_BYTES:
          v.s[i] = OX_SLICE_LIT("\x01\x02\x03");
          break;
      }
    }
    ox_buf_t b;
    ox_buf_init(&b);
    CHECK_INT(ox_tensor_json_encode(&b, (ox_dtype_t)dt, &v, N), 0);
    ox_buf_t tight = {malloc(b.len - 1), 0, b.len - 1};
    CHECK_INT(ox_tensor_json_encode(&tight, (ox_dtype_t)dt, &v, N), 0);
    CHECK(tight.len == b.len && memcmp(tight.data, b.data, b.len) == 0);
    if (dt == OX_DT_BF16)
      CHECK(memcmp(b.data, "[-100304170000000000000,", 24) == 0 && b.len == 23 * N + 1);
    ox_buf_free(&tight);
    ox_buf_free(&b);
  }
}

/* Random bit patterns through encode and decode, many per call: bitwise identical. */
TEST(random_round_trip_bitwise) {
  enum { N = 4096 };
  static float f[N], f2[N];
  static double d[N], d2[N];
  static int64_t i[N], i2[N];
  ox_buf_t b;
  for (int round = 0; round < 20; round++) {
    for (int k = 0; k < N; k++) {
      do f[k] = from32((uint32_t)rnd());
      while (!isfinite(f[k]));
      do d[k] = from64(rnd());
      while (!isfinite(d[k]));
      i[k] = (int64_t)rnd() >> (rnd() % 64);
    }
    ox_buf_init(&b);
    CHECK_INT(ox_tensor_json_encode(&b, OX_DT_FP32, f, N), 0);
    CHECK_INT(
        ox_tensor_json_decode(ox_slice(b.data, b.len), OX_DT_FP32, N, f2, NULL, err, sizeof err),
        0);
    CHECK_MEM(f, f2, sizeof f);
    b.len = 0;
    CHECK_INT(ox_tensor_json_encode(&b, OX_DT_FP64, d, N), 0);
    CHECK_INT(
        ox_tensor_json_decode(ox_slice(b.data, b.len), OX_DT_FP64, N, d2, NULL, err, sizeof err),
        0);
    CHECK_MEM(d, d2, sizeof d);
    b.len = 0;
    CHECK_INT(ox_tensor_json_encode(&b, OX_DT_INT64, i, N), 0);
    CHECK_INT(
        ox_tensor_json_decode(ox_slice(b.data, b.len), OX_DT_INT64, N, i2, NULL, err, sizeof err),
        0);
    CHECK_MEM(i, i2, sizeof i);
    ox_buf_free(&b);
  }
}

/* Input that ends exactly where an unreadable page begins: any read past the end faults. */
TEST(guard_page) {
  long pg = sysconf(_SC_PAGESIZE);
  char *mem =
      mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(mem != MAP_FAILED);
  if (mem == MAP_FAILED) return;
  CHECK_INT(mprotect(mem + pg, (size_t)pg, PROT_NONE), 0);
  static const struct {
    ox_dtype_t dt;
    const char *json;
    int rc;
  } cases[] = {
      {OX_DT_FP32, "[1.5e3]", 0},
      {OX_DT_FP32, "[0.12345678]", 0}, /* eight digits at once, up to the last byte */
      {OX_DT_FP32, "[0.1234567890123456789", OX_EINVALID},
      {OX_DT_FP64, "[-0.0000000000000000000012345678901234567]", 0},
      {OX_DT_FP32, "[1.5e3", OX_EINVALID},
      {OX_DT_FP32, "[1.5e", OX_EINVALID},
      {OX_DT_FP32, "[1.", OX_EINVALID},
      {OX_DT_FP32, "[-", OX_EINVALID},
      {OX_DT_FP32, "[12", OX_EINVALID},
      {OX_DT_FP64, "[0", OX_EINVALID},
      {OX_DT_FP16, "[1]  ", 0},
      {OX_DT_INT64, "[-12", OX_EINVALID},
      {OX_DT_INT64, "[-", OX_EINVALID},
      {OX_DT_UINT8, "[255]", 0},
      {OX_DT_UINT8, "[25", OX_EINVALID},
      {OX_DT_BOOL, "[tru", OX_EINVALID},
      {OX_DT_BOOL, "[true", OX_EINVALID},
      {OX_DT_BOOL, "[fals", OX_EINVALID},
      {OX_DT_BOOL, "[false]", 0},
      {OX_DT_BYTES, "[\"ab", OX_EINVALID},
      {OX_DT_BYTES, "[\"ab\\", OX_EINVALID},
      {OX_DT_BYTES, "[\"\xe2\x82", OX_EINVALID},
      {OX_DT_BYTES, "[\"a\\n\"]", 0},
      {OX_DT_FP32, "[", OX_EINVALID},
      {OX_DT_FP32, "[[", OX_EINVALID},
      {OX_DT_FP32, "[1,", OX_EINVALID},
      {OX_DT_FP32, " ", OX_EINVALID},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i].json);
    char *p = mem + pg - n;
    memcpy(p, cases[i].json, n);
    uint64_t out[2];
    int rc = ox_tensor_json_decode(ox_slice(p, n), cases[i].dt, 1, out, &arena, err, sizeof err);
    if (rc != cases[i].rc) fprintf(stderr, "  input '%s': %s\n", cases[i].json, err);
    CHECK_INT(rc, cases[i].rc);
  }
  /* the number parsers on their own, every prefix of a number flush against the page */
  const char *num = "-1.25e-3";
  for (size_t k = 1; k <= strlen(num); k++) {
    double v;
    float f;
    memcpy(mem + pg - k, num, k);
    CHECK_INT(ox_parse_f64(mem + pg - k, k, &v), k == 1 || k == 3 || k == 6 || k == 7 ? 0 : k);
    CHECK_INT(ox_parse_f32(mem + pg - k, k, &f), k == 1 || k == 3 || k == 6 || k == 7 ? 0 : k);
  }
  munmap(mem, (size_t)pg * 2);
}

/* Issue 9 finding 2: a model output holding NaN or an infinity must not make the answer invalid
 * JSON. Every float type encodes them as the strings "NaN", "Infinity", "-Infinity", between
 * ordinary numbers, and the whole array passes the strict JSON validator. */
TEST(nonfinite_outputs_are_valid_json) {
  const char *want = "[1,\"NaN\",\"Infinity\",-2,\"-Infinity\",\"NaN\"]";
  float f32[6] = {1, NAN, INFINITY, -2, -INFINITY, -NAN};
  double f64[6] = {1, NAN, INFINITY, -2, -INFINITY, -NAN};
  uint16_t f16[6] = {0x3c00, 0x7e00, 0x7c00, 0xc000, 0xfc00, 0xfe01};
  uint16_t bf16[6] = {0x3f80, 0x7fc0, 0x7f80, 0xc000, 0xff80, 0xffc1};
  struct {
    ox_dtype_t dt;
    const void *v;
  } cases[] = {{OX_DT_FP32, f32}, {OX_DT_FP64, f64}, {OX_DT_FP16, f16}, {OX_DT_BF16, bf16}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *text = enc(cases[i].dt, cases[i].v, 6);
    CHECK_STR(text, want);
    ox_json_t js;
    ox_json_init(&js, text, strlen(text));
    CHECK_INT(ox_json_validate(&js), 0);
  }
  /* the worst case per element ("-Infinity" quoted) stays inside the reserved bound */
  static float many[4096];
  for (size_t i = 0; i < 4096; i++) many[i] = -INFINITY;
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_tensor_json_encode(&b, OX_DT_FP32, many, 4096), 0);
  CHECK_INT(b.len, 2 + 4096 * 12 - 1);
  ox_buf_free(&b);
}

TEST_MAIN(T(numconv_shortest_known_values), T(numconv_parse_grammar),
          T(numconv_random_doubles_shortest_and_exact), T(numconv_random_floats_shortest_and_exact),
          T(numconv_parse_f32_correctly_rounded), T(numconv_parse_random_decimals),
          T(half_conversions), T(fp32_round_trip), T(fp64_round_trip), T(fp16_round_trip),
          T(bf16_round_trip), T(integer_extremes), T(integer_rejections),
          T(bool_round_trip_and_rejections), T(bytes_round_trip), T(bytes_rejections),
          T(float_rejections), T(structure_and_counts), T(depth_limit),
          T(error_buffer_small_or_absent), T(encode_appends_and_empty),
          T(encode_bound_covers_worst_case), T(nonfinite_outputs_are_valid_json),
          T(random_round_trip_bitwise), T(guard_page))
