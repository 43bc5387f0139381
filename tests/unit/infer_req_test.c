/* infer_req_test.c: unit tests of the inference request parser (proto/infer_req.h) and the
 * JSON scanner under it (proto/json.h): valid Triton-style requests, every malformed case of
 * shared/RELIABILITY.md's "Inference requests" table that is a parsing matter, the binary
 * extension split, string unescaping, input flush against a guard page, allocation failure.
 *
 * Most requests are written with ' for " (see Q) to stay readable.
 */
#include "proto/infer_req.h"
#include "proto/tensor_json.h"

#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/error.h"
#include "proto/json.h"
#include "test.h"

static ox_arena_t A;
static ox_infer_header_t R;
static char E[256];
static char qbuf[1 << 16];

/* The text with every ' turned into ". Static buffer: one at a time. */
static const char *Q(const char *s) {
  size_t n = strlen(s);
  if (n >= sizeof qbuf) abort();
  for (size_t i = 0; i <= n; i++) qbuf[i] = s[i] == '\'' ? '"' : s[i];
  return qbuf;
}

static int parse_n(const char *s, size_t n) {
  ox_arena_free(&A);
  memset(E, 'X', sizeof E); /* so a missing message is visible */
  return ox_infer_request_parse(s, n, &A, &R, E, sizeof E);
}
static int parse(const char *s) {
  return parse_n(s, strlen(s));
}
static int parseq(const char *s) {
  return parse(Q(s));
}

static int slice_is(ox_slice_t s, const char *lit) {
  return s.ptr && ox_slice_eq(s, lit);
}
static int inside(ox_slice_t s, const char *buf, size_t n) {
  return s.ptr >= buf && s.ptr + s.len <= buf + n;
}

/* rc and a substring of the message; prints the message when it does not match. */
#define CHECK_ERR(rcexpr, code, sub)                                                         \
  do {                                                                                       \
    int rc_ = (rcexpr);                                                                      \
    const char *sub_ = (sub);                                                                \
    int has_ = memchr(E, 0, sizeof E) && strstr(E, sub_);                                    \
    CHECK_INT(rc_, code);                                                                    \
    if (!has_) fprintf(stderr, "  message \"%.*s\" lacks \"%s\"\n", (int)sizeof E, E, sub_); \
    CHECK(has_);                                                                             \
  } while (0)

#define IN_X "{'name':'x','shape':[1],'datatype':'FP32','data':[1]}"

/* ---- valid requests ---------------------------------------------------------------------- */

TEST(minimal_flat) {
  const char *s = Q("{'inputs':[{'name':'x','shape':[2,2],'datatype':'FP32','data':[1,2,3,4]}]}");
  CHECK_INT(parse(s), 0);
  CHECK_INT(R.num_inputs, 1);
  ox_infer_input_t *in = &R.inputs[0];
  CHECK(slice_is(in->name, "x"));
  CHECK(inside(in->name, s, strlen(s))); /* no escapes: borrowed */
  CHECK_INT(in->dtype, OX_DT_FP32);
  CHECK_INT(in->rank, 2);
  CHECK_INT(in->shape[0], 2);
  CHECK_INT(in->shape[1], 2);
  CHECK_INT(in->count, 4);
  CHECK(slice_is(in->data_json, "[1,2,3,4]"));
  CHECK(inside(in->data_json, s, strlen(s)));
  CHECK_INT(in->has_binary, 0);
  CHECK(R.id_json.ptr == NULL);
  CHECK(R.outputs == NULL);
  CHECK_INT(R.num_outputs, 0);
  CHECK_INT(R.binary_data_output, -1);
  CHECK_INT(R.has_timeout, 0);
}

TEST(nested_data_any_key_order) {
  const char *s =
      " \t\r\n{ \"inputs\" : [ { \"data\" : [ [ 1.5 , -2e-3 ] ,\n [ 3E+2, 0 ] ] , \"shape\" : [ 2 "
      ", 2 ] , \"datatype\" : \"FP64\" , \"name\" : \"in put\" } ] } \n";
  CHECK_INT(parse(s), 0);
  CHECK_INT(R.num_inputs, 1);
  CHECK(slice_is(R.inputs[0].name, "in put"));
  CHECK_INT(R.inputs[0].dtype, OX_DT_FP64);
  CHECK_INT(R.inputs[0].count, 4);
  CHECK(slice_is(R.inputs[0].data_json, "[ [ 1.5 , -2e-3 ] ,\n [ 3E+2, 0 ] ]"));
}

TEST(triton_full_request) {
  const char *s =
      Q("{'id':'req\\\"7\\u00e9','parameters':{'binary_data_output':true,'timeout':5000,"
        "'priority':1,'sequence_id':{'a':[1,{'b':null}]}},"
        "'inputs':[{'name':'INPUT0','shape':[1,16],'datatype':'INT32','parameters':{'x':'y'},"
        "'data':[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]]},"
        "{'name':'INPUT1','shape':[2],'datatype':'BYTES','data':['a\\n','\\u00ff']}],"
        "'outputs':[{'name':'OUTPUT0','parameters':{'binary_data':true}},"
        "{'name':'OUTPUT1','parameters':{'binary_data':false,'other':3}},{'name':'OUTPUT2'}]}");
  CHECK_INT(parse(s), 0);
  CHECK(slice_is(R.id_json, "\"req\\\"7\\u00e9\"")); /* raw, with quotes, for echoing */
  CHECK(inside(R.id_json, s, strlen(s)));
  CHECK_INT(R.binary_data_output, 1);
  CHECK_INT(R.has_timeout, 1);
  CHECK_INT(R.timeout_us, 5000);
  CHECK_INT(R.num_inputs, 2);
  CHECK(slice_is(R.inputs[0].name, "INPUT0"));
  CHECK_INT(R.inputs[0].dtype, OX_DT_INT32);
  CHECK_INT(R.inputs[0].count, 16);
  CHECK(slice_is(R.inputs[1].name, "INPUT1"));
  CHECK_INT(R.inputs[1].dtype, OX_DT_BYTES);
  CHECK(slice_is(R.inputs[1].data_json, "[\"a\\n\",\"\\u00ff\"]"));
  CHECK_INT(R.num_outputs, 3);
  CHECK(slice_is(R.outputs[0].name, "OUTPUT0"));
  CHECK_INT(R.outputs[0].binary_data, 1);
  CHECK_INT(R.outputs[1].binary_data, 0);
  CHECK_INT(R.outputs[2].binary_data, -1);
  CHECK(slice_is(R.outputs[2].name, "OUTPUT2"));
}

TEST(binary_extension_several_inputs) {
  const char *hdr =
      Q("{'inputs':[{'name':'a','shape':[2],'datatype':'FP32','parameters':{'binary_data_size':8}},"
        "{'name':'j','shape':[1],'datatype':'INT64','data':[7]},"
        "{'name':'b','shape':[3],'datatype':'UINT8','parameters':{'binary_data_size':3}},"
        "{'name':'z','shape':[0],'datatype':'FP16','parameters':{'binary_data_size':0}}],"
        "'outputs':[{'name':'o','parameters':{'binary_data':true}}],"
        "'parameters':{'binary_data_output':false}}");
  char body[1024];
  size_t hl = strlen(hdr);
  memcpy(body, hdr, hl);
  memcpy(body + hl, "AAAABBBBccc", 11);
  CHECK_INT(parse_n(body, hl), 0);
  CHECK_INT(R.num_inputs, 4);
  CHECK_INT(R.inputs[0].has_binary, 1);
  CHECK_INT(R.inputs[0].binary_size, 8);
  CHECK(R.inputs[0].data_json.ptr == NULL);
  CHECK_INT(R.inputs[3].count, 0);
  CHECK_INT(R.binary_data_output, 0);
  CHECK_INT(ox_infer_request_split_binary(&R, body + hl, 11, E, sizeof E), 0);
  CHECK(R.inputs[0].binary.ptr == body + hl);
  CHECK_INT(R.inputs[0].binary.len, 8);
  CHECK(R.inputs[1].binary.ptr == NULL); /* JSON data, no binary */
  CHECK(R.inputs[2].binary.ptr == body + hl + 8);
  CHECK_INT(R.inputs[2].binary.len, 3);
  CHECK(R.inputs[3].binary.ptr != NULL);
  CHECK_INT(R.inputs[3].binary.len, 0);
}

TEST(split_binary_errors) {
  CHECK_INT(parseq("{'inputs':[{'name':'a','shape':[1],'datatype':'FP32','data':[1],"
                   "'parameters':{'binary_data_size':4}}]}"),
            0);
  CHECK_ERR(ox_infer_request_split_binary(&R, "abcd", 4, E, sizeof E), OX_EINVALID,
            "input 'a': has both data and binary_data_size");
  CHECK_INT(parseq("{'inputs':[{'name':'a','shape':[1],'datatype':'FP32'}]}"), 0);
  CHECK_ERR(ox_infer_request_split_binary(&R, NULL, 0, E, sizeof E), OX_EINVALID,
            "input 'a': has neither data nor binary_data_size");

  const char *two =
      "{'inputs':[{'name':'a','shape':[1],'datatype':'FP32','parameters':"
      "{'binary_data_size':4}},{'name':'b','shape':[1],'datatype':'FP32',"
      "'parameters':{'binary_data_size':4}}]}";
  CHECK_INT(parseq(two), 0);
  CHECK_ERR(ox_infer_request_split_binary(&R, "abcdefg", 7, E, sizeof E), OX_EINVALID,
            "input 'b': binary_data_size runs past the end of the body");
  CHECK_INT(parseq(two), 0);
  CHECK_ERR(ox_infer_request_split_binary(&R, "abcdefghi", 9, E, sizeof E), OX_EINVALID,
            "1 bytes left over");
  CHECK_INT(parseq(two), 0);
  CHECK_INT(ox_infer_request_split_binary(&R, "abcdefgh", 8, E, sizeof E), 0);
  CHECK(R.inputs[1].binary.len == 4 && memcmp(R.inputs[1].binary.ptr, "efgh", 4) == 0);

  /* Sizes whose sum overflows uint64 must not wrap around into "fits". */
  CHECK_INT(parseq("{'inputs':[{'name':'a','shape':[1],'datatype':'FP32','parameters':"
                   "{'binary_data_size':18446744073709551615}},{'name':'b','shape':[1],"
                   "'datatype':'FP32','parameters':{'binary_data_size':2}}]}"),
            0);
  CHECK_ERR(ox_infer_request_split_binary(&R, "abcd", 4, E, sizeof E), OX_EINVALID,
            "input 'a': binary_data_size runs past the end of the body");
  CHECK_INT(parseq("{'inputs':[{'name':'a','shape':[1],'datatype':'FP32','parameters':"
                   "{'binary_data_size':2}},{'name':'b','shape':[1],"
                   "'datatype':'FP32','parameters':{'binary_data_size':18446744073709551615}}]}"),
            0);
  CHECK_ERR(ox_infer_request_split_binary(&R, "abcd", 4, E, sizeof E), OX_EINVALID,
            "input 'b': binary_data_size runs past the end of the body");
  /* Left-over bytes with no binary input at all. */
  CHECK_INT(parseq("{'inputs':[" IN_X "]}"), 0);
  CHECK_ERR(ox_infer_request_split_binary(&R, "z", 1, E, sizeof E), OX_EINVALID, "left over");
}

TEST(escaped_names_and_keys) {
  const char *s =
      Q("{'\\u0069nputs':[{'n\\u0061me':'in\\u0070ut\\t\\ud83d\\ude00','shape':[1],"
        "'datatype':'F\\u005032','data':[1]}],"
        "'outputs':[{'name':'o\\/1'}]}");
  CHECK_INT(parse(s), 0);
  CHECK_INT(R.num_inputs, 1);
  CHECK(slice_is(R.inputs[0].name, "input\t\xF0\x9F\x98\x80"));
  CHECK(!inside(R.inputs[0].name, s, strlen(s))); /* unescaped into the arena */
  CHECK_INT(R.inputs[0].name.ptr[R.inputs[0].name.len], 0);
  CHECK_INT(R.inputs[0].dtype, OX_DT_FP32);
  CHECK(slice_is(R.outputs[0].name, "o/1"));
  /* An escaped spelling of a key is the same key: a duplicate. */
  CHECK_ERR(parseq("{'inputs':[{'name':'x','n\\u0061me':'y','shape':[1],'datatype':'FP32'}]}"),
            OX_EINVALID, "duplicate key 'name'");
}

TEST(unknown_keys_ignored) {
  CHECK_INT(parseq("{'model_name':'m','x':[1,{'y':[true,false,null]}],'inputs':[{'name':'x',"
                   "'shape':[1],'datatype':'FP32','data':[1],'extra':{'deep':[[[]]]},"
                   "'extra':1}],'outputs':[{'name':'o','junk':'j','parameters':{'z':{}}}],"
                   "'x':2,'id':'i','parameters':{'q':[],'r':[]}}"),
            0);
  CHECK_INT(R.num_inputs, 1);
  CHECK_INT(R.num_outputs, 1);
  CHECK(slice_is(R.id_json, "\"i\""));
}

TEST(all_datatypes_and_shapes) {
  static const struct {
    const char *name;
    ox_dtype_t dt;
  } dts[] = {{"BOOL", OX_DT_BOOL},     {"UINT8", OX_DT_UINT8},   {"UINT16", OX_DT_UINT16},
             {"UINT32", OX_DT_UINT32}, {"UINT64", OX_DT_UINT64}, {"INT8", OX_DT_INT8},
             {"INT16", OX_DT_INT16},   {"INT32", OX_DT_INT32},   {"INT64", OX_DT_INT64},
             {"FP16", OX_DT_FP16},     {"BF16", OX_DT_BF16},     {"FP32", OX_DT_FP32},
             {"FP64", OX_DT_FP64},     {"BYTES", OX_DT_BYTES}};
  char buf[256];
  for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
    snprintf(buf, sizeof buf, "{'inputs':[{'name':'x','shape':[],'datatype':'%s','data':[]}]}",
             dts[i].name);
    CHECK_INT(parseq(buf), 0);
    CHECK_INT(R.inputs[0].dtype, dts[i].dt);
    CHECK_INT(R.inputs[0].rank, 0);
    CHECK_INT(R.inputs[0].count, 1); /* a scalar */
  }
  CHECK_INT(parseq("{'inputs':[{'name':'x','shape':[3,0,-0],'datatype':'FP32','data':[]}]}"), 0);
  CHECK_INT(R.inputs[0].rank, 3);
  CHECK_INT(R.inputs[0].count, 0);
  CHECK_INT(R.inputs[0].shape[2], 0);
  CHECK_INT(parseq("{'inputs':[{'name':'x','shape':[9223372036854775807],'datatype':'FP32'}]}"), 0);
  CHECK_INT(R.inputs[0].count, INT64_MAX);
  CHECK_INT(parseq("{'inputs':[{'name':'x','shape':[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,16],"
                   "'datatype':'FP32'}]}"),
            0);
  CHECK_INT(R.inputs[0].rank, 16);
  CHECK_INT(R.inputs[0].count, 16);
  /* 2^32 * 2^32 - ... : exactly UINT64_MAX is fine; 4294967296 * 4294967296 is not. */
  CHECK_INT(parseq("{'inputs':[{'name':'x','shape':[4294967295,4294967297],'datatype':'FP32'}]}"),
            0);
  CHECK(R.inputs[0].count == UINT64_MAX);
}

TEST(many_inputs_and_outputs) {
  static char buf[1 << 15];
  size_t n = 0;
  n += (size_t)snprintf(buf + n, sizeof buf - n, "{'inputs':[");
  for (int i = 0; i < OX_MAX_IO; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n,
                          "%s{'name':'i%d','shape':[1],'datatype':'FP32','data':[%d]}",
                          i ? "," : "", i, i);
  n += (size_t)snprintf(buf + n, sizeof buf - n, "],'outputs':[");
  for (int i = 0; i < OX_MAX_IO; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s{'name':'o%d'}", i ? "," : "", i);
  snprintf(buf + n, sizeof buf - n, "]}");
  CHECK_INT(parseq(buf), 0);
  CHECK_INT(R.num_inputs, OX_MAX_IO);
  CHECK_INT(R.num_outputs, OX_MAX_IO);
  CHECK(slice_is(R.inputs[200].name, "i200"));
  CHECK(slice_is(R.inputs[200].data_json, "[200]"));
  CHECK(slice_is(R.outputs[255].name, "o255"));

  /* One more output. */
  snprintf(buf + n, sizeof buf - n, ",{'name':'o256'}]}");
  CHECK_ERR(parseq(buf), OX_EINVALID, "too many outputs (at most 256)");
  /* One more input. */
  n = (size_t)snprintf(buf, sizeof buf, "{'inputs':[");
  for (int i = 0; i <= OX_MAX_IO; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s{'name':'i%d','shape':[1],'datatype':'FP32'}",
                          i ? "," : "", i);
  snprintf(buf + n, sizeof buf - n, "]}");
  CHECK_ERR(parseq(buf), OX_EINVALID, "too many inputs (at most 256)");
}

/* ---- malformed requests ------------------------------------------------------------------ */

TEST(not_an_object) {
  const char *cases[] = {"[]", "\"x\"", "42", "null", "true", "[{\"inputs\":[]}]"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    CHECK_ERR(parse(cases[i]), OX_EINVALID, "the request must be a JSON object");
  CHECK_ERR(parse(""), OX_EINVALID, "the body is empty");
  CHECK_ERR(parse(" \r\n\t"), OX_EINVALID, "the body is empty");
  CHECK_ERR(parse("[1,]"), OX_EINVALID, "malformed JSON at byte 3"); /* syntax first */
}

TEST(inputs_missing_or_empty) {
  CHECK_ERR(parse("{}"), OX_EINVALID, "missing 'inputs'");
  CHECK_ERR(parseq("{'outputs':[{'name':'o'}]}"), OX_EINVALID, "missing 'inputs'");
  {
    /* Empty is valid (models without inputs); the server then checks against the model. */
    ox_infer_header_t req;
    ox_arena_t a;
    char err[256];
    ox_arena_init(&a);
    CHECK_INT(ox_infer_request_parse("{\"inputs\":[]}", 13, &a, &req, err, sizeof err), 0);
    CHECK_INT(req.num_inputs, 0);
    ox_arena_free(&a);
  }
  CHECK_ERR(parseq("{'inputs':{}}"), OX_EINVALID, "'inputs' must be an array");
  CHECK_ERR(parseq("{'inputs':null}"), OX_EINVALID, "'inputs' must be an array");
  CHECK_ERR(parseq("{'inputs':[" IN_X ",3]}"), OX_EINVALID, "inputs[1] must be an object");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':{}}"), OX_EINVALID,
            "'outputs' must be an array");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':['o']}"), OX_EINVALID,
            "outputs[0] must be an object");
}

TEST(input_missing_fields) {
  CHECK_ERR(parseq("{'inputs':[{'shape':[1],'datatype':'FP32','data':[1]}]}"), OX_EINVALID,
            "inputs[0]: missing 'name'");
  CHECK_ERR(parseq("{'inputs':[" IN_X ",{'shape':[1],'datatype':'FP32'}]}"), OX_EINVALID,
            "inputs[1]: missing 'name'");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','datatype':'FP32','data':[1]}]}"), OX_EINVALID,
            "input 'x': missing 'shape'");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'data':[1]}]}"), OX_EINVALID,
            "input 'x': missing 'datatype'");
  CHECK_ERR(parseq("{'inputs':[{'name':7,'shape':[1],'datatype':'FP32'}]}"), OX_EINVALID,
            "inputs[0]: 'name' must be a string");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':32}]}"), OX_EINVALID,
            "input 'x': datatype must be a string");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'FP32','parameters':[]}]}"),
            OX_EINVALID, "input 'x': parameters must be an object");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'parameters':{}}]}"), OX_EINVALID,
            "outputs[0]: missing 'name'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'name':'o','parameters':1}]}"), OX_EINVALID,
            "output 'o': parameters must be an object");
}

TEST(unknown_datatype) {
  CHECK_ERR(parseq("{'inputs':[{'datatype':'FLOAT','shape':[1],'name':'x','data':[1]}]}"),
            OX_EINVALID, "input 'x': unknown datatype 'FLOAT'");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'fp32'}]}"), OX_EINVALID,
            "input 'x': unknown datatype 'fp32'");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':''}]}"), OX_EINVALID,
            "input 'x': unknown datatype ''");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'FP32 '}]}"), OX_EINVALID,
            "unknown datatype");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'\\u0046\\u0050\\u0033\\u0032"
                   "\\u0046\\u0050\\u0033\\u0032'}]}"),
            OX_EINVALID, "unknown datatype");
}

TEST(bad_shapes) {
  const char *pre = "{'inputs':[{'name':'x','datatype':'FP32','shape':";
  static const struct {
    const char *shape;
    int rc;
    const char *msg;
  } cases[] = {
      {"[1,-2]", OX_EINVALID, "input 'x': shape has a negative dimension"},
      {"[-9223372036854775808]", OX_EINVALID, "negative dimension"},
      {"[-99999999999999999999999]", OX_EINVALID, "negative dimension"},
      {"[1.0]", OX_EINVALID, "input 'x': shape must be an array of integers"},
      {"[1e2]", OX_EINVALID, "array of integers"},
      {"[1,'2']", OX_EINVALID, "array of integers"},
      {"[true]", OX_EINVALID, "array of integers"},
      {"[null]", OX_EINVALID, "array of integers"},
      {"[[1]]", OX_EINVALID, "array of integers"},
      {"3", OX_EINVALID, "array of integers"},
      {"'[1]'", OX_EINVALID, "array of integers"},
      {"{}", OX_EINVALID, "array of integers"},
      {"[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", OX_EINVALID, "more than 16 dimensions"},
      {"[9223372036854775808]", OX_EOVERFLOW, "input 'x': shape has a dimension too large"},
      {"[18446744073709551616]", OX_EOVERFLOW, "dimension too large"},
      {"[4294967296,4294967296]", OX_EOVERFLOW, "input 'x': the shape's element count overflows"},
      {"[1099511627776,1099511627776,0]", OX_EOVERFLOW, "element count overflows"},
      {"[3037000500,3037000500,3]", OX_EOVERFLOW, "element count overflows"},
  };
  char buf[512];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    snprintf(buf, sizeof buf, "%s%s}]}", pre, cases[i].shape);
    CHECK_ERR(parseq(buf), cases[i].rc, cases[i].msg);
  }
  /* The problem may come before the name: the message still names the input. */
  CHECK_ERR(parseq("{'inputs':[{'shape':[-1],'datatype':'FP32','name':'late'}]}"), OX_EINVALID,
            "input 'late': shape has a negative dimension");
}

TEST(duplicate_names) {
  CHECK_ERR(parseq("{'inputs':[" IN_X "," IN_X "]}"), OX_EINVALID, "duplicate input 'x'");
  CHECK_ERR(parseq("{'inputs':[{'name':'a','shape':[1],'datatype':'FP32'},{'name':'b','shape':"
                   "[1],'datatype':'FP32'},{'name':'\\u0061','shape':[1],'datatype':'FP32'}]}"),
            OX_EINVALID, "duplicate input 'a'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'name':'o'},{'name':'p'},{'name':'o'}]}"),
            OX_EINVALID, "duplicate output 'o'");
  /* Same name as input and output is fine; names differing only in length are different. */
  CHECK_INT(parseq("{'inputs':[" IN_X ",{'name':'xx','shape':[1],'datatype':'FP32'},"
                   "{'name':'','shape':[1],'datatype':'FP32'}],"
                   "'outputs':[{'name':'x'},{'name':''}]}"),
            0);
}

TEST(duplicate_keys) {
  static const char *top[] = {
      "{'inputs':[" IN_X "],'inputs':[" IN_X "]}",
      "{'inputs':[" IN_X "],'outputs':[],'outputs':[]}",
      "{'id':'a','inputs':[" IN_X "],'id':'b'}",
      "{'parameters':{},'inputs':[" IN_X "],'parameters':{}}",
  };
  for (size_t i = 0; i < 4; i++) CHECK_ERR(parseq(top[i]), OX_EINVALID, "duplicate key '");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','name':'y','shape':[1],'datatype':'FP32'}]}"),
            OX_EINVALID, "input 'x': duplicate key 'name'");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'shape':[1],'datatype':'FP32'}]}"),
            OX_EINVALID, "input 'x': duplicate key 'shape'");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'FP32','datatype':'FP32'}]}"),
            OX_EINVALID, "input 'x': duplicate key 'datatype'");
  CHECK_ERR(parseq("{'inputs':[{'data':[1],'name':'x','shape':[1],'datatype':'FP32','data':[2]}]}"),
            OX_EINVALID, "input 'x': duplicate key 'data'");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'FP32','parameters':{},"
                   "'parameters':{}}]}"),
            OX_EINVALID, "input 'x': duplicate key 'parameters'");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'FP32','parameters':"
                   "{'binary_data_size':4,'binary_data_size':4}}]}"),
            OX_EINVALID, "input 'x': duplicate parameter 'binary_data_size'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'name':'o','name':'p'}]}"), OX_EINVALID,
            "output 'o': duplicate key 'name'");
  CHECK_ERR(
      parseq("{'inputs':[" IN_X "],'outputs':[{'name':'o','parameters':{},'parameters':{}}]}"),
      OX_EINVALID, "output 'o': duplicate key 'parameters'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'name':'o','parameters':"
                   "{'binary_data':true,'binary_data':true}}]}"),
            OX_EINVALID, "output 'o': duplicate parameter 'binary_data'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':{'timeout':1,'timeout':1}}"), OX_EINVALID,
            "duplicate parameter 'timeout'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':{'binary_data_output':true,"
                   "'binary_data_output':false}}"),
            OX_EINVALID, "duplicate parameter 'binary_data_output'");
}

TEST(bad_values) {
  CHECK_ERR(parseq("{'id':5,'inputs':[" IN_X "]}"), OX_EINVALID, "'id' must be a string");
  CHECK_ERR(parseq("{'id':null,'inputs':[" IN_X "]}"), OX_EINVALID, "'id' must be a string");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':[]}"), OX_EINVALID,
            "'parameters' must be an object");
  static const char *bdo[] = {"'true'", "1", "null", "{}"};
  char buf[512];
  for (size_t i = 0; i < 4; i++) {
    snprintf(buf, sizeof buf, "{'inputs':[" IN_X "],'parameters':{'binary_data_output':%s}}",
             bdo[i]);
    CHECK_ERR(parseq(buf), OX_EINVALID, "parameter 'binary_data_output' must be a boolean");
  }
  static const char *tmo[] = {"-1", "1.5", "1e3", "'10'", "true", "[]"};
  for (size_t i = 0; i < 6; i++) {
    snprintf(buf, sizeof buf, "{'inputs':[" IN_X "],'parameters':{'timeout':%s}}", tmo[i]);
    CHECK_ERR(parseq(buf), OX_EINVALID, "parameter 'timeout' must be a non-negative integer");
  }
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':{'timeout':18446744073709551616}}"),
            OX_EOVERFLOW, "parameter 'timeout' is too large");
  CHECK_INT(parseq("{'inputs':[" IN_X "],'parameters':{'timeout':18446744073709551615}}"), 0);
  CHECK(R.timeout_us == UINT64_MAX);

  static const char *bds[] = {"-4", "4.0", "'4'", "null", "-1e2"};
  for (size_t i = 0; i < 5; i++) {
    snprintf(buf, sizeof buf,
             "{'inputs':[{'name':'x','shape':[1],'datatype':'FP32','parameters':"
             "{'binary_data_size':%s}}]}",
             bds[i]);
    CHECK_ERR(parseq(buf), OX_EINVALID, "input 'x': binary_data_size must be a non-negative");
  }
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'FP32','parameters':"
                   "{'binary_data_size':99999999999999999999}}]}"),
            OX_EOVERFLOW, "input 'x': binary_data_size is too large");

  static const char *data[] = {"5", "'abc'", "{}", "null", "true"};
  for (size_t i = 0; i < 5; i++) {
    snprintf(buf, sizeof buf, "{'inputs':[{'name':'x','shape':[1],'datatype':'FP32','data':%s}]}",
             data[i]);
    CHECK_ERR(parseq(buf), OX_EINVALID, "input 'x': data must be an array");
  }
  static const char *cls[] = {"0",    "-1",   "2.5", "'3'",
                              "true", "null", "[3]", "99999999999999999999"};
  for (size_t i = 0; i < sizeof cls / sizeof *cls; i++) {
    snprintf(buf, sizeof buf,
             "{'inputs':[" IN_X "],'outputs':[{'name':'o','parameters':{'classification':%s}}]}",
             cls[i]);
    CHECK_ERR(parseq(buf), OX_EINVALID, "output 'o': classification must be a positive integer");
  }
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'parameters':{'classification':0},"
                   "'name':'late'}]}"),
            OX_EINVALID, "output 'late': classification must be a positive integer");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'name':'o','parameters':"
                   "{'classification':2,'classification':3}}]}"),
            OX_EINVALID, "output 'o': duplicate parameter 'classification'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'name':'o','parameters':"
                   "{'binary_data':'yes'}}]}"),
            OX_EINVALID, "output 'o': binary_data must be a boolean");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'outputs':[{'name':['o']}]}"), OX_EINVALID,
            "outputs[0]: 'name' must be a string");
}

TEST(classification_parameter) {
  CHECK_INT(parseq("{'inputs':[" IN_X "],'outputs':[{'name':'o','parameters':"
                   "{'classification':3,'binary_data':true}},{'name':'p'}]}"),
            0);
  CHECK_INT(R.num_outputs, 2);
  CHECK_INT(R.outputs[0].classification, 3);
  CHECK_INT(R.outputs[0].binary_data, 1);
  CHECK_INT(R.outputs[1].classification, 0);
  CHECK_INT(R.outputs[1].binary_data, -1);
}

TEST(trailing_garbage) {
  static const char *cases[] = {
      "{'inputs':[" IN_X "]} x", "{'inputs':[" IN_X "]}{}", "{'inputs':[" IN_X "]},",
      "{'inputs':[" IN_X "]}]",  "{'inputs':[" IN_X "]}}",  "{'inputs':[" IN_X "]} 0",
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    CHECK_ERR(parseq(cases[i]), OX_EINVALID, "unexpected characters after the JSON value");
  /* A NUL after the value. */
  const char *ok = Q("{'inputs':[" IN_X "]}");
  char buf[256];
  size_t n = strlen(ok);
  memcpy(buf, ok, n + 1);
  CHECK_ERR(parse_n(buf, n + 1), OX_EINVALID, "unexpected characters after the JSON value");
  CHECK_INT(parse_n(buf, n), 0);
  CHECK_INT(
      parse_n("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"}]}  \n",
              strlen("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"}]}  \n")),
      0);
}

/* Each text is placed as the value of an ignored key, of "data", and of "id", so that the
 * scanner's strictness is checked where values are skipped as well as where they are read. */
static int parse_case(const char *body, size_t i) {
  int rc = parse(body);
  if (rc != OX_EINVALID) fprintf(stderr, "  case %zu: %s\n", i, body);
  return rc;
}

TEST(invalid_json_anywhere) {
  static const char *bad[] = {
      /* numbers */
      "01",
      "-01",
      "1.",
      ".5",
      "-",
      "+1",
      "1e",
      "1e+",
      "1E-",
      "0x10",
      "1.5.2",
      "--1",
      "1e5.0",
      "NaN",
      "-NaN",
      "Infinity",
      "-Infinity",
      "inf",
      "[1,NaN]",
      "[Infinity]",
      "[-Infinity,1]",
      "[1 2]",
      "[1,,2]",
      "[,1]",
      "[1,]",
      "[1",
      "[",
      "]",
      "[1}",
      "[[1]",
      "[1]]",
      /* literals */
      "tru",
      "True",
      "nul",
      "NULL",
      "falsey",
      "[true false]",
      "[t]",
      /* strings */
      "'\\x'",
      "'\\u12'",
      "'\\u12G4'",
      "'\\uD800'",
      "'\\uDC00'",
      "'\\uD800\\u0041'",
      "'\\uD800x'",
      "'\\uDBFF\\uDBFF'",
      "'a\tb'",
      "'a\nb'",
      "'\x01'",
      "'\x1f'",
      "'abc",
      "'\\'",
      "'\xC0\x80'",
      "'\xC1\xBF'",
      "'\xE0\x80\x80'",
      "'\xED\xA0\x80'",
      "'\xF5\x80\x80\x80'",
      "'\xF4\x90\x80\x80'",
      "'\xFF'",
      "'\x80'",
      "'\xC3'",
      "'\xE2\x82'",
      "'\xF0\x9F\x98'",
      "'\xE2\x28\xA1'",
      /* objects */
      "{'a'}",
      "{'a':}",
      "{'a' 1}",
      "{a:1}",
      "{1:1}",
      "{'a':1,}",
      "{,'a':1}",
      "{'a':1 'b':2}",
      "{'a':1",
      "{'a'",
      "{",
      "}",
      "{'a':1]",
      "{'a'::1}",
      /* other */
      "\x01",
      "//c",
      "/*c*/1",
      "\xEF\xBB\xBF"
      "1",
      "'a' 'b'",
      "\xC2\xA0"
      "1",
  };
  char body[512], val[128];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(val, sizeof val, "%s", bad[i]);
    for (char *c = val; *c; c++)
      if (*c == '\'') *c = '"';
    snprintf(body, sizeof body,
             "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}],"
             "\"ignored\":%s}",
             val);
    CHECK_ERR(parse_case(body, i), OX_EINVALID, "malformed JSON at byte");
    /* Inside "data" only the structure is checked here; the tensor decoder must then reject
     * the element (it parses every one strictly). */
    snprintf(body, sizeof body,
             "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[%s]}]}",
             val);
    {
      ox_infer_header_t req;
      ox_arena_t a;
      char err[256];
      float f;
      ox_arena_init(&a);
      if (ox_infer_request_parse(body, strlen(body), &a, &req, err, sizeof err) == 0) {
        CHECK(req.num_inputs == 1 && req.inputs[0].data_json.ptr);
        CHECK(ox_tensor_json_decode(req.inputs[0].data_json, OX_DT_FP32, 1, &f, &a, err,
                                    sizeof err) != 0);
      }
      ox_arena_free(&a);
    }
    snprintf(body, sizeof body,
             "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1],"
             "\"parameters\":{\"p\":%s}}]}",
             val);
    CHECK_ERR(parse_case(body, i), OX_EINVALID, "malformed JSON at byte");
  }
  /* Single quotes and raw bytes in a meaningful position. */
  CHECK_ERR(parse("{'inputs':[]}"), OX_EINVALID, "malformed JSON at byte 1: expected a string key");
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"a\x01\",\"shape\":[1],\"datatype\":\"FP32\"}]}"),
            OX_EINVALID, "control character in string");
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"\\uDE00\",\"shape\":[1],\"datatype\":\"FP32\"}]}"),
            OX_EINVALID, "unpaired surrogate");
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"\xFF\",\"shape\":[1],\"datatype\":\"FP32\"}]}"),
            OX_EINVALID, "invalid UTF-8");
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[01],\"datatype\":\"FP32\"}]}"),
            OX_EINVALID, "malformed JSON");
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,],\"datatype\":\"FP32\"}]}"),
            OX_EINVALID, "malformed JSON");
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"},]}"),
            OX_EINVALID, "malformed JSON");
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",}]}"),
            OX_EINVALID, "malformed JSON");
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"}],}"),
            OX_EINVALID, "malformed JSON");
  CHECK_ERR(parse("{\"parameters\":{\"timeout\":1,}}"), OX_EINVALID, "malformed JSON");
  CHECK_ERR(parse("{\"parameters\":{\"timeout\":-}}"), OX_EINVALID, "invalid number");
  /* Valid oddities are accepted: DEL, all escapes, non-BMP pairs, U+10FFFF, exponents. */
  CHECK_INT(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]"
                  ",\"i\":[\"\x7f\",\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\uFFFF\\uD83D\\uDE00\","
                  "\"\xF4\x8F\xBF\xBF\xE2\x82\xAC\xC3\xA9\",-0,-0.0e-0,1E+9,0.5e9,-1e-999,1e999]}"),
            0);
}

TEST(syntax_error_wins_over_semantic) {
  /* The semantic problem comes first in the text; the malformed JSON later is reported. */
  CHECK_ERR(parseq("{'inputs':5,'x':[1,]}"), OX_EINVALID, "malformed JSON at byte 19");
  CHECK_ERR(parseq("{'inputs':[{'name':'x','shape':[-1],'datatype':'FP32'}],'x':tru}"), OX_EINVALID,
            "malformed JSON");
  CHECK_ERR(parseq("{'inputs':[" IN_X "," IN_X "]} x"), OX_EINVALID, "malformed JSON");
  /* And the error is positioned: byte offsets count from the start of the body. */
  CHECK_ERR(parse("{\"inputs\": [1 2]}"), OX_EINVALID, "malformed JSON at byte 14: expected");
}

static void nest(char *buf, size_t depth_open, char open) {
  memset(buf, open, depth_open);
  buf[depth_open] = 0;
}

TEST(depth_limit) {
  static char buf[4096], body[8192];
  /* An ignored top-level member: 1 (top object) + 63 arrays = 64 levels: fine; 64 arrays: not. */
  nest(buf, 63, '[');
  snprintf(body, sizeof body,
           "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"}],"
           "\"deep\":%s%.*s}",
           buf, 63, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
  CHECK_INT(parse(body), 0);
  nest(buf, 64, '[');
  snprintf(body, sizeof body,
           "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"}],"
           "\"deep\":%s%.*s}",
           buf, 64, "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
  CHECK_ERR(parse(body), OX_EDEPTH, "JSON nesting deeper than 64 levels at byte");
  /* "data" sits inside 3 containers: up to 61 nested arrays there. */
  size_t n = 0;
  for (int levels = 61; levels <= 62; levels++) {
    n = (size_t)snprintf(body, sizeof body,
                         "{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\","
                         "\"data\":");
    memset(body + n, '[', (size_t)levels);
    n += (size_t)levels;
    body[n++] = '1';
    memset(body + n, ']', (size_t)levels);
    n += (size_t)levels;
    memcpy(body + n, "}]}", 4);
    if (levels == 61) {
      CHECK_INT(parse(body), 0);
      CHECK_INT(R.inputs[0].data_json.len, 2 * 61 + 1);
    } else {
      CHECK_ERR(parse(body), OX_EDEPTH, "nesting deeper than 64");
    }
  }
  /* Objects count as well. */
  n = (size_t)snprintf(body, sizeof body,
                       "{\"inputs\":["
                       "{\"name\":\"x\",\"shape\":[1],"
                       "\"datatype\":\"FP32\"}"
                       "],\"p\":");
  for (int i = 0; i < 70; i++) n += (size_t)snprintf(body + n, sizeof body - n, "{\"a\":");
  CHECK_ERR(parse(body), OX_EDEPTH, "nesting deeper than 64");
}

static double ms_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

TEST(million_brackets) {
  size_t n = 1000000;
  char *s = malloc(n + 64);
  CHECK(s != NULL);
  if (!s) return;
  struct timespec t0;
  /* At the top level, and inside "inputs", "data" and an ignored member. */
  static const char *pre[] = {"",
                              "{\"inputs\":", "{\"inputs\":[{\"name\":\"x\",\"data\":", "{\"x\":"};
  for (size_t i = 0; i < 4; i++) {
    size_t pl = strlen(pre[i]);
    memcpy(s, pre[i], pl);
    memset(s + pl, '[', n);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_ERR(parse_n(s, pl + n), OX_EDEPTH, "nesting deeper than 64");
    printf("  million '[' after %s: %s in %.3f ms\n", pl ? pre[i] : "nothing", E, ms_since(&t0));
  }
  /* A million '{"a":' too. */
  size_t k = 0;
  while (k + 5 <= n) memcpy(s + k, "{\"a\":", 5), k += 5;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK_ERR(parse_n(s, k), OX_EDEPTH, "nesting deeper than 64");
  printf("  200000 '{\"a\":': %.3f ms\n", ms_since(&t0));
  free(s);
}

/* Large data array: scanned, not decoded; speed printed for information. */
TEST(large_data_scan) {
  size_t cap = 4 << 20, n = 0, count = 150528;
  char *s = malloc(cap);
  CHECK(s != NULL);
  if (!s) return;
  n += (size_t)snprintf(s, cap,
                        "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3,224,224],"
                        "\"datatype\":\"FP32\",\"data\":[");
  uint32_t x = 12345;
  for (size_t i = 0; i < count; i++) {
    x = x * 1664525u + 1013904223u;
    n += (size_t)snprintf(s + n, cap - n, "%s%.17g", i ? ", " : "", (double)x / 4294967296.0 - 0.5);
  }
  const char *data_end = s + n + 1;
  n += (size_t)snprintf(s + n, cap - n, "]}]}");
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int reps = 20;
  for (int i = 0; i < reps; i++) CHECK_INT(parse_n(s, n), 0);
  double ms = ms_since(&t0) / reps;
  CHECK_INT(R.inputs[0].count, count);
  CHECK(R.inputs[0].data_json.ptr + R.inputs[0].data_json.len == data_end);
  CHECK(R.inputs[0].data_json.ptr[0] == '[');
  printf("  %zu-byte body, %zu numbers: %.3f ms (%.0f MB/s)\n", n, count, ms, (double)n / ms / 1e3);
  free(s);
}

/* ---- guard page ---------------------------------------------------------------------------- */

/* Text placed so its last byte is the last byte before a PROT_NONE page. */
typedef struct {
  char *map;
  size_t page;
} guard_t;

static int guard_init(guard_t *g) {
  g->page = (size_t)sysconf(_SC_PAGESIZE);
  g->map = mmap(NULL, 2 * g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (g->map == MAP_FAILED) return -1;
  return mprotect(g->map + g->page, g->page, PROT_NONE);
}

static char *guard_place(guard_t *g, const char *s, size_t n) {
  char *p = g->map + g->page - n;
  memcpy(p, s, n);
  return p;
}

TEST(guard_page) {
  guard_t g;
  CHECK_INT(guard_init(&g), 0);
  if (g.map == MAP_FAILED) return;
  const char *full =
      Q("{'id':'r\\u00e9','parameters':{'timeout':10,'x':[1.5e3,true,null,'s']},"
        "'inputs':[{'name':'a\\tb','shape':[2],'datatype':'FP32','data':[1.25,-3e-2]},"
        "{'name':'b','shape':[1],'datatype':'BYTES','parameters':{'binary_data_size':5}}],"
        "'outputs':[{'name':'o','parameters':{'binary_data':false}}]}");
  size_t n = strlen(full);
  char copy[1024];
  memcpy(copy, full, n);
  int ok = 1;
  for (size_t k = 0; k <= n; k++) {
    char *p = guard_place(&g, copy, k);
    int rc = parse_n(p, k);
    if (k < n && rc != OX_EINVALID) ok = 0;
    if (k == n) {
      CHECK_INT(rc, 0);
      CHECK(slice_is(R.inputs[0].data_json, "[1.25,-3e-2]"));
      CHECK(inside(R.inputs[0].data_json, p, n));
      CHECK(inside(R.id_json, p, n));
      CHECK_INT(ox_infer_request_split_binary(&R, guard_place(&g, "hello", 5), 5, E, sizeof E), 0);
      CHECK(R.inputs[1].binary.len == 5 && memcmp(R.inputs[1].binary.ptr, "hello", 5) == 0);
    }
  }
  CHECK(ok); /* every strict prefix is invalid, and none read past its end */
  /* Texts that end inside a token. */
  static const char *tails[] = {
      "\"",     "\"\\",       "\"\\u", "\"\\u00", "\"\\uD83D", "\"\\uD83D\\", "\"\\uD83D\\uDE",
      "\"\xC3", "\"\xF0\x9F", "t",     "fals",    "nul",       "-",           "1.",
      "1e",     "1e+",        "[",     "{\"a\"",  "{\"a\":",   "[1,",         "0"};
  for (size_t i = 0; i < sizeof tails / sizeof tails[0]; i++) {
    char body[128];
    int m = snprintf(body, sizeof body, "{\"inputs\":[{\"name\":\"x\",\"data\":%s", tails[i]);
    CHECK_INT(parse_n(guard_place(&g, body, (size_t)m), (size_t)m), OX_EINVALID);
    long r = ox_json_unescape(guard_place(&g, tails[i] + 1, strlen(tails[i] + 1)),
                              strlen(tails[i] + 1), copy);
    (void)r; /* only the absence of a fault matters here */
  }
  /* Whole texts ending exactly at the guard: a closing quote, a number, a literal. */
  static const struct {
    const char *text;
    int rc;
  } whole[] = {
      {"\"abc\"", OX_EINVALID},   {"\"\\u00e9\"", OX_EINVALID}, {"123", OX_EINVALID},
      {"-1.5e3", OX_EINVALID},    {"true", OX_EINVALID},        {"null", OX_EINVALID},
      {"[1,\"a\"]", OX_EINVALID}, {"[[[[", OX_EINVALID},        {"{\"inputs\"", OX_EINVALID}};
  for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
    size_t m = strlen(whole[i].text);
    CHECK_INT(parse_n(guard_place(&g, whole[i].text, m), m), whole[i].rc);
    ox_json_t js;
    ox_json_init(&js, guard_place(&g, whole[i].text, m), m);
    (void)ox_json_validate(&js);
  }
  CHECK_INT(ox_json_unescape(guard_place(&g, "ab\\u00e9", 8), 8, copy), 4);
  munmap(g.map, 2 * g.page);
}

/* ---- error message hygiene ---------------------------------------------------------------- */

TEST(messages_bounded_and_clean) {
  static char buf[8192];
  /* A long name is cut in the message; control characters never reach it. */
  size_t n = (size_t)snprintf(buf, sizeof buf, "{\"inputs\":[{\"name\":\"");
  for (int i = 0; i < 1000; i++) buf[n++] = 'n';
  n += (size_t)snprintf(buf + n, sizeof buf - n, "\",\"shape\":[-1],\"datatype\":\"FP32\"}]}");
  CHECK_ERR(parse(buf), OX_EINVALID, "...': shape has a negative dimension");
  CHECK(strlen(E) < 160);
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"a\\nb\\u0000c\",\"shape\":[1],\"datatype\":\"X\"}]}"),
            OX_EINVALID, "input 'a?b?c': unknown datatype 'X'");
  /* A multi-byte character at the cut is not split. */
  n = (size_t)snprintf(buf, sizeof buf, "{\"inputs\":[{\"name\":\"a");
  for (int i = 0; i < 100; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "\xC3\xA9");
  snprintf(buf + n, sizeof buf - n, "\",\"shape\":[1],\"datatype\":\"X\"}]}");
  CHECK_ERR(parse(buf), OX_EINVALID, "\xC3\xA9...'");
  /* Small and absent error buffers. */
  char small[8];
  memset(small, 'X', sizeof small);
  ox_arena_free(&A);
  CHECK_INT(ox_infer_request_parse("{}", 2, &A, &R, small, sizeof small), OX_EINVALID);
  CHECK(memchr(small, 0, sizeof small) != NULL);
  CHECK_STR(small, "missing");
  CHECK_INT(ox_infer_request_parse("[", 1, &A, &R, NULL, 0), OX_EINVALID);
  CHECK_INT(ox_infer_request_split_binary(&R, "x", 1, NULL, 0), OX_EINVALID);
  /* No internal identifiers in messages. */
  CHECK_ERR(parse("{\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\"},1]}"),
            OX_EINVALID, "inputs[1]");
  CHECK(strstr(E, "ox_") == NULL);
}

/* ---- allocation failure ---------------------------------------------------------------- */

TEST(allocation_failure) {
  static char buf[1 << 14];
  size_t n = (size_t)snprintf(buf, sizeof buf, "{\"inputs\":[");
  for (int i = 0; i < 20; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n,
                          "%s{\"name\":\"i\\u00e9%d\",\"shape\":[1],\"datatype\":\"FP32\"}",
                          i ? "," : "", i);
  n += (size_t)snprintf(buf + n, sizeof buf - n, "],\"outputs\":[");
  for (int i = 0; i < 20; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s{\"name\":\"o\\n%d\"}", i ? "," : "", i);
  snprintf(buf + n, sizeof buf - n, "]}");
  int failures = 0, rc;
  for (long k = 1;; k++) {
    ox_arena_fail_after = k;
    rc = parse(buf);
    if (rc == 0) break;
    CHECK_INT(rc, OX_ENOMEM);
    CHECK_STR(E, "out of memory");
    failures++;
    if (k > 1000) break;
  }
  ox_arena_fail_after = 0;
  CHECK_INT(rc, 0);
  CHECK(failures >= 3); /* the arrays grew, names were copied */
  CHECK_INT(R.num_inputs, 20);
  CHECK(slice_is(R.inputs[19].name,
                 "i\xC3\xA9"
                 "19"));
  CHECK(slice_is(R.outputs[19].name, "o\n19"));
}

/* ---- request parameters: kept for later stages, each named once -------------------------- */

/* Issue 9 finding 13: every request parameter is kept, in order, with its kind and value, so
 * that the feature view reads them without a second walk of the JSON and without a cap. */
TEST(request_params_kept) {
  const char *s = Q("{'inputs':[" IN_X
                    "],'parameters':{'user_id':'u\\u0031','ts':-17,"
                    "'return_features':true,'n':null,'o':{'a':[1]},'timeout':5,"
                    "'binary_data_output':false,'k\\u0065y':'','f':1.5e3}}");
  CHECK_INT(parse(s), 0);
  CHECK_INT(R.num_params, 9);
  const struct {
    const char *key, *value;
    ox_param_kind_t kind;
  } want[] = {{"user_id", "u1", OX_PARAM_STRING},
              {"ts", "-17", OX_PARAM_NUMBER},
              {"return_features", "true", OX_PARAM_BOOL},
              {"n", "null", OX_PARAM_NULL},
              {"o", "{\"a\":[1]}", OX_PARAM_OTHER},
              {"timeout", "5", OX_PARAM_NUMBER},
              {"binary_data_output", "false", OX_PARAM_BOOL},
              {"key", "", OX_PARAM_STRING},
              {"f", "1.5e3", OX_PARAM_NUMBER}};
  for (size_t i = 0; i < 9 && i < R.num_params; i++) {
    CHECK(slice_is(R.params[i].key, want[i].key));
    CHECK(R.params[i].value.ptr && ox_slice_eq(R.params[i].value, want[i].value));
    CHECK_INT(R.params[i].kind, want[i].kind);
  }
  CHECK(inside(R.params[1].key, s, strlen(s)));    /* no escapes: borrowed */
  CHECK(!inside(R.params[0].value, s, strlen(s))); /* unescaped into the arena */
  CHECK_INT(R.has_timeout, 1);
  CHECK_INT(R.timeout_us, 5);
  CHECK_INT(R.binary_data_output, 0);
  CHECK(ox_infer_request_param(&R, "user_id") == &R.params[0]);
  CHECK(ox_infer_request_param(&R, "key") == &R.params[7]);
  CHECK(ox_infer_request_param(&R, "user") == NULL);
  CHECK_INT(parseq("{'inputs':[" IN_X "],'parameters':{}}"), 0);
  CHECK_INT(R.num_params, 0);
  CHECK(R.params == NULL);
  CHECK(ox_infer_request_param(&R, "x") == NULL);
  CHECK_INT(parseq("{'inputs':[" IN_X "]}"), 0);
  CHECK_INT(R.num_params, 0);
}

/* A key after 100 others (the feature view's old cap was 64) and any number up to the limit;
 * one more is refused with a message, not dropped. */
TEST(request_params_many) {
  static char buf[1 << 21];
  size_t n = (size_t)snprintf(buf, sizeof buf, "{\"inputs\":[%s],\"parameters\":{", Q(IN_X));
  for (int i = 0; i < OX_MAX_PARAMS - 1; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\"p%d\":%d,", i, i);
  size_t at_limit = n;
  n += (size_t)snprintf(buf + n, sizeof buf - n, "\"user_id\":\"u9\"}}");
  CHECK_INT(parse_n(buf, n), 0);
  CHECK_INT(R.num_params, OX_MAX_PARAMS);
  const ox_infer_param_t *p = ox_infer_request_param(&R, "user_id");
  CHECK(p && p == &R.params[OX_MAX_PARAMS - 1] && slice_is(p->value, "u9"));
  CHECK(slice_is(R.params[100].key, "p100") && slice_is(R.params[100].value, "100"));
  n = at_limit + (size_t)snprintf(buf + at_limit, sizeof buf - at_limit, "\"x\":1,\"user_id\":1}}");
  CHECK_ERR(parse_n(buf, n), OX_EINVALID, "too many request parameters (at most 65536)");
}

/* Issue 9 item 14: a request parameter named twice is refused, whatever its name and however
 * its key is spelled; no "first one wins". */
TEST(request_params_duplicate) {
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':{'user_id':'a','x':1,'user_id':'b'}}"),
            OX_EINVALID, "duplicate parameter 'user_id'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':{'user_id':'a','user\\u005fid':'b'}}"),
            OX_EINVALID, "duplicate parameter 'user_id'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':{'q':[],'q':{}}}"), OX_EINVALID,
            "duplicate parameter 'q'");
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':{'binary_data_output':true,"
                   "'binary_data_output':true}}"),
            OX_EINVALID, "duplicate parameter 'binary_data_output'");
  /* the same name in an input's or output's parameters is another object: fine */
  CHECK_INT(parseq("{'inputs':[{'name':'x','shape':[1],'datatype':'FP32','data':[1],"
                   "'parameters':{'user_id':1}}],'parameters':{'user_id':'a'}}"),
            0);
  /* a syntax error later in the text still wins */
  CHECK_ERR(parseq("{'inputs':[" IN_X "],'parameters':{'a':1,'a':2},'x':}"), OX_EINVALID,
            "malformed JSON");
}

/* Parameters under allocation failure: the array grows and escaped keys and values are
 * copied; every failure is a clean OX_ENOMEM. */
TEST(request_params_allocation_failure) {
  static char buf[1 << 14];
  size_t n = (size_t)snprintf(buf, sizeof buf, "{\"inputs\":[%s],\"parameters\":{", Q(IN_X));
  for (int i = 0; i < 40; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"k\\u00e9%d\":\"v\\n%d\"", i ? "," : "", i,
                          i);
  snprintf(buf + n, sizeof buf - n, "}}");
  int failures = 0, rc;
  for (long k = 1;; k++) {
    ox_arena_fail_after = k;
    rc = parse(buf);
    if (rc == 0) break;
    CHECK_INT(rc, OX_ENOMEM);
    failures++;
    if (k > 1000) break;
  }
  ox_arena_fail_after = 0;
  CHECK_INT(rc, 0);
  CHECK(failures >= 5);
  CHECK_INT(R.num_params, 40);
  CHECK(slice_is(R.params[39].key,
                 "k\xC3\xA9"
                 "39") &&
        slice_is(R.params[39].value, "v\n39"));
}

/* ---- ox_json_unescape and the scanner ------------------------------------------------------ */

static long unesc(const char *s, char *out) {
  return ox_json_unescape(s, strlen(s), out);
}

TEST(unescape) {
  char out[64];
  CHECK_INT(unesc("plain", out), 5);
  CHECK_MEM(out, "plain", 5);
  CHECK_INT(unesc("\\\"\\\\\\/\\b\\f\\n\\r\\t", out), 8);
  CHECK_MEM(out, "\"\\/\b\f\n\r\t", 8);
  CHECK_INT(unesc("\\u0041\\u00e9\\u20AC\\uffff", out), 1 + 2 + 3 + 3);
  CHECK_MEM(out, "A\xC3\xA9\xE2\x82\xAC\xEF\xBF\xBF", 9);
  CHECK_INT(unesc("\\uD83D\\uDE00", out), 4);
  CHECK_MEM(out, "\xF0\x9F\x98\x80", 4);
  CHECK_INT(unesc("\\uDBFF\\uDFFF", out), 4);
  CHECK_MEM(out, "\xF4\x8F\xBF\xBF", 4);
  CHECK_INT(unesc("\\u0000", out), 1);
  CHECK_INT(out[0], 0);
  CHECK_INT(unesc("", out), 0);
  CHECK_INT(unesc("\xC3\xA9\x7f", out), 3);
  CHECK_INT(ox_json_unescape("ab", 1, out), 1); /* length-bounded, no NUL needed */
  static const char *bad[] = {
      "\\",
      "\\x",
      "\\u",
      "\\u123",
      "\\u12g4",
      "\\uD800",
      "\\uDC00",
      "\\uD800\\",
      "\\uD800\\u0041",
      "\\uD800\\uD800",
      "\\uD800x",
      "a\"b",
      "\x01",
      "\n",
      "\x1f",
      "\xFF",
      "\xC3",
      "\xED\xA0\x80",
      "\xC0\xAF",
      "\xF8\x88\x80\x80\x80",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    long r = unesc(bad[i], out);
    if (r != OX_EINVALID) fprintf(stderr, "  accepted #%zu\n", i);
    CHECK_INT(r, OX_EINVALID);
  }
}

TEST(scanner_numbers) {
  ox_json_t js;
  ox_json_number_t num;
  static const struct {
    const char *text;
    int neg, integral, overflow;
    uint64_t mag;
    size_t len;
  } cases[] = {
      {"0", 0, 1, 0, 0, 1},
      {"-0", 1, 1, 0, 0, 2},
      {"123,", 0, 1, 0, 123, 3},
      {"18446744073709551615]", 0, 1, 0, UINT64_MAX, 20},
      {"18446744073709551616", 0, 1, 1, 0, 20},
      {"-5e3", 1, 0, 0, 0, 4},
      {"2.50 ", 0, 0, 0, 0, 4},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ox_json_init(&js, cases[i].text, strlen(cases[i].text));
    CHECK_INT(ox_json_number(&js, &num), 0);
    CHECK_INT(num.neg, cases[i].neg);
    CHECK_INT(num.integral, cases[i].integral);
    CHECK_INT(num.overflow, cases[i].overflow);
    CHECK(num.mag == cases[i].mag);
    CHECK_INT(num.text.len, cases[i].len);
  }
  ox_json_init(&js, "-", 1);
  CHECK_INT(ox_json_number(&js, &num), OX_EINVALID);
  CHECK_STR(js.err, "invalid number");
  /* ox_json_skip leaves the cursor just past the value. */
  const char *v = "{\"a\":[1,{\"b\":\"]}\"}],\"c\":null} tail";
  ox_json_init(&js, v, strlen(v));
  CHECK_INT(ox_json_skip(&js, 0), 0);
  CHECK_STR(js.p, " tail");
  ox_json_init(&js, "[[1]]", 5);
  CHECK_INT(ox_json_skip(&js, OX_JSON_MAX_DEPTH - 2), 0);
  ox_json_init(&js, "[[1]]", 5);
  CHECK_INT(ox_json_skip(&js, OX_JSON_MAX_DEPTH - 1), OX_EDEPTH);
  ox_json_init(&js, "1 ", 2);
  CHECK_INT(ox_json_validate(&js), 0);
  ox_json_init(&js, "1 2", 3);
  CHECK_INT(ox_json_validate(&js), OX_EINVALID);
}

TEST_MAIN(T(minimal_flat), T(classification_parameter), T(nested_data_any_key_order),
          T(triton_full_request), T(binary_extension_several_inputs), T(split_binary_errors),
          T(escaped_names_and_keys), T(unknown_keys_ignored), T(all_datatypes_and_shapes),
          T(many_inputs_and_outputs), T(not_an_object), T(inputs_missing_or_empty),
          T(input_missing_fields), T(unknown_datatype), T(bad_shapes), T(duplicate_names),
          T(duplicate_keys), T(bad_values), T(trailing_garbage), T(invalid_json_anywhere),
          T(syntax_error_wins_over_semantic), T(depth_limit), T(million_brackets),
          T(large_data_scan), T(guard_page), T(messages_bounded_and_clean), T(allocation_failure),
          T(request_params_kept), T(request_params_many), T(request_params_duplicate),
          T(request_params_allocation_failure), T(unescape), T(scanner_numbers))
