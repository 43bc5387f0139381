/* arena.h: per-request bump allocator, freed once when the request ends (h2o's pools).
 *
 * Allocations come from chunks of at least OX_ARENA_CHUNK bytes; a larger request gets a
 * chunk of its own. Nothing is freed individually. Aligned allocations are available for
 * tensor buffers. Failure injection: ox_arena_fail_after (tests) makes the N-th following
 * allocation fail, to check that every caller cleans up.
 */
#ifndef OX_CORE_ARENA_H
#define OX_CORE_ARENA_H

#include <stddef.h>

#define OX_ARENA_CHUNK 4096

typedef struct ox_arena_chunk ox_arena_chunk_t;
typedef struct {
  ox_arena_chunk_t *head; /* owned: chunk list, newest first */
  char *cur, *end;        /* free space in the head chunk */
  size_t total;           /* bytes obtained from malloc, for metrics */
} ox_arena_t;

/* Test hook: if > 0, counts down on each allocation; the one that brings it to 0 fails. */
extern long ox_arena_fail_after;

static inline void ox_arena_init(ox_arena_t *a) {
  a->head = NULL;
  a->cur = a->end = NULL;
  a->total = 0;
}
/* Returns size bytes aligned to align (a power of two <= 4096), or NULL (out of memory or
 * size overflow). Owned by the arena: valid until ox_arena_reset/free. */
void *ox_arena_alloc_aligned(ox_arena_t *a, size_t size, size_t align);
static inline void *ox_arena_alloc(ox_arena_t *a, size_t size) {
  return ox_arena_alloc_aligned(a, size, 16);
}
/* Copies len bytes and a terminating NUL into the arena; NULL on failure. */
char *ox_arena_strndup(ox_arena_t *a, const char *s, size_t len);
/* Frees every chunk; the arena is empty and reusable. */
void ox_arena_free(ox_arena_t *a);

#endif
