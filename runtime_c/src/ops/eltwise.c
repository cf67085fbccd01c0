/*
 * Broadcasting element-wise ops: Add, Sub, Mul, Div, Pow, PRelu, the comparisons and logical ops (binary;
 * their boolean results are float 0/1, as the runtime carries booleans) and Sum, Max, Min (n-ary,
 * folded pairwise into the output). Broadcasting is reduced to merged dims whose innermost loop has
 * unit or zero strides, so the common cases (same shape, per-channel, scalar) vectorise.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "act_lut.h"
#include "elt_i8.h"
#include "ops_common.h"

enum bin_kind {
    BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV, BIN_POW, BIN_MAX, BIN_MIN, BIN_PRELU, BIN_EQ, BIN_GT, BIN_GE, BIN_LT,
    BIN_LE, BIN_AND, BIN_OR, BIN_XOR, BIN_FIRST
};

#define E_ADD(x, y) ((x) + (y))
#define E_SUB(x, y) ((x) - (y))
#define E_MUL(x, y) ((x) * (y))
#define E_DIV(x, y) ((x) / (y))
#define E_POW(x, y) powf((x), (y))
#define E_MAX(x, y) ((x) >= (y) || (x) != (x) ? (x) : (y))
#define E_MIN(x, y) ((x) <= (y) || (x) != (x) ? (x) : (y))
#define E_PRELU(x, y) ((x) < 0.0f ? (x) * (y) : (x))
#define E_FIRST(x, y) ((void)(y), (x))
#define E_EQ(x, y) ((float)((x) == (y)))
#define E_GT(x, y) ((float)((x) > (y)))
#define E_GE(x, y) ((float)((x) >= (y)))
#define E_LT(x, y) ((float)((x) < (y)))
#define E_LE(x, y) ((float)((x) <= (y)))
#define E_AND(x, y) ((float)((x) != 0.0f && (y) != 0.0f))
#define E_OR(x, y) ((float)((x) != 0.0f || (y) != 0.0f))
#define E_XOR(x, y) ((float)(((x) != 0.0f) != ((y) != 0.0f)))

#define INNER(E)                                                                                             \
    do {                                                                                                     \
        if (sa == 1 && sb == 1) {                                                                            \
            for (int64_t i = 0; i < n; i++) y[i] = E(a[i], b[i]);                                            \
        } else if (sa == 0 && sb == 1) {                                                                     \
            float av = a[0];                                                                                 \
            for (int64_t i = 0; i < n; i++) y[i] = E(av, b[i]);                                              \
        } else if (sa == 1 && sb == 0) {                                                                     \
            float bv = b[0];                                                                                 \
            for (int64_t i = 0; i < n; i++) y[i] = E(a[i], bv);                                              \
        } else {                                                                                             \
            float v = E(a[0], b[0]);                                                                         \
            for (int64_t i = 0; i < n; i++) y[i] = v;                                                        \
        }                                                                                                    \
    } while (0)

static void bin_inner(int kind, const float *a, int64_t sa, const float *b, int64_t sb, float *y, int64_t n)
{
    switch (kind) {
    case BIN_ADD: INNER(E_ADD); break;
    case BIN_SUB: INNER(E_SUB); break;
    case BIN_MUL: INNER(E_MUL); break;
    case BIN_DIV: INNER(E_DIV); break;
    case BIN_POW: INNER(E_POW); break;
    case BIN_MAX: INNER(E_MAX); break;
    case BIN_MIN: INNER(E_MIN); break;
    case BIN_PRELU: INNER(E_PRELU); break;
    case BIN_EQ: INNER(E_EQ); break;
    case BIN_GT: INNER(E_GT); break;
    case BIN_GE: INNER(E_GE); break;
    case BIN_LT: INNER(E_LT); break;
    case BIN_LE: INNER(E_LE); break;
    case BIN_AND: INNER(E_AND); break;
    case BIN_OR: INNER(E_OR); break;
    case BIN_XOR: INNER(E_XOR); break;
    default: INNER(E_FIRST); break;
    }
}

/* y (contiguous, shape of bc) = a op b with broadcast strides from bc. */
static void bin_apply(int kind, const sim_bcast *bc, const float *a, const float *b, float *y)
{
    int nd = bc->nd;
    int64_t inner = bc->dims[nd - 1], outer = 1;
    for (int d = 0; d < nd - 1; d++) outer *= bc->dims[d];
    int64_t idx[SIM_MAX_DIMS] = {0};
    int64_t oa = 0, ob = 0;
    for (int64_t o = 0; o < outer; o++) {
        bin_inner(kind, a + oa, bc->sa[nd - 1], b + ob, bc->sb[nd - 1], y + o * inner, inner);
        for (int d = nd - 2; d >= 0; d--) {
            oa += bc->sa[d];
            ob += bc->sb[d];
            if (++idx[d] < bc->dims[d]) break;
            oa -= bc->sa[d] * bc->dims[d];
            ob -= bc->sb[d] * bc->dims[d];
            idx[d] = 0;
        }
    }
}

static int kind_of(uint32_t type)
{
    switch (type) {
    case SIM_OP_ADD: case SIM_OP_SUM: return BIN_ADD;
    case SIM_OP_SUB: return BIN_SUB;
    case SIM_OP_MUL: return BIN_MUL;
    case SIM_OP_DIV: return BIN_DIV;
    case SIM_OP_POW: return BIN_POW;
    case SIM_OP_MAX: return BIN_MAX;
    case SIM_OP_MIN: return BIN_MIN;
    case SIM_OP_PRELU: return BIN_PRELU;
    case SIM_OP_EQUAL: return BIN_EQ;
    case SIM_OP_GREATER: return BIN_GT;
    case SIM_OP_GREATER_EQUAL: return BIN_GE;
    case SIM_OP_LESS: return BIN_LT;
    case SIM_OP_LESS_EQUAL: return BIN_LE;
    case SIM_OP_AND: return BIN_AND;
    case SIM_OP_OR: return BIN_OR;
    case SIM_OP_XOR: return BIN_XOR;
    default: return BIN_FIRST;
    }
}

static int is_nary(uint32_t type)
{
    return type == SIM_OP_SUM || type == SIM_OP_MAX || type == SIM_OP_MIN;
}

static int elt_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    const sim_tensor *ins[16];
    char b1[96];
    uint32_t n = op->n_inputs;
    if (is_nary(op->type) ? (n < 1 || n > 16) : n != 2)
        return sim_fail(err, err_len, op, "has %u inputs, expected %s", n, is_nary(op->type) ? "1 to 16" : "2");
    const sim_tensor *y = sim_out_tensor(g, op, 0);
    if (!y || op->n_outputs != 1) return sim_fail(err, err_len, op, "needs exactly one output");
    for (uint32_t i = 0; i < n; i++) {
        ins[i] = sim_in_tensor(g, op, i);
        if (!ins[i]) return sim_fail(err, err_len, op, "input %u is missing", i);
        if (ins[i]->kind == SIM_T_CONST && !ins[i]->fdata) return sim_fail(err, err_len, op, "constant input %u has no data", i);
    }
    if (op->type == SIM_OP_PRELU) {
        /* slope broadcasts to X: the output is X's shape */
        const sim_tensor *pair[2] = {ins[0], ins[1]};
        if (sim_bcast_check(y, pair, 2) || !sim_same_shape(y, ins[0]))
            return sim_fail(err, err_len, op, "slope must broadcast to X; Y %s", sim_shape_str(y, b1, sizeof b1));
        return 0;
    }
    if (sim_bcast_check(y, ins, n))
        return sim_fail(err, err_len, op, "output %s is not the broadcast shape of the inputs", sim_shape_str(y, b1, sizeof b1));
    return 0;
}

/* Computes into y from float inputs (index i via get(i)). */
static int elt_compute(const sim_kernel_call *call, const float *const *in, float *y)
{
    const sim_op *op = call->op;
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, op, 0);
    int kind = kind_of(op->type);
    sim_bcast bc;
    if (op->n_inputs == 1) {
        if (sim_bcast_init(&bc, yt, sim_call_in_t(call, 0), NULL)) return SIM_ERR_FAIL;
        bin_apply(BIN_FIRST, &bc, in[0], in[0], y);
    } else {
        if (sim_bcast_init(&bc, yt, sim_call_in_t(call, 0), sim_call_in_t(call, 1))) return SIM_ERR_FAIL;
        bin_apply(kind, &bc, in[0], in[1], y);
        for (uint32_t i = 2; i < op->n_inputs; i++) {
            if (sim_bcast_init(&bc, yt, yt, sim_call_in_t(call, i))) return SIM_ERR_FAIL;
            bin_apply(kind, &bc, y, in[i], y);
        }
    }
    sim_op_act(op, y, (size_t)yt->n_elems);
    return 0;
}

static int elt_binary(sim_kernel_call *call, const sim_tensor *yt, int is_i8);

static int elt_run_f32(sim_kernel_call *call)
{
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, call->op, 0);
    if (call->op->n_inputs == 2 && yt && yt->n_elems > 0 && call->out[0].f32) return elt_binary(call, yt, 0);
    const float *in[16];
    for (uint32_t i = 0; i < call->op->n_inputs && i < 16; i++) {
        in[i] = sim_call_in_f32(call, i);
        if (!in[i]) return SIM_ERR_FAIL;
    }
    if (!call->out[0].f32) return SIM_ERR_FAIL;
    return elt_compute(call, in, call->out[0].f32);
}

/* Two-input ops, float or int8, split into (outer row, inner chunk) tasks over the pool. int8 operands
 * are dequantised a chunk at a time into per-thread buffers that stay in L1 and the result requantised
 * from there, element for element what dequantise-compute-requantise of whole tensors gives, so any
 * split gives the same bytes. */
#define ELT_CHUNK 1024

typedef struct elt_side {
    const float *f;  /* float data (float path, or a constant) */
    const int8_t *q; /* int8 activation */
    float scale;
    int32_t zp;
} elt_side;

typedef struct elt_job {
    const sim_op *op;
    sim_bcast bc;
    int kind;
    elt_side in[2];
    float *fy;
    int8_t *qy;
    float so;
    int32_t zo;
    int64_t inner, chunks;
    float *scr; /* per thread: 3 * ELT_CHUNK floats */
    int fused;  /* int8 Add/Sub/Mul without an activation: sim_elt_i8_row in this form + 1, else 0 */
} elt_job;

/* The sim_elt_i8_row form of an int8 job, + 1, or 0 when it takes the chunked path: an Add, Sub or Mul
 * without a fused activation whose inner strides are 0 or 1 (every broadcast eltwise.c merges to). */
static int elt_fused_form(const elt_job *j)
{
    int64_t sa = j->bc.sa[j->bc.nd - 1], sb = j->bc.sb[j->bc.nd - 1];
    int kind_ok = j->kind == BIN_ADD || j->kind == BIN_SUB || j->kind == BIN_MUL;
    if (!j->qy || j->op->act != SIM_ACT_NONE || !kind_ok || sa < 0 || sa > 1 || sb < 0 || sb > 1) return 0;
    int isa = sim_elt_i8_best_isa();
    return isa == SIM_ELT_ISA_C ? 0 : isa + 1; /* the portable build keeps the chunked path */
}

static void elt_side_operand(const elt_side *s, int64_t off, int64_t st, sim_elt_i8_operand *o)
{
    o->q = s->q ? s->q + off : NULL;
    o->f = s->q ? NULL : s->f + off;
    o->stride = st;
    o->scale = s->scale;
    o->zp = s->zp;
}

/* Operand s of a chunk: n elements (inner stride st, 0 or 1) from element offset off. */
static const float *elt_operand(const elt_side *s, int64_t off, int64_t st, int64_t n, float *buf)
{
    if (!s->q) return s->f + off;
    sim_dequant_array(s->q + off, buf, (size_t)(st ? n : 1), s->scale, s->zp);
    return buf;
}

static void elt_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const elt_job *j = arg;
    const sim_bcast *bc = &j->bc;
    int nd = bc->nd;
    float *buf = j->scr ? j->scr + (size_t)tid * 3 * ELT_CHUNK : NULL;
    for (int64_t t = lo; t < hi; t++) {
        int64_t o = t / j->chunks, c0 = (t % j->chunks) * ELT_CHUNK;
        int64_t n = j->inner - c0 < ELT_CHUNK ? j->inner - c0 : ELT_CHUNK, oa = 0, ob = 0, r = o;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = r % bc->dims[d];
            r /= bc->dims[d];
            oa += i * bc->sa[d];
            ob += i * bc->sb[d];
        }
        int64_t sa = bc->sa[nd - 1], sb = bc->sb[nd - 1];
        if (j->fused) {
            sim_elt_i8_operand oa8, ob8;
            elt_side_operand(&j->in[0], oa + c0 * sa, sa, &oa8);
            elt_side_operand(&j->in[1], ob + c0 * sb, sb, &ob8);
            int op = j->kind == BIN_ADD ? SIM_ELT_I8_ADD : (j->kind == BIN_SUB ? SIM_ELT_I8_SUB : SIM_ELT_I8_MUL);
            sim_elt_i8_row(j->fused - 1, op, &oa8, &ob8, n, j->qy + o * j->inner + c0, j->so, j->zo);
            continue;
        }
        const float *a = elt_operand(&j->in[0], oa + c0 * sa, sa, n, buf);
        const float *b = elt_operand(&j->in[1], ob + c0 * sb, sb, n, buf ? buf + ELT_CHUNK : NULL);
        float *y = j->qy ? buf + 2 * ELT_CHUNK : j->fy + o * j->inner + c0;
        bin_inner(j->kind, a, sa, b, sb, y, n);
        sim_op_act(j->op, y, (size_t)n);
        if (j->qy) sim_quant_array(y, j->qy + o * j->inner + c0, (size_t)n, j->so, j->zo);
    }
}

/* int8 with a row-constant operand (a per-channel or scalar constant, an SE block's [N,C,1,1] gate) and
 * an int8 activation varying along the row: per row, a 256-entry table of the direct result
 * quant(act(deq(q) op v)) for every code q (the same float operations in the same operand order), then a
 * lookup per element. Rows are the tasks, so any split gives the same bytes. */
#define ELT_ROW_TABLE_MIN 256

typedef struct elt_row_job {
    const elt_job *j;
    int var;  /* the operand varying along the row (0: a, 1: b) */
    float deq[256];
} elt_row_job;

static void elt_row_tables(void *arg, int64_t lo, int64_t hi, int tid)
{
    const elt_row_job *rj = arg;
    const elt_job *j = rj->j;
    const sim_bcast *bc = &j->bc;
    int nd = bc->nd, var = rj->var;
    const elt_side *vs = &j->in[var], *cs = &j->in[1 - var];
    (void)tid;
    for (int64_t o = lo; o < hi; o++) {
        int64_t off[2] = {0, 0}, r = o;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = r % bc->dims[d];
            r /= bc->dims[d];
            off[0] += i * bc->sa[d];
            off[1] += i * bc->sb[d];
        }
        float cv, v[256];
        int8_t tab[256];
        cv = *elt_operand(cs, off[1 - var], 0, 1, &cv);
        if (var == 0) bin_inner(j->kind, rj->deq, 1, &cv, 0, v, 256);
        else bin_inner(j->kind, &cv, 0, rj->deq, 1, v, 256);
        sim_op_act(j->op, v, 256);
        sim_quant_array(v, tab, 256, j->so, j->zo);
        sim_lut_i8(tab, vs->q + off[var], j->qy + o * j->inner, (size_t)j->inner);
    }
}

static int elt_binary(sim_kernel_call *call, const sim_tensor *yt, int is_i8)
{
    elt_job j;
    memset(&j, 0, sizeof j);
    j.op = call->op;
    j.kind = kind_of(call->op->type);
    if (sim_bcast_init(&j.bc, yt, sim_call_in_t(call, 0), sim_call_in_t(call, 1))) return SIM_ERR_FAIL;
    for (int i = 0; i < 2; i++) {
        const sim_tensor *t = sim_call_in_t(call, (uint32_t)i);
        if (is_i8 && call->in[i].i8 && t->kind != SIM_T_CONST) {
            j.in[i].q = call->in[i].i8;
            j.in[i].scale = sim_t_scale(t);
            j.in[i].zp = sim_t_zp(t);
        } else {
            j.in[i].f = sim_call_in_f32(call, (uint32_t)i);
            if (!j.in[i].f) return SIM_ERR_FAIL;
        }
    }
    if (is_i8) {
        j.qy = call->out[0].i8;
        j.so = sim_t_scale(yt);
        j.zo = sim_t_zp(yt);
        j.scr = sim_scratch_get(call, (size_t)sim_call_threads(call) * 3 * ELT_CHUNK * sizeof(float));
        if (!j.scr) return SIM_ERR_MALLOC;
    } else {
        j.fy = call->out[0].f32;
    }
    j.inner = j.bc.dims[j.bc.nd - 1];
    j.chunks = (j.inner + ELT_CHUNK - 1) / ELT_CHUNK;
    int64_t outer = yt->n_elems / (j.inner > 0 ? j.inner : 1), tasks = outer * j.chunks;
    int64_t sa = j.bc.sa[j.bc.nd - 1], sb = j.bc.sb[j.bc.nd - 1];
    int var = (j.in[0].q && sa == 1 && sb == 0) ? 0 : ((j.in[1].q && sb == 1 && sa == 0) ? 1 : -1);
    if (is_i8 && var >= 0 && j.inner >= ELT_ROW_TABLE_MIN) {
        elt_row_job rj = {.j = &j, .var = var};
        const sim_tensor *vt = sim_call_in_t(call, (uint32_t)var);
        sim_dequant_lut(vt, rj.deq);
        if (yt->n_elems >= 4 * ELT_CHUNK) sim_parallel(call, elt_row_tables, &rj, outer);
        else elt_row_tables(&rj, 0, outer, 0);
        return 0;
    }
    if (is_i8) j.fused = elt_fused_form(&j);
    if (yt->n_elems >= 4 * ELT_CHUNK) sim_parallel(call, elt_range, &j, tasks);
    else elt_range(&j, 0, tasks, 0);
    return 0;
}

/* Int8: dequantise the int8 inputs, compute in fp32, requantise (the NPU's float unit semantics). */
static int elt_run_i8(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const float *in[16];
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, op, 0);
    if (!yt || !call->out[0].i8) return SIM_ERR_FAIL;
    if (op->n_inputs == 2 && yt->n_elems > 0) return elt_binary(call, yt, 1);
    size_t total = (size_t)yt->n_elems;
    for (uint32_t i = 0; i < op->n_inputs && i < 16; i++)
        if (call->in[i].i8 && sim_call_in_t(call, i)->kind != SIM_T_CONST) total += (size_t)sim_call_in_t(call, i)->n_elems;
    float *buf = sim_scratch_get(call, total * sizeof(float));
    if (!buf) return SIM_ERR_MALLOC;
    float *y = buf, *pos = buf + yt->n_elems;
    for (uint32_t i = 0; i < op->n_inputs && i < 16; i++) {
        const sim_tensor *t = sim_call_in_t(call, i);
        if (call->in[i].i8 && t->kind != SIM_T_CONST) {
            sim_dequant_array(call->in[i].i8, pos, (size_t)t->n_elems, sim_t_scale(t), sim_t_zp(t));
            in[i] = pos;
            pos += t->n_elems;
        } else {
            in[i] = sim_call_in_f32(call, i);
            if (!in[i]) return SIM_ERR_FAIL;
        }
    }
    int rc = elt_compute(call, in, y);
    if (rc) return rc;
    sim_quant_array(y, call->out[0].i8, (size_t)yt->n_elems, sim_t_scale(yt), sim_t_zp(yt));
    return 0;
}

#define ELT_DEF(sym, id, onnx, npu)                                                                          \
    const sim_op_def sym = {.type = id, .onnx_name = onnx, .npu_name = npu, .prepare = elt_prepare,           \
                            .run_f32 = elt_run_f32, .run_i8 = elt_run_i8, .release = NULL, .macs = NULL}

ELT_DEF(sim_def_add, SIM_OP_ADD, "Add", "Add");
ELT_DEF(sim_def_sub, SIM_OP_SUB, "Sub", "Sub");
ELT_DEF(sim_def_mul, SIM_OP_MUL, "Mul", "Mul");
ELT_DEF(sim_def_div, SIM_OP_DIV, "Div", "Div");
ELT_DEF(sim_def_pow, SIM_OP_POW, "Pow", "Pow");
ELT_DEF(sim_def_sum, SIM_OP_SUM, "Sum", "Add");
ELT_DEF(sim_def_max, SIM_OP_MAX, "Max", "Max");
ELT_DEF(sim_def_min, SIM_OP_MIN, "Min", "Min");
ELT_DEF(sim_def_prelu, SIM_OP_PRELU, "PRelu", "PRelu");
ELT_DEF(sim_def_equal, SIM_OP_EQUAL, "Equal", "Equal");
ELT_DEF(sim_def_greater, SIM_OP_GREATER, "Greater", "Greater");
ELT_DEF(sim_def_greater_equal, SIM_OP_GREATER_EQUAL, "GreaterOrEqual", "GreaterOrEqual");
ELT_DEF(sim_def_less, SIM_OP_LESS, "Less", "Less");
ELT_DEF(sim_def_less_equal, SIM_OP_LESS_EQUAL, "LessOrEqual", "LessOrEqual");
ELT_DEF(sim_def_and, SIM_OP_AND, "And", "And");
ELT_DEF(sim_def_or, SIM_OP_OR, "Or", "Or");
ELT_DEF(sim_def_xor, SIM_OP_XOR, "Xor", "Xor");
