/* loadgen_http.h: the load generator's HTTP/1.1 response parser and streaming substring matcher,
 * and the splitter of --body-lines files into request bodies.
 *
 * Pure, bounded and incremental, like src/http's request parser but for the other direction,
 * and written separately on purpose: a benchmark client that shared the server's parser would
 * share its bugs. No I/O and no allocation per response.
 *
 * The parser never needs a whole response in memory: the head must be contiguous (it is bounded
 * by max_head), but the body is consumed as it arrives, whatever its framing (Content-Length,
 * chunked, or delimited by the server closing the connection), and its decoded bytes are fed to
 * an optional matcher, so --check-body works on a 100 MB chunked body with a 64 KiB buffer.
 *
 * Calling convention: ox_lg_resp_begin before each response, then ox_lg_resp_parse with the
 * bytes received. While the head is incomplete nothing is consumed: the caller keeps the bytes
 * and presents them again, with more appended, at the same start (the parser remembers how far
 * it has already scanned). Once the head is complete, every byte up to the end of the response
 * is consumed.
 */
#ifndef OX_LG_HTTP_H
#define OX_LG_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* Knuth-Morris-Pratt over a stream: the pattern and its failure table. */
typedef struct {
  const char *pat; /* borrowed: valid as long as the matcher */
  size_t len;      /* >= 1 */
  size_t *fail;    /* owned: len entries, ox_lg_match_destroy frees it */
} ox_lg_match_t;

/* Prepares a matcher for pat[0..len). pat is borrowed. Returns 0, OX_EINVALID for an empty
 * pattern, OX_ENOMEM. */
int ox_lg_match_create(ox_lg_match_t *m, const char *pat, size_t len);
void ox_lg_match_destroy(ox_lg_match_t *m);
/* Advances the match state (0 at the start of a stream) over p[0..n) and returns the new state.
 * The state equals m->len once the pattern has been seen, and stays there. */
size_t ox_lg_match_feed(const ox_lg_match_t *m, size_t state, const char *p, size_t n);

typedef struct {
  /* Set by the caller before ox_lg_resp_begin (begin keeps them): */
  size_t max_head;            /* status line + headers + CRLFCRLF; 0 means 16384 */
  const ox_lg_match_t *match; /* optional: decoded body bytes are fed to it */
  int head_request;           /* the request was HEAD: no body, whatever the headers say */

  /* Results, valid once the head is complete: */
  int status;              /* 100..999 */
  int minor_version;       /* HTTP/1.0 or 1.1 */
  int keep_alive;          /* 0: the server will close (or must be closed) after it */
  int chunked;             /* Transfer-Encoding ends in chunked */
  int until_close;         /* no length: the body ends when the server closes */
  uint64_t content_length; /* when neither chunked nor until_close */
  size_t head_len;         /* bytes of the final head (after any 1xx interim heads) */
  uint64_t body_len;       /* decoded body bytes so far */
  size_t match_state;      /* matcher state over the decoded body */
  const char *why;         /* static reason after an error */

  /* Private: */
  int phase_;
  size_t scan_;        /* bytes of the pending head already searched for CRLFCRLF */
  uint64_t remaining_; /* body or chunk bytes left */
  int cstate_;         /* chunked sub-state */
  uint32_t cdigits_;   /* hex digits of the chunk size so far */
  size_t cline_;       /* bytes of the current extension or trailer line */
  size_t ctrailer_;    /* bytes of all trailer lines */
} ox_lg_resp_t;

/* Starts a new response (keeps max_head, match and head_request). */
void ox_lg_resp_begin(ox_lg_resp_t *r);

/* Parses buf[0..len) (see the calling convention above); *consumed receives the bytes used.
 * Returns 0 when the response is complete (*consumed may then be < len: the bytes after it
 * belong to no request), OX_ENEED_MORE when more bytes are needed, OX_EINVALID for a malformed
 * response (bad status line, bad header, conflicting Content-Length, bad chunk framing...), or
 * OX_EHEADERS_TOO_LARGE when the head exceeds max_head; r->why says what on error. 1xx interim
 * responses (except 101, which is invalid here) are skipped. */
int ox_lg_resp_parse(ox_lg_resp_t *r, const char *buf, size_t len, size_t *consumed);

/* The server closed the connection. Returns 0 if that completes the response (a body
 * delimited by close), else OX_EINVALID (the response is truncated, or never started). */
int ox_lg_resp_eof(ox_lg_resp_t *r);

/* 1 if the parser has seen nothing of the current response yet (a close then is not a
 * truncated response but a connection the server dropped between requests). */
int ox_lg_resp_idle(const ox_lg_resp_t *r);

/* ---- request bodies, one per line (--body-lines) ----------------------------------------- */

/* A view into a caller's buffer. */
typedef struct {
  const char *ptr;
  size_t len;
} ox_lg_slice_t;

/* Splits buf[0..len) into lines, each one request body. A line ends at LF (not part of the body);
 * a CR just before the LF is dropped too (CRLF files), as is a CR ending an unterminated last
 * line; a last line without LF counts. Other bytes, a CR inside a line included, are kept.
 * out may be NULL to only count; otherwise it has room for max slices, which receive views into
 * buf (borrowed: valid as long as buf). *n receives the number of lines.
 * Returns 0; OX_EINVALID for an empty buffer (*bad_line = 0) or an empty line (*bad_line = its
 * 1-based number); OX_ETOO_LARGE for more than max lines (*bad_line = max + 1). */
int ox_lg_body_lines(const char *buf, size_t len, size_t max, ox_lg_slice_t *out, size_t *n,
                     size_t *bad_line);

#endif
