"""Inference requests from hostile or careless clients (issue 9): non-finite model outputs in
JSON answers, huge timeouts, duplicated framing headers and request parameters, and clients
that hang up before a worker starts on their request. One dedicated server with one worker
thread, so that a long run of the slow model holds the only worker while other requests wait.
"""

import json
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

import rawhttp
from conftest import (build_repo, dedicated_server, metric_value, model_stats, slow_model_bytes,
                      wait_until)
from oip import binary_body, fp32_input, good_request, infer_json, post_infer

NONFINITE_OUTPUTS = {"y32": "FP32", "y64": "FP64", "y16": "FP16", "ybf16": "BF16"}


def nonfinite_model_bytes():
    """x, d [N] FP32 -> y32 = x / d and the same values as FP64, FP16 and BF16 (Cast): dividing
    by zero gives +-Infinity and NaN on demand."""
    from onnx import TensorProto as TP
    from onnx import helper

    nodes = [helper.make_node("Div", ["x", "d"], ["y32"]),
             helper.make_node("Cast", ["y32"], ["y64"], to=TP.DOUBLE),
             helper.make_node("Cast", ["y32"], ["y16"], to=TP.FLOAT16),
             helper.make_node("Cast", ["y32"], ["ybf16"], to=TP.BFLOAT16)]
    elem = {"FP32": TP.FLOAT, "FP64": TP.DOUBLE, "FP16": TP.FLOAT16, "BF16": TP.BFLOAT16}
    g = helper.make_graph(nodes, "nonfinite",
                          [helper.make_tensor_value_info("x", TP.FLOAT, ["N"]),
                           helper.make_tensor_value_info("d", TP.FLOAT, ["N"])],
                          [helper.make_tensor_value_info(n, elem[t], ["N"])
                           for n, t in NONFINITE_OUTPUTS.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.fixture(scope="module")
def hsrv(server_factory, tmp_path_factory, test_models):
    repo = build_repo(tmp_path_factory.mktemp("hardening-repo"), {
        "nonfinite": {"model": nonfinite_model_bytes()},
        "identity_fp32": {"model": test_models / "identity_fp32/1/model.onnx"},
        "slow": {"model": slow_model_bytes(), "config": {"max_batch_size": 0,
                                                         "instance_count": 1}},
    })
    yield from dedicated_server(server_factory, repo, ["--infer-threads", "1"], "hardening")


X = [1.0, -1.0, 0.0, 3.0]
D = [0.0, 0.0, 0.0, 2.0]
WANT = np.array([np.inf, -np.inf, np.nan, 1.5])


def _refuse_constant(name):
    raise ValueError(f"not JSON: bare {name}")


# ---- finding 2 (model outputs): every JSON answer is JSON ------------------------------------

def test_nonfinite_outputs_are_strict_json(hsrv):
    """A model output holding NaN or an infinity gave bare NaN/Infinity tokens, which strict
    JSON parsers refuse. They are the strings "NaN", "Infinity", "-Infinity" now."""
    c = rawhttp.RawConn(hsrv.port)
    body = infer_json([{"name": "x", "datatype": "FP32", "shape": [4], "data": X},
                       {"name": "d", "datatype": "FP32", "shape": [4], "data": D}])
    r = post_infer(c, "/v2/models/nonfinite/infer", body)
    assert r.status == 200, r
    doc = json.loads(r.body, parse_constant=_refuse_constant)  # strict: no NaN tokens
    outs = {o["name"]: o for o in doc["outputs"]}
    assert set(outs) == set(NONFINITE_OUTPUTS)
    for name, dt in NONFINITE_OUTPUTS.items():
        assert outs[name]["datatype"] == dt
        assert outs[name]["data"] == ["Infinity", "-Infinity", "NaN", 1.5], outs[name]
    good_request(c)
    c.close()


@pytest.mark.parametrize("binary", [False, True])
def test_nonfinite_outputs_through_tritonclient(hsrv, binary):
    """tritonclient's as_numpy reads the strings back as the exact values (numpy converts
    them) for FP16, FP32 and FP64; binary outputs carry the raw bits, as before. BF16 in JSON
    is left out: ml_dtypes' bfloat16 converts no strings (nor null), so binary is the path
    for BF16 outputs that may be non-finite (README)."""
    cl = httpclient.InferenceServerClient(hsrv.url)
    ins = []
    for name, v in (("x", X), ("d", D)):
        i = httpclient.InferInput(name, [4], "FP32")
        i.set_data_from_numpy(np.array(v, np.float32), binary_data=binary)
        ins.append(i)
    names = ["y32", "y64", "y16"] + (["ybf16"] if binary else [])
    res = cl.infer("nonfinite", ins, outputs=[httpclient.InferRequestedOutput(n, binary_data=binary)
                                              for n in names])
    for n in names:
        got = res.as_numpy(n)
        assert got is not None and got.shape == (4,), n
        np.testing.assert_array_equal(got.astype(np.float64), WANT, err_msg=n)
        assert np.signbit(got.astype(np.float64)[1]), n
    cl.close()


# ---- finding 8: huge timeouts saturate --------------------------------------------------------

@pytest.mark.parametrize("timeout", [18446744073709551, 2**64 - 1, 2**63, 2**54 + 1])
def test_huge_timeout_saturates(hsrv, timeout):
    """timeout * 1000 overflowed the deadline, so these requests were refused at once as
    expired (503). The deadline saturates now: the request runs."""
    c = rawhttp.RawConn(hsrv.port)
    r = post_infer(c, "/v2/models/identity_fp32/infer",
                   infer_json([fp32_input()], parameters={"timeout": timeout}))
    assert r.status == 200, r
    assert r.json()["outputs"][0]["data"] == [1.0, 2.5, -3.0]
    c.close()


# ---- item 14: duplicated framing header and request parameters -------------------------------

@pytest.mark.parametrize("second", ["same", "other"])
def test_duplicate_inference_header_content_length_is_400(hsrv, second):
    """Two Inference-Header-Content-Length headers (equal or not) were accepted, the first one
    winning: refused now, as two Content-Length headers are; the connection carries on."""
    head = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 3],
                        "parameters": {"binary_data_size": 12}}]}
    body, hl = binary_body(head, [np.array([1, 2, 3], np.float32).tobytes()])
    other = hl if second == "same" else hl + 4
    c = rawhttp.RawConn(hsrv.port)
    r = post_infer(c, "/v2/models/identity_fp32/infer", body,
                   headers=[f"inference-header-content-length: {other}"], header_len=hl)
    assert r.status == 400, r
    assert "Inference-Header-Content-Length" in r.error(), r.error()
    # one header: served on the same connection
    r = post_infer(c, "/v2/models/identity_fp32/infer", body, header_len=hl)
    assert r.status == 200, r
    good_request(c)
    c.close()


@pytest.mark.parametrize("params", [
    '{"timeout":1000000,"timeout":1}',
    '{"x":1,"y":2,"x":1}',
    '{"user_id":"a","user\\u005fid":"b"}',
])
def test_duplicate_request_parameter_is_400(hsrv, params):
    """A request parameter named twice was accepted, the first one winning (for any name but
    timeout and binary_data_output): refused now, whatever the name."""
    text = '{"inputs":[%s],"parameters":%s}' % (json.dumps(fp32_input()), params)
    c = rawhttp.RawConn(hsrv.port)
    r = post_infer(c, "/v2/models/identity_fp32/infer", text.encode())
    assert r.status == 400, r
    assert "duplicate parameter" in r.error(), r.error()
    good_request(c)
    c.close()


# ---- item 14: a client gone before a worker starts is dropped without parsing ----------------

def test_client_gone_before_parse_is_dropped_unparsed(hsrv):
    """The slow model holds the only worker; a request whose client hangs up while it waits
    for the worker is dropped when the worker reaches it, without parsing it (counted in
    onnxd_inference_client_gone_unparsed_total and as a failure), not parsed in full first.
    The body is malformed JSON on purpose: parsed, it would fail as a 400 all the same, so only
    the counter tells the two apart."""
    port = hsrv.port
    gone_before = metric_value(port, "onnxd_inference_client_gone_unparsed_total",
                               "identity_fp32")
    fail_before = model_stats(port, "identity_fp32")["inference_stats"]["fail"]["count"]
    body = infer_json([{"name": "x", "datatype": "FP32", "shape": [1, 4],
                        "data": [1, 2, 3, 4]},
                       {"name": "iters", "datatype": "INT64", "shape": [1, 1], "data": [1000]}])
    busy = rawhttp.RawConn(port, timeout=120)
    busy.request("POST", "/v2/models/slow/infer", body, ["Content-Type: application/json"])
    result = {}

    def read_busy():
        try:
            result["r"] = busy.read_response(timeout=120)
        except Exception as e:  # noqa: BLE001 - reported below
            result["r"] = e

    t = threading.Thread(target=read_busy, daemon=True)
    t.start()
    time.sleep(0.2)  # the slow run has the worker
    gone = rawhttp.RawConn(port)
    gone.request("POST", "/v2/models/identity_fp32/infer", b'{"inputs": [ not json',
                 ["Content-Type: application/json"])
    time.sleep(0.2)  # queued for the worker
    gone.close()
    t.join(120)
    r = result.get("r")
    assert isinstance(r, rawhttp.Response) and r.status == 200, \
        f"the slow run should still have held the worker: {r!r}"
    busy.close()
    wait_until(lambda: metric_value(port, "onnxd_inference_client_gone_unparsed_total",
                                    "identity_fp32") == gone_before + 1, 10,
               "the request of the client that left to be dropped unparsed")
    after = model_stats(port, "identity_fp32")["inference_stats"]
    assert after["fail"]["count"] == fail_before + 1
    c = rawhttp.RawConn(port)
    good_request(c)
    c.close()
