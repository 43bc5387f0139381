"""Observability: GET /metrics (Prometheus text, Triton's metric names) and the statistics
extension (GET /v2/models[/{m}[/versions/{v}]]/stats, Triton's JSON), on a dedicated server
whose counters start at zero, so that every count can be checked exactly.

/metrics is parsed with prometheus_client's parser. Triton's counters carry no _total suffix
(nv_inference_count, not nv_inference_count_total); the parser then reports the family under
its name and each sample under name + "_total" (its OpenMetrics normalisation). The lookups
below use the family name and accept exactly that sample name; the raw text is checked
separately to carry Triton's exact names, which is what dashboards built for Triton query.
"""

import json
import re
import time

import numpy as np
import pytest

import rawhttp
from conftest import (build_repo, dedicated_server, http_get, infer, infer_body, model_stats,
                      run_threads, slow_model_bytes, two_out_model_bytes, wait_until)

BATCH_CFG = {"max_batch_size": 16, "instance_count": 1,
             "dynamic_batching": {"max_queue_delay_microseconds": 20000}}

COUNTERS = ["nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
            "nv_inference_exec_count", "nv_inference_request_duration_us",
            "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
            "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us"]
HISTOGRAMS = ["onnxd_request_duration_us", "onnxd_queue_duration_us",
              "onnxd_compute_input_duration_us", "onnxd_compute_infer_duration_us",
              "onnxd_compute_output_duration_us", "onnxd_batch_size"]
# Histogram -> the stats pair whose count and ns it records (request: success and fail).
HIST_STAT = {"onnxd_queue_duration_us": "queue", "onnxd_compute_input_duration_us": "compute_input",
             "onnxd_compute_infer_duration_us": "compute_infer",
             "onnxd_compute_output_duration_us": "compute_output"}
COUNTER_STAT = {"nv_inference_queue_duration_us": "queue",
                "nv_inference_compute_input_duration_us": "compute_input",
                "nv_inference_compute_infer_duration_us": "compute_infer",
                "nv_inference_compute_output_duration_us": "compute_output"}


@pytest.fixture(scope="module")
def metrics_server(server_factory, tmp_path_factory, test_models):
    repo = build_repo(tmp_path_factory.mktemp("metrics-repo"), {
        "identity_fp32": {"model": test_models / "identity_fp32/1/model.onnx"},
        "two_out": {"model": two_out_model_bytes(), "config": BATCH_CFG},
        "slow": {"model": slow_model_bytes(), "config": {"max_batch_size": 0, "instance_count": 1}},
    })
    # A second version of a model, to check the per-version statistics routes.
    for v in (2,):
        (repo / "two_out" / str(v)).mkdir()
        (repo / "two_out" / str(v) / "model.onnx").write_bytes(two_out_model_bytes())
    yield from dedicated_server(server_factory, repo, ["--infer-threads", "2"], "metrics")


class Metrics:
    """A parsed /metrics document."""

    def __init__(self, text):
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.fams = {f.name: f for f in text_string_to_metric_families(text)}

    def family(self, name, typ):
        f = self.fams.get(name)
        assert f is not None, f"no metric family {name}"
        assert f.type == typ, f"{name} has type {f.type}, not {typ}"
        return f

    def samples(self, family, typ, sample, **labels):
        f = self.family(family, typ)
        return [s for s in f.samples
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]

    def counter(self, name, model=None, version="1"):
        """A counter's value. Samples of a counter family are named <family>_total by the
        parser whether or not the text had the suffix."""
        lab = {} if model is None else {"model": model, "version": version}
        fam = name[:-6] if name.endswith("_total") else name
        got = self.samples(fam, "counter", fam + "_total", **lab)
        assert len(got) == 1, f"{name} {lab}: {len(got)} samples"
        return got[0].value

    def gauge(self, name, model=None, version="1"):
        lab = {} if model is None else {"model": model, "version": version}
        got = self.samples(name, "gauge", name, **lab)
        assert len(got) == 1, f"{name} {lab}: {len(got)} samples"
        return got[0].value

    def histogram(self, name, model, version="1"):
        """(buckets [(le, cumulative count)] in document order, sum, count)."""
        lab = {"model": model, "version": version}
        buckets = [(s.labels["le"], s.value) for s in self.samples(name, "histogram",
                                                                  name + "_bucket", **lab)]
        (s,) = self.samples(name, "histogram", name + "_sum", **lab)
        (c,) = self.samples(name, "histogram", name + "_count", **lab)
        return buckets, s.value, c.value


def scrape(port):
    r = http_get(port, "/metrics")
    assert r.status == 200, r
    ct = r.header("Content-Type") or ""
    assert ct.startswith("text/plain") and "version=0.0.4" in ct, ct
    return Metrics(r.body.decode()), r


def check_histogram(m, name, model, version="1"):
    """Buckets ascending by bound, cumulative (non-decreasing), +Inf last and equal to _count;
    returns (buckets, sum, count)."""
    buckets, s, c = m.histogram(name, model, version)
    assert buckets, f"{name}: no buckets"
    assert buckets[-1][0] == "+Inf", f"{name}: last bucket {buckets[-1][0]}"
    bounds = [float(le) for le, _ in buckets[:-1]]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), f"{name}: {bounds}"
    counts = [v for _, v in buckets]
    assert all(a <= b for a, b in zip(counts, counts[1:])), f"{name} not cumulative: {counts}"
    assert counts[-1] == c, f"{name}: +Inf bucket {counts[-1]} != _count {c}"
    assert s >= 0
    return buckets, s, c


# ---- tests -----------------------------------------------------------------------------------

def test_metrics_names_and_types(metrics_server):
    m, _ = scrape(metrics_server.port)
    for name in COUNTERS:
        m.family(name, "counter")
        # Triton's exact sample name, without _total, one sample per model version.
        assert re.search(r'^%s\{model="identity_fp32",version="1"\} \d+$' % name, m.text,
                         re.M), name
        assert re.search(r'^%s\{model="two_out",version="2"\} \d+$' % name, m.text, re.M), name
    m.family("nv_inference_pending_request_count", "gauge")
    for name in HISTOGRAMS:
        m.family(name, "histogram")
    assert m.gauge("onnxd_open_connections") >= 1
    m.counter("onnxd_http_received_bytes_total")
    m.counter("onnxd_http_sent_bytes_total")
    assert m.gauge("process_resident_memory_bytes") > 1 << 20
    assert m.counter("process_cpu_seconds_total") > 0
    assert re.search(r"^onnxd_http_received_bytes_total \d+$", m.text, re.M)
    assert re.search(r"^process_cpu_seconds_total [0-9.]+$", m.text, re.M)


def test_counts_after_successes_and_failures(metrics_server):
    """N successful requests (1-3 rows, sent one at a time) and M failed ones (wrong datatype,
    unknown input) on identity_fp32: every counter, histogram and statistic agrees exactly;
    the byte counters grow by exactly the HTTP bytes exchanged in between."""
    port = metrics_server.port
    model = "identity_fp32"
    t_start_ms = time.time() * 1000
    m0, r0 = scrape(port)
    for name in COUNTERS:
        assert m0.counter(name, model) == 0, f"{name} not 0 on a fresh server"
    recv0 = m0.counter("onnxd_http_received_bytes_total")
    sent0 = m0.counter("onnxd_http_sent_bytes_total")

    rows = [1, 2, 3, 1, 2, 3, 1]
    reqs = []
    for i, r in enumerate(rows):
        body, headers = infer_body([("INPUT0", np.full((r, 5), i, np.float32))],
                                   binary_in=i % 2 == 1, binary_out=i % 3 == 1)
        raw = rawhttp.build_request("POST", f"/v2/models/{model}/infer", body, headers)
        reqs.append((raw, 200))
    bad = [
        json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2],
                                "data": [1, 2]}]}),
        json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP64", "shape": [1, 1],
                                "data": [1.5]}]}),
        json.dumps({"inputs": [{"name": "NOPE", "datatype": "FP32", "shape": [1, 1],
                                "data": [1.5]}]}),
    ]
    for b in bad:
        reqs.append((rawhttp.build_request("POST", f"/v2/models/{model}/infer", b,
                                           ["Content-Type: application/json"]), 400))
    n_ok, n_fail = len(rows), len(bad)
    recv_bytes = sent_bytes = 0
    c = rawhttp.RawConn(port)
    try:
        for raw, status in reqs:
            c.send(raw)
            r = c.read_response()
            assert r.status == status, r
            recv_bytes += len(raw)
            sent_bytes += len(r.raw_head) + len(r.body)
        scrape_req = rawhttp.build_request("GET", "/metrics")
        c.send(scrape_req)
        r1 = c.read_response()
        assert r1.status == 200, r1
    finally:
        c.close()
    m1 = Metrics(r1.body.decode())

    # Bytes: everything this test sent and received since the first scrape, exactly (the first
    # scrape's response was counted once sent; the second scrape's request before it ran).
    assert m1.counter("onnxd_http_received_bytes_total") - recv0 == recv_bytes + len(scrape_req)
    assert m1.counter("onnxd_http_sent_bytes_total") - sent0 == \
        sent_bytes + len(r0.raw_head) + len(r0.body)

    success = m1.counter("nv_inference_request_success", model)
    failure = m1.counter("nv_inference_request_failure", model)
    icount = m1.counter("nv_inference_count", model)
    ecount = m1.counter("nv_inference_exec_count", model)
    assert (success, failure) == (n_ok, n_fail)
    assert icount == sum(rows)
    assert 1 <= ecount <= icount
    assert ecount == n_ok  # one at a time: each ran alone
    assert m1.gauge("nv_inference_pending_request_count", model) == 0
    assert m1.gauge("onnxd_open_connections") >= 1
    for name in ("nv_inference_request_success", "nv_inference_count"):
        assert m1.counter(name, "two_out") == 0  # another model is untouched

    # Histograms.
    for name in HISTOGRAMS:
        check_histogram(m1, name, model)
    _, _, req_count = m1.histogram("onnxd_request_duration_us", model)
    # Every answered request that reached the model, failed ones included (a failed request
    # has a duration too); the per-stage ones only for requests that ran.
    assert req_count == n_ok + n_fail
    for name in HIST_STAT:
        assert m1.histogram(name, model)[2] == n_ok, name
    bs_buckets, bs_sum, bs_count = m1.histogram("onnxd_batch_size", model)
    assert bs_count == ecount and bs_sum == icount
    bs = dict(bs_buckets)
    assert bs["1"] == rows.count(1) and bs["2"] == rows.count(1) + rows.count(2), bs_buckets

    # The statistics extension says the same.
    st = model_stats(port, model)
    assert st["name"] == model and st["version"] == "1"
    assert st["inference_count"] == icount and st["execution_count"] == ecount
    inf = st["inference_stats"]
    assert inf["success"]["count"] == n_ok and inf["fail"]["count"] == n_fail
    for name, key in COUNTER_STAT.items():
        assert inf[key]["count"] == n_ok, key
        assert m1.counter(name, model) == inf[key]["ns"] // 1000, name
        hist = {v: k for k, v in HIST_STAT.items()}[key]
        hs = m1.histogram(hist, model)[1]
        # Histogram sums add each request's whole microseconds: at most 1 us short each.
        assert 0 <= inf[key]["ns"] / 1000 - hs <= n_ok, (name, inf[key]["ns"], hs)
    assert m1.counter("nv_inference_request_duration_us", model) == \
        (inf["success"]["ns"] + inf["fail"]["ns"]) // 1000
    total_ns = inf["success"]["ns"]
    assert total_ns >= inf["queue"]["ns"] + inf["compute_infer"]["ns"]
    sizes = {b["batch_size"]: b for b in st["batch_stats"]}
    assert {k: v["compute_infer"]["count"] for k, v in sizes.items()} == \
        {r: rows.count(r) for r in set(rows)}
    for b in st["batch_stats"]:
        for key in ("compute_input", "compute_infer", "compute_output"):
            assert b[key]["count"] == rows.count(b["batch_size"]) and b[key]["ns"] >= 0
    assert t_start_ms - 1000 <= st["last_inference"] <= time.time() * 1000 + 1000


def test_stats_routes(metrics_server):
    port = metrics_server.port
    every = http_get(port, "/v2/models/stats").json()["model_stats"]
    assert sorted((e["name"], e["version"]) for e in every) == [
        ("identity_fp32", "1"), ("slow", "1"), ("two_out", "1"), ("two_out", "2")]
    both = http_get(port, "/v2/models/two_out/stats").json()["model_stats"]
    assert sorted(e["version"] for e in both) == ["1", "2"]
    one = http_get(port, "/v2/models/two_out/versions/2/stats").json()["model_stats"]
    assert [(e["name"], e["version"]) for e in one] == [("two_out", "2")]
    for path in ("/v2/models/nope/stats", "/v2/models/two_out/versions/3/stats"):
        r = http_get(port, path)
        assert r.status == 404, (path, r)
    # Triton's shape: every key the official client and Triton's tools read.
    e = one[0]
    for k in ("name", "version", "last_inference", "inference_count", "execution_count",
              "inference_stats", "batch_stats"):
        assert k in e, k
    for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert set(e["inference_stats"][k]) == {"count", "ns"}, k


def test_official_client_statistics(metrics_server):
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(metrics_server.url)
    try:
        st = c.get_inference_statistics("identity_fp32")
        (e,) = st["model_stats"]
        assert e["name"] == "identity_fp32" and e["inference_count"] == model_stats(
            metrics_server.port, "identity_fp32")["inference_count"]
        st = c.get_inference_statistics("two_out", "2")
        assert [x["version"] for x in st["model_stats"]] == ["2"]
    finally:
        c.close()


def test_batching_shows_in_metrics(metrics_server):
    """16 concurrent requests on a batching model: fewer runs than rows, the batch-size
    histogram has runs of more than one row, and it agrees with batch_stats."""
    port = metrics_server.port
    rows = [1 + i % 2 for i in range(16)]
    xs = [np.full((r, 4), i, np.float32) for i, r in enumerate(rows)]
    res = run_threads([lambda i=i: infer(port, "two_out", [("x", xs[i])], outputs=["times2"])
                       for i in range(16)])
    for i, (r, _, outs) in enumerate(res):
        assert r.status == 200, r
        np.testing.assert_array_equal(outs["times2"], np.full((rows[i], 4), 2 * i, np.float32))
    # Without a version the highest (2) serves; version 1 saw nothing.
    m, _ = scrape(port)
    icount = m.counter("nv_inference_count", "two_out", "2")
    ecount = m.counter("nv_inference_exec_count", "two_out", "2")
    assert icount == sum(rows)
    assert ecount < 16, f"{ecount} runs for 16 concurrent requests"
    buckets, bsum, bcount = check_histogram(m, "onnxd_batch_size", "two_out", "2")
    assert bcount == ecount and bsum == icount
    assert dict(buckets)["1"] < bcount, f"no run with more than one row: {buckets}"
    st = model_stats(port, "two_out", 2)
    assert sum(b["compute_infer"]["count"] for b in st["batch_stats"]) == ecount
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in st["batch_stats"]) == icount
    assert m.counter("nv_inference_count", "two_out", "1") == 0
    assert model_stats(port, "two_out", 1)["execution_count"] == 0


def test_pending_and_queue_time(metrics_server):
    """While a long run holds the only instance, the requests behind it show in
    nv_inference_pending_request_count, and their wait shows in the queue time."""
    port = metrics_server.port
    import threading

    def slow(i, iters):
        return infer(port, "slow", [("x", np.full((1, 4), i, np.float32)),
                                    ("iters", np.full((1, 1), iters, np.int64))])

    before = model_stats(port, "slow")
    out = {}
    t = [threading.Thread(target=lambda: out.setdefault("long", slow(0, 100)))]
    t[0].start()
    time.sleep(0.05)
    for i in (1, 2):
        t.append(threading.Thread(target=lambda i=i: out.setdefault(i, slow(i, 1))))
        t[-1].start()
    m_seen = wait_until(lambda: (lambda m: m if m.gauge("nv_inference_pending_request_count",
                                                        "slow") == 2 else None)(scrape(port)[0]),
                        10, "2 pending requests")
    assert m_seen.gauge("nv_inference_pending_request_count", "slow") == 2
    for th in t:
        th.join(60)
    for k, (r, _, _) in out.items():
        assert r.status == 200, (k, r)
    m, _ = scrape(port)
    assert m.gauge("nv_inference_pending_request_count", "slow") == 0
    after = model_stats(port, "slow")
    def d(k):
        return after["inference_stats"][k]["ns"] - before["inference_stats"][k]["ns"]
    # The two short requests arrived ~50 ms into the long run and waited for the rest of it:
    # together about twice the long run's time, so at least the run time less a margin.
    assert d("queue") > 0 and d("queue") >= d("compute_infer") - 0.2e9, \
        (d("queue"), d("compute_infer"))
    assert m.histogram("onnxd_queue_duration_us", "slow")[2] == \
        after["inference_stats"]["queue"]["count"]


def test_responses_by_status(metrics_server):
    """onnxd_http_responses_total{code}: every response counted once under its status, whatever
    the endpoint; a status not seen yet has no sample."""
    port = metrics_server.port

    def counts():
        m, _ = scrape(port)
        fam = m.family("onnxd_http_responses", "counter")  # the parser drops _total
        return {s.labels["code"]: s.value for s in fam.samples
                if s.name == "onnxd_http_responses_total"}

    before = counts()
    assert "418" not in before and "other" not in before, before
    for _ in range(3):
        assert http_get(port, "/v2/models/no_such_model").status == 404
    assert http_get(port, "/v2/health/ready").status == 200
    r, _, _ = infer(port, "identity_fp32", [("wrong_name", np.zeros((1, 4), np.float32))])
    assert r.status == 400, r
    after = counts()  # this scrape's own 200 is counted after its text is rendered
    assert after.get("404", 0) - before.get("404", 0) == 3, (before, after)
    assert after.get("400", 0) - before.get("400", 0) == 1, (before, after)
    # the health check and the first scrape, at least (other tests' requests may run too)
    assert after["200"] - before["200"] >= 2, (before, after)
