/* loadgen_http.c: the response parser, streaming matcher and body-lines splitter declared in
 * loadgen_http.h.
 *
 * Design. The head is found by searching for CRLFCRLF from where the previous call stopped,
 * then parsed in one left-to-right pass over bytes that are all present (heads are small and
 * bounded, so no byte-level resumption is needed there). The body is a byte-level state machine
 * that can stop anywhere: Content-Length and chunk data are taken in bulk, chunk-size lines,
 * extensions and trailers byte by byte. Every length is bounded and every sum checked.
 */
#include "loadgen_http.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

enum { PH_HEAD, PH_LENGTH, PH_CHUNKED, PH_CLOSE, PH_DONE };
enum {
  CK_SIZE0,   /* first hex digit of a chunk size */
  CK_SIZE,    /* more hex digits, or what ends them */
  CK_SIZE_WS, /* BWS after the size: only SP, HTAB, ';' or CR may follow */
  CK_EXT,     /* chunk extension, up to CR */
  CK_SIZE_LF, /* LF ending the size line */
  CK_DATA,    /* chunk data */
  CK_DATA_CR, /* CRLF after chunk data */
  CK_DATA_LF,
  CK_TRAILER0, /* start of a trailer line, or the final CRLF */
  CK_TRAILER,  /* inside a trailer line */
  CK_TRAILER_LF,
  CK_END_LF, /* LF of the final CRLF */
};

#define DEFAULT_MAX_HEAD 16384
#define MAX_CHUNK_EXT 4096
#define MAX_CHUNK_DIGITS 15 /* 2^60 bytes: far beyond any real chunk, and no overflow */

/* ---- matcher --------------------------------------------------------------------------- */

int ox_lg_match_create(ox_lg_match_t *m, const char *pat, size_t len) {
  m->pat = pat;
  m->len = len;
  m->fail = NULL;
  if (len == 0) return OX_EINVALID;
  m->fail = malloc(len * sizeof *m->fail);
  if (!m->fail) return OX_ENOMEM;
  m->fail[0] = 0;
  for (size_t i = 1, k = 0; i < len; i++) {
    while (k > 0 && pat[i] != pat[k]) k = m->fail[k - 1];
    if (pat[i] == pat[k]) k++;
    m->fail[i] = k;
  }
  return 0;
}

void ox_lg_match_destroy(ox_lg_match_t *m) {
  free(m->fail);
  m->fail = NULL;
}

size_t ox_lg_match_feed(const ox_lg_match_t *m, size_t q, const char *p, size_t n) {
  const char *end = p + n;
  while (p < end && q < m->len) {
    if (q == 0) { /* nothing matched yet: skip to the next occurrence of the first byte */
      const char *hit = memchr(p, m->pat[0], (size_t)(end - p));
      if (!hit) return 0;
      p = hit;
    }
    char c = *p++;
    while (q > 0 && m->pat[q] != c) q = m->fail[q - 1];
    if (m->pat[q] == c) q++;
  }
  return q;
}

/* ---- character classes ----------------------------------------------------------------- */

static int is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}
static int is_ows(unsigned char c) {
  return c == ' ' || c == '\t';
}
/* Field values and reason phrases: HTAB, SP, VCHAR, obs-text. */
static int is_text(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int eq_nocase(const char *p, size_t n, const char *lit) {
  size_t k = strlen(lit);
  if (n != k) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    if (c != (unsigned char)lit[i]) return 0;
  }
  return 1;
}

#define FAIL(r, code, msg) \
  do {                     \
    (r)->why = (msg);      \
    return (code);         \
  } while (0)

/* ---- head -------------------------------------------------------------------------------- */

/* What the header lines say about framing, gathered in one pass. */
typedef struct {
  int has_cl, has_te, te_chunked, conn_close, conn_keep_alive;
  uint64_t cl;
} framing_t;

/* Calls fn on each comma-separated, OWS-trimmed, non-empty element of v[0..n). */
static void each_token(const char *v, size_t n, framing_t *f,
                       void (*fn)(framing_t *f, const char *t, size_t tn)) {
  size_t i = 0;
  while (i < n) {
    size_t s = i;
    while (i < n && v[i] != ',') i++;
    size_t e = i;
    while (s < e && is_ows((unsigned char)v[s])) s++;
    while (e > s && is_ows((unsigned char)v[e - 1])) e--;
    if (e > s) fn(f, v + s, e - s);
    i++;
  }
}

static void te_token(framing_t *f, const char *t, size_t n) {
  f->te_chunked = eq_nocase(t, n, "chunked"); /* only the last coding decides */
}

static void conn_token(framing_t *f, const char *t, size_t n) {
  if (eq_nocase(t, n, "close")) f->conn_close = 1;
  if (eq_nocase(t, n, "keep-alive")) f->conn_keep_alive = 1;
}

static int header(ox_lg_resp_t *r, framing_t *f, const char *name, size_t nn, const char *v,
                  size_t vn) {
  if (eq_nocase(name, nn, "content-length")) {
    if (vn == 0) FAIL(r, OX_EINVALID, "empty Content-Length");
    uint64_t x = 0;
    for (size_t i = 0; i < vn; i++) {
      unsigned char c = (unsigned char)v[i];
      if (c < '0' || c > '9') FAIL(r, OX_EINVALID, "bad Content-Length");
      if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, (uint64_t)(c - '0'), &x))
        FAIL(r, OX_EINVALID, "Content-Length overflow");
    }
    if (f->has_cl && f->cl != x) FAIL(r, OX_EINVALID, "conflicting Content-Length");
    f->has_cl = 1;
    f->cl = x;
  } else if (eq_nocase(name, nn, "transfer-encoding")) {
    f->has_te = 1;
    each_token(v, vn, f, te_token);
  } else if (eq_nocase(name, nn, "connection")) {
    each_token(v, vn, f, conn_token);
  }
  return 0;
}

/* Parses the complete head h[0..n), which ends in CRLFCRLF. */
static int parse_head(ox_lg_resp_t *r, const char *h, size_t n) {
  static const char k_version[] = "HTTP/1.";
  size_t vl = sizeof k_version - 1;
  if (n < vl + 6 || memcmp(h, k_version, vl) != 0) FAIL(r, OX_EINVALID, "not an HTTP/1.x response");
  if (h[vl] != '0' && h[vl] != '1') FAIL(r, OX_EINVALID, "unsupported HTTP version");
  r->minor_version = h[vl] - '0';
  size_t p = vl + 1;
  if (h[p++] != ' ') FAIL(r, OX_EINVALID, "bad status line");
  int status = 0;
  for (int i = 0; i < 3; i++, p++) {
    if (h[p] < '0' || h[p] > '9') FAIL(r, OX_EINVALID, "bad status code");
    status = status * 10 + (h[p] - '0');
  }
  if (status < 100) FAIL(r, OX_EINVALID, "bad status code");
  r->status = status;
  if (h[p] == ' ') /* reason phrase, possibly empty */
    for (p++; is_text((unsigned char)h[p]); p++) {
    }
  if (h[p] != '\r' || h[p + 1] != '\n') FAIL(r, OX_EINVALID, "bad status line");
  p += 2;

  framing_t f = {0};
  while (!(h[p] == '\r' && h[p + 1] == '\n')) { /* the head ends in CRLFCRLF: this stops */
    size_t ns = p;
    if (is_ows((unsigned char)h[p])) FAIL(r, OX_EINVALID, "obsolete line folding");
    while (is_tchar((unsigned char)h[p])) p++;
    if (p == ns || h[p] != ':') FAIL(r, OX_EINVALID, "bad header name");
    size_t nn = p - ns;
    p++;
    while (is_ows((unsigned char)h[p])) p++;
    size_t vs = p;
    while (is_text((unsigned char)h[p])) p++;
    if (h[p] != '\r' || h[p + 1] != '\n') FAIL(r, OX_EINVALID, "bad byte in header");
    size_t ve = p;
    while (ve > vs && is_ows((unsigned char)h[ve - 1])) ve--;
    int rc = header(r, &f, h + ns, nn, h + vs, ve - vs);
    if (rc) return rc;
    p += 2;
  }
  if (p + 2 != n) FAIL(r, OX_EINVALID, "bad head"); /* cannot happen: CRLFCRLF was searched */

  r->keep_alive = r->minor_version == 1 ? !f.conn_close : (f.conn_keep_alive && !f.conn_close);
  r->chunked = r->until_close = 0;
  r->content_length = 0;
  if (status < 200) {
    if (status == 101) FAIL(r, OX_EINVALID, "unexpected 101 Switching Protocols");
    return 0; /* interim: the caller parses the next head */
  }
  if (r->head_request || status == 204 || status == 304) {
    r->phase_ = PH_DONE;
  } else if (f.has_te) {
    if (f.has_cl) r->keep_alive = 0; /* RFC 9112 6.3: TE overrides CL, then close */
    if (f.te_chunked) {
      r->chunked = 1;
      r->phase_ = PH_CHUNKED;
      r->cstate_ = CK_SIZE0;
    } else {
      r->until_close = 1;
      r->keep_alive = 0;
      r->phase_ = PH_CLOSE;
    }
  } else if (f.has_cl) {
    r->content_length = r->remaining_ = f.cl;
    r->phase_ = f.cl ? PH_LENGTH : PH_DONE;
  } else {
    r->until_close = 1;
    r->keep_alive = 0;
    r->phase_ = PH_CLOSE;
  }
  return 0;
}

/* Finds and parses the head at buf[0..len); returns its length (> 0), or an error. */
static long find_head(ox_lg_resp_t *r, const char *buf, size_t len) {
  size_t max = r->max_head ? r->max_head : DEFAULT_MAX_HEAD;
  static const char k_prefix[] = "HTTP/1.";
  size_t pl = len < sizeof k_prefix - 1 ? len : sizeof k_prefix - 1;
  if (memcmp(buf, k_prefix, pl) != 0) FAIL(r, OX_EINVALID, "not an HTTP/1.x response");
  size_t from = r->scan_ >= 3 ? r->scan_ - 3 : 0;
  const char *end = from < len ? memmem(buf + from, len - from, "\r\n\r\n", 4) : NULL;
  if (!end) {
    r->scan_ = len;
    if (len > max) FAIL(r, OX_EHEADERS_TOO_LARGE, "response head too large");
    return OX_ENEED_MORE;
  }
  size_t n = (size_t)(end - buf) + 4;
  if (n > max) FAIL(r, OX_EHEADERS_TOO_LARGE, "response head too large");
  int rc = parse_head(r, buf, n);
  if (rc) return rc;
  r->scan_ = 0;
  return (long)n;
}

/* ---- body -------------------------------------------------------------------------------- */

static void body_bytes(ox_lg_resp_t *r, const char *p, size_t n) {
  r->body_len += n;
  if (r->match) r->match_state = ox_lg_match_feed(r->match, r->match_state, p, n);
}

/* Runs the chunked state machine over p[0..n); *used receives the bytes consumed (all of them
 * unless the body ended). Returns 0 at the end of the body, OX_ENEED_MORE, or an error. */
static int chunked(ox_lg_resp_t *r, const char *p, size_t n, size_t *used) {
  size_t max = r->max_head ? r->max_head : DEFAULT_MAX_HEAD;
  size_t i = 0;
  int rc = OX_ENEED_MORE;
  while (i < n && rc == OX_ENEED_MORE) {
    if (r->cstate_ == CK_DATA) {
      size_t take = n - i;
      if (take > r->remaining_) take = (size_t)r->remaining_;
      body_bytes(r, p + i, take);
      i += take;
      r->remaining_ -= take;
      if (r->remaining_ == 0) r->cstate_ = CK_DATA_CR;
      continue;
    }
    unsigned char c = (unsigned char)p[i++];
    int h;
    switch (r->cstate_) {
      case CK_SIZE0:
        if ((h = hex_value(c)) < 0) FAIL(r, OX_EINVALID, "bad chunk size");
        r->remaining_ = (uint64_t)h;
        r->cdigits_ = 1;
        r->cstate_ = CK_SIZE;
        break;
      case CK_SIZE:
        if ((h = hex_value(c)) >= 0) {
          if (++r->cdigits_ > MAX_CHUNK_DIGITS) FAIL(r, OX_EINVALID, "chunk size too large");
          r->remaining_ = r->remaining_ * 16 + (uint64_t)h;
          break;
        }
        __attribute__((fallthrough)); /* to what may end the digits */
      case CK_SIZE_WS:
        if (is_ows(c))
          r->cstate_ = CK_SIZE_WS;
        else if (c == ';')
          r->cstate_ = CK_EXT, r->cline_ = 0;
        else if (c == '\r')
          r->cstate_ = CK_SIZE_LF;
        else
          FAIL(r, OX_EINVALID, "bad chunk size");
        break;
      case CK_EXT:
        if (c == '\r')
          r->cstate_ = CK_SIZE_LF;
        else if (!is_text(c))
          FAIL(r, OX_EINVALID, "bad byte in chunk extension");
        else if (++r->cline_ > MAX_CHUNK_EXT)
          FAIL(r, OX_EINVALID, "chunk extension too long");
        break;
      case CK_SIZE_LF:
        if (c != '\n') FAIL(r, OX_EINVALID, "bad chunk size line ending");
        r->cstate_ = r->remaining_ ? CK_DATA : CK_TRAILER0;
        break;
      case CK_DATA_CR:
        if (c != '\r') FAIL(r, OX_EINVALID, "missing CRLF after chunk data");
        r->cstate_ = CK_DATA_LF;
        break;
      case CK_DATA_LF:
        if (c != '\n') FAIL(r, OX_EINVALID, "missing CRLF after chunk data");
        r->cstate_ = CK_SIZE0;
        break;
      case CK_TRAILER0:
        if (c == '\r')
          r->cstate_ = CK_END_LF;
        else if (!is_tchar(c))
          FAIL(r, OX_EINVALID, "bad trailer");
        else
          r->cstate_ = CK_TRAILER;
        break;
      case CK_TRAILER:
        if (c == '\r')
          r->cstate_ = CK_TRAILER_LF;
        else if (!is_text(c))
          FAIL(r, OX_EINVALID, "bad byte in trailer");
        break;
      case CK_TRAILER_LF:
        if (c != '\n') FAIL(r, OX_EINVALID, "bad trailer line ending");
        r->cstate_ = CK_TRAILER0;
        break;
      case CK_END_LF:
        if (c != '\n') FAIL(r, OX_EINVALID, "bad chunked body ending");
        rc = 0;
        break;
    }
    if (r->cstate_ >= CK_TRAILER0 && ++r->ctrailer_ > max)
      FAIL(r, OX_EHEADERS_TOO_LARGE, "trailers too large");
  }
  *used = i;
  return rc;
}

/* ---- entry points ------------------------------------------------------------------------ */

void ox_lg_resp_begin(ox_lg_resp_t *r) {
  size_t max_head = r->max_head;
  const ox_lg_match_t *match = r->match;
  int head_request = r->head_request;
  memset(r, 0, sizeof *r);
  r->max_head = max_head;
  r->match = match;
  r->head_request = head_request;
  r->phase_ = PH_HEAD;
}

int ox_lg_resp_parse(ox_lg_resp_t *r, const char *buf, size_t len, size_t *consumed) {
  size_t pos = 0;
  int rc = OX_ENEED_MORE;
  *consumed = 0;
  while (rc == OX_ENEED_MORE) {
    switch (r->phase_) {
      case PH_HEAD: {
        if (pos == len) goto out;
        long n = find_head(r, buf + pos, len - pos);
        if (n < 0) {
          if (n != OX_ENEED_MORE) return (int)n;
          goto out;
        }
        pos += (size_t)n;
        r->head_len = (size_t)n;
        break; /* an interim head stays in PH_HEAD and the loop parses the next one */
      }
      case PH_LENGTH: {
        size_t take = len - pos;
        if (take > r->remaining_) take = (size_t)r->remaining_;
        body_bytes(r, buf + pos, take);
        pos += take;
        r->remaining_ -= take;
        if (r->remaining_ == 0)
          r->phase_ = PH_DONE;
        else
          goto out;
        break;
      }
      case PH_CHUNKED: {
        size_t used = 0; /* chunked() leaves it unset when it fails */
        int c = chunked(r, buf + pos, len - pos, &used);
        pos += used;
        if (c == 0)
          r->phase_ = PH_DONE;
        else if (c == OX_ENEED_MORE)
          goto out;
        else
          return c;
        break;
      }
      case PH_CLOSE:
        body_bytes(r, buf + pos, len - pos);
        pos = len;
        goto out;
      case PH_DONE:
        rc = 0;
        break;
    }
  }
out:
  *consumed = pos;
  return rc;
}

int ox_lg_resp_eof(ox_lg_resp_t *r) {
  if (r->phase_ == PH_CLOSE || r->phase_ == PH_DONE) {
    r->phase_ = PH_DONE;
    return 0;
  }
  r->why = ox_lg_resp_idle(r) ? "connection closed before the response"
                              : "connection closed mid-response";
  return OX_EINVALID;
}

int ox_lg_resp_idle(const ox_lg_resp_t *r) {
  return r->phase_ == PH_HEAD && r->scan_ == 0;
}

/* ---- request bodies, one per line ------------------------------------------------------- */

int ox_lg_body_lines(const char *buf, size_t len, size_t max, ox_lg_slice_t *out, size_t *n,
                     size_t *bad_line) {
  size_t count = 0, pos = 0;
  *n = 0;
  *bad_line = 0;
  if (len == 0) return OX_EINVALID;
  while (pos < len) {
    const char *lf = memchr(buf + pos, '\n', len - pos);
    size_t end = lf ? (size_t)(lf - buf) : len, next = lf ? end + 1 : len;
    if (end > pos && buf[end - 1] == '\r') end--;
    if (end == pos) {
      *bad_line = count + 1;
      return OX_EINVALID;
    }
    if (count == max) {
      *bad_line = max + 1;
      return OX_ETOO_LARGE;
    }
    if (out) out[count] = (ox_lg_slice_t){buf + pos, end - pos};
    count++;
    pos = next;
  }
  *n = count;
  return 0;
}
