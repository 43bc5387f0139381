/* pb.h: the protocol buffers wire format, read and written by hand (no generator): a bounded
 * field reader over a byte slice and a writer into a growable buffer. Enough for the gRPC
 * messages onnxd speaks (proto/kserve_pb.h and the small messages of server/grpc_service.c).
 *
 * Reading never copies: a length-delimited field is a slice of the input. Every read is
 * bounds-checked (a varint longer than 10 bytes, a length past the end, wire types 3/4 (groups)
 * and 6/7 are errors), so a reader over untrusted bytes can only return fields or an error.
 */
#ifndef OX_PROTO_PB_H
#define OX_PROTO_PB_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"

enum { OX_PB_VARINT = 0, OX_PB_I64 = 1, OX_PB_LEN = 2, OX_PB_I32 = 5 };

typedef struct {
  const char *p, *end;
} ox_pb_reader_t;

typedef struct {
  uint32_t num; /* field number (>= 1) */
  int wire;     /* OX_PB_* */
  uint64_t u64; /* VARINT, I64, I32 values */
  ox_slice_t s; /* LEN: the bytes */
} ox_pb_field_t;

static inline ox_pb_reader_t ox_pb_reader(const char *p, size_t len) {
  return (ox_pb_reader_t){p, p + len};
}
/* Next field into *f: 1; end of input: 0; malformed: OX_EINVALID. */
int ox_pb_next(ox_pb_reader_t *r, ox_pb_field_t *f);
/* A varint at p (at most 10 bytes, not past end): bytes read, or 0 when malformed. */
size_t ox_pb_read_varint(const char *p, const char *end, uint64_t *v);

/* Writing: each returns 0 or OX_ENOMEM (the buffer's error). */
int ox_pb_put_varint(ox_buf_t *b, uint64_t v);
int ox_pb_put_tag(ox_buf_t *b, uint32_t num, int wire);
/* A field: varint (bool, enum, int32/64, uint32/64), length-delimited bytes, fixed 64. */
int ox_pb_put_uint(ox_buf_t *b, uint32_t num, uint64_t v);
int ox_pb_put_bytes(ox_buf_t *b, uint32_t num, const void *p, size_t n);
int ox_pb_put_str(ox_buf_t *b, uint32_t num, const char *s); /* NUL-terminated */
int ox_pb_put_fixed64(ox_buf_t *b, uint32_t num, uint64_t v);
/* Bytes a varint of v takes. */
size_t ox_pb_varint_size(uint64_t v);

/* A nested message written in place: ox_pb_begin reserves room for its length (a 5-byte
 * varint, which bounds a nested message at 4 GiB - 1; protobuf readers accept the padded
 * form), ox_pb_end fills it in. Returns the mark / 0, or OX_ENOMEM / OX_EOVERFLOW. */
long ox_pb_begin(ox_buf_t *b, uint32_t num);
int ox_pb_end(ox_buf_t *b, long mark);

#endif
