/* infer_req.h: the Open Inference Protocol (KServe v2) inference request header, parsed.
 *
 * Parses the JSON inference request (or, with the binary tensor extension, the JSON header
 * part of the body) into slices of the body: nothing is copied and no tensor data is decoded
 * here: an input's "data" array is kept as the raw JSON text slice for tensor_json.h to decode
 * straight into the tensor buffer later, and a binary input's bytes are located by
 * ox_infer_request_split_binary. Bounded: nesting depth <= 64 (a million '[' fail fast),
 * counts limited below, every size computation overflow-checked.
 */
#ifndef OX_PROTO_INFER_REQ_H
#define OX_PROTO_INFER_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/dtype.h"
#include "core/slice.h"

#define OX_MAX_RANK 16
#define OX_MAX_IO 256       /* inputs or outputs per request */
#define OX_MAX_PARAMS 65536 /* members of the request's "parameters" (more: invalid) */
#define OX_JSON_MAX_DEPTH 64

typedef struct {
  ox_slice_t name;  /* unescaped (arena copy if it had escapes, else borrowed) */
  ox_dtype_t dtype; /* from "datatype"; request is invalid if unknown */
  int rank;
  int64_t shape[OX_MAX_RANK]; /* each >= 0 (negative: invalid) */
  uint64_t count;             /* product of shape (overflow: invalid) */
  ox_slice_t data_json;       /* raw text of the "data" value (an array), ptr NULL if absent */
  int has_binary;             /* parameters.binary_data_size present */
  uint64_t binary_size;       /* its value */
  ox_slice_t binary;          /* set by ox_infer_request_split_binary */
} ox_infer_input_t;

typedef struct {
  ox_slice_t name;
  int binary_data;         /* parameters.binary_data: -1 absent, 0 false, 1 true */
  uint64_t classification; /* parameters.classification (Triton's classification extension):
                              the K of a top-K answer, >= 1; 0 when absent */
} ox_infer_output_t;

/* The kind of a request parameter's value. */
typedef enum {
  OX_PARAM_STRING,
  OX_PARAM_NUMBER,
  OX_PARAM_BOOL,
  OX_PARAM_NULL,
  OX_PARAM_OTHER /* an object or an array */
} ox_param_kind_t;

/* One member of the request's top-level "parameters" object, kept for the stages after the
 * parse (a feature view reads its keys and raw values from them) so that none of them walks
 * the JSON again. */
typedef struct {
  ox_slice_t key;   /* unescaped (arena copy if it had escapes, else borrowed) */
  ox_slice_t value; /* STRING: its unescaped contents (as key); other kinds: the raw JSON
                       text of the value (a number token, true/false, null, or the whole
                       object or array) */
  ox_param_kind_t kind;
} ox_infer_param_t;

typedef struct {
  ox_slice_t id_json;       /* raw JSON text of "id" (a string token with quotes), or NULL */
  ox_infer_input_t *inputs; /* arena-owned array */
  size_t num_inputs;
  ox_infer_output_t *outputs; /* arena-owned; NULL/0 when "outputs" absent (= all outputs) */
  size_t num_outputs;
  int binary_data_output; /* parameters.binary_data_output: -1 absent, 0, 1 */
  int has_timeout;        /* parameters.timeout (microseconds, Triton's) */
  uint64_t timeout_us;
  ox_infer_param_t *params; /* every request parameter, in request order (arena-owned);
                               NULL/0 when "parameters" is absent or empty */
  size_t num_params;
} ox_infer_header_t;

/* The request parameter named name (NUL-terminated), or NULL. Linear in num_params. */
const ox_infer_param_t *ox_infer_request_param(const ox_infer_header_t *req, const char *name);

/* Parses json[0..len) as an inference request. Arrays are allocated in arena; slices borrow
 * json (or the arena). Unknown top-level keys and unknown parameters are ignored, as Triton
 * does; duplicate keys that matter ("inputs", "name", "shape", "datatype", "data", ...) are
 * invalid; an input or output name appearing twice is invalid. Every member of the request's
 * "parameters" is kept in req->params (at most OX_MAX_PARAMS); a parameter named twice (after
 * unescaping) is invalid, whatever its name: no "first one wins".
 * Returns 0, OX_EINVALID / OX_EDEPTH / OX_EOVERFLOW (message in err, naming the input, e.g.
 * "input 'x': shape has a negative dimension"), or OX_ENOMEM. err has room for errcap bytes and
 * is always NUL-terminated on error. */
int ox_infer_request_parse(const char *json, size_t len, ox_arena_t *arena, ox_infer_header_t *req,
                           char *err, size_t errcap);

/* Binary tensor extension: assigns each input with has_binary its slice of bin[0..bin_len),
 * in input order. Errors (OX_EINVALID, message in err): an input has both "data" and
 * binary_data_size, or neither; the sizes run past the buffer; bytes left over at the end. */
int ox_infer_request_split_binary(ox_infer_header_t *req, const char *bin, size_t bin_len,
                                  char *err, size_t errcap);

/* Parses and validates a JSON string token's contents (between the quotes) into out, which
 * has room for len bytes (unescaped text is never longer). Handles \uXXXX with surrogate
 * pairs (to UTF-8); rejects control bytes and bad escapes. Returns the output length (>= 0)
 * or OX_EINVALID. */
long ox_json_unescape(const char *s, size_t len, char *out);

#endif
