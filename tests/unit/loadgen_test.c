/* loadgen_test.c: unit tests for the load generator's response parser, streaming matcher and
 * latency histogram (bench/loadgen_http.c, bench/loadgen_hist.h): framing by Content-Length,
 * chunked and close; every malformed case with its code; feeding split at every byte; input
 * flush against a guard page; the histogram's bucket bounds and percentiles. Then multi-body
 * load (--body-lines): the line splitter, the per-body request tails, and real worker threads
 * (bench/loadgen_worker.c) against a small HTTP server on 127.0.0.1 in this process, which
 * records every request it reads: the order of the bodies per connection, their
 * Content-Length, a resent request keeping its body, open loop and idle connections.
 *
 * The Makefile links unit tests with libonnxd.a only, and the bench sources are not in it, so
 * the parser and the worker are compiled into this test directly (the histogram is
 * header-only). */
#include "../../bench/loadgen_hist.h"
#include "../../bench/loadgen_http.c"
#include "../../bench/loadgen_worker.c"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <strings.h>
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

/* ---- --body-lines: splitting and request tails ---------------------------------------- */

TEST(body_lines) {
  ox_lg_slice_t out[8];
  size_t n, bad;
  /* LF, CRLF, an unterminated last line, a CR inside a line (kept), a CR at the very end. */
  static const char ok[] = "a\nbb\r\nc\rc\nddd\r";
  CHECK_INT(ox_lg_body_lines(ok, sizeof ok - 1, 8, out, &n, &bad), 0);
  CHECK_INT(n, 4);
  if (n == 4) {
    CHECK_INT(out[0].len, 1);
    CHECK_MEM(out[0].ptr, "a", 1);
    CHECK_INT(out[1].len, 2);
    CHECK_MEM(out[1].ptr, "bb", 2);
    CHECK_INT(out[2].len, 3);
    CHECK_MEM(out[2].ptr, "c\rc", 3);
    CHECK_INT(out[3].len, 3);
    CHECK_MEM(out[3].ptr, "ddd", 3);
  }
  CHECK_INT(ox_lg_body_lines("x\ny\n", 4, 8, NULL, &n, &bad), 0); /* count only */
  CHECK_INT(n, 2);
  CHECK_INT(ox_lg_body_lines("{}", 2, 1, out, &n, &bad), 0);
  CHECK_INT(n, 1);
  /* Empty lines are refused with their number; so is an empty file. */
  static const struct {
    const char *s;
    size_t line;
  } empty[] = {{"a\n\nb\n", 2}, {"\n", 1}, {"a\r\n\r\n", 2}, {"a\nb\n\n", 3},
               {"\r", 1},       {"", 0},   {"a\n\r", 2}};
  for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
    bad = 99;
    CHECK_INT(ox_lg_body_lines(empty[i].s, strlen(empty[i].s), 8, out, &n, &bad), OX_EINVALID);
    CHECK_INT(bad, empty[i].line);
  }
  /* More lines than the limit. */
  CHECK_INT(ox_lg_body_lines("a\nb\nc", 5, 2, NULL, &n, &bad), OX_ETOO_LARGE);
  CHECK_INT(bad, 3);
  CHECK_INT(ox_lg_body_lines("a\nb\nc\n", 6, 3, NULL, &n, &bad), 0);
  /* Guard page: a last line without LF, flush against the end of readable memory. */
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  char *map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(map != MAP_FAILED);
  if (map == MAP_FAILED) return;
  CHECK_INT(mprotect(map + page, page, PROT_NONE), 0);
  memcpy(map + page - 5, "ab\ncd", 5);
  CHECK_INT(ox_lg_body_lines(map + page - 5, 5, 8, out, &n, &bad), 0);
  CHECK_INT(n, 2);
  memcpy(map + page - 4, "ab\r\r", 4);
  CHECK_INT(ox_lg_body_lines(map + page - 4, 4, 8, out, &n, &bad), 0);
  CHECK_INT(out[0].len, 3);
  munmap(map, 2 * page);
}

TEST(request_tails) {
  static const ox_lg_slice_t bodies[] = {{"abc", 3}, {NULL, 0}, {"0123456789", 10}};
  ox_lg_reqs_t rq;
  CHECK_INT(ox_lg_reqs_create(&rq, bodies, 3, 0), 0);
  CHECK_INT(rq.n, 3);
  static const char *const want0[] = {"Content-Length: 3\r\n\r\n", "\r\n",
                                      "Content-Length: 10\r\n\r\n"};
  for (size_t i = 0; i < 3 && rq.n == 3; i++) {
    CHECK_INT(rq.reqs[i].tail_len, strlen(want0[i]));
    CHECK_MEM(rq.reqs[i].tail, want0[i], strlen(want0[i]));
    CHECK(rq.reqs[i].body == bodies[i].ptr);
    CHECK_INT(rq.reqs[i].body_len, bodies[i].len);
  }
  ox_lg_reqs_destroy(&rq);
  /* POST and PUT: an empty body still says Content-Length: 0. */
  CHECK_INT(ox_lg_reqs_create(&rq, bodies, 2, 1), 0);
  if (rq.n == 2) {
    CHECK_INT(rq.reqs[1].tail_len, strlen("Content-Length: 0\r\n\r\n"));
    CHECK_MEM(rq.reqs[1].tail, "Content-Length: 0\r\n\r\n", rq.reqs[1].tail_len);
  }
  ox_lg_reqs_destroy(&rq);
  CHECK_INT(ox_lg_reqs_create(&rq, bodies, 0, 1), OX_EINVALID);
  ox_lg_reqs_destroy(&rq);
}

/* ---- --body-lines: real workers against a recording server -------------------------------- */

#define SRV_CONNS 16
#define SRV_LOG 256

typedef struct {
  int conn;            /* accept order */
  int peer_port;       /* the client's port of that connection */
  char line[64];       /* request line, truncated */
  long content_length; /* -1 when absent */
  char body[64];       /* body bytes read (Content-Length of them), truncated */
  size_t body_len;
} srv_req_t;

typedef struct srv srv_t;
typedef struct {
  srv_t *s;
  int conn, fd, peer_port;
} srv_conn_t;

struct srv {
  int lfd, port;
  int drop_nth; /* the first connection closes, unanswered, after reading its drop_nth-th
                   request (0: never) */
  pthread_t accept_tid;
  pthread_t tids[SRV_CONNS];
  srv_conn_t conns[SRV_CONNS];
  int nconns;
  pthread_mutex_t mu;
  srv_req_t log[SRV_LOG];
  int nlog;
};

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* One connection: reads requests (Content-Length framing), logs each, answers 200 with the
 * body echoed, until the client closes. */
static void *srv_conn_run(void *arg) {
  srv_conn_t *sc = arg;
  srv_t *s = sc->s;
  char buf[8192];
  size_t have = 0;
  int nreq = 0;
  for (;;) {
    char *end = memmem(buf, have, "\r\n\r\n", 4);
    size_t head = end ? (size_t)(end - buf) + 4 : 0;
    long cl = -1;
    if (end) {
      for (char *p = memchr(buf, '\n', head); p && p < end; p = memchr(p + 1, '\n', head))
        if (!strncasecmp(p + 1, "content-length:", 15)) cl = strtol(p + 16, NULL, 10);
    }
    size_t need = head + (size_t)(cl > 0 ? cl : 0);
    if (!end || have < need) {
      if (have == sizeof buf) break;
      ssize_t k = read(sc->fd, buf + have, sizeof buf - have);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) break;
      have += (size_t)k;
      continue;
    }
    srv_req_t q = {.conn = sc->conn, .peer_port = sc->peer_port, .content_length = cl};
    size_t ll = (size_t)((char *)memchr(buf, '\r', head) - buf);
    memcpy(q.line, buf, ll < sizeof q.line - 1 ? ll : sizeof q.line - 1);
    q.body_len = need - head;
    memcpy(q.body, buf + head, q.body_len < sizeof q.body - 1 ? q.body_len : sizeof q.body - 1);
    pthread_mutex_lock(&s->mu);
    if (s->nlog < SRV_LOG) s->log[s->nlog++] = q;
    pthread_mutex_unlock(&s->mu);
    if (++nreq == s->drop_nth && sc->conn == 0) break; /* drop it: no answer */
    char resp[256];
    int rl = snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
                      q.body_len, q.body);
    if (write_all(sc->fd, resp, (size_t)rl)) break;
    memmove(buf, buf + need, have - need);
    have -= need;
  }
  close(sc->fd);
  return NULL;
}

static void *srv_accept_run(void *arg) {
  srv_t *s = arg;
  for (;;) {
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    int fd = accept(s->lfd, (struct sockaddr *)&peer, &pl);
    if (fd < 0 && errno == EINTR) continue;
    if (fd < 0) break; /* shutdown() by srv_stop */
    if (s->nconns == SRV_CONNS) {
      close(fd);
      continue;
    }
    srv_conn_t *sc = &s->conns[s->nconns];
    *sc = (srv_conn_t){.s = s, .conn = s->nconns, .fd = fd, .peer_port = ntohs(peer.sin_port)};
    if (pthread_create(&s->tids[s->nconns], NULL, srv_conn_run, sc) != 0) {
      close(fd);
      continue;
    }
    s->nconns++;
  }
  return NULL;
}

static int srv_start(srv_t *s, int drop_nth) {
  memset(s, 0, sizeof *s);
  s->drop_nth = drop_nth;
  pthread_mutex_init(&s->mu, NULL);
  s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(s->lfd, 64) ||
      getsockname(s->lfd, (struct sockaddr *)&a, &al) != 0)
    return -1;
  s->port = ntohs(a.sin_port);
  return pthread_create(&s->accept_tid, NULL, srv_accept_run, s) ? -1 : 0;
}

/* Call once the clients' sockets are closed: every connection thread then sees EOF. */
static void srv_stop(srv_t *s) {
  shutdown(s->lfd, SHUT_RDWR); /* wakes accept() */
  pthread_join(s->accept_tid, NULL);
  for (int i = 0; i < s->nconns; i++) pthread_join(s->tids[i], NULL);
  close(s->lfd);
  pthread_mutex_destroy(&s->mu);
}

/* The three bodies: distinct contents and lengths, split from one CRLF-and-LF buffer. */
static const char k_lines[] = "{\"x\":0}\n{\"x\":11}\r\n{\"x\":222}";
static const char *const k_bodies[] = {"{\"x\":0}", "{\"x\":11}", "{\"x\":222}"};
#define NBODIES 3

/* Which of k_bodies a logged request carried, checking its Content-Length; -1 if none. */
static int body_index(const srv_req_t *q) {
  for (int i = 0; i < NBODIES; i++)
    if (q->content_length == (long)strlen(k_bodies[i]) && q->body_len == strlen(k_bodies[i]) &&
        !memcmp(q->body, k_bodies[i], q->body_len))
      return i;
  return -1;
}

typedef struct {
  int nt, conns_each, nidle; /* threads, load connections per thread, idle ones (thread 0) */
  uint64_t reqs_each;        /* --requests per thread */
  double rate;               /* 0: closed loop */
} load_spec_t;

/* Runs workers the way onnxd-bench's main does, against s, with the bodies of k_lines and
 * --check-body '"x":'. w (sp->nt entries) is left for the caller to inspect and destroy. */
static void run_load(srv_t *s, const load_spec_t *sp, ox_lg_config_t *cfg, ox_lg_reqs_t *rq,
                     ox_lg_match_t *m, ox_lg_worker_t *w, atomic_int *stop) {
  static const char prefix[] = "POST /v2/models/m/infer HTTP/1.1\r\nHost: t\r\n";
  static const char idle[] = "GET /idle HTTP/1.1\r\nHost: t\r\n\r\n";
  ox_lg_slice_t lines[NBODIES];
  size_t n = 0, bad;
  CHECK_INT(ox_lg_body_lines(k_lines, sizeof k_lines - 1, NBODIES, lines, &n, &bad), 0);
  CHECK_INT(n, NBODIES);
  CHECK_INT(ox_lg_reqs_create(rq, lines, n, 1), 0);
  CHECK_INT(ox_lg_match_create(m, "\"x\":", 4), 0);
  signal(SIGPIPE, SIG_IGN);
  atomic_store(stop, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)s->port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)sp->nt + 1);
  *cfg = (ox_lg_config_t){.addrlen = sizeof a,
                          .prefix = prefix,
                          .prefix_len = sizeof prefix - 1,
                          .reqs = rq->reqs,
                          .nreqs = rq->n,
                          .idle_req = idle,
                          .idle_req_len = sizeof idle - 1,
                          .expect_status = 200,
                          .match = m,
                          .timeout_ns = 5000000000ULL,
                          .rate = sp->rate,
                          .nworkers = sp->nt,
                          .nconns = (size_t)(sp->nt * sp->conns_each),
                          .barrier = &barrier,
                          .stop = stop};
  memcpy(&cfg->addr, &a, sizeof a);
  pthread_t tids[8];
  for (int i = 0; i < sp->nt; i++) {
    w[i] = (ox_lg_worker_t){.cfg = cfg,
                            .id = i,
                            .epfd_ = -1,
                            .nconns = sp->conns_each,
                            .nidle = i == 0 ? sp->nidle : 0,
                            .conn_base = i * sp->conns_each,
                            .max_requests = sp->reqs_each};
    CHECK_INT(pthread_create(&tids[i], NULL, ox_lg_worker_run, &w[i]), 0);
  }
  pthread_barrier_wait(&barrier);
  cfg->t_start = cfg->t_measure = now_ns();
  cfg->t_end = cfg->t_start + 10000000000ULL; /* a broken run ends in 10 s, not never */
  pthread_barrier_wait(&barrier);
  for (int i = 0; i < sp->nt; i++) pthread_join(tids[i], NULL);
  pthread_barrier_destroy(&barrier);
  cfg->barrier = NULL;
  for (int i = 0; i < sp->nt; i++) {
    CHECK_INT(w[i].setup_error, 0);
    CHECK_INT(w[i].requests, sp->reqs_each);
    CHECK_INT(w[i].ok, sp->reqs_each);
    CHECK_INT(w[i].errors, 0);
  }
}

static void end_load(srv_t *s, ox_lg_reqs_t *rq, ox_lg_match_t *m, ox_lg_worker_t *w, int nt) {
  for (int i = 0; i < nt; i++) ox_lg_worker_destroy(&w[i]);
  srv_stop(s);
  ox_lg_reqs_destroy(rq);
  ox_lg_match_destroy(m);
}

/* The client-side port of a worker's load connection (to find it in the server's log). */
static int local_port(const ox_lg_conn_t *c) {
  struct sockaddr_in a;
  socklen_t al = sizeof a;
  if (c->fd < 0 || getsockname(c->fd, (struct sockaddr *)&a, &al) != 0) return -1;
  return ntohs(a.sin_port);
}

/* Logs the bodies the server saw, for a failing check. */
static void dump_log(const srv_t *s) {
  for (int i = 0; i < s->nlog; i++)
    fprintf(stderr, "    conn %d port %d '%s' cl %ld body '%s' -> %d\n", s->log[i].conn,
            s->log[i].peer_port, s->log[i].line, s->log[i].content_length, s->log[i].body,
            body_index(&s->log[i]));
}

/* One connection: the bodies go out in file order, wrapping, each with its own length. */
TEST(body_lines_one_connection) {
  static ox_lg_worker_t w[1];
  static srv_t s;
  ox_lg_config_t cfg;
  ox_lg_reqs_t rq;
  ox_lg_match_t m;
  atomic_int stop;
  CHECK_INT(srv_start(&s, 0), 0);
  load_spec_t sp = {.nt = 1, .conns_each = 1, .reqs_each = 7};
  run_load(&s, &sp, &cfg, &rq, &m, w, &stop);
  for (int i = 0; i < NBODIES; i++) CHECK_INT(rq.reqs[i].body_len, strlen(k_bodies[i]));
  ox_lg_worker_destroy(&w[0]);
  srv_stop(&s);
  CHECK_INT(s.nlog, 7);
  CHECK_INT(s.nconns, 1);
  int ok = s.nlog == 7;
  for (int i = 0; i < s.nlog; i++) {
    CHECK_STR(s.log[i].line, "POST /v2/models/m/infer HTTP/1.1");
    if (body_index(&s.log[i]) != i % NBODIES) ok = 0;
  }
  CHECK(ok);
  if (!ok) dump_log(&s);
  ox_lg_reqs_destroy(&rq);
  ox_lg_match_destroy(&m);
}

/* Two threads of two connections: connection j (global) of 4 starts at body j * 3 / 4 and moves
 * on by one per request; the idle connection's GET carries no body and does not move any cursor. */
TEST(body_lines_connections) {
  static ox_lg_worker_t w[2];
  static srv_t s;
  ox_lg_config_t cfg;
  ox_lg_reqs_t rq;
  ox_lg_match_t m;
  atomic_int stop;
  CHECK_INT(srv_start(&s, 0), 0);
  load_spec_t sp = {.nt = 2, .conns_each = 2, .nidle = 1, .reqs_each = 10};
  run_load(&s, &sp, &cfg, &rq, &m, w, &stop);
  CHECK_INT(w[0].idle_ready, 1);
  int ok = 1, total = 0, starts[NBODIES] = {0};
  for (int t = 0; t < sp.nt; t++)
    for (int k = 0; k < sp.conns_each; k++) {
      int j = t * sp.conns_each + k, port = local_port(&w[t].conns_[k]), seen = 0, prev = -1;
      for (int i = 0; i < s.nlog; i++) {
        if (s.log[i].peer_port != port) continue;
        int b = body_index(&s.log[i]);
        if (seen == 0 && b != j * NBODIES / 4) ok = 0;     /* starts at j * N / C */
        if (seen > 0 && b != (prev + 1) % NBODIES) ok = 0; /* then the next line, wrapping */
        if (seen == 0 && b >= 0) starts[b]++;
        prev = b;
        seen++;
      }
      if (port < 0 || seen == 0) ok = 0;
      total += seen;
    }
  CHECK(ok);
  CHECK_INT(total, 20);
  CHECK_INT(starts[0], 2); /* connections 0 and 1 (0 * 3 / 4, 1 * 3 / 4) */
  CHECK_INT(starts[1], 1);
  CHECK_INT(starts[2], 1);
  int idle_gets = 0;
  for (int i = 0; i < s.nlog; i++) idle_gets += !strcmp(s.log[i].line, "GET /idle HTTP/1.1");
  CHECK_INT(idle_gets, 1);
  CHECK_INT(s.nlog, 21);
  if (!ok) dump_log(&s);
  end_load(&s, &rq, &m, w, sp.nt);
}

/* The server drops connection 0 unanswered after reading its drop_nth-th request; run_load
 * checks that every request still ended well (no error counted), and the server saw the bodies
 * want[0..nwant) in order, on two connections. */
static void check_resend(int drop_nth, int reqs, const int *want, int nwant) {
  static ox_lg_worker_t w[1];
  static srv_t s;
  ox_lg_config_t cfg;
  ox_lg_reqs_t rq;
  ox_lg_match_t m;
  atomic_int stop;
  CHECK_INT(srv_start(&s, drop_nth), 0);
  load_spec_t sp = {.nt = 1, .conns_each = 1, .reqs_each = reqs};
  run_load(&s, &sp, &cfg, &rq, &m, w, &stop);
  end_load(&s, &rq, &m, w, sp.nt);
  int ok = s.nlog == nwant && s.nconns == 2;
  for (int i = 0; ok && i < s.nlog; i++) ok = body_index(&s.log[i]) == want[i];
  CHECK(ok);
  CHECK_INT(s.nlog, nwant);
  if (!ok) dump_log(&s);
}

/* The server drops the keep-alive connection after reading its second request (body 1): the
 * request is resent on a fresh connection with the same body, and the order goes on from there. */
TEST(body_lines_resend_keeps_body) {
  static const int want[] = {0, 1, 1, 2, 0, 1}; /* the second 1 is the resend */
  check_resend(2, 5, want, 6);
}

/* A connection opened ahead of need is dropped unanswered on its first request (a server's
 * timeout for new connections closes it just as the request goes out): the request is resent
 * once on a fresh connection, not counted as an error. */
TEST(resend_on_unused_connection) {
  static const int want[] = {0, 0, 1, 2}; /* the second 0 is the resend */
  check_resend(1, 3, want, 4);
}

/* Open loop (--rate): the order is the same, one connection's cursor. */
TEST(body_lines_open_loop) {
  static ox_lg_worker_t w[1];
  static srv_t s;
  ox_lg_config_t cfg;
  ox_lg_reqs_t rq;
  ox_lg_match_t m;
  atomic_int stop;
  CHECK_INT(srv_start(&s, 0), 0);
  load_spec_t sp = {.nt = 1, .conns_each = 1, .reqs_each = 6, .rate = 2000};
  run_load(&s, &sp, &cfg, &rq, &m, w, &stop);
  end_load(&s, &rq, &m, w, sp.nt);
  int ok = s.nlog == 6;
  for (int i = 0; ok && i < s.nlog; i++) ok = body_index(&s.log[i]) == i % NBODIES;
  CHECK(ok);
  if (!ok) dump_log(&s);
}

TEST_MAIN(T(content_length), T(leftover_after_response), T(keep_alive_rules), T(no_body_statuses),
          T(interim_responses), T(chunked_framing), T(until_close), T(eof_truncation), T(invalid),
          T(limits), T(split_everywhere), T(chunked_random), T(matcher), T(guard_page),
          T(hist_buckets), T(hist_percentiles), T(body_lines), T(request_tails),
          T(body_lines_one_connection), T(body_lines_connections), T(body_lines_resend_keeps_body),
          T(resend_on_unused_connection), T(body_lines_open_loop))
