"""The Python fraud peer: the usual Python stack for a fraud-scoring microservice that looks up
its features in Redis on every request, as the benchmark's baseline for onnxd's feature views.

    PEER_FRAUD_MODEL=models/fraud/1/model.onnx PEER_REDIS=127.0.0.1:6379 \
    .venv/bin/python -m uvicorn --app-dir bench/peers/python-fraud server:app \
        --host 127.0.0.1 --port 8002 --workers 2 --no-access-log --log-level warning
    (workers = cores; or run this file with --model M --redis HOST:PORT --port P --workers N,
     which does the same)

Environment: PEER_FRAUD_MODEL, the ONNX model that tools/fraud/train.py writes (input
"features" FP32 [N,17], output "fraud_probability" FP32 [N,1]; default
models/fraud/1/model.onnx); PEER_REDIS, "HOST:PORT" (default 127.0.0.1:6379); PEER_MODEL_NAME,
the name it serves (default "fraud_rows", version "1").

What it is, on purpose: FastAPI + Pydantic v2 request/response models + numpy + ONNX Runtime +
redis-py's asyncio client, run by uvicorn (uvloop, httptools) with one worker process per core.
Each worker process loads its own InferenceSession (intra_op_num_threads = inter_op_num_threads
= 1) on import and makes its own Redis connection pool at startup (FastAPI lifespan).

Per request, POST /v2/models/{name}/infer with a KServe v2 JSON body such as
    {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [123.4]}],
     "parameters": {"user_id": "u17", "card_id": "c17"}}
  1. the body is parsed as FastAPI does for a declared body parameter (json.loads ->
     InferenceRequest.model_validate); a body that is not such a request, a missing or
     non-string user_id / card_id parameter, or an "amount" input that is absent, not one
     value of shape [1] or [1, 1], or not numeric answers 400; an unknown model name 404;
  2. one Redis round trip, MGET fv_user:<user_id> fv_card:<card_id>: each value is 8 float32
     little-endian (32 bytes); a missing key gives 8 zeros, a value of another length 500;
     a Redis error or timeout (socket and connect timeouts 20 ms, no retries: the budget of
     onnxd's feature-view deadline) answers 503;
  3. [amount, 8 user values, 8 card values] as FP32 [1, 17] is run by the session in
     Starlette's thread pool (blocking work, as FastAPI does for a plain `def` endpoint);
  4. the answer is the InferenceResponse model, serialised by FastAPI (response_model,
     None fields left out):
     {"model_name": name, "model_version": "1",
      "outputs": [{"name": "fraud_probability", "datatype": "FP32", "shape": [1, 1],
                   "data": [p]}]}
Errors are {"error": "..."}. GET /v2/health/ready, /v2/health/live and
/v2/models/{name}/ready answer 200 (the last 404 for another name).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import asynccontextmanager
from typing import Any, Optional

import numpy as np
import onnxruntime as ort
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

# ---- Pydantic v2 models of the v2 inference request and response (JSON form)


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
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


# ---- the model, loaded by each uvicorn worker process on import

IN_NAME, OUT_NAME, WIDTH, SIDE = "features", "fraud_probability", 17, 8
ROW_BYTES = SIDE * 4  # 8 float32, little-endian
AMOUNT_TYPES = {"FP32", "FP64", "INT32", "INT64"}
REDIS_TIMEOUT_S = 0.020

MODEL_NAME = os.environ.get("PEER_MODEL_NAME", "fraud_rows")
MODEL_VERSION = "1"
MODEL_PATH = os.environ.get("PEER_FRAUD_MODEL", "models/fraud/1/model.onnx")
REDIS_HOST, _, _port = os.environ.get("PEER_REDIS", "127.0.0.1:6379").rpartition(":")
REDIS_PORT = int(_port)


def _load(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ins = {i.name: (i.type, i.shape) for i in s.get_inputs()}
    outs = {o.name for o in s.get_outputs()}
    if (IN_NAME not in ins or ins[IN_NAME][0] != "tensor(float)" or ins[IN_NAME][1][-1] != WIDTH
            or OUT_NAME not in outs):
        raise RuntimeError(f"{path}: needs input '{IN_NAME}' float [N,{WIDTH}] and output "
                           f"'{OUT_NAME}', has {ins} -> {sorted(outs)}")
    return s


SESSION = _load(MODEL_PATH)


@asynccontextmanager
async def lifespan(app: FastAPI):
    # One pool per worker process, in that worker's event loop. No retries: a timeout is a
    # 503 within the 20 ms budget, not three more tries.
    app.state.redis = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT,
                                     socket_timeout=REDIS_TIMEOUT_S,
                                     socket_connect_timeout=REDIS_TIMEOUT_S,
                                     retry=Retry(NoBackoff(), 0))
    try:
        await app.state.redis.ping()  # warm one connection; Redis may come up later
    except (RedisError, OSError):
        pass
    yield
    await app.state.redis.aclose()


app = FastAPI(title="onnx-python-fraud-peer", lifespan=lifespan)


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.get("/v2/health/live")
def live():
    return {"live": True}


@app.get("/v2/models/{model_name}/ready")
def model_ready(model_name: str):
    _check_model(model_name)
    return {"name": MODEL_NAME, "ready": True}


def _check_model(name: str) -> None:
    if name != MODEL_NAME:
        raise HTTPException(status_code=404, detail=f"unknown model '{name}'")


def _key_param(params: dict[str, Any], name: str) -> str:
    v = params.get(name)
    if not isinstance(v, str) or not v:
        raise HTTPException(status_code=400, detail=f"parameter '{name}': a non-empty string "
                            "is required")
    return v


def _amount(req: InferenceRequest) -> float:
    inp = next((i for i in req.inputs if i.name == "amount"), None)
    if inp is None:
        raise HTTPException(status_code=400, detail="input 'amount' is required")
    if inp.datatype not in AMOUNT_TYPES:
        raise HTTPException(status_code=400, detail=f"input 'amount': bad datatype "
                            f"'{inp.datatype}'")
    if inp.shape not in ([1], [1, 1]) or inp.data is None or len(inp.data) != 1:
        raise HTTPException(status_code=400, detail="input 'amount': one value of shape [1] "
                            "or [1,1] is required")
    return inp.data[0]


def _side(raw: Optional[bytes], key: str) -> np.ndarray:
    if raw is None:
        return np.zeros(SIDE, dtype=np.float32)
    if len(raw) != ROW_BYTES:
        raise HTTPException(status_code=500, detail=f"feature row '{key}': {len(raw)} bytes, "
                            f"expected {ROW_BYTES}")
    return np.frombuffer(raw, dtype="<f4")


def _run(x: np.ndarray) -> np.ndarray:
    return SESSION.run([OUT_NAME], {IN_NAME: x})[0]


@app.post("/v2/models/{model_name}/infer", response_model=InferenceResponse,
          response_model_exclude_none=True)
async def infer(model_name: str, request: Request):
    _check_model(model_name)
    body = await request.body()
    try:
        req = InferenceRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError) as e:
        raise HTTPException(status_code=400, detail=str(e)[:500])
    params = req.parameters or {}
    ukey = "fv_user:" + _key_param(params, "user_id")
    ckey = "fv_card:" + _key_param(params, "card_id")
    amount = _amount(req)

    try:
        urow, crow = await request.app.state.redis.mget(ukey, ckey)
    except (RedisError, OSError, TimeoutError) as e:
        raise HTTPException(status_code=503, detail=f"feature store: {type(e).__name__}: {e}"[:500])

    x = np.empty((1, WIDTH), dtype=np.float32)
    x[0, 0] = amount  # float64 -> float32, rounded once
    x[0, 1:1 + SIDE] = _side(urow, ukey)
    x[0, 1 + SIDE:] = _side(crow, ckey)
    y = await run_in_threadpool(_run, x)
    return InferenceResponse(
        model_name=MODEL_NAME, model_version=MODEL_VERSION, id=req.id,
        outputs=[ResponseOutput(name=OUT_NAME, shape=list(y.shape), datatype="FP32",
                                data=y.ravel().tolist())])


@app.exception_handler(HTTPException)
async def _err(request: Request, exc: HTTPException):
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/fraud/1/model.onnx")
    ap.add_argument("--redis", default="127.0.0.1:6379", help="HOST:PORT")
    ap.add_argument("--model-name", default="fraud_rows")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8002)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    os.environ["PEER_FRAUD_MODEL"] = os.path.abspath(a.model)
    os.environ["PEER_REDIS"] = a.redis
    os.environ["PEER_MODEL_NAME"] = a.model_name
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "--app-dir",
                              os.path.dirname(os.path.abspath(__file__)), "server:app",
                              "--host", a.host, "--port", str(a.port), "--workers",
                              str(a.workers), "--no-access-log", "--log-level", "warning"])


if __name__ == "__main__":
    main()
