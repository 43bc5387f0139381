/* event_parse.c: see event_parse.h. A cursor over the body with proto/json.h's scanner; each
 * line of JSON lines is scanned within its own bounds, so an event cannot run into the next. */
#include "server/event_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "proto/json.h"
#include "proto/numconv.h"

void ox_event_keys_parse(const char *spec, ox_event_keys_t *k) {
  k->n = 0;
  k->merchant_key = NULL;
  const char *p = spec ? spec : "";
  while (*p && k->n < OX_FSTORE_MAX_ENTITIES) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len) {
      k->names[k->n] = p;
      k->lens[k->n] = len;
      k->etype_lens[k->n] = len > 3 && !memcmp(p + len - 3, "_id", 3) ? len - 3 : len;
      k->n++;
    }
    p += len + (e ? 1 : 0);
  }
}

/* A string (unescaped into the arena if needed) or an integer token, as text. */
static int id_value(ox_json_t *js, ox_arena_t *a, ox_slice_t *out) {
  if (js->p < js->end && *js->p == '"') {
    ox_slice_t s;
    int esc;
    if (ox_json_string(js, &s, &esc)) return -1;
    if (esc) {
      char *buf = ox_arena_alloc(a, s.len + 1);
      if (!buf) return OX_ENOMEM;
      long n = ox_json_unescape(s.ptr, s.len, buf);
      if (n < 0) return -1;
      s = ox_slice(buf, (size_t)n);
    }
    if (!s.len || s.len > OX_FSTORE_MAX_ID || memchr(s.ptr, 0, s.len)) return -1;
    *out = s;
    return 0;
  }
  ox_json_number_t n;
  if (ox_json_number(js, &n) || !n.integral || n.overflow) return -1;
  if (n.text.len > OX_FSTORE_MAX_ID) return -1;
  *out = n.text;
  return 0;
}

static const ox_siphash_key_t zero; /* ox_event_keys_t.merchant_key NULL: tests only */
/* An event_id: a JSON string (unescaped into the arena if needed) of 1..OX_FSTORE_MAX_EVENT_ID
 * bytes with no control characters (so it can be logged and echoed as is). */
static int event_id(ox_json_t *js, ox_arena_t *a, ox_slice_t *out) {
  ox_slice_t s;
  int esc;
  if (js->p >= js->end || *js->p != '"' || ox_json_string(js, &s, &esc)) return -1;
  if (esc) {
    char *buf = ox_arena_alloc(a, s.len + 1);
    if (!buf) return OX_ENOMEM;
    long n = ox_json_unescape(s.ptr, s.len, buf);
    if (n < 0) return -1;
    s = ox_slice(buf, (size_t)n);
  }
  if (!s.len || s.len > OX_FSTORE_MAX_EVENT_ID) return -1;
  for (size_t i = 0; i < s.len; i++)
    if ((unsigned char)s.ptr[i] < 0x20 || s.ptr[i] == 0x7f) return -1;
  *out = s;
  return 0;
}

/* Parses one event object at the cursor into ev (entities built in the arena). Returns 0,
 * OX_ENOMEM, or -1 with the reason in why. */
static int parse_event(ox_json_t *js, ox_arena_t *a, const ox_event_keys_t *keys,
                       ox_fstore_event_t *ev, char *why, size_t cap) {
  enum { SEEN_TS = 1, SEEN_AMOUNT = 2, SEEN_MERCHANT = 4, SEEN_EVENT_ID = 8 };
  unsigned seen = 0, seen_keys = 0;
  ox_slice_t ids[OX_FSTORE_MAX_ENTITIES];
  memset(ev, 0, sizeof *ev);
  ox_json_ws(js);
  if (js->p >= js->end || *js->p != '{') {
    snprintf(why, cap, "an event must be a JSON object");
    return -1;
  }
  js->p++;
  ox_json_ws(js);
  int first = 1;
  while (js->p < js->end && *js->p != '}') {
    if (!first) {
      if (*js->p != ',') goto syntax;
      js->p++;
      ox_json_ws(js);
    }
    first = 0;
    ox_slice_t key;
    int esc;
    if (js->p >= js->end || *js->p != '"' || ox_json_string(js, &key, &esc)) goto syntax;
    ox_json_ws(js);
    if (js->p >= js->end || *js->p != ':') goto syntax;
    js->p++;
    ox_json_ws(js);
    if (js->p >= js->end) goto syntax;
    unsigned bit = 0;
    size_t ki = OX_FSTORE_MAX_ENTITIES;
    if (!esc) {
      if (ox_slice_eq(key, "ts"))
        bit = SEEN_TS;
      else if (ox_slice_eq(key, "amount"))
        bit = SEEN_AMOUNT;
      else if (ox_slice_eq(key, "merchant_id"))
        bit = SEEN_MERCHANT;
      else if (ox_slice_eq(key, "event_id"))
        bit = SEEN_EVENT_ID;
      for (size_t i = 0; i < keys->n && !bit; i++)
        if (key.len == keys->lens[i] && !memcmp(key.ptr, keys->names[i], key.len)) ki = i;
    }
    if (!bit && ki == OX_FSTORE_MAX_ENTITIES) {
      if (ox_json_skip(js, 1)) goto syntax;
    } else if ((bit && (seen & bit)) || (ki < OX_FSTORE_MAX_ENTITIES && (seen_keys & (1u << ki)))) {
      snprintf(why, cap, "duplicate field '%.*s'", (int)key.len, key.ptr);
      return -1;
    } else if (bit == SEEN_TS) {
      ox_json_number_t n;
      if (ox_json_number(js, &n) || !n.integral || n.overflow ||
          n.mag > (n.neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
        snprintf(why, cap, "'ts' must be an integer number of milliseconds");
        return -1;
      }
      ev->ev.ts_ms = n.neg ? (int64_t)(0 - n.mag) : (int64_t)n.mag;
    } else if (bit == SEEN_AMOUNT) {
      ox_json_number_t n;
      double d;
      if (ox_json_number(js, &n) || ox_parse_f64(n.text.ptr, n.text.len, &d) != n.text.len ||
          !__builtin_isfinite(d) || d > OX_EVENT_MAX_AMOUNT || d < -OX_EVENT_MAX_AMOUNT) {
        snprintf(why, cap, "'amount' must be a finite number from -1e12 to 1e12");
        return -1;
      }
      ev->ev.amount = d;
    } else if (bit == SEEN_EVENT_ID) {
      int rc = event_id(js, a, &ev->id);
      if (rc == OX_ENOMEM) return rc;
      if (rc) {
        snprintf(why, cap,
                 "'event_id' must be a string of 1 to %d bytes without control characters",
                 OX_FSTORE_MAX_EVENT_ID);
        return -1;
      }
    } else if (bit == SEEN_MERCHANT) {
      ox_slice_t m;
      int rc = id_value(js, a, &m);
      if (rc == OX_ENOMEM) return rc;
      if (rc) {
        snprintf(why, cap, "'merchant_id' must be a non-empty string or an integer");
        return -1;
      }
      ev->ev.merchant = ox_siphash(m.ptr, m.len, keys->merchant_key ? keys->merchant_key : &zero);
    } else {
      int rc = id_value(js, a, &ids[ki]);
      if (rc == OX_ENOMEM) return rc;
      if (rc) {
        snprintf(why, cap, "'%.*s' must be a non-empty string (at most %d bytes) or an integer",
                 (int)keys->lens[ki], keys->names[ki], OX_FSTORE_MAX_ID);
        return -1;
      }
    }
    seen |= bit;
    if (ki < OX_FSTORE_MAX_ENTITIES) seen_keys |= 1u << ki;
    ox_json_ws(js);
  }
  if (js->p >= js->end) goto syntax;
  js->p++;
  static const char *const req[] = {"ts", "amount", "merchant_id"};
  for (int i = 0; i < 3; i++)
    if (!(seen & (1u << i))) {
      snprintf(why, cap, "missing field '%s'", req[i]);
      return -1;
    }
  for (size_t i = 0; i < keys->n; i++) {
    if (!(seen_keys & (1u << i))) {
      snprintf(why, cap, "missing field '%.*s'", (int)keys->lens[i], keys->names[i]);
      return -1;
    }
    size_t tl = keys->etype_lens[i], len = tl + 1 + ids[i].len;
    char *e = ox_arena_alloc(a, len + 1);
    if (!e) return OX_ENOMEM;
    memcpy(e, keys->names[i], tl);
    e[tl] = ':';
    memcpy(e + tl + 1, ids[i].ptr, ids[i].len);
    ev->entities[i] = ox_slice(e, len);
  }
  ev->num_entities = keys->n;
  return 0;
syntax:
  snprintf(why, cap, "invalid JSON (%s)", js->err ? js->err : "syntax error");
  return -1;
}

int ox_events_parse(const char *body, size_t len, const ox_event_keys_t *keys, ox_arena_t *a,
                    ox_fstore_event_t **out, size_t *n, char *err, size_t cap) {
  const char *p = body;
  size_t cap_ev = 64, count = 0;
  ox_fstore_event_t *evs = malloc(cap_ev * sizeof *evs);
  if (!evs) return OX_ENOMEM;
  char why[200];
  ox_json_t js;
  ox_json_init(&js, p ? p : "", p ? len : 0);
  ox_json_ws(&js);
  int array = js.p < js.end && *js.p == '[';
  size_t line = 1;
  int rc = 0;
  if (array) js.p++;
  for (;;) {
    /* Next item: in an array, after ',' (or '[') up to ']'; in lines, the next non-blank line. */
    if (array) {
      ox_json_ws(&js);
      if (js.p < js.end && *js.p == ']' && count == 0) {
        js.p++;
        break;
      }
    } else {
      while (js.p < js.end && ox_json_is_ws(*js.p)) line += *js.p++ == '\n';
      if (js.p == js.end) break;
    }
    if (count == OX_EVENTS_MAX) {
      snprintf(err, cap, "more than %d events in one request", OX_EVENTS_MAX);
      rc = OX_EINVALID;
      break;
    }
    if (count == cap_ev) {
      ox_fstore_event_t *ne = realloc(evs, 2 * cap_ev * sizeof *evs);
      if (!ne) {
        rc = OX_ENOMEM;
        break;
      }
      evs = ne;
      cap_ev *= 2;
    }
    if (!array) { /* one object per line: parse within the line */
      const char *nl = memchr(js.p, '\n', (size_t)(js.end - js.p));
      ox_json_t lj;
      ox_json_init(&lj, js.p, (size_t)((nl ? nl : js.end) - js.p));
      rc = parse_event(&lj, a, keys, &evs[count], why, sizeof why);
      if (!rc) {
        ox_json_ws(&lj);
        if (lj.p != lj.end) {
          snprintf(why, sizeof why, "unexpected text after the event (one event per line)");
          rc = -1;
        }
      }
      if (rc) {
        if (rc != OX_ENOMEM) {
          snprintf(err, cap, "line %zu: %s; no event of this request was stored", line, why);
          rc = OX_EINVALID;
        }
        break;
      }
      js.p = lj.end;
      count++;
      continue;
    }
    rc = parse_event(&js, a, keys, &evs[count], why, sizeof why);
    if (rc) {
      if (rc != OX_ENOMEM) {
        snprintf(err, cap, "event %zu (of the array): %s; no event of this request was stored",
                 count + 1, why);
        rc = OX_EINVALID;
      }
      break;
    }
    count++;
    ox_json_ws(&js);
    if (js.p < js.end && *js.p == ',') {
      js.p++;
      continue;
    }
    if (js.p < js.end && *js.p == ']') {
      js.p++;
      break;
    }
    snprintf(err, cap, "event %zu (of the array): expected ',' or ']' after it", count);
    rc = OX_EINVALID;
    break;
  }
  if (!rc && array) {
    ox_json_ws(&js);
    if (js.p != js.end) {
      snprintf(err, cap, "unexpected text after the JSON array");
      rc = OX_EINVALID;
    }
  }
  if (!rc && count == 0) {
    snprintf(err, cap, "no events in the body (JSON lines, or a JSON array, of events)");
    rc = OX_EINVALID;
  }
  if (rc) {
    free(evs);
    return rc;
  }
  *out = evs;
  *n = count;
  return 0;
}
