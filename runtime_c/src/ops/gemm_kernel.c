/*
 * Packed single-precision GEMM. The micro-kernel keeps an MR x NR (6 x 16) tile of C in registers
 * over the whole K loop, so each C element is written once with the bias and clamp applied; this
 * is where a convolutional network spends nearly all of its time.
 */
#include <string.h>

#include "gemm_avx512.h"
#include "gemm_i8.h"
#include "gemm_kernel.h"
#include "requant_avx2.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SIM_HAVE_AVX2_KERNEL 1
#endif

size_t sim_pack_a_size(int64_t m, int64_t k)
{
    return (size_t)(sim_round_up(m, SIM_MR) * k);
}

size_t sim_pack_b_size(int64_t k, int64_t n)
{
    return (size_t)(sim_round_up(n, SIM_NR) * k);
}

void sim_pack_a(const float *src, int64_t rs, int64_t cs, int64_t m, int64_t k, float *dst)
{
    for (int64_t p = 0; p < m; p += SIM_MR) {
        float *panel = dst + p * k;
        for (int64_t kk = 0; kk < k; kk++)
            for (int64_t r = 0; r < SIM_MR; r++)
                panel[kk * SIM_MR + r] = p + r < m ? src[(p + r) * rs + kk * cs] : 0.0f;
    }
}

void sim_pack_b(const float *src, int64_t rs, int64_t cs, int64_t k, int64_t n, float *dst)
{
    for (int64_t q = 0; q < n; q += SIM_NR) {
        float *panel = dst + q * k;
        int64_t w = n - q < SIM_NR ? n - q : SIM_NR;
        for (int64_t kk = 0; kk < k; kk++) {
            const float *s = src + kk * rs + q * cs;
            float *d = panel + kk * SIM_NR;
            if (cs == 1) {
                memcpy(d, s, (size_t)w * sizeof(float));
            } else {
                for (int64_t j = 0; j < w; j++) d[j] = s[j * cs];
            }
            for (int64_t j = w; j < SIM_NR; j++) d[j] = 0.0f;
        }
    }
}

void sim_pack_b_row(const float *row, int64_t k, int64_t kdim, int64_t n, float *dst)
{
    int64_t q = 0;
    for (; q + SIM_NR <= n; q += SIM_NR) memcpy(dst + q * kdim + k * SIM_NR, row + q, SIM_NR * sizeof(float));
    if (q < n) memcpy(dst + q * kdim + k * SIM_NR, row + q, (size_t)(n - q) * sizeof(float));
}

void sim_pack_b_pad(int64_t kdim, int64_t n, float *dst)
{
    int64_t q = n / SIM_NR * SIM_NR, w = n - q;
    if (w == 0) return;
    float *panel = dst + q * kdim;
    for (int64_t kk = 0; kk < kdim; kk++) memset(panel + kk * SIM_NR + w, 0, (size_t)(SIM_NR - w) * sizeof(float));
}

int64_t sim_gemm_block_cols(int64_t k)
{
    int64_t cols = (192 * 1024 / 4) / (k > 0 ? k : 1);
    cols = cols / SIM_NR * SIM_NR;
    if (cols < SIM_NR) cols = SIM_NR;
    if (cols > 1024) cols = 1024;
    return cols;
}

/* Writes a computed tile (row stride NR) with bias and clamp; handles partial tiles. */
static void store_tile(const float *t, float *c, int64_t ldc, int mr, int nr, const float *bias,
                       const sim_gemm_epi *epi, int64_t i, int64_t j)
{
    if (epi->q) {
        const sim_i8_epi *q = epi->q;
        int32_t b[SIM_MR];
        for (int r = 0; r < mr; r++) {
            int64_t ch = epi->ch0 + i + r;
            b[r] = epi->bias_row ? (int32_t)epi->bias_row[i + r] : (q->bias ? q->bias[ch] : 0);
        }
        if (q->lut) {
            sim_i8_requant_act_tile(SIM_CPU_AVX2(), q, t, NULL, SIM_NR, mr, nr, epi->ch0 + i, b,
                                    epi->c8 + i * epi->ldc8 + j, epi->ldc8);
            return;
        }
        for (int r = 0; r < mr; r++)
            for (int e = 0; e < nr; e++)
                epi->c8[(i + r) * epi->ldc8 + j + e] = sim_i8_requant(q, (int32_t)t[r * SIM_NR + e] + b[r], epi->ch0 + i + r);
        return;
    }
    if (epi->acc_out) {
        for (int r = 0; r < mr; r++) memcpy(c + r * ldc, t + r * SIM_NR, (size_t)nr * sizeof(float));
        return;
    }
    for (int r = 0; r < mr; r++) {
        float bv = bias ? bias[r] : 0.0f;
        for (int j = 0; j < nr; j++) {
            float v = t[r * SIM_NR + j] + bv;
            if (epi->clamp) {
                v = v < epi->lo ? epi->lo : v;
                v = v > epi->hi ? epi->hi : v;
            }
            c[r * ldc + j] = epi->f16 ? sim_round_f16(v) : v;
        }
    }
}

/* The tile's partial sums from an earlier K chunk (acc_in): rows/columns past mr/nr start at +0. */
static void load_tile(float *t, const float *c, int64_t ldc, int mr, int nr)
{
    memset(t, 0, SIM_MR * SIM_NR * sizeof(float));
    for (int r = 0; r < mr; r++) memcpy(t + r * SIM_NR, c + r * ldc, (size_t)nr * sizeof(float));
}

static void kernel_c(int64_t k, const float *pa, const float *pb, int64_t ldb, float *c, int64_t ldc, int mr, int nr,
                     const float *bias, const sim_gemm_epi *epi, int64_t i, int64_t j)
{
    float acc[SIM_MR * SIM_NR];
    if (epi->acc_in)
        load_tile(acc, c, ldc, mr, nr);
    else
        memset(acc, 0, sizeof acc);
    for (int64_t kk = 0; kk < k; kk++) {
        const float *a = pa + kk * SIM_MR, *b = pb + kk * ldb;
        for (int r = 0; r < SIM_MR; r++) {
            float av = a[r];
            for (int j = 0; j < SIM_NR; j++) acc[r * SIM_NR + j] += av * b[j];
        }
    }
    store_tile(acc, c, ldc, mr, nr, bias, epi, i, j);
}

#ifdef SIM_HAVE_AVX2_KERNEL
#define FMA_ROW(i)                                                                                           \
    do {                                                                                                     \
        __m256 av = _mm256_broadcast_ss(pa + (i));                                                           \
        c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);                                                          \
        c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);                                                          \
    } while (0)

#define STORE_ROW(i)                                                                                         \
    do {                                                                                                     \
        __m256 bv = _mm256_set1_ps(bias ? bias[i] : 0.0f);                                                   \
        __m256 v0 = _mm256_add_ps(c##i##0, bv), v1 = _mm256_add_ps(c##i##1, bv);                             \
        if (epi->clamp) {                                                                                    \
            v0 = _mm256_min_ps(hi, _mm256_max_ps(lo, v0));                                                   \
            v1 = _mm256_min_ps(hi, _mm256_max_ps(lo, v1));                                                   \
        }                                                                                                    \
        if (epi->f16) {                                                                                      \
            v0 = _mm256_cvtph_ps(_mm256_cvtps_ph(v0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));          \
            v1 = _mm256_cvtph_ps(_mm256_cvtps_ph(v1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));          \
        }                                                                                                    \
        _mm256_storeu_ps(c + (i) * ldc, v0);                                                                 \
        _mm256_storeu_ps(c + (i) * ldc + 8, v1);                                                             \
    } while (0)

#define SPILL_ROW(i)                                                                                         \
    do {                                                                                                     \
        _mm256_storeu_ps(t + (i) * SIM_NR, c##i##0);                                                         \
        _mm256_storeu_ps(t + (i) * SIM_NR + 8, c##i##1);                                                     \
    } while (0)

#define LOAD_ROW(i)                                                                                          \
    do {                                                                                                     \
        c##i##0 = _mm256_loadu_ps(t + (i) * SIM_NR);                                                         \
        c##i##1 = _mm256_loadu_ps(t + (i) * SIM_NR + 8);                                                     \
    } while (0)

#define REQ_ROW(r)                                                                                           \
    do {                                                                                                     \
        int64_t ch = epi->ch0 + i + (r);                                                                     \
        __m256 mv = _mm256_set1_ps(q->mult[ch]);                                                             \
        int8_t *d = epi->c8 + (i + (r)) * epi->ldc8 + j;                                                     \
        if (epi->bias_row) {                                                                                 \
            __m256 bf = _mm256_set1_ps(epi->bias_row[i + (r)]);                                              \
            sim_requant8f_avx2(_mm256_add_ps(c##r##0, bf), mv, lo, hi, zo, d);                               \
            sim_requant8f_avx2(_mm256_add_ps(c##r##1, bf), mv, lo, hi, zo, d + 8);                           \
        } else {                                                                                             \
            __m256i bv = _mm256_set1_epi32(q->bias ? q->bias[ch] : 0);                                       \
            sim_requant8_avx2(c##r##0, bv, mv, lo, hi, zo, d);                                               \
            sim_requant8_avx2(c##r##1, bv, mv, lo, hi, zo, d + 8);                                           \
        }                                                                                                    \
    } while (0)

__attribute__((target("avx2,fma,f16c"))) static void kernel_avx2(int64_t k, const float *pa, const float *pb, int64_t ldb,
                                                            float *c, int64_t ldc, int mr, int nr, const float *bias,
                                                            const sim_gemm_epi *epi, int64_t i, int64_t j)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    if (epi->acc_in) {
        float t[SIM_MR * SIM_NR];
        load_tile(t, c, ldc, mr, nr);
        LOAD_ROW(0);
        LOAD_ROW(1);
        LOAD_ROW(2);
        LOAD_ROW(3);
        LOAD_ROW(4);
        LOAD_ROW(5);
    }
    for (int64_t kk = 0; kk < k; kk++) {
        __m256 b0 = _mm256_loadu_ps(pb), b1 = _mm256_loadu_ps(pb + 8);
        FMA_ROW(0);
        FMA_ROW(1);
        FMA_ROW(2);
        FMA_ROW(3);
        FMA_ROW(4);
        FMA_ROW(5);
        pa += SIM_MR;
        pb += ldb;
    }
    const sim_i8_epi *q = epi->q;
    if (q && nr == SIM_NR && (q->act == SIM_ACT_NONE || q->clamp)) {
        __m256 lo = _mm256_set1_ps(q->qlo), hi = _mm256_set1_ps(q->qhi), zo = _mm256_set1_ps((float)q->zo);
        REQ_ROW(0);
        if (mr > 1) REQ_ROW(1);
        if (mr > 2) REQ_ROW(2);
        if (mr > 3) REQ_ROW(3);
        if (mr > 4) REQ_ROW(4);
        if (mr > 5) REQ_ROW(5);
        return;
    }
    if (!q && nr == SIM_NR && !epi->acc_out) {
        /* max(lo, v) / min(hi, v) return v when v is NaN, matching the scalar epilogue. */
        __m256 lo = _mm256_set1_ps(epi->lo), hi = _mm256_set1_ps(epi->hi);
        STORE_ROW(0);
        if (mr > 1) STORE_ROW(1);
        if (mr > 2) STORE_ROW(2);
        if (mr > 3) STORE_ROW(3);
        if (mr > 4) STORE_ROW(4);
        if (mr > 5) STORE_ROW(5);
        return;
    }
    float t[SIM_MR * SIM_NR];
    SPILL_ROW(0);
    SPILL_ROW(1);
    SPILL_ROW(2);
    SPILL_ROW(3);
    SPILL_ROW(4);
    SPILL_ROW(5);
    store_tile(t, c, ldc, mr, nr, bias, epi, i, j);
}
#endif

#ifdef SIM_HAVE_AVX2_KERNEL
/* One row of A against every B panel (matrix-vector, e.g. a classifier with batch 1): four
 * independent accumulator pairs keep the FMA pipes busy while B streams from memory. */
__attribute__((target("avx2,fma"))) static void gemv_avx2(const float *pa, const float *pb, int64_t n, int64_t k,
                                                          float *c, const sim_gemm_epi *epi)
{
    float bias = epi->bias_row ? epi->bias_row[0] : 0.0f;
    for (int64_t j = 0; j < n; j += SIM_NR) {
        const float *b = pb + j * k;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, t0 = s0, t1 = s0, u0 = s0, u1 = s0, v0 = s0, v1 = s0;
        int64_t kk = 0;
        for (; kk + 4 <= k; kk += 4) {
            __m256 a0 = _mm256_broadcast_ss(pa + kk * SIM_MR), a1 = _mm256_broadcast_ss(pa + (kk + 1) * SIM_MR);
            __m256 a2 = _mm256_broadcast_ss(pa + (kk + 2) * SIM_MR), a3 = _mm256_broadcast_ss(pa + (kk + 3) * SIM_MR);
            const float *bb = b + kk * SIM_NR;
            s0 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(bb), s0);
            s1 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(bb + 8), s1);
            t0 = _mm256_fmadd_ps(a1, _mm256_loadu_ps(bb + 16), t0);
            t1 = _mm256_fmadd_ps(a1, _mm256_loadu_ps(bb + 24), t1);
            u0 = _mm256_fmadd_ps(a2, _mm256_loadu_ps(bb + 32), u0);
            u1 = _mm256_fmadd_ps(a2, _mm256_loadu_ps(bb + 40), u1);
            v0 = _mm256_fmadd_ps(a3, _mm256_loadu_ps(bb + 48), v0);
            v1 = _mm256_fmadd_ps(a3, _mm256_loadu_ps(bb + 56), v1);
        }
        for (; kk < k; kk++) {
            __m256 a0 = _mm256_broadcast_ss(pa + kk * SIM_MR);
            s0 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + kk * SIM_NR), s0);
            s1 = _mm256_fmadd_ps(a0, _mm256_loadu_ps(b + kk * SIM_NR + 8), s1);
        }
        float t[SIM_MR * SIM_NR];
        _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, t0), _mm256_add_ps(u0, v0)));
        _mm256_storeu_ps(t + 8, _mm256_add_ps(_mm256_add_ps(s1, t1), _mm256_add_ps(u1, v1)));
        int nr = (int)(n - j < SIM_NR ? n - j : SIM_NR);
        store_tile(t, c + j, 0, 1, nr, epi->bias_row ? &bias : NULL, epi, 0, j);
    }
}
#endif

void sim_gemm_packed(int use_avx2, const float *pa, const float *pb, int64_t m, int64_t n, int64_t k,
                     float *c, int64_t ldc, const sim_gemm_epi *epi)
{
#ifdef SIM_HAVE_AVX2_KERNEL
    if (use_avx2 && m == 1 && c && !epi->q && !epi->acc_in && !epi->acc_out) {
        gemv_avx2(pa, pb, n, k, c, epi);
        return;
    }
    if (use_avx2 > 0 && c && !epi->q && sim_gemm_avx512_on()) {
        sim_gemm_packed_avx512(pa, pb, m, n, k, c, ldc, epi);
        return;
    }
#endif
    for (int64_t i = 0; i < m; i += SIM_MR) {
        int mr = (int)(m - i < SIM_MR ? m - i : SIM_MR);
        const float *bias = epi->bias_row ? epi->bias_row + i : NULL;
        const float *a = pa + i * k;
        for (int64_t j = 0; j < n; j += SIM_NR) {
            int nr = (int)(n - j < SIM_NR ? n - j : SIM_NR);
#ifdef SIM_HAVE_AVX2_KERNEL
            if (use_avx2) {
                kernel_avx2(k, a, pb + j * k, SIM_NR, c ? c + i * ldc + j : NULL, ldc, mr, nr, bias, epi, i, j);
                continue;
            }
#endif
            (void)use_avx2;
            kernel_c(k, a, pb + j * k, SIM_NR, c ? c + i * ldc + j : NULL, ldc, mr, nr, bias, epi, i, j);
        }
    }
}

void sim_gemm_direct_b(int use_avx2, const float *pa, const float *b, int64_t ldb, int64_t m, int64_t n, int64_t k,
                       float *c, int64_t ldc, const sim_gemm_epi *epi, float *tail)
{
#ifdef SIM_HAVE_AVX2_KERNEL
    if (use_avx2 > 0 && c && !epi->q && sim_gemm_avx512_on()) {
        sim_gemm_direct_b_avx512(pa, b, ldb, m, n, k, c, ldc, epi, tail);
        return;
    }
#endif
    int64_t full = n / SIM_NR * SIM_NR;
    /* column tile outer: the K x 16 slice of B stays in L1 while every A panel passes over it */
    for (int64_t j = 0; j < full; j += SIM_NR)
        for (int64_t i = 0; i < m; i += SIM_MR) {
            int mr = (int)(m - i < SIM_MR ? m - i : SIM_MR);
            const float *bias = epi->bias_row ? epi->bias_row + i : NULL;
#ifdef SIM_HAVE_AVX2_KERNEL
            if (use_avx2) {
                kernel_avx2(k, pa + i * k, b + j, ldb, c ? c + i * ldc + j : NULL, ldc, mr, SIM_NR, bias, epi, i, j);
                continue;
            }
#endif
            kernel_c(k, pa + i * k, b + j, ldb, c ? c + i * ldc + j : NULL, ldc, mr, SIM_NR, bias, epi, i, j);
        }
    if (full < n) {
        sim_pack_b(b + full, ldb, 1, k, n - full, tail);
        sim_gemm_epi te = *epi;
        if (te.c8) te.c8 += full;
        sim_gemm_packed(use_avx2, pa, tail, m, n - full, k, c ? c + full : NULL, ldc, &te);
    }
}
