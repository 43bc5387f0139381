"""The single-file onnxd (issue 13): one executable that carries ONNX Runtime inside it.

What is checked:
- it needs no shared library beyond glibc, libstdc++ and libgcc_s, and has no rpath;
- it serves in a minimal Debian 12 root (mmdebstrap --variant=minbase: no -dev packages, no
  ONNX Runtime, LMDB, hiredis or libpq): ready, a correct inference, SIGTERM -> exit 0; with
  /dev/shm mounted noexec, since the library is loaded from a memfd, which does not live there;
- there, --postgres fails at start-up (exit 2) naming libpq.so.5 and the package to install;
- without /proc it fails with a message saying so (it dlopens /proc/self/fd/N);
- a damaged embedded library (one byte changed) is refused by its SHA-256 before it is loaded;
- cold start (exec to the first answered inference, median of 5) next to the normal build's,
  measured in the same run, written with the file's size and idle memory to
  <build>/single-report.json.

The minimal root comes from scripts/minroot.sh (it makes sure that
${ONNXD_CACHE:-~/.cache/onnxd}/minroot-bookworm exists and prints its path). The tests never
write into it: each run bind-mounts it read-only in a private mount namespace (unshare -m),
with a scratch directory read-only at /opt (the executable and the model repository), /proc,
/sys and /dev mounted in, and chroots there. The process keeps its PID through unshare, sh and chroot (each
execs the next), so SIGTERM reaches onnxd itself.
"""

import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import ROOT, _link_tree, _resolve, free_port

# What every distribution has: glibc's libraries and the loader, libstdc++, libgcc_s.
ALLOWED_NEEDED = re.compile(
    r"^(lib(c|m|dl|rt|pthread|stdc\+\+|gcc_s)\.so\.[0-9]+|ld-linux[-a-z0-9_.]*\.so\.[0-9]+)$")
PG_MESSAGE = "onnxd: --postgres needs libpq.so.5 (Debian: apt-get install libpq5): "
COLD_RUNS = 5
START_TIMEOUT = 60.0


def _normal_binary():
    return _resolve(os.environ.get("ONNXD_BIN", "build/onnxd"))


@pytest.fixture(scope="module")
def single():
    normal = _normal_binary()
    if normal.parent.name.startswith("san-"):
        pytest.skip(f"sanitizer build ({normal.parent.name}): the single file is a release "
                    "artefact, built by the release build only (make build/onnxd-single)")
    b = _resolve(os.environ.get("ONNXD_SINGLE", normal.parent / "onnxd-single"))
    if not os.access(b, os.X_OK):
        pytest.fail(f"{b} not found (make {b.relative_to(ROOT) if b.is_relative_to(ROOT) else b})",
                    pytrace=False)
    return b


@pytest.fixture(scope="module")
def minroot():
    """Path of the minimal Debian 12 root (read-only for these tests)."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m is not permitted here (needs CAP_SYS_ADMIN): cannot set up a "
                    "private mount namespace for the minimal root")
    script = ROOT / "scripts/minroot.sh"
    cache = Path(os.environ.get("ONNXD_CACHE", Path.home() / ".cache/onnxd"))
    if script.is_file():
        r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            pytest.fail(f"scripts/minroot.sh failed ({r.returncode}):\n{r.stderr[-3000:]}",
                        pytrace=False)
        root = Path(r.stdout.strip().splitlines()[-1])
    elif (cache / "minroot-bookworm/usr/bin/dpkg").exists():
        root = cache / "minroot-bookworm"  # made by hand with the same mmdebstrap command
    else:
        pytest.skip("no minimal root: scripts/minroot.sh is not in this tree and "
                    f"{cache}/minroot-bookworm does not exist")
    if not (root / "usr/bin/dpkg").exists():
        pytest.fail(f"{root} is not a Debian root", pytrace=False)
    return root


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory, test_models, demo_models):
    """add_sub_fp32 (exact answers) and mlp16 (the model bench/run.py's cold start probes)."""
    r = tmp_path_factory.mktemp("single-repo")
    _link_tree(test_models / "add_sub_fp32", r / "add_sub_fp32")
    _link_tree(demo_models / "mlp16", r / "mlp16")
    return r


def _installed_packages(root):
    """Names of the packages installed in root (from its dpkg status file)."""
    names, name = set(), None
    for line in (root / "var/lib/dpkg/status").read_text().splitlines():
        if line.startswith("Package: "):
            name = line.split(": ", 1)[1]
        elif line.startswith("Status: ") and line.endswith(" installed") and name:
            names.add(name)
    return names


def _needed(path):
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out), out


def _infer_ok(port, timeout=2.0):
    """One JSON inference on add_sub_fp32; True when the answer is exactly right."""
    a = np.arange(16, dtype=np.float32).reshape(1, 16) / 4
    b = np.full((1, 16), 0.75, dtype=np.float32)
    body = json.dumps({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "FP32", "data": a.ravel().tolist()},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "FP32", "data": b.ravel().tolist()}]})
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("POST", "/v2/models/add_sub_fp32/infer", body,
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
    except (OSError, http.client.HTTPException):
        return False
    if r.status != 200:
        return False
    out = {o["name"]: np.array(o["data"], dtype=np.float32) for o in json.loads(data)["outputs"]}
    return (np.array_equal(out["OUTPUT0"], (a + b).ravel())
            and np.array_equal(out["OUTPUT1"], (a - b).ravel()))


class Run:
    """One onnxd process, on the host or in the minimal root; start() returns the cold start
    (Popen to the first correct inference, polled every 5 ms)."""

    def __init__(self, argv, log):
        self.argv, self.log, self.proc = argv, log, None

    def start(self):
        with open(self.log, "ab") as logf:
            logf.write(("\n$ " + " ".join(map(str, self.argv)) + "\n").encode())
            logf.flush()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT)
        port = self.port
        while time.monotonic() - t0 < START_TIMEOUT:
            if _infer_ok(port, 1.0):
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                pytest.fail(f"exited with status {self.proc.returncode} before serving:\n"
                            f"{self.tail()}", pytrace=False)
            time.sleep(0.005)
        self.kill()
        pytest.fail(f"no answer within {START_TIMEOUT:.0f} s:\n{self.tail()}", pytrace=False)

    @property
    def port(self):
        return int(self.argv[self.argv.index("--http-port") + 1])

    def tail(self, n=4000):
        return Path(self.log).read_text(errors="replace")[-n:]

    def stop(self):
        """SIGTERM; the exit status (None after a kill at 20 s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _root_argv(root, scratch, args, proc=True):
    """argv that runs /opt/onnxd args inside root (see the module's docstring): root and scratch
    (at /opt) read-only, a tmpfs on /tmp, /dev and /sys from the host with a fresh noexec tmpfs
    on /dev/shm, and /proc unless proc is False (as a container runtime sets it up)."""
    mnt = scratch.parent / (scratch.name + "-mnt")
    mnt.mkdir(exist_ok=True)
    script = "\n".join([
        "set -e",
        'mount --bind "$1" "$2"',
        'mount -o remount,bind,ro "$2"',
        'mount --bind "$3" "$2/opt"',
        'mount -o remount,bind,ro "$2/opt"',
        'mount -t tmpfs -o mode=1777,size=64m tmp "$2/tmp"',
        'mount --bind /dev "$2/dev"',
        'mount --bind /sys "$2/sys"',
        'mount -t tmpfs -o noexec,nosuid,nodev,size=16m shm "$2/dev/shm"',
        'mount -t proc proc "$2/proc"' if proc else ":",
        'r=$2; shift 3',
        'exec chroot "$r" /opt/onnxd "$@"',
    ])
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(root),
            str(mnt), str(scratch), *map(str, args)]


def _serve_args(repo, port, *extra):
    return ["--model-repository", repo, "--host", "127.0.0.1", "--http-port", str(port),
            "--infer-threads", "1", *extra]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, single, tiny_repo):
    """A directory holding onnxd (the single file) and models/ (a copy of tiny_repo)."""
    d = tmp_path_factory.mktemp("single-root-opt")
    shutil.copy2(single, d / "onnxd")
    shutil.copytree(tiny_repo, d / "models")
    return d


def test_needs_only_the_c_and_cxx_runtime(single):
    needed, dyn = _needed(single)
    assert needed, "no NEEDED entries: not a dynamic executable?"
    bad = [n for n in needed if not ALLOWED_NEEDED.match(n)]
    assert not bad, f"{single} needs {bad} (only glibc, libstdc++, libgcc_s allowed)"
    assert not re.search(r"\((RPATH|RUNPATH)\)", dyn), f"rpath in {single}:\n{dyn}"
    # ldd resolves everything, and only to those libraries (none of ORT, LMDB, hiredis, libpq).
    ldd = subprocess.run(["ldd", str(single)], capture_output=True, text=True, check=True).stdout
    assert "not found" not in ldd, ldd
    for lib in ("onnxruntime", "lmdb", "hiredis", "libpq", "ssl", "krb5"):
        assert lib not in ldd, f"{lib} in ldd {single}:\n{ldd}"
    # The normal build still finds ORT through its rpath, and no longer links libpq either.
    normal_needed, _ = _needed(_normal_binary())
    assert "libonnxruntime.so.1" in normal_needed
    assert not any(n.startswith("libpq") for n in normal_needed), normal_needed


def test_serves_in_a_minimal_root(single, minroot, scratch, tmp_path):
    pkgs = _installed_packages(minroot)
    dev = sorted(p for p in pkgs if p.endswith("-dev"))
    assert not dev, f"the minimal root has -dev packages: {dev}"
    for p in ("liblmdb0", "libhiredis0.14", "libpq5", "libonnxruntime1.21"):
        assert p not in pkgs, f"the minimal root has {p}: the test would prove less"
    assert not list(minroot.glob("usr/lib/*/libonnxruntime*"))
    port = free_port()
    run = Run(_root_argv(minroot, scratch, _serve_args("/opt/models", port)), tmp_path / "root.log")
    try:
        run.start()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/v2/health/ready")
        assert c.getresponse().status == 200
        c.close()
        # Triton's client, binary tensors this time.
        tc = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.linspace(-3, 3, 16, dtype=np.float32).reshape(1, 16)
        y = np.full((1, 16), 2.5, dtype=np.float32)
        ins = [httpclient.InferInput("INPUT0", [1, 16], "FP32"),
               httpclient.InferInput("INPUT1", [1, 16], "FP32")]
        ins[0].set_data_from_numpy(x, binary_data=True)
        ins[1].set_data_from_numpy(y, binary_data=True)
        res = tc.infer("add_sub_fp32", ins, outputs=[
            httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
            httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)])
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), x + y)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), x - y)
        tc.close()
        assert "embedded" in run.tail() and "SHA-256 verified" in run.tail(), run.tail()
        rc = run.stop()
        assert rc == 0, f"exit status {rc} after SIGTERM:\n{run.tail()}"
    finally:
        run.kill()


def test_postgres_without_libpq_fails_clearly(single, minroot, scratch, tmp_path):
    argv = _root_argv(minroot, scratch, _serve_args(
        "/opt/models", free_port(), "--postgres", "host=127.0.0.1 port=1 dbname=x"))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert PG_MESSAGE in r.stderr, r.stderr
    assert "libpq.so.5: cannot open shared object file" in r.stderr, r.stderr


def test_without_proc_says_so(single, minroot, scratch):
    argv = _root_argv(minroot, scratch, _serve_args("/opt/models", free_port()), proc=False)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "/proc is not mounted" in r.stderr, r.stderr


def test_damaged_library_is_refused(single, tmp_path, tiny_repo):
    """One byte of the embedded library changed: the SHA-256 check refuses it before dlopen."""
    data = bytearray(single.read_bytes())
    lib = (_resolve("deps/ort/lib/libonnxruntime.so.1")).read_bytes()
    at = data.find(lib[:65536])
    assert at > 0 and data[at:at + len(lib)] == lib, "the library's bytes are not in the file"
    data[at + len(lib) // 2] ^= 0x01
    bad = tmp_path / "onnxd-damaged"
    bad.write_bytes(bytes(data))
    bad.chmod(0o755)
    r = subprocess.run([str(bad), *_serve_args(str(tiny_repo), free_port())], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "inside this executable is damaged" in r.stderr and "SHA-256" in r.stderr, r.stderr
    # --version loads the library too, and says it is unavailable rather than crash.
    v = subprocess.run([str(bad), "--version"], capture_output=True, text=True, timeout=60)
    assert "ONNX Runtime library unavailable" in v.stdout, (v.stdout, v.stderr)
    ok = subprocess.run([str(single), "--version"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and re.search(r"ONNX Runtime library 1\.\d+", ok.stdout), ok.stdout


def _status_kb(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def test_cold_start_next_to_the_normal_build(single, minroot, scratch, tiny_repo, tmp_path):
    """Exec to the first answered inference, 5 times each, interleaved: the normal build and
    the single file on this host, and the single file in the minimal root."""
    kinds = {
        "normal": lambda port: [str(_normal_binary()), *_serve_args(str(tiny_repo), port)],
        "single": lambda port: [str(single), *_serve_args(str(tiny_repo), port)],
        "single-minroot": lambda port: _root_argv(minroot, scratch,
                                                  _serve_args("/opt/models", port)),
    }
    times = {k: [] for k in kinds}
    memory = {}
    for i in range(COLD_RUNS):
        for kind, argv in kinds.items():
            run = Run(argv(free_port()), tmp_path / f"{kind}.log")
            try:
                times[kind].append(run.start())
                if i == 0:
                    pid = run.proc.pid
                    memory[kind] = {"rss_kb": _status_kb(pid, "VmRSS"),
                                    "rss_shmem_kb": _status_kb(pid, "RssShmem")}
                rc = run.stop()
                assert rc == 0, f"{kind}: exit status {rc} after SIGTERM:\n{run.tail()}"
            finally:
                run.kill()
    med = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "single_file": str(single), "single_bytes": single.stat().st_size,
        "embedded_library_bytes": _resolve("deps/ort/lib/libonnxruntime.so.1").stat().st_size,
        "normal_bytes": _normal_binary().stat().st_size,
        "cold_start_runs": COLD_RUNS,
        "cold_start_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "cold_start_median_s": {k: round(v, 4) for k, v in med.items()},
        "idle_memory_first_run": memory,
        "what": "exec to the first correct JSON inference on add_sub_fp32, polled every 5 ms; "
                "--infer-threads 1; runs interleaved normal, single, single-minroot",
    }
    out = _normal_binary().parent / "single-report.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    # Loading 46 MB from memory (copy, SHA-256, dlopen) costs tens of ms, not seconds.
    assert med["single"] < med["normal"] + 0.5, report
    assert med["single-minroot"] < med["normal"] + 1.0, report
