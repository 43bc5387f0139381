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


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _resolve(p):
    p = Path(p)
    return p if p.is_absolute() else ROOT / p


def _link_tree(src, dst):
    """Copies the tree src to dst, hard-linking files where the file system allows."""

    def link_or_copy(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link_or_copy, symlinks=False)


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
        self.stopped = False

    @property
    def url(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        last = None
        for _ in range(3):  # the free port may be taken between probe and bind: retry
            self.port = free_port()
            self._log = open(self.log_path, "ab")
            argv = [self.binary, "--model-repository", self.repo, "--host", "127.0.0.1",
                    "--http-port", str(self.port), *self.extra_args]
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


@pytest.fixture
def client(server):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(server.url, connection_timeout=10.0,
                                         network_timeout=30.0)
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
