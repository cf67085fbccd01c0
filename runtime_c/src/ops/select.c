/*
 * Where(condition, X, Y): numpy broadcasting over three inputs. The condition is a boolean the runtime
 * carries as float 0/1 (any non-zero value is true). The int8 form is the executor's dequantise-select-
 * requantise, which returns X's or Y's value requantised to the output.
 */
#include <stdlib.h>

#include "strided.h"

typedef struct where_priv {
    int64_t str[3][SIM_MAX_DIMS];
} where_priv;

static int where_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96];
    const sim_tensor *ins[3], *y = sim_out_tensor(g, op, 0);
    for (uint32_t i = 0; i < 3; i++) ins[i] = sim_in_tensor(g, op, i);
    if (!ins[0] || !ins[1] || !ins[2] || !y || op->n_inputs != 3 || op->n_outputs != 1)
        return sim_fail(err, err_len, op, "needs condition, X, Y and one output");
    if (sim_bcast_check(y, ins, 3))
        return sim_fail(err, err_len, op, "output %s is not the broadcast shape of the inputs", sim_shape_str(y, b1, sizeof b1));
    where_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    for (uint32_t i = 0; i < 3; i++) sim_bcast_strides(y, ins[i], p->str[i]);
    op->priv = p;
    return 0;
}

static int where_run_f32(sim_kernel_call *call)
{
    const where_priv *p = call->op->priv;
    const float *c = sim_call_in_f32(call, 0), *a = sim_call_in_f32(call, 1), *b = sim_call_in_f32(call, 2);
    const sim_tensor *yt = call->out[0].t;
    float *y = call->out[0].f32;
    if (!p || !c || !a || !b || !y || !yt) return SIM_ERR_FAIL;
    int r = (int)yt->n_dims;
    if (r == 0) {
        y[0] = c[0] != 0.0f ? a[0] : b[0];
        sim_op_act(call->op, y, 1);
        return 0;
    }
    int64_t inner = yt->dims[r - 1], outer = yt->n_elems / (inner > 0 ? inner : 1);
    int64_t idx[SIM_MAX_DIMS] = {0}, oc = 0, oa = 0, ob = 0;
    int64_t lc = p->str[0][r - 1], la = p->str[1][r - 1], lb = p->str[2][r - 1];
    for (int64_t o = 0; o < outer; o++) {
        float *yr = y + o * inner;
        for (int64_t e = 0; e < inner; e++) yr[e] = c[oc + e * lc] != 0.0f ? a[oa + e * la] : b[ob + e * lb];
        for (int d = r - 2; d >= 0; d--) {
            oc += p->str[0][d];
            oa += p->str[1][d];
            ob += p->str[2][d];
            if (++idx[d] < yt->dims[d]) break;
            oc -= p->str[0][d] * yt->dims[d];
            oa -= p->str[1][d] * yt->dims[d];
            ob -= p->str[2][d] * yt->dims[d];
            idx[d] = 0;
        }
    }
    sim_op_act(call->op, y, (size_t)yt->n_elems);
    return 0;
}

const sim_op_def sim_def_where = {.type = SIM_OP_WHERE, .onnx_name = "Where", .npu_name = "Where",
                                  .prepare = where_prepare, .run_f32 = where_run_f32, .run_i8 = NULL,
                                  .release = sim_free_priv, .macs = NULL};
