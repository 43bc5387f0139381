"""The event log of --feature-events-stream as every replica reads it, black-box (two onnxd
replicas on one real redis-server):

- Entries that onnxd did not write (another program XADDs to the key: no body, a body that is
  not a request, events whose key fields name internal entities) are skipped by every replica
  alike and counted (entries_skipped, onnxd_feature_stream_entries_skipped_total); the
  replicas keep applying what follows, and their applied IDs move past them.
- The per-entity cap decides per entry, from the log alone: a request that would take an entity
  over --feature-max-events-per-entity-24h is answered 429 by the replica it was posted to, is
  in the stream, and is refused whole by the other replica too (same counts on both), while
  the entries before and after it are applied.
- Duplicates by event_id across replicas: the same event id posted to two replicas is stored
  once, by the first entry in the log, on both.
- GET /v1/features/snapshot is an admin endpoint: with --admin-token-file it needs the token
  (401 without it), and --feature-bootstrap sends the token.
"""

import http.client
import json
import sys
import time

import pytest

from conftest import ROOT, build_repo, keep_alive_checked
from test_features import VIEW, Client, _or_fail, identity_model

sys.path.insert(0, str(ROOT / "tests"))
import services  # noqa: E402

U_CNT24, C_CNT24 = 2, 10


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-log-repo")
    return build_repo(root / "repo", {"fv": {"model": identity_model(17),
                                             "config": {"feature_view": VIEW}}})


@pytest.fixture
def redis(tmp_path):
    d = tmp_path / "redis"
    d.mkdir()
    r = _or_fail(services.Redis, d)
    _or_fail(r.start)
    yield r
    r.stop()


def req(port, method, path, body=None, headers=None, timeout=30):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def post(port, events, headers=None):
    body = "".join(json.dumps(e) + "\n" for e in events).encode()
    h = {"Content-Type": "application/x-ndjson", **(headers or {})}
    status, data, _ = req(port, "POST", "/v1/events", body, h)
    return status, json.loads(data)


def status_of(port):
    s, data, _ = req(port, "GET", "/v1/features/stream")
    assert s == 200, data
    return json.loads(data)


def wait_applied(ports, stream_id, timeout=30):
    """Waits until every replica has applied up to stream_id ("ms-seq")."""
    want = tuple(int(x) for x in stream_id.split("-"))
    deadline = time.monotonic() + timeout
    while True:
        st = [status_of(p) for p in ports]
        if all(tuple(int(x) for x in s["applied_id"].split("-")) >= want for s in st):
            return st
        assert time.monotonic() < deadline, f"not applied up to {stream_id} in {timeout} s: {st}"
        time.sleep(0.05)


def start_replicas(server_factory, repo, redis, tmp_path, n=2, extra=()):
    out = []
    for i in range(n):
        s = server_factory(repo, ["--feature-dir", str(tmp_path / f"store{i}"), "--feature-sync",
                                  "none", "--redis", redis.address, "--feature-events-stream",
                                  "log", *extra], name=f"stream-log-{i}")
        out.append(keep_alive_checked(s))
    return out


def counts(server, user, card, t):
    status, doc, got, _ = Client(server).score("fv", {"user_id": user, "card_id": card, "ts": t,
                                                      "return_features": True}, 1.0)
    assert status == 200, doc
    return int(got[U_CNT24]), int(got[C_CNT24])


def ev(t, user, card, **kw):
    return {"ts": t, "user_id": user, "card_id": card, "merchant_id": "m", "amount": 1.0, **kw}


def test_foreign_entries_are_skipped_alike(server_factory, repo, redis, tmp_path):
    a, b = start_replicas(server_factory, repo, redis, tmp_path)
    t0 = int(time.time() * 1000) - 60_000
    s, doc = post(a.port, [ev(t0, "fu", "fc")])
    assert s == 200, doc
    # written to the key by something else than onnxd
    redis.call("XADD", "log", "*", "hello", "world")
    redis.call("XADD", "log", "*", "o", "x-1", "k", "user_id,card_id", "b", "not json")
    redis.call("XADD", "log", "*", "o", "x-2", "k", "user_id,card_id", "b",
               json.dumps(ev(t0 + 1, "fu", "fc", amount="NaN")))
    # key fields that would name internal entities ("~x:...")
    redis.call("XADD", "log", "*", "o", "x-3", "k", "~x_id", "b",
               json.dumps({**ev(t0 + 2, "fu", "fc"), "~x_id": "1"}))
    s, doc = post(b.port, [ev(t0 + 3, "fu", "fc")])
    assert s == 200, doc
    st = wait_applied([a.port, b.port], doc["stream_id"])
    for x in st:
        assert x["entries_skipped"] == 4, st
        assert x["entries_applied"] == 6 and x["events_applied"] == 2, st
        assert x["applied_id"] == doc["stream_id"], st
    for srv in (a, b):
        assert counts(srv, "fu", "fc", t0 + 10) == (2, 2)
        s, data, _ = req(srv.port, "GET", "/metrics")
        assert b"onnxd_feature_stream_entries_skipped_total 4" in data
        assert "is not a valid request; skipped" in srv.log_tail(200)


def test_cap_refuses_the_same_entry_on_every_replica(server_factory, repo, redis, tmp_path):
    a, b = start_replicas(server_factory, repo, redis, tmp_path,
                          extra=["--feature-max-events-per-entity-24h", "3"])
    t0 = int(time.time() * 1000) - 60_000
    s, doc = post(a.port, [ev(t0 + i, "cu", f"cc{i}") for i in range(2)])
    assert s == 200 and doc["accepted"] == 2, doc
    before = doc["stream_id"]
    # two more for user cu: 4 in the window, over the cap of 3 -> refused whole, everywhere
    s, doc = post(b.port, [ev(t0 + 10, "cu", "cx"), ev(t0 + 11, "cu", "cy")])
    assert s == 429, doc
    assert "user:cu" in doc["error"], doc
    s, doc = post(a.port, [ev(t0 + 20, "cu", "cz")])
    assert s == 200 and doc["accepted"] == 1, doc
    assert doc["stream_id"] > before
    st = wait_applied([a.port, b.port], doc["stream_id"])
    for x in st:
        assert x["entries_refused"] == 1 and x["events_applied"] == 3, st
    for srv in (a, b):
        assert counts(srv, "cu", "cx", t0 + 30) == (3, 0)  # cx's only event was refused
        assert counts(srv, "cu", "cz", t0 + 30) == (3, 1)
    assert redis.call("XLEN", "log") == 3  # the refused request is in the log


def test_event_ids_deduplicate_across_replicas(server_factory, repo, redis, tmp_path):
    a, b = start_replicas(server_factory, repo, redis, tmp_path)
    t0 = int(time.time() * 1000) - 60_000
    s1, d1 = post(a.port, [ev(t0, "du", "dc", event_id="same"), ev(t0 + 1, "du", "dc")])
    s2, d2 = post(b.port, [ev(t0 + 2, "du", "dc", event_id="same")])
    assert (s1, s2) == (200, 200), (d1, d2)
    assert d1["accepted"] == 2 and d1["duplicates"] == 0, d1
    assert d2["accepted"] == 0 and d2["duplicates"] == 1, d2
    wait_applied([a.port, b.port], max(d1["stream_id"], d2["stream_id"]))
    for srv in (a, b):
        assert counts(srv, "du", "dc", t0 + 10) == (2, 2)


def test_snapshot_needs_the_admin_token_and_bootstrap_sends_it(server_factory, repo, redis,
                                                              tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret-token\n")
    auth = {"Authorization": "Bearer s3cret-token"}
    (a,) = start_replicas(server_factory, repo, redis, tmp_path, n=1,
                          extra=["--admin-token-file", str(tok)])
    t0 = int(time.time() * 1000) - 60_000
    s, doc = post(a.port, [ev(t0, "su", "sc")], headers=auth)
    assert s == 200, doc
    s, data, _ = req(a.port, "GET", "/v1/features/snapshot")
    assert s == 401, data
    s, data, hdrs = req(a.port, "GET", "/v1/features/snapshot", headers=auth)
    assert s == 200 and len(data) > 4096
    assert hdrs.get("X-Onnxd-Stream-Id") == doc["stream_id"], hdrs
    c = keep_alive_checked(server_factory(repo, [
        "--feature-dir", str(tmp_path / "boot"), "--feature-sync", "none", "--redis",
        redis.address, "--feature-events-stream", "log", "--admin-token-file", str(tok),
        "--feature-bootstrap", f"http://127.0.0.1:{a.port}"], name="stream-log-boot"))
    assert "feature bootstrap:" in c.log_tail(200)
    assert status_of(c.port)["applied_id"] == doc["stream_id"]
    assert counts(c, "su", "sc", t0 + 10) == (1, 1)
    # the bootstrapped replica applied nothing itself: the events came with the snapshot
    assert status_of(c.port)["entries_applied"] == 0


def test_full_store_stalls_its_replica_only(server_factory, repo, redis, tmp_path):
    """A replica whose store is full (--feature-store-max-bytes) cannot apply the next entry: it
    keeps retrying it (skipping would make it differ from the others for good), says so
    (state "apply_failing", the error counted), goes on scoring from what it applied, and a
    request posted to it is appended all the same and answered 202 (in the stream, not applied
    there). The other replica applies everything."""
    a, = start_replicas(server_factory, repo, redis, tmp_path, n=1,
                        extra=["--feature-store-max-bytes", str(4 << 20),
                               "--feature-stream-timeout-ms", "1000"])
    b = keep_alive_checked(server_factory(repo, [
        "--feature-dir", str(tmp_path / "big"), "--feature-sync", "none", "--redis",
        redis.address, "--feature-events-stream", "log"], name="stream-log-big"))
    t0 = int(time.time() * 1000) - 3_600_000
    n, last = 2000, None
    for k in range(200):  # 4 MiB holds a few dozen of these at most
        evs = [ev(t0 + i, f"f{k}u{i}", f"f{k}c{i}") for i in range(n)]
        s, doc = post(b.port, evs)
        assert s == 200 and doc["accepted"] == n, (s, doc)
        last = doc["stream_id"]
        if status_of(a.port)["state"] == "apply_failing":
            break
    else:
        pytest.fail(f"replica a never stopped applying: {status_of(a.port)}")
    wait_applied([b.port], last)
    sa, sb = status_of(a.port), status_of(b.port)
    assert sa["state"] == "apply_failing" and sa["entries_applied"] < sb["entries_applied"], (sa, sb)
    s, _, _ = req(a.port, "GET", "/metrics")
    assert s == 200
    assert counts(a, "f0u0", "f0c0", t0 + 10_000) == (1, 1)  # applied before: still scored
    assert req(a.port, "GET", "/v2/health/ready")[0] == 200
    s, doc = post(a.port, [ev(t0 + 5, "late", "late-c")])
    assert s == 202 and doc["applied"] is False, (s, doc)
    wait_applied([b.port], doc["stream_id"])
    assert counts(b, "late", "late-c", t0 + 10_000) == (1, 1)
    assert "retrying every second" in a.log_tail(400)
    assert status_of(a.port)["state"] == "apply_failing"
