/* Pooling (max/avg, pads, strides, dilations, ceil_mode, count_include_pad, 1-3 dims, global) and
 * normalisations/reductions against reference loops. */
#include "harness.h"

typedef struct pcase {
    uint32_t type;
    int nsp;
    int64_t in[3], k[3], s[3], pb[3], pe[3], dl[3];
    int ceil_mode, include_pad;
} pcase;

static int64_t pool_out(const pcase *p, int d)
{
    int64_t span = p->in[d] + p->pb[d] + p->pe[d] - (p->dl[d] * (p->k[d] - 1) + 1);
    if (!p->ceil_mode) return span / p->s[d] + 1;
    int64_t o = (span + p->s[d] - 1) / p->s[d] + 1;
    if ((o - 1) * p->s[d] >= p->in[d] + p->pb[d]) o--;
    return o;
}

static void pool_case(const pcase *p, const char *label)
{
    tgraph tg;
    tg_init(&tg, p->type);
    int64_t xd[5] = {2, 3}, yd[5] = {2, 3}, out[3];
    int64_t ks[3], st[3], dl[3], pads[6];
    for (int d = 0; d < p->nsp; d++) {
        out[d] = pool_out(p, d);
        xd[2 + d] = p->in[d];
        yd[2 + d] = out[d];
        ks[d] = p->k[d];
        st[d] = p->s[d];
        dl[d] = p->dl[d];
        pads[d] = p->pb[d];
        pads[d + p->nsp] = p->pe[d];
    }
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2 + p->nsp, xd, 1.0f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2 + p->nsp, yd, 0);
    tg_input(&tg, x);
    tg_output(&tg, y);
    tg_attr_is(&tg, "kernel_shape", p->nsp, ks);
    tg_attr_is(&tg, "strides", p->nsp, st);
    tg_attr_is(&tg, "pads", 2 * p->nsp, pads);
    if (p->type == SIM_OP_MAXPOOL) tg_attr_is(&tg, "dilations", p->nsp, dl);
    tg_attr_i(&tg, "ceil_mode", p->ceil_mode);
    tg_attr_i(&tg, "count_include_pad", p->include_pad);
    char err[256], what[300];
    int rc = tg_run(&tg, 0, err, sizeof err);
    snprintf(what, sizeof what, "pool %s rc=%d %s", label, rc, err);
    tg_check_true(what, rc == 0);
    if (rc) {
        tg_free(&tg);
        return;
    }
    int64_t n = tg.t[y].n_elems, in_sz = tg.t[x].n_elems / 6, out_sz = n / 6;
    int64_t I[3] = {1, 1, 1}, O[3] = {1, 1, 1}, K[3] = {1, 1, 1}, S[3] = {1, 1, 1}, PB[3] = {0}, PE[3] = {0}, DL[3] = {1, 1, 1};
    for (int d = 0; d < p->nsp; d++) {
        int e = 3 - p->nsp + d;
        I[e] = p->in[d]; O[e] = out[d]; K[e] = p->k[d]; S[e] = p->s[d]; PB[e] = p->pb[d]; PE[e] = p->pe[d];
        DL[e] = p->type == SIM_OP_MAXPOOL ? p->dl[d] : 1;
    }
    float *ref = malloc((size_t)n * sizeof(float));
    for (int64_t c = 0; c < 6; c++)
        for (int64_t o = 0; o < out_sz; o++) {
            int64_t oo[3] = {o / (O[1] * O[2]), (o / O[2]) % O[1], o % O[2]};
            double acc = p->type == SIM_OP_MAXPOOL ? -INFINITY : 0;
            int64_t cnt = 0, cntpad = 0;
            for (int64_t a = 0; a < K[0]; a++)
                for (int64_t b = 0; b < K[1]; b++)
                    for (int64_t e = 0; e < K[2]; e++) {
                        int64_t i0 = oo[0] * S[0] - PB[0] + a * DL[0], i1 = oo[1] * S[1] - PB[1] + b * DL[1];
                        int64_t i2 = oo[2] * S[2] - PB[2] + e * DL[2];
                        int inpad = i0 >= -PB[0] && i0 < I[0] + PE[0] && i1 >= -PB[1] && i1 < I[1] + PE[1] &&
                                    i2 >= -PB[2] && i2 < I[2] + PE[2];
                        cntpad += inpad;
                        if (i0 < 0 || i1 < 0 || i2 < 0 || i0 >= I[0] || i1 >= I[1] || i2 >= I[2]) continue;
                        float v = tg.f[x][c * in_sz + (i0 * I[1] + i1) * I[2] + i2];
                        if (p->type == SIM_OP_MAXPOOL) acc = v > acc ? v : acc;
                        else acc += v;
                        cnt++;
                    }
            if (p->type == SIM_OP_AVGPOOL) acc /= (double)(p->include_pad ? cntpad : cnt);
            ref[c * out_sz + o] = (float)acc;
        }
    tg_check_close(what, tg.f[y], ref, n, 1e-6f, 1e-5f);
    /* int8: max pooling of codes equals max of dequantised values */
    if (p->type == SIM_OP_MAXPOOL) {
        tg_quant(&tg, x, 1.0f / 127.0f, 0);
        tg_quant(&tg, y, 1.0f / 127.0f, 0);
        rc = tg_run(&tg, 1, err, sizeof err);
        int bad = rc != 0;
        for (int64_t c = 0; c < 6 && !bad; c++)
            for (int64_t o = 0; o < out_sz && !bad; o++) {
                float want = sim_round_f16(0) + ref[c * out_sz + o];
                bad = fabsf(tg.f[y][c * out_sz + o] - want) > 1.01f / 127.0f;
            }
        snprintf(what, sizeof what, "pool %s int8 rc=%d", label, rc);
        tg_check_true(what, !bad);
    }
    free(ref);
    tg_free(&tg);
}

static void global_case(uint32_t type)
{
    tgraph tg;
    tg_init(&tg, type);
    int64_t xd[4] = {2, 5, 6, 7}, yd[4] = {2, 5, 1, 1};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0);
    tg_input(&tg, x);
    tg_output(&tg, y);
    char err[256];
    int rc = tg_run(&tg, 0, err, sizeof err);
    tg_check_true("global pool runs", rc == 0);
    float ref[10];
    for (int c = 0; c < 10; c++) {
        double s = 0, m = -INFINITY;
        for (int i = 0; i < 42; i++) {
            s += tg.f[x][c * 42 + i];
            m = tg.f[x][c * 42 + i] > m ? tg.f[x][c * 42 + i] : m;
        }
        ref[c] = (float)(type == SIM_OP_GLOBAL_MAXPOOL ? m : s / 42);
    }
    tg_check_close("global pool", tg.f[y], ref, 10, 1e-6f, 1e-5f);
    tg_free(&tg);
}

/* Int8 max pooling on the codes (a 2x2 stride-2 fast path, odd widths, pads, a fused Relu, different
 * input and output scales) against the float path's rule: quantise(act(max of dequantised)). */
static void i8_maxpool_case(int64_t h, int64_t w, int64_t k, int64_t s, int64_t pad, int ceil_mode, uint32_t act)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_MAXPOOL);
    pcase pc = {SIM_OP_MAXPOOL, 2, {h, w}, {k, k}, {s, s}, {pad, pad}, {pad, pad}, {1, 1}, ceil_mode, 0};
    int64_t oh = pool_out(&pc, 0), ow = pool_out(&pc, 1);
    int64_t xd[4] = {1, 3, h, w}, yd[4] = {1, 3, oh, ow}, ks[2] = {k, k}, st[2] = {s, s}, pads[4] = {pad, pad, pad, pad};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1.0f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0);
    tg_quant(&tg, x, 1.0f / 50.0f, 3);
    tg_quant(&tg, y, 1.0f / 30.0f, -2);
    tg_input(&tg, x);
    tg_output(&tg, y);
    tg_attr_is(&tg, "kernel_shape", 2, ks);
    tg_attr_is(&tg, "strides", 2, st);
    tg_attr_is(&tg, "pads", 4, pads);
    tg_attr_i(&tg, "ceil_mode", ceil_mode);
    tg.op.act = act;
    char err[256], what[200];
    int rc = tg_run(&tg, 1, err, sizeof err);
    int64_t bad = rc != 0;
    for (int64_t c = 0; c < 3 && !rc; c++)
        for (int64_t i = 0; i < oh; i++)
            for (int64_t j = 0; j < ow; j++) {
                int m = -129;
                for (int64_t a = 0; a < k; a++)
                    for (int64_t b = 0; b < k; b++) {
                        int64_t r = i * s - pad + a, q = j * s - pad + b;
                        if (r < 0 || q < 0 || r >= h || q >= w) continue;
                        int v = tg.q[x][(c * h + r) * w + q];
                        m = v > m ? v : m;
                    }
                float real = (float)(m - 3) * (1.0f / 50.0f);
                if (act == SIM_ACT_RELU) real = real < 0.0f ? 0.0f : real;
                bad += tg.q[y][(c * oh + i) * ow + j] != sim_quant_i8(real, 1.0f / 30.0f, -2);
            }
    snprintf(what, sizeof what, "int8 maxpool %lldx%lld k%lld s%lld p%lld ceil %d act %u: rc=%d, %lld codes differ",
             (long long)h, (long long)w, (long long)k, (long long)s, (long long)pad, ceil_mode, act, rc, (long long)bad);
    tg_check_true(what, bad == 0);
    tg_free(&tg);
}

/* Int8 global average pooling sums the codes exactly: within rounding of the exact mean. */
static void i8_global_avg_case(int64_t hw)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_GLOBAL_AVGPOOL);
    int64_t xd[4] = {1, 4, hw, hw}, yd[4] = {1, 4, 1, 1};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1.0f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0);
    tg_quant(&tg, x, 1.0f / 60.0f, -5);
    tg_quant(&tg, y, 1.0f / 400.0f, 7);
    tg_input(&tg, x);
    tg_output(&tg, y);
    char err[256], what[160];
    int rc = tg_run(&tg, 1, err, sizeof err);
    int64_t bad = rc != 0, n = hw * hw;
    for (int64_t c = 0; c < 4 && !rc; c++) {
        int64_t sum = 0;
        for (int64_t i = 0; i < n; i++) sum += tg.q[x][c * n + i] + 5;
        double v = (double)sum / (double)n * (1.0 / 60.0) * 400.0;
        double r = v >= 0 ? floor(v + 0.5) : -floor(-v + 0.5);
        r = r + 7 > 127 ? 127 : (r + 7 < -128 ? -128 : r + 7);
        bad += abs(tg.q[y][c] - (int)r) > (fabs(v - trunc(v)) > 0.499 && fabs(v - trunc(v)) < 0.501);
    }
    snprintf(what, sizeof what, "int8 global average pool %lldx%lld: rc=%d, %lld codes off", (long long)hw,
             (long long)hw, rc, (long long)bad);
    tg_check_true(what, bad == 0);
    tg_free(&tg);
}

/* int8 max pooling with row-shared windows against the float kernel on the dequantised input, inline and
 * on a reversed 3-thread pool. */
static void i8_rowshared_case(int nsp, const int64_t *in, const int64_t *k, const int64_t *st, const int64_t *pads,
                              const int64_t *dl, uint32_t act, const char *what)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_MAXPOOL);
    int64_t xd[5] = {1, 6, 1, 1, 1}, yd[5] = {1, 6, 1, 1, 1};
    for (int d = 0; d < nsp; d++) {
        xd[2 + d] = in[d];
        yd[2 + d] = (in[d] + pads[d] + pads[d + nsp] - (dl[d] * (k[d] - 1) + 1)) / st[d] + 1;
    }
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2 + nsp, xd, 2.0f);
    tg_quant(&tg, x, 2.0f / 127.0f, -3);
    tg_input(&tg, x);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2 + nsp, yd, 0);
    tg_quant(&tg, y, 1.5f / 127.0f, 7);
    tg_output(&tg, y);
    tg_attr_is(&tg, "kernel_shape", nsp, k);
    tg_attr_is(&tg, "strides", nsp, st);
    tg_attr_is(&tg, "pads", 2 * nsp, pads);
    tg_attr_is(&tg, "dilations", nsp, dl);
    tg.op.act = act;
    tg_check_i8_vs_float(&tg, y, what);
    tg_free(&tg);
}

void test_pool(void)
{
    {
        const int64_t in2[2] = {20, 20}, k5[2] = {5, 5}, s1[2] = {1, 1}, p2[4] = {2, 2, 2, 2}, d1[2] = {1, 1};
        i8_rowshared_case(2, in2, k5, s1, p2, d1, SIM_ACT_NONE, "int8 maxpool 5x5 s1 p2 row-shared");
        const int64_t in2b[2] = {33, 35}, k3[2] = {3, 3}, s2[2] = {2, 2}, p1[4] = {1, 1, 1, 1}, d2[2] = {2, 1};
        i8_rowshared_case(2, in2b, k3, s2, p1, d2, SIM_ACT_RELU, "int8 maxpool 3x3 s2 p1 dilation 2x1 row-shared");
        const int64_t in3[3] = {5, 6, 7}, k3d[3] = {2, 3, 2}, s3[3] = {1, 2, 1}, p3[6] = {0, 1, 1, 1, 0, 0},
                      d3[3] = {1, 1, 1};
        i8_rowshared_case(3, in3, k3d, s3, p3, d3, SIM_ACT_NONE, "int8 maxpool 3-D row-shared");
        const int64_t k13[2] = {1, 3}, p0[4] = {0, 0, 0, 0};
        i8_rowshared_case(2, in2, k13, s1, p0, d1, SIM_ACT_NONE, "int8 maxpool 1x3 (one row per window)");
    }
    i8_maxpool_case(16, 20, 2, 2, 0, 0, SIM_ACT_NONE);
    i8_maxpool_case(15, 17, 2, 2, 0, 1, SIM_ACT_RELU);
    i8_maxpool_case(13, 40, 3, 2, 1, 0, SIM_ACT_RELU);
    i8_maxpool_case(20, 20, 5, 1, 2, 0, SIM_ACT_NONE);
    i8_global_avg_case(7);
    i8_global_avg_case(80);
    pcase p = {SIM_OP_MAXPOOL, 2, {9, 10}, {3, 3}, {2, 2}, {1, 1}, {1, 1}, {1, 1}, 0, 0};
    pool_case(&p, "max 3x3 s2 p1");
    p.ceil_mode = 1;
    p.in[0] = 8;
    p.pb[0] = p.pe[0] = 0;
    pool_case(&p, "max ceil_mode");
    p.dl[0] = 2;
    p.ceil_mode = 0;
    pool_case(&p, "max dilation");
    p = (pcase){SIM_OP_AVGPOOL, 2, {7, 9}, {3, 2}, {2, 1}, {1, 0}, {1, 1}, {1, 1}, 0, 0};
    pool_case(&p, "avg exclude pad");
    p.include_pad = 1;
    pool_case(&p, "avg include pad");
    p.ceil_mode = 1;
    p.s[1] = 2;
    pool_case(&p, "avg ceil include pad");
    p = (pcase){SIM_OP_MAXPOOL, 1, {11}, {3}, {2}, {0}, {1}, {1}, 0, 0};
    pool_case(&p, "max 1-D");
    p = (pcase){SIM_OP_AVGPOOL, 3, {4, 5, 6}, {2, 2, 2}, {2, 2, 2}, {0, 1, 0}, {0, 0, 1}, {1, 1, 1}, 0, 0};
    pool_case(&p, "avg 3-D");
    global_case(SIM_OP_GLOBAL_AVGPOOL);
    global_case(SIM_OP_GLOBAL_MAXPOOL);
}
