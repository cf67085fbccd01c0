/*
 * Int8 Gemm and MatMul: Y = op(A) op(B) with int32 accumulation of (a - za) * (b - zb). A constant
 * B (weights) is packed at prepare with per-output-column scales (per-channel INT8 weights, or
 * symmetric per-column quantisation of float weights); an activation B uses its own scale. Gemm's
 * per-column constant C becomes the int32 bias; any other C is added in float after the GEMM.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h" /* sim_parallel_sized */
#include "gemm_i8.h"
#include "matmul_i8.h"

struct sim_mm_i8 {
    int64_t m, n, k, a_rs, a_cs, b_rs, b_cs;
    int avx2;
    int32_t za, zb;       /* activation zero points (zb only for an activation B) */
    float sa, sb, alpha, so;
    int16_t *bpack;       /* constant B, per B matrix */
    int64_t n_bmats;
    float *col_scale;     /* per column: sb (constant weights) */
    int32_t *bias;
    float *mult, *rscale; /* per column */
    int c_general;        /* C added in float after the GEMM */
    sim_i8_epi epi;
    sim_act_lut lut;      /* fused transcendental activation, see act_lut.h */
};

void sim_mm_i8_free(sim_mm_i8 *s)
{
    if (!s) return;
    free(s->bpack);
    free(s->col_scale);
    free(s->bias);
    free(s->mult);
    free(s->rscale);
    sim_act_lut_free(&s->lut);
    free(s);
}

/* Column (output channel) of element e of a constant B matrix (element (k, j) at k*b_rs + j*b_cs). */
static int64_t b_column(const sim_mm_i8 *s, int64_t e)
{
    int64_t within = e % (s->k * s->n);
    return s->b_cs == 1 ? within % s->n : within / s->k;
}

static int const_b(sim_mm_i8 *s, const sim_tensor *b, const sim_op *op, char *err, size_t err_len)
{
    int64_t total = b->n_elems;
    int16_t *q = malloc((size_t)total * sizeof(int16_t));
    if (!q) return SIM_ERR_MALLOC;
    for (int64_t j = 0; j < s->n; j++) s->col_scale[j] = 0.0f;
    if (b->dtype == SIM_I8 && b->data) {
        const int8_t *raw = b->data;
        int col_axis = s->b_cs == 1 ? (int)b->n_dims - 1 : (int)b->n_dims - 2;
        if (b->qnt == SIM_Q_CHANNEL && (b->q_axis != col_axis || !b->q_scales || b->q_count != (uint32_t)s->n)) {
            free(q);
            return sim_fail(err, err_len, op, "per-channel B quantisation must be on the output-column axis %d", col_axis);
        }
        for (int64_t e = 0; e < total; e++) {
            int64_t j = b_column(s, e);
            float sc = b->qnt == SIM_Q_CHANNEL ? b->q_scales[j] : b->scale;
            int32_t z = b->qnt == SIM_Q_CHANNEL ? (b->q_zps ? b->q_zps[j] : 0) : (b->qnt == SIM_Q_AFFINE ? b->zp : 0);
            s->col_scale[j] = sc > 0.0f ? sc : 1.0f;
            q[e] = (int16_t)(raw[e] - z);
        }
    } else {
        for (int64_t e = 0; e < total; e++) {
            int64_t j = b_column(s, e);
            float a = fabsf(b->fdata[e]);
            s->col_scale[j] = a > s->col_scale[j] ? a : s->col_scale[j];
        }
        for (int64_t j = 0; j < s->n; j++) s->col_scale[j] = s->col_scale[j] > 0.0f ? s->col_scale[j] / 127.0f : 1.0f;
        for (int64_t e = 0; e < total; e++) q[e] = sim_quant_i8(b->fdata[e], s->col_scale[b_column(s, e)], 0);
    }
    int64_t mat = s->k * s->n, per = (int64_t)sim_pack_b16_size(s->k, s->n);
    s->n_bmats = total / mat;
    s->bpack = malloc((size_t)(per * s->n_bmats) * sizeof(int16_t));
    if (!s->bpack) {
        free(q);
        return SIM_ERR_MALLOC;
    }
    for (int64_t i = 0; i < s->n_bmats; i++) sim_pack_b16(q + i * mat, s->b_rs, s->b_cs, s->k, s->n, s->bpack + i * per);
    free(q);
    return 0;
}

int sim_mm_i8_prepare(const sim_graph *g, const sim_op *op, int64_t m, int64_t n, int64_t k, int64_t a_rs,
                      int64_t a_cs, int64_t b_rs, int64_t b_cs, float alpha, sim_mm_i8 **out, char *err,
                      size_t err_len)
{
    const sim_tensor *a = sim_in_tensor(g, op, 0), *b = sim_in_tensor(g, op, 1), *c = sim_in_tensor(g, op, 2);
    const sim_tensor *y = sim_out_tensor(g, op, 0);
    *out = NULL;
    sim_mm_i8 *s = calloc(1, sizeof *s);
    if (!s) return SIM_ERR_MALLOC;
    s->m = m;
    s->n = n;
    s->k = k;
    s->a_rs = a_rs;
    s->a_cs = a_cs;
    s->b_rs = b_rs;
    s->b_cs = b_cs;
    s->alpha = alpha;
    s->avx2 = sim_cpu_has_avx2_fma();
    s->sa = sim_t_scale(a);
    s->za = sim_t_zp(a);
    s->so = y->dtype == SIM_I8 ? sim_t_scale(y) : 1.0f;
    s->col_scale = malloc((size_t)n * sizeof(float));
    s->bias = calloc((size_t)n, sizeof(int32_t));
    s->mult = malloc((size_t)n * sizeof(float));
    s->rscale = malloc((size_t)n * sizeof(float));
    int rc = 0;
    if (!s->col_scale || !s->bias || !s->mult || !s->rscale) rc = SIM_ERR_MALLOC;
    if (!rc && b->kind == SIM_T_CONST) {
        rc = const_b(s, b, op, err, err_len);
    } else if (!rc) {
        s->sb = sim_t_scale(b);
        s->zb = sim_t_zp(b);
        for (int64_t j = 0; j < n; j++) s->col_scale[j] = s->sb;
    }
    if (rc) {
        sim_mm_i8_free(s);
        return rc == SIM_ERR_MALLOC ? sim_fail(err, err_len, op, "out of memory preparing int8 weights") : rc;
    }
    float beta = sim_attr_float(op, "beta", 1.0f);
    int per_col = c && c->kind == SIM_T_CONST && c->fdata && c->n_elems == n && (c->n_dims == 1 || c->dims[0] == 1);
    s->c_general = c && !per_col;
    for (int64_t j = 0; j < n; j++) {
        float rs = alpha * s->sa * s->col_scale[j];
        s->rscale[j] = rs;
        s->mult[j] = rs / s->so;
        if (per_col) {
            double q = round((double)(beta * c->fdata[j]) / (double)rs);
            q = q > 2147483647.0 ? 2147483647.0 : (q < -2147483648.0 ? -2147483648.0 : q);
            s->bias[j] = (int32_t)q;
        }
    }
    sim_i8_epi_act(&s->epi, op, s->so, y->dtype == SIM_I8 ? sim_t_zp(y) : 0);
    s->epi.per_col = 1;
    s->epi.bias = s->bias;
    s->epi.mult = s->mult;
    s->epi.rscale = s->rscale;
    if (sim_i8_epi_lut(&s->epi, &s->lut)) {
        sim_mm_i8_free(s);
        return sim_fail(err, err_len, op, "out of memory preparing the activation table");
    }
    *out = s;
    return 0;
}

/* y = requant(acc * rscale + beta * C) with general broadcasting of C. */
static void finish_general_c(const sim_mm_i8 *s, const sim_op *op, const sim_bcast *cbc, const int32_t *acc,
                             const float *c, int8_t *y, int64_t total)
{
    float beta = sim_attr_float(op, "beta", 1.0f);
    for (int64_t i = 0; i < total; i++) {
        int64_t r = i, off = 0;
        for (int d = cbc->nd - 1; d >= 0; d--) {
            off += (r % cbc->dims[d]) * cbc->sb[d];
            r /= cbc->dims[d];
        }
        float v = (float)acc[i] * s->rscale[i % s->n] + beta * c[off];
        v = sim_apply_act(op->act, op->act_p0, op->act_p1, v);
        y[i] = sim_quant_i8(v, s->so, s->epi.zo);
    }
}

/* Work split as the float path (matmul.c): (output matrix, chunk of rows) tasks; int32 accumulation is
 * exact, so any split gives the same bytes. */
#define MM_I8_CHUNK_ROWS (4 * SIM_MR)

typedef struct mm_i8_job {
    const sim_mm_i8 *s;
    const sim_bcast *bb;
    const int8_t *a, *b;
    int8_t *y;
    int32_t *acc;             /* c_general: raw accumulators of every output */
    int16_t *pbs;             /* per output matrix packed B (activation B), else NULL */
    char *scr;                /* per thread: A rows, packed A, int32 rows */
    size_t stride;
    int64_t chunks;           /* per output matrix */
    int vec_requant;          /* per-column vector requantisation (act none or clamp) */
} mm_i8_job;

static void offsets(const sim_bcast *bb, int64_t bi, int64_t *oa, int64_t *ob)
{
    int64_t r = bi;
    *oa = *ob = 0;
    for (int d = bb->nd - 1; d >= 0; d--) {
        int64_t i = r % bb->dims[d];
        r /= bb->dims[d];
        *oa += i * bb->sa[d];
        *ob += i * bb->sb[d];
    }
}

static void pack_b_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const mm_i8_job *j = arg;
    const sim_mm_i8 *s = j->s;
    size_t per = sim_pack_b16_size(s->k, s->n);
    (void)tid;
    for (int64_t bi = lo; bi < hi; bi++) {
        int64_t oa, ob;
        offsets(j->bb, bi, &oa, &ob);
        sim_pack_b16_i8(j->b + ob * s->k * s->n, s->b_rs, s->b_cs, s->k, s->n, s->zb, j->pbs + (size_t)bi * per);
    }
}

static void mm_i8_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const mm_i8_job *j = arg;
    const sim_mm_i8 *s = j->s;
    char *scr = j->scr + (size_t)tid * j->stride;
    int16_t *arow = (int16_t *)(void *)scr;
    int16_t *pa = arow + sim_round_up((MM_I8_CHUNK_ROWS + 1) * s->k, 32);
    int32_t *rows32 = (int32_t *)(void *)(pa + sim_round_up((int64_t)sim_pack_a16_size(MM_I8_CHUNK_ROWS + 1, s->k), 32));
    for (int64_t t = lo; t < hi; t++) {
        int64_t bi = t / j->chunks, c = t % j->chunks, oa, ob;
        int64_t r0 = c * MM_I8_CHUNK_ROWS, r1 = c == j->chunks - 1 ? s->m : r0 + MM_I8_CHUNK_ROWS, mr = r1 - r0;
        offsets(j->bb, bi, &oa, &ob);
        const int8_t *am = j->a + oa * s->m * s->k;
        for (int64_t i = 0; i < mr; i++)
            for (int64_t e = 0; e < s->k; e++)
                arow[i * s->k + e] = (int16_t)(am[(r0 + i) * s->a_rs + e * s->a_cs] - s->za);
        sim_pack_a16(arow, s->k, 1, mr, s->k, pa);
        const int16_t *pbm = j->pbs ? j->pbs + (size_t)bi * sim_pack_b16_size(s->k, s->n)
                                    : s->bpack + ob * (int64_t)sim_pack_b16_size(s->k, s->n);
        int64_t off = bi * s->m * s->n + r0 * s->n;
        if (s->c_general) {
            sim_gemm_i8_packed(s->avx2, pa, pbm, mr, s->n, s->k, NULL, j->acc + off, s->n, 1, 0, 0, &(sim_i8_epi){0});
        } else if (j->vec_requant) {
            sim_gemm_i8_packed(s->avx2, pa, pbm, mr, s->n, s->k, NULL, rows32, s->n, 1, 0, 0, &s->epi);
            for (int64_t i = 0; i < mr; i++)
                sim_i8_requant_cols(s->avx2, &s->epi, rows32 + i * s->n, s->n, 0, j->y + off + i * s->n);
        } else {
            sim_gemm_i8_packed(s->avx2, pa, pbm, mr, s->n, s->k, j->y + off, NULL, s->n, 1, 0, 0, &s->epi);
        }
    }
}

int sim_mm_i8_run(const sim_mm_i8 *s, int64_t batch, const sim_bcast *bb, const sim_bcast *cbc,
                  sim_kernel_call *call)
{
    const int8_t *a = call->in[0].i8, *b = call->in[1].i8;
    int8_t *y = call->out[0].i8;
    if (!s || !a || !y || (!s->bpack && !b)) return SIM_ERR_FAIL;
    int64_t chunks = (s->m + MM_I8_CHUNK_ROWS - 1) / MM_I8_CHUNK_ROWS;
    if (chunks > 1 && s->m % MM_I8_CHUNK_ROWS == 1) chunks--; /* as matmul.c: no single-row tail chunk */
    size_t acc_sz = s->c_general ? (size_t)(batch * s->m * s->n) * sizeof(int32_t) : 0;
    size_t pbs_sz = s->bpack ? 0 : (size_t)batch * sim_pack_b16_size(s->k, s->n) * sizeof(int16_t);
    int64_t rows = MM_I8_CHUNK_ROWS + 1;
    size_t stride = (size_t)(sim_round_up(rows * s->k, 32) + sim_round_up((int64_t)sim_pack_a16_size(rows, s->k), 32)) *
                        sizeof(int16_t) +
                    (size_t)(rows * s->n) * sizeof(int32_t);
    acc_sz = (acc_sz + 63u) & ~(size_t)63u;
    pbs_sz = (pbs_sz + 63u) & ~(size_t)63u;
    stride = (stride + 63u) & ~(size_t)63u;
    char *scr = sim_scratch_get(call, acc_sz + pbs_sz + stride * (size_t)sim_call_threads(call));
    if (!scr) return SIM_ERR_MALLOC;
    mm_i8_job j = {s,
                   bb,
                   a,
                   b,
                   y,
                   (int32_t *)(void *)scr,
                   s->bpack ? NULL : (int16_t *)(void *)(scr + acc_sz),
                   scr + acc_sz + pbs_sz,
                   stride,
                   chunks,
                   s->epi.act == SIM_ACT_NONE || s->epi.clamp};
    /* work in float-MAC units: an int8 MAC on the 16-bit kernels costs about half a float one */
    if (j.pbs) sim_parallel_sized(call, pack_b_range, &j, batch, (double)(batch * s->k * s->n));
    sim_parallel_sized(call, mm_i8_range, &j, batch * chunks, (double)(batch * s->m * s->n * s->k) / 2.0);
    if (s->c_general) {
        const sim_tensor *ct = sim_call_in_t(call, 2);
        const float *c = sim_call_in_f32(call, 2);
        float *cf = NULL;
        if (!c && ct && call->in[2].i8) { /* int8 activation C: dequantise */
            cf = sim_scratch_get(call, (size_t)ct->n_elems * sizeof(float));
            if (!cf) return SIM_ERR_MALLOC;
            sim_dequant_array(call->in[2].i8, cf, (size_t)ct->n_elems, sim_t_scale(ct), sim_t_zp(ct));
            c = cf;
        }
        if (!c || !cbc) return SIM_ERR_FAIL;
        finish_general_c(s, call->op, cbc, j.acc, c, y, batch * s->m * s->n);
    }
    return 0;
}
