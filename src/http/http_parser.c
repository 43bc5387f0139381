/* http_parser.c: the HTTP/1.1 request-head parser and chunked decoder declared in http_parser.h.
 *
 * Design. ox_http_parse_head re-parses from the start on every call (heads are small, as in
 * picohttpparser) in one left-to-right pass, and every decision depends only on the bytes before
 * the point where it is taken: a limit is checked on each byte as it is reached, a malformed byte
 * is refused where it stands, and a header's meaning (Content-Length, Transfer-Encoding, ...) is
 * judged when its CRLF arrives. So a prefix of an input gives either OX_ENEED_MORE or the very
 * answer the whole input gives, which is what makes incremental parsing safe (the fuzz harness
 * checks it). The hot loops (target, field values) scan a run of plain bytes with a table lookup
 * and only fall back to the careful per-byte checks where the run ends.
 *
 * ox_http_chunked_decode is a byte-level state machine resumable anywhere; chunk data is moved in
 * bulk with memmove, so decoding in place is safe (output never runs ahead of input).
 */
#include "http/http_parser.h"

#include <limits.h>
#include <string.h>

#include "core/error.h"
#include "core/text.h"

/* ---- character classes ----------------------------------------------------------------- */

/* tchar (RFC 9110 5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA. */
/* clang-format off */
static const unsigned char k_tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};
/* clang-format on */

static inline int is_tchar(unsigned char c) {
  return k_tchar[c];
}
static inline int is_ows(unsigned char c) {
  return c == ' ' || c == '\t';
}
/* Field-value bytes: HTAB, SP, VCHAR, obs-text. Everything else is a CTL (or CR, LF). */
static inline int is_value_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}
/* Request-target bytes: VCHAR only (RFC 3986 characters; non-ASCII must be percent-encoded). */
static inline int is_target_char(unsigned char c) {
  return c > 0x20 && c < 0x7f;
}

static inline int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static inline unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static int eq_nocase(const char *p, size_t n, const char *lit, size_t lit_len) {
  if (n != lit_len) return 0;
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)p[i]) != (unsigned char)lit[i]) return 0;
  return 1;
}
#define EQ_LIT(p, n, lit) eq_nocase((p), (n), lit, sizeof(lit) - 1)

/* ---- limits ----------------------------------------------------------------------------- */

void ox_http_limits_default(ox_http_limits_t *lim) {
  lim->max_request_line = 8192;
  lim->max_header_line = 8192;
  lim->max_head = 32768;
  lim->max_headers = OX_HTTP_MAX_HEADERS;
  lim->max_body = (uint64_t)64 << 20;
}

/* ---- request head ----------------------------------------------------------------------- */

/* The parse in progress: the buffer, where we are, and framing facts gathered so far. */
typedef struct {
  const char *buf;
  size_t len;
  size_t pos;
  const ox_http_limits_t *lim;
  size_t max_headers;
  const char *why;
  int seen_te;
  int conn_close, conn_keep_alive;
} head_parse_t;

#define FAIL(hp, code, msg) \
  do {                      \
    (hp)->why = (msg);      \
    return (code);          \
  } while (0)

/* Reads the byte at hp->pos of the request line that started at ls. A non-CR byte at index
 * max_request_line or beyond means the line is longer than the limit. */
static int rl_peek(head_parse_t *hp, size_t ls, unsigned char *c) {
  if (hp->pos >= hp->len) return OX_ENEED_MORE;
  *c = (unsigned char)hp->buf[hp->pos];
  if (hp->pos - ls >= hp->lim->max_request_line && *c != '\r')
    FAIL(hp, OX_EURI_TOO_LONG, "request line too long");
  return 0;
}

static int check_target_form(const char *t, size_t n) {
  if (t[0] == '/') return 1;              /* origin-form */
  if (n == 1 && t[0] == '*') return 1;    /* asterisk-form */
  unsigned char c0 = (unsigned char)t[0]; /* absolute-form "scheme:..." or authority-form */
  if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z'))) return 0;
  return memchr(t, ':', n) != NULL;
}

/* Length of an "http://" or "https://" prefix at t[0..n) (scheme case-insensitive), else 0. */
static size_t http_scheme_len(const char *t, size_t n) {
  static const char k[] = "https://";
  size_t i = 0;
  for (; i < 4; i++)
    if (i >= n || lower((unsigned char)t[i]) != k[i]) return 0;
  if (i < n && lower((unsigned char)t[i]) == 's') i++;
  if (n - i < 3 || memcmp(t + i, "://", 3)) return 0;
  return i + 3;
}

/* RFC 9112 3.2.2: absolute-form "http://authority[/path][?query]". Sets authority and path
 * (path "/" when the target has none); query was set by the caller. 0 or -1 (empty authority,
 * or userinfo, which RFC 9110 4.2.4 forbids). */
static int split_absolute_form(ox_http_request_t *req, size_t scheme_len) {
  const char *t = req->target.ptr, *end = req->path.ptr + req->path.len;
  const char *a = t + scheme_len, *p = a;
  while (p < end && *p != '/') p++;
  if (p == a || memchr(a, '@', (size_t)(p - a))) return -1;
  req->authority = ox_slice(a, (size_t)(p - a));
  req->path = p < end ? ox_slice(p, (size_t)(end - p)) : ox_slice("/", 1);
  return 0;
}

static int parse_request_line(head_parse_t *hp, ox_http_request_t *req) {
  const char *buf = hp->buf;
  size_t ls = hp->pos;
  unsigned char c;
  int rc;

  /* method = token, then exactly one SP */
  for (;;) {
    if ((rc = rl_peek(hp, ls, &c)) != 0) return rc;
    if (!is_tchar(c)) break;
    hp->pos++;
  }
  if (c != ' ' || hp->pos == ls) {
    if (c == '\n') FAIL(hp, OX_EINVALID, "bare LF in request line");
    FAIL(hp, OX_EINVALID, hp->pos == ls ? "missing method" : "bad method");
  }
  req->method = ox_slice(buf + ls, hp->pos - ls);
  hp->pos++;

  /* request-target: VCHARs up to the next SP */
  size_t ts = hp->pos, qs = 0;
  for (;;) {
    size_t stop = hp->len;
    if (hp->lim->max_request_line < stop - ls) stop = ls + hp->lim->max_request_line;
    while (hp->pos < stop && is_target_char((unsigned char)buf[hp->pos])) {
      if (buf[hp->pos] == '?' && !qs) qs = hp->pos;
      hp->pos++;
    }
    if ((rc = rl_peek(hp, ls, &c)) != 0) return rc;
    if (!is_target_char(c)) break;
    if (c == '?' && !qs) qs = hp->pos; /* the run above stops early only at a limit */
    hp->pos++;
  }
  if (c != ' ') {
    if (c == '\n') FAIL(hp, OX_EINVALID, "bare LF in request line");
    if (c == '\r') FAIL(hp, OX_EINVALID, "missing HTTP version");
    FAIL(hp, OX_EINVALID, "bad byte in request-target");
  }
  if (hp->pos == ts) FAIL(hp, OX_EINVALID, "empty request-target");
  if (!check_target_form(buf + ts, hp->pos - ts)) FAIL(hp, OX_EINVALID, "bad request-target");
  req->target = ox_slice(buf + ts, hp->pos - ts);
  if (qs) {
    req->path = ox_slice(buf + ts, qs - ts);
    req->query = ox_slice(buf + qs + 1, hp->pos - qs - 1);
  } else {
    req->path = req->target;
    req->query = ox_slice(buf + hp->pos, 0);
  }
  size_t scheme_len = http_scheme_len(req->target.ptr, req->target.len);
  if (scheme_len && split_absolute_form(req, scheme_len))
    FAIL(hp, OX_EINVALID, "bad authority in absolute-form request-target");
  hp->pos++;

  /* "HTTP/1." ("0" / "1") CRLF, nothing else */
  static const char k_version[] = "HTTP/1.";
  for (size_t i = 0; i < sizeof(k_version) - 1; i++) {
    if ((rc = rl_peek(hp, ls, &c)) != 0) return rc;
    if (c != (unsigned char)k_version[i]) {
      if (c == '\n') FAIL(hp, OX_EINVALID, "bare LF in request line");
      FAIL(hp, OX_EINVALID, "unsupported HTTP version");
    }
    hp->pos++;
  }
  if ((rc = rl_peek(hp, ls, &c)) != 0) return rc;
  if (c != '0' && c != '1') FAIL(hp, OX_EINVALID, "unsupported HTTP version");
  req->minor_version = c - '0';
  hp->pos++;
  if ((rc = rl_peek(hp, ls, &c)) != 0) return rc;
  if (c != '\r') {
    if (c == '\n') FAIL(hp, OX_EINVALID, "bare LF in request line");
    FAIL(hp, OX_EINVALID, "unsupported HTTP version");
  }
  hp->pos++;
  if (hp->pos >= hp->len) return OX_ENEED_MORE;
  if (buf[hp->pos] != '\n') FAIL(hp, OX_EINVALID, "bare CR in request line");
  hp->pos++;
  return 0;
}

/* Content-Length = 1*DIGIT, fitting in uint64. */
static int parse_content_length(head_parse_t *hp, const char *v, size_t n, uint64_t *out) {
  if (n == 0) FAIL(hp, OX_EINVALID, "empty Content-Length");
  uint64_t x;
  int ovf;
  size_t k = ox_dec_prefix(v, n, &x, &ovf);
  /* The first failure in reading order, as a byte-by-byte loop would see it: an overflow
   * within the digits comes before the non-digit after them. */
  if (ovf) FAIL(hp, OX_EINVALID, "Content-Length overflow");
  if (k < n && v[k] == ',') FAIL(hp, OX_EINVALID, "Content-Length list");
  if (k < n) FAIL(hp, OX_EINVALID, "bad Content-Length");
  *out = x;
  return 0;
}

/* Connection = #connection-option: notes "close" and "keep-alive", ignores the rest. */
static void scan_connection(head_parse_t *hp, const char *v, size_t n) {
  size_t i = 0;
  while (i < n) {
    while (i < n && (is_ows((unsigned char)v[i]) || v[i] == ',')) i++;
    size_t s = i;
    while (i < n && v[i] != ',') i++;
    size_t e = i;
    while (e > s && is_ows((unsigned char)v[e - 1])) e--;
    if (EQ_LIT(v + s, e - s, "close")) hp->conn_close = 1;
    if (EQ_LIT(v + s, e - s, "keep-alive")) hp->conn_keep_alive = 1;
  }
}

/* Judges a complete header line for the framing headers. */
static int on_header(head_parse_t *hp, ox_http_request_t *req, ox_http_header_t *h) {
  const char *n = h->name.ptr, *v = h->value.ptr;
  size_t nl = h->name.len, vl = h->value.len;
  if (EQ_LIT(n, nl, "content-length")) {
    if (req->has_content_length) FAIL(hp, OX_EINVALID, "duplicate Content-Length");
    if (hp->seen_te) FAIL(hp, OX_EINVALID, "both Content-Length and Transfer-Encoding");
    int rc = parse_content_length(hp, v, vl, &req->content_length);
    if (rc) return rc;
    req->has_content_length = 1;
    if (req->content_length > hp->lim->max_body)
      FAIL(hp, OX_ETOO_LARGE, "Content-Length above the body limit");
  } else if (EQ_LIT(n, nl, "transfer-encoding")) {
    if (hp->seen_te) FAIL(hp, OX_EINVALID, "duplicate Transfer-Encoding");
    hp->seen_te = 1;
    if (req->has_content_length) FAIL(hp, OX_EINVALID, "both Content-Length and Transfer-Encoding");
    if (req->minor_version == 0) FAIL(hp, OX_EINVALID, "Transfer-Encoding in HTTP/1.0");
    if (EQ_LIT(v, vl, "chunked")) {
      req->chunked = 1;
      return 0;
    }
    if (vl == 0) FAIL(hp, OX_EINVALID, "empty Transfer-Encoding");
    if (memchr(v, ',', vl)) FAIL(hp, OX_EINVALID, "Transfer-Encoding list");
    for (size_t i = 0; i < vl; i++)
      if (!is_tchar((unsigned char)v[i])) FAIL(hp, OX_EINVALID, "bad Transfer-Encoding");
    FAIL(hp, OX_ENOT_IMPLEMENTED, "unsupported transfer coding");
  } else if (EQ_LIT(n, nl, "connection")) {
    scan_connection(hp, v, vl);
  } else if (EQ_LIT(n, nl, "expect")) {
    /* RFC 9110 10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request. */
    if (EQ_LIT(v, vl, "100-continue") && req->minor_version == 1) req->expect_continue = 1;
  }
  return 0;
}

/* Reads the byte at hp->pos of the header line that started at ls (header block at hs). A
 * non-CR byte at index max_header_line or beyond: the line is too long. Any byte of a header
 * line (CRLF included) at offset max_head or beyond in the block: the block is too large. */
static int hl_peek(head_parse_t *hp, size_t ls, size_t hs, unsigned char *c) {
  if (hp->pos >= hp->len) return OX_ENEED_MORE;
  *c = (unsigned char)hp->buf[hp->pos];
  if (hp->pos - ls >= hp->lim->max_header_line && *c != '\r')
    FAIL(hp, OX_EHEADERS_TOO_LARGE, "header line too long");
  if (hp->pos - hs >= hp->lim->max_head) FAIL(hp, OX_EHEADERS_TOO_LARGE, "header block too large");
  return 0;
}

/* The end of the plain run the fast loops may scan without per-byte limit checks. */
static size_t hl_stop(const head_parse_t *hp, size_t ls, size_t hs) {
  size_t stop = hp->len;
  if (hp->lim->max_header_line < stop - ls) stop = ls + hp->lim->max_header_line;
  if (hp->lim->max_head < stop - hs) stop = hs + hp->lim->max_head;
  return stop;
}

/* Parses header lines up to and including the empty line. */
static int parse_headers(head_parse_t *hp, ox_http_request_t *req) {
  const char *buf = hp->buf;
  size_t hs = hp->pos;
  unsigned char c;
  int rc;

  for (;;) {
    size_t ls = hp->pos;
    if (hp->pos >= hp->len) return OX_ENEED_MORE;
    c = (unsigned char)buf[hp->pos];
    if (c == '\r') { /* the empty line ending the head; not counted in the block */
      if (hp->pos + 1 >= hp->len) return OX_ENEED_MORE;
      if (buf[hp->pos + 1] != '\n') FAIL(hp, OX_EINVALID, "bare CR in header");
      hp->pos += 2;
      return 0;
    }
    if (c == '\n') FAIL(hp, OX_EINVALID, "bare LF in header");
    if (is_ows(c)) FAIL(hp, OX_EINVALID, "obs-fold or leading whitespace in header");
    if (req->num_headers >= hp->max_headers) FAIL(hp, OX_EHEADERS_TOO_LARGE, "too many headers");

    /* field-name = token, then ':' with nothing in between */
    for (;;) {
      size_t stop = hl_stop(hp, ls, hs);
      while (hp->pos < stop && is_tchar((unsigned char)buf[hp->pos])) hp->pos++;
      if ((rc = hl_peek(hp, ls, hs, &c)) != 0) return rc;
      if (!is_tchar(c)) break;
      hp->pos++; /* the run above stops early only at a limit */
    }
    if (c != ':') {
      if (is_ows(c)) FAIL(hp, OX_EINVALID, "whitespace before colon");
      if (c == '\r') FAIL(hp, OX_EINVALID, "header line without colon");
      if (c == '\n') FAIL(hp, OX_EINVALID, "bare LF in header");
      if (c < 0x20 || c == 0x7f) FAIL(hp, OX_EINVALID, "control byte in field name");
      FAIL(hp, OX_EINVALID, "bad byte in field name");
    }
    if (hp->pos == ls) FAIL(hp, OX_EINVALID, "empty field name");
    ox_http_header_t *h = &req->headers[req->num_headers];
    h->name = ox_slice(buf + ls, hp->pos - ls);
    hp->pos++;

    /* field-value: leading and trailing OWS are not part of it (vs == 0 means "no byte yet":
     * a value never starts at offset 0, the request line is there) */
    size_t vs = 0, ve = 0;
    for (;;) {
      size_t stop = hl_stop(hp, ls, hs);
      while (hp->pos < stop && is_value_char((unsigned char)buf[hp->pos])) {
        if (!is_ows((unsigned char)buf[hp->pos])) {
          if (!vs) vs = hp->pos;
          ve = hp->pos + 1;
        }
        hp->pos++;
      }
      if ((rc = hl_peek(hp, ls, hs, &c)) != 0) return rc;
      if (!is_value_char(c)) break;
      if (!is_ows(c)) { /* the run above stops early only at a limit */
        if (!vs) vs = hp->pos;
        ve = hp->pos + 1;
      }
      hp->pos++;
    }
    if (c != '\r') {
      if (c == '\n') FAIL(hp, OX_EINVALID, "bare LF in header");
      FAIL(hp, OX_EINVALID, "control byte in field value");
    }
    if (!vs) vs = ve = hp->pos;
    h->value = ox_slice(buf + vs, ve - vs);
    hp->pos++;
    /* the LF belongs to the line: it counts towards the block but not the line length */
    if (hp->pos >= hp->len) return OX_ENEED_MORE;
    if (hp->pos - hs >= hp->lim->max_head)
      FAIL(hp, OX_EHEADERS_TOO_LARGE, "header block too large");
    if (buf[hp->pos] != '\n') FAIL(hp, OX_EINVALID, "bare CR in header");
    hp->pos++;

    req->num_headers++;
    if ((rc = on_header(hp, req, h)) != 0) return rc;
  }
}

int ox_http_parse_head(const char *buf, size_t len, const ox_http_limits_t *lim,
                       ox_http_request_t *req, const char **why) {
  head_parse_t hp = {.buf = buf, .len = len, .lim = lim};
  hp.max_headers = lim->max_headers < OX_HTTP_MAX_HEADERS ? lim->max_headers : OX_HTTP_MAX_HEADERS;

  req->method = req->target = req->path = req->query = req->authority = ox_slice(buf, 0);
  req->minor_version = 0;
  req->num_headers = 0;
  req->chunked = req->has_content_length = req->keep_alive = req->expect_continue = 0;
  req->content_length = 0;

  int rc = 0;
  /* RFC 9112 2.2: one empty line before the request line is tolerated (a stray CRLF after a
   * previous body); a second one is a malformed request line. */
  if (len >= 1 && buf[0] == '\r') {
    if (len < 2) return OX_ENEED_MORE;
    if (buf[1] != '\n') {
      hp.why = "bare CR in request line";
      rc = OX_EINVALID;
      goto out;
    }
    hp.pos = 2;
  }
  if ((rc = parse_request_line(&hp, req)) != 0) goto out;
  if ((rc = parse_headers(&hp, req)) != 0) goto out;

  if (hp.pos > INT_MAX) { /* only reachable with absurd limits: the length must fit the int */
    hp.why = "head too large";
    rc = OX_EHEADERS_TOO_LARGE;
    goto out;
  }
  if (!req->has_content_length) req->content_length = 0;
  if (hp.conn_close)
    req->keep_alive = 0;
  else
    req->keep_alive = req->minor_version == 1 || hp.conn_keep_alive;
  return (int)hp.pos;

out:
  if (why && rc != OX_ENEED_MORE) *why = hp.why;
  return rc;
}

ox_slice_t ox_http_header(const ox_http_request_t *req, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < req->num_headers; i++) {
    const ox_http_header_t *h = &req->headers[i];
    if (h->name.len != n) continue;
    size_t j = 0;
    while (j < n && lower((unsigned char)h->name.ptr[j]) == lower((unsigned char)name[j])) j++;
    if (j == n) return h->value;
  }
  return ox_slice(NULL, 0);
}

/* ---- chunked decoder -------------------------------------------------------------------- */

#define CHUNK_LINE_MAX 1024u    /* size line (size + extensions) or one trailer line, no CRLF */
#define CHUNK_TRAILER_MAX 8192u /* all trailer lines with their CRLFs */
#define CHUNK_COUNT_MAX 65536u  /* data chunks per body */

/* States. RFC 9112 7.1:
 *   chunk-size [ BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ]* CRLF
 * BWS is accepted only where the grammar puts it: before ';' and '=' and after them, never
 * before the size or before CRLF. While on a size line, d->remaining accumulates the size (it
 * is zero there otherwise); while in the trailer section it counts trailer bytes. */
enum {
  CS_SIZE_FIRST = 0, /* first hex digit of a chunk size (zero-initialised decoder starts here) */
  CS_SIZE,           /* more hex digits, ';', BWS or CR */
  CS_BWS_SEMI,       /* BWS that must end in ';' */
  CS_EXT_BWS_NAME,   /* after ';': BWS, then an extension name */
  CS_EXT_NAME,       /* in the name: tchar, '=', ';', BWS or CR */
  CS_EXT_BWS_EQ,     /* BWS after the name: '=' or ';' */
  CS_EXT_BWS_VAL,    /* after '=': BWS, then a token or a quoted-string */
  CS_EXT_TOKEN,      /* in a token value: tchar, ';', BWS or CR */
  CS_EXT_QUOTED,     /* in a quoted-string */
  CS_EXT_QESC,       /* after a backslash in a quoted-string */
  CS_EXT_AFTER_Q,    /* after the closing quote: ';', BWS or CR */
  CS_SIZE_LF,        /* LF ending the size line */
  CS_DATA,           /* d->remaining bytes of chunk data */
  CS_DATA_CR,        /* CR after the data */
  CS_DATA_LF,        /* LF after the data */
  CS_TR_START,       /* start of a trailer line, or the final CRLF */
  CS_TR_NAME,        /* trailer field name */
  CS_TR_VALUE,       /* trailer field value */
  CS_TR_LF,          /* LF ending a trailer line */
  CS_END_LF,         /* LF ending the body */
  CS_DONE,           /* complete: later calls read nothing */
  CS_ERR_INVALID,    /* failed: later calls fail the same way */
  CS_ERR_TOO_LARGE,  /* failed on max_body, likewise */
};

static inline int is_qdtext(unsigned char c) {
  return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
         (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

/* The byte after a chunk size or an extension value (token or quoted-string): ';' starts
 * another extension, BWS must lead to one, CR ends the line. Returns the next state, or -1. */
static inline int after_size_or_value(unsigned char c) {
  if (c == ';') return CS_EXT_BWS_NAME;
  if (c == '\r') return CS_SIZE_LF;
  if (is_ows(c)) return CS_BWS_SEMI;
  return -1;
}

int ox_http_chunked_decode(ox_http_chunked_t *d, const char *in, size_t in_len, char *out,
                           size_t *consumed, size_t *produced, const char **why) {
  size_t i = 0, o = 0;
  int rc = OX_EINVALID;
  const char *w = NULL;

  switch (d->state) {
    case CS_DONE:
      *consumed = *produced = 0;
      return 0;
    case CS_ERR_INVALID:
    case CS_ERR_TOO_LARGE:
      *consumed = *produced = 0;
      if (why) *why = "chunked decoder already failed";
      return d->state == CS_ERR_INVALID ? OX_EINVALID : OX_ETOO_LARGE;
    default:
      break;
  }

  while (i < in_len) {
    if (d->state == CS_DATA) {
      size_t n = in_len - i;
      if (n > d->remaining) n = (size_t)d->remaining;
      if (out + o != in + i) memmove(out + o, in + i, n);
      i += n;
      o += n;
      d->remaining -= n;
      d->total += n;
      if (d->remaining == 0) d->state = CS_DATA_CR;
      continue;
    }

    unsigned char c = (unsigned char)in[i];
    int st = d->state;
    if (st < CS_SIZE_LF && c != '\r' && ++d->line_len > CHUNK_LINE_MAX) {
      w = "chunk size line too long";
      goto fail;
    }
    if (st >= CS_TR_START && st <= CS_TR_LF && !(st == CS_TR_START && c == '\r')) {
      if (++d->remaining > CHUNK_TRAILER_MAX) {
        w = "trailer section too large";
        goto fail;
      }
      if (st != CS_TR_LF && c != '\r' && ++d->line_len > CHUNK_LINE_MAX) {
        w = "trailer line too long";
        goto fail;
      }
    }

    switch (st) {
      case CS_SIZE_FIRST: {
        int h = hex_value(c);
        if (h < 0) {
          w = "bad chunk size";
          goto fail;
        }
        d->remaining = (uint64_t)h;
        d->state = CS_SIZE;
        break;
      }
      case CS_SIZE: {
        int h = hex_value(c);
        if (h >= 0) {
          if (__builtin_mul_overflow(d->remaining, 16, &d->remaining) ||
              __builtin_add_overflow(d->remaining, (uint64_t)h, &d->remaining)) {
            w = "chunk size overflow";
            goto fail;
          }
        } else {
          int next = after_size_or_value(c);
          if (next < 0) {
            w = "bad chunk size";
            goto fail;
          }
          d->state = next;
        }
        break;
      }
      case CS_BWS_SEMI:
        if (c == ';')
          d->state = CS_EXT_BWS_NAME;
        else if (!is_ows(c)) {
          w = "bad chunk extension";
          goto fail;
        }
        break;
      case CS_EXT_BWS_NAME:
        if (is_tchar(c))
          d->state = CS_EXT_NAME;
        else if (!is_ows(c)) {
          w = "bad chunk extension";
          goto fail;
        }
        break;
      case CS_EXT_NAME:
        if (is_tchar(c)) break;
        if (c == '=')
          d->state = CS_EXT_BWS_VAL;
        else if (c == ';')
          d->state = CS_EXT_BWS_NAME;
        else if (c == '\r')
          d->state = CS_SIZE_LF;
        else if (is_ows(c))
          d->state = CS_EXT_BWS_EQ;
        else {
          w = "bad chunk extension";
          goto fail;
        }
        break;
      case CS_EXT_BWS_EQ:
        if (c == '=')
          d->state = CS_EXT_BWS_VAL;
        else if (c == ';')
          d->state = CS_EXT_BWS_NAME;
        else if (!is_ows(c)) {
          w = "bad chunk extension";
          goto fail;
        }
        break;
      case CS_EXT_BWS_VAL:
        if (is_tchar(c))
          d->state = CS_EXT_TOKEN;
        else if (c == '"')
          d->state = CS_EXT_QUOTED;
        else if (!is_ows(c)) {
          w = "bad chunk extension";
          goto fail;
        }
        break;
      case CS_EXT_QUOTED:
        if (c == '"')
          d->state = CS_EXT_AFTER_Q;
        else if (c == '\\')
          d->state = CS_EXT_QESC;
        else if (!is_qdtext(c)) {
          w = "bad chunk extension";
          goto fail;
        }
        break;
      case CS_EXT_QESC:
        if (c == '\t' || (c >= 0x20 && c != 0x7f)) {
          d->state = CS_EXT_QUOTED;
        } else {
          w = "bad chunk extension";
          goto fail;
        }
        break;
      case CS_EXT_TOKEN:
        if (is_tchar(c)) break;
        __attribute__((fallthrough)); /* the token has ended: as after a quoted-string */
      case CS_EXT_AFTER_Q: {
        int next = after_size_or_value(c);
        if (next < 0) {
          w = "bad chunk extension";
          goto fail;
        }
        d->state = next;
        break;
      }
      case CS_SIZE_LF:
        if (c != '\n') {
          w = "bare CR in chunk size line";
          goto fail;
        }
        d->line_len = 0;
        if (d->remaining == 0) { /* last-chunk: trailers follow; remaining now counts them */
          d->state = CS_TR_START;
          break;
        }
        if (d->chunks >= CHUNK_COUNT_MAX) {
          w = "too many chunks";
          goto fail;
        }
        d->chunks++;
        {
          uint64_t end;
          if (__builtin_add_overflow(d->total, d->remaining, &end) || end > d->max_body) {
            w = "chunked body above the body limit";
            rc = OX_ETOO_LARGE;
            goto fail;
          }
        }
        d->state = CS_DATA;
        break;
      case CS_DATA_CR:
        if (c != '\r') {
          w = "missing CRLF after chunk data";
          goto fail;
        }
        d->state = CS_DATA_LF;
        break;
      case CS_DATA_LF:
        if (c != '\n') {
          w = "missing CRLF after chunk data";
          goto fail;
        }
        d->state = CS_SIZE_FIRST;
        break;
      case CS_TR_START:
        if (c == '\r')
          d->state = CS_END_LF;
        else if (is_tchar(c))
          d->state = CS_TR_NAME;
        else {
          w = is_ows(c)   ? "obs-fold in trailer"
              : c == ':'  ? "empty trailer field name"
              : c == '\n' ? "bare LF in trailer"
                          : "bad byte in trailer field name";
          goto fail;
        }
        break;
      case CS_TR_NAME:
        if (is_tchar(c)) break;
        if (c == ':') {
          d->state = CS_TR_VALUE;
        } else {
          w = is_ows(c) ? "whitespace before colon in trailer" : "bad byte in trailer field name";
          goto fail;
        }
        break;
      case CS_TR_VALUE:
        if (c == '\r')
          d->state = CS_TR_LF;
        else if (!is_value_char(c)) {
          w = c == '\n' ? "bare LF in trailer" : "control byte in trailer value";
          goto fail;
        }
        break;
      case CS_TR_LF:
        if (c != '\n') {
          w = "bare CR in trailer";
          goto fail;
        }
        d->line_len = 0;
        d->state = CS_TR_START;
        break;
      case CS_END_LF:
        if (c != '\n') {
          w = "bare CR after trailers";
          goto fail;
        }
        d->remaining = 0;
        d->state = CS_DONE;
        d->done = 1;
        *consumed = i + 1;
        *produced = o;
        return 0;
      default:
        w = "chunked decoder in a bad state";
        goto fail;
    }
    i++;
  }
  *consumed = i;
  *produced = o;
  return OX_ENEED_MORE;

fail:
  d->state = rc == OX_ETOO_LARGE ? CS_ERR_TOO_LARGE : CS_ERR_INVALID;
  *consumed = i;
  *produced = o;
  if (why) *why = w;
  return rc;
}
