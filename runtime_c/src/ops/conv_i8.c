/*
 * Int8 Conv and ConvTranspose. Accumulation is exact int32 of (x - zx) * (w - zw): GEMM modes use
 * the int16 multiply-add kernel; depthwise convolutions run the float direct kernel on integer
 * values, which is exact while taps * 255 * 255 < 2^24 (checked at prepare). The int32 bias is
 * round(b / (sx * sw)), and results are requantised with round-half-away-from-zero.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conv_i8.h"
#include "gemm_i8.h"
#include "gemm_kernel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

enum { I8_GEMM = 0, I8_POINTWISE = 1, I8_DEPTHWISE = 2 };

/* dst[i] = src[i] - zx as floats (exact). */
static void widen_c(const int8_t *src, float *dst, int64_t n, float zx)
{
    for (int64_t i = 0; i < n; i++) dst[i] = (float)src[i] - zx;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void widen_avx2(const int8_t *src, float *dst, int64_t n, float zx)
{
    __m256 z = _mm256_set1_ps(zx);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), z));
    }
    widen_c(src + i, dst + i, n - i, zx);
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
/* dst[e] = src[2 e] - zx for e < n (a stride-2 im2col row), 8 at a time; the number done. */
__attribute__((target("avx2,fma"))) static int64_t widen_s2_avx2(const int8_t *src, float *dst, int64_t n, float zx)
{
    __m256 z = _mm256_set1_ps(zx);
    const __m128i even = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
    int64_t e = 0;
    for (; 2 * e + 16 <= 2 * n - 1; e += 8) { /* reads src[2 e .. 2 e + 15], within src[0 .. 2 n - 2] */
        __m128i b = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(src + 2 * e)), even);
        _mm256_storeu_ps(dst + e, _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), z));
    }
    return e;
}
#endif

static void widen(int avx2, const int8_t *src, float *dst, int64_t n, float zx)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx2) {
        widen_avx2(src, dst, n, zx);
        return;
    }
#endif
    (void)avx2;
    widen_c(src, dst, n, zx);
}

struct sim_conv_i8 {
    int mode, avx2;
    int32_t zx;
    int64_t rows, kdim;   /* per-group GEMM rows and depth */
    int16_t *wpack;       /* per-group packed A */
    float *fpack;         /* per-group packed A as floats (exact-float mode) */
    float *fbias;         /* int32 bias as floats when acc + bias stays exact, else NULL */
    float *fpack_t;       /* pointwise with few output positions: W^T as packed B panels (exact-float) */
    float *wdw;           /* depthwise (w - zw) as floats */
    float *wdw8;          /* the same in blocks of 8 channels (sim_dw8_pack), or NULL */
    int32_t *bias;
    float *mult, *rscale;
    sim_i8_epi epi;
    sim_act_lut lut;      /* fused transcendental activation, see act_lut.h */
};

void sim_conv_i8_free(sim_conv_i8 *s)
{
    if (!s) return;
    free(s->wpack);
    free(s->fpack);
    free(s->fbias);
    free(s->fpack_t);
    free(s->wdw);
    free(s->wdw8);
    free(s->bias);
    free(s->mult);
    free(s->rscale);
    sim_act_lut_free(&s->lut);
    free(s);
}

/* Output channel of weight element e. */
static int64_t weight_channel(const sim_conv_geom *g, int transpose, int64_t e)
{
    if (!transpose) return e / (g->cg * g->k_sz);
    int64_t ci = e / (g->mg * g->k_sz), m = (e / g->k_sz) % g->mg;
    return (ci / g->cg) * g->mg + m;
}

/* Integer weights (q - zw) and per-output-channel weight scales. */
static int quantise_weights(const sim_tensor *w, const sim_conv_geom *g, int transpose, int16_t *wq, float *sw,
                            const sim_op *op, char *err, size_t err_len)
{
    int64_t n = w->n_elems;
    if (w->dtype == SIM_I8 && w->data) {
        const int8_t *q = w->data;
        int axis = transpose ? 1 : 0;
        if (w->qnt == SIM_Q_CHANNEL &&
            (w->q_axis != axis || !w->q_scales || w->q_count != (uint32_t)w->dims[axis]))
            return sim_fail(err, err_len, op, "per-channel weight quantisation must be on axis %d", axis);
        for (int64_t e = 0; e < n; e++) {
            int64_t oc = weight_channel(g, transpose, e);
            int64_t qi = transpose ? oc % g->mg : oc;
            float s = w->qnt == SIM_Q_CHANNEL ? w->q_scales[qi] : w->scale;
            int32_t z = w->qnt == SIM_Q_CHANNEL ? (w->q_zps ? w->q_zps[qi] : 0) : (w->qnt == SIM_Q_AFFINE ? w->zp : 0);
            sw[oc] = s > 0.0f ? s : 1.0f;
            wq[e] = (int16_t)(q[e] - z);
        }
        return 0;
    }
    /* float weights in an int8 layer: symmetric per-channel quantisation */
    for (int64_t c = 0; c < g->cout; c++) sw[c] = 0.0f;
    for (int64_t e = 0; e < n; e++) {
        int64_t oc = weight_channel(g, transpose, e);
        float a = fabsf(w->fdata[e]);
        sw[oc] = a > sw[oc] ? a : sw[oc];
    }
    for (int64_t c = 0; c < g->cout; c++) sw[c] = sw[c] > 0.0f ? sw[c] / 127.0f : 1.0f;
    for (int64_t e = 0; e < n; e++) wq[e] = sim_quant_i8(w->fdata[e], sw[weight_channel(g, transpose, e)], 0);
    return 0;
}

int sim_conv_i8_prepare(const sim_graph *gr, const sim_op *op, const sim_conv_geom *g, int transpose,
                        sim_conv_i8 **out, char *err, size_t err_len)
{
    const sim_tensor *x = sim_in_tensor(gr, op, 0), *w = sim_in_tensor(gr, op, 1), *b = sim_in_tensor(gr, op, 2);
    const sim_tensor *y = sim_out_tensor(gr, op, 0);
    *out = NULL;
    sim_conv_i8 *s = calloc(1, sizeof *s);
    int16_t *wq = malloc((size_t)w->n_elems * sizeof(int16_t));
    float *sw = calloc((size_t)g->cout, sizeof(float));
    if (s) {
        s->bias = calloc((size_t)g->cout, sizeof(int32_t));
        s->mult = malloc((size_t)g->cout * sizeof(float));
        s->rscale = malloc((size_t)g->cout * sizeof(float));
    }
    int rc = 0;
    if (!s || !wq || !sw || !s->bias || !s->mult || !s->rscale) {
        rc = sim_fail(err, err_len, op, "out of memory preparing int8 weights");
        goto done;
    }
    rc = quantise_weights(w, g, transpose, wq, sw, op, err, err_len);
    if (rc) goto done;
    float sx = sim_t_scale(x), so = y && y->dtype == SIM_I8 ? sim_t_scale(y) : 1.0f;
    int32_t zo = y && y->dtype == SIM_I8 ? sim_t_zp(y) : 0;
    s->zx = sim_t_zp(x);
    s->avx2 = sim_cpu_has_avx2_fma();
    for (int64_t c = 0; c < g->cout; c++) {
        float rs = sx * sw[c];
        s->rscale[c] = rs;
        s->mult[c] = rs / so;
        if (b) {
            double q = round((double)b->fdata[c] / (double)rs);
            q = q > 2147483647.0 ? 2147483647.0 : (q < -2147483648.0 ? -2147483648.0 : q);
            s->bias[c] = (int32_t)q;
        }
    }
    sim_i8_epi_act(&s->epi, op, so, zo);
    s->epi.bias = s->bias;
    s->epi.mult = s->mult;
    s->epi.rscale = s->rscale;
    if (sim_i8_epi_lut(&s->epi, &s->lut)) {
        rc = sim_fail(err, err_len, op, "out of memory preparing the activation table");
        goto done;
    }
    int pointwise = g->k_sz == 1;
    for (int d = 0; d < 3; d++) pointwise = pointwise && g->s[d] == 1 && g->pb[d] == 0 && g->pe[d] == 0;
    if (!transpose && g->cg == 1 && g->mg == 1 && g->nsp <= 2 && g->k_sz > 1 && g->k_sz <= 258) {
        s->mode = I8_DEPTHWISE;
        s->wdw = malloc((size_t)w->n_elems * sizeof(float));
        if (!s->wdw) {
            rc = sim_fail(err, err_len, op, "out of memory preparing int8 weights");
            goto done;
        }
        for (int64_t e = 0; e < w->n_elems; e++) s->wdw[e] = (float)wq[e];
        if (sim_dw8_usable(s->avx2, g) && !(s->wdw8 = sim_dw8_pack(g, s->wdw)))
            rc = sim_fail(err, err_len, op, "out of memory preparing int8 weights");
        goto done;
    }
    s->mode = transpose ? I8_POINTWISE : (pointwise ? I8_POINTWISE : I8_GEMM);
    s->rows = transpose ? g->mg * g->k_sz : g->mg;
    s->kdim = transpose ? g->cg : g->cg * g->k_sz;
    /* Exact-float mode: when every partial sum stays below 2^24 in magnitude, the float GEMM on the
     * integer values is exact and faster than the int16 kernel for shallow layers. */
    int32_t wmax = 0;
    for (int64_t e = 0; e < w->n_elems; e++) wmax = abs(wq[e]) > wmax ? abs(wq[e]) : wmax;
    int32_t xmax = s->zx + 128 > 127 - s->zx ? s->zx + 128 : 127 - s->zx;
    if (!transpose && (double)wmax * xmax * (double)s->kdim < 16777216.0 && s->kdim <= 512) {
        size_t per = sim_pack_a_size(s->rows, s->kdim);
        float *wf = malloc((size_t)w->n_elems * sizeof(float));
        s->fpack = malloc(per * (size_t)g->group * sizeof(float));
        if (!wf || !s->fpack) {
            free(wf);
            rc = sim_fail(err, err_len, op, "out of memory packing int8 weights");
            goto done;
        }
        for (int64_t e = 0; e < w->n_elems; e++) wf[e] = (float)wq[e];
        double bound = (double)wmax * xmax * (double)s->kdim, bmax = 0.0;
        for (int64_t c = 0; c < g->cout; c++) bmax = fabs((double)s->bias[c]) > bmax ? fabs((double)s->bias[c]) : bmax;
        if (bound + bmax < 16777216.0) {
            s->fbias = malloc((size_t)g->cout * sizeof(float));
            if (s->fbias)
                for (int64_t c = 0; c < g->cout; c++) s->fbias[c] = (float)s->bias[c];
        }
        for (int64_t gi = 0; gi < g->group; gi++)
            sim_pack_a(wf + gi * g->mg * s->kdim, s->kdim, 1, s->rows, s->kdim, s->fpack + (size_t)gi * per);
        int64_t waste_n = sim_round_up(g->out_sz, SIM_NR) - g->out_sz;
        int64_t waste_m = sim_round_up(g->out_sz, SIM_MR) - g->out_sz;
        if (pointwise && g->out_sz < 128 && waste_m * SIM_NR < waste_n * SIM_MR && g->mg % SIM_NR == 0) {
            size_t per_t = sim_pack_b_size(s->kdim, g->mg);
            s->fpack_t = malloc(per_t * (size_t)g->group * sizeof(float));
            if (s->fpack_t)
                for (int64_t gi = 0; gi < g->group; gi++)
                    sim_pack_b(wf + gi * g->mg * s->kdim, 1, s->kdim, s->kdim, g->mg, s->fpack_t + (size_t)gi * per_t);
        }
        free(wf);
        goto done;
    }
    size_t per = sim_pack_a16_size(s->rows, s->kdim);
    s->wpack = malloc(per * (size_t)g->group * sizeof(int16_t));
    if (!s->wpack) {
        rc = sim_fail(err, err_len, op, "out of memory packing int8 weights");
        goto done;
    }
    for (int64_t gi = 0; gi < g->group; gi++) {
        if (transpose)
            sim_pack_a16(wq + gi * g->cg * s->rows, 1, s->rows, s->rows, s->kdim, s->wpack + (size_t)gi * per);
        else
            sim_pack_a16(wq + gi * g->mg * s->kdim, s->kdim, 1, s->rows, s->kdim, s->wpack + (size_t)gi * per);
    }
done:
    free(wq);
    free(sw);
    if (rc) {
        sim_conv_i8_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* A column block [j0, j0 + n) of output positions as row segments, planned once per block so the im2col
 * rows of its kdim taps need no division: segment i covers block columns [col, col + len), output row
 * (od, oh) from column ow; span[(i * k[2] + kw) * 2 + {0, 1}] is the part of it whose input column for
 * tap column kw is inside the image (the rest is padding). */
typedef struct col_seg {
    int64_t od, oh, ow, col, len;
} col_seg;

/* Segments of a block of n columns: at most n / out[2] + 2. */
static int64_t max_segs(const sim_conv_geom *g, int64_t n) { return n / g->out[2] + 2; }

static int64_t plan_block(const sim_conv_geom *g, int64_t j0, int64_t n, col_seg *seg, int64_t *span)
{
    int64_t plane = g->out[1] * g->out[2];
    int64_t od = j0 / plane, rem = j0 % plane, oh = rem / g->out[2], ow = rem % g->out[2], ns = 0;
    for (int64_t j = 0; j < n; ns++) {
        int64_t len = g->out[2] - ow < n - j ? g->out[2] - ow : n - j;
        seg[ns] = (col_seg){od, oh, ow, j, len};
        for (int64_t kw = 0; kw < g->k[2]; kw++)
            sim_valid_span(ow * g->s[2] - g->pb[2] + kw * g->dl[2], g->s[2], g->in[2], len, &span[(ns * g->k[2] + kw) * 2],
                           &span[(ns * g->k[2] + kw) * 2 + 1]);
        j += len;
        ow = 0;
        if (++oh == g->out[1]) {
            oh = 0;
            od++;
        }
    }
    return ns;
}

/* A kernel tap: input channel c (of the group) and offsets (kd, kh, kw), stepped in im2col row order. */
typedef struct conv_tap {
    int64_t c, kd, kh, kw;
} conv_tap;

static void next_tap(const sim_conv_geom *g, conv_tap *t)
{
    if (++t->kw < g->k[2]) return;
    t->kw = 0;
    if (++t->kh < g->k[1]) return;
    t->kh = 0;
    if (++t->kd < g->k[0]) return;
    t->kd = 0;
    t->c++;
}

/* The im2col row of tap t over a planned block as x - zx, int16 into r16 or float into rf (the
 * exact-float GEMM); padding is 0 (= zx). */
static void im2col_row_i8(int avx2, const sim_conv_geom *g, const int8_t *xg, int32_t zx, const conv_tap *t,
                          const col_seg *seg, int64_t ns, const int64_t *span, int16_t *r16, float *rf)
{
    const int8_t *xc = xg + t->c * g->in_sz;
    int64_t sw = g->s[2];
    float fz = (float)zx;
    for (int64_t i = 0; i < ns; i++) {
        const col_seg *sg = seg + i;
        int64_t id = sg->od * g->s[0] - g->pb[0] + t->kd * g->dl[0];
        int64_t ih = sg->oh * g->s[1] - g->pb[1] + t->kh * g->dl[1];
        int64_t lo = 0, hi = 0;
        const int8_t *s0 = xc;
        if (id >= 0 && id < g->in[0] && ih >= 0 && ih < g->in[1]) {
            s0 = xc + (id * g->in[1] + ih) * g->in[2] + sg->ow * sw - g->pb[2] + t->kw * g->dl[2];
            lo = span[(i * g->k[2] + t->kw) * 2];
            hi = span[(i * g->k[2] + t->kw) * 2 + 1];
        }
        /* loops the compiler vectorises for stride 1 */
        if (r16) {
            int16_t *r = r16 + sg->col;
            for (int64_t e = 0; e < lo; e++) r[e] = 0;
            if (sw == 1)
                for (int64_t e = lo; e < hi; e++) r[e] = (int16_t)(s0[e] - zx);
            else
                for (int64_t e = lo; e < hi; e++) r[e] = (int16_t)(s0[e * sw] - zx);
            for (int64_t e = hi; e < sg->len; e++) r[e] = 0;
        } else {
            float *r = rf + sg->col;
            for (int64_t e = 0; e < lo; e++) r[e] = 0.0f;
            if (sw == 1) {
                widen(avx2, s0 + lo, r + lo, hi - lo, fz);
            } else {
                int64_t e = lo;
#if defined(__x86_64__) && defined(__GNUC__)
                if (avx2 && sw == 2) e += widen_s2_avx2(s0 + 2 * lo, r + lo, hi - lo, fz);
#endif
                for (; e < hi; e++) r[e] = (float)s0[e * sw] - fz;
            }
            for (int64_t e = hi; e < sg->len; e++) r[e] = 0.0f;
        }
    }
}

/* Parallel jobs (see sim_par): ranges of channels, column tiles or column blocks, each writing only
 * its own outputs with its own scratch slice, so the result does not depend on the thread count. */
typedef struct i8_job {
    const sim_conv_i8 *s;
    const sim_conv_geom *g;
    const int8_t *x;
    int8_t *y;
    const float *xf;      /* widened input (exact-float modes) */
    void *scr;            /* n_threads slices of stride bytes */
    size_t stride;
    int64_t nb, gi, n;
} i8_job;

/* The bias joins the exact float sum when it cannot spoil exactness. */
#define FOLD_BIAS(b) ((b) > -8000000 && (b) < 8000000)

static void dw_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const i8_job *j = arg;
    const sim_conv_i8 *s = j->s;
    const sim_conv_geom *g = j->g;
    size_t padn = sim_dw_pad_elems(g);
    float *pad = (float *)(void *)((char *)j->scr + (size_t)tid * j->stride), *acc = pad + padn;
    int64_t iw = g->in[2], pw = iw + g->pb[2] + g->pe[2], ph = g->in[1] + g->pb[1] + g->pe[1];
    float fz = (float)s->zx;
    (void)ph;
    if (s->wdw8) {
        /* items are blocks of 8 channels: accumulators to 8 planes, then each channel's requantisation */
        size_t zn, n8 = sim_dw8_scratch_elems(g, &zn);
        float *accs = pad + n8;
        (void)zn;
        sim_dw8_zero(g, pad);
        int64_t nb = (g->cout + 7) / 8;
        for (int64_t e = lo; e < hi; e++) {
            int64_t n = e / nb, c = (e % nb) * 8, nc = g->cout - c < 8 ? g->cout - c : 8;
            float b8[8] = {0};
            unsigned fold = 0;
            for (int64_t l = 0; l < nc; l++)
                if (FOLD_BIAS(s->bias[c + l])) {
                    b8[l] = (float)s->bias[c + l];
                    fold |= 1u << l;
                }
            const int8_t *xb = j->x + (n * g->cin + c) * g->in_sz;
            if (s->epi.act == SIM_ACT_NONE || s->epi.clamp) {
                sim_dw8_block_i8(g, xb, fz, nc, s->wdw8 + c * g->k_sz, b8, pad, &s->epi, fold, c,
                                 j->y + (n * g->cout + c) * g->out_sz);
                continue;
            }
            sim_dw8_block(g, NULL, xb, fz, nc, s->wdw8 + c * g->k_sz, b8, pad, NULL, accs);
            for (int64_t l = 0; l < nc; l++) {
                sim_i8_epi ep = s->epi;
                if (FOLD_BIAS(s->bias[c + l])) ep.bias = NULL;
                sim_i8_requant_plane(s->avx2, &ep, accs + l * g->out_sz, g->out_sz, c + l,
                                     j->y + (n * g->cout + c + l) * g->out_sz);
            }
        }
        return;
    }
    memset(pad, 0, sim_dw_plane_zero_elems(g) * sizeof(float));
    for (int64_t e = lo; e < hi; e++) {
        int64_t n = e / g->cout, c = e % g->cout;
        const int8_t *xc = j->x + (n * g->cin + c) * g->in_sz;
        /* the borders stay zero (= zx after the shift); only the interior is rewritten */
        for (int64_t r = 0; r < g->in[1]; r++) widen(s->avx2, xc + r * iw, pad + (r + g->pb[1]) * pw + g->pb[2], iw, fz);
        int8_t *yc = j->y + (n * g->cout + c) * g->out_sz;
        /* the bias joins the exact float sum when it cannot spoil exactness */
        int fold = FOLD_BIAS(s->bias[c]);
        /* the plane kernels' fused int8 store is linear (plus clamp): SiLU, HardSwish, ... go through
         * sim_i8_requant_plane, which applies them to the dequantised accumulator */
        int linear = s->epi.act == SIM_ACT_NONE || s->epi.clamp;
        if (sim_dw_plane(s->avx2, g, pad, s->wdw + c * g->k_sz, fold ? (float)s->bias[c] : 0.0f, acc, NULL,
                         fold && linear ? &s->epi : NULL, c, yc))
            continue;
        if (fold) {
            sim_i8_epi ep = s->epi;
            ep.bias = NULL;
            sim_i8_requant_plane(s->avx2, &ep, acc, g->out_sz, c, yc);
        } else {
            sim_i8_requant_plane(s->avx2, &s->epi, acc, g->out_sz, c, yc);
        }
    }
}

static int run_depthwise(const sim_conv_i8 *s, const sim_conv_geom *g, const int8_t *x, int8_t *y,
                         sim_kernel_call *call)
{
    size_t zn, n8 = sim_dw8_scratch_elems(g, &zn) + 8 * (size_t)g->out_sz, n1 = sim_dw_pad_elems(g) + (size_t)g->out_sz;
    size_t stride = ((n8 > n1 ? n8 : n1) * sizeof(float) + 63u) & ~(size_t)63u;
    void *scr = sim_scratch_get(call, stride * (size_t)sim_call_threads(call));
    if (!scr) return SIM_ERR_MALLOC;
    i8_job j = {s, g, x, y, NULL, scr, stride, 0, 0, 0};
    int64_t items = g->n * (s->wdw8 ? (g->cout + 7) / 8 : g->cout);
    sim_parallel_sized(call, dw_range, &j, items, (double)(g->n * g->cout * g->out_sz * g->k_sz));
    return 0;
}

static void gemm_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const i8_job *j = arg;
    const sim_conv_i8 *s = j->s;
    const sim_conv_geom *g = j->g;
    size_t pb_sz = sim_pack_b16_size(s->kdim, j->nb), per = sim_pack_a16_size(s->rows, s->kdim);
    int16_t *pb = (int16_t *)(void *)((char *)j->scr + (size_t)tid * j->stride), *row = pb + pb_sz;
    int64_t *span = (int64_t *)(void *)(((uintptr_t)(row + 2 * j->nb) + 7u) & ~(uintptr_t)7u);
    col_seg *seg = (col_seg *)(void *)(span + 2 * g->k[2] * max_segs(g, j->nb));
    const int8_t *xg = j->x + (j->n * g->cin + j->gi * g->cg) * g->in_sz;
    int8_t *yg = j->y + (j->n * g->cout + j->gi * g->mg) * g->out_sz;
    for (int64_t b = lo; b < hi; b++) {
        int64_t j0 = b * j->nb, w = g->out_sz - j0 < j->nb ? g->out_sz - j0 : j->nb;
        if (s->mode == I8_POINTWISE) {
            sim_pack_b16_i8(xg + j0, g->in_sz, 1, s->kdim, w, s->zx, pb);
        } else {
            int16_t *row1 = row + j->nb;
            int64_t ns = plan_block(g, j0, w, seg, span);
            conv_tap t = {0, 0, 0, 0};
            for (int64_t k = 0; k < s->kdim; k += 2) {
                im2col_row_i8(s->avx2, g, xg, s->zx, &t, seg, ns, span, row, NULL);
                next_tap(g, &t);
                if (k + 1 < s->kdim) {
                    im2col_row_i8(s->avx2, g, xg, s->zx, &t, seg, ns, span, row1, NULL);
                    next_tap(g, &t);
                } else {
                    memset(row1, 0, (size_t)w * sizeof(int16_t));
                }
                sim_pack_b16_pair(row, row1, k / 2, s->kdim, w, pb);
            }
            sim_pack_b16_pad(s->kdim, w, pb);
        }
        sim_gemm_i8_packed(s->avx2, s->wpack + (size_t)j->gi * per, pb, s->rows, w, s->kdim, yg + j0, NULL,
                           g->out_sz, 1, j->gi * g->mg, 0, &s->epi);
    }
}

static int run_gemm(const sim_conv_i8 *s, const sim_conv_geom *g, const int8_t *x, int8_t *y, sim_kernel_call *call)
{
    int64_t nb = sim_gemm_block_cols(s->kdim / 2 + 1);
    if (nb > sim_round_up(g->out_sz, SIM_NR)) nb = sim_round_up(g->out_sz, SIM_NR);
    size_t plan = (size_t)max_segs(g, nb) * (2 * (size_t)g->k[2] * sizeof(int64_t) + sizeof(col_seg)) + 8u;
    size_t stride = ((sim_pack_b16_size(s->kdim, nb) + 2 * (size_t)nb) * sizeof(int16_t) + plan + 63u) & ~(size_t)63u;
    void *scr = sim_scratch_get(call, stride * (size_t)sim_call_threads(call));
    if (!scr) return SIM_ERR_MALLOC;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gi = 0; gi < g->group; gi++) {
            i8_job j = {s, g, x, y, NULL, scr, stride, nb, gi, n};
            sim_parallel_sized(call, gemm_range, &j, (g->out_sz + nb - 1) / nb, (double)(s->rows * g->out_sz * s->kdim));
        }
    return 0;
}

/* The context of add_i32 (a sim_col2im_add): the int32 column row and the channel image it adds into. */
typedef struct col2im_i32 {
    const int32_t *col;
    int32_t *yc;
} col2im_i32;

static void add_i32(void *ctx, int64_t src, int64_t dst, int64_t ow0, int64_t sw, int64_t lo, int64_t hi)
{
    const col2im_i32 *c = ctx;
    const int32_t *s = c->col + src;
    int32_t *d = c->yc + dst + ow0;
    if (sw == 1)
        for (int64_t x = lo; x < hi; x++) d[x] += s[x];
    else
        for (int64_t x = lo; x < hi; x++) d[x * sw] += s[x];
}

/* Adds row (kd, kh, kw) of a block of int32 columns (input positions [j0, j0 + n)) into the channel
 * image yc: one output row segment per input row, its valid span computed once. */
static void col2im_row_i32(const sim_conv_geom *g, const int32_t *col, int64_t kd, int64_t kh, int64_t kw, int64_t j0,
                           int64_t n, int32_t *yc)
{
    col2im_i32 c = {col, yc};
    sim_col2im_walk(g, kd, kh, kw, j0, n, add_i32, &c);
}

/* Output channels per ConvTranspose work item: the smallest count whose GEMM rows (channels * taps)
 * fill whole packed A panels, so an item's rows start at a panel boundary. */
int64_t sim_convt_channel_block(const sim_conv_geom *g)
{
    int64_t a = g->k_sz % SIM_MR, b = SIM_MR;
    while (a) {
        int64_t t = b % a;
        b = a;
        a = t;
    }
    return SIM_MR / b;
}

/* Channels per item: whole panel-aligned blocks, as few items as threads, so each thread streams the
 * packed input once (one item, all rows, on one thread). */
int64_t sim_convt_items_block(const sim_conv_geom *g, int n_threads)
{
    int64_t ob = sim_convt_channel_block(g), nblk = (g->mg + ob - 1) / ob, nt = n_threads > 1 ? n_threads : 1;
    return ob * ((nblk + nt - 1) / nt);
}

typedef struct ti8_job {
    const sim_conv_i8 *s;
    const sim_conv_geom *g;
    const int16_t *pb;    /* the group's whole input as packed B */
    int32_t *acc;         /* int32 image of the group's output channels */
    int32_t *cbuf;        /* n_threads slices of cstride int32 */
    size_t cstride;
    int8_t *yg;
    int64_t gi, ob, nb;
} ti8_job;

/* Channel blocks [lo, hi) of one group: their GEMM rows over every column block, scattered into their
 * own int32 images and requantised. The int32 sums are exact, so the order does not matter. */
static void ti8_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const ti8_job *j = arg;
    const sim_conv_i8 *s = j->s;
    const sim_conv_geom *g = j->g;
    int64_t kp2 = (s->kdim + 1) / 2 * 2, per = (int64_t)sim_pack_a16_size(s->rows, s->kdim);
    int32_t *cbuf = j->cbuf + (size_t)tid * j->cstride;
    const sim_i8_epi none = {0};
    for (int64_t b = lo; b < hi; b++) {
        int64_t c0 = b * j->ob, c1 = c0 + j->ob < g->mg ? c0 + j->ob : g->mg;
        int64_t r0 = c0 * g->k_sz, nr = (c1 - c0) * g->k_sz;
        int32_t *acc = j->acc + c0 * g->out_sz;
        memset(acc, 0, (size_t)((c1 - c0) * g->out_sz) * sizeof(int32_t));
        for (int64_t j0 = 0; j0 < g->in_sz; j0 += j->nb) {
            int64_t w = g->in_sz - j0 < j->nb ? g->in_sz - j0 : j->nb;
            sim_gemm_i8_packed(s->avx2, s->wpack + j->gi * per + r0 * kp2, j->pb + j0 * kp2, nr, w, s->kdim, NULL, cbuf,
                               j->nb, 1, 0, 0, &none);
            for (int64_t r = 0; r < nr; r++) {
                int64_t kk = (r0 + r) % g->k_sz, oc = (r0 + r) / g->k_sz;
                int64_t kw = kk % g->k[2], kh = (kk / g->k[2]) % g->k[1], kd = kk / (g->k[2] * g->k[1]);
                col2im_row_i32(g, cbuf + r * j->nb, kd, kh, kw, j0, w, j->acc + oc * g->out_sz);
            }
        }
        for (int64_t oc = c0; oc < c1; oc++) {
            int64_t ch = j->gi * g->mg + oc;
            sim_i8_requant_row32(s->avx2, &s->epi, j->acc + oc * g->out_sz, s->bias[ch], g->out_sz, ch,
                                 j->yg + oc * g->out_sz);
        }
    }
}

/* ConvTranspose: int32 columns W^T (x - zx), scattered into an int32 image, then requantised; the
 * pool splits the output channels. */
static int run_transpose(const sim_conv_i8 *s, const sim_conv_geom *g, const int8_t *x, int8_t *y,
                         sim_kernel_call *call)
{
    int64_t ob = sim_convt_items_block(g, sim_call_threads(call)), rows = ob * g->k_sz;
    int64_t nb = sim_round_up(g->in_sz, SIM_NR), cap = sim_round_up((1 << 16) / rows, SIM_NR);
    cap = cap < SIM_NR ? SIM_NR : cap;
    nb = nb > cap ? cap : nb;
    size_t pb_sz = (sim_pack_b16_size(s->kdim, g->in_sz) + 31u) & ~(size_t)31u;
    size_t img = ((size_t)(g->mg * g->out_sz) + 15u) & ~(size_t)15u, cstride = ((size_t)(rows * nb) + 15u) & ~(size_t)15u;
    int nt = sim_call_threads(call);
    int32_t *acc = sim_scratch_get(call, (img + cstride * (size_t)nt) * sizeof(int32_t) + pb_sz * sizeof(int16_t));
    if (!acc) return SIM_ERR_MALLOC;
    int32_t *cbuf = acc + img;
    int16_t *pb = (int16_t *)(void *)(cbuf + cstride * (size_t)nt);
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gi = 0; gi < g->group; gi++) {
            const int8_t *xg = x + (n * g->cin + gi * g->cg) * g->in_sz;
            sim_pack_b16_i8(xg, g->in_sz, 1, s->kdim, g->in_sz, s->zx, pb);
            ti8_job j = {s, g, pb, acc, cbuf, cstride, y + (n * g->cout + gi * g->mg) * g->out_sz, gi, ob, nb};
            sim_parallel_sized(call, ti8_range, &j, (g->mg + ob - 1) / ob, (double)(s->rows * g->in_sz * s->kdim));
        }
    return 0;
}

static void widen_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const i8_job *j = arg;
    int64_t total = j->nb, e0 = lo * 16384, e1 = hi * 16384 < total ? hi * 16384 : total;
    (void)tid;
    widen(j->s->avx2, j->x + e0, (float *)(void *)j->scr + e0, e1 - e0, (float)j->s->zx);
}

/* xf = x - zx as floats for all n elements, split over the pool. */
static void widen_all(sim_kernel_call *call, const sim_conv_i8 *s, const int8_t *x, float *xf, int64_t n)
{
    i8_job j = {s, NULL, x, NULL, NULL, xf, 0, n, 0, 0};
    sim_parallel_sized(call, widen_range, &j, (n + 16383) / 16384, (double)n / 4.0);
}

typedef struct fet_job {
    const sim_conv_i8 *s;
    const float *pa, *pb;
    float *ct, *col;      /* col: n_threads slices of sp floats */
    int8_t *yg;
    int64_t sp, mg, ch0;
} fet_job;

static void fet_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const fet_job *j = arg;
    const sim_conv_i8 *s = j->s;
    int64_t c0 = lo * SIM_NR, c1 = hi * SIM_NR < j->mg ? hi * SIM_NR : j->mg;
    float *col = j->col + (size_t)tid * (size_t)sim_round_up(j->sp, 16);
    sim_gemm_epi none;
    memset(&none, 0, sizeof none);
    sim_gemm_packed(s->avx2, j->pa, j->pb + c0 * s->kdim, j->sp, c1 - c0, s->kdim, j->ct + c0, j->mg, &none);
    for (int64_t oc = c0; oc < c1; oc++) {
        for (int64_t i = 0; i < j->sp; i++) col[i] = j->ct[i * j->mg + oc];
        sim_i8_requant_plane(s->avx2, &s->epi, col, j->sp, j->ch0 + oc, j->yg + oc * j->sp);
    }
}

/* Exact-float pointwise with few positions: Y^T = X^T W^T in floats, then each channel is gathered
 * and requantised. */
static int run_float_exact_t(const sim_conv_i8 *s, const sim_conv_geom *g, const int8_t *x, int8_t *y,
                             sim_kernel_call *call)
{
    int64_t sp = g->out_sz, kdim = s->kdim;
    size_t nx = (size_t)(g->n * g->cin * g->in_sz), pa_sz = sim_pack_a_size(sp, kdim);
    size_t per_t = sim_pack_b_size(kdim, g->mg), colsz = (size_t)sim_round_up(sp, 16);
    int nt = sim_call_threads(call);
    float *xf = sim_scratch_get(call, (nx + pa_sz + (size_t)(sp * g->mg) + colsz * (size_t)nt) * sizeof(float));
    if (!xf) return SIM_ERR_MALLOC;
    float *pa = xf + nx, *ct = pa + pa_sz, *col = ct + sp * g->mg;
    widen_all(call, s, x, xf, (int64_t)nx);
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gi = 0; gi < g->group; gi++) {
            const float *xg = xf + (n * g->cin + gi * g->cg) * g->in_sz;
            sim_pack_a(xg, 1, g->in_sz, sp, kdim, pa);
            fet_job j = {s, pa, s->fpack_t + (size_t)gi * per_t, ct, col, y + (n * g->cout + gi * g->mg) * sp, sp,
                         g->mg, gi * g->mg};
            sim_parallel_sized(call, fet_range, &j, (g->mg + SIM_NR - 1) / SIM_NR, (double)(sp * kdim * g->mg));
        }
    return 0;
}

typedef struct fe_job {
    const sim_conv_i8 *s;
    const sim_conv_geom *g;
    const float *xg, *wp; /* xg: the widened input (pointwise) */
    const int8_t *x8g;    /* the int8 input (im2col blocks widen it themselves) */
    int8_t *yg;
    sim_gemm_epi epi;
    float *pb;            /* n_threads slices of stride floats */
    size_t stride, pb_sz;
    int64_t nb;
} fe_job;

static void fe_pw_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const fe_job *j = arg;
    const sim_conv_geom *g = j->g;
    int64_t c0 = lo * SIM_NR, c1 = hi * SIM_NR < g->out_sz ? hi * SIM_NR : g->out_sz;
    sim_gemm_epi epi = j->epi;
    epi.c8 = j->yg + c0;
    sim_gemm_direct_b(j->s->avx2, j->wp, j->xg + c0, g->in_sz, g->mg, c1 - c0, j->s->kdim, NULL, 0, &epi,
                      j->pb + (size_t)tid * j->stride);
}

static void fe_gemm_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const fe_job *j = arg;
    const sim_conv_geom *g = j->g;
    const sim_conv_i8 *s = j->s;
    float *pb = j->pb + (size_t)tid * j->stride, *row = pb + j->pb_sz;
    int64_t *span = (int64_t *)(void *)(((uintptr_t)(row + j->nb) + 7u) & ~(uintptr_t)7u);
    col_seg *seg = (col_seg *)(void *)(span + 2 * g->k[2] * max_segs(g, j->nb));
    sim_gemm_epi epi = j->epi;
    for (int64_t b = lo; b < hi; b++) {
        int64_t j0 = b * j->nb, w = g->out_sz - j0 < j->nb ? g->out_sz - j0 : j->nb;
        int64_t ns = plan_block(g, j0, w, seg, span);
        conv_tap t = {0, 0, 0, 0};
        for (int64_t k = 0; k < s->kdim; k++, next_tap(g, &t)) {
            im2col_row_i8(s->avx2, g, j->x8g, s->zx, &t, seg, ns, span, NULL, row);
            sim_pack_b_row(row, k, s->kdim, w, pb);
        }
        sim_pack_b_pad(s->kdim, w, pb);
        epi.c8 = j->yg + j0;
        sim_gemm_packed(s->avx2, j->wp, pb, s->rows, w, s->kdim, NULL, 0, &epi);
    }
}

/* Exact-float mode: (x - zx) as floats, the float GEMM, requantised in its epilogue. */
static int run_float_exact(const sim_conv_i8 *s, const sim_conv_geom *g, const int8_t *x, int8_t *y,
                           sim_kernel_call *call)
{
    int pw = s->mode == I8_POINTWISE;
    size_t nx = pw ? (size_t)(g->n * g->cin * g->in_sz) : 0; /* the widened input (pointwise only) */
    int64_t nb = pw ? SIM_NR : sim_gemm_block_cols(s->kdim);
    if (nb > sim_round_up(g->out_sz, SIM_NR)) nb = sim_round_up(g->out_sz, SIM_NR);
    size_t pb_sz = sim_pack_b_size(s->kdim, nb), per = sim_pack_a_size(s->rows, s->kdim);
    size_t plan = pw ? 0 : ((size_t)max_segs(g, nb) * (2 * (size_t)g->k[2] * sizeof(int64_t) + sizeof(col_seg)) + 8u) / 4u + 1u;
    size_t stride = (pb_sz + (size_t)nb + plan + 15u) & ~(size_t)15u, nxr = (nx + 15u) & ~(size_t)15u;
    float *xf = sim_scratch_get(call, (nxr + stride * (size_t)sim_call_threads(call)) * sizeof(float));
    if (!xf) return SIM_ERR_MALLOC;
    float *pb = xf + nxr;
    if (pw) widen_all(call, s, x, xf, (int64_t)nx);
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gi = 0; gi < g->group; gi++) {
            int64_t xo = (n * g->cin + gi * g->cg) * g->in_sz;
            fe_job j = {s, g, pw ? xf + xo : NULL, s->fpack + (size_t)gi * per, x + xo,
                        y + (n * g->cout + gi * g->mg) * g->out_sz, {0}, pb, stride, pb_sz, nb};
            j.epi = (sim_gemm_epi){.q = &s->epi, .ldc8 = g->out_sz, .ch0 = gi * g->mg,
                                   .bias_row = s->fbias ? s->fbias + gi * g->mg : NULL};
            if (s->mode == I8_POINTWISE)
                sim_parallel_sized(call, fe_pw_range, &j, (g->out_sz + SIM_NR - 1) / SIM_NR, (double)(s->rows * g->out_sz * s->kdim));
            else
                sim_parallel_sized(call, fe_gemm_range, &j, (g->out_sz + nb - 1) / nb, (double)(s->rows * g->out_sz * s->kdim));
        }
    return 0;
}

int sim_conv_i8_run(const sim_conv_i8 *s, const sim_conv_geom *g, int transpose, sim_kernel_call *call)
{
    const int8_t *x = call->in[0].i8;
    int8_t *y = call->out[0].i8;
    if (!s || !x || !y) return SIM_ERR_FAIL;
    if (transpose) return run_transpose(s, g, x, y, call);
    if (s->mode == I8_DEPTHWISE) return run_depthwise(s, g, x, y, call);
    if (s->fpack_t) return run_float_exact_t(s, g, x, y, call);
    if (s->fpack) return run_float_exact(s, g, x, y, call);
    return run_gemm(s, g, x, y, call);
}
