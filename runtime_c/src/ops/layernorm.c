/*
 * Normalisations over statistics computed at run time: LayerNormalization (over the trailing dims from
 * `axis`) and GroupNormalization (over groups of channels; InstanceNormalization is lowered to it with one
 * group per channel). Mean and variance accumulate in double in 8 lanes combined in a fixed order
 * (vmath.h: the AVX2 and C paths give the same bits); rows (LayerNorm) and (batch, group) pairs
 * (GroupNorm) are split over the simulator's threads, each computed whole by one thread. The int8 form
 * is the executor's dequantise-compute-requantise (the NPU keeps these layers in float too:
 * docs/quantization.md).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h" /* sim_parallel_sized */
#include "ops_common.h"
#include "vmath.h"

typedef struct ln_priv {
    int64_t rows, row;          /* LayerNorm: rows of `row` elements; GroupNorm: rows = N * groups */
    int64_t groups, cpg, plane; /* GroupNorm: channels per group, spatial plane */
    float eps;
    float *scale, *bias;        /* LayerNorm: row entries; GroupNorm: one per channel */
} ln_priv;

static void ln_release(sim_op *op)
{
    ln_priv *p = op->priv;
    if (!p) return;
    free(p->scale);
    free(p->bias);
    free(p);
    op->priv = NULL;
}

/* Copies an optional constant of exactly n values (absent: fill). */
static int take_const(const sim_tensor *t, int64_t n, float fill, float **dst)
{
    *dst = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!*dst) return SIM_ERR_MALLOC;
    if (!t) {
        for (int64_t i = 0; i < n; i++) (*dst)[i] = fill;
        return 0;
    }
    if (t->kind != SIM_T_CONST || !t->fdata || t->n_elems != n) return SIM_ERR_INVALID;
    memcpy(*dst, t->fdata, (size_t)n * sizeof(float));
    return 0;
}

static int norm_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y || op->n_outputs != 1 || !sim_same_shape(x, y))
        return sim_fail(err, err_len, op, "needs X and one output Y of X's shape");
    ln_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    op->priv = p;
    p->eps = sim_attr_float(op, "epsilon", 1e-5f);
    int64_t per_row_consts;
    if (op->type == SIM_OP_LAYER_NORM) {
        int64_t axis = sim_attr_int(op, "axis", -1);
        if (axis < 0) axis += x->n_dims;
        if (axis < 0 || axis >= (int64_t)x->n_dims) {
            ln_release(op);
            return sim_fail(err, err_len, op, "axis %lld out of range for X %s", (long long)axis,
                            sim_shape_str(x, b1, sizeof b1));
        }
        p->rows = p->row = 1;
        for (int64_t d = 0; d < axis; d++) p->rows *= x->dims[d];
        for (int64_t d = axis; d < (int64_t)x->n_dims; d++) p->row *= x->dims[d];
        per_row_consts = p->row;
    } else {
        p->groups = sim_attr_int(op, "num_groups", 1);
        if (x->n_dims < 2 || p->groups < 1 || x->dims[1] % p->groups) {
            long long groups = (long long)p->groups; /* read before ln_release frees p */
            ln_release(op);
            return sim_fail(err, err_len, op, "X %s needs [N,C,...] with C divisible by num_groups %lld",
                            sim_shape_str(x, b1, sizeof b1), groups);
        }
        p->cpg = x->dims[1] / p->groups;
        p->plane = 1;
        for (uint32_t d = 2; d < x->n_dims; d++) p->plane *= x->dims[d];
        p->rows = x->dims[0] * p->groups;
        p->row = p->cpg * p->plane;
        per_row_consts = x->dims[1];
    }
    if (take_const(sim_in_tensor(g, op, 1), per_row_consts, 1.0f, &p->scale) ||
        take_const(sim_in_tensor(g, op, 2), per_row_consts, 0.0f, &p->bias)) {
        ln_release(op);
        return sim_fail(err, err_len, op, "scale and bias must be constants of %lld values", (long long)per_row_consts);
    }
    return 0;
}

typedef struct ln_job {
    const sim_op *op;
    const ln_priv *p;
    const float *x;
    float *y;
    int avx2;
} ln_job;

static void ln_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    const ln_job *j = arg;
    const ln_priv *p = j->p;
    (void)tid;
    for (int64_t r = lo; r < hi; r++) {
        const float *x = j->x + r * p->row;
        float *y = j->y + r * p->row;
        double mean, var;
        sim_row_moments(j->avx2, x, p->row, &mean, &var);
        float m = (float)mean, inv = (float)(1.0 / sqrt(var + (double)p->eps));
        if (j->op->type == SIM_OP_LAYER_NORM) {
            sim_norm_row(j->avx2, x, y, p->row, m, inv, p->scale, p->bias);
        } else {
            int64_t c0 = (r % p->groups) * p->cpg;
            for (int64_t c = 0; c < p->cpg; c++) {
                float a = inv * p->scale[c0 + c], b = p->bias[c0 + c];
                const float *xc = x + c * p->plane;
                float *yc = y + c * p->plane;
                for (int64_t i = 0; i < p->plane; i++) yc[i] = (xc[i] - m) * a + b;
            }
        }
        sim_op_act(j->op, y, (size_t)p->row);
    }
}

static int norm_run_f32(sim_kernel_call *call)
{
    const ln_priv *p = call->op->priv;
    ln_job j = {call->op, p, sim_call_in_f32(call, 0), call->out[0].f32, SIM_CPU_AVX2()};
    if (!p || !j.x || !j.y) return SIM_ERR_FAIL;
    /* about four float-MAC units per element (statistics, then the normalised store) */
    sim_parallel_sized(call, ln_rows, &j, p->rows, 4.0 * (double)(p->rows * p->row));
    return 0;
}

static uint64_t norm_macs(const sim_graph *g, const sim_op *op)
{
    const ln_priv *p = op->priv;
    (void)g;
    return p ? (uint64_t)(3 * p->rows * p->row) : 0;
}

const sim_op_def sim_def_layer_norm = {.type = SIM_OP_LAYER_NORM, .onnx_name = "LayerNormalization",
                                       .npu_name = "LayerNorm", .prepare = norm_prepare, .run_f32 = norm_run_f32,
                                       .run_i8 = NULL, .release = ln_release, .macs = norm_macs};
const sim_op_def sim_def_group_norm = {.type = SIM_OP_GROUP_NORM, .onnx_name = "GroupNormalization",
                                       .npu_name = "GroupNorm", .prepare = norm_prepare, .run_f32 = norm_run_f32,
                                       .run_i8 = NULL, .release = ln_release, .macs = norm_macs};
