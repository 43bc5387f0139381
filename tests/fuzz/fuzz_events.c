/* fuzz_events.c: libFuzzer harness for the body of POST /v1/events (server/event_parse.h).
 *
 * The input is the body, copied into a buffer of exactly its size so ASan sees a read one past
 * it; the key fields are user_id and card_id. Beyond "no crash", the harness checks:
 *   - the result is 0, OX_EINVALID or OX_ENOMEM, with a non-empty message on OX_EINVALID;
 *   - on success: at least one event, each with exactly the entities "user:<id>" and
 *     "card:<id>" (ids of 1 to OX_FSTORE_MAX_ID bytes), a finite amount, and an event_id that
 *     is absent or 1 to OX_FSTORE_MAX_EVENT_ID bytes without control characters;
 *   - parsing is deterministic: a second parse gives bitwise the same events.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/error.h"
#include "server/event_parse.h"

#define REQUIRE(c)     \
  do {                 \
    if (!(c)) abort(); \
  } while (0)

static int has_prefix(ox_slice_t s, const char *p) {
  size_t n = strlen(p);
  return s.len > n && s.len - n <= OX_FSTORE_MAX_ID && !memcmp(s.ptr, p, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *body = malloc(size ? size : 1);
  if (!body) return 0;
  memcpy(body, data, size);
  ox_event_keys_t keys;
  ox_event_keys_parse("user_id,card_id", &keys);
  REQUIRE(keys.n == 2);
  ox_arena_t a, b;
  ox_arena_init(&a);
  ox_arena_init(&b);
  ox_fstore_event_t *ev = NULL, *ev2 = NULL;
  size_t n = 0, n2 = 0;
  char err[160];
  memset(err, 'x', sizeof err);
  int rc = ox_events_parse(size ? body : NULL, size, &keys, &a, &ev, &n, err, sizeof err);
  REQUIRE(rc == 0 || rc == OX_EINVALID || rc == OX_ENOMEM);
  if (rc == OX_EINVALID) REQUIRE(memchr(err, 0, sizeof err) != NULL && err[0] != 0);
  if (rc == 0) {
    REQUIRE(n >= 1 && n <= OX_EVENTS_MAX);
    for (size_t i = 0; i < n; i++) {
      REQUIRE(ev[i].num_entities == 2);
      REQUIRE(has_prefix(ev[i].entities[0], "user:"));
      REQUIRE(has_prefix(ev[i].entities[1], "card:"));
      REQUIRE(isfinite(ev[i].ev.amount));
      REQUIRE(ev[i].id.len <= OX_FSTORE_MAX_EVENT_ID);
      for (size_t j = 0; j < ev[i].id.len; j++)
        REQUIRE((unsigned char)ev[i].id.ptr[j] >= 0x20 && ev[i].id.ptr[j] != 0x7f);
    }
    int rc2 = ox_events_parse(size ? body : NULL, size, &keys, &b, &ev2, &n2, err, sizeof err);
    REQUIRE(rc2 == 0 && n2 == n);
    for (size_t i = 0; i < n; i++) {
      REQUIRE(ev[i].ev.ts_ms == ev2[i].ev.ts_ms && ev[i].ev.merchant == ev2[i].ev.merchant);
      REQUIRE(!memcmp(&ev[i].ev.amount, &ev2[i].ev.amount, sizeof(double)));
      REQUIRE(ev[i].id.len == ev2[i].id.len &&
              (!ev[i].id.len || !memcmp(ev[i].id.ptr, ev2[i].id.ptr, ev[i].id.len)));
      for (int k = 0; k < 2; k++)
        REQUIRE(ev[i].entities[k].len == ev2[i].entities[k].len &&
                !memcmp(ev[i].entities[k].ptr, ev2[i].entities[k].ptr, ev[i].entities[k].len));
    }
  }
  free(ev);
  free(ev2);
  ox_arena_free(&a);
  ox_arena_free(&b);
  free(body);
  return 0;
}
