"""KServe's own Python SDK (kserve.InferenceRESTClient, protocol v2) against onnxd, as a new user
would try it (issue 13, part 5): liveness and readiness parse a JSON body ({"live": true},
{"ready": true}), model readiness, metadata parsed by KServe's response models, inference with
JSON data and with the binary tensor extension, an unknown model (the SDK raises with onnxd's
message), and readiness while draining (the SDK raises with "server is shutting down").

The SDK runs in a venv of its own, .venv-kserve (scripts/setup.sh makes it from
tests/integration/requirements-kserve.txt): kserve 0.21.0 pins versions of its own (grpcio,
httpx, pydantic, ...) that .venv does not hold. Its gRPC client (kserve.InferenceGRPCClient) is
run against the gRPC port too (test_kserve_grpc_client). kserve_sdk_client.py makes the calls there, in a
subprocess, and prints what they returned; the assertions are here."""
import json
import os
import subprocess
import time

import pytest

import rawhttp
from conftest import ROOT, build_repo, slow_model_bytes, wait_until

KSERVE_PY = ROOT / os.environ.get("ONNXD_KSERVE_VENV", ".venv-kserve") / "bin" / "python"
CLIENT = ROOT / "tests/integration/kserve_sdk_client.py"

pytestmark = pytest.mark.skipif(
    not os.access(KSERVE_PY, os.X_OK),
    reason=f"KServe's SDK venv {KSERVE_PY.parent.parent} is missing: make setup (scripts/setup.sh) "
    "makes it")


@pytest.fixture(scope="module")
def sdk_server(server_factory, tmp_path_factory, test_models):
    add_sub = test_models / "add_sub_fp32/1/model.onnx"
    repo = build_repo(tmp_path_factory.mktemp("kserve-repo"), {
        "add_sub_fp32": {"model": add_sub},
        "bad_cfg": {"model": add_sub, "config": {"no_such_key": 1}},  # not ready: 503
    })
    return server_factory(repo, name="kserve-sdk")


def run_sdk(port, mode="all"):
    p = subprocess.run([str(KSERVE_PY), str(CLIENT), f"http://127.0.0.1:{port}", mode],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_kserve_sdk_calls(sdk_server):
    r = run_sdk(sdk_server.port)
    # Health: the SDK reads the JSON body's "live" / "ready" (an empty body made it raise).
    assert r["live"] == {"value": True}, r["live"]
    assert r["ready"] == {"value": True}, r["ready"]
    assert r["live_body"] == {"value": {"live": True}}
    assert r["ready_body"] == {"value": {"ready": True}}
    # Model readiness: v2 in the SDK is the status (200 true; 404 / 503 false).
    assert r["model_ready"] == {"value": True}
    assert r["model_ready_unknown"] == {"value": False}
    assert r["model_ready_unavailable"] == {"value": False}
    assert r["model_ready_body"] == {"value": {"name": "add_sub_fp32", "ready": True}}
    # Metadata through KServe's own response models.
    sm = r["server_metadata"]["value"]
    assert sm["name"] == "onnxd" and "binary_tensor_data" in sm["extensions"], sm
    mm = r["model_metadata"]["value"]
    assert mm["name"] == "add_sub_fp32" and mm["platform"] == "onnx_onnxv1", mm
    assert mm["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in mm["inputs"]] == [
        ("INPUT0", "FP32", [1, 16]), ("INPUT1", "FP32", [1, 16])]
    assert [t["name"] for t in mm["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    # Inference, JSON and binary: exact values (the sums and differences are exact in FP32).
    for kind, binary in (("infer_json", False), ("infer_binary", True)):
        assert "value" in r[kind], (kind, r[kind])
        v = r[kind]["value"]
        assert v["model_name"] == "add_sub_fp32" and v["id"] == "sdk-1", (kind, v)
        o0, o1 = v["outputs"]["OUTPUT0"], v["outputs"]["OUTPUT1"]
        assert o0["shape"] == [1, 16] and o0["datatype"] == "FP32", (kind, o0)
        assert o0["data"] == v["want_sum"], (kind, o0)
        assert o1["data"] == v["want_diff"], (kind, o1)
        assert v["binary_response"] is binary, (kind, v)
    # Unknown model: the SDK raises HTTPStatusError carrying onnxd's {"error": ...} message.
    u = r["infer_unknown"]
    assert u.get("raised") == "HTTPStatusError" and u["status"] == 404, u
    assert u["message"].startswith("unknown model, '404 Not Found'"), u


def test_kserve_sdk_readiness_while_draining(server_factory, tmp_path):
    """SIGTERM with a request running: until it finishes, is_server_ready raises with onnxd's
    reason (503 {"ready": false, "error": "server is shutting down"}) and is_server_live is
    still true; then onnxd exits 0."""
    repo = build_repo(tmp_path / "repo", {"slow": {"model": slow_model_bytes()}})
    s = server_factory(repo, ["--drain-timeout-ms", "60000", "--infer-threads", "1"],
                       name="kserve-drain")
    from test_batching import slow_body
    from test_hardening import _iters_for

    sdk = subprocess.Popen([str(KSERVE_PY), str(CLIENT), f"http://127.0.0.1:{s.port}", "health"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert sdk.stdout.readline().strip() == "imported", sdk.stderr.read()
        iters = _iters_for(s.port, 3.0)
        body, headers = slow_body(0, iters)
        c = rawhttp.RawConn(s.port, timeout=60)
        c.request("POST", "/v2/models/slow/infer", body, headers)
        time.sleep(0.2)
        s.terminate()
        wait_until(lambda: "draining" in s.log_tail(), 5, "the drain to start")
        out, err = sdk.communicate("go\n", timeout=60)
        assert sdk.returncode == 0, err
        r = json.loads(out.strip().splitlines()[-1])
        assert c.read_response().status == 200  # the request in flight finished after the calls
        c.close()
    finally:
        if sdk.poll() is None:
            sdk.kill()
    assert r["live"] == {"value": True}, r
    ready = r["ready"]
    assert ready.get("raised") == "HTTPStatusError" and ready["status"] == 503, ready
    assert ready["message"].startswith("server is shutting down, '503 Service Unavailable'"), ready
    assert s.wait_exit() == 0


def test_kserve_grpc_client(sdk_server):
    p = subprocess.run([str(KSERVE_PY), str(CLIENT), sdk_server.grpc_url, "grpc"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["live"] == {"value": True}, r["live"]
    assert r["ready"] == {"value": True}, r["ready"]
    assert r["model_ready"] == {"value": True}
    assert r["model_ready_unavailable"] == {"value": False}
    inf = r["infer"]["value"]
    assert inf["model_name"] == "add_sub_fp32" and inf["id"] == "sdk-g1"
    assert inf["outputs"]["OUTPUT0"]["data"] == inf["want_sum"]
    assert inf["outputs"]["OUTPUT1"]["data"] == inf["want_diff"]
    assert inf["outputs"]["OUTPUT0"]["datatype"] == "FP32"
    assert inf["outputs"]["OUTPUT0"]["shape"] == [1, 16]
    assert r["infer_unknown"]["code"] == "NOT_FOUND", r["infer_unknown"]
    assert r["infer_unknown"]["message"] == "unknown model"
