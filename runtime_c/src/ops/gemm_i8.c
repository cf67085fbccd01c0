/*
 * Int8 GEMM kernels (see gemm_i8.h). The AVX2 kernel keeps a 6 x 16 int32 tile in 12 registers and
 * requantises full tiles with vector code; a portable C kernel covers other CPUs and edge tiles.
 */
#include <string.h>

#include "gemm_i8.h"
#include "ops_common.h"
#include "requant_avx2.h"
#include "vmath.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SIM_HAVE_AVX2_I8 1
#endif

static int64_t kpairs(int64_t k) { return (k + 1) / 2; }

size_t sim_pack_a16_size(int64_t m, int64_t k)
{
    return (size_t)(sim_round_up(m, SIM_MR) * kpairs(k) * 2);
}

size_t sim_pack_b16_size(int64_t k, int64_t n)
{
    return (size_t)(sim_round_up(n, SIM_NR) * kpairs(k) * 2);
}

/* Panel layout A: [kp][row 0..5][2]; B: [kp][col 0..15][2]. */
void sim_pack_a16(const int16_t *src, int64_t rs, int64_t cs, int64_t m, int64_t k, int16_t *dst)
{
    int64_t kp = kpairs(k);
    for (int64_t p = 0; p < m; p += SIM_MR) {
        int16_t *panel = dst + p * kp * 2;
        for (int64_t q = 0; q < kp; q++)
            for (int64_t r = 0; r < SIM_MR; r++)
                for (int64_t e = 0; e < 2; e++) {
                    int64_t kk = 2 * q + e;
                    panel[(q * SIM_MR + r) * 2 + e] = (p + r < m && kk < k) ? src[(p + r) * rs + kk * cs] : 0;
                }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* Two rows of 16 int8 -> 16 interleaved int16 pairs (k, k+1) minus zp. */
__attribute__((target("avx2,fma"))) static void pack_pair16_avx2(const int8_t *r0, const int8_t *r1, int32_t zp,
                                                                 int16_t *d)
{
    __m256i z = _mm256_set1_epi16((int16_t)zp);
    __m256i a = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)r0)), z);
    __m256i b = r1 ? _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)r1)), z)
                   : _mm256_setzero_si256();
    __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
    /* unpack works per 128-bit lane: lo = cols 0-3 | 8-11, hi = 4-7 | 12-15 */
    _mm256_storeu_si256((__m256i *)(void *)d, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(void *)(d + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
}

__attribute__((target("avx2,fma"))) static void pack_b16_i8_unit_avx2(const int8_t *src, int64_t rs, int64_t k,
                                                                      int64_t n, int32_t zp, int16_t *dst)
{
    int64_t kp = kpairs(k), full = n / SIM_NR * SIM_NR;
    for (int64_t q0 = 0; q0 < full; q0 += SIM_NR) {
        int16_t *panel = dst + q0 * kp * 2;
        for (int64_t q = 0; q < kp; q++) {
            const int8_t *r0 = src + 2 * q * rs + q0;
            pack_pair16_avx2(r0, 2 * q + 1 < k ? r0 + rs : NULL, zp, panel + q * SIM_NR * 2);
        }
    }
}
#endif

void sim_pack_b16_i8(const int8_t *src, int64_t rs, int64_t cs, int64_t k, int64_t n, int32_t zp, int16_t *dst)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (cs == 1 && n >= SIM_NR && SIM_CPU_AVX2()) {
        int64_t full = n / SIM_NR * SIM_NR;
        pack_b16_i8_unit_avx2(src, rs, k, full, zp, dst);
        if (full == n) return;
        src += full;
        dst += full * kpairs(k) * 2;
        n -= full;
    }
#endif

    int64_t kp = kpairs(k);
    for (int64_t q0 = 0; q0 < n; q0 += SIM_NR) {
        int16_t *panel = dst + q0 * kp * 2;
        int64_t w = n - q0 < SIM_NR ? n - q0 : SIM_NR;
        for (int64_t q = 0; q < kp; q++) {
            int16_t *d = panel + q * SIM_NR * 2;
            for (int64_t e = 0; e < 2; e++) {
                int64_t kk = 2 * q + e;
                if (kk >= k) {
                    for (int64_t j = 0; j < SIM_NR; j++) d[j * 2 + e] = 0;
                    continue;
                }
                const int8_t *s = src + kk * rs + q0 * cs;
                if (cs == 1)
                    for (int64_t j = 0; j < w; j++) d[j * 2 + e] = (int16_t)(s[j] - zp);
                else
                    for (int64_t j = 0; j < w; j++) d[j * 2 + e] = (int16_t)(s[j * cs] - zp);
                for (int64_t j = w; j < SIM_NR; j++) d[j * 2 + e] = 0;
            }
        }
    }
}

void sim_pack_b16(const int16_t *src, int64_t rs, int64_t cs, int64_t k, int64_t n, int16_t *dst)
{
    int64_t kp = kpairs(k);
    for (int64_t q0 = 0; q0 < n; q0 += SIM_NR) {
        int16_t *panel = dst + q0 * kp * 2;
        for (int64_t q = 0; q < kp; q++)
            for (int64_t j = 0; j < SIM_NR; j++)
                for (int64_t e = 0; e < 2; e++) {
                    int64_t kk = 2 * q + e;
                    panel[(q * SIM_NR + j) * 2 + e] = (kk < k && q0 + j < n) ? src[kk * rs + (q0 + j) * cs] : 0;
                }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* 16 columns of two int16 rows -> 16 interleaved (k, k+1) pairs. */
__attribute__((target("avx2,fma"))) static int64_t pack_b16_pair_avx2(const int16_t *r0, const int16_t *r1, int64_t q,
                                                                      int64_t kp, int64_t n, int16_t *dst)
{
    int64_t q0 = 0;
    for (; q0 + SIM_NR <= n; q0 += SIM_NR) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(r0 + q0));
        __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(r1 + q0));
        __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
        int16_t *d = dst + q0 * kp * 2 + q * SIM_NR * 2;
        _mm256_storeu_si256((__m256i *)(void *)d, _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(void *)(d + 16), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
    return q0;
}
#endif

void sim_pack_b16_pair(const int16_t *r0, const int16_t *r1, int64_t q, int64_t kdim, int64_t n, int16_t *dst)
{
    int64_t kp = kpairs(kdim), q0 = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (SIM_CPU_AVX2()) q0 = pack_b16_pair_avx2(r0, r1, q, kp, n, dst);
#endif
    for (; q0 < n; q0 += SIM_NR) {
        int16_t *d = dst + q0 * kp * 2 + q * SIM_NR * 2;
        int64_t w = n - q0 < SIM_NR ? n - q0 : SIM_NR;
        for (int64_t j = 0; j < w; j++) {
            d[j * 2] = r0[q0 + j];
            d[j * 2 + 1] = r1[q0 + j];
        }
    }
}

void sim_pack_b16_pad(int64_t kdim, int64_t n, int16_t *dst)
{
    int64_t kp = kpairs(kdim);
    int64_t last = n / SIM_NR * SIM_NR, w = n - last;
    if (w > 0) {
        int16_t *panel = dst + last * kp * 2;
        for (int64_t q = 0; q < kp; q++) memset(panel + (q * SIM_NR + w) * 2, 0, (size_t)(SIM_NR - w) * 4);
    }
    if (kdim % 2) {
        for (int64_t q0 = 0; q0 < n; q0 += SIM_NR) {
            int16_t *d = dst + q0 * kp * 2 + (kp - 1) * SIM_NR * 2 + 1;
            for (int64_t j = 0; j < SIM_NR; j++) d[j * 2] = 0;
        }
    }
}

void sim_i8_epi_act(sim_i8_epi *epi, const sim_op *op, float so, int32_t zo)
{
    epi->so = so;
    epi->zo = zo;
    epi->act = op->act;
    epi->p0 = op->act_p0;
    epi->p1 = op->act_p1;
    epi->clamp = 0;
    epi->lo = -__builtin_inff();
    epi->hi = __builtin_inff();
    if (op->act == SIM_ACT_RELU) {
        epi->clamp = 1;
        epi->lo = 0.0f;
    } else if (op->act == SIM_ACT_CLIP) {
        epi->clamp = 1;
        epi->lo = op->act_p0 / so;
        epi->hi = op->act_p1 / so;
    }
    sim_i8_epi_bounds(epi, &epi->qlo, &epi->qhi);
}

int sim_i8_epi_lut(sim_i8_epi *epi, sim_act_lut *lut)
{
    memset(lut, 0, sizeof *lut);
    epi->lut = NULL;
    if (epi->act == SIM_ACT_NONE || epi->clamp) return 0;
    int rc = sim_act_lut_build(lut, epi->act, epi->p0, epi->p1, epi->so, epi->zo);
    if (rc == 0 && lut->n) epi->lut = lut;
    return rc;
}

void sim_i8_epi_bounds(const sim_i8_epi *epi, float *qlo, float *qhi)
{
    float lo = -128.0f, hi = 127.0f;
    if (epi->clamp) {
        float l = epi->lo > -1e9f ? sim_round_away(epi->lo) + (float)epi->zo : -1e9f;
        float h = epi->hi < 1e9f ? sim_round_away(epi->hi) + (float)epi->zo : 1e9f;
        lo = l > lo ? l : lo;
        hi = h < hi ? h : hi;
    }
    *qlo = lo;
    *qhi = hi < lo ? lo : hi;
}

int8_t sim_i8_requant(const sim_i8_epi *epi, int32_t acc, int64_t ch)
{
    float v;
    if (epi->act != SIM_ACT_NONE && !epi->clamp) {
        float real = (float)acc * epi->rscale[ch];
        if (epi->lut) {
            int32_t c = sim_act_lut_get(epi->lut, real);
            if (c != SIM_ACT_LUT_DIRECT) return (int8_t)c;
        }
        v = sim_apply_act(epi->act, epi->p0, epi->p1, real) / epi->so;
    } else {
        v = (float)acc * epi->mult[ch];
        if (epi->clamp) {
            v = v < epi->lo ? epi->lo : v;
            v = v > epi->hi ? epi->hi : v;
        }
    }
    return sim_sat_i8(sim_round_away(v) + (float)epi->zo);
}

#ifdef SIM_HAVE_AVX2_I8
/* Bound on |v - v_direct| / |v| for trans32_avx2's SiLU, Sigmoid and Tanh (v: the value before rounding,
 * in codes). The direct value has at most 3 x 2^-23 of error (expf or tanhf, then three roundings), the
 * vector one at most 6 (exp8_fma's 3, which it meets with room, a division, two roundings): 9 x 2^-23 is
 * 1.1e-6, the bound is over three times that. Tanh's 1 - e cancels near 0, so its error also has an
 * absolute part, below 1e-6 in tanh units (TRANS_ABS_MARGIN / so in codes). test_act_trans.c checks the
 * codes against the direct ones around every switch. */
#define TRANS_REL_MARGIN 4e-6f
#define TRANS_ABS_MARGIN 4e-6f
/* |real| beyond which trans32_avx2 leaves a lane to sim_i8_requant (exp8_fma does not clamp). */
#define TRANS_MAX_REAL 80.0f

/* The loop-invariant vectors of the AVX2 epilogues below, set once per call (the int8 stores would
 * otherwise make the compiler reload every field of epi and its table after each store). */
typedef struct act_k {
    __m256 lo, inv, n, negmax, max;  /* table window (lut8) */
    __m256i below, above;
    const long long *cells;
    __m256 so, p0, p1, zo;           /* output scale and zero point, HardSigmoid's alpha and beta */
    __m256 rdiv;                     /* 1 / (6 so) for HardSwish, 1 / so for HardSigmoid (hard8_avx2) */
    __m256 rso, tabs;                /* 1 / so and Tanh's absolute margin in codes (trans32_avx2) */
    __m256i zoi;                     /* the zero point as int32 (code8_far_avx2) */
    int hard_mul;                    /* hard_mul_ok */
} act_k;

/* Whether hard8_avx2 may multiply instead of divide: an output scale where a value that underflowed
 * stays far below half a code. */
static int hard_mul_ok(const sim_i8_epi *epi)
{
    return epi->so >= 1e-6f && epi->so <= 1e30f;
}

__attribute__((target("avx2"), always_inline)) static inline void act_k_init(const sim_i8_epi *epi, act_k *k)
{
    const sim_act_lut *t = epi->lut;
    if (t) {
        k->lo = _mm256_set1_ps(t->lo);
        k->inv = _mm256_set1_ps(t->inv);
        k->n = _mm256_set1_ps((float)t->n);
        k->below = _mm256_set1_epi32(t->below);
        k->above = _mm256_set1_epi32(t->above);
        k->cells = (const long long *)(const void *)t->cell;
    } else {
        k->lo = k->inv = k->n = _mm256_setzero_ps();
        k->below = k->above = _mm256_setzero_si256();
        k->cells = NULL;
    }
    k->negmax = _mm256_set1_ps(-FLT_MAX);
    k->max = _mm256_set1_ps(FLT_MAX);
    k->so = _mm256_set1_ps(epi->so);
    k->p0 = _mm256_set1_ps(epi->p0);
    k->p1 = _mm256_set1_ps(epi->p1);
    k->zo = _mm256_set1_ps((float)epi->zo);
    k->hard_mul = hard_mul_ok(epi);
    k->rso = _mm256_set1_ps(1.0f / epi->so);
    k->zoi = _mm256_set1_epi32(epi->zo);
    k->tabs = _mm256_set1_ps(TRANS_ABS_MARGIN / epi->so);
    k->rdiv = _mm256_set1_ps(k->hard_mul ? 1.0f / (epi->act == SIM_ACT_HARDSWISH ? 6.0f * epi->so : epi->so) : 0.0f);
}

/* Lanes l of mask m redone by the scalar rule: dst[l] = sim_i8_requant(acc[l]) of channel ch + l * step. */
__attribute__((target("avx2"))) static void redo8(const sim_i8_epi *epi, int m, __m256i acc, int64_t ch, int step,
                                                  int8_t *dst)
{
    int32_t a[8];
    _mm256_storeu_si256((__m256i *)(void *)a, acc);
    for (int l = 0; l < 8; l++)
        if (m >> l & 1) dst[l] = sim_i8_requant(epi, a[l], ch + l * step);
}

/* 8 accumulators (bias included) of channel ch through the activation table and its tail codes; the
 * lanes the table leaves to the direct evaluation (and NaN or inf ones) go through sim_i8_requant,
 * so the codes equal the scalar ones. */
__attribute__((target("avx2"), always_inline)) static inline void lut8_avx2(const sim_i8_epi *epi, const act_k *k,
                                                                         __m256i acc, __m256 rs, int64_t ch,
                                                                         int step, int8_t *dst)
{
    __m256 real = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), rs);
    __m256 f = _mm256_mul_ps(_mm256_sub_ps(real, k->lo), k->inv);
    __m256 ok = _mm256_and_ps(_mm256_cmp_ps(f, _mm256_setzero_ps(), _CMP_GE_OQ), _mm256_cmp_ps(f, k->n, _CMP_LT_OQ));
    __m256i idx = _mm256_and_si256(_mm256_cvttps_epi32(f), _mm256_castps_si256(ok));
    /* two 4-lane gathers of {thr, pair} cells, split into 8 thresholds and 8 pairs in lane order */
    __m256 g0 = _mm256_castsi256_ps(_mm256_i32gather_epi64(k->cells, _mm256_castsi256_si128(idx), 8));
    __m256 g1 = _mm256_castsi256_ps(_mm256_i32gather_epi64(k->cells, _mm256_extracti128_si256(idx, 1), 8));
    __m256 thr = _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(g0, g1, _MM_SHUFFLE(2, 0, 2, 0))), 0xD8));
    __m256i pair = _mm256_castpd_si256(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(g0, g1, _MM_SHUFFLE(3, 1, 3, 1))), 0xD8));
    __m256i hi = _mm256_srai_epi32(pair, 16), lo = _mm256_srai_epi32(_mm256_slli_epi32(pair, 16), 16);
    __m256i code = _mm256_blendv_epi8(lo, hi, _mm256_castps_si256(_mm256_cmp_ps(real, thr, _CMP_GE_OQ)));
    /* out of the window: the tail codes for finite reals (as sim_act_lut_get), NaN and inf direct;
     * skipped when all 8 lanes are inside it (the usual case: every ok lane keeps its table code) */
    const __m256i direct = _mm256_set1_epi32(SIM_ACT_LUT_DIRECT);
    if (_mm256_movemask_ps(ok) != 0xff) {
        __m256 below = _mm256_and_ps(_mm256_cmp_ps(f, _mm256_setzero_ps(), _CMP_LT_OQ),
                                     _mm256_cmp_ps(real, k->negmax, _CMP_GE_OQ));
        __m256 above = _mm256_and_ps(_mm256_cmp_ps(f, k->n, _CMP_GE_OQ), _mm256_cmp_ps(real, k->max, _CMP_LE_OQ));
        code = _mm256_blendv_epi8(direct, code, _mm256_castps_si256(ok));
        code = _mm256_blendv_epi8(code, k->below, _mm256_castps_si256(below));
        code = _mm256_blendv_epi8(code, k->above, _mm256_castps_si256(above));
    }
    __m256i bad = _mm256_cmpeq_epi32(code, direct);
    __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256(code, 1));
    _mm_storel_epi64((__m128i *)(void *)dst, _mm_packs_epi16(p16, p16));
    int m = _mm256_movemask_ps(_mm256_castsi256_ps(bad));
    if (m) redo8(epi, m, acc, ch, step, dst);
}

/* Stores sat(sim_round_away(v) + zo) for 8 lanes with the scalar rule's float operations, so the
 * codes equal sim_i8_requant's; lanes outside the range where sim_round_away truncates (and NaN) go
 * through sim_i8_requant itself (acc: the accumulators, bias included; lane l is channel ch + l * step). */
__attribute__((target("avx2"), always_inline)) static inline void code8_avx2(const sim_i8_epi *epi, __m256 zo, __m256 v,
                                                                          __m256i acc, int64_t ch, int step,
                                                                          int8_t *dst)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 av = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
    __m256 inr = _mm256_cmp_ps(av, _mm256_set1_ps(4194304.0f), _CMP_LT_OQ);
    __m256 vi = _mm256_and_ps(v, inr); /* out-of-range lanes: 0 here, redone below */
    __m256 t = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(vi)), f = _mm256_sub_ps(vi, t);
    t = _mm256_add_ps(t, _mm256_and_ps(one, _mm256_cmp_ps(f, _mm256_set1_ps(0.5f), _CMP_GE_OQ)));
    t = _mm256_sub_ps(t, _mm256_and_ps(one, _mm256_cmp_ps(f, _mm256_set1_ps(-0.5f), _CMP_LE_OQ)));
    t = _mm256_add_ps(t, zo);
    t = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-128.0f), t));
    __m256i q = _mm256_cvttps_epi32(t);
    __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)(void *)dst, _mm_packs_epi16(p16, p16));
    int m = ~_mm256_movemask_ps(inr) & 0xff;
    if (m) redo8(epi, m, acc, ch, step, dst);
}

/* Bound on |v - v_direct| / |v| when hard8_avx2 multiplies by a rounded reciprocal of the divisor
 * instead of dividing (v = a * RN(1 / (6 so)) against RN(RN(a / 6) / so), or a * RN(1 / so) against
 * RN(a / so)): at most five roundings of 2^-24 each, 3e-7; the bound is over ten times that. */
#define HARD_CODE_MARGIN 4e-6f

/* sat(round_away(v) + zo) for 8 lanes whose v is within rel |v| + abs of the direct value: away from a
 * half any rounding gives the direct code, so this rounds to nearest (cvtps) and saturates by packing;
 * lanes within the margin of a half, with |v| >= 2^22 or NaN, or not in keep, are redone by sim_i8_requant. */
__attribute__((target("avx2,fma"), always_inline)) static inline void code8_far_avx2(const sim_i8_epi *epi,
                                                                                  __m256i zo, __m256 v, __m256 rel,
                                                                                  __m256 abs, __m256 keep,
                                                                                  __m256i acc, int64_t ch, int step,
                                                                                  int8_t *dst)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256i q = _mm256_cvtps_epi32(v);
    __m256 f = _mm256_andnot_ps(sign, _mm256_sub_ps(v, _mm256_cvtepi32_ps(q))), av = _mm256_andnot_ps(sign, v);
    __m256 far = _mm256_cmp_ps(_mm256_sub_ps(_mm256_set1_ps(0.5f), f), _mm256_fmadd_ps(av, rel, abs), _CMP_GT_OQ);
    far = _mm256_and_ps(far, _mm256_cmp_ps(av, _mm256_set1_ps(4194304.0f), _CMP_LT_OQ));
    q = _mm256_add_epi32(q, zo);
    __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)(void *)dst, _mm_packs_epi16(p16, p16));
    int m = ~_mm256_movemask_ps(_mm256_and_ps(far, keep)) & 0xff;
    if (m) redo8(epi, m, acc, ch, step, dst);
}

/* HardSwish and HardSigmoid are cheaper to evaluate than to look up: the scalar formula's float
 * operations in the same order (sim_apply_act) up to its divisions; those are a multiplication by the
 * rounded reciprocal (k->rdiv, then code8_far_avx2) when hard_mul_ok, else the same divisions
 * (then code8_avx2). */
__attribute__((target("avx2,fma"), always_inline)) static inline void hard8_avx2(const sim_i8_epi *epi, const act_k *k,
                                                                          int hswish, int mul, __m256i acc,
                                                                          __m256 rs, int64_t ch, int step,
                                                                          int8_t *dst)
{
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), rs), a;
    if (hswish) {
        __m256 t = _mm256_add_ps(x, _mm256_set1_ps(3.0f));
        /* t < 0 ? 0 : (t > 6 ? 6 : t), NaN kept like the scalar ternaries */
        t = _mm256_blendv_ps(t, zero, _mm256_cmp_ps(t, zero, _CMP_LT_OQ));
        t = _mm256_blendv_ps(t, _mm256_set1_ps(6.0f), _mm256_cmp_ps(t, _mm256_set1_ps(6.0f), _CMP_GT_OQ));
        a = _mm256_mul_ps(x, t);
        if (!mul) a = _mm256_div_ps(a, _mm256_set1_ps(6.0f));
    } else {
        __m256 t = _mm256_add_ps(_mm256_mul_ps(k->p0, x), k->p1);
        t = _mm256_blendv_ps(t, zero, _mm256_cmp_ps(t, zero, _CMP_LT_OQ));
        a = _mm256_blendv_ps(t, one, _mm256_cmp_ps(t, one, _CMP_GT_OQ));
    }
    if (mul)
        code8_far_avx2(epi, k->zoi, _mm256_mul_ps(a, k->rdiv), _mm256_set1_ps(HARD_CODE_MARGIN),
                       _mm256_set1_ps(1e-30f), _mm256_castsi256_ps(_mm256_set1_epi32(-1)), acc, ch, step, dst);
    else
        code8_avx2(epi, k->zo, _mm256_div_ps(a, k->so), acc, ch, step, dst);
}


#ifdef SIM_HAVE_AVX2_VMATH
/* e^x on 8 lanes: sim_exp_poly's reduction and polynomial with fused multiply-adds. Over every float of
 * [-80, 80] it is within 0.71 x 2^-23 of e^x relatively (measured once against exp in double; the margins
 * above assume 3 x 2^-23); larger |x| are not clamped: callers redo those lanes. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 exp8_fma(__m256 x)
{
    const __m256 magic = _mm256_set1_ps(SIM_EXPF_MAGIC);
    __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(SIM_EXPF_LOG2E), magic), n = _mm256_sub_ps(t, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(SIM_EXPF_C1), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(SIM_EXPF_C2), r);
    __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(SIM_EXPF_P0), r, _mm256_set1_ps(SIM_EXPF_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(SIM_EXPF_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(SIM_EXPF_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(SIM_EXPF_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(SIM_EXPF_P5));
    y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    __m256i eb = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4b400000 - 127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(eb));
}

/* SiLU, Sigmoid and Tanh of 4 x 8 accumulators (a[q], lane l of channel ch[q] + l * step, stored at dst[q])
 * evaluated in vector code instead of looked up (the table's gathers cost more than the exp), the four
 * vectors' steps interleaved (SIM_EACH4: one chain alone stalls Zen 2's scheduler). Each value is within
 * the margins above of the direct one, so the codes code8_far_avx2 stores are sim_i8_requant's. */
__attribute__((target("avx2,fma"), always_inline)) static inline void trans32_avx2(const sim_i8_epi *epi, const act_k *kc,
                                                                                const __m256i *a, const __m256 *rs,
                                                                                const int64_t *ch, int step,
                                                                                int8_t *const *dst)
{
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    __m256 x[SIM_VLANES], ax[SIM_VLANES], e[SIM_VLANES], v[SIM_VLANES], keep[SIM_VLANES];
    __m256 abs = epi->act == SIM_ACT_TANH ? kc->tabs : _mm256_set1_ps(1e-30f);
    __m256i zo = kc->zoi;
    SIM_EACH4(x[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(a[k]), rs[k]));
    SIM_EACH4(ax[k] = _mm256_andnot_ps(sign, x[k]));
    SIM_EACH4(keep[k] = _mm256_cmp_ps(ax[k], _mm256_set1_ps(TRANS_MAX_REAL), _CMP_LE_OQ));
    if (epi->act == SIM_ACT_TANH) {
        /* e^-2|x| with |x| clamped to 40 (tanh is 1.0f from |x| = 9.1 on, and so is (1 - e) / (1 + e)) */
        SIM_EACH4(e[k] = exp8_fma(_mm256_mul_ps(_mm256_min_ps(ax[k], _mm256_set1_ps(40.0f)), _mm256_set1_ps(-2.0f))));
        SIM_EACH4(v[k] = _mm256_div_ps(_mm256_sub_ps(one, e[k]), _mm256_add_ps(one, e[k])));
        SIM_EACH4(v[k] = _mm256_mul_ps(_mm256_or_ps(v[k], _mm256_and_ps(x[k], sign)), kc->rso));
    } else {
        SIM_EACH4(e[k] = exp8_fma(_mm256_xor_ps(x[k], sign)));
        if (epi->act == SIM_ACT_SILU)
            SIM_EACH4(v[k] = _mm256_div_ps(_mm256_mul_ps(x[k], kc->rso), _mm256_add_ps(one, e[k])));
        else
            SIM_EACH4(v[k] = _mm256_div_ps(kc->rso, _mm256_add_ps(one, e[k])));
    }
    SIM_EACH4(code8_far_avx2(epi, zo, v[k], _mm256_set1_ps(TRANS_REL_MARGIN), abs, keep[k], a[k], ch[k], step, dst[k]));
}

/* Whether trans32_avx2 evaluates epi's activation: SiLU, Sigmoid, Tanh with an output scale where the
 * absolute margin stays far below half a code. */
static int trans_ok(const sim_i8_epi *epi)
{
    int act = epi->act == SIM_ACT_SILU || epi->act == SIM_ACT_SIGMOID || epi->act == SIM_ACT_TANH;
    return act && epi->so >= 1e-4f && epi->so <= 1e30f;
}

/* ---- The same epilogues on 16 lanes (AVX-512): one zmm is a whole GEMM tile row (SIM_NR = 16), the
 * compares go to mask registers, a short row is one masked vector, and the 32 registers hold a row's
 * whole evaluation (the AVX2 form spilled). Every step is the AVX2 form's float operation on twice the
 * lanes (exp8_fma, the SiLU/Sigmoid/Tanh division, HardSwish/HardSigmoid's multiplications), so the
 * values, and with the same margins the codes, are those of the AVX2 form and of sim_i8_requant. ---- */
#define I8_AVX512_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"

__attribute__((target(I8_AVX512_TARGET), always_inline)) static inline __m512 exp16_fma(__m512 x)
{
    const __m512 magic = _mm512_set1_ps(SIM_EXPF_MAGIC);
    __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(SIM_EXPF_LOG2E), magic), n = _mm512_sub_ps(t, magic);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(SIM_EXPF_C1), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(SIM_EXPF_C2), r);
    __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(SIM_EXPF_P0), r, _mm512_set1_ps(SIM_EXPF_P1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(SIM_EXPF_P2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(SIM_EXPF_P3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(SIM_EXPF_P4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(SIM_EXPF_P5));
    y = _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    __m512i eb = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4b400000 - 127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(eb));
}

/* code8_far_avx2 on 16 lanes: stores lanes m of sat(round(v) + zo) and returns the lanes of m to redo
 * (within the margin of a half, |v| >= 2^22 or NaN, or not in keep). */
__attribute__((target(I8_AVX512_TARGET), always_inline)) static inline __mmask16 code16_far(__m512i zo, __m512 v,
                                                                                         __m512 rel, __m512 abs,
                                                                                         __mmask16 keep,
                                                                                         __mmask16 m, int8_t *dst)
{
    __m512i q = _mm512_cvtps_epi32(v);
    __m512 f = _mm512_abs_ps(_mm512_sub_ps(v, _mm512_cvtepi32_ps(q))), av = _mm512_abs_ps(v);
    __mmask16 far = _mm512_cmp_ps_mask(_mm512_sub_ps(_mm512_set1_ps(0.5f), f), _mm512_fmadd_ps(av, rel, abs), _CMP_GT_OQ);
    far &= _mm512_cmp_ps_mask(av, _mm512_set1_ps(4194304.0f), _CMP_LT_OQ);
    _mm_mask_storeu_epi8(dst, m, _mm512_cvtsepi32_epi8(_mm512_add_epi32(q, zo)));
    return (__mmask16)(m & ~(far & keep));
}

/* Rows [0, rows) as act_rows_avx2, 16 columns at a time and the last partial vector masked: SiLU,
 * Sigmoid, Tanh (trans_ok) and HardSwish/HardSigmoid with the multiplied reciprocal (hard_mul_ok). */
__attribute__((target(I8_AVX512_TARGET))) static void act_rows_avx512(const sim_i8_epi *epi, const float *accf,
                                                                     const int32_t *acc32, int64_t lda, int rows,
                                                                     int64_t n, int64_t ch0, const int32_t *bias,
                                                                     int8_t *y, int64_t ldy)
{
    const uint32_t act = epi->act;
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    const __m512 rso = _mm512_set1_ps(1.0f / epi->so), p0 = _mm512_set1_ps(epi->p0), p1 = _mm512_set1_ps(epi->p1);
    const __m512 tabs = _mm512_set1_ps(act == SIM_ACT_TANH ? TRANS_ABS_MARGIN / epi->so : 1e-30f);
    const __m512 rdiv = _mm512_set1_ps(1.0f / (act == SIM_ACT_HARDSWISH ? 6.0f * epi->so : epi->so));
    const __m512 rel = _mm512_set1_ps(act == SIM_ACT_HARDSWISH || act == SIM_ACT_HARDSIGMOID ? HARD_CODE_MARGIN
                                                                                             : TRANS_REL_MARGIN);
    const __m512i zo = _mm512_set1_epi32(epi->zo), sign = _mm512_set1_epi32((int)0x80000000u);
    for (int r = 0; r < rows; r++) {
        __m512i bv = _mm512_set1_epi32(bias ? bias[r] : 0);
        __m512 rs = _mm512_set1_ps(epi->rscale[ch0 + r]);
        for (int64_t e = 0; e < n; e += 16) {
            __mmask16 m = n - e >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - e)) - 1u);
            __m512i a = accf ? _mm512_cvttps_epi32(_mm512_maskz_loadu_ps(m, accf + r * lda + e))
                             : _mm512_maskz_loadu_epi32(m, acc32 + r * lda + e);
            a = _mm512_add_epi32(a, bv);
            __m512 x = _mm512_mul_ps(_mm512_cvtepi32_ps(a), rs), v;
            __mmask16 keep = 0xffff;
            if (act == SIM_ACT_HARDSWISH) {
                __m512 t = _mm512_add_ps(x, _mm512_set1_ps(3.0f));
                t = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(t, zero, _CMP_LT_OQ), zero);
                t = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(t, _mm512_set1_ps(6.0f), _CMP_GT_OQ), _mm512_set1_ps(6.0f));
                v = _mm512_mul_ps(_mm512_mul_ps(x, t), rdiv);
            } else if (act == SIM_ACT_HARDSIGMOID) {
                __m512 t = _mm512_add_ps(_mm512_mul_ps(p0, x), p1);
                t = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(t, zero, _CMP_LT_OQ), zero);
                t = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(t, one, _CMP_GT_OQ), one);
                v = _mm512_mul_ps(t, rdiv);
            } else {
                __m512 ax = _mm512_abs_ps(x);
                keep = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(TRANS_MAX_REAL), _CMP_LE_OQ);
                if (act == SIM_ACT_TANH) {
                    __m512 t = exp16_fma(_mm512_mul_ps(_mm512_min_ps(ax, _mm512_set1_ps(40.0f)), _mm512_set1_ps(-2.0f)));
                    v = _mm512_div_ps(_mm512_sub_ps(one, t), _mm512_add_ps(one, t));
                    v = _mm512_or_ps(v, _mm512_and_ps(x, _mm512_castsi512_ps(sign)));
                    v = _mm512_mul_ps(v, rso);
                } else {
                    __m512 t = exp16_fma(_mm512_xor_ps(x, _mm512_castsi512_ps(sign)));
                    v = act == SIM_ACT_SILU ? _mm512_div_ps(_mm512_mul_ps(x, rso), _mm512_add_ps(one, t))
                                            : _mm512_div_ps(rso, _mm512_add_ps(one, t));
                }
            }
            int8_t *d = y + r * ldy + e;
            __mmask16 redo = code16_far(zo, v, rel, tabs, keep, m, d);
            if (redo) {
                int32_t al[16];
                _mm512_storeu_si512((void *)al, a);
                for (int l = 0; l < 16; l++)
                    if (redo >> l & 1) d[l] = sim_i8_requant(epi, al[l], ch0 + r);
            }
        }
    }
}

/* Whether act_rows_avx512 takes epi's activation. */
static int act_avx512_ok(const sim_i8_epi *epi)
{
    int hard = epi->act == SIM_ACT_HARDSWISH || epi->act == SIM_ACT_HARDSIGMOID;
    return trans_ok(epi) || (hard && hard_mul_ok(epi));
}
#endif

/* No activation or a clamp: v = acc * mult, then lo and hi as the scalar ternaries, then code8_avx2. */
__attribute__((target("avx2"), always_inline)) static inline void linear8_avx2(const sim_i8_epi *epi, const act_k *k,
                                                                            __m256i acc, __m256 mult, int64_t ch,
                                                                            int step, int8_t *dst)
{
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), mult);
    if (epi->clamp) {
        __m256 lo = _mm256_set1_ps(epi->lo), hi = _mm256_set1_ps(epi->hi);
        v = _mm256_blendv_ps(v, lo, _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
        v = _mm256_blendv_ps(v, hi, _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
    }
    code8_avx2(epi, k->zo, v, acc, ch, step, dst);
}

/* Rows [0, rows) of n accumulators each (float-held exact integers at accf + r * lda, or int32 at
 * acc32 + r * lda), row r of channel ch0 + r with bias[r] (none when NULL), through the table (or the
 * HardSwish/HardSigmoid formula) into y + r * ldy; the columns done, a multiple of 8, are returned. */
__attribute__((target("avx2,fma"))) static int64_t act_rows_avx2(const sim_i8_epi *epi, const float *accf,
                                                             const int32_t *acc32, int64_t lda, int rows, int64_t n,
                                                             int64_t ch0, const int32_t *bias, int8_t *y, int64_t ldy)
{
    act_k k;
    act_k_init(epi, &k);
    int hswish = epi->act == SIM_ACT_HARDSWISH, hard = hswish || epi->act == SIM_ACT_HARDSIGMOID;
    int64_t nv = n / 8 * 8;
    /* vector q of the tile is row r, columns [e, e + 8): walked with counters (no division per vector) */
    int64_t per = nv / 8, q = 0, total = per * rows, e = 0;
    int r = 0;
#ifdef SIM_HAVE_AVX2_VMATH
    /* four vectors per step, across rows when a row is short (a GEMM tile row is two vectors) */
    for (int trans = trans_ok(epi); trans && q + SIM_VLANES <= total; q += SIM_VLANES) {
        __m256i a[SIM_VLANES];
        __m256 rs[SIM_VLANES];
        int64_t ch[SIM_VLANES];
        int8_t *d[SIM_VLANES];
        for (int l = 0; l < SIM_VLANES; l++) {
            a[l] = accf ? _mm256_cvttps_epi32(_mm256_loadu_ps(accf + r * lda + e))
                        : _mm256_loadu_si256((const __m256i *)(const void *)(acc32 + r * lda + e));
            a[l] = _mm256_add_epi32(a[l], _mm256_set1_epi32(bias ? bias[r] : 0));
            rs[l] = _mm256_set1_ps(epi->rscale[ch0 + r]);
            ch[l] = ch0 + r;
            d[l] = y + r * ldy + e;
            if ((e += 8) == nv) e = 0, r++;
        }
        trans32_avx2(epi, &k, a, rs, ch, 0, d);
    }
#endif
    for (; q < total; q++) {
        __m256 rs = _mm256_set1_ps(epi->rscale[ch0 + r]);
        __m256i a = accf ? _mm256_cvttps_epi32(_mm256_loadu_ps(accf + r * lda + e))
                         : _mm256_loadu_si256((const __m256i *)(const void *)(acc32 + r * lda + e));
        a = _mm256_add_epi32(a, _mm256_set1_epi32(bias ? bias[r] : 0));
        if (hard)
            hard8_avx2(epi, &k, hswish, k.hard_mul, a, rs, ch0 + r, 0, y + r * ldy + e);
        else
            lut8_avx2(epi, &k, a, rs, ch0 + r, 0, y + r * ldy + e);
        if ((e += 8) == nv) e = 0, r++;
    }
    return nv;
}

/* One tile row whose channel is the column (Gemm/MatMul): 8 columns at a time with per-lane bias
 * and scales; table, direct HardSwish/HardSigmoid or linear requantisation, codes equal to sim_i8_requant's. */
__attribute__((target("avx2,fma"))) static int64_t percol_row_avx2(const sim_i8_epi *epi, const int32_t *t, int64_t nr,
                                                                  int64_t col0, int8_t *y)
{
    act_k k;
    act_k_init(epi, &k);
    int hswish = epi->act == SIM_ACT_HARDSWISH, hard = hswish || epi->act == SIM_ACT_HARDSIGMOID;
    int linear = epi->act == SIM_ACT_NONE || epi->clamp;
    int64_t j = 0;
#ifdef SIM_HAVE_AVX2_VMATH
    if (trans_ok(epi))
        for (; j + 32 <= nr; j += 32) {
            __m256i a[SIM_VLANES];
            __m256 rs[SIM_VLANES];
            SIM_EACH4(a[k] = _mm256_loadu_si256((const __m256i *)(const void *)(t + j + 8 * k)));
            if (epi->bias)
                SIM_EACH4(a[k] = _mm256_add_epi32(
                              a[k], _mm256_loadu_si256((const __m256i *)(const void *)(epi->bias + col0 + j + 8 * k))));
            int64_t ch[SIM_VLANES];
            int8_t *d[SIM_VLANES];
            SIM_EACH4(rs[k] = _mm256_loadu_ps(epi->rscale + col0 + j + 8 * k));
            SIM_EACH4(ch[k] = col0 + j + 8 * k);
            SIM_EACH4(d[k] = y + j + 8 * k);
            trans32_avx2(epi, &k, a, rs, ch, 1, d);
        }
#endif
    for (; j + 8 <= nr; j += 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)(t + j));
        if (epi->bias) a = _mm256_add_epi32(a, _mm256_loadu_si256((const __m256i *)(const void *)(epi->bias + col0 + j)));
        if (linear)
            linear8_avx2(epi, &k, a, _mm256_loadu_ps(epi->mult + col0 + j), col0 + j, 1, y + j);
        else if (hard)
            hard8_avx2(epi, &k, hswish, k.hard_mul, a, _mm256_loadu_ps(epi->rscale + col0 + j), col0 + j, 1, y + j);
        else
            lut8_avx2(epi, &k, a, _mm256_loadu_ps(epi->rscale + col0 + j), col0 + j, 1, y + j);
    }
    return j;
}
#endif

void sim_i8_requant_cols(int use_avx2, const sim_i8_epi *epi, const int32_t *acc, int64_t n, int64_t col0, int8_t *y)
{
    sim_i8_epi e = *epi;
    e.bias = NULL; /* already in acc */
    e.per_col = 1;
    int64_t j = 0;
#ifdef SIM_HAVE_AVX2_I8
    if (use_avx2 && (e.lut || e.act == SIM_ACT_NONE || e.clamp)) j = percol_row_avx2(&e, acc, n, col0, y);
#else
    (void)use_avx2;
#endif
    for (; j < n; j++) y[j] = sim_i8_requant(&e, acc[j], col0 + j);
}

void sim_i8_requant_act_row(int use_avx2, const sim_i8_epi *epi, const float *acc, int32_t bias, int64_t n, int64_t ch,
                            int8_t *y)
{
    sim_i8_requant_act_tile(use_avx2, epi, acc, NULL, 0, 1, n, ch, &bias, y, 0);
}

void sim_i8_requant_act_row32(int use_avx2, const sim_i8_epi *epi, const int32_t *acc, int32_t bias, int64_t n,
                              int64_t ch, int8_t *y)
{
    sim_i8_requant_act_tile(use_avx2, epi, NULL, acc, 0, 1, n, ch, &bias, y, 0);
}

int sim_i8_act_best_isa(int use_avx2)
{
    if (!use_avx2) return SIM_I8_ACT_ISA_C;
#if defined(SIM_HAVE_AVX2_I8) && defined(SIM_HAVE_AVX2_VMATH)
    if (sim_cpu_wide_isa() & SIM_ISA_AVX512BW) return SIM_I8_ACT_ISA_AVX512;
#endif
    return SIM_I8_ACT_ISA_AVX2;
}

void sim_i8_requant_act_tile(int use_avx2, const sim_i8_epi *epi, const float *accf, const int32_t *acc32,
                             int64_t lda, int rows, int64_t n, int64_t ch0, const int32_t *bias, int8_t *y, int64_t ldy)
{
    sim_i8_requant_act_tile_isa(sim_i8_act_best_isa(use_avx2), epi, accf, acc32, lda, rows, n, ch0, bias, y, ldy);
}

void sim_i8_requant_act_tile_isa(int isa, const sim_i8_epi *epi, const float *accf, const int32_t *acc32,
                                 int64_t lda, int rows, int64_t n, int64_t ch0, const int32_t *bias, int8_t *y,
                                 int64_t ldy)
{
    int64_t e0 = 0;
#if defined(SIM_HAVE_AVX2_I8) && defined(SIM_HAVE_AVX2_VMATH)
    if (isa == SIM_I8_ACT_ISA_AVX512 && epi->lut && act_avx512_ok(epi)) {
        act_rows_avx512(epi, accf, acc32, lda, rows, n, ch0, bias, y, ldy);
        return;
    }
#endif
#ifdef SIM_HAVE_AVX2_I8
    if (isa != SIM_I8_ACT_ISA_C && epi->lut) e0 = act_rows_avx2(epi, accf, acc32, lda, rows, n, ch0, bias, y, ldy);
#endif
    (void)isa;
    for (int r = 0; r < rows; r++) {
        int32_t b = bias ? bias[r] : 0;
        for (int64_t e = e0; e < n; e++) {
            int32_t a = accf ? (int32_t)accf[r * lda + e] : acc32[r * lda + e];
            y[r * ldy + e] = sim_i8_requant(epi, a + b, ch0 + r);
        }
    }
}

#ifdef SIM_HAVE_AVX2_I8
__attribute__((target("avx2,fma"))) static int64_t linear_row32_avx2(const sim_i8_epi *epi, const int32_t *acc,
                                                                    int32_t bias, int64_t n, int64_t ch, int8_t *y)
{
    __m256i bv = _mm256_set1_epi32(bias);
    __m256 m = _mm256_set1_ps(epi->mult[ch]), qlo = _mm256_set1_ps(epi->qlo), qhi = _mm256_set1_ps(epi->qhi);
    __m256 zo = _mm256_set1_ps((float)epi->zo);
    int64_t e = 0;
    for (; e + 8 <= n; e += 8) {
        __m256i a = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(acc + e)), bv);
        sim_requant8f_avx2(_mm256_cvtepi32_ps(a), m, qlo, qhi, zo, y + e);
    }
    return e;
}
#endif

void sim_i8_requant_row32(int use_avx2, const sim_i8_epi *epi, const int32_t *acc, int32_t bias, int64_t n, int64_t ch,
                          int8_t *y)
{
    if (epi->act != SIM_ACT_NONE && !epi->clamp) {
        sim_i8_requant_act_row32(use_avx2, epi, acc, bias, n, ch, y);
        return;
    }
    int64_t e = 0;
#ifdef SIM_HAVE_AVX2_I8
    if (use_avx2) e = linear_row32_avx2(epi, acc, bias, n, ch, y);
#endif
    (void)use_avx2;
    for (; e < n; e++) y[e] = sim_i8_requant(epi, acc[e] + bias, ch);
}

/* Requantisation of float-held exact accumulators, branch-free so it vectorises. */
static inline void requant_plane_body(const float *acc, int64_t n, int32_t bias, float mult, float lo, float hi,
                                      float zo, int8_t *y)
{
    for (int64_t e = 0; e < n; e++) {
        float v = (float)((int32_t)acc[e] + bias) * mult;
        v = v < lo ? lo : v;
        v = v > hi ? hi : v;
        float t = (float)(int32_t)v, f = v - t;
        t = t + (float)(f >= 0.5f) - (float)(f <= -0.5f) + zo;
        t = t < -128.0f ? -128.0f : t;
        t = t > 127.0f ? 127.0f : t;
        y[e] = (int8_t)(int32_t)t;
    }
}

static void requant_plane_c(const float *acc, int64_t n, int32_t bias, float mult, float lo, float hi, float zo,
                            int8_t *y)
{
    requant_plane_body(acc, n, bias, mult, lo, hi, zo, y);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void requant_plane_avx2(const float *acc, int64_t n, int32_t bias,
                                                                   float mult, float qlo, float qhi, float zo,
                                                                   float lo, float hi, int8_t *y)
{
    __m256i bv = _mm256_set1_epi32(bias);
    __m256 m = _mm256_set1_ps(mult), vlo = _mm256_set1_ps(qlo), vhi = _mm256_set1_ps(qhi), vz = _mm256_set1_ps(zo);
    int64_t e = 0;
    for (; e + 8 <= n; e += 8) sim_requant8_avx2(_mm256_loadu_ps(acc + e), bv, m, vlo, vhi, vz, y + e);
    requant_plane_body(acc + e, n - e, bias, mult, lo, hi, zo, y + e);
}
#endif

void sim_i8_requant_plane(int use_avx2, const sim_i8_epi *epi, const float *acc, int64_t n, int64_t ch, int8_t *y)
{
    int32_t bias = epi->bias ? epi->bias[ch] : 0;
    if (epi->act != SIM_ACT_NONE && !epi->clamp) {
        sim_i8_requant_act_row(use_avx2, epi, acc, bias, n, ch, y);
        return;
    }
    /* bound to +-1e9 so the int32 conversions stay defined; saturation follows anyway */
    float lo = epi->lo > -1e9f ? epi->lo : -1e9f, hi = epi->hi < 1e9f ? epi->hi : 1e9f;
#if defined(__x86_64__) && defined(__GNUC__)
    if (use_avx2) {
        requant_plane_avx2(acc, n, bias, epi->mult[ch], epi->qlo, epi->qhi, (float)epi->zo, lo, hi, y);
        return;
    }
#endif
    (void)use_avx2;
    requant_plane_c(acc, n, bias, epi->mult[ch], lo, hi, (float)epi->zo, y);
}

/* Stores a computed int32 tile (row stride NR) through the scalar epilogue. */
static void store_tile(const int32_t *t, int mr, int nr, int8_t *c8, int32_t *c32, int64_t rs, int64_t cs,
                       int64_t row0, int64_t col0, const sim_i8_epi *epi)
{
    if (c8 && cs == 1 && !epi->per_col && epi->lut) {
        sim_i8_requant_act_tile(SIM_CPU_AVX2(), epi, NULL, t, SIM_NR, mr, nr, row0, epi->bias ? epi->bias + row0 : NULL,
                                c8, rs);
        return;
    }
#ifdef SIM_HAVE_AVX2_I8
    if (c8 && cs == 1 && epi->per_col && (epi->lut || epi->act == SIM_ACT_NONE || epi->clamp) && SIM_CPU_AVX2()) {
        for (int r = 0; r < mr; r++) {
            int64_t j = percol_row_avx2(epi, t + r * SIM_NR, nr, col0, c8 + r * rs);
            for (; j < nr; j++)
                c8[r * rs + j] = sim_i8_requant(epi, t[r * SIM_NR + j] + (epi->bias ? epi->bias[col0 + j] : 0), col0 + j);
        }
        return;
    }
#endif
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            int64_t ch = epi->per_col ? col0 + j : row0 + r;
            int32_t acc = t[r * SIM_NR + j] + (epi->bias ? epi->bias[ch] : 0);
            if (c32)
                c32[r * rs + j * cs] = acc;
            else
                c8[r * rs + j * cs] = sim_i8_requant(epi, acc, ch);
        }
}

static void kernel_c(int64_t kp, const int16_t *pa, const int16_t *pb, int32_t *t)
{
    memset(t, 0, SIM_MR * SIM_NR * sizeof(int32_t));
    for (int64_t q = 0; q < kp; q++) {
        const int16_t *a = pa + q * SIM_MR * 2, *b = pb + q * SIM_NR * 2;
        for (int r = 0; r < SIM_MR; r++) {
            int32_t a0 = a[r * 2], a1 = a[r * 2 + 1];
            for (int j = 0; j < SIM_NR; j++) t[r * SIM_NR + j] += a0 * b[j * 2] + a1 * b[j * 2 + 1];
        }
    }
}

#ifdef SIM_HAVE_AVX2_I8
/* Requantises 16 int32 accumulators of one row (one channel) and stores 16 int8. */
__attribute__((target("avx2,fma"), always_inline)) static inline void requant_row_avx2(__m256i a0, __m256i a1,
                                                                                        int32_t bias, float mult,
                                                                                        __m256 qlo, __m256 qhi,
                                                                                        __m256 zo, int8_t *dst)
{
    __m256i bv = _mm256_set1_epi32(bias);
    __m256 m = _mm256_set1_ps(mult);
    sim_requant8f_avx2(_mm256_cvtepi32_ps(_mm256_add_epi32(a0, bv)), m, qlo, qhi, zo, dst);
    sim_requant8f_avx2(_mm256_cvtepi32_ps(_mm256_add_epi32(a1, bv)), m, qlo, qhi, zo, dst + 8);
}

#define REQ_ROW(i) requant_row_avx2(c##i##0, c##i##1, epi->bias ? epi->bias[row0 + (i)] : 0, epi->mult[row0 + (i)], qlo, \
                                    qhi, zo, c8 + (i) * rs)
#define SPILL_ROW(i)                                                                                         \
    do {                                                                                                     \
        _mm256_storeu_si256((__m256i *)(void *)(t + (i) * SIM_NR), c##i##0);                                 \
        _mm256_storeu_si256((__m256i *)(void *)(t + (i) * SIM_NR + 8), c##i##1);                             \
    } while (0)

/* Raw int32 sums of a full row straight to c32 (no bias: what store_tile would store). */
#define STORE32_ROW(i)                                                                                       \
    do {                                                                                                     \
        _mm256_storeu_si256((__m256i *)(void *)(c32 + (i) * rs), c##i##0);                                   \
        _mm256_storeu_si256((__m256i *)(void *)(c32 + (i) * rs + 8), c##i##1);                               \
    } while (0)

/* The 6x16 register tile: KMADD(c, a, b) accumulates one k-pair (c += a0 b0 + a1 b1 per int32 lane). Both
 * forms wrap modulo 2^32 the same way, so the VNNI kernel's codes are the AVX2 kernel's bit for bit. */
#define KMADD_AVX2(c, a, b) ((c) = _mm256_add_epi32((c), _mm256_madd_epi16((a), (b))))
#define KMADD_VNNI(c, a, b) ((c) = _mm256_dpwssd_epi32((c), (a), (b)))
#define MADD_ROW_K(i, KMADD)                                                                                 \
    do {                                                                                                     \
        int32_t pair;                                                                                        \
        memcpy(&pair, pa + (i) * 2, sizeof pair);                                                            \
        __m256i av = _mm256_set1_epi32(pair);                                                                \
        KMADD(c##i##0, av, b0);                                                                              \
        KMADD(c##i##1, av, b1);                                                                              \
    } while (0)

#define DEFINE_KERNEL_I8(name, target_str, KMADD)                                                            \
    __attribute__((target(target_str))) static void name(int64_t kp, const int16_t *pa, const int16_t *pb, int mr, \
                                                         int nr, int8_t *c8, int32_t *c32, int64_t rs, int64_t cs, \
                                                         int64_t row0, int64_t col0, const sim_i8_epi *epi)  \
    {                                                                                                        \
        __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;         \
        __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;                            \
        for (int64_t q = 0; q < kp; q++) {                                                                   \
            __m256i b0 = _mm256_loadu_si256((const __m256i *)(const void *)pb);                              \
            __m256i b1 = _mm256_loadu_si256((const __m256i *)(const void *)(pb + 16));                       \
            MADD_ROW_K(0, KMADD);                                                                            \
            MADD_ROW_K(1, KMADD);                                                                            \
            MADD_ROW_K(2, KMADD);                                                                            \
            MADD_ROW_K(3, KMADD);                                                                            \
            MADD_ROW_K(4, KMADD);                                                                            \
            MADD_ROW_K(5, KMADD);                                                                            \
            pa += SIM_MR * 2;                                                                                \
            pb += SIM_NR * 2;                                                                                \
        }                                                                                                    \
        int vec_ok = c8 && nr == SIM_NR && cs == 1 && !epi->per_col && (epi->act == SIM_ACT_NONE || epi->clamp); \
        if (vec_ok) {                                                                                        \
            __m256 qlo = _mm256_set1_ps(epi->qlo), qhi = _mm256_set1_ps(epi->qhi), zo = _mm256_set1_ps((float)epi->zo); \
            REQ_ROW(0);                                                                                      \
            if (mr > 1) REQ_ROW(1);                                                                          \
            if (mr > 2) REQ_ROW(2);                                                                          \
            if (mr > 3) REQ_ROW(3);                                                                          \
            if (mr > 4) REQ_ROW(4);                                                                          \
            if (mr > 5) REQ_ROW(5);                                                                          \
            return;                                                                                          \
        }                                                                                                    \
        if (c32 && !epi->bias && nr == SIM_NR && cs == 1) {                                                  \
            STORE32_ROW(0);                                                                                  \
            if (mr > 1) STORE32_ROW(1);                                                                      \
            if (mr > 2) STORE32_ROW(2);                                                                      \
            if (mr > 3) STORE32_ROW(3);                                                                      \
            if (mr > 4) STORE32_ROW(4);                                                                      \
            if (mr > 5) STORE32_ROW(5);                                                                      \
            return;                                                                                          \
        }                                                                                                    \
        int32_t t[SIM_MR * SIM_NR];                                                                          \
        SPILL_ROW(0);                                                                                        \
        SPILL_ROW(1);                                                                                        \
        SPILL_ROW(2);                                                                                        \
        SPILL_ROW(3);                                                                                        \
        SPILL_ROW(4);                                                                                        \
        SPILL_ROW(5);                                                                                        \
        store_tile(t, mr, nr, c8, c32, rs, cs, row0, col0, epi);                                             \
    }

DEFINE_KERNEL_I8(kernel_avx2, "avx2,fma", KMADD_AVX2)
/* vpdpwssd (AVX512-VNNI, 256-bit EVEX form): the multiply-add and the accumulate in one instruction, half
 * the vector ops of the AVX2 loop, which is bound by them. */
DEFINE_KERNEL_I8(kernel_vnni, "avx2,fma,avx512vl,avx512vnni", KMADD_VNNI)
#endif

int sim_gemm_i8_best_isa(int use_avx2)
{
    if (!use_avx2) return SIM_I8_ISA_C;
#ifdef SIM_HAVE_AVX2_I8
    if (sim_cpu_wide_isa() & SIM_ISA_AVX512VNNI) return SIM_I8_ISA_VNNI;
#endif
    return SIM_I8_ISA_AVX2;
}

void sim_gemm_i8_packed(int use_avx2, const int16_t *pa, const int16_t *pb, int64_t m, int64_t n, int64_t k,
                        int8_t *c8, int32_t *c32, int64_t rs, int64_t cs, int64_t row0, int64_t col0,
                        const sim_i8_epi *epi)
{
    sim_gemm_i8_packed_isa(sim_gemm_i8_best_isa(use_avx2), pa, pb, m, n, k, c8, c32, rs, cs, row0, col0, epi);
}

void sim_gemm_i8_packed_isa(int isa, const int16_t *pa, const int16_t *pb, int64_t m, int64_t n, int64_t k,
                            int8_t *c8, int32_t *c32, int64_t rs, int64_t cs, int64_t row0, int64_t col0,
                            const sim_i8_epi *epi)
{
    int64_t kp = kpairs(k);
    int use_avx2 = isa != SIM_I8_ISA_C;
    for (int64_t i = 0; i < m; i += SIM_MR) {
        int mr = (int)(m - i < SIM_MR ? m - i : SIM_MR);
        const int16_t *a = pa + i * kp * 2;
        for (int64_t j = 0; j < n; j += SIM_NR) {
            int nr = (int)(n - j < SIM_NR ? n - j : SIM_NR);
            int8_t *d8 = c8 ? c8 + i * rs + j * cs : NULL;
            int32_t *d32 = c32 ? c32 + i * rs + j * cs : NULL;
#ifdef SIM_HAVE_AVX2_I8
            if (isa == SIM_I8_ISA_VNNI) {
                kernel_vnni(kp, a, pb + j * kp * 2, mr, nr, d8, d32, rs, cs, row0 + i, col0 + j, epi);
                continue;
            }
            if (use_avx2) {
                kernel_avx2(kp, a, pb + j * kp * 2, mr, nr, d8, d32, rs, cs, row0 + i, col0 + j, epi);
                continue;
            }
#endif
            (void)use_avx2;
            int32_t t[SIM_MR * SIM_NR];
            kernel_c(kp, a, pb + j * kp * 2, t);
            store_tile(t, mr, nr, d8, d32, rs, cs, row0 + i, col0 + j, epi);
        }
    }
}
