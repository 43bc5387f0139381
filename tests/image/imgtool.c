/* imgtool.c: runs ox_img_preprocess on one file with a spec from the command line and writes
 * the row's raw bytes to stdout (tests/integration/test_image_exact.py compares them with
 * Pillow + torchvision's arithmetic). Errors go to stderr with exit status 1.
 *   onnxd-imgtool [--color rgb|bgr|gray] [--resize shorter:N|exact:WxH] [--filter NAME]
 *                 [--crop WxH] [--dtype fp32|fp16|uint8] [--layout nchw|nhwc] [--scale F]
 *                 [--mean A,B,C] [--std A,B,C] [--exif] [--max-pixels N] [--shape]
 *                 [--bench N] FILE
 * --shape prints "C H W" (ox_img_row_shape) on stderr; --bench N runs N times and prints the
 * median and minimum time per image on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "image/image.h"

static void die(const char *msg, const char *arg) {
  fprintf(stderr, "onnxd-imgtool: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
  exit(2);
}

static void floats3(const char *s, float v[3]) {
  char *end;
  for (int i = 0; i < 3; i++) {
    v[i] = strtof(s, &end);
    if (end == s) die("bad float list", s);
    if (*end != ',') {
      for (int j = i + 1; j < 3; j++) v[j] = v[i];
      return;
    }
    s = end + 1;
  }
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  ox_img_spec_t s;
  ox_img_spec_init(&s);
  const char *file = NULL;
  int shape = 0, bench = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG() (v ? (i++, v) : (die("missing value for", a), ""))
    if (!strcmp(a, "--color")) {
      const char *x = ARG();
      s.color = !strcmp(x, "bgr") ? OX_IMG_BGR : !strcmp(x, "gray") ? OX_IMG_GRAY : OX_IMG_RGB;
    } else if (!strcmp(a, "--resize")) {
      const char *x = ARG();
      unsigned p, q;
      if (sscanf(x, "shorter:%u", &p) == 1) {
        s.resize = OX_IMG_RESIZE_SHORTER;
        s.shorter_side = p;
      } else if (sscanf(x, "exact:%ux%u", &p, &q) == 2) {
        s.resize = OX_IMG_RESIZE_EXACT;
        s.resize_w = p;
        s.resize_h = q;
      } else
        die("bad --resize", x);
    } else if (!strcmp(a, "--filter")) {
      const char *x = ARG();
      static const char *names[] = {"bilinear", "nearest", "bicubic", "box", "hamming", "lanczos"};
      int f = -1;
      for (int k = 0; k < 6; k++)
        if (!strcmp(x, names[k])) f = k;
      if (f < 0) die("bad --filter", x);
      s.filter = (ox_img_filter_t)f;
    } else if (!strcmp(a, "--crop")) {
      const char *x = ARG();
      if (sscanf(x, "%ux%u", &s.crop_w, &s.crop_h) != 2) die("bad --crop", x);
    } else if (!strcmp(a, "--dtype")) {
      const char *x = ARG();
      s.dtype = !strcmp(x, "fp16") ? OX_DT_FP16 : !strcmp(x, "uint8") ? OX_DT_UINT8 : OX_DT_FP32;
    } else if (!strcmp(a, "--layout")) {
      s.layout = !strcmp(ARG(), "nhwc") ? OX_IMG_NHWC : OX_IMG_NCHW;
    } else if (!strcmp(a, "--scale")) {
      s.scale = strtof(ARG(), NULL);
    } else if (!strcmp(a, "--mean")) {
      floats3(ARG(), s.mean);
    } else if (!strcmp(a, "--std")) {
      floats3(ARG(), s.std);
    } else if (!strcmp(a, "--exif")) {
      s.exif_orientation = 1;
    } else if (!strcmp(a, "--max-pixels")) {
      s.max_pixels = strtoull(ARG(), NULL, 10);
    } else if (!strcmp(a, "--shape")) {
      shape = 1;
    } else if (!strcmp(a, "--bench")) {
      bench = atoi(ARG());
    } else if (a[0] == '-' && a[1]) {
      die("unknown option", a);
    } else {
      file = a;
    }
  }
  if (!file) die("no input file", NULL);
  FILE *f = !strcmp(file, "-") ? stdin : fopen(file, "rb");
  if (!f) die("cannot open", file);
  size_t cap = 1 << 16, len = 0, n;
  unsigned char *data = malloc(cap);
  while (data && (n = fread(data + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) {
      unsigned char *more = realloc(data, cap *= 2);
      if (!more) free(data);
      data = more;
    }
  }
  if (!data) die("out of memory", NULL);
  if (f != stdin) fclose(f);

  char err[256];
  uint32_t c, h, w;
  if (ox_img_row_shape(&s, data, len, &c, &h, &w, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    free(data);
    return 1;
  }
  if (shape) fprintf(stderr, "%u %u %u\n", (unsigned)c, (unsigned)h, (unsigned)w);
  size_t size = (size_t)c * h * w * ox_dtype_size(s.dtype);
  void *dst = malloc(size ? size : 1);
  if (!dst) die("out of memory", NULL);
  int runs = bench > 0 ? bench : 1, rc = 0;
  double *t = malloc(sizeof *t * (size_t)runs);
  for (int r = 0; r < runs && rc == 0; r++) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    rc = ox_img_preprocess(&s, data, len, dst, size, err, sizeof err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    t[r] = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
  }
  if (rc != 0) {
    fprintf(stderr, "%s\n", err);
    free(t);
    free(dst);
    free(data);
    return 1;
  }
  if (bench > 0) {
    qsort(t, (size_t)runs, sizeof *t, cmp_d);
    fprintf(stderr, "%d runs: median %.3f ms, min %.3f ms per image\n", runs, t[runs / 2], t[0]);
  } else if (fwrite(dst, 1, size, stdout) != size) {
    die("write failed", NULL);
  }
  free(t);
  free(dst);
  free(data);
  return 0;
}
