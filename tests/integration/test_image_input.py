"""Image inputs through the server (config.json "image_inputs", infer/infer.c): JPEG and PNG
files sent as BYTES (binary extension, JSON base64, tritonclient HTTP and gRPC) become exactly
the tensor users compute in Python with Pillow and torchvision's steps; bad files get 400
naming the input and the row, and nothing else is affected.

The models are Identity graphs, so the response is the preprocessed tensor itself and can be
compared bit for bit with the reference (Pillow + numpy in float32, as torchvision computes).
src/image/ is checked in depth on many input classes by test_image_exact.py; here the point is
the server path: wire forms, batching of several files, merging across requests, errors.
"""
import base64
import io
import json
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import skimage
from conftest import build_repo, dedicated_server, http_get, _onnx_bytes
from oip import binary_body, bytes_tensor, post_infer, split_binary_response
import rawhttp

SKDATA = Path(skimage.__file__).parent / "data"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RGB_SPEC = {"decode": "rgb", "resize": {"shorter_side": 256, "filter": "bilinear"},
            "center_crop": [224, 224], "scale": 255.0, "mean": list(MEAN), "std": list(STD),
            "layout": "NCHW", "dtype": "FP32"}
GRAY_SPEC = {"decode": "gray", "resize": {"height": 64, "width": 48, "filter": "bicubic"},
             "layout": "NHWC", "dtype": "UINT8"}
BGR16_SPEC = {"decode": "bgr", "resize": {"shorter_side": 40, "filter": "nearest"},
              "center_crop": 32, "mean": [0.5], "std": [0.25], "dtype": "FP16"}


def identity_model(dtype, shape):
    from onnx import TensorProto as TP
    from onnx import helper
    t = {"FP32": TP.FLOAT, "FP16": TP.FLOAT16, "UINT8": TP.UINT8}[dtype]
    return _onnx_bytes([helper.make_node("Identity", ["image"], ["pixels"])], "img",
                       [helper.make_tensor_value_info("image", t, shape)],
                       [helper.make_tensor_value_info("pixels", t, shape)])


# ---- the reference: what a Python user computes
def reference(data, spec):
    im = Image.open(io.BytesIO(data))
    im = im.convert("L" if spec.get("decode") == "gray" else "RGB")
    rs = spec.get("resize")
    filt = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST}[rs["filter"]] if rs else None
    if rs and "shorter_side" in rs:  # torchvision Resize(int)
        w, h = im.size
        s = rs["shorter_side"]
        short, long = (w, h) if w <= h else (h, w)
        ns, nl = s, int(s * long / short)
        size = (ns, nl) if w <= h else (nl, ns)
        im = im.resize(size, filt)
    elif rs:
        im = im.resize((rs["width"], rs["height"]), filt)
    crop = spec.get("center_crop")
    if crop:
        ch, cw = (crop, crop) if isinstance(crop, int) else crop
        w, h = im.size
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        im = im.crop((left, top, left + cw, top + ch))
    x = np.asarray(im, dtype=np.uint8)
    if x.ndim == 2:
        x = x[:, :, None]
    if spec.get("decode") == "bgr":
        x = x[:, :, ::-1]
    dtype = spec.get("dtype", "FP32")
    if dtype != "UINT8":
        c = x.shape[2]
        mean = np.array((spec.get("mean", [0.0]) * 3)[:c] if len(spec.get("mean", [0])) == 1
                        else spec["mean"], np.float32)
        std = np.array((spec.get("std", [1.0]) * 3)[:c] if len(spec.get("std", [1])) == 1
                       else spec["std"], np.float32)
        x = x.astype(np.float32) / np.float32(spec.get("scale", 255.0))
        x = (x - mean) / std
        if dtype == "FP16":
            x = x.astype(np.float16)
    if spec.get("layout", "NCHW") == "NCHW":
        x = np.ascontiguousarray(x.transpose(2, 0, 1))
    return x


def photo(name, fmt, **save):
    im = Image.open(SKDATA / name).convert("RGB")
    b = io.BytesIO()
    im.save(b, fmt, **save)
    return b.getvalue()


@pytest.fixture(scope="module")
def files():
    return {
        "chelsea_q90": photo("chelsea.png", "JPEG", quality=90),
        "coffee_png": photo("coffee.png", "PNG"),
        "astronaut_q75": photo("astronaut.png", "JPEG", quality=75, subsampling=0),
        "rocket_prog": photo("rocket.jpg", "JPEG", quality=85, progressive=True),
    }


def png_header_only(w, h):
    """A PNG whose IHDR claims w x h (RGB 8-bit) followed by a tiny IDAT and IEND: a
    decompression bomb's header, refused before any pixel is allocated."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def img_server(server_factory, tmp_path_factory):
    models = {
        "img_rgb": {"model": identity_model("FP32", [-1, 3, 224, 224]),
                    "config": {"max_batch_size": 8, "image_inputs": {"image": RGB_SPEC},
                               "dynamic_batching": {"max_queue_delay_microseconds": 2000}}},
        "img_gray": {"model": identity_model("UINT8", [-1, 64, 48, 1]),
                     "config": {"max_batch_size": 4, "image_inputs": {"image": GRAY_SPEC}}},
        "img_bgr16": {"model": identity_model("FP16", [-1, 3, 32, 32]),
                      "config": {"image_inputs": {"image": BGR16_SPEC}}},
        "img_crop": {"model": identity_model("FP32", [-1, 3, 32, 32]),
                     "config": {"image_inputs": {"image": {"center_crop": 32}}}},
        "img_one": {"model": identity_model("FP32", [3, 224, 224]),
                    "config": {"image_inputs": {"image": RGB_SPEC}}},
        "img_small_limit": {"model": identity_model("FP32", [-1, 3, 224, 224]),
                            "config": {"image_inputs": {"image": dict(RGB_SPEC,
                                                                      max_pixels=100000)}}},
        # configurations that must keep the model unavailable, with the reason logged
        "img_bad_nocrop": {"model": identity_model("FP32", [-1, 3, 224, 224]),
                           "config": {"image_inputs": {"image": {"resize": {
                               "shorter_side": 256, "filter": "bilinear"}}}}},
        "img_bad_dims": {"model": identity_model("FP32", [-1, 3, 200, 200]),
                         "config": {"image_inputs": {"image": RGB_SPEC}}},
        "img_bad_dtype": {"model": identity_model("FP32", [-1, 224, 224, 1]),
                          "config": {"image_inputs": {"image": dict(GRAY_SPEC, resize={
                              "height": 224, "width": 224, "filter": "bilinear"})}}},
        "img_bad_filter": {"model": identity_model("FP32", [-1, 3, 224, 224]),
                           "config": {"image_inputs": {"image": dict(RGB_SPEC, resize={
                               "shorter_side": 256, "filter": "cubic"})}}},
        "img_bad_input": {"model": identity_model("FP32", [-1, 3, 224, 224]),
                          "config": {"image_inputs": {"picture": RGB_SPEC}}},
    }
    repo = build_repo(tmp_path_factory.mktemp("img-repo"), models)
    yield from dedicated_server(server_factory, repo, ["--infer-threads", "2"], "img")


def infer_binary(port, model, blobs, shape=None, timeout=30):
    hdr = {"inputs": [{"name": "image", "datatype": "BYTES",
                       "shape": shape or [len(blobs)],
                       "parameters": {"binary_data_size": len(bytes_tensor(blobs))}}],
           "outputs": [{"name": "pixels", "parameters": {"binary_data": True}}]}
    body, hl = binary_body(hdr, [bytes_tensor(blobs)])
    c = rawhttp.RawConn(port, timeout=timeout)
    try:
        return post_infer(c, f"/v2/models/{model}/infer", body, header_len=hl)
    finally:
        c.close()


def pixels(resp, dtype, shape):
    head, blobs = split_binary_response(resp)
    out = head["outputs"][0]
    assert out["shape"] == list(shape), out
    return np.frombuffer(blobs["pixels"], dtype=dtype).reshape(shape)


def assert_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    if not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
        d = np.abs(got.astype(np.float64) - want.astype(np.float64))
        pytest.fail(f"tensor differs from the reference: {int((d > 0).sum())} elements, "
                    f"max {d.max()}")


def test_binary_batch_equals_python(img_server, files):
    blobs = [files["chelsea_q90"], files["coffee_png"], files["astronaut_q75"],
             files["rocket_prog"]]
    r = infer_binary(img_server.port, "img_rgb", blobs)
    assert r.status == 200, r.body[:300]
    got = pixels(r, np.float32, (4, 3, 224, 224))
    for i, b in enumerate(blobs):
        assert_bits(got[i], reference(b, RGB_SPEC))


def test_json_base64_equals_python(img_server, files):
    blobs = [files["coffee_png"], files["chelsea_q90"]]
    body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                                   "data": [base64.b64encode(b).decode() for b in blobs]}]})
    c = rawhttp.RawConn(img_server.port)
    r = post_infer(c, "/v2/models/img_rgb/infer", body.encode())
    c.close()
    assert r.status == 200, r.body[:300]
    out = r.json()["outputs"][0]
    assert out["shape"] == [2, 3, 224, 224] and out["datatype"] == "FP32"
    got = np.array(out["data"], np.float32).reshape(2, 3, 224, 224)
    for i, b in enumerate(blobs):
        assert_bits(got[i], reference(b, RGB_SPEC))


def test_shape_n_by_1_is_accepted(img_server, files):
    r = infer_binary(img_server.port, "img_rgb", [files["coffee_png"]], shape=[1, 1])
    assert r.status == 200, r.body[:300]
    assert_bits(pixels(r, np.float32, (1, 3, 224, 224))[0], reference(files["coffee_png"],
                                                                      RGB_SPEC))


@pytest.mark.parametrize("model,spec,dtype,shape", [
    ("img_gray", GRAY_SPEC, np.uint8, (64, 48, 1)),
    ("img_bgr16", BGR16_SPEC, np.float16, (3, 32, 32)),
])
def test_other_specs_equal_python(img_server, files, model, spec, dtype, shape):
    blobs = [files["astronaut_q75"], files["coffee_png"]]
    r = infer_binary(img_server.port, model, blobs)
    assert r.status == 200, r.body[:300]
    got = pixels(r, dtype, (2,) + shape)
    for i, b in enumerate(blobs):
        assert_bits(got[i], reference(b, spec))


def test_model_without_batch_dimension(img_server, files):
    r = infer_binary(img_server.port, "img_one", [files["chelsea_q90"]])
    assert r.status == 200, r.body[:300]
    assert_bits(pixels(r, np.float32, (3, 224, 224)), reference(files["chelsea_q90"], RGB_SPEC))
    r = infer_binary(img_server.port, "img_one", [files["chelsea_q90"]] * 2)
    assert r.status == 400 and "[1] BYTES" in r.json()["error"], r.body


def test_tritonclient_http_and_grpc(img_server, files):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    blobs = [files["rocket_prog"], files["coffee_png"]]
    want = np.stack([reference(b, RGB_SPEC) for b in blobs])
    arr = np.array(blobs, dtype=object)
    hc = httpclient.InferenceServerClient(f"127.0.0.1:{img_server.port}")
    inp = httpclient.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(arr, binary_data=True)
    res = hc.infer("img_rgb", [inp], outputs=[httpclient.InferRequestedOutput(
        "pixels", binary_data=True)])
    assert_bits(res.as_numpy("pixels"), want)
    hc.close()
    gc = grpcclient.InferenceServerClient(f"127.0.0.1:{img_server.grpc_port}")
    ginp = grpcclient.InferInput("image", [2], "BYTES")
    ginp.set_data_from_numpy(arr)
    res = gc.infer("img_rgb", [ginp])
    assert_bits(res.as_numpy("pixels"), want)
    gc.close()


def test_requests_merge_into_batches(img_server, files):
    """Eight clients at once (max_queue_delay 2 ms, two instances): rows of several requests
    share runs, and every client still gets its own image's tensor."""
    names = ["chelsea_q90", "coffee_png", "astronaut_q75", "rocket_prog"]
    want = {n: reference(files[n], RGB_SPEC) for n in names}
    errors = []

    def client(k):
        try:
            for j in range(6):
                n = names[(k + j) % 4]
                r = infer_binary(img_server.port, "img_rgb", [files[n]])
                assert r.status == 200, r.body[:200]
                assert_bits(pixels(r, np.float32, (1, 3, 224, 224))[0], want[n])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"client {k}: {e}")

    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not errors, errors
    st = http_get(img_server.port, "/v2/models/img_rgb/stats").json()
    bs = st["model_stats"][0]["batch_stats"]
    assert any(b["batch_size"] > 1 for b in bs), bs


BAD_FILES = {
    "text": (b"hello, not an image", "not a JPEG or PNG image"),
    "empty": (b"", "not a JPEG or PNG image"),
    "truncated_jpeg": (None, "JPEG"),
    "truncated_png": (None, "PNG"),
    "bomb": (png_header_only(100000, 100000), "over the limit of 40000000"),
    "zero_width": (png_header_only(0, 10), "PNG"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_in_a_batch_is_400_naming_the_row(img_server, files, case):
    data, want = BAD_FILES[case]
    if case == "truncated_jpeg":
        data = files["chelsea_q90"][: len(files["chelsea_q90"]) // 2]
    elif case == "truncated_png":
        data = files["coffee_png"][: len(files["coffee_png"]) // 2]
    r = infer_binary(img_server.port, "img_rgb", [files["coffee_png"], data, files["coffee_png"]])
    assert r.status == 400, r.body[:300]
    msg = r.json()["error"]
    assert msg.startswith("input 'image' row 1: ") and want in msg, msg
    r = infer_binary(img_server.port, "img_rgb", [files["coffee_png"]])
    assert r.status == 200


def test_crop_larger_than_image(img_server):
    b = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 20, 30)).save(b, "PNG")
    r = infer_binary(img_server.port, "img_crop", [b.getvalue()])
    assert r.status == 400, r.body[:300]
    assert r.json()["error"] == ("input 'image' row 0: image is 30x20, smaller than the 32x32 "
                                 "crop"), r.json()
    b = io.BytesIO()
    im = Image.new("RGB", (40, 33), (10, 20, 30))
    im.putpixel((5, 1), (200, 100, 0))
    im.save(b, "PNG")
    r = infer_binary(img_server.port, "img_crop", [b.getvalue()])
    assert r.status == 200, r.body[:300]
    assert_bits(pixels(r, np.float32, (1, 3, 32, 32))[0], reference(b.getvalue(), {
        "center_crop": 32, "scale": 255.0}))


def test_model_pixel_limit(img_server, files):
    r = infer_binary(img_server.port, "img_small_limit", [files["chelsea_q90"]])  # 451x300
    assert r.status == 400, r.body[:300]
    assert "over the limit of 100000" in r.json()["error"]


@pytest.mark.parametrize("body,want", [
    ({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 224, 224],
                  "data": [0.0] * (3 * 224 * 224)}]}, "takes image files (JPEG or PNG) as BYTES"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 2],
                  "data": ["AAAA", "AAAA"]}]}, "an image input takes [N] or [N,1] BYTES"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                  "data": ["not base64!"]}]}, "row 0: not base64"),
    ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [9],
                  "data": ["AAAA"] * 9}]}, "exceeds the model's max_batch_size 8"),
])
def test_bad_requests(img_server, body, want):
    c = rawhttp.RawConn(img_server.port)
    r = post_infer(c, "/v2/models/img_rgb/infer", json.dumps(body).encode())
    c.close()
    assert r.status == 400, r.body[:300]
    assert want in r.json()["error"], r.json()


def test_metadata_shows_the_tensor_and_config_the_image_form(img_server):
    meta = http_get(img_server.port, "/v2/models/img_rgb").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    ii = http_get(img_server.port, "/v2/models/img_rgb/config").json()["image_inputs"]["image"]
    assert ii["decode"] == "rgb" and ii["resize"] == {"shorter_side": 256, "filter": "bilinear"}
    assert ii["center_crop"] == [224, 224] and ii["dtype"] == "FP32" and ii["layout"] == "NCHW"
    assert ii["scale"] == 255 and ii["max_pixels"] == 40000000
    assert np.float32(ii["std"][1]) == np.float32(STD[1])


@pytest.mark.parametrize("model,why", [
    ("img_bad_nocrop", "give 'center_crop' or a resize to 'height' and 'width'"),
    ("img_bad_dims", "the model's input dimension 2 is 200"),
    ("img_bad_dtype", "dtype UINT8, but the model's input is FP32"),
    ("img_bad_filter", "must be nearest, bilinear, bicubic, box, hamming or lanczos"),
    ("img_bad_input", "'picture' is not an input of the model"),
])
def test_bad_image_config_keeps_model_unavailable(img_server, model, why):
    assert http_get(img_server.port, f"/v2/models/{model}/ready").status != 200
    assert why in img_server.log_tail(400), img_server.log_tail(40)


@pytest.fixture(scope="module")
def mnet_server(server_factory, tmp_path_factory, demo_models):
    """mobilenetv2 taking photos, with Triton's classification extension and a label file."""
    labels = "".join(f"class_{i}\n" for i in range(1000)).encode()
    models = {"mnet_img": {"model": demo_models / "mobilenetv2/1/model.onnx",
                           "config": {"max_batch_size": 8, "image_inputs": {"input": RGB_SPEC},
                                      "output": [{"name": "output",
                                                  "label_filename": "labels.txt"}]},
                           "files": {"labels.txt": labels}}}
    repo = build_repo(tmp_path_factory.mktemp("mnet-img-repo"), models)
    yield from dedicated_server(server_factory, repo, ["--infer-threads", "2"], "mnet-img")


def test_photo_to_top5_labels(mnet_server, demo_models, files):
    """JPEG bytes in, "score:index:label" out: the top 5 of ONNX Runtime's own output on the
    Python reference tensor (same library release, one thread), lower index first on ties."""
    import onnxruntime as ort
    import tritonclient.http as httpclient
    blobs = [files["chelsea_q90"], files["astronaut_q75"]]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(demo_models / "mobilenetv2/1/model.onnx"), so)
    logits = sess.run(None, {"input": np.stack([reference(b, RGB_SPEC) for b in blobs])})[0]
    hc = httpclient.InferenceServerClient(f"127.0.0.1:{mnet_server.port}")
    inp = httpclient.InferInput("input", [2], "BYTES")
    inp.set_data_from_numpy(np.array(blobs, dtype=object), binary_data=True)
    res = hc.infer("mnet_img", [inp], outputs=[httpclient.InferRequestedOutput(
        "output", binary_data=True, class_count=5)])
    got = res.as_numpy("output")
    hc.close()
    assert got.shape == (2, 5)
    for row in range(2):
        order = sorted(range(1000), key=lambda i: (-logits[row, i], i))[:5]
        want = [f"{logits[row, i]:f}:{i}:class_{i}" for i in order]
        assert [g.decode() for g in got[row]] == want
