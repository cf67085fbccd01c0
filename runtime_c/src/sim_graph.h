/*
 * Internal contract between the simulator core (model parser, executor, API)
 * and the operator kernels (src/ops/). Not installed, not part of the ABI.
 *
 * Representation of activations at run time:
 *   - FLOAT32 and FLOAT16 tensors are held in float32 buffers. FLOAT16 values are
 *     always exactly representable in binary16 (the executor rounds every FLOAT16
 *     operator output unless the kernel did, see f16_done), so results equal an fp16
 *     datapath that accumulates in fp32.
 *   - INT8 tensors are held as int8_t with per-tensor scale/zero point.
 *   - INT32/INT64 constants (e.g. Gather indices) keep their own type.
 * Constants: `data` points to the constant bytes (aligned copy owned by the
 * model); `fdata` is a float32 view (dequantised / widened) built at load time.
 */
#ifndef RKNNLINK_SIM_GRAPH_H
#define RKNNLINK_SIM_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#define SIM_MAX_DIMS 8
#define SIM_NONE 0xFFFFFFFFu

enum sim_dtype { /* equal to rknn_tensor_type */
    SIM_F32 = 0, SIM_F16 = 1, SIM_I8 = 2, SIM_U8 = 3, SIM_I16 = 4,
    SIM_I32 = 6, SIM_I64 = 8, SIM_BOOL = 9
};

enum sim_tensor_kind { SIM_T_INTERMEDIATE = 0, SIM_T_CONST = 1, SIM_T_INPUT = 2, SIM_T_OUTPUT = 3 };
enum sim_qnt { SIM_Q_NONE = 0, SIM_Q_AFFINE = 2, SIM_Q_CHANNEL = 3 };

enum sim_act {
    SIM_ACT_NONE = 0, SIM_ACT_RELU = 1, SIM_ACT_CLIP = 2, SIM_ACT_LEAKY = 3, SIM_ACT_SIGMOID = 4,
    SIM_ACT_HARDSWISH = 5, SIM_ACT_SILU = 6, SIM_ACT_HARDSIGMOID = 7, SIM_ACT_TANH = 8
};

enum sim_op_type {
    SIM_OP_CONV = 1, SIM_OP_CONV_TRANSPOSE = 2, SIM_OP_GEMM = 3, SIM_OP_MATMUL = 4,
    SIM_OP_ADD = 5, SIM_OP_SUB = 6, SIM_OP_MUL = 7, SIM_OP_DIV = 8, SIM_OP_SUM = 9,
    SIM_OP_RELU = 10, SIM_OP_CLIP = 11, SIM_OP_LEAKY_RELU = 12, SIM_OP_PRELU = 13,
    SIM_OP_SIGMOID = 14, SIM_OP_HARD_SIGMOID = 15, SIM_OP_HARD_SWISH = 16, SIM_OP_SILU = 17,
    SIM_OP_TANH = 18, SIM_OP_EXP = 19, SIM_OP_SOFTMAX = 20, SIM_OP_MAXPOOL = 21,
    SIM_OP_AVGPOOL = 22, SIM_OP_GLOBAL_AVGPOOL = 23, SIM_OP_GLOBAL_MAXPOOL = 24, SIM_OP_LRN = 25,
    SIM_OP_BATCHNORM = 26, SIM_OP_CONCAT = 27, SIM_OP_SPLIT = 28, SIM_OP_SLICE = 29,
    SIM_OP_RESHAPE = 30, SIM_OP_TRANSPOSE = 34, SIM_OP_PAD = 35, SIM_OP_RESIZE = 36,
    SIM_OP_REDUCE_MEAN = 37, SIM_OP_REDUCE_MAX = 38, SIM_OP_LOG_SOFTMAX = 39, SIM_OP_ELU = 40,
    SIM_OP_SELU = 41, SIM_OP_NEG = 42, SIM_OP_ABS = 43, SIM_OP_SOFTPLUS = 44, SIM_OP_SQRT = 45,
    SIM_OP_MAX = 46, SIM_OP_MIN = 47, SIM_OP_REDUCE_SUM = 48, SIM_OP_POW = 49, SIM_OP_GATHER = 50,
    SIM_OP_LAYER_NORM = 51, SIM_OP_GROUP_NORM = 52, SIM_OP_ERF = 53, SIM_OP_GELU = 54, SIM_OP_MISH = 55,
    SIM_OP_RECIPROCAL = 56, SIM_OP_LOG = 57, SIM_OP_SIN = 58, SIM_OP_COS = 59, SIM_OP_NOT = 60, SIM_OP_CAST = 61,
    SIM_OP_EQUAL = 62, SIM_OP_GREATER = 63, SIM_OP_GREATER_EQUAL = 64, SIM_OP_LESS = 65, SIM_OP_LESS_EQUAL = 66,
    SIM_OP_AND = 67, SIM_OP_OR = 68, SIM_OP_XOR = 69, SIM_OP_WHERE = 70, SIM_OP_EXPAND = 71, SIM_OP_TILE = 72,
    SIM_OP_GATHER_ELEMENTS = 73, SIM_OP_ARGMAX = 74, SIM_OP_ARGMIN = 75, SIM_OP_TOPK = 76, SIM_OP_REDUCE_MIN = 77,
    SIM_OP_REDUCE_PROD = 78, SIM_OP_REDUCE_L2 = 79, SIM_OP_LSTM = 80, SIM_OP_GRU = 81,
    SIM_OP_TYPE_LIMIT = 128
};

enum sim_attr_type { SIM_A_INT = 1, SIM_A_FLOAT = 2, SIM_A_INTS = 3, SIM_A_FLOATS = 4, SIM_A_STRING = 5 };

typedef struct sim_attr {
    const char *name;        /* NUL-terminated copy owned by the model */
    uint32_t type;           /* enum sim_attr_type */
    uint32_t count;
    const int64_t *ints;     /* INT / INTS (8-aligned copy owned by the model) */
    const float *floats;     /* FLOAT / FLOATS */
    const char *str;         /* STRING (NUL-terminated copy) */
} sim_attr;

typedef struct sim_tensor {
    const char *name;        /* NUL-terminated */
    uint32_t dtype;          /* enum sim_dtype */
    uint32_t kind;           /* enum sim_tensor_kind */
    uint32_t n_dims;
    int64_t dims[SIM_MAX_DIMS];
    int64_t n_elems;
    uint32_t qnt;            /* enum sim_qnt */
    float scale;             /* SIM_Q_AFFINE */
    int32_t zp;
    int32_t q_axis;          /* SIM_Q_CHANNEL */
    uint32_t q_count;
    const float *q_scales;   /* q_count entries */
    const int32_t *q_zps;
    const void *data;        /* constants: raw bytes in `dtype` */
    const float *fdata;      /* constants: float32 view (dequantised), n_elems entries */
} sim_tensor;

typedef struct sim_op {
    uint32_t type;           /* enum sim_op_type */
    uint32_t index;          /* position in execution order */
    const char *name;        /* ONNX node name */
    uint32_t n_inputs, n_outputs;
    const uint32_t *inputs;  /* tensor indices, SIM_NONE = absent */
    const uint32_t *outputs;
    uint32_t n_attrs;
    const sim_attr *attrs;
    uint32_t act;            /* enum sim_act, fused activation */
    float act_p0, act_p1;
    void *priv;              /* kernel-private prepared state (packed weights, ...) */
} sim_op;

typedef struct sim_graph {
    uint32_t n_tensors, n_ops;
    sim_tensor *tensors;
    sim_op *ops;
} sim_graph;

/* Run-time view of one operand. Exactly one of f32 / i8 is set for activations. */
typedef struct sim_buf {
    const sim_tensor *t;     /* shape, dtype and quantisation */
    float *f32;              /* float representation (FLOAT32/FLOAT16, or dequantised INT8) */
    int8_t *i8;              /* int8 representation (only in run_i8) */
} sim_buf;

/* Scratch memory the executor lends a kernel for one call (reused between calls). */
typedef struct sim_scratch {
    void *(*get)(struct sim_scratch *self, size_t bytes); /* 64-aligned, NULL on OOM */
} sim_scratch;

/* Parallel loop the executor lends a kernel: run(self, fn, arg, n) calls fn(arg, lo, hi, tid) on
 * contiguous ranges that cover [0, n) exactly once, in any order and on any thread, and returns when
 * all are done. tid (0 = the caller, below n_threads) names the running thread so that fn can use a
 * per-thread scratch slice (taken before run: fn must not call the scratch allocator). fn must write
 * disjoint outputs per range and compute the same bytes however [0, n) is cut. */
typedef void (*sim_par_fn)(void *arg, int64_t lo, int64_t hi, int tid);
typedef struct sim_par {
    void (*run)(struct sim_par *self, sim_par_fn fn, void *arg, int64_t n_items);
    int n_threads;
} sim_par;

typedef struct sim_kernel_call {
    const sim_graph *graph;
    const sim_op *op;
    sim_buf in[16];          /* in[i].t == NULL for an absent optional input */
    sim_buf out[16];
    sim_scratch *scratch;
    sim_par *par;            /* NULL: run serially */
    /* Float path: bit i of f16_out set = output i is FLOAT16. A kernel that rounds that output to
     * binary16 itself (after its activation) sets bit i of f16_done, and the executor skips its pass. */
    uint32_t f16_out, f16_done;
} sim_kernel_call;

typedef struct sim_op_def {
    uint32_t type;
    const char *onnx_name;   /* "Conv" */
    const char *npu_name;    /* perf OpType, e.g. "Conv" (executor appends fused act: "ConvRelu") */
    /* Validate attributes and stored shapes; build op->priv. Return 0 or -6 (RKNN_ERR_MODEL_INVALID)
     * after writing a one-line reason into err. Constants are available (fdata set). */
    int (*prepare)(const sim_graph *g, sim_op *op, char *err, size_t err_len);
    /* Float path: all activation inputs/outputs as float32 (constants via t->fdata). Must apply op->act. */
    int (*run_f32)(sim_kernel_call *call);
    /* Optional int8 path: used when every activation input and output is INT8. Must apply op->act. */
    int (*run_i8)(sim_kernel_call *call);
    void (*release)(sim_op *op);
    /* Multiply-accumulates of one run (for the cost model); NULL = element count of the output. */
    uint64_t (*macs)(const sim_graph *g, const sim_op *op);
} sim_op_def;

/* Registry, implemented in src/ops/registry.c. NULL for an unknown op type. */
const sim_op_def *sim_op_find(uint32_t type);
/* Graph facts shared by the executor and the kernels (src/ops/graph_info.c).
 * 1 when every activation input and every output of op is INT8 (constants may be of any type): the
 * executor then runs the kernel's run_i8, so a prepare that cannot take some operand there refuses it. */
int sim_op_int8_io(const sim_graph *g, const sim_op *op);
/* "float32", "float16", "int8", ... for error messages. */
const char *sim_dtype_name(uint32_t dtype);
/* "int8 activation, float32 constant" (the operands of op, for error messages) into buf. */
const char *sim_op_inputs_str(const sim_graph *g, const sim_op *op, char *buf, size_t len);

/* Attribute helpers, implemented in src/ops/attrs.c. */
const sim_attr *sim_attr_get(const sim_op *op, const char *name);
int64_t sim_attr_int(const sim_op *op, const char *name, int64_t dflt);
float sim_attr_float(const sim_op *op, const char *name, float dflt);
/* Copies up to max ints; returns the count present (0 if absent). */
uint32_t sim_attr_ints(const sim_op *op, const char *name, int64_t *out, uint32_t max);

/* Numeric helpers shared by core and kernels (src/ops/numeric.c). */
float sim_round_f16(float x);                   /* round to nearest-even binary16 and back */
uint16_t sim_f32_to_f16(float x);
float sim_f16_to_f32(uint16_t h);
int8_t sim_quant_i8(float x, float scale, int32_t zp); /* round half away from zero, saturate */
float sim_apply_act(uint32_t act, float p0, float p1, float x);
/* Array forms used by the executor at operator boundaries (added by the core; implemented in
 * src/ops/): equal to the scalar helpers per element, vectorised. */
void sim_round_f16_array(float *x, size_t n);
/* RKNNLINK_SIM_ISA as the environment says now (src/ops/common.c, the one place that parses it): "avx2"
 * keeps the x86 kernels off AVX-512, "generic" also keeps the input conversion on its portable path. */
enum { SIM_ISA_ENV_DEFAULT = 0, SIM_ISA_ENV_AVX2 = 1, SIM_ISA_ENV_GENERIC = 2 };
int sim_isa_env(void);
void sim_quant_array(const float *x, int8_t *q, size_t n, float scale, int32_t zp);
void sim_dequant_array(const int8_t *q, float *x, size_t n, float scale, int32_t zp);

#endif
