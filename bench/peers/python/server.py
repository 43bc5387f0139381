"""The Python peer: the production-standard FastAPI microservice serving ONNX models over the Open
Inference Protocol (KServe v2 REST), as the benchmark's Python baseline.

    .venv/bin/python -m uvicorn --app-dir bench/peers/python server:app \
        --host 127.0.0.1 --port 8001 --workers 2 --no-access-log      # workers = cores
    (model repository: env PEER_MODEL_REPOSITORY, default ./models; or run this file with
     --model-repository DIR --port P --workers N, which does the same)

What it is, on purpose: FastAPI + Pydantic v2 request/response models + numpy + ONNX Runtime,
run by uvicorn with one worker process per core. uvicorn picks uvloop and httptools because
they are installed (uvicorn[standard], what `fastapi[standard]` brings); everything else is
FastAPI's default. Each worker process loads its own InferenceSession per model with
intra_op_num_threads = 1, so the intra-op threads add up to the core count.

- JSON: the body is parsed by FastAPI's route the way a declared body parameter is (request
  JSON -> InferenceRequest.model_validate), converted with numpy, and the response is the
  InferenceResponse model, serialised by FastAPI (response_model).
- Binary tensor data extension (Inference-Header-Content-Length): the JSON header is validated
  with the same Pydantic model, tensors are np.frombuffer views of the raw body; outputs asked
  for with "parameters": {"binary_data": true} are sent raw after the JSON header.
- Inference (blocking, releases the GIL) is handed to Starlette's thread pool, as FastAPI does
  for blocking work (a plain `def` endpoint); the event loop keeps serving other connections.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

# ---- Pydantic v2 models of the v2 inference request and response (JSON form)


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    # The served models take FP32; numbers arrive as a flat (row-major) list. Absent when the
    # tensor travels in the binary extension.
    data: Optional[list[float]] = None


class RequestOutput(BaseModel):
    name: str
    parameters: Optional[dict[str, Any]] = None


class InferenceRequest(BaseModel):
    id: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    inputs: list[RequestInput]
    outputs: Optional[list[RequestOutput]] = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    data: Optional[list[float]] = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    outputs: list[ResponseOutput]


# ---- model repository: DIR/<model>/<version>/model.onnx, highest version served

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
        self.name, self.version = name, version
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: DT_OF.get(i.type, i.type) for i in self.session.get_inputs()}
        self.outputs = {o.name: DT_OF.get(o.type, o.type) for o in self.session.get_outputs()}


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


REPO = os.environ.get("PEER_MODEL_REPOSITORY", "models")
MODELS = load_repository(REPO)  # loaded by each uvicorn worker process on import

app = FastAPI(title="onnx-python-peer")


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.get("/v2/health/live")
def live():
    return {"live": True}


def _model(name: str) -> Model:
    m = MODELS.get(name)
    if m is None:
        raise HTTPException(status_code=404, detail=f"unknown model '{name}'")
    return m


def _to_numpy(m: Model, inp: RequestInput, raw: Optional[memoryview]) -> np.ndarray:
    dt = NP_OF.get(inp.datatype)
    if dt is None or inp.name not in m.inputs:
        raise HTTPException(status_code=400, detail=f"input '{inp.name}': bad name or datatype")
    if raw is not None:
        arr = np.frombuffer(raw, dtype=dt)
    else:
        if inp.data is None:
            raise HTTPException(status_code=400, detail=f"input '{inp.name}': no data")
        arr = np.asarray(inp.data, dtype=dt)
    try:
        return arr.reshape(inp.shape)
    except ValueError:
        raise HTTPException(status_code=400, detail=f"input '{inp.name}': data does not match shape")


def _run(m: Model, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    return m.session.run(names, feeds)


def _requested(m: Model, req: InferenceRequest) -> tuple[list[str], set[str]]:
    if not req.outputs:
        return list(m.outputs), set()
    names, binary = [], set()
    for o in req.outputs:
        if o.name not in m.outputs:
            raise HTTPException(status_code=400, detail=f"unknown output '{o.name}'")
        names.append(o.name)
        if o.parameters and o.parameters.get("binary_data"):
            binary.add(o.name)
    return names, binary


@app.post("/v2/models/{model_name}/infer", response_model=InferenceResponse)
async def infer(model_name: str, request: Request):
    m = _model(model_name)
    hlen = request.headers.get("inference-header-content-length")
    body = await request.body()
    if hlen is None:
        # JSON: what FastAPI does for a declared `body: InferenceRequest` parameter.
        try:
            req = InferenceRequest.model_validate(json.loads(body))
        except (ValueError, ValidationError) as e:
            raise HTTPException(status_code=422 if isinstance(e, ValidationError) else 400,
                                detail=str(e)[:500])
        feeds = {i.name: _to_numpy(m, i, None) for i in req.inputs}
    else:
        try:
            n = int(hlen)
            req = InferenceRequest.model_validate_json(body[:n])
        except (ValueError, ValidationError) as e:
            raise HTTPException(status_code=400, detail=str(e)[:500])
        view, off, feeds = memoryview(body), n, {}
        for i in req.inputs:
            size = (i.parameters or {}).get("binary_data_size")
            if size is None:
                feeds[i.name] = _to_numpy(m, i, None)
                continue
            if off + size > len(body):
                raise HTTPException(status_code=400, detail=f"input '{i.name}': body too short")
            feeds[i.name] = _to_numpy(m, i, view[off:off + size])
            off += size
    names, binary = _requested(m, req)
    results = await run_in_threadpool(_run, m, feeds, names)

    if not binary:
        return InferenceResponse(
            model_name=m.name, model_version=m.version, id=req.id,
            outputs=[ResponseOutput(name=nm, shape=list(r.shape), datatype=m.outputs[nm],
                                    data=r.ravel().tolist()) for nm, r in zip(names, results)])
    # binary extension response: JSON header, then the raw outputs in order
    outs, blobs = [], []
    for nm, r in zip(names, results):
        if nm in binary:
            b = np.ascontiguousarray(r).tobytes()
            outs.append(ResponseOutput(name=nm, shape=list(r.shape), datatype=m.outputs[nm],
                                       parameters={"binary_data_size": len(b)}))
            blobs.append(b)
        else:
            outs.append(ResponseOutput(name=nm, shape=list(r.shape), datatype=m.outputs[nm],
                                       data=r.ravel().tolist()))
    header = InferenceResponse(model_name=m.name, model_version=m.version, id=req.id,
                               outputs=outs).model_dump_json(exclude_none=True).encode()
    return Response(content=b"".join([header, *blobs]), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


@app.exception_handler(HTTPException)
async def _err(request: Request, exc: HTTPException):
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-repository", default="models")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    os.environ["PEER_MODEL_REPOSITORY"] = os.path.abspath(a.model_repository)
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "--app-dir",
                              os.path.dirname(os.path.abspath(__file__)), "server:app",
                              "--host", a.host, "--port", str(a.port), "--workers",
                              str(a.workers), "--no-access-log", "--log-level", "warning"])


if __name__ == "__main__":
    main()
