#!/usr/bin/env python3
"""train.py: train the fraud model in Python, export it for onnxd to serve ("train in Python,
serve in C").

    python tools/fraud/train.py --out models [--events 200000] [--seed 7] [--force]

What it does
  1. generate.py: a synthetic transaction stream (--events events over --days days, seeded),
     ~2% fraud in four labelled patterns (velocity bursts, amount outliers, new merchants,
     card testing).
  2. features.py: the 17 velocity features of every event, offline, exactly as the server
     computes them online (see the definition in features.py's docstring): amount, then for
     the user and for the card: cnt_1m, cnt_1h, cnt_24h, amt_1m, amt_1h, amt_24h,
     distinct_merchants_24h, secs_since_last.
  3. A time split: the first 75% of the stream (by ts) trains, the last 25% is held out.
  4. A small model in numpy: an MLP 17 -> 32 (ReLU) -> 1 (sigmoid), or --model logreg,
     trained with Adam on the log loss (mini-batches of 256, --steps steps, L2 1e-4, learning
     rate decayed linearly to 0), float64, every random draw from the seed.
  5. Held-out AUC, average precision, precision@k and the alert-budget view (flag the top 1% of
     the held-out events: precision, recall, recall per pattern), computed on the exported ONNX
     model run by ONNX Runtime, i.e. on what will be served.
  6. OUT/fraud/1/model.onnx (opset 17, IR 8): input "features" [N,17] FP32 (raw features,
     dynamic N), output "fraud_probability" [N,1] FP32, always strictly inside (0, 1) (the
     logit is clipped to +-15 before the sigmoid). The preprocessing is inside the
     model, so clients and the server send raw features:
        z = (Log(Max(x, floor) + offset) - mean) / std
     floor = -1 and offset = 2 for the two secs_since_last columns (-1, "no previous event",
     maps to log 1 = 0), floor = 0 and offset = 1 elsewhere (amounts and counts are
     heavy-tailed; log puts a spend ratio like amount / (amt_24h / cnt_24h) within reach of
     one linear layer); mean and std are the training split's, baked in as constants.

Deterministic: the same arguments give a bit-identical model file (numpy's PCG64 streams, fixed
operation order, deterministic serialisation), on a given machine and numpy build (BLAS kernels
chosen per CPU may round differently elsewhere; the float32 cast of the weights hides most such
differences but cannot promise to hide all). Work is skipped when OUT/.fraud.stamp records the
same hash of generate.py + features.py + train.py, the same arguments and the model file's
hash (as tools/make_models.py does); --force retrains anyway. The stamp also keeps the metrics.

Serve it:   build/onnxd --model-repository models   (then tools/fraud/score_example.py)
"""

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from make_models import write_atomic  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import features as feats  # noqa: E402
import generate as gen  # noqa: E402

OPSET = 17
IR_VERSION = 8
STAMP = ".fraud.stamp"
MODEL_NAME = "fraud"
SCRIPTS = ("generate.py", "features.py", "train.py")
SECS_COLUMNS = (feats.FEATURE_NAMES.index("user_secs_since_last"),
                feats.FEATURE_NAMES.index("card_secs_since_last"))
TRAIN_SHARE = 0.75
# The logit is clipped to +-15 before the sigmoid, so the probability stays inside (0, 1) in
# float32 (3.1e-7 .. 1 - 3.1e-7) instead of rounding to exactly 0 or 1 for confident rows.
LOGIT_CLIP = 15.0


def model_path(out):
    return os.path.join(out, MODEL_NAME, "1", "model.onnx")


# ---------------------------------------------------------------------------- preprocessing
def transform_params():
    floor = np.zeros(feats.N_FEATURES, np.float32)
    offset = np.ones(feats.N_FEATURES, np.float32)
    floor[list(SECS_COLUMNS)] = -1.0
    offset[list(SECS_COLUMNS)] = 2.0
    return floor, offset


def log_transform(x):
    """What the model's Max/Add/Log nodes do, in float64 for training."""
    floor, offset = transform_params()
    return np.log(np.maximum(x.astype(np.float64), floor) + offset)


# ---------------------------------------------------------------------------- training
def train(x, y, *, hidden, steps, seed, batch=256, lr=3e-3, l2=1e-4):
    """Adam on the mean log loss; returns float64 parameters {w1, b1, w2, b2} (w2 alone for
    hidden=0, logistic regression). x is the standardised float64 input."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    if hidden:
        params = {
            "w1": rng.standard_normal((d, hidden)) * np.sqrt(2.0 / d),
            "b1": np.zeros(hidden),
            "w2": rng.standard_normal((hidden, 1)) * np.sqrt(1.0 / hidden),
            "b2": np.full(1, np.log(y.mean() / (1 - y.mean()))),  # start at the base rate
        }
    else:
        params = {"w2": np.zeros((d, 1)), "b2": np.full(1, np.log(y.mean() / (1 - y.mean())))}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    order = rng.permutation(n)
    pos = 0
    for step in range(1, steps + 1):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + batch]
        pos += batch
        xb, yb = x[idx], y[idx, None]
        if hidden:
            h_pre = xb @ params["w1"] + params["b1"]
            h = np.maximum(h_pre, 0.0)
        else:
            h = xb
        logit = h @ params["w2"] + params["b2"]
        p = 1.0 / (1.0 + np.exp(-logit))
        g_logit = (p - yb) / len(idx)
        grads = {"w2": h.T @ g_logit + l2 * params["w2"], "b2": g_logit.sum(0)}
        if hidden:
            g_h = (g_logit @ params["w2"].T) * (h_pre > 0)
            grads["w1"] = xb.T @ g_h + l2 * params["w1"]
            grads["b1"] = g_h.sum(0)
        rate = lr * (1.0 - (step - 1) / steps)
        for k, g in grads.items():
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            mhat = m[k] / (1 - b1 ** step)
            vhat = v[k] / (1 - b2 ** step)
            params[k] = params[k] - rate * mhat / (np.sqrt(vhat) + eps)
    return params


# ---------------------------------------------------------------------------- ONNX export
def build_model(params, mean, std, doc):
    floor, offset = transform_params()
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.float32))  # noqa: E731
    inits = [
        numpy_helper.from_array(floor, "prep.floor"),
        numpy_helper.from_array(offset, "prep.offset"),
        numpy_helper.from_array(f32(mean), "prep.mean"),
        numpy_helper.from_array(f32(std), "prep.std"),
    ]
    nodes = [
        helper.make_node("Max", ["features", "prep.floor"], ["prep.clamped"], name="prep.max"),
        helper.make_node("Add", ["prep.clamped", "prep.offset"], ["prep.shifted"], name="prep.add"),
        helper.make_node("Log", ["prep.shifted"], ["prep.log"], name="prep.log"),
        helper.make_node("Sub", ["prep.log", "prep.mean"], ["prep.centered"], name="prep.sub"),
        helper.make_node("Div", ["prep.centered", "prep.std"], ["prep.z"], name="prep.div"),
    ]
    x = "prep.z"
    if "w1" in params:
        inits += [numpy_helper.from_array(f32(params["w1"].T), "fc0.weight"),
                  numpy_helper.from_array(f32(params["b1"]), "fc0.bias")]
        nodes += [helper.make_node("Gemm", [x, "fc0.weight", "fc0.bias"], ["fc0"], name="fc0",
                                   alpha=1.0, beta=1.0, transB=1),
                  helper.make_node("Relu", ["fc0"], ["act0"], name="act0")]
        x = "act0"
    inits += [numpy_helper.from_array(f32(params["w2"].T), "fc1.weight"),
              numpy_helper.from_array(f32(params["b2"]), "fc1.bias")]
    inits += [numpy_helper.from_array(np.array(-LOGIT_CLIP, np.float32), "logit.min"),
              numpy_helper.from_array(np.array(LOGIT_CLIP, np.float32), "logit.max")]
    nodes += [helper.make_node("Gemm", [x, "fc1.weight", "fc1.bias"], ["logit"], name="fc1",
                               alpha=1.0, beta=1.0, transB=1),
              helper.make_node("Clip", ["logit", "logit.min", "logit.max"], ["logit.clipped"],
                               name="logit.clip"),
              helper.make_node("Sigmoid", ["logit.clipped"], ["fraud_probability"],
                               name="sigmoid")]
    graph = helper.make_graph(
        nodes, MODEL_NAME,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", feats.N_FEATURES])],
        [helper.make_tensor_value_info("fraud_probability", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits,
    )
    graph.doc_string = doc
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxd tools/fraud/train.py", producer_version="1")
    model.ir_version = IR_VERSION
    helper.set_model_props(model, {"feature_names": ",".join(feats.FEATURE_NAMES)})
    onnx.checker.check_model(model, full_check=True)
    return model


def forward_numpy(params, mean, std, x):
    """The exported model's arithmetic in float64 (to check ONNX Runtime against)."""
    h = (log_transform(x) - mean.astype(np.float64)) / std.astype(np.float64)
    if "w1" in params:
        h = np.maximum(h @ params["w1"] + params["b1"], 0.0)
    logit = np.clip(h @ params["w2"] + params["b2"], -LOGIT_CLIP, LOGIT_CLIP)
    return 1.0 / (1.0 + np.exp(-logit))


def run_ort(path, x):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return sess.run(["fraud_probability"], {"features": x})[0]


# ---------------------------------------------------------------------------- metrics
def auc(y, score):
    """ROC AUC by the rank-sum (Mann-Whitney) statistic, ties counted half."""
    y = np.asarray(y).astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s), np.float64)
    i = 0
    while i < len(s):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def average_precision(y, score):
    order = np.argsort(-np.asarray(score), kind="stable")
    hits = np.asarray(y)[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((prec * hits).sum() / hits.sum())


def evaluate(y, p, pattern):
    p = np.asarray(p).ravel()
    order = np.argsort(-p, kind="stable")
    out = {"events": int(len(y)), "fraud": int(y.sum()), "auc": auc(y, p),
           "average_precision": average_precision(y, p)}
    for k in (10, 50, 100, 500):
        if k <= len(y):
            out[f"precision@{k}"] = float(y[order[:k]].mean())
    # R-precision: precision (= recall) when alerting on as many events as there are frauds
    out["r_precision"] = float(y[order[:int(y.sum())]].mean()) if y.sum() else float("nan")
    budget = max(1, int(round(0.01 * len(y))))  # alert on the top 1% of events
    flagged = np.zeros(len(y), bool)
    flagged[order[:budget]] = True
    out["top1pct"] = {
        "alerts": budget,
        "precision": float(y[flagged].mean()),
        "recall": float(flagged[y == 1].mean()) if y.sum() else float("nan"),
        "recall_by_pattern": {
            gen.PATTERNS[k]: float(flagged[pattern == k].mean())
            for k in range(1, len(gen.PATTERNS)) if (pattern == k).any()
        },
    }
    legit = pattern == 0
    out["auc_by_pattern"] = {  # each pattern's events against all legitimate events
        gen.PATTERNS[k]: auc(np.r_[np.zeros(legit.sum()), np.ones((pattern == k).sum())],
                             np.r_[p[legit], p[pattern == k]])
        for k in range(1, len(gen.PATTERNS)) if (pattern == k).any()
    }
    return out


def format_metrics(name, m):
    t = m["top1pct"]
    pk = " ".join(f"P@{k.split('@')[1]} {v:.3f}" for k, v in m.items() if k.startswith("precision@"))
    return (f"  {name}: {m['events']} events, {m['fraud']} fraud; AUC {m['auc']:.4f}, "
            f"AP {m['average_precision']:.4f}, {pk}, R-precision {m['r_precision']:.3f}\n"
            f"    top 1% ({t['alerts']} alerts): precision {t['precision']:.3f}, "
            f"recall {t['recall']:.3f} ("
            + ", ".join(f"{k} {v:.2f}" for k, v in t["recall_by_pattern"].items()) + ")\n"
            f"    AUC by pattern: "
            + ", ".join(f"{k} {v:.3f}" for k, v in m["auc_by_pattern"].items()))


# ---------------------------------------------------------------------------- pipeline
def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def scripts_hash():
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in SCRIPTS:
        with open(os.path.join(here, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


def read_stamp(out):
    try:
        with open(os.path.join(out, STAMP)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def up_to_date(out, config):
    stamp = read_stamp(out)
    if not stamp or stamp.get("scripts") != scripts_hash() or stamp.get("config") != config:
        return None
    path = model_path(out)
    try:
        with open(path, "rb") as f:
            if sha256_bytes(f.read()) != stamp.get("model_sha256"):
                return None
    except OSError:
        return None
    return stamp


def time_split(stream):
    """Index of the first held-out event: the first event at or after 75% of the time span."""
    t_split = stream.ts[0] + TRAIN_SHARE * (stream.ts[-1] - stream.ts[0])
    return int(np.searchsorted(stream.ts, t_split, side="left"))


def run(config, out, log=print):
    """Generates, featurises, trains, exports, evaluates; returns (model bytes, metrics)."""
    timings = {}
    t0 = time.perf_counter()
    stream = gen.generate(config["events"], config["seed"], config["days"], config["fraud_rate"])
    timings["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = feats.compute(stream)
    timings["features_s"] = time.perf_counter() - t0
    y = stream.label.astype(np.float64)
    cut = time_split(stream)
    log(f"train: {len(stream)} events ({int(y.sum())} fraud), train {cut} / held out "
        f"{len(stream) - cut}; generate {timings['generate_s']:.2f} s, "
        f"features {timings['features_s']:.2f} s")

    t0 = time.perf_counter()
    z_train = log_transform(x[:cut])
    mean = z_train.mean(0).astype(np.float32)
    std = np.maximum(z_train.std(0), 1e-3).astype(np.float32)
    z = (z_train - mean.astype(np.float64)) / std.astype(np.float64)
    hidden = 32 if config["model"] == "mlp" else 0
    params = train(z, y[:cut], hidden=hidden, steps=config["steps"], seed=config["seed"] + 1)
    params = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    timings["train_s"] = time.perf_counter() - t0

    arch = "MLP 17-32-1 (ReLU, sigmoid)" if hidden else "logistic regression"
    doc = (f"Fraud scoring, {arch} on 17 raw velocity features (see tools/fraud/features.py); "
           f"log + standardisation inside. Trained by tools/fraud/train.py on the synthetic "
           f"stream of generate.py (events={config['events']}, seed={config['seed']}, "
           f"days={config['days']}), steps={config['steps']}.")
    model = build_model(params, mean, std, doc)
    data = model.SerializeToString(deterministic=True)
    path = model_path(out)
    write_atomic(path, data)

    t0 = time.perf_counter()
    p_ort = run_ort(path, x)
    timings["score_s"] = time.perf_counter() - t0
    p_np = forward_numpy(params, mean, std, x)
    max_diff = float(np.abs(p_ort.astype(np.float64) - p_np).max())
    if not (max_diff < 1e-4 and np.all((p_ort > 0) & (p_ort < 1))):
        raise SystemExit(f"train: ONNX Runtime disagrees with numpy (max diff {max_diff})")
    pattern = stream.pattern
    metrics = {
        "train": evaluate(y[:cut], p_ort[:cut], pattern[:cut]),
        "held_out": evaluate(y[cut:], p_ort[cut:], pattern[cut:]),
        "held_out_amount_only_auc": auc(y[cut:], x[cut:, 0]),
        "ort_vs_numpy_max_abs_diff": max_diff,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    log(f"train: wrote {path} ({len(data)} bytes, sha256 {sha256_bytes(data)[:16]}); "
        f"train {timings['train_s']:.2f} s, ORT scoring {timings['score_s']:.2f} s")
    log(format_metrics("train", metrics["train"]))
    log(format_metrics("held out", metrics["held_out"]))
    log(f"  held out, amount alone: AUC {metrics['held_out_amount_only_auc']:.4f}")
    return data, metrics


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models", help="model repository (default: models); the "
                    "model goes to OUT/fraud/1/model.onnx")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=float, default=4.0)
    ap.add_argument("--fraud-rate", type=float, default=0.02)
    ap.add_argument("--model", choices=("mlp", "logreg"), default="mlp")
    ap.add_argument("--steps", type=int, default=4000, help="Adam steps (batches of 256)")
    ap.add_argument("--force", action="store_true", help="retrain even if up to date")
    args = ap.parse_args(argv)
    config = {"events": args.events, "seed": args.seed, "days": args.days,
              "fraud_rate": args.fraud_rate, "model": args.model, "steps": args.steps}

    if not args.force:
        stamp = up_to_date(args.out, config)
        if stamp:
            print(f"train: {model_path(args.out)} is up to date")
            print(format_metrics("held out", stamp["metrics"]["held_out"]))
            return 0
    t0 = time.perf_counter()
    data, metrics = run(config, args.out)
    metrics["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
    stamp = {"scripts": scripts_hash(), "config": config, "model_sha256": sha256_bytes(data),
             "metrics": metrics}
    write_atomic(os.path.join(args.out, STAMP), (json.dumps(stamp, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
