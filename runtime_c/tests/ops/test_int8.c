/* Int8 paths: Conv/ConvTranspose/Gemm/MatMul against exact int32 references with the documented
 * requantisation (round half away from zero, saturation), and the dequantise-compute-requantise ops. */
#include "harness.h"
#include "ops/gemm_i8.h"

/* Requantisation reference in double precision. */
static int8_t ref_requant(int64_t acc, double real_scale, double so, int32_t zo, uint32_t act, float p0, float p1)
{
    double real = (double)acc * real_scale;
    if (act == SIM_ACT_RELU) real = real < 0 ? 0 : real;
    if (act == SIM_ACT_CLIP) real = real < p0 ? p0 : (real > p1 ? p1 : real);
    if (act != SIM_ACT_NONE && act != SIM_ACT_RELU && act != SIM_ACT_CLIP)
        real = sim_apply_act(act, p0, p1, (float)real);
    double v = real / so;
    double r = v >= 0 ? floor(v + 0.5) : -floor(-v + 0.5);
    r += zo;
    return (int8_t)(r > 127 ? 127 : (r < -128 ? -128 : r));
}

/* Counts elements differing by more than 1 code, and by exactly 1 (float rounding at ties). */
static void check_codes(const char *what, const int8_t *got, const int8_t *want, int64_t n)
{
    int64_t off1 = 0, big = 0;
    for (int64_t i = 0; i < n; i++) {
        int d = abs(got[i] - want[i]);
        if (d > 1) {
            if (big == 0) printf("  %s: element %lld got %d want %d\n", what, (long long)i, got[i], want[i]);
            big++;
        }
        off1 += d == 1;
    }
    char buf[300];
    snprintf(buf, sizeof buf, "%s: %lld codes off by >1, %lld off by 1 of %lld", what, (long long)big, (long long)off1,
             (long long)n);
    tg_check_true(buf, big == 0 && (off1 * 200 <= n || off1 <= 1));
}

typedef struct qconv {
    int64_t c, h, w, cout, group, k, s, pad;
    int transpose, w_mode; /* w_mode: 0 per-channel int8, 1 per-tensor int8 with zp, 2 float weights,
                            * 3 per-channel int8 with a zero point per channel (asymmetric weights) */
    uint32_t act;
    float p0, p1, so;
    int32_t zx, zo;
} qconv;

static void run_qconv(const qconv *q, const char *label)
{
    tgraph tg;
    tg_init(&tg, q->transpose ? SIM_OP_CONV_TRANSPOSE : SIM_OP_CONV);
    int64_t cg = q->c / q->group, mg = q->cout / q->group;
    int64_t oh = q->transpose ? q->s * (q->h - 1) + q->k - 2 * q->pad : (q->h + 2 * q->pad - q->k) / q->s + 1;
    int64_t ow = q->transpose ? q->s * (q->w - 1) + q->k - 2 * q->pad : (q->w + 2 * q->pad - q->k) / q->s + 1;
    int64_t xd[4] = {1, q->c, q->h, q->w}, yd[4] = {1, q->cout, oh, ow};
    int64_t wd[4] = {q->transpose ? q->c : q->cout, q->transpose ? mg : cg, q->k, q->k}, bd[1] = {q->cout};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1.0f);
    tg_quant(&tg, x, 1.0f / 100.0f, q->zx);
    int w = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 4, wd, 0.5f);
    int64_t cnt = q->transpose ? mg : q->cout;
    float sw_t = 0.5f / 120.0f;
    if (q->w_mode == 0 || q->w_mode == 3) {
        tg.qs[w] = malloc((size_t)cnt * sizeof(float));
        tg.qz[w] = calloc((size_t)cnt, sizeof(int32_t));
        for (int64_t c = 0; c < cnt; c++) tg.qs[w][c] = (0.3f + 0.2f * (float)(c % 4)) / 127.0f;
        /* asymmetric: zero points up to -128, so q - z spans up to 255 (past int8) */
        for (int64_t c = 0; q->w_mode == 3 && c < cnt; c++) tg.qz[w][c] = (int32_t)(-128 + 37 * (c % 5));
        tg.q[w] = malloc((size_t)tg.t[w].n_elems);
        int64_t per = tg.t[w].n_elems / wd[0] / wd[1];
        for (int64_t e = 0; e < tg.t[w].n_elems; e++) {
            int64_t ch = q->transpose ? (e / per) % wd[1] : e / (wd[1] * per);
            tg.q[w][e] = sim_quant_i8(tg.f[w][e], tg.qs[w][ch], tg.qz[w][ch]);
            tg.f[w][e] = tg.qs[w][ch] * (float)(tg.q[w][e] - tg.qz[w][ch]);
        }
        sim_tensor *t = &tg.t[w];
        t->dtype = SIM_I8;
        t->qnt = SIM_Q_CHANNEL;
        t->q_axis = q->transpose ? 1 : 0;
        t->q_count = (uint32_t)cnt;
        t->q_scales = tg.qs[w];
        t->q_zps = tg.qz[w];
        t->data = tg.q[w];
    } else if (q->w_mode == 1) {
        tg_quant(&tg, w, sw_t, 3);
    }
    int b = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, bd, 0.3f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0.0f);
    tg_quant(&tg, y, q->so, q->zo);
    tg_input(&tg, x);
    tg_input(&tg, w);
    tg_input(&tg, b);
    tg_output(&tg, y);
    int64_t ks[2] = {q->k, q->k}, st[2] = {q->s, q->s}, pads[4] = {q->pad, q->pad, q->pad, q->pad};
    tg_attr_is(&tg, "kernel_shape", 2, ks);
    tg_attr_is(&tg, "strides", 2, st);
    tg_attr_is(&tg, "pads", 4, pads);
    tg_attr_i(&tg, "group", q->group);
    tg.op.act = q->act;
    tg.op.act_p0 = q->p0;
    tg.op.act_p1 = q->p1;
    char err[256], what[300];
    int rc = tg_run(&tg, 1, err, sizeof err);
    snprintf(what, sizeof what, "int8 %s %s rc=%d %s", q->transpose ? "ConvTranspose" : "Conv", label, rc, err);
    tg_check_true(what, rc == 0);
    if (rc) {
        tg_free(&tg);
        return;
    }
    /* reference: integer weights and scales as the kernel derives them */
    int64_t nw = tg.t[w].n_elems, per = nw / wd[0] / wd[1];
    int32_t *wq = malloc((size_t)nw * sizeof(int32_t));
    double *sw = malloc((size_t)q->cout * sizeof(double));
    for (int64_t oc = 0; oc < q->cout; oc++) sw[oc] = 0;
    for (int64_t e = 0; e < nw; e++) {
        int64_t ci_or_oc = e / (wd[1] * per), m = (e / per) % wd[1];
        int64_t oc = q->transpose ? (ci_or_oc / cg) * mg + m : ci_or_oc;
        if (q->w_mode == 0 || q->w_mode == 3) {
            sw[oc] = tg.qs[w][q->transpose ? m : oc];
            wq[e] = tg.q[w][e] - tg.qz[w][q->transpose ? m : oc];
        } else if (q->w_mode == 1) {
            sw[oc] = sw_t;
            wq[e] = tg.q[w][e] - 3;
        } else {
            float a = fabsf(tg.f[w][e]);
            sw[oc] = a > sw[oc] ? a : sw[oc];
        }
    }
    if (q->w_mode == 2) {
        for (int64_t oc = 0; oc < q->cout; oc++) sw[oc] = (float)sw[oc] / 127.0f;
        for (int64_t e = 0; e < nw; e++) {
            int64_t ci_or_oc = e / (wd[1] * per), m = (e / per) % wd[1];
            int64_t oc = q->transpose ? (ci_or_oc / cg) * mg + m : ci_or_oc;
            wq[e] = sim_quant_i8(tg.f[w][e], (float)sw[oc], 0);
        }
    }
    int64_t *acc = calloc((size_t)(q->cout * oh * ow), sizeof(int64_t));
    for (int64_t oc = 0; oc < q->cout; oc++) {
        float rs = (1.0f / 100.0f) * (float)sw[oc];
        for (int64_t i = 0; i < oh * ow; i++) acc[oc * oh * ow + i] = (int64_t)round((double)tg.f[b][oc] / (double)rs);
    }
    for (int64_t ci = 0; ci < q->c; ci++)
        for (int64_t ih = 0; ih < q->h; ih++)
            for (int64_t iw = 0; iw < q->w; iw++) {
                int32_t xv = tg.q[x][(ci * q->h + ih) * q->w + iw] - q->zx;
                int64_t g = ci / cg;
                for (int64_t m = 0; m < mg; m++)
                    for (int64_t a = 0; a < q->k; a++)
                        for (int64_t bb = 0; bb < q->k; bb++) {
                            int64_t oc = g * mg + m, yh, yw;
                            int32_t wv;
                            if (q->transpose) {
                                yh = ih * q->s - q->pad + a;
                                yw = iw * q->s - q->pad + bb;
                                wv = wq[((ci * mg + m) * q->k + a) * q->k + bb];
                                if (yh < 0 || yw < 0 || yh >= oh || yw >= ow) continue;
                            } else {
                                /* input (ih, iw) feeds output (yh, yw) through tap (a, bb) */
                                int64_t th = ih + q->pad - a, tw = iw + q->pad - bb;
                                if (th < 0 || tw < 0 || th % q->s || tw % q->s) continue;
                                yh = th / q->s;
                                yw = tw / q->s;
                                if (yh >= oh || yw >= ow) continue;
                                wv = wq[((oc * cg + ci % cg) * q->k + a) * q->k + bb];
                            }
                            acc[(oc * oh + yh) * ow + yw] += (int64_t)xv * wv;
                        }
            }
    int64_t n = q->cout * oh * ow;
    int8_t *want = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        int64_t oc = i / (oh * ow);
        want[i] = ref_requant(acc[i], (1.0f / 100.0f) * (float)sw[oc], q->so, q->zo, q->act, q->p0, q->p1);
    }
    check_codes(what, tg.q[y], want, n);
    free(want);
    free(acc);
    free(wq);
    free(sw);
    tg_free(&tg);
}

static void gemm_i8_case(int64_t m, int64_t n, int64_t k, int tb, int b_act, uint32_t act)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_GEMM);
    int64_t ad[2] = {m, k}, bd[2] = {tb ? n : k, tb ? k : n}, cd[1] = {n}, yd[2] = {m, n};
    int a = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2, ad, 1.0f);
    tg_quant(&tg, a, 1.0f / 64.0f, -7);
    int b = tg_tensor(&tg, SIM_F32, b_act ? SIM_T_INPUT : SIM_T_CONST, 2, bd, 0.5f);
    tg_quant(&tg, b, 0.5f / 127.0f, b_act ? 5 : 0);
    int c = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, cd, 0.5f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2, yd, 0.0f);
    tg_quant(&tg, y, 0.05f, 2);
    tg_input(&tg, a);
    tg_input(&tg, b);
    tg_input(&tg, c);
    tg_output(&tg, y);
    tg_attr_i(&tg, "transB", tb);
    tg.op.act = act;
    char err[256], what[300];
    int rc = tg_run(&tg, 1, err, sizeof err);
    snprintf(what, sizeof what, "int8 Gemm m%lld n%lld k%lld tb%d bact%d rc=%d %s", (long long)m, (long long)n,
             (long long)k, tb, b_act, rc, err);
    tg_check_true(what, rc == 0);
    if (rc == 0) {
        int8_t *want = malloc((size_t)(m * n));
        float rs = (1.0f / 64.0f) * (0.5f / 127.0f);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                int64_t acc = (int64_t)round((double)tg.f[c][j] / (double)rs);
                for (int64_t e = 0; e < k; e++) {
                    int32_t bq = tb ? tg.q[b][j * k + e] : tg.q[b][e * n + j];
                    acc += (int64_t)(tg.q[a][i * k + e] + 7) * (bq - (b_act ? 5 : 0));
                }
                want[i * n + j] = ref_requant(acc, rs, 0.05, 2, act, 0, 0);
            }
        check_codes(what, tg.q[y], want, m * n);
        free(want);
    }
    tg_free(&tg);
}

/* An int8 op through the dequantise-compute-requantise path: compare with the float kernel. */
static void deq_case(uint32_t type, int nin, const int64_t *dims, int nd, float so, int32_t zo)
{
    tgraph tq, tf;
    tg_init(&tq, type);
    int ins[4];
    for (int i = 0; i < nin; i++) {
        ins[i] = tg_tensor(&tq, SIM_F32, SIM_T_INPUT, nd, dims, 2.0f);
        tg_quant(&tq, ins[i], 2.0f / 127.0f, i * 3 - 1);
        tg_input(&tq, ins[i]);
    }
    int y = tg_tensor(&tq, SIM_F32, SIM_T_OUTPUT, nd, dims, 0);
    tg_quant(&tq, y, so, zo);
    tg_output(&tq, y);
    tf = tq;  /* same graph with float output computed from the dequantised inputs */
    char err[256], what[300];
    int rc = tg_run(&tq, 1, err, sizeof err);
    snprintf(what, sizeof what, "int8 op %u rc=%d %s", type, rc, err);
    tg_check_true(what, rc == 0);
    if (rc == 0) {
        const sim_op_def *def = sim_op_find(type);
        /* float reference from the dequantised inputs (tq's f holds them for inputs) */
        sim_kernel_call call;
        memset(&call, 0, sizeof call);
        call.graph = &tq.g;
        call.op = &tq.op;
        float *out = malloc((size_t)tq.t[y].n_elems * sizeof(float));
        for (int i = 0; i < nin; i++) {
            call.in[i].t = &tq.t[ins[i]];
            call.in[i].f32 = tq.f[ins[i]];
        }
        call.out[0].t = &tq.t[y];
        call.out[0].f32 = out;
        def->run_f32(&call);
        int8_t *want = malloc((size_t)tq.t[y].n_elems);
        sim_quant_array(out, want, (size_t)tq.t[y].n_elems, so, zo);
        check_codes(what, tq.q[y], want, tq.t[y].n_elems);
        free(want);
        free(out);
    }
    (void)tf;
    tg_free(&tq);
}

/* The int8 GEMM kernels the CPU runs (portable C, AVX2 madd+add, VNNI vpdpwssd) on the same packed
 * operands: identical raw int32 sums and identical codes through the vector (clamp) and the spilled
 * (per-column, SiLU) epilogues, for tile tails in m, n and an odd k; operands span the range the
 * callers give (int8 minus a zero point, |v| <= 255), extremes included. */
void test_gemm_i8_isa(void)
{
    const int64_t shapes[][3] = {{24, 64, 864}, {7, 37, 19}, {13, 16, 1}, {6, 5, 33}, {1, 100, 128}};
    int best = sim_gemm_i8_best_isa(SIM_CPU_AVX2());
    if (best < SIM_I8_ISA_VNNI) printf("  int8 GEMM isa test: this CPU has no VNNI kernel, comparing up to isa %d\n", best);
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        int64_t m = shapes[sh][0], n = shapes[sh][1], k = shapes[sh][2];
        int16_t *a = malloc((size_t)(m * k) * sizeof(int16_t)), *b = malloc((size_t)(k * n) * sizeof(int16_t));
        /* row 0 of A and column 0 of B at the extreme -255 (int8 - zero point): the largest sums */
        for (int64_t i = 0; i < m * k; i++) a[i] = (int16_t)(i < k || i % 97 == 3 ? -255 : tg_randf() * 255.0f);
        for (int64_t i = 0; i < k * n; i++) b[i] = (int16_t)(i % n == 0 || i % 89 == 5 ? -255 : tg_randf() * 255.0f);
        int16_t *pa = calloc(sim_pack_a16_size(m, k), sizeof(int16_t)), *pb = calloc(sim_pack_b16_size(k, n), sizeof(int16_t));
        sim_pack_a16(a, k, 1, m, k, pa);
        sim_pack_b16(b, n, 1, k, n, pb);
        int32_t *c32[3], *bias = malloc((size_t)(m > n ? m : n) * sizeof(int32_t));
        int8_t *c8[3][3];
        float *mult = malloc((size_t)(m > n ? m : n) * sizeof(float)), *rscale = malloc((size_t)(m > n ? m : n) * sizeof(float));
        for (int64_t i = 0; i < (m > n ? m : n); i++) {
            bias[i] = (int32_t)(tg_randf() * 20000.0f);
            rscale[i] = 0.00002f * (1.0f + (float)(i % 5));
            mult[i] = rscale[i] / 0.04f;
        }
        sim_i8_epi epis[3];
        sim_act_lut luts[3];
        uint32_t acts[3] = {SIM_ACT_CLIP, SIM_ACT_NONE, SIM_ACT_SILU};
        int lut_rc = 0;
        for (int e = 0; e < 3; e++) {
            sim_op op;
            memset(&op, 0, sizeof op);
            op.act = acts[e];
            op.act_p0 = -0.5f;
            op.act_p1 = 2.0f;
            memset(&epis[e], 0, sizeof epis[e]);
            sim_i8_epi_act(&epis[e], &op, 0.04f, 9);
            epis[e].bias = bias;
            epis[e].mult = mult;
            epis[e].rscale = rscale;
            epis[e].per_col = e == 1;
            lut_rc |= sim_i8_epi_lut(&epis[e], &luts[e]);
        }
        for (int isa = 0; isa <= best; isa++) {
            sim_i8_epi raw;
            memset(&raw, 0, sizeof raw);
            c32[isa] = malloc((size_t)(m * n) * sizeof(int32_t));
            sim_gemm_i8_packed_isa(isa, pa, pb, m, n, k, NULL, c32[isa], n, 1, 0, 0, &raw);
            for (int e = 0; e < 3; e++) {
                c8[isa][e] = malloc((size_t)(m * n));
                sim_gemm_i8_packed_isa(isa, pa, pb, m, n, k, c8[isa][e], NULL, n, 1, 0, 0, &epis[e]);
            }
        }
        int64_t bad = 0;
        for (int isa = 1; isa <= best; isa++) {
            bad += memcmp(c32[isa], c32[0], (size_t)(m * n) * sizeof(int32_t)) != 0;
            for (int e = 0; e < 3; e++) bad += memcmp(c8[isa][e], c8[0][e], (size_t)(m * n)) != 0;
        }
        /* and the portable sums against the definition */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                int64_t want = 0;
                for (int64_t q = 0; q < k; q++) want += (int64_t)a[i * k + q] * b[q * n + j];
                bad += c32[0][i * n + j] != want;
            }
        char what[120];
        snprintf(what, sizeof what, "int8 GEMM kernels C/AVX2/VNNI %lldx%lldx%lld: %lld mismatches", (long long)m,
                 (long long)n, (long long)k, (long long)bad);
        tg_check_true(what, lut_rc == 0 && bad == 0);
        for (int isa = 0; isa <= best; isa++) {
            free(c32[isa]);
            for (int e = 0; e < 3; e++) free(c8[isa][e]);
        }
        for (int e = 0; e < 3; e++) sim_act_lut_free(&luts[e]);
        free(a);
        free(b);
        free(pa);
        free(pb);
        free(bias);
        free(mult);
        free(rscale);
    }
}

void test_int8(void)
{
    qconv q = {.c = 16, .h = 9, .w = 10, .cout = 24, .group = 1, .k = 1, .s = 1, .pad = 0, .so = 0.02f, .zx = 3, .zo = -4};
    run_qconv(&q, "pointwise per-channel");
    q.act = SIM_ACT_CLIP;
    q.p0 = 0.0f;
    q.p1 = 0.5f;
    q.c = 64;
    q.h = q.w = 16;
    q.cout = 48;
    run_qconv(&q, "pointwise clip full tiles");
    q.h = q.w = 7;
    q.cout = 32;
    q.zo = 5;
    run_qconv(&q, "pointwise 7x7 transposed");
    q.h = q.w = 16;
    q.cout = 48;
    q.zo = -4;
    q.c = 600; /* deep: the int16 multiply-add kernel instead of the exact-float one */
    q.h = 5;
    q.w = 7;
    q.cout = 20;
    run_qconv(&q, "pointwise K=600 int16 kernel");
    q.c = 64;
    q.k = 3;
    q.pad = 1;
    q.cout = 13;
    q.zx = -9;
    run_qconv(&q, "3x3 K=576 int16 im2col");
    {
        /* the PP-OCRv4 det neck shape (issue 9): 96 channels to 24 (four full 6-row tiles), 3x3, Relu */
        qconv nk = {.c = 96, .h = 12, .w = 20, .cout = 24, .group = 1, .k = 3, .s = 1, .pad = 1, .so = 0.2f,
                    .zx = 4, .zo = -3, .act = SIM_ACT_RELU};
        run_qconv(&nk, "3x3 96 to 24 channels relu");
    }
    {
        /* the int16 im2col's planned blocks: blocks that start mid-row and span rows, stride 2, an odd
         * depth (the last k-pair half empty), a 5x5 kernel, rows wider than a block */
        qconv b = q;
        b = (qconv){.c = 64, .h = 33, .w = 47, .cout = 7, .group = 1, .k = 3, .s = 2, .pad = 1, .so = 0.2f, .zx = -9};
        run_qconv(&b, "3x3 stride 2 K=576 int16 im2col, blocks across rows");
        b = (qconv){.c = 57, .h = 12, .w = 80, .cout = 9, .group = 1, .k = 3, .s = 1, .pad = 0, .so = 0.2f, .zx = 5,
                    .act = SIM_ACT_SILU};
        run_qconv(&b, "3x3 K=513 int16 im2col, odd depth, SiLU");
        b = (qconv){.c = 24, .h = 21, .w = 19, .cout = 9, .group = 1, .k = 5, .s = 2, .pad = 2, .so = 0.2f, .zx = 2};
        run_qconv(&b, "5x5 stride 2 K=600 int16 im2col");
        b = (qconv){.c = 2, .h = 9, .w = 400, .cout = 6, .group = 1, .k = 3, .s = 1, .pad = 1, .so = 0.05f, .zx = 0};
        b.c = 64;
        run_qconv(&b, "3x3 K=576 int16 im2col, rows wider than a block");
    }
    q.pad = 0;
    q.zx = 3;
    q.act = SIM_ACT_RELU;
    q.k = 3;
    q.s = 2;
    q.pad = 1;
    q.c = 3;
    q.cout = 16;
    q.w_mode = 1;
    run_qconv(&q, "3x3 s2 per-tensor zp relu");
    q.w_mode = 2;
    q.act = SIM_ACT_SIGMOID;
    q.so = 1.0f / 255.0f;
    q.zo = -128;
    run_qconv(&q, "3x3 float weights sigmoid");
    q = (qconv){.c = 24, .h = 14, .w = 14, .cout = 24, .group = 24, .k = 3, .s = 1, .pad = 1, .so = 0.01f, .zx = -2,
                .act = SIM_ACT_CLIP, .p0 = 0.0f, .p1 = 6.0f};
    run_qconv(&q, "depthwise s1");
    q.s = 2;
    q.so = 0.001f; /* saturates */
    run_qconv(&q, "depthwise s2 saturating");
    q = (qconv){.c = 4, .h = 35, .w = 71, .cout = 4, .group = 4, .k = 3, .s = 1, .pad = 1, .so = 0.01f, .zx = 4, .zo = 2,
                .act = SIM_ACT_CLIP, .p0 = 0.0f, .p1 = 6.0f};
    run_qconv(&q, "depthwise wide s1 (fused requantisation)");
    q.s = 2;
    q.w = 80;
    q.act = SIM_ACT_NONE;
    run_qconv(&q, "depthwise wide s2 (fused requantisation)");
    /* the AVX2 depthwise row kernel: 5x5 and 7x7, stride 1 and 2, narrow planes, fused HardSwish/SiLU
     * (requantised after the kernel) and Clip (requantised by it) */
    {
        const int64_t ks[] = {5, 7, 3, 5, 7}, hs[] = {14, 7, 28, 9, 15};
        const uint32_t acts[] = {SIM_ACT_HARDSWISH, SIM_ACT_CLIP, SIM_ACT_SILU, SIM_ACT_NONE, SIM_ACT_HARDSWISH};
        for (int i = 0; i < 5; i++)
            for (int64_t st = 1; st <= 2; st++) {
                q = (qconv){.c = 6, .h = hs[i], .w = hs[i], .cout = 6, .group = 6, .k = ks[i], .s = st, .pad = ks[i] / 2,
                            .so = 0.02f, .zx = 5, .zo = -3, .act = acts[i], .p0 = 0.0f, .p1 = 6.0f};
                char label[64];
                snprintf(label, sizeof label, "depthwise %lldx%lld s%lld on %lldx%lld act %u", (long long)ks[i],
                         (long long)ks[i], (long long)st, (long long)hs[i], (long long)hs[i], acts[i]);
                run_qconv(&q, label);
            }
    }
    q = (qconv){.c = 3, .h = 40, .w = 66, .cout = 8, .group = 1, .k = 3, .s = 2, .pad = 1, .so = 0.02f, .zx = -3};
    run_qconv(&q, "3x3 s2 wide exact-float im2col");
    q = (qconv){.c = 8, .h = 6, .w = 7, .cout = 12, .group = 4, .k = 3, .s = 1, .pad = 0, .so = 0.02f, .act = SIM_ACT_HARDSWISH};
    run_qconv(&q, "grouped hardswish");
    q = (qconv){.c = 6, .h = 4, .w = 5, .cout = 4, .group = 2, .k = 3, .s = 2, .pad = 1, .so = 0.02f, .zx = 1, .zo = 1,
                .transpose = 1};
    run_qconv(&q, "transpose per-channel");
    q.w_mode = 2;
    run_qconv(&q, "transpose float weights");
    /* asymmetric per-channel weights (zero points down to -128): every Conv path subtracts them */
    {
        const qconv asym[] = {
            {.c = 16, .h = 9, .w = 10, .cout = 24, .group = 1, .k = 1, .s = 1, .so = 0.05f, .zx = 3, .zo = -4},
            {.c = 600, .h = 5, .w = 7, .cout = 20, .group = 1, .k = 1, .s = 1, .so = 0.5f, .zx = 3, .zo = -4},
            {.c = 64, .h = 16, .w = 16, .cout = 13, .group = 1, .k = 3, .s = 1, .pad = 1, .so = 0.2f, .zx = -9},
            {.c = 6, .h = 15, .w = 15, .cout = 6, .group = 6, .k = 7, .s = 1, .pad = 3, .so = 0.05f, .zx = 5, .zo = -3},
            {.c = 24, .h = 14, .w = 14, .cout = 24, .group = 24, .k = 3, .s = 2, .pad = 1, .so = 0.02f, .zx = -2,
             .act = SIM_ACT_SILU},
        };
        const char *labels[] = {"pointwise asymmetric weights", "pointwise K=600 int16 asymmetric weights",
                                "3x3 im2col asymmetric weights", "depthwise 7x7 asymmetric weights",
                                "depthwise 3x3 s2 silu asymmetric weights"};
        for (int i = 0; i < 5; i++) {
            q = asym[i];
            q.w_mode = 3;
            run_qconv(&q, labels[i]);
        }
    }

    gemm_i8_case(1, 100, 128, 1, 0, SIM_ACT_NONE);
    gemm_i8_case(9, 37, 51, 0, 0, SIM_ACT_RELU);
    gemm_i8_case(4, 20, 33, 0, 1, SIM_ACT_TANH);

    int64_t d4[4] = {1, 5, 6, 7};
    deq_case(SIM_OP_ADD, 2, d4, 4, 0.03f, 0);
    deq_case(SIM_OP_MUL, 2, d4, 4, 0.03f, 3);
    deq_case(SIM_OP_SIGMOID, 1, d4, 4, 1.0f / 256.0f, -128);
    deq_case(SIM_OP_RELU, 1, d4, 4, 0.01f, -128);
}
