/* sha256.h: SHA-256 (FIPS 180-4), for checking that bytes are the ones a build recorded.
 *
 * Used by the single-file build (runtime/ort_embed.c) to verify the ONNX Runtime library it
 * carries before loading it: about 46 MB at every start, so the speed matters. On x86-64 CPUs
 * with the SHA extensions (Intel since Goldmont/Ice Lake, AMD since Zen) the block function
 * uses them, about 1.5-2 GB/s; elsewhere a portable C version, about 0.2-0.4 GB/s. Both give
 * the same digests (tests/unit/sha256_test.c checks them against FIPS vectors and each other).
 *
 * A digest says the bytes are unchanged since it was computed; it is not a signature: whoever
 * can change the bytes can change a digest stored next to them.
 */
#ifndef OX_CORE_SHA256_H
#define OX_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define OX_SHA256_BYTES 32

/* Streaming state: ox_sha256_init, any number of ox_sha256_update, one ox_sha256_final. Plain
 * data, no resources; one thread at a time per state. */
typedef struct {
  uint32_t h[8];
  uint64_t total;        /* bytes hashed so far */
  unsigned char buf[64]; /* a partial block */
  size_t fill;           /* bytes in buf */
} ox_sha256_t;

void ox_sha256_init(ox_sha256_t *s);
/* Hashes n more bytes at p (NULL allowed when n is 0). Reads exactly p[0..n-1]. */
void ox_sha256_update(ox_sha256_t *s, const void *p, size_t n);
/* Writes the digest to out; s must be initialised again before reuse. */
void ox_sha256_final(ox_sha256_t *s, unsigned char out[OX_SHA256_BYTES]);

/* One-shot digest of n bytes at p. */
void ox_sha256(const void *p, size_t n, unsigned char out[OX_SHA256_BYTES]);

/* Lower-case hex of a digest: 64 characters and a NUL. */
void ox_sha256_hex(const unsigned char d[OX_SHA256_BYTES], char out[2 * OX_SHA256_BYTES + 1]);

/* Which block function later calls use: "sha-ni" or "portable" (static string). */
const char *ox_sha256_impl(void);
/* Tests: on 0 forces the portable block function, on 1 restores the default (the SHA
 * extensions when the CPU has them). Returns the name now in use. Not for concurrent use with
 * hashing in other threads. */
const char *ox_sha256_set_accel(int on);

#endif
