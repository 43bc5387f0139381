/* tensor_json.h: tensor data <-> JSON arrays, straight into / out of tensor memory.
 *
 * Decoding reads the "data" value of an inference input (flat or nested arrays, any nesting
 * up to OX_JSON_MAX_DEPTH, the nesting need not match the shape: Triton accepts both) and
 * writes elements directly into the caller's tensor buffer: no tree of numbers, no per-element
 * allocation. Encoding writes a flat JSON array from tensor memory.
 * Numbers: floats parsed exactly (correctly rounded, fast_float) and printed in the shortest
 * form that round-trips (dragonbox); integers by a checked digit loop.
 */
#ifndef OX_PROTO_TENSOR_JSON_H
#define OX_PROTO_TENSOR_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/dtype.h"
#include "core/slice.h"

/* Decodes json (the raw text of a JSON array) holding exactly count elements of dtype.
 * out: count * ox_dtype_size(dtype) bytes, suitably aligned; for BYTES an array of count
 * ox_slice_t whose strings are unescaped into arena (or borrow json when no escapes).
 * Element rules: BOOL true/false only; integer types: JSON integers in the type's range (no
 * fraction, no exponent, no leading '+', no leading zeros); FP16/BF16/FP32/FP64: any JSON number,
 * correctly rounded to the type (FP16/BF16 from the exact decimal via double); NaN, Infinity
 * tokens and strings are rejected; BYTES: JSON strings.
 * Returns 0, or OX_EINVALID with err naming the problem and the element index, e.g.
 * "element 3: expected an integer, got 1.5", "expected 6 elements, got 5", or OX_EDEPTH,
 * OX_ENOMEM. */
int ox_tensor_json_decode(ox_slice_t json, ox_dtype_t dtype, uint64_t count, void *out,
                          ox_arena_t *arena, char *err, size_t errcap);

/* Appends a flat JSON array of count elements of dtype at data to out. For BYTES, data is an
 * array of count ox_slice_t; each becomes a JSON string (valid UTF-8 passes through, other
 * bytes are escaped as \u00XX). FP16/BF16/FP32: shortest text that reads back as the same
 * float32 (FP16/BF16 widened exactly to float32 first); FP64 shortest for double. Integral
 * values print without exponent when short ("1", "-3"), others as dragonbox gives them.
 * NaN and infinities print as the JSON strings "NaN", "Infinity", "-Infinity" (the protobuf
 * JSON mapping's form: strict parsers accept the answer; numpy converts the strings back, so
 * tritonclient's as_numpy returns the exact values). Bare NaN/Infinity tokens are not JSON.
 * Returns 0 or OX_ENOMEM. */
int ox_tensor_json_encode(ox_buf_t *out, ox_dtype_t dtype, const void *data, uint64_t count);

/* Half-precision conversions (IEEE binary16 and bfloat16), round-to-nearest-even. */
uint16_t ox_f32_to_f16(float f);
float ox_f16_to_f32(uint16_t h);
uint16_t ox_f64_to_f16(double d);
uint16_t ox_f64_to_bf16(double d);
float ox_bf16_to_f32(uint16_t h);

#endif
