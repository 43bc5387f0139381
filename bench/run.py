#!/usr/bin/env python3
"""bench/run.py: onnxd side by side with the services it replaces, on loopback.

    make bench              # ~25 minutes: 5 s warm-up + 20 s per scenario, onnxd S1-S3 x3,
                            # ceiling samples between servers, then the batching rows
                            # (~3.5 min), then the fraud rows (~4 min); the first run also
                            # builds the Go peers, makes KServe's venv and installs nginx
    make bench QUICK=1      # ~9 minutes: 2 s warm-up + 6 s, one run each
    .venv/bin/python bench/run.py [--quick] [--servers onnxd,go] [--scenarios S1,S3]
    .venv/bin/python bench/run.py --quick --only batching    # just the batching table (~1.5 min)
    .venv/bin/python bench/run.py --quick --only fraud       # just the fraud rows (~1.5 min)
    .venv/bin/python bench/run.py --quick --only reload      # just the reload rows (~1 min)
    .venv/bin/python bench/run.py --only coldstart           # just the cold-start rows (~1 min)
    .venv/bin/python bench/run.py --only main --servers onnxd,python-image,go-image --scenarios S5
                                                             # just S5 (~3 min; --quick ~1 min)

Servers (each serving models/: mobilenetv2 and mlp16), started one at a time; the default
peers are what users write first, the tuned ones what a team that profiles ends up with:
  onnxd        build/onnxd with its defaults
  python       bench/peers/python: FastAPI + Pydantic v2 + uvicorn, workers = cores (default)
  python-fast  bench/peers/python-fast: Starlette + orjson + numpy, no Pydantic, uvicorn with
               uvloop + httptools, workers = cores (tuned)
  python-seed  bench/peers/python-seed: the published set-up, 4 uvicorn workers each with a
               ProcessPoolExecutor of `cores` processes (JSON only)
  go           bench/peers/go: net/http + encoding/json + onnxruntime_go, built here (default)
  go-fast      bench/peers/go-fast: net/http + goccy/go-json + pooled buffers, one session per
               core x 1 intra-op thread, GOMAXPROCS 2 x cores, built here (tuned; see main.go)
  kserve       bench/peers/kserve: KServe's Python ModelServer with an ONNX Runtime predictor,
               REST v2, workers = cores, in its own venv build/bench/venv-kserve (made here
               from bench/peers/kserve/requirements.txt)
  nginx        the HTTP floor: nginx (Debian's package, apt-get installed here when missing and
               root) answering a fixed mlp16 response, worker_processes = cores; S3, S4 only
  python-grpc  bench/peers/python-grpc: grpcio server (thread pool) + tritonclient's generated
               service classes + numpy + ONNX Runtime; gRPC only (S2g, S3g)
  go-grpc      bench/peers/go-grpc: grpc-go + onnxruntime_go, one session per core, code
               generated here from our proto/inference.proto; gRPC only (S2g, S3g)
  python-image bench/peers/python-image: FastAPI + Pillow + numpy + ONNX Runtime, uvicorn,
               workers = cores; image classification only (S5)
  go-image     bench/peers/go-image: net/http + image/jpeg + golang.org/x/image/draw (BiLinear)
               + onnxruntime_go, one session with cores intra-op threads, built here; S5 only

For each: cold start (exec until the first successful inference, polled with a real infer
request), idle memory, then the scenarios, driven by build/onnxd-bench:
  S1  MobileNetV2, JSON request and response (~3 MB body), 10 connections
  S2  MobileNetV2, binary tensor extension both ways, 10 connections (not python-seed)
  S3  MLP 16->1, JSON, 64 connections
  S4  S3 while 1,000 more keep-alive connections sit idle
and, over gRPC (inference.GRPCInferenceService/ModelInfer, the tensor in raw_input_contents),
driven by build/onnxd-grpc-bench (onnxd with --grpc-port when its build has it, python-grpc,
go-grpc; "vs python" is then vs python-grpc):
  S2g MobileNetV2, 10 clients (10 HTTP/2 connections, one call in flight each)
  S3g MLP 16->1, 64 calls in flight over 4 HTTP/2 connections
and image classification from JPEG bytes (bench/s5.py makes the photo, the body and onnxd's
image repository build/bench/image-repo at bench time):
  S5  MobileNetV2 behind an image input: one 500x375 quality-90 JPEG (scikit-image's coffee.png)
      as a BYTES [1] tensor (binary extension), the top 5 asked for with Triton's classification
      extension ("score:index:label" strings back), 10 connections; onnxd (a second process
      serving build/bench/image-repo, whose config.json declares the image input), python-image
      and go-image. Its ceiling is build/onnxd-img-limit: decode + preprocess (src/image) + Run +
      top 5 in-process, same threads; built only where src/image/image.h exists.
While a scenario runs, the server's whole process tree is sampled every 150 ms (RSS and PSS
from /proc/PID/smaps_rollup, peak kept; utime+stime+cutime+cstime from /proc/PID/stat for CPU
seconds per 1,000 requests over the measured window). The ceiling is build/onnxd-ort-limit:
ONNX Runtime's Run in-process, same threads as onnxd's defaults (cores x 1 intra-op thread),
sampled before the first server, after each server and so at the end; the table gives the
maximum with the spread, and a server above 100% of that maximum is flagged as a measurement
error (‡) instead of given a percentage. onnxd's S3 and S4 are also given as a fraction of the
HTTP floor.

Batching (onnxd only; second table, "batching" in latest.json): the same load against two onnxd
processes serving repositories built under build/bench/ (model files hard-linked from models/,
copied if that fails), one with batching off ({"max_batch_size": 0} in each config.json), one
with the per-model dynamic batching settings of BATCH_ON in bench/batching.py:
  B1  MobileNetV2, binary tensor body, 10 connections  (binary, so that the batcher, not JSON
  B2  MobileNetV2, binary tensor body, 64 connections   parsing, is what is measured)
  B3  MLP 16->1 (mlp16), JSON, 64 connections
  B4  MLP 256->1024->1024->1 (mlp_medium), JSON, 64 connections
Each row runs off, then on. Around the measured window the script reads onnxd's own counters
(/metrics and /v2/models/{m}/stats): mean batch size = nv_inference_count / nv_inference_exec_count,
and the mean run time of a full batch (batch_stats compute_infer at max_batch_size). Targets,
reported PASS/MISS per row: B4 with batching >= 2x without; every other row >= 0.95x without;
p99 <= max_queue_delay + 2x the run time of one full batch.

Fraud scoring with features (third table, "fraud" in latest.json): bench/fraud.py, onnxd's
feature tiers end to end against a Python peer that looks features up in Redis per request.

Model reload under load (fourth table, "reload" in latest.json): bench/reload.py, S3's load
while mlp16 is reloaded every 200 ms, against the same load without reloads, and the time from
a load call of mobilenetv2 to its first answer.

Cold start (fifth table, "coldstart" in latest.json): bench/coldstart.py, the time from
starting onnxd (normal build, single file, container image with podman) and the python peer to
their first answered inference, each serving models/.

Writes bench/results/latest.json, latest.png (gnuplot; the server comparison only) and
README-table.md (both tables); logs, request bodies and the batching repositories go to
build/bench/. A server that fails to start or dies is recorded as failed, with the
reason, and the run goes on. The load generator shares the 2 cores with the server: that is
the loopback set-up the comparison was made in, for every server alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import batching
import fraud
import s5
import coldstart
import reload

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
WORK = BUILD / "bench"
RESULTS = ROOT / "bench" / "results"
MODELS = ROOT / "models"
PY = ROOT / ".venv" / "bin" / "python"
ORT_LIB = ROOT / "deps" / "ort" / "lib" / "libonnxruntime.so.1"
CORES = os.cpu_count() or 1
CLK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.15
NOISY = 0.10  # other processes' CPU, in cores, above which a result is flagged
TOOLS = {"bench": BUILD / "onnxd-bench", "limit": BUILD / "onnxd-ort-limit",
         "grpc": BUILD / "onnxd-grpc-bench", "img_limit": BUILD / "onnxd-img-limit"}

SERVERS = ["onnxd", "python", "python-fast", "python-seed", "go", "go-fast", "kserve", "nginx",
           "python-grpc", "go-grpc", "python-image", "go-image"]
# Servers that speak only gRPC (the rest only REST, except onnxd, which serves both).
GRPC_ONLY = ("python-grpc", "go-grpc")
# Servers that only classify images (S5); onnxd runs S5 in a second process serving
# IMAGE_REPO (the image input's config.json), so its S1-S4 rows keep serving models/ as before.
IMAGE_ONLY = ("python-image", "go-image")
IMAGE_REPO = WORK / "image-repo"
# Scenarios a server does not run, and why (shown in the table as n/a); the REST/gRPC split is
# added below SCENARIOS.
SKIP = {("python-seed", "S2"): "JSON only (the published set-up)",
        ("nginx", "S1"): "HTTP floor: S3, S4 only", ("nginx", "S2"): "HTTP floor: S3, S4 only"}
KSERVE_VENV = WORK / "venv-kserve"
KSERVE_REQ = ROOT / "bench" / "peers" / "kserve" / "requirements.txt"
LABELS = {"nginx": "nginx (HTTP floor)"}
GO_PEERS = {"go": ("bench/peers/go", "go-peer"), "go-fast": ("bench/peers/go-fast", "go-fast-peer"),
            "go-grpc": ("bench/peers/go-grpc", "go-grpc-peer"),
            "go-image": ("bench/peers/go-image", "go-image-peer")}
# The HTTP floor's fixed answer: onnxd's own response to S3's request (mlp16, JSON), byte for
# byte, so the floor writes as many bytes as onnxd does.
FLOOR_RESPONSE = ('{"model_name":"mlp16","model_version":"1","outputs":[{"name":"output",'
                  '"datatype":"FP32","shape":[1,1],"data":[0.5991828]}]}')
SCENARIOS = {
    "S1": dict(model="mobilenetv2", body="mobilenetv2.json", conns=10, idle=0,
               check='"data":[', title="MobileNetV2 JSON, 10 conn"),
    "S2": dict(model="mobilenetv2", body="mobilenetv2.bin", conns=10, idle=0,
               check='"binary_data_size":4000', title="MobileNetV2 binary, 10 conn"),
    "S3": dict(model="mlp16", body="mlp16.json", conns=64, idle=0, check='"data":[',
               title="MLP JSON, 64 conn"),
    "S4": dict(model="mlp16", body="mlp16.json", conns=64, idle=1000, check='"data":[',
               title="MLP JSON, 64 conn + 1000 idle"),
    # gRPC (inference.GRPCInferenceService/ModelInfer, driven by build/onnxd-grpc-bench): the
    # message is a serialized ModelInferRequest with the tensor in raw_input_contents; streams
    # are calls in flight per connection.
    "S2g": dict(model="mobilenetv2", message="mobilenetv2.pb", conns=10, streams=1, idle=0,
                grpc=True, title="MobileNetV2 gRPC, 10 clients"),
    "S3g": dict(model="mlp16", message="mlp16.pb", conns=4, streams=16, idle=0, grpc=True,
                title="MLP gRPC, 64 streams over 4 conn"),
    # Image classification from JPEG bytes (bench/s5.py): one 500x375 quality-90 JPEG as a BYTES
    # [1] input (binary extension), the top 5 asked for with Triton's classification extension;
    # a good answer is 200 with "score:index:label" strings (":class_" of the generated labels).
    "S5": dict(model=s5.MODEL, body="s5.bin", conns=10, idle=0, check=":class_", image=True,
               title="MobileNetV2 from JPEG bytes, top 5, 10 conn"),
}
CEILING_MODEL = {"S1": "mobilenetv2", "S2": "mobilenetv2", "S3": "mlp16", "S4": "mlp16",
                 "S2g": "mobilenetv2", "S3g": "mlp16", "S5": s5.MODEL}
for _srv in SERVERS:
    for _sc, _spec in SCENARIOS.items():
        if _srv in IMAGE_ONLY and not _spec.get("image"):
            SKIP[_srv, _sc] = "image classification only (S5)"
        elif _spec.get("image") and _srv not in IMAGE_ONLY and _srv != "onnxd":
            SKIP[_srv, _sc] = "no image inputs"
        elif _srv in GRPC_ONLY and not _spec.get("grpc"):
            SKIP[_srv, _sc] = "gRPC only"
        elif _srv not in GRPC_ONLY and _srv != "onnxd" and _spec.get("grpc"):
            SKIP.setdefault((_srv, _sc), "REST only")
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"



def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- /proc: process tree, memory, CPU

def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def tree(root: int) -> list[int]:
    seen, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def _stat_cpu(pid: int) -> int:
    """utime + stime + cutime + cstime in clock ticks (children that exited and were reaped
    are in their parent's cutime/cstime, so summing over the live tree counts them once)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0
    fields = s[s.rindex(")") + 2:].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def _rollup(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def _machine_busy() -> int:
    """Clock ticks the whole machine (all CPUs) spent in processes, from /proc/stat: user, nice
    and system. Interrupts and softirqs (loopback networking: the benchmark's own traffic) and
    steal are left out, since no process is charged for them."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2]


def sample(root: int) -> dict:
    busy = _machine_busy()
    pids = tree(root)
    rss = pss = cpu = 0
    for p in pids:
        r, s = _rollup(p)
        rss += r
        pss += s
        cpu += _stat_cpu(p)
    return {"t": time.monotonic(), "rss_kb": rss, "pss_kb": pss, "cpu_ticks": cpu,
            "procs": len(pids), "busy_ticks": busy}


class Sampler(threading.Thread):
    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.samples, self.stop_ev = root, [], threading.Event()

    def run(self):
        while True:
            self.samples.append(sample(self.root))
            if self.stop_ev.wait(SAMPLE_S):
                break
        self.samples.append(sample(self.root))

    def stop(self):
        self.stop_ev.set()
        self.join()

    def at(self, t: float, key: str = "cpu_ticks") -> float:
        """A counter (CPU ticks) at time t, interpolated between samples."""
        s = self.samples
        if t <= s[0]["t"]:
            return s[0][key]
        for a, b in zip(s, s[1:]):
            if a["t"] <= t <= b["t"]:
                f = (t - a["t"]) / max(b["t"] - a["t"], 1e-9)
                return a[key] + f * (b[key] - a[key])
        return s[-1][key]


# ---------------------------------------------------------------- machine and versions

def machine_info() -> dict:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {"cpu_model": cpu, "cores": CORES, "ram_gib": round(mem_kb / 1048576, 1),
            "kernel": platform.release(), "os": _os_release(), "loadavg_at_start": load}


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def _run_text(cmd: list[str], **kw) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def go_binary() -> str | None:
    return shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go")
                                  else None)


def versions() -> dict:
    v: dict = {}
    out = _run_text([str(BUILD / "onnxd"), "--version"])
    v["onnxd"] = out
    m = re.search(r"ONNX Runtime library ([0-9.]+)", out)
    v["ort_library"] = m.group(1) if m else ""
    v["ort_library_path"] = str(ORT_LIB.resolve()) if ORT_LIB.exists() else ""
    code = ("import importlib.metadata as m, sys, json; names = sys.argv[1:]; "
            "print(json.dumps({n: m.version(n) for n in names}))")
    pk = ["fastapi", "pydantic", "pydantic-core", "starlette", "uvicorn", "uvloop", "httptools",
          "numpy", "onnxruntime", "orjson", "pillow", "scikit-image"]
    try:
        v["python_packages"] = json.loads(_run_text([str(PY), "-c", code, *pk]) or "{}")
    except ValueError:
        v["python_packages"] = {}
    v["python"] = _run_text([str(PY), "-c", "import sys; print(sys.version.split()[0])"])
    g = go_binary()
    v["go"] = _run_text([g, "version"]) if g else ""
    gomod = (ROOT / "bench/peers/go/go.mod").read_text() if (ROOT / "bench/peers/go/go.mod").exists() else ""
    m = re.search(r"github.com/yalue/onnxruntime_go (v\S+)", gomod)
    v["onnxruntime_go"] = m.group(1) if m else ""
    gomod = (ROOT / "bench/peers/go-fast/go.mod")
    m = re.search(r"github.com/goccy/go-json (v\S+)", gomod.read_text() if gomod.exists() else "")
    v["go_json"] = m.group(1) if m else ""
    gomod = (ROOT / "bench/peers/go-image/go.mod")
    m = re.search(r"golang.org/x/image (v\S+)", gomod.read_text() if gomod.exists() else "")
    v["x_image"] = m.group(1) if m else ""
    kpy = KSERVE_VENV / "bin" / "python"
    if kpy.exists():
        try:
            v["kserve_packages"] = json.loads(_run_text([str(kpy), "-c", code, "kserve", "fastapi",
                                                         "uvicorn", "onnxruntime"]) or "{}")
        except ValueError:
            v["kserve_packages"] = {}
    ng = nginx_binary()
    if ng:
        r = subprocess.run([ng, "-v"], capture_output=True, text=True)
        v["nginx"] = (r.stderr or r.stdout).strip().replace("nginx version: nginx/", "")
    v["cc"] = _run_text(["cc", "--version"]).splitlines()[0] if shutil.which("cc") else ""
    return v


# ---------------------------------------------------------------- preparation

def ensure_tools() -> None:
    need = [BUILD / "onnxd", TOOLS["bench"], TOOLS["limit"]]
    if all(p.exists() for p in need):
        return
    log("building build/onnxd build/onnxd-bench build/onnxd-ort-limit")
    subprocess.run(["make", "-C", str(ROOT), "build/onnxd", "build/onnxd-bench",
                    "build/onnxd-ort-limit"], check=False)
    if not TOOLS["bench"].exists():
        sys.exit("run.py: build/onnxd-bench is missing and could not be built")


def ensure_grpc_tool() -> str | None:
    """Builds build/onnxd-grpc-bench (needs libnghttp2-dev) when missing; returns None or why
    the gRPC scenarios cannot run."""
    if not TOOLS["grpc"].exists():
        log("building build/onnxd-grpc-bench")
        subprocess.run(["make", "-C", str(ROOT), "build/onnxd-grpc-bench"], check=False)
    return None if TOOLS["grpc"].exists() else "build/onnxd-grpc-bench could not be built"


def ensure_img_limit() -> None:
    """Builds build/onnxd-img-limit (S5's ceiling) when missing and this tree has image inputs
    (src/image/image.h); without them run_ceiling reports why there is no S5 ceiling."""
    if not TOOLS["img_limit"].exists() and (ROOT / "src/image/image.h").exists():
        log("building build/onnxd-img-limit")
        subprocess.run(["make", "-C", str(ROOT), "build/onnxd-img-limit"], check=False)


_HAS_GRPC: dict = {}


def onnxd_has_grpc() -> bool:
    """onnxd serves gRPC when its --help lists --grpc-port (asked once per run)."""
    if "v" not in _HAS_GRPC:
        _HAS_GRPC["v"] = "--grpc-port" in _run_text([str(BUILD / "onnxd"), "--help"])
    return _HAS_GRPC["v"]


def build_go_peer(name: str = "go") -> str | None:
    """Builds build/peers/go-peer (go), build/peers/go-fast-peer (go-fast) or
    build/peers/go-grpc-peer (go-grpc, after its gen.sh) from its folder, modules from the module
    proxy as go.mod/go.sum pin them; returns None or the reason it failed."""
    g = go_binary()
    if not g:
        return "no go toolchain (go not on PATH, no /usr/local/go/bin/go)"
    src, exe = GO_PEERS[name]
    out = BUILD / "peers" / exe
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="1")
    t0 = time.monotonic()
    gen = ROOT / src / "gen.sh"
    if gen.exists():  # go-grpc: the service code is generated from our .proto first
        r = subprocess.run(["bash", str(gen)], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            return "gen.sh failed: " + (r.stderr.strip()[-800:] or f"exit {r.returncode}")
    r = subprocess.run([g, "build", "-trimpath", "-o", str(out), "."], cwd=ROOT / src,
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return "go build failed: " + (r.stderr.strip()[-800:] or f"exit {r.returncode}")
    log(f"built {out.relative_to(ROOT)} in {time.monotonic() - t0:.1f} s")
    return None


def setup_kserve() -> str | None:
    """Makes the KServe peer's own venv (build/bench/venv-kserve) from
    bench/peers/kserve/requirements.txt, once (again when that file changes): kserve pins
    fastapi, pydantic, protobuf and grpcio versions of its own, so it stays out of .venv.
    Returns None or the reason it failed."""
    py = KSERVE_VENV / "bin" / "python"
    stamp = KSERVE_VENV / ".requirements"
    if py.exists() and stamp.exists() and stamp.read_bytes() == KSERVE_REQ.read_bytes():
        return None
    base = shutil.which(os.environ.get("PYTHON", "python3.11")) or shutil.which("python3")
    if not base:
        return "no python3 to make build/bench/venv-kserve with"
    t0 = time.monotonic()
    log(f"making {KSERVE_VENV.relative_to(ROOT)} from {KSERVE_REQ.relative_to(ROOT)} (kserve)")
    for cmd in ([base, "-m", "venv", str(KSERVE_VENV)],
                [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                 str(KSERVE_REQ)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return f"{shown(cmd[:3])} failed: " + (r.stderr.strip()[-600:] or f"exit {r.returncode}")
    shutil.copyfile(KSERVE_REQ, stamp)
    log(f"made {KSERVE_VENV.relative_to(ROOT)} in {time.monotonic() - t0:.0f} s")
    return None


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                          if os.path.exists(p)), None)


def setup_nginx() -> str | None:
    """The HTTP floor needs nginx (Debian's package): installed here with apt-get when it is
    missing and this runs as root (make bench's own step: nothing else needs nginx). Returns None
    or the reason it is not there."""
    if nginx_binary():
        return None
    cmd = "apt-get update && apt-get install -y --no-install-recommends nginx"
    if os.geteuid() != 0:
        return f"nginx is not installed; as root: {cmd}"
    log("installing nginx (Debian) for the HTTP floor")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for c in (["apt-get", "update", "-qq"],
              ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"]):
        r = subprocess.run(c, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            return f"{' '.join(c)} failed: " + (r.stderr.strip()[-400:] or f"exit {r.returncode}")
    return None if nginx_binary() else "nginx installed but not found on PATH or in /usr/sbin"


def nginx_config(port: int) -> Path:
    """Writes build/bench/nginx/nginx.conf: the HTTP floor. nginx answers FLOOR_RESPONSE to
    every request on 127.0.0.1:port, worker_processes = cores, access log off, keep-alive with no
    request limit (as onnxd), request bodies read and discarded (the `return` directive does so,
    so the connection stays usable)."""
    d = WORK / "nginx"
    for sub in ("", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    body = FLOOR_RESPONSE.replace("\\", "\\\\").replace("'", "\\'")
    tmp = d / "tmp"
    conf = f"""# written by bench/run.py: the HTTP floor (a fixed response to S3's load)
daemon off;
master_process on;
worker_processes {CORES};
pid {d}/nginx.pid;
error_log stderr warn;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""
    (d / "nginx.conf").write_text(conf)
    return d / "nginx.conf"


def make_bodies() -> dict:
    """Pre-encodes the request bodies (deterministic) into build/bench/. Returns their headers."""
    WORK.mkdir(parents=True, exist_ok=True)
    code = r'''
import json, sys, numpy as np
out = sys.argv[1]
rng = np.random.default_rng(20240601)
x = rng.random((1, 3, 224, 224), dtype=np.float32)
with open(out + "/mobilenetv2.json", "w") as f:
    json.dump({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                           "data": x.ravel().tolist()}]}, f, separators=(",", ":"))
hdr = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                              "parameters": {"binary_data_size": x.nbytes}}],
                  "outputs": [{"name": "output", "parameters": {"binary_data": True}}]},
                 separators=(",", ":")).encode()
with open(out + "/mobilenetv2.bin", "wb") as f:
    f.write(hdr + x.astype("<f4").tobytes())
m = rng.random((1, 16), dtype=np.float32)
with open(out + "/mlp16.json", "w") as f:
    json.dump({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                           "data": m.ravel().tolist()}]}, f, separators=(",", ":"))
try:  # the gRPC scenarios' ModelInferRequest messages, the same tensors in raw_input_contents
    from tritonclient.grpc import service_pb2
    for name, t in (("mobilenetv2", x), ("mlp16", m)):
        r = service_pb2.ModelInferRequest(model_name=name)
        r.inputs.add(name="input", datatype="FP32", shape=list(t.shape))
        r.outputs.add(name="output")
        r.raw_input_contents.append(t.astype("<f4").tobytes())
        with open(out + f"/{name}.pb", "wb") as f:
            f.write(r.SerializeToString())
except ImportError:
    pass
m = rng.random((1, 256), dtype=np.float32)
with open(out + "/mlp_medium.json", "w") as f:
    json.dump({"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32",
                           "data": m.ravel().tolist()}]}, f, separators=(",", ":"))
print(len(hdr))
'''
    r = subprocess.run([str(PY), "-c", code, str(WORK)], capture_output=True, text=True, check=True)
    hlen = int(r.stdout.strip())
    j = ["Content-Type: application/json"]
    return {
        "mobilenetv2.json": j,
        "mobilenetv2.bin": ["Content-Type: application/octet-stream",
                            f"Inference-Header-Content-Length: {hlen}"],
        "mlp16.json": j,
        "mlp_medium.json": j,
    }


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    want = min(want, 1 << 20)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- servers

def server_command(name: str, port: int, repo: Path | None = None,
                   extra: list[str] | None = None, env_add: dict | None = None
                   ) -> tuple[list[str], dict]:
    """extra: more onnxd flags; env_add: more environment (python-fraud's PEER_* settings)."""
    env = dict(os.environ, **(env_add or {}))
    models = os.path.relpath(repo or MODELS, ROOT)
    if name == "onnxd":
        return [str(BUILD / "onnxd"), "--model-repository", models, "--http-port", str(port),
                *(extra or [])], env
    if name == "python-grpc":
        return [str(PY), "bench/peers/python-grpc/server.py", "--model-repository", models,
                "--port", str(port)], env
    if name == "python-fraud":
        return [str(PY), "-m", "uvicorn", "--app-dir", "bench/peers/python-fraud", "server:app",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(CORES),
                "--no-access-log", "--log-level", "warning"], env
    if name in ("python", "python-seed", "python-fast"):
        env["PEER_MODEL_REPOSITORY"] = str(MODELS)
        workers = 4 if name == "python-seed" else CORES
        fast = ["--loop", "uvloop", "--http", "httptools"] if name == "python-fast" else []
        return [str(PY), "-m", "uvicorn", "--app-dir", f"bench/peers/{name}", "server:app",
                *fast, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                "--no-access-log", "--log-level", "warning"], env
    if name == "python-image":  # S5: the model file and labels of onnxd's image repository
        d = IMAGE_REPO / s5.MODEL
        env.update(PEER_IMAGE_MODEL=str(d / "1" / "model.onnx"),
                   PEER_IMAGE_LABELS=str(d / "labels.txt"), PEER_MODEL_NAME=s5.MODEL)
        return [str(PY), "-m", "uvicorn", "--app-dir", "bench/peers/python-image", "server:app",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(CORES),
                "--no-access-log", "--log-level", "warning"], env
    if name == "go-image":
        d = IMAGE_REPO / s5.MODEL
        return [str(BUILD / "peers" / GO_PEERS[name][1]), "--model",
                os.path.relpath(d / "1" / "model.onnx", ROOT), "--labels",
                os.path.relpath(d / "labels.txt", ROOT), "--model-name", s5.MODEL, "--port",
                str(port), "--ort-lib", os.path.relpath(ORT_LIB, ROOT)], env
    if name in GO_PEERS:
        return [str(BUILD / "peers" / GO_PEERS[name][1]), "--model-repository", models,
                "--port", str(port), "--ort-lib", os.path.relpath(ORT_LIB, ROOT)], env
    if name == "kserve":
        return [str(KSERVE_VENV / "bin" / "python"), "bench/peers/kserve/server.py",
                "--model-repository", models, "--http-port", str(port), "--workers", str(CORES),
                "--log_config_file", "bench/peers/kserve/logging.json"], env
    if name == "nginx":
        conf = nginx_config(port)
        return [nginx_binary() or "nginx", "-p", str(conf.parent), "-c", str(conf)], env
    raise ValueError(name)


def shown(cmd: list[str]) -> str:
    """A command as a shell line, paths relative to the repository (run from its root)."""
    return shlex.join(os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c for c in cmd)


def printable(cmd: list[str], env: dict) -> str:
    pre = "".join(f"{k}={shown([v])} " for k, v in sorted(env.items())
                  if k.startswith("PEER_"))
    return pre + shown(cmd)


PROBE = json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                                "data": [0.5] * 16}]}).encode()


def grpc_probe(port: int) -> bool:
    """One real ModelInfer call (mlp16, the S3g message) through onnxd-grpc-bench: True when it
    was answered with grpc-status 0 and a response message."""
    out = WORK / f"probe-{port}.json"
    try:
        r = subprocess.run([str(TOOLS["grpc"]), "--url", f"127.0.0.1:{port}", "--message",
                            str(WORK / "mlp16.pb"), "--streams", "1", "--duration", "0.02",
                            "--timeout-ms", "5000", "--json", str(out)],
                           capture_output=True, timeout=30)
        return r.returncode == 0 and json.loads(out.read_text()).get("ok", 0) > 0
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return False
    finally:
        out.unlink(missing_ok=True)


def probe(port: int, timeout: float = 5.0, model: str = "mlp16", body: bytes = PROBE) -> bool:
    """One real inference (default: mlp16, JSON) on a new connection: True on 200 with
    outputs."""
    req = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
           f"Connection: close\r\n\r\n").encode() + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(req)
            buf = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
    except OSError:
        return False
    return buf.startswith(b"HTTP/1.1 200") and b'"outputs"' in buf


def image_probe(port: int, timeout: float = 10.0) -> tuple[int, str]:
    """S5's request (build/bench/s5.bin) on a new connection: (HTTP status, body); (0, why) when
    nothing came back."""
    body = (WORK / "s5.bin").read_bytes()
    return _exchange(port, (f"POST /v2/models/{s5.MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}"
                            f"\r\nContent-Type: application/octet-stream\r\n"
                            f"Inference-Header-Content-Length: {S5_HEADER_LEN['n']}\r\n"
                            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                            ).encode() + body, timeout)


def model_not_ready_why(port: int, model: str) -> str | None:
    """The reason a KServe v2 server gives for a model that will not become ready: GET
    /v2/models/{model}/ready answered with an "error" (onnxd: the load failed, e.g. a
    config.json it does not understand); None when it is ready, loading, or says nothing."""
    st, text = _exchange(port, (f"GET /v2/models/{model}/ready HTTP/1.1\r\nHost: 127.0.0.1:"
                                f"{port}\r\nConnection: close\r\n\r\n").encode(), 5.0)
    if st == 200 or not st:
        return None
    try:
        return json.loads(text).get("error") or None
    except (ValueError, AttributeError):
        return None


def _exchange(port: int, req: bytes, timeout: float) -> tuple[int, str]:
    buf = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(req)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
    except OSError as e:
        if not buf:
            return 0, str(e)
    m = re.match(rb"HTTP/1\.1 (\d{3})", buf)
    return (int(m.group(1)) if m else 0), buf.partition(b"\r\n\r\n")[2].decode(errors="replace")


S5_HEADER_LEN = {"n": 0}  # set by main() from bench/s5.py's prepare()


class Server:
    def __init__(self, name: str, quick: bool, repo: Path | None = None, label: str | None = None,
                 extra: list[str] | None = None, env_add: dict | None = None,
                 probe_with: tuple[str, bytes] | None = None, grpc: bool = False,
                 image: bool = False):
        """name: which server (SERVERS); repo: model repository (default models/); label: the
        name of its log and result files (default name); extra, env_add: see server_command;
        probe_with: (model, JSON body) of the start-up probe instead of mlp16's; grpc: onnxd
        also serves gRPC (--grpc-port). A gRPC-only peer listens on port and is probed with a
        ModelInfer call; grpc_port is where the gRPC scenarios go (None: no gRPC). image (and
        the image-only peers): probed with S5's request, and a 4xx answer to it ends the start
        at once (a server that cannot classify images, not one still loading)."""
        self.name, self.quick = name, quick
        self.image = image or name in IMAGE_ONLY
        self.label = label or name
        self.port = free_port()
        self.grpc_port = self.port if name in GRPC_ONLY else None
        if name == "onnxd" and onnxd_has_grpc():
            # Always a free port: onnxd's default (8001) may be taken by another run or server.
            port = free_port()
            self.grpc_port = port if grpc else None
            extra = [*(extra or []), "--grpc-port", str(port)]
        self.probe_with = probe_with or ("mlp16", PROBE)
        self.cmd, self.env = server_command(name, self.port, repo, extra, env_add)
        self.logpath = WORK / "logs" / f"{self.label}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Starts it and returns the cold start in seconds; raises RuntimeError with a reason."""
        self.logpath.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.logpath, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        logf.close()
        while True:
            if self.image:
                st, text = image_probe(self.port)
                if st == 200 and ":class_" in text:
                    return time.monotonic() - t0
                why = (text.strip()[:300] if 400 <= st < 500
                       else "no \"score:index:label\" strings in the answer (classification "
                       "extension): " + text.strip()[:200] if st == 200
                       else model_not_ready_why(self.port, s5.MODEL) if st >= 500 else None)
                if why:
                    raise RuntimeError(
                        f"answered {st} to S5's image request: {why}"
                        + (" (an onnxd without image inputs: they come with src/image)"
                           if self.name == "onnxd" else ""))
            elif (grpc_probe(self.port) if self.name in GRPC_ONLY
                    else probe(self.port, 5.0, *self.probe_with)):
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with status {self.proc.returncode} before serving: "
                                   + self.log_tail())
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"no successful inference within {timeout:.0f} s: "
                                   + self.log_tail())
            time.sleep(0.005)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 600) -> str:
        try:
            t = self.logpath.read_text(errors="replace").strip()
        except OSError:
            return ""
        return t[-n:].replace("\n", " | ")

    def stop(self) -> dict:
        """SIGTERM, wait (onnxd drains for up to 10 s); SIGKILL the process group if still
        there. Returns what happened."""
        if self.proc is None:
            return {}
        res = {}
        if self.proc.poll() is None:
            t0 = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
                res = {"exit": self.proc.returncode, "stop_s": round(time.monotonic() - t0, 2)}
            except subprocess.TimeoutExpired:
                res = {"exit": "killed after 20 s"}
        else:
            res = {"exit": self.proc.returncode, "note": "had already exited"}
        try:  # children left behind (pool processes, workers) share the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return res


# ---------------------------------------------------------------- load generator output

def _num(d: dict, *names: str):
    for n in names:
        if n in d and isinstance(d[n], (int, float)):
            return d[n]
    return None


def _ms(d: dict, base: str):
    """A latency named base (p50, p99...) in ms, whatever unit suffix the tool used."""
    for suf, f in (("_ms", 1.0), ("_us", 1e-3), ("_ns", 1e-6), ("_s", 1e3)):
        v = _num(d, base + suf)
        if v is not None:
            return v * f
    return None


def parse_loadgen(doc: dict) -> dict:
    """Normalises onnxd-bench's --json output (latencies in latency_us)."""
    flat = dict(doc)
    for key, unit in (("latency_us", "us"), ("latency_ms", "ms"), ("latency_ns", "ns"),
                      ("latency", "ms")):
        if isinstance(doc.get(key), dict):
            for k, v in doc[key].items():
                flat.setdefault(f"{k}_{unit}", v)
    out = {
        "rps": _num(flat, "rps", "req_per_s", "requests_per_s", "throughput"),
        "requests": _num(flat, "requests", "completed"),
        "ok": _num(flat, "ok"),
        "errors": _num(flat, "errors", "failed") or 0,
        "duration_s": _num(flat, "duration_s", "elapsed_s"),
        "p50_ms": _ms(flat, "p50"),
        "p90_ms": _ms(flat, "p90"),
        "p99_ms": _ms(flat, "p99"),
        "p999_ms": _ms(flat, "p999"),
        "max_ms": _ms(flat, "max"),
        "mean_ms": _ms(flat, "mean"),
        "loadgen_cpu_s_per_1k": _num(flat, "cpu_s_per_1k_requests"),
    }
    if out["rps"] is None and out["requests"] and out["duration_s"]:
        out["rps"] = out["requests"] / out["duration_s"]
    return out


def parse_ceiling(doc: dict) -> dict:
    """Normalises onnxd-ort-limit's --json output."""
    flat = dict(doc)
    if isinstance(doc.get("latency_us"), dict):
        for k, v in doc["latency_us"].items():
            flat.setdefault(f"{k}_us", v)
    out = {
        "rps": _num(flat, "runs_per_s", "rps"),
        "runs": _num(flat, "runs"),
        "duration_s": _num(flat, "duration_s"),
        "p50_ms": _ms(flat, "p50"),
        "p99_ms": _ms(flat, "p99"),
        "cpu_s_per_1k": _num(flat, "cpu_s_per_1k_runs"),
        "threads": _num(flat, "threads"),
        "intra_op_threads": _num(flat, "intra_op_threads"),
    }
    if out["rps"] is None and out["runs"] and out["duration_s"]:
        out["rps"] = out["runs"] / out["duration_s"]
    return out


# ---------------------------------------------------------------- running

def run_scenario(srv: Server, sc: str, headers: dict, warmup: float, duration: float,
                 run_idx: int, spec: dict | None = None, at_measure=None) -> dict:
    """One onnxd-bench run. spec defaults to SCENARIOS[sc]; at_measure, if given, is called on
    another thread about when the measured window starts (warm-up + 0.2 s after the start)."""
    spec = spec or SCENARIOS[sc]
    out_json = WORK / f"{srv.label}-{sc}-{run_idx}.json"
    out_json.unlink(missing_ok=True)
    tool = "onnxd-grpc-bench" if spec.get("grpc") else "onnxd-bench"
    if spec.get("grpc"):
        # A good call: grpc-status 0 and a response message (checked by the tool).
        cmd = [str(TOOLS["grpc"]), "--url", f"127.0.0.1:{srv.grpc_port}", "--method",
               GRPC_METHOD, "--message", str(WORK / spec["message"]), "--connections",
               str(spec["conns"]), "--streams", str(spec["streams"]), "--duration",
               f"{duration:g}", "--warmup", f"{warmup:g}", "--json", str(out_json)]
    else:
        cmd = [str(TOOLS["bench"]), "--url", f"127.0.0.1:{srv.port}",
               "--path", f"/v2/models/{spec['model']}/infer",
               "--body-lines" if spec.get("lines") else "--body", str(WORK / spec["body"])]
        for h in headers[spec["body"]]:
            cmd += ["--header", h]
        cmd += ["--connections", str(spec["conns"]), "--duration", f"{duration:g}",
                "--warmup", f"{warmup:g}", "--expect-status", "200", "--check-body",
                spec["check"], "--json", str(out_json)]
    if spec["idle"]:
        cmd += ["--idle-connections", str(spec["idle"])]
    sampler = Sampler(srv.proc.pid)
    sampler.start()
    timer = threading.Timer(warmup + 0.2, at_measure) if at_measure else None
    t0 = time.monotonic()
    try:
        if timer:
            timer.start()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           timeout=warmup + duration + 120)
        rc, err = r.returncode, (r.stderr or "").strip()
    except subprocess.TimeoutExpired:
        rc, err = "timeout", f"{tool} did not finish in time"
    t1 = time.monotonic()
    if timer:
        timer.cancel()
        timer.join()
    sampler.stop()
    res: dict = {"scenario": sc, "run": run_idx, "loadgen_exit": rc, "command": shown(cmd)}
    if err:
        res["loadgen_stderr"] = err[-600:]
    try:
        doc = json.loads(out_json.read_text())
        res["loadgen"] = doc
        res.update(parse_loadgen(doc))
        if doc.get("requests") and "bytes_sent" in doc:
            # request + response bytes on the wire (HTTP heads included; gRPC: the tool's own
            # count) per request of the measured window
            res["wire_bytes_per_req"] = round((doc.get("bytes_sent", 0)
                                               + doc.get("bytes_received", 0)) / doc["requests"])
    except (OSError, ValueError) as e:
        res["failed"] = f"no result from {tool} (exit {rc}): {err[-400:] or e}"
    s = sampler.samples
    res["peak_rss_mb"] = round(max(x["rss_kb"] for x in s) / 1024, 1)
    res["peak_pss_mb"] = round(max(x["pss_kb"] for x in s) / 1024, 1)
    res["peak_procs"] = max(x["procs"] for x in s)
    res["samples"] = len(s)
    # CPU over the measured window: it ends when onnxd-bench stops sending (about when it
    # exits) and lasts duration_s; set-up (connecting, idle connections) and warm-up come first.
    m0 = max(t0, t1 - (res.get("duration_s") or duration))
    ticks = sampler.at(t1) - sampler.at(m0)
    res["cpu_s"] = round(ticks / CLK, 2)
    # CPU used by everything else on the machine meanwhile (neither the server nor the load
    # generator): a busy neighbour makes the numbers noise, so it is measured and flagged.
    busy = (sampler.at(t1, "busy_ticks") - sampler.at(m0, "busy_ticks")) / CLK
    lg = res.get("loadgen", {})
    lg_cpu = (lg.get("cpu_user_s") or 0) + (lg.get("cpu_sys_s") or 0)
    if t1 > m0:
        res["other_cpu_cores"] = round(max(0.0, busy - res["cpu_s"] - lg_cpu) / (t1 - m0), 3)
        res["loadgen_cpu_cores"] = round(lg_cpu / (t1 - m0), 3)
        res["server_cpu_cores"] = round(res["cpu_s"] / (t1 - m0), 3)
    if res.get("requests"):
        res["cpu_s_per_1k"] = round(res["cpu_s"] / res["requests"] * 1000, 3)
    if not srv.alive():
        res["failed"] = (f"server exited (status {srv.proc.returncode}) during {sc}: "
                         + srv.log_tail(400))
    elif res.get("requests") and res.get("errors", 0) > 0.01 * res["requests"]:
        by = res.get("loadgen", {}).get("errors_by_status") or {}
        res["failed"] = (f"{res['errors']} errors for {res['requests']} requests"
                         + (" (" + ", ".join(f"status {k}: {v}" for k, v in by.items()) + ")"
                            if by else ""))
    elif not res.get("failed") and not res.get("rps"):
        res["failed"] = f"no successful requests ({tool} exit {rc}): {err[-300:]}"
    if spec["idle"] and "loadgen" in res:
        ready, still = res["loadgen"].get("idle_ready"), res["loadgen"].get("idle_open")
        res["idle_ready"], res["idle_open"] = ready, still
        if still is not None and still < spec["idle"]:
            res["note"] = (f"the server closed idle connections: {still} of {spec['idle']} still "
                           f"open at the end ({ready} answered their GET)")
    return res


def median_run(runs: list[dict]) -> dict:
    ok = [r for r in runs if not r.get("failed") and r.get("rps")]
    if not ok:
        return runs[-1]
    ok.sort(key=lambda r: r["rps"])
    med = dict(ok[len(ok) // 2])
    if len(ok) > 1:
        med["runs_rps"] = [round(r["rps"], 1) for r in runs if r.get("rps")]
        med["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
        med["peak_pss_mb"] = max(r["peak_pss_mb"] for r in ok)
    return med


def run_ceiling(model: str, warmup: float, duration: float, tag: str = "") -> dict:
    """One onnxd-ort-limit run; tag names its JSON file (ceiling-<model>-<tag>.json). S5's
    model (s5.MODEL) is measured by onnxd-img-limit instead: the same photo decoded,
    preprocessed, run and its top 5 formatted, in-process, on models/mobilenetv2."""
    image = model == s5.MODEL
    exe = TOOLS["img_limit" if image else "limit"]
    if not exe.exists():
        why = (" (built only where src/image/image.h exists: image inputs; `make "
               "build/onnxd-img-limit`)" if image and not (ROOT / "src/image/image.h").exists()
               else "")
        return {"failed": f"{os.path.relpath(exe, ROOT)} is missing{why}"}
    out_json = WORK / f"ceiling-{model}{'-' + tag if tag else ''}.json"
    out_json.unlink(missing_ok=True)
    what = (["--model", s5.SOURCE_MODEL, "--image", os.path.relpath(WORK / "s5" / "photo.jpg", ROOT),
             *s5.IMG_LIMIT_FLAGS, "--labels",
             os.path.relpath(IMAGE_REPO / s5.MODEL / "labels.txt", ROOT)] if image
            else ["--model", model])
    cmd = [str(exe), "--repo", os.path.relpath(MODELS, ROOT), *what, "--threads",
           str(CORES), "--intra-op-threads", "1", "--duration", f"{duration:g}", "--warmup",
           f"{warmup:g}", "--json", str(out_json)]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           timeout=warmup + duration + 120)
    except subprocess.TimeoutExpired:
        return {"failed": "onnxd-ort-limit timed out"}
    res: dict = {"command": shown(cmd), "exit": r.returncode}
    try:
        doc = json.loads(out_json.read_text())
        res["raw"] = doc
        res.update(parse_ceiling(doc))
    except (OSError, ValueError) as e:
        res["failed"] = f"no result (exit {r.returncode}): {(r.stderr or '').strip()[-400:] or e}"
    return res


def ceiling_summary(samples: list[dict]) -> dict:
    """The ceiling of one model from its samples, taken before, between and after the servers'
    runs: the maximum (the machine's best, what a server is compared with), the minimum and the
    spread ((max - min) / max), p50/p99 of the best sample; failed when no sample worked."""
    ok = [c for c in samples if not c.get("failed") and c.get("rps")]
    if not ok:
        return {"failed": samples[-1].get("failed", "no sample") if samples else "no sample",
                "samples": samples}
    best = max(ok, key=lambda c: c["rps"])
    lo = min(c["rps"] for c in ok)
    return {"rps": best["rps"], "min_rps": lo, "spread": (best["rps"] - lo) / best["rps"],
            "n": len(ok), "p50_ms": best.get("p50_ms"), "p99_ms": best.get("p99_ms"),
            "command": best.get("command"), "threads": best.get("threads"),
            "intra_op_threads": best.get("intra_op_threads"),
            "samples": [{k: c.get(k) for k in ("at", "rps", "p50_ms", "p99_ms", "failed")}
                        for c in samples]}


def plan(args) -> dict:
    # the ceiling is sampled before the first server, after each server and at the end: short
    # samples, many of them (max and spread reported)
    if args.quick:
        warmup, duration, cwarm, cdur = 2.0, 6.0, 0.5, 2.0
    else:
        warmup, duration, cwarm, cdur = 5.0, 20.0, 1.0, 5.0
    if args.warmup is not None:
        warmup = args.warmup
    if args.duration is not None:
        duration = args.duration
        cwarm, cdur = min(cwarm, warmup), min(cdur, duration)
    servers = args.servers.split(",") if args.servers else list(SERVERS)
    scen = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    brows = args.batch_rows.split(",") if args.batch_rows else list(batching.BATCH_ROWS)
    frows = args.fraud_rows.split(",") if args.fraud_rows else list(fraud.ROWS)
    for x, known, what in ((servers, SERVERS, "--servers"), (scen, SCENARIOS, "--scenarios"),
                           (brows, batching.BATCH_ROWS, "--batch-rows"), (frows, fraud.ROWS,
                                                                 "--fraud-rows")):
        bad = [y for y in x if y not in known]
        if bad:
            sys.exit(f"run.py: {what}: unknown {', '.join(bad)} (known: {', '.join(known)})")
    if args.only in ("batching", "fraud", "reload", "coldstart"):
        servers, scen = [], []
    if args.only in ("main", "fraud", "reload", "coldstart"):
        brows = []
    if args.only in ("main", "batching", "reload", "coldstart"):
        frows = []
    rrows = args.only in (None, "reload")
    crows = args.only in (None, "coldstart")
    per_run = warmup + duration + 0.8  # + connecting, writing the report, the pause after
    # batching: two servers started (+ settle), each row off and on, counters read around each
    batch_est = (2 * 3 + (1.5 if args.quick else 3.0) + len(brows) * 2 * (per_run + 0.7)
                 if brows else 0)
    n_other = sum(len([s for s in scen if (srv, s) not in SKIP])
                  for srv in servers if srv != "onnxd")
    n_models = len({CEILING_MODEL[s] for s in scen})
    base = (8 + n_other * per_run + len(servers) * 5
            + ((len(servers) + 1) * n_models * (cwarm + cdur + 0.5) if scen else 0))
    onnxd_scen = len(scen) if "onnxd" in servers else 0
    runs = args.runs
    if runs is None:
        runs = 1
        if not args.quick and "onnxd" in servers:
            three = base + (onnxd_scen + 2 * len([s for s in scen if s != "S4"])) * per_run
            runs = 3 if three <= args.budget else 1
    est = base + (onnxd_scen + (runs - 1) * len([s for s in scen if s != "S4"])) * per_run
    # fraud: data (~10 s, 3 s quick), in-process tiers (~15 s), 4 servers, the rows
    fraud_est = (13 + (20 if args.quick else 45) + 4 * 4 + len(frows) * (per_run + 0.5)
                 if frows else 0)
    # reload: one server, H0 and H1 alternated (1 pair quick, else reload.PAIRS), mobilenetv2 swaps
    reload_est = (5 + 2 * (1 if args.quick else reload.PAIRS) * (per_run + 0.5)
                  + (3 if args.quick else 10)
                  if rrows else 0)
    # cold start: make image (cached: a few s), 4 rows x runs x (start + stop, ~2 s)
    cold_est = 10 + 4 * (2 if args.quick else coldstart.RUNS) * 2.5 if crows else 0
    est = (est if scen else 0) + batch_est + fraud_est + reload_est + cold_est
    return dict(warmup=warmup, duration=duration, ceiling_warmup=cwarm, ceiling_duration=cdur,
                servers=servers, scenarios=scen, onnxd_runs=runs, batch_rows=brows,
                fraud_rows=frows, reload_rows=rrows, coldstart_rows=crows, only=args.only, estimate_s=round(est))


def bench_server(name: str, cfg: dict, headers: dict, quick: bool, build_err: str | None) -> dict:
    rec: dict = {"name": name, "scenarios": {}}
    if build_err:
        rec["failed"] = build_err
        log(f"[{name}] FAILED: {build_err}")
        return rec
    if name in IMAGE_ONLY and cfg.get("s5_err"):
        rec["failed"] = cfg["s5_err"]
        log(f"[{name}] FAILED: {cfg['s5_err']}")
        return rec
    # gRPC scenarios: run by onnxd (when it has --grpc-port) and the gRPC peers.
    grpc_scen = [s for s in cfg["scenarios"] if SCENARIOS[s].get("grpc")]
    grpc_why = cfg.get("grpc_err")
    if not grpc_why and name == "onnxd" and grpc_scen and not onnxd_has_grpc():
        grpc_why = "this onnxd has no --grpc-port"
    if name in GRPC_ONLY and grpc_why:
        rec["failed"] = grpc_why
        log(f"[{name}] FAILED: {grpc_why}")
        return rec
    # onnxd's image scenarios (S5) run against a second onnxd serving IMAGE_REPO, after the rest.
    image_scen = [s for s in cfg["scenarios"] if name == "onnxd" and SCENARIOS[s].get("image")]
    main_scen = [s for s in cfg["scenarios"] if s not in image_scen]
    if main_scen or not image_scen:
        srv = Server(name, quick, grpc=bool(grpc_scen) and not grpc_why)
        rec["command"] = printable(srv.cmd, srv.env)
        if start_server(srv, name, rec, quick):
            try:
                run_scenarios(srv, name, main_scen, rec, cfg, headers, grpc_why)
            finally:
                rec["stop"] = srv.stop()
                log(f"[{name}] stopped: {rec['stop']}")
        elif not image_scen:
            return rec
        else:  # the image process may still work: the main one's failure is kept, not final
            rec["main_failed"] = rec.pop("failed")
            for sc in main_scen:
                rec["scenarios"][sc] = {"failed": rec["main_failed"]}
    if image_scen:
        if cfg.get("s5_err"):
            for sc in image_scen:
                rec["scenarios"][sc] = {"failed": cfg["s5_err"]}
            return rec
        srv = Server(name, quick, repo=IMAGE_REPO, label=f"{name}-image", image=True)
        img: dict = {"command": printable(srv.cmd, srv.env)}
        rec["image_server"] = img
        if not start_server(srv, f"{name} (image repository)", img, quick):
            for sc in image_scen:
                rec["scenarios"][sc] = {"failed": f"onnxd serving {os.path.relpath(IMAGE_REPO, ROOT)} "
                                                  + img["failed"]}
        else:
            try:
                run_scenarios(srv, name, image_scen, rec, cfg, headers, grpc_why)
            finally:
                img["stop"] = srv.stop()
                log(f"[{name} (image repository)] stopped: {img['stop']}")
        if not main_scen:  # the image process is the only one: its numbers are the server's
            for k in ("command", "cold_start_s", "idle_rss_mb", "idle_pss_mb", "idle_procs"):
                if k in img:
                    rec[k] = img[k]
        if "main_failed" in rec and not any(not r.get("failed") for r in rec["scenarios"].values()):
            rec["failed"] = rec.pop("main_failed")
    return rec


def start_server(srv: Server, what: str, rec: dict, quick: bool) -> bool:
    """Starts srv, waits for its first answer, measures the idle process tree into rec
    (cold_start_s, idle_rss_mb, idle_pss_mb, idle_procs); on failure rec["failed"] and False
    (srv is stopped)."""
    log(f"[{what}] start: {printable(srv.cmd, srv.env)}")
    try:
        cold = srv.start()
    except RuntimeError as e:
        rec["failed"] = f"failed to start: {e}"
        log(f"[{what}] FAILED to start: {e}")
        srv.stop()
        return False
    rec["cold_start_s"] = round(cold, 3)
    time.sleep(1.5 if quick else 3.0)
    idle = sample(srv.proc.pid)
    rec["idle_rss_mb"] = round(idle["rss_kb"] / 1024, 1)
    rec["idle_pss_mb"] = round(idle["pss_kb"] / 1024, 1)
    rec["idle_procs"] = idle["procs"]
    log(f"[{what}] cold start {cold:.3f} s; idle RSS {rec['idle_rss_mb']} MB, "
        f"PSS {rec['idle_pss_mb']} MB, {idle['procs']} processes")
    return True


def run_scenarios(srv: Server, name: str, scen: list[str], rec: dict, cfg: dict, headers: dict,
                  grpc_why: str | None) -> None:
    """Runs scen against the started srv into rec["scenarios"]: onnxd cfg["onnxd_runs"] times
    (median kept; S4 once), the others once."""
    for sc in scen:
        if (name, sc) in SKIP:
            rec["scenarios"][sc] = {"skipped": SKIP[name, sc]}
            continue
        if SCENARIOS[sc].get("grpc") and grpc_why:
            rec["scenarios"][sc] = {"skipped": grpc_why}
            continue
        if not srv.alive():
            rec["scenarios"][sc] = {"failed": f"server not running (exited with status "
                                              f"{srv.proc.returncode})"}
            continue
        n = cfg["onnxd_runs"] if (name == "onnxd" and sc != "S4") else 1
        runs = []
        for i in range(n):
            r = run_scenario(srv, sc, headers, cfg["warmup"], cfg["duration"], i)
            runs.append(r)
            if r.get("failed"):
                log(f"[{name}] {sc} run {i + 1}/{n}: FAILED: {r['failed']}")
            else:
                log(f"[{name}] {sc} run {i + 1}/{n}: {r['rps']:.1f} req/s, p50 "
                    f"{fmt_ms(r.get('p50_ms'))} ms, p99 {fmt_ms(r.get('p99_ms'))} ms, peak "
                    f"RSS {r['peak_rss_mb']} MB / PSS {r['peak_pss_mb']} MB, "
                    f"{r.get('cpu_s_per_1k', '-')} CPU s/1k req; CPU cores: server "
                    f"{r.get('server_cpu_cores', '-')}, load generator "
                    f"{r.get('loadgen_cpu_cores', '-')}, others {r.get('other_cpu_cores', '-')}"
                    + (f"; {r['wire_bytes_per_req']:,} bytes on the wire per request"
                       if r.get("wire_bytes_per_req") else "")
                    + (f"; NOTE: {r['note']}" if r.get("note") else ""))
            if not srv.alive():
                break
            time.sleep(0.5)
        res = median_run(runs)
        if n > 1:
            res["all_runs"] = [{k: r.get(k) for k in ("rps", "p50_ms", "p99_ms",
                                                      "peak_rss_mb", "peak_pss_mb",
                                                      "cpu_s_per_1k", "failed")}
                               for r in runs]
        rec["scenarios"][sc] = res


# ---------------------------------------------------------------- batching rows

def http_get(port: int, path: str, timeout: float = 5.0) -> bytes | None:
    """GET on a new connection; the body on 200, else None."""
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(req)
            buf = b""
            while True:
                d = s.recv(1 << 16)
                if not d:
                    break
                buf += d
    except OSError:
        return None
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 200"):
        return None
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return body


_PROM = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)\s*$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_samples(port: int) -> list[tuple[str, dict, float]] | None:
    """The server's /metrics as (name, labels, value) samples; None when it does not answer."""
    text = http_get(port, "/metrics")
    if text is None:
        return None
    out = []
    for line in text.decode(errors="replace").splitlines():
        m = _PROM.match(line)
        if m and not line.startswith("#"):
            out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out
# ---------------------------------------------------------------- report

def fmt_ms(v) -> str:
    if v is None:
        return "-"
    if v < 0.1:
        return f"{v:.3f}"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def fmt_rps(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(a, b):
    return a / b if a and b else None


def fmt_x(v) -> str:
    return "-" if v is None else (f"{v:.2f}x" if v < 10 else f"{v:.1f}x")


def analyse(results: dict) -> None:
    srv = results["servers"]
    ceil = results["ceiling"]

    def sc(name, s):
        r = srv.get(name, {}).get("scenarios", {}).get(s, {})
        return r if r and not r.get("failed") and not r.get("skipped") else None

    for name, rec in srv.items():
        for s, r in rec.get("scenarios", {}).items():
            if r.get("failed") or r.get("skipped"):
                continue
            py = sc("python-grpc" if SCENARIOS[s].get("grpc")
                    else "python-image" if SCENARIOS[s].get("image") else "python", s)
            r["x_python"] = ratio(r.get("rps"), py and py.get("rps"))
            c = ceil.get(CEILING_MODEL[s], {})
            if name != "nginx" and not c.get("failed"):
                of = ratio(r.get("rps"), c.get("rps"))
                # A server cannot beat ONNX Runtime alone on the same cores: above 100% of the
                # highest ceiling sample, one of the two was mis-measured (a noisy neighbour
                # during the ceiling's samples, most likely); flagged, not printed.
                if of is not None and of > 1.0:
                    r["ceiling_error"] = (f"{of:.0%} of the ceiling's best sample "
                                          f"({fmt_rps(c.get('rps'))} runs/s): measurement error")
                elif name == "onnxd":
                    r["of_ceiling"] = of
            fl = sc("nginx", s)
            if name == "onnxd" and fl:
                r["of_floor"] = ratio(r.get("rps"), fl.get("rps"))

    targets = []

    def add(what, value, ok_if, shown, why_none="n/a"):
        targets.append({"target": what, "value": shown if value is not None else why_none,
                        "met": (bool(ok_if(value)) if value is not None else None)})

    o1, o2, o3, o4 = (sc("onnxd", s) for s in ("S1", "S2", "S3", "S4"))
    g = lambda r, k: r.get(k) if r else None  # noqa: E731
    v = g(o1, "of_ceiling")
    add("S1 onnxd >= 60% of ceiling", v, lambda x: x >= 0.60, f"{v:.0%}" if v else "",
        "measurement error (> 100%)" if g(o1, "ceiling_error") else "n/a")
    for peer, need in (("python", 4), ("go", 3), ("python-seed", 20), ("go-fast", 1.2),
                       ("python-fast", 2)):
        v = ratio(g(o1, "rps"), g(sc(peer, "S1"), "rps"))
        add(f"S1 onnxd >= {need}x {peer}", v, lambda x, n=need: x >= n, fmt_x(v))
    v = ratio(g(o1, "p99_ms"), g(o1, "p50_ms"))
    add("S1 onnxd p99 <= 3x p50", v, lambda x: x <= 3, f"{fmt_ms(g(o1, 'p99_ms'))} / "
        f"{fmt_ms(g(o1, 'p50_ms'))} ms = {v:.2f}x" if v else "")
    v = g(o2, "of_ceiling")
    add("S2 onnxd >= 92% of ceiling", v, lambda x: x >= 0.92, f"{v:.0%}" if v else "",
        "measurement error (> 100%)" if g(o2, "ceiling_error") else "n/a")
    for peer, need in (("python", 10), ("go", 1.5), ("go-fast", 2), ("python-fast", 10),
                       ("kserve", 40)):
        v = ratio(g(o3, "rps"), g(sc(peer, "S3"), "rps"))
        add(f"S3 onnxd >= {need}x {peer}", v, lambda x, n=need: x >= n, fmt_x(v))
    v = g(o3, "of_floor")
    add("S3 onnxd >= 50% of the HTTP floor (nginx)", v, lambda x: x >= 0.5,
        f"{v:.0%}" if v else "")
    v = g(o3, "p99_ms")
    add("S3 onnxd p99 < 2 ms", v, lambda x: x < 2, f"{fmt_ms(v)} ms")
    # gRPC (issue 14): S2g against the in-process ceiling, S3g against onnxd's own REST S3 and
    # the Go gRPC peer.
    o2g, o3g = sc("onnxd", "S2g"), sc("onnxd", "S3g")
    v = g(o2g, "of_ceiling")
    add("S2g onnxd >= 95% of ceiling", v, lambda x: x >= 0.95, f"{v:.0%}" if v else "",
        "measurement error (> 100%)" if g(o2g, "ceiling_error") else "n/a")
    v = ratio(g(o3g, "rps"), g(o3, "rps"))
    add("S3g onnxd >= 1.3x onnxd's REST S3", v, lambda x: x >= 1.3, fmt_x(v))
    v = ratio(g(o3g, "rps"), g(sc("go-grpc", "S3g"), "rps"))
    add("S3g onnxd >= 2x go-grpc", v, lambda x: x >= 2, fmt_x(v))
    # S5 (image classification from JPEG bytes): against the in-process decode + preprocess +
    # run ceiling (onnxd-img-limit) and the two image peers.
    o5 = sc("onnxd", "S5")
    v = g(o5, "of_ceiling")
    add("S5 onnxd >= 85% of ceiling", v, lambda x: x >= 0.85, f"{v:.0%}" if v else "",
        "measurement error (> 100%)" if g(o5, "ceiling_error") else "n/a")
    for peer, need in (("python-image", 5), ("go-image", 2.5)):
        v = ratio(g(o5, "rps"), g(sc(peer, "S5"), "rps"))
        add(f"S5 onnxd >= {need}x {peer}", v, lambda x, n=need: x >= n, fmt_x(v))
    v = ratio(g(o4, "rps"), g(o3, "rps"))
    add("S4 onnxd within 10% of S3 (req/s)", v, lambda x: x >= 0.90,
        f"{v:.0%} of S3" if v else "")
    v = (g(o4, "peak_rss_mb") - g(o3, "peak_rss_mb")) if o3 and o4 else None
    add("S4 onnxd adds < 20 MB (peak RSS vs S3)", v, lambda x: x < 20,
        f"{v:+.1f} MB" if v is not None else "")
    v = ratio(g(o1, "peak_pss_mb"), g(sc("python", "S1"), "peak_pss_mb"))
    add("S1 onnxd peak PSS <= 20% of python", v, lambda x: x <= 0.20, f"{v:.0%}" if v else "")
    v = ratio(g(o1, "peak_pss_mb"), g(sc("go", "S1"), "peak_pss_mb"))
    add("S1 onnxd peak PSS below go", v, lambda x: x < 1, f"{v:.0%} of go" if v else "")
    v = ratio(srv.get("onnxd", {}).get("cold_start_s"), srv.get("python", {}).get("cold_start_s"))
    add("cold start <= 15% of python", v, lambda x: x <= 0.15, f"{v:.0%}" if v else "")
    results["targets"] = targets

    # the published claim, re-measured: go vs python-seed on S1
    gs, ps = sc("go", "S1"), sc("python-seed", "S1")
    results["claim_check"] = {
        "claim": "Go service vs FastAPI+Pydantic+ORT: 7x throughput, 80% less RAM (MobileNetV2, "
                 "10 concurrent clients)",
        "go_vs_python_seed_rps": ratio(g(gs, "rps"), g(ps, "rps")),
        "go_vs_python_seed_pss": ratio(g(gs, "peak_pss_mb"), g(ps, "peak_pss_mb")),
        "go_vs_python_rps": ratio(g(gs, "rps"), g(sc("python", "S1"), "rps")),
        "go_vs_python_pss": ratio(g(gs, "peak_pss_mb"), g(sc("python", "S1"), "peak_pss_mb")),
    }


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = ["server", "scenario", "req/s", "p50 ms", "p99 ms", "vs python", "vs ceiling / floor",
            "peak RSS MB", "peak PSS MB", "CPU s/1k req", "cold start s", "idle PSS MB"]
    rows = []
    for name, rec in results["servers"].items():
        first = True
        label = LABELS.get(name, name)
        extra = lambda: ([f"{rec['cold_start_s']:.2f}" if rec.get("cold_start_s") else "-",  # noqa: E731
                          f"{rec['idle_pss_mb']:.0f}" if rec.get("idle_pss_mb") else "-"]
                         if first else ["", ""])
        if rec.get("failed"):
            rows.append([label, "all", "FAILED: " + rec["failed"][:90]] + [""] * 9)
            continue
        for s in results["config"]["scenarios"]:
            r = rec["scenarios"].get(s, {})
            if r.get("skipped"):
                rows.append([label if first else "", s, "n/a (" + r["skipped"].split(" (")[0] + ")"]
                            + [""] * 7 + extra())
            elif r.get("failed") and not r.get("rps"):
                rows.append([label if first else "", s, "FAILED: " + r["failed"][:90]]
                            + [""] * 7 + extra())
            else:
                mark = (" (!)" if r.get("failed") else "") + (" *" if r.get("note") else "") \
                    + (" †" if (r.get("other_cpu_cores") or 0) > NOISY else "") \
                    + (" ‡" if r.get("ceiling_error") else "")
                vs = [f"{r['of_ceiling']:.0%} of ceiling"] if r.get("of_ceiling") else []
                vs += [f"{r['of_floor']:.0%} of floor"] if r.get("of_floor") else []
                vs += ["> ceiling ‡"] if r.get("ceiling_error") else []
                rows.append([label if first else "", s, fmt_rps(r.get("rps")) + mark,
                             fmt_ms(r.get("p50_ms")), fmt_ms(r.get("p99_ms")),
                             fmt_x(r.get("x_python")) if name != "nginx" else "",
                             ", ".join(vs),
                             f"{r['peak_rss_mb']:.0f}", f"{r['peak_pss_mb']:.0f}",
                             f"{r['cpu_s_per_1k']:.2f}" if r.get("cpu_s_per_1k") is not None
                             else "-"] + extra())
            first = False
    for m, c in results["ceiling"].items():
        lab = ", ".join(s for s in results["config"]["scenarios"] if CEILING_MODEL[s] == m)
        if c.get("failed"):
            rows.append(["ceiling (in-process ORT)", f"{m} ({lab})", "FAILED: " + c["failed"][:80]]
                        + [""] * 9)
        else:
            what = "decode + preprocess + ORT" if m == s5.MODEL else "ORT"
            rows.append([f"ceiling (in-process {what}, max of {c['n']})", f"{m} ({lab})",
                         fmt_rps(c.get("rps")), fmt_ms(c.get("p50_ms")), fmt_ms(c.get("p99_ms")),
                         "", f"100% (min {fmt_rps(c['min_rps'])}, spread {c['spread']:.0%})",
                         "", "", "", "", ""])
    return head, rows


def footnotes(results: dict) -> list[str]:
    out, noisy = [], []
    for m, c in results.get("ceiling", {}).items():
        if not c.get("failed") and c.get("samples"):
            out.append(f"Ceiling {m}: {c['n']} samples (before the first server, after each, "
                       f"runs/s): " + ", ".join(fmt_rps(x.get("rps")) for x in c["samples"])
                       + f"; the table shows the maximum, spread {c['spread']:.0%}.")
    for name, rec in results["servers"].items():
        for sc, r in rec.get("scenarios", {}).items():
            if r.get("note"):
                out.append(f"* {name} {sc}: {r['note']}.")
            if (r.get("other_cpu_cores") or 0) > NOISY:
                noisy.append(f"{name} {sc} {r['other_cpu_cores']:.2f}")
            if r.get("failed") and r.get("rps"):
                out.append(f"(!) {name} {sc}: {r['failed']}")
            if r.get("ceiling_error"):
                out.append(f"‡ {name} {sc}: {r['ceiling_error']}; no percentage of the ceiling "
                           f"is given for it.")
    wire = []
    for sc in results["config"]["scenarios"]:
        vals = [f"{name} {r['wire_bytes_per_req']:,}" for name, rec in results["servers"].items()
                for s_, r in rec.get("scenarios", {}).items()
                if s_ == sc and r.get("wire_bytes_per_req") and not r.get("skipped")]
        if vals and sc in ("S1", "S2", "S5"):
            wire.append(f"{sc}: " + ", ".join(vals))
    if wire:
        out.append("Bytes on the wire per request (request + response, HTTP heads included, "
                   "from the load generator's counters): " + "; ".join(wire) + ".")
    for name, rec in results["servers"].items():
        if rec.get("image_server", {}).get("command"):
            out.append(f"{name} S5: a second {name} process serving the image repository: "
                       f"`{rec['image_server']['command']}`.")
    if noisy:
        out.append("† other processes on the machine used CPU during the measurement (cores, "
                   "averaged over the window): " + ", ".join(noisy) + "; those numbers are "
                   "low by that share.")
    return out


def text_table(head, rows) -> str:
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).rjust(w[i]) if i >= 2 else str(c).ljust(w[i])  # noqa: E731
                               for i, c in enumerate(r))
    return "\n".join([line(head), line(["-" * x for x in w])] + [line(r) for r in rows])


def md_table(head, rows) -> str:
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_markdown(results: dict, head, rows) -> str:
    m, v, cfg = results["machine"], results["versions"], results["config"]
    pk = v.get("python_packages", {})
    runs = f", onnxd S1-S3 median of {cfg['onnxd_runs']}" if cfg["onnxd_runs"] > 1 else ""
    if not results["servers"]:  # --only batching
        lines = [f"Loopback, {m['cores']} cores ({m['cpu_model']}), {m['ram_gib']} GiB, Linux "
                 f"{m['kernel']}; load generator and server share the cores. ONNX Runtime "
                 f"{v.get('ort_library')}. Generated by `bench/run.py"
                 f"{' --quick' if cfg['quick'] else ''} --only {cfg['only']}` on {results['date']}."]
        return "\n".join(lines + batching.batch_markdown(results)
                         + fraud_markdown(results) + reload_markdown(results)
                         + coldstart_markdown(results)) + "\n"
    lines = [
        f"Loopback, {m['cores']} cores ({m['cpu_model']}), {m['ram_gib']} GiB, Linux "
        f"{m['kernel']}; load generator and server share the cores. {cfg['warmup']:g} s warm-up "
        f"+ {cfg['duration']:g} s per scenario{runs}"
        f"{' (--quick)' if cfg['quick'] else ''}"
        f". ONNX Runtime {v.get('ort_library')} for every "
        f"server, 1 intra-op thread per core-worker (go: one session, {m['cores']} intra-op "
        f"threads). Memory: whole process tree, peak during the scenario; CPU: server tree's "
        f"CPU seconds per 1,000 requests.",
        "",
        "S1 MobileNetV2 JSON (10 conn) · S2 MobileNetV2 binary tensors (10 conn) · "
        "S3 MLP JSON (64 conn) · S4 = S3 + 1,000 idle keep-alive connections · "
        "S2g MobileNetV2 gRPC ModelInfer, raw tensor bytes (10 clients) · "
        "S3g MLP gRPC ModelInfer (64 calls in flight over 4 HTTP/2 connections) · "
        "S5 MobileNetV2 from JPEG bytes: one 500x375 quality-90 JPEG as a BYTES input, top 5 "
        "classes (10 conn)",
        "",
        md_table(head, rows),
        "",
        *[f"{x}  " for x in footnotes(results)],
        "",
        f"Peers: python = FastAPI {pk.get('fastapi', '?')} + Pydantic {pk.get('pydantic', '?')} + "
        f"uvicorn {pk.get('uvicorn', '?')} ({m['cores']} workers, uvloop + httptools); "
        f"python-seed = the published set-up (4 uvicorn workers, ProcessPoolExecutor of "
        f"{m['cores']} each, JSON only); go = {v.get('go', '').replace('go version ', '')} "
        f"net/http + encoding/json + onnxruntime_go {v.get('onnxruntime_go', '?')}. "
        f"Tuned: python-fast = Starlette {pk.get('starlette', '?')} + orjson "
        f"{pk.get('orjson', '?')} + numpy, no Pydantic, uvicorn ({m['cores']} workers, uvloop + "
        f"httptools); go-fast = net/http + goccy/go-json {v.get('go_json', '?')} (the fastest "
        f"[]float32 decoder measured), pooled buffers, {m['cores']} sessions x 1 intra-op "
        f"thread, GOMAXPROCS 2x cores. kserve = KServe {v.get('kserve_packages', {}).get('kserve', '?')} "
        f"ModelServer ({m['cores']} workers) with an ONNX Runtime predictor, REST v2. "
        f"nginx (HTTP floor) = nginx {v.get('nginx', '?')}, {m['cores']} workers, a fixed "
        f"mlp16 response to S3's load. "
        f"Image (S5): python-image = FastAPI + Pillow {pk.get('pillow', '?')} + numpy + ONNX "
        f"Runtime, uvicorn ({m['cores']} workers); go-image = net/http + image/jpeg + "
        f"golang.org/x/image {v.get('x_image', '?')} draw.BiLinear + onnxruntime_go (one session, "
        f"{m['cores']} intra-op threads); the S5 ceiling is build/onnxd-img-limit (decode + "
        f"preprocess + run + top 5 in-process, {m['cores']} threads x 1 intra-op). "
        f"Generated by `make bench{' QUICK=1' if cfg['quick'] else ''}` (bench/run.py) on "
        f"{results['date']}.",
    ]
    if results.get("targets"):
        lines += ["", "| target (issue) | measured | met |", "|---|---:|:---:|"]
        for t in results["targets"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['target']} | {t['value']} | {met} |")
    return "\n".join(lines + batching.batch_markdown(results) + fraud_markdown(results)
                     + reload_markdown(results) + coldstart_markdown(results)) \
        + "\n"


def coldstart_markdown(results: dict) -> list[str]:
    return (coldstart.markdown(results["coldstart"], results["config"])
            if results.get("coldstart") else [])


def reload_markdown(results: dict) -> list[str]:
    return reload.markdown(results["reload"], results["config"]) if results.get("reload") else []


def fraud_markdown(results: dict) -> list[str]:
    return fraud.markdown(results["fraud"], results["config"]) if results.get("fraud") else []


def draw_chart(results: dict, png: Path) -> str | None:
    """Four panels: req/s and p99 per scenario per server, memory (PSS), cold start; grouped
    bars on log scales, values printed on the bars, the ceiling as dashed lines."""
    gp = shutil.which("gnuplot")
    if not gp:
        return "gnuplot not found"
    servers = list(results["servers"])
    scen = results["config"]["scenarios"]
    d = WORK / "plot"
    d.mkdir(parents=True, exist_ok=True)
    colors = {"onnxd": 0x1B9E77, "python": 0xD95F02, "python-fast": 0xFDAE6B,
              "python-seed": 0x7570B3, "go": 0x2C7FB8, "go-fast": 0x9ECAE1, "kserve": 0xE7298A,
              "nginx": 0x999999, "python-grpc": 0xA6761D, "go-grpc": 0x08519C,
              "python-image": 0xE6AB02, "go-image": 0x66A61E}

    def val(name, s, key):
        r = results["servers"][name].get("scenarios", {}).get(s, {})
        if r.get("skipped") or (r.get("failed") and not r.get("rps")):
            return None
        return r.get(key) or None

    def mem(n, k):
        if k == "idle":
            return results["servers"][n].get("idle_pss_mb")
        return val(n, k, "peak_pss_mb")

    def write(fname, keys, fn) -> list[float]:
        vals = []
        with open(d / fname, "w") as f:
            for k in keys:
                row = [fn(n, k) for n in servers]
                vals += [x for x in row if x]
                f.write(f'"{k}" ' + " ".join(f"{x:.6g}" if x else "NaN" for x in row) + "\n")
        return vals

    ceil = results["ceiling"]
    cl = {s: ceil.get(CEILING_MODEL[s], {}).get("rps") for s in scen}
    v_rps = write("rps.dat", scen, lambda n, s: val(n, s, "rps")) + [x for x in cl.values() if x]
    v_p99 = write("p99.dat", scen, lambda n, s: val(n, s, "p99_ms"))
    v_mem = write("mem.dat", ["idle"] + scen, mem)
    v_cold = []
    with open(d / "cold.dat", "w") as f:
        for i, n in enumerate(servers):
            c = results["servers"][n].get("cold_start_s")
            if c:
                v_cold.append(c)
            f.write(f'{i} "{LABELS.get(n, n)}" {c if c else "NaN"} {colors.get(n, 0x888888)}\n')

    def yr(vals):  # log-scale range with head room for the key and the value labels
        if not vals:
            return "[1:10]"
        lo, hi = min(vals), max(vals)
        return f"[{10 ** math.floor(math.log10(lo / 1.5))}:{hi * 6:.6g}]"

    ncol = len(servers)
    w = 1.0 / (ncol + 1)  # bar width in a clustered histogram with gap 1

    def bars(fname, fmt_big, fmt_small):
        p = [f"'{d}/{fname}' using {i + 2}:xtic(1) title '{LABELS.get(n, n)}' lc rgb '#{colors.get(n, 0x888888):06x}'"
             for i, n in enumerate(servers)]
        p += [f"'{d}/{fname}' using ($0 + ({i} - {(ncol - 1) / 2}) * {w}):{i + 2}:"
              f"(${i + 2} >= 100 ? sprintf('{fmt_big}', ${i + 2}) : sprintf('{fmt_small}', ${i + 2}))"
              f" with labels offset 0,0.55 font ',8' notitle" for i in range(ncol)]
        return ", \\\n     ".join(p)

    arrows = "\n".join(
        f"set arrow from {i - 0.45},{cl[s]} to {i + 0.45},{cl[s]} nohead dt 2 lw 2 lc rgb '#333333'"
        for i, s in enumerate(scen) if cl.get(s))
    xr = f"[-0.5:{len(scen) - 0.5}]"
    cfg, m = results["config"], results["machine"]
    title = (f"onnxd, the services it replaces (default and tuned) and an HTTP floor, loopback, {m['cores']} cores ({m['cpu_model']}), "
             f"{cfg['warmup']:g} s warm-up + {cfg['duration']:g} s per scenario"
             f"{' (quick)' if cfg['quick'] else ''}\\n"
             "S1 MobileNetV2 JSON, 10 conn    S2 MobileNetV2 binary, 10 conn    "
             "S3 MLP JSON, 64 conn    S4 = S3 + 1,000 idle conn    S5 MobileNetV2 from JPEG, "
             "top 5, 10 conn")
    noisy = [r.get("other_cpu_cores") or 0 for rec in results["servers"].values()
             for r in rec.get("scenarios", {}).values()]
    footer = (f"set label 1 'Other processes on the machine used up to {max(noisy):.2f} cores "
              f"during the measurements: see the table' at screen 0.5, screen 0.015 center "
              f"font ',10' tc rgb '#b00000'" if noisy and max(noisy) > NOISY else "")
    script = f"""
set terminal pngcairo size 1900,1150 font 'DejaVu Sans,11'
set output '{png}'
{footer}
set multiplot layout 2,2 title "{title}" font ',12' margins 0.06,0.985,0.06,0.9 spacing 0.06,0.1
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set key top left horizontal font ',10'
set grid ytics lc rgb '#dddddd'
set logscale y
set format y '%g'
set xrange {xr}
set title 'Throughput, req/s (log; higher is better; dashed: in-process ONNX Runtime ceiling, best sample)'
set ylabel 'req/s'
set yrange {yr(v_rps)}
{arrows}
plot {bars('rps.dat', '%.0f', '%.1f')}
unset arrow
set title 'p99 latency, ms (log; lower is better)'
set ylabel 'ms'
set yrange {yr(v_p99)}
plot {bars('p99.dat', '%.0f', '%.3g')}
set title 'Memory, whole process tree PSS in MB (log): idle, and peak during each scenario'
set ylabel 'MB'
set xrange [-0.5:{len(scen) + 0.5}]
set yrange {yr(v_mem)}
plot {bars('mem.dat', '%.0f', '%.0f')}
set title 'Cold start: exec to first successful inference, s (log)'
set ylabel 's'
set style data boxes
set boxwidth 0.6
set xrange [-0.6:{ncol - 0.4}]
set yrange {yr(v_cold)}
unset key
plot '{d}/cold.dat' using 1:3:4:xtic(2) with boxes lc rgb variable notitle, \\
     '{d}/cold.dat' using 1:3:(sprintf('%.2f s', $3)) with labels offset 0,0.7 notitle
unset multiplot
"""
    (d / "chart.gp").write_text(script)
    r = subprocess.run([gp, str(d / "chart.gp")], capture_output=True, text=True)
    if r.returncode != 0:
        return "gnuplot failed: " + r.stderr.strip()[-500:]
    return None


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:2]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="batching rows: " + "; ".join(
                                     f"{k} {v['title']}"
                                     for k, v in batching.BATCH_ROWS.items()))
    ap.add_argument("--quick", action="store_true", help="2 s warm-up + 6 s per scenario, 1 run")
    ap.add_argument("--servers", help="comma-separated subset of " + ",".join(SERVERS))
    ap.add_argument("--scenarios", help="comma-separated subset of " + ",".join(SCENARIOS))
    ap.add_argument("--warmup", type=float, help="seconds of warm-up per scenario (overrides "
                    "the default and --quick's; for short checks)")
    ap.add_argument("--duration", type=float, help="seconds measured per scenario (overrides "
                    "the default and --quick's; the ceiling samples are capped at it too)")
    ap.add_argument("--runs", type=int, help="onnxd runs per S1-S3 (default: 3 if the full run "
                    "fits --budget, else 1; 1 with --quick)")
    ap.add_argument("--budget", type=float, default=1100,
                    help="seconds the server comparison (without the batching rows, ~3.5 min "
                    "more) may take with 3 onnxd runs (default 1100)")
    ap.add_argument("--only", choices=["main", "batching", "fraud", "reload", "coldstart"],
                    help="main: only the server comparison (S1-S4, ceilings); batching: only the "
                    "batching table (B1-B4, onnxd with batching off and on; no chart); fraud: "
                    "only the fraud-scoring rows (bench/fraud.py); reload: only the reload rows "
                    "(bench/reload.py); coldstart: only the cold-start rows (bench/coldstart.py)")
    ap.add_argument("--fraud-rows", help="comma-separated subset of " + ",".join(fraud.ROWS)
                    + " (default: all)")
    ap.add_argument("--batch-rows", help="comma-separated subset of "
                    + ",".join(batching.BATCH_ROWS)
                    + " (default: all)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument("--loadgen", default=str(BUILD / "onnxd-bench"), help=argparse.SUPPRESS)
    ap.add_argument("--ort-limit", default=str(BUILD / "onnxd-ort-limit"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    os.chdir(ROOT)
    batching.R = fraud.R = reload.R = coldstart.R = sys.modules[__name__]
    TOOLS["bench"], TOOLS["limit"] = Path(args.loadgen), Path(args.ort_limit)
    t_start = time.monotonic()
    cfg = plan(args)
    cfg["quick"] = args.quick
    fd = raise_fd_limit()
    if fd < 2200:
        log(f"warning: open-file limit is {fd}; S4 needs ~1,100 descriptors per process")
    ensure_tools()
    WORK.mkdir(parents=True, exist_ok=True)
    if not all((MODELS / m / "1/model.onnx").exists() for m in batching.BATCH_MODELS):
        subprocess.run([str(PY), "tools/make_models.py", "--out", "models"], check=True)
    build_err = {}  # the peers' own set-up: Go builds, KServe's venv, nginx
    for name in cfg["servers"]:
        if name in GO_PEERS:
            build_err[name] = build_go_peer(name)
        elif name == "kserve":
            build_err[name] = setup_kserve()
        elif name == "nginx":
            build_err[name] = setup_nginx()
    headers = make_bodies()
    if any(SCENARIOS[s].get("image") for s in cfg["scenarios"]):
        try:
            info = s5.prepare(WORK, MODELS, PY)
            S5_HEADER_LEN["n"] = info["header_len"]
            headers["s5.bin"] = ["Content-Type: application/octet-stream",
                                 f"Inference-Header-Content-Length: {info['header_len']}"]
            cfg["s5"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in info.items()}
            log(f"S5: {info['size'][0]}x{info['size'][1]} JPEG (quality {info['quality']}, "
                f"from {info['source']}) of {info['jpeg_bytes']:,} bytes, request body "
                f"{info['body_bytes']:,} bytes")
        except (RuntimeError, OSError) as e:
            cfg["s5_err"] = f"S5 set-up failed: {e}"
            log(cfg["s5_err"])
        ensure_img_limit()
    if any(SCENARIOS[s].get("grpc") for s in cfg["scenarios"]):
        cfg["grpc_err"] = ensure_grpc_tool()
        if not cfg["grpc_err"] and not (WORK / "mlp16.pb").exists():
            cfg["grpc_err"] = "no gRPC messages (tritonclient[grpc] missing from .venv)"
    machine = machine_info()
    log(f"machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['ram_gib']} GiB, "
        f"Linux {machine['kernel']}, load average {' '.join(machine['loadavg_at_start'])}")
    b0, t0 = _machine_busy(), time.monotonic()
    time.sleep(2.0)
    machine["other_cpu_cores_at_start"] = round((_machine_busy() - b0) / CLK /
                                                (time.monotonic() - t0), 2)
    if machine["other_cpu_cores_at_start"] > NOISY:
        log(f"warning: other processes are using {machine['other_cpu_cores_at_start']:.2f} of "
            f"{CORES} cores before the benchmark starts: the numbers will be low and noisy")
    log(f"plan: {', '.join(cfg['servers']) or 'no servers'} x "
        f"{', '.join(cfg['scenarios']) or 'no scenarios'}; batching rows: "
        f"{', '.join(cfg['batch_rows']) or 'none'}; fraud rows: "
        f"{', '.join(cfg['fraud_rows']) or 'none'}; reload rows: "
        f"{'H0, H1' if cfg['reload_rows'] else 'none'}; cold-start rows: "
        f"{'K1-K4' if cfg['coldstart_rows'] else 'none'}; "
        f"{cfg['warmup']:g} s warm-up + {cfg['duration']:g} s; onnxd runs per S1-S3: "
        f"{cfg['onnxd_runs']}; estimated {cfg['estimate_s'] / 60:.1f} min")

    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine,
                     "versions": versions(), "config": cfg, "ceiling": {}, "servers": {}}

    models_needed = sorted({CEILING_MODEL[s] for s in cfg["scenarios"]}, reverse=True)
    ceil_samples: dict = {m: [] for m in models_needed}

    def ceiling_point(at: str) -> None:
        for model in models_needed:
            c = run_ceiling(model, cfg["ceiling_warmup"], cfg["ceiling_duration"],
                            f"{len(ceil_samples[model])}")
            c["at"] = at
            ceil_samples[model].append(c)
            if c.get("failed"):
                log(f"[ceiling {at}] {model}: FAILED: {c['failed']}")
            else:
                log(f"[ceiling {at}] {model}: {fmt_rps(c.get('rps'))} runs/s, p50 "
                    f"{fmt_ms(c.get('p50_ms'))} ms, p99 {fmt_ms(c.get('p99_ms'))} ms ({CORES} "
                    f"threads x 1 intra-op)")

    if models_needed:
        ceiling_point("before")
    for name in cfg["servers"]:
        results["servers"][name] = bench_server(name, cfg, headers, args.quick,
                                                build_err.get(name))
        if models_needed:
            ceiling_point(f"after {name}")
    for model in models_needed:
        c = results["ceiling"][model] = ceiling_summary(ceil_samples[model])
        if not c.get("failed"):
            log(f"[ceiling] {model}: max {fmt_rps(c['rps'])} runs/s of {c['n']} samples, min "
                f"{fmt_rps(c['min_rps'])}, spread {c['spread']:.0%}")
    if cfg["batch_rows"]:
        results["batching"] = batching.bench_batching(cfg, headers, args.quick)
    if cfg["fraud_rows"]:
        results["fraud"] = fraud.bench_fraud(cfg, args.quick)
    if cfg["reload_rows"]:
        results["reload"] = reload.bench_reload(cfg, headers, args.quick)
    if cfg["coldstart_rows"]:
        results["coldstart"] = coldstart.bench_coldstart(cfg, args.quick)
    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    results["targets"], results["claim_check"] = [], {}
    if cfg["servers"]:
        analyse(results)

    head, rows = table_rows(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "README-table.md").write_text(write_markdown(results, head, rows))
    err = draw_chart(results, (out / "latest.png").resolve()) if cfg["servers"] else \
        f"not drawn: no server comparison (--only {cfg['only']})"
    if cfg["servers"]:
        log("")
        log(text_table(head, rows))
        for x in footnotes(results):
            log(x)
        log("")
        for t in results["targets"]:
            met = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
            log(f"  {t['target']:<42} {str(t['value']):>28}  {met}")
        cc = results["claim_check"]
        if cc.get("go_vs_python_seed_rps"):
            log(f"\n  published claim (go vs python-seed, S1): {cc['go_vs_python_seed_rps']:.1f}x "
                f"throughput, {1 - (cc['go_vs_python_seed_pss'] or 1):.0%} less memory (PSS)")
    if results.get("batching"):
        bh, br = batching.batch_rows_table(results["batching"])
        log("\nbatching (onnxd, dynamic batching off vs on)")
        log(text_table(bh, br))
        for x in batching.batch_notes(results["batching"]):
            log(x)
    if results.get("fraud"):
        fraud.print_text(results["fraud"])
    if results.get("reload"):
        reload.print_text(results["reload"])
    if results.get("coldstart"):
        coldstart.print_text(results["coldstart"])
    log(f"\nwrote {os.path.relpath(out / 'latest.json')}, {os.path.relpath(out / 'README-table.md')}"
        + (f", {os.path.relpath(out / 'latest.png')}" if not err else f" (chart: {err})")
        + f" in {results['elapsed_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
