#!/usr/bin/env python3
"""make_models.py: build the demo model repository, offline and deterministically.

    python tools/make_models.py --out models [--force] [--no-verify]

Writes
  OUT/mobilenetv2/1/model.onnx  MobileNetV2, width 1.0 (Sandler et al. 2018), built layer by
                                layer; input "input" [batch,3,224,224] FP32, output "output"
                                [batch,1000] FP32 (logits), opset 17.
  OUT/mlp16/1/model.onnx        16 -> 64 -> 32 -> 1 (ReLU, ReLU, Sigmoid); input "input"
                                [batch,16] FP32, output "output" [batch,1] FP32. The benchmark's
                                small model: almost all of its cost is the server's.
  OUT/mlp_medium/1/model.onnx   256 -> 1024 -> 1024 -> 1 (ReLU, ReLU, Sigmoid); input "input"
                                [batch,256] FP32, output "output" [batch,1] FP32. A medium
                                model whose runs take measurable time (batching tests).

Nothing is downloaded: the weights are random, drawn from numpy's PCG64 with fixed seeds, so
the files are bit-identical on every run (same numpy). MobileNetV2 is structurally the real
network (same operators, shapes, parameter count, ~300 MFLOPs), so it costs what the real one
costs to serve, but its predictions mean nothing.

Weights: He-style initialisation (std sqrt(2/fan_in)) for convolutions followed by ReLU6,
sqrt(1/fan_in) for the linear ones, and batch normalisation with synthetic statistics folded
into each convolution's weight and bias, as exported inference models have it (Conv with bias,
no BatchNormalization node). The last projection of each residual block is damped so the ten
residual additions do not blow up the activations; the result is logits of order 1, finite and
different across inputs and classes.

Regeneration is skipped when OUT/.make_models.stamp records this script's hash and the hashes
of the files it wrote, and they still match; --force regenerates anyway.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; any ONNX Runtime since 1.11 reads it
STAMP = ".make_models.stamp"
BN_EPS = 1e-5

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the paper.
MOBILENETV2_BLOCKS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class GraphBuilder:
    """Accumulates nodes and initializers; names follow torchvision's module paths."""

    def __init__(self, rng):
        self.rng = rng
        self.nodes = []
        self.inits = []
        self.params = 0
        self._clip_bounds = None

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(array, name))
        self.params += array.size
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def relu6(self, x, name):
        # Opset >= 11 Clip takes its bounds as inputs; one shared pair of scalars.
        if self._clip_bounds is None:
            self.inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"))
            self.inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"))
            self._clip_bounds = ("relu6_min", "relu6_max")
        return self.node("Clip", [x, *self._clip_bounds], name)

    def conv_bn(self, x, name, cin, cout, k, stride, groups, gain):
        """Conv (no bias) + BatchNorm, folded into one Conv with bias.

        gain: 2.0 before a ReLU6 (He), 1.0 for a linear layer; smaller to damp a branch."""
        fan_in = (cin // groups) * k * k
        w = self.rng.standard_normal((cout, cin // groups, k, k), dtype=np.float32)
        w *= np.float32(np.sqrt(gain / fan_in))
        # Synthetic running statistics and affine parameters, close to what training leaves.
        gamma = self.rng.uniform(0.8, 1.2, cout).astype(np.float32)
        beta = (0.05 * self.rng.standard_normal(cout)).astype(np.float32)
        mean = (0.05 * self.rng.standard_normal(cout)).astype(np.float32)
        var = self.rng.uniform(0.8, 1.2, cout).astype(np.float32)
        scale = gamma / np.sqrt(var + np.float32(BN_EPS))
        w_folded = (w * scale[:, None, None, None]).astype(np.float32)
        b_folded = (beta - mean * scale).astype(np.float32)
        wn = self.init(name + ".weight", w_folded)
        bn = self.init(name + ".bias", b_folded)
        pad = k // 2
        return self.node(
            "Conv", [x, wn, bn], name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad, pad, pad, pad],
            group=groups, dilations=[1, 1],
        )


def build_mobilenetv2(seed=20180113):
    rng = np.random.default_rng(seed)
    g = GraphBuilder(rng)
    x = "input"
    # features.0: 3x3 stride 2 to 32 channels, ReLU6.
    x = g.relu6(g.conv_bn(x, "features.0.0", 3, 32, 3, 2, 1, 2.0), "features.0.2")
    cin = 32
    idx = 1
    for t, c, n, s in MOBILENETV2_BLOCKS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            residual = stride == 1 and cin == c
            p = f"features.{idx}.conv"
            h = x
            j = 0
            if t != 1:  # pointwise expansion
                h = g.relu6(g.conv_bn(h, f"{p}.{j}.0", cin, hidden, 1, 1, 1, 2.0), f"{p}.{j}.2")
                j += 1
            # depthwise 3x3
            h = g.relu6(g.conv_bn(h, f"{p}.{j}.0", hidden, hidden, 3, stride, hidden, 2.0),
                        f"{p}.{j}.2")
            j += 1
            # linear bottleneck (no activation); damped inside residual blocks
            h = g.conv_bn(h, f"{p}.{j}", hidden, c, 1, 1, 1, 0.25 if residual else 1.0)
            x = g.node("Add", [x, h], f"features.{idx}.add") if residual else h
            cin = c
            idx += 1
    # features.18: 1x1 to 1280, ReLU6; pool; classifier.
    x = g.relu6(g.conv_bn(x, f"features.{idx}.0", cin, 1280, 1, 1, 1, 2.0), f"features.{idx}.2")
    x = g.node("GlobalAveragePool", [x], "pool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    w = rng.standard_normal((1000, 1280), dtype=np.float32) * np.float32(np.sqrt(1.0 / 1280))
    b = (0.01 * rng.standard_normal(1000)).astype(np.float32)
    g.node("Gemm", [x, g.init("classifier.1.weight", w), g.init("classifier.1.bias", b)],
           "output", alpha=1.0, beta=1.0, transB=1)

    graph = helper.make_graph(
        g.nodes, "mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1000])],
        initializer=g.inits,
    )
    graph.doc_string = ("MobileNetV2 1.0 (Sandler et al. 2018) with deterministic random "
                        f"weights (numpy PCG64 seed {seed}); batch norm folded into the convs.")
    return finish(graph), g.params


def build_mlp(name, sizes, seed):
    """Fully connected layers sizes[0] -> ... -> sizes[-1] (ReLU between, Sigmoid at the end),
    deterministic He-scaled random weights; input "input" [batch, sizes[0]], output "output"."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder(rng)
    x = "input"
    acts = ["Relu"] * (len(sizes) - 2) + ["Sigmoid"]
    for li, (fin, fout, act) in enumerate(zip(sizes, sizes[1:], acts)):
        gain = 2.0 if act == "Relu" else 1.0
        w = rng.standard_normal((fout, fin), dtype=np.float32) * np.float32(np.sqrt(gain / fin))
        b = (0.1 * rng.standard_normal(fout)).astype(np.float32)
        x = g.node("Gemm", [x, g.init(f"fc{li}.weight", w), g.init(f"fc{li}.bias", b)],
                   f"fc{li}", alpha=1.0, beta=1.0, transB=1)
        x = g.node(act, [x], "output" if li == len(acts) - 1 else f"act{li}")
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", sizes[-1]])],
        initializer=g.inits,
    )
    graph.doc_string = (f"MLP {'-'.join(map(str, sizes))} with deterministic random weights "
                        f"(seed {seed}).")
    return finish(graph), g.params


def build_mlp16(seed=16):
    return build_mlp("mlp16", [16, 64, 32, 1], seed)


def build_mlp_medium(seed=1024):
    """256 -> 1024 -> 1024 -> 1 (ReLU, ReLU, Sigmoid): ~1.3 M parameters, ~2.6 MFLOPs a row.

    Big enough that a run takes measurable time and that merging rows into one run pays off
    (the batching tests and benchmarks), small enough to build in a fraction of a second."""
    return build_mlp("mlp_medium", [256, 1024, 1024, 1], seed)


def finish(graph):
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnxd tools/make_models.py", producer_version="1",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


MODELS = {"mobilenetv2": build_mobilenetv2, "mlp16": build_mlp16, "mlp_medium": build_mlp_medium}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_path(out, name):
    return os.path.join(out, name, "1", "model.onnx")


def write_atomic(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def up_to_date(out, script_hash):
    try:
        with open(os.path.join(out, STAMP)) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return False
    if stamp.get("script") != script_hash:
        return False
    files = stamp.get("files", {})
    for name in MODELS:
        p = model_path(out, name)
        if name not in files or not os.path.isfile(p) or sha256_file(p) != files[name]:
            return False
    return True


def verify(path, name):
    """onnx.checker on the file, then ONNX Runtime in-process; prints what it saw."""
    import onnxruntime as ort

    onnx.checker.check_model(path, full_check=True)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (outp,) = sess.get_outputs()
    rng = np.random.default_rng(1)
    feat = [d for d in inp.shape[1:]]
    x = rng.standard_normal((2, *feat), dtype=np.float32)
    y2 = sess.run(None, {inp.name: x})[0]
    y1 = sess.run(None, {inp.name: x[:1]})[0]
    if not np.all(np.isfinite(y2)):
        raise SystemExit(f"{name}: non-finite outputs")
    if np.ptp(y2[0]) == 0 and y2.shape[1] > 1:
        raise SystemExit(f"{name}: all outputs equal")
    if np.array_equal(y2[0], y2[1]):
        raise SystemExit(f"{name}: different inputs give the same output")
    if not np.allclose(y1[0], y2[0], rtol=1e-4, atol=1e-5):
        raise SystemExit(f"{name}: batch 1 and batch 2 disagree")
    print(f"  {name}: {inp.name} {inp.shape} {inp.type} -> {outp.name} {outp.shape} {outp.type}; "
          f"out mean {y2.mean():.4f} std {y2.std():.4f} min {y2.min():.4f} max {y2.max():.4f}"
          + (f", argmax {list(y2.argmax(axis=1))}" if y2.shape[1] > 1 else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models", help="repository directory (default: models)")
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the onnx.checker + onnxruntime check after writing")
    args = ap.parse_args(argv)

    script_hash = sha256_file(os.path.abspath(__file__))
    if not args.force and up_to_date(args.out, script_hash):
        print(f"make_models: {args.out} is up to date")
        return 0

    files = {}
    for name, build in MODELS.items():
        model, params = build()
        data = model.SerializeToString(deterministic=True)
        path = model_path(args.out, name)
        write_atomic(path, data)
        files[name] = hashlib.sha256(data).hexdigest()
        print(f"make_models: wrote {path} ({len(data)} bytes, {params} parameters, "
              f"{len(model.graph.node)} nodes, sha256 {files[name][:16]})")
        if not args.no_verify:
            verify(path, name)
    write_atomic(os.path.join(args.out, STAMP),
                 (json.dumps({"script": script_hash, "files": files}, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
