/* event_parse_test.c: the body of POST /v1/events (src/server/event_parse.c): amounts outside
 * the documented range refused with the line named, and the merchant identity keyed with the
 * store's key. */
#include "server/event_parse.h"

#include "core/error.h"
#include "test.h"

static int parse(const char *body, const ox_siphash_key_t *mk, ox_fstore_event_t **evs, size_t *n,
                 char *err, size_t errcap) {
  ox_event_keys_t keys;
  ox_event_keys_parse("user_id", &keys);
  keys.merchant_key = mk;
  ox_arena_t a;
  ox_arena_init(&a);
  *evs = NULL;
  int rc = ox_events_parse(body, strlen(body), &keys, &a, evs, n, err, errcap);
  ox_arena_free(&a);
  return rc;
}

TEST(test_amount_range) {
  static const char *const bad[] = {"1e39",          "3e38",  "-1e39", "1000000000001",
                                    "-1.0000001e12", "1e309", "NaN",   "Infinity"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char body[300], err[400] = "";
    snprintf(body, sizeof body,
             "{\"ts\": 1, \"user_id\": \"u\", \"merchant_id\": \"m\", \"amount\": 1}\n"
             "{\"ts\": 2, \"user_id\": \"u\", \"merchant_id\": \"m\", \"amount\": %s}\n",
             bad[i]);
    ox_fstore_event_t *evs;
    size_t n = 0;
    CHECK_INT(parse(body, NULL, &evs, &n, err, sizeof err), OX_EINVALID);
    CHECK(strstr(err, "line 2") != NULL);
    if (strcmp(bad[i], "NaN") && strcmp(bad[i], "Infinity"))
      CHECK(strstr(err, "'amount' must be a finite number from -1e12 to 1e12") != NULL);
    free(evs);
  }
  char err[400] = "";
  ox_fstore_event_t *evs;
  size_t n = 0;
  CHECK_INT(parse("[{\"ts\": 1, \"user_id\": \"u\", \"merchant_id\": \"m\", \"amount\": 1e12},"
                  "{\"ts\": 1, \"user_id\": \"u\", \"merchant_id\": \"m\", \"amount\": -1e12}]",
                  NULL, &evs, &n, err, sizeof err),
            0);
  CHECK_INT(n, 2);
  if (n == 2) CHECK(evs[0].ev.amount == 1e12 && evs[1].ev.amount == -1e12);
  free(evs);
}

TEST(test_merchant_is_keyed) {
  ox_siphash_key_t k1 = {11, 12}, k2 = {21, 22};
  const char *body =
      "{\"ts\": 1, \"user_id\": \"u\", \"merchant_id\": \"m1\", \"amount\": 1}\n"
      "{\"ts\": 1, \"user_id\": \"u\", \"merchant_id\": \"m2\", \"amount\": 1}\n"
      "{\"ts\": 1, \"user_id\": \"u\", \"merchant_id\": 77, \"amount\": 1}\n";
  ox_fstore_event_t *a, *b;
  size_t na = 0, nb = 0;
  char err[400] = "";
  CHECK_INT(parse(body, &k1, &a, &na, err, sizeof err), 0);
  CHECK_INT(parse(body, &k2, &b, &nb, err, sizeof err), 0);
  CHECK_INT(na, 3);
  CHECK_INT(nb, 3);
  if (na == 3 && nb == 3) {
    CHECK(a[0].ev.merchant == ox_siphash("m1", 2, &k1));
    CHECK(a[2].ev.merchant == ox_siphash("77", 2, &k1)); /* an integer id: its digits */
    CHECK(a[0].ev.merchant != a[1].ev.merchant);
    for (int i = 0; i < 3; i++) CHECK(a[i].ev.merchant != b[i].ev.merchant);
    CHECK(a[0].ev.merchant != 0x08a98b07b5509b6bULL); /* FNV-1a 64 of "m1": the old value */
  }
  free(a);
  free(b);
}

TEST_MAIN(T(test_amount_range), T(test_merchant_is_keyed))
