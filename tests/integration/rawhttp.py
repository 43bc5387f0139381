"""A deliberately small HTTP/1.1 client over one plain socket, for tests that send exact bytes.

RawConn.send() writes whatever it is given; read_response() parses exactly one response
(status line, headers, a body framed by Content-Length, chunked coding or connection close)
and leaves any further bytes buffered for the next call, so pipelined answers can be read one
by one. Interim 1xx responses are returned as responses of their own. Nothing is retried and
nothing is normalised: the tests see what the server sent.
"""

import json
import socket
import struct
import time

DEFAULT_TIMEOUT = 10.0
MAX_HEAD = 1 << 20


class Closed(Exception):
    """The connection ended (EOF or reset) before a complete response."""

    def __init__(self, msg, partial=b""):
        super().__init__(f"{msg} (received {len(partial)} bytes: {partial[:200]!r})")
        self.partial = partial


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as sent
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        """First value of a header (case-insensitive name), or None."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def error(self):
        """The error message of an {"error": "..."} body (asserts the shape)."""
        ct = self.header("Content-Type") or ""
        assert ct.split(";")[0].strip() == "application/json", f"error Content-Type {ct!r}"
        obj = self.json()
        assert isinstance(obj, dict) and isinstance(obj.get("error"), str), \
            f"error body is not {{\"error\": str}}: {self.body[:300]!r}"
        return obj["error"]

    def __repr__(self):
        return f"<Response {self.status} {self.reason!r} {len(self.body)} bytes: " \
               f"{self.body[:200]!r}>"


class RawConn:
    def __init__(self, port, host="127.0.0.1", timeout=DEFAULT_TIMEOUT):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def fileno(self):  # for select()
        return self.sock.fileno()

    # -- sending
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.sendall(data)

    def try_send(self, data):
        """Sends, ignoring a connection the server has already closed. Returns bytes sent."""
        if isinstance(data, str):
            data = data.encode("latin-1")
        try:
            self.sock.sendall(data)
            return len(data)
        except (BrokenPipeError, ConnectionResetError):
            return 0

    def request(self, method, target, body=None, headers=(), version="HTTP/1.1"):
        """Sends one well-formed request (Host and, with a body, Content-Length added)."""
        self.send(build_request(method, target, body, headers, version))

    # -- receiving
    def _fill(self, deadline):
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for the server")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError("timed out waiting for the server") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _read_until(self, marker, deadline, limit=MAX_HEAD):
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out, self.buf = self.buf[: i + len(marker)], self.buf[i + len(marker):]
                return out
            if len(self.buf) > limit:
                raise AssertionError(f"response head over {limit} bytes")
            if not self._fill(deadline):
                raise Closed("connection closed before a complete response head", self.buf)

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise Closed(f"connection closed after {len(self.buf)} of {n} body bytes",
                             self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout=None, head_request=False):
        """Reads one response (a 1xx interim response counts as one)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        head = self._read_until(b"\r\n\r\n", deadline)
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        assert len(parts) >= 2 and parts[0].startswith("HTTP/1."), f"bad status line {status_line!r}"
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            assert sep and name == name.strip() and name, f"bad response header line {line!r}"
            headers.append((name, value.strip()))
        resp = Response(version, status, reason, headers, b"", head)
        if 100 <= status < 200 or status in (204, 304) or head_request:
            return resp
        te = resp.header("Transfer-Encoding")
        cl = resp.header_all("Content-Length")
        if te is not None:
            assert te.lower() == "chunked", f"response Transfer-Encoding {te!r}"
            resp.body = self._read_chunked(deadline)
        elif cl:
            assert len(cl) == 1 and cl[0].isdigit(), f"response Content-Length {cl!r}"
            resp.body = self._read_exact(int(cl[0]), deadline)
        else:
            while self._fill(deadline):
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def _read_chunked(self, deadline):
        body = b""
        while True:
            line = self._read_until(b"\r\n", deadline)
            size = int(line[:-2].split(b";")[0], 16)
            if size == 0:
                while self._read_until(b"\r\n", deadline) != b"\r\n":
                    pass
                return body
            body += self._read_exact(size, deadline)
            assert self._read_exact(2, deadline) == b"\r\n", "bad chunk terminator"

    def read_final(self, timeout=None):
        """Reads responses until a final (non-1xx) one; returns (final, [interim...])."""
        interim = []
        while True:
            r = self.read_response(timeout)
            if r.status >= 200:
                return r, interim
            interim.append(r)

    def closed_by_peer(self, timeout=2.0):
        """True if the server closes (EOF or reset) within timeout with nothing more to say;
        False if the connection is still open then. Raises if the server sends more bytes."""
        if self.buf:
            raise AssertionError(f"unexpected bytes after the response: {self.buf[:200]!r}")
        deadline = time.monotonic() + timeout
        try:
            if self._fill(deadline):
                raise AssertionError(f"unexpected bytes after the response: {self.buf[:200]!r}")
        except TimeoutError:
            return False
        return True

    def close(self, reset=False):
        try:
            if reset:  # RST instead of FIN
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass


def build_request(method, target, body=None, headers=(), version="HTTP/1.1"):
    if isinstance(body, str):
        body = body.encode()
    head = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    names = {h.split(":", 1)[0].strip().lower() for h in headers}
    head += list(headers)
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked(body, sizes):
    """Encodes body in chunks of the given sizes (the rest in one last chunk)."""
    out, i = [], 0
    for n in sizes:
        part = body[i: i + n]
        if not part:
            break
        out.append(b"%x\r\n" % len(part) + part + b"\r\n")
        i += len(part)
    if i < len(body):
        out.append(b"%x\r\n" % (len(body) - i) + body[i:] + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)
