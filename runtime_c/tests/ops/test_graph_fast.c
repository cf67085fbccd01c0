/* Fast paths of the non-convolution kernels (vmath.h, MatMul/Gemm split over threads, per-column int8
 * requantisation, LSTM, Softmax, LayerNorm, GELU, pooling rows): the AVX2 functions give the C ones' bits,
 * and every kernel gives the same bytes with any split of its work over threads. */
#include "harness.h"
#include "ops/vmath.h"

/* A stand-in pool: runs the items one by one, in reverse, on 3 "threads" (tid = item % 3), so a kernel
 * whose result depends on the cut or on the order shows it. */
static void fake_run(sim_par *self, sim_par_fn fn, void *arg, int64_t n)
{
    (void)self;
    for (int64_t i = n - 1; i >= 0; i--) fn(arg, i, i + 1, (int)(i % 3));
}
static sim_par fake_pool = {fake_run, 3};

static void check_same(const char *what, const void *a, const void *b, size_t bytes)
{
    char buf[200];
    snprintf(buf, sizeof buf, "%s: bit-identical", what);
    tg_check_true(buf, memcmp(a, b, bytes) == 0);
}

static void test_vmath(void)
{
    enum { N = 100003 };
    float *x = malloc(N * sizeof(float)), *a = malloc(N * sizeof(float)), *c = malloc(N * sizeof(float));
    if (!x || !a || !c) {
        tg_check_true("vmath: allocation", 0);
        free(x), free(a), free(c);
        return;
    }
    const float special[8] = {0.0f, -0.0f, 1e30f, -1e30f, 1e-30f, -1e-30f, __builtin_inff(), __builtin_nanf("")};
    for (int i = 0; i < N; i++) x[i] = i < 8 ? special[i] : tg_randf() * (i % 3 ? 6.0f : 40.0f);
    for (int form = 0; form <= 1; form++) {
        sim_gelu_array(1, x, a, N, form);
        sim_gelu_array(0, x, c, N, form);
        check_same(form ? "gelu tanh form AVX2 vs C" : "gelu erf form AVX2 vs C", a, c, N * sizeof(float));
        int64_t far = 0;
        for (int i = 8; i < N; i++) {
            double v = x[i];
            double want = form ? v / (1.0 + exp(-2.0 * 0.7978845608028654 * (v + 0.044715 * v * v * v)))
                               : 0.5 * v * erfc(-v / sqrt(2.0));
            far += fabs(c[i] - want) > 2e-5 * fabs(want) + 1e-30;
        }
        char what[120];
        snprintf(what, sizeof what, "gelu form %d: %lld beyond 2e-5 relative of the double reference", form,
                 (long long)far);
        tg_check_true(what, far == 0);
    }
    const int64_t lens[] = {1, 7, 8, 9, 64, 197, 1001};
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
        int64_t n = lens[l];
        sim_softmax_row(1, x + 8, a, n);
        sim_softmax_row(0, x + 8, c, n);
        check_same("softmax row AVX2 vs C", a, c, (size_t)n * sizeof(float));
        double mx = -1e300, s = 0.0, worst = 0.0;
        for (int64_t j = 0; j < n; j++) mx = x[8 + j] > mx ? x[8 + j] : mx;
        for (int64_t j = 0; j < n; j++) s += exp(x[8 + j] - mx);
        for (int64_t j = 0; j < n; j++) {
            double d = fabs(c[j] - exp(x[8 + j] - mx) / s);
            worst = d > worst ? d : worst;
        }
        tg_check_true("softmax row within 1e-6 of the double reference", worst < 1e-6);
        double m1, v1, m0, v0;
        sim_row_moments(1, x + 8, n, &m1, &v1);
        sim_row_moments(0, x + 8, n, &m0, &v0);
        tg_check_true("row moments AVX2 vs C bit-identical", m1 == m0 && v1 == v0);
        sim_norm_row(1, x + 8, a, n, (float)m0, 0.7f, x + 2000, x + 3000);
        sim_norm_row(0, x + 8, c, n, (float)m0, 0.7f, x + 2000, x + 3000);
        check_same("layernorm row AVX2 vs C", a, c, (size_t)n * sizeof(float));
    }
    free(x);
    free(a);
    free(c);
}

/* sim_matvec_rows: AVX2 (4-row and 1-row blocks, 64/8/1-wide column tails) gives the C bits, and each
 * output is the j-ordered multiply-add sum of the definition. */
static void test_matvec(void)
{
    const int64_t shapes[][3] = {{1, 384, 96}, {7, 384, 128}, {5, 83, 9}, {4, 7, 3}, {9, 130, 1}, {2, 16, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t rows = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *mt = malloc((size_t)(k * n + 1) * sizeof(float)), *x = malloc((size_t)(rows * k + 1) * sizeof(float));
        float *b = malloc((size_t)n * sizeof(float)), *ya = malloc((size_t)(rows * n) * sizeof(float));
        float *yc = malloc((size_t)(rows * n) * sizeof(float));
        if (!mt || !x || !b || !ya || !yc) {
            tg_check_true("matvec: allocation", 0);
        } else {
            for (int64_t i = 0; i < k * n; i++) mt[i] = tg_randf();
            for (int64_t i = 0; i < rows * k; i++) x[i] = tg_randf() * 3.0f;
            for (int64_t i = 0; i < n; i++) b[i] = tg_randf();
            for (int bias = 0; bias <= 1; bias++) {
                sim_matvec_rows(1, mt, x, bias ? b : NULL, ya, rows, n, k);
                sim_matvec_rows(0, mt, x, bias ? b : NULL, yc, rows, n, k);
                check_same("matvec rows AVX2 vs C", ya, yc, (size_t)(rows * n) * sizeof(float));
                int64_t bad = 0;
                for (int64_t e = 0; e < rows; e++)
                    for (int64_t i = 0; i < n; i++) {
                        float acc = bias ? b[i] : 0.0f;
                        for (int64_t j = 0; j < k; j++) acc += x[e * k + j] * mt[j * n + i];
                        bad += memcmp(&acc, &yc[e * n + i], sizeof acc) != 0;
                    }
                tg_check_true("matvec rows: the j-ordered sum of the definition", bad == 0);
            }
        }
        free(mt), free(x), free(b), free(ya), free(yc);
    }
}

/* Runs tg's op inline and through the stand-in pool; every output's bytes must agree. */
static void check_split(const char *what, tgraph *tg, int use_i8)
{
    char err[256], buf[360];
    void *first[8] = {0};
    size_t bytes[8] = {0};
    tg_par = NULL;
    int rc = tg_run(tg, use_i8, err, sizeof err);
    snprintf(buf, sizeof buf, "%s inline rc=%d %s", what, rc, err);
    tg_check_true(buf, rc == 0);
    uint32_t n_out = tg->op.n_outputs < 8 ? tg->op.n_outputs : 8;
    for (uint32_t o = 0; rc == 0 && o < n_out; o++) {
        int ti = (int)tg->outs[o];
        bytes[o] = (size_t)tg->t[ti].n_elems * (use_i8 ? 1 : sizeof(float));
        first[o] = malloc(bytes[o] + 1);
        if (first[o]) memcpy(first[o], use_i8 ? (void *)tg->q[ti] : (void *)tg->f[ti], bytes[o]);
    }
    if (rc == 0) {
        tg_par = &fake_pool;
        rc = tg_run(tg, use_i8, err, sizeof err);
        tg_par = NULL;
        for (uint32_t o = 0; o < n_out; o++) {
            int ti = (int)tg->outs[o];
            snprintf(buf, sizeof buf, "%s output %u: same bytes split over threads", what, o);
            tg_check_true(buf, rc == 0 && first[o] &&
                                   memcmp(first[o], use_i8 ? (void *)tg->q[ti] : (void *)tg->f[ti], bytes[o]) == 0);
        }
    }
    for (uint32_t o = 0; o < n_out; o++) free(first[o]);
}

/* MatMul [batch, m, k] x [batch, k, n] with an activation B; int8 checks every code against the exact
 * int32 accumulation requantised as documented (round half away from zero), no tolerance. */
static void matmul_case(int64_t batch, int64_t m, int64_t k, int64_t n, int use_i8)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_MATMUL);
    int64_t ad[3] = {batch, m, k}, bd[3] = {batch, k, n}, yd[3] = {batch, m, n};
    int a = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, ad, 1.0f);
    int b = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, bd, 1.0f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, yd, 0.0f);
    const float sa = 1.0f / 100.0f, sb = 1.0f / 90.0f, so = 0.03f;
    if (use_i8) {
        tg_quant(&tg, a, sa, -3);
        tg_quant(&tg, b, sb, 4);
        tg_quant(&tg, y, so, 1);
    }
    tg_input(&tg, a);
    tg_input(&tg, b);
    tg_output(&tg, y);
    char what[160];
    snprintf(what, sizeof what, "%s MatMul %lldx%lldx%lldx%lld", use_i8 ? "int8" : "float", (long long)batch,
             (long long)m, (long long)k, (long long)n);
    check_split(what, &tg, use_i8);
    if (use_i8) {
        float mult = (1.0f * sa) * sb / so;
        int64_t bad = 0;
        for (int64_t bi = 0; bi < batch; bi++)
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++) {
                    int32_t acc = 0;
                    for (int64_t e = 0; e < k; e++)
                        acc += (tg.q[a][(bi * m + i) * k + e] + 3) * (tg.q[b][(bi * k + e) * n + j] - 4);
                    int8_t want = sim_sat_i8(sim_round_away((float)acc * mult) + 1.0f);
                    bad += tg.q[y][(bi * m + i) * n + j] != want;
                }
        snprintf(what, sizeof what, "int8 MatMul %lldx%lld: %lld codes differ from the exact requantisation",
                 (long long)m, (long long)n, (long long)bad);
        tg_check_true(what, bad == 0);
    }
    tg_free(&tg);
}

static void gemm_const_case(int64_t m, int64_t k, int64_t n, int use_i8)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_GEMM);
    int64_t ad[2] = {k, m}, bd[2] = {n, k}, cd[1] = {n}, yd[2] = {m, n};
    int a = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2, ad, 1.0f);
    int b = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 2, bd, 0.5f);
    int c = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, cd, 0.5f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2, yd, 0.0f);
    if (use_i8) {
        tg_quant(&tg, a, 1.0f / 64.0f, 5);
        tg_quant(&tg, y, 0.05f, -2);
    }
    tg_input(&tg, a);
    tg_input(&tg, b);
    tg_input(&tg, c);
    tg_output(&tg, y);
    tg_attr_i(&tg, "transA", 1);
    tg_attr_i(&tg, "transB", 1);
    tg_attr_f(&tg, "alpha", 0.5f);
    tg.op.act = SIM_ACT_RELU;
    char what[160];
    snprintf(what, sizeof what, "%s Gemm transA/B %lldx%lldx%lld", use_i8 ? "int8" : "float", (long long)m,
             (long long)k, (long long)n);
    check_split(what, &tg, use_i8);
    tg_free(&tg);
}

static void lstm_case(int64_t t, int64_t b, int64_t in, int64_t h, int direction)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_LSTM);
    int64_t dirs = direction == 2 ? 2 : 1;
    int64_t xd[3] = {t, b, in}, wd[3] = {dirs, 4 * h, in}, rd[3] = {dirs, 4 * h, h}, bd[2] = {dirs, 8 * h};
    int64_t yd[4] = {t, dirs, b, h}, sd[3] = {dirs, b, h};
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, xd, 2.0f));
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_CONST, 3, wd, 0.4f));
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_CONST, 3, rd, 0.4f));
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_CONST, 2, bd, 0.2f));
    tg_output(&tg, tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0.0f));
    tg_output(&tg, tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, sd, 0.0f));
    tg_output(&tg, tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, sd, 0.0f));
    tg_attr_i(&tg, "hidden_size", h);
    tg_attr_i(&tg, "direction", direction);
    check_split("LSTM", &tg, 0);
    tg_free(&tg);
}

static void rows_case(uint32_t type, int nd, const int64_t *dims)
{
    tgraph tg;
    tg_init(&tg, type);
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_INPUT, nd, dims, 5.0f));
    if (type == SIM_OP_LAYER_NORM) {
        int64_t last[1] = {dims[nd - 1]};
        tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, last, 1.0f));
        tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, last, 1.0f));
    }
    tg_output(&tg, tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, nd, dims, 0.0f));
    if (type == SIM_OP_GELU) tg_attr_i(&tg, "approximate", 1);
    char what[64];
    snprintf(what, sizeof what, "op %u", type);
    check_split(what, &tg, 0);
    tg_free(&tg);
}

static void resize_case(int mode, int coord)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_RESIZE);
    int64_t xd[4] = {1, 5, 37, 29}, yd[4] = {1, 5, 74, 87};
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 3.0f));
    tg_output(&tg, tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0.0f));
    tg_attr_i(&tg, "mode", mode);
    tg_attr_i(&tg, "coord", coord);
    check_split(mode ? "Resize linear" : "Resize nearest", &tg, 0);
    tg_free(&tg);
}

/* Binary op with broadcasting: a [2, 7, 45, 61] against b of shape bd; int8 quantises both and y. */
/* A dim much longer than the rest of Y computes its entries on the fly (no table): same bits as the
 * table path, checked against channel 0 of an 8-channel Resize that builds tables. */
static void resize_untabled_case(int mode)
{
    tgraph a, b;
    tg_init(&a, SIM_OP_RESIZE);
    tg_init(&b, SIM_OP_RESIZE);
    int64_t xa[4] = {1, 1, 3, 13}, ya[4] = {1, 1, 5, 40}, xb[4] = {1, 8, 3, 13}, yb[4] = {1, 8, 5, 40};
    int ia = tg_tensor(&a, SIM_F32, SIM_T_INPUT, 4, xa, 3.0f), oa = tg_tensor(&a, SIM_F32, SIM_T_OUTPUT, 4, ya, 0.0f);
    int ib = tg_tensor(&b, SIM_F32, SIM_T_INPUT, 4, xb, 3.0f), ob = tg_tensor(&b, SIM_F32, SIM_T_OUTPUT, 4, yb, 0.0f);
    tg_input(&a, ia);
    tg_output(&a, oa);
    tg_input(&b, ib);
    tg_output(&b, ob);
    memcpy(b.f[ib], a.f[ia], 39 * sizeof(float));
    for (int t = 0; t < 2; t++) {
        tgraph *g = t ? &b : &a;
        tg_attr_i(g, "mode", mode);
        tg_attr_i(g, "coord", 0);
    }
    char err[256];
    int rc = tg_run(&a, 0, err, sizeof err), rc2 = tg_run(&b, 0, err, sizeof err);
    tg_check_true("Resize without tables runs", rc == 0 && rc2 == 0);
    if (rc == 0 && rc2 == 0) check_same("Resize without tables vs with", a.f[oa], b.f[ob], 200 * sizeof(float));
    tg_free(&a);
    tg_free(&b);
}

static void eltwise_case(uint32_t type, const int64_t *bd, int b_const, int use_i8)
{
    tgraph tg;
    tg_init(&tg, type);
    int64_t ad[4] = {2, 7, 45, 61};
    int a = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, ad, 2.0f);
    int b = tg_tensor(&tg, SIM_F32, b_const ? SIM_T_CONST : SIM_T_INPUT, 4, bd, 2.0f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, ad, 0.0f);
    if (use_i8) {
        tg_quant(&tg, a, 2.0f / 127.0f, 3);
        if (!b_const) tg_quant(&tg, b, 2.0f / 120.0f, -5);
        tg_quant(&tg, y, 4.0f / 127.0f, 1);
    }
    tg_input(&tg, a);
    tg_input(&tg, b);
    tg_output(&tg, y);
    tg.op.act = SIM_ACT_RELU;
    char what[96];
    snprintf(what, sizeof what, "%s eltwise %u b [%lld,%lld,%lld,%lld]%s", use_i8 ? "int8" : "float", type,
             (long long)bd[0], (long long)bd[1], (long long)bd[2], (long long)bd[3], b_const ? " const" : "");
    check_split(what, &tg, use_i8);
    tg_free(&tg);
}

static void transpose_case(int use_i8)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_TRANSPOSE);
    int64_t xd[4] = {2, 48, 33, 35}, yd[4] = {2, 33, 35, 48}, perm[4] = {0, 2, 3, 1};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 3.0f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0.0f);
    if (use_i8) {
        tg_quant(&tg, x, 3.0f / 127.0f, 2);
        tg_quant(&tg, y, 3.0f / 127.0f, 2);
    }
    tg_input(&tg, x);
    tg_output(&tg, y);
    tg_attr_is(&tg, "perm", 4, perm);
    check_split(use_i8 ? "int8 Transpose" : "Transpose", &tg, use_i8);
    int64_t bad = 0;
    for (int64_t n = 0; n < 2; n++)
        for (int64_t c = 0; c < 48; c++)
            for (int64_t e = 0; e < 33 * 35; e++) {
                size_t src = (size_t)((n * 48 + c) * 33 * 35 + e), dst = (size_t)((n * 33 * 35 + e) * 48 + c);
                bad += use_i8 ? tg.q[y][dst] != tg.q[x][src] : tg.f[y][dst] != tg.f[x][src];
            }
    tg_check_true("Transpose moves every element to its place", bad == 0);
    tg_free(&tg);
}

/* 2-D MaxPool / AveragePool: every output bit-identical to the definition visited output by output,
 * taps in (h, w) order with the float max rule (a NaN wins, the first of equal taps stays: +0 / -0 tell
 * the order), the average divided once; int8 MaxPool: the requantised largest code. Inputs hold signed
 * zeros and a NaN. The AVX2 build and the -DSIM_FORCE_GENERIC build run the same checks. */
static void pool_rows_case(uint32_t type, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                           int64_t pad, int64_t dil, int ceil_mode, int include_pad)
{
    int64_t dl = type == SIM_OP_MAXPOOL ? dil : 1;
    int64_t span_h = h + 2 * pad - (dl * (kh - 1) + 1), span_w = w + 2 * pad - (dl * (kw - 1) + 1);
    int64_t oh = span_h / sh + 1, ow = span_w / sw + 1;
    if (ceil_mode) {
        int64_t ch = (span_h + sh - 1) / sh + 1, cw = (span_w + sw - 1) / sw + 1;
        oh = (ch - 1) * sh >= h + pad ? ch - 1 : ch;
        ow = (cw - 1) * sw >= w + pad ? cw - 1 : cw;
    }
    for (int use_i8 = 0; use_i8 <= (type == SIM_OP_MAXPOOL); use_i8++) {
        tgraph tg;
        tg_init(&tg, type);
        int64_t xd[4] = {2, 3, h, w}, yd[4] = {2, 3, oh, ow}, ks[2] = {kh, kw}, st[2] = {sh, sw};
        int64_t pads[4] = {pad, pad, pad, pad}, dls[2] = {dl, dl};
        int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 3.0f);
        int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0.0f);
        int64_t nx = tg.t[x].n_elems;
        /* plane 0 holds no positive value, so that its maxima are zeros of either sign */
        for (int64_t i = 0; i < h * w; i++) tg.f[x][i] = -fabsf(tg.f[x][i]);
        for (int64_t i = 0; i < nx; i += 3) tg.f[x][i] = (i / 3) % 2 ? 0.0f : -0.0f;
        if (!use_i8) tg.f[x][nx / 2] = __builtin_nanf("");
        if (use_i8) {
            tg_quant(&tg, x, 3.0f / 127.0f, 4);
            tg_quant(&tg, y, 2.5f / 127.0f, -3);
        }
        tg_input(&tg, x);
        tg_output(&tg, y);
        tg_attr_is(&tg, "kernel_shape", 2, ks);
        tg_attr_is(&tg, "strides", 2, st);
        tg_attr_is(&tg, "pads", 4, pads);
        if (type == SIM_OP_MAXPOOL) tg_attr_is(&tg, "dilations", 2, dls);
        tg_attr_i(&tg, "ceil_mode", ceil_mode);
        tg_attr_i(&tg, "count_include_pad", include_pad);
        char what[200];
        snprintf(what, sizeof what, "%s%s %lldx%lld k%lldx%lld s%lldx%lld p%lld d%lld%s%s", use_i8 ? "int8 " : "",
                 type == SIM_OP_MAXPOOL ? "MaxPool" : "AveragePool", (long long)h, (long long)w, (long long)kh,
                 (long long)kw, (long long)sh, (long long)sw, (long long)pad, (long long)dl,
                 ceil_mode ? " ceil" : "", include_pad ? " include_pad" : "");
        check_split(what, &tg, use_i8);
        float lut[256];
        sim_dequant_lut(&tg.t[x], lut);
        int64_t bad = 0;
        for (int64_t c = 0; c < 6; c++)
            for (int64_t i = 0; i < oh; i++)
                for (int64_t j = 0; j < ow; j++) {
                    float acc = type == SIM_OP_MAXPOOL ? -INFINITY : 0.0f;
                    int m = -129;
                    int64_t cnt = 0, cntpad = 0;
                    for (int64_t a = 0; a < kh; a++)
                        for (int64_t b = 0; b < kw; b++) {
                            int64_t r = i * sh - pad + a * dl, q = j * sw - pad + b * dl;
                            cntpad += r < h + pad && q < w + pad;
                            if (r < 0 || q < 0 || r >= h || q >= w) continue;
                            int64_t at = (c * h + r) * w + q;
                            float v = tg.f[x][at];
                            if (type == SIM_OP_MAXPOOL) acc = v > acc || v != v ? v : acc;
                            else acc += v;
                            m = use_i8 && tg.q[x][at] > m ? tg.q[x][at] : m;
                            cnt++;
                        }
                    if (type == SIM_OP_AVGPOOL) {
                        int64_t n = include_pad ? cntpad : cnt;
                        acc = n > 0 ? acc / (float)n : 0.0f;
                    }
                    int64_t at = (c * oh + i) * ow + j;
                    if (use_i8) {
                        int8_t want;
                        float v = m < -128 ? -INFINITY : lut[m + 128];
                        sim_quant_array(&v, &want, 1, tg.t[y].scale, tg.t[y].zp);
                        bad += tg.q[y][at] != want;
                    } else {
                        bad += memcmp(&acc, &tg.f[y][at], sizeof acc) != 0;
                    }
                }
        char msg[320];
        snprintf(msg, sizeof msg, "%s: %lld outputs differ from the definition's bits", what, (long long)bad);
        tg_check_true(msg, bad == 0);
        tg_free(&tg);
    }
}

void test_graph_fast(void)
{
    test_vmath();
    test_matvec();
    matmul_case(3, 25, 13, 19, 0); /* 25 rows: the single-row tail chunk is merged */
    matmul_case(3, 25, 13, 19, 1);
    matmul_case(2, 53, 40, 37, 0);
    matmul_case(2, 53, 40, 37, 1);
    matmul_case(1, 1, 16, 10, 1);
    gemm_const_case(31, 20, 10, 0);
    gemm_const_case(31, 20, 10, 1);
    lstm_case(7, 2, 9, 12, 2);
    lstm_case(5, 1, 4, 8, 1);
    lstm_case(9, 1, 20, 24, 2); /* 96 gate outputs: the 64-wide register blocks */
    const int64_t rows[3] = {3, 29, 197};
    rows_case(SIM_OP_SOFTMAX, 3, rows);
    rows_case(SIM_OP_LAYER_NORM, 3, rows);
    const int64_t flat[2] = {41, 3001};
    rows_case(SIM_OP_GELU, 2, flat);
    resize_case(0, 0);
    resize_case(1, 0);
    resize_case(1, 2);
    resize_untabled_case(0);
    resize_untabled_case(1);
    const int64_t same[4] = {2, 7, 45, 61}, chan[4] = {1, 7, 1, 1}, row[4] = {1, 1, 1, 61}, mid[4] = {2, 1, 45, 1};
    for (int q = 0; q <= 1; q++) {
        eltwise_case(SIM_OP_ADD, same, 0, q);
        eltwise_case(SIM_OP_MUL, chan, 0, q);
        eltwise_case(SIM_OP_MUL, chan, 1, q);
        eltwise_case(SIM_OP_SUB, row, 0, q);
        eltwise_case(SIM_OP_DIV, mid, 1, q);
        transpose_case(q);
    }
    /* pooling rows: the inner loops (2, 3, 5 taps), their edges, and the per-tap passes for the rest */
    pool_rows_case(SIM_OP_MAXPOOL, 32, 128, 2, 2, 2, 2, 0, 1, 0, 0);
    pool_rows_case(SIM_OP_MAXPOOL, 9, 33, 2, 1, 2, 1, 0, 1, 0, 0);
    pool_rows_case(SIM_OP_MAXPOOL, 57, 57, 3, 3, 2, 2, 1, 1, 0, 0);
    pool_rows_case(SIM_OP_MAXPOOL, 20, 41, 5, 5, 1, 1, 2, 1, 0, 0);
    pool_rows_case(SIM_OP_MAXPOOL, 15, 23, 3, 3, 2, 2, 1, 1, 1, 0);
    pool_rows_case(SIM_OP_MAXPOOL, 17, 30, 3, 3, 1, 1, 2, 2, 0, 0);
    pool_rows_case(SIM_OP_MAXPOOL, 11, 31, 4, 4, 3, 3, 1, 1, 1, 0);
    pool_rows_case(SIM_OP_MAXPOOL, 6, 5, 3, 3, 2, 2, 2, 1, 0, 0); /* rows with no inside outputs */
    pool_rows_case(SIM_OP_AVGPOOL, 29, 45, 3, 3, 1, 1, 1, 1, 0, 1);
    pool_rows_case(SIM_OP_AVGPOOL, 29, 45, 3, 3, 2, 2, 1, 1, 1, 0);
    pool_rows_case(SIM_OP_AVGPOOL, 16, 40, 2, 2, 2, 2, 0, 1, 0, 0);
    pool_rows_case(SIM_OP_AVGPOOL, 21, 37, 5, 5, 1, 1, 2, 1, 0, 0);
    pool_rows_case(SIM_OP_AVGPOOL, 13, 50, 7, 7, 3, 3, 3, 1, 0, 1);
}
