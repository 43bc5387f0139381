"""The fraud example end to end against the real server: train in Python, serve in C.

    .venv/bin/python -m pytest -q tests/fraud/test_fraud_online.py

A small model is trained (tools/fraud/train.py) into a temporary repository with the example's
config.json (tools/fraud/config.json: the feature view amount + user and card velocity), onnxd
serves it with a fresh feature store, and tools/fraud/score_example.py runs its whole flow:
ingest the first part of a generated stream through POST /v1/events, then score every later
event (return_features) and ingest it. Every scored event's 17 online features must equal
tools/fraud/features.py's offline row bit for bit, and the probability ONNX Runtime gives here
on the offline row (1e-6). The server binary is $ONNXD_BIN (scripts/run-tests.sh sets it;
default build/onnxd).
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "fraud"))

import score_example  # noqa: E402
import train  # noqa: E402

EVENTS = 5000
SEED = 7


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("fraud-repo")
    assert train.main(["--out", str(out), "--events", str(EVENTS), "--seed", str(SEED),
                       "--steps", "1500"]) == 0
    shutil.copy(os.path.join(ROOT, "tools", "fraud", "config.json"), out / "fraud" / "config.json")
    return out


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    binary = os.environ.get("ONNXD_BIN", os.path.join(ROOT, "build", "onnxd"))
    if not os.path.isabs(binary):
        binary = os.path.join(ROOT, binary)
    if not os.access(binary, os.X_OK):
        pytest.fail(f"server binary {binary} not found (make, or set ONNXD_BIN)", pytrace=False)
    d = tmp_path_factory.mktemp("fraud-server")
    port = free_port()
    log = open(d / "onnxd.log", "wb")
    proc = subprocess.Popen([binary, "--model-repository", str(repo), "--host", "127.0.0.1",
                             "--http-port", str(port), "--feature-dir", str(d / "store"),
                             "--feature-sync", "none"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"onnxd exited ({proc.returncode}); see {d}/onnxd.log", pytrace=False)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v2/health/ready")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("onnxd not ready within 60 s", pytrace=False)
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = None
    log.close()
    assert rc == 0, f"onnxd exit status {rc} after SIGTERM; see {d}/onnxd.log"


def test_online_features_and_scores_equal_offline(server, repo, capsys):
    rc = score_example.main(["--url", server, "--events", str(EVENTS), "--seed", str(SEED),
                             "--ingest", "3000", "--score", "2000", "--batch", "500",
                             "--model-file", str(repo / "fraud" / "1" / "model.onnx"),
                             "--show", "3"])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0, out
    assert ("scored 2000 events: features 2000 equal, 0 different, 0 not returned; "
            "probabilities 2000 equal") in out
