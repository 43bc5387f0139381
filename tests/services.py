"""tests/services.py: throwaway Redis and PostgreSQL servers on free loopback ports, for the
integration tests (tests/integration/test_features.py) and the benchmarks (bench/run.py).

No pytest here, so bench scripts can import it too (sys.path.insert(0, str(ROOT / "tests"))).
Anything that keeps a server from starting raises RuntimeError with a message saying what to
install or what the server logged; the tests turn that into pytest.fail.

Both classes are context managers: `with services.Postgres() as pg:` starts the server and, on
the way out, stops it and removes what it created. stop() does the same and may be called more
than once. Redis(d) with a directory of the caller's (a pytest tmp_path) leaves that directory
alone; without one it makes and removes its own under $TMPDIR. Redis(d, persist=True) keeps an
append-only file fsynced on every write (an acknowledged write survives SIGKILL), so it can be
killed or shut down and started again on the same port and directory with its data; call()
runs any command and returns the parsed reply (xinfo_stream, xrange and xlen for streams).

PostgreSQL refuses to run as root: as root the server runs as the system user onnxd-test
(created with useradd if missing), the way tests/unit/l3_pg_test.c runs it. Nobody else's servers
are touched: only processes started here are stopped, by their Popen handle.
"""

import glob
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

LOG_TAIL_BYTES = 2000


def free_port():
    """A TCP port free on 127.0.0.1 just now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path):
    """The end of a server's log, for an error message (the log may be removed right after)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
            text = f.read().decode(errors="replace").strip()
    except OSError:
        return ""
    return "\n--- last lines ---\n" + text if text else ""


def _resp_request(args):
    """One Redis command as RESP: an array of bulk strings (str/int args UTF-8 encoded)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class RedisError(RuntimeError):
    """An error reply ("-ERR ...", "-WRONGTYPE ...") from Redis."""


def _read_reply(f):
    """One RESP2 reply from file f: simple string -> str, error -> RedisError, integer -> int,
    bulk string -> bytes (None for nil), array -> list (None for nil). ConnectionError when the
    server closed the connection mid-reply."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"redis closed the connection (read {line!r})")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2 or data[n:] != b"\r\n":
            raise ConnectionError("redis: truncated bulk reply")
        return data[:n]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RuntimeError(f"redis: unexpected reply line {line!r}")


def _stream_entry(e):
    """[id, [field, value, ...]] of XRANGE / XINFO -> (id str, {field str: value bytes})."""
    fields = e[1] or []
    return e[0].decode(), {fields[i].decode(): fields[i + 1] for i in range(0, len(fields), 2)}


def _redis_bin():
    for p in (os.environ.get("ONNXD_REDIS_SERVER"), "/usr/bin/redis-server",
              "/usr/local/bin/redis-server", shutil.which("redis-server")):
        if p and os.access(p, os.X_OK):
            return p
    raise RuntimeError("redis-server not found: install the Debian package redis-server "
                       "(scripts/setup.sh does)")


class _Service:
    """`with` support for a server with start() and stop(): stopped on the way out, and on a
    failed start too."""

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()


class Redis(_Service):
    """A redis-server of our own on a free loopback port (no persistence unless persist).

    proc is the server's Popen (tests stop and kill it with signals); start() may be called
    again after the process died, and reuses the same port and directory. With persist, the
    server keeps an append-only file in its directory, fsynced before every write is
    acknowledged (--appendonly yes --appendfsync always): after kill() or shutdown(), start()
    brings the data back."""

    def __init__(self, d=None, persist=False):
        self.bin = _redis_bin()
        self._own_dir = d is None
        self.dir = Path(tempfile.mkdtemp(prefix="onnxd-redis-")) if d is None else Path(d)
        self.port = free_port()
        self.persist = persist
        self.proc = None
        self._log = None

    @property
    def address(self):
        """"127.0.0.1:PORT", the form onnxd's --redis takes."""
        return f"127.0.0.1:{self.port}"

    def start(self):
        self._close_log()
        self._log = open(self.dir / "redis.log", "ab")
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else \
            ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [self.bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof,
             "--daemonize", "no", "--dir", str(self.dir)],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.command("PING") == b"+PONG":
                    return
            except OSError:
                time.sleep(0.02)
        self._kill()
        raise RuntimeError(f"redis-server did not start; see {self.dir}/redis.log"
                           + _log_tail(self.dir / "redis.log"))

    def command(self, *args):
        """Sends one command on a new connection; returns the first line of the reply (bytes).
        OSError when the server does not answer within 2 s."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(_resp_request(args))
            return s.recv(65536).split(b"\r\n")[0]

    def lrange(self, key):
        """LRANGE key 0 -1 on a new connection: the list's items as a list of bytes ([] for a
        missing key). RuntimeError on an error reply (WRONGTYPE, ...), OSError when the server
        does not answer within 2 s."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s, \
                s.makefile("rb") as f:
            s.sendall(_resp_request(("LRANGE", key, 0, -1)))
            head = f.readline()
            if not head.startswith(b"*"):
                raise RuntimeError(f"redis LRANGE {key!r} answered {head.strip()!r}")
            items = []
            for _ in range(int(head[1:])):
                h = f.readline()
                if not h.startswith(b"$"):
                    raise RuntimeError(f"redis LRANGE {key!r}: unexpected item {h.strip()!r}")
                n = int(h[1:])
                data = f.read(n + 2)  # the item and its \r\n
                if len(data) != n + 2 or data[n:] != b"\r\n":
                    raise RuntimeError(f"redis LRANGE {key!r}: truncated reply")
                items.append(data[:n])
            return items

    def call(self, *args, timeout=10.0):
        """Runs one command on a new connection and returns its parsed reply (see _read_reply:
        str, int, bytes, None or nested lists). RedisError on an error reply; OSError when the
        server does not answer within timeout seconds or is not there."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s, \
                s.makefile("rb") as f:
            s.sendall(_resp_request(args))
            return _read_reply(f)

    def xlen(self, key):
        return self.call("XLEN", key)

    def xinfo_stream(self, key):
        """XINFO STREAM key as a dict: "length", "last-generated-id", "max-deleted-entry-id",
        "entries-added", ... (ids as str); "first-entry" / "last-entry" as (id, {field: bytes})
        or None. RedisError for a missing key."""
        reply = self.call("XINFO", "STREAM", key)
        out = {}
        for i in range(0, len(reply), 2):
            k, v = reply[i].decode(), reply[i + 1]
            if isinstance(v, bytes):
                v = v.decode()
            elif isinstance(v, list):
                v = _stream_entry(v)
            out[k] = v
        return out

    def xrange(self, key, start="-", end="+", page=500):
        """Every entry of the stream between start and end (XRANGE, page entries per call), in
        order: [(id str, {field str: value bytes})]; [] for a missing key."""
        out = []
        lo = start
        while True:
            got = [_stream_entry(e) for e in self.call("XRANGE", key, lo, end, "COUNT", page,
                                                       timeout=60.0)]
            out += got
            if len(got) < page:
                return out
            lo = "(" + got[-1][0]

    def set_row(self, key, values):
        """SET key to values as little-endian float32, the way onnxd stores feature rows."""
        reply = self.command("SET", key, struct.pack(f"<{len(values)}f", *values))
        if reply != b"+OK":
            raise RuntimeError(f"redis SET {key!r} answered {reply!r}")

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP) server too
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        """SIGKILL (a stopped server too), waited for; the directory stays (start() again)."""
        self._kill()
        self._close_log()

    def shutdown(self, timeout=30.0):
        """Graceful stop: SIGTERM (Redis flushes and fsyncs its append-only file, then exits),
        waited for up to timeout seconds (then killed). Returns the exit status (None if it
        had to be killed). The directory stays (start() again)."""
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        elif self.proc:
            rc = self.proc.returncode
        self._close_log()
        return rc

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def stop(self):
        """Kills the server and, if the directory is ours, removes it."""
        self._kill()
        self._close_log()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class Postgres(_Service):
    """A PostgreSQL server of our own on a free loopback port, in a directory under /tmp
    ($TMPDIR), superuser "onnxd", trust authentication, fsync off. As root it runs as the system
    user onnxd-test (PostgreSQL refuses root; created here if missing), the way
    tests/unit/l3_pg_test.c runs it. top is that directory (free for the caller's files too)."""

    USER = "onnxd-test"

    def __init__(self):
        bindir = os.environ.get("ONNXD_PG_BINDIR")
        if not bindir:
            found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
            bindir = os.path.dirname(found[-1]) if found else None
        if not bindir or not os.access(os.path.join(bindir, "postgres"), os.X_OK):
            raise RuntimeError("PostgreSQL server binaries not found: install the Debian package "
                               "postgresql (scripts/setup.sh does)")
        self.bindir = bindir
        self.uid = self.gid = None
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam(self.USER)
            except KeyError:
                subprocess.run(["/usr/sbin/useradd", "--system", "--user-group", "--no-create-home",
                                "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                                self.USER], check=True, capture_output=True)
                pw = pwd.getpwnam(self.USER)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.top = Path(tempfile.mkdtemp(prefix="onnxd-pgfeat-"))
        os.chmod(self.top, 0o711)
        self.dir = self.top / "pg"
        self.dir.mkdir(mode=0o700)
        if self.uid is not None:
            os.chown(self.dir, self.uid, self.gid)
        self.port = free_port()
        self.proc = None
        self._log = None

    def _as_user(self):
        if self.uid is not None:
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)

    def start(self):
        data = self.dir / "data"
        r = subprocess.run([os.path.join(self.bindir, "initdb"), "-D", str(data), "-U", "onnxd",
                            "-A", "trust", "-E", "UTF8", "--no-locale", "-N"],
                           preexec_fn=self._as_user, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        self._log = open(self.top / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [os.path.join(self.bindir, "postgres"), "-D", str(data), "-k", str(self.dir),
             "-p", str(self.port), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "max_connections=60", "-c", "shared_buffers=16MB"],
            preexec_fn=self._as_user, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.sql("SELECT 1", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start; see {self.top}/postgres.log"
                           + _log_tail(self.top / "postgres.log"))

    @property
    def conninfo(self):
        """A libpq connection string for this server (onnxd's --postgres)."""
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=onnxd"

    def sql(self, q, check=True):
        """Runs q with psql; returns the CompletedProcess. check: RuntimeError on failure."""
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                            "-h", "127.0.0.1", "-p", str(self.port), "-U", "onnxd", "-d",
                            "postgres", "-c", q], capture_output=True, text=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError(f"psql failed (exit {r.returncode}): {r.stderr.strip()}")
        return r

    def stop(self):
        """Shuts the server down (fast shutdown; killed after 30 s) and removes its directory."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP) server too
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None
        shutil.rmtree(self.top, ignore_errors=True)
