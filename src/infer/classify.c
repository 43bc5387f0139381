/* classify.c: the classification extension of classify.h.
 *
 * Selection: each element becomes a 64-bit key that orders as its value does (integers offset
 * to unsigned, floats by the usual sign-flip of their IEEE bits, NaN mapped to 0, below -inf),
 * and (key, index) pairs are compared with the lower index winning a tie: a total order, so the
 * result does not depend on the algorithm. A heap of the k best seen so far (the worst on top)
 * takes each element in O(log k); at the end it is emptied worst first into the output from
 * the back.
 */
#include "infer/classify.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/utf8.h"

int ox_labels_parse(const char *text, size_t len, ox_labels_t *out, char *err, size_t errcap) {
  memset(out, 0, sizeof *out);
  if (len > OX_LABELS_MAX_BYTES) {
    snprintf(err, errcap, "larger than %u MiB", OX_LABELS_MAX_BYTES >> 20);
    return OX_EINVALID;
  }
  size_t n = 0;
  for (size_t i = 0; i < len; i++) n += text[i] == '\n';
  if (len && text[len - 1] != '\n') n++; /* a last line without its newline */
  if (n == 0) return 0;
  char *copy = malloc(len);
  ox_slice_t *lines = malloc(n * sizeof *lines);
  if (!copy || !lines) {
    free(copy);
    free(lines);
    return OX_ENOMEM;
  }
  memcpy(copy, text, len);
  size_t start = 0, k = 0;
  while (start < len) {
    const char *nl = memchr(copy + start, '\n', len - start);
    size_t end = nl ? (size_t)(nl - copy) : len, l = end - start;
    if (l && copy[start + l - 1] == '\r') l--;
    if (!ox_utf8_valid(copy + start, l)) {
      snprintf(err, errcap, "line %zu is not valid UTF-8", k + 1);
      free(copy);
      free(lines);
      return OX_EINVALID;
    }
    lines[k++] = ox_slice(copy + start, l);
    start = end + 1;
  }
  out->text = copy;
  out->lines = lines;
  out->count = k;
  return 0;
}

void ox_labels_free(ox_labels_t *l) {
  free(l->text);
  free(l->lines);
  memset(l, 0, sizeof *l);
}

const ox_slice_t *ox_labels_get(const ox_labels_t *l, uint64_t idx) {
  if (!l || idx >= l->count || l->lines[idx].len == 0) return NULL;
  return &l->lines[idx];
}

int ox_classify_supported(ox_dtype_t dt) {
  switch (dt) {
    case OX_DT_UINT8:
    case OX_DT_UINT16:
    case OX_DT_UINT32:
    case OX_DT_UINT64:
    case OX_DT_INT8:
    case OX_DT_INT16:
    case OX_DT_INT32:
    case OX_DT_INT64:
    case OX_DT_FP32:
    case OX_DT_FP64:
      return 1;
    default:
      return 0;
  }
}

/* Element i of data as the widest type of its kind (memcpy: no alignment assumed). */
#define LOAD(T, data, i)                                                    \
  __extension__({                                                           \
    T v_;                                                                   \
    memcpy(&v_, (const char *)(data) + (size_t)(i) * sizeof(T), sizeof(T)); \
    v_;                                                                     \
  })

static int64_t load_int(ox_dtype_t dt, const void *data, uint64_t i) {
  switch (dt) {
    case OX_DT_INT8:
      return LOAD(int8_t, data, i);
    case OX_DT_INT16:
      return LOAD(int16_t, data, i);
    case OX_DT_INT32:
      return LOAD(int32_t, data, i);
    default:
      return LOAD(int64_t, data, i);
  }
}

static uint64_t load_uint(ox_dtype_t dt, const void *data, uint64_t i) {
  switch (dt) {
    case OX_DT_UINT8:
      return LOAD(uint8_t, data, i);
    case OX_DT_UINT16:
      return LOAD(uint16_t, data, i);
    case OX_DT_UINT32:
      return LOAD(uint32_t, data, i);
    default:
      return LOAD(uint64_t, data, i);
  }
}

static int is_float(ox_dtype_t dt) {
  return dt == OX_DT_FP32 || dt == OX_DT_FP64;
}
static int is_signed(ox_dtype_t dt) {
  return dt == OX_DT_INT8 || dt == OX_DT_INT16 || dt == OX_DT_INT32 || dt == OX_DT_INT64;
}

static double load_float(ox_dtype_t dt, const void *data, uint64_t i) {
  return dt == OX_DT_FP32 ? (double)LOAD(float, data, i) : LOAD(double, data, i);
}

/* A key that orders as the element does (see the file comment). */
static uint64_t key_of(ox_dtype_t dt, const void *data, uint64_t i) {
  if (is_float(dt)) {
    double x = load_float(dt, data, i);
    if (isnan(x)) return 0;
    if (x == 0) x = 0.0; /* -0.0 ties with 0.0, as Triton's comparison has it */
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return (b >> 63) ? ~b : b | (1ull << 63); /* -inf becomes 0x000f..., above NaN's 0 */
  }
  if (is_signed(dt)) return (uint64_t)load_int(dt, data, i) ^ (1ull << 63);
  return load_uint(dt, data, i);
}

size_t ox_classify_score(ox_dtype_t dt, const void *data, uint64_t idx, char *buf) {
  int n;
  if (is_float(dt))
    n = snprintf(buf, OX_CLASSIFY_SCORE_MAX, "%f", load_float(dt, data, idx));
  else if (is_signed(dt))
    n = snprintf(buf, OX_CLASSIFY_SCORE_MAX, "%" PRId64, load_int(dt, data, idx));
  else
    n = snprintf(buf, OX_CLASSIFY_SCORE_MAX, "%" PRIu64, load_uint(dt, data, idx));
  return n < 0 ? 0 : (size_t)n;
}

/* Whether element a ranks before element b. */
static inline int better(const uint64_t *key, uint32_t a, uint32_t b) {
  return key[a] > key[b] || (key[a] == key[b] && a < b);
}

/* Restores the heap (worst on top) below position i of h[0..n). */
static void sift_down(const uint64_t *key, uint32_t *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, w = i;
    if (l < n && better(key, h[w], h[l])) w = l;
    if (r < n && better(key, h[w], h[r])) w = r;
    if (w == i) return;
    uint32_t t = h[i];
    h[i] = h[w];
    h[w] = t;
    i = w;
  }
}

static void sift_up(const uint64_t *key, uint32_t *h, size_t i) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!better(key, h[p], h[i])) return;
    uint32_t t = h[i];
    h[i] = h[p];
    h[p] = t;
    i = p;
  }
}

int ox_classify_rows(ox_dtype_t dt, const void *data, uint64_t rows, uint64_t row_len, uint64_t k,
                     const ox_labels_t *labels, ox_arena_t *arena, ox_slice_t *out) {
  size_t take = (size_t)(k < row_len ? k : row_len);
  if (take == 0 || rows == 0) return 0;
  uint64_t *key = ox_arena_alloc(arena, (size_t)row_len * sizeof *key);
  uint32_t *heap = ox_arena_alloc(arena, take * sizeof *heap);
  if (!key || !heap) return OX_ENOMEM;
  size_t esz = ox_dtype_size(dt);
  for (uint64_t r = 0; r < rows; r++) {
    const char *row = (const char *)data + (size_t)(r * row_len) * esz;
    for (uint32_t i = 0; i < row_len; i++) key[i] = key_of(dt, row, i);
    size_t n = 0;
    for (uint32_t i = 0; i < row_len; i++) {
      if (n < take) {
        heap[n] = i;
        sift_up(key, heap, n++);
      } else if (better(key, i, heap[0])) {
        heap[0] = i;
        sift_down(key, heap, n, 0);
      }
    }
    ox_slice_t *dst = out + (size_t)r * take;
    while (n > 0) { /* the worst first, into the last free place */
      uint32_t idx = heap[0];
      heap[0] = heap[--n];
      sift_down(key, heap, n, 0);
      char score[OX_CLASSIFY_SCORE_MAX];
      size_t sl = ox_classify_score(dt, row, idx, score);
      const ox_slice_t *label = ox_labels_get(labels, idx);
      char idxs[24];
      int il = snprintf(idxs, sizeof idxs, ":%" PRIu32, idx);
      size_t total = sl + (size_t)il + (label ? 1 + label->len : 0);
      char *s = ox_arena_alloc_aligned(arena, total + 1, 1);
      if (!s) return OX_ENOMEM;
      memcpy(s, score, sl);
      memcpy(s + sl, idxs, (size_t)il);
      if (label) {
        s[sl + (size_t)il] = ':';
        memcpy(s + sl + (size_t)il + 1, label->ptr, label->len);
      }
      s[total] = 0;
      dst[n] = ox_slice(s, total);
    }
  }
  return 0;
}

int ox_classify_output(const ox_tensor_out_t *in, int batched, uint64_t k,
                       const ox_labels_t *labels, ox_arena_t *arena, ox_tensor_out_t *out,
                       char *err, size_t errcap) {
  if (!ox_classify_supported(in->dtype)) {
    snprintf(err, errcap, "classification is not available for datatype %s",
             ox_dtype_name(in->dtype));
    return OX_EINVALID;
  }
  /* Triton: the batch is the first dimension of a batching model's output, unless it has no
   * dimension or no rows; then the whole tensor is one row. */
  uint64_t rows = batched && in->rank > 0 ? (uint64_t)in->shape[0] : 0;
  uint64_t row_len = rows ? in->count / rows : in->count;
  if (row_len > OX_CLASSIFY_MAX_ROW) {
    snprintf(err, errcap,
             "classification output tensor too large: %" PRIu64 " elements per row (at most %u)",
             row_len, OX_CLASSIFY_MAX_ROW);
    return OX_EINVALID;
  }
  uint64_t take = k < row_len ? k : row_len;
  memset(out, 0, sizeof *out);
  out->dtype = OX_DT_BYTES;
  if (rows) {
    out->rank = 2;
    out->shape[0] = (int64_t)rows;
    out->shape[1] = (int64_t)take;
  } else {
    out->rank = 1;
    out->shape[0] = (int64_t)take;
  }
  out->count = (rows ? rows : 1) * take; /* <= in->count: no overflow */
  out->strings = ox_arena_alloc(arena, (size_t)out->count * sizeof *out->strings + 1);
  if (!out->strings) return OX_ENOMEM;
  return ox_classify_rows(in->dtype, in->data, rows ? rows : 1, row_len, k, labels, arena,
                          out->strings);
}
