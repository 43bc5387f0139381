/* policy_stub.h: the version policy interface l-pbtxt provides in infer/model_config.h, with
 * minimal bodies until its branch is merged (then this file and policy_stub.c go, and the
 * include in infer/models.c switches to infer/model_config.h). */
#ifndef OX_INFER_POLICY_STUB_H
#define OX_INFER_POLICY_STUB_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  int kind; /* 0 latest, 1 all, 2 specific */
  uint32_t num_versions;
  int64_t *versions;
  size_t num_specific;
} ox_version_policy_t;

/* Reads the version policy of repo_dir/<name>/. The stub reads nothing and answers "all"
 * (today's behaviour, which the existing tests rely on); l-pbtxt's reads the config
 * (default latest 1). 0 or OX_EINVALID with reason. */
int ox_version_policy_read(const char *repo_dir, const char *name, const char *override_json,
                           size_t override_len, ox_version_policy_t *p, char *err, size_t errcap);
void ox_version_policy_free(ox_version_policy_t *p);
/* available ascending; writes the chosen ones (ascending) into out (room for n); the count. */
size_t ox_version_policy_select(const ox_version_policy_t *p, const int64_t *available, size_t n,
                                int64_t *out);

#endif
