#!/usr/bin/env python3
"""ONNX node-test conformance for onnxd.

Serves ONNX's own node tests (Debian's libonnx-testdata: DATA/<test>/model.onnx with
test_data_set_*/input_*.pb and output_*.pb) from a temporary model repository and checks that
every inference result of the server equals in-process ONNX Runtime's result for the same
inputs, bit for bit (same datatype, same shape, same bytes), in both request encodings:

  json    inputs as flat JSON lists in "data", outputs read from "outputs"[i]."data"
  binary  the binary tensor data extension: raw little-endian inputs after the JSON header
          (Inference-Header-Content-Length), binary_data_output true, raw outputs back
  grpc    the gRPC service (ModelInfer over HTTP/2, grpcio with tritonclient's generated
          messages): raw_input_contents in, raw_output_contents back

A test is eligible when every model input and output is a plain tensor of a datatype the
protocol carries, every data-set file parses as a TensorProto that fits the model, and
in-process ONNX Runtime (CPUExecutionProvider, default session options: ORT_ENABLE_ALL) loads
the model, runs the inputs and gives the same outputs in four runs of one session (random
ops are skipped). Other
tests are skipped with a reason category. The JSON encoding alone is skipped for tests whose
inputs JSON cannot carry (NaN/Inf floats, strings that are not UTF-8).

Counts are per test: a test passes when every data set gives the reference outputs in every
encoding tried. Tests the server never ran (it did not start, or died) count as failed; a
server problem after all tests ran (non-zero exit status at SIGTERM, e.g. a sanitizer report)
counts as one more failure, shown as "FAIL <server>". Skipped = not eligible.
Test data of ONNX <= 1.12 stores bfloat16 tensors as UINT16 bit patterns; they are read as BF16
where the model says BFLOAT16. The repository goes to $TMPDIR, else /dev/shm when writable.

Output: one line per failure ("FAIL <test> [<encoding>]: <reason>"), a summary with skip
counts by category and the tests that passed over each encoding, and as the last line "P passed, F failed, S skipped". Exit status 1 when
anything failed (including the server not starting or not exiting cleanly), else 0.

Usage: run_conformance.py [--bin build/onnxd] [--filter SUBSTR] [--limit N] [--jobs J]
                          [--timeout SECONDS] [--server-args ARGS] [--data DIR] [--keep] [-v]
"""

import argparse
import codecs
import collections
import concurrent.futures
import ctypes
import glob
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = "/usr/share/libonnx-testdata/data/node"
TP = onnx.TensorProto

# ONNX element type -> (wire datatype, numpy dtype of our in-memory form). BF16 is kept as its
# uint16 bit pattern; BYTES as an object array of bytes.
ONNX_TO_WIRE = {
    TP.BOOL: ("BOOL", np.dtype(np.bool_)),
    TP.UINT8: ("UINT8", np.dtype(np.uint8)),
    TP.UINT16: ("UINT16", np.dtype(np.uint16)),
    TP.UINT32: ("UINT32", np.dtype(np.uint32)),
    TP.UINT64: ("UINT64", np.dtype(np.uint64)),
    TP.INT8: ("INT8", np.dtype(np.int8)),
    TP.INT16: ("INT16", np.dtype(np.int16)),
    TP.INT32: ("INT32", np.dtype(np.int32)),
    TP.INT64: ("INT64", np.dtype(np.int64)),
    TP.FLOAT16: ("FP16", np.dtype(np.float16)),
    TP.BFLOAT16: ("BF16", np.dtype(np.uint16)),
    TP.FLOAT: ("FP32", np.dtype(np.float32)),
    TP.DOUBLE: ("FP64", np.dtype(np.float64)),
    TP.STRING: ("BYTES", np.dtype(object)),
}
WIRE_NP = {w: d for (w, d) in ONNX_TO_WIRE.values()}
FLOAT_WIRE = ("FP16", "BF16", "FP32", "FP64")
INT_WIRE = ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")


def _latin1_escape(exc):
    """Codec error handler: each byte that is not valid UTF-8 becomes U+00XX, which is how the
    server writes such bytes into JSON strings."""
    return ("".join(chr(b) for b in exc.object[exc.start:exc.end]), exc.end)


codecs.register_error("onnxd_latin1", _latin1_escape)


class Skip(Exception):
    def __init__(self, category, detail=""):
        super().__init__(category)
        self.category = category
        self.detail = detail


def short(msg, n=160):
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def ort_short_reason(e):
    """The gist of an ORT exception message (without the '[ONNXRuntimeError] : 1 : FAIL :')."""
    m = str(e)
    m = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", m)
    m = re.sub(r"^Load model from \S* failed:\s*", "", m)
    m = re.sub(r"^Exception during initialization: ", "", m)
    m = re.sub(r"^/\S+\.(h|cc):\d+ .*?\)\S* ", "", m)  # source location and C++ signature
    m = re.sub(r"(/[^ ]*)?model\.onnx", "model.onnx", m)
    return short(m, 120)


# ---------------------------------------------------------------------------------------------
# Tensors: (wire, shape, array). array has WIRE_NP[wire] dtype and the given shape.


class Tensor:
    __slots__ = ("wire", "shape", "arr")

    def __init__(self, wire, shape, arr):
        self.wire = wire
        self.shape = tuple(int(d) for d in shape)
        self.arr = arr

    def raw(self):
        """Bytes of the binary tensor data extension."""
        if self.wire == "BYTES":
            parts = []
            for s in self.arr.reshape(-1):
                parts.append(len(s).to_bytes(4, "little"))
                parts.append(s)
            return b"".join(parts)
        a = self.arr
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        return np.ascontiguousarray(a).tobytes()

    def json_data(self):
        """A flat list for the JSON "data" field, or raise Skip when JSON cannot carry it."""
        flat = self.arr.reshape(-1)
        if self.wire == "BYTES":
            out = []
            for s in flat:
                try:
                    out.append(s.decode("utf-8"))
                except UnicodeDecodeError:
                    raise Skip("json: string input not UTF-8")
            return out
        if self.wire == "BF16":
            flat = flat.view(ml_dtypes.bfloat16).astype(np.float64)
        if self.wire in FLOAT_WIRE and flat.size and not np.all(np.isfinite(flat)):
            raise Skip("json: NaN/Inf input")
        return flat.tolist()


def tensor_from_proto(tp, elem_type):
    """Tensor of the model's element type from a TensorProto of the test data."""
    wire, npd = ONNX_TO_WIRE[elem_type]
    if tp.data_type != elem_type:
        # ONNX <= 1.12 stored bfloat16 test data as UINT16 tensors of the bit patterns.
        if not (elem_type == TP.BFLOAT16 and tp.data_type == TP.UINT16):
            raise Skip(
                "test data does not fit the model",
                "%s data for a %s input" % (TP.DataType.Name(tp.data_type), TP.DataType.Name(elem_type)),
            )
    a = numpy_helper.to_array(tp)
    if elem_type == TP.STRING:
        flat = [s if isinstance(s, bytes) else str(s).encode("utf-8") for s in a.reshape(-1)]
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return Tensor(wire, a.shape, arr.reshape(a.shape))
    if elem_type == TP.BFLOAT16:
        a = np.ascontiguousarray(a).view(np.uint16) if a.dtype.itemsize == 2 else a.astype(np.uint16)
    else:
        a = np.asarray(a, dtype=npd)
    return Tensor(wire, a.shape, a)


# ---------------------------------------------------------------------------------------------
# In-process reference


ORT_TO_WIRE = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(bfloat16)": "BF16", "tensor(float)": "FP32",
    "tensor(double)": "FP64", "tensor(string)": "BYTES",
}


def ort_feed_value(t):
    if t.wire == "BF16":
        v = ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), TP.BFLOAT16)
        if t.arr.size:
            ctypes.memmove(v.data_ptr(), np.ascontiguousarray(t.arr).tobytes(), t.arr.nbytes)
        return v
    if t.wire == "BYTES":
        try:
            flat = [s.decode("utf-8") for s in t.arr.reshape(-1)]
        except UnicodeDecodeError:
            flat = list(t.arr.reshape(-1))
        a = np.empty(len(flat), dtype=object)
        a[:] = flat
        return a.reshape(t.shape)
    return t.arr


def tensor_from_ort(wire, v):
    """Tensor from an ORT output: numpy array, or OrtValue (used when bfloat16 is involved)."""
    if isinstance(v, ort.OrtValue):
        if not v.is_tensor():
            raise Skip("ORT output is not a tensor")
        shape = tuple(v.shape())
        if wire == "BF16":
            n = int(np.prod(shape, dtype=np.int64))
            buf = ctypes.string_at(v.data_ptr(), 2 * n) if n else b""
            return Tensor(wire, shape, np.frombuffer(buf, dtype=np.uint16).reshape(shape).copy())
        v = v.numpy()
    if not isinstance(v, np.ndarray):
        raise Skip("ORT output is not a tensor")
    if wire == "BYTES":
        flat = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in v.reshape(-1)]
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return Tensor(wire, v.shape, arr.reshape(v.shape))
    if v.dtype != WIRE_NP[wire]:
        raise Skip("ORT output dtype differs from its declared type", "%s vs %s" % (v.dtype, wire))
    return Tensor(wire, v.shape, np.array(v, order="C", copy=True))


def tensors_identical(a, b, nan_any=False):
    """None when a and b are the same tensor bit for bit, else a short reason. nan_any: any NaN
    equals any NaN (JSON loses NaN payloads and signs)."""
    if a.wire != b.wire:
        return "datatype %s, expected %s" % (a.wire, b.wire)
    if a.shape != b.shape:
        return "shape %s, expected %s" % (list(a.shape), list(b.shape))
    if a.wire == "BYTES":
        fa, fb = a.arr.reshape(-1), b.arr.reshape(-1)
        for i in range(len(fa)):
            if fa[i] != fb[i]:
                return "element %d: %r, expected %r" % (i, short(fa[i], 60), short(fb[i], 60))
        return None
    if a.raw() == b.raw():
        return None
    fa = np.ascontiguousarray(a.arr).reshape(-1)
    fb = np.ascontiguousarray(b.arr).reshape(-1)
    if a.wire in FLOAT_WIRE:
        ua = fa.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[fa.dtype.itemsize])
        ub = fb.view(ua.dtype)
        diff = ua != ub
        if nan_any:
            va, vb = as_float(a.wire, fa), as_float(b.wire, fb)
            diff &= ~(np.isnan(va) & np.isnan(vb))
            if not diff.any():
                return None
    else:
        diff = fa != fb
    idx = np.flatnonzero(diff)
    i = int(idx[0])
    return "%d of %d elements differ; first at %d: %s, expected %s" % (
        len(idx), len(fa), i, fmt_elem(a.wire, fa[i]), fmt_elem(b.wire, fb[i]))


def as_float(wire, flat):
    if wire == "BF16":
        return flat.view(ml_dtypes.bfloat16).astype(np.float32)
    return flat


def fmt_elem(wire, x):
    if wire == "BF16":
        return "%r (0x%04x)" % (float(np.uint16(x).view(ml_dtypes.bfloat16)), int(x))
    if wire in ("FP16", "FP32", "FP64"):
        bits = np.asarray(x).view({2: np.uint16, 4: np.uint32, 8: np.uint64}[np.asarray(x).itemsize])
        return "%r (0x%x)" % (float(x), int(bits))
    return repr(x.item() if hasattr(x, "item") else x)


def matches_expected(got, exp):
    """ONNX backend-test comparison (rtol 1e-3, atol 1e-7; equality for ints/strings/bools)."""
    if got.wire != exp.wire:
        return False
    try:
        if got.wire == "BYTES":
            np.testing.assert_array_equal(got.arr, exp.arr)
        elif got.wire in FLOAT_WIRE:
            a = as_float(got.wire, got.arr.reshape(-1)).reshape(got.shape)
            b = as_float(exp.wire, exp.arr.reshape(-1)).reshape(exp.shape)
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-7)
        else:
            np.testing.assert_array_equal(got.arr, exp.arr)
            if got.shape != exp.shape:
                return False
    except AssertionError:
        return False
    return True


class Case:
    """One eligible test: its model, data sets and reference outputs."""

    def __init__(self, name, model_path):
        self.name = name
        self.model_path = model_path
        self.input_names = []
        self.output_names = []
        self.output_wires = []
        self.datasets = []        # [(dataset name, [input Tensor], [reference output Tensor])]
        self.json_skip = None     # reason the JSON encoding is skipped, or None
        self.ort_matches_expected = True
        self.mismatch_detail = ""


def value_info_kind(vi):
    """'tensor' with its elem_type, or the category of a non-tensor type."""
    k = vi.type.WhichOneof("value")
    if k != "tensor_type":
        return (k or "no type"), None
    return "tensor", vi.type.tensor_type.elem_type


def prepare(name, data_dir):
    """Case for test name, or raise Skip."""
    tdir = os.path.join(data_dir, name)
    model_path = os.path.join(tdir, "model.onnx")
    try:
        model = onnx.load(model_path)
    except Exception as e:  # noqa: BLE001
        raise Skip("model does not parse", short(e, 80))
    g = model.graph
    # Random operators give different outputs on every run (two equal runs in a row prove
    # nothing: test_bernoulli sometimes agrees by chance), so they are skipped by type.
    random_ops = {"Bernoulli", "RandomNormal", "RandomNormalLike", "RandomUniform",
                  "RandomUniformLike", "Multinomial"}
    used = {n.op_type for n in g.node}
    for f in model.functions:
        used |= {n.op_type for n in f.node}
    if used & random_ops:
        raise Skip("nondeterministic (random operator)", ", ".join(sorted(used & random_ops)))
    inits = {i.name for i in g.initializer}
    ins = [vi for vi in g.input if vi.name not in inits]
    in_types = []
    for vi in list(ins) + list(g.output):
        kind, et = value_info_kind(vi)
        if kind != "tensor":
            raise Skip("non-tensor io", "%s: %s" % (vi.name, kind))
        if et not in ONNX_TO_WIRE:
            raise Skip("unsupported dtype", TP.DataType.Name(et) if et in TP.DataType.values() else str(et))
        in_types.append(et)
    out_types = in_types[len(ins):]
    in_types = in_types[: len(ins)]
    if any(vi.name == "" for vi in ins):
        raise Skip("optional/empty inputs", "unnamed graph input")

    dsets = sorted(glob.glob(os.path.join(tdir, "test_data_set_*")))
    if not dsets:
        raise Skip("no test data")
    raw_sets = []
    for d in dsets:
        nin = len(glob.glob(os.path.join(d, "input_*.pb")))
        nout = len(glob.glob(os.path.join(d, "output_*.pb")))
        if nin != len(ins):
            raise Skip("optional/empty inputs", "%d data inputs for %d model inputs" % (nin, len(ins)))
        if nout != len(g.output):
            raise Skip("test data does not fit the model", "%d outputs for %d" % (nout, len(g.output)))
        tin, tout = [], []
        for i in range(nin):
            tin.append(tensor_from_proto(load_tensor_proto(os.path.join(d, "input_%d.pb" % i)), in_types[i]))
        for i in range(nout):
            tout.append(tensor_from_proto(load_tensor_proto(os.path.join(d, "output_%d.pb" % i)), out_types[i]))
        raw_sets.append((os.path.basename(d), tin, tout))

    try:
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise Skip("ORT cannot load", ort_short_reason(e))
    c = Case(name, model_path)
    s_in, s_out = sess.get_inputs(), sess.get_outputs()
    if len(s_in) != len(ins):
        raise Skip("optional/empty inputs", "ORT has %d inputs, model %d" % (len(s_in), len(ins)))
    c.input_names = [i.name for i in s_in]
    c.output_names = [o.name for o in s_out]
    # input_i.pb / output_i.pb belong to the i-th graph input / output; put them in ORT's order.
    gin = [vi.name for vi in ins]
    gout = [vi.name for vi in g.output]
    if sorted(gin) != sorted(c.input_names) or sorted(gout) != sorted(c.output_names):
        raise Skip("test data does not fit the model", "ORT's input/output names differ from the graph's")
    raw_sets = [(d, [tin[gin.index(n)] for n in c.input_names], [tout[gout.index(n)] for n in c.output_names])
                for d, tin, tout in raw_sets]
    for o in s_out:
        if o.type not in ORT_TO_WIRE:
            raise Skip("non-tensor io", "ORT output type %s" % o.type)
        c.output_wires.append(ORT_TO_WIRE[o.type])
    for i, si in enumerate(s_in):
        if ORT_TO_WIRE.get(si.type) != raw_sets[0][1][i].wire:
            raise Skip("test data does not fit the model", "input %s is %s" % (si.name, si.type))
    use_ortvalues = "BF16" in c.output_wires or any(t.wire == "BF16" for t in raw_sets[0][1])

    for dname, tin, tout in raw_sets:
        feeds = {n: ort_feed_value(t) for n, t in zip(c.input_names, tin)}
        runs = []
        # As many runs as the server gets for this data set (one per encoding) and one more: a
        # stateful operator repeats itself for a while before it changes (Dropout with a seed
        # gives the same output on runs 1 and 2, another on run 3).
        for _ in range(4):
            try:
                if use_ortvalues:
                    ov = {k: (v if isinstance(v, ort.OrtValue) else ort.OrtValue.ortvalue_from_numpy(v))
                          for k, v in feeds.items()}
                    res = sess.run_with_ort_values(c.output_names, ov)
                else:
                    res = sess.run(c.output_names, feeds)
            except Skip:
                raise
            except Exception as e:  # noqa: BLE001
                raise Skip("ORT run fails", ort_short_reason(e))
            runs.append([tensor_from_ort(w, v) for w, v in zip(c.output_wires, res)])
        for later in runs[1:]:
            for a, b in zip(runs[0], later):
                if tensors_identical(a, b) is not None:
                    raise Skip("nondeterministic (ORT differs between runs)")
        ref = runs[0]
        for on, got, exp in zip(c.output_names, ref, tout):
            if not matches_expected(got, exp):
                if c.ort_matches_expected:
                    c.mismatch_detail = "%s/%s" % (dname, on)
                c.ort_matches_expected = False
        c.datasets.append((dname, tin, ref))
        for t in tin:
            try:
                t.json_data()
            except Skip as s:
                c.json_skip = c.json_skip or s.category
    return c


def load_tensor_proto(path):
    with open(path, "rb") as f:
        data = f.read()
    tp = TP()
    try:
        tp.ParseFromString(data)
    except Exception:  # noqa: BLE001
        raise Skip("test data not TensorProto")
    # A SequenceProto/OptionalProto may parse as a TensorProto by accident; insist on a type.
    if tp.data_type == TP.UNDEFINED:
        raise Skip("test data not TensorProto")
    return tp


# ---------------------------------------------------------------------------------------------
# Server


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, repo, logpath, port, grpc_port, extra_args=()):
        self.port = port
        self.logpath = logpath
        self.log = open(logpath, "wb")
        self.proc = subprocess.Popen(
            [binary, "--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(port),
             "--grpc-port", str(grpc_port)] + list(extra_args),
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "server exited with status %s before it was ready" % self.proc.returncode
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/health/ready")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return None
            except OSError:
                pass
            time.sleep(0.1)
        return "server not ready after %g s" % timeout

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """Stops the server (SIGTERM, then SIGKILL after 20 s). Returns a problem or None."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                return "server did not exit within 20 s of SIGTERM"
        self.log.close()
        rc = self.proc.returncode
        if rc not in (0, -signal.SIGTERM):
            return "server exited with status %s" % rc
        return None

    def log_tail(self, n=30):
        try:
            with open(self.logpath, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join("  | " + ln for ln in lines[-n:])


class Client:
    """One persistent HTTP/1.1 connection per thread."""

    def __init__(self, port, timeout):
        self.port = port
        self.timeout = timeout
        self.local = threading.local()
        self.lock = threading.Lock()
        self.conns = []

    def close(self):
        with self.lock:
            for c in self.conns:
                c.close()
            self.conns = []

    def post(self, path, body, headers):
        for attempt in (0, 1):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                                     timeout=self.timeout)
                with self.lock:
                    self.conns.append(conn)
            try:
                conn.request("POST", path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                if r.will_close:
                    conn.close()
                    self.local.conn = None
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.HTTPException, OSError) as e:
                conn.close()
                self.local.conn = None
                # A kept-alive connection the server closed between requests: retry once.
                if attempt == 1 or isinstance(e, socket.timeout):
                    raise


# ---------------------------------------------------------------------------------------------
# Requests and responses


class Num(str):
    """A JSON number token, kept as text so parsing is exact."""


NONFINITE_STRINGS = ("NaN", "Infinity", "-Infinity")


def _bare_constant(tok):
    raise ValueError("bare %s token in a JSON answer (not JSON)" % tok)


def json_loads_exact(text):
    return json.loads(text, parse_int=Num, parse_float=Num, parse_constant=_bare_constant)


def f32_exact(tokens):
    """float32 values of decimal tokens, correctly rounded (no double rounding)."""
    d = np.array([float(t) for t in tokens], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        f = d.astype(np.float32)
        # float64 -> float32 rounding goes wrong only when the float64 is exactly halfway
        # between two float32s; redo those few from the decimal text.
        other = np.nextafter(f, np.where(d > f, np.float32(np.inf), np.float32(-np.inf)))
        mid = (f.astype(np.float64) + other.astype(np.float64)) / 2
        sus = np.isfinite(d) & (d != f.astype(np.float64)) & (d == mid)
    for i in np.flatnonzero(sus):
        f[i] = f32_from_decimal(tokens[i])
    return f


def f32_from_decimal(tok):
    from fractions import Fraction
    q = Fraction(tok)
    d = float(q)
    c = np.float32(d)
    best = None
    for cand in (np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))):
        err = abs(Fraction(float(cand)) - q)
        key = (err, int(np.asarray(cand).view(np.uint32)) & 1)
        if best is None or key < best[0]:
            best = (key, cand)
    return best[1]


def tensor_from_json(wire, shape, data):
    """Tensor from a JSON output's datatype, shape and data (parsed with json_loads_exact)."""
    if not isinstance(data, list):
        raise ValueError("data is not a list")
    flat = []

    def walk(x):
        for e in x:
            if isinstance(e, list):
                walk(e)
            else:
                flat.append(e)
    walk(data)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(flat) != n:
        raise ValueError("%d data elements for shape %s" % (len(flat), list(shape)))
    if wire == "BYTES":
        for e in flat:
            if not isinstance(e, str) or isinstance(e, Num):
                raise ValueError("BYTES element %r is not a JSON string" % (e,))
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat  # str: compared against the reference's JSON form
        return Tensor(wire, shape, arr.reshape(shape))
    if wire == "BOOL":
        for e in flat:
            if not isinstance(e, bool):
                raise ValueError("BOOL element %r is not true/false" % (e,))
        return Tensor(wire, shape, np.array(flat, dtype=np.bool_).reshape(shape))
    if wire in ("FP16", "BF16", "FP32", "FP64"):
        # onnxd's documented spelling of non-finite outputs in JSON (valid JSON, unlike bare
        # NaN/Infinity tokens): exactly these three strings, nothing else.
        flat = [Num(e) if not isinstance(e, Num) and e in NONFINITE_STRINGS else e for e in flat]
    for e in flat:
        if not isinstance(e, Num):
            raise ValueError("element %r is not a number" % (e,))
    if wire in INT_WIRE:
        for e in flat:
            if not re.fullmatch(r"-?(0|[1-9][0-9]*)", e):
                raise ValueError("%s element %s is not a JSON integer" % (wire, e))
        return Tensor(wire, shape, np.array([int(e) for e in flat], dtype=WIRE_NP[wire]).reshape(shape))
    if wire == "FP64":
        return Tensor(wire, shape, np.array([float(e) for e in flat], dtype=np.float64).reshape(shape))
    f = f32_exact(flat) if flat else np.zeros(0, np.float32)
    if wire == "FP32":
        return Tensor(wire, shape, f.reshape(shape))
    if wire == "FP16":
        h = f.astype(np.float16)
        if not np.array_equal(h.astype(np.float32), f, equal_nan=True):
            raise ValueError("FP16 element not representable in float16")
        return Tensor(wire, shape, h.reshape(shape))
    b = f.astype(ml_dtypes.bfloat16)
    if not np.array_equal(b.astype(np.float32), f, equal_nan=True):
        raise ValueError("BF16 element not representable in bfloat16")
    return Tensor(wire, shape, b.view(np.uint16).reshape(shape))


def reference_json_form(t):
    """The reference tensor as the JSON encoding can reproduce it (strings as the server writes
    them: valid UTF-8 as is, other bytes as U+00XX)."""
    if t.wire != "BYTES":
        return t
    flat = [s.decode("utf-8", "onnxd_latin1") for s in t.arr.reshape(-1)]
    arr = np.empty(len(flat), dtype=object)
    arr[:] = flat
    return Tensor(t.wire, t.shape, arr.reshape(t.shape))


def check_output_names(case, header):
    """None when the response header lists exactly the requested outputs, else a reason."""
    outs = header.get("outputs") if isinstance(header, dict) else None
    if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
        return "response has no outputs list"
    names = [o.get("name") for o in outs]
    if sorted(names, key=str) != sorted(case.output_names):
        return "response outputs %s, expected %s" % (names, case.output_names)
    return None


def run_json(client, case, tin, ref):
    body = {
        "inputs": [{"name": n, "shape": list(t.shape), "datatype": t.wire, "data": t.json_data()}
                   for n, t in zip(case.input_names, tin)],
        "outputs": [{"name": n} for n in case.output_names],
    }
    payload = json.dumps(body, allow_nan=False, ensure_ascii=False).encode("utf-8")
    status, _, data = client.post("/v2/models/%s/infer" % case.name, payload,
                                  {"Content-Type": "application/json"})
    if status != 200:
        return "HTTP %d: %s" % (status, short(data.decode("utf-8", "replace"), 200))
    try:
        resp = json_loads_exact(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return "response is not JSON: %s" % short(e, 100)
    bad = check_output_names(case, resp)
    if bad:
        return bad
    byname = {o["name"]: o for o in resp["outputs"]}
    for n, w, r in zip(case.output_names, case.output_wires, ref):
        o = byname[n]
        if "data" not in o:
            return "output %s: no data" % n
        if o.get("datatype") != w:
            return "output %s: datatype %r, expected %s" % (n, o.get("datatype"), w)
        try:
            shape = tuple(int(d) for d in o.get("shape"))
            t = tensor_from_json(w, shape, o["data"])
        except (ValueError, TypeError) as e:
            return "output %s: %s" % (n, short(e, 120))
        why = tensors_identical(t, reference_json_form(r), nan_any=True)
        if why:
            return "output %s: %s" % (n, why)
    return None


def run_binary(client, case, tin, ref):
    raws = [t.raw() for t in tin]
    header = {
        "inputs": [{"name": n, "shape": list(t.shape), "datatype": t.wire,
                    "parameters": {"binary_data_size": len(r)}}
                   for n, t, r in zip(case.input_names, tin, raws)],
        "outputs": [{"name": n} for n in case.output_names],
        "parameters": {"binary_data_output": True},
    }
    hj = json.dumps(header).encode("utf-8")
    body = hj + b"".join(raws)
    status, hdrs, data = client.post(
        "/v2/models/%s/infer" % case.name, body,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(hj))})
    if status != 200:
        return "HTTP %d: %s" % (status, short(data.decode("utf-8", "replace"), 200))
    hl = hdrs.get("inference-header-content-length")
    if hl is None:
        return "response has no Inference-Header-Content-Length"
    try:
        hl = int(hl)
        if not 0 < hl <= len(data):
            raise ValueError("Inference-Header-Content-Length %d for a %d-byte body" % (hl, len(data)))
        resp = json_loads_exact(data[:hl].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return "bad response header: %s" % short(e, 120)
    bad = check_output_names(case, resp)
    if bad:
        return bad
    pos = hl
    got = {}
    for o in resp["outputs"]:
        n = o.get("name")
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            return "output %s: no binary_data_size (not binary)" % n
        size = int(size)
        if pos + size > len(data):
            return "output %s: binary_data_size %d runs past the body" % (n, size)
        got[n] = (o, data[pos:pos + size])
        pos += size
    if pos != len(data):
        return "%d bytes left over after the outputs" % (len(data) - pos)
    for n, w, r in zip(case.output_names, case.output_wires, ref):
        o, blob = got[n]
        if o.get("datatype") != w:
            return "output %s: datatype %r, expected %s" % (n, o.get("datatype"), w)
        try:
            shape = tuple(int(d) for d in o.get("shape"))
        except (TypeError, ValueError):
            return "output %s: bad shape %r" % (n, o.get("shape"))
        if shape != r.shape:
            return "output %s: shape %s, expected %s" % (n, list(shape), list(r.shape))
        exp = r.raw()
        if blob != exp:
            if w == "BYTES" or len(blob) != len(exp):
                return "output %s: %d bytes differ from the reference's %d (%s...)" % (
                    n, len(blob), len(exp), blob[:24].hex())
            arr = np.frombuffer(blob, dtype=WIRE_NP[w].newbyteorder("<")).reshape(shape)
            return "output %s: %s" % (n, tensors_identical(Tensor(w, shape, arr), r))
    return None


def run_grpc(gclient, case, tin, ref):
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=case.name)
    for n, t in zip(case.input_names, tin):
        req.inputs.add(name=n, datatype=t.wire, shape=list(t.shape))
        req.raw_input_contents.append(t.raw())
    for n in case.output_names:
        req.outputs.add(name=n)
    try:
        resp = gclient.ModelInfer(req, timeout=gclient.timeout)
    except gclient.RpcError as e:
        return "gRPC %s: %s" % (e.code().name, short(e.details() or "", 200))
    names = [o.name for o in resp.outputs]
    if names != list(case.output_names):
        return "outputs %s, expected %s" % (names, list(case.output_names))
    if len(resp.raw_output_contents) != len(names):
        return "%d raw_output_contents for %d outputs" % (len(resp.raw_output_contents), len(names))
    for o, blob, w, r in zip(resp.outputs, resp.raw_output_contents, case.output_wires, ref):
        if o.datatype != w:
            return "output %s: datatype %r, expected %s" % (o.name, o.datatype, w)
        shape = tuple(int(d) for d in o.shape)
        if shape != r.shape:
            return "output %s: shape %s, expected %s" % (o.name, list(shape), list(r.shape))
        exp = r.raw()
        if blob != exp:
            if w == "BYTES" or len(blob) != len(exp):
                return "output %s: %d bytes differ from the reference's %d (%s...)" % (
                    o.name, len(blob), len(exp), blob[:24].hex())
            arr = np.frombuffer(blob, dtype=WIRE_NP[w].newbyteorder("<")).reshape(shape)
            return "output %s: %s" % (o.name, tensors_identical(Tensor(w, shape, arr), r))
    return None


class GrpcClient:
    """A gRPC stub on one channel (HTTP/2: every thread's calls share its connection)."""

    def __init__(self, port, timeout):
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        self.RpcError = grpc.RpcError
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            "127.0.0.1:%d" % port, options=[("grpc.max_receive_message_length", -1),
                                            ("grpc.max_send_message_length", -1)])
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def ModelInfer(self, req, timeout):
        return self.stub.ModelInfer(req, timeout=timeout)

    def close(self):
        self.channel.close()


# ---------------------------------------------------------------------------------------------


def temp_base():
    """$TMPDIR if set, else /dev/shm when usable (removing ~1800 directories from an ext4 /tmp
    takes seconds), else the default."""
    if os.environ.get("TMPDIR"):
        return None
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("ONNXD_BIN", os.path.join(ROOT, "build", "onnxd")),
                    help="server binary (default $ONNXD_BIN or build/onnxd)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="ONNX node test directory")
    ap.add_argument("--filter", default="", help="only tests whose name contains this")
    ap.add_argument("--limit", type=int, default=0, help="only the first N tests (after --filter)")
    ap.add_argument("--jobs", type=int, default=3, help="concurrent client connections")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    ap.add_argument("--server-args", default="", help="extra server flags, e.g. '--intra-op-threads 2'")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository and log")
    ap.add_argument("--no-server", action="store_true", help="only the in-process part")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every skip")
    args = ap.parse_args()
    t0 = time.monotonic()
    ort.set_default_logger_severity(4)

    if not os.path.isdir(args.data):
        print("conformance: no test data at %s (Debian package libonnx-testdata)" % args.data)
        print("0 passed, 1 failed")
        return 1
    names = sorted(n for n in os.listdir(args.data)
                   if args.filter in n and os.path.isfile(os.path.join(args.data, n, "model.onnx")))
    if args.limit > 0:
        names = names[: args.limit]

    # 1. eligibility and reference outputs, in process
    cases, skips = [], collections.OrderedDict()
    skip_detail = collections.defaultdict(list)
    for n in names:
        try:
            cases.append(prepare(n, args.data))
        except Skip as s:
            skips[n] = s.category
            skip_detail[s.category].append((n, s.detail))
    t_ref = time.monotonic() - t0
    ort_ok = sum(1 for c in cases if c.ort_matches_expected)
    json_skips = collections.Counter(c.json_skip for c in cases if c.json_skip)

    if args.verbose:
        for cat, lst in skip_detail.items():
            for n, d in lst:
                print("skip %s: %s%s" % (n, cat, (" (%s)" % d) if d else ""))
        for c in cases:
            if c.json_skip:
                print("skip %s [json]: %s" % (c.name, c.json_skip))
            if not c.ort_matches_expected:
                print("note %s: in-process ORT differs from the expected output (%s)" % (c.name, c.mismatch_detail))

    failures = []   # (test, encoding, reason)
    failed_tests = set()
    done = set()    # tests whose requests all ran
    server_problem = None
    tmp = tempfile.mkdtemp(prefix="onnxd-conformance-", dir=temp_base())
    server = None
    t_load = t_run = 0.0
    try:
        if args.no_server:
            pass
        elif not cases:
            pass
        elif not os.access(args.bin, os.X_OK):
            server_problem = "no server binary at %s (make build/onnxd)" % args.bin
        else:
            # 2. repository and server
            repo = os.path.join(tmp, "models")
            for c in cases:
                d = os.path.join(repo, c.name, "1")
                os.makedirs(d)
                shutil.copyfile(c.model_path, os.path.join(d, "model.onnx"))
            port, grpc_port = free_port(), free_port()
            t1 = time.monotonic()
            server = Server(args.bin, repo, os.path.join(tmp, "onnxd.log"), port, grpc_port,
                            shlex.split(args.server_args))
            problem = server.wait_ready(args.timeout)
            t_load = time.monotonic() - t1
            if problem:
                server_problem = problem
            else:
                client = Client(port, args.request_timeout)
                gclient = GrpcClient(grpc_port, args.request_timeout)

                def one(c):
                    res = []
                    for dname, tin, ref in c.datasets:
                        for enc, fn in (("json", run_json), ("binary", run_binary),
                                        ("grpc", run_grpc)):
                            if enc == "json" and c.json_skip:
                                continue
                            try:
                                why = fn(gclient if enc == "grpc" else client, c, tin, ref)
                            except (OSError, http.client.HTTPException) as e:
                                why = "connection: %s" % short(repr(e), 120)
                                if not server.alive():
                                    why += " (server died)"
                            if why:
                                label = enc if len(c.datasets) == 1 else "%s %s" % (enc, dname)
                                res.append((c.name, label, why))
                    return res

                t2 = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as ex:
                    futs = [ex.submit(one, c) for c in cases]
                    for c, fut in zip(cases, futs):  # in test order, as they finish
                        done.add(c.name)
                        for f in fut.result():
                            failures.append(f)
                            failed_tests.add(f[0])
                            print("FAIL %s [%s]: %s" % f, flush=True)
                        if not server.alive():
                            for other in futs:
                                other.cancel()
                            break
                t_run = time.monotonic() - t2
                client.close()
                gclient.close()
                if not server.alive():
                    server_problem = "server died during the run (status %s)" % server.proc.returncode
    finally:
        if server is not None:
            stop_problem = server.stop()
            server_problem = server_problem or stop_problem
            if server_problem:
                print("server log (last lines):")
                print(server.log_tail())
        if args.keep:
            print("kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    n_el = len(cases)
    if server_problem:
        not_run = n_el - len(done)
        print("FAIL <server>: %s%s" % (server_problem, "; %d tests not run" % not_run if not_run else ""))
    if args.no_server:
        n_fail = n_pass = 0
    else:
        # Tests never run (the server did not start or died) count as failed.
        n_pass = len(done - failed_tests)
        n_fail = n_el - n_pass
    n_skip = len(skips)
    total = time.monotonic() - t0
    print("conformance: %d eligible, %d passed, %d failed, %d skipped (of %d tests; %.1f s: "
          "reference %.1f s, load %.1f s, requests %.1f s)"
          % (n_el, n_pass, n_fail, n_skip, len(names), total, t_ref, t_load, t_run))
    for cat, k in collections.Counter(skips.values()).most_common():
        print("  skipped, %s: %d" % (cat, k))
        if cat in ("ORT cannot load", "ORT run fails") and not args.verbose:
            for n, d in skip_detail[cat]:
                print("    %s: %s" % (n, d))
    for cat, k in json_skips.most_common():
        print("  json encoding skipped (binary checked), %s: %d" % (cat, k))
    if not args.no_server and not server_problem:
        for enc in ("json", "binary", "grpc"):
            tried = [c for c in cases if not (enc == "json" and c.json_skip)]
            bad = {f[0] for f in failures if f[1].split(" ")[0] == enc}
            print("  over %s: %d of %d tests passed" % (enc, sum(c.name not in bad for c in tried),
                                                       len(tried)))
    print("  in-process ORT matches the expected outputs in %d of %d eligible tests" % (ort_ok, n_el))
    # A server problem after every test ran (e.g. a sanitizer report at exit) counts as one
    # more failure; otherwise the tests it kept from running are the failures.
    extra = 1 if server_problem and len(done) == n_el else 0
    print("%d passed, %d failed, %d skipped" % (n_pass, n_fail + extra, n_skip))
    return 1 if (n_fail or server_problem) else 0


if __name__ == "__main__":
    sys.exit(main())
