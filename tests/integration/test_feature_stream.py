"""The feature store replicated through a Redis Stream (--feature-events-stream KEY), black-box:
several onnxd replicas, each with a --feature-dir of its own, all following one stream on a real
redis-server started here (tests/services.py), scored through the feature model of
test_ingest.py (an identity model: its output is the 17 features it was given).

- Convergence: three replicas, a generated stream (tools/fraud/generate.py, timestamps within the
  last days) posted in requests of a few hundred events, round-robin across the replicas by
  several client threads. Every answer is a 200 with a stream_id; the stream holds one entry per
  request, its body as posted, in the order of the IDs answered; once every replica has applied
  the stream's last ID, every replica's velocity features for every user and card (after its
  last event, at one of its events, just before one) equal tools/fraud/features.py's offline
  values bit for bit, computed from the stream's events in stream order.
- kill -9 of a replica in the middle of ingestion (clients go on posting to the other two and
  retry, with the same event ids, what the dead one did not answer): restarted on the same
  --feature-dir it catches up, its applied_id equals the others', and all three equal offline.
- Trim and bootstrap: with --feature-stream-trim-ms the stream loses its old entries (XINFO
  STREAM: fewer entries than were added, the first entry after the trimmed requests; not
  max-deleted-entry-id, which Redis 7.0's XTRIM leaves at 0-0); a replica started with an
  empty --feature-dir and --feature-bootstrap URL of a peer becomes ready at the peers'
  applied_id, follows, and equals offline, secs_since_last of entities whose events were all
  trimmed included. A replica with an empty store and no bootstrap, started once the stream
  was partly or wholly trimmed, stays not ready (503, state "gap") and applies nothing; a
  request posted to it is appended all the same and answered 202 at its timeout.
- Redis restarts (append-only file, fsync always: killed with SIGKILL three times, then shut
  down with SIGTERM) while clients post continuously with event ids, each request sent again
  until acknowledged: answers are 200/202, 503 with Retry-After (not in the stream), or 504
  (the connection broke after the append was sent: outcome unknown); afterwards no 503
  attempt is in the stream, and every replica holds every request's events exactly once.
- Redis paused (SIGSTOP): POST /v1/events answers 503 within --feature-stream-timeout-ms (plus
  slack), scoring goes on from local state, onnxd_feature_stream_lag_seconds grows; after
  SIGCONT ingestion works again and the refused requests never appear (XLEN, scores).
- Small ones: a bad line is a 400 with nothing appended; GET /v1/features/stream and the
  onnxd_feature_stream_* metrics; GET /v1/features/snapshot is an LMDB file (meta page magic)
  with X-Onnxd-Stream-Id, from which a replica starts and follows; without the flag POST
  /v1/events is local as before; the stream flags are checked at start.

ONNXD_STREAM_EVENTS sets the size of the convergence test's stream (default 50,000; 15,000 under
the sanitizers, where everything is about 3x slower); the other data sets scale with it.
"""

import http.client
import itertools
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import (ROOT, Server, _server_binary, build_repo, forget, keep_alive_checked,
                      run_threads, wait_until)
from test_features import VIEW, Client, _or_fail, bits, identity_model, metric

sys.path.insert(0, str(ROOT / "tools" / "fraud"))
sys.path.insert(0, str(ROOT / "tests"))
import features as offline  # noqa: E402
import generate  # noqa: E402
import services  # noqa: E402

SANITIZED = "san-" in os.environ.get("ONNXD_BIN", "")
SLOW = 3 if SANITIZED else 1  # every bounded wait is this much longer under the sanitizers
N_EVENTS = int(os.environ.get("ONNXD_STREAM_EVENTS", 15_000 if SANITIZED else 50_000))
BATCH = 300  # events a request
HTTP_TIMEOUT = 60.0  # client side: far above every --feature-stream-timeout-ms used here
STEADY_TIMEOUT_MS = 10_000  # --feature-stream-timeout-ms where no 202 is wanted
CONVERGE_S = 60.0 * SLOW
DEADLINE_SLACK_S = 1.0  # beyond --feature-stream-timeout-ms: a busy machine, a sanitizer build
U_CNT24, C_CNT24 = 2, 10  # cnt_24h of the user, of the card, among the 16 entity features


# ---------------------------------------------------------------------------- Redis, replicas
class Redis(services.Redis):
    """services.Redis for tests: a server that cannot start fails the test with its reason."""

    def __init__(self, d, persist=False):
        d.mkdir(parents=True, exist_ok=True)
        _or_fail(super().__init__, d, persist)

    def start(self):
        _or_fail(super().start)


@pytest.fixture(scope="module")
def fv_repo(tmp_path_factory):
    """The feature model of test_ingest.py: amount, the user's 8 velocity features, the card's."""
    root = tmp_path_factory.mktemp("stream-repo")
    return build_repo(root / "repo", {"fv": {"model": identity_model(17),
                                             "config": {"feature_view": VIEW}}})


@pytest.fixture
def redis_factory(tmp_path):
    """make(persist=False) -> a started Redis with a directory under tmp_path; all stopped
    after the test (after the replicas: fleet depends on this fixture)."""
    made = []

    def make(persist=False):
        r = Redis(tmp_path / f"redis{len(made)}", persist)
        made.append(r)
        r.start()
        return r

    yield make
    for r in made:
        r.stop()


class LiveServer(Server):
    """A Server whose start() waits for /v2/health/live only: for replicas that must not
    become ready."""

    def _wait_ready(self):
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"server exited with status {self.proc.returncode} before it was live"
            try:
                if request(self.port, "GET", "/v2/health/live", timeout=2)[0] == 200:
                    return None
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        return "not live within 60 s"


def replica_args(redis, key, store, extra=(), timeout_ms=STEADY_TIMEOUT_MS):
    return ["--feature-dir", str(store), "--feature-sync", "none", "--redis", redis.address,
            "--feature-events-stream", key, "--feature-stream-timeout-ms", str(timeout_ms),
            *extra]


@pytest.fixture
def fleet(server_factory, fv_repo, redis_factory, tmp_path):
    """start(redis, key, name, extra=(), timeout_ms=..., ready=True) -> a replica with an empty
    --feature-dir of its own (tmp_path/<name>-store); ready=False: started without waiting for
    readiness. After the test every replica still running is stopped with SIGTERM, exit 0
    required (a replica the test killed on purpose has s.expect_dead set)."""
    started = []

    def start(redis, key, name, extra=(), timeout_ms=STEADY_TIMEOUT_MS, ready=True):
        args = replica_args(redis, key, tmp_path / f"{name}-store", extra, timeout_ms)
        if ready:
            s = server_factory(fv_repo, args, name=name)
        else:
            s = LiveServer(_server_binary(), fv_repo, args, tmp_path / f"{name}.log", name)
            s.start()
        s.expect_dead = False
        started.append(s)
        return s

    yield start
    problems = []
    for s in started:
        if s.expect_dead:
            s.stopped = True  # killed by the test, which failed before restarting it
        if s.stopped:
            continue
        err = s.stop()
        if err:
            problems.append(f"{err}\n--- {s.name} log ({s.log_path}) ---\n{s.log_tail()}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------- HTTP
def request(port, method, path, body=None, headers=None, timeout=HTTP_TIMEOUT):
    """One request on a fresh connection -> (status, {lower-case header: value}, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def post_events(port, body, timeout=HTTP_TIMEOUT):
    """POST /v1/events (JSON lines) -> (status, headers, parsed JSON answer)."""
    status, headers, data = request(port, "POST", "/v1/events", body,
                                    {"Content-Type": "application/x-ndjson"}, timeout)
    return status, headers, json.loads(data) if data else None


def stream_status(s):
    """GET /v1/features/stream as a dict ({"unreachable": reason} when the replica does not
    answer)."""
    try:
        status, _, data = request(s.port, "GET", "/v1/features/stream", timeout=10)
    except (OSError, http.client.HTTPException) as e:
        return {"unreachable": repr(e)}
    if status != 200:
        return {"status": status, "body": data.decode(errors="replace")}
    return json.loads(data)


def ready(s):
    """(status, body) of GET /v2/health/ready."""
    status, _, data = request(s.port, "GET", "/v2/health/ready", timeout=10)
    return status, json.loads(data)


def metrics(s):
    status, _, data = request(s.port, "GET", "/metrics", timeout=10)
    assert status == 200
    return data.decode()


def logs(servers, n=25):
    return "".join(f"\n--- {s.name} log ({s.log_path}) ---\n{s.log_tail(n)}" for s in servers)


def sid(x):
    """A stream ID "ms-seq" as a tuple that orders like the stream."""
    ms, seq = x.split("-")
    return int(ms), int(seq)


def now_ms():
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------- events
def make_events(n, seed, tag, unique_ts=False):
    """n events of tools/fraud/generate.py's world (users, cards, merchants, 3 days), moved so
    that the last one is a minute ago, each with event_id "<tag>-<i>"; ids of users and cards
    are prefixed with tag. unique_ts: timestamps made strictly increasing (then no two events
    tie, and the order they are ingested in does not matter)."""
    st = generate.generate(n, seed, days=3)
    ts = st.ts.astype(np.int64)
    if unique_ts:
        i = np.arange(len(ts), dtype=np.int64)
        ts = np.maximum.accumulate(ts - i) + i
    ts = ts + (now_ms() - 60_000 - int(ts[-1]))
    return [{"ts": int(t), "user_id": f"{tag}u{u}", "card_id": f"{tag}c{c}",
             "merchant_id": f"m{m}", "amount": float(a), "event_id": f"{tag}-{k}"}
            for k, (t, u, c, m, a) in enumerate(zip(ts.tolist(), st.user.tolist(),
                                                    st.card.tolist(), st.merchant.tolist(),
                                                    st.amount.tolist()))]


def ndjson(events):
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def chunks(events, size=BATCH):
    return [events[i:i + size] for i in range(0, len(events), size)]


def stream_events(entries):
    """The events of stream entries (field b: a request body), in stream order."""
    return [json.loads(line) for _, f in entries for line in f["b"].splitlines() if line.strip()]


def first_of_each_id(events):
    """The events a store keeps: the first event of each event_id (later ones are duplicates)."""
    seen, out = set(), []
    for e in events:
        eid = e.get("event_id")
        if eid is None or eid not in seen:
            seen.add(eid)
            out.append(e)
    return out


def pick_queries(events, rng):
    """(user, card, t) points that make every entity's features meaningful: for each user, a
    while after its last event and exactly at its middle event (an event at t is in every
    window); for each card, up to an hour after its last event and 1 ms before its middle one."""
    by_user, by_card = {}, {}
    for e in sorted(events, key=lambda e: e["ts"]):
        by_user.setdefault(e["user_id"], []).append(e)
        by_card.setdefault(e["card_id"], []).append(e)
    q = []
    for u, evs in by_user.items():
        last, mid = evs[-1], evs[len(evs) // 2]
        q.append((u, last["card_id"], last["ts"] + rng.randint(0, 90_000)))
        q.append((u, mid["card_id"], mid["ts"]))
    for c, evs in by_card.items():
        last, mid = evs[-1], evs[len(evs) // 2]
        q.append((last["user_id"], c, last["ts"] + rng.randint(1, 3_600_000)))
        q.append((mid["user_id"], c, mid["ts"] - 1))
    return q


def offline_features(events, queries):
    """float32 [len(queries), 16]: the user's and the card's 8 features at each query's t, by
    tools/fraud/features.py, from events (in ingestion order: equal timestamps keep it) with
    ts <= t."""
    order = sorted(range(len(events)), key=lambda i: events[i]["ts"])  # stable
    state = offline.OnlineFeatures()
    out = np.empty((len(queries), 16), np.float32)
    k = 0
    for qi in sorted(range(len(queries)), key=lambda i: queries[i][2]):
        user, card, t = queries[qi]
        while k < len(order) and events[order[k]]["ts"] <= t:
            state.add(events[order[k]])
            k += 1
        out[qi] = np.array(state.row_values(t, user, card, 1.0)[1:], np.float32)
    return out


def score(cl, user, card, t):
    """The 16 entity features a replica gives (user, card) at t (amount 1.0)."""
    status, doc, got, _ = cl.score("fv", {"user_id": user, "card_id": card, "ts": t,
                                          "return_features": True}, 1.0)
    assert status == 200 and got is not None, (user, card, t, status, doc)
    assert "features_degraded" not in doc["parameters"], doc
    assert got[0] == np.float32(1.0)
    return got[1:]


def check_against_offline(servers, queries, want):
    """Every replica's features at every query equal want's bit for bit."""
    def run(s):
        cl = Client(s)
        try:
            return [(i, s.name, queries[i], got, want[i]) for i, got in
                    ((i, score(cl, *q)) for i, q in enumerate(queries))
                    if not np.array_equal(bits(got), bits(want[i]))]
        finally:
            cl.close()

    t0 = time.monotonic()
    bad = [b for r in run_threads([lambda s=s: run(s) for s in servers], timeout=900.0)
           for b in r]
    assert not bad, (f"{len(bad)} of {len(queries) * len(servers)} scores differ from offline; "
                     f"first (query, replica, (user, card, t), online, offline): {bad[:3]}")
    return time.monotonic() - t0


def converge(servers, redis, key, timeout=CONVERGE_S):
    """Waits until every replica has applied the stream's last ID and follows it; returns
    (that ID, the replicas' GET /v1/features/stream)."""
    seen = {}

    def done():
        seen["last"] = last = redis.xinfo_stream(key)["last-generated-id"]
        seen["states"] = sts = [stream_status(s) for s in servers]
        return all(st.get("applied_id") == last and st.get("state") == "following"
                   for st in sts)

    wait_until(done, timeout,
               lambda: (f"every replica to apply the stream up to {seen.get('last')}: "
                        f"{[(s.name, st) for s, st in zip(servers, seen.get('states', []))]}"
                        + logs(servers)), interval=0.1)
    for s, st in zip(servers, seen["states"]):
        assert st["key"] == key and st["caught_up"] is True, (s.name, st)
        assert 0 <= st["lag_seconds"] < 5.0 * SLOW, (s.name, st)
    return seen["last"], seen["states"]


def post_all(servers, batches, threads=4, accept=(200,)):
    """Posts batch i to servers[i % len(servers)], from several client threads at once;
    returns the answers [(status, headers, doc)] in batch order (every status in accept)."""
    bodies = [ndjson(b) for b in batches]
    answers = [None] * len(batches)
    nxt = itertools.count()
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next(nxt)
            if i >= len(batches):
                return
            s = servers[i % len(servers)]
            try:
                answers[i] = post_events(s.port, bodies[i])
            except (OSError, http.client.HTTPException) as e:
                raise AssertionError(f"request {i} to {s.name}: {e!r}{logs([s])}") from None

    run_threads([worker] * threads, timeout=900.0)
    for i, (status, _, doc) in enumerate(answers):
        assert status in accept and "stream_id" in doc, (i, status, doc)
        if status == 200:
            assert doc["accepted"] == len(batches[i]) and doc["duplicates"] == 0, (i, doc)
    return answers


def check_stream_holds(redis, key, ids, bodies):
    """The stream holds exactly the entries with these IDs (in ID order), each with its request's
    body, the event keys and an origin."""
    entries = redis.xrange(key)
    assert [e for e, _ in entries] == sorted(ids, key=sid), (
        f"{len(entries)} entries for {len(ids)} acknowledged requests")
    by_id = dict(zip(ids, bodies))
    for eid, f in entries:
        assert f.get("b") == by_id[eid], (eid, f.get("b", b"")[:200])
        assert f.get("k") and f.get("o"), (eid, sorted(f))
    return entries


# ---------------------------------------------------------------------------- convergence
def test_three_replicas_converge_to_the_offline_features(fleet, redis_factory):
    redis = redis_factory()
    key = "onnxd:events:converge"
    reps = [fleet(redis, key, f"conv{i}") for i in range(3)]
    events = make_events(N_EVENTS, 21, "v")
    batches = chunks(events)
    t0 = time.monotonic()
    answers = post_all(reps, batches, threads=6)
    post_s = time.monotonic() - t0
    assert all(a[0] == 200 for a in answers)
    ids = [doc["stream_id"] for _, _, doc in answers]
    assert len(set(ids)) == len(ids), "two requests answered with the same stream_id"
    last, states = converge(reps, redis, key)
    assert last == max(ids, key=sid)
    entries = check_stream_holds(redis, key, ids, [ndjson(b) for b in batches])
    for s, st in zip(reps, states):  # every replica applied every entry once, from its start
        assert (st["entries_applied"], st["events_applied"]) == (len(batches), len(events)), (
            s.name, st)
        m = metrics(s)
        assert metric(m, "onnxd_feature_stream_applied_total") == len(events)
        assert metric(m, "onnxd_feature_stream_entries_applied_total") == len(batches)
    # offline: the stream's events in stream order (what every replica applied, in that order)
    queries = pick_queries(events, random.Random(5))
    want = offline_features(stream_events(entries), queries)
    check_s = check_against_offline(reps, queries, want)
    print(f"converge: {len(events)} events in {len(batches)} requests posted in {post_s:.1f} s; "
          f"{len(queries)} queries x {len(reps)} replicas checked in {check_s:.1f} s")


def test_replica_killed_mid_ingest_catches_up(fleet, redis_factory):
    """One replica is killed (SIGKILL) a third of the way through, just after a request was sent
    to it (its outcome unknown: the client retries it on another replica with the same event
    ids); the clients post to the other two meanwhile and retry elsewhere whatever got no
    answer. It is restarted (same arguments and --feature-dir) two thirds of the way through."""
    redis = redis_factory()
    key = "onnxd:events:kill"
    reps = [fleet(redis, key, f"kill{i}") for i in range(3)]
    victim = reps[2]
    events = make_events(max(3000, N_EVENTS * 2 // 5), 22, "k")
    batches = chunks(events, 100)
    bodies = [ndjson(b) for b in batches]
    t_recent = now_ms() - 30_000
    cut = [{"ts": t_recent + j, "user_id": f"kc-u{j % 7}", "card_id": f"kc-c{j % 5}",
            "merchant_id": f"m{j % 3}", "amount": 0.5 + j, "event_id": f"kc-{j}"}
           for j in range(50)]
    live = [True, True, True]
    lock = threading.Lock()
    nxt = itertools.count()
    done = [0]
    acked, unanswered = [], []

    def worker():
        while True:
            with lock:
                i = next(nxt)
            if i >= len(batches):
                return
            for attempt in range(200):
                with lock:
                    j = next(k % 3 for k in range(i + attempt, i + attempt + 3) if live[k % 3])
                    port = reps[j].port
                try:
                    status, _, doc = post_events(port, bodies[i])
                except (OSError, http.client.HTTPException) as e:
                    with lock:  # no answer: the entry may or may not be in the stream
                        unanswered.append((i, reps[j].name, repr(e)))
                    time.sleep(0.05)
                    continue
                assert status in (200, 202) and "stream_id" in doc, (i, reps[j].name, status, doc)
                with lock:
                    acked.append((i, doc["stream_id"]))
                    done[0] += 1
                time.sleep(0.02)  # paced: ingestion lasts long enough to kill and restart in it
                break
            else:
                raise AssertionError(f"request {i} never answered: {unanswered[-3:]}")

    def controller():
        wait_until(lambda: done[0] >= len(batches) // 3, 300.0 * SLOW, "a third posted",
                   interval=0.01)
        body = ndjson(cut)
        sock = socket.create_connection(("127.0.0.1", victim.port), timeout=10)
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/x-ndjson\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(random.Random(8).uniform(0, 0.003))
        victim.expect_dead = True
        victim.proc.kill()
        victim.proc.wait()
        sock.close()
        with lock:
            live[2] = False
            at_kill = done[0]
        # the client's retry of the cut request, elsewhere, with the same event ids
        status, _, retry = post_events(reps[0].port, body)
        assert status == 200 and retry["accepted"] + retry["duplicates"] == len(cut), retry
        wait_until(lambda: done[0] >= 2 * len(batches) // 3, 300.0 * SLOW,
                   "two thirds posted", interval=0.01)
        victim.restart()  # same arguments, same --feature-dir; returns once ready
        victim.expect_dead = False
        with lock:
            live[2] = True
        return at_kill, retry

    t0 = time.monotonic()
    at_kill, retry = run_threads([controller] + [worker] * 4, timeout=900.0)[0]
    post_s = time.monotonic() - t0
    assert victim.alive()
    # the restarted replica takes requests again
    tail = [{"ts": now_ms() - 1000, "user_id": "k-tail-u", "card_id": "k-tail-c",
             "merchant_id": "m1", "amount": 3.25, "event_id": "k-tail-0"}]
    status, _, doc = post_events(victim.port, ndjson(tail))
    assert status == 200 and doc["accepted"] == 1, (status, doc)
    last, states = converge(reps, redis, key)
    assert [st["applied_id"] for st in states] == [last] * 3, states  # the victim's too
    entries = redis.xrange(key)
    ids = {e for e, _ in entries}
    assert {s for _, s in acked} <= ids, "an acknowledged request is not in the stream"
    # the requests, the cut one's retry and the tail; plus whatever got appended unanswered
    assert len(acked) + 2 <= len(entries) <= len(acked) + 2 + len(unanswered) + 1, (
        len(entries), len(acked), len(unanswered))
    known = set(bodies) | {ndjson(cut), ndjson(tail)}
    assert all(f["b"] in known for _, f in entries), "an entry that no request posted"
    n_cut = sum(f["b"] == ndjson(cut) for _, f in entries)
    # the retry found the cut request's events already there exactly when it was appended
    assert (n_cut, retry["duplicates"]) in ((1, 0), (2, len(cut)), (2, 0)), (n_cut, retry)
    kept = first_of_each_id(stream_events(entries))
    everything = events + cut + tail
    assert sorted(e["event_id"] for e in kept) == sorted(e["event_id"] for e in everything)
    queries = pick_queries(everything, random.Random(6))
    want = offline_features(kept, queries)
    check_s = check_against_offline(reps, queries, want)
    print(f"kill: {len(events)} events, {len(batches)} requests in {post_s:.1f} s, killed after "
          f"{at_kill} (the cut request {'was' if n_cut == 2 else 'was not'} appended, retry "
          f"{retry}), {len(unanswered)} other requests unanswered (retried), {len(entries)} "
          f"entries; {len(queries)} queries x 3 checked in {check_s:.1f} s")


# ---------------------------------------------------------------------------- trim, bootstrap
TRIM = ["--feature-stream-trim-ms", "1000", "--feature-stream-trim-every-ms", "300"]


def wait_gap(s):
    """Waits for a replica with an empty store to report the gap; checks it is not ready."""
    wait_until(lambda: stream_status(s).get("state") == "gap", 30.0 * SLOW,
               lambda: f"{s.name} to report a gap: {stream_status(s)}{logs([s])}", interval=0.1)
    status, doc = ready(s)
    assert status == 503 and doc["ready"] is False, (status, doc)
    assert doc["error"].startswith("feature stream"), doc


def trimmed_up_to(redis, key, sid_last, servers):
    """Waits until every entry up to sid_last has been trimmed from the stream; returns XINFO."""
    def gone():
        info = redis.xinfo_stream(key)
        first = info["first-entry"]
        return (first is None or sid(first[0]) > sid(sid_last)) and info

    return wait_until(gone, 30.0 * SLOW,
                      lambda: f"the stream to be trimmed past {sid_last}: "
                      f"{redis.xinfo_stream(key)}" + logs(servers), interval=0.1)


def test_trimmed_stream_and_a_replica_bootstrapped_from_a_peer(fleet, redis_factory):
    redis = redis_factory()
    key = "onnxd:events:trim"
    a, b = (fleet(redis, key, f"trim-{n}", TRIM) for n in "ab")
    events = make_events(max(2000, N_EVENTS // 8), 23, "t", unique_ts=True)
    # quiet entities: two events each, three days ago, in the first request only
    t_old = events[0]["ts"] - 60_000
    quiet = [{"ts": t_old - 10_000 * k - d, "user_id": f"tq-u{k}", "card_id": f"tq-c{k}",
              "merchant_id": f"m{k}", "amount": 7.5 + k, "event_id": f"tq-{k}-{d}"}
             for k in range(5) for d in (5000, 0)]
    quiet.sort(key=lambda e: e["ts"])
    data = quiet + events
    n1, n2 = len(data) // 2, 3 * len(data) // 4
    d1, d2, d3 = chunks(data[:n1], 200), chunks(data[n1:n2], 200), chunks(data[n2:], 200)

    ids1 = [doc["stream_id"] for _, _, doc in post_all([a, b], d1, threads=2)]
    info = trimmed_up_to(redis, key, max(ids1, key=sid), [a, b])
    assert info["entries-added"] == len(d1) and info["length"] < len(d1), info
    ids2 = [doc["stream_id"] for _, _, doc in post_all([a, b], d2, threads=2)]
    trimmed_up_to(redis, key, max(ids2, key=sid), [a, b])  # the whole stream: XLEN 0
    assert redis.xlen(key) == 0

    # bootstrap from a peer: ready (server_factory waits for it) at the peers' applied_id
    boot = fleet(redis, key, "boot", TRIM + ["--feature-bootstrap", f"http://{a.url}"])
    last, _ = converge([a, b, boot], redis, key)
    assert last == max(ids2, key=sid)
    # then it follows: new requests through all three
    ids3 = [doc["stream_id"] for _, _, doc in post_all([a, b, boot], d3, threads=3)]
    converge([a, b, boot], redis, key)
    trims = sum(metric(metrics(s), "onnxd_feature_stream_trims_total") for s in (a, b, boot))
    assert trims >= 1, trims
    info = redis.xinfo_stream(key)
    assert info["entries-added"] == len(d1) + len(d2) + len(d3), info
    assert info["last-generated-id"] == max(ids3, key=sid), info

    t_now = now_ms()
    queries = pick_queries(data, random.Random(7))
    queries += [(f"tq-u{k}", f"tq-c{k}", t_now) for k in range(5)]  # quiet for three days
    want = offline_features(data, queries)
    assert all(w[7] > 200_000 and w[2] == 0 for w in want[-5:]), want[-5:]
    check_s = check_against_offline([a, b, boot], queries, want)
    print(f"trim: {len(data)} events in {len(d1) + len(d2) + len(d3)} requests; "
          f"{len(queries)} queries x 3 checked in {check_s:.1f} s")


def test_empty_store_without_bootstrap_after_a_trim_is_a_gap(fleet, redis_factory):
    """Two replicas with an empty store and no --feature-bootstrap, started once the stream has
    lost its first entries (one while later entries remain, one when none remain): neither
    applies anything nor becomes ready, even as new entries arrive. A request posted to one of
    them is appended all the same and answered 202 at its timeout (in the stream, not applied
    there); the replica that follows the stream applies it."""
    redis = redis_factory()
    key = "onnxd:events:gap"
    a = fleet(redis, key, "gap-peer", TRIM)
    t0 = now_ms() - 60_000
    evs = [{"ts": t0 + i, "user_id": f"g-u{i % 13}", "card_id": f"g-c{i % 7}",
            "merchant_id": f"m{i % 5}", "amount": 1.0 + i % 10, "event_id": f"g-{i}"}
           for i in range(600)]
    batches = chunks(evs, 50)
    ids1 = [doc["stream_id"] for _, _, doc in post_all([a], batches[:6], threads=1)]
    trimmed_up_to(redis, key, max(ids1, key=sid), [a])
    post_all([a], batches[6:9], threads=1)
    partial = fleet(redis, key, "gap-partial", ready=False)
    wait_gap(partial)
    wait_until(lambda: redis.xlen(key) == 0, 30.0 * SLOW,
               lambda: f"the whole stream to be trimmed: {redis.xinfo_stream(key)}", interval=0.1)
    empty = fleet(redis, key, "gap-empty", ready=False, timeout_ms=1000)
    wait_gap(empty)
    post_all([a], batches[9:], threads=1)
    # posted to the replica that cannot apply: appended all the same, answered 202 at the
    # timeout (in the stream, not applied here), and applied by the replica that follows
    late = {"ts": t0 + 700, "user_id": "g-late", "card_id": "g-late-c", "merchant_id": "m1",
            "amount": 3.0, "event_id": "g-late-0"}
    t = time.monotonic()
    status, _, doc = post_events(empty.port, ndjson([late]))
    took = time.monotonic() - t
    assert status == 202 and doc["applied"] is False and doc.get("detail"), (status, doc)
    assert 0.9 <= took <= 1.0 + DEADLINE_SLACK_S * SLOW, took
    assert doc["stream_id"] in [e for e, _ in redis.xrange(key)], doc
    converge([a], redis, key)
    cl = Client(a)
    try:
        assert score(cl, "g-late", "g-late-c", t0 + 10_000)[[U_CNT24, C_CNT24]].tolist() == [1, 1]
    finally:
        cl.close()
    time.sleep(0.5)
    for g in (partial, empty):
        st = stream_status(g)
        assert st["state"] == "gap" and st["entries_applied"] == 0, (g.name, st)
        assert ready(g)[0] == 503, g.name
        cl = Client(g)
        try:  # nothing applied: every entity unknown
            assert score(cl, "g-u1", "g-c1", t0 + 10_000)[:3].tolist() == [0, 0, 0]
        finally:
            cl.close()


# ---------------------------------------------------------------------------- Redis restarts
OUTAGES = ("SIGKILL", "SIGKILL", "SIGKILL", "SIGTERM")


def test_redis_restarts_lose_and_duplicate_nothing(fleet, redis_factory):
    """Redis with an append-only file fsynced on every write is killed (SIGKILL) and started
    again on the same port and directory, three times, then shut down (SIGTERM) and started
    again, while four clients post continuously: request k is 5 events of user p<k> / card
    pc<k>, with event ids, sent again (same body, same ids) until it is acknowledged (200/202).
    Every answer on the way is a 503 with Retry-After (not in the stream) or a 504 (the
    connection broke after the append was sent: the outcome is unknown). Afterwards: no 503
    attempt is in the stream (a request's entries are its acknowledged one plus at most one per
    504), and every replica holds every request's events exactly once (the ids make a 504
    attempt that did land count as duplicates)."""
    redis = redis_factory(persist=True)
    key = "onnxd:events:restart"
    timeout_ms = 1000
    reps = [fleet(redis, key, f"rr{i}", timeout_ms=timeout_ms) for i in range(3)]
    t0 = now_ms() - 600_000
    per = 5

    def body(k):
        return ndjson([{"ts": t0 + k * 10 + j, "user_id": f"p{k}", "card_id": f"pc{k}",
                        "merchant_id": f"m{j}", "amount": 1.25 * (j + 1),
                        "event_id": f"p{k}-{j}"} for j in range(per)])

    nxt = itertools.count()
    lock = threading.Lock()
    stop = threading.Event()
    attempts = {}  # k -> [(status, headers, doc, seconds, sent at, replica)]
    errors = []
    timeline = []  # (time.time(), what happened to Redis)

    def worker():
        while not stop.is_set():
            k = next(nxt)
            tries = []
            for n in itertools.count():  # until acknowledged, even after stop
                s = reps[(k + n) % 3]
                t, sent = time.monotonic(), time.time()
                try:
                    status, headers, doc = post_events(s.port, body(k), timeout=30.0)
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        errors.append((k, repr(e)))
                    return
                tries.append((status, headers, doc, time.monotonic() - t, sent, s.name))
                if status in (200, 202) or n > 200:
                    break
                time.sleep(0.05)
            with lock:
                attempts[k] = tries
            time.sleep(0.01)

    def acked():
        with lock:
            return sum(1 for a in attempts.values() if a[-1][0] in (200, 202))

    def controller():
        try:
            wait_until(lambda: acked() >= 30, 60.0 * SLOW, "first acknowledgements",
                       interval=0.05)
            outages = []
            for how in OUTAGES:
                before = acked()
                timeline.append((time.time(), how))
                if how == "SIGKILL":
                    redis.kill()
                else:
                    assert redis.shutdown() == 0
                timeline.append((time.time(), "exited"))
                time.sleep(1.0)
                redis.start()  # same port, same directory: the append-only file is read back
                timeline.append((time.time(), "started"))
                wait_until(lambda: acked() >= before + 30, 60.0 * SLOW,
                           lambda: f"acknowledgements after the {how} restart" + logs(reps),
                           interval=0.05)
                outages.append(how)
            return outages
        finally:
            stop.set()

    assert run_threads([controller] + [worker] * 4, timeout=600.0)[0] == list(OUTAGES)
    assert not errors, f"requests without an answer: {errors[:5]}"
    ok, n503, n504 = {}, 0, {}
    for k, tries in sorted(attempts.items()):
        for status, headers, doc, *_ in tries[:-1]:
            assert status in (503, 504), (k, status, headers, doc)
            assert doc.get("error"), (k, status, doc)
            if status == 503:
                assert headers.get("retry-after") == "1", (k, headers, doc)
                n503 += 1
            else:
                n504[k] = n504.get(k, 0) + 1
        status, headers, doc, *_ = tries[-1]
        assert status in (200, 202), (k, tries)
        if status == 200:
            # a 504 attempt that landed makes the events duplicates of it
            assert doc["accepted"] + doc["duplicates"] == per, (k, doc)
            assert doc["duplicates"] in ((0, per) if n504.get(k) else (0,)), (k, tries)
        else:
            assert doc["applied"] is False, (k, doc)
        ok[k] = doc["stream_id"]
    assert n503, "no request was refused: the outages were not seen"
    _, states = converge(reps, redis, key)
    t_end = t0 + 10 * (max(attempts) + 1)

    def counts(s):
        cl = Client(s)
        try:
            return {k: (int(f[U_CNT24]), int(f[C_CNT24]))
                    for k in attempts for f in [score(cl, f"p{k}", f"pc{k}", t_end)]}
        finally:
            cl.close()

    wrong = [(s.name, k, c) for s, got in
             zip(reps, run_threads([lambda s=s: counts(s) for s in reps], timeout=600.0))
             for k, c in got.items() if c != (per, per)]
    assert not wrong, f"(replica, request, (user, card) cnt_24h) not stored once: {wrong[:12]}"
    # the stream: each request's acknowledged entry, plus at most one entry per 504 attempt;
    # nothing of a 503
    entries = redis.xrange(key)
    by_k = {}
    for e, f in entries:
        k = int(json.loads(f["b"].splitlines()[0])["user_id"][1:])
        assert f["b"] == body(k), (e, k)
        by_k.setdefault(k, []).append(e)
    bad = [(k, by_k.get(k), ok[k], n504.get(k, 0)) for k in attempts
           if ok[k] not in by_k.get(k, []) or len(by_k[k]) > 1 + n504.get(k, 0)]
    assert not bad, (f"(request, its entries, acknowledged id, 504 answers) wrong: {bad[:8]}; "
                     f"Redis: {timeline}")
    for s, st in zip(reps, states):
        assert st["events_applied"] == per * len(attempts), (s.name, st)
        assert ready(s)[0] == 200, s.name
    n202 = sum(1 for a in attempts.values() if a[-1][0] == 202)
    landed = sum(len(v) - 1 for v in by_k.values())
    print(f"redis restarts: {len(attempts)} requests acknowledged ({n202} with 202), {n503} "
          f"attempts refused with 503, {sum(n504.values())} answered 504 ({landed} of them "
          f"in the stream); slowest answer "
          f"{max(t[3] for a in attempts.values() for t in a):.2f} s")


def test_redis_paused_503_within_the_deadline_and_scoring_goes_on(fleet, redis_factory):
    redis = redis_factory()
    key = "onnxd:events:pause"
    timeout_ms = 1000
    r1, r2 = (fleet(redis, key, f"pause{i}", timeout_ms=timeout_ms) for i in (1, 2))
    t0 = now_ms() - 60_000

    def evs(user, n):
        return ndjson([{"ts": t0 + j, "user_id": user, "card_id": f"{user}-c",
                        "merchant_id": "m1", "amount": 2.5, "event_id": f"{user}-{j}"}
                       for j in range(n)])

    status, _, doc = post_events(r1.port, evs("sp-ok", 3))
    assert status == 200, doc
    converge([r1, r2], redis, key)
    xlen0 = redis.xlen(key)
    fails0 = metric(metrics(r1), "onnxd_feature_stream_append_failures_total")
    cl = Client(r1)

    def lag(s):
        return metric(metrics(s), "onnxd_feature_stream_lag_seconds")

    def lag_over_1s():
        v = lag(r1)
        return v if v > 1.0 else None

    redis.proc.send_signal(signal.SIGSTOP)
    try:
        took = []
        for i in range(3):
            t = time.monotonic()
            status, headers, doc = post_events(r1.port, evs(f"sp-no{i}", 2), timeout=30.0)
            took.append(time.monotonic() - t)
            assert status == 503, (status, doc)
            assert headers.get("retry-after") == "1" and doc.get("error"), (headers, doc)
            assert took[-1] < timeout_ms / 1000 + DEADLINE_SLACK_S, took
            # scoring goes on from the local store meanwhile
            got = score(cl, "sp-ok", "sp-ok-c", t0 + 1000)
            assert got[:3].tolist() == [3, 3, 3] and got[8:11].tolist() == [3, 3, 3], got
        lag1 = wait_until(lag_over_1s, 30.0 * SLOW,
                          lambda: f"the lag to pass 1 s (now {lag(r1)})" + logs([r1]),
                          interval=0.1)
        time.sleep(1.0)
        lag2 = lag(r1)
        assert lag2 > lag1, (lag1, lag2)
        assert lag(r2) > 1.0
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    # back: ingestion works again; the refused requests never appear
    seen = []

    def posted_after():
        status, _, doc = post_events(r1.port, evs("sp-after", 2), timeout=30.0)
        seen.append(status)
        assert status in (200, 503), (status, doc)
        return status == 200

    wait_until(posted_after, 30.0 * SLOW, lambda: f"ingestion after SIGCONT: {seen}" + logs([r1]),
               interval=0.2)
    time.sleep(0.5)  # the appends Redis received while stopped have run by now
    converge([r1, r2], redis, key)
    assert redis.xlen(key) == xlen0 + 1, redis.xinfo_stream(key)
    assert all(b"sp-no" not in f["b"] for _, f in redis.xrange(key))
    for s in (r1, r2):
        c = Client(s)
        try:
            for i in range(3):
                got = score(c, f"sp-no{i}", f"sp-no{i}-c", t0 + 1000)
                assert got[:3].tolist() == [0, 0, 0] and got[7] == -1, (s.name, i, got)
            assert score(c, "sp-after", "sp-after-c", t0 + 1000)[:3].tolist() == [2, 2, 2]
            assert score(c, "sp-ok", "sp-ok-c", t0 + 1000)[:3].tolist() == [3, 3, 3]
        finally:
            c.close()
    assert metric(metrics(r1), "onnxd_feature_stream_append_failures_total") >= fails0 + 3
    cl.close()
    print(f"pause: 503 after {', '.join(f'{t:.2f}' for t in took)} s; lag {lag1:.2f} -> "
          f"{lag2:.2f} s; answers after SIGCONT {seen}")


# ---------------------------------------------------------------------------- small ones
@pytest.fixture(scope="module")
def solo(server_factory, fv_repo, tmp_path_factory):
    """One replica of stream "onnxd:events:solo" on a Redis of its own: (redis, server)."""
    d = tmp_path_factory.mktemp("solo")
    redis = Redis(d / "redis")
    redis.start()
    try:
        s = keep_alive_checked(server_factory(
            fv_repo, replica_args(redis, "onnxd:events:solo", d / "store"), name="solo"))
        yield redis, s
        forget(s)
        err = s.stop()
        assert err is None, f"{err}\n{s.log_tail()}"
    finally:
        redis.stop()


SOLO_KEY = "onnxd:events:solo"


SOLO_T0 = now_ms() - 60_000  # the solo tests' events are at SOLO_T0 + k ms, scored at SOLO_T
SOLO_T = SOLO_T0 + 1000


def solo_event(user, k, amount=4.0):
    return {"ts": SOLO_T0 + k, "user_id": user, "card_id": f"{user}-c",
            "merchant_id": f"m{k % 3}", "amount": amount, "event_id": f"{user}-{k}"}


def test_bad_line_is_400_and_nothing_is_appended(solo):
    redis, s = solo
    status, _, doc = post_events(s.port, ndjson([solo_event("bl-ok", 0)]))
    assert status == 200, doc
    converge([s], redis, SOLO_KEY)
    n0, applied0 = redis.xlen(SOLO_KEY), stream_status(s)["applied_id"]
    good = solo_event("bl-u", 1)
    cases = [
        (ndjson([good]) + b'{"ts": 1, "user_id": "bl-u"}\n', "line 2"),
        (ndjson([good]) + json.dumps({**good, "amount": "5"}).encode() + b"\n", "line 2"),
        (ndjson([good, good]) + b"{not json}\n", "line 3"),
        (json.dumps([good, {**good, "ts": 1.5}]).encode(), "event 2"),
    ]
    for body, where in cases:
        status, _, doc = post_events(s.port, body)
        assert status == 400 and where in doc["error"], (body[-60:], status, doc)
        assert "stream_id" not in doc
    assert redis.xlen(SOLO_KEY) == n0
    assert redis.xinfo_stream(SOLO_KEY)["entries-added"] == n0
    assert stream_status(s)["applied_id"] == applied0
    cl = Client(s)
    try:
        assert score(cl, "bl-u", "bl-u-c", SOLO_T)[:3].tolist() == [0, 0, 0]
    finally:
        cl.close()


def test_stream_status_and_metrics(solo):
    redis, s = solo
    for k in range(2):
        status, _, doc = post_events(s.port, ndjson([solo_event("mx", 2 * k),
                                                     solo_event("mx", 2 * k + 1)]))
        assert status == 200, doc
    last, (st,) = converge([s], redis, SOLO_KEY)
    assert st["applied_id"] == last and st["state"] == "following"
    assert set(st) >= {"key", "applied_id", "lag_seconds", "caught_up", "state",
                       "entries_applied", "events_applied"}, st
    m = metrics(s)
    for name in ("onnxd_feature_stream_lag_seconds", "onnxd_feature_stream_applied_total",
                 "onnxd_feature_stream_entries_applied_total",
                 "onnxd_feature_stream_last_applied_ms",
                 "onnxd_feature_stream_append_failures_total",
                 "onnxd_feature_stream_trims_total",
                 "onnxd_feature_stream_apply_delay_seconds_sum",
                 "onnxd_feature_stream_apply_delay_seconds_count"):
        assert f"\n{name} " in m, f"no sample {name} in /metrics"
    for t in ("onnxd_feature_stream_lag_seconds gauge", "onnxd_feature_stream_applied_total "
              "counter", "onnxd_feature_stream_apply_delay_seconds histogram"):
        assert f"# TYPE {t}\n" in m, t
    assert 'onnxd_feature_stream_apply_delay_seconds_bucket{le="+Inf"} ' in m
    assert metric(m, "onnxd_feature_stream_last_applied_ms") == sid(last)[0]
    info = r'^onnxd_feature_stream_info\{key="%s",applied_id="%s"(,[a-z_]+="[^"]*")*\} 1$'
    assert re.search(info % (re.escape(SOLO_KEY), last), m, re.M), "no stream info sample"
    assert metric(m, "onnxd_feature_stream_applied_total") == st["events_applied"]
    entries = metric(m, "onnxd_feature_stream_entries_applied_total")
    assert entries == st["entries_applied"] >= 2
    assert metric(m, "onnxd_feature_stream_apply_delay_seconds_count") == entries
    assert metric(m, "onnxd_feature_stream_lag_seconds") < 5.0 * SLOW


def test_snapshot_is_the_lmdb_store_and_a_replica_starts_from_it(solo, server_factory, fv_repo,
                                                                 tmp_path):
    redis, s = solo
    evs = [solo_event("snap", k, 1.5 + k) for k in range(4)]
    status, _, doc = post_events(s.port, ndjson(evs))
    assert status == 200, doc
    last, _ = converge([s], redis, SOLO_KEY)
    status, headers, data = request(s.port, "GET", "/v1/features/snapshot")
    assert status == 200, data[:200]
    assert headers.get("content-type") == "application/octet-stream", headers
    assert headers.get("x-onnxd-stream-id") == last, headers
    assert len(data) >= 8192 and struct.unpack_from("<I", data, 16)[0] == 0xBEEFC0DE, data[:32]
    # a replica started on that file (no bootstrap) is at its ID and follows from there
    store = tmp_path / "from-snapshot"
    store.mkdir()
    (store / "data.mdb").write_bytes(data)
    r = server_factory(fv_repo, replica_args(redis, SOLO_KEY, store), name="from-snapshot")
    try:
        assert stream_status(r)["applied_id"] == last
        status, _, doc = post_events(s.port, ndjson([solo_event("snap", 4, 9.0)]))
        assert status == 200, doc
        converge([s, r], redis, SOLO_KEY)
        st = stream_status(r)
        assert st["entries_applied"] == 1 and st["events_applied"] == 1, st
        t = SOLO_T
        cl1, cl2 = Client(s), Client(r)
        try:
            f1, f2 = score(cl1, "snap", "snap-c", t), score(cl2, "snap", "snap-c", t)
            assert np.array_equal(bits(f1), bits(f2)), (f1, f2)
            assert f1[2] == 5 and f1[5] == np.float32(1.5 + 2.5 + 3.5 + 4.5 + 9.0), f1
        finally:
            cl1.close()
            cl2.close()
    finally:
        err = r.stop()
        assert err is None, f"{err}\n{r.log_tail()}"


def test_without_the_stream_flag_events_are_local(solo, server_factory, fv_repo, tmp_path):
    redis, _ = solo
    streams0 = redis.call("SCAN", 0, "COUNT", 1000, "TYPE", "stream")[1]
    args = ["--feature-dir", str(tmp_path / "store"), "--feature-sync", "none", "--redis",
            redis.address]
    s = server_factory(fv_repo, args, name="no-stream")
    try:
        status, _, doc = post_events(s.port, ndjson([solo_event("local", 0),
                                                     solo_event("local", 1)]))
        assert (status, doc) == (200, {"accepted": 2, "duplicates": 0})
        cl = Client(s)
        try:
            assert score(cl, "local", "local-c", SOLO_T)[:3].tolist() == [2, 2, 2]
        finally:
            cl.close()
        assert sorted(redis.call("SCAN", 0, "COUNT", 1000, "TYPE", "stream")[1]) == sorted(
            streams0)
    finally:
        err = s.stop()
        assert err is None, f"{err}\n{s.log_tail()}"


def start_fails(args):
    """Runs onnxd with args, which it must refuse at start: (exit status, stderr)."""
    p = subprocess.Popen([str(_server_binary()), *args], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"onnxd {' '.join(args)} did not exit within 30 s:\n{out}{err}",
                    pytrace=False)
    return p.returncode, out + err


def test_stream_flags_are_checked_at_start(solo, fv_repo, tmp_path):
    redis, _ = solo
    base = ["--model-repository", str(fv_repo), "--host", "127.0.0.1", "--http-port", "0",
            "--grpc-port", "-1", "--feature-dir", str(tmp_path / "store"), "--feature-sync",
            "none"]
    rc, text = start_fails(base + ["--feature-events-stream", "k"])
    assert rc != 0 and "--redis" in text, (rc, text)
    rc, text = start_fails(base + ["--feature-events-stream", "k", "--redis", redis.address,
                                   "--feature-retention-ms", str(2 * 86_400_000),
                                   "--feature-stream-trim-ms", "1000"])
    assert rc != 0 and "--feature-stream-trim-ms" in text, (rc, text)
