/*
 * Vector math of vmath.h: every AVX2 function mirrors its scalar C twin operation for operation.
 */
#include "vmath.h"

/* erfc-based Phi constants: erfc(z) ~ t exp(-z^2 + P(t)), t = 1 / (1 + z / 2). */
#define GELU_RSQRT2 0.70710678118654752f
#define ERFC_C0 (-1.26551223f)
#define ERFC_C1 1.00002368f
#define ERFC_C2 0.37409196f
#define ERFC_C3 0.09678418f
#define ERFC_C4 (-0.18628806f)
#define ERFC_C5 0.27886807f
#define ERFC_C6 (-1.13520398f)
#define ERFC_C7 1.48851587f
#define ERFC_C8 (-0.82215223f)
#define ERFC_C9 0.17087277f
/* tanh form: x / (1 + exp(x * (T1 + T3 x^2))), T1 = -2 sqrt(2 / pi), T3 = T1 * 0.044715. */
#define GELU_T1 (-1.5957691216057308f)
#define GELU_T3 (-0.0713548162726f)

static inline float gelu_erf1(float v)
{
    float z = __builtin_fabsf(v) * GELU_RSQRT2;
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = ERFC_C8 + t * ERFC_C9;
    p = ERFC_C7 + t * p;
    p = ERFC_C6 + t * p;
    p = ERFC_C5 + t * p;
    p = ERFC_C4 + t * p;
    p = ERFC_C3 + t * p;
    p = ERFC_C2 + t * p;
    p = ERFC_C1 + t * p;
    p = ERFC_C0 + t * p;
    float h = (0.5f * t) * sim_exp_poly(p - z * z); /* Phi(-|v|) */
    return v * (v < 0.0f ? h : 1.0f - h);
}

static inline float gelu_tanh1(float v)
{
    float q = v * (GELU_T1 + GELU_T3 * (v * v));
    return v / (1.0f + sim_exp_poly(q));
}

static void gelu_c(const float *x, float *y, size_t n, int tanh_form)
{
    if (tanh_form)
        for (size_t i = 0; i < n; i++) y[i] = gelu_tanh1(x[i]);
    else
        for (size_t i = 0; i < n; i++) y[i] = gelu_erf1(x[i]);
}

#ifdef SIM_HAVE_AVX2_VMATH
#define SET1 _mm256_set1_ps
/* SIM_VLANES vectors at once (vmath.h): every lane still sees exactly gelu_erf1's / gelu_tanh1's
 * operations. */
__attribute__((target("avx2"))) static inline void gelu_erf8x4(const float *x, float *y)
{
    const __m256 one = SET1(1.0f), absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 v[SIM_VLANES], z[SIM_VLANES], t[SIM_VLANES], p[SIM_VLANES];
    SIM_EACH4(v[k] = _mm256_loadu_ps(x + 8 * k));
    SIM_EACH4(z[k] = _mm256_mul_ps(_mm256_and_ps(v[k], absmask), SET1(GELU_RSQRT2)));
    SIM_EACH4(t[k] = _mm256_div_ps(one, _mm256_add_ps(one, _mm256_mul_ps(SET1(0.5f), z[k]))));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C8), _mm256_mul_ps(t[k], SET1(ERFC_C9))));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C7), _mm256_mul_ps(t[k], p[k])));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C6), _mm256_mul_ps(t[k], p[k])));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C5), _mm256_mul_ps(t[k], p[k])));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C4), _mm256_mul_ps(t[k], p[k])));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C3), _mm256_mul_ps(t[k], p[k])));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C2), _mm256_mul_ps(t[k], p[k])));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C1), _mm256_mul_ps(t[k], p[k])));
    SIM_EACH4(p[k] = _mm256_add_ps(SET1(ERFC_C0), _mm256_mul_ps(t[k], p[k])));
    SIM_EACH4(p[k] = _mm256_sub_ps(p[k], _mm256_mul_ps(z[k], z[k])));
    sim_exp8x4_avx2(p);
    SIM_EACH4(p[k] = _mm256_mul_ps(_mm256_mul_ps(SET1(0.5f), t[k]), p[k])); /* h = Phi(-|v|) */
    SIM_EACH4(p[k] = _mm256_blendv_ps(_mm256_sub_ps(one, p[k]), p[k], _mm256_cmp_ps(v[k], _mm256_setzero_ps(), _CMP_LT_OQ)));
    SIM_EACH4(_mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(v[k], p[k])));
}

__attribute__((target("avx2"))) static inline void gelu_tanh8x4(const float *x, float *y)
{
    __m256 v[SIM_VLANES], q[SIM_VLANES];
    SIM_EACH4(v[k] = _mm256_loadu_ps(x + 8 * k));
    SIM_EACH4(q[k] = _mm256_mul_ps(v[k], _mm256_add_ps(SET1(GELU_T1), _mm256_mul_ps(SET1(GELU_T3), _mm256_mul_ps(v[k], v[k])))));
    sim_exp8x4_avx2(q);
    SIM_EACH4(_mm256_storeu_ps(y + 8 * k, _mm256_div_ps(v[k], _mm256_add_ps(SET1(1.0f), q[k]))));
}

__attribute__((target("avx2"))) static void gelu_avx2(const float *x, float *y, size_t n, int tanh_form)
{
    size_t i = 0;
    for (; i + 8 * SIM_VLANES <= n; i += 8 * SIM_VLANES) {
        if (tanh_form) gelu_tanh8x4(x + i, y + i);
        else gelu_erf8x4(x + i, y + i);
    }
    if (i < n) { /* the tail through a zero-padded block: lanes do not interact */
        float buf[8 * SIM_VLANES] = {0};
        memcpy(buf, x + i, (n - i) * sizeof(float));
        if (tanh_form) gelu_tanh8x4(buf, buf);
        else gelu_erf8x4(buf, buf);
        memcpy(y + i, buf, (n - i) * sizeof(float));
    }
}
#endif

void sim_gelu_array(int use_avx2, const float *x, float *y, size_t n, int tanh_form)
{
#ifdef SIM_HAVE_AVX2_VMATH
    if (use_avx2) {
        gelu_avx2(x, y, n, tanh_form);
        return;
    }
#endif
    (void)use_avx2;
    gelu_c(x, y, n, tanh_form);
}

/* ---- softmax rows ---- */
static float lanes_sum8(const float *l)
{
    float a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    return (a0 + a2) + (a1 + a3);
}

static void softmax_c(const float *x, float *y, int64_t n)
{
    float m = -__builtin_inff();
    for (int64_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
    float lane[8] = {0};
    for (int64_t j = 0; j < n; j++) {
        float e = sim_exp_poly(x[j] - m);
        lane[j & 7] += e;
        y[j] = e;
    }
    float inv = 1.0f / lanes_sum8(lane);
    for (int64_t j = 0; j < n; j++) y[j] *= inv;
}

#ifdef SIM_HAVE_AVX2_VMATH
__attribute__((target("avx2"))) static void softmax_avx2(const float *x, float *y, int64_t n)
{
    int64_t full = n & ~(int64_t)7;
    __m256 mv = SET1(-__builtin_inff());
    for (int64_t j = 0; j < full; j += 8) mv = _mm256_max_ps(_mm256_loadu_ps(x + j), mv);
    float lm[8], lane[8];
    _mm256_storeu_ps(lm, mv);
    float m = -__builtin_inff();
    for (int l = 0; l < 8; l++) m = lm[l] > m ? lm[l] : m;
    for (int64_t j = full; j < n; j++) m = x[j] > m ? x[j] : m;
    __m256 mm = SET1(m), acc = _mm256_setzero_ps();
    int64_t j0 = 0;
    for (; j0 + 8 * SIM_VLANES <= full; j0 += 8 * SIM_VLANES) { /* the exps interleaved, the sum in j order */
        __m256 e[SIM_VLANES];
        SIM_EACH4(e[k] = _mm256_sub_ps(_mm256_loadu_ps(x + j0 + 8 * k), mm));
        sim_exp8x4_avx2(e);
        SIM_EACH4(_mm256_storeu_ps(y + j0 + 8 * k, e[k]));
        for (int k = 0; k < SIM_VLANES; k++) acc = _mm256_add_ps(acc, e[k]);
    }
    for (int64_t j = j0; j < full; j += 8) {
        __m256 e = sim_exp8_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + j), mm));
        acc = _mm256_add_ps(acc, e);
        _mm256_storeu_ps(y + j, e);
    }
    _mm256_storeu_ps(lane, acc);
    for (int64_t j = full; j < n; j++) {
        float e = sim_exp_poly(x[j] - m);
        lane[j & 7] += e;
        y[j] = e;
    }
    float inv = 1.0f / lanes_sum8(lane);
    __m256 iv = SET1(inv);
    for (int64_t j = 0; j < full; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(_mm256_loadu_ps(y + j), iv));
    for (int64_t j = full; j < n; j++) y[j] *= inv;
}
#endif

void sim_softmax_row(int use_avx2, const float *x, float *y, int64_t n)
{
#ifdef SIM_HAVE_AVX2_VMATH
    if (use_avx2) {
        softmax_avx2(x, y, n);
        return;
    }
#endif
    (void)use_avx2;
    softmax_c(x, y, n);
}

/* ---- LayerNorm rows ---- */
static double lanes_sum8d(const double *l)
{
    double a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    return (a0 + a2) + (a1 + a3);
}

static void moments_c(const float *x, int64_t n, double *mean, double *var)
{
    double lane[8] = {0}, lane2[8] = {0};
    for (int64_t i = 0; i < n; i++) lane[i & 7] += (double)x[i];
    double mu = lanes_sum8d(lane) / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)x[i] - mu;
        lane2[i & 7] += d * d;
    }
    *mean = mu;
    *var = lanes_sum8d(lane2) / (double)n;
}

static void norm_row_c(const float *x, float *y, int64_t n, float m, float inv, const float *scale, const float *bias)
{
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * inv * scale[i] + bias[i];
}

#ifdef SIM_HAVE_AVX2_VMATH
__attribute__((target("avx2"))) static void moments_avx2(const float *x, int64_t n, double *mean, double *var)
{
    int64_t full = n & ~(int64_t)7;
    double lane[8], lane2[8];
    __m256d a0 = _mm256_setzero_pd(), a1 = a0;
    for (int64_t i = 0; i < full; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    _mm256_storeu_pd(lane, a0);
    _mm256_storeu_pd(lane + 4, a1);
    for (int64_t i = full; i < n; i++) lane[i & 7] += (double)x[i];
    double mu = lanes_sum8d(lane) / (double)n;
    __m256d mv = _mm256_set1_pd(mu), b0 = _mm256_setzero_pd(), b1 = b0;
    for (int64_t i = 0; i < full; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), mv);
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), mv);
        b0 = _mm256_add_pd(b0, _mm256_mul_pd(d0, d0));
        b1 = _mm256_add_pd(b1, _mm256_mul_pd(d1, d1));
    }
    _mm256_storeu_pd(lane2, b0);
    _mm256_storeu_pd(lane2 + 4, b1);
    for (int64_t i = full; i < n; i++) {
        double d = (double)x[i] - mu;
        lane2[i & 7] += d * d;
    }
    *mean = mu;
    *var = lanes_sum8d(lane2) / (double)n;
}

__attribute__((target("avx2"))) static void norm_row_avx2(const float *x, float *y, int64_t n, float m, float inv,
                                                          const float *scale, const float *bias)
{
    __m256 mv = SET1(m), iv = SET1(inv);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), iv), _mm256_loadu_ps(scale + i));
        _mm256_storeu_ps(y + i, _mm256_add_ps(v, _mm256_loadu_ps(bias + i)));
    }
    norm_row_c(x + i, y + i, n - i, m, inv, scale + i, bias + i);
}
#endif

void sim_row_moments(int use_avx2, const float *x, int64_t n, double *mean, double *var)
{
#ifdef SIM_HAVE_AVX2_VMATH
    if (use_avx2) {
        moments_avx2(x, n, mean, var);
        return;
    }
#endif
    (void)use_avx2;
    moments_c(x, n, mean, var);
}

void sim_norm_row(int use_avx2, const float *x, float *y, int64_t n, float m, float inv, const float *scale,
                  const float *bias)
{
#ifdef SIM_HAVE_AVX2_VMATH
    if (use_avx2) {
        norm_row_avx2(x, y, n, m, inv, scale, bias);
        return;
    }
#endif
    (void)use_avx2;
    norm_row_c(x, y, n, m, inv, scale, bias);
}

static void matvec_c(const float *mt, const float *v, const float *b, float *y, int64_t n, int64_t k)
{
    for (int64_t i = 0; i < n; i++) y[i] = b ? b[i] : 0.0f;
    for (int64_t j = 0; j < k; j++) {
        const float *row = mt + j * n;
        float a = v[j];
        for (int64_t i = 0; i < n; i++) y[i] += a * row[i];
    }
}

#ifdef SIM_HAVE_AVX2_VMATH
/* Outputs [i0, i0 + 8 * W) of one row, W vectors held in registers over the j loop. */
#define MV_BLOCK(W)                                                                                              \
    do {                                                                                                         \
        __m256 acc[W];                                                                                           \
        for (int w = 0; w < W; w++) acc[w] = b ? _mm256_loadu_ps(b + i + 8 * w) : _mm256_setzero_ps();           \
        for (int64_t j = 0; j < k; j++) {                                                                        \
            const float *row = mt + j * n + i;                                                                   \
            __m256 a = _mm256_set1_ps(v[j]);                                                                     \
            for (int w = 0; w < W; w++) acc[w] = _mm256_add_ps(acc[w], _mm256_mul_ps(a, _mm256_loadu_ps(row + 8 * w))); \
        }                                                                                                        \
        for (int w = 0; w < W; w++) _mm256_storeu_ps(y + i + 8 * w, acc[w]);                                      \
    } while (0)

__attribute__((target("avx2"))) static void matvec_avx2(const float *mt, const float *v, const float *b, float *y,
                                                        int64_t n, int64_t k)
{
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) MV_BLOCK(8);
    for (; i + 8 <= n; i += 8) MV_BLOCK(1);
    for (; i < n; i++) {
        float acc = b ? b[i] : 0.0f;
        for (int64_t j = 0; j < k; j++) acc += v[j] * mt[j * n + i];
        y[i] = acc;
    }
}
#undef MV_BLOCK

/* Four rows at once, 16 outputs per pass: 8 accumulators, two weight loads per j. */
__attribute__((target("avx2"))) static void matvec4_avx2(const float *mt, const float *x, const float *b, float *y,
                                                         int64_t n, int64_t k)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 acc[4][2];
        for (int e = 0; e < 4; e++)
            for (int w = 0; w < 2; w++) acc[e][w] = b ? _mm256_loadu_ps(b + i + 8 * w) : _mm256_setzero_ps();
        for (int64_t j = 0; j < k; j++) {
            const float *row = mt + j * n + i;
            __m256 w0 = _mm256_loadu_ps(row), w1 = _mm256_loadu_ps(row + 8);
            for (int e = 0; e < 4; e++) {
                __m256 a = _mm256_set1_ps(x[e * k + j]);
                acc[e][0] = _mm256_add_ps(acc[e][0], _mm256_mul_ps(a, w0));
                acc[e][1] = _mm256_add_ps(acc[e][1], _mm256_mul_ps(a, w1));
            }
        }
        for (int e = 0; e < 4; e++)
            for (int w = 0; w < 2; w++) _mm256_storeu_ps(y + e * n + i + 8 * w, acc[e][w]);
    }
    if (i < n) /* the tail columns, row by row, through the one-row kernel's order */
        for (int e = 0; e < 4; e++) {
            const float *v = x + e * k;
            for (int64_t c = i; c < n; c++) {
                float acc = b ? b[c] : 0.0f;
                for (int64_t j = 0; j < k; j++) acc += v[j] * mt[j * n + c];
                y[e * n + c] = acc;
            }
        }
}
#endif

void sim_matvec_rows(int use_avx2, const float *mt, const float *x, const float *b, float *y, int64_t rows, int64_t n,
                     int64_t k)
{
#ifdef SIM_HAVE_AVX2_VMATH
    if (use_avx2) {
        int64_t e = 0;
        for (; e + 4 <= rows; e += 4) matvec4_avx2(mt, x + e * k, b, y + e * n, n, k);
        for (; e < rows; e++) matvec_avx2(mt, x + e * k, b, y + e * n, n, k);
        return;
    }
#endif
    (void)use_avx2;
    for (int64_t e = 0; e < rows; e++) matvec_c(mt, x + e * k, b, y + e * n, n, k);
}
