#!/usr/bin/env python3
"""load_l3.py: bulk-load feature rows for onnxd's row columns ({"row": KEY, "table": T, ...}).

    python tools/fraud/load_l3.py ROWS.csv [--redis HOST:PORT] [--pg-csv OUT.csv] [--onnxd URL]

ROWS.csv has one row a line: table,key,v1,v2,... (numbers; no header). Each row is the entity
"table:key" with its values as float32, little-endian, back to back: the encoding onnxd reads in
every tier. Targets (any of them):
  --redis HOST:PORT   SET table:key <bytes> for every row, pipelined (L3, Redis)
  --pg-csv OUT        a CSV of entity,value with value as bytea hex (\\x...), for
                      psql -c "\\copy features(entity, value) FROM 'OUT' WITH (FORMAT csv)"
                      (L3, PostgreSQL; the table is created by onnxd --postgres at start-up)
  --onnxd URL         PUT URL/v1/features/table/key: stored in onnxd's L1 and L2 and written
                      through to its L3 tiers
"""

import argparse
import csv
import json
import socket
import struct
import sys
import urllib.parse
import urllib.request


def read_rows(path):
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, rec in enumerate(csv.reader(f), 1):
            if not rec or not "".join(rec).strip():
                continue
            if len(rec) < 2 or not rec[0] or not rec[1]:
                raise SystemExit(f"{path}:{n}: expected table,key,v1,v2,...")
            try:
                vals = [float(v) for v in rec[2:]]
            except ValueError:
                raise SystemExit(f"{path}:{n}: values must be numbers") from None
            rows.append((rec[0], rec[1], vals))
    return rows


def encode(vals):
    return struct.pack(f"<{len(vals)}f", *vals)


def to_redis(hostport, rows):
    host, _, port = hostport.rpartition(":")
    out = bytearray()
    for table, key, vals in rows:
        parts = [b"SET", f"{table}:{key}".encode(), encode(vals)]
        out += b"*%d\r\n" % len(parts)
        for p in parts:
            out += b"$%d\r\n%s\r\n" % (len(p), p)
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=30) as s:
        s.sendall(out)
        got = b""
        while got.count(b"\r\n") < len(rows):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("redis closed the connection")
            got += chunk
    bad = [line for line in got.split(b"\r\n")[:len(rows)] if line != b"+OK"]
    if bad:
        raise SystemExit(f"redis: {bad[0]!r}")


def to_pg_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        for table, key, vals in rows:
            w.writerow([f"{table}:{key}", "\\x" + encode(vals).hex()])


def to_onnxd(url, rows):
    for table, key, vals in rows:
        path = f"/v1/features/{urllib.parse.quote(table, safe='')}/{urllib.parse.quote(key, safe='')}"
        req = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(vals).encode(),
                                     method="PUT", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", help="CSV of table,key,v1,v2,...")
    ap.add_argument("--redis", help="HOST:PORT")
    ap.add_argument("--pg-csv", help="write a CSV for PostgreSQL's COPY here")
    ap.add_argument("--onnxd", help="onnxd base URL, e.g. http://127.0.0.1:8000")
    args = ap.parse_args(argv)
    if not (args.redis or args.pg_csv or args.onnxd):
        ap.error("give at least one of --redis, --pg-csv, --onnxd")
    rows = read_rows(args.rows)
    if args.redis:
        to_redis(args.redis, rows)
    if args.pg_csv:
        to_pg_csv(args.pg_csv, rows)
    if args.onnxd:
        to_onnxd(args.onnxd, rows)
    print(f"load_l3: {len(rows)} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
