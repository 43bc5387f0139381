/* models.c: the server's per-model-version state: configuration, scheduler, statistics and
 * warm-up, created once after the repository is loaded and freed at shutdown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "server/server.h"

int ox_server_models_init(ox_server_t *s) {
  size_t nm = ox_repo_num_models(s->repo), total = 0;
  for (size_t i = 0; i < nm; i++) {
    const char *name = ox_repo_model_name(s->repo, i);
    total += ox_repo_versions(s->repo, ox_slice(name, strlen(name)), NULL, 0);
  }
  s->models = calloc(total + 1, sizeof *s->models);
  if (!s->models) return OX_ENOMEM;
  for (size_t i = 0; i < nm; i++) {
    const char *name = ox_repo_model_name(s->repo, i);
    ox_slice_t sn = ox_slice(name, strlen(name));
    size_t nv = ox_repo_versions(s->repo, sn, NULL, 0);
    int64_t *vs = calloc(nv + 1, sizeof *vs);
    if (!vs) return OX_ENOMEM;
    ox_repo_versions(s->repo, sn, vs, nv);
    for (size_t k = 0; k < nv; k++) {
      char vbuf[24];
      int vl = snprintf(vbuf, sizeof vbuf, "%lld", (long long)vs[k]);
      ox_model_t *m = NULL;
      if (ox_repo_find(s->repo, sn, ox_slice(vbuf, (size_t)vl), &m) != 0) continue;
      ox_model_state_t *st = calloc(1, sizeof *st);
      if (!st) {
        free(vs);
        return OX_ENOMEM;
      }
      m->app = st;
      s->models[s->num_models++] = m;
      char err[256] = "";
      int rc = ox_model_config_load(s->repo_dir, m, s->infer_threads, &st->cfg, err, sizeof err);
      if (rc == OX_ENOMEM) {
        free(vs);
        return rc;
      }
      if (!rc) rc = ox_model_config_warmup(s->repo_dir, m, &st->cfg, err, sizeof err);
      if (rc) {
        st->unavailable = 1;
        snprintf(st->reason, sizeof st->reason, "%s", err);
        ox_warn("model '%s' version %lld is not available: %s", m->name, (long long)m->version, err);
      }
      if (ox_batcher_create(m, &st->cfg.sched, s->pool, &st->batcher)) {
        free(vs);
        return OX_ENOMEM;
      }
      if (st->cfg.from_file || st->cfg.num_warmup)
        ox_info("model '%s' version %lld: max_batch_size %u, delay %llu us, %u instances%s",
                m->name, (long long)m->version, st->cfg.sched.max_batch_size,
                (unsigned long long)st->cfg.sched.max_queue_delay_us, st->cfg.sched.instance_count,
                st->cfg.num_warmup ? ", warmed up" : "");
    }
    free(vs);
  }
  return 0;
}

void ox_server_models_free(ox_server_t *s) {
  for (size_t i = 0; i < s->num_models; i++) {
    ox_model_state_t *st = s->models[i]->app;
    if (!st) continue;
    ox_batcher_destroy(st->batcher);
    ox_model_config_free(&st->cfg);
    free(st);
    s->models[i]->app = NULL;
  }
  free(s->models);
  s->models = NULL;
  s->num_models = 0;
}

void ox_server_terminate_runs(ox_server_t *s) {
  for (size_t i = 0; i < s->num_models; i++) {
    ox_model_state_t *st = s->models[i]->app;
    if (st && st->batcher) ox_batcher_terminate_runs(st->batcher);
  }
}

int ox_server_needs_features(const ox_server_t *s) {
  for (size_t i = 0; i < s->num_models; i++) {
    const ox_model_state_t *st = s->models[i]->app;
    if (st && !st->unavailable && st->cfg.view.enabled) return 1;
  }
  return 0;
}
