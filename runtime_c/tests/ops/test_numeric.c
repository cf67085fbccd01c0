/* fp16 rounding, int8 quantisation and activation helpers. */
#include "harness.h"

/* Reference binary16 rounding through exact double arithmetic. */
static double ref_round_f16(double x)
{
    if (x != x) return x;
    double a = fabs(x);
    if (a >= 65520.0) return x > 0 ? INFINITY : -INFINITY;
    int e;
    frexp(a, &e);            /* a = f * 2^e, f in [0.5, 1) */
    int exp = e - 1;         /* a in [2^exp, 2^(exp+1)) */
    if (exp < -14) exp = -14; /* subnormal spacing 2^-24 */
    double ulp = ldexp(1.0, exp - 10);
    double q = a / ulp, fl = floor(q), r = q - fl;
    double n = r > 0.5 ? fl + 1 : (r < 0.5 ? fl : (fmod(fl, 2.0) == 0 ? fl : fl + 1));
    double v = n * ulp;
    return x < 0 ? -v : v;
}

void test_numeric(void)
{
    /* exhaustive over a dense sample of float bit patterns */
    int bad = 0, bad_arr = 0;
    float buf[1024];
    for (uint64_t u = 0; u < 0x100000000ull; u += 4099) {
        uint32_t b = (uint32_t)u;
        float x;
        memcpy(&x, &b, 4);
        float got = sim_round_f16(x);
        double want = ref_round_f16(x);
        if (!(got == (float)want || (got != got && want != want))) {
            if (bad++ < 5) printf("round_f16(%a) = %a want %a\n", (double)x, (double)got, want);
        }
        buf[(u / 4099) % 1024] = x;
        if ((u / 4099) % 1024 == 1023) {
            float cp[1024];
            memcpy(cp, buf, sizeof cp);
            sim_round_f16_array(cp, 1024);
            for (int i = 0; i < 1024; i++) {
                float w = sim_round_f16(buf[i]);
                if (!(cp[i] == w || (cp[i] != cp[i] && w != w)) || (cp[i] == 0 && signbit(cp[i]) != signbit(w)))
                    bad_arr++;
            }
        }
    }
    tg_check_true("sim_round_f16 matches exact reference on sampled floats", bad == 0);
    tg_check_true("sim_round_f16_array matches sim_round_f16", bad_arr == 0);
    /* specific values */
    tg_check_true("f16 max", sim_round_f16(65504.0f) == 65504.0f);
    tg_check_true("f16 65519 rounds down", sim_round_f16(65519.0f) == 65504.0f);
    tg_check_true("f16 65520 overflows", isinf(sim_round_f16(65520.0f)) && sim_round_f16(-65520.0f) < 0);
    tg_check_true("f16 min subnormal", sim_round_f16(0x1p-24f) == 0x1p-24f);
    tg_check_true("f16 half of min subnormal ties to zero", sim_round_f16(0x1p-25f) == 0.0f);
    tg_check_true("f16 0.75 min subnormal rounds up", sim_round_f16(0x1.8p-25f) == 0x1p-24f);
    tg_check_true("f16 1.5 min subnormal ties to even (2)", sim_round_f16(0x1.8p-24f) == 0x1p-23f);
    tg_check_true("f16 largest subnormal", sim_round_f16(0x1.ff8p-15f) == 0x1.ff8p-15f);
    tg_check_true("f16 1+2^-11 ties to even 1", sim_round_f16(1.0f + 0x1p-11f) == 1.0f);
    tg_check_true("f16 1+3*2^-11 ties up", sim_round_f16(1.0f + 3 * 0x1p-11f) == 1.0f + 0x1p-9f);
    tg_check_true("f16 NaN stays NaN", isnan(sim_round_f16(NAN)));
    tg_check_true("f16 -0 keeps sign", signbit(sim_round_f16(-0.0f)));
    tg_check_true("f16 bits of 1.0", sim_f32_to_f16(1.0f) == 0x3c00 && sim_f16_to_f32(0x3c00) == 1.0f);
    tg_check_true("f16 bits of -2", sim_f32_to_f16(-2.0f) == 0xc000);
    tg_check_true("f16 inf bits", sim_f32_to_f16(INFINITY) == 0x7c00 && isinf(sim_f16_to_f32(0x7c00)));
    tg_check_true("f16 NaN bits", (sim_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (sim_f32_to_f16(NAN) & 0x3ff));
    tg_check_true("f16 subnormal bits", sim_f32_to_f16(0x1p-24f) == 1 && sim_f16_to_f32(0x3ff) == 0x1.ff8p-15f);
    /* every half value round-trips */
    int rt = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = sim_f16_to_f32((uint16_t)h);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;
        rt += sim_f32_to_f16(f) != h;
    }
    tg_check_true("all halves round-trip", rt == 0);

    /* int8 quantisation: half away from zero, saturation */
    tg_check_true("q 0.5 -> 1", sim_quant_i8(0.5f, 1.0f, 0) == 1);
    tg_check_true("q -0.5 -> -1", sim_quant_i8(-0.5f, 1.0f, 0) == -1);
    tg_check_true("q 2.5 -> 3", sim_quant_i8(2.5f, 1.0f, 0) == 3);
    tg_check_true("q -2.5 -> -3", sim_quant_i8(-2.5f, 1.0f, 0) == -3);
    tg_check_true("q 0.49999997 -> 0", sim_quant_i8(0.49999997f, 1.0f, 0) == 0);
    tg_check_true("q zp shift", sim_quant_i8(1.2f, 0.1f, -5) == 7);
    tg_check_true("q saturate high", sim_quant_i8(1000.0f, 1.0f, 0) == 127);
    tg_check_true("q saturate low", sim_quant_i8(-1000.0f, 1.0f, 0) == -128);
    tg_check_true("q saturate with zp", sim_quant_i8(127.0f, 1.0f, 10) == 127 && sim_quant_i8(-130.0f, 1.0f, 10) == -120);
    tg_check_true("q inf", sim_quant_i8(INFINITY, 1.0f, 0) == 127 && sim_quant_i8(-INFINITY, 1.0f, 0) == -128);
    float xs[7] = {0.5f, -0.5f, 1.5f, -1.49f, 300.f, -300.f, 0.0f};
    int8_t qs[7];
    sim_quant_array(xs, qs, 7, 1.0f, 0);
    int8_t want[7] = {1, -1, 2, -1, 127, -128, 0};
    tg_check_true("quant array", memcmp(qs, want, 7) == 0);
    /* the vector path (>= 8 elements) equals the scalar definition, ties and NaN included */
    float big[203];
    int8_t qb[203];
    for (int i = 0; i < 203; i++) big[i] = (float)(i - 101) * 0.25f + (i % 7 == 0 ? 1e-3f : 0.0f);
    big[5] = NAN;
    big[6] = INFINITY;
    big[7] = -1e30f;
    sim_quant_array(big, qb, 203, 0.5f, 3);
    int qbad = 0;
    for (int i = 0; i < 203; i++) qbad += qb[i] != sim_quant_i8(big[i], 0.5f, 3);
    tg_check_true("quant array vector path equals sim_quant_i8", qbad == 0);
    tg_check_true("q NaN -> zp", sim_quant_i8(NAN, 1.0f, 7) == 7);

    /* activations */
    tg_check_true("act relu", sim_apply_act(SIM_ACT_RELU, 0, 0, -2.0f) == 0.0f && sim_apply_act(SIM_ACT_RELU, 0, 0, 3.0f) == 3.0f);
    tg_check_true("act clip", sim_apply_act(SIM_ACT_CLIP, 0, 6, 7.0f) == 6.0f && sim_apply_act(SIM_ACT_CLIP, 0, 6, -1.0f) == 0.0f);
    tg_check_true("act leaky", sim_apply_act(SIM_ACT_LEAKY, 0.1f, 0, -2.0f) == -0.2f);
    tg_check_true("act sigmoid", fabsf(sim_apply_act(SIM_ACT_SIGMOID, 0, 0, 0.0f) - 0.5f) < 1e-7f);
    tg_check_true("act hardswish", sim_apply_act(SIM_ACT_HARDSWISH, 0, 0, 1.0f) == 1.0f * 4.0f / 6.0f &&
                                       sim_apply_act(SIM_ACT_HARDSWISH, 0, 0, -4.0f) == 0.0f);
    tg_check_true("act silu", fabsf(sim_apply_act(SIM_ACT_SILU, 0, 0, 1.0f) - 0.7310586f) < 1e-6f);
    tg_check_true("act hardsigmoid", sim_apply_act(SIM_ACT_HARDSIGMOID, 0.2f, 0.5f, 1.0f) == 0.7f);
    tg_check_true("act tanh", fabsf(sim_apply_act(SIM_ACT_TANH, 0, 0, 0.5f) - 0.46211716f) < 1e-6f);
    float arr[4] = {-1, 0.5f, 2, 8};
    sim_act_array(SIM_ACT_CLIP, 0, 6, arr, 4);
    tg_check_true("act array clip", arr[0] == 0 && arr[1] == 0.5f && arr[3] == 6);
}
