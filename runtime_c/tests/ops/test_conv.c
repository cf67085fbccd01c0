/* Conv, ConvTranspose, Gemm and MatMul against straightforward reference loops (float path). */
#include "harness.h"
#include "ops/conv.h"
#include "ops/gemm_i8.h"

typedef struct conv_case {
    int nsp;
    int64_t n, c, cout, group;
    int64_t in[3], k[3], s[3], pb[3], pe[3], dl[3], opad[3];
    int bias;
    uint32_t act;
    float p0, p1;
} conv_case;

/* Reference convolution over normalised 3-D geometry. */
static void ref_conv(const conv_case *cc, const int64_t *out, const float *x, const float *w, const float *b,
                     float *y)
{
    int64_t cg = cc->c / cc->group, mg = cc->cout / cc->group;
    for (int64_t n = 0; n < cc->n; n++)
        for (int64_t oc = 0; oc < cc->cout; oc++) {
            int64_t g = oc / mg;
            for (int64_t od = 0; od < out[0]; od++)
                for (int64_t oh = 0; oh < out[1]; oh++)
                    for (int64_t ow = 0; ow < out[2]; ow++) {
                        double acc = b ? b[oc] : 0.0;
                        for (int64_t ci = 0; ci < cg; ci++)
                            for (int64_t a = 0; a < cc->k[0]; a++)
                                for (int64_t bb = 0; bb < cc->k[1]; bb++)
                                    for (int64_t e = 0; e < cc->k[2]; e++) {
                                        int64_t id = od * cc->s[0] - cc->pb[0] + a * cc->dl[0];
                                        int64_t ih = oh * cc->s[1] - cc->pb[1] + bb * cc->dl[1];
                                        int64_t iw = ow * cc->s[2] - cc->pb[2] + e * cc->dl[2];
                                        if (id < 0 || ih < 0 || iw < 0 || id >= cc->in[0] || ih >= cc->in[1] ||
                                            iw >= cc->in[2])
                                            continue;
                                        float xv = x[(((n * cc->c + g * cg + ci) * cc->in[0] + id) * cc->in[1] + ih) *
                                                         cc->in[2] + iw];
                                        float wv = w[(((oc * cg + ci) * cc->k[0] + a) * cc->k[1] + bb) * cc->k[2] + e];
                                        acc += (double)xv * wv;
                                    }
                        y[(((n * cc->cout + oc) * out[0] + od) * out[1] + oh) * out[2] + ow] =
                            sim_apply_act(cc->act, cc->p0, cc->p1, (float)acc);
                    }
        }
}

static void ref_convt(const conv_case *cc, const int64_t *out, const float *x, const float *w, const float *b,
                      float *y)
{
    int64_t cg = cc->c / cc->group, mg = cc->cout / cc->group;
    int64_t osz = out[0] * out[1] * out[2];
    for (int64_t n = 0; n < cc->n; n++)
        for (int64_t oc = 0; oc < cc->cout; oc++)
            for (int64_t i = 0; i < osz; i++) y[(n * cc->cout + oc) * osz + i] = b ? b[oc] : 0.0f;
    for (int64_t n = 0; n < cc->n; n++)
        for (int64_t ic = 0; ic < cc->c; ic++) {
            int64_t g = ic / cg;
            for (int64_t id = 0; id < cc->in[0]; id++)
                for (int64_t ih = 0; ih < cc->in[1]; ih++)
                    for (int64_t iw = 0; iw < cc->in[2]; iw++) {
                        float xv = x[(((n * cc->c + ic) * cc->in[0] + id) * cc->in[1] + ih) * cc->in[2] + iw];
                        for (int64_t m = 0; m < mg; m++)
                            for (int64_t a = 0; a < cc->k[0]; a++)
                                for (int64_t bb = 0; bb < cc->k[1]; bb++)
                                    for (int64_t e = 0; e < cc->k[2]; e++) {
                                        int64_t od = id * cc->s[0] - cc->pb[0] + a * cc->dl[0];
                                        int64_t oh = ih * cc->s[1] - cc->pb[1] + bb * cc->dl[1];
                                        int64_t ow = iw * cc->s[2] - cc->pb[2] + e * cc->dl[2];
                                        if (od < 0 || oh < 0 || ow < 0 || od >= out[0] || oh >= out[1] || ow >= out[2])
                                            continue;
                                        float wv = w[(((ic * mg + m) * cc->k[0] + a) * cc->k[1] + bb) * cc->k[2] + e];
                                        y[(((n * cc->cout + g * mg + m) * out[0] + od) * out[1] + oh) * out[2] + ow] +=
                                            xv * wv;
                                    }
                    }
        }
    for (int64_t i = 0; i < cc->n * cc->cout * osz; i++) y[i] = sim_apply_act(cc->act, cc->p0, cc->p1, y[i]);
}

/* Builds and runs one Conv/ConvTranspose case; returns the output tensor index (graph left for i8 use). */
static void run_conv_case(const conv_case *cc, int transpose, const char *label)
{
    tgraph tg;
    tg_init(&tg, transpose ? SIM_OP_CONV_TRANSPOSE : SIM_OP_CONV);
    int off = 3 - cc->nsp;
    int64_t out[3], xd[5], wd[5], yd[5];
    int64_t cg = cc->c / cc->group, mg = cc->cout / cc->group;
    xd[0] = cc->n;
    xd[1] = cc->c;
    if (transpose) {
        wd[0] = cc->c;
        wd[1] = mg;
    } else {
        wd[0] = cc->cout;
        wd[1] = cg;
    }
    yd[0] = cc->n;
    yd[1] = cc->cout;
    for (int d = 0; d < 3; d++) {
        int64_t ext = cc->dl[d] * (cc->k[d] - 1) + 1;
        out[d] = transpose ? cc->s[d] * (cc->in[d] - 1) + cc->opad[d] + ext - cc->pb[d] - cc->pe[d]
                           : (cc->in[d] + cc->pb[d] + cc->pe[d] - ext) / cc->s[d] + 1;
    }
    int64_t ks[3], st[3], dl[3], pads[6], op_[3];
    for (int s = 0; s < cc->nsp; s++) {
        xd[2 + s] = cc->in[off + s];
        wd[2 + s] = cc->k[off + s];
        yd[2 + s] = out[off + s];
        ks[s] = cc->k[off + s];
        st[s] = cc->s[off + s];
        dl[s] = cc->dl[off + s];
        pads[s] = cc->pb[off + s];
        pads[s + cc->nsp] = cc->pe[off + s];
        op_[s] = cc->opad[off + s];
    }
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2 + cc->nsp, xd, 1.0f);
    int w = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 2 + cc->nsp, wd, 0.5f);
    int64_t bd[1] = {cc->cout};
    int b = cc->bias ? tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, bd, 0.5f) : -1;
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2 + cc->nsp, yd, 0.0f);
    tg_input(&tg, x);
    tg_input(&tg, w);
    if (b >= 0) tg_input(&tg, b);
    tg_output(&tg, y);
    tg_attr_is(&tg, "kernel_shape", cc->nsp, ks);
    tg_attr_is(&tg, "strides", cc->nsp, st);
    tg_attr_is(&tg, "dilations", cc->nsp, dl);
    tg_attr_is(&tg, "pads", 2 * cc->nsp, pads);
    if (transpose) tg_attr_is(&tg, "output_padding", cc->nsp, op_);
    tg_attr_i(&tg, "group", cc->group);
    tg.op.act = cc->act;
    tg.op.act_p0 = cc->p0;
    tg.op.act_p1 = cc->p1;
    char err[256];
    int rc = tg_run(&tg, 0, err, sizeof err);
    char what[400];
    snprintf(what, sizeof what, "%s %s rc=%d %s", transpose ? "ConvTranspose" : "Conv", label, rc, err);
    tg_check_true(what, rc == 0);
    if (rc == 0) {
        int64_t n = tg.t[y].n_elems;
        float *ref = malloc((size_t)n * sizeof(float));
        if (transpose)
            ref_convt(cc, out, tg.f[x], tg.f[w], b >= 0 ? tg.f[b] : NULL, ref);
        else
            ref_conv(cc, out, tg.f[x], tg.f[w], b >= 0 ? tg.f[b] : NULL, ref);
        tg_check_close(what, tg.f[y], ref, n, 1e-4f, 1e-4f);
        uint64_t macs = sim_op_find(tg.op.type)->macs(&tg.g, &tg.op);
        uint64_t want = (uint64_t)(cc->n * cc->cout * out[0] * out[1] * out[2] * cg * cc->k[0] * cc->k[1] * cc->k[2]);
        if (transpose) want = (uint64_t)(cc->n * cc->c * cc->in[0] * cc->in[1] * cc->in[2] * mg * cc->k[0] * cc->k[1] * cc->k[2]);
        tg_check_true("conv macs", macs == want);
        free(ref);
    }
    tg_free(&tg);
}

static conv_case base2d(int64_t c, int64_t h, int64_t w, int64_t cout, int64_t k)
{
    conv_case cc;
    memset(&cc, 0, sizeof cc);
    cc.nsp = 2;
    cc.n = 1;
    cc.c = c;
    cc.cout = cout;
    cc.group = 1;
    cc.in[0] = 1;
    cc.in[1] = h;
    cc.in[2] = w;
    cc.k[0] = 1;
    cc.k[1] = cc.k[2] = k;
    for (int d = 0; d < 3; d++) {
        cc.s[d] = 1;
        cc.dl[d] = 1;
    }
    cc.bias = 1;
    return cc;
}


/* ---- The 8-channel depthwise block (sim_dw8_block) against the per-channel AVX2 row kernel
 * (sim_dw_plane): the same bits for every output, float and int8 input, every block width nc. */
static void dw_fake_run(sim_par *self, sim_par_fn fn, void *arg, int64_t n)
{
    (void)self;
    for (int64_t i = n - 1; i >= 0; i--) fn(arg, i, i + 1, (int)(i % 3));
}
static sim_par dw_fake_pool = {dw_fake_run, 3};

static void dw8_case(int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t st, int64_t dl, int64_t pb,
                     int64_t pe, int use_lohi)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_CONV);
    int64_t ext_h = dl * (kh - 1) + 1, ext_w = dl * (kw - 1) + 1;
    int64_t oh = (h + pb + pe - ext_h) / st + 1, ow = (w + pb + pe - ext_w) / st + 1;
    int64_t xd[4] = {1, c, h, w}, wd[4] = {c, 1, kh, kw}, yd[4] = {1, c, oh, ow};
    int64_t ks[2] = {kh, kw}, sts[2] = {st, st}, dls[2] = {dl, dl}, pads[4] = {pb, pb, pe, pe};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1.0f);
    int wt = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 4, wd, 0.5f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0.0f);
    tg_input(&tg, x);
    tg_input(&tg, wt);
    tg_output(&tg, y);
    tg_attr_is(&tg, "kernel_shape", 2, ks);
    tg_attr_is(&tg, "strides", 2, sts);
    tg_attr_is(&tg, "dilations", 2, dls);
    tg_attr_is(&tg, "pads", 4, pads);
    tg_attr_i(&tg, "group", c);
    char err[256] = "", what[160];
    sim_conv_geom g;
    int rc = sim_conv_geom_init(&tg.g, &tg.op, 0, &g, err, sizeof err);
    snprintf(what, sizeof what, "dw8 %lldx%lld s%lld d%lld on %lldx%lld c%lld: geometry %s", (long long)kh,
             (long long)kw, (long long)st, (long long)dl, (long long)h, (long long)w, (long long)c, err);
    tg_check_true(what, rc == 0 && sim_dw8_usable(1, &g));
    /* dilated windows keep the portable kernel (not the row kernel): no block there */
    dls[0] = 2;
    sim_conv_geom gd = g;
    gd.dl[1] = dls[0];
    tg_check_true("dw8: not used for dilated windows", !sim_dw8_usable(1, &gd));
    if (rc || !sim_dw8_usable(1, &g)) {
        tg_free(&tg);
        return;
    }
    size_t zn, n8 = sim_dw8_scratch_elems(&g, &zn), n1 = sim_dw_pad_elems(&g), osz = (size_t)g.out_sz;
    float *scr = calloc(n8, sizeof(float)), *pad = calloc(n1, sizeof(float));
    float *got = malloc((size_t)c * osz * sizeof(float)), *want = malloc((size_t)c * osz * sizeof(float));
    float *w8 = sim_dw8_pack(&g, tg.f[wt]), *bias = malloc((size_t)c * sizeof(float));
    int8_t *x8 = malloc((size_t)(c * h * w));
    if (!scr || !pad || !got || !want || !w8 || !bias || !x8) {
        tg_check_true("dw8: allocation", 0);
    } else {
        const float lohi[2] = {-0.3f, 0.4f};
        for (int64_t i = 0; i < c; i++) bias[i] = tg_randf();
        for (int64_t i = 0; i < c * h * w; i++) x8[i] = (int8_t)(tg_randf() * 127.0f);
        const float zx = -3.0f;
        for (int mode = 0; mode < 2; mode++) { /* 0: float input, 1: int8 input (value - zx) */
            for (int64_t c0 = 0; c0 < c; c0 += 8) {
                int64_t nc = c - c0 < 8 ? c - c0 : 8;
                float b8[8] = {0};
                memcpy(b8, bias + c0, (size_t)nc * sizeof(float));
                sim_dw8_block(&g, mode ? NULL : tg.f[x] + c0 * h * w, mode ? x8 + c0 * h * w : NULL, zx, nc,
                              w8 + c0 * g.k_sz, b8, scr, use_lohi ? lohi : NULL, got + c0 * (int64_t)osz);
            }
            int64_t ppw = w + pb + pe;
            for (int64_t ch = 0; ch < c; ch++) {
                memset(pad, 0, n1 * sizeof(float));
                for (int64_t r = 0; r < h; r++)
                    for (int64_t q = 0; q < w; q++) {
                        int64_t src = (ch * h + r) * w + q;
                        pad[(r + pb) * ppw + q + pb] = mode ? (float)x8[src] - zx : tg.f[x][src];
                    }
                sim_dw_plane(1, &g, pad, tg.f[wt] + ch * g.k_sz, bias[ch], want + ch * (int64_t)osz,
                             use_lohi ? lohi : NULL, NULL, 0, NULL);
            }
            snprintf(what, sizeof what, "dw8 %lldx%lld s%lld d%lld on %lldx%lld c%lld %s%s: bit-identical to the row kernel",
                     (long long)kh, (long long)kw, (long long)st, (long long)dl, (long long)h, (long long)w,
                     (long long)c, mode ? "int8" : "float", use_lohi ? " clamp" : "");
            tg_check_true(what, memcmp(got, want, (size_t)c * osz * sizeof(float)) == 0);
        }
        /* int8 with the requantisation fused in the store (Clip or none) against the float block and
         * sim_i8_requant_plane per channel: the same codes (integer weights, so the sums are exact) */
        float *wi = malloc((size_t)(c * g.k_sz) * sizeof(float)), *mult = malloc((size_t)c * sizeof(float));
        int32_t *bi = malloc((size_t)c * sizeof(int32_t));
        int8_t *y8 = malloc((size_t)c * osz), *r8 = malloc((size_t)c * osz);
        if (wi && mult && bi && y8 && r8) {
            for (int64_t i = 0; i < c * g.k_sz; i++) wi[i] = (float)(int)(tg_randf() * 200.0f);
            for (int64_t i = 0; i < c; i++) {
                mult[i] = 0.0005f * (1.5f + tg_randf());
                bi[i] = (int32_t)(tg_randf() * 3000.0f);
            }
            float *wi8 = sim_dw8_pack(&g, wi);
            for (int act = 0; act < 2 && wi8; act++) {
                sim_i8_epi ep;
                memset(&ep, 0, sizeof ep);
                ep.bias = bi;
                ep.mult = mult;
                ep.zo = -3;
                ep.act = act ? SIM_ACT_CLIP : SIM_ACT_NONE;
                ep.clamp = act;
                ep.lo = act ? 0.0f : -1e30f;
                ep.hi = act ? 40.0f : 1e30f;
                sim_i8_epi_bounds(&ep, &ep.qlo, &ep.qhi);
                for (int64_t c0 = 0; c0 < c; c0 += 8) {
                    int64_t nc = c - c0 < 8 ? c - c0 : 8;
                    float b8[8] = {0};
                    unsigned fold = 0;
                    for (int64_t l = 0; l < nc; l++)
                        if ((c0 + l) % 3) {
                            fold |= 1u << l;
                            b8[l] = (float)bi[c0 + l];
                        }
                    sim_dw8_block_i8(&g, x8 + c0 * h * w, zx, nc, wi8 + c0 * g.k_sz, b8, scr, &ep, fold, c0,
                                     y8 + c0 * (int64_t)osz);
                    sim_dw8_block(&g, NULL, x8 + c0 * h * w, zx, nc, wi8 + c0 * g.k_sz, b8, scr, NULL,
                                  got + c0 * (int64_t)osz);
                    for (int64_t l = 0; l < nc; l++) {
                        sim_i8_epi el = ep;
                        if ((fold >> l) & 1u) el.bias = NULL;
                        sim_i8_requant_plane(1, &el, got + (c0 + l) * (int64_t)osz, (int64_t)osz, c0 + l,
                                             r8 + (c0 + l) * (int64_t)osz);
                    }
                }
                snprintf(what, sizeof what, "dw8 %lldx%lld s%lld on %lldx%lld c%lld int8 store %s: same codes",
                         (long long)kh, (long long)kw, (long long)st, (long long)h, (long long)w, (long long)c,
                         act ? "clip" : "none");
                tg_check_true(what, memcmp(y8, r8, (size_t)c * osz) == 0);
            }
            free(wi8);
        }
        free(wi), free(mult), free(bi), free(y8), free(r8);
    }
    free(scr), free(pad), free(got), free(want), free(w8), free(bias), free(x8);
    tg_free(&tg);
}

/* A depthwise Conv run inline and on a stand-in pool that runs every item alone, in reverse, on 3
 * "threads": the same bytes (float and int8). */
static void dw_split_case(int64_t c, int64_t hw, int64_t k, int64_t st, int use_i8, uint32_t act)
{
    uint8_t *out[2] = {NULL, NULL};
    size_t bytes = 0;
    for (int pass = 0; pass < 2; pass++) {
        tg_rng = 12345;
        tgraph tg;
        tg_init(&tg, SIM_OP_CONV);
        int64_t oh = (hw + 2 * (k / 2) - k) / st + 1;
        int64_t xd[4] = {2, c, hw, hw}, wd[4] = {c, 1, k, k}, yd[4] = {2, c, oh, oh}, bd[1] = {c};
        int64_t ks[2] = {k, k}, sts[2] = {st, st}, pads[4] = {k / 2, k / 2, k / 2, k / 2};
        int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1.0f);
        int wt = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 4, wd, 0.5f);
        int b = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, bd, 0.5f);
        int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0.0f);
        if (use_i8) {
            tg_quant(&tg, x, 0.01f, 3);
            tg_quant(&tg, wt, 0.004f, 0);
            tg_quant(&tg, y, 0.03f, -2);
        }
        tg_input(&tg, x);
        tg_input(&tg, wt);
        tg_input(&tg, b);
        tg_output(&tg, y);
        tg_attr_is(&tg, "kernel_shape", 2, ks);
        tg_attr_is(&tg, "strides", 2, sts);
        tg_attr_is(&tg, "pads", 4, pads);
        tg_attr_i(&tg, "group", c);
        tg.op.act = act;
        tg.op.act_p0 = 0.0f;
        tg.op.act_p1 = 6.0f;
        sim_par *keep = tg_par;
        tg_par = pass ? &dw_fake_pool : NULL;
        char err[256] = "";
        int rc = tg_run(&tg, use_i8, err, sizeof err);
        tg_par = keep;
        char what[160];
        snprintf(what, sizeof what, "depthwise split %lldx%lld s%lld c%lld %s act %u: run %s", (long long)k,
                 (long long)k, (long long)st, (long long)c, use_i8 ? "int8" : "float", act, err);
        tg_check_true(what, rc == 0);
        bytes = (size_t)tg.t[y].n_elems * (use_i8 ? 1 : sizeof(float));
        out[pass] = malloc(bytes);
        if (out[pass] && rc == 0) memcpy(out[pass], use_i8 ? (void *)tg.q[y] : (void *)tg.f[y], bytes);
        tg_free(&tg);
    }
    char what[160];
    snprintf(what, sizeof what, "depthwise %lldx%lld s%lld c%lld %s act %u: same bytes on any split", (long long)k,
             (long long)k, (long long)st, (long long)c, use_i8 ? "int8" : "float", act);
    tg_check_true(what, out[0] && out[1] && memcmp(out[0], out[1], bytes) == 0);
    free(out[0]);
    free(out[1]);
}

static void test_dw_fast(void)
{
    if (SIM_CPU_AVX2() && sim_cpu_has_avx2_fma()) {
        const int64_t ks[][2] = {{3, 3}, {5, 5}, {7, 7}, {3, 5}, {1, 3}};
        const int64_t sz[][2] = {{7, 7}, {14, 14}, {9, 17}, {1, 5}, {28, 28}, {12, 8}};
        int i = 0;
        for (int a = 0; a < 5; a++)
            for (int b = 0; b < 6; b++)
                for (int64_t st = 1; st <= 2; st++) {
                    int64_t c = (int64_t[]){5, 8, 13, 16, 3, 11}[i % 6], dl = 1;
                    int64_t pb = ks[a][0] / 2, pe = (i % 3 == 0) ? 0 : ks[a][1] / 2;
                    if (sz[b][0] + pb + pe < dl * (ks[a][0] - 1) + 1 || sz[b][1] + pb + pe < dl * (ks[a][1] - 1) + 1) {
                        i++;
                        continue;
                    }
                    dw8_case(c, sz[b][0], sz[b][1], ks[a][0], ks[a][1], st, dl, pb, pe, i % 2);
                    i++;
                }
    }
    /* every mode, fast or portable */
    const uint32_t acts[] = {SIM_ACT_CLIP, SIM_ACT_HARDSWISH, SIM_ACT_SILU, SIM_ACT_NONE};
    for (int i = 0; i < 4; i++) {
        dw_split_case(13, 20, 3, 1 + i % 2, i % 2, acts[i]);
        dw_split_case(21, 15, 5, 2 - i % 2, 1 - i % 2, acts[i]);
    }
}

void test_conv(void)
{
    test_dw_fast();
    conv_case cc = base2d(8, 9, 11, 13, 1); /* pointwise, partial tiles */
    run_conv_case(&cc, 0, "pointwise");
    cc = base2d(32, 14, 14, 96, 1);
    cc.act = SIM_ACT_CLIP;
    cc.p0 = 0.0f;
    cc.p1 = 0.3f;
    run_conv_case(&cc, 0, "pointwise clip");
    cc = base2d(3, 17, 15, 16, 3);
    cc.s[1] = cc.s[2] = 2;
    cc.pb[1] = cc.pb[2] = cc.pe[1] = cc.pe[2] = 1;
    cc.act = SIM_ACT_RELU;
    run_conv_case(&cc, 0, "3x3 s2 p1 relu");
    cc = base2d(4, 10, 12, 6, 3);
    cc.pb[1] = 2;
    cc.pe[2] = 1;
    cc.dl[1] = 2;
    cc.act = SIM_ACT_LEAKY;
    cc.p0 = 0.1f;
    run_conv_case(&cc, 0, "asym pads dilation leaky");
    cc = base2d(16, 12, 12, 16, 3); /* depthwise */
    cc.group = 16;
    cc.pb[1] = cc.pb[2] = cc.pe[1] = cc.pe[2] = 1;
    cc.act = SIM_ACT_CLIP;
    cc.p0 = 0.0f;
    cc.p1 = 6.0f;
    run_conv_case(&cc, 0, "depthwise 3x3 s1");
    cc.s[1] = cc.s[2] = 2;
    run_conv_case(&cc, 0, "depthwise 3x3 s2");
    cc.in[1] = 13;
    cc.in[2] = 7;
    cc.pe[2] = 0;
    cc.dl[2] = 2;
    cc.k[1] = 5;
    cc.act = SIM_ACT_HARDSWISH;
    run_conv_case(&cc, 0, "depthwise 5x3 dil asym");
    /* wide planes take the AVX2 row kernels (output width >= 32), odd widths leave scalar tails */
    cc = base2d(3, 37, 75, 3, 3);
    cc.group = 3;
    cc.pb[1] = cc.pb[2] = cc.pe[1] = cc.pe[2] = 1;
    cc.act = SIM_ACT_CLIP;
    cc.p0 = -0.5f;
    cc.p1 = 0.5f;
    run_conv_case(&cc, 0, "depthwise wide s1 clip");
    cc.s[1] = cc.s[2] = 2;
    cc.pe[2] = 0;
    run_conv_case(&cc, 0, "depthwise wide s2 asym");
    cc.in[2] = 80;
    cc.pb[2] = 0;
    cc.act = SIM_ACT_NONE;
    run_conv_case(&cc, 0, "depthwise wide s2 even width no pad");
    /* the AVX2 row kernel on every window size it takes (3x3 .. 11x11, stride 1 and 2), narrow planes
     * (7x7, 14x14: one or two vectors per row with unused lanes), asymmetric pads and odd widths */
    {
        const int64_t ks[] = {3, 5, 7, 11, 5, 7}, hs[] = {7, 14, 9, 12, 28, 57}, wds[] = {7, 14, 11, 15, 28, 56};
        for (int i = 0; i < 6; i++)
            for (int64_t st = 1; st <= 2; st++) {
                cc = base2d(5, hs[i], wds[i], 5, ks[i]);
                cc.group = 5;
                cc.pb[1] = cc.pb[2] = ks[i] / 2;
                cc.pe[1] = ks[i] / 2;
                cc.pe[2] = ks[i] / 2 - (i % 2);
                cc.s[1] = cc.s[2] = st;
                cc.act = i % 3 == 0 ? SIM_ACT_RELU : SIM_ACT_NONE;
                char label[64];
                snprintf(label, sizeof label, "depthwise %lldx%lld s%lld on %lldx%lld", (long long)ks[i],
                         (long long)ks[i], (long long)st, (long long)hs[i], (long long)wds[i]);
                run_conv_case(&cc, 0, label);
            }
    }
    cc = base2d(3, 40, 66, 5, 3); /* stride-2 im2col gather on a wide row */
    cc.s[1] = cc.s[2] = 2;
    cc.pb[1] = cc.pb[2] = 1;
    run_conv_case(&cc, 0, "3x3 s2 wide im2col");
    cc = base2d(8, 7, 9, 12, 3); /* grouped non-depthwise */
    cc.group = 4;
    cc.bias = 0;
    cc.pb[2] = 1;
    cc.act = SIM_ACT_SIGMOID;
    run_conv_case(&cc, 0, "group 4");
    cc = base2d(4, 1, 1, 4, 1);
    cc.group = 2;
    cc.act = SIM_ACT_SILU;
    run_conv_case(&cc, 0, "1x1 image group2");
    cc = base2d(2, 8, 8, 8, 3); /* depthwise multiplier 4: grouped GEMM path */
    cc.group = 2;
    cc.act = SIM_ACT_TANH;
    run_conv_case(&cc, 0, "channel multiplier");
    /* 1-D */
    cc = base2d(5, 1, 20, 7, 3);
    cc.nsp = 1;
    cc.k[1] = 1;
    cc.s[2] = 3;
    cc.pb[2] = 2;
    cc.act = SIM_ACT_HARDSIGMOID;
    cc.p0 = 0.2f;
    cc.p1 = 0.5f;
    run_conv_case(&cc, 0, "1-D");
    /* 3-D */
    cc = base2d(3, 6, 5, 4, 2);
    cc.nsp = 3;
    cc.in[0] = 4;
    cc.k[0] = 3;
    cc.pb[0] = 1;
    cc.pe[1] = 1;
    cc.s[2] = 2;
    cc.n = 2;
    run_conv_case(&cc, 0, "3-D batch 2");
    /* few output positions: the transposed pointwise path (7x7, 32 output channels) */
    cc = base2d(40, 7, 7, 32, 1);
    cc.act = SIM_ACT_CLIP;
    cc.p0 = -0.2f;
    cc.p1 = 0.4f;
    run_conv_case(&cc, 0, "pointwise 7x7 transposed");
    cc = base2d(24, 5, 3, 48, 1);
    cc.group = 3;
    cc.n = 2;
    cc.act = SIM_ACT_SIGMOID;
    run_conv_case(&cc, 0, "pointwise 5x3 grouped batch transposed");
    /* large K and N for blocking */
    cc = base2d(300, 20, 20, 20, 1);
    run_conv_case(&cc, 0, "pointwise K=300");
    cc = base2d(40, 30, 30, 8, 3);
    cc.pb[1] = cc.pb[2] = cc.pe[1] = cc.pe[2] = 1;
    run_conv_case(&cc, 0, "3x3 K=360 N=900");

    /* ConvTranspose */
    cc = base2d(4, 5, 6, 3, 3);
    cc.s[1] = cc.s[2] = 2;
    cc.pb[1] = cc.pe[1] = 1;
    cc.opad[1] = 1;
    run_conv_case(&cc, 1, "s2 pads opad");
    cc = base2d(6, 4, 4, 4, 2);
    cc.group = 2;
    cc.dl[2] = 2;
    cc.act = SIM_ACT_RELU;
    run_conv_case(&cc, 1, "group dilation relu");
    cc = base2d(3, 1, 9, 2, 4);
    cc.nsp = 1;
    cc.k[1] = 1;
    cc.s[2] = 3;
    cc.n = 2;
    run_conv_case(&cc, 1, "1-D batch");

    /* prepare rejects a wrong output shape */
    tgraph tg;
    tg_init(&tg, SIM_OP_CONV);
    int64_t xd[4] = {1, 3, 8, 8}, wd[4] = {4, 3, 3, 3}, yd[4] = {1, 4, 7, 7}, ks[2] = {3, 3};
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1));
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_CONST, 4, wd, 1));
    tg_output(&tg, tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0));
    tg_attr_is(&tg, "kernel_shape", 2, ks);
    char err[256];
    int rc = tg_prepare_only(&tg, err, sizeof err);
    tg_check_true("conv rejects wrong output shape", rc == -6 && strstr(err, "should be 6") != NULL);
    tg_free(&tg);
}

/* ---- Gemm / MatMul ---- */

static void gemm_case(int64_t m, int64_t n, int64_t k, int ta, int tb, float alpha, float beta, int cmode,
                      int b_const, uint32_t act)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_GEMM);
    int64_t ad[2] = {ta ? k : m, ta ? m : k}, bd[2] = {tb ? n : k, tb ? k : n}, yd[2] = {m, n};
    int a = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2, ad, 1);
    int b = tg_tensor(&tg, SIM_F32, b_const ? SIM_T_CONST : SIM_T_INPUT, 2, bd, 1);
    int c = -1;
    if (cmode == 1) {
        int64_t cd[1] = {n};
        c = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, cd, 1);
    } else if (cmode == 2) {
        int64_t cd[2] = {m, 1};
        c = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2, cd, 1);
    }
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2, yd, 0);
    tg_input(&tg, a);
    tg_input(&tg, b);
    if (c >= 0) tg_input(&tg, c);
    tg_output(&tg, y);
    tg_attr_i(&tg, "transA", ta);
    tg_attr_i(&tg, "transB", tb);
    tg_attr_f(&tg, "alpha", alpha);
    tg_attr_f(&tg, "beta", beta);
    tg.op.act = act;
    char err[256], what[400];
    int rc = tg_run(&tg, 0, err, sizeof err);
    snprintf(what, sizeof what, "Gemm m%lld n%lld k%lld ta%d tb%d c%d bconst%d rc=%d %s", (long long)m, (long long)n,
             (long long)k, ta, tb, cmode, b_const, rc, err);
    tg_check_true(what, rc == 0);
    float *ref = malloc((size_t)(m * n) * sizeof(float));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t e = 0; e < k; e++) {
                float av = ta ? tg.f[a][e * m + i] : tg.f[a][i * k + e];
                float bv = tb ? tg.f[b][j * k + e] : tg.f[b][e * n + j];
                acc += (double)av * bv;
            }
            float v = alpha * (float)acc;
            if (cmode == 1) v += beta * tg.f[c][j];
            if (cmode == 2) v += beta * tg.f[c][i];
            ref[i * n + j] = sim_apply_act(act, 0, 0, v);
        }
    if (rc == 0) tg_check_close(what, tg.f[y], ref, m * n, 1e-4f, 1e-4f);
    free(ref);
    tg_free(&tg);
}

static void matmul_case(int na, const int64_t *ad, int nb, const int64_t *bd, int ny, const int64_t *yd, int b_const)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_MATMUL);
    int a = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, na, ad, 1);
    int b = tg_tensor(&tg, SIM_F32, b_const ? SIM_T_CONST : SIM_T_INPUT, nb, bd, 1);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, ny, yd, 0);
    tg_input(&tg, a);
    tg_input(&tg, b);
    tg_output(&tg, y);
    char err[256], what[400];
    int rc = tg_run(&tg, 0, err, sizeof err);
    snprintf(what, sizeof what, "MatMul rank %d x %d rc=%d %s", na, nb, rc, err);
    tg_check_true(what, rc == 0);
    if (rc) {
        tg_free(&tg);
        return;
    }
    /* numpy semantics via explicit broadcasting of batch dims */
    int64_t m = na == 1 ? 1 : ad[na - 2], k = ad[na - 1], n = nb == 1 ? 1 : bd[nb - 1];
    int nbat = ny - (na > 1) - (nb > 1);
    int64_t total = tg.t[y].n_elems, mats = total / (m * n);
    float *ref = malloc((size_t)total * sizeof(float));
    for (int64_t bi = 0; bi < mats; bi++) {
        int64_t oa = 0, ob = 0, sa = 1, sb = 1, r = bi;
        int64_t idx[8];
        for (int d = nbat - 1; d >= 0; d--) {
            idx[d] = r % yd[d];
            r /= yd[d];
        }
        for (int d = nbat - 1; d >= 0; d--) {
            int da = d - (nbat - (na - 2)), db = d - (nbat - (nb - 2));
            if (na > 2 && da >= 0) {
                oa += (ad[da] == 1 ? 0 : idx[d]) * sa;
                sa *= ad[da];
            }
            if (nb > 2 && db >= 0) {
                ob += (bd[db] == 1 ? 0 : idx[d]) * sb;
                sb *= bd[db];
            }
        }
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0;
                for (int64_t e = 0; e < k; e++) acc += (double)tg.f[a][oa * m * k + i * k + e] * tg.f[b][ob * k * n + e * n + j];
                ref[bi * m * n + i * n + j] = (float)acc;
            }
    }
    tg_check_close(what, tg.f[y], ref, total, 1e-4f, 1e-4f);
    free(ref);
    tg_free(&tg);
}

void test_gemm(void)
{
    gemm_case(1, 1000, 128, 0, 1, 1.0f, 1.0f, 1, 1, SIM_ACT_NONE);
    gemm_case(7, 19, 33, 1, 0, 0.5f, 2.0f, 1, 1, SIM_ACT_RELU);
    gemm_case(13, 5, 8, 0, 0, 1.0f, 0.5f, 2, 0, SIM_ACT_SIGMOID);
    gemm_case(6, 16, 64, 1, 1, 1.5f, 1.0f, 0, 0, SIM_ACT_NONE);
    int64_t a1[3] = {2, 5, 7}, b1[2] = {7, 3}, y1[3] = {2, 5, 3};
    matmul_case(3, a1, 2, b1, 3, y1, 1);
    int64_t a2[4] = {2, 1, 4, 6}, b2[3] = {3, 6, 5}, y2[4] = {2, 3, 4, 5};
    matmul_case(4, a2, 3, b2, 4, y2, 0);
    int64_t a3[1] = {6}, b3[2] = {6, 4}, y3[1] = {4};
    matmul_case(1, a3, 2, b3, 1, y3, 1);
    int64_t a4[3] = {3, 2, 6}, b4[1] = {6}, y4[2] = {3, 2};
    matmul_case(3, a4, 1, b4, 2, y4, 0);
    int64_t a5[2] = {1, 960}, b5[2] = {960, 1280}, y5[2] = {1, 1280};
    matmul_case(2, a5, 2, b5, 2, y5, 1);
}
