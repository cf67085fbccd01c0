/* The int8 element-wise fast paths against their portable forms, bit for bit. */
#include "harness.h"
#include "ops/act_lut.h"
#include "ops/elt_i8.h"
#include "ops/gemm_i8.h"

int act_epi(sim_i8_epi *epi, sim_act_lut *lut, uint32_t act, float so, int32_t zo, const float *mult,
            const float *rscale);

void test_i8_fast(void);

/* Every form of sim_lut_i8 the CPU runs against the portable loop: random tables, every length up to
 * 300 (the masked tails of the 64-code vectors), misaligned, in place. */
static void lut_isa_case(int isa)
{
    int8_t tab[256], x[1300], a[1300], b[1300];
    int same = 1;
    for (int rep = 0; rep < 4; rep++) {
        for (int i = 0; i < 256; i++) tab[i] = (int8_t)(int)(tg_randf() * 128.0f);
        for (int i = 0; i < 1300; i++) x[i] = (int8_t)(i < 256 ? i - 128 : (int)(tg_randf() * 128.0f));
        for (size_t n = 0; n <= 300; n++) {
            memset(a, 0x55, sizeof a);
            memset(b, 0x55, sizeof b);
            sim_lut_i8_isa(isa, tab, x + 1 + rep, a + 3, n);
            sim_lut_i8_c(tab, x + 1 + rep, b + 3, n);
            same &= memcmp(a, b, sizeof a) == 0;
        }
        sim_lut_i8_isa(isa, tab, x, a, 1300);
        for (int i = 0; i < 256; i++) same &= a[i] == tab[i];
        sim_lut_i8_c(tab, x, b, 1300);
        memcpy(a, x, sizeof a);
        sim_lut_i8_isa(isa, tab, a, a, 1300);
        same &= memcmp(a, b, sizeof a) == 0;
    }
    char what[96];
    snprintf(what, sizeof what, "sim_lut_i8 form %d vs the portable loop (lengths 0-300, 1300, in place)", isa);
    tg_check_true(what, same);
}


/* The chunked path's rule for one element (dequantise, the operation, sim_quant_array's rounding). */
static int8_t elt_ref(int op, const sim_elt_i8_operand *a, const sim_elt_i8_operand *b, int64_t i, float so, int32_t zo)
{
    float x[2];
    const sim_elt_i8_operand *s[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        int64_t e = i * s[k]->stride;
        if (s[k]->q) sim_dequant_array(s[k]->q + e, &x[k], 1, s[k]->scale, s[k]->zp);
        else x[k] = s[k]->f[e];
    }
    float v = op == SIM_ELT_I8_ADD ? x[0] + x[1] : (op == SIM_ELT_I8_SUB ? x[0] - x[1] : x[0] * x[1]);
    int8_t q;
    sim_quant_array(&v, &q, 1, so, zo);
    return q;
}

/* Every form of sim_elt_i8_row against the element rule: the three ops, int8/float operands with stride 1
 * or 0, scales that put many values on a half (so = sa * sb: products of codes land on .5 exactly),
 * saturating ones, every length up to 80 and a long row. */
static void elt_row_case(int isa)
{
    enum { N = 700 };
    int8_t qa[N], qb[N], y[N + 8], want[N + 8];
    float fa[N], fb[N];
    int bad = 0, cases = 0;
    const float scales[][3] = {{0.5f, 0.25f, 0.125f}, {0.02f, 0.03f, 0.05f}, {0.1f, 0.1f, 0.001f},
                               {0.0471f, 0.0039f, 0.0471f}, {1.0f, 1.0f, 2.0f}};
    for (int i = 0; i < N; i++) {
        qa[i] = (int8_t)(int)(tg_randf() * 128.0f);
        qb[i] = (int8_t)(int)(tg_randf() * 128.0f);
        fa[i] = tg_randf() * 4.0f;
        fb[i] = i % 7 == 0 ? (float)(i % 5) * 0.5f : tg_randf() * 3.0f;
    }
    fa[5] = __builtin_nanf("");
    for (int op = 0; op < 3; op++)
        for (int sc = 0; sc < 5; sc++)
            for (int form = 0; form < 6; form++) {
                /* form: a int8/float, b int8/float broadcast or not */
                sim_elt_i8_operand a = {qa, NULL, 1, scales[sc][0], -3}, b = {qb, NULL, 1, scales[sc][1], 7};
                if (form == 1) b.stride = 0;
                if (form == 2) a = (sim_elt_i8_operand){NULL, fa, 1, 1.0f, 0};
                if (form == 3) b = (sim_elt_i8_operand){NULL, fb, 0, 1.0f, 0};
                if (form == 4) b = (sim_elt_i8_operand){NULL, fb, 1, 1.0f, 0};
                if (form == 5) a.stride = 0;
                float so = scales[sc][2];
                int32_t zo = sc == 3 ? -128 : 5;
                for (int64_t n = 0; n <= N; n += n < 80 ? 1 : N - 80) {
                    memset(y, 0x55, sizeof y);
                    memset(want, 0x55, sizeof want);
                    sim_elt_i8_row(isa, op, &a, &b, n, y, so, zo);
                    for (int64_t i = 0; i < n; i++) want[i] = elt_ref(op, &a, &b, i, so, zo);
                    bad += memcmp(y, want, sizeof y) != 0;
                    cases++;
                }
            }
    char what[112];
    snprintf(what, sizeof what, "sim_elt_i8_row form %d vs the element rule: %d of %d rows differ", isa, bad, cases);
    tg_check_true(what, bad == 0);
}

/* Appends to acc[*k, n) 48 accumulators around every code switch of channel ch on [lo, hi] (a piece
 * where the code is monotone in acc), found by bisection on sim_i8_requant. */
static void switch_windows(const sim_i8_epi *epi, int64_t ch, int32_t bias, int32_t lo, int32_t hi, int32_t *acc,
                           int n, int *k)
{
    int8_t last = sim_i8_requant(epi, hi + bias, ch);
    while (*k + 48 <= n) {
        int8_t c = sim_i8_requant(epi, lo + bias, ch);
        if (c == last) return;
        int32_t a = lo, b = hi;
        while (b - a > 1) {
            int32_t m = a + (b - a) / 2;
            if (sim_i8_requant(epi, m + bias, ch) == c) a = m;
            else b = m;
        }
        for (int i = 0; i < 48; i++) acc[(*k)++] = b - 24 + i;
        lo = b;
    }
}

/* Every form of sim_i8_requant_act_tile (portable, AVX2, AVX-512) against sim_i8_requant for the
 * activations the AVX-512 form evaluates: accumulators around every switch, far out and random, as
 * float-held and int32 tiles of every width up to 40 (masked tails) and whole rows. */
static void act_tile_isa_case(int isa)
{
    enum { ROWS = 4, N = 12000, LD = N + 5 };
    const int32_t top = (1 << 24) - 65536;
    float *accf = malloc((size_t)ROWS * LD * sizeof(float));
    int32_t *acc = malloc((size_t)ROWS * LD * sizeof(int32_t));
    int8_t *got = malloc((size_t)ROWS * LD);
    if (!accf || !acc || !got) {
        tg_check_true("act tile isa: allocation", 0);
        free(accf), free(acc), free(got);
        return;
    }
    const struct { uint32_t act; float so; int32_t zo; float amin; } cases[] = {
        {SIM_ACT_SILU, 0.047f, -122, -1.2785f},  {SIM_ACT_SILU, 0.0123457f, 3, -1.2785f},
        {SIM_ACT_SIGMOID, 1.0f / 255.0f, -128, 0}, {SIM_ACT_TANH, 0.0213f, -9, 0},
        {SIM_ACT_HARDSWISH, 0.031f, -115, -1.5f}, {SIM_ACT_HARDSWISH, 0.0071f, 20, -1.5f},
        {SIM_ACT_HARDSIGMOID, 1.0f / 255.0f, -128, 0},
    };
    int64_t bad = 0, cells = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float rscale[ROWS], mult[ROWS];
        int32_t bias[ROWS] = {-40000, 123, 0, 999};
        for (int r = 0; r < ROWS; r++) {
            rscale[r] = (r < 3 ? 1.3e-6f : 4e-3f) * (1.0f + 0.31f * (float)r) * (cases[c].so / 0.047f);
            mult[r] = rscale[r] / cases[c].so;
        }
        sim_i8_epi epi;
        sim_act_lut lut;
        int rc = act_epi(&epi, &lut, cases[c].act, cases[c].so, cases[c].zo, mult, rscale);
        bad += rc != 0 || !epi.lut;
        for (int r = 0; r < ROWS; r++) {
            int32_t *a = acc + r * LD, b = bias[r];
            int k = 0;
            int32_t amin = (int32_t)(cases[c].amin / rscale[r]);
            amin = amin < -top ? -top : amin;
            switch_windows(&epi, r, b, 0, top - b, a, LD / 2, &k);
            switch_windows(&epi, r, b, amin, 0, a, 3 * LD / 4, &k);
            if (amin > -top) switch_windows(&epi, r, b, -top - b, amin, a, LD - LD / 8, &k);
            for (; k < LD; k++) a[k] = (int32_t)(tg_randf() * (float)(k % 3 ? 3e6 : 1.5e7)) - b;
            for (int i = 0; i < LD; i++) accf[r * LD + i] = (float)a[i];
        }
        for (int form = 0; form < 2; form++) {
            /* tiles of 1..40 columns in turn (float-held and int32 alternately), then whole rows */
            int64_t c0 = 0;
            for (int64_t t = 0; c0 < N; t++) {
                int64_t w = form ? N : 1 + t % 40;
                w = N - c0 < w ? N - c0 : w;
                sim_i8_requant_act_tile_isa(isa, &epi, t % 2 ? accf + c0 : NULL, t % 2 ? NULL : acc + c0, LD, ROWS, w,
                                            0, bias, got + c0, LD);
                c0 += w;
            }
            for (int r = 0; r < ROWS; r++)
                for (int i = 0; i < N; i++, cells++)
                    bad += got[r * LD + i] != sim_i8_requant(&epi, acc[r * LD + i] + bias[r], r);
        }
        sim_act_lut_free(&lut);
    }
    char what[112];
    snprintf(what, sizeof what, "sim_i8_requant_act_tile form %d: %lld of %lld codes differ from sim_i8_requant", isa,
             (long long)bad, (long long)cells);
    tg_check_true(what, bad == 0);
    free(accf), free(acc), free(got);
}

void test_i8_fast(void)
{
    int best = sim_lut_i8_best_isa();
    for (int isa = SIM_LUT_ISA_C; isa <= best; isa++) lut_isa_case(isa);
    best = sim_elt_i8_best_isa();
    for (int isa = SIM_ELT_ISA_C; isa <= best; isa++) elt_row_case(isa);
    best = sim_i8_act_best_isa(SIM_CPU_AVX2());
    for (int isa = SIM_I8_ACT_ISA_C; isa <= best; isa++) act_tile_isa_case(isa);
}
