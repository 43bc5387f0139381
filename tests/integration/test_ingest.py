"""Ingest safety, black-box (POST /v1/events against a real server):

- all or nothing across crashes: a 100,000-event request is killed (SIGKILL) at random points
  after its body was sent; after a restart every entity holds all of the request's events or
  none, an acknowledged request is complete, and a retry of the same request (with event ids)
  stores exactly what was missing;
- event_id: a repeated id (in the request, or already stored, across a restart too) is not
  stored twice, and the answer counts the duplicates; bad ids are refused with 400;
- a bounded store: with a small --feature-store-max-bytes, ingest ends in 507 "feature store
  full" with nothing of the refused request stored, scoring still answers, and /metrics shows
  onnxd_feature_store_used_bytes and onnxd_feature_store_capacity_bytes.
"""

import json
import random
import socket
import time

from conftest import build_repo, forget, keep_alive_checked, restart_checked
from test_features import VIEW, Client, identity_model, metric

U_CNT24 = 1 + 2  # features: amount, the user's 8 velocity features, the card's 8
C_CNT24 = 9 + 2


def fv_repo(tmp_path):
    return build_repo(tmp_path / "repo", {"fv": {"model": identity_model(17),
                                                  "config": {"feature_view": VIEW}}})


def ndjson(events):
    return "".join(json.dumps(e) + "\n" for e in events).encode()


def post(cl, events):
    status, data = cl.call("POST", "/v1/events", ndjson(events), "application/x-ndjson")
    return status, json.loads(data)


def counts(cl, user, card, t):
    """(user's, card's) number of events in the 24 h window ending at t."""
    status, doc, got, _ = cl.score("fv", {"user_id": user, "card_id": card, "ts": t,
                                          "return_features": True}, 1.0)
    assert status == 200, doc
    return int(got[U_CNT24]), int(got[C_CNT24])


def test_event_id_dedup(server_factory, tmp_path):
    s = keep_alive_checked(server_factory(fv_repo(tmp_path), ["--feature-dir",
                                                              str(tmp_path / "store")],
                                          name="event-id"))
    try:
        cl = Client(s)
        t0 = int(time.time() * 1000) - 60_000

        def ev(i, eid=None):
            e = {"ts": t0 + i, "user_id": "du", "card_id": "dc", "merchant_id": "m",
                 "amount": 1.0}
            if eid is not None:
                e["event_id"] = eid
            return e

        # a repeated id in one request: stored once
        assert post(cl, [ev(0, "a"), ev(1, "b"), ev(2, "a")]) == (200, {"accepted": 2,
                                                                         "duplicates": 1})
        # ids already stored are skipped; new ones and events without an id are stored
        assert post(cl, [ev(3, "a"), ev(4, "b"), ev(5, "c"), ev(6)]) == (
            200, {"accepted": 2, "duplicates": 2})
        assert counts(cl, "du", "dc", t0 + 100) == (4, 4)
        # bad ids: 400 naming the line, nothing stored
        for bad in ["", "x" * 129, 7, "a\u0001b", None]:
            e = ev(9, "fresh")
            e["event_id"] = bad
            status, doc = post(cl, [ev(8, "ok-1"), e])
            assert status == 400 and "line 2" in doc["error"] and "event_id" in doc["error"], doc
        assert post(cl, [ev(8, "x" * 128)]) == (200, {"accepted": 1, "duplicates": 0})
        assert counts(cl, "du", "dc", t0 + 100) == (5, 5)
        cl.close()
        # remembered across a restart
        restart_checked(s)
        cl = Client(s)
        assert post(cl, [ev(0, "a"), ev(5, "c"), ev(8, "x" * 128), ev(10, "d")]) == (
            200, {"accepted": 1, "duplicates": 3})
        assert counts(cl, "du", "dc", t0 + 100) == (6, 6)
        cl.close()
    finally:
        forget(s)
        err = s.stop()
        assert err is None, f"{err}\n{s.log_tail()}"


N_EVENTS = 100_000  # OX_EVENTS_MAX: the largest request
N_USERS = 500


def big_request(tag, t0):
    evs = [{"ts": t0 + i, "user_id": f"{tag}u{i % N_USERS}", "card_id": f"{tag}c{i % N_USERS}",
            "merchant_id": f"m{i % 37}", "amount": 1.5, "event_id": f"{tag}-{i}"}
           for i in range(N_EVENTS)]
    return ndjson(evs)


def send_and_kill(s, body, delay):
    """Sends the whole request, waits delay seconds (or for the answer if delay is None), then
    kills the server with SIGKILL. Returns the answer's status line if one arrived, else None."""
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
    head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body)
    if delay is None:
        sock.settimeout(60)
        got = sock.recv(65536)
    else:
        time.sleep(delay)
        got = b""
    s.proc.kill()
    s.proc.wait()
    sock.settimeout(2)
    try:  # whatever the server sent before it died
        while b"\r\n" not in got:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    except OSError:
        pass
    sock.close()
    return got.split(b"\r\n", 1)[0].decode() if got else None


def test_crash_during_ingest_is_all_or_nothing(server_factory, tmp_path):
    args = ["--feature-dir", str(tmp_path / "store")]  # --feature-sync data (the default)
    s = keep_alive_checked(server_factory(fv_repo(tmp_path), args, name="ingest-crash"))
    rng = random.Random(9)
    t0 = int(time.time() * 1000) - 3_600_000
    t = t0 + N_EVENTS + 1000
    probes = [0, 1, N_USERS // 2, N_USERS - 1]
    outcomes = []
    try:
        duration = None
        for rnd in range(8):
            tag = f"r{rnd}"
            body = big_request(tag, t0)
            if rnd == 0:  # the full round trip, uncut: how long a commit takes here
                start = time.monotonic()
                status = send_and_kill(s, body, None)
                duration = time.monotonic() - start
                assert status == "HTTP/1.1 200 OK", status
            else:  # killed anywhere from just after the body to after the answer
                status = send_and_kill(s, body, rng.uniform(0, 2 * duration))
            s.stopped = False
            s.restart()
            cl = Client(s)
            seen = {counts(cl, f"{tag}u{p}", f"{tag}c{p}", t) for p in probes}
            per = N_EVENTS // N_USERS
            assert seen in ({(0, 0)}, {(per, per)}), (rnd, status, seen)
            stored = seen == {(per, per)}
            if status is not None and status.startswith("HTTP/1.1 200"):
                assert stored, f"round {rnd}: acknowledged but not stored"
            outcomes.append((rnd, status, stored))
            # the client's retry, with the same event ids, completes it exactly once
            code, doc = post(cl, [json.loads(x) for x in body.splitlines()])
            assert code == 200, doc
            assert doc == ({"accepted": 0, "duplicates": N_EVENTS} if stored else
                           {"accepted": N_EVENTS, "duplicates": 0}), (rnd, doc)
            assert {counts(cl, f"{tag}u{p}", f"{tag}c{p}", t) for p in probes} == {(per, per)}
            cl.close()
        print("crash rounds (round, answer seen, stored):", outcomes)
    finally:
        forget(s)
        err = s.stop()
        assert err is None, f"{err}\n{s.log_tail()}"


def test_store_full_is_507_and_nothing_partial(server_factory, tmp_path):
    cap = 4 << 20
    args = ["--feature-dir", str(tmp_path / "store"), "--feature-sync", "none",
            "--feature-store-max-bytes", str(cap)]
    s = keep_alive_checked(server_factory(fv_repo(tmp_path), args, name="store-full"))
    try:
        cl = Client(s)
        t0 = int(time.time() * 1000) - 3_600_000
        t = t0 + 10_000
        n = 2000
        full = None
        for b in range(200):  # 4 MiB holds a few dozen of these at most
            evs = [{"ts": t0 + i, "user_id": f"b{b}u{i}", "card_id": f"b{b}c{i}",
                    "merchant_id": "m", "amount": 2.0} for i in range(n)]
            status, doc = post(cl, evs)
            if status == 507:
                full = b
                break
            assert status == 200 and doc == {"accepted": n, "duplicates": 0}, (status, doc)
        assert full is not None and full > 0, "the store never filled"
        assert doc["error"].startswith("feature store full: "), doc
        assert "--feature-store-max-bytes" in doc["error"], doc
        # nothing of the refused request, everything of the one before
        for i in (0, n // 2, n - 1):
            assert counts(cl, f"b{full}u{i}", f"b{full}c{i}", t) == (0, 0)
            assert counts(cl, f"b{full - 1}u{i}", f"b{full - 1}c{i}", t) == (1, 1)
        # still full for a request as large, still answering reads and scores
        assert post(cl, evs)[0] == 507
        assert cl.call("GET", "/v2/health/ready")[0] == 200
        m = cl.metrics()
        assert metric(m, "onnxd_feature_store_capacity_bytes") == cap
        used = metric(m, "onnxd_feature_store_used_bytes")
        assert cap // 2 < used <= cap, used
        cl.close()
    finally:
        forget(s)
        err = s.stop()
        assert err is None, f"{err}\n{s.log_tail()}"
