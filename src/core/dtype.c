/* dtype.c: lookups over the datatype table in dtype.h. */
#include "core/dtype.h"

#include <string.h>

static const struct {
  const char *name;
  size_t size;
  ox_json_kind_t kind;
} ox_dtype_table[OX_DT_COUNT_] = {[OX_DT_INVALID] = {"INVALID", 0, OX_JK_STRING},
#define OX_DT_ROW(e, name, size, kind) [OX_DT_##e] = {name, size, kind},
                                  OX_DTYPE_MAP(OX_DT_ROW)
#undef OX_DT_ROW
};

const char *ox_dtype_name(ox_dtype_t dt) {
  return (unsigned)dt < OX_DT_COUNT_ ? ox_dtype_table[dt].name : "INVALID";
}

ox_dtype_t ox_dtype_from_name(const char *name, size_t len) {
  for (int i = 1; i < OX_DT_COUNT_; i++) {
    const char *n = ox_dtype_table[i].name;
    if (strlen(n) == len && memcmp(n, name, len) == 0) return (ox_dtype_t)i;
  }
  return OX_DT_INVALID;
}

size_t ox_dtype_size(ox_dtype_t dt) {
  return (unsigned)dt < OX_DT_COUNT_ ? ox_dtype_table[dt].size : 0;
}

ox_json_kind_t ox_dtype_json_kind(ox_dtype_t dt) {
  return (unsigned)dt < OX_DT_COUNT_ ? ox_dtype_table[dt].kind : OX_JK_STRING;
}
