/*
 * Operator registry: maps the model format's op ids to kernel definitions.
 */
#include "ops_common.h"

static const sim_op_def *const k_defs[] = {
    &sim_def_conv, &sim_def_conv_transpose, &sim_def_gemm, &sim_def_matmul,
    &sim_def_add, &sim_def_sub, &sim_def_mul, &sim_def_div, &sim_def_sum,
    &sim_def_relu, &sim_def_clip, &sim_def_leaky_relu, &sim_def_prelu,
    &sim_def_sigmoid, &sim_def_hard_sigmoid, &sim_def_hard_swish, &sim_def_silu,
    &sim_def_tanh, &sim_def_exp, &sim_def_softmax, &sim_def_maxpool,
    &sim_def_avgpool, &sim_def_global_avgpool, &sim_def_global_maxpool, &sim_def_lrn,
    &sim_def_batchnorm, &sim_def_concat, &sim_def_split, &sim_def_slice,
    &sim_def_reshape, &sim_def_transpose, &sim_def_pad, &sim_def_resize,
    &sim_def_reduce_mean, &sim_def_reduce_max, &sim_def_log_softmax, &sim_def_elu,
    &sim_def_selu, &sim_def_neg, &sim_def_abs, &sim_def_softplus, &sim_def_sqrt,
    &sim_def_max, &sim_def_min, &sim_def_reduce_sum, &sim_def_pow, &sim_def_gather,
    &sim_def_layer_norm, &sim_def_group_norm, &sim_def_erf, &sim_def_gelu, &sim_def_mish,
    &sim_def_reciprocal, &sim_def_log, &sim_def_sin, &sim_def_cos, &sim_def_not, &sim_def_cast,
    &sim_def_equal, &sim_def_greater, &sim_def_greater_equal, &sim_def_less, &sim_def_less_equal,
    &sim_def_and, &sim_def_or, &sim_def_xor, &sim_def_where, &sim_def_expand, &sim_def_tile,
    &sim_def_gather_elements, &sim_def_argmax, &sim_def_argmin, &sim_def_topk, &sim_def_reduce_min,
    &sim_def_reduce_prod, &sim_def_reduce_l2, &sim_def_lstm, &sim_def_gru,
};

const sim_op_def *sim_op_find(uint32_t type)
{
    for (size_t i = 0; i < sizeof k_defs / sizeof k_defs[0]; i++)
        if (k_defs[i]->type == type) return k_defs[i];
    return NULL;
}
