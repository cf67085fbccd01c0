/*
 * Numeric helpers shared by the core and the kernels: binary16 rounding (the fp16 datapath of the
 * NPU), int8 quantisation with the NPU's round-half-away-from-zero, and the fused activations.
 * Bit-exact and portable on purpose: no reliance on _Float16 or F16C, so aarch64 and x86 agree.
 */
#include <math.h>
#include <string.h>

#include "ops_common.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t sim_f32_to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u >= 0x7f800000u) { /* inf or NaN: keep NaN quiet and non-zero */
        if (u == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
        return (uint16_t)(sign | 0x7e00u | ((u >> 13) & 0x3ffu));
    }
    if (u >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (u < 0x38800000u) {
        /* Subnormal range: count units of 2^-24 and round to nearest even via the 2^23 trick. */
        float t = bits_f32(u) * 0x1p24f;
        float r = (t + 0x1p23f) - 0x1p23f; /* exact RNE to an integer for t < 2^23 */
        return (uint16_t)(sign | (uint16_t)r);
    }
    uint32_t h = (u - (112u << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | h);
}

float sim_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* Branch-free binary16 rounding on the float bit pattern (vectorisable; equal to the conversion pair
 * below for every input, NaN payloads aside). */
static inline float round_f16_bits(float x)
{
    uint32_t u = f32_bits(x);
    uint32_t s = u & 0x80000000u, a = u ^ s;
    uint32_t nrm = (a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu;
    /* Subnormal halves are multiples of 2^-24, the ulp of 0.5f: adding 0.5 rounds to them. */
    uint32_t sub = f32_bits((bits_f32(a) + 0.5f) - 0.5f);
    /* select with masks (no branches, so loops over arrays vectorise) */
    uint32_t m_sub = 0u - (uint32_t)(a < 0x38800000u);
    uint32_t m_nan = 0u - (uint32_t)(a >= 0x7f800000u);
    uint32_t m_ovf = 0u - (uint32_t)(a >= 0x477ff000u);
    uint32_t big = (a & m_nan) | (0x7f800000u & ~m_nan);
    uint32_t r = (sub & m_sub) | (~m_sub & ((big & m_ovf) | (nrm & ~m_ovf)));
    return bits_f32(r | s);
}

float sim_round_f16(float x)
{
    return round_f16_bits(x);
}

static void round_f16_loop(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = round_f16_bits(x[i]);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static void round_f16_loop_avx2(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = round_f16_bits(x[i]);
}
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SIM_FORCE_GENERIC)
/* The F16C conversion pair: equal to round_f16_bits for all 2^32 inputs (NaNs stay NaN), checked
 * exhaustively; about twice as fast. (clang has no "f16c" name for __builtin_cpu_supports.) */
#define SIM_HAVE_F16C_ROUND 1
__attribute__((target("avx2,f16c"))) static void round_f16_loop_f16c(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    }
    for (; i < n; i++) x[i] = round_f16_bits(x[i]);
}
#endif

void sim_round_f16_array(float *x, size_t n)
{
#ifdef SIM_HAVE_F16C_ROUND
    if (SIM_CPU_AVX2() && __builtin_cpu_supports("f16c")) {
        round_f16_loop_f16c(x, n);
        return;
    }
#endif
#if defined(__x86_64__) && defined(__GNUC__)
    if (SIM_CPU_AVX2()) {
        round_f16_loop_avx2(x, n);
        return;
    }
#endif
    round_f16_loop(x, n);
}

int8_t sim_quant_i8(float x, float scale, int32_t zp)
{
    if (x != x) x = 0.0f; /* NaN quantises to the zero point (real 0) */
    return sim_sat_i8(sim_round_away(x / scale) + (float)zp);
}

static float sigmoidf(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

float sim_apply_act(uint32_t act, float p0, float p1, float x)
{
    switch (act) {
    case SIM_ACT_RELU: return x < 0.0f ? 0.0f : x;
    case SIM_ACT_CLIP: return x < p0 ? p0 : (x > p1 ? p1 : x);
    case SIM_ACT_LEAKY: return x < 0.0f ? x * p0 : x;
    case SIM_ACT_SIGMOID: return sigmoidf(x);
    case SIM_ACT_HARDSWISH: {
        float t = x + 3.0f;
        t = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
        return x * t / 6.0f;
    }
    case SIM_ACT_SILU: return x * sigmoidf(x);
    case SIM_ACT_HARDSIGMOID: {
        float t = p0 * x + p1;
        return t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    }
    case SIM_ACT_TANH: return tanhf(x);
    default: return x;
    }
}
