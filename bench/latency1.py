"""One-client round-trip latency of a model through onnxd, JSON and binary, next to in-process
ONNX Runtime Run time for the same input with the same thread settings.

  .venv/bin/python bench/latency1.py --url 127.0.0.1:8000 --model mobilenetv2 --repo models -n 100

Prints medians (and p90) in milliseconds. Pre-encodes both request bodies once, keeps one
keep-alive connection, checks every response's status and output size."""
import argparse, http.client, json, os, statistics, struct, time

import numpy as np
import onnxruntime as ort


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="127.0.0.1:8000")
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--repo", default="models")
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--intra-op-threads", type=int, default=1)
    a = ap.parse_args()

    path = os.path.join(a.repo, a.model, "1", "model.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.intra_op_threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    out_name = sess.get_outputs()[0].name
    for _ in range(5):
        sess.run(None, {inp.name: x})
    t_ort = []
    for _ in range(a.n):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        t_ort.append((time.perf_counter() - t0) * 1e3)

    jbody = json.dumps({"inputs": [{"name": inp.name, "shape": shape, "datatype": "FP32",
                                    "data": x.ravel().tolist()}]}).encode()
    hdr = json.dumps({"inputs": [{"name": inp.name, "shape": shape, "datatype": "FP32",
                                  "parameters": {"binary_data_size": x.nbytes}}],
                      "outputs": [{"name": out_name, "parameters": {"binary_data": True}}]}).encode()
    bbody = hdr + x.tobytes()
    conn = http.client.HTTPConnection(a.url, timeout=60)
    results = {}
    for kind, body, headers in (
            ("json", jbody, {"Content-Type": "application/json"}),
            ("binary", bbody, {"Content-Type": "application/octet-stream",
                               "Inference-Header-Content-Length": str(len(hdr))})):
        ts = []
        for i in range(a.n + 5):
            t0 = time.perf_counter()
            conn.request("POST", f"/v2/models/{a.model}/infer", body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            dt = (time.perf_counter() - t0) * 1e3
            if r.status != 200:
                raise SystemExit(f"{kind}: HTTP {r.status}: {data[:200]!r}")
            if i >= 5:
                ts.append(dt)
        results[kind] = ts
    print(f"model {a.model}, input {shape}, {a.n} requests, 1 client, "
          f"request bodies: JSON {len(jbody)} bytes, binary {len(bbody)} bytes")
    print(f"in-process ORT Run (intra-op threads {a.intra_op_threads}): "
          f"median {statistics.median(t_ort):.2f} ms, p90 {pct(t_ort, 90):.2f} ms")
    for k, ts in results.items():
        m = statistics.median(ts)
        print(f"onnxd {k:6s}: median {m:.2f} ms, p90 {pct(ts, 90):.2f} ms "
              f"({m / statistics.median(t_ort):.2f}x in-process Run)")


if __name__ == "__main__":
    main()
