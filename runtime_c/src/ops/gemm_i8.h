/*
 * Int8 GEMM with exact int32 accumulation: operands are widened to int16 with their zero points
 * already subtracted and packed in k-pairs, so one multiply-add instruction (pmaddwd) does two
 * MACs per lane. The epilogue adds the int32 bias and requantises to int8 (round half away from
 * zero, saturation), applying the fused activation; or stores raw int32 for callers that scatter.
 */
#ifndef RKNNLINK_OPS_GEMM_I8_H
#define RKNNLINK_OPS_GEMM_I8_H

#include <stddef.h>
#include <stdint.h>

#include "act_lut.h"
#include "gemm_kernel.h"
#include "ops_common.h"

typedef struct sim_i8_epi {
    const int32_t *bias;  /* per channel or NULL */
    const float *mult;    /* per channel: real scale / output scale */
    const float *rscale;  /* per channel: real scale (accumulator unit), for non-clamp activations */
    int per_col;          /* channel = column (Gemm/MatMul) instead of row (Conv) */
    int32_t zo;
    float so;
    uint32_t act;
    float p0, p1;
    int clamp;            /* Relu/Clip folded into [lo, hi] in output-scale units */
    float lo, hi;
    float qlo, qhi;       /* output-code bounds (sim_i8_epi_bounds), set by sim_i8_epi_act */
    const sim_act_lut *lut; /* table of a transcendental activation (sim_i8_epi_lut) or NULL */
} sim_i8_epi;

size_t sim_pack_a16_size(int64_t m, int64_t k);
size_t sim_pack_b16_size(int64_t k, int64_t n);
/* A element (i, k) = src[i * rs + k * cs] (int16, zero points already removed). */
void sim_pack_a16(const int16_t *src, int64_t rs, int64_t cs, int64_t m, int64_t k, int16_t *dst);
/* B element (k, j) = src[k * rs + j * cs] - zp. */
void sim_pack_b16_i8(const int8_t *src, int64_t rs, int64_t cs, int64_t k, int64_t n, int32_t zp, int16_t *dst);
void sim_pack_b16(const int16_t *src, int64_t rs, int64_t cs, int64_t k, int64_t n, int16_t *dst);
/* sim_pack_b16_pad zeroes the padding of a packed B block of kdim rows and n columns. */
void sim_pack_b16_pad(int64_t kdim, int64_t n, int16_t *dst);
/* Rows 2q and 2q + 1 (n values each in r0, r1) into a packed B block of kdim rows at once. */
void sim_pack_b16_pair(const int16_t *r0, const int16_t *r1, int64_t q, int64_t kdim, int64_t n, int16_t *dst);

/* Fills epi's activation fields from the op and output scale/zero point. */
void sim_i8_epi_act(sim_i8_epi *epi, const sim_op *op, float so, int32_t zo);
/* Builds *lut for epi's activation when it is neither none nor a clamp, and points epi at it. */
int sim_i8_epi_lut(sim_i8_epi *epi, sim_act_lut *lut);
/* Output-code bounds [qlo, qhi]: the int8 range narrowed by a fused Relu/Clip (rounded). */
void sim_i8_epi_bounds(const sim_i8_epi *epi, float *qlo, float *qhi);
/* Requantises one accumulator of channel ch. */
int8_t sim_i8_requant(const sim_i8_epi *epi, int32_t acc, int64_t ch);

/* y[j] = sim_i8_requant(epi, acc[j], col0 + j) for j < n: one output row whose channel is the column
 * (Gemm/MatMul per-column scales), acc with the bias already added; 8 at a time on AVX2, the codes of
 * the GEMM's own per-column epilogue. */
void sim_i8_requant_cols(int use_avx2, const sim_i8_epi *epi, const int32_t *acc, int64_t n, int64_t col0, int8_t *y);

/* y[e] = sim_i8_requant(epi, acc[e] + bias, ch) for e < n (acc exact integer-valued floats, or int32 in
 * the row32 form), through the activation table 8 at a time on AVX2. */
void sim_i8_requant_act_row(int use_avx2, const sim_i8_epi *epi, const float *acc, int32_t bias, int64_t n, int64_t ch,
                            int8_t *y);
void sim_i8_requant_act_row32(int use_avx2, const sim_i8_epi *epi, const int32_t *acc, int32_t bias, int64_t n,
                              int64_t ch, int8_t *y);

/* The same for a tile of rows: row r (accumulators at accf or acc32 + r * lda, exact integer-valued floats
 * or int32) is channel ch0 + r with bias[r] (none when NULL), stored at y + r * ldy. */
void sim_i8_requant_act_tile(int use_avx2, const sim_i8_epi *epi, const float *accf, const int32_t *acc32,
                             int64_t lda, int rows, int64_t n, int64_t ch0, const int32_t *bias, int8_t *y,
                             int64_t ldy);

/* Forms of sim_i8_requant_act_tile: portable, AVX2 (8 lanes), AVX-512 (16 lanes, masked tails; SiLU,
 * Sigmoid, Tanh, HardSwish, HardSigmoid, the others as AVX2); all give sim_i8_requant's codes. */
enum { SIM_I8_ACT_ISA_C = 0, SIM_I8_ACT_ISA_AVX2 = 1, SIM_I8_ACT_ISA_AVX512 = 2 };
/* The form sim_i8_requant_act_tile takes (AVX-512 only while RKNNLINK_SIM_ISA leaves it on). */
int sim_i8_act_best_isa(int use_avx2);
void sim_i8_requant_act_tile_isa(int isa, const sim_i8_epi *epi, const float *accf, const int32_t *acc32,
                                 int64_t lda, int rows, int64_t n, int64_t ch0, const int32_t *bias, int8_t *y,
                                 int64_t ldy);

/* Any activation: y[e] = sim_i8_requant(epi, acc[e] + bias, ch), 8 at a time on AVX2 (linear ones with the
 * GEMM epilogue's vector rounding). */
void sim_i8_requant_row32(int use_avx2, const sim_i8_epi *epi, const int32_t *acc, int32_t bias, int64_t n, int64_t ch,
                          int8_t *y);

/* Requantises n accumulators of channel ch held as exact integer-valued floats (depthwise path). */
void sim_i8_requant_plane(int use_avx2, const sim_i8_epi *epi, const float *acc, int64_t n, int64_t ch, int8_t *y);

/* C = A * B for rows [0, m) and columns [0, n). Channel indices are row0 + i or col0 + j.
 * With c8: requantised int8 at c8[i * rs + j * cs]; else raw int32 at c32[i * rs + j * cs]. */
void sim_gemm_i8_packed(int use_avx2, const int16_t *pa, const int16_t *pb, int64_t m, int64_t n, int64_t k,
                        int8_t *c8, int32_t *c32, int64_t rs, int64_t cs, int64_t row0, int64_t col0,
                        const sim_i8_epi *epi);

/* Instruction sets of the int8 GEMM kernel; all give the same codes bit for bit (tests compare them). */
enum { SIM_I8_ISA_C = 0, SIM_I8_ISA_AVX2 = 1, SIM_I8_ISA_VNNI = 2 };
/* The fastest kernel the CPU runs: VNNI (vpdpwssd) when use_avx2 and AVX512-VNNI/VL are present. */
int sim_gemm_i8_best_isa(int use_avx2);
/* sim_gemm_i8_packed with the kernel chosen by the caller (isa must be one the CPU supports). */
void sim_gemm_i8_packed_isa(int isa, const int16_t *pa, const int16_t *pb, int64_t m, int64_t n, int64_t k,
                            int8_t *c8, int32_t *c32, int64_t rs, int64_t cs, int64_t row0, int64_t col0,
                            const sim_i8_epi *epi);

#endif
