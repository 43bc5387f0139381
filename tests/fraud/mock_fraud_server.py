#!/usr/bin/env python3
"""mock_fraud_server.py: a Python stand-in for the onnxd fraud API that does not exist yet
(POST /v1/events, POST /v2/models/fraud/infer with request parameters), as
tools/fraud/score_example.py expects it. It computes features with tools/fraud/features.py and
scores with ONNX Runtime, so it only tests the client and pins the wire format down; it says
nothing about the C implementation.

    python tests/fraud/mock_fraud_server.py MODEL.onnx [--port 8000]
"""

import argparse
import contextlib
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "fraud"))
import features as feats  # noqa: E402


class FraudApp:
    def __init__(self, model_path):
        import onnxruntime as ort

        self.sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        self.state = feats.OnlineFeatures()
        self.lock = threading.Lock()
        self.ingested = 0

    def events(self, body):
        events = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        with self.lock:
            for e in events:
                self.state.add(e)
            self.ingested += len(events)
        return 200, {"ingested": len(events)}

    def infer(self, body):
        req = json.loads(body)
        p = req.get("parameters") or {}
        amount = None
        for inp in req.get("inputs", []):
            if inp.get("name") == "amount":
                amount = inp["data"][0]
        if amount is None or any(k not in p for k in ("user_id", "card_id", "ts")):
            return 400, {"error": "need input amount and parameters user_id, card_id, ts"}
        with self.lock:
            values = self.state.row_values(p["ts"], p["user_id"], p["card_id"], amount)
        row = np.array(values, dtype=np.float32)  # the FP32 amount: float32(double) = nearest
        prob = self.sess.run(None, {"features": row[None, :]})[0]
        out = {"model_name": "fraud", "model_version": "1",
               "outputs": [{"name": "fraud_probability", "shape": [1, 1], "datatype": "FP32",
                            "data": [float(prob[0, 0])]}]}
        if p.get("return_features"):
            out["parameters"] = {"features": [float(v) for v in row]}
        return 200, out


def make_handler(app):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, doc):
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v2/health/ready":
                self.reply(200, {})
            else:
                self.reply(404, {"error": "not found"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                if self.path == "/v1/events":
                    self.reply(*app.events(body))
                elif self.path == "/v2/models/fraud/infer":
                    self.reply(*app.infer(body))
                else:
                    self.reply(404, {"error": "not found"})
            except (ValueError, KeyError, TypeError) as e:
                self.reply(400, {"error": str(e)})

    return Handler


@contextlib.contextmanager
def serve(model_path, port=0):
    """Runs the mock on 127.0.0.1 in a thread; yields (url, app)."""
    app = FraudApp(model_path)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(app))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", app
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    with serve(args.model, args.port) as (url, _):
        print(f"mock fraud server on {url}")
        threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
