/* pb_test.c: the protobuf wire reader and writer (src/proto/pb.c): varints of every length
 * written and read back, the 10-byte limit, every way a field can be cut short or malformed
 * (truncated varints, lengths past the end, groups and undefined wire types, field number 0),
 * the padded nested-message length, and fields placed flush against a guard page. */
#include "core/error.h"
#include "proto/pb.h"
#include "test.h"

TEST(test_varint_every_length) {
  for (int bits = 0; bits <= 64; bits++) {
    uint64_t vals[3];
    vals[0] = bits == 64 ? UINT64_MAX : (bits ? ((uint64_t)1 << bits) - 1 : 0); /* all ones */
    vals[1] = bits == 64 ? UINT64_MAX - 1 : (uint64_t)1 << bits;
    vals[2] = vals[0] ^ 0x5555555555555555ull >> (64 - (bits ? bits : 1));
    for (int k = 0; k < 3; k++) {
      ox_buf_t b;
      ox_buf_init(&b);
      CHECK_INT(ox_pb_put_varint(&b, vals[k]), 0);
      CHECK_INT(b.len, ox_pb_varint_size(vals[k]));
      uint64_t v = 1234;
      CHECK_INT(ox_pb_read_varint(b.data, b.data + b.len, &v), b.len);
      CHECK(v == vals[k]);
      /* Cut anywhere before its last byte: refused. */
      for (size_t cut = 0; cut < b.len; cut++)
        CHECK_INT(ox_pb_read_varint(b.data, b.data + cut, &v), 0);
      ox_buf_free(&b);
    }
  }
  CHECK_INT(ox_pb_varint_size(0), 1);
  CHECK_INT(ox_pb_varint_size(127), 1);
  CHECK_INT(ox_pb_varint_size(128), 2);
  CHECK_INT(ox_pb_varint_size(UINT64_MAX), 10);
}

TEST(test_varint_limits) {
  uint64_t v = 0;
  /* UINT64_MAX: nine 0xff then 0x01. */
  const char max[] = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01";
  CHECK_INT(ox_pb_read_varint(max, max + 10, &v), 10);
  CHECK(v == UINT64_MAX);
  /* A tenth byte above 1 would need a 65th bit. */
  const char over[] = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02";
  CHECK_INT(ox_pb_read_varint(over, over + 10, &v), 0);
  /* Eleven bytes (the tenth has a continuation bit): refused. */
  const char eleven[] = "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x81\x00";
  CHECK_INT(ox_pb_read_varint(eleven, eleven + 11, &v), 0);
  /* Non-minimal forms are valid protobuf (ox_pb_begin writes them). */
  const char padded[] = "\x85\x80\x80\x80\x00";
  CHECK_INT(ox_pb_read_varint(padded, padded + 5, &v), 5);
  CHECK_INT(v, 5);
  CHECK_INT(ox_pb_read_varint(padded, padded, &v), 0); /* empty */
}

/* Reads every field of s[0..n) into fs; returns the count or the error. */
static int read_all(const char *s, size_t n, ox_pb_field_t *fs, int max) {
  ox_pb_reader_t r = ox_pb_reader(s, n);
  int k = 0, rc = 0;
  while (k < max && (rc = ox_pb_next(&r, &fs[k])) == 1) k++;
  return rc < 0 ? rc : k;
}

TEST(test_fields_written_and_read) {
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_pb_put_uint(&b, 1, 150), 0);
  CHECK_INT(ox_pb_put_str(&b, 2, "testing"), 0);
  CHECK_INT(ox_pb_put_fixed64(&b, 3, 0x0102030405060708ull), 0);
  CHECK_INT(ox_pb_put_bytes(&b, 536870911, "", 0), 0); /* the largest field number */
  CHECK_INT(ox_pb_put_uint(&b, 16, UINT64_MAX), 0);
  /* The encoding's classic example: field 1 = 150 is 08 96 01. */
  CHECK_MEM(b.data, "\x08\x96\x01\x12\x07testing\x19\x08\x07\x06\x05\x04\x03\x02\x01", 20);
  ox_pb_field_t f[8];
  CHECK_INT(read_all(b.data, b.len, f, 8), 5);
  CHECK_INT(f[0].num, 1);
  CHECK_INT(f[0].wire, OX_PB_VARINT);
  CHECK_INT(f[0].u64, 150);
  CHECK_INT(f[1].num, 2);
  CHECK_INT(f[1].wire, OX_PB_LEN);
  CHECK(f[1].s.len == 7 && memcmp(f[1].s.ptr, "testing", 7) == 0 && f[1].s.ptr == b.data + 5);
  CHECK_INT(f[2].wire, OX_PB_I64);
  CHECK(f[2].u64 == 0x0102030405060708ull);
  CHECK_INT(f[3].num, 536870911);
  CHECK_INT(f[3].s.len, 0);
  CHECK_INT(f[4].num, 16);
  CHECK(f[4].u64 == UINT64_MAX);
  /* A fixed32 by hand. */
  const char i32[] = "\x25\x01\x02\x03\x04";
  CHECK_INT(read_all(i32, 5, f, 8), 1);
  CHECK_INT(f[0].wire, OX_PB_I32);
  CHECK_INT(f[0].u64, 0x04030201);
  ox_buf_free(&b);
}

TEST(test_malformed_refused) {
  struct {
    const char *s;
    size_t n;
  } bad[] = {
      {"\x08", 1},     /* varint field without its value */
      {"\x08\x80", 2}, /* value cut */
      {"\x80", 1},     /* tag cut */
      {"\x12\x05"
       "abcd",
       6},                                                  /* length one past the end */
      {"\x12\x80", 2},                                      /* length cut */
      {"\x12\xff\xff\xff\xff\x0f", 6},                      /* length 4 GiB */
      {"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11}, /* length 2^64 - 1 */
      {"\x19\x01\x02\x03\x04\x05\x06\x07", 8},              /* fixed64 cut */
      {"\x1d\x01\x02\x03", 4},                              /* fixed32 cut */
      {"\x0b\x0c", 2},                                      /* start group, end group */
      {"\x0c", 1},                                          /* end group */
      {"\x0e\x00", 2},                                      /* wire type 6 */
      {"\x0f\x00", 2},                                      /* wire type 7 */
      {"\x00\x00", 2},                                      /* field number 0 */
      {"\x02\x00", 2},                                      /* field 0, LEN */
      {"\xf8\xff\xff\xff\xff\x01\x00", 7}, /* field number 2^32 - 1 (beyond 2^29 - 1) */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ox_pb_field_t f[4];
    int rc = read_all(bad[i].s, bad[i].n, f, 4);
    if (rc != OX_EINVALID) fprintf(stderr, "  case %zu: %d\n", i, rc);
    CHECK_INT(rc, OX_EINVALID);
  }
  /* A good field before the bad one is still returned; the reader then stops. */
  ox_pb_reader_t r = ox_pb_reader("\x08\x01\x0b", 3);
  ox_pb_field_t f;
  CHECK_INT(ox_pb_next(&r, &f), 1);
  CHECK_INT(ox_pb_next(&r, &f), OX_EINVALID);
  /* Empty input: no fields. */
  r = ox_pb_reader("", 0);
  CHECK_INT(ox_pb_next(&r, &f), 0);
}

TEST(test_nested_begin_end) {
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_pb_put_uint(&b, 1, 7), 0);
  long mark = ox_pb_begin(&b, 5);
  CHECK(mark > 0);
  CHECK_INT(ox_pb_put_str(&b, 1, "inner"), 0);
  long mark2 = ox_pb_begin(&b, 2);
  for (int i = 0; i < 100; i++) CHECK_INT(ox_pb_put_uint(&b, 3, (uint64_t)i * 1000), 0);
  CHECK_INT(ox_pb_end(&b, mark2), 0);
  CHECK_INT(ox_pb_end(&b, mark), 0);
  ox_pb_field_t f[4];
  CHECK_INT(read_all(b.data, b.len, f, 4), 2);
  CHECK_INT(f[1].num, 5);
  CHECK(f[1].s.ptr == b.data + mark + 5 && f[1].s.ptr + f[1].s.len == b.data + b.len);
  ox_pb_field_t g[4];
  CHECK_INT(read_all(f[1].s.ptr, f[1].s.len, g, 4), 2);
  CHECK(g[0].s.len == 5 && memcmp(g[0].s.ptr, "inner", 5) == 0);
  ox_pb_field_t h[128];
  CHECK_INT(read_all(g[1].s.ptr, g[1].s.len, h, 128), 100);
  CHECK_INT(h[99].u64, 99000);
  /* Empty nested message: length 0 in five bytes. */
  ox_buf_t e;
  ox_buf_init(&e);
  long m3 = ox_pb_begin(&e, 1);
  CHECK_INT(ox_pb_end(&e, m3), 0);
  CHECK_INT(e.len, 6);
  CHECK_MEM(e.data, "\x0a\x80\x80\x80\x80\x00", 6);
  CHECK_INT(read_all(e.data, e.len, f, 4), 1);
  CHECK_INT(f[0].s.len, 0);
  ox_buf_free(&e);
  ox_buf_free(&b);
}

TEST(test_guard_page) {
  long pg;
  char *m = ox_test_guard_map(&pg);
  if (!m) return;
  /* Each malformed field ends exactly at the guard page: a read past it faults. */
  const struct {
    const char *s;
    size_t n;
  } cases[] = {{"\x08\xff\xff", 3},
               {"\x12\x03\x61", 3},
               {"\x19\x00\x00", 3},
               {"\xff", 1},
               {"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff", 10}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *p = m + pg - cases[i].n;
    memcpy(p, cases[i].s, cases[i].n);
    ox_pb_field_t f[2];
    CHECK_INT(read_all(p, cases[i].n, f, 2), OX_EINVALID);
  }
  char *p = m + pg - 4;
  memcpy(p, "\x12\x02hi", 4);
  ox_pb_field_t f[2];
  CHECK_INT(read_all(p, 4, f, 2), 1);
  ox_test_guard_free(m, pg);
}

TEST_MAIN(T(test_varint_every_length), T(test_varint_limits), T(test_fields_written_and_read),
          T(test_malformed_refused), T(test_nested_begin_end), T(test_guard_page))
