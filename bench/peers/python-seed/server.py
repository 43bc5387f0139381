"""The published comparison's Python set-up ("seed"): FastAPI + Pydantic v2, 4 uvicorn workers,
each handing every inference to its own concurrent.futures.ProcessPoolExecutor with one process
per core; each pool process loads its own ONNX Runtime session per model with
intra_op_num_threads = 1. JSON only (no binary tensor extension).

    .venv/bin/python bench/peers/python-seed/server.py --model-repository models --port 8002
    (= PEER_MODEL_REPOSITORY=models python -m uvicorn --app-dir bench/peers/python-seed
       server:app --port 8002 --workers 4 --no-access-log)

On 2 cores that is 1 uvicorn supervisor + 4 workers + 4 x 2 pool processes = 13 processes and
8 copies of each model. Request tensors are pickled to the pool process and the results
pickled back, as in that set-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    data: list[float]


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
    data: list[float]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    outputs: list[ResponseOutput]


REPO = os.environ.get("PEER_MODEL_REPOSITORY", "models")


def _scan(root: str) -> dict[str, tuple[str, str]]:
    found = {}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        vs = sorted((v for v in os.listdir(d) if v.isdigit()
                     and os.path.isfile(os.path.join(d, v, "model.onnx"))), key=int)
        if vs:
            found[name] = (vs[-1], os.path.join(d, vs[-1], "model.onnx"))
    return found


MODELS = _scan(REPO)

# ---- in the pool processes
_SESSIONS: dict[str, Any] = {}


def _init_pool_process(repo_models: dict[str, tuple[str, str]]) -> None:
    import onnxruntime as ort
    for name, (_, path) in repo_models.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        _SESSIONS[name] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _predict(model: str, feeds: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    s = _SESSIONS[model]
    names = [o.name for o in s.get_outputs()]
    return list(zip(names, s.run(names, feeds)))


# ---- in each uvicorn worker
POOL: Optional[ProcessPoolExecutor] = None


@asynccontextmanager
async def lifespan(app: FastAPI):
    global POOL
    POOL = ProcessPoolExecutor(max_workers=os.cpu_count(), initializer=_init_pool_process,
                               initargs=(MODELS,))
    yield
    POOL.shutdown(wait=False, cancel_futures=True)


app = FastAPI(title="onnx-python-seed", lifespan=lifespan)


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.get("/v2/health/live")
def live():
    return {"live": True}


@app.post("/v2/models/{model_name}/infer", response_model=InferenceResponse)
async def infer(model_name: str, body: InferenceRequest):
    if model_name not in MODELS:
        raise HTTPException(status_code=404, detail=f"unknown model '{model_name}'")
    feeds = {}
    for i in body.inputs:
        if i.datatype != "FP32":
            raise HTTPException(status_code=400, detail=f"input '{i.name}': FP32 only")
        feeds[i.name] = np.asarray(i.data, dtype=np.float32).reshape(i.shape)
    loop = asyncio.get_running_loop()
    outs = await loop.run_in_executor(POOL, _predict, model_name, feeds)
    return InferenceResponse(
        model_name=model_name, model_version=MODELS[model_name][0], id=body.id,
        outputs=[ResponseOutput(name=n, shape=list(r.shape), datatype="FP32",
                                data=r.ravel().tolist()) for n, r in outs])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-repository", default="models")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8002)
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    os.environ["PEER_MODEL_REPOSITORY"] = os.path.abspath(a.model_repository)
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "--app-dir",
                              os.path.dirname(os.path.abspath(__file__)), "server:app",
                              "--host", a.host, "--port", str(a.port), "--workers",
                              str(a.workers), "--no-access-log", "--log-level", "warning"])


if __name__ == "__main__":
    main()
