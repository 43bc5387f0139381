/* batcher.h: per-model-version scheduling: a bounded queue, dynamic batching, deadlines.
 *
 * A request arrives here prepared (parsed, validated, its input tensors built) from a worker
 * thread. The batcher keeps at most instance_count runs of the model going at once. When an
 * instance is free it forms a batch from the head of the queue: the head plus the following
 * requests whose inputs have the same shape apart from dimension 0 (rows), up to
 * max_batch_size rows. The batch runs as soon as it is full or of a preferred size, or when its
 * oldest request has waited max_queue_delay_us (delay 0: at once, so batches form only from
 * what queues while every instance is busy). Merged inputs are copied once, from each request's
 * tensor into one contiguous batch tensor; a batch of one runs on the request's own memory.
 * Outputs are split by rows into views of the batch's output memory (no copy), shared by the
 * requests through a reference count.
 *
 * Requests whose deadline passes in the queue, or whose client has gone, are completed with an
 * error and never run. Runs happen on worker threads: inline on the thread that enqueued or
 * finished a run, or, when a batch becomes ready by time alone, on a pool worker woken by the
 * batcher's timer thread.
 */
#ifndef OX_SCHED_BATCHER_H
#define OX_SCHED_BATCHER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/runtime.h"
#include "sched/pool.h"

#define OX_MAX_PREFERRED 8

typedef struct {
  uint32_t max_batch_size;     /* rows per run; 0 or 1 = no merging */
  uint64_t max_queue_delay_us; /* how long a batch may wait to grow */
  uint32_t preferred_batch_size[OX_MAX_PREFERRED];
  size_t num_preferred;
  uint32_t max_queue_size;     /* requests waiting; 0 = unbounded (the pool's cap rules) */
  uint64_t default_timeout_us; /* 0 = none */
  uint32_t instance_count;     /* concurrent runs of this model; >= 1 */
} ox_sched_config_t;

typedef struct ox_batch ox_batch_t;

/* One inference request as the batcher sees it. Owned by the caller (the infer handler),
 * which must keep it and the input memory alive until done is called. */
typedef struct ox_sched_req {
  struct ox_sched_req *next; /* batcher's queue link */
  ox_model_t *model;
  const ox_tensor_in_t *inputs; /* model->num_inputs, model order */
  const size_t *out_idx;        /* requested outputs (model indices) */
  size_t n_out;
  uint64_t rows;        /* dimension 0 of the inputs (1 if rank 0) */
  uint64_t deadline_ns; /* CLOCK_MONOTONIC; 0 = none */
  atomic_int cancelled; /* set from any thread when the client is gone */
  /* Results, valid in done(): */
  int status; /* 0, or an OX_E* code (message in err) */
  char err[256];
  ox_tensor_out_t *outs; /* n_out outputs (views for merged batches); caller-provided */
  ox_batch_t *batch;     /* holds shared output memory: ox_batch_release when done */
  uint64_t t_enqueue, t_start, t_infer, t_output, t_end; /* ns timestamps for statistics */
  uint32_t batch_rows; /* rows of the run this request was part of */
  int first_in_batch;  /* this request records the run's own statistics */
  /* Called on a worker thread, once, when the request ran or failed. */
  void (*done)(struct ox_sched_req *req);
} ox_sched_req_t;

typedef struct ox_batcher ox_batcher_t;

/* Creates the scheduler of one model version. pool runs timer-triggered batches. Returns 0 or
 * OX_ENOMEM. */
int ox_batcher_create(ox_model_t *m, const ox_sched_config_t *cfg, ox_pool_t *pool,
                      ox_batcher_t **out);
/* Completes every queued request with OX_EUNAVAILABLE and frees (after the pool has stopped). */
void ox_batcher_destroy(ox_batcher_t *b);
/* 1 when a new request should be refused at once (queue at max_queue_size). Lock-free. */
int ox_batcher_full(const ox_batcher_t *b);
/* Requests admitted (queued or being prepared) and not yet run: reserve before preparing,
 * so the queue bound holds before any parsing. ox_batcher_enqueue consumes the reservation;
 * ox_batcher_unreserve gives it back for a request that failed to prepare. */
int ox_batcher_reserve(ox_batcher_t *b);
void ox_batcher_unreserve(ox_batcher_t *b);
/* Queues a prepared request (worker thread); may run batches on this thread before returning.
 * req->done is called exactly once, possibly before this returns. */
void ox_batcher_enqueue(ox_batcher_t *b, ox_sched_req_t *req);
/* Releases a request's share of its batch's output memory (any thread). NULL is fine. */
void ox_batch_release(ox_batch_t *batch);
/* Asks every run in progress to stop and fails everything queued, now and later, with
 * OX_EUNAVAILABLE (shutdown after the drain deadline). */
void ox_batcher_terminate_runs(ox_batcher_t *b);
/* Requests waiting in the queue (approximate, lock-free). */
size_t ox_batcher_pending(const ox_batcher_t *b);
/* 1 when no batch runs, none is queued and no worker is asked to form one: with no request
 * left that can reach b (the model manager's last reference gone), b may be destroyed. */
int ox_batcher_idle(ox_batcher_t *b);
const ox_sched_config_t *ox_batcher_config(const ox_batcher_t *b);

/* The timer thread shared by all batchers (wakes batches whose delay has passed and fails
 * requests whose deadline has). Start once before serving; stop before destroying batchers. */
int ox_batch_timer_start(void);
void ox_batch_timer_stop(void);

#endif
