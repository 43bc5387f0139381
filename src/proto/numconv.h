/* numconv.h: C interface to the header-only C++ libraries fast_float (exact decimal -> binary)
 * and dragonbox (shortest binary -> decimal). numconv.cc is the only C++ in onnxd. */
#ifndef OX_PROTO_NUMCONV_H
#define OX_PROTO_NUMCONV_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parses a JSON number at s[0..len) (the whole token) correctly rounded. Returns the bytes
 * consumed (> 0) or 0 when s does not start with a number. */
size_t ox_parse_f64(const char *s, size_t len, double *out);
size_t ox_parse_f32(const char *s, size_t len, float *out);
/* Writes the shortest round-tripping decimal of a finite value into out (>= 32 bytes), no NUL.
 * Returns the length. Format: like JavaScript's Number.prototype.toString ("1", "0.5",
 * "1.5e-7", "1e+21"); valid JSON numbers. */
size_t ox_format_f64(double v, char *out);
size_t ox_format_f32(float v, char *out);

#ifdef __cplusplus
}
#endif
#endif
