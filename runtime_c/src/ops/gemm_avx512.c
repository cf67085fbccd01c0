/*
 * AVX-512 float GEMM micro-kernel: the same packed panels as the AVX2 kernel (SIM_NR = 16 columns,
 * one zmm per packed row), but up to four panels at once, a 6 x 64 tile in 24 zmm accumulators.
 * Every C element is still fma(a, b, acc) over k = 0..K-1 from +0 and then gets the same epilogue
 * (+ bias or +0, max(lo, .) then min(hi, .), binary16 rounding), so the output is bit-identical to
 * kernel_avx2 and does not depend on which x86 CPU runs the simulator. Only float epilogues come
 * here; the int8 requantising ones stay on the AVX2 kernel.
 */

#include "gemm_avx512.h"
#include "ops_common.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SIM_FORCE_GENERIC)
#include <immintrin.h>

/* AVX-512F for the tile, with the AVX2 kernel's FMA and F16C (the CPU check lives in ops/common.c). */
int sim_gemm_avx512_supported(void)
{
    return (sim_cpu_wide_isa_supported() & SIM_ISA_AVX512F) != 0;
}

/* The process-wide choice of ops/common.c (RKNNLINK_SIM_ISA=avx2 keeps the AVX2 kernel for A/B runs). */
int sim_gemm_avx512_on(void)
{
    return (sim_cpu_wide_isa() & SIM_ISA_AVX512F) != 0;
}

#define SIM_AVX512_TARGET __attribute__((target("avx512f,fma,f16c")))

/* One MR-row panel of A against NP B panels (panel p at pb + p * pstride, row stride ldb), writing
 * ncols (1 .. NP * 16) columns of mr rows of C. NP is a constant at every call, so the accumulator
 * array lives in registers. */
SIM_AVX512_TARGET __attribute__((always_inline)) static inline void tile(int np, int64_t k, const float *pa,
                                                                       const float *pb, int64_t ldb, int64_t pstride,
                                                                       float *c, int64_t ldc, int mr, int ncols,
                                                                       const float *bias, const sim_gemm_epi *epi)
{
    __m512 acc[SIM_MR][4];
    for (int r = 0; r < SIM_MR; r++)
        for (int p = 0; p < np; p++) {
            int w = ncols - p * SIM_NR;
            __mmask16 mk = w >= SIM_NR ? (__mmask16)0xFFFFu : (__mmask16)((1u << w) - 1u);
            /* acc_in: continue the partial sums of the earlier K chunks (rows past mr start at +0) */
            acc[r][p] = epi->acc_in && r < mr ? _mm512_maskz_loadu_ps(mk, c + r * ldc + p * SIM_NR) : _mm512_setzero_ps();
        }
    for (int64_t kk = 0; kk < k; kk++) {
        __m512 b[4];
        for (int p = 0; p < np; p++) b[p] = _mm512_loadu_ps(pb + p * pstride + kk * ldb);
        const float *a = pa + kk * SIM_MR;
        for (int r = 0; r < SIM_MR; r++) {
            __m512 av = _mm512_set1_ps(a[r]);
            for (int p = 0; p < np; p++) acc[r][p] = _mm512_fmadd_ps(av, b[p], acc[r][p]);
        }
    }
    /* max(lo, v) / min(hi, v) return v when v is NaN, as the AVX2 and scalar epilogues do. */
    __m512 lo = _mm512_set1_ps(epi->lo), hi = _mm512_set1_ps(epi->hi);
    for (int r = 0; r < mr; r++) {
        __m512 bv = _mm512_set1_ps(bias ? bias[r] : 0.0f);
        for (int p = 0; p < np; p++) {
            __m512 v = acc[r][p];
            if (!epi->acc_out) {
                v = _mm512_add_ps(v, bv);
                if (epi->clamp) v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                if (epi->f16) v = _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            }
            int w = ncols - p * SIM_NR;
            float *d = c + r * ldc + p * SIM_NR;
            if (w >= SIM_NR)
                _mm512_storeu_ps(d, v);
            else
                _mm512_mask_storeu_ps(d, (__mmask16)((1u << w) - 1u), v);
        }
    }
}

/* Columns [j, j + ncols) for one row panel, with np = ceil(ncols / 16) panels of B. */
SIM_AVX512_TARGET static void tiles(int64_t k, const float *pa, const float *pb, int64_t ldb, int64_t pstride,
                                    float *c, int64_t ldc, int mr, int ncols, const float *bias,
                                    const sim_gemm_epi *epi)
{
    switch ((ncols + SIM_NR - 1) / SIM_NR) {
    case 4: tile(4, k, pa, pb, ldb, pstride, c, ldc, mr, ncols, bias, epi); break;
    case 3: tile(3, k, pa, pb, ldb, pstride, c, ldc, mr, ncols, bias, epi); break;
    case 2: tile(2, k, pa, pb, ldb, pstride, c, ldc, mr, ncols, bias, epi); break;
    default: tile(1, k, pa, pb, ldb, pstride, c, ldc, mr, ncols, bias, epi); break;
    }
}

/* Columns of the next tile out of `left`: four panels, but never a lone one after them (one panel
 * has 6 accumulators, too few to hide the FMA latency), so 5 panels go as 3 + 2. */
static int group_cols(int64_t left)
{
    int64_t panels = (left + SIM_NR - 1) / SIM_NR;
    int64_t np = panels == 5 ? 3 : panels > 4 ? 4 : panels;
    return (int)(left < np * SIM_NR ? left : np * SIM_NR);
}

void sim_gemm_packed_avx512(const float *pa, const float *pb, int64_t m, int64_t n, int64_t k, float *c,
                            int64_t ldc, const sim_gemm_epi *epi)
{
    for (int64_t i = 0; i < m; i += SIM_MR) {
        int mr = (int)(m - i < SIM_MR ? m - i : SIM_MR);
        const float *bias = epi->bias_row ? epi->bias_row + i : NULL;
        for (int64_t j = 0; j < n;) {
            int w = group_cols(n - j);
            tiles(k, pa + i * k, pb + j * k, SIM_NR, SIM_NR * k, c + i * ldc + j, ldc, mr, w, bias, epi);
            j += w;
        }
    }
}

void sim_gemm_direct_b_avx512(const float *pa, const float *b, int64_t ldb, int64_t m, int64_t n, int64_t k,
                              float *c, int64_t ldc, const sim_gemm_epi *epi, float *tail)
{
    int64_t full = n / SIM_NR * SIM_NR;
    /* column block outer: the K x (up to) 64 slice of B stays in cache while every A panel passes over it */
    for (int64_t j = 0; j < full;) {
        int w = group_cols(full - j);
        for (int64_t i = 0; i < m; i += SIM_MR) {
            int mr = (int)(m - i < SIM_MR ? m - i : SIM_MR);
            const float *bias = epi->bias_row ? epi->bias_row + i : NULL;
            tiles(k, pa + i * k, b + j, ldb, SIM_NR, c + i * ldc + j, ldc, mr, w, bias, epi);
        }
        j += w;
    }
    if (full < n) {
        sim_pack_b(b + full, ldb, 1, k, n - full, tail);
        sim_gemm_packed(1, pa, tail, m, n - full, k, c + full, ldc, epi); /* m == 1 takes the AVX2 gemv there too */
    }
}

#else

int sim_gemm_avx512_supported(void) { return 0; }

int sim_gemm_avx512_on(void) { return 0; }

void sim_gemm_packed_avx512(const float *pa, const float *pb, int64_t m, int64_t n, int64_t k, float *c,
                            int64_t ldc, const sim_gemm_epi *epi)
{
    (void)pa, (void)pb, (void)m, (void)n, (void)k, (void)c, (void)ldc, (void)epi;
}

void sim_gemm_direct_b_avx512(const float *pa, const float *b, int64_t ldb, int64_t m, int64_t n, int64_t k,
                              float *c, int64_t ldc, const sim_gemm_epi *epi, float *tail)
{
    (void)pa, (void)b, (void)ldb, (void)m, (void)n, (void)k, (void)c, (void)ldc, (void)epi, (void)tail;
}

#endif
