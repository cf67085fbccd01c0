/* Data movement ops (float and int8, equal and different quantisation) against index arithmetic. */
#include "harness.h"

static int64_t flat(const int64_t *dims, int nd, const int64_t *idx)
{
    int64_t o = 0;
    for (int d = 0; d < nd; d++) o = o * dims[d] + idx[d];
    return o;
}

static void unflat(const int64_t *dims, int nd, int64_t e, int64_t *idx)
{
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = e % dims[d];
        e /= dims[d];
    }
}

/* Runs the op in float, then int8 with equal and with different output quantisation, checking each
 * output element equals the input element `src(e)` picks (or `fill` where src returns -1). */
typedef int64_t (*src_fn)(const void *ctx, int64_t e, int *which);

static void check_movement(tgraph *tg, int n_in, const int *ins, int y, src_fn src, const void *ctx, float fill,
                           const char *label)
{
    char err[256], what[300];
    for (int mode = 0; mode < 3; mode++) {
        if (mode >= 1) {
            for (int i = 0; i < n_in; i++) tg_quant(tg, ins[i], 1.0f / 64.0f, i);
            tg_quant(tg, y, mode == 1 ? 1.0f / 64.0f : 1.0f / 50.0f, mode == 1 ? 0 : 3);
        }
        if (mode == 1)
            for (int i = 1; i < n_in; i++) tg_quant(tg, ins[i], 1.0f / 64.0f, 0);
        int rc = tg_run(tg, mode >= 1, err, sizeof err);
        snprintf(what, sizeof what, "%s %s rc=%d %s", label, mode == 0 ? "f32" : (mode == 1 ? "i8 same q" : "i8 requant"),
                 rc, err);
        int bad = rc != 0;
        for (int64_t e = 0; e < tg->t[y].n_elems && !bad; e++) {
            int which = 0;
            int64_t s = src(ctx, e, &which);
            float want = s < 0 ? fill : tg->f[ins[which]][s];
            if (mode == 2) want = tg->t[y].scale * (float)(sim_quant_i8(want, tg->t[y].scale, tg->t[y].zp) - tg->t[y].zp);
            if (mode >= 1 && s < 0) want = tg->t[y].scale * (float)(sim_quant_i8(fill, tg->t[y].scale, tg->t[y].zp) - tg->t[y].zp);
            if (fabsf(tg->f[y][e] - want) > 1e-6f) {
                printf("  %s: element %lld got %g want %g\n", what, (long long)e, (double)tg->f[y][e], (double)want);
                bad = 1;
            }
        }
        tg_check_true(what, !bad);
    }
}

typedef struct mctx {
    int64_t xd[6], yd[6];
    int nd;
    int64_t perm[6], start[6], step[6], pads[12], axis, sizes[4], *idx;
    int mode, n;
} mctx;

static int64_t src_transpose(const void *c, int64_t e, int *w)
{
    const mctx *m = c;
    int64_t oi[6], ii[6];
    *w = 0;
    unflat(m->yd, m->nd, e, oi);
    for (int d = 0; d < m->nd; d++) ii[m->perm[d]] = oi[d];
    return flat(m->xd, m->nd, ii);
}

static int64_t src_slice(const void *c, int64_t e, int *w)
{
    const mctx *m = c;
    int64_t oi[6], ii[6];
    *w = 0;
    unflat(m->yd, m->nd, e, oi);
    for (int d = 0; d < m->nd; d++) ii[d] = m->start[d] + oi[d] * m->step[d];
    return flat(m->xd, m->nd, ii);
}

static int64_t src_pad(const void *c, int64_t e, int *w)
{
    const mctx *m = c;
    int64_t oi[6], ii[6];
    *w = 0;
    unflat(m->yd, m->nd, e, oi);
    for (int d = 0; d < m->nd; d++) {
        int64_t i = oi[d] - m->pads[d], n = m->xd[d];
        if (i < 0 || i >= n) {
            if (m->mode == 0) return -1;
            if (m->mode == 2) i = i < 0 ? 0 : n - 1;
            else i = i < 0 ? -i : 2 * (n - 1) - i;
        }
        ii[d] = i;
    }
    return flat(m->xd, m->nd, ii);
}

static int64_t src_concat(const void *c, int64_t e, int *w)
{
    const mctx *m = c;
    int64_t oi[6];
    unflat(m->yd, m->nd, e, oi);
    int64_t a = oi[m->axis];
    int i = 0;
    while (a >= m->sizes[i]) a -= m->sizes[i++];
    *w = i;
    oi[m->axis] = a;
    int64_t d[6];
    memcpy(d, m->yd, sizeof d);
    d[m->axis] = m->sizes[i];
    return flat(d, m->nd, oi);
}

static int64_t src_gather(const void *c, int64_t e, int *w)
{
    const mctx *m = c; /* axis 1 of [2, 5, 3] with 4 indices -> [2, 4, 3] */
    *w = 0;
    int64_t a = e / 12, i = (e / 3) % 4, b = e % 3;
    return (a * 5 + m->idx[i]) * 3 + b;
}

/* ONNX nearest Resize reference (the same float coordinate formulas) for one dim. */
static int64_t ref_nearest(int coord, int rule, int64_t o, int64_t in, int64_t out)
{
    float scale = (float)out / (float)in, c;
    switch (coord) {
    case 1: c = (float)o / scale; break;
    case 2: c = out == 1 ? 0.0f : (float)o * (float)(in - 1) / (float)(out - 1); break;
    case 3: c = out > 1 ? ((float)o + 0.5f) / scale - 0.5f : 0.0f; break;
    default: c = ((float)o + 0.5f) / scale - 0.5f; break;
    }
    float r = rule == 1 ? floorf(c + 0.5f) : rule == 2 ? floorf(c) : rule == 3 ? ceilf(c) : ceilf(c - 0.5f);
    int64_t i = (int64_t)r;
    return i < 0 ? 0 : (i >= in ? in - 1 : i);
}

/* One-pass nearest Resize (no intermediate; rows copied from their source rows) against the reference
 * for every coordinate mode and rounding rule, growing and shrinking dims; int8 on the codes against the
 * dequantise -> float -> requantise result, with and without a code map. */
static void test_resize_nearest(void)
{
    char err[256], what[160];
    const int64_t xd[4] = {2, 3, 5, 7}, shapes[3][4] = {{2, 3, 11, 4}, {2, 3, 10, 14}, {2, 1, 3, 7}};
    for (int sh = 0; sh < 3; sh++)
        for (int coord = 0; coord < 4; coord++)
            for (int rule = 0; rule < 4; rule++) {
                tgraph tg;
                tg_init(&tg, SIM_OP_RESIZE);
                int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1);
                int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, shapes[sh], 0);
                tg_input(&tg, x);
                tg_output(&tg, y);
                tg_attr_i(&tg, "mode", 0);
                tg_attr_i(&tg, "coord", coord);
                tg_attr_i(&tg, "nearest", rule);
                int rc = tg_run(&tg, 0, err, sizeof err);
                int same = rc == 0;
                const int64_t *yd = shapes[sh];
                for (int64_t e = 0; same && e < tg.t[y].n_elems; e++) {
                    int64_t r = e, idx[4], src = 0;
                    for (int d = 3; d >= 0; d--) {
                        idx[d] = r % yd[d];
                        r /= yd[d];
                    }
                    for (int d = 0; d < 4; d++)
                        src = src * xd[d] + (xd[d] == yd[d] ? idx[d] : ref_nearest(coord, rule, idx[d], xd[d], yd[d]));
                    same = tg.f[y][e] == tg.f[x][src];
                }
                snprintf(what, sizeof what, "Resize nearest one pass shape %d coord %d rule %d", sh, coord, rule);
                tg_check_true(what, same);
                if (coord == 1 && rule == 2) {
                    tg_quant(&tg, x, 1.0f / 127.0f, 3);
                    tg_quant(&tg, y, sh == 1 ? 1.0f / 127.0f : 0.02f, sh == 1 ? 3 : -2);
                    tg.op.act = sh == 2 ? SIM_ACT_RELU : SIM_ACT_NONE;
                    snprintf(what, sizeof what, "int8 Resize nearest shape %d (%s)", sh,
                             sh == 1 ? "same quantisation: copies" : "code map");
                    tg_check_i8_vs_float(&tg, y, what);
                }
                tg_free(&tg);
            }
}

void test_shape(void)
{
    test_resize_nearest();
    tgraph tg;
    mctx m;
    /* Transpose */
    memset(&m, 0, sizeof m);
    m.nd = 4;
    int64_t xd[4] = {2, 3, 4, 5}, perm[4] = {0, 2, 3, 1};
    memcpy(m.xd, xd, sizeof xd);
    memcpy(m.perm, perm, sizeof perm);
    for (int d = 0; d < 4; d++) m.yd[d] = xd[perm[d]];
    tg_init(&tg, SIM_OP_TRANSPOSE);
    int ins[3];
    ins[0] = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, m.yd, 0);
    tg_input(&tg, ins[0]);
    tg_output(&tg, y);
    tg_attr_is(&tg, "perm", 4, perm);
    check_movement(&tg, 1, ins, y, src_transpose, &m, 0, "Transpose");
    tg_free(&tg);

    /* Slice with negative step and clamped ends */
    memset(&m, 0, sizeof m);
    m.nd = 3;
    int64_t sd[3] = {4, 6, 7};
    memcpy(m.xd, sd, sizeof sd);
    int64_t starts[2] = {-1, 1}, ends[2] = {-100, 100}, axes[2] = {2, 1}, steps[2] = {-2, 2};
    m.start[0] = 0; m.step[0] = 1; m.yd[0] = 4;
    m.start[1] = 1; m.step[1] = 2; m.yd[1] = 3;
    m.start[2] = 6; m.step[2] = -2; m.yd[2] = 4;
    tg_init(&tg, SIM_OP_SLICE);
    ins[0] = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, sd, 1);
    y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, m.yd, 0);
    tg_input(&tg, ins[0]);
    tg_output(&tg, y);
    tg_attr_is(&tg, "starts", 2, starts);
    tg_attr_is(&tg, "ends", 2, ends);
    tg_attr_is(&tg, "axes", 2, axes);
    tg_attr_is(&tg, "steps", 2, steps);
    check_movement(&tg, 1, ins, y, src_slice, &m, 0, "Slice");
    tg_free(&tg);

    /* Pad: constant, reflect, edge */
    for (int mode = 0; mode < 3; mode++) {
        memset(&m, 0, sizeof m);
        m.nd = 4;
        m.mode = mode;
        int64_t pd[4] = {1, 2, 5, 4}, pads[8] = {0, 0, 2, 1, 0, 1, 3, 2};
        memcpy(m.xd, pd, sizeof pd);
        memcpy(m.pads, pads, sizeof pads);
        for (int d = 0; d < 4; d++) m.yd[d] = pd[d] + pads[d] + pads[d + 4];
        tg_init(&tg, SIM_OP_PAD);
        ins[0] = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, pd, 1);
        y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, m.yd, 0);
        tg_input(&tg, ins[0]);
        tg_output(&tg, y);
        tg_attr_is(&tg, "pads", 8, pads);
        tg_attr_i(&tg, "mode", mode);
        tg_attr_f(&tg, "value", 0.25f);
        check_movement(&tg, 1, ins, y, src_pad, &m, 0.25f, mode == 0 ? "Pad constant" : (mode == 1 ? "Pad reflect" : "Pad edge"));
        tg_free(&tg);
    }

    /* Concat on axis 1 of three inputs */
    memset(&m, 0, sizeof m);
    m.nd = 3;
    m.axis = 1;
    m.sizes[0] = 2; m.sizes[1] = 3; m.sizes[2] = 1;
    int64_t y3[3] = {2, 6, 4};
    memcpy(m.yd, y3, sizeof y3);
    tg_init(&tg, SIM_OP_CONCAT);
    for (int i = 0; i < 3; i++) {
        int64_t d[3] = {2, m.sizes[i], 4};
        ins[i] = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, d, 1);
        tg_input(&tg, ins[i]);
    }
    y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, y3, 0);
    tg_output(&tg, y);
    tg_attr_i(&tg, "axis", 1);
    check_movement(&tg, 3, ins, y, src_concat, &m, 0, "Concat");
    tg_free(&tg);

    /* Concat of an int8 activation and a float constant: the constant is quantised to the output */
    tg_init(&tg, SIM_OP_CONCAT);
    int64_t ca[2] = {2, 3}, cb[2] = {2, 2}, cy[2] = {2, 5};
    int xa = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 2, ca, 1), xb = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 2, cb, 1);
    y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2, cy, 0);
    tg_input(&tg, xa);
    tg_input(&tg, xb);
    tg_output(&tg, y);
    tg_attr_i(&tg, "axis", 1);
    tg_quant(&tg, xa, 1.0f / 100.0f, 0);
    tg_quant(&tg, y, 1.0f / 100.0f, 0);
    {
        char e2[256];
        int rc2 = tg_run(&tg, 1, e2, sizeof e2);
        int bad2 = rc2 != 0;
        for (int r = 0; r < 2 && !bad2; r++)
            for (int c = 0; c < 5 && !bad2; c++) {
                float want = c < 3 ? tg.f[xa][r * 3 + c] : 0.01f * (float)sim_quant_i8(tg.f[xb][r * 2 + c - 3], 0.01f, 0);
                bad2 = fabsf(tg.f[y][r * 5 + c] - want) > 1e-6f;
            }
        tg_check_true("Concat int8 with a float constant", !bad2);
    }
    tg_free(&tg);

    /* Split: the reverse of the above */
    tg_init(&tg, SIM_OP_SPLIT);
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, y3, 1);
    tg_input(&tg, x);
    int outs[3];
    for (int i = 0; i < 3; i++) {
        int64_t d[3] = {2, m.sizes[i], 4};
        outs[i] = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, d, 0);
        tg_output(&tg, outs[i]);
    }
    tg_attr_i(&tg, "axis", 1);
    char err[256];
    int rc = tg_run(&tg, 0, err, sizeof err);
    int bad = rc != 0;
    for (int64_t e = 0; e < 48 && !bad; e++) {
        int which;
        int64_t s = src_concat(&m, e, &which);
        bad = tg.f[outs[which]][s] != tg.f[x][e];
    }
    tg_check_true("Split", !bad);
    tg_free(&tg);

    /* Gather with negative indices (INT64) */
    int64_t gidx[4] = {4, 0, -1, 2}, norm[4] = {4, 0, 4, 2};
    memset(&m, 0, sizeof m);
    m.idx = norm;
    tg_init(&tg, SIM_OP_GATHER);
    int64_t gd[3] = {2, 5, 3}, id[1] = {4}, gy[3] = {2, 4, 3};
    ins[0] = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 3, gd, 1);
    int it = tg_tensor(&tg, SIM_I64, SIM_T_CONST, 1, id, 0);
    tg.raw[it] = malloc(sizeof gidx);
    memcpy(tg.raw[it], gidx, sizeof gidx);
    tg.t[it].data = tg.raw[it];
    y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 3, gy, 0);
    tg_input(&tg, ins[0]);
    tg_input(&tg, it);
    tg_output(&tg, y);
    tg_attr_i(&tg, "axis", 1);
    check_movement(&tg, 1, ins, y, src_gather, &m, 0, "Gather");
    tg_free(&tg);

    /* Reshape keeps data; prepare rejects a count mismatch */
    tg_init(&tg, SIM_OP_RESHAPE);
    int64_t rd[2] = {6, 20}, bad_d[2] = {6, 21};
    x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1);
    y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 2, rd, 0);
    tg_input(&tg, x);
    tg_output(&tg, y);
    rc = tg_run(&tg, 0, err, sizeof err);
    tg_check_true("Reshape copies", rc == 0 && memcmp(tg.f[x], tg.f[y], 120 * sizeof(float)) == 0);
    tg.t[y].dims[1] = bad_d[1];
    tg.t[y].n_elems = 126;
    tg_check_true("Reshape rejects a count mismatch", tg_prepare_only(&tg, err, sizeof err) == -6);
    tg.t[y].dims[1] = 20;
    tg.t[y].n_elems = 120;
    tg_free(&tg);

    /* Resize: nearest (asymmetric, floor) x2 and linear half_pixel vs reference */
    for (int mode = 0; mode < 2; mode++) {
        tg_init(&tg, SIM_OP_RESIZE);
        int64_t rxd[4] = {1, 2, 3, 4}, ryd[4] = {1, 2, 6, 7};
        x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, rxd, 1);
        y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, ryd, 0);
        tg_input(&tg, x);
        tg_output(&tg, y);
        tg_attr_i(&tg, "mode", mode);
        tg_attr_i(&tg, "coord", mode == 0 ? 1 : 0);
        tg_attr_i(&tg, "nearest", 2);
        rc = tg_run(&tg, 0, err, sizeof err);
        float ref[84];
        for (int c = 0; c < 2; c++)
            for (int oy = 0; oy < 6; oy++)
                for (int ox = 0; ox < 7; ox++) {
                    const float *p = tg.f[x] + c * 12;
                    float v;
                    if (mode == 0) {
                        int iy = (int)floorf((float)oy / 2.0f), ix = (int)floorf((float)ox / (7.0f / 4.0f));
                        v = p[iy * 4 + (ix > 3 ? 3 : ix)];
                    } else {
                        float fy = ((float)oy + 0.5f) / 2.0f - 0.5f, fx = ((float)ox + 0.5f) / (7.0f / 4.0f) - 0.5f;
                        fy = fy < 0 ? 0 : (fy > 2 ? 2 : fy);
                        fx = fx < 0 ? 0 : (fx > 3 ? 3 : fx);
                        int y0 = (int)fy, x0 = (int)fx, y1 = y0 + 1 > 2 ? 2 : y0 + 1, x1 = x0 + 1 > 3 ? 3 : x0 + 1;
                        float wy = fy - (float)y0, wx = fx - (float)x0;
                        v = (1 - wy) * ((1 - wx) * p[y0 * 4 + x0] + wx * p[y0 * 4 + x1]) +
                            wy * ((1 - wx) * p[y1 * 4 + x0] + wx * p[y1 * 4 + x1]);
                    }
                    ref[(c * 6 + oy) * 7 + ox] = v;
                }
        tg_check_true(mode ? "Resize linear runs" : "Resize nearest runs", rc == 0);
        tg_check_close(mode ? "Resize linear" : "Resize nearest", tg.f[y], ref, 84, 1e-5f, 1e-5f);
        tg_free(&tg);
    }

    /* Resize that shrinks one dim and grows another: resized dim by dim in dim order, X [1,1,1,65536] ->
     * Y [1,1,65536,1] went through a 2^32-element (16 GB) intermediate (a fuzzer's OOM). The shrinking dim
     * goes first now, so it runs within max(X, Y); every Y element is then X's one (nearest) or the
     * mean of the two middle ones (linear, half_pixel). */
    for (int mode = 0; mode < 2; mode++) {
        tg_init(&tg, SIM_OP_RESIZE);
        int64_t rxd[4] = {1, 1, 1, 65536}, ryd[4] = {1, 1, 65536, 1};
        x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, rxd, 1);
        y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, ryd, 0);
        tg_input(&tg, x);
        tg_output(&tg, y);
        tg_attr_i(&tg, "mode", mode);
        tg_attr_i(&tg, "coord", 0);
        tg_attr_i(&tg, "nearest", 2);
        rc = tg_run(&tg, 0, err, sizeof err);
        float want = mode == 0 ? tg.f[x][32767] : 0.5f * tg.f[x][32767] + 0.5f * tg.f[x][32768];
        int same = rc == 0;
        for (int64_t i = 0; same && i < 65536; i++) same = tg.f[y][i] == want;
        tg_check_true(mode ? "Resize linear shrink+grow within max(X, Y)" : "Resize nearest shrink+grow within max(X, Y)",
                      same);
        tg_free(&tg);
    }
}
