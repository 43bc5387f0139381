/* arena.c: see arena.h. */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ox_arena_chunk {
  ox_arena_chunk_t *next;
  size_t size;
  max_align_t data[]; /* chunk payload */
};

long ox_arena_fail_after;

void *ox_arena_alloc_aligned(ox_arena_t *a, size_t size, size_t align) {
  if (ox_arena_fail_after > 0 && --ox_arena_fail_after == 0) return NULL;
  if (align < 16) align = 16;
  if (a->cur) {
    uintptr_t p = ((uintptr_t)a->cur + (align - 1)) & ~(uintptr_t)(align - 1);
    if (p <= (uintptr_t)a->end && size <= (uintptr_t)a->end - p) {
      a->cur = (char *)(p + size);
      return (void *)p;
    }
  }
  size_t need;
  if (__builtin_add_overflow(size, align, &need)) return NULL;
  size_t csize = need > OX_ARENA_CHUNK ? need : OX_ARENA_CHUNK;
  size_t alloc;
  if (__builtin_add_overflow(csize, sizeof(ox_arena_chunk_t), &alloc)) return NULL;
  ox_arena_chunk_t *c = malloc(alloc);
  if (!c) return NULL;
  c->size = csize;
  a->total += alloc;
  char *base = (char *)c->data;
  uintptr_t p = ((uintptr_t)base + (align - 1)) & ~(uintptr_t)(align - 1);
  if (need > OX_ARENA_CHUNK && a->head) {
    /* A big one-off: link it behind the head so the head's free space stays usable. */
    c->next = a->head->next;
    a->head->next = c;
    return (void *)p;
  }
  c->next = a->head;
  a->head = c;
  a->cur = (char *)(p + size);
  a->end = base + csize;
  return (void *)p;
}

char *ox_arena_strndup(ox_arena_t *a, const char *s, size_t len) {
  if (len == SIZE_MAX) return NULL;
  char *d = ox_arena_alloc_aligned(a, len + 1, 1);
  if (!d) return NULL;
  memcpy(d, s, len);
  d[len] = 0;
  return d;
}

void ox_arena_free(ox_arena_t *a) {
  ox_arena_chunk_t *c = a->head;
  while (c) {
    ox_arena_chunk_t *n = c->next;
    free(c);
    c = n;
  }
  ox_arena_init(a);
}
