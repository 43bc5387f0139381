/* binary_ext.h: the framing of the binary tensor data extension (Open Inference Protocol):
 * a body that is a JSON header of Inference-Header-Content-Length bytes followed by the
 * binary section holding the tensors' bytes.
 *
 * Pure and bounded: no I/O, no allocation; the functions take the header's values and the
 * body as slices and answer with slices of the body. The REST front end (server/) is the one
 * caller: it collects the header's values, places the body (ox_binext_align_offset, through
 * the connection's body_align_offset hook) and splits it (ox_binext_split) before the JSON
 * header is parsed (proto/infer_req.h, which then locates each input's bytes in the binary
 * section).
 */
#ifndef OX_PROTO_BINARY_EXT_H
#define OX_PROTO_BINARY_EXT_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

/* The longest Inference-Header-Content-Length value accepted: 19 digits never overflow. */
#define OX_BINEXT_MAX_DIGITS 19

/* The framing a request announces. */
typedef struct {
  int present;         /* the request carries Inference-Header-Content-Length */
  uint64_t header_len; /* its value: bytes of JSON header at the start of the body */
} ox_binext_t;

/* Reads the framing from every value of the Inference-Header-Content-Length header the
 * request carries (values: n of them, borrowed; n == 0: no binary section). More than one, or
 * a value other than 1 to 19 decimal digits, is OX_EINVALID with *why set to a static message
 * for the client. Returns 0 with *out filled, or OX_EINVALID. */
int ox_binext_parse(const ox_slice_t *values, size_t n, ox_binext_t *out, const char **why);

/* Splits a body by the framing: *json is the JSON header (the whole body without the
 * extension), *binary the binary section (empty without it). Both point into body. A header
 * length beyond the body is OX_EINVALID, with the message written into err (errcap bytes,
 * NUL-terminated). Returns 0 or OX_EINVALID. */
int ox_binext_split(const ox_binext_t *f, ox_slice_t body, ox_slice_t *json, ox_slice_t *binary,
                    char *err, size_t errcap);

/* Where the binary section of a body will start, for placing the body before it has arrived
 * (its tensors then start aligned): the header length when value is a valid header value,
 * else 0 (a request with a bad value is refused later by ox_binext_parse). */
size_t ox_binext_align_offset(ox_slice_t value);

#endif
