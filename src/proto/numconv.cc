/* numconv.cc: the C interface of numconv.h over fast_float and dragonbox (both header-only).
 *
 * The only C++ in onnxd, kept to what the two libraries need: no exceptions, no RTTI, no
 * allocation, nothing from libstdc++ at run time (only templates and constexpr tables are
 * instantiated here; `nm -C` on the object shows no undefined std:: symbols).
 *
 * Parsing: one pass over the token checks the JSON number grammar (fast_float::from_chars
 * alone would accept "1.", ".5", "inf", "nan(...)") and gathers up to 19 significant digits.
 * Typical tensor text (up to 17 digits, small exponents) is then converted by Clinger's exact
 * fast path, done here so the token is not scanned twice; anything else goes to
 * fast_float::from_chars, which is exact in every case (Eisel-Lemire, then big integers).
 * Formatting: dragonbox gives the shortest decimal significand and exponent; the layout is
 * JavaScript's Number.prototype.toString (ECMA-262 Number::toString), which every JSON reader
 * accepts and people find natural: plain digits while the decimal point sits within 21
 * places, exponent form otherwise.
 */
#include "proto/numconv.h"

#include <float.h>
#include <stdint.h>
#include <string.h>

#include <fast_float/fast_float.h>
#include <dragonbox/dragonbox.h>

namespace {

inline bool is_digit(char c) {
  return (unsigned char)(c - '0') < 10;
}

/* Eight ASCII digits at once (SWAR, as fast_float and simdjson do): fractions of image data are
 * mostly 8 to 17 digits long. Little-endian loads. */
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "SWAR digit parsing assumes little-endian");

inline uint64_t load8(const char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

inline bool eight_digits(uint64_t v) {
  return (((v & 0xF0F0F0F0F0F0F0F0ULL) |
           (((v + 0x0606060606060606ULL) & 0xF0F0F0F0F0F0F0F0ULL) >> 4)) == 0x3333333333333333ULL);
}

inline uint32_t eight_digits_value(uint64_t v) {
  const uint64_t mask = 0x000000FF000000FFULL;
  const uint64_t mul1 = 0x000F424000000064ULL; /* 100 + (1000000 << 32) */
  const uint64_t mul2 = 0x0000271000000001ULL; /* 1 + (10000 << 32) */
  v -= 0x3030303030303030ULL;
  v = (v * 10) + (v >> 8);
  v = (((v & mask) * mul1) + (((v >> 16) & mask) * mul2)) >> 32;
  return (uint32_t)v;
}

/* Clinger's fast path needs IEEE double arithmetic rounding to nearest, with no excess
 * precision: true of x86-64 (SSE2) and AArch64 unless someone calls fesetround, which onnxd
 * never does. */
static_assert(FLT_EVAL_METHOD == 0, "the fast path needs double arithmetic in double precision");

const double kExactPow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* m * 10^e correctly rounded to double, for m <= 2^53 and |e| <= 22 (both operands exact, so
 * one IEEE operation rounds once: Clinger 1990). */
inline double clinger(uint64_t m, int64_t e) {
  return e < 0 ? (double)m / kExactPow10[-e] : (double)m * kExactPow10[e];
}

/* Whether a double in float's normal range lies exactly halfway between two floats: its 29
 * mantissa bits below float precision are 1000...0. Only there can rounding to double first
 * change the float result (the halfway points are themselves doubles, so a decimal below one
 * rounds to a double at most equal to it). */
inline bool float_halfway(double d) {
  uint64_t b;
  memcpy(&b, &d, 8);
  return (b & ((1ULL << 29) - 1)) == (1ULL << 28);
}

const uint64_t kTwo53 = 1ULL << 53;

/* The decimal m * 10^e (m < 2^64 exact, m > 0) as float without going to fast_float, when it
 * can be done exactly; false to fall back. Up to 2^53: Clinger in double, then to float unless
 * halfway. Above (the 17-digit reprs Python writes for float32 data): drop the last digits so
 * m' < 2^53 and the value lies in [m', m' + 1) * 10^e'; rounding is monotonic, so when both
 * ends round to the same float, so does the value. */
inline bool fast_path(uint64_t m, int64_t e, float *out) {
  if (m <= kTwo53) {
    if (e < -22 || e > 22) return false;
    double d = clinger(m, e);
    if (float_halfway(d)) return false;
    *out = (float)d;
    return true;
  }
  do {
    m /= 10;
    e++;
  } while (m >= kTwo53);
  if (e < -22 || e > 22) return false;
  double lo = clinger(m, e), hi = clinger(m + 1, e);
  float f = (float)lo;
  if (f != (float)hi || float_halfway(lo) || float_halfway(hi)) return false;
  *out = f;
  return true;
}

inline bool fast_path(uint64_t m, int64_t e, double *out) {
  if (m > kTwo53 || e < -22 || e > 22) return false;
  *out = clinger(m, e);
  return true;
}

/* Scans the JSON number (RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?) at s[0..len)
 * and converts it: the fast paths above for up to 19 significant digits, fast_float for the
 * rest (which rescans the token; it is exact in every case). Returns the token length, or 0
 * if there is no number or it runs on into something no number can contain ("01", "1.",
 * "1.2.3", "1e", "1e5e"): the caller then reports the whole token rather than a prefix. */
template <typename T>
inline size_t parse_json_number(const char *s, size_t len, T *out) {
  const char *p = s, *end = s + len;
  bool negative = false;
  if (p < end && *p == '-') {
    negative = true;
    p++;
  }
  if (p == end) return 0;
  uint64_t m = 0;
  const char *digits = p;
  if (*p == '0') {
    p++;
  } else if (is_digit(*p)) {
    do m = m * 10 + (uint64_t)(*p++ - '0');
    while (p < end && is_digit(*p));
  } else {
    return 0;
  }
  size_t int_digits = (size_t)(p - digits), frac_digits = 0;
  if (p < end && *p == '.') {
    const char *frac = ++p;
    while (end - p >= 8) {
      uint64_t v = load8(p);
      if (!eight_digits(v)) break;
      m = m * 100000000 + eight_digits_value(v); /* may wrap with > 19 digits: checked below */
      p += 8;
    }
    while (p < end && is_digit(*p)) m = m * 10 + (uint64_t)(*p++ - '0');
    frac_digits = (size_t)(p - frac);
    if (frac_digits == 0) return 0;
  }
  int64_t e = -(int64_t)frac_digits;
  if (p < end && (*p == 'e' || *p == 'E')) {
    p++;
    bool eneg = false;
    if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
    if (p == end || !is_digit(*p)) return 0;
    int64_t x = 0;
    do {
      if (x < 0x10000000) x = x * 10 + (*p - '0'); /* saturates far beyond any finite result */
      p++;
    } while (p < end && is_digit(*p));
    e += eneg ? -x : x;
  }
  if (p < end) {
    char c = *p;
    if (is_digit(c) || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') return 0;
  }
  size_t n = (size_t)(p - s);
  /* m is exact when there are at most 19 significant digits (leading zeros of "0.000123" are
   * not significant; they are counted only in the rare long case). */
  bool exact = int_digits + frac_digits <= 19;
  if (!exact && m != 0 && *digits == '0') {
    size_t zeros = 0;
    while (digits[2 + zeros] == '0') zeros++;
    exact = frac_digits - zeros <= 19;
  }
  T v;
  if (exact && m == 0) {
    *out = negative ? -T(0) : T(0);
    return n;
  }
  if (exact && fast_path(m, e, &v)) {
    *out = negative ? -v : v;
    return n;
  }
  fast_float::from_chars_result r =
      fast_float::from_chars(s, s + n, v, fast_float::chars_format::general);
  // Cannot fail on a token the grammar accepted; checked anyway so that a library change shows
  // up as "not a number" rather than as a wrong value.
  if (r.ec != std::errc() || r.ptr != s + n) return 0;
  *out = v;
  return n;
}

const char kDigitPairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* 10^0 .. 10^19: every power of ten below 2^64, for the digit counts of count_digits and
 * layout. */
const uint64_t kPow10Table[20] = {1ULL,
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

inline int count_digits(uint64_t v) {
  int bits = 64 - __builtin_clzll(v | 1);
  int k = (bits * 1233) >> 12;  // floor(bits * log10(2)), an underestimate by at most one
  return k + (v >= kPow10Table[k]);
}

/* x < 10^8 as eight ASCII digits in a register, most significant first in memory order
 * (little-endian), computed lane-parallel: 4-digit halves in 32-bit lanes, 2-digit quarters in
 * 16-bit lanes, digits in bytes. Keeping the digits in registers and storing them whole avoids
 * reading back freshly stored bytes, which defeats store-to-load forwarding. */
inline uint64_t digits8(uint32_t x) {
  uint64_t y = (x / 10000) | ((uint64_t)(x % 10000) << 32);
  uint64_t z = ((y * 10486) >> 20) & 0x0000007F0000007FULL;  // y / 100 per lane, y < 10^4
  y = z | ((y - z * 100) << 16);
  z = ((y * 103) >> 10) & 0x000F000F000F000FULL;  // y / 10 per lane, y < 100
  y = z | ((y - z * 10) << 8);
  return y | 0x3030303030303030ULL;
}

inline void store8(char *o, uint64_t w) {
  memcpy(o, &w, 8);
}

const uint64_t kAsciiZeros = 0x3030303030303030ULL;

/* Lays out significand * 10^exponent (significand < 10^MaxDigits and without trailing zeros,
 * as dragonbox returns it) the way ECMA-262 Number::toString does.
 *
 * The significand is scaled to exactly MaxDigits digits (its k digits, then zeros: the string
 * D), converted to ASCII words in registers, and D is stored at the offsets each layout needs
 * with whole-word stores; the decimal point is made by storing D's tail again one byte
 * further on. No loops, no library calls, no variable-length copies; every store stays
 * within out[0..32). The result is at most 25 bytes ("-0.000001" and 16 more digits). */
template <int MaxDigits>
inline size_t layout(bool negative, uint64_t significand, int exponent, char *out) {
  static_assert(MaxDigits == 9 || MaxDigits == 17, "float or double");
  // The digit count decides where everything goes, and the caller's next output position
  // depends on it: branches on the common lengths let the CPU run ahead on a prediction
  // instead of waiting for dragonbox's result to pass through the arithmetic.
  int k;
  if (significand >= kPow10Table[MaxDigits - 1]) {
    k = MaxDigits;
  } else if (significand >= kPow10Table[MaxDigits - 2]) {
    k = MaxDigits - 1;
  } else {
    k = count_digits(significand);
  }
  uint64_t t = significand * kPow10Table[MaxDigits - k];  // MaxDigits digits exactly
  char lead;                                              // D[0]
  uint64_t w1, w2 = kAsciiZeros;                          // D[1..9), D[9..17) (zeros for float)
  if (MaxDigits == 9) {
    lead = (char)('0' + t / 100000000);
    w1 = digits8((uint32_t)(t % 100000000));
  } else {
    uint64_t top = t / 10000000000000000ULL, rest = t % 10000000000000000ULL;
    lead = (char)('0' + top);
    w1 = digits8((uint32_t)(rest / 100000000));
    w2 = digits8((uint32_t)(rest % 100000000));
  }
  int n = exponent + k;  // position of the decimal point after the first digit

  char *o = out;
  *o = '-';
  o += negative;
  if (k <= n && n <= 21) {  // an integer: D, zeros up to n digits
    o[0] = lead;
    store8(o + 1, w1);
    store8(o + 9, w2);
    store8(o + 17, kAsciiZeros);
    return (size_t)(o + n - out);
  }
  if (0 < n && n <= 21) {  // the point inside the digits (n < k <= MaxDigits): D, then the
                           // digits from n moved one place right behind a '.'
    o[0] = lead;
    store8(o + 1, w1);
    store8(o + 9, w2);
    o[n] = '.';
    if (n <= 8) {
      store8(o + n + 1, w1 >> (8 * (n - 1)));  // D[n..9), then garbage that the next store
      store8(o + 10, w2);                      // replaces with D[9..17)
    } else {
      store8(o + n + 1, w2 >> (8 * (n - 9)));  // D[n..17)
    }
    return (size_t)(o + k + 1 - out);
  }
  if (-6 < n && n <= 0) {              // "0.", -n zeros, D
    store8(o, 0x3030303030302e30ULL);  // "0.000000"
    o += 2 - n;
    o[0] = lead;
    store8(o + 1, w1);
    store8(o + 9, w2);
    return (size_t)(o + k - out);
  }
  o[0] = lead;  // exponent form: d[.ddd]e+x
  o[1] = '.';
  store8(o + 2, w1);
  store8(o + 10, w2);
  o += k > 1 ? k + 1 : 1;
  int e = n - 1;
  o[0] = 'e';
  o[1] = e < 0 ? '-' : '+';
  unsigned ue = (unsigned)(e < 0 ? -e : e);
  o += 2;
  if (ue >= 100) {
    *o++ = (char)('0' + ue / 100);
    ue %= 100;
    memcpy(o, kDigitPairs + 2 * ue, 2);
    o += 2;
  } else if (ue >= 10) {
    memcpy(o, kDigitPairs + 2 * ue, 2);
    o += 2;
  } else {
    *o++ = (char)('0' + ue);
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

/* flatten: dragonbox's to_decimal and its core are otherwise out-of-line calls, and with them
 * inlined the compiler interleaves the layout with them; measured 2x faster. */
__attribute__((flatten)) size_t ox_format_f64(double v, char *out) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof bits);
  bool negative = bits >> 63;
  if ((bits & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL)
    return special((bits << 12) ? "NaN" : negative ? "-Infinity" : "Infinity", out);
  if ((bits << 1) == 0) return special(negative ? "-0" : "0", out);
  auto d = jkj::dragonbox::to_decimal(v);
  return layout<17>(d.is_negative, d.significand, d.exponent, out);
}

__attribute__((flatten)) size_t ox_format_f32(float v, char *out) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof bits);
  bool negative = bits >> 31;
  if ((bits & 0x7f800000U) == 0x7f800000U)
    return special((bits << 9) ? "NaN" : negative ? "-Infinity" : "Infinity", out);
  if ((bits << 1) == 0) return special(negative ? "-0" : "0", out);
  auto d = jkj::dragonbox::to_decimal(v);
  return layout<9>(d.is_negative, d.significand, d.exponent, out);
}

}  // extern "C"
