/* kserve_pb.c: ModelInferRequest decoded into views, ModelInferResponse encoded around the
 * outputs' memory (proto/kserve_pb.h), on proto/pb.h's reader and writer.
 *
 * Decoding makes two passes over the top level: the first counts inputs, outputs, parameters
 * and raw contents (so every array is allocated once, at its size), the second decodes them.
 * A tensor's typed contents may come packed, unpacked or both, in any number of pieces (as
 * protobuf allows for repeated scalars): each field is counted over all its pieces, then the
 * values are converted into one arena array in the binary extension's form, the form the
 * inference core reads. Only a single packed fp32/fp64 piece, aligned, is used in place.
 *
 * Encoding writes every small field into head at its exact size (no padded lengths: the
 * bytes are what protobuf's own serializer would write) and leaves the outputs' data where
 * ONNX Runtime put it, each raw_output_contents field's tag and length in tail and its bytes
 * pointed at by iov.
 */
#include "proto/kserve_pb.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/utf8.h"
#include "proto/pb.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kserve_pb.c points tensors at little-endian wire bytes: a big-endian host needs swaps"
#endif

#define OX_PB_NAME_MAX 64

/* ModelInferRequest / ModelInferResponse / InferInputTensor / InferTensorContents fields. */
enum {
  F_MODEL = 1,
  F_VERSION = 2,
  F_ID = 3,
  F_PARAMS = 4,
  F_INPUTS = 5,
  F_OUTPUTS = 6,
  F_RAW_IN = 7
};
enum { R_OUTPUTS = 5, R_RAW_OUT = 6 }; /* ModelInferResponse (1 to 4 as the request) */
enum { S_ERROR = 1, S_RESPONSE = 2 };  /* ModelStreamInferResponse */
enum { T_NAME = 1, T_DATATYPE = 2, T_SHAPE = 3, T_PARAMS = 4, T_CONTENTS = 5 };
enum {
  C_BOOL = 1,
  C_INT = 2,
  C_INT64 = 3,
  C_UINT = 4,
  C_UINT64 = 5,
  C_FP32 = 6,
  C_FP64 = 7,
  C_BYTES = 8,
  C_COUNT_
};
static const char *const ox_contents_name[C_COUNT_] = {NULL,
                                                       "bool_contents",
                                                       "int_contents",
                                                       "int64_contents",
                                                       "uint_contents",
                                                       "uint64_contents",
                                                       "fp32_contents",
                                                       "fp64_contents",
                                                       "bytes_contents"};

typedef struct {
  char *err;
  size_t errcap;
  ox_arena_t *arena;
} ox_dec_t;

static int ox_fail(ox_dec_t *d, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ox_fail(ox_dec_t *d, int rc, const char *fmt, ...) {
  if (d->err && d->errcap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, d->errcap, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* Copies s into dst (room for OX_PB_NAME_MAX + 4 bytes) for a message: cut at a character
 * boundary with "..." if long, control bytes as '?'. */
static const char *ox_quote(char *dst, ox_slice_t s) {
  size_t n = s.len;
  int cut = 0;
  if (n > OX_PB_NAME_MAX) {
    n = OX_PB_NAME_MAX;
    while (n > 0 && ((unsigned char)s.ptr[n] & 0xC0) == 0x80) n--;
    cut = 1;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s.ptr[i];
    dst[i] = (char)(c < 0x20 || c == 0x7f ? '?' : c);
  }
  memcpy(dst + n, cut ? "..." : "", cut ? 4 : 1);
  return dst;
}

/* A string field (wire type LEN, valid UTF-8 as proto3 requires). */
static int ox_str_field(ox_dec_t *d, const ox_pb_field_t *f, const char *what, ox_slice_t *out) {
  if (f->wire != OX_PB_LEN) return ox_fail(d, OX_EINVALID, "%s: wrong wire type %d", what, f->wire);
  if (!ox_utf8_valid(f->s.ptr, f->s.len))
    return ox_fail(d, OX_EINVALID, "%s is not valid UTF-8", what);
  *out = f->s;
  return 0;
}

static int ox_need_len(ox_dec_t *d, const ox_pb_field_t *f, const char *what) {
  return f->wire == OX_PB_LEN ? 0
                              : ox_fail(d, OX_EINVALID, "%s: wrong wire type %d", what, f->wire);
}

/* ---- parameters ---- */

/* Decodes a map<string, InferParameter> entry into *p (kind, value text in the arena). */
static int ox_param_entry(ox_dec_t *d, ox_slice_t entry, ox_infer_param_t *p, int *is_int,
                          uint64_t *uval, int *negative) {
  ox_pb_reader_t r = ox_pb_reader(entry.ptr, entry.len);
  ox_pb_field_t f;
  ox_slice_t key = ox_slice("", 0), val = ox_slice(NULL, 0);
  int rc, has_val = 0;
  while ((rc = ox_pb_next(&r, &f)) == 1) {
    if (f.num == 1) {
      if ((rc = ox_str_field(d, &f, "parameter key", &key))) return rc;
    } else if (f.num == 2) {
      if ((rc = ox_need_len(d, &f, "parameter value"))) return rc;
      val = f.s; /* the last one wins, as protobuf merges (a oneof: its last member) */
      has_val = 1;
    }
  }
  if (rc) return ox_fail(d, OX_EINVALID, "malformed parameter entry");
  char q[OX_PB_NAME_MAX + 4];
  p->key = key;
  p->kind = OX_PARAM_NULL;
  p->value = ox_slice("null", 4);
  *is_int = 0;
  if (!has_val) return 0;
  /* InferParameter's oneof: the last member on the wire is the one set. */
  ox_pb_field_t last = {0};
  int have = 0;
  r = ox_pb_reader(val.ptr, val.len);
  while ((rc = ox_pb_next(&r, &f)) == 1) {
    if (f.num < 1 || f.num > 5) continue;
    int want = f.num == 3 ? OX_PB_LEN : f.num == 4 ? OX_PB_I64 : OX_PB_VARINT;
    if (f.wire != want)
      return ox_fail(d, OX_EINVALID, "parameter '%s': wrong wire type %d", ox_quote(q, key),
                     f.wire);
    last = f;
    have = 1;
  }
  if (rc) return ox_fail(d, OX_EINVALID, "parameter '%s': malformed value", ox_quote(q, key));
  if (!have) return 0;
  char num[40];
  int n = 0;
  switch (last.num) {
    case 1:
      p->kind = OX_PARAM_BOOL;
      p->value = last.u64 ? ox_slice("true", 4) : ox_slice("false", 5);
      return 0;
    case 3:
      if (!ox_utf8_valid(last.s.ptr, last.s.len))
        return ox_fail(d, OX_EINVALID, "parameter '%s' is not valid UTF-8", ox_quote(q, key));
      p->kind = OX_PARAM_STRING;
      p->value = last.s;
      return 0;
    case 2:
      n = snprintf(num, sizeof num, "%" PRId64, (int64_t)last.u64);
      *is_int = 1;
      *negative = (int64_t)last.u64 < 0;
      *uval = last.u64;
      break;
    case 5:
      n = snprintf(num, sizeof num, "%" PRIu64, last.u64);
      *is_int = 1;
      *negative = 0;
      *uval = last.u64;
      break;
    case 4: {
      double x;
      memcpy(&x, &last.u64, sizeof x);
      /* As the JSON front end refuses NaN and Infinity: the value's text must be a number. */
      if (!isfinite(x))
        return ox_fail(d, OX_EINVALID, "parameter '%s' is not a finite number", ox_quote(q, key));
      n = snprintf(num, sizeof num, "%.17g", x);
      break;
    }
  }
  char *s = ox_arena_strndup(d->arena, num, (size_t)n);
  if (!s) return OX_ENOMEM;
  p->kind = OX_PARAM_NUMBER;
  p->value = ox_slice(s, (size_t)n);
  return 0;
}

/* ---- tensors ---- */

/* What one InferInputTensor carried, before its contents are converted. */
typedef struct {
  ox_slice_t datatype;
  int has_datatype, has_contents;
  ox_slice_t contents;
} ox_tensor_raw_t;

static int ox_input_tensor(ox_dec_t *d, ox_slice_t msg, size_t idx, ox_infer_input_t *in,
                           ox_tensor_raw_t *t) {
  ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
  ox_pb_field_t f;
  int rc;
  char q[OX_PB_NAME_MAX + 4];
  memset(in, 0, sizeof *in);
  memset(t, 0, sizeof *t);
  while ((rc = ox_pb_next(&r, &f)) == 1) {
    switch (f.num) {
      case T_NAME:
        if (f.wire != OX_PB_LEN || !ox_utf8_valid(f.s.ptr, f.s.len))
          return ox_fail(d, OX_EINVALID, "inputs[%zu]: name is not a valid string", idx);
        in->name = f.s;
        break;
      case T_DATATYPE:
        if (f.wire != OX_PB_LEN)
          return ox_fail(d, OX_EINVALID, "inputs[%zu]: datatype: wrong wire type %d", idx, f.wire);
        t->datatype = f.s;
        t->has_datatype = 1;
        break;
      case T_SHAPE:
        if (f.wire == OX_PB_VARINT) {
          if (in->rank == OX_MAX_RANK) goto too_many_dims;
          in->shape[in->rank++] = (int64_t)f.u64;
        } else if (f.wire == OX_PB_LEN) { /* packed */
          const char *p = f.s.ptr, *end = f.s.ptr + f.s.len;
          while (p < end) {
            uint64_t v;
            size_t n = ox_pb_read_varint(p, end, &v);
            if (n == 0) return ox_fail(d, OX_EINVALID, "inputs[%zu]: malformed shape", idx);
            if (in->rank == OX_MAX_RANK) goto too_many_dims;
            in->shape[in->rank++] = (int64_t)v;
            p += n;
          }
        } else {
          return ox_fail(d, OX_EINVALID, "inputs[%zu]: shape: wrong wire type %d", idx, f.wire);
        }
        break;
      case T_PARAMS:
        if (f.wire != OX_PB_LEN)
          return ox_fail(d, OX_EINVALID, "inputs[%zu]: parameters: wrong wire type %d", idx,
                         f.wire);
        break; /* an input's parameters mean nothing to onnxd: the contents say it all */
      case T_CONTENTS:
        if (f.wire != OX_PB_LEN)
          return ox_fail(d, OX_EINVALID, "inputs[%zu]: contents: wrong wire type %d", idx, f.wire);
        if (t->has_contents)
          return ox_fail(d, OX_EINVALID, "inputs[%zu]: contents given twice", idx);
        t->has_contents = 1;
        t->contents = f.s;
        break;
      default:
        break;
    }
  }
  if (rc) return ox_fail(d, OX_EINVALID, "inputs[%zu]: malformed tensor", idx);
  if (in->name.len == 0) return ox_fail(d, OX_EINVALID, "inputs[%zu]: missing name", idx);
  const char *label = ox_quote(q, in->name);
  if (!t->has_datatype) return ox_fail(d, OX_EINVALID, "input '%s': missing datatype", label);
  in->dtype = ox_dtype_from_name(t->datatype.ptr, t->datatype.len);
  if (in->dtype == OX_DT_INVALID) {
    char qd[OX_PB_NAME_MAX + 4];
    return ox_fail(d, OX_EINVALID, "input '%s': unknown datatype '%s'", label,
                   ox_quote(qd, t->datatype));
  }
  uint64_t count = 1;
  for (int i = 0; i < in->rank; i++) {
    if (in->shape[i] < 0)
      return ox_fail(d, OX_EINVALID, "input '%s': shape has a negative dimension", label);
    if (__builtin_mul_overflow(count, (uint64_t)in->shape[i], &count))
      return ox_fail(d, OX_EOVERFLOW, "input '%s': shape's element count overflows", label);
  }
  in->count = count;
  return 0;
too_many_dims:
  return ox_fail(d, OX_EINVALID, "inputs[%zu]: more than %d dimensions", idx, OX_MAX_RANK);
}

/* Checks a BYTES tensor's binary form: count elements, each a 4-byte little-endian length
 * then its bytes, exactly filling b. */
static int ox_check_bytes(ox_dec_t *d, const char *label, ox_slice_t b, uint64_t count) {
  size_t pos = 0;
  uint64_t k = 0;
  while (pos < b.len) {
    if (b.len - pos < 4)
      return ox_fail(d, OX_EINVALID, "input '%s': BYTES element %" PRIu64 " has a cut length",
                     label, k);
    const unsigned char *u = (const unsigned char *)b.ptr + pos;
    uint32_t n = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    pos += 4;
    if (n > b.len - pos)
      return ox_fail(d, OX_EINVALID, "input '%s': BYTES element %" PRIu64 " runs past its data",
                     label, k);
    pos += n;
    k++;
  }
  if (k != count)
    return ox_fail(d, OX_EINVALID, "input '%s': %" PRIu64 " BYTES elements for a shape of %" PRIu64,
                   label, k, count);
  return 0;
}

/* Raw contents for one input: sized against shape and datatype; copied once into the arena
 * when not aligned for the element type. */
static int ox_raw_input(ox_dec_t *d, ox_infer_input_t *in, ox_slice_t raw, size_t *copies) {
  char q[OX_PB_NAME_MAX + 4];
  const char *label = ox_quote(q, in->name);
  size_t es = ox_dtype_size(in->dtype);
  if (in->dtype == OX_DT_BYTES) {
    int rc = ox_check_bytes(d, label, raw, in->count);
    if (rc) return rc;
  } else {
    uint64_t want;
    if (__builtin_mul_overflow(in->count, (uint64_t)es, &want))
      return ox_fail(d, OX_EOVERFLOW, "input '%s': shape's byte size overflows", label);
    if (want != raw.len)
      return ox_fail(d, OX_EINVALID,
                     "input '%s': raw_input_contents has %zu bytes, shape and datatype need "
                     "%" PRIu64,
                     label, raw.len, want);
    if (es > 1 && ((uintptr_t)raw.ptr & (es - 1)) != 0) {
      char *c = ox_arena_alloc_aligned(d->arena, raw.len ? raw.len : 1, es);
      if (!c) return OX_ENOMEM;
      memcpy(c, raw.ptr, raw.len);
      raw.ptr = c;
      ++*copies;
    }
  }
  in->binary = raw;
  in->has_binary = 1;
  in->binary_size = raw.len;
  return 0;
}

/* Counts the elements of each InferTensorContents field over all its pieces (packed or not),
 * and the bytes of the bytes_contents elements. */
static int ox_count_contents(ox_dec_t *d, const char *label, ox_slice_t msg, uint64_t cnt[C_COUNT_],
                             uint64_t *bytes_total, int *pieces) {
  ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
  ox_pb_field_t f;
  int rc;
  while ((rc = ox_pb_next(&r, &f)) == 1) {
    if (f.num < 1 || f.num >= C_COUNT_) continue;
    int fixed = f.num == C_FP32 ? OX_PB_I32 : f.num == C_FP64 ? OX_PB_I64 : OX_PB_VARINT;
    if (f.num == C_BYTES) {
      if (f.wire != OX_PB_LEN) goto wire;
      *bytes_total += 4 + (uint64_t)f.s.len; /* the message bounds it: no overflow */
      cnt[f.num]++;
    } else if (f.wire == fixed) {
      cnt[f.num]++;
    } else if (f.wire == OX_PB_LEN) {
      pieces[f.num]++;
      if (fixed != OX_PB_VARINT) {
        size_t w = fixed == OX_PB_I32 ? 4 : 8;
        if (f.s.len % w)
          return ox_fail(d, OX_EINVALID, "input '%s': %s: packed length %zu not a multiple of %zu",
                         label, ox_contents_name[f.num], f.s.len, w);
        cnt[f.num] += f.s.len / w;
      } else {
        const char *p = f.s.ptr, *end = f.s.ptr + f.s.len;
        while (p < end) {
          uint64_t v;
          size_t n = ox_pb_read_varint(p, end, &v);
          if (n == 0)
            return ox_fail(d, OX_EINVALID, "input '%s': %s: malformed packed varint", label,
                           ox_contents_name[f.num]);
          p += n;
          cnt[f.num]++;
        }
      }
    } else {
      goto wire;
    }
    continue;
  wire:
    return ox_fail(d, OX_EINVALID, "input '%s': %s: wrong wire type %d", label,
                   ox_contents_name[f.num], f.wire);
  }
  if (rc) return ox_fail(d, OX_EINVALID, "input '%s': malformed contents", label);
  return 0;
}

/* The contents field a datatype takes (0: none, raw only). */
static int ox_contents_field(ox_dtype_t dt) {
  switch (dt) {
    case OX_DT_BOOL:
      return C_BOOL;
    case OX_DT_INT8:
    case OX_DT_INT16:
    case OX_DT_INT32:
      return C_INT;
    case OX_DT_INT64:
      return C_INT64;
    case OX_DT_UINT8:
    case OX_DT_UINT16:
    case OX_DT_UINT32:
      return C_UINT;
    case OX_DT_UINT64:
      return C_UINT64;
    case OX_DT_FP32:
      return C_FP32;
    case OX_DT_FP64:
      return C_FP64;
    case OX_DT_BYTES:
      return C_BYTES;
    default:
      return 0;
  }
}

/* Stores element k's value v (a varint field's value) into out, range-checked. */
static int ox_store_int(ox_dtype_t dt, char *out, uint64_t k, uint64_t v) {
  switch (dt) {
    case OX_DT_BOOL:
      out[k] = v != 0;
      return 0;
    case OX_DT_INT8:
    case OX_DT_INT16:
    case OX_DT_INT32: {
      int32_t x = (int32_t)(uint32_t)v; /* int32 on the wire: the low 32 bits, as protobuf */
      if (dt == OX_DT_INT8) {
        if (x < INT8_MIN || x > INT8_MAX) return -1;
        out[k] = (char)(int8_t)x;
      } else if (dt == OX_DT_INT16) {
        if (x < INT16_MIN || x > INT16_MAX) return -1;
        int16_t y = (int16_t)x;
        memcpy(out + 2 * k, &y, 2);
      } else {
        memcpy(out + 4 * k, &x, 4);
      }
      return 0;
    }
    case OX_DT_UINT8:
    case OX_DT_UINT16:
    case OX_DT_UINT32: {
      uint32_t x = (uint32_t)v;
      if (dt == OX_DT_UINT8) {
        if (x > UINT8_MAX) return -1;
        out[k] = (char)(uint8_t)x;
      } else if (dt == OX_DT_UINT16) {
        if (x > UINT16_MAX) return -1;
        uint16_t y = (uint16_t)x;
        memcpy(out + 2 * k, &y, 2);
      } else {
        memcpy(out + 4 * k, &x, 4);
      }
      return 0;
    }
    default: /* INT64, UINT64: the 64 bits as they are */
      memcpy(out + 8 * k, &v, 8);
      return 0;
  }
}

/* Typed contents for one input, converted into the binary form. */
static int ox_typed_input(ox_dec_t *d, ox_infer_input_t *in, ox_slice_t msg) {
  char q[OX_PB_NAME_MAX + 4];
  const char *label = ox_quote(q, in->name);
  uint64_t cnt[C_COUNT_] = {0}, bytes_total = 0;
  int pieces[C_COUNT_] = {0};
  int rc = ox_count_contents(d, label, msg, cnt, &bytes_total, pieces);
  if (rc) return rc;
  int want = ox_contents_field(in->dtype);
  if (!want)
    return ox_fail(d, OX_EINVALID, "input '%s': datatype %s takes raw_input_contents only", label,
                   ox_dtype_name(in->dtype));
  for (int c = 1; c < C_COUNT_; c++)
    if (c != want && cnt[c])
      return ox_fail(d, OX_EINVALID, "input '%s': %s given for datatype %s", label,
                     ox_contents_name[c], ox_dtype_name(in->dtype));
  if (cnt[want] != in->count)
    return ox_fail(d, OX_EINVALID, "input '%s': %s has %" PRIu64 " elements, shape needs %" PRIu64,
                   label, ox_contents_name[want], cnt[want], in->count);
  size_t es = ox_dtype_size(in->dtype);
  /* cnt[want] elements were each at least one byte of msg, so these sizes cannot overflow. */
  size_t nbytes = want == C_BYTES ? (size_t)bytes_total : (size_t)in->count * es;
  /* One packed fp32/fp64 piece holding every element: its bytes are the tensor, in place. */
  if ((want == C_FP32 || want == C_FP64) && pieces[want] == 1) {
    ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
    ox_pb_field_t f;
    while (ox_pb_next(&r, &f) == 1) {
      if ((int)f.num != want || f.wire != OX_PB_LEN) continue;
      /* Unpacked values beside the piece: it is not the whole tensor. */
      if (f.s.len != nbytes || ((uintptr_t)f.s.ptr & (es - 1)) != 0) break;
      in->binary = f.s;
      in->has_binary = 1;
      in->binary_size = f.s.len;
      return 0;
    }
  }
  char *out = ox_arena_alloc_aligned(d->arena, nbytes ? nbytes : 1, es ? es : 1);
  if (!out) return OX_ENOMEM;
  uint64_t k = 0;
  size_t pos = 0;
  ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
  ox_pb_field_t f;
  while (ox_pb_next(&r, &f) == 1) { /* the counting pass validated the wire */
    if ((int)f.num != want) continue;
    if (want == C_BYTES) {
      uint32_t n = (uint32_t)f.s.len;
      if (f.s.len > UINT32_MAX)
        return ox_fail(d, OX_EINVALID, "input '%s': BYTES element %" PRIu64 " is over 4 GiB", label,
                       k);
      memcpy(out + pos, &n, 4);
      if (n) memcpy(out + pos + 4, f.s.ptr, n);
      pos += 4 + (size_t)n;
      k++;
    } else if (want == C_FP32 || want == C_FP64) {
      if (f.wire == OX_PB_LEN) {
        memcpy(out + k * es, f.s.ptr, f.s.len);
        k += f.s.len / es;
      } else {
        if (es == 4) {
          uint32_t x = (uint32_t)f.u64;
          memcpy(out + k * 4, &x, 4);
        } else {
          memcpy(out + k * 8, &f.u64, 8);
        }
        k++;
      }
    } else if (f.wire == OX_PB_VARINT) {
      if (ox_store_int(in->dtype, out, k, f.u64)) goto range;
      k++;
    } else {
      const char *p = f.s.ptr, *end = f.s.ptr + f.s.len;
      while (p < end) {
        uint64_t v;
        p += ox_pb_read_varint(p, end, &v);
        if (ox_store_int(in->dtype, out, k, v)) goto range;
        k++;
      }
    }
  }
  in->binary = ox_slice(out, nbytes);
  in->has_binary = 1;
  in->binary_size = nbytes;
  return 0;
range:
  return ox_fail(d, OX_EINVALID, "input '%s': element %" PRIu64 " is out of range for %s", label, k,
                 ox_dtype_name(in->dtype));
}

static int ox_output_tensor(ox_dec_t *d, ox_slice_t msg, size_t idx, ox_infer_output_t *out) {
  ox_pb_reader_t r = ox_pb_reader(msg.ptr, msg.len);
  ox_pb_field_t f;
  int rc;
  out->name = ox_slice(NULL, 0);
  out->binary_data = -1;
  out->classification = 0;
  int cls_seen = 0, cls_bad = 0;
  while ((rc = ox_pb_next(&r, &f)) == 1) {
    if (f.num == 1) {
      if (f.wire != OX_PB_LEN || !ox_utf8_valid(f.s.ptr, f.s.len))
        return ox_fail(d, OX_EINVALID, "outputs[%zu]: name is not a valid string", idx);
      out->name = f.s;
    } else if (f.num == 2) {
      if (f.wire != OX_PB_LEN)
        return ox_fail(d, OX_EINVALID, "outputs[%zu]: parameters: wrong wire type %d", idx, f.wire);
      /* Only "classification" means something here (Triton's extension: an int64_param). */
      ox_infer_param_t p;
      int is_int = 0, neg = 0;
      uint64_t u = 0;
      if ((rc = ox_param_entry(d, f.s, &p, &is_int, &u, &neg))) return rc;
      if (!ox_slice_eq(p.key, "classification")) continue;
      cls_seen = 1; /* a map entry given twice: the last one wins, as protobuf has it */
      cls_bad = !is_int || neg || u == 0;
      out->classification = cls_bad ? 0 : u;
    }
  }
  if (rc) return ox_fail(d, OX_EINVALID, "outputs[%zu]: malformed tensor", idx);
  if (out->name.len == 0) return ox_fail(d, OX_EINVALID, "outputs[%zu]: missing name", idx);
  if (cls_seen && cls_bad) {
    char q[OX_PB_NAME_MAX + 4];
    return ox_fail(d, OX_EINVALID, "output '%s': classification must be a positive integer",
                   ox_quote(q, out->name));
  }
  return 0;
}

/* Merge sort of names by (length, bytes), then neighbours compared: O(n log n) comparisons,
 * where all pairs would let 256 long equal-length names (or 65,536 keys) cost quadratically
 * many memcmps. tmp has room for n names. Returns a duplicated name's index in the sorted
 * names, or -1. */
static int ox_slice_cmp(ox_slice_t a, ox_slice_t b) {
  if (a.len != b.len) return a.len < b.len ? -1 : 1;
  return a.len ? memcmp(a.ptr, b.ptr, a.len) : 0;
}

static long ox_find_duplicate(ox_slice_t *names, ox_slice_t *tmp, size_t n) {
  for (size_t w = 1; w < n; w *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * w) {
      size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
      size_t i = lo, j = mid, o = lo;
      while (i < mid && j < hi)
        tmp[o++] = ox_slice_cmp(names[j], names[i]) < 0 ? names[j++] : names[i++];
      while (i < mid) tmp[o++] = names[i++];
      while (j < hi) tmp[o++] = names[j++];
    }
    memcpy(names, tmp, n * sizeof *names);
  }
  for (size_t i = 1; i < n; i++)
    if (ox_slice_cmp(names[i - 1], names[i]) == 0) return (long)i;
  return -1;
}

/* Refuses a name given twice among n (what: "input", "output", "parameter"). */
static int ox_unique(ox_dec_t *d, const char *what, const void *arr, size_t n, size_t stride) {
  if (n < 2) return 0;
  ox_slice_t *names = ox_arena_alloc(d->arena, 2 * n * sizeof *names);
  if (!names) return OX_ENOMEM;
  /* Every element type here starts with its name (ox_infer_input_t.name, ox_infer_output_t.name,
   * ox_infer_param_t.key). */
  for (size_t i = 0; i < n; i++) memcpy(&names[i], (const char *)arr + i * stride, sizeof *names);
  long dup = ox_find_duplicate(names, names + n, n);
  char q[OX_PB_NAME_MAX + 4];
  if (dup >= 0) return ox_fail(d, OX_EINVALID, "duplicate %s '%s'", what, ox_quote(q, names[dup]));
  return 0;
}

_Static_assert(offsetof(ox_infer_input_t, name) == 0, "ox_unique reads the name first");
_Static_assert(offsetof(ox_infer_output_t, name) == 0, "ox_unique reads the name first");
_Static_assert(offsetof(ox_infer_param_t, key) == 0, "ox_unique reads the key first");

int ox_pb_infer_request_decode(const char *msg, size_t len, ox_arena_t *arena,
                               ox_pb_infer_request_t *out, char *err, size_t errcap) {
  ox_dec_t d = {err, errcap, arena};
  if (err && errcap) err[0] = 0;
  memset(out, 0, sizeof *out);
  out->model_name = out->model_version = out->id = ox_slice("", 0);
  /* Pass 1: the top-level fields, counted; scalars taken. */
  size_t n_in = 0, n_out = 0, n_par = 0, n_raw = 0;
  ox_pb_reader_t r = ox_pb_reader(msg, len);
  ox_pb_field_t f;
  int rc;
  while ((rc = ox_pb_next(&r, &f)) == 1) {
    switch (f.num) {
      case F_MODEL:
        if ((rc = ox_str_field(&d, &f, "model_name", &out->model_name))) return rc;
        break;
      case F_VERSION:
        if ((rc = ox_str_field(&d, &f, "model_version", &out->model_version))) return rc;
        break;
      case F_ID:
        if ((rc = ox_str_field(&d, &f, "id", &out->id))) return rc;
        break;
      case F_PARAMS:
        if ((rc = ox_need_len(&d, &f, "parameters"))) return rc;
        n_par++;
        break;
      case F_INPUTS:
        if ((rc = ox_need_len(&d, &f, "inputs"))) return rc;
        n_in++;
        break;
      case F_OUTPUTS:
        if ((rc = ox_need_len(&d, &f, "outputs"))) return rc;
        n_out++;
        break;
      case F_RAW_IN:
        if ((rc = ox_need_len(&d, &f, "raw_input_contents"))) return rc;
        n_raw++;
        break;
      default:
        break;
    }
  }
  if (rc) return ox_fail(&d, OX_EINVALID, "malformed protobuf message");
  if (n_in > OX_MAX_IO) return ox_fail(&d, OX_EINVALID, "more than %d inputs", OX_MAX_IO);
  if (n_out > OX_MAX_IO) return ox_fail(&d, OX_EINVALID, "more than %d outputs", OX_MAX_IO);
  if (n_par > OX_MAX_PARAMS)
    return ox_fail(&d, OX_EINVALID, "more than %d parameters", OX_MAX_PARAMS);
  if (n_raw && n_raw != n_in)
    return ox_fail(&d, OX_EINVALID, "%zu raw_input_contents for %zu inputs", n_raw, n_in);
  ox_tensor_raw_t *traw = NULL;
  if (n_in) {
    out->inputs = ox_arena_alloc(arena, n_in * sizeof *out->inputs);
    traw = ox_arena_alloc(arena, n_in * sizeof *traw);
    if (!out->inputs || !traw) return OX_ENOMEM;
  }
  if (n_out && !(out->outputs = ox_arena_alloc(arena, n_out * sizeof *out->outputs)))
    return OX_ENOMEM;
  if (n_par && !(out->params = ox_arena_alloc(arena, n_par * sizeof *out->params)))
    return OX_ENOMEM;
  /* Pass 2: the messages, in wire order. */
  r = ox_pb_reader(msg, len);
  size_t k_raw = 0;
  char q[OX_PB_NAME_MAX + 4];
  while (ox_pb_next(&r, &f) == 1) {
    if (f.num == F_INPUTS) {
      size_t i = out->num_inputs;
      if ((rc = ox_input_tensor(&d, f.s, i, &out->inputs[i], &traw[i]))) return rc;
      out->num_inputs++;
    } else if (f.num == F_OUTPUTS) {
      size_t i = out->num_outputs;
      if ((rc = ox_output_tensor(&d, f.s, i, &out->outputs[i]))) return rc;
      out->num_outputs++;
    } else if (f.num == F_PARAMS) {
      size_t i = out->num_params;
      int is_int = 0, neg = 0;
      uint64_t u = 0;
      ox_infer_param_t *p = &out->params[i];
      if ((rc = ox_param_entry(&d, f.s, p, &is_int, &u, &neg))) return rc;
      if (ox_slice_eq(p->key, "timeout")) {
        if (!is_int || neg)
          return ox_fail(&d, OX_EINVALID, "parameter 'timeout' must be a non-negative integer");
        out->has_timeout = 1;
        out->timeout_us = u;
      }
      out->num_params++;
    }
  }
  if ((rc = ox_unique(&d, "input", out->inputs, out->num_inputs, sizeof *out->inputs)) ||
      (rc = ox_unique(&d, "output", out->outputs, out->num_outputs, sizeof *out->outputs)) ||
      (rc = ox_unique(&d, "parameter", out->params, out->num_params, sizeof *out->params)))
    return rc;
  /* Contents, once every input is known. */
  r = ox_pb_reader(msg, len);
  while (ox_pb_next(&r, &f) == 1) {
    if (f.num != F_RAW_IN) continue;
    ox_infer_input_t *in = &out->inputs[k_raw];
    if (traw[k_raw].has_contents)
      return ox_fail(&d, OX_EINVALID, "input '%s': both contents and raw_input_contents",
                     ox_quote(q, in->name));
    if ((rc = ox_raw_input(&d, in, f.s, &out->raw_copies))) return rc;
    k_raw++;
  }
  if (!n_raw) {
    for (size_t i = 0; i < n_in; i++) {
      ox_infer_input_t *in = &out->inputs[i];
      if (!traw[i].has_contents)
        return ox_fail(&d, OX_EINVALID, "input '%s': no contents and no raw_input_contents",
                       ox_quote(q, in->name));
      if ((rc = ox_typed_input(&d, in, traw[i].contents))) return rc;
    }
  }
  return 0;
}

size_t ox_pb_infer_request_raw_offset(const char *prefix, size_t n, size_t msg_len) {
  if (n > msg_len) n = msg_len;
  size_t pos = 0;
  while (pos < n) {
    uint64_t tag, v;
    size_t k = ox_pb_read_varint(prefix + pos, prefix + n, &tag);
    if (k == 0) return 0;
    pos += k;
    int wire = (int)(tag & 7);
    if ((tag >> 3) == 0) return 0;
    switch (wire) {
      case OX_PB_VARINT:
        if (!(k = ox_pb_read_varint(prefix + pos, prefix + n, &v))) return 0;
        pos += k;
        break;
      case OX_PB_I64:
        pos += 8;
        break;
      case OX_PB_I32:
        pos += 4;
        break;
      case OX_PB_LEN:
        if (!(k = ox_pb_read_varint(prefix + pos, prefix + n, &v))) return 0;
        pos += k;
        if (v > msg_len - pos) return 0; /* pos <= n <= msg_len */
        if ((tag >> 3) == F_RAW_IN) return pos;
        pos += (size_t)v;
        break;
      default:
        return 0;
    }
    if (pos > msg_len) return 0;
  }
  return 0;
}

/* ---- encoding ---- */

static int ox_put_param(ox_buf_t *m, const ox_pb_param_t *p) {
  ox_buf_t v, e;
  ox_buf_init(&v);
  ox_buf_init(&e);
  int rc;
  switch (p->kind) {
    case OX_PARAM_BOOL:
      rc = ox_pb_put_uint(&v, 1, p->b ? 1 : 0);
      break;
    case OX_PARAM_NUMBER:
      rc = ox_pb_put_uint(&v, 2, (uint64_t)p->i64);
      break;
    default:
      rc = ox_pb_put_bytes(&v, 3, p->s.ptr, p->s.len);
      break;
  }
  if (!rc) rc = ox_pb_put_str(&e, 1, p->key);
  if (!rc) rc = ox_pb_put_bytes(&e, 2, v.data, v.len);
  if (!rc) rc = ox_pb_put_bytes(m, F_PARAMS, e.data, e.len);
  ox_buf_free(&v);
  ox_buf_free(&e);
  return rc;
}

static int ox_put_output(ox_buf_t *m, const ox_pb_out_tensor_t *o) {
  ox_buf_t t, s;
  ox_buf_init(&t);
  ox_buf_init(&s);
  int rc = ox_pb_put_str(&t, 1, o->name);
  if (!rc) rc = ox_pb_put_str(&t, 2, ox_dtype_name(o->dtype));
  for (int i = 0; i < o->rank && !rc; i++) rc = ox_pb_put_varint(&s, (uint64_t)o->shape[i]);
  if (!rc && s.len) rc = ox_pb_put_bytes(&t, 3, s.data, s.len); /* packed, as proto3 writes */
  if (!rc) rc = ox_pb_put_bytes(m, R_OUTPUTS, t.data, t.len);
  ox_buf_free(&t);
  ox_buf_free(&s);
  return rc;
}

int ox_pb_infer_response_encode(const ox_pb_infer_response_t *r, int stream, ox_buf_t *head,
                                ox_buf_t *tail, struct iovec *iov, int *iovcnt) {
  ox_buf_t m;
  ox_buf_init(&m);
  int rc = 0;
  /* proto3 leaves empty strings out; protobuf's serializer does, and so do we. */
  if (r->model_name && r->model_name[0]) rc = ox_pb_put_str(&m, F_MODEL, r->model_name);
  if (!rc && r->model_version && r->model_version[0])
    rc = ox_pb_put_str(&m, F_VERSION, r->model_version);
  if (!rc && r->id.len) rc = ox_pb_put_bytes(&m, F_ID, r->id.ptr, r->id.len);
  for (size_t i = 0; i < r->num_params && !rc; i++) rc = ox_put_param(&m, &r->params[i]);
  for (size_t i = 0; i < r->num_outputs && !rc; i++) rc = ox_put_output(&m, &r->outputs[i]);
  /* raw_output_contents: tag and length in tail, the bytes where they are. */
  size_t tail0 = tail->len, total = m.len;
  for (size_t i = 0; i < r->num_outputs && !rc; i++) {
    size_t before = tail->len;
    rc = ox_pb_put_tag(tail, R_RAW_OUT, OX_PB_LEN);
    if (!rc) rc = ox_pb_put_varint(tail, r->outputs[i].nbytes);
    total += tail->len - before + r->outputs[i].nbytes;
  }
  if (!rc && stream) {
    rc = ox_pb_put_tag(head, S_RESPONSE, OX_PB_LEN);
    if (!rc) rc = ox_pb_put_varint(head, total);
  }
  if (!rc && m.len) rc = ox_buf_append(head, m.data, m.len);
  ox_buf_free(&m);
  if (rc) return rc;
  /* Only now that tail has stopped growing may iov point into it. */
  size_t off = tail0;
  int k = 0;
  for (size_t i = 0; i < r->num_outputs; i++) {
    size_t n = 1 + ox_pb_varint_size(r->outputs[i].nbytes);
    iov[k].iov_base = tail->data + off;
    iov[k++].iov_len = n;
    off += n;
    iov[k].iov_base = (void *)r->outputs[i].data;
    iov[k++].iov_len = r->outputs[i].nbytes;
  }
  *iovcnt = k;
  return 0;
}

int ox_pb_stream_error_encode(ox_buf_t *out, const char *msg) {
  return ox_pb_put_str(out, S_ERROR, msg);
}
