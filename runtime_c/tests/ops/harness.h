/*
 * Minimal graph builder for kernel unit tests: one operator, its tensors and attributes, run through
 * the kernel's prepare/run/release exactly as the executor does (scratch from a bump allocator).
 */
#ifndef RKNNLINK_OPS_TEST_HARNESS_H
#define RKNNLINK_OPS_TEST_HARNESS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops_common.h"

#define TG_MAX_T 24
#define TG_MAX_A 16

typedef struct tg_scratch {
    sim_scratch api;
    void *blocks[64];
    int n;
} tg_scratch;

typedef struct tgraph {
    sim_graph g;
    sim_tensor t[TG_MAX_T];
    float *f[TG_MAX_T];      /* float data (constants: fdata; activations: buffers) */
    int8_t *q[TG_MAX_T];     /* int8 data */
    void *raw[TG_MAX_T];     /* constant raw data when not float/int8 */
    float *qs[TG_MAX_T];     /* per-channel scales */
    int32_t *qz[TG_MAX_T];
    sim_op op;
    uint32_t ins[16], outs[16];
    sim_attr attrs[TG_MAX_A];
    int64_t ints[TG_MAX_A][16];
    float floats[TG_MAX_A][16];
    char names[TG_MAX_A][32];
} tgraph;

extern int tg_failures;
extern int tg_checks;
extern uint64_t tg_rng;
/* Thread pool handed to the kernels by tg_run (NULL: none, the kernels run inline). */
extern sim_par *tg_par;

float tg_randf(void);        /* uniform [-1, 1) */
void tg_init(tgraph *tg, uint32_t type);
void tg_free(tgraph *tg);
/* Adds a tensor; data filled with uniform random values times `amp` (0 leaves zeros). */
int tg_tensor(tgraph *tg, uint32_t dtype, uint32_t kind, int nd, const int64_t *dims, float amp);
void tg_quant(tgraph *tg, int ti, float scale, int32_t zp); /* per-tensor; requantises data */
void tg_input(tgraph *tg, int ti);
void tg_output(tgraph *tg, int ti);
void tg_absent_input(tgraph *tg);
void tg_attr_i(tgraph *tg, const char *name, int64_t v);
void tg_attr_f(tgraph *tg, const char *name, float v);
void tg_attr_is(tgraph *tg, const char *name, int n, const int64_t *v);
/* prepare + run (int8 path when use_i8) + keeps priv for macs; returns prepare/run code. */
int tg_run(tgraph *tg, int use_i8, char *err, size_t err_len);
/* An int8 fast path against the portable semantics: the float kernel on the dequantised inputs, then
 * requantised to y's scale, must give the int8 kernel's codes exactly, run inline and on a stand-in
 * pool of 3 threads taking the items in reverse. */
void tg_check_i8_vs_float(tgraph *tg, int y, const char *what);
int tg_prepare_only(tgraph *tg, char *err, size_t err_len);

void tg_check_close(const char *what, const float *got, const float *want, int64_t n, float atol, float rtol);
void tg_check_true(const char *what, int cond);
double tg_cosine(const float *a, const float *b, int64_t n);

#endif
