/* image.c: the spec, the plan of one image (orientation, resize, crop) and the output row.
 *
 * The steps, each exactly as the Python reference does it:
 *   decode (decode.c: Pillow's open + convert("RGB"/"L")) -> optional EXIF transpose
 *   (ImageOps.exif_transpose) -> Pillow's Image.resize to torchvision's size and the centre crop
 *   (resample.c, computing the crop's pixels only) -> ToTensor and Normalize in float32:
 *   ((float)x / scale - mean[c]) / std[c]. A uint8 input has 256 values, so each output
 *   channel's values come from a 256-entry table built with that same float arithmetic; FP16 is
 *   the float32 value rounded to nearest even. Nothing full-size is ever float.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "image/img_priv.h"

#define OX_IMG_MAX_SIDE 65535u        /* spec sizes */
#define OX_IMG_MAX_RESIZED (1u << 24) /* a resized side beyond this is refused */

void ox_img_spec_init(ox_img_spec_t *spec) {
  memset(spec, 0, sizeof *spec);
  spec->color = OX_IMG_RGB;
  spec->resize = OX_IMG_RESIZE_NONE;
  spec->filter = OX_IMG_BILINEAR;
  spec->dtype = OX_DT_FP32;
  spec->layout = OX_IMG_NCHW;
  spec->scale = 1.0f;
  for (int i = 0; i < 3; i++) spec->std[i] = 1.0f;
  spec->max_pixels = OX_IMG_DEFAULT_MAX_PIXELS;
}

static int bad(char *err, size_t errcap, const char *msg) {
  if (errcap) snprintf(err, errcap, "%s", msg);
  return OX_EINVALID;
}

int ox_img_spec_check(const ox_img_spec_t *s, char *err, size_t errcap) {
  if (s->color != OX_IMG_RGB && s->color != OX_IMG_BGR && s->color != OX_IMG_GRAY)
    return bad(err, errcap, "image spec: unknown color");
  if (s->filter < OX_IMG_BILINEAR || s->filter > OX_IMG_LANCZOS)
    return bad(err, errcap, "image spec: unknown resampling filter");
  if (s->layout != OX_IMG_NCHW && s->layout != OX_IMG_NHWC)
    return bad(err, errcap, "image spec: unknown layout");
  if (s->dtype != OX_DT_FP32 && s->dtype != OX_DT_FP16 && s->dtype != OX_DT_UINT8)
    return bad(err, errcap, "image spec: datatype must be FP32, FP16 or UINT8");
  switch (s->resize) {
    case OX_IMG_RESIZE_NONE:
      break;
    case OX_IMG_RESIZE_SHORTER:
      if (s->shorter_side == 0 || s->shorter_side > OX_IMG_MAX_SIDE)
        return bad(err, errcap, "image spec: shorter_side must be 1..65535");
      break;
    case OX_IMG_RESIZE_EXACT:
      if (s->resize_w == 0 || s->resize_h == 0 || s->resize_w > OX_IMG_MAX_SIDE ||
          s->resize_h > OX_IMG_MAX_SIDE)
        return bad(err, errcap, "image spec: resize width and height must be 1..65535");
      break;
    default:
      return bad(err, errcap, "image spec: unknown resize mode");
  }
  if ((s->crop_w == 0) != (s->crop_h == 0) || s->crop_w > OX_IMG_MAX_SIDE ||
      s->crop_h > OX_IMG_MAX_SIDE)
    return bad(err, errcap, "image spec: crop width and height must both be 1..65535 (or 0)");
  int nc = s->color == OX_IMG_GRAY ? 1 : 3;
  if (!(isfinite(s->scale) && s->scale != 0.0f))
    return bad(err, errcap, "image spec: scale must be finite and non-zero");
  for (int i = 0; i < nc; i++) {
    if (!(isfinite(s->std[i]) && s->std[i] != 0.0f) || !isfinite(s->mean[i]))
      return bad(err, errcap, "image spec: std must be non-zero and mean/std finite");
    if (s->dtype == OX_DT_UINT8 && (s->mean[i] != 0.0f || s->std[i] != 1.0f))
      return bad(err, errcap, "image spec: UINT8 output takes no mean/std");
  }
  if (s->dtype == OX_DT_UINT8 && s->scale != 1.0f)
    return bad(err, errcap, "image spec: UINT8 output takes no scale");
  if (s->exif_orientation != 0 && s->exif_orientation != 1)
    return bad(err, errcap, "image spec: exif_orientation must be 0 or 1");
  return 0;
}

int ox_img_spec_fixed_dims(const ox_img_spec_t *s, uint32_t *c, uint32_t *h, uint32_t *w) {
  *c = s->color == OX_IMG_GRAY ? 1 : 3;
  if (s->crop_w && s->crop_h) {
    *h = s->crop_h;
    *w = s->crop_w;
    return 1;
  }
  if (s->resize == OX_IMG_RESIZE_EXACT) {
    *h = s->resize_h;
    *w = s->resize_w;
    return 1;
  }
  *h = *w = 0;
  return 0;
}

/* What happens to one image of w x h (after orientation). */
typedef struct {
  uint32_t ow, oh;         /* resized size */
  uint32_t cx, cy, cw, ch; /* crop window in the resized image */
  int c;
} plan_t;

/* int(round(d / 2.0)) with Python's round half to even, d >= 0 */
static uint32_t center_offset(uint32_t d) {
  uint32_t k = d / 2;
  if (d % 2 == 0) return k;
  return k % 2 == 0 ? k : k + 1;
}

static int plan_make(const ox_img_spec_t *s, uint32_t w, uint32_t h, plan_t *p, char *err,
                     size_t errcap) {
  p->c = s->color == OX_IMG_GRAY ? 1 : 3;
  uint64_t ow = w, oh = h;
  if (s->resize == OX_IMG_RESIZE_SHORTER) {
    uint32_t sh = w <= h ? w : h, lg = w <= h ? h : w;
    /* torchvision: int(size * long / short); the product and the quotient are exact/correctly
     * rounded in double as in Python */
    uint64_t nl = (uint64_t)((double)((uint64_t)s->shorter_side * lg) / (double)sh);
    if (w <= h) {
      ow = s->shorter_side;
      oh = nl;
    } else {
      ow = nl;
      oh = s->shorter_side;
    }
  } else if (s->resize == OX_IMG_RESIZE_EXACT) {
    ow = s->resize_w;
    oh = s->resize_h;
  }
  if (ow == 0 || oh == 0 || ow > OX_IMG_MAX_RESIZED || oh > OX_IMG_MAX_RESIZED) {
    if (errcap)
      snprintf(err, errcap,
               "image is %" PRIu32 "x%" PRIu32 ": resized it would be %" PRIu64 "x%" PRIu64
               ", outside 1..%u per side",
               w, h, ow, oh, OX_IMG_MAX_RESIZED);
    return OX_EINVALID;
  }
  p->ow = (uint32_t)ow;
  p->oh = (uint32_t)oh;
  if (s->crop_w && s->crop_h) {
    if (s->crop_w > p->ow || s->crop_h > p->oh) {
      /* torchvision pads a crop larger than the image; a model input padded with black is
       * rarely what was meant, so it is refused */
      if (errcap) {
        if (s->resize == OX_IMG_RESIZE_NONE)
          snprintf(err, errcap, "image is %" PRIu32 "x%" PRIu32 ", smaller than the %ux%u crop",
                   p->ow, p->oh, (unsigned)s->crop_w, (unsigned)s->crop_h);
        else
          snprintf(err, errcap,
                   "image is %" PRIu32 "x%" PRIu32 " after the resize, smaller than the %ux%u crop",
                   p->ow, p->oh, (unsigned)s->crop_w, (unsigned)s->crop_h);
      }
      return OX_EINVALID;
    }
    p->cw = s->crop_w;
    p->ch = s->crop_h;
    p->cx = center_offset(p->ow - p->cw);
    p->cy = center_offset(p->oh - p->ch);
  } else {
    p->cx = p->cy = 0;
    p->cw = p->ow;
    p->ch = p->oh;
  }
  return 0;
}

static int orientation_of(const ox_img_spec_t *s, const uint8_t *data, size_t len) {
  return s->exif_orientation ? ox_img_exif_orientation(data, len) : 1;
}

int ox_img_probe(const ox_img_spec_t *spec, const uint8_t *data, size_t len, uint32_t *w,
                 uint32_t *h, char *err, size_t errcap) {
  return ox_img_read_header(data, len, spec->max_pixels, w, h, err, errcap);
}

int ox_img_row_shape(const ox_img_spec_t *spec, const uint8_t *data, size_t len, uint32_t *c,
                     uint32_t *h, uint32_t *w, char *err, size_t errcap) {
  uint32_t iw, ih;
  int rc = ox_img_spec_check(spec, err, errcap);
  if (rc == 0) rc = ox_img_read_header(data, len, spec->max_pixels, &iw, &ih, err, errcap);
  if (rc != 0) return rc;
  if (orientation_of(spec, data, len) >= 5) {
    uint32_t t = iw;
    iw = ih;
    ih = t;
  }
  plan_t p;
  rc = plan_make(spec, iw, ih, &p, err, errcap);
  if (rc != 0) return rc;
  *c = (uint32_t)p.c;
  *h = p.ch;
  *w = p.cw;
  return 0;
}

/* ImageOps.exif_transpose for orientation o (2..8): a new image in *out. */
static int transpose(const ox_img_t *in, int o, ox_img_t *out) {
  uint32_t w = in->w, h = in->h;
  int c = in->c;
  uint32_t nw = o >= 5 ? h : w, nh = o >= 5 ? w : h;
  uint8_t *px = malloc((size_t)w * h * (size_t)c);
  if (!px) return OX_ENOMEM;
  for (uint32_t y = 0; y < nh; y++) {
    for (uint32_t x = 0; x < nw; x++) {
      uint32_t sx, sy;
      switch (o) {
        case 2:
          sx = w - 1 - x, sy = y;
          break; /* FLIP_LEFT_RIGHT */
        case 3:
          sx = w - 1 - x, sy = h - 1 - y;
          break; /* ROTATE_180 */
        case 4:
          sx = x, sy = h - 1 - y;
          break; /* FLIP_TOP_BOTTOM */
        case 5:
          sx = y, sy = x;
          break; /* TRANSPOSE */
        case 6:
          sx = y, sy = h - 1 - x;
          break; /* ROTATE_270 */
        case 7:
          sx = w - 1 - y, sy = h - 1 - x;
          break; /* TRANSVERSE */
        default:
          sx = w - 1 - y, sy = x;
          break; /* 8: ROTATE_90 */
      }
      memcpy(px + ((size_t)y * nw + x) * c, in->px + ((size_t)sy * w + sx) * c, (size_t)c);
    }
  }
  out->px = px;
  out->w = nw;
  out->h = nh;
  out->c = c;
  return 0;
}

/* float32 -> binary16, round to nearest even (NaN stays NaN, overflow goes to infinity). */
static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) /* Inf or NaN */
    return sign | (ax > 0x7f800000u ? (uint16_t)(0x7e00u | ((ax >> 13) & 0x3ffu)) : 0x7c00u);
  if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to infinity */
  if (ax < 0x38800000u) {                       /* below 2^-14: a half subnormal (or 0) */
    /* adding 0.5 puts the value's 2^-24 units in the low mantissa bits, rounded to nearest
     * even by the FPU */
    float v, half = 0.5f;
    memcpy(&v, &ax, sizeof v);
    v += half;
    uint32_t r;
    memcpy(&r, &v, sizeof r);
    return sign | (uint16_t)(r - 0x3f000000u);
  }
  uint32_t odd = (ax >> 13) & 1u;
  ax += 0xc8000fffu + odd; /* rebias the exponent (127 -> 15) and round half to even */
  return sign | (uint16_t)(ax >> 13);
}

static void write_row(const ox_img_spec_t *s, const uint8_t *px, const plan_t *p, void *dst) {
  int c = p->c;
  size_t hw = (size_t)p->cw * p->ch;
  float lut[3][256];
  uint16_t lut16[3][256];
  int src_ch[3];
  for (int k = 0; k < c; k++) {
    src_ch[k] = s->color == OX_IMG_BGR ? 2 - k : k;
    if (s->dtype == OX_DT_UINT8) continue;
    for (int v = 0; v < 256; v++) {
      /* ToTensor then Normalize, in float32, in this order (division, not a reciprocal) */
      float x = (float)v / s->scale;
      x = (x - s->mean[k]) / s->std[k];
      lut[k][v] = x;
      lut16[k][v] = f32_to_f16(x);
    }
  }
  for (int k = 0; k < c; k++) {
    const uint8_t *in = px + src_ch[k];
    size_t base = s->layout == OX_IMG_NCHW ? (size_t)k * hw : (size_t)k;
    size_t step = s->layout == OX_IMG_NCHW ? 1 : (size_t)c;
    switch (s->dtype) {
      case OX_DT_UINT8: {
        uint8_t *o = (uint8_t *)dst + base;
        for (size_t i = 0; i < hw; i++) o[i * step] = in[i * c];
        break;
      }
      case OX_DT_FP16: {
        uint16_t *o = (uint16_t *)dst + base;
        for (size_t i = 0; i < hw; i++) o[i * step] = lut16[k][in[i * c]];
        break;
      }
      default: {
        float *o = (float *)dst + base;
        for (size_t i = 0; i < hw; i++) o[i * step] = lut[k][in[i * c]];
      }
    }
  }
}

int ox_img_preprocess(const ox_img_spec_t *spec, const uint8_t *data, size_t len, void *dst,
                      size_t dst_size, char *err, size_t errcap) {
  int rc = ox_img_spec_check(spec, err, errcap);
  if (rc != 0) return rc;
  int c = spec->color == OX_IMG_GRAY ? 1 : 3;
  ox_img_t im;
  rc = ox_img_decode(data, len, c, spec->max_pixels, &im, err, errcap);
  if (rc != 0) return rc;
  int o = orientation_of(spec, data, len);
  if (o != 1) {
    ox_img_t t;
    rc = transpose(&im, o, &t);
    ox_img_free(&im);
    if (rc != 0) return rc;
    im = t;
  }
  plan_t p;
  rc = plan_make(spec, im.w, im.h, &p, err, errcap);
  if (rc == 0) {
    size_t want = (size_t)p.cw * p.ch * (size_t)c * ox_dtype_size(spec->dtype);
    if (want != dst_size) {
      if (errcap)
        snprintf(err, errcap,
                 "image row is %zu bytes (%dx%" PRIu32 "x%" PRIu32 " %s), the tensor has %zu", want,
                 c, p.ch, p.cw, ox_dtype_name(spec->dtype), dst_size);
      rc = OX_EINVALID;
    }
  }
  if (rc == 0) {
    uint8_t *crop = malloc((size_t)p.cw * p.ch * (size_t)c);
    if (!crop) {
      rc = OX_ENOMEM;
    } else {
      rc = ox_img_resample(im.px, im.w, im.h, c, p.ow, p.oh, spec->filter, p.cx, p.cy, p.cw, p.ch,
                           crop);
      if (rc == 0) write_row(spec, crop, &p, dst);
      free(crop);
    }
  }
  ox_img_free(&im);
  return rc;
}
