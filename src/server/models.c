/* models.c: the server's per-model-version state: configuration, scheduler, statistics and
 * warm-up, created once after the repository is loaded and freed at shutdown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "runtime/runtime.h"
#include "server/server.h"

/* xorshift64*: deterministic warm-up data. */
static uint64_t rnd_next(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

/* Runs the warm-up requests of cfg (config.json's "model_warmup") on m, each `count` times,
 * inputs from zeros, deterministic random data or the files in the model's warmup/ folder.
 * 0, or an error with a reason in err. */
static int run_warmup(const char *repo_dir, ox_model_t *m, const ox_model_config_t *cfg, char *err,
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
        snprintf(path, sizeof path, "%s/%s/warmup/%s", repo_dir, m->name, wi->file);
        FILE *f = fopen(path, "rb");
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
      if (!rc) rc = run_warmup(s->repo_dir, m, &st->cfg, err, sizeof err);
      if (rc) {
        st->unavailable = 1;
        snprintf(st->reason, sizeof st->reason, "%s", err);
        ox_warn("model '%s' version %lld is not available: %s", m->name, (long long)m->version,
                err);
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
