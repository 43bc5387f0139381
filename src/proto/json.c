/* json.c: the JSON scanner of json.h and ox_json_unescape.
 *
 * Speed matters for one case above all: skipping an input's "data" array of a few hundred
 * thousand numbers (a 3 MB image tensor). ox_json_skip is a flat state machine over the bytes
 * with the number grammar inlined and strings scanned by a table lookup per byte; containers
 * are a bit stack (1 = array) in a uint64_t, which is exactly OX_JSON_MAX_DEPTH deep.
 */
#include "proto/json.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <limits.h>
#include <string.h>

#include "core/error.h"

_Static_assert(OX_JSON_MAX_DEPTH <= 64, "the container stack is a uint64_t");

static inline int ox_is_digit(char c) {
  return (unsigned)(c - '0') < 10;
}

static int ox_hex(char c) {
  if (ox_is_digit(c)) return c - '0';
  c = (char)(c | 0x20);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Reads 4 hex digits at s (the caller checked they are there); -1 if any is not hex. */
static long ox_hex4(const char *s) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int h = ox_hex(s[i]);
    if (h < 0) return -1;
    v = v << 4 | h;
  }
  return v;
}

/* Length of the valid UTF-8 sequence starting at s (s[0] >= 0x80), within end; 0 if invalid
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t ox_utf8_len(const unsigned char *s, const unsigned char *end) {
  unsigned c = s[0];
  size_t n;
  unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if ((size_t)(end - s) < n) return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return n;
}

/* Bytes that may appear raw in a string and need no further look: printable ASCII and DEL
 * (allowed raw by RFC 8259) other than '"' and '\\'. */
static const unsigned char ox_plain[256] = {
    [0x20 ... 0x21] = 1,
    [0x23 ... 0x5b] = 1,
    [0x5d ... 0x7f] = 1,
};

/* Scans a string's contents starting just after the opening quote. Returns the position of
 * the closing quote, or NULL with *why set. *escaped is set if a '\' was seen. */
static const char *ox_scan_string(const char *p, const char *end, int *escaped, const char **why) {
  for (;;) {
    while (p < end && ox_plain[(unsigned char)*p]) p++;
    if (p == end) {
      *why = "unterminated string";
      return NULL;
    }
    unsigned char c = (unsigned char)*p;
    if (c == '"') return p;
    if (c == '\\') {
      *escaped = 1;
      if (end - p < 2) {
        *why = "unterminated string";
        return NULL;
      }
      char e = p[1];
      if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
          e == 't') {
        p += 2;
        continue;
      }
      if (e != 'u') {
        *why = "invalid escape in string";
        return NULL;
      }
      if (end - p < 6 || ox_hex4(p + 2) < 0) {
        *why = "invalid \\u escape in string";
        return NULL;
      }
      long u = ox_hex4(p + 2);
      if (u >= 0xDC00 && u <= 0xDFFF) {
        *why = "unpaired surrogate in string";
        return NULL;
      }
      if (u >= 0xD800 && u <= 0xDBFF) {
        long lo;
        if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || (lo = ox_hex4(p + 8)) < 0xDC00 ||
            lo > 0xDFFF) {
          *why = "unpaired surrogate in string";
          return NULL;
        }
        p += 12;
      } else {
        p += 6;
      }
      continue;
    }
    if (c < 0x20) {
      *why = "control character in string";
      return NULL;
    }
    size_t n = ox_utf8_len((const unsigned char *)p, (const unsigned char *)end);
    if (!n) {
      *why = "invalid UTF-8 in string";
      return NULL;
    }
    p += n;
  }
}

/* Scans a number token at p (p < end). Returns the end of the token or NULL. */
static inline const char *ox_scan_number(const char *p, const char *end) {
  if (*p == '-' && ++p == end) return NULL;
  if (*p == '0') {
    p++;
  } else if (ox_is_digit(*p)) {
    p++;
    while (p < end && ox_is_digit(*p)) p++;
  } else {
    return NULL;
  }
  if (p < end && *p == '.') {
    if (++p == end || !ox_is_digit(*p)) return NULL;
    while (++p < end && ox_is_digit(*p)) {
    }
  }
  if (p < end && (*p | 0x20) == 'e') {
    if (++p < end && (*p == '+' || *p == '-')) p++;
    if (p == end || !ox_is_digit(*p)) return NULL;
    while (++p < end && ox_is_digit(*p)) {
    }
  }
  return p;
}

int ox_json_fail(ox_json_t *js, const char *what) {
  if (!js->err) js->err = what;
  return OX_EINVALID;
}

int ox_json_string(ox_json_t *js, ox_slice_t *contents, int *escaped) {
  const char *why = NULL;
  *escaped = 0;
  if (js->p == js->end || *js->p != '"') return ox_json_fail(js, "expected a string");
  const char *q = ox_scan_string(js->p + 1, js->end, escaped, &why);
  if (!q) return ox_json_fail(js, why); /* cursor stays at the string's opening quote */
  *contents = ox_slice(js->p + 1, (size_t)(q - js->p - 1));
  js->p = q + 1;
  return 0;
}

int ox_json_number(ox_json_t *js, ox_json_number_t *num) {
  const char *p = js->p;
  const char *q = p < js->end ? ox_scan_number(p, js->end) : NULL;
  if (!q) return ox_json_fail(js, "invalid number");
  memset(num, 0, sizeof *num);
  num->text = ox_slice(p, (size_t)(q - p));
  num->neg = *p == '-';
  num->integral = 1;
  for (const char *d = p + num->neg; d < q; d++) {
    if (!ox_is_digit(*d)) {
      num->integral = 0;
      num->overflow = 0;
      num->mag = 0;
      break;
    }
    if (__builtin_mul_overflow(num->mag, 10, &num->mag) ||
        __builtin_add_overflow(num->mag, (uint64_t)(*d - '0'), &num->mag))
      num->overflow = 1;
  }
  if (num->overflow) num->mag = 0;
  js->p = q;
  return 0;
}

/* First '[', ']' or '"' in p[0..end), or end: 16 bytes at a time with SSE2. */
static const char *ox_find_structural(const char *p, const char *end) {
#ifdef __SSE2__
  const __m128i open = _mm_set1_epi8('['), close = _mm_set1_epi8(']'), quote = _mm_set1_epi8('"');
  while (end - p >= 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, open), _mm_cmpeq_epi8(v, close)),
                               _mm_cmpeq_epi8(v, quote));
    int mask = _mm_movemask_epi8(hit);
    if (mask) return p + __builtin_ctz((unsigned)mask);
    p += 16;
  }
#endif
  while (p < end && *p != '[' && *p != ']' && *p != '"') p++;
  return p;
}

int ox_json_skip_array_fast(ox_json_t *js, int depth) {
  const char *p = js->p, *end = js->end;
  int open = 0, room = OX_JSON_MAX_DEPTH - depth;
  for (;;) {
    p = ox_find_structural(p, end);
    if (p == end) break;
    char c = *p++;
    if (c == '[') {
      if (++open > room) {
        js->p = p - 1;
        ox_json_fail(js, "nesting too deep");
        return OX_EDEPTH;
      }
    } else if (c == ']') {
      if (--open == 0) {
        js->p = p;
        return 0;
      }
    } else { /* a string: to the closing quote, over escapes */
      while (p < end && *p != '"') p += *p == '\\' ? 2 : 1;
      if (p >= end) break;
      p++;
    }
  }
  js->p = end;
  return ox_json_fail(js, "unterminated array");
}

int ox_json_skip(ox_json_t *js, int depth) {
  const char *p = js->p, *end = js->end;
  const char *why, *tok = p;
  uint64_t arr = 0; /* bit 0: innermost open container is an array */
  int open = 0;     /* containers opened by this call */
  int room = OX_JSON_MAX_DEPTH - depth;
  int escaped;

value:
  if (p == end) goto eof;
  switch (*p) {
    case '"':
      tok = p;
      p = ox_scan_string(p + 1, end, &escaped, &why);
      if (!p) goto bad_string;
      p++;
      goto after;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9': {
      const char *q = ox_scan_number(p, end);
      if (!q) {
        why = "invalid number";
        goto fail;
      }
      p = q;
      goto after;
    }
    case '[':
      if (open >= room) goto deep;
      arr = arr << 1 | 1;
      open++;
      p++;
      while (p < end && ox_json_is_ws(*p)) p++;
      if (p < end && *p == ']') {
        p++;
        goto pop;
      }
      goto value;
    case '{':
      if (open >= room) goto deep;
      arr <<= 1;
      open++;
      p++;
      while (p < end && ox_json_is_ws(*p)) p++;
      if (p < end && *p == '}') {
        p++;
        goto pop;
      }
      goto key;
    case 't':
      if (end - p < 4 || memcmp(p, "true", 4) != 0) goto bad_token;
      p += 4;
      goto after;
    case 'f':
      if (end - p < 5 || memcmp(p, "false", 5) != 0) goto bad_token;
      p += 5;
      goto after;
    case 'n':
      if (end - p < 4 || memcmp(p, "null", 4) != 0) goto bad_token;
      p += 4;
      goto after;
    default:
      goto bad_token;
  }

key:
  if (p == end) goto eof;
  if (*p != '"') {
    why = "expected a string key";
    goto fail;
  }
  tok = p;
  p = ox_scan_string(p + 1, end, &escaped, &why);
  if (!p) goto bad_string;
  p++;
  while (p < end && ox_json_is_ws(*p)) p++;
  if (p == end) goto eof;
  if (*p != ':') {
    why = "expected ':'";
    goto fail;
  }
  p++;
  while (p < end && ox_json_is_ws(*p)) p++;
  goto value;

pop:
  arr >>= 1;
  open--;
after:
  if (!open) {
    js->p = p;
    return 0;
  }
  while (p < end && ox_json_is_ws(*p)) p++;
  if (p == end) goto eof;
  if (*p == ',') {
    p++;
    while (p < end && ox_json_is_ws(*p)) p++;
    if (arr & 1) goto value;
    goto key;
  }
  if (arr & 1) {
    if (*p == ']') {
      p++;
      goto pop;
    }
    why = "expected ',' or ']'";
    goto fail;
  }
  if (*p == '}') {
    p++;
    goto pop;
  }
  why = "expected ',' or '}'";
  goto fail;

eof:
  why = "unexpected end of text";
  goto fail;
bad_token:
  why = "unexpected character";
  goto fail;
bad_string:
  p = tok; /* the error is reported at the string's opening quote */
  goto fail;
deep:
  js->p = p;
  if (!js->err) js->err = "nesting deeper than 64";
  return OX_EDEPTH;
fail:
  js->p = p;
  return ox_json_fail(js, why);
}

int ox_json_validate(ox_json_t *js) {
  ox_json_ws(js);
  int rc = ox_json_skip(js, 0);
  if (rc < 0) return rc;
  ox_json_ws(js);
  if (js->p != js->end) return ox_json_fail(js, "unexpected characters after the JSON value");
  return 0;
}

/* Writes code point u as UTF-8 at out; returns the byte count. */
static size_t ox_utf8_put(unsigned long u, char *out) {
  if (u < 0x80) {
    out[0] = (char)u;
    return 1;
  }
  if (u < 0x800) {
    out[0] = (char)(0xC0 | u >> 6);
    out[1] = (char)(0x80 | (u & 0x3F));
    return 2;
  }
  if (u < 0x10000) {
    out[0] = (char)(0xE0 | u >> 12);
    out[1] = (char)(0x80 | (u >> 6 & 0x3F));
    out[2] = (char)(0x80 | (u & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | u >> 18);
  out[1] = (char)(0x80 | (u >> 12 & 0x3F));
  out[2] = (char)(0x80 | (u >> 6 & 0x3F));
  out[3] = (char)(0x80 | (u & 0x3F));
  return 4;
}

/* See proto/infer_req.h. Beyond that contract: raw bytes must form valid UTF-8 and a raw '"'
 * is invalid, so this accepts exactly the string contents ox_json_string accepts. The output
 * never outgrows the input: each escape (>= 2 bytes, 6 for \uXXXX, 12 for a surrogate pair)
 * yields at most as many bytes (1, <= 3, 4). */
long ox_json_unescape(const char *s, size_t len, char *out) {
  if (len > LONG_MAX) return OX_EINVALID;
  const char *p = s, *end = s + len;
  char *o = out;
  while (p < end) {
    const char *q = p;
    while (q < end && ox_plain[(unsigned char)*q]) q++;
    memcpy(o, p, (size_t)(q - p));
    o += q - p;
    p = q;
    if (p == end) break;
    unsigned char c = (unsigned char)*p;
    if (c == '\\') {
      if (end - p < 2) return OX_EINVALID;
      char e = p[1];
      char r;
      switch (e) {
        case '"':
          r = '"';
          break;
        case '\\':
          r = '\\';
          break;
        case '/':
          r = '/';
          break;
        case 'b':
          r = '\b';
          break;
        case 'f':
          r = '\f';
          break;
        case 'n':
          r = '\n';
          break;
        case 'r':
          r = '\r';
          break;
        case 't':
          r = '\t';
          break;
        case 'u': {
          long u = end - p >= 6 ? ox_hex4(p + 2) : -1;
          if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF)) return OX_EINVALID;
          p += 6;
          if (u >= 0xD800 && u <= 0xDBFF) {
            long lo;
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || (lo = ox_hex4(p + 2)) < 0xDC00 ||
                lo > 0xDFFF)
              return OX_EINVALID;
            u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
          }
          o += ox_utf8_put((unsigned long)u, o);
          continue;
        }
        default:
          return OX_EINVALID;
      }
      *o++ = r;
      p += 2;
      continue;
    }
    if (c < 0x20 || c == '"') return OX_EINVALID;
    size_t n = ox_utf8_len((const unsigned char *)p, (const unsigned char *)end);
    if (!n) return OX_EINVALID;
    memcpy(o, p, n);
    o += n;
    p += n;
  }
  return (long)(o - out);
}
