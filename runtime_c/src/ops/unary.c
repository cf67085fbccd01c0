/*
 * Element-wise unary ops. The float path loops per op; the int8 path builds a 256-entry table
 * (dequantise, op, fused activation, requantise) so every int8 unary op is one lookup per element,
 * exactly what dequantise-compute-requantise gives. Logical Not and Cast read integer and boolean
 * values that the runtime carries as exact float32 integers (docs/model-format.md).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "act_lut.h"
#include "ops_common.h"
#include "vmath.h"

typedef struct unary_priv {
    float a, b;  /* op parameters (Clip min/max, alpha/beta/gamma) */
} unary_priv;

static float softplusf(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

/* x * tanh(softplus(x)) with one exp: tanh(log(1 + e)) = ((1 + e)^2 - 1) / ((1 + e)^2 + 1). */
static float mishf(float x)
{
    if (x > 20.0f) return x;
    float e = expf(x), t = e * (e + 2.0f);
    return x * t / (t + 2.0f);
}

enum cast_kind { CAST_FLOAT = 0, CAST_FLOAT16 = 1, CAST_INTEGER = 2, CAST_BOOL = 3 };

static float castf(float x, int kind)
{
    switch (kind) {
    case CAST_FLOAT16: return sim_round_f16(x);
    case CAST_INTEGER: return x != x ? 0.0f : truncf(x);
    case CAST_BOOL: return x != 0.0f ? 1.0f : 0.0f;
    default: return x;
    }
}

static void unary_loop(uint32_t type, float a, float b, const float *x, float *y, size_t n)
{
    switch (type) {
    case SIM_OP_RELU: for (size_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i]; break;
    case SIM_OP_CLIP:
        for (size_t i = 0; i < n; i++) {
            float v = x[i] < a ? a : x[i];
            y[i] = v > b ? b : v;
        }
        break;
    case SIM_OP_LEAKY_RELU: for (size_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? x[i] * a : x[i]; break;
    case SIM_OP_SIGMOID:
        if (y != x) memcpy(y, x, n * sizeof(float));
        sim_sigmoid_array(SIM_CPU_AVX2(), y, n, 0);
        break;
    case SIM_OP_HARD_SIGMOID:
        for (size_t i = 0; i < n; i++) y[i] = sim_apply_act(SIM_ACT_HARDSIGMOID, a, b, x[i]);
        break;
    case SIM_OP_HARD_SWISH: for (size_t i = 0; i < n; i++) y[i] = sim_apply_act(SIM_ACT_HARDSWISH, 0, 0, x[i]); break;
    case SIM_OP_SILU:
        if (y != x) memcpy(y, x, n * sizeof(float));
        sim_sigmoid_array(SIM_CPU_AVX2(), y, n, 1);
        break;
    case SIM_OP_TANH: for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]); break;
    case SIM_OP_EXP: for (size_t i = 0; i < n; i++) y[i] = expf(x[i]); break;
    case SIM_OP_ELU: for (size_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? a * expm1f(x[i]) : x[i]; break;
    case SIM_OP_SELU:
        for (size_t i = 0; i < n; i++) y[i] = x[i] <= 0.0f ? b * a * expm1f(x[i]) : b * x[i];
        break;
    case SIM_OP_NEG: for (size_t i = 0; i < n; i++) y[i] = -x[i]; break;
    case SIM_OP_ABS: for (size_t i = 0; i < n; i++) y[i] = fabsf(x[i]); break;
    case SIM_OP_SOFTPLUS: for (size_t i = 0; i < n; i++) y[i] = softplusf(x[i]); break;
    case SIM_OP_SQRT: for (size_t i = 0; i < n; i++) y[i] = sqrtf(x[i]); break;
    case SIM_OP_ERF: for (size_t i = 0; i < n; i++) y[i] = erff(x[i]); break;
    case SIM_OP_GELU: sim_gelu_array(SIM_CPU_AVX2(), x, y, n, a != 0.0f); break;
    case SIM_OP_MISH: for (size_t i = 0; i < n; i++) y[i] = mishf(x[i]); break;
    case SIM_OP_RECIPROCAL: for (size_t i = 0; i < n; i++) y[i] = 1.0f / x[i]; break;
    case SIM_OP_LOG: for (size_t i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case SIM_OP_SIN: for (size_t i = 0; i < n; i++) y[i] = sinf(x[i]); break;
    case SIM_OP_COS: for (size_t i = 0; i < n; i++) y[i] = cosf(x[i]); break;
    case SIM_OP_NOT: for (size_t i = 0; i < n; i++) y[i] = x[i] == 0.0f ? 1.0f : 0.0f; break;
    case SIM_OP_CAST: for (size_t i = 0; i < n; i++) y[i] = castf(x[i], (int)a); break;
    default: if (y != x) memcpy(y, x, n * sizeof(float)); break;
    }
}

static int unary_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y || op->n_outputs != 1) return sim_fail(err, err_len, op, "needs one input and one output");
    if (!sim_same_shape(x, y))
        return sim_fail(err, err_len, op, "output %s must have the input's shape %s", sim_shape_str(y, b1, sizeof b1),
                        sim_shape_str(x, b2, sizeof b2));
    unary_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    switch (op->type) {
    case SIM_OP_CLIP:
        p->a = sim_attr_float(op, "min", -__builtin_inff());
        p->b = sim_attr_float(op, "max", __builtin_inff());
        break;
    case SIM_OP_LEAKY_RELU: p->a = sim_attr_float(op, "alpha", 0.01f); break;
    case SIM_OP_HARD_SIGMOID:
        p->a = sim_attr_float(op, "alpha", 0.2f);
        p->b = sim_attr_float(op, "beta", 0.5f);
        break;
    case SIM_OP_ELU: p->a = sim_attr_float(op, "alpha", 1.0f); break;
    case SIM_OP_GELU: p->a = (float)(sim_attr_int(op, "approximate", 0) != 0); break;
    case SIM_OP_CAST: {
        int64_t kind = sim_attr_int(op, "to", CAST_FLOAT);
        if (kind < CAST_FLOAT || kind > CAST_BOOL) {
            free(p);
            return sim_fail(err, err_len, op, "cast kind %lld is not 0..3", (long long)kind);
        }
        p->a = (float)kind;
        break;
    }
    case SIM_OP_SELU:
        p->a = sim_attr_float(op, "alpha", 1.67326319217681884765625f);
        p->b = sim_attr_float(op, "gamma", 1.05070102214813232421875f);
        break;
    default: break;
    }
    op->priv = p;
    return 0;
}

static void unary_release(sim_op *op)
{
    free(op->priv);
    op->priv = NULL;
}

/* Element-wise, so any split over the threads gives the same bytes. */
#define UNARY_BLOCK 4096

typedef struct unary_job {
    const sim_op *op;
    const unary_priv *p;
    const float *x;
    float *y;
    size_t n;
} unary_job;

static void unary_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const unary_job *j = arg;
    (void)tid;
    size_t a = (size_t)lo * UNARY_BLOCK, b = (size_t)hi * UNARY_BLOCK;
    if (b > j->n) b = j->n;
    unary_loop(j->op->type, j->p->a, j->p->b, j->x + a, j->y + a, b - a);
    sim_op_act(j->op, j->y + a, b - a);
}

static int unary_run_f32(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const unary_priv *p = op->priv;
    const float *x = sim_call_in_f32(call, 0);
    float *y = call->out[0].f32;
    const sim_tensor *t = sim_call_in_t(call, 0);
    if (!p || !x || !y || !t) return SIM_ERR_FAIL;
    unary_job j = {op, p, x, y, (size_t)t->n_elems};
    int64_t blocks = (int64_t)((j.n + UNARY_BLOCK - 1) / UNARY_BLOCK);
    if (blocks >= 4) sim_parallel(call, unary_range, &j, blocks);
    else unary_range(&j, 0, blocks, 0);
    return 0;
}

typedef struct lut_job {
    const int8_t *qlut;
    const int8_t *x;
    int8_t *y;
    size_t n;
} lut_job;

static void lut_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const lut_job *j = arg;
    (void)tid;
    size_t a = (size_t)lo * UNARY_BLOCK, b = (size_t)hi * UNARY_BLOCK;
    if (b > j->n) b = j->n;
    if (b > a) sim_lut_i8(j->qlut, j->x + a, j->y + a, b - a);
}

static int unary_run_i8(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const unary_priv *p = op->priv;
    const sim_tensor *xt = sim_call_in_t(call, 0);
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, op, 0);
    const int8_t *x = call->in[0].i8;
    int8_t *y = call->out[0].i8;
    if (!p || !xt || !yt || !x || !y) return SIM_ERR_FAIL;
    float lut[256];
    int8_t qlut[256];
    sim_dequant_lut(xt, lut);
    unary_loop(op->type, p->a, p->b, lut, lut, 256);
    sim_op_act(op, lut, 256);
    sim_quant_array(lut, qlut, 256, sim_t_scale(yt), sim_t_zp(yt));
    lut_job j = {qlut, x, y, (size_t)xt->n_elems};
    int64_t blocks = (int64_t)((j.n + UNARY_BLOCK - 1) / UNARY_BLOCK);
    if (blocks >= 4) sim_parallel(call, lut_range, &j, blocks);
    else lut_range(&j, 0, blocks, 0);
    return 0;
}

#define UNARY_DEF(sym, id, onnx, npu)                                                                        \
    const sim_op_def sym = {.type = id, .onnx_name = onnx, .npu_name = npu, .prepare = unary_prepare,         \
                            .run_f32 = unary_run_f32, .run_i8 = unary_run_i8, .release = unary_release,       \
                            .macs = NULL}

UNARY_DEF(sim_def_relu, SIM_OP_RELU, "Relu", "Relu");
UNARY_DEF(sim_def_clip, SIM_OP_CLIP, "Clip", "Clip");
UNARY_DEF(sim_def_leaky_relu, SIM_OP_LEAKY_RELU, "LeakyRelu", "LeakyRelu");
UNARY_DEF(sim_def_sigmoid, SIM_OP_SIGMOID, "Sigmoid", "Sigmoid");
UNARY_DEF(sim_def_hard_sigmoid, SIM_OP_HARD_SIGMOID, "HardSigmoid", "HardSigmoid");
UNARY_DEF(sim_def_hard_swish, SIM_OP_HARD_SWISH, "HardSwish", "HardSwish");
UNARY_DEF(sim_def_silu, SIM_OP_SILU, "SiLU", "Swish");
UNARY_DEF(sim_def_tanh, SIM_OP_TANH, "Tanh", "Tanh");
UNARY_DEF(sim_def_exp, SIM_OP_EXP, "Exp", "Exp");
UNARY_DEF(sim_def_elu, SIM_OP_ELU, "Elu", "Elu");
UNARY_DEF(sim_def_selu, SIM_OP_SELU, "Selu", "Selu");
UNARY_DEF(sim_def_neg, SIM_OP_NEG, "Neg", "Neg");
UNARY_DEF(sim_def_abs, SIM_OP_ABS, "Abs", "Abs");
UNARY_DEF(sim_def_softplus, SIM_OP_SOFTPLUS, "Softplus", "Softplus");
UNARY_DEF(sim_def_sqrt, SIM_OP_SQRT, "Sqrt", "Sqrt");
UNARY_DEF(sim_def_erf, SIM_OP_ERF, "Erf", "Erf");
UNARY_DEF(sim_def_gelu, SIM_OP_GELU, "Gelu", "Gelu");
UNARY_DEF(sim_def_mish, SIM_OP_MISH, "Mish", "Mish");
UNARY_DEF(sim_def_reciprocal, SIM_OP_RECIPROCAL, "Reciprocal", "Reciprocal");
UNARY_DEF(sim_def_log, SIM_OP_LOG, "Log", "Log");
UNARY_DEF(sim_def_sin, SIM_OP_SIN, "Sin", "Sin");
UNARY_DEF(sim_def_cos, SIM_OP_COS, "Cos", "Cos");
UNARY_DEF(sim_def_not, SIM_OP_NOT, "Not", "Not");
UNARY_DEF(sim_def_cast, SIM_OP_CAST, "Cast", "Cast");
