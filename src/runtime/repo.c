/* repo.c: the model repository: scanning DIR/<model>/<version>/model.onnx, loading every
 * version, and finding models by name and version afterwards.
 *
 * Names are checked before anything is opened: model names are [A-Za-z0-9_.-]+ (not "." or
 * ".."), versions positive decimal integers without leading zeros that fit in int64. A model
 * file is opened (O_NONBLOCK, so a FIFO cannot stall start-up), must be a regular file, and the
 * real path of the file actually opened (/proc/self/fd) must lie under the repository's real
 * path: a symlinked model directory or file that leads outside is refused. Checking the open
 * descriptor rather than the name leaves no window for a rename between check and use.
 *
 * Loading is the slow part (one ORT session per version), so the versions found are loaded by
 * a few threads; a version that fails is logged with its reason and left out. Once open, the
 * repository is immutable: lookups need no locks.
 *
 * Single-model mode (ox_repo_open_single, for --model-name): the directory is one model's own
 * directory, as KServe's storage initializer leaves it in /mnt/models, served under a name
 * given by the caller. Either it holds model.onnx itself (a bare model: version 1, whose
 * version directory is the directory itself, so external data files lie beside model.onnx) or
 * version directories DIR/<n>/model.onnx. Every path is built by ox_repo_model_dir and
 * ox_repo_version_dir, so the checks above hold unchanged in both modes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "core/text.h"
#include "runtime/rt_priv.h"

#define OX_REPO_MODEL_FILE "model.onnx"
#define OX_REPO_MAX_MODEL_BYTES ((size_t)INT32_MAX) /* protobuf's limit; bigger needs ext. data */
#define OX_REPO_MAX_THREADS 8

typedef struct {
  char *name;            /* owned */
  ox_model_t **versions; /* owned, ascending by version */
  size_t nver;
} ox_repo_entry_t;

struct ox_repo {
  char *root;              /* real path of the repository directory */
  ox_repo_entry_t *models; /* sorted by name (strcmp) */
  size_t n;
  /* Single-model mode: the one model's name (owned; NULL: a repository of model directories),
   * whose directory is root; bare: its model.onnx lies in root itself (version 1). */
  char *single;
  int bare;
};

/* One model version to load. */
typedef struct {
  size_t entry; /* index into the model list */
  int64_t version;
  ox_model_t *model; /* result; NULL if it failed */
} ox_repo_job_t;

typedef struct {
  const ox_repo_t *repo;
  ox_repo_job_t *jobs;
  size_t njobs;
  size_t next; /* next job to take (atomic) */
} ox_repo_loader_t;

/* ---- names ----------------------------------------------------------------------------- */

static int ox_repo_valid_name(const char *s, size_t n) {
  if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return 0;
  return ox_name_valid(s, n);
}

/* Positive decimal integer, no sign, no leading zero, at most INT64_MAX. 0 or -1. */
static int ox_repo_parse_version(const char *s, size_t n, int64_t *out) {
  uint64_t v;
  if (n == 0 || s[0] == '0' || ox_dec_u64(s, n, INT64_MAX, &v)) return -1;
  *out = (int64_t)v;
  return 0;
}

/* A copy of an untrusted name fit for a log line (non-printable bytes as '?'). */
static const char *ox_repo_printable(char *dst, size_t cap, const char *s) {
  size_t i = 0;
  for (; s[i] && i + 1 < cap; i++) dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
  dst[i] = '\0';
  return dst;
}

static int ox_repo_cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ox_repo_cmp_job(const void *a, const void *b) {
  int64_t x = ((const ox_repo_job_t *)a)->version, y = ((const ox_repo_job_t *)b)->version;
  return (x > y) - (x < y);
}

/* ---- reading a model file -------------------------------------------------------------- */

/* Is path (a real path) root itself or below it? */
static int ox_repo_inside(const char *root, const char *path) {
  size_t n = strlen(root);
  if (n == 1) return path[0] == '/'; /* the repository is "/" */
  return strncmp(path, root, n) == 0 && path[n] == '/';
}

/* Real path of what fd refers to: /proc/self/fd when mounted, else realpath(path) if it is the
 * same file. Returns malloc'd string or NULL. */
static char *ox_repo_fd_path(int fd, const char *path, const struct stat *st) {
  char link[64], buf[PATH_MAX];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, buf, sizeof buf - 1);
  if (n > 0 && buf[0] == '/') {
    buf[n] = '\0';
    return strdup(buf);
  }
  char *real = realpath(path, NULL);
  struct stat st2;
  if (real && (stat(real, &st2) != 0 || st2.st_dev != st->st_dev || st2.st_ino != st->st_ino)) {
    free(real);
    return NULL;
  }
  return real;
}

int ox_repo_model_dir(const ox_repo_t *repo, const char *model, char *out, size_t cap) {
  if (repo->single ? strcmp(model, repo->single) != 0 : !ox_repo_valid_name(model, strlen(model)))
    return OX_EINVALID;
  int n = repo->single ? snprintf(out, cap, "%s", repo->root)
                       : snprintf(out, cap, "%s/%s", repo->root, model);
  return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* The directory of a version of model: <model dir>/<version>, or root for a bare model.onnx.
 * 0, or -ENAMETOOLONG. */
static int ox_repo_version_dir(const ox_repo_t *repo, const char *model, int64_t version, char *out,
                               size_t cap) {
  int rc = ox_repo_model_dir(repo, model, out, cap);
  if (rc || (repo->single && repo->bare)) return rc;
  size_t used = strlen(out);
  int n = snprintf(out + used, cap - used, "/%" PRId64, version);
  return n < 0 || (size_t)n >= cap - used ? -ENAMETOOLONG : 0;
}

/* Reads model.onnx of a version after the checks in the file comment. On success *data
 * (malloc'd, *len bytes) and *dir (malloc'd real path of the version directory). */
static int ox_repo_read_model(const ox_repo_t *repo, const char *model, int64_t version,
                              char **data, size_t *len, char **dir, char *err, size_t errcap) {
  const char *root = repo->root;
  char path[PATH_MAX];
  if (repo->single && repo->bare && version != 1) {
    snprintf(err, errcap, "no version %" PRId64 " (a bare " OX_REPO_MODEL_FILE " is version 1)",
             version);
    return OX_ENOT_FOUND;
  }
  int rc0 = ox_repo_version_dir(repo, model, version, path, sizeof path);
  size_t used = rc0 ? 0 : strlen(path);
  if (rc0 || used + sizeof("/" OX_REPO_MODEL_FILE) > sizeof path) {
    snprintf(err, errcap, "path too long");
    return -ENAMETOOLONG;
  }
  memcpy(path + used, "/" OX_REPO_MODEL_FILE, sizeof("/" OX_REPO_MODEL_FILE));
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errcap,
             e == ENOENT ? "no " OX_REPO_MODEL_FILE : "cannot open " OX_REPO_MODEL_FILE ": %s",
             strerror(e));
    return -e;
  }
  struct stat st;
  char *real = NULL, *buf = NULL;
  int rc = 0;
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    snprintf(err, errcap, "cannot stat " OX_REPO_MODEL_FILE ": %s", strerror(-rc));
  } else if (!S_ISREG(st.st_mode)) {
    rc = OX_EINVALID;
    snprintf(err, errcap, OX_REPO_MODEL_FILE " is not a regular file");
  } else if (!(real = ox_repo_fd_path(fd, path, &st)) || !ox_repo_inside(root, real)) {
    rc = OX_EINVALID;
    snprintf(err, errcap, OX_REPO_MODEL_FILE " is outside the repository (symlink?)");
  } else if ((uint64_t)st.st_size > OX_REPO_MAX_MODEL_BYTES) {
    rc = OX_EINVALID;
    snprintf(err, errcap, OX_REPO_MODEL_FILE " is over 2 GiB (store weights as external data)");
  } else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
    rc = OX_ENOMEM;
    snprintf(err, errcap, "out of memory");
  }
  size_t got = 0;
  while (!rc && got < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) { /* error, or the file shrank while we read it */
      rc = r < 0 ? -errno : -EIO;
      snprintf(err, errcap, "cannot read " OX_REPO_MODEL_FILE ": %s", strerror(-rc));
    }
    got += r > 0 ? (size_t)r : 0;
  }
  close(fd);
  if (!rc) {
    *strrchr(real, '/') = '\0'; /* the version directory */
    *data = buf;
    *len = got;
    *dir = real;
    return 0;
  }
  free(buf);
  free(real);
  return rc;
}

/* ---- loading --------------------------------------------------------------------------- */

static void ox_repo_load_one(const ox_repo_t *repo, ox_repo_job_t *job) {
  const char *name = repo->models[job->entry].name;
  char err[512] = "";
  char *data = NULL, *dir = NULL;
  size_t len = 0;
  int rc = ox_repo_read_model(repo, name, job->version, &data, &len, &dir, err, sizeof err);
  if (!rc) rc = ox_rt_model_load(name, job->version, data, len, dir, &job->model, err, sizeof err);
  free(data);
  free(dir);
  if (rc) {
    ox_warn("model '%s' version %" PRId64 " not loaded: %s", name, job->version, err);
  } else {
    ox_debug("model '%s' version %" PRId64 " loaded: %zu inputs, %zu outputs", name, job->version,
             job->model->num_inputs, job->model->num_outputs);
  }
}

static void *ox_repo_loader_main(void *arg) {
  ox_repo_loader_t *l = arg;
  for (;;) {
    size_t i = __atomic_fetch_add(&l->next, 1, __ATOMIC_RELAXED);
    if (i >= l->njobs) return NULL;
    ox_repo_load_one(l->repo, &l->jobs[i]);
  }
}

/* Loads every job, on up to OX_REPO_MAX_THREADS threads (fewer if there are fewer CPUs). */
static void ox_repo_load_all(const ox_repo_t *repo, ox_repo_job_t *jobs, size_t njobs) {
  ox_repo_loader_t l = {repo, jobs, njobs, 0};
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  size_t nthreads = cpus > 1 ? (size_t)cpus : 1;
  if (nthreads > OX_REPO_MAX_THREADS) nthreads = OX_REPO_MAX_THREADS;
  if (nthreads > njobs) nthreads = njobs;
  pthread_t tids[OX_REPO_MAX_THREADS];
  size_t started = 0;
  for (size_t i = 1; i < nthreads; i++) { /* this thread is the first loader */
    if (pthread_create(&tids[started], NULL, ox_repo_loader_main, &l) != 0) break;
    started++;
  }
  ox_repo_loader_main(&l);
  for (size_t i = 0; i < started; i++) pthread_join(tids[i], NULL);
}

/* ---- scanning -------------------------------------------------------------------------- */

/* Names of the directory's entries (not "." or ".."), sorted; *out malloc'd, each malloc'd. */
static int ox_repo_list(const char *path, char ***out, size_t *n_out) {
  *out = NULL;
  *n_out = 0;
  DIR *d = opendir(path);
  if (!d) return -errno;
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *de;
  errno = 0;
  while ((de = readdir(d))) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (n == cap) {
      size_t ncap = cap ? 2 * cap : 16;
      char **nn = realloc(names, ncap * sizeof *nn);
      if (!nn) {
        rc = OX_ENOMEM;
        break;
      }
      names = nn;
      cap = ncap;
    }
    if (!(names[n] = strdup(de->d_name))) {
      rc = OX_ENOMEM;
      break;
    }
    n++;
    errno = 0;
  }
  if (!rc && errno) rc = -errno;
  closedir(d);
  if (rc) {
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
  }
  if (n) qsort(names, n, sizeof *names, ox_repo_cmp_str);
  *out = names;
  *n_out = n;
  return 0;
}

static void ox_repo_free_list(char **names, size_t n) {
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
}

static int ox_repo_is_dir(const char *base, const char *name) {
  char path[PATH_MAX];
  struct stat st;
  int n = snprintf(path, sizeof path, "%s/%s", base, name);
  return n > 0 && (size_t)n < sizeof path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Appends the valid version directories of model (entry index e) to *jobs; a bare model.onnx
 * (single-model mode) is version 1. */
static int ox_repo_scan_model(const ox_repo_t *repo, const char *model, size_t e,
                              ox_repo_job_t **jobs, size_t *njobs, size_t *cap) {
  char path[PATH_MAX], shown[128];
  if (ox_repo_model_dir(repo, model, path, sizeof path)) return 0;
  if (repo->single && repo->bare) {
    if (*njobs == *cap) {
      ox_repo_job_t *nj = realloc(*jobs, (*cap + 1) * sizeof *nj);
      if (!nj) return OX_ENOMEM;
      *jobs = nj;
      *cap += 1;
    }
    (*jobs)[(*njobs)++] = (ox_repo_job_t){e, 1, NULL};
    return 0;
  }
  char **names;
  size_t count;
  int rc = ox_repo_list(path, &names, &count);
  if (rc == OX_ENOMEM) return rc;
  if (rc) {
    ox_warn("model '%s' skipped: cannot read its directory: %s", model, ox_strerror(rc));
    return 0;
  }
  size_t first = *njobs;
  for (size_t i = 0; i < count; i++) {
    int64_t v;
    int is_dir = ox_repo_is_dir(path, names[i]);
    if (ox_repo_parse_version(names[i], strlen(names[i]), &v) != 0) {
      /* Files such as config.json belong here; only a stray directory is worth a warning. */
      if (is_dir)
        ox_warn(
            "model '%s': directory '%s' skipped: versions are positive decimal integers "
            "without leading zeros",
            model, ox_repo_printable(shown, sizeof shown, names[i]));
      continue;
    }
    if (!is_dir) {
      ox_warn("model '%s' version %" PRId64 " skipped: not a directory", model, v);
      continue;
    }
    if (*njobs == *cap) {
      size_t ncap = *cap ? 2 * *cap : 64;
      ox_repo_job_t *nj = realloc(*jobs, ncap * sizeof *nj);
      if (!nj) {
        ox_repo_free_list(names, count);
        return OX_ENOMEM;
      }
      *jobs = nj;
      *cap = ncap;
    }
    (*jobs)[(*njobs)++] = (ox_repo_job_t){e, v, NULL};
  }
  ox_repo_free_list(names, count);
  /* Directory order is by string; versions go by number. */
  qsort(*jobs + first, *njobs - first, sizeof **jobs, ox_repo_cmp_job);
  return 0;
}

static void ox_repo_free_jobs(ox_repo_job_t *jobs, size_t njobs) {
  for (size_t i = 0; i < njobs; i++) ox_rt_model_free(jobs[i].model);
  free(jobs);
}

/* Moves the loaded models from jobs (grouped by entry, versions ascending) into the entries and
 * drops the entries with no loaded version. On OX_ENOMEM the models stay in jobs. */
static int ox_repo_assemble(ox_repo_t *repo, ox_repo_job_t *jobs, size_t njobs) {
  for (size_t e = 0, j = 0; e < repo->n; e++) {
    size_t loaded = 0;
    for (; j < njobs && jobs[j].entry == e; j++) loaded += jobs[j].model != NULL;
    if (loaded && !(repo->models[e].versions = malloc(loaded * sizeof(ox_model_t *))))
      return OX_ENOMEM;
  }
  for (size_t j = 0; j < njobs; j++) {
    if (!jobs[j].model) continue;
    ox_repo_entry_t *ent = &repo->models[jobs[j].entry];
    ent->versions[ent->nver++] = jobs[j].model;
    jobs[j].model = NULL;
  }
  size_t kept = 0;
  for (size_t e = 0; e < repo->n; e++) {
    if (repo->models[e].nver) {
      repo->models[kept++] = repo->models[e];
    } else {
      free(repo->models[e].name);
      free(repo->models[e].versions);
    }
  }
  repo->n = kept;
  return 0;
}

/* Does path/name exist as something other than a directory (lstat: a symlink counts; its
 * target is checked when it is opened)? */
static int ox_repo_has_file(const char *path, const char *name) {
  char p[PATH_MAX];
  struct stat st;
  int n = snprintf(p, sizeof p, "%s/%s", path, name);
  return n > 0 && (size_t)n < sizeof p && lstat(p, &st) == 0 && !S_ISDIR(st.st_mode);
}

/* Does dir hold a version directory <n>/model.onnx? */
static int ox_repo_has_version(const char *dir) {
  char **names;
  size_t count;
  if (ox_repo_list(dir, &names, &count)) return 0;
  int found = 0;
  for (size_t i = 0; i < count && !found; i++) {
    int64_t v;
    char sub[PATH_MAX];
    int n = snprintf(sub, sizeof sub, "%s/%s", dir, names[i]);
    found = ox_repo_parse_version(names[i], strlen(names[i]), &v) == 0 && n > 0 &&
            (size_t)n < sizeof sub && ox_repo_is_dir(dir, names[i]) &&
            ox_repo_has_file(sub, OX_REPO_MODEL_FILE);
  }
  ox_repo_free_list(names, count);
  return found;
}

ox_repo_layout_t ox_repo_layout(const char *dir) {
  int bare = ox_repo_has_file(dir, OX_REPO_MODEL_FILE), versions = ox_repo_has_version(dir);
  if (bare && versions) return OX_REPO_AMBIGUOUS;
  if (bare) return OX_REPO_BARE;
  if (versions) return OX_REPO_VERSIONS;
  char **names;
  size_t count;
  if (ox_repo_list(dir, &names, &count)) return OX_REPO_EMPTY;
  int models = 0;
  for (size_t i = 0; i < count && !models; i++) {
    char sub[PATH_MAX];
    int n = snprintf(sub, sizeof sub, "%s/%s", dir, names[i]);
    models = ox_repo_valid_name(names[i], strlen(names[i])) && n > 0 && (size_t)n < sizeof sub &&
             ox_repo_is_dir(dir, names[i]) && ox_repo_has_version(sub);
  }
  ox_repo_free_list(names, count);
  return models ? OX_REPO_MODELS : OX_REPO_EMPTY;
}

static int ox_repo_open_impl(const char *dir, const char *single, int load, ox_repo_t **out,
                             char *err, size_t errcap);

int ox_repo_open(const char *dir, ox_repo_t **out, char *err, size_t errcap) {
  return ox_repo_open_impl(dir, NULL, 1, out, err, errcap);
}

int ox_repo_open_ex(const char *dir, int load, ox_repo_t **out, char *err, size_t errcap) {
  return ox_repo_open_impl(dir, NULL, load, out, err, errcap);
}

int ox_repo_open_single(const char *dir, const char *name, ox_repo_t **out, char *err,
                        size_t errcap) {
  *out = NULL;
  if (!ox_repo_valid_name(name, strlen(name))) {
    snprintf(err, errcap, "model name '%s': use only A-Z a-z 0-9 _ . -", name);
    return OX_EINVALID;
  }
  return ox_repo_open_impl(dir, name, 1, out, err, errcap);
}

/* Opens dir as a repository (single NULL) or as the directory of the one model single. */
static int ox_repo_open_impl(const char *dir, const char *single, int load, ox_repo_t **out,
                             char *err, size_t errcap) {
  *out = NULL;
  if (!ox_rt_ready()) {
    snprintf(err, errcap, "runtime not initialized");
    return OX_ERUNTIME;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  struct stat st;
  if (stat(dir, &st) != 0) {
    int e = errno;
    snprintf(err, errcap, "model repository '%s': %s", dir, strerror(e));
    return -e;
  }
  if (!S_ISDIR(st.st_mode)) {
    snprintf(err, errcap, "model repository '%s': not a directory", dir);
    return -ENOTDIR;
  }
  ox_repo_t *repo = calloc(1, sizeof *repo);
  if (!repo) {
    snprintf(err, errcap, "out of memory");
    return OX_ENOMEM;
  }
  char **names = NULL;
  size_t count = 0, njobs = 0, cap = 0;
  ox_repo_job_t *jobs = NULL;
  int rc = 0;
  if (!(repo->root = realpath(dir, NULL))) {
    rc = -errno;
  } else {
    rc = ox_repo_list(repo->root, &names, &count);
  }
  if (!rc && !(repo->models = calloc(count + 1, sizeof *repo->models))) rc = OX_ENOMEM;
  if (!rc && single && !(repo->single = strdup(single))) rc = OX_ENOMEM;
  if (rc) {
    snprintf(err, errcap, "model repository '%s': cannot read it: %s", dir, ox_strerror(rc));
    goto fail;
  }
  if (single) { /* one model, whose directory is root: no entry of root is a model */
    ox_repo_layout_t lay = ox_repo_layout(repo->root);
    if (lay != OX_REPO_BARE && lay != OX_REPO_VERSIONS) {
      snprintf(err, errcap,
               lay == OX_REPO_AMBIGUOUS
                   ? "model directory '%s': both a model.onnx and version directories "
                     "<n>/model.onnx; keep one or the other"
                   : "model directory '%s': no model.onnx and no version directory "
                     "<n>/model.onnx",
               dir);
      rc = OX_EINVALID;
      goto fail;
    }
    repo->bare = lay == OX_REPO_BARE;
    repo->n = 1;
    if (!(repo->models[0].name = strdup(single)) ||
        ox_repo_scan_model(repo, single, 0, &jobs, &njobs, &cap)) {
      snprintf(err, errcap, "out of memory");
      rc = OX_ENOMEM;
      goto fail;
    }
  }
  for (size_t i = 0; i < count && !single; i++) {
    char shown[128];
    if (!ox_repo_is_dir(repo->root, names[i])) continue; /* files: README, .keep, ... */
    if (!ox_repo_valid_name(names[i], strlen(names[i]))) {
      ox_warn("directory '%s' skipped: model names use only A-Z a-z 0-9 _ . -",
              ox_repo_printable(shown, sizeof shown, names[i]));
      continue;
    }
    size_t e = repo->n++;
    repo->models[e].name = names[i];
    names[i] = NULL;
    rc = ox_repo_scan_model(repo, repo->models[e].name, e, &jobs, &njobs, &cap);
    if (rc) {
      snprintf(err, errcap, "out of memory");
      goto fail;
    }
  }
  ox_repo_free_list(names, count);
  names = NULL;

  if (load) ox_repo_load_all(repo, jobs, njobs);
  if ((rc = ox_repo_assemble(repo, jobs, njobs)) != 0) {
    snprintf(err, errcap, "out of memory");
    goto fail;
  }
  ox_repo_free_jobs(jobs, njobs);
  size_t nver = 0;
  for (size_t e = 0; e < repo->n; e++) nver += repo->models[e].nver;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  ox_info("model repository: %zu models, %zu of %zu versions loaded in %.0f ms", repo->n, nver,
          njobs, ms);
  *out = repo;
  return 0;

fail:
  ox_repo_free_list(names, count);
  ox_repo_free_jobs(jobs, njobs);
  ox_repo_close(repo);
  return rc;
}

void ox_repo_close(ox_repo_t *repo) {
  if (!repo) return;
  for (size_t e = 0; e < repo->n; e++) {
    for (size_t v = 0; v < repo->models[e].nver; v++) ox_rt_model_free(repo->models[e].versions[v]);
    free(repo->models[e].versions);
    free(repo->models[e].name);
  }
  free(repo->models);
  free(repo->root);
  free(repo->single);
  free(repo);
}

/* ---- lookups --------------------------------------------------------------------------- */

static const ox_repo_entry_t *ox_repo_lookup(const ox_repo_t *repo, ox_slice_t name) {
  if (!repo || name.len == 0) return NULL;
  size_t lo = 0, hi = repo->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const char *s = repo->models[mid].name;
    size_t n = strlen(s);
    int c = memcmp(name.ptr, s, name.len < n ? name.len : n);
    if (c == 0) c = (name.len > n) - (name.len < n);
    if (c == 0) return &repo->models[mid];
    if (c < 0) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return NULL;
}

int ox_repo_find(const ox_repo_t *repo, ox_slice_t name, ox_slice_t version, ox_model_t **out) {
  *out = NULL;
  const ox_repo_entry_t *ent = ox_repo_lookup(repo, name);
  if (!ent) return OX_ENOT_FOUND;
  if (version.len == 0) {
    *out = ent->versions[ent->nver - 1];
    return 0;
  }
  int64_t v;
  if (ox_repo_parse_version(version.ptr, version.len, &v) != 0) return OX_ENOT_FOUND;
  for (size_t i = 0; i < ent->nver; i++) {
    if (ent->versions[i]->version == v) {
      *out = ent->versions[i];
      return 0;
    }
  }
  return OX_ENOT_FOUND;
}

size_t ox_repo_num_models(const ox_repo_t *repo) {
  return repo ? repo->n : 0;
}

const char *ox_repo_model_name(const ox_repo_t *repo, size_t i) {
  return repo && i < repo->n ? repo->models[i].name : NULL;
}

/* Returns the number of loaded versions even when it exceeds max (only max are written). */
size_t ox_repo_versions(const ox_repo_t *repo, ox_slice_t name, int64_t *versions, size_t max) {
  const ox_repo_entry_t *ent = ox_repo_lookup(repo, name);
  if (!ent) return 0;
  for (size_t i = 0; i < ent->nver && i < max; i++) versions[i] = ent->versions[i]->version;
  return ent->nver;
}

/* ---- one model at a time (the model manager, infer/models.c) ---------------------------- */

const char *ox_repo_root(const ox_repo_t *repo) {
  return repo->root;
}

const char *ox_repo_single(const ox_repo_t *repo) {
  return repo->single;
}

void ox_repo_disown(ox_repo_t *repo) {
  for (size_t e = 0; e < repo->n; e++) {
    free(repo->models[e].versions);
    free(repo->models[e].name);
  }
  repo->n = 0;
}

void ox_repo_model_free(ox_model_t *m) {
  ox_rt_model_free(m);
}

int ox_repo_disk_versions(const ox_repo_t *repo, const char *name, int64_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (!ox_repo_valid_name(name, strlen(name))) return OX_EINVALID;
  if (repo->single ? strcmp(name, repo->single) != 0 : !ox_repo_is_dir(repo->root, name))
    return OX_ENOT_FOUND;
  ox_repo_job_t *jobs = NULL;
  size_t njobs = 0, cap = 0;
  int rc = ox_repo_scan_model(repo, name, 0, &jobs, &njobs, &cap);
  if (rc) {
    free(jobs);
    return rc;
  }
  int64_t *vs = calloc(njobs + 1, sizeof *vs);
  if (!vs) {
    free(jobs);
    return OX_ENOMEM;
  }
  for (size_t i = 0; i < njobs; i++) vs[i] = jobs[i].version;
  free(jobs);
  *out = vs;
  *n = njobs;
  return 0;
}

int ox_repo_load_version(const ox_repo_t *repo, const char *name, int64_t version, ox_model_t **out,
                         char *err, size_t errcap) {
  *out = NULL;
  if (!ox_repo_valid_name(name, strlen(name))) {
    snprintf(err, errcap, "invalid model name");
    return OX_EINVALID;
  }
  char *data = NULL, *dir = NULL;
  size_t len = 0;
  int rc = ox_repo_read_model(repo, name, version, &data, &len, &dir, err, errcap);
  if (!rc) rc = ox_rt_model_load(name, version, data, len, dir, out, err, errcap);
  free(data);
  free(dir);
  return rc;
}
