/* error.c: names and messages of onnxd's error codes (see error.h). */
#include "core/error.h"

#include <string.h>

static const struct {
  const char *name;
  const char *msg;
} ox_err_table[] = {
#define OX_ERR_ROW(name, msg) {"OX_E" #name, msg},
    OX_ERR_MAP(OX_ERR_ROW)
#undef OX_ERR_ROW
};

static int ox_err_index_of(int err) {
  int idx = -err - OX_ERR_BASE;
  if (idx < 0 || idx >= OX_ERRIDX_COUNT_) return -1;
  return idx;
}

const char *ox_err_name(int err) {
  int idx = ox_err_index_of(err);
  if (idx >= 0) return ox_err_table[idx].name;
  if (err < 0) {
    const char *n = strerrorname_np(-err);
    return n ? n : "EUNKNOWN";
  }
  return "OK";
}

const char *ox_strerror(int err) {
  int idx = ox_err_index_of(err);
  if (idx >= 0) return ox_err_table[idx].msg;
  if (err < 0) return strerror(-err);
  return "success";
}
