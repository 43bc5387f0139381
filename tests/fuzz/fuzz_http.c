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

#define REQUIRE(cond)                                                               \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "fuzz_http: %s:%d: broken: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                      \
    }                                                                               \
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

static int hex_digit(char ch) {
  unsigned char c = (unsigned char)ch;
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int in_buf(ox_slice_t s, const char *buf, size_t len) {
  return s.ptr >= buf && s.len <= len && (size_t)(s.ptr - buf) <= len - s.len;
}

static int is_known_head_error(int r) {
  return r == OX_ENEED_MORE || r == OX_EINVALID || r == OX_EURI_TOO_LONG ||
         r == OX_EHEADERS_TOO_LARGE || r == OX_ENOT_IMPLEMENTED || r == OX_ETOO_LARGE;
}

/* An independent, slow re-derivation of what a successful parse must have found. */
static int list_has(ox_slice_t v, const char *tok) {
  size_t i = 0;
  while (i <= v.len) {
    size_t s = i;
    while (i < v.len && v.ptr[i] != ',') i++;
    size_t e = i;
    while (s < e && (v.ptr[s] == ' ' || v.ptr[s] == '\t')) s++;
    while (e > s && (v.ptr[e - 1] == ' ' || v.ptr[e - 1] == '\t')) e--;
    if (ox_slice_eq_nocase(ox_slice(v.ptr + s, e - s), tok)) return 1;
    i++;
  }
  return 0;
}

static void oracle(const char *buf, int r, const ox_http_limits_t *lim,
                   const ox_http_request_t *req) {
  /* lines are contiguous, end in CRLF and respect their limits */
  const char *rl_end = req->target.ptr + req->target.len + 9; /* " HTTP/1.x" */
  REQUIRE(rl_end + 2 <= buf + r && rl_end[0] == '\r' && rl_end[1] == '\n');
  REQUIRE((size_t)(rl_end - req->method.ptr) <= lim->max_request_line);
  REQUIRE(req->method.ptr == buf || (req->method.ptr == buf + 2 && buf[0] == '\r'));
  const char *line = rl_end + 2;
  size_t n_cl = 0, n_te = 0, expect = 0;
  int close = 0, keep = 0;
  for (size_t h = 0; h < req->num_headers; h++) {
    ox_slice_t n = req->headers[h].name, v = req->headers[h].value;
    REQUIRE(n.ptr == line);
    const char *e = v.ptr + v.len;
    while (*e == ' ' || *e == '\t') e++;
    REQUIRE(e[0] == '\r' && e[1] == '\n');
    REQUIRE((size_t)(e - line) <= lim->max_header_line);
    line = e + 2;
    if (ox_slice_eq_nocase(n, "content-length")) {
      n_cl++;
      uint64_t x = 0;
      REQUIRE(v.len > 0);
      for (size_t i = 0; i < v.len; i++) {
        REQUIRE(v.ptr[i] >= '0' && v.ptr[i] <= '9');
        REQUIRE(!__builtin_mul_overflow(x, 10, &x));
        REQUIRE(!__builtin_add_overflow(x, (uint64_t)(v.ptr[i] - '0'), &x));
      }
      REQUIRE(req->content_length == x);
    }
    if (ox_slice_eq_nocase(n, "transfer-encoding")) {
      n_te++;
      REQUIRE(ox_slice_eq_nocase(v, "chunked"));
    }
    if (ox_slice_eq_nocase(n, "connection")) {
      close |= list_has(v, "close");
      keep |= list_has(v, "keep-alive");
    }
    if (ox_slice_eq_nocase(n, "expect") && ox_slice_eq_nocase(v, "100-continue")) expect = 1;
  }
  REQUIRE(line + 2 == buf + r);
  REQUIRE((size_t)(line - (rl_end + 2)) <= lim->max_head);
  REQUIRE(n_cl <= 1 && n_te <= 1 && !(n_cl && n_te));
  REQUIRE(req->has_content_length == (n_cl == 1));
  REQUIRE(req->chunked == (n_te == 1));
  REQUIRE(req->keep_alive == (!close && (req->minor_version == 1 || keep)));
  REQUIRE(req->expect_continue == (int)(expect && req->minor_version == 1));
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
  /* The path starts the target (origin-form), or follows the authority of an absolute-form
   * target ("http[s]://authority", then the path, or a static "/" when there is none). */
  const char *pstart = req->target.ptr, *tend = req->target.ptr + req->target.len;
  if (req->authority.len) {
    REQUIRE(req->authority.ptr > req->target.ptr &&
            req->authority.ptr + req->authority.len <= tend);
    REQUIRE(memcmp(req->authority.ptr - 3, "://", 3) == 0);
    REQUIRE(!memchr(req->authority.ptr, '/', req->authority.len));
    REQUIRE(!memchr(req->authority.ptr, '@', req->authority.len));
    pstart = req->authority.ptr + req->authority.len;
    if (req->path.len == 1 && req->path.ptr[0] == '/' && !(pstart < tend && *pstart == '/')) {
      REQUIRE(pstart == tend || *pstart == '?');
      REQUIRE(pstart == tend ? req->query.len == 0 : req->query.ptr == pstart + 1);
      pstart = NULL; /* the static "/" */
    }
  }
  if (pstart) {
    REQUIRE(req->path.ptr == pstart && req->path.len <= (size_t)(tend - pstart));
    if (req->path.ptr + req->path.len < tend) {
      REQUIRE(req->path.ptr[req->path.len] == '?');
      REQUIRE(req->query.ptr == req->path.ptr + req->path.len + 1);
      REQUIRE(req->query.ptr + req->query.len == tend);
    } else {
      REQUIRE(req->query.len == 0);
    }
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
  oracle(buf, r, lim, req);
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

/* A reference chunked decoder written differently on purpose: whole lines at a time, on the
 * whole input, no state machine. It only finds an error once the offending line is complete,
 * where the real decoder refuses the first bad byte, so the comparison allows for that. */
static int ows(char c) {
  return c == ' ' || c == '\t';
}

static int ref_ext_ok(const char *l, size_t n) {
  size_t i = 0;
  while (i < n && hex_digit(l[i]) >= 0) i++;
  if (i == 0) return 0;
  while (i < n) {
    while (i < n && ows(l[i])) i++;
    if (i == n || l[i++] != ';') return 0;
    while (i < n && ows(l[i])) i++;
    size_t s = i;
    while (i < n && is_tchar((unsigned char)l[i])) i++;
    if (i == s) return 0;
    size_t k = i;
    while (i < n && ows(l[i])) i++;
    if (i == n || l[i] != '=') {
      i = k;
      continue;
    }
    i++;
    while (i < n && ows(l[i])) i++;
    if (i < n && l[i] == '"') {
      for (i++;; i++) {
        if (i == n) return 0;
        unsigned char c = (unsigned char)l[i];
        if (c == '"') break;
        if (c == '\\') {
          if (++i == n) return 0;
          c = (unsigned char)l[i];
          if (!(c == '\t' || (c >= 0x20 && c != 0x7f))) return 0;
        } else if (!(c == '\t' || (c >= 0x20 && c != 0x7f))) {
          return 0;
        }
      }
      i++;
    } else {
      s = i;
      while (i < n && is_tchar((unsigned char)l[i])) i++;
      if (i == s) return 0;
    }
  }
  return 1;
}

static int ref_field_ok(const char *l, size_t n) {
  size_t i = 0;
  while (i < n && is_tchar((unsigned char)l[i])) i++;
  if (i == 0 || i == n || l[i] != ':') return 0;
  for (i++; i < n; i++) {
    unsigned char c = (unsigned char)l[i];
    if (!(c == '\t' || (c >= 0x20 && c != 0x7f))) return 0;
  }
  return 1;
}

/* Finds the line at pos: 1 with *len when its CRLF is there, 0 when incomplete, -1 when bad. */
static int ref_line(const char *in, size_t n, size_t pos, size_t *len) {
  for (size_t i = pos; i < n; i++) {
    if (in[i] == '\n') return -1;
    if (in[i] == '\r') {
      if (i + 1 == n) return 0;
      if (in[i + 1] != '\n') return -1;
      *len = i - pos;
      return 1;
    }
  }
  return 0;
}

static int ref_chunked(const char *in, size_t n, uint64_t max_body, char *out, size_t *consumed,
                       size_t *produced) {
  size_t pos = 0, o = 0, len = 0, chunks = 0, trailer = 0;
  uint64_t total = 0;
  int rc;
  *consumed = *produced = 0;
  for (;;) {
    if ((rc = ref_line(in, n, pos, &len)) <= 0) return rc ? OX_EINVALID : OX_ENEED_MORE;
    if (len > 1024 || !ref_ext_ok(in + pos, len)) return OX_EINVALID;
    uint64_t size = 0;
    for (size_t i = pos; hex_digit(in[i]) >= 0; i++)
      if (size >> 60)
        return OX_EINVALID;
      else
        size = size * 16 + (uint64_t)hex_digit(in[i]);
    pos += len + 2;
    if (size == 0) break;
    if (++chunks > 65536) return OX_EINVALID;
    if (size > max_body - total) return OX_ETOO_LARGE;
    total += size;
    size_t take = n - pos < size ? n - pos : (size_t)size;
    memcpy(out + o, in + pos, take);
    o += take;
    pos += take;
    *produced = o;
    if (take < size) return OX_ENEED_MORE;
    if (pos < n && in[pos] != '\r') return OX_EINVALID;
    if (pos + 1 < n && in[pos + 1] != '\n') return OX_EINVALID;
    if (pos + 2 > n) return OX_ENEED_MORE;
    pos += 2;
  }
  for (;;) {
    if ((rc = ref_line(in, n, pos, &len)) <= 0) return rc ? OX_EINVALID : OX_ENEED_MORE;
    if (len == 0) {
      *consumed = pos + 2;
      return 0;
    }
    trailer += len + 2;
    if (len > 1024 || trailer > 8192 || !ref_field_ok(in + pos, len)) return OX_EINVALID;
    pos += len + 2;
  }
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
  /* the reference agrees on every complete line */
  char *out2 = malloc(size ? size : 1);
  REQUIRE(out2 != NULL);
  size_t rc2_consumed = 0, rc2_produced = 0;
  int rc2 = ref_chunked(in, size, max_body, out2, &rc2_consumed, &rc2_produced);
  if (rc2 == 0) {
    REQUIRE(one.rc == 0 && one.consumed == rc2_consumed);
  } else if (rc2 == OX_ENEED_MORE) {
    REQUIRE(one.rc == OX_ENEED_MORE || one.rc == OX_EINVALID);
  } else {
    REQUIRE(one.rc == rc2);
  }
  if (one.rc == rc2) REQUIRE(one.produced == rc2_produced);
  REQUIRE(one.produced <= rc2_produced && memcmp(out1, out2, one.produced) == 0);
  free(out2);
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

  ox_http_limits_t small = {.max_request_line = 40,
                            .max_header_line = 30,
                            .max_head = 120,
                            .max_headers = 4,
                            .max_body = 1000};
  check_head(data, size, &small, &rng);

  check_chunked(data, size, (uint64_t)64 << 20, &rng);
  check_chunked(data, size, 16, &rng);

  if (chunked_request) check_chunked(data + r, size - (size_t)r, lim.max_body, &rng);
  return 0;
}
