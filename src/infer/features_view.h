/* features_view.h: a model's feature view at request time: builds the model input the view
 * names from an inference request that carries only keys and raw values.
 *
 * Request (Open Inference Protocol, KServe v2):
 *   {"inputs": [{"name": "amount", "shape": [1], "datatype": "FP32", "data": [12.5]}],
 *    "parameters": {"user_id": "u1", "card_id": "c1", "ts": 1700000000000,
 *                   "return_features": true}}
 * Columns, in the view's order, each filling `width` floats of every row:
 *   {"raw": NAME}        request input NAME (FP32, FP64, INT32 or INT64; shape [N], [N,1] or
 *                        [1]) or, without such an input, request parameter NAME (a number,
 *                        read as float64 and rounded once to float32).
 *   {"velocity": KEY}    the 8 features of features/velocity.h of entity "<type>:<value>", type
 *                        = KEY without its "_id" suffix, value = request parameter KEY (a
 *                        string, or an integer taken as its digits), at t = parameter "ts"
 *                        (integer ms; the wall clock when absent).
 *   {"row": KEY, "table": T, "width": K, "default": x}
 *                        the first K floats of stored row "T:<value of KEY>"; missing values
 *                        (no row, a shorter row) are x.
 * Rows: N = the longest raw input (others must have 1 or N values), 1 when there is none; key
 * features are the same on every row. A tier that fails or misses the deadline gives its
 * defaults (velocity: zeros and secs_since_last -1; rows: x) and flags the result degraded;
 * a "mandatory" view is refused instead (OX_EUNAVAILABLE: 503 over HTTP).
 */
#ifndef OX_INFER_FEATURES_VIEW_H
#define OX_INFER_FEATURES_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "features/fstore.h"
#include "infer/infer.h"
#include "infer/model_config.h"

typedef struct {
  float *data;         /* rows x view width, arena-owned, 64-byte aligned */
  int64_t shape[2];    /* {rows, width} */
  uint64_t count;      /* rows * width */
  int degraded;        /* some value is a default because a tier was slow or down */
  int return_features; /* request parameter "return_features" is true */
} ox_fview_out_t;

/* A request whose rows only L3 has, assembled without waiting on the network: the first call
 * of ox_fview_assemble lists those rows and returns OX_FVIEW_FETCH; the caller hands fetch.f
 * to ox_fstore_fetch (setting fetch.f.done), sets `answered` once it is done (or refused), and
 * calls ox_fview_assemble again, which then only fills the answers into the first call's
 * result (the request is not read again; every other lookup was made once, by the first
 * call). Zero-initialise; the wants live
 * in the arena given to ox_fview_assemble; ox_fview_fetch_release frees their buffers. */
typedef struct {
  ox_fstore_fetch_t f;
  int answered;
  /* private: the first call's result, which the second fills in */
  uint32_t *col, *off; /* per want: its column, and that column's offset in a row */
  float *data;
  uint64_t rows;
  int degraded, return_features;
  char why[160];
} ox_fview_fetch_t;

#define OX_FVIEW_FETCH 1 /* ox_fview_assemble: rows must be fetched first */

/* Assembles the view's input for one request, parsed into req (borrowed: its keys and raw
 * values are read from req->params, every request parameter, however many; the JSON is not
 * walked again); memory comes from arena. fs may be NULL only
 * for a view without velocity and row columns. deadline_ns (CLOCK_MONOTONIC) bounds the
 * remote lookups. fetch: NULL reads L3 synchronously; else see ox_fview_fetch_t. Returns 0,
 * OX_FVIEW_FETCH, or an error code (OX_EINVALID bad or missing keys and raw values,
 * OX_EUNAVAILABLE a mandatory view degraded, OX_ENOMEM) with a message in err. */
int ox_fview_assemble(ox_fstore_t *fs, const ox_feature_view_t *v, const ox_infer_request_t *req,
                      ox_arena_t *arena, int64_t deadline_ns, ox_fview_fetch_t *fetch,
                      ox_fview_out_t *out, char *err, size_t errcap);

/* Frees what the wants of fetch hold. NULL allowed. */
void ox_fview_fetch_release(ox_fview_fetch_t *fetch);

/* 1 if request input `name` is consumed by one of the view's raw columns. */
int ox_fview_takes_input(const ox_feature_view_t *v, ox_slice_t name);

#endif
