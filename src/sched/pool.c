/* pool.c: see pool.h. A mutex and a condition variable around an intrusive FIFO: the queue is
 * touched once per request, so this lock is not a hot spot next to a model run. */
#include "sched/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/error.h"

struct ox_pool {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  ox_job_t *head, *tail;
  size_t queued, running, max_queue;
  int stopping;
  int nthreads;
  pthread_t threads[];
};

static void *ox_pool_main(void *arg) {
  ox_pool_t *p = arg;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (!p->head && !p->stopping) pthread_cond_wait(&p->cond, &p->lock);
    if (!p->head) break; /* stopping and nothing queued */
    ox_job_t *j = p->head;
    p->head = j->next;
    if (!p->head) p->tail = NULL;
    p->queued--;
    p->running++;
    pthread_mutex_unlock(&p->lock);
    j->run(j);
    pthread_mutex_lock(&p->lock);
    p->running--;
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

int ox_pool_create(int nthreads, size_t max_queue, ox_pool_t **out) {
  if (nthreads < 1) nthreads = 1;
  ox_pool_t *p = calloc(1, sizeof *p + sizeof(pthread_t) * (size_t)nthreads);
  if (!p) return OX_ENOMEM;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->cond, NULL);
  p->max_queue = max_queue;
  for (int i = 0; i < nthreads; i++) {
    int rc = pthread_create(&p->threads[i], NULL, ox_pool_main, p);
    if (rc) {
      p->nthreads = i;
      ox_pool_destroy(p);
      return -rc;
    }
    p->nthreads = i + 1;
  }
  *out = p;
  return 0;
}

int ox_pool_submit(ox_pool_t *p, ox_job_t *job) {
  pthread_mutex_lock(&p->lock);
  if (p->stopping || (p->max_queue && p->queued >= p->max_queue)) {
    pthread_mutex_unlock(&p->lock);
    return OX_EUNAVAILABLE;
  }
  job->next = NULL;
  if (p->tail)
    p->tail->next = job;
  else
    p->head = job;
  p->tail = job;
  p->queued++;
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

int ox_pool_submit_front(ox_pool_t *p, ox_job_t *job) {
  pthread_mutex_lock(&p->lock);
  if (p->stopping) {
    pthread_mutex_unlock(&p->lock);
    return OX_EUNAVAILABLE;
  }
  job->next = p->head;
  p->head = job;
  if (!p->tail) p->tail = job;
  p->queued++;
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&p->lock);
  return 0;
}

size_t ox_pool_queued(ox_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  size_t n = p->queued;
  pthread_mutex_unlock(&p->lock);
  return n;
}

size_t ox_pool_running(ox_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  size_t n = p->running;
  pthread_mutex_unlock(&p->lock);
  return n;
}

void ox_pool_destroy(ox_pool_t *p) {
  if (!p) return;
  pthread_mutex_lock(&p->lock);
  p->stopping = 1;
  ox_job_t *j = p->head;
  p->head = p->tail = NULL;
  p->queued = 0;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->lock);
  while (j) {
    ox_job_t *next = j->next;
    j->cancel(j);
    j = next;
  }
  for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  pthread_cond_destroy(&p->cond);
  pthread_mutex_destroy(&p->lock);
  free(p);
}
