/* infer_req.c: the inference request parser of infer_req.h.
 *
 * One pass over the text with the json.h scanner: the request's known shape (top-level
 * object, "inputs" and "outputs" arrays of objects, their "parameters") is walked by the small
 * functions below, a fixed few levels deep; every other value, and each input's "data" array,
 * is skipped whole by ox_json_skip, which validates it without recursion.
 *
 * Which error is reported: malformed JSON anywhere in the text wins over any other problem,
 * as with a parser that builds a document first (Triton's). So when the walk finds a semantic
 * problem (a negative dimension, a missing name), it stops and, on that error path only,
 * validates the whole text once more; a syntax error found there replaces the semantic one.
 * Within an input or output object, a problem seen before the object's "name" is held until
 * the object ends, so the message can name the input.
 */
#include "proto/infer_req.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "proto/json.h"

/* The keys that mean something somewhere in a request. A key is matched after unescaping. */
#define OX_KEY_MAP(X)                         \
  X(ID, "id")                                 \
  X(PARAMETERS, "parameters")                 \
  X(INPUTS, "inputs")                         \
  X(OUTPUTS, "outputs")                       \
  X(NAME, "name")                             \
  X(SHAPE, "shape")                           \
  X(DATATYPE, "datatype")                     \
  X(DATA, "data")                             \
  X(BINARY_DATA_SIZE, "binary_data_size")     \
  X(BINARY_DATA, "binary_data")               \
  X(BINARY_DATA_OUTPUT, "binary_data_output") \
  X(TIMEOUT, "timeout")                       \
  X(CLASSIFICATION, "classification")

/* clang-format off */
typedef enum {
  OX_K_OTHER = 0,
#define OX_K_ENUM(e, s) OX_K_##e,
  OX_KEY_MAP(OX_K_ENUM)
#undef OX_K_ENUM
  OX_K_COUNT_
} ox_key_t;

static const char *const ox_key_names[OX_K_COUNT_] = {
  [OX_K_OTHER] = "",
#define OX_K_NAME(e, s) [OX_K_##e] = s,
  OX_KEY_MAP(OX_K_NAME)
#undef OX_K_NAME
};
/* clang-format on */

#define OX_BIT(k) (1u << (k))
/* Raw key text longer than this cannot unescape to a known key (at most 6 bytes per char). */
#define OX_KEY_RAW_MAX 128
/* Names quoted in error messages are cut to this many bytes. */
#define OX_ERR_NAME_MAX 64

/* Open containers around a value, for ox_json_skip: a member of the top-level object; an
 * element of "inputs"/"outputs" or a request parameter; a member of an input or output; an
 * element of "shape" or an input or output parameter. */
enum { OX_D_TOP = 1, OX_D_LIST = 2, OX_D_IO = 3, OX_D_FIELD = 4 };

typedef struct {
  ox_json_t js;
  ox_arena_t *arena;
  ox_infer_header_t *req;
  char *err;
  size_t errcap;
  size_t inputs_cap;
  size_t outputs_cap;
} ox_parser_t;

/* The first semantic problem inside an input or output object, reported when it ends. */
typedef struct {
  int rc;
  char msg[160];
} ox_pending_t;

static int ox_errf(char *err, size_t errcap, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int ox_errf(char *err, size_t errcap, int rc, const char *fmt, ...) {
  if (err && errcap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errcap, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* A semantic error: message into the caller's err, code returned. A macro only so that the
 * format is still checked (ox_errf's attribute) without a second variadic wrapper. */
#define ox_sem(ps, rc, ...) ox_errf((ps)->err, (ps)->errcap, (rc), __VA_ARGS__)

static void ox_pend(ox_pending_t *pe, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void ox_pend(ox_pending_t *pe, int rc, const char *fmt, ...) {
  if (pe->rc) return; /* the first problem is the one reported */
  va_list ap;
  va_start(ap, fmt);
  pe->rc = rc;
  vsnprintf(pe->msg, sizeof pe->msg, fmt, ap);
  va_end(ap);
}

/* Copies s into dst (room for OX_ERR_NAME_MAX + 4 bytes) for quoting in a message: cut at a
 * character boundary with "..." if long, control bytes shown as '?'. s is valid UTF-8. */
static const char *ox_quote(char *dst, ox_slice_t s) {
  size_t n = s.len;
  int cut = 0;
  if (n > OX_ERR_NAME_MAX) {
    n = OX_ERR_NAME_MAX;
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

static ox_key_t ox_key_lookup(ox_slice_t raw, int escaped) {
  char buf[OX_KEY_RAW_MAX];
  ox_slice_t k = raw;
  if (escaped) {
    if (raw.len > sizeof buf) return OX_K_OTHER;
    long n = ox_json_unescape(raw.ptr, raw.len, buf);
    if (n < 0) return OX_K_OTHER; /* cannot happen: the scanner validated it */
    k = ox_slice(buf, (size_t)n);
  }
  for (int i = 1; i < OX_K_COUNT_; i++)
    if (ox_slice_eq(k, ox_key_names[i])) return (ox_key_t)i;
  return OX_K_OTHER;
}

/* Object iteration. The cursor is just past '{' on the first call (*first set). Returns 1
 * with *key set and the cursor at the member's value, 0 after the closing '}', or a syntax
 * error. */
static int ox_obj_next(ox_json_t *js, int *first, ox_key_t *key) {
  ox_json_ws(js);
  if (js->p == js->end) return ox_json_fail(js, "unexpected end of text");
  if (*js->p == '}') {
    js->p++;
    return 0;
  }
  if (!*first) {
    if (*js->p != ',') return ox_json_fail(js, "expected ',' or '}'");
    js->p++;
    ox_json_ws(js);
  }
  *first = 0;
  ox_slice_t raw;
  int escaped;
  if (js->p == js->end || *js->p != '"') return ox_json_fail(js, "expected a string key");
  int rc = ox_json_string(js, &raw, &escaped);
  if (rc < 0) return rc;
  ox_json_ws(js);
  if (js->p == js->end || *js->p != ':') return ox_json_fail(js, "expected ':'");
  js->p++;
  ox_json_ws(js);
  if (js->p == js->end) return ox_json_fail(js, "unexpected end of text");
  *key = ox_key_lookup(raw, escaped);
  return 1;
}

/* Array iteration, as ox_obj_next: returns 1 with the cursor at an element, 0 after ']'. */
static int ox_arr_next(ox_json_t *js, int *first) {
  ox_json_ws(js);
  if (js->p == js->end) return ox_json_fail(js, "unexpected end of text");
  if (*js->p == ']') {
    js->p++;
    return 0;
  }
  if (!*first) {
    if (*js->p != ',') return ox_json_fail(js, "expected ',' or ']'");
    js->p++;
    ox_json_ws(js);
    if (js->p == js->end) return ox_json_fail(js, "unexpected end of text");
    if (*js->p == ']') return ox_json_fail(js, "unexpected character");
  }
  *first = 0;
  return 1;
}

static inline char ox_peek(const ox_json_t *js) {
  return *js->p; /* callers checked p < end */
}

/* Reads a boolean value at the cursor: 0/1 into *out, or sets *out = -1 and skips a value of
 * another kind (the caller reports that). */
static int ox_bool_value(ox_json_t *js, int depth, int *out) {
  size_t left = (size_t)(js->end - js->p);
  if (left >= 4 && memcmp(js->p, "true", 4) == 0) {
    js->p += 4;
    *out = 1;
    return 0;
  }
  if (left >= 5 && memcmp(js->p, "false", 5) == 0) {
    js->p += 5;
    *out = 0;
    return 0;
  }
  *out = -1;
  return ox_json_skip(js, depth);
}

typedef enum { OX_U_OK, OX_U_NOT_UINT, OX_U_TOO_BIG } ox_uint_kind_t;

/* Reads a non-negative JSON integer at the cursor ("-0" counts as 0). Any other value is
 * skipped and classified OX_U_NOT_UINT. */
static int ox_uint_value(ox_json_t *js, int depth, uint64_t *out, ox_uint_kind_t *kind) {
  char c = ox_peek(js);
  *out = 0;
  if (c != '-' && !(c >= '0' && c <= '9')) {
    *kind = OX_U_NOT_UINT;
    return ox_json_skip(js, depth);
  }
  ox_json_number_t num;
  int rc = ox_json_number(js, &num);
  if (rc < 0) return rc;
  if (!num.integral || (num.neg && (num.overflow || num.mag != 0)))
    *kind = OX_U_NOT_UINT;
  else if (num.overflow)
    *kind = OX_U_TOO_BIG;
  else
    *kind = OX_U_OK;
  if (*kind == OX_U_OK) *out = num.mag;
  return 0;
}

/* Sets *name from a string token's contents: borrowed, or unescaped into the arena. */
static int ox_take_name(ox_parser_t *ps, ox_slice_t raw, int escaped, ox_slice_t *name) {
  if (!escaped) {
    *name = raw;
    return 0;
  }
  char *d = ox_arena_alloc_aligned(ps->arena, raw.len + 1, 1);
  if (!d) return ox_sem(ps, OX_ENOMEM, "out of memory");
  long n = ox_json_unescape(raw.ptr, raw.len, d);
  if (n < 0) return ox_json_fail(&ps->js, "invalid string"); /* the scanner validated it */
  d[n] = 0;
  *name = ox_slice(d, (size_t)n);
  return 0;
}

/* The start of a member of an input or output object, the cursor at the value of key k: a key
 * not in known (a set of OX_BIT) is skipped; a repeated one is held in *pe and skipped (the
 * first value stays, for the message). Returns 1 when the value is the caller's to read, 0 when
 * it was skipped, or a syntax error. */
static int ox_io_member(ox_json_t *js, ox_pending_t *pe, unsigned known, unsigned *seen,
                        ox_key_t k) {
  if (!(known & OX_BIT(k))) return ox_json_skip(js, OX_D_IO);
  if (*seen & OX_BIT(k)) {
    ox_pend(pe, OX_EINVALID, "duplicate key '%s'", ox_key_names[k]);
    return ox_json_skip(js, OX_D_IO);
  }
  *seen |= OX_BIT(k);
  return 1;
}

/* "name": a string, else pending error. */
static int ox_name_field(ox_parser_t *ps, ox_pending_t *pe, ox_slice_t *name, int *has_name) {
  ox_json_t *js = &ps->js;
  if (ox_peek(js) != '"') {
    ox_pend(pe, OX_EINVALID, "'name' must be a string");
    return ox_json_skip(js, OX_D_IO);
  }
  ox_slice_t raw;
  int escaped, rc = ox_json_string(js, &raw, &escaped);
  if (rc < 0) return rc;
  rc = ox_take_name(ps, raw, escaped, name);
  if (rc < 0) return rc;
  *has_name = 1;
  return 0;
}

/* "shape": an array of at most OX_MAX_RANK non-negative integers, each <= INT64_MAX. */
static int ox_shape_field(ox_parser_t *ps, ox_pending_t *pe, ox_infer_input_t *in) {
  ox_json_t *js = &ps->js;
  if (ox_peek(js) != '[') {
    ox_pend(pe, OX_EINVALID, "shape must be an array of integers");
    return ox_json_skip(js, OX_D_IO);
  }
  js->p++;
  int first = 1, rc;
  in->rank = 0;
  while ((rc = ox_arr_next(js, &first)) > 0) {
    char c = ox_peek(js);
    if (c != '-' && !(c >= '0' && c <= '9')) {
      ox_pend(pe, OX_EINVALID, "shape must be an array of integers");
      rc = ox_json_skip(js, OX_D_FIELD);
      if (rc < 0) return rc;
      continue;
    }
    ox_json_number_t num;
    rc = ox_json_number(js, &num);
    if (rc < 0) return rc;
    if (!num.integral)
      ox_pend(pe, OX_EINVALID, "shape must be an array of integers");
    else if (num.neg && (num.overflow || num.mag != 0))
      ox_pend(pe, OX_EINVALID, "shape has a negative dimension");
    else if (num.overflow || num.mag > (uint64_t)INT64_MAX)
      ox_pend(pe, OX_EOVERFLOW, "shape has a dimension too large");
    else if (in->rank == OX_MAX_RANK)
      ox_pend(pe, OX_EINVALID, "shape has more than %d dimensions", OX_MAX_RANK);
    else
      in->shape[in->rank++] = (int64_t)num.mag;
  }
  return rc;
}

/* An input's "parameters": binary_data_size (a non-negative integer); the rest skipped. */
static int ox_input_params(ox_parser_t *ps, ox_pending_t *pe, ox_infer_input_t *in) {
  ox_json_t *js = &ps->js;
  js->p++;
  int first = 1, rc;
  ox_key_t k;
  while ((rc = ox_obj_next(js, &first, &k)) > 0) {
    if (k != OX_K_BINARY_DATA_SIZE) {
      rc = ox_json_skip(js, OX_D_FIELD);
      if (rc < 0) return rc;
      continue;
    }
    if (in->has_binary) {
      ox_pend(pe, OX_EINVALID, "duplicate parameter 'binary_data_size'");
      rc = ox_json_skip(js, OX_D_FIELD);
      if (rc < 0) return rc;
      continue;
    }
    ox_uint_kind_t kind;
    rc = ox_uint_value(js, OX_D_FIELD, &in->binary_size, &kind);
    if (rc < 0) return rc;
    if (kind == OX_U_NOT_UINT)
      ox_pend(pe, OX_EINVALID, "binary_data_size must be a non-negative integer");
    else if (kind == OX_U_TOO_BIG)
      ox_pend(pe, OX_EOVERFLOW, "binary_data_size is too large");
    in->has_binary = 1;
  }
  return rc;
}

/* Element count of a valid shape. Every partial product must fit in uint64, zeros aside, so
 * that later stride and size arithmetic over any subset of the dimensions cannot overflow
 * either: [2^40, 2^40, 0] is refused although its count is 0. */
static int ox_shape_count(const ox_infer_input_t *in, uint64_t *count) {
  uint64_t nonzero = 1;
  int zero = 0;
  for (int i = 0; i < in->rank; i++) {
    if (in->shape[i] == 0) {
      zero = 1;
      continue;
    }
    if (__builtin_mul_overflow(nonzero, (uint64_t)in->shape[i], &nonzero)) return OX_EOVERFLOW;
  }
  *count = zero ? 0 : nonzero;
  return 0;
}

/* One element of "inputs"; the cursor is at its '{'. */
static int ox_input(ox_parser_t *ps, size_t idx, ox_infer_input_t *in) {
  ox_json_t *js = &ps->js;
  ox_pending_t pe = {0, {0}};
  ox_slice_t dt_raw = {NULL, 0};
  int dt_escaped = 0, has_name = 0, first = 1, rc;
  unsigned seen = 0;
  ox_key_t k;
  js->p++;
  const unsigned known = OX_BIT(OX_K_NAME) | OX_BIT(OX_K_SHAPE) | OX_BIT(OX_K_DATATYPE) |
                         OX_BIT(OX_K_DATA) | OX_BIT(OX_K_PARAMETERS);
  while ((rc = ox_obj_next(js, &first, &k)) > 0) {
    rc = ox_io_member(js, &pe, known, &seen, k);
    if (rc < 0) return rc;
    if (rc == 0) continue;
    char c = ox_peek(js);
    switch (k) {
      case OX_K_NAME:
        rc = ox_name_field(ps, &pe, &in->name, &has_name);
        break;
      case OX_K_SHAPE:
        rc = ox_shape_field(ps, &pe, in);
        break;
      case OX_K_DATATYPE:
        if (c == '"') {
          rc = ox_json_string(js, &dt_raw, &dt_escaped);
        } else {
          ox_pend(&pe, OX_EINVALID, "datatype must be a string");
          rc = ox_json_skip(js, OX_D_IO);
        }
        break;
      case OX_K_DATA: {
        const char *start = js->p;
        if (c != '[') {
          ox_pend(&pe, OX_EINVALID, "data must be an array");
          rc = ox_json_skip(js, OX_D_IO);
        } else {
          /* Structure only: the tensor decoder parses every element strictly. */
          rc = ox_json_skip_array_fast(js, OX_D_IO);
        }
        if (rc == 0 && c == '[') in->data_json = ox_slice(start, (size_t)(js->p - start));
        break;
      }
      default: /* OX_K_PARAMETERS */
        if (c == '{') {
          rc = ox_input_params(ps, &pe, in);
        } else {
          ox_pend(&pe, OX_EINVALID, "parameters must be an object");
          rc = ox_json_skip(js, OX_D_IO);
        }
        break;
    }
    if (rc < 0) return rc;
  }
  if (rc < 0) return rc;

  char q[OX_ERR_NAME_MAX + 4], label[OX_ERR_NAME_MAX + 32];
  if (has_name)
    snprintf(label, sizeof label, "input '%s'", ox_quote(q, in->name));
  else
    snprintf(label, sizeof label, "inputs[%zu]", idx);
  if (pe.rc) return ox_sem(ps, pe.rc, "%s: %s", label, pe.msg);
  if (!has_name) return ox_sem(ps, OX_EINVALID, "%s: missing 'name'", label);
  if (!(seen & OX_BIT(OX_K_SHAPE))) return ox_sem(ps, OX_EINVALID, "%s: missing 'shape'", label);
  if (!(seen & OX_BIT(OX_K_DATATYPE)))
    return ox_sem(ps, OX_EINVALID, "%s: missing 'datatype'", label);

  char buf[32];
  ox_slice_t dt = dt_raw;
  long n = 0;
  if (dt_escaped) {
    n = dt_raw.len <= sizeof buf ? ox_json_unescape(dt_raw.ptr, dt_raw.len, buf) : -1;
    dt = n >= 0 ? ox_slice(buf, (size_t)n) : ox_slice("", 0);
  }
  in->dtype = ox_dtype_from_name(dt.ptr, dt.len);
  if (in->dtype == OX_DT_INVALID) {
    char qd[OX_ERR_NAME_MAX + 4];
    return ox_sem(ps, OX_EINVALID, "%s: unknown datatype '%s'", label, ox_quote(qd, dt_raw));
  }
  if (ox_shape_count(in, &in->count) < 0)
    return ox_sem(ps, OX_EOVERFLOW, "%s: the shape's element count overflows", label);
  return 0;
}

/* Opens element n of "inputs" or "outputs" (what), the cursor at it: there are at most
 * OX_MAX_IO, each an object. Makes room in the arena array arr holding *cap elements of elem
 * bytes (doubling; moved if it grows) and zeroes element n. Returns 0 with the array in *grown,
 * or an error. */
static int ox_list_slot(ox_parser_t *ps, const char *what, void *arr, size_t n, size_t *cap,
                        size_t elem, void **grown) {
  if (n == OX_MAX_IO) return ox_sem(ps, OX_EINVALID, "too many %s (at most %d)", what, OX_MAX_IO);
  if (ox_peek(&ps->js) != '{') return ox_sem(ps, OX_EINVALID, "%s[%zu] must be an object", what, n);
  if (n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 4;
    if (ncap > OX_MAX_IO) ncap = OX_MAX_IO;
    void *na = ox_arena_alloc(ps->arena, ncap * elem);
    if (!na) return ox_sem(ps, OX_ENOMEM, "out of memory");
    if (n) memcpy(na, arr, n * elem);
    *cap = ncap;
    arr = na;
  }
  memset((char *)arr + n * elem, 0, elem);
  *grown = arr;
  return 0;
}

/* Merge sort of names by (length, bytes), then neighbours compared: O(n log n) comparisons
 * whatever the names, where comparing all pairs would let 256 long equal-length names cost
 * 32,640 long memcmps. tmp has room for n names. Returns the index in names (sorted on
 * return) of a duplicate, or -1. */
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

static int ox_inputs(ox_parser_t *ps) {
  ox_json_t *js = &ps->js;
  ox_infer_header_t *req = ps->req;
  int first = 1, rc;
  js->p++;
  while ((rc = ox_arr_next(js, &first)) > 0) {
    void *grown;
    rc = ox_list_slot(ps, "inputs", req->inputs, req->num_inputs, &ps->inputs_cap,
                      sizeof *req->inputs, &grown);
    if (rc < 0) return rc;
    req->inputs = grown;
    rc = ox_input(ps, req->num_inputs, &req->inputs[req->num_inputs]);
    if (rc < 0) return rc;
    req->num_inputs++;
  }
  return rc;
}

/* An output's "parameters": binary_data (a boolean), classification (a positive integer). */
static int ox_output_params(ox_parser_t *ps, ox_pending_t *pe, ox_infer_output_t *out) {
  ox_json_t *js = &ps->js;
  int first = 1, rc;
  unsigned seen = 0;
  ox_key_t k;
  js->p++;
  while ((rc = ox_obj_next(js, &first, &k)) > 0) {
    if (k == OX_K_BINARY_DATA || k == OX_K_CLASSIFICATION) {
      if (seen & OX_BIT(k)) ox_pend(pe, OX_EINVALID, "duplicate parameter '%s'", ox_key_names[k]);
      seen |= OX_BIT(k);
    }
    if (k == OX_K_BINARY_DATA) {
      int b;
      rc = ox_bool_value(js, OX_D_FIELD, &b);
      if (b < 0)
        ox_pend(pe, OX_EINVALID, "binary_data must be a boolean");
      else
        out->binary_data = b;
    } else if (k == OX_K_CLASSIFICATION) {
      uint64_t v = 0;
      ox_uint_kind_t kind = OX_U_NOT_UINT;
      rc = ox_uint_value(js, OX_D_FIELD, &v, &kind);
      if (rc < 0) return rc;
      if (kind != OX_U_OK || v == 0)
        ox_pend(pe, OX_EINVALID, "classification must be a positive integer");
      else
        out->classification = v;
    } else {
      rc = ox_json_skip(js, OX_D_FIELD);
    }
    if (rc < 0) return rc;
  }
  return rc;
}

static int ox_output(ox_parser_t *ps, size_t idx, ox_infer_output_t *out) {
  ox_json_t *js = &ps->js;
  ox_pending_t pe = {0, {0}};
  int has_name = 0, first = 1, rc;
  unsigned seen = 0;
  ox_key_t k;
  js->p++;
  while ((rc = ox_obj_next(js, &first, &k)) > 0) {
    rc = ox_io_member(js, &pe, OX_BIT(OX_K_NAME) | OX_BIT(OX_K_PARAMETERS), &seen, k);
    if (rc < 0) return rc;
    if (rc == 0) continue;
    if (k == OX_K_NAME) {
      rc = ox_name_field(ps, &pe, &out->name, &has_name);
    } else if (ox_peek(js) == '{') {
      rc = ox_output_params(ps, &pe, out);
    } else {
      ox_pend(&pe, OX_EINVALID, "parameters must be an object");
      rc = ox_json_skip(js, OX_D_IO);
    }
    if (rc < 0) return rc;
  }
  if (rc < 0) return rc;
  char q[OX_ERR_NAME_MAX + 4];
  if (pe.rc && has_name)
    return ox_sem(ps, pe.rc, "output '%s': %s", ox_quote(q, out->name), pe.msg);
  if (pe.rc) return ox_sem(ps, pe.rc, "outputs[%zu]: %s", idx, pe.msg);
  if (!has_name) return ox_sem(ps, OX_EINVALID, "outputs[%zu]: missing 'name'", idx);
  return 0;
}

static int ox_outputs(ox_parser_t *ps) {
  ox_json_t *js = &ps->js;
  ox_infer_header_t *req = ps->req;
  int first = 1, rc;
  js->p++;
  while ((rc = ox_arr_next(js, &first)) > 0) {
    void *grown;
    rc = ox_list_slot(ps, "outputs", req->outputs, req->num_outputs, &ps->outputs_cap,
                      sizeof *req->outputs, &grown);
    if (rc < 0) return rc;
    req->outputs = grown;
    ox_infer_output_t *out = &req->outputs[req->num_outputs];
    out->binary_data = -1;
    rc = ox_output(ps, req->num_outputs, out);
    if (rc < 0) return rc;
    req->num_outputs++;
  }
  return rc;
}

/* A parameter named twice (after unescaping) in the request's "parameters": sorts copies of
 * the keys (arena scratch), so any number of parameters costs O(n log n). */
static int ox_params_unique(ox_parser_t *ps) {
  ox_infer_header_t *req = ps->req;
  if (req->num_params < 2) return 0;
  ox_slice_t *keys = ox_arena_alloc(ps->arena, 2 * req->num_params * sizeof *keys);
  if (!keys) return ox_sem(ps, OX_ENOMEM, "out of memory");
  for (size_t i = 0; i < req->num_params; i++) keys[i] = req->params[i].key;
  long dup = ox_find_duplicate(keys, keys + req->num_params, req->num_params);
  char q[OX_ERR_NAME_MAX + 4];
  if (dup >= 0) return ox_sem(ps, OX_EINVALID, "duplicate parameter '%s'", ox_quote(q, keys[dup]));
  return 0;
}

/* The value of a request parameter other than the two read here, the cursor at it: a string's
 * contents (unescaped into the arena if needed), else the raw text of the value. */
static int ox_param_value(ox_parser_t *ps, ox_infer_param_t *pm) {
  ox_json_t *js = &ps->js;
  const char *start = js->p;
  char c = ox_peek(js);
  if (c == '"') {
    ox_slice_t raw;
    int escaped, rc = ox_json_string(js, &raw, &escaped);
    if (rc < 0) return rc;
    pm->kind = OX_PARAM_STRING;
    return ox_take_name(ps, raw, escaped, &pm->value);
  }
  pm->kind = c == '-' || (c >= '0' && c <= '9') ? OX_PARAM_NUMBER
             : c == 't' || c == 'f'             ? OX_PARAM_BOOL
             : c == 'n'                         ? OX_PARAM_NULL
                                                : OX_PARAM_OTHER;
  int rc = ox_json_skip(js, OX_D_LIST);
  if (rc < 0) return rc;
  pm->value = ox_slice(start, (size_t)(js->p - start));
  return 0;
}

/* The request's "parameters": every member kept in req->params; binary_data_output (boolean)
 * and timeout (non-negative integer) also read into their fields. */
static int ox_request_params(ox_parser_t *ps) {
  ox_json_t *js = &ps->js;
  ox_infer_header_t *req = ps->req;
  int first = 1, rc;
  size_t cap = 0;
  js->p++;
  for (;;) {
    /* The key is needed unescaped (it is kept), so the member is opened here rather than
     * by ox_obj_next, which only classifies it. */
    ox_json_ws(js);
    if (js->p == js->end) return ox_json_fail(js, "unexpected end of text");
    if (*js->p == '}') {
      js->p++;
      break;
    }
    if (!first) {
      if (*js->p != ',') return ox_json_fail(js, "expected ',' or '}'");
      js->p++;
      ox_json_ws(js);
    }
    first = 0;
    if (js->p == js->end || *js->p != '"') return ox_json_fail(js, "expected a string key");
    ox_slice_t raw;
    int escaped;
    rc = ox_json_string(js, &raw, &escaped);
    if (rc < 0) return rc;
    ox_json_ws(js);
    if (js->p == js->end || *js->p != ':') return ox_json_fail(js, "expected ':'");
    js->p++;
    ox_json_ws(js);
    if (js->p == js->end) return ox_json_fail(js, "unexpected end of text");

    if (req->num_params == OX_MAX_PARAMS)
      return ox_sem(ps, OX_EINVALID, "too many request parameters (at most %d)", OX_MAX_PARAMS);
    if (req->num_params == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      ox_infer_param_t *np = ox_arena_alloc(ps->arena, ncap * sizeof *np);
      if (!np) return ox_sem(ps, OX_ENOMEM, "out of memory");
      if (cap) memcpy(np, req->params, cap * sizeof *np);
      req->params = np;
      cap = ncap;
    }
    ox_infer_param_t *pm = &req->params[req->num_params];
    rc = ox_take_name(ps, raw, escaped, &pm->key);
    if (rc < 0) return rc;
    ox_key_t k = ox_key_lookup(pm->key, 0);
    const char *start = js->p;
    if (k == OX_K_BINARY_DATA_OUTPUT) {
      rc = ox_bool_value(js, OX_D_LIST, &req->binary_data_output);
      if (rc < 0) return rc;
      if (req->binary_data_output < 0)
        return ox_sem(ps, OX_EINVALID, "parameter 'binary_data_output' must be a boolean");
      pm->kind = OX_PARAM_BOOL;
      pm->value = ox_slice(start, (size_t)(js->p - start));
    } else if (k == OX_K_TIMEOUT) {
      ox_uint_kind_t kind;
      rc = ox_uint_value(js, OX_D_LIST, &req->timeout_us, &kind);
      if (rc < 0) return rc;
      if (kind == OX_U_NOT_UINT)
        return ox_sem(ps, OX_EINVALID, "parameter 'timeout' must be a non-negative integer");
      if (kind == OX_U_TOO_BIG) return ox_sem(ps, OX_EOVERFLOW, "parameter 'timeout' is too large");
      req->has_timeout = 1;
      pm->kind = OX_PARAM_NUMBER;
      pm->value = ox_slice(start, (size_t)(js->p - start));
    } else {
      rc = ox_param_value(ps, pm);
      if (rc < 0) return rc;
    }
    req->num_params++;
  }
  if (!req->num_params) req->params = NULL;
  return ox_params_unique(ps);
}

static int ox_request(ox_parser_t *ps) {
  ox_json_t *js = &ps->js;
  ox_infer_header_t *req = ps->req;
  ox_json_ws(js);
  if (js->p == js->end) return ox_json_fail(js, "the body is empty");
  if (ox_peek(js) != '{') return ox_sem(ps, OX_EINVALID, "the request must be a JSON object");
  js->p++;
  int first = 1, rc;
  unsigned seen = 0;
  ox_key_t k;
  while ((rc = ox_obj_next(js, &first, &k)) > 0) {
    if (k != OX_K_ID && k != OX_K_PARAMETERS && k != OX_K_INPUTS && k != OX_K_OUTPUTS) {
      rc = ox_json_skip(js, OX_D_TOP);
      if (rc < 0) return rc;
      continue;
    }
    if (seen & OX_BIT(k)) return ox_sem(ps, OX_EINVALID, "duplicate key '%s'", ox_key_names[k]);
    seen |= OX_BIT(k);
    char c = ox_peek(js);
    switch (k) {
      case OX_K_ID: {
        if (c != '"') return ox_sem(ps, OX_EINVALID, "'id' must be a string");
        const char *start = js->p;
        ox_slice_t contents;
        int escaped;
        rc = ox_json_string(js, &contents, &escaped);
        req->id_json = ox_slice(start, (size_t)(js->p - start));
        break;
      }
      case OX_K_PARAMETERS:
        if (c != '{') return ox_sem(ps, OX_EINVALID, "'parameters' must be an object");
        rc = ox_request_params(ps);
        break;
      case OX_K_INPUTS:
        if (c != '[') return ox_sem(ps, OX_EINVALID, "'inputs' must be an array");
        rc = ox_inputs(ps);
        break;
      default: /* OX_K_OUTPUTS */
        if (c != '[') return ox_sem(ps, OX_EINVALID, "'outputs' must be an array");
        rc = ox_outputs(ps);
        break;
    }
    if (rc < 0) return rc;
  }
  if (rc < 0) return rc;
  ox_json_ws(js);
  if (js->p != js->end) return ox_json_fail(js, "unexpected characters after the JSON value");

  if (!(seen & OX_BIT(OX_K_INPUTS))) return ox_sem(ps, OX_EINVALID, "missing 'inputs'");
  /* An empty "inputs" is valid here: a model may take no inputs (ONNX's test_constant). The
   * caller checks the inputs against the model. */

  ox_slice_t names[OX_MAX_IO], tmp[OX_MAX_IO];
  char q[OX_ERR_NAME_MAX + 4];
  for (size_t i = 0; i < req->num_inputs; i++) names[i] = req->inputs[i].name;
  long dup = ox_find_duplicate(names, tmp, req->num_inputs);
  if (dup >= 0) return ox_sem(ps, OX_EINVALID, "duplicate input '%s'", ox_quote(q, names[dup]));
  for (size_t i = 0; i < req->num_outputs; i++) names[i] = req->outputs[i].name;
  dup = ox_find_duplicate(names, tmp, req->num_outputs);
  if (dup >= 0) return ox_sem(ps, OX_EINVALID, "duplicate output '%s'", ox_quote(q, names[dup]));
  return 0;
}

/* See infer_req.h. Also: *req is reset first and is unspecified on error (arena memory it
 * points to stays allocated until the arena is freed); names are NUL-terminated when copied
 * into the arena, not when borrowed; "-0" reads as 0 wherever an integer is expected. */
int ox_infer_request_parse(const char *json, size_t len, ox_arena_t *arena, ox_infer_header_t *req,
                           char *err, size_t errcap) {
  ox_parser_t ps;
  memset(&ps, 0, sizeof ps);
  ox_json_init(&ps.js, json, len);
  ps.arena = arena;
  ps.req = req;
  ps.err = err;
  ps.errcap = errcap;
  memset(req, 0, sizeof *req);
  req->binary_data_output = -1;
  if (err && errcap) err[0] = 0;

  int rc = ox_request(&ps);
  if (rc >= 0 || rc == OX_ENOMEM) return rc;
  ox_json_t *js = &ps.js;
  if (!js->err) {
    /* A semantic error: a syntax error anywhere takes precedence (see the top of the file). */
    ox_json_init(js, json, len);
    int vrc = ox_json_validate(js);
    if (vrc == 0) return rc;
    rc = vrc;
  }
  size_t off = (size_t)(js->p - js->begin);
  if (rc == OX_EDEPTH)
    return ox_errf(err, errcap, rc, "JSON nesting deeper than %d levels at byte %zu",
                   OX_JSON_MAX_DEPTH, off);
  return ox_errf(err, errcap, OX_EINVALID, "malformed JSON at byte %zu: %s", off, js->err);
}

/* See infer_req.h. Also: call it for every request, binary or not (bin may be NULL when
 * bin_len is 0): it is what rejects an input with neither "data" nor binary_data_size. Every
 * input's binary slice is reset first; a binary input of size 0 gets a non-NULL empty slice.
 * Sizes are compared against what remains, so no sum can wrap. */
int ox_infer_request_split_binary(ox_infer_header_t *req, const char *bin, size_t bin_len,
                                  char *err, size_t errcap) {
  uint64_t off = 0;
  char q[OX_ERR_NAME_MAX + 4];
  if (err && errcap) err[0] = 0;
  for (size_t i = 0; i < req->num_inputs; i++) {
    ox_infer_input_t *in = &req->inputs[i];
    in->binary = ox_slice(NULL, 0);
    if (in->has_binary && in->data_json.ptr)
      return ox_errf(err, errcap, OX_EINVALID, "input '%s': has both data and binary_data_size",
                     ox_quote(q, in->name));
    if (!in->has_binary && !in->data_json.ptr)
      return ox_errf(err, errcap, OX_EINVALID, "input '%s': has neither data nor binary_data_size",
                     ox_quote(q, in->name));
    if (!in->has_binary) continue;
    if (in->binary_size > bin_len - off)
      return ox_errf(err, errcap, OX_EINVALID,
                     "input '%s': binary_data_size runs past the end of the body",
                     ox_quote(q, in->name));
    /* bin may be NULL when bin_len is 0; a zero-size input still gets a non-NULL pointer. */
    in->binary = ox_slice(bin ? bin + off : "", (size_t)in->binary_size);
    off += in->binary_size;
  }
  if (off != bin_len)
    return ox_errf(err, errcap, OX_EINVALID,
                   "%zu bytes left over after the binary inputs (their binary_data_size "
                   "sum to %zu)",
                   (size_t)(bin_len - off), (size_t)off);
  return 0;
}

/* See infer_req.h. */
const ox_infer_param_t *ox_infer_request_param(const ox_infer_header_t *req, const char *name) {
  for (size_t i = 0; i < req->num_params; i++)
    if (ox_slice_eq(req->params[i].key, name)) return &req->params[i];
  return NULL;
}
