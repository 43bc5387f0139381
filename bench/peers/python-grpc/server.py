"""The Python gRPC peer: the Open Inference Protocol's gRPC service (inference.GRPCInferenceService)
written as a Python team would write it, as the gRPC benchmarks' (S2g, S3g) Python baseline.

    .venv/bin/python bench/peers/python-grpc/server.py --model-repository models --port 8001

What it is, on purpose: grpcio's synchronous server (grpc.server with a ThreadPoolExecutor), the
servicer built on tritonclient's generated classes (service_pb2, service_pb2_grpc), one ONNX
Runtime InferenceSession per model, numpy for the tensors. Inputs are read from
raw_input_contents with np.frombuffer (what tritonclient and every current client send), or
from the typed contents (fp32_contents) when a client sends those; outputs always go back in
raw_output_contents. Nothing is tuned beyond what such a service would set: the thread pool has
a worker per core times 4 (inference releases the GIL), sessions use intra_op_num_threads = 1 so
concurrent calls spread over the cores, and the message size limits are raised so 600 KB
MobileNetV2 requests fit (grpcio's default receive limit is 4 MiB; raised to 64 MiB).

Methods: ModelInfer, ServerLive, ServerReady, ModelReady, ModelMetadata; the rest answer
UNIMPLEMENTED (the generated base class's default).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from concurrent import futures

import grpc
import numpy as np
import onnxruntime as ort
from tritonclient.grpc import service_pb2, service_pb2_grpc

# ONNX Runtime's element types -> (Open Inference Protocol datatype, numpy dtype)
ORT_TYPES = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(int64)": ("INT64", np.int64),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int16)": ("INT16", np.int16),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(bool)": ("BOOL", np.bool_),
}
DTYPES = {name: dt for name, dt in ORT_TYPES.values()}
TYPED_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents",
                  "INT32": "int_contents", "INT16": "int_contents", "INT8": "int_contents",
                  "UINT8": "uint_contents", "BOOL": "bool_contents"}


class Model:
    def __init__(self, name: str, version: str, path: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.name, self.version = name, version
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def metadata(self) -> service_pb2.ModelMetadataResponse:
        def tensors(args):
            return [service_pb2.ModelMetadataResponse.TensorMetadata(
                name=a.name, datatype=ORT_TYPES.get(a.type, ("BYTES", None))[0],
                shape=[d if isinstance(d, int) else -1 for d in a.shape]) for a in args]
        return service_pb2.ModelMetadataResponse(
            name=self.name, versions=[self.version], platform="onnxruntime_onnx",
            inputs=tensors(self.session.get_inputs()), outputs=tensors(self.session.get_outputs()))


def load_repository(root: str) -> dict[str, Model]:
    """Every models/<name>/<version>/model.onnx, the highest numeric version of each name."""
    models = {}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        versions = [v for v in os.listdir(d) if v.isdigit() and
                    os.path.isfile(os.path.join(d, v, "model.onnx"))] if os.path.isdir(d) else []
        if versions:
            v = max(versions, key=int)
            models[name] = Model(name, v, os.path.join(d, v, "model.onnx"))
    return models


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, models: dict[str, Model]):
        self.models = models

    def _model(self, name: str, version: str, context) -> Model:
        m = self.models.get(name)
        if m is None or (version and version != m.version):
            context.abort(grpc.StatusCode.NOT_FOUND, f"model '{name}' version '{version}' unknown")
        return m

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelReady(self, request, context):
        m = self.models.get(request.name)
        ready = m is not None and (not request.version or request.version == m.version)
        return service_pb2.ModelReadyResponse(ready=ready)

    def ModelMetadata(self, request, context):
        return self._model(request.name, request.version, context).metadata()

    def ModelInfer(self, request, context):
        m = self._model(request.model_name, request.model_version, context)
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "raw_input_contents must have one entry per input")
        feeds = {}
        for i, t in enumerate(request.inputs):
            if t.name not in m.inputs:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown input '{t.name}'")
            dtype = DTYPES.get(t.datatype)
            if dtype is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"datatype '{t.datatype}' not supported")
            shape = tuple(t.shape)
            try:
                if raw:
                    a = np.frombuffer(raw[i], dtype=dtype).reshape(shape)
                else:
                    a = np.asarray(getattr(t.contents, TYPED_CONTENTS[t.datatype]),
                                   dtype=dtype).reshape(shape)
            except ValueError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"input '{t.name}': {e}")
            feeds[t.name] = a
        wanted = [o.name for o in request.outputs] or m.outputs
        try:
            results = m.session.run(wanted, feeds)
        except Exception as e:  # ORT's errors (wrong shape, unknown output) are the caller's
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        resp = service_pb2.ModelInferResponse(model_name=m.name, model_version=m.version,
                                              id=request.id)
        for name, r in zip(wanted, results):
            r = np.ascontiguousarray(r)
            datatype = next((k for k, v in DTYPES.items() if v == r.dtype.type), "BYTES")
            resp.outputs.add(name=name, datatype=datatype, shape=list(r.shape))
            resp.raw_output_contents.append(r.tobytes())
        return resp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-repository", default=os.environ.get("PEER_MODEL_REPOSITORY",
                                                                  "models"))
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--workers", type=int, default=4 * (os.cpu_count() or 1),
                    help="thread pool size (calls served at once)")
    args = ap.parse_args()
    models = load_repository(args.model_repository)
    if not models:
        sys.exit(f"no models under {args.model_repository}")
    limit = 64 * 1024 * 1024
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", limit),
                                  ("grpc.max_send_message_length", limit)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(models), server)
    if server.add_insecure_port(f"{args.host}:{args.port}") == 0:
        sys.exit(f"cannot listen on {args.host}:{args.port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=1))
    print(f"python-grpc peer: {', '.join(models)} on {args.host}:{args.port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
