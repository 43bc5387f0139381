/* base64.h: a bounded decoder for standard base64 (RFC 4648 section 4: alphabet A-Z a-z 0-9 + /,
 * '=' padding to a multiple of four characters), as Triton's repository API carries model files.
 *
 * Strict on purpose: no whitespace, no URL-safe alphabet, no missing or misplaced padding, and
 * the unused bits of the last group must be zero (so every byte string has one encoding). */
#ifndef OX_CORE_BASE64_H
#define OX_CORE_BASE64_H

#include <stddef.h>

/* Bytes that n characters of base64 decode to at most (n / 4 * 3; no overflow). */
static inline size_t ox_base64_decoded_max(size_t n) {
  return n / 4 * 3;
}

/* Decodes in[0..n) into out[0..cap), which must hold ox_base64_decoded_max(n) bytes (else
 * OX_EINVALID, nothing read past either buffer). Sets *outlen to the decoded length. Returns 0,
 * or OX_EINVALID for a character outside the alphabet, a length not a multiple of four,
 * padding anywhere but in the last one or two places, or non-zero unused bits. out may be NULL
 * when n is 0. */
int ox_base64_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen);

#endif
