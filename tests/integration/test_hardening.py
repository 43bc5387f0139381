"""Issue 9, connections and process: silent connections and the connection cap, the in-flight
memory budget, half-closed clients, absolute-form targets, signals, readiness during the drain,
and the protection of the admin (mutating) endpoints. Each test starts a server of its own."""

import json
import os
import select
import signal
import socket
import threading
import time

import pytest

import rawhttp
from conftest import build_repo, free_port, metric_value, slow_model_bytes, wait_until
from oip import INFER_FP32, fp32_input, good_request, infer_json, serves_on_new_connection

MIB = 1 << 20


def _stop_ok(s):
    err = s.stop()
    assert err is None, f"{err}\n{s.log_tail()}"


def _rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _get(port, path, headers=(), timeout=5):
    c = rawhttp.RawConn(port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers)
        return c.read_final()[0]
    finally:
        c.close()


# ---- silent connections, the connection cap (finding 4) ----------------------------------------

def test_silent_connection_closed_after_request_timeout(server_factory, small_repo):
    """A new connection that never sends a byte is closed after --request-timeout-ms, not after
    the (here 300 s) idle timeout."""
    s = server_factory(small_repo, ["--request-timeout-ms", "500", "--idle-timeout-ms", "300000"],
                       name="silent")
    try:
        c = rawhttp.RawConn(s.port)
        t0 = time.monotonic()
        assert c.closed_by_peer(timeout=5), "silent connection still open after 5 s"
        took = time.monotonic() - t0
        c.close()
        assert took >= 0.4, f"closed after {took:.2f} s, before the request timeout"
        # a keep-alive connection that has been served gets the idle timeout, not this one
        k = rawhttp.RawConn(s.port)
        good_request(k)
        assert not k.closed_by_peer(timeout=1.5), "idle keep-alive closed by the request timeout"
        good_request(k)
        k.close()
    finally:
        _stop_ok(s)


def test_cap_evicts_oldest_idle_keepalive(server_factory, small_repo):
    """At --max-connections, a new client is served by closing the idle keep-alive connection
    idle longest; when none is idle (silent new connections), it is refused with 503. The
    eviction is per I/O thread (the accepting loop closes its own longest-idle connection), so
    the server runs one I/O thread here to make "longest idle" the process-wide one."""
    cap = 4
    s = server_factory(small_repo, ["--max-connections", str(cap), "--io-threads", "1"],
                       name="evict")
    try:
        time.sleep(0.3)  # the readiness probes' connections are gone
        conns = []
        for _ in range(cap):
            c = rawhttp.RawConn(s.port)
            good_request(c)
            conns.append(c)
            time.sleep(0.05)  # distinct idle-since times
        good_request(conns[2])  # conns[0] is now the oldest idle one, conns[2] the newest
        fresh = rawhttp.RawConn(s.port)
        good_request(fresh)
        assert conns[0].closed_by_peer(timeout=2), "the oldest idle connection was not closed"
        for c in conns[1:]:
            good_request(c)
        assert metric_value(s.port, "onnxd_idle_evictions_total") >= 1
        for c in conns[1:] + [fresh]:
            c.close()
        conns = []
        time.sleep(0.3)
        silent = [rawhttp.RawConn(s.port) for _ in range(cap)]
        time.sleep(0.2)
        x = rawhttp.RawConn(s.port)
        x.send(rawhttp.build_request("GET", "/v2/health/live"))
        r = x.read_response()
        assert r.status == 503 and r.header("Retry-After"), r
        for c in silent + [x]:
            c.close()
    finally:
        _stop_ok(s)


# ---- in-flight memory budget (finding 3) -------------------------------------------------------

def test_inflight_budget_bounds_memory(server_factory, small_repo):
    """20 clients announce 30 MiB bodies against a 64 MiB budget: all but two get 503 with
    Retry-After before sending their body; the two admitted send 29 MiB and hold. The server's
    RSS stays under its idle RSS + the budget + 48 MiB (the 64 MiB of bodies are counted in the
    budget; the margin covers the request buffers, allocator and page rounding). Then the
    budget is free again and requests are served."""
    budget, body, n = 64 * MIB, 30 * MIB, 20
    s = server_factory(small_repo, ["--max-inflight-bytes", str(budget),
                                    "--max-body-bytes", str(40 * MIB),
                                    "--request-timeout-ms", "60000"], name="budget")
    conns = []
    try:
        rss0 = _rss_bytes(s.proc.pid)
        head = (f"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: application/json\r\nContent-Length: {body}\r\n\r\n").encode()
        for _ in range(n):
            c = rawhttp.RawConn(s.port, timeout=30)
            c.send(head)
            conns.append(c)
        time.sleep(0.5)
        refused, admitted = [], []
        for c in conns:
            if select.select([c.sock], [], [], 0)[0]:
                r = c.read_response(timeout=5)
                assert r.status == 503, r
                assert r.header("Retry-After") and "memory budget" in r.error(), r
                assert (r.header("Connection") or "").lower() == "close", r
                refused.append(c)
            else:
                admitted.append(c)
        assert len(admitted) == budget // body, f"{len(admitted)} admitted"
        chunk = b" " * MIB
        for _ in range(29):
            for c in admitted:
                c.sock.sendall(chunk)
        time.sleep(0.3)
        rss = _rss_bytes(s.proc.pid)
        assert rss < rss0 + budget + 48 * MIB, \
            f"RSS {rss / MIB:.0f} MiB, idle {rss0 / MIB:.0f} MiB, budget {budget / MIB:.0f} MiB"
        assert metric_value(s.port, "onnxd_inflight_body_bytes") == len(admitted) * body
        assert metric_value(s.port, "onnxd_inflight_refused_total") >= len(refused)
        for c in conns:
            c.close()
        conns = []
        wait_until(lambda: metric_value(s.port, "onnxd_inflight_body_bytes") == 0, 5,
                   "the budget to be released after the clients left")
        serves_on_new_connection(s.port)
    finally:
        for c in conns:
            c.close()
        _stop_ok(s)


# ---- half-close (finding 11) and absolute-form targets (finding 12) ----------------------------

@pytest.fixture(scope="module")
def plain_server(server_factory, small_repo):
    s = server_factory(small_repo, name="plain")
    yield s
    _stop_ok(s)


def test_half_close_answered(plain_server):
    """Complete requests followed by shutdown(SHUT_WR) are all answered (inference runs on a
    worker, so the FIN arrives while the request is held), then the server closes."""
    port = plain_server.port
    infer = rawhttp.build_request("POST", INFER_FP32, infer_json([fp32_input()]),
                                  ["Content-Type: application/json"])
    c = rawhttp.RawConn(port)
    try:
        c.send(infer)
        c.sock.shutdown(socket.SHUT_WR)
        r, _ = c.read_final()
        assert r.status == 200, r
        assert r.json()["outputs"][0]["data"] == [1.0, 2.5, -3.0]
        assert c.closed_by_peer(timeout=3)
    finally:
        c.close()
    c = rawhttp.RawConn(port)
    try:  # pipelined requests, then the half-close
        c.send(infer + rawhttp.build_request("GET", "/v2/models/identity_fp32") + infer)
        c.sock.shutdown(socket.SHUT_WR)
        rs = [c.read_final()[0] for _ in range(3)]
        assert [r.status for r in rs] == [200, 200, 200], rs
        assert rs[1].json()["name"] == "identity_fp32"
        assert c.closed_by_peer(timeout=3)
    finally:
        c.close()
    serves_on_new_connection(port)


def test_absolute_form_target(plain_server):
    port = plain_server.port
    r = _get(port, f"http://127.0.0.1:{port}/v2/health/ready")
    assert r.status == 200, r
    r = _get(port, "http://elsewhere.example/v2/models/identity_fp32")
    assert r.status == 200 and r.json()["name"] == "identity_fp32", r
    r = _get(port, "http://u@h/v2/health/ready")
    assert r.status == 400, r
    r = _get(port, "ftp://h/v2/health/ready")
    assert r.status == 400, r


# ---- signals (finding 7) and readiness during the drain (finding 14) ---------------------------

def _slow_server(server_factory, tmp_path, name, args=()):
    repo = build_repo(tmp_path / "repo", {"slow": {"model": slow_model_bytes(),
                                                   "config": {"max_batch_size": 0,
                                                              "instance_count": 1}}})
    return server_factory(repo, ["--infer-threads", "2", *args], name=name)


def _slow_request(port, iters):
    from test_batching import slow_body

    body, headers = slow_body(0, iters)
    c = rawhttp.RawConn(port, timeout=60)
    c.request("POST", "/v2/models/slow/infer", body, headers)
    return c


def _iters_for(port, seconds):
    """Iterations of the slow model that take about seconds here."""
    t0 = time.monotonic()
    c = _slow_request(port, 200)
    assert c.read_response().status == 200
    c.close()
    per = max((time.monotonic() - t0) / 200, 1e-6)
    return max(5, int(seconds / per))


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2])
def test_signal_ignored_and_logged(server_factory, small_repo, sig):
    s = server_factory(small_repo, name=f"sig-{sig.name}")
    try:
        k = rawhttp.RawConn(s.port)
        good_request(k)
        s.proc.send_signal(sig)
        wait_until(lambda: sig.name in s.log_tail(), 5, f"a log line for {sig.name}")
        assert s.proc.poll() is None, f"{sig.name} killed the server"
        good_request(k)  # the same keep-alive connection goes on
        k.close()
        serves_on_new_connection(s.port)
        if sig == signal.SIGHUP:
            # Outside poll mode SIGHUP changes nothing and says so (poll mode rescans: see
            # test_lifecycle.py).
            assert "poll mode only" in s.log_tail()
    finally:
        _stop_ok(s)


def test_sigquit_drains(server_factory, tmp_path):
    """SIGQUIT drains like SIGTERM: the request in flight is answered, exit status 0."""
    s = _slow_server(server_factory, tmp_path, "sigquit")
    iters = _iters_for(s.port, 0.8)
    c = _slow_request(s.port, iters)
    try:
        time.sleep(0.2)
        s.stopped = True  # stopped here, not by the fixture
        s.proc.send_signal(signal.SIGQUIT)
        r = c.read_response(timeout=30)
        assert r.status == 200, r
    finally:
        c.close()
    rc = s.wait_exit(timeout=15)
    assert rc == 0, f"exit status {rc}\n{s.log_tail()}"
    assert "SIGQUIT: draining" in s.log_tail()


def test_drain_readiness_answers_503(server_factory, tmp_path):
    """While a request is in flight after SIGTERM, new connections are accepted: readiness
    answers 503 (not a refused connection), liveness 200, new inference 503, each with
    Connection: close; the request in flight still gets its 200 and the exit status is 0."""
    s = _slow_server(server_factory, tmp_path, "drain-ready")
    iters = _iters_for(s.port, 2.0)
    c = _slow_request(s.port, iters)
    try:
        time.sleep(0.2)
        s.terminate()
        wait_until(lambda: "draining" in s.log_tail(), 5, "the drain to start")
        r = _get(s.port, "/v2/health/ready")
        assert r.status == 503, r
        assert r.json() == {"ready": False, "error": "server is shutting down"}, r.body
        assert (r.header("Connection") or "").lower() == "close", r
        r = _get(s.port, "/v2/health/live")
        assert r.status == 200 and r.json() == {"live": True}, r
        r = _get(s.port, "/v2/models/slow/ready")
        assert r.status == 503, r
        assert r.json() == {"name": "slow", "ready": False, "error": "server is shutting down"}
        from test_batching import slow_body

        body, headers = slow_body(1, 1)
        n = rawhttp.RawConn(s.port)
        n.request("POST", "/v2/models/slow/infer", body, headers)
        r = n.read_response()
        n.close()
        assert r.status == 503 and "shutting down" in r.error(), r
        r = c.read_response(timeout=30)
        assert r.status == 200, r
    finally:
        c.close()
    rc = s.wait_exit(timeout=15)
    assert rc == 0, f"exit status {rc}\n{s.log_tail()}"


# ---- admin endpoints (finding 6, protection) ---------------------------------------------------

EVENT = {"ts": 1_750_000_000_000, "user_id": "adm-u1", "card_id": "adm-c1",
         "merchant_id": "m1", "amount": 5.0}


def _call(port, method, path, body=None, headers=()):
    c = rawhttp.RawConn(port)
    try:
        data = json.dumps(body).encode() if body is not None else None
        c.request(method, path, data, ["Content-Type: application/json", *headers])
        return c.read_final()[0]
    finally:
        c.close()


@pytest.fixture
def token_file(tmp_path):
    p = tmp_path / "admin-token"
    p.write_text("s3cret-token-value\n")
    return p


def test_admin_token(server_factory, small_repo, tmp_path, token_file):
    s = server_factory(small_repo, ["--feature-dir", str(tmp_path / "fs"), "--feature-sync", "none",
                                    "--admin-token-file", str(token_file)], name="admin-token")
    try:
        p = s.port
        for method, path, body in (("POST", "/v1/events", [EVENT]),
                                   ("PUT", "/v1/features/profile/k1", [1.0, 2.0])):
            r = _call(p, method, path, body)
            assert r.status == 401, r
            assert (r.header("WWW-Authenticate") or "").startswith("Bearer"), r
            r = _call(p, method, path, body, ["Authorization: Basic czNjcmV0"])
            assert r.status == 401, r
            for wrong in ("s3cret-token-valuX", "s3cret-token-value2", "s3cret", "x"):
                r = _call(p, method, path, body, [f"Authorization: Bearer {wrong}"])
                assert r.status == 403, (wrong, r)
            r = _call(p, method, path, body, ["Authorization: Bearer s3cret-token-value"])
            assert r.status == 200, r
        r = _call(p, "GET", "/v1/features/profile/k1")  # reads and inference stay open
        assert r.status == 200, r
        assert _get(p, "/v2/health/ready").status == 200
        k = rawhttp.RawConn(p)
        good_request(k)
        k.close()
    finally:
        _stop_ok(s)


def test_admin_port(server_factory, small_repo, tmp_path, token_file):
    admin = free_port()
    s = server_factory(small_repo, ["--feature-dir", str(tmp_path / "fs"), "--feature-sync", "none",
                                    "--admin-port", str(admin), "--admin-token-file",
                                    str(token_file)], name="admin-port")
    try:
        auth = ["Authorization: Bearer s3cret-token-value"]
        r = _call(s.port, "POST", "/v1/events", [EVENT], auth)
        assert r.status == 404 and "admin port" in r.error(), r
        r = _call(s.port, "PUT", "/v1/features/profile/k1", [1.0], auth)
        assert r.status == 404, r
        r = _call(admin, "POST", "/v1/events", [EVENT])
        assert r.status == 401, r
        r = _call(admin, "POST", "/v1/events", [EVENT], auth)
        assert r.status == 200, r
        r = _call(admin, "PUT", "/v1/features/profile/k1", [1.0], auth)
        assert r.status == 200, r
        assert _get(admin, "/v2/health/ready").status == 200
        assert _get(admin, "/v2/models/identity_fp32").status == 404  # inference stays public
        assert _get(s.port, "/v2/models/identity_fp32").status == 200
    finally:
        _stop_ok(s)


def test_admin_token_file_unreadable(tmp_path, small_repo):
    import subprocess

    from conftest import _server_binary

    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path in (tmp_path / "missing", empty):
        p = subprocess.run([str(_server_binary()), "--model-repository", str(small_repo),
                            "--http-port", "0", "--admin-token-file", str(path)],
                           capture_output=True, timeout=30)
        assert p.returncode == 2, p
        assert b"admin-token-file" in p.stderr, p.stderr


def test_onnx_runtime_telemetry_off(server_factory, small_repo, tmp_path, monkeypatch):
    """ONNX Runtime 1.30's Linux library starts telemetry with its environment (a device id and
    a database under $HOME/.cache/Microsoft, /tmp/mat-debug-<pid>.log, an HTTPS uploader) unless
    it is disabled: onnxd disables it, whatever the environment says."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ORT_DISABLE_TELEMETRY", raising=False)
    s = server_factory(small_repo, name="telemetry")
    pid = s.proc.pid
    conn = rawhttp.RawConn(s.port)
    try:
        good_request(conn)
    finally:
        conn.close()
    err = s.stop()
    assert err is None, err
    assert list(home.rglob("*")) == [], list(home.rglob("*"))
    assert not os.path.exists(f"/tmp/mat-debug-{pid}.log")


def test_port_in_use_is_refused(plain_server, small_repo):
    """The listeners share their port between I/O loops (SO_REUSEPORT), which would also let a
    second onnxd of the same user bind a port that one is serving and take part of its
    connections. A second onnxd on a port in use (HTTP or gRPC) stops at start-up instead, with
    a message naming the port, and the first one keeps serving."""
    import subprocess

    from conftest import _server_binary

    for flags in (["--http-port", str(plain_server.port), "--grpc-port", "-1"],
                  ["--http-port", str(free_port()), "--grpc-port", str(plain_server.grpc_port)]):
        p = subprocess.run([_server_binary(), "--model-repository", str(small_repo), *flags],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
        assert "the address is in use" in p.stderr, p.stderr[-2000:]
    assert _get(plain_server.port, "/v2/health/ready").status == 200
