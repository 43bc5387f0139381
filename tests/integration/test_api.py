"""Health, server and model metadata, routing: with the official client and raw requests."""

import pytest
from tritonclient.utils import InferenceServerException

from oip import assert_json_error

def tensors(lst):
    """(name, datatype, shape) of metadata tensor entries (other keys are allowed)."""
    return [(t["name"], t["datatype"], t["shape"]) for t in lst]


IDENTITY = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "BF16", "FP32", "FP64", "BYTES"]


def test_live_and_ready(client):
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata(client):
    md = client.get_server_metadata()
    assert isinstance(md["name"], str) and md["name"]
    assert isinstance(md["version"], str) and md["version"]
    assert isinstance(md["extensions"], list)
    assert "binary_tensor_data" in md["extensions"]


@pytest.mark.parametrize("dtype", IDENTITY)
def test_identity_metadata(client, dtype):
    name = "identity_" + dtype.lower()
    assert client.is_model_ready(name)
    md = client.get_model_metadata(name)
    assert md["name"] == name
    assert md["versions"] == ["1"]
    assert md["platform"] == "onnx_onnxv1"
    assert tensors(md["inputs"]) == [("INPUT0", dtype, [-1, -1])]
    assert tensors(md["outputs"]) == [("OUTPUT0", dtype, [-1, -1])]


def test_add_sub_metadata(client):
    md = client.get_model_metadata("add_sub_int32")
    assert tensors(md["inputs"]) == [("INPUT0", "INT32", [1, 16]), ("INPUT1", "INT32", [1, 16])]
    assert tensors(md["outputs"]) == [("OUTPUT0", "INT32", [1, 16]), ("OUTPUT1", "INT32", [1, 16])]


def test_fixed_metadata(client):
    md = client.get_model_metadata("fixed_fp32")
    assert tensors(md["inputs"]) == [("x", "FP32", [2, 3])]
    assert tensors(md["outputs"]) == [("y", "FP32", [2, 3])]


def test_mobilenet_metadata(client):
    md = client.get_model_metadata("mobilenetv2")
    assert tensors(md["inputs"]) == [("input", "FP32", [-1, 3, 224, 224])]
    assert tensors(md["outputs"]) == [("output", "FP32", [-1, 1000])]


def test_versioned_metadata(client):
    md = client.get_model_metadata("versioned")
    assert md["name"] == "versioned"
    assert md["versions"] == ["1", "3"]
    assert tensors(md["inputs"]) == [("INPUT0", "FP32", [-1])]
    assert tensors(md["outputs"]) == [("OUTPUT0", "FP32", [-1])]
    for v in ("1", "3"):
        assert client.is_model_ready("versioned", v)
        assert client.get_model_metadata("versioned", v)["name"] == "versioned"
    assert not client.is_model_ready("versioned", "2")


@pytest.mark.parametrize("version", ["2", "4", "0"])
def test_unknown_version_metadata(client, version):
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("versioned", version)
    assert e.value.status() == "404", e.value


@pytest.mark.parametrize("version", ["-1", "01x", "1.0", "99999999999999999999999"])
def test_malformed_version_metadata(client, version):
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("versioned", version)
    assert e.value.status() in ("400", "404"), e.value


def test_unknown_model_metadata(client):
    assert not client.is_model_ready("no_such_model")
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("no_such_model")
    assert e.value.status() == "404"
    assert e.value.message()


@pytest.mark.parametrize("name", ["broken", "broken_type", "broken_seq", "escape_file",
                                  "escape_dir", "escape_model"])
def test_unservable_models_not_served(client, name, repo):
    """Garbage files, unsupported types and files outside the repository are left out."""
    assert not client.is_model_ready(name)
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata(name)
    assert e.value.status() == "404", e.value
    assert str(repo) not in e.value.message()


def test_server_still_ready_despite_broken_models(client):
    assert client.is_server_ready()


# ---- raw routing

def test_unknown_route_404(conn):
    for path in ("/", "/v1/models", "/v2/nope", "/v2/health/alive", "/v2/models"):
        conn.request("GET", path)
        r = conn.read_response()
        assert_json_error(r, 404)


@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/health/ready"),
    ("POST", "/v2/health/live"),
    ("DELETE", "/v2"),
    ("PUT", "/v2/models/identity_fp32"),
    ("GET", "/v2/models/identity_fp32/infer"),
])
def test_wrong_method_405(conn, method, path):
    conn.request(method, path, b"" if method in ("POST", "PUT") else None)
    r = conn.read_response()
    assert_json_error(r, 405)
    # and the connection is still usable
    conn.request("GET", "/v2/health/live")
    assert conn.read_response().status == 200


def test_405_has_allow_header(conn):
    """RFC 9110 15.5.6: a 405 response MUST carry Allow."""
    conn.request("GET", "/v2/models/identity_fp32/infer")
    r = conn.read_response()
    assert r.status == 405
    allow = r.header("Allow")
    assert allow is not None and "POST" in allow


def test_health_responses(conn):
    """Health answers carry the JSON bodies KServe's server sends and its SDK parses."""
    for path, want in (("/v2/health/live", {"live": True}),
                       ("/v2/health/ready", {"ready": True}),
                       ("/v2/models/identity_fp32/ready", {"name": "identity_fp32", "ready": True}),
                       ("/v2/models/versioned/versions/3/ready",
                        {"name": "versioned", "ready": True})):
        conn.request("GET", path)
        r = conn.read_response()
        assert r.status == 200, (path, r)
        assert r.header("Content-Type") == "application/json", (path, r)
        assert r.header("Content-Length") == str(len(r.body)), (path, r)
        assert r.json() == want, (path, r.body)
    conn.request("GET", "/v2/models/versioned/versions/2/ready")
    r = conn.read_response()
    assert r.status == 404 and "error" in r.json(), r
    conn.request("GET", "/v2/models/no_such_model/ready")
    assert_json_error(conn.read_response(), 404)


def test_metadata_json_content_type(conn):
    conn.request("GET", "/v2/models/identity_fp32")
    r = conn.read_response()
    assert r.status == 200
    assert r.header("Content-Type").split(";")[0] == "application/json"
    assert r.json()["name"] == "identity_fp32"
    assert r.header("Content-Length") == str(len(r.body))


def test_query_string_ignored(conn):
    conn.request("GET", "/v2/models/identity_fp32?x=1&y")
    r = conn.read_response()
    assert r.status == 200 and r.json()["name"] == "identity_fp32"


def test_percent_encoded_model_name(conn):
    conn.request("GET", "/v2/models/identity%5Ffp32")  # %5F = '_'
    r = conn.read_response()
    assert r.status == 200 and r.json()["name"] == "identity_fp32"


def test_head_has_headers_but_no_body(server):
    """RFC 9110 9.3.2: HEAD gets GET's headers (Content-Length included) and no body; the next
    pipelined response must start right after the HEAD response's header block."""
    import socket
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        s.sendall(b"HEAD /v2 HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while data.count(b"\r\n\r\n") < 2:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        assert cl and int(cl[0].split(b":")[1]) > 0  # the length a GET would get
        assert rest.startswith(b"HTTP/1.1 200"), rest[:60]  # no body bytes in between
    finally:
        s.close()
