"""Raw HTTP/2 against onnxd's gRPC port: malformed frames and the floods HTTP/2 allows (rapid
reset, SETTINGS, PING and empty-DATA floods, CONTINUATION floods, zero-window stalls, too many
streams), each followed by a good call on a fresh connection: the abuser's connection ends
(GOAWAY or close), every other client goes on being served.

Frames are written by hand (9-byte header + payload) with hpack for header blocks, so that the
tests can send what a conforming client library refuses to."""

import socket
import struct
import threading
import time

import grpc
import hpack
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from conftest import metric_value, rss_kib

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
ENHANCE_YOUR_CALM, PROTOCOL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM = 0xB, 0x1, 0x6, 0x7


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


def settings(**kv):
    ids = {"header_table_size": 1, "enable_push": 2, "max_concurrent_streams": 3,
           "initial_window_size": 4, "max_frame_size": 5, "max_header_list_size": 6}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v) for k, v in kv.items()))


def grpc_message(msg):
    return b"\x00" + struct.pack(">I", len(msg)) + msg


class H2:
    """A raw client connection: send frames, read frames."""

    def __init__(self, port, timeout=10.0, client_settings=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.enc = hpack.Encoder()
        self.buf = b""
        self.s.sendall(PREFACE + (client_settings or settings()))

    def send(self, data):
        self.s.sendall(data)

    def headers(self, stream, method, end_stream=False, extra=()):
        block = self.enc.encode([(":method", "POST"), (":scheme", "http"), (":path", method),
                                 (":authority", "localhost"), ("content-type", "application/grpc"),
                                 ("te", "trailers"), *extra])
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)

    def read_frame(self):
        """(type, flags, stream, payload), or None at EOF."""
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            try:
                chunk = self.s.recv(1 << 16)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
             self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        return f

    def until_end(self, limit_s=15.0):
        """Reads until EOF; returns the GOAWAY error code seen (or None) and whether EOF came."""
        goaway = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            try:
                f = self.read_frame()
            except socket.timeout:
                return goaway, False
            except OSError:
                return goaway, True
            if f is None:
                return goaway, True
            if f[0] == GOAWAY:
                goaway = struct.unpack(">I", f[3][4:8])[0]
        return goaway, False

    def close(self):
        self.s.close()


def good_call(server):
    """A fresh connection still gets answers."""
    with grpc.insecure_channel(server.grpc_url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live
        req = service_pb2.ModelInferRequest(model_name="identity_fp32")
        req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 2])
        req.raw_input_contents.append(np.array([1.5, -2], np.float32).tobytes())
        r = stub.ModelInfer(req, timeout=10)
        assert np.frombuffer(r.raw_output_contents[0], np.float32).tolist() == [1.5, -2.0]


def live_request(stream):
    return frame(DATA, END_STREAM, stream, grpc_message(b""))


@pytest.fixture
def h2server(server_factory, small_repo):
    return server_factory(small_repo, ["--idle-timeout-ms", "3000"], name="grpc-h2")


def test_plain_unary_call(h2server):
    c = H2(h2server.grpc_port)
    try:
        c.send(c.headers(1, "/inference.GRPCInferenceService/ServerLive") + live_request(1))
        got_status, got_data = None, b""
        dec = hpack.Decoder()
        while got_status is None:
            f = c.read_frame()
            assert f is not None, "connection closed before the answer"
            if f[0] == HEADERS and f[2] == 1:
                h = dict(dec.decode(f[3]))
                got_status = h.get("grpc-status", got_status)
            elif f[0] == DATA and f[2] == 1:
                got_data += f[3]
        assert got_status == "0"
        assert got_data == grpc_message(b"\x08\x01")  # ServerLiveResponse{live: true}
    finally:
        c.close()


def test_bad_preface_closed(h2server):
    s = socket.create_connection(("127.0.0.1", h2server.grpc_port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    good_call(h2server)


@pytest.mark.parametrize("case", ["data_on_stream_0", "even_stream", "huge_frame",
                                  "window_update_zero", "headers_garbage"])
def test_malformed_frames(h2server, case):
    c = H2(h2server.grpc_port)
    bad = {
        "data_on_stream_0": frame(DATA, 0, 0, b"xx"),
        "even_stream": c.headers(2, "/inference.GRPCInferenceService/ServerLive"),
        "huge_frame": frame(DATA, 0, 1, b"\0" * (1 << 17)),  # over the 16 KiB default
        "window_update_zero": frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
        "headers_garbage": frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff"),
    }[case]
    c.send(bad)
    goaway, eof = c.until_end()
    c.close()
    assert goaway is not None or eof, "a malformed frame left the connection open"
    good_call(h2server)


def test_rapid_reset(h2server):
    """Streams opened and reset at once, thousands of them: the connection is ended."""
    c = H2(h2server.grpc_port)
    burst = b"".join(c.headers(sid, "/inference.GRPCInferenceService/ServerLive")
                     + frame(RST_STREAM, 0, sid, struct.pack(">I", 8))
                     for sid in range(1, 2 * 5000, 2))
    try:
        c.send(burst)
    except OSError:
        pass  # the server closed it while we were still sending
    goaway, eof = c.until_end()
    c.close()
    assert goaway == ENHANCE_YOUR_CALM or eof, (goaway, eof)
    good_call(h2server)
    assert metric_value(h2server.port, "onnxd_grpc_floods_total") >= 1


@pytest.mark.parametrize("kind", ["ping", "settings", "empty_data"])
def test_control_frame_floods(h2server, kind):
    c = H2(h2server.grpc_port)
    if kind == "ping":
        one = frame(PING, 0, 0, b"12345678")
    elif kind == "settings":
        one = settings(max_concurrent_streams=100)
    else:  # empty DATA frames on an open stream
        c.send(c.headers(1, "/inference.GRPCInferenceService/ModelInfer"))
        one = frame(DATA, 0, 1, b"")
    rss0 = rss_kib(h2server.proc.pid)
    sent = 0
    try:
        for _ in range(200):  # 200 x 1000 frames, nothing read back
            c.send(one * 1000)
            sent += 1000
    except OSError:
        pass
    goaway, eof = c.until_end()
    c.close()
    assert goaway == ENHANCE_YOUR_CALM or eof, (kind, sent, goaway, eof)
    assert rss_kib(h2server.proc.pid) - rss0 < 64 * 1024
    good_call(h2server)


def test_continuation_flood(h2server):
    """A header block that never ends (CONTINUATION after CONTINUATION) is cut off at the header
    list limit, not buffered without end."""
    c = H2(h2server.grpc_port)
    first = c.headers(1, "/inference.GRPCInferenceService/ServerLive")
    first = first[:4] + bytes([0]) + first[5:]  # HEADERS without END_HEADERS
    junk = hpack.Encoder().encode([("x-junk", "a" * 4000)])
    try:
        c.send(first)
        for _ in range(2000):  # 8 MB of header block
            c.send(frame(CONTINUATION, 0, 1, junk))
    except OSError:
        pass
    goaway, eof = c.until_end()
    c.close()
    assert goaway is not None or eof
    good_call(h2server)


def test_too_many_streams_refused(server_factory, small_repo):
    s = server_factory(small_repo, ["--grpc-max-streams", "4"], name="grpc-streams")
    c = H2(s.grpc_port)
    try:
        # Six ModelInfer calls opened, none finished (no DATA yet): two over the limit.
        c.send(b"".join(c.headers(sid, "/inference.GRPCInferenceService/ModelInfer")
                        for sid in (1, 3, 5, 7, 9, 11)))
        refused = set()
        t0 = time.monotonic()
        while len(refused) < 2 and time.monotonic() - t0 < 10:
            f = c.read_frame()
            assert f is not None
            if f[0] == RST_STREAM and struct.unpack(">I", f[3])[0] == REFUSED_STREAM:
                refused.add(f[2])
        assert refused == {9, 11}
    finally:
        c.close()
    good_call(s)
    assert metric_value(s.port, "onnxd_grpc_refused_streams_total") == 2


def test_zero_window_stall_does_not_block(server_factory, small_repo, test_models):
    """A client that never opens its window: the answer waits, the server does not (others are
    served), and the connection is closed after the idle timeout."""
    s = server_factory(small_repo, ["--idle-timeout-ms", "2000"], name="grpc-zero-window")
    c = H2(s.grpc_port, timeout=30, client_settings=settings(initial_window_size=0))
    req = service_pb2.ModelInferRequest(model_name="identity_fp32")
    req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4096])
    req.raw_input_contents.append(np.zeros(4096, np.float32).tobytes())
    body = grpc_message(req.SerializeToString())
    c.send(c.headers(1, "/inference.GRPCInferenceService/ModelInfer")
           + b"".join(frame(DATA, 0, 1, body[i:i + 16384]) for i in range(0, len(body), 16384))
           + frame(DATA, END_STREAM, 1, b""))
    t0 = time.monotonic()
    for _ in range(5):
        good_call(s)
    assert time.monotonic() - t0 < 10
    goaway, eof = c.until_end(limit_s=20)
    c.close()
    assert eof, "a stalled connection was kept past the idle timeout"
    good_call(s)


def test_message_over_limit(server_factory, small_repo):
    s = server_factory(small_repo, ["--max-body-bytes", "65536"], name="grpc-limit")
    with grpc.insecure_channel(s.grpc_url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name="identity_fp32")
        req.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 32768])
        req.raw_input_contents.append(np.zeros(32768, np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live  # same channel
    good_call(s)


def test_many_connections_while_flooded(h2server):
    """Good calls from other threads keep succeeding while one connection floods PINGs."""
    stop = threading.Event()
    errors = []

    def flood():
        c = H2(h2server.grpc_port)
        try:
            while not stop.is_set():
                c.send(frame(PING, 0, 0, b"abcdefgh") * 500)
        except OSError:
            pass
        finally:
            c.close()

    t = threading.Thread(target=flood)
    t.start()
    try:
        for _ in range(20):
            try:
                good_call(h2server)
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)
    finally:
        stop.set()
        t.join(30)
    assert not errors, errors[:2]


def test_full_queue_unavailable_with_retry_hint(server_factory, tmp_path, demo_models):
    """One worker and a queue of one: of 8 calls at once most are refused at once with
    UNAVAILABLE, REST's message and grpc-retry-pushback-ms (REST's Retry-After); the others
    are answered."""
    from conftest import link_file

    link_file(demo_models / "mobilenetv2/1/model.onnx", tmp_path / "mobilenetv2/1/model.onnx")
    s = server_factory(tmp_path, ["--infer-threads", "1", "--max-queue", "1"],
                       name="grpc-overload")
    req = service_pb2.ModelInferRequest(model_name="mobilenetv2")
    # 8 x 1.2 MB: inside the server's 16 MiB connection window (this client ignores flow
    # control)
    req.inputs.add(name="input", datatype="FP32", shape=[2, 3, 224, 224])
    req.raw_input_contents.append(np.zeros((2, 3, 224, 224), np.float32).tobytes())
    body = grpc_message(req.SerializeToString())
    c = H2(s.grpc_port, timeout=60, client_settings=settings(initial_window_size=1 << 24))
    c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 24)))  # for the answers
    # the server's 16 MiB stream windows count once its SETTINGS are acknowledged
    while True:
        f = c.read_frame()
        assert f is not None, "connection closed"
        if f[0] == SETTINGS and not f[1] & ACK:
            break
    streams = list(range(1, 17, 2))
    out = frame(SETTINGS, ACK, 0, b"")
    for sid in streams:
        out += c.headers(sid, "/inference.GRPCInferenceService/ModelInfer")
        out += b"".join(frame(DATA, 0, sid, body[i:i + 16384]) for i in range(0, len(body), 16384))
        out += frame(DATA, END_STREAM, sid, b"")
    c.send(out)
    dec = hpack.Decoder()
    status = {}
    try:
        while len(status) < len(streams):
            f = c.read_frame()
            assert f is not None, "connection closed"
            if f[0] == HEADERS:
                h = dict(dec.decode(f[3]))
                if "grpc-status" in h:
                    status[f[2]] = h
    finally:
        c.close()
    refused = [h for h in status.values() if h["grpc-status"] == "14"]
    ok = [h for h in status.values() if h["grpc-status"] == "0"]
    assert refused and ok and len(refused) + len(ok) == len(streams), status
    for h in refused:
        assert h.get("grpc-retry-pushback-ms") == "1000", h
        assert "queue" in h.get("grpc-message", ""), h
    for h in ok:
        assert "grpc-retry-pushback-ms" not in h, h
