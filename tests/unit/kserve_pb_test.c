/* kserve_pb_test.c: the inference messages (src/proto/kserve_pb.c). Requests serialized by
 * tritonclient's protobuf classes (tools/gen_kserve_pb_vectors.py, kserve_pb_vectors.h) decode
 * to the binary form numpy computed for every datatype, raw and typed; responses encode to
 * exactly the bytes protobuf's serializer writes for the same fields. Hand-built messages
 * cover what a serializer never writes (unpacked and split repeated fields, unaligned raw
 * contents) and every refusal, each with its message; arena failures, every prefix of a
 * message, and messages flush against a guard page check the bounds. */
#include "core/error.h"
#include "kserve_pb_vectors.h"
#include "proto/kserve_pb.h"
#include "proto/pb.h"
#include "test.h"

/* A copy of msg at offset `shift` from a 64-byte boundary (alignment made deterministic). */
static char *place(const void *msg, size_t len, size_t shift) {
  char *m = aligned_alloc(64, (len + shift + 63) / 64 * 64 + 64);
  if (len) memcpy(m + shift, msg, len);
  return m;
}

static const ox_infer_param_t *find_param(const ox_pb_infer_request_t *r, const char *key) {
  for (size_t i = 0; i < r->num_params; i++)
    if (ox_slice_eq(r->params[i].key, key)) return &r->params[i];
  return NULL;
}

static const char *kind_name(ox_param_kind_t k) {
  return k == OX_PARAM_STRING   ? "STRING"
         : k == OX_PARAM_NUMBER ? "NUMBER"
         : k == OX_PARAM_BOOL   ? "BOOL"
         : k == OX_PARAM_NULL   ? "NULL"
                                : "OTHER";
}

static int slice_is(ox_slice_t s, const char *lit) {
  return ox_slice_eq(s, lit);
}

TEST(test_python_requests) {
  for (size_t v = 0; v < sizeof kv_requests / sizeof kv_requests[0]; v++) {
    const kv_request_t *e = &kv_requests[v];
    for (size_t shift = 0; shift < 2; shift++) { /* aligned, then every raw field odd */
      char *m = place(e->msg, e->len, shift);
      ox_arena_t a;
      ox_arena_init(&a);
      ox_pb_infer_request_t r;
      char err[256] = "";
      int rc = ox_pb_infer_request_decode(m + shift, e->len, &a, &r, err, sizeof err);
      if (rc) fprintf(stderr, "  %s: %s\n", e->label, err);
      CHECK_INT(rc, 0);
      if (rc == 0) {
        CHECK(slice_is(r.model_name, e->model));
        CHECK(slice_is(r.model_version, e->version));
        CHECK(slice_is(r.id, e->id));
        CHECK_INT(r.num_inputs, e->num_inputs);
        for (size_t i = 0; i < r.num_inputs && i < e->num_inputs; i++) {
          const ox_infer_input_t *in = &r.inputs[i];
          const kv_tensor_t *t = &e->inputs[i];
          CHECK(slice_is(in->name, t->name));
          CHECK_STR(ox_dtype_name(in->dtype), t->dtype);
          CHECK_INT(in->rank, t->rank);
          for (int k = 0; k < t->rank; k++) CHECK_INT(in->shape[k], t->shape[k]);
          CHECK_INT(in->has_binary, 1);
          CHECK_INT(in->binary_size, t->bin_len);
          CHECK_INT(in->binary.len, t->bin_len);
          if (in->binary.len == t->bin_len && t->bin_len)
            CHECK_MEM(in->binary.ptr, t->bin, t->bin_len);
          if (memcmp(in->binary.ptr, t->bin, t->bin_len) != 0)
            fprintf(stderr, "  %s input %s differs\n", e->label, t->name);
          size_t es = ox_dtype_size(in->dtype);
          if (es > 1) CHECK(((uintptr_t)in->binary.ptr & (es - 1)) == 0);
          CHECK(in->data_json.ptr == NULL);
        }
        CHECK_INT(r.num_outputs, e->num_outputs);
        for (size_t i = 0; i < r.num_outputs && i < e->num_outputs; i++) {
          CHECK(slice_is(r.outputs[i].name, e->outputs[i]));
          CHECK_INT(r.outputs[i].binary_data, -1);
        }
        CHECK_INT(r.num_params, e->num_params);
        for (size_t i = 0; i < e->num_params; i++) {
          const ox_infer_param_t *p = find_param(&r, e->params[i].key);
          CHECK(p != NULL);
          if (!p) continue;
          CHECK_STR(kind_name(p->kind), e->params[i].kind);
          CHECK(slice_is(p->value, e->params[i].text));
        }
        int want_timeout = find_param(&r, "timeout") != NULL;
        CHECK_INT(r.has_timeout, want_timeout);
        if (want_timeout) CHECK_INT(r.timeout_us, 1500);
      }
      ox_arena_free(&a);
      free(m);
    }
  }
}

/* The raw vector: contents in place when aligned; each one copied when shifted by one. */
TEST(test_raw_zero_copy_and_copies) {
  const kv_request_t *e = &kv_requests[0];
  CHECK_STR(e->label, "raw_all");
  size_t multi = 0; /* raw inputs with an element size above one */
  for (size_t i = 0; i < e->num_inputs; i++) {
    ox_dtype_t dt = ox_dtype_from_name(e->inputs[i].dtype, strlen(e->inputs[i].dtype));
    multi += ox_dtype_size(dt) > 1;
  }
  size_t copies[8];
  for (size_t shift = 0; shift < 8; shift++) {
    char *m = place(e->msg, e->len, shift);
    ox_arena_t a;
    ox_arena_init(&a);
    ox_pb_infer_request_t r;
    char err[256];
    CHECK_INT(ox_pb_infer_request_decode(m + shift, e->len, &a, &r, err, sizeof err), 0);
    copies[shift] = r.raw_copies;
    size_t inside = 0, misaligned_in_msg = 0;
    for (size_t i = 0; i < r.num_inputs; i++) {
      const char *p = r.inputs[i].binary.ptr;
      size_t es = ox_dtype_size(r.inputs[i].dtype);
      int in_msg = p >= m + shift && p < m + shift + e->len;
      if (r.inputs[i].binary.len && in_msg) inside++;
      if (in_msg && es > 1 && ((uintptr_t)p & (es - 1))) misaligned_in_msg++;
    }
    CHECK_INT(misaligned_in_msg, 0);
    CHECK_INT(inside + r.raw_copies, r.num_inputs);
    CHECK(r.raw_copies <= multi);
    ox_arena_free(&a);
    free(m);
  }
  /* Over 8 shifts every multi-byte input is misaligned at least once. */
  size_t sum = 0;
  for (int i = 0; i < 8; i++) sum += copies[i];
  CHECK(sum >= multi);
}

/* ---- hand-built messages ---- */

static void put_input(ox_buf_t *m, const char *name, const char *dt, const int64_t *shape, int rank,
                      const ox_buf_t *contents) {
  ox_buf_t t, s;
  ox_buf_init(&t);
  ox_buf_init(&s);
  if (name) ox_pb_put_str(&t, 1, name);
  if (dt) ox_pb_put_str(&t, 2, dt);
  for (int i = 0; i < rank; i++) ox_pb_put_varint(&s, (uint64_t)shape[i]);
  if (rank) ox_pb_put_bytes(&t, 3, s.data, s.len);
  if (contents) ox_pb_put_bytes(&t, 5, contents->data, contents->len);
  ox_pb_put_bytes(m, 5, t.data, t.len);
  ox_buf_free(&t);
  ox_buf_free(&s);
}

static void put_param(ox_buf_t *m, const char *key, int field, int wire, uint64_t v,
                      const char *s) {
  ox_buf_t val, e;
  ox_buf_init(&val);
  ox_buf_init(&e);
  if (wire == OX_PB_LEN)
    ox_pb_put_str(&val, (uint32_t)field, s);
  else if (wire == OX_PB_I64)
    ox_pb_put_fixed64(&val, (uint32_t)field, v);
  else
    ox_pb_put_uint(&val, (uint32_t)field, v);
  ox_pb_put_str(&e, 1, key);
  ox_pb_put_bytes(&e, 2, val.data, val.len);
  ox_pb_put_bytes(m, 4, e.data, e.len);
  ox_buf_free(&val);
  ox_buf_free(&e);
}

/* Decodes b (copied to a 64-byte boundary); returns the code, message in err. */
static int decode(const ox_buf_t *b, ox_arena_t *a, ox_pb_infer_request_t *r, char *err, size_t cap,
                  char **keep) {
  char *m = place(b->data, b->len, 0);
  int rc = ox_pb_infer_request_decode(m, b->len, a, r, err, cap);
  if (keep)
    *keep = m;
  else
    free(m);
  return rc;
}

TEST(test_unpacked_split_and_ranges) {
  ox_buf_t m, c;
  ox_buf_init(&m);
  ox_buf_init(&c);
  /* INT16 in three pieces: an unpacked -1 (ten bytes, sign-extended), a packed {2, -32768},
   * another unpacked 32767. */
  ox_pb_put_uint(&c, 2, (uint64_t)(int64_t)-1);
  ox_buf_t pk;
  ox_buf_init(&pk);
  ox_pb_put_varint(&pk, 2);
  ox_pb_put_varint(&pk, (uint64_t)(int64_t)-32768);
  ox_pb_put_bytes(&c, 2, pk.data, pk.len);
  ox_pb_put_uint(&c, 2, 32767);
  int64_t sh4[] = {4};
  put_input(&m, "i16", "INT16", sh4, 1, &c);
  /* FP32 unpacked fixed32 values. */
  ox_buf_t c2;
  ox_buf_init(&c2);
  float fv[2] = {1.25f, -8.0f};
  for (int i = 0; i < 2; i++) {
    uint32_t u;
    memcpy(&u, &fv[i], 4);
    ox_pb_put_tag(&c2, 6, OX_PB_I32);
    ox_buf_append(&c2, &u, 4);
  }
  /* Shape unpacked: two varint fields 1 and 2. */
  ox_buf_t t;
  ox_buf_init(&t);
  ox_pb_put_str(&t, 1, "f");
  ox_pb_put_str(&t, 2, "FP32");
  ox_pb_put_uint(&t, 3, 1);
  ox_pb_put_uint(&t, 3, 2);
  ox_pb_put_tag(&t, 99, OX_PB_I64); /* an unknown field, skipped */
  ox_buf_append(&t, "12345678", 8);
  ox_pb_put_bytes(&t, 5, c2.data, c2.len);
  ox_pb_put_bytes(&m, 5, t.data, t.len);
  /* An unknown top-level field and an empty InferParameter (no member set). */
  ox_pb_put_uint(&m, 1000, 5);
  ox_buf_t e;
  ox_buf_init(&e);
  ox_pb_put_str(&e, 1, "nothing");
  ox_pb_put_bytes(&e, 2, "", 0);
  ox_pb_put_bytes(&m, 4, e.data, e.len);
  /* A double parameter: its %.17g text. */
  put_param(&m, "pi", 4, OX_PB_I64, 0x400921fb54442d18ull, NULL);
  ox_arena_t a;
  ox_arena_init(&a);
  ox_pb_infer_request_t r;
  char err[256] = "", *keep = NULL;
  int rc = decode(&m, &a, &r, err, sizeof err, &keep); /* the slices point into keep */
  if (rc) fprintf(stderr, "  %s\n", err);
  CHECK_INT(rc, 0);
  if (rc == 0) {
    CHECK_INT(r.num_inputs, 2);
    int16_t i16[4];
    CHECK_INT(r.inputs[0].binary.len, 8);
    memcpy(i16, r.inputs[0].binary.ptr, 8);
    CHECK_INT(i16[0], -1);
    CHECK_INT(i16[1], 2);
    CHECK_INT(i16[2], -32768);
    CHECK_INT(i16[3], 32767);
    CHECK_INT(r.inputs[1].rank, 2);
    CHECK_INT(r.inputs[1].count, 2);
    CHECK_INT(r.inputs[1].binary.len, 8);
    CHECK_MEM(r.inputs[1].binary.ptr, fv, 8);
    CHECK_INT(r.num_params, 2);
    CHECK_INT(r.params[0].kind, OX_PARAM_NULL);
    CHECK(slice_is(r.params[0].key, "nothing"));
    CHECK_INT(r.params[1].kind, OX_PARAM_NUMBER);
    CHECK(slice_is(r.params[1].value, "3.1415926535897931"));
    CHECK_INT(r.has_timeout, 0);
  }
  free(keep);
  ox_arena_free(&a);
  ox_buf_free(&m);
  ox_buf_free(&c);
  ox_buf_free(&c2);
  ox_buf_free(&pk);
  ox_buf_free(&t);
  ox_buf_free(&e);
}

/* One contents field of values for a 1-D input of n elements; returns the decode's code. */
static int typed_one(const char *dt, int field, const uint64_t *vals, int n, char *err, size_t cap,
                     ox_slice_t *bin) {
  ox_buf_t m, c, pk;
  ox_buf_init(&m);
  ox_buf_init(&c);
  ox_buf_init(&pk);
  for (int i = 0; i < n; i++) ox_pb_put_varint(&pk, vals[i]);
  ox_pb_put_bytes(&c, (uint32_t)field, pk.data, pk.len);
  int64_t sh[] = {n};
  put_input(&m, "x", dt, sh, 1, &c);
  ox_arena_t a;
  ox_arena_init(&a);
  ox_pb_infer_request_t r;
  char *keep;
  int rc = decode(&m, &a, &r, err, cap, &keep);
  static char copy[64];
  if (rc == 0 && bin) {
    size_t l = r.inputs[0].binary.len < sizeof copy ? r.inputs[0].binary.len : sizeof copy;
    memcpy(copy, r.inputs[0].binary.ptr, l);
    *bin = ox_slice(copy, l);
  }
  free(keep);
  ox_arena_free(&a);
  ox_buf_free(&m);
  ox_buf_free(&c);
  ox_buf_free(&pk);
  return rc;
}

/* FP32 contents: one packed piece holding every element is used in place (when aligned);
 * a packed piece with unpacked values beside it is joined into a copy. */
TEST(test_fp32_packed_in_place) {
  float fv[3] = {1.0f, 2.0f, -3.5f};
  for (int mixed = 0; mixed < 2; mixed++) {
    ox_buf_t m, c;
    ox_buf_init(&m);
    ox_buf_init(&c);
    ox_pb_put_bytes(&c, 6, fv, mixed ? 8 : 12);
    if (mixed) {
      ox_pb_put_tag(&c, 6, OX_PB_I32);
      ox_buf_append(&c, &fv[2], 4);
    }
    int64_t sh[] = {3};
    put_input(&m, "f", "FP32", sh, 1, &c);
    int in_place = 0;
    for (size_t shift = 0; shift < 4; shift++) {
      char *p = place(m.data, m.len, shift);
      ox_arena_t a;
      ox_arena_init(&a);
      ox_pb_infer_request_t r;
      char err[128];
      CHECK_INT(ox_pb_infer_request_decode(p + shift, m.len, &a, &r, err, sizeof err), 0);
      CHECK_INT(r.inputs[0].binary.len, 12);
      if (r.inputs[0].binary.len == 12) CHECK_MEM(r.inputs[0].binary.ptr, fv, 12);
      CHECK(((uintptr_t)r.inputs[0].binary.ptr & 3) == 0);
      in_place += r.inputs[0].binary.ptr >= p && r.inputs[0].binary.ptr < p + shift + m.len;
      CHECK_INT(r.raw_copies, 0); /* only raw contents count */
      ox_arena_free(&a);
      free(p);
    }
    CHECK_INT(in_place, mixed ? 0 : 1); /* one shift in four aligns the floats */
    ox_buf_free(&m);
    ox_buf_free(&c);
  }
}

TEST(test_typed_ranges) {
  char err[256];
  ox_slice_t bin;
  uint64_t ok8[] = {(uint64_t)(int64_t)-128, 127};
  CHECK_INT(typed_one("INT8", 2, ok8, 2, err, sizeof err, &bin), 0);
  CHECK(bin.len == 2 && (signed char)bin.ptr[0] == -128 && bin.ptr[1] == 127);
  uint64_t bad8[] = {0, 128};
  CHECK_INT(typed_one("INT8", 2, bad8, 2, err, sizeof err, NULL), OX_EINVALID);
  CHECK_STR(err, "input 'x': element 1 is out of range for INT8");
  uint64_t bad8n[] = {(uint64_t)(int64_t)-129};
  CHECK_INT(typed_one("INT8", 2, bad8n, 1, err, sizeof err, NULL), OX_EINVALID);
  uint64_t badu16[] = {65536};
  CHECK_INT(typed_one("UINT16", 4, badu16, 1, err, sizeof err, NULL), OX_EINVALID);
  CHECK_STR(err, "input 'x': element 0 is out of range for UINT16");
  uint64_t badu8[] = {256};
  CHECK_INT(typed_one("UINT8", 4, badu8, 1, err, sizeof err, NULL), OX_EINVALID);
  uint64_t oku8[] = {255, 0};
  CHECK_INT(typed_one("UINT8", 4, oku8, 2, err, sizeof err, &bin), 0);
  CHECK(bin.len == 2 && (unsigned char)bin.ptr[0] == 255);
  /* A bool other than 0/1 is true (protobuf's rule), stored as 1. */
  uint64_t b[] = {2, 0};
  CHECK_INT(typed_one("BOOL", 1, b, 2, err, sizeof err, &bin), 0);
  CHECK(bin.len == 2 && bin.ptr[0] == 1 && bin.ptr[1] == 0);
  /* The wrong contents field for the datatype; FP16 and BF16 have none. */
  CHECK_INT(typed_one("INT32", 3, b, 2, err, sizeof err, NULL), OX_EINVALID);
  CHECK_STR(err, "input 'x': int64_contents given for datatype INT32");
  CHECK_INT(typed_one("FP16", 4, b, 2, err, sizeof err, NULL), OX_EINVALID);
  CHECK_STR(err, "input 'x': datatype FP16 takes raw_input_contents only");
  CHECK_INT(typed_one("BF16", 2, b, 2, err, sizeof err, NULL), OX_EINVALID);
  /* Element count against shape. */
  ox_buf_t m, c, pk;
  ox_buf_init(&m);
  ox_buf_init(&c);
  ox_buf_init(&pk);
  ox_pb_put_varint(&pk, 1);
  ox_pb_put_bytes(&c, 3, pk.data, pk.len);
  int64_t sh[] = {2};
  put_input(&m, "y", "INT64", sh, 1, &c);
  ox_arena_t a;
  ox_arena_init(&a);
  ox_pb_infer_request_t r;
  CHECK_INT(decode(&m, &a, &r, err, sizeof err, NULL), OX_EINVALID);
  CHECK_STR(err, "input 'y': int64_contents has 1 elements, shape needs 2");
  ox_arena_free(&a);
  ox_buf_free(&m);
  ox_buf_free(&c);
  ox_buf_free(&pk);
}

/* Each case builds a message with build(); decoding must fail with rc and the message. */
typedef void (*build_fn)(ox_buf_t *);
static void b_unknown_dt(ox_buf_t *m) {
  int64_t sh[] = {1};
  put_input(m, "x", "FLOAT", sh, 1, NULL);
  ox_pb_put_bytes(m, 7, "abcd", 4);
}
static void b_missing_dt(ox_buf_t *m) {
  put_input(m, "x", NULL, NULL, 0, NULL);
}
static void b_missing_name(ox_buf_t *m) {
  put_input(m, NULL, "FP32", NULL, 0, NULL);
}
static void b_negative_dim(ox_buf_t *m) {
  int64_t sh[] = {2, -1};
  put_input(m, "x", "FP32", sh, 2, NULL);
}
static void b_rank17(ox_buf_t *m) {
  int64_t sh[17];
  for (int i = 0; i < 17; i++) sh[i] = 1;
  put_input(m, "x", "FP32", sh, 17, NULL);
}
static void b_count_overflow(ox_buf_t *m) {
  int64_t sh[] = {INT64_MAX, 4};
  put_input(m, "x", "FP32", sh, 2, NULL);
}
static void b_bytes_overflow(ox_buf_t *m) {
  int64_t sh[] = {INT64_MAX, 2};
  put_input(m, "x", "INT64", sh, 2, NULL);
  ox_pb_put_bytes(m, 7, "", 0);
}
static void b_raw_missing(ox_buf_t *m) {
  int64_t sh[] = {1};
  put_input(m, "a", "FP32", sh, 1, NULL);
  put_input(m, "b", "FP32", sh, 1, NULL);
  ox_pb_put_bytes(m, 7, "abcd", 4);
}
static void b_raw_extra(ox_buf_t *m) {
  int64_t sh[] = {1};
  put_input(m, "a", "FP32", sh, 1, NULL);
  ox_pb_put_bytes(m, 7, "abcd", 4);
  ox_pb_put_bytes(m, 7, "abcd", 4);
}
static void b_raw_size(ox_buf_t *m) {
  int64_t sh[] = {2};
  put_input(m, "a", "FP32", sh, 1, NULL);
  ox_pb_put_bytes(m, 7, "abcdefg", 7);
}
static void b_both(ox_buf_t *m) {
  int64_t sh[] = {1};
  ox_buf_t c;
  ox_buf_init(&c);
  ox_pb_put_uint(&c, 2, 1);
  put_input(m, "a", "INT32", sh, 1, &c);
  ox_pb_put_bytes(m, 7, "abcd", 4);
  ox_buf_free(&c);
}
static void b_neither(ox_buf_t *m) {
  int64_t sh[] = {1};
  put_input(m, "a", "INT32", sh, 1, NULL);
}
static void b_dup_input(ox_buf_t *m) {
  int64_t sh[] = {1};
  put_input(m, "a", "FP32", sh, 1, NULL);
  put_input(m, "b", "FP32", sh, 1, NULL);
  put_input(m, "a", "FP32", sh, 1, NULL);
}
static void b_dup_output(ox_buf_t *m) {
  ox_buf_t o;
  ox_buf_init(&o);
  ox_pb_put_str(&o, 1, "y");
  ox_pb_put_bytes(m, 6, o.data, o.len);
  ox_pb_put_bytes(m, 6, o.data, o.len);
  ox_buf_free(&o);
}
/* An output "y" with the parameter "classification" set as InferParameter field `field`. */
static void put_out_cls(ox_buf_t *m, int field, int wire, uint64_t v, const char *str) {
  ox_buf_t o, val, e;
  ox_buf_init(&o);
  ox_buf_init(&val);
  ox_buf_init(&e);
  if (wire == OX_PB_LEN)
    ox_pb_put_str(&val, (uint32_t)field, str);
  else
    ox_pb_put_uint(&val, (uint32_t)field, v);
  ox_pb_put_str(&e, 1, "classification");
  ox_pb_put_bytes(&e, 2, val.data, val.len);
  ox_pb_put_bytes(&o, 2, e.data, e.len); /* the parameter before the name: order is free */
  ox_pb_put_str(&o, 1, "y");
  ox_pb_put_bytes(m, 6, o.data, o.len);
  ox_buf_free(&o);
  ox_buf_free(&val);
  ox_buf_free(&e);
}
static void b_cls_zero(ox_buf_t *m) {
  put_out_cls(m, 2, OX_PB_VARINT, 0, NULL);
}
static void b_cls_neg(ox_buf_t *m) {
  put_out_cls(m, 2, OX_PB_VARINT, (uint64_t)(int64_t)-3, NULL);
}
static void b_cls_str(ox_buf_t *m) {
  put_out_cls(m, 3, OX_PB_LEN, 0, "3");
}
static void b_cls_bool(ox_buf_t *m) {
  put_out_cls(m, 1, OX_PB_VARINT, 1, NULL);
}

TEST(test_output_classification) {
  ox_buf_t m;
  ox_buf_init(&m);
  put_out_cls(&m, 2, OX_PB_VARINT, 5, NULL); /* int64_param, as tritonclient sends it */
  ox_buf_t o;
  ox_buf_init(&o);
  ox_pb_put_str(&o, 1, "z");
  ox_pb_put_bytes(&m, 6, o.data, o.len);
  ox_arena_t a;
  ox_arena_init(&a);
  ox_pb_infer_request_t r;
  char err[256];
  char *msg = NULL; /* the names are slices of the message: kept until checked */
  CHECK_INT(decode(&m, &a, &r, err, sizeof err, &msg), 0);
  CHECK_INT(r.num_outputs, 2);
  CHECK(slice_is(r.outputs[0].name, "y"));
  CHECK_INT(r.outputs[0].classification, 5);
  CHECK_INT(r.outputs[1].classification, 0);
  free(msg);
  ox_arena_free(&a);
  ox_buf_free(&m);
  ox_buf_free(&o);
}

static void b_dup_param(ox_buf_t *m) {
  put_param(m, "k", 1, OX_PB_VARINT, 1, NULL);
  put_param(m, "k", 3, OX_PB_LEN, 0, "v");
}
static void b_timeout_neg(ox_buf_t *m) {
  put_param(m, "timeout", 2, OX_PB_VARINT, (uint64_t)(int64_t)-5, NULL);
}
static void b_timeout_str(ox_buf_t *m) {
  put_param(m, "timeout", 3, OX_PB_LEN, 0, "100");
}
static void b_param_wire(ox_buf_t *m) {
  put_param(m, "k", 4, OX_PB_VARINT, 1, NULL); /* double_param as a varint */
}
static void b_param_nan(ox_buf_t *m) {
  put_param(m, "r", 4, OX_PB_I64, 0x7ff8000000000000ull, NULL);
}
static void b_param_inf(ox_buf_t *m) {
  put_param(m, "r", 4, OX_PB_I64, 0xfff0000000000000ull, NULL);
}
static void b_bytes_cut(ox_buf_t *m) {
  int64_t sh[] = {1};
  put_input(m, "s", "BYTES", sh, 1, NULL);
  ox_pb_put_bytes(m, 7,
                  "\x05\x00\x00\x00"
                  "abc",
                  7);
}
static void b_bytes_count(ox_buf_t *m) {
  int64_t sh[] = {2};
  put_input(m, "s", "BYTES", sh, 1, NULL);
  ox_pb_put_bytes(m, 7,
                  "\x01\x00\x00\x00"
                  "a",
                  5);
}
static void b_bytes_short_len(ox_buf_t *m) {
  int64_t sh[] = {1};
  put_input(m, "s", "BYTES", sh, 1, NULL);
  ox_pb_put_bytes(m, 7, "\x00\x00\x00\x00\x01", 5);
}
static void b_bad_utf8(ox_buf_t *m) {
  ox_pb_put_str(m, 1, "mod\xc3");
}
static void b_model_wire(ox_buf_t *m) {
  ox_pb_put_uint(m, 1, 5);
}
static void b_truncated(ox_buf_t *m) {
  int64_t sh[] = {1};
  put_input(m, "a", "FP32", sh, 1, NULL);
  m->len--;
}
static void b_group(ox_buf_t *m) {
  ox_buf_append(m, "\x0b\x0c", 2);
}
static void b_many_inputs(ox_buf_t *m) {
  for (int i = 0; i <= OX_MAX_IO; i++) ox_pb_put_bytes(m, 5, "", 0);
}
static void b_packed_fp32_len(ox_buf_t *m) {
  int64_t sh[] = {1};
  ox_buf_t c;
  ox_buf_init(&c);
  ox_pb_put_bytes(&c, 6, "abcde", 5);
  put_input(m, "f", "FP32", sh, 1, &c);
  ox_buf_free(&c);
}
static void b_contents_twice(ox_buf_t *m) {
  ox_buf_t t;
  ox_buf_init(&t);
  ox_pb_put_str(&t, 1, "a");
  ox_pb_put_str(&t, 2, "INT32");
  ox_pb_put_bytes(&t, 5, "", 0);
  ox_pb_put_bytes(&t, 5, "", 0);
  ox_pb_put_bytes(m, 5, t.data, t.len);
  ox_buf_free(&t);
}

TEST(test_refusals) {
  const struct {
    build_fn build;
    int rc;
    const char *msg;
  } cases[] = {
      {b_unknown_dt, OX_EINVALID, "input 'x': unknown datatype 'FLOAT'"},
      {b_missing_dt, OX_EINVALID, "input 'x': missing datatype"},
      {b_missing_name, OX_EINVALID, "inputs[0]: missing name"},
      {b_negative_dim, OX_EINVALID, "input 'x': shape has a negative dimension"},
      {b_rank17, OX_EINVALID, "inputs[0]: more than 16 dimensions"},
      {b_count_overflow, OX_EOVERFLOW, "input 'x': shape's element count overflows"},
      {b_bytes_overflow, OX_EOVERFLOW, "input 'x': shape's byte size overflows"},
      {b_raw_missing, OX_EINVALID, "1 raw_input_contents for 2 inputs"},
      {b_raw_extra, OX_EINVALID, "2 raw_input_contents for 1 inputs"},
      {b_raw_size, OX_EINVALID,
       "input 'a': raw_input_contents has 7 bytes, shape and datatype need 8"},
      {b_both, OX_EINVALID, "input 'a': both contents and raw_input_contents"},
      {b_neither, OX_EINVALID, "input 'a': no contents and no raw_input_contents"},
      {b_dup_input, OX_EINVALID, "duplicate input 'a'"},
      {b_dup_output, OX_EINVALID, "duplicate output 'y'"},
      {b_dup_param, OX_EINVALID, "duplicate parameter 'k'"},
      {b_cls_zero, OX_EINVALID, "output 'y': classification must be a positive integer"},
      {b_cls_neg, OX_EINVALID, "output 'y': classification must be a positive integer"},
      {b_cls_str, OX_EINVALID, "output 'y': classification must be a positive integer"},
      {b_cls_bool, OX_EINVALID, "output 'y': classification must be a positive integer"},
      {b_timeout_neg, OX_EINVALID, "parameter 'timeout' must be a non-negative integer"},
      {b_timeout_str, OX_EINVALID, "parameter 'timeout' must be a non-negative integer"},
      {b_param_wire, OX_EINVALID, "parameter 'k': wrong wire type 0"},
      {b_param_nan, OX_EINVALID, "parameter 'r' is not a finite number"},
      {b_param_inf, OX_EINVALID, "parameter 'r' is not a finite number"},
      {b_bytes_cut, OX_EINVALID, "input 's': BYTES element 0 runs past its data"},
      {b_bytes_count, OX_EINVALID, "input 's': 1 BYTES elements for a shape of 2"},
      {b_bytes_short_len, OX_EINVALID, "input 's': BYTES element 1 has a cut length"},
      {b_bad_utf8, OX_EINVALID, "model_name is not valid UTF-8"},
      {b_model_wire, OX_EINVALID, "model_name: wrong wire type 0"},
      {b_truncated, OX_EINVALID, "malformed protobuf message"},
      {b_group, OX_EINVALID, "malformed protobuf message"},
      {b_many_inputs, OX_EINVALID, "more than 256 inputs"},
      {b_packed_fp32_len, OX_EINVALID,
       "input 'f': fp32_contents: packed length 5 not a multiple of 4"},
      {b_contents_twice, OX_EINVALID, "inputs[0]: contents given twice"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ox_buf_t m;
    ox_buf_init(&m);
    cases[i].build(&m);
    ox_arena_t a;
    ox_arena_init(&a);
    ox_pb_infer_request_t r;
    char err[256];
    memset(err, 'X', sizeof err);
    int rc = decode(&m, &a, &r, err, sizeof err, NULL);
    CHECK_INT(rc, cases[i].rc);
    CHECK(memchr(err, 0, sizeof err) != NULL);
    if (memchr(err, 0, sizeof err) && strcmp(err, cases[i].msg) != 0)
      fprintf(stderr, "  case %zu: \"%s\" (expected \"%s\")\n", i, err, cases[i].msg);
    CHECK(memchr(err, 0, sizeof err) && strcmp(err, cases[i].msg) == 0);
    ox_arena_free(&a);
    ox_buf_free(&m);
  }
  /* A long name is cut in the message. */
  ox_buf_t m;
  ox_buf_init(&m);
  char name[200];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = 0;
  put_input(&m, name, "FP33", NULL, 0, NULL);
  ox_arena_t a;
  ox_arena_init(&a);
  ox_pb_infer_request_t r;
  char err[256];
  CHECK_INT(decode(&m, &a, &r, err, sizeof err, NULL), OX_EINVALID);
  CHECK(strstr(err, "nnn...': unknown datatype 'FP33'") != NULL && strlen(err) < 120);
  /* A tiny err buffer is still terminated. */
  char small[8];
  CHECK_INT(decode(&m, &a, &r, small, sizeof small, NULL), OX_EINVALID);
  CHECK_INT(strlen(small), 7);
  ox_arena_free(&a);
  ox_buf_free(&m);
}

TEST(test_empty_message) {
  ox_arena_t a;
  ox_arena_init(&a);
  ox_pb_infer_request_t r;
  char err[64];
  CHECK_INT(ox_pb_infer_request_decode("", 0, &a, &r, err, sizeof err), 0);
  CHECK_INT(r.num_inputs, 0);
  CHECK_INT(r.num_outputs, 0);
  CHECK(r.outputs == NULL && r.params == NULL);
  CHECK_INT(r.model_name.len, 0);
  ox_arena_free(&a);
}

/* The first raw contents' offset: where the decoder found them, from any prefix that holds
 * their length, and 0 from shorter prefixes or messages without raw contents. */
TEST(test_raw_offset) {
  for (size_t v = 0; v < sizeof kv_requests / sizeof kv_requests[0]; v++) {
    const kv_request_t *e = &kv_requests[v];
    const char *msg = (const char *)e->msg;
    /* Independently: walk the top level for field 7. */
    size_t want = 0;
    ox_pb_reader_t rd = ox_pb_reader(msg, e->len);
    ox_pb_field_t f;
    while (ox_pb_next(&rd, &f) == 1)
      if (f.num == 7 && !want) want = (size_t)(f.s.ptr - msg);
    CHECK_INT(ox_pb_infer_request_raw_offset(msg, e->len, e->len), want);
    size_t first_full = 0;
    for (size_t n = 0; n <= e->len; n++) {
      size_t off = ox_pb_infer_request_raw_offset(msg, n, e->len);
      CHECK(off == 0 || off == want);
      if (off && !first_full) first_full = n;
    }
    if (want) CHECK_INT(first_full, want); /* found as soon as its length is in the prefix */
    /* A message claimed longer than it is must not matter to a walk within the prefix. */
    if (want) CHECK_INT(ox_pb_infer_request_raw_offset(msg, e->len, e->len + 100), want);
    /* Claimed shorter: the raw field no longer fits. */
    if (want) CHECK_INT(ox_pb_infer_request_raw_offset(msg, want, want), 0);
  }
  CHECK_INT(ox_pb_infer_request_raw_offset("\x0b", 1, 1), 0);
  CHECK_INT(ox_pb_infer_request_raw_offset("\x3a\x02xy", 4, 4), 2);
}

/* Encoding: head + iov joined equals protobuf's own bytes. */
static void encode_join(const kv_response_t *e, int stream, ox_buf_t *joined,
                        const void **data_ptrs, int *points_at_data) {
  ox_pb_out_tensor_t outs[8];
  int64_t shapes[8][4];
  for (size_t i = 0; i < e->num_outputs; i++) {
    const kv_tensor_t *t = &e->outputs[i];
    for (int k = 0; k < t->rank; k++) shapes[i][k] = t->shape[k];
    outs[i] = (ox_pb_out_tensor_t){t->name, ox_dtype_from_name(t->dtype, strlen(t->dtype)),
                                   t->rank, shapes[i],
                                   t->bin,  t->bin_len};
    data_ptrs[i] = t->bin;
  }
  ox_pb_param_t ps[8];
  for (size_t i = 0; i < e->num_params; i++) {
    const kv_param_t *p = &e->params[i];
    ps[i] = (ox_pb_param_t){p->key, OX_PARAM_STRING, 0, 0, ox_slice(p->text, strlen(p->text))};
    if (!strcmp(p->kind, "BOOL")) {
      ps[i].kind = OX_PARAM_BOOL;
      ps[i].b = !strcmp(p->text, "true");
    } else if (!strcmp(p->kind, "NUMBER")) {
      ps[i].kind = OX_PARAM_NUMBER;
      ps[i].i64 = strtoll(p->text, NULL, 10);
    }
  }
  ox_pb_infer_response_t r = {e->model,     e->version,     ox_slice(e->id, strlen(e->id)),
                              outs,         e->num_outputs, ps,
                              e->num_params};
  ox_buf_t head, tail;
  ox_buf_init(&head);
  ox_buf_init(&tail);
  ox_buf_append(&tail, "prior", 5); /* encode appends: what was there stays */
  struct iovec iov[16];
  int n = -1;
  CHECK_INT(ox_pb_infer_response_encode(&r, stream, &head, &tail, iov, &n), 0);
  CHECK_INT(n, 2 * (int)e->num_outputs);
  CHECK_MEM(tail.data, "prior", 5);
  ox_buf_append(joined, head.data, head.len);
  *points_at_data = 1;
  for (int i = 0; i < n; i++) {
    if (i % 2 == 0)
      CHECK((char *)iov[i].iov_base >= tail.data + 5 &&
            (char *)iov[i].iov_base + iov[i].iov_len <= tail.data + tail.len);
    else if (iov[i].iov_base != data_ptrs[i / 2])
      *points_at_data = 0;
    if (iov[i].iov_len) ox_buf_append(joined, iov[i].iov_base, iov[i].iov_len);
  }
  ox_buf_free(&head);
  ox_buf_free(&tail);
}

TEST(test_python_responses) {
  for (size_t v = 0; v < sizeof kv_responses / sizeof kv_responses[0]; v++) {
    const kv_response_t *e = &kv_responses[v];
    for (int stream = 0; stream < 2; stream++) {
      ox_buf_t j;
      ox_buf_init(&j);
      const void *ptrs[8];
      int at = 0;
      encode_join(e, stream, &j, ptrs, &at);
      size_t len = stream ? e->stream_len : e->len;
      const unsigned char *want = stream ? e->stream : e->msg;
      CHECK_INT(j.len, len);
      if (j.len != len || memcmp(j.data, want, len) != 0)
        fprintf(stderr, "  %s stream=%d differs from protobuf's bytes\n", e->label, stream);
      CHECK(j.len == len && memcmp(j.data, want, len) == 0);
      CHECK_INT(at, 1); /* the outputs' bytes were pointed at, not copied */
      ox_buf_free(&j);
    }
  }
  ox_buf_t b;
  ox_buf_init(&b);
  CHECK_INT(ox_pb_stream_error_encode(&b, "model 'x' is not ready"), 0);
  CHECK_INT(b.len, sizeof kv_stream_error);
  CHECK(b.len == sizeof kv_stream_error && memcmp(b.data, kv_stream_error, b.len) == 0);
  ox_buf_free(&b);
}

/* Every allocation the decoder makes may fail: ENOMEM, never a crash or a half answer. */
TEST(test_arena_failures) {
  for (size_t v = 0; v < sizeof kv_requests / sizeof kv_requests[0]; v++) {
    const kv_request_t *e = &kv_requests[v];
    char *m = place(e->msg, e->len, 1);
    int ok = 0;
    for (long k = 1; k < 200 && !ok; k++) {
      ox_arena_t a;
      ox_arena_init(&a);
      ox_pb_infer_request_t r;
      char err[128];
      ox_arena_fail_after = k;
      int rc = ox_pb_infer_request_decode(m + 1, e->len, &a, &r, err, sizeof err);
      ox_arena_fail_after = 0;
      CHECK(rc == 0 || rc == OX_ENOMEM);
      ok = rc == 0;
      ox_arena_free(&a);
    }
    CHECK(ok);
    free(m);
  }
}

/* Every prefix of every vector, flush against a guard page: refused or decoded, no read past. */
TEST(test_prefixes_guard_page) {
  long pg;
  char *g = ox_test_guard_map(&pg);
  if (!g) return;
  int decoded_full = 0;
  for (size_t v = 0; v < sizeof kv_requests / sizeof kv_requests[0]; v++) {
    const kv_request_t *e = &kv_requests[v];
    if (e->len > (size_t)pg) continue;
    for (size_t n = 0; n <= e->len; n++) {
      char *p = g + pg - n;
      memcpy(p, e->msg, n);
      ox_arena_t a;
      ox_arena_init(&a);
      ox_pb_infer_request_t r;
      char err[128];
      int rc = ox_pb_infer_request_decode(p, n, &a, &r, err, sizeof err);
      CHECK(rc == 0 || rc == OX_EINVALID);
      if (n == e->len) decoded_full += rc == 0;
      (void)ox_pb_infer_request_raw_offset(p, n, n);
      ox_arena_free(&a);
    }
  }
  CHECK_INT(decoded_full, sizeof kv_requests / sizeof kv_requests[0]);
  ox_test_guard_free(g, pg);
}

TEST_MAIN(T(test_python_requests), T(test_raw_zero_copy_and_copies),
          T(test_unpacked_split_and_ranges), T(test_fp32_packed_in_place), T(test_typed_ranges),
          T(test_refusals), T(test_output_classification), T(test_empty_message),
          T(test_raw_offset), T(test_python_responses), T(test_arena_failures),
          T(test_prefixes_guard_page))
