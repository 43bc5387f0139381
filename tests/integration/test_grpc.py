"""The gRPC front end through real clients: tritonclient.grpc (sync, async and streaming),
grpcio's generated stubs (typed contents, health service, compression) and raw calls."""

import queue
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from conftest import http_get, metric_value
from test_infer import ALL, SHAPES, make_array, same

# ---------------------------------------------------------------------------------------------
# Helpers


def ginfer_identity(gclient, dtype, arr, **kw):
    inp = grpcclient.InferInput("INPUT0", list(arr.shape), dtype)
    inp.set_data_from_numpy(arr)
    return gclient.infer("identity_" + dtype.lower(), [inp],
                         outputs=[grpcclient.InferRequestedOutput("OUTPUT0")], **kw)


def status_of(exc):
    """The gRPC status name of a tritonclient exception ("StatusCode.NOT_FOUND" -> NOT_FOUND)."""
    return str(exc.status()).split(".")[-1]


@pytest.fixture
def stub(server):
    ch = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(ch)
    ch.close()


# ---------------------------------------------------------------------------------------------
# Health and metadata


def test_server_live_ready_metadata(gclient):
    assert gclient.is_server_live()
    assert gclient.is_server_ready()
    md = gclient.get_server_metadata(as_json=True)
    assert md["name"] == "onnxd"
    assert set(md["extensions"]) >= {"model_repository", "statistics", "model_configuration"}


def test_model_metadata_matches_rest(gclient, server):
    for name in ["identity_fp32", "add_sub_int32", "mobilenetv2", "versioned"]:
        g = gclient.get_model_metadata(name, as_json=True)
        r = http_get(server.port, f"/v2/models/{name}")
        assert r.status == 200
        body = r.json()
        assert g["name"] == body["name"]
        assert g["versions"] == body["versions"]
        assert g["platform"] == body["platform"]
        for k in ("inputs", "outputs"):
            assert [(t["name"], t["datatype"], [int(d) for d in t.get("shape", [])])
                    for t in g[k]] == [(t["name"], t["datatype"], t["shape"]) for t in body[k]]


def test_model_ready(gclient):
    assert gclient.is_model_ready("identity_fp32")
    assert gclient.is_model_ready("versioned", "1")
    assert not gclient.is_model_ready("no_such_model")
    assert not gclient.is_model_ready("versioned", "99")


def test_model_metadata_unknown(gclient):
    with pytest.raises(InferenceServerException) as e:
        gclient.get_model_metadata("no_such_model")
    assert status_of(e.value) == "NOT_FOUND"
    assert e.value.message() == "unknown model"  # REST's message for the same request


def test_health_service(server):
    with grpc.insecure_channel(server.grpc_url) as ch:
        h = health_pb2_grpc.HealthStub(ch)
        for svc in ["", "inference.GRPCInferenceService"]:
            r = h.Check(health_pb2.HealthCheckRequest(service=svc), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:
            h.Check(health_pb2.HealthCheckRequest(service="other.Service"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        it = h.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(it).status == health_pb2.HealthCheckResponse.SERVING
        it.cancel()


def test_unimplemented_methods(gclient):
    with pytest.raises(InferenceServerException) as e:
        gclient.get_system_shared_memory_status()
    assert status_of(e.value) == "UNIMPLEMENTED"
    assert "shared memory" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        gclient.get_cuda_shared_memory_status()
    assert status_of(e.value) == "UNIMPLEMENTED"


# ---------------------------------------------------------------------------------------------
# Inference


@pytest.mark.parametrize("dtype", ALL + ["BF16"])
def test_identity_every_datatype(gclient, dtype):
    for shape in SHAPES:
        arr = make_array(dtype, shape, json_safe=False)
        res = ginfer_identity(gclient, dtype, arr)
        out = res.get_output("OUTPUT0")
        assert out.datatype == dtype and list(out.shape) == list(shape)
        same(arr, res.as_numpy("OUTPUT0"), dtype)


def test_add_sub_outputs_and_id(gclient):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    ins = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
           grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    ins[0].set_data_from_numpy(a)
    ins[1].set_data_from_numpy(b)
    res = gclient.infer("add_sub_int32", ins, request_id="req-7",
                        outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    r = res.get_response(as_json=True)
    assert r["id"] == "req-7" and r["model_name"] == "add_sub_int32"
    assert [o["name"] for o in r["outputs"]] == ["OUTPUT1"]
    assert np.array_equal(res.as_numpy("OUTPUT1"), a - b)
    res = gclient.infer("add_sub_int32", ins)  # no outputs named: all, in the model's order
    assert np.array_equal(res.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(res.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("version,add", [("1", 1.0), ("3", 3.0), ("", 3.0)])
def test_versions(gclient, version, add):
    x = np.array([0.5, -1.0, 10.0, 0.0], dtype=np.float32)
    inp = grpcclient.InferInput("INPUT0", [4], "FP32")
    inp.set_data_from_numpy(x)
    res = gclient.infer("versioned", [inp], model_version=version)
    assert np.array_equal(res.as_numpy("OUTPUT0"), x + np.float32(add))
    assert res.get_response().model_version == ("3" if version == "" else version)


def test_mobilenetv2_matches_rest(gclient, client):
    import tritonclient.http as httpclient

    x = np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)
    gi = grpcclient.InferInput("input", list(x.shape), "FP32")
    gi.set_data_from_numpy(x)
    g = gclient.infer("mobilenetv2", [gi]).as_numpy("output")
    hi = httpclient.InferInput("input", list(x.shape), "FP32")
    hi.set_data_from_numpy(x, binary_data=True)
    h = client.infer("mobilenetv2", [hi]).as_numpy("output")
    assert g.shape == h.shape == (1, 1000)
    assert np.array_equal(g.view(np.uint32), h.view(np.uint32))


def test_errors_match_rest(gclient, client, stub):
    import tritonclient.http as httpclient

    unknown = grpcclient.InferInput("INPUT0", [1], "FP32")
    unknown.set_data_from_numpy(np.ones(1, np.float32))
    with pytest.raises(InferenceServerException) as e:
        gclient.infer("no_such_model", [unknown])
    assert status_of(e.value) == "NOT_FOUND"
    # A datatype the model does not take: INVALID_ARGUMENT with REST's message.
    gi = grpcclient.InferInput("INPUT0", [1, 2], "INT32")
    gi.set_data_from_numpy(np.ones((1, 2), np.int32))
    with pytest.raises(InferenceServerException) as e:
        gclient.infer("identity_fp32", [gi])
    assert status_of(e.value) == "INVALID_ARGUMENT"
    hi = httpclient.InferInput("INPUT0", [1, 2], "INT32")
    hi.set_data_from_numpy(np.ones((1, 2), np.int32), binary_data=True)
    with pytest.raises(InferenceServerException) as he:
        client.infer("identity_fp32", [hi])
    assert e.value.message() == he.value.message()
    # A shape that does not match the bytes sent.
    req = service_pb2.ModelInferRequest(model_name="identity_fp32")
    req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 3])
    req.raw_input_contents.append(np.ones(2, np.float32).tobytes())
    with pytest.raises(grpc.RpcError) as ge:
        stub.ModelInfer(req, timeout=10)
    assert ge.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "INPUT0" in ge.value.details()


def test_typed_contents(stub):
    """Requests with typed contents (fp32_contents, int_contents, ...) instead of raw bytes."""
    cases = [("identity_fp32", "FP32", "fp32_contents", [1.5, -2.0, 3.25], np.float32),
             ("identity_int32", "INT32", "int_contents", [1, -2, 2**31 - 1], np.int32),
             ("identity_int64", "INT64", "int64_contents", [-(2**63), 0, 2**63 - 1], np.int64),
             ("identity_uint8", "UINT8", "uint_contents", [0, 7, 255], np.uint8),
             ("identity_fp64", "FP64", "fp64_contents", [0.1, -1e300, 2.0], np.float64),
             ("identity_bool", "BOOL", "bool_contents", [True, False, True], np.bool_)]
    for model, dt, field, vals, np_t in cases:
        req = service_pb2.ModelInferRequest(model_name=model)
        t = req.inputs.add(name="INPUT0", datatype=dt, shape=[1, 3])
        getattr(t.contents, field).extend(vals)
        r = stub.ModelInfer(req, timeout=10)
        assert r.outputs[0].datatype == dt and list(r.outputs[0].shape) == [1, 3]
        got = np.frombuffer(r.raw_output_contents[0], dtype=np_t)
        assert np.array_equal(got, np.array(vals, dtype=np_t)), (model, got)
    req = service_pb2.ModelInferRequest(model_name="identity_bytes")
    t = req.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 2])
    t.contents.bytes_contents.extend([b"ab", b"\x00\xff"])
    r = stub.ModelInfer(req, timeout=10)
    raw = r.raw_output_contents[0]
    assert raw == b"\x02\x00\x00\x00ab\x02\x00\x00\x00\x00\xff"
    # Both raw and typed contents for one input: refused.
    req = service_pb2.ModelInferRequest(model_name="identity_fp32")
    t = req.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
    t.contents.fp32_contents.append(1.0)
    req.raw_input_contents.append(np.ones(1, np.float32).tobytes())
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_async_infer(gclient):
    results = queue.Queue()
    xs = [np.full((1, 4), i, np.float32) for i in range(20)]
    for i, x in enumerate(xs):
        inp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        gclient.async_infer("identity_fp32", [inp],
                            lambda result, error, i=i: results.put((i, result, error)),
                            request_id=str(i))
    for _ in xs:
        i, r, e = results.get(timeout=30)
        assert e is None, e
        assert r.get_response().id == str(i)
        assert np.array_equal(r.as_numpy("OUTPUT0"), xs[i])


def test_stream_infer(gclient):
    results = queue.Queue()
    gclient.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        xs = {str(i): np.full((1, 3), i * 0.5, np.float32) for i in range(30)}
        for rid, x in xs.items():
            inp = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
            inp.set_data_from_numpy(x)
            gclient.async_stream_infer("identity_fp32", [inp], request_id=rid)
        # An error inside the stream comes back as a message; the stream goes on.
        bad = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
        bad.set_data_from_numpy(np.ones((1, 3), np.float32))
        gclient.async_stream_infer("no_such_model", [bad], request_id="bad")
        inp = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
        inp.set_data_from_numpy(np.full((1, 3), 7, np.float32))
        gclient.async_stream_infer("identity_fp32", [inp], request_id="last")
        seen, errors = {}, []
        for _ in range(len(xs) + 2):
            r, e = results.get(timeout=30)
            if e is not None:
                errors.append(e)
                continue
            seen[r.get_response().id] = r.as_numpy("OUTPUT0")
        assert len(errors) == 1 and errors[0].message() == "unknown model"
        assert set(seen) == set(xs) | {"last"}
        for rid, x in xs.items():
            assert np.array_equal(seen[rid], x)
    finally:
        gclient.stop_stream()


def test_deadline_exceeded(server, gclient):
    # A 1 ms deadline on mobilenetv2 (about 10 ms a run): the client gets DEADLINE_EXCEEDED,
    # the server keeps serving.
    x = np.zeros((1, 3, 224, 224), np.float32)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as e:
        gclient.infer("mobilenetv2", [inp], client_timeout=0.001)
    assert status_of(e.value) == "DEADLINE_EXCEEDED"
    assert gclient.infer("mobilenetv2", [inp]).as_numpy("output").shape == (1, 1000)


def test_compressed_request_refused(server):
    with grpc.insecure_channel(server.grpc_url, compression=grpc.Compression.Gzip) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name="identity_fp32")
        req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 256])
        req.raw_input_contents.append(np.zeros(256, np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "compress" in e.value.details()
    with grpc.insecure_channel(server.grpc_url) as ch:  # and the server goes on
        r = service_pb2_grpc.GRPCInferenceServiceStub(ch).ServerLive(
            service_pb2.ServerLiveRequest(), timeout=10)
        assert r.live


def test_statistics_and_config(gclient):
    x = np.ones((1, 2), np.float32)
    for _ in range(3):
        ginfer_identity(gclient, "FP32", x)
    st = gclient.get_inference_statistics("identity_fp32", as_json=True)
    ms = st["model_stats"]
    assert len(ms) == 1 and ms[0]["name"] == "identity_fp32"
    assert int(ms[0]["inference_count"]) >= 3
    assert int(ms[0]["inference_stats"]["success"]["count"]) >= 3
    every = gclient.get_inference_statistics(as_json=True)["model_stats"]
    assert {"identity_fp32", "mobilenetv2"} <= {m["name"] for m in every}
    cfg = gclient.get_model_config("add_sub_int32", as_json=True)["config"]
    assert cfg["name"] == "add_sub_int32"
    assert [i["name"] for i in cfg["input"]] == ["INPUT0", "INPUT1"]
    assert cfg["input"][0]["data_type"] == "TYPE_INT32"
    assert cfg["backend"] == "onnxruntime"


# ---------------------------------------------------------------------------------------------
# The repository extension


def test_repository_over_grpc(server_factory, tmp_path, test_models):
    from conftest import link_file

    repo = tmp_path / "repo"
    link_file(test_models / "identity_fp32/1/model.onnx", repo / "identity_fp32/1/model.onnx")
    link_file(test_models / "identity_int8/1/model.onnx", repo / "identity_int8/1/model.onnx")
    s = server_factory(repo, ["--model-control-mode", "explicit"], name="grpc-repo")
    c = grpcclient.InferenceServerClient(s.grpc_url)
    try:
        names = {m["name"] for m in c.get_model_repository_index(as_json=True)["models"]}
        assert names == {"identity_fp32", "identity_int8"}
        assert not c.is_model_ready("identity_fp32")
        c.load_model("identity_fp32")
        assert c.is_model_ready("identity_fp32")
        idx = c.get_model_repository_index(as_json=True)["models"]
        ready = [m for m in idx if m.get("state") == "READY"]
        assert [(m["name"], m["version"]) for m in ready] == [("identity_fp32", "1")]
        # A config override and an uploaded model file (bytes, no base64 over gRPC).
        onnx = (test_models / "identity_int8/1/model.onnx").read_bytes()
        c.load_model("uploaded", config='{"max_batch_size": 0}',
                     files={"file:1/model.onnx": onnx})
        assert c.is_model_ready("uploaded")
        x = np.array([[1, -2, 3]], np.int8)
        inp = grpcclient.InferInput("INPUT0", [1, 3], "INT8")
        inp.set_data_from_numpy(x)
        assert np.array_equal(c.infer("uploaded", [inp]).as_numpy("OUTPUT0"), x)
        with pytest.raises(InferenceServerException) as e:
            c.load_model("missing_model")
        assert status_of(e.value) == "INVALID_ARGUMENT"
        c.unload_model("identity_fp32")
        assert not c.is_model_ready("identity_fp32")
    finally:
        c.close()


def test_repository_load_refused_without_explicit_mode(gclient):
    with pytest.raises(InferenceServerException) as e:
        gclient.load_model("identity_fp32")
    assert status_of(e.value) == "INVALID_ARGUMENT"
    assert "not allowed" in e.value.message()


# ---------------------------------------------------------------------------------------------
# Many calls at once


def test_many_concurrent_calls_one_channel(server):
    """64 calls in flight over one HTTP/2 connection, each answered with its own data."""
    c = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        results, errs = {}, []

        def run(k):
            try:
                x = np.full((1, 8), k, np.float32)
                inp = grpcclient.InferInput("INPUT0", [1, 8], "FP32")
                inp.set_data_from_numpy(x)
                r = c.infer("identity_fp32", [inp], request_id=str(k))
                results[k] = (r.get_response().id, r.as_numpy("OUTPUT0"))
            except Exception as e:  # noqa: BLE001 - reported below
                errs.append(e)

        ts = [threading.Thread(target=run, args=(k,)) for k in range(64)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errs, errs[:3]
        assert len(results) == 64, time.monotonic() - t0
        for k, (rid, out) in results.items():
            assert rid == str(k) and np.array_equal(out, np.full((1, 8), k, np.float32))
    finally:
        c.close()


def test_metrics_count_grpc_once(server, gclient):
    """A gRPC inference counts once in Triton's counters and once in onnxd_grpc_calls_total."""
    def ok_calls():
        try:
            return metric_value(server.port, 'onnxd_grpc_calls_total{code="OK"}')
        except AssertionError:  # no OK call yet: the sample is left out
            return 0.0

    before = metric_value(server.port, "nv_inference_request_success", "identity_int16")
    calls = ok_calls()
    for _ in range(5):
        ginfer_identity(gclient, "INT16", np.ones((1, 3), np.int16))
    after = metric_value(server.port, "nv_inference_request_success", "identity_int16")
    assert after - before == 5
    assert ok_calls() - calls >= 5


def test_connections_closed_with_calls_in_flight(server, tmp_path):
    """onnxd-grpc-bench ends each short run by closing its connections with 64 calls in flight:
    those calls are aborted while their answers are being written (a call was once freed twice
    there), and the server goes on."""
    import os
    import subprocess

    from conftest import _resolve

    tool = _resolve(os.environ.get("ONNXD_BIN", "build/onnxd")).parent / "onnxd-grpc-bench"
    if not os.access(tool, os.X_OK):
        pytest.skip(f"{tool} is not built")
    req = service_pb2.ModelInferRequest(model_name="identity_fp32")
    req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 256])
    req.raw_input_contents.append(np.ones(256, np.float32).tobytes())
    msg = tmp_path / "req.pb"
    msg.write_bytes(req.SerializeToString())
    for _ in range(8):
        p = subprocess.run([str(tool), "--url", server.grpc_url, "--message", str(msg),
                            "--connections", "4", "--streams", "16", "--duration", "0.3"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "errors 0" in p.stdout, p.stdout
    assert server.alive()
    c = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert c.is_server_live()
    finally:
        c.close()
