/* One-pass int8 Add/Sub/Mul rows (see elt_i8.h). */
#include "elt_i8.h"

#include "ops_common.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

/* Operand value i as eltwise.c's chunked path has it: the dequantised code (sim_dequant_array's
 * scale * (q - zp)) or the float. */
static inline float operand_at(const sim_elt_i8_operand *o, int64_t i)
{
    int64_t k = i * o->stride;
    return o->q ? o->scale * (float)((int32_t)o->q[k] - o->zp) : o->f[k];
}

static inline float apply(int op, float a, float b)
{
    return op == SIM_ELT_I8_ADD ? a + b : (op == SIM_ELT_I8_SUB ? a - b : a * b);
}

static void row_c(int op, const sim_elt_i8_operand *a, const sim_elt_i8_operand *b, int64_t i0, int64_t n, int8_t *y,
                  float so, int32_t zo)
{
    for (int64_t i = i0; i < n; i++) y[i] = sim_quant_i8(apply(op, operand_at(a, i), operand_at(b, i)), so, zo);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* 8 operand values from element i (a broadcast operand is its one value, bv). */
__attribute__((target("avx2"), always_inline)) static inline __m256 load8(const sim_elt_i8_operand *o, __m256 bv,
                                                                       __m256i zp, __m256 sc, int64_t i)
{
    if (o->stride == 0) return bv;
    if (!o->f) {
        __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(o->q + i)));
        return _mm256_mul_ps(sc, _mm256_cvtepi32_ps(_mm256_sub_epi32(w, zp)));
    }
    return _mm256_loadu_ps(o->f + i);
}

/* sim_quant_array's AVX2 rule (divide, NaN to 0, clamp to 1e9, round half away, zero point, saturate). */
__attribute__((target("avx2"), always_inline)) static inline __m256i quant8(__m256 v, __m256 so, __m256 zo)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    v = _mm256_div_ps(v, so);
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
    v = _mm256_min_ps(_mm256_set1_ps(1e9f), _mm256_max_ps(_mm256_set1_ps(-1e9f), v));
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC), f = _mm256_sub_ps(v, t);
    t = _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one));
    t = _mm256_sub_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, _mm256_set1_ps(-0.5f), _CMP_LE_OQ), one));
    t = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-128.0f), _mm256_add_ps(t, zo)));
    return _mm256_cvttps_epi32(t);
}

__attribute__((target("avx2"))) static int64_t row_avx2(int op, const sim_elt_i8_operand *a,
                                                        const sim_elt_i8_operand *b, int64_t n, int8_t *y, float so,
                                                        int32_t zo)
{
    __m256 ba = _mm256_set1_ps(a->stride ? 0.0f : operand_at(a, 0)), bb = _mm256_set1_ps(b->stride ? 0.0f : operand_at(b, 0));
    __m256i za = _mm256_set1_epi32(a->zp), zb = _mm256_set1_epi32(b->zp);
    __m256 sa = _mm256_set1_ps(a->scale), sb = _mm256_set1_ps(b->scale);
    __m256 vso = _mm256_set1_ps(so), vzo = _mm256_set1_ps((float)zo);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = load8(a, ba, za, sa, i), w = load8(b, bb, zb, sb, i);
        __m256 v = op == SIM_ELT_I8_ADD ? _mm256_add_ps(x, w) : (op == SIM_ELT_I8_SUB ? _mm256_sub_ps(x, w) : _mm256_mul_ps(x, w));
        __m256i q = quant8(v, vso, vzo);
        __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(void *)(y + i), _mm_packs_epi16(p16, p16));
    }
    return i;
}

#define AVX512_TARGET "avx512f,avx512bw,avx512vl,avx2"

/* 16 operand values from element i, lanes outside m zero (masked loads: no read past the row). */
__attribute__((target(AVX512_TARGET), always_inline)) static inline __m512 load16(const sim_elt_i8_operand *o,
                                                                               __m512 bv, __m512i zp, __m512 sc,
                                                                               int64_t i, __mmask16 m)
{
    if (o->stride == 0) return bv;
    if (!o->f) {
        __m512i w = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, o->q + i));
        return _mm512_mul_ps(sc, _mm512_cvtepi32_ps(_mm512_sub_epi32(w, zp)));
    }
    return _mm512_maskz_loadu_ps(m, o->f + i);
}

__attribute__((target(AVX512_TARGET), always_inline)) static inline void step16(int op, const sim_elt_i8_operand *a,
                                                                             const sim_elt_i8_operand *b, __m512 ba,
                                                                             __m512 bb, __m512i za, __m512i zb,
                                                                             __m512 sa, __m512 sb, __m512 so,
                                                                             __m512 zo, int64_t i, __mmask16 m,
                                                                             int8_t *y)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 x = load16(a, ba, za, sa, i, m), w = load16(b, bb, zb, sb, i, m);
    __m512 v = op == SIM_ELT_I8_ADD ? _mm512_add_ps(x, w) : (op == SIM_ELT_I8_SUB ? _mm512_sub_ps(x, w) : _mm512_mul_ps(x, w));
    v = _mm512_div_ps(v, so);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
    v = _mm512_min_ps(_mm512_set1_ps(1e9f), _mm512_max_ps(_mm512_set1_ps(-1e9f), v));
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC), f = _mm512_sub_ps(v, t);
    t = _mm512_mask_add_ps(t, _mm512_cmp_ps_mask(f, _mm512_set1_ps(0.5f), _CMP_GE_OQ), t, one);
    t = _mm512_mask_sub_ps(t, _mm512_cmp_ps_mask(f, _mm512_set1_ps(-0.5f), _CMP_LE_OQ), t, one);
    t = _mm512_min_ps(_mm512_set1_ps(127.0f), _mm512_max_ps(_mm512_set1_ps(-128.0f), _mm512_add_ps(t, zo)));
    _mm_mask_storeu_epi8(y + i, m, _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(t)));
}

__attribute__((target(AVX512_TARGET))) static void row_avx512(int op, const sim_elt_i8_operand *a,
                                                              const sim_elt_i8_operand *b, int64_t n, int8_t *y,
                                                              float so, int32_t zo)
{
    __m512 ba = _mm512_set1_ps(a->stride ? 0.0f : operand_at(a, 0)), bb = _mm512_set1_ps(b->stride ? 0.0f : operand_at(b, 0));
    __m512i za = _mm512_set1_epi32(a->zp), zb = _mm512_set1_epi32(b->zp);
    __m512 sa = _mm512_set1_ps(a->scale), sb = _mm512_set1_ps(b->scale);
    __m512 vso = _mm512_set1_ps(so), vzo = _mm512_set1_ps((float)zo);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) step16(op, a, b, ba, bb, za, zb, sa, sb, vso, vzo, i, (__mmask16)0xffff, y);
    if (i < n) step16(op, a, b, ba, bb, za, zb, sa, sb, vso, vzo, i, (__mmask16)((1u << (n - i)) - 1u), y);
}
#endif

int sim_elt_i8_best_isa(void)
{
    if (!SIM_CPU_AVX2()) return SIM_ELT_ISA_C;
#if defined(__x86_64__) && defined(__GNUC__)
    if (sim_cpu_wide_isa() & SIM_ISA_AVX512BW) return SIM_ELT_ISA_AVX512;
#endif
    return SIM_ELT_ISA_AVX2;
}

void sim_elt_i8_row(int isa, int op, const sim_elt_i8_operand *a, const sim_elt_i8_operand *b, int64_t n, int8_t *y,
                    float so, int32_t zo)
{
    int64_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa == SIM_ELT_ISA_AVX512) {
        row_avx512(op, a, b, n, y, so, zo);
        return;
    }
    if (isa == SIM_ELT_ISA_AVX2) i = row_avx2(op, a, b, n, y, so, zo);
#else
    (void)isa;
#endif
    row_c(op, a, b, i, n, y, so, zo);
}
