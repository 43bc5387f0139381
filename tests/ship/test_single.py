"""The single file (`make single`, also written by `make dist`): one executable that carries
ONNX Runtime inside it (src/runtime/ort_embed.c).

Checked:
- linking: it needs no shared library beyond glibc, libstdc++ and libgcc_s and has no rpath;
  `ldd` resolves it to nothing else (no ONNX Runtime, LMDB, hiredis, libpq);
- it serves in the minimal Debian 12 root of scripts/minroot.sh (no -dev packages; none of
  ONNX Runtime, LMDB, hiredis or libpq installed there): ready, mlp16's answer equal to ONNX
  Runtime's in-process one, SIGTERM -> exit 0; with /dev/shm mounted noexec, which must not
  matter since the library is loaded from a memfd;
- there, --postgres fails at start-up (exit 2) naming libpq.so.5 and the package to install;
  without /proc it fails (exit 1) saying that /proc is needed;
- a copy with one byte of the embedded library changed is refused by the SHA-256 check;
- cold start (exec to the first answered inference, median of 5, interleaved in one run): the
  normal build and the single file on this host, the single file and the tarball's onnxd in the
  minimal root; printed, and written with the sizes and idle memory to
  build/single-report.json.
Skipped under sanitizer builds: the release artifact is tested in the release suite.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

import ship

# What every distribution has: glibc's libraries and its loader, libstdc++, libgcc_s.
ALLOWED_NEEDED = re.compile(
    r"^(lib(c|m|dl|rt|pthread|stdc\+\+|gcc_s)\.so\.[0-9]+|ld-linux[-a-z0-9_.]*\.so\.[0-9]+)$")
PG_MESSAGE = "onnxd: --postgres needs libpq.so.5 (Debian: apt-get install libpq5): "
COLD_RUNS = 5


@pytest.fixture(scope="module")
def single():
    """`make single`; -> the path it prints."""
    ship.release_only()
    out = ship.make("single")
    m = re.search(r"^(dist/\S+): (\d+) bytes$", out, re.M)
    assert m, f"make single printed no size line:\n{out}"
    path = ship.ROOT / m.group(1)
    assert re.fullmatch(r"onnxd-\d+\.\d+\.\d+-linux-(x86_64|aarch64)", path.name), path.name
    assert path.stat().st_size == int(m.group(2))
    print(f"\nsingle file {path.name}: {path.stat().st_size} bytes "
          f"({path.stat().st_size / 1e6:.1f} MB)")
    return path


@pytest.fixture(scope="module")
def minroot():
    ship.release_only()
    return ship.minroot()


@pytest.fixture(scope="module")
def opt(single, tmp_path_factory):
    """What the root sees at /opt: onnxd (the single file) and models/mlp16."""
    d = tmp_path_factory.mktemp("single-opt")
    shutil.copy2(single, d / "onnxd")
    ship.make("models/mlp16/1/model.onnx")
    shutil.copytree(ship.ROOT / "models/mlp16", d / "models/mlp16")
    return d


def _needed(path):
    dyn = ship.run(["readelf", "-d", path])
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn), dyn


def _serve(repo, port, *extra):
    return ["--model-repository", repo, "--host", "127.0.0.1", "--http-port", port, *extra]


class Proc:
    """A server process; start() returns its cold start (time_to_first_inference)."""

    def __init__(self, argv, log):
        self.argv, self.log, self.proc = [str(a) for a in argv], log, None

    def start(self, port):
        with open(self.log, "ab") as f:
            f.write(("\n$ " + " ".join(self.argv) + "\n").encode())
            f.flush()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, env=ship.SERVER_ENV)
        try:
            return ship.time_to_first_inference(port, t0, lambda: self.proc.poll() is None)
        except BaseException:
            self.kill()
            raise

    def stop(self):
        """SIGTERM; the exit status, or None after a kill at 20 s."""
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

    def tail(self):
        return Path(self.log).read_text(errors="replace")[-3000:]


def test_needs_only_the_c_and_cxx_runtime(single):
    needed, dyn = _needed(single)
    assert needed, "no NEEDED entries: not a dynamic executable?"
    bad = [n for n in needed if not ALLOWED_NEEDED.match(n)]
    assert not bad, f"{single.name} needs {bad} (only glibc, libstdc++, libgcc_s allowed)"
    assert not re.search(r"\((RPATH|RUNPATH)\)", dyn), dyn
    ldd = ship.run(["ldd", single])
    assert "not found" not in ldd, ldd
    for lib in ("onnxruntime", "lmdb", "hiredis", "libpq", "libssl", "krb5"):
        assert lib not in ldd, f"{lib} in `ldd {single.name}`:\n{ldd}"
    # build/onnxd still finds ORT through its rpath; libpq is loaded for --postgres only.
    normal, _ = _needed(ship.ROOT / "build/onnxd")
    assert "libonnxruntime.so.1" in normal
    assert not any(n.startswith("libpq") for n in normal), normal


def test_serves_in_a_minimal_root(single, minroot, opt, tmp_path):
    pkgs = ship.run(["dpkg-query", f"--admindir={minroot}/var/lib/dpkg", "-W",
                     "-f", "${Package}\n"]).split()
    assert "libc6" in pkgs and "libstdc++6" in pkgs
    assert not [p for p in pkgs if p.endswith("-dev")]
    present = [p for p in pkgs if p.startswith(("liblmdb", "libhiredis", "libpq", "libonnxruntime"))]
    assert not present, f"the minimal root has {present}: the test would prove less"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    port = ship.free_port()
    p = Proc(ship.chroot_argv(minroot, opt, mnt, ["/opt/onnxd", *_serve("/opt/models", port)],
                              dev_shm_noexec=True), tmp_path / "onnxd.log")
    try:
        p.start(port)
        assert ship.http_call(port, "GET", "/v2/health/ready")[0] == 200
        x = ship.mlp16_input()
        np.testing.assert_allclose(ship.infer_triton(port, x),
                                   ship.mlp16_expected(opt / "models/mlp16/1/model.onnx", x),
                                   rtol=1e-5, atol=1e-6)
        rc = p.stop()
    finally:
        p.kill()
    log = p.tail()
    assert rc == 0, f"exit status {rc} after SIGTERM:\n{log}"
    assert "embedded: " in log and "SHA-256 verified" in log, log
    # /dev/shm really was noexec in there (the memfd does not live on it).
    mnt2 = tmp_path / "mnt2"
    mnt2.mkdir()
    mounts = ship.run(ship.chroot_argv(minroot, opt, mnt2, ["cat", "/proc/self/mounts"],
                                       dev_shm_noexec=True))
    assert re.search(r"^shm /dev/shm tmpfs \S*noexec", mounts, re.M), mounts


def test_postgres_without_libpq_fails_clearly(minroot, opt, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = ship.chroot_argv(minroot, opt, mnt, ["/opt/onnxd", *_serve(
        "/opt/models", ship.free_port(), "--postgres", "host=127.0.0.1 port=1 dbname=x")])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ship.SERVER_ENV)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert PG_MESSAGE + "libpq.so.5: cannot open shared object file" in r.stderr, r.stderr


def test_without_proc_says_so(minroot, opt, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = ship.chroot_argv(minroot, opt, mnt, ["/opt/onnxd", *_serve(
        "/opt/models", ship.free_port())], proc=False)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ship.SERVER_ENV)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "/proc is not mounted" in r.stderr, r.stderr


def test_damaged_library_is_refused(single, opt, tmp_path):
    data = bytearray(single.read_bytes())
    lib = (ship.ROOT / "deps/ort/lib/libonnxruntime.so.1").read_bytes()
    at = data.find(lib[:65536])
    assert at > 0 and data[at:at + len(lib)] == lib, "the library's bytes are not in the file"
    data[at + len(lib) // 2] ^= 0x01
    bad = tmp_path / "onnxd-damaged"
    bad.write_bytes(bytes(data))
    bad.chmod(0o755)
    r = subprocess.run([bad, *_serve(opt / "models", str(ship.free_port()))],
                       capture_output=True, text=True, timeout=60, env=ship.SERVER_ENV)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "inside this executable is damaged: its SHA-256 is" in r.stderr, r.stderr
    v = subprocess.run([bad, "--version"], capture_output=True, text=True, timeout=60)
    assert "ONNX Runtime library unavailable" in v.stdout, (v.stdout, v.stderr)
    ok = subprocess.run([single, "--version"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and re.search(r"ONNX Runtime library 1\.\d+", ok.stdout), ok.stdout


def _status_kb(pid, key):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def test_cold_start_next_to_the_normal_build_and_the_tarball(single, minroot, opt, tmp_path):
    tgz, tgz_bytes = ship.dist_tarball()
    dist = tmp_path / "dist"
    dist.mkdir()
    with tarfile.open(tgz) as t:
        t.extractall(dist, filter="tar")
    name = tgz.name[: -len(".tar.gz")]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    kinds = {
        "normal build (host)": lambda port: [ship.ROOT / "build/onnxd",
                                             *_serve(opt / "models", port)],
        "single file (host)": lambda port: [single, *_serve(opt / "models", port)],
        "single file (minimal root)": lambda port: ship.chroot_argv(
            minroot, opt, mnt, ["/opt/onnxd", *_serve("/opt/models", port)]),
        "tarball (minimal root)": lambda port: ship.chroot_argv(
            minroot, dist, mnt, [f"/opt/{name}/bin/onnxd", *_serve(f"/opt/{name}/models", port)]),
    }
    times = {k: [] for k in kinds}
    memory = {}
    for i in range(COLD_RUNS):
        for kind, argv in kinds.items():
            port = ship.free_port()
            p = Proc(argv(port), tmp_path / "cold.log")
            try:
                times[kind].append(p.start(port))
                if i == 0:
                    memory[kind] = {k: _status_kb(p.proc.pid, k) for k in ("VmRSS", "RssShmem")}
                rc = p.stop()
            finally:
                p.kill()
            assert rc == 0, f"{kind}: exit status {rc} after SIGTERM:\n{p.tail()}"
    med = {k: statistics.median(v) for k, v in times.items()}
    print()  # after pytest's progress dots: each line below starts a line (run-tests.sh greps)
    for k, v in med.items():
        print(f"single-file cold start, {k}: median {v * 1000:.0f} ms of "
              f"{', '.join(f'{t * 1000:.0f}' for t in times[k])} ms; idle memory {memory[k]} kB")
    report = {
        "single_file": single.name, "single_bytes": single.stat().st_size,
        "embedded_library_bytes": (ship.ROOT / "deps/ort/lib/libonnxruntime.so.1").stat().st_size,
        "tarball_bytes": tgz_bytes,
        "cold_start_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
        "cold_start_median_s": {k: round(v, 4) for k, v in med.items()},
        "idle_memory_kb_first_run": memory,
        "what": "exec (unshare for the minimal root) to the first answered JSON inference of "
                "mlp16, polled every 2 ms; runs interleaved; models/mlp16 only",
    }
    (ship.ROOT / "build/single-report.json").write_text(json.dumps(report, indent=2) + "\n")
    # Loading 46 MB from memory (hash, copy, dlopen) costs tens of ms, not seconds.
    assert med["single file (host)"] < med["normal build (host)"] + 0.5, report
    assert med["single file (minimal root)"] < med["tarball (minimal root)"] + 0.5, report
