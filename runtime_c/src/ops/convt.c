/*
 * ConvTranspose (float path): per group, columns = W^T * X by the packed GEMM, then col2im
 * scatter-adds each column into the output, block by block so the column buffer stays small.
 */
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "conv_i8.h"
#include "gemm_kernel.h"

typedef struct convt_priv {
    sim_conv_geom g;
    int avx2;
    float *wpack; /* per group: packed (mg * k_sz) x cg */
    float *bias;
    sim_conv_i8 *i8;
} convt_priv;

static void convt_release(sim_op *op)
{
    convt_priv *p = op->priv;
    if (!p) return;
    free(p->wpack);
    free(p->bias);
    sim_conv_i8_free(p->i8);
    free(p);
    op->priv = NULL;
}

static int convt_prepare(const sim_graph *gr, sim_op *op, char *err, size_t err_len)
{
    convt_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    op->priv = p;
    int rc = sim_conv_geom_init(gr, op, 1, &p->g, err, err_len);
    if (rc) {
        convt_release(op);
        return rc;
    }
    const sim_conv_geom *g = &p->g;
    const sim_tensor *w = sim_in_tensor(gr, op, 1), *b = sim_in_tensor(gr, op, 2), *x = sim_in_tensor(gr, op, 0);
    p->avx2 = sim_cpu_has_avx2_fma();
    int64_t rows = g->mg * g->k_sz;
    size_t per_group = sim_pack_a_size(rows, g->cg);
    p->bias = calloc((size_t)g->cout, sizeof(float));
    p->wpack = malloc(per_group * (size_t)g->group * sizeof(float));
    if (!p->bias || !p->wpack) {
        convt_release(op);
        return sim_fail(err, err_len, op, "out of memory packing weights");
    }
    if (b) memcpy(p->bias, b->fdata, (size_t)g->cout * sizeof(float));
    for (int64_t gi = 0; gi < g->group; gi++)
        sim_pack_a(w->fdata + gi * g->cg * rows, 1, rows, rows, g->cg, p->wpack + (size_t)gi * per_group);
    if (x->dtype == SIM_I8) {
        rc = sim_conv_i8_prepare(gr, op, g, 1, &p->i8, err, err_len);
        if (rc) {
            convt_release(op);
            return rc;
        }
    }
    return 0;
}

/* The context of add_f32 (a sim_col2im_add): the float column row and the channel image it adds into. */
typedef struct col2im_f32 {
    const float *col;
    float *yc;
} col2im_f32;

static void add_f32(void *ctx, int64_t src, int64_t dst, int64_t ow0, int64_t sw, int64_t lo, int64_t hi)
{
    const col2im_f32 *c = ctx;
    const float *s = c->col + src;
    float *d = c->yc + dst + ow0;
    if (sw == 1)
        for (int64_t x = lo; x < hi; x++) d[x] += s[x];
    else
        for (int64_t x = lo; x < hi; x++) d[x * sw] += s[x];
}

/* Adds row r (= (oc, kd, kh, kw)) of a column block (input positions [j0, j0+n)) into y of one group. */
static void col2im_row(const sim_conv_geom *g, const float *col, int64_t r, int64_t j0, int64_t n, float *yg)
{
    int64_t kw = r % g->k[2], t = r / g->k[2];
    int64_t kh = t % g->k[1];
    t /= g->k[1];
    int64_t kd = t % g->k[0], oc = t / g->k[0];
    col2im_f32 c = {col, yg + oc * g->out_sz};
    sim_col2im_walk(g, kd, kh, kw, j0, n, add_f32, &c);
}

typedef struct convt_job {
    const convt_priv *p;
    const float *pb;      /* the group's whole input as packed B */
    float *yg;
    float *col;           /* n_threads slices of cstride floats */
    size_t cstride;
    int64_t gi, ob, nb;
} convt_job;

/* Channel blocks [lo, hi) of one group. Each output value gets bias, then its contributions in the
 * order of the serial loop (column block, then row), so the sums do not depend on the split. */
static void convt_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const convt_job *j = arg;
    const convt_priv *p = j->p;
    const sim_conv_geom *g = &p->g;
    size_t per_group = sim_pack_a_size(g->mg * g->k_sz, g->cg);
    float *col = j->col + (size_t)tid * j->cstride;
    sim_gemm_epi epi;
    memset(&epi, 0, sizeof epi);
    for (int64_t b = lo; b < hi; b++) {
        int64_t c0 = b * j->ob, c1 = c0 + j->ob < g->mg ? c0 + j->ob : g->mg;
        int64_t r0 = c0 * g->k_sz, nr = (c1 - c0) * g->k_sz;
        for (int64_t c = c0; c < c1; c++) {
            float *yc = j->yg + c * g->out_sz, bv = p->bias[j->gi * g->mg + c];
            for (int64_t i = 0; i < g->out_sz; i++) yc[i] = bv;
        }
        for (int64_t j0 = 0; j0 < g->in_sz; j0 += j->nb) {
            int64_t w = g->in_sz - j0 < j->nb ? g->in_sz - j0 : j->nb;
            sim_gemm_packed(p->avx2, p->wpack + (size_t)j->gi * per_group + r0 * g->cg, j->pb + j0 * g->cg, nr, w, g->cg,
                            col, j->nb, &epi);
            for (int64_t r = 0; r < nr; r++) col2im_row(g, col + r * j->nb, r0 + r, j0, w, j->yg);
        }
    }
}

static int convt_run_f32(sim_kernel_call *call)
{
    const convt_priv *p = call->op->priv;
    const float *x = sim_call_in_f32(call, 0);
    float *y = call->out[0].f32;
    if (!p || !x || !y) return SIM_ERR_FAIL;
    const sim_conv_geom *g = &p->g;
    int64_t rows = g->mg * g->k_sz, ob = sim_convt_items_block(g, sim_call_threads(call));
    /* the column blocks of the serial formulation (they fix each output's summation order) */
    int64_t nb = sim_gemm_block_cols(g->cg);
    int64_t cap = sim_round_up((1 << 20) / (rows > 0 ? rows : 1), SIM_NR);
    if (nb > cap) nb = cap;
    if (nb > sim_round_up(g->in_sz, SIM_NR)) nb = sim_round_up(g->in_sz, SIM_NR);
    size_t pb_sz = (sim_pack_b_size(g->cg, g->in_sz) + 15u) & ~(size_t)15u;
    size_t cstride = ((size_t)(ob * g->k_sz * nb) + 15u) & ~(size_t)15u;
    int nt = sim_call_threads(call);
    float *pb = sim_scratch_get(call, (pb_sz + cstride * (size_t)nt) * sizeof(float));
    if (!pb) return SIM_ERR_MALLOC;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gi = 0; gi < g->group; gi++) {
            sim_pack_b(x + (n * g->cin + gi * g->cg) * g->in_sz, g->in_sz, 1, g->cg, g->in_sz, pb);
            convt_job j = {p, pb, y + (n * g->cout + gi * g->mg) * g->out_sz, pb + pb_sz, cstride, gi, ob, nb};
            sim_parallel_sized(call, convt_range, &j, (g->mg + ob - 1) / ob, (double)(rows * g->in_sz * g->cg));
        }
    sim_op_act(call->op, y, (size_t)(g->n * g->cout * g->out_sz));
    return 0;
}

static int convt_run_i8(sim_kernel_call *call)
{
    const convt_priv *p = call->op->priv;
    if (!p || !p->i8) return SIM_ERR_FAIL;
    return sim_conv_i8_run(p->i8, &p->g, 1, call);
}

static uint64_t convt_macs(const sim_graph *gr, const sim_op *op)
{
    const convt_priv *p = op->priv;
    (void)gr;
    if (!p) return 0;
    const sim_conv_geom *g = &p->g;
    return (uint64_t)(g->n * g->cin * g->in_sz * g->mg * g->k_sz);
}

const sim_op_def sim_def_conv_transpose = {
    .type = SIM_OP_CONV_TRANSPOSE, .onnx_name = "ConvTranspose", .npu_name = "ConvTranspose",
    .prepare = convt_prepare, .run_f32 = convt_run_f32, .run_i8 = convt_run_i8, .release = convt_release,
    .macs = convt_macs,
};
