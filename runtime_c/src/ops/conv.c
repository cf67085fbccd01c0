/*
 * Conv (float path): 1x1 stride-1 convolutions are a plain GEMM on the NCHW input, depthwise 2-D
 * convolutions have a direct kernel, everything else packs im2col rows straight into the GEMM's B
 * panels (no full im2col buffer). Weights are packed once in prepare.
 */
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "conv_i8.h"
#include "gemm_avx512.h"
#include "gemm_i8.h"
#include "gemm_kernel.h"
#include "requant_avx2.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

enum { CONV_GEMM = 0, CONV_POINTWISE = 1, CONV_DEPTHWISE = 2 };

typedef struct conv_priv {
    sim_conv_geom g;
    int mode;
    int avx2;
    sim_gemm_epi epi;     /* clamp used for fused Relu/Clip */
    int post_act;         /* other fused activations run after the GEMM */
    float *wpack;         /* group-major packed A panels (GEMM modes) */
    float *wpack_t;       /* pointwise with few output positions: W^T as packed B panels, or NULL */
    float *wdw;           /* depthwise weights [C][kh*kw] */
    float *wdw8;          /* the same in blocks of 8 channels (sim_dw8_pack), or NULL */
    float *bias;          /* cout entries */
    int64_t kc;           /* CONV_GEMM: K chunk length (wpack holds each chunk's panels in turn), kdim for one pass */
    sim_conv_i8 *i8;      /* int8 path state, NULL when the input is not INT8 */
} conv_priv;

static int check_dim(const char *what, const int64_t *v, uint32_t n, int64_t lo, const sim_op *op, char *err,
                     size_t len)
{
    for (uint32_t i = 0; i < n; i++)
        if (v[i] < lo) return sim_fail(err, len, op, "%s[%u] = %lld must be >= %lld", what, i, (long long)v[i],
                                       (long long)lo);
    return 0;
}

int sim_conv_geom_init(const sim_graph *gr, const sim_op *op, int transpose, sim_conv_geom *cg, char *err,
                       size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(gr, op, 0), *w = sim_in_tensor(gr, op, 1), *b = sim_in_tensor(gr, op, 2);
    const sim_tensor *y = sim_out_tensor(gr, op, 0);
    memset(cg, 0, sizeof *cg);
    if (!x || !w || !y || op->n_outputs != 1) return sim_fail(err, err_len, op, "needs inputs X, W and one output");
    if (x->n_dims < 3 || x->n_dims > 5)
        return sim_fail(err, err_len, op, "X %s must have 1-3 spatial dims", sim_shape_str(x, b1, sizeof b1));
    if (w->n_dims != x->n_dims || y->n_dims != x->n_dims)
        return sim_fail(err, err_len, op, "X %s, W %s and Y must have the same rank", sim_shape_str(x, b1, sizeof b1),
                        sim_shape_str(w, b2, sizeof b2));
    if (w->kind != SIM_T_CONST || !w->fdata)
        return sim_fail(err, err_len, op, "W must be a constant initializer (the NPU needs fixed weights)");
    int nsp = (int)x->n_dims - 2, off = 3 - nsp;
    cg->nsp = nsp;
    int64_t ks[3] = {1, 1, 1}, st[3] = {1, 1, 1}, dl[3] = {1, 1, 1}, pads[6] = {0}, opad[3] = {0};
    for (int d = 0; d < nsp; d++) ks[d] = w->dims[2 + d];
    uint32_t nk = sim_attr_ints(op, "kernel_shape", ks, 3);
    if (nk != 0 && nk != (uint32_t)nsp) return sim_fail(err, err_len, op, "kernel_shape has %u entries, expected %d", nk, nsp);
    for (int d = 0; d < nsp; d++)
        if (ks[d] != w->dims[2 + d])
            return sim_fail(err, err_len, op, "kernel_shape does not match W %s", sim_shape_str(w, b1, sizeof b1));
    uint32_t ns = sim_attr_ints(op, "strides", st, 3), nd = sim_attr_ints(op, "dilations", dl, 3);
    uint32_t np = sim_attr_ints(op, "pads", pads, 6), no = sim_attr_ints(op, "output_padding", opad, 3);
    if ((ns && ns != (uint32_t)nsp) || (nd && nd != (uint32_t)nsp) || (np && np != 2u * (uint32_t)nsp) ||
        (no && no != (uint32_t)nsp))
        return sim_fail(err, err_len, op, "strides/dilations/output_padding need %d entries and pads %d", nsp, 2 * nsp);
    int rc;
    if ((rc = check_dim("strides", st, (uint32_t)nsp, 1, op, err, err_len)) ||
        (rc = check_dim("dilations", dl, (uint32_t)nsp, 1, op, err, err_len)) ||
        (rc = check_dim("pads", pads, 2u * (uint32_t)nsp, 0, op, err, err_len)) ||
        (rc = check_dim("output_padding", opad, (uint32_t)nsp, 0, op, err, err_len)))
        return rc;
    int64_t group = sim_attr_int(op, "group", 1);
    cg->n = x->dims[0];
    cg->cin = x->dims[1];
    cg->group = group;
    if (group < 1 || cg->cin % group != 0)
        return sim_fail(err, err_len, op, "group %lld must divide the %lld input channels", (long long)group,
                        (long long)cg->cin);
    cg->cg = cg->cin / group;
    if (transpose) {
        if (w->dims[0] != cg->cin)
            return sim_fail(err, err_len, op, "W %s must have %lld input channels first", sim_shape_str(w, b1, sizeof b1),
                            (long long)cg->cin);
        cg->mg = w->dims[1];
        cg->cout = cg->mg * group;
    } else {
        cg->cout = w->dims[0];
        if (cg->cout % group != 0 || w->dims[1] != cg->cg)
            return sim_fail(err, err_len, op, "W %s does not fit X %s with group %lld", sim_shape_str(w, b1, sizeof b1),
                            sim_shape_str(x, b2, sizeof b2), (long long)group);
        cg->mg = cg->cout / group;
    }
    if (y->dims[0] != cg->n || y->dims[1] != cg->cout)
        return sim_fail(err, err_len, op, "Y %s must be [%lld,%lld,...]", sim_shape_str(y, b1, sizeof b1),
                        (long long)cg->n, (long long)cg->cout);
    cg->in_sz = cg->out_sz = cg->k_sz = 1;
    for (int d = 0; d < 3; d++) {
        int s = d - off; /* index into the model's spatial dims, < 0 for the padding dims */
        cg->in[d] = s >= 0 ? x->dims[2 + s] : 1;
        cg->out[d] = s >= 0 ? y->dims[2 + s] : 1;
        cg->k[d] = s >= 0 ? ks[s] : 1;
        cg->s[d] = s >= 0 ? st[s] : 1;
        cg->dl[d] = s >= 0 ? dl[s] : 1;
        cg->pb[d] = s >= 0 ? pads[s] : 0;
        cg->pe[d] = s >= 0 ? pads[s + nsp] : 0;
        cg->opad[d] = s >= 0 ? opad[s] : 0;
        int64_t ext = cg->dl[d] * (cg->k[d] - 1) + 1, expect;
        if (transpose)
            expect = cg->s[d] * (cg->in[d] - 1) + cg->opad[d] + ext - cg->pb[d] - cg->pe[d];
        else
            expect = (cg->in[d] + cg->pb[d] + cg->pe[d] - ext) / cg->s[d] + 1;
        if (!transpose && cg->in[d] + cg->pb[d] + cg->pe[d] < ext) expect = 0;
        if (expect < 1 || cg->out[d] != expect)
            return sim_fail(err, err_len, op, "Y %s: spatial dim %d should be %lld for X %s", sim_shape_str(y, b1, sizeof b1),
                            s, (long long)expect, sim_shape_str(x, b2, sizeof b2));
        cg->in_sz *= cg->in[d];
        cg->out_sz *= cg->out[d];
        cg->k_sz *= cg->k[d];
    }
    if (b && !(b->kind == SIM_T_CONST && b->fdata && b->n_elems == cg->cout))
        return sim_fail(err, err_len, op, "bias must be a constant of %lld values", (long long)cg->cout);
    return 0;
}

/* dst[i] = src[2 * i] for i < n (stride-2 im2col rows). */
static void gather_s2_c(const float *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = src[2 * i];
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void gather_s2_avx2(const float *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; 2 * i + 16 <= 2 * n - 1; i += 8) {
        /* the loads end at src[2 * i + 15] <= src[2 * n - 2], the last element the row needs */
        __m256 p = _mm256_loadu_ps(src + 2 * i), q = _mm256_loadu_ps(src + 2 * i + 8);
        __m256 ev = _mm256_shuffle_ps(p, q, _MM_SHUFFLE(2, 0, 2, 0));
        _mm256_storeu_ps(dst + i, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)));
    }
    gather_s2_c(src + 2 * i, dst + i, n - i);
}
#endif

void sim_valid_span(int64_t i0, int64_t step, int64_t size, int64_t n, int64_t *lo, int64_t *hi)
{
    int64_t a = i0 >= 0 ? 0 : (-i0 + step - 1) / step;
    int64_t b = size - i0 <= 0 ? 0 : (size - i0 + step - 1) / step;
    a = a > n ? n : a;
    b = b > n ? n : b;
    *lo = a;
    *hi = b > a ? b : a;
}

void sim_col2im_walk(const sim_conv_geom *g, int64_t kd, int64_t kh, int64_t kw, int64_t j0, int64_t n,
                     sim_col2im_add add, void *ctx)
{
    int64_t plane = g->in[1] * g->in[2];
    int64_t id = j0 / plane, rem = j0 % plane, ih = rem / g->in[2], iw = rem % g->in[2];
    for (int64_t j = 0; j < n;) {
        int64_t seg = g->in[2] - iw;
        if (seg > n - j) seg = n - j;
        int64_t od = id * g->s[0] - g->pb[0] + kd * g->dl[0];
        int64_t oh = ih * g->s[1] - g->pb[1] + kh * g->dl[1];
        if (od >= 0 && od < g->out[0] && oh >= 0 && oh < g->out[1]) {
            int64_t ow0 = iw * g->s[2] - g->pb[2] + kw * g->dl[2], lo, hi;
            sim_valid_span(ow0, g->s[2], g->out[2], seg, &lo, &hi);
            if (hi > lo) add(ctx, j, (od * g->out[1] + oh) * g->out[2], ow0, g->s[2], lo, hi);
        }
        j += seg;
        iw = 0;
        if (++ih == g->in[1]) {
            ih = 0;
            id++;
        }
    }
}

void sim_im2col_row(const sim_conv_geom *cg, const float *xg, int64_t k, int64_t j0, int64_t n, float *row)
{
    int64_t kw = k % cg->k[2], t = k / cg->k[2];
    int64_t kh = t % cg->k[1];
    t /= cg->k[1];
    int64_t kd = t % cg->k[0], c = t / cg->k[0];
    const float *xc = xg + c * cg->in_sz;
    int64_t plane = cg->out[1] * cg->out[2];
    int64_t od = j0 / plane, rem = j0 % plane, oh = rem / cg->out[2], ow = rem % cg->out[2];
    int64_t j = 0;
    while (j < n) {
        int64_t seg = cg->out[2] - ow;
        if (seg > n - j) seg = n - j;
        int64_t id = od * cg->s[0] - cg->pb[0] + kd * cg->dl[0];
        int64_t ih = oh * cg->s[1] - cg->pb[1] + kh * cg->dl[1];
        float *r = row + j;
        if (id < 0 || id >= cg->in[0] || ih < 0 || ih >= cg->in[1]) {
            memset(r, 0, (size_t)seg * sizeof(float));
        } else {
            const float *src = xc + (id * cg->in[1] + ih) * cg->in[2];
            int64_t iw0 = ow * cg->s[2] - cg->pb[2] + kw * cg->dl[2], sw = cg->s[2], lo, hi;
            sim_valid_span(iw0, sw, cg->in[2], seg, &lo, &hi);
            memset(r, 0, (size_t)lo * sizeof(float));
            if (sw == 1) {
                memcpy(r + lo, src + iw0 + lo, (size_t)(hi - lo) * sizeof(float));
            } else if (sw == 2) {
#if defined(__x86_64__) && defined(__GNUC__)
                if (SIM_CPU_AVX2())
                    gather_s2_avx2(src + iw0 + 2 * lo, r + lo, hi - lo);
                else
#endif
                    gather_s2_c(src + iw0 + 2 * lo, r + lo, hi - lo);
            } else {
                const float *s0 = src + iw0;
                for (int64_t x = lo; x < hi; x++) r[x] = s0[x * sw];
            }
            memset(r + hi, 0, (size_t)(seg - hi) * sizeof(float));
        }
        j += seg;
        ow = 0;
        if (++oh == cg->out[1]) {
            oh = 0;
            od++;
        }
    }
}

static void conv_release(sim_op *op)
{
    conv_priv *p = op->priv;
    if (!p) return;
    free(p->wpack);
    free(p->wpack_t);
    free(p->wdw);
    free(p->wdw8);
    free(p->bias);
    sim_conv_i8_free(p->i8);
    free(p);
    op->priv = NULL;
}

/* Fused Relu/Clip become the GEMM epilogue's clamp; other activations run afterwards. */
static void setup_epilogue(const sim_op *op, sim_gemm_epi *epi, int *post_act)
{
    memset(epi, 0, sizeof *epi);
    *post_act = 0;
    if (op->act == SIM_ACT_RELU) {
        epi->clamp = 1;
        epi->lo = 0.0f;
        epi->hi = __builtin_inff();
    } else if (op->act == SIM_ACT_CLIP) {
        epi->clamp = 1;
        epi->lo = op->act_p0;
        epi->hi = op->act_p1;
    } else if (op->act != SIM_ACT_NONE) {
        *post_act = 1;
    }
}

/* K chunk of the im2col GEMM. A long K (a 3x3 conv over 512 channels has 4608) would make a K x 64 slice
 * of B overflow L2 and force narrow column blocks, each streaming all the weights from memory; chunks of
 * at most CONV_KC_MAX keep the B chunk and the A panel chunk in cache and the blocks wide, with the
 * partial sums parked in Y between chunks (same fma chain, same bits). Not for one output channel: that
 * GEMM is the AVX2 gemv, whose summation order a split would change. */
#define CONV_KC_MAX 384
static int64_t conv_k_chunk(int64_t mg, int64_t kdim)
{
    if (mg < 2 || kdim <= CONV_KC_MAX) return kdim;
    int64_t n = (kdim + CONV_KC_MAX - 1) / CONV_KC_MAX;
    return (kdim + n - 1) / n;
}

static int conv_prepare(const sim_graph *gr, sim_op *op, char *err, size_t err_len)
{
    conv_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    op->priv = p;
    int rc = sim_conv_geom_init(gr, op, 0, &p->g, err, err_len);
    if (rc) {
        conv_release(op);
        return rc;
    }
    const sim_conv_geom *g = &p->g;
    const sim_tensor *w = sim_in_tensor(gr, op, 1), *b = sim_in_tensor(gr, op, 2);
    const sim_tensor *x = sim_in_tensor(gr, op, 0);
    p->avx2 = sim_cpu_has_avx2_fma();
    setup_epilogue(op, &p->epi, &p->post_act);
    p->bias = calloc((size_t)g->cout, sizeof(float));
    if (!p->bias) goto oom;
    if (b) memcpy(p->bias, b->fdata, (size_t)g->cout * sizeof(float));
    p->epi.bias_row = NULL;
    int64_t kdim = g->cg * g->k_sz;
    if (g->cg == 1 && g->mg == 1 && g->nsp <= 2 && g->k_sz > 1) {
        p->mode = CONV_DEPTHWISE;
        p->wdw = malloc((size_t)(g->cout * g->k_sz) * sizeof(float));
        if (!p->wdw) goto oom;
        memcpy(p->wdw, w->fdata, (size_t)(g->cout * g->k_sz) * sizeof(float));
        if (sim_dw8_usable(p->avx2, g) && !(p->wdw8 = sim_dw8_pack(g, p->wdw))) goto oom;
    } else {
        int pointwise = g->k_sz == 1;
        for (int d = 0; d < 3; d++) pointwise = pointwise && g->s[d] == 1 && g->pb[d] == 0 && g->pe[d] == 0;
        p->mode = pointwise ? CONV_POINTWISE : CONV_GEMM;
        size_t per_group = sim_pack_a_size(g->mg, kdim);
        p->wpack = malloc(per_group * (size_t)g->group * sizeof(float));
        if (!p->wpack) goto oom;
        p->kc = pointwise ? kdim : conv_k_chunk(g->mg, kdim);
        for (int64_t gi = 0; gi < g->group; gi++)
            for (int64_t k0 = 0; k0 < kdim; k0 += p->kc) {
                int64_t kn = kdim - k0 < p->kc ? kdim - k0 : p->kc;
                sim_pack_a(w->fdata + gi * g->mg * kdim + k0, kdim, 1, g->mg, kn,
                           p->wpack + (size_t)gi * per_group + (size_t)(sim_round_up(g->mg, SIM_MR) * k0));
            }
        /* Few output positions (7x7 = 49 fills 16-wide column tiles badly): compute Y^T = X^T W^T, with
         * the positions as 6-row panels and the channels as full 16-wide tiles. */
        int64_t waste_n = sim_round_up(g->out_sz, SIM_NR) - g->out_sz, waste_m = sim_round_up(g->out_sz, SIM_MR) - g->out_sz;
        if (pointwise && g->out_sz < 128 && waste_m * SIM_NR < waste_n * SIM_MR && g->mg % SIM_NR == 0) {
            size_t per_t = sim_pack_b_size(kdim, g->mg);
            p->wpack_t = malloc(per_t * (size_t)g->group * sizeof(float));
            if (!p->wpack_t) goto oom;
            for (int64_t gi = 0; gi < g->group; gi++)
                sim_pack_b(w->fdata + gi * g->mg * kdim, 1, kdim, kdim, g->mg, p->wpack_t + (size_t)gi * per_t);
        }
    }
    if (x->dtype == SIM_I8) {
        rc = sim_conv_i8_prepare(gr, op, g, 0, &p->i8, err, err_len);
        if (rc) {
            conv_release(op);
            return rc;
        }
    }
    return 0;
oom:
    conv_release(op);
    return sim_fail(err, err_len, op, "out of memory packing weights");
}

/* Direct depthwise convolution of one channel from its zero-padded plane (any kernel). */
static inline void dw_plane_generic(const sim_conv_geom *g, const float *pad, const float *w, float bias, float *y)
{
    int64_t oh = g->out[1], ow = g->out[2];
    int64_t pw = g->in[2] + g->pb[2] + g->pe[2];
    int64_t kh = g->k[1], kw = g->k[2], sh = g->s[1], sw = g->s[2], dh = g->dl[1], dw = g->dl[2];
    for (int64_t r = 0; r < oh; r++) {
        float *o = y + r * ow;
        for (int64_t c = 0; c < ow; c++) o[c] = bias;
        for (int64_t a = 0; a < kh; a++) {
            const float *src = pad + (r * sh + a * dh) * pw;
            for (int64_t b = 0; b < kw; b++) {
                float wv = w[a * kw + b];
                const float *s = src + b * dw;
                if (sw == 1) {
                    for (int64_t c = 0; c < ow; c++) o[c] += wv * s[c];
                } else {
                    for (int64_t c = 0; c < ow; c++) o[c] += wv * s[c * sw];
                }
            }
        }
    }
}

/* 3x3, stride 1: every output in one pass over three padded rows. */
static inline void dw3x3_s1(const sim_conv_geom *g, const float *pad, const float *w, float bias, float *y)
{
    int64_t oh = g->out[1], ow = g->out[2], pw = g->in[2] + g->pb[2] + g->pe[2];
    float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    for (int64_t r = 0; r < oh; r++) {
        const float *a = pad + r * pw, *b = a + pw, *c = b + pw;
        float *o = y + r * ow;
        for (int64_t x = 0; x < ow; x++)
            o[x] = bias + (w0 * a[x] + w1 * a[x + 1] + w2 * a[x + 2]) + (w3 * b[x] + w4 * b[x + 1] + w5 * b[x + 2]) +
                   (w6 * c[x] + w7 * c[x + 1] + w8 * c[x + 2]);
    }
}

/* 3x3, stride 2, on even/odd column planes (deinterleaved), so the loads stay contiguous. */
static inline void dw3x3_s2(const sim_conv_geom *g, const float *ev, const float *od, int64_t hw, const float *w,
                            float bias, float *y)
{
    int64_t oh = g->out[1], ow = g->out[2];
    float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];
    for (int64_t r = 0; r < oh; r++) {
        const float *ea = ev + 2 * r * hw, *eb = ea + hw, *ec = eb + hw;
        const float *oa = od + 2 * r * hw, *ob = oa + hw, *oc = ob + hw;
        float *o = y + r * ow;
        for (int64_t x = 0; x < ow; x++)
            o[x] = bias + (w0 * ea[x] + w1 * oa[x] + w2 * ea[x + 1]) + (w3 * eb[x] + w4 * ob[x] + w5 * eb[x + 1]) +
                   (w6 * ec[x] + w7 * oc[x] + w8 * ec[x + 1]);
    }
}

static inline void dw_plane_body(const sim_conv_geom *g, const float *pad, const float *w, float bias, float *y,
                                 float *tmp)
{
    int k33 = g->k[1] == 3 && g->k[2] == 3 && g->dl[1] == 1 && g->dl[2] == 1;
    if (k33 && g->s[1] == 1 && g->s[2] == 1) {
        dw3x3_s1(g, pad, w, bias, y);
    } else if (k33 && g->s[1] == 2 && g->s[2] == 2) {
        int64_t ph = g->in[1] + g->pb[1] + g->pe[1], pw = g->in[2] + g->pb[2] + g->pe[2], hw = (pw + 1) / 2;
        float *ev = tmp, *od = tmp + ph * hw;
        for (int64_t r = 0; r < ph; r++) {
            const float *src = pad + r * pw;
            float *e = ev + r * hw, *o = od + r * hw;
            for (int64_t c = 0; c < pw / 2; c++) {
                e[c] = src[2 * c];
                o[c] = src[2 * c + 1];
            }
            if (pw % 2) {
                e[hw - 1] = src[pw - 1];
                o[hw - 1] = 0.0f;
            }
        }
        dw3x3_s2(g, ev, od, hw, w, bias, y);
    } else {
        dw_plane_generic(g, pad, w, bias, y);
    }
}

static void dw_plane_c(const sim_conv_geom *g, const float *pad, const float *w, float bias, float *y, float *tmp)
{
    dw_plane_body(g, pad, w, bias, y, tmp);
}

/* Work space of one depthwise plane, in floats: the padded plane and a zero guard (vector loads of the
 * last row's tail read past it), the even/odd column planes of stride 2 and a guard, the output rows
 * at a pitch rounded up to 8. */
#define DW_GUARD 32
static void dw_layout(const sim_conv_geom *g, int64_t *plane, int64_t *tmp, int64_t *rows)
{
    int64_t ph = g->in[1] + g->pb[1] + g->pe[1], pw = g->in[2] + g->pb[2] + g->pe[2];
    *plane = ph * pw + DW_GUARD;
    *tmp = ph * (pw + 1) + DW_GUARD;
    *rows = g->out[1] * sim_round_up(g->out[2], 8) + 8;
}

size_t sim_dw_pad_elems(const sim_conv_geom *g)
{
    int64_t plane, tmp, rows;
    dw_layout(g, &plane, &tmp, &rows);
    return (size_t)(plane + tmp + rows);
}

size_t sim_dw_plane_zero_elems(const sim_conv_geom *g)
{
    int64_t plane, tmp, rows;
    dw_layout(g, &plane, &tmp, &rows);
    return (size_t)plane;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* Splits a padded row into its even and odd columns. */
__attribute__((target("avx2,fma"))) static void deinterleave_avx2(const float *src, int64_t pw, float *e, float *o,
                                                                  int64_t hw)
{
    int64_t c = 0;
    for (; 2 * c + 16 <= pw; c += 8) {
        __m256 p = _mm256_loadu_ps(src + 2 * c), q = _mm256_loadu_ps(src + 2 * c + 8);
        __m256 ev = _mm256_shuffle_ps(p, q, _MM_SHUFFLE(2, 0, 2, 0)), od = _mm256_shuffle_ps(p, q, _MM_SHUFFLE(3, 1, 3, 1));
        _mm256_storeu_ps(e + c, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8)));
        _mm256_storeu_ps(o + c, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xD8)));
    }
    for (; c < hw; c++) {
        e[c] = 2 * c < pw ? src[2 * c] : 0.0f;
        o[c] = 2 * c + 1 < pw ? src[2 * c + 1] : 0.0f;
    }
}

/* One output row of a kh x kw depthwise window, 8 columns per vector, up to 4 vectors per weight
 * broadcast. Tap (a, b) of column x reads src[a][x + b] for stride 1, or for stride 2 the even/odd
 * column plane of b at x + b / 2 (src[a] then points at the even row, src_o[a] at the odd one). Each
 * output is bias + its taps in (a, b) order, fused multiply-adds. The tail vector's extra lanes read
 * into the next row or the zero guard; they are never stored. */
__attribute__((target("avx2,fma"))) static void dw_row_avx2(const float *const *src, const float *const *src_o,
                                                            int64_t kh, int64_t kw, const float *w, float bias,
                                                            int64_t nv, float *o)
{
    int64_t v = 0;
    for (; v + 4 <= nv; v += 4) {
        __m256 c0 = _mm256_set1_ps(bias), c1 = c0, c2 = c0, c3 = c0;
        for (int64_t a = 0; a < kh; a++)
            for (int64_t b = 0; b < kw; b++) {
                const float *r = src_o ? ((b & 1) ? src_o[a] : src[a]) + b / 2 : src[a] + b;
                r += v * 8;
                __m256 wv = _mm256_broadcast_ss(w + a * kw + b);
                c0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r), c0);
                c1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r + 8), c1);
                c2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r + 16), c2);
                c3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(r + 24), c3);
            }
        _mm256_storeu_ps(o + v * 8, c0);
        _mm256_storeu_ps(o + v * 8 + 8, c1);
        _mm256_storeu_ps(o + v * 8 + 16, c2);
        _mm256_storeu_ps(o + v * 8 + 24, c3);
    }
    for (; v < nv; v++) {
        __m256 c0 = _mm256_set1_ps(bias);
        for (int64_t a = 0; a < kh; a++)
            for (int64_t b = 0; b < kw; b++) {
                const float *r = (src_o ? ((b & 1) ? src_o[a] : src[a]) + b / 2 : src[a] + b) + v * 8;
                c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + a * kw + b), _mm256_loadu_ps(r), c0);
            }
        _mm256_storeu_ps(o + v * 8, c0);
    }
}

#define DW_MAX_K 11

/* Any kernel up to 11x11, dilation 1, stride 1 or 2: rows into `rows` (pitch round_up(ow, 8)), then
 * stored to y (clamped) or requantised into y8 (q: bias already in the sums). */
__attribute__((target("avx2,fma"))) static int dw_rows_avx2(const sim_conv_geom *g, const float *pad, const float *w,
                                                            float bias, float *y, float *tmp, float *rows,
                                                            const float *lohi, const sim_i8_epi *q, int64_t ch,
                                                            int8_t *y8)
{
    int64_t oh = g->out[1], ow = g->out[2], kh = g->k[1], kw = g->k[2], sh = g->s[1];
    int64_t ph = g->in[1] + g->pb[1] + g->pe[1], pw = g->in[2] + g->pb[2] + g->pe[2];
    int64_t pitch = sim_round_up(ow, 8), nv = pitch / 8;
    const float *src[DW_MAX_K], *src_o[DW_MAX_K];
    const float *ev = pad, *od = NULL;
    int64_t rp = pw; /* row pitch of the planes read */
    if (sh == 2) {
        int64_t hw = (pw + 1) / 2;
        float *e = tmp, *o = tmp + ph * hw;
        for (int64_t r = 0; r < ph; r++) deinterleave_avx2(pad + r * pw, pw, e + r * hw, o + r * hw, hw);
        memset(o + ph * hw, 0, DW_GUARD * sizeof(float));
        ev = e;
        od = o;
        rp = hw;
    }
    for (int64_t r = 0; r < oh; r++) {
        for (int64_t a = 0; a < kh; a++) {
            src[a] = ev + (r * sh + a) * rp;
            if (od) src_o[a] = od + (r * sh + a) * rp;
        }
        dw_row_avx2(src, od ? src_o : NULL, kh, kw, w, bias, nv, rows + r * pitch);
    }
    if (q) {
        sim_i8_epi e = *q;
        e.bias = NULL;
        for (int64_t r = 0; r < oh; r++) sim_i8_requant_plane(1, &e, rows + r * pitch, ow, ch, y8 + r * ow);
        return 1;
    }
    __m256 lo = _mm256_set1_ps(lohi ? lohi[0] : 0.0f), hi = _mm256_set1_ps(lohi ? lohi[1] : 0.0f);
    for (int64_t r = 0; r < oh; r++) {
        const float *s0 = rows + r * pitch;
        float *o = y + r * ow;
        int64_t x = 0;
        for (; x + 8 <= ow; x += 8) {
            __m256 v = _mm256_loadu_ps(s0 + x);
            if (lohi) v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
            _mm256_storeu_ps(o + x, v);
        }
        for (; x < ow; x++) {
            float v = s0[x];
            if (lohi) {
                v = v < lohi[0] ? lohi[0] : v;
                v = v > lohi[1] ? lohi[1] : v;
            }
            o[x] = v;
        }
    }
    return 0;
}

__attribute__((target("avx2,fma"))) static int dw_plane_avx2(const sim_conv_geom *g, const float *pad, const float *w,
                                                             float bias, float *y, float *tmp, float *rows,
                                                             const float *lohi, const sim_i8_epi *q, int64_t ch,
                                                             int8_t *y8)
{
    if (g->dl[1] == 1 && g->dl[2] == 1 && g->k[1] <= DW_MAX_K && g->k[2] <= DW_MAX_K && g->s[1] == g->s[2] &&
        (g->s[1] == 1 || g->s[1] == 2))
        return dw_rows_avx2(g, pad, w, bias, y, tmp, rows, lohi, q, ch, y8);
    int64_t oh = g->out[1], ow = g->out[2];
    dw_plane_body(g, pad, w, bias, y, tmp);
    if (lohi) sim_act_array(SIM_ACT_CLIP, lohi[0], lohi[1], y, (size_t)(oh * ow));
    return 0;
}

/* ---- Depthwise on blocks of 8 channels: the 8 channels of a block are the 8 lanes of a vector, so
 * every lane is used whatever the plane width, strided taps need no deinterleaving and one call does
 * 8 planes. The block's padded input is interleaved, P[row][col][lane] (zero border, value - zx for
 * int8), the outputs O[pos][lane]; each output is bias + its taps in (a, b) order by fused
 * multiply-adds, the same bits as the row kernel above. */
static void dw8_layout(const sim_conv_geom *g, int64_t *pn, int64_t *on)
{
    int64_t ph = g->in[1] + g->pb[1] + g->pe[1], pw = g->in[2] + g->pb[2] + g->pe[2];
    *pn = ph * pw * 8 + 64; /* guard: the partial 8-position blocks read up to 6 columns past the end */
    *on = g->out_sz * 8 + 64;
}

/* In-register transpose of 8 rows of 8 floats. */
__attribute__((target("avx2,fma"), always_inline)) static inline void tr8_avx2(__m256 *r)
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Interior of P from nc channel planes (float xf or int8 x8 - zx, channel stride in_sz); lanes >= nc
 * are zero. The planes are walked flat, 8 positions of every channel per transpose, so narrow planes
 * (7 or 14 wide) take the vector path too. */
__attribute__((target("avx2,fma"))) static void dw8_fill(const sim_conv_geom *g, const float *xf, const int8_t *x8,
                                                         float zx, int64_t nc, float *P)
{
    int64_t iw = g->in[2], pw = iw + g->pb[2] + g->pe[2], isz = g->in_sz;
    __m256 z = _mm256_set1_ps(zx);
    float *base = P + (g->pb[1] * pw + g->pb[2]) * 8;
    int64_t p = 0, r = 0, c = 0; /* p = r * iw + c */
    for (; p + 8 <= isz; p += 8) {
        __m256 v[8];
        for (int64_t l = 0; l < 8; l++) {
            if (l >= nc) {
                v[l] = _mm256_setzero_ps();
            } else if (x8) {
                __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(x8 + l * isz + p));
                v[l] = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), z);
            } else {
                v[l] = _mm256_loadu_ps(xf + l * isz + p);
            }
        }
        tr8_avx2(v);
        for (int j = 0; j < 8; j++) {
            _mm256_storeu_ps(base + (r * pw + c) * 8, v[j]);
            if (++c == iw) {
                c = 0;
                r++;
            }
        }
    }
    for (; p < isz; p++) {
        for (int64_t l = 0; l < 8; l++)
            base[(r * pw + c) * 8 + l] = l >= nc ? 0.0f : x8 ? (float)x8[l * isz + p] - zx : xf[l * isz + p];
        if (++c == iw) {
            c = 0;
            r++;
        }
    }
}

/* O from P: K x K (K = 3 or 5 after inlining, else 0 with the geometry's kh x kw), eight positions of
 * a row at a time (eight independent FMA chains hide the FMA latency), then four, then one. */
#define DW8_TAP(n) c##n = _mm256_fmadd_ps(wv, _mm256_loadu_ps(q + (n) * sw * 8), c##n)
__attribute__((target("avx2,fma"), always_inline)) static inline void dw8_compute(const sim_conv_geom *g, const int K,
                                                                                const float *P, const float *W,
                                                                                __m256 bias, float *O)
{
    int64_t oh = g->out[1], ow = g->out[2], pw = g->in[2] + g->pb[2] + g->pe[2];
    int64_t kh = K ? K : g->k[1], kw = K ? K : g->k[2], sh = g->s[1], sw = g->s[2];
    for (int64_t oy = 0; oy < oh; oy++) {
        const float *rb = P + oy * sh * pw * 8;
        float *o = O + oy * ow * 8;
        int64_t x = 0;
        /* with 5 to 7 positions left the block still takes 8: the extra ones read on into the next
         * row (or P's guard) and land on the next row's first outputs (or O's guard), which are
         * written later */
        for (; x + 5 <= ow; x += 8) {
            __m256 c0 = bias, c1 = bias, c2 = bias, c3 = bias, c4 = bias, c5 = bias, c6 = bias, c7 = bias;
            for (int64_t a = 0; a < kh; a++) {
                const float *ra = rb + a * pw * 8 + x * sw * 8;
                for (int64_t b = 0; b < kw; b++) {
                    __m256 wv = _mm256_loadu_ps(W + (a * kw + b) * 8);
                    const float *q = ra + b * 8;
                    DW8_TAP(0);
                    DW8_TAP(1);
                    DW8_TAP(2);
                    DW8_TAP(3);
                    DW8_TAP(4);
                    DW8_TAP(5);
                    DW8_TAP(6);
                    DW8_TAP(7);
                }
            }
            _mm256_storeu_ps(o + x * 8, c0);
            _mm256_storeu_ps(o + x * 8 + 8, c1);
            _mm256_storeu_ps(o + x * 8 + 16, c2);
            _mm256_storeu_ps(o + x * 8 + 24, c3);
            _mm256_storeu_ps(o + x * 8 + 32, c4);
            _mm256_storeu_ps(o + x * 8 + 40, c5);
            _mm256_storeu_ps(o + x * 8 + 48, c6);
            _mm256_storeu_ps(o + x * 8 + 56, c7);
        }
        for (; x + 4 <= ow; x += 4) {
            __m256 c0 = bias, c1 = bias, c2 = bias, c3 = bias;
            for (int64_t a = 0; a < kh; a++) {
                const float *ra = rb + a * pw * 8 + x * sw * 8;
                for (int64_t b = 0; b < kw; b++) {
                    __m256 wv = _mm256_loadu_ps(W + (a * kw + b) * 8);
                    const float *q = ra + b * 8;
                    DW8_TAP(0);
                    DW8_TAP(1);
                    DW8_TAP(2);
                    DW8_TAP(3);
                }
            }
            _mm256_storeu_ps(o + x * 8, c0);
            _mm256_storeu_ps(o + x * 8 + 8, c1);
            _mm256_storeu_ps(o + x * 8 + 16, c2);
            _mm256_storeu_ps(o + x * 8 + 24, c3);
        }
        for (; x < ow; x++) {
            __m256 c0 = bias;
            for (int64_t a = 0; a < kh; a++)
                for (int64_t b = 0; b < kw; b++)
                    c0 = _mm256_fmadd_ps(_mm256_loadu_ps(W + (a * kw + b) * 8),
                                         _mm256_loadu_ps(rb + (a * pw + x * sw + b) * 8), c0);
            _mm256_storeu_ps(o + x * 8, c0);
        }
    }
}
#undef DW8_TAP

__attribute__((target("avx2,fma"))) static void dw8_compute_k3(const sim_conv_geom *g, const float *P, const float *W,
                                                               __m256 bias, float *O)
{
    dw8_compute(g, 3, P, W, bias, O);
}
__attribute__((target("avx2,fma"))) static void dw8_compute_k5(const sim_conv_geom *g, const float *P, const float *W,
                                                               __m256 bias, float *O)
{
    dw8_compute(g, 5, P, W, bias, O);
}
__attribute__((target("avx2,fma"))) static void dw8_compute_any(const sim_conv_geom *g, const float *P, const float *W,
                                                                __m256 bias, float *O)
{
    dw8_compute(g, 0, P, W, bias, O);
}

/* O back to nc planes at dst + l * out_sz, clamped to lohi when given; or, with q (a linear or clamp
 * activation), requantised straight into y8 + l * out_sz as channel ch0 + l: the 8-position chunks
 * from the plane's start through the vector requantisation and the rest through
 * sim_i8_requant_plane, which are the codes sim_i8_requant_plane gives on the whole plane. Lanes whose
 * bit is set in fold have their bias in the sums already. */
__attribute__((target("avx2,fma"))) static void dw8_store(const sim_conv_geom *g, const float *O, int64_t nc,
                                                          const float *lohi, float *dst, const sim_i8_epi *q,
                                                          unsigned fold, int64_t ch0, int8_t *y8)
{
    int64_t n = g->out_sz;
    __m256 lo = _mm256_set1_ps(lohi ? lohi[0] : 0.0f), hi = _mm256_set1_ps(lohi ? lohi[1] : 0.0f);
    __m256i qb[8];
    __m256 qm[8], qlo = _mm256_set1_ps(q ? q->qlo : 0.0f), qhi = _mm256_set1_ps(q ? q->qhi : 0.0f);
    __m256 qz = _mm256_set1_ps(q ? (float)q->zo : 0.0f);
    if (q)
        for (int64_t l = 0; l < nc; l++) {
            qb[l] = _mm256_set1_epi32(((fold >> l) & 1u) || !q->bias ? 0 : q->bias[ch0 + l]);
            qm[l] = _mm256_set1_ps(q->mult[ch0 + l]);
        }
    int64_t p = 0;
    for (; p + 8 <= n; p += 8) {
        __m256 v[8];
        for (int j = 0; j < 8; j++) v[j] = _mm256_loadu_ps(O + (p + j) * 8);
        tr8_avx2(v);
        for (int64_t l = 0; l < nc; l++) {
            if (q) {
                sim_requant8_avx2(v[l], qb[l], qm[l], qlo, qhi, qz, y8 + l * n + p);
                continue;
            }
            __m256 t = lohi ? _mm256_min_ps(hi, _mm256_max_ps(lo, v[l])) : v[l];
            _mm256_storeu_ps(dst + l * n + p, t);
        }
    }
    if (q) {
        for (int64_t l = 0; l < nc && p < n; l++) {
            float tail[8];
            for (int64_t e = p; e < n; e++) tail[e - p] = O[e * 8 + l];
            sim_i8_epi ep = *q;
            if ((fold >> l) & 1u) ep.bias = NULL;
            sim_i8_requant_plane(1, &ep, tail, n - p, ch0 + l, y8 + l * n + p);
        }
        return;
    }
    for (; p < n; p++)
        for (int64_t l = 0; l < nc; l++) {
            float t = O[p * 8 + l];
            if (lohi) {
                t = t < lohi[0] ? lohi[0] : t;
                t = t > lohi[1] ? lohi[1] : t;
            }
            dst[l * n + p] = t;
        }
}

__attribute__((target("avx2,fma"))) static void dw8_block_avx2(const sim_conv_geom *g, const float *xf, const int8_t *x8,
                                                               float zx, int64_t nc, const float *w8, const float *b8,
                                                               float *scr, const float *lohi, float *dst,
                                                               const sim_i8_epi *q, unsigned fold, int64_t ch0,
                                                               int8_t *y8)
{
    int64_t pn, on;
    dw8_layout(g, &pn, &on);
    float *P = scr, *O = scr + pn;
    dw8_fill(g, xf, x8, zx, nc, P);
    __m256 bv = _mm256_loadu_ps(b8);
    int sq = g->k[1] == g->k[2];
    if (sq && g->k[1] == 3)
        dw8_compute_k3(g, P, w8, bv, O);
    else if (sq && g->k[1] == 5)
        dw8_compute_k5(g, P, w8, bv, O);
    else
        dw8_compute_any(g, P, w8, bv, O);
    dw8_store(g, O, nc, lohi, dst, q, fold, ch0, y8);
}
#endif

int sim_dw_plane(int avx2, const sim_conv_geom *g, const float *pad, const float *w, float bias, float *y,
                 const float *lohi, const sim_i8_epi *q, int64_t ch, int8_t *y8)
{
    int64_t plane, tmpn, rows;
    dw_layout(g, &plane, &tmpn, &rows);
    float *tmp = (float *)pad + plane;
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx2) return dw_plane_avx2(g, pad, w, bias, y, tmp, tmp + tmpn, lohi, q, ch, y8);
#endif
    (void)avx2;
    (void)q;
    (void)ch;
    (void)y8;
    dw_plane_c(g, pad, w, bias, y, tmp);
    if (lohi) sim_act_array(SIM_ACT_CLIP, lohi[0], lohi[1], y, (size_t)(g->out[1] * g->out[2]));
    return 0;
}


int sim_dw8_usable(int avx2, const sim_conv_geom *g)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* the row kernel's cases (dw_plane_avx2), whose bits it keeps */
    return avx2 && g->k[0] == 1 && g->dl[1] == 1 && g->dl[2] == 1 && g->k[1] <= DW_MAX_K && g->k[2] <= DW_MAX_K &&
           g->s[1] == g->s[2] && (g->s[1] == 1 || g->s[1] == 2);
#else
    (void)avx2;
    (void)g;
    return 0;
#endif
}

void sim_dw8_zero(const sim_conv_geom *g, float *scr)
{
    int64_t ph = g->in[1] + g->pb[1] + g->pe[1], pw = g->in[2] + g->pb[2] + g->pe[2], row = pw * 8;
    int64_t top = g->pb[1], bot = g->pb[1] + g->in[1];
    memset(scr, 0, (size_t)(top * row) * sizeof(float));
    for (int64_t r = top; r < bot; r++) {
        memset(scr + r * row, 0, (size_t)(g->pb[2] * 8) * sizeof(float));
        memset(scr + r * row + (g->pb[2] + g->in[2]) * 8, 0, (size_t)(g->pe[2] * 8) * sizeof(float));
    }
    memset(scr + bot * row, 0, (size_t)((ph - bot) * row + 64) * sizeof(float));
}

size_t sim_dw8_scratch_elems(const sim_conv_geom *g, size_t *zero_elems)
{
    int64_t pn = 0, on = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    dw8_layout(g, &pn, &on);
#else
    (void)g;
#endif
    *zero_elems = (size_t)pn;
    return (size_t)(pn + on);
}

void sim_dw8_block(const sim_conv_geom *g, const float *xf, const int8_t *x8, float zx, int64_t nc, const float *w8,
                   const float *b8, float *scr, const float *lohi, float *dst)
{
#if defined(__x86_64__) && defined(__GNUC__)
    dw8_block_avx2(g, xf, x8, zx, nc, w8, b8, scr, lohi, dst, NULL, 0, 0, NULL);
#else
    (void)g, (void)xf, (void)x8, (void)zx, (void)nc, (void)w8, (void)b8, (void)scr, (void)lohi, (void)dst;
#endif
}

void sim_dw8_block_i8(const sim_conv_geom *g, const int8_t *x8, float zx, int64_t nc, const float *w8, const float *b8,
                      float *scr, const sim_i8_epi *q, unsigned fold, int64_t ch0, int8_t *y8)
{
#if defined(__x86_64__) && defined(__GNUC__)
    dw8_block_avx2(g, NULL, x8, zx, nc, w8, b8, scr, NULL, NULL, q, fold, ch0, y8);
#else
    (void)g, (void)x8, (void)zx, (void)nc, (void)w8, (void)b8, (void)scr, (void)q, (void)fold, (void)ch0, (void)y8;
#endif
}

float *sim_dw8_pack(const sim_conv_geom *g, const float *w)
{
    int64_t nb = (g->cout + 7) / 8, ksz = g->k_sz;
    float *w8 = calloc((size_t)(nb * ksz * 8), sizeof(float));
    if (!w8) return NULL;
    for (int64_t c = 0; c < g->cout; c++)
        for (int64_t t = 0; t < ksz; t++) w8[((c / 8) * ksz + t) * 8 + c % 8] = w[c * ksz + t];
    return w8;
}

/* Copies one input plane into the interior of the padded plane (its zero border is written once). */
static void pad_plane_f32(const sim_conv_geom *g, const float *x, float *pad)
{
    int64_t ih = g->in[1], iw = g->in[2], pw = iw + g->pb[2] + g->pe[2];
    for (int64_t r = 0; r < ih; r++)
        memcpy(pad + (r + g->pb[1]) * pw + g->pb[2], x + r * iw, (size_t)iw * sizeof(float));
}

/* Parallel jobs: each range of channels / column tiles / column blocks writes only its own outputs,
 * with per-thread scratch slices, so results do not depend on the thread count. */
typedef struct dw_job {
    const conv_priv *p;
    const float *x;
    float *y;
    int f16;              /* round each plane to binary16 while it is in cache */
    float *pad;           /* n_threads slices of pad_stride floats */
    size_t pad_stride;
    int blocks;           /* items are blocks of 8 channels (sim_dw8_block), else channels */
} dw_job;

static void dw_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const dw_job *j = arg;
    const conv_priv *p = j->p;
    const sim_conv_geom *g = &p->g;
    float *pad = j->pad + (size_t)tid * j->pad_stride;
    float lohi[2] = {p->epi.lo, p->epi.hi};
    if (j->blocks) {
        sim_dw8_zero(g, pad);
        int64_t nb = (g->cout + 7) / 8;
        for (int64_t e = lo; e < hi; e++) {
            int64_t n = e / nb, c = (e % nb) * 8, nc = g->cout - c < 8 ? g->cout - c : 8;
            float b8[8] = {0};
            memcpy(b8, p->bias + c, (size_t)nc * sizeof(float));
            float *yc = j->y + (n * g->cout + c) * g->out_sz;
            sim_dw8_block(g, j->x + (n * g->cin + c) * g->in_sz, NULL, 0.0f, nc, p->wdw8 + c * g->k_sz, b8, pad,
                          p->epi.clamp ? lohi : NULL, yc);
            if (j->f16) sim_round_f16_array(yc, (size_t)(g->out_sz * nc));
        }
        return;
    }
    memset(pad, 0, sim_dw_plane_zero_elems(g) * sizeof(float));
    for (int64_t e = lo; e < hi; e++) {
        int64_t n = e / g->cout, c = e % g->cout;
        pad_plane_f32(g, j->x + (n * g->cin + c) * g->in_sz, pad);
        float *yc = j->y + (n * g->cout + c) * g->out_sz;
        sim_dw_plane(p->avx2, g, pad, p->wdw + c * g->k_sz, p->bias[c], yc, p->epi.clamp ? lohi : NULL, NULL, 0, NULL);
        if (j->f16) sim_round_f16_array(yc, (size_t)g->out_sz);
    }
}

static int run_depthwise(const conv_priv *p, const float *x, float *y, int f16, sim_kernel_call *call)
{
    const sim_conv_geom *g = &p->g;
    int nt = sim_call_threads(call);
    size_t zn, n8 = sim_dw8_scratch_elems(g, &zn), n1 = sim_dw_pad_elems(g);
    size_t stride = ((n8 > n1 ? n8 : n1) + 15u) & ~(size_t)15u;
    float *pad = sim_scratch_get(call, stride * (size_t)nt * sizeof(float));
    if (!pad) return SIM_ERR_MALLOC;
    dw_job j = {p, x, y, f16, pad, stride, p->wdw8 != NULL};
    int64_t items = g->n * (j.blocks ? (g->cout + 7) / 8 : g->cout);
    sim_parallel_sized(call, dw_range, &j, items, (double)(g->n * g->cout * g->out_sz * g->k_sz));
    return 0;
}

typedef struct pwt_job {
    const conv_priv *p;
    const float *pa, *pb;
    float *ct, *yg;
    const float *bias;
    int64_t sp, kdim, mg;
    int f16;
} pwt_job;

/* Column tiles [lo, hi) of Y^T (= output channels), then their transposition into Y. */
static void pwt_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const pwt_job *j = arg;
    const conv_priv *p = j->p;
    int64_t c0 = lo * SIM_NR, c1 = hi * SIM_NR < j->mg ? hi * SIM_NR : j->mg;
    sim_gemm_epi none;
    memset(&none, 0, sizeof none);
    (void)tid;
    sim_gemm_packed(p->avx2, j->pa, j->pb + c0 * j->kdim, j->sp, c1 - c0, j->kdim, j->ct + c0, j->mg, &none);
    for (int64_t oc = c0; oc < c1; oc++) {
        float b = j->bias[oc];
        float *yo = j->yg + oc * j->sp;
        for (int64_t i = 0; i < j->sp; i++) yo[i] = j->ct[i * j->mg + oc] + b;
        if (p->epi.clamp) sim_act_array(SIM_ACT_CLIP, p->epi.lo, p->epi.hi, yo, (size_t)j->sp);
        if (j->f16) sim_round_f16_array(yo, (size_t)j->sp);
    }
}

/* Pointwise convolution as Y^T = X^T W^T into scratch, then transposed into Y with bias and clamp. */
static int run_pointwise_t(const conv_priv *p, const float *x, float *y, int f16, sim_kernel_call *call)
{
    const sim_conv_geom *g = &p->g;
    int64_t kdim = g->cg, sp = g->out_sz;
    size_t pa_sz = sim_pack_a_size(sp, kdim), per_t = sim_pack_b_size(kdim, g->mg);
    float *pa = sim_scratch_get(call, (pa_sz + (size_t)(sp * g->mg)) * sizeof(float));
    if (!pa) return SIM_ERR_MALLOC;
    float *ct = pa + pa_sz;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gi = 0; gi < g->group; gi++) {
            const float *xg = x + (n * g->cin + gi * g->cg) * g->in_sz;
            sim_pack_a(xg, 1, g->in_sz, sp, kdim, pa);
            pwt_job j = {p, pa, p->wpack_t + (size_t)gi * per_t, ct, y + (n * g->cout + gi * g->mg) * sp,
                         p->bias + gi * g->mg, sp, kdim, g->mg, f16};
            sim_parallel_sized(call, pwt_range, &j, (g->mg + SIM_NR - 1) / SIM_NR, (double)(sp * kdim * g->mg));
        }
    return 0;
}

typedef struct gemm_job {
    const conv_priv *p;
    const float *xg, *wp;
    float *yg;
    sim_gemm_epi epi;
    float *pb;            /* n_threads slices of pb_stride floats */
    size_t pb_stride, pb_sz;
    int64_t nb, kdim;
} gemm_job;

/* Pointwise: column tiles [lo, hi) of the output positions, B read in place. */
static void pw_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const gemm_job *j = arg;
    const sim_conv_geom *g = &j->p->g;
    int64_t c0 = lo * SIM_NR, c1 = hi * SIM_NR < g->out_sz ? hi * SIM_NR : g->out_sz;
    sim_gemm_direct_b(j->p->avx2, j->wp, j->xg + c0, g->in_sz, g->mg, c1 - c0, j->kdim, j->yg + c0, g->out_sz,
                      &j->epi, j->pb + (size_t)tid * j->pb_stride);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SIM_FORCE_GENERIC)
#define CONV_PANEL_IM2COL 1
/* One run of a B panel row: lanes [lane, lane + n) are output positions (od, oh, ow0 + x) of one output
 * row; id0/ih0/iw0 are their input coordinates at tap (0, 0, 0). */
typedef struct im2col_run {
    int32_t lane, n;
    int64_t id0, ih0, iw0;
} im2col_run;
#define IM2COL_RUNS_PER_PANEL 4 /* output rows of >= 5 positions: a 16-wide panel holds at most 4 of them */
#define IM2COL_MAX_PANELS 64    /* sim_gemm_block_cols caps blocks at 1024 columns */

/* The panel writer's cases: AVX-512, stride 1 or 2 along W (2 spreads its masks with BMI2's pdep), output
 * rows of >= 5 positions. */
static int panel_im2col_usable(const sim_conv_geom *g, int64_t nb)
{
    return sim_gemm_avx512_on() && (g->s[2] == 1 || (g->s[2] == 2 && __builtin_cpu_supports("bmi2"))) &&
           g->out[2] >= 5 && nb <= IM2COL_MAX_PANELS * SIM_NR;
}

/* Splits the columns [j0, j0 + w) into runs, IM2COL_RUNS_PER_PANEL slots per panel; nrun[q] counts them. */
static void panel_runs(const sim_conv_geom *g, int64_t j0, int64_t w, im2col_run *runs, int *nrun)
{
    int64_t plane = g->out[1] * g->out[2];
    for (int64_t q = 0; q * SIM_NR < w; q++) {
        int64_t c = q * SIM_NR, end = c + SIM_NR < w ? c + SIM_NR : w;
        int nr = 0;
        while (c < end) {
            int64_t pos = j0 + c, od = pos / plane, rem = pos % plane, oh = rem / g->out[2], ow = rem % g->out[2];
            int64_t n = g->out[2] - ow < end - c ? g->out[2] - ow : end - c;
            im2col_run *r = &runs[q * IM2COL_RUNS_PER_PANEL + nr++];
            r->lane = (int32_t)(c - q * SIM_NR);
            r->n = (int32_t)n;
            r->id0 = od * g->s[0] - g->pb[0];
            r->ih0 = oh * g->s[1] - g->pb[1];
            r->iw0 = ow * g->s[2] - g->pb[2];
            c += n;
        }
        nrun[q] = nr;
    }
}

/* Rows [k0, k0 + kn) of the im2col matrix for the block's columns, written straight into packed B panels
 * (panel stride kn * 16, padding columns zero) with masked vector loads: the same values, one pass. Rows
 * go tap by tap (kd, kh, kw): each run's lane mask and source offset depend on the tap only, so they are
 * worked out once per tap and then serve every channel of the chunk. A lane outside the input is masked
 * off (its address never touched) and stays +0, as the padding in sim_im2col_row. */
__attribute__((target("avx512f,bmi2"))) static void panel_im2col(const sim_conv_geom *g, const float *xg, int64_t k0,
                                                                 int64_t kn, int64_t w, const im2col_run *runs,
                                                                 const int *nrun, float *pb)
{
    int64_t np = (w + SIM_NR - 1) / SIM_NR, sw = g->s[2], ksz = g->k_sz;
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __mmask16 mk[IM2COL_MAX_PANELS * IM2COL_RUNS_PER_PANEL], mlo[IM2COL_MAX_PANELS * IM2COL_RUNS_PER_PANEL];
    __mmask16 mhi[IM2COL_MAX_PANELS * IM2COL_RUNS_PER_PANEL];
    int64_t off[IM2COL_MAX_PANELS * IM2COL_RUNS_PER_PANEL];
    for (int64_t tap = 0; tap < ksz; tap++) {
        int64_t c_lo = k0 > tap ? (k0 - tap + ksz - 1) / ksz : 0, c_hi = (k0 + kn - tap + ksz - 1) / ksz;
        if (c_hi > g->cg) c_hi = g->cg;
        if (c_lo >= c_hi) continue;
        int64_t kw = tap % g->k[2], t = tap / g->k[2], kh = t % g->k[1], kd = t / g->k[1];
        int64_t dd = kd * g->dl[0], dh = kh * g->dl[1], dw = kw * g->dl[2];
        for (int64_t q = 0; q < np; q++)
            for (int e = 0; e < nrun[q]; e++) {
                int64_t i = q * IM2COL_RUNS_PER_PANEL + e, lo, hi;
                const im2col_run *r = &runs[i];
                int64_t id = r->id0 + dd, ih = r->ih0 + dh, iw = r->iw0 + dw;
                mk[i] = 0;
                if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1]) continue;
                sim_valid_span(iw, sw, g->in[2], r->n, &lo, &hi);
                if (hi <= lo) continue;
                /* lane L (= r->lane + x) reads src[x * sw]: the offset is src's shifted back by lane * sw */
                off[i] = (id * g->in[1] + ih) * g->in[2] + iw - r->lane * sw;
                mk[i] = (__mmask16)((((1u << (hi - lo)) - 1u) << (r->lane + lo)) & 0xFFFFu);
                if (sw == 2) { /* lane L reads element 2L of the pair of loads */
                    mlo[i] = (__mmask16)_pdep_u32(mk[i] & 0xFFu, 0x5555u);
                    mhi[i] = (__mmask16)_pdep_u32((unsigned)mk[i] >> 8, 0x5555u);
                }
            }
        for (int64_t c = c_lo; c < c_hi; c++) {
            uintptr_t xc = (uintptr_t)(xg + c * g->in_sz);
            float *dst = pb + (c * ksz + tap - k0) * SIM_NR;
            for (int64_t q = 0; q < np; q++) {
                __m512 v = _mm512_setzero_ps();
                for (int e = 0; e < nrun[q]; e++) {
                    int64_t i = q * IM2COL_RUNS_PER_PANEL + e;
                    if (!mk[i]) continue;
                    const float *base = (const float *)(xc + (uintptr_t)off[i] * sizeof(float));
                    if (sw == 1) {
                        v = _mm512_mask_loadu_ps(v, mk[i], base);
                    } else {
                        __m512 a = _mm512_maskz_loadu_ps(mlo[i], base), b = _mm512_maskz_loadu_ps(mhi[i], base + 16);
                        v = _mm512_mask_mov_ps(v, mk[i], _mm512_permutex2var_ps(a, evens, b));
                    }
                }
                _mm512_storeu_ps(dst + q * kn * SIM_NR, v);
            }
        }
    }
}
#endif

/* General convolution: column blocks [lo, hi) of nb positions, im2col rows packed per block. */
static void im2col_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const gemm_job *j = arg;
    const sim_conv_geom *g = &j->p->g;
    float *pb = j->pb + (size_t)tid * j->pb_stride, *row = pb + j->pb_sz;
    int64_t kc = j->p->kc, mp = sim_round_up(g->mg, SIM_MR);
#ifdef CONV_PANEL_IM2COL
    im2col_run runs[IM2COL_MAX_PANELS * IM2COL_RUNS_PER_PANEL];
    int nrun[IM2COL_MAX_PANELS];
    int panels = panel_im2col_usable(g, j->nb);
#endif
    for (int64_t b = lo; b < hi; b++) {
        int64_t j0 = b * j->nb, w = g->out_sz - j0 < j->nb ? g->out_sz - j0 : j->nb;
#ifdef CONV_PANEL_IM2COL
        if (panels) panel_runs(g, j0, w, runs, nrun);
#endif
        for (int64_t k0 = 0; k0 < j->kdim; k0 += kc) {
            int64_t kn = j->kdim - k0 < kc ? j->kdim - k0 : kc;
#ifdef CONV_PANEL_IM2COL
            if (panels) {
                panel_im2col(g, j->xg, k0, kn, w, runs, nrun, pb);
            } else
#endif
            {
                for (int64_t k = 0; k < kn; k++) {
                    sim_im2col_row(g, j->xg, k0 + k, j0, w, row);
                    sim_pack_b_row(row, k, kn, w, pb);
                }
                sim_pack_b_pad(kn, w, pb);
            }
            sim_gemm_epi epi = j->epi;
            epi.acc_in = k0 > 0;
            epi.acc_out = k0 + kn < j->kdim;
            sim_gemm_packed(j->p->avx2, j->wp + mp * k0, pb, g->mg, w, kn, j->yg + j0, g->out_sz, &epi);
        }
    }
}

/* Column block of the im2col GEMM: as wide as a kc x nb B chunk fits the cache budget, then evened out
 * over the blocks it takes (a last block of a few columns would stream all the weights for them). */
static int64_t conv_block_cols(int64_t kc, int64_t out_sz)
{
    int64_t cap = sim_gemm_block_cols(kc);
    int64_t blocks = (out_sz + cap - 1) / cap;
    return sim_round_up((out_sz + blocks - 1) / blocks, SIM_NR);
}

static int conv_run_f32(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const conv_priv *p = op->priv;
    if (!p) return SIM_ERR_FAIL;
    const sim_conv_geom *g = &p->g;
    const float *x = sim_call_in_f32(call, 0);
    float *y = call->out[0].f32;
    if (!x || !y) return SIM_ERR_FAIL;
    int rc = 0;
    /* FLOAT16 output: round while writing back (after bias and clamp), unless another activation follows */
    int f16 = (call->f16_out & 1u) && !p->post_act;
    if (f16) call->f16_done |= 1u;
    if (p->mode == CONV_DEPTHWISE) {
        rc = run_depthwise(p, x, y, f16, call);
    } else if (p->wpack_t) {
        rc = run_pointwise_t(p, x, y, f16, call);
    } else {
        int64_t kdim = g->cg * g->k_sz, nb = conv_block_cols(p->kc, g->out_sz);
        if (p->mode == CONV_POINTWISE) nb = SIM_NR; /* only the tail tile is packed */
        size_t pb_sz = sim_pack_b_size(p->mode == CONV_POINTWISE ? kdim : p->kc, nb);
        size_t per_group = sim_pack_a_size(g->mg, kdim);
        size_t stride = (pb_sz + (size_t)nb + 15u) & ~(size_t)15u;
        float *pb = sim_scratch_get(call, stride * (size_t)sim_call_threads(call) * sizeof(float));
        if (!pb) return SIM_ERR_MALLOC;
        for (int64_t n = 0; n < g->n; n++)
            for (int64_t gi = 0; gi < g->group; gi++) {
                gemm_job j = {p, x + (n * g->cin + gi * g->cg) * g->in_sz, p->wpack + (size_t)gi * per_group,
                              y + (n * g->cout + gi * g->mg) * g->out_sz, p->epi, pb, stride, pb_sz, nb, kdim};
                j.epi.bias_row = p->bias + gi * g->mg;
                j.epi.f16 = f16;
                if (p->mode == CONV_POINTWISE)
                    sim_parallel_sized(call, pw_range, &j, (g->out_sz + SIM_NR - 1) / SIM_NR, (double)(g->mg * g->out_sz * kdim));
                else
                    sim_parallel_sized(call, im2col_range, &j, (g->out_sz + nb - 1) / nb, (double)(g->mg * g->out_sz * kdim));
            }
    }
    if (rc == 0 && p->post_act) sim_op_act(op, y, (size_t)(g->n * g->cout * g->out_sz));
    return rc;
}

static int conv_run_i8(sim_kernel_call *call)
{
    const conv_priv *p = call->op->priv;
    if (!p || !p->i8) return SIM_ERR_FAIL;
    return sim_conv_i8_run(p->i8, &p->g, 0, call);
}

static uint64_t conv_macs(const sim_graph *gr, const sim_op *op)
{
    const conv_priv *p = op->priv;
    (void)gr;
    if (!p) return 0;
    const sim_conv_geom *g = &p->g;
    return (uint64_t)(g->n * g->cout * g->out_sz * g->cg * g->k_sz);
}

const sim_op_def sim_def_conv = {
    .type = SIM_OP_CONV, .onnx_name = "Conv", .npu_name = "Conv", .prepare = conv_prepare,
    .run_f32 = conv_run_f32, .run_i8 = conv_run_i8, .release = conv_release, .macs = conv_macs,
};
