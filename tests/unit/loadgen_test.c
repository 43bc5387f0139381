/* loadgen_test.c: unit tests for the load generator's response parser, streaming matcher and
 * latency histogram (bench/loadgen_http.c, bench/loadgen_hist.h): framing by Content-Length,
 * chunked and close; every malformed case with its code; feeding split at every byte; input
 * flush against a guard page; the histogram's bucket bounds and percentiles.
 *
 * The Makefile links unit tests with libonnxd.a only, and the bench sources are not in it, so
 * the parser is compiled into this test directly (the histogram is header-only). */
#include "../../bench/loadgen_hist.h"
#include "../../bench/loadgen_http.c"

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/error.h"
#include "test.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static ox_lg_resp_t R;

/* Parses s[0..n) in one call. */
static int parse_n(const char *s, size_t n, size_t *consumed) {
  R.max_head = 0;
  R.match = NULL;
  R.head_request = 0;
  ox_lg_resp_begin(&R);
  return ox_lg_resp_parse(&R, s, n, consumed);
}
static int parse(const char *s) {
  size_t used;
  return parse_n(s, strlen(s), &used);
}

/* Feeds s[0..n) to a fresh parser the way the load generator does, in pieces of at most
 * `step` bytes: bytes not consumed are kept and presented again with the next piece. Returns
 * the final code; *used is the total consumed. */
static int feed(ox_lg_resp_t *r, const char *s, size_t n, size_t step, size_t *used) {
  char buf[1 << 16];
  size_t have = 0, pos = 0, total = 0;
  ox_lg_resp_begin(r);
  int rc = OX_ENEED_MORE;
  while (rc == OX_ENEED_MORE && pos < n) {
    size_t k = n - pos < step ? n - pos : step;
    if (have + k > sizeof buf) return -1;
    memcpy(buf + have, s + pos, k);
    have += k;
    pos += k;
    size_t c;
    rc = ox_lg_resp_parse(r, buf, have, &c);
    total += c;
    memmove(buf, buf + c, have - c);
    have -= c;
  }
  *used = total;
  return rc;
}

/* ---- valid responses ------------------------------------------------------------------- */

TEST(content_length) {
  const char *s =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello";
  size_t used;
  CHECK_INT(parse_n(s, strlen(s), &used), 0);
  CHECK_INT(used, strlen(s));
  CHECK_INT(R.status, 200);
  CHECK_INT(R.minor_version, 1);
  CHECK_INT(R.keep_alive, 1);
  CHECK_INT(R.chunked, 0);
  CHECK_INT(R.content_length, 5);
  CHECK_INT(R.body_len, 5);
  /* No reason phrase, header value with surrounding whitespace. */
  CHECK_INT(parse("HTTP/1.1 404\r\ncontent-length: \t 2 \r\n\r\nno"), 0);
  CHECK_INT(R.status, 404);
  CHECK_INT(R.body_len, 2);
  /* Identical duplicate Content-Length is one length. */
  CHECK_INT(parse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"), 0);
}

TEST(leftover_after_response) {
  const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
  size_t used;
  CHECK_INT(parse_n(s, strlen(s), &used), 0);
  CHECK_INT(used, strlen("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
}

TEST(keep_alive_rules) {
  CHECK_INT(parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"), 0);
  CHECK_INT(R.keep_alive, 0);
  CHECK_INT(parse("HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n"), 0);
  CHECK_INT(R.keep_alive, 0);
  CHECK_INT(parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"), 0);
  CHECK_INT(R.keep_alive, 0);
  CHECK_INT(parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"), 0);
  CHECK_INT(R.keep_alive, 1);
  CHECK_INT(R.minor_version, 0);
}

TEST(no_body_statuses) {
  CHECK_INT(parse("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"), 0);
  CHECK_INT(R.body_len, 0);
  CHECK_INT(parse("HTTP/1.1 304 Not Modified\r\n\r\n"), 0);
  CHECK_INT(R.keep_alive, 1);
  size_t used;
  const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
  R.head_request = 1;
  ox_lg_resp_begin(&R);
  CHECK_INT(ox_lg_resp_parse(&R, s, strlen(s), &used), 0);
  CHECK_INT(used, strlen(s));
  CHECK_INT(R.body_len, 0);
  R.head_request = 0;
}

TEST(interim_responses) {
  const char *s =
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc";
  size_t used;
  CHECK_INT(parse_n(s, strlen(s), &used), 0);
  CHECK_INT(used, strlen(s));
  CHECK_INT(R.status, 201);
  CHECK_INT(R.body_len, 3);
  /* Split after the interim head: it is consumed, the final one is awaited. */
  size_t first = strlen("HTTP/1.1 100 Continue\r\n\r\n");
  CHECK_INT(parse_n(s, first + 5, &used), OX_ENEED_MORE);
  CHECK_INT(used, first);
}

TEST(chunked_framing) {
  const char *s =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;name=value\r\nhello\r\n1A \t;x\r\nabcdefghijklmnopqrstuvwxyz\r\n"
      "0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n";
  size_t used;
  CHECK_INT(parse_n(s, strlen(s), &used), 0);
  CHECK_INT(used, strlen(s));
  CHECK_INT(R.chunked, 1);
  CHECK_INT(R.keep_alive, 1);
  CHECK_INT(R.body_len, 5 + 26);
  /* Transfer-Encoding with Content-Length: chunked wins, and the connection must close. */
  CHECK_INT(parse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                  "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            0);
  CHECK_INT(R.chunked, 1);
  CHECK_INT(R.keep_alive, 0);
}

TEST(until_close) {
  size_t used;
  const char *s = "HTTP/1.1 200 OK\r\n\r\nsome body";
  CHECK_INT(parse_n(s, strlen(s), &used), OX_ENEED_MORE);
  CHECK_INT(used, strlen(s));
  CHECK_INT(R.until_close, 1);
  CHECK_INT(R.keep_alive, 0);
  CHECK_INT(R.body_len, 9);
  CHECK_INT(ox_lg_resp_eof(&R), 0);
  /* A coding other than chunked: the body runs until close. */
  CHECK_INT(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx"), OX_ENEED_MORE);
  CHECK_INT(R.until_close, 1);
  CHECK_INT(ox_lg_resp_eof(&R), 0);
}

TEST(eof_truncation) {
  CHECK_INT(parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), OX_ENEED_MORE);
  CHECK_INT(ox_lg_resp_eof(&R), OX_EINVALID);
  CHECK(R.why != NULL);
  CHECK_INT(parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"), OX_ENEED_MORE);
  CHECK_INT(ox_lg_resp_eof(&R), OX_EINVALID);
  ox_lg_resp_begin(&R);
  CHECK(ox_lg_resp_idle(&R));
  CHECK_INT(ox_lg_resp_eof(&R), OX_EINVALID);
  CHECK_INT(parse("HTTP/1.1 20"), OX_ENEED_MORE);
  CHECK(!ox_lg_resp_idle(&R));
}

/* ---- malformed responses ---------------------------------------------------------------- */

TEST(invalid) {
  static const struct {
    const char *s;
    int code;
  } cases[] = {
      {"HTTP/2 200 OK\r\n\r\n", OX_EINVALID},
      {"http/1.1 200 OK\r\n\r\n", OX_EINVALID},
      {"HTTP/1.2 200 OK\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 20 OK\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 2000 OK\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 099 OK\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1  200 OK\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 O\x01K\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 101 Switching Protocols\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nName : x\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\n: x\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nA: x\r\n folded\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nA: x\ny\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nA: x\ry\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\rx", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n:bad\r\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\n\r\n", OX_EINVALID},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rX", OX_EINVALID},
      {"<html>", OX_EINVALID},
      {"\r\nHTTP/1.1 200 OK\r\n\r\n", OX_EINVALID},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    R.why = NULL;
    int rc = parse(cases[i].s);
    if (rc != cases[i].code || !R.why)
      fprintf(stderr, "  case %zu: %s -> %d (%s)\n", i, cases[i].s, rc, R.why ? R.why : "-");
    CHECK_INT(rc, cases[i].code);
    CHECK(R.why != NULL);
  }
}

TEST(limits) {
  /* Garbage is refused at once, without waiting for a full head. */
  CHECK_INT(parse("HTTX"), OX_EINVALID);
  CHECK_INT(parse("HTTP/1."), OX_ENEED_MORE);
  /* A head that only grows is refused as soon as it passes max_head. */
  char big[40000];
  size_t n = (size_t)snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\nX: ");
  memset(big + n, 'a', sizeof big - n);
  size_t used;
  R.max_head = 0;
  R.match = NULL;
  ox_lg_resp_begin(&R);
  CHECK_INT(ox_lg_resp_parse(&R, big, 16000, &used), OX_ENEED_MORE);
  CHECK_INT(used, 0);
  CHECK_INT(ox_lg_resp_parse(&R, big, 16385, &used), OX_EHEADERS_TOO_LARGE);
  R.max_head = 100;
  ox_lg_resp_begin(&R);
  CHECK_INT(ox_lg_resp_parse(&R, big, 101, &used), OX_EHEADERS_TOO_LARGE);
  /* Long chunk extensions and trailers are bounded too. */
  n = (size_t)snprintf(big, sizeof big, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;");
  memset(big + n, 'e', 5000);
  R.max_head = 0;
  ox_lg_resp_begin(&R);
  CHECK_INT(ox_lg_resp_parse(&R, big, n + 5000, &used), OX_EINVALID);
  n = (size_t)snprintf(big, sizeof big,
                       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: ");
  memset(big + n, 't', 20000);
  ox_lg_resp_begin(&R);
  CHECK_INT(ox_lg_resp_parse(&R, big, n + 20000, &used), OX_EHEADERS_TOO_LARGE);
}

/* ---- incremental feeding ---------------------------------------------------------------- */

TEST(split_everywhere) {
  static const char *const cases[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello NEEDLE",
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nNEEDLE",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nNEE\r\n3\r\nDLE\r\n"
      "1 ; q\r\n!\r\n0\r\nTrailer: x\r\n\r\n",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n6\r\nNEEDLE\r\n0\r\n\r\n",
  };
  ox_lg_match_t m;
  CHECK_INT(ox_lg_match_create(&m, "NEEDLE", 6), 0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i]);
    for (size_t step = 1; step <= n; step++) {
      ox_lg_resp_t r = {.match = &m};
      size_t used;
      int rc = feed(&r, cases[i], n, step, &used);
      if (rc != 0 || used != n || r.match_state != m.len || r.status != 200) {
        fprintf(stderr, "  case %zu step %zu: rc %d used %zu match %zu\n", i, step, rc, used,
                r.match_state);
        CHECK(0);
        break;
      }
    }
  }
  ox_lg_match_destroy(&m);
}

/* Random chunkings of a random body, fed in random pieces: body length and match agree. */
TEST(chunked_random) {
  static char body[20000], wire[60000];
  uint32_t seed = 12345;
#define RND() (seed = seed * 1103515245u + 12345u, (seed >> 8))
  ox_lg_match_t m;
  CHECK_INT(ox_lg_match_create(&m, "abcabd", 6), 0);
  for (int round = 0; round < 200; round++) {
    size_t bn = RND() % sizeof body;
    for (size_t i = 0; i < bn; i++) body[i] = "abcd"[RND() % 4];
    int has = memmem(body, bn, "abcabd", 6) != NULL;
    size_t w = (size_t)snprintf(wire, sizeof wire,
                                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t pos = 0; pos < bn;) {
      size_t k = 1 + RND() % 3000;
      if (k > bn - pos) k = bn - pos;
      w +=
          (size_t)snprintf(wire + w, sizeof wire - w, RND() % 2 ? "%zx\r\n" : "%zX;x=\"y\"\r\n", k);
      memcpy(wire + w, body + pos, k);
      w += k;
      memcpy(wire + w, "\r\n", 2);
      w += 2;
      pos += k;
    }
    w += (size_t)snprintf(wire + w, sizeof wire - w, "0\r\n\r\n");
    ox_lg_resp_t r = {.match = &m};
    size_t used;
    int rc = feed(&r, wire, w, 1 + RND() % 5000, &used);
    CHECK_INT(rc, 0);
    CHECK_INT(used, w);
    CHECK_INT(r.body_len, bn);
    CHECK_INT(r.match_state == m.len, has);
    if (rc || r.body_len != bn) break;
  }
  ox_lg_match_destroy(&m);
#undef RND
}

TEST(matcher) {
  static const char *const pats[] = {"a", "aa", "abab", "abcabd", "aab", "output"};
  uint32_t seed = 7;
  char text[512];
  for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++) {
    ox_lg_match_t m;
    size_t pl = strlen(pats[p]);
    CHECK_INT(ox_lg_match_create(&m, pats[p], pl), 0);
    for (int round = 0; round < 300; round++) {
      seed = seed * 1103515245u + 12345u;
      size_t n = (seed >> 8) % sizeof text;
      for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        text[i] = "abdotu"[(seed >> 8) % (p == 5 ? 6 : 3)];
      }
      int want = memmem(text, n, pats[p], pl) != NULL;
      /* whole, then cut at a random point */
      size_t q = ox_lg_match_feed(&m, 0, text, n);
      CHECK_INT(q == pl, want);
      size_t cut = n ? (seed >> 4) % (n + 1) : 0;
      q = ox_lg_match_feed(&m, ox_lg_match_feed(&m, 0, text, cut), text + cut, n - cut);
      CHECK_INT(q == pl, want);
    }
    ox_lg_match_destroy(&m);
  }
  ox_lg_match_t m;
  CHECK_INT(ox_lg_match_create(&m, "", 0), OX_EINVALID);
}

/* Every prefix of a response placed so its last byte is the last byte before a PROT_NONE page:
 * the parser never reads past what it is given. */
TEST(guard_page) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char *map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(map != MAP_FAILED);
  if (map == MAP_FAILED) return;
  CHECK_INT(mprotect(map + page, page, PROT_NONE), 0);
  static const char *const cases[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y\r\n\r\nabc",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;e\r\nabc\r\n0\r\nT: 1\r\n\r\n",
      "HTTP/1.1 200 OK\r\n\r\nuntil close",
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = strlen(cases[i]);
    for (size_t k = 0; k <= n; k++) {
      char *p = map + page - k;
      memcpy(p, cases[i], k);
      size_t used;
      int rc = parse_n(p, k, &used);
      CHECK(rc == 0 || rc == OX_ENEED_MORE);
      if (k < n && i < 2) CHECK_INT(rc, OX_ENEED_MORE);
    }
  }
  munmap(map, 2 * page);
}

/* ---- histogram -------------------------------------------------------------------------- */

TEST(hist_buckets) {
  CHECK(ox_lg_hist_index(OX_LG_HIST_MAX_NS) < OX_LG_HIST_BUCKETS);
  CHECK_INT(ox_lg_hist_index(UINT64_MAX), ox_lg_hist_index(OX_LG_HIST_MAX_NS));
  for (uint64_t v = 0; v < 256; v++) CHECK_INT(ox_lg_hist_index(v), v);
  unsigned prev = 0;
  int ok = 1;
  /* Every value lies in its bucket's range, buckets are at most 1/128 of their values wide, and
   * indexes never go down. Walk values from 1 ns to 60 s with a multiplicative step. */
  for (double d = 1; d <= (double)OX_LG_HIST_MAX_NS; d *= 1.0007) {
    if (ox_lg_hist_index((uint64_t)d) < prev) ok = 0;
    prev = ox_lg_hist_index((uint64_t)d);
    for (uint64_t v = (uint64_t)d; v < (uint64_t)d + 3 && v <= OX_LG_HIST_MAX_NS; v++) {
      uint64_t lo, hi;
      ox_lg_hist_range(ox_lg_hist_index(v), &lo, &hi);
      if (lo > v || hi < v || (lo >= 256 && (double)(hi - lo + 1) / (double)lo > 1.0 / 128)) ok = 0;
    }
  }
  CHECK(ok);
  /* Consecutive buckets tile the value range with no gap. */
  for (unsigned i = 1; i < OX_LG_HIST_BUCKETS; i++) {
    uint64_t lo0, hi0, lo1, hi1;
    ox_lg_hist_range(i - 1, &lo0, &hi0);
    ox_lg_hist_range(i, &lo1, &hi1);
    if (lo1 != hi0 + 1) ok = 0;
  }
  CHECK(ok);
}

TEST(hist_percentiles) {
  static ox_lg_hist_t h, h2;
  ox_lg_hist_init(&h);
  CHECK_INT(ox_lg_hist_percentile(&h, 50), 0);
  CHECK(ox_lg_hist_mean(&h) == 0);
  /* 1..100000 us, uniformly */
  for (uint64_t v = 1; v <= 100000; v++) ox_lg_hist_record(&h, v * 1000);
  static const double ps[] = {50, 90, 99, 99.9};
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
    double want = ps[i] * 1000 * 1000, got = (double)ox_lg_hist_percentile(&h, ps[i]);
    CHECK(got >= want && got <= want * 1.01);
  }
  CHECK_INT(ox_lg_hist_percentile(&h, 100), 100000000);
  CHECK_INT(h.max, 100000000);
  CHECK_INT(h.min, 1000);
  CHECK(ox_lg_hist_mean(&h) == 50000.5 * 1000);
  /* Small exact values. */
  ox_lg_hist_init(&h2);
  ox_lg_hist_record(&h2, 3);
  ox_lg_hist_record(&h2, 5);
  ox_lg_hist_record(&h2, 7);
  CHECK_INT(ox_lg_hist_percentile(&h2, 50), 5);
  CHECK_INT(ox_lg_hist_percentile(&h2, 1), 3);
  /* Merge, and a value beyond the range: counted at the top, max exact. */
  ox_lg_hist_record(&h2, 3600ULL * 1000000000ULL);
  ox_lg_hist_merge(&h, &h2);
  CHECK_INT(h.total, 100004);
  CHECK_INT(h.min, 3);
  CHECK_INT(ox_lg_hist_percentile(&h, 100), 3600ULL * 1000000000ULL);
  CHECK_INT(h.counts[ox_lg_hist_index(OX_LG_HIST_MAX_NS)], 1);
}

TEST_MAIN(T(content_length), T(leftover_after_response), T(keep_alive_rules), T(no_body_statuses),
          T(interim_responses), T(chunked_framing), T(until_close), T(eof_truncation), T(invalid),
          T(limits), T(split_everywhere), T(chunked_random), T(matcher), T(guard_page),
          T(hist_buckets), T(hist_percentiles))
