/* The AVX-512 float GEMM against the AVX2 micro-kernel (bit for bit) and the portable one (close),
 * over row/column/depth tails and every float epilogue; skipped where the CPU lacks AVX-512. */
#include "harness.h"
#include "ops/gemm_avx512.h"
#include "ops/gemm_i8.h"

static uint32_t g_seed = 12345u;

/* Mostly uniform values; a few special ones (signed zeros, huge, NaN) when `special`. */
static float val(int special)
{
    g_seed = g_seed * 1664525u + 1013904223u;
    uint32_t r = g_seed >> 24;
    if (special && r < 6) {
        static const float s[] = {0.0f, -0.0f, 3.0e38f, -3.0e38f, NAN, 1.0e-39f};
        return s[r];
    }
    return tg_randf();
}

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

/* sim_gemm_packed and sim_gemm_direct_b with the AVX2 kernel, the dispatched one (AVX-512 here), the
 * AVX-512 entry points themselves and the portable kernel; mode selects the epilogue. */
static void float_case(int64_t m, int64_t n, int64_t k, int mode, int special)
{
    float *a = malloc((size_t)(m * k + 1) * sizeof(float)), *b = malloc((size_t)(k * n + 1) * sizeof(float));
    float *pa = malloc(sim_pack_a_size(m, k) * sizeof(float) + 4), *pb = malloc(sim_pack_b_size(k, n) * sizeof(float) + 4);
    float *tail = malloc(sim_pack_b_size(k, SIM_NR) * sizeof(float) + 4);
    float *bias = malloc((size_t)m * sizeof(float));
    int64_t ldc = n + 3, cn = m * ldc;
    float *c[6];
    for (int v = 0; v < 6; v++) {
        c[v] = malloc((size_t)cn * sizeof(float));
        for (int64_t e = 0; e < cn; e++) c[v][e] = 77.0f; /* the padding columns must stay untouched */
    }
    for (int64_t e = 0; e < m * k; e++) a[e] = val(special);
    for (int64_t e = 0; e < k * n; e++) b[e] = val(special);
    for (int64_t e = 0; e < m; e++) bias[e] = val(0);
    sim_pack_a(a, k, 1, m, k, pa);
    sim_pack_b(b, n, 1, k, n, pb);
    sim_gemm_epi epi = {0};
    epi.bias_row = mode >= 1 ? bias : NULL;
    if (mode == 2 || mode == 4) epi.clamp = 1, epi.lo = 0.0f, epi.hi = mode == 2 ? INFINITY : 6.0f;
    if (mode == 3) epi.clamp = 1, epi.lo = -0.25f, epi.hi = 0.5f;
    epi.f16 = mode == 4 || mode == 5;
    sim_gemm_packed(SIM_GEMM_AVX2_ONLY, pa, pb, m, n, k, c[0], ldc, &epi);
    sim_gemm_packed(1, pa, pb, m, n, k, c[1], ldc, &epi);
    sim_gemm_direct_b(SIM_GEMM_AVX2_ONLY, pa, b, n, m, n, k, c[2], ldc, &epi, tail);
    sim_gemm_direct_b(1, pa, b, n, m, n, k, c[3], ldc, &epi, tail);
    sim_gemm_direct_b_avx512(pa, b, n, m, n, k, c[4], ldc, &epi, tail);
    sim_gemm_packed(0, pa, pb, m, n, k, c[5], ldc, &epi);
    char what[160];
    snprintf(what, sizeof what, "avx512 gemm m%lld n%lld k%lld epi%d%s: packed bit-identical to AVX2", (long long)m,
             (long long)n, (long long)k, mode, special ? " special" : "");
    tg_check_true(what, same_bits(c[0], c[1], cn));
    snprintf(what, sizeof what, "avx512 gemm m%lld n%lld k%lld epi%d%s: direct B bit-identical to AVX2", (long long)m,
             (long long)n, (long long)k, mode, special ? " special" : "");
    /* (with m == 1 packed B takes the matrix-vector kernel, which sums in another order) */
    tg_check_true(what, same_bits(c[2], c[3], cn) && same_bits(c[2], c[4], cn) && (m == 1 || same_bits(c[0], c[2], cn)));
    if (m > 1) {
        /* the entry point itself (m == 1 goes to the AVX2 matrix-vector kernel in both paths) */
        for (int64_t e = 0; e < cn; e++) c[4][e] = 77.0f;
        sim_gemm_packed_avx512(pa, pb, m, n, k, c[4], ldc, &epi);
        snprintf(what, sizeof what, "avx512 gemm m%lld n%lld k%lld epi%d: entry point bit-identical", (long long)m,
                 (long long)n, (long long)k, mode);
        tg_check_true(what, same_bits(c[0], c[4], cn));
    }
    if (!special) {
        /* the portable kernel rounds the product and the sum apart: close, not identical */
        snprintf(what, sizeof what, "avx512 gemm m%lld n%lld k%lld epi%d: close to the portable kernel", (long long)m,
                 (long long)n, (long long)k, mode);
        tg_check_close(what, c[1], c[5], cn, epi.f16 ? 2e-2f : 1e-4f, epi.f16 ? 2e-3f : 1e-4f);
    }
    for (int v = 0; v < 6; v++) free(c[v]);
    free(a), free(b), free(pa), free(pb), free(tail), free(bias);
}

/* int8 requantising epilogues stay on the AVX2 kernel: the dispatched call must equal it. */
static void requant_case(int64_t m, int64_t n, int64_t k)
{
    float *a = malloc((size_t)(m * k) * sizeof(float)), *b = malloc((size_t)(k * n) * sizeof(float));
    float *pa = malloc(sim_pack_a_size(m, k) * sizeof(float)), *pb = malloc(sim_pack_b_size(k, n) * sizeof(float));
    int32_t *qb = malloc((size_t)m * sizeof(int32_t));
    float *mult = malloc((size_t)m * sizeof(float));
    int8_t *o[2] = {malloc((size_t)(m * n)), malloc((size_t)(m * n))};
    for (int64_t e = 0; e < m * k; e++) a[e] = (float)(int)(val(0) * 100.0f);
    for (int64_t e = 0; e < k * n; e++) b[e] = (float)(int)(val(0) * 100.0f);
    for (int64_t e = 0; e < m; e++) qb[e] = (int32_t)(val(0) * 1000.0f), mult[e] = 0.0005f + 0.001f * (float)e;
    sim_pack_a(a, k, 1, m, k, pa);
    sim_pack_b(b, n, 1, k, n, pb);
    sim_i8_epi q = {0};
    q.bias = qb, q.mult = mult, q.zo = 3, q.act = SIM_ACT_NONE, q.qlo = -128.0f, q.qhi = 127.0f;
    for (int v = 0; v < 2; v++) {
        sim_gemm_epi epi = {0};
        epi.q = &q, epi.c8 = o[v], epi.ldc8 = n;
        sim_gemm_packed(v ? 1 : SIM_GEMM_AVX2_ONLY, pa, pb, m, n, k, NULL, 0, &epi);
    }
    char what[128];
    snprintf(what, sizeof what, "avx512 dispatch m%lld n%lld k%lld: int8 requant epilogue unchanged", (long long)m,
             (long long)n, (long long)k);
    tg_check_true(what, memcmp(o[0], o[1], (size_t)(m * n)) == 0);
    free(a), free(b), free(pa), free(pb), free(qb), free(mult), free(o[0]), free(o[1]);
}

void test_gemm_avx512(void)
{
    if (!SIM_CPU_AVX2() || !sim_gemm_avx512_supported()) {
        printf("avx512 gemm: skipped (this build or CPU has no AVX-512)\n");
        return;
    }
    static const int64_t ms[] = {1, 2, 5, 6, 7, 12, 13, 25};
    static const int64_t ns[] = {1, 5, 16, 17, 31, 32, 48, 63, 64, 65, 80, 100, 129, 200};
    static const int64_t ks[] = {0, 1, 3, 16, 37, 150};
    for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
            for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++)
                for (int mode = 0; mode < 6; mode++) float_case(ms[im], ns[in], ks[ik], mode, (int)((im + in + ik + mode) % 3 == 0));
    requant_case(6, 64, 40);
    requant_case(13, 100, 9);
    requant_case(7, 33, 300);
}
