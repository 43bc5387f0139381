"""The Grafana dashboard (deploy/grafana/onnxd.json) queries what onnxd exports.

A dedicated onnxd with everything that adds metrics (a feature store with velocity and row
views, Redis as L3 and as the event stream, a model of its own) serves a few requests of each kind (inference, bad and
unknown-model requests, event ingest, feature lookups that reach L1, L2 and Redis); then every
PromQL expression of the dashboard (panel targets and query variables) is parsed and checked
against that server's /metrics (deploy_check.promql_problems): each metric is a sample the
server writes (a histogram's _bucket/_sum/_count belong to their histogram, while a counter
such as nv_inference_count is its own family), each label in a selector is one the metric
carries, literal matchers (tier="l1", result="hit", code=~"4..|5..") select some sample,
rate()/increase() take counters and histogram_quantile() a histogram's buckets. Broken copies
of the dashboard (a made-up metric, a misspelled label, rate() over a gauge) must fail.
"""

import copy
import json
import sys

import pytest

from conftest import ROOT, build_repo, dedicated_server, http_get, http_post_json
from deploy_check import (DEPLOY, dashboard_metric_names, dashboard_problems, family_of,
                          parse_exposition, promql_problems, promql_selectors)

sys.path.insert(0, str(ROOT / "tools" / "fraud"))
sys.path.insert(0, str(ROOT / "tests"))
import load_l3  # noqa: E402
import services  # noqa: E402

DASHBOARD = DEPLOY / "grafana" / "onnxd.json"


def identity_model(width, input_name):
    """input [N, width] FP32 -> y = input."""
    from onnx import TensorProto as TP
    from onnx import helper

    g = helper.make_graph([helper.make_node("Identity", [input_name], ["y"])], "id",
                          [helper.make_tensor_value_info(input_name, TP.FLOAT, ["N", width])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, ["N", width])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    try:
        r = services.Redis(tmp_path_factory.mktemp("dash-redis"))
        r.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def dsrv(server_factory, tmp_path_factory, test_models, redis):
    repo = build_repo(tmp_path_factory.mktemp("dash-repo"), {
        "identity_fp32": {"model": test_models / "identity_fp32/1/model.onnx"},
        "velocity": {"model": identity_model(9, "features"), "config": {"feature_view": {
            "input": "features", "columns": [{"raw": "amount"}, {"velocity": "user_id"}]}}},
        "rows": {"model": identity_model(5, "x"), "config": {"feature_view": {
            "input": "x", "columns": [{"raw": "amount"}, {"row": "user_id", "table": "profile",
                                                          "width": 4, "default": -1}]}}},
    })
    store = tmp_path_factory.mktemp("dash-store") / "store"
    yield from dedicated_server(server_factory, repo,
                                ["--feature-dir", str(store), "--feature-sync", "none",
                                 "--redis", redis.address,
                                 "--feature-events-stream", "dash:events"], "dashboard")


@pytest.fixture(scope="module")
def metrics_text(dsrv, redis):
    """/metrics after a few requests of every kind."""
    port = dsrv.port
    x = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
    for _ in range(5):
        assert http_post_json(port, "/v2/models/identity_fp32/infer", x).status == 200
    assert http_post_json(port, "/v2/models/identity_fp32/infer", {"inputs": []}).status == 400
    assert http_get(port, "/v2/models/no_such_model").status == 404
    ev = [{"ts": 1_800_000_000_000 + i, "user_id": "u1", "card_id": "c1", "merchant_id": "m",
           "amount": 2.5} for i in range(3)]
    assert http_post_json(port, "/v1/events", ev).status == 200
    csv = redis.dir / "rows.csv"
    csv.write_text("profile,r1,1,2,3,4\n")
    assert load_l3.main([str(csv), "--redis", redis.address]) == 0
    amount = [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [1.0]}]
    for user in ("u1", "u1", "nobody"):
        r = http_post_json(port, "/v2/models/velocity/infer",
                           {"inputs": amount, "parameters": {"user_id": user,
                                                             "ts": 1_800_000_001_000}})
        assert r.status == 200, r
    for user in ("r1", "r1", "absent"):  # L3 hit, then L1; a miss everywhere
        r = http_post_json(port, "/v2/models/rows/infer",
                           {"inputs": amount, "parameters": {"user_id": user}})
        assert r.status == 200, r
    r = http_get(port, "/metrics")
    assert r.status == 200
    return r.body.decode()


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text())


def test_dashboard_queries_match_metrics(dashboard, metrics_text):
    names = dashboard_metric_names(dashboard)
    assert len(names) >= 30, names  # the parser found the queries
    problems = dashboard_problems(dashboard, metrics_text)
    assert not problems, "\n".join(problems)
    types, samples = parse_exposition(metrics_text)
    # what the dashboard promises to show is there, with traffic behind it
    def value(sample):
        line = [ln for ln in metrics_text.splitlines() if ln.startswith(sample + " ")]
        assert len(line) == 1, sample
        return float(line[0].split()[-1])

    for tier, result in (("l1", "hit"), ("l2", "miss"), ("l3", "hit"), ("l3", "miss")):
        assert value(f'onnxd_feature_lookups_total{{tier="{tier}",result="{result}"}}') > 0
    assert {"400", "404"} <= {s["code"] for s in samples["onnxd_http_responses_total"]}
    # the events went through the stream (--feature-events-stream) and were applied
    assert value("onnxd_feature_stream_applied_total") == 3
    assert value("onnxd_feature_stream_apply_delay_seconds_count") == 1


def test_dashboard_structure(dashboard):
    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    ps = list(panels(dashboard["panels"]))
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids)), ids
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "model"} <= variables
    titles = " ".join(p["title"].lower() for p in ps)
    for topic in ("requests per second", "latency", "queue", "batch", "http status",
                  "hit rate", "memory", "model loads"):
        assert topic in titles, topic
    for p in ps:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            used = {v for v in ("$model", "$instance") if v in t["expr"]}
            assert {u[1:] for u in used} <= variables
    quantiles = [t["expr"] for p in ps for t in p.get("targets", [])
                 if "histogram_quantile" in t["expr"]]
    assert quantiles and all("by (le" in q for q in quantiles), quantiles


def test_suffixes_are_stripped_only_from_histograms(metrics_text):
    types, _ = parse_exposition(metrics_text)
    assert types["onnxd_request_duration_us"] == "histogram"
    assert family_of("onnxd_request_duration_us_bucket", types) == "onnxd_request_duration_us"
    assert family_of("onnxd_request_duration_us_count", types) == "onnxd_request_duration_us"
    assert family_of("onnxd_model_load_duration_seconds_sum", types) == \
        "onnxd_model_load_duration_seconds"
    # Triton's counters have no _total, and two of them end in _count: their own families
    assert types["nv_inference_count"] == "counter"
    assert family_of("nv_inference_count", types) == "nv_inference_count"
    assert family_of("nv_inference_exec_count", types) == "nv_inference_exec_count"
    sel = promql_selectors('sum by (le, model) (rate(x_bucket{a="1", b=~"$v"}[$__rate_interval]))'
                           ' / on (model) group_left max(y) > bool 0.5')
    assert sel == [("x_bucket", [("a", "=", "1"), ("b", "=~", "$v")], ["sum", "rate"]),
                   ("y", [], ["max"])], sel


@pytest.mark.parametrize("expr,fragment", [
    ('sum(rate(onnxd_made_up_requests_total{instance=~"$instance"}[5m]))',
     "onnxd_made_up_requests_total: no such metric"),
    ('sum(rate(nv_inference_request_sucess[5m]))', "nv_inference_request_sucess: no such metric"),
    ('sum by (tier) (rate(onnxd_feature_lookups_total{tire="l1"}[5m]))', "label 'tire'"),
    ('sum(rate(onnxd_feature_lookups_total{tier="l4"}[5m]))', "no sample matches"),
    ('rate(process_resident_memory_bytes[5m])', "not a counter"),
    ('histogram_quantile(0.99, sum by (le) (rate(nv_inference_request_duration_us[5m])))',
     "not a histogram's _bucket"),
    ('histogram_quantile(0.5, rate(onnxd_request_duration_us_sum[5m]))',
     "not a histogram's _bucket"),
])
def test_check_fails_on_broken_queries(dashboard, metrics_text, expr, fragment):
    types, samples = parse_exposition(metrics_text)
    problems = promql_problems(expr, types, samples)
    assert any(fragment in p for p in problems), problems
    # and the whole dashboard fails with that query in one of its panels
    broken = copy.deepcopy(dashboard)
    broken["panels"][1]["targets"][0]["expr"] = expr
    problems = dashboard_problems(broken, metrics_text)
    assert problems and any(fragment in p for p in problems), problems
