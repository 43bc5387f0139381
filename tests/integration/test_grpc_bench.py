"""Smoke test of the gRPC benchmark tooling, without onnxd's gRPC server: the Python gRPC peer
(bench/peers/python-grpc/server.py) on a loopback port serving an MLP of mlp16's shape, checked
with the official client (tritonclient.grpc), then onnxd-grpc-bench run against it for 1 s.

onnxd-grpc-bench is taken from the directory of ONNXD_BIN (build/ or the sanitizer build's).
Skipped when the peer's Python packages (grpcio, tritonclient[grpc], onnxruntime) are missing.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, _resolve, free_port, link_file

grpc = pytest.importorskip("grpc")
pytest.importorskip("onnxruntime")
tgrpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2  # noqa: E402

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _bench_binary():
    b = _resolve(os.environ.get("ONNXD_BIN", "build/onnxd")).parent / "onnxd-grpc-bench"
    if not os.access(b, os.X_OK):
        pytest.fail(f"{b} not found (make it, or set ONNXD_BIN)", pytrace=False)
    return b


@pytest.fixture(scope="module")
def peer(tmp_path_factory, test_models):
    """The Python gRPC peer serving test model mlp16_alt as "mlp16"; yields its port."""
    d = tmp_path_factory.mktemp("grpc-peer")
    link_file(test_models / "mlp16_alt" / "1" / "model.onnx", d / "repo/mlp16/1/model.onnx")
    port = free_port()
    log = open(d / "peer.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench/peers/python-grpc/server.py"),
                             "--model-repository", str(d / "repo"), "--port", str(port),
                             "--workers", "4"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("python-grpc peer did not start:\n" +
                            (d / "peer.log").read_text()[-2000:], pytrace=False)
            time.sleep(0.1)
        yield port
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _message(tmp_path, model="mlp16", shape=(1, 16), nbytes=None):
    x = np.random.default_rng(3).random(shape, dtype=np.float32)
    r = service_pb2.ModelInferRequest(model_name=model)
    r.inputs.add(name="input", datatype="FP32", shape=list(shape))
    raw = x.tobytes()
    r.raw_input_contents.append(raw if nbytes is None else raw[:nbytes])
    p = tmp_path / f"{model}.pb"
    p.write_bytes(r.SerializeToString())
    return p, x


def _bench(port, message, tmp_path, *args):
    out = tmp_path / "report.json"
    r = subprocess.run([str(_bench_binary()), "--url", f"127.0.0.1:{port}", "--method", METHOD,
                        "--message", str(message), "--duration", "1", "--json", str(out), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text()), r.stdout


def test_peer_answers_like_onnxruntime(peer, test_models):
    import onnxruntime as ort
    x = np.random.default_rng(5).random((2, 16), dtype=np.float32)
    c = tgrpc.InferenceServerClient(f"127.0.0.1:{peer}")
    try:
        inp = tgrpc.InferInput("input", [2, 16], "FP32")
        inp.set_data_from_numpy(x)
        got = c.infer("mlp16", [inp]).as_numpy("output")
        assert c.is_model_ready("mlp16") and not c.is_model_ready("nope")
        meta = c.get_model_metadata("mlp16")
        assert meta.inputs[0].name == "input" and list(meta.inputs[0].shape) == [-1, 16]
    finally:
        c.close()
    s = ort.InferenceSession(str(test_models / "mlp16_alt/1/model.onnx"))
    want = s.run(None, {"input": x})[0]
    assert got.shape == (2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bench_good_calls(peer, tmp_path):
    msg, _ = _message(tmp_path)
    rep, text = _bench(peer, msg, tmp_path, "--connections", "2", "--streams", "4")
    assert rep["ok"] > 0 and rep["errors"] == 0, text
    assert rep["requests"] == rep["ok"]
    assert rep["rps"] > 0 and 0 < rep["latency_us"]["p50"] <= rep["latency_us"]["max"]
    assert rep["request_message_bytes"] == msg.stat().st_size + 5
    assert rep["bytes_sent"] > rep["ok"] * msg.stat().st_size
    assert rep["cpu_s_per_1k_requests"] > 0
    assert rep["errors_by_grpc_status"] == {} and rep["errors_by_status"] == {}


def test_bench_counts_grpc_status(peer, tmp_path):
    """An unknown model is NOT_FOUND (5) and a truncated tensor INVALID_ARGUMENT (3): every call
    is an error, by its grpc-status, none is good."""
    for model, nbytes, code in (("nope", None, "5"), ("mlp16", 10, "3")):
        msg, _ = _message(tmp_path, model=model, nbytes=nbytes)
        rep, text = _bench(peer, msg, tmp_path, "--streams", "2")
        assert rep["ok"] == 0 and rep["errors"] > 0, text
        assert rep["errors_by_grpc_status"] == {code: rep["errors"]}, text


def test_bench_refused(tmp_path):
    msg, _ = _message(tmp_path)
    r = subprocess.run([str(_bench_binary()), "--url", f"127.0.0.1:{free_port()}", "--message",
                        str(msg), "--duration", "0.2"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot connect" in r.stderr


def test_bench_timeouts_cancel_and_reuse_slots(peer, tmp_path):
    """Calls over --timeout-ms are counted as timeouts and cancelled (RST_STREAM), and their slots
    start new calls: far more calls end than there are slots (a 20000-row batch, 1.3 MB, takes
    longer than 1 ms to send and run)."""
    msg, _ = _message(tmp_path, shape=(20000, 16))
    rep, text = _bench(peer, msg, tmp_path, "--streams", "2", "--timeout-ms", "1")
    assert rep["errors_by_kind"]["timeout"] >= 20, text
    assert rep["errors"] == rep["requests"] - rep["ok"], text


def test_go_grpc_proto_matches_protocol(tmp_path):
    """bench/peers/go-grpc/proto/inference.proto (ours, a subset) has the published protocol's
    names, field numbers, types and labels: every message and field it declares is compared with
    the descriptors tritonclient ships, and so is every RPC's request and response type."""
    import shutil
    if not shutil.which("protoc"):
        pytest.skip("protoc (protobuf-compiler) not installed")
    from google.protobuf import descriptor_pb2
    out = tmp_path / "ours.pb"
    subprocess.run(["protoc", f"--descriptor_set_out={out}", "-Ibench/peers/go-grpc/proto",
                    "inference.proto"], cwd=ROOT, check=True)
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    ours = fds.file[0]
    assert ours.package == "inference"
    ref = service_pb2.DESCRIPTOR
    checked = 0

    def compare(msg, ref_msg):
        nonlocal checked
        for f in msg.field:
            rf = ref_msg.fields_by_name.get(f.name)
            assert rf is not None, f"{ref_msg.full_name}.{f.name} is not in the protocol"
            assert f.number == rf.number, f"{ref_msg.full_name}.{f.name}"
            assert f.type == rf.type, f"{ref_msg.full_name}.{f.name} type"
            ref_repeated = rf.is_repeated if hasattr(rf, "is_repeated") else rf.label == 3
            assert (f.label == f.LABEL_REPEATED) == ref_repeated, \
                f"{ref_msg.full_name}.{f.name} repeated"
            if f.type_name:
                assert f.type_name.lstrip(".") == rf.message_type.full_name
            checked += 1
        for n in msg.nested_type:
            if n.options.map_entry:
                continue
            compare(n, ref_msg.nested_types_by_name[n.name])

    for m in ours.message_type:
        compare(m, ref.message_types_by_name[m.name])
    rsvc = ref.services_by_name["GRPCInferenceService"]
    for meth in ours.service[0].method:
        rm = rsvc.methods_by_name[meth.name]
        assert meth.input_type.lstrip(".") == rm.input_type.full_name
        assert meth.output_type.lstrip(".") == rm.output_type.full_name
    assert checked > 40
