"""bench/fraud.py: the fraud-scoring rows of `make bench` (bench/run.py --only fraud).

End-to-end scoring of one transaction per request, 64 connections, features looked up per
request, onnxd against the Python peer doing the same lookups against Redis:

  V1  onnxd, velocity features (model "fraud") from stored events, hot in L1
  V2  onnxd, velocity features from L2 only (LMDB; --feature-l1-bytes 0)
  R1  onnxd, feature rows (model "fraud_rows") read through from Redis, hot in L1
  R2  onnxd, feature rows from L2 only (the copies of Redis rows L2 keeps; L1 off)
  R3  onnxd, feature rows from Redis on every request (L1 off, --feature-l3-cache-ms 0)
  P3  bench/peers/python-fraud: FastAPI + redis.asyncio (one MGET a request) + ONNX Runtime
  F1-F3  the feature store replicated through a Redis Stream, 3 replicas (bench/fstream.py,
      run after the rows above): ingest events/s, replication delay, V1 while applying

Data: tools/fraud/generate.py's stream (--quick: 50k events, else 200k); every event is
ingested into onnxd's store by POST /v1/events (the ingest rate is reported). T = the last
event's ts + 1 s; the rows in Redis ("fv_user:<id>", "fv_card:<id>", 8 float32 each) are the
offline velocity features (tools/fraud/features.py) of every user and card at T, so all rows
score the same transactions with the same 17 numbers. The requests (8,192 of them, one JSON
body a line, cycled by every connection) take (user, card, amount) from random events of the
stream; the velocity rows pass ts = T.

Each row reads onnxd's /metrics before and after its measured window: lookups per tier and
result, degraded answers. A row is only valid if its features came from the tier it names
(hits there >= 2 per request, misses/errors/timeouts 0) and nothing was degraded; the report
says so per row.

Before the rows, build/onnxd-feature-bench measures each tier's lookup in-process (L1, Bloom,
L2 and, with the Redis started here, Redis GET).

Targets (issue 5): whole scoring request p99 <= 2 ms at 64 clients; >= 10x the Python peer's
throughput; L1 hit p99 <= 1 us, Bloom check <= 100 ns, L2 hit p99 <= 20 us (in-process).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import fstream

R = None  # bench/run.py's module, set by it before calling bench_fraud

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "fraud"))
sys.path.insert(0, str(ROOT / "tests"))

N_BODIES = 8192
CONNS = 64
ROWS = {
    "V1": {"title": "velocity features, hot in L1", "server": "l1", "model": "fraud",
           "tier": "l1", "body": "fraud-velocity.jsonl"},
    "V2": {"title": "velocity features, L2 only", "server": "l2", "model": "fraud",
           "tier": "l2", "body": "fraud-velocity.jsonl"},
    "R1": {"title": "Redis rows, hot in L1", "server": "l1", "model": "fraud_rows",
           "tier": "l1", "body": "fraud-rows.jsonl"},
    "R2": {"title": "Redis rows, L2 copies only", "server": "l2", "model": "fraud_rows",
           "tier": "l2", "body": "fraud-rows.jsonl"},
    "R3": {"title": "Redis rows, Redis every request", "server": "l3", "model": "fraud_rows",
           "tier": "l3", "body": "fraud-rows.jsonl"},
    "P3": {"title": "python peer, Redis every request", "server": "python", "model": "fraud_rows",
           "tier": None, "body": "fraud-rows.jsonl"},
}
ROW_VIEW = {"input": "features",
            "columns": [{"raw": "amount"},
                        {"row": "user_id", "table": "fv_user", "width": 8, "default": 0.0},
                        {"row": "card_id", "table": "fv_card", "width": 8, "default": 0.0}],
            "mandatory": False, "deadline_us": 20000}
ROWS.update(fstream.ROWS)  # F1-F3: run by fstream.bench_stream, not by the loop below
TARGET_P99_MS = 2.0
TARGET_X_PYTHON = 10.0


def log(msg: str) -> None:
    R.log(msg)


# ---------------------------------------------------------------- data

def make_data(work: Path, events: int) -> dict:
    """Stream, per-entity rows at T, request bodies. Returns what the rows need."""
    import features as offline
    import generate

    t0 = time.monotonic()
    stream = generate.generate(events, 7)
    evs = stream.events()
    T = int(evs[-1]["ts"]) + 1000
    state = offline.OnlineFeatures()
    for e in evs:
        state.add(e)
    rows = {}
    for table, prefix in ((state.users, "fv_user:"), (state.cards, "fv_card:")):
        for key, st in table.items():
            rows[prefix + key] = np.array(st.features(T), np.float32).astype("<f4").tobytes()
    rng = np.random.default_rng(20261127)
    picks = rng.integers(0, len(evs), N_BODIES)
    with open(work / "fraud-velocity.jsonl", "w") as fv, open(work / "fraud-rows.jsonl", "w") as fr:
        for i in picks:
            e = evs[int(i)]
            inputs = [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [e["amount"]]}]
            p = {"user_id": e["user_id"], "card_id": e["card_id"]}
            fr.write(json.dumps({"inputs": inputs, "parameters": p}, separators=(",", ":")) + "\n")
            p["ts"] = T
            fv.write(json.dumps({"inputs": inputs, "parameters": p}, separators=(",", ":")) + "\n")
    lines = [json.dumps(e, separators=(",", ":")) for e in evs]
    log(f"[fraud] data: {len(evs):,} events, {len(state.users):,} users, {len(state.cards):,} "
        f"cards, {len(rows):,} rows, {N_BODIES:,} request bodies "
        f"({time.monotonic() - t0:.1f} s)")
    return {"events": lines, "rows": rows, "T": T, "users": len(state.users),
            "cards": len(state.cards)}


def make_repo(work: Path) -> Path:
    """fraud (velocity view, tools/fraud/config.json), fraud_rows (the same model, ROW_VIEW),
    mlp16 (the start-up probe); model files hard-linked from models/."""
    repo = work / "fraud-repo"
    shutil.rmtree(repo, ignore_errors=True)
    for name, src, cfg in (("fraud", "fraud", json.loads((ROOT / "tools/fraud/config.json")
                                                         .read_text())),
                           ("fraud_rows", "fraud", {"feature_view": ROW_VIEW}),
                           ("mlp16", "mlp16", None)):
        (repo / name / "1").mkdir(parents=True)
        dst, s = repo / name / "1" / "model.onnx", R.MODELS / src / "1" / "model.onnx"
        try:
            os.link(s, dst)
        except OSError:
            shutil.copyfile(s, dst)
        if cfg is not None:
            (repo / name / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    return repo


def load_redis(port: int, rows: dict) -> None:
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    pipe = r.pipeline(transaction=False)
    for k, v in rows.items():
        pipe.set(k, v)
    pipe.execute()
    r.close()


def ingest(port: int, lines: list[str], batch: int = 10000) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.monotonic()
    try:
        for i in range(0, len(lines), batch):
            body = ("\n".join(lines[i:i + batch]) + "\n").encode()
            c.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
            resp = c.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"POST /v1/events: {resp.status} {data[:200]!r}")
    finally:
        c.close()
    dt = time.monotonic() - t0
    return {"events": len(lines), "seconds": round(dt, 2), "events_per_s": round(len(lines) / dt)}


# ---------------------------------------------------------------- counters

def tier_counters(port: int) -> dict | None:
    samples = R.metric_samples(port)
    if samples is None:
        return None
    out: dict = {}
    for name, labels, val in samples:
        if name == "onnxd_feature_lookups_total":
            out[f"{labels.get('tier')}_{labels.get('result')}"] = val
        elif name in ("onnxd_feature_degraded_total", "onnxd_feature_l3_stale_total"):
            out[name.replace("onnxd_feature_", "")] = val
    return out


def judge(row: dict, spec: dict) -> None:
    """Where the features came from, and whether the row measured what it says."""
    if row.get("failed") or not spec["tier"]:
        return
    a, b, n = row.pop("_before", None), row.pop("_after", None), row.get("requests") or 0
    if not a or not b or not n:
        row["valid"] = False
        row["why_invalid"] = "no /metrics around the measured window"
        return
    d = {k: b.get(k, 0) - a.get(k, 0) for k in b}
    row["tier_lookups"] = {k: int(v) for k, v in d.items() if v}
    # the counters also hold the warm-up's tail and requests in flight at either end: compare
    # per request, loosely; a tier the row names must answer (nearly) every lookup
    hits = d.get(f"{spec['tier']}_hit", 0)
    misses = d.get(f"{spec['tier']}_miss", 0)
    bad = {k: v for k, v in d.items()
           if v and (k.endswith(("_error", "_timeout")) or k == "degraded_total"
                     or k == "l3_stale_total")}
    if misses > 0.001 * hits:
        bad[f"{spec['tier']}_miss"] = misses
    row["hits_per_request"] = round(hits / n, 2)
    row["valid"] = hits >= 1.9 * n and not bad
    if not row["valid"]:
        row["why_invalid"] = (f"{spec['tier']} hits {hits:.0f} for {n} requests"
                              + (f"; {bad}" if bad else ""))


# ---------------------------------------------------------------- the section

def feature_bench(redis_port: int, quick: bool) -> dict:
    """build/onnxd-feature-bench: L1, Bloom, L2, and the Redis started here and a PostgreSQL
    started for it (tests/services.py; skipped, with the reason, if it cannot start)."""
    import services

    out_json = R.WORK / "feature-bench.json"
    out_json.unlink(missing_ok=True)
    cmd = [str(R.BUILD / "onnxd-feature-bench"), "--json", str(out_json),
           "--redis", f"127.0.0.1:{redis_port}"]
    if quick:
        cmd += ["--gets", "300000", "--l2-gets", "50000", "--scans", "5000", "--l3-gets", "5000"]
    res: dict = {}
    pg = services.Postgres()
    try:
        pg.start()
        cmd += ["--postgres", pg.conninfo]
    except (RuntimeError, OSError) as e:
        pg.stop()
        pg = None
        res["postgres_skipped"] = str(e)[:300]
        log(f"[fraud] PostgreSQL not measured: {res['postgres_skipped']}")
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        if pg:
            pg.stop()
    res.update({"command": R.shown(cmd), "exit": r.returncode})
    try:
        res.update(json.loads(out_json.read_text()))
    except (OSError, ValueError) as e:
        res["failed"] = f"no result (exit {r.returncode}): {(r.stderr or '').strip()[-300:] or e}"
    for line in (r.stdout or "").splitlines():
        log(f"[fraud] {line}")
    return res


def bench_fraud(cfg: dict, quick: bool) -> dict:
    import services

    work = R.WORK / "fraud"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows_wanted = cfg.get("fraud_rows") or list(ROWS)
    out: dict = {"rows": {}, "servers": {}, "connections": CONNS, "bodies": N_BODIES}
    data = make_data(work, 50_000 if quick else 200_000)
    out["data"] = {k: data[k] for k in ("T", "users", "cards")}
    out["data"]["events"] = len(data["events"])
    out["data"]["rows"] = len(data["rows"])
    repo = make_repo(work)
    for name in ("fraud-velocity.jsonl", "fraud-rows.jsonl"):
        shutil.copyfile(work / name, R.WORK / name)
    headers = {n: ["Content-Type: application/json"]
               for n in ("fraud-velocity.jsonl", "fraud-rows.jsonl")}
    probe = ("fraud_rows", (work / "fraud-rows.jsonl").read_bytes().split(b"\n", 1)[0])

    rd = services.Redis(work / "redis")
    (work / "redis").mkdir()
    rd.start()
    try:
        load_redis(rd.port, data["rows"])
        out["feature_bench"] = feature_bench(rd.port, quick)
        store = work / "store"
        redis_flag = ["--redis", f"127.0.0.1:{rd.port}"]
        servers = {
            "l1": ("onnxd", ["--feature-dir", str(store)] + redis_flag, None),
            "l2": ("onnxd", ["--feature-dir", str(store), "--feature-l1-bytes", "0"] + redis_flag,
                   None),
            "l3": ("onnxd", ["--feature-dir", str(store), "--feature-l1-bytes", "0",
                             "--feature-l3-cache-ms", "0"] + redis_flag, None),
            "python": ("python-fraud", [], {
                "PEER_FRAUD_MODEL": str(R.MODELS / "fraud" / "1" / "model.onnx"),
                "PEER_REDIS": f"127.0.0.1:{rd.port}", "PEER_MODEL_NAME": "fraud_rows"}),
        }
        # servers in this order: l1 ingests the events (and, by reading every row once, leaves
        # L2 the copies that l2 then reads)
        for skey in ("l1", "l2", "l3", "python"):
            todo = [r for r in rows_wanted if ROWS[r]["server"] == skey]
            # l1 also prepares the store for l2: events ingested, every Redis row read once
            # (L2 keeps the copies l2 then reads)
            feeds_l2 = skey == "l1" and any(ROWS[r]["server"] == "l2" for r in rows_wanted)
            if not todo and not feeds_l2:
                continue
            name, extra, env_add = servers[skey]
            srv = R.Server(name, quick, repo=repo, label=f"{name}-fraud-{skey}", extra=extra,
                           env_add=env_add, probe_with=probe)
            rec = out["servers"][skey] = {"command": R.printable(srv.cmd, srv.env)}
            log(f"[fraud {skey}] start: {rec['command']}")
            try:
                try:
                    rec["cold_start_s"] = round(srv.start(), 3)
                except RuntimeError as e:
                    rec["failed"] = f"failed to start: {e}"
                    log(f"[fraud {skey}] FAILED to start: {e}")
                    for r in todo:
                        out["rows"][r] = {"title": ROWS[r]["title"], "failed": rec["failed"]}
                    continue
                if skey == "l1":
                    rec["ingest"] = ingest(srv.port, data["events"])
                    log(f"[fraud l1] ingested {rec['ingest']['events']:,} events in "
                        f"{rec['ingest']['seconds']} s ({rec['ingest']['events_per_s']:,}/s)")
                    if feeds_l2 and "R1" not in todo:
                        read_every_row(srv, headers)
                for r in todo:
                    out["rows"][r] = run_row(srv, r, headers, cfg)
                    time.sleep(0.5)
            finally:
                rec["stop"] = srv.stop()
                log(f"[fraud {skey}] stopped: {rec['stop']}")
    finally:
        rd.stop()
    fstream.R = R
    fstream.bench_stream(out, data, repo, work, probe, headers, cfg, quick,
                         [r for r in rows_wanted if r in fstream.ROWS])
    summarise(out)
    return out


def read_every_row(srv, headers: dict) -> None:
    """Scores every request body for 2 s through srv, so that L2 keeps a copy of each Redis row
    they name (for the l2 server)."""
    spec = {"model": "fraud_rows", "body": "fraud-rows.jsonl", "conns": CONNS,
            "check": "fraud_probability", "idle": 0, "lines": True}
    R.run_scenario(srv, "prepare", headers, 0, 2.0, 0, spec=spec)


def run_row(srv, r: str, headers: dict, cfg: dict) -> dict:
    spec = ROWS[r]
    sc = {"model": spec["model"], "body": spec["body"], "conns": CONNS,
          "check": "fraud_probability", "idle": 0, "lines": True}
    box: dict = {}
    if spec["tier"]:
        def at_measure():
            box["before"] = tier_counters(srv.port)
    else:
        at_measure = None
    res = R.run_scenario(srv, r, headers, cfg["warmup"], cfg["duration"], 0, spec=sc,
                         at_measure=at_measure)
    res["title"] = spec["title"]
    if spec["tier"]:
        res["_before"], res["_after"] = box.get("before"), tier_counters(srv.port)
    judge(res, spec)
    res.pop("loadgen", None)
    if res.get("failed"):
        log(f"[fraud] {r} {spec['title']}: FAILED: {res['failed']}")
    else:
        log(f"[fraud] {r} {spec['title']}: {R.fmt_rps(res.get('rps'))} req/s, p50 "
            f"{R.fmt_ms(res.get('p50_ms'))} ms, p99 {R.fmt_ms(res.get('p99_ms'))} ms"
            + (f", {res.get('hits_per_request')} {spec['tier']} hits/request"
               + ("" if res.get("valid") else f" (INVALID: {res.get('why_invalid')})")
               if spec["tier"] else ""))
    return res


def summarise(out: dict) -> None:
    py = out["rows"].get("P3", {})
    py_rps = None if py.get("failed") else py.get("rps")
    out["targets"] = []
    for r, row in out["rows"].items():
        if r == "P3" or row.get("failed") or r in fstream.ROWS:
            continue
        row["x_python"] = round(row["rps"] / py_rps, 2) if py_rps and row.get("rps") else None
        p99 = row.get("p99_ms")
        out["targets"].append({"row": r, "target": f"{r} p99 <= {TARGET_P99_MS:g} ms",
                               "value": None if p99 is None else f"{p99:.2f} ms",
                               "met": p99 is not None and p99 <= TARGET_P99_MS})
        out["targets"].append({"row": r, "target": f"{r} >= {TARGET_X_PYTHON:g}x python peer",
                               "value": None if row["x_python"] is None
                               else f"{row['x_python']:.1f}x",
                               "met": None if row["x_python"] is None
                               else row["x_python"] >= TARGET_X_PYTHON})
    fb = out.get("feature_bench") or {}
    inproc = [("L1 hit p99 <= 1 us", (fb.get("l1", {}).get("get_1_thread") or {}).get("p99_ns"),
               1000, "ns"),
              ("Bloom check <= 100 ns", (fb.get("bloom") or {}).get("check_present_ns"), 100,
               "ns"),
              ("L2 hit p99 <= 20 us", (fb.get("l2", {}).get("row_get") or {}).get("p99_us"), 20,
               "us")]
    for name, v, lim, unit in inproc:
        out["targets"].append({"row": "in-process", "target": name,
                               "value": None if v is None else f"{v:g} {unit}",
                               "met": None if v is None else v <= lim})


# ---------------------------------------------------------------- report

def table(out: dict) -> tuple[list[str], list[list[str]]]:
    head = ["row", "what", "req/s", "p50 ms", "p99 ms", "x python", "features from",
            "server CPU s/1k req"]
    rows = []
    for r, row in out["rows"].items():
        spec = ROWS[r]
        if r in fstream.ROWS:
            rows.append(fstream.table_row(r, row))
            continue
        if row.get("failed"):
            rows.append([r, spec["title"], "failed", "", "", "", "", ""])
            continue
        src = ""
        if spec["tier"]:
            src = f"{row.get('hits_per_request', 0):g} {spec['tier'].upper()} hits/req"
            if not row.get("valid"):
                src += " (INVALID)"
        else:
            src = "Redis MGET/req"
        rows.append([r, spec["title"], R.fmt_rps(row.get("rps")), R.fmt_ms(row.get("p50_ms")),
                     R.fmt_ms(row.get("p99_ms")), R.fmt_x(row.get("x_python")), src,
                     f"{row['cpu_s_per_1k']:.3f}" if row.get("cpu_s_per_1k") else ""])
    return head, rows


def inprocess_lines(out: dict) -> list[str]:
    fb = out.get("feature_bench") or {}
    if fb.get("failed") or not fb:
        return [f"In-process tier latency: {fb.get('failed', 'not measured')}"]
    l1, bl, l2, l3 = fb.get("l1", {}), fb.get("bloom", {}), fb.get("l2", {}), fb.get("l3", {})
    g1 = l1.get("get_1_thread", {})
    parts = [f"L1 get p50 {g1.get('p50_ns', 0):g} ns, p99 {g1.get('p99_ns', 0):g} ns",
             f"Bloom check {bl.get('check_present_ns', 0):g} ns (present), "
             f"{bl.get('check_absent_ns', 0):g} ns (absent)",
             f"L2 row get p50 {l2.get('row_get', {}).get('p50_us', 0):g} us, p99 "
             f"{l2.get('row_get', {}).get('p99_us', 0):g} us",
             f"L2 24 h event scan + velocity p50 "
             f"{l2.get('scan_24h_velocity', {}).get('p50_us', 0):g} us, p99 "
             f"{l2.get('scan_24h_velocity', {}).get('p99_us', 0):g} us"]
    for k, name in (("redis_get", "Redis GET"), ("postgres_get", "PostgreSQL GET")):
        if k in l3:
            parts.append(f"{name} p50 {l3[k].get('p50_us', 0):g} us, p99 "
                         f"{l3[k].get('p99_us', 0):g} us")
    return [f"In-process tier latency (`{fb.get('command', '')}`): " + "; ".join(parts) + "."]


def notes(out: dict) -> list[str]:
    d = out.get("data", {})
    lines = [f"Data: {d.get('events', 0):,} events of tools/fraud/generate.py ({d.get('users', 0):,}"
             f" users, {d.get('cards', 0):,} cards), {d.get('rows', 0):,} feature rows in Redis; "
             f"{out.get('bodies', 0):,} request bodies cycled over {out.get('connections')} "
             f"connections."]
    ing = out.get("servers", {}).get("l1", {}).get("ingest")
    if ing:
        lines.append(f"Ingest (POST /v1/events, 10,000 lines a request, one client): "
                     f"{ing['events_per_s']:,} events/s.")
    lines += inprocess_lines(out)
    for s in out.get("servers", {}).values():
        if s.get("command"):
            lines.append(f"`{s['command']}`")
    return lines + fstream.notes(out)


def markdown(out: dict, cfg: dict) -> list[str]:
    head, rows = table(out)
    lines = ["", f"Fraud scoring with features ({cfg['warmup']:g} s warm-up + {cfg['duration']:g}"
             f" s per row, {CONNS} connections, one run each"
             f"{', --quick' if cfg['quick'] else ''}).", "", R.md_table(head, rows), ""]
    lines += [y for x in notes(out) for y in (x + "  ",)]
    if out.get("targets"):
        lines += ["", "| target (issue 5) | measured | met |", "|---|---:|:---:|"]
        for t in out["targets"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['target']} | {t['value']} | {met} |")
    return lines


def print_text(out: dict) -> None:
    head, rows = table(out)
    log("\nfraud scoring with features")
    log(R.text_table(head, rows))
    for x in notes(out):
        log(x)
    for t in out.get("targets", []):
        met = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        log(f"  {t['target']:<42} {str(t['value']):>20}  {met}")
