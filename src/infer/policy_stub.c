/* policy_stub.c: see policy_stub.h (deleted when l-pbtxt's model_config.c is merged). */
#include "infer/policy_stub.h"

#include <stdlib.h>

int ox_version_policy_read(const char *repo_dir, const char *name, const char *override_json,
                           size_t override_len, ox_version_policy_t *p, char *err, size_t errcap) {
  (void)repo_dir, (void)name, (void)override_json, (void)override_len, (void)err, (void)errcap;
  *p = (ox_version_policy_t){.kind = 1};
  return 0;
}

void ox_version_policy_free(ox_version_policy_t *p) {
  free(p->versions);
  p->versions = NULL;
}

size_t ox_version_policy_select(const ox_version_policy_t *p, const int64_t *available, size_t n,
                                int64_t *out) {
  size_t k = 0;
  if (p->kind == 0) {
    size_t keep = p->num_versions < n ? p->num_versions : n;
    for (size_t i = n - keep; i < n; i++) out[k++] = available[i];
  } else if (p->kind == 1) {
    for (size_t i = 0; i < n; i++) out[k++] = available[i];
  } else {
    for (size_t i = 0; i < n; i++)
      for (size_t j = 0; j < p->num_specific; j++)
        if (available[i] == p->versions[j]) {
          out[k++] = available[i];
          break;
        }
  }
  return k;
}
