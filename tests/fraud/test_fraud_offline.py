"""Offline tests of the fraud example (tools/fraud/): generator, features, model, client.

    .venv/bin/python -m pytest -q tests/fraud

No server needed: the client test runs tools/fraud/score_example.py against a Python mock of
the expected API (mock_fraud_server.py), so it checks the client and the wire format only.
"""

import dataclasses
import json
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "fraud"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import features  # noqa: E402
import generate  # noqa: E402
import train  # noqa: E402

SMALL = 5000
SEED = 7


def bits(x):
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


@pytest.fixture(scope="module")
def small():
    return generate.generate(SMALL, SEED)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("repo")
    assert train.main(["--out", str(out), "--events", str(SMALL), "--seed", str(SEED)]) == 0
    return out


def held_out(stream):
    cut = train.time_split(stream)
    return cut, slice(cut, None)


# ------------------------------------------------------------------------------- generator
def test_generator_is_deterministic_and_well_formed(small, tmp_path):
    lines = list(small.lines())
    assert lines == list(generate.generate(SMALL, SEED).lines())
    assert lines != list(generate.generate(SMALL, SEED + 1).lines())
    assert len(lines) == SMALL
    p = tmp_path / "s.jsonl"
    generate.write_jsonl(small, str(p))
    events = generate.read_jsonl(str(p))
    assert events == small.events()
    ts = [e["ts"] for e in events]
    assert all(isinstance(t, int) for t in ts) and ts == sorted(ts)
    for line, e in zip(lines, events):
        assert set(e) == {"ts", "user_id", "card_id", "merchant_id", "amount", "label"}
        assert re.search(r'"amount": \d+\.\d\d,', line)
        assert e["label"] in (0, 1) and e["amount"] > 0
        assert re.fullmatch(r"u\d+", e["user_id"]) and re.fullmatch(r"c\d+", e["card_id"])
        assert re.fullmatch(r"m\d+", e["merchant_id"])
    rate = small.label.mean()
    assert 0.01 <= rate <= 0.03
    # every fraud pattern occurs, and fraud reaches the held-out quarter
    assert set(np.unique(small.pattern).tolist()) == set(range(len(generate.PATTERNS)))
    cut, rest = held_out(small)
    assert small.label[rest].sum() > 0
    assert 50 <= len(np.unique(small.user)) and 50 <= len(np.unique(small.merchant))


def test_generator_default_size_shape():
    s = generate.generate(200_000, SEED)
    assert len(s) == 200_000
    assert 0.01 <= s.label.mean() <= 0.03
    assert len(np.unique(s.user)) >= 3000 and len(np.unique(s.card)) >= 3000
    assert len(np.unique(s.merchant)) >= 2000
    assert (s.ts[-1] - s.ts[0]) > 3.5 * 86_400_000 and np.all(np.diff(s.ts) >= 0)


# ------------------------------------------------------------------------------- features
def test_fast_features_equal_reference_bitwise(small):
    fast = features.compute(small)
    assert fast.dtype == np.float32 and fast.shape == (SMALL, 17)
    events = small.events()
    ref = features.compute_reference(events)
    assert np.array_equal(bits(fast), bits(ref))
    # from JSON dicts (string ids) as well as from the columns (integer ids)
    assert np.array_equal(bits(features.compute(events)), bits(ref))
    # and one event at a time, as a server does
    online = features.OnlineFeatures()
    rows = []
    for e in events:
        rows.append(online.row(e))
        online.add(e)
    assert np.array_equal(bits(np.stack(rows)), bits(ref))


def coarse(stream, quantum_ms):
    """The stream with ts rounded down to a multiple of quantum_ms (still non-decreasing). With
    a quantum dividing 60 s, events exactly one window old and equal ts become common."""
    return dataclasses.replace(stream, ts=stream.ts // quantum_ms * quantum_ms)


DENSE = [(1, 3000, 4.0, 1), (2, 3000, 0.05, 1), (3, 2000, 0.01, 1), (4, 5000, 4.0, 60_000),
         (5, 3000, 0.2, 5_000), (6, 3000, 0.02, 1_000)]


@pytest.mark.parametrize("seed,events,days,quantum", DENSE)
def test_fast_features_equal_reference_dense_streams(seed, events, days, quantum):
    """Short spans crowd the 1-minute and 1-hour windows; coarse ts put events exactly on the
    window edges (t - W, out) and on the same ms (in)."""
    s = coarse(generate.generate(events, seed, days=days), quantum)
    assert np.array_equal(bits(features.compute(s)), bits(features.compute_reference(s.events())))


def test_feature_definition_by_hand():
    ev = lambda ts, amount, m, u="u1", c="c1": {  # noqa: E731
        "ts": ts, "user_id": u, "card_id": c, "merchant_id": m, "amount": amount}
    t = 1_700_000_000_000
    events = [
        ev(t, 0.1, "m1"),
        ev(t, 0.2, "m2"),                        # same ms: counted, secs 0
        ev(t + 1, 0.3, "m1", c="c2"),
        ev(t + 60_000, 1.0, "m3"),              # exactly 60 s after the first two
        ev(t + 86_400_000, 2.0, "m3"),          # exactly 24 h after the first two
        ev(t + 86_400_001, 3.0, "m4", u="u2"),
    ]
    x = features.compute(events)
    assert np.array_equal(bits(x), bits(features.compute_reference(events)))
    f32 = np.float32
    # event 0: nothing before
    assert x[0].tolist() == [f32(0.1)] + [0, 0, 0, 0, 0, 0, 0, -1] * 2
    # event 1: one previous event in every window for user and card, 0 s ago
    assert x[1].tolist() == [f32(0.2)] + [1, 1, 1, f32(0.1), f32(0.1), f32(0.1), 1, 0] * 2
    # event 2: user u1 has 2 previous events (sum 0.1 + 0.2 in float64 = 0.30000000000000004);
    # card c2 has none; 1 ms since the last one
    s = f32(0.1 + 0.2)
    assert x[2].tolist() == ([f32(0.3), 2, 2, 2, s, s, s, 2, f32(0.001)]
                             + [0, 0, 0, 0, 0, 0, 0, -1])
    # event 3 at t + 60 s: events at t are exactly 60 s old, out of the 1-minute window
    u = x[3, 1:9].tolist()
    assert u == [1, 3, 3, f32(0.3), f32(0.1 + 0.2 + 0.3), f32(0.1 + 0.2 + 0.3), 2, f32(59.999)]
    c = x[3, 9:17].tolist()
    assert c == [0, 2, 2, 0, s, s, 2, 60]
    # event 4 at t + 24 h: the events at t are out of the 24 h window; t + 1 is in
    u = x[4, 1:9].tolist()
    assert u == [0, 0, 2, 0, 0, f32(0.3 + 1.0), 2, f32(86_340.0)]
    # event 5: a new user (all zeros, -1), card c1 seen 1 ms ago
    assert x[5, 1:9].tolist() == [0, 0, 0, 0, 0, 0, 0, -1]
    # card c1 at t + 24 h + 1 ms: its events at t + 60 s and t + 24 h (the ones at t are out)
    assert x[5, 9:17].tolist() == [1, 1, 2, f32(2.0), f32(2.0), f32(1.0 + 2.0), 1, f32(0.001)]


def test_sums_are_fresh_in_stream_order_not_running():
    """The sum over a window restarts from 0.0 at every event; a running sum that adds arrivals
    and subtracts what leaves the window rounds differently. With everyday amounts the float64
    error of a running sum almost never survives the float32 cast (a random search over 200k
    windows of amounts below $25k found no case), but it can: here after one huge amount."""
    t = 1_700_000_000_000
    big, small = 603529228.32, 3.36
    events = [{"ts": t + i * 40_000, "user_id": "u", "card_id": "c", "merchant_id": "m",
               "amount": a} for i, a in enumerate([big, small, 1.0])]
    x = features.compute(events)
    # at the third event (t + 80 s) the 1-minute window holds the second event only
    fresh = np.float32(0.0 + small)
    running = np.float32((big + small) - big)
    assert fresh != running
    assert x[2, 4] == fresh and x[2, 12] == fresh
    assert np.array_equal(bits(x), bits(features.compute_reference(events)))


def test_decreasing_ts_is_an_error():
    e = [{"ts": 2, "user_id": "u", "card_id": "c", "merchant_id": "m", "amount": 1.0},
         {"ts": 1, "user_id": "u", "card_id": "c", "merchant_id": "m", "amount": 1.0}]
    with pytest.raises(ValueError):
        features.compute(e)
    with pytest.raises(ValueError):
        features.compute_reference(e)


def test_features_cli_jsonl_round_trips(small, tmp_path, capsys):
    p = tmp_path / "s.jsonl"
    generate.write_jsonl(generate.generate(500, SEED), str(p))
    assert features.main([str(p), "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    back = np.array(rows, dtype=np.float64).astype(np.float32)  # 9 digits round-trip float32
    assert np.array_equal(bits(back), bits(features.compute(generate.read_jsonl(str(p)))))


# ------------------------------------------------------------------------------- model
def test_model_loads_and_scores(small, small_model):
    import onnx
    import onnxruntime as ort

    path = train.model_path(str(small_model))
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [17]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("features", "tensor(float)", 17)
    assert isinstance(inp.shape[0], str)  # dynamic batch
    assert (out.name, out.type, out.shape[1]) == ("fraud_probability", "tensor(float)", 1)
    x = features.compute(small)
    p = sess.run(None, {"features": x})[0]
    assert p.shape == (SMALL, 1) and p.dtype == np.float32
    assert np.all(p > 0) and np.all(p < 1)
    # raw inputs far outside the training range stay finite and inside (0, 1)
    odd = np.array([[0] * 17, [-5] * 17, [1e9] * 17, [3.4e38] * 17,
                    [1e6] + [0, 0, 0, 0, 0, 0, 0, -1] * 2], dtype=np.float32)
    q = sess.run(None, {"features": odd})[0]
    assert np.all(np.isfinite(q)) and np.all(q > 0) and np.all(q < 1)
    # batch of 1 and the whole batch agree
    assert abs(sess.run(None, {"features": x[:1]})[0][0, 0] - p[0, 0]) < 1e-6


def test_model_auc_on_small_stream_held_out(small, small_model):
    import onnxruntime as ort

    sess = ort.InferenceSession(train.model_path(str(small_model)),
                                providers=["CPUExecutionProvider"])
    p = sess.run(None, {"features": features.compute(small)})[0].ravel()
    cut, rest = held_out(small)
    a = train.auc(small.label[rest], p[rest])
    # Seed 7 gives 0.958 (26 fraud events in the held-out quarter). Over seeds 0-29 the median
    # is 0.93 and one seed in 30 falls below 0.8: 5k events hold only ~17 fraud episodes.
    assert a > 0.9, a
    stamp = json.loads((small_model / train.STAMP).read_text())
    assert abs(stamp["metrics"]["held_out"]["auc"] - a) < 1e-12


def test_model_auc_on_20k_stream(tmp_path):
    assert train.main(["--out", str(tmp_path), "--events", "20000", "--seed", str(SEED)]) == 0
    m = json.loads((tmp_path / train.STAMP).read_text())["metrics"]["held_out"]
    # Seed 7: ~0.97. Seeds 0-11 gave 0.956-0.993.
    assert m["auc"] > 0.94, m
    assert m["fraud"] > 50


def test_auc_helper():
    assert train.auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert train.auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert train.auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.1, 0.2])) == 0.5


def test_training_is_deterministic_and_skips_when_up_to_date(small_model, tmp_path, capsys):
    first = open(train.model_path(str(small_model)), "rb").read()
    again = tmp_path / "again"
    assert train.main(["--out", str(again), "--events", str(SMALL), "--seed", str(SEED),
                       "--force"]) == 0
    assert open(train.model_path(str(again)), "rb").read() == first
    capsys.readouterr()
    path = train.model_path(str(again))
    mtime = os.stat(path).st_mtime_ns
    assert train.main(["--out", str(again), "--events", str(SMALL), "--seed", str(SEED)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert os.stat(path).st_mtime_ns == mtime
    # other arguments retrain
    assert train.main(["--out", str(again), "--events", str(SMALL), "--seed", str(SEED + 1)]) == 0
    assert "up to date" not in capsys.readouterr().out
    assert open(path, "rb").read() != first


# ------------------------------------------------------------------------------- client
def test_score_example_against_mock(small_model, capsys):
    import mock_fraud_server
    import score_example

    path = train.model_path(str(small_model))
    with mock_fraud_server.serve(path) as (url, app):
        rc = score_example.main(["--url", url, "--events", str(SMALL), "--seed", str(SEED),
                                 "--ingest", "4000", "--score", "40", "--model-file", path])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "40 equal, 0 different" in out
        assert app.ingested == 4040


def test_score_example_detects_divergence(small_model, capsys):
    """A client that wrongly assumes the server adds scored events sees features drift."""
    import mock_fraud_server
    import score_example

    path = train.model_path(str(small_model))
    with mock_fraud_server.serve(path) as (url, _):
        rc = score_example.main(["--url", url, "--events", str(SMALL), "--seed", str(SEED),
                                 "--ingest", "4000", "--score", "40", "--model-file", path,
                                 "--score-adds-event"])
    assert rc == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_parse_f32_is_exact():
    import score_example

    rng = np.random.default_rng(0)
    vals = rng.standard_normal(2000).astype(np.float32) * np.float32(1000)
    for v in vals:
        for text in (repr(float(v)), f"{float(v):.9g}"):
            assert score_example.parse_f32(text) == v
    # a decimal where float32(float(text)) rounds twice: 1 + 2^-24 + 2^-60 lies just above
    # the float32 midpoint 1 + 2^-24, so the nearest float32 is 1 + 2^-23, while the double
    # nearest it is the midpoint itself, which rounds to even (1.0)
    text = "1.000000059604644776412873309"
    assert np.float32(float(text)) == np.float32(1.0)
    assert score_example.parse_f32(text) == np.float32(1 + 2 ** -23)


# ------------------------------------------------------------------------------- the C side
VELOCITY_C = os.path.join(ROOT, "src", "features", "velocity.c")


@pytest.fixture(scope="module")
def velocity_harness(tmp_path_factory):
    """tests/fraud/velocity_harness.c built against src/features/velocity.c (the server's own
    implementation of the definition); skipped while that file or a C compiler is missing."""
    import shutil
    import subprocess

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not os.path.exists(VELOCITY_C) or not cc:
        pytest.skip("src/features/velocity.c or a C compiler is missing")
    exe = str(tmp_path_factory.mktemp("harness") / "velocity_harness")
    subprocess.run([cc, "-O2", "-std=gnu11", "-D_GNU_SOURCE", "-I", os.path.join(ROOT, "src"),
                    "-o", exe, os.path.join(os.path.dirname(__file__), "velocity_harness.c"),
                    VELOCITY_C, os.path.join(ROOT, "src", "core", "error.c"),
                    os.path.join(ROOT, "src", "core", "siphash.c")],
                   check=True, capture_output=True)
    return exe


@pytest.mark.parametrize("seed,events,days,quantum", [(SEED, SMALL, 4.0, 1)] + DENSE[3:])
def test_c_velocity_equals_python_bitwise(velocity_harness, seed, events, days, quantum):
    """Every event's user and card features from the C function, given the entity's previous
    events (merchant "m123" as the integer 123), equal features.py's bit for bit."""
    import subprocess

    s = coarse(generate.generate(events, seed, days=days), quantum)
    ts, amounts, merchants = s.ts.tolist(), s.amount.tolist(), s.merchant.tolist()
    history, queries = {}, []
    for i in range(len(ts)):
        for key in (("u", int(s.user[i])), ("c", int(s.card[i]))):
            prev = history.get(key, [])
            queries.append(f"Q {ts[i]} {len(prev)}\n")
            queries.extend(f"{ts[j]} {amounts[j].hex()} {merchants[j]}\n" for j in prev)
        for key in (("u", int(s.user[i])), ("c", int(s.card[i]))):
            history.setdefault(key, []).append(i)
    out = subprocess.run([velocity_harness], input="".join(queries).encode(),
                         capture_output=True, check=True).stdout.decode().split()
    got = np.array([int(h, 16) for h in out], dtype=np.uint32).reshape(len(ts), 2, 8)
    want = bits(features.compute(s))
    assert np.array_equal(got[:, 0], want[:, 1:9])
    assert np.array_equal(got[:, 1], want[:, 9:17])
