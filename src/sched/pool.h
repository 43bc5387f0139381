/* pool.h: the inference worker pool: N threads taking jobs from one bounded FIFO.
 *
 * Workers never touch sockets: a job hands its result back to the connection's event loop by
 * posting a task (ox_loop_post). A full queue refuses a job at once (the caller answers 503),
 * so overload turns into fast rejections instead of a growing queue.
 */
#ifndef OX_SCHED_POOL_H
#define OX_SCHED_POOL_H

#include <stddef.h>

typedef struct ox_job {
  struct ox_job *next;             /* owned by the pool while queued */
  void (*run)(struct ox_job *);    /* on a worker thread */
  void (*cancel)(struct ox_job *); /* instead of run, when the pool shuts down with it queued */
} ox_job_t;

typedef struct ox_pool ox_pool_t;

/* Starts nthreads workers; max_queue jobs may wait (0 = unbounded). 0 or -errno/OX_ENOMEM. */
int ox_pool_create(int nthreads, size_t max_queue, ox_pool_t **out);
/* Queues job (borrowed until run/cancel is called). 0, or OX_EUNAVAILABLE when the queue is
 * full or the pool is stopping (the job is not queued). Thread-safe. */
int ox_pool_submit(ox_pool_t *pool, ox_job_t *job);
/* Like ox_pool_submit, but puts the job at the head of the queue (work that is already
 * admitted, e.g. a ready batch, goes before new requests) and ignores max_queue. */
int ox_pool_submit_front(ox_pool_t *pool, ox_job_t *job);
/* Jobs waiting (not yet running). */
size_t ox_pool_queued(ox_pool_t *pool);
/* Jobs running right now. */
size_t ox_pool_running(ox_pool_t *pool);
/* Stops taking jobs, cancels the queued ones, waits for running ones, joins the threads, frees. */
void ox_pool_destroy(ox_pool_t *pool);

#endif
