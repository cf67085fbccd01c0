/* Small models shared by the C tests, the leak-cycle program and the fuzz corpus generator. */
#ifndef RKNNLINK_TEST_MODELS_H
#define RKNNLINK_TEST_MODELS_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_writer.h"

/* Model A (fp32): in[1,3,2,2] (NHWC user layout, BGR reversal, mean/std) + bias -> Relu -> out. */
static const float kA_mean[3] = {10.0f, 20.0f, 30.0f};
static const float kA_std[3] = {2.0f, 4.0f, 5.0f};

static inline float test_a_bias(int i) { return 0.25f * (float)(i % 5) - 0.5f; }

static inline uint8_t *test_model_a(const char *target, size_t *size, int crc)
{
    mw *w = mw_new(target, 0);
    mw_custom_string(w, "hello custom");
    uint32_t d[4] = {1, 3, 2, 2};
    float bias[12];
    for (int i = 0; i < 12; i++)
        bias[i] = test_a_bias(i);
    uint32_t in = mw_tensor(w, "in", 0, 4, d, 2, 0, 0, 0);
    uint32_t b = mw_const(w, "bias", 0, 4, d, bias, sizeof(bias), 0, 0, 0);
    uint32_t sum = mw_tensor(w, "sum", 0, 4, d, 0, 0, 0, 0);
    uint32_t out = mw_tensor(w, "out", 0, 4, d, 3, 0, 0, 0);
    uint32_t ins[2] = {in, b};
    mw_op(w, 5, "add0", 2, ins, 1, &sum, 0, 0, 0);
    mw_op(w, 10, "relu0", 1, &sum, 1, &out, 0, 0, 0);
    mw_io(w, in, 0, 1, 3, kA_mean, kA_std, 1);
    mw_io(w, out, 1, 0, 0, NULL, NULL, 0);
    uint8_t *p = mw_finish(w, size, crc);
    mw_free(w);
    return p;
}

/* Expected NCHW output of model A for an NHWC float input x (12 values). */
static inline void test_a_expect(const float *x_nhwc, float *out)
{
    for (int c = 0; c < 3; c++)
        for (int s = 0; s < 4; s++) {
            float v = (x_nhwc[s * 3 + (2 - c)] - kA_mean[c]) / kA_std[c];
            v += test_a_bias(c * 4 + s);
            out[c * 4 + s] = v > 0 ? v : 0;
        }
}

/* Model B (int8): in[1,8] i8(0.5,1) -> Relu (int8 path) -> mid i8(0.25,-3) -> Add(mid, c) -> out i8(0.1,0). */
static inline uint8_t *test_model_b(size_t *size)
{
    mw *w = mw_new("rk3566", 2);
    uint32_t d[2] = {1, 8};
    uint32_t in = mw_tensor(w, "x", 2, 2, d, 2, 2, 0.5f, 1);
    uint32_t mid = mw_tensor(w, "mid", 2, 2, d, 0, 2, 0.25f, -3);
    int8_t cq[8] = {-4, -2, 0, 2, 4, 6, 8, 10};
    uint32_t c = mw_const(w, "c", 2, 2, d, cq, sizeof(cq), 2, 0.125f, 0);
    uint32_t out = mw_tensor(w, "y", 2, 2, d, 3, 2, 0.1f, 0);
    mw_op(w, 10, "relu", 1, &in, 1, &mid, 0, 0, 0);
    uint32_t ins[2] = {mid, c};
    mw_op(w, 5, "add", 2, ins, 1, &out, 0, 0, 0);
    mw_io(w, in, 0, 0, 0, NULL, NULL, 0);
    mw_io(w, out, 1, 0, 0, NULL, NULL, 0);
    uint8_t *p = mw_finish(w, size, 1);
    mw_free(w);
    return p;
}

/* Model C (fp16): in[6] f16 -> Mul(in, k f16) -> out f16. */
static inline uint8_t *test_model_c(size_t *size)
{
    mw *w = mw_new("rk3588", 1);
    uint32_t d[1] = {6};
    uint16_t k[6] = {0x3C00, 0x3555, 0x4200, 0xBC00, 0x3E00, 0x2E66}; /* 1, ~1/3, 3, -1, 1.5, ~0.1 */
    uint32_t in = mw_tensor(w, "a", 1, 1, d, 2, 0, 0, 0);
    uint32_t kk = mw_const(w, "k", 1, 1, d, k, sizeof(k), 0, 0, 0);
    uint32_t out = mw_tensor(w, "b", 1, 1, d, 3, 0, 0, 0);
    uint32_t ins[2] = {in, kk};
    mw_op(w, 7, "mul", 2, ins, 1, &out, 0, 0, 0);
    mw_io(w, in, 0, 0, 0, NULL, NULL, 0);
    mw_io(w, out, 1, 0, 0, NULL, NULL, 0);
    uint8_t *p = mw_finish(w, size, 0);
    mw_free(w);
    return p;
}

#endif
