/* timed_run.h: the measured run of the in-process ceilings (bench/ort_limit.c, S1-S4's, and
 * bench/img_limit.c, S5's): N threads loop over their work from one start; a run that ends
 * within [t_measure, t_end) counts. Header-only, like loadgen_hist.h, because each tool is one
 * translation unit.
 *
 * Each tool's worker struct begins with an ox_tr_worker_t; its thread function stops when
 * now >= t_end or *failed is set, records its error in err and *failed on failure, and counts
 * its measured runs in runs and hist. ox_tr_run starts the threads, waits for the measured
 * window, joins them, and sums runs, latency and the process's CPU time over the window.
 */
#ifndef OX_BENCH_TIMED_RUN_H
#define OX_BENCH_TIMED_RUN_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "loadgen_hist.h"
#include "runtime/runtime.h"

typedef struct {
  uint64_t t_measure, t_end; /* CLOCK_MONOTONIC ns, set by ox_tr_run */
  atomic_int *failed;        /* shared: the first error (non-zero) stops every thread */
  ox_lg_hist_t hist;         /* latency of the measured runs, ns */
  uint64_t runs;             /* measured runs */
  char err[256];             /* the thread's error */
} ox_tr_worker_t;

typedef struct {
  ox_lg_hist_t hist; /* every thread's, merged */
  uint64_t runs;
  double cpu_user, cpu_sys; /* the process's, over the measured window (s) */
} ox_tr_result_t;

static inline uint64_t ox_tr_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline double ox_tr_us(uint64_t ns) {
  return (double)ns / 1e3;
}

static inline double ox_tr_cpu_s(const struct timeval *tv) {
  return (double)tv->tv_sec + tv->tv_usec / 1e6;
}

/* Starts ONNX Runtime as onnxd's main.c does (intra_op threads, one inter-op thread, no
 * spinning), opens the repository and finds the model (version "": the highest). 0 with *repo
 * and *m (close with ox_repo_close, then ox_runtime_shutdown), else the exit status (1 or 2)
 * after printing why. */
static int ox_tr_open_model(const char *prog, int intra_op, const char *dir, const char *model,
                            const char *version, ox_repo_t **repo, ox_model_t **m) {
  char err[512];
  ox_runtime_opts_t ro = {.intra_op_threads = intra_op, .inter_op_threads = 1, .allow_spinning = 0};
  if (ox_runtime_init(&ro, err, sizeof err)) {
    fprintf(stderr, "%s: cannot start ONNX Runtime: %s\n", prog, err);
    return 1;
  }
  if (ox_repo_open(dir, repo, err, sizeof err)) {
    fprintf(stderr, "%s: %s\n", prog, err);
    ox_runtime_shutdown();
    return 2;
  }
  if (ox_repo_find(*repo, ox_slice(model, strlen(model)), ox_slice(version, strlen(version)), m)) {
    fprintf(stderr, "%s: no model '%s'%s%s in %s\n", prog, model, version[0] ? " version " : "",
            version, dir);
    ox_repo_close(*repo);
    ox_runtime_shutdown();
    return 2;
  }
  return 0;
}

/* Runs fn on nt threads, thread i with workers + i * size (a struct that begins with an
 * ox_tr_worker_t, its failed set by the caller or left NULL for ox_tr_run's own flag), warmup
 * seconds, then duration measured. Fills *r (large: keep it static). Returns 0, or 1 after
 * printing "<prog>: run failed: <error>" (a thread failed or could not start). */
static int ox_tr_run(const char *prog, void *workers, size_t size, int nt, void *(*fn)(void *),
                     double warmup, double duration, ox_tr_result_t *r) {
  static atomic_int failed;
  atomic_store(&failed, 0);
  pthread_t *tids = calloc((size_t)nt, sizeof *tids);
  if (!tids) {
    fprintf(stderr, "%s: out of memory\n", prog);
    return 1;
  }
  uint64_t t_measure = ox_tr_now_ns() + (uint64_t)(warmup * 1e9),
           t_end = t_measure + (uint64_t)(duration * 1e9);
  int started = 0;
  for (int i = 0; i < nt; i++) {
    ox_tr_worker_t *w = (ox_tr_worker_t *)((char *)workers + (size_t)i * size);
    w->t_measure = t_measure;
    w->t_end = t_end;
    if (!w->failed) w->failed = &failed;
    ox_lg_hist_init(&w->hist);
    if (pthread_create(&tids[i], NULL, fn, w) != 0) break;
    started++;
  }
  struct timespec ts = {(time_t)(t_measure / 1000000000ULL), (long)(t_measure % 1000000000ULL)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  for (int i = 0; i < started; i++) pthread_join(tids[i], NULL);
  getrusage(RUSAGE_SELF, &ru1);
  free(tids);
  ox_lg_hist_init(&r->hist);
  r->runs = 0;
  const char *msg = started < nt ? "cannot start threads" : NULL;
  int any_failed = 0;
  for (int i = 0; i < started; i++) {
    ox_tr_worker_t *w = (ox_tr_worker_t *)((char *)workers + (size_t)i * size);
    ox_lg_hist_merge(&r->hist, &w->hist);
    r->runs += w->runs;
    any_failed |= atomic_load(w->failed) != 0;
    if (w->err[0] && !msg) msg = w->err; /* the thread that failed first wrote its error */
  }
  if (any_failed && !msg) msg = "a run failed";
  r->cpu_user = ox_tr_cpu_s(&ru1.ru_utime) - ox_tr_cpu_s(&ru0.ru_utime);
  r->cpu_sys = ox_tr_cpu_s(&ru1.ru_stime) - ox_tr_cpu_s(&ru0.ru_stime);
  if (msg) {
    fprintf(stderr, "%s: run failed: %s\n", prog, msg);
    return 1;
  }
  return 0;
}

#endif
