/* text.h: small checks and parsers of ASCII text shared by every layer, one copy each.
 *
 * Names: model names, feature table names, key parameters and entity types are made of
 * letters, digits, '_', '.' and '-' ([A-Za-z0-9_.-]); none can contain '/', ':' or start with
 * '~', which keeps file paths, "table:key" row keys and the store's own "~..." keys apart.
 * Each caller adds its own length bound and any further rule ("." and ".." for paths).
 *
 * Decimal numbers: digits only, parsed with a hand-checked loop (never atoi/strtol on untrusted
 * data), every step checked for overflow. Inline: Content-Length and
 * Inference-Header-Content-Length are parsed on every request.
 */
#ifndef OX_CORE_TEXT_H
#define OX_CORE_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* 1 for a byte of a name: [A-Za-z0-9_.-]. */
static inline int ox_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

/* 1 when every byte of s[0..n) is a name byte (also for n == 0: callers bound the length). */
static inline int ox_name_valid(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!ox_name_char(s[i])) return 0;
  return 1;
}

/* Reads the decimal digits at the start of s[0..n) into *out and returns how many there were
 * (0: none, *out = 0). *overflow is set to 1 when their value exceeds UINT64_MAX (*out is
 * then meaningless), else 0. The byte at the returned index, if below n, is not a digit. */
static inline size_t ox_dec_prefix(const char *s, size_t n, uint64_t *out, int *overflow) {
  uint64_t v = 0;
  int ovf = 0;
  size_t i = 0;
  for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
    ovf |=
        __builtin_mul_overflow(v, 10, &v) | __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v);
  *out = v;
  *overflow = ovf;
  return i;
}

/* s[0..n) as an unsigned decimal: at least one digit, digits only (no sign, no space; leading
 * zeros allowed), value at most max. 0 and *out, or -1 (*out untouched). */
static inline int ox_dec_u64(const char *s, size_t n, uint64_t max, uint64_t *out) {
  uint64_t v;
  int ovf;
  if (n == 0 || ox_dec_prefix(s, n, &v, &ovf) != n || ovf || v > max) return -1;
  *out = v;
  return 0;
}

/* s[0..n) as a signed decimal: an optional '-', then at least one digit, digits only, within
 * int64_t (INT64_MIN included). 0 and *out, or -1 (*out untouched). */
static inline int ox_dec_i64(const char *s, size_t n, int64_t *out) {
  int neg = n > 0 && s[0] == '-';
  uint64_t v;
  if (ox_dec_u64(s + neg, n - (size_t)neg, neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, &v))
    return -1;
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return 0;
}

#endif
