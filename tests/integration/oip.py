"""Open Inference Protocol helpers for raw-socket tests: request bodies (JSON and the binary
tensor extension), response splitting, and the "is the server still serving" checks."""

import json
import struct

import numpy as np

import rawhttp

INFER_FP32 = "/v2/models/identity_fp32/infer"


def infer_json(inputs, outputs=None, id=None, parameters=None):
    """JSON body of an inference request. inputs: list of dicts as sent."""
    obj = {}
    if id is not None:
        obj["id"] = id
    obj["inputs"] = inputs
    if outputs is not None:
        obj["outputs"] = outputs
    if parameters is not None:
        obj["parameters"] = parameters
    return json.dumps(obj).encode()


def fp32_input(name="INPUT0", shape=(1, 3), data=(1.0, 2.5, -3.0)):
    return {"name": name, "datatype": "FP32", "shape": list(shape), "data": list(data)}


def binary_body(header_obj, blobs):
    """(body, header length) for the binary tensor extension."""
    head = json.dumps(header_obj).encode()
    return head + b"".join(blobs), len(head)


def post_infer(conn, path, body, headers=(), header_len=None):
    hs = list(headers)
    if header_len is not None:
        hs.append(f"Inference-Header-Content-Length: {header_len}")
        hs.append("Content-Type: application/octet-stream")
    else:
        hs.append("Content-Type: application/json")
    conn.request("POST", path, body, hs)
    return conn.read_response()


def split_binary_response(resp):
    """-> (header dict, {output name: bytes}) for a response using the binary extension."""
    hl = resp.header("Inference-Header-Content-Length")
    assert hl is not None and hl.isdigit(), f"Inference-Header-Content-Length {hl!r}"
    hl = int(hl)
    head = json.loads(resp.body[:hl])
    blobs, off = {}, hl
    for o in head["outputs"]:
        size = o.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[o["name"]] = resp.body[off: off + size]
            off += size
    assert off == len(resp.body), f"binary response: {len(resp.body) - off} bytes unaccounted"
    return head, blobs


def bytes_tensor(items):
    """Serialises BYTES elements as the binary extension does (4-byte LE length + bytes)."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def good_request(conn):
    """A health check and a small inference on conn must succeed."""
    conn.request("GET", "/v2/health/ready")
    r = conn.read_response()
    assert r.status == 200, r
    good_infer(conn)


def good_infer(conn):
    r = post_infer(conn, INFER_FP32, infer_json([fp32_input()]))
    assert r.status == 200, r
    out = r.json()["outputs"][0]
    assert out["name"] == "OUTPUT0" and out["shape"] == [1, 3]
    assert out["data"] == [1.0, 2.5, -3.0]


def serves_on_new_connection(port):
    c = rawhttp.RawConn(port)
    try:
        good_request(c)
    finally:
        c.close()


def assert_json_error(resp, status, *needles):
    """resp has the given status and an {"error": "..."} body containing every needle."""
    assert resp.status == status, resp
    msg = resp.error()
    for n in needles:
        assert n in msg, f"error message {msg!r} does not mention {n!r}"
    # RELIABILITY.md: messages name the problem but no file paths or internal names.
    for leak in ("model.onnx", "/tmp/", "/work/", ".c:", "OX_E", "OrtStatus"):
        assert leak not in msg, f"error message {msg!r} leaks {leak!r}"
    return msg


def f32_bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
