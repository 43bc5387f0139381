/* classify.h: Triton's classification extension, independent of the wire: an output asked with
 * the parameter "classification": K is answered, instead of its tensor, with a BYTES tensor of
 * the K highest entries of each row as strings "score:index" or "score:index:label"; and the
 * label files (config "output": [{"label_filename": ...}]) that name the classes.
 *
 * What Triton does, and onnxd with it (server src/classification.cc, src/http_server.cc,
 * src/grpc/infer_handler.h; core src/label_provider.cc, src/infer_response.cc):
 *   - Rows: a model with max_batch_size > 0 classifies each row of the first dimension over
 *     the remaining dimensions flattened, giving [rows, min(K, row elements)]; any other model
 *     (or a rank-0 output, or 0 rows) classifies the whole tensor flattened: [min(K, count)].
 *     So K larger than the classes returns every class, never padding.
 *   - The score is the element in its own type: integers in decimal, FP32 and FP64 as C++'s
 *     std::to_string does ("%f": "0.500000", "-3.000000", "nan", "inf"); the index is the
 *     position in the row.
 *   - Types: UINT8..UINT64, INT8..INT64, FP32, FP64. Others (BYTES, BOOL, FP16, BF16) are
 *     refused. A row of more than OX_CLASSIFY_MAX_ROW elements is refused (Triton's limit).
 *   - Labels: line i of the file names class i; a class whose line is empty or missing gets
 *     no label (the string ends at the index); lines beyond the classes are never read.
 * Where onnxd decides what Triton leaves undefined: ties go to the lower index (Triton's
 * std::sort is not stable); NaN ranks below every number, -inf included (Triton's comparison
 * `a > b` is no ordering with NaN); -0.0 equals 0.0 (a tie). Label lines end at "\n", and a
 * "\r" before it is dropped too (Triton keeps it in the label).
 */
#ifndef OX_INFER_CLASSIFY_H
#define OX_INFER_CLASSIFY_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/dtype.h"
#include "core/slice.h"
#include "runtime/runtime.h"

#define OX_CLASSIFY_MAX_ROW 1000000u    /* elements of one classified row */
#define OX_LABELS_MAX_BYTES (16u << 20) /* a label file */
#define OX_CLASSIFY_SCORE_MAX 352       /* "%f" of any double, with its NUL */

/* A label file, parsed. Owned: ox_labels_free. A zeroed value is "no labels". */
typedef struct {
  char *text;        /* owned (malloc): a copy of the file's bytes */
  ox_slice_t *lines; /* owned (malloc): count lines, slices of text without "\n" / "\r\n" */
  size_t count;
} ox_labels_t;

/* Splits text[0..len) (at most OX_LABELS_MAX_BYTES) into lines: "a\nb" and "a\nb\n" are two
 * lines, "" none, "a\n\nb" three (the second empty). Every line must be valid UTF-8 (labels go
 * into JSON strings). Returns 0 with *out filled, OX_EINVALID with a message in err ("line 3
 * is not valid UTF-8", "larger than 16 MiB"), or OX_ENOMEM; *out is zeroed on error. */
int ox_labels_parse(const char *text, size_t len, ox_labels_t *out, char *err, size_t errcap);
void ox_labels_free(ox_labels_t *l);

/* The label of class idx, or NULL when l is NULL or the line is missing or empty. */
const ox_slice_t *ox_labels_get(const ox_labels_t *l, uint64_t idx);

/* Whether an output of datatype dt can be classified. */
int ox_classify_supported(ox_dtype_t dt);

/* Writes the score of element idx of data (datatype dt, supported) as Triton does into buf
 * (OX_CLASSIFY_SCORE_MAX bytes), NUL-terminated; returns its length. */
size_t ox_classify_score(ox_dtype_t dt, const void *data, uint64_t idx, char *buf);

/* The top min(k, row_len) of each of rows rows of row_len elements of data (datatype dt,
 * supported; row r starts at element r * row_len), best first: out receives
 * rows * min(k, row_len) strings, "score:index[:label]" with labels from labels (may be NULL),
 * allocated in arena (as is the selection's scratch). k >= 1; row_len <= OX_CLASSIFY_MAX_ROW
 * (the caller checks). Returns 0 or OX_ENOMEM. O(row_len log k) per row. */
int ox_classify_rows(ox_dtype_t dt, const void *data, uint64_t rows, uint64_t row_len, uint64_t k,
                     const ox_labels_t *labels, ox_arena_t *arena, ox_slice_t *out);

/* The classification of one run output in, as a BYTES tensor in *out (strings and the array in
 * arena; out->data, value_ and strblock_ NULL, so it owns no runtime memory): batched says
 * whether the model's first dimension is the batch (max_batch_size > 0); the shape is as above.
 * Returns 0, OX_EINVALID (unsupported datatype, a row too long; message in err, without the
 * output's name) or OX_ENOMEM. */
int ox_classify_output(const ox_tensor_out_t *in, int batched, uint64_t k,
                       const ox_labels_t *labels, ox_arena_t *arena, ox_tensor_out_t *out,
                       char *err, size_t errcap);

#endif
