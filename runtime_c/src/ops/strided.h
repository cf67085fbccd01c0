/*
 * Strided walks over an output tensor, shared by the kernels that read their inputs through broadcast or
 * modular index maps (Where, Expand, Tile, GatherElements, the arg/top-k reductions).
 */
#ifndef RKNNLINK_OPS_STRIDED_H
#define RKNNLINK_OPS_STRIDED_H

#include "ops_common.h"

/* Per output dim, the stride of `in` when broadcast (numpy rules, right-aligned) to `out`: 0 for a
 * broadcast dim. Returns -1 if `in` does not broadcast to `out`. */
int sim_bcast_strides(const sim_tensor *out, const sim_tensor *in, int64_t str[SIM_MAX_DIMS]);

/* Row-major strides of t (innermost 1). */
void sim_row_strides(const sim_tensor *t, int64_t str[SIM_MAX_DIMS]);

/* Splits t around axis: outer = prod(dims[:axis]), n = dims[axis], inner = prod(dims[axis+1:]). */
void sim_axis_geom(const sim_tensor *t, uint32_t axis, int64_t *outer, int64_t *n, int64_t *inner);

#endif
