/* slice.h: {ptr, len} views into buffers someone else owns (h2o_iovec_t, ngx_str_t, MDB_val). */
#ifndef OX_CORE_SLICE_H
#define OX_CORE_SLICE_H

#include <stddef.h>
#include <string.h>

typedef struct {
  const char *ptr; /* borrowed; valid as long as the buffer it points into */
  size_t len;
} ox_slice_t;

#define OX_SLICE_LIT(s) ((ox_slice_t){(s), sizeof(s) - 1})

static inline ox_slice_t ox_slice(const char *p, size_t n) {
  return (ox_slice_t){p, n};
}

static inline int ox_slice_eq(ox_slice_t a, const char *lit) {
  size_t n = strlen(lit);
  return a.len == n && memcmp(a.ptr, lit, n) == 0;
}

/* ASCII case-insensitive comparison with a C string. */
static inline int ox_slice_eq_nocase(ox_slice_t a, const char *lit) {
  size_t n = strlen(lit);
  if (a.len != n) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char x = (unsigned char)a.ptr[i], y = (unsigned char)lit[i];
    if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
    if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
    if (x != y) return 0;
  }
  return 1;
}

#endif
