"""bench/reload.py: the reload row of `make bench` (bench/run.py --only reload; issue 12).

One onnxd in explicit model control mode serving a repository built under build/bench/reload/
(mlp16 and mobilenetv2, hard-linked from models/, copied if that fails; the second mlp16 file is
tools/make_test_models.py's mlp16_alt, same shape, other weights):
  H0  S3's load (mlp16, JSON, 64 connections, build/onnxd-bench), no reloads
  H1  the same load while mlp16 is reloaded every RELOAD_EVERY_S for the whole run (warm-up
      included): its model.onnx is replaced by rename, alternating the two files, then
      POST /v2/repository/models/mlp16/load
H0 and H1 alternate in PAIRS pairs (1 with --quick); the rows give each one's median run, and
the comparison is the median over the pairs of H1/H0 (req/s, p99): one pair's two runs are
seconds apart, so a machine that drifts between pairs (other work, CPU frequency; S3 runs of
the same server differed by 12% in one full run) moves both alike. Then the swap time
of mobilenetv2: SWAPS times, the time from the load call to the first successful inference
after the load answered (the load answers when the new version is ready, so that inference is
the new version's); the median is reported.
Targets (issue 12, item 10): H1 >= 95% of H0's req/s, zero failed requests (inference and load
calls), H1's p99 <= 1.5x H0's.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

R = None  # bench/run.py's module, set by it before calling bench_reload

RELOAD_EVERY_S = 0.2
SWAPS = 20
PAIRS = 3
TARGET_RPS = 0.95
TARGET_P99_X = 1.5


def log(msg: str) -> None:
    R.log(msg)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def install(path: Path, src: Path) -> None:
    """Puts src's bytes at path by rename: the server never sees a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, path)


def make_repo(work: Path) -> tuple[Path, Path, Path]:
    """(repository, mlp16 file A, mlp16 file B)."""
    alt = work / "test-models"
    subprocess.run([str(R.PY), "tools/make_test_models.py", str(alt)], check=True, cwd=R.ROOT,
                   stdout=subprocess.DEVNULL)
    a = R.MODELS / "mlp16/1/model.onnx"
    b = alt / "mlp16_alt/1/model.onnx"
    repo = work / "repo"
    install_dir = repo / "mlp16/1"
    install_dir.mkdir(parents=True)
    shutil.copyfile(a, install_dir / "model.onnx")
    _link(R.MODELS / "mobilenetv2/1/model.onnx", repo / "mobilenetv2/1/model.onnx")
    return repo, a, b


def post(port: int, path: str, body: bytes = b"{}", timeout: float = 60.0) -> tuple[int, bytes]:
    """POST on a new connection -> (status, body); (0, reason) when no answer."""
    req = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(req)
            buf = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
    except OSError as e:
        return 0, str(e).encode()
    try:
        status = int(buf.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, buf[:200]
    return status, buf.split(b"\r\n\r\n", 1)[-1]


class Reloader(threading.Thread):
    """Reloads mlp16 every RELOAD_EVERY_S, alternating the two files, until stopped."""

    def __init__(self, port: int, target: Path, files: tuple[Path, Path]):
        super().__init__(daemon=True)
        self.port, self.target, self.files = port, target, files
        self.stop_ev = threading.Event()
        self.n = 0
        self.failed: list[str] = []
        self.durations: list[float] = []

    def run(self) -> None:
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            install(self.target, self.files[(self.n + 1) % 2])
            t0 = time.monotonic()
            st, body = post(self.port, "/v2/repository/models/mlp16/load")
            self.durations.append(time.monotonic() - t0)
            self.n += 1
            if st != 200:
                self.failed.append(f"{st}: {body[:200].decode(errors='replace')}")
            nxt += RELOAD_EVERY_S
            self.stop_ev.wait(max(0.0, nxt - time.monotonic()))

    def stop(self) -> None:
        self.stop_ev.set()
        self.join(30)


def swap_times(port: int, body: bytes, n: int) -> list[float]:
    """Seconds from the load call of mobilenetv2 to its first successful inference after it."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        st, msg = post(port, "/v2/repository/models/mobilenetv2/load")
        if st != 200:
            raise RuntimeError(f"load of mobilenetv2 answered {st}: {msg[:200]!r}")
        while True:
            st, _ = post(port, "/v2/models/mobilenetv2/infer", body)
            if st == 200:
                break
            if time.monotonic() - t0 > 60:
                raise RuntimeError(f"mobilenetv2 did not answer within 60 s of the load ({st})")
        out.append(time.monotonic() - t0)
    return out


def bench_reload(cfg: dict, headers: dict, quick: bool) -> dict:
    work = R.WORK / "reload"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out: dict = {"rows": {}, "every_s": RELOAD_EVERY_S}
    repo, a, b = make_repo(work)
    srv = R.Server("onnxd", quick, repo=repo, label="onnxd-reload",
                   extra=["--model-control-mode", "explicit", "--load-model", "*"])
    out["command"] = R.printable(srv.cmd, srv.env)
    log(f"[reload] start: {out['command']}")
    spec = dict(R.SCENARIOS["S3"])
    n = 1 if quick else PAIRS
    runs: dict = {"H0": [], "H1": []}
    try:
        try:
            out["cold_start_s"] = round(srv.start(), 3)
        except RuntimeError as e:
            out["failed"] = f"failed to start: {e}"
            log(f"[reload] FAILED to start: {e}")
            summarise(out)
            return out
        time.sleep(1.0)
        for i in range(n):
            for row in ("H0", "H1"):
                if not srv.alive():
                    break
                rl = None
                if row == "H1":
                    rl = Reloader(srv.port, repo / "mlp16/1/model.onnx", (a, b))
                    rl.start()
                res = R.run_scenario(srv, row, headers, cfg["warmup"], cfg["duration"], i,
                                     spec=spec)
                if rl:
                    rl.stop()
                    res["reloads"] = rl.n
                    res["reload_failures"] = len(rl.failed)
                    res["reload_failure_examples"] = rl.failed[:3]
                    if rl.durations:
                        res["reload_call_median_ms"] = round(
                            statistics.median(rl.durations) * 1000, 1)
                res.pop("loadgen", None)
                runs[row].append(res)
                log(f"[reload] {row} run {i + 1}/{n}: "
                    + (f"FAILED: {res['failed']}" if res.get("failed") else
                       f"{R.fmt_rps(res.get('rps'))} req/s, p99 {R.fmt_ms(res.get('p99_ms'))} ms,"
                       f" {res.get('errors', 0):g} errors")
                    + (f"; {res['reloads']} reloads, {res['reload_failures']} failed"
                       if row == "H1" else ""))
                time.sleep(0.5)
        for row, rs in runs.items():
            med = R.median_run(rs) if rs else {"failed": "not run"}
            med["all_errors"] = sum(r.get("errors") or 0 for r in rs)
            if row == "H1":
                med["all_reloads"] = sum(r.get("reloads", 0) for r in rs)
                med["all_reload_failures"] = sum(r.get("reload_failures", 0) for r in rs)
            out["rows"][row] = med
        out["pairs"] = [{"rps_x": R.ratio(h1.get("rps"), h0.get("rps")),
                         "p99_x": R.ratio(h1.get("p99_ms"), h0.get("p99_ms"))}
                        for h0, h1 in zip(runs["H0"], runs["H1"])
                        if not h0.get("failed") and not h1.get("failed")]
        if srv.alive():
            body = (R.WORK / "mobilenetv2.json").read_bytes()
            try:
                t = swap_times(srv.port, body, 5 if quick else SWAPS)
                out["swap"] = {"n": len(t), "median_ms": round(statistics.median(t) * 1000, 1),
                               "max_ms": round(max(t) * 1000, 1)}
                log(f"[reload] mobilenetv2 swap: median {out['swap']['median_ms']} ms, max "
                    f"{out['swap']['max_ms']} ms ({len(t)} loads)")
            except RuntimeError as e:
                out["swap"] = {"failed": str(e)}
                log(f"[reload] mobilenetv2 swap FAILED: {e}")
    finally:
        out["stop"] = srv.stop()
        log(f"[reload] stopped: {out['stop']}")
    summarise(out)
    return out


def summarise(out: dict) -> None:
    r0, r1 = out["rows"].get("H0", {}), out["rows"].get("H1", {})
    ok = not r0.get("failed") and not r1.get("failed")
    pairs = [p for p in out.get("pairs", []) if p["rps_x"] is not None and p["p99_x"] is not None]
    rps_x = statistics.median(p["rps_x"] for p in pairs) if ok and pairs else None
    p99_x = statistics.median(p["p99_x"] for p in pairs) if ok and pairs else None
    failed = None
    if r1 and "all_errors" in r1:
        failed = int(r1["all_errors"] + r1.get("all_reload_failures", 0))
    out["rps_x"], out["p99_x"] = rps_x, p99_x
    sw = out.get("swap") or {}
    out["targets"] = [
        {"target": f"H1 req/s >= {TARGET_RPS:.0%} of H0", "value": None if rps_x is None
         else f"{rps_x:.0%}", "met": None if rps_x is None else rps_x >= TARGET_RPS},
        {"target": "H1 failed requests = 0 (inference + load calls)", "value": failed,
         "met": None if failed is None else failed == 0},
        {"target": f"H1 p99 <= {TARGET_P99_X:g}x H0", "value": None if p99_x is None
         else f"{p99_x:.2f}x", "met": None if p99_x is None else p99_x <= TARGET_P99_X},
        {"target": "mobilenetv2: load call to new version answering (median)",
         "value": f"{sw['median_ms']} ms" if sw.get("median_ms") is not None else None,
         "met": None},
    ]


def table(out: dict) -> tuple[list[str], list[list[str]]]:
    head = ["row", "what", "req/s", "p50 ms", "p99 ms", "failed requests", "reloads"]
    rows = []
    titles = {"H0": "S3 load (mlp16 JSON, 64 conn), no reloads",
              "H1": f"the same, mlp16 reloaded every {int(RELOAD_EVERY_S * 1000)} ms"}
    for r, row in out.get("rows", {}).items():
        if row.get("failed"):
            rows.append([r, titles[r], "failed", "", "", "", ""])
            continue
        rows.append([r, titles[r], R.fmt_rps(row.get("rps")), R.fmt_ms(row.get("p50_ms")),
                     R.fmt_ms(row.get("p99_ms")), f"{row.get('all_errors', 0):g}",
                     "" if r == "H0" else f"{row.get('all_reloads', 0)} "
                     f"({row.get('all_reload_failures', 0)} failed)"])
    return head, rows


def notes(out: dict) -> list[str]:
    lines = []
    sw = out.get("swap") or {}
    if sw.get("median_ms") is not None:
        lines.append(f"mobilenetv2 swap: load call to the first answer after it, median "
                     f"{sw['median_ms']} ms, max {sw['max_ms']} ms ({sw['n']} loads).")
    elif sw.get("failed"):
        lines.append(f"mobilenetv2 swap: failed: {sw['failed']}")
    if out.get("pairs"):
        lines.append("H1/H0 per pair: " + ", ".join(
            f"{p['rps_x']:.0%} req/s, {p['p99_x']:.2f}x p99" for p in out["pairs"]
            if p["rps_x"] is not None and p["p99_x"] is not None) + ".")
    if out.get("failed"):
        lines.append(f"reload rows: {out['failed']}")
    if out.get("command"):
        lines.append(f"`{out['command']}`")
    return lines


def markdown(out: dict, cfg: dict) -> list[str]:
    head, rows = table(out)
    lines = ["", f"Model reload under load ({cfg['warmup']:g} s warm-up + {cfg['duration']:g} s "
             f"per run, H0 and H1 alternated in {len(out.get('pairs', []))} pair(s); rows: median "
             f"runs; ratios: median over the pairs of H1/H0{', --quick' if cfg['quick'] else ''}).",
             "", R.md_table(head, rows), ""]
    lines += [x + "  " for x in notes(out)]
    if out.get("targets"):
        lines += ["", "| target (issue 12) | measured | met |", "|---|---:|:---:|"]
        for t in out["targets"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['target']} | {t['value']} | {met} |")
    return lines


def print_text(out: dict) -> None:
    head, rows = table(out)
    log("\nmodel reload under load")
    log(R.text_table(head, rows))
    for x in notes(out):
        log(x)
    for t in out.get("targets", []):
        met = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        log(f"  {t['target']:<56} {str(t['value']):>12}  {met}")

