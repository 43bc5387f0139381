/* flags.c: the table-driven command-line parser of flags.h. */
#include "core/flags.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "core/error.h"
#include "core/text.h"

/* Decimal digits only, no sign, overflow-checked. */
/* Decimal digits with an optional leading '-' (e.g. --grpc-port -1); the caller checks the
 * flag's range, so a sign is refused by any flag whose minimum is not negative. */
static int parse_long(const char *s, long *out) {
  uint64_t v;
  int neg = s[0] == '-';
  if (ox_dec_u64(s + neg, strlen(s + neg), LONG_MAX, &v)) return -1;
  *out = neg ? -(long)v : (long)v;
  return 0;
}

/* Decimal "123" or "12.5": digits, at most one point, no sign or exponent. At most 18 digits,
 * so the digits are summed exactly before the one division by the scale. */
static int parse_decimal(const char *s, double *out) {
  size_t n = strlen(s), fd = 0;
  uint64_t v, frac = 0, scale = 1;
  int ovf, point;
  size_t k = ox_dec_prefix(s, n, &v, &ovf), id = k;
  if ((point = k < n && s[k] == '.'))
    k += 1 + (fd = ox_dec_prefix(s + k + 1, n - k - 1, &frac, &ovf));
  if (k != n || id + fd == 0 || id + fd > 18) return -1;
  for (size_t i = 0; i < fd; i++) scale *= 10;
  v = v * scale + frac; /* below 10^18: exact */
  *out = point ? (double)v / (double)scale : (double)v;
  return 0;
}

/* Stores val into the field of f; 0, or OX_EINVALID after printing why. */
static int store(const ox_flags_spec_t *spec, const ox_flag_t *f, const char *val, void *opts,
                 FILE *err) {
  char *p = (char *)opts + f->offset;
  switch (f->type) {
    case OX_FLAG_STR:
      *(const char **)p = val;
      return 0;
    case OX_FLAG_LIST: {
      ox_flag_list_t *l = (ox_flag_list_t *)p;
      if (l->n >= l->cap) {
        fprintf(err, "%s: at most %zu --%s flags\n", spec->prog, l->cap, f->name);
        return OX_EINVALID;
      }
      l->items[l->n++] = val;
      return 0;
    }
    case OX_FLAG_INT: {
      long v, lo = (long)f->min, hi = (long)f->max;
      if (parse_long(val, &v) || v < lo || v > hi) {
        fprintf(err, "%s: --%s must be an integer from %ld to %ld, not '%s'\n", spec->prog, f->name,
                lo, hi, val);
        return OX_EINVALID;
      }
      *(long *)p = v;
      return 0;
    }
    case OX_FLAG_DEC: {
      double v;
      if (parse_decimal(val, &v) || v < f->min || v > f->max) {
        fprintf(err, "%s: --%s must be a number from %g to %g, not '%s'\n", spec->prog, f->name,
                f->min, f->max, val);
        return OX_EINVALID;
      }
      *(double *)p = v;
      return 0;
    }
    case OX_FLAG_EXIT:
    case OX_FLAG_HELP:
      break;
  }
  fprintf(err, "%s: flag --%s takes no value\n", spec->prog, f->name);
  return OX_EINVALID;
}

int ox_flags_parse(const ox_flags_spec_t *spec, int argc, char **argv, void *opts, FILE *err) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) return OX_FLAGS_HELP;
    if (strncmp(a, "--", 2) != 0) {
      fprintf(err, "%s: unexpected argument '%s' (see --help)\n", spec->prog, a);
      return OX_EINVALID;
    }
    const char *name = a + 2, *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    const ox_flag_t *f = NULL;
    for (size_t k = 0; k < spec->nflags && !f; k++)
      if (strlen(spec->flags[k].name) == nlen && !strncmp(spec->flags[k].name, name, nlen))
        f = &spec->flags[k];
    if (!f) {
      fprintf(err, "%s: unknown flag '%.*s' (see --help)\n", spec->prog, (int)(nlen + 2), a);
      return OX_EINVALID;
    }
    if (f->type == OX_FLAG_HELP && !eq) return OX_FLAGS_HELP;
    if (f->type == OX_FLAG_EXIT && !eq) {
      *(int *)((char *)opts + f->offset) = 1;
      return OX_FLAGS_EXIT;
    }
    const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
    if (!val) {
      fprintf(err, "%s: flag --%s needs a value\n", spec->prog, f->name);
      return OX_EINVALID;
    }
    int rc = store(spec, f, val, opts, err);
    if (rc) return rc;
  }
  return 0;
}

void ox_flags_usage(const ox_flags_spec_t *spec, const void *defaults, FILE *out) {
  if (spec->usage_head) fputs(spec->usage_head, out);
  for (size_t i = 0; i < spec->nflags; i++) {
    const ox_flag_t *f = &spec->flags[i];
    fprintf(out, "  --%-*s %s", spec->name_width, f->name, f->help);
    const char *p = defaults ? (const char *)defaults + f->offset : NULL;
    if (p && f->type == OX_FLAG_STR) {
      const char *s = *(const char *const *)p;
      fprintf(out, " (default %s)", s && *s ? s : "none");
    } else if (p && f->type == OX_FLAG_INT) {
      fprintf(out, " (default %ld)", *(const long *)p);
    } else if (p && f->type == OX_FLAG_DEC) {
      fprintf(out, " (default %g)", *(const double *)p);
    }
    fputc('\n', out);
  }
  if (spec->usage_tail) fputs(spec->usage_tail, out);
}
