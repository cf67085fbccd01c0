/*
 * The platform table: every target_platform RKNN-Toolkit2 accepts, with the figures the cost model
 * (cost.c, docs/cost-model.md) charges layers at. This is the only copy: the Python facade, the model
 * builder and the board daemon read it through rknnlink_sim_platform_info (host/rknnlink/runtime/platforms.py).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sim_core.h"

/* FITTED CONSTANTS: effective rates and overheads of rk3588, rk3576, rk3566/rk3568 and rk3562 come from
 * `python bench/bench_cost_model.py --fit` (non-negative least squares of the relative error against
 * Rockchip's published single-core latencies, rknn_model_zoo V2.3.2, docs/cost-model.md "Fitting"); they
 * are rounded to 3 significant digits. The other rows are derived from the nearest fitted NPU generation
 * scaled by the published peak (see the docs); they have no published latencies to fit against.
 *
 * name, cores, perf_detail, NPU Hz, peak int8 MAC/cycle/core, fp16 ratio,
 * effective int8 per core per cycle: dense MACs, depthwise MACs, element-wise ops, activation elements,
 * effective DDR bytes/s, layer overhead us, I/O copy bytes/s */
static const sim_platform k_platforms[] = {
    {"rv1103", 1, 0, 1.0e9, 256.0, 0.25, 160.0, 16.0, 40.0, 20.0, 2.0e9, 30.0, 2.1e9},
    {"rv1103b", 1, 0, 1.0e9, 256.0, 0.25, 160.0, 16.0, 40.0, 20.0, 2.0e9, 30.0, 2.1e9},
    {"rv1106", 1, 0, 1.0e9, 256.0, 0.25, 160.0, 16.0, 40.0, 20.0, 3.0e9, 30.0, 4.2e9},
    {"rv1106b", 1, 0, 1.0e9, 512.0, 0.25, 320.0, 32.0, 80.0, 40.0, 3.0e9, 30.0, 4.2e9},
    {"rv1126b", 1, 1, 1.0e9, 1536.0, 0.25, 900.0, 60.0, 200.0, 100.0, 6.0e9, 20.0, 8.5e9},
    {"rk2118", 1, 1, 1.0e9, 128.0, 0.25, 80.0, 8.0, 20.0, 10.0, 2.0e9, 30.0, 3.2e9},
    {"rk3562", 1, 1, 1.0e9, 512.0, 0.25, 320.0, 32.0, 80.0, 40.0, 6.0e9, 20.0, 12.8e9},
    {"rk3566", 1, 1, 1.0e9, 400.0, 0.25, 250.0, 25.0, 60.0, 30.0, 6.0e9, 25.0, 12.8e9},
    {"rk3568", 1, 1, 1.0e9, 400.0, 0.25, 250.0, 25.0, 60.0, 30.0, 6.0e9, 25.0, 12.8e9},
    {"rk3576", 2, 1, 1.0e9, 1536.0, 0.25, 900.0, 60.0, 200.0, 100.0, 12.0e9, 15.0, 25.6e9},
    {"rk3588", 3, 1, 1.0e9, 1024.0, 0.25, 900.0, 90.0, 200.0, 100.0, 15.0e9, 15.0, 34.1e9},
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
