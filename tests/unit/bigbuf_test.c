/* bigbuf_test.c: the large-buffer cache: sizes, alignment, reuse, bounds, trim, threads. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "core/bigbuf.h"
#include "test.h"

TEST(alloc_rounds_and_aligns) {
  size_t cap = 0;
  char *p = ox_bigbuf_alloc(300000, &cap);
  CHECK(p != NULL);
  CHECK(cap >= 300000 && cap % (64u << 10) == 0);
  CHECK(((uintptr_t)p & 4095) == 0);
  memset(p, 0xAB, cap); /* all of it is writable */
  ox_bigbuf_free(p, cap);
  ox_bigbuf_trim();
  CHECK_INT(ox_bigbuf_cached_bytes(), 0);
}

TEST(freed_buffer_is_reused_for_a_similar_size) {
  ox_bigbuf_trim();
  size_t c1, c2, c3;
  char *a = ox_bigbuf_alloc(3u << 20, &c1);
  a[0] = 42;
  ox_bigbuf_free(a, c1);
  CHECK_INT(ox_bigbuf_cached_bytes(), c1);
  char *b = ox_bigbuf_alloc((3u << 20) - 1000, &c2);
  CHECK(b == a);
  CHECK_INT(c2, c1);
  CHECK_INT(b[0], 42); /* warm pages, not a fresh mapping */
  CHECK_INT(ox_bigbuf_cached_bytes(), 0);
  /* A much smaller request does not take a buffer more than twice its size. */
  ox_bigbuf_free(b, c2);
  char *c = ox_bigbuf_alloc(300000, &c3);
  CHECK(c != b);
  ox_bigbuf_free(c, c3);
  ox_bigbuf_trim();
}

TEST(cache_bounds_hold) {
  ox_bigbuf_trim();
  ox_bigbuf_set_limits(2, 1u << 30);
  void *p[4];
  size_t cap[4];
  for (int i = 0; i < 4; i++) p[i] = ox_bigbuf_alloc(1u << 20, &cap[i]);
  for (int i = 0; i < 4; i++) ox_bigbuf_free(p[i], cap[i]);
  CHECK_INT(ox_bigbuf_cached_bytes(), cap[0] + cap[1]); /* two kept, two unmapped */
  ox_bigbuf_set_limits(16, 1u << 20);                   /* byte bound */
  ox_bigbuf_trim();
  for (int i = 0; i < 4; i++) p[i] = ox_bigbuf_alloc(700000, &cap[i]);
  for (int i = 0; i < 4; i++) ox_bigbuf_free(p[i], cap[i]);
  CHECK(ox_bigbuf_cached_bytes() <= (1u << 20));
  ox_bigbuf_trim();
  ox_bigbuf_set_limits(16, 64u << 20);
}

static void *churn(void *arg) {
  for (int i = 0; i < 2000; i++) {
    size_t cap;
    size_t size = (size_t)(256u << 10) + (size_t)((i * 7919 + (int)(intptr_t)arg) % (2 << 20));
    unsigned char *p = ox_bigbuf_alloc(size, &cap);
    if (!p || cap < size) return (void *)1;
    p[0] = (unsigned char)i;
    p[size - 1] = (unsigned char)i;
    ox_bigbuf_free(p, cap);
  }
  return NULL;
}

TEST(threads_share_the_cache) {
  pthread_t t[4];
  for (intptr_t i = 0; i < 4; i++) pthread_create(&t[i], NULL, churn, (void *)i);
  int bad = 0;
  for (int i = 0; i < 4; i++) {
    void *r;
    pthread_join(t[i], &r);
    bad += r != NULL;
  }
  CHECK_INT(bad, 0);
  CHECK(ox_bigbuf_cached_bytes() <= (64u << 20));
  ox_bigbuf_trim();
}

TEST_MAIN(T(alloc_rounds_and_aligns), T(freed_buffer_is_reused_for_a_similar_size),
          T(cache_bounds_hold), T(threads_share_the_cache))
