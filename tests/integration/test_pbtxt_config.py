"""Triton's config.pbtxt in a model directory (infer/model_config.c): a model configured the
way Triton's documentation writes it is served with those settings; one that declares what the
ONNX model does not have, or what onnxd refuses, is unavailable and the log names the field."""
import numpy as np
import pytest

from conftest import build_repo, dedicated_server, http_get, infer, two_out_model_bytes

# two_out: x [N,4] FP32 -> plus1, times2 [N,4]
GOOD = b'''# as in Triton's model_configuration.md
name: "pb_good"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "x"
    data_type: TYPE_FP32
    dims: [ 4 ]
  }
]
output [
  { name: "plus1" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "times2" data_type: TYPE_FP32 dims: [ 4 ] }
]
instance_group [ { count: 1 kind: KIND_CPU }, { count: 2 kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 2, 4 ]
  max_queue_delay_microseconds: 500
  default_queue_policy { max_queue_size: 16 default_timeout_microseconds: 1000000 }
}
optimization { input_pinned_memory { enable: true } }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
'''

# name -> (config.pbtxt, text the log line must contain)
BAD = {
    "pb_dims": (b'input [ { name: "x" data_type: TYPE_FP32 dims: [ 5 ] } ]',
                "config.pbtxt: input 'x': dims[0] is 5, the model's dimension is 4"),
    "pb_dtype": (b'input [ { name: "x" data_type: TYPE_INT32 dims: [ 4 ] } ]',
                 "config.pbtxt: input 'x': data_type is TYPE_INT32, the model has TYPE_FP32"),
    "pb_gpu": (b'instance_group [ { kind: KIND_GPU } ]',
               "config.pbtxt: instance_group kind KIND_GPU is not supported"),
    "pb_syntax": (b'max_batch_size: 4\ndims [ 1 2 ]', "config.pbtxt: 2:10: expected ','"),
    "pb_reshape": (b'input { name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 2, 2 ] } }',
                   "config.pbtxt: 'reshape' of 'x' is not supported"),
}


@pytest.fixture(scope="module")
def pb_server(server_factory, tmp_path_factory):
    two = two_out_model_bytes()
    models = {"pb_good": {"model": two, "files": {"config.pbtxt": GOOD}}}
    for name, (text, _) in BAD.items():
        models[name] = {"model": two, "files": {"config.pbtxt": text}}
    repo = build_repo(tmp_path_factory.mktemp("pbtxt-repo"), models)
    yield from dedicated_server(server_factory, repo, ["--infer-threads", "2"], "pbtxt")


def test_pbtxt_config_is_applied(pb_server):
    port = pb_server.port
    r = http_get(port, "/v2/models/pb_good/config")
    assert r.status == 200, r
    cfg = r.json()
    assert cfg["max_batch_size"] == 8
    assert cfg["instance_count"] == 3
    assert cfg["dynamic_batching"] == {"max_queue_delay_microseconds": 500,
                                       "preferred_batch_size": [2, 4], "max_queue_size": 16,
                                       "default_timeout_microseconds": 1000000}
    assert cfg["config_file"] is True
    assert http_get(port, "/v2/models/pb_good/ready").status == 200
    r, _, outs = infer(port, "pb_good", [("x", np.ones((2, 4), np.float32))])
    assert r.status == 200, r
    np.testing.assert_array_equal(outs["times2"], np.full((2, 4), 2, np.float32))


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_pbtxt_makes_model_unavailable(pb_server, name):
    port = pb_server.port
    r = http_get(port, f"/v2/models/{name}/ready")
    assert r.status == 503
    body = r.json()
    assert body["name"] == name and body["ready"] is False, body
    assert body["error"].startswith("model is not ready: " + BAD[name][1]), body
    r, _, _ = infer(port, name, [("x", np.zeros((1, 4), np.float32))])
    assert r.status == 503, r
    log = open(pb_server.log_path, encoding="utf-8", errors="replace").read()
    lines = [ln for ln in log.splitlines() if f"model '{name}' version 1 is not available" in ln]
    assert lines, f"no log line saying {name} is not available"
    assert BAD[name][1] in lines[0], lines[0]
    assert http_get(port, "/v2/models/pb_good/ready").status == 200
