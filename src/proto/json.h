/* json.h: a pure, bounded JSON scanner (RFC 8259) for the Open Inference Protocol codecs.
 *
 * No tree and no allocation: the caller walks the text with a cursor, taking the tokens it
 * cares about (strings, numbers) and skipping whole values it does not (ox_json_skip), so a
 * request is parsed in one pass and a tensor's "data" array is located without decoding it.
 * Strict: strings must hold valid UTF-8 with valid escapes (lone surrogates and raw control
 * bytes are errors), numbers follow the grammar exactly (no NaN, Infinity, '+', leading zeros),
 * literals are true/false/null. Nesting is limited to OX_JSON_MAX_DEPTH containers, counted
 * from the top-level value; skipping uses an explicit 64-bit stack, never recursion, so a
 * million '[' fail after 65 bytes.
 *
 * Errors: functions return 0, OX_EINVALID (syntax) or OX_EDEPTH; the cursor is then left at
 * the offending byte and js->err holds a static description of the first error.
 */
#ifndef OX_PROTO_JSON_H
#define OX_PROTO_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

#ifndef OX_JSON_MAX_DEPTH
#define OX_JSON_MAX_DEPTH 64 /* same value as in proto/infer_req.h */
#endif

typedef struct {
  const char *begin; /* start of the text, for error offsets */
  const char *p;     /* cursor */
  const char *end;   /* one past the last byte */
  const char *err;   /* static text of the first syntax error; NULL while there is none */
} ox_json_t;

/* A number token, classified for callers that want integers. */
typedef struct {
  ox_slice_t text; /* the token */
  int neg;         /* it starts with '-' */
  int integral;    /* no fraction and no exponent */
  int overflow;    /* integral, but the magnitude does not fit in uint64 */
  uint64_t mag;    /* magnitude when integral and !overflow ("-0": neg, mag 0) */
} ox_json_number_t;

/* Starts scanning text[0..len) (borrowed for the scanner's lifetime). */
static inline void ox_json_init(ox_json_t *js, const char *text, size_t len) {
  js->begin = js->p = text;
  js->end = text + len;
  js->err = NULL;
}

static inline int ox_json_is_ws(char c) {
  return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Moves the cursor over whitespace. */
static inline void ox_json_ws(ox_json_t *js) {
  const char *p = js->p, *end = js->end;
  while (p < end && ox_json_is_ws(*p)) p++;
  js->p = p;
}

/* Records a syntax error what (a static string) unless one is already recorded; returns
 * OX_EINVALID. */
int ox_json_fail(ox_json_t *js, const char *what);

/* Scans the string token at the cursor (which must be at '"'). On success *contents is the
 * text between the quotes (borrowed from the input), *escaped says whether it holds any '\'
 * (then ox_json_unescape gives its value), and the cursor is past the closing quote.
 * Returns 0 or OX_EINVALID. */
int ox_json_string(ox_json_t *js, ox_slice_t *contents, int *escaped);

/* Scans the number token at the cursor into *num. Returns 0 or OX_EINVALID. */
int ox_json_number(ox_json_t *js, ox_json_number_t *num);

/* Skips one whole value at the cursor (no leading whitespace), validating it. depth is the
 * number of containers already open around it (0 for the top-level value); opening one more
 * than OX_JSON_MAX_DEPTH in all is OX_EDEPTH. Returns 0 (cursor just past the value),
 * OX_EINVALID or OX_EDEPTH. */
int ox_json_skip(ox_json_t *js, int depth);

/* Moves the cursor past the array at the cursor (which must be at '[') by structure alone:
 * brackets are matched (depth counted as in ox_json_skip) and strings skipped, but scalars and
 * separators are NOT validated. For a tensor's "data" array, whose every element the tensor
 * decoder then parses strictly: the text is read once at memchr speed instead of twice.
 * Returns 0, OX_EINVALID (unterminated) or OX_EDEPTH. */
int ox_json_skip_array_fast(ox_json_t *js, int depth);

/* Validates that the whole text is exactly one JSON value with optional whitespace around
 * it. Returns 0, OX_EINVALID or OX_EDEPTH (js->err and js->p say what and where). */
int ox_json_validate(ox_json_t *js);

/* Defined in json.c; its public declaration and contract are in proto/infer_req.h. */
long ox_json_unescape(const char *s, size_t len, char *out);

#endif
