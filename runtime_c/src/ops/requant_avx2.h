/*
 * AVX2 requantisation of 8 accumulators held as exact integer-valued floats: add the int32 bias,
 * scale, clamp (fused Relu/Clip), round half away from zero, add the zero point, saturate, store 8
 * int8. Shared by the float-accumulating int8 paths; x86-64 only.
 */
#ifndef RKNNLINK_OPS_REQUANT_AVX2_H
#define RKNNLINK_OPS_REQUANT_AVX2_H

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <stdint.h>

/* v = acc * mult, rounded half away from zero, + zero point, clamped to [qlo, qhi] (the saturation
 * range, narrowed by a fused Relu/Clip: clamping after rounding equals clamping before, since
 * rounding is monotonic), stored as 8 int8. acc already includes the bias. */
__attribute__((target("avx2,fma"), always_inline)) static inline void sim_requant8f_avx2(__m256 acc, __m256 mult,
                                                                                          __m256 qlo, __m256 qhi,
                                                                                          __m256 zo, int8_t *dst)
{
    /* trunc(v + copysign(0.5, v)): half away from zero. It can differ from the exact rule only for v
     * within one float ulp below a .5 boundary, below the rounding error v = acc * mult already has. */
    const __m256 half = _mm256_set1_ps(0.5f), sign = _mm256_set1_ps(-0.0f);
    __m256 v = _mm256_mul_ps(acc, mult);
    __m256 h = _mm256_or_ps(half, _mm256_and_ps(v, sign));
    __m256 t = _mm256_round_ps(_mm256_add_ps(v, h), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    t = _mm256_min_ps(qhi, _mm256_max_ps(qlo, _mm256_add_ps(t, zo)));
    __m256i q = _mm256_cvttps_epi32(t);
    __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)(void *)dst, _mm_packs_epi16(p16, p16));
}

/* As above with the accumulator as exact integer-valued floats plus an int32 bias. */
__attribute__((target("avx2,fma"), always_inline)) static inline void sim_requant8_avx2(__m256 acc, __m256i bias,
                                                                                         __m256 mult, __m256 qlo,
                                                                                         __m256 qhi, __m256 zo,
                                                                                         int8_t *dst)
{
    __m256 a = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_cvttps_epi32(acc), bias));
    sim_requant8f_avx2(a, mult, qlo, qhi, zo, dst);
}
#endif

#endif
