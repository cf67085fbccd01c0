/*
 * GatherElements: out[i] = data[i with coordinate `axis` replaced by indices[i]]. The indices are a
 * constant or a run-time tensor (integers carried as exact float32 values); negative ones count from
 * the end, out-of-range ones fail the run with the op named. Float path only (the executor's
 * dequantise-copy-requantise keeps int8 codes when the quantisation is equal).
 */
#include <math.h>
#include <stdlib.h>

#include "strided.h"

typedef struct ge_priv {
    int64_t axis;
    int64_t dstr[SIM_MAX_DIMS]; /* data strides */
} ge_priv;

static int ge_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *ind = sim_in_tensor(g, op, 1), *y = sim_out_tensor(g, op, 0);
    if (!x || !ind || !y || op->n_outputs != 1) return sim_fail(err, err_len, op, "needs data, indices and one output");
    int64_t axis = sim_attr_int(op, "axis", 0);
    if (axis < 0) axis += x->n_dims;
    int ok = axis >= 0 && axis < (int64_t)x->n_dims && sim_same_shape(ind, y) && ind->n_dims == x->n_dims;
    for (uint32_t d = 0; ok && d < x->n_dims; d++) ok = (int64_t)d == axis || ind->dims[d] <= x->dims[d];
    if (!ok)
        return sim_fail(err, err_len, op, "indices/Y %s do not fit data %s on axis %lld", sim_shape_str(y, b1, sizeof b1),
                        sim_shape_str(x, b2, sizeof b2), (long long)axis);
    ge_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    p->axis = axis;
    sim_row_strides(x, p->dstr);
    op->priv = p;
    return 0;
}

/* Index i of an index tensor as an integer (constant INT32/INT64 data or float values). */
static int64_t index_at(const sim_tensor *t, const float *f, int64_t i)
{
    if (t->kind == SIM_T_CONST && t->dtype == SIM_I64) return ((const int64_t *)t->data)[i];
    if (t->kind == SIM_T_CONST && t->dtype == SIM_I32) return ((const int32_t *)t->data)[i];
    return sim_float_index(f[i]);
}

static int ge_run_f32(sim_kernel_call *call)
{
    const ge_priv *p = call->op->priv;
    const sim_tensor *xt = sim_call_in_t(call, 0), *it = sim_call_in_t(call, 1), *yt = call->out[0].t;
    const float *x = sim_call_in_f32(call, 0), *fi = sim_call_in_f32(call, 1);
    float *y = call->out[0].f32;
    if (!p || !xt || !it || !yt || !x || !y || (!fi && it->kind != SIM_T_CONST)) return SIM_ERR_FAIL;
    int64_t r = yt->n_dims, idx[SIM_MAX_DIMS] = {0}, dim = xt->dims[p->axis];
    for (int64_t e = 0; e < yt->n_elems; e++) {
        int64_t v = index_at(it, fi, e);
        if (v < 0) v += dim;
        if (v < 0 || v >= dim) return SIM_ERR_INVALID;
        int64_t off = 0;
        for (int64_t d = 0; d < r; d++) off += (d == p->axis ? v : idx[d]) * p->dstr[d];
        y[e] = x[off];
        for (int64_t d = r - 1; d >= 0; d--) {
            if (++idx[d] < yt->dims[d]) break;
            idx[d] = 0;
        }
    }
    sim_op_act(call->op, y, (size_t)yt->n_elems);
    return 0;
}

const sim_op_def sim_def_gather_elements = {.type = SIM_OP_GATHER_ELEMENTS, .onnx_name = "GatherElements",
                                            .npu_name = "GatherElements", .prepare = ge_prepare,
                                            .run_f32 = ge_run_f32, .run_i8 = NULL, .release = sim_free_priv,
                                            .macs = NULL};
