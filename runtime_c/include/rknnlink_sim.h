/*
 * rknnlink simulated-NPU extensions to the librknnrt ABI.
 *
 * These functions exist only in librknnrt_sim.so (the vendor library has none of them), so callers look
 * them up with dlsym and treat their absence as "not the simulator". They expose what a real NPU cannot
 * show cheaply: the measured CPU time of each layer next to the cost-model estimate, and every layer's
 * output after a run.
 */
#ifndef RKNNLINK_SIM_H
#define RKNNLINK_SIM_H

#include <stdint.h>
#include "rknn_api.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RKNNLINK_SIM_EXT_VERSION 1

/* One executed layer (an operator with its fused activation). 504 bytes on every target. */
typedef struct rknnlink_layer_info {
    uint32_t index;            /* execution order, 0-based */
    uint32_t n_outputs;
    char name[256];            /* ONNX node name */
    char op_type[64];          /* NPU-style type, e.g. "ConvRelu" (perf table OpType) */
    char onnx_type[64];        /* e.g. "Conv" */
    uint32_t dtype;            /* rknn_tensor_type of the first output */
    uint32_t n_dims;
    uint32_t dims[8];          /* first output shape */
    uint64_t macs;
    uint64_t bytes_rw;         /* bytes read + written by the cost model */
    double est_time_us;        /* cost-model time on the model's target NPU */
    double measured_time_us;   /* CPU time of the last run of this layer (0 before the first run) */
    uint32_t cost_class;       /* rknnlink_cost_class the cost model charged this layer as */
    uint32_t reserved0;
    uint64_t act_elems;        /* elements charged at the activation-function rate (SiLU, Sigmoid, ...) */
    uint8_t reserved[24];
} rknnlink_layer_info;

/* What kind of NPU work a layer is (docs/cost-model.md): selects the effective rate it is charged at. */
typedef enum rknnlink_cost_class {
    RKNNLINK_COST_FREE = 0,      /* Reshape: no data moves, only the layer overhead */
    RKNNLINK_COST_DENSE = 1,     /* Conv, ConvTranspose, Gemm, MatMul: `macs` on the MAC array */
    RKNNLINK_COST_DEPTHWISE = 2, /* Conv with one input channel per group */
    RKNNLINK_COST_ELTWISE = 3,   /* element-wise, pooling, reductions: `macs` element operations */
    RKNNLINK_COST_MOVE = 4,      /* Concat, Split, Slice, Transpose, Pad, Resize, Gather: memory traffic only */
} rknnlink_cost_class;

/* One row of the simulator's platform table: every target_platform the toolkit accepts. 144 bytes. */
typedef struct rknnlink_platform_info {
    char name[32];                     /* "rk3588" */
    uint32_t cores;                    /* NPU cores (rknn_set_core_mask accepts masks of these) */
    uint32_t perf_detail;              /* 1 if the board runtime answers PERF_DETAIL / PERF_RUN */
    double npu_hz;                     /* NPU clock the rates below are per cycle of */
    double peak_int8_macs_per_cycle;   /* published peak per core (TOPS / 2 / clock) */
    double fp16_ratio;                 /* fp16 rate / int8 rate on every unit */
    double dense_macs_per_cycle;       /* effective int8 rates per core, fitted (docs/cost-model.md) */
    double depthwise_macs_per_cycle;
    double eltwise_per_cycle;
    double activation_per_cycle;
    double ddr_bytes_per_s;            /* effective DDR bandwidth seen by one layer */
    double layer_overhead_us;          /* fixed cost of every NPU layer */
    double io_bytes_per_s;             /* InputOperator / OutputOperator rows (CPU copies) */
    uint8_t reserved[24];
} rknnlink_platform_info;

/* One dumped tensor: a layer output (or a graph input) kept after the last run. 324 bytes. */
typedef struct rknnlink_dump_info {
    uint32_t layer_index;      /* producing layer, 0xFFFFFFFF for graph inputs */
    uint32_t output_slot;
    char name[256];            /* tensor name */
    uint32_t dtype;            /* rknn_tensor_type as held by the simulator */
    uint32_t qnt_type;         /* rknn_tensor_qnt_type */
    float scale;
    int32_t zp;
    uint32_t n_dims;
    uint32_t dims[8];
    uint32_t n_elems;
    uint8_t reserved[4];
} rknnlink_dump_info;

/* Extension ABI version (RKNNLINK_SIM_EXT_VERSION). */
int rknnlink_sim_version(void);

int rknnlink_sim_layer_count(rknn_context ctx, uint32_t *count);
/* size must be sizeof(rknnlink_layer_info). */
int rknnlink_sim_layer_info(rknn_context ctx, uint32_t index, rknnlink_layer_info *info, uint32_t size);

/* Keep every layer output of the following runs (costs memory); 0 turns it off and frees the dumps. */
int rknnlink_sim_set_dump(rknn_context ctx, int enable);
/* Count of dumped tensors after a run with dumps on (0 when off or before the first run). */
int rknnlink_sim_dump_count(rknn_context ctx, uint32_t *count);
int rknnlink_sim_dump_info(rknn_context ctx, uint32_t index, rknnlink_dump_info *info, uint32_t size);
/* Copy a dump as float32 (dequantised) and/or raw bytes in its dtype; either pointer may be NULL.
 * f32_count must be >= n_elems, raw_size >= n_elems * element size, else RKNN_ERR_PARAM_INVALID. */
int rknnlink_sim_dump_read(rknn_context ctx, uint32_t index, float *f32, uint32_t f32_count,
                           void *raw, uint32_t raw_size);

/* The platform table (no context needed). size must be sizeof(rknnlink_platform_info). */
int rknnlink_sim_platform_count(uint32_t *count);
int rknnlink_sim_platform_info(uint32_t index, rknnlink_platform_info *info, uint32_t size);

/* Last error text of this context (why the previous call failed), NUL-terminated; "" if none. */
const char *rknnlink_sim_last_error(rknn_context ctx);
/* Why the last rknn_init in this thread failed (no context exists yet then). */
const char *rknnlink_sim_init_error(void);

#ifdef __cplusplus
}
#endif
#endif
