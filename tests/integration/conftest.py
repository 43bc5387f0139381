"""Fixtures for onnxd's black-box integration tests.

The tests start the real binary on a loopback port and talk to it as clients do: the official
Triton client (tritonclient.http) where it can express the request, raw sockets where the test
is about HTTP framing or about bytes no client library would send.

Environment:
  ONNXD_BIN          server binary (default build/onnxd; the sanitizer runner sets
                     build/san-address-undefined/onnxd). Relative paths are from the repo root.
  ONNXD_TEST_MODELS  directory made by tools/make_test_models.py (the runner makes
                     build/test-models); when unset the tests generate one in a temp dir.

The repository served is a temp dir assembled from the test models, models/mobilenetv2
(tools/make_models.py is run if it is missing) and a few entries that must NOT be served
(symlinks pointing out of the repository). Files are hard-linked, not symlinked: the server
refuses model files whose real path is outside the repository.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

# Models the dedicated (small) servers load.
SMALL_MODELS = ("identity_fp32", "add_sub_fp32")


def rss_kib(pid):
    """Resident memory of process pid, KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resolve(p):
    p = Path(p)
    return p if p.is_absolute() else ROOT / p


def link_file(src, dst):
    """Puts file src at dst (parent directories made): a hard link where the file system
    allows, else a copy."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_tree(src, dst):
    """Copies the tree src to dst, hard-linking files where the file system allows."""
    shutil.copytree(src, dst, copy_function=link_file, symlinks=False)


class Server:
    """One onnxd process on 127.0.0.1:<free port>."""

    def __init__(self, binary, repo, extra_args=(), log_path=None, name="onnxd"):
        self.binary = str(binary)
        self.repo = str(repo)
        self.extra_args = list(extra_args)
        self.log_path = self.first_log_path = str(log_path)
        self.restarts = 0
        self.name = name
        self.proc = None
        self.port = None
        self.grpc_port = None
        self.stopped = False

    @property
    def url(self):
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self):
        return f"127.0.0.1:{self.grpc_port}"

    def start(self):
        last = None
        for _ in range(3):  # the free port may be taken between probe and bind: retry
            self.port = free_port()
            self._log = open(self.log_path, "ab")
            argv = [self.binary, "--model-repository", self.repo, "--host", "127.0.0.1",
                    "--http-port", str(self.port), *self.extra_args]
            if "--grpc-port" in self.extra_args:
                self.grpc_port = int(self.extra_args[self.extra_args.index("--grpc-port") + 1])
            else:  # every server serves gRPC too, on a port of its own (default 8001 is shared)
                self.grpc_port = free_port()
                argv += ["--grpc-port", str(self.grpc_port)]
            self._log.write(("\n$ " + " ".join(argv) + "\n").encode())
            self._log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, cwd=str(ROOT))
            last = self._wait_ready()
            if last is None:
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()
            if "in use" not in self.log_tail():
                break
        pytest.fail(f"{self.name}: {last}\n--- server log ({self.log_path}) ---\n"
                    f"{self.log_tail()}", pytrace=False)

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"server exited with status {self.proc.returncode} before it was ready"
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/health/ready")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return None
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        return f"not ready within {READY_TIMEOUT:.0f} s"

    def restart(self):
        self._log.close()
        self.restarts += 1
        self.log_path = f"{self.first_log_path}.restart{self.restarts}"
        self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=60):
        """The end of the log; from the first sanitizer report line if there is one."""
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        for i, line in enumerate(lines):
            if "Sanitizer" in line or "runtime error:" in line:
                return "\n".join(lines[max(0, i - 5): i + 45])
        return "\n".join(lines[-n:])

    def terminate(self):
        """Sends SIGTERM (the process must then exit by itself; see wait_exit)."""
        self.stopped = True
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Waits for the exit; returns the status, or None after killing a hung process."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self._log.close()

    def stop(self):
        """SIGTERM, wait; returns an error string or None when it exited 0."""
        if self.proc is None:
            return None
        was_alive = self.alive()
        self.terminate()
        rc = self.wait_exit()
        if not was_alive:
            return f"{self.name} had already exited with status {self.proc.returncode}"
        if rc is None:
            return f"{self.name} did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM (killed)"
        if rc != 0:
            return f"{self.name} exited with status {rc} after SIGTERM"
        return None


def _server_binary():
    b = _resolve(os.environ.get("ONNXD_BIN", "build/onnxd"))
    if not os.access(b, os.X_OK):
        pytest.fail(f"server binary {b} not found (make build/onnxd, or set ONNXD_BIN)",
                    pytrace=False)
    return b


@pytest.fixture(scope="session")
def test_models(tmp_path_factory):
    """Directory of the small test models (tools/make_test_models.py)."""
    env = os.environ.get("ONNXD_TEST_MODELS")
    if env:
        d = _resolve(env)
        if not (d / "identity_fp32").is_dir():
            pytest.fail(f"ONNXD_TEST_MODELS={env} has no identity_fp32", pytrace=False)
        return d
    d = tmp_path_factory.mktemp("test-models")
    subprocess.run([PY, str(ROOT / "tools/make_test_models.py"), str(d)], check=True, cwd=ROOT)
    return d


@pytest.fixture(scope="session")
def demo_models():
    """models/ with mobilenetv2 (tools/make_models.py; fast when up to date)."""
    d = ROOT / "models"
    if not (d / "mobilenetv2/1/model.onnx").is_file():
        subprocess.run([PY, str(ROOT / "tools/make_models.py"), "--out", str(d)], check=True,
                       cwd=ROOT)
    return d


@pytest.fixture(scope="session")
def outside_dir(tmp_path_factory, test_models):
    """A directory outside every repository holding a valid model (symlink targets)."""
    d = tmp_path_factory.mktemp("outside")
    _link_tree(test_models / "identity_fp32", d / "identity_fp32")
    return d


@pytest.fixture(scope="session")
def repo(tmp_path_factory, test_models, demo_models, outside_dir):
    r = tmp_path_factory.mktemp("repo")
    for entry in sorted(os.listdir(test_models)):
        if (test_models / entry).is_dir():
            _link_tree(test_models / entry, r / entry)
    _link_tree(demo_models / "mobilenetv2", r / "mobilenetv2")
    # Entries whose files lie outside the repository: must not be served.
    (r / "escape_file" / "1").mkdir(parents=True)
    os.symlink(outside_dir / "identity_fp32/1/model.onnx", r / "escape_file/1/model.onnx")
    (r / "escape_dir").mkdir()
    os.symlink(outside_dir / "identity_fp32/1", r / "escape_dir/1")
    os.symlink(outside_dir / "identity_fp32", r / "escape_model")
    return r


@pytest.fixture(scope="session")
def small_repo(tmp_path_factory, test_models):
    r = tmp_path_factory.mktemp("small-repo")
    for m in SMALL_MODELS:
        _link_tree(test_models / m, r / m)
    return r


_running = []  # servers that must stay alive between tests


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory):
    """start(repo, extra_args, name) -> Server; all stopped (exit 0 checked) at session end,
    unless the test stopped them itself."""
    binary = _server_binary()
    logs = tmp_path_factory.mktemp("logs")
    started = []

    def start(repo, extra_args=(), name="onnxd"):
        s = Server(binary, repo, extra_args, logs / f"{name}-{len(started)}.log", name)
        started.append(s)
        s.start()
        return s

    yield start
    problems = [p for p in (s.stop() for s in started if not s.stopped) if p]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def server(server_factory, repo):
    """The main server: every test model plus mobilenetv2, default limits."""
    s = server_factory(repo, name="main")
    _running.append(s)
    yield s
    _running.remove(s)
    err = s.stop()
    if err:
        pytest.fail(f"{err}\n--- server log ({s.log_path}) ---\n{s.log_tail()}", pytrace=False)


@pytest.fixture(autouse=True)
def _server_survives():
    """After every test: the servers that should be up are up. A crash fails the test that
    caused it; the server is then restarted (new port, new log) so that the tests after it
    still say something."""
    yield
    for s in list(_running):
        if not s.stopped and not s.alive():
            msg = (f"{s.name} server died during this test (status {s.proc.returncode})\n"
                   f"--- server log ({s.log_path}) ---\n{s.log_tail()}")
            s.restart()
            pytest.fail(msg, pytrace=False)


def keep_alive_checked(s):
    """Registers a dedicated server for the after-test liveness check."""
    _running.append(s)
    return s


def forget(s):
    if s in _running:
        _running.remove(s)


def restart_checked(s):
    """Stops s (SIGTERM; exit 0 required) and starts it again with the same arguments."""
    forget(s)
    err = s.stop()
    assert err is None, f"{err}\n{s.log_tail()}"
    s.stopped = False
    s.restart()
    return keep_alive_checked(s)


@pytest.fixture
def client(server):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(server.url, connection_timeout=10.0,
                                         network_timeout=30.0)
    yield c
    c.close()


@pytest.fixture
def gclient(server):
    """tritonclient.grpc's client of the main server."""
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


@pytest.fixture
def conn(server):
    """A raw connection to the main server (rawhttp.RawConn)."""
    import rawhttp

    c = rawhttp.RawConn(server.port)
    yield c
    c.close()


@pytest.fixture
def connect(server):
    """connect() -> a new raw connection to the main server, closed after the test."""
    import rawhttp

    conns = []

    def make(**kw):
        c = rawhttp.RawConn(server.port, **kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


# =============================================================================================
# Batching, backpressure, deadlines and observability (test_batching.py, test_metrics.py).
# Everything below is used only by those files: model builders, a repository builder that
# writes config.json files, dedicated servers with their own flags, and small HTTP helpers.
# =============================================================================================

import functools as _functools
import json as _json
import threading as _threading


@pytest.fixture(scope="session")
def mlp_medium(demo_models):
    """models/mlp_medium/1/model.onnx (tools/make_models.py; fast when up to date)."""
    p = demo_models / "mlp_medium/1/model.onnx"
    if not p.is_file():
        subprocess.run([PY, str(ROOT / "tools/make_models.py"), "--out", str(demo_models)],
                       check=True, cwd=ROOT)
    return p


def _onnx_bytes(nodes, name, inputs, outputs, inits=()):
    from onnx import helper

    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)],
                          producer_name="onnxd tests/integration")
    m.ir_version = 8
    return m.SerializeToString(deterministic=True)


SLOW_N = 512  # matrix size of the slow model's loop body


@_functools.lru_cache(maxsize=None)
def slow_model_bytes():
    """"slow": x [N,4] FP32, iters [N,1] INT64 -> y = x (exactly), after max(iters) products
    of a 512x512 matrix with an orthogonal one (a Loop, so nothing is constant-folded and the
    run time is chosen per request: ~1-5 ms an iteration on one core). The matrix product's
    result enters y as 0 * mean(P), so y == x bit for bit for finite x. Every input and
    output has a dynamic first dimension, so it can be batched too."""
    import numpy as np
    from onnx import TensorProto as TP
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(512)
    q, _ = np.linalg.qr(rng.standard_normal((SLOW_N, SLOW_N)))
    w = numpy_helper.from_array(q.astype(np.float32), "W")
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    body = helper.make_graph(
        [helper.make_node("MatMul", ["P_in", "W"], ["P_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TP.INT64, []),
         helper.make_tensor_value_info("cond_in", TP.BOOL, []),
         helper.make_tensor_value_info("P_in", TP.FLOAT, [SLOW_N, SLOW_N])],
        [helper.make_tensor_value_info("cond_out", TP.BOOL, []),
         helper.make_tensor_value_info("P_out", TP.FLOAT, [SLOW_N, SLOW_N])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["s0"]),
        helper.make_node("Add", ["W", "s0"], ["P0"]),
        helper.make_node("ReduceMax", ["iters"], ["M"], keepdims=0),
        helper.make_node("Loop", ["M", "", "P0"], ["P"], body=body),
        helper.make_node("ReduceMean", ["P"], ["r"], keepdims=0),
        helper.make_node("Mul", ["r", "zero"], ["r0"]),
        helper.make_node("Add", ["x", "r0"], ["y"]),
    ]
    return _onnx_bytes(
        nodes, "slow",
        [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("iters", TP.INT64, ["N", 1])],
        [helper.make_tensor_value_info("y", TP.FLOAT, ["N", 4])],
        [w, zero])


@_functools.lru_cache(maxsize=None)
def two_out_model_bytes():
    """"two_out": x [N,4] FP32 -> plus1 = x + 1, times2 = x * 2 (both [N,4])."""
    import numpy as np
    from onnx import TensorProto as TP
    from onnx import helper, numpy_helper

    return _onnx_bytes(
        [helper.make_node("Add", ["x", "one"], ["plus1"]),
         helper.make_node("Mul", ["x", "two"], ["times2"])],
        "two_out",
        [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("plus1", TP.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("times2", TP.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
         numpy_helper.from_array(np.array(2.0, np.float32), "two")])


def build_repo(root, models):
    """Writes a model repository at root. models: {name: spec}, spec a dict with
      "model": bytes of model.onnx or a Path to hard-link (version 1),
      "config": dict (written as config.json) or str (written as is), optional,
      "files": {relative path under DIR/<name>: bytes}, optional (warm-up data)."""
    root = Path(root)
    for name, spec in models.items():
        d = root / name / "1"
        d.mkdir(parents=True)
        src = spec["model"]
        if isinstance(src, (bytes, bytearray)):
            (d / "model.onnx").write_bytes(src)
        else:
            try:
                os.link(src, d / "model.onnx")
            except OSError:
                shutil.copy2(src, d / "model.onnx")
        cfg = spec.get("config")
        if cfg is not None:
            text = cfg if isinstance(cfg, str) else _json.dumps(cfg)
            (root / name / "config.json").write_text(text)
        for rel, data in spec.get("files", {}).items():
            p = root / name / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    return root


def dedicated_server(server_factory, repo, args, name):
    """Generator for a module fixture: a server of its own, checked alive after every test,
    stopped (exit 0 required) at the end."""
    s = keep_alive_checked(server_factory(repo, list(args), name=name))
    yield s
    forget(s)
    err = s.stop()
    assert err is None, f"{err}\n{s.log_tail()}"


def http_get(port, path, timeout=10.0):
    """One GET on a fresh connection -> rawhttp.Response."""
    import rawhttp

    c = rawhttp.RawConn(port, timeout=timeout)
    try:
        c.request("GET", path)
        return c.read_response()
    finally:
        c.close()


def http_post_json(port, path, obj, timeout=30.0, headers=()):
    import rawhttp

    c = rawhttp.RawConn(port, timeout=timeout)
    try:
        c.request("POST", path, _json.dumps(obj).encode(),
                  ["Content-Type: application/json", *headers])
        return c.read_response()
    finally:
        c.close()


def model_stats(port, model, version=None):
    """The one model_stats entry of a model version (statistics extension)."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/stats"
    r = http_get(port, path)
    assert r.status == 200, r
    entries = r.json()["model_stats"]
    assert len(entries) == 1, entries
    return entries[0]


def run_threads(fns, timeout=60.0):
    """Runs each fn() on a thread of its own, all released at once; returns their results in
    order (an exception a thread raised is re-raised here)."""
    results = [None] * len(fns)
    errors = [None] * len(fns)
    barrier = _threading.Barrier(len(fns))

    def body(i):
        try:
            barrier.wait(timeout)
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors[i] = e

    ts = [_threading.Thread(target=body, args=(i,), daemon=True) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    assert not any(t.is_alive() for t in ts), f"threads still running after {timeout} s"
    for e in errors:
        if e is not None:
            raise e
    return results


_NP_OIP = {"float32": "FP32", "float64": "FP64", "int64": "INT64", "int32": "INT32"}


def infer_body(inputs, outputs=None, binary_in=False, binary_out=False, parameters=None):
    """(body, extra headers) of an inference request. inputs: [(name, numpy array)];
    outputs: names to request (None: all); binary_in / binary_out: the binary tensor
    extension for the inputs / the outputs."""
    import numpy as np

    head = {"inputs": []}
    blobs = []
    for name, a in inputs:
        a = np.ascontiguousarray(a)
        t = {"name": name, "datatype": _NP_OIP[a.dtype.name], "shape": list(a.shape)}
        if binary_in:
            t["parameters"] = {"binary_data_size": a.nbytes}
            blobs.append(a.tobytes())
        else:
            t["data"] = a.reshape(-1).tolist()
        head["inputs"].append(t)
    if outputs is not None:
        head["outputs"] = [{"name": n, "parameters": {"binary_data": bool(binary_out)}}
                           for n in outputs]
    params = dict(parameters or {})
    if binary_out and outputs is None:
        params["binary_data_output"] = True
    if params:
        head["parameters"] = params
    hj = _json.dumps(head).encode()
    if binary_in:
        return hj + b"".join(blobs), [f"Inference-Header-Content-Length: {len(hj)}",
                                      "Content-Type: application/octet-stream"]
    return hj, ["Content-Type: application/json"]


def decode_outputs(resp):
    """{output name: numpy array} of a 200 inference response (JSON or binary outputs)."""
    import numpy as np

    from oip import split_binary_response

    np_of = {v: k for k, v in _NP_OIP.items()}
    if resp.header("Inference-Header-Content-Length") is not None:
        head, blobs = split_binary_response(resp)
    else:
        head, blobs = resp.json(), {}
    out = {}
    for o in head["outputs"]:
        dt = np.dtype(np_of[o["datatype"]])
        if o["name"] in blobs:
            a = np.frombuffer(blobs[o["name"]], dtype=dt)
        else:
            assert "data" in o, f"output {o['name']} has neither data nor binary data"
            a = np.array(o["data"], dtype=dt)
        out[o["name"]] = a.reshape(o["shape"])
    return head, out


def infer(port, model, inputs, timeout=60.0, **kw):
    """One inference on a fresh connection -> (Response, head or None, {name: array})."""
    import rawhttp

    body, headers = infer_body(inputs, **kw)
    c = rawhttp.RawConn(port, timeout=timeout)
    try:
        c.request("POST", f"/v2/models/{model}/infer", body, headers)
        r = c.read_response()
    finally:
        c.close()
    if r.status != 200:
        return r, None, {}
    head, outs = decode_outputs(r)
    return r, head, outs


def metric_value(port, sample, model=None, version="1"):
    """The value of one sample in /metrics, by its exact name as the server writes it (Triton's
    counters have no _total suffix), with labels model/version when model is given."""
    import re

    text = http_get(port, "/metrics").body.decode()
    lab = "" if model is None else r'\{model="%s",version="%s"\}' % (re.escape(model), version)
    m = re.search(r"^%s%s (\S+)$" % (re.escape(sample), lab), text, re.M)
    assert m, f"no sample {sample} {model or ''} in /metrics"
    return float(m.group(1))


def wait_until(cond, timeout, what, interval=0.005):
    """Polls cond() until it is true; fails with what (a string, or a function giving one at
    that moment, e.g. with a server's log) after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            what = what() if callable(what) else what
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(interval)
