/* test.h: a minimal unit-test harness. Each TEST is a function; CHECK* record a failure with
 * file:line and keep going; main() from TEST_MAIN runs them all and ends with the line
 * "N passed, N failed" (counting tests, not checks), exit status 1 on any failure. */
#ifndef OX_TEST_H
#define OX_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef void (*ox_test_fn)(void);
static int ox_t_failed_checks;
static const char *ox_t_current;

#define CHECK(cond)                                                                        \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      fprintf(stderr, "  FAIL %s:%d [%s]: %s\n", __FILE__, __LINE__, ox_t_current, #cond); \
      ox_t_failed_checks++;                                                                \
    }                                                                                      \
  } while (0)
#define CHECK_INT(a, b)                                                                   \
  do {                                                                                    \
    long long ox_a_ = (long long)(a), ox_b_ = (long long)(b);                             \
    if (ox_a_ != ox_b_) {                                                                 \
      fprintf(stderr, "  FAIL %s:%d [%s]: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, \
              ox_t_current, #a, #b, ox_a_, ox_b_);                                        \
      ox_t_failed_checks++;                                                               \
    }                                                                                     \
  } while (0)
#define CHECK_STR(a, b)                                                                       \
  do {                                                                                        \
    const char *ox_a_ = (a), *ox_b_ = (b);                                                    \
    if (!ox_a_ || !ox_b_ || strcmp(ox_a_, ox_b_) != 0) {                                      \
      fprintf(stderr, "  FAIL %s:%d [%s]: %s == %s (\"%s\" vs \"%s\")\n", __FILE__, __LINE__, \
              ox_t_current, #a, #b, ox_a_ ? ox_a_ : "(null)", ox_b_ ? ox_b_ : "(null)");      \
      ox_t_failed_checks++;                                                                   \
    }                                                                                         \
  } while (0)
#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)

/* Two pages, the second PROT_NONE: a value copied so that it ends at the returned page's end
 * faults on any read past it. Sets *pg to the page size; NULL (a failed check) when the mapping
 * cannot be made. Release with ox_test_guard_free(m, *pg). */
#define ox_test_guard_map(pg) ox_test_guard_map_at(pg, __FILE__, __LINE__)
static inline char *ox_test_guard_map_at(long *pg, const char *file, int line) {
  *pg = sysconf(_SC_PAGESIZE);
  char *m = mmap(NULL, (size_t)*pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m != MAP_FAILED && mprotect(m + *pg, (size_t)*pg, PROT_NONE) == 0) return m;
  fprintf(stderr, "  FAIL %s:%d [%s]: guard page mapping\n", file, line, ox_t_current);
  ox_t_failed_checks++;
  if (m != MAP_FAILED) munmap(m, (size_t)*pg * 2);
  return NULL;
}
static inline void ox_test_guard_free(char *m, long pg) {
  munmap(m, (size_t)pg * 2);
}

#define TEST(name) static void name(void)
#define TEST_MAIN(...)                                                  \
  int main(void) {                                                      \
    struct {                                                            \
      const char *n;                                                    \
      ox_test_fn f;                                                     \
    } ox_tests[] = {__VA_ARGS__};                                       \
    int passed = 0, failed = 0;                                         \
    for (size_t i = 0; i < sizeof ox_tests / sizeof ox_tests[0]; i++) { \
      int before = ox_t_failed_checks;                                  \
      ox_t_current = ox_tests[i].n;                                     \
      ox_tests[i].f();                                                  \
      if (ox_t_failed_checks == before)                                 \
        passed++;                                                       \
      else {                                                            \
        failed++;                                                       \
        fprintf(stderr, "FAILED %s\n", ox_tests[i].n);                  \
      }                                                                 \
    }                                                                   \
    printf("%d passed, %d failed\n", passed, failed);                   \
    return failed ? 1 : 0;                                              \
  }
#define T(fn) \
  { #fn, fn }

#endif
