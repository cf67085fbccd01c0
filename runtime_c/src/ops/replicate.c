/*
 * Expand (numpy broadcast of X to the stored output shape) and Tile (repeats; the output shape is the
 * stored one). Both read X through an index map: Expand with stride 0 along broadcast dims, Tile with the
 * coordinate modulo X's dim. Float path only: on int8 tensors the executor's dequantise-copy-requantise
 * returns the same codes when the quantisation is equal (the builder gives them equal quantisation).
 */
#include <stdlib.h>
#include <string.h>

#include "strided.h"

typedef struct rep_priv {
    int64_t rank;
    int64_t odims[SIM_MAX_DIMS], idims[SIM_MAX_DIMS], istr[SIM_MAX_DIMS];
    int tile;
} rep_priv;

static int rep_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y || op->n_outputs != 1) return sim_fail(err, err_len, op, "needs X and one output");
    rep_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    p->tile = op->type == SIM_OP_TILE;
    p->rank = y->n_dims;
    int ok = 1;
    if (p->tile) {
        ok = x->n_dims == y->n_dims;
        sim_row_strides(x, p->istr);
        for (uint32_t d = 0; ok && d < y->n_dims; d++) ok = y->dims[d] % x->dims[d] == 0;
        for (uint32_t d = 0; ok && d < y->n_dims; d++) p->idims[d] = x->dims[d];
    } else {
        ok = sim_bcast_strides(y, x, p->istr) == 0;
    }
    if (!ok) {
        free(p);
        return sim_fail(err, err_len, op, "Y %s cannot be %s of X %s", sim_shape_str(y, b1, sizeof b1),
                        op->type == SIM_OP_TILE ? "a tiling" : "a broadcast", sim_shape_str(x, b2, sizeof b2));
    }
    for (uint32_t d = 0; d < y->n_dims; d++) p->odims[d] = y->dims[d];
    op->priv = p;
    return 0;
}

static int rep_run_f32(sim_kernel_call *call)
{
    const rep_priv *p = call->op->priv;
    const float *x = sim_call_in_f32(call, 0);
    float *y = call->out[0].f32;
    const sim_tensor *yt = call->out[0].t;
    if (!p || !x || !y || !yt) return SIM_ERR_FAIL;
    int64_t r = p->rank;
    if (r == 0) {
        y[0] = x[0];
        sim_op_act(call->op, y, 1);
        return 0;
    }
    int64_t inner = p->odims[r - 1], outer = yt->n_elems / inner, ls = p->istr[r - 1];
    int64_t in_last = p->tile ? p->idims[r - 1] : 0;
    int64_t idx[SIM_MAX_DIMS] = {0};
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = 0;
        for (int64_t d = 0; d < r - 1; d++) off += (p->tile ? idx[d] % p->idims[d] : idx[d]) * p->istr[d];
        float *yr = y + o * inner;
        if (p->tile) {
            for (int64_t e = 0; e < inner; e += in_last) memcpy(yr + e, x + off, (size_t)in_last * sizeof(float));
        } else if (ls == 1) {
            memcpy(yr, x + off, (size_t)inner * sizeof(float));
        } else {
            float v = x[off];
            for (int64_t e = 0; e < inner; e++) yr[e] = v;
        }
        for (int64_t d = r - 2; d >= 0; d--) {
            if (++idx[d] < p->odims[d]) break;
            idx[d] = 0;
        }
    }
    sim_op_act(call->op, y, (size_t)yt->n_elems);
    return 0;
}

const sim_op_def sim_def_expand = {.type = SIM_OP_EXPAND, .onnx_name = "Expand", .npu_name = "Expand",
                                   .prepare = rep_prepare, .run_f32 = rep_run_f32, .run_i8 = NULL,
                                   .release = sim_free_priv, .macs = NULL};
const sim_op_def sim_def_tile = {.type = SIM_OP_TILE, .onnx_name = "Tile", .npu_name = "Tile",
                                 .prepare = rep_prepare, .run_f32 = rep_run_f32, .run_i8 = NULL,
                                 .release = sim_free_priv, .macs = NULL};
