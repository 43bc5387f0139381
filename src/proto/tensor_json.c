/* tensor_json.c: JSON arrays <-> tensor memory (see tensor_json.h).
 *
 * Decoding is one pass over the text with a depth counter instead of a tree: arrays may nest
 * in any shape (Triton accepts the flat and the nested form), so the only structure that
 * matters is the sequence of elements, which is written straight into the caller's buffer at
 * its flat index. Elements past count are still parsed (into a scratch slot) so the error can
 * say how many there were. Floats go through numconv (exact, fast_float behind a fast path);
 * integers through a checked digit loop here; strings are borrowed from the text unless they
 * contain escapes, and must be valid UTF-8 like the rest of a request (json.h).
 *
 * Encoding reserves an upper bound for the whole array once, then writes without further
 * checks: one formatter call per float element, inline digit writing for integers.
 */
#include "proto/tensor_json.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/utf8.h"
#include "proto/infer_req.h" /* ox_json_unescape, OX_JSON_MAX_DEPTH */
#include "proto/numconv.h"

/* ---- half precision ---------------------------------------------------------------------- */

/* Rounds a double to a binary format with exp_bits exponent bits and man_bits stored mantissa
 * bits (binary16: 5, 10; bfloat16: 8, 7), nearest-even, overflowing to infinity. One rounding
 * from the double, so float -> half (via the exact widening to double) is correctly rounded too.
 * The trick that keeps it short: adding the rounded significand (implicit bit included) to
 * (biased exponent - 1) << man_bits lets a carry out of the mantissa step the exponent, and
 * out of the largest exponent land exactly on infinity. */
static uint16_t ox_round_f64(double d, int exp_bits, int man_bits) {
  uint64_t b;
  memcpy(&b, &d, sizeof b);
  uint16_t sign = (uint16_t)((b >> 63) << (exp_bits + man_bits));
  uint64_t a = b & 0x7fffffffffffffffULL;
  uint16_t inf = (uint16_t)(((1u << exp_bits) - 1) << man_bits);
  if (a >= 0x7ff0000000000000ULL) {
    return a > 0x7ff0000000000000ULL ? (uint16_t)(sign | inf | (1u << (man_bits - 1)))
                                     : (uint16_t)(sign | inf);
  }
  int bias = (1 << (exp_bits - 1)) - 1;
  int e = (int)(a >> 52) - 1023; /* double subnormals land far below every threshold */
  if (e > bias) return (uint16_t)(sign | inf);
  uint64_t m = (a & 0x000fffffffffffffULL) | (1ULL << 52);
  int emin = 1 - bias;
  int shift;
  uint64_t base;
  if (e >= emin) {
    shift = 52 - man_bits;
    base = (uint64_t)(e + bias - 1) << man_bits;
  } else {
    shift = 52 + emin - man_bits - e; /* in units of the smallest subnormal */
    base = 0;
    if (shift > 53) return sign; /* below half the smallest subnormal */
  }
  uint64_t q = m >> shift, rem = m & ((1ULL << shift) - 1), half = 1ULL << (shift - 1);
  if (rem > half || (rem == half && (q & 1))) q++;
  return (uint16_t)(sign | (base + q));
}

uint16_t ox_f64_to_f16(double d) {
  return ox_round_f64(d, 5, 10);
}
uint16_t ox_f64_to_bf16(double d) {
  return ox_round_f64(d, 8, 7);
}
uint16_t ox_f32_to_f16(float f) {
  return ox_round_f64((double)f, 5, 10);
}

float ox_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
  if (e == 0x1f) {
    bits = sign | 0x7f800000u | (m << 13);
  } else if (e != 0) {
    bits = sign | ((e + 112) << 23) | (m << 13);
  } else {
    float f = (float)m * 0x1p-24f; /* subnormal or zero: exact */
    memcpy(&bits, &f, sizeof bits);
    bits |= sign;
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

float ox_bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

/* ---- decoding ---------------------------------------------------------------------------- */

typedef struct {
  const char *begin, *end;
  ox_dtype_t dtype;
  ox_arena_t *arena;
  char *err;
  size_t errcap;
} ox_tj_dec_t;

/* Signed and unsigned ranges for the integer types (unsigned: min 0). */
static const struct {
  int64_t min;
  uint64_t max;
} ox_tj_range[OX_DT_COUNT_] = {
    [OX_DT_UINT8] = {0, UINT8_MAX},         [OX_DT_UINT16] = {0, UINT16_MAX},
    [OX_DT_UINT32] = {0, UINT32_MAX},       [OX_DT_UINT64] = {0, UINT64_MAX},
    [OX_DT_INT8] = {INT8_MIN, INT8_MAX},    [OX_DT_INT16] = {INT16_MIN, INT16_MAX},
    [OX_DT_INT32] = {INT32_MIN, INT32_MAX}, [OX_DT_INT64] = {INT64_MIN, INT64_MAX},
};

static inline int ox_tj_is_digit(char c) {
  return (unsigned char)(c - '0') < 10;
}

static inline const char *ox_tj_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  return p;
}

/* Copies the token at p (a string with its quotes, or text up to the next delimiter) into buf
 * for an error message, shortened, with bytes outside printable ASCII shown as '?'. */
static const char *ox_tj_token(const char *p, const char *end, char *buf, size_t cap) {
  const char *q = p;
  if (q < end && *q == '"') {
    for (q++; q < end && *q != '"'; q++)
      if (*q == '\\' && q + 1 < end) q++;
    if (q < end) q++;
  } else {
    while (q < end && !strchr(",[]{}: \t\r\n", *q)) q++;
  }
  if (q == p && q < end) q++; /* a lone delimiter */
  size_t n = (size_t)(q - p), max = cap - 4, i;
  for (i = 0; i < n && i < max; i++) {
    unsigned char c = (unsigned char)p[i];
    buf[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
  }
  buf[i] = 0;
  if (n > max) strcat(buf, "...");
  if (n == 0) strcpy(buf, "end of data");
  return buf;
}

static int ox_tj_fail(ox_tj_dec_t *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int ox_tj_fail(ox_tj_dec_t *d, int code, const char *fmt, ...) {
  if (d->errcap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, d->errcap, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* A syntax error in the array's structure, at p. */
static int ox_tj_bad_json(ox_tj_dec_t *d, const char *p, const char *what) {
  return ox_tj_fail(d, OX_EINVALID, "invalid JSON at byte %zu: %s", (size_t)(p - d->begin), what);
}

/* The error for a token that is not a valid element of the datatype. */
static int ox_tj_bad_element(ox_tj_dec_t *d, const char *p, uint64_t i) {
  char tok[48];
  ox_tj_token(p, d->end, tok, sizeof tok);
  ox_json_kind_t kind = ox_dtype_json_kind(d->dtype);
  double ignored;
  int is_number = (p < d->end && (*p == '-' || ox_tj_is_digit(*p)));
  if (is_number && !ox_parse_f64(p, (size_t)(d->end - p), &ignored))
    return ox_tj_fail(d, OX_EINVALID, "element %" PRIu64 ": invalid number %s", i, tok);
  const char *want = kind == OX_JK_BOOL    ? "true or false"
                     : kind == OX_JK_UINT  ? "an unsigned integer"
                     : kind == OX_JK_INT   ? "an integer"
                     : kind == OX_JK_FLOAT ? "a number"
                                           : "a string";
  return ox_tj_fail(d, OX_EINVALID, "element %" PRIu64 ": expected %s, got %s", i, want, tok);
}

static int ox_tj_out_of_range(ox_tj_dec_t *d, const char *p, uint64_t i) {
  char tok[48];
  ox_tj_token(p, d->end, tok, sizeof tok);
  const char *name = ox_dtype_name(d->dtype);
  ox_json_kind_t kind = ox_dtype_json_kind(d->dtype);
  if (kind == OX_JK_FLOAT)
    return ox_tj_fail(d, OX_EINVALID, "element %" PRIu64 ": %s out of range for %s", i, tok, name);
  return ox_tj_fail(d, OX_EINVALID,
                    "element %" PRIu64 ": %s out of range for %s [%" PRId64 ", %" PRIu64 "]", i,
                    tok, name, ox_tj_range[d->dtype].min, ox_tj_range[d->dtype].max);
}

/* Each element parser takes *pp at the element's first byte (before d->end), writes the value
 * to dst and returns 0 with *pp just past the element, or returns an error with the message
 * in d->err. */

/* A JSON integer of an integer datatype. */
static int ox_tj_int(ox_tj_dec_t *d, const char **pp, uint64_t i, void *dst) {
  const char *s = *pp, *p = s, *end = d->end;
  int neg = *p == '-';
  p += neg;
  if (p == end || !ox_tj_is_digit(*p)) return ox_tj_bad_element(d, s, i);
  uint64_t v = 0;
  int overflow = 0;
  if (*p == '0') {
    p++;
  } else {
    do {
      overflow |= __builtin_mul_overflow(v, 10, &v);
      overflow |= __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v);
      p++;
    } while (p < end && ox_tj_is_digit(*p));
  }
  if (p < end && (ox_tj_is_digit(*p) || *p == '.' || *p == 'e' || *p == 'E'))
    return ox_tj_bad_element(d, s, i); /* "1.5", "1e3", "01" */
  uint64_t max = ox_tj_range[d->dtype].max, bits;
  if (ox_tj_range[d->dtype].min == 0) {
    if (neg && v == 0 && !overflow) return ox_tj_bad_element(d, s, i); /* "-0" */
    if (neg || overflow || v > max) return ox_tj_out_of_range(d, s, i);
    bits = v;
  } else if (neg) {
    if (overflow || v > max + 1) return ox_tj_out_of_range(d, s, i);
    bits = 0 - v; /* two's complement of the magnitude, truncated below */
  } else {
    if (overflow || v > max) return ox_tj_out_of_range(d, s, i);
    bits = v;
  }
  switch (ox_dtype_size(d->dtype)) {
    case 1: {
      uint8_t x = (uint8_t)bits;
      memcpy(dst, &x, 1);
      break;
    }
    case 2: {
      uint16_t x = (uint16_t)bits;
      memcpy(dst, &x, 2);
      break;
    }
    case 4: {
      uint32_t x = (uint32_t)bits;
      memcpy(dst, &x, 4);
      break;
    }
    default:
      memcpy(dst, &bits, 8);
  }
  *pp = p;
  return 0;
}

/* A JSON string (**pp == '"') into the ox_slice_t at dst; store == 0 only checks it (an element
 * past count: nothing is allocated for it). Raw bytes must be valid UTF-8, as json.h's scanner
 * requires of the whole request. */
static int ox_tj_string(ox_tj_dec_t *d, const char **pp, uint64_t i, void *dst, int store) {
  const char *s = *pp + 1, *q = s, *end = d->end;
  int escaped = 0;
  while (q < end && *q != '"') {
    unsigned char c = (unsigned char)*q;
    if (c == '\\') {
      escaped = 1;
      if (end - q < 2) break;
      q += 2;
    } else if (c < 0x20) {
      return ox_tj_fail(d, OX_EINVALID, "element %" PRIu64 ": control character in string", i);
    } else if (c < 0x80) {
      q++;
    } else {
      size_t n = ox_utf8_seq((const unsigned char *)q, (size_t)(end - q));
      if (!n) return ox_tj_fail(d, OX_EINVALID, "element %" PRIu64 ": invalid UTF-8 in string", i);
      q += n;
    }
  }
  if (q >= end) return ox_tj_fail(d, OX_EINVALID, "element %" PRIu64 ": unterminated string", i);
  size_t len = (size_t)(q - s);
  ox_slice_t v = {s, len};
  if (escaped && store) {
    char *buf = d->arena ? ox_arena_alloc_aligned(d->arena, len, 1) : NULL;
    if (!buf) return ox_tj_fail(d, OX_ENOMEM, "out of memory");
    long n = ox_json_unescape(s, len, buf);
    if (n < 0)
      return ox_tj_fail(d, OX_EINVALID, "element %" PRIu64 ": invalid escape in string", i);
    v = ox_slice(buf, (size_t)n);
  }
  if (store) memcpy(dst, &v, sizeof v);
  *pp = q + 1;
  return 0;
}

/* Any element, by datatype. Inlined into the decode loop: the float cases are the hot path. */
static inline int ox_tj_element(ox_tj_dec_t *d, const char **pp, uint64_t i, void *dst, int store) {
  const char *p = *pp;
  size_t avail = (size_t)(d->end - p), n;
  switch (d->dtype) {
    case OX_DT_FP32: {
      float f;
      if (!(n = ox_parse_f32(p, avail, &f))) return ox_tj_bad_element(d, p, i);
      if (__builtin_isinf(f)) return ox_tj_out_of_range(d, p, i);
      memcpy(dst, &f, sizeof f);
      break;
    }
    case OX_DT_FP64: {
      double v;
      if (!(n = ox_parse_f64(p, avail, &v))) return ox_tj_bad_element(d, p, i);
      if (__builtin_isinf(v)) return ox_tj_out_of_range(d, p, i);
      memcpy(dst, &v, sizeof v);
      break;
    }
    case OX_DT_FP16:
    case OX_DT_BF16: {
      double v;
      if (!(n = ox_parse_f64(p, avail, &v))) return ox_tj_bad_element(d, p, i);
      int half = d->dtype == OX_DT_FP16;
      uint16_t h = half ? ox_f64_to_f16(v) : ox_f64_to_bf16(v);
      if ((h & 0x7fff) == (half ? 0x7c00 : 0x7f80)) return ox_tj_out_of_range(d, p, i);
      memcpy(dst, &h, sizeof h);
      break;
    }
    case OX_DT_BOOL: {
      uint8_t b;
      if (avail >= 4 && memcmp(p, "true", 4) == 0) {
        b = 1;
        n = 4;
      } else if (avail >= 5 && memcmp(p, "false", 5) == 0) {
        b = 0;
        n = 5;
      } else {
        return ox_tj_bad_element(d, p, i);
      }
      memcpy(dst, &b, 1);
      break;
    }
    case OX_DT_BYTES:
      if (*p != '"') return ox_tj_bad_element(d, p, i);
      return ox_tj_string(d, pp, i, dst, store);
    default:
      if (*p != '-' && !ox_tj_is_digit(*p)) return ox_tj_bad_element(d, p, i);
      return ox_tj_int(d, pp, i, dst);
  }
  *pp = p + n;
  return 0;
}

int ox_tensor_json_decode(ox_slice_t json, ox_dtype_t dtype, uint64_t count, void *out,
                          ox_arena_t *arena, char *err, size_t errcap) {
  ox_tj_dec_t d = {json.ptr, json.ptr + json.len, dtype, arena, err, errcap};
  if (errcap) err[0] = 0;
  if (dtype <= OX_DT_INVALID || dtype >= OX_DT_COUNT_)
    return ox_tj_fail(&d, OX_EINVALID, "invalid datatype");
  size_t esize = dtype == OX_DT_BYTES ? sizeof(ox_slice_t) : ox_dtype_size(dtype);
  union {
    uint64_t u;
    double f;
    ox_slice_t s;
  } scratch; /* where elements past count go */
  const char *p = ox_tj_ws(d.begin, d.end), *end = d.end;
  if (p == end || *p != '[') {
    char tok[48];
    return ox_tj_fail(&d, OX_EINVALID, "data must be a JSON array, got %s",
                      ox_tj_token(p, end, tok, sizeof tok));
  }
  uint64_t i = 0;
  int depth = 0;
  for (;;) {
    /* Here p is at a value: an element or an opening bracket. */
    if (*p == '[') {
      if (++depth > OX_JSON_MAX_DEPTH)
        return ox_tj_fail(&d, OX_EDEPTH, "arrays nested deeper than %d", OX_JSON_MAX_DEPTH);
      p = ox_tj_ws(p + 1, end);
      if (p == end) break;
      if (*p != ']') continue;
    } else {
      int store = i < count;
      void *dst = store ? (char *)out + i * esize : (void *)&scratch;
      int rc = ox_tj_element(&d, &p, i, dst, store);
      if (rc) return rc;
      i++;
    }
    /* After a value: commas and closing brackets. */
    for (;;) {
      p = ox_tj_ws(p, end);
      if (p == end || *p != ']') break;
      p++;
      if (--depth == 0) {
        p = ox_tj_ws(p, end);
        if (p != end) return ox_tj_bad_json(&d, p, "text after the array");
        if (i != count)
          return ox_tj_fail(&d, OX_EINVALID, "expected %" PRIu64 " elements, got %" PRIu64, count,
                            i);
        return 0;
      }
    }
    if (p == end) break;
    if (*p != ',') return ox_tj_bad_json(&d, p, "expected ',' or ']'");
    p = ox_tj_ws(p + 1, end);
    if (p == end) break;
    if (*p == ']') return ox_tj_bad_json(&d, p, "']' after ','");
  }
  return ox_tj_fail(&d, OX_EINVALID, "invalid JSON: data ends inside an array");
}

/* ---- encoding ---------------------------------------------------------------------------- */

static const char ox_tj_digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static inline char *ox_tj_put_u64(char *o, uint64_t v) {
  char tmp[20], *t = tmp + sizeof tmp;
  while (v >= 100) {
    t -= 2;
    memcpy(t, ox_tj_digit_pairs + 2 * (v % 100), 2);
    v /= 100;
  }
  if (v >= 10) {
    t -= 2;
    memcpy(t, ox_tj_digit_pairs + 2 * v, 2);
  } else {
    *--t = (char)('0' + v);
  }
  size_t n = (size_t)(tmp + sizeof tmp - t);
  memcpy(o, t, n);
  return o + n;
}

static inline char *ox_tj_put_i64(char *o, int64_t v) {
  if (v < 0) {
    *o++ = '-';
    return ox_tj_put_u64(o, 0 - (uint64_t)v);
  }
  return ox_tj_put_u64(o, (uint64_t)v);
}

/* Non-finite values as JSON strings, the protobuf JSON mapping's spelling: the answer stays
 * valid JSON for strict parsers, the value survives exactly (sign of infinities included), and
 * numpy reads the strings back as floats (tritonclient's as_numpy: np.array(data, float32)). */
static inline char *ox_tj_put_special(char *o, int nan, int neg) {
  const char *s = nan ? "\"NaN\"" : neg ? "\"-Infinity\"" : "\"Infinity\"";
  size_t n = strlen(s);
  memcpy(o, s, n);
  return o + n;
}

static inline char *ox_tj_put_f32(char *o, float f) {
  if (__builtin_expect(!__builtin_isfinite(f), 0))
    return ox_tj_put_special(o, __builtin_isnan(f), __builtin_signbit(f));
  return o + ox_format_f32(f, o);
}

static inline char *ox_tj_put_f64(char *o, double v) {
  if (__builtin_expect(!__builtin_isfinite(v), 0))
    return ox_tj_put_special(o, __builtin_isnan(v), __builtin_signbit(v));
  return o + ox_format_f64(v, o);
}

static inline char *ox_tj_put_bool(char *o, uint8_t b) {
  if (b) {
    memcpy(o, "true", 4);
    return o + 4;
  }
  memcpy(o, "false", 5);
  return o + 5;
}

static char *ox_tj_put_string(char *o, const unsigned char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  *o++ = '"';
  for (size_t j = 0; j < n;) {
    unsigned char c = s[j];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      *o++ = (char)c;
      j++;
      continue;
    }
    if (c >= 0x80) {
      size_t len = ox_utf8_seq(s + j, n - j);
      if (len) {
        memcpy(o, s + j, len);
        o += len;
        j += len;
        continue;
      }
    }
    *o++ = '\\';
    switch (c) {
      case '"':
        *o++ = '"';
        break;
      case '\\':
        *o++ = '\\';
        break;
      case '\n':
        *o++ = 'n';
        break;
      case '\r':
        *o++ = 'r';
        break;
      case '\t':
        *o++ = 't';
        break;
      case '\b':
        *o++ = 'b';
        break;
      case '\f':
        *o++ = 'f';
        break;
      default:
        memcpy(o, "u00", 3);
        o[3] = hex[c >> 4];
        o[4] = hex[c & 15];
        o += 5;
    }
    j++;
  }
  *o++ = '"';
  return o;
}

/* Upper bound of one element's text plus its comma, for the fixed-size types. Floats: the
 * longest ECMA-262 layout is 22 bytes for float ("-1" and 20 zeros) and 25 for double
 * ("-0.000001" and 17 digits more, 24 significant characters and a sign). */
static const unsigned char ox_tj_max_len[OX_DT_COUNT_] = {
    [OX_DT_BOOL] = 6,    [OX_DT_UINT8] = 4, [OX_DT_UINT16] = 6, [OX_DT_UINT32] = 11,
    [OX_DT_UINT64] = 21, [OX_DT_INT8] = 5,  [OX_DT_INT16] = 7,  [OX_DT_INT32] = 12,
    [OX_DT_INT64] = 21,  [OX_DT_FP16] = 23, [OX_DT_BF16] = 23,  [OX_DT_FP32] = 23,
    [OX_DT_FP64] = 26,
};

/* numconv's formatters want 32 bytes of room wherever they start. */
#define OX_TJ_SLACK 32

int ox_tensor_json_encode(ox_buf_t *out, ox_dtype_t dtype, const void *data, uint64_t count) {
  if (dtype <= OX_DT_INVALID || dtype >= OX_DT_COUNT_) return OX_EINVALID;
  size_t bound;
  if (dtype == OX_DT_BYTES) {
    const ox_slice_t *v = data;
    bound = 2 + OX_TJ_SLACK;
    for (uint64_t i = 0; i < count; i++) {
      size_t b;
      if (__builtin_mul_overflow(v[i].len, 6, &b) || __builtin_add_overflow(b, 3, &b) ||
          __builtin_add_overflow(bound, b, &bound))
        return OX_ENOMEM;
    }
  } else if (__builtin_mul_overflow(count, (uint64_t)ox_tj_max_len[dtype], &bound) ||
             __builtin_add_overflow(bound, 2 + OX_TJ_SLACK, &bound)) {
    return OX_ENOMEM;
  }
  int rc = ox_buf_reserve(out, bound);
  if (rc) return rc;

  char *o = out->data + out->len;
  *o++ = '[';
  switch (dtype) {
#define OX_TJ_LOOP(type, put)                                \
  for (uint64_t i = 0; i < count; i++) {                     \
    type x;                                                  \
    memcpy(&x, (const char *)data + i * sizeof x, sizeof x); \
    o = put;                                                 \
    *o++ = ',';                                              \
  }                                                          \
  break
    case OX_DT_BOOL:
      OX_TJ_LOOP(uint8_t, ox_tj_put_bool(o, x));
    case OX_DT_UINT8:
      OX_TJ_LOOP(uint8_t, ox_tj_put_u64(o, x));
    case OX_DT_UINT16:
      OX_TJ_LOOP(uint16_t, ox_tj_put_u64(o, x));
    case OX_DT_UINT32:
      OX_TJ_LOOP(uint32_t, ox_tj_put_u64(o, x));
    case OX_DT_UINT64:
      OX_TJ_LOOP(uint64_t, ox_tj_put_u64(o, x));
    case OX_DT_INT8:
      OX_TJ_LOOP(int8_t, ox_tj_put_i64(o, x));
    case OX_DT_INT16:
      OX_TJ_LOOP(int16_t, ox_tj_put_i64(o, x));
    case OX_DT_INT32:
      OX_TJ_LOOP(int32_t, ox_tj_put_i64(o, x));
    case OX_DT_INT64:
      OX_TJ_LOOP(int64_t, ox_tj_put_i64(o, x));
    case OX_DT_FP16:
      OX_TJ_LOOP(uint16_t, ox_tj_put_f32(o, ox_f16_to_f32(x)));
    case OX_DT_BF16:
      OX_TJ_LOOP(uint16_t, ox_tj_put_f32(o, ox_bf16_to_f32(x)));
    case OX_DT_FP32:
      OX_TJ_LOOP(float, ox_tj_put_f32(o, x));
    case OX_DT_FP64:
      OX_TJ_LOOP(double, ox_tj_put_f64(o, x));
    case OX_DT_BYTES:
      OX_TJ_LOOP(ox_slice_t, ox_tj_put_string(o, (const unsigned char *)x.ptr, x.len));
#undef OX_TJ_LOOP
    default:
      break;
  }
  if (count) o--; /* the last comma becomes the closing bracket */
  *o++ = ']';
  out->len = (size_t)(o - out->data);
  return 0;
}
