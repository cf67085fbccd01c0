/*
 * NPU cost model (docs/cost-model.md): the time of a layer on the model's target SoC is a fixed per-layer
 * overhead plus compute (the layer's work at the effective rate of the unit it runs on, plus activation-
 * function work) plus memory traffic (the bytes it reads and writes at the effective DDR bandwidth).
 * Dense and depthwise convolutions split across the cores of a multi-core core mask; the rest of the layer
 * does not. The rates come from the platform table (platforms.c).
 *
 * A convolution occupies the MAC array in blocks, as the vendor compiler's own per-layer cycle estimates show
 * (RKNN-Toolkit2 2.5.0's "Network Layer Information Table" for rk3588, docs/cost-model.md): output channels
 * in blocks of 32, depthwise channels in blocks of 64, and the output stage writes at most one output element
 * per 128 MAC slots (8 per cycle on a 1024-MAC core), so a thin convolution on a big image is bounded by its
 * output, not by its MACs.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sim_core.h"

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

/* Activations evaluated by the NPU's lookup-table / non-linear unit: each output element costs extra.
 * ReLU, Clip and LeakyRelu are applied in the convolution's output stage for free. */
static int act_costs(uint32_t act)
{
    return act == SIM_ACT_SIGMOID || act == SIM_ACT_SILU || act == SIM_ACT_TANH || act == SIM_ACT_HARDSWISH ||
           act == SIM_ACT_HARDSIGMOID;
}

static int op_is_activation(uint32_t type)
{
    switch (type) {
    case SIM_OP_SIGMOID: case SIM_OP_SILU: case SIM_OP_TANH: case SIM_OP_EXP: case SIM_OP_SOFTPLUS:
    case SIM_OP_ELU: case SIM_OP_SELU: case SIM_OP_SOFTMAX: case SIM_OP_LOG_SOFTMAX: case SIM_OP_HARD_SWISH:
    case SIM_OP_HARD_SIGMOID: case SIM_OP_ERF: case SIM_OP_GELU: case SIM_OP_MISH: case SIM_OP_LOG:
    case SIM_OP_SIN: case SIM_OP_COS: case SIM_OP_RECIPROCAL:
        return 1;
    default:
        return 0;
    }
}

static uint32_t cost_class(const sim_graph *g, const sim_op *op)
{
    switch (op->type) {
    case SIM_OP_CONV: {
        /* weight (C_out, C_in / group, kh, kw): one input channel per group on a multi-channel input */
        const sim_tensor *x = &g->tensors[op->inputs[0]];
        const sim_tensor *w = op->n_inputs > 1 && op->inputs[1] != SIM_NONE ? &g->tensors[op->inputs[1]] : NULL;
        if (w && w->n_dims >= 2 && x->n_dims >= 2 && w->dims[1] == 1 && x->dims[1] > 1)
            return RKNNLINK_COST_DEPTHWISE;
        return RKNNLINK_COST_DENSE;
    }
    case SIM_OP_CONV_TRANSPOSE: case SIM_OP_GEMM: case SIM_OP_MATMUL: case SIM_OP_LSTM: case SIM_OP_GRU:
        return RKNNLINK_COST_DENSE;
    case SIM_OP_RESHAPE:
        return RKNNLINK_COST_FREE;
    case SIM_OP_CONCAT: case SIM_OP_SPLIT: case SIM_OP_SLICE: case SIM_OP_TRANSPOSE: case SIM_OP_PAD:
    case SIM_OP_RESIZE: case SIM_OP_GATHER: case SIM_OP_GATHER_ELEMENTS: case SIM_OP_EXPAND: case SIM_OP_TILE:
        return RKNNLINK_COST_MOVE;
    default:
        return RKNNLINK_COST_ELTWISE;
    }
}

enum {
    DENSE_COUT_BLOCK = 32,   /* a dense convolution's output channels occupy the array in blocks of 32 */
    DEPTHWISE_BLOCK = 64,    /* a depthwise convolution's channels in blocks of 64 */
    OUTPUT_STAGE_MACS = 128, /* MAC slots per output element the output stage needs at least */
};

static uint64_t round_up(uint64_t v, uint64_t block)
{
    return (v + block - 1) / block * block;
}

/* The MAC slots a convolution occupies (`macs` for every other layer): its MACs with the channels rounded up
 * to the array's blocks; a dense convolution at least OUTPUT_STAGE_MACS per (padded) output element. */
static double charged_work(const sim_graph *g, const sim_op *op, uint32_t cls, uint64_t macs)
{
    const sim_tensor *y = &g->tensors[op->outputs[0]];
    int conv = op->type == SIM_OP_CONV || op->type == SIM_OP_CONV_TRANSPOSE;
    if (!conv || y->n_dims < 3 || y->dims[1] <= 0)
        return (double)macs;
    uint64_t c = (uint64_t)y->dims[1];
    uint64_t block = cls == RKNNLINK_COST_DEPTHWISE ? DEPTHWISE_BLOCK : DENSE_COUT_BLOCK;
    double pad = (double)round_up(c, block) / (double)c;
    double work = (double)macs * pad;
    if (cls == RKNNLINK_COST_DENSE) {
        double out = (double)y->n_elems * pad * OUTPUT_STAGE_MACS;
        work = work > out ? work : out;
    }
    return work;
}

static uint64_t tensor_bytes(const sim_tensor *t)
{
    return (uint64_t)t->n_elems * sim_dtype_size(t->dtype);
}

/* Fraction of the int8 rate a layer computing in `dtype` runs at (FLOAT32: our fp32 build mode; the
 * NPU has no fp32 datapath, so half the fp16 rate). */
static double dtype_factor(const sim_platform *pf, uint32_t dtype)
{
    return dtype == SIM_I8 || dtype == SIM_U8 ? 1.0 : dtype == SIM_F16 ? pf->fp16_ratio : pf->fp16_ratio / 2.0;
}

double sim_cost_io_us(const sim_platform *pf, uint64_t bytes)
{
    return (double)bytes / pf->io_bytes_per_s * 1e6;
}

uint32_t sim_cost_cores(const sim_platform *pf, uint32_t core_mask)
{
    if (core_mask == 0xFFFFu)
        return pf->cores;
    uint32_t n = (uint32_t)__builtin_popcount(core_mask & 0xFFu);
    return n == 0 ? 1 : n > pf->cores ? pf->cores : n;
}

int sim_cost_splits(const sim_layer_static *L)
{
    return L->cost_class == RKNNLINK_COST_DENSE || L->cost_class == RKNNLINK_COST_DEPTHWISE;
}

double sim_cost_layer_us(const sim_platform *pf, const sim_layer_static *L, uint32_t cores)
{
    double compute = L->compute_s / (sim_cost_splits(L) && cores > 1 ? (double)cores : 1.0);
    return pf->layer_overhead_us + (compute + L->memory_s) * 1e6;
}

int64_t sim_cost_total_us(const sim_model *m, uint32_t cores)
{
    int64_t total = 0;
    for (uint32_t i = 0; i < m->n_in; i++)
        total += llround(sim_cost_io_us(m->platform, tensor_bytes(&m->g.tensors[m->ins[i].tensor])));
    for (uint32_t i = 0; i < m->n_out; i++)
        total += llround(sim_cost_io_us(m->platform, tensor_bytes(&m->g.tensors[m->outs[i].tensor])));
    for (uint32_t k = 0; k < m->g.n_ops; k++)
        total += llround(sim_cost_layer_us(m->platform, &m->layers[k], cores));
    return total;
}

void sim_cost_model(sim_model *m)
{
    const sim_platform *pf = m->platform;
    m->layers = sim_pool_alloc(&m->pool, (size_t)m->g.n_ops * sizeof(sim_layer_static));
    if (m->layers == NULL)
        return;
    for (uint32_t k = 0; k < m->g.n_ops; k++) {
        const sim_op *op = &m->g.ops[k];
        const sim_op_def *def = m->defs[k];
        sim_layer_static *L = &m->layers[k];
        snprintf(L->npu_type, sizeof(L->npu_type), "%s%s", def->npu_name ? def->npu_name : "Unknown",
                 act_suffix(op->act));
        const sim_tensor *out = &m->g.tensors[op->outputs[0]];
        L->macs = def->macs ? def->macs(&m->g, op) : (uint64_t)out->n_elems;
        L->cost_class = cost_class(&m->g, op);
        L->act_elems = act_costs(op->act) || op_is_activation(op->type) ? (uint64_t)out->n_elems : 0;
        uint64_t bytes = 0;
        for (uint32_t i = 0; i < op->n_inputs; i++)
            if (op->inputs[i] != SIM_NONE)
                bytes += tensor_bytes(&m->g.tensors[op->inputs[i]]);
        for (uint32_t i = 0; i < op->n_outputs; i++)
            bytes += tensor_bytes(&m->g.tensors[op->outputs[i]]);
        L->bytes_rw = L->cost_class == RKNNLINK_COST_FREE ? 0 : bytes; /* Reshape moves no data */
        double rate;
        switch (L->cost_class) {
        case RKNNLINK_COST_DENSE: rate = pf->dense_macs_per_cycle; break;
        case RKNNLINK_COST_DEPTHWISE: rate = pf->depthwise_macs_per_cycle; break;
        case RKNNLINK_COST_ELTWISE: rate = pf->eltwise_per_cycle; break;
        default: rate = 0.0; break; /* FREE and MOVE: no arithmetic */
        }
        double cycles = (rate > 0.0 ? charged_work(&m->g, op, L->cost_class, L->macs) / rate : 0.0) +
                        (double)L->act_elems / pf->activation_per_cycle;
        L->compute_s = cycles / (pf->npu_hz * dtype_factor(pf, out->dtype));
        L->memory_s = (double)L->bytes_rw / pf->ddr_bytes_per_s;
        L->est_us = sim_cost_layer_us(pf, L, 1);
    }
    m->est_total_us = sim_cost_total_us(m, 1);
}
