/* runtime.c: the process-wide ONNX Runtime environment, and the glue every other file of the
 * adapter uses: OrtStatus -> onnxd error, element types <-> datatypes, run controls.
 *
 * One OrtEnv owns the global intra-op and inter-op thread pools; sessions are created with
 * DisablePerSessionThreads so a thousand models still share one pool. ORT's own log lines go
 * through ox_log so the daemon writes one format (ORT warnings -> warn, errors -> error).
 *
 * Error messages from ORT can reach clients (a run that ORT rejects), so they are reduced to
 * one line without file paths; the raw text is logged at debug level only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "runtime/rt_ort.h"

const OrtApi *ox_ort;
OrtEnv *ox_ort_env;
OrtMemoryInfo *ox_ort_cpu;

static long ox_rt_live;

int ox_rt_ready(void) {
  return ox_ort_env != NULL;
}

void ox_rt_live_add(long delta) {
  __atomic_add_fetch(&ox_rt_live, delta, __ATOMIC_RELAXED);
}

long ox_rt_live_objects(void) {
  return __atomic_load_n(&ox_rt_live, __ATOMIC_RELAXED);
}

/* ---- messages -------------------------------------------------------------------------- */

static int ox_rt_is_delim(unsigned char c) {
  return c <= ' ' || c == 0x7f || c == '\'' || c == '"' || c == '`';
}

/* A source location: a token ending in ".cc:123" (also .c .h .hpp .cpp), with or without a
 * directory; ORT puts them in front of many messages. */
static int ox_rt_is_srcloc(const char *p, const char *end) {
  const char *q = end;
  while (q > p && q[-1] >= '0' && q[-1] <= '9') q--;
  if (q == end || q == p || q[-1] != ':') return 0;
  q--; /* at ':' */
  static const char *const exts[] = {".cc", ".c", ".h", ".hpp", ".cpp"};
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    size_t n = strlen(exts[i]);
    if ((size_t)(q - p) > n && memcmp(q - n, exts[i], n) == 0) return 1;
  }
  return 0;
}

char *ox_rt_sanitize_message(char *dst, size_t cap, const char *msg) {
  if (cap == 0) return dst;
  size_t o = 0;
  int token_start = 1; /* the previous byte was a delimiter (or this is the start) */
  const char *p = msg ? msg : "";
  while (*p && o + 1 < cap) {
    unsigned char c = (unsigned char)*p;
    const char *q = p;
    if (token_start)
      while (*q && !ox_rt_is_delim((unsigned char)*q)) q++;
    if (q > p && ox_rt_is_srcloc(p, q)) {
      p = q;
      if (*p == ' ') p++;
      continue;
    }
    if (c == '/' && token_start) {
      static const char repl[] = "<path>";
      for (size_t i = 0; repl[i] && o + 1 < cap; i++) dst[o++] = repl[i];
      p = q;
      token_start = 0;
      continue;
    }
    if (c < 0x20 || c == 0x7f) c = ' ';
    dst[o++] = (char)c;
    token_start = ox_rt_is_delim(c) || c == '(' || c == '[' || c == '=' || c == ':' || c == ',';
    p++;
  }
  /* Drop trailing spaces left by removed locations or newlines. */
  while (o > 0 && dst[o - 1] == ' ') o--;
  dst[o] = '\0';
  return dst;
}

int ox_ort_status(OrtStatus *st, const char *what, char *err, size_t errcap) {
  if (!st) return 0;
  OrtErrorCode code = ox_ort->GetErrorCode(st);
  const char *msg = ox_ort->GetErrorMessage(st);
  if (!msg) msg = "unknown error";
  ox_debug("onnxruntime error %d%s%s: %s", (int)code, what ? " in " : "", what ? what : "", msg);
  int rc = OX_ERUNTIME;
  if (code == ORT_INVALID_ARGUMENT) {
    rc = OX_EINVALID;
  } else if (strstr(msg, "bad_alloc") || strstr(msg, "Failed to allocate memory")) {
    rc = OX_ENOMEM;
  }
  if (err && errcap) {
    int n = snprintf(err, errcap, "%s%s", what ? what : "", what ? ": " : "");
    if (n < 0) n = 0;
    if ((size_t)n < errcap) ox_rt_sanitize_message(err + n, errcap - (size_t)n, msg);
  }
  ox_ort->ReleaseStatus(st);
  return rc;
}

/* ---- datatypes ------------------------------------------------------------------------- */

static const struct {
  ONNXTensorElementDataType ort;
  ox_dtype_t dt;
} ox_ort_dtypes[] = {
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL, OX_DT_BOOL},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, OX_DT_UINT8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16, OX_DT_UINT16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32, OX_DT_UINT32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64, OX_DT_UINT64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8, OX_DT_INT8},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16, OX_DT_INT16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, OX_DT_INT32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, OX_DT_INT64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, OX_DT_FP16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16, OX_DT_BF16},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, OX_DT_FP32},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, OX_DT_FP64},
    {ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING, OX_DT_BYTES},
};
#define OX_ORT_NDTYPES (sizeof ox_ort_dtypes / sizeof ox_ort_dtypes[0])

ox_dtype_t ox_ort_to_dtype(ONNXTensorElementDataType t) {
  for (size_t i = 0; i < OX_ORT_NDTYPES; i++)
    if (ox_ort_dtypes[i].ort == t) return ox_ort_dtypes[i].dt;
  return OX_DT_INVALID;
}

ONNXTensorElementDataType ox_ort_from_dtype(ox_dtype_t dt) {
  for (size_t i = 0; i < OX_ORT_NDTYPES; i++)
    if (ox_ort_dtypes[i].dt == dt) return ox_ort_dtypes[i].ort;
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

const char *ox_ort_elem_name(ONNXTensorElementDataType t) {
  /* Indexed by ONNX's TensorProto.DataType numbers, which ORT's enum follows; the library may
   * be newer than the header, hence the entries past INT4. */
  static const char *const names[] = {
      "undefined",      "float",      "uint8",          "int8",       "uint16",   "int16",
      "int32",          "int64",      "string",         "bool",       "float16",  "double",
      "uint32",         "uint64",     "complex64",      "complex128", "bfloat16", "float8e4m3fn",
      "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "uint4",      "int4",     "float4e2m1",
      "float8e8m0",     "uint2",      "int2",
  };
  if ((unsigned)t < sizeof names / sizeof names[0]) return names[t];
  return "unknown";
}

/* ---- environment ----------------------------------------------------------------------- */

/* ORT's log sink. Lines are sanitized like error messages: ORT appends source locations (paths
 * in its build tree) and newlines. ORT logs session-creation failures at ERROR although onnxd
 * handles them (the version is skipped, with a warning of its own), so ERROR maps to warn and
 * only FATAL to error. */
static void ORT_API_CALL ox_ort_log(void *param, OrtLoggingLevel severity, const char *category,
                                    const char *logid, const char *code_location,
                                    const char *message) {
  char line[1024];
  ox_rt_sanitize_message(line, sizeof line, message);
  if (severity >= ORT_LOGGING_LEVEL_FATAL) {
    ox_error("onnxruntime: %s", line);
  } else if (severity >= ORT_LOGGING_LEVEL_WARNING) {
    ox_warn("onnxruntime: %s", line);
  } else {
    ox_debug("onnxruntime: %s", line);
  }
}

int ox_runtime_init(const ox_runtime_opts_t *opts, char *err, size_t errcap) {
  if (ox_ort_env) {
    snprintf(err, errcap, "runtime already initialized");
    return OX_EINVALID;
  }
  ox_runtime_opts_t o = opts ? *opts : (ox_runtime_opts_t){1, 1, 0};
  if (o.intra_op_threads < 1 || o.inter_op_threads < 1) {
    snprintf(err, errcap, "thread pool sizes must be >= 1 (intra-op %d, inter-op %d)",
             o.intra_op_threads, o.inter_op_threads);
    return OX_EINVALID;
  }
  /* ONNX Runtime 1.30's Linux build starts telemetry with its environment: a device id and a
   * database under $HOME/.cache/Microsoft, a log file in /tmp and an HTTPS uploader. A server
   * on a private network does none of that: always off (the variable before the environment
   * exists, DisableTelemetryEvents after). Called before any other thread exists, so setenv is
   * safe here. */
  setenv("ORT_DISABLE_TELEMETRY", "1", 1);
  const OrtApiBase *base = ox_ort_api_base(err, errcap);
  if (!base) return OX_ERUNTIME;
  /* ORT's release 1.N provides C API versions up to N: a header newer than the library would
   * ask for functions the library lacks. GetApi refuses that too; this names the versions. */
  const char *libver = base->GetVersionString();
  int libapi = ox_ort_version_api(libver);
  const OrtApi *api =
      libapi < 0 || libapi >= ORT_API_VERSION ? base->GetApi(ORT_API_VERSION) : NULL;
  if (!api) {
    snprintf(err, errcap,
             "ONNX Runtime %s does not provide C API version %d (onnxd's header; the library "
             "must be 1.%d or newer)",
             libver, ORT_API_VERSION, ORT_API_VERSION);
    return OX_ERUNTIME;
  }
  ox_ort = api;

  OrtThreadingOptions *tp = NULL;
  OrtEnv *env = NULL;
  OrtMemoryInfo *cpu = NULL;
  int rc = ox_ort_status(api->CreateThreadingOptions(&tp), "threading options", err, errcap);
  if (!rc)
    rc = ox_ort_status(api->SetGlobalIntraOpNumThreads(tp, o.intra_op_threads), "intra-op threads",
                       err, errcap);
  if (!rc)
    rc = ox_ort_status(api->SetGlobalInterOpNumThreads(tp, o.inter_op_threads), "inter-op threads",
                       err, errcap);
  if (!rc)
    rc = ox_ort_status(api->SetGlobalSpinControl(tp, o.allow_spinning ? 1 : 0), "spin control", err,
                       errcap);
  /* Denormals are left as the model computes them (no SetGlobalDenormalAsZero): results must
   * match the reference runtime bit for bit in the conformance tests. */
  if (!rc)
    rc = ox_ort_status(api->CreateEnvWithCustomLoggerAndGlobalThreadPools(
                           ox_ort_log, NULL, ORT_LOGGING_LEVEL_WARNING, "onnxd", tp, &env),
                       "environment", err, errcap);
  if (!rc) rc = ox_ort_status(api->DisableTelemetryEvents(env), "telemetry", err, errcap);
  if (!rc)
    rc = ox_ort_status(api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu),
                       "memory info", err, errcap);
  if (tp) api->ReleaseThreadingOptions(tp);
  if (rc) {
    if (cpu) api->ReleaseMemoryInfo(cpu);
    if (env) api->ReleaseEnv(env);
    ox_ort = NULL;
    return rc;
  }
  ox_ort_env = env;
  ox_ort_cpu = cpu;
  ox_info("onnxruntime %s (header API %d, %s): %d intra-op, %d inter-op threads, spinning %s",
          libver, ORT_API_VERSION, ox_ort_origin(), o.intra_op_threads, o.inter_op_threads,
          o.allow_spinning ? "on" : "off");
  return 0;
}

void ox_runtime_shutdown(void) {
  if (!ox_ort_env) return;
  ox_ort->ReleaseMemoryInfo(ox_ort_cpu);
  ox_ort->ReleaseEnv(ox_ort_env);
  ox_ort_cpu = NULL;
  ox_ort_env = NULL;
  ox_ort = NULL;
}

const char *ox_runtime_version(void) {
  const OrtApiBase *base = ox_ort_api_base(NULL, 0);
  return base ? base->GetVersionString() : "unavailable";
}

int ox_ort_version_api(const char *v) {
  if (!v || v[0] != '1' || v[1] != '.') return -1;
  int n = 0, digits = 0;
  for (const char *p = v + 2; *p >= '0' && *p <= '9'; p++, digits++) {
    if (digits == 6) return -1; /* no API version has more; also keeps n from overflowing */
    n = n * 10 + (*p - '0');
  }
  if (!digits || (v[2 + digits] != '\0' && v[2 + digits] != '.' && v[2 + digits] != '-' &&
                  v[2 + digits] != '+'))
    return -1;
  return n;
}

int ox_runtime_header_api(void) {
  return ORT_API_VERSION;
}

/* ---- run controls ---------------------------------------------------------------------- */

ox_run_ctl_t *ox_run_ctl_create(void) {
  if (!ox_ort) return NULL;
  ox_run_ctl_t *ctl = calloc(1, sizeof *ctl);
  if (!ctl) return NULL;
  if (ox_ort_status(ox_ort->CreateRunOptions(&ctl->opts), "run options", NULL, 0)) {
    free(ctl);
    return NULL;
  }
  ox_rt_live_add(1);
  return ctl;
}

void ox_run_ctl_terminate(ox_run_ctl_t *ctl) {
  if (ctl) ox_ort_status(ox_ort->RunOptionsSetTerminate(ctl->opts), "terminate", NULL, 0);
}

void ox_run_ctl_destroy(ox_run_ctl_t *ctl) {
  if (!ctl) return;
  ox_ort->ReleaseRunOptions(ctl->opts);
  ox_rt_live_add(-1);
  free(ctl);
}
