/*
 * Int8 Gemm/MatMul (work in progress: prepare accepts, run reports failure until implemented).
 */
#include <stdlib.h>

#include "matmul_i8.h"

struct sim_mm_i8 {
    int unused;
};

int sim_mm_i8_prepare(const sim_graph *g, const sim_op *op, int64_t m, int64_t n, int64_t k, int64_t a_rs,
                      int64_t a_cs, int64_t b_rs, int64_t b_cs, float alpha, sim_mm_i8 **out, char *err,
                      size_t err_len)
{
    (void)g; (void)op; (void)m; (void)n; (void)k; (void)a_rs; (void)a_cs; (void)b_rs; (void)b_cs; (void)alpha;
    (void)err; (void)err_len;
    *out = NULL;
    return 0;
}

int sim_mm_i8_run(const sim_mm_i8 *s, int64_t batch, const sim_bcast *bb, const sim_bcast *cbc,
                  sim_kernel_call *call)
{
    (void)s; (void)batch; (void)bb; (void)cbc; (void)call;
    return SIM_ERR_FAIL;
}

void sim_mm_i8_free(sim_mm_i8 *s)
{
    free(s);
}
