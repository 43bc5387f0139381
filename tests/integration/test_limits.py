"""Limits that need a server of their own: request timeout (slowloris), connection cap, body
limit, a full inference queue, and shutdown on SIGTERM with work in flight."""

import json
import select
import time

import numpy as np
import pytest

import rawhttp
from conftest import _link_tree, forget, keep_alive_checked
from oip import INFER_FP32, fp32_input, good_request, infer_json, serves_on_new_connection

GOOD_BODY = infer_json([fp32_input()])
TIMEOUT_MS = 500
MAX_CONNS = 8
MAX_BODY = 1_000_000


def dedicated(server_factory, repo, args, name):
    s = keep_alive_checked(server_factory(repo, args, name=name))
    yield s
    forget(s)
    err = s.stop()
    assert err is None, f"{err}\n{s.log_tail()}"


@pytest.fixture(scope="module")
def timeout_server(server_factory, small_repo):
    yield from dedicated(server_factory, small_repo,
                         ["--request-timeout-ms", str(TIMEOUT_MS)], "timeout")


@pytest.fixture(scope="module")
def capped_server(server_factory, small_repo):
    yield from dedicated(server_factory, small_repo,
                         ["--max-connections", str(MAX_CONNS)], "capped")


@pytest.fixture(scope="module")
def small_body_server(server_factory, small_repo):
    yield from dedicated(server_factory, small_repo,
                         ["--max-body-bytes", str(MAX_BODY)], "smallbody")


def _dropped_or_408(c, timeout):
    """Waits up to timeout for the server to give up on c: returns (elapsed, status or None)
    when it answers 408 and/or closes; None if c is still open and unanswered."""
    t0 = time.monotonic()
    r, _, _ = select.select([c.sock], [], [], timeout)
    if not r:
        return None
    try:
        resp = c.read_response(timeout=2)
        assert resp.status == 408, resp
        return time.monotonic() - t0, 408
    except rawhttp.Closed as e:
        assert e.partial == b""
        return time.monotonic() - t0, None


def _trickle(c, data, gap, limit):
    """Sends data one byte every gap seconds until the server gives up; returns the time
    from the first byte until then, failing if it takes longer than limit."""
    t0 = time.monotonic()
    for b in data:
        if not c.try_send(bytes([b])):
            return time.monotonic() - t0
        got = _dropped_or_408(c, gap)
        if got is not None:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < limit, f"still open after {limit} s of trickling"
    pytest.fail("the whole request went through, slowly")


SLOW_HEAD = b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 200


def test_slow_head_gaps_longer_than_timeout(timeout_server):
    c = rawhttp.RawConn(timeout_server.port)
    try:
        elapsed = _trickle(c, SLOW_HEAD, gap=0.8, limit=4.0)
        assert elapsed >= TIMEOUT_MS / 1000 * 0.8, f"dropped too early ({elapsed:.2f} s)"
    finally:
        c.close()
    serves_on_new_connection(timeout_server.port)


def test_slowloris_head_deadline(timeout_server):
    """Bytes keep coming (every 100 ms, faster than the timeout) but the head never ends:
    the whole head must arrive within the timeout."""
    c = rawhttp.RawConn(timeout_server.port)
    other_ok = []
    try:
        t0 = time.monotonic()
        for b in SLOW_HEAD:
            if not c.try_send(bytes([b])) or _dropped_or_408(c, 0.1) is not None:
                break
            if len(other_ok) < 5:  # other clients are served meanwhile
                serves_on_new_connection(timeout_server.port)
                other_ok.append(True)
            assert time.monotonic() - t0 < 3.0, "slowloris head kept open for 3 s"
        else:
            pytest.fail("the whole slow head went through")
    finally:
        c.close()
    assert len(other_ok) >= 1


def test_slow_body(timeout_server):
    c = rawhttp.RawConn(timeout_server.port)
    try:
        c.send(rawhttp.build_request("POST", INFER_FP32, b"", [f"Content-Length: {len(GOOD_BODY)}"]))
        elapsed = _trickle(c, GOOD_BODY, gap=0.1, limit=3.0)
        assert elapsed < 3.0
    finally:
        c.close()
    serves_on_new_connection(timeout_server.port)


def test_fast_requests_unaffected_by_timeout(timeout_server):
    c = rawhttp.RawConn(timeout_server.port)
    try:
        for _ in range(3):
            good_request(c)
    finally:
        c.close()


# ---- connection cap

def _refused(c, timeout=3.0):
    """The server refused c: closed it (EOF or reset) within timeout, with nothing or with a
    complete, well-formed 503 response before the close."""
    c.try_send(rawhttp.build_request("GET", "/v2/health/live"))
    deadline = time.monotonic() + timeout
    try:
        while c._fill(deadline):
            pass
    except TimeoutError:
        return False
    if not c.buf:
        return True
    r = c.read_response()  # raises Closed if the response is cut short
    assert r.status == 503, r
    r.error()
    assert not c.buf, f"bytes after the 503: {c.buf!r}"
    return True


def test_connection_cap(capped_server):
    port = capped_server.port
    time.sleep(0.2)  # the readiness probes' connections are gone
    conns = [rawhttp.RawConn(port) for _ in range(MAX_CONNS)]
    extra = []
    try:
        for c in conns:  # all accepted and served, then each with a request in progress
            c.request("GET", "/v2/health/live")
            assert c.read_response().status == 200
            c.send(b"GET /v2/health/live HTTP/1.1\r\n")  # (idle ones would be evicted)
        for _ in range(3):
            x = rawhttp.RawConn(port)
            extra.append(x)
            assert _refused(x), "connection beyond the cap was served"
        for c in conns:  # the 8 still work
            c.send(b"Host: x\r\n\r\n")
            assert c.read_response().status == 200
            good_request(c)
        conns.pop().close()  # room for one more
        deadline = time.monotonic() + 3
        while True:
            x = rawhttp.RawConn(port)
            extra.append(x)
            try:
                good_request(x)
                break
            except (AssertionError, rawhttp.Closed, OSError, TimeoutError):
                assert time.monotonic() < deadline, "slot not released after a close"
                time.sleep(0.1)
    finally:
        for c in conns + extra:
            c.close()


def test_connection_flood_recovers(capped_server):
    port = capped_server.port
    flood = []
    try:
        for _ in range(50):
            try:
                flood.append(rawhttp.RawConn(port, timeout=2))
            except OSError:
                break
    finally:
        for c in flood:
            c.close(reset=True)
    deadline = time.monotonic() + 3
    while True:
        try:
            serves_on_new_connection(port)
            return
        except (AssertionError, rawhttp.Closed, OSError, TimeoutError):
            assert time.monotonic() < deadline, "server did not recover after a flood"
            time.sleep(0.1)


# ---- body limit

def test_body_limit_from_flag(small_body_server):
    port = small_body_server.port
    c = rawhttp.RawConn(port)
    try:
        c.send(f"POST {INFER_FP32} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Length: {MAX_BODY + 1}\r\n\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 413, r
        r.error()
    finally:
        c.close()
    serves_on_new_connection(port)


def test_body_at_limit_accepted(small_body_server):
    c = rawhttp.RawConn(small_body_server.port)
    try:
        body = GOOD_BODY + b" " * (MAX_BODY - len(GOOD_BODY))
        c.request("POST", INFER_FP32, body)
        r = c.read_response()
        assert r.status == 200, r
    finally:
        c.close()


def test_chunked_body_over_limit(small_body_server):
    c = rawhttp.RawConn(small_body_server.port)
    try:
        c.send(f"POST {INFER_FP32} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
        for _ in range(MAX_BODY // 65536 + 2):
            if not c.try_send(chunk):
                break
        r = c.read_response(timeout=5)
        assert r.status == 413, r
    finally:
        c.close()
    serves_on_new_connection(small_body_server.port)


# ---- SIGTERM

@pytest.fixture
def drain_repo(tmp_path, test_models, demo_models):
    _link_tree(test_models / "identity_fp32", tmp_path / "identity_fp32")
    _link_tree(demo_models / "mobilenetv2", tmp_path / "mobilenetv2")
    return tmp_path


def test_sigterm_finishes_inflight(server_factory, drain_repo):
    s = server_factory(drain_repo, name="drain")
    idle = rawhttp.RawConn(s.port)  # an idle keep-alive connection must not hold up exit
    good_request(idle)
    x = np.random.default_rng(7).standard_normal((16, 3, 224, 224)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    c = rawhttp.RawConn(s.port, timeout=30)
    try:
        c.request("POST", "/v2/models/mobilenetv2/infer", head + x.tobytes(),
                  [f"Inference-Header-Content-Length: {len(head)}"])
        time.sleep(0.1)
        s.terminate()
        time.sleep(0.1)
        still_running = not select.select([c.sock], [], [], 0)[0]
        if still_running:  # draining: not ready any more (or not accepting at all)
            try:
                p = rawhttp.RawConn(s.port, timeout=3)
                p.request("GET", "/v2/health/ready")
                try:
                    assert p.read_response().status != 200, "ready while draining"
                except rawhttp.Closed:
                    pass
                p.close()
            except ConnectionRefusedError:
                pass
        r = c.read_response()
        assert r.status == 200, r
        hl = int(r.header("Inference-Header-Content-Length"))
        out = json.loads(r.body[:hl])["outputs"][0]
        assert out["shape"] == [16, 1000]
        assert len(r.body) - hl == 16 * 1000 * 4
    finally:
        c.close()
    t0 = time.monotonic()
    rc = s.wait_exit(timeout=15)
    idle.close()
    assert rc == 0, f"exit status {rc}\n{s.log_tail()}"
    assert time.monotonic() - t0 < 5, "idle connection delayed the exit"


def test_sigterm_idle_exits_zero(server_factory, small_repo):
    s = server_factory(small_repo, name="idle-stop")
    serves_on_new_connection(s.port)
    assert s.stop() is None, s.log_tail()


# ---- overload: full queue

def test_full_queue_503_fast(server_factory, drain_repo):
    """One worker and a queue of one: of 8 simultaneous requests most are refused at once with
    503 + Retry-After; the accepted ones are answered correctly; service recovers."""
    s = keep_alive_checked(server_factory(drain_repo, ["--infer-threads", "1", "--max-queue", "1"],
                                          name="overload"))
    conns = []
    try:
        x = np.zeros((4, 3, 224, 224), dtype=np.float32)
        head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                       "shape": list(x.shape),
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        req = rawhttp.build_request("POST", "/v2/models/mobilenetv2/infer", head + x.tobytes(),
                                    [f"Inference-Header-Content-Length: {len(head)}"])
        conns = [rawhttp.RawConn(s.port, timeout=30) for _ in range(8)]
        for c in conns:
            c.send(req)
        sent = time.monotonic()
        arrival = {}
        pending = set(conns)
        while pending:  # note when each answer starts to arrive
            ready, _, _ = select.select(list(pending), [], [], 30)
            assert ready, "no answer within 30 s"
            for c in ready:
                arrival[c] = time.monotonic() - sent
                pending.discard(c)
        ok, refused = [], []
        for c in conns:
            r = c.read_response()
            if r.status == 503:
                assert r.header("Retry-After") is not None, r.raw_head
                r.error()
                refused.append(arrival[c])
            else:
                assert r.status == 200, r
                hl = int(r.header("Inference-Header-Content-Length"))
                assert json.loads(r.body[:hl])["outputs"][0]["shape"] == [4, 1000]
                ok.append(arrival[c])
        assert len(ok) >= 1 and len(refused) >= 2, (ok, refused)
        # Rejections are immediate: the first came back before any accepted work was done.
        assert min(refused) < min(ok), (refused, ok)
        assert min(refused) < 0.5, refused
    finally:
        for c in conns:
            c.close()
    serves_on_new_connection(s.port)
    forget(s)
    assert s.stop() is None, s.log_tail()
