"""Single-model mode (issue 13, part 4b): --model-name NAME with --model-repository DIR holding
one model's own files, as KServe's storage initializer leaves them in /mnt/models: a bare
DIR/model.onnx (served as version 1), or version directories DIR/<n>/model.onnx, with
config.json / config.pbtxt, warm-up files and external data beside them. A DIR laid out as a
repository (DIR/<model>/<n>/model.onnx) is served as usual. Everything that cannot serve the
one model ends the process with status 2 and a message naming DIR."""
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import ROOT, _server_binary, http_get, http_post_json, infer
from conftest import link_file as link

NAME = "isvc-model"  # what KServe passes: the InferenceService's name


@pytest.fixture(scope="module")
def ext_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("single-ext")
    subprocess.run([sys.executable, str(ROOT / "tools/make_test_models.py"), str(d), "--extdata"],
                   check=True, cwd=ROOT)
    return d


def start(server_factory, d, extra=(), name="single"):
    return server_factory(d, ["--model-name", NAME, *extra], name=name)


def run_exit(d, *args, timeout=60):
    """Runs onnxd on d with args until it exits by itself -> (status, stderr)."""
    p = subprocess.run([str(_server_binary()), "--model-repository", str(d), "--host",
                        "127.0.0.1", "--http-port", "0", *args], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    return p.returncode, p.stderr


def test_bare_model_onnx_is_version_1(server_factory, tmp_path, test_models):
    """DIR/model.onnx is served as NAME version 1; tritonclient infers with JSON and binary
    tensors; nothing else in DIR is a model (the repository index lists NAME only)."""
    import tritonclient.http as httpclient

    d = tmp_path / "mnt-models"
    link(test_models / "add_sub_fp32/1/model.onnx", d / "model.onnx")
    (d / "README").write_text("not a model\n")
    s = start(server_factory, d)
    r = http_get(s.port, f"/v2/models/{NAME}")
    assert r.status == 200, r
    meta = r.json()
    assert meta["name"] == NAME and meta["versions"] == ["1"], meta
    r = http_get(s.port, f"/v2/models/{NAME}/versions/1/ready")
    assert r.status == 200 and r.json() == {"name": NAME, "ready": True}, r
    assert http_get(s.port, "/v2/models/add_sub_fp32").status == 404
    assert http_get(s.port, f"/v2/models/{NAME}/versions/2").status == 404
    idx = http_post_json(s.port, "/v2/repository/index", {})
    assert idx.status == 200
    assert [(e["name"], e.get("version"), e["state"]) for e in idx.json()] == [(NAME, "1", "READY")]

    c = httpclient.InferenceServerClient(s.url)
    try:
        assert c.is_server_ready() and c.is_model_ready(NAME)
        a = np.arange(16, dtype=np.float32).reshape(1, 16)
        b = np.full((1, 16), 2.5, np.float32)
        for binary in (False, True):
            ins = [httpclient.InferInput("INPUT0", [1, 16], "FP32"),
                   httpclient.InferInput("INPUT1", [1, 16], "FP32")]
            ins[0].set_data_from_numpy(a, binary_data=binary)
            ins[1].set_data_from_numpy(b, binary_data=binary)
            outs = [httpclient.InferRequestedOutput(n, binary_data=binary)
                    for n in ("OUTPUT0", "OUTPUT1")]
            res = c.infer(NAME, ins, outputs=outs)
            np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
            np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
            assert res.get_response()["model_name"] == NAME
            assert res.get_response()["model_version"] == "1"
    finally:
        c.close()
    # The repository API cannot load or unload in this mode (control mode none).
    r = http_post_json(s.port, f"/v2/repository/models/{NAME}/load", {})
    assert r.status == 400, r


def test_version_directory_keeps_its_number(server_factory, tmp_path, test_models):
    """DIR/3/model.onnx is NAME version 3 (versioned v3 adds 3 to its input)."""
    d = tmp_path / "mnt-models"
    link(test_models / "versioned/3/model.onnx", d / "3" / "model.onnx")
    s = start(server_factory, d)
    meta = http_get(s.port, f"/v2/models/{NAME}").json()
    assert meta["versions"] == ["3"], meta
    x = np.array([1.0, 2.0], np.float32)
    r, head, outs = infer(s.port, NAME, [("INPUT0", x)])
    assert r.status == 200, r
    assert head["model_version"] == "3"
    np.testing.assert_array_equal(outs["OUTPUT0"], x + 3)
    assert http_get(s.port, f"/v2/models/{NAME}/versions/1").status == 404


def test_config_and_warmup_beside_the_model(server_factory, tmp_path, test_models):
    """config.json beside a bare model.onnx applies (batching, instances), its warm-up reads
    DIR/warmup/; config.pbtxt is read when there is no config.json, and its "name" (the model
    directory's name where it was exported) need not be NAME."""
    d = tmp_path / "json"
    link(test_models / "identity_fp32/1/model.onnx", d / "model.onnx")
    (d / "warmup").mkdir()
    (d / "warmup" / "x.bin").write_bytes(np.ones((2, 3), np.float32).tobytes())
    (d / "config.json").write_text(json.dumps({
        "max_batch_size": 4, "instance_count": 1,
        "dynamic_batching": {"max_queue_delay_microseconds": 700},
        "model_warmup": [{"name": "w", "batch_size": 2, "count": 1, "inputs": {
            "INPUT0": {"data_type": "TYPE_FP32", "dims": [3], "input_data_file": "x.bin"}}}]}))
    s = start(server_factory, d, name="single-json")
    cfg = http_get(s.port, f"/v2/models/{NAME}/config").json()
    assert cfg["max_batch_size"] == 4 and cfg["instance_count"] == 1, cfg
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 700, cfg
    assert "warmed up" in s.log_tail()

    d2 = tmp_path / "pbtxt"
    link(test_models / "identity_fp32/1/model.onnx", d2 / "1" / "model.onnx")
    (d2 / "config.pbtxt").write_text('name: "identity_fp32"\nplatform: "onnxruntime_onnx"\n'
                                     'max_batch_size: 2\n'
                                     'instance_group [ { count: 2 kind: KIND_CPU } ]\n')
    s2 = start(server_factory, d2, name="single-pbtxt")
    cfg = http_get(s2.port, f"/v2/models/{NAME}/config").json()
    assert cfg["max_batch_size"] == 2 and cfg["instance_count"] == 2, cfg
    assert cfg["config_file"] is True


def test_external_data_beside_a_bare_model(server_factory, tmp_path, ext_models):
    """model.onnx + model.onnx.data in DIR (DIR is the version directory of a bare model)."""
    src = ext_models / "extdata_mlp/1"
    d = tmp_path / "mnt-models"
    for f in ("model.onnx", "model.onnx.data"):
        link(src / f, d / f)
    s = start(server_factory, d)
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 5.0 - 1.0
    want = ort.InferenceSession(str(src / "model.onnx"),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    r, _, outs = infer(s.port, NAME, [("x", x)])
    assert r.status == 200, r
    np.testing.assert_allclose(outs["y"], want, rtol=1e-5, atol=1e-6)


def test_external_data_outside_dir_is_refused(tmp_path, ext_models):
    """A bare model whose external data lies outside DIR (../) does not load: exit 2."""
    src = ext_models / "extdata_mlp/1"
    d = tmp_path / "mnt-models"
    d.mkdir()
    shutil.copy(src / "model.onnx.data", tmp_path / "model.onnx.data")
    m = onnx.load(str(src / "model.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../model.onnx.data"
    onnx.save_model(m, str(d / "model.onnx"))
    rc, err = run_exit(d, "--model-name", NAME)
    assert rc == 2, err
    assert "outside the model directory" in err, err
    assert f"--model-name {NAME}: no version in '{d}' loaded" in err, err


def test_repository_layout_is_served_as_usual(server_factory, tmp_path, test_models):
    """DIR/<model>/<n>/model.onnx with --model-name: every model under its own name."""
    d = tmp_path / "repo"
    for m in ("identity_fp32", "add_sub_fp32"):
        link(test_models / m / "1/model.onnx", d / m / "1" / "model.onnx")
    s = start(server_factory, d)
    assert http_get(s.port, "/v2/models/identity_fp32").status == 200
    assert http_get(s.port, "/v2/models/add_sub_fp32").status == 200
    assert http_get(s.port, f"/v2/models/{NAME}").status == 404
    assert "is a model repository" in s.log_tail()


def _bad_dirs(root, test_models):
    model = test_models / "identity_fp32/1/model.onnx"
    empty = root / "empty"
    empty.mkdir()
    only_config = root / "only-config"
    only_config.mkdir()
    (only_config / "config.json").write_text("{}")
    both = root / "both"
    link(model, both / "model.onnx")
    link(model, both / "1" / "model.onnx")
    not_onnx = root / "not-onnx"
    not_onnx.mkdir()
    (not_onnx / "model.onnx").write_bytes(b"this is not an ONNX model")
    bad_cfg = root / "bad-config"
    link(model, bad_cfg / "model.onnx")
    (bad_cfg / "config.json").write_text('{"no_such_key": 1}')
    bare = root / "bare"
    link(model, bare / "model.onnx")
    return {"empty": empty, "only_config": only_config, "both": both, "not_onnx": not_onnx,
            "bad_cfg": bad_cfg, "bare": bare}


@pytest.mark.parametrize("case,args,says", [
    ("empty", [], "holds no model: expected {d}/model.onnx, {d}/<version>/model.onnx or a "
                  "repository {d}/<model>/<version>/model.onnx"),
    ("only_config", [], "'{d}' holds no model"),
    ("both", [], "'{d}' holds both {d}/model.onnx and version directories"),
    ("not_onnx", [], "no version in '{d}' loaded"),
    ("bad_cfg", [], "the model in '{d}' is not available: config.json: unknown key 'no_such_key'"),
    ("bare", ["--model-control-mode", "poll"], "supports --model-control-mode none only"),
    ("bare", ["--model-control-mode", "explicit"], "supports --model-control-mode none only"),
])
def test_single_model_errors_exit_2(tmp_path, test_models, case, args, says):
    d = _bad_dirs(tmp_path, test_models)[case]
    rc, err = run_exit(d, "--model-name", NAME, *args)
    assert rc == 2, (rc, err)
    assert says.format(d=d) in err, err


@pytest.mark.parametrize("bad", ["a/b", "..", "x y", "ü"])
def test_bad_model_name_exit_2(tmp_path, test_models, bad):
    d = tmp_path / "m"
    link(test_models / "identity_fp32/1/model.onnx", d / "model.onnx")
    rc, err = run_exit(d, "--model-name", bad)
    assert rc == 2 and "--model-name must be a model name" in err, (rc, err)
