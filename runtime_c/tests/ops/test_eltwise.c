/* Broadcasting element-wise ops and unary ops against per-element reference formulas. */
#include "harness.h"

/* Offset of output element e in an input of rank nd_in right-aligned against the output. */
static int64_t bcast_offset(const sim_tensor *out, const sim_tensor *in, int64_t e)
{
    int64_t off = 0, stride = 1;
    for (int d = (int)out->n_dims - 1; d >= 0; d--) {
        int64_t i = e % out->dims[d];
        e /= out->dims[d];
        int di = d - (int)(out->n_dims - in->n_dims);
        if (di < 0) continue;
        if (in->dims[di] != 1) off += i * stride;
        stride *= in->dims[di];
    }
    return off;
}

static float ref_bin(uint32_t type, float a, float b)
{
    switch (type) {
    case SIM_OP_ADD: case SIM_OP_SUM: return a + b;
    case SIM_OP_SUB: return a - b;
    case SIM_OP_MUL: return a * b;
    case SIM_OP_DIV: return a / b;
    case SIM_OP_POW: return powf(a, b);
    case SIM_OP_MAX: return a > b ? a : b;
    case SIM_OP_MIN: return a < b ? a : b;
    case SIM_OP_PRELU: return a < 0 ? a * b : a;
    default: return NAN;
    }
}

static void elt_case(uint32_t type, int n_in, const int *nds, const int64_t dims[][6], int ny, const int64_t *yd,
                     uint32_t act, int const_last)
{
    tgraph tg;
    tg_init(&tg, type);
    int ins[4];
    for (int i = 0; i < n_in; i++) {
        int is_const = const_last && i == n_in - 1;
        ins[i] = tg_tensor(&tg, SIM_F32, is_const ? SIM_T_CONST : SIM_T_INPUT, nds[i], dims[i], 2.0f);
        if (type == SIM_OP_POW && i == 0)
            for (int64_t e = 0; e < tg.t[ins[i]].n_elems; e++) tg.f[ins[i]][e] = fabsf(tg.f[ins[i]][e]) + 0.1f;
        if (type == SIM_OP_DIV && i == 1)
            for (int64_t e = 0; e < tg.t[ins[i]].n_elems; e++) tg.f[ins[i]][e] += tg.f[ins[i]][e] < 0 ? -0.5f : 0.5f;
        tg_input(&tg, ins[i]);
    }
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, ny, yd, 0);
    tg_output(&tg, y);
    tg.op.act = act;
    tg.op.act_p0 = 0.0f;
    tg.op.act_p1 = 1.0f;
    char err[256], what[300];
    int rc = tg_run(&tg, 0, err, sizeof err);
    snprintf(what, sizeof what, "eltwise op %u with %d inputs rank %d rc=%d %s", type, n_in, ny, rc, err);
    tg_check_true(what, rc == 0);
    if (rc == 0) {
        int64_t n = tg.t[y].n_elems;
        float *ref = malloc((size_t)n * sizeof(float));
        for (int64_t e = 0; e < n; e++) {
            float v = tg.f[ins[0]][bcast_offset(&tg.t[y], &tg.t[ins[0]], e)];
            for (int i = 1; i < n_in; i++) v = ref_bin(type, v, tg.f[ins[i]][bcast_offset(&tg.t[y], &tg.t[ins[i]], e)]);
            ref[e] = sim_apply_act(act, 0.0f, 1.0f, v);
        }
        tg_check_close(what, tg.f[y], ref, n, 1e-6f, 1e-5f);
        free(ref);
    }
    tg_free(&tg);
}

void test_eltwise_i8_rows(void);

void test_eltwise(void)
{
    test_eltwise_i8_rows();
    const int64_t same[2][6] = {{2, 3, 4, 5}, {2, 3, 4, 5}};
    const int nd44[2] = {4, 4};
    const int64_t y4[4] = {2, 3, 4, 5};
    uint32_t ops[] = {SIM_OP_ADD, SIM_OP_SUB, SIM_OP_MUL, SIM_OP_DIV, SIM_OP_POW, SIM_OP_MAX, SIM_OP_MIN};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) elt_case(ops[i], 2, nd44, same, 4, y4, SIM_ACT_NONE, 0);
    const int64_t chan[2][6] = {{2, 3, 4, 5}, {3, 1, 1}};
    const int nd43[2] = {4, 3};
    elt_case(SIM_OP_ADD, 2, nd43, chan, 4, y4, SIM_ACT_RELU, 1);
    elt_case(SIM_OP_MUL, 2, nd43, chan, 4, y4, SIM_ACT_CLIP, 0);
    const int64_t scal[2][6] = {{2, 3, 4, 5}, {1}};
    const int nd41[2] = {4, 1};
    elt_case(SIM_OP_SUB, 2, nd41, scal, 4, y4, SIM_ACT_NONE, 1);
    const int64_t rev[2][6] = {{1}, {2, 3, 4, 5}};
    const int nd14[2] = {1, 4};
    elt_case(SIM_OP_DIV, 2, nd14, rev, 4, y4, SIM_ACT_NONE, 0);
    const int64_t both[2][6] = {{2, 1, 4, 1}, {3, 1, 5}};
    const int nd43b[2] = {4, 3};
    elt_case(SIM_OP_ADD, 2, nd43b, both, 4, y4, SIM_ACT_SIGMOID, 0);
    const int64_t mid[2][6] = {{2, 3, 4, 5}, {1, 3, 4, 1}};
    elt_case(SIM_OP_MAX, 2, nd44, mid, 4, y4, SIM_ACT_NONE, 0);
    const int64_t tri[3][6] = {{2, 3, 4, 5}, {5}, {3, 1, 1}};
    const int nd3[3] = {4, 1, 3};
    elt_case(SIM_OP_SUM, 3, nd3, tri, 4, y4, SIM_ACT_NONE, 0);
    elt_case(SIM_OP_MIN, 3, nd3, tri, 4, y4, SIM_ACT_NONE, 0);
    elt_case(SIM_OP_MAX, 1, nd3, tri, 4, y4, SIM_ACT_NONE, 0);
    const int64_t pr[2][6] = {{2, 3, 4, 5}, {3, 1, 1}};
    elt_case(SIM_OP_PRELU, 2, nd43, pr, 4, y4, SIM_ACT_NONE, 1);

    /* a wrong broadcast output shape is rejected at prepare */
    tgraph tg;
    tg_init(&tg, SIM_OP_ADD);
    int64_t a[2] = {3, 4}, b[2] = {2, 4}, y[2] = {3, 4};
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2, a, 1));
    tg_input(&tg, tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2, b, 1));
    tg_output(&tg, tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2, y, 0));
    char err[256];
    tg_check_true("Add rejects non-broadcastable shapes", tg_prepare_only(&tg, err, sizeof err) == -6 && err[0]);
    tg_free(&tg);
}

static double ref_unary(uint32_t t, double x, double a, double b)
{
    switch (t) {
    case SIM_OP_RELU: return x < 0 ? 0 : x;
    case SIM_OP_CLIP: return x < a ? a : (x > b ? b : x);
    case SIM_OP_LEAKY_RELU: return x < 0 ? a * x : x;
    case SIM_OP_SIGMOID: return 1 / (1 + exp(-x));
    case SIM_OP_HARD_SIGMOID: { double v = a * x + b; return v < 0 ? 0 : (v > 1 ? 1 : v); }
    case SIM_OP_HARD_SWISH: { double v = x + 3; v = v < 0 ? 0 : (v > 6 ? 6 : v); return x * v / 6; }
    case SIM_OP_SILU: return x / (1 + exp(-x));
    case SIM_OP_TANH: return tanh(x);
    case SIM_OP_EXP: return exp(x);
    case SIM_OP_ELU: return x < 0 ? a * (exp(x) - 1) : x;
    case SIM_OP_SELU: return x <= 0 ? b * a * (exp(x) - 1) : b * x;
    case SIM_OP_NEG: return -x;
    case SIM_OP_ABS: return fabs(x);
    case SIM_OP_SOFTPLUS: return log1p(exp(x));
    case SIM_OP_SQRT: return sqrt(x);
    default: return NAN;
    }
}

static void unary_case(uint32_t type, const char *an, float a, const char *bn, float b, float da, float db)
{
    tgraph tg;
    tg_init(&tg, type);
    int64_t d[3] = {2, 7, 9};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, d, 4.0f);
    if (type == SIM_OP_SQRT)
        for (int64_t e = 0; e < tg.t[x].n_elems; e++) tg.f[x][e] = fabsf(tg.f[x][e]);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, d, 0);
    tg_input(&tg, x);
    tg_output(&tg, y);
    if (an) tg_attr_f(&tg, an, a);
    if (bn) tg_attr_f(&tg, bn, b);
    char err[256], what[300];
    int rc = tg_run(&tg, 0, err, sizeof err);
    snprintf(what, sizeof what, "unary op %u rc=%d %s", type, rc, err);
    tg_check_true(what, rc == 0);
    float ref[126];
    for (int64_t e = 0; e < 126; e++) ref[e] = (float)ref_unary(type, tg.f[x][e], an ? a : da, bn ? b : db);
    if (rc == 0) tg_check_close(what, tg.f[y], ref, 126, 1e-6f, 2e-6f);
    /* int8 through the lookup table equals dequantise -> op -> quantise */
    tg_quant(&tg, x, 4.0f / 127.0f, 5);
    tg_quant(&tg, y, 0.05f, -3);
    rc = tg_run(&tg, 1, err, sizeof err);
    snprintf(what, sizeof what, "unary op %u int8 rc=%d %s", type, rc, err);
    int bad = rc != 0;
    for (int64_t e = 0; e < 126 && !bad; e++) {
        float v = (float)ref_unary(type, tg.t[x].scale * (float)(tg.q[x][e] - 5), an ? a : da, bn ? b : db);
        int8_t want = sim_quant_i8(v, 0.05f, -3);
        bad = abs(want - tg.q[y][e]) > 1;
    }
    tg_check_true(what, !bad);
    tg_free(&tg);
}

void test_unary(void)
{
    unary_case(SIM_OP_RELU, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_CLIP, "min", -0.5f, "max", 1.5f, 0, 0);
    unary_case(SIM_OP_CLIP, "min", 0.0f, NULL, 0, 0, INFINITY);
    unary_case(SIM_OP_LEAKY_RELU, "alpha", 0.2f, NULL, 0, 0, 0);
    unary_case(SIM_OP_LEAKY_RELU, NULL, 0, NULL, 0, 0.01f, 0);
    unary_case(SIM_OP_SIGMOID, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_HARD_SIGMOID, "alpha", 0.3f, "beta", 0.4f, 0, 0);
    unary_case(SIM_OP_HARD_SIGMOID, NULL, 0, NULL, 0, 0.2f, 0.5f);
    unary_case(SIM_OP_HARD_SWISH, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_SILU, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_TANH, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_EXP, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_ELU, "alpha", 0.7f, NULL, 0, 0, 0);
    unary_case(SIM_OP_SELU, NULL, 0, NULL, 0, 1.67326319217681884765625, 1.05070102214813232421875);
    unary_case(SIM_OP_NEG, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_ABS, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_SOFTPLUS, NULL, 0, NULL, 0, 0, 0);
    unary_case(SIM_OP_SQRT, NULL, 0, NULL, 0, 0, 0);
}

/* int8 element-wise ops with a row-constant operand go through per-row 256-entry tables (rows of 256
 * elements and more): the same codes as dequantise -> float op -> activation -> requantise. */
static void i8_row_case(uint32_t type, int nda, const int64_t *da, int ca, int ndb, const int64_t *db, int cb, uint32_t act,
                        const char *what)
{
    tgraph tg;
    tg_init(&tg, type);
    int a = tg_tensor(&tg, SIM_F32, ca ? SIM_T_CONST : SIM_T_INPUT, nda, da, 2.0f);
    int b = tg_tensor(&tg, SIM_F32, cb ? SIM_T_CONST : SIM_T_INPUT, ndb, db, 2.0f);
    int ints[2] = {a, b}, consts[2] = {ca, cb};
    for (int i = 0; i < 2; i++) {
        if (type == SIM_OP_DIV && i == 1)
            for (int64_t e = 0; e < tg.t[b].n_elems; e++) tg.f[b][e] += tg.f[b][e] < 0 ? -0.5f : 0.5f;
        if (!consts[i]) tg_quant(&tg, ints[i], 2.0f / 127.0f, i * 3 - 1);
        tg_input(&tg, ints[i]);
    }
    const sim_tensor *big = tg.t[a].n_elems >= tg.t[b].n_elems ? &tg.t[a] : &tg.t[b];
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, (int)big->n_dims, big->dims, 0);
    tg_quant(&tg, y, 0.03f, 4);
    tg_output(&tg, y);
    tg.op.act = act;
    tg.op.act_p0 = 0.0f;
    tg.op.act_p1 = 6.0f;
    tg_check_i8_vs_float(&tg, y, what);
    tg_free(&tg);
}

void test_eltwise_i8_rows(void)
{
    const int64_t x4[4] = {2, 8, 16, 40}, c3[3] = {8, 1, 1}, g4[4] = {2, 8, 1, 1}, s1[1] = {1}, x3[3] = {2, 3, 300};
    const int64_t short4[4] = {2, 8, 4, 10};
    i8_row_case(SIM_OP_ADD, 4, x4, 0, 3, c3, 1, SIM_ACT_RELU, "int8 Add per-channel constant rows");
    i8_row_case(SIM_OP_MUL, 4, x4, 0, 4, g4, 0, SIM_ACT_NONE, "int8 Mul by an int8 [N,C,1,1] gate rows");
    i8_row_case(SIM_OP_MUL, 4, g4, 0, 4, x4, 0, SIM_ACT_CLIP, "int8 gate [N,C,1,1] * X rows (varying b)");
    i8_row_case(SIM_OP_SUB, 1, s1, 1, 3, x3, 0, SIM_ACT_SIGMOID, "int8 scalar - X rows");
    i8_row_case(SIM_OP_DIV, 3, x3, 0, 1, s1, 1, SIM_ACT_HARDSWISH, "int8 X / scalar rows");
    i8_row_case(SIM_OP_ADD, 4, short4, 0, 3, c3, 1, SIM_ACT_NONE, "int8 Add short rows (direct path)");
    i8_row_case(SIM_OP_ADD, 4, x4, 0, 4, x4, 0, SIM_ACT_NONE, "int8 Add of two activations (direct path)");
}
