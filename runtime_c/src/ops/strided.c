/*
 * Strided-walk helpers (strided.h).
 */
#include "strided.h"

int sim_bcast_strides(const sim_tensor *out, const sim_tensor *in, int64_t str[SIM_MAX_DIMS])
{
    if (in->n_dims > out->n_dims) return -1;
    int64_t s = 1;
    uint32_t shift = out->n_dims - in->n_dims;
    for (int d = (int)out->n_dims - 1; d >= 0; d--) {
        int64_t dim = (uint32_t)d < shift ? 1 : in->dims[(uint32_t)d - shift];
        if (dim != 1 && dim != out->dims[d]) return -1;
        str[d] = dim == 1 ? 0 : s;
        s *= dim;
    }
    return 0;
}

void sim_row_strides(const sim_tensor *t, int64_t str[SIM_MAX_DIMS])
{
    int64_t s = 1;
    for (int d = (int)t->n_dims - 1; d >= 0; d--) {
        str[d] = s;
        s *= t->dims[d];
    }
}

void sim_axis_geom(const sim_tensor *t, uint32_t axis, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = *inner = 1;
    *n = axis < t->n_dims ? t->dims[axis] : 1;
    for (uint32_t d = 0; d < axis && d < t->n_dims; d++) *outer *= t->dims[d];
    for (uint32_t d = axis + 1; d < t->n_dims; d++) *inner *= t->dims[d];
}
