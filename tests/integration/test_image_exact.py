"""src/image/ against the Python reference, bit for bit.

The reference is what users run: PIL.Image.open(f) [ImageOps.exif_transpose] .convert("RGB"/"L"),
torchvision's Resize(256) / Resize((h, w)) (Pillow's Image.resize), CenterCrop((h, w)) (offsets
int(round((H - h) / 2.0))), ToTensor (float32(x) / 255) and Normalize ((x - mean) / std in
float32), reproduced here with Pillow and numpy in float32 (torch is not needed for that
arithmetic). build/tests/onnxd-imgtool runs ox_img_preprocess with the same spec on the same
file; the raw bytes must be equal (UINT8 byte for byte, FP32/FP16 bit for bit).

Inputs are made in a temporary directory at set-up, nothing is written into the repository:
photos from scikit-image's data folder re-encoded by Pillow as JPEG (qualities, subsamplings,
progressive, grayscale, CMYK, EXIF orientations) and PNG (RGB, RGBA, palette with and without
tRNS, L, LA, 1/2/4-bit gray, 16-bit gray and RGB, Adam7 interlaced: the sub-byte, 16-bit and
interlaced files are written by a small PNG writer below, since Pillow cannot write them), and
generated edge cases (1x1, 1x10000, 10000x1, 333x217 noise).
"""
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import skimage

ROOT = Path(__file__).resolve().parents[2]
SKDATA = Path(skimage.__file__).parent / "data"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def tool_path():
    b = os.environ.get("ONNXD_BUILD")
    if b:
        p = Path(b)
    elif os.environ.get("ONNXD_BIN"):
        p = Path(os.environ["ONNXD_BIN"]).parent
    else:
        p = Path("build")
    if not p.is_absolute():
        p = ROOT / p
    return p / "tests" / "onnxd-imgtool"


# ---- a minimal PNG writer (any colour type and depth, optional Adam7) for what Pillow can't save
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def _pack_rows(a, depth):
    """a: H x W x C integer samples -> list of raw rows (bytes, no filter byte)."""
    h, w, c = a.shape
    if depth == 16:
        return [a[y].astype(">u2").tobytes() for y in range(h)]
    if depth == 8:
        return [a[y].astype(np.uint8).tobytes() for y in range(h)]
    per = 8 // depth
    rows = []
    for y in range(h):
        v = a[y, :, 0].astype(np.uint8)
        pad = (-len(v)) % per
        v = np.concatenate([v, np.zeros(pad, np.uint8)]).reshape(-1, per)
        b = np.zeros(len(v), np.uint8)
        for i in range(per):
            b |= (v[:, i] << (8 - depth * (i + 1))).astype(np.uint8)
        rows.append(b.tobytes())
    return rows


def write_png(path, a, color_type, depth, interlace=False, plte=None, trns=None, exif=None):
    if a.ndim == 2:
        a = a[:, :, None]
    h, w = a.shape[:2]

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    raw = b""
    if interlace:
        for xs, ys, dx, dy in ADAM7:
            sub = a[ys::dy, xs::dx]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                continue
            raw += b"".join(b"\0" + r for r in _pack_rows(sub, depth))
    else:
        raw = b"".join(b"\0" + r for r in _pack_rows(a, depth))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))
    if plte is not None:
        out += chunk(b"PLTE", bytes(plte))
    if trns is not None:
        out += chunk(b"tRNS", bytes(trns))
    if exif is not None:
        out += chunk(b"eXIf", exif)
    out += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    Path(path).write_bytes(out)


def _exif_bytes(orientation):
    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def make_inputs(d):
    """{name: (path, class, kind)}; kind: photo, small (resize specs only), thin (exact only)."""
    d = Path(d)
    photos = {
        "astronaut": Image.open(SKDATA / "astronaut.png").convert("RGB"),
        "chelsea": Image.open(SKDATA / "chelsea.png").convert("RGB"),
        "coffee": Image.open(SKDATA / "coffee.png").convert("RGB"),
        "rocket": Image.open(SKDATA / "rocket.jpg").convert("RGB"),
    }
    out = {}

    def add(name, cls, kind, save):
        p = d / name
        save(p)
        out[name] = (p, cls, kind)

    for pn, im in photos.items():
        for q in (50, 75, 90, 95):
            add(f"{pn}_q{q}.jpg", "jpeg_420", "photo", lambda p, im=im, q=q: im.save(p, "JPEG", quality=q))
        add(f"{pn}_444.jpg", "jpeg_444", "photo", lambda p, im=im: im.save(p, "JPEG", quality=90, subsampling="4:4:4"))
        add(f"{pn}_422.jpg", "jpeg_422", "photo", lambda p, im=im: im.save(p, "JPEG", quality=90, subsampling="4:2:2"))
        add(f"{pn}_prog.jpg", "jpeg_progressive", "photo", lambda p, im=im: im.save(p, "JPEG", quality=85, progressive=True))
        add(f"{pn}_gray.jpg", "jpeg_gray", "photo", lambda p, im=im: im.convert("L").save(p, "JPEG", quality=85))
        add(f"{pn}_cmyk.jpg", "jpeg_cmyk", "photo", lambda p, im=im: im.convert("CMYK").save(p, "JPEG", quality=85))
        add(f"{pn}.png", "png_rgb", "photo", lambda p, im=im: im.save(p, "PNG"))

    # the rest from two photos, to keep the run short
    for pn in ("chelsea", "astronaut"):
        im = photos[pn]
        a = np.asarray(im)
        L = np.asarray(im.convert("L"))
        rgba = np.dstack([a, (np.arange(a.shape[1])[None, :] + np.zeros((a.shape[0], 1), int)) % 256])
        add(f"{pn}_rgba.png", "png_rgba", "photo", lambda p, rgba=rgba: Image.fromarray(rgba.astype(np.uint8), "RGBA").save(p))
        pal = im.quantize(200)
        add(f"{pn}_p.png", "png_palette", "photo", lambda p, pal=pal: pal.save(p))
        add(f"{pn}_p_trns.png", "png_palette_trns", "photo",
            lambda p, pal=pal: pal.save(p, transparency=bytes(range(0, 200))))
        add(f"{pn}_l.png", "png_gray8", "photo", lambda p: im.convert("L").save(p))
        add(f"{pn}_la.png", "png_gray_alpha", "photo", lambda p: im.convert("LA").save(p))
        for bits in (1, 2, 4):
            add(f"{pn}_g{bits}.png", f"png_gray{bits}", "photo",
                lambda p, bits=bits: write_png(p, L >> (8 - bits), 0, bits))
        add(f"{pn}_p4.png", "png_palette", "photo",
            lambda p: write_png(p, L >> 4, 3, 4, plte=[v for i in range(16) for v in (i * 16, 255 - i * 16, (i * 40) % 256)]))
        add(f"{pn}_g16.png", "png_gray16", "photo", lambda p: write_png(p, L.astype(np.uint16) * 3, 0, 16))
        add(f"{pn}_g16full.png", "png_gray16", "photo", lambda p: write_png(p, L.astype(np.uint16) * 257, 0, 16))
        a16 = a.astype(np.uint16) * 257 + (np.arange(a.shape[1]) % 200)[None, :, None]
        add(f"{pn}_rgb16.png", "png_rgb16", "photo", lambda p, a16=a16: write_png(p, np.minimum(a16, 65535), 2, 16))
        add(f"{pn}_rgba16.png", "png_rgb16", "photo",
            lambda p, a16=a16: write_png(p, np.dstack([np.minimum(a16, 65535), np.full(a.shape[:2], 40000)]), 6, 16))
        add(f"{pn}_la16.png", "png_rgb16", "photo",
            lambda p: write_png(p, np.dstack([L.astype(np.uint16) * 257 + 3, np.full(L.shape, 9)]), 4, 16))
        add(f"{pn}_rgb_adam7.png", "png_interlaced", "photo", lambda p, a=a: write_png(p, a, 2, 8, interlace=True))
        add(f"{pn}_g2_adam7.png", "png_interlaced", "photo", lambda p: write_png(p, L >> 6, 0, 2, interlace=True))
        add(f"{pn}_g16_adam7.png", "png_interlaced", "photo",
            lambda p: write_png(p, L.astype(np.uint16) * 2, 0, 16, interlace=True))

    # EXIF orientation (applied with --exif, as ImageOps.exif_transpose)
    im = photos["chelsea"]
    for o in range(1, 9):
        add(f"chelsea_exif{o}.jpg", "exif", "exif", lambda p, o=o: im.save(p, "JPEG", quality=90, exif=_exif_bytes(o)))
    small = im.resize((97, 61))
    add("chelsea_exif6.png", "exif", "exif",
        lambda p: write_png(p, np.asarray(small), 2, 8, exif=_exif_bytes(6)[6:] if _exif_bytes(6).startswith(b"Exif") else _exif_bytes(6)))

    rng = np.random.default_rng(7)
    edge = {
        "1x1": rng.integers(0, 256, (1, 1, 3)),
        "1x10000": rng.integers(0, 256, (10000, 1, 3)),
        "10000x1": rng.integers(0, 256, (1, 10000, 3)),
        "333x217": rng.integers(0, 256, (217, 333, 3)),
    }
    for en, arr in edge.items():
        e = Image.fromarray(arr.astype(np.uint8), "RGB")
        kind = "photo" if en == "333x217" else "thin"
        add(f"edge_{en}.png", "edge_png", kind, lambda p, e=e: e.save(p))
        add(f"edge_{en}.jpg", "edge_jpeg", kind, lambda p, e=e: e.save(p, "JPEG", quality=90))
    return out


# ---- specs: (name, tool args, reference parameters)
def spec(resize=None, filt="bilinear", crop=None, color="rgb", dtype="fp32", layout="nchw",
         scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), exif=False):
    return dict(resize=resize, filt=filt, crop=crop, color=color, dtype=dtype, layout=layout,
                scale=scale, mean=mean, std=std, exif=exif)


NORM = dict(scale=255.0, mean=MEAN, std=STD)
PHOTO_SPECS = {
    "r256c224_bilinear": spec(("shorter", 256), "bilinear", (224, 224), **NORM),
    "r256c224_bicubic": spec(("shorter", 256), "bicubic", (224, 224), **NORM),
    "r256c224_nearest": spec(("shorter", 256), "nearest", (224, 224), **NORM),
    "r256c224_lanczos_u8": spec(("shorter", 256), "lanczos", (224, 224), dtype="uint8"),
    **{f"exact200x150_{f}_u8": spec(("exact", 200, 150), f, dtype="uint8", layout="nhwc") for f in FILTERS},
    "exact640x480_bicubic_up_u8": spec(("exact", 640, 480), "bicubic", dtype="uint8"),
    # the height shrinks by more than twice the width's change: Pillow 13 resizes vertically first
    "exact480x200_crop300x150_bicubic_u8": spec(("exact", 480, 200), "bicubic", (300, 150), dtype="uint8"),
    "exact300x700_lanczos_u8": spec(("exact", 300, 700), "lanczos", dtype="uint8", layout="nhwc"),
    "nocrop_crop101x77_u8": spec(None, crop=(101, 77), dtype="uint8"),
    "gray_r256c224": spec(("shorter", 256), "bilinear", (224, 224), color="gray", scale=255.0,
                          mean=(0.5, 0, 0), std=(0.25, 1, 1)),
    "bgr_nhwc_r256c224": spec(("shorter", 256), "bilinear", (224, 224), color="bgr", layout="nhwc", **NORM),
    "fp16_r256c224": spec(("shorter", 256), "bilinear", (224, 224), dtype="fp16", **NORM),
    "u8_r256c224": spec(("shorter", 256), "bicubic", (224, 224), dtype="uint8"),
}
THIN_SPECS = {
    **{f"exact224_{f}_u8": spec(("exact", 224, 224), f, dtype="uint8") for f in FILTERS},
    "exact224_bilinear_norm": spec(("exact", 224, 224), "bilinear", **NORM),
    "gray_exact64x32": spec(("exact", 64, 32), "bicubic", color="gray", dtype="uint8"),
    "noresize_u8": spec(None, dtype="uint8"),
}
EXIF_SPECS = {
    "exif_r256c224": spec(("shorter", 256), "bilinear", (224, 224), exif=True, **NORM),
    "exif_exact_u8": spec(("exact", 120, 90), "bicubic", dtype="uint8", exif=True),
    "exif_noresize_u8": spec(None, dtype="uint8", exif=True),
}
SPECS = {"photo": PHOTO_SPECS, "thin": THIN_SPECS, "exif": EXIF_SPECS}


def tool_args(s):
    a = ["--filter", s["filt"], "--color", s["color"], "--dtype", s["dtype"], "--layout", s["layout"],
         "--scale", repr(s["scale"]), "--mean", ",".join(map(repr, s["mean"])),
         "--std", ",".join(map(repr, s["std"]))]
    if s["resize"] and s["resize"][0] == "shorter":
        a += ["--resize", f"shorter:{s['resize'][1]}"]
    elif s["resize"]:
        a += ["--resize", f"exact:{s['resize'][1]}x{s['resize'][2]}"]
    if s["crop"]:
        a += ["--crop", f"{s['crop'][0]}x{s['crop'][1]}"]
    if s["exif"]:
        a += ["--exif"]
    return a


def reference(path, s):
    im = Image.open(path)
    if s["exif"]:
        im = ImageOps.exif_transpose(im)
    im = im.convert("L" if s["color"] == "gray" else "RGB")
    w, h = im.size
    if s["resize"] and s["resize"][0] == "shorter":
        size = s["resize"][1]
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        im = im.resize((size, new_long) if w <= h else (new_long, size), FILTERS[s["filt"]])
    elif s["resize"]:
        im = im.resize((s["resize"][1], s["resize"][2]), FILTERS[s["filt"]])
    if s["crop"]:
        cw, ch = s["crop"]
        W, H = im.size
        top, left = int(round((H - ch) / 2.0)), int(round((W - cw) / 2.0))
        im = im.crop((left, top, left + cw, top + ch))
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[:, :, None]
    if s["color"] == "bgr":
        a = a[:, :, ::-1]
    if s["dtype"] == "uint8":
        x = a
    else:
        c = a.shape[2]
        x = a.astype(np.float32) / np.float32(s["scale"])
        x = (x - np.array(s["mean"][:c], np.float32)) / np.array(s["std"][:c], np.float32)
        if s["dtype"] == "fp16":
            x = x.astype(np.float16)
    if s["layout"] == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x)


# The inputs are made once, at collection (the test ids name them), in a temporary directory
# removed when the session ends.
_DIR = tempfile.mkdtemp(prefix="onnxd-image-exact-")
INPUTS = make_inputs(_DIR)


@pytest.fixture(scope="session")
def inputs():
    yield INPUTS
    shutil.rmtree(_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def tool():
    t = tool_path()
    if not t.exists():
        pytest.fail(f"{t} not found (make build/tests/onnxd-imgtool)")
    return t


# Classes whose decode differs between libjpeg-turbo 2.1.5 (ours) and the one in Pillow's wheel:
# filled in from measurements; each entry is (class, reason with the measured maximum difference).
KNOWN_DIFF = {}


CASES = [(n, cls, kind) for n, (_, cls, kind) in INPUTS.items()]


def _params():
    out = []
    for name, cls, kind in CASES:
        marks = []
        if cls in KNOWN_DIFF:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DIFF[cls]))
        out.append(pytest.param(name, cls, kind, id=f"{cls}/{name}", marks=marks))
    return out


@pytest.mark.parametrize("name,cls,kind", _params())
def test_image_exact(inputs, tool, name, cls, kind):
    path = inputs[name][0]
    bad = []
    for sname, s in SPECS[kind].items():
        ref = reference(path, s)
        r = subprocess.run([str(tool), *tool_args(s), str(path)], capture_output=True)
        assert r.returncode == 0, f"{sname}: {r.stderr.decode()}"
        got = np.frombuffer(r.stdout, ref.dtype)
        if got.size != ref.size:
            bad.append(f"{sname}: {got.size} elements, reference {ref.size}")
            continue
        if not np.array_equal(np.frombuffer(r.stdout, np.uint8), np.frombuffer(ref.tobytes(), np.uint8)):
            diff = np.abs(got.astype(np.float64) - ref.reshape(-1).astype(np.float64))
            if s["dtype"] == "uint8":
                bad.append(f"{sname}: max |diff| {diff.max():.0f}, {int((diff > 0).sum())} of {diff.size} differ")
            else:
                bad.append(f"{sname}: max |diff| {diff.max():.6g} ({diff.max() * 255 * 0.229:.3g} levels),"
                           f" {int((diff > 0).sum())} of {diff.size} differ")
    assert not bad, f"{name}: " + "; ".join(bad)


def test_errors(tmp_path, tool):
    """Refusals, each with its one-line reason."""
    im = Image.fromarray(np.zeros((100, 100, 3), np.uint8))
    small = tmp_path / "small.png"
    im.save(small)
    jpg = tmp_path / "a.jpg"  # noise: half of the file is well inside the scan data
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 100, 3)).astype(np.uint8)).save(jpg, "JPEG")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])
    ptrunc = tmp_path / "trunc.png"
    ptrunc.write_bytes(small.read_bytes()[:-30])
    txt = tmp_path / "a.txt"
    txt.write_bytes(b"hello, this is not an image")
    cases = [
        ([str(small), "--crop", "224x224"], "image is 100x100, smaller than the 224x224 crop"),
        ([str(txt)], "not a JPEG or PNG image"),
        ([str(trunc)], "truncated JPEG data"),
        ([str(ptrunc)], "PNG"),
        ([str(small), "--max-pixels", "9999"], "image is 100x100 (10000 pixels), over the limit of 9999"),
    ]
    for args, msg in cases:
        r = subprocess.run([str(tool), *args], capture_output=True)
        assert r.returncode == 1, args
        assert msg in r.stderr.decode(), (args, r.stderr.decode())
