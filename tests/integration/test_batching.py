"""Dynamic batching, backpressure, deadlines, client disconnects, drain at SIGTERM and the
per-model configuration (config.json), against dedicated servers with small repositories of
their own (see the batching section of conftest.py for the models).

Timing: the machine running these tests may be small and busy, and the server may be a
sanitizer build. The tests therefore order events by observation (a probe request that is seen
queued proves the instance is busy) rather than by sleeping, and every time limit is generous.
The "slow" model's run time is chosen per request (its iters input: ~1-6 ms per iteration).
"""

import json
import threading
import time

import numpy as np
import pytest

import rawhttp
from conftest import (build_repo, dedicated_server, decode_outputs, http_get, infer, infer_body,
                      model_stats, run_threads, slow_model_bytes, two_out_model_bytes)

DELAY_US = 20000  # max_queue_delay_microseconds of the batching models
MAX_BATCH = 16
LONG_DELAY_US = 800_000  # pref, full4: a delay long enough to tell "closed early" from "waited"
BATCH_CFG = {"max_batch_size": MAX_BATCH, "instance_count": 1,
             "dynamic_batching": {"max_queue_delay_microseconds": DELAY_US}}

# Reference tolerance for FP32 results of merged runs against in-process ONNX Runtime on the
# request's rows alone. A merged run is a Gemm with more rows, for which ONNX Runtime (MLAS)
# may choose another kernel and another accumulation order than for 1-3 rows, so the last bits
# may differ; relative 1e-5 is ~80 float32 ulps, far below any real mix-up (different inputs
# give outputs that differ by orders of magnitude more, which the test checks too).
RTOL, ATOL = 1e-5, 1e-6

observed = {}  # measured facts, printed at the end of the module (pytest -s) for the report


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if observed:
        print("\n[test_batching] observed:", json.dumps(observed, sort_keys=True))


def batch_sizes(stats):
    """{batch size: runs} from a model_stats entry (batch_stats compute_infer counts)."""
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}


def diff_counts(after, before):
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# ---- servers -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch_repo(tmp_path_factory, mlp_medium, test_models):
    return build_repo(tmp_path_factory.mktemp("batch-repo"), {
        "mlp_medium": {"model": mlp_medium, "config": BATCH_CFG},
        "identity_fp32": {"model": test_models / "identity_fp32/1/model.onnx",
                          "config": BATCH_CFG},
        "two_out": {"model": two_out_model_bytes(), "config": BATCH_CFG},
        "identity_bytes": {"model": test_models / "identity_bytes/1/model.onnx",
                           "config": BATCH_CFG},
        "passthrough_fp32": {"model": test_models / "passthrough_fp32/1/model.onnx",
                             "config": BATCH_CFG},
        "pref": {"model": two_out_model_bytes(),
                 "config": {"max_batch_size": 8, "instance_count": 1, "dynamic_batching": {
                     "max_queue_delay_microseconds": LONG_DELAY_US, "preferred_batch_size": [4]}}},
        "full4": {"model": two_out_model_bytes(),
                  "config": {"max_batch_size": 4, "instance_count": 1, "dynamic_batching": {
                      "max_queue_delay_microseconds": LONG_DELAY_US}}},
        "small_batch": {"model": two_out_model_bytes(),
                        "config": {"max_batch_size": 4, "instance_count": 1,
                                   "dynamic_batching": {"max_queue_delay_microseconds": DELAY_US}}},
    })


@pytest.fixture(scope="module")
def batch_server(server_factory, batch_repo):
    yield from dedicated_server(server_factory, batch_repo, ["--infer-threads", "2"], "batch")


@pytest.fixture(scope="module")
def mlp_session(mlp_medium):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(str(mlp_medium), o, providers=["CPUExecutionProvider"])


# ---- 1. batching correctness ----------------------------------------------------------------

N_CLIENTS = 48


def test_batched_outputs_match_unbatched_reference(batch_server, mlp_session):
    """48 concurrent clients, 1-3 rows each, distinct inputs, JSON and binary encodings mixed:
    every client gets exactly its own rows back, equal to ONNX Runtime on those rows alone,
    and the server really merged requests (fewer runs than requests, a batch over 1 row)."""
    port = batch_server.port
    rows = [(1, 2, 3, 1)[i % 4] for i in range(N_CLIENTS)]
    xs = [np.random.default_rng(1000 + i).standard_normal((r, 256)).astype(np.float32)
          for i, r in enumerate(rows)]
    refs = [mlp_session.run(None, {"input": x})[0] for x in xs]
    # A mix-up must be detectable: the references of any two clients with the same number of
    # rows differ by several times the tolerance (other pairs differ in shape).
    for i in range(N_CLIENTS):
        for j in range(i):
            if rows[i] == rows[j]:
                gap = np.abs(refs[i] - refs[j]).max()
                assert gap > 5 * (ATOL + RTOL), f"clients {i}, {j}: outputs too similar ({gap})"

    # Encodings: JSON in/out, binary in/out, binary in + JSON out, JSON in + binary out.
    modes = [((i % 4) in (1, 2), (i % 4) in (1, 3)) for i in range(N_CLIENTS)]
    reqs = [infer_body([("input", x)], outputs=["output"] if i % 3 else None, binary_in=bi,
                       binary_out=bo) for i, (x, (bi, bo)) in enumerate(zip(xs, modes))]
    before = model_stats(port, "mlp_medium")

    def client(i):
        body, headers = reqs[i]
        c = rawhttp.RawConn(port, timeout=60)
        try:
            c.request("POST", "/v2/models/mlp_medium/infer", body, headers)
            return c.read_response()
        finally:
            c.close()

    resps = run_threads([lambda i=i: client(i) for i in range(N_CLIENTS)])
    worst = 0.0
    for i, r in enumerate(resps):
        assert r.status == 200, (i, r)
        bin_out = r.header("Inference-Header-Content-Length") is not None
        assert bin_out == modes[i][1], f"client {i}: binary output {bin_out}, asked {modes[i][1]}"
        head, outs = decode_outputs(r)
        assert head["model_name"] == "mlp_medium"
        assert list(outs) == ["output"]
        y = outs["output"]
        assert y.shape == (rows[i], 1), f"client {i}: shape {y.shape}, sent {rows[i]} rows"
        np.testing.assert_allclose(y, refs[i], rtol=RTOL, atol=ATOL,
                                   err_msg=f"client {i} ({rows[i]} rows)")
        worst = max(worst, float(np.abs(y.astype(np.float64) - refs[i]).max()))
    observed["mlp_medium_max_abs_diff_vs_alone"] = worst

    after = model_stats(port, "mlp_medium")
    sizes = diff_counts(batch_sizes(after), batch_sizes(before))
    d_inf = after["inference_count"] - before["inference_count"]
    d_exec = after["execution_count"] - before["execution_count"]
    d_ok = (after["inference_stats"]["success"]["count"]
            - before["inference_stats"]["success"]["count"])
    observed["mlp_medium_batch_sizes"] = sizes
    observed["mlp_medium_runs_for_48_requests"] = d_exec
    assert d_ok == N_CLIENTS
    assert d_inf == sum(rows), f"inference_count grew by {d_inf}, {sum(rows)} rows were sent"
    assert sum(b * n for b, n in sizes.items()) == sum(rows), sizes
    assert sum(sizes.values()) == d_exec, (sizes, d_exec)
    assert d_exec < N_CLIENTS, f"{d_exec} runs for {N_CLIENTS} requests: nothing was merged"
    assert max(sizes) > 1 and max(sizes) <= MAX_BATCH, sizes


def test_merge_only_same_inner_shape(batch_server):
    """identity_fp32 is [N, -1]: requests with 3 and 5 columns arrive together. Each gets its
    own data back (identity: exactly), and no run mixes column counts (which would fail or
    garble). Same-shape requests still merge."""
    port = batch_server.port
    specs = [(1 + i % 2, (3, 5, 7)[i % 3]) for i in range(24)]  # (rows, cols)
    xs = [(np.arange(r * c, dtype=np.float32).reshape(r, c) + 1000 * i) for i, (r, c) in
          enumerate(specs)]
    before = model_stats(port, "identity_fp32")
    res = run_threads([lambda x=x, i=i: infer(port, "identity_fp32", [("INPUT0", x)],
                                              binary_in=i % 2 == 0, binary_out=i % 3 == 0)
                       for i, x in enumerate(xs)])
    for i, (r, _, outs) in enumerate(res):
        assert r.status == 200, (i, r)
        np.testing.assert_array_equal(outs["OUTPUT0"], xs[i], err_msg=f"request {i} {specs[i]}")
    after = model_stats(port, "identity_fp32")
    sizes = diff_counts(batch_sizes(after), batch_sizes(before))
    observed["identity_mixed_shapes_batch_sizes"] = sizes
    assert after["inference_count"] - before["inference_count"] == sum(r for r, _ in specs)
    assert after["execution_count"] - before["execution_count"] < len(specs), sizes


def test_merge_only_same_requested_outputs(batch_server):
    """two_out has outputs plus1 and times2: concurrent requests asking for one, the other or
    both each get exactly the outputs they named, with their own values."""
    port = batch_server.port
    wanted = [["plus1"], ["times2"], None, ["times2", "plus1"]]
    xs = [np.full((1 + i % 3, 4), i, dtype=np.float32) + np.arange(4, dtype=np.float32) / 8
          for i in range(32)]
    res = run_threads([lambda i=i: infer(port, "two_out", [("x", xs[i])], outputs=wanted[i % 4],
                                         binary_out=i % 2 == 1)
                       for i in range(32)])
    for i, (r, head, outs) in enumerate(res):
        assert r.status == 200, (i, r)
        names = [o["name"] for o in head["outputs"]]
        assert names == (wanted[i % 4] or ["plus1", "times2"]), (i, names)
        for n in names:
            want = xs[i] + 1 if n == "plus1" else xs[i] * 2
            np.testing.assert_array_equal(outs[n], want, err_msg=f"request {i} output {n}")


def test_merged_output_that_aliases_input(batch_server):
    """passthrough_fp32 returns its input as an output (ONNX Runtime hands that output back in
    the input buffer). In a merged run that buffer is the batch's: every request must still
    get its own values."""
    port = batch_server.port
    xs = [np.arange(1 + i % 3, dtype=np.float32) + 100 * i for i in range(24)]
    before = model_stats(port, "passthrough_fp32")
    res = run_threads([lambda i=i: infer(port, "passthrough_fp32", [("INPUT0", xs[i])],
                                         binary_in=i % 2 == 0, binary_out=i % 4 < 2)
                       for i in range(24)])
    for i, (r, head, outs) in enumerate(res):
        assert r.status == 200, (i, r)
        assert [o["name"] for o in head["outputs"]] == ["OUTPUT0", "INPUT0"]
        np.testing.assert_array_equal(outs["OUTPUT0"], xs[i], err_msg=f"request {i} OUTPUT0")
        np.testing.assert_array_equal(outs["INPUT0"], xs[i], err_msg=f"request {i} INPUT0")
    after = model_stats(port, "passthrough_fp32")
    sizes = diff_counts(batch_sizes(after), batch_sizes(before))
    observed["passthrough_batch_sizes"] = sizes
    assert max(sizes) > 1, f"no merged run, the test proved nothing: {sizes}"


def _bytes_request(items, rows, binary_in, binary_out):
    """An identity_bytes request for rows x (len(items) // rows) strings."""
    from oip import bytes_tensor

    shape = [rows, len(items) // rows]
    t = {"name": "INPUT0", "datatype": "BYTES", "shape": shape}
    head = {"inputs": [t], "outputs": [{"name": "OUTPUT0",
                                        "parameters": {"binary_data": binary_out}}]}
    if binary_in:
        blob = bytes_tensor(items)
        t["parameters"] = {"binary_data_size": len(blob)}
        hj = json.dumps(head).encode()
        return hj + blob, [f"Inference-Header-Content-Length: {len(hj)}"]
    t["data"] = [b.decode() for b in items]
    return json.dumps(head).encode(), ["Content-Type: application/json"]


def _bytes_response(r):
    from oip import split_binary_response

    if r.header("Inference-Header-Content-Length") is None:
        (o,) = r.json()["outputs"]
        return o["shape"], [d.encode() for d in o["data"]]
    head, blobs = split_binary_response(r)
    (o,) = head["outputs"]
    blob, items = blobs["OUTPUT0"], []
    while blob:
        n = int.from_bytes(blob[:4], "little")
        items.append(blob[4:4 + n])
        blob = blob[4 + n:]
    return o["shape"], items


def test_bytes_requests_merge(batch_server):
    """BYTES tensors (strings of different lengths, empty ones, non-ASCII) merged from
    concurrent JSON and binary requests come back to each client unchanged."""
    port = batch_server.port
    reqs = []
    for i in range(24):
        rows = 1 + i % 2
        items = [(f"c{i}r{k}" + "é" * (k % 3) + "x" * (i % 5)).encode() if (i + k) % 7
                 else b"" for k in range(rows * 2)]
        reqs.append((items, rows, i % 2 == 0, i % 3 == 0))
    before = model_stats(port, "identity_bytes")

    def client(i):
        items, rows, bi, bo = reqs[i]
        body, headers = _bytes_request(items, rows, bi, bo)
        c = rawhttp.RawConn(port, timeout=60)
        try:
            c.request("POST", "/v2/models/identity_bytes/infer", body, headers)
            return c.read_response()
        finally:
            c.close()

    res = run_threads([lambda i=i: client(i) for i in range(24)])
    for i, r in enumerate(res):
        assert r.status == 200, (i, r)
        items, rows, _, _ = reqs[i]
        shape, got = _bytes_response(r)
        assert shape == [rows, 2] and got == items, (i, shape, got, items)
    sizes = diff_counts(batch_sizes(model_stats(port, "identity_bytes")), batch_sizes(before))
    observed["bytes_batch_sizes"] = sizes
    assert max(sizes) > 1, sizes


def test_timeout_shorter_than_batch_delay(batch_server):
    """On pref (delay 0.8 s) a lone request with a 100 ms timeout expires while it waits for
    the batch to fill: 503 naming the timeout, and it never runs."""
    port = batch_server.port
    before = model_stats(port, "pref")
    t0 = time.monotonic()
    r, _, _ = infer(port, "pref", [("x", np.ones((1, 4), np.float32))],
                    parameters={"timeout": 100_000})
    waited = time.monotonic() - t0
    assert r.status == 503, r
    assert r.error() == "request timeout expired before the model ran"
    assert 0.09 <= waited < LONG_DELAY_US / 1e6, waited
    assert model_stats(port, "pref")["execution_count"] == before["execution_count"]


def test_batches_never_exceed_max_batch_size(batch_server):
    """small_batch has max_batch_size 4: 3-row requests cannot pair up, 1-row ones fill up to
    4; no run has more than 4 rows and every request gets its own rows."""
    port = batch_server.port
    rows = [(3, 1, 1, 2)[i % 4] for i in range(24)]
    xs = [np.full((r, 4), i, dtype=np.float32) for i, r in enumerate(rows)]
    before = model_stats(port, "small_batch")
    res = run_threads([lambda i=i: infer(port, "small_batch", [("x", xs[i])], outputs=["plus1"])
                       for i in range(24)])
    for i, (r, _, outs) in enumerate(res):
        assert r.status == 200, (i, r)
        np.testing.assert_array_equal(outs["plus1"], xs[i] + 1, err_msg=f"request {i}")
    after = model_stats(port, "small_batch")
    sizes = diff_counts(batch_sizes(after), batch_sizes(before))
    observed["small_batch_sizes"] = sizes
    assert max(sizes) <= 4, sizes
    assert sum(b * n for b, n in sizes.items()) == sum(rows)


def test_batch_closes_at_delay_preferred_size_or_full(batch_server):
    """With max_queue_delay 0.8 s: a lone request waits the delay and then runs alone; four
    1-row requests reaching preferred_batch_size 4 run at once; two 2-row requests filling
    max_batch_size 4 run at once."""
    port = batch_server.port
    delay = LONG_DELAY_US / 1e6

    def timed(model, i, rows):
        t0 = time.monotonic()
        r, _, outs = infer(port, model, [("x", np.full((rows, 4), i, np.float32))],
                           outputs=["plus1"])
        assert r.status == 200, r
        np.testing.assert_array_equal(outs["plus1"], np.full((rows, 4), i + 1, np.float32))
        return time.monotonic() - t0

    b_pref, b_full = batch_sizes(model_stats(port, "pref")), batch_sizes(model_stats(port, "full4"))
    lone = timed("pref", 0, 1)
    assert delay * 0.9 <= lone < delay + 2.0, f"lone request answered after {lone:.3f} s"
    pref = run_threads([lambda i=i: timed("pref", i, 1) for i in range(4)])
    full = run_threads([lambda i=i: timed("full4", i, 2) for i in range(2)])
    observed["lone_request_s"] = round(lone, 3)
    observed["preferred_close_max_s"] = round(max(pref), 3)
    observed["full_close_max_s"] = round(max(full), 3)
    assert max(pref) < delay * 0.6, f"a preferred-size batch waited {max(pref):.3f} s"
    assert max(full) < delay * 0.6, f"a full batch waited {max(full):.3f} s"
    assert diff_counts(batch_sizes(model_stats(port, "pref")), b_pref) == {1: 1, 4: 1}
    assert diff_counts(batch_sizes(model_stats(port, "full4")), b_full) == {4: 1}


def test_request_over_max_batch_size_refused(batch_server):
    """A request whose batch dimension exceeds max_batch_size (small_batch: 4) is refused
    with 400 naming max_batch_size, as Triton does ("inference request batch-size must be <=
    4 for 'small_batch'"), rather than run as a larger batch than the model was configured
    for; max_batch_size rows exactly are fine."""
    port = batch_server.port
    before = model_stats(port, "small_batch")
    r, _, _ = infer(port, "small_batch", [("x", np.ones((6, 4), np.float32))])
    assert r.status == 400, r
    assert "max_batch_size" in r.error() or "batch-size" in r.error(), r.error()
    after = model_stats(port, "small_batch")
    assert after["execution_count"] == before["execution_count"]
    r, _, outs = infer(port, "small_batch", [("x", np.ones((4, 4), np.float32))])
    assert r.status == 200, r
    np.testing.assert_array_equal(outs["plus1"], np.full((4, 4), 2, np.float32))


# ---- the slow model: backpressure, deadlines, disconnects ------------------------------------

SLOW_CFG = {"max_batch_size": 0, "instance_count": 1}
DTO_US = 200_000  # default_timeout_microseconds of slow_dto


def slow_repo_models():
    slow = slow_model_bytes()
    return {
        "slow": {"model": slow, "config": SLOW_CFG},
        "slow_q": {"model": slow, "config": {**SLOW_CFG,
                                             "dynamic_batching": {"max_queue_size": 2}}},
        "slow_batch": {"model": slow, "config": {"max_batch_size": 8, "instance_count": 1}},
        "slow_dto": {"model": slow, "config": {
            **SLOW_CFG, "dynamic_batching": {"default_timeout_microseconds": DTO_US}}},
    }


@pytest.fixture(scope="module")
def slow_repo(tmp_path_factory):
    return build_repo(tmp_path_factory.mktemp("slow-repo"), slow_repo_models())


@pytest.fixture(scope="module")
def slow_server(server_factory, slow_repo):
    yield from dedicated_server(server_factory, slow_repo, ["--infer-threads", "2"], "slow")


@pytest.fixture(scope="module")
def iter_s(slow_server):
    """Seconds per iteration of the slow model on this machine now (from the server's own
    compute_infer statistics of a 20-iteration run)."""
    port = slow_server.port
    slow_infer(port, "slow", 0, 2)  # first run: allocations
    before = model_stats(port, "slow")["inference_stats"]["compute_infer"]["ns"]
    r, _, _ = slow_infer(port, "slow", 0, 20)
    assert r.status == 200, r
    after = model_stats(port, "slow")["inference_stats"]["compute_infer"]["ns"]
    s = (after - before) / 1e9 / 20
    observed["slow_model_ms_per_iteration"] = round(s * 1e3, 2)
    return s


def iters_for(iter_s, seconds):
    return max(5, int(seconds / iter_s))


def slow_x(i):
    return np.arange(4, dtype=np.float32).reshape(1, 4) + 10 * i


def slow_body(i, iters, parameters=None):
    return infer_body([("x", slow_x(i)), ("iters", np.full((1, 1), iters, np.int64))],
                      parameters=parameters)


def slow_infer(port, model, i, iters, parameters=None):
    return infer(port, model, [("x", slow_x(i)), ("iters", np.full((1, 1), iters, np.int64))],
                 parameters=parameters)


def pending(port, model):
    from conftest import metric_value

    return int(metric_value(port, "nv_inference_pending_request_count", model))


class Background:
    """One request on its own connection and thread; .result() -> (Response or exception,
    seconds from the request's last byte to the response)."""

    def __init__(self, port, model, body_headers, timeout=60.0):
        self.port, self.model = port, model
        self.body, self.headers = body_headers
        self.timeout = timeout
        self.conn = rawhttp.RawConn(port, timeout=timeout)
        self._out = None
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        try:
            self.conn.request("POST", f"/v2/models/{self.model}/infer", self.body, self.headers)
            t0 = time.monotonic()
            try:
                r = self.conn.read_response()
            except (rawhttp.Closed, OSError) as e:
                r = e
            self._out = (r, time.monotonic() - t0)
        except OSError as e:  # the connection was refused or reset while sending
            self._out = (e, 0.0)

    def result(self, timeout=None):
        self._t.join(self.timeout if timeout is None else timeout)
        assert not self._t.is_alive(), f"no response within {self.timeout} s"
        self.conn.close()
        return self._out


def assert_slow_ok(resp, i):
    assert isinstance(resp, rawhttp.Response) and resp.status == 200, resp
    _, outs = decode_outputs(resp)
    np.testing.assert_array_equal(outs["y"], slow_x(i))


def start_busy(port, model, iter_s, seconds=0.6):
    """Starts a long request and waits until a short probe request is seen queued behind it
    (then an instance is busy and stays busy for a while). Returns (long, probe)."""
    from conftest import wait_until

    long = Background(port, model, slow_body(0, iters_for(iter_s, seconds)))
    time.sleep(0.05)
    probe = Background(port, model, slow_body(1, 1))
    wait_until(lambda: pending(port, model) >= 1, 10, f"the probe request queued on {model}")
    return long, probe


def test_delay_zero_merges_only_while_busy(slow_server, iter_s):
    """slow_batch: max_batch_size 8, delay 0 (the default). Requests sent one after another
    to an idle instance each run alone; three that queue behind a long run are merged into
    one run of 3 rows when it ends."""
    from conftest import wait_until

    port = slow_server.port
    before = batch_sizes(model_stats(port, "slow_batch"))
    for i in range(3):
        r, _, outs = slow_infer(port, "slow_batch", i, 1)
        assert r.status == 200, r
        np.testing.assert_array_equal(outs["y"], slow_x(i))
    long = Background(port, "slow_batch", slow_body(10, iters_for(iter_s, 0.5)))
    time.sleep(0.05)
    queued = [Background(port, "slow_batch", slow_body(11 + k, 1)) for k in range(3)]
    wait_until(lambda: pending(port, "slow_batch") == 3, 10, "3 requests queued on slow_batch")
    assert_slow_ok(long.result()[0], 10)
    for k, b in enumerate(queued):
        assert_slow_ok(b.result()[0], 11 + k)
    assert diff_counts(batch_sizes(model_stats(port, "slow_batch")), before) == {1: 4, 3: 1}


def test_queue_full_burst(slow_server, iter_s):
    """slow_q: max_queue_size 2, one instance. 20 requests at once: the ones beyond the queue
    get 503 with Retry-After at once; every accepted one succeeds with its own output; the
    server serves normally afterwards."""
    port = slow_server.port
    n, it = 20, iters_for(iter_s, 0.15)
    before = model_stats(port, "slow_q")

    def client(i):
        body, headers = slow_body(i, it)
        c = rawhttp.RawConn(port, timeout=60)
        try:
            c.request("POST", "/v2/models/slow_q/infer", body, headers)
            t0 = time.monotonic()
            r = c.read_response()
            return r, time.monotonic() - t0
        finally:
            c.close()

    res = run_threads([lambda i=i: client(i) for i in range(n)])
    ok = [i for i, (r, _) in enumerate(res) if r.status == 200]
    refused = [i for i, (r, _) in enumerate(res) if r.status == 503]
    assert len(ok) + len(refused) == n, [r for r, _ in res if r.status not in (200, 503)]
    assert refused, "no request was refused with a queue of 2"
    assert len(ok) >= 1
    for i in ok:
        assert_slow_ok(res[i][0], i)
    for i in refused:
        r = res[i][0]
        assert r.header("Retry-After") is not None and r.header("Retry-After").isdigit(), r
        msg = r.error()
        assert "queue" in msg and "full" in msg, msg
    times = sorted(res[i][1] for i in refused)
    observed["queue_burst_accepted_of_20"] = len(ok)
    observed["queue_burst_reject_ms_median_max"] = [round(times[len(times) // 2] * 1e3, 1),
                                                    round(times[-1] * 1e3, 1)]
    assert times[len(times) // 2] < 0.05, f"median rejection {times[len(times) // 2]:.3f} s"
    assert times[-1] < 0.25, f"slowest rejection {times[-1]:.3f} s"
    after = model_stats(port, "slow_q")
    assert after["execution_count"] - before["execution_count"] == len(ok)
    assert (after["inference_stats"]["fail"]["count"]
            - before["inference_stats"]["fail"]["count"]) == len(refused)
    r, _, outs = slow_infer(port, "slow_q", 7, 1)
    assert r.status == 200, r
    np.testing.assert_array_equal(outs["y"], slow_x(7))


def test_queue_full_exact_bound(slow_server, iter_s):
    """slow_q: one run in progress and 2 requests waiting fill it: every further request, 18
    sent at once, is refused at once (well before the run ends), and the 3 admitted ones all
    run. Rejection time is measured from the request's last byte to the response."""
    port = slow_server.port
    before = model_stats(port, "slow_q")
    long, probe = start_busy(port, "slow_q", iter_s, seconds=0.8)
    third = Background(port, "slow_q", slow_body(2, 1))
    from conftest import wait_until

    wait_until(lambda: pending(port, "slow_q") == 2, 10, "2 requests queued on slow_q")
    t_burst = time.monotonic()

    def client(i):
        body, headers = slow_body(i, 1)
        c = rawhttp.RawConn(port, timeout=30)
        try:
            c.request("POST", "/v2/models/slow_q/infer", body, headers)
            t0 = time.monotonic()
            r = c.read_response()
            return r, time.monotonic() - t0
        finally:
            c.close()

    res = run_threads([lambda i=i: client(i) for i in range(10, 28)])
    burst_s = time.monotonic() - t_burst
    assert [r.status for r, _ in res] == [503] * 18, [r for r, _ in res if r.status != 503]
    for r, _ in res:
        assert r.header("Retry-After") == "1", r
    times = sorted(t for _, t in res)
    observed["queue_full_reject_ms_median_max"] = [round(times[9] * 1e3, 1),
                                                   round(times[-1] * 1e3, 1)]
    assert times[9] < 0.05, f"median rejection took {times[9] * 1e3:.1f} ms"
    assert times[-1] < 0.25, f"slowest rejection took {times[-1] * 1e3:.1f} ms"
    lr, lt = long.result()
    assert_slow_ok(lr, 0)
    assert lt > burst_s, "the long run ended before the burst did: the test proved nothing"
    assert_slow_ok(probe.result()[0], 1)
    assert_slow_ok(third.result()[0], 2)
    after = model_stats(port, "slow_q")
    assert after["execution_count"] - before["execution_count"] == 3
    assert pending(port, "slow_q") == 0
    r, _, _ = slow_infer(port, "slow_q", 3, 1)
    assert r.status == 200, r


def test_timeout_parameter_expires_in_queue(slow_server, iter_s):
    """A request with "timeout": 1000 (1 ms) queued behind a busy instance gets 503 naming the
    timeout and is never run; one with a generous timeout waits and succeeds."""
    port = slow_server.port
    before = model_stats(port, "slow")
    long, probe = start_busy(port, "slow", iter_s)
    t0 = time.monotonic()
    r, _, _ = slow_infer(port, "slow", 5, 1, parameters={"timeout": 1000})
    quick = time.monotonic() - t0
    assert r.status == 503, r
    assert r.error() == "request timeout expired before the model ran"
    patient = Background(port, "slow", slow_body(6, 1, parameters={"timeout": 60_000_000}))
    lr, lt = long.result()
    assert_slow_ok(lr, 0)
    assert quick < lt, "the timed-out request was answered only after the long run"
    assert_slow_ok(probe.result()[0], 1)
    assert_slow_ok(patient.result()[0], 6)
    after = model_stats(port, "slow")
    assert after["execution_count"] - before["execution_count"] == 3  # long, probe, patient
    assert after["inference_count"] - before["inference_count"] == 3
    assert (after["inference_stats"]["fail"]["count"]
            - before["inference_stats"]["fail"]["count"]) == 1


def test_default_timeout_from_config(slow_server, iter_s):
    """slow_dto: default_timeout_microseconds 200000 and no timeout in the request: queued
    behind a long run, it fails with the same 503 after ~200 ms and never runs."""
    port = slow_server.port
    before = model_stats(port, "slow_dto")
    long = Background(port, "slow_dto", slow_body(0, iters_for(iter_s, 1.2)))
    time.sleep(0.1)
    t0 = time.monotonic()
    r, _, _ = slow_infer(port, "slow_dto", 5, 1)
    waited = time.monotonic() - t0
    assert r.status == 503, r
    assert r.error() == "request timeout expired before the model ran"
    assert waited >= DTO_US / 1e6 * 0.9, f"refused after {waited:.3f} s, before its deadline"
    lr, lt = long.result()
    assert_slow_ok(lr, 0)
    after = model_stats(port, "slow_dto")
    assert after["execution_count"] - before["execution_count"] == 1
    observed["default_timeout_refused_after_ms"] = round(waited * 1e3, 1)


def test_client_disconnect_while_queued(slow_server, iter_s):
    """Requests whose clients hang up while they wait in the queue are dropped, not run; the
    server keeps serving and its connection count comes back down."""
    from conftest import metric_value, wait_until

    port = slow_server.port
    before = model_stats(port, "slow")
    conns_before = metric_value(port, "onnxd_open_connections")
    long, probe = start_busy(port, "slow", iter_s)
    gone = []
    for i in range(3):
        c = rawhttp.RawConn(port)
        body, headers = slow_body(20 + i, 1)
        c.request("POST", "/v2/models/slow/infer", body, headers)
        gone.append(c)
    wait_until(lambda: pending(port, "slow") == 4, 10, "4 requests queued")
    for k, c in enumerate(gone):
        c.close(reset=k == 0)  # one RST, two FIN
    lr, _ = long.result()
    assert_slow_ok(lr, 0)
    assert_slow_ok(probe.result()[0], 1)
    wait_until(lambda: pending(port, "slow") == 0, 10, "the queue to empty")
    after = model_stats(port, "slow")
    assert after["execution_count"] - before["execution_count"] == 2, \
        "requests of clients that had gone were run"
    assert after["inference_stats"]["success"]["count"] - \
        before["inference_stats"]["success"]["count"] == 2
    r, _, _ = slow_infer(port, "slow", 9, 1)
    assert r.status == 200, r
    wait_until(lambda: metric_value(port, "onnxd_open_connections") <= conns_before, 5,
               "open connections to come back down")


# ---- drain at SIGTERM --------------------------------------------------------------------------

def _refused_or_503(port):
    """True when a new connection is refused, or answered 503 and closed (draining)."""
    try:
        c = rawhttp.RawConn(port, timeout=2)
    except OSError:
        return True
    try:
        c.request("GET", "/v2/health/ready")
        r = c.read_response(timeout=2)
        return r.status == 503
    except (rawhttp.Closed, OSError):
        return True
    finally:
        c.close()


def test_drain_under_load(server_factory, tmp_path, iter_s):
    """SIGTERM with one run in progress and three waiting: all four complete with 200 and
    their own outputs; readiness turns 503 and a new inference request gets 503 (both sent on
    connections opened before the signal, as partial requests completed after it, since the
    listener stops accepting); new connections are refused; an idle keep-alive connection is
    closed; the process exits 0 within --drain-timeout-ms."""
    drain_ms = 20000
    repo = build_repo(tmp_path / "repo",
                      {"slow": {"model": slow_model_bytes(), "config": SLOW_CFG}})
    s = server_factory(repo, ["--infer-threads", "2", "--drain-timeout-ms", str(drain_ms)],
                       name="drain")
    port = s.port
    from conftest import wait_until

    reqs = [Background(port, "slow", slow_body(0, iters_for(iter_s, 0.4)))]
    time.sleep(0.05)
    reqs += [Background(port, "slow", slow_body(i, iters_for(iter_s, 0.15))) for i in (1, 2, 3)]
    wait_until(lambda: pending(port, "slow") == 3, 10, "3 requests queued")
    idle = rawhttp.RawConn(port)
    idle.request("GET", "/v2/health/live")
    assert idle.read_response().status == 200
    ready_head = rawhttp.build_request("GET", "/v2/health/ready")
    late_infer = rawhttp.build_request("POST", "/v2/models/slow/infer", *slow_body(9, 1))
    part_ready, part_infer = rawhttp.RawConn(port), rawhttp.RawConn(port)
    part_ready.send(ready_head[:-2])
    part_infer.send(late_infer[:20])
    time.sleep(0.05)  # let the server read the partial heads

    t_sig = time.monotonic()
    s.terminate()
    wait_until(lambda: _refused_or_503(port), 5, "the listener to stop accepting")
    part_ready.send(ready_head[-2:])
    r = part_ready.read_response()
    assert r.status == 503, f"readiness during the drain: {r}"
    part_infer.send(late_infer[20:])
    r = part_infer.read_response()
    assert r.status == 503, f"new inference during the drain: {r}"
    assert "shutting down" in r.error()
    assert idle.closed_by_peer(timeout=5), "idle keep-alive connection left open by the drain"

    for i, b in enumerate(reqs):
        resp, _ = b.result()
        assert_slow_ok(resp, i)
    rc = s.wait_exit(timeout=drain_ms / 1000 + 10)
    took = time.monotonic() - t_sig
    for c in (idle, part_ready, part_infer):
        c.close()
    assert rc == 0, f"exit status {rc} after SIGTERM\n{s.log_tail()}"
    assert took < drain_ms / 1000, f"exit {took:.2f} s after SIGTERM"
    observed["drain_under_load_exit_s"] = round(took, 2)


def test_drain_deadline_stops_remaining_work(server_factory, tmp_path, iter_s):
    """--drain-timeout-ms 300 with a run of ~1.5 s in progress and three of ~1 s waiting: at the
    deadline the run is terminated and the waiting ones are not started, so the process exits
    0 soon after the deadline (not after the ~4.5 s of work). Every client gets a complete
    response or a closed connection, none of them a 200 (nothing could finish in time)."""
    drain_ms, margin = 300, 1.5
    repo = build_repo(tmp_path / "repo",
                      {"slow": {"model": slow_model_bytes(), "config": SLOW_CFG}})
    s = server_factory(repo, ["--infer-threads", "2", "--drain-timeout-ms", str(drain_ms)],
                       name="drain-deadline")
    port = s.port
    from conftest import wait_until

    reqs = [Background(port, "slow", slow_body(0, iters_for(iter_s, 1.5)))]
    time.sleep(0.05)
    reqs += [Background(port, "slow", slow_body(i, iters_for(iter_s, 1.0))) for i in (1, 2, 3)]
    wait_until(lambda: pending(port, "slow") == 3, 10, "3 requests queued")
    t_sig = time.monotonic()
    s.terminate()
    rc = s.wait_exit(timeout=30)
    took = time.monotonic() - t_sig
    observed["drain_deadline_exit_s"] = round(took, 2)
    statuses = []
    for b in reqs:
        resp, _ = b.result(timeout=10)
        statuses.append(resp.status if isinstance(resp, rawhttp.Response) else type(resp).__name__)
    observed["drain_deadline_statuses"] = statuses
    assert rc == 0, f"exit status {rc} after SIGTERM\n{s.log_tail()}"
    assert took < drain_ms / 1000 + margin, \
        f"exit {took:.2f} s after SIGTERM with --drain-timeout-ms {drain_ms}; " \
        f"clients got {statuses}"
    assert 200 not in statuses, f"work ran past the drain deadline: {statuses}"


# ---- 7. per-model configuration ------------------------------------------------------------------

FULL_CFG = {
    "name": "cfg_full", "max_batch_size": 8, "instance_count": 2,
    "dynamic_batching": {"max_queue_delay_microseconds": 500, "preferred_batch_size": [2, 4],
                         "max_queue_size": 16, "default_timeout_microseconds": 1000000},
}
X_DIMS4 = {"data_type": "TYPE_FP32", "dims": [4]}


def warm(inputs, batch_size=2, count=3, name="w"):
    return {"max_batch_size": 8,
            "model_warmup": [{"name": name, "batch_size": batch_size, "count": count,
                              "inputs": inputs}]}


# name -> (config, the reason logged, which must name the key or the problem)
BAD_CONFIGS = {
    "bad_unknown_key": ({"max_batch_size": 4, "bogus": 1}, "config.json: unknown key 'bogus'"),
    "bad_nested_key": ({"dynamic_batching": {"max_queue_delay": 5}},
                       "config.json: unknown key 'dynamic_batching.max_queue_delay'"),
    "bad_range": ({"max_batch_size": 5000},
                  "config.json: 'max_batch_size' must be an integer from 0 to 1024"),
    "bad_delay": ({"dynamic_batching": {"max_queue_delay_microseconds": -5}},
                  "config.json: 'max_queue_delay_microseconds' must be an integer"),
    "bad_json": ("{\"max_batch_size\": 4,", "config.json: invalid JSON"),
    "bad_preferred": ({"max_batch_size": 4, "dynamic_batching": {"preferred_batch_size": [8]}},
                      "'dynamic_batching.preferred_batch_size' 8 exceeds 'max_batch_size' 4"),
    "bad_fixed": ({"max_batch_size": 4},
                  "config.json: 'max_batch_size' needs a dynamic first dimension"),
    "warm_wrong_name": (warm({"nope": {**X_DIMS4, "zero_data": True}}), "warm-up 'w'"),
    "warm_extra_name": (warm({"x": {**X_DIMS4, "zero_data": True},
                              "nope": {**X_DIMS4, "zero_data": True}}), "nope"),
    "warm_bad_dims": (warm({"x": {"data_type": "TYPE_FP32", "dims": [5], "zero_data": True}}),
                      "warm-up 'w' failed"),
    "warm_bad_type": (warm({"x": {"data_type": "TYPE_INT32", "dims": [4], "zero_data": True}}),
                      "warm-up 'w' failed"),
    "warm_short_file": (warm({"x": {**X_DIMS4, "input_data_file": "short.bin"}}),
                        "input_data_file 'short.bin'"),
    "warm_missing_file": (warm({"x": {**X_DIMS4, "input_data_file": "none.bin"}}),
                          "input_data_file 'none.bin'"),
}

GOOD_WARMUPS = ("warm_zero", "warm_random", "warm_file", "warm_fixed_file", "warm_two_inputs")


@pytest.fixture(scope="module")
def config_server(server_factory, tmp_path_factory, test_models):
    two = two_out_model_bytes()
    fixed = test_models / "fixed_fp32/1/model.onnx"
    models = {
        "cfg_full": {"model": two, "config": FULL_CFG},
        "cfg_none": {"model": two},
        "fixed_none": {"model": fixed},
        "cfg_nobatch": {"model": two, "config": {"max_batch_size": 0}},
        "warm_zero": {"model": two, "config": warm({"x": {**X_DIMS4, "zero_data": True}})},
        "warm_random": {"model": two, "config": warm({"x": {**X_DIMS4, "random_data": True}})},
        "warm_file": {"model": two,
                      "config": warm({"x": {**X_DIMS4, "input_data_file": "x.bin"}}),
                      "files": {"warmup/x.bin": np.arange(8, dtype=np.float32).tobytes()}},
        # No batch dimension (max_batch_size 0): dims are the whole shape.
        "warm_fixed_file": {"model": fixed,
                            "config": {"model_warmup": [{"name": "f", "inputs": {"x": {
                                "data_type": "TYPE_FP32", "dims": [2, 3],
                                "input_data_file": "x.bin"}}}]},
                            "files": {"warmup/x.bin": np.ones(6, np.float32).tobytes()}},
        # Two inputs of two types, one from a file: the slow model, 3 iterations.
        "warm_two_inputs": {"model": slow_model_bytes(),
                            "config": {"max_batch_size": 0, "model_warmup": [{
                                "name": "two", "count": 2, "inputs": {
                                    "x": {"data_type": "TYPE_FP32", "dims": [1, 4],
                                          "random_data": True},
                                    "iters": {"data_type": "TYPE_INT64", "dims": [1, 1],
                                              "input_data_file": "iters.bin"}}}]},
                            "files": {"warmup/iters.bin": np.array([3], np.int64).tobytes()}},
    }
    for name, (cfg, _) in BAD_CONFIGS.items():
        if isinstance(cfg, dict) and "name" in cfg:
            cfg = {**cfg, "name": name}
        models[name] = {"model": fixed if name == "bad_fixed" else two, "config": cfg}
    models["warm_short_file"]["files"] = {"warmup/short.bin": b"\0" * 31}
    repo = build_repo(tmp_path_factory.mktemp("config-repo"), models)
    yield from dedicated_server(server_factory, repo, ["--infer-threads", "2"], "config")


def get_json(port, path):
    r = http_get(port, path)
    assert r.status == 200, (path, r)
    assert (r.header("Content-Type") or "").startswith("application/json"), r
    return r.json()


def test_config_endpoint_reflects_file(config_server):
    port = config_server.port
    want = {"name": "cfg_full", "platform": "onnx_onnxv1", "backend": "onnxruntime",
            "max_batch_size": 8, "instance_count": 2,
            "dynamic_batching": {"max_queue_delay_microseconds": 500,
                                 "preferred_batch_size": [2, 4], "max_queue_size": 16,
                                 "default_timeout_microseconds": 1000000},
            "model_warmup_count": 0, "config_file": True}
    assert get_json(port, "/v2/models/cfg_full/config") == want
    assert get_json(port, "/v2/models/cfg_full/versions/1/config") == want
    r = http_get(port, "/v2/models/cfg_full/versions/2/config")
    assert r.status == 404, r
    r = http_get(port, "/v2/models/nope/config")
    assert r.status == 404, r


def test_config_defaults(config_server):
    """Without a file: max_batch_size 32 (delay 0) when every input and output has a dynamic
    first dimension, else 0; instance_count = --infer-threads (2)."""
    port = config_server.port
    assert get_json(port, "/v2/models/cfg_none/config") == {
        "name": "cfg_none", "platform": "onnx_onnxv1", "backend": "onnxruntime",
        "max_batch_size": 32, "instance_count": 2,
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "preferred_batch_size": [],
                             "max_queue_size": 0, "default_timeout_microseconds": 0},
        "model_warmup_count": 0, "config_file": False}
    assert get_json(port, "/v2/models/fixed_none/config") == {
        "name": "fixed_none", "platform": "onnx_onnxv1", "backend": "onnxruntime",
        "max_batch_size": 0, "instance_count": 2, "max_queue_size": 0,
        "default_timeout_microseconds": 0, "model_warmup_count": 0, "config_file": False}
    cfg = get_json(port, "/v2/models/cfg_nobatch/config")
    assert cfg["max_batch_size"] == 0 and "dynamic_batching" not in cfg and cfg["config_file"]


def test_config_official_client(config_server):
    """tritonclient reads the configuration and the server's extensions."""
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(config_server.url)
    try:
        ext = c.get_server_metadata()["extensions"]
        assert "statistics" in ext and "model_configuration" in ext, ext
        cfg = c.get_model_config("cfg_full")
        assert cfg["max_batch_size"] == 8
        assert cfg["dynamic_batching"]["preferred_batch_size"] == [2, 4]
    finally:
        c.close()


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_makes_model_unavailable(config_server, name):
    """The model stays listed (metadata, config, stats) but is not ready and refuses inference
    with 503; the log names the reason; the other models are fine."""
    port = config_server.port
    assert http_get(port, f"/v2/models/{name}").status == 200
    assert http_get(port, f"/v2/models/{name}/stats").status == 200
    assert http_get(port, f"/v2/models/{name}/ready").status == 503
    assert http_get(port, f"/v2/models/{name}/versions/1/ready").status == 503
    x = np.zeros((2, 3) if name == "bad_fixed" else (1, 4), np.float32)
    r, _, _ = infer(port, name, [("x", x)])
    assert r.status == 503, r
    assert "not available" in r.error()
    assert r.header("Retry-After") is not None
    log = open(config_server.log_path, encoding="utf-8", errors="replace").read()
    lines = [ln for ln in log.splitlines() if f"model '{name}' version 1 is not available" in ln]
    assert lines, f"no log line saying {name} is not available"
    assert BAD_CONFIGS[name][1] in lines[0], lines[0]
    # The rest of the server is unaffected.
    assert http_get(port, "/v2/health/ready").status == 200
    assert http_get(port, "/v2/models/cfg_full/ready").status == 200
    r, _, outs = infer(port, "cfg_full", [("x", np.ones((1, 4), np.float32))])
    assert r.status == 200, r
    np.testing.assert_array_equal(outs["plus1"], np.full((1, 4), 2, np.float32))


def test_out_of_range_instance_count_keeps_server_up(tmp_path):
    """Out-of-range instance_count values make their models unavailable; the server starts
    and serves the rest. (Four such models: a refused value that leaks into the scheduler's
    settings shows up as a start-up failure, "out of memory setting up the models".)"""
    two = two_out_model_bytes()
    bad = {f"ic_{k}": {"model": two, "config": '{"instance_count": %s}' % v}
           for k, v in enumerate(("0", "65", "100000", "-1"))}
    repo = build_repo(tmp_path / "repo", {**bad, "good": {"model": two}})
    from conftest import Server, _server_binary

    # Started by hand (not server_factory) so that a failed start is reported once, here.
    s = Server(_server_binary(), repo, ["--infer-threads", "2"], tmp_path / "server.log",
               "instance-count")
    try:
        s.start()
    except BaseException:
        s.stopped = True
        raise
    try:
        for name in bad:
            assert http_get(s.port, f"/v2/models/{name}/ready").status == 503, name
        r, _, outs = infer(s.port, "good", [("x", np.ones((1, 4), np.float32))])
        assert r.status == 200, r
        log = open(s.log_path, encoding="utf-8", errors="replace").read()
        assert log.count("'instance_count' must be an integer from 1 to 64") == 4
    finally:
        assert s.stop() is None, s.log_tail()


@pytest.mark.parametrize("name", GOOD_WARMUPS)
def test_warmup_runs_and_model_is_ready(config_server, name):
    port = config_server.port
    assert http_get(port, f"/v2/models/{name}/ready").status == 200
    cfg = get_json(port, f"/v2/models/{name}/config")
    assert cfg["model_warmup_count"] == 1 and cfg["config_file"] is True
    log = open(config_server.log_path, encoding="utf-8", errors="replace").read()
    assert any(f"model '{name}' version 1" in ln and "warmed up" in ln for ln in log.splitlines())
    # Warm-up runs are not client requests: no statistics.
    st = model_stats(port, name)
    assert st["inference_count"] == 0 and st["execution_count"] == 0, st
