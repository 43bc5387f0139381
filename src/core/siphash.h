/* siphash.h: SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012), a
 * keyed 64-bit hash, and the per-process secret key onnxd's in-memory tables use.
 *
 * Why: hash tables whose keys a client chooses (entity names, merchant ids, row keys) must not
 * let the client choose the slots, or a few thousand colliding keys turn every lookup into a
 * walk of one chain (hash flooding). SipHash is a pseudo-random function of its 128-bit key:
 * without the key, outputs cannot be predicted and collisions cannot be aimed, even for
 * someone who sees many outputs. Every table whose slots come from client bytes hashes them
 * with SipHash under a secret: ox_siphash_process_key() for tables that live in one process
 * (L1, Bloom filter, lock stripes, per-request tables, the distinct-merchant set), a key kept
 * in the store for values that are persisted (the merchant identity in stored events).
 *
 * Cost: about 1 ns per byte plus 15-20 ns per call on a current x86 core; ox_siphash_u64 (one
 * 8-byte word) is the cheapest call, for re-keying an already-hashed 64-bit value.
 */
#ifndef OX_CORE_SIPHASH_H
#define OX_CORE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define OX_SIPHASH_KEY_BYTES 16

/* A SipHash key: the 16 key bytes read as two little-endian 64-bit words, as in the paper. */
typedef struct {
  uint64_t k0, k1;
} ox_siphash_key_t;

/* The key of 16 bytes at p (k0 = bytes 0..7, k1 = bytes 8..15, little-endian). */
ox_siphash_key_t ox_siphash_key_from_bytes(const unsigned char p[OX_SIPHASH_KEY_BYTES]);

/* SipHash-2-4 of n bytes at p (NULL allowed when n is 0) under key. Pure; any n. */
uint64_t ox_siphash(const void *p, size_t n, const ox_siphash_key_t *key);

/* SipHash-2-4 of the 8-byte little-endian encoding of v (= ox_siphash(&le64(v), 8, key)). */
uint64_t ox_siphash_u64(uint64_t v, const ox_siphash_key_t *key);

/* Fills out with n bytes from getrandom(2) (blocking until the kernel's pool is initialised,
 * which it is long before a server starts), falling back to /dev/urandom. 0, or -errno when
 * neither source answers: then out is not to be used as a secret. */
int ox_random_bytes(void *out, size_t n);

/* A fresh random key (ox_random_bytes). 0 or -errno (see above). */
int ox_siphash_random_key(ox_siphash_key_t *key);

/* The per-process secret key: drawn once, on the first call (thread-safe), from
 * ox_random_bytes. Never changes afterwards and is never exposed; values hashed with it mean
 * nothing outside this process, so never persist them. If no random source answers (no
 * getrandom, no /dev/urandom), the process aborts: running with a predictable key would
 * silently reopen hash flooding. Borrowed, valid for the life of the process. */
const ox_siphash_key_t *ox_siphash_process_key(void);

#endif
