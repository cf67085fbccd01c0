/*
 * Core-internal declarations of the simulator (parser, memory plan, executor, cost model, API).
 * Not part of the ABI and not shared with the kernels (their contract is sim_graph.h).
 */
#ifndef RKNNLINK_SIM_CORE_H
#define RKNNLINK_SIM_CORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "rknn_api.h"
#include "rknnlink_sim.h"
#include "sim_graph.h"

#define SIM_VERSION_STR "0.1.0"
#define SIM_SDK_API_VERSION "2.3.2"
#define SIM_ERR_LEN 512

/* ---- bump pool: every allocation of a parsed model lives here and is freed at once ---- */
typedef struct sim_pool_block {
    struct sim_pool_block *next;
    size_t size, used;
} sim_pool_block;

typedef struct sim_pool {
    sim_pool_block *head;
} sim_pool;

void *sim_pool_alloc(sim_pool *p, size_t bytes); /* zeroed, 64-aligned, NULL on OOM */
void sim_pool_free(sim_pool *p);

/* ---- one graph input or output as the API sees it ---- */
typedef struct sim_io {
    uint32_t tensor;            /* index into graph.tensors */
    uint32_t reverse_channels;
    uint32_t n_norm;
    float mean[16];
    float std[16];
    uint32_t layout;            /* native layout of 4-D tensors: 0 NCHW, 1 NHWC */
} sim_io;

/* Per-layer static information, computed once per model (docs/cost-model.md). */
typedef struct sim_layer_static {
    char npu_type[64];          /* perf OpType, e.g. "ConvRelu" */
    uint64_t macs;
    uint64_t bytes_rw;
    uint64_t act_elems;         /* elements charged at the activation-function rate */
    uint32_t cost_class;        /* rknnlink_cost_class */
    double compute_s;           /* on one core: class work + activation work */
    double memory_s;            /* bytes_rw at the effective DDR bandwidth */
    double est_us;              /* on one core, with the layer overhead */
} sim_layer_static;

/* One row of the platform table (platforms.c): published facts and the fitted effective rates. */
typedef struct sim_platform {
    const char *name;
    uint32_t cores;
    uint32_t perf_detail;               /* the board runtime answers PERF_DETAIL / PERF_RUN */
    double npu_hz;
    double peak_int8_macs_per_cycle;    /* per core */
    double fp16_ratio;
    double dense_macs_per_cycle;        /* effective, int8, per core */
    double depthwise_macs_per_cycle;
    double eltwise_per_cycle;
    double activation_per_cycle;
    double ddr_bytes_per_s;
    double layer_overhead_us;
    double io_bytes_per_s;
} sim_platform;

/* A parsed model, shared (refcounted) by rknn_dup_context copies. Immutable after load. */
typedef struct sim_model {
    int refs;                   /* atomic */
    sim_pool pool;
    sim_graph g;
    const sim_op_def **defs;    /* per op */
    uint32_t n_prepared;        /* ops whose prepare succeeded (released on free) */
    char target[32];
    const char *custom_string;
    const char *producer;
    const char *model_name;
    uint32_t build_mode, batch;
    uint32_t n_in, n_out;
    sim_io *ins, *outs;
    const sim_platform *platform;
    /* memory plan (intermediate tensors): offsets in the working arena and the NPU-style size */
    uint64_t *work_off;         /* per tensor, UINT64_MAX if not in the arena */
    uint64_t work_size;
    uint64_t npu_internal_size;
    uint64_t weight_size;
    uint64_t io_size;
    uint64_t conv_scratch;      /* float32 bytes for int8 <-> float conversion of one op */
    sim_layer_static *layers;   /* per op */
    int64_t est_total_us;
} sim_model;

/* Parse a model buffer. On failure returns NULL and writes a one-line reason into err. */
sim_model *sim_model_load(const void *data, uint64_t size, char *err, size_t err_len);
void sim_model_ref(sim_model *m);
void sim_model_unref(sim_model *m);

/* Memory plan and cost model, run at the end of sim_model_load. */
int sim_plan_memory(sim_model *m, char *err, size_t err_len);
void sim_cost_model(sim_model *m);
/* Cores a core mask runs a context on (AUTO: one; ALL: every core of the platform). */
uint32_t sim_cost_cores(const sim_platform *pf, uint32_t core_mask);
/* 1 if the layer's compute splits across the active cores (dense and depthwise convolutions). */
int sim_cost_splits(const sim_layer_static *L);
double sim_cost_layer_us(const sim_platform *pf, const sim_layer_static *L, uint32_t cores);
double sim_cost_io_us(const sim_platform *pf, uint64_t bytes);
/* Sum of the rounded PERF_DETAIL rows (InputOperator, every layer, OutputOperator) on `cores` cores. */
int64_t sim_cost_total_us(const sim_model *m, uint32_t cores);
/* The platform table: the row of `target` (NULL if unknown); _find falls back to the rk3588 row. */
const sim_platform *sim_platform_lookup(const char *target);
const sim_platform *sim_platform_find(const char *target);
uint32_t sim_platform_count(void);
const sim_platform *sim_platform_at(uint32_t index);

size_t sim_dtype_size(uint32_t dtype);          /* 0 for unknown */
size_t sim_work_elem_size(uint32_t dtype);      /* size in the working arena: I8 -> 1, F32/F16 -> 4 */

/* ---- kernel scratch (bump allocator reset before every kernel call) ---- */
typedef struct sim_scratch_impl {
    sim_scratch api;            /* must stay first */
    void *blocks[16];
    size_t sizes[16];
    size_t used[16];
    uint32_t n_blocks;
    uint32_t failed;
} sim_scratch_impl;

void sim_scratch_init(sim_scratch_impl *s);
void sim_scratch_reset(sim_scratch_impl *s);
void sim_scratch_free(sim_scratch_impl *s);

/* ---- per-context worker pool (pool.c) ---- */
#define SIM_DEFAULT_THREADS 4      /* capped by the online CPUs; RKNNLINK_SIM_THREADS overrides */
#define SIM_MAX_THREADS 64
typedef struct sim_workers sim_workers;
/* Threads a new context uses: min(online CPUs, $RKNNLINK_SIM_THREADS or SIM_DEFAULT_THREADS). */
int sim_threads_wanted(void);
/* n_threads counts the caller; NULL on OOM. Fewer threads than asked if the system refuses some. */
sim_workers *sim_workers_create(int n_threads);
void sim_workers_destroy(sim_workers *p);
sim_par *sim_workers_par(sim_workers *p);
/* Bracket one inference: a run that found the host busy makes the next few runs serial (same results). */
void sim_workers_run_begin(sim_workers *p);
void sim_workers_run_end(sim_workers *p);

/* ---- the per-context state ---- */
#define SIM_CTX_MAGIC 0x52534D43u /* "RSMC" */

typedef struct sim_outbuf {       /* a runtime-allocated rknn_output buffer */
    void *ptr;
    struct sim_outbuf *next;
} sim_outbuf;

typedef struct sim_iomem {        /* rknn_set_io_mem binding */
    rknn_tensor_mem *mem;
    rknn_tensor_attr attr;
} sim_iomem;

typedef struct sim_dump {
    uint32_t layer_index, output_slot, tensor;
    float *f32;                   /* n_elems floats */
    void *raw;                    /* n_elems * dtype size */
} sim_dump;

typedef struct sim_ctx {
    uint32_t magic;
    rknn_context handle;          /* its entry in the handle table (handles.c) */
    pthread_mutex_t lock;
    sim_model *m;
    uint32_t flags;
    int info_only;
    uint32_t core_mask;
    int batch_core_num;
    unsigned char *work;          /* working arena (intermediates) */
    void **io_bufs;               /* per tensor for graph inputs/outputs (working representation) */
    float *conv;                  /* conversion scratch */
    sim_scratch_impl scratch;
    int n_threads;                /* threads the kernels may use (read at context creation) */
    sim_workers *workers;         /* created by the first run when n_threads > 1 */
    uint8_t *in_set;              /* per input: set by rknn_inputs_set */
    sim_iomem *in_mem, *out_mem;  /* per input/output: zero-copy bindings (mem == NULL: none) */
    uint64_t frame_id;
    int has_run;
    double *measured_us;          /* per op, last run */
    int64_t last_run_est_us;
    char *perf_text;
    sim_outbuf *outbufs;
    int dump_enabled;
    uint32_t n_dumps;
    sim_dump *dumps;
    char last_error[SIM_ERR_LEN];
    sim_model **shape_models;     /* dynamic_input models, one per shape set (NULL: static shapes); shapes.c */
    uint32_t n_shape_models;
} sim_ctx;

/* Dynamic input shapes (shapes.c): a bundle of one model per shape set. */
int sim_shapes_is_bundle(const unsigned char *bytes, uint64_t size);
int sim_shapes_load(const unsigned char *bytes, uint64_t size, sim_model ***models, uint32_t *count, char *err,
                    size_t err_len);
void sim_shapes_share(sim_ctx *dst, const sim_ctx *src);
void sim_shapes_free(sim_ctx *c);
int sim_shapes_select(sim_ctx *c, uint32_t n_inputs, const rknn_tensor_attr *attrs);
int sim_shapes_query_range(sim_ctx *c, rknn_input_range *r);

int sim_ctx_alloc_runtime(sim_ctx *c);
void sim_ctx_free_runtime(sim_ctx *c);
int sim_execute(sim_ctx *c);                     /* returns RKNN_* code */
void *sim_tensor_storage(sim_ctx *c, uint32_t tensor);
char *sim_perf_detail_text(const sim_ctx *c);    /* malloc'ed NUL-terminated text */
void sim_ctx_drop_dumps(sim_ctx *c);

/* I/O conversion (io.c). type/fmt are rknn_tensor_type/rknn_tensor_format values. */
int sim_input_convert(sim_ctx *c, uint32_t idx, const void *buf, uint64_t size, uint32_t type, uint32_t fmt,
                      int pass_through);
int sim_output_convert(sim_ctx *c, uint32_t idx, void *buf, uint64_t size, uint32_t type, uint32_t fmt);
uint64_t sim_output_bytes(const sim_ctx *c, uint32_t idx, uint32_t type);
/* Attribute of input/output idx; variant 0 normal, 1 native, 2 native NHWC. */
void sim_fill_attr(const sim_model *m, int is_output, uint32_t idx, int variant, rknn_tensor_attr *a);

/* ---- logging and errors ---- */
void sim_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_set_init_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void sim_ctx_error(sim_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
uint32_t sim_crc32(const unsigned char *p, size_t n);
void sim_one_line(char *s);

#define SIM_LOG_ERROR 0
#define SIM_LOG_WARN 1
#define SIM_LOG_INFO 2
#define SIM_LOG_DEBUG 3

#endif
