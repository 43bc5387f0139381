/* exif.c: the EXIF orientation tag (0x0112) of a JPEG or PNG, for ImageOps.exif_transpose.
 *
 * Where Pillow finds EXIF: a JPEG's first APP1 segment starting "Exif\0\0"; a PNG's eXIf
 * chunk (anywhere in the file: Pillow reads chunks after IDAT when it loads the image). Only
 * IFD0 is read. Bounded walks over the bytes, no allocation; anything malformed means "no
 * orientation" (1), as a missing tag does for Pillow.
 */
#include <string.h>

#include "image/img_priv.h"

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Orientation from a TIFF structure t[0..n). */
static int tiff_orientation(const uint8_t *t, size_t n) {
  if (n < 8) return 1;
  int le;
  if (memcmp(t, "II*\0", 4) == 0)
    le = 1;
  else if (memcmp(t, "MM\0*", 4) == 0)
    le = 0;
  else
    return 1;
#define U16(p) (le ? (unsigned)((p)[0] | (p)[1] << 8) : (unsigned)((p)[0] << 8 | (p)[1]))
#define U32(p)                                                                                     \
  (le ? (uint32_t)(p)[0] | (uint32_t)(p)[1] << 8 | (uint32_t)(p)[2] << 16 | (uint32_t)(p)[3] << 24 \
      : be32(p))
  uint32_t ifd = U32(t + 4);
  if (ifd > n || n - ifd < 2) return 1;
  unsigned count = U16(t + ifd);
  const uint8_t *e = t + ifd + 2;
  for (unsigned i = 0; i < count; i++, e += 12) {
    if ((size_t)(e - t) + 12 > n) return 1;
    if (U16(e) != 0x0112) continue;
    unsigned type = U16(e + 2);
    uint32_t v = type == 3 ? U16(e + 8) : type == 4 ? U32(e + 8) : 1;
    return v >= 1 && v <= 8 ? (int)v : 1;
  }
  return 1;
#undef U16
#undef U32
}

static int jpeg_orientation(const uint8_t *d, size_t len) {
  size_t pos = 2;
  while (pos + 4 <= len) {
    if (d[pos] != 0xff) return 1;
    uint8_t m = d[pos + 1];
    if (m == 0xff) { /* fill byte */
      pos++;
      continue;
    }
    if (m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7)) { /* no length */
      pos += 2;
      continue;
    }
    if (m == 0xda || m == 0xd9) return 1; /* scan data or end: no EXIF before it */
    size_t seg = (size_t)d[pos + 2] << 8 | d[pos + 3];
    if (seg < 2 || seg > len - pos - 2) return 1;
    if (m == 0xe1 && seg >= 8 && memcmp(d + pos + 4, "Exif\0\0", 6) == 0)
      return tiff_orientation(d + pos + 10, seg - 8);
    pos += 2 + seg;
  }
  return 1;
}

static int png_orientation(const uint8_t *d, size_t len) {
  size_t pos = 8;
  while (len - pos >= 12) {
    uint32_t n = be32(d + pos);
    if (n > len - pos - 12) return 1;
    if (memcmp(d + pos + 4, "eXIf", 4) == 0) return tiff_orientation(d + pos + 8, n);
    if (memcmp(d + pos + 4, "IEND", 4) == 0) return 1;
    pos += 12 + (size_t)n;
  }
  return 1;
}

int ox_img_exif_orientation(const uint8_t *data, size_t len) {
  const char *fmt = ox_img_sniff(data, len);
  if (!fmt) return 1;
  return fmt[0] == 'j' ? jpeg_orientation(data, len) : png_orientation(data, len);
}
