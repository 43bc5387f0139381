/* l3_pg_lib.c: loads libpq.so.5 and fills ox_pq (see l3_pg_lib.h). */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "core/error.h"
#include "features/l3_pg.h"
#include "features/l3_pg_lib.h"

ox_pq_api_t ox_pq;

static pthread_once_t pq_once = PTHREAD_ONCE_INIT;
static int pq_rc = OX_EUNAVAILABLE;
static char pq_err[384];

static void pq_load(void) {
  /* The dynamic loader's usual search: the executable's rpath, LD_LIBRARY_PATH, ld.so.cache,
   * the system directories. Never unloaded. */
  void *h = dlopen("libpq.so.5", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *why = dlerror();
    snprintf(pq_err, sizeof pq_err, "%s", why ? why : "libpq.so.5: cannot be loaded");
    return;
  }
  ox_pq_api_t api;
#define OX_PQ_RESOLVE(f)                                                           \
  *(void **)&api.f = dlsym(h, #f); /* POSIX's way to get a function pointer */     \
  if (!api.f) {                                                                    \
    snprintf(pq_err, sizeof pq_err, "libpq.so.5 has no %s (too old a libpq)", #f); \
    return;                                                                        \
  }
  OX_PQ_FUNCS(OX_PQ_RESOLVE)
#undef OX_PQ_RESOLVE
  ox_pq = api;
  pq_rc = 0;
}

int ox_l3_pg_load_library(char *err, size_t errcap) {
  pthread_once(&pq_once, pq_load);
  if (pq_rc && err && errcap) snprintf(err, errcap, "%s", pq_err);
  return pq_rc;
}
