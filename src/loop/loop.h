/* loop.h: a small epoll event loop: fd watchers, a periodic tick, and a thread-safe wake-up.
 *
 * One loop per I/O thread. Everything registered with a loop is touched only from that loop's
 * thread, except ox_loop_post, which any thread may call to hand a callback to the loop (the
 * way worker threads return completions: they never touch sockets themselves).
 */
#ifndef OX_LOOP_H
#define OX_LOOP_H

#include <stdint.h>

typedef struct ox_loop ox_loop_t;
typedef struct ox_io ox_io_t;

/* Called on the loop thread with the epoll events that fired (EPOLLIN, EPOLLOUT, ...). */
typedef void (*ox_io_cb)(ox_loop_t *loop, ox_io_t *io, uint32_t events);

struct ox_io {
  int fd;
  uint32_t events; /* currently registered interest */
  ox_io_cb cb;
  void *data;
};

/* A callback posted from another thread; the loop runs it once, on its own thread. */
typedef struct ox_task {
  struct ox_task *next; /* owned by the loop while queued */
  void (*fn)(ox_loop_t *loop, struct ox_task *task);
} ox_task_t;

/* Creates a loop. Returns 0 or -errno. */
int ox_loop_create(ox_loop_t **out);
/* Runs every posted task still queued (at shutdown, after ox_loop_run returned). */
void ox_loop_run_pending(ox_loop_t *loop);
/* Frees the loop (after ox_loop_run_pending; tasks still queued are run first). */
void ox_loop_destroy(ox_loop_t *loop);
/* Calls tick every tick_ms milliseconds (timeout sweeps); tick_ms 0 turns it off. */
void ox_loop_set_tick(ox_loop_t *loop, int tick_ms, void (*tick)(ox_loop_t *, void *), void *data);

/* Sets a callback run after each batch of events (e.g. to free connections closed during the
 * batch, whose later events in the same batch must still find them). */
void ox_loop_set_after(ox_loop_t *loop, void (*after)(ox_loop_t *, void *), void *data);

/* More callbacks run after each batch of events, after the one of ox_loop_set_after (at most
 * OX_LOOP_MAX_HOOKS; e.g. a protocol that writes once per batch what its calls produced).
 * add: 0, or OX_ENOMEM when full; remove: the same fn and data. */
#define OX_LOOP_MAX_HOOKS 4
int ox_loop_add_after(ox_loop_t *loop, void (*fn)(ox_loop_t *, void *), void *data);
void ox_loop_remove_after(ox_loop_t *loop, void (*fn)(ox_loop_t *, void *), void *data);

/* Registers / changes / removes a watcher (io borrowed until removed). 0 or -errno. */
int ox_loop_add(ox_loop_t *loop, ox_io_t *io, uint32_t events);
int ox_loop_modify(ox_loop_t *loop, ox_io_t *io, uint32_t events);
int ox_loop_remove(ox_loop_t *loop, ox_io_t *io);

/* Runs until ox_loop_stop. Returns 0 or -errno on a fatal epoll error. */
int ox_loop_run(ox_loop_t *loop);
/* Thread-safe: makes ox_loop_run return after the current iteration. */
void ox_loop_stop(ox_loop_t *loop);
/* Thread-safe: queues task to run on the loop thread (FIFO) and wakes the loop. The task must
 * stay valid until its fn runs; tasks still queued at destroy are run then. */
void ox_loop_post(ox_loop_t *loop, ox_task_t *task);

/* Milliseconds of CLOCK_MONOTONIC, cached per loop iteration. */
uint64_t ox_loop_now_ms(const ox_loop_t *loop);

#endif
