"""bench/batching.py: the batching rows of `make bench` (bench/run.py --only batching).

The same load against two onnxd processes serving repositories built under build/bench/ (model
files hard-linked from models/, copied if that fails), one with batching off, one with the
per-model dynamic batching settings of BATCH_ON below; onnxd's own counters (/metrics and
/v2/models/{m}/stats) read around each measured window. See bench/run.py's docstring for the
rows and the targets.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time

R = None  # bench/run.py's module, set by it before calling bench_batching

BATCH_ROWS = {
    "B1": dict(model="mobilenetv2", body="mobilenetv2.bin", conns=10, idle=0,
               check='"binary_data_size":4000', title="MobileNetV2 binary, 10 conn", need=0.95),
    "B2": dict(model="mobilenetv2", body="mobilenetv2.bin", conns=64, idle=0,
               check='"binary_data_size":4000', title="MobileNetV2 binary, 64 conn", need=0.95),
    "B3": dict(model="mlp16", body="mlp16.json", conns=64, idle=0, check='"data":[',
               title="MLP16 JSON, 64 conn", need=0.95),
    "B4": dict(model="mlp_medium", body="mlp_medium.json", conns=64, idle=0, check='"data":[',
               title="MLP medium JSON, 64 conn", need=2.0),
}
# Batching off: no merging; instance_count is left to its default (--infer-threads, 2).
BATCH_OFF = {"max_batch_size": 0}
# Batching on, per model (Triton's names; see src/infer/model_config.h), and why. The choices
# were tried in set-up runs (2 s warm-up + 6 s, machine otherwise idle, 2026-11-27): see BATCH_WHY.
BATCH_ON = {
    "mobilenetv2": {"max_batch_size": 2,
                    "dynamic_batching": {"max_queue_delay_microseconds": 100,
                                         "preferred_batch_size": [2]},
                    "instance_count": 2},
    "mlp16": {"max_batch_size": 32,
              "dynamic_batching": {"max_queue_delay_microseconds": 500,
                                   "preferred_batch_size": [32]},
              "instance_count": 1},
    "mlp_medium": {"max_batch_size": 32,
                   "dynamic_batching": {"max_queue_delay_microseconds": 300,
                                        "preferred_batch_size": [32]},
                   "instance_count": 1},
}
BATCH_WHY = {
    "mobilenetv2": "merging cannot add throughput: here a batch costs more per image than single "
                   "images (in-process, 1 thread: 4.8 ms an image at batch 1 and 2, 5.2-5.4 ms at "
                   "4, 5.4-5.7 ms at 8), and RSS grows with it. Set-up trials, on/off req/s: "
                   "max 8: B1 0.88x (RSS 263 vs 89 MB); max 4: B1 0.85-0.90x, B2 0.93-0.96x; "
                   "max 2: B1 0.96-1.00x, B2 0.96-1.00x, so 2. Two instances, one per core, "
                   "as without batching",
    "mlp16": "a run costs ~3 us whatever the batch, next to tens of us of HTTP and JSON per "
             "request, so merging saves only per-run overhead; up to 32 rows (half of the 64 "
             "connections), 500 us delay. Set-up trials: 1 instance 1.14x (200 us) and 1.22x "
             "(500 us), 2 instances 1.04-1.05x (200 us) and 1.17x (500 us), so 1 instance",
    "mlp_medium": "68 us a row at batch 1, 25 us at batch 8: merging pays; up to 32 rows (half of "
                  "the 64 connections: one batch runs while the next fills), 300 us delay. "
                  "Set-up trials: 1 instance 5.4-5.6x (mean batch 31.5), 2 instances 4.2x (mean "
                  "batch 21), so 1 instance",
}
BATCH_MODELS = ["mobilenetv2", "mlp16", "mlp_medium"]


HISTS = {"queue": "onnxd_queue_duration_us", "infer": "onnxd_compute_infer_duration_us",
         "request": "onnxd_request_duration_us"}


def server_counters(port: int, model: str) -> dict | None:
    """onnxd's own counters for one model: /metrics (inference and execution counts, the
    microsecond histograms of HISTS) and /v2/models/{model}/stats (batch_stats, per-stage
    count/ns). Cumulative since start: the caller takes differences."""
    samples, stats = R.metric_samples(port), R.http_get(port, f"/v2/models/{model}/stats")
    if samples is None or stats is None:
        return None
    out: dict = {"inference_count": 0, "exec_count": 0, "hist": {k: {} for k in HISTS}}
    for name, lab, v in samples:
        if lab.get("model") != model:
            continue
        if name == "nv_inference_count":
            out["inference_count"] += v
        elif name == "nv_inference_exec_count":
            out["exec_count"] += v
        else:
            for k, h in HISTS.items():
                if name == h + "_bucket":
                    le = math.inf if lab.get("le") == "+Inf" else float(lab.get("le", "inf"))
                    out["hist"][k][le] = out["hist"][k].get(le, 0) + v
    try:
        doc = json.loads(stats)
    except ValueError:
        return None
    bs: dict = {}
    stages: dict = {}
    for ms in doc.get("model_stats", []):
        for k, v in (ms.get("inference_stats") or {}).items():
            st = stages.setdefault(k, {"count": 0, "ns": 0})
            st["count"] += v.get("count", 0)
            st["ns"] += v.get("ns", 0)
        for b in ms.get("batch_stats") or []:
            ci = b.get("compute_infer") or {}
            e = bs.setdefault(int(b["batch_size"]), {"count": 0, "ns": 0})
            e["count"] += ci.get("count", 0)
            e["ns"] += ci.get("ns", 0)
    out["batch_stats"], out["stages"] = bs, stages
    return out


def _hist_pct(cum: dict, q: float) -> float | None:
    """Upper bound (us) of the bucket holding quantile q of a cumulative histogram."""
    if not cum:
        return None
    les = sorted(cum)
    total = cum[les[-1]]
    if total <= 0:
        return None
    for le in les:
        if cum[le] >= q * total:
            return le
    return les[-1]


def counters_delta(a: dict, b: dict) -> dict:
    """What happened between two server_counters snapshots, summarised."""
    d_inf = b["inference_count"] - a["inference_count"]
    d_exec = b["exec_count"] - a["exec_count"]
    bs = {}
    for size, e in b["batch_stats"].items():
        p = a["batch_stats"].get(size, {"count": 0, "ns": 0})
        c, ns = e["count"] - p["count"], e["ns"] - p["ns"]
        if c > 0:
            bs[size] = {"runs": c, "mean_ms": round(ns / c / 1e6, 4)}
    stages = {}
    for k, e in b["stages"].items():
        p = a["stages"].get(k, {"count": 0, "ns": 0})
        c = e["count"] - p["count"]
        stages[k] = {"count": c, "mean_ms": round((e["ns"] - p["ns"]) / c / 1e6, 4) if c else None}
    p99 = {}
    for k in HISTS:
        cum = {le: v - a["hist"][k].get(le, 0) for le, v in b["hist"][k].items()}
        us = _hist_pct(cum, 0.99)
        p99[k] = None if us is None else (us / 1000 if us != math.inf else "+Inf")
    return {"inferences": d_inf, "executions": d_exec,
            "mean_batch": round(d_inf / d_exec, 2) if d_exec else None,
            "batch_stats": dict(sorted(bs.items())), "stages": stages,
            "p99_le_ms": p99}


def make_batch_repos(models: list[str]) -> dict:
    """build/bench/repo-batch-off and repo-batch-on: the models' files hard-linked (copied
    across file systems) and a config.json each. Rebuilt on every run."""
    repos = {}
    for mode in ("off", "on"):
        d = R.WORK / f"repo-batch-{mode}"
        shutil.rmtree(d, ignore_errors=True)
        for m in models:
            src, dst = R.MODELS / m / "1" / "model.onnx", d / m / "1" / "model.onnx"
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
            cfg = BATCH_OFF if mode == "off" else BATCH_ON[m]
            (d / m / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
        repos[mode] = d
    return repos


def judge_batch_row(row: dict, spec: dict, eff: dict) -> None:
    """Throughput (on vs off) and p99 (on) targets of one row, from the runs and the counters.
    eff: the batch-on server's effective config of the row's model (GET .../config)."""
    on, off = row.get("on") or {}, row.get("off") or {}
    ok = lambda r: r and not r.get("failed") and r.get("rps")  # noqa: E731
    row["throughput_need"] = spec["need"]
    row["on_vs_off"] = R.ratio(on.get("rps"), off.get("rps")) if ok(on) and ok(off) else None
    row["throughput_met"] = (row["on_vs_off"] >= spec["need"]) if row["on_vs_off"] else None
    maxb = eff.get("max_batch_size") or 0
    delay_us = (eff.get("dynamic_batching") or {}).get("max_queue_delay_microseconds", 0)
    bs = (on.get("server") or {}).get("batch_stats") or {}
    row["p99_bound_ms"] = row["full_batch"] = row["p99_met"] = None
    if ok(on) and bs:
        size = maxb if maxb in bs else max(bs)
        t = bs[size]["mean_ms"]
        row["full_batch"] = {"rows": size, "run_ms": t, "runs": bs[size]["runs"],
                             "is_max_batch_size": size == maxb}
        row["p99_bound_ms"] = round(delay_us / 1000 + 2 * t, 3)
        if on.get("p99_ms") is not None:
            row["p99_met"] = on["p99_ms"] <= row["p99_bound_ms"]
    row["max_queue_delay_us"], row["max_batch_size"] = delay_us, maxb


def run_batch_row(srv: R.Server, r: str, spec: dict, headers: dict, cfg: dict, mode: str) -> dict:
    model = spec["model"]
    before = server_counters(srv.port, model)
    mid: dict = {}

    def snap():
        mid["c"] = server_counters(srv.port, model)

    res = R.run_scenario(srv, r, headers, cfg["warmup"], cfg["duration"], 0, spec=spec,
                       at_measure=snap)
    after = server_counters(srv.port, model)
    start = mid.get("c") or before
    if start and after:
        res["server"] = counters_delta(start, after)
        res["server"]["window"] = "measured window" if mid.get("c") else "warm-up + measured"
    else:
        res["server"] = {"failed": "could not read /metrics or /stats"}
    sv = res["server"]
    if res.get("failed"):
        R.log(f"[batching {mode}] {r} {spec['title']}: FAILED: {res['failed']}")
    else:
        R.log(f"[batching {mode}] {r} {spec['title']}: {res['rps']:.1f} req/s, p50 "
            f"{R.fmt_ms(res.get('p50_ms'))} ms, p99 {R.fmt_ms(res.get('p99_ms'))} ms, mean batch "
            f"{sv.get('mean_batch', '-')}, runs by batch size "
            + ", ".join(f"{k}:{v['runs']}" for k, v in list((sv.get('batch_stats') or {}).items())[-4:])
            + f"; CPU cores: server {res.get('server_cpu_cores', '-')}, onnxd-bench "
            f"{res.get('loadgen_cpu_cores', '-')}, others {res.get('other_cpu_cores', '-')}")
    return res


def bench_batching(cfg: dict, headers: dict, quick: bool) -> dict:
    """The batching rows: two onnxd processes (batching off, on) serving repositories under
    build/bench/, both up for the whole section, each row run against off then on."""
    rows = cfg["batch_rows"]
    models = [m for m in BATCH_MODELS if m == "mlp16" or any(BATCH_ROWS[r]["model"] == m
                                                             for r in rows)]
    repos = make_batch_repos(models)  # mlp16 always: the start-up probe infers on it
    out: dict = {"rows": {}, "servers": {}, "settings": {
        "off": BATCH_OFF, "on": {m: BATCH_ON[m] for m in models},
        "why": {m: BATCH_WHY[m] for m in models},
        "repositories": {k: os.path.relpath(v, R.ROOT) for k, v in repos.items()}}}
    servers: dict[str, R.Server] = {}
    try:
        for mode in ("off", "on"):
            srv = R.Server("onnxd", quick, repo=repos[mode], label=f"onnxd-batch-{mode}")
            rec = out["servers"][mode] = {"command": R.printable(srv.cmd, srv.env)}
            R.log(f"[batching {mode}] start: {rec['command']}")
            servers[mode] = srv
            try:
                rec["cold_start_s"] = round(srv.start(), 3)
            except RuntimeError as e:
                rec["failed"] = f"failed to start: {e}"
                R.log(f"[batching {mode}] FAILED to start: {e}")
                continue
            rec["effective_config"] = {}
            for m in models:
                body = R.http_get(srv.port, f"/v2/models/{m}/config")
                try:
                    rec["effective_config"][m] = json.loads(body) if body else {}
                except ValueError:
                    rec["effective_config"][m] = {}
                want = BATCH_OFF if mode == "off" else BATCH_ON[m]
                got = rec["effective_config"][m]
                if got.get("max_batch_size") != want["max_batch_size"]:
                    R.log(f"[batching {mode}] WARNING: {m} runs with max_batch_size "
                        f"{got.get('max_batch_size')}, config.json says {want['max_batch_size']}")
        time.sleep(1.5 if quick else 3.0)
        for r in rows:
            spec = BATCH_ROWS[r]
            row = out["rows"][r] = {"title": spec["title"], "model": spec["model"],
                                    "body": spec["body"], "connections": spec["conns"]}
            for mode in ("off", "on"):
                srv = servers.get(mode)
                if out["servers"][mode].get("failed"):
                    row[mode] = {"failed": "server did not start"}
                elif not srv.alive():
                    row[mode] = {"failed": f"server not running (exited with status "
                                           f"{srv.proc.returncode})"}
                else:
                    row[mode] = run_batch_row(srv, r, spec, headers, cfg, mode)
                    time.sleep(0.5)
            eff = out["servers"]["on"].get("effective_config", {}).get(spec["model"], {})
            judge_batch_row(row, spec, eff)
    finally:
        for mode, srv in servers.items():
            out["servers"][mode]["stop"] = srv.stop()
            R.log(f"[batching {mode}] stopped: {out['servers'][mode]['stop']}")
    return out


def batch_rows_table(b: dict) -> tuple[list[str], list[list[str]]]:
    head = ["workload", "batching", "req/s", "on/off", "p50 ms", "p99 ms", "mean batch",
            "full batch run ms", "p99 bound ms", "throughput", "p99 <= bound", "peak RSS MB",
            "CPU s/1k req"]
    rows = []
    pf = lambda v: "-" if v is None else ("PASS" if v else "MISS")  # noqa: E731
    for r, row in b.get("rows", {}).items():
        for mode in ("off", "on"):
            x = row.get(mode) or {}
            label = f"{r} {row['title']}" if mode == "off" else ""
            if x.get("failed") and not x.get("rps"):
                rows.append([label, mode, "FAILED: " + x["failed"][:80]] + [""] * 10)
                continue
            sv = x.get("server") or {}
            mark = (" (!)" if x.get("failed") else "") + \
                (" †" if (x.get("other_cpu_cores") or 0) > R.NOISY else "")
            cells = [label, mode, R.fmt_rps(x.get("rps")) + mark, "", R.fmt_ms(x.get("p50_ms")),
                     R.fmt_ms(x.get("p99_ms")),
                     f"{sv['mean_batch']:.2f}" if sv.get("mean_batch") else "-", "", "", "", ""]
            if mode == "on":
                fb = row.get("full_batch")
                need = row["throughput_need"]
                cells[3] = R.fmt_x(row.get("on_vs_off"))
                cells[7] = (f"{R.fmt_ms(fb['run_ms'])} ({fb['rows']}"
                            f"{'' if fb['is_max_batch_size'] else '*'})") if fb else "-"
                cells[8] = R.fmt_ms(row.get("p99_bound_ms"))
                cells[9] = f"{pf(row.get('throughput_met'))} (>= {need:g}x)"
                cells[10] = pf(row.get("p99_met"))
            cells += [f"{x['peak_rss_mb']:.0f}" if x.get("peak_rss_mb") else "-",
                      f"{x['cpu_s_per_1k']:.3f}" if x.get("cpu_s_per_1k") is not None else "-"]
            rows.append(cells)
    return head, rows


def batch_notes(b: dict) -> list[str]:
    st = b.get("settings", {})
    out = ["B1, B2 send MobileNetV2's input as a binary tensor (the binary extension), not JSON, "
           "so that the batcher, not JSON parsing, is what is measured; B3 (16 floats) and B4 "
           f"(256 floats) send JSON. Closed loop, one onnxd-bench thread, on the same {R.CORES} "
           "cores; both onnxd processes are up for the whole section, each row runs against "
           "off, then on.",
           "Batching off: config.json " + json.dumps(st.get("off", BATCH_OFF)) + " for every "
           "model (instance_count: the default, --infer-threads = 2). Batching on:"]
    for m, c in st.get("on", {}).items():
        out.append(f"- {m}: {json.dumps(c, separators=(', ', ': '))}: {st.get('why', {}).get(m, '')}.")
    out += ["mean batch: rows / model runs (Δ nv_inference_count / Δ nv_inference_exec_count from "
            "/metrics) over the measured window. full batch run: mean model run time "
            "(compute_infer) of the runs at max_batch_size, rows in brackets, from "
            "/v2/models/{m}/stats batch_stats over the same window (* when no run reached "
            "max_batch_size: the largest batch that ran). p99 bound = max_queue_delay + 2 x full "
            "batch run; p99 is the client's (onnxd-bench). Targets (issue): B4 on >= 2x off "
            "req/s, every other row >= 0.95x; p99 <= bound."]
    for r, row in b.get("rows", {}).items():
        on, off = row.get("on") or {}, row.get("off") or {}
        if row.get("p99_met") is False:
            p = (on.get("server") or {}).get("p99_le_ms") or {}
            le = lambda v: "?" if v is None else ("> 30 s" if v == "+Inf" else  # noqa: E731
                                                 f"<= {R.fmt_ms(v)} ms")
            little = row["connections"] / on["rps"] * 1000 if on.get("rps") else None
            out.append(f"{r} p99 MISS: {R.fmt_ms(on.get('p99_ms'))} ms against a bound of "
                       f"{R.fmt_ms(row.get('p99_bound_ms'))} ms. Inside onnxd (histogram buckets, "
                       f"p99): batch queue {le(p.get('queue'))}, model run {le(p.get('infer'))}, "
                       f"receipt to response {le(p.get('request'))}. With {row['connections']} "
                       f"closed-loop connections the mean latency is connections / throughput = "
                       f"{R.fmt_ms(little)} ms whatever the scheduling (batching off: p99 "
                       f"{R.fmt_ms(off.get('p99_ms'))} ms): each request waits behind the other "
                       f"connections' requests, in the batch queue (above), for a worker to "
                       f"parse it, in the socket and in the load generator, none of which the "
                       f"bound counts.")
    noisy = [f"{r} {m} {row[m]['other_cpu_cores']:.2f}" for r, row in b.get("rows", {}).items()
             for m in ("off", "on") if (row.get(m) or {}).get("other_cpu_cores", 0) > R.NOISY]
    if noisy:
        out.append("† other processes on the machine used CPU during the measurement (cores): "
                   + ", ".join(noisy) + ".")
    for r, row in b.get("rows", {}).items():
        for m in ("off", "on"):
            x = row.get(m) or {}
            if x.get("failed") and x.get("rps"):
                out.append(f"(!) {r} {m}: {x['failed']}")
    out.append("The server comparison's onnxd rows (S1-S4) serve models/ without config.json, "
               "where the default is merging with no delay (max_batch_size 32, delay 0: batches "
               "form only from requests queued behind busy instances).")
    return out


def batch_markdown(results: dict) -> list[str]:
    b = results.get("batching")
    if not b:
        return []
    cfg = results["config"]
    head, rows = batch_rows_table(b)
    return ["", f"Batching: onnxd with dynamic batching off and on, same load ({cfg['warmup']:g} s "
            f"warm-up + {cfg['duration']:g} s per row, one run each"
            f"{', --quick' if cfg['quick'] else ''}).", "", R.md_table(head, rows), "",
            *[y for x in batch_notes(b) for y in (x, "")]][:-1]
