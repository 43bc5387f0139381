/* img_priv.h: what the image module's files share (not for other modules).
 *
 * A decoded image is 8-bit, interleaved, 1 (L) or 3 (RGB) channels: the result of Pillow's
 * open(...).convert("L"/"RGB"). decode.c makes one from JPEG/PNG bytes, resample.c resizes and
 * crops it as Pillow's Image.resize would, image.c ties them to the spec and writes the row.
 */
#ifndef OX_IMAGE_IMG_PRIV_H
#define OX_IMAGE_IMG_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "image/image.h"

typedef struct {
  uint8_t *px; /* owned: w * h * c bytes, freed by ox_img_free */
  uint32_t w, h;
  int c; /* 1 or 3 */
} ox_img_t;

void ox_img_free(ox_img_t *im);

/* Reads the header of data (JPEG or PNG): *w, *h. Checks zero size and max_pixels (the
 * default when 0). 0 or OX_EINVALID with a reason in err. */
int ox_img_read_header(const uint8_t *data, size_t len, uint64_t max_pixels, uint32_t *w,
                       uint32_t *h, char *err, size_t errcap);

/* Decodes data into *im with c channels (3: convert("RGB"), 1: convert("L")), after the same
 * checks as ox_img_read_header. On success im->px is owned by the caller (ox_img_free).
 * 0, OX_EINVALID with a reason, OX_ENOMEM. */
int ox_img_decode(const uint8_t *data, size_t len, int c, uint64_t max_pixels, ox_img_t *im,
                  char *err, size_t errcap);

/* The EXIF orientation tag (1..8) of a JPEG's first APP1 Exif segment or a PNG's eXIf chunk;
 * 1 when absent or unreadable (as Pillow's getexif().get(0x0112, 1) then ignores the rest). */
int ox_img_exif_orientation(const uint8_t *data, size_t len);

/* Pillow's Image.resize(size=(ow, oh), filter) of src (w x h, c channels) followed by the crop
 * of cw x ch pixels at (cx, cy), written interleaved into out (cw * ch * c bytes). Only the
 * pixels inside the crop are computed; each equals Pillow's. 0 or OX_ENOMEM. */
int ox_img_resample(const uint8_t *src, uint32_t w, uint32_t h, int c, uint32_t ow, uint32_t oh,
                    ox_img_filter_t filter, uint32_t cx, uint32_t cy, uint32_t cw, uint32_t ch,
                    uint8_t *out);

/* ITU-R 601-2 luma in Pillow's fixed point (convert("L") from RGB). */
static inline uint8_t ox_img_luma(unsigned r, unsigned g, unsigned b) {
  return (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

#endif
