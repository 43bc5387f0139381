#!/usr/bin/env python3
"""make_test_models.py: builds the small onnxd model repository the tests run against.

Usage: make_test_models.py OUT_DIR [--extdata]

Writes OUT_DIR/<model>/<version>/model.onnx for:
  identity_<dtype>     one per OIP datatype (14): INPUT0 [N, ?] -> OUTPUT0 (Identity)
  add_sub_fp32/int32   Triton's "simple": INPUT0, INPUT1 [1,16] -> OUTPUT0 = sum, OUTPUT1 = diff
  fixed_fp32           x [2,3] -> y = x * 2 (fixed dimensions)
  versioned            versions 1 and 3: INPUT0 [N] FP32 -> OUTPUT0 = INPUT0 + version; config.json serves both (version_policy all)
  scalar_fp32          x rank 0 and u with no shape at all -> y = x + u (rank 0 vs unknown rank)
  passthrough_fp32     INPUT0 [N] -> OUTPUT0 = Identity(INPUT0), and INPUT0 itself as an output
                       (ORT hands such an output back in the caller's input buffer)
  broken               version 1 is garbage bytes (must not stop the repository from opening)
  broken_type          an input of type float8e4m3fn (no OIP datatype: refused at load)
  broken_seq           a sequence input (not a tensor: refused at load)
  extdata_mlp          (only with --extdata) x [N,4] FP32 -> y [N,3] = relu(x W1 + b1) W2 + b2, every weight in the
                       external file model.onnx.data beside model.onnx (save_as_external_data)
  mlp16_alt            models/mlp16's shape (input [batch,16] -> 64 -> 32 -> output [batch,1],
                       ReLU, ReLU, Sigmoid) with other weights (seed 17): the second file of the
                       lifecycle tests' reloads (their answers show which file ran)
Output is deterministic (same bytes on every run); every model is a few hundred bytes.
"""
import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save_model

OPSET = 17
IR_VERSION = 8

# OIP datatype -> ONNX element type.
DTYPES = [
    ("bool", TensorProto.BOOL),
    ("uint8", TensorProto.UINT8),
    ("uint16", TensorProto.UINT16),
    ("uint32", TensorProto.UINT32),
    ("uint64", TensorProto.UINT64),
    ("int8", TensorProto.INT8),
    ("int16", TensorProto.INT16),
    ("int32", TensorProto.INT32),
    ("int64", TensorProto.INT64),
    ("fp16", TensorProto.FLOAT16),
    ("bf16", TensorProto.BFLOAT16),
    ("fp32", TensorProto.FLOAT),
    ("fp64", TensorProto.DOUBLE),
    ("bytes", TensorProto.STRING),
]


def tensor(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def write(out, name, version, graph, ir_version=IR_VERSION):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=ir_version,
        producer_name="onnxd-make-test-models",
    )
    d = os.path.join(out, name, str(version))
    os.makedirs(d, exist_ok=True)
    save_model(model, os.path.join(d, "model.onnx"))


def identity(out, suffix, elem):
    # One symbolic and one fully unknown dimension: both must read back as -1.
    g = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "identity_" + suffix,
        [tensor("INPUT0", elem, ["N", None])],
        [tensor("OUTPUT0", elem, ["N", None])],
    )
    write(out, "identity_" + suffix, 1, g)


def add_sub(out, suffix, elem):
    g = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "add_sub_" + suffix,
        [tensor("INPUT0", elem, [1, 16]), tensor("INPUT1", elem, [1, 16])],
        [tensor("OUTPUT0", elem, [1, 16]), tensor("OUTPUT1", elem, [1, 16])],
    )
    write(out, "add_sub_" + suffix, 1, g)


def fixed(out):
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "fixed_fp32",
        [tensor("x", TensorProto.FLOAT, [2, 3])],
        [tensor("y", TensorProto.FLOAT, [2, 3])],
        initializer=[two],
    )
    write(out, "fixed_fp32", 1, g)


def versioned(out, version):
    c = numpy_helper.from_array(np.array([float(version)], dtype=np.float32), "v")
    g = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "v"], ["OUTPUT0"])],
        "versioned",
        [tensor("INPUT0", TensorProto.FLOAT, ["N"])],
        [tensor("OUTPUT0", TensorProto.FLOAT, ["N"])],
        initializer=[c],
    )
    write(out, "versioned", version, g)
    # Every version is served (the default policy, latest 1, would serve only the highest).
    with open(os.path.join(out, "versioned", "config.json"), "w") as f:
        f.write('{"version_policy": {"all": {}}}\n')


def scalar(out):
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "u"], ["y"])],
        "scalar_fp32",
        [tensor("x", TensorProto.FLOAT, []), tensor("u", TensorProto.FLOAT, None)],
        [tensor("y", TensorProto.FLOAT, None)],
    )
    write(out, "scalar_fp32", 1, g)


def passthrough(out):
    g = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "passthrough_fp32",
        [tensor("INPUT0", TensorProto.FLOAT, ["N"])],
        [tensor("OUTPUT0", TensorProto.FLOAT, ["N"]), tensor("INPUT0", TensorProto.FLOAT, ["N"])],
    )
    write(out, "passthrough_fp32", 1, g)


def broken(out):
    d = os.path.join(out, "broken", "1")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(b"\x08\xff\xff this is not an ONNX model \x00\x01\x02" * 4)


def broken_type(out):
    # ORT loads float8 inputs (IR 9) but OIP has no such datatype, so onnxd must refuse the
    # model itself. The input is unused so that no kernel has to accept it.
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "broken_type",
        [tensor("x", TensorProto.FLOAT, [1]), tensor("f8", TensorProto.FLOAT8E4M3FN, [1])],
        [tensor("y", TensorProto.FLOAT, [1])],
    )
    write(out, "broken_type", 1, g, ir_version=9)


def broken_seq(out):
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    g = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"])],
        "broken_seq",
        [seq],
        [tensor("n", TensorProto.INT64, [])],
    )
    write(out, "broken_seq", 1, g)


def extdata_mlp(out):
    rng = np.random.default_rng(12)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "W1")
    b1 = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "B1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "W2")
    b2 = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "B2")
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "B1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
        helper.make_node("Add", ["h3", "B2"], ["y"]),
    ]
    g = helper.make_graph(nodes, "extdata_mlp", [tensor("x", TensorProto.FLOAT, ["N", 4])],
                          [tensor("y", TensorProto.FLOAT, ["N", 3])], [w1, b1, w2, b2])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="onnxd-make-test-models")
    d = os.path.join(out, "extdata_mlp", "1")
    os.makedirs(d, exist_ok=True)
    for f in ("model.onnx", "model.onnx.data"):
        if os.path.exists(os.path.join(d, f)):
            os.remove(os.path.join(d, f))
    save_model(model, os.path.join(d, "model.onnx"), save_as_external_data=True,
               all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)


def mlp16_alt(out, seed=17):
    rng = np.random.default_rng(seed)
    sizes = [16, 64, 32, 1]
    acts = ["Relu", "Relu", "Sigmoid"]
    nodes, inits, x = [], [], "input"
    for li, (fin, fout, act) in enumerate(zip(sizes, sizes[1:], acts)):
        w = (rng.standard_normal((fout, fin)) * np.sqrt(2.0 / fin)).astype(np.float32)
        b = (0.5 * rng.standard_normal(fout)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fc{li}.weight"),
                  numpy_helper.from_array(b, f"fc{li}.bias")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{li}.weight", f"fc{li}.bias"], [f"fc{li}"],
                                      alpha=1.0, beta=1.0, transB=1))
        x = "output" if li == len(acts) - 1 else f"act{li}"
        nodes.append(helper.make_node(act, [f"fc{li}"], [x]))
    g = helper.make_graph(nodes, "mlp16_alt", [tensor("input", TensorProto.FLOAT, ["batch", 16])],
                          [tensor("output", TensorProto.FLOAT, ["batch", 1])], initializer=inits)
    write(out, "mlp16_alt", 1, g)


def main(argv):
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--extdata"):
        sys.stderr.write("usage: make_test_models.py OUT_DIR [--extdata]\n")
        return 2
    out = argv[1]
    for suffix, elem in DTYPES:
        identity(out, suffix, elem)
    add_sub(out, "fp32", TensorProto.FLOAT)
    add_sub(out, "int32", TensorProto.INT32)
    fixed(out)
    versioned(out, 1)
    versioned(out, 3)
    scalar(out)
    passthrough(out)
    broken(out)
    broken_type(out)
    broken_seq(out)
    if "--extdata" in argv:  # not in the shared repository (tests/unit/runtime_test.c lists it)
        extdata_mlp(out)
    mlp16_alt(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
