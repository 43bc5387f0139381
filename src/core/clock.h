/* clock.h: the process's clocks, one copy each.
 *
 * Monotonic time (CLOCK_MONOTONIC) measures durations and deadlines: every deadline_ns in the
 * tree is an absolute ox_mono_ns() value. Wall time (CLOCK_REALTIME) is for what leaves the
 * process or is stored: event and request timestamps, fetch times of cached rows, "last
 * inference". All values are signed 64-bit (ns of monotonic time fit for 292 years), so a
 * deadline can be INT64_MAX ("none") and differences can be negative.
 */
#ifndef OX_CORE_CLOCK_H
#define OX_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t ox_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CLOCK_MONOTONIC in milliseconds. */
static inline int64_t ox_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_REALTIME in milliseconds since the epoch. */
static inline int64_t ox_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
