/* bigbuf.c: see bigbuf.h. A mutex around a small array: taken twice per large request. */
#include "core/bigbuf.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#define OX_BIGBUF_SLOTS 64
#define OX_BIGBUF_ROUND (64u << 10)

static struct {
  pthread_mutex_t lock;
  void *ptr[OX_BIGBUF_SLOTS];
  size_t cap[OX_BIGBUF_SLOTS];
  size_t n, bytes;
  size_t max_entries, max_bytes;
} ox_bb = {.lock = PTHREAD_MUTEX_INITIALIZER, .max_entries = 16, .max_bytes = 64u << 20};

void ox_bigbuf_set_limits(size_t max_entries, size_t max_bytes) {
  pthread_mutex_lock(&ox_bb.lock);
  ox_bb.max_entries = max_entries < OX_BIGBUF_SLOTS ? max_entries : OX_BIGBUF_SLOTS;
  ox_bb.max_bytes = max_bytes;
  pthread_mutex_unlock(&ox_bb.lock);
}

void *ox_bigbuf_alloc(size_t size, size_t *cap) {
  size_t want;
  if (size == 0) size = 1;
  if (__builtin_add_overflow(size, OX_BIGBUF_ROUND - 1, &want)) return NULL;
  want &= ~(size_t)(OX_BIGBUF_ROUND - 1);
  /* Best fit among cached buffers no more than twice the size asked for. */
  pthread_mutex_lock(&ox_bb.lock);
  size_t best = SIZE_MAX;
  for (size_t i = 0; i < ox_bb.n; i++) {
    if (ox_bb.cap[i] >= want && ox_bb.cap[i] / 2 <= want &&
        (best == SIZE_MAX || ox_bb.cap[i] < ox_bb.cap[best]))
      best = i;
  }
  if (best != SIZE_MAX) {
    void *p = ox_bb.ptr[best];
    *cap = ox_bb.cap[best];
    ox_bb.bytes -= *cap;
    ox_bb.n--;
    ox_bb.ptr[best] = ox_bb.ptr[ox_bb.n];
    ox_bb.cap[best] = ox_bb.cap[ox_bb.n];
    pthread_mutex_unlock(&ox_bb.lock);
    return p;
  }
  pthread_mutex_unlock(&ox_bb.lock);
  void *p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  *cap = want;
  return p;
}

void ox_bigbuf_free(void *p, size_t cap) {
  if (!p) return;
  pthread_mutex_lock(&ox_bb.lock);
  if (ox_bb.n < ox_bb.max_entries && ox_bb.bytes + cap <= ox_bb.max_bytes) {
    ox_bb.ptr[ox_bb.n] = p;
    ox_bb.cap[ox_bb.n] = cap;
    ox_bb.n++;
    ox_bb.bytes += cap;
    pthread_mutex_unlock(&ox_bb.lock);
    return;
  }
  pthread_mutex_unlock(&ox_bb.lock);
  munmap(p, cap);
}

void ox_bigbuf_trim(void) {
  pthread_mutex_lock(&ox_bb.lock);
  for (size_t i = 0; i < ox_bb.n; i++) munmap(ox_bb.ptr[i], ox_bb.cap[i]);
  ox_bb.n = 0;
  ox_bb.bytes = 0;
  pthread_mutex_unlock(&ox_bb.lock);
}

size_t ox_bigbuf_cached_bytes(void) {
  pthread_mutex_lock(&ox_bb.lock);
  size_t b = ox_bb.bytes;
  pthread_mutex_unlock(&ox_bb.lock);
  return b;
}
