/* loop.c: see loop.h. epoll in level-triggered mode; an eventfd carries wake-ups from other
 * threads, and a mutex-protected FIFO carries their tasks. The tick is driven by the
 * epoll_wait timeout, so an idle loop wakes only tick_ms apart. */
#include "core/clock.h"
#include "core/error.h"
#include "loop/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define OX_LOOP_MAX_EVENTS 256

struct ox_loop {
  int epfd;
  ox_io_t wake; /* eventfd watcher */
  pthread_mutex_t lock;
  ox_task_t *head, *tail; /* posted tasks, under lock */
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
  pthread_mutex_lock(&loop->lock);
  ox_task_t *t = loop->head;
  loop->head = loop->tail = NULL;
  pthread_mutex_unlock(&loop->lock);
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
  pthread_mutex_init(&loop->lock, NULL);
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
  pthread_mutex_destroy(&loop->lock);
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
  task->next = NULL;
  pthread_mutex_lock(&loop->lock);
  int was_empty = loop->head == NULL;
  if (loop->tail)
    loop->tail->next = task;
  else
    loop->head = task;
  loop->tail = task;
  pthread_mutex_unlock(&loop->lock);
  if (was_empty) {
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
    int n = epoll_wait(loop->epfd, evs, OX_LOOP_MAX_EVENTS, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    loop->now_ms = (uint64_t)ox_mono_ms();
    for (int i = 0; i < n; i++) {
      ox_io_t *io = evs[i].data.ptr;
      io->cb(loop, io, evs[i].events);
    }
    if (loop->after) loop->after(loop, loop->after_data);
    for (int i = 0; i < loop->nhooks; i++) loop->hooks[i].fn(loop, loop->hooks[i].data);
    if (loop->tick_ms > 0 && loop->now_ms >= loop->next_tick) {
      loop->next_tick = loop->now_ms + (uint64_t)loop->tick_ms;
      if (loop->tick) loop->tick(loop, loop->tick_data);
    }
  }
  return 0;
}
