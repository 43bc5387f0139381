/* bloom.h: time-windowed Bloom filters: "has entity X been seen in the last W ms?"
 *
 * The window is cut into spans of S = ceil(W / (G - 1)) ms; span number e = floor(now_ms / S)
 * ("epoch"). An add at time t sets the key's k bits in the generation of t's epoch; a check at
 * time now looks in the G generations of epochs e-G+1 .. e (G-1 whole spans and the current,
 * partial one). Hence an item added at t is reported present at every now with
 * t <= now < (e_t + G) * S, that is
 *     at least until t + (G-1)*S >= t + W, and never at or after t + G*S <= t + W + S
 * (ignoring false positives; W/(G-1) exactly when G-1 divides W).
 *
 * Rotation is lazy: each generation carries the epoch it holds; a check ignores generations whose
 * epoch is out of its window, and the first add of a new epoch clears the reused generation
 * (under a mutex that only adders rotating at the same moment contend on). G+1 bit arrays are
 * kept, not G: the array being cleared for epoch e held epoch e-G-1, which no check within one
 * span of the newest add reads, so a check never sees a half-cleared generation and the check
 * path takes no lock at all: it is relaxed atomic loads of the bit words and acquire loads of
 * the epoch tags. Adds are relaxed atomic fetch-ors. Both are ThreadSanitizer-clean.
 *
 * Sizing, from n = expected_items per window and p = fp_rate: every generation has
 *     m = ceil(-n ln p / (ln 2)^2) bits (rounded up to 64) and k = round(m/n * ln 2) hashes,
 * i.e. each generation alone can take all n items at rate p. Because a Bloom filter's false
 * positive rate is convex in its load up to the design load, splitting items over several
 * generations only lowers the total: the rate of check is <= p as long as the items added in the
 * checked span (the last W + S ms at most) number <= n, however they are spread (n items spread
 * evenly over W give far less: about G * rate(n/(G-1))). Memory: (G+1) * m / 8 bytes.
 * Positions come from double hashing (h1 + i*h2) of one 64-bit keyed hash (SipHash-2-4,
 * core/siphash.h, random key per filter: crafted ids cannot be aimed at false positives), reduced
 * to [0, m) by multiply-shift.
 *
 * Times are caller-supplied ms >= 0 on a clock all callers share. Callers whose clocks disagree
 * by less than S see the documented window; an add whose generation has already been reused (its
 * span G+1 or more spans older than the newest add's) is dropped: its item would have expired.
 */
#ifndef OX_FEATURES_BLOOM_H
#define OX_FEATURES_BLOOM_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define OX_BLOOM_MAX_GENERATIONS 64
#define OX_BLOOM_MAX_K 32

typedef struct ox_bloom ox_bloom_t;

typedef struct {
  int64_t window_ms, span_ms; /* W and S */
  unsigned generations;       /* G (G+1 arrays are allocated) */
  unsigned k;                 /* hashes per key */
  uint64_t bits;              /* m, bits per generation */
  size_t bytes;               /* memory held by the bit arrays */
} ox_bloom_info_t;

/* Creates a filter for a window of window_ms ms with `generations` generations (2..64; 4 is a
 * good default: the window overshoots by at most a third), sized for expected_items adds per
 * window at false-positive rate fp_rate (0 < fp_rate < 1).
 * Returns 0 and *out (owned, freed by ox_bloom_destroy); OX_EINVALID for parameters out of range
 * (window_ms < generations - 1, expected_items 0); OX_ETOO_LARGE if the arrays would pass
 * 64 GiB; OX_ENOMEM. */
int ox_bloom_create(int64_t window_ms, unsigned generations, uint64_t expected_items,
                    double fp_rate, ox_bloom_t **out);

/* Frees the filter. No other call may be running or follow. NULL is allowed. */
void ox_bloom_destroy(ox_bloom_t *b);

/* Records key as seen at now_ms. Safe from any thread, concurrently with checks and other adds;
 * takes a mutex only when it is the first add of a new span (to clear a generation). */
void ox_bloom_add(ox_bloom_t *b, ox_slice_t key, int64_t now_ms);

/* 1 if key was (probably) added within the window ending at now_ms (see above), 0 if it
 * certainly was not. Lock-free and allocation-free; safe from any thread. */
int ox_bloom_check(const ox_bloom_t *b, ox_slice_t key, int64_t now_ms);

/* Check, then add: returns what ox_bloom_check would have returned just before the add (two
 * threads adding the same new key at once may both get 0). Hashes the key once. */
int ox_bloom_check_add(ox_bloom_t *b, ox_slice_t key, int64_t now_ms);

/* The filter's geometry, for logs and metrics. */
void ox_bloom_info(const ox_bloom_t *b, ox_bloom_info_t *out);

#endif
