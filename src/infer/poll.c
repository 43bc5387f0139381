/* poll.c: the repository poller of --model-control-mode poll (poll.h).
 *
 * One thread owns everything here: an inotify descriptor, the table of watched directories, the
 * set of files being written and the per-model signatures. It sleeps in poll(2) on inotify and
 * on a wake-up pipe (SIGHUP, stop) with the scan interval as timeout.
 *
 * When is a file complete? inotify watches the repository, every model directory and every
 * version directory (IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_MOVED_FROM,
 * IN_DELETE). A file with an IN_MODIFY since its last IN_CLOSE_WRITE is being written: its model
 * is not touched. A file that appears by rename (IN_MOVED_TO) is complete at once. A file created
 * (IN_CREATE), or found in a directory whose watch was only added after the directory appeared
 * (a writer can create and write it before the watch exists), is "unsure": it counts as being
 * written while some process has it open for writing (/proc/<pid>/fd and fdinfo), and stops
 * being unsure at its IN_CLOSE_WRITE or once no writer has it open.
 *
 * The scan. For each model directory (valid name): the meta signature sums a hash of (name,
 * size, mtime ns, inode) over config.json, config.pbtxt and every regular file of every version
 * directory (all digits). Equal to the one last applied: nothing to do. Otherwise, if no file of
 * the model is being written, the full signature adds a content hash of those files (SipHash per
 * 64 KiB chunk, chained) and the change is applied when the full signature equals the previous
 * scan's: a load (new model, new or removed version, changed file: ox_models_load, which
 * respects version_policy and keeps the old versions serving if it fails). A directory that
 * disappears is unloaded. The applied signature is recorded whatever the outcome, so a failed
 * load is retried only after the files change again. A model directory with no version holding
 * a model.onnx is left alone. The first scan, at start, only records the baseline: the models
 * loaded at start-up are the repository as it was.
 */
#include "infer/poll.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/siphash.h"
#include "core/text.h"

#define WATCH_MASK                                                                    \
  (IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | \
   IN_DELETE_SELF | IN_ONLYDIR)

typedef struct {
  char *name;         /* owned */
  uint64_t applied;   /* meta signature last applied (or the baseline) */
  uint64_t prev_full; /* full signature at the previous scan (0: none) */
  int seen;           /* present in the current scan */
  int waiting;        /* why the last scan deferred a change (WAIT_*), logged when it changes */
} pmodel_t;

enum { WAIT_NONE, WAIT_BUSY, WAIT_SETTLE };

/* Logs why a change of m is not applied yet, once per reason in a row. */
static void note_wait(pmodel_t *m, int why) {
  if (m->waiting == why) return;
  m->waiting = why;
  if (why == WAIT_BUSY)
    ox_info("repository poll: model '%s' changed; a file is still being written", m->name);
  else if (why == WAIT_SETTLE)
    ox_info("repository poll: model '%s' changed; applied when the next scan sees it unchanged",
            m->name);
}

typedef struct {
  int wd;
  char *path; /* owned */
} pwatch_t;

/* A set of paths (owned strings). */
typedef struct {
  char **v;
  size_t n, cap;
} pset_t;

struct ox_poll {
  ox_models_t *mgr;
  char *root;
  long secs;
  int ifd, wake[2];
  atomic_int stop;
  pthread_t th;
  pmodel_t *m;
  size_t nm, capm;
  pwatch_t *w;
  size_t nw, capw;
  pset_t busy;   /* modified since the last close-after-write */
  pset_t unsure; /* created or found unwatched: busy while open for writing somewhere */
};

static uint64_t now_ns(void) {
  return (uint64_t)ox_mono_ns();
}

static const ox_siphash_key_t hkey = {0x6f6e6e7864706f6cull, 0x7265706f7363616eull};

/* out = a/b; -1 (skip it) if that does not fit in cap bytes. */
static int join(char *out, size_t cap, const char *a, const char *b) {
  int n = snprintf(out, cap, "%s/%s", a, b);
  return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* ---- path sets ------------------------------------------------------------------------- */

static ssize_t set_find(const pset_t *s, const char *p) {
  for (size_t i = 0; i < s->n; i++)
    if (!strcmp(s->v[i], p)) return (ssize_t)i;
  return -1;
}

static void set_add(pset_t *s, const char *p) {
  if (set_find(s, p) >= 0) return;
  if (s->n == s->cap) {
    size_t nc = s->cap ? s->cap * 2 : 16;
    char **nv = realloc(s->v, nc * sizeof *nv);
    if (!nv) return; /* out of memory: the two-scan rule still applies */
    s->v = nv;
    s->cap = nc;
  }
  char *d = strdup(p);
  if (d) s->v[s->n++] = d;
}

static void set_del(pset_t *s, const char *p) {
  ssize_t i = set_find(s, p);
  if (i < 0) return;
  free(s->v[i]);
  s->v[i] = s->v[--s->n];
}

/* 1 if a path in s is under dir/ (dir has no trailing slash). */
static int set_any_under(const pset_t *s, const char *dir, size_t *at) {
  size_t dl = strlen(dir);
  for (size_t i = at ? *at : 0; i < s->n; i++)
    if (!strncmp(s->v[i], dir, dl) && s->v[i][dl] == '/') {
      if (at) *at = i;
      return 1;
    }
  return 0;
}

static void set_free(pset_t *s) {
  for (size_t i = 0; i < s->n; i++) free(s->v[i]);
  free(s->v);
  s->v = NULL;
  s->n = s->cap = 0;
}

/* ---- writers ----------------------------------------------------------------------------- */

/* 1 if some process (that we may inspect) has the file dev/ino open for writing. */
static int open_for_write(dev_t dev, ino_t ino) {
  DIR *pd = opendir("/proc");
  if (!pd) return 0;
  int found = 0;
  struct dirent *pe;
  while (!found && (pe = readdir(pd))) {
    if (pe->d_name[0] < '0' || pe->d_name[0] > '9') continue;
    char fdp[64];
    snprintf(fdp, sizeof fdp, "/proc/%.20s/fd", pe->d_name);
    DIR *fd = opendir(fdp);
    if (!fd) continue;
    struct dirent *fe;
    while (!found && (fe = readdir(fd))) {
      if (fe->d_name[0] < '0' || fe->d_name[0] > '9') continue;
      char lp[128];
      struct stat st;
      snprintf(lp, sizeof lp, "%s/%.20s", fdp, fe->d_name);
      if (stat(lp, &st) || st.st_dev != dev || st.st_ino != ino) continue;
      char ip[128], line[128];
      snprintf(ip, sizeof ip, "/proc/%.20s/fdinfo/%.20s", pe->d_name, fe->d_name);
      FILE *f = fopen(ip, "r");
      while (f && fgets(line, sizeof line, f)) {
        unsigned long flags;
        if (sscanf(line, "flags: %lo", &flags) == 1) {
          found = (flags & O_ACCMODE) != O_RDONLY;
          break;
        }
      }
      if (f) fclose(f);
    }
    closedir(fd);
  }
  closedir(pd);
  return found;
}

/* ---- watches ----------------------------------------------------------------------------- */

static const char *watch_path(ox_poll_t *p, int wd) {
  for (size_t i = 0; i < p->nw; i++)
    if (p->w[i].wd == wd) return p->w[i].path;
  return NULL;
}

/* Watches dir. fresh: the directory appeared since the last look, so files already in it may
 * have been created unseen (they become unsure, recursively one level for version dirs). */
static void add_watch(ox_poll_t *p, const char *dir, int fresh, int depth) {
  int wd = inotify_add_watch(p->ifd, dir, WATCH_MASK);
  if (wd < 0) return;
  const char *known = watch_path(p, wd);
  if (known && !strcmp(known, dir) && !fresh) return;
  if (!known) {
    if (p->nw == p->capw) {
      size_t nc = p->capw ? p->capw * 2 : 32;
      pwatch_t *nw = realloc(p->w, nc * sizeof *nw);
      if (!nw) return;
      p->w = nw;
      p->capw = nc;
    }
    char *d = strdup(dir);
    if (!d) return;
    p->w[p->nw++] = (pwatch_t){wd, d};
  } else if (strcmp(known, dir)) { /* same inode under a new name (renamed directory) */
    char *d = strdup(dir);
    if (!d) return;
    for (size_t i = 0; i < p->nw; i++)
      if (p->w[i].wd == wd) {
        free(p->w[i].path);
        p->w[i].path = d;
      }
  }
  if (!fresh) return;
  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char path[4096];
    struct stat st;
    if (join(path, sizeof path, dir, de->d_name) || lstat(path, &st)) continue;
    if (S_ISREG(st.st_mode))
      set_add(&p->unsure, path);
    else if (S_ISDIR(st.st_mode) && depth < 2)
      add_watch(p, path, 1, depth + 1);
  }
  if (d) closedir(d);
}

static void drop_watch(ox_poll_t *p, int wd) {
  for (size_t i = 0; i < p->nw; i++)
    if (p->w[i].wd == wd) {
      free(p->w[i].path);
      p->w[i] = p->w[--p->nw];
      return;
    }
}

/* Reads every pending inotify event and updates the busy and unsure sets. */
static void read_events(ox_poll_t *p) {
  _Alignas(struct inotify_event) char buf[8192];
  for (;;) {
    ssize_t n = read(p->ifd, buf, sizeof buf);
    if (n <= 0) return;
    for (char *q = buf; q < buf + n;) {
      const struct inotify_event *ev = (const struct inotify_event *)q;
      q += sizeof *ev + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {
        ox_warn("repository poll: inotify queue overflow; changes wait for two equal scans");
        continue;
      }
      if (ev->mask & IN_IGNORED) {
        drop_watch(p, ev->wd);
        continue;
      }
      const char *dir = watch_path(p, ev->wd);
      if (!dir || !ev->len) continue;
      char path[4096];
      if (join(path, sizeof path, dir, ev->name)) continue;
      int depth = 0; /* 0: repository, 1: model dir, 2: version dir */
      if (strcmp(dir, p->root)) depth = strchr(dir + strlen(p->root) + 1, '/') ? 2 : 1;
      if (ev->mask & IN_ISDIR) {
        if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && depth < 2)
          add_watch(p, path, (ev->mask & IN_CREATE) != 0, depth + 1);
        continue;
      }
      if (ev->mask & IN_MODIFY) set_add(&p->busy, path);
      if (ev->mask & IN_CREATE) set_add(&p->unsure, path);
      if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE)) {
        set_del(&p->busy, path);
        set_del(&p->unsure, path);
      }
    }
  }
}

/* 1 if a file of model directory dir is being written. Resolves unsure files on the way. */
static int model_busy(ox_poll_t *p, const char *dir) {
  if (set_any_under(&p->busy, dir, NULL)) return 1;
  size_t at = 0;
  while (set_any_under(&p->unsure, dir, &at)) {
    struct stat st;
    char *path = p->unsure.v[at];
    if (stat(path, &st) == 0 && open_for_write(st.st_dev, st.st_ino)) return 1;
    set_del(&p->unsure, path); /* closed (or gone): complete */
  }
  return 0;
}

/* ---- signatures -------------------------------------------------------------------------- */

static uint64_t content_hash(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 1;
  static _Thread_local char chunk[65536];
  uint64_t h = 0;
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    h = ox_siphash_u64(h ^ ox_siphash(chunk, (size_t)n, &hkey), &hkey);
  }
  close(fd);
  return h;
}

/* Adds file rel (relative to the model dir) to the signatures; full: with its content. */
static void sig_file(const char *dir, const char *rel, int full, uint64_t *meta, uint64_t *all) {
  char path[4096];
  struct stat st;
  if (join(path, sizeof path, dir, rel) || stat(path, &st) || !S_ISREG(st.st_mode)) return;
  struct {
    uint64_t name, size, mtime, ino;
  } k = {ox_siphash(rel, strlen(rel), &hkey), (uint64_t)st.st_size,
         (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec,
         (uint64_t)st.st_ino};
  uint64_t h = ox_siphash(&k, sizeof k, &hkey);
  *meta += h; /* order-free: readdir's order is arbitrary */
  if (full) *all += ox_siphash_u64(h ^ content_hash(path), &hkey);
}

static int all_digits(const char *s) {
  size_t n = strlen(s);
  if (!n || n > 18) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') return 0;
  return 1;
}

/* Signatures of model directory dir: *meta always, *all (meta + contents) if full. Returns the
 * number of versions with a model.onnx. */
static size_t model_sig(const char *dir, int full, uint64_t *meta, uint64_t *all) {
  *meta = 0x9E3779B97F4A7C15ull;
  *all = 0;
  size_t nver = 0;
  sig_file(dir, "config.json", full, meta, all);
  sig_file(dir, "config.pbtxt", full, meta, all);
  DIR *d = opendir(dir);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    if (!all_digits(de->d_name)) continue;
    char vdir[4096], rel[600];
    if (join(vdir, sizeof vdir, dir, de->d_name)) continue;
    DIR *vd = opendir(vdir);
    struct dirent *fe;
    int has_model = 0;
    while (vd && (fe = readdir(vd))) {
      if (fe->d_name[0] == '.') continue;
      if (join(rel, sizeof rel, de->d_name, fe->d_name)) continue;
      sig_file(dir, rel, full, meta, all);
      has_model |= !strcmp(fe->d_name, "model.onnx");
    }
    if (vd) closedir(vd);
    nver += has_model;
  }
  if (d) closedir(d);
  *all += *meta;
  if (!*all) *all = 1; /* 0 means "none" in prev_full */
  return nver;
}

/* ---- the scan ---------------------------------------------------------------------------- */

static void op_done(void *arg, int rc, const char *msg) {
  (void)arg;
  if (rc) ox_debug("repository poll: operation finished: %s", msg);
}

static pmodel_t *find_model(ox_poll_t *p, const char *name) {
  for (size_t i = 0; i < p->nm; i++)
    if (!strcmp(p->m[i].name, name)) return &p->m[i];
  return NULL;
}

static pmodel_t *add_model(ox_poll_t *p, const char *name) {
  if (p->nm == p->capm) {
    size_t nc = p->capm ? p->capm * 2 : 16;
    pmodel_t *nm = realloc(p->m, nc * sizeof *nm);
    if (!nm) return NULL;
    p->m = nm;
    p->capm = nc;
  }
  char *d = strdup(name);
  if (!d) return NULL;
  p->m[p->nm] = (pmodel_t){.name = d};
  return &p->m[p->nm++];
}

/* baseline: record what is there, apply nothing. Returns 1 if a change waits for its second
 * scan. */
static int scan(ox_poll_t *p, int baseline) {
  int pending = 0;
  for (size_t i = 0; i < p->nm; i++) p->m[i].seen = 0;
  add_watch(p, p->root, 0, 0);
  DIR *d = opendir(p->root);
  struct dirent *de;
  while (d && (de = readdir(d))) {
    size_t len = strlen(de->d_name);
    if (de->d_name[0] == '.' || !ox_name_valid(de->d_name, len)) continue;
    char dir[4096];
    struct stat st;
    if (join(dir, sizeof dir, p->root, de->d_name) || stat(dir, &st) || !S_ISDIR(st.st_mode))
      continue;
    add_watch(p, dir, 0, 1);
    DIR *vd = opendir(dir);
    struct dirent *ve;
    while (vd && (ve = readdir(vd))) {
      char sub[4096];
      if (!all_digits(ve->d_name) || join(sub, sizeof sub, dir, ve->d_name)) continue;
      add_watch(p, sub, 0, 2);
    }
    if (vd) closedir(vd);
    pmodel_t *m = find_model(p, de->d_name);
    int is_new = m == NULL;
    if (!m && !(m = add_model(p, de->d_name))) continue;
    m->seen = 1;
    uint64_t meta, full;
    size_t nver = model_sig(dir, 0, &meta, &full);
    if (baseline) {
      m->applied = meta;
      continue;
    }
    if (!is_new && meta == m->applied) {
      m->prev_full = 0;
      m->waiting = WAIT_NONE;
      continue;
    }
    if (!nver || model_busy(p, dir)) {
      m->prev_full = 0;
      pending |= nver > 0;
      if (nver) note_wait(m, WAIT_BUSY);
      continue;
    }
    uint64_t meta2;
    model_sig(dir, 1, &meta2, &full);
    if (meta2 != meta || full != m->prev_full) {
      m->prev_full = meta2 == meta ? full : 0;
      pending = 1;
      note_wait(m, WAIT_SETTLE);
      continue;
    }
    m->applied = meta;
    m->prev_full = 0;
    m->waiting = WAIT_NONE;
    ox_info("repository poll: model '%s' changed: loading", m->name);
    if (ox_models_load(p->mgr, m->name, NULL, 0, NULL, op_done, NULL))
      ox_warn("repository poll: could not queue the load of '%s'", m->name);
  }
  if (d) closedir(d);
  for (size_t i = 0; i < p->nm;) {
    if (p->m[i].seen) {
      i++;
      continue;
    }
    if (!baseline && p->m[i].applied) {
      ox_info("repository poll: model '%s' removed: unloading", p->m[i].name);
      if (ox_models_unload(p->mgr, p->m[i].name, op_done, NULL))
        ox_warn("repository poll: could not queue the unload of '%s'", p->m[i].name);
    }
    free(p->m[i].name);
    p->m[i] = p->m[--p->nm];
  }
  return pending;
}

static void *poll_main(void *arg) {
  ox_poll_t *p = arg;
  scan(p, 1);
  uint64_t next = p->secs ? now_ns() + (uint64_t)p->secs * 1000000000ull : 0;
  while (!atomic_load(&p->stop)) {
    int timeout = -1;
    if (next) {
      uint64_t now = now_ns();
      timeout = now >= next ? 0 : (int)((next - now) / 1000000 + 1);
    }
    struct pollfd fds[2] = {{.fd = p->ifd, .events = POLLIN}, {.fd = p->wake[0], .events = POLLIN}};
    int n = poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) break;
    if (atomic_load(&p->stop)) break;
    if (n > 0 && (fds[0].revents & POLLIN)) read_events(p);
    int rescan = 0;
    if (n > 0 && (fds[1].revents & POLLIN)) {
      char b[64];
      while (read(p->wake[0], b, sizeof b) > 0) {
      }
      rescan = 1;
    }
    if (next && now_ns() >= next) {
      rescan = 1;
      next = p->secs ? now_ns() + (uint64_t)p->secs * 1000000000ull : 0;
    }
    if (rescan) {
      read_events(p);
      /* A change seen: the second scan comes within a second (also with the timer off). */
      if (scan(p, 0)) {
        uint64_t soon = now_ns() + 1000000000ull;
        if (!next || next > soon) next = soon;
      } else if (!p->secs) {
        next = 0;
      }
    }
  }
  return NULL;
}

/* ---- life cycle -------------------------------------------------------------------------- */

int ox_poll_start(ox_models_t *mgr, const char *root, long secs, ox_poll_t **out) {
  *out = NULL;
  ox_poll_t *p = calloc(1, sizeof *p);
  if (!p) return OX_ENOMEM;
  p->mgr = mgr;
  p->secs = secs;
  p->wake[0] = p->wake[1] = -1;
  p->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  int rc = p->ifd < 0 ? -errno : 0;
  if (!rc && pipe2(p->wake, O_NONBLOCK | O_CLOEXEC)) rc = -errno;
  if (!rc && !(p->root = strdup(root))) rc = OX_ENOMEM;
  atomic_init(&p->stop, 0);
  if (!rc && pthread_create(&p->th, NULL, poll_main, p)) rc = OX_ENOMEM;
  if (rc) {
    if (p->ifd >= 0) close(p->ifd);
    if (p->wake[0] >= 0) close(p->wake[0]);
    if (p->wake[1] >= 0) close(p->wake[1]);
    free(p->root);
    free(p);
    return rc;
  }
  ox_info("repository poll: every %ld s%s and on SIGHUP", secs, secs ? "" : " (timer off)");
  *out = p;
  return 0;
}

void ox_poll_rescan(ox_poll_t *p) {
  if (!p) return;
  char c = 1;
  if (write(p->wake[1], &c, 1) < 0) { /* full pipe: a rescan is pending anyway */
  }
}

void ox_poll_stop(ox_poll_t *p) {
  if (!p) return;
  atomic_store(&p->stop, 1);
  ox_poll_rescan(p);
  pthread_join(p->th, NULL);
  close(p->ifd);
  close(p->wake[0]);
  close(p->wake[1]);
  for (size_t i = 0; i < p->nm; i++) free(p->m[i].name);
  free(p->m);
  for (size_t i = 0; i < p->nw; i++) free(p->w[i].path);
  free(p->w);
  set_free(&p->busy);
  set_free(&p->unsure);
  free(p->root);
  free(p);
}
