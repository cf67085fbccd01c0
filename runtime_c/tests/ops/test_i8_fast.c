/* The int8 element-wise fast paths against their portable forms, bit for bit. */
#include "harness.h"
#include "ops/act_lut.h"
#include "ops/elt_i8.h"

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

void test_i8_fast(void)
{
    int best = sim_lut_i8_best_isa();
    for (int isa = SIM_LUT_ISA_C; isa <= best; isa++) lut_isa_case(isa);
    best = sim_elt_i8_best_isa();
    for (int isa = SIM_ELT_ISA_C; isa <= best; isa++) elt_row_case(isa);
}
