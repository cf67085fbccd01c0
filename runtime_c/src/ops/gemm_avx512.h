/*
 * AVX-512 float GEMM (x86-64 with avx512f): same packed layout and bit-identical results as the
 * AVX2 micro-kernel of gemm_kernel.c, with a tile four B panels wide. sim_gemm_packed and
 * sim_gemm_direct_b call it for float epilogues when sim_gemm_avx512_on(); elsewhere the stubs
 * report it off and are never called.
 */
#ifndef RKNNLINK_OPS_GEMM_AVX512_H
#define RKNNLINK_OPS_GEMM_AVX512_H

#include "gemm_kernel.h"

/* use_avx2 value for sim_gemm_packed / sim_gemm_direct_b: the AVX2 kernel even where AVX-512 is on
 * (tests compare the two in one process). __builtin_cpu_supports never returns it. */
#define SIM_GEMM_AVX2_ONLY (-1)

/* The CPU has the instructions (avx512f, fma, f16c). */
int sim_gemm_avx512_supported(void);
/* Process-wide constant, decided on first use: supported, and not turned off with
 * RKNNLINK_SIM_ISA=avx2 (A/B timing; results are the same either way). */
int sim_gemm_avx512_on(void);

/* As sim_gemm_packed / sim_gemm_direct_b with use_avx2 set; float epilogues only (epi->q NULL).
 * Call only when sim_gemm_avx512_supported(). */
void sim_gemm_packed_avx512(const float *pa, const float *pb, int64_t m, int64_t n, int64_t k, float *c,
                            int64_t ldc, const sim_gemm_epi *epi);
void sim_gemm_direct_b_avx512(const float *pa, const float *b, int64_t ldb, int64_t m, int64_t n, int64_t k,
                              float *c, int64_t ldc, const sim_gemm_epi *epi, float *tail);

#endif
