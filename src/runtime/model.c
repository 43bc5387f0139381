/* model.c: one model version = one ORT session plus what onnxd needs to know about its inputs
 * and outputs (names, datatypes, shapes), read once at load.
 *
 * Sessions are created from the model's bytes (CreateSessionFromArray), never from its path:
 * repo.c has already checked where the file really is, and ORT's error messages then cannot
 * carry the path. External weights are looked up in the version directory (session config
 * "session.model_external_initializers_file_folder_path"), after ox_onnx_extdata_check has
 * checked that every external file named by the model lies inside it.
 *
 * Rank: ORT reports 0 dimensions both for a scalar and for a tensor the model gives no shape.
 * The element count tells them apart in ORT >= 1.24 (1 for a scalar, 0 when there is no
 * shape, see OrtApis::GetTensorShapeElementCount); we read rank -1 (unknown) in the second
 * case. ORT < 1.24 reports 1 for both, so there a shapeless tensor reads as rank 0.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "runtime/onnx_extdata.h"
#include "runtime/rt_ort.h"

static const char *ox_rt_onnx_type_name(enum ONNXType t) {
  switch (t) {
    case ONNX_TYPE_TENSOR:
      return "a tensor";
    case ONNX_TYPE_SEQUENCE:
      return "a sequence";
    case ONNX_TYPE_MAP:
      return "a map";
    case ONNX_TYPE_OPAQUE:
      return "an opaque value";
    case ONNX_TYPE_SPARSETENSOR:
      return "a sparse tensor";
    case ONNX_TYPE_OPTIONAL:
      return "an optional";
    default:
      return "a value of unknown kind";
  }
}

/* Fills info (name excepted) from one input's or output's type. kind: "input" or "output". */
static int ox_rt_read_info(const OrtTypeInfo *ti, const char *kind, ox_tensor_info_t *info,
                           char *err, size_t errcap) {
  enum ONNXType ot = ONNX_TYPE_UNKNOWN;
  int rc = ox_ort_status(ox_ort->GetOnnxTypeFromTypeInfo(ti, &ot), NULL, err, errcap);
  if (rc) return rc;
  if (ot != ONNX_TYPE_TENSOR) {
    snprintf(err, errcap, "%s '%s' is %s, not a tensor", kind, info->name,
             ox_rt_onnx_type_name(ot));
    return OX_EINVALID;
  }
  const OrtTensorTypeAndShapeInfo *ts = NULL;
  rc = ox_ort_status(ox_ort->CastTypeInfoToTensorInfo(ti, &ts), NULL, err, errcap);
  if (rc) return rc;
  if (!ts) {
    snprintf(err, errcap, "%s '%s' has no tensor type", kind, info->name);
    return OX_EINVALID;
  }
  ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  size_t nd = 0;
  rc = ox_ort_status(ox_ort->GetTensorElementType(ts, &et), NULL, err, errcap);
  if (!rc) rc = ox_ort_status(ox_ort->GetDimensionsCount(ts, &nd), NULL, err, errcap);
  if (rc) return rc;
  info->dtype = ox_ort_to_dtype(et);
  if (info->dtype == OX_DT_INVALID) {
    snprintf(err, errcap, "%s '%s' has unsupported type %s", kind, info->name,
             ox_ort_elem_name(et));
    return OX_EINVALID;
  }
  if (nd > OX_RT_MAX_RANK) {
    snprintf(err, errcap, "%s '%s' has rank %zu (at most %d supported)", kind, info->name, nd,
             OX_RT_MAX_RANK);
    return OX_EINVALID;
  }
  if (nd == 0) {
    size_t count = 0;
    rc = ox_ort_status(ox_ort->GetTensorShapeElementCount(ts, &count), NULL, err, errcap);
    if (rc) return rc;
    info->rank = count == 0 ? -1 : 0; /* see the file comment */
    return 0;
  }
  rc = ox_ort_status(ox_ort->GetDimensions(ts, info->dims, nd), NULL, err, errcap);
  if (rc) return rc;
  for (size_t i = 0; i < nd; i++)
    if (info->dims[i] < 0) info->dims[i] = -1;
  info->rank = (int)nd;
  return 0;
}

/* Reads the names and types of the session's inputs (is_output 0) or outputs (1). */
static int ox_rt_read_ios(OrtSession *s, int is_output, ox_tensor_info_t **infos_out,
                          const char ***names_out, size_t *n_out, char *err, size_t errcap) {
  const char *kind = is_output ? "output" : "input";
  size_t n = 0;
  int rc = ox_ort_status(
      is_output ? ox_ort->SessionGetOutputCount(s, &n) : ox_ort->SessionGetInputCount(s, &n), NULL,
      err, errcap);
  if (rc) return rc;
  OrtAllocator *alloc = NULL;
  rc = ox_ort_status(ox_ort->GetAllocatorWithDefaultOptions(&alloc), NULL, err, errcap);
  if (rc) return rc;
  /* +1: never a zero-size allocation (a model may have no inputs). */
  ox_tensor_info_t *infos = calloc(n + 1, sizeof *infos);
  const char **names = calloc(n + 1, sizeof *names);
  *infos_out = infos;
  *names_out = names;
  *n_out = 0;
  if (!infos || !names) {
    snprintf(err, errcap, "out of memory");
    return OX_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    char *ort_name = NULL;
    rc = ox_ort_status(is_output ? ox_ort->SessionGetOutputName(s, i, alloc, &ort_name)
                                 : ox_ort->SessionGetInputName(s, i, alloc, &ort_name),
                       NULL, err, errcap);
    if (rc) return rc;
    infos[i].name = strdup(ort_name);
    ox_ort_status(ox_ort->AllocatorFree(alloc, ort_name), NULL, NULL, 0);
    if (!infos[i].name) {
      snprintf(err, errcap, "out of memory");
      return OX_ENOMEM;
    }
    *n_out = i + 1; /* infos[i].name is now owned by the array */
    names[i] = infos[i].name;
    OrtTypeInfo *ti = NULL;
    rc = ox_ort_status(is_output ? ox_ort->SessionGetOutputTypeInfo(s, i, &ti)
                                 : ox_ort->SessionGetInputTypeInfo(s, i, &ti),
                       NULL, err, errcap);
    if (rc) return rc;
    rc = ox_rt_read_info(ti, kind, &infos[i], err, errcap);
    ox_ort->ReleaseTypeInfo(ti);
    if (rc) return rc;
  }
  return 0;
}

static int ox_rt_create_session(const void *data, size_t len, const char *dir, OrtSession **out,
                                char *err, size_t errcap) {
  OrtSessionOptions *so = NULL;
  int rc = ox_ort_status(ox_ort->CreateSessionOptions(&so), NULL, err, errcap);
  if (rc) return rc;
  rc = ox_ort_status(ox_ort->DisablePerSessionThreads(so), NULL, err, errcap);
  if (!rc)
    rc = ox_ort_status(ox_ort->SetSessionGraphOptimizationLevel(so, ORT_ENABLE_ALL), NULL, err,
                       errcap);
  if (!rc)
    rc = ox_ort_status(ox_ort->SetSessionExecutionMode(so, ORT_SEQUENTIAL), NULL, err, errcap);
  if (!rc && dir)
    rc = ox_ort_status(ox_ort->AddSessionConfigEntry(
                           so, "session.model_external_initializers_file_folder_path", dir),
                       NULL, err, errcap);
  if (!rc)
    rc = ox_ort_status(ox_ort->CreateSessionFromArray(ox_ort_env, data, len, so, out), NULL, err,
                       errcap);
  if (!rc) ox_rt_live_add(1);
  ox_ort->ReleaseSessionOptions(so);
  return rc;
}

int ox_rt_model_load(const char *name, int64_t version, const void *data, size_t len,
                     const char *dir, ox_model_t **out, char *err, size_t errcap) {
  *out = NULL;
  if (!ox_rt_ready()) {
    snprintf(err, errcap, "runtime not initialized");
    return OX_ERUNTIME;
  }
  ox_model_t *m = calloc(1, sizeof *m);
  struct ox_model_impl *impl = calloc(1, sizeof *impl);
  if (m) m->impl = impl;
  if (!m || !impl || !(m->name = strdup(name))) {
    ox_rt_model_free(m);
    if (!m) free(impl);
    snprintf(err, errcap, "out of memory");
    return OX_ENOMEM;
  }
  m->version = version;
  /* Every external weight file is checked before ORT may open one (onnx_extdata.h). */
  int rc = ox_onnx_extdata_check(data, len, dir, err, errcap);
  if (!rc) rc = ox_rt_create_session(data, len, dir, &impl->session, err, errcap);
  if (!rc)
    rc = ox_rt_read_ios(impl->session, 0, &m->inputs, &impl->input_names, &m->num_inputs, err,
                        errcap);
  if (!rc)
    rc = ox_rt_read_ios(impl->session, 1, &m->outputs, &impl->output_names, &m->num_outputs, err,
                        errcap);
  if (rc) {
    ox_rt_model_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

void ox_rt_model_free(ox_model_t *m) {
  if (!m) return;
  if (m->impl) {
    if (m->impl->session) {
      ox_ort->ReleaseSession(m->impl->session);
      ox_rt_live_add(-1);
    }
    free(m->impl->input_names);
    free(m->impl->output_names);
    free(m->impl);
  }
  for (size_t i = 0; i < m->num_inputs; i++) free(m->inputs[i].name);
  for (size_t i = 0; i < m->num_outputs; i++) free(m->outputs[i].name);
  free(m->inputs);
  free(m->outputs);
  free(m->name);
  free(m);
}
