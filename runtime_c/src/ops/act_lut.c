/* Tables for int8 requantisation with a fused activation (see act_lut.h). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "act_lut.h"
#include "ops_common.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

void sim_lut_i8_c(const int8_t tab[256], const int8_t *x, int8_t *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = tab[(int)x[i] + 128];
}

#if defined(__x86_64__) && defined(__GNUC__)
/* 32 codes at a time: index = code + 128; the low nibble picks a byte of each 16-entry sixteenth of the
 * table (vpshufb), the high nibble which sixteenth (compare and blend). */
__attribute__((target("avx2"))) static size_t lut_i8_avx2(const int8_t tab[256], const int8_t *x, int8_t *y, size_t n)
{
    const __m256i bias = _mm256_set1_epi8((char)0x80), low = _mm256_set1_epi8(0x0f);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i idx = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(x + i)), bias);
        __m256i lo = _mm256_and_si256(idx, low);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(idx, 4), low);
        __m256i r = _mm256_setzero_si256();
        for (int h = 0; h < 16; h++) {
            __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(tab + 16 * h)));
            __m256i m = _mm256_cmpeq_epi8(hi, _mm256_set1_epi8((char)h));
            r = _mm256_blendv_epi8(r, _mm256_shuffle_epi8(t, lo), m);
        }
        _mm256_storeu_si256((__m256i *)(void *)(y + i), r);
    }
    return i;
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
/* 64 codes at a time with AVX512-VBMI: index = code + 128; two vpermi2b look its low 7 bits up in the
 * table's halves (128 bytes each, four zmm registers), its top bit picks the half. The last partial
 * vector is a masked load and store, so any n is done here (the 16 blends per 32 codes of the AVX2 form
 * were most of an int8 Mul's, BatchNorm's or unary op's time). */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void lut_i8_vbmi(const int8_t tab[256],
                                                                              const int8_t *x, int8_t *y, size_t n)
{
    const __m512i t0 = _mm512_loadu_si512((const void *)tab), t1 = _mm512_loadu_si512((const void *)(tab + 64));
    const __m512i t2 = _mm512_loadu_si512((const void *)(tab + 128)), t3 = _mm512_loadu_si512((const void *)(tab + 192));
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i idx = _mm512_xor_si512(_mm512_loadu_si512((const void *)(x + i)), bias);
        __m512i lo = _mm512_permutex2var_epi8(t0, idx, t1), hi = _mm512_permutex2var_epi8(t2, idx, t3);
        _mm512_storeu_si512((void *)(y + i), _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi));
    }
    if (i < n) {
        __mmask64 m = (__mmask64)((1ULL << (n - i)) - 1u); /* n - i < 64 */
        __m512i idx = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x + i), bias);
        __m512i lo = _mm512_permutex2var_epi8(t0, idx, t1), hi = _mm512_permutex2var_epi8(t2, idx, t3);
        _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi));
    }
}

/* Whether sim_lut_i8 takes the VBMI form: the CPU has it and RKNNLINK_SIM_ISA leaves the AVX-512
 * kernels on (sim_cpu_wide_isa). */
static int lut_vbmi_on(void)
{
    return (sim_cpu_wide_isa() & SIM_ISA_AVX512VBMI) != 0;
}
#endif

void sim_lut_i8_isa(int isa, const int8_t tab[256], const int8_t *x, int8_t *y, size_t n)
{
    size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa == SIM_LUT_ISA_VBMI) {
        lut_i8_vbmi(tab, x, y, n);
        return;
    }
    if (isa == SIM_LUT_ISA_AVX2) i = lut_i8_avx2(tab, x, y, n);
#else
    (void)isa;
#endif
    sim_lut_i8_c(tab, x + i, y + i, n - i);
}

int sim_lut_i8_best_isa(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (SIM_CPU_AVX2()) return lut_vbmi_on() ? SIM_LUT_ISA_VBMI : SIM_LUT_ISA_AVX2;
#endif
    return SIM_LUT_ISA_C;
}

void sim_lut_i8(const int8_t tab[256], const int8_t *x, int8_t *y, size_t n)
{
    sim_lut_i8_isa(sim_lut_i8_best_isa(), tab, x, y, n);
}

enum { LUT_CELLS = 4096, LUT_SAMPLES = 16, LUT_NEAR = 48 };

int8_t sim_act_lut_direct(uint32_t act, float p0, float p1, float so, int32_t zo, float real)
{
    return sim_sat_i8(sim_round_away(sim_apply_act(act, p0, p1, real) / so) + (float)zo);
}

/* sat(round_away(v / so) + zo): non-decreasing in v, so one code for a whole interval of values
 * when its two ends get the same code. */
static int32_t code_of_value(float so, int32_t zo, float v)
{
    return sim_sat_i8(sim_round_away(v / so) + (float)zo);
}

/* The code of every finite real x >= R (high) or x <= -R (low), R >= 7.99, or SIM_ACT_LUT_DIRECT: the
 * activation's float values over that tail lie in [vmin, vmax] (bounds with a few ulp of slack for
 * expf/tanhf rounding), and both ends must quantise to the same code. */
static int32_t tail_code(uint32_t act, float p0, float p1, float so, int32_t zo, int high, float R)
{
    float x = high ? R : -R, e = sim_apply_act(act, p0, p1, x), vmin, vmax;
    switch (act) {
    case SIM_ACT_SIGMOID: /* increasing, in [0, 1] */
        vmin = high ? e - 1e-6f : 0.0f;
        vmax = high ? 1.0f : e * 1.001f + 1e-30f;
        break;
    case SIM_ACT_TANH: /* increasing, in [-1, 1] */
        vmin = high ? e - 1e-6f : -1.0f;
        vmax = high ? 1.0f : e + 1e-6f;
        break;
    case SIM_ACT_HARDSIGMOID: /* clamp(p0 x + p1, 0, 1): monotone in x, its direction p0's sign */
        if (!(fabsf(p0) <= FLT_MAX && fabsf(p1) <= FLT_MAX)) return SIM_ACT_LUT_DIRECT;
        if ((p0 >= 0.0f) == (high != 0)) vmin = e, vmax = 1.0f;
        else vmin = 0.0f, vmax = e;
        break;
    case SIM_ACT_HARDSWISH: /* x > 3: x * 6 / 6, increasing; x < -3: -0 */
        vmin = high ? e : 0.0f;
        vmax = high ? __builtin_inff() : 0.0f;
        break;
    case SIM_ACT_SILU: /* x >= R: x * sigmoid(x) >= R * sigmoid(R); x <= -R: |x sigmoid(x)| <= R e^-R */
        vmin = high ? R * (sim_apply_act(SIM_ACT_SIGMOID, 0, 0, R) - 1e-6f) : -(R * expf(-R) * 1.001f + 1e-30f);
        vmax = high ? __builtin_inff() : 0.0f;
        break;
    default: return SIM_ACT_LUT_DIRECT;
    }
    int32_t a = code_of_value(so, zo, vmin), b = code_of_value(so, zo, vmax);
    return a == b ? a : SIM_ACT_LUT_DIRECT;
}

/* Whether act is monotone on [a, b]: then a cell whose two ends share a code has it throughout, and
 * the samples looking for a second switch are skipped (they were most of the build time). SiLU's
 * minimum is at -1.278, HardSwish's at -1.5; the other activations are monotone everywhere. */
static int monotone_on(uint32_t act, float p0, float a, float b)
{
    switch (act) {
    case SIM_ACT_SIGMOID:
    case SIM_ACT_TANH:
    case SIM_ACT_HARDSIGMOID:
    case SIM_ACT_RELU: return 1;
    case SIM_ACT_LEAKY: return p0 >= 0.0f;
    case SIM_ACT_SILU: return b < -1.3f || a > -1.25f;
    case SIM_ACT_HARDSWISH: return b < -1.55f || a > -1.45f;
    default: return 0;
    }
}

/* Floats in increasing order as increasing unsigned keys (-0 just below +0). */
static uint32_t key_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static float float_of(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int64_t cell_of(const sim_act_lut *t, uint32_t k)
{
    float f = (float_of(k) - t->lo) * t->inv;
    return f >= 0.0f ? (f < (float)t->n ? (int64_t)f : t->n) : -1;
}

/* Smallest key in [a, b] whose cell is >= i (b + 1 when none). */
static uint32_t first_key_of_cell(const sim_act_lut *t, uint32_t a, uint32_t b, int64_t i)
{
    uint64_t lo = a, hi = (uint64_t)b + 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (cell_of(t, (uint32_t)mid) >= i) hi = mid;
        else lo = mid + 1;
    }
    return (uint32_t)lo;
}

int sim_act_lut_build(sim_act_lut *t, uint32_t act, float p0, float p1, float so, int32_t zo)
{
    memset(t, 0, sizeof *t);
    t->below = t->above = SIM_ACT_LUT_DIRECT;
    float olo = (-128.0f - (float)zo) * so, ohi = (127.0f - (float)zo) * so;
    float r = fabsf(olo) > fabsf(ohi) ? fabsf(olo) : fabsf(ohi);
    r = r > 8.0f ? r : 8.0f;
    if (!(r < 1e30f) || !(so > 0.0f)) return 0; /* no table: every value is evaluated directly */
    t->n = LUT_CELLS;
    t->lo = -r;
    t->inv = (float)LUT_CELLS / (2.0f * r);
    t->thr = malloc((size_t)t->n * sizeof(float));
    t->code = malloc((size_t)t->n * 2 * sizeof(int16_t));
    if (!t->thr || !t->code) {
        sim_act_lut_free(t);
        return SIM_ERR_MALLOC;
    }
    uint32_t kmin = key_of(-r), kmax = key_of(r);
    uint32_t start = first_key_of_cell(t, kmin, kmax, 0);
    for (int64_t i = 0; i < t->n; i++) {
        uint32_t next = first_key_of_cell(t, start, kmax, i + 1);
        int16_t *c = t->code + 2 * i;
        c[0] = c[1] = SIM_ACT_LUT_DIRECT;
        t->thr[i] = __builtin_inff();
        if (next > start) {
            uint32_t last = next - 1;
            int8_t g0 = sim_act_lut_direct(act, p0, p1, so, zo, float_of(start));
            int8_t g1 = sim_act_lut_direct(act, p0, p1, so, zo, float_of(last));
            uint32_t sw = next; /* first key of the upper code */
            if (g0 != g1) {
                uint32_t a = start, b = last; /* g(a) == g0, g(b) != g0 */
                while (b - a > 1) {
                    uint32_t m = a + (b - a) / 2;
                    if (sim_act_lut_direct(act, p0, p1, so, zo, float_of(m)) == g0) a = m;
                    else b = m;
                }
                sw = b;
            }
            /* a cell with a second switch (an extremum, or two codes apart) stays direct */
            int ok = 1, samples = LUT_SAMPLES;
            if (g0 == g1 && monotone_on(act, p0, float_of(start), float_of(last))) samples = 0;
            for (int s = 1; s <= samples && ok; s++) {
                uint32_t k = start + (uint32_t)((uint64_t)(last - start) * (uint64_t)s / (uint64_t)(samples + 1));
                int8_t v = sim_act_lut_direct(act, p0, p1, so, zo, float_of(k));
                ok = v == (k < sw ? g0 : g1);
            }
            /* float rounding can make the code flicker right at a switch: every float near it must agree */
            if (g0 != g1) {
                uint32_t a = sw - start > LUT_NEAR ? sw - LUT_NEAR : start;
                uint32_t b = last - sw > LUT_NEAR ? sw + LUT_NEAR : last;
                for (uint32_t k = a; k <= b && ok; k++)
                    ok = sim_act_lut_direct(act, p0, p1, so, zo, float_of(k)) == (k < sw ? g0 : g1);
            }
            if (ok) {
                c[0] = g0;
                c[1] = g1;
                t->thr[i] = g0 == g1 ? __builtin_inff() : float_of(sw);
            }
        }
        start = next;
    }
    /* the vector lookup's form: threshold bits and code pair side by side, one 64-bit gather per cell */
    t->cell = malloc((size_t)t->n * sizeof(uint64_t));
    if (!t->cell) {
        sim_act_lut_free(t);
        return SIM_ERR_MALLOC;
    }
    for (int64_t i = 0; i < t->n; i++) {
        uint32_t tb, pair;
        memcpy(&tb, &t->thr[i], sizeof tb);
        memcpy(&pair, t->code + 2 * i, sizeof pair);
        t->cell[i] = (uint64_t)tb | (uint64_t)pair << 32;
    }
    /* reals out of the window: f < 0 means real < lo = -r; f >= n can mean real a rounding below r */
    float R = r * (1.0f - 1e-4f);
    t->below = tail_code(act, p0, p1, so, zo, 0, R);
    t->above = tail_code(act, p0, p1, so, zo, 1, R);
    return 0;
}

void sim_act_lut_free(sim_act_lut *t)
{
    free(t->thr);
    free(t->code);
    free(t->cell);
    t->thr = NULL;
    t->code = NULL;
    t->cell = NULL;
    t->n = 0;
    t->below = t->above = SIM_ACT_LUT_DIRECT;
}
