/*
 * Int8 requantisation with a fused transcendental activation (Sigmoid, SiLU, HardSwish, Tanh, ...)
 * through a table instead of one expf/tanhf per output. The direct result is
 * g(real) = sat(round_away(act(real) / so) + zo) with real = acc * rscale[ch]: a step function of the
 * float `real` with at most 256 values. The table splits a window of reals into cells; per cell it
 * holds the code below and above the one switch point inside it (found by bisection over the floats
 * of the cell and checked at sample points), or a marker sending that cell and NaN to the direct
 * evaluation. Finite reals below and above the window take one tail code each when the activation's
 * float values over that whole tail are bounded inside one code's interval (a Sigmoid's saturated
 * logits, HardSwish's zero side, ...), else the direct evaluation. So the result is the direct one,
 * for any channel scale.
 */
#ifndef RKNNLINK_OPS_ACT_LUT_H
#define RKNNLINK_OPS_ACT_LUT_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sim_act_lut {
    float lo, inv;        /* cell of real r: (int)((r - lo) * inv) when in [0, n) */
    int32_t n;
    float *thr;           /* per cell: reals >= thr take the upper code */
    int16_t *code;        /* per cell: {lower, upper} code, SIM_ACT_LUT_DIRECT when not tabulated */
    uint64_t *cell;       /* per cell: thr's bits | the code pair << 32 (one gather in the vector lookup) */
    int32_t below, above; /* code of finite reals below / above the window, or SIM_ACT_LUT_DIRECT */
} sim_act_lut;

#define SIM_ACT_LUT_DIRECT 0x7fff

/* Builds the table for activation act (p0, p1) into output scale so / zero point zo; 0 or SIM_ERR_MALLOC. */
int sim_act_lut_build(sim_act_lut *t, uint32_t act, float p0, float p1, float so, int32_t zo);
void sim_act_lut_free(sim_act_lut *t);
/* The direct evaluation g(real) the table reproduces. */
int8_t sim_act_lut_direct(uint32_t act, float p0, float p1, float so, int32_t zo, float real);

/* y[i] = tab[x[i] + 128] for n codes: the int8 kernels' per-tensor, per-channel and per-row 256-entry
 * tables (unary ops, BatchNorm, element-wise ops with a row-constant operand, Resize, ...). An AVX2 path
 * (16 in-lane shuffles) and the portable loop; a lookup, so both give the same bytes. x and y may be
 * the same array. */
void sim_lut_i8(const int8_t tab[256], const int8_t *x, int8_t *y, size_t n);
/* The portable loop of sim_lut_i8 (the reference its tests compare with). */
void sim_lut_i8_c(const int8_t tab[256], const int8_t *x, int8_t *y, size_t n);
/* Forms of sim_lut_i8: the portable loop, AVX2 (16 in-lane shuffles per 32 codes), AVX512-VBMI (two
 * 128-byte permutes per 64 codes); all give the same bytes (tests compare them). */
enum { SIM_LUT_ISA_C = 0, SIM_LUT_ISA_AVX2 = 1, SIM_LUT_ISA_VBMI = 2 };
/* The form sim_lut_i8 takes on this CPU (VBMI only while RKNNLINK_SIM_ISA leaves AVX-512 on). */
int sim_lut_i8_best_isa(void);
/* sim_lut_i8 in the given form (one the CPU runs: at most sim_lut_i8_best_isa's, or AVX2 on a VBMI CPU). */
void sim_lut_i8_isa(int isa, const int8_t tab[256], const int8_t *x, int8_t *y, size_t n);

/* The table's code for real, or SIM_ACT_LUT_DIRECT when the caller must evaluate directly. */
static inline int32_t sim_act_lut_get(const sim_act_lut *t, float real)
{
    float f = (real - t->lo) * t->inv;
    if (f >= 0.0f && f < (float)t->n) {
        int32_t i = (int32_t)f;
        return t->code[2 * i + (real >= t->thr[i])];
    }
    if (f < 0.0f) return real >= -FLT_MAX ? t->below : SIM_ACT_LUT_DIRECT;
    return f >= (float)t->n && real <= FLT_MAX ? t->above : SIM_ACT_LUT_DIRECT; /* NaN and inf: direct */
}

#endif
