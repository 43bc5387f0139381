"""The tuned Python peer: what a Python team that profiles its service ends up with. Same
protocol and models as bench/peers/python (KServe v2 REST, JSON and the binary tensor data
extension), with every default that costs time replaced:

    .venv/bin/python -m uvicorn --app-dir bench/peers/python-fast server:app --loop uvloop \
        --http httptools --host 127.0.0.1 --port 8002 --workers 2 --no-access-log  # = cores
    (model repository: env PEER_MODEL_REPOSITORY, default ./models)

- Starlette directly (no FastAPI routing or Pydantic models): the body is parsed by orjson
  (~6x json.loads on the S1 body), the tensor data converted by np.asarray(data, float32); the
  binary extension's tensors are np.frombuffer views of the body, no copy.
- Responses serialised by orjson straight from the numpy arrays (OPT_SERIALIZE_NUMPY); binary
  outputs are the arrays' bytes after the JSON header.
- uvicorn with uvloop and httptools named explicitly, one worker per core, access log off.
- ONNX Runtime as onnxd runs it: one session per model in each worker, intra_op_num_threads 1,
  inter-op 1, spinning off. Run is called inline on the event loop: a worker is CPU-bound
  either way, and handing Run to a thread pool would add two thread switches per request.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NP_OF = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
         "UINT8": np.uint8, "INT8": np.int8, "BOOL": np.bool_, "FP16": np.float16}
DT_OF = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64",
         "tensor(int32)": "INT32", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8",
         "tensor(bool)": "BOOL", "tensor(float16)": "FP16"}


class Model:
    def __init__(self, name: str, version: str, path: str):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.name, self.version = name, version
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: DT_OF.get(i.type, i.type) for i in self.session.get_inputs()}
        self.outputs = {o.name: DT_OF.get(o.type, o.type) for o in self.session.get_outputs()}
        self.output_names = list(self.outputs)


def load_repository(root: str) -> dict[str, Model]:
    models = {}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        versions = sorted((v for v in os.listdir(d) if v.isdigit()
                           and os.path.isfile(os.path.join(d, v, "model.onnx"))), key=int)
        if versions:
            models[name] = Model(name, versions[-1], os.path.join(d, versions[-1], "model.onnx"))
    return models


MODELS = load_repository(os.environ.get("PEER_MODEL_REPOSITORY", "models"))
JSON = {"content-type": "application/json"}


class BadRequest(Exception):
    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


def error(msg: str, status: int) -> Response:
    return Response(orjson.dumps({"error": msg}), status_code=status, headers=JSON)


def tensor(m: Model, inp: dict, raw: memoryview | None) -> np.ndarray:
    name, dt = inp.get("name"), NP_OF.get(inp.get("datatype"))
    if dt is None or name not in m.inputs:
        raise BadRequest(f"input '{name}': bad name or datatype")
    try:
        arr = np.frombuffer(raw, dtype=dt) if raw is not None else np.asarray(inp["data"], dt)
        return arr.reshape(inp["shape"])
    except (KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"input '{name}': {e}")


async def infer(request: Request) -> Response:
    m = MODELS.get(request.path_params["model"])
    if m is None:
        return error(f"unknown model '{request.path_params['model']}'", 404)
    body = await request.body()
    hlen = request.headers.get("inference-header-content-length")
    try:
        if hlen is None:
            req = orjson.loads(body)
            feeds = {i["name"]: tensor(m, i, None) for i in req["inputs"]}
        else:
            n = int(hlen)
            if not 0 <= n <= len(body):
                raise BadRequest("bad Inference-Header-Content-Length")
            req = orjson.loads(body[:n])
            view, off, feeds = memoryview(body), n, {}
            for i in req["inputs"]:
                size = (i.get("parameters") or {}).get("binary_data_size")
                if size is None:
                    feeds[i["name"]] = tensor(m, i, None)
                    continue
                if not isinstance(size, int) or size < 0 or off + size > len(body):
                    raise BadRequest(f"input '{i['name']}': body too short")
                feeds[i["name"]] = tensor(m, i, view[off:off + size])
                off += size
        binary = set()
        names = m.output_names
        if req.get("outputs"):
            names = []
            for o in req["outputs"]:
                if o.get("name") not in m.outputs:
                    raise BadRequest(f"unknown output '{o.get('name')}'")
                names.append(o["name"])
                if (o.get("parameters") or {}).get("binary_data"):
                    binary.add(o["name"])
    except orjson.JSONDecodeError as e:
        return error(f"bad JSON: {e}", 400)
    except BadRequest as e:
        return error(str(e), e.status)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return error(f"bad request: {e!r}", 400)
    try:
        results = m.session.run(names, feeds)
    except Exception as e:  # ORT's errors: shape mismatches and the like
        return error(str(e), 400)
    resp = {"model_name": m.name, "model_version": m.version, "outputs": []}
    if req.get("id") is not None:
        resp["id"] = req["id"]
    blobs = []
    for nm, r in zip(names, results):
        o = {"name": nm, "datatype": m.outputs[nm], "shape": list(r.shape)}
        if nm in binary:
            b = np.ascontiguousarray(r).tobytes()
            o["parameters"] = {"binary_data_size": len(b)}
            blobs.append(b)
        else:
            o["data"] = np.ascontiguousarray(r).ravel()
        resp["outputs"].append(o)
    head = orjson.dumps(resp, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return Response(head, headers=JSON)
    return Response(b"".join([head, *blobs]), media_type="application/octet-stream",
                    headers={"inference-header-content-length": str(len(head))})


async def ready(request: Request) -> Response:
    return Response(b'{"ready":true}', headers=JSON)


app = Starlette(routes=[Route("/v2/health/ready", ready), Route("/v2/health/live", ready),
                        Route("/v2/models/{model}/infer", infer, methods=["POST"])])
