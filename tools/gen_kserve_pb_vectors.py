#!/usr/bin/env python3
"""gen_kserve_pb_vectors.py: serializes inference messages with tritonclient's own protobuf
classes (tritonclient.grpc.service_pb2, package `inference`), the reference onnxd's hand-written
codec (src/proto/kserve_pb.c) is checked against.

Usage: gen_kserve_pb_vectors.py [REPO_ROOT]

Writes
  tests/unit/kserve_pb_vectors.h        C arrays: each request's bytes with what decoding must
                                        give (every input's binary form computed here with
                                        numpy), and each response's fields with the bytes
                                        protobuf's deterministic serializer writes for them
  tests/fuzz/corpus/fuzz_kserve_pb/py_*  the request bytes, as fuzz seeds

Run it again (with the venv's python) after changing the vectors; the outputs are committed.
"""
import os
import struct
import sys

import numpy as np
from tritonclient.grpc import service_pb2 as pb

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")

# datatype -> numpy dtype (BOOL as numpy bool, FP16 as float16; BF16 only raw, as uint16 bits)
NP = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "BF16": np.uint16, "FP32": np.float32,
    "FP64": np.float64,
}
# datatype -> InferTensorContents field for typed contents
TYPED = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
# Values that reach each type's edges.
VALUES = {
    "BOOL": [True, False, True, True],
    "UINT8": [0, 1, 127, 255], "UINT16": [0, 1, 32768, 65535],
    "UINT32": [0, 1, 2**31, 2**32 - 1], "UINT64": [0, 1, 2**63, 2**64 - 1],
    "INT8": [-128, -1, 0, 127], "INT16": [-32768, -1, 0, 32767],
    "INT32": [-2**31, -1, 0, 2**31 - 1], "INT64": [-2**63, -1, 0, 2**63 - 1],
    "FP16": [0.5, -2.0, 65504.0, 0.0], "BF16": [0x3f80, 0xbf80, 0x7f80, 0],
    "FP32": [1.5, -2.25, 3.0e38, 1e-45], "FP64": [1.5, -2.25, 1.7e308, 5e-324],
    "BYTES": [b"", b"a", b"\x00\xff", "h\u00e9llo".encode()],
}


def binary_form(dt, vals):
    """The binary extension's form of the values: what ox_infer_input_t.binary must hold."""
    if dt == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in vals)
    return np.array(vals, dtype=NP[dt]).astype(np.dtype(NP[dt]).newbyteorder("<")).tobytes()


def set_param(p, v):
    if isinstance(v, bool):
        p.bool_param = v
    elif isinstance(v, int):
        if v >= 2**63:
            p.uint64_param = v
        else:
            p.int64_param = v
    elif isinstance(v, float):
        p.double_param = v
    else:
        p.string_param = v


def param_text(v):
    if isinstance(v, bool):
        return "BOOL", "true" if v else "false"
    if isinstance(v, int):
        return "NUMBER", str(v)
    if isinstance(v, float):
        return "NUMBER", "%.17g" % v
    return "STRING", v


DTYPES = list(VALUES)


def requests():
    """(label, ModelInferRequest, [(name, dt, shape, binary)], outputs, params)"""
    out = []
    # 1: every datatype as raw_input_contents, request parameters of each kind.
    r = pb.ModelInferRequest(model_name="identity", model_version="2", id="req-raw")
    ins = []
    for i, dt in enumerate(DTYPES):
        t = r.inputs.add(name="in_%s" % dt.lower(), datatype=dt, shape=[2, 2])
        b = binary_form(dt, VALUES[dt])
        r.raw_input_contents.append(b)
        ins.append((t.name, dt, [2, 2], b))
    params = [("flag", True), ("count", -7), ("big", 2**64 - 1), ("ratio", 0.1),
              ("tag", "caf\u00e9"), ("timeout", 1500)]
    for k, v in params:
        set_param(r.parameters[k], v)
    r.outputs.add(name="out_a")
    r.outputs.add(name="out_b")
    out.append(("raw_all", r, ins, ["out_a", "out_b"], params))
    # 2: every datatype that has one as typed contents (packed, as proto3 writes).
    r = pb.ModelInferRequest(model_name="identity")
    ins = []
    for dt in DTYPES:
        if dt not in TYPED:
            continue
        t = r.inputs.add(name="t_%s" % dt.lower(), datatype=dt, shape=[4])
        getattr(t.contents, TYPED[dt]).extend(VALUES[dt])
        ins.append((t.name, dt, [4], binary_form(dt, VALUES[dt])))
    out.append(("typed_all", r, ins, [], []))
    # 3: a scalar and an empty tensor, raw.
    r = pb.ModelInferRequest(model_name="m")
    r.inputs.add(name="s", datatype="FP32", shape=[])
    r.raw_input_contents.append(binary_form("FP32", [42.0]))
    r.inputs.add(name="e", datatype="INT64", shape=[0, 3])
    r.raw_input_contents.append(b"")
    out.append(("scalar_empty", r,
                [("s", "FP32", [], binary_form("FP32", [42.0])), ("e", "INT64", [0, 3], b"")],
                [], []))
    # 4: BYTES typed, multidimensional.
    r = pb.ModelInferRequest(model_name="strings", id="b")
    t = r.inputs.add(name="text", datatype="BYTES", shape=[2, 3])
    vals = [b"one", b"", b"three", b"\xff\x00", b"x" * 300, b"six"]
    t.contents.bytes_contents.extend(vals)
    out.append(("bytes_typed", r, [("text", "BYTES", [2, 3], binary_form("BYTES", vals))],
                [], []))
    return out


def responses():
    """(label, ModelInferResponse, outputs [(name, dt, shape, bytes)], params [(k, v)])"""
    outs = [("OUTPUT0", "FP32", [1, 3], binary_form("FP32", [1.0, -2.5, 3.25])),
            ("OUTPUT1", "INT64", [3], binary_form("INT64", [-1, 0, 2**40])),
            ("OUTPUT2", "BYTES", [2], binary_form("BYTES", [b"hi", b""])),
            ("scalar", "FP64", [], binary_form("FP64", [2.5])),
            ("empty", "UINT8", [0], b"")]
    params = [("a_bool", True), ("b_num", -3), ("c_str", "x\u00e9")]  # sorted: deterministic
    r = pb.ModelInferResponse(model_name="identity", model_version="1", id="req-7")
    for k, v in params:
        set_param(r.parameters[k], v)
    for name, dt, shape, b in outs:
        r.outputs.add(name=name, datatype=dt, shape=shape)
        r.raw_output_contents.append(b)
    res = [("full", r, outs, params)]
    r = pb.ModelInferResponse(model_name="m")
    r.outputs.add(name="y", datatype="FP32", shape=[2])
    r.raw_output_contents.append(binary_form("FP32", [0.5, 0.25]))
    res.append(("minimal", r, [("y", "FP32", [2], binary_form("FP32", [0.5, 0.25]))], []))
    return res


def c_bytes(b):
    if not b:
        return "(const unsigned char *)\"\""
    return "(const unsigned char[]){" + ",".join(str(x) for x in b) + "}"


def c_str(s):
    if isinstance(s, str):
        s = s.encode()
    return '"' + "".join(chr(c) if 32 <= c < 127 and chr(c) not in '"\\?' else "\\%03o" % c
                         for c in s) + '"'


def c_shape(shape):
    return "{" + ",".join(str(x) for x in shape) + "}" if shape else "{0}"


def main():
    corpus = os.path.join(ROOT, "tests/fuzz/corpus/fuzz_kserve_pb")
    os.makedirs(corpus, exist_ok=True)
    L = ["/* kserve_pb_vectors.h: generated by tools/gen_kserve_pb_vectors.py from tritonclient's",
         " * protobuf classes; do not edit. Requests: the bytes and what decoding them must give.",
         " * Responses: the fields and the bytes protobuf serializes them to (deterministic). */",
         "/* clang-format off */",
         "#include <stddef.h>", "#include <stdint.h>", "",
         "typedef struct { const char *name, *dtype; int rank; int64_t shape[4];",
         "  const unsigned char *bin; size_t bin_len; } kv_tensor_t;",
         "typedef struct { const char *key, *kind, *text; } kv_param_t;",
         "typedef struct { const char *label; const unsigned char *msg; size_t len;",
         "  const char *model, *version, *id; const kv_tensor_t *inputs; size_t num_inputs;",
         "  const char *const *outputs; size_t num_outputs; const kv_param_t *params;",
         "  size_t num_params; } kv_request_t;",
         "typedef struct { const char *label, *model, *version, *id; const kv_tensor_t *outputs;",
         "  size_t num_outputs; const kv_param_t *params; size_t num_params;",
         "  const unsigned char *msg; size_t len; const unsigned char *stream; size_t stream_len;",
         "} kv_response_t;", ""]

    def tensors(ts):
        return "(const kv_tensor_t[]){" + ",".join(
            "{%s,%s,%d,%s,%s,%d}" % (c_str(n), c_str(dt), len(sh), c_shape(sh), c_bytes(b), len(b))
            for n, dt, sh, b in ts) + "}"

    def params_c(ps):
        if not ps:
            return "NULL, 0"
        return "(const kv_param_t[]){" + ",".join(
            "{%s,%s,%s}" % ((c_str(k),) + tuple(c_str(x) for x in param_text(v)))
            for k, v in ps) + "}, %d" % len(ps)

    L.append("static const kv_request_t kv_requests[] = {")
    for label, r, ins, outs, ps in requests():
        b = r.SerializeToString(deterministic=True)
        with open(os.path.join(corpus, "py_%s" % label), "wb") as f:
            f.write(b)
        outs_c = ("(const char *const[]){" + ",".join(c_str(o) for o in outs) + "}, %d"
                  % len(outs)) if outs else "NULL, 0"
        L.append("  {%s, %s, %d, %s, %s, %s, %s, %d, %s, %s}," % (
            c_str(label), c_bytes(b), len(b), c_str(r.model_name), c_str(r.model_version),
            c_str(r.id), tensors(ins), len(ins), outs_c, params_c(ps)))
    L.append("};")
    L.append("static const kv_response_t kv_responses[] = {")
    for label, r, outs, ps in responses():
        b = r.SerializeToString(deterministic=True)
        s = pb.ModelStreamInferResponse(infer_response=r).SerializeToString(deterministic=True)
        L.append("  {%s, %s, %s, %s, %s, %d, %s, %s, %d, %s, %d}," % (
            c_str(label), c_str(r.model_name), c_str(r.model_version), c_str(r.id),
            tensors(outs), len(outs), params_c(ps), c_bytes(b), len(b), c_bytes(s), len(s)))
    L.append("};")
    e = pb.ModelStreamInferResponse(error_message="model 'x' is not ready").SerializeToString()
    L.append("static const unsigned char kv_stream_error[] = {%s};" % ",".join(str(x) for x in e))
    L.append("/* clang-format on */")
    L.append("")
    with open(os.path.join(ROOT, "tests/unit/kserve_pb_vectors.h"), "w") as f:
        f.write("\n".join(L))


if __name__ == "__main__":
    main()
