/* The int8 activation table (ops/act_lut.h) against the direct evaluation it replaces: identical codes
 * for every accumulator a conv produces over a wide range, for reals around every switch point of the
 * table, and for random reals inside and outside its window. */
#include "harness.h"
#include "ops/act_lut.h"
#include "ops/gemm_i8.h"

static int32_t lut_or_direct(const sim_act_lut *t, uint32_t act, float p0, float p1, float so, int32_t zo, float r)
{
    int32_t c = sim_act_lut_get(t, r);
    return c != SIM_ACT_LUT_DIRECT ? c : sim_act_lut_direct(act, p0, p1, so, zo, r);
}

static int tails; /* tail codes the cases built (the saturating ones must have them) */

static void lut_case(uint32_t act, float p0, float p1, float so, int32_t zo)
{
    sim_act_lut t;
    char what[160];
    snprintf(what, sizeof what, "act lut %u so %g zo %d", act, so, zo);
    if (sim_act_lut_build(&t, act, p0, p1, so, zo)) {
        tg_check_true(what, 0);
        return;
    }
    int64_t bad = 0, direct = 0, inside = 0, n = 0;
    const float rscales[] = {so * 0.0131f, so * 0.00177f, so * 0.093f};
    for (int s = 0; s < 3; s++)
        for (int32_t acc = -(1 << 16); acc <= (1 << 16); acc++) {
            float r = (float)acc * rscales[s];
            int32_t c = sim_act_lut_get(&t, r);
            if (r >= t.lo && r < -t.lo) {
                inside++;
                direct += c == SIM_ACT_LUT_DIRECT;
            }
            int32_t want = sim_act_lut_direct(act, p0, p1, so, zo, r);
            if (lut_or_direct(&t, act, p0, p1, so, zo, r) != want && bad++ == 0)
                printf("  %s: real %.9g (acc %d) table %d direct %d\n", what, (double)r, acc, c, want);
            n++;
        }
    for (int32_t i = 0; i < t.n; i++) {
        if (!(t.thr[i] < __builtin_inff())) continue;
        float r = t.thr[i];
        for (int k = 0; k < 6; k++) r = nextafterf(r, -__builtin_inff());
        for (int k = 0; k < 12; k++, r = nextafterf(r, __builtin_inff()), n++)
            bad += lut_or_direct(&t, act, p0, p1, so, zo, r) != sim_act_lut_direct(act, p0, p1, so, zo, r);
    }
    for (int i = 0; i < 200000; i++, n++) {
        float r = tg_randf() * (i % 2 ? 12.0f : 300.0f * so);
        bad += lut_or_direct(&t, act, p0, p1, so, zo, r) != sim_act_lut_direct(act, p0, p1, so, zo, r);
    }
    /* far outside the window (the tail codes), the float extremes and the infinities */
    for (int i = 0; i < 200000; i++, n++) {
        float r = tg_randf() * (i % 3 == 0 ? 1e3f : (i % 3 == 1 ? 1e8f : 3e38f));
        bad += lut_or_direct(&t, act, p0, p1, so, zo, r) != sim_act_lut_direct(act, p0, p1, so, zo, r);
    }
    const float edges[] = {FLT_MAX, -FLT_MAX, __builtin_inff(), -__builtin_inff(), t.lo, -t.lo,
                           nextafterf(t.lo, -1e30f), nextafterf(-t.lo, 1e30f), nextafterf(-t.lo, 0.0f)};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++, n++)
        bad += lut_or_direct(&t, act, p0, p1, so, zo, edges[i]) != sim_act_lut_direct(act, p0, p1, so, zo, edges[i]);
    bad += sim_act_lut_get(&t, __builtin_nanf("")) != SIM_ACT_LUT_DIRECT;
    bad += sim_act_lut_get(&t, __builtin_inff()) != SIM_ACT_LUT_DIRECT;
    bad += sim_act_lut_get(&t, -__builtin_inff()) != SIM_ACT_LUT_DIRECT;
    tails += (t.below != SIM_ACT_LUT_DIRECT) + (t.above != SIM_ACT_LUT_DIRECT);
    snprintf(what + strlen(what), sizeof what - strlen(what), ": %lld of %lld differ (%.1f%% direct)",
             (long long)bad, (long long)n, 100.0 * (double)direct / (double)inside);
    snprintf(what + strlen(what), sizeof what - strlen(what), ", tails %d %d", t.below, t.above);
    tg_check_true(what, bad == 0 && t.n > 0 && direct * 10 < inside);
    sim_act_lut_free(&t);
}

void test_act_lut(void)
{
    /* sim_lut_i8 (AVX2 when the CPU has it) against its portable loop, every length up to 100 and a long
     * one, out of place and in place */
    {
        int8_t tab[256], x[1100], a[1100], b[1100];
        for (int i = 0; i < 256; i++) tab[i] = (int8_t)(tg_randf() * 127.0f);
        for (int i = 0; i < 1100; i++) x[i] = (int8_t)(i < 256 ? i - 128 : (int)(tg_randf() * 128.0f));
        int same = 1;
        for (size_t n = 0; n <= 100; n++) {
            memset(a, 0x55, sizeof a);
            memset(b, 0x55, sizeof b);
            sim_lut_i8(tab, x + 3, a, n);
            sim_lut_i8_c(tab, x + 3, b, n);
            same &= memcmp(a, b, sizeof a) == 0;
        }
        sim_lut_i8(tab, x, a, 1100);
        sim_lut_i8_c(tab, x, b, 1100);
        same &= memcmp(a, b, sizeof a) == 0;
        for (int i = 0; i < 256; i++) same &= a[i] == tab[i];
        memcpy(a, x, sizeof a);
        sim_lut_i8(tab, a, a, 1100);
        same &= memcmp(a, b, sizeof a) == 0;
        tg_check_true("sim_lut_i8 vs its portable loop (lengths 0-100, 1100, in place)", same);
    }
    lut_case(SIM_ACT_SIGMOID, 0, 0, 1.0f / 255.0f, -128);
    lut_case(SIM_ACT_SILU, 0, 0, 0.047f, -122);
    lut_case(SIM_ACT_SILU, 0, 0, 0.0031f, -40);
    lut_case(SIM_ACT_HARDSWISH, 0, 0, 0.031f, -115);
    lut_case(SIM_ACT_HARDSIGMOID, 0.2f, 0.5f, 1.0f / 255.0f, -128);
    lut_case(SIM_ACT_TANH, 0, 0, 2.0f / 255.0f, 0);
    lut_case(SIM_ACT_LEAKY, 0.1f, 0, 0.02f, 3);
    lut_case(SIM_ACT_HARDSIGMOID, -0.2f, 0.5f, 1.0f / 255.0f, -128);
    lut_case(SIM_ACT_SIGMOID, 0, 0, 1.0f / 1024.0f, -128); /* 1 - sigmoid(8) is > half a code: high tail direct */
    /* Sigmoid, HardSigmoid, Tanh both tails; HardSwish and SiLU at least the low one; Leaky none */
    char what[64];
    snprintf(what, sizeof what, "act lut: %d tail codes", tails);
    tg_check_true(what, tails >= 15);
}

/* The float Sigmoid/SiLU fast path: AVX2 and portable C give the same bits (on any length, so any
 * thread split), and stay within a few ulp of expf-based evaluation for |x| < 87 (beyond, the exp
 * argument is clamped: results below 1e-30 in magnitude, zero in fp16). */
void test_sigmoid_fast(void)
{
    enum { N = 100003 };
    float *x = malloc(N * sizeof(float)), *a = malloc(N * sizeof(float)), *c = malloc(N * sizeof(float));
    if (!x || !a || !c) {
        tg_check_true("sigmoid fast: allocation", 0);
        free(x), free(a), free(c);
        return;
    }
    for (int silu = 0; silu <= 1; silu++) {
        for (int i = 0; i < N; i++) x[i] = i < 8 ? (float[]){0.0f, -0.0f, 88.5f, -88.5f, 1e30f, -1e30f, 1e-30f,
                                                             __builtin_nanf("")}[i]
                                                 : tg_randf() * (i % 3 ? 12.0f : 100.0f);
        memcpy(a, x, N * sizeof(float));
        memcpy(c, x, N * sizeof(float));
        sim_sigmoid_array(1, a, N, silu); /* the AVX2 path where the CPU has it */
        sim_sigmoid_array(0, c, N, silu);
        int64_t diff = 0, far = 0;
        for (int i = 0; i < N; i++) {
            diff += memcmp(&a[i], &c[i], sizeof(float)) != 0;
            float want = sim_apply_act(silu ? SIM_ACT_SILU : SIM_ACT_SIGMOID, 0, 0, x[i]);
            if (want != want) far += c[i] == c[i];
            else if (fabsf(x[i]) < 87.0f) far += fabsf(c[i] - want) > 4e-7f * fabsf(want) + 1e-30f;
        }
        char what[120];
        snprintf(what, sizeof what, "%s fast: %lld differ between AVX2 and C, %lld beyond 4e-7 relative of expf",
                 silu ? "silu" : "sigmoid", (long long)diff, (long long)far);
        tg_check_true(what, diff == 0 && far == 0);
    }
    free(x);
    free(a);
    free(c);
}

/* epi for activation act (HardSigmoid alpha 0.2, beta 0.5) into so / zo with the given per-channel scales,
 * its table built into *lut; the table builder's status (test_act_trans.c uses it too). */
int act_epi(sim_i8_epi *epi, sim_act_lut *lut, uint32_t act, float so, int32_t zo, const float *mult,
            const float *rscale)
{
    sim_op op;
    memset(&op, 0, sizeof op);
    op.act = act;
    op.act_p0 = 0.2f;
    op.act_p1 = 0.5f;
    memset(epi, 0, sizeof *epi);
    sim_i8_epi_act(epi, &op, so, zo);
    epi->mult = mult;
    epi->rscale = rscale;
    return sim_i8_epi_lut(epi, lut);
}

/* The vector table requantisation (sim_i8_requant_act_row/row32), the direct vector HardSwish and
 * HardSigmoid, and sim_i8_requant_row32 against scalar sim_i8_requant: identical codes, also for
 * accumulators large enough to saturate and for output scales small enough that the rounding input
 * leaves the range where sim_round_away truncates. */
void test_act_lut_rows(void)
{
    enum { N = 4099 };
    static float acc[N];
    static int32_t acc32[N];
    static int8_t got[N], got32[N];
    float mult[2] = {0.0021f, 0.013f}, rscale[2] = {0.0021f * 0.05f, 0.013f * 0.05f};
    uint32_t acts[] = {SIM_ACT_SILU, SIM_ACT_SIGMOID, SIM_ACT_HARDSWISH, SIM_ACT_TANH, SIM_ACT_HARDSIGMOID,
                       SIM_ACT_HARDSWISH, SIM_ACT_HARDSIGMOID};
    float sos[] = {0.05f, 0.05f, 0.05f, 0.05f, 1.0f / 255.0f, 1e-9f, 1e-9f};
    for (int a = 0; a < 7; a++) {
        sim_i8_epi epi;
        sim_act_lut lut;
        int rc = act_epi(&epi, &lut, acts[a], sos[a], a == 4 ? -128 : -100, mult, rscale);
        int64_t bad = 0;
        /* pass 0: every 5th accumulator large (most 8-lane groups mix window and tail lanes); pass 1:
         * groups wholly inside the window (the vector table's shortcut) except one tail lane, at a
         * position that moves, in every third group */
        for (int pass = 0; pass < 2; pass++) {
            for (int ch = 0; ch < 2; ch++) {
                for (int i = 0; i < N; i++) {
                    int tail = pass ? (i / 8) % 3 == 0 && i % 8 == (i / 24) % 8 : i % 5 == 0;
                    acc32[i] = (int32_t)(tg_randf() * (tail ? 3e6f : pass ? 3000.0f : 30000.0f));
                    acc[i] = (float)acc32[i];
                }
                sim_i8_requant_act_row(1, &epi, acc, 17, N, ch, got);
                sim_i8_requant_act_row32(1, &epi, acc32, 17, N, ch, got32);
                for (int i = 0; i < N; i++) {
                    int8_t want = sim_i8_requant(&epi, acc32[i] + 17, ch);
                    bad += (got[i] != want) + (got32[i] != want);
                }
                sim_i8_requant_row32(1, &epi, acc32, 17, N, ch, got32);
                for (int i = 0; i < N; i++) bad += got32[i] != sim_i8_requant(&epi, acc32[i] + 17, ch);
            }
        }
        char what[100];
        snprintf(what, sizeof what, "act table rows, act %u: %lld codes differ from sim_i8_requant", acts[a],
                 (long long)bad);
        tg_check_true(what, rc == 0 && (epi.lut || sos[a] < 1e-6f) && bad == 0);
        sim_act_lut_free(&lut);
    }
    /* linear activations (none, clamp) through sim_i8_requant_row32: the vector rounding of the GEMM
     * epilogue, which may differ from the scalar rule only within one float ulp below a .5 boundary */
    for (int a = 0; a < 2; a++) {
        sim_op op;
        memset(&op, 0, sizeof op);
        op.act = a ? SIM_ACT_CLIP : SIM_ACT_NONE;
        op.act_p0 = 0.0f;
        op.act_p1 = 3.0f;
        sim_i8_epi epi;
        memset(&epi, 0, sizeof epi);
        sim_i8_epi_act(&epi, &op, 0.05f, -7);
        epi.mult = mult;
        epi.rscale = rscale;
        int64_t bad = 0;
        for (int i = 0; i < N; i++) acc32[i] = (int32_t)(tg_randf() * (i % 5 ? 30000.0f : 3e6f));
        for (int ch = 0; ch < 2; ch++) {
            sim_i8_requant_row32(1, &epi, acc32, -5, N, ch, got32);
            for (int i = 0; i < N; i++) bad += abs(got32[i] - sim_i8_requant(&epi, acc32[i] - 5, ch)) > 0;
        }
        char what[100];
        snprintf(what, sizeof what, "linear requant rows, act %u: %lld codes differ", op.act, (long long)bad);
        tg_check_true(what, bad <= 2);
    }
}

/* Accumulator windows around every code switch of channel ch on acc >= 0 (where HardSwish, HardSigmoid
 * and SiLU are monotone), found by bisection on sim_i8_requant: acc[0, n) gets W accumulators centred
 * on each switch, then the rest random. With a small real scale consecutive accumulators are a few
 * floats apart, so many switches have one within a float ulp or two of a half: where a reciprocal
 * multiplied instead of a division rounds the other way. */
static void switch_windows(const sim_i8_epi *epi, int64_t ch, int32_t bias, int32_t *acc, int n)
{
    enum { W = 256 };
    int k = 0;
    const int32_t hi = (1 << 24) - 65536; /* accumulators held exactly in floats, bias included */
    int32_t lo = 0;
    int8_t top = sim_i8_requant(epi, hi + bias, ch);
    while (k + W <= n) {
        int8_t c = sim_i8_requant(epi, lo + bias, ch);
        if (c == top) break;
        int32_t a = lo, b = hi; /* code(a) == c, code(b) != c */
        while (b - a > 1) {
            int32_t m = a + (b - a) / 2;
            if (sim_i8_requant(epi, m + bias, ch) == c) a = m;
            else b = m;
        }
        for (int i = 0; i < W; i++) acc[k++] = b - W / 2 + i;
        lo = b;
    }
    for (; k < n; k++) acc[k] = (int32_t)(tg_randf() * 3e6f);
}

/* The tile form (sim_i8_requant_act_tile: rows with their own channel and bias, float or int32
 * accumulators) and HardSwish/HardSigmoid through a multiplication by the reciprocal with the
 * rounding-margin fallback, on accumulators around every code switch (switch_windows): every code must
 * equal scalar sim_i8_requant's, AVX2 and portable. */
void test_act_tile_sweep(void)
{
    enum { ROWS = 3, N = 256 * 256, LD = N + 5 };
    float *acc = malloc((size_t)ROWS * LD * sizeof(float));
    int32_t *acc32 = malloc((size_t)ROWS * LD * sizeof(int32_t));
    int8_t *got = malloc((size_t)ROWS * LD), *got32 = malloc((size_t)ROWS * LD);
    if (!acc || !acc32 || !got || !got32) {
        tg_check_true("act tile sweep: allocation", 0);
        free(acc), free(acc32), free(got), free(got32);
        return;
    }
    const uint32_t acts[] = {SIM_ACT_HARDSWISH, SIM_ACT_HARDSIGMOID, SIM_ACT_HARDSWISH, SIM_ACT_SILU, SIM_ACT_HARDSIGMOID};
    const float sos[] = {0.031f, 1.0f / 255.0f, 0.0123457f, 0.047f, 0.00731f};
    const int32_t zos[] = {-115, -128, 3, -122, -60};
    for (int a = 0; a < 5; a++) {
        float rscale[ROWS], mult[ROWS];
        int32_t bias[ROWS] = {-40000, 123, 40000};
        for (int r = 0; r < ROWS; r++) {
            rscale[r] = 1.1e-6f * (1.0f + 0.37f * (float)r);
            mult[r] = rscale[r] / sos[a];
        }
        sim_i8_epi epi;
        sim_act_lut lut;
        int rc = act_epi(&epi, &lut, acts[a], sos[a], zos[a], mult, rscale);
        for (int r = 0; r < ROWS; r++) {
            switch_windows(&epi, r, bias[r], acc32 + r * LD, LD);
            for (int i = 0; i < LD; i++) acc[r * LD + i] = (float)acc32[r * LD + i];
        }
        int64_t bad = 0;
        for (int avx2 = 0; avx2 <= 1; avx2++) {
            sim_i8_requant_act_tile(avx2, &epi, acc, NULL, LD, ROWS, N + 3, 0, bias, got, LD);
            sim_i8_requant_act_tile(avx2, &epi, NULL, acc32, LD, ROWS, N + 3, 0, bias, got32, LD);
            for (int r = 0; r < ROWS; r++)
                for (int i = 0; i < N + 3; i++) {
                    int8_t want = sim_i8_requant(&epi, acc32[r * LD + i] + bias[r], r);
                    bad += (got[r * LD + i] != want) + (got32[r * LD + i] != want);
                }
        }
        char what[100];
        snprintf(what, sizeof what, "act tile sweep, act %u so %g: %lld codes differ from sim_i8_requant", acts[a],
                 (double)sos[a], (long long)bad);
        tg_check_true(what, rc == 0 && epi.lut && bad == 0);
        sim_act_lut_free(&lut);
    }
    free(acc);
    free(acc32);
    free(got);
    free(got32);
}

/* Per-column requantisation of the int8 GEMM (Gemm/MatMul: channel = column) against scalar
 * sim_i8_requant on the raw int32 products, for linear, clamped, direct and tabulated activations. */
void test_gemm_i8_percol(void)
{
    enum { M = 7, N = 37, K = 19 };
    int16_t a[M * K], b[K * N];
    int32_t c32[M * N], bias[N];
    int8_t c8[M * N];
    float mult[N], rscale[N];
    for (int i = 0; i < M * K; i++) a[i] = (int16_t)(tg_randf() * 255.0f);
    for (int i = 0; i < K * N; i++) b[i] = (int16_t)(tg_randf() * 255.0f);
    for (int j = 0; j < N; j++) {
        bias[j] = (int32_t)(tg_randf() * 20000.0f);
        rscale[j] = 0.00002f * (1.0f + (float)(j % 5));
        mult[j] = rscale[j] / 0.04f;
    }
    int16_t *pa = calloc(sim_pack_a16_size(M, K), sizeof(int16_t)), *pb = calloc(sim_pack_b16_size(K, N), sizeof(int16_t));
    sim_pack_a16(a, K, 1, M, K, pa);
    sim_pack_b16(b, N, 1, K, N, pb);
    sim_i8_epi raw;
    memset(&raw, 0, sizeof raw);
    sim_gemm_i8_packed(1, pa, pb, M, N, K, NULL, c32, N, 1, 0, 0, &raw);
    uint32_t acts[] = {SIM_ACT_NONE, SIM_ACT_CLIP, SIM_ACT_RELU, SIM_ACT_HARDSWISH, SIM_ACT_SILU};
    for (int t = 0; t < 5; t++) {
        sim_op op;
        memset(&op, 0, sizeof op);
        op.act = acts[t];
        op.act_p0 = -0.5f;
        op.act_p1 = 2.0f;
        sim_i8_epi epi;
        memset(&epi, 0, sizeof epi);
        sim_act_lut lut;
        sim_i8_epi_act(&epi, &op, 0.04f, 9);
        epi.bias = bias;
        epi.mult = mult;
        epi.rscale = rscale;
        epi.per_col = 1;
        int rc = sim_i8_epi_lut(&epi, &lut);
        sim_gemm_i8_packed(1, pa, pb, M, N, K, c8, NULL, N, 1, 0, 0, &epi);
        int64_t bad = 0;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) bad += c8[i * N + j] != sim_i8_requant(&epi, c32[i * N + j] + bias[j], j);
        char what[100];
        snprintf(what, sizeof what, "int8 GEMM per-column requantisation, act %u: %lld codes differ", acts[t],
                 (long long)bad);
        tg_check_true(what, rc == 0 && bad == 0);
        sim_act_lut_free(&lut);
    }
    free(pa);
    free(pb);
}

/* sim_i8_requant_cols (the per-column requantisation the GEMM epilogue and int8 MatMul share), AVX2 and
 * portable, against scalar sim_i8_requant with the column as channel and, for none and Relu/Clip,
 * against the rule int8 MatMul had (round, + zo, then clamp to [qlo, qhi]): identical codes. */
void test_requant_cols(void)
{
    enum { N = 1031 };
    static float mult[N], rscale[N];
    static int32_t acc[N];
    static int8_t got[2][N];
    uint32_t acts[] = {SIM_ACT_NONE, SIM_ACT_RELU, SIM_ACT_CLIP, SIM_ACT_SILU, SIM_ACT_HARDSWISH};
    for (int i = 0; i < N; i++) {
        mult[i] = 0.0005f + 0.02f * (tg_randf() + 1.0f);
        rscale[i] = mult[i] * 0.05f;
        acc[i] = (int32_t)(tg_randf() * (i % 7 ? 9000.0f : 3e6f));
    }
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        sim_op op;
        memset(&op, 0, sizeof op);
        op.act = acts[a];
        op.act_p0 = -0.3f;
        op.act_p1 = 2.5f;
        sim_i8_epi epi;
        memset(&epi, 0, sizeof epi);
        sim_act_lut lut;
        sim_i8_epi_act(&epi, &op, 0.05f, -7);
        epi.mult = mult;
        epi.rscale = rscale;
        epi.per_col = 1;
        int rc = sim_i8_epi_lut(&epi, &lut);
        int64_t bad = 0;
        for (int v = 0; v < 2; v++) sim_i8_requant_cols(v, &epi, acc, N, 0, got[v]);
        for (int j = 0; j < N; j++) {
            int8_t want = sim_i8_requant(&epi, acc[j], j);
            bad += (got[0][j] != want) + (got[1][j] != want);
            if (epi.act == SIM_ACT_NONE || epi.clamp) {
                float q = sim_round_away((float)acc[j] * mult[j]) + (float)epi.zo;
                q = q < epi.qlo ? epi.qlo : (q > epi.qhi ? epi.qhi : q);
                bad += got[1][j] != (int8_t)(int32_t)q;
            }
        }
        char what[100];
        snprintf(what, sizeof what, "requant cols, act %u: %lld codes differ", acts[a], (long long)bad);
        tg_check_true(what, rc == 0 && bad == 0);
        sim_act_lut_free(&lut);
    }
}
