/* resample.c: Pillow's Image.resize for 8-bit L and RGB images, restricted to a crop.
 *
 * The arithmetic is Pillow's (13.x, libImaging/Resample.c and the nearest-neighbour affine
 * path of Geometry.c), re-derived from what it computes so that every pixel is identical:
 *   - convolution filters: per output index a window of input indices [xmin, xmin + n) around
 *     center = (i + 0.5) * scale, support = filter support * max(scale, 1), weights
 *     filter((j - center + 0.5) / max(scale, 1)) in double, divided by their sum, then turned
 *     into fixed point with 22 fraction bits (32 - 8 - 2), rounded half away from zero;
 *     accumulation starts at 1 << 21 and the result is clipped to 0..255 after >> 22;
 *   - two passes, each only when that axis changes size, the first one rounded to 8 bits:
 *     horizontal first, except when the height shrinks by more than twice as many pixels as
 *     the width (Pillow 13 then runs the vertical pass first); the same size is a copy;
 *   - NEAREST: input index = (int)(x * scale + scale / 2), the position accumulated by repeated
 *     addition of the scale in double exactly as Pillow's loop does.
 * Each output pixel depends only on its own coefficients, so computing the pixels inside the
 * crop alone gives the crop of the full resize: coefficient tables are built for the cropped
 * indices only, and the horizontal pass runs only over the input rows the crop's output rows
 * read. Pixels are kept in the image's own channel count (1 or 3), not Pillow's 4-byte slots;
 * the per-channel arithmetic is the same.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "image/img_priv.h"

#define PREC 22 /* Pillow's PRECISION_BITS: 32 - 8 - 2 */

typedef struct {
  double (*fn)(double x);
  double support;
} filter_t;

static double f_box(double x) {
  return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
}
static double f_bilinear(double x) {
  x = fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}
static double f_hamming(double x) {
  x = fabs(x);
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x *= M_PI;
  /* Pillow's constants are float literals promoted to double: keep them so. */
  return sin(x) / x * ((double)0.54f + (double)0.46f * cos(x));
}
static double f_bicubic(double x) {
  const double a = -0.5;
  x = fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
static double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return sin(x) / x;
}
static double f_lanczos(double x) {
  return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0;
}

static const filter_t *filter_of(ox_img_filter_t f) {
  static const filter_t box = {f_box, 0.5}, bilinear = {f_bilinear, 1.0},
                        hamming = {f_hamming, 1.0}, bicubic = {f_bicubic, 2.0},
                        lanczos = {f_lanczos, 3.0};
  switch (f) {
    case OX_IMG_BOX:
      return &box;
    case OX_IMG_HAMMING:
      return &hamming;
    case OX_IMG_BICUBIC:
      return &bicubic;
    case OX_IMG_LANCZOS:
      return &lanczos;
    default:
      return &bilinear;
  }
}

/* Fixed-point coefficients for count output indices starting at first: output i reads input
 * indices [lo[i], lo[i] + n[i]) with weights k[off[i] ...]. */
typedef struct {
  int *lo, *n;
  size_t *off;
  int32_t *k; /* all owned; coefs_free */
} coefs_t;

static void coefs_free(coefs_t *cf) {
  free(cf->lo);
  free(cf->n);
  free(cf->off);
  free(cf->k);
  memset(cf, 0, sizeof *cf);
}

static int coefs_make(coefs_t *cf, uint32_t in_size, uint32_t out_size, uint32_t first,
                      uint32_t count, const filter_t *f) {
  memset(cf, 0, sizeof *cf);
  /* Pillow's box edges are floats: (double)(in1 - in0) with in0 = 0, in1 = (float)in_size. */
  double scale = (double)(float)in_size / out_size;
  double fscale = scale < 1.0 ? 1.0 : scale;
  double support = f->support * fscale;
  double inv = 1.0 / fscale;
  cf->lo = malloc(count * sizeof *cf->lo);
  cf->n = malloc(count * sizeof *cf->n);
  cf->off = malloc(count * sizeof *cf->off);
  if (!cf->lo || !cf->n || !cf->off) goto nomem;
  size_t total = 0;
  for (uint32_t i = 0; i < count; i++) {
    double center = 0.0 + ((double)(first + i) + 0.5) * scale;
    int lo = (int)(center - support + 0.5);
    if (lo < 0) lo = 0;
    int hi = (int)(center + support + 0.5);
    if (hi > (int)in_size) hi = (int)in_size;
    cf->lo[i] = lo;
    cf->n[i] = hi > lo ? hi - lo : 0;
    cf->off[i] = total;
    total += (size_t)cf->n[i];
  }
  cf->k = malloc((total ? total : 1) * sizeof *cf->k);
  if (!cf->k) goto nomem;
  for (uint32_t i = 0; i < count; i++) {
    double center = 0.0 + ((double)(first + i) + 0.5) * scale;
    int lo = cf->lo[i], n = cf->n[i];
    double ww = 0.0;
    for (int j = 0; j < n; j++) ww += f->fn(((j + lo) - center + 0.5) * inv);
    int32_t *k = cf->k + cf->off[i];
    for (int j = 0; j < n; j++) {
      /* the same weight as in the sum above: same function, same argument */
      double w = f->fn(((j + lo) - center + 0.5) * inv);
      if (ww != 0.0) w /= ww;
      k[j] = w < 0 ? (int32_t)(-0.5 + w * (1 << PREC)) : (int32_t)(0.5 + w * (1 << PREC));
    }
  }
  return 0;
nomem:
  coefs_free(cf);
  return OX_ENOMEM;
}

static inline uint8_t clip8(int32_t v) {
  v >>= PREC; /* arithmetic shift: floor, as Pillow's table lookup at v >> PRECISION_BITS */
  return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* Horizontal pass over nrows rows of src (stride sstride) into dst (cw * c per row). */
static void pass_h(const uint8_t *src, size_t sstride, uint32_t nrows, int c, const coefs_t *cf,
                   uint32_t cw, uint8_t *dst) {
  for (uint32_t r = 0; r < nrows; r++) {
    const uint8_t *in = src + r * sstride;
    uint8_t *out = dst + (size_t)r * cw * (size_t)c;
    if (c == 3) {
      for (uint32_t i = 0; i < cw; i++) {
        const int32_t *k = cf->k + cf->off[i];
        const uint8_t *p = in + (size_t)cf->lo[i] * 3;
        int32_t s0 = 1 << (PREC - 1), s1 = s0, s2 = s0;
        for (int j = 0; j < cf->n[i]; j++, p += 3) {
          s0 += p[0] * k[j];
          s1 += p[1] * k[j];
          s2 += p[2] * k[j];
        }
        out[i * 3 + 0] = clip8(s0);
        out[i * 3 + 1] = clip8(s1);
        out[i * 3 + 2] = clip8(s2);
      }
    } else {
      for (uint32_t i = 0; i < cw; i++) {
        const int32_t *k = cf->k + cf->off[i];
        const uint8_t *p = in + cf->lo[i];
        int32_t s0 = 1 << (PREC - 1);
        for (int j = 0; j < cf->n[i]; j++) s0 += p[j] * k[j];
        out[i] = clip8(s0);
      }
    }
  }
}

/* Vertical pass: output row j of the crop reads rows cf->lo[j] - row0 ... of src (stride
 * sstride, the first of them row0), span bytes of each. acc: span int32 scratch. */
static void pass_v(const uint8_t *src, size_t sstride, int row0, const coefs_t *cf, uint32_t ch,
                   size_t span, int32_t *acc, uint8_t *out) {
  for (uint32_t j = 0; j < ch; j++) {
    const int32_t *k = cf->k + cf->off[j];
    for (size_t x = 0; x < span; x++) acc[x] = 1 << (PREC - 1);
    for (int y = 0; y < cf->n[j]; y++) {
      const uint8_t *in = src + (size_t)(cf->lo[j] + y - row0) * sstride;
      int32_t kk = k[y];
      for (size_t x = 0; x < span; x++) acc[x] += in[x] * kk;
    }
    uint8_t *o = out + j * span;
    for (size_t x = 0; x < span; x++) o[x] = clip8(acc[x]);
  }
}

/* Pillow's nearest path: ImagingScaleAffine with a = (w / ow, 0, 0, 0, h / oh, 0). tab[i] is
 * the input index of output first + i, or -1 where Pillow fills with 0. */
static void nearest_tab(uint32_t in_size, uint32_t out_size, uint32_t first, uint32_t count,
                        int *tab) {
  double a = (double)(float)in_size / out_size;
  double pos = 0.0 + a * 0.5;
  for (uint32_t i = 0; i < first + count; i++) {
    if (i >= first) {
      int v = pos < 0.0 ? -1 : (int)pos;
      tab[i - first] = (v >= 0 && v < (int)in_size) ? v : -1;
    }
    pos += a;
  }
}

static int resample_nearest(const uint8_t *src, uint32_t w, uint32_t h, int c, uint32_t ow,
                            uint32_t oh, uint32_t cx, uint32_t cy, uint32_t cw, uint32_t ch,
                            uint8_t *out) {
  int *xt = malloc(cw * sizeof *xt), *yt = malloc(ch * sizeof *yt);
  if (!xt || !yt) {
    free(xt);
    free(yt);
    return OX_ENOMEM;
  }
  nearest_tab(w, ow, cx, cw, xt);
  nearest_tab(h, oh, cy, ch, yt);
  for (uint32_t j = 0; j < ch; j++) {
    uint8_t *o = out + (size_t)j * cw * (size_t)c;
    if (yt[j] < 0) {
      memset(o, 0, (size_t)cw * (size_t)c);
      continue;
    }
    const uint8_t *in = src + (size_t)yt[j] * w * (size_t)c;
    for (uint32_t i = 0; i < cw; i++) {
      if (xt[i] < 0)
        memset(o + (size_t)i * c, 0, (size_t)c);
      else
        memcpy(o + (size_t)i * c, in + (size_t)xt[i] * c, (size_t)c);
    }
  }
  free(xt);
  free(yt);
  return 0;
}

int ox_img_resample(const uint8_t *src, uint32_t w, uint32_t h, int c, uint32_t ow, uint32_t oh,
                    ox_img_filter_t filter, uint32_t cx, uint32_t cy, uint32_t cw, uint32_t ch,
                    uint8_t *out) {
  size_t sstride = (size_t)w * (size_t)c, span = (size_t)cw * (size_t)c;
  if (ow == w && oh == h) { /* Pillow: a copy (ImagingCrop of the whole box) */
    for (uint32_t j = 0; j < ch; j++)
      memcpy(out + j * span, src + (size_t)(cy + j) * sstride + (size_t)cx * c, span);
    return 0;
  }
  if (filter == OX_IMG_NEAREST) return resample_nearest(src, w, h, c, ow, oh, cx, cy, cw, ch, out);

  const filter_t *f = filter_of(filter);
  int need_h = ow != w, need_v = oh != h;
  coefs_t ch_ = {0}, cv = {0};
  uint8_t *tmp = NULL;
  int32_t *acc = NULL;
  int rc = OX_ENOMEM;
  if (need_h && coefs_make(&ch_, w, ow, cx, cw, f) != 0) goto out;
  if (need_v && coefs_make(&cv, h, oh, cy, ch, f) != 0) goto out;
  if (need_h && !need_v) { /* rows map one to one */
    pass_h(src + (size_t)cy * sstride, sstride, ch, c, &ch_, cw, out);
  } else if (!need_h) { /* need_v only: the columns of the crop, read in place */
    acc = malloc(span * sizeof *acc);
    if (!acc) goto out;
    pass_v(src + (size_t)cx * c, sstride, 0, &cv, ch, span, acc, out);
  } else if (oh < h && (int64_t)h - oh > 2 * ((int64_t)w - ow)) {
    /* Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
     * many pixels as the width does (measured against Pillow 13.0.0: the order changes the
     * result, the first pass being rounded to 8 bits). Vertically, only the input columns the
     * crop's output columns read: [xlo, xhi). */
    int xlo = INT_MAX, xhi = 0;
    for (uint32_t i = 0; i < cw; i++) {
      if (ch_.n[i] == 0) continue;
      if (ch_.lo[i] < xlo) xlo = ch_.lo[i];
      if (ch_.lo[i] + ch_.n[i] > xhi) xhi = ch_.lo[i] + ch_.n[i];
    }
    if (xlo > xhi) xlo = xhi = 0;
    size_t tspan = (size_t)(xhi - xlo) * (size_t)c;
    tmp = malloc(tspan ? (size_t)ch * tspan : 1);
    acc = malloc((tspan ? tspan : 1) * sizeof *acc);
    if (!tmp || !acc) goto out;
    pass_v(src + (size_t)xlo * c, sstride, 0, &cv, ch, tspan, acc, tmp);
    for (uint32_t i = 0; i < cw; i++) ch_.lo[i] -= xlo; /* tmp's column 0 is input column xlo */
    pass_h(tmp, tspan, ch, c, &ch_, cw, out);
  } else {
    /* the input rows the crop's output rows read: [ylo, yhi) */
    int ylo = INT_MAX, yhi = 0;
    for (uint32_t j = 0; j < ch; j++) {
      if (cv.n[j] == 0) continue;
      if (cv.lo[j] < ylo) ylo = cv.lo[j];
      if (cv.lo[j] + cv.n[j] > yhi) yhi = cv.lo[j] + cv.n[j];
    }
    if (ylo > yhi) ylo = yhi = 0;
    uint32_t nrows = (uint32_t)(yhi - ylo);
    tmp = malloc(nrows ? (size_t)nrows * span : 1);
    acc = malloc(span * sizeof *acc);
    if (!tmp || !acc) goto out;
    pass_h(src + (size_t)ylo * sstride, sstride, nrows, c, &ch_, cw, tmp);
    pass_v(tmp, span, ylo, &cv, ch, span, acc, out);
  }
  rc = 0;
out:
  coefs_free(&ch_);
  coefs_free(&cv);
  free(tmp);
  free(acc);
  return rc;
}
