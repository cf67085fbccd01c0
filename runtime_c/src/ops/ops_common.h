/*
 * Helpers shared by the operator kernels (src/ops/). Internal to the kernels; the core sees only
 * sim_graph.h. Kept small: tensor access, error reporting, activation and quantisation loops,
 * broadcasting geometry.
 */
#ifndef RKNNLINK_OPS_COMMON_H
#define RKNNLINK_OPS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "../sim_graph.h"

#define SIM_OK 0
#define SIM_ERR_FAIL (-1)
#define SIM_ERR_MALLOC (-4)
#define SIM_ERR_INVALID (-6)

#if defined(__GNUC__)
#define SIM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SIM_PRINTF(a, b)
#endif

/* Writes a one-line reason into err (prefixed by the op's name) and returns SIM_ERR_INVALID. */
int sim_fail(char *err, size_t err_len, const sim_op *op, const char *fmt, ...) SIM_PRINTF(4, 5);

/* Tensor of input/output slot i, NULL if absent or out of range. */
const sim_tensor *sim_in_tensor(const sim_graph *g, const sim_op *op, uint32_t i);
const sim_tensor *sim_out_tensor(const sim_graph *g, const sim_op *op, uint32_t i);

/* Run-time views: the tensor of a slot and its float32 data (activation buffer or constant view). */
const sim_tensor *sim_call_in_t(const sim_kernel_call *call, uint32_t i);
const float *sim_call_in_f32(const sim_kernel_call *call, uint32_t i);
/* int8 data of input i: activation buffer or the raw bytes of an INT8 constant; NULL otherwise. */
const int8_t *sim_call_in_i8(const sim_kernel_call *call, uint32_t i);

int sim_same_shape(const sim_tensor *a, const sim_tensor *b);
int sim_is_float_dtype(uint32_t dtype);
/* Rank and dims of t as a string for error messages ("[1,3,224,224]"). */
const char *sim_shape_str(const sim_tensor *t, char *buf, size_t len);

/* Rounds n floats to binary16 and back in place; equal to sim_round_f16 per element, faster. */
void sim_round_f16_array(float *x, size_t n);

/* Applies a fused activation to n floats in place (no-op for SIM_ACT_NONE). */
void sim_act_array(uint32_t act, float p0, float p1, float *x, size_t n);
/* Sigmoid (silu = 0) or SiLU in place with the polynomial exp; AVX2 and C paths give the same bits. */
void sim_sigmoid_array(int use_avx2, float *x, size_t n, int silu);
void sim_op_act(const sim_op *op, float *x, size_t n);

/* Quantisation of arrays: round half away from zero, saturate to int8. */
void sim_quant_array(const float *x, int8_t *q, size_t n, float scale, int32_t zp);
void sim_dequant_array(const int8_t *q, float *x, size_t n, float scale, int32_t zp);
/* Exact round-half-away-from-zero of a float (no libm call, vectorisable). */
static inline float sim_round_away(float v)
{
    if (!(v > -4194304.0f && v < 4194304.0f)) return v; /* already integral, inf or NaN */
    float t = (float)(int32_t)v;
    float f = v - t;
    return t + (float)(f >= 0.5f) - (float)(f <= -0.5f);
}
static inline int8_t sim_sat_i8(float v)
{
    if (!(v >= -128.0f)) return (int8_t)(v != v ? 0 : -128); /* NaN maps to 0 */
    if (v > 127.0f) return 127;
    return (int8_t)(int32_t)v;
}

/* An index carried as a float (run-time Gather indices) as an integer. NaN, infinities and values beyond
 * +-2^62 give INT64_MIN, which every caller's bounds check refuses even after adding the axis length
 * (a plain cast of them is undefined behaviour: a fuzzer found a NaN index). */
static inline int64_t sim_float_index(float f)
{
    if (!(f > -4.6e18f && f < 4.6e18f)) return INT64_MIN;
    return (int64_t)f;
}

/* Scale/zero point of an INT8 activation tensor (per-tensor affine; unquantised gives 1/0). */
float sim_t_scale(const sim_tensor *t);
int32_t sim_t_zp(const sim_tensor *t);
int sim_same_quant(const sim_tensor *a, const sim_tensor *b);
/* Lookup table of the float value of each int8 code (index q + 128). */
void sim_dequant_lut(const sim_tensor *t, float lut[256]);

/* Broadcast geometry of up to 2 inputs against the output, with adjacent dims merged.
 * Element (i_0..i_{nd-1}) of the output reads A at sum(i_d * sa[d]), B at sum(i_d * sb[d]). */
typedef struct sim_bcast {
    int nd;
    int64_t dims[SIM_MAX_DIMS];
    int64_t sa[SIM_MAX_DIMS];
    int64_t sb[SIM_MAX_DIMS];
} sim_bcast;
/* Returns 0 if A and B broadcast to `out` (numpy rules), else -1. */
int sim_bcast_init(sim_bcast *bc, const sim_tensor *out, const sim_tensor *a, const sim_tensor *b);
/* Checks that `out` is exactly the numpy broadcast of the given tensors. */
int sim_bcast_check(const sim_tensor *out, const sim_tensor *const *ins, uint32_t n);

/* Release of kernels whose op->priv is one malloc'd block. */
void sim_free_priv(sim_op *op);

/* Scratch helper: returns NULL when no scratch is available or on OOM. */
void *sim_scratch_get(sim_kernel_call *call, size_t bytes);

/* Threads a kernel may split its work over (1 without a pool). */
int sim_call_threads(const sim_kernel_call *call);
/* Runs fn over [0, n) through the call's pool, or inline when there is none (see sim_par). */
void sim_parallel(const sim_kernel_call *call, sim_par_fn fn, void *arg, int64_t n);

/* Runtime AVX2 check for the vector paths; -DSIM_FORCE_GENERIC builds (tests) take the portable C
 * paths everywhere. */
#if defined(SIM_FORCE_GENERIC) || !defined(__x86_64__) || !defined(__GNUC__)
#define SIM_CPU_AVX2() 0
#else
#define SIM_CPU_AVX2() __builtin_cpu_supports("avx2")
#endif

/* True when the running CPU has AVX2+FMA (x86_64 only; always 0 elsewhere). */
int sim_cpu_has_avx2_fma(void);

/* The wider x86 kernels this process uses, decided once (CPU choice in one place): SIM_ISA_AVX512F for
 * the float GEMM tile (gemm_avx512.c), SIM_ISA_AVX512VNNI for the int8 GEMM's k-pair step (gemm_i8.c).
 * RKNNLINK_SIM_ISA=avx2 (or generic) turns every one off, for A/B timing: the bits are the same either way. */
#define SIM_ISA_AVX512F 2
#define SIM_ISA_AVX512VNNI 4
/* AVX-512 BW + VL + DQ (byte/word lanes and masks: the int8 element-wise rows and activation epilogue), and
 * with VBMI too (the int8 table look-up's byte permutes). */
#define SIM_ISA_AVX512BW 8
#define SIM_ISA_AVX512VBMI 16
/* What the CPU has, whatever RKNNLINK_SIM_ISA says (tests that compare kernels in one process). */
int sim_cpu_wide_isa_supported(void);
int sim_cpu_wide_isa(void);

/* Kernel definitions, one per op type (registry.c lists them). */
extern const sim_op_def sim_def_conv, sim_def_conv_transpose, sim_def_gemm, sim_def_matmul;
extern const sim_op_def sim_def_add, sim_def_sub, sim_def_mul, sim_def_div, sim_def_sum, sim_def_max,
    sim_def_min, sim_def_pow, sim_def_prelu;
extern const sim_op_def sim_def_relu, sim_def_clip, sim_def_leaky_relu, sim_def_sigmoid,
    sim_def_hard_sigmoid, sim_def_hard_swish, sim_def_silu, sim_def_tanh, sim_def_exp, sim_def_elu,
    sim_def_selu, sim_def_neg, sim_def_abs, sim_def_softplus, sim_def_sqrt;
extern const sim_op_def sim_def_softmax, sim_def_log_softmax, sim_def_reduce_mean, sim_def_reduce_max,
    sim_def_reduce_sum, sim_def_batchnorm, sim_def_lrn;
extern const sim_op_def sim_def_maxpool, sim_def_avgpool, sim_def_global_avgpool, sim_def_global_maxpool;
extern const sim_op_def sim_def_concat, sim_def_split, sim_def_slice, sim_def_reshape, sim_def_transpose,
    sim_def_pad, sim_def_resize, sim_def_gather;
extern const sim_op_def sim_def_layer_norm, sim_def_group_norm, sim_def_erf, sim_def_gelu, sim_def_mish,
    sim_def_reciprocal, sim_def_log, sim_def_sin, sim_def_cos, sim_def_not, sim_def_cast;
extern const sim_op_def sim_def_equal, sim_def_greater, sim_def_greater_equal, sim_def_less, sim_def_less_equal,
    sim_def_and, sim_def_or, sim_def_xor, sim_def_where, sim_def_expand, sim_def_tile, sim_def_gather_elements;
extern const sim_op_def sim_def_argmax, sim_def_argmin, sim_def_topk, sim_def_reduce_min, sim_def_reduce_prod,
    sim_def_reduce_l2, sim_def_lstm, sim_def_gru;

#endif
