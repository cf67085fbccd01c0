/*
 * Normalisations and reductions: Softmax, LogSoftmax (one axis, opset-13 semantics), ReduceMean,
 * ReduceMax, ReduceMin, ReduceSum, ReduceProd, ReduceL2, BatchNormalization (folded to a per-channel affine at prepare) and LRN.
 * Their int8 form is left to the executor's dequantise-compute-requantise fallback, except BatchNorm's:
 * per channel, a 256-entry table of that fallback's result for every code, applied to the plane.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "act_lut.h"
#include "ops_common.h"
#include "vmath.h"

typedef struct norm_priv {
    int64_t outer, n, inner;                 /* softmax geometry */
    int64_t rank, dims[SIM_MAX_DIMS], ostr[SIM_MAX_DIMS]; /* reductions: input dims, output strides */
    int64_t count;                           /* reduced elements per output */
    float *a, *b;                            /* batchnorm: y = a[c] * x + b[c] */
    int64_t channels, plane;
    int64_t size;                            /* LRN */
    float alpha, beta, bias;
} norm_priv;

static void norm_release(sim_op *op)
{
    norm_priv *p = op->priv;
    if (!p) return;
    free(p->a);
    free(p->b);
    free(p);
    op->priv = NULL;
}

static int begin(const sim_graph *g, sim_op *op, const sim_tensor **x, const sim_tensor **y, norm_priv **p, char *err,
                 size_t err_len)
{
    *x = sim_in_tensor(g, op, 0);
    *y = sim_out_tensor(g, op, 0);
    if (!*x || !*y || op->n_outputs != 1) return sim_fail(err, err_len, op, "needs input X and one output");
    *p = calloc(1, sizeof **p);
    if (!*p) return SIM_ERR_MALLOC;
    op->priv = *p;
    return 0;
}

static int softmax_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    const sim_tensor *x = NULL, *y = NULL;
    norm_priv *p = NULL;
    char b1[96];
    int rc = begin(g, op, &x, &y, &p, err, err_len);
    if (rc) return rc;
    int64_t axis = sim_attr_int(op, "axis", -1);
    if (axis < 0) axis += x->n_dims;
    if (!sim_same_shape(x, y) || axis < 0 || axis >= (int64_t)x->n_dims) {
        norm_release(op);
        return sim_fail(err, err_len, op, "axis %lld invalid for X %s or Y shape differs", (long long)axis,
                        sim_shape_str(x, b1, sizeof b1));
    }
    p->outer = p->inner = 1;
    for (int64_t d = 0; d < axis; d++) p->outer *= x->dims[d];
    for (int64_t d = axis + 1; d < (int64_t)x->n_dims; d++) p->inner *= x->dims[d];
    p->n = x->dims[axis];
    return 0;
}

typedef struct softmax_job {
    const float *x;
    float *y;
    int64_t n;
    int avx2;
} softmax_job;

/* Contiguous rows (softmax over the last axis), each computed whole by one thread. */
static void softmax_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    const softmax_job *j = arg;
    (void)tid;
    for (int64_t r = lo; r < hi; r++) sim_softmax_row(j->avx2, j->x + r * j->n, j->y + r * j->n, j->n);
}

static int softmax_run_f32(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const norm_priv *p = op->priv;
    const float *x = sim_call_in_f32(call, 0);
    float *y = call->out[0].f32;
    if (!p || !x || !y) return SIM_ERR_FAIL;
    int is_log = op->type == SIM_OP_LOG_SOFTMAX;
    if (!is_log && p->inner == 1) {
        softmax_job j = {x, y, p->n, SIM_CPU_AVX2()};
        sim_parallel(call, softmax_rows, &j, p->outer);
        sim_op_act(op, y, (size_t)(p->outer * p->n));
        return 0;
    }
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t i = 0; i < p->inner; i++) {
            const float *xs = x + o * p->n * p->inner + i;
            float *ys = y + o * p->n * p->inner + i;
            float m = -INFINITY;
            for (int64_t j = 0; j < p->n; j++) m = xs[j * p->inner] > m ? xs[j * p->inner] : m;
            float sum = 0.0f;
            for (int64_t j = 0; j < p->n; j++) {
                float e = expf(xs[j * p->inner] - m);
                sum += e;
                if (!is_log) ys[j * p->inner] = e;
            }
            if (is_log) {
                float ls = logf(sum);
                for (int64_t j = 0; j < p->n; j++) ys[j * p->inner] = xs[j * p->inner] - m - ls;
            } else {
                float inv = 1.0f / sum;
                for (int64_t j = 0; j < p->n; j++) ys[j * p->inner] *= inv;
            }
        }
    sim_op_act(op, y, (size_t)(p->outer * p->n * p->inner));
    return 0;
}

static int reduce_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    const sim_tensor *x = NULL, *y = NULL;
    norm_priv *p = NULL;
    char b1[96], b2[96];
    int rc = begin(g, op, &x, &y, &p, err, err_len);
    if (rc) return rc;
    int64_t axes[SIM_MAX_DIMS];
    uint32_t na = sim_attr_ints(op, "axes", axes, SIM_MAX_DIMS);
    int keep = sim_attr_int(op, "keepdims", 1) != 0;
    int red[SIM_MAX_DIMS] = {0};
    if (na > x->n_dims) {
        norm_release(op);
        return sim_fail(err, err_len, op, "%u axes for a rank-%u input", na, x->n_dims);
    }
    for (uint32_t i = 0; i < na; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + x->n_dims : axes[i];
        if (a < 0 || a >= (int64_t)x->n_dims) {
            norm_release(op);
            return sim_fail(err, err_len, op, "axis %lld out of range for rank %u", (long long)axes[i], x->n_dims);
        }
        red[a] = 1;
    }
    if (na == 0)
        for (uint32_t d = 0; d < x->n_dims; d++) red[d] = 1; /* no axes: reduce everything */
    /* expected output dims */
    int64_t want[SIM_MAX_DIMS];
    uint32_t wn = 0;
    p->count = 1;
    for (uint32_t d = 0; d < x->n_dims; d++) {
        if (red[d]) {
            p->count *= x->dims[d];
            if (keep) want[wn++] = 1;
        } else {
            want[wn++] = x->dims[d];
        }
    }
    int ok = y->n_dims == wn;
    for (uint32_t d = 0; ok && d < wn; d++) ok = y->dims[d] == want[d];
    if (!ok) {
        norm_release(op);
        return sim_fail(err, err_len, op, "Y %s does not match reducing X %s", sim_shape_str(y, b1, sizeof b1),
                        sim_shape_str(x, b2, sizeof b2));
    }
    p->rank = x->n_dims;
    int64_t stride = 1;
    for (int d = (int)x->n_dims - 1; d >= 0; d--) {
        p->dims[d] = x->dims[d];
        p->ostr[d] = red[d] ? 0 : stride;
        if (!red[d]) stride *= x->dims[d];
    }
    p->n = x->n_elems;
    p->inner = y->n_elems;
    return 0;
}

static int reduce_run_f32(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const norm_priv *p = op->priv;
    const float *x = sim_call_in_f32(call, 0);
    float *y = call->out[0].f32;
    if (!p || !x || !y) return SIM_ERR_FAIL;
    int is_max = op->type == SIM_OP_REDUCE_MAX, is_min = op->type == SIM_OP_REDUCE_MIN;
    int is_prod = op->type == SIM_OP_REDUCE_PROD, is_sq = op->type == SIM_OP_REDUCE_L2;
    float init = is_max ? -INFINITY : (is_min ? INFINITY : (is_prod ? 1.0f : 0.0f));
    for (int64_t i = 0; i < p->inner; i++) y[i] = init;
    int64_t idx[SIM_MAX_DIMS] = {0}, off = 0;
    int64_t last = p->rank > 0 ? p->rank - 1 : 0;
    int64_t inner = p->rank > 0 ? p->dims[last] : 1, ls = p->rank > 0 ? p->ostr[last] : 0;
    for (int64_t base = 0; base < p->n; base += inner) {
        const float *xr = x + base;
        if (is_max || is_min) {
            for (int64_t e = 0; e < inner; e++) {
                float *t = y + off + e * ls;
                int better = is_max ? xr[e] > *t : xr[e] < *t;
                *t = better || xr[e] != xr[e] ? xr[e] : *t;
            }
        } else if (is_prod) {
            for (int64_t e = 0; e < inner; e++) y[off + e * ls] *= xr[e];
        } else if (is_sq) {
            for (int64_t e = 0; e < inner; e++) y[off + e * ls] += xr[e] * xr[e];
        } else if (ls == 0) {
            float s = 0.0f;
            for (int64_t e = 0; e < inner; e++) s += xr[e];
            y[off] += s;
        } else {
            for (int64_t e = 0; e < inner; e++) y[off + e] += xr[e];
        }
        for (int64_t d = last - 1; d >= 0; d--) {
            off += p->ostr[d];
            if (++idx[d] < p->dims[d]) break;
            off -= p->ostr[d] * p->dims[d];
            idx[d] = 0;
        }
    }
    if (op->type == SIM_OP_REDUCE_MEAN && p->count > 0)
        for (int64_t i = 0; i < p->inner; i++) y[i] /= (float)p->count;
    if (is_sq)
        for (int64_t i = 0; i < p->inner; i++) y[i] = sqrtf(y[i]);
    sim_op_act(op, y, (size_t)p->inner);
    return 0;
}

static int bn_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    const sim_tensor *x = NULL, *y = NULL;
    norm_priv *p = NULL;
    char b1[96];
    int rc = begin(g, op, &x, &y, &p, err, err_len);
    if (rc) return rc;
    const sim_tensor *t[4];
    for (uint32_t i = 0; i < 4; i++) t[i] = sim_in_tensor(g, op, i + 1);
    if (x->n_dims < 2 || !sim_same_shape(x, y)) {
        norm_release(op);
        return sim_fail(err, err_len, op, "X %s must be [N,C,...] and Y the same shape", sim_shape_str(x, b1, sizeof b1));
    }
    p->channels = x->dims[1];
    p->plane = 1;
    for (uint32_t d = 2; d < x->n_dims; d++) p->plane *= x->dims[d];
    for (uint32_t i = 0; i < 4; i++)
        if (!t[i] || t[i]->kind != SIM_T_CONST || !t[i]->fdata || t[i]->n_elems != p->channels) {
            long long channels = (long long)p->channels; /* read before release frees p */
            norm_release(op);
            return sim_fail(err, err_len, op, "scale, B, mean and var must be constants of %lld values",
                            channels);
        }
    float eps = sim_attr_float(op, "epsilon", 1e-5f);
    p->a = malloc((size_t)p->channels * sizeof(float));
    p->b = malloc((size_t)p->channels * sizeof(float));
    if (!p->a || !p->b) {
        norm_release(op);
        return SIM_ERR_MALLOC;
    }
    for (int64_t c = 0; c < p->channels; c++) {
        float inv = 1.0f / sqrtf(t[3]->fdata[c] + eps);
        p->a[c] = t[0]->fdata[c] * inv;
        p->b[c] = t[1]->fdata[c] - t[2]->fdata[c] * p->a[c];
    }
    p->outer = x->dims[0];
    return 0;
}

static int bn_run_f32(sim_kernel_call *call)
{
    const norm_priv *p = call->op->priv;
    const float *x = sim_call_in_f32(call, 0);
    float *y = call->out[0].f32;
    if (!p || !x || !y) return SIM_ERR_FAIL;
    for (int64_t n = 0; n < p->outer; n++)
        for (int64_t c = 0; c < p->channels; c++) {
            const float *xc = x + (n * p->channels + c) * p->plane;
            float *yc = y + (n * p->channels + c) * p->plane;
            float a = p->a[c], b = p->b[c];
            for (int64_t i = 0; i < p->plane; i++) yc[i] = a * xc[i] + b;
        }
    sim_op_act(call->op, y, (size_t)(p->outer * p->channels * p->plane));
    return 0;
}

typedef struct bn_i8_job {
    const sim_op *op;
    const norm_priv *p;
    const int8_t *x;
    int8_t *y;
    float deq[256];
    float so;
    int32_t zo;
} bn_i8_job;

/* Planes [lo, hi) of N * C: the table holds quant(act(a[c] * deq(q) + b[c])) for every code q, the same
 * float operations as dequantise, bn_run_f32, requantise of whole tensors, so the same bytes. */
static void bn_i8_planes(void *arg, int64_t lo, int64_t hi, int tid)
{
    const bn_i8_job *j = arg;
    const norm_priv *p = j->p;
    (void)tid;
    for (int64_t pl = lo; pl < hi; pl++) {
        int64_t c = pl % p->channels;
        float v[256];
        int8_t tab[256];
        float a = p->a[c], b = p->b[c];
        for (int i = 0; i < 256; i++) v[i] = a * j->deq[i] + b;
        sim_op_act(j->op, v, 256);
        sim_quant_array(v, tab, 256, j->so, j->zo);
        sim_lut_i8(tab, j->x + pl * p->plane, j->y + pl * p->plane, (size_t)p->plane);
    }
}

static int bn_run_i8(sim_kernel_call *call)
{
    const norm_priv *p = call->op->priv;
    const sim_tensor *xt = sim_call_in_t(call, 0);
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, call->op, 0);
    if (!p || !xt || !yt || !call->in[0].i8 || !call->out[0].i8) return SIM_ERR_FAIL;
    bn_i8_job j = {.op = call->op, .p = p, .x = call->in[0].i8, .y = call->out[0].i8, .so = sim_t_scale(yt),
                   .zo = sim_t_zp(yt)};
    sim_dequant_lut(xt, j.deq);
    int64_t planes = p->outer * p->channels;
    if (planes * p->plane >= 65536) sim_parallel(call, bn_i8_planes, &j, planes);
    else bn_i8_planes(&j, 0, planes, 0);
    return 0;
}

static int lrn_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    const sim_tensor *x = NULL, *y = NULL;
    norm_priv *p = NULL;
    char b1[96];
    int rc = begin(g, op, &x, &y, &p, err, err_len);
    if (rc) return rc;
    p->size = sim_attr_int(op, "size", 0);
    p->alpha = sim_attr_float(op, "alpha", 1e-4f);
    p->beta = sim_attr_float(op, "beta", 0.75f);
    p->bias = sim_attr_float(op, "bias", 1.0f);
    if (x->n_dims < 3 || !sim_same_shape(x, y) || p->size < 1) {
        norm_release(op);
        return sim_fail(err, err_len, op, "needs size >= 1 and X %s [N,C,...] with Y the same shape",
                        sim_shape_str(x, b1, sizeof b1));
    }
    p->outer = x->dims[0];
    p->channels = x->dims[1];
    p->plane = 1;
    for (uint32_t d = 2; d < x->n_dims; d++) p->plane *= x->dims[d];
    return 0;
}

static int lrn_run_f32(sim_kernel_call *call)
{
    const norm_priv *p = call->op->priv;
    const float *x = sim_call_in_f32(call, 0);
    float *y = call->out[0].f32;
    if (!p || !x || !y) return SIM_ERR_FAIL;
    int64_t lo = (p->size - 1) / 2, hi = p->size - 1 - lo;
    float k = p->alpha / (float)p->size;
    for (int64_t n = 0; n < p->outer; n++)
        for (int64_t c = 0; c < p->channels; c++) {
            int64_t c0 = c - lo < 0 ? 0 : c - lo, c1 = c + hi >= p->channels ? p->channels - 1 : c + hi;
            const float *xb = x + n * p->channels * p->plane;
            float *yc = y + (n * p->channels + c) * p->plane;
            for (int64_t i = 0; i < p->plane; i++) {
                float s = 0.0f;
                for (int64_t j = c0; j <= c1; j++) s += xb[j * p->plane + i] * xb[j * p->plane + i];
                yc[i] = xb[c * p->plane + i] / powf(p->bias + k * s, p->beta);
            }
        }
    sim_op_act(call->op, y, (size_t)(p->outer * p->channels * p->plane));
    return 0;
}

static uint64_t lrn_macs(const sim_graph *g, const sim_op *op)
{
    const norm_priv *p = op->priv;
    (void)g;
    return p ? (uint64_t)(p->outer * p->channels * p->plane * p->size) : 0;
}

static uint64_t reduce_macs(const sim_graph *g, const sim_op *op)
{
    const norm_priv *p = op->priv;
    (void)g;
    return p ? (uint64_t)p->n : 0;
}

#define NORM_DEF_I8(sym, id, onnx, npu, prep, run, run8, macs_fn)                                           \
    const sim_op_def sym = {.type = id, .onnx_name = onnx, .npu_name = npu, .prepare = prep, .run_f32 = run,  \
                            .run_i8 = run8, .release = norm_release, .macs = macs_fn}
#define NORM_DEF(sym, id, onnx, npu, prep, run, macs_fn) NORM_DEF_I8(sym, id, onnx, npu, prep, run, NULL, macs_fn)

NORM_DEF(sim_def_softmax, SIM_OP_SOFTMAX, "Softmax", "Softmax", softmax_prepare, softmax_run_f32, NULL);
NORM_DEF(sim_def_log_softmax, SIM_OP_LOG_SOFTMAX, "LogSoftmax", "LogSoftmax", softmax_prepare, softmax_run_f32, NULL);
NORM_DEF(sim_def_reduce_mean, SIM_OP_REDUCE_MEAN, "ReduceMean", "ReduceMean", reduce_prepare, reduce_run_f32, reduce_macs);
NORM_DEF(sim_def_reduce_max, SIM_OP_REDUCE_MAX, "ReduceMax", "ReduceMax", reduce_prepare, reduce_run_f32, reduce_macs);
NORM_DEF(sim_def_reduce_sum, SIM_OP_REDUCE_SUM, "ReduceSum", "ReduceSum", reduce_prepare, reduce_run_f32, reduce_macs);
NORM_DEF_I8(sim_def_batchnorm, SIM_OP_BATCHNORM, "BatchNormalization", "BatchNormalization", bn_prepare, bn_run_f32,
            bn_run_i8, NULL);
NORM_DEF(sim_def_lrn, SIM_OP_LRN, "LRN", "LRN", lrn_prepare, lrn_run_f32, lrn_macs);
NORM_DEF(sim_def_reduce_min, SIM_OP_REDUCE_MIN, "ReduceMin", "ReduceMin", reduce_prepare, reduce_run_f32, reduce_macs);
NORM_DEF(sim_def_reduce_prod, SIM_OP_REDUCE_PROD, "ReduceProd", "ReduceProd", reduce_prepare, reduce_run_f32, reduce_macs);
NORM_DEF(sim_def_reduce_l2, SIM_OP_REDUCE_L2, "ReduceL2", "ReduceL2", reduce_prepare, reduce_run_f32, reduce_macs);
