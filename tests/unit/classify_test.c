/* classify_test.c: unit tests of the classification extension (infer/classify.h): Triton's
 * score format per datatype, the top-K order (ties to the lower index, NaN last, -0.0 a tie
 * with 0.0), K beyond the classes, the output shapes of batching and other models, refused
 * datatypes and rows, label files (lines, CRLF, empty and missing lines, UTF-8, the size
 * bound), a brute-force comparison on random rows full of ties, and allocation failure.
 */
#include "infer/classify.h"

#include <math.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/error.h"
#include "test.h"

static ox_arena_t A;
static ox_slice_t S[4096];
static char E[256];

/* The classification of rows x row_len elements, strings in S; 0 or the error. */
static int classify(ox_dtype_t dt, const void *data, uint64_t rows, uint64_t row_len, uint64_t k,
                    const ox_labels_t *labels) {
  ox_arena_free(&A);
  memset(S, 0, sizeof S);
  return ox_classify_rows(dt, data, rows, row_len, k, labels, &A, S);
}

static int str_is(ox_slice_t s, const char *lit) {
  int ok = s.ptr && ox_slice_eq(s, lit);
  if (!ok) fprintf(stderr, "  got \"%.*s\", want \"%s\"\n", (int)s.len, s.ptr ? s.ptr : "", lit);
  return ok;
}

TEST(fp32_format_and_order) {
  float x[] = {1.1f, 3.3f, 0.5f, 2.4f}; /* the extension document's example */
  CHECK_INT(classify(OX_DT_FP32, x, 1, 4, 2, NULL), 0);
  CHECK(str_is(S[0], "3.300000:1"));
  CHECK(str_is(S[1], "2.400000:3"));
  CHECK(S[2].ptr == NULL);
}

TEST(ties_go_to_the_lower_index) {
  float x[] = {0.5f, 0.9f, 0.5f, 0.9f, 0.1f, 0.9f};
  CHECK_INT(classify(OX_DT_FP32, x, 1, 6, 4, NULL), 0);
  CHECK(str_is(S[0], "0.900000:1"));
  CHECK(str_is(S[1], "0.900000:3"));
  CHECK(str_is(S[2], "0.900000:5"));
  CHECK(str_is(S[3], "0.500000:0"));
  /* All equal: the first k indices, in order, whatever k. */
  int32_t z[100] = {0};
  for (uint64_t k = 1; k <= 100; k += 33) {
    CHECK_INT(classify(OX_DT_INT32, z, 1, 100, k, NULL), 0);
    for (uint64_t i = 0; i < k; i++) {
      char want[32];
      snprintf(want, sizeof want, "0:%" PRIu64, i);
      CHECK(str_is(S[i], want));
    }
  }
}

TEST(k_beyond_the_classes) {
  double x[] = {2, 1, 3};
  CHECK_INT(classify(OX_DT_FP64, x, 1, 3, 1000, NULL), 0);
  CHECK(str_is(S[0], "3.000000:2"));
  CHECK(str_is(S[1], "2.000000:0"));
  CHECK(str_is(S[2], "1.000000:1"));
  CHECK(S[3].ptr == NULL);
}

TEST(negative_nan_inf_and_zero) {
  float x[] = {-1.0f, NAN, -INFINITY, -0.5f, 0.0f, INFINITY, -NAN, -0.0f};
  CHECK_INT(classify(OX_DT_FP32, x, 1, 8, 8, NULL), 0);
  CHECK(str_is(S[0], "inf:5"));
  CHECK(str_is(S[1], "0.000000:4")); /* 0.0 and -0.0 tie: the lower index first */
  CHECK(str_is(S[2], "-0.000000:7"));
  CHECK(str_is(S[3], "-0.500000:3"));
  CHECK(str_is(S[4], "-1.000000:0"));
  CHECK(str_is(S[5], "-inf:2"));
  CHECK(str_is(S[6], "nan:1")); /* NaN ranks below -inf, lower index first among NaNs */
  CHECK(str_is(S[7], "-nan:6"));
  /* A NaN is never chosen over a number, wherever it stands. */
  double y[] = {NAN, NAN, -1e300};
  CHECK_INT(classify(OX_DT_FP64, y, 1, 3, 1, NULL), 0);
  char want[OX_CLASSIFY_SCORE_MAX + 8];
  snprintf(want, sizeof want, "%f:2", -1e300); /* 301 digits, as std::to_string writes */
  CHECK(strlen(want) > 300);
  CHECK(str_is(S[0], want));
}

TEST(integer_types) {
  int64_t a[] = {(int64_t)1 << 62, ((int64_t)1 << 62) + 1, INT64_MIN, -5, INT64_MAX};
  CHECK_INT(classify(OX_DT_INT64, a, 1, 5, 5, NULL), 0);
  CHECK(str_is(S[0], "9223372036854775807:4"));
  CHECK(str_is(S[1], "4611686018427387905:1")); /* exact: no rounding through double */
  CHECK(str_is(S[2], "4611686018427387904:0"));
  CHECK(str_is(S[3], "-5:3"));
  CHECK(str_is(S[4], "-9223372036854775808:2"));
  uint64_t u[] = {UINT64_MAX - 1, UINT64_MAX, 0};
  CHECK_INT(classify(OX_DT_UINT64, u, 1, 3, 2, NULL), 0);
  CHECK(str_is(S[0], "18446744073709551615:1"));
  CHECK(str_is(S[1], "18446744073709551614:0"));
  uint8_t b[] = {7, 255, 0};
  CHECK_INT(classify(OX_DT_UINT8, b, 1, 3, 1, NULL), 0);
  CHECK(str_is(S[0], "255:1"));
  int8_t c[] = {-128, -1, -2};
  CHECK_INT(classify(OX_DT_INT8, c, 1, 3, 3, NULL), 0);
  CHECK(str_is(S[0], "-1:1"));
  CHECK(str_is(S[1], "-2:2"));
  CHECK(str_is(S[2], "-128:0"));
  uint16_t d[] = {1, 65535};
  CHECK_INT(classify(OX_DT_UINT16, d, 1, 2, 1, NULL), 0);
  CHECK(str_is(S[0], "65535:1"));
  int16_t e[] = {-300, 300};
  CHECK_INT(classify(OX_DT_INT16, e, 1, 2, 2, NULL), 0);
  CHECK(str_is(S[1], "-300:0"));
  uint32_t f[] = {4000000000u, 1};
  CHECK_INT(classify(OX_DT_UINT32, f, 1, 2, 1, NULL), 0);
  CHECK(str_is(S[0], "4000000000:0"));
}

TEST(rows_are_separate) {
  float x[] = {1, 2, 3, 3, 2, 1};
  CHECK_INT(classify(OX_DT_FP32, x, 2, 3, 2, NULL), 0);
  CHECK(str_is(S[0], "3.000000:2"));
  CHECK(str_is(S[1], "2.000000:1"));
  CHECK(str_is(S[2], "3.000000:0")); /* the index is within the row */
  CHECK(str_is(S[3], "2.000000:1"));
}

static ox_labels_t labels_of(const char *text) {
  ox_labels_t l;
  int rc = ox_labels_parse(text, strlen(text), &l, E, sizeof E);
  CHECK_INT(rc, 0);
  return l;
}

TEST(labels_parse) {
  ox_labels_t l = labels_of("cat\ndog");
  CHECK_INT(l.count, 2);
  CHECK(str_is(l.lines[1], "dog"));
  ox_labels_free(&l);
  l = labels_of("cat\ndog\n");
  CHECK_INT(l.count, 2);
  ox_labels_free(&l);
  l = labels_of("");
  CHECK_INT(l.count, 0);
  CHECK(ox_labels_get(&l, 0) == NULL);
  ox_labels_free(&l);
  l = labels_of("\n");
  CHECK_INT(l.count, 1);
  CHECK(ox_labels_get(&l, 0) == NULL); /* an empty line: no label */
  ox_labels_free(&l);
  l = labels_of("a b\r\n\r\nc\xc3\xa9\r\n");
  CHECK_INT(l.count, 3);
  CHECK(str_is(*ox_labels_get(&l, 0), "a b")); /* CRLF: the \r goes too */
  CHECK(ox_labels_get(&l, 1) == NULL);
  CHECK(str_is(*ox_labels_get(&l, 2), "c\xc3\xa9"));
  CHECK(ox_labels_get(&l, 3) == NULL);
  CHECK(ox_labels_get(NULL, 0) == NULL);
  ox_labels_free(&l);
  CHECK_INT(ox_labels_parse("ok\nbad\xff\n", 8, &l, E, sizeof E), OX_EINVALID);
  CHECK_STR(E, "line 2 is not valid UTF-8");
  CHECK(l.lines == NULL && l.count == 0);
  /* The bound is checked before any byte is read. */
  CHECK_INT(ox_labels_parse("", (size_t)OX_LABELS_MAX_BYTES + 1, &l, E, sizeof E), OX_EINVALID);
  CHECK_STR(E, "larger than 16 MiB");
}

TEST(labels_in_the_strings) {
  ox_labels_t l = labels_of("zero\n\ntwo\n");
  float x[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.0f};
  CHECK_INT(classify(OX_DT_FP32, x, 1, 5, 5, &l), 0);
  CHECK(str_is(S[0], "0.400000:3")); /* no line 3: no label */
  CHECK(str_is(S[1], "0.300000:2:two"));
  CHECK(str_is(S[2], "0.200000:1")); /* an empty line: no label */
  CHECK(str_is(S[3], "0.100000:0:zero"));
  CHECK(str_is(S[4], "0.000000:4"));
  ox_labels_free(&l);
}

static ox_tensor_out_t tensor(ox_dtype_t dt, const void *data, int rank, const int64_t *shape) {
  ox_tensor_out_t t = {.dtype = dt, .rank = rank, .data = data, .count = 1};
  for (int i = 0; i < rank; i++) {
    t.shape[i] = shape[i];
    t.count *= (uint64_t)shape[i];
  }
  t.nbytes = t.count * ox_dtype_size(dt);
  return t;
}

TEST(output_shapes) {
  float x[12] = {0, 1, 2, 3, 4, 5, 11, 10, 9, 8, 7, 6};
  ox_tensor_out_t o;
  /* A batching model: per row of the first dimension, over the rest flattened. */
  ox_tensor_out_t t = tensor(OX_DT_FP32, x, 3, (int64_t[]){2, 2, 3});
  ox_arena_free(&A);
  CHECK_INT(ox_classify_output(&t, 1, 2, NULL, &A, &o, E, sizeof E), 0);
  CHECK_INT(o.dtype, OX_DT_BYTES);
  CHECK_INT(o.rank, 2);
  CHECK_INT(o.shape[0], 2);
  CHECK_INT(o.shape[1], 2);
  CHECK_INT(o.count, 4);
  CHECK(o.data == NULL && o.value_ == NULL);
  CHECK(str_is(o.strings[0], "5.000000:5"));
  CHECK(str_is(o.strings[1], "4.000000:4"));
  CHECK(str_is(o.strings[2], "11.000000:0"));
  CHECK(str_is(o.strings[3], "10.000000:1"));
  /* K beyond a row: the row's size. */
  CHECK_INT(ox_classify_output(&t, 1, 50, NULL, &A, &o, E, sizeof E), 0);
  CHECK_INT(o.shape[1], 6);
  CHECK_INT(o.count, 12);
  /* No batching: the whole tensor is one row, shape [K]. */
  CHECK_INT(ox_classify_output(&t, 0, 3, NULL, &A, &o, E, sizeof E), 0);
  CHECK_INT(o.rank, 1);
  CHECK_INT(o.shape[0], 3);
  CHECK(str_is(o.strings[0], "11.000000:6"));
  CHECK(str_is(o.strings[2], "9.000000:8"));
  /* A rank-0 output, and a batch of 0 rows: one row of everything (Triton's batch size 0). */
  t = tensor(OX_DT_FP32, x, 0, NULL);
  CHECK_INT(ox_classify_output(&t, 1, 3, NULL, &A, &o, E, sizeof E), 0);
  CHECK_INT(o.rank, 1);
  CHECK_INT(o.shape[0], 1);
  CHECK(str_is(o.strings[0], "0.000000:0"));
  t = tensor(OX_DT_FP32, x, 2, (int64_t[]){0, 4});
  CHECK_INT(ox_classify_output(&t, 1, 3, NULL, &A, &o, E, sizeof E), 0);
  CHECK_INT(o.rank, 1);
  CHECK_INT(o.shape[0], 0);
  CHECK_INT(o.count, 0);
}

TEST(refused) {
  ox_tensor_out_t o;
  static const ox_dtype_t bad[] = {OX_DT_BYTES, OX_DT_BOOL, OX_DT_FP16, OX_DT_BF16};
  float x[4] = {0};
  for (size_t i = 0; i < 4; i++) {
    CHECK(!ox_classify_supported(bad[i]));
    ox_tensor_out_t t = tensor(bad[i], x, 1, (int64_t[]){2});
    CHECK_INT(ox_classify_output(&t, 0, 1, NULL, &A, &o, E, sizeof E), OX_EINVALID);
    CHECK(strstr(E, "classification is not available for datatype") != NULL);
  }
  /* A row beyond Triton's million elements is refused before anything is read. */
  ox_tensor_out_t t = tensor(OX_DT_FP32, NULL, 2, (int64_t[]){2, OX_CLASSIFY_MAX_ROW + 1});
  CHECK_INT(ox_classify_output(&t, 1, 1, NULL, &A, &o, E, sizeof E), OX_EINVALID);
  CHECK(strstr(E, "classification output tensor too large") != NULL);
}

/* The reference: a stable insertion sort, best first, on the same order. */
static int ref_before(const double *x, size_t a, size_t b) {
  if (isnan(x[a]) || isnan(x[b])) return !isnan(x[a]) || (isnan(x[b]) && a < b);
  return x[a] > x[b] || (x[a] == x[b] && a < b);
}

TEST(random_rows_against_reference) {
  uint64_t seed = 12345;
  static double x[512];
  static size_t order[512];
  for (int round = 0; round < 200; round++) {
    size_t n = 1 + (size_t)(round * 7 % 512);
    for (size_t i = 0; i < n; i++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      int v = (int)(seed >> 59); /* 0..31: many ties */
      x[i] = v == 31 ? NAN : v == 30 ? -INFINITY : (double)(v - 15) / 4;
      order[i] = i;
    }
    for (size_t i = 1; i < n; i++)
      for (size_t j = i; j > 0 && ref_before(x, order[j], order[j - 1]); j--) {
        size_t t = order[j];
        order[j] = order[j - 1];
        order[j - 1] = t;
      }
    uint64_t k = 1 + (uint64_t)(round % 40);
    if (round % 5 == 0) k = n + 3;
    CHECK_INT(classify(OX_DT_FP64, x, 1, n, k, NULL), 0);
    size_t take = k < n ? (size_t)k : n;
    for (size_t i = 0; i < take; i++) {
      char want[64];
      snprintf(want, sizeof want, "%f:%zu", x[order[i]], order[i]);
      if (!str_is(S[i], want)) {
        CHECK(0);
        break;
      }
    }
    CHECK(S[take].ptr == NULL);
  }
}

TEST(allocation_failure) {
  ox_labels_t l = labels_of("a\nb\nc\n");
  int32_t x[] = {3, 1, 2, 5, 4, 0};
  int failures = 0, rc = 0;
  for (long k = 1; k < 100; k++) {
    ox_arena_free(&A);
    ox_arena_fail_after = k;
    ox_tensor_out_t o, t = tensor(OX_DT_INT32, x, 2, (int64_t[]){2, 3});
    rc = ox_classify_output(&t, 1, 2, &l, &A, &o, E, sizeof E);
    ox_arena_fail_after = 0;
    if (rc == 0) {
      CHECK(str_is(o.strings[0], "3:0:a"));
      CHECK(str_is(o.strings[3], "4:1:b"));
      break;
    }
    CHECK_INT(rc, OX_ENOMEM);
    failures++;
  }
  CHECK_INT(rc, 0);
  CHECK(failures >= 2);
  ox_labels_free(&l);
  ox_arena_free(&A);
}

TEST_MAIN(T(fp32_format_and_order), T(ties_go_to_the_lower_index), T(k_beyond_the_classes),
          T(negative_nan_inf_and_zero), T(integer_types), T(rows_are_separate), T(labels_parse),
          T(labels_in_the_strings), T(output_shapes), T(refused), T(random_rows_against_reference),
          T(allocation_failure))
