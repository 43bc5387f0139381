"""Bad inference requests: each gets a 4xx with {"error": "..."} naming the problem, the
process stays up, and the same connection serves the next request.

First through the official client (what users see), then raw bodies no client would send."""

import json
import struct
import time

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from oip import (INFER_FP32, assert_json_error, binary_body, bytes_tensor, fp32_input,
                 good_infer, good_request, infer_json, post_infer)


# ---- through tritonclient

def fp32_in(name="INPUT0", shape=(1, 3), binary=False, dtype=np.float32, datatype="FP32"):
    a = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    i = httpclient.InferInput(name, list(shape), datatype)
    i.set_data_from_numpy(a, binary_data=binary)
    return i


def infer_error(client, model, inputs, **kw):
    with pytest.raises(InferenceServerException) as e:
        client.infer(model, inputs, **kw)
    return e.value


def check(err, status, *needles):
    assert err.status() == str(status), f"status {err.status()}, message {err.message()!r}"
    msg = err.message()
    assert isinstance(msg, str) and msg
    assert not msg.startswith("an exception occurred in the client"), \
        f"error body was not {{\"error\": ...}}: {err.debug_details()!r}"
    for n in needles:
        assert n in msg, f"message {msg!r} does not mention {n!r}"


@pytest.mark.parametrize("binary", [False, True])
def test_unknown_model(client, binary, repo):
    err = infer_error(client, "no_such_model", [fp32_in(binary=binary)])
    check(err, 404)
    assert str(repo) not in err.message()


@pytest.mark.parametrize("version", ["2", "4"])
def test_unknown_version(client, version):
    err = infer_error(client, "versioned", [fp32_in(shape=(3,))], model_version=version)
    check(err, 404)


@pytest.mark.parametrize("binary", [False, True])
def test_wrong_datatype(client, binary):
    err = infer_error(client, "identity_fp32",
                      [fp32_in(binary=binary, dtype=np.int32, datatype="INT32")])
    check(err, 400, "INPUT0")


@pytest.mark.parametrize("shape", [(3, 2), (2, 3, 1), (6,), (1, 3)])
@pytest.mark.parametrize("binary", [False, True])
def test_wrong_shape_fixed(client, shape, binary):
    err = infer_error(client, "fixed_fp32", [fp32_in("x", shape, binary)])
    check(err, 400, "x")


def test_wrong_rank_dynamic(client):
    err = infer_error(client, "identity_fp32", [fp32_in(shape=(1, 2, 3))])
    check(err, 400, "INPUT0")


@pytest.mark.parametrize("binary", [False, True])
def test_missing_input(client, binary):
    err = infer_error(client, "add_sub_fp32", [fp32_in("INPUT0", (1, 16), binary)])
    check(err, 400, "INPUT1")


@pytest.mark.parametrize("binary", [False, True])
def test_unknown_input(client, binary):
    err = infer_error(client, "identity_fp32",
                      [fp32_in(binary=binary), fp32_in("BOGUS_IN", binary=binary)])
    check(err, 400, "BOGUS_IN")


def test_duplicate_input(client):
    err = infer_error(client, "identity_fp32", [fp32_in(), fp32_in()])
    check(err, 400, "INPUT0")


@pytest.mark.parametrize("binary", [False, True])
def test_unknown_output(client, binary):
    err = infer_error(client, "identity_fp32", [fp32_in()],
                      outputs=[httpclient.InferRequestedOutput("BOGUS_OUT", binary_data=binary)])
    check(err, 400, "BOGUS_OUT")


@pytest.mark.parametrize("binary", [False, True])
def test_element_count_mismatch(client, binary):
    i = fp32_in(shape=(2, 3), binary=binary)
    i.set_shape([2, 2])  # 6 elements of data, shape says 4
    err = infer_error(client, "identity_fp32", [i])
    check(err, 400, "INPUT0")
    i = fp32_in(shape=(2, 3), binary=binary)
    i.set_shape([2, 4])  # shape says 8
    check(infer_error(client, "identity_fp32", [i]), 400, "INPUT0")


def test_client_keeps_working_after_errors(client):
    for _ in range(3):
        infer_error(client, "identity_fp32", [fp32_in("NOPE")])
    res = client.infer("identity_fp32", [fp32_in()])
    assert np.array_equal(res.as_numpy("OUTPUT0"), np.arange(3, dtype=np.float32).reshape(1, 3))


# ---- raw JSON bodies on one connection; after each error the same connection must serve

def bad(conn, body, status=400, *needles, path=INFER_FP32, headers=(), header_len=None):
    r = post_infer(conn, path, body, headers=headers, header_len=header_len)
    msg = assert_json_error(r, status, *needles)
    assert r.header("Content-Length") == str(len(r.body))
    good_infer(conn)  # same connection
    return msg


MALFORMED = [
    b"",
    b"not json",
    b"{",
    b'{"inputs": [',
    b'{"inputs": [}',
    b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [1.0]}],}',
    b'{"inputs": [{"name": "INPUT0" "datatype": "FP32"}]}',
    b"{'inputs': []}",
    b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [1.0]}]} x',
    b'{"inputs": [{"name": "IN\\x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}',
    b'{"inputs": [{"name": "IN\x01", "datatype": "FP32", "shape": [1], "data": [1.0]}]}',
    b'{"inputs": [{"name": "\xff\xfe", "datatype": "FP32", "shape": [1], "data": [1.0]}]}',
    b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [01]}]}',
    b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [1.]}]}',
    b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [.5]}]}',
    b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [+1]}]}',
    b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [1e]}]}',
    b"[]",
    b'"inputs"',
    b"null",
    b'{"inputs": {}}',
    b'{"inputs": [1]}',
    b"{}",
    b'{"inputs": []}',
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_json(conn, body):
    bad(conn, body)


@pytest.mark.parametrize("where", ["top", "data", "parameters"])
def test_deep_nesting_fails_fast(conn, where):
    n = 1_000_000
    if where == "top":
        body = b"[" * n
    elif where == "data":
        body = b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": ' \
               + b"[" * n
    else:
        body = b'{"parameters": {"x": ' + b"{\"a\": " * (n // 6) + b"1"
    conn.request("POST", INFER_FP32, body, ["Content-Type: application/json"])
    t0 = time.monotonic()
    r = conn.read_response()
    elapsed = time.monotonic() - t0
    assert_json_error(r, 400)
    # RELIABILITY.md: under 100 ms; the slack is for sanitizer builds and busy machines.
    assert elapsed < 0.3, f"{elapsed:.3f} s"
    good_infer(conn)


def test_nesting_limit(conn):
    """Depth 64 is the limit: "data" nested 60 deep (63 in the document) is fine, 70 is not."""
    def body(depth):
        return b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": ' \
            + b"[" * depth + b"1.5" + b"]" * depth + b"}]}"
    r = post_infer(conn, INFER_FP32, body(60))
    assert r.status == 200, r
    bad(conn, body(70))


@pytest.mark.parametrize("body,needle", [
    (b'{"inputs": [], "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], '
     b'"data": [1]}]}', None),
    (b'{"inputs": [{"name": "INPUT0", "name": "INPUT0", "datatype": "FP32", "shape": [1, 1], '
     b'"data": [1]}]}', "INPUT0"),
    (b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "datatype": "INT32", "shape": [1, 1], '
     b'"data": [1]}]}', "INPUT0"),
    (b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "shape": [1, 2], '
     b'"data": [1]}]}', "INPUT0"),
    (b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1], '
     b'"data": [2]}]}', "INPUT0"),
], ids=["inputs", "name", "datatype", "shape", "data"])
def test_duplicate_keys(conn, body, needle):
    bad(conn, body, 400, *([needle] if needle else []))


def test_duplicate_input_raw(conn):
    bad(conn, infer_json([fp32_input(), fp32_input()]), 400, "INPUT0")


def test_duplicate_requested_output(conn):
    bad(conn, infer_json([fp32_input()], outputs=[{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]),
        400, "OUTPUT0")


def test_too_many_requested_outputs(conn):
    bad(conn, infer_json([fp32_input()], outputs=[{"name": f"O{i}"} for i in range(300)]))


def test_too_many_inputs(conn):
    bad(conn, infer_json([fp32_input(f"I{i}") for i in range(300)]))


def _input(datatype, data, shape=None, name="INPUT0"):
    return {"name": name, "datatype": datatype,
            "shape": shape if shape is not None else [1, len(data)], "data": data}


def _raw_data(datatype, data_text, shape):
    return ('{"inputs": [{"name": "INPUT0", "datatype": "%s", "shape": %s, "data": %s}]}'
            % (datatype, json.dumps(shape), data_text)).encode()


@pytest.mark.parametrize("datatype,data_text", [
    ("FP32", "[NaN]"), ("FP32", "[nan]"), ("FP32", "[Infinity]"), ("FP32", "[-Infinity]"),
    ("FP32", "[inf]"), ("FP64", "[NaN]"), ("FP16", "[Infinity]"),
    ("FP32", '["1.0"]'), ("FP32", "[true]"), ("FP32", "[null]"), ("FP32", "[{}]"),
    ("INT64", "[1.5]"), ("INT64", "[1.0]"), ("INT64", "[1e2]"), ("INT32", '["1"]'),
    ("INT8", "[128]"), ("INT8", "[-129]"), ("UINT8", "[256]"), ("UINT8", "[-1]"),
    ("INT16", "[32768]"), ("UINT16", "[65536]"), ("INT32", "[2147483648]"),
    ("UINT32", "[4294967296]"), ("INT64", "[9223372036854775808]"),
    ("INT64", "[-9223372036854775809]"), ("UINT64", "[18446744073709551616]"),
    ("UINT64", "[-1]"), ("INT32", "[99999999999999999999999999999]"),
    ("BOOL", "[1]"), ("BOOL", '["true"]'), ("BOOL", "[null]"),
    ("BYTES", "[1]"), ("BYTES", "[null]"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_wrong_kind_of_data(conn, datatype, data_text):
    body = _raw_data(datatype, data_text, [1, 1])
    path = f"/v2/models/identity_{datatype.lower()}/infer"
    if data_text.strip("[]-").lower() in ("nan", "infinity", "inf"):
        # Not JSON at all: the document parser may refuse it before any input is known, so
        # the message may point at the byte instead of naming the input.
        msg = bad(conn, body, 400, path=path)
        assert "INPUT0" in msg or "JSON" in msg, msg
    else:
        bad(conn, body, 400, "INPUT0", path=path)


@pytest.mark.parametrize("shape", [[-1, 2], [2, -3], [-1], [1, 2.5], [1, "2"], [1, None],
                                   [9223372036854775808, 1], [1, 1e3], "12", None])
def test_bad_shape_value(conn, shape):
    body = ('{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": %s, "data": [1, 2]}]}'
            % json.dumps(shape)).encode()
    bad(conn, body, 400, "INPUT0")


@pytest.mark.parametrize("shape", [
    [4294967296, 4294967296, 4],         # product overflows 64 bits
    [9223372036854775807, 2],            # product overflows int64
    [2**62, 2**62, 2**62, 2**62],
    [1000000000, 1000],                  # fits, but 4 TB: must fail on the count, not malloc
    [2**31, 2**31],
], ids=["2^32*2^32*4", "int64max*2", "2^62^4", "1e12", "2^31*2^31"])
def test_huge_or_overflowing_shape(conn, shape):
    body = ('{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": %s, "data": [1, 2]}]}'
            % json.dumps(shape)).encode()
    bad(conn, body, 400, "INPUT0")


def test_huge_shape_binary(conn):
    head = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1000000000, 1000],
                        "parameters": {"binary_data_size": 8}}]}
    body, hl = binary_body(head, [b"\0" * 8])
    bad(conn, body, 400, "INPUT0", header_len=hl)


@pytest.mark.parametrize("data,shape", [([1, 2, 3], [2, 2]), ([1, 2, 3, 4, 5], [2, 2]),
                                        ([], [1, 1]), ([1], [0, 3])])
def test_element_count_mismatch_raw(conn, data, shape):
    bad(conn, infer_json([_input("FP32", data, shape)]), 400, "INPUT0")


@pytest.mark.parametrize("missing", ["name", "datatype", "shape", "data"])
def test_missing_input_field(conn, missing):
    inp = fp32_input()
    del inp[missing]
    bad(conn, infer_json([inp]))


def test_unknown_datatype(conn):
    inp = fp32_input()
    inp["datatype"] = "FLOAT32"
    bad(conn, infer_json([inp]), 400, "INPUT0")


def test_not_found_keeps_connection(conn):
    bad(conn, infer_json([fp32_input()]), 404, path="/v2/models/nope/infer")
    bad(conn, infer_json([fp32_input()]), 404, path="/v2/models/versioned/versions/2/infer")


# ---- binary tensor extension

def _bin_req(size_param, blob, shape=(1, 4), datatype="FP32", model="identity_fp32",
             header_len_delta=0, extra=None):
    head = {"inputs": [{"name": "INPUT0", "datatype": datatype, "shape": list(shape),
                        "parameters": {"binary_data_size": size_param}}]}
    if extra:
        head["inputs"][0].update(extra)
    body, hl = binary_body(head, [blob])
    return body, hl + header_len_delta, f"/v2/models/{model}/infer"


def test_binary_ok_baseline(conn):
    body, hl, path = _bin_req(16, np.arange(4, dtype=np.float32).tobytes())
    r = post_infer(conn, path, body, header_len=hl)
    assert r.status == 200, r


@pytest.mark.parametrize("case", ["size_too_big", "size_too_small", "size_negative",
                                  "size_not_int", "leftover", "header_len_past_body",
                                  "header_len_cuts_json", "both_data_and_binary"])
def test_binary_extension_errors(conn, case):
    blob = np.arange(4, dtype=np.float32).tobytes()
    needles = ("INPUT0",)
    if case == "size_too_big":
        body, hl, path = _bin_req(20, blob)            # runs past the end
    elif case == "size_too_small":
        body, hl, path = _bin_req(12, blob[:12])       # 3 floats for shape [1,4]
    elif case == "size_negative":
        body, hl, path = _bin_req(-16, blob)
    elif case == "size_not_int":
        body, hl, path = _bin_req("16", blob)
    elif case == "leftover":
        body, hl, path = _bin_req(16, blob + b"\0\0\0\0")
        needles = ()
    elif case == "header_len_past_body":
        body, hl, path = _bin_req(16, blob)
        hl = len(body) + 1
        needles = ()
    elif case == "header_len_cuts_json":
        body, hl, path = _bin_req(16, blob, header_len_delta=-5)
        needles = ()
    elif case == "both_data_and_binary":
        body, hl, path = _bin_req(16, blob, extra={"data": [1, 2, 3, 4]})
    bad(conn, body, 400, *needles, path=path, header_len=hl)


@pytest.mark.parametrize("value", ["-1", "abc", "", "1e3", "+5", "18446744073709551616"])
def test_bad_inference_header_length_value(conn, value):
    body, _, path = _bin_req(16, np.zeros(4, np.float32).tobytes())
    r = post_infer(conn, path, body, headers=[f"Inference-Header-Content-Length: {value}",
                                              "Content-Type: application/octet-stream"])
    assert_json_error(r, 400)
    good_infer(conn)


def test_binary_size_in_json_only_request(conn):
    """binary_data_size without Inference-Header-Content-Length: no binary section exists."""
    head = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1],
                        "parameters": {"binary_data_size": 4}}]}
    bad(conn, json.dumps(head).encode(), 400, "INPUT0")


@pytest.mark.parametrize("case", ["prefix_past_buffer", "truncated_prefix", "too_few_elements",
                                  "too_many_elements", "huge_prefix"])
def test_binary_bytes_errors(conn, case):
    if case == "prefix_past_buffer":
        blob, shape = struct.pack("<I", 100) + b"abc", (1, 1)
    elif case == "truncated_prefix":
        blob, shape = bytes_tensor([b"ab"]) + b"\x01\x00", (1, 2)
    elif case == "too_few_elements":
        blob, shape = bytes_tensor([b"one", b"two"]), (1, 3)
    elif case == "too_many_elements":
        blob, shape = bytes_tensor([b"one", b"two", b"three"]), (1, 2)
    else:
        blob, shape = struct.pack("<I", 0xFFFFFFFF) + b"x" * 8, (1, 1)
    body, hl, path = _bin_req(len(blob), blob, shape, "BYTES", "identity_bytes")
    bad(conn, body, 400, "INPUT0", path=path, header_len=hl)


def test_binary_bytes_ok_baseline(conn):
    blob = bytes_tensor([b"", b"x", "ü".encode()])
    body, hl, path = _bin_req(len(blob), blob, (1, 3), "BYTES", "identity_bytes")
    r = post_infer(conn, path, body, header_len=hl)
    assert r.status == 200, r
    assert r.json()["outputs"][0]["data"] == ["", "x", "ü"]


# ---- model names that try to leave the repository

TRAVERSAL = [
    "/v2/models/../../../../etc/passwd",
    "/v2/models/../../../../etc/passwd/infer",
    "/v2/models/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/v2/models/..%2F..%2F..%2F..%2Fetc%2Fpasswd/versions/1",
    "/v2/models/%2e%2e/versions/1/infer",
    "/v2/models/%2E%2E/ready",
    "/v2/models/%2e%2e%2f%2e%2e%2fetc/ready",
    "/v2/models/%2fetc%2fpasswd",
    "/v2/models//etc/passwd",
    "/v2/models/%2Fetc%2Fpasswd/infer",
    "/v2/models/identity_fp32%2f..%2f..%2fescape",
    "/v2/models/%2e",
    "/v2/models/escape_model",
    "/v2/models/escape_file/versions/1",
    "/v2/models/identity_fp32/versions/..%2f1",
    "/v2/models/identity_fp32/versions/1%2f..%2f1",
    "/v2/models/identity_fp32%00/ready",
    "/v2/models/identity_fp32/versions/%2e%2e/ready",
    "/v2/models/%25%32%65%25%32%65",  # double-encoded ".."
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_path_traversal(conn, path, repo):
    method = "POST" if path.endswith("/infer") else "GET"
    body = infer_json([fp32_input()]) if method == "POST" else None
    conn.request(method, path, body)
    r = conn.read_response()
    assert r.status in (400, 404), r
    msg = r.error()
    assert "root:" not in msg and str(repo) not in msg and "/etc/" not in msg, msg
    good_request(conn)
