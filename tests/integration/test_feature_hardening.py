"""The feature store against hostile clients (issue 9, findings 1, 2, 9, 10): amounts outside
the documented range refused at ingest, a per-entity cap on events in any 24 h window (all or
nothing), no non-finite feature in any answer (strict JSON), internal Redis keys out of reach of
row keys, and valid UTF-8 in every answer whatever the key bytes."""
import json
import math
import struct

import pytest

from conftest import build_repo
from test_features import (N_FEATURES, VIEW, Client, identity_model, metric, redis,  # noqa: F401
                           row_view, store_server)

CAP = 5
T = 1_770_000_000_000


def strict(body):
    """json.loads that refuses NaN/Infinity (as strict parsers do) and invalid UTF-8."""
    def no_constant(name):
        raise ValueError(f"non-JSON constant {name}")
    return json.loads(body.decode("utf-8"), parse_constant=no_constant)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_repo(tmp_path_factory.mktemp("fh-repo"), {
        "fv": {"model": identity_model(N_FEATURES), "config": {"feature_view": VIEW}},
        "rows": {"model": identity_model(5, "rows", "x"),
                 "config": {"feature_view": row_view(False)}},
    })


@pytest.fixture(scope="module")
def srv(server_factory, repo, tmp_path_factory, redis):  # noqa: F811
    yield from store_server(server_factory, tmp_path_factory, repo,
                            ["--redis", redis.address, "--feature-events-to-redis", "1",
                             "--feature-max-events-per-entity-24h", str(CAP)], "fh")


@pytest.fixture
def cl(srv):
    c = Client(srv)
    yield c
    c.close()


def ev(user, card, ts, amount=1.0, merchant="m1"):
    return {"ts": ts, "user_id": user, "card_id": card, "merchant_id": merchant, "amount": amount}


def velocity(cl, user, card, t):
    status, doc, got, _ = cl.score("fv", {"user_id": user, "card_id": card, "ts": t,
                                          "return_features": True}, 1.0)
    assert status == 200, doc
    return got[1:9].tolist(), got[9:17].tolist()


@pytest.mark.parametrize("amounts", [["1e39"], ["3e38", "3e38"], ["1000000000001"],
                                     ["-1.5e12"], ["1e309"]])
def test_amount_out_of_range_is_400_naming_the_line(cl, amounts):
    """One event of 1e39 (or two of 3e38) used to overflow the card's float32 sums for 24 h."""
    lines = [json.dumps(ev("amt-u", "amt-c", T - 5000))]
    lines += ['{"ts": %d, "user_id": "amt-u", "card_id": "amt-c", "merchant_id": "m", '
              '"amount": %s}' % (T - 4000 + i, a) for i, a in enumerate(amounts)]
    status, body = cl.call("POST", "/v1/events", "\n".join(lines) + "\n", "application/x-ndjson")
    assert status == 400, body
    msg = strict(body)["error"]
    assert "line 2" in msg and "from -1e12 to 1e12" in msg, msg
    assert velocity(cl, "amt-u", "amt-c", T)[0][2] == 0  # nothing of the request stored
    # the bounds themselves are accepted, and a window of them stays finite
    u = "amt-ok-" + "-".join(amounts)
    status, body = cl.events([ev(u, u, T - 3000, 1e12), ev(u, u, T - 2000, -1e12),
                              ev(u, u, T - 1000, 1e12)])
    assert status == 200, body
    status, doc, got, _ = cl.score("fv", {"user_id": u, "card_id": u, "ts": T,
                                          "return_features": True}, 1.0)
    assert status == 200 and all(math.isfinite(x) for x in got), doc
    assert got[6] == 1e12  # amt_24h


def test_entity_cap_refuses_the_whole_request_with_429(cl):
    status, body = cl.events([ev("cap-u", f"cap-c{i}", T - 60000 + i) for i in range(CAP)])
    assert status == 200, body
    # one more for cap-u in the same 24 h: refused whole, the new card gets nothing either
    status, body = cl.events([ev("cap-u2", "cap-new", T - 100),
                              ev("cap-u", "cap-new", T - 50)])
    assert status == 429, body
    msg = strict(body)["error"]
    assert "'user:cap-u'" in msg and f"more than {CAP} events" in msg, msg
    assert "--feature-max-events-per-entity-24h" in msg and "no event" in msg, msg
    user, card = velocity(cl, "cap-u2", "cap-new", T)
    assert user[2] == 0 and card[2] == 0, (user, card)
    assert velocity(cl, "cap-u", "cap-new", T)[0][2] == CAP
    # a day later the window has room again
    status, body = cl.events([ev("cap-u", "cap-new", T + 86_400_000)])
    assert status == 200, body


def test_nonfinite_stored_row_never_reaches_an_answer(cl, redis):  # noqa: F811
    """A row written by another L3 writer with NaN/Infinity: replaced by the column's default,
    flagged degraded, counted, and the answer is strict JSON."""
    redis.set_row("profile:nan-row", [1.0, float("nan"), float("inf"), -float("inf")])
    before = metric(cl.metrics(), "onnxd_feature_nonfinite_total")
    status, body = cl.call("POST", "/v2/models/rows/infer", {
        "inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [2.0]}],
        "parameters": {"user_id": "nan-row", "return_features": True}})
    assert status == 200, body
    doc = strict(body)
    assert doc["parameters"]["features"] == [2.0, 1.0, -7.5, -7.5, -7.5], doc
    assert doc["parameters"]["features_degraded"] is True
    assert metric(cl.metrics(), "onnxd_feature_nonfinite_total") == before + 3
    # GET shows the stored values, the non-finite ones as null
    status, body = cl.call("GET", "/v1/features/profile/nan-row")
    assert status == 200
    assert strict(body)["values"] == [1.0, None, None, None], body


@pytest.mark.parametrize("raw", ["1e39", "-1e39"])
def test_raw_feature_outside_float32_is_400(cl, raw):
    status, body = cl.call("POST", "/v2/models/fv/infer", '{"inputs": [], "parameters": '
                           '{"amount": %s, "user_id": "u", "card_id": "c", "ts": 1}}' % raw)
    assert status == 400, body
    assert "amount" in strict(body)["error"]
    status, body = cl.call("POST", "/v2/models/fv/infer", {
        "inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [float(raw)]}],
        "parameters": {"user_id": "u", "card_id": "c", "ts": 1}})
    assert status == 400, body
    assert "float32" in strict(body)["error"]


def test_row_keys_cannot_reach_internal_redis_keys(cl, redis):  # noqa: F811
    """PUT /v1/features/ev/user:X used to overwrite the Redis list of user X's events."""
    status, body = cl.call("PUT", "/v1/features/ev/user:ns-u", [1, 2])
    assert status == 200, body
    status, body = cl.events([ev("ns-u", "ns-c", T - 1000)])
    assert status == 200, body
    assert strict(body) == {"accepted": 1, "duplicates": 0, "write_through": "ok"}
    assert len(redis.lrange("~ev:user:ns-u")) == 1
    assert redis.command("GET", "ev:user:ns-u").startswith(b"$8")  # the row, intact
    for table in ("~ev", "%7Eev", "ev%3Auser"):
        status, body = cl.call("PUT", f"/v1/features/{table}/user:ns-u", [1])
        assert status == 400, (table, body)
        strict(body)


def test_non_utf8_keys_get_valid_json(cl):
    for method, body in (("PUT", [1, 2]), ("GET", None)):
        status, data = cl.call(method, "/v1/features/profile/%FF%FE", body)
        assert status == 400, data
        assert "UTF-8" in strict(data)["error"]
    status, data = cl.call("PUT", "/v1/features/profile/caf%C3%A9", [1])
    assert status == 200, data
    assert strict(data)["key"] == "caf\u00e9"
    # a non-UTF-8 name echoed in an error message is escaped, not copied raw
    status, data = cl.call("GET", "/v2/models/%FF%FE")
    assert status in (400, 404), data
    strict(data)


def test_distinct_merchants_are_told_apart(cl):
    """Merchant identity is a keyed hash: different ids count as different merchants."""
    ids = ["m1", "m2", "m3", "0", "00", "mm"]
    status, body = cl.events([ev("dm-u", f"dm-c{i}", T - 5000 + i, 1.0, m)
                              for i, m in enumerate(ids[:CAP])])
    assert status == 200, body
    assert velocity(cl, "dm-u", "dm-c0", T)[0][6] == CAP
