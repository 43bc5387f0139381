/* image.h: JPEG/PNG bytes in, one model-input row out, exactly as users preprocess in Python.
 *
 * The reference is torchvision's classification pipeline on a PIL image:
 *   img = PIL.Image.open(f).convert("RGB")          (or "L" for grayscale)
 *   Resize(256) / Resize((h, w)), CenterCrop((h, w)), ToTensor(), Normalize(mean, std)
 * The uint8 image after decode, resize and crop equals Pillow's byte for byte (Pillow's own
 * fixed-point separable resampling, reimplemented here from its documented arithmetic), and the
 * float32 tensor equals torchvision's bit for bit (x / scale, then (x - mean) / std, in float32,
 * in that order). Pillow's quirks are the reference too: no gamma, no colour management, EXIF
 * orientation ignored unless asked for, 16-bit samples reduced as Pillow's mode conversions do.
 *
 * Decoding is header first: the dimensions are checked against spec->max_pixels before any
 * pixel buffer is allocated (decompression bombs are refused cheaply). Everything allocated is
 * freed before ox_img_preprocess returns; it is called on worker threads and is reentrant.
 */
#ifndef OX_IMAGE_IMAGE_H
#define OX_IMAGE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

typedef enum { OX_IMG_RGB = 0, OX_IMG_BGR, OX_IMG_GRAY } ox_img_color_t;
/* Pillow's resampling filters (PIL.Image.Resampling), same names. */
typedef enum {
  OX_IMG_BILINEAR = 0,
  OX_IMG_NEAREST,
  OX_IMG_BICUBIC,
  OX_IMG_BOX,
  OX_IMG_HAMMING,
  OX_IMG_LANCZOS
} ox_img_filter_t;
typedef enum { OX_IMG_RESIZE_NONE = 0, OX_IMG_RESIZE_SHORTER, OX_IMG_RESIZE_EXACT } ox_img_resize_t;
typedef enum { OX_IMG_NCHW = 0, OX_IMG_NHWC } ox_img_layout_t;

#define OX_IMG_DEFAULT_MAX_PIXELS 40000000u

/* What to do with one image (a model input's "image_inputs" entry in config.json). */
typedef struct {
  ox_img_color_t color;        /* RGB/BGR: convert("RGB") (then channels swapped for BGR);
                                  GRAY: convert("L"), one channel */
  ox_img_resize_t resize;      /* NONE: keep the decoded size */
  uint32_t shorter_side;       /* SHORTER: torchvision's Resize(int): the short side becomes this,
                                  the long one int(shorter_side * long / short) */
  uint32_t resize_w, resize_h; /* EXACT: torchvision's Resize((h, w)) */
  ox_img_filter_t filter;
  uint32_t crop_w, crop_h; /* CenterCrop((h, w)) after the resize; 0/0: no crop */
  ox_dtype_t dtype;        /* OX_DT_FP32, OX_DT_FP16 (FP32 value rounded to nearest even) or
                              OX_DT_UINT8 (the pixels; scale/mean/std must be identity) */
  ox_img_layout_t layout;
  float scale;           /* x / scale (ToTensor: 255); 1 keeps 0..255 */
  float mean[3], std[3]; /* per channel of the output order; std != 0; gray uses [0] */
  int exif_orientation;  /* 1: apply the JPEG's EXIF orientation (ImageOps.exif_transpose) */
  uint64_t max_pixels;   /* refuse images with more decoded pixels (0: the default) */
} ox_img_spec_t;

/* Fills spec with the identity pipeline: RGB, no resize, no crop, FP32 NCHW, scale 1, mean 0,
 * std 1, bilinear, OX_IMG_DEFAULT_MAX_PIXELS. */
void ox_img_spec_init(ox_img_spec_t *spec);

/* Checks spec's values (dtype, filter, std != 0, UINT8 only with identity scale/mean/std,
 * sizes <= 65535). 0, or OX_EINVALID with a reason in err. */
int ox_img_spec_check(const ox_img_spec_t *spec, char *err, size_t errcap);

/* The row's shape when it is fixed by the spec (EXACT resize or a crop): *c channels (3, or 1
 * for GRAY), *h, *w. Returns 1 if fixed, 0 if it depends on the image. */
int ox_img_spec_fixed_dims(const ox_img_spec_t *spec, uint32_t *c, uint32_t *h, uint32_t *w);

/* Which format data starts with: "jpeg", "png", or NULL. */
const char *ox_img_sniff(const uint8_t *data, size_t len);

/* Decodes data[0..len) (JPEG or PNG) and writes one row of c*h*w elements of spec->dtype in
 * spec->layout into dst (dst_size bytes, which must equal the row's size exactly; the shape is
 * the fixed one of ox_img_spec_fixed_dims, or for a spec without one the image's own after the
 * resize, which the caller learns first with ox_img_probe). data and dst are borrowed.
 * Returns 0; OX_EINVALID with a one-line reason in err for anything wrong with the image (not
 * JPEG/PNG, truncated, corrupt, zero size, over max_pixels, crop larger than the image, a row
 * size that does not match); OX_ENOMEM. */
int ox_img_preprocess(const ox_img_spec_t *spec, const uint8_t *data, size_t len, void *dst,
                      size_t dst_size, char *err, size_t errcap);

/* Reads only the header: *w, *h of the image as decoded (before orientation and resize).
 * 0, or OX_EINVALID with a reason (as ox_img_preprocess, including max_pixels). */
int ox_img_probe(const ox_img_spec_t *spec, const uint8_t *data, size_t len, uint32_t *w,
                 uint32_t *h, char *err, size_t errcap);

/* The row's shape for this image: *c, *h, *w after the EXIF orientation (when the spec asks
 * for it, which swaps the sides for orientations 5..8), the resize and the crop. Reads only the
 * header (and, for orientation, the EXIF bytes); checks the spec, max_pixels and that the crop
 * fits. 0, or OX_EINVALID with a reason (the same ones ox_img_preprocess gives). */
int ox_img_row_shape(const ox_img_spec_t *spec, const uint8_t *data, size_t len, uint32_t *c,
                     uint32_t *h, uint32_t *w, char *err, size_t errcap);

#endif
