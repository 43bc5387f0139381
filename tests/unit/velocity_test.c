/* velocity_test.c: unit tests for the velocity features (src/features/velocity.c) against the
 * definition in velocity.h: empty history, window edges (t - W excluded, t included, after t
 * ignored), secs_since_last beyond 24 h, summation order and float32 rounding, distinct
 * merchants (merchant 0, duplicates, the heap path), unsorted input, extreme times, and the
 * 24-byte event record's exact bytes. */
#include <math.h>
#include <stdint.h>

#include "core/error.h"
#include "features/velocity.h"
#include "test.h"

enum { C1M, C1H, C24H, A1M, A1H, A24H, DM24, SECS };

#define T_NOW 1700000000000LL /* a Unix time in ms */

static ox_feat_event_t E(int64_t ts, double amount, uint64_t merchant) {
  return (ox_feat_event_t){ts, amount, merchant};
}

TEST(test_names) {
  CHECK_STR(ox_feat_velocity_names[0], "cnt_1m");
  CHECK_STR(ox_feat_velocity_names[5], "amt_24h");
  CHECK_STR(ox_feat_velocity_names[6], "distinct_merchants_24h");
  CHECK_STR(ox_feat_velocity_names[7], "secs_since_last");
}

TEST(test_empty) {
  float f[8];
  CHECK_INT(ox_feat_velocity(NULL, 0, T_NOW, -1.0f, f), 0);
  for (int i = 0; i < 7; i++) CHECK(f[i] == 0.0f && !signbit(f[i]));
  CHECK(f[SECS] == -1.0f);
  /* only events after t: same as empty */
  ox_feat_event_t ev[1] = {E(T_NOW + 1, 5, 1)};
  CHECK_INT(ox_feat_velocity(ev, 1, T_NOW, 123.0f, f), 0);
  CHECK(f[C24H] == 0.0f && f[A24H] == 0.0f && f[DM24] == 0.0f && f[SECS] == 123.0f);
}

TEST(test_window_edges) {
  const int64_t t = T_NOW;
  ox_feat_event_t ev[] = {
      E(t - 86400000, 1000, 1), /* exactly t - 24h: in no window */
      E(t - 86399999, 100, 2),  /* 24h only */
      E(t - 3600000, 200, 3),   /* exactly t - 1h: 24h only */
      E(t - 3599999, 10, 4),    /* 1h and 24h */
      E(t - 60000, 20, 5),      /* exactly t - 1m: 1h and 24h */
      E(t - 59999, 1, 6),       /* all three */
      E(t, 2, 6),               /* exactly t: all three */
      E(t + 1, 4000, 7),        /* after t: ignored */
  };
  float f[8];
  CHECK_INT(ox_feat_velocity(ev, 8, t, -1.0f, f), 0);
  CHECK(f[C1M] == 2.0f);
  CHECK(f[C1H] == 4.0f);
  CHECK(f[C24H] == 6.0f);
  CHECK(f[A1M] == 3.0f);
  CHECK(f[A1H] == 33.0f);
  CHECK(f[A24H] == 333.0f);
  CHECK(f[DM24] == 5.0f); /* merchants 2, 3, 4, 5, 6 */
  CHECK(f[SECS] == 0.0f); /* the event at t */
  /* one ms later everything slides by one: the event at t - 59999 leaves the 1m window */
  CHECK_INT(ox_feat_velocity(ev, 8, t + 1, -1.0f, f), 0);
  CHECK(f[C1M] == 2.0f); /* now t and t + 1 */
  CHECK(f[A1M] == 4002.0f);
  CHECK(f[SECS] == 0.0f);
}

TEST(test_secs_since_last) {
  const int64_t t = T_NOW;
  ox_feat_event_t ev[] = {E(t - 100LL * 86400000, 7, 1)}; /* 100 days ago: in no window */
  float f[8];
  CHECK_INT(ox_feat_velocity(ev, 1, t, -1.0f, f), 0);
  CHECK(f[C24H] == 0.0f && f[A24H] == 0.0f && f[DM24] == 0.0f);
  CHECK(f[SECS] == 8640000.0f);
  ox_feat_event_t ev2[] = {E(t - 1, 7, 1)};
  CHECK_INT(ox_feat_velocity(ev2, 1, t, -1.0f, f), 0);
  CHECK(f[SECS] == (float)(1 / 1000.0)); /* 0.001 rounded twice: double, then float */
  ox_feat_event_t ev3[] = {E(t - 1234567, 7, 1)};
  CHECK_INT(ox_feat_velocity(ev3, 1, t, -1.0f, f), 0);
  CHECK(f[SECS] == 1234.567f);
}

TEST(test_sum_order_and_rounding) {
  const int64_t t = T_NOW;
  /* plain left-to-right double addition: 1e16 + 1 rounds back to 1e16, so the sum is 0
   * (compensated summation, e.g. Python 3.12's sum(), would give 1) */
  ox_feat_event_t ev[] = {E(t - 3, 1e16, 1), E(t - 2, 1.0, 1), E(t - 1, -1e16, 1)};
  float f[8];
  CHECK_INT(ox_feat_velocity(ev, 3, t, 0, f), 0);
  CHECK(f[A1M] == 0.0f);
  /* equal ts keep array (insertion) order: 1, 1e16, -1e16 gives 0; 1e16, -1e16, 1 gives 1 */
  ox_feat_event_t a[] = {E(t, 1.0, 1), E(t, 1e16, 1), E(t, -1e16, 1)};
  ox_feat_event_t b[] = {E(t, 1e16, 1), E(t, -1e16, 1), E(t, 1.0, 1)};
  CHECK_INT(ox_feat_velocity(a, 3, t, 0, f), 0);
  CHECK(f[A24H] == 0.0f);
  CHECK_INT(ox_feat_velocity(b, 3, t, 0, f), 0);
  CHECK(f[A24H] == 1.0f);
  /* double sum first, one rounding to float at the end */
  ox_feat_event_t c[] = {E(t - 2, 0.1, 1), E(t - 1, 0.2, 1)};
  CHECK_INT(ox_feat_velocity(c, 2, t, 0, f), 0);
  CHECK(f[A1M] == (float)(0.1 + 0.2));
  ox_feat_event_t d[] = {E(t, 16777217.0, 1)}; /* 2^24 + 1: ties to even in float */
  CHECK_INT(ox_feat_velocity(d, 1, t, 0, f), 0);
  CHECK(f[A1M] == 16777216.0f);
  ox_feat_event_t e[] = {E(t - 1, 3e38, 1), E(t, 3e38, 1)}; /* overflows float: infinity */
  CHECK_INT(ox_feat_velocity(e, 2, t, 0, f), 0);
  CHECK(isinf(f[A1M]) && f[A1M] > 0);
  ox_feat_event_t g[] = {E(t, -0.0, 1)}; /* +0.0 + -0.0 = +0.0 */
  CHECK_INT(ox_feat_velocity(g, 1, t, 0, f), 0);
  CHECK(f[A1M] == 0.0f && !signbit(f[A1M]));
}

TEST(test_distinct_merchants) {
  const int64_t t = T_NOW;
  ox_feat_event_t ev[] = {E(t - 5, 1, 0),  E(t - 4, 1, 0),  E(t - 3, 1, UINT64_MAX),
                          E(t - 2, 1, 42), E(t - 1, 1, 42), E(t, 1, UINT64_MAX)};
  float f[8];
  CHECK_INT(ox_feat_velocity(ev, 6, t, 0, f), 0);
  CHECK(f[DM24] == 3.0f); /* 0, 42, 2^64-1 */
  /* 1000 events in 24 h over 300 merchants: the heap path; plus older ones not counted */
  static ox_feat_event_t many[1100];
  for (int i = 0; i < 100; i++) many[i] = E(t - 90000000 + i, 1, 100000 + (uint64_t)i);
  for (int i = 0; i < 1000; i++) many[100 + i] = E(t - 1000 + i, 0.5, (uint64_t)(i % 300) * 7919);
  CHECK_INT(ox_feat_velocity(many, 1100, t, 0, f), 0);
  CHECK(f[C24H] == 1000.0f);
  CHECK(f[A24H] == 500.0f);
  CHECK(f[DM24] == 300.0f);
  CHECK(f[C1M] == 1000.0f);
  CHECK(f[SECS] == 0.001f);
}

TEST(test_invalid_and_extremes) {
  ox_feat_event_t bad[] = {E(10, 1, 1), E(9, 1, 1)};
  float f[8] = {42, 42, 42, 42, 42, 42, 42, 42};
  CHECK_INT(ox_feat_velocity(bad, 2, 100, 0, f), OX_EINVALID);
  CHECK(f[0] == 42.0f); /* untouched */
  /* t - ts overflowing int64 must not be "in window"; secs is exact in uint64 */
  ox_feat_event_t far[] = {E(INT64_MIN, 1, 1)};
  CHECK_INT(ox_feat_velocity(far, 1, INT64_MAX, 0, f), 0);
  CHECK(f[C24H] == 0.0f);
  CHECK(f[SECS] == (float)(18446744073709551615.0 / 1000.0));
  ox_feat_event_t neg[] = {E(-61000, 1, 1), E(-60000, 2, 1), E(-1, 4, 1)};
  CHECK_INT(ox_feat_velocity(neg, 3, 0, 0, f), 0);
  CHECK(f[C1M] == 1.0f && f[A1M] == 4.0f && f[C1H] == 3.0f);
}

TEST(test_event_record) {
  ox_feat_event_t ev = E(1, 1.0, 0x0102030405060708ULL), back;
  unsigned char b[OX_FEAT_EVENT_BYTES];
  ox_feat_event_encode(&ev, b);
  /* struct.pack('<qdQ', 1, 1.0, 0x0102030405060708) */
  static const unsigned char want[24] = {1, 0, 0,    0,    0, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0xf0, 0x3f, 8, 7, 6, 5, 4, 3, 2, 1};
  CHECK_MEM(b, want, 24);
  CHECK_INT(ox_feat_event_decode(b, 24, &back), 0);
  CHECK_INT(back.ts_ms, 1);
  CHECK(back.amount == 1.0);
  CHECK(back.merchant == 0x0102030405060708ULL);
  ev = E(-2, -0.5, UINT64_MAX);
  ox_feat_event_encode(&ev, b);
  CHECK_INT(b[0], 0xfe);
  CHECK_INT(b[7], 0xff);
  CHECK_INT(ox_feat_event_decode(b, 24, &back), 0);
  CHECK_INT(back.ts_ms, -2);
  CHECK(back.amount == -0.5 && back.merchant == UINT64_MAX);
  CHECK_INT(ox_feat_event_decode(b, 23, &back), OX_EINVALID);
}

/* The distinct-merchant set's slots come from a secret: the same merchants land in different
 * slot patterns under two keys (an attacker who does not know the key cannot aim a run), and
 * the count is right whatever the key (all merchants in one probe run included). */
TEST(test_distinct_slots_are_keyed) {
  ox_siphash_key_t k1 = {1, 2}, k2 = {3, 4};
  size_t same = 0;
  for (uint64_t m = 1; m <= 1000; m++)
    same += ox_feat_distinct_slot(m, &k1, 4096) == ox_feat_distinct_slot(m, &k2, 4096);
  CHECK(same < 20); /* about 1000/4096 expected by chance */
  /* the slot is SipHash of the value: not the old fixed mix, not the value's own low bits */
  CHECK(ox_feat_distinct_slot(12345, &k1, 1u << 20) ==
        (size_t)(ox_siphash_u64(12345, &k1) & ((1u << 20) - 1)));
  /* 20,000 merchants, 5 repeats each, in a heap-allocated set: exact count */
  enum { NM = 20000, REP = 5 };
  ox_feat_event_t *ev = malloc(sizeof *ev * NM * REP);
  for (size_t i = 0; i < NM * REP; i++)
    ev[i] = E(T_NOW - 1000 + (int64_t)(i / 1000), 1, (i % NM) * 0x10000);
  float f[8];
  CHECK_INT(ox_feat_velocity(ev, NM * REP, T_NOW, -1.0f, f), 0);
  CHECK(f[DM24] == (float)NM);
  free(ev);
}

TEST_MAIN(T(test_distinct_slots_are_keyed), T(test_names), T(test_empty), T(test_window_edges),
          T(test_secs_since_last), T(test_sum_order_and_rounding), T(test_distinct_merchants),
          T(test_invalid_and_extremes), T(test_event_record))
