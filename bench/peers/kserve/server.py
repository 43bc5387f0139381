"""The KServe peer: KServe's own Python model server (the `kserve` package's ModelServer, REST
v2 = the Open Inference Protocol) with a custom predictor running ONNX Runtime, as a KServe user
writes it when Triton is not an option.

    build/bench/venv-kserve/bin/python bench/peers/kserve/server.py \
        --model-repository models --http-port 8005 --workers 2 \
        --log_config_file bench/peers/kserve/logging.json     # workers = cores

It runs in its own venv (build/bench/venv-kserve, made by bench/run.py from
bench/peers/kserve/requirements.txt): kserve pins fastapi, pydantic, protobuf and grpcio
versions of its own, and the main .venv stays as requirements.txt says.

- One OnnxModel (a kserve.Model) per model directory <repo>/<name>/<version>/model.onnx, the
  highest version. ModelServer(workers=N) starts N uvicorn worker processes with the
  `spawn` start method and pickles the models into them; an ONNX Runtime session cannot be
  pickled, so __getstate__ leaves it out and __setstate__ loads it again: each worker has its
  own session, intra_op_num_threads = 1 (so the intra-op threads add up to the core count, as
  onnxd's defaults), inter-op 1, spinning off.
- predict() takes KServe's InferRequest (JSON decoded by KServe; the binary tensor extension,
  Inference-Header-Content-Length, decoded by KServe too), runs the session and returns an
  InferResponse; outputs asked for with "parameters": {"binary_data": true} go back in the
  binary extension (KServe's REST encoder does that from requested_outputs).
- gRPC off (the benchmark drives REST only); no access log (logging.json, read by KServe's own
  --log_config_file flag in every worker: uvicorn.access at WARNING), as the other peers run;
  KServe's defaults otherwise. Responses without a request id get generate_uuid(), as KServe's
  own predictors do (its response model requires an id).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import generate_uuid


class OnnxModel(Model):
    def __init__(self, name: str, path: str, version: str):
        super().__init__(name)
        self.path, self.version = path, version
        self.session = None
        self.load()

    def load(self) -> bool:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.in_names = [i.name for i in self.session.get_inputs()]
        self.out_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def __getstate__(self):
        state = dict(self.__dict__)
        state["session"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feeds = {}
        for inp in payload.inputs:
            if inp.name not in self.in_names:
                raise ValueError(f"unknown input '{inp.name}'")
            feeds[inp.name] = inp.as_numpy().astype(np.float32, copy=False)
        ys = self.session.run(self.out_names, feeds)
        outs = []
        for name, y in zip(self.out_names, ys):
            o = InferOutput(name=name, shape=list(y.shape), datatype="FP32")
            o.set_data_from_numpy(y, binary_data=False)
            outs.append(o)
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=outs,
                             model_version=self.version,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)


def models_in(repo: str) -> list[OnnxModel]:
    out = []
    for name in sorted(os.listdir(repo)):
        d = os.path.join(repo, name)
        vers = [int(v) for v in os.listdir(d) if v.isdigit() and int(v) > 0
                and os.path.exists(os.path.join(d, v, "model.onnx"))] if os.path.isdir(d) else []
        if vers:
            v = str(max(vers))
            out.append(OnnxModel(name, os.path.join(d, v, "model.onnx"), v))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-repository", default="models")
    ap.add_argument("--http-port", type=int, default=8005)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a, _ = ap.parse_known_args()
    models = models_in(a.model_repository)
    if not models:
        print(f"no models in {a.model_repository}", file=sys.stderr)
        return 1
    ModelServer(http_port=a.http_port, workers=a.workers, enable_grpc=False,
                enable_latency_logging=False, access_log_format=None).start(models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
