/* fuzz_http.c: libFuzzer harness for the HTTP/1.1 head parser and the chunked decoder.
 *
 * The input is used as is (so corpus files are plain HTTP): as a request head under the default
 * and under small limits, as a chunked body, and, when it parses as a chunked request, its body
 * after the head. Beyond crashes and sanitizer reports it checks the parsers' promises and
 * aborts on any broken one:
 *   - incrementality: every prefix of the input (all of them for short inputs, random ones
 *     otherwise) gives "need more" or exactly the whole input's answer, reason included; the
 *     chunked decoder fed in random pieces, in place, gives the same code, consumption and bytes
 *     as one call; and byte by byte too for short inputs;
 *   - results: slices inside the buffer, names are tokens, values trimmed and free of CR/LF,
 *     framing fields coherent, the head ends in CRLFCRLF and re-parses alone to the same length;
 *   - bounds: nothing read past the end (every call gets an exactly-sized heap copy), the decoder
 *     never writes more than it consumed.
 * Split points come from a hash of the input, so every run of an input is the same.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "http/http_parser.h"

#define REQUIRE(cond)                                                          \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "fuzz_http: %s:%d: broken: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

typedef struct {
  uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r) { /* xorshift64* */
  r->s ^= r->s >> 12;
  r->s ^= r->s << 25;
  r->s ^= r->s >> 27;
  return r->s * 0x2545F4914F6CDD1DULL;
}

static uint64_t hash_input(const uint8_t *p, size_t n) { /* FNV-1a */
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h | 1;
}

/* An exactly-sized heap copy, so that ASan sees a read one byte past the end. */
static char *dup_exact(const uint8_t *p, size_t n) {
  char *c = malloc(n ? n : 1);
  REQUIRE(c != NULL);
  if (n) memcpy(c, p, n);
  return c;
}

static int is_tchar(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int in_buf(ox_slice_t s, const char *buf, size_t len) {
  return s.ptr >= buf && s.len <= len && (size_t)(s.ptr - buf) <= len - s.len;
}

static int is_known_head_error(int r) {
  return r == OX_ENEED_MORE || r == OX_EINVALID || r == OX_EURI_TOO_LONG ||
         r == OX_EHEADERS_TOO_LARGE || r == OX_ENOT_IMPLEMENTED || r == OX_ETOO_LARGE;
}

static void check_request(const char *buf, size_t len, int r, const ox_http_limits_t *lim,
                          const ox_http_request_t *req) {
  REQUIRE(r >= 4 && (size_t)r <= len);
  REQUIRE(memcmp(buf + r - 4, "\r\n\r\n", 4) == 0);
  REQUIRE(req->minor_version == 0 || req->minor_version == 1);
  REQUIRE(in_buf(req->method, buf, (size_t)r) && req->method.len > 0);
  for (size_t i = 0; i < req->method.len; i++) REQUIRE(is_tchar((unsigned char)req->method.ptr[i]));
  REQUIRE(in_buf(req->target, buf, (size_t)r) && req->target.len > 0);
  for (size_t i = 0; i < req->target.len; i++) {
    unsigned char c = (unsigned char)req->target.ptr[i];
    REQUIRE(c > 0x20 && c < 0x7f);
  }
  REQUIRE(req->path.ptr == req->target.ptr && req->path.len <= req->target.len);
  if (req->path.len < req->target.len) {
    REQUIRE(req->target.ptr[req->path.len] == '?');
    REQUIRE(req->query.ptr == req->path.ptr + req->path.len + 1);
    REQUIRE(req->query.len == req->target.len - req->path.len - 1);
  } else {
    REQUIRE(req->query.len == 0);
  }
  REQUIRE(req->num_headers <= lim->max_headers && req->num_headers <= OX_HTTP_MAX_HEADERS);
  for (size_t h = 0; h < req->num_headers; h++) {
    ox_slice_t n = req->headers[h].name, v = req->headers[h].value;
    REQUIRE(in_buf(n, buf, (size_t)r) && n.len > 0 && n.len <= lim->max_header_line);
    for (size_t i = 0; i < n.len; i++) REQUIRE(is_tchar((unsigned char)n.ptr[i]));
    REQUIRE(in_buf(v, buf, (size_t)r));
    REQUIRE(v.ptr >= n.ptr + n.len + 1 && n.ptr[n.len] == ':');
    for (size_t i = 0; i < v.len; i++) {
      unsigned char c = (unsigned char)v.ptr[i];
      REQUIRE(c == '\t' || (c >= 0x20 && c != 0x7f));
    }
    if (v.len) {
      REQUIRE(v.ptr[0] != ' ' && v.ptr[0] != '\t');
      REQUIRE(v.ptr[v.len - 1] != ' ' && v.ptr[v.len - 1] != '\t');
    }
  }
  REQUIRE(!(req->chunked && req->has_content_length));
  REQUIRE(!req->chunked || req->minor_version == 1);
  REQUIRE(req->has_content_length || req->content_length == 0);
  REQUIRE(req->content_length <= lim->max_body);
  REQUIRE(req->keep_alive == 0 || req->keep_alive == 1);
  REQUIRE(req->expect_continue == 0 || req->expect_continue == 1);
  if (req->has_content_length) REQUIRE(ox_http_header(req, "Content-Length").ptr != NULL);
  if (req->chunked) REQUIRE(ox_http_header(req, "TRANSFER-ENCODING").ptr != NULL);
}

static ox_http_request_t g_full, g_part;

/* Parses data as a head under lim; checks it and every tested prefix. Returns the result. */
static int check_head(const uint8_t *data, size_t size, const ox_http_limits_t *lim, rng_t *rng) {
  char *buf = dup_exact(data, size);
  const char *why = NULL;
  int r = ox_http_parse_head(buf, size, lim, &g_full, &why);
  REQUIRE(r > 0 || is_known_head_error(r));
  if (r < 0 && r != OX_ENEED_MORE) REQUIRE(why != NULL);
  if (r > 0) {
    check_request(buf, size, r, lim, &g_full);
    /* the head alone parses to the same length */
    const char *why2 = NULL;
    REQUIRE(ox_http_parse_head(buf, (size_t)r, lim, &g_part, &why2) == r);
    REQUIRE(g_part.num_headers == g_full.num_headers);
    REQUIRE(g_part.content_length == g_full.content_length);
  }

  /* prefixes: all of them when short, else a handful plus the edges */
  size_t count = size <= 300 ? size : 24;
  for (size_t k = 0; k < count; k++) {
    size_t p;
    if (size <= 300)
      p = k;
    else if (k == 0 && r > 0)
      p = (size_t)r - 1;
    else if (k == 1 && r > 0)
      p = (size_t)r;
    else
      p = (size_t)(rng_next(rng) % size);
    char *pre = dup_exact(data, p);
    const char *pwhy = NULL;
    int pr = ox_http_parse_head(pre, p, lim, &g_part, &pwhy);
    if (r > 0 && (size_t)r <= p) {
      REQUIRE(pr == r);
      REQUIRE(g_part.num_headers == g_full.num_headers);
      REQUIRE(g_part.chunked == g_full.chunked);
      REQUIRE(g_part.content_length == g_full.content_length);
      REQUIRE(g_part.keep_alive == g_full.keep_alive);
      REQUIRE(g_part.expect_continue == g_full.expect_continue);
      REQUIRE(g_part.method.ptr - pre == g_full.method.ptr - buf);
      REQUIRE(g_part.target.len == g_full.target.len);
    } else if (r > 0 || r == OX_ENEED_MORE) {
      REQUIRE(pr == OX_ENEED_MORE);
    } else if (pr != OX_ENEED_MORE) {
      REQUIRE(pr == r);
      REQUIRE(pwhy == why); /* same static reason: the same byte decided */
    }
    free(pre);
  }
  free(buf);
  return r;
}

typedef struct {
  int rc;
  size_t consumed, produced;
  uint64_t total;
  const char *why;
} chunk_result_t;

static void check_call(const ox_http_chunked_t *d, int rc, size_t in_len, size_t consumed,
                       size_t produced, const char *why) {
  REQUIRE(consumed <= in_len);
  REQUIRE(produced <= consumed);
  REQUIRE(rc == 0 || rc == OX_ENEED_MORE || rc == OX_EINVALID || rc == OX_ETOO_LARGE);
  if (rc == OX_ENEED_MORE) REQUIRE(consumed == in_len);
  if (rc == 0) REQUIRE(d->done);
  if (rc != 0) REQUIRE(!d->done);
  if (rc == OX_EINVALID || rc == OX_ETOO_LARGE) REQUIRE(why != NULL);
  REQUIRE(d->total <= d->max_body);
  REQUIRE(d->chunks <= 65536);
}

/* Decodes data as a chunked body in one call, then in random pieces in place, then (short
 * inputs) byte by byte, and requires the same outcome from all three. */
static void check_chunked(const uint8_t *data, size_t size, uint64_t max_body, rng_t *rng) {
  char *in = dup_exact(data, size);
  char *out1 = malloc(size ? size : 1);
  REQUIRE(out1 != NULL);
  ox_http_chunked_t d = {.max_body = max_body};
  chunk_result_t one = {0};
  one.rc = ox_http_chunked_decode(&d, in, size, out1, &one.consumed, &one.produced, &one.why);
  check_call(&d, one.rc, size, one.consumed, one.produced, one.why);
  REQUIRE(d.total == one.produced);
  one.total = d.total;
  /* once finished, nothing more is taken */
  if (one.rc != OX_ENEED_MORE) {
    size_t c = 99, p = 99;
    int again = ox_http_chunked_decode(&d, in, size, out1 + one.produced, &c, &p, NULL);
    REQUIRE(again == one.rc && c == 0 && p == 0);
  }

  for (int mode = 0; mode < 2; mode++) {
    if (mode == 1 && size > 200) break;
    ox_http_chunked_t ds = {.max_body = max_body};
    char *acc = malloc(size ? size : 1);
    REQUIRE(acc != NULL);
    size_t pos = 0, produced = 0;
    int rc = OX_ENEED_MORE;
    const char *why = NULL;
    while (rc == OX_ENEED_MORE && pos < size) {
      size_t piece = mode == 1 ? 1 : 1 + (size_t)(rng_next(rng) % (size - pos));
      if (mode == 0 && (rng_next(rng) & 3) == 0) piece = 1 + (size_t)(rng_next(rng) % 4);
      if (piece > size - pos) piece = size - pos;
      char *chunk = dup_exact(data + pos, piece);
      size_t c = 0, p = 0;
      why = NULL;
      rc = ox_http_chunked_decode(&ds, chunk, piece, chunk, &c, &p, &why); /* in place */
      check_call(&ds, rc, piece, c, p, why);
      memcpy(acc + produced, chunk, p);
      produced += p;
      pos += c;
      free(chunk);
    }
    if (size == 0) { /* nothing fed: the decoder still waits */
      REQUIRE(one.rc == OX_ENEED_MORE && one.consumed == 0);
    } else {
      REQUIRE(rc == one.rc);
      REQUIRE(pos == one.consumed);
      REQUIRE(produced == one.produced);
      REQUIRE(ds.total == one.total);
      REQUIRE(produced == 0 || memcmp(acc, out1, produced) == 0);
      if (rc != 0 && rc != OX_ENEED_MORE) REQUIRE(why == one.why);
    }
    free(acc);
  }
  free(out1);
  free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rng_t rng = {hash_input(data, size)};

  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  int r = check_head(data, size, &lim, &rng);
  int chunked_request = r > 0 && g_full.chunked;

  ox_http_limits_t small = {
      .max_request_line = 40, .max_header_line = 30, .max_head = 120, .max_headers = 4,
      .max_body = 1000};
  check_head(data, size, &small, &rng);

  check_chunked(data, size, (uint64_t)64 << 20, &rng);
  check_chunked(data, size, 16, &rng);

  if (chunked_request) check_chunked(data + r, size - (size_t)r, lim.max_body, &rng);
  return 0;
}
