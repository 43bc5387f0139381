/* run.c: one inference on an ORT session, and the outputs it hands back.
 *
 * Inputs are wrapped zero-copy (CreateTensorWithDataAsOrtValue) except BYTES, which ORT keeps
 * as std::string and must copy. Outputs are allocated by ORT (its CPU arena) and handed to the
 * caller without a copy; the OrtValue is released by ox_tensor_out_release. Two exceptions:
 * BYTES outputs are copied into one malloc'd block (slices + bytes) so the caller gets plain
 * slices, and an output whose memory lies inside an input buffer (ORT may hand a graph input
 * straight back as an output) is copied, because input buffers are the caller's and only
 * valid until the run returns.
 *
 * Everything here is safe to run concurrently on one session; nothing is shared but the
 * session and the read-only name arrays prepared at load.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "runtime/rt_ort.h"

/* ORT needs a non-NULL pointer even for zero bytes; also the data of empty outputs. */
static const int64_t ox_rt_empty[1];
static ox_slice_t ox_rt_empty_strings[1];

/* Every OrtValue onnxd holds goes through these two, for ox_rt_live_objects. */
static void ox_rt_value_got(const OrtValue *v) {
  if (v) ox_rt_live_add(1);
}

static void ox_rt_value_release(OrtValue *v) {
  if (!v) return;
  ox_ort->ReleaseValue(v);
  ox_rt_live_add(-1);
}

/* Above this many inputs + outputs the pointer arrays come from malloc instead of the stack. */
#define OX_RT_STACK_VALUES 32

static int ox_rt_make_input(const ox_tensor_in_t *in, OrtAllocator *alloc, OrtValue **out,
                            char *err, size_t errcap) {
  const int64_t *shape = in->rank > 0 ? in->shape : ox_rt_empty;
  ONNXTensorElementDataType et = ox_ort_from_dtype(in->dtype);
  if (in->dtype != OX_DT_BYTES) {
    void *data = in->nbytes ? (void *)in->data : (void *)ox_rt_empty; /* ORT does not write */
    int rc = ox_ort_status(ox_ort->CreateTensorWithDataAsOrtValue(ox_ort_cpu, data, in->nbytes,
                                                                  shape, (size_t)in->rank, et, out),
                           NULL, err, errcap);
    if (!rc) ox_rt_value_got(*out);
    return rc;
  }
  int rc = ox_ort_status(ox_ort->CreateTensorAsOrtValue(alloc, shape, (size_t)in->rank, et, out),
                         NULL, err, errcap);
  if (!rc) ox_rt_value_got(*out);
  for (uint64_t i = 0; !rc && i < in->count; i++) {
    char *buf = NULL;
    const ox_slice_t *s = &in->strings[i];
    rc = ox_ort_status(ox_ort->GetResizedStringTensorElementBuffer(*out, (size_t)i, s->len, &buf),
                       NULL, err, errcap);
    if (!rc && s->len) memcpy(buf, s->ptr, s->len);
  }
  if (rc && *out) {
    ox_rt_value_release(*out);
    *out = NULL;
  }
  return rc;
}

/* Copies a string tensor into one block: count slices followed by the bytes. */
static int ox_rt_take_strings(OrtValue *v, ox_tensor_out_t *o, char *err, size_t errcap) {
  if (o->count == 0) {
    o->strings = ox_rt_empty_strings;
    return 0;
  }
  size_t total = 0, slices = 0, size = 0;
  int rc = ox_ort_status(ox_ort->GetStringTensorDataLength(v, &total), NULL, err, errcap);
  if (rc) return rc;
  if (o->count > SIZE_MAX ||
      __builtin_mul_overflow((size_t)o->count, sizeof(ox_slice_t), &slices) ||
      __builtin_add_overflow(slices, total, &size)) {
    snprintf(err, errcap, "string output too large");
    return OX_ENOMEM;
  }
  char *block = malloc(size ? size : 1);
  size_t *offsets = malloc((size_t)o->count * sizeof *offsets); /* fits: checked above */
  if (!block || !offsets) {
    free(block);
    free(offsets);
    snprintf(err, errcap, "out of memory");
    return OX_ENOMEM;
  }
  ox_slice_t *sl = (ox_slice_t *)(void *)block;
  char *bytes = block + slices;
  rc = ox_ort_status(ox_ort->GetStringTensorContent(v, bytes, total, offsets, (size_t)o->count),
                     NULL, err, errcap);
  if (rc) {
    free(block);
    free(offsets);
    return rc;
  }
  for (size_t i = 0; i < o->count; i++) {
    size_t end = i + 1 < o->count ? offsets[i + 1] : total;
    sl[i] = ox_slice(bytes + offsets[i], end - offsets[i]);
  }
  free(offsets);
  o->strings = sl;
  o->strblock_ = block;
  return 0;
}

/* Fills o from ORT's output v. Takes v in every case (kept in o->value_ or released). */
static int ox_rt_take_output(OrtValue *v, const ox_tensor_in_t *inputs, size_t n_in,
                             ox_tensor_out_t *o, char *err, size_t errcap) {
  if (!v) { /* an optional output the graph did not produce */
    snprintf(err, errcap, "output not produced by the model");
    return OX_ERUNTIME;
  }
  OrtTensorTypeAndShapeInfo *ts = NULL;
  ONNXTensorElementDataType et = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  size_t nd = 0, count = 0;
  int rc = ox_ort_status(ox_ort->GetTensorTypeAndShape(v, &ts), NULL, err, errcap);
  if (!rc) rc = ox_ort_status(ox_ort->GetTensorElementType(ts, &et), NULL, err, errcap);
  if (!rc) rc = ox_ort_status(ox_ort->GetDimensionsCount(ts, &nd), NULL, err, errcap);
  if (!rc && nd > OX_RT_MAX_RANK) {
    snprintf(err, errcap, "output has rank %zu (at most %d supported)", nd, OX_RT_MAX_RANK);
    rc = OX_ERUNTIME;
  }
  if (!rc) rc = ox_ort_status(ox_ort->GetDimensions(ts, o->shape, nd), NULL, err, errcap);
  if (!rc) rc = ox_ort_status(ox_ort->GetTensorShapeElementCount(ts, &count), NULL, err, errcap);
  if (ts) ox_ort->ReleaseTensorTypeAndShapeInfo(ts);
  o->dtype = ox_ort_to_dtype(et);
  if (!rc && o->dtype == OX_DT_INVALID) {
    snprintf(err, errcap, "output has unsupported type %s", ox_ort_elem_name(et));
    rc = OX_ERUNTIME;
  }
  if (rc) {
    ox_rt_value_release(v);
    return rc;
  }
  o->rank = (int)nd;
  o->count = count;
  if (o->dtype == OX_DT_BYTES) {
    rc = ox_rt_take_strings(v, o, err, errcap);
    ox_rt_value_release(v);
    return rc;
  }
  void *data = NULL;
  rc = ox_ort_status(ox_ort->GetTensorMutableData(v, &data), NULL, err, errcap);
  if (!rc && __builtin_mul_overflow(count, ox_dtype_size(o->dtype), &o->nbytes)) {
    snprintf(err, errcap, "output too large");
    rc = OX_ERUNTIME;
  }
  if (rc) {
    ox_rt_value_release(v);
    return rc;
  }
  if (!data || o->nbytes == 0) {
    o->data = ox_rt_empty;
    o->value_ = v;
    return 0;
  }
  uintptr_t p = (uintptr_t)data; /* integers: the buffers are unrelated objects */
  for (size_t i = 0; i < n_in; i++) {
    uintptr_t b = (uintptr_t)inputs[i].data;
    if (inputs[i].dtype == OX_DT_BYTES || !b || inputs[i].nbytes == 0) continue;
    if (p + o->nbytes > b && p < b + inputs[i].nbytes) { /* aliases caller memory: copy */
      void *copy = malloc(o->nbytes);
      if (!copy) {
        ox_rt_value_release(v);
        snprintf(err, errcap, "out of memory");
        return OX_ENOMEM;
      }
      memcpy(copy, data, o->nbytes);
      ox_rt_value_release(v);
      o->data = copy;
      o->strblock_ = copy;
      return 0;
    }
  }
  o->data = data;
  o->value_ = v;
  return 0;
}

static int ox_rt_check_args(const ox_model_t *m, const ox_tensor_in_t *inputs,
                            const size_t *out_idx, size_t n_out, char *err, size_t errcap) {
  if (n_out == 0) {
    snprintf(err, errcap, "no outputs requested");
    return OX_EINVALID;
  }
  for (size_t i = 0; i < n_out; i++) {
    if (out_idx[i] >= m->num_outputs) {
      snprintf(err, errcap, "output index %zu out of range", out_idx[i]);
      return OX_EINVALID;
    }
  }
  for (size_t i = 0; i < m->num_inputs; i++) {
    const ox_tensor_in_t *in = &inputs[i];
    const char *name = m->inputs[i].name;
    if (in->dtype != m->inputs[i].dtype) {
      snprintf(err, errcap, "input '%s': datatype %s, model expects %s", name,
               ox_dtype_name(in->dtype), ox_dtype_name(m->inputs[i].dtype));
      return OX_EINVALID;
    }
    if (in->rank < 0 || in->rank > OX_RT_MAX_RANK || (in->rank > 0 && !in->shape)) {
      snprintf(err, errcap, "input '%s': invalid rank %d", name, in->rank);
      return OX_EINVALID;
    }
    if (in->dtype == OX_DT_BYTES ? (in->count && !in->strings) : (in->nbytes && !in->data)) {
      snprintf(err, errcap, "input '%s': no data", name);
      return OX_EINVALID;
    }
  }
  return 0;
}

int ox_model_run(ox_model_t *m, const ox_tensor_in_t *inputs, const size_t *out_idx, size_t n_out,
                 ox_tensor_out_t *outs, ox_run_ctl_t *ctl, char *err, size_t errcap) {
  if (n_out) memset(outs, 0, n_out * sizeof *outs);
  int rc = ox_rt_check_args(m, inputs, out_idx, n_out, err, errcap);
  if (rc) return rc;

  /* in_vals[num_inputs], out_vals[n_out], out_names[n_out] */
  size_t n_in = m->num_inputs, nptr = n_in + 2 * n_out;
  void *stack[OX_RT_STACK_VALUES];
  void **ptrs = stack;
  if (nptr > OX_RT_STACK_VALUES) {
    ptrs = calloc(nptr, sizeof *ptrs);
    if (!ptrs) {
      snprintf(err, errcap, "out of memory");
      return OX_ENOMEM;
    }
  } else {
    memset(stack, 0, sizeof stack);
  }
  OrtValue **in_vals = (OrtValue **)ptrs;
  OrtValue **out_vals = (OrtValue **)ptrs + n_in;
  const char **out_names = (const char **)(ptrs + n_in + n_out);
  for (size_t i = 0; i < n_out; i++) out_names[i] = m->impl->output_names[out_idx[i]];

  OrtAllocator *alloc = NULL;
  rc = ox_ort_status(ox_ort->GetAllocatorWithDefaultOptions(&alloc), NULL, err, errcap);
  for (size_t i = 0; !rc && i < n_in; i++)
    rc = ox_rt_make_input(&inputs[i], alloc, &in_vals[i], err, errcap);
  if (!rc)
    rc = ox_ort_status(
        ox_ort->Run(m->impl->session, ctl ? ctl->opts : NULL, m->impl->input_names,
                    (const OrtValue *const *)in_vals, n_in, out_names, n_out, out_vals),
        NULL, err, errcap);
  for (size_t i = 0; i < n_out; i++) ox_rt_value_got(out_vals[i]); /* NULL unless Run filled it */
  for (size_t i = 0; i < n_in; i++) ox_rt_value_release(in_vals[i]);

  size_t done = 0;
  for (; !rc && done < n_out; done++) {
    rc = ox_rt_take_output(out_vals[done], inputs, n_in, &outs[done], err, errcap);
    out_vals[done] = NULL; /* taken */
  }
  if (rc) {
    for (size_t i = 0; i < n_out; i++) {
      ox_rt_value_release(out_vals[i]);
      ox_tensor_out_release(&outs[i]);
    }
  }
  if (ptrs != stack) free(ptrs);
  return rc;
}

void ox_tensor_out_release(ox_tensor_out_t *out) {
  if (!out) return;
  ox_rt_value_release(out->value_);
  free(out->strblock_);
  memset(out, 0, sizeof *out);
}
