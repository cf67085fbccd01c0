/*
 * Data movement: Reshape, Concat, Split, Slice, Transpose, Pad, Gather and Resize. Each works on
 * element bytes so the float and int8 paths share the code; int8 tensors with different
 * quantisation are requantised through a 256-entry table while copying (the NPU moves int8 codes
 * unchanged when quantisation is equal).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "act_lut.h"
#include "ops_common.h"

typedef struct shape_priv {
    int64_t rank;
    int64_t odims[SIM_MAX_DIMS];
    int64_t istr[SIM_MAX_DIMS]; /* per output dim: input stride (Slice/Transpose) */
    int64_t base;               /* Slice: input offset of the first element */
    int64_t axis, outer, inner; /* Concat/Split/Gather */
    int64_t *idx;               /* Gather: normalised indices */
    int64_t n_idx, axis_dim;
    int64_t pads[2 * SIM_MAX_DIMS];
    int64_t idims[SIM_MAX_DIMS];
    int mode;                   /* Pad mode; Resize mode */
    float value;                /* Pad constant */
    int coord, nearest;         /* Resize */
    struct resize_tab *tab[SIM_MAX_DIMS]; /* Resize: per resized dim, source rows and weights */
} shape_priv;

/* Resize along one dim: output j reads source rows i0[j] (nearest) or i0[j], i1[j] weighted w0, w1. */
typedef struct resize_tab {
    int64_t *i0, *i1;
    float *w0, *w1;
} resize_tab;

static void shape_release(sim_op *op)
{
    shape_priv *p = op->priv;
    if (!p) return;
    free(p->idx);
    for (int d = 0; d < SIM_MAX_DIMS; d++)
        if (p->tab[d]) {
            free(p->tab[d]->i0);
            free(p->tab[d]);
        }
    free(p);
    op->priv = NULL;
}

static shape_priv *new_priv(sim_op *op)
{
    shape_priv *p = calloc(1, sizeof *p);
    op->priv = p;
    return p;
}

/* ---- element access shared by both paths ---- */

typedef struct mover {
    size_t esz;               /* 4 (float) or 1 (int8) */
    const int8_t *lut;        /* int8 requantisation table or NULL */
} mover;

static void move(const mover *m, void *dst, const void *src, int64_t n)
{
    if (!m->lut) {
        memcpy(dst, src, (size_t)n * m->esz);
        return;
    }
    const int8_t *s = src;
    int8_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = m->lut[s[i] + 128];
}

static void move_strided(const mover *m, void *dst, const void *src, int64_t n, int64_t stride)
{
    if (stride == 1) {
        move(m, dst, src, n);
        return;
    }
    if (m->esz == 4) {
        const float *s = src;
        float *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = s[i * stride];
    } else {
        const int8_t *s = src;
        int8_t *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = m->lut ? m->lut[s[i * stride] + 128] : s[i * stride];
    }
}

/* Fills the mover for input i -> output 0 of a call; returns -1 on a dtype mismatch. */
static int make_mover(const sim_kernel_call *call, uint32_t i, int is_i8, mover *m, int8_t lut[256])
{
    m->esz = is_i8 ? 1 : 4;
    m->lut = NULL;
    if (!is_i8) return 0;
    const sim_tensor *xt = sim_call_in_t(call, i);
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, call->op, 0);
    if (!xt || !yt) return -1;
    if (sim_same_quant(xt, yt)) return 0;
    float f[256];
    sim_dequant_lut(xt, f);
    sim_quant_array(f, lut, 256, sim_t_scale(yt), sim_t_zp(yt));
    m->lut = lut;
    return 0;
}

static const void *in_ptr(const sim_kernel_call *call, uint32_t i, int is_i8)
{
    return is_i8 ? (const void *)sim_call_in_i8(call, i) : (const void *)sim_call_in_f32(call, i);
}

static void *out_ptr(const sim_kernel_call *call, uint32_t i, int is_i8)
{
    return is_i8 ? (void *)call->out[i].i8 : (void *)call->out[i].f32;
}

/* Applies the fused activation in the float path (data movement ops rarely carry one). */
static int finish(const sim_kernel_call *call, int is_i8)
{
    const sim_op *op = call->op;
    if (op->act == SIM_ACT_NONE) return 0;
    for (uint32_t o = 0; o < op->n_outputs && o < 16; o++) {
        const sim_tensor *yt = call->out[o].t ? call->out[o].t : sim_out_tensor(call->graph, op, o);
        if (!yt) return SIM_ERR_FAIL;
        if (!is_i8) {
            sim_op_act(op, call->out[o].f32, (size_t)yt->n_elems);
        } else {
            float f[256];
            int8_t q[256];
            sim_dequant_lut(yt, f);
            sim_op_act(op, f, 256);
            sim_quant_array(f, q, 256, sim_t_scale(yt), sim_t_zp(yt));
            for (int64_t e = 0; e < yt->n_elems; e++) call->out[o].i8[e] = q[call->out[o].i8[e] + 128];
        }
    }
    return 0;
}

/* ---- Reshape ---- */

static int reshape_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y) return sim_fail(err, err_len, op, "needs input X and one output");
    if (x->n_elems != y->n_elems)
        return sim_fail(err, err_len, op, "X %s and Y %s have different element counts", sim_shape_str(x, b1, sizeof b1),
                        sim_shape_str(y, b2, sizeof b2));
    return 0;
}

static int reshape_run(sim_kernel_call *call, int is_i8)
{
    const sim_tensor *xt = sim_call_in_t(call, 0);
    const void *x = in_ptr(call, 0, is_i8);
    void *y = out_ptr(call, 0, is_i8);
    mover m;
    int8_t lut[256];
    if (!xt || !x || !y || make_mover(call, 0, is_i8, &m, lut)) return SIM_ERR_FAIL;
    if (x != y || m.lut) move(&m, y, x, xt->n_elems);
    return finish(call, is_i8);
}

/* ---- Concat / Split ---- */

static int concat_geom(const sim_tensor *ref, int64_t axis, shape_priv *p)
{
    if (axis < 0) axis += ref->n_dims;
    if (axis < 0 || axis >= (int64_t)ref->n_dims) return -1;
    p->axis = axis;
    p->outer = p->inner = 1;
    for (int64_t d = 0; d < axis; d++) p->outer *= ref->dims[d];
    for (int64_t d = axis + 1; d < (int64_t)ref->n_dims; d++) p->inner *= ref->dims[d];
    return 0;
}

/* Checks that `parts` concatenated along axis give `whole`. */
static int check_parts(const sim_tensor *whole, const sim_tensor *const *parts, uint32_t n, int64_t axis)
{
    int64_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!parts[i] || parts[i]->n_dims != whole->n_dims) return -1;
        for (uint32_t d = 0; d < whole->n_dims; d++)
            if ((int64_t)d != axis && parts[i]->dims[d] != whole->dims[d]) return -1;
        sum += parts[i]->dims[axis];
    }
    return sum == whole->dims[axis] ? 0 : -1;
}

static int concat_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    const sim_tensor *y = sim_out_tensor(g, op, 0), *ins[64];
    char b1[96];
    if (!y || op->n_inputs < 1 || op->n_inputs > 16) return sim_fail(err, err_len, op, "needs 1-16 inputs and an output");
    for (uint32_t i = 0; i < op->n_inputs; i++) ins[i] = sim_in_tensor(g, op, i);
    shape_priv *p = new_priv(op);
    if (!p) return SIM_ERR_MALLOC;
    if (concat_geom(y, sim_attr_int(op, "axis", 0), p) || check_parts(y, ins, op->n_inputs, p->axis)) {
        shape_release(op);
        return sim_fail(err, err_len, op, "inputs do not concatenate to Y %s along axis %lld",
                        sim_shape_str(y, b1, sizeof b1), (long long)sim_attr_int(op, "axis", 0));
    }
    return 0;
}

static int concat_run(sim_kernel_call *call, int is_i8)
{
    const shape_priv *p = call->op->priv;
    char *y = out_ptr(call, 0, is_i8);
    if (!p || !y) return SIM_ERR_FAIL;
    size_t esz = is_i8 ? 1 : 4;
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, call->op, 0);
    int64_t ychunk = yt->dims[p->axis] * p->inner, pos = 0;
    for (uint32_t i = 0; i < call->op->n_inputs; i++) {
        const sim_tensor *xt = sim_call_in_t(call, i);
        const char *x = in_ptr(call, i, is_i8);
        mover m;
        int8_t lut[256];
        if (!xt || make_mover(call, i, is_i8, &m, lut)) return SIM_ERR_FAIL;
        if (!x && is_i8 && xt->fdata) {
            /* a float constant joining int8 activations: quantise it to the output's parameters */
            int8_t *q = sim_scratch_get(call, (size_t)xt->n_elems);
            if (!q) return SIM_ERR_MALLOC;
            sim_quant_array(xt->fdata, q, (size_t)xt->n_elems, sim_t_scale(yt), sim_t_zp(yt));
            x = (const char *)q;
            m.lut = NULL;
        }
        if (!x) return SIM_ERR_FAIL;
        int64_t chunk = xt->dims[p->axis] * p->inner;
        for (int64_t o = 0; o < p->outer; o++)
            move(&m, y + (size_t)(o * ychunk + pos) * esz, x + (size_t)(o * chunk) * esz, chunk);
        pos += chunk;
    }
    return finish(call, is_i8);
}

static int split_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    const sim_tensor *x = sim_in_tensor(g, op, 0), *outs[16];
    char b1[96];
    if (!x || op->n_outputs < 1 || op->n_outputs > 16) return sim_fail(err, err_len, op, "needs X and 1-16 outputs");
    for (uint32_t i = 0; i < op->n_outputs; i++) outs[i] = sim_out_tensor(g, op, i);
    shape_priv *p = new_priv(op);
    if (!p) return SIM_ERR_MALLOC;
    if (concat_geom(x, sim_attr_int(op, "axis", 0), p) || check_parts(x, outs, op->n_outputs, p->axis)) {
        shape_release(op);
        return sim_fail(err, err_len, op, "outputs do not split X %s along axis %lld", sim_shape_str(x, b1, sizeof b1),
                        (long long)sim_attr_int(op, "axis", 0));
    }
    return 0;
}

static int split_run(sim_kernel_call *call, int is_i8)
{
    const shape_priv *p = call->op->priv;
    const char *x = in_ptr(call, 0, is_i8);
    const sim_tensor *xt = sim_call_in_t(call, 0);
    if (!p || !x || !xt) return SIM_ERR_FAIL;
    size_t esz = is_i8 ? 1 : 4;
    int64_t xchunk = xt->dims[p->axis] * p->inner, pos = 0;
    for (uint32_t i = 0; i < call->op->n_outputs && i < 16; i++) {
        const sim_tensor *yt = call->out[i].t ? call->out[i].t : sim_out_tensor(call->graph, call->op, i);
        char *y = out_ptr(call, i, is_i8);
        if (!yt || !y) return SIM_ERR_FAIL;
        mover m = {esz, NULL};
        int8_t lut[256];
        if (is_i8 && !sim_same_quant(xt, yt)) {
            float f[256];
            sim_dequant_lut(xt, f);
            sim_quant_array(f, lut, 256, sim_t_scale(yt), sim_t_zp(yt));
            m.lut = lut;
        }
        int64_t chunk = yt->dims[p->axis] * p->inner;
        for (int64_t o = 0; o < p->outer; o++)
            move(&m, y + (size_t)(o * chunk) * esz, x + (size_t)(o * xchunk + pos) * esz, chunk);
        pos += chunk;
    }
    return finish(call, is_i8);
}

/* ---- strided views: Slice and Transpose ---- */

typedef struct view_job {
    const shape_priv *p;
    const mover *m;
    char *y;
    const char *x;
} view_job;

/* Output rows [lo, hi) (rows of the last dim): pure copies, so any split gives the same bytes. */
static void view_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    const view_job *j = arg;
    const shape_priv *p = j->p;
    const mover *m = j->m;
    int64_t r = p->rank, inner = p->odims[r - 1], ist = p->istr[r - 1];
    int64_t idx[SIM_MAX_DIMS] = {0}, off = p->base, rest = lo;
    (void)tid;
    for (int64_t d = r - 2; d >= 0; d--) {
        idx[d] = rest % p->odims[d];
        rest /= p->odims[d];
        off += idx[d] * p->istr[d];
    }
    for (int64_t o = lo; o < hi; o++) {
        move_strided(m, j->y + (size_t)(o * inner) * m->esz, j->x + off * (int64_t)m->esz, inner, ist);
        for (int64_t d = r - 2; d >= 0; d--) {
            off += p->istr[d];
            if (++idx[d] < p->odims[d]) break;
            off -= p->istr[d] * p->odims[d];
            idx[d] = 0;
        }
    }
}

static void view_copy(const sim_kernel_call *call, const shape_priv *p, const mover *m, char *y, const char *x)
{
    int64_t r = p->rank;
    if (r == 0) {
        move(m, y, x + p->base * (int64_t)m->esz, 1);
        return;
    }
    int64_t outer = 1;
    for (int64_t d = 0; d < r - 1; d++) outer *= p->odims[d];
    view_job j = {p, m, y, x};
    if (outer > 1 && outer * p->odims[r - 1] >= 32768) sim_parallel(call, view_rows, &j, outer);
    else view_rows(&j, 0, outer, 0);
}

static int slice_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y || y->n_dims != x->n_dims) return sim_fail(err, err_len, op, "needs X and Y of the same rank");
    int64_t st[SIM_MAX_DIMS], en[SIM_MAX_DIMS], ax[SIM_MAX_DIMS], sp[SIM_MAX_DIMS];
    uint32_t ns = sim_attr_ints(op, "starts", st, SIM_MAX_DIMS), ne = sim_attr_ints(op, "ends", en, SIM_MAX_DIMS);
    uint32_t na = sim_attr_ints(op, "axes", ax, SIM_MAX_DIMS), np = sim_attr_ints(op, "steps", sp, SIM_MAX_DIMS);
    if (ns != ne || ns > x->n_dims || (na && na != ns) || (np && np != ns))
        return sim_fail(err, err_len, op, "starts/ends/axes/steps must have one entry per sliced axis");
    shape_priv *p = new_priv(op);
    if (!p) return SIM_ERR_MALLOC;
    int64_t start[SIM_MAX_DIMS], step[SIM_MAX_DIMS], cnt[SIM_MAX_DIMS];
    for (uint32_t d = 0; d < x->n_dims; d++) {
        start[d] = 0;
        step[d] = 1;
        cnt[d] = x->dims[d];
    }
    for (uint32_t i = 0; i < ns; i++) {
        int64_t a = na ? ax[i] : (int64_t)i, s = np ? sp[i] : 1, dim;
        if (a < 0) a += x->n_dims;
        if (a < 0 || a >= (int64_t)x->n_dims || s == 0) {
            shape_release(op);
            return sim_fail(err, err_len, op, "axis %lld or step %lld invalid", (long long)a, (long long)s);
        }
        dim = x->dims[a];
        int64_t b = st[i], e = en[i];
        if (b < 0) b += dim;
        if (e < 0) e += dim;
        if (s > 0) {
            b = b < 0 ? 0 : (b > dim ? dim : b);
            e = e < 0 ? 0 : (e > dim ? dim : e);
            cnt[a] = e > b ? (e - b + s - 1) / s : 0;
        } else {
            b = b < 0 ? -1 : (b > dim - 1 ? dim - 1 : b);
            e = e < -1 ? -1 : (e > dim - 1 ? dim - 1 : e);
            cnt[a] = b > e ? (b - e + (-s) - 1) / (-s) : 0;
        }
        start[a] = b;
        step[a] = s;
    }
    int64_t stride = 1;
    p->rank = x->n_dims;
    p->base = 0;
    for (int d = (int)x->n_dims - 1; d >= 0; d--) {
        if (y->dims[d] != cnt[d]) {
            shape_release(op);
            return sim_fail(err, err_len, op, "Y %s does not match slicing X %s (dim %d gives %lld)",
                            sim_shape_str(y, b1, sizeof b1), sim_shape_str(x, b2, sizeof b2), d, (long long)cnt[d]);
        }
        p->odims[d] = cnt[d];
        p->istr[d] = stride * step[d];
        p->base += start[d] * stride;
        stride *= x->dims[d];
    }
    return 0;
}

static int transpose_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y || y->n_dims != x->n_dims) return sim_fail(err, err_len, op, "needs X and Y of the same rank");
    int64_t perm[SIM_MAX_DIMS];
    uint32_t np = sim_attr_ints(op, "perm", perm, SIM_MAX_DIMS);
    if (np == 0) {
        np = x->n_dims;
        for (uint32_t d = 0; d < np; d++) perm[d] = np - 1 - d;
    }
    int seen[SIM_MAX_DIMS] = {0};
    int ok = np == x->n_dims;
    for (uint32_t d = 0; ok && d < np; d++) {
        ok = perm[d] >= 0 && perm[d] < (int64_t)np && !seen[perm[d]] && y->dims[d] == x->dims[perm[d]];
        if (ok) seen[perm[d]] = 1;
    }
    if (!ok)
        return sim_fail(err, err_len, op, "perm is not a permutation giving Y %s from X %s", sim_shape_str(y, b1, sizeof b1),
                        sim_shape_str(x, b2, sizeof b2));
    shape_priv *p = new_priv(op);
    if (!p) return SIM_ERR_MALLOC;
    int64_t xs[SIM_MAX_DIMS], stride = 1;
    for (int d = (int)x->n_dims - 1; d >= 0; d--) {
        xs[d] = stride;
        stride *= x->dims[d];
    }
    p->rank = np;
    for (uint32_t d = 0; d < np; d++) {
        p->odims[d] = y->dims[d];
        p->istr[d] = xs[perm[d]];
    }
    return 0;
}

static int view_run(sim_kernel_call *call, int is_i8)
{
    const shape_priv *p = call->op->priv;
    const char *x = in_ptr(call, 0, is_i8);
    char *y = out_ptr(call, 0, is_i8);
    mover m;
    int8_t lut[256];
    if (!p || !x || !y || make_mover(call, 0, is_i8, &m, lut)) return SIM_ERR_FAIL;
    int64_t total = 1;
    for (int64_t d = 0; d < p->rank; d++) total *= p->odims[d];
    if (total > 0) view_copy(call, p, &m, y, x);
    return finish(call, is_i8);
}

/* ---- Pad ---- */

static int pad_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y || y->n_dims != x->n_dims) return sim_fail(err, err_len, op, "needs X and Y of the same rank");
    shape_priv *p = new_priv(op);
    if (!p) return SIM_ERR_MALLOC;
    uint32_t n = sim_attr_ints(op, "pads", p->pads, 2 * SIM_MAX_DIMS);
    p->mode = (int)sim_attr_int(op, "mode", 0);
    p->value = sim_attr_float(op, "value", 0.0f);
    p->rank = x->n_dims;
    int ok = n == 2 * x->n_dims && p->mode >= 0 && p->mode <= 2;
    for (uint32_t d = 0; ok && d < x->n_dims; d++) {
        int64_t b = p->pads[d], e = p->pads[d + x->n_dims];
        p->idims[d] = x->dims[d];
        p->odims[d] = y->dims[d];
        ok = y->dims[d] == x->dims[d] + b + e && y->dims[d] >= 0;
        if (ok && p->mode == 1) ok = b < x->dims[d] && e < x->dims[d] && b >= 0 && e >= 0; /* reflect needs room */
        if (ok && p->mode == 2) ok = x->dims[d] > 0;
    }
    if (!ok) {
        shape_release(op);
        return sim_fail(err, err_len, op, "pads/mode do not give Y %s from X %s (reflect needs pads < dim)",
                        sim_shape_str(y, b1, sizeof b1), sim_shape_str(x, b2, sizeof b2));
    }
    return 0;
}

/* Input coordinate of output coordinate o along d, or -1 for the constant. */
static int64_t pad_src(const shape_priv *p, int64_t d, int64_t o)
{
    int64_t i = o - p->pads[d], n = p->idims[d];
    if (i >= 0 && i < n) return i;
    if (p->mode == 0) return -1;
    if (p->mode == 2) return i < 0 ? 0 : n - 1;
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    i = i % period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

static int pad_run(sim_kernel_call *call, int is_i8)
{
    const shape_priv *p = call->op->priv;
    const char *x = in_ptr(call, 0, is_i8);
    char *y = out_ptr(call, 0, is_i8);
    mover m;
    int8_t lut[256];
    if (!p || !x || !y || make_mover(call, 0, is_i8, &m, lut)) return SIM_ERR_FAIL;
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, call->op, 0);
    int8_t qv = is_i8 ? sim_quant_i8(p->value, sim_t_scale(yt), sim_t_zp(yt)) : 0;
    int64_t r = p->rank, total = yt->n_elems;
    int64_t istr[SIM_MAX_DIMS], s = 1;
    for (int64_t d = r - 1; d >= 0; d--) {
        istr[d] = s;
        s *= p->idims[d];
    }
    for (int64_t e = 0; e < total; e++) {
        int64_t rem = e, off = 0, constant = 0;
        for (int64_t d = r - 1; d >= 0; d--) {
            int64_t o = rem % p->odims[d];
            rem /= p->odims[d];
            int64_t i = pad_src(p, d, o);
            if (i < 0) constant = 1;
            else off += i * istr[d];
        }
        if (constant) {
            if (is_i8) y[e] = (char)qv;
            else ((float *)y)[e] = p->value;
        } else {
            move(&m, y + (size_t)e * m.esz, x + (size_t)off * m.esz, 1);
        }
    }
    return finish(call, is_i8);
}

/* ---- Gather ---- */

static int gather_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *ind = sim_in_tensor(g, op, 1), *y = sim_out_tensor(g, op, 0);
    if (!x || !ind || !y) return sim_fail(err, err_len, op, "needs X, indices and one output");
    int dynamic = ind->kind != SIM_T_CONST;
    if (dynamic ? !sim_is_float_dtype(ind->dtype) : (!ind->data || (ind->dtype != SIM_I32 && ind->dtype != SIM_I64)))
        return sim_fail(err, err_len, op, "indices must be a constant INT32/INT64 tensor or a float run-time tensor");
    shape_priv *p = new_priv(op);
    if (!p) return SIM_ERR_MALLOC;
    int64_t axis = sim_attr_int(op, "axis", 0);
    if (axis < 0) axis += x->n_dims;
    int ok = axis >= 0 && axis < (int64_t)x->n_dims && y->n_dims == x->n_dims - 1 + ind->n_dims;
    for (uint32_t d = 0; ok && d < y->n_dims; d++) {
        int64_t want;
        if ((int64_t)d < axis) want = x->dims[d];
        else if ((int64_t)d < axis + (int64_t)ind->n_dims) want = ind->dims[d - axis];
        else want = x->dims[d - ind->n_dims + 1];
        ok = y->dims[d] == want;
    }
    if (!ok) {
        shape_release(op);
        return sim_fail(err, err_len, op, "Y %s does not match gathering X %s on axis %lld", sim_shape_str(y, b1, sizeof b1),
                        sim_shape_str(x, b2, sizeof b2), (long long)axis);
    }
    concat_geom(x, axis, p);
    p->axis_dim = x->dims[axis];
    p->n_idx = ind->n_elems;
    p->idx = malloc((size_t)(p->n_idx > 0 ? p->n_idx : 1) * sizeof(int64_t));
    if (!p->idx) {
        shape_release(op);
        return SIM_ERR_MALLOC;
    }
    p->mode = dynamic; /* indices read at run time */
    for (int64_t i = 0; i < p->n_idx && !dynamic; i++) {
        int64_t v = ind->dtype == SIM_I32 ? ((const int32_t *)ind->data)[i] : ((const int64_t *)ind->data)[i];
        if (v < 0) v += p->axis_dim;
        if (v < 0 || v >= p->axis_dim) {
            long long axis_dim = (long long)p->axis_dim; /* read before release frees p */
            shape_release(op);
            return sim_fail(err, err_len, op, "index %lld out of range [0,%lld)", (long long)v, axis_dim);
        }
        p->idx[i] = v;
    }
    return 0;
}

static int gather_run(sim_kernel_call *call, int is_i8)
{
    const shape_priv *p = call->op->priv;
    const char *x = in_ptr(call, 0, is_i8);
    char *y = out_ptr(call, 0, is_i8);
    mover m;
    int8_t lut[256];
    if (!p || !x || !y || make_mover(call, 0, is_i8, &m, lut)) return SIM_ERR_FAIL;
    const int64_t *idx = p->idx;
    if (p->mode) { /* run-time indices: exact float integers, checked here */
        const float *dyn = sim_call_in_f32(call, 1);
        int64_t *tmp = sim_scratch_get(call, (size_t)(p->n_idx > 0 ? p->n_idx : 1) * sizeof(int64_t));
        if (!dyn || !tmp) return SIM_ERR_FAIL;
        for (int64_t i = 0; i < p->n_idx; i++) {
            int64_t v = sim_float_index(dyn[i]);
            if (v < 0) v += p->axis_dim;
            if (v < 0 || v >= p->axis_dim) return SIM_ERR_INVALID;
            tmp[i] = v;
        }
        idx = tmp;
    }
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t i = 0; i < p->n_idx; i++)
            move(&m, y + (size_t)((o * p->n_idx + i) * p->inner) * m.esz,
                 x + (size_t)((o * p->axis_dim + idx[i]) * p->inner) * m.esz, p->inner);
    return finish(call, is_i8);
}

/* ---- Resize ---- */

#define RESIZE_TABLE_MAX_ENTRIES ((int64_t)1 << 20) /* 24 MiB of table at most */
static int resize_table(shape_priv *p, int d);

static int resize_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96], b2[96];
    const sim_tensor *x = sim_in_tensor(g, op, 0), *y = sim_out_tensor(g, op, 0);
    if (!x || !y || y->n_dims != x->n_dims || x->n_dims < 1)
        return sim_fail(err, err_len, op, "needs X and Y of the same rank");
    shape_priv *p = new_priv(op);
    if (!p) return SIM_ERR_MALLOC;
    p->mode = (int)sim_attr_int(op, "mode", 0);
    p->coord = (int)sim_attr_int(op, "coord", 0);
    p->nearest = (int)sim_attr_int(op, "nearest", 0);
    p->rank = x->n_dims;
    for (uint32_t d = 0; d < x->n_dims; d++) {
        p->idims[d] = x->dims[d];
        p->odims[d] = y->dims[d];
    }
    if (p->mode < 0 || p->mode > 1 || p->coord < 0 || p->coord > 3 || p->nearest < 0 || p->nearest > 3) {
        shape_release(op);
        return sim_fail(err, err_len, op, "mode/coord/nearest out of range for X %s -> Y %s", sim_shape_str(x, b1, sizeof b1),
                        sim_shape_str(y, b2, sizeof b2));
    }
    if (x->n_elems == 0 && y->n_elems > 0) {
        shape_release(op);
        return sim_fail(err, err_len, op, "cannot resize the empty X %s to Y %s", sim_shape_str(x, b1, sizeof b1),
                        sim_shape_str(y, b2, sizeof b2));
    }
    /* Tables only where they are smaller than Y (24 bytes an entry) and at most RESIZE_TABLE_MAX_ENTRIES
     * long: a dim far longer than the rest of the tensor (a hostile model's 1 x 67M), or one so long that
     * its table alone would be hundreds of MB (a fuzzer's 34M-long dim), computes its entries on the fly
     * instead, with the same bytes. Real resizes are a few thousand long. An empty Y has nothing to
     * compute. */
    for (uint32_t d = 0; y->n_elems > 0 && d < x->n_dims; d++)
        if (p->idims[d] != p->odims[d] && y->n_elems / 6 >= p->odims[d] && p->odims[d] <= RESIZE_TABLE_MAX_ENTRIES
            && resize_table(p, (int)d)) {
            shape_release(op);
            return SIM_ERR_MALLOC;
        }
    return 0;
}

/* Source coordinate of output index o for a dim of in -> out elements. */
static float resize_coord(int coord, int64_t o, int64_t in, int64_t out)
{
    float scale = (float)out / (float)in;
    switch (coord) {
    case 1: return (float)o / scale;
    case 2: return out == 1 ? 0.0f : (float)o * (float)(in - 1) / (float)(out - 1);
    case 3: return out > 1 ? ((float)o + 0.5f) / scale - 0.5f : 0.0f;
    default: return ((float)o + 0.5f) / scale - 0.5f;
    }
}

static int64_t nearest_index(int rule, float c, int64_t in)
{
    float r;
    switch (rule) {
    case 1: r = floorf(c + 0.5f); break;
    case 2: r = floorf(c); break;
    case 3: r = ceilf(c); break;
    default: r = ceilf(c - 0.5f); break;
    }
    int64_t i = (int64_t)r;
    return i < 0 ? 0 : (i >= in ? in - 1 : i);
}

/* Source rows i0, i1 and weights w0, w1 of output index j of a dim of in -> out elements. */
static void resize_entry(const shape_priv *p, int64_t in, int64_t out, int64_t j, int64_t *i0, int64_t *i1, float *w0,
                         float *w1)
{
    float c = resize_coord(p->coord, j, in, out);
    if (p->mode == 0) {
        *i0 = *i1 = nearest_index(p->nearest, c, in);
        *w0 = 1.0f;
        *w1 = 0.0f;
        return;
    }
    c = c < 0.0f ? 0.0f : (c > (float)(in - 1) ? (float)(in - 1) : c);
    *i0 = (int64_t)c;
    *i1 = *i0 + 1 < in ? *i0 + 1 : in - 1;
    *w1 = c - (float)*i0;
    *w0 = 1.0f - *w1;
}

/* resize_entry of every output index of dim d, computed once at prepare. */
static int resize_table(shape_priv *p, int d)
{
    int64_t in = p->idims[d], out = p->odims[d];
    resize_tab *t = calloc(1, sizeof *t);
    if (!t) return -1;
    p->tab[d] = t;
    t->i0 = malloc((size_t)out * (2 * sizeof(int64_t) + 2 * sizeof(float)));
    if (!t->i0) return -1;
    t->i1 = t->i0 + out;
    t->w0 = (float *)(void *)(t->i1 + out);
    t->w1 = t->w0 + out;
    for (int64_t j = 0; j < out; j++) resize_entry(p, in, out, j, &t->i0[j], &t->i1[j], &t->w0[j], &t->w1[j]);
    return 0;
}

typedef struct resize_job {
    const shape_priv *p;
    const resize_tab *t;
    const float *src;
    float *dst;
    int64_t in, out, inner;
} resize_job;

/* Rows [lo, hi) of the dims before the resized one: each output element is computed alone, so any
 * split over threads gives the same bytes. */
static void resize_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    const resize_job *r = arg;
    const resize_tab *t = r->t;
    int64_t inner = r->inner;
    (void)tid;
    for (int64_t o = lo; o < hi; o++) {
        const float *xb = r->src + o * r->in * inner;
        float *yb = r->dst + o * r->out * inner;
        if (!t) { /* no table (see resize_prepare): the same entries, computed here */
            for (int64_t j = 0; j < r->out; j++) {
                int64_t i0, i1;
                float w0, w1;
                resize_entry(r->p, r->in, r->out, j, &i0, &i1, &w0, &w1);
                for (int64_t e = 0; e < inner; e++)
                    yb[j * inner + e] = r->p->mode == 0 ? xb[i0 * inner + e]
                                                        : w0 * xb[i0 * inner + e] + w1 * xb[i1 * inner + e];
            }
            continue;
        }
        if (inner == 1) {
            if (r->p->mode == 0)
                for (int64_t j = 0; j < r->out; j++) yb[j] = xb[t->i0[j]];
            else
                for (int64_t j = 0; j < r->out; j++) yb[j] = t->w0[j] * xb[t->i0[j]] + t->w1[j] * xb[t->i1[j]];
            continue;
        }
        for (int64_t j = 0; j < r->out; j++) {
            float *yr = yb + j * inner;
            const float *a = xb + t->i0[j] * inner, *b = xb + t->i1[j] * inner;
            if (r->p->mode == 0) {
                memcpy(yr, a, (size_t)inner * sizeof(float));
                continue;
            }
            float w0 = t->w0[j], w1 = t->w1[j];
            for (int64_t e = 0; e < inner; e++) yr[e] = w0 * a[e] + w1 * b[e];
        }
    }
}

/* Resizes one dim d of a float tensor with dims `cur` (dims[d] -> out) from src into dst. */
static void resize_dim(const sim_kernel_call *call, const shape_priv *p, int d, const int64_t *cur, const float *src,
                       float *dst)
{
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < d; i++) outer *= cur[i];
    for (int64_t i = d + 1; i < p->rank; i++) inner *= cur[i];
    resize_job r = {p, p->tab[d], src, dst, cur[d], p->odims[d], inner};
    if (outer * p->odims[d] * inner >= 16384) sim_parallel(call, resize_rows, &r, outer);
    else resize_rows(&r, 0, outer, 0);
}

/* The order in which resize_compute resizes the dims: the shrinking ones first, then the growing ones,
 * each group in dim order. Every intermediate is then at most the larger of X and Y (which the memory
 * plan holds anyway): in dim order, a hostile X [1,1,1,65536] -> Y [1,1,65536,1] first grew to 2^32
 * elements (a fuzzer's 13 GB scratch). Resizes that only grow or only shrink (every real model's) keep
 * dim order and their bytes. Returns the number of dims to resize. */
static int resize_order(const shape_priv *p, int *order)
{
    int n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t d = 0; d < p->rank; d++)
            if (pass == 0 ? p->odims[d] < p->idims[d] : p->odims[d] > p->idims[d]) order[n++] = (int)d;
    return n;
}

static int resize_compute(const sim_kernel_call *call, const shape_priv *p, const float *x, float *y, float *tmp0,
                          float *tmp1)
{
    int64_t cur[SIM_MAX_DIMS];
    int order[SIM_MAX_DIMS];
    for (int64_t d = 0; d < p->rank; d++) cur[d] = p->idims[d];
    const float *src = x;
    int n = resize_order(p, order);
    if (n == 0) {
        int64_t e = 1;
        for (int64_t d = 0; d < p->rank; d++) e *= cur[d];
        memcpy(y, x, (size_t)e * sizeof(float));
        return 0;
    }
    for (int k = 0; k < n; k++) {
        int d = order[k];
        float *dst = k == n - 1 ? y : (k % 2 ? tmp1 : tmp0);
        resize_dim(call, p, d, cur, src, dst);
        cur[d] = p->odims[d];
        src = dst;
    }
    return 0;
}

/* Largest intermediate element count while resizing dim by dim in resize_order (the last step writes Y
 * itself): at most max(X, Y) elements. */
static int64_t resize_tmp_elems(const shape_priv *p)
{
    int64_t cur[SIM_MAX_DIMS], best = 1;
    int order[SIM_MAX_DIMS];
    for (int64_t d = 0; d < p->rank; d++) cur[d] = p->idims[d];
    int n = resize_order(p, order);
    for (int k = 0; k + 1 < n; k++) {
        cur[order[k]] = p->odims[order[k]];
        int64_t e = 1;
        for (int64_t i = 0; i < p->rank; i++) e *= cur[i];
        best = e > best ? e : best;
    }
    return best;
}

/* One-pass nearest Resize: every output element is one input element (dim-by-dim copies give the same
 * values), so each output row is read straight from its source row, with no intermediate: the last dim
 * through a table of source columns, the other dims' source index computed once per row. A row whose
 * source row is the previous row's (an upsampled row) copies that output row. int8 maps the codes
 * through quant(act(deq(q))) (dropped when that is the identity), what dequantise, copy, activation and
 * requantise give element for element. */
typedef struct nearest_job {
    const shape_priv *p;
    const int64_t *col; /* source column of each output column, NULL when the last dim is unchanged */
    const unsigned char *x;
    unsigned char *y;
    size_t esz;          /* 4 (float) or 1 (int8 codes) */
    const int8_t *map;   /* int8: code map, NULL for a plain copy */
} nearest_job;

static void nearest_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    const nearest_job *j = arg;
    const shape_priv *p = j->p;
    int last = (int)p->rank - 1;
    int64_t iw = p->idims[last], ow = p->odims[last], prev_src = -1;
    size_t esz = j->esz, row_bytes = (size_t)ow * esz;
    (void)tid;
    for (int64_t r = lo; r < hi; r++) {
        int64_t rem = r, src = 0, stride = 1;
        for (int d = last - 1; d >= 0; d--) {
            int64_t od = rem % p->odims[d], i0 = od, i1;
            float w0, w1;
            rem /= p->odims[d];
            if (p->idims[d] != p->odims[d]) resize_entry(p, p->idims[d], p->odims[d], od, &i0, &i1, &w0, &w1);
            src += i0 * stride;
            stride *= p->idims[d];
        }
        unsigned char *yr = j->y + (size_t)r * row_bytes;
        if (src == prev_src && r > lo) {
            memcpy(yr, yr - row_bytes, row_bytes);
            continue;
        }
        prev_src = src;
        const unsigned char *xr = j->x + (size_t)src * (size_t)iw * esz;
        if (!j->col) {
            memcpy(yr, xr, row_bytes);
        } else if (esz == 4) {
            const float *xf = (const float *)(const void *)xr;
            float *yf = (float *)(void *)yr;
            for (int64_t c = 0; c < ow; c++) yf[c] = xf[j->col[c]];
        } else {
            for (int64_t c = 0; c < ow; c++) yr[c] = xr[j->col[c]];
        }
        if (j->map) sim_lut_i8(j->map, (const int8_t *)(const void *)yr, (int8_t *)(void *)yr, (size_t)ow);
    }
}

/* Whether the one-pass nearest path applies (the last dim's column table must fit the table cap). */
static int nearest_one_pass(const shape_priv *p)
{
    return p->mode == 0 && p->rank >= 1 && p->odims[p->rank - 1] <= RESIZE_TABLE_MAX_ENTRIES;
}

static int resize_nearest_run(sim_kernel_call *call, const shape_priv *p, const void *x, void *y, size_t esz,
                              const int8_t *map)
{
    int last = (int)p->rank - 1;
    int64_t ow = p->odims[last], rows = 1;
    for (int d = 0; d < last; d++) rows *= p->odims[d];
    int64_t *col = NULL;
    if (p->idims[last] != ow) {
        col = sim_scratch_get(call, (size_t)ow * sizeof(int64_t));
        if (!col) return SIM_ERR_MALLOC;
        for (int64_t c = 0; c < ow; c++) {
            int64_t i1;
            float w0, w1;
            resize_entry(p, p->idims[last], ow, c, &col[c], &i1, &w0, &w1);
        }
    }
    nearest_job j = {p, col, x, y, esz, map};
    if (rows * ow >= 16384) sim_parallel(call, nearest_rows, &j, rows);
    else nearest_rows(&j, 0, rows, 0);
    return 0;
}

static int resize_run(sim_kernel_call *call, int is_i8)
{
    const shape_priv *p = call->op->priv;
    const sim_tensor *xt = sim_call_in_t(call, 0);
    const sim_tensor *yt = call->out[0].t ? call->out[0].t : sim_out_tensor(call->graph, call->op, 0);
    if (!p || !xt || !yt) return SIM_ERR_FAIL;
    if (yt->n_elems == 0) return 0;
    if (nearest_one_pass(p)) {
        if (!is_i8) {
            const float *x = sim_call_in_f32(call, 0);
            if (!x || !call->out[0].f32) return SIM_ERR_FAIL;
            int rc = resize_nearest_run(call, p, x, call->out[0].f32, sizeof(float), NULL);
            return rc ? rc : finish(call, 0);
        }
        if (!call->in[0].i8 || !call->out[0].i8) return SIM_ERR_FAIL;
        float f[256];
        int8_t map[256];
        int identity = 1;
        sim_dequant_lut(xt, f);
        sim_op_act(call->op, f, 256);
        sim_quant_array(f, map, 256, sim_t_scale(yt), sim_t_zp(yt));
        for (int i = 0; i < 256 && identity; i++) identity = map[i] == (int8_t)(i - 128);
        return resize_nearest_run(call, p, call->in[0].i8, call->out[0].i8, 1, identity ? NULL : map);
    }
    int64_t tmp = resize_tmp_elems(p);
    size_t extra = is_i8 ? (size_t)(xt->n_elems + yt->n_elems) : 0;
    float *buf = sim_scratch_get(call, ((size_t)(2 * tmp) + extra) * sizeof(float));
    if (!buf) return SIM_ERR_MALLOC;
    if (!is_i8) {
        const float *x = sim_call_in_f32(call, 0);
        if (!x || !call->out[0].f32) return SIM_ERR_FAIL;
        resize_compute(call, p, x, call->out[0].f32, buf, buf + tmp);
        return finish(call, 0);
    }
    float *xf = buf + 2 * tmp, *yf = xf + xt->n_elems;
    if (!call->in[0].i8 || !call->out[0].i8) return SIM_ERR_FAIL;
    sim_dequant_array(call->in[0].i8, xf, (size_t)xt->n_elems, sim_t_scale(xt), sim_t_zp(xt));
    resize_compute(call, p, xf, yf, buf, buf + tmp);
    sim_op_act(call->op, yf, (size_t)yt->n_elems);
    sim_quant_array(yf, call->out[0].i8, (size_t)yt->n_elems, sim_t_scale(yt), sim_t_zp(yt));
    return 0;
}

/* ---- definitions ---- */

#define SHAPE_DEF(sym, id, onnx, npu, prep, run)                                                             \
    static int run##_f32(sim_kernel_call *c) { return run(c, 0); }                                          \
    static int run##_i8(sim_kernel_call *c) { return run(c, 1); }                                           \
    const sim_op_def sym = {.type = id, .onnx_name = onnx, .npu_name = npu, .prepare = prep,                 \
                            .run_f32 = run##_f32, .run_i8 = run##_i8, .release = shape_release, .macs = NULL}

SHAPE_DEF(sim_def_reshape, SIM_OP_RESHAPE, "Reshape", "Reshape", reshape_prepare, reshape_run);
SHAPE_DEF(sim_def_concat, SIM_OP_CONCAT, "Concat", "Concat", concat_prepare, concat_run);
SHAPE_DEF(sim_def_split, SIM_OP_SPLIT, "Split", "Split", split_prepare, split_run);
SHAPE_DEF(sim_def_transpose, SIM_OP_TRANSPOSE, "Transpose", "Transpose", transpose_prepare, view_run);
SHAPE_DEF(sim_def_pad, SIM_OP_PAD, "Pad", "Pad", pad_prepare, pad_run);
SHAPE_DEF(sim_def_gather, SIM_OP_GATHER, "Gather", "Gather", gather_prepare, gather_run);
SHAPE_DEF(sim_def_resize, SIM_OP_RESIZE, "Resize", "Resize", resize_prepare, resize_run);

static int slice_run_f32(sim_kernel_call *c) { return view_run(c, 0); }
static int slice_run_i8(sim_kernel_call *c) { return view_run(c, 1); }
const sim_op_def sim_def_slice = {.type = SIM_OP_SLICE, .onnx_name = "Slice", .npu_name = "Slice",
                                  .prepare = slice_prepare, .run_f32 = slice_run_f32, .run_i8 = slice_run_i8,
                                  .release = shape_release, .macs = NULL};
