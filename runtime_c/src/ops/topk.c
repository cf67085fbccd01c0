/*
 * Selections along one axis: ArgMax / ArgMin (first or last extreme index) and TopK (the k largest or
 * smallest, sorted; ties keep the lower index first, as onnxruntime does). Indices are written as exact
 * float32 integers (how the runtime carries integer tensors). NaN is treated as larger than any number.
 */
#include <stdlib.h>

#include "strided.h"

typedef struct sel_priv {
    int64_t outer, n, inner, k;
    int largest, last;
} sel_priv;

static int sel_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    uint32_t want_out = op->type == SIM_OP_TOPK ? 2 : 1;
    if (!x || !y || op->n_outputs != want_out || x->n_dims < 1)
        return sim_fail(err, err_len, op, "needs X and %u output(s)", want_out);
    int64_t axis = sim_attr_int(op, "axis", op->type == SIM_OP_TOPK ? -1 : 0);
    if (axis < 0) axis += x->n_dims;
    if (axis < 0 || axis >= (int64_t)x->n_dims)
        return sim_fail(err, err_len, op, "axis %lld out of range for X %s", (long long)axis, sim_shape_str(x, b1, sizeof b1));
    sel_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    sim_axis_geom(x, (uint32_t)axis, &p->outer, &p->n, &p->inner);
    p->largest = op->type == SIM_OP_ARGMIN ? 0 : (int)sim_attr_int(op, "largest", 1);
    p->last = (int)sim_attr_int(op, "select_last_index", 0);
    p->k = op->type == SIM_OP_TOPK ? sim_attr_int(op, "k", 1) : 1;
    int ok = p->k >= 1 && p->k <= p->n && y->n_elems == p->outer * p->k * p->inner;
    if (op->type == SIM_OP_TOPK) {
        const sim_tensor *yi = sim_out_tensor(g, op, 1);
        ok = ok && yi && sim_same_shape(y, yi) && y->n_dims == x->n_dims && y->dims[axis] == p->k;
    }
    if (!ok) {
        free(p);
        return sim_fail(err, err_len, op, "output %s does not match selecting along axis %lld of X %s",
                        sim_shape_str(y, b1, sizeof b1), (long long)axis, sim_shape_str(x, b2, sizeof b2));
    }
    op->priv = p;
    return 0;
}

/* True when a ranks before b (a at index ia, b at ib): better value, or equal and the preferred index. */
static int before(float a, int64_t ia, float b, int64_t ib, int largest, int last)
{
    int an = a != a, bn = b != b;
    if (an || bn) {
        if (an && bn) return last ? ia > ib : ia < ib;
        return largest ? an : bn;
    }
    if (a != b) return largest ? a > b : a < b;
    return last ? ia > ib : ia < ib;
}

static int sel_run_f32(sim_kernel_call *call)
{
    const sel_priv *p = call->op->priv;
    const float *x = sim_call_in_f32(call, 0);
    float *vals = call->out[0].f32, *inds = call->op->type == SIM_OP_TOPK ? call->out[1].f32 : NULL;
    if (!p || !x || !vals || (call->op->type == SIM_OP_TOPK && !inds)) return SIM_ERR_FAIL;
    int64_t *best = sim_scratch_get(call, (size_t)p->k * sizeof(int64_t));
    if (!best) return SIM_ERR_MALLOC;
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t i = 0; i < p->inner; i++) {
            const float *xs = x + o * p->n * p->inner + i;
            int64_t have = 0;
            for (int64_t j = 0; j < p->n; j++) {
                float v = xs[j * p->inner];
                if (have == p->k && !before(v, j, xs[best[have - 1] * p->inner], best[have - 1], p->largest, p->last))
                    continue;
                int64_t pos = have < p->k ? have++ : p->k - 1;
                while (pos > 0 && before(v, j, xs[best[pos - 1] * p->inner], best[pos - 1], p->largest, p->last)) {
                    best[pos] = best[pos - 1];
                    pos--;
                }
                best[pos] = j;
            }
            for (int64_t t = 0; t < p->k; t++) {
                int64_t out = (o * p->k + t) * p->inner + i;
                if (inds) {
                    vals[out] = xs[best[t] * p->inner];
                    inds[out] = (float)best[t];
                } else {
                    vals[out] = (float)best[t];
                }
            }
        }
    return 0;
}

static uint64_t sel_macs(const sim_graph *g, const sim_op *op)
{
    const sel_priv *p = op->priv;
    (void)g;
    return p ? (uint64_t)(p->outer * p->n * p->inner) : 0;
}

#define SEL_DEF(sym, id, onnx)                                                                               \
    const sim_op_def sym = {.type = id, .onnx_name = onnx, .npu_name = onnx, .prepare = sel_prepare,          \
                            .run_f32 = sel_run_f32, .run_i8 = NULL, .release = sim_free_priv, .macs = sel_macs}

SEL_DEF(sim_def_argmax, SIM_OP_ARGMAX, "ArgMax");
SEL_DEF(sim_def_argmin, SIM_OP_ARGMIN, "ArgMin");
SEL_DEF(sim_def_topk, SIM_OP_TOPK, "TopK");
