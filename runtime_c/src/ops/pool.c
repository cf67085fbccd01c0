/*
 * Pooling: MaxPool, AveragePool (1-3 spatial dims, pads, strides, dilations, ceil_mode,
 * count_include_pad) and the global pools, split over the worker pool by plane. Int8 max pooling
 * pools the codes and maps the winner through a 256-entry table (dequantise, fused monotonic
 * activation, requantise); int8 global average pooling sums the codes exactly; other int8 pools
 * dequantise through a table, pool in fp32 and requantise.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
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

static uint64_t pool_macs(const sim_graph *g, const sim_op *op)
{
    const pool_priv *p = op->priv;
    (void)g;
    if (!p) return 0;
    if (p->global) return (uint64_t)(p->nc * p->in_sz);
    return (uint64_t)(p->nc * p->out_sz * p->k[0] * p->k[1] * p->k[2]);
}

/* Window of output index o along dim d: first tap, number of taps inside the input, divisor span. */
typedef struct pool_win {
    int64_t first, lo, hi, padded;
} pool_win;

static void window(const pool_priv *p, int d, int64_t o, pool_win *w)
{
    int64_t start = o * p->s[d] - p->pb[d];
    w->first = start;
    int64_t t0 = 0, t1 = p->k[d];
    while (t0 < t1 && start + t0 * p->dl[d] < 0) t0++;
    while (t1 > t0 && start + (t1 - 1) * p->dl[d] >= p->in[d]) t1--;
    w->lo = t0;
    w->hi = t1;
    /* count_include_pad counts taps inside [-pb, in + pe) */
    int64_t c = 0;
    for (int64_t t = 0; t < p->k[d]; t++) {
        int64_t pos = start + t * p->dl[d];
        c += pos >= -p->pb[d] && pos < p->in[d] + p->pe[d];
    }
    w->padded = c;
}

/* The windows of every output index of the three dims, computed once per run (out[0] + out[1] +
 * out[2] entries) instead of once per output. */
static void windows(const pool_priv *p, pool_win *w)
{
    for (int d = 0, off = 0; d < 3; off += (int)p->out[d], d++)
        for (int64_t o = 0; o < p->out[d]; o++) window(p, d, o, w + off + o);
}

static size_t windows_size(const pool_priv *p)
{
    return (size_t)(p->out[0] + p->out[1] + p->out[2]) * sizeof(pool_win);
}

typedef struct pool_job {
    const pool_priv *p;
    const pool_win *w;
    int is_max;
    const float *x;
    float *y;
    const int8_t *x8;
    int8_t *y8;
    const int8_t *map; /* int8 max pooling: output code of each input code (index + 128) */
    int8_t empty;      /* ... and of an empty window */
} pool_job;

/* Planes [lo, hi): each output visits its window's taps in (d, h, w) order. */
static void local_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const pool_job *j = arg;
    const pool_priv *p = j->p;
    const pool_win *wd = j->w, *wh = wd + p->out[0], *ww = wh + p->out[1];
    int is_max = j->is_max;
    (void)tid;
    for (int64_t c = lo; c < hi; c++) {
        const float *xc = j->x + c * p->in_sz;
        float *yc = j->y + c * p->out_sz;
        for (int64_t od = 0; od < p->out[0]; od++)
            for (int64_t oh = 0; oh < p->out[1]; oh++) {
                const pool_win *a_ = wd + od, *b_ = wh + oh;
                float *yr = yc + (od * p->out[1] + oh) * p->out[2];
                for (int64_t ow = 0; ow < p->out[2]; ow++) {
                    const pool_win *c_ = ww + ow;
                    float acc = is_max ? -INFINITY : 0.0f;
                    for (int64_t a = a_->lo; a < a_->hi; a++)
                        for (int64_t b = b_->lo; b < b_->hi; b++) {
                            const float *row =
                                xc + ((a_->first + a * p->dl[0]) * p->in[1] + b_->first + b * p->dl[1]) * p->in[2] +
                                c_->first;
                            for (int64_t e = c_->lo; e < c_->hi; e++) {
                                float v = row[e * p->dl[2]];
                                if (is_max)
                                    acc = v > acc || v != v ? v : acc;
                                else
                                    acc += v;
                            }
                        }
                    if (!is_max) {
                        int64_t cnt = p->include_pad ? a_->padded * b_->padded * c_->padded
                                                     : (a_->hi - a_->lo) * (b_->hi - b_->lo) * (c_->hi - c_->lo);
                        acc = cnt > 0 ? acc / (float)cnt : 0.0f;
                    }
                    yr[ow] = acc;
                }
            }
    }
}

/* Int8 max pooling on the codes: dequantisation, a monotonic activation and requantisation are all
 * non-decreasing, so the output code of the largest input code equals the float path's result. */
static void local_range_i8max(void *arg, int64_t lo, int64_t hi, int tid)
{
    const pool_job *j = arg;
    const pool_priv *p = j->p;
    const pool_win *wd = j->w, *wh = wd + p->out[0], *ww = wh + p->out[1];
    (void)tid;
    for (int64_t c = lo; c < hi; c++) {
        const int8_t *xc = j->x8 + c * p->in_sz;
        int8_t *yc = j->y8 + c * p->out_sz;
        for (int64_t od = 0; od < p->out[0]; od++)
            for (int64_t oh = 0; oh < p->out[1]; oh++) {
                const pool_win *a_ = wd + od, *b_ = wh + oh;
                int8_t *yr = yc + (od * p->out[1] + oh) * p->out[2];
                int simple = a_->hi - a_->lo == 1 && b_->hi - b_->lo == 2 && p->dl[2] == 1;
                const int8_t *r0 = xc + ((a_->first + a_->lo * p->dl[0]) * p->in[1] + b_->first + b_->lo * p->dl[1]) *
                                            p->in[2];
                const int8_t *r1 = r0 + p->dl[1] * p->in[2];
                if (simple && p->k[2] == 2 && p->s[2] == 2 && p->pb[2] == 0) {
                    /* the common 2x2 stride-2 window without padding: a loop the compiler vectorises */
                    int64_t n = p->out[2];
                    while (n > 0 && 2 * (n - 1) + 1 >= p->in[2]) n--;
                    for (int64_t ow = 0; ow < n; ow++) {
                        int8_t m0 = r0[2 * ow] > r0[2 * ow + 1] ? r0[2 * ow] : r0[2 * ow + 1];
                        int8_t m1 = r1[2 * ow] > r1[2 * ow + 1] ? r1[2 * ow] : r1[2 * ow + 1];
                        yr[ow] = j->map[(m0 > m1 ? m0 : m1) + 128];
                    }
                    if (n == p->out[2]) continue;
                }
                for (int64_t ow = 0; ow < p->out[2]; ow++) {
                    const pool_win *c_ = ww + ow;
                    int m = -129;
                    for (int64_t a = a_->lo; a < a_->hi; a++)
                        for (int64_t b = b_->lo; b < b_->hi; b++) {
                            const int8_t *row =
                                xc + ((a_->first + a * p->dl[0]) * p->in[1] + b_->first + b * p->dl[1]) * p->in[2] +
                                c_->first;
                            for (int64_t e = c_->lo; e < c_->hi; e++) m = row[e * p->dl[2]] > m ? row[e * p->dl[2]] : m;
                        }
                    yr[ow] = m < -128 ? j->empty : j->map[m + 128];
                }
            }
    }
}

/* Global pools over planes [lo, hi). The average sums in 8 interleaved partial sums combined in a
 * fixed tree: the same float operations in the portable and the vectorised build. */
static void global_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const pool_job *j = arg;
    const pool_priv *p = j->p;
    (void)tid;
    for (int64_t c = lo; c < hi; c++) {
        const float *xc = j->x + c * p->in_sz;
        if (j->is_max) {
            float m = xc[0];
            for (int64_t i = 1; i < p->in_sz; i++) m = xc[i] > m ? xc[i] : m;
            j->y[c] = m;
            continue;
        }
        float s8[8] = {0};
        int64_t i = 0;
        for (; i + 8 <= p->in_sz; i += 8)
            for (int l = 0; l < 8; l++) s8[l] += xc[i + l];
        for (int l = 0; i < p->in_sz; i++, l++) s8[l] += xc[i];
        float s = ((s8[0] + s8[4]) + (s8[2] + s8[6])) + ((s8[1] + s8[5]) + (s8[3] + s8[7]));
        j->y[c] = s / (float)p->in_sz;
    }
}

/* Int8 global average: the exact integer sum of (q - zp), scaled once. */
static void global_range_i8avg(void *arg, int64_t lo, int64_t hi, int tid)
{
    const pool_job *j = arg;
    const pool_priv *p = j->p;
    (void)tid;
    for (int64_t c = lo; c < hi; c++) {
        const int8_t *xc = j->x8 + c * p->in_sz;
        int64_t s = 0;
        for (int64_t i0 = 0; i0 < p->in_sz; i0 += 4096) {
            int32_t part = 0; /* 4096 * 128 fits easily */
            int64_t i1 = i0 + 4096 < p->in_sz ? i0 + 4096 : p->in_sz;
            for (int64_t i = i0; i < i1; i++) part += xc[i];
            s += part;
        }
        j->y[c] = (float)s;
    }
}

/* Float pooling; w: scratch for the windows (windows_size bytes). */
static void pool_compute(sim_kernel_call *call, const pool_priv *p, const float *x, float *y, pool_win *w)
{
    const sim_op *op = call->op;
    pool_job j = {p, w, op->type == SIM_OP_MAXPOOL || op->type == SIM_OP_GLOBAL_MAXPOOL, x, y, NULL, NULL, NULL, 0};
    if (p->global) {
        sim_parallel_sized(call, global_range, &j, p->nc, (double)(p->nc * p->in_sz));
    } else {
        windows(p, w);
        sim_parallel_sized(call, local_range, &j, p->nc, (double)pool_macs(call->graph, op));
    }
    sim_op_act(op, y, (size_t)(p->nc * p->out_sz));
}

static int pool_run_f32(sim_kernel_call *call)
{
    const pool_priv *p = call->op->priv;
    const float *x = sim_call_in_f32(call, 0);
    if (!p || !x || !call->out[0].f32) return SIM_ERR_FAIL;
    pool_win *w = sim_scratch_get(call, windows_size(p));
    if (!w) return SIM_ERR_MALLOC;
    pool_compute(call, p, x, call->out[0].f32, w);
    return 0;
}

/* Activations for which max(act(v)) = act(max(v)). */
static int monotonic_act(uint32_t act)
{
    return act == SIM_ACT_NONE || act == SIM_ACT_RELU || act == SIM_ACT_CLIP || act == SIM_ACT_SIGMOID ||
           act == SIM_ACT_TANH;
}

static int pool_run_i8(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const pool_priv *p = op->priv;
    const sim_tensor *xt = sim_call_in_t(call, 0);
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, op, 0);
    if (!p || !xt || !yt || !call->in[0].i8 || !call->out[0].i8) return SIM_ERR_FAIL;
    const int8_t *x8 = call->in[0].i8;
    int8_t *y8 = call->out[0].i8;
    size_t nin = (size_t)(p->nc * p->in_sz), nout = (size_t)(p->nc * p->out_sz);
    float lut[257];
    sim_dequant_lut(xt, lut);
    int is_max = op->type == SIM_OP_MAXPOOL || op->type == SIM_OP_GLOBAL_MAXPOOL;
    if (is_max && !p->global && monotonic_act(op->act)) {
        pool_win *w = sim_scratch_get(call, windows_size(p));
        if (!w) return SIM_ERR_MALLOC;
        windows(p, w);
        lut[256] = -INFINITY; /* an empty window */
        sim_op_act(op, lut, 257);
        int8_t map[257];
        sim_quant_array(lut, map, 257, sim_t_scale(yt), sim_t_zp(yt));
        pool_job j = {p, w, 1, NULL, NULL, x8, y8, map, map[256]};
        sim_parallel_sized(call, local_range_i8max, &j, p->nc, (double)pool_macs(call->graph, op));
        return 0;
    }
    if (!is_max && p->global && op->act == SIM_ACT_NONE && xt->dtype == SIM_I8) {
        float *buf = sim_scratch_get(call, nout * sizeof(float));
        if (!buf) return SIM_ERR_MALLOC;
        pool_job j = {p, NULL, 0, NULL, buf, x8, NULL, NULL, 0};
        sim_parallel_sized(call, global_range_i8avg, &j, p->nc, (double)(p->nc * p->in_sz) / 4.0);
        /* mean = scale * (sum q - n * zp) / n, in double so that the division rounds once */
        double sc = (double)sim_t_scale(xt), zp = (double)sim_t_zp(xt), n = (double)p->in_sz;
        for (size_t c = 0; c < nout; c++) buf[c] = (float)(sc * ((double)buf[c] - n * zp) / n);
        sim_quant_array(buf, y8, nout, sim_t_scale(yt), sim_t_zp(yt));
        return 0;
    }
    size_t nf = (nin + nout + 1u) & ~(size_t)1u; /* the windows after the floats, 8-byte aligned */
    float *buf = sim_scratch_get(call, nf * sizeof(float) + windows_size(p));
    if (!buf) return SIM_ERR_MALLOC;
    for (size_t i = 0; i < nin; i++) buf[i] = lut[x8[i] + 128];
    pool_compute(call, p, buf, buf + nin, (pool_win *)(void *)(buf + nf));
    sim_quant_array(buf + nin, y8, nout, sim_t_scale(yt), sim_t_zp(yt));
    return 0;
}


#define POOL_DEF(sym, id, onnx, npu)                                                                         \
    const sim_op_def sym = {.type = id, .onnx_name = onnx, .npu_name = npu, .prepare = pool_prepare,          \
                            .run_f32 = pool_run_f32, .run_i8 = pool_run_i8, .release = pool_release,          \
                            .macs = pool_macs}

POOL_DEF(sim_def_maxpool, SIM_OP_MAXPOOL, "MaxPool", "MaxPool");
POOL_DEF(sim_def_avgpool, SIM_OP_AVGPOOL, "AveragePool", "AveragePool");
POOL_DEF(sim_def_global_avgpool, SIM_OP_GLOBAL_AVGPOOL, "GlobalAveragePool", "GlobalAveragePool");
POOL_DEF(sim_def_global_maxpool, SIM_OP_GLOBAL_MAXPOOL, "GlobalMaxPool", "GlobalMaxPool");
