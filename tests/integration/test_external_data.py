"""ONNX models with external data (issue 12 item 6): a model whose weights live in
model.onnx.data beside model.onnx loads and answers as onnxruntime does; a model whose external
data location escapes the version directory (.., absolute, symlink out), names a missing file,
or claims more bytes than the file holds is refused at load, with the reason in the log, and is
absent from the server."""
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import ROOT, http_get, infer


def _set_location(model, **changes):
    """Rewrites the external_data entries of every initializer: changes maps a key to a value
    (or to a function of the tensor's old value)."""
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key in changes:
                v = changes[e.key]
                e.value = v(e.value) if callable(v) else v


@pytest.fixture(scope="module")
def ext_models(tmp_path_factory):
    """tools/make_test_models.py --extdata in a directory of its own (extdata_mlp is not in the
    shared test repository)."""
    d = tmp_path_factory.mktemp("extmodels")
    subprocess.run([sys.executable, str(ROOT / "tools/make_test_models.py"), str(d), "--extdata"],
                   check=True, cwd=ROOT)
    return d


@pytest.fixture(scope="module")
def ext_repo(tmp_path_factory, ext_models):
    src = ext_models / "extdata_mlp" / "1"
    root = tmp_path_factory.mktemp("extrepo")
    outside = tmp_path_factory.mktemp("extoutside")
    shutil.copy(src / "model.onnx.data", outside / "model.onnx.data")

    def add(name, mutate=None, link_out=False, drop_data=False):
        d = root / name / "1"
        d.mkdir(parents=True)
        m = onnx.load(str(src / "model.onnx"), load_external_data=False)
        if mutate:
            mutate(m)
        onnx.save_model(m, str(d / "model.onnx"))
        if link_out:
            os.symlink(outside / "model.onnx.data", d / "model.onnx.data")
        elif not drop_data:
            shutil.copy(src / "model.onnx.data", d / "model.onnx.data")

    add("ext_ok")
    add("ext_dotdot", lambda m: _set_location(m, location="../../extoutside/model.onnx.data"))
    add("ext_absolute", lambda m: _set_location(m, location=str(outside / "model.onnx.data")))
    add("ext_symlink", link_out=True)
    add("ext_missing", drop_data=True)
    add("ext_too_long", lambda m: _set_location(m, length="1000000"))
    add("ext_offset", lambda m: _set_location(m, offset="999999"))
    return root


@pytest.fixture(scope="module")
def ext_server(server_factory, ext_repo):
    return server_factory(ext_repo, name="extdata")


def test_external_data_model_answers_like_onnxruntime(ext_server, ext_models):
    x = np.arange(20, dtype=np.float32).reshape(5, 4) / 7.0 - 1.0
    sess = ort.InferenceSession(str(ext_models / "extdata_mlp" / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    r, _, outs = infer(ext_server.port, "ext_ok", [("x", x)])
    assert r.status == 200, r
    np.testing.assert_allclose(outs["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,reason", [
    ("ext_dotdot", "outside the model directory"),
    ("ext_absolute", "outside the model directory (absolute path)"),
    ("ext_symlink", "outside the model directory"),
    ("ext_missing", "file not found"),
    ("ext_too_long", "length beyond the end of the file"),
    ("ext_offset", "offset beyond the end of the file"),
])
def test_escaping_or_broken_external_data_is_refused(ext_server, name, reason):
    assert http_get(ext_server.port, f"/v2/models/{name}").status == 404
    assert http_get(ext_server.port, f"/v2/models/{name}/ready").status != 200
    with open(ext_server.log_path, encoding="utf-8", errors="replace") as f:
        log = f.read()
    lines = [ln for ln in log.splitlines() if f"'{name}'" in ln and "not loaded" in ln]
    assert lines, log[-2000:]
    assert "external data '" in lines[-1] and reason in lines[-1], lines[-1]
