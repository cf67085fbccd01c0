/*
 * Pooling: MaxPool, AveragePool (1-3 spatial dims, pads, strides, dilations, ceil_mode,
 * count_include_pad) and the global pools. The int8 path dequantises through a table, pools in
 * fp32 and requantises, which for max pooling equals pooling the int8 codes directly.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops_common.h"

typedef struct pool_priv {
    int64_t nc;                                   /* N * C planes */
    int64_t in[3], out[3], k[3], s[3], pb[3], pe[3], dl[3];
    int64_t in_sz, out_sz;
    int include_pad;
    int global;
} pool_priv;

static void pool_release(sim_op *op)
{
    free(op->priv);
    op->priv = NULL;
}

static int pool_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y || op->n_outputs < 1) return sim_fail(err, err_len, op, "needs one input and one output");
    if (x->n_dims < 3 || x->n_dims > 5 || y->n_dims != x->n_dims)
        return sim_fail(err, err_len, op, "X %s / Y %s must be N,C + 1-3 spatial dims", sim_shape_str(x, b1, sizeof b1),
                        sim_shape_str(y, b2, sizeof b2));
    if (y->dims[0] != x->dims[0] || y->dims[1] != x->dims[1])
        return sim_fail(err, err_len, op, "Y %s must keep N and C of X %s", sim_shape_str(y, b1, sizeof b1),
                        sim_shape_str(x, b2, sizeof b2));
    pool_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    op->priv = p;
    int nsp = (int)x->n_dims - 2, off = 3 - nsp;
    p->global = op->type == SIM_OP_GLOBAL_AVGPOOL || op->type == SIM_OP_GLOBAL_MAXPOOL;
    p->include_pad = sim_attr_int(op, "count_include_pad", 0) != 0;
    int64_t ks[3] = {1, 1, 1}, st[3] = {1, 1, 1}, dl[3] = {1, 1, 1}, pads[6] = {0};
    int ceil_mode = sim_attr_int(op, "ceil_mode", 0) != 0;
    if (p->global) {
        for (int d = 0; d < nsp; d++) ks[d] = x->dims[2 + d];
    } else {
        uint32_t nk = sim_attr_ints(op, "kernel_shape", ks, 3);
        uint32_t ns = sim_attr_ints(op, "strides", st, 3), nd = sim_attr_ints(op, "dilations", dl, 3);
        uint32_t np = sim_attr_ints(op, "pads", pads, 6);
        if (nk != (uint32_t)nsp || (ns && ns != (uint32_t)nsp) || (nd && nd != (uint32_t)nsp) ||
            (np && np != 2u * (uint32_t)nsp)) {
            pool_release(op);
            return sim_fail(err, err_len, op, "kernel_shape/strides/dilations need %d entries and pads %d", nsp, 2 * nsp);
        }
    }
    p->nc = x->dims[0] * x->dims[1];
    p->in_sz = p->out_sz = 1;
    for (int d = 0; d < 3; d++) {
        int s = d - off;
        p->in[d] = s >= 0 ? x->dims[2 + s] : 1;
        p->out[d] = s >= 0 ? y->dims[2 + s] : 1;
        p->k[d] = s >= 0 ? ks[s] : 1;
        p->s[d] = s >= 0 ? st[s] : 1;
        p->dl[d] = s >= 0 ? dl[s] : 1;
        p->pb[d] = s >= 0 ? pads[s] : 0;
        p->pe[d] = s >= 0 ? pads[s + nsp] : 0;
        if (p->k[d] < 1 || p->s[d] < 1 || p->dl[d] < 1 || p->pb[d] < 0 || p->pe[d] < 0) {
            pool_release(op);
            return sim_fail(err, err_len, op, "kernel, strides and dilations must be >= 1 and pads >= 0");
        }
        int64_t span = p->in[d] + p->pb[d] + p->pe[d] - (p->dl[d] * (p->k[d] - 1) + 1);
        int64_t fl = span < 0 ? 0 : span / p->s[d] + 1;
        int64_t ce = span < 0 ? 0 : (span + p->s[d] - 1) / p->s[d] + 1;
        if (ce > fl && (ce - 1) * p->s[d] >= p->in[d] + p->pb[d]) ce--; /* last window must start inside */
        int ok = p->out[d] == fl || (ceil_mode && (p->out[d] == ce || p->out[d] == (span + p->s[d] - 1) / p->s[d] + 1));
        if (p->global) ok = p->out[d] == 1;
        if (!ok || fl < 1) {
            long long want = p->global ? 1 : (long long)(ceil_mode ? ce : fl); /* before release frees p */
            pool_release(op);
            return sim_fail(err, err_len, op, "Y %s: spatial dim %d should be %lld for X %s", sim_shape_str(y, b1, sizeof b1),
                            s, want, sim_shape_str(x, b2, sizeof b2));
        }
        p->in_sz *= p->in[d];
        p->out_sz *= p->out[d];
    }
    return 0;
}

static void global_pool(const pool_priv *p, int is_max, const float *x, float *y)
{
    for (int64_t c = 0; c < p->nc; c++) {
        const float *xc = x + c * p->in_sz;
        if (is_max) {
            float m = xc[0];
            for (int64_t i = 1; i < p->in_sz; i++) m = xc[i] > m ? xc[i] : m;
            y[c] = m;
        } else {
            float s = 0.0f;
            for (int64_t i = 0; i < p->in_sz; i++) s += xc[i];
            y[c] = s / (float)p->in_sz;
        }
    }
}

/* Window of output index o along dim d: first tap, number of taps inside the input, divisor span. */
static void window(const pool_priv *p, int d, int64_t o, int64_t *first, int64_t *lo, int64_t *hi, int64_t *padded)
{
    int64_t start = o * p->s[d] - p->pb[d];
    *first = start;
    int64_t t0 = 0, t1 = p->k[d];
    while (t0 < t1 && start + t0 * p->dl[d] < 0) t0++;
    while (t1 > t0 && start + (t1 - 1) * p->dl[d] >= p->in[d]) t1--;
    *lo = t0;
    *hi = t1;
    /* count_include_pad counts taps inside [-pb, in + pe) */
    int64_t c = 0;
    for (int64_t t = 0; t < p->k[d]; t++) {
        int64_t pos = start + t * p->dl[d];
        c += pos >= -p->pb[d] && pos < p->in[d] + p->pe[d];
    }
    *padded = c;
}

static void local_pool(const pool_priv *p, int is_max, const float *x, float *y)
{
    for (int64_t c = 0; c < p->nc; c++) {
        const float *xc = x + c * p->in_sz;
        float *yc = y + c * p->out_sz;
        for (int64_t od = 0; od < p->out[0]; od++) {
            int64_t fd, ld, hd, pd;
            window(p, 0, od, &fd, &ld, &hd, &pd);
            for (int64_t oh = 0; oh < p->out[1]; oh++) {
                int64_t fh, lh, hh, ph;
                window(p, 1, oh, &fh, &lh, &hh, &ph);
                for (int64_t ow = 0; ow < p->out[2]; ow++) {
                    int64_t fw, lw, hw, pw;
                    window(p, 2, ow, &fw, &lw, &hw, &pw);
                    float acc = is_max ? -INFINITY : 0.0f;
                    for (int64_t a = ld; a < hd; a++)
                        for (int64_t b = lh; b < hh; b++) {
                            const float *row = xc + ((fd + a * p->dl[0]) * p->in[1] + fh + b * p->dl[1]) * p->in[2];
                            for (int64_t e = lw; e < hw; e++) {
                                float v = row[fw + e * p->dl[2]];
                                if (is_max)
                                    acc = v > acc || v != v ? v : acc;
                                else
                                    acc += v;
                            }
                        }
                    if (!is_max) {
                        int64_t cnt = p->include_pad ? pd * ph * pw : (hd - ld) * (hh - lh) * (hw - lw);
                        acc = cnt > 0 ? acc / (float)cnt : 0.0f;
                    }
                    yc[(od * p->out[1] + oh) * p->out[2] + ow] = acc;
                }
            }
        }
    }
}

static void pool_compute(const sim_op *op, const pool_priv *p, const float *x, float *y)
{
    int is_max = op->type == SIM_OP_MAXPOOL || op->type == SIM_OP_GLOBAL_MAXPOOL;
    if (p->global)
        global_pool(p, is_max, x, y);
    else
        local_pool(p, is_max, x, y);
    sim_op_act(op, y, (size_t)(p->nc * p->out_sz));
}

static int pool_run_f32(sim_kernel_call *call)
{
    const pool_priv *p = call->op->priv;
    const float *x = sim_call_in_f32(call, 0);
    if (!p || !x || !call->out[0].f32) return SIM_ERR_FAIL;
    pool_compute(call->op, p, x, call->out[0].f32);
    return 0;
}

static int pool_run_i8(sim_kernel_call *call)
{
    const pool_priv *p = call->op->priv;
    const sim_tensor *xt = sim_call_in_t(call, 0);
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, call->op, 0);
    if (!p || !xt || !yt || !call->in[0].i8 || !call->out[0].i8) return SIM_ERR_FAIL;
    size_t nin = (size_t)(p->nc * p->in_sz), nout = (size_t)(p->nc * p->out_sz);
    float *buf = sim_scratch_get(call, (nin + nout) * sizeof(float));
    if (!buf) return SIM_ERR_MALLOC;
    float lut[256];
    sim_dequant_lut(xt, lut);
    for (size_t i = 0; i < nin; i++) buf[i] = lut[call->in[0].i8[i] + 128];
    pool_compute(call->op, p, buf, buf + nin);
    sim_quant_array(buf + nin, call->out[0].i8, nout, sim_t_scale(yt), sim_t_zp(yt));
    return 0;
}

static uint64_t pool_macs(const sim_graph *g, const sim_op *op)
{
    const pool_priv *p = op->priv;
    (void)g;
    if (!p) return 0;
    if (p->global) return (uint64_t)(p->nc * p->in_sz);
    return (uint64_t)(p->nc * p->out_sz * p->k[0] * p->k[1] * p->k[2]);
}

#define POOL_DEF(sym, id, onnx, npu)                                                                         \
    const sim_op_def sym = {.type = id, .onnx_name = onnx, .npu_name = npu, .prepare = pool_prepare,          \
                            .run_f32 = pool_run_f32, .run_i8 = pool_run_i8, .release = pool_release,          \
                            .macs = pool_macs}

POOL_DEF(sim_def_maxpool, SIM_OP_MAXPOOL, "MaxPool", "MaxPool");
POOL_DEF(sim_def_avgpool, SIM_OP_AVGPOOL, "AveragePool", "AveragePool");
POOL_DEF(sim_def_global_avgpool, SIM_OP_GLOBAL_AVGPOOL, "GlobalAveragePool", "GlobalAveragePool");
POOL_DEF(sim_def_global_maxpool, SIM_OP_GLOBAL_MAXPOOL, "GlobalMaxPool", "GlobalMaxPool");
