/* pb.c: the protocol buffers wire format (proto/pb.h): a bounded field reader and a writer.
 *
 * The reader checks every byte it looks at against the end of its slice: a varint may take at
 * most 10 bytes (the tenth carrying only the top bit of a 64-bit value), a length must fit in
 * what is left, and the wire types onnxd never speaks (3/4, the deprecated groups, and the
 * undefined 6/7) are errors rather than something to skip, so a message cannot nest without
 * the reader seeing it. Field number 0 is invalid, as in protobuf.
 */
#include "proto/pb.h"

#include "core/error.h"

size_t ox_pb_read_varint(const char *p, const char *end, uint64_t *v) {
  uint64_t x = 0;
  for (size_t i = 0; i < 10; i++) {
    if (p + i >= end) return 0;
    unsigned char c = (unsigned char)p[i];
    /* The tenth byte holds bit 63 only: anything more would not fit in 64 bits. */
    if (i == 9 && c > 1) return 0;
    x |= (uint64_t)(c & 0x7f) << (7 * i);
    if (!(c & 0x80)) {
      *v = x;
      return i + 1;
    }
  }
  return 0;
}

int ox_pb_next(ox_pb_reader_t *r, ox_pb_field_t *f) {
  if (r->p >= r->end) return 0;
  uint64_t tag;
  size_t n = ox_pb_read_varint(r->p, r->end, &tag);
  if (n == 0) return OX_EINVALID;
  uint64_t num = tag >> 3;
  if (num == 0 || num > 0x1fffffff) return OX_EINVALID; /* field numbers are 1 .. 2^29 - 1 */
  const char *p = r->p + n;
  f->num = (uint32_t)num;
  f->wire = (int)(tag & 7);
  f->u64 = 0;
  f->s = ox_slice(NULL, 0);
  switch (f->wire) {
    case OX_PB_VARINT:
      n = ox_pb_read_varint(p, r->end, &f->u64);
      if (n == 0) return OX_EINVALID;
      p += n;
      break;
    case OX_PB_I64:
    case OX_PB_I32: {
      size_t w = f->wire == OX_PB_I64 ? 8 : 4;
      if ((size_t)(r->end - p) < w) return OX_EINVALID;
      for (size_t i = 0; i < w; i++) f->u64 |= (uint64_t)(unsigned char)p[i] << (8 * i);
      p += w;
      break;
    }
    case OX_PB_LEN: {
      uint64_t len;
      n = ox_pb_read_varint(p, r->end, &len);
      if (n == 0) return OX_EINVALID;
      p += n;
      if (len > (uint64_t)(r->end - p)) return OX_EINVALID;
      f->s = ox_slice(p, (size_t)len);
      p += len;
      break;
    }
    default: /* 3, 4: groups; 6, 7: undefined */
      return OX_EINVALID;
  }
  r->p = p;
  return 1;
}

size_t ox_pb_varint_size(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

int ox_pb_put_varint(ox_buf_t *b, uint64_t v) {
  char tmp[10];
  size_t n = 0;
  while (v >= 0x80) {
    tmp[n++] = (char)(v | 0x80);
    v >>= 7;
  }
  tmp[n++] = (char)v;
  return ox_buf_append(b, tmp, n);
}

int ox_pb_put_tag(ox_buf_t *b, uint32_t num, int wire) {
  return ox_pb_put_varint(b, ((uint64_t)num << 3) | (uint64_t)wire);
}

int ox_pb_put_uint(ox_buf_t *b, uint32_t num, uint64_t v) {
  int rc = ox_pb_put_tag(b, num, OX_PB_VARINT);
  return rc ? rc : ox_pb_put_varint(b, v);
}

int ox_pb_put_bytes(ox_buf_t *b, uint32_t num, const void *p, size_t n) {
  /* Reserve once so that a failure leaves no half-written field behind. */
  int rc = ox_buf_reserve(b, 5 + 10 + n);
  if (rc) return rc;
  if ((rc = ox_pb_put_tag(b, num, OX_PB_LEN)) || (rc = ox_pb_put_varint(b, n))) return rc;
  return n ? ox_buf_append(b, p, n) : 0;
}

int ox_pb_put_str(ox_buf_t *b, uint32_t num, const char *s) {
  return ox_pb_put_bytes(b, num, s, strlen(s));
}

int ox_pb_put_fixed64(ox_buf_t *b, uint32_t num, uint64_t v) {
  char tmp[8];
  for (int i = 0; i < 8; i++) tmp[i] = (char)(v >> (8 * i));
  int rc = ox_pb_put_tag(b, num, OX_PB_I64);
  return rc ? rc : ox_buf_append(b, tmp, 8);
}

long ox_pb_begin(ox_buf_t *b, uint32_t num) {
  int rc = ox_pb_put_tag(b, num, OX_PB_LEN);
  if (rc) return rc;
  if ((rc = ox_buf_reserve(b, 5))) return rc;
  long mark = (long)b->len;
  memset(b->data + b->len, 0, 5);
  b->len += 5;
  return mark;
}

int ox_pb_end(ox_buf_t *b, long mark) {
  size_t len = b->len - (size_t)mark - 5;
  if (len > 0xffffffffu) return OX_EOVERFLOW;
  /* Five bytes whatever the length: the first four carry a continuation bit, which protobuf
   * readers accept as a non-minimal varint. */
  unsigned char *p = (unsigned char *)b->data + mark;
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(((len >> (7 * i)) & 0x7f) | 0x80);
  p[4] = (unsigned char)(len >> 28);
  return 0;
}
