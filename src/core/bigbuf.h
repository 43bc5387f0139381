/* bigbuf.h: large buffers (request bodies of megabytes) straight from mmap, recycled through a
 * small bounded cache.
 *
 * Why: a multi-megabyte body per request through malloc left glibc holding a fragmented
 * high-water mark (peak RSS varied by tens of MB run to run), and plain mmap/munmap per
 * request paid a page fault and kernel zeroing per 4 KiB of every body (about 10% of MobileNetV2
 * JSON throughput). Recycling a few mappings gives both: steady load reuses warm pages, and
 * memory beyond the cache bound goes back to the system at once.
 */
#ifndef OX_CORE_BIGBUF_H
#define OX_CORE_BIGBUF_H

#include <stddef.h>

#define OX_BIGBUF_MIN (256u << 10) /* smaller buffers should come from malloc */

/* Returns at least size bytes, page-aligned, and the mapping's real size in *cap; NULL when
 * out of memory. Owned by the caller: give it back with ox_bigbuf_free(p, *cap). Thread-safe. */
void *ox_bigbuf_alloc(size_t size, size_t *cap);
/* Returns a buffer to the cache, or unmaps it when the cache is full. Thread-safe. */
void ox_bigbuf_free(void *p, size_t cap);
/* Sets the cache bounds (entries, total bytes); defaults 16 and 64 MiB. */
void ox_bigbuf_set_limits(size_t max_entries, size_t max_bytes);
/* Unmaps every cached buffer (shutdown). */
void ox_bigbuf_trim(void);
/* Bytes currently held in the cache (metrics, tests). */
size_t ox_bigbuf_cached_bytes(void);

#endif
