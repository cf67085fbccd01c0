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

/* The taps along the last dim, the same for every row (computed once per run): tap e of output ow is
 * input ow * s + off[e], inside the input for ow in [lo[e], hi[e]); all taps are inside for outputs
 * [in_lo, in_hi), which the inner loops take when `fast`. */
#define POOL_TAPS 16
typedef struct pool_taps {
    int64_t lo[POOL_TAPS], hi[POOL_TAPS], off[POOL_TAPS];
    int64_t in_lo, in_hi;
    int fast, avx2;
} pool_taps;

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
    int8_t *vrow;      /* int8 max pooling: per thread, one input row's worth of window-row maxima */
    pool_taps taps;
} pool_job;

/* The float max rule: a NaN tap wins, and a tap replaces the maximum only when greater, so that of equal
 * taps (+0 and -0) the first one stays. */
static inline float max_tap(float acc, float v)
{
    return v > acc || v != v ? v : acc;
}

#define POOL_MAX8(a, b) ((b) > (a) ? (b) : (a))
#define POOL_ADD(a, b) ((a) + (b))

/* y[i] = OP(OP(y[i], r[S i]), r[S i + 1]) ... up to r[S i + K - 1]: the inside outputs of the common
 * windows (2 or 3 taps with stride 1 or 2, 5 taps with stride 1 as in SPPF blocks; no dilation along the
 * last dim) in loops the compiler vectorises. */
#define POOL_INNER(T, K, S, OP)                                                                                \
    for (int64_t i = 0; i < n; i++) {                                                                          \
        T v = y[i];                                                                                            \
        v = OP(v, r[(S) * i]);                                                                                 \
        v = OP(v, r[(S) * i + 1]);                                                                             \
        if ((K) >= 3) v = OP(v, r[(S) * i + 2]);                                                               \
        if ((K) >= 5) v = OP(OP(v, r[(S) * i + 3]), r[(S) * i + 4]);                                           \
        y[i] = v;                                                                                              \
    }
#define POOL_INNER_CASES(T, OP)                                                                                \
    if (k == 2 && s == 1) POOL_INNER(T, 2, 1, OP)                                                              \
    else if (k == 2 && s == 2) POOL_INNER(T, 2, 2, OP)                                                         \
    else if (k == 3 && s == 1) POOL_INNER(T, 3, 1, OP)                                                         \
    else if (k == 3 && s == 2) POOL_INNER(T, 3, 2, OP)                                                         \
    else POOL_INNER(T, 5, 1, OP)
/* The same loops compiled for the baseline and for AVX2: both give the same bits (max, compare and add
 * are exact lane by lane). */
#define POOL_INNER_FNS(SUF, ATTR)                                                                              \
    ATTR static void inner_f32##SUF(float *restrict y, const float *restrict r, int64_t n, int k, int s,       \
                                    int is_max)                                                                \
    {                                                                                                          \
        if (is_max) {                                                                                          \
            POOL_INNER_CASES(float, max_tap)                                                                   \
        } else {                                                                                               \
            POOL_INNER_CASES(float, POOL_ADD)                                                                  \
        }                                                                                                      \
    }                                                                                                          \
    ATTR static void inner_i8##SUF(int8_t *restrict y, const int8_t *restrict r, int64_t n, int k, int s)      \
    {                                                                                                          \
        POOL_INNER_CASES(int8_t, POOL_MAX8)                                                                    \
    }
POOL_INNER_FNS(_c, )
#if !defined(SIM_FORCE_GENERIC) && defined(__x86_64__) && defined(__GNUC__)
POOL_INNER_FNS(_avx2, __attribute__((target("avx2"))))
#define POOL_HAVE_AVX2 1
#endif

static void tap_span(const pool_priv *p, int64_t e, int64_t *lo, int64_t *hi, int64_t *off)
{
    int64_t o = e * p->dl[2] - p->pb[2], s = p->s[2];
    int64_t l = o >= 0 ? 0 : (-o + s - 1) / s;
    int64_t h = p->in[2] - 1 - o < 0 ? 0 : (p->in[2] - 1 - o) / s + 1;
    h = h < p->out[2] ? h : p->out[2];
    *lo = l < h ? l : h;
    *hi = h;
    *off = o;
}

static void taps_init(const pool_priv *p, pool_taps *t)
{
    memset(t, 0, sizeof *t);
    if (p->k[2] > POOL_TAPS) return; /* row_taps computes the spans as it goes */
    for (int64_t e = 0; e < p->k[2]; e++) tap_span(p, e, &t->lo[e], &t->hi[e], &t->off[e]);
    t->in_lo = t->lo[0];
    t->in_hi = t->hi[p->k[2] - 1] > t->in_lo ? t->hi[p->k[2] - 1] : t->in_lo;
    int64_t k = p->k[2], s = p->s[2];
    t->fast = ((k == 2 || k == 3) && (s == 1 || s == 2)) || (k == 5 && s == 1);
    t->fast = t->fast && p->dl[2] == 1 && t->in_hi > t->in_lo;
#ifdef POOL_HAVE_AVX2
    t->avx2 = SIM_CPU_AVX2();
#endif
}

/* acc[ow] = max or sum with the taps along the last dim of every output of one input row. Each output
 * takes its taps in the (d, h, w) order of the definition: the same operations as visiting each
 * output's window in turn, hence the same bits. The inside outputs of the common windows go through
 * the inner loops; the others (and every other window) take one pass over the row per tap. */
static void row_taps_f32(const pool_priv *p, const pool_taps *t, const float *row, float *acc, int is_max)
{
    int64_t k = p->k[2], s = p->s[2];
    if (t->fast) {
        for (int pass = 0; pass < 2; pass++) { /* the outputs before in_lo, then those from in_hi */
            int64_t o0 = pass ? t->in_hi : 0, o1 = pass ? p->out[2] : t->in_lo;
            for (int64_t ow = o0; ow < o1; ow++)
                for (int64_t e = 0; e < k; e++) {
                    if (ow < t->lo[e] || ow >= t->hi[e]) continue;
                    float v = row[ow * s + t->off[e]];
                    acc[ow] = is_max ? max_tap(acc[ow], v) : acc[ow] + v;
                }
            if (pass) break;
            float *y = acc + t->in_lo;
            const float *r = row + t->in_lo * s + t->off[0];
#ifdef POOL_HAVE_AVX2
            if (t->avx2) inner_f32_avx2(y, r, t->in_hi - t->in_lo, (int)k, (int)s, is_max);
            else
#endif
                inner_f32_c(y, r, t->in_hi - t->in_lo, (int)k, (int)s, is_max);
        }
        return;
    }
    for (int64_t e = 0; e < k; e++) {
        int64_t l, h, off;
        if (k <= POOL_TAPS) l = t->lo[e], h = t->hi[e], off = t->off[e];
        else tap_span(p, e, &l, &h, &off);
        for (int64_t i = l; i < h; i++) {
            float v = row[i * s + off];
            acc[i] = is_max ? max_tap(acc[i], v) : acc[i] + v;
        }
    }
}

/* The int8 codes' max (any order gives the same integer). */
static void row_taps_i8(const pool_priv *p, const pool_taps *t, const int8_t *row, int8_t *acc)
{
    int64_t k = p->k[2], s = p->s[2];
    if (t->fast) {
        int8_t *y = acc + t->in_lo;
        const int8_t *r = row + t->in_lo * s + t->off[0];
#ifdef POOL_HAVE_AVX2
        if (t->avx2) inner_i8_avx2(y, r, t->in_hi - t->in_lo, (int)k, (int)s);
        else
#endif
            inner_i8_c(y, r, t->in_hi - t->in_lo, (int)k, (int)s);
    }
    for (int64_t e = 0; e < k; e++) {
        int64_t l, h, off;
        if (k <= POOL_TAPS) l = t->lo[e], h = t->hi[e], off = t->off[e];
        else tap_span(p, e, &l, &h, &off);
        int64_t skip_lo = t->fast ? t->in_lo : h, skip_hi = t->fast ? t->in_hi : h; /* done by the inner loop */
        for (int64_t i = l; i < skip_lo && i < h; i++) acc[i] = POOL_MAX8(acc[i], row[i * s + off]);
        for (int64_t i = skip_hi > l ? skip_hi : l; i < h; i++) acc[i] = POOL_MAX8(acc[i], row[i * s + off]);
    }
}

/* The first input row of window rows (a, b) of output (od, oh); tap_span offsets run along it. */
static size_t window_row(const pool_priv *p, const pool_win *a_, const pool_win *b_, int64_t a, int64_t b)
{
    return (size_t)(((a_->first + a * p->dl[0]) * p->in[1] + b_->first + b * p->dl[1]) * p->in[2]);
}

/* Planes [lo, hi), one output row at a time. */
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
                for (int64_t ow = 0; ow < p->out[2]; ow++) yr[ow] = is_max ? -INFINITY : 0.0f;
                for (int64_t a = a_->lo; a < a_->hi; a++)
                    for (int64_t b = b_->lo; b < b_->hi; b++) row_taps_f32(p, &j->taps, xc + window_row(p, a_, b_, a, b), yr, is_max);
                if (is_max) continue;
                for (int64_t ow = 0; ow < p->out[2]; ow++) {
                    const pool_win *c_ = ww + ow;
                    int64_t cnt = p->include_pad ? a_->padded * b_->padded * c_->padded
                                                 : (a_->hi - a_->lo) * (b_->hi - b_->lo) * (c_->hi - c_->lo);
                    yr[ow] = cnt > 0 ? yr[ow] / (float)cnt : 0.0f;
                }
            }
    }
}

/* v[i] = max(v[i], r[i]): exact lane by lane, so the baseline and the AVX2 build give the same bytes. */
#define POOL_VMAX_FN(SUF, ATTR)                                                                                \
    ATTR static void vmax_i8##SUF(int8_t *restrict v, const int8_t *restrict r, int64_t n)                   \
    {                                                                                                          \
        for (int64_t i = 0; i < n; i++) v[i] = POOL_MAX8(v[i], r[i]);                                          \
    }
POOL_VMAX_FN(_c, )
#ifdef POOL_HAVE_AVX2
POOL_VMAX_FN(_avx2, __attribute__((target("avx2"))))
#endif

static void vmax_i8(int8_t *v, const int8_t *r, int64_t n, int avx2)
{
#ifdef POOL_HAVE_AVX2
    if (avx2) {
        vmax_i8_avx2(v, r, n);
        return;
    }
#endif
    (void)avx2;
    vmax_i8_c(v, r, n);
}

/* Int8 max pooling on the codes: dequantisation, a monotonic activation and requantisation are all
 * non-decreasing, so the output code of the largest input code equals the float path's result. The
 * row keeps the largest code so far (from -128, which every code reaches) and then maps it; an output
 * whose window holds no input takes the empty window's code. A window of several input rows takes their
 * element-wise maximum first and its taps along that once (the same integer maximum: 2K instead of K^2
 * operations per output of a KxK window, as in SPPF's 5x5 pools). */
static void local_range_i8max(void *arg, int64_t lo, int64_t hi, int tid)
{
    const pool_job *j = arg;
    const pool_priv *p = j->p;
    const pool_win *wd = j->w, *wh = wd + p->out[0], *ww = wh + p->out[1];
    for (int64_t c = lo; c < hi; c++) {
        const int8_t *xc = j->x8 + c * p->in_sz;
        int8_t *yc = j->y8 + c * p->out_sz;
        for (int64_t od = 0; od < p->out[0]; od++)
            for (int64_t oh = 0; oh < p->out[1]; oh++) {
                const pool_win *a_ = wd + od, *b_ = wh + oh;
                int8_t *yr = yc + (od * p->out[1] + oh) * p->out[2];
                if (a_->hi <= a_->lo || b_->hi <= b_->lo) {
                    memset(yr, (unsigned char)j->empty, (size_t)p->out[2]);
                    continue;
                }
                memset(yr, 0x80, (size_t)p->out[2]);
                int64_t rows = (a_->hi - a_->lo) * (b_->hi - b_->lo);
                if (rows > 1 && j->vrow) {
                    /* row-shared: the max of the window's input rows first, then the taps along it once */
                    int8_t *vm = j->vrow + (size_t)tid * (size_t)p->in[2];
                    int first = 1;
                    for (int64_t a = a_->lo; a < a_->hi; a++)
                        for (int64_t b = b_->lo; b < b_->hi; b++) {
                            const int8_t *xr = xc + window_row(p, a_, b_, a, b);
                            if (first) memcpy(vm, xr, (size_t)p->in[2]);
                            else vmax_i8(vm, xr, p->in[2], j->taps.avx2);
                            first = 0;
                        }
                    row_taps_i8(p, &j->taps, vm, yr);
                } else {
                    for (int64_t a = a_->lo; a < a_->hi; a++)
                        for (int64_t b = b_->lo; b < b_->hi; b++)
                            row_taps_i8(p, &j->taps, xc + window_row(p, a_, b_, a, b), yr);
                }
                for (int64_t ow = 0; ow < p->out[2]; ow++)
                    yr[ow] = ww[ow].hi <= ww[ow].lo ? j->empty : j->map[yr[ow] + 128];
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
    pool_job j = {.p = p, .w = w, .is_max = op->type == SIM_OP_MAXPOOL || op->type == SIM_OP_GLOBAL_MAXPOOL, .x = x, .y = y};
    if (p->global) {
        sim_parallel_sized(call, global_range, &j, p->nc, (double)(p->nc * p->in_sz));
    } else {
        windows(p, w);
        taps_init(p, &j.taps);
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
        pool_job j = {.p = p, .w = w, .is_max = 1, .x8 = x8, .y8 = y8, .map = map, .empty = map[256]};
        taps_init(p, &j.taps);
        if (p->k[0] * p->k[1] > 1) { /* row-shared windows (see local_range_i8max); without it, row by row */
            j.vrow = sim_scratch_get(call, (size_t)sim_call_threads(call) * (size_t)p->in[2]);
            if (!j.vrow) return SIM_ERR_MALLOC;
        }
        sim_parallel_sized(call, local_range_i8max, &j, p->nc, (double)pool_macs(call->graph, op));
        return 0;
    }
    if (!is_max && p->global && op->act == SIM_ACT_NONE && xt->dtype == SIM_I8) {
        float *buf = sim_scratch_get(call, nout * sizeof(float));
        if (!buf) return SIM_ERR_MALLOC;
        pool_job j = {.p = p, .y = buf, .x8 = x8};
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
