/*
 * Micro-benchmark of the Conv kernels on MobileNetV2 layer shapes (224x224, width 1.0): float and
 * int8 paths, reported as time per layer and GMAC/s, plus the fp16 output rounding cost.
 * Build and run: make -C runtime_c/tests/ops bench; build/ops_tests/bench_conv [layer] [reps] [clip|silu|hardswish|sigmoid]
 */
#define _POSIX_C_SOURCE 199309L
#include <time.h>

#include "harness.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

typedef struct layer {
    int64_t c, h, cout, k, s, group;
} layer;

static void *scratch_get(sim_scratch *self, size_t bytes)
{
    (void)self;
    static void *buf; /* benchmark only: one reusable block */
    static size_t cap;
    if (bytes > cap) {
        free(buf);
        if (posix_memalign(&buf, 64, bytes)) return NULL;
        cap = bytes;
    }
    return buf;
}

static uint32_t bench_act = SIM_ACT_CLIP; /* argv[3]: clip (Relu6), silu, hardswish, sigmoid */

static double bench_layer(const layer *l, int use_i8, int reps)
{
    tgraph tg;
    tg_init(&tg, SIM_OP_CONV);
    int64_t pad = l->k / 2, oh = (l->h + 2 * pad - l->k) / l->s + 1;
    int64_t xd[4] = {1, l->c, l->h, l->h}, wd[4] = {l->cout, l->c / l->group, l->k, l->k}, yd[4] = {1, l->cout, oh, oh};
    int64_t bd[1] = {l->cout}, ks[2] = {l->k, l->k}, st[2] = {l->s, l->s}, pads[4] = {pad, pad, pad, pad};
    int x = tg_tensor(&tg, SIM_F32, SIM_T_INPUT, 4, xd, 1);
    int w = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 4, wd, 0.5f);
    int b = tg_tensor(&tg, SIM_F32, SIM_T_CONST, 1, bd, 0.5f);
    int y = tg_tensor(&tg, SIM_F32, SIM_T_OUTPUT, 4, yd, 0);
    if (use_i8) {
        tg_quant(&tg, x, 0.01f, 0);
        tg_quant(&tg, w, 0.005f, 0);
        tg_quant(&tg, y, 0.05f, 0);
        tg.q[y] = calloc((size_t)tg.t[y].n_elems, 1);
    }
    tg_input(&tg, x);
    tg_input(&tg, w);
    tg_input(&tg, b);
    tg_output(&tg, y);
    tg_attr_is(&tg, "kernel_shape", 2, ks);
    tg_attr_is(&tg, "strides", 2, st);
    tg_attr_is(&tg, "pads", 4, pads);
    tg_attr_i(&tg, "group", l->group);
    tg.op.act = bench_act;
    tg.op.act_p0 = 0;
    tg.op.act_p1 = bench_act == SIM_ACT_CLIP ? 6 : 0;
    char err[256];
    const sim_op_def *def = sim_op_find(SIM_OP_CONV);
    if (def->prepare(&tg.g, &tg.op, err, sizeof err)) {
        printf("prepare failed: %s\n", err);
        exit(1);
    }
    sim_scratch s = {scratch_get};
    sim_kernel_call call;
    memset(&call, 0, sizeof call);
    call.graph = &tg.g;
    call.op = &tg.op;
    call.scratch = &s;
    call.in[0].t = &tg.t[x];
    call.in[1].t = &tg.t[w];
    call.in[2].t = &tg.t[b];
    call.out[0].t = &tg.t[y];
    call.in[1].f32 = tg.f[w];
    call.in[2].f32 = tg.f[b];
    if (use_i8) {
        call.in[0].i8 = tg.q[x];
        call.out[0].i8 = tg.q[y];
    } else {
        call.in[0].f32 = tg.f[x];
        call.out[0].f32 = tg.f[y];
    }
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_us();
        int rc = use_i8 ? def->run_i8(&call) : def->run_f32(&call);
        double t = now_us() - t0;
        if (rc) {
            printf("run failed %d\n", rc);
            exit(1);
        }
        best = t < best ? t : best;
    }
    tg_free(&tg);
    return best;
}

int main(int argc, char **argv)
{
    int only = argc > 1 ? atoi(argv[1]) : -1, reps = argc > 2 ? atoi(argv[2]) : 15;
    if (argc > 3) {
        const char *a = argv[3];
        bench_act = !strcmp(a, "silu") ? SIM_ACT_SILU
                    : !strcmp(a, "hardswish") ? SIM_ACT_HARDSWISH
                    : !strcmp(a, "sigmoid") ? SIM_ACT_SIGMOID
                    : SIM_ACT_CLIP;
    }
    /* the distinct layer shapes of MobileNetV2 224 (count multiplies repeated blocks) */
    struct { layer l; int count; } layers[] = {
        {{3, 224, 32, 3, 2, 1}, 1},     {{32, 112, 32, 3, 1, 32}, 1},   {{32, 112, 16, 1, 1, 1}, 1},
        {{16, 112, 96, 1, 1, 1}, 1},    {{96, 112, 96, 3, 2, 96}, 1},   {{96, 56, 24, 1, 1, 1}, 1},
        {{24, 56, 144, 1, 1, 1}, 2},    {{144, 56, 144, 3, 1, 144}, 1}, {{144, 56, 24, 1, 1, 1}, 1},
        {{144, 56, 144, 3, 2, 144}, 1}, {{144, 28, 32, 1, 1, 1}, 1},    {{32, 28, 192, 1, 1, 1}, 3},
        {{192, 28, 192, 3, 1, 192}, 2}, {{192, 28, 32, 1, 1, 1}, 2},    {{192, 28, 192, 3, 2, 192}, 1},
        {{192, 14, 64, 1, 1, 1}, 1},    {{64, 14, 384, 1, 1, 1}, 4},    {{384, 14, 384, 3, 1, 384}, 4},
        {{384, 14, 64, 1, 1, 1}, 3},    {{384, 14, 96, 1, 1, 1}, 1},    {{96, 14, 576, 1, 1, 1}, 3},
        {{576, 14, 576, 3, 1, 576}, 2}, {{576, 14, 96, 1, 1, 1}, 2},    {{576, 14, 576, 3, 2, 576}, 1},
        {{576, 7, 160, 1, 1, 1}, 1},    {{160, 7, 960, 1, 1, 1}, 3},    {{960, 7, 960, 3, 1, 960}, 3},
        {{960, 7, 160, 1, 1, 1}, 2},    {{960, 7, 320, 1, 1, 1}, 1},    {{320, 7, 1280, 1, 1, 1}, 1},
        /* MobileNetV3-Small / EfficientNet-B0 depthwise shapes (not in the MobileNetV2 total) */
        {{16, 112, 16, 3, 2, 16}, 0},   {{72, 56, 72, 3, 2, 72}, 0},    {{96, 28, 96, 5, 2, 96}, 0},
        {{240, 14, 240, 5, 1, 240}, 0}, {{576, 7, 576, 5, 1, 576}, 0},  {{144, 56, 144, 5, 2, 144}, 0},
        {{480, 14, 480, 5, 1, 480}, 0}, {{1152, 7, 1152, 5, 1, 1152}, 0},
        /* PP-OCRv4 det neck/head (320x320 input): 3x3 convs from 96 channels to 24 (issue 9) */
        {{96, 80, 24, 3, 1, 1}, 0},     {{96, 40, 24, 3, 1, 1}, 0},
    };
    double tot[2] = {0, 0};
    printf("%-28s %10s %10s %8s\n", "layer (cin,h,cout,k,s,g)", "f32 us", "i8 us", "MMAC");
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; i++) {
        if (only >= 0 && (int)i != only) continue;
        const layer *l = &layers[i].l;
        int64_t oh = (l->h + 2 * (l->k / 2) - l->k) / l->s + 1;
        double macs = (double)(l->cout * oh * oh * (l->c / l->group) * l->k * l->k) / 1e6;
        double tf = bench_layer(l, 0, reps), ti = bench_layer(l, 1, reps);
        tot[0] += tf * layers[i].count;
        tot[1] += ti * layers[i].count;
        char name[64];
        snprintf(name, sizeof name, "%lld,%lld,%lld,%lld,%lld,%lld x%d", (long long)l->c, (long long)l->h,
                 (long long)l->cout, (long long)l->k, (long long)l->s, (long long)l->group, layers[i].count);
        printf("%-28s %10.0f %10.0f %8.2f  %5.1f %5.1f GMAC/s\n", name, tf, ti, macs, macs / tf * 1e3, macs / ti * 1e3);
    }
    printf("total conv: f32 %.2f ms, i8 %.2f ms\n", tot[0] / 1e3, tot[1] / 1e3);
    /* fp16 rounding of a 96x112x112 activation: per-element call vs array helper */
    size_t n = 96 * 112 * 112;
    float *buf = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) buf[i] = tg_randf();
    double t0 = now_us();
    for (size_t i = 0; i < n; i++) buf[i] = sim_round_f16(buf[i]);
    double t1 = now_us();
    sim_round_f16_array(buf, n);
    double t2 = now_us();
    printf("fp16 rounding of %zu floats: sim_round_f16 loop %.0f us, sim_round_f16_array %.0f us\n", n, t1 - t0, t2 - t1);
    free(buf);
    return 0;
}
