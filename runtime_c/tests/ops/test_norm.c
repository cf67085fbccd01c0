/* Softmax, LogSoftmax, reductions, BatchNormalization and LRN against reference loops. */
#include "harness.h"

static void softmax_case(uint32_t type, int64_t axis)
{
    tgraph tg;
    tg_init(&tg, type);
    int64_t d[3] = {3, 4, 5};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, d, 5), y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, d, 0);
    tg_input(&tg, x);
    tg_output(&tg, y);
    tg_attr_i(&tg, "axis", axis);
    char err[256];
    int rc = tg_run(&tg, 0, err, sizeof err);
    tg_check_true("softmax runs", rc == 0);
    int64_t ax = axis < 0 ? axis + 3 : axis, inner = 1, outer = 1;
    for (int64_t i = ax + 1; i < 3; i++) inner *= d[i];
    for (int64_t i = 0; i < ax; i++) outer *= d[i];
    float ref[60];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double s = 0;
            for (int64_t j = 0; j < d[ax]; j++) s += exp(tg.f[x][(o * d[ax] + j) * inner + i]);
            for (int64_t j = 0; j < d[ax]; j++) {
                double v = tg.f[x][(o * d[ax] + j) * inner + i];
                ref[(o * d[ax] + j) * inner + i] = (float)(type == SIM_OP_LOG_SOFTMAX ? v - log(s) : exp(v) / s);
            }
        }
    tg_check_close(type == SIM_OP_SOFTMAX ? "softmax" : "logsoftmax", tg.f[y], ref, 60, 1e-6f, 1e-5f);
    tg_free(&tg);
}

static void reduce_case(uint32_t type, int na, const int64_t *axes, int keep)
{
    tgraph tg;
    tg_init(&tg, type);
    int64_t d[4] = {2, 3, 4, 5}, yd[4];
    int red[4] = {0};
    for (int i = 0; i < na; i++) red[axes[i] < 0 ? axes[i] + 4 : axes[i]] = 1;
    if (na == 0) red[0] = red[1] = red[2] = red[3] = 1;
    int ny = 0;
    for (int i = 0; i < 4; i++)
        if (!red[i]) yd[ny++] = d[i];
        else if (keep) yd[ny++] = 1;
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, d, 1), y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, ny, yd, 0);
    tg_input(&tg, x);
    tg_output(&tg, y);
    if (na) tg_attr_is(&tg, "axes", na, axes);
    tg_attr_i(&tg, "keepdims", keep);
    char err[256], what[300];
    int rc = tg_run(&tg, 0, err, sizeof err);
    snprintf(what, sizeof what, "reduce %u axes %d keep %d rc=%d %s", type, na, keep, rc, err);
    tg_check_true(what, rc == 0);
    float ref[120];
    int64_t n = tg.t[y].n_elems;
    for (int64_t o = 0; o < n; o++) ref[o] = type == SIM_OP_REDUCE_MAX ? -INFINITY : 0;
    int64_t cnt = 120 / n;
    for (int64_t e = 0; e < 120; e++) {
        int64_t idx[4] = {e / 60, (e / 20) % 3, (e / 5) % 4, e % 5}, o = 0;
        for (int i = 0; i < 4; i++)
            if (!red[i]) o = o * d[i] + idx[i];
        float v = tg.f[x][e];
        if (type == SIM_OP_REDUCE_MAX) ref[o] = v > ref[o] ? v : ref[o];
        else ref[o] += v;
    }
    if (type == SIM_OP_REDUCE_MEAN)
        for (int64_t o = 0; o < n; o++) ref[o] /= (float)cnt;
    if (rc == 0) tg_check_close(what, tg.f[y], ref, n, 1e-6f, 1e-5f);
    tg_free(&tg);
}

/* int8 BatchNorm applies a per-channel 256-entry table to the codes: the same codes as the executor's
 * dequantise -> float BatchNorm -> requantise fallback. */
static void bn_i8_case(int64_t n, int64_t c, int64_t h, int64_t w, uint32_t act, const char *what)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_BATCHNORM);
    int64_t xd[4] = {n, c, h, w}, cd[1] = {c};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 3.0f);
    tg_quant(&tg, x, 3.0f / 127.0f, 5);
    tg_input(&tg, x);
    for (int i = 0; i < 4; i++) {
        int k = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, cd, 1.5f);
        if (i == 3)
            for (int64_t e = 0; e < c; e++) tg.f[k][e] = fabsf(tg.f[k][e]) + 0.1f;
        tg_input(&tg, k);
    }
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, xd, 0);
    tg_quant(&tg, y, 0.04f, -6);
    tg_output(&tg, y);
    tg.op.act = act;
    tg.op.act_p0 = 0.0f;
    tg.op.act_p1 = 6.0f;
    tg_check_i8_vs_float(&tg, y, what);
    tg_free(&tg);
}

void test_norm(void)
{
    bn_i8_case(2, 5, 13, 17, SIM_ACT_NONE, "int8 BatchNorm per-channel tables");
    bn_i8_case(1, 4, 130, 130, SIM_ACT_RELU, "int8 BatchNorm+Relu per-channel tables, split over threads");
    bn_i8_case(1, 3, 7, 9, SIM_ACT_HARDSWISH, "int8 BatchNorm+HardSwish per-channel tables");
    softmax_case(SIM_OP_SOFTMAX, -1);
    softmax_case(SIM_OP_SOFTMAX, 1);
    softmax_case(SIM_OP_LOG_SOFTMAX, 0);
    int64_t a1[1] = {1}, a2[2] = {0, 3}, a3[2] = {-1, -2};
    reduce_case(SIM_OP_REDUCE_MEAN, 1, a1, 1);
    reduce_case(SIM_OP_REDUCE_SUM, 2, a2, 0);
    reduce_case(SIM_OP_REDUCE_MAX, 2, a3, 1);
    reduce_case(SIM_OP_REDUCE_SUM, 0, NULL, 0);
    reduce_case(SIM_OP_REDUCE_MEAN, 2, a3, 0);

    /* BatchNormalization */
    tgraph tg;
    tg_init(&tg, SIM_OP_BATCHNORM);
    int64_t xd[4] = {2, 3, 4, 5}, cd[1] = {3};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 2);
    int sc = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, cd, 1), bb = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, cd, 1);
    int mu = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, cd, 1), var = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, cd, 1);
    for (int c = 0; c < 3; c++) tg.f[var][c] = fabsf(tg.f[var][c]) + 0.1f;
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, xd, 0);
    tg_input(&tg, x);
    tg_input(&tg, sc);
    tg_input(&tg, bb);
    tg_input(&tg, mu);
    tg_input(&tg, var);
    tg_output(&tg, y);
    tg_attr_f(&tg, "epsilon", 1e-3f);
    tg.op.act = SIM_ACT_RELU;
    char err[256];
    tg_check_true("batchnorm runs", tg_run(&tg, 0, err, sizeof err) == 0);
    float ref[120];
    for (int e = 0; e < 120; e++) {
        int c = (e / 20) % 3;
        double v = (tg.f[x][e] - tg.f[mu][c]) / sqrt(tg.f[var][c] + 1e-3) * tg.f[sc][c] + tg.f[bb][c];
        ref[e] = (float)(v < 0 ? 0 : v);
    }
    tg_check_close("batchnorm + relu", tg.f[y], ref, 120, 1e-5f, 1e-5f);
    tg_free(&tg);

    /* LRN */
    tg_init(&tg, SIM_OP_LRN);
    int64_t ld[4] = {1, 6, 3, 3};
    x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, ld, 2);
    y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, ld, 0);
    tg_input(&tg, x);
    tg_output(&tg, y);
    tg_attr_i(&tg, "size", 3);
    tg_attr_f(&tg, "alpha", 0.1f);
    tg_attr_f(&tg, "beta", 0.75f);
    tg_attr_f(&tg, "bias", 2.0f);
    tg_check_true("lrn runs", tg_run(&tg, 0, err, sizeof err) == 0);
    float lref[54];
    for (int c = 0; c < 6; c++)
        for (int i = 0; i < 9; i++) {
            double s = 0;
            for (int j = c - 1; j <= c + 1; j++)
                if (j >= 0 && j < 6) s += (double)tg.f[x][j * 9 + i] * tg.f[x][j * 9 + i];
            lref[c * 9 + i] = (float)(tg.f[x][c * 9 + i] / pow(2.0 + 0.1 / 3 * s, 0.75));
        }
    tg_check_close("lrn", tg.f[y], lref, 54, 1e-6f, 1e-5f);
    tg_free(&tg);
}
