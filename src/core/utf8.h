/* utf8.h: UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF), for answers that must be valid JSON text whatever bytes a client sent. */
#ifndef OX_CORE_UTF8_H
#define OX_CORE_UTF8_H

#include <stddef.h>

/* Length (1 to 4) of the well-formed UTF-8 sequence at p[0..n), or 0 if the bytes there do not
 * start one (n == 0 included). Reads at most min(n, 4) bytes. */
size_t ox_utf8_seq(const unsigned char *p, size_t n);

/* 1 if p[0..n) is well-formed UTF-8 (p may be NULL when n is 0), else 0. */
int ox_utf8_valid(const void *p, size_t n);

#endif
