/* velocity_harness.c: runs src/features/velocity.c's ox_feat_velocity on queries from stdin, for
 * tests/fraud/test_fraud_offline.py to compare with tools/fraud/features.py bit for bit.
 *
 * Input, repeated: "Q <t_ms> <n>" then n lines "<ts_ms> <amount as C99 hex float> <merchant>".
 * Output, one line a query: the 8 features as float32 bit patterns in hex, or "ERR <code>".
 * secs_since_last defaults to -1.0 as features.py defines it. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "features/velocity.h"

int main(void) {
  long long t;
  size_t n, cap = 0;
  ox_feat_event_t *ev = NULL;
  char amount[64];
  while (scanf(" Q %lld %zu", &t, &n) == 2) {
    if (n > cap) {
      cap = 2 * n;
      ev = realloc(ev, cap * sizeof *ev);
      if (!ev) return 2;
    }
    for (size_t i = 0; i < n; i++) {
      long long ts;
      unsigned long long m;
      if (scanf(" %lld %63s %llu", &ts, amount, &m) != 3) return 3;
      ev[i].ts_ms = ts;
      ev[i].amount = strtod(amount, NULL); /* hex float: exact */
      ev[i].merchant = m;
    }
    float out[OX_FEAT_VELOCITY_N];
    int rc = ox_feat_velocity(ev, n, t, -1.0f, out);
    if (rc) {
      printf("ERR %d\n", rc);
      continue;
    }
    for (int k = 0; k < OX_FEAT_VELOCITY_N; k++) {
      uint32_t b;
      memcpy(&b, &out[k], 4);
      printf("%08" PRIx32 "%c", b, k == OX_FEAT_VELOCITY_N - 1 ? '\n' : ' ');
    }
  }
  free(ev);
  return 0;
}
