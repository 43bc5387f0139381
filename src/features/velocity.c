/* velocity.c: see velocity.h for the definition this implements. One pass over the events up
 * to t; the three windows are nested, so each in-window event updates the sums of every window
 * containing it, in event order, which is the summation order the definition fixes. Distinct
 * merchants: an open-addressing set (linear probing, 0 as the empty mark, merchant 0 tracked by
 * a flag, load at most 1/2), on the stack for small windows. Its start slots are SipHash-2-4 of
 * the stored merchant value under the per-process secret (core/siphash.h): the merchant value
 * is itself a keyed hash of the client's merchant_id (features/fstore.h), but it is persisted and
 * may be seen by other consumers (Redis lists), so the slots are keyed again with a secret that
 * never leaves the process. Without the key a client cannot make merchants share probe runs,
 * so a probe visits about 1.5 (hit) to 2.5 (miss) slots on average at load 1/2. */
#include "features/velocity.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/siphash.h"

const char *const ox_feat_velocity_names[OX_FEAT_VELOCITY_N] = {
    "cnt_1m",         "cnt_1h", "cnt_24h", "amt_1m", "amt_1h", "amt_24h", "distinct_merchants_24h",
    "secs_since_last"};

#define STACK_EVENTS 256
#define STACK_SLOTS (2 * STACK_EVENTS)

/* t - ts < w, without overflow, for ts <= t. */
static inline bool in_window(int64_t t, int64_t ts, int64_t w) {
  int64_t d;
  return !__builtin_sub_overflow(t, ts, &d) && d < w;
}

size_t ox_feat_distinct_slot(uint64_t merchant, const ox_siphash_key_t *key, size_t slots) {
  return (size_t)ox_siphash_u64(merchant, key) & (slots - 1);
}

/* Number of distinct merchants among ev[from..to), using a set of `slots` (a power of two, more
 * than to - from) zeroed entries at set. */
static size_t count_distinct(const ox_feat_event_t *ev, size_t from, size_t to, uint64_t *set,
                             size_t slots) {
  const ox_siphash_key_t *key = ox_siphash_process_key();
  size_t distinct = 0, mask = slots - 1;
  bool zero = false;
  for (size_t i = from; i < to; i++) {
    uint64_t m = ev[i].merchant;
    if (m == 0) {
      distinct += !zero;
      zero = true;
      continue;
    }
    size_t j = ox_feat_distinct_slot(m, key, slots);
    while (set[j] && set[j] != m) j = (j + 1) & mask;
    if (!set[j]) {
      set[j] = m;
      distinct++;
    }
  }
  return distinct;
}

int ox_feat_velocity(const ox_feat_event_t *ev, size_t n, int64_t t, float default_secs,
                     float out[OX_FEAT_VELOCITY_N]) {
  for (size_t i = 1; i < n; i++)
    if (ev[i].ts_ms < ev[i - 1].ts_ms) return OX_EINVALID;
  static const int64_t win[3] = {OX_FEAT_W_1M, OX_FEAT_W_1H, OX_FEAT_W_24H};
  uint64_t cnt[3] = {0, 0, 0};
  double sum[3] = {0.0, 0.0, 0.0};
  size_t end = 0, first24 = SIZE_MAX;
  for (; end < n && ev[end].ts_ms <= t; end++) {
    for (int w = 0; w < 3; w++) {
      if (!in_window(t, ev[end].ts_ms, win[w])) continue;
      cnt[w]++;
      sum[w] = sum[w] + ev[end].amount;
      if (w == 2 && first24 == SIZE_MAX) first24 = end;
    }
  }
  /* The 24h window's events are ev[first24..end): ts is sorted, so they are contiguous. */
  size_t distinct = 0;
  if (cnt[2]) {
    uint64_t stack_set[STACK_SLOTS];
    uint64_t *set = stack_set;
    size_t slots = 16;
    while (slots < 2 * cnt[2]) slots <<= 1;
    if (slots > STACK_SLOTS) {
      set = calloc(slots, sizeof *set);
      if (!set) return OX_ENOMEM;
    } else {
      memset(stack_set, 0, slots * sizeof *set);
    }
    distinct = count_distinct(ev, first24, end, set, slots);
    if (set != stack_set) free(set);
  }
  for (int w = 0; w < 3; w++) {
    out[w] = (float)cnt[w];
    out[3 + w] = (float)sum[w];
  }
  out[6] = (float)distinct;
  if (end == 0) {
    out[7] = default_secs;
  } else {
    /* t >= last: the unsigned difference is exact even when the signed one would overflow */
    uint64_t d = (uint64_t)t - (uint64_t)ev[end - 1].ts_ms;
    out[7] = (float)((double)d / 1000.0);
  }
  return 0;
}

void ox_feat_event_encode(const ox_feat_event_t *ev, unsigned char out[OX_FEAT_EVENT_BYTES]) {
  uint64_t f[3];
  memcpy(&f[0], &ev->ts_ms, 8);
  memcpy(&f[1], &ev->amount, 8);
  f[2] = ev->merchant;
  for (int i = 0; i < 3; i++)
    for (int b = 0; b < 8; b++) out[i * 8 + b] = (unsigned char)(f[i] >> (8 * b));
}

int ox_feat_event_decode(const void *p, size_t len, ox_feat_event_t *ev) {
  if (len != OX_FEAT_EVENT_BYTES) return OX_EINVALID;
  const unsigned char *s = p;
  uint64_t f[3] = {0, 0, 0};
  for (int i = 0; i < 3; i++)
    for (int b = 7; b >= 0; b--) f[i] = f[i] << 8 | s[i * 8 + b];
  memcpy(&ev->ts_ms, &f[0], 8);
  memcpy(&ev->amount, &f[1], 8);
  ev->merchant = f[2];
  return 0;
}
