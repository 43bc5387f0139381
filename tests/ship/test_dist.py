"""The release tarball (`make dist`) in a minimal Debian 12 root.

The tarball is built (or reused) with `make dist` and unpacked; the root is the shared minbase
root of scripts/minroot.sh (mmdebstrap --variant=minbase bookworm: no build tools, no -dev
packages), entered read-only in a private mount namespace (ship.chroot_argv). Checked:
- layout and linking: an RPATH of exactly $ORIGIN/../lib and nothing else pointing into the build
  machine, a stripped binary naming its debug file, a licence for every bundled library;
- the bundle is exactly what the root lacks: `ldd` inside the root finds every library, and no
  bundled library is one the root already has;
- it serves there: ready, mlp16's answer equal to ONNX Runtime's in-process one, the feature
  store's three tiers (LMDB linked in, Redis through hiredis linked in, PostgreSQL through the
  bundled libpq and its TLS/Kerberos/LDAP libraries), SIGTERM -> exit 0; cold start printed;
- the systemd unit passes `systemd-analyze verify` and its security review.
Skipped under sanitizer builds: the release artifact is tested in the release suite.
"""

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

import ship

sys.path.insert(0, str(ship.ROOT / "tests"))
import services  # noqa: E402  (tests/services.py: Redis and PostgreSQL on loopback ports)


@pytest.fixture(scope="module")
def tarball():
    ship.release_only()
    return ship.dist_tarball()


@pytest.fixture(scope="module")
def dist(tarball, tmp_path_factory):
    """The unpacked tarball: a directory holding the one top directory onnxd-<v>-linux-<arch>."""
    path, _ = tarball
    d = tmp_path_factory.mktemp("dist")
    with tarfile.open(path) as t:
        t.extractall(d, filter="tar")
    return d


@pytest.fixture(scope="module")
def name(tarball):
    return tarball[0].name[: -len(".tar.gz")]


@pytest.fixture(scope="module")
def minroot():
    ship.release_only()
    return ship.minroot()


def readelf_dynamic(path):
    out = ship.run(["readelf", "-d", path])
    tags = re.findall(r"\((RPATH|RUNPATH|NEEDED)\)\s+\S+ \S+: \[(.*)\]", out)
    return tags


def test_tarball_layout_licences_and_linking(tarball, dist, name):
    path, size = tarball
    assert re.fullmatch(r"onnxd-\d+\.\d+\.\d+-linux-(x86_64|aarch64)", name), name
    print(f"\ntarball {path.name}: {size} bytes ({size / 1e6:.1f} MB)")
    with tarfile.open(path) as t:
        members = t.getmembers()
    assert all(m.name == name or m.name.startswith(name + "/") for m in members)
    assert all(m.uid == 0 and m.gid == 0 for m in members)
    top = dist / name
    for f in ("bin/onnxd", "lib/libonnxruntime.so.1", "models/mlp16/1/model.onnx",
              "systemd/onnxd.service", "README.md", "LICENSES/onnxruntime.LICENSE",
              "LICENSES/onnxruntime.ThirdPartyNotices.txt"):
        assert (top / f).is_file(), f
    assert os.stat(top / "bin/onnxd").st_mode & 0o777 == 0o755
    assert os.stat(top / "models/mlp16/1/model.onnx").st_mode & 0o777 == 0o644
    assert name in (top / "README.md").read_text()
    assert "Microsoft" in (top / "LICENSES/onnxruntime.LICENSE").read_text()

    # The binary: RPATH (not RUNPATH: it must also serve the bundled libraries' own
    # dependencies) of exactly $ORIGIN/../lib; LMDB and hiredis are linked in.
    tags = readelf_dynamic(top / "bin/onnxd")
    assert [t for t in tags if t[0] != "NEEDED"] == [("RPATH", "$ORIGIN/../lib")], tags
    needed = {v for k, v in tags if k == "NEEDED"}
    assert "libonnxruntime.so.1" in needed and "libpq.so.5" in needed
    assert not any(n.startswith(("liblmdb", "libhiredis")) for n in needed), needed
    # Bundled libraries carry no search path into this machine.
    for lib in sorted((top / "lib").iterdir()):
        for k, v in readelf_dynamic(lib):
            if k in ("RPATH", "RUNPATH"):
                assert all(p.startswith("$ORIGIN") for p in v.split(":")), (lib.name, v)
    # Stripped, naming the debug file kept beside the tarball.
    sections = ship.run(["readelf", "-S", "-W", top / "bin/onnxd"])
    assert ".symtab" not in sections and ".gnu_debuglink" in sections
    link = ship.run(["readelf", "-p", ".gnu_debuglink", top / "bin/onnxd"])
    assert f"{name}.debug" in link, link
    dbg = path.with_name(f"{name}.debug")
    assert ".symtab" in ship.run(["readelf", "-S", "-W", dbg])

    # A licence for every bundled library: LICENSES/ has a copyright file per Debian package,
    # and the ones for the libraries linked in statically.
    lic = {p.name for p in (top / "LICENSES").iterdir()}
    assert {"liblmdb-dev.copyright", "libhiredis-dev.copyright"} <= lic, lic
    for lib in (top / "lib").iterdir():
        if lib.name == "libonnxruntime.so.1":
            continue
        owner = subprocess.run(["dpkg", "-S", f"*/{lib.name}"], capture_output=True, text=True)
        pkgs = {line.split(":")[0] for line in owner.stdout.splitlines()}
        assert {f"{p}.copyright" for p in pkgs} & lic, (lib.name, pkgs, lic)


def _root_has(minroot, soname):
    return any(minroot.glob(f"usr/lib/*/{soname}")) or any(minroot.glob(f"lib/*/{soname}")) \
        or (minroot / "usr/lib" / soname).exists()


def test_bundle_is_exactly_what_minimal_debian_lacks(dist, name, minroot, tmp_path):
    # The root is what it claims to be: no compiler, no -dev package.
    pkgs = ship.run(["dpkg-query", f"--admindir={minroot}/var/lib/dpkg", "-W",
                     "-f", "${Package}\n"]).split()
    assert "libc6" in pkgs and "apt" in pkgs
    bad = [p for p in pkgs if p.endswith("-dev") or p in ("gcc", "g++", "cpp", "binutils", "make")]
    assert not bad, bad

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    out = ship.run(ship.chroot_argv(minroot, dist, mnt, ["ldd", f"/opt/{name}/bin/onnxd"]))
    assert "not found" not in out, out
    resolved = dict(re.findall(r"^\s*(\S+) => (\S+) \(0x", out, re.M))
    assert "libonnxruntime.so.1" in resolved, out
    bundled = {p.name for p in (dist / name / "lib").iterdir()}
    for soname, where in resolved.items():
        where = os.path.normpath(where)
        if soname in bundled:
            assert where == f"/opt/{name}/lib/{soname}", (soname, where)
        else:
            assert not where.startswith("/opt/"), (soname, where)
    # Nothing bundled that the root already provides (the list in scripts/dist.sh is exact).
    redundant = sorted(s for s in bundled if _root_has(minroot, s))
    assert not redundant, f"bundled but already in Debian 12 minbase: {redundant}"
    print(f"\nbundled: {' '.join(sorted(bundled))}")


PG_SCHEMA = """
CREATE TABLE features (entity text PRIMARY KEY, value bytea,
                       updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO features (entity, value) VALUES ('profile:pg1', '\\x%s'::bytea);
"""


def test_serves_in_minimal_debian_root(dist, name, minroot, tmp_path):
    model = dist / name / "models/mlp16/1/model.onnx"
    x = ship.mlp16_input()
    want = ship.mlp16_expected(model, x)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log_path = tmp_path / "onnxd.log"
    (tmp_path / "redis").mkdir()
    with services.Redis(tmp_path / "redis") as redis, services.Postgres() as pg:
        redis.set_row("profile:r1", [1.5, -2.0])
        pg.sql(PG_SCHEMA % struct.pack("<2f", 3.25, 4.5).hex())
        port = ship.free_port()
        argv = ship.chroot_argv(minroot, dist, mnt, [
            f"/opt/{name}/bin/onnxd", "--model-repository", f"/opt/{name}/models",
            "--host", "127.0.0.1", "--http-port", port, "--feature-dir", "/tmp/feature-store",
            "--feature-sync", "none", "--redis", redis.address, "--postgres", pg.conninfo])
        with open(log_path, "wb") as log:
            t0 = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=ship.SERVER_ENV)
        try:
            cold = ship.time_to_first_inference(port, t0, lambda: proc.poll() is None)
            print(f"\ncold start in the minimal root (exec to first answered inference, "
                  f"mount namespace set-up included): {cold * 1000:.0f} ms")
            assert ship.http_call(port, "GET", "/v2/health/ready")[0] == 200
            got = ship.infer_triton(port, x)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

            # L2: LMDB (linked in) on the tmpfs
            st, body = ship.http_call(port, "PUT", "/v1/features/profile/l2a", [7.0, 8.0])
            assert st == 200, body
            st, body = ship.http_call(port, "GET", "/v1/features/profile/l2a")
            assert st == 200 and b'"values":[7,8]' in body, body
            assert not (minroot / "tmp/feature-store").exists()  # the shared root is untouched
            # L3: Redis (hiredis, linked in) and PostgreSQL (libpq, bundled with its libraries)
            st, body = ship.http_call(port, "GET", "/v1/features/profile/r1")
            assert st == 200 and b'"values":[1.5,-2]' in body and b'"tier":"l3"' in body, body
            st, body = ship.http_call(port, "GET", "/v1/features/profile/pg1")
            assert st == 200 and b'"values":[3.25,4.5]' in body and b'"tier":"l3"' in body, body
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
    log = log_path.read_text(errors="replace")
    assert rc == 0, f"exit status after SIGTERM: {rc}\n{log[-3000:]}"
    assert "draining" in log, log[-3000:]


def test_systemd_unit_verifies_and_is_hardened(dist, name, tmp_path):
    exe = shutil.which("systemd-analyze")
    if not exe:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = (dist / name / "systemd/onnxd.service").read_text()
    for want in ("DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=onnxd",
                 "NoNewPrivileges=yes", "LimitNOFILE=", "ExecReload=/bin/kill -HUP $MAINPID",
                 "--feature-dir /var/lib/onnxd/"):
        assert want in unit, want
    # verify resolves ExecStart: point it at the unpacked binary.
    local = tmp_path / "onnxd.service"
    local.write_text(unit.replace("/opt/onnxd/", f"{dist / name}/"))
    r = subprocess.run([exe, "verify", "--man=no", str(local)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr + r.stdout
    r = subprocess.run([exe, "security", "--offline=yes", "--no-pager", str(local)],
                       capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    print(f"\nsystemd-analyze security: exposure {m.group(1)} (0 best, 10 worst)")
    assert float(m.group(1)) <= 2.0, r.stdout
