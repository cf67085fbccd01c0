/*
 * Int8 path of Gemm and MatMul: int32 accumulation with int8 weights (per-tensor or per-output-
 * column quantisation), requantised to the output with round-half-away-from-zero.
 */
#ifndef RKNNLINK_OPS_MATMUL_I8_H
#define RKNNLINK_OPS_MATMUL_I8_H

#include "ops_common.h"

typedef struct sim_mm_i8 sim_mm_i8;

int sim_mm_i8_prepare(const sim_graph *g, const sim_op *op, int64_t m, int64_t n, int64_t k, int64_t a_rs,
                      int64_t a_cs, int64_t b_rs, int64_t b_cs, float alpha, sim_mm_i8 **out, char *err,
                      size_t err_len);
/* cbc: broadcast of Gemm's C against Y (NULL when there is no C). */
int sim_mm_i8_run(const sim_mm_i8 *s, int64_t batch, const sim_bcast *bb, const sim_bcast *cbc,
                  sim_kernel_call *call);
void sim_mm_i8_free(sim_mm_i8 *s);

#endif
