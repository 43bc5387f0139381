/* numconv.cc: the C interface of numconv.h over fast_float and dragonbox (both header-only).
 *
 * The only C++ in onnxd, kept to what the two libraries need: no exceptions, no RTTI, no
 * allocation, nothing from libstdc++ at run time (only templates and constexpr tables are
 * instantiated here; `nm -C` on the object shows no undefined std:: symbols).
 *
 * Parsing: fast_float::from_chars accepts more than JSON does ("1.", ".5", "inf", "nan(...)"),
 * so the token is first checked against the JSON number grammar by a small scanner here, then
 * handed to fast_float, which rounds correctly (Clinger's fast path, Eisel-Lemire, and a
 * big-integer fallback for the rare hard cases).
 * Formatting: dragonbox gives the shortest decimal significand and exponent; the layout is
 * JavaScript's Number.prototype.toString (ECMA-262 Number::toString), which every JSON reader
 * accepts and people find natural: plain digits while the decimal point sits within 21
 * places, exponent form otherwise.
 */
#include "proto/numconv.h"

#include <stdint.h>
#include <string.h>

#include <fast_float/fast_float.h>
#include <dragonbox/dragonbox.h>

namespace {

inline bool is_digit(char c) { return (unsigned char)(c - '0') < 10; }

/* Length of the JSON number (RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?) at
 * s[0..len), or 0 if there is none or it runs on into something no number can contain ("01",
 * "1.", "1.2.3", "1e", "1e5e"): the caller then reports the whole token as invalid rather
 * than accepting a prefix of it. */
inline size_t json_number_len(const char *s, size_t len) {
  const char *p = s, *end = s + len;
  if (p < end && *p == '-') p++;
  if (p == end) return 0;
  if (*p == '0') {
    p++;
  } else if (is_digit(*p)) {
    p++;
    while (p < end && is_digit(*p)) p++;
  } else {
    return 0;
  }
  if (p < end && *p == '.') {
    p++;
    if (p == end || !is_digit(*p)) return 0;
    p++;
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < end && (*p == '+' || *p == '-')) p++;
    if (p == end || !is_digit(*p)) return 0;
    p++;
    while (p < end && is_digit(*p)) p++;
  }
  if (p < end) {
    char c = *p;
    if (is_digit(c) || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') return 0;
  }
  return (size_t)(p - s);
}

template <typename T>
inline size_t parse_json_number(const char *s, size_t len, T *out) {
  size_t n = json_number_len(s, len);
  if (n == 0) return 0;
  T v;
  fast_float::from_chars_result r =
      fast_float::from_chars(s, s + n, v, fast_float::chars_format::general);
  // Cannot fail on a token the grammar accepted; checked anyway so a library change shows up as
  // "not a number" rather than as a wrong value.
  if (r.ec != std::errc() || r.ptr != s + n) return 0;
  *out = v;
  return n;
}

const char kDigitPairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

inline int count_digits(uint64_t v) {
  static const uint64_t kPow10[20] = {1ULL,
                                      10ULL,
                                      100ULL,
                                      1000ULL,
                                      10000ULL,
                                      100000ULL,
                                      1000000ULL,
                                      10000000ULL,
                                      100000000ULL,
                                      1000000000ULL,
                                      10000000000ULL,
                                      100000000000ULL,
                                      1000000000000ULL,
                                      10000000000000ULL,
                                      100000000000000ULL,
                                      1000000000000000ULL,
                                      10000000000000000ULL,
                                      100000000000000000ULL,
                                      1000000000000000000ULL,
                                      10000000000000000000ULL};
  int bits = 64 - __builtin_clzll(v | 1);
  int k = (bits * 1233) >> 12;  // floor(bits * log10(2)), an underestimate by at most one
  return k + (v >= kPow10[k]);
}

/* Writes the k decimal digits of v ending just before end. */
inline void write_digits(char *end, uint64_t v) {
  while (v >= 100) {
    unsigned r = (unsigned)(v % 100);
    v /= 100;
    end -= 2;
    memcpy(end, kDigitPairs + 2 * r, 2);
  }
  if (v >= 10) {
    end -= 2;
    memcpy(end, kDigitPairs + 2 * v, 2);
  } else {
    *--end = (char)('0' + v);
  }
}

/* Lays out significand * 10^exponent (significand without trailing zeros, as dragonbox
 * returns it) the way ECMA-262 Number::toString does. At most 25 bytes for a double. */
inline size_t layout(bool negative, uint64_t significand, int exponent, char *out) {
  char *o = out;
  if (negative) *o++ = '-';
  int k = count_digits(significand);
  int n = exponent + k;  // position of the decimal point relative to the first digit
  if (k <= n && n <= 21) {
    write_digits(o + k, significand);
    memset(o + k, '0', (size_t)(n - k));
    o += n;
  } else if (0 < n && n <= 21) {
    write_digits(o + k, significand);
    memmove(o + n + 1, o + n, (size_t)(k - n));
    o[n] = '.';
    o += k + 1;
  } else if (-6 < n && n <= 0) {
    o[0] = '0';
    o[1] = '.';
    memset(o + 2, '0', (size_t)-n);
    o += 2 - n;
    write_digits(o + k, significand);
    o += k;
  } else {
    write_digits(o + 1 + k, significand);
    o[0] = o[1];
    if (k > 1) {
      o[1] = '.';
      o += k + 1;
    } else {
      o += 1;
    }
    int e = n - 1;
    *o++ = 'e';
    *o++ = e < 0 ? '-' : '+';
    unsigned ue = (unsigned)(e < 0 ? -e : e);
    int ek = ue >= 100 ? 3 : ue >= 10 ? 2 : 1;
    write_digits(o + ek, ue);
    o += ek;
  }
  return (size_t)(o - out);
}

/* Zero, and the values numconv.h excludes: tensor_json.c prints NaN and the infinities
 * itself, but another caller passing one gets readable text rather than garbage. */
inline size_t special(const char *s, char *out) {
  size_t n = strlen(s);
  memcpy(out, s, n);
  return n;
}

}  // namespace

extern "C" {

size_t ox_parse_f64(const char *s, size_t len, double *out) {
  return parse_json_number(s, len, out);
}

size_t ox_parse_f32(const char *s, size_t len, float *out) {
  return parse_json_number(s, len, out);
}

size_t ox_format_f64(double v, char *out) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  bool negative = bits >> 63;
  if ((bits & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL)
    return special((bits << 12) ? "NaN" : negative ? "-Infinity" : "Infinity", out);
  if ((bits << 1) == 0) return special(negative ? "-0" : "0", out);
  auto d = jkj::dragonbox::to_decimal(v);
  return layout(d.is_negative, d.significand, d.exponent, out);
}

size_t ox_format_f32(float v, char *out) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  bool negative = bits >> 31;
  if ((bits & 0x7f800000U) == 0x7f800000U)
    return special((bits << 9) ? "NaN" : negative ? "-Infinity" : "Infinity", out);
  if ((bits << 1) == 0) return special(negative ? "-0" : "0", out);
  auto d = jkj::dragonbox::to_decimal(v);
  return layout(d.is_negative, d.significand, d.exponent, out);
}

}  // extern "C"
