/*
 * Executor: runs the operators in order on a context's buffers, converting between the int8 and float
 * representations at operator boundaries, rounding FLOAT16 outputs, timing every layer and keeping
 * per-layer dumps when asked.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim_core.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void *aligned_zalloc(uint64_t bytes)
{
    if (bytes == 0)
        bytes = 64;
    if (bytes > SIZE_MAX - 64)
        return NULL;
    void *p = NULL;
    size_t n = ((size_t)bytes + 63u) & ~(size_t)63u;
    if (posix_memalign(&p, 64, n) != 0)
        return NULL;
    memset(p, 0, n);
    return p;
}

void *sim_tensor_storage(sim_ctx *c, uint32_t t)
{
    const sim_tensor *ts = &c->m->g.tensors[t];
    if (ts->kind == SIM_T_CONST)
        return (void *)ts->data;
    if (ts->kind == SIM_T_INTERMEDIATE)
        return c->work + c->m->work_off[t];
    return c->io_bufs[t];
}

int sim_ctx_alloc_runtime(sim_ctx *c)
{
    sim_model *m = c->m;
    uint32_t nt = m->g.n_tensors;
    sim_scratch_init(&c->scratch);
    c->n_threads = sim_threads_wanted();
    c->work = aligned_zalloc(m->work_size);
    c->conv = aligned_zalloc(m->conv_scratch);
    c->io_bufs = calloc(nt, sizeof(void *));
    c->measured_us = calloc(m->g.n_ops, sizeof(double));
    c->in_set = calloc(m->n_in, 1);
    c->in_mem = calloc(m->n_in, sizeof(sim_iomem));
    c->out_mem = calloc(m->n_out, sizeof(sim_iomem));
    if (!c->work || !c->conv || !c->io_bufs || !c->measured_us || !c->in_set || !c->in_mem || !c->out_mem)
        return RKNN_ERR_MALLOC_FAIL;
    for (uint32_t t = 0; t < nt; t++) {
        const sim_tensor *ts = &m->g.tensors[t];
        if (ts->kind == SIM_T_INPUT || ts->kind == SIM_T_OUTPUT) {
            c->io_bufs[t] = aligned_zalloc((uint64_t)ts->n_elems * sim_work_elem_size(ts->dtype));
            if (c->io_bufs[t] == NULL)
                return RKNN_ERR_MALLOC_FAIL;
        }
    }
    return RKNN_SUCC;
}

static void free_dumps(sim_ctx *c)
{
    for (uint32_t i = 0; i < c->n_dumps && c->dumps; i++) {
        free(c->dumps[i].f32);
        free(c->dumps[i].raw);
    }
    free(c->dumps);
    c->dumps = NULL;
    c->n_dumps = 0;
}

void sim_ctx_free_runtime(sim_ctx *c)
{
    if (c->io_bufs && c->m)
        for (uint32_t t = 0; t < c->m->g.n_tensors; t++)
            free(c->io_bufs[t]);
    free(c->io_bufs);
    c->io_bufs = NULL;
    free(c->work);
    free(c->conv);
    free(c->measured_us);
    free(c->in_set);
    free(c->in_mem);
    free(c->out_mem);
    c->work = NULL;
    c->conv = NULL;
    c->measured_us = NULL;
    c->in_set = NULL;
    c->in_mem = c->out_mem = NULL;
    sim_scratch_free(&c->scratch);
    sim_workers_destroy(c->workers);
    c->workers = NULL;
    free_dumps(c);
    free(c->perf_text);
    c->perf_text = NULL;
    while (c->outbufs) {
        sim_outbuf *n = c->outbufs->next;
        free(c->outbufs->ptr);
        free(c->outbufs);
        c->outbufs = n;
    }
}

void sim_ctx_drop_dumps(sim_ctx *c)
{
    free_dumps(c);
}

/* ---- dumps ---- */
static int dump_alloc(sim_ctx *c)
{
    const sim_model *m = c->m;
    uint32_t n = m->n_in;
    for (uint32_t k = 0; k < m->g.n_ops; k++)
        n += m->g.ops[k].n_outputs;
    c->dumps = calloc(n, sizeof(sim_dump));
    if (c->dumps == NULL)
        return -1;
    c->n_dumps = n;
    uint32_t d = 0;
    for (uint32_t i = 0; i < m->n_in; i++, d++) {
        c->dumps[d].layer_index = 0xFFFFFFFFu;
        c->dumps[d].output_slot = i;
        c->dumps[d].tensor = m->ins[i].tensor;
    }
    for (uint32_t k = 0; k < m->g.n_ops; k++)
        for (uint32_t o = 0; o < m->g.ops[k].n_outputs; o++, d++) {
            c->dumps[d].layer_index = k;
            c->dumps[d].output_slot = o;
            c->dumps[d].tensor = m->g.ops[k].outputs[o];
        }
    for (d = 0; d < n; d++) {
        const sim_tensor *t = &m->g.tensors[c->dumps[d].tensor];
        c->dumps[d].f32 = malloc((size_t)t->n_elems * sizeof(float) + 1);
        c->dumps[d].raw = malloc((size_t)t->n_elems * sim_dtype_size(t->dtype) + 1);
        if (!c->dumps[d].f32 || !c->dumps[d].raw)
            return -1;
    }
    return 0;
}

static void dump_tensor(sim_ctx *c, sim_dump *d)
{
    const sim_tensor *t = &c->m->g.tensors[d->tensor];
    const void *s = sim_tensor_storage(c, d->tensor);
    size_t n = (size_t)t->n_elems;
    if (t->dtype == SIM_I8) {
        const int8_t *q = s;
        for (size_t i = 0; i < n; i++)
            d->f32[i] = t->scale * (float)(q[i] - t->zp);
        memcpy(d->raw, q, n);
    } else {
        memcpy(d->f32, s, n * sizeof(float));
        if (t->dtype == SIM_F16) {
            uint16_t *h = d->raw;
            for (size_t i = 0; i < n; i++)
                h[i] = sim_f32_to_f16(d->f32[i]);
        } else {
            memcpy(d->raw, s, n * sizeof(float));
        }
    }
}

/* ---- boundary conversions, split over the pool (element-wise, so any cut gives the same bytes) ---- */
enum { CV_ROUND_F16, CV_QUANT, CV_DEQUANT };
#define CV_BLOCK 8192

typedef struct cv_job {
    int kind;
    float *f;
    int8_t *q;
    size_t n;
    float scale;
    int32_t zp;
} cv_job;

static void cv_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    const cv_job *j = arg;
    (void)tid;
    size_t a = (size_t)lo * CV_BLOCK, b = (size_t)hi * CV_BLOCK;
    if (b > j->n)
        b = j->n;
    if (j->kind == CV_ROUND_F16)
        sim_round_f16_array(j->f + a, b - a);
    else if (j->kind == CV_QUANT)
        sim_quant_array(j->f + a, j->q + a, b - a, j->scale, j->zp);
    else
        sim_dequant_array(j->q + a, j->f + a, b - a, j->scale, j->zp);
}

static void convert(sim_ctx *c, int kind, float *f, int8_t *q, size_t n, float scale, int32_t zp)
{
    cv_job j = {kind, f, q, n, scale, zp};
    int64_t blocks = (int64_t)((n + CV_BLOCK - 1) / CV_BLOCK);
    sim_par *par = sim_workers_par(c->workers);
    if (par != NULL && blocks >= 4)
        par->run(par, cv_range, &j, blocks);
    else
        cv_range(&j, 0, blocks, 0);
}

/* ---- one operator ---- */
static int run_op(sim_ctx *c, uint32_t k)
{
    const sim_model *m = c->m;
    const sim_op *op = &m->g.ops[k];
    const sim_op_def *def = m->defs[k];
    sim_kernel_call call;
    memset(&call, 0, sizeof(call));
    call.graph = &m->g;
    call.op = op;
    call.scratch = &c->scratch.api;
    call.par = sim_workers_par(c->workers);
    sim_scratch_reset(&c->scratch);

    int all_i8 = def->run_i8 != NULL && sim_op_int8_io(&m->g, op);

    unsigned char *conv = (unsigned char *)c->conv;
    uint64_t conv_off = 0;
    for (uint32_t i = 0; i < op->n_inputs; i++) {
        uint32_t t = op->inputs[i];
        if (t == SIM_NONE)
            continue;
        const sim_tensor *ts = &m->g.tensors[t];
        call.in[i].t = ts;
        if (ts->kind == SIM_T_CONST) {
            call.in[i].f32 = (float *)ts->fdata;
            call.in[i].i8 = ts->dtype == SIM_I8 ? (int8_t *)ts->data : NULL;
        } else if (all_i8) {
            call.in[i].i8 = sim_tensor_storage(c, t);
        } else if (ts->dtype == SIM_I8) {
            float *f = (float *)(conv + conv_off);
            conv_off += ((uint64_t)ts->n_elems * 4u + 63u) & ~(uint64_t)63u;
            convert(c, CV_DEQUANT, f, sim_tensor_storage(c, t), (size_t)ts->n_elems, ts->scale, ts->zp);
            call.in[i].f32 = f;
        } else {
            call.in[i].f32 = sim_tensor_storage(c, t);
        }
    }
    for (uint32_t i = 0; i < op->n_outputs; i++) {
        uint32_t t = op->outputs[i];
        const sim_tensor *ts = &m->g.tensors[t];
        call.out[i].t = ts;
        if (all_i8) {
            call.out[i].i8 = sim_tensor_storage(c, t);
        } else if (ts->dtype == SIM_I8) {
            call.out[i].f32 = (float *)(conv + conv_off);
            conv_off += ((uint64_t)ts->n_elems * 4u + 63u) & ~(uint64_t)63u;
        } else {
            call.out[i].f32 = sim_tensor_storage(c, t);
            if (ts->dtype == SIM_F16 && i < 32)
                call.f16_out |= 1u << i;
        }
    }
    int rc = all_i8 ? def->run_i8(&call) : def->run_f32(&call);
    if (rc != 0) {
        char io[160];
        sim_ctx_error(c, "operator %u '%s' (%s) failed on its %s path with code %d (inputs: %s; output %s)", k,
                      op->name, def->onnx_name ? def->onnx_name : "?", all_i8 ? "int8" : "float", rc,
                      sim_op_inputs_str(&m->g, op, io, sizeof io),
                      op->n_outputs ? sim_dtype_name(m->g.tensors[op->outputs[0]].dtype) : "none");
        return RKNN_ERR_FAIL;
    }
    if (!all_i8) {
        for (uint32_t i = 0; i < op->n_outputs; i++) {
            const sim_tensor *ts = call.out[i].t;
            float *f = call.out[i].f32;
            if (ts->dtype == SIM_F16 && !(i < 32 && (call.f16_done & (1u << i))))
                convert(c, CV_ROUND_F16, f, NULL, (size_t)ts->n_elems, 0.0f, 0);
            else if (ts->dtype == SIM_I8)
                convert(c, CV_QUANT, f, sim_tensor_storage(c, op->outputs[i]), (size_t)ts->n_elems, ts->scale,
                        ts->zp);
        }
    }
    return RKNN_SUCC;
}

static int execute_ops(sim_ctx *c);

int sim_execute(sim_ctx *c)
{
    if (c->dump_enabled && c->dumps == NULL && dump_alloc(c) != 0) {
        free_dumps(c);
        sim_ctx_error(c, "out of memory for layer dumps");
        return RKNN_ERR_MALLOC_FAIL;
    }
    if (c->workers == NULL && c->n_threads > 1) {
        c->workers = sim_workers_create(c->n_threads);
        if (c->workers == NULL) {
            sim_log(SIM_LOG_WARN, "cannot start simulator threads; running on one thread");
            c->n_threads = 1;
        }
    }
    sim_workers_run_begin(c->workers);
    int rc = execute_ops(c);
    sim_workers_run_end(c->workers);
    return rc;
}

static int execute_ops(sim_ctx *c)
{
    const sim_model *m = c->m;
    uint32_t d = 0;
    if (c->dump_enabled)
        for (; d < m->n_in; d++)
            dump_tensor(c, &c->dumps[d]);
    for (uint32_t k = 0; k < m->g.n_ops; k++) {
        double t0 = now_us();
        int rc = run_op(c, k);
        c->measured_us[k] = now_us() - t0;
        if (rc != RKNN_SUCC)
            return rc;
        if (c->dump_enabled)
            for (uint32_t o = 0; o < m->g.ops[k].n_outputs; o++, d++)
                dump_tensor(c, &c->dumps[d]);
    }
    return RKNN_SUCC;
}
