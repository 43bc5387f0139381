"""KServe's Python SDK against a running onnxd: run by test_kserve_sdk.py in a venv of its own
(.venv-kserve, pinned by tests/integration/requirements-kserve.txt), because the kserve package
pins protobuf < 7 and other versions that .venv does not hold.

usage: kserve_sdk_client.py BASE_URL MODE [MODEL [UNAVAILABLE_MODEL]]
       kserve_sdk_client.py HOST:PORT grpc [MODEL [UNAVAILABLE_MODEL]]

MODE grpc: kserve.InferenceGRPCClient (KServe's gRPC client) against onnxd's gRPC port:
liveness, readiness, model readiness, inference of MODEL and of an unknown model.

MODE all: every call a user makes with kserve.InferenceRESTClient (protocol v2) against MODEL
(add_sub_fp32: INPUT0, INPUT1 [1,16] FP32 -> OUTPUT0 = sum, OUTPUT1 = difference): liveness,
readiness, model readiness (also of an unknown model), server and model metadata (the SDK's
REST client has no call for them: the bodies are parsed by KServe's own response models, as its
server writes them), inference with JSON data and with the binary tensor extension
(InferInput.set_data_from_numpy(binary_data=True), outputs asked as binary), and inference of
an unknown model, and the readiness of UNAVAILABLE_MODEL (default bad_cfg). MODE health: liveness and readiness only (the test calls it while onnxd
drains: it prints "imported" once the SDK is imported, then waits for a line on stdin before
calling, so that the call lands inside the drain).

Prints one JSON object: for each call {"value": ...} or {"raised": exception type, "status":
HTTP status, "message": str(exception)}. The test asserts on it; nothing is asserted here.
"""

import asyncio
import json
import sys

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.v2_datamodels import (
    ModelMetadataResponse,
    ModelReadyResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)


async def outcome(coro):
    try:
        return {"value": await coro}
    except httpx.HTTPStatusError as e:
        return {"raised": type(e).__name__, "status": e.response.status_code,
                "message": str(e)}
    except Exception as e:  # noqa: BLE001 - reported to the test as it is
        return {"raised": type(e).__name__, "status": None, "message": str(e)}


def inputs(a, b, binary):
    out = []
    for name, arr in (("INPUT0", a), ("INPUT1", b)):
        x = InferInput(name, list(arr.shape), "FP32")
        x.set_data_from_numpy(arr, binary_data=binary)
        out.append(x)
    return out


async def infer(client, base, model, binary):
    a = np.arange(16, dtype=np.float32).reshape(1, 16) / 4.0
    b = np.full((1, 16), 0.75, dtype=np.float32)
    outs = [RequestedOutput(n, {"binary_data": True}) for n in ("OUTPUT0", "OUTPUT1")]
    req = InferRequest(model, inputs(a, b, binary), request_id="sdk-1",
                       request_outputs=outs if binary else None)
    headers = {}
    res = await client.infer(base, req, model_name=model, response_headers=headers)
    return {
        "model_name": res.model_name,
        "id": res.id,
        # The SDK decodes binary outputs into plain data: the header says how they came.
        "binary_response": "inference-header-content-length" in {k.lower() for k in headers},
        "outputs": {o.name: {"shape": list(o.shape), "datatype": o.datatype,
                             "data": o.as_numpy().reshape(-1).tolist()}
                    for o in res.outputs},
        "want_sum": (a + b).reshape(-1).tolist(),
        "want_diff": (a - b).reshape(-1).tolist(),
    }


async def parsed(base, path, model):
    """GET base+path, parsed by KServe's pydantic response model (a field missing or of the
    wrong type raises)."""
    async with httpx.AsyncClient(timeout=30) as h:
        r = await h.get(base + path)
    if r.status_code != 200:
        raise httpx.HTTPStatusError(f"{r.status_code}: {r.text}", request=r.request, response=r)
    return model.model_validate_json(r.content).model_dump()


async def main(base, mode, model, unavailable):
    cfg = RESTConfig(protocol="v2", retries=0, timeout=30)
    res = {}
    async with InferenceRESTClient(cfg) as c:
        res["live"] = await outcome(c.is_server_live(base))
        res["ready"] = await outcome(c.is_server_ready(base))
        if mode == "all":
            res["model_ready"] = await outcome(c.is_model_ready(base, model))
            res["model_ready_unknown"] = await outcome(c.is_model_ready(base, "no_such_model"))
            res["model_ready_unavailable"] = await outcome(c.is_model_ready(base, unavailable))
            res["live_body"] = await outcome(parsed(base, "/v2/health/live", ServerLiveResponse))
            res["ready_body"] = await outcome(parsed(base, "/v2/health/ready",
                                                     ServerReadyResponse))
            res["model_ready_body"] = await outcome(parsed(base, f"/v2/models/{model}/ready",
                                                           ModelReadyResponse))
            res["server_metadata"] = await outcome(parsed(base, "/v2", ServerMetadataResponse))
            res["model_metadata"] = await outcome(parsed(base, f"/v2/models/{model}",
                                                         ModelMetadataResponse))
            res["infer_json"] = await outcome(infer(c, base, model, binary=False))
            res["infer_binary"] = await outcome(infer(c, base, model, binary=True))
            res["infer_unknown"] = await outcome(infer(c, base, "no_such_model", binary=False))
    return res


async def grpc_main(target, model, unavailable):
    """MODE grpc: kserve.InferenceGRPCClient against onnxd's gRPC port (target HOST:PORT)."""
    import grpc
    from kserve import InferenceGRPCClient

    async def g_outcome(coro):
        try:
            return {"value": await coro}
        except grpc.RpcError as e:
            return {"raised": type(e).__name__, "code": e.code().name, "message": e.details()}
        except Exception as e:  # noqa: BLE001 - reported to the test as it is
            return {"raised": type(e).__name__, "code": None, "message": str(e)}

    async def g_infer(c, name):
        a = np.arange(16, dtype=np.float32).reshape(1, 16) / 4.0
        b = np.full((1, 16), 0.75, dtype=np.float32)
        ins = []
        for n, arr in (("INPUT0", a), ("INPUT1", b)):
            x = InferInput(n, list(arr.shape), "FP32")
            x.set_data_from_numpy(arr)
            ins.append(x)
        res = await c.infer(InferRequest(name, ins, request_id="sdk-g1"))
        return {"model_name": res.model_name, "id": res.id,
                "outputs": {o.name: {"shape": list(o.shape), "datatype": o.datatype,
                                     "data": o.as_numpy().reshape(-1).tolist()}
                            for o in res.outputs},
                "want_sum": (a + b).reshape(-1).tolist(), "want_diff": (a - b).reshape(-1).tolist()}

    res = {}
    async with InferenceGRPCClient(target, timeout=30, retries=0) as c:
        res["live"] = await g_outcome(c.is_server_live())
        res["ready"] = await g_outcome(c.is_server_ready())
        res["model_ready"] = await g_outcome(c.is_model_ready(model))
        res["model_ready_unavailable"] = await g_outcome(c.is_model_ready(unavailable))
        res["infer"] = await g_outcome(g_infer(c, model))
        res["infer_unknown"] = await g_outcome(g_infer(c, "no_such_model"))
    return res


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[2] == "grpc":
        print(json.dumps(asyncio.run(grpc_main(sys.argv[1], sys.argv[3] if len(sys.argv) > 3
                                               else "add_sub_fp32",
                                               sys.argv[4] if len(sys.argv) > 4 else "bad_cfg"))))
        sys.exit(0)
    if len(sys.argv) < 3 or sys.argv[2] not in ("all", "health"):
        sys.stderr.write(__doc__)
        sys.exit(2)
    model_name = sys.argv[3] if len(sys.argv) > 3 else "add_sub_fp32"
    bad = sys.argv[4] if len(sys.argv) > 4 else "bad_cfg"
    if sys.argv[2] == "health":
        print("imported", flush=True)
        sys.stdin.readline()
    print(json.dumps(asyncio.run(main(sys.argv[1].rstrip("/"), sys.argv[2], model_name, bad))))
