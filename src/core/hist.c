/* hist.c: see hist.h. */
#include "core/hist.h"

#include <inttypes.h>

#include "core/error.h"

const uint64_t ox_hist_us_bounds[OX_HIST_US_BUCKETS] = {
    50,    100,    250,    500,    1000,    2500,    5000,    10000,    25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000};
const uint64_t ox_hist_batch_bounds[OX_HIST_BATCH_BUCKETS] = {1,  2,  4,   8,   16,
                                                              32, 64, 128, 256, 512};

static void hist_record(ox_hist_t *h, const uint64_t *bounds, size_t nb, uint64_t v) {
  size_t i = 0;
  while (i < nb && v > bounds[i]) i++;
  atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
}

void ox_hist_record_us(ox_hist_t *h, uint64_t us) {
  hist_record(h, ox_hist_us_bounds, OX_HIST_US_BUCKETS, us);
}
void ox_hist_record_batch(ox_hist_t *h, uint64_t rows) {
  hist_record(h, ox_hist_batch_bounds, OX_HIST_BATCH_BUCKETS, rows);
}

#define LD(x) ((uint64_t)atomic_load_explicit(&(x), memory_order_relaxed))

int ox_hist_render_us(ox_buf_t *o, const char *name, const char *labels, const ox_hist_t *h) {
  uint64_t cum = 0;
  int rc = 0;
  for (size_t i = 0; i <= OX_HIST_US_BUCKETS; i++) {
    cum += LD(h->bucket[i]);
    if (i < OX_HIST_US_BUCKETS)
      rc |= ox_buf_printf(o, "%s_bucket{%s,le=\"%" PRIu64 "\"} %" PRIu64 "\n", name, labels,
                          ox_hist_us_bounds[i], cum);
    else
      rc |= ox_buf_printf(o, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, labels, cum);
  }
  rc |= ox_buf_printf(o, "%s_sum{%s} %" PRIu64 "\n%s_count{%s} %" PRIu64 "\n", name, labels,
                      LD(h->sum), name, labels, cum);
  return rc ? OX_ENOMEM : 0;
}
