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

/* Adds row r (= (oc, kd, kh, kw)) of a column block (input positions [j0, j0+n)) into y of one group. */
static void col2im_row(const sim_conv_geom *g, const float *col, int64_t r, int64_t j0, int64_t n, float *yg)
{
    int64_t kw = r % g->k[2], t = r / g->k[2];
    int64_t kh = t % g->k[1];
    t /= g->k[1];
    int64_t kd = t % g->k[0], oc = t / g->k[0];
    float *yc = yg + oc * g->out_sz;
    int64_t plane = g->in[1] * g->in[2];
    int64_t id = j0 / plane, rem = j0 % plane, ih = rem / g->in[2], iw = rem % g->in[2];
    int64_t j = 0;
    while (j < n) {
        int64_t seg = g->in[2] - iw;
        if (seg > n - j) seg = n - j;
        int64_t od = id * g->s[0] - g->pb[0] + kd * g->dl[0];
        int64_t oh = ih * g->s[1] - g->pb[1] + kh * g->dl[1];
        if (od >= 0 && od < g->out[0] && oh >= 0 && oh < g->out[1]) {
            float *dst = yc + (od * g->out[1] + oh) * g->out[2];
            int64_t ow0 = iw * g->s[2] - g->pb[2] + kw * g->dl[2];
            for (int64_t x = 0; x < seg; x++) {
                int64_t ow = ow0 + x * g->s[2];
                if (ow >= 0 && ow < g->out[2]) dst[ow] += col[j + x];
            }
        }
        j += seg;
        iw = 0;
        if (++ih == g->in[1]) {
            ih = 0;
            id++;
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
    int64_t rows = g->mg * g->k_sz;
    int64_t nb = sim_gemm_block_cols(g->cg);
    int64_t cap = sim_round_up((1 << 20) / (rows > 0 ? rows : 1), SIM_NR);
    if (nb > cap) nb = cap;
    if (nb > sim_round_up(g->in_sz, SIM_NR)) nb = sim_round_up(g->in_sz, SIM_NR);
    size_t pb_sz = sim_pack_b_size(g->cg, nb), per_group = sim_pack_a_size(rows, g->cg);
    float *pb = sim_scratch_get(call, (pb_sz + (size_t)(rows * nb)) * sizeof(float));
    if (!pb) return SIM_ERR_MALLOC;
    float *col = pb + pb_sz;
    sim_gemm_epi epi;
    memset(&epi, 0, sizeof epi);
    for (int64_t n = 0; n < g->n; n++) {
        for (int64_t c = 0; c < g->cout; c++) {
            float *yc = y + (n * g->cout + c) * g->out_sz;
            for (int64_t i = 0; i < g->out_sz; i++) yc[i] = p->bias[c];
        }
        for (int64_t gi = 0; gi < g->group; gi++) {
            const float *xg = x + (n * g->cin + gi * g->cg) * g->in_sz;
            float *yg = y + (n * g->cout + gi * g->mg) * g->out_sz;
            for (int64_t j0 = 0; j0 < g->in_sz; j0 += nb) {
                int64_t w = g->in_sz - j0 < nb ? g->in_sz - j0 : nb;
                sim_pack_b(xg + j0, g->in_sz, 1, g->cg, w, pb);
                sim_gemm_packed(p->avx2, p->wpack + (size_t)gi * per_group, pb, rows, w, g->cg, col, nb, &epi);
                for (int64_t r = 0; r < rows; r++) col2im_row(g, col + r * nb, r, j0, w, yg);
            }
        }
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
