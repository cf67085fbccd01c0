/*
 * Gemm and MatMul (float path). Constant right-hand matrices (weights) are packed once at prepare
 * time, with Gemm's alpha folded in; left-hand activations are packed per call. MatMul supports
 * numpy batch broadcasting and 1-D operands.
 */
#include <stdlib.h>
#include <string.h>

#include "conv.h" /* sim_parallel_sized */
#include "gemm_kernel.h"
#include "matmul_i8.h"
#include "ops_common.h"

typedef struct mm_priv {
    int64_t m, n, k;
    int64_t batch;                                 /* output matrices */
    sim_bcast bb;                                  /* batch strides (in matrices) of A and B */
    int64_t a_rs, a_cs, b_rs, b_cs;                /* element strides of op(A), op(B) */
    float alpha, beta;
    float *bpack;                                  /* constant B packed per B matrix (alpha folded), or NULL */
    int64_t n_bmats;
    int c_mode;                                    /* 0 none, 1 per-column vector, 2 general broadcast */
    float *cvec;                                   /* beta * C for c_mode 1 (n entries) */
    sim_bcast cb;                                  /* broadcast of C against Y for c_mode 2 */
    int avx2, post_act;
    sim_gemm_epi epi;
    sim_mm_i8 *i8;
} mm_priv;

static void mm_release(sim_op *op)
{
    mm_priv *p = op->priv;
    if (!p) return;
    free(p->bpack);
    free(p->cvec);
    sim_mm_i8_free(p->i8);
    free(p);
    op->priv = NULL;
}

static void setup_act(const sim_op *op, mm_priv *p)
{
    memset(&p->epi, 0, sizeof p->epi);
    if (op->act == SIM_ACT_RELU) {
        p->epi.clamp = 1;
        p->epi.lo = 0.0f;
        p->epi.hi = __builtin_inff();
    } else if (op->act == SIM_ACT_CLIP) {
        p->epi.clamp = 1;
        p->epi.lo = op->act_p0;
        p->epi.hi = op->act_p1;
    } else {
        p->post_act = op->act != SIM_ACT_NONE;
    }
}

/* Packs every constant B matrix once (alpha folded in). */
static int pack_const_b(mm_priv *p, const sim_tensor *b)
{
    int64_t per = (int64_t)sim_pack_b_size(p->k, p->n), mat = p->k * p->n;
    p->n_bmats = b->n_elems / mat;
    p->bpack = malloc((size_t)(per * p->n_bmats) * sizeof(float));
    float *tmp = malloc((size_t)mat * sizeof(float));
    if (!p->bpack || !tmp) {
        free(tmp);
        return SIM_ERR_MALLOC;
    }
    for (int64_t i = 0; i < p->n_bmats; i++) {
        const float *src = b->fdata + i * mat;
        for (int64_t e = 0; e < mat; e++) tmp[e] = p->alpha * src[e];
        sim_pack_b(tmp, p->b_rs, p->b_cs, p->k, p->n, p->bpack + i * per);
    }
    free(tmp);
    return 0;
}

/* The int8 GEMM takes int8 A and B (a constant B may be float: it is quantised per column at prepare).
 * A model whose layer runs in int8 (sim_op_int8_io) with a float or per-channel A is refused here, at
 * rknn_init, naming the layer, rather than failing at rknn_run. */
static int check_i8_operands(const sim_graph *g, const sim_op *op, const sim_tensor *a, char *err, size_t err_len)
{
    if (!sim_op_int8_io(g, op) || (a->dtype == SIM_I8 && a->qnt != SIM_Q_CHANNEL)) return 0;
    return sim_fail(err, err_len, op,
                    "runs in int8 but its A operand '%s' is a %s%s %s: the int8 GEMM needs an int8 A with one "
                    "scale (rebuild with rknnlink, which quantises a constant A, or keep this layer in float16)",
                    a->name, a->qnt == SIM_Q_CHANNEL ? "per-channel " : "", sim_dtype_name(a->dtype),
                    a->kind == SIM_T_CONST ? "constant" : "activation");
}

static int gemm_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96], b3[96];
    const sim_tensor *a = sim_in_tensor(g, op, 0), *b = sim_in_tensor(g, op, 1), *c = sim_in_tensor(g, op, 2);
    const sim_tensor *y = sim_out_tensor(g, op, 0);
    if (!a || !b || !y || op->n_outputs != 1) return sim_fail(err, err_len, op, "needs inputs A, B and one output");
    if (a->n_dims != 2 || b->n_dims != 2 || y->n_dims != 2)
        return sim_fail(err, err_len, op, "A %s, B %s and Y %s must be 2-D", sim_shape_str(a, b1, sizeof b1),
                        sim_shape_str(b, b2, sizeof b2), sim_shape_str(y, b3, sizeof b3));
    mm_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    op->priv = p;
    int ta = sim_attr_int(op, "transA", 0) != 0, tb = sim_attr_int(op, "transB", 0) != 0;
    p->alpha = sim_attr_float(op, "alpha", 1.0f);
    p->beta = sim_attr_float(op, "beta", 1.0f);
    p->m = ta ? a->dims[1] : a->dims[0];
    p->k = ta ? a->dims[0] : a->dims[1];
    p->n = tb ? b->dims[0] : b->dims[1];
    int64_t kb = tb ? b->dims[1] : b->dims[0];
    p->batch = 1;
    p->a_rs = ta ? 1 : p->k;
    p->a_cs = ta ? p->m : 1;
    p->b_rs = tb ? 1 : p->n;
    p->b_cs = tb ? p->k : 1;
    if (kb != p->k || y->dims[0] != p->m || y->dims[1] != p->n) {
        mm_release(op);
        return sim_fail(err, err_len, op, "A %s x B %s (transA %d, transB %d) does not give Y %s",
                        sim_shape_str(a, b1, sizeof b1), sim_shape_str(b, b2, sizeof b2), ta, tb,
                        sim_shape_str(y, b3, sizeof b3));
    }
    if (c) {
        const sim_tensor *pair[2] = {y, c};
        if (sim_bcast_check(y, pair, 2)) {
            mm_release(op);
            return sim_fail(err, err_len, op, "C %s does not broadcast to Y %s", sim_shape_str(c, b1, sizeof b1),
                            sim_shape_str(y, b2, sizeof b2));
        }
        int per_col = c->n_elems == p->n && (c->n_dims == 1 || c->dims[0] == 1);
        if (per_col && c->kind == SIM_T_CONST && c->fdata) {
            p->c_mode = 1;
            p->cvec = malloc((size_t)p->n * sizeof(float));
            if (!p->cvec) {
                mm_release(op);
                return SIM_ERR_MALLOC;
            }
            for (int64_t j = 0; j < p->n; j++) p->cvec[j] = p->beta * c->fdata[j];
        } else {
            p->c_mode = 2;
            sim_bcast_init(&p->cb, y, y, c);
        }
    }
    setup_act(op, p);
    p->avx2 = sim_cpu_has_avx2_fma();
    if (b->kind == SIM_T_CONST && b->fdata && pack_const_b(p, b)) {
        mm_release(op);
        return sim_fail(err, err_len, op, "out of memory packing B");
    }
    int bad = check_i8_operands(g, op, a, err, err_len);
    if (bad) {
        mm_release(op);
        return bad;
    }
    if (a->dtype == SIM_I8) {
        int rc = sim_mm_i8_prepare(g, op, p->m, p->n, p->k, p->a_rs, p->a_cs, p->b_rs, p->b_cs, p->alpha, &p->i8, err,
                                   err_len);
        if (rc) {
            mm_release(op);
            return rc;
        }
    }
    return 0;
}

/* Batch dims of t (all but the last two after 1-D promotion) as a pseudo tensor for broadcasting. */
static void batch_view(const sim_tensor *t, int is_b, sim_tensor *out)
{
    memset(out, 0, sizeof *out);
    (void)is_b;
    uint32_t nb = t->n_dims >= 2 ? t->n_dims - 2 : 0;
    out->n_dims = nb;
    out->n_elems = 1;
    for (uint32_t d = 0; d < nb; d++) {
        out->dims[d] = t->dims[d];
        out->n_elems *= t->dims[d];
    }
}

static int matmul_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96], b3[96];
    const sim_tensor *a = sim_in_tensor(g, op, 0), *b = sim_in_tensor(g, op, 1), *y = sim_out_tensor(g, op, 0);
    if (!a || !b || !y || op->n_inputs != 2 || op->n_outputs != 1)
        return sim_fail(err, err_len, op, "needs inputs A, B and one output");
    if (a->n_dims < 1 || b->n_dims < 1) return sim_fail(err, err_len, op, "scalar operands are not allowed");
    mm_priv *p = calloc(1, sizeof *p);
    if (!p) return SIM_ERR_MALLOC;
    op->priv = p;
    p->alpha = 1.0f;
    p->m = a->n_dims == 1 ? 1 : a->dims[a->n_dims - 2];
    p->k = a->dims[a->n_dims - 1];
    int64_t kb = b->n_dims == 1 ? b->dims[0] : b->dims[b->n_dims - 2];
    p->n = b->n_dims == 1 ? 1 : b->dims[b->n_dims - 1];
    p->a_rs = p->k;
    p->a_cs = 1;
    p->b_rs = p->n;
    p->b_cs = 1;
    /* expected output: broadcast batch dims, then M (unless A is 1-D), then N (unless B is 1-D) */
    sim_tensor ba, bb, by;
    batch_view(a, 0, &ba);
    batch_view(b, 1, &bb);
    memset(&by, 0, sizeof by);
    by.n_dims = ba.n_dims > bb.n_dims ? ba.n_dims : bb.n_dims;
    int ok = kb == p->k;
    for (uint32_t d = 0; ok && d < by.n_dims; d++) {
        int64_t da = (int64_t)d - (int64_t)(by.n_dims - ba.n_dims) >= 0 ? ba.dims[d - (by.n_dims - ba.n_dims)] : 1;
        int64_t db = (int64_t)d - (int64_t)(by.n_dims - bb.n_dims) >= 0 ? bb.dims[d - (by.n_dims - bb.n_dims)] : 1;
        if (da != db && da != 1 && db != 1) ok = 0;
        by.dims[d] = da > db ? da : db;
    }
    uint32_t rank = by.n_dims + (a->n_dims > 1) + (b->n_dims > 1);
    ok = ok && y->n_dims == rank;
    for (uint32_t d = 0; ok && d < by.n_dims; d++) ok = y->dims[d] == by.dims[d];
    if (ok && a->n_dims > 1) ok = y->dims[by.n_dims] == p->m;
    if (ok && b->n_dims > 1) ok = y->dims[rank - 1] == p->n;
    if (!ok) {
        mm_release(op);
        return sim_fail(err, err_len, op, "A %s x B %s does not give Y %s", sim_shape_str(a, b1, sizeof b1),
                        sim_shape_str(b, b2, sizeof b2), sim_shape_str(y, b3, sizeof b3));
    }
    by.n_elems = 1;
    for (uint32_t d = 0; d < by.n_dims; d++) by.n_elems *= by.dims[d];
    p->batch = by.n_elems;
    if (by.n_dims == 0) {
        by.n_dims = 1;
        by.dims[0] = 1;
    }
    sim_bcast_init(&p->bb, &by, &ba, &bb);
    setup_act(op, p);
    p->avx2 = sim_cpu_has_avx2_fma();
    if (b->kind == SIM_T_CONST && b->fdata && pack_const_b(p, b)) {
        mm_release(op);
        return sim_fail(err, err_len, op, "out of memory packing B");
    }
    int bad = check_i8_operands(g, op, a, err, err_len);
    if (bad) {
        mm_release(op);
        return bad;
    }
    if (a->dtype == SIM_I8) {
        int rc = sim_mm_i8_prepare(g, op, p->m, p->n, p->k, p->a_rs, p->a_cs, p->b_rs, p->b_cs, 1.0f, &p->i8, err,
                                   err_len);
        if (rc) {
            mm_release(op);
            return rc;
        }
    }
    return 0;
}

/* Offsets (in matrices) of A and B for output batch index bi. */
static void batch_offsets(const sim_bcast *bc, int64_t bi, int64_t *oa, int64_t *ob)
{
    *oa = *ob = 0;
    for (int d = bc->nd - 1; d >= 0; d--) {
        int64_t i = bi % bc->dims[d];
        bi /= bc->dims[d];
        *oa += i * bc->sa[d];
        *ob += i * bc->sb[d];
    }
}

/* y += C (already scaled by beta where constant) with general broadcasting. */
static void add_c_general(const mm_priv *p, const float *c, float *y, int64_t total)
{
    const sim_bcast *bc = &p->cb;
    for (int64_t i = 0; i < total; i++) {
        int64_t r = i, off = 0;
        for (int d = bc->nd - 1; d >= 0; d--) {
            off += (r % bc->dims[d]) * bc->sb[d];
            r /= bc->dims[d];
        }
        y[i] += p->beta * c[off];
    }
}

/* Work split: (output matrix, chunk of rows) tasks, chunks a multiple of SIM_MR rows so every C tile is
 * computed by the same kernel call however the tasks fall on threads (a trailing single-row chunk is
 * merged into the one before: one row would take the GEMV path). */
#define MM_CHUNK_ROWS (4 * SIM_MR)

static int64_t mm_chunks(int64_t m)
{
    int64_t c = (m + MM_CHUNK_ROWS - 1) / MM_CHUNK_ROWS;
    return c > 1 && m % MM_CHUNK_ROWS == 1 ? c - 1 : c;
}

typedef struct mm_job {
    const mm_priv *p;
    const float *a, *b;
    float *y;
    float *pbs;               /* per output matrix packed B (activation B), else NULL */
    char *pa_scr;             /* per-thread packed A */
    size_t pa_stride;
    int64_t chunks;           /* per output matrix */
    sim_gemm_epi epi;
} mm_job;

static void mm_pack_b_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const mm_job *j = arg;
    const mm_priv *p = j->p;
    size_t pb_sz = sim_pack_b_size(p->k, p->n);
    (void)tid;
    for (int64_t bi = lo; bi < hi; bi++) {
        int64_t oa, ob;
        batch_offsets(&p->bb, bi, &oa, &ob);
        float *pb = j->pbs + (size_t)bi * pb_sz;
        sim_pack_b(j->b + ob * p->k * p->n, p->b_rs, p->b_cs, p->k, p->n, pb);
        if (p->alpha != 1.0f)
            for (size_t e = 0; e < pb_sz; e++) pb[e] *= p->alpha;
    }
}

static void mm_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const mm_job *j = arg;
    const mm_priv *p = j->p;
    float *pa = (float *)(void *)(j->pa_scr + (size_t)tid * j->pa_stride);
    for (int64_t t = lo; t < hi; t++) {
        int64_t bi = t / j->chunks, c = t % j->chunks, oa, ob;
        int64_t r0 = c * MM_CHUNK_ROWS, r1 = c == j->chunks - 1 ? p->m : r0 + MM_CHUNK_ROWS;
        batch_offsets(&p->bb, bi, &oa, &ob);
        sim_pack_a(j->a + oa * p->m * p->k + r0 * p->a_rs, p->a_rs, p->a_cs, r1 - r0, p->k, pa);
        const float *pb = j->pbs ? j->pbs + (size_t)bi * sim_pack_b_size(p->k, p->n)
                                 : p->bpack + ob * (int64_t)sim_pack_b_size(p->k, p->n);
        sim_gemm_packed(p->avx2, pa, pb, r1 - r0, p->n, p->k, j->y + bi * p->m * p->n + r0 * p->n, p->n, &j->epi);
    }
}

static int mm_run_f32(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const mm_priv *p = op->priv;
    const float *a = sim_call_in_f32(call, 0), *b = sim_call_in_f32(call, 1);
    float *y = call->out[0].f32;
    if (!p || !a || !y || (!b && !p->bpack)) return SIM_ERR_FAIL;
    int64_t chunks = mm_chunks(p->m), rows = p->m < MM_CHUNK_ROWS + 1 ? p->m : MM_CHUNK_ROWS + 1;
    size_t pa_stride = (sim_pack_a_size(rows, p->k) * sizeof(float) + 63u) & ~(size_t)63u;
    size_t pbs_sz = p->bpack ? 0 : ((size_t)p->batch * sim_pack_b_size(p->k, p->n) * sizeof(float) + 63u) & ~(size_t)63u;
    char *scr = sim_scratch_get(call, pbs_sz + pa_stride * (size_t)sim_call_threads(call));
    if (!scr) return SIM_ERR_MALLOC;
    mm_job j = {p, a, b, y, p->bpack ? NULL : (float *)(void *)scr, scr + pbs_sz, pa_stride, chunks, p->epi};
    int need_post_c = p->c_mode != 0;
    if (need_post_c) j.epi.clamp = 0; /* C is added before the activation */
    /* an attention head's matrices are a few microseconds of work: below SIM_PAR_MIN_WORK one thread */
    if (j.pbs) sim_parallel_sized(call, mm_pack_b_range, &j, p->batch, (double)(p->batch * p->k * p->n));
    sim_parallel_sized(call, mm_range, &j, p->batch * chunks, (double)(p->batch * p->m * p->n * p->k));
    int64_t total = p->batch * p->m * p->n;
    if (p->c_mode == 1) {
        for (int64_t i = 0; i < p->m; i++)
            for (int64_t jj = 0; jj < p->n; jj++) y[i * p->n + jj] += p->cvec[jj];
    } else if (p->c_mode == 2) {
        const float *c = sim_call_in_f32(call, 2);
        if (!c) return SIM_ERR_FAIL;
        add_c_general(p, c, y, total);
    }
    if (need_post_c || p->post_act) sim_op_act(op, y, (size_t)total);
    return 0;
}

static int mm_run_i8(sim_kernel_call *call)
{
    const mm_priv *p = call->op->priv;
    if (!p || !p->i8) return SIM_ERR_FAIL;
    return sim_mm_i8_run(p->i8, p->batch, &p->bb, p->c_mode ? &p->cb : NULL, call);
}

static uint64_t mm_macs(const sim_graph *g, const sim_op *op)
{
    const mm_priv *p = op->priv;
    (void)g;
    return p ? (uint64_t)(p->batch * p->m * p->n * p->k) : 0;
}

const sim_op_def sim_def_gemm = {
    .type = SIM_OP_GEMM, .onnx_name = "Gemm", .npu_name = "Gemm", .prepare = gemm_prepare,
    .run_f32 = mm_run_f32, .run_i8 = mm_run_i8, .release = mm_release, .macs = mm_macs,
};

const sim_op_def sim_def_matmul = {
    .type = SIM_OP_MATMUL, .onnx_name = "MatMul", .npu_name = "MatMul", .prepare = matmul_prepare,
    .run_f32 = mm_run_f32, .run_i8 = mm_run_i8, .release = mm_release, .macs = mm_macs,
};
