/* http_parser.h: pure, bounded, incremental HTTP/1.1 request-head parser and chunked decoder.
 *
 * No I/O and no allocation: the caller owns every buffer, the parser returns slices into it.
 * Framing rules follow RFC 9112 strictly and shared/RELIABILITY.md's table: anything ambiguous
 * (CL+TE, duplicate CL, obs-fold, bare CR, control bytes, space before colon...) is rejected.
 *
 * Incremental the picohttpparser way: call ox_http_parse_head again with the grown buffer until
 * it stops returning OX_ENEED_MORE. Limits are checked on partial input too, so a head that can
 * only grow past a limit is refused as soon as the limit is crossed, not when it completes.
 */
#ifndef OX_HTTP_PARSER_H
#define OX_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#define OX_HTTP_MAX_HEADERS 100

typedef struct {
  size_t max_request_line; /* bytes of the request line without CRLF; over it: 414. 8192 */
  size_t max_header_line;  /* bytes of one header line without CRLF; over it: 431. 8192 */
  size_t max_head;         /* bytes of all header lines (excluding request line); 431. 32768 */
  size_t max_headers;      /* header count; over it: 431. <= OX_HTTP_MAX_HEADERS, 100 */
  uint64_t max_body;       /* Content-Length above it: OX_ETOO_LARGE (413). 64 MiB */
} ox_http_limits_t;

/* The defaults above. */
void ox_http_limits_default(ox_http_limits_t *lim);

typedef struct {
  ox_slice_t name, value; /* value without leading/trailing OWS */
} ox_http_header_t;

typedef struct {
  ox_slice_t method;    /* token, e.g. "GET" */
  ox_slice_t target;    /* request-target as sent */
  ox_slice_t path;      /* target before '?'; for the absolute-form (RFC 9112 3.2.2,
                           "http[s]://authority/path?query") the path after the authority ("/" if
                           none: then it points at a static string, not into the buffer) */
  ox_slice_t authority; /* absolute-form only: host[:port] of the target, which takes the Host
                          header's place (its value is then ignored); else empty */
  ox_slice_t query;     /* after '?', empty if none */
  int minor_version;    /* HTTP/1.x: 0 or 1 (other versions: OX_EINVALID, "HTTP/2.0": 505 is not
                           needed; reject as 400) */
  ox_http_header_t headers[OX_HTTP_MAX_HEADERS];
  size_t num_headers;
  /* Derived framing, filled on success: */
  int chunked;             /* Transfer-Encoding: chunked (exactly, case-insensitive) */
  int has_content_length;  /* a valid single Content-Length header was present */
  uint64_t content_length; /* its value (0 if absent and not chunked) */
  int keep_alive;          /* 1.1 default keep-alive unless "Connection: close"; 1.0 default
                              close unless "Connection: keep-alive" (token list, any case) */
  int expect_continue;     /* "Expect: 100-continue" (case-insensitive) */
} ox_http_request_t;

/* Parses a request head (request line, headers, empty line) at buf[0..len).
 *
 * Returns the number of bytes the head occupies (> 0, including the final CRLFCRLF) on
 * success, with *req filled (slices borrow buf: valid while buf is). Otherwise:
 *   OX_ENEED_MORE         incomplete so far, no limit crossed;
 *   OX_EINVALID           malformed (400), *why says what, e.g. "bad chunk size";
 *   OX_EURI_TOO_LONG      request line over the limit (414);
 *   OX_EHEADERS_TOO_LARGE a header line, the header block or the header count over its limit (431);
 *   OX_ENOT_IMPLEMENTED   a transfer coding other than chunked (501);
 *   OX_ETOO_LARGE         Content-Length above max_body (413).
 * why (may be NULL) receives a static string naming the problem on error.
 * Requests are accepted with LF-only line endings? No: every line must end in CRLF. A leading
 * empty line (CRLF) before the request line is tolerated (RFC 9112 2.2) only once. */
int ox_http_parse_head(const char *buf, size_t len, const ox_http_limits_t *lim,
                       ox_http_request_t *req, const char **why);

/* Looks up a header by name (case-insensitive); returns its value slice, or {NULL,0}. */
ox_slice_t ox_http_header(const ox_http_request_t *req, const char *name);

/* Chunked transfer-coding decoder state. Zero-initialise, then set max_body. */
typedef struct {
  uint64_t max_body;  /* decoded total above it: OX_ETOO_LARGE */
  uint64_t total;     /* decoded bytes so far */
  uint64_t remaining; /* bytes left in the current chunk's data */
  uint32_t chunks;    /* chunks seen; over 65536: OX_EINVALID */
  uint32_t line_len;  /* bytes of the current size/trailer line so far (extension <= 1 KiB) */
  int state;          /* internal */
  int done;           /* set when the last chunk and trailers have been consumed */
} ox_http_chunked_t;

/* Decodes chunked input in[0..in_len) into out, which has room for at least in_len bytes
 * (decoded data is never longer than its encoding). *consumed receives the input bytes used,
 * *produced the data bytes written to out. out may equal in (in-place decoding).
 * Returns 0 when the message body is complete (then *consumed may be < in_len: the rest is the
 * next pipelined request), OX_ENEED_MORE when all input was used and more is needed,
 * OX_EINVALID (bad size: "0x10", "1_0", " 10", overflow; bad CRLF; extension over 1 KiB; more
 * than 65536 chunks; trailer over limits), OX_ETOO_LARGE (total above max_body). */
int ox_http_chunked_decode(ox_http_chunked_t *d, const char *in, size_t in_len, char *out,
                           size_t *consumed, size_t *produced, const char **why);

#endif
