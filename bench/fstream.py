"""bench/fstream.py: the stream-replication rows of the fraud bench (F1-F3), run by
bench/fraud.py's bench_fraud after its own rows, in the same run as V1.

The feature store replicated through a Redis Stream (--feature-events-stream KEY): one Redis
(tests/services.py's Redis, no persistence: --save "" --appendonly no, for speed) and REPLICAS
onnxd processes serving fraud.py's repository, each with a --feature-dir of its own and
--feature-sync nometa (what docs/fraud.md recommends with the stream: one fsync a commit;
ONNXD_BENCH_STREAM_SYNC=data measures onnxd's default; the applier commits every entry of a
read, up to 128, in one transaction), all with --feature-events-stream KEY --redis 127.0.0.1:PORT. POST
/v1/events on a replica appends one stream entry per request and answers once that replica's
applier has applied it; every replica applies every entry.

  F1  ingest through the stream: make_data's events (the JSON lines fraud.py ingests), BATCH
      lines a request, round-robin over the replicas (request k to replica k mod 3) from CLIENTS
      client threads (keep-alive), as fast as they are answered. events/s = events acknowledged
      with 200 / the time until every replica's applied_id (GET /v1/features/stream, polled) is
      the last acknowledged stream_id. The time until the last answer (the posting replicas
      applied what they were posted) is given too, and for comparison: the same requests to one
      onnxd without the stream (started before the replicas), and the same events posted again
      to the replicas in requests of BIG_BATCH (fraud.py's single-node ingest size).
  F2  replication delay at half F1's events/s: the same requests (make_data's events again, from
      the first; they have no event_id, so they are stored again), paced at F1/2 events/s,
      round-robin, from the same CLIENTS threads (so never more requests in flight than F1
      had: when every thread waits for an answer the sends go late, and the achieved rate is
      reported next to the target), for 10 s (5 s --quick). Each replica's
      onnxd_feature_stream_apply_delay_seconds histogram (the entry ID's ms, Redis's clock, to
      the local apply: 1 ms resolution) is read before and after (once everything posted is
      applied everywhere), and p50/p99 of the difference are interpolated within its buckets
      (1, 1.5, 2, 3, 5, 7 per decade), per replica and over all three;
      onnxd_feature_stream_lag_seconds is sampled every 100 ms meanwhile (its max).
  F3  fraud scoring while applying: V1's load (model "fraud", velocity features, 64
      connections, the same bodies, onnxd-bench through R.run_scenario) against replica 0 while
      ingestion at F2's rate goes on over all three (a background thread); req/s against V1's of
      the same run. The tier counters around the measured window give the L1 hit ratio
      (ingestion invalidates the L1 entries of the entities it touches, so this row reports the
      ratio instead of requiring L1 hits as V1 does).

F2 and F3 need F1's rate: F1 runs whenever one of them is asked for.

Everything shares the machine's cores (2 here): the replicas, Redis, the Python posting clients
and, in F3, onnxd-bench. The rows measure what one box does with all of them at once, not what
a replica on its own machine would do.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import threading
import time
import traceback

R = None  # bench/run.py's module, set by bench/fraud.py

KEY = "onnxd:bench:events"
REPLICAS = 3
BATCH = 500  # events a request (fraud.py's single-node ingest: 10,000; see notes())
BIG_BATCH = 10_000  # F1 also posts the events again in requests of fraud.py's ingest size
CLIENTS = 6  # posting threads, F1
# posting threads, F2 and F3: the same client as F1, so at most as many requests in flight as
# F1 had; a send that finds every thread waiting for an answer goes late (reported)
PACED_CLIENTS = CLIENTS
SYNC = os.environ.get("ONNXD_BENCH_STREAM_SYNC", "nometa")  # --feature-sync of the replicas
POLL_S = 0.005  # GET /v1/features/stream polling while waiting for every replica to apply
LAG_SAMPLE_S = 0.1
ROWS = {
    "F1": {"title": "stream ingest, 3 replicas: events/s until all applied", "server": "stream",
           "model": None, "tier": None, "body": None},
    "F2": {"title": "stream at F1/2 events/s: apply delay p50/p99", "server": "stream",
           "model": None, "tier": None, "body": None},
    "F3": {"title": "V1 on 1 of 3 replicas, ingesting at F1/2", "server": "stream",
           "model": "fraud", "tier": "l1", "body": "fraud-velocity.jsonl"},
}
DELAY_METRIC = "onnxd_feature_stream_apply_delay_seconds"
LAG_RE = re.compile(rb"^onnxd_feature_stream_lag_seconds (\S+)\s*$", re.M)


def log(msg: str) -> None:
    R.log(msg)


def sid(s: str | None) -> tuple[int, int]:
    """A stream ID "<ms>-<seq>" as a tuple that orders like Redis does; (0, 0) for none."""
    if not s:
        return (0, 0)
    a, _, b = s.partition("-")
    return (int(a), int(b or 0))


# ---------------------------------------------------------------- posting

class Poster:
    """Posts bodies[k % len(bodies)] for k = 0, 1, ... to ports[k % len(ports)] from `clients`
    threads (one keep-alive connection per thread and replica). rate (requests/s): request k is
    sent no earlier than start + k / rate (late when every thread is busy; the lateness is
    kept); None: as fast as the answers come. Stops after `count` requests or when stop() is
    called (paced: also at `duration` s after the start). A 503 (not appended: Redis did not
    take it in time) is retried after 0.2 s, at most 20 times (not counted as a request)."""

    def __init__(self, ports: list[int], bodies: list[tuple[bytes, int]], clients: int,
                 rate: float | None = None, count: int | None = None,
                 duration: float | None = None):
        self.ports, self.bodies, self.clients = ports, bodies, clients
        self.rate, self.count, self.duration = rate, count, duration
        self.lock = threading.Lock()
        self.next_k = 0
        self.stop_ev = threading.Event()
        self.results: list[dict] = []  # per request: k, port, status, id, accepted, lines, t
        self.retries_503 = 0
        self.max_late_s = 0.0
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []
        self.t0 = self.t_end = None

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(self.clients)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_ev.set()

    def join(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.t_end = max((r["t"] for r in self.results), default=time.monotonic())

    def _take(self) -> int | None:
        with self.lock:
            k = self.next_k
            if self.stop_ev.is_set() or (self.count is not None and k >= self.count):
                return None
            if self.rate and self.duration is not None and k / self.rate >= self.duration:
                return None
            self.next_k += 1
            return k

    def _run(self) -> None:
        conns: dict[int, http.client.HTTPConnection] = {}
        try:
            while True:
                k = self._take()
                if k is None:
                    return
                if self.rate:
                    at = self.t0 + k / self.rate
                    wait = at - time.monotonic()
                    if wait > 0:
                        if self.stop_ev.wait(wait):
                            return
                    else:
                        self.max_late_s = max(self.max_late_s, -wait)
                port = self.ports[k % len(self.ports)]
                body, lines = self.bodies[k % len(self.bodies)]
                t_sent = time.monotonic()
                for attempt in range(21):
                    st, doc = self._post(conns, port, body)
                    if st != 503 or attempt == 20:
                        break
                    with self.lock:
                        self.retries_503 += 1
                    time.sleep(0.2)
                self.results.append({"k": k, "port": port, "status": st, "lines": lines,
                                     "id": doc.get("stream_id"),
                                     "accepted": doc.get("accepted"),
                                     "duplicates": doc.get("duplicates"),
                                     "t_sent": t_sent, "t": time.monotonic()})
                if st not in (200, 202):
                    with self.lock:
                        if len(self.errors) < 5:
                            self.errors.append(f"replica :{port} answered {st}: "
                                               f"{json.dumps(doc)[:200]}")
        finally:
            for c in conns.values():
                c.close()

    @staticmethod
    def _post(conns: dict, port: int, body: bytes) -> tuple[int, dict]:
        for attempt in (0, 1):  # once more on a fresh connection if the kept one was closed
            c = conns.get(port)
            if c is None:
                c = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                c.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
                resp = c.getresponse()
                data = resp.read()
                try:
                    doc = json.loads(data) if data else {}
                except ValueError:
                    doc = {"raw": data[:200].decode(errors="replace")}
                if resp.getheader("Connection", "").lower() == "close":
                    c.close()
                    conns.pop(port, None)
                return resp.status, doc if isinstance(doc, dict) else {"raw": str(doc)[:200]}
            except (OSError, http.client.HTTPException) as e:
                c.close()
                conns.pop(port, None)
                if attempt:
                    return 0, {"error": f"{type(e).__name__}: {e}"}
        return 0, {}

    def summary(self) -> dict:
        by: dict = {}
        for r in self.results:
            by[str(r["status"])] = by.get(str(r["status"]), 0) + 1
        ok = [r for r in self.results if r["status"] == 200]
        acked = [r for r in self.results if r["status"] in (200, 202) and r["id"]]
        return {"requests": len(self.results), "by_status": by,
                "events_200": sum(r["accepted"] or 0 for r in ok),
                "events_202": sum(r["lines"] for r in self.results if r["status"] == 202),
                "retries_503": self.retries_503,
                "last_id": max((r["id"] for r in acked), key=sid, default=None),
                "errors": self.errors}


def make_bodies(lines: list[str], batch: int = 0) -> list[tuple[bytes, int]]:
    batch = batch or BATCH
    return [(("\n".join(lines[i:i + batch]) + "\n").encode(), len(lines[i:i + batch]))
            for i in range(0, len(lines), batch)]


# ---------------------------------------------------------------- reading the replicas

def stream_state(port: int) -> dict | None:
    body = R.http_get(port, "/v1/features/stream")
    try:
        return json.loads(body) if body is not None else None
    except ValueError:
        return None


def wait_applied(ports: list[int], last_id: str, timeout: float = 300.0) -> tuple[float | None,
                                                                                  list]:
    """Polls GET /v1/features/stream of every replica until each one's applied_id is last_id
    (or later); returns (time.monotonic() when seen, the states), (None, states) on timeout."""
    want = sid(last_id)
    deadline = time.monotonic() + timeout
    states: list = []
    while True:
        states = [stream_state(p) for p in ports]
        now = time.monotonic()
        if all(s and sid(s.get("applied_id")) >= want for s in states):
            return now, states
        if now > deadline:
            return None, states
        time.sleep(POLL_S)


def delay_hist(port: int) -> dict | None:
    """The apply-delay histogram: {upper bound s (inf last): cumulative count}."""
    samples = R.metric_samples(port)
    if samples is None:
        return None
    return {float(lab["le"]): v for name, lab, v in samples
            if name == DELAY_METRIC + "_bucket" and "le" in lab}


def hist_delta(a: dict, b: dict) -> dict:
    return {le: b[le] - a.get(le, 0) for le in b}


def hist_quantile(h: dict, q: float) -> tuple[float | None, bool]:
    """q-quantile (0..1) of a cumulative histogram {le: count}, linearly interpolated within its
    bucket (lower bound: the previous bucket's, 0 for the first), Prometheus's way. (value s,
    above: True when it fell in the +Inf bucket: then the largest finite bound)."""
    les = sorted(h)
    total = h[les[-1]] if les else 0
    if not total:
        return None, False
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = h[le]
        if c >= rank:
            if le == float("inf"):
                return prev_le, True
            if c == prev_c:
                return le, False
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c), False
        prev_le, prev_c = le, c
    return prev_le, True


def lag_seconds(port: int) -> float | None:
    body = R.http_get(port, "/metrics", timeout=2.0)
    m = LAG_RE.search(body or b"")
    return float(m.group(1)) if m else None


class LagSampler(threading.Thread):
    def __init__(self, ports: list[int]):
        super().__init__(daemon=True)
        self.ports, self.stop_ev = ports, threading.Event()
        self.max = [None] * len(ports)
        self.n = 0

    def run(self):
        while not self.stop_ev.is_set():
            for i, p in enumerate(self.ports):
                v = lag_seconds(p)
                if v is not None and (self.max[i] is None or v > self.max[i]):
                    self.max[i] = v
            self.n += 1
            self.stop_ev.wait(LAG_SAMPLE_S)

    def stop(self):
        self.stop_ev.set()
        self.join()


def disk_written(path) -> tuple[str, int] | None:
    """(device, bytes written since boot) of the block device holding path, from
    /proc/diskstats (the whole device: other processes' writes too); None if not found."""
    import os

    try:
        dev = os.stat(path).st_dev
        with open("/proc/diskstats") as f:
            for line in f:
                x = line.split()
                if int(x[0]) == os.major(dev) and int(x[1]) == os.minor(dev):
                    return x[2], int(x[9]) * 512
    except (OSError, ValueError, IndexError):
        pass
    return None


def disk_rate(a, b, seconds: float) -> dict | None:
    if not a or not b or seconds <= 0:
        return None
    return {"device": a[0], "mb_written": round((b[1] - a[1]) / 1e6, 1),
            "mb_per_s": round((b[1] - a[1]) / 1e6 / seconds, 1)}


def cpu_ticks(pids: list[int]) -> list[int]:
    return [sum(R._stat_cpu(p) for p in R.tree(pid)) for pid in pids]


def cpu_delta(a: list[int], b: list[int]) -> list[float]:
    return [round((y - x) / R.CLK, 2) for x, y in zip(a, b)]


# ---------------------------------------------------------------- the rows

def row_f1(reps: list, rd, lines: list[str], bodies: list) -> dict:
    ports = [s.port for s in reps]
    pids = [s.proc.pid for s in reps] + [rd.proc.pid]
    c0, p0 = cpu_ticks(pids), time.process_time()
    d0 = disk_written(R.WORK)
    post = Poster(ports, bodies, CLIENTS, count=len(bodies))
    post.start()
    post.join()
    s = post.summary()
    t_all, states = wait_applied(ports, s["last_id"]) if s["last_id"] else (None, [])
    c1, p1 = cpu_ticks(pids), time.process_time()
    disk = disk_rate(d0, disk_written(R.WORK), time.monotonic() - post.t0)
    res = {"title": ROWS["F1"]["title"], "disk": disk, "events": len(lines), "batch": BATCH,
           "clients": CLIENTS, "replicas": REPLICAS, **s,
           "ingest_s": round(post.t_end - post.t0, 3),
           "cpu_s": {"replicas": cpu_delta(c0[:-1], c1[:-1]), "redis": cpu_delta(c0, c1)[-1],
                     "client": round(p1 - p0, 2)},
           "replica_states": states}
    try:
        info = rd.xinfo_stream(KEY)
        res["stream"] = {k: info.get(k) for k in ("length", "last-generated-id", "entries-added")}
    except Exception as e:  # noqa: BLE001 (reported, not fatal)
        res["stream"] = {"error": str(e)[:200]}
    if t_all is None:
        res["failed"] = (f"not every replica applied {s['last_id']} within 300 s: "
                         + "; ".join(f":{p} {st and st.get('applied_id')} {st and st.get('state')}"
                                     for p, st in zip(ports, states)))
        return res
    res["all_applied_s"] = round(t_all - post.t0, 3)
    res["events_per_s"] = round(s["events_200"] / (t_all - post.t0))
    res["ingest_events_per_s"] = round(s["events_200"] / max(post.t_end - post.t0, 1e-9))
    tot = s["events_200"] + s["events_202"]
    res["cpu_s_per_1k_events"] = round((sum(res["cpu_s"]["replicas"]) + res["cpu_s"]["redis"])
                                       / max(tot, 1) * 1000, 4)
    bad = []
    if s["by_status"].keys() - {"200"}:
        bad.append(f"answers {s['by_status']}")
    if s["events_200"] != len(lines):
        bad.append(f"{s['events_200']:,} of {len(lines):,} events acknowledged with 200")
    applied = [st.get("events_applied") for st in states]
    if any(a != tot for a in applied):
        bad.append(f"events_applied per replica {applied}, expected {tot:,}")
    ids = [st.get("applied_id") for st in states]
    if any(i != s["last_id"] for i in ids):
        bad.append(f"applied_id per replica {ids}, last acknowledged {s['last_id']}")
    last = (res["stream"] or {}).get("last-generated-id")
    if last and last != s["last_id"]:
        bad.append(f"stream's last ID {last} != last acknowledged {s['last_id']}")
    if bad:
        res["problems"] = bad
    return res


def again_big(reps: list, lines: list[str]) -> dict:
    """F1's events posted again (stored again: no event_id) in requests of BIG_BATCH lines,
    the same way: events/s until every replica applied the last one."""
    ports = [s.port for s in reps]
    big = make_bodies(lines, BIG_BATCH)
    post = Poster(ports, big, CLIENTS, count=len(big))
    post.start()
    post.join()
    s = post.summary()
    t_all, _ = wait_applied(ports, s["last_id"]) if s["last_id"] else (None, [])
    out = {"batch": BIG_BATCH, "requests": len(big), "by_status": s["by_status"],
           "ingest_s": round(post.t_end - post.t0, 3)}
    if t_all is not None:
        out["all_applied_s"] = round(t_all - post.t0, 3)
        out["events_per_s"] = round(s["events_200"] / (t_all - post.t0))
    return out


def single_node(repo, probe, quick: bool, d, bodies: list) -> dict:
    """The same requests (BATCH lines, CLIENTS threads) to one onnxd without the stream (a
    store of its own, same --feature-sync): the local commit per request, for comparison."""
    srv = R.Server("onnxd", quick, repo=repo, label="onnxd-fraud-stream-single",
                   extra=["--feature-dir", str(d / "single-store"), "--feature-sync", SYNC],
                   probe_with=probe)
    out: dict = {"command": R.printable(srv.cmd, srv.env), "batch": BATCH, "clients": CLIENTS}
    try:
        srv.start()
        post = Poster([srv.port], bodies, CLIENTS, count=len(bodies))
        post.start()
        post.join()
        s = post.summary()
        out["by_status"] = s["by_status"]
        out["events_per_s"] = round(s["events_200"] / max(post.t_end - post.t0, 1e-9))
    except RuntimeError as e:
        out["failed"] = str(e)[:300]
    finally:
        srv.stop()
    return out


def paced(reps: list, bodies: list, rate_events: float, duration: float | None = None
          ) -> Poster:
    return Poster([s.port for s in reps], bodies, PACED_CLIENTS, rate=rate_events / BATCH,
                  duration=duration)


def post_latency(results: list[dict]) -> dict:
    """p50/p99/max of the POSTs' answer times (client side: send to answer, 503 retries
    included), ms."""
    lat = sorted((r["t"] - r["t_sent"]) * 1000 for r in results)
    if not lat:
        return {}
    return {"p50_ms": round(lat[len(lat) // 2], 1),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1),
            "max_ms": round(lat[-1], 1)}


def paced_summary(post: Poster, window: float, rate_events: float) -> dict:
    """window: the paced duration; the sends may take longer (every thread waiting for an
    answer): achieved = events / the time from the start to the last send + one interval."""
    s = post.summary()
    s["target_events_per_s"] = round(rate_events)
    span = max([window] + [r["t_sent"] - post.t0 + BATCH / rate_events for r in post.results])
    s["send_span_s"] = round(span, 3)
    s["achieved_events_per_s"] = round((s["events_200"] + s["events_202"]) / span)
    s["max_late_s"] = round(post.max_late_s, 3)
    s["post_latency"] = post_latency(post.results)
    return s


def row_f2(reps: list, bodies: list, rate_events: float, duration: float) -> dict:
    ports = [s.port for s in reps]
    before = [delay_hist(p) for p in ports]
    lag = LagSampler(ports)
    post = paced(reps, bodies, rate_events, duration)
    d0 = disk_written(R.WORK)
    lag.start()
    post.start()
    post.join()
    lag.stop()
    s = paced_summary(post, duration, rate_events)
    s["disk"] = disk_rate(d0, disk_written(R.WORK), time.monotonic() - post.t0)
    # every entry of the window applied everywhere, so that each histogram holds all of them
    t_all, states = wait_applied(ports, s["last_id"]) if s["last_id"] else (None, [])
    after = [delay_hist(p) for p in ports]
    res = {"title": ROWS["F2"]["title"], "duration_s": duration, "batch": BATCH, **s,
           "lag_max_s": lag.max, "lag_samples": lag.n,
           "all_applied_after_last_answer_s": (round(t_all - post.t_end, 3)
                                               if t_all else None)}
    if any(h is None for h in before + after):
        res["failed"] = "no /metrics (apply-delay histogram) from a replica"
        return res
    deltas = [hist_delta(a, b) for a, b in zip(before, after)]
    total: dict = {}
    for d in deltas:
        for le, v in d.items():
            total[le] = total.get(le, 0) + v
    per = []
    for d in deltas + [total]:
        p50, a50 = hist_quantile(d, 0.50)
        p99, a99 = hist_quantile(d, 0.99)
        per.append({"entries": int(max(d.values(), default=0)),
                    "p50_ms": None if p50 is None else round(p50 * 1000, 3),
                    "p99_ms": None if p99 is None else round(p99 * 1000, 3),
                    "above_last_bucket": a50 or a99})
    res["per_replica"], res["all"] = per[:-1], per[-1]
    res["p50_ms"], res["p99_ms"] = per[-1]["p50_ms"], per[-1]["p99_ms"]
    lm = [x for x in lag.max if x is not None]
    res["lag_max_all_s"] = max(lm) if lm else None
    if t_all is None:
        res["failed"] = "not every replica applied the window's last entry within 300 s"
    elif s["by_status"].keys() - {"200"}:
        res["problems"] = [f"answers {s['by_status']}"]
    return res


def row_f3(reps: list, bodies: list, rate_events: float, headers: dict, cfg: dict,
           v1: dict | None) -> dict:
    import fraud as F

    srv = reps[0]
    spec = ROWS["F3"]
    sc = {"model": spec["model"], "body": spec["body"], "conns": F.CONNS,
          "check": "fraud_probability", "idle": 0, "lines": True}
    box: dict = {}

    def at_measure():
        box["before"] = F.tier_counters(srv.port)
        box["t"] = time.monotonic()
        box["k"] = len(post.results)

    post = paced(reps, bodies, rate_events)
    post.start()
    try:
        res = R.run_scenario(srv, "F3", headers, cfg["warmup"], cfg["duration"], 0, spec=sc,
                             at_measure=at_measure)
    finally:
        after, t_after, k_after = F.tier_counters(srv.port), time.monotonic(), len(post.results)
        post.stop()
        post.join()
    res.pop("loadgen", None)
    res["title"] = spec["title"]
    s = post.summary()
    ing = {"target_events_per_s": round(rate_events), "by_status": s["by_status"],
           "retries_503": s["retries_503"], "max_late_s": round(post.max_late_s, 3),
           "errors": s["errors"]}
    if "t" in box:
        got = post.results[box["k"]:k_after]
        ing["achieved_events_per_s"] = round(sum(r["lines"] for r in got
                                                 if r["status"] in (200, 202))
                                             / max(t_after - box["t"], 1e-9))
    if "t" in box:
        # POSTs to the scored replica in flight, on average over the measured window: each
        # is answered only once that replica applied it, and waits on one of its workers
        t_a, t_b = box["t"], t_after
        mine = [r for r in post.results if r["port"] == srv.port]
        busy = sum(max(0.0, min(r["t"], t_b) - max(r["t_sent"], t_a)) for r in mine)
        ing["scored_replica_posts_in_flight"] = round(busy / max(t_b - t_a, 1e-9), 2)
        ing["scored_replica_post_latency"] = post_latency(
            [r for r in mine if r["t"] >= t_a and r["t_sent"] <= t_b])
    res["ingestion"] = ing
    a, b = box.get("before"), after
    if a and b:
        d = {k: b.get(k, 0) - a.get(k, 0) for k in b}
        res["tier_lookups"] = {k: int(v) for k, v in d.items() if v}
        hit, miss = d.get("l1_hit", 0), d.get("l1_miss", 0)
        res["l1_hit_ratio"] = round(hit / (hit + miss), 4) if hit + miss else None
        n = res.get("requests") or 0
        if n:
            res["l1_hits_per_request"] = round(hit / n, 2)
            res["l2_hits_per_request"] = round(d.get("l2_hit", 0) / n, 2)
        bad = {k: v for k, v in d.items()
               if v and (k.endswith(("_error", "_timeout")) or k == "degraded_total")}
        if bad:
            res["problems"] = [f"lookups/degraded during the window: {bad}"]
    v1_rps = None if not v1 or v1.get("failed") else v1.get("rps")
    res["v1_rps"] = v1_rps
    res["x_v1"] = round(res["rps"] / v1_rps, 3) if v1_rps and res.get("rps") else None
    return res


# ---------------------------------------------------------------- the section

def bench_stream(out: dict, data: dict, repo, work, probe, headers: dict, cfg: dict,
                 quick: bool, wanted: list[str]) -> None:
    """Runs the F rows in `wanted` (F1 also when F2 or F3 is), adding them to out["rows"] and
    their set-up to out["stream"]."""
    import services

    if not wanted:
        return
    if "F1" not in wanted:
        wanted = ["F1", *wanted]
    rows = out["rows"]
    st = out["stream"] = {"replicas": REPLICAS, "key": KEY, "batch": BATCH, "clients": CLIENTS,
                          "sync": SYNC, "cores": R.CORES}
    d = work / "stream"
    shutil.rmtree(d, ignore_errors=True)
    (d / "redis").mkdir(parents=True)
    rd = services.Redis(d / "redis")
    reps: list = []

    def fail_all(why: str) -> None:
        for r in wanted:
            rows.setdefault(r, {"title": ROWS[r]["title"], "failed": why})
        log(f"[fraud stream] FAILED: {why}")

    try:
        try:
            rd.start()
        except (RuntimeError, OSError) as e:
            return fail_all(f"Redis did not start: {e}")
        st["redis_command"] = R.shown([str(x) for x in rd.proc.args])
        for i in range(REPLICAS):
            extra = ["--feature-dir", str(d / f"store{i}"), "--feature-sync", SYNC,
                     "--feature-events-stream", KEY, "--redis", f"127.0.0.1:{rd.port}"]
            reps.append(R.Server("onnxd", quick, repo=repo, label=f"onnxd-fraud-stream{i}",
                                 extra=extra, probe_with=probe))
        st["commands"] = [R.printable(s.cmd, s.env) for s in reps]
        bodies = make_bodies(data["events"])
        st["single_node"] = single_node(repo, probe, quick, d, bodies)
        log(f"[fraud stream] single node (no stream), the same {len(bodies)} requests of "
            f"{BATCH} from {CLIENTS} threads: {st['single_node'].get('events_per_s', 0):,} "
            f"events/s {st['single_node'].get('failed', '')}")
        log(f"[fraud stream] Redis {rd.address} (no persistence); replica 0: "
            f"{st['commands'][0]}")
        st["cold_start_s"] = []
        for s in reps:
            try:
                st["cold_start_s"].append(round(s.start(), 3))
            except RuntimeError as e:
                return fail_all(f"replica {s.label} failed to start: {e}")
        for s in reps:
            state = stream_state(s.port)
            if not state or "applied_id" not in state:
                return fail_all(f"replica {s.label}: GET /v1/features/stream answered "
                                f"{state!r} (no stream mode?)")
        lines = data["events"]
        st["requests_f1"] = len(bodies)

        def guarded(r: str, fn) -> dict | None:
            t0 = time.monotonic()
            try:
                res = fn()
            except Exception as e:  # noqa: BLE001 (the row fails, the run goes on)
                log(traceback.format_exc())
                res = {"title": ROWS[r]["title"], "failed": f"{type(e).__name__}: {e}"}
            dead = [s.label for s in reps if not s.alive()]
            if dead and not res.get("failed"):
                res["failed"] = (f"replica(s) {', '.join(dead)} exited: "
                                 + reps[[s.label for s in reps].index(dead[0])].log_tail(300))
            res["elapsed_s"] = round(time.monotonic() - t0, 1)
            rows[r] = res
            return None if res.get("failed") else res

        f1 = guarded("F1", lambda: row_f1(reps, rd, lines, bodies))
        if f1:
            log(f"[fraud] F1 stream ingest: {f1['events_200']:,} events in {len(bodies)} "
                f"requests of {BATCH} over {REPLICAS} replicas from {CLIENTS} threads: answers "
                f"by {f1['ingest_s']:.2f} s, all applied at {f1['all_applied_s']:.2f} s: "
                f"{f1['events_per_s']:,} events/s"
                + (f" (PROBLEMS: {'; '.join(f1['problems'])})" if f1.get("problems") else ""))
            try:
                f1["again_big"] = again_big(reps, lines)
            except Exception as e:  # noqa: BLE001 (a side measurement)
                f1["again_big"] = {"failed": f"{type(e).__name__}: {e}"}
            log(f"[fraud] F1 the same events again in requests of {BIG_BATCH:,}: "
                f"{f1['again_big'].get('events_per_s', 0):,} events/s until all applied")
        else:
            log(f"[fraud] F1 FAILED: {rows['F1'].get('failed')}")
            for r in wanted[1:]:
                rows[r] = {"title": ROWS[r]["title"], "failed": "F1 (its rate) failed"}
            return
        half = f1["events_per_s"] / 2
        st["half_rate"] = round(half)
        if "F2" in wanted:
            dur = 5.0 if quick else 10.0
            f2 = guarded("F2", lambda: row_f2(reps, bodies, half, dur))
            if f2:
                log(f"[fraud] F2 stream at {f2['target_events_per_s']:,} events/s (achieved "
                    f"{f2['achieved_events_per_s']:,}) for {dur:g} s: apply delay p50 "
                    f"{R.fmt_ms(f2['p50_ms'])} ms, p99 {R.fmt_ms(f2['p99_ms'])} ms over all "
                    f"three; per replica "
                    + ", ".join(f"{R.fmt_ms(x['p50_ms'])}/{R.fmt_ms(x['p99_ms'])}"
                                for x in f2["per_replica"])
                    + f" ms; lag gauge max {f2['lag_max_all_s']} s")
            else:
                log(f"[fraud] F2 FAILED: {rows['F2'].get('failed')}")
        if "F3" in wanted:
            time.sleep(0.5)
            f3 = guarded("F3", lambda: row_f3(reps, bodies, half, headers, cfg,
                                              rows.get("V1")))
            if f3:
                log(f"[fraud] F3 V1 on replica 0 while ingesting at "
                    f"{f3['ingestion'].get('achieved_events_per_s', 0):,} events/s: "
                    f"{R.fmt_rps(f3.get('rps'))} req/s ({R.fmt_x(f3.get('x_v1'))} V1), p50 "
                    f"{R.fmt_ms(f3.get('p50_ms'))} ms, p99 {R.fmt_ms(f3.get('p99_ms'))} ms, "
                    f"L1 hit ratio {f3.get('l1_hit_ratio')}")
            else:
                log(f"[fraud] F3 FAILED: {rows['F3'].get('failed')}")
    finally:
        st["stop"] = [s.stop() for s in reps]
        rd.stop()


# ---------------------------------------------------------------- report

def table_row(r: str, row: dict) -> list[str]:
    """fraud.table()'s columns: row, what, req/s, p50 ms, p99 ms, x python, features from,
    server CPU s/1k req."""
    t = ROWS[r]["title"]
    if row.get("failed"):
        return [r, t, "failed", "", "", "", "", ""]
    warn = " (!)" if row.get("problems") else ""
    if r == "F1":
        return [r, t, f"{row['events_per_s']:,} ev/s{warn}", "", "", "",
                f"answers at {row['ingest_s']:.2f} s, all applied {row['all_applied_s']:.2f} s",
                f"{row['cpu_s_per_1k_events']:.4f}/1k ev"]
    if r == "F2":
        lm = row.get("lag_max_all_s")
        ach, tgt = row["achieved_events_per_s"], row["target_events_per_s"]
        rate = f"{ach:,} ev/s" if ach >= 0.95 * tgt else f"{ach:,} of {tgt:,} ev/s"
        return [r, t, rate + warn, R.fmt_ms(row.get("p50_ms")),
                R.fmt_ms(row.get("p99_ms")), "", f"lag gauge max {lm:g} s" if lm is not None
                else "", ""]
    hr = row.get("l1_hit_ratio")
    src = (f"L1 hit ratio {hr:.0%}" if hr is not None else "no tier counters") + \
        (f"; {R.fmt_x(row['x_v1'])} V1" if row.get("x_v1") else "; no V1 this run")
    return [r, t, R.fmt_rps(row.get("rps")) + warn, R.fmt_ms(row.get("p50_ms")),
            R.fmt_ms(row.get("p99_ms")), "", src,
            f"{row['cpu_s_per_1k']:.3f}" if row.get("cpu_s_per_1k") else ""]


def disk_note(disk: dict | None, entries: int) -> str:
    if not disk or not entries:
        return ""
    return (f" Disk ({disk['device']}, the whole device, /proc/diskstats): "
            f"{disk['mb_written']:g} MB written, {disk['mb_per_s']:g} MB/s, "
            f"{disk['mb_written'] / entries / REPLICAS:.2f} MB per entry and replica.")


def notes(out: dict) -> list[str]:
    st, rows = out.get("stream"), out.get("rows", {})
    if not st:
        return []
    ing = out.get("servers", {}).get("l1", {}).get("ingest") or {}
    sync = {"data": "--feature-sync data (onnxd's default: data and meta page fsynced at every "
                    "commit)",
            "nometa": "--feature-sync nometa (the setting docs/fraud.md recommends with the "
                      "stream: one fsync a commit; power loss may undo the last commit, which "
                      "the applier then applies again)"}.get(st["sync"], f"--feature-sync "
                                                                     f"{st['sync']}")
    lines = [f"Stream replication (F1-F3): one Redis (tests/services.py's Redis without "
             f"persistence: --save '' --appendonly no, for speed) and {st['replicas']} onnxd "
             f"replicas with a --feature-dir each, {sync}, --feature-events-stream {st['key']}, "
             f"the fraud repository above. POST /v1/events appends one stream entry a request "
             f"and answers once the posting replica applied it. All of it shares the machine's "
             f"{st['cores']} cores: {st['replicas']} onnxd, Redis, the Python posting threads "
             f"and, in F3, onnxd-bench; the numbers are what one {st['cores']}-core box does "
             f"with all of them at once, not a replica's own capacity."]
    f1 = rows.get("F1")
    if f1 and not f1.get("failed"):
        cpu = f1.get("cpu_s", {})
        sn, big = st.get("single_node") or {}, f1.get("again_big") or {}
        lines.append(
            f"F1: {f1['events']:,} events (make_data's JSON lines) in {f1['requests']} requests "
            f"of {f1['batch']} lines, request k to replica k mod {f1['replicas']}, from "
            f"{f1['clients']} client threads (keep-alive) as fast as answered. Answers "
            f"{f1['by_status']}; the last answer at {f1['ingest_s']:.2f} s "
            f"({f1['ingest_events_per_s']:,} events/s on the ingest side: each answer waits "
            f"for the posting replica's apply), every replica's applied_id (GET "
            f"/v1/features/stream, polled every {POLL_S * 1000:g} ms) at the last acknowledged "
            f"stream_id at {f1['all_applied_s']:.2f} s: {f1['events_per_s']:,} events/s. CPU: "
            f"replicas {', '.join(f'{x:g}' for x in cpu.get('replicas', []))} s, Redis "
            f"{cpu.get('redis', 0):g} s, the posting client {cpu.get('client', 0):g} s."
            + disk_note(f1.get("disk"), f1["requests"])
            + (f" PROBLEMS: {'; '.join(f1['problems'])}." if f1.get("problems") else "")
            + f" {f1['batch']} lines a request, not single-node ingest's 10,000, so that the "
            f"requests spread over the threads and replicas and F2 has entries enough for "
            f"percentiles; the cost is per request (one commit each, fsynced), so the size "
            f"decides the rate: "
            + "; ".join(x for x in (
                f"the same {f1['requests']} requests to one onnxd without the stream "
                f"(`{sn['command']}`): {sn['events_per_s']:,} events/s"
                if sn.get("events_per_s") else "",
                f"the same events again to the replicas in {big['requests']} requests of "
                f"{big['batch']:,}: {big['events_per_s']:,} events/s until all applied"
                if big.get("events_per_s") else "",
                f"single-node ingest above (10,000 a request, one client): "
                f"{ing['events_per_s']:,} events/s" if ing.get("events_per_s") else "") if x)
            + ".")
    f2 = rows.get("F2")
    if f2 and not f2.get("failed"):
        per = "; ".join(f"replica {i}: {R.fmt_ms(x['p50_ms'])} / {R.fmt_ms(x['p99_ms'])} ms "
                        f"({x['entries']} entries)" for i, x in enumerate(f2["per_replica"]))
        lm = ", ".join("-" if x is None else f"{x:g}" for x in f2["lag_max_s"])
        pl = f2.get("post_latency") or {}
        lines.append(
            f"F2: paced at F1/2 = {f2['target_events_per_s']:,} events/s "
            f"({f2['target_events_per_s'] / f2['batch']:.1f} requests/s of {f2['batch']} "
            f"lines, make_data's events posted again from the first: no event_id, so stored "
            f"again), round-robin, {PACED_CLIENTS} threads, {f2['duration_s']:g} s; achieved "
            f"{f2['achieved_events_per_s']:,} events/s (sends over {f2['send_span_s']:g} s, at "
            f"most {f2['max_late_s'] * 1000:.0f} ms behind schedule), answers {f2['by_status']}, "
            f"POST answered in p50 "
            f"{pl.get('p50_ms')} ms, p99 {pl.get('p99_ms')} ms. Apply delay "
            f"(onnxd_feature_stream_apply_delay_seconds: from the entry ID's ms, Redis's clock "
            f"with 1 ms resolution, to the local apply; before/after difference, interpolated "
            f"within buckets) p50 / p99: {per}; all three: {R.fmt_ms(f2['p50_ms'])} / "
            f"{R.fmt_ms(f2['p99_ms'])} ms. onnxd_feature_stream_lag_seconds sampled every "
            f"{LAG_SAMPLE_S * 1000:g} ms ({f2['lag_samples']} rounds): max {lm} s."
            + disk_note(f2.get("disk"), f2["requests"]))
    f3 = rows.get("F3")
    if f3 and not f3.get("failed"):
        ing3 = f3.get("ingestion", {})
        tl = f3.get("tier_lookups", {})
        lines.append(
            f"F3: V1's load (model fraud, velocity features, {out.get('connections')} "
            f"connections, the same bodies) on replica 0 while ingestion at F1/2 = "
            f"{ing3.get('target_events_per_s', 0):,} events/s went on over all three (achieved "
            f"{ing3.get('achieved_events_per_s', 0):,} events/s in the measured window, answers "
            f"{ing3.get('by_status')}; replica 0's POSTs answered in p50 "
            f"{(ing3.get('scored_replica_post_latency') or {}).get('p50_ms')} ms, "
            f"{ing3.get('scored_replica_posts_in_flight')} of them in flight on average; a "
            f"worker only parses a POST, the stream's appender and applier threads do the rest): "
            f"{R.fmt_rps(f3.get('rps'))} req/s"
            + (f" = {f3['x_v1']:.2f}x V1's {R.fmt_rps(f3['v1_rps'])} req/s of this run"
               if f3.get("x_v1") else " (no V1 this run)")
            + f"; L1 hit ratio {f3.get('l1_hit_ratio')} (l1 hits {tl.get('l1_hit', 0):,}, "
            f"misses {tl.get('l1_miss', 0):,}; L2 hits {tl.get('l2_hit', 0):,}: ingestion "
            f"invalidates the L1 entries of the entities it touches, so V1's all-L1 check is "
            f"reported, not required). Server CPU is replica 0's alone. `{f3.get('command')}`"
            + (f" PROBLEMS: {'; '.join(f3['problems'])}." if f3.get("problems") else ""))
    if st.get("redis_command"):
        lines.append(f"`{st['redis_command']}`")
    for c in st.get("commands", []):
        lines.append(f"`{c}`")
    return lines
