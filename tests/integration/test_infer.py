"""Inference through the official Triton client, in both encodings (JSON and binary tensors)."""

import functools
import json
import struct
import zlib

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient

from oip import f32_bits, post_infer, split_binary_response

INT_TYPES = {
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
}
FLOAT_TYPES = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
SHAPES = [(1, 1), (2, 3), (3, 1), (1, 7), (16, 33)]

# Strings for BYTES: empty, ASCII, JSON-special characters, control characters, non-ASCII
# (2-, 3- and 4-byte UTF-8, the last needing a surrogate pair in JSON's \u escapes).
TEXTS = ["", "hello", 'quote " backslash \\ slash /', "tab\tnewline\ncr\r", "\x01\x1f\x7f",
         "héllo wörld", "日本語テキスト", "emoji 🙂🚀", "a" * 300]


def rng_for(*key):
    """A generator seeded from key (stable across runs, unlike hash())."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def make_array(dtype, shape, json_safe):
    """Test data for a datatype, including the type's extremes (and, when the encoding can
    carry them, NaN, infinities, -0.0 and subnormals)."""
    n = int(np.prod(shape))
    rng = rng_for(dtype, shape, json_safe)
    if dtype == "BOOL":
        return rng.integers(0, 2, n).astype(bool).reshape(shape)
    if dtype in INT_TYPES:
        t = INT_TYPES[dtype]
        info = np.iinfo(t)
        a = rng.integers(info.min, info.max, n, dtype=t, endpoint=True)
        special = np.array([info.min, info.max, 0, 1, info.max - 1], dtype=t)
        a[: min(n, len(special))] = special[: min(n, len(special))]
        return a.reshape(shape)
    if dtype in FLOAT_TYPES or dtype == "BF16":
        t = ml_dtypes.bfloat16 if dtype == "BF16" else FLOAT_TYPES[dtype]
        fi = ml_dtypes.finfo(t) if dtype == "BF16" else np.finfo(t)
        # Wide spread of magnitudes, both signs.
        mant = rng.standard_normal(n)
        exp = rng.uniform(np.log10(float(fi.tiny)) + 1, np.log10(float(fi.max)) - 1, n)
        a = (mant * 10.0 ** exp).astype(t)
        special = [float(fi.max), -float(fi.max), float(fi.tiny), float(fi.smallest_subnormal),
                   1.0, -2.5, 0.1, 1 / 3]
        if not json_safe:
            special = [np.nan, np.inf, -np.inf, -0.0] + special
        k = min(n, len(special))
        a[:k] = np.array(special[:k]).astype(t)
        return a.reshape(shape)
    if dtype == "BYTES":
        items = [TEXTS[i % len(TEXTS)].encode() for i in range(n)]
        if not json_safe:
            items = [b"\xff\xfe not utf-8 \x80"] + items[1:] if n else items
        a = np.empty(n, dtype=np.object_)
        a[:] = items
        return a.reshape(shape)
    raise AssertionError(dtype)


def same(expected, got, dtype):
    """Exact comparison: bits for floats (NaN payloads aside), values otherwise."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if dtype == "BYTES":
        assert list(got.reshape(-1)) == list(expected.reshape(-1))
    elif dtype in FLOAT_TYPES or dtype == "BF16":
        e = np.ascontiguousarray(expected).reshape(-1)
        g = np.ascontiguousarray(got).reshape(-1)
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        nan = np.isnan(e.astype(np.float64))
        assert np.array_equal(np.isnan(g.astype(np.float64)), nan), "NaN positions differ"
        ib = {2: np.uint16, 4: np.uint32, 8: np.uint64}[e.dtype.itemsize]
        bad = np.flatnonzero((e.view(ib) != g.view(ib)) & ~nan)
        assert bad.size == 0, f"{bad.size} elements differ, first at {bad[0]}: " \
            f"expected {e[bad[0]]!r} got {g[bad[0]]!r}"
    else:
        assert got.dtype == np.dtype(expected.dtype), (got.dtype, expected.dtype)
        assert np.array_equal(got, expected)


def infer_identity(client, dtype, arr, binary_in, binary_out, **kw):
    name = "identity_" + dtype.lower()
    inp = httpclient.InferInput("INPUT0", list(arr.shape), dtype)
    inp.set_data_from_numpy(arr, binary_data=binary_in)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out)
    return client.infer(name, [inp], outputs=[out], **kw)


ALL = ["BOOL", *INT_TYPES, "FP16", "FP32", "FP64", "BYTES"]


@pytest.mark.parametrize("dtype", ALL)
def test_identity_json(client, dtype):
    for shape in SHAPES:
        arr = make_array(dtype, shape, json_safe=True)
        res = infer_identity(client, dtype, arr, False, False)
        out = res.get_output("OUTPUT0")
        assert "data" in out and "binary_data_size" not in out.get("parameters", {}), out
        assert out["datatype"] == dtype and out["shape"] == list(shape)
        got = res.as_numpy("OUTPUT0")
        if dtype == "BYTES":  # JSON strings come back as str
            got = np.array([s.encode() for s in got.reshape(-1)], dtype=np.object_).reshape(shape)
        same(arr, got, dtype)


@pytest.mark.parametrize("dtype", ALL + ["BF16"])
def test_identity_binary(client, dtype):
    for shape in SHAPES:
        arr = make_array(dtype, shape, json_safe=False)
        res = infer_identity(client, dtype, arr, True, True)
        out = res.get_output("OUTPUT0")
        assert "data" not in out and out["parameters"]["binary_data_size"] >= 0
        assert out["datatype"] == dtype and out["shape"] == list(shape)
        same(arr, res.as_numpy("OUTPUT0"), dtype)


@pytest.mark.parametrize("dtype", ["FP32", "INT64", "BYTES", "BOOL"])
def test_identity_binary_in_json_out(client, dtype):
    arr = make_array(dtype, (2, 3), json_safe=True)
    res = infer_identity(client, dtype, arr, True, False)
    got = res.as_numpy("OUTPUT0")
    if dtype == "BYTES":
        got = np.array([s.encode() for s in got.reshape(-1)], dtype=np.object_).reshape(2, 3)
    same(arr, got, dtype)


@pytest.mark.parametrize("dtype", ["FP32", "INT8", "BYTES"])
def test_identity_json_in_binary_out(client, dtype):
    arr = make_array(dtype, (3, 2), json_safe=True)
    res = infer_identity(client, dtype, arr, False, True)
    same(arr, res.as_numpy("OUTPUT0"), dtype)


def test_default_outputs_binary(client):
    """No requested outputs: the client asks binary_data_output; every output comes back."""
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.full((1, 16), 0.5, dtype=np.float32)
    ins = [httpclient.InferInput("INPUT0", [1, 16], "FP32"),
           httpclient.InferInput("INPUT1", [1, 16], "FP32")]
    ins[0].set_data_from_numpy(a, binary_data=False)
    ins[1].set_data_from_numpy(b, binary_data=True)
    res = client.infer("add_sub_fp32", ins)
    outs = res.get_response()["outputs"]
    assert sorted(o["name"] for o in outs) == ["OUTPUT0", "OUTPUT1"]
    for o in outs:
        assert o["parameters"]["binary_data_size"] == 64
    assert np.array_equal(res.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_identity_nul_bytes(client):
    arr = np.array([[b"\x00", b"a\x00b", b"\x00\x00\x00", b"end\x00"]], dtype=np.object_)
    res = infer_identity(client, "BYTES", arr, True, True)
    same(arr, res.as_numpy("OUTPUT0"), "BYTES")


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("dtype", ["FP32", "BYTES", "INT32"])
def test_identity_empty_tensor(client, dtype, binary):
    arr = make_array(dtype, (0, 3), json_safe=True)
    res = infer_identity(client, dtype, arr, binary, binary)
    out = res.get_output("OUTPUT0")
    assert out["shape"] == [0, 3]
    assert res.as_numpy("OUTPUT0").shape == (0, 3)


@pytest.mark.parametrize("dtype,np_t", [("FP32", np.float32), ("INT32", np.int32)])
@pytest.mark.parametrize("binary", [False, True])
def test_add_sub(client, dtype, np_t, binary):
    rng = rng_for("add_sub", dtype)
    if dtype == "FP32":
        a = rng.standard_normal((1, 16)).astype(np_t) * 100
        b = rng.standard_normal((1, 16)).astype(np_t)
    else:
        a = rng.integers(-(2**30), 2**30, (1, 16), dtype=np_t)
        b = rng.integers(-(2**30), 2**30, (1, 16), dtype=np_t)
    ins = [httpclient.InferInput("INPUT0", [1, 16], dtype),
           httpclient.InferInput("INPUT1", [1, 16], dtype)]
    ins[0].set_data_from_numpy(a, binary_data=binary)
    ins[1].set_data_from_numpy(b, binary_data=binary)
    outs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
            httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary)]
    res = client.infer("add_sub_" + dtype.lower(), ins, outputs=outs)
    r = res.get_response()
    assert r["model_name"] == "add_sub_" + dtype.lower()
    assert r["model_version"] == "1"
    assert [o["name"] for o in r["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert np.array_equal(res.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(res.as_numpy("OUTPUT1"), a - b)
    assert res.as_numpy("OUTPUT0").dtype == np_t


def _add_sub_inputs(binary=False):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32) * 3
    ins = [httpclient.InferInput("INPUT0", [1, 16], "INT32"),
           httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    ins[0].set_data_from_numpy(a, binary_data=binary)
    ins[1].set_data_from_numpy(b, binary_data=binary)
    return a, b, ins


@pytest.mark.parametrize("which", ["OUTPUT0", "OUTPUT1"])
def test_requested_output_subset(client, which):
    a, b, ins = _add_sub_inputs()
    res = client.infer("add_sub_int32", ins,
                       outputs=[httpclient.InferRequestedOutput(which, binary_data=False)])
    outs = res.get_response()["outputs"]
    assert [o["name"] for o in outs] == [which]
    assert np.array_equal(res.as_numpy(which), a + b if which == "OUTPUT0" else a - b)


def test_requested_outputs_in_request_order(client):
    a, b, ins = _add_sub_inputs()
    res = client.infer("add_sub_int32", ins,
                       outputs=[httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
                                httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)])
    names = [o["name"] for o in res.get_response()["outputs"]]
    assert sorted(names) == ["OUTPUT0", "OUTPUT1"]


@pytest.mark.parametrize("binary_first", [True, False])
def test_output_binary_mix(client, binary_first):
    a, b, ins = _add_sub_inputs(binary=True)
    outs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_first),
            httpclient.InferRequestedOutput("OUTPUT1", binary_data=not binary_first)]
    res = client.infer("add_sub_int32", ins, outputs=outs)
    by_name = {o["name"]: o for o in res.get_response()["outputs"]}
    bin_name, json_name = ("OUTPUT0", "OUTPUT1") if binary_first else ("OUTPUT1", "OUTPUT0")
    assert by_name[bin_name]["parameters"]["binary_data_size"] == 64
    assert "data" not in by_name[bin_name]
    assert by_name[json_name]["data"] == (a + b if json_name == "OUTPUT0" else a - b) \
        .reshape(-1).tolist()
    assert np.array_equal(res.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(res.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("rid", ["req-42", 'with "quotes" and \\ and ünïcödé 🙂', ""])
@pytest.mark.parametrize("binary", [False, True])
def test_request_id_echoed(client, rid, binary):
    arr = np.ones((1, 2), dtype=np.float32)
    res = infer_identity(client, "FP32", arr, binary, binary, request_id=rid)
    r = res.get_response()
    if rid:
        assert r["id"] == rid
    else:  # the client sends no id: the response has none (or an empty one)
        assert r.get("id", "") == ""


@pytest.mark.parametrize("version,add", [("1", 1.0), ("3", 3.0), ("", 3.0)])
@pytest.mark.parametrize("binary", [False, True])
def test_versions(client, version, add, binary):
    x = np.array([0.5, -1.0, 10.0, 0.0], dtype=np.float32)
    inp = httpclient.InferInput("INPUT0", [4], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    res = client.infer("versioned", [inp], model_version=version,
                       outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)])
    assert np.array_equal(res.as_numpy("OUTPUT0"), x + np.float32(add))
    r = res.get_response()
    assert r["model_name"] == "versioned"
    assert r["model_version"] == ("3" if version == "" else version)


def test_fixed_shape(client):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    inp = httpclient.InferInput("x", [2, 3], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    res = client.infer("fixed_fp32", [inp],
                       outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
    assert np.array_equal(res.as_numpy("y"), 2 * x)


def test_scalar_rank0(client):
    x = np.array(1.5, dtype=np.float32)
    u = np.array(2.25, dtype=np.float32)
    ins = [httpclient.InferInput("x", [], "FP32"), httpclient.InferInput("u", [], "FP32")]
    ins[0].set_data_from_numpy(x, binary_data=False)
    ins[1].set_data_from_numpy(u, binary_data=True)
    res = client.infer("scalar_fp32", ins,
                       outputs=[httpclient.InferRequestedOutput("y", binary_data=False)])
    out = res.get_output("y")
    assert out["shape"] == [] and out["data"] == [3.75]


# ---- BF16: the client only sends it binary; JSON BF16 goes over a raw connection.

def test_bf16_json_raw(conn):
    vals = np.array([1.0, -2.5, 0.1, 3.0e38, 1e-40, -0.0078125], dtype=ml_dtypes.bfloat16)
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BF16", "shape": [2, 3],
                                   "data": [float(v) for v in vals]}],
                       "outputs": [{"name": "OUTPUT0"}]}).encode()
    r = post_infer(conn, "/v2/models/identity_bf16/infer", body)
    assert r.status == 200, r
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BF16" and out["shape"] == [2, 3]
    got = np.array([float(v) for v in out["data"]], dtype=np.float64).astype(ml_dtypes.bfloat16)
    assert np.array_equal(got.view(np.uint16), vals.view(np.uint16))


def test_bf16_json_rounding_raw(conn):
    """Decimal input is rounded to nearest-even bfloat16 (1.00390625 is halfway between
    1.0 and 1.0078125: ties to even gives 1.0; 1.0040 rounds up)."""
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BF16", "shape": [1, 3],
                                   "data": [1.00390625, 1.004, 1.01171875]}]}).encode()
    r = post_infer(conn, "/v2/models/identity_bf16/infer", body)
    assert r.status == 200, r
    assert r.json()["outputs"][0]["data"] == [1.0, 1.0078125, 1.015625]


def test_bf16_binary_raw(conn):
    vals = np.array([[1.0, -2.5, np.inf], [np.nan, -0.0, 1e-40]], dtype=ml_dtypes.bfloat16)
    raw = vals.tobytes()
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BF16", "shape": [2, 3],
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]})
    r = post_infer(conn, "/v2/models/identity_bf16/infer", head.encode() + raw,
                   header_len=len(head))
    assert r.status == 200, r
    h, blobs = split_binary_response(r)
    assert blobs["OUTPUT0"] == raw


# ---- JSON number formatting, read exactly

def test_fp32_json_shortest_roundtrip(conn):
    """Outputs are printed so that they read back as the same float32; -0.0 keeps its sign."""
    vals = np.array([0.1, 1 / 3, -0.0, 1e-45, 3.4028235e38, 16777217.0, 1e10, 123456.789,
                     -1.17549435e-38, 2.5], dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 10],
                                   "data": [float(v) for v in vals]}]}).encode()
    r = post_infer(conn, "/v2/models/identity_fp32/infer", body)
    assert r.status == 200, r
    data = json.loads(r.body, parse_int=float)["outputs"][0]["data"]
    got = np.array(data, dtype=np.float64).astype(np.float32)
    assert np.array_equal(f32_bits(got), f32_bits(vals)), (data, vals)
    # shortest: no more significant digits than needed (at most 9 for float32)
    text = r.body.decode()
    for tok in text[text.index('"data"'):].split("[", 1)[1].split("]", 1)[0].split(","):
        mantissa = tok.strip().lstrip("-").lower().split("e")[0]
        significant = mantissa.replace(".", "").strip("0")
        assert len(significant) <= 9, tok


def test_fp64_json_exact(conn):
    vals = [0.1, 1 / 3, 5e-324, 1.7976931348623157e308, -2.2250738585072014e-308, 1e23, 9007199254740993.0]
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [1, len(vals)],
                                   "data": vals}]}).encode()
    r = post_infer(conn, "/v2/models/identity_fp64/infer", body)
    assert r.status == 200, r
    data = json.loads(r.body, parse_int=float)["outputs"][0]["data"]
    assert [struct.pack("<d", v) for v in data] == [struct.pack("<d", v) for v in vals]


def test_uint64_int64_extremes_json(conn):
    u = [0, 1, 2**63, 2**64 - 1]
    i = [-(2**63), 2**63 - 1, -1, 0]
    for model, vals, dt in (("identity_uint64", u, "UINT64"), ("identity_int64", i, "INT64")):
        body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": dt, "shape": [2, 2],
                                       "data": vals}]}).encode()
        r = post_infer(conn, f"/v2/models/{model}/infer", body)
        assert r.status == 200, r
        assert r.json()["outputs"][0]["data"] == vals


def test_nested_json_data_accepted(conn):
    """Triton accepts "data" nested like the shape as well as flat."""
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [2, 3],
                                   "data": [[1, 2, 3], [4, 5, 6]]}]}).encode()
    r = post_infer(conn, "/v2/models/identity_int32/infer", body)
    assert r.status == 200, r
    assert r.json()["outputs"][0]["data"] == [1, 2, 3, 4, 5, 6]


# ---- response format, checked on the wire

def test_json_response_shape(conn):
    body = json.dumps({"id": "abc", "inputs": [{"name": "INPUT0", "datatype": "INT32",
                                                "shape": [1, 2], "data": [7, -8]}]}).encode()
    r = post_infer(conn, "/v2/models/identity_int32/infer", body)
    assert r.status == 200, r
    assert r.header("Content-Type").split(";")[0] == "application/json"
    assert r.header("Content-Length") == str(len(r.body))
    assert r.header("Inference-Header-Content-Length") is None
    obj = r.json()
    assert set(obj) == {"model_name", "model_version", "id", "outputs"}
    assert obj["model_name"] == "identity_int32" and obj["model_version"] == "1"
    assert obj["id"] == "abc"
    assert obj["outputs"] == [{"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 2],
                               "data": [7, -8]}]


def test_binary_response_shape(conn):
    raw = np.array([[7, -8]], dtype=np.int32).tobytes()
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2],
                                   "parameters": {"binary_data_size": 8}}],
                       "parameters": {"binary_data_output": True}})
    r = post_infer(conn, "/v2/models/identity_int32/infer", head.encode() + raw,
                   header_len=len(head))
    assert r.status == 200, r
    assert r.header("Content-Type").split(";")[0] == "application/octet-stream"
    assert r.header("Content-Length") == str(len(r.body))
    h, blobs = split_binary_response(r)
    assert "id" not in h
    (o,) = h["outputs"]
    assert o["name"] == "OUTPUT0" and o["datatype"] == "INT32" and o["shape"] == [1, 2]
    assert o["parameters"]["binary_data_size"] == 8 and "data" not in o
    assert blobs["OUTPUT0"] == raw


def test_keep_alive_default(conn):
    for _ in range(3):
        conn.request("GET", "/v2/health/live")
        r = conn.read_response()
        assert r.status == 200
        assert (r.header("Connection") or "").lower() != "close"
        assert r.header("Content-Length") is not None


# ---- MobileNetV2 against in-process ONNX Runtime, bit for bit

@functools.lru_cache(maxsize=None)
def _mobilenet_session(path):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def mobilenet_ref(repo):
    sess = _mobilenet_session(str(repo / "mobilenetv2/1/model.onnx"))
    return lambda x: sess.run(None, {"input": x})[0]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("binary", [False, True])
def test_mobilenetv2(client, mobilenet_ref, batch, binary):
    x = rng_for("mobilenet", batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    expected = mobilenet_ref(x)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    res = client.infer("mobilenetv2", [inp],
                       outputs=[httpclient.InferRequestedOutput("output", binary_data=binary)])
    got = res.as_numpy("output")
    assert got.shape == (batch, 1000) and got.dtype == np.float32
    assert np.all(np.isfinite(got))
    mismatch = np.count_nonzero(f32_bits(got) != f32_bits(expected))
    assert mismatch == 0, (f"{mismatch} of {got.size} logits differ from onnxruntime; max abs "
                           f"diff {np.max(np.abs(got - expected))}")
