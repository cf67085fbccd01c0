/*
 * The platform table: every target_platform RKNN-Toolkit2 accepts, with the figures the cost model
 * (cost.c, docs/cost-model.md) charges layers at. This is the only copy: the Python facade, the model
 * builder and the board daemon read it through rknnlink_sim_platform_info (host/rknnlink/runtime/platforms.py).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sim_core.h"

/* FITTED CONSTANTS (the only place they live): printed by `python bench/bench_cost_model.py --fit`.
 * rk3588, rk3576, rk3568 (= the RK3566/RK3568 column) and rk3562: least squares of log(estimate / published)
 * against Rockchip's single-core latencies (rknn_model_zoo V2.3.2) of 29 zoo models, in five free constants
 * per platform: layer overhead, dense MAC rate, activation rate, effective DDR bandwidth, fp16 ratio, with a
 * weak prior towards the published peaks, the dense rate at most the int8 peak and the bandwidth at most the
 * DDR peak; the depthwise rate is a 16th of the dense rate and the element-wise rate a 128th (the output
 * stage's 8 elements per cycle on a 1024-MAC core), both from the vendor compiler's rk3588 estimates.
 * Rounded to 3 digits.
 * The other rows are derived: the fitted row of the nearest NPU generation (rv11xx, rk2118, rk3566 from rk3568;
 * rv1126b from rk3576), rates scaled by the int8 peak per core, bandwidth by the DDR peak (docs/cost-model.md).
 * The peak MAC/cycle and the DDR peak (last column, also the CPU copy rate of Input/Output rows) are
 * published figures; rv1103b, rv1106b and rk2118 have none we could find and take rv1103's / rv1106's.
 *
 * name, cores, perf_detail, NPU Hz, peak int8 MAC/cycle/core, fp16 ratio,
 * effective int8 per core per cycle: dense MACs, depthwise MACs, element-wise ops, activation elements,
 * effective DDR bytes/s, layer overhead us, DDR peak bytes/s (I/O copies) */
static const sim_platform k_platforms[] = {
    {"rv1103", 1, 0, 1e+09, 256.0, 0.305, 256, 16, 2, 1.12, 1.32e+09, 24.2, 2.1e+09},
    {"rv1103b", 1, 0, 1e+09, 256.0, 0.305, 256, 16, 2, 1.12, 1.32e+09, 24.2, 2.1e+09},
    {"rv1106", 1, 0, 1e+09, 256.0, 0.305, 256, 16, 2, 1.12, 2.63e+09, 24.2, 4.2e+09},
    {"rv1106b", 1, 0, 1e+09, 256.0, 0.305, 256, 16, 2, 1.12, 2.63e+09, 24.2, 4.2e+09},
    {"rv1126b", 1, 1, 1e+09, 1536.0, 0.681, 1.16e+03, 72.3, 9.04, 4.91, 7.61e+09, 8.93, 8.5e+09},
    {"rk2118", 1, 1, 1e+09, 256.0, 0.305, 256, 16, 2, 1.12, 2.63e+09, 24.2, 4.2e+09},
    {"rk3562", 1, 1, 1e+09, 512.0, 0.84, 512, 32, 4, 1.7, 1.28e+10, 6.86, 1.28e+10},
    {"rk3566", 1, 1, 1e+09, 400.0, 0.305, 400, 25, 3.12, 1.75, 8.03e+09, 24.2, 1.28e+10},
    {"rk3568", 1, 1, 1e+09, 400.0, 0.305, 400, 25, 3.12, 1.75, 8.03e+09, 24.2, 1.28e+10},
    {"rk3576", 2, 1, 1e+09, 1536.0, 0.681, 1.16e+03, 72.3, 9.04, 4.91, 2.29e+10, 8.93, 2.56e+10},
    {"rk3588", 3, 1, 1e+09, 1024.0, 0.762, 1.02e+03, 64, 8, 3.46, 3.41e+10, 22.5, 3.41e+10},
};

#define N_PLATFORMS (sizeof(k_platforms) / sizeof(k_platforms[0]))

uint32_t sim_platform_count(void)
{
    return (uint32_t)N_PLATFORMS;
}

const sim_platform *sim_platform_at(uint32_t index)
{
    return index < N_PLATFORMS ? &k_platforms[index] : NULL;
}

const sim_platform *sim_platform_lookup(const char *target)
{
    for (size_t i = 0; target && i < N_PLATFORMS; i++)
        if (strcasecmp(target, k_platforms[i].name) == 0)
            return &k_platforms[i];
    return NULL;
}

/* A model naming an unknown target is costed as an RK3588 (the builder refuses unknown targets). */
const sim_platform *sim_platform_find(const char *target)
{
    const sim_platform *p = sim_platform_lookup(target);
    return p ? p : sim_platform_lookup("rk3588");
}

RKNN_EXPORT int rknnlink_sim_platform_count(uint32_t *count)
{
    if (count == NULL)
        return RKNN_ERR_PARAM_INVALID;
    *count = (uint32_t)N_PLATFORMS;
    return RKNN_SUCC;
}

RKNN_EXPORT int rknnlink_sim_platform_info(uint32_t index, rknnlink_platform_info *info, uint32_t size)
{
    if (info == NULL || size != sizeof(rknnlink_platform_info) || index >= N_PLATFORMS)
        return RKNN_ERR_PARAM_INVALID;
    const sim_platform *p = &k_platforms[index];
    memset(info, 0, sizeof(*info));
    snprintf(info->name, sizeof(info->name), "%s", p->name);
    info->cores = p->cores;
    info->perf_detail = p->perf_detail;
    info->npu_hz = p->npu_hz;
    info->peak_int8_macs_per_cycle = p->peak_int8_macs_per_cycle;
    info->fp16_ratio = p->fp16_ratio;
    info->dense_macs_per_cycle = p->dense_macs_per_cycle;
    info->depthwise_macs_per_cycle = p->depthwise_macs_per_cycle;
    info->eltwise_per_cycle = p->eltwise_per_cycle;
    info->activation_per_cycle = p->activation_per_cycle;
    info->ddr_bytes_per_s = p->ddr_bytes_per_s;
    info->layer_overhead_us = p->layer_overhead_us;
    info->io_bytes_per_s = p->io_bytes_per_s;
    return RKNN_SUCC;
}
