"""bench/s5.py: what scenario S5 (image classification from JPEG bytes) needs, made at bench time.

    .venv/bin/python bench/s5.py [--work build/bench]     # makes the files below and says so

S5 sends one JPEG per request as a BYTES tensor of shape [1] in the binary tensor extension and
asks for the top 5 classes (Triton's classification extension); the server decodes, resizes the
shorter side to 256 (bilinear), crops the centre 224x224, normalizes with ImageNet's mean and
std, runs MobileNetV2 and answers BYTES [1, 5] "score:index:label" strings. Made here, under
build/bench/ (git-ignored), nothing committed:

  s5/photo.jpg        a real photo: scikit-image's coffee.png (600x400, shipped in the wheel's
                      skimage/data), centre-cropped to 4:3 (533x400) and resized with Pillow
                      (Lanczos) to 500x375, saved as a baseline JPEG at quality 90
  s5.bin              the request body: JSON header + 4-byte little-endian length + the JPEG
                      (Inference-Header-Content-Length is the header's length)
  image-repo/         onnxd's model repository for S5: mobilenetv2_image/config.json
                      (CONFIG below: the image input and the labels), labels.txt (1000
                      generated labels, class_0 .. class_999) and 1/model.onnx (hard link to
                      models/mobilenetv2/1/model.onnx, copied if that fails)

The peers (python-image, go-image) are given the same model file and labels.txt; the ceiling
(build/onnxd-img-limit) the same photo and the same preprocessing values (IMG_LIMIT_FLAGS).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

MODEL = "mobilenetv2_image"  # the name S5's requests use, for onnxd and the peers alike
SOURCE_MODEL = "mobilenetv2"  # the ONNX file, shared with S1/S2 (input "input", output "output")
PHOTO = "coffee.png"
SIZE = (500, 375)
QUALITY = 90
TOP_K = 5
NUM_LABELS = 1000
CONFIG = {
    "image_inputs": {"input": {"decode": "rgb",
                               "resize": {"shorter_side": 256, "filter": "bilinear"},
                               "center_crop": [224, 224], "scale": 255.0,
                               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                               "layout": "NCHW", "dtype": "FP32"}},
    "output": [{"name": "output", "label_filename": "labels.txt"}],
}
# build/onnxd-img-limit's flags for the same preprocessing as CONFIG
IMG_LIMIT_FLAGS = ["--shorter-side", "256", "--crop", "224", "--filter", "bilinear"]

_MAKE_PHOTO = r'''
import os, sys
import skimage
from PIL import Image
src = os.path.join(os.path.dirname(skimage.__file__), "data", sys.argv[1])
w, h = int(sys.argv[3]), int(sys.argv[4])
img = Image.open(src).convert("RGB")
sw, sh = img.size
if sw * h > sh * w:      # wider than w:h: crop the sides
    cw = round(sh * w / h)
    box = ((sw - cw) // 2, 0, (sw - cw) // 2 + cw, sh)
else:                    # taller: crop top and bottom
    ch = round(sw * h / w)
    box = (0, (sh - ch) // 2, sw, (sh - ch) // 2 + ch)
img = img.crop(box).resize((w, h), Image.LANCZOS)
img.save(sys.argv[2], "JPEG", quality=int(sys.argv[5]))
print(src)
'''


def header(jpeg_len: int) -> bytes:
    """The request's JSON header for one image of jpeg_len bytes."""
    return json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": 4 + jpeg_len}}],
                       "outputs": [{"name": "output", "parameters": {"classification": TOP_K}}]},
                      separators=(",", ":")).encode()


def prepare(work: Path, models: Path, py: Path) -> dict:
    """Makes the photo, the request body and onnxd's repository under work (again only when
    missing). Returns paths and sizes: photo, body, header_len, jpeg_bytes, repo, model_file,
    labels, source (the photo it was made from)."""
    d = work / "s5"
    d.mkdir(parents=True, exist_ok=True)
    photo = d / "photo.jpg"
    source = f"skimage/data/{PHOTO}"
    if not photo.exists():
        tmp = d / "photo.tmp.jpg"
        r = subprocess.run([str(py), "-c", _MAKE_PHOTO, PHOTO, str(tmp), str(SIZE[0]),
                            str(SIZE[1]), str(QUALITY)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("cannot make the S5 photo (Pillow and scikit-image in .venv?): "
                               + r.stderr.strip()[-400:])
        tmp.replace(photo)
    jpeg = photo.read_bytes()
    hdr = header(len(jpeg))
    body = work / "s5.bin"
    data = hdr + struct.pack("<I", len(jpeg)) + jpeg
    if not body.exists() or body.read_bytes() != data:
        body.write_bytes(data)

    repo = work / "image-repo"
    mdir = repo / MODEL
    (mdir / "1").mkdir(parents=True, exist_ok=True)
    cfg = json.dumps(CONFIG, indent=1) + "\n"
    if not (mdir / "config.json").exists() or (mdir / "config.json").read_text() != cfg:
        (mdir / "config.json").write_text(cfg)
    labels = "".join(f"class_{i}\n" for i in range(NUM_LABELS))
    if not (mdir / "labels.txt").exists() or (mdir / "labels.txt").read_text() != labels:
        (mdir / "labels.txt").write_text(labels)
    src = models / SOURCE_MODEL / "1" / "model.onnx"
    dst = mdir / "1" / "model.onnx"
    if not (dst.exists() and os.path.samefile(src, dst)):  # a copy is refreshed every time
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return {"photo": photo, "body": body, "header_len": len(hdr), "jpeg_bytes": len(jpeg),
            "body_bytes": len(data), "repo": repo, "model_file": dst,
            "labels": mdir / "labels.txt", "source": source, "size": SIZE, "quality": QUALITY}


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(root / "build" / "bench"))
    ap.add_argument("--models", default=str(root / "models"))
    a = ap.parse_args()
    p = prepare(Path(a.work), Path(a.models), root / ".venv" / "bin" / "python")
    for k, v in p.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
