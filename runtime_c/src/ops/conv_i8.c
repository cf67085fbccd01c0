/*
 * Int8 convolution (work in progress: prepare accepts, run reports failure until implemented).
 */
#include <stdlib.h>

#include "conv_i8.h"

struct sim_conv_i8 {
    int unused;
};

int sim_conv_i8_prepare(const sim_graph *g, const sim_op *op, const sim_conv_geom *cg, int transpose,
                        sim_conv_i8 **out, char *err, size_t err_len)
{
    (void)g; (void)op; (void)cg; (void)transpose; (void)err; (void)err_len;
    *out = NULL;
    return 0;
}

int sim_conv_i8_run(const sim_conv_i8 *s, const sim_conv_geom *cg, int transpose, sim_kernel_call *call)
{
    (void)s; (void)cg; (void)transpose; (void)call;
    return SIM_ERR_FAIL;
}

void sim_conv_i8_free(sim_conv_i8 *s)
{
    free(s);
}
