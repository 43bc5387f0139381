"""tests/ship/ship.py: helpers for the tests of what onnxd ships (the release tarball, the OCI
image): building them through make, the minimal Debian 12 root, running a command inside that
root, and the reference inference they must answer.

The minimal root (scripts/minroot.sh) is shared and never modified: a command runs in a private
mount namespace (`unshare --mount`) where the root is bind-mounted read-only, the unpacked
release is bind-mounted read-only on its /opt, and /tmp is a fresh tmpfs; then `chroot`. The
network namespace is the host's, so a server inside answers on the host's loopback, and `sh`,
`chroot` and the command exec one another: the Popen's pid is the command's (signals reach it).
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
SANITIZER_SKIP = "the release artifact is tested in the release suite"
# onnxd turns ONNX Runtime's telemetry off itself: the artefacts run in a plain environment
SERVER_ENV = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}


def release_only():
    """Skips the calling test under a sanitizer build (make test SANITIZE=...)."""
    if "/san-" in os.environ.get("ONNXD_BIN", ""):
        pytest.skip(SANITIZER_SKIP)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_env():
    # The test runs under `make test`: the outer make's jobserver descriptors are not ours.
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def run(argv, timeout=1800, what=None, **kw):
    """Runs argv (stdout and stderr together); fails the test with the output's end on a
    non-zero status. Returns the output."""
    r = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, errors="replace", timeout=timeout, **kw)
    if r.returncode != 0:
        pytest.fail(f"{what or ' '.join(map(str, argv))}: exit {r.returncode}\n"
                    + "\n".join(r.stdout.splitlines()[-40:]), pytrace=False)
    return r.stdout


def make(*targets, timeout=1800):
    """`make TARGETS` in the repository (fast when up to date); returns its output."""
    return run(["make", "-C", ROOT, "--no-print-directory", *targets], timeout=timeout,
               env=_make_env())


def dist_tarball():
    """Builds (or reuses) the release tarball with `make dist`; -> (path, size in bytes)."""
    out = make("dist")
    m = re.search(r"^dist: (dist/\S+\.tar\.gz): \S+ \((\d+) bytes\)$", out, re.M)
    assert m, f"make dist printed no size line:\n{out}"
    return ROOT / m.group(1), int(m.group(2))


def minroot():
    """The shared Debian 12 minbase root (scripts/minroot.sh builds it once)."""
    out = run(["bash", ROOT / "scripts/minroot.sh"], timeout=1800)
    return Path(out.strip().splitlines()[-1])


_MOUNT_AND_CHROOT = r"""
set -e
m=$1 root=$2 opt=$3 proc=$4 shm=$5
shift 5
mount --bind "$root" "$m"
mount -o remount,bind,ro "$m"
mount --bind "$opt" "$m/opt"
mount -o remount,bind,ro "$m/opt"
mount -t tmpfs -o mode=1777,size=256m tmpfs "$m/tmp"
if [ "$proc" = 1 ]; then mount -t proc -o nosuid,nodev,noexec proc "$m/proc"; fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$m/sys"
if [ "$shm" = 1 ]; then
  mount --bind /dev "$m/dev"
  mount -t tmpfs -o mode=1777,size=16m,nosuid,nodev,noexec shm "$m/dev/shm"
fi
exec chroot "$m" "$@"
"""


def chroot_argv(root, opt, mountpoint, argv, proc=True, dev_shm_noexec=False):
    """argv that runs ARGV in ROOT (read-only, in a private mount namespace) with the directory
    OPT on /opt (read-only), a tmpfs on /tmp, /proc (unless proc is False) and /sys; with
    dev_shm_noexec, also the host's /dev with a fresh noexec tmpfs on /dev/shm (as hardened
    hosts mount it). MOUNTPOINT is an empty directory of the caller's (the mounts vanish with
    the namespace)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNT_AND_CHROOT,
            "sh", str(mountpoint), str(root), str(opt), "1" if proc else "0",
            "1" if dev_shm_noexec else "0", *map(str, argv)]


# ---------------------------------------------------------------------------- the example model
MLP16 = "mlp16"


def mlp16_input(rows=4, seed=13):
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


def mlp16_expected(model_path, x):
    """The output ONNX Runtime computes in this process for the model file (the reference)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(["output"], {"input": x})[0]


def infer_triton(port, x, model=MLP16):
    """Infers with Triton's HTTP client, binary tensors both ways; -> the output array."""
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=30)
    try:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        out = c.infer(model, [inp],
                      outputs=[httpclient.InferRequestedOutput("output", binary_data=True)])
        return out.as_numpy("output")
    finally:
        c.close()


def http_call(port, method, path, body=None, timeout=10):
    """-> (status, body bytes); JSON-encodes a body that is not bytes."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        c.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def time_to_first_inference(port, t0, alive, timeout=60.0):
    """Polls a JSON inference of mlp16 every 2 ms until one is answered 200; -> seconds since
    t0 (time.monotonic() taken just before the process was started). alive() -> False fails at
    once (the process exited)."""
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                                   "data": [0.5] * 16}]})
    deadline = t0 + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            pytest.fail(f"the server exited before its first inference ({last})", pytrace=False)
        try:
            status, data = http_call(port, "POST", f"/v2/models/{MLP16}/infer", body, timeout=5)
            if status == 200:
                return time.monotonic() - t0
            last = f"{status} {data[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        time.sleep(0.002)
    pytest.fail(f"no inference answered within {timeout:.0f} s ({last})", pytrace=False)
