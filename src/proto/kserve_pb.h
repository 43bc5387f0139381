/* kserve_pb.h: the Open Inference Protocol's gRPC messages for inference (package `inference`,
 * KServe's grpc_predict_v2 and Triton's grpc_service, which share these field numbers):
 * ModelInferRequest decoded into views, ModelInferResponse (and ModelStreamInferResponse)
 * encoded around ONNX Runtime's output memory. Hand-written on proto/pb.h's wire reader and
 * writer, not generated: protobuf-c copies every `bytes` field when it decodes, and tensors
 * must stay where they lie.
 *
 * Decoding is bounded and overflow-safe like the JSON parser (proto/infer_req.h): at most
 * OX_MAX_IO inputs and outputs, OX_MAX_RANK dimensions, OX_MAX_PARAMS parameters; element
 * counts and byte sizes checked against the datatype; unknown fields skipped (as protobuf
 * does), malformed wire data (truncated varints, lengths past the end, bad wire types, groups)
 * invalid. Errors name the input: "input 'x': ...".
 */
#ifndef OX_PROTO_KSERVE_PB_H
#define OX_PROTO_KSERVE_PB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/dtype.h"
#include "core/slice.h"
#include "proto/infer_req.h"

/* A decoded ModelInferRequest. Slices borrow the message (or the arena). */
typedef struct {
  ox_slice_t model_name;    /* field 1 */
  ox_slice_t model_version; /* field 2 ("" or absent: the default version) */
  ox_slice_t id;            /* field 3 (empty if absent) */
  /* Field 5, in order. Every input gets .binary set and .has_binary = 1, .binary_size its
   * length: raw_input_contents (field 7, matched to the inputs in order, as Triton does) point
   * into the message, with no copy when they are aligned for their element type (an unaligned
   * one is copied once into the arena; raw_copies counts them); typed contents (field 5 of the
   * input: bool/int/int64/uint/uint64/fp32/fp64/bytes_contents) are converted into the binary
   * form in the arena (an FP32/FP64 array sent as one packed field points into the message
   * when aligned: int64/uint64 contents are varints on the wire and are always converted; BYTES
   * become 4-byte little-endian lengths then the bytes, the binary extension's form). An input with
   * both raw and typed contents, or neither, is invalid; so are raw contents left over or missing,
   * and sizes that do not match shape x element size (BYTES: elements that do not match the element
   * count). .data_json is never set. INT8/INT16/UINT8/UINT16/FP16/BF16 take
   * int_contents/uint_contents (one element per value, range-checked; FP16/BF16 only raw, as
   * Triton). */
  ox_infer_input_t *inputs;
  size_t num_inputs;
  ox_infer_output_t *outputs; /* field 6 (names; binary_data -1); NULL/0: all outputs */
  size_t num_outputs;
  /* Field 4, the request's parameters map, in wire order: string_param as OX_PARAM_STRING,
   * bool_param as OX_PARAM_BOOL ("true"/"false"), int64/uint64/double params as OX_PARAM_NUMBER
   * (their decimal text, doubles with %.17g). A key given twice is invalid. */
  ox_infer_param_t *params;
  size_t num_params;
  int has_timeout; /* parameters["timeout"] (int64 microseconds, Triton's) */
  uint64_t timeout_us;
  size_t raw_copies; /* raw inputs copied for alignment */
} ox_pb_infer_request_t;

/* Decodes msg[0..len) as a ModelInferRequest. Arrays and copies come from arena. Returns 0,
 * OX_EINVALID (message in err, NUL-terminated, errcap bytes), or OX_ENOMEM. */
int ox_pb_infer_request_decode(const char *msg, size_t len, ox_arena_t *arena,
                               ox_pb_infer_request_t *out, char *err, size_t errcap);

/* The offset within a ModelInferRequest of its first raw_input_contents' bytes, found in the
 * message's first n bytes (prefix of a message of msg_len bytes), or 0 when they do not start
 * there (the transport's align_offset, grpc/h2.h). Never reads past prefix[n-1]. */
size_t ox_pb_infer_request_raw_offset(const char *prefix, size_t n, size_t msg_len);

/* One output tensor of a response. */
typedef struct {
  const char *name;
  ox_dtype_t dtype;
  int rank;
  const int64_t *shape;
  /* The raw contents: data[0..nbytes) (numeric: little-endian elements; BYTES: the caller has
   * serialized the elements as 4-byte little-endian lengths then bytes). Borrowed: the encoder
   * points at it, it is not copied. */
  const void *data;
  size_t nbytes;
} ox_pb_out_tensor_t;

/* One response parameter (field 4 of ModelInferResponse). */
typedef struct {
  const char *key;
  ox_param_kind_t kind; /* OX_PARAM_BOOL (b), OX_PARAM_NUMBER (i64), OX_PARAM_STRING (s) */
  int b;
  int64_t i64;
  ox_slice_t s;
} ox_pb_param_t;

typedef struct {
  const char *model_name;
  const char *model_version;
  ox_slice_t id;
  const ox_pb_out_tensor_t *outputs;
  size_t num_outputs;
  const ox_pb_param_t *params;
  size_t num_params;
} ox_pb_infer_response_t;

/* Encodes r as a ModelInferResponse (stream 0) or a ModelStreamInferResponse whose
 * infer_response is it (stream 1): the message is head's bytes, then iov[0..*iovcnt). Every
 * output's contents go as raw_output_contents (field 6; tritonclient reads numeric outputs only
 * from there), pointed at by iov with no copy; the small pieces between them (field tags and
 * lengths) are appended to tail, which iov points into: tail must not change until the bytes
 * are sent. iov has room for 2 * r->num_outputs entries. Appends to head and tail. 0 or
 * OX_ENOMEM. */
int ox_pb_infer_response_encode(const ox_pb_infer_response_t *r, int stream, ox_buf_t *head,
                                ox_buf_t *tail, struct iovec *iov, int *iovcnt);

/* A ModelStreamInferResponse carrying only error_message (field 1). 0 or OX_ENOMEM. */
int ox_pb_stream_error_encode(ox_buf_t *out, const char *msg);

#endif
