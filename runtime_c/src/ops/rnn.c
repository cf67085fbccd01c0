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

#include "conv.h" /* sim_parallel_sized */
#include "ops_common.h"
#include "vmath.h"

typedef struct rnn_priv {
    int64_t t, b, in, h, dirs, gates;
    int direction; /* 0 forward, 1 reverse, 2 bidirectional */
    int lbr;       /* GRU linear_before_reset */
    float *wt, *rt; /* W and R transposed per direction: [D][I][G*H], [D][H][G*H] */
} rnn_priv;

static void rnn_release(sim_op *op)
{
    rnn_priv *p = op->priv;
    if (!p) return;
    free(p->wt);
    free(p->rt);
    free(p);
    op->priv = NULL;
}

/* dst[d][c][r] = src[d][r][c] for `dirs` rows x cols matrices. */
static void transpose_dirs(const float *src, int64_t dirs, int64_t rows, int64_t cols, float *dst)
{
    for (int64_t d = 0; d < dirs; d++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) dst[(d * cols + c) * rows + r] = src[(d * rows + r) * cols + c];
}

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
    int64_t gh = p.gates * p.h;
    pp->wt = malloc((size_t)(p.dirs * gh * p.in) * sizeof(float));
    pp->rt = malloc((size_t)(p.dirs * gh * p.h) * sizeof(float));
    if (!pp->wt || !pp->rt) {
        rnn_release(op);
        return SIM_ERR_MALLOC;
    }
    transpose_dirs(w->fdata, p.dirs, gh, p.in, pp->wt);
    transpose_dirs(r->fdata, p.dirs, gh, p.h, pp->rt);
    return 0;
}

/* ---- the gate projections: y[e][i] = b[i] + sum_j x[e][j] * mt[j][i] ----
 * Every output starts from b (or +0) and takes one fused multiply-add per j = 0..k-1 in that order (as
 * the GEMMs do), on the C, the AVX2 and the AVX-512 path alike, so all three give the same bytes. These
 * projections (the input one over all steps, the recurrent one per step) are most of a layer's time; a
 * fused step is half the floating-point instructions of a product and a sum. */
static void mv_c(const float *mt, const float *x, const float *b, float *y, int64_t rows, int64_t n, int64_t k,
                 int64_t c0)
{
    for (int64_t e = 0; e < rows; e++) {
        float *ye = y + e * n;
        for (int64_t c = c0; c < n; c++) ye[c] = b ? b[c] : 0.0f;
        for (int64_t j = 0; j < k; j++) {
            const float *row = mt + j * n;
            float a = x[e * k + j];
            for (int64_t c = c0; c < n; c++) ye[c] = fmaf(a, row[c], ye[c]);
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SIM_FORCE_GENERIC)
#include <immintrin.h>
#define RNN_HAVE_X86 1

/* R rows x W vectors of outputs at column i, held in registers over the j loop (V: 256 or 512 bits). */
#define MV_TILE(R, W, VT, LOAD, ZERO, SET1, FMA, STORE, L)                                                       \
    do {                                                                                                         \
        VT acc[R][W];                                                                                            \
        for (int e = 0; e < R; e++)                                                                              \
            for (int w = 0; w < W; w++) acc[e][w] = b ? LOAD(b + i + L * w) : ZERO();                            \
        for (int64_t j = 0; j < k; j++) {                                                                        \
            const float *row = mt + j * n + i;                                                                   \
            VT wv[W];                                                                                            \
            for (int w = 0; w < W; w++) wv[w] = LOAD(row + L * w);                                               \
            for (int e = 0; e < R; e++) {                                                                        \
                VT a = SET1(x[e * k + j]);                                                                       \
                for (int w = 0; w < W; w++) acc[e][w] = FMA(a, wv[w], acc[e][w]);                                \
            }                                                                                                    \
        }                                                                                                        \
        for (int e = 0; e < R; e++)                                                                              \
            for (int w = 0; w < W; w++) STORE(y + e * n + i + L * w, acc[e][w]);                                 \
    } while (0)
#define T512(R, W) MV_TILE(R, W, __m512, _mm512_loadu_ps, _mm512_setzero_ps, _mm512_set1_ps, _mm512_fmadd_ps, \
                           _mm512_storeu_ps, 16)
#define T256(R, W) MV_TILE(R, W, __m256, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_set1_ps, _mm256_fmadd_ps, \
                           _mm256_storeu_ps, 8)

__attribute__((target("avx512f,fma"))) static void mv4_avx512(const float *mt, const float *x, const float *b,
                                                              float *y, int64_t n, int64_t k)
{
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) T512(4, 4);
    for (; i + 16 <= n; i += 16) T512(4, 1);
    mv_c(mt, x, b, y, 4, n, k, i);
}

__attribute__((target("avx512f,fma"))) static void mv1_avx512(const float *mt, const float *x, const float *b,
                                                              float *y, int64_t n, int64_t k)
{
    int64_t i = 0;
    for (; i + 128 <= n; i += 128) T512(1, 8);
    for (; i + 16 <= n; i += 16) T512(1, 1);
    mv_c(mt, x, b, y, 1, n, k, i);
}

__attribute__((target("avx2,fma"))) static void mv4_avx2(const float *mt, const float *x, const float *b, float *y,
                                                         int64_t n, int64_t k)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) T256(4, 2);
    for (; i + 8 <= n; i += 8) T256(4, 1);
    mv_c(mt, x, b, y, 4, n, k, i);
}

__attribute__((target("avx2,fma"))) static void mv1_avx2(const float *mt, const float *x, const float *b, float *y,
                                                         int64_t n, int64_t k)
{
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) T256(1, 8);
    for (; i + 8 <= n; i += 8) T256(1, 1);
    mv_c(mt, x, b, y, 1, n, k, i);
}
#undef T512
#undef T256
#undef MV_TILE
#endif

/* isa: 2 AVX-512, 1 AVX2 with FMA, 0 C (rnn_isa). */
static void rnn_matvec_rows(int isa, const float *mt, const float *x, const float *b, float *y, int64_t rows,
                            int64_t n, int64_t k)
{
#ifdef RNN_HAVE_X86
    if (isa > 0) {
        int64_t e = 0;
        for (; e + 4 <= rows; e += 4)
            (isa == 2 ? mv4_avx512 : mv4_avx2)(mt, x + e * k, b, y + e * n, n, k);
        for (; e < rows; e++) (isa == 2 ? mv1_avx512 : mv1_avx2)(mt, x + e * k, b, y + e * n, n, k);
        return;
    }
#endif
    (void)isa;
    mv_c(mt, x, b, y, rows, n, k, 0);
}

static int rnn_isa(void)
{
#ifdef RNN_HAVE_X86
    if (sim_cpu_wide_isa() & SIM_ISA_AVX512F) return 2;
    if (sim_cpu_has_avx2_fma()) return 1;
#endif
    return 0;
}

static float sigm(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* tanh(x) = 2 sigmoid(2x) - 1 in place through the vector sigmoid (absolute error about 1e-7). */
static void tanh_array(int avx2, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] *= 2.0f;
    sim_sigmoid_array(avx2, x, (size_t)n, 0);
    for (int64_t i = 0; i < n; i++) x[i] = 2.0f * x[i] - 1.0f;
}

/* One LSTM step (gate order i, o, f, c): gx = W x + Wb, gr = R h + Rb; updates h and c. g (4 hs) and
 * tc (hs) are scratch. */
static void lstm_step(int avx2, int64_t hs, const float *gx, const float *gr, float *h, float *c, float *g, float *tc)
{
    for (int64_t k = 0; k < 4 * hs; k++) g[k] = gx[k] + gr[k];
    sim_sigmoid_array(avx2, g, (size_t)(3 * hs), 0);
    tanh_array(avx2, g + 3 * hs, hs);
    for (int64_t k = 0; k < hs; k++) tc[k] = c[k] = g[2 * hs + k] * c[k] + g[k] * g[3 * hs + k];
    tanh_array(avx2, tc, hs);
    for (int64_t k = 0; k < hs; k++) h[k] = g[hs + k] * tc[k];
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

typedef struct rnn_job {
    const rnn_priv *p;
    int lstm, avx2, isa;
    const float *x, *r, *bias, *h0, *c0;
    float *y, *yh, *yc;
    float *scr;   /* per thread: projections of every step, then step scratch */
    size_t stride; /* floats per thread */
} rnn_job;

/* Direction d, whole: the directions are independent, so they run on separate threads with the same
 * bytes as one after the other. */
static void rnn_dirs(void *arg, int64_t lo, int64_t hi, int tid)
{
    const rnn_job *j = arg;
    const rnn_priv *p = j->p;
    int64_t gh = p->gates * p->h, steps = p->t * p->b;
    float *gxa = j->scr + (size_t)tid * j->stride, *gr = gxa + steps * gh, *g = gr + gh, *h = g + gh, *c = h + p->h;
    float *tmp = c + p->h;
    for (int64_t d = lo; d < hi; d++) {
        int rev = p->direction == 1 || d == 1;
        const float *wt = p->wt + d * gh * p->in, *rt = p->rt + d * gh * p->h, *rd = j->r + d * gh * p->h;
        const float *wb = j->bias ? j->bias + d * 2 * gh : NULL, *rb = wb ? wb + gh : NULL;
        /* the input projection of every time step at once */
        rnn_matvec_rows(j->isa, wt, j->x, wb, gxa, steps, gh, p->in);
        for (int64_t b = 0; b < p->b; b++) {
            int64_t st = (d * p->b + b) * p->h;
            for (int64_t k = 0; k < p->h; k++) {
                h[k] = j->h0 ? j->h0[st + k] : 0.0f;
                c[k] = j->c0 ? j->c0[st + k] : 0.0f;
            }
            for (int64_t s = 0; s < p->t; s++) {
                int64_t t = rev ? p->t - 1 - s : s;
                const float *gx = gxa + (t * p->b + b) * gh;
                rnn_matvec_rows(j->isa, rt, h, rb, gr, 1, gh, p->h);
                if (j->lstm) lstm_step(j->avx2, p->h, gx, gr, h, c, g, tmp);
                else gru_step(p, rd, rb, gx, gr, h, tmp);
                memcpy(j->y + ((t * p->dirs + d) * p->b + b) * p->h, h, (size_t)p->h * sizeof(float));
            }
            memcpy(j->yh + st, h, (size_t)p->h * sizeof(float));
            if (j->lstm) memcpy(j->yc + st, c, (size_t)p->h * sizeof(float));
        }
    }
}

static uint64_t rnn_macs(const sim_graph *g, const sim_op *op);

static int rnn_run_f32(sim_kernel_call *call)
{
    const sim_op *op = call->op;
    const rnn_priv *p = op->priv;
    int lstm = op->type == SIM_OP_LSTM;
    rnn_job j = {p, lstm, SIM_CPU_AVX2(), rnn_isa(), sim_call_in_f32(call, 0), sim_call_in_f32(call, 2),
                 sim_call_in_t(call, 3) ? sim_call_in_f32(call, 3) : NULL,
                 sim_call_in_t(call, 4) ? sim_call_in_f32(call, 4) : NULL,
                 lstm && sim_call_in_t(call, 5) ? sim_call_in_f32(call, 5) : NULL,
                 call->out[0].f32, call->out[1].f32, lstm ? call->out[2].f32 : NULL, NULL, 0};
    if (!p || !j.x || !j.r || !j.y || !j.yh || (lstm && !j.yc)) return SIM_ERR_FAIL;
    int64_t gh = p->gates * p->h;
    j.stride = ((size_t)(p->t * p->b * gh + 2 * gh + 6 * p->h) + 15u) & ~(size_t)15u;
    int threads = sim_call_threads(call);
    j.scr = sim_scratch_get(call, j.stride * (size_t)threads * sizeof(float)); /* a slice per tid */
    if (!j.scr) return SIM_ERR_MALLOC;
    if (threads > 1 && p->dirs > 1)
        sim_parallel_sized(call, rnn_dirs, &j, p->dirs, (double)rnn_macs(NULL, op));
    else rnn_dirs(&j, 0, p->dirs, 0);
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
                                 .release = rnn_release, .macs = rnn_macs};
const sim_op_def sim_def_gru = {.type = SIM_OP_GRU, .onnx_name = "GRU", .npu_name = "GRU",
                                .prepare = rnn_prepare, .run_f32 = rnn_run_f32, .run_i8 = NULL,
                                .release = rnn_release, .macs = rnn_macs};
