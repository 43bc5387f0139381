"""The feature store behind inference (--feature-dir, a model's "feature_view"), black-box:
POST /v1/events, PUT/GET /v1/features/{table}/{key}, and infer requests that carry only keys
and raw values, against dedicated servers with repositories of their own.

- Online features equal tools/fraud/features.py's offline ones bit for bit (float32) for a
  generated stream, ingested and scored event by event; the model sees exactly those values
  (its output is its input).
- Tiers: L1 -> L2 fall-through and promotion (rows by their "tier", velocity lists by the
  lookup counters), data intact across a restart on the same --feature-dir, L1 TTL expiry,
  the Bloom filter sparing both tiers for entities never seen.
- Ingestion is all or nothing: a bad line is a 400 naming it, and nothing of it is stored.
- Remote tier (L3): a real redis-server started here on a free port. Healthy, slow (SIGSTOP),
  down (killed) and back: requests answer within the view's deadline with defaults flagged
  "features_degraded" (503 for a mandatory view), the breaker opens, and closes again by itself
  once Redis is back. With --feature-events-to-redis, ingested events are appended to Redis
  lists too, and a Redis failure costs the copy, not the ingest.
"""

import http.client
import json
import re
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import (ROOT, _server_binary, build_repo, dedicated_server, forget,
                      keep_alive_checked, restart_checked, run_threads)

sys.path.insert(0, str(ROOT / "tools" / "fraud"))
sys.path.insert(0, str(ROOT / "tests"))
import features as offline  # noqa: E402
import generate  # noqa: E402
import load_l3  # noqa: E402
import services  # noqa: E402
from score_example import parse_f32  # noqa: E402

N_FEATURES = offline.N_FEATURES  # 17
VIEW = {"input": "features", "columns": [{"raw": "amount"}, {"velocity": "user_id"},
                                         {"velocity": "card_id"}]}
ROW_DEADLINE_US = 50_000
ROW_DEFAULT = -7.5
# Time allowed beyond a deadline: a busy machine, a sanitizer build.
SLACK_S = 0.25


def identity_model(width, name="fv", input_name="features"):
    """input [N, width] FP32 -> y = input: the output shows exactly what the model was given."""
    from onnx import TensorProto as TP
    from onnx import helper

    g = helper.make_graph([helper.make_node("Identity", [input_name], ["y"])], name,
                          [helper.make_tensor_value_info(input_name, TP.FLOAT, ["N", width])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, ["N", width])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def row_view(mandatory):
    return {"input": "x", "columns": [{"raw": "amount"},
                                      {"row": "user_id", "table": "profile", "width": 4,
                                       "default": ROW_DEFAULT}],
            "mandatory": mandatory, "deadline_us": ROW_DEADLINE_US}


class Client:
    """A keep-alive HTTP/1.1 client for one server."""

    def __init__(self, server):
        self.server = server
        self.c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)

    def call(self, method, path, body=None, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        headers = {"Content-Type": ctype} if body is not None else {}
        for attempt in range(2):
            try:
                self.c.request(method, path, body=body, headers=headers)
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, ConnectionError):
                if attempt:
                    raise
                self.c.close()
                self.c = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)

    def events(self, events, ctype="application/x-ndjson"):
        lines = "".join(json.dumps({k: e[k] for k in ("ts", "user_id", "card_id", "merchant_id",
                                                       "amount")}) + "\n" for e in events)
        return self.call("POST", "/v1/events", lines, ctype)

    def score(self, model, params, amount=None, inputs=None):
        """(status, doc, features float32 array or None, seconds)."""
        if inputs is None:
            inputs = [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [amount]}]
        body = {"inputs": inputs, "parameters": params}
        t0 = time.perf_counter()
        status, data = self.call("POST", f"/v2/models/{model}/infer", body)
        dt = time.perf_counter() - t0
        doc = json.loads(data, parse_float=str, parse_int=str)
        feats = None
        if status == 200 and "features" in (doc.get("parameters") or {}):
            feats = np.array([parse_f32(v) for v in doc["parameters"]["features"]], np.float32)
        return status, doc, feats, dt

    def metrics(self):
        status, data = self.call("GET", "/metrics")
        assert status == 200
        return data.decode()

    def close(self):
        self.c.close()


def metric(text, sample):
    m = re.search(r"^%s (\S+)$" % re.escape(sample), text, re.M)
    assert m, f"no sample {sample} in /metrics"
    return float(m.group(1))


def lookups(cl, tier, result):
    return metric(cl.metrics(), f'onnxd_feature_lookups_total{{tier="{tier}",result="{result}"}}')


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def output_y(doc):
    y = [o for o in doc["outputs"] if o["name"] == "y"][0]
    return np.array([parse_f32(v) for v in y["data"]], np.float32)


# ---------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def fv_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("fv-repo")
    return build_repo(root, {
        "fv": {"model": identity_model(N_FEATURES), "config": {"feature_view": VIEW}},
        "fv_rows": {"model": identity_model(5, "fv_rows", "x"), "config": {
            "feature_view": row_view(False)}},
    })


@pytest.fixture(scope="module")
def fsrv(server_factory, fv_repo, tmp_path_factory):
    d = tmp_path_factory.mktemp("fs-a") / "store"
    yield from dedicated_server(server_factory, fv_repo,
                                ["--feature-dir", str(d), "--feature-sync", "none"], "features")


@pytest.fixture
def cl(fsrv):
    c = Client(fsrv)
    yield c
    c.close()


# ---------------------------------------------------------------------------- online == offline
def test_online_features_equal_offline_bit_for_bit(cl):
    events = generate.generate(3000, 11).events()
    want = offline.compute(events)
    n_ingest = 2400
    for i in range(0, n_ingest, 600):
        status, body = cl.events(events[i:i + 600])
        assert status == 200, body
        assert json.loads(body) == {"accepted": len(events[i:i + 600]), "duplicates": 0}
    bad = []
    for i in range(n_ingest, len(events)):
        e = events[i]
        params = {"user_id": e["user_id"], "card_id": e["card_id"], "ts": e["ts"],
                  "return_features": True}
        status, doc, got, _ = cl.score("fv", params, e["amount"])
        assert status == 200, doc
        assert "features_degraded" not in doc.get("parameters", {})
        if not np.array_equal(bits(got), bits(want[i])):
            bad.append((i, got, want[i]))
        assert np.array_equal(bits(output_y(doc)), bits(got))  # the model saw exactly these
        status, body = cl.events([e])
        assert status == 200, body
    assert not bad, f"{len(bad)} of {len(events) - n_ingest} rows differ, first: {bad[0]}"


def test_rows_of_several_amounts_and_parameter_raw(cl):
    ts = 1_800_000_000_000
    status, body = cl.events([{"ts": ts - 1000, "user_id": "mr1", "card_id": "mc1",
                               "merchant_id": "m", "amount": 2.5}])
    assert status == 200, body
    inputs = [{"name": "amount", "shape": [3], "datatype": "FP64", "data": [1.25, 2.5, 1e6]}]
    status, doc, got, _ = cl.score("fv", {"user_id": "mr1", "card_id": "mc1", "ts": ts,
                                          "return_features": True}, inputs=inputs)
    assert status == 200, doc
    rows = got.reshape(3, N_FEATURES)
    assert rows[:, 0].tolist() == [1.25, 2.5, 1e6]
    assert (rows[:, 1:] == rows[0, 1:]).all()  # the entity features repeat on every row
    assert rows[0, 1:9].tolist() == [1, 1, 1, 2.5, 2.5, 2.5, 1, 1.0]  # one event 1 s before
    # the raw value as a parameter instead of an input; no return_features: no "parameters"
    status, doc, got, _ = cl.score("fv", {"user_id": "mr1", "card_id": "mc1", "ts": ts,
                                          "amount": 3.75, "return_features": True}, inputs=[])
    assert status == 200, doc
    assert got[0] == np.float32(3.75)
    status, doc, got, _ = cl.score("fv", {"user_id": "mr1", "card_id": "mc1", "ts": ts}, 1.0)
    assert status == 200 and got is None and "parameters" not in doc


def test_key_parameter_after_100_others_is_found(cl):
    """Issue 9 finding 13: the view read only the first 64 request parameters, so a user_id
    after them was reported missing. Now every parameter counts, and a parameter named twice
    is a 400 (no "first one wins")."""
    ts = 1_800_000_100_000
    status, body = cl.events([{"ts": ts - 2000, "user_id": "many_u", "card_id": "many_c",
                               "merchant_id": "m", "amount": 4.5}])
    assert status == 200, body
    params = {f"pad{i}": i for i in range(100)}
    params.update({"user_id": "many_u", "card_id": "many_c", "ts": ts, "return_features": True})
    status, doc, got, _ = cl.score("fv", params, 1.0)
    assert status == 200, doc
    assert got[1:9].tolist() == [1, 1, 1, 4.5, 4.5, 4.5, 1, 2.0]  # the user's one event, 2 s ago
    # the same key twice: refused, whichever value would have won
    text = ('{"inputs":[{"name":"amount","shape":[1],"datatype":"FP32","data":[1]}],'
            '"parameters":{"user_id":"many_u","card_id":"many_c","user_id":"other"}}')
    status, data = cl.call("POST", "/v2/models/fv/infer", text)
    assert status == 400, data
    assert "duplicate parameter 'user_id'" in json.loads(data)["error"]


@pytest.mark.parametrize("params,inputs,fragment", [
    ({"card_id": "c", "ts": 1}, None, "parameter 'user_id'"),
    ({"user_id": "u", "card_id": "c", "ts": 1.5}, None, "parameter 'ts'"),
    ({"user_id": "u", "card_id": "c", "ts": "1"}, None, "parameter 'ts'"),
    ({"user_id": "", "card_id": "c"}, None, "parameter 'user_id'"),
    ({"user_id": ["u"], "card_id": "c"}, None, "parameter 'user_id'"),
    ({"user_id": "u", "card_id": "c"}, [], "raw feature 'amount' is missing"),
    ({"user_id": "u", "card_id": "c"},
     [{"name": "features", "shape": [1, 17], "datatype": "FP32", "data": [0] * 17}],
     "assembled by the server"),
    ({"user_id": "u", "card_id": "c"},
     [{"name": "amount", "shape": [1], "datatype": "BYTES", "data": ["x"]}], "input 'amount'"),
    ({"user_id": "u", "card_id": "c"},
     [{"name": "amount", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}], "input 'amount'"),
    ({"user_id": "u", "card_id": "c"},
     [{"name": "other", "shape": [1], "datatype": "FP32", "data": [1]}], "unknown input 'other'"),
])
def test_bad_feature_requests_are_400_naming_the_problem(cl, params, inputs, fragment):
    if inputs is None:
        inputs = [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [1.0]}]
    status, doc, _, _ = cl.score("fv", params, inputs=inputs)
    assert status == 400, doc
    assert fragment in doc["error"], doc


def test_config_shows_the_feature_view(cl):
    status, body = cl.call("GET", "/v2/models/fv/config")
    assert status == 200
    v = json.loads(body)["feature_view"]
    assert v == {"input": "features", "columns": VIEW["columns"], "width": 17,
                 "mandatory": False, "deadline_us": 20000}
    status, body = cl.call("GET", "/v2/models/fv_rows/config")
    v = json.loads(body)["feature_view"]
    assert v["columns"][1] == {"row": "user_id", "table": "profile", "width": 4, "default": -7.5}
    assert v["deadline_us"] == ROW_DEADLINE_US


# ---------------------------------------------------------------------------- ingestion
def test_bad_event_line_is_400_and_nothing_is_stored(cl):
    good = {"ts": 1_750_000_000_000, "user_id": "bad-u1", "card_id": "bad-c1",
            "merchant_id": "m1", "amount": 5.0}
    cases = [
        ({**good, "amount": "5"}, "'amount'"),
        ({k: v for k, v in good.items() if k != "card_id"}, "missing field 'card_id'"),
        ({**good, "ts": 1.5}, "'ts'"),
        ({**good, "merchant_id": None}, "'merchant_id'"),
    ]
    for bad_event, fragment in cases:
        body = (json.dumps(good) + "\n\n" + json.dumps({**good, "user_id": "bad-u2"}) + "\n"
                + json.dumps(bad_event) + "\n")
        status, data = cl.call("POST", "/v1/events", body, "application/x-ndjson")
        assert status == 400, data
        err = json.loads(data)["error"]
        assert err.startswith("line 4: ") and fragment in err, err
    status, data = cl.call("POST", "/v1/events", json.dumps(good) + "\n{not json}\n")
    assert status == 400 and "line 2" in json.loads(data)["error"]
    status, data = cl.call("POST", "/v1/events", [good, {"ts": 1}])
    assert status == 400 and "event 2" in json.loads(data)["error"]
    status, data = cl.call("POST", "/v1/events", "")
    assert status == 400
    for user in ("bad-u1", "bad-u2"):  # nothing of those requests was stored
        status, doc, got, _ = cl.score("fv", {"user_id": user, "card_id": "bad-c1",
                                              "ts": good["ts"] + 1, "return_features": True}, 1.0)
        assert status == 200
        assert got[1:].tolist() == [0, 0, 0, 0, 0, 0, 0, -1] * 2
    # a JSON array is fine too, extra fields are ignored, integer ids are their digits
    status, data = cl.call("POST", "/v1/events", [{**good, "label": 1, "x": {"y": [1]}},
                                                  {**good, "user_id": 42}])
    assert status == 200 and json.loads(data) == {"accepted": 2, "duplicates": 0}
    status, doc, got, _ = cl.score("fv", {"user_id": 42, "card_id": "bad-c1",
                                          "ts": good["ts"] + 1, "return_features": True}, 1.0)
    assert got[1:9].tolist() == [1, 1, 1, 5, 5, 5, 1, np.float32(0.001)]
    assert got[9:12].tolist() == [2, 2, 2]
    status, _ = cl.call("GET", "/v1/events")
    assert status == 405


def test_bloom_filter_spares_l1_and_l2_for_entities_never_seen(cl):
    before = cl.metrics()
    status, doc, got, _ = cl.score("fv", {"user_id": "never-seen-u", "card_id": "never-seen-c",
                                          "return_features": True}, 1.0)
    assert status == 200 and got[1:].tolist() == [0, 0, 0, 0, 0, 0, 0, -1] * 2
    after = cl.metrics()
    neg = 'onnxd_feature_bloom_checks_total{result="negative"}'
    assert metric(after, neg) == metric(before, neg) + 2
    for tier in ("l1", "l2"):
        for result in ("hit", "miss"):
            s = f'onnxd_feature_lookups_total{{tier="{tier}",result="{result}"}}'
            assert metric(after, s) == metric(before, s), s


# ---------------------------------------------------------------------------- rows, tiers, restart
def test_feature_rows_put_get_and_errors(cl):
    status, body = cl.call("PUT", "/v1/features/profile/pk1", [1.5, -2, 1e30])
    assert status == 200, body
    assert json.loads(body) == {"table": "profile", "key": "pk1", "width": 3,
                                "write_through": "ok"}
    status, body = cl.call("GET", "/v1/features/profile/pk1")
    assert status == 200
    doc = json.loads(body)
    assert doc["values"] == [1.5, -2, 1e30] and doc["tier"] == "l1"
    assert cl.call("GET", "/v1/features/profile/none")[0] == 404
    assert cl.call("GET", "/v1/features/bad~table/k")[0] == 400
    assert cl.call("PUT", "/v1/features/profile/k", "[1, \"x\"]")[0] == 400
    assert cl.call("PUT", "/v1/features/profile/k", "{}")[0] == 400
    assert cl.call("PUT", "/v1/features/profile/k", "[1e39]")[0] == 400  # not a float32
    assert cl.call("DELETE", "/v1/features/profile/k")[0] == 405
    # a row column reads it (the first 4 values; missing ones take the default)
    status, doc, got, _ = cl.score("fv_rows", {"user_id": "pk1", "return_features": True}, 2.0)
    assert status == 200, doc
    assert got.tolist() == [2.0, 1.5, -2.0, np.float32(1e30), ROW_DEFAULT]
    status, doc, got, _ = cl.score("fv_rows", {"user_id": "no-row", "return_features": True}, 2.0)
    assert got.tolist() == [2.0] + [ROW_DEFAULT] * 4
    assert "features_degraded" not in doc["parameters"]  # a miss is an answer, not a failure


def test_l1_l2_fall_through_promotion_ttl_and_restart(server_factory, fv_repo, tmp_path):
    store = tmp_path / "store"
    args = ["--feature-dir", str(store), "--feature-sync", "none", "--feature-l1-ttl-ms", "400"]
    s = keep_alive_checked(server_factory(fv_repo, args, name="features-restart"))
    try:
        cl = Client(s)
        assert cl.call("PUT", "/v1/features/profile/tk", [4.0, 5.0])[0] == 200
        tier = lambda: json.loads(cl.call("GET", "/v1/features/profile/tk")[1])["tier"]  # noqa
        assert tier() == "l1"  # written through to L1
        t = 1_760_000_000_000
        evs = [{"ts": t + i * 1000, "user_id": "tu", "card_id": "tc", "merchant_id": f"m{i % 2}",
                "amount": 1.5 * i} for i in range(5)]
        assert cl.events(evs)[0] == 200
        params = {"user_id": "tu", "card_id": "tc", "ts": t + 10_000, "return_features": True}
        l2 = lookups(cl, "l2", "hit")
        first = cl.score("fv", params, 1.0)[2]
        assert lookups(cl, "l2", "hit") == l2 + 2  # user and card lists filled from L2
        l1 = lookups(cl, "l1", "hit")
        assert np.array_equal(cl.score("fv", params, 1.0)[2], first)
        assert lookups(cl, "l1", "hit") == l1 + 2  # then served from L1
        assert first[1:9].tolist() == [5, 5, 5, 15, 15, 15, 2, 6]
        # an ingest keeps the L1 lists (updated in place): the next score still hits L1
        assert cl.events([{**evs[0], "ts": t + 9000, "amount": 10}])[0] == 200
        l1, l2 = lookups(cl, "l1", "hit"), lookups(cl, "l2", "hit")
        got = cl.score("fv", params, 1.0)[2]
        assert got[1:9].tolist() == [6, 6, 6, 25, 25, 25, 2, 1]
        assert lookups(cl, "l1", "hit") == l1 + 2 and lookups(cl, "l2", "hit") == l2
        # TTL: after 400 ms, L1 has forgotten; L2 answers and L1 is filled again
        time.sleep(0.6)
        assert tier() == "l2"
        assert tier() == "l1"
        l2 = lookups(cl, "l2", "hit")
        assert np.array_equal(cl.score("fv", params, 1.0)[2], got)
        assert lookups(cl, "l2", "hit") == l2 + 2
        cl.close()

        # restart on the same directory: everything is still there, read from L2 first
        restart_checked(s)
        cl = Client(s)
        assert tier() == "l2"
        assert tier() == "l1"
        m = cl.metrics()
        l1, l2 = (metric(m, 'onnxd_feature_lookups_total{tier="l1",result="hit"}'),
                  metric(m, 'onnxd_feature_lookups_total{tier="l2",result="hit"}'))
        assert np.array_equal(cl.score("fv", params, 1.0)[2], got)
        assert lookups(cl, "l2", "hit") == l2 + 2 and lookups(cl, "l1", "hit") == l1
        assert np.array_equal(cl.score("fv", params, 1.0)[2], got)
        assert lookups(cl, "l1", "hit") == l1 + 2
        # the Bloom filter was rebuilt: known entities are not "never seen"
        assert metric(cl.metrics(), 'onnxd_feature_bloom_checks_total{result="negative"}') == 0
        cl.close()
    finally:
        forget(s)
        err = s.stop()
        assert err is None, f"{err}\n{s.log_tail()}"


def test_feature_endpoints_without_a_store(server):
    c = Client(server)
    try:
        status, body = c.call("POST", "/v1/events", "{}\n")
        assert status == 404 and "feature store" in json.loads(body)["error"]
        assert c.call("GET", "/v1/features/t/k")[0] == 404
    finally:
        c.close()


# ---------------------------------------------------------------------------- Redis (L3)
def _or_fail(call, *args):
    """call(*args), a server that cannot start (RuntimeError from tests/services.py) failing the
    test with its message and no traceback."""
    try:
        return call(*args)
    except RuntimeError as e:
        msg = str(e)
    pytest.fail(msg, pytrace=False)  # outside the except: no "during handling" chain


class Redis(services.Redis):
    """services.Redis (a redis-server of our own on a free loopback port) for tests."""

    def __init__(self, d):
        _or_fail(super().__init__, d)

    def start(self):
        _or_fail(super().start)


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = Redis(tmp_path_factory.mktemp("redis"))
    r.start()
    yield r
    r.stop()


def store_server(server_factory, tmp_path_factory, repo, flags, name):
    """Generator for a module fixture: a dedicated server with a fresh store of its own, plus
    flags (the L3 backend among them)."""
    d = tmp_path_factory.mktemp(name) / "store"
    yield from dedicated_server(server_factory, repo,
                                ["--feature-dir", str(d), "--feature-sync", "none", *flags], name)


def rows_repo(tmp_path_factory, name):
    """Models "rows" and "rows_m" (mandatory): the amount and 4 values of row profile:<user>."""
    return build_repo(tmp_path_factory.mktemp(name), {
        "rows": {"model": identity_model(5, "rows", "x"), "config": {"feature_view": row_view(False)}},
        "rows_m": {"model": identity_model(5, "rows_m", "x"),
                   "config": {"feature_view": row_view(True)}},
    })


@pytest.fixture(scope="module")
def rsrv(server_factory, tmp_path_factory, redis):
    repo = rows_repo(tmp_path_factory, "fv-redis-repo")
    yield from store_server(server_factory, tmp_path_factory, repo,
                            ["--redis", redis.address], "features-redis")


def breaker_state(cl):
    return metric(cl.metrics(), 'onnxd_feature_breaker_state{backend="redis"}')


def test_redis_rows_degrade_within_the_deadline_and_recover(rsrv, redis):
    cl = Client(rsrv)
    deadline_s = ROW_DEADLINE_US / 1e6
    try:
        # healthy: a row only Redis has (loaded by tools/fraud/load_l3.py) is read through and
        # promoted
        csv_path = redis.dir / "rows.csv"
        csv_path.write_text("profile,r1,1,2,3,4\nprofile,r0,0.5\n")
        assert load_l3.main([str(csv_path), "--redis", f"127.0.0.1:{redis.port}"]) == 0
        status, doc, got, _ = cl.score("rows", {"user_id": "r1", "return_features": True}, 9.0)
        assert status == 200, doc
        assert got.tolist() == [9, 1, 2, 3, 4] and "features_degraded" not in doc["parameters"]
        assert lookups(cl, "l3", "hit") == 1
        status, body = cl.call("GET", "/v1/features/profile/r1")
        assert json.loads(body)["tier"] == "l1"
        status, doc, got, _ = cl.score("rows_m", {"user_id": "missing", "return_features": True}, 1)
        assert status == 200 and got.tolist() == [1] + [ROW_DEFAULT] * 4  # a miss: defaults
        # written through: PUT reaches Redis
        assert json.loads(cl.call("PUT", "/v1/features/profile/w1", [7, 8])[1])[
            "write_through"] == "ok"
        assert redis.command("STRLEN", "profile:w1") == b":8"

        # slow: Redis stopped (SIGSTOP) answers nothing; requests end at the deadline
        redis.proc.send_signal(signal.SIGSTOP)
        for i in range(3):
            status, doc, got, dt = cl.score("rows", {"user_id": f"slow{i}",
                                                     "return_features": True}, 1.0)
            assert status == 200, doc
            assert doc["parameters"]["features_degraded"] is True
            assert got.tolist() == [1] + [ROW_DEFAULT] * 4
            assert dt < deadline_s + SLACK_S, dt
            status, doc, _, dt = cl.score("rows_m", {"user_id": f"slow{i}"}, 1.0)
            assert status == 503 and "mandatory" in doc["error"], doc
            assert dt < deadline_s + SLACK_S, dt
        # rows already promoted do not need Redis
        status, doc, got, _ = cl.score("rows", {"user_id": "r1", "return_features": True}, 9.0)
        assert got.tolist() == [9, 1, 2, 3, 4] and "features_degraded" not in doc["parameters"]

        # down: killed; after a few failures the breaker opens and calls fail at once
        redis.proc.send_signal(signal.SIGCONT)
        redis.proc.kill()
        redis.proc.wait()
        for i in range(8):
            status, doc, got, dt = cl.score("rows", {"user_id": f"down{i}"}, 1.0)
            assert status == 200 and doc["parameters"] == {"features_degraded": True}
            assert dt < deadline_s + SLACK_S
        assert breaker_state(cl) == 1  # open
        m = cl.metrics()
        assert metric(m, "onnxd_feature_degraded_total") >= 11
        assert metric(m, 'onnxd_feature_breaker_opened_total{backend="redis"}') >= 1
        assert metric(m, 'onnxd_feature_lookups_total{tier="l3",result="timeout"}') >= 3

        # back: the breaker's probe succeeds after its cool-down, and rows come from Redis
        redis.start()
        redis.set_row("profile:r3", [5, 6, 7, 8])
        deadline = time.monotonic() + 10
        while True:
            status, doc, got, _ = cl.score("rows", {"user_id": "r3", "return_features": True}, 1)
            if "features_degraded" not in doc["parameters"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200 and got.tolist() == [1, 5, 6, 7, 8], doc
        assert breaker_state(cl) == 0
        status, doc, got, _ = cl.score("rows_m", {"user_id": "r3", "return_features": True}, 1)
        assert status == 200 and got.tolist() == [1, 5, 6, 7, 8]
    finally:
        cl.close()


L3_COPY_MS = 400


@pytest.fixture(scope="module")
def rcopy(server_factory, tmp_path_factory, redis):
    """L1 off, so every read shows what L2 does with copies of Redis rows."""
    root = tmp_path_factory.mktemp("fv-redis-copy-repo")
    repo = build_repo(root, {"rows": {"model": identity_model(5, "rows", "x"),
                                      "config": {"feature_view": row_view(False)}}})
    yield from store_server(server_factory, tmp_path_factory, repo,
                            ["--redis", redis.address, "--feature-l1-bytes", "0",
                             "--feature-l3-cache-ms", str(L3_COPY_MS)], "features-redis-copy")


def test_l3_rows_kept_in_l2_expire_and_serve_stale_when_redis_fails(rcopy, redis):
    cl = Client(rcopy)

    def get(key):
        status, body = cl.call("GET", f"/v1/features/profile/{key}")
        doc = json.loads(body)
        return status, doc.get("values"), doc.get("tier")

    def copied(key, values):
        """Reads until the copy (written to L2 asynchronously, within ms) answers."""
        deadline = time.monotonic() + 2
        while True:
            got = get(key)
            if got[2] == "l2" or time.monotonic() > deadline:
                return got
            assert got == (200, values, "l3")
            time.sleep(0.005)

    try:
        m = cl.metrics()
        assert metric(m, "onnxd_feature_l1_entries") == 0
        redis.set_row("profile:cp1", [1, 2])
        assert get("cp1") == (200, [1, 2], "l3")
        assert copied("cp1", [1, 2]) == (200, [1, 2], "l2")  # the copy, fresh
        assert lookups(cl, "l1", "miss") == 0  # L1 is off: not even asked
        redis.set_row("profile:cp1", [3, 4])
        assert get("cp1") == (200, [1, 2], "l2")  # within the copy's lifetime: the copy
        time.sleep(L3_COPY_MS / 1000 + 0.1)
        assert get("cp1") == (200, [3, 4], "l3")  # expired: read through, copy replaced
        assert copied("cp1", [3, 4]) == (200, [3, 4], "l2")

        # Redis stopped: an expired copy is served (not degraded), and counted as stale
        time.sleep(L3_COPY_MS / 1000 + 0.1)
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            assert get("cp1") == (200, [3, 4], "l2")
            status, doc, got, _ = cl.score("rows", {"user_id": "cp1", "return_features": True}, 2)
            assert status == 200 and got.tolist() == [2, 3, 4, ROW_DEFAULT, ROW_DEFAULT], doc
            assert "features_degraded" not in doc["parameters"]
            assert metric(cl.metrics(), "onnxd_feature_l3_stale_total") == 2
            # a key never read has no copy: a failure there is a failure
            assert get("cp-never")[0] == 503
        finally:
            redis.proc.send_signal(signal.SIGCONT)

        # deleted upstream: once the copy expires, the miss deletes the copy too
        deadline = time.monotonic() + 10
        while breaker_state(cl) != 0 and time.monotonic() < deadline:
            get("cp-probe")
            time.sleep(0.1)
        assert redis.command("DEL", "profile:cp1") == b":1"
        time.sleep(L3_COPY_MS / 1000 + 0.1)
        assert get("cp1")[0] == 404
        time.sleep(0.2)  # the copy's deletion is queued to L2's writer, committed within ms
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            assert get("cp1")[0] == 503  # no stale copy left to serve
        finally:
            redis.proc.send_signal(signal.SIGCONT)
    finally:
        cl.close()


@pytest.fixture(scope="module")
def rfetch(server_factory, tmp_path_factory, redis):
    """Every row read from Redis (L1 off, no copies in L2): the fetcher answers them all."""
    root = tmp_path_factory.mktemp("fv-redis-fetch-repo")
    mixed = {"input": "x", "columns": [
        {"raw": "amount"}, {"velocity": "user_id"},
        {"row": "user_id", "table": "profile", "width": 4, "default": ROW_DEFAULT}],
        "deadline_us": ROW_DEADLINE_US}
    repo = build_repo(root, {"rows": {"model": identity_model(5, "rows", "x"),
                                      "config": {"feature_view": row_view(True)}},
                             "mixed": {"model": identity_model(13, "mixed", "x"),
                                       "config": {"feature_view": mixed}}})
    yield from store_server(server_factory, tmp_path_factory, repo,
                            ["--redis", redis.address, "--feature-l1-bytes", "0",
                             "--feature-l3-cache-ms", "0"], "features-redis-fetch")


def test_concurrent_requests_share_l3_round_trips(rfetch, redis):
    """Requests whose rows only Redis has are answered by the fetcher, which asks for the rows
    of all the requests waiting at once in one MGET: every answer is its own user's row, and
    there are fewer round trips than rows."""
    users = 300
    for u in range(users):
        redis.set_row(f"profile:f{u}", [u, u + 0.5, -u, u * 2])
    before = Client(rfetch)
    m0 = before.metrics()
    before.close()
    per_thread = 40

    def worker(k):
        def run():
            cl = Client(rfetch)
            try:
                bad = []
                for i in range(per_thread):
                    u = (k * 7919 + i * 31) % users
                    status, doc, got, _ = cl.score("rows", {"user_id": f"f{u}",
                                                            "return_features": True}, float(i))
                    want = [float(i), u, u + 0.5, -u, u * 2]
                    if status != 200 or got.tolist() != want:
                        bad.append((u, status, doc))
                return bad
            finally:
                cl.close()
        return run

    results = run_threads([worker(k) for k in range(24)])
    assert [b for r in results for b in r] == []
    cl = Client(rfetch)
    try:
        m1 = cl.metrics()
        n = 24 * per_thread

        def d(name):
            return metric(m1, name) - metric(m0, name)

        assert d('onnxd_feature_lookups_total{tier="l3",result="hit"}') == n
        assert d("onnxd_feature_l3_fetch_rows_total") == n
        rounds = d("onnxd_feature_l3_fetch_rounds_total")
        assert 0 < rounds < n, rounds  # concurrent requests shared round trips
        assert d("onnxd_feature_degraded_total") == 0
        # a row Redis does not have: a definitive miss gives the defaults, not a failure
        status, doc, got, _ = cl.score("rows", {"user_id": "nobody", "return_features": True}, 1)
        assert status == 200 and got.tolist() == [1] + [ROW_DEFAULT] * 4, doc
    finally:
        cl.close()


def test_fetched_rows_fill_in_a_view_with_velocity_and_several_rows(rfetch, redis):
    """A view with raw values (3 rows), velocity features and a Redis row: the row is fetched
    and filled into every output row, the velocity features are read once per request."""
    cl = Client(rfetch)
    try:
        t = 1_760_000_000_000
        assert cl.events([{"ts": t - 5000, "user_id": "mx", "card_id": "cx", "merchant_id": "m1",
                           "amount": 4.0}])[0] == 200
        redis.set_row("profile:mx", [9, 8, 7])  # shorter than the view's 4: default for the rest
        m0 = cl.metrics()
        inputs = [{"name": "amount", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]
        status, doc, _, _ = cl.score("mixed", {"user_id": "mx", "ts": t}, inputs=inputs)
        assert status == 200, doc
        y = output_y(doc).reshape(3, 13)
        vel = [1, 1, 1, 4, 4, 4, 1, 5]
        for i in range(3):
            assert y[i].tolist() == [i + 1] + vel + [9, 8, 7, ROW_DEFAULT], y
        m1 = cl.metrics()

        def d(name):
            return metric(m1, name) - metric(m0, name)

        assert d('onnxd_feature_lookups_total{tier="l2",result="hit"}') == 1  # velocity, once
        assert d('onnxd_feature_lookups_total{tier="l2",result="miss"}') == 1  # the row, once
        assert d('onnxd_feature_lookups_total{tier="l3",result="hit"}') == 1
        assert d("onnxd_feature_l3_fetch_rows_total") == 1
    finally:
        cl.close()


def fnv1a64(data):
    """FNV-1a 64 of bytes: the unkeyed merchant hash older onnxd stored (forgeable)."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


class MerchantIds:
    """The merchant identities seen in stored records: the store's keyed hash of merchant_id
    (ox_fstore_merchant_hash), which only the store can compute. Records are checked for
    consistency instead: one id always gives one value, different ids different values, and
    never the unkeyed FNV-1a 64 of the id."""

    def __init__(self):
        self.by_id = {}

    def check(self, e, rec):
        ts, amount, m = struct.unpack("<qdQ", rec)
        assert (ts, amount) == (e["ts"], e["amount"]), (rec, e)
        assert m != fnv1a64(e["merchant_id"].encode())
        mid = e["merchant_id"]
        if mid not in self.by_id:
            assert m not in self.by_id.values(), (mid, self.by_id)
            self.by_id[mid] = m
        assert self.by_id[mid] == m, (mid, m, self.by_id)


@pytest.fixture(scope="module")
def rev(server_factory, fv_repo, tmp_path_factory, redis):
    """Events written through to Redis lists (--feature-events-to-redis)."""
    yield from store_server(server_factory, tmp_path_factory, fv_repo,
                            ["--redis", redis.address, "--feature-events-to-redis", "1"],
                            "features-redis-events")


def test_events_written_through_to_redis_lists(rev, redis):
    """Every ingested event is appended to "~ev:<entity>" of each of its entities, as its
    24-byte record, in order. With Redis stopped the events are still stored (L2 is the store of
    record): the answer names the Redis error and the failure is counted."""
    t = 1_770_000_000_000
    ev = [{"ts": t - 3000, "user_id": "wt-u1", "card_id": "wt-c1", "merchant_id": "m1",
           "amount": 10.5},
          {"ts": t - 2000, "user_id": "wt-u2", "card_id": "wt-c1", "merchant_id": "m2",
           "amount": 20.25},
          {"ts": t - 1000, "user_id": "wt-u1", "card_id": "wt-c2", "merchant_id": "m3",
           "amount": 7.0}]
    lists = {"~ev:user:wt-u1": [0, 2], "~ev:user:wt-u2": [1], "~ev:card:wt-c1": [0, 1],
             "~ev:card:wt-c2": [2]}
    mids = MerchantIds()
    for key in lists:
        redis.command("DEL", key)
    cl = Client(rev)
    try:
        status, body = cl.events(ev)
        assert status == 200, body
        assert json.loads(body) == {"accepted": 3, "duplicates": 0, "write_through": "ok"}
        for key, idx in lists.items():
            assert redis.command("LLEN", key) == b":%d" % len(idx), key
            recs = redis.lrange(key)
            assert len(recs) == len(idx), key
            for i, rec in zip(idx, recs):
                mids.check(ev[i], rec)
        m0 = cl.metrics()
        assert metric(m0, "onnxd_feature_events_l3_failed_total") == 0

        # Redis stopped: the events are stored all the same, the answer says what failed
        late = [{"ts": t - 500, "user_id": "wt-u1", "card_id": "wt-c1", "merchant_id": "m1",
                 "amount": 1.5},
                {"ts": t - 400, "user_id": "wt-u3", "card_id": "wt-c3", "merchant_id": "m4",
                 "amount": 2.0}]
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            status, body = cl.events(late)
            dt = time.monotonic() - t0
            assert status == 200, body
            assert json.loads(body) == {"accepted": 2, "duplicates": 0, "write_through": "timeout"}, body
            assert dt < 1 + SLACK_S, dt  # bounded by the write-through deadline
            # in L2 (and L1): the velocity features count them
            status, doc, got, _ = cl.score("fv", {"user_id": "wt-u1", "card_id": "wt-c1", "ts": t,
                                                  "return_features": True}, 1.0)
            assert status == 200, doc
            assert "features_degraded" not in doc["parameters"]
            assert got[1:9].tolist() == [3, 3, 3, 19, 19, 19, 2, 0.5]  # e0, e2, late[0]
            assert got[9:17].tolist() == [3, 3, 3, 32.25, 32.25, 32.25, 2, 0.5]  # e0, e1, late[0]
            m1 = cl.metrics()
            assert metric(m1, "onnxd_feature_events_l3_failed_total") == 2
            assert (metric(m1, "onnxd_feature_events_ingested_total")
                    - metric(m0, "onnxd_feature_events_ingested_total")) == 2
        finally:
            redis.proc.send_signal(signal.SIGCONT)

        # Redis back: appends succeed again (once the breaker lets calls through)
        deadline = time.monotonic() + 10
        n = 0
        while True:
            e = {"ts": t + n, "user_id": "wt-u4", "card_id": "wt-c4", "merchant_id": "m5",
                 "amount": 3.0}
            n += 1
            status, body = cl.events([e])
            assert status == 200, body
            if json.loads(body)["write_through"] == "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert json.loads(body) == {"accepted": 1, "duplicates": 0, "write_through": "ok"}
        mids.check(e, redis.lrange("~ev:user:wt-u4")[-1])
    finally:
        cl.close()


def test_events_to_redis_flag_needs_redis():
    r = subprocess.run([str(_server_binary()), "--feature-events-to-redis", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--feature-events-to-redis 1 needs --redis" in r.stderr, (
        r.returncode, r.stderr)
    r = subprocess.run([str(_server_binary()), "--feature-events-to-redis", "2"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--feature-events-to-redis must be an integer from 0 to 1" in (
        r.stderr), r.stderr


# ---------------------------------------------------------------------------- PostgreSQL (L3)
class Postgres(services.Postgres):
    """services.Postgres (a PostgreSQL server of our own on a free loopback port, as onnxd-test
    when root) for tests."""

    def __init__(self):
        _or_fail(super().__init__)

    def start(self):
        _or_fail(super().start)


# "features" (what onnxd reads) is a view whose value goes through a function that sleeps for
# slowness.s seconds: the test turns PostgreSQL slow and fast again with one UPDATE.
PG_SCHEMA = r"""
CREATE TABLE slowness (s float8 NOT NULL);
INSERT INTO slowness VALUES (0);
CREATE TABLE features_data (entity text PRIMARY KEY, value bytea,
                            updated_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION slow_value(v bytea) RETURNS bytea LANGUAGE plpgsql VOLATILE AS
  $$ BEGIN PERFORM pg_sleep((SELECT s FROM slowness)); RETURN v; END $$;
CREATE VIEW features AS SELECT entity, slow_value(value) AS value, updated_at FROM features_data;
"""


def pg_row(key, values):
    return f"INSERT INTO features_data (entity, value) VALUES ('{key}', " \
           f"'\\x{struct.pack(f'<{len(values)}f', *values).hex()}'::bytea);"


@pytest.fixture(scope="module")
def pg():
    p = Postgres()
    try:
        p.start()
        p.sql(PG_SCHEMA)
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def psrv(server_factory, tmp_path_factory, pg):
    repo = rows_repo(tmp_path_factory, "fv-pg-repo")
    yield from store_server(server_factory, tmp_path_factory, repo,
                            ["--postgres", pg.conninfo], "features-pg")


def test_postgres_slow_rows_degrade_within_the_deadline_and_recover(psrv, pg):
    cl = Client(psrv)
    deadline_s = ROW_DEADLINE_US / 1e6
    try:
        pg.sql(pg_row("profile:p3", [5, 6, 7, 8])
               + "".join(pg_row(f"profile:slow{i}", [9, 9, 9, 9]) for i in range(8)))
        rows, out = pg.top / "rows.csv", pg.top / "rows-pg.csv"  # tools/fraud/load_l3.py's CSV
        rows.write_text("profile,p1,1,2,3,4\n")
        assert load_l3.main([str(rows), "--pg-csv", str(out)]) == 0
        pg.sql(f"\\copy features_data(entity, value) FROM '{out}' WITH (FORMAT csv)")
        status, doc, got, _ = cl.score("rows", {"user_id": "p1", "return_features": True}, 9.0)
        assert status == 200 and got.tolist() == [9, 1, 2, 3, 4], doc
        assert "features_degraded" not in doc["parameters"]
        assert json.loads(cl.call("GET", "/v1/features/profile/p1")[1])["tier"] == "l1"

        pg.sql("UPDATE slowness SET s = 0.5")  # every read of a stored row now takes 500 ms
        for i in range(8):
            status, doc, got, dt = cl.score("rows", {"user_id": f"slow{i}",
                                                     "return_features": True}, 1.0)
            assert status == 200, doc
            assert doc["parameters"]["features_degraded"] is True
            assert got.tolist() == [1] + [ROW_DEFAULT] * 4
            assert dt < deadline_s + SLACK_S, dt
        status, doc, _, dt = cl.score("rows_m", {"user_id": "slow0"}, 1.0)
        assert status == 503 and "mandatory" in doc["error"] and dt < deadline_s + SLACK_S
        m = cl.metrics()
        assert metric(m, 'onnxd_feature_breaker_state{backend="postgres"}') == 1
        assert metric(m, 'onnxd_feature_lookups_total{tier="l3",result="timeout"}') >= 5

        pg.sql("UPDATE slowness SET s = 0")
        deadline = time.monotonic() + 10
        while True:
            status, doc, got, _ = cl.score("rows", {"user_id": "p3", "return_features": True}, 1)
            if "features_degraded" not in doc["parameters"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200 and got.tolist() == [1, 5, 6, 7, 8], doc
        assert metric(cl.metrics(), 'onnxd_feature_breaker_state{backend="postgres"}') == 0
    finally:
        cl.close()
