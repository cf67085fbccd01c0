/*
 * Recurrent layers, one layer: LSTM (gates i, o, f, c; no peepholes) and GRU (gates z, r, h; both
 * linear_before_reset forms), forward, reverse or bidirectional, with the default activations (sigmoid,
 * tanh). Inputs (as the builder writes them): X [T, B, I], W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H]?,
 * initial_h [D, B, H]?, initial_c [D, B, H]? (LSTM). Outputs: Y [T, D, B, H], Y_h [D, B, H], Y_c [D, B, H]
 * (LSTM). Every time step accumulates in a fixed order on one thread, so results do not depend on the
 * thread count. The int8 form is the executor's dequantise-compute-requantise (the NPU keeps recurrent
 * state in float16 or higher: docs/quantization.md).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops_common.h"

typedef struct rnn_priv {
    int64_t t, b, in, h, dirs, gates;
    int direction; /* 0 forward, 1 reverse, 2 bidirectional */
    int lbr;       /* GRU linear_before_reset */
} rnn_priv;

static int dims_are(const sim_tensor *t, uint32_t n, int64_t a, int64_t b, int64_t c)
{
    int64_t want[3] = {a, b, c};
    if (!t || t->n_dims != n) return 0;
    for (uint32_t d = 0; d < n; d++)
        if (t->dims[d] != want[d]) return 0;
    return 1;
}

static int rnn_prepare(const sim_graph *g, sim_op *op, char *err, size_t err_len)
{
    char b1[96];
    int lstm = op->type == SIM_OP_LSTM;
    const sim_tensor *x = sim_in_tensor(g, op, 0), *w = sim_in_tensor(g, op, 1), *r = sim_in_tensor(g, op, 2);
    const sim_tensor *bias = sim_in_tensor(g, op, 3), *h0 = sim_in_tensor(g, op, 4);
    const sim_tensor *c0 = lstm ? sim_in_tensor(g, op, 5) : NULL;
    if (!x || !w || !r || x->n_dims != 3 || w->kind != SIM_T_CONST || r->kind != SIM_T_CONST || !w->fdata || !r->fdata)
        return sim_fail(err, err_len, op, "needs X [T,B,I] and constant W and R");
    rnn_priv p = {.t = x->dims[0], .b = x->dims[1], .in = x->dims[2], .gates = lstm ? 4 : 3};
    p.h = sim_attr_int(op, "hidden_size", 0);
    p.direction = (int)sim_attr_int(op, "direction", 0);
    p.lbr = (int)sim_attr_int(op, "linear_before_reset", 0);
    p.dirs = p.direction == 2 ? 2 : 1;
    int ok = p.h >= 1 && p.direction >= 0 && p.direction <= 2 && dims_are(w, 3, p.dirs, p.gates * p.h, p.in) &&
             dims_are(r, 3, p.dirs, p.gates * p.h, p.h);
    ok = ok && (!bias || (bias->kind == SIM_T_CONST && bias->fdata && bias->n_elems == p.dirs * 2 * p.gates * p.h));
    ok = ok && (!h0 || dims_are(h0, 3, p.dirs, p.b, p.h)) && (!c0 || dims_are(c0, 3, p.dirs, p.b, p.h));
    uint32_t n_out = lstm ? 3 : 2;
    ok = ok && op->n_outputs == n_out;
    const int64_t y_dims[4] = {p.t, p.dirs, p.b, p.h};
    const sim_tensor *y = sim_out_tensor(g, op, 0);
    ok = ok && y && y->n_dims == 4;
    for (uint32_t d = 0; ok && d < 4; d++) ok = y->dims[d] == y_dims[d];
    for (uint32_t o = 1; ok && o < n_out; o++) ok = dims_are(sim_out_tensor(g, op, o), 3, p.dirs, p.b, p.h);
    if (!ok)
        return sim_fail(err, err_len, op, "weights, states or outputs do not match X %s, hidden_size %lld, direction %d",
                        sim_shape_str(x, b1, sizeof b1), (long long)p.h, p.direction);
    rnn_priv *pp = malloc(sizeof *pp);
    if (!pp) return SIM_ERR_MALLOC;
    *pp = p;
    op->priv = pp;
    return 0;
}

static float sigm(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* y[n] = sum_k m[n][k] * v[k] for an n x k row-major matrix. */
static void matvec(const float *m, const float *v, float *y, int64_t n, int64_t k)
{
    for (int64_t i = 0; i < n; i++) {
        const float *row = m + i * k;
        float s = 0.0f;
        for (int64_t j = 0; j < k; j++) s += row[j] * v[j];
        y[i] = s;
    }
}

/* One LSTM step (gate order i, o, f, c): gx = W x + Wb, gr = R h + Rb; updates h and c. */
static void lstm_step(int64_t hs, const float *gx, const float *gr, float *h, float *c)
{
    for (int64_t k = 0; k < hs; k++) {
        float ig = sigm(gx[k] + gr[k]), og = sigm(gx[hs + k] + gr[hs + k]);
        float fg = sigm(gx[2 * hs + k] + gr[2 * hs + k]), cg = tanhf(gx[3 * hs + k] + gr[3 * hs + k]);
        c[k] = fg * c[k] + ig * cg;
        h[k] = og * tanhf(c[k]);
    }
}

/* One GRU step (gate order z, r, h). gr = R h + Rb for all three gates; without linear_before_reset the
 * candidate uses R_h (r * h) + Rb_h instead, computed here into tmp. */
static void gru_step(const rnn_priv *p, const float *rd, const float *rb, const float *gx, const float *gr,
                     float *h, float *tmp)
{
    int64_t hs = p->h;
    float *z = tmp, *rh = tmp + hs, *cand = tmp + 2 * hs;
    for (int64_t k = 0; k < hs; k++) {
        z[k] = sigm(gx[k] + gr[k]);
        float rg = sigm(gx[hs + k] + gr[hs + k]);
        rh[k] = rg * h[k];
        cand[k] = p->lbr ? tanhf(gx[2 * hs + k] + rg * gr[2 * hs + k]) : 0.0f;
    }
    if (!p->lbr) {
        const float *rhm = rd + 2 * hs * hs;
        for (int64_t k = 0; k < hs; k++) {
            const float *row = rhm + k * hs;
            float acc = 0.0f;
            for (int64_t j = 0; j < hs; j++) acc += row[j] * rh[j];
            cand[k] = tanhf(gx[2 * hs + k] + acc + (rb ? rb[2 * hs + k] : 0.0f));
        }
    }
    for (int64_t k = 0; k < hs; k++) h[k] = (1.0f - z[k]) * cand[k] + z[k] * h[k];
}

static int rnn_run_f32(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const rnn_priv *p = op->priv;
    int lstm = op->type == SIM_OP_LSTM;
    const float *x = sim_call_in_f32(call, 0), *w = sim_call_in_f32(call, 1), *r = sim_call_in_f32(call, 2);
    const float *bias = sim_call_in_t(call, 3) ? sim_call_in_f32(call, 3) : NULL;
    const float *h0 = sim_call_in_t(call, 4) ? sim_call_in_f32(call, 4) : NULL;
    const float *c0 = lstm && sim_call_in_t(call, 5) ? sim_call_in_f32(call, 5) : NULL;
    float *y = call->out[0].f32, *yh = call->out[1].f32, *yc = lstm ? call->out[2].f32 : NULL;
    if (!p || !x || !w || !r || !y || !yh || (lstm && !yc)) return SIM_ERR_FAIL;
    int64_t gh = p->gates * p->h;
    float *buf = sim_scratch_get(call, (size_t)(2 * gh + 5 * p->h) * sizeof(float));
    if (!buf) return SIM_ERR_MALLOC;
    float *gx = buf, *gr = buf + gh, *h = gr + gh, *c = h + p->h, *tmp = c + p->h;
    for (int64_t d = 0; d < p->dirs; d++) {
        int rev = p->direction == 1 || d == 1;
        const float *wd = w + d * gh * p->in, *rd = r + d * gh * p->h;
        const float *wb = bias ? bias + d * 2 * gh : NULL, *rb = wb ? wb + gh : NULL;
        for (int64_t b = 0; b < p->b; b++) {
            int64_t st = (d * p->b + b) * p->h;
            for (int64_t k = 0; k < p->h; k++) {
                h[k] = h0 ? h0[st + k] : 0.0f;
                c[k] = c0 ? c0[st + k] : 0.0f;
            }
            for (int64_t s = 0; s < p->t; s++) {
                int64_t t = rev ? p->t - 1 - s : s;
                matvec(wd, x + (t * p->b + b) * p->in, gx, gh, p->in);
                matvec(rd, h, gr, gh, p->h);
                for (int64_t k = 0; k < gh && wb; k++) {
                    gx[k] += wb[k];
                    gr[k] += rb[k];
                }
                if (lstm) lstm_step(p->h, gx, gr, h, c);
                else gru_step(p, rd, rb, gx, gr, h, tmp);
                memcpy(y + ((t * p->dirs + d) * p->b + b) * p->h, h, (size_t)p->h * sizeof(float));
            }
            memcpy(yh + st, h, (size_t)p->h * sizeof(float));
            if (lstm) memcpy(yc + st, c, (size_t)p->h * sizeof(float));
        }
    }
    return 0;
}

static uint64_t rnn_macs(const sim_graph *g, const sim_op *op)
{
    const rnn_priv *p = op->priv;
    (void)g;
    return p ? (uint64_t)(p->dirs * p->t * p->b * p->gates * p->h * (p->in + p->h)) : 0;
}

const sim_op_def sim_def_lstm = {.type = SIM_OP_LSTM, .onnx_name = "LSTM", .npu_name = "LSTM",
                                 .prepare = rnn_prepare, .run_f32 = rnn_run_f32, .run_i8 = NULL,
                                 .release = sim_free_priv, .macs = rnn_macs};
const sim_op_def sim_def_gru = {.type = SIM_OP_GRU, .onnx_name = "GRU", .npu_name = "GRU",
                                .prepare = rnn_prepare, .run_f32 = rnn_run_f32, .run_i8 = NULL,
                                .release = sim_free_priv, .macs = rnn_macs};
