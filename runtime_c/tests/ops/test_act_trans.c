/* The vector SiLU, Sigmoid and Tanh requantisation (gemm_i8.c trans32_avx2: an exp polynomial and a
 * rounding-margin fallback instead of the table) against scalar sim_i8_requant: accumulators around
 * every code switch of each monotone piece (where the vector value and the direct one could round
 * apart), accumulators far out (the lanes beyond TRANS_MAX_REAL the scalar path redoes), tiles whose
 * rows are shorter than the 4-vector step (the step spans rows), and the per-column form. Every code
 * must be identical, AVX2 and portable. */
#include "harness.h"
#include "ops/act_lut.h"
#include "ops/gemm_i8.h"

enum { W = 64 }; /* accumulators per switch window */

/* Appends to acc[*k, n) a window of W accumulators around every code switch of channel ch on
 * [lo, hi], where the code is monotone in acc (either way): bisection on sim_i8_requant. */
static void windows(const sim_i8_epi *epi, int64_t ch, int32_t bias, int32_t lo, int32_t hi, int32_t *acc, int n,
                    int *k)
{
    int8_t last = sim_i8_requant(epi, hi + bias, ch);
    while (*k + W <= n) {
        int8_t c = sim_i8_requant(epi, lo + bias, ch);
        if (c == last) return;
        int32_t a = lo, b = hi; /* code(a) == c, code(b) != c */
        while (b - a > 1) {
            int32_t m = a + (b - a) / 2;
            if (sim_i8_requant(epi, m + bias, ch) == c) a = m;
            else b = m;
        }
        for (int i = 0; i < W; i++) acc[(*k)++] = b - W / 2 + i;
        lo = b;
    }
}

/* test_act_lut.c: epi for act into so / zo with these scales, its table built into *lut. */
int act_epi(sim_i8_epi *epi, sim_act_lut *lut, uint32_t act, float so, int32_t zo, const float *mult,
            const float *rscale);

void test_act_trans(void)
{
    enum { ROWS = 6, N = 40000, LD = N + 3, TILE = 24 };
    const int32_t top = (1 << 24) - 65536; /* |acc + bias| held exactly in floats */
    float *accf = malloc((size_t)ROWS * LD * sizeof(float));
    int32_t *acc = malloc((size_t)ROWS * LD * sizeof(int32_t));
    int8_t *got = malloc((size_t)ROWS * LD);
    if (!accf || !acc || !got) {
        tg_check_true("act trans: allocation", 0);
        free(accf), free(acc), free(got);
        return;
    }
    const struct { uint32_t act; float so; int32_t zo; } cases[] = {
        {SIM_ACT_SILU, 0.047f, -122},       {SIM_ACT_SILU, 0.0123457f, 3},     {SIM_ACT_SILU, 1.7e-4f, -128},
        {SIM_ACT_SIGMOID, 1.0f / 255.0f, -128}, {SIM_ACT_SIGMOID, 0.0091f, 17}, {SIM_ACT_TANH, 1.0f / 127.0f, 0},
        {SIM_ACT_TANH, 0.0213f, -9},        {SIM_ACT_SILU, 0.61f, -100},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float rscale[ROWS], mult[ROWS];
        int32_t bias[ROWS] = {-40000, 123, 40000, 0, -7, 999};
        for (int r = 0; r < ROWS; r++) {
            /* small scales: neighbouring accumulators a few floats apart at the switches; the last rows
             * large enough that some reals pass TRANS_MAX_REAL */
            rscale[r] = (r < 4 ? 1.3e-6f : 4e-3f) * (1.0f + 0.29f * (float)r) * (cases[c].so / 0.047f);
            mult[r] = rscale[r] / cases[c].so;
        }
        sim_i8_epi epi;
        sim_act_lut lut;
        int rc = act_epi(&epi, &lut, cases[c].act, cases[c].so, cases[c].zo, mult, rscale);
        for (int r = 0; r < ROWS; r++) {
            int32_t *a = acc + r * LD, b = bias[r];
            int k = 0;
            /* SiLU falls to its minimum at -1.2785 then rises; Sigmoid and Tanh rise everywhere */
            int32_t amin = cases[c].act == SIM_ACT_SILU ? (int32_t)(-1.2785f / rscale[r]) : 0;
            amin = amin < -top ? -top : amin;
            windows(&epi, r, b, 0, top - b, a, LD / 2, &k);
            windows(&epi, r, b, amin, 0, a, 3 * LD / 4, &k);
            if (amin > -top) windows(&epi, r, b, -top - b, amin, a, LD - LD / 8, &k);
            for (; k < LD; k++) a[k] = (int32_t)(tg_randf() * (float)(k % 3 ? 3e6 : 1.5e7)) - b;
            for (int i = 0; i < LD; i++) accf[r * LD + i] = (float)a[i];
        }
        int64_t bad[4] = {0, 0, 0, 0};
        for (int avx2 = 0; avx2 <= 1; avx2++) {
            /* whole rows, then tiles of TILE columns (three vectors a row: the 4-vector step spans rows) */
            for (int form = 0; form < 2; form++) {
                int64_t width = form ? TILE : N;
                for (int64_t c0 = 0; c0 < N; c0 += width) {
                    int64_t w = N - c0 < width ? N - c0 : width;
                    sim_i8_requant_act_tile(avx2, &epi, (c0 / width) % 2 ? accf + c0 : NULL,
                                            (c0 / width) % 2 ? NULL : acc + c0, LD, ROWS, w, 0, bias, got + c0, LD);
                }
                for (int r = 0; r < ROWS; r++)
                    for (int i = 0; i < N; i++)
                        bad[avx2 * 2 + form] += got[r * LD + i] != sim_i8_requant(&epi, acc[r * LD + i] + bias[r], r);
            }
        }
        char what[160];
        snprintf(what, sizeof what, "act trans, act %u so %g: codes differ from sim_i8_requant (C rows %lld tiles %lld, "
                 "AVX2 rows %lld tiles %lld)", cases[c].act, (double)cases[c].so, (long long)bad[0], (long long)bad[1],
                 (long long)bad[2], (long long)bad[3]);
        tg_check_true(what, rc == 0 && epi.lut && bad[0] + bad[1] + bad[2] + bad[3] == 0);
        sim_act_lut_free(&lut);
    }
    free(accf);
    free(acc);
    free(got);
}

/* The per-column form (Gemm/MatMul: channel = column, sim_i8_requant_cols) of the vector SiLU, Sigmoid
 * and Tanh: columns with their own scales, accumulators dense around zero and spread wide. */
void test_act_trans_cols(void)
{
    enum { N = 8192 + 13 };
    static float rscale[N], mult[N];
    static int32_t acc[N];
    static int8_t got[2][N];
    const uint32_t acts[] = {SIM_ACT_SILU, SIM_ACT_SIGMOID, SIM_ACT_TANH};
    for (int a = 0; a < 3; a++) {
        float so = a == 2 ? 1.0f / 127.0f : 0.031f;
        for (int j = 0; j < N; j++) {
            rscale[j] = 1e-4f * (1.0f + (float)(j % 97) / 13.0f);
            mult[j] = rscale[j] / so;
        }
        sim_i8_epi epi;
        sim_act_lut lut;
        int rc = act_epi(&epi, &lut, acts[a], so, a == 1 ? -128 : -3, mult, rscale);
        int64_t bad = 0;
        for (int pass = 0; pass < 4; pass++) {
            for (int j = 0; j < N; j++)
                acc[j] = pass < 2 ? (int32_t)(tg_randf() * (pass ? 1e6f : 6e4f)) : j * (pass == 2 ? 7 : -11) + pass;
            for (int v = 0; v < 2; v++) sim_i8_requant_cols(v, &epi, acc, N, 0, got[v]);
            for (int j = 0; j < N; j++) {
                int8_t want = sim_i8_requant(&epi, acc[j], j);
                bad += (got[0][j] != want) + (got[1][j] != want);
            }
        }
        char what[120];
        snprintf(what, sizeof what, "act trans columns, act %u: %lld codes differ from sim_i8_requant", acts[a],
                 (long long)bad);
        tg_check_true(what, rc == 0 && bad == 0);
        sim_act_lut_free(&lut);
    }
}
