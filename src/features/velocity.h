/* velocity.h: velocity features of one entity from its events: the one definition shared by
 * online serving (this C code) and the offline Python computation (written from this text).
 *
 * DEFINITION (normative; the Python implementation must match it bit for bit)
 *
 * Input
 *   t       the request time: an integer number of milliseconds (int64).
 *   events  a sequence of events e = (ts, amount, merchant): ts an integer ms (int64), amount an
 *           IEEE-754 binary64 number, merchant an unsigned 64-bit integer id. The sequence is in
 *           "event order": ts non-decreasing, events with equal ts in insertion order. (This is
 *           the order of ox_l2_scan_events. In Python: sort by (ts, insertion index), a stable
 *           sort by ts.) Events with ts > t are ignored entirely, wherever they appear.
 *   default_secs  the value of secs_since_last when no event has ts <= t (a binary32 number
 *           given by the caller, e.g. -1.0).
 *
 * Windows W, in ms: 60000 (1m), 3600000 (1h), 86400000 (24h). An event is IN window W when
 *     t - W < ts <= t          (integer comparison; an event exactly at t - W is OUT,
 *                               an event exactly at t is IN)
 *
 * Output: 8 binary32 (float32) values, in this order:
 *   [0] cnt_1m    number of events in the 1m window
 *   [1] cnt_1h    number of events in the 1h window
 *   [2] cnt_24h   number of events in the 24h window
 *   [3] amt_1m    sum of the amounts of the events in the 1m window
 *   [4] amt_1h    sum of the amounts of the events in the 1h window
 *   [5] amt_24h   sum of the amounts of the events in the 24h window
 *   [6] distinct_merchants_24h   number of distinct merchant values (uint64 equality) among
 *                 the events in the 24h window
 *   [7] secs_since_last  (t - last_ts) / 1000 where last_ts is the largest ts <= t among ALL
 *                 given events (not limited to 24h); default_secs if there is none
 *
 * Arithmetic, exactly:
 *   - Counts are exact integers, then converted to binary32 (exact up to 2^24 = 16,777,216;
 *     above, round to nearest, ties to even).
 *   - Each sum starts from +0.0 and adds the amounts one at a time, in event order, in binary64
 *     with round-to-nearest-even (acc = acc + amount), then converts the binary64 total to
 *     binary32 with round-to-nearest-even (overflow gives +-infinity; NaN stays NaN). In Python:
 *     a plain loop `acc = 0.0; for a in amounts: acc = acc + a`, then numpy.float32(acc) (or
 *     struct.unpack('f', struct.pack('f', acc)), which differs only by raising on overflow).
 *     NOT sum(): since Python 3.12 sum() of floats uses compensated summation and can differ
 *     in the last bit; NOT math.fsum(); NOT numpy.sum() (pairwise summation).
 *   - secs_since_last: d = t - last_ts is an exact integer >= 0; convert d to binary64 (exact
 *     below 2^53, otherwise round to nearest even), divide by 1000.0 in binary64 (correctly
 *     rounded), convert to binary32 (round to nearest even). In Python:
 *     numpy.float32((t - last_ts) / 1000.0).
 *   - An empty window gives 0 counts, +0.0 sums and 0 distinct merchants.
 */
#ifndef OX_FEATURES_VELOCITY_H
#define OX_FEATURES_VELOCITY_H

#include <stddef.h>
#include <stdint.h>

#include "core/siphash.h"

#define OX_FEAT_VELOCITY_N 8
#define OX_FEAT_EVENT_BYTES 24 /* encoded size of one event */

/* The three windows, in ms. */
#define OX_FEAT_W_1M 60000
#define OX_FEAT_W_1H 3600000
#define OX_FEAT_W_24H 86400000

/* Feature names in output order ("cnt_1m", ..., "secs_since_last"). */
extern const char *const ox_feat_velocity_names[OX_FEAT_VELOCITY_N];

typedef struct {
  int64_t ts_ms;
  double amount;
  uint64_t merchant; /* merchant identity: the store's keyed hash of merchant_id (fstore.h) */
} ox_feat_event_t;

/* Computes the 8 features defined above into out[0..8). events[0..n) must be in event order
 * (ts non-decreasing; equal ts in insertion order). May be NULL when n is 0.
 * Allocates nothing when at most 256 events fall in the 24h window (the distinct-merchant set
 * lives on the stack); above that it mallocs a set and frees it before returning.
 * Work: one pass over events[0..n) (a few ns each), plus, per event in the 24 h window, one
 * SipHash-2-4 of its merchant (about 20 ns) and a probe of a set at load <= 1/2 whose slots a
 * client cannot aim (1.5 to 2.5 slots on average), and 16 bytes of set memory. The caller
 * bounds n: the feature store caps what one entity holds in any 24 h window (fstore.h).
 * Returns 0; OX_EINVALID (ts decreasing somewhere: out is left untouched); OX_ENOMEM. */
int ox_feat_velocity(const ox_feat_event_t *events, size_t n, int64_t t_ms, float default_secs,
                     float out[OX_FEAT_VELOCITY_N]);

/* The start slot of merchant in a distinct-merchant set of `slots` slots (a power of two)
 * under key: the low bits of SipHash-2-4 of the merchant value. ox_feat_velocity uses
 * ox_siphash_process_key(); exposed so that tests can show the slots depend on the secret. */
size_t ox_feat_distinct_slot(uint64_t merchant, const ox_siphash_key_t *key, size_t slots);

/* The event record stored as an L2 event payload: 24 bytes, little-endian: ts_ms as int64,
 * amount as the binary64 bit pattern, merchant as uint64. (In Python:
 * struct.pack('<qdQ', ts_ms, amount, merchant).) */
void ox_feat_event_encode(const ox_feat_event_t *ev, unsigned char out[OX_FEAT_EVENT_BYTES]);

/* Decodes a payload of len bytes (no alignment needed). Returns 0, or OX_EINVALID if len is not
 * OX_FEAT_EVENT_BYTES. */
int ox_feat_event_decode(const void *p, size_t len, ox_feat_event_t *ev);

#endif
