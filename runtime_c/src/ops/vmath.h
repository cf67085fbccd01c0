/*
 * Vector math for the float paths of the non-convolution kernels (GELU, Softmax, LayerNorm rows). Each
 * function is written once as scalar C and once as AVX2 with the same IEEE operations in the same order
 * (no FMA contraction, fixed lane order for sums), so both paths, and any thread split, give the same
 * bits; `use_avx2` selects the AVX2 one where the CPU has it (SIM_CPU_AVX2()), the C one is what other
 * CPUs (aarch64 boards) run.
 */
#ifndef RKNNLINK_OPS_VMATH_H
#define RKNNLINK_OPS_VMATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* exp through a Cody-Waite reduction and a degree-5 polynomial (about 2 ulp). The input is clamped to
 * [-87, 88] so 2^n stays a normal float; NaN passes through. */
#define SIM_EXPF_LO (-87.0f)
#define SIM_EXPF_HI 88.0f
#define SIM_EXPF_LOG2E 1.44269504088896341f
#define SIM_EXPF_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer held in the low bits */
#define SIM_EXPF_C1 0.693359375f
#define SIM_EXPF_C2 (-2.12194440e-4f)
#define SIM_EXPF_P0 1.9875691500e-4f
#define SIM_EXPF_P1 1.3981999507e-3f
#define SIM_EXPF_P2 8.3334519073e-3f
#define SIM_EXPF_P3 4.1665795894e-2f
#define SIM_EXPF_P4 1.6666665459e-1f
#define SIM_EXPF_P5 5.0000001201e-1f

static inline float sim_exp_poly(float x)
{
    x = x < SIM_EXPF_LO ? SIM_EXPF_LO : x;
    x = x > SIM_EXPF_HI ? SIM_EXPF_HI : x;
    float t = x * SIM_EXPF_LOG2E + SIM_EXPF_MAGIC;
    float n = t - SIM_EXPF_MAGIC;
    float r = x - n * SIM_EXPF_C1;
    r = r - n * SIM_EXPF_C2;
    float y = SIM_EXPF_P0 * r + SIM_EXPF_P1;
    y = y * r + SIM_EXPF_P2;
    y = y * r + SIM_EXPF_P3;
    y = y * r + SIM_EXPF_P4;
    y = y * r + SIM_EXPF_P5;
    y = y * (r * r) + r + 1.0f;
    uint32_t tb, mb = 0x4b400000u; /* bits of SIM_EXPF_MAGIC */
    memcpy(&tb, &t, sizeof tb);
    uint32_t eb = (tb - mb + 127u) << 23;
    float sc;
    memcpy(&sc, &eb, sizeof sc);
    return y * sc;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SIM_FORCE_GENERIC)
#include <immintrin.h>
#define SIM_HAVE_AVX2_VMATH 1
/* sim_exp_poly on 8 lanes, operation for operation. */
__attribute__((target("avx2"))) static inline __m256 sim_exp8_avx2(__m256 e)
{
    e = _mm256_max_ps(_mm256_set1_ps(SIM_EXPF_LO), e);
    e = _mm256_min_ps(_mm256_set1_ps(SIM_EXPF_HI), e);
    const __m256 magic = _mm256_set1_ps(SIM_EXPF_MAGIC);
    __m256 t = _mm256_add_ps(_mm256_mul_ps(e, _mm256_set1_ps(SIM_EXPF_LOG2E)), magic);
    __m256 nn = _mm256_sub_ps(t, magic);
    __m256 r = _mm256_sub_ps(e, _mm256_mul_ps(nn, _mm256_set1_ps(SIM_EXPF_C1)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(nn, _mm256_set1_ps(SIM_EXPF_C2)));
    __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(SIM_EXPF_P0), r), _mm256_set1_ps(SIM_EXPF_P1));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(SIM_EXPF_P2));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(SIM_EXPF_P3));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(SIM_EXPF_P4));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(SIM_EXPF_P5));
    y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0f));
    __m256i eb = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4b400000 - 127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(eb));
}
/* Four vectors' steps interleaved in program order, so that independent chains overlap: one vector's chain
 * of a GELU or a sigmoid is 20-40 dependent operations, and with the vectors one after the other the
 * core's floating-point scheduler fills with the waiting operations of one chain (about 2x slower on
 * Zen 2). */
#define SIM_VLANES 4
#define SIM_EACH4(stmt)                                                                                             \
    do {                                                                                                       \
        _Pragma("GCC unroll 4") for (int k = 0; k < SIM_VLANES; k++) stmt;                                    \
    } while (0)

/* sim_exp8_avx2 on SIM_VLANES vectors in place. */
__attribute__((target("avx2"))) static inline void sim_exp8x4_avx2(__m256 *e)
{
    const __m256 magic = _mm256_set1_ps(SIM_EXPF_MAGIC);
    __m256 t[SIM_VLANES], nn[SIM_VLANES], r[SIM_VLANES], y[SIM_VLANES];
    SIM_EACH4(e[k] = _mm256_max_ps(_mm256_set1_ps(SIM_EXPF_LO), e[k]));
    SIM_EACH4(e[k] = _mm256_min_ps(_mm256_set1_ps(SIM_EXPF_HI), e[k]));
    SIM_EACH4(t[k] = _mm256_add_ps(_mm256_mul_ps(e[k], _mm256_set1_ps(SIM_EXPF_LOG2E)), magic));
    SIM_EACH4(nn[k] = _mm256_sub_ps(t[k], magic));
    SIM_EACH4(r[k] = _mm256_sub_ps(e[k], _mm256_mul_ps(nn[k], _mm256_set1_ps(SIM_EXPF_C1))));
    SIM_EACH4(r[k] = _mm256_sub_ps(r[k], _mm256_mul_ps(nn[k], _mm256_set1_ps(SIM_EXPF_C2))));
    SIM_EACH4(y[k] = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(SIM_EXPF_P0), r[k]), _mm256_set1_ps(SIM_EXPF_P1)));
    SIM_EACH4(y[k] = _mm256_add_ps(_mm256_mul_ps(y[k], r[k]), _mm256_set1_ps(SIM_EXPF_P2)));
    SIM_EACH4(y[k] = _mm256_add_ps(_mm256_mul_ps(y[k], r[k]), _mm256_set1_ps(SIM_EXPF_P3)));
    SIM_EACH4(y[k] = _mm256_add_ps(_mm256_mul_ps(y[k], r[k]), _mm256_set1_ps(SIM_EXPF_P4)));
    SIM_EACH4(y[k] = _mm256_add_ps(_mm256_mul_ps(y[k], r[k]), _mm256_set1_ps(SIM_EXPF_P5)));
    SIM_EACH4(y[k] = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y[k], _mm256_mul_ps(r[k], r[k])), r[k]), _mm256_set1_ps(1.0f)));
    SIM_EACH4(e[k] = _mm256_mul_ps(y[k], _mm256_castsi256_ps(_mm256_slli_epi32(
                  _mm256_sub_epi32(_mm256_castps_si256(t[k]), _mm256_set1_epi32(0x4b400000 - 127)), 23))));
}


#endif

/* GELU of n floats (y may equal x): erf form x * Phi(x) with erfc from a Chebyshev fit (fractional
 * error below 1.2e-7, no cancellation for negative x), tanh form 0.5 x (1 + tanh(u)) = x / (1 + e^-2u). */
void sim_gelu_array(int use_avx2, const float *x, float *y, size_t n, int tanh_form);

/* Softmax of one contiguous row (y may equal x): max, exp(x - max), sum in 8 lanes combined in a fixed
 * order, then times 1 / sum. */
void sim_softmax_row(int use_avx2, const float *x, float *y, int64_t n);

/* Mean and population variance of a row, accumulated in double in 8 lanes combined in a fixed order. */
void sim_row_moments(int use_avx2, const float *x, int64_t n, double *mean, double *var);
/* LayerNorm of one row: y[i] = (x[i] - m) * inv * scale[i] + bias[i]. */
void sim_norm_row(int use_avx2, const float *x, float *y, int64_t n, float m, float inv, const float *scale,
                  const float *bias);

/* Rows of a matrix times a transposed one: y_e[i] = b[i] (or 0) + sum_j x_e[j] * mt[j][i] for every row
 * e < rows (x [rows][k], mt [k][n], y [rows][n]), each output summed in j order with a multiply then an
 * add (the recurrent h R and input W x products of LSTM/GRU). The AVX2 form keeps blocks of outputs in
 * registers over the whole j loop (weights read once per block, four rows at a time). */
void sim_matvec_rows(int use_avx2, const float *mt, const float *x, const float *b, float *y, int64_t rows, int64_t n,
                     int64_t k);

#endif
