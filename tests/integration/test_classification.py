"""Triton's classification extension: an output asked with "classification": K (tritonclient's
InferRequestedOutput(name, class_count=K)) comes back as a BYTES tensor of the top K entries of
each row, "score:index[:label]". Checked against numpy's stable top-K of the raw output of the
same request (identity models, so ties are forced), over REST (JSON and binary outputs) and
gRPC, with and without a label file, batch > 1, K > classes, merged batches, and the errors.
"""
import concurrent.futures as cf
import http.client
import json
import os

import numpy as np
import pytest

from conftest import _onnx_bytes, build_repo

LABELS = "zero\n\ntwo\r\n"  # class 1: an empty line, 3 and 4: no line (no label either)


def _identity_model(name, specs):
    """Identity per (input, output, onnx type, shape) in specs."""
    from onnx import helper

    nodes = [helper.make_node("Identity", [i], [o]) for i, o, _, _ in specs]
    ins = [helper.make_tensor_value_info(i, t, s) for i, _, t, s in specs]
    outs = [helper.make_tensor_value_info(o, t, s) for _, o, t, s in specs]
    return _onnx_bytes(nodes, name, ins, outs)


@pytest.fixture(scope="module")
def cls_server(server_factory, tmp_path_factory):
    from onnx import TensorProto as TP

    batch = _identity_model("cls", [("x", "y", TP.FLOAT, ["N", 5]),
                                    ("x2", "y2", TP.FLOAT, ["N", 2, 3])])
    types = _identity_model("cls_types", [("xi", "yi", TP.INT64, ["N", 4]),
                                          ("xs", "ys", TP.STRING, ["N", 1]),
                                          ("xh", "yh", TP.FLOAT16, ["N", 2])])
    nb = _identity_model("cls_nb", [("x", "y", TP.FLOAT, [2, 3])])
    labelled = {"max_batch_size": 8,
                "dynamic_batching": {"max_queue_delay_microseconds": 20000},
                "output": [{"name": "y", "label_filename": "labels.txt"}]}
    root = build_repo(tmp_path_factory.mktemp("cls_repo"), {
        "cls": {"model": batch, "config": {"max_batch_size": 8}},
        "cls_labels": {"model": batch, "config": labelled,
                       "files": {"labels.txt": LABELS.encode()}},
        "cls_pbtxt": {"model": batch, "files": {
            "config.pbtxt": b'max_batch_size: 8\noutput [ { name: "y" label_filename: "sub/l.txt" } ]\n',
            "sub/l.txt": b"a\nb\nc\nd\ne\nf\n"}},
        "cls_types": {"model": types},
        "cls_nb": {"model": nb},
        "cls_missing": {"model": batch, "config": {
            "output": [{"name": "y", "label_filename": "nope.txt"}]}},
        "cls_huge": {"model": batch, "config": {
            "output": [{"name": "y", "label_filename": "big.txt"}]}},
        "cls_escape": {"model": batch, "config": {
            "output": [{"name": "y", "label_filename": "../cls/config.json"}]}},
    })
    with open(root / "cls_huge" / "big.txt", "wb") as f:  # sparse: only its size matters
        f.truncate(16 * 1024 * 1024 + 1)
    return server_factory(root, name="cls")


def _http(s):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(s.url, connection_timeout=10.0, network_timeout=30.0)


def _grpc(s):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(s.grpc_url)


def _expected(raw, k, batched=True, labels=None):
    """numpy's stable top-K of raw, as Triton formats it."""
    rows = raw.reshape(raw.shape[0], -1) if batched and raw.ndim > 0 else raw.reshape(1, -1)
    out = []
    for row in rows:
        order = np.argsort(-row.astype(np.float64) if row.dtype.kind == "f" else -row,
                           kind="stable")[:k]
        strs = []
        for i in order:
            v = row[i]
            s = ("%f" % float(v) if row.dtype.kind == "f" else str(int(v))) + f":{i}"
            if labels and i < len(labels) and labels[i]:
                s += ":" + labels[i]
            strs.append(s)
        out.append(strs)
    a = np.array(out, dtype=object)
    return a if batched and raw.ndim > 0 else a.reshape(-1)


def _strs(a):
    return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(a)


def _infer_http(s, model, inputs, outputs):
    import tritonclient.http as httpclient

    ins = []
    for name, arr in inputs.items():
        dt = "BYTES" if arr.dtype == object else {np.float32: "FP32", np.int64: "INT64",
                                                  np.float16: "FP16"}[arr.dtype.type]
        i = httpclient.InferInput(name, list(arr.shape), dt)
        i.set_data_from_numpy(arr, binary_data=False)
        ins.append(i)
    outs = [httpclient.InferRequestedOutput(n, binary_data=b, class_count=k)
            for n, k, b in outputs]
    c = _http(s)
    try:
        return c.infer(model, ins, outputs=outs)
    finally:
        c.close()


def _infer_grpc(s, model, inputs, outputs):
    import tritonclient.grpc as grpcclient

    ins = []
    for name, arr in inputs.items():
        i = grpcclient.InferInput(name, list(arr.shape),
                                  {np.float32: "FP32", np.int64: "INT64"}[arr.dtype.type])
        i.set_data_from_numpy(arr)
        ins.append(i)
    outs = [grpcclient.InferRequestedOutput(n, class_count=k) for n, k in outputs]
    c = _grpc(s)
    try:
        return c.infer(model, ins, outputs=outs)
    finally:
        c.close()


def _x(rows=3):
    # Ties on purpose: equal values in a row, and rows equal to each other.
    x = np.array([[0.5, 0.25, 0.5, -1.0, 0.25], [3.0, 3.0, 3.0, 3.0, 3.0],
                  [-2.5, 7.125, 0.0, 7.125, -0.0]], np.float32)
    return np.concatenate([x] * ((rows + 2) // 3))[:rows]


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("k", [1, 2, 5, 9])
def test_http_topk_against_raw(cls_server, binary, k):
    x = _x(3)
    r = _infer_http(cls_server, "cls", {"x": x, "x2": x[:, :1].repeat(6, 1).reshape(3, 2, 3)},
                    [("y", k, binary), ("y2", 0, binary)])
    raw = r.as_numpy("y2")  # the raw output, still there beside the classified one
    assert raw.shape == (3, 2, 3) and raw.dtype == np.float32
    got = r.get_output("y")
    assert got["datatype"] == "BYTES" and got["shape"] == [3, min(k, 5)], got
    assert (_strs(r.as_numpy("y")) == _expected(x, k)).all(), r.as_numpy("y")


@pytest.mark.parametrize("k", [1, 3, 5, 6, 100])
def test_grpc_topk_against_raw(cls_server, k):
    x = _x(3)
    x2 = np.arange(18, dtype=np.float32).reshape(3, 2, 3)[:, ::-1].copy()
    r = _infer_grpc(cls_server, "cls", {"x": x, "x2": x2}, [("y", k), ("y2", k)])
    out = {o.name: o for o in r.get_response().outputs}
    assert out["y"].datatype == "BYTES" and list(out["y"].shape) == [3, min(k, 5)]
    assert (_strs(r.as_numpy("y")) == _expected(x, k)).all(), r.as_numpy("y")
    # A [N, 2, 3] output: each row is classified over its 6 elements flattened.
    assert list(out["y2"].shape) == [3, min(k, 6)]
    assert (_strs(r.as_numpy("y2")) == _expected(x2, k)).all(), r.as_numpy("y2")


def test_raw_and_classified_in_one_request(cls_server):
    """The same output cannot be asked twice, so the raw tensor comes from a second output of
    the same data; over gRPC too."""
    x = _x(2)
    r = _infer_grpc(cls_server, "cls", {"x": x, "x2": np.zeros((2, 2, 3), np.float32)},
                    [("y", 2), ("y2", 0)])
    assert r.as_numpy("y2").dtype == np.float32 and r.as_numpy("y2").shape == (2, 2, 3)
    r2 = _infer_http(cls_server, "cls", {"x": x, "x2": np.zeros((2, 2, 3), np.float32)},
                     [("y", 0, True)])
    assert (r2.as_numpy("y") == x).all()
    assert (_strs(r.as_numpy("y")) == _expected(r2.as_numpy("y"), 2)).all()


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_labels(cls_server, proto):
    x = np.array([[0.1, 0.2, 0.3, 0.4, 0.0], [5, 4, 3, 2, 1]], np.float32)
    if proto == "http":
        r = _infer_http(cls_server, "cls_labels", {"x": x, "x2": np.zeros((2, 2, 3), np.float32)},
                        [("y", 5, True)])
    else:
        r = _infer_grpc(cls_server, "cls_labels", {"x": x, "x2": np.zeros((2, 2, 3), np.float32)},
                        [("y", 5)])
    got = _strs(r.as_numpy("y"))
    assert got.tolist() == [
        ["0.400000:3", "0.300000:2:two", "0.200000:1", "0.100000:0:zero", "0.000000:4"],
        ["5.000000:0:zero", "4.000000:1", "3.000000:2:two", "2.000000:3", "1.000000:4"]]
    assert (got == _expected(x, 5, labels=["zero", "", "two"])).all()


def test_labels_from_pbtxt_and_config(cls_server):
    x = _x(1)
    r = _infer_http(cls_server, "cls_pbtxt", {"x": x, "x2": np.zeros((1, 2, 3), np.float32)},
                    [("y", 2, False)])
    assert _strs(r.as_numpy("y")).tolist() == [["0.500000:0:a", "0.500000:2:c"]]
    for model, file in (("cls_labels", "labels.txt"), ("cls_pbtxt", "sub/l.txt")):
        c = http.client.HTTPConnection("127.0.0.1", cls_server.port, timeout=10)
        c.request("GET", f"/v2/models/{model}/config")
        cfg = json.loads(c.getresponse().read())
        c.close()
        assert cfg["output"] == [{"name": "y", "label_filename": file}], cfg
    c = http.client.HTTPConnection("127.0.0.1", cls_server.port, timeout=10)
    c.request("GET", "/v2/models/cls/config")
    assert "output" not in json.loads(c.getresponse().read())
    c.close()


def test_server_metadata_lists_the_extension(cls_server):
    c = _http(cls_server)
    assert "classification" in c.get_server_metadata()["extensions"]
    c.close()
    g = _grpc(cls_server)
    assert "classification" in g.get_server_metadata().extensions
    g.close()


def test_non_batching_model_classifies_the_whole_tensor(cls_server):
    x = np.array([[1, 6, 2], [6, 0, 5]], np.float32)
    for k in (1, 4, 10):
        r = _infer_http(cls_server, "cls_nb", {"x": x}, [("y", k, True)])
        assert r.get_output("y")["shape"] == [min(k, 6)]
        assert (_strs(r.as_numpy("y")) == _expected(x, k, batched=False)).all()
        g = _infer_grpc(cls_server, "cls_nb", {"x": x}, [("y", k)])
        assert (_strs(g.as_numpy("y")) == _expected(x, k, batched=False)).all()


def test_integer_output(cls_server):
    xi = np.array([[7, -3, 7, 2**40], [0, 0, -1, 0]], np.int64)
    inputs = {"xi": xi, "xs": np.array([[b"a"], [b"b"]], dtype=object),
              "xh": np.zeros((2, 2), np.float16)}
    r = _infer_http(cls_server, "cls_types", inputs, [("yi", 3, False), ("ys", 0, False)])
    assert _strs(r.as_numpy("yi")).tolist() == [["1099511627776:3", "7:0", "7:2"],
                                                ["0:0", "0:1", "0:3"]]
    assert (_strs(r.as_numpy("yi")) == _expected(xi, 3)).all()


def test_dynamic_batching_rows_stay_per_request(cls_server):
    """Requests merged into one run (20 ms queue delay) are each classified on their own rows."""
    rng = np.random.default_rng(7)
    xs = [np.round(rng.standard_normal((1 + i % 3, 5)) * 2).astype(np.float32) for i in range(12)]

    def one(i):
        x = xs[i]
        z = np.zeros((x.shape[0], 2, 3), np.float32)
        if i % 2:
            r = _infer_grpc(cls_server, "cls_labels", {"x": x, "x2": z}, [("y", 3)])
        else:
            r = _infer_http(cls_server, "cls_labels", {"x": x, "x2": z}, [("y", 3, i % 4 == 0)])
        return _strs(r.as_numpy("y"))

    with cf.ThreadPoolExecutor(12) as ex:
        got = list(ex.map(one, range(12)))
    for i, g in enumerate(got):
        assert (g == _expected(xs[i], 3, labels=["zero", "", "two"])).all(), (i, g)
    c = http.client.HTTPConnection("127.0.0.1", cls_server.port, timeout=10)
    c.request("GET", "/v2/models/cls_labels/stats")
    st = json.loads(c.getresponse().read())["model_stats"][0]
    c.close()
    assert st["execution_count"] < st["inference_count"], st  # some requests did merge


def _post(s, model, body):
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
    c.request("POST", f"/v2/models/{model}/infer", json.dumps(body),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    out = (r.status, json.loads(r.read()))
    c.close()
    return out


X_IN = {"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}
X2_IN = {"name": "x2", "shape": [1, 2, 3], "datatype": "FP32", "data": [0] * 6}


@pytest.mark.parametrize("value", [0, -1, 2.5, "3", True, None, [3]])
def test_k_must_be_a_positive_integer(cls_server, value):
    st, body = _post(cls_server, "cls", {"inputs": [X_IN, X2_IN], "outputs": [
        {"name": "y", "parameters": {"classification": value}}]})
    assert st == 400 and body == {
        "error": "output 'y': classification must be a positive integer"}, body


def test_grpc_k_must_be_positive(cls_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    c = _grpc(cls_server)
    i = grpcclient.InferInput("x", [1, 5], "FP32")
    i.set_data_from_numpy(np.ones((1, 5), np.float32))
    i2 = grpcclient.InferInput("x2", [1, 2, 3], "FP32")
    i2.set_data_from_numpy(np.zeros((1, 2, 3), np.float32))
    o = grpcclient.InferRequestedOutput("y", class_count=0)
    o._output.parameters["classification"].int64_param = -2  # class_count=0 sets nothing
    with pytest.raises(InferenceServerException) as e:
        c.infer("cls", [i, i2], outputs=[o])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT", e.value
    assert "output 'y': classification must be a positive integer" in e.value.message()
    c.close()


@pytest.mark.parametrize("output,dtype", [("ys", "BYTES"), ("yh", "FP16")])
def test_unsupported_datatype(cls_server, output, dtype):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    body = {"inputs": [
        {"name": "xi", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]},
        {"name": "xs", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]},
        {"name": "xh", "shape": [1, 2], "datatype": "FP16", "data": [1, 2]}],
        "outputs": [{"name": output, "parameters": {"classification": 1}}]}
    st, resp = _post(cls_server, "cls_types", body)
    msg = (f"output '{output}': classification is not available for datatype {dtype} "
           "(it needs an integer, FP32 or FP64 output)")
    assert st == 400 and resp == {"error": msg}, resp
    c = _grpc(cls_server)
    ins = []
    for name, shape, dt, arr in (("xi", [1, 4], "INT64", np.ones((1, 4), np.int64)),
                                 ("xs", [1, 1], "BYTES", np.array([[b"a"]], dtype=object)),
                                 ("xh", [1, 2], "FP16", np.ones((1, 2), np.float16))):
        i = grpcclient.InferInput(name, shape, dt)
        i.set_data_from_numpy(arr)
        ins.append(i)
    with pytest.raises(InferenceServerException) as e:
        c.infer("cls_types", ins, outputs=[grpcclient.InferRequestedOutput(output, class_count=1)])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and e.value.message() == msg
    c.close()


def test_unknown_output(cls_server):
    st, body = _post(cls_server, "cls", {"inputs": [X_IN, X2_IN], "outputs": [
        {"name": "nope", "parameters": {"classification": 2}}]})
    assert st == 400 and "'nope'" in body["error"], body


def test_label_file_problems_fail_the_load(cls_server):
    for name, sub in (("cls_missing", "label_filename 'nope.txt' not found in the model directory"),
                      ("cls_huge", "label_filename big.txt: larger than 16 MiB"),
                      ("cls_escape", "must be a relative path inside the model directory")):
        c = http.client.HTTPConnection("127.0.0.1", cls_server.port, timeout=10)
        c.request("GET", f"/v2/models/{name}/ready")
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
        assert r.status != 200 and sub in body.get("error", body.get("reason", "")), body
    assert os.path.getsize(cls_server.repo + "/cls_huge/big.txt") == 16 * 1024 * 1024 + 1
