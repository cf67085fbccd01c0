/*
 * Blocked GEMM used by Conv, ConvTranspose, Gemm and MatMul: C[M,N] = A[M,K] * B[K,N] (+ epilogue).
 * A is packed into panels of SIM_MR rows (K x MR, row values adjacent), B into panels of SIM_NR
 * columns (K x NR). Weights are packed once at prepare time; activations per call into scratch.
 * An AVX2+FMA micro-kernel is used when the CPU has it, a portable C one otherwise.
 */
#ifndef RKNNLINK_OPS_GEMM_KERNEL_H
#define RKNNLINK_OPS_GEMM_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#define SIM_MR 6
#define SIM_NR 16

struct sim_i8_epi;

/* Epilogue of C = A*B: optional per-row bias, then clamp to [lo, hi] when `clamp` is set.
 * With `q` set the accumulators are exact integers (int8 operands with zero points removed, small
 * enough depth) and are requantised to int8 at c8 (row stride ldc8) instead of stored as floats;
 * row i is channel ch0 + i. */
typedef struct sim_gemm_epi {
    const float *bias_row; /* M entries or NULL */
    int clamp;
    float lo, hi;
    const struct sim_i8_epi *q;
    int8_t *c8;
    int64_t ldc8, ch0;
    int f16;               /* float outputs: round to binary16 after bias and clamp (FLOAT16 tensors) */
    /* K split into chunks (float epilogues only): acc_in starts each sum from the partial sum in C instead
     * of +0, acc_out stores the raw sum (no bias, clamp or rounding) for the next chunk. The chain of fma
     * over k is the same as in one pass, so the result has the same bits. Not for m == 1 (the gemv path
     * sums in another order). */
    int acc_in, acc_out;
} sim_gemm_epi;

static inline int64_t sim_round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* Floats needed for packed A (M x K) / packed B (K x N). */
size_t sim_pack_a_size(int64_t m, int64_t k);
size_t sim_pack_b_size(int64_t k, int64_t n);
/* Element (i, j) of the source is src[i * rs + j * cs]: transposed sources need no copy. */
void sim_pack_a(const float *src, int64_t rs, int64_t cs, int64_t m, int64_t k, float *dst);
void sim_pack_b(const float *src, int64_t rs, int64_t cs, int64_t k, int64_t n, float *dst);
/* Packs row k of B (n values in `row`) into panel layout starting at column 0 of the block. */
void sim_pack_b_row(const float *row, int64_t k, int64_t kdim, int64_t n, float *dst);
/* Zero-fills the padding columns (n..round_up(n, NR)) of a packed B block. */
void sim_pack_b_pad(int64_t kdim, int64_t n, float *dst);

/* C (ldc row stride, unit column stride) = packed A * packed B, rows [0,m), columns [0,n). */
void sim_gemm_packed(int use_avx2, const float *pa, const float *pb, int64_t m, int64_t n, int64_t k,
                     float *c, int64_t ldc, const sim_gemm_epi *epi);

/* As sim_gemm_packed, but B is read in place (row stride ldb, unit column stride); the last partial
 * column tile is packed into `tail` (sim_pack_b_size(k, SIM_NR) floats). */
void sim_gemm_direct_b(int use_avx2, const float *pa, const float *b, int64_t ldb, int64_t m, int64_t n, int64_t k,
                       float *c, int64_t ldc, const sim_gemm_epi *epi, float *tail);

/* Columns per B block so that a K x block panel stays in L2. */
int64_t sim_gemm_block_cols(int64_t k);

#endif
