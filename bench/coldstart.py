"""bench/coldstart.py: the cold-start rows of `make bench` (bench/run.py --only coldstart; issue
13, item 8).

The time from starting a server to its first answered inference (mlp16, JSON, polled every
5 ms on a new connection each time), every server serving the same repository (a copy of
models/ under build/bench/coldstart/, world-readable for the container's user):
  K1  onnxd, the normal build (build/onnxd: ONNX Runtime linked, found through its rpath)
  K2  onnxd, the single file (build/onnxd-single: ONNX Runtime carried inside, checked with
      SHA-256 and loaded from a memfd at start-up)
  K3  onnxd's image (onnxd:<version>, `make image`), from `podman run -d` to the first answer:
      container creation, the read-only root, port publishing and onnxd's own start; models/
      that repository mounted read-only at /mnt/models, as the image's tests run it
  K4  the python peer (FastAPI + uvicorn, 2 workers, bench/peers/python)
The rows run round robin, RUNS times each (2 with --quick), so that a machine that drifts moves
them alike; the table gives each row's median with its minimum and maximum. A row whose server
cannot be had (no podman, the image does not build) is reported with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import time

R = None  # bench/run.py's module, set by it

RUNS = 5
TIMEOUT_S = 120.0
ROWS = {"K1": "onnxd (build/onnxd)", "K2": "onnxd single file (build/onnxd-single)",
        "K3": "onnxd container (podman run, onnxd:{version})",
        "K4": "python peer (FastAPI + uvicorn, 2 workers)"}


def log(msg: str) -> None:
    R.log(msg)


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/podman.sh", *args], cwd=R.ROOT, capture_output=True,
                          text=True, timeout=timeout, check=check)


def version() -> str:
    for line in (R.ROOT / "src/server/server.h").read_text().splitlines():
        if line.startswith("#define OX_VERSION"):
            return line.split('"')[1]
    raise RuntimeError("OX_VERSION not found in src/server/server.h")


def wait_first_answer(port: int, t0: float, alive) -> float:
    """Seconds from t0 to the first answered mlp16 inference; RuntimeError if the server dies
    or TIMEOUT_S passes."""
    while True:
        if R.probe(port, 5.0):
            return time.monotonic() - t0
        if not alive():
            raise RuntimeError("exited before its first answer")
        if time.monotonic() - t0 > TIMEOUT_S:
            raise RuntimeError(f"no answer within {TIMEOUT_S:.0f} s")
        time.sleep(0.005)


def run_process(cmd: list[str], port: int, env: dict | None = None) -> float:
    """Starts cmd (a server on port), times its first answer, stops it with SIGTERM (the process
    group: uvicorn's workers too)."""
    logf = open(R.WORK / "logs" / "coldstart.log", "ab")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=R.ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    logf.close()
    try:
        return wait_first_answer(port, t0, lambda: p.poll() is None)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def run_container(image: str, port: int) -> float:
    name = f"onnxd-coldstart-{port}"
    podman("rm", "-f", "-v", name, check=False)
    t0 = time.monotonic()
    podman("run", "-d", "--name", name, "--read-only", "--user", "65532:65532",
           "--network", "bridge", "-p", f"127.0.0.1:{port}:8080",
           "-v", f"{R.WORK / 'coldstart' / 'models'}:/mnt/models:ro", image)
    last = [t0, True]

    def alive() -> bool:  # asks podman at most every 2 s: an inspect costs tens of ms
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            r = podman("inspect", "-f", "{{.State.Running}}", name, check=False)
            last[1] = r.stdout.strip() == "true"
        return last[1]

    try:
        return wait_first_answer(port, t0, alive)
    finally:
        podman("stop", "-t", "20", name, timeout=60, check=False)
        podman("rm", "-f", "-v", name, check=False)


def world_readable_copy(src, dst) -> None:
    """models/ copied with files 0644 and directories 0755: the container runs as another user
    (65532), and the model builders write their files 0600."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".*"))
    for d, dirs, files in os.walk(dst):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)


def bench_coldstart(cfg: dict, quick: bool) -> dict:
    (R.WORK / "logs").mkdir(parents=True, exist_ok=True)
    repo = R.WORK / "coldstart" / "models"
    world_readable_copy(R.MODELS, repo)
    ver = version()
    image = f"onnxd:{ver}"
    out: dict = {"rows": {}, "version": ver}
    models = str(repo)
    plans: dict = {}
    single = R.BUILD / "onnxd-single"
    plans["K1"] = lambda port: run_process(
        [str(R.BUILD / "onnxd"), "--model-repository", models, "--http-port", str(port)], port)
    if single.exists():
        plans["K2"] = lambda port: run_process(
            [str(single), "--model-repository", models, "--http-port", str(port)], port)
    else:
        out["rows"]["K2"] = {"failed": f"{single.relative_to(R.ROOT)} not built"}
    r = subprocess.run(["make", "--no-print-directory", "image"], cwd=R.ROOT, capture_output=True,
                       text=True, timeout=1800)
    if r.returncode == 0:
        plans["K3"] = lambda port: run_container(image, port)
    else:
        tail = (r.stdout + r.stderr).strip().splitlines()[-3:]
        out["rows"]["K3"] = {"failed": "make image failed: " + " | ".join(tail)}
    def python_peer(port: int) -> float:
        cmd, env = R.server_command("python", port)
        env["PEER_MODEL_REPOSITORY"] = models
        return run_process(cmd, port, env)

    plans["K4"] = python_peer
    n = 2 if quick else RUNS
    times: dict = {k: [] for k in plans}
    errors: dict = {}
    for i in range(n):
        for row, fn in plans.items():
            if row in errors:
                continue
            try:
                t = fn(R.free_port())
                times[row].append(t)
                log(f"[coldstart] {row} run {i + 1}/{n}: {t * 1000:.0f} ms")
            except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                errors[row] = str(e)
                log(f"[coldstart] {row} FAILED: {e}")
            time.sleep(0.5)
    for row in plans:
        ts = times[row]
        if ts:
            out["rows"][row] = {"median_ms": round(statistics.median(ts) * 1000, 1),
                                "min_ms": round(min(ts) * 1000, 1),
                                "max_ms": round(max(ts) * 1000, 1), "n": len(ts),
                                "runs_ms": [round(t * 1000, 1) for t in ts]}
        if row in errors:
            out["rows"].setdefault(row, {})["failed"] = errors[row]
    if "K3" in plans:
        r = podman("image", "inspect", "-f", "{{.Size}}", image, check=False)
        if r.returncode == 0 and r.stdout.strip().isdigit():
            out["image_bytes"] = int(r.stdout.strip())
    for key, path in (("single_bytes", single),):
        if path.exists():
            out[key] = path.stat().st_size
    return out


def table(out: dict) -> tuple[list[str], list[list[str]]]:
    head = ["row", "what", "median ms", "min ms", "max ms", "runs"]
    rows = []
    for r, title in ROWS.items():
        row = out.get("rows", {}).get(r)
        if row is None:
            continue
        what = title.format(version=out.get("version", "?"))
        if row.get("median_ms") is None:
            rows.append([r, what, "failed", "", "", ""])
            continue
        rows.append([r, what, f"{row['median_ms']:.0f}", f"{row['min_ms']:.0f}",
                     f"{row['max_ms']:.0f}", str(row["n"])])
    return head, rows


def notes(out: dict) -> list[str]:
    lines = []
    for r, row in out.get("rows", {}).items():
        if row.get("failed"):
            lines.append(f"{r}: {row['failed']}")
    sizes = []
    if out.get("single_bytes"):
        sizes.append(f"single file {out['single_bytes'] / 1e6:.1f} MB")
    if out.get("image_bytes"):
        sizes.append(f"image {out['image_bytes'] / 1e6:.1f} MB")
    if sizes:
        lines.append("Sizes: " + ", ".join(sizes) + ".")
    return lines


def markdown(out: dict, cfg: dict) -> list[str]:
    head, rows = table(out)
    n = max((r.get("n", 0) for r in out.get("rows", {}).values()), default=0)
    lines = ["", f"Cold start: from starting the server to its first answered inference (mlp16, "
             f"JSON), every server serving the same copy of models/ (mobilenetv2, mlp16, "
             f"mlp_medium, fraud); {n} runs per row, round robin"
             f"{', --quick' if cfg['quick'] else ''}.", "", R.md_table(head, rows), ""]
    return lines + [x + "  " for x in notes(out)]


def print_text(out: dict) -> None:
    head, rows = table(out)
    log("\ncold start (start to first answered inference)")
    log(R.text_table(head, rows))
    for x in notes(out):
        log(x)
