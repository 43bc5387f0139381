"""The OCI image (`make image`) run with podman the way KServe runs it.

The image is built (or reused when up to date) by `make image`; podman runs through
scripts/podman.sh (scripts/containers.conf: runc; --ulimit at the current hard limits). Checked:
- the image's configuration: numeric non-root user, exec-form entrypoint, KServe's defaults
  (--model-repository /mnt/models, port 8080), labels, no shell inside;
- a container run with the repository mounted read-only at /mnt/models, --read-only, --user
  65532, its port published on 127.0.0.1 only, the image's own arguments: ready, tritonclient's
  inference equal to ONNX Runtime's in-process answer, the process really non-root;
- the feature store on the image's volume (a second run with --feature-dir in it);
- `podman stop -t 30` (SIGTERM): drains, exit 0 well within the grace period;
- cold start (from `podman run` to the first answered inference), printed beside the bare
  binary's from the same tarball, in the same run.
Skipped where podman cannot run a container (the reason says why) and under sanitizer builds.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

import ship

PODMAN = ["bash", str(ship.ROOT / "scripts/podman.sh")]
GRACE_S = 30


def podman(*args, check=True, timeout=300):
    r = subprocess.run([*PODMAN, *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"podman {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr[-3000:]}",
                    pytrace=False)
    return r


@pytest.fixture(scope="module")
def can_run_containers(tmp_path_factory):
    """Skips unless podman can run a container here: one whose root file system is a
    directory holding /bin/true and the libraries it needs (no image, no registry)."""
    ship.release_only()
    if not shutil.which("podman"):
        pytest.skip("podman is not installed (scripts/setup.sh installs it)")
    rootfs = tmp_path_factory.mktemp("probe-rootfs")
    true = shutil.which("true")
    libs = re.findall(r"(/\S+) \(0x", ship.run(["ldd", true]))
    for f in [true, *libs]:
        dst = rootfs / f.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(f), dst)
    r = podman("run", "--rm", "--network", "none", "--rootfs", rootfs, true, check=False,
               timeout=120)
    if r.returncode != 0:
        pytest.skip(f"podman cannot run containers here: {r.stderr.strip()[-500:]}")


@pytest.fixture(scope="module")
def image(can_run_containers):
    out = ship.make("image")
    m = re.search(r"^image: (\S+): (\d+) bytes$", out, re.M)
    assert m, out
    tag, size = m.group(1), int(m.group(2))
    print(f"\nimage {tag}: {size} bytes ({size / 1e6:.1f} MB)")
    for line in re.findall(r"^image: layer .*$", out, re.M):
        print(line)
    return tag


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository with mlp16, readable by the container's user."""
    r = tmp_path_factory.mktemp("image-repo")
    src = ship.ROOT / "models/mlp16/1/model.onnx"
    (r / "mlp16/1").mkdir(parents=True)
    shutil.copyfile(src, r / "mlp16/1/model.onnx")
    for d in (r, r / "mlp16", r / "mlp16/1"):
        os.chmod(d, 0o755)
    os.chmod(r / "mlp16/1/model.onnx", 0o644)
    return r


def test_image_configuration(image):
    cfg = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["/opt/onnxd/bin/onnxd"]
    assert cfg["Cmd"] == ["--model-repository", "/mnt/models", "--host", "0.0.0.0",
                          "--http-port", "8080"]
    assert "8080/tcp" in cfg["ExposedPorts"]
    assert cfg["WorkingDir"] == "/var/lib/onnxd" and "/var/lib/onnxd" in cfg["Volumes"]
    labels = cfg["Labels"]
    for k in ("title", "description", "version", "revision", "created", "base.name"):
        assert labels.get(f"org.opencontainers.image.{k}"), k
    # No shell, no package manager: the file system is onnxd's tree plus its libraries.
    mnt = podman("image", "mount", image).stdout.strip()
    try:
        root = Path(mnt)
        assert (root / "opt/onnxd/bin/onnxd").is_file()
        assert (root / "opt/onnxd/lib/libonnxruntime.so.1").is_file()
        for absent in ("bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/apt", "usr/bin/dpkg"):
            assert not os.path.lexists(root / absent), absent
        passwd = (root / "etc/passwd").read_text()
        assert ":65532:65532:" in passwd
    finally:
        podman("image", "unmount", image, check=False)


class Container:
    """One detached container (removed with its anonymous volumes at the end)."""

    def __init__(self, image, name, run_args, args=()):
        self.name = name
        self.argv = ["run", "-d", "--name", name, *run_args, image, *args]

    def start(self):
        podman("rm", "-f", "-v", self.name, check=False)
        podman(*self.argv)

    def state(self, field):
        return podman("inspect", "-f", "{{" + field + "}}", self.name).stdout.strip()

    def alive_probe(self):
        """A cheap alive() for polling: asks podman at most every 2 s, first 2 s from now (an
        inspect takes tens of ms: it must not weigh on a cold start of a few hundred)."""
        last = [time.monotonic(), True]

        def alive():
            now = time.monotonic()
            if now - last[0] >= 2.0:
                last[0] = now
                last[1] = self.state(".State.Running") == "true"
            return last[1]

        return alive

    def logs(self):
        r = podman("logs", self.name, check=False)
        return r.stdout + r.stderr

    def remove(self):
        podman("rm", "-f", "-v", "-t", "0", self.name, check=False)


def run_args(repo, port, *extra):
    return ["--read-only", "--user", "65532:65532", "--network", "bridge",
            "-p", f"127.0.0.1:{port}:8080", "-v", f"{repo}:/mnt/models:ro", *extra]


def test_container_serves_read_only_non_root_and_drains(image, repo, tmp_path):
    x = ship.mlp16_input()
    want = ship.mlp16_expected(repo / "mlp16/1/model.onnx", x)
    port = ship.free_port()
    c = Container(image, f"onnxd-test-{os.getpid()}-{port}", run_args(repo, port))
    try:
        t0 = time.monotonic()
        c.start()
        cold = ship.time_to_first_inference(port, t0, c.alive_probe())
        assert ship.http_call(port, "GET", "/v2/health/ready")[0] == 200
        np.testing.assert_allclose(ship.infer_triton(port, x), want, rtol=1e-5, atol=1e-6)
        assert c.state(".HostConfig.ReadonlyRootfs") == "true"
        pid = int(c.state(".State.Pid"))
        with open(f"/proc/{pid}/status") as f:
            uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", f.read(), re.M).groups()
        assert uids == ("65532", "65532"), uids

        # bare binary from the same tarball, same run, same measure
        bare = _bare_cold_start(tmp_path)
        print(f"\ncontainer cold start (podman run to first answered inference): "
              f"{cold * 1000:.0f} ms")
        print(f"bare binary cold start (exec to first answered inference): {bare * 1000:.0f} ms")

        t1 = time.monotonic()
        podman("stop", "-t", GRACE_S, c.name, timeout=GRACE_S + 30)
        stopped = time.monotonic() - t1
        code = c.state(".State.ExitCode")
        logs = c.logs()
        assert code == "0", f"exit code {code} after podman stop\n{logs[-3000:]}"
        assert stopped < GRACE_S, f"podman stop took {stopped:.1f} s (killed at the grace period?)"
        assert "draining" in logs, logs[-3000:]
        assert "telemetry" not in logs.lower(), logs[-3000:]
        print(f"container stop (SIGTERM to exit 0): {stopped * 1000:.0f} ms")
    finally:
        c.remove()


def test_feature_store_on_the_volume(image, repo):
    port = ship.free_port()
    c = Container(image, f"onnxd-test-fs-{os.getpid()}-{port}", run_args(repo, port),
                  ["--model-repository", "/mnt/models", "--host", "0.0.0.0", "--http-port", "8080",
                   "--feature-dir", "/var/lib/onnxd/feature-store"])
    try:
        t0 = time.monotonic()
        c.start()
        ship.time_to_first_inference(port, t0, c.alive_probe())
        st, body = ship.http_call(port, "PUT", "/v1/features/profile/v1", [1.0, 2.5])
        assert st == 200, body
        st, body = ship.http_call(port, "GET", "/v1/features/profile/v1")
        assert st == 200 and b'"values":[1,2.5]' in body, body
        podman("stop", "-t", GRACE_S, c.name, timeout=GRACE_S + 30)
        assert c.state(".State.ExitCode") == "0", c.logs()[-3000:]
    finally:
        c.remove()


def _bare_cold_start(tmp_path):
    tgz, _ = ship.dist_tarball()
    d = tmp_path / "bare"
    d.mkdir()
    with tarfile.open(tgz) as t:
        t.extractall(d, filter="tar")
    top = next(d.iterdir())
    port = ship.free_port()
    with open(tmp_path / "bare.log", "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen([top / "bin/onnxd", "--model-repository", top / "models",
                                 "--host", "127.0.0.1", "--http-port", str(port)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=ship.SERVER_ENV)
    try:
        return ship.time_to_first_inference(port, t0, lambda: proc.poll() is None)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
