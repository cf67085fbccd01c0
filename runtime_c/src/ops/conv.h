/*
 * Convolution geometry shared by Conv and ConvTranspose (float and int8 paths). Spatial dims are
 * normalised to 3 (D, H, W) by padding leading ones, so 1-D, 2-D and 3-D use one implementation.
 */
#ifndef RKNNLINK_OPS_CONV_H
#define RKNNLINK_OPS_CONV_H

#include "ops_common.h"

typedef struct sim_conv_geom {
    int nsp;                     /* spatial dims in the model (1..3) */
    int64_t n, cin, cout, group; /* batch, channels, groups */
    int64_t cg, mg;              /* input / output channels per group */
    int64_t in[3], out[3], k[3], s[3], pb[3], pe[3], dl[3], opad[3];
    int64_t in_sz, out_sz, k_sz; /* products of in / out / k */
} sim_conv_geom;

/* Reads attributes and shapes (transpose selects ConvTranspose's weight layout and formula). */
int sim_conv_geom_init(const sim_graph *g, const sim_op *op, int transpose, sim_conv_geom *cg, char *err,
                       size_t err_len);

/* Indices e in [lo, hi) of 0..n-1 for which i0 + e * step lies in [0, size). */
void sim_valid_span(int64_t i0, int64_t step, int64_t size, int64_t n, int64_t *lo, int64_t *hi);

/* ConvTranspose's col2im walk, shared by the float and int8 paths: splits the column positions [j0, j0 + n)
 * of kernel tap (kd, kh, kw) into the output rows they land in and calls add(ctx, src, dst, ow0, sw, lo, hi)
 * once per row, meaning "for x in [lo, hi): out[dst + ow0 + x * sw] += col[src + x]". */
typedef void (*sim_col2im_add)(void *ctx, int64_t src, int64_t dst, int64_t ow0, int64_t sw, int64_t lo, int64_t hi);
void sim_col2im_walk(const sim_conv_geom *g, int64_t kd, int64_t kh, int64_t kw, int64_t j0, int64_t n,
                     sim_col2im_add add, void *ctx);

/* Fills row k (= (c, kd, kh, kw)) of the im2col matrix of one group for columns [j0, j0 + n). */
void sim_im2col_row(const sim_conv_geom *cg, const float *xg, int64_t k, int64_t j0, int64_t n, float *row);

/* Depthwise 2-D convolution of one channel from its zero-padded plane at the start of a buffer of
 * sim_dw_pad_elems floats (the second half is work space):
 * y = bias + sum of taps. Used by the float path and, on exact integer values, by the int8 path. */
struct sim_i8_epi;
/* With q (int8 path, acc exact and bias folded into `bias`), the fast kernels requantise straight into
 * y8 (channel ch) and return 1; otherwise the float result is in y and 0 is returned. */
int sim_dw_plane(int avx2, const sim_conv_geom *g, const float *pad, const float *w, float bias, float *y,
                 const float *lohi /* clamp bounds {lo, hi} or NULL */, const struct sim_i8_epi *q, int64_t ch,
                 int8_t *y8);
size_t sim_dw_pad_elems(const sim_conv_geom *g);
/* Leading floats of that buffer to zero once per thread (the padded plane's border and guard). */
size_t sim_dw_plane_zero_elems(const sim_conv_geom *g);
/* Depthwise on a block of nc <= 8 channels, one per vector lane (AVX2; usable says when): input planes
 * xf (float) or x8 (int8, taken as value - zx) at channel stride in_sz, the block's weights w8[k_sz][8]
 * (from sim_dw8_pack: blocks of 8 channels, zero lanes past cout) and biases b8[8]; outputs (clamped
 * to lohi when given) at dst + l * out_sz. scr holds sim_dw8_scratch_elems floats, of which the first
 * *zero_elems must be zeroed once before the first block (only the interior is rewritten). Each output
 * has the bits of sim_dw_plane's AVX2 kernel. */
int sim_dw8_usable(int avx2, const sim_conv_geom *g);
size_t sim_dw8_scratch_elems(const sim_conv_geom *g, size_t *zero_elems);
/* Zeroes what of scr the blocks never write: the padded border and the guard (AVX2 builds only). */
void sim_dw8_zero(const sim_conv_geom *g, float *scr);
float *sim_dw8_pack(const sim_conv_geom *g, const float *w);
void sim_dw8_block(const sim_conv_geom *g, const float *xf, const int8_t *x8, float zx, int64_t nc, const float *w8,
                   const float *b8, float *scr, const float *lohi, float *dst);
/* The same on int8 input, requantised in the store for a linear or clamp activation q (channels
 * ch0 + l; lanes whose bit is set in fold have the bias in b8 already): the codes sim_i8_requant_plane
 * gives on the block's float outputs. */
void sim_dw8_block_i8(const sim_conv_geom *g, const int8_t *x8, float zx, int64_t nc, const float *w8, const float *b8,
                      float *scr, const struct sim_i8_epi *q, unsigned fold, int64_t ch0, int8_t *y8);

#define SIM_PAR_MIN_WORK 65536.0
static inline void sim_parallel_sized(const sim_kernel_call *call, sim_par_fn fn, void *arg, int64_t n, double work)
{
    if (work < SIM_PAR_MIN_WORK) {
        if (n > 0) fn(arg, 0, n, 0);
        return;
    }
    sim_parallel(call, fn, arg, n);
}

#endif
