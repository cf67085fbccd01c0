/*
 * NPU cost model (docs/cost-model.md): per-layer time on the model's target SoC estimated from
 * published peak figures, max(compute, memory traffic) plus a fixed per-layer overhead.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sim_core.h"

/* name, cores, int8 MAC/cycle/core, fp16 MAC/cycle/core, NPU Hz, DDR bytes/s, overhead us */
static const sim_platform k_platforms[] = {
    {"rk3588", 3, 1024.0, 256.0, 1.0e9, 34.1e9, 6.0},
    {"rk3576", 2, 1536.0, 384.0, 1.0e9, 25.6e9, 6.0},
    {"rk3568", 1, 400.0, 100.0, 1.0e9, 12.8e9, 8.0},
    {"rk3566", 1, 400.0, 100.0, 1.0e9, 12.8e9, 8.0},
    {"rk3562", 1, 512.0, 128.0, 1.0e9, 12.8e9, 8.0},
    {"rv1126b", 1, 1536.0, 384.0, 1.0e9, 8.5e9, 8.0},
    {"rv1106", 1, 256.0, 64.0, 1.0e9, 4.2e9, 10.0},
    {"rv1103", 1, 256.0, 64.0, 1.0e9, 2.1e9, 10.0},
};

/* Used when the model names an unknown target: the RK3588 figures. */
const sim_platform *sim_platform_find(const char *target)
{
    for (size_t i = 0; i < sizeof(k_platforms) / sizeof(k_platforms[0]); i++)
        if (target && strcasecmp(target, k_platforms[i].name) == 0)
            return &k_platforms[i];
    return &k_platforms[0];
}

/* Fraction of the peak MAC rate a layer reaches: dense convolutions and matrix products keep the
 * array busy; everything else runs on the element-wise units at a lower effective rate. */
static double utilisation(uint32_t type)
{
    switch (type) {
    case SIM_OP_CONV: case SIM_OP_CONV_TRANSPOSE: case SIM_OP_GEMM: case SIM_OP_MATMUL: return 0.6;
    default: return 0.1;
    }
}

static const char *act_suffix(uint32_t act)
{
    switch (act) {
    case SIM_ACT_RELU: return "Relu";
    case SIM_ACT_CLIP: return "Clip";
    case SIM_ACT_LEAKY: return "LeakyRelu";
    case SIM_ACT_SIGMOID: return "Sigmoid";
    case SIM_ACT_HARDSWISH: return "HardSwish";
    case SIM_ACT_SILU: return "ExSwish";
    case SIM_ACT_HARDSIGMOID: return "HardSigmoid";
    case SIM_ACT_TANH: return "Tanh";
    default: return "";
    }
}

static uint64_t tensor_bytes(const sim_tensor *t)
{
    return (uint64_t)t->n_elems * sim_dtype_size(t->dtype);
}

void sim_cost_model(sim_model *m)
{
    const sim_platform *pf = m->platform;
    m->layers = sim_pool_alloc(&m->pool, (size_t)m->g.n_ops * sizeof(sim_layer_static));
    if (m->layers == NULL)
        return;
    int64_t total = 0;
    /* InputOperator / OutputOperator rows: a DMA of the tensor */
    for (uint32_t i = 0; i < m->n_in; i++)
        total += (int64_t)llround(tensor_bytes(&m->g.tensors[m->ins[i].tensor]) / pf->ddr_bytes_per_s * 1e6);
    for (uint32_t i = 0; i < m->n_out; i++)
        total += (int64_t)llround(tensor_bytes(&m->g.tensors[m->outs[i].tensor]) / pf->ddr_bytes_per_s * 1e6);
    for (uint32_t k = 0; k < m->g.n_ops; k++) {
        const sim_op *op = &m->g.ops[k];
        const sim_op_def *def = m->defs[k];
        sim_layer_static *L = &m->layers[k];
        snprintf(L->npu_type, sizeof(L->npu_type), "%s%s", def->npu_name ? def->npu_name : "Unknown",
                 act_suffix(op->act));
        const sim_tensor *out = &m->g.tensors[op->outputs[0]];
        L->macs = def->macs ? def->macs(&m->g, op) : (uint64_t)out->n_elems;
        uint64_t bytes = 0;
        for (uint32_t i = 0; i < op->n_inputs; i++)
            if (op->inputs[i] != SIM_NONE)
                bytes += tensor_bytes(&m->g.tensors[op->inputs[i]]);
        for (uint32_t i = 0; i < op->n_outputs; i++)
            bytes += tensor_bytes(&m->g.tensors[op->outputs[i]]);
        L->bytes_rw = bytes;
        double rate = out->dtype == SIM_I8 ? pf->int8_macs_per_cycle
                      : out->dtype == SIM_F16 ? pf->fp16_macs_per_cycle : pf->fp16_macs_per_cycle / 2.0;
        double npu_s = (double)L->macs / (rate * utilisation(op->type) * pf->npu_hz);
        double ddr_s = (double)bytes / pf->ddr_bytes_per_s;
        if (op->type == SIM_OP_RESHAPE)
            npu_s = 0.0; /* moves no data on the NPU */
        L->cycles_npu = (uint64_t)llround(npu_s * pf->npu_hz);
        L->cycles_ddr = (uint64_t)llround(ddr_s * pf->npu_hz);
        L->est_us = (npu_s > ddr_s ? npu_s : ddr_s) * 1e6 + pf->layer_overhead_us;
        total += (int64_t)llround(L->est_us);
    }
    m->est_total_us = total;
}
