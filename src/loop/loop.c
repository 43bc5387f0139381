/* loop.c: see loop.h. epoll in level-triggered mode; an eventfd carries wake-ups from other
 * threads, and a lock-free list carries their tasks. The tick is driven by the epoll_wait
 * timeout, so an idle loop wakes only tick_ms apart.
 *
 * Posting is the way every completion comes back from the workers, so it is kept cheap: a task
 * is pushed onto a list with one compare-and-swap (the loop takes the whole list with one
 * exchange and reverses it into posting order), and the eventfd is written only when the loop
 * may be asleep in epoll_wait. The loop announces that in `sleeping` before it checks the list
 * one last time and sleeps; a poster pushes and then reads `sleeping`. Both are sequentially
 * consistent, so either the loop sees the task or the poster sees the flag and wakes it. A busy
 * loop (the common case under load) thus gets its completions without a system call on either
 * side. */
#include "core/clock.h"
#include "core/error.h"
#include "loop/loop.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define OX_LOOP_MAX_EVENTS 256

struct ox_loop {
  int epfd;
  ox_io_t wake;                /* eventfd watcher */
  _Atomic(ox_task_t *) posted; /* pushed tasks, newest first */
  atomic_int sleeping;         /* 1 while the loop may be in (or about to enter) epoll_wait */
  atomic_int stop;
  uint64_t now_ms, next_tick;
  int tick_ms;
  void (*tick)(ox_loop_t *, void *);
  void *tick_data;
  void (*after)(ox_loop_t *, void *);
  void *after_data;
  struct {
    void (*fn)(ox_loop_t *, void *);
    void *data;
  } hooks[OX_LOOP_MAX_HOOKS];
  int nhooks;
};

void ox_loop_set_after(ox_loop_t *loop, void (*after)(ox_loop_t *, void *), void *data) {
  loop->after = after;
  loop->after_data = data;
}

int ox_loop_add_after(ox_loop_t *loop, void (*fn)(ox_loop_t *, void *), void *data) {
  if (loop->nhooks == OX_LOOP_MAX_HOOKS) return OX_ENOMEM;
  loop->hooks[loop->nhooks].fn = fn;
  loop->hooks[loop->nhooks].data = data;
  loop->nhooks++;
  return 0;
}

void ox_loop_remove_after(ox_loop_t *loop, void (*fn)(ox_loop_t *, void *), void *data) {
  for (int i = 0; i < loop->nhooks; i++)
    if (loop->hooks[i].fn == fn && loop->hooks[i].data == data) {
      loop->hooks[i] = loop->hooks[--loop->nhooks];
      return;
    }
}

uint64_t ox_loop_now_ms(const ox_loop_t *loop) {
  return loop->now_ms;
}

static void ox_loop_run_tasks(ox_loop_t *loop) {
  ox_task_t *newest = atomic_exchange(&loop->posted, NULL), *t = NULL;
  while (newest) { /* reverse into posting order */
    ox_task_t *next = newest->next;
    newest->next = t;
    t = newest;
    newest = next;
  }
  while (t) {
    ox_task_t *next = t->next;
    t->fn(loop, t);
    t = next;
  }
}

static void ox_loop_on_wake(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  uint64_t v;
  while (read(io->fd, &v, sizeof v) < 0 && errno == EINTR) {
  }
  ox_loop_run_tasks(loop);
}

void ox_loop_set_tick(ox_loop_t *loop, int tick_ms, void (*tick)(ox_loop_t *, void *), void *data) {
  loop->tick_ms = tick_ms;
  loop->tick = tick;
  loop->tick_data = data;
  loop->next_tick = (uint64_t)ox_mono_ms() + (uint64_t)tick_ms;
}

void ox_loop_run_pending(ox_loop_t *loop) {
  ox_loop_run_tasks(loop);
}

int ox_loop_create(ox_loop_t **out) {
  ox_loop_t *loop = calloc(1, sizeof *loop);
  if (!loop) return -ENOMEM;
  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (loop->epfd < 0 || efd < 0) {
    int e = -errno;
    if (loop->epfd >= 0) close(loop->epfd);
    if (efd >= 0) close(efd);
    free(loop);
    return e;
  }
  loop->wake = (ox_io_t){.fd = efd, .cb = ox_loop_on_wake};
  loop->now_ms = (uint64_t)ox_mono_ms();
  int rc = ox_loop_add(loop, &loop->wake, EPOLLIN);
  if (rc) {
    ox_loop_destroy(loop);
    return rc;
  }
  *out = loop;
  return 0;
}

void ox_loop_destroy(ox_loop_t *loop) {
  if (!loop) return;
  ox_loop_run_tasks(loop);
  close(loop->wake.fd);
  close(loop->epfd);
  free(loop);
}

int ox_loop_add(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = io};
  if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0) return -errno;
  io->events = events;
  return 0;
}

int ox_loop_modify(ox_loop_t *loop, ox_io_t *io, uint32_t events) {
  if (io->events == events) return 0;
  struct epoll_event ev = {.events = events, .data.ptr = io};
  if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0) return -errno;
  io->events = events;
  return 0;
}

int ox_loop_remove(ox_loop_t *loop, ox_io_t *io) {
  if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL) < 0) return -errno;
  return 0;
}

void ox_loop_stop(ox_loop_t *loop) {
  atomic_store(&loop->stop, 1);
  uint64_t one = 1;
  ssize_t w = write(loop->wake.fd, &one, sizeof one);
  (void)w;
}

void ox_loop_post(ox_loop_t *loop, ox_task_t *task) {
  ox_task_t *old = atomic_load_explicit(&loop->posted, memory_order_relaxed);
  do {
    task->next = old;
  } while (!atomic_compare_exchange_weak(&loop->posted, &old, task));
  /* Only the push onto an empty list can find the loop asleep with nothing to do; later pushes
   * are taken with it. */
  if (!old && atomic_load(&loop->sleeping)) {
    uint64_t one = 1;
    ssize_t w = write(loop->wake.fd, &one, sizeof one);
    (void)w;
  }
}

int ox_loop_run(ox_loop_t *loop) {
  struct epoll_event evs[OX_LOOP_MAX_EVENTS];
  while (!atomic_load(&loop->stop)) {
    int timeout = -1;
    if (loop->tick_ms > 0) {
      timeout = loop->next_tick > loop->now_ms ? (int)(loop->next_tick - loop->now_ms) : 0;
    }
    atomic_store(&loop->sleeping, 1);
    if (atomic_load(&loop->posted)) timeout = 0; /* posted while we were busy: do not sleep */
    int n = epoll_wait(loop->epfd, evs, OX_LOOP_MAX_EVENTS, timeout);
    atomic_store_explicit(&loop->sleeping, 0, memory_order_relaxed);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    loop->now_ms = (uint64_t)ox_mono_ms();
    for (int i = 0; i < n; i++) {
      ox_io_t *io = evs[i].data.ptr;
      io->cb(loop, io, evs[i].events);
    }
    /* Completions posted while the loop was busy (no eventfd write told of them). */
    if (atomic_load_explicit(&loop->posted, memory_order_relaxed)) ox_loop_run_tasks(loop);
    if (loop->after) loop->after(loop, loop->after_data);
    for (int i = 0; i < loop->nhooks; i++) loop->hooks[i].fn(loop, loop->hooks[i].data);
    if (loop->tick_ms > 0 && loop->now_ms >= loop->next_tick) {
      loop->next_tick = loop->now_ms + (uint64_t)loop->tick_ms;
      if (loop->tick) loop->tick(loop, loop->tick_data);
    }
  }
  return 0;
}
