/*
 * Int8 path of Conv and ConvTranspose: int32 accumulation of (x - zx) * (w - zw) with the bias
 * quantised to scale sx * sw, then requantisation to the output with round-half-away-from-zero.
 */
#ifndef RKNNLINK_OPS_CONV_I8_H
#define RKNNLINK_OPS_CONV_I8_H

#include "conv.h"

typedef struct sim_conv_i8 sim_conv_i8;

/* Builds the int8 state (packed int16 weights, int32 bias, requantisation factors). */
int sim_conv_i8_prepare(const sim_graph *g, const sim_op *op, const sim_conv_geom *cg, int transpose,
                        sim_conv_i8 **out, char *err, size_t err_len);
int sim_conv_i8_run(const sim_conv_i8 *s, const sim_conv_geom *cg, int transpose, sim_kernel_call *call);
void sim_conv_i8_free(sim_conv_i8 *s);

/* Output channels per ConvTranspose work item (their GEMM rows start at a packed-panel boundary). */
int64_t sim_convt_channel_block(const sim_conv_geom *g);
/* ... and per parallel item: as few items as threads, each streaming the packed input once. */
int64_t sim_convt_items_block(const sim_conv_geom *g, int n_threads);

#endif
