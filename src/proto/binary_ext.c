/* binary_ext.c: framing of the binary tensor data extension (see binary_ext.h). */
#include "proto/binary_ext.h"

#include <stdio.h>

#include "core/error.h"
#include "core/text.h"

/* 1 to OX_BINEXT_MAX_DIGITS decimal digits into *out; 0 or OX_EINVALID. */
static int binext_decimal(ox_slice_t v, uint64_t *out) {
  if (!v.ptr || v.len > OX_BINEXT_MAX_DIGITS || ox_dec_u64(v.ptr, v.len, UINT64_MAX, out))
    return OX_EINVALID;
  return 0;
}

int ox_binext_parse(const ox_slice_t *values, size_t n, ox_binext_t *out, const char **why) {
  out->present = 0;
  out->header_len = 0;
  if (n == 0) return 0;
  if (n > 1) { /* as with Content-Length: no guessing which one frames the body */
    *why = "Inference-Header-Content-Length appears more than once";
    return OX_EINVALID;
  }
  if (binext_decimal(values[0], &out->header_len)) {
    *why = "Inference-Header-Content-Length must be a decimal byte count";
    return OX_EINVALID;
  }
  out->present = 1;
  return 0;
}

int ox_binext_split(const ox_binext_t *f, ox_slice_t body, ox_slice_t *json, ox_slice_t *binary,
                    char *err, size_t errcap) {
  if (!f->present) {
    *json = body;
    *binary = ox_slice(body.ptr ? body.ptr + body.len : NULL, 0);
    return 0;
  }
  if (f->header_len > body.len) {
    snprintf(err, errcap, "Inference-Header-Content-Length (%zu) is larger than the body (%zu)",
             (size_t)f->header_len, body.len);
    return OX_EINVALID;
  }
  size_t h = (size_t)f->header_len;
  *json = ox_slice(body.ptr, h);
  *binary = ox_slice(body.ptr ? body.ptr + h : NULL, body.len - h);
  return 0;
}

size_t ox_binext_align_offset(ox_slice_t value) {
  uint64_t n;
  return binext_decimal(value, &n) ? 0 : (size_t)n;
}
