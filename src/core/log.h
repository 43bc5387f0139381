/* log.h: leveled logging to stderr, one line per call, safe from any thread. */
#ifndef OX_CORE_LOG_H
#define OX_CORE_LOG_H

typedef enum { OX_LOG_ERROR, OX_LOG_WARN, OX_LOG_INFO, OX_LOG_DEBUG } ox_log_level_t;

extern ox_log_level_t ox_log_level;

/* Parses "error", "warn", "info" or "debug"; returns 0 or OX_EINVALID. */
int ox_log_parse_level(const char *s, ox_log_level_t *out);
void ox_log(ox_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define OX_LOG(lvl, ...)                                   \
  do {                                                     \
    if ((lvl) <= ox_log_level) ox_log((lvl), __VA_ARGS__); \
  } while (0)
#define ox_error(...) OX_LOG(OX_LOG_ERROR, __VA_ARGS__)
#define ox_warn(...) OX_LOG(OX_LOG_WARN, __VA_ARGS__)
#define ox_info(...) OX_LOG(OX_LOG_INFO, __VA_ARGS__)
#define ox_debug(...) OX_LOG(OX_LOG_DEBUG, __VA_ARGS__)

#endif
