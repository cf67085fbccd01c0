/*
 * Int8 Add, Sub and Mul of one row in one pass: y[i] = quant(deq(a[i]) op deq(b[i])), each operand an
 * int8 activation (dequantised on the fly) or float data, walked with stride 1 or broadcast (stride 0).
 * The same float operations in the same order as eltwise.c's chunked path (dequantise into a buffer, the
 * operation, sim_quant_array), so the bytes are the same; the vector forms only skip the buffers.
 * Residual Adds of two int8 tensors and SE-gate Muls (a per-channel scale on small maps) spend most of
 * their time there.
 */
#ifndef RKNNLINK_OPS_ELT_I8_H
#define RKNNLINK_OPS_ELT_I8_H

#include <stdint.h>

typedef struct sim_elt_i8_operand {
    const int8_t *q; /* int8 data, or NULL for float data f */
    const float *f;
    int64_t stride;  /* 0 or 1 */
    float scale;     /* of q */
    int32_t zp;
} sim_elt_i8_operand;

enum { SIM_ELT_I8_ADD = 0, SIM_ELT_I8_SUB = 1, SIM_ELT_I8_MUL = 2 };
/* Forms: portable loop, AVX2, AVX-512 (masked tails); all give the same bytes (tests compare them). */
enum { SIM_ELT_ISA_C = 0, SIM_ELT_ISA_AVX2 = 1, SIM_ELT_ISA_AVX512 = 2 };

/* The fastest form on this CPU (AVX-512 only while RKNNLINK_SIM_ISA leaves it on). */
int sim_elt_i8_best_isa(void);
/* y[i] = quant(a[i] op b[i], so, zo) for i < n in the given form (one the CPU runs). */
void sim_elt_i8_row(int isa, int op, const sim_elt_i8_operand *a, const sim_elt_i8_operand *b, int64_t n, int8_t *y,
                    float so, int32_t zo);

#endif
