/* http_parser_test.c: unit tests for the HTTP/1.1 head parser and chunked decoder: every parsing
 * row of RELIABILITY.md's framing table with its expected code, the valid cases, incremental
 * feeding, and input placed flush against a guard page. */
#include "http/http_parser.h"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"
#include "http/conn.h"
#include "test.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static ox_http_request_t g_req;
static const char *g_why;

static int parse_n(const char *s, size_t n, const ox_http_limits_t *lim) {
  g_why = NULL;
  return ox_http_parse_head(s, n, lim, &g_req, &g_why);
}

static int parse(const char *s) {
  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  return parse_n(s, strlen(s), &lim);
}

/* Literals may hold NUL bytes: take their size, not strlen. */
#define PARSE_LIT(lit) parse_lit_((lit), sizeof(lit) - 1)
static int parse_lit_(const char *s, size_t n) {
  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  return parse_n(s, n, &lim);
}

/* An error must come with a reason. */
#define CHECK_HEAD_ERR(expr, code) \
  do {                             \
    CHECK_INT((expr), (code));     \
    CHECK(g_why != NULL);          \
  } while (0)

static int slice_is(ox_slice_t s, const char *lit) {
  return s.len == strlen(lit) && (s.len == 0 || memcmp(s.ptr, lit, s.len) == 0);
}

/* One chunked decode of a whole buffer into a separate output. */
static char g_out[1 << 20];
static size_t g_consumed, g_produced;
static int chunked_n(ox_http_chunked_t *d, const char *s, size_t n) {
  g_why = NULL;
  g_consumed = g_produced = (size_t)-1;
  return ox_http_chunked_decode(d, s, n, g_out, &g_consumed, &g_produced, &g_why);
}
static int chunked(const char *s) {
  ox_http_chunked_t d = {.max_body = (uint64_t)64 << 20};
  return chunked_n(&d, s, strlen(s));
}
#define CHECK_CHUNKED_ERR(s, code) \
  do {                             \
    CHECK_INT(chunked(s), (code)); \
    CHECK(g_why != NULL);          \
  } while (0)

/* A buffer to build big inputs in. */
static char g_big[1 << 21];
static size_t g_big_len;
static void big_reset(void) {
  g_big_len = 0;
}
static void big_add(const char *s) {
  size_t n = strlen(s);
  memcpy(g_big + g_big_len, s, n);
  g_big_len += n;
  g_big[g_big_len] = 0;
}
static void big_fill(char c, size_t n) {
  memset(g_big + g_big_len, c, n);
  g_big_len += n;
  g_big[g_big_len] = 0;
}

/* Two pages, the second PROT_NONE: data placed at page_end(n) ends exactly at the guard. */
static char *g_pages;
static size_t g_page;
static char *guard_place(const char *s, size_t n) {
  if (!g_pages) {
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    void *m = mmap(NULL, 2 * g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    if (mprotect((char *)m + g_page, g_page, PROT_NONE) != 0) return NULL;
    g_pages = m;
  }
  if (n > g_page) return NULL;
  char *p = g_pages + g_page - n;
  if (n) memcpy(p, s, n);
  return p;
}

/* ---- head: valid requests --------------------------------------------------------------- */

TEST(limits_default_values) {
  ox_http_limits_t lim;
  memset(&lim, 0xff, sizeof lim);
  ox_http_limits_default(&lim);
  CHECK_INT(lim.max_request_line, 8192);
  CHECK_INT(lim.max_header_line, 8192);
  CHECK_INT(lim.max_head, 32768);
  CHECK_INT(lim.max_headers, 100);
  CHECK(lim.max_body == (uint64_t)64 << 20);
}

TEST(head_get_no_body) {
  const char *s = "GET /v2/models/m?x=1&y HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n";
  CHECK_INT(parse(s), strlen(s));
  CHECK(slice_is(g_req.method, "GET"));
  CHECK(slice_is(g_req.target, "/v2/models/m?x=1&y"));
  CHECK(slice_is(g_req.path, "/v2/models/m"));
  CHECK(slice_is(g_req.query, "x=1&y"));
  CHECK(g_req.target.ptr == s + 4);
  CHECK_INT(g_req.minor_version, 1);
  CHECK_INT(g_req.num_headers, 2);
  CHECK(slice_is(g_req.headers[0].name, "Host"));
  CHECK(slice_is(g_req.headers[0].value, "h"));
  CHECK(slice_is(g_req.headers[1].name, "Accept"));
  CHECK(slice_is(g_req.headers[1].value, "*/*"));
  CHECK_INT(g_req.chunked, 0);
  CHECK_INT(g_req.has_content_length, 0);
  CHECK_INT(g_req.content_length, 0);
  CHECK_INT(g_req.keep_alive, 1);
  CHECK_INT(g_req.expect_continue, 0);
}

TEST(head_no_headers_and_empty_query) {
  const char *s = "GET /a? HTTP/1.1\r\n\r\n";
  CHECK_INT(parse(s), strlen(s));
  CHECK_INT(g_req.num_headers, 0);
  CHECK(slice_is(g_req.path, "/a"));
  CHECK(slice_is(g_req.query, ""));
  CHECK(parse("GET /a?b?c HTTP/1.1\r\n\r\n") > 0);
  CHECK(slice_is(g_req.path, "/a"));
  CHECK(slice_is(g_req.query, "b?c"));
}

TEST(head_post_content_length) {
  const char *s = "POST /infer HTTP/1.1\r\nContent-Length: 13\r\n\r\n{\"inputs\":[]}";
  CHECK_INT(parse(s), strlen(s) - 13);
  CHECK_INT(g_req.has_content_length, 1);
  CHECK_INT(g_req.content_length, 13);
  CHECK_INT(g_req.chunked, 0);
  CHECK_INT(parse("POST / HTTP/1.1\r\ncontent-length: 007\r\n\r\n"), 40);
  CHECK_INT(g_req.content_length, 7);
  CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length:0\r\n\r\n"), 37);
  CHECK_INT(g_req.has_content_length, 1);
  CHECK_INT(g_req.content_length, 0);
}

TEST(head_content_length_max_uint64) {
  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  lim.max_body = UINT64_MAX;
  const char *s = "POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
  CHECK_INT(parse_n(s, strlen(s), &lim), strlen(s));
  CHECK(g_req.content_length == UINT64_MAX);
}

TEST(head_chunked) {
  const char *s = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
  CHECK_INT(parse(s), strstr(s, "\r\n\r\n") + 4 - s);
  CHECK_INT(g_req.chunked, 1);
  CHECK_INT(g_req.has_content_length, 0);
  CHECK_INT(g_req.content_length, 0);
  CHECK(parse("POST / HTTP/1.1\r\ntransfer-encoding:  ChUnKeD \r\n\r\n") > 0);
  CHECK_INT(g_req.chunked, 1);
}

TEST(head_value_trimming_and_bytes) {
  const char s[] =
      "GET / HTTP/1.1\r\nA:  x y \t\r\nB:\r\nC: \t \r\nD:\tq\tr\r\nE: caf\xc3\xa9\r\n\r\n";
  CHECK_INT(PARSE_LIT(s), sizeof s - 1);
  CHECK_INT(g_req.num_headers, 5);
  CHECK(slice_is(g_req.headers[0].value, "x y"));
  CHECK(slice_is(g_req.headers[1].value, ""));
  CHECK(slice_is(g_req.headers[2].value, ""));
  CHECK(slice_is(g_req.headers[3].value, "q\tr"));
  CHECK(slice_is(g_req.headers[4].value, "caf\xc3\xa9"));
  CHECK(g_req.headers[1].value.ptr != NULL);
}

TEST(head_header_lookup) {
  CHECK(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Thing: b\r\n\r\n") > 0);
  CHECK(slice_is(ox_http_header(&g_req, "x-thing"), "b"));
  CHECK(slice_is(ox_http_header(&g_req, "HOST"), "a"));
  ox_slice_t none = ox_http_header(&g_req, "X-Thin");
  CHECK(none.ptr == NULL && none.len == 0);
  CHECK(ox_http_header(&g_req, "nope").ptr == NULL);
}

TEST(head_pipelined) {
  const char *a = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  const char *s = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
  int r = parse(s);
  CHECK_INT(r, strlen(a));
  CHECK(slice_is(g_req.path, "/a"));
  CHECK_INT(parse(s + r), strlen(s) - strlen(a));
  CHECK(slice_is(g_req.path, "/b"));
  /* the second may be incomplete: the first is still complete */
  CHECK_INT(parse_lit_(s, strlen(a) + 5), strlen(a));
}

TEST(head_keep_alive_rules) {
  CHECK(parse("GET / HTTP/1.1\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 1);
  CHECK(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 0);
  CHECK(parse("GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 0);
  CHECK(parse("GET / HTTP/1.1\r\nConnection: Keep-Alive, Upgrade\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 1);
  CHECK(parse("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 1);
  CHECK(parse("GET / HTTP/1.0\r\n\r\n") > 0);
  CHECK_INT(g_req.minor_version, 0);
  CHECK_INT(g_req.keep_alive, 0);
  CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 1);
  CHECK(parse("GET / HTTP/1.0\r\nConnection: ,, KEEP-ALIVE ,\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 1);
  CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 0);
  CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 0);
  CHECK(parse("GET / HTTP/1.0\r\nX-Connection: keep-alive\r\n\r\n") > 0);
  CHECK_INT(g_req.keep_alive, 0);
}

TEST(head_expect) {
  CHECK(parse("POST / HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n") > 0);
  CHECK_INT(g_req.expect_continue, 1);
  CHECK(parse("POST / HTTP/1.1\r\nExpect:  100-Continue \r\n\r\n") > 0);
  CHECK_INT(g_req.expect_continue, 1);
  CHECK(parse("POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n") > 0); /* the server answers 417 */
  CHECK_INT(g_req.expect_continue, 0);
  CHECK(parse("POST / HTTP/1.1\r\nExpect: 100-continuex\r\n\r\n") > 0);
  CHECK_INT(g_req.expect_continue, 0);
  /* RFC 9110 10.1.1: ignored in HTTP/1.0 */
  CHECK(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n") > 0);
  CHECK_INT(g_req.expect_continue, 0);
}

TEST(head_target_forms) {
  CHECK(parse("OPTIONS * HTTP/1.1\r\n\r\n") > 0);
  CHECK(slice_is(g_req.target, "*"));
  CHECK(parse("GET http://h:8000/v2/health/ready?a=b HTTP/1.1\r\n\r\n") > 0);
  CHECK(slice_is(g_req.target, "http://h:8000/v2/health/ready?a=b"));
  CHECK(slice_is(g_req.query, "a=b"));
  CHECK(parse("CONNECT example.com:443 HTTP/1.1\r\n\r\n") > 0);
  CHECK(slice_is(g_req.method, "CONNECT"));
  CHECK(parse("M-SEARCH /%41~!$&'()*+,;=:@ HTTP/1.1\r\n\r\n") > 0);
}

/* RFC 9112 3.2.2: an absolute-form target is routed by its path; its authority replaces Host. */
TEST(head_absolute_form) {
  CHECK(parse("GET http://h:8000/v2/health/ready?a=b HTTP/1.1\r\nHost: other\r\n\r\n") > 0);
  CHECK(slice_is(g_req.authority, "h:8000"));
  CHECK(slice_is(g_req.path, "/v2/health/ready"));
  CHECK(slice_is(g_req.query, "a=b"));
  CHECK(parse("GET HTTP://example.com HTTP/1.1\r\n\r\n") > 0);
  CHECK(slice_is(g_req.authority, "example.com"));
  CHECK(slice_is(g_req.path, "/"));
  CHECK(parse("GET https://[::1]:8443/v2?x HTTP/1.1\r\n\r\n") > 0);
  CHECK(slice_is(g_req.authority, "[::1]:8443"));
  CHECK(slice_is(g_req.path, "/v2"));
  CHECK(slice_is(g_req.query, "x"));
  CHECK(parse("GET http://h?q HTTP/1.1\r\n\r\n") > 0);
  CHECK(slice_is(g_req.path, "/"));
  CHECK(slice_is(g_req.query, "q"));
  CHECK(parse("GET /v2 HTTP/1.1\r\n\r\n") > 0);
  CHECK(g_req.authority.len == 0);
  CHECK_HEAD_ERR(parse("GET http:///v2 HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET http://user@h/v2 HTTP/1.1\r\n\r\n"), OX_EINVALID);
  /* other schemes stay opaque: the router refuses them (400) */
  CHECK(parse("GET ftp://h/v2 HTTP/1.1\r\n\r\n") > 0);
  CHECK(slice_is(g_req.path, "ftp://h/v2"));
  /* the head split at every byte: need-more until the end, then the same result */
  static const char whole[] = "GET http://h:1/v2/health/live HTTP/1.1\r\nHost: h\r\n\r\n";
  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  for (size_t n = 0; n + 1 < sizeof whole - 1; n++)
    CHECK_INT(parse_n(whole, n, &lim), OX_ENEED_MORE);
  CHECK_INT(parse_n(whole, sizeof whole - 1, &lim), (long long)(sizeof whole - 1));
  CHECK(slice_is(g_req.path, "/v2/health/live"));
}

TEST(head_leading_crlf_once) {
  const char *s = "\r\nGET / HTTP/1.1\r\n\r\n";
  CHECK_INT(parse(s), strlen(s));
  CHECK(slice_is(g_req.method, "GET"));
  CHECK_HEAD_ERR(parse("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("\rG"), OX_EINVALID);
  CHECK_INT(parse("\r"), OX_ENEED_MORE);
  CHECK_INT(parse(""), OX_ENEED_MORE);
}

/* ---- head: the framing table ------------------------------------------------------------ */

TEST(head_cl_and_te) {
  CHECK_HEAD_ERR(
      parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
      OX_EINVALID);
  CHECK_STR(g_why, "both Content-Length and Transfer-Encoding");
  CHECK_HEAD_ERR(
      parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
      OX_EINVALID);
  CHECK_STR(g_why, "both Content-Length and Transfer-Encoding");
  /* decided as soon as the second header's line is complete */
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
                 OX_EINVALID);
}

TEST(head_cl_duplicate) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
                 OX_EINVALID);
  CHECK_STR(g_why, "duplicate Content-Length");
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n"),
                 OX_EINVALID);
  CHECK_STR(g_why, "duplicate Content-Length");
}

TEST(head_cl_empty) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length:   \r\n\r\n"), OX_EINVALID);
}

TEST(head_cl_signed) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), OX_EINVALID);
}

TEST(head_cl_non_decimal) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 1a\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 1.0\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 1\t2\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: \xd9\xa1\r\n\r\n"), OX_EINVALID);
}

TEST(head_cl_list) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "Content-Length list");
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: ,5\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n"), OX_EINVALID);
}

TEST(head_cl_overflow) {
  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  lim.max_body = UINT64_MAX; /* so that only the overflow can refuse it */
  const char *s = "POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n";
  CHECK_HEAD_ERR(parse_n(s, strlen(s), &lim), OX_EINVALID);
  CHECK_STR(g_why, "Content-Length overflow");
  s = "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
  CHECK_HEAD_ERR(parse_n(s, strlen(s), &lim), OX_EINVALID);
}

TEST(head_cl_above_body_limit) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 67108865\r\n\r\n"), OX_ETOO_LARGE);
  CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 67108864\r\n\r\n"), 45);
  /* right away: the head is not even complete */
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nContent-Length: 67108865\r\n"), OX_ETOO_LARGE);
  CHECK_INT(parse("POST / HTTP/1.1\r\nContent-Length: 67108865\r"), OX_ENEED_MORE);
  CHECK_INT(ox_http_status_of(OX_ETOO_LARGE), 413);
}

TEST(head_te_not_exactly_chunked) {
  const char *p = "POST / HTTP/1.1\r\n";
  char s[256];
  static const char *const bad[] = {"gzip, chunked", ",chunked",  "chunked,", "chunked, chunked",
                                    "chunked;q=1",   "chunked x", "",         " ",
                                    "\"chunked\""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(s, sizeof s, "%sTransfer-Encoding: %s\r\n\r\n", p, bad[i]);
    CHECK_HEAD_ERR(parse(s), OX_EINVALID);
  }
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "Transfer-Encoding list");
}

TEST(head_te_duplicated) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n"),
                 OX_EINVALID);
  CHECK_STR(g_why, "duplicate Transfer-Encoding");
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
                       "chunked\r\n\r\n"),
                 OX_ENOT_IMPLEMENTED); /* the first one already decides */
}

TEST(head_te_unknown_coding) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), OX_ENOT_IMPLEMENTED);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"),
                 OX_ENOT_IMPLEMENTED);
  CHECK_HEAD_ERR(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunk\r\n\r\n"), OX_ENOT_IMPLEMENTED);
  CHECK_INT(ox_http_status_of(OX_ENOT_IMPLEMENTED), 501);
}

TEST(head_te_http10) {
  CHECK_HEAD_ERR(parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "Transfer-Encoding in HTTP/1.0");
}

TEST(head_obs_fold) {
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), OX_EINVALID);
  /* refused before the folded line completes */
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\r\n "), OX_EINVALID);
}

TEST(head_bare_cr) {
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\rX: a\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "bare CR in header");
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\r\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "bare CR in header");
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\r\n\r\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX\r: a\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET /\r HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET\r/ HTTP/1.1\r\n\r\n"), OX_EINVALID);
}

TEST(head_bare_lf) {
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\n\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\r\n\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX\n: a\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET /\n HTTP/1.1\r\n\r\n"), OX_EINVALID);
}

TEST(head_nul_and_control_bytes) {
  CHECK_HEAD_ERR(PARSE_LIT("GET / HTTP/1.1\r\nX\0Y: a\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "control byte in field name");
  CHECK_HEAD_ERR(PARSE_LIT("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "control byte in field value");
  CHECK_HEAD_ERR(PARSE_LIT("GET / HTTP/1.1\r\nX: \0\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\x1b[0m\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX\x7f: a\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX\x1f: a\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(PARSE_LIT("GET /a\0 HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET /a\x7f HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET /\xc3\xa9 HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(PARSE_LIT("G\0T / HTTP/1.1\r\n\r\n"), OX_EINVALID);
  /* HTAB is fine inside a value */
  CHECK(parse("GET / HTTP/1.1\r\nX: a\tb\r\n\r\n") > 0);
}

TEST(head_space_before_colon) {
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "whitespace before colon");
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nContent-Length\t: 5\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "whitespace before colon");
}

TEST(head_bad_field_names) {
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\n: a\r\n\r\n"), OX_EINVALID);
  CHECK_STR(g_why, "empty field name");
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX(y): a\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\nX\"y: a\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET / HTTP/1.1\r\n\xc3\xa9: a\r\n\r\n"), OX_EINVALID);
}

TEST(head_bad_request_line) {
  CHECK_HEAD_ERR(parse(" / HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("G@T / HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET  / HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET /  HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET /a b HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET\t/ HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET /\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET abc HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET 1a:b HTTP/1.1\r\n\r\n"), OX_EINVALID);
  CHECK_HEAD_ERR(parse("GET ** HTTP/1.1\r\n\r\n"), OX_EINVALID);
}

TEST(head_bad_version) {
  static const char *const bad[] = {"HTTP/2.0",  "HTTP/1.2", "HTTP/1.10", "http/1.1", "HTTP/1",
                                    "HTTP/1.1 ", "HTTP/1.",  "HTTP/0.9",  "HTTP/11",  "HTTP /1.1"};
  char s[128];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(s, sizeof s, "GET / %s\r\n\r\n", bad[i]);
    CHECK_HEAD_ERR(parse(s), OX_EINVALID);
  }
  /* refused as soon as the version cannot be right */
  CHECK_HEAD_ERR(parse("GET / HTTP/2"), OX_EINVALID);
  CHECK_INT(parse("GET / HTTP/1"), OX_ENEED_MORE);
}

TEST(head_request_line_too_long) {
  big_reset();
  big_add("GET /");
  big_fill('a', 8192 - 5 - 9); /* request line of exactly 8192 bytes */
  big_add(" HTTP/1.1\r\n\r\n");
  CHECK_INT(parse(g_big), (int)g_big_len);
  big_reset();
  big_add("GET /");
  big_fill('a', 8192 - 5 - 9 + 1);
  big_add(" HTTP/1.1\r\n\r\n");
  CHECK_HEAD_ERR(parse(g_big), OX_EURI_TOO_LONG);
  /* while incomplete: 8193 bytes and no end of line in sight */
  big_reset();
  big_add("GET /");
  big_fill('a', 8187); /* 8192 bytes */
  CHECK_INT(parse(g_big), OX_ENEED_MORE);
  big_fill('a', 1);
  CHECK_HEAD_ERR(parse(g_big), OX_EURI_TOO_LONG);
  CHECK_INT(ox_http_status_of(OX_EURI_TOO_LONG), 414);
  /* a long method counts too */
  big_reset();
  big_fill('M', 9000);
  CHECK_HEAD_ERR(parse(g_big), OX_EURI_TOO_LONG);
}

TEST(head_header_line_too_long) {
  big_reset();
  big_add("GET / HTTP/1.1\r\nX: ");
  big_fill('v', 8192 - 3); /* header line of exactly 8192 bytes */
  big_add("\r\n\r\n");
  CHECK_INT(parse(g_big), (int)g_big_len);
  big_reset();
  big_add("GET / HTTP/1.1\r\nX: ");
  big_fill('v', 8192 - 3 + 1);
  big_add("\r\n\r\n");
  CHECK_HEAD_ERR(parse(g_big), OX_EHEADERS_TOO_LARGE);
  CHECK_STR(g_why, "header line too long");
  /* while incomplete, and a long name counts too */
  big_reset();
  big_add("GET / HTTP/1.1\r\n");
  big_fill('N', 8193);
  CHECK_HEAD_ERR(parse(g_big), OX_EHEADERS_TOO_LARGE);
  CHECK_INT(ox_http_status_of(OX_EHEADERS_TOO_LARGE), 431);
}

TEST(head_header_block_too_large) {
  /* 32 lines of 1024 bytes with CRLF = exactly 32768: fits; one more byte does not */
  big_reset();
  big_add("GET / HTTP/1.1\r\n");
  for (int i = 0; i < 32; i++) {
    char name[16];
    snprintf(name, sizeof name, "X%02d: ", i);
    big_add(name);
    big_fill('v', 1024 - 2 - 5);
    big_add("\r\n");
  }
  big_add("\r\n");
  CHECK_INT(parse(g_big), (int)g_big_len);
  g_big_len -= 2;
  big_add("Y\r\n\r\n");
  CHECK_HEAD_ERR(parse(g_big), OX_EHEADERS_TOO_LARGE);
  CHECK_STR(g_why, "header block too large");
  /* while incomplete */
  g_big_len -= 5;
  big_add("Y");
  CHECK_HEAD_ERR(parse(g_big), OX_EHEADERS_TOO_LARGE);
  g_big_len -= 1;
  g_big[g_big_len] = 0;
  CHECK_INT(parse(g_big), OX_ENEED_MORE);
}

TEST(head_too_many_headers) {
  big_reset();
  big_add("GET / HTTP/1.1\r\n");
  for (int i = 0; i < 100; i++) big_add("X: y\r\n");
  big_add("\r\n");
  CHECK_INT(parse(g_big), (int)g_big_len);
  CHECK_INT(g_req.num_headers, 100);
  g_big_len -= 2;
  big_add("X: y\r\n\r\n");
  CHECK_HEAD_ERR(parse(g_big), OX_EHEADERS_TOO_LARGE);
  CHECK_STR(g_why, "too many headers");
  /* while incomplete: the 101st line has barely started */
  g_big_len -= 7;
  g_big[g_big_len] = 0;
  CHECK_HEAD_ERR(parse(g_big), OX_EHEADERS_TOO_LARGE);
  /* a lower configured limit, and one above the array size is clamped */
  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  lim.max_headers = 2;
  const char *s = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC";
  CHECK_HEAD_ERR(parse_n(s, strlen(s), &lim), OX_EHEADERS_TOO_LARGE);
  lim.max_headers = 1000;
  big_reset();
  big_add("GET / HTTP/1.1\r\n");
  for (int i = 0; i < 101; i++) big_add("X: y\r\n");
  big_add("\r\n");
  CHECK_HEAD_ERR(parse_n(g_big, g_big_len, &lim), OX_EHEADERS_TOO_LARGE);
}

/* ---- head: incremental and guard page --------------------------------------------------- */

static const char *const k_heads[] = {
    "GET /a?b=c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "\r\nPOST /v2/models/m/infer HTTP/1.0\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n",
    "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nX:\t y \r\n\r\n",
};

TEST(head_incremental_byte_by_byte) {
  for (size_t k = 0; k < sizeof k_heads / sizeof k_heads[0]; k++) {
    const char *s = k_heads[k];
    size_t n = strlen(s);
    ox_http_limits_t lim;
    ox_http_limits_default(&lim);
    ox_http_request_t one;
    const char *why = NULL;
    CHECK_INT(ox_http_parse_head(s, n, &lim, &one, &why), n);
    for (size_t p = 0; p < n; p++) CHECK_INT(parse_n(s, p, &lim), OX_ENEED_MORE);
    CHECK_INT(parse_n(s, n, &lim), n);
    CHECK(slice_is(g_req.method, "") == 0);
    CHECK(g_req.method.ptr == one.method.ptr && g_req.method.len == one.method.len);
    CHECK(g_req.target.ptr == one.target.ptr && g_req.target.len == one.target.len);
    CHECK_INT(g_req.num_headers, one.num_headers);
    CHECK_INT(g_req.chunked, one.chunked);
    CHECK_INT(g_req.content_length, one.content_length);
    CHECK_INT(g_req.keep_alive, one.keep_alive);
    CHECK_INT(g_req.expect_continue, one.expect_continue);
  }
}

TEST(head_incremental_errors_stable) {
  /* every prefix is either "need more" or the same error as the whole */
  static const char *const bad[] = {
      "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
  };
  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    size_t n = strlen(bad[k]);
    int whole = parse_n(bad[k], n, &lim);
    const char *whole_why = g_why;
    CHECK(whole < 0 && whole != OX_ENEED_MORE);
    int seen_error = 0;
    for (size_t p = 0; p <= n; p++) {
      int r = parse_n(bad[k], p, &lim);
      if (r == OX_ENEED_MORE) {
        CHECK(!seen_error);
        continue;
      }
      seen_error = 1;
      CHECK_INT(r, whole);
      CHECK(g_why == whole_why);
    }
    CHECK(seen_error);
  }
}

TEST(head_guard_page) {
  ox_http_limits_t lim;
  ox_http_limits_default(&lim);
  for (size_t k = 0; k < sizeof k_heads / sizeof k_heads[0]; k++) {
    size_t n = strlen(k_heads[k]);
    for (size_t p = 0; p <= n; p++) {
      const char *g = guard_place(k_heads[k], p);
      CHECK(g != NULL);
      if (!g) return;
      CHECK_INT(parse_n(g, p, &lim), p == n ? (int)n : OX_ENEED_MORE);
    }
  }
  /* errors found at the very last byte */
  const char *s = "GET / HTTP/1.1\r\nX: a\r\n\r";
  const char *g = guard_place(s, strlen(s));
  CHECK_INT(parse_n(g, strlen(s), &lim), OX_ENEED_MORE);
  s = "GET / HTTP/1.1\r\nX: a\r\n\rX";
  g = guard_place(s, strlen(s));
  CHECK_INT(parse_n(g, strlen(s), &lim), OX_EINVALID);
  /* a request line at its limit (lowered to fit in a page), then one byte over it */
  lim.max_request_line = 3000;
  big_reset();
  big_add("GET /");
  big_fill('a', 2995);
  g = guard_place(g_big, g_big_len);
  CHECK(g != NULL);
  if (g) CHECK_INT(parse_n(g, g_big_len, &lim), OX_ENEED_MORE);
  big_fill('a', 1);
  g = guard_place(g_big, g_big_len);
  if (g) CHECK_INT(parse_n(g, g_big_len, &lim), OX_EURI_TOO_LONG);
}

/* ---- chunked decoder -------------------------------------------------------------------- */

TEST(chunked_simple) {
  const char *s = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  ox_http_chunked_t d = {.max_body = 1000};
  CHECK_INT(chunked_n(&d, s, strlen(s)), 0);
  CHECK_INT(g_consumed, strlen(s));
  CHECK_INT(g_produced, 11);
  CHECK_MEM(g_out, "hello world", 11);
  CHECK_INT(d.done, 1);
  CHECK_INT(d.total, 11);
  CHECK_INT(d.chunks, 2);
  /* done is sticky: nothing more is read */
  CHECK_INT(chunked_n(&d, "5\r\n", 3), 0);
  CHECK_INT(g_consumed, 0);
  CHECK_INT(g_produced, 0);
}

TEST(chunked_hex_sizes) {
  CHECK_INT(chunked("A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"), 0);
  CHECK_INT(g_produced, 20);
  CHECK_INT(chunked("0005\r\nhello\r\n000\r\n\r\n"), 0);
  CHECK_INT(g_produced, 5);
  CHECK_INT(chunked("0\r\n\r\n"), 0);
  CHECK_INT(g_produced, 0);
}

TEST(chunked_extensions) {
  CHECK_INT(chunked("5;name=value\r\nhello\r\n0;last\r\n\r\n"), 0);
  CHECK_INT(g_produced, 5);
  CHECK_INT(chunked("5;a;b=\"q \\\" x;\";c=d\r\nhello\r\n0\r\n\r\n"), 0);
  CHECK_INT(chunked("5 ; a = b ;c\r\nhello\r\n0\r\n\r\n"), 0); /* BWS where the grammar has it */
  CHECK_INT(chunked("5;a=\"\"\r\nhello\r\n0\r\n\r\n"), 0);
  CHECK_CHUNKED_ERR("5;\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a=\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a=b c\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a=\"open\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a\x01\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a=\"x\x01\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a=\"x\\\x01\"\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a=\"x\x7f\"\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a==b\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;;a\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5;a \r\nhello\r\n0\r\n\r\n", OX_EINVALID);
}

/* After a chunk size, a token value and a quoted value the same bytes may follow (';', BWS
 * leading to ';', CR), one transition shared by the three states; only the message differs. */
TEST(chunked_after_size_or_value) {
  static const char *const ok[] = {"5;a\r\n",         "5 ;a\r\n",         "5\t;a\r\n",
                                   "5;a=b;c\r\n",     "5;a=b ;c\r\n",     "5;a=b\t;c\r\n",
                                   "5;a=\"x\";c\r\n", "5;a=\"x\" ;c\r\n", "5;a=\"x\"\r\n"};
  char buf[64];
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    snprintf(buf, sizeof buf, "%shello\r\n0\r\n\r\n", ok[i]);
    CHECK_INT(chunked(buf), 0);
    CHECK_INT(g_produced, 5);
  }
  static const struct {
    const char *in, *why;
  } bad[] = {
      {"5=a\r\n", "bad chunk size"},
      {"5\"\r\n", "bad chunk size"},
      {"5 \r\n", "bad chunk extension"},
      {"5;a=b=\r\n", "bad chunk extension"},
      {"5;a=b \r\n", "bad chunk extension"},
      {"5;a=b\"\r\n", "bad chunk extension"},
      {"5;a=\"x\"=\r\n", "bad chunk extension"},
      {"5;a=\"x\" \r\n", "bad chunk extension"},
      {"5;a=\"x\"\"\r\n", "bad chunk extension"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(buf, sizeof buf, "%shello\r\n0\r\n\r\n", bad[i].in);
    CHECK_CHUNKED_ERR(buf, OX_EINVALID);
    CHECK_STR(g_why, bad[i].why);
  }
}

TEST(chunked_size_junk) {
  CHECK_CHUNKED_ERR("0x10\r\n0123456789abcdef\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_STR(g_why, "bad chunk size");
  CHECK_CHUNKED_ERR("1_0\r\n0123456789abcdef\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR(" 10\r\n0123456789abcdef\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_STR(g_why, "bad chunk size");
  CHECK_CHUNKED_ERR("\t5\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("+5\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("-5\r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5 \r\nhello\r\n0\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("g\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("5\r\nhello\r\n\r\n", OX_EINVALID);
  /* refused at the bad byte, without waiting for the line */
  CHECK_CHUNKED_ERR("1_", OX_EINVALID);
  CHECK_INT(g_consumed, 1);
}

TEST(chunked_size_overflow) {
  ox_http_chunked_t d = {.max_body = UINT64_MAX};
  CHECK_INT(chunked_n(&d, "10000000000000000\r\n", 19), OX_EINVALID); /* 2^64 */
  CHECK_STR(g_why, "chunk size overflow");
  ox_http_chunked_t d2 = {.max_body = UINT64_MAX};
  CHECK_INT(chunked_n(&d2, "ffffffffffffffff\r\nab", 20), OX_ENEED_MORE);
  CHECK_INT(g_produced, 2);
  CHECK(d2.remaining == UINT64_MAX - 2);
  /* leading zeros do not overflow */
  CHECK_INT(chunked("00000000000000000000000000000005\r\nhello\r\n0\r\n\r\n"), 0);
}

TEST(chunked_extension_too_long) {
  big_reset();
  big_add("5;a=");
  big_fill('b', 1024 - 4); /* size line of exactly 1024 bytes */
  big_add("\r\nhello\r\n0\r\n\r\n");
  CHECK_INT(chunked(g_big), 0);
  big_reset();
  big_add("5;a=");
  big_fill('b', 1024 - 4 + 1);
  big_add("\r\nhello\r\n0\r\n\r\n");
  CHECK_CHUNKED_ERR(g_big, OX_EINVALID);
  CHECK_STR(g_why, "chunk size line too long");
  /* while incomplete, memory bounded: no end of line in sight */
  big_reset();
  big_add("5;a=");
  big_fill('b', 5000);
  CHECK_CHUNKED_ERR(g_big, OX_EINVALID);
  CHECK_INT(g_consumed, 1024);
  /* a long run of zeros is a long line too */
  big_reset();
  big_fill('0', 2000);
  CHECK_CHUNKED_ERR(g_big, OX_EINVALID);
}

TEST(chunked_missing_final_chunk) {
  ox_http_chunked_t d = {.max_body = 100};
  CHECK_INT(chunked_n(&d, "5\r\nhello\r\n", 10), OX_ENEED_MORE);
  CHECK_INT(g_consumed, 10);
  CHECK_INT(g_produced, 5);
  CHECK_INT(d.done, 0);
  ox_http_chunked_t d2 = {.max_body = 100};
  CHECK_INT(chunked_n(&d2, "5\r\nhello\r\n0\r\n", 13), OX_ENEED_MORE); /* no final CRLF yet */
  CHECK_INT(d2.done, 0);
}

TEST(chunked_bad_crlf) {
  /* each refused at the offending byte (consumed = its offset), for the right reason */
  static const struct {
    const char *in;
    size_t at;
    const char *why;
  } cases[] = {
      {"5\r\nhelloX\r\n0\r\n\r\n", 8, "missing CRLF after chunk data"},
      {"5\r\nhello\n0\r\n\r\n", 8, "missing CRLF after chunk data"},
      {"5\r\nhello\r0\r\n\r\n", 9, "missing CRLF after chunk data"},
      {"5\nhello\r\n0\r\n\r\n", 1, "bad chunk size"},
      {"5\rhello\r\n0\r\n\r\n", 2, "bare CR in chunk size line"},
      {"5;a\rhello\r\n0\r\n\r\n", 4, "bare CR in chunk size line"},
      {"5\r\nhello\r\n0\n\r\n", 11, "bad chunk size"},
      {"5\r\nhello\r\n0\r\n\n", 13, "bare LF in trailer"},
      {"5\r\nhello\r\n0\r\n\rX", 14, "bare CR after trailers"},
      {"5\r\nhello\r\n0\r\nA: b\rX", 18, "bare CR in trailer"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    CHECK_CHUNKED_ERR(cases[i].in, OX_EINVALID);
    CHECK_INT(g_consumed, cases[i].at);
    CHECK_STR(g_why, cases[i].why);
  }
  /* the data before the bad byte was delivered, nothing after it */
  CHECK_INT(chunked("5\r\nhello\r\n3\r\nabcX"), OX_EINVALID);
  CHECK_INT(g_produced, 8);
  CHECK_INT(g_consumed, 16);
}

TEST(chunked_too_many_chunks) {
  big_reset();
  for (int i = 0; i < 65536; i++) big_add("1\r\na\r\n");
  big_add("0\r\n\r\n");
  ox_http_chunked_t d = {.max_body = (uint64_t)64 << 20};
  CHECK_INT(chunked_n(&d, g_big, g_big_len), 0);
  CHECK_INT(g_produced, 65536);
  CHECK_INT(d.chunks, 65536);
  g_big_len -= 5;
  big_add("1\r\na\r\n0\r\n\r\n");
  ox_http_chunked_t d2 = {.max_body = (uint64_t)64 << 20};
  CHECK_INT(chunked_n(&d2, g_big, g_big_len), OX_EINVALID);
  CHECK_STR(g_why, "too many chunks");
  CHECK_INT(g_produced, 65536);
}

TEST(chunked_above_body_limit) {
  ox_http_chunked_t d = {.max_body = 8};
  CHECK_INT(chunked_n(&d, "5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n", 23), 0);
  CHECK_INT(d.total, 8);
  ox_http_chunked_t d2 = {.max_body = 8};
  /* refused at the size line, before any of that chunk's data */
  CHECK_INT(chunked_n(&d2, "5\r\nhello\r\n4\r\n", 13), OX_ETOO_LARGE);
  CHECK_INT(g_produced, 5);
  CHECK_INT(g_consumed, 12);
  CHECK(g_why != NULL);
  /* sticky */
  CHECK_INT(chunked_n(&d2, "abcd\r\n0\r\n\r\n", 11), OX_ETOO_LARGE);
  CHECK_INT(g_consumed, 0);
  ox_http_chunked_t d3 = {.max_body = 0};
  CHECK_INT(chunked_n(&d3, "1\r\n", 3), OX_ETOO_LARGE);
}

TEST(chunked_trailers) {
  CHECK_INT(chunked("5\r\nhello\r\n0\r\nX-Sum: 1\r\nY:\r\nZ: \ta b\t\r\n\r\nNEXT"), 0);
  CHECK_INT(g_produced, 5);
  CHECK_INT(g_consumed, strlen("5\r\nhello\r\n0\r\nX-Sum: 1\r\nY:\r\nZ: \ta b\t\r\n\r\n"));
  CHECK_CHUNKED_ERR("0\r\nX: a\r\n b\r\n\r\n", OX_EINVALID); /* obs-fold */
  CHECK_STR(g_why, "obs-fold in trailer");
  CHECK_CHUNKED_ERR("0\r\nX : a\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("0\r\n: a\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("0\r\nX\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("0\r\nX: a\x01\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("0\r\nX: a\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("0\r\nX: a\rb\r\n\r\n", OX_EINVALID);
  CHECK_CHUNKED_ERR("0\r\nX\x7f: a\r\n\r\n", OX_EINVALID);
  const char nul[] = "0\r\nX: a\0b\r\n\r\n";
  ox_http_chunked_t d = {.max_body = 10};
  CHECK_INT(chunked_n(&d, nul, sizeof nul - 1), OX_EINVALID);
  CHECK_INT(g_consumed, 7);
}

TEST(chunked_trailer_limits) {
  big_reset();
  big_add("0\r\nX: ");
  big_fill('v', 1024 - 3); /* trailer line of exactly 1024 bytes */
  big_add("\r\n\r\n");
  CHECK_INT(chunked(g_big), 0);
  big_reset();
  big_add("0\r\nX: ");
  big_fill('v', 1024 - 3 + 1);
  big_add("\r\n\r\n");
  CHECK_CHUNKED_ERR(g_big, OX_EINVALID);
  CHECK_STR(g_why, "trailer line too long");
  /* 8 lines of 1024 bytes with CRLF: exactly 8 KiB fits; one more line does not */
  big_reset();
  big_add("0\r\n");
  for (int i = 0; i < 8; i++) {
    big_add("X: ");
    big_fill('v', 1024 - 2 - 3);
    big_add("\r\n");
  }
  big_add("\r\n");
  CHECK_INT(chunked(g_big), 0);
  g_big_len -= 2;
  big_add("Y: z\r\n\r\n");
  CHECK_CHUNKED_ERR(g_big, OX_EINVALID);
  CHECK_STR(g_why, "trailer section too large");
}

TEST(chunked_pipelined_rest) {
  const char *s = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
  CHECK_INT(chunked(s), 0);
  CHECK_INT(g_consumed, 13);
  CHECK_INT(parse(s + g_consumed), strlen(s) - 13);
}

TEST(chunked_in_place) {
  char buf[] = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  ox_http_chunked_t d = {.max_body = 100};
  size_t consumed = 0, produced = 0;
  CHECK_INT(ox_http_chunked_decode(&d, buf, sizeof buf - 1, buf, &consumed, &produced, NULL), 0);
  CHECK_INT(produced, 11);
  CHECK_INT(consumed, sizeof buf - 1);
  CHECK_MEM(buf, "hello world", 11);
}

static const char k_body[] =
    "5;x=\"a b\"\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0 ; z\r\nT: v\r\n\r\n";
static const char k_body_data[] = "helloabcdefghijklmnopqrstuvwxyz";

TEST(chunked_byte_by_byte) {
  size_t n = sizeof k_body - 1;
  /* separate output */
  ox_http_chunked_t d = {.max_body = 100};
  char out[128];
  size_t o = 0;
  int r = OX_ENEED_MORE;
  for (size_t i = 0; i < n; i++) {
    size_t c = 0, p = 0;
    r = ox_http_chunked_decode(&d, k_body + i, 1, out + o, &c, &p, NULL);
    CHECK_INT(c, 1);
    CHECK(p <= 1);
    o += p;
    if (i + 1 < n) CHECK_INT(r, OX_ENEED_MORE);
  }
  CHECK_INT(r, 0);
  CHECK_INT(o, sizeof k_body_data - 1);
  CHECK_MEM(out, k_body_data, o);
  /* in place, a byte at a time: each byte decodes onto itself */
  char buf[sizeof k_body];
  memcpy(buf, k_body, sizeof k_body);
  ox_http_chunked_t d2 = {.max_body = 100};
  o = 0;
  for (size_t i = 0; i < n; i++) {
    size_t c = 0, p = 0;
    r = ox_http_chunked_decode(&d2, buf + i, 1, buf + i, &c, &p, NULL);
    if (p) out[o++] = buf[i];
  }
  CHECK_INT(r, 0);
  CHECK_INT(o, sizeof k_body_data - 1);
  CHECK_MEM(out, k_body_data, o);
}

TEST(chunked_split_anywhere) {
  /* two calls split at every point give the one-call result */
  size_t n = sizeof k_body - 1;
  for (size_t cut = 0; cut <= n; cut++) {
    ox_http_chunked_t d = {.max_body = 100};
    char out[128];
    size_t c1 = 0, p1 = 0, c2 = 0, p2 = 0;
    int r1 = ox_http_chunked_decode(&d, k_body, cut, out, &c1, &p1, NULL);
    CHECK_INT(r1, cut == n ? 0 : OX_ENEED_MORE);
    CHECK_INT(c1, cut);
    int r2 = ox_http_chunked_decode(&d, k_body + cut, n - cut, out + p1, &c2, &p2, NULL);
    CHECK_INT(r2, 0);
    CHECK_INT(c1 + c2, n);
    CHECK_INT(p1 + p2, sizeof k_body_data - 1);
    CHECK_MEM(out, k_body_data, sizeof k_body_data - 1);
  }
}

/* Feeds s one byte at a time; returns the first code other than "need more" (or that), with the
 * total consumed in *at. */
static int chunked_bytewise(const char *s, size_t n, uint64_t max_body, size_t *at) {
  ox_http_chunked_t d = {.max_body = max_body};
  size_t total = 0;
  int r = OX_ENEED_MORE;
  for (size_t i = 0; i < n && r == OX_ENEED_MORE; i++) {
    size_t c = 0, p = 0;
    r = ox_http_chunked_decode(&d, s + i, 1, g_out, &c, &p, NULL);
    total += c;
  }
  *at = total;
  return r;
}

TEST(chunked_limits_across_calls) {
  /* the counters of a line survive between calls: a long line fed a byte at a time still fails
   * at the same byte */
  size_t at = 0;
  big_reset();
  big_add("5;a=");
  big_fill('b', 1100);
  CHECK_INT(chunked_bytewise(g_big, g_big_len, 100, &at), OX_EINVALID);
  CHECK_INT(at, 1024);
  big_reset();
  big_add("0\r\nX: ");
  big_fill('v', 1100);
  CHECK_INT(chunked_bytewise(g_big, g_big_len, 100, &at), OX_EINVALID);
  CHECK_INT(at, 3 + 1024);
  big_reset();
  big_add("0\r\n");
  for (int i = 0; i < 9; i++) big_add("X: 0123456789012345678901234567890123456789\r\n");
  for (int i = 0; i < 200; i++) big_add("Y: 0123456789012345678901234567890123456789\r\n");
  CHECK_INT(chunked_bytewise(g_big, g_big_len, 100, &at), OX_EINVALID);
  CHECK_INT(at, 3 + 8192);
  CHECK_INT(chunked_bytewise("10000000000000000\r\n", 19, UINT64_MAX, &at), OX_EINVALID);
  CHECK_INT(at, 16);
  CHECK_INT(chunked_bytewise("10\r\n", 4, 15, &at), OX_ETOO_LARGE);
  CHECK_INT(at, 3);
  CHECK_INT(chunked_bytewise("8\r\nabcdefgh\r\n8\r\n", 18, 15, &at), OX_ETOO_LARGE);
  CHECK_INT(at, 15);
}

TEST(chunked_guard_page) {
  size_t n = sizeof k_body - 1;
  for (size_t p = 0; p <= n; p++) {
    char *g = guard_place(k_body, p);
    CHECK(g != NULL);
    if (!g) return;
    ox_http_chunked_t d = {.max_body = 100};
    int r = chunked_n(&d, g, p);
    CHECK_INT(r, p == n ? 0 : OX_ENEED_MORE);
    CHECK_INT(g_consumed, p);
    /* and in place, right against the guard */
    ox_http_chunked_t d2 = {.max_body = 100};
    size_t c = 0, q = 0;
    CHECK_INT(ox_http_chunked_decode(&d2, g, p, g, &c, &q, NULL), r);
    CHECK_INT(q, g_produced);
    CHECK_MEM(g, g_out, q);
  }
  const char bad[] = "5\r\nhello\r\n0\r\n\r\r";
  char *g = guard_place(bad, sizeof bad - 1);
  ox_http_chunked_t d = {.max_body = 100};
  CHECK_INT(chunked_n(&d, g, sizeof bad - 1), OX_EINVALID);
}

TEST(chunked_error_sticky) {
  ox_http_chunked_t d = {.max_body = 100};
  CHECK_INT(chunked_n(&d, "x", 1), OX_EINVALID);
  CHECK_INT(g_consumed, 0);
  CHECK_INT(chunked_n(&d, "5\r\nhello\r\n0\r\n\r\n", 15), OX_EINVALID);
  CHECK_INT(g_consumed, 0);
  CHECK_INT(g_produced, 0);
}

TEST_MAIN(T(limits_default_values), T(head_get_no_body), T(head_no_headers_and_empty_query),
          T(head_post_content_length), T(head_content_length_max_uint64), T(head_chunked),
          T(head_value_trimming_and_bytes), T(head_header_lookup), T(head_pipelined),
          T(head_keep_alive_rules), T(head_expect), T(head_target_forms), T(head_absolute_form),
          T(head_leading_crlf_once), T(head_cl_and_te), T(head_cl_duplicate), T(head_cl_empty),
          T(head_cl_signed), T(head_cl_non_decimal), T(head_cl_list), T(head_cl_overflow),
          T(head_cl_above_body_limit), T(head_te_not_exactly_chunked), T(head_te_duplicated),
          T(head_te_unknown_coding), T(head_te_http10), T(head_obs_fold), T(head_bare_cr),
          T(head_bare_lf), T(head_nul_and_control_bytes), T(head_space_before_colon),
          T(head_bad_field_names), T(head_bad_request_line), T(head_bad_version),
          T(head_request_line_too_long), T(head_header_line_too_long),
          T(head_header_block_too_large), T(head_too_many_headers),
          T(head_incremental_byte_by_byte), T(head_incremental_errors_stable), T(head_guard_page),
          T(chunked_simple), T(chunked_hex_sizes), T(chunked_extensions),
          T(chunked_after_size_or_value), T(chunked_size_junk), T(chunked_size_overflow),
          T(chunked_extension_too_long), T(chunked_missing_final_chunk), T(chunked_bad_crlf),
          T(chunked_too_many_chunks), T(chunked_above_body_limit), T(chunked_trailers),
          T(chunked_trailer_limits), T(chunked_pipelined_rest), T(chunked_in_place),
          T(chunked_byte_by_byte), T(chunked_split_anywhere), T(chunked_limits_across_calls),
          T(chunked_guard_page), T(chunked_error_sticky))
