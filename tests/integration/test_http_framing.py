"""HTTP/1.1 framing (RFC 9112) over raw sockets: RELIABILITY.md's framing table, row by row.

A request the server cannot frame safely gets its error and the connection is closed; each
such test then checks that a new connection is served. Requests that are well framed but
refused keep the connection open, and the next request on it is served.
"""

import json
import socket
import time

import numpy as np
import pytest

import rawhttp
from oip import (INFER_FP32, fp32_input, good_infer, good_request,
                 infer_json, serves_on_new_connection, split_binary_response)

POST = ("POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n")
GET = "GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n"
GOOD_BODY = infer_json([fp32_input()])


def reject_and_close(server, data, statuses, must_close=True, timeout=5.0):
    """Sends data on a new connection; expects one of statuses with an {"error"} body, then
    (must_close) the server closing. A new connection must then be served."""
    if isinstance(statuses, int):
        statuses = (statuses,)
    c = rawhttp.RawConn(server.port)
    try:
        c.try_send(data)
        r = c.read_response(timeout=timeout)
        assert r.status in statuses, r
        r.error()
        if must_close:
            assert c.closed_by_peer(), "connection left open after a framing error"
    finally:
        c.close()
    serves_on_new_connection(server.port)
    return r


# ---- Content-Length / Transfer-Encoding

FRAMING_400 = {
    "cl+te": POST + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te+cl": POST + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    "cl-dup-equal": POST + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n",
    "cl-dup-differ": POST + "Content-Length: 0\r\nContent-Length: 1\r\n\r\n",
    "cl-list": POST + "Content-Length: 1, 2\r\n\r\n",
    "cl-plus": POST + "Content-Length: +1\r\n\r\n",
    "cl-minus": POST + "Content-Length: -1\r\n\r\n",
    "cl-empty": POST + "Content-Length: \r\n\r\n",
    "cl-hex": POST + "Content-Length: 0x10\r\n\r\n",
    "cl-alpha": POST + "Content-Length: abc\r\n\r\n",
    "cl-inner-space": POST + "Content-Length: 1 0\r\n\r\n",
    "cl-fraction": POST + "Content-Length: 1.0\r\n\r\n",
    "cl-2^64": POST + "Content-Length: 18446744073709551616\r\n\r\n",
    "cl-huge": POST + "Content-Length: 99999999999999999999999999999\r\n\r\n",
    "te-comma-chunked": POST + "Transfer-Encoding: ,chunked\r\n\r\n",
    "te-chunked-chunked": POST + "Transfer-Encoding: chunked, chunked\r\n\r\n",
    "te-duplicated": POST + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "te-chunked-not-last": POST + "Transfer-Encoding: chunked, gzip\r\n\r\n",
    "te-empty": POST + "Transfer-Encoding: \r\n\r\n",
    "obs-fold": GET + "X-A: b\r\n c\r\n\r\n",
    "obs-fold-tab": GET + "X-A: b\r\n\tc\r\n\r\n",
    "bare-cr-value": GET + "X-A: b\rc\r\n\r\n",
    "bare-cr-eol": GET + "X-A: b\r\r\n\r\n",
    "bare-cr-request-line": "GET /v2/health/ready\r HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "nul-value": GET + "X-A: a\x00b\r\n\r\n",
    "nul-name": GET + "X-\x00A: b\r\n\r\n",
    "ctl-value": GET + "X-A: a\x01b\r\n\r\n",
    "esc-value": GET + "X-A: a\x1bb\r\n\r\n",
    "ctl-name": GET + "X-\x7fA: b\r\n\r\n",
    "space-before-colon": GET + "X-A : b\r\n\r\n",
    "tab-before-colon": GET + "X-A\t: b\r\n\r\n",
    "no-colon": GET + "X-A b\r\n\r\n",
    "empty-name": GET + ": b\r\n\r\n",
    "bad-name-char": GET + "X(A): b\r\n\r\n",
    "request-line-extra": "GET /v2/health/ready HTTP/1.1 x\r\nHost: 127.0.0.1\r\n\r\n",
    "request-line-double-space": "GET  /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "request-line-no-version": "GET /v2/health/ready\r\nHost: 127.0.0.1\r\n\r\n",
    "bad-method-char": "G(T /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "target-not-origin-form": "GET v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "target-space": "GET /v2/health /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "version-lowercase": "GET /v2/health/ready http/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "garbage": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n",
}


@pytest.mark.parametrize("name", list(FRAMING_400))
def test_framing_400_close(server, name):
    reject_and_close(server, FRAMING_400[name], 400)


@pytest.mark.parametrize("data,statuses", [
    (POST + "Transfer-Encoding: gzip\r\n\r\n", (501,)),
    (POST + "Transfer-Encoding: deflate\r\n\r\n", (501,)),
    (POST + "Transfer-Encoding: gzip, chunked\r\n\r\n", (400, 501)),
    (POST + "Transfer-Encoding: identity\r\n\r\n", (400, 501)),
], ids=["gzip", "deflate", "gzip,chunked", "identity"])
def test_transfer_coding_unsupported(server, data, statuses):
    reject_and_close(server, data, statuses)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0", "HTTP/1.10"])
def test_unsupported_http_version(server, version):
    reject_and_close(server, f"GET /v2/health/ready {version}\r\nHost: 127.0.0.1\r\n\r\n",
                     (400, 505))


def test_missing_host_http11(server):
    """RFC 9112 3.2: a 1.1 request without Host gets 400."""
    reject_and_close(server, "GET /v2/health/ready HTTP/1.1\r\n\r\n", 400)


def test_duplicate_host(server):
    reject_and_close(server, GET + "Host: other\r\n\r\n", 400)


# ---- chunked bodies

CHUNKED_HEAD = POST + "Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("size_line", ["0x10", "1_0", " 10", "+10", "-1", "", "g", "1 0",
                                       "ffffffffffffffffff", "10000000000000000"],
                         ids=["0x10", "1_0", "space-10", "+10", "-1", "empty", "g", "1-space-0",
                              "overflow-18-digits", "overflow-2^64"])
def test_bad_chunk_size(server, size_line):
    reject_and_close(server, CHUNKED_HEAD + size_line + "\r\n", 400)


def test_chunk_extension_over_1k(server):
    reject_and_close(server, CHUNKED_HEAD + "5;" + "a" * 2000 + "\r\nhello\r\n0\r\n\r\n", 400)


def test_chunk_missing_crlf_after_data(server):
    reject_and_close(server, CHUNKED_HEAD + "5\r\nhelloXX0\r\n\r\n", 400)


def test_chunk_missing_final_chunk(server):
    """The client ends its side mid-body: the server answers 400 or just closes."""
    c = rawhttp.RawConn(server.port)
    try:
        c.send(CHUNKED_HEAD + "5\r\n{\"inp\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        try:
            r = c.read_response(timeout=5)
            assert r.status == 400, r
        except rawhttp.Closed as e:
            assert e.partial == b""
    finally:
        c.close()
    serves_on_new_connection(server.port)


def test_too_many_chunks(server):
    c = rawhttp.RawConn(server.port, timeout=20)
    try:
        c.send(CHUNKED_HEAD)
        c.try_send(b"1\r\n \r\n" * 65537 + b"0\r\n\r\n")
        r = c.read_response()
        assert r.status == 400, r
        assert c.closed_by_peer()
    finally:
        c.close()
    serves_on_new_connection(server.port)


@pytest.mark.parametrize("sizes", [[1] * 40, [7, 100, 3], [len(GOOD_BODY)], [2] * 200],
                         ids=["1-byte", "mixed", "one", "2-byte"])
def test_chunked_infer(conn, sizes):
    conn.send(CHUNKED_HEAD.encode() + rawhttp.chunked(GOOD_BODY, sizes))
    r = conn.read_response()
    assert r.status == 200, r
    assert r.json()["outputs"][0]["data"] == [1.0, 2.5, -3.0]
    good_infer(conn)  # the connection stays in sync


@pytest.mark.parametrize("chunk", [4096, 1000, 65536])
def test_chunked_large_body(conn, chunk):
    """A chunked body much larger than the first read buffer (the buffer has to grow)."""
    data = [float(i) + 0.5 for i in range(30000)]
    body = infer_json([fp32_input(shape=(1, len(data)), data=data)])
    conn.send(CHUNKED_HEAD.encode() + rawhttp.chunked(body, [chunk] * (len(body) // chunk + 1)))
    r = conn.read_response()
    assert r.status == 200, r
    assert r.json()["outputs"][0]["data"] == data
    good_infer(conn)


def test_expect_100_continue_large_body(conn):
    data = [float(i) for i in range(30000)]
    body = infer_json([fp32_input(shape=(1, len(data)), data=data)])
    conn.send(POST + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n")
    assert conn.read_response(timeout=5).status == 100
    conn.send(body)
    r = conn.read_response()
    assert r.status == 200, r
    assert r.json()["outputs"][0]["data"] == data


def test_chunked_extension_and_trailer(conn):
    half = len(GOOD_BODY) // 2
    body = (b"%x;name=value;flag\r\n" % half + GOOD_BODY[:half] + b"\r\n"
            + b"%X;q=\"quoted\"\r\n" % (len(GOOD_BODY) - half) + GOOD_BODY[half:] + b"\r\n"
            + b"0\r\nX-Trailer: 1\r\n\r\n")
    conn.send(CHUNKED_HEAD.encode() + body)
    r = conn.read_response()
    assert r.status == 200, r
    good_infer(conn)


def test_chunked_binary_infer(conn):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2, 3],
                                   "parameters": {"binary_data_size": 24}}],
                       "parameters": {"binary_data_output": True}}).encode()
    body = head + x.tobytes()
    conn.send(("POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
               f"Inference-Header-Content-Length: {len(head)}\r\n\r\n").encode()
              + rawhttp.chunked(body, [5, 17, 3, 11]))
    r = conn.read_response()
    assert r.status == 200, r
    _, blobs = split_binary_response(r)
    assert blobs["OUTPUT0"] == x.tobytes()


def test_transfer_encoding_case_insensitive(conn):
    conn.send(POST.encode() + b"Transfer-Encoding: Chunked\r\n\r\n"
              + rawhttp.chunked(GOOD_BODY, [10]))
    assert conn.read_response().status == 200


# ---- size limits

def _padded_line(total):
    """A request line of exactly total bytes (without CRLF) for /v2/health/ready."""
    base = "GET /v2/health/ready?p= HTTP/1.1"
    return base.replace("?p=", "?p=" + "a" * (total - len(base)))


def test_request_line_at_limit_ok(conn):
    conn.send(_padded_line(8192) + "\r\nHost: 127.0.0.1\r\n\r\n")
    r = conn.read_response()
    assert r.status == 200, r


def test_request_line_over_limit_414(server):
    reject_and_close(server, _padded_line(8193) + "\r\nHost: 127.0.0.1\r\n\r\n", 414,
                     must_close=False)


def test_request_line_414_before_it_ends(server):
    """The limit is checked on partial input: no need to wait for the CRLF."""
    reject_and_close(server, "GET /" + "a" * 9000, 414, must_close=False)


def test_header_line_at_limit_ok(conn):
    name = "X-Big: "
    conn.send(GET + name + "v" * (8192 - len(name)) + "\r\n\r\n")
    assert conn.read_response().status == 200


@pytest.mark.parametrize("what", ["one-header-8k", "total-32k", "101-headers", "partial-8k"])
def test_headers_too_large_431(server, what):
    if what == "one-header-8k":
        data = GET + "X-Big: " + "v" * 8200 + "\r\n\r\n"
    elif what == "total-32k":
        data = GET + "".join(f"X-H{i}: {'v' * 7000}\r\n" for i in range(5)) + "\r\n"
    elif what == "101-headers":
        data = GET + "".join(f"X-H{i}: v\r\n" for i in range(100)) + "\r\n"  # + Host = 101
    else:  # a header line that only grows: refused before it ends
        data = GET + "X-Big: " + "v" * 9000
    reject_and_close(server, data, 431, must_close=False)


def test_100_headers_ok(conn):
    conn.send(GET + "".join(f"X-H{i}: v\r\n" for i in range(99)) + "\r\n")  # + Host = 100
    assert conn.read_response().status == 200


@pytest.mark.parametrize("length", ["67108865", "18446744073709551615", "1000000000000"])
def test_content_length_over_limit_413(server, length):
    """413 comes from the head alone: the body is never sent."""
    reject_and_close(server, POST + f"Content-Length: {length}\r\n\r\n", 413, must_close=False)


def test_content_length_over_limit_with_expect(server):
    """With Expect: 100-continue the answer is the 413, never a 100."""
    c = rawhttp.RawConn(server.port)
    try:
        c.send(POST + "Content-Length: 67108865\r\nExpect: 100-continue\r\n\r\n")
        r = c.read_response(timeout=5)
        assert r.status == 413, r
    finally:
        c.close()


# ---- pipelining

def test_pipelined_gets_in_order(conn):
    conn.send(b"".join(rawhttp.build_request("GET", p) for p in (
        "/v2/models/identity_fp32", "/v2/models/identity_int8", "/v2/models/versioned")))
    names = [conn.read_response().json()["name"] for _ in range(3)]
    assert names == ["identity_fp32", "identity_int8", "versioned"]
    good_request(conn)


def test_pipelined_infers_in_order(conn):
    a = infer_json([fp32_input(data=(1.0, 2.0, 3.0))], id="first")
    b = infer_json([{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [4, 5]}],
                   id="second")
    conn.send(rawhttp.build_request("POST", INFER_FP32, a)
              + rawhttp.build_request("POST", "/v2/models/identity_int32/infer", b)
              + rawhttp.build_request("GET", "/v2/health/live"))
    r1, r2, r3 = (conn.read_response() for _ in range(3))
    assert r1.status == 200 and r1.json()["id"] == "first"
    assert r1.json()["outputs"][0]["data"] == [1.0, 2.0, 3.0]
    assert r2.status == 200 and r2.json()["id"] == "second"
    assert r2.json()["outputs"][0]["data"] == [4, 5]
    assert r3.status == 200


def test_pipelined_mobilenet_then_fast(conn):
    """A slow request first: the fast one behind it still answers second."""
    x = np.zeros((1, 3, 224, 224), dtype=np.float32)
    head = json.dumps({"id": "slow", "inputs": [{"name": "input", "datatype": "FP32",
                                                 "shape": list(x.shape),
                                                 "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    slow = rawhttp.build_request("POST", "/v2/models/mobilenetv2/infer", head + x.tobytes(),
                                 [f"Inference-Header-Content-Length: {len(head)}"])
    fast = rawhttp.build_request("POST", INFER_FP32, infer_json([fp32_input()], id="fast"))
    conn.send(slow + fast)
    r1 = conn.read_response()
    r2 = conn.read_response()
    h1, _ = split_binary_response(r1)
    assert h1["id"] == "slow"
    assert r2.json()["id"] == "fast"


def test_pipelined_app_error_keeps_going(conn):
    conn.send(rawhttp.build_request("GET", "/v2/models/identity_fp32")
              + rawhttp.build_request("POST", "/v2/models/nope/infer", GOOD_BODY)
              + rawhttp.build_request("POST", INFER_FP32, b"{bad json")
              + rawhttp.build_request("GET", "/v2/models/identity_int8"))
    statuses = [conn.read_response() for _ in range(4)]
    assert [r.status for r in statuses] == [200, 404, 400, 200]
    assert statuses[3].json()["name"] == "identity_int8"


def test_pipelined_framing_error_ends_connection(server):
    c = rawhttp.RawConn(server.port)
    try:
        c.send(rawhttp.build_request("GET", "/v2/models/identity_fp32")
               + (GET + "X-A : b\r\n\r\n").encode()
               + rawhttp.build_request("GET", "/v2/models/identity_int8"))
        r1 = c.read_response()
        assert r1.status == 200 and r1.json()["name"] == "identity_fp32"
        r2 = c.read_response()
        assert r2.status == 400
        assert c.closed_by_peer(), "the request after a framing error was answered"
    finally:
        c.close()
    serves_on_new_connection(server.port)


# ---- HTTP/1.0, Connection, Expect

def test_http10_answered_and_closed(server):
    c = rawhttp.RawConn(server.port)
    try:
        c.send("GET /v2/health/ready HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert c.closed_by_peer()
    finally:
        c.close()


def test_http10_post_infer(server):
    c = rawhttp.RawConn(server.port)
    try:
        c.request("POST", INFER_FP32, GOOD_BODY, version="HTTP/1.0")
        r = c.read_response()
        assert r.status == 200 and r.json()["outputs"][0]["data"] == [1.0, 2.5, -3.0]
        assert c.closed_by_peer()
    finally:
        c.close()


def test_http10_keep_alive(server):
    c = rawhttp.RawConn(server.port)
    try:
        c.send("GET /v2/health/ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert c.read_response().status == 200
        c.send("GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert c.read_response().status == 200
    finally:
        c.close()


def test_http10_keep_alive_response_header(server):
    """An HTTP/1.0 client only reuses the connection if the response says "Connection:
    keep-alive" (RFC 9112 appendix C.2.2; ApacheBench -k and HTTP/1.0 proxies rely on it)."""
    c = rawhttp.RawConn(server.port)
    try:
        c.send("GET /v2/health/ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert (r.header("Connection") or "").lower() == "keep-alive", r.raw_head
    finally:
        c.close()


def test_http10_chunked_refused(server):
    """Transfer-Encoding is not defined for HTTP/1.0 (RFC 9112 6.1): refuse and close."""
    c = rawhttp.RawConn(server.port)
    try:
        c.send(("POST /v2/models/identity_fp32/infer HTTP/1.0\r\nTransfer-Encoding: chunked"
                "\r\n\r\n").encode() + rawhttp.chunked(GOOD_BODY, [20]))
        r = c.read_response()
        assert r.status == 400
        assert c.closed_by_peer()
    finally:
        c.close()


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close", "CLOSE"])
def test_connection_close_honoured(server, value):
    c = rawhttp.RawConn(server.port)
    try:
        c.request("POST", INFER_FP32, GOOD_BODY, [f"Connection: {value}"])
        r = c.read_response()
        assert r.status == 200
        assert c.closed_by_peer(), "connection left open after Connection: close"
    finally:
        c.close()


def test_connection_close_response_header(server):
    c = rawhttp.RawConn(server.port)
    try:
        c.request("GET", "/v2/health/ready", None, ["Connection: close"])
        r = c.read_response()
        assert (r.header("Connection") or "").lower() == "close"
    finally:
        c.close()


def test_expect_100_continue(conn):
    conn.send(POST + f"Content-Length: {len(GOOD_BODY)}\r\nExpect: 100-continue\r\n\r\n")
    interim = conn.read_response(timeout=5)
    assert interim.status == 100, interim
    assert interim.raw_head.startswith(b"HTTP/1.1 100 Continue\r\n")
    conn.send(GOOD_BODY)
    r = conn.read_response()
    assert r.status == 200 and r.json()["outputs"][0]["data"] == [1.0, 2.5, -3.0]
    good_infer(conn)


def test_expect_100_continue_body_sent_anyway(conn):
    """A client that does not wait for the 100 (RFC 9110 10.1.1 allows it)."""
    conn.send(POST + f"Content-Length: {len(GOOD_BODY)}\r\nExpect: 100-continue\r\n\r\n")
    conn.send(GOOD_BODY)
    final, interim = conn.read_final()
    assert final.status == 200
    assert [r.status for r in interim] in ([], [100])
    good_infer(conn)


def test_expect_100_continue_chunked(conn):
    conn.send(POST + "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
    interim = conn.read_response(timeout=5)
    assert interim.status == 100
    conn.send(rawhttp.chunked(GOOD_BODY, [9, 9]))
    assert conn.read_response().status == 200


def test_expect_100_continue_http10_ignored(server):
    c = rawhttp.RawConn(server.port)
    try:
        c.send(("POST /v2/models/identity_fp32/infer HTTP/1.0\r\n"
                f"Content-Length: {len(GOOD_BODY)}\r\nExpect: 100-continue\r\n\r\n").encode()
               + GOOD_BODY)
        final, interim = c.read_final()
        assert final.status == 200 and interim == []
    finally:
        c.close()


# ---- clients that go away

def test_client_closes_mid_head(server):
    for reset in (False, True):
        c = rawhttp.RawConn(server.port)
        c.send("POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        time.sleep(0.05)
        c.close(reset=reset)
    serves_on_new_connection(server.port)


def test_client_closes_mid_body(server):
    for reset in (False, True):
        c = rawhttp.RawConn(server.port)
        c.send(POST + f"Content-Length: {len(GOOD_BODY)}\r\n\r\n")
        c.send(GOOD_BODY[:10])
        time.sleep(0.05)
        c.close(reset=reset)
        c = rawhttp.RawConn(server.port)
        c.send(CHUNKED_HEAD + "10\r\n0123")
        time.sleep(0.05)
        c.close(reset=reset)
    serves_on_new_connection(server.port)


def _big_identity_request(n_floats):
    x = np.ones(n_floats, dtype=np.float32)
    head = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, n_floats],
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return rawhttp.build_request("POST", INFER_FP32, head + x.tobytes(),
                                 [f"Inference-Header-Content-Length: {len(head)}"])


def test_client_closes_mid_response(server):
    req = _big_identity_request(2_000_000)  # 8 MB each way
    for reset in (False, True, True):
        c = rawhttp.RawConn(server.port)
        c.send(req)
        c.sock.settimeout(10)
        got = c.sock.recv(65536)
        assert got.startswith(b"HTTP/1.1 200"), got[:100]
        c.close(reset=reset)
    serves_on_new_connection(server.port)


def test_client_closes_before_response(server):
    """The work for a client that has gone is dropped, nothing else is disturbed."""
    x = np.zeros((4, 3, 224, 224), dtype=np.float32)
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    req = rawhttp.build_request("POST", "/v2/models/mobilenetv2/infer", head + x.tobytes(),
                                [f"Inference-Header-Content-Length: {len(head)}"])
    for reset in (False, True):
        c = rawhttp.RawConn(server.port)
        c.send(req + rawhttp.build_request("GET", "/v2/health/live"))  # and a queued one
        c.close(reset=reset)
    serves_on_new_connection(server.port)
    time.sleep(0.3)
    serves_on_new_connection(server.port)


def test_many_connections_interleaved(server):
    """Several open connections with partial requests do not block each other."""
    conns = [rawhttp.RawConn(server.port) for _ in range(10)]
    try:
        for c in conns:
            c.send(POST + f"Content-Length: {len(GOOD_BODY)}\r\n\r\n")
        for c in reversed(conns):
            c.send(GOOD_BODY)
            r = c.read_response()
            assert r.status == 200
    finally:
        for c in conns:
            c.close()
