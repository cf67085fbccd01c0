/*
 * Shared kernel plumbing: tensor access for prepare/run, error text, fused-activation loops,
 * int8 (de)quantisation loops and numpy broadcasting geometry.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops_common.h"
#include "vmath.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

int sim_fail(char *err, size_t err_len, const sim_op *op, const char *fmt, ...)
{
    if (err && err_len > 0) {
        int n = snprintf(err, err_len, "%s '%s': ", op ? (sim_op_find(op->type) ? sim_op_find(op->type)->onnx_name
                                                                               : "op")
                                                       : "op",
                         op && op->name ? op->name : "");
        if (n < 0) n = 0;
        if ((size_t)n < err_len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return SIM_ERR_INVALID;
}

const sim_tensor *sim_in_tensor(const sim_graph *g, const sim_op *op, uint32_t i)
{
    if (!g || !op || i >= op->n_inputs || !op->inputs) return NULL;
    uint32_t idx = op->inputs[i];
    if (idx == SIM_NONE || idx >= g->n_tensors) return NULL;
    return &g->tensors[idx];
}

const sim_tensor *sim_out_tensor(const sim_graph *g, const sim_op *op, uint32_t i)
{
    if (!g || !op || i >= op->n_outputs || !op->outputs) return NULL;
    uint32_t idx = op->outputs[i];
    if (idx == SIM_NONE || idx >= g->n_tensors) return NULL;
    return &g->tensors[idx];
}

const sim_tensor *sim_call_in_t(const sim_kernel_call *call, uint32_t i)
{
    if (i < 16 && call->in[i].t) return call->in[i].t;
    return sim_in_tensor(call->graph, call->op, i);
}

const float *sim_call_in_f32(const sim_kernel_call *call, uint32_t i)
{
    if (i < 16 && call->in[i].f32) return call->in[i].f32;
    const sim_tensor *t = sim_call_in_t(call, i);
    return t ? t->fdata : NULL;
}

const int8_t *sim_call_in_i8(const sim_kernel_call *call, uint32_t i)
{
    if (i < 16 && call->in[i].i8) return call->in[i].i8;
    const sim_tensor *t = sim_call_in_t(call, i);
    if (t && t->kind == SIM_T_CONST && t->dtype == SIM_I8) return (const int8_t *)t->data;
    return NULL;
}

int sim_same_shape(const sim_tensor *a, const sim_tensor *b)
{
    if (a->n_dims != b->n_dims) return 0;
    for (uint32_t d = 0; d < a->n_dims; d++)
        if (a->dims[d] != b->dims[d]) return 0;
    return 1;
}

int sim_is_float_dtype(uint32_t dtype)
{
    return dtype == SIM_F32 || dtype == SIM_F16;
}

const char *sim_shape_str(const sim_tensor *t, char *buf, size_t len)
{
    size_t pos = 0;
    if (len == 0) return buf;
    buf[0] = '\0';
    if (!t) {
        snprintf(buf, len, "(absent)");
        return buf;
    }
    pos += (size_t)snprintf(buf, len, "[");
    for (uint32_t d = 0; d < t->n_dims && d < SIM_MAX_DIMS && pos < len; d++)
        pos += (size_t)snprintf(buf + pos, len - pos, d ? ",%lld" : "%lld", (long long)t->dims[d]);
    if (pos < len) snprintf(buf + pos, len - pos, "]");
    return buf;
}

/*
 * Sigmoid and SiLU for the float paths: exp through a Cody-Waite reduction and a degree-5 polynomial
 * (about 2 ulp), written once as scalar C and once as AVX2 with the same IEEE operations in the same
 * order (no FMA contraction), so both paths, and any thread split, give the same bits. The input is
 * clamped to [-87, 88] so 2^n stays a normal float; NaN passes through (max/min keep it).
 */
static void sigmoid_loop_c(float *x, size_t n, int silu)
{
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + sim_exp_poly(-x[i]));
        x[i] = silu ? x[i] * s : s;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SIM_FORCE_GENERIC)
#define SIM_HAVE_AVX2_SIGMOID 1
__attribute__((target("avx2"))) static void sigmoid_loop_avx2(float *x, size_t n, int silu)
{
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    size_t i = 0;
    for (; i + 8 * SIM_VLANES <= n; i += 8 * SIM_VLANES) { /* SIM_VLANES chains interleaved (vmath.h) */
        __m256 v[SIM_VLANES], e[SIM_VLANES];
        SIM_EACH4(v[k] = _mm256_loadu_ps(x + i + 8 * k));
        SIM_EACH4(e[k] = _mm256_xor_ps(v[k], neg));
        sim_exp8x4_avx2(e);
        SIM_EACH4(e[k] = _mm256_div_ps(one, _mm256_add_ps(one, e[k])));
        SIM_EACH4(_mm256_storeu_ps(x + i + 8 * k, silu ? _mm256_mul_ps(v[k], e[k]) : e[k]));
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, sim_exp8_avx2(_mm256_xor_ps(v, neg))));
        _mm256_storeu_ps(x + i, silu ? _mm256_mul_ps(v, s) : s);
    }
    sigmoid_loop_c(x + i, n - i, silu);
}
#endif

/* Sigmoid (silu = 0) or SiLU in place; the AVX2 and C paths agree bit for bit. */
void sim_sigmoid_array(int use_avx2, float *x, size_t n, int silu)
{
#ifdef SIM_HAVE_AVX2_SIGMOID
    if (use_avx2) {
        sigmoid_loop_avx2(x, n, silu);
        return;
    }
#endif
    (void)use_avx2;
    sigmoid_loop_c(x, n, silu);
}

void sim_act_array(uint32_t act, float p0, float p1, float *x, size_t n)
{
    switch (act) {
    case SIM_ACT_NONE: return;
    case SIM_ACT_RELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] < 0.0f ? 0.0f : x[i];
        return;
    case SIM_ACT_CLIP:
        for (size_t i = 0; i < n; i++) {
            float v = x[i] < p0 ? p0 : x[i];
            x[i] = v > p1 ? p1 : v;
        }
        return;
    case SIM_ACT_LEAKY:
        for (size_t i = 0; i < n; i++) x[i] = x[i] < 0.0f ? x[i] * p0 : x[i];
        return;
    case SIM_ACT_HARDSWISH:
        for (size_t i = 0; i < n; i++) {
            float t = x[i] + 3.0f;
            t = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
            x[i] = x[i] * t / 6.0f;
        }
        return;
    case SIM_ACT_HARDSIGMOID:
        for (size_t i = 0; i < n; i++) {
            float t = p0 * x[i] + p1;
            x[i] = t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
        }
        return;
    case SIM_ACT_SIGMOID:
    case SIM_ACT_SILU: sim_sigmoid_array(SIM_CPU_AVX2(), x, n, act == SIM_ACT_SILU); return;
    default:
        for (size_t i = 0; i < n; i++) x[i] = sim_apply_act(act, p0, p1, x[i]);
        return;
    }
}

void sim_op_act(const sim_op *op, float *x, size_t n)
{
    if (op->act != SIM_ACT_NONE) sim_act_array(op->act, op->act_p0, op->act_p1, x, n);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* 8 floats at a time: divide, round half away from zero, add zp, saturate; NaN maps to zp. */
__attribute__((target("avx2"))) static size_t quant_avx2(const float *x, int8_t *q, size_t n, float scale,
                                                         int32_t zp)
{
    __m256 vs = _mm256_set1_ps(scale), lim = _mm256_set1_ps(1e9f), nlim = _mm256_set1_ps(-1e9f);
    __m256 half = _mm256_set1_ps(0.5f), nhalf = _mm256_set1_ps(-0.5f), one = _mm256_set1_ps(1.0f);
    __m256 vz = _mm256_set1_ps((float)zp), qmin = _mm256_set1_ps(-128.0f), qmax = _mm256_set1_ps(127.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i), vs);
        v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q)); /* NaN -> 0 */
        v = _mm256_min_ps(lim, _mm256_max_ps(nlim, v));
        __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __m256 f = _mm256_sub_ps(v, t);
        t = _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, half, _CMP_GE_OQ), one));
        t = _mm256_sub_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, nhalf, _CMP_LE_OQ), one));
        t = _mm256_min_ps(qmax, _mm256_max_ps(qmin, _mm256_add_ps(t, vz)));
        __m256i w = _mm256_cvttps_epi32(t);
        __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storel_epi64((__m128i *)(void *)(q + i), _mm_packs_epi16(p16, p16));
    }
    return i;
}
#endif

void sim_quant_array(const float *x, int8_t *q, size_t n, float scale, int32_t zp)
{
    size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (SIM_CPU_AVX2()) i = quant_avx2(x, q, n, scale, zp);
#endif
    for (; i < n; i++) q[i] = sim_quant_i8(x[i], scale, zp);
}

static inline void dequant_body(const int8_t *q, float *x, size_t n, float scale, int32_t zp)
{
    for (size_t i = 0; i < n; i++) x[i] = scale * (float)((int32_t)q[i] - zp);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static void dequant_avx2(const int8_t *q, float *x, size_t n, float scale, int32_t zp)
{
    dequant_body(q, x, n, scale, zp);
}
#endif

void sim_dequant_array(const int8_t *q, float *x, size_t n, float scale, int32_t zp)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (SIM_CPU_AVX2()) {
        dequant_avx2(q, x, n, scale, zp);
        return;
    }
#endif
    dequant_body(q, x, n, scale, zp);
}

float sim_t_scale(const sim_tensor *t)
{
    return (t && t->qnt == SIM_Q_AFFINE && t->scale > 0.0f) ? t->scale : 1.0f;
}

int32_t sim_t_zp(const sim_tensor *t)
{
    return (t && t->qnt == SIM_Q_AFFINE) ? t->zp : 0;
}

int sim_same_quant(const sim_tensor *a, const sim_tensor *b)
{
    return sim_t_scale(a) == sim_t_scale(b) && sim_t_zp(a) == sim_t_zp(b);
}

void sim_dequant_lut(const sim_tensor *t, float lut[256])
{
    float s = sim_t_scale(t);
    int32_t zp = sim_t_zp(t);
    for (int q = -128; q < 128; q++) lut[q + 128] = s * (float)(q - zp);
}

int sim_bcast_check(const sim_tensor *out, const sim_tensor *const *ins, uint32_t n)
{
    uint32_t rank = 0;
    for (uint32_t i = 0; i < n; i++)
        if (ins[i]->n_dims > rank) rank = ins[i]->n_dims;
    if (out->n_dims != rank) return -1;
    for (uint32_t d = 0; d < rank; d++) {
        int64_t dim = 1;
        for (uint32_t i = 0; i < n; i++) {
            int64_t off = (int64_t)d - (int64_t)(rank - ins[i]->n_dims);
            if (off < 0) continue;
            int64_t v = ins[i]->dims[off];
            if (v == 1) continue;
            if (dim != 1 && dim != v) return -1;
            dim = v;
        }
        if (out->dims[d] != dim) return -1;
    }
    return 0;
}

/* Dim d of t aligned right against rank `rank` (1 when t has fewer dims). */
static int64_t aligned_dim(const sim_tensor *t, uint32_t rank, uint32_t d)
{
    int64_t off = (int64_t)d - (int64_t)(rank - t->n_dims);
    return off < 0 ? 1 : t->dims[off];
}

int sim_bcast_init(sim_bcast *bc, const sim_tensor *out, const sim_tensor *a, const sim_tensor *b)
{
    uint32_t rank = out->n_dims;
    if (a->n_dims > rank || (b && b->n_dims > rank)) return -1;
    int64_t da[SIM_MAX_DIMS], db[SIM_MAX_DIMS], dout[SIM_MAX_DIMS];
    for (uint32_t d = 0; d < rank; d++) {
        dout[d] = out->dims[d];
        da[d] = aligned_dim(a, rank, d);
        db[d] = b ? aligned_dim(b, rank, d) : dout[d];
        if ((da[d] != 1 && da[d] != dout[d]) || (db[d] != 1 && db[d] != dout[d])) return -1;
    }
    /* Merge adjacent dims with the same broadcast pattern; drop size-1 output dims. */
    int nd = 0;
    int64_t mdim[SIM_MAX_DIMS];
    int ma[SIM_MAX_DIMS], mb[SIM_MAX_DIMS];
    for (uint32_t d = 0; d < rank; d++) {
        if (dout[d] == 1) continue;
        int fa = da[d] != 1, fb = db[d] != 1;
        if (nd > 0 && ma[nd - 1] == fa && mb[nd - 1] == fb) {
            mdim[nd - 1] *= dout[d];
        } else {
            mdim[nd] = dout[d];
            ma[nd] = fa;
            mb[nd] = fb;
            nd++;
        }
    }
    if (nd == 0) {
        mdim[0] = 1;
        ma[0] = mb[0] = 1;
        nd = 1;
    }
    int64_t stra = 1, strb = 1;
    for (int d = nd - 1; d >= 0; d--) {
        bc->dims[d] = mdim[d];
        bc->sa[d] = ma[d] ? stra : 0;
        bc->sb[d] = mb[d] ? strb : 0;
        if (ma[d]) stra *= mdim[d];
        if (mb[d]) strb *= mdim[d];
    }
    bc->nd = nd;
    return 0;
}

void sim_free_priv(sim_op *op)
{
    free(op->priv);
    op->priv = NULL;
}

void *sim_scratch_get(sim_kernel_call *call, size_t bytes)
{
    if (!call->scratch || !call->scratch->get) return NULL;
    return call->scratch->get(call->scratch, bytes ? bytes : 64);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

int sim_cpu_has_avx2_fma(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* F16C (binary16 conversions, every AVX2 CPU has it) rounds FLOAT16 outputs in the GEMM epilogue */
    unsigned a = 0, b = 0, c = 0, d = 0;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0; /* clang has no "f16c" builtin name */
    return SIM_CPU_AVX2() && __builtin_cpu_supports("fma") && f16c;
#else
    return 0;
#endif
}

/* 0 = not decided yet; else 1 | the SIM_ISA_* bits. Every thread that finds 0 computes the same value
 * from the CPU and the environment, so it is a constant once stored. */
static int wide_isa_state;

int sim_cpu_wide_isa_supported(void)
{
    int bits = 0;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(SIM_FORCE_GENERIC)
    __builtin_cpu_init();
    if (sim_cpu_has_avx2_fma()) { /* the wide kernels share the AVX2 kernels' FMA and F16C epilogues */
        if (__builtin_cpu_supports("avx512f"))
            bits |= SIM_ISA_AVX512F;
        if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl"))
            bits |= SIM_ISA_AVX512VNNI;
        if ((bits & SIM_ISA_AVX512F) && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq"))
            bits |= SIM_ISA_AVX512BW;
        if ((bits & SIM_ISA_AVX512BW) && __builtin_cpu_supports("avx512vbmi"))
            bits |= SIM_ISA_AVX512VBMI;
    }
#endif
    return bits;
}

int sim_isa_env(void)
{
    const char *isa = getenv("RKNNLINK_SIM_ISA");
    if (isa == NULL) return SIM_ISA_ENV_DEFAULT;
    if (strcmp(isa, "generic") == 0) return SIM_ISA_ENV_GENERIC;
    return strcmp(isa, "avx2") == 0 ? SIM_ISA_ENV_AVX2 : SIM_ISA_ENV_DEFAULT;
}

int sim_cpu_wide_isa(void)
{
    int s = __atomic_load_n(&wide_isa_state, __ATOMIC_RELAXED);
    if (s == 0) {
        s = 1 | (sim_isa_env() != SIM_ISA_ENV_DEFAULT ? 0 : sim_cpu_wide_isa_supported());
        __atomic_store_n(&wide_isa_state, s, __ATOMIC_RELAXED);
    }
    return s & ~1;
}

int sim_call_threads(const sim_kernel_call *call)
{
    return call->par != NULL && call->par->n_threads > 1 ? call->par->n_threads : 1;
}

void sim_parallel(const sim_kernel_call *call, sim_par_fn fn, void *arg, int64_t n)
{
    if (n <= 0)
        return;
    if (call->par != NULL && call->par->n_threads > 1 && n > 1)
        call->par->run(call->par, fn, arg, n);
    else
        fn(arg, 0, n, 0);
}
