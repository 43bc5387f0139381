/* batcher.c: see batcher.h for the design.
 *
 * Locking: one mutex per batcher guards its queue and run count; it is held only to link,
 * unlink and pick requests, never across a model run, an allocation of tensor memory or a
 * completion callback. The timer thread has its own mutex for its list of batchers that have
 * something to wake for.
 */
#include "sched/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/container.h"
#include "core/error.h"
#include "core/log.h"

struct ox_batch {
  atomic_int refs;
  ox_tensor_out_t *outs; /* the run's own outputs */
  size_t n;
};

struct ox_batcher {
  pthread_mutex_t lock;
  ox_model_t *m;
  ox_sched_config_t cfg;
  ox_pool_t *pool;
  ox_sched_req_t *head, *tail;
  atomic_size_t queued;
  atomic_size_t admitted; /* reserved + queued */
  uint32_t running;
  ox_run_ctl_t **ctls; /* instance_count slots: runs in progress */
  /* timer */
  struct ox_batcher *tnext;
  int in_timer;
  uint64_t wake_ns; /* when the timer should look again; 0 = nothing to wait for */
  ox_job_t kick;    /* pool job that forms and runs a batch */
  int kick_queued;
  atomic_int stopping; /* shutdown past the drain deadline: run nothing more */
};

/* ---------------------------------------------------------------------------------------- */
/* timer thread */

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_t thread;
  ox_batcher_t *list; /* batchers with a wake time */
  int running, stop;
} ox_timer = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void batcher_tick(ox_batcher_t *b);

/* Registers b with the timer for its wake_ns (called without b->lock). */
static void timer_arm(ox_batcher_t *b, uint64_t wake_ns) {
  pthread_mutex_lock(&ox_timer.lock);
  if (!b->in_timer) {
    b->in_timer = 1;
    b->tnext = ox_timer.list;
    ox_timer.list = b;
  }
  if (!b->wake_ns || wake_ns < b->wake_ns) b->wake_ns = wake_ns;
  pthread_cond_signal(&ox_timer.cond);
  pthread_mutex_unlock(&ox_timer.lock);
}

static void *timer_main(void *arg) {
  pthread_mutex_lock(&ox_timer.lock);
  while (!ox_timer.stop) {
    uint64_t now = ox_mono_ns(), next = 0;
    ox_batcher_t *due = NULL, **pp = &ox_timer.list;
    while (*pp) {
      ox_batcher_t *b = *pp;
      if (b->wake_ns && b->wake_ns <= now) {
        *pp = b->tnext; /* unlink; collect */
        b->in_timer = 0;
        b->wake_ns = 0;
        b->tnext = due;
        due = b;
        continue;
      }
      if (b->wake_ns && (!next || b->wake_ns < next)) next = b->wake_ns;
      pp = &b->tnext;
    }
    if (due) {
      pthread_mutex_unlock(&ox_timer.lock);
      while (due) {
        ox_batcher_t *n = due->tnext;
        batcher_tick(due);
        due = n;
      }
      pthread_mutex_lock(&ox_timer.lock);
      continue;
    }
    if (!next) {
      pthread_cond_wait(&ox_timer.cond, &ox_timer.lock);
    } else {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      uint64_t wait = next - now;
      uint64_t ns = (uint64_t)ts.tv_nsec + wait % 1000000000u;
      ts.tv_sec += (time_t)(wait / 1000000000u + ns / 1000000000u);
      ts.tv_nsec = (long)(ns % 1000000000u);
      pthread_cond_timedwait(&ox_timer.cond, &ox_timer.lock, &ts);
    }
  }
  pthread_mutex_unlock(&ox_timer.lock);
  return NULL;
}

int ox_batch_timer_start(void) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_destroy(&ox_timer.cond);
  pthread_cond_init(&ox_timer.cond, &ca);
  pthread_condattr_destroy(&ca);
  ox_timer.stop = 0;
  int rc = pthread_create(&ox_timer.thread, NULL, timer_main, NULL);
  if (rc) return -rc;
  ox_timer.running = 1;
  return 0;
}

void ox_batch_timer_stop(void) {
  if (!ox_timer.running) return;
  pthread_mutex_lock(&ox_timer.lock);
  ox_timer.stop = 1;
  pthread_cond_signal(&ox_timer.cond);
  pthread_mutex_unlock(&ox_timer.lock);
  pthread_join(ox_timer.thread, NULL);
  ox_timer.running = 0;
  ox_timer.list = NULL;
}

static void timer_forget(ox_batcher_t *b) {
  pthread_mutex_lock(&ox_timer.lock);
  for (ox_batcher_t **pp = &ox_timer.list; *pp; pp = &(*pp)->tnext) {
    if (*pp == b) {
      *pp = b->tnext;
      break;
    }
  }
  b->in_timer = 0;
  pthread_mutex_unlock(&ox_timer.lock);
}

/* ---------------------------------------------------------------------------------------- */
/* batch formation */

static int same_shape_but_rows(const ox_sched_req_t *a, const ox_sched_req_t *b) {
  if (a->n_out != b->n_out || memcmp(a->out_idx, b->out_idx, a->n_out * sizeof(size_t)) != 0)
    return 0;
  for (size_t i = 0; i < a->model->num_inputs; i++) {
    const ox_tensor_in_t *x = &a->inputs[i], *y = &b->inputs[i];
    if (x->rank != y->rank || x->rank < 1) return 0;
    for (int d = 1; d < x->rank; d++)
      if (x->shape[d] != y->shape[d]) return 0;
  }
  return 1;
}

static int is_preferred(const ox_batcher_t *b, uint64_t rows) {
  for (size_t i = 0; i < b->cfg.num_preferred; i++)
    if (b->cfg.preferred_batch_size[i] == rows) return 1;
  return 0;
}

static void fail_req(ox_sched_req_t *r, int status, const char *msg) {
  r->status = status;
  snprintf(r->err, sizeof r->err, "%s", msg);
  r->t_start = r->t_infer = r->t_output = ox_mono_ns();
  r->done(r);
}

/* Under b->lock: unlinks requests that expired or were cancelled into *failed; then, if an
 * instance is free and the head's batch is ready, unlinks the batch into *batch (count in *n)
 * and counts the run. With batch NULL it only tells, in *n, how many requests a ready batch
 * would take (the timer thread asks; a worker then forms it). Returns the time to look again
 * (0: nothing to wait for). */
static uint64_t form_locked(ox_batcher_t *b, uint64_t now, ox_sched_req_t **failed,
                            ox_sched_req_t **batch, size_t *n) {
  uint64_t wake = 0;
  if (batch) *batch = NULL;
  *n = 0;
  int stopping = atomic_load(&b->stopping);
  for (ox_sched_req_t **pp = &b->head, *prev = NULL; *pp;) {
    ox_sched_req_t *r = *pp;
    if (stopping || atomic_load(&r->cancelled) || (r->deadline_ns && now >= r->deadline_ns)) {
      *pp = r->next;
      if (b->tail == r) b->tail = prev;
      atomic_fetch_sub(&b->queued, 1);
      atomic_fetch_sub(&b->admitted, 1);
      r->next = *failed;
      *failed = r;
      continue;
    }
    if (r->deadline_ns && (!wake || r->deadline_ns < wake)) wake = r->deadline_ns;
    prev = r;
    pp = &r->next;
  }
  if (!b->head || b->running >= b->cfg.instance_count) return wake;
  uint64_t max = b->cfg.max_batch_size > 1 ? b->cfg.max_batch_size : 1;
  ox_sched_req_t *h = b->head;
  uint64_t rows = h->rows;
  size_t count = 1;
  int more = 0; /* requests left behind that could still join */
  if (max > 1 && rows < max) {
    for (ox_sched_req_t *r = h->next; r; r = r->next) {
      if (rows >= max) break;
      if (same_shape_but_rows(h, r)) {
        if (rows + r->rows <= max) {
          rows += r->rows;
          count++;
        } else {
          more = 1;
        }
      }
    }
  }
  int ready = max <= 1 || rows >= max || more || is_preferred(b, rows) ||
              b->cfg.max_queue_delay_us == 0 ||
              now - h->t_enqueue >= b->cfg.max_queue_delay_us * 1000u;
  if (!ready) {
    uint64_t at = h->t_enqueue + b->cfg.max_queue_delay_us * 1000u;
    return !wake || at < wake ? at : wake;
  }
  if (!batch) {
    *n = count;
    return wake;
  }
  /* Unlink the chosen requests, keeping the others in order. */
  ox_sched_req_t *first = NULL, **tailp = &first;
  uint64_t taken_rows = 0;
  ox_sched_req_t *prev = NULL;
  for (ox_sched_req_t **pp = &b->head; *pp && *n < count;) {
    ox_sched_req_t *r = *pp;
    int take = r == h || (same_shape_but_rows(h, r) && taken_rows + r->rows <= rows);
    if (take) {
      *pp = r->next;
      if (b->tail == r) b->tail = prev;
      r->next = NULL;
      *tailp = r;
      tailp = &r->next;
      taken_rows += r->rows;
      (*n)++;
      continue;
    }
    prev = r;
    pp = &r->next;
  }
  atomic_fetch_sub(&b->queued, *n);
  atomic_fetch_sub(&b->admitted, *n);
  b->running++;
  *batch = first;
  return wake;
}

/* Runs one batch (no lock held) and completes its requests. */
static void run_batch(ox_batcher_t *b, ox_sched_req_t *first, size_t n) {
  ox_model_t *m = b->m;
  uint64_t t_start = ox_mono_ns();
  size_t nin = m->num_inputs, n_out = first->n_out;
  ox_sched_req_t *stack_reqs[16];
  ox_sched_req_t **reqs = n <= 16 ? stack_reqs : malloc(n * sizeof *reqs);
  ox_tensor_in_t *ins = NULL;
  int64_t(*shapes)[OX_RT_MAX_RANK] = NULL;
  void **bufs = NULL;
  ox_batch_t *batch = NULL;
  char err[256] = "";
  int status = 0;
  uint64_t total_rows = 0;
  if (!reqs) {
    status = OX_ENOMEM;
    snprintf(err, sizeof err, "out of memory");
    goto fail_nolist;
  }
  {
    size_t i = 0;
    for (ox_sched_req_t *r = first; r; r = r->next) reqs[i++] = r;
  }
  for (size_t k = 0; k < n; k++) {
    reqs[k]->t_start = t_start;
    total_rows += reqs[k]->rows;
  }
  if (n == 1) {
    ins = (ox_tensor_in_t *)first->inputs;
  } else {
    /* Merge: one contiguous tensor per input, each request's rows copied in once. */
    ins = calloc(nin, sizeof *ins);
    shapes = calloc(nin, sizeof *shapes);
    bufs = calloc(nin, sizeof *bufs);
    if (!ins || !shapes || !bufs) goto oom;
    for (size_t i = 0; i < nin; i++) {
      const ox_tensor_in_t *x0 = &first->inputs[i];
      ox_tensor_in_t *t = &ins[i];
      *t = *x0;
      memcpy(shapes[i], x0->shape, sizeof(int64_t) * (size_t)x0->rank);
      shapes[i][0] = (int64_t)total_rows;
      t->shape = shapes[i];
      uint64_t count = 0;
      size_t nbytes = 0;
      for (size_t k = 0; k < n; k++) {
        count += reqs[k]->inputs[i].count;
        nbytes += reqs[k]->inputs[i].nbytes;
      }
      t->count = count;
      if (x0->dtype == OX_DT_BYTES) {
        ox_slice_t *sl = malloc((count ? count : 1) * sizeof *sl);
        if (!sl) goto oom;
        bufs[i] = sl;
        for (size_t k = 0, at = 0; k < n; k++) {
          const ox_tensor_in_t *x = &reqs[k]->inputs[i];
          memcpy(sl + at, x->strings, (size_t)x->count * sizeof *sl);
          at += (size_t)x->count;
        }
        t->strings = sl;
      } else {
        char *buf = NULL;
        if (posix_memalign((void **)&buf, 64, nbytes ? nbytes : 64)) goto oom;
        bufs[i] = buf;
        for (size_t k = 0, at = 0; k < n; k++) {
          const ox_tensor_in_t *x = &reqs[k]->inputs[i];
          memcpy(buf + at, x->data, x->nbytes);
          at += x->nbytes;
        }
        t->data = buf;
        t->nbytes = nbytes;
      }
    }
  }
  batch = calloc(1, sizeof *batch);
  if (batch) batch->outs = calloc(n_out ? n_out : 1, sizeof *batch->outs);
  if (!batch || !batch->outs) goto oom;
  batch->n = n_out;
  /* A slot for terminate. */
  ox_run_ctl_t *ctl = ox_run_ctl_create();
  size_t slot = 0;
  pthread_mutex_lock(&b->lock);
  while (slot < b->cfg.instance_count && b->ctls[slot]) slot++;
  if (slot < b->cfg.instance_count) b->ctls[slot] = ctl;
  pthread_mutex_unlock(&b->lock);
  uint64_t t_infer = ox_mono_ns();
  int rc = ox_model_run(m, ins, first->out_idx, n_out, batch->outs, ctl, err, sizeof err);
  uint64_t t_output = ox_mono_ns();
  pthread_mutex_lock(&b->lock);
  if (slot < b->cfg.instance_count) b->ctls[slot] = NULL;
  pthread_mutex_unlock(&b->lock);
  ox_run_ctl_destroy(ctl);
  if (bufs) {
    for (size_t i = 0; i < nin; i++) free(bufs[i]);
  }
  free(bufs);
  bufs = NULL;
  if (rc) {
    status = rc == OX_EINVALID ? OX_EINVALID : OX_ERUNTIME;
    if (atomic_load(&b->stopping)) {
      status = OX_EUNAVAILABLE;
      snprintf(err, sizeof err, "server is shutting down");
    }
    free(batch->outs);
    free(batch);
    batch = NULL;
    goto fail;
  }
  /* Split the outputs by rows into views. */
  for (size_t j = 0; j < n_out && n > 1; j++) {
    const ox_tensor_out_t *o = &batch->outs[j];
    if (o->rank < 1 || (uint64_t)o->shape[0] != total_rows) {
      status = OX_EINTERNAL;
      snprintf(err, sizeof err, "output '%s' cannot be split by rows",
               m->outputs[first->out_idx[j]].name);
      for (size_t k = 0; k < n_out; k++) ox_tensor_out_release(&batch->outs[k]);
      free(batch->outs);
      free(batch);
      batch = NULL;
      goto fail;
    }
  }
  atomic_store(&batch->refs, (int)n);
  uint64_t row_at = 0;
  for (size_t k = 0; k < n; k++) {
    ox_sched_req_t *r = reqs[k];
    for (size_t j = 0; j < n_out; j++) {
      const ox_tensor_out_t *o = &batch->outs[j];
      ox_tensor_out_t *v = &r->outs[j];
      *v = *o;
      v->value_ = NULL;
      v->strblock_ = NULL;
      if (n > 1) {
        uint64_t per_row = total_rows ? o->count / total_rows : 0;
        size_t esz = ox_dtype_size(o->dtype);
        v->shape[0] = (int64_t)r->rows;
        v->count = per_row * r->rows;
        if (o->dtype == OX_DT_BYTES) {
          v->strings = o->strings + row_at * per_row;
          v->nbytes = 0;
        } else {
          v->data = (const char *)o->data + row_at * per_row * esz;
          v->nbytes = (size_t)(v->count * esz);
        }
      }
    }
    row_at += r->rows;
    r->batch = batch;
    r->status = 0;
    r->batch_rows = (uint32_t)total_rows;
    r->first_in_batch = k == 0;
    r->t_infer = t_infer;
    r->t_output = t_output;
  }
  if (ins != first->inputs) free(ins);
  free(shapes);
  for (size_t k = 0; k < n; k++) reqs[k]->done(reqs[k]);
  if (reqs != stack_reqs) free(reqs);
  return;
oom:
  status = OX_ENOMEM;
  snprintf(err, sizeof err, "out of memory");
fail:
  if (bufs) {
    for (size_t i = 0; i < nin; i++) free(bufs[i]);
    free(bufs);
  }
  if (ins && ins != first->inputs) free(ins);
  free(shapes);
  if (batch) {
    free(batch->outs);
    free(batch);
  }
  for (size_t k = 0; k < n; k++) {
    reqs[k]->batch_rows = (uint32_t)total_rows;
    reqs[k]->first_in_batch = 0;
    fail_req(reqs[k], status, err[0] ? err : "inference failed");
  }
  if (reqs != stack_reqs) free(reqs);
  return;
fail_nolist:
  for (ox_sched_req_t *r = first, *nx; r; r = nx) {
    nx = r->next;
    fail_req(r, status, err);
  }
}

static void fail_list(ox_batcher_t *b, ox_sched_req_t *failed, uint64_t now) {
  while (failed) {
    ox_sched_req_t *n = failed->next;
    if (atomic_load(&failed->cancelled))
      fail_req(failed, OX_ECANCELLED, "client closed the connection");
    else if (atomic_load(&b->stopping))
      fail_req(failed, OX_EUNAVAILABLE, "server is shutting down");
    else
      fail_req(failed, OX_EDEADLINE, "request timeout expired before the model ran");
    failed = n;
  }
  (void)now;
}

/* Forms and runs batches on this thread while there are ready ones and free instances. */
static void drain(ox_batcher_t *b, int finished_run) {
  for (;;) {
    ox_sched_req_t *failed = NULL, *batch = NULL;
    size_t n = 0;
    uint64_t now = ox_mono_ns();
    pthread_mutex_lock(&b->lock);
    if (finished_run) {
      b->running--;
      finished_run = 0;
    }
    uint64_t wake = form_locked(b, now, &failed, &batch, &n);
    pthread_mutex_unlock(&b->lock);
    fail_list(b, failed, now);
    if (wake) timer_arm(b, wake);
    if (!batch) return;
    run_batch(b, batch, n);
    finished_run = 1;
  }
}

static void kick_run(ox_job_t *j) {
  ox_batcher_t *b = ox_container_of(j, ox_batcher_t, kick);
  pthread_mutex_lock(&b->lock);
  b->kick_queued = 0;
  pthread_mutex_unlock(&b->lock);
  drain(b, 0);
}

static void kick_cancel(ox_job_t *j) {
  ox_batcher_t *b = ox_container_of(j, ox_batcher_t, kick);
  pthread_mutex_lock(&b->lock);
  b->kick_queued = 0;
  pthread_mutex_unlock(&b->lock);
}

/* Timer thread: fail what expired; if a batch is ready, have a worker run it. */
static void batcher_tick(ox_batcher_t *b) {
  ox_sched_req_t *failed = NULL;
  size_t n = 0;
  uint64_t now = ox_mono_ns();
  pthread_mutex_lock(&b->lock);
  uint64_t wake = form_locked(b, now, &failed, NULL, &n);
  int submit = 0;
  if (n && !b->kick_queued) { /* a batch is ready: a worker forms and runs it */
    b->kick_queued = 1;
    submit = 1;
  }
  pthread_mutex_unlock(&b->lock);
  fail_list(b, failed, now);
  if (submit && ox_pool_submit_front(b->pool, &b->kick) != 0) {
    pthread_mutex_lock(&b->lock);
    b->kick_queued = 0;
    pthread_mutex_unlock(&b->lock);
  }
  if (wake) timer_arm(b, wake);
}

/* ---------------------------------------------------------------------------------------- */

int ox_batcher_create(ox_model_t *m, const ox_sched_config_t *cfg, ox_pool_t *pool,
                      ox_batcher_t **out) {
  ox_batcher_t *b = calloc(1, sizeof *b);
  if (!b) return OX_ENOMEM;
  b->cfg = *cfg;
  if (b->cfg.instance_count < 1) b->cfg.instance_count = 1;
  b->ctls = calloc(b->cfg.instance_count, sizeof *b->ctls);
  if (!b->ctls) {
    free(b);
    return OX_ENOMEM;
  }
  pthread_mutex_init(&b->lock, NULL);
  b->m = m;
  b->pool = pool;
  b->kick.run = kick_run;
  b->kick.cancel = kick_cancel;
  *out = b;
  return 0;
}

void ox_batcher_destroy(ox_batcher_t *b) {
  if (!b) return;
  timer_forget(b);
  ox_sched_req_t *r = b->head;
  b->head = b->tail = NULL;
  while (r) {
    ox_sched_req_t *n = r->next;
    fail_req(r, OX_EUNAVAILABLE, "server is shutting down");
    r = n;
  }
  pthread_mutex_destroy(&b->lock);
  free(b->ctls);
  free(b);
}

int ox_batcher_full(const ox_batcher_t *b) {
  return b->cfg.max_queue_size && atomic_load(&b->admitted) >= b->cfg.max_queue_size;
}

int ox_batcher_reserve(ox_batcher_t *b) {
  size_t cur = atomic_load(&b->admitted);
  do {
    if (b->cfg.max_queue_size && cur >= b->cfg.max_queue_size) return OX_EUNAVAILABLE;
  } while (!atomic_compare_exchange_weak(&b->admitted, &cur, cur + 1));
  return 0;
}

void ox_batcher_unreserve(ox_batcher_t *b) {
  atomic_fetch_sub(&b->admitted, 1);
}

void ox_batcher_enqueue(ox_batcher_t *b, ox_sched_req_t *req) {
  req->t_enqueue = ox_mono_ns();
  req->next = NULL;
  req->batch = NULL;
  req->first_in_batch = 0;
  pthread_mutex_lock(&b->lock);
  if (b->tail)
    b->tail->next = req;
  else
    b->head = req;
  b->tail = req;
  atomic_fetch_add(&b->queued, 1);
  pthread_mutex_unlock(&b->lock);
  drain(b, 0);
}

void ox_batch_release(ox_batch_t *batch) {
  if (!batch) return;
  if (atomic_fetch_sub(&batch->refs, 1) != 1) return;
  for (size_t j = 0; j < batch->n; j++) ox_tensor_out_release(&batch->outs[j]);
  free(batch->outs);
  free(batch);
}

void ox_batcher_terminate_runs(ox_batcher_t *b) {
  atomic_store(&b->stopping, 1);
  pthread_mutex_lock(&b->lock);
  for (uint32_t i = 0; i < b->cfg.instance_count; i++)
    if (b->ctls[i]) ox_run_ctl_terminate(b->ctls[i]);
  pthread_mutex_unlock(&b->lock);
}

size_t ox_batcher_pending(const ox_batcher_t *b) {
  return atomic_load(&b->queued);
}

const ox_sched_config_t *ox_batcher_config(const ox_batcher_t *b) {
  return &b->cfg;
}

int ox_batcher_idle(ox_batcher_t *b) {
  pthread_mutex_lock(&b->lock);
  int idle = b->running == 0 && !b->kick_queued && !b->head;
  pthread_mutex_unlock(&b->lock);
  return idle;
}
