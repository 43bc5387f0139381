/* fuzz_infer_req.c: libFuzzer harness for the inference request parser (proto/infer_req.h)
 * and the JSON scanner under it (proto/json.h).
 *
 * Input layout, like a binary-extension body: the JSON header, then optionally a NUL byte and
 * the binary section (a NUL cannot occur in valid JSON, so it is a natural separator and the
 * seeds stay readable). The header is copied into a buffer of exactly its size so ASan sees a
 * read one past it. Beyond "no crash", the harness checks:
 *   - a successful parse's slices all lie inside the text (names with escapes: in the arena),
 *     its counts, shapes and element counts are consistent, and the text is valid JSON;
 *   - parse reports a JSON syntax or depth error only when ox_json_validate rejects the text,
 *     and accepts invalid JSON only inside "data" arrays (skipped by structure alone; the
 *     tensor decoder parses them strictly): with every data slice valid, the text is valid;
 *   - a successful split_binary tiles the binary section exactly, in input order;
 *   - ox_json_unescape accepts exactly the string contents the scanner accepts;
 *   - parse + decode, as the server runs them: when the parse succeeds and every input's
 *     "data" decodes (proto/tensor_json.h) to its shape's element count, the text is valid
 *     JSON; so the whole input with its NUL never gets that far (a NUL passes the request
 *     parser only inside a "data" array, which it skips by structure; the decoder refuses it).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/error.h"
#include "proto/infer_req.h"
#include "proto/json.h"
#include "proto/tensor_json.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

static int inside(ox_slice_t s, const char *buf, size_t n) {
  return s.ptr >= buf && s.len <= n && s.ptr + s.len <= buf + n;
}

static void touch(ox_slice_t s) {
  volatile char sink = 0;
  for (size_t i = 0; i < s.len; i++) sink ^= s.ptr[i];
  (void)sink;
}

static int is_syntax_message(const char *err) {
  return strncmp(err, "malformed JSON", 14) == 0 || strncmp(err, "JSON nesting", 12) == 0;
}

static void check_request(const ox_infer_header_t *req, const char *json, size_t len) {
  REQUIRE(req->num_inputs <= OX_MAX_IO); /* 0 is valid: models without inputs */
  REQUIRE(req->num_outputs <= OX_MAX_IO);
  REQUIRE((req->outputs == NULL) == (req->num_outputs == 0));
  REQUIRE(req->binary_data_output >= -1 && req->binary_data_output <= 1);
  if (req->id_json.ptr) {
    REQUIRE(inside(req->id_json, json, len));
    REQUIRE(req->id_json.len >= 2 && req->id_json.ptr[0] == '"' &&
            req->id_json.ptr[req->id_json.len - 1] == '"');
    char *tmp = malloc(req->id_json.len);
    REQUIRE(tmp);
    REQUIRE(ox_json_unescape(req->id_json.ptr + 1, req->id_json.len - 2, tmp) >= 0);
    free(tmp);
  }
  for (size_t i = 0; i < req->num_inputs; i++) {
    const ox_infer_input_t *in = &req->inputs[i];
    if (!inside(in->name, json, len)) touch(in->name); /* an arena copy: must be readable */
    REQUIRE(in->dtype > OX_DT_INVALID && in->dtype < OX_DT_COUNT_);
    REQUIRE(in->rank >= 0 && in->rank <= OX_MAX_RANK);
    uint64_t count = 1;
    int zero = 0;
    for (int d = 0; d < in->rank; d++) {
      REQUIRE(in->shape[d] >= 0);
      if (in->shape[d] == 0)
        zero = 1;
      else
        REQUIRE(!__builtin_mul_overflow(count, (uint64_t)in->shape[d], &count));
    }
    REQUIRE(in->count == (zero ? 0 : count));
    if (in->data_json.ptr) {
      REQUIRE(inside(in->data_json, json, len));
      REQUIRE(in->data_json.len >= 2 && in->data_json.ptr[0] == '[' &&
              in->data_json.ptr[in->data_json.len - 1] == ']');
    }
    REQUIRE(in->has_binary == 0 || in->has_binary == 1);
    if (!in->has_binary) REQUIRE(in->binary_size == 0);
    for (size_t j = 0; j < i; j++)
      REQUIRE(!(in->name.len == req->inputs[j].name.len &&
                memcmp(in->name.ptr, req->inputs[j].name.ptr, in->name.len) == 0));
  }
  for (size_t i = 0; i < req->num_outputs; i++) {
    const ox_infer_output_t *out = &req->outputs[i];
    if (!inside(out->name, json, len)) touch(out->name);
    REQUIRE(out->binary_data >= -1 && out->binary_data <= 1);
    for (size_t j = 0; j < i; j++)
      REQUIRE(!(out->name.len == req->outputs[j].name.len &&
                memcmp(out->name.ptr, req->outputs[j].name.ptr, out->name.len) == 0));
  }
}

static void check_split(ox_infer_header_t *req, const char *bin, size_t blen) {
  char err[256];
  memset(err, 'X', sizeof err);
  int rc = ox_infer_request_split_binary(req, bin, blen, err, sizeof err);
  if (rc != 0) {
    REQUIRE(rc == OX_EINVALID);
    REQUIRE(memchr(err, 0, sizeof err) && err[0]);
    return;
  }
  size_t off = 0;
  for (size_t i = 0; i < req->num_inputs; i++) {
    const ox_infer_input_t *in = &req->inputs[i];
    REQUIRE((in->data_json.ptr != NULL) != in->has_binary);
    if (!in->has_binary) {
      REQUIRE(in->binary.ptr == NULL && in->binary.len == 0);
      continue;
    }
    REQUIRE(in->binary.len == in->binary_size && in->binary.ptr != NULL);
    if (blen) REQUIRE(in->binary.ptr == bin + off);
    off += in->binary.len;
  }
  REQUIRE(off == blen);
}

/* The scanner and ox_json_unescape agree on which string contents are valid. */
static void check_unescape(const char *s, size_t n) {
  if (n > 4096) n = 4096;
  char *quoted = malloc(n + 2), *out = malloc(n ? n : 1);
  REQUIRE(quoted && out);
  quoted[0] = '"';
  memcpy(quoted + 1, s, n);
  quoted[n + 1] = '"';
  ox_json_t js;
  ox_json_init(&js, quoted, n + 2);
  ox_slice_t contents;
  int escaped;
  int scan_ok = ox_json_string(&js, &contents, &escaped) == 0 && js.p == js.end;
  long r = ox_json_unescape(s, n, out);
  REQUIRE(scan_ok == (r >= 0));
  REQUIRE(r <= (long)n);
  if (scan_ok && !escaped) REQUIRE((size_t)r == n && memcmp(out, s, n) == 0);
  free(quoted);
  free(out);
}

/* 1 when every input's "data" decodes as the server decodes it (infer/infer.c's build_input: the
 * element count bounded by the text first); inputs without "data" (binary) are left out. */
static int all_data_decodes(const ox_infer_header_t *req, ox_arena_t *arena) {
  for (size_t i = 0; i < req->num_inputs; i++) {
    const ox_infer_input_t *in = &req->inputs[i];
    if (!in->data_json.ptr) continue;
    if (in->count > in->data_json.len) return 0;
    size_t esz = in->dtype == OX_DT_BYTES ? sizeof(ox_slice_t) : ox_dtype_size(in->dtype);
    void *buf = ox_arena_alloc_aligned(arena, (size_t)in->count * esz + 1, 64);
    REQUIRE(buf);
    char err[256];
    if (ox_tensor_json_decode(in->data_json, in->dtype, in->count, buf, arena, err, sizeof err))
      return 0;
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *nul = memchr(data, 0, size);
  size_t jlen = nul ? (size_t)(nul - (const char *)data) : size;
  char *json = malloc(jlen ? jlen : 1);
  REQUIRE(json);
  memcpy(json, data, jlen);

  ox_arena_t arena;
  ox_arena_init(&arena);
  ox_infer_header_t req;
  char err[256];
  memset(err, 'X', sizeof err);
  int rc = ox_infer_request_parse(json, jlen, &arena, &req, err, sizeof err);

  ox_json_t js;
  ox_json_init(&js, json, jlen);
  int valid_json = ox_json_validate(&js) == 0;
  if (rc == 0) {
    int data_valid = 1;
    for (size_t i = 0; i < req.num_inputs; i++) {
      if (!req.inputs[i].data_json.ptr) continue;
      ox_json_t dj;
      ox_json_init(&dj, req.inputs[i].data_json.ptr, req.inputs[i].data_json.len);
      if (ox_json_validate(&dj) != 0) data_valid = 0;
    }
    REQUIRE(valid_json || !data_valid);
    REQUIRE(valid_json || !all_data_decodes(&req, &arena));
    check_request(&req, json, jlen);
    size_t blen = nul ? size - jlen - 1 : 0;
    char *bin = blen ? malloc(blen) : NULL;
    if (blen) {
      REQUIRE(bin);
      memcpy(bin, nul + 1, blen);
    }
    check_split(&req, bin, blen);
    free(bin);
  } else {
    REQUIRE(rc == OX_EINVALID || rc == OX_EDEPTH || rc == OX_EOVERFLOW || rc == OX_ENOMEM);
    REQUIRE(memchr(err, 0, sizeof err) && err[0]);
    /* No internal names in messages (unless the request itself quoted one back). */
    REQUIRE(strstr(err, "ox_") == NULL || memmem(json, jlen, "ox_", 3) != NULL);
    REQUIRE(!is_syntax_message(err) || !valid_json);
    REQUIRE(rc != OX_EDEPTH || !valid_json);
  }
  ox_arena_free(&arena);

  /* The whole input with its NUL is never a valid request once its data is decoded too. */
  if (nul) {
    ox_arena_init(&arena);
    REQUIRE(ox_infer_request_parse((const char *)data, size, &arena, &req, err, sizeof err) < 0 ||
            !all_data_decodes(&req, &arena));
    ox_arena_free(&arena);
  }
  check_unescape(json, jlen);
  free(json);
  return 0;
}
