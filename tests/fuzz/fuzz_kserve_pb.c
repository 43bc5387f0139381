/* fuzz_kserve_pb.c: libFuzzer harness for the ModelInferRequest decoder and the transport's
 * raw-contents offset (proto/kserve_pb.h), over the same bytes.
 *
 * The input is the message itself (the corpus holds real serializations from tritonclient,
 * tools/gen_kserve_pb_vectors.py), copied into a buffer of exactly its size so ASan sees a
 * read one past it. Beyond "no crash":
 *   - decoding returns 0, OX_EINVALID or OX_EOVERFLOW, and on an error a terminated message;
 *   - on success every input has its binary contents: non-BYTES exactly count x element size
 *     bytes, aligned for the element type, BYTES a well-formed list of count elements; every
 *     slice lies in the message or is a copy (counted for raw contents);
 *   - the raw offset is found from a prefix exactly when the prefix holds the field's length
 *     (0 before), and when decoding used raw contents in place it is where the first lies.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "proto/kserve_pb.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

static void check_input(const ox_infer_input_t *in) {
  REQUIRE(in->has_binary && in->binary_size == in->binary.len);
  REQUIRE(in->binary.len == 0 || in->binary.ptr != NULL);
  REQUIRE(in->data_json.ptr == NULL);
  REQUIRE(in->rank >= 0 && in->rank <= OX_MAX_RANK);
  size_t es = ox_dtype_size(in->dtype);
  if (in->dtype == OX_DT_BYTES) {
    size_t pos = 0;
    uint64_t k = 0;
    while (pos < in->binary.len) {
      REQUIRE(in->binary.len - pos >= 4);
      uint32_t n;
      memcpy(&n, in->binary.ptr + pos, 4);
      pos += 4;
      REQUIRE(n <= in->binary.len - pos);
      pos += n;
      k++;
    }
    REQUIRE(k == in->count);
  } else {
    REQUIRE(es > 0);
    REQUIRE(in->binary.len / es == in->count && in->binary.len % es == 0);
    REQUIRE(((uintptr_t)in->binary.ptr & (es - 1)) == 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *msg = malloc(size ? size : 1);
  REQUIRE(msg);
  if (size) memcpy(msg, data, size);
  ox_arena_t a;
  ox_arena_init(&a);
  ox_pb_infer_request_t r;
  char err[128];
  memset(err, 'X', sizeof err);
  int rc = ox_pb_infer_request_decode(msg, size, &a, &r, err, sizeof err);
  REQUIRE(rc == 0 || rc == OX_EINVALID || rc == OX_EOVERFLOW);
  size_t off = ox_pb_infer_request_raw_offset(msg, size, size);
  REQUIRE(off <= size);
  if (rc) {
    REQUIRE(memchr(err, 0, sizeof err) && err[0]);
  } else {
    REQUIRE(r.num_inputs <= OX_MAX_IO && r.num_outputs <= OX_MAX_IO);
    for (size_t i = 0; i < r.num_inputs; i++) check_input(&r.inputs[i]);
    REQUIRE(r.raw_copies <= r.num_inputs);
    /* A decoded message with raw contents used them for its inputs, the first in place
     * unless it was copied for alignment. */
    if (r.num_inputs && off) {
      const ox_infer_input_t *in0 = &r.inputs[0];
      if (in0->binary.len && in0->binary.ptr >= msg && in0->binary.ptr < msg + size)
        REQUIRE(in0->binary.ptr == msg + off);
    }
    for (size_t i = 0; i < r.num_outputs; i++) REQUIRE(r.outputs[i].name.len > 0);
  }
  /* Prefixes: the offset appears exactly when the prefix reaches it. */
  if (off) {
    REQUIRE(ox_pb_infer_request_raw_offset(msg, off, size) == off);
    REQUIRE(ox_pb_infer_request_raw_offset(msg, off - 1, size) == 0);
  }
  size_t n = size ? (size_t)data[0] * 7 % (size + 1) : 0;
  size_t o2 = ox_pb_infer_request_raw_offset(msg, n, size);
  REQUIRE(o2 == (off && n >= off ? off : 0));
  ox_arena_free(&a);
  free(msg);
  return 0;
}
