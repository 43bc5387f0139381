/* onnx_extdata.c: the external-data scanner and file checks (see onnx_extdata.h). */
#include "runtime/onnx_extdata.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/text.h"

enum { K_MODEL, K_GRAPH, K_NODE, K_ATTR, K_TENSOR, K_SPARSE, K_ENTRY, K_TRAINING, K_FUNCTION };

typedef struct {
  int kind;
  size_t end;
  uint32_t singular_seen; /* bit per singular tensor field already met (ATTR t/sparse_tensor,
                             SPARSE values/indices) */
  /* K_TENSOR */
  ox_slice_t name, location;
  uint64_t offset, length, dims_product;
  int nloc, noffset, nlength, nentries, external, data_type, dims_bad;
  /* K_ENTRY */
  ox_slice_t key, value;
} ox_frame_t;

/* Child message kind of field `field` of a `kind` message, or -1 (not followed). *singular_bit
 * is set for singular tensor fields that protobuf would merge if repeated. */
static int ox_child(int kind, uint64_t field, uint32_t *singular_bit) {
  *singular_bit = 0;
  switch (kind) {
    case K_MODEL:
      return field == 7 ? K_GRAPH : field == 20 ? K_TRAINING : field == 25 ? K_FUNCTION : -1;
    case K_TRAINING:
      return field == 1 || field == 2 ? K_GRAPH : -1;
    case K_FUNCTION:
      return field == 7 ? K_NODE : -1;
    case K_GRAPH:
      return field == 1 ? K_NODE : field == 5 ? K_TENSOR : field == 15 ? K_SPARSE : -1;
    case K_NODE:
      return field == 5 ? K_ATTR : -1;
    case K_ATTR:
      if (field == 5) *singular_bit = 1;
      if (field == 22) *singular_bit = 2;
      return field == 5 || field == 10    ? K_TENSOR
             : field == 6 || field == 11  ? K_GRAPH
             : field == 22 || field == 23 ? K_SPARSE
                                          : -1;
    case K_SPARSE:
      if (field == 1 || field == 2) *singular_bit = (uint32_t)field;
      return field == 1 || field == 2 ? K_TENSOR : -1;
    case K_TENSOR:
      return field == 13 ? K_ENTRY : -1;
    default:
      return -1;
  }
}

/* Reads a varint at p[*pos..end). 0 or -1 (truncated or longer than 10 bytes / 64 bits). */
static int ox_varint(const uint8_t *p, size_t *pos, size_t end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= end) return -1;
    uint8_t b = p[(*pos)++];
    if (shift == 63 && b > 1) return -1;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

/* Bits per element of an ONNX data type with a fixed size, 0 otherwise. */
static unsigned ox_elem_bits(int dt) {
  static const unsigned char bits[] = {0,  32, 8,   8,  16, 16, 32, 64, 0, 8, 16, 64, 32,
                                       64, 64, 128, 16, 8,  8,  8,  8,  4, 4, 4,  8};
  return dt > 0 && (size_t)dt < sizeof bits ? bits[dt] : 0;
}

static void ox_dim(ox_frame_t *t, uint64_t d) {
  if ((int64_t)d < 0 || __builtin_mul_overflow(t->dims_product, d, &t->dims_product))
    t->dims_bad = 1;
}

static void ox_printable(char *dst, size_t cap, ox_slice_t s) {
  size_t i = 0;
  for (; i < s.len && i + 1 < cap && i < 80; i++)
    dst[i] = (s.ptr[i] >= 0x20 && s.ptr[i] < 0x7f) ? s.ptr[i] : '?';
  dst[i] = '\0';
}

/* A finished tensor: validates its external-data keys and calls fn. */
static int ox_tensor_done(ox_frame_t *t, ox_onnx_ext_fn fn, void *ctx, char *err, size_t cap) {
  if (!t->external && t->nentries == 0) return 0;
  char nm[96];
  ox_printable(nm, sizeof nm, t->name);
  if (t->nloc != 1) {
    snprintf(err, cap, "tensor '%s': external data with %s location", nm,
             t->nloc ? "more than one" : "no");
    return OX_EINVALID;
  }
  if (t->noffset > 1 || t->nlength > 1 || t->offset == UINT64_MAX || t->length == UINT64_MAX) {
    snprintf(err, cap, "tensor '%s': external data offset or length repeated or not a number", nm);
    return OX_EINVALID;
  }
  ox_onnx_ext_t e = {.name = t->name,
                     .location = t->location,
                     .offset = t->offset,
                     .length = t->length,
                     .has_length = t->nlength == 1};
  unsigned bits = ox_elem_bits(t->data_type);
  uint64_t nbits;
  if (bits && !t->dims_bad && !__builtin_mul_overflow(t->dims_product, bits, &nbits)) {
    e.expected = nbits / 8 + (nbits % 8 != 0);
    e.has_expected = 1;
  }
  return fn(ctx, &e, err, cap);
}

/* Parses a decimal "offset"/"length" value; UINT64_MAX marks a bad one. */
static uint64_t ox_ext_number(ox_slice_t v) {
  uint64_t n;
  return ox_dec_u64(v.ptr, v.len, INT64_MAX, &n) ? UINT64_MAX : n;
}

static void ox_entry_done(ox_frame_t *entry, ox_frame_t *t) {
  t->nentries++;
  if (ox_slice_eq(entry->key, "location")) {
    t->nloc++;
    t->location = entry->value;
  } else if (ox_slice_eq(entry->key, "offset")) {
    t->noffset++;
    t->offset = ox_ext_number(entry->value);
  } else if (ox_slice_eq(entry->key, "length")) {
    t->nlength++;
    t->length = ox_ext_number(entry->value);
  }
}

int ox_onnx_extdata_scan(const void *data, size_t len, ox_onnx_ext_fn fn, void *ctx, char *err,
                         size_t errcap) {
  const uint8_t *p = data;
  ox_frame_t st[OX_ONNX_MAX_DEPTH];
  size_t depth = 1, pos = 0;
  memset(&st[0], 0, sizeof st[0]);
  st[0].kind = K_MODEL;
  st[0].end = len;
  for (;;) {
    ox_frame_t *f = &st[depth - 1];
    if (pos == f->end) {
      int rc = 0;
      if (f->kind == K_TENSOR) rc = ox_tensor_done(f, fn, ctx, err, errcap);
      if (f->kind == K_ENTRY) ox_entry_done(f, &st[depth - 2]);
      if (rc) return rc;
      if (--depth == 0) return 0;
      continue;
    }
    uint64_t tag, v;
    if (ox_varint(p, &pos, f->end, &tag)) goto malformed;
    uint64_t field = tag >> 3;
    unsigned wt = (unsigned)(tag & 7);
    if (field == 0 || field > 536870911) goto malformed;
    switch (wt) {
      case 0:
        if (ox_varint(p, &pos, f->end, &v)) goto malformed;
        if (f->kind == K_TENSOR) {
          if (field == 14) f->external = v == 1;
          if (field == 2) f->data_type = v > 64 ? -1 : (int)v;
          if (field == 1) ox_dim(f, v);
        }
        break;
      case 1:
      case 5: {
        size_t n = wt == 1 ? 8 : 4;
        if (f->end - pos < n) goto malformed;
        pos += n;
        break;
      }
      case 2: {
        if (ox_varint(p, &pos, f->end, &v)) goto malformed;
        if (v > f->end - pos) goto malformed;
        ox_slice_t s = ox_slice((const char *)p + pos, (size_t)v);
        uint32_t bit;
        int child = ox_child(f->kind, field, &bit);
        if (child >= 0) {
          if (bit && (f->singular_seen & bit)) {
            snprintf(err, errcap, "a singular tensor field is given twice");
            return OX_EINVALID;
          }
          f->singular_seen |= bit;
          if (depth == OX_ONNX_MAX_DEPTH) {
            snprintf(err, errcap, "model nesting deeper than %d", OX_ONNX_MAX_DEPTH);
            return OX_EDEPTH;
          }
          ox_frame_t *c = &st[depth++];
          memset(c, 0, sizeof *c);
          c->kind = child;
          c->end = pos + (size_t)v;
          c->dims_product = 1;
          continue; /* pos stays at the child's first byte */
        }
        if (f->kind == K_TENSOR && field == 8) f->name = s;
        if (f->kind == K_TENSOR && field == 1) { /* packed dims */
          size_t q = pos, e = pos + (size_t)v;
          while (q < e) {
            uint64_t d;
            if (ox_varint(p, &q, e, &d)) goto malformed;
            ox_dim(f, d);
          }
        }
        if (f->kind == K_ENTRY && field == 1) f->key = s;
        if (f->kind == K_ENTRY && field == 2) f->value = s;
        pos += (size_t)v;
        break;
      }
      default: /* groups (3, 4) are obsolete; 6 and 7 do not exist */
        goto malformed;
    }
  }
malformed:
  snprintf(err, errcap, "malformed model (protobuf wire format)");
  return OX_EINVALID;
}

int ox_onnx_extdata_location_ok(ox_slice_t loc, const char **why) {
  if (loc.len == 0) return *why = "empty location", -1;
  if (loc.len > OX_ONNX_MAX_LOCATION) return *why = "location too long", -1;
  for (size_t i = 0; i < loc.len; i++) {
    unsigned char c = (unsigned char)loc.ptr[i];
    if (c == 0) return *why = "location contains a NUL byte", -1;
    if (c < 0x20 || c == 0x7f) return *why = "location contains a control character", -1;
  }
  if (loc.ptr[0] == '/') return *why = "outside the model directory (absolute path)", -1;
  for (size_t i = 0; i < loc.len;) {
    size_t j = i;
    while (j < loc.len && loc.ptr[j] != '/') j++;
    if (j - i == 2 && loc.ptr[i] == '.' && loc.ptr[i + 1] == '.')
      return *why = "outside the model directory", -1;
    i = j + 1;
  }
  if (memmem(loc.ptr, loc.len, "_ORT_MEM_ADDR_", 14))
    return *why = "reserved location (ONNX Runtime's in-memory tag)", -1;
  return 0;
}

typedef struct {
  const char *dir;
  char *real_dir; /* realpath(dir), lazily */
  char last[OX_ONNX_MAX_LOCATION + 1];
  size_t last_len;
  uint64_t last_size;
  int have_last;
} ox_check_ctx_t;

static int ox_inside(const char *root, const char *path) {
  size_t n = strlen(root);
  if (n == 1) return path[0] == '/';
  return strncmp(path, root, n) == 0 && path[n] == '/';
}

static int ox_check_one(void *vctx, const ox_onnx_ext_t *e, char *err, size_t cap) {
  ox_check_ctx_t *c = vctx;
  char loc[96];
  ox_printable(loc, sizeof loc, e->location);
  const char *why = NULL;
  if (ox_onnx_extdata_location_ok(e->location, &why)) goto refuse;
  uint64_t size;
  if (c->have_last && c->last_len == e->location.len &&
      memcmp(c->last, e->location.ptr, e->location.len) == 0) {
    size = c->last_size;
  } else {
    if (!c->dir) {
      why = "the model has no directory";
      goto refuse;
    }
    if (!c->real_dir && !(c->real_dir = realpath(c->dir, NULL))) {
      why = "model directory not found";
      goto refuse;
    }
    char path[PATH_MAX + OX_ONNX_MAX_LOCATION + 2];
    memcpy(c->last, e->location.ptr, e->location.len);
    c->last[e->location.len] = '\0';
    snprintf(path, sizeof path, "%s/%s", c->real_dir, c->last);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
      why = errno == ENOENT ? "file not found" : errno == ELOOP ? "symlink loop" : "cannot open";
      goto refuse;
    }
    struct stat sb;
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, sizeof real - 1);
    int fst = fstat(fd, &sb);
    close(fd);
    if (n <= 0 || real[0] != '/') {
      why = "cannot resolve the file's real path";
      goto refuse;
    }
    real[n] = '\0';
    if (!ox_inside(c->real_dir, real)) {
      why = "outside the model directory";
      goto refuse;
    }
    if (fst != 0 || !S_ISREG(sb.st_mode)) {
      why = "not a regular file";
      goto refuse;
    }
    size = (uint64_t)sb.st_size;
    c->last_len = e->location.len;
    c->last_size = size;
    c->have_last = 1;
  }
  uint64_t need = e->has_length ? e->length : e->has_expected ? e->expected : 0, endpos;
  if (e->offset > size) {
    why = "offset beyond the end of the file";
    goto refuse;
  }
  if (__builtin_add_overflow(e->offset, need, &endpos) || endpos > size) {
    why = "length beyond the end of the file";
    goto refuse;
  }
  return 0;
refuse:
  snprintf(err, cap, "external data '%s': %s", loc, why);
  return OX_EINVALID;
}

int ox_onnx_extdata_check(const void *data, size_t len, const char *dir, char *err, size_t errcap) {
  ox_check_ctx_t *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errcap, "out of memory");
    return OX_ENOMEM;
  }
  c->dir = dir;
  int rc = ox_onnx_extdata_scan(data, len, ox_check_one, c, err, errcap);
  free(c->real_dir);
  free(c);
  return rc;
}
