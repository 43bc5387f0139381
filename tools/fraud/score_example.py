#!/usr/bin/env python3
"""score_example.py: feed a running onnxd events, score transactions, and check that the features
the server computed online equal the offline ones bit for bit.

    python tools/fraud/score_example.py --url http://127.0.0.1:8000 [--events 5000] [--seed 7]
        [--events-file stream.jsonl] [--ingest 4000] [--score 100] [--model-file PATH]

*** EXPECTED API: the server side of this does not exist yet. This client is written against
*** the API below, agreed in advance; until the server implements it, expect 404s.

  POST /v1/events
      body: JSON lines, one event a line, as generate.py writes them (label is ignored):
        {"ts": 1700000000000, "user_id": "u1", "card_id": "c1", "merchant_id": "m1", "amount": 12.5}
      The server adds each event to its user's and its card's history. Expected answer: 2xx
      once the events are stored (visible to the next infer), {"error": ...} and 4xx otherwise.

  POST /v2/models/fraud/infer
      {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [123.45]}],
       "parameters": {"user_id": "u1", "card_id": "c1", "merchant_id": "m1",
                      "ts": 1700000000000, "return_features": true}}
      The server looks up the user's and the card's history, computes the 17 features of
      features.py (amount, 8 user features, 8 card features, at time ts, from the events
      ingested before), runs the model on them and answers
      {"model_name": "fraud", "outputs": [{"name": "fraud_probability", "shape": [1, 1],
        "datatype": "FP32", "data": [0.0123]}], "parameters": {"features": [17 numbers]}}
      "features" only when return_features is true. Scoring does not add the transaction to
      the history: the client ingests it afterwards (--score-adds-event if the server does).

What it does: takes the stream (generated with --events/--seed like train.py, or --events-file),
shifts every ts by one constant so the stream ends now (features only depend on differences of
ts, so they do not change; a server that expires events by wall-clock time keeps them;
--no-shift keeps the original times), computes the offline features of every event, ingests
the first --ingest events in batches, then for each of the next --score events: scores it,
compares the 17 returned features with the offline row (each number parsed straight to the
nearest float32, no detour through double, then compared bit for bit), compares the probability
with ONNX Runtime run here on the offline row (--model-file, when the file exists), and ingests
the event. Exit status 0 when everything matched, 1 on any mismatch, 2 when the server could
not be used.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import features as feats  # noqa: E402
import generate as gen  # noqa: E402


class ServerError(Exception):
    pass


def http(method, url, body=None, content_type="application/json", timeout=30.0):
    """(status, body bytes); HTTP errors are answers too, connection failures raise."""
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def parse_f32(text):
    """The float32 nearest the decimal text (ties to even): exact, unlike float32(float(text)),
    which rounds twice. Numbers the server prints for float32 values round-trip through this."""
    exact = Fraction(text)
    f = np.float32(float(text))
    best = None
    for c in (np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))):
        if not np.isfinite(c):
            continue
        d = abs(Fraction(float(c)) - exact)
        even = (int(np.array(c).view(np.uint32)) & 1) == 0
        if best is None or d < best[0] or (d == best[0] and even):
            best = (d, c)
    return best[1]


def event_line(e):
    return json.dumps({k: e[k] for k in ("ts", "user_id", "card_id", "merchant_id", "amount")},
                      separators=(",", ":"))


def ingest(url, events):
    body = ("\n".join(event_line(e) for e in events) + "\n").encode()
    status, answer = http("POST", url + "/v1/events", body, "application/x-ndjson")
    if not 200 <= status < 300:
        raise ServerError(f"POST /v1/events: HTTP {status}: {answer[:300]!r}")


def infer_request(e, return_features=True):
    return {
        "inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [e["amount"]]}],
        "parameters": {"user_id": e["user_id"], "card_id": e["card_id"],
                       "merchant_id": e["merchant_id"], "ts": e["ts"],
                       "return_features": return_features},
    }


def score(url, model, e):
    """(probability float32, features float32 [17] or None, seconds) for one transaction."""
    body = json.dumps(infer_request(e)).encode()
    t0 = time.perf_counter()
    status, answer = http("POST", f"{url}/v2/models/{model}/infer", body)
    dt = time.perf_counter() - t0
    if status != 200:
        raise ServerError(f"POST /v2/models/{model}/infer: HTTP {status}: {answer[:300]!r}")
    # Numbers kept as their text so each becomes the nearest float32 in one rounding.
    doc = json.loads(answer, parse_float=str, parse_int=str)
    outs = {o.get("name"): o for o in doc.get("outputs", [])}
    if "fraud_probability" not in outs:
        raise ServerError(f"no fraud_probability output in {answer[:300]!r}")
    prob = parse_f32(outs["fraud_probability"]["data"][0])
    fv = (doc.get("parameters") or {}).get("features")
    row = None if fv is None else np.array([parse_f32(v) for v in fv], dtype=np.float32)
    return prob, row, dt


def load_events(args):
    if args.events_file:
        events = gen.read_jsonl(args.events_file)
    else:
        events = gen.generate(args.events, args.seed, args.days).events()
    if not args.no_shift:
        shift = int(time.time() * 1000) - events[-1]["ts"]
        for e in events:
            e["ts"] += shift
    return events


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="fraud", help="model name on the server")
    ap.add_argument("--events", type=int, default=5000, help="generate this many events")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--events-file", help="read the stream from this JSON-lines file instead")
    ap.add_argument("--ingest", type=int, help="events ingested before scoring (default: 80%%)")
    ap.add_argument("--score", type=int, default=100, help="events scored one by one")
    ap.add_argument("--batch", type=int, default=1000, help="events per POST /v1/events")
    ap.add_argument("--model-file", default="models/fraud/1/model.onnx",
                    help="local copy of the served model, to check probabilities")
    ap.add_argument("--no-shift", action="store_true", help="keep the stream's original ts")
    ap.add_argument("--score-adds-event", action="store_true",
                    help="the server adds a scored transaction itself: do not ingest it after")
    ap.add_argument("--show", type=int, default=5, help="print the first N scored events")
    args = ap.parse_args(argv)
    url = args.url.rstrip("/")

    events = load_events(args)
    offline = feats.compute(events)
    n_ingest = int(0.8 * len(events)) if args.ingest is None else args.ingest
    todo = events[n_ingest:n_ingest + args.score]
    sess = None
    if args.model_file and os.path.isfile(args.model_file):
        import onnxruntime as ort

        sess = ort.InferenceSession(args.model_file, providers=["CPUExecutionProvider"])

    try:
        status, _ = http("GET", url + "/v2/health/ready", timeout=5.0)
        if status != 200:
            raise ServerError(f"GET /v2/health/ready: HTTP {status}")
        t0 = time.perf_counter()
        for i in range(0, n_ingest, args.batch):
            ingest(url, events[i:min(i + args.batch, n_ingest)])
        t_ingest = time.perf_counter() - t0
        print(f"score_example: ingested {n_ingest} events in {t_ingest:.2f} s")

        feat_bad = prob_bad = missing = 0
        lat = []
        for k, e in enumerate(todo):
            i = n_ingest + k
            prob, row, dt = score(url, args.model, e)
            lat.append(dt)
            want = offline[i]
            if row is None:
                missing += 1
            elif row.shape != want.shape or not np.array_equal(row.view(np.uint32),
                                                               want.view(np.uint32)):
                feat_bad += 1
                if feat_bad <= 5:
                    diff = [f"{feats.FEATURE_NAMES[j]}: online {row[j]!r} offline {want[j]!r}"
                            for j in range(min(len(row), len(want))) if row[j] != want[j]]
                    print(f"  MISMATCH event {i} ({e['user_id']}, {e['card_id']}, ts {e['ts']}): "
                          + ("; ".join(diff) or f"shape {row.shape}"))
            local = None
            if sess is not None:
                local = sess.run(None, {"features": want[None, :]})[0][0, 0]
                if abs(float(local) - float(prob)) > 1e-6:
                    prob_bad += 1
                    if prob_bad <= 5:
                        print(f"  PROBABILITY event {i}: server {prob!r}, local {local!r}")
            if k < args.show:
                print(f"  event {i}: {e['user_id']} {e['card_id']} {e['merchant_id']} "
                      f"{e['amount']:.2f} label {events[i].get('label', '?')}: "
                      f"p = {float(prob):.6f}"
                      + ("" if local is None else f" (local {float(local):.6f})"))
            if not args.score_adds_event:
                ingest(url, [e])
    except (ServerError, OSError) as err:
        print(f"score_example: {err}", file=sys.stderr)
        print("score_example: (the event API and the feature-assembling infer are the EXPECTED "
              "API; see this script's docstring)", file=sys.stderr)
        return 2

    lat_ms = np.array(lat) * 1000.0
    print(f"score_example: scored {len(todo)} events: features {len(todo) - feat_bad - missing} "
          f"equal, {feat_bad} different, {missing} not returned; probabilities "
          + (f"{len(todo) - prob_bad} equal (1e-6), {prob_bad} different" if sess
             else "not checked (no --model-file)")
          + (f"; infer latency p50 {np.percentile(lat_ms, 50):.2f} ms, "
             f"p99 {np.percentile(lat_ms, 99):.2f} ms" if len(lat) else ""))
    return 1 if feat_bad or prob_bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
