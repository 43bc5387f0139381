/* models.c: the live model set and its manager (models.h): reference-counted versions, the
 * rwlock-protected lookup, the manager thread that loads, unloads and frees, and each
 * version's warm-up.
 *
 * Versions that lose their last reference are freed on the manager thread only once their
 * batcher is idle (ox_batcher_idle, polled every millisecond: a worker that answered the last
 * request may still be leaving the batcher's code). Statistics are per version object: a
 * reloaded version's counters start again from zero.
 */
#include "infer/models.h"

#include <dirent.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/text.h"
#include "infer/infer.h"

/* xorshift64*: deterministic warm-up data. */
static uint64_t rnd_next(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

/* Runs the warm-up requests of cfg (config.json's "model_warmup") on m, each `count` times,
 * inputs from zeros, deterministic random data or the files in model_dir/warmup/.
 * 0, or an error with a reason in err. */
static int run_warmup(const char *model_dir, ox_model_t *m, const ox_model_config_t *cfg, char *err,
                      size_t errcap) {
  for (size_t k = 0; k < cfg->num_warmup; k++) {
    const ox_warmup_t *w = &cfg->warmup[k];
    ox_tensor_in_t *ins = calloc(m->num_inputs + 1, sizeof *ins);
    int64_t(*shapes)[OX_RT_MAX_RANK] = calloc(m->num_inputs + 1, sizeof *shapes);
    void **bufs = calloc(m->num_inputs + 1, sizeof *bufs);
    size_t *out_idx = calloc(m->num_outputs + 1, sizeof *out_idx);
    ox_tensor_out_t *outs = calloc(m->num_outputs + 1, sizeof *outs);
    int rc = (!ins || !shapes || !bufs || !out_idx || !outs) ? OX_ENOMEM : 0;
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; !rc && i < m->num_inputs; i++) {
      const ox_tensor_info_t *info = &m->inputs[i];
      size_t j = 0;
      while (j < w->num_inputs && strcmp(w->inputs[j].name, info->name)) j++;
      if (j == w->num_inputs) {
        snprintf(err, errcap, "warm-up '%s': no data for input '%s'", w->name, info->name);
        rc = OX_EINVALID;
        break;
      }
      const typeof(w->inputs[0]) *wi = &w->inputs[j];
      int rank = 0;
      if (cfg->sched.max_batch_size > 0) shapes[i][rank++] = w->batch_size;
      for (int d = 0; d < wi->rank; d++) shapes[i][rank++] = wi->dims[d];
      uint64_t count = 1;
      for (int d = 0; d < rank; d++) count *= (uint64_t)shapes[i][d];
      size_t esz = ox_dtype_size(wi->dtype);
      ins[i] =
          (ox_tensor_in_t){.dtype = wi->dtype, .rank = rank, .shape = shapes[i], .count = count};
      if (wi->dtype == OX_DT_BYTES) {
        ox_slice_t *sl = calloc(count ? count : 1, sizeof *sl);
        if (!sl) {
          rc = OX_ENOMEM;
          break;
        }
        for (uint64_t e = 0; e < count; e++) sl[e] = ox_slice("", 0);
        bufs[i] = sl;
        ins[i].strings = sl;
        continue;
      }
      size_t nbytes = (size_t)count * esz;
      char *buf = NULL;
      if (posix_memalign((void **)&buf, 64, nbytes ? nbytes : 64)) {
        rc = OX_ENOMEM;
        break;
      }
      bufs[i] = buf;
      memset(buf, 0, nbytes);
      if (wi->kind == 1) {
        for (uint64_t e = 0; e < count; e++) {
          uint64_t r = rnd_next(&seed);
          if (wi->dtype == OX_DT_FP32)
            ((float *)buf)[e] = (float)(r >> 40) / (float)(1 << 24);
          else if (wi->dtype == OX_DT_FP64)
            ((double *)buf)[e] = (double)(r >> 11) / 9007199254740992.0;
          else if (wi->dtype == OX_DT_BOOL)
            buf[e] = (char)(r & 1);
          else if (wi->dtype == OX_DT_FP16 || wi->dtype == OX_DT_BF16)
            ((uint16_t *)buf)[e] = 0x3800; /* 0.5 / ~0.5 */
          else
            memcpy(buf + e * esz, &r, esz < 2 ? esz : 1); /* small non-negative integers */
        }
      } else if (wi->kind == 2) {
        char path[4096];
        int pn = snprintf(path, sizeof path, "%s/warmup/%s", model_dir, wi->file);
        FILE *f = pn > 0 && (size_t)pn < sizeof path ? fopen(path, "rb") : NULL;
        size_t got = f ? fread(buf, 1, nbytes, f) : 0;
        int extra = f ? fgetc(f) != EOF : 0;
        if (f) fclose(f);
        if (!f || got != nbytes || extra) {
          snprintf(err, errcap, "warm-up '%s': input_data_file '%s' missing or not %zu bytes",
                   w->name, wi->file, nbytes);
          rc = OX_EINVALID;
          break;
        }
      }
      ins[i].data = buf;
      ins[i].nbytes = nbytes;
    }
    for (size_t j = 0; j < m->num_outputs; j++) out_idx[j] = j;
    for (uint32_t n = 0; !rc && n < w->count; n++) {
      char rerr[256];
      rc = ox_model_run(m, ins, out_idx, m->num_outputs, outs, NULL, rerr, sizeof rerr);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-truncation" /* err is a one-line reason: cut is fine */
      if (rc) snprintf(err, errcap, "warm-up '%s' failed: %s", w->name, rerr);
#pragma GCC diagnostic pop
      for (size_t j = 0; !rc && j < m->num_outputs; j++) ox_tensor_out_release(&outs[j]);
    }
    if (bufs)
      for (size_t i = 0; i < m->num_inputs; i++) free(bufs[i]);
    free(ins);
    free(shapes);
    free(bufs);
    free(out_idx);
    free(outs);
    if (rc) return rc;
  }
  return 0;
}

#define OX_LOAD_BUCKETS 11
static const double load_bounds[OX_LOAD_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                    1,    2.5,   5,    10,  30};

typedef struct {
  int64_t version;
  ox_model_st_t state;
  char reason[192];
} vstate_t;

typedef struct {
  char *name;        /* owned */
  ox_model_t **live; /* owned array: served versions, ascending; one reference each */
  size_t nlive;
  vstate_t *vs; /* owned: what the index shows */
  size_t nvs;
  char reason[512];                /* why nothing is served (nlive == 0) */
  uint64_t loads_ok, loads_failed; /* onnxd_model_loads_total */
} entry_t;

typedef struct op {
  struct op *next;
  int unload;
  char *name;
  char *override;
  size_t override_len;
  char *dir; /* owned: where the versions are read (uploaded files); NULL: the repository */
  ox_models_cb cb;
  void *arg;
} op_t;

struct ox_models {
  ox_models_opts_t o;
  pthread_rwlock_t rw; /* entries */
  entry_t *e;
  size_t n, cap;
  pthread_mutex_t mu; /* ops, the version lists, stopping */
  pthread_cond_t cv;
  op_t *head, *tail;
  op_t *running; /* the op the manager thread is carrying out (NULL: none) */
  op_t *joined;  /* loads of running's model that arrived while it ran: they share its outcome */
  ox_model_state_t *all, *dead;
  /* onnxd_model_load_duration_seconds, under the write lock (only the manager thread records) */
  uint64_t load_bucket[OX_LOAD_BUCKETS + 1], load_count;
  double load_sum;
  int stopping, started;
  pthread_t thread;
};

static const char *state_name(ox_model_st_t s) {
  return s == OX_MS_READY       ? "READY"
         : s == OX_MS_LOADING   ? "LOADING"
         : s == OX_MS_UNLOADING ? "UNLOADING"
                                : "UNAVAILABLE";
}

/* ---- references ------------------------------------------------------------------------ */

void ox_models_ref(ox_model_t *m) {
  ox_model_state_t *st = m->app;
  atomic_fetch_add(&st->refs, 1);
}

void ox_models_put(ox_model_t *m) {
  if (!m) return;
  ox_model_state_t *st = m->app;
  if (atomic_fetch_sub(&st->refs, 1) != 1) return;
  ox_models_t *mgr = st->mgr;
  if (!mgr) return; /* a version outside any manager (unit tests): its owner frees it */
  pthread_mutex_lock(&mgr->mu);
  st->next_dead = mgr->dead;
  mgr->dead = st;
  pthread_cond_signal(&mgr->cv);
  pthread_mutex_unlock(&mgr->mu);
}

/* Manager thread (or destroy): frees one version whose last reference went. */
static void free_version(ox_models_t *mgr, ox_model_state_t *st) {
  if (st->batcher) {
    while (!ox_batcher_idle(st->batcher)) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    ox_batcher_destroy(st->batcher);
  }
  pthread_mutex_lock(&mgr->mu);
  for (ox_model_state_t **p = &mgr->all; *p; p = &(*p)->next_all)
    if (*p == st) {
      *p = st->next_all;
      break;
    }
  pthread_mutex_unlock(&mgr->mu);
  ox_model_config_free(&st->cfg);
  ox_model_t *m = st->model;
  ox_debug("model '%s' version %" PRId64 " freed", m->name, m->version);
  m->app = NULL;
  free(st);
  ox_repo_model_free(m);
}

/* The name a model's config file must carry: its directory's, except in single-model mode,
 * where the directory is not named after the model (NULL: not checked). */
static const char *name_to_check(const ox_models_t *mgr, const char *name) {
  return ox_repo_single(mgr->o.repo) ? NULL : name;
}

/* Gives m its state: config, warm-up, batcher; one reference (the caller's). 0, or an error
 * with err (the state is made and unavailable with the reason, except on OX_ENOMEM). */
static int make_version(ox_models_t *mgr, ox_model_t *m, const char *override, char *err,
                        size_t errcap) {
  ox_model_state_t *st = calloc(1, sizeof *st);
  if (!st) return OX_ENOMEM;
  atomic_init(&st->refs, 1);
  st->mgr = mgr;
  st->model = m;
  m->app = st;
  int rc;
  char dir[4096];
  if (ox_repo_model_dir(mgr->o.repo, m->name, dir, sizeof dir)) {
    snprintf(err, errcap, "'%.100s': no model directory (bad name or path too long)", m->name);
    rc = OX_EINVALID;
  } else {
    rc = ox_model_config_load_dir(dir, name_to_check(mgr, m->name), m, mgr->o.infer_threads,
                                  override, override ? strlen(override) : 0, &st->cfg, err, errcap);
  }
  if (!rc) rc = run_warmup(dir, m, &st->cfg, err, errcap);
  if (rc) {
    st->unavailable = 1;
    snprintf(st->reason, sizeof st->reason, "%s", err);
  }
  int brc = ox_batcher_create(m, &st->cfg.sched, mgr->o.pool, &st->batcher);
  pthread_mutex_lock(&mgr->mu);
  st->next_all = mgr->all;
  mgr->all = st;
  pthread_mutex_unlock(&mgr->mu);
  if (brc) return OX_ENOMEM;
  return rc;
}

/* The configuration of a version that has one (start-up log line). */
static void log_config(const ox_model_t *m) {
  const ox_model_state_t *st = m->app;
  if (st->cfg.from_file || st->cfg.num_warmup)
    ox_info("model '%s' version %lld: max_batch_size %u, delay %llu us, %u instances%s", m->name,
            (long long)m->version, st->cfg.sched.max_batch_size,
            (unsigned long long)st->cfg.sched.max_queue_delay_us, st->cfg.sched.instance_count,
            st->cfg.num_warmup ? ", warmed up" : "");
}

/* ---- the live set ---------------------------------------------------------------------- */

static entry_t *find_entry(ox_models_t *mgr, ox_slice_t name) {
  for (size_t i = 0; i < mgr->n; i++)
    if (ox_slice_eq(name, mgr->e[i].name)) return &mgr->e[i];
  return NULL;
}

/* Write lock held: the entry of name, created (sorted by name) if new; NULL on OX_ENOMEM. */
static entry_t *get_entry(ox_models_t *mgr, const char *name) {
  entry_t *e = find_entry(mgr, ox_slice(name, strlen(name)));
  if (e) return e;
  if (mgr->n == mgr->cap) {
    size_t ncap = mgr->cap ? 2 * mgr->cap : 16;
    entry_t *ne = realloc(mgr->e, ncap * sizeof *ne);
    if (!ne) return NULL;
    mgr->e = ne;
    mgr->cap = ncap;
  }
  char *dup = strdup(name);
  if (!dup) return NULL;
  size_t at = 0;
  while (at < mgr->n && strcmp(mgr->e[at].name, name) < 0) at++;
  memmove(&mgr->e[at + 1], &mgr->e[at], (mgr->n - at) * sizeof *mgr->e);
  mgr->n++;
  mgr->e[at] = (entry_t){.name = dup};
  return &mgr->e[at];
}

/* Write lock held: the index line of version v of e (added if new); NULL on OX_ENOMEM. */
static vstate_t *vstate(entry_t *e, int64_t v) {
  for (size_t i = 0; i < e->nvs; i++)
    if (e->vs[i].version == v) return &e->vs[i];
  vstate_t *nv = realloc(e->vs, (e->nvs + 1) * sizeof *nv);
  if (!nv) return NULL;
  e->vs = nv;
  size_t at = 0;
  while (at < e->nvs && e->vs[at].version < v) at++;
  memmove(&e->vs[at + 1], &e->vs[at], (e->nvs - at) * sizeof *e->vs);
  e->nvs++;
  e->vs[at] = (vstate_t){.version = v, .state = OX_MS_UNAVAILABLE};
  return &e->vs[at];
}

static void set_state(entry_t *e, int64_t v, ox_model_st_t s, const char *reason) {
  vstate_t *x = vstate(e, v);
  if (!x) return;
  x->state = s;
  snprintf(x->reason, sizeof x->reason, "%s", reason ? reason : "");
}

int ox_models_get(ox_models_t *mgr, ox_slice_t name, ox_slice_t version, ox_model_t **out,
                  char *why, size_t whycap) {
  *out = NULL;
  int64_t v = 0;
  if (version.len) {
    uint64_t u;
    if (version.ptr[0] == '0' || ox_dec_u64(version.ptr, version.len, INT64_MAX, &u)) {
      snprintf(why, whycap, "unknown version of the model");
      return OX_ENOT_FOUND;
    }
    v = (int64_t)u;
  }
  pthread_rwlock_rdlock(&mgr->rw);
  entry_t *e = find_entry(mgr, name);
  ox_model_t *m = NULL;
  if (!e) {
    snprintf(why, whycap, "unknown model");
  } else if (!e->nlive) {
    snprintf(why, whycap, "model '%s' is not loaded (unavailable: %s)", e->name,
             e->reason[0] ? e->reason : "unloaded");
  } else if (!version.len) {
    m = e->live[e->nlive - 1];
  } else {
    for (size_t i = 0; i < e->nlive && !m; i++)
      if (e->live[i]->version == v) m = e->live[i];
    if (!m) snprintf(why, whycap, "unknown version of the model");
  }
  if (m) ox_models_ref(m);
  pthread_rwlock_unlock(&mgr->rw);
  *out = m;
  return m ? 0 : OX_ENOT_FOUND;
}

int ox_models_snapshot(ox_models_t *mgr, ox_model_t ***out, size_t *n) {
  *out = NULL;
  *n = 0;
  pthread_rwlock_rdlock(&mgr->rw);
  size_t total = 0;
  for (size_t i = 0; i < mgr->n; i++) total += mgr->e[i].nlive;
  ox_model_t **v = calloc(total + 1, sizeof *v);
  if (v)
    for (size_t i = 0; i < mgr->n; i++)
      for (size_t k = 0; k < mgr->e[i].nlive; k++) {
        v[*n] = mgr->e[i].live[k];
        ox_models_ref(v[(*n)++]);
      }
  pthread_rwlock_unlock(&mgr->rw);
  *out = v;
  return v ? 0 : OX_ENOMEM;
}

size_t ox_models_versions(ox_models_t *mgr, const char *name, int64_t *out, size_t max) {
  pthread_rwlock_rdlock(&mgr->rw);
  entry_t *e = find_entry(mgr, ox_slice(name, strlen(name)));
  size_t n = e ? e->nlive : 0;
  for (size_t i = 0; i < n && i < max; i++) out[i] = e->live[i]->version;
  pthread_rwlock_unlock(&mgr->rw);
  return n;
}

/* ---- operations (manager thread) --------------------------------------------------------- */

static int cmp_model(const void *a, const void *b) {
  int64_t x = (*(ox_model_t *const *)a)->version, y = (*(ox_model_t *const *)b)->version;
  return (x > y) - (x < y);
}

/* Replaces the served versions of name by nv (ascending, one reference each, moved in);
 * the old ones' references are dropped after the lock. */
static int publish(ox_models_t *mgr, const char *name, ox_model_t **nv, size_t n,
                   const char *reason) {
  pthread_rwlock_wrlock(&mgr->rw);
  entry_t *e = get_entry(mgr, name);
  if (!e) {
    pthread_rwlock_unlock(&mgr->rw);
    return OX_ENOMEM;
  }
  ox_model_t **old = e->live;
  size_t nold = e->nlive;
  e->live = nv;
  e->nlive = n;
  for (size_t i = 0; i < nold; i++) set_state(e, old[i]->version, OX_MS_UNAVAILABLE, "unloaded");
  for (size_t i = 0; i < n; i++) set_state(e, nv[i]->version, OX_MS_READY, "");
  snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "unloaded");
  pthread_rwlock_unlock(&mgr->rw);
  for (size_t i = 0; i < nold; i++) ox_models_put(old[i]);
  free(old);
  return 0;
}

static double since_ms(uint64_t t0) {
  return (double)(ox_mono_ns() - t0) / 1e6;
}

static int do_load(ox_models_t *mgr, const op_t *op, char *err, size_t errcap) {
  uint64_t t0 = ox_mono_ns();
  int64_t *avail = NULL, *want = NULL;
  size_t navail = 0, nwant = 0, built = 0;
  ox_model_t **nv = NULL;
  ox_version_policy_t pol = {0};
  char dir[4096]; /* the model's directory in the repository: its version policy */
  ox_repo_t *src = mgr->o.repo, *upload = NULL; /* where the versions are read */
  int rc = 0;
  if (op->dir) { /* uploaded files (dir/<name>/<version>/...): a repository of their own */
    rc = ox_repo_open_ex(op->dir, 0, &upload, err, errcap);
    if (rc == OX_ENOMEM)
      snprintf(err, errcap, "out of memory");
    else if (rc)
      snprintf(err, errcap, "failed to load '%s': cannot read the uploaded files", op->name);
    src = upload;
  }
  if (!rc) rc = ox_repo_disk_versions(src, op->name, &avail, &navail);
  if (rc == OX_ENOMEM) {
    snprintf(err, errcap, "out of memory");
  } else if (rc && op->dir) {
    if (!upload || rc == OX_ENOT_FOUND || rc == OX_EINVALID)
      snprintf(err, errcap, "failed to load '%s': no model version in the uploaded files",
               op->name);
    rc = OX_EINVALID;
  } else if (rc) {
    snprintf(err, errcap, "failed to load '%s': no such model in the repository", op->name);
    rc = OX_EINVALID;
  } else if (ox_repo_model_dir(mgr->o.repo, op->name, dir, sizeof dir)) {
    snprintf(err, errcap, "failed to load '%s': no model directory (path too long)", op->name);
    rc = OX_EINVALID;
  } else if ((rc = ox_version_policy_read_dir(dir, name_to_check(mgr, op->name), op->override,
                                              op->override_len, &pol, err, errcap)) != 0) {
    rc = OX_EINVALID;
  } else if (!(want = calloc(navail + 1, sizeof *want)) || !(nv = calloc(navail + 1, sizeof *nv))) {
    rc = OX_ENOMEM;
    snprintf(err, errcap, "out of memory");
  } else if (!(nwant = ox_version_policy_select(&pol, avail, navail, want))) {
    rc = OX_EINVALID;
    snprintf(err, errcap, "failed to load '%s': no version is available", op->name);
  }
  if (!rc) {
    pthread_rwlock_wrlock(&mgr->rw);
    entry_t *e = get_entry(mgr, op->name);
    for (size_t i = 0; e && i < nwant; i++) set_state(e, want[i], OX_MS_LOADING, "");
    pthread_rwlock_unlock(&mgr->rw);
  }
  for (size_t i = 0; !rc && i < nwant; i++) {
    char verr[384] = "";
    ox_model_t *m = NULL;
    rc = ox_repo_load_version(src, op->name, want[i], &m, verr, sizeof verr);
    if (!rc) {
      rc = make_version(mgr, m, op->override, verr, sizeof verr);
      nv[built++] = m; /* freed through its reference below on failure */
      if (!rc) log_config(m);
    }
    if (rc) {
      snprintf(err, errcap, "failed to load '%s' version %" PRId64 ": %s", op->name, want[i], verr);
      if (rc != OX_ENOMEM) rc = OX_EINVALID;
    }
  }
  if (!rc) {
    rc = publish(mgr, op->name, nv, built, NULL);
    if (!rc) nv = NULL;
  } else if (nwant) { /* the old versions keep serving; the index says why the load failed */
    pthread_rwlock_wrlock(&mgr->rw);
    entry_t *e = get_entry(mgr, op->name);
    for (size_t i = 0; e && i < nwant; i++) {
      int live = 0;
      for (size_t k = 0; k < e->nlive; k++) live |= e->live[k]->version == want[i];
      set_state(e, want[i], live ? OX_MS_READY : OX_MS_UNAVAILABLE, live ? "" : err);
    }
    if (e && !e->nlive) snprintf(e->reason, sizeof e->reason, "%s", err);
    pthread_rwlock_unlock(&mgr->rw);
  }
  double secs = since_ms(t0) / 1e3;
  pthread_rwlock_wrlock(&mgr->rw);
  entry_t *le = get_entry(mgr, op->name);
  if (le && !rc) le->loads_ok++;
  if (le && rc) le->loads_failed++;
  size_t bi = 0;
  while (bi < OX_LOAD_BUCKETS && secs > load_bounds[bi]) bi++;
  mgr->load_bucket[bi]++;
  mgr->load_count++;
  mgr->load_sum += secs;
  pthread_rwlock_unlock(&mgr->rw);
  if (rc)
    ox_warn("model '%s': load failed after %.0f ms: %s", op->name, since_ms(t0), err);
  else
    ox_info("model '%s': %zu version(s) loaded in %.0f ms (newest %" PRId64 ")", op->name, built,
            since_ms(t0), nwant ? want[nwant - 1] : 0);
  if (nv)
    for (size_t i = 0; i < built; i++) ox_models_put(nv[i]);
  free(nv);
  free(want);
  free(avail);
  ox_version_policy_free(&pol);
  if (upload) ox_repo_close(upload);
  return rc;
}

static int do_unload(ox_models_t *mgr, const op_t *op, char *err, size_t errcap) {
  pthread_rwlock_rdlock(&mgr->rw);
  entry_t *e = find_entry(mgr, ox_slice(op->name, strlen(op->name)));
  int known = e != NULL;
  pthread_rwlock_unlock(&mgr->rw);
  if (!known) {
    int64_t *avail = NULL;
    size_t n = 0;
    int rc = ox_repo_disk_versions(mgr->o.repo, op->name, &avail, &n);
    free(avail);
    if (rc) {
      snprintf(err, errcap, "failed to unload '%s': no such model", op->name);
      return OX_EINVALID;
    }
  }
  int rc = publish(mgr, op->name, NULL, 0, "unloaded");
  if (rc) snprintf(err, errcap, "out of memory");
  ox_info("model '%s': unloaded (requests in flight finish on it)", op->name);
  return rc;
}

static void free_op(op_t *op) {
  free(op->name);
  free(op->override);
  free(op->dir);
  free(op);
}

/* Delay of the second malloc_trim after a version is freed: the threads that served its last
 * requests free their buffers (batches, responses being written) just after it goes. */
#define RETRIM_NS (500 * 1000000ull)

static void *manager_main(void *arg) {
  ox_models_t *mgr = arg;
  uint64_t retrim_at = 0; /* mono ns; 0: none pending */
  pthread_mutex_lock(&mgr->mu);
  for (;;) {
    if (mgr->dead) {
      ox_model_state_t *d = mgr->dead;
      mgr->dead = NULL;
      pthread_mutex_unlock(&mgr->mu);
      while (d) {
        ox_model_state_t *n = d->next_dead;
        free_version(mgr, d);
        d = n;
      }
      malloc_trim(0);
      retrim_at = (uint64_t)ox_mono_ns() + RETRIM_NS;
      pthread_mutex_lock(&mgr->mu);
      continue;
    }
    if (mgr->head && !mgr->stopping) {
      op_t *op = mgr->head, *same = NULL, **tail = &same;
      mgr->head = op->next;
      /* Loads of the same model queued behind this one share its outcome. */
      if (!op->unload && !op->override)
        for (op_t **p = &mgr->head; *p;) {
          op_t *q = *p;
          if (!q->unload && !q->override && !strcmp(q->name, op->name)) {
            *p = q->next;
            q->next = NULL;
            *tail = q;
            tail = &q->next;
          } else {
            p = &q->next;
          }
        }
      mgr->tail = NULL;
      for (op_t *q = mgr->head; q; q = q->next) mgr->tail = q;
      mgr->running = op;
      mgr->joined = same;
      pthread_mutex_unlock(&mgr->mu);
      char err[512] = "";
      int rc = op->unload ? do_unload(mgr, op, err, sizeof err) : do_load(mgr, op, err, sizeof err);
      pthread_mutex_lock(&mgr->mu);
      same = mgr->joined;
      mgr->running = mgr->joined = NULL;
      pthread_mutex_unlock(&mgr->mu);
      op->cb(op->arg, rc, err);
      free_op(op);
      while (same) {
        op_t *n = same->next;
        same->cb(same->arg, rc, err);
        free_op(same);
        same = n;
      }
      pthread_mutex_lock(&mgr->mu);
      continue;
    }
    if (mgr->stopping) break;
    if (!retrim_at) {
      pthread_cond_wait(&mgr->cv, &mgr->mu);
      continue;
    }
    if ((uint64_t)ox_mono_ns() >= retrim_at) {
      retrim_at = 0;
      pthread_mutex_unlock(&mgr->mu);
      malloc_trim(0);
      pthread_mutex_lock(&mgr->mu);
      continue;
    }
    /* mgr->cv waits on CLOCK_MONOTONIC, the clock of ox_mono_ns */
    struct timespec ts = {(time_t)(retrim_at / 1000000000ull), (long)(retrim_at % 1000000000ull)};
    pthread_cond_timedwait(&mgr->cv, &mgr->mu, &ts);
  }
  pthread_mutex_unlock(&mgr->mu);
  return NULL;
}

static int queue_op(ox_models_t *mgr, int unload, const char *name, const char *override,
                    size_t override_len, const char *dir, ox_models_cb cb, void *arg) {
  op_t *op = calloc(1, sizeof *op);
  if (!op || !(op->name = strdup(name)) || (dir && !(op->dir = strdup(dir)))) {
    if (op) free_op(op);
    return OX_ENOMEM;
  }
  if (override) {
    if (!(op->override = malloc(override_len + 1))) {
      free_op(op);
      return OX_ENOMEM;
    }
    memcpy(op->override, override, override_len);
    op->override[override_len] = 0;
    op->override_len = override_len;
  }
  op->unload = unload;
  op->cb = cb;
  op->arg = arg;
  pthread_mutex_lock(&mgr->mu);
  if (mgr->stopping) {
    pthread_mutex_unlock(&mgr->mu);
    free_op(op);
    return OX_EUNAVAILABLE;
  }
  op_t *r = mgr->running;
  if (!unload && !override && r && !r->unload && !r->override && !strcmp(r->name, name)) {
    op->next = mgr->joined; /* a load of the model being loaded waits for that load's outcome */
    mgr->joined = op;
    pthread_mutex_unlock(&mgr->mu);
    return 0;
  }
  if (mgr->tail)
    mgr->tail->next = op;
  else
    mgr->head = op;
  mgr->tail = op;
  pthread_cond_signal(&mgr->cv);
  pthread_mutex_unlock(&mgr->mu);
  return 0;
}

int ox_models_load(ox_models_t *mgr, const char *name, const char *override, size_t override_len,
                   const char *dir, ox_models_cb cb, void *arg) {
  return queue_op(mgr, 0, name, override, override_len, dir, cb, arg);
}

int ox_models_unload(ox_models_t *mgr, const char *name, ox_models_cb cb, void *arg) {
  return queue_op(mgr, 1, name, NULL, 0, NULL, cb, arg);
}

/* ---- the index --------------------------------------------------------------------------- */

int ox_models_index_json(ox_models_t *mgr, int ready_only, ox_buf_t *b) {
  int rc = ox_buf_puts(b, "[");
  int first = 1;
  pthread_rwlock_rdlock(&mgr->rw);
  for (size_t i = 0; i < mgr->n && !rc; i++) {
    entry_t *e = &mgr->e[i];
    if (!e->nvs && !ready_only) { /* known, never loaded */
      rc |= ox_buf_puts(b, first ? "{\"name\":" : ",{\"name\":");
      first = 0;
      rc |= ox_buf_append_json_string(b, e->name, strlen(e->name));
      rc |= ox_buf_puts(b, ",\"state\":\"UNAVAILABLE\",\"reason\":");
      rc |= ox_buf_append_json_string(b, e->reason, strlen(e->reason));
      rc |= ox_buf_puts(b, "}");
    }
    for (size_t k = 0; k < e->nvs; k++) {
      vstate_t *x = &e->vs[k];
      if (ready_only && x->state != OX_MS_READY) continue;
      rc |= ox_buf_puts(b, first ? "{\"name\":" : ",{\"name\":");
      first = 0;
      rc |= ox_buf_append_json_string(b, e->name, strlen(e->name));
      rc |=
          ox_buf_printf(b, ",\"version\":\"%" PRId64 "\",\"state\":\"%s\",\"reason\":", x->version,
                        state_name(x->state));
      rc |= ox_buf_append_json_string(b, x->reason, strlen(x->reason));
      rc |= ox_buf_puts(b, "}");
    }
  }
  /* Model directories never loaded (single-model mode: the directory holds no other model). */
  DIR *d = ready_only || ox_repo_single(mgr->o.repo) ? NULL : opendir(ox_repo_root(mgr->o.repo));
  struct dirent *de;
  while (d && !rc && (de = readdir(d))) {
    size_t len = strlen(de->d_name);
    if (de->d_name[0] == '.' || !ox_name_valid(de->d_name, len) ||
        find_entry(mgr, ox_slice(de->d_name, len)))
      continue;
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", ox_repo_root(mgr->o.repo), de->d_name);
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) continue;
    rc |= ox_buf_puts(b, first ? "{\"name\":" : ",{\"name\":");
    first = 0;
    rc |= ox_buf_append_json_string(b, de->d_name, len);
    rc |= ox_buf_puts(b, ",\"state\":\"UNAVAILABLE\",\"reason\":\"unloaded\"}");
  }
  if (d) closedir(d);
  pthread_rwlock_unlock(&mgr->rw);
  rc |= ox_buf_puts(b, "]");
  return rc ? OX_ENOMEM : 0;
}

int ox_models_metrics(ox_models_t *mgr, ox_buf_t *b) {
  int rc = ox_buf_puts(b,
                       "# HELP onnxd_model_loads_total Model loads through the model manager, by "
                       "outcome\n# TYPE onnxd_model_loads_total counter\n");
  pthread_rwlock_rdlock(&mgr->rw);
  for (size_t i = 0; i < mgr->n && !rc; i++) {
    const entry_t *e = &mgr->e[i];
    rc |= ox_buf_printf(b,
                        "onnxd_model_loads_total{model=\"%s\",result=\"success\"} %" PRIu64
                        "\nonnxd_model_loads_total{model=\"%s\",result=\"failure\"} %" PRIu64 "\n",
                        e->name, e->loads_ok, e->name, e->loads_failed);
  }
  rc |= ox_buf_puts(b,
                    "# HELP onnxd_model_load_duration_seconds Time from a load's start to its "
                    "new versions served (or its failure)\n"
                    "# TYPE onnxd_model_load_duration_seconds histogram\n");
  uint64_t cum = 0;
  for (size_t k = 0; k < OX_LOAD_BUCKETS && !rc; k++) {
    cum += mgr->load_bucket[k];
    rc |= ox_buf_printf(b, "onnxd_model_load_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                        load_bounds[k], cum);
  }
  cum += mgr->load_bucket[OX_LOAD_BUCKETS];
  rc |= ox_buf_printf(b,
                      "onnxd_model_load_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64
                      "\nonnxd_model_load_duration_seconds_sum %.6f\n"
                      "onnxd_model_load_duration_seconds_count %" PRIu64 "\n",
                      cum, mgr->load_sum, mgr->load_count);
  rc |= ox_buf_puts(b,
                    "# HELP onnxd_model_state Current state of each model version known (1)\n"
                    "# TYPE onnxd_model_state gauge\n");
  for (size_t i = 0; i < mgr->n && !rc; i++)
    for (size_t k = 0; k < mgr->e[i].nvs; k++)
      rc |= ox_buf_printf(
          b, "onnxd_model_state{model=\"%s\",version=\"%" PRId64 "\",state=\"%s\"} 1\n",
          mgr->e[i].name, mgr->e[i].vs[k].version, state_name(mgr->e[i].vs[k].state));
  pthread_rwlock_unlock(&mgr->rw);
  return rc ? OX_ENOMEM : 0;
}

/* ---- life cycle -------------------------------------------------------------------------- */

int ox_models_open(const ox_models_opts_t *opts, ox_models_t **out) {
  *out = NULL;
  ox_models_t *mgr = calloc(1, sizeof *mgr);
  if (!mgr) return OX_ENOMEM;
  mgr->o = *opts;
  pthread_rwlock_init(&mgr->rw, NULL);
  pthread_mutex_init(&mgr->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&mgr->cv, &ca);
  pthread_condattr_destroy(&ca);
  ox_repo_t *repo = opts->repo;
  int rc = 0;
  size_t nm = ox_repo_num_models(repo);
  for (size_t i = 0; i < nm && !rc; i++) {
    const char *name = ox_repo_model_name(repo, i);
    ox_slice_t sn = ox_slice(name, strlen(name));
    size_t nv = ox_repo_versions(repo, sn, NULL, 0);
    int64_t *vs = calloc(nv + 1, sizeof *vs);
    ox_model_t **live = calloc(nv + 1, sizeof *live);
    if (!vs || !live) {
      free(vs);
      free(live);
      rc = OX_ENOMEM;
      break;
    }
    ox_repo_versions(repo, sn, vs, nv);
    size_t n = 0;
    for (size_t k = 0; k < nv; k++) {
      char vbuf[24];
      int vl = snprintf(vbuf, sizeof vbuf, "%" PRId64, vs[k]);
      ox_model_t *m = NULL;
      if (ox_repo_find(repo, sn, ox_slice(vbuf, (size_t)vl), &m) != 0) continue;
      live[n++] = m;
      char err[256] = "";
      int mrc = make_version(mgr, m, NULL, err, sizeof err);
      if (mrc == OX_ENOMEM) rc = mrc;
      if (mrc)
        ox_warn("model '%s' version %" PRId64 " is not available: %s", name, vs[k], err);
      else
        log_config(m);
    }
    qsort(live, n, sizeof *live, cmp_model);
    free(vs);
    if (!rc) rc = publish(mgr, name, live, n, NULL);
    if (rc) free(live);
  }
  ox_repo_disown(repo); /* every version found is the manager's now */
  /* Model directories not loaded (explicit mode) are known: a request names them "not loaded".
   * In single-model mode the directory's entries are the model's own (versions, warmup/). */
  DIR *d = rc || ox_repo_single(repo) ? NULL : opendir(ox_repo_root(repo));
  struct dirent *de;
  pthread_rwlock_wrlock(&mgr->rw);
  while (d && !rc && (de = readdir(d))) {
    size_t len = strlen(de->d_name);
    char path[4096];
    struct stat st;
    if (de->d_name[0] == '.' || !ox_name_valid(de->d_name, len) ||
        find_entry(mgr, ox_slice(de->d_name, len)))
      continue;
    snprintf(path, sizeof path, "%s/%s", ox_repo_root(repo), de->d_name);
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) continue;
    entry_t *e = get_entry(mgr, de->d_name);
    if (!e)
      rc = OX_ENOMEM;
    else
      snprintf(e->reason, sizeof e->reason, "unloaded");
  }
  pthread_rwlock_unlock(&mgr->rw);
  if (d) closedir(d);
  if (!rc && pthread_create(&mgr->thread, NULL, manager_main, mgr) != 0) rc = OX_ENOMEM;
  if (rc) {
    mgr->started = 0;
    ox_models_stop(mgr);
    ox_models_destroy(mgr);
    return rc;
  }
  mgr->started = 1;
  *out = mgr;
  return 0;
}

void ox_models_stop(ox_models_t *mgr) {
  if (!mgr) return;
  pthread_mutex_lock(&mgr->mu);
  mgr->stopping = 1;
  op_t *ops = mgr->head;
  mgr->head = mgr->tail = NULL;
  pthread_cond_signal(&mgr->cv);
  pthread_mutex_unlock(&mgr->mu);
  while (ops) {
    op_t *n = ops->next;
    ops->cb(ops->arg, OX_EUNAVAILABLE, "server is shutting down");
    free_op(ops);
    ops = n;
  }
  if (mgr->started) pthread_join(mgr->thread, NULL);
  mgr->started = 0;
  pthread_rwlock_wrlock(&mgr->rw);
  for (size_t i = 0; i < mgr->n; i++) {
    entry_t *e = &mgr->e[i];
    for (size_t k = 0; k < e->nlive; k++) ox_models_put(e->live[k]);
    free(e->live);
    e->live = NULL;
    e->nlive = 0;
  }
  pthread_rwlock_unlock(&mgr->rw);
  /* The pool has stopped: nothing runs; requests still queued in a batcher are failed now (their
   * answers go to the loops, which release their references later). */
  pthread_mutex_lock(&mgr->mu);
  ox_model_state_t *all = mgr->all;
  pthread_mutex_unlock(&mgr->mu);
  /* No lock held: a failed request's completion may drop a reference (ox_models_put takes mu);
   * the list itself only changes on the manager thread, which has ended. */
  for (ox_model_state_t *st = all; st; st = st->next_all) {
    ox_batcher_destroy(st->batcher);
    st->batcher = NULL;
  }
}

void ox_models_destroy(ox_models_t *mgr) {
  if (!mgr) return;
  pthread_mutex_lock(&mgr->mu);
  ox_model_state_t *d = mgr->dead;
  mgr->dead = NULL;
  pthread_mutex_unlock(&mgr->mu);
  while (d) {
    ox_model_state_t *n = d->next_dead;
    free_version(mgr, d);
    d = n;
  }
  if (mgr->all) ox_warn("model manager: versions still referenced at exit");
  for (size_t i = 0; i < mgr->n; i++) {
    free(mgr->e[i].name);
    free(mgr->e[i].live);
    free(mgr->e[i].vs);
  }
  free(mgr->e);
  pthread_rwlock_destroy(&mgr->rw);
  pthread_mutex_destroy(&mgr->mu);
  pthread_cond_destroy(&mgr->cv);
  free(mgr);
  malloc_trim(0);
}

void ox_models_terminate_runs(ox_models_t *mgr) {
  pthread_mutex_lock(&mgr->mu);
  for (ox_model_state_t *st = mgr->all; st; st = st->next_all)
    if (st->batcher) ox_batcher_terminate_runs(st->batcher);
  pthread_mutex_unlock(&mgr->mu);
}

int ox_models_need_features(ox_models_t *mgr) {
  int need = 0;
  pthread_mutex_lock(&mgr->mu);
  for (ox_model_state_t *st = mgr->all; st; st = st->next_all)
    need |= !st->unavailable && st->cfg.view.enabled;
  pthread_mutex_unlock(&mgr->mu);
  return need;
}
