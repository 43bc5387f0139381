/* log.c: see log.h. One fprintf per line keeps lines whole across threads (stdio locks). */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/error.h"

ox_log_level_t ox_log_level = OX_LOG_INFO;

static const char *const ox_log_names[] = {"error", "warn", "info", "debug"};

int ox_log_parse_level(const char *s, ox_log_level_t *out) {
  for (int i = 0; i < 4; i++) {
    if (strcmp(s, ox_log_names[i]) == 0) {
      *out = (ox_log_level_t)i;
      return 0;
    }
  }
  return OX_EINVALID;
}

void ox_log(ox_log_level_t level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s\n", tm.tm_year + 1900,
          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
          ox_log_names[level], msg);
}
