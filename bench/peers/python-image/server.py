"""The Python image peer (S5): image classification from JPEG bytes, as users write it.

    PEER_IMAGE_MODEL=models/mobilenetv2/1/model.onnx PEER_IMAGE_LABELS=labels.txt \
    PEER_MODEL_NAME=mobilenetv2_image \
    .venv/bin/python -m uvicorn --app-dir bench/peers/python-image server:app \
        --host 127.0.0.1 --port 8001 --workers 2 --no-access-log      # workers = cores

What it is, on purpose: FastAPI + Pydantic v2 + uvicorn (one worker process per core, uvloop
and httptools because they are installed), Pillow + numpy for the preprocessing and ONNX
Runtime, the way a classification service is written from the torchvision recipe when torch
itself is not installed:

    img = PIL.Image.open(BytesIO(b)).convert("RGB")
    Resize(256)      shorter side to 256, bilinear (Pillow's resize, as torchvision does on PIL)
    CenterCrop(224)
    ToTensor()       HWC uint8 -> CHW float32 / 255
    Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])

then session.run and the top 5 with numpy. Each worker process loads its own InferenceSession
with intra_op_num_threads = 1 (the intra-op threads add up to the core count), as the python
peer of S1-S4 does. Decoding, preprocessing and the run are blocking and happen in Starlette's
thread pool (run_in_threadpool), so the event loop keeps serving other connections.

The request is KServe v2 with the binary tensor extension, what onnxd accepts for an image
input: a JSON header (Inference-Header-Content-Length) naming one BYTES input of shape [N] with
"binary_data_size", followed by N elements, each a 4-byte little-endian length and a JPEG/PNG
file. Outputs asked for with "parameters": {"classification": K} come back as Triton's
classification extension does: BYTES [N, K] of "score:index:label" strings, best first, score
the model's raw output (logit); without that parameter the top 5 are sent all the same (this
service only classifies). The response is JSON (the strings in "data"), always: the
binary_data output parameter is not supported here.
"""

from __future__ import annotations

import os
import struct
from io import BytesIO
from typing import Any, Optional

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from PIL import Image
from pydantic import BaseModel, ValidationError

MODEL_PATH = os.environ.get("PEER_IMAGE_MODEL", "models/mobilenetv2/1/model.onnx")
LABELS_PATH = os.environ.get("PEER_IMAGE_LABELS", "labels.txt")
MODEL_NAME = os.environ.get("PEER_MODEL_NAME", "mobilenetv2_image")

RESIZE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class RequestInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None


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
    data: list[str]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    outputs: list[ResponseOutput]


so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
SESSION = ort.InferenceSession(MODEL_PATH, so, providers=["CPUExecutionProvider"])
INPUT_NAME = SESSION.get_inputs()[0].name
OUTPUT_NAMES = [o.name for o in SESSION.get_outputs()]
with open(LABELS_PATH) as f:
    LABELS = [line.rstrip("\n") for line in f]

app = FastAPI(title="onnx-python-image-peer")


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.get("/v2/health/live")
def live():
    return {"live": True}


def preprocess(data: bytes) -> np.ndarray:
    """One image file -> [3, 224, 224] float32, torchvision's steps with Pillow and numpy."""
    img = Image.open(BytesIO(data)).convert("RGB")
    w, h = img.size
    if w <= h:
        size = (RESIZE, int(RESIZE * h / w))
    else:
        size = (int(RESIZE * w / h), RESIZE)
    img = img.resize(size, Image.BILINEAR)
    left = int(round((size[0] - CROP) / 2.0))
    top = int(round((size[1] - CROP) / 2.0))
    img = img.crop((left, top, left + CROP, top + CROP))
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)


def split_bytes(raw: memoryview, count: int) -> list[bytes]:
    """The binary extension's BYTES elements: 4-byte little-endian length, then the bytes."""
    out, off = [], 0
    for _ in range(count):
        if off + 4 > len(raw):
            raise ValueError("BYTES data too short")
        (n,) = struct.unpack_from("<I", raw, off)
        off += 4
        if off + n > len(raw):
            raise ValueError("BYTES element longer than the data")
        out.append(bytes(raw[off:off + n]))
        off += n
    if off != len(raw):
        raise ValueError("BYTES data longer than its elements")
    return out


def classify(images: list[bytes], k: int, output: str) -> list[str]:
    try:
        batch = np.stack([preprocess(b) for b in images])
    except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise HTTPException(status_code=400, detail=f"cannot decode image: {e}")
    scores = SESSION.run([output], {INPUT_NAME: batch})[0]
    out = []
    for row in scores:
        for i in np.argsort(-row, kind="stable")[:k]:
            out.append(f"{row[i]:f}:{i}:{LABELS[i]}")
    return out


@app.post("/v2/models/{model_name}/infer", response_model=InferenceResponse)
async def infer(model_name: str, request: Request):
    if model_name != MODEL_NAME:
        raise HTTPException(status_code=404, detail=f"unknown model '{model_name}'")
    hlen = request.headers.get("inference-header-content-length")
    if hlen is None:
        raise HTTPException(status_code=400, detail="images come as binary BYTES data "
                            "(Inference-Header-Content-Length)")
    body = await request.body()
    try:
        n = int(hlen)
        req = InferenceRequest.model_validate_json(body[:n])
    except (ValueError, ValidationError) as e:
        raise HTTPException(status_code=400, detail=str(e)[:500])
    if len(req.inputs) != 1 or req.inputs[0].datatype != "BYTES" or len(req.inputs[0].shape) != 1:
        raise HTTPException(status_code=400, detail="expected one BYTES input of shape [N]")
    inp = req.inputs[0]
    size = (inp.parameters or {}).get("binary_data_size")
    if not isinstance(size, int) or n + size > len(body):
        raise HTTPException(status_code=400, detail=f"input '{inp.name}': bad binary_data_size")
    try:
        images = split_bytes(memoryview(body)[n:n + size], inp.shape[0])
    except ValueError as e:
        raise HTTPException(status_code=400, detail=f"input '{inp.name}': {e}")
    output, k = OUTPUT_NAMES[0], 5
    for o in req.outputs or []:
        if o.name not in OUTPUT_NAMES:
            raise HTTPException(status_code=400, detail=f"unknown output '{o.name}'")
        output = o.name
        k = int((o.parameters or {}).get("classification", k))
    data = await run_in_threadpool(classify, images, k, output)
    return InferenceResponse(model_name=MODEL_NAME, model_version="1", id=req.id, outputs=[
        ResponseOutput(name=output, shape=[len(images), k], datatype="BYTES", data=data)])


@app.exception_handler(HTTPException)
async def _err(request: Request, exc: HTTPException):
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)
