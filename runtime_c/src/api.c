/*
 * The librknnrt C API on top of the simulator. A context handle is an entry of the handle table
 * (handles.c: index + generation), so a stale or made-up handle is refused without touching memory; each
 * call holds a use of the handle and the context's mutex, so one context used from two threads is
 * serialised, independent contexts run in parallel, and rknn_destroy waits for calls still inside.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handles.h"
#include "sim_core.h"

#define MEM_MAGIC 0x4D454D53u /* "SMEM" */

typedef struct sim_mem {
    rknn_tensor_mem pub;      /* first: the caller's pointer is also ours */
    uint32_t magic;
    uint32_t no_context;
} sim_mem;

static int handle_valid(rknn_context h)
{
    sim_ctx *c = sim_handle_acquire(h);
    if (c != NULL)
        sim_handle_release(h);
    return c != NULL;
}

static sim_ctx *lock_ctx(rknn_context h)
{
    sim_ctx *c = sim_handle_acquire(h);
    if (c == NULL) {
        sim_log(SIM_LOG_ERROR, "invalid context handle (destroyed, or never returned by rknn_init)");
        return NULL;
    }
    pthread_mutex_lock(&c->lock);
    c->last_error[0] = 0;
    return c;
}

static void unlock_ctx(sim_ctx *c)
{
    rknn_context h = c->handle;
    pthread_mutex_unlock(&c->lock);
    sim_handle_release(h);
}

/* Give `c` a handle; frees it and returns 0 when the handle table cannot grow. */
static rknn_context publish_ctx(sim_ctx *c);

static sim_mem *mem_of(rknn_tensor_mem *p)
{
    if (p == NULL)
        return NULL;
    sim_mem *m = (sim_mem *)p;
    return m->magic == MEM_MAGIC ? m : NULL;
}

/* ---- init / dup / destroy ---- */
static int read_file(const char *path, unsigned char **out, uint64_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        sim_set_init_error("cannot open model file '%s': %s", path, strerror(errno));
        return -1;
    }
    unsigned char *buf = NULL;
    size_t cap = 0, len = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : (size_t)1 << 20;
            unsigned char *nb = ncap > cap ? realloc(buf, ncap) : NULL;
            if (nb == NULL) {
                free(buf);
                fclose(f);
                sim_set_init_error("out of memory reading '%s'", path);
                return -1;
            }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        sim_set_init_error("error reading model file '%s'", path);
        return -1;
    }
    *out = buf;
    *size = len;
    return 0;
}

static sim_ctx *ctx_new(sim_model *m, uint32_t flags)
{
    sim_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->m = m;
    c->flags = flags;
    c->info_only = (flags & RKNN_FLAG_COLLECT_MODEL_INFO_ONLY) != 0;
    c->batch_core_num = 1;
    if (!c->info_only && sim_ctx_alloc_runtime(c) != RKNN_SUCC) {
        sim_ctx_free_runtime(c);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
    }
    c->magic = SIM_CTX_MAGIC;
    return c;
}

static void ctx_free(sim_ctx *c)
{
    c->magic = 0;
    sim_ctx_free_runtime(c);
    sim_shapes_free(c);
    sim_model_unref(c->m);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* Upper bound on a context's activation and I/O memory, so a hostile model cannot make rknn_init allocate
 * gigabytes: RKNNLINK_SIM_MAX_MB (MiB), default 4096. Read per call; no global state. */
static uint64_t memory_limit_bytes(void)
{
    const char *env = getenv("RKNNLINK_SIM_MAX_MB");
    char *end = NULL;
    unsigned long long mb = env ? strtoull(env, &end, 10) : 0;
    if (env == NULL || end == env || *end != '\0' || mb == 0 || mb > (1ULL << 30))
        mb = 4096;
    return (uint64_t)mb << 20;
}

RKNN_EXPORT int rknn_init(rknn_context *context, void *model, uint32_t size, uint32_t flag,
                          rknn_init_extend *extend)
{
    sim_set_init_error("%s", "");
    if (context == NULL || model == NULL) {
        sim_set_init_error("rknn_init: context or model pointer is NULL");
        sim_log(SIM_LOG_ERROR, "%s", rknnlink_sim_init_error());
        return RKNN_ERR_PARAM_INVALID;
    }
    *context = 0;
    const unsigned char *bytes = model;
    uint64_t n = size;
    unsigned char *file = NULL;
    if (size == 0) {
        if (read_file((const char *)model, &file, &n) != 0) {
            sim_log(SIM_LOG_ERROR, "%s", rknnlink_sim_init_error());
            return RKNN_ERR_MODEL_INVALID;
        }
        bytes = file;
    } else if ((flag & RKNN_FLAG_MODEL_BUFFER_ZERO_COPY) && extend != NULL && extend->real_model_size != 0) {
        if (extend->real_model_offset < 0 ||
            (uint64_t)extend->real_model_offset + extend->real_model_size > size) {
            sim_set_init_error("rknn_init: real_model_offset/real_model_size outside the model buffer");
            sim_log(SIM_LOG_ERROR, "%s", rknnlink_sim_init_error());
            return RKNN_ERR_PARAM_INVALID;
        }
        bytes += extend->real_model_offset;
        n = extend->real_model_size;
    }
    char err[SIM_ERR_LEN];
    err[0] = 0;
    sim_model **shape_models = NULL; /* dynamic_input: one model per shape set (shapes.c) */
    uint32_t n_shape_models = 0;
    sim_model *m = NULL;
    if (sim_shapes_is_bundle(bytes, n)) {
        if (sim_shapes_load(bytes, n, &shape_models, &n_shape_models, err, sizeof(err)) == 0) {
            m = shape_models[0];
            for (uint32_t i = 1; i < n_shape_models; i++)
                if (shape_models[i]->work_size + shape_models[i]->io_size > m->work_size + m->io_size)
                    m = shape_models[i]; /* the largest set, for the memory limit check below */
            sim_model_ref(m);
        }
    } else {
        m = sim_model_load(bytes, n, err, sizeof(err));
    }
    free(file);
    if (m == NULL) {
        sim_set_init_error("%s", err);
        sim_log(SIM_LOG_ERROR, "rknn_init: invalid model: %s", err);
        return RKNN_ERR_MODEL_INVALID;
    }
    if (shape_models != NULL && m != shape_models[0]) { /* start on the first shape set, as librknnrt does */
        uint64_t need = m->work_size + m->io_size;
        sim_model_unref(m);
        m = shape_models[0];
        sim_model_ref(m);
        if (need > memory_limit_bytes()) {
            sim_set_init_error("rknn_init: a shape set needs %llu MiB of activation and I/O memory, above the "
                               "simulator's limit of %llu MiB (set RKNNLINK_SIM_MAX_MB to raise it)",
                               (unsigned long long)(need >> 20), (unsigned long long)(memory_limit_bytes() >> 20));
            sim_log(SIM_LOG_ERROR, "%s", rknnlink_sim_init_error());
            sim_model_unref(m);
            for (uint32_t i = 0; i < n_shape_models; i++)
                sim_model_unref(shape_models[i]);
            free(shape_models);
            return RKNN_ERR_MALLOC_FAIL;
        }
    }
    uint64_t limit = memory_limit_bytes();
    if (m->work_size + m->io_size > limit) {
        sim_set_init_error("rknn_init: the model needs %llu MiB of activation and I/O memory, above the simulator's "
                           "limit of %llu MiB (set RKNNLINK_SIM_MAX_MB to raise it)",
                           (unsigned long long)((m->work_size + m->io_size) >> 20),
                           (unsigned long long)(limit >> 20));
        sim_log(SIM_LOG_ERROR, "%s", rknnlink_sim_init_error());
        sim_model_unref(m);
        for (uint32_t i = 0; i < n_shape_models; i++)
            sim_model_unref(shape_models[i]);
        free(shape_models);
        return RKNN_ERR_MALLOC_FAIL;
    }
    sim_ctx *c = ctx_new(m, flag);
    if (c != NULL) {
        c->shape_models = shape_models;
        c->n_shape_models = n_shape_models;
    }
    if (c == NULL) {
        for (uint32_t i = 0; i < n_shape_models; i++)
            sim_model_unref(shape_models[i]);
        free(shape_models);
        sim_model_unref(m);
        sim_set_init_error("rknn_init: out of memory allocating the context");
        sim_log(SIM_LOG_ERROR, "%s", rknnlink_sim_init_error());
        return RKNN_ERR_MALLOC_FAIL;
    }
    sim_log(SIM_LOG_INFO, "RKNN Runtime Information, librknnrt version: %s (rknnlink-sim %s)", SIM_SDK_API_VERSION,
            SIM_VERSION_STR);
    sim_log(SIM_LOG_INFO, "RKNN Model Information, target platform: %s, producer: %s", m->target, m->producer);
    *context = publish_ctx(c);
    if (*context == 0) {
        sim_set_init_error("rknn_init: out of memory growing the context handle table");
        return RKNN_ERR_MALLOC_FAIL;
    }
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_dup_context(rknn_context *context_in, rknn_context *context_out)
{
    if (context_in == NULL || context_out == NULL)
        return RKNN_ERR_PARAM_INVALID;
    sim_ctx *src = lock_ctx(*context_in);
    if (src == NULL)
        return RKNN_ERR_CTX_INVALID;
    sim_model_ref(src->m);
    sim_ctx *c = ctx_new(src->m, src->flags);
    if (c != NULL)
        sim_shapes_share(c, src);
    unlock_ctx(src);
    if (c == NULL) {
        sim_model_unref(src->m);
        return RKNN_ERR_MALLOC_FAIL;
    }
    *context_out = publish_ctx(c);
    return *context_out != 0 ? RKNN_SUCC : RKNN_ERR_MALLOC_FAIL;
}

RKNN_EXPORT int rknn_destroy(rknn_context context)
{
    sim_ctx *c = sim_handle_remove(context); /* no call is inside it any more, none can enter */
    if (c == NULL) {
        sim_log(SIM_LOG_ERROR, "rknn_destroy: invalid context handle (destroyed already?)");
        return RKNN_ERR_CTX_INVALID;
    }
    ctx_free(c);
    return RKNN_SUCC;
}

static rknn_context publish_ctx(sim_ctx *c)
{
    rknn_context h = sim_handle_add(c);
    c->handle = h;
    if (h == 0)
        ctx_free(c);
    return h;
}

/* ---- query ---- */
static void sdk_version(rknn_sdk_version *v)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    const char *d = __DATE__; /* "Mmm dd yyyy" */
    int mon = 0;
    for (int i = 0; i < 12; i++)
        if (memcmp(d, months + 3 * i, 3) == 0)
            mon = i + 1;
    int day = atoi(d + 4);
    int year = atoi(d + 7);
    memset(v, 0, sizeof(*v));
    snprintf(v->api_version, sizeof(v->api_version), "%s (rknnlink-sim %s@%04d-%02d-%02d)", SIM_SDK_API_VERSION,
             SIM_VERSION_STR, year, mon, day);
    snprintf(v->drv_version, sizeof(v->drv_version), "rknnlink-sim %s", SIM_VERSION_STR);
}

static int query_attr(sim_ctx *c, int is_output, int variant, void *info, uint32_t size)
{
    if (size < sizeof(rknn_tensor_attr))
        return RKNN_ERR_PARAM_INVALID;
    rknn_tensor_attr *a = info;
    uint32_t idx = a->index;
    uint32_t n = is_output ? c->m->n_out : c->m->n_in;
    if (idx >= n) {
        sim_ctx_error(c, "rknn_query: %s index %u out of range (the model has %u)", is_output ? "output" : "input",
                      idx, n);
        return RKNN_ERR_PARAM_INVALID;
    }
    sim_fill_attr(c->m, is_output, idx, variant, a);
    return RKNN_SUCC;
}

static int query_locked(sim_ctx *c, rknn_query_cmd cmd, void *info, uint32_t size)
{
    sim_model *m = c->m;
    if (info == NULL) {
        sim_ctx_error(c, "rknn_query: info is NULL");
        return RKNN_ERR_PARAM_INVALID;
    }
    if (c->info_only && cmd != RKNN_QUERY_MEM_SIZE) {
        sim_ctx_error(c, "rknn_query: context created with RKNN_FLAG_COLLECT_MODEL_INFO_ONLY answers only "
                         "RKNN_QUERY_MEM_SIZE");
        return RKNN_ERR_FAIL;
    }
    switch (cmd) {
    case RKNN_QUERY_IN_OUT_NUM: {
        if (size < sizeof(rknn_input_output_num))
            return RKNN_ERR_PARAM_INVALID;
        rknn_input_output_num *io = info;
        io->n_input = m->n_in;
        io->n_output = m->n_out;
        return RKNN_SUCC;
    }
    case RKNN_QUERY_INPUT_ATTR:
    case RKNN_QUERY_CURRENT_INPUT_ATTR:
        return query_attr(c, 0, 0, info, size);
    case RKNN_QUERY_OUTPUT_ATTR:
    case RKNN_QUERY_CURRENT_OUTPUT_ATTR:
        return query_attr(c, 1, 0, info, size);
    case RKNN_QUERY_NATIVE_INPUT_ATTR:
    case RKNN_QUERY_CURRENT_NATIVE_INPUT_ATTR:
        return query_attr(c, 0, 1, info, size);
    case RKNN_QUERY_NATIVE_OUTPUT_ATTR:
    case RKNN_QUERY_CURRENT_NATIVE_OUTPUT_ATTR:
        return query_attr(c, 1, 1, info, size);
    case RKNN_QUERY_NATIVE_NHWC_INPUT_ATTR:
        return query_attr(c, 0, 2, info, size);
    case RKNN_QUERY_NATIVE_NHWC_OUTPUT_ATTR:
        return query_attr(c, 1, 2, info, size);
    case RKNN_QUERY_PERF_DETAIL: {
        if (size < sizeof(rknn_perf_detail))
            return RKNN_ERR_PARAM_INVALID;
        if (!(c->flags & RKNN_FLAG_COLLECT_PERF_MASK)) {
            sim_ctx_error(c, "rknn_query: RKNN_QUERY_PERF_DETAIL needs RKNN_FLAG_COLLECT_PERF_MASK at rknn_init");
            return RKNN_ERR_FAIL;
        }
        char *text = sim_perf_detail_text(c);
        if (text == NULL)
            return RKNN_ERR_MALLOC_FAIL;
        free(c->perf_text);
        c->perf_text = text;
        rknn_perf_detail *p = info;
        p->perf_data = text;
        p->data_len = strlen(text);
        return RKNN_SUCC;
    }
    case RKNN_QUERY_PERF_RUN: {
        if (size < sizeof(rknn_perf_run))
            return RKNN_ERR_PARAM_INVALID;
        ((rknn_perf_run *)info)->run_duration =
            c->has_run ? sim_cost_total_us(m, sim_cost_cores(m->platform, c->core_mask)) : 0;
        return RKNN_SUCC;
    }
    case RKNN_QUERY_SDK_VERSION:
        if (size < sizeof(rknn_sdk_version))
            return RKNN_ERR_PARAM_INVALID;
        sdk_version(info);
        return RKNN_SUCC;
    case RKNN_QUERY_MEM_SIZE: {
        if (size < sizeof(rknn_mem_size))
            return RKNN_ERR_PARAM_INVALID;
        rknn_mem_size *ms = info;
        memset(ms, 0, sizeof(*ms));
        ms->total_weight_size = m->weight_size > UINT32_MAX ? UINT32_MAX : (uint32_t)m->weight_size;
        ms->total_internal_size = m->npu_internal_size > UINT32_MAX ? UINT32_MAX : (uint32_t)m->npu_internal_size;
        ms->total_dma_allocated_size = m->weight_size + m->npu_internal_size + m->io_size;
        return RKNN_SUCC;
    }
    case RKNN_QUERY_INPUT_DYNAMIC_RANGE:
        if (size < sizeof(rknn_input_range))
            return RKNN_ERR_PARAM_INVALID;
        return sim_shapes_query_range(c, info);
    case RKNN_QUERY_CUSTOM_STRING:
        if (size < sizeof(rknn_custom_string))
            return RKNN_ERR_PARAM_INVALID;
        memset(info, 0, sizeof(rknn_custom_string));
        snprintf(((rknn_custom_string *)info)->string, sizeof(((rknn_custom_string *)info)->string), "%s",
                 m->custom_string);
        return RKNN_SUCC;
    default:
        sim_ctx_error(c, "rknn_query: command %d is not supported by the simulator", (int)cmd);
        return RKNN_ERR_PARAM_INVALID;
    }
}

RKNN_EXPORT int rknn_query(rknn_context context, rknn_query_cmd cmd, void *info, uint32_t size)
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = query_locked(c, cmd, info, size);
    unlock_ctx(c);
    return rc;
}

/* ---- inputs / run / outputs ---- */
RKNN_EXPORT int rknn_inputs_set(rknn_context context, uint32_t n_inputs, rknn_input inputs[])
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = RKNN_SUCC;
    if (c->info_only) {
        sim_ctx_error(c, "rknn_inputs_set: context created with RKNN_FLAG_COLLECT_MODEL_INFO_ONLY cannot run");
        rc = RKNN_ERR_FAIL;
    } else if (inputs == NULL || n_inputs == 0 || n_inputs > c->m->n_in) {
        sim_ctx_error(c, "rknn_inputs_set: %u inputs given, the model has %u", n_inputs, c->m->n_in);
        rc = RKNN_ERR_PARAM_INVALID;
    }
    for (uint32_t i = 0; rc == RKNN_SUCC && i < n_inputs; i++) {
        const rknn_input *in = &inputs[i];
        if (in->index >= c->m->n_in || in->buf == NULL) {
            sim_ctx_error(c, "rknn_inputs_set: input %u has index %u (model has %u inputs) or a NULL buffer", i,
                          in->index, c->m->n_in);
            rc = RKNN_ERR_PARAM_INVALID;
            break;
        }
        rc = sim_input_convert(c, in->index, in->buf, in->size, (uint32_t)in->type, (uint32_t)in->fmt,
                               in->pass_through != 0);
        if (rc == RKNN_SUCC) {
            c->in_set[in->index] = 1;
            c->in_mem[in->index].mem = NULL;
        }
    }
    unlock_ctx(c);
    return rc;
}

static int run_locked(sim_ctx *c, rknn_run_extend *extend)
{
    sim_model *m = c->m;
    if (c->info_only) {
        sim_ctx_error(c, "rknn_run: context created with RKNN_FLAG_COLLECT_MODEL_INFO_ONLY cannot run");
        return RKNN_ERR_FAIL;
    }
    for (uint32_t i = 0; i < m->n_in; i++) {
        if (c->in_mem[i].mem != NULL) {
            const sim_iomem *b = &c->in_mem[i];
            uint64_t avail = (uint64_t)b->mem->size - (uint64_t)b->mem->offset;
            if (b->attr.pass_through) { /* exactly the native tensor; the memory may be larger */
                const sim_tensor *t = &m->g.tensors[m->ins[i].tensor];
                avail = (uint64_t)t->n_elems * sim_dtype_size(t->dtype);
            }
            int rc = sim_input_convert(c, i, (const unsigned char *)b->mem->virt_addr + b->mem->offset, avail,
                                       (uint32_t)b->attr.type, (uint32_t)b->attr.fmt, b->attr.pass_through != 0);
            if (rc != RKNN_SUCC)
                return rc;
        } else if (!c->in_set[i]) {
            sim_ctx_error(c, "rknn_run: input %u ('%s') was not set (rknn_inputs_set or rknn_set_io_mem)", i,
                          m->g.tensors[m->ins[i].tensor].name);
            return RKNN_ERR_INPUT_INVALID;
        }
    }
    int rc = sim_execute(c);
    if (rc != RKNN_SUCC)
        return rc;
    for (uint32_t i = 0; i < m->n_out; i++) {
        if (c->out_mem[i].mem != NULL) {
            const sim_iomem *b = &c->out_mem[i];
            rc = sim_output_convert(c, i, (unsigned char *)b->mem->virt_addr + b->mem->offset,
                                    (uint64_t)b->mem->size - (uint64_t)b->mem->offset, (uint32_t)b->attr.type,
                                    (uint32_t)b->attr.fmt);
            if (rc != RKNN_SUCC)
                return rc;
        }
    }
    c->has_run = 1;
    c->frame_id++;
    if (extend)
        extend->frame_id = c->frame_id;
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_run(rknn_context context, rknn_run_extend *extend)
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = run_locked(c, extend);
    unlock_ctx(c);
    return rc;
}

RKNN_EXPORT int rknn_wait(rknn_context context, rknn_run_extend *extend)
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    if (extend)
        extend->frame_id = c->frame_id;
    unlock_ctx(c);
    return RKNN_SUCC;
}

static int outputs_get_locked(sim_ctx *c, uint32_t n_outputs, rknn_output outputs[], rknn_output_extend *extend)
{
    if (c->info_only) {
        sim_ctx_error(c, "rknn_outputs_get: context created with RKNN_FLAG_COLLECT_MODEL_INFO_ONLY cannot run");
        return RKNN_ERR_FAIL;
    }
    if (outputs == NULL || n_outputs == 0 || n_outputs > c->m->n_out) {
        sim_ctx_error(c, "rknn_outputs_get: %u outputs requested, the model has %u", n_outputs, c->m->n_out);
        return RKNN_ERR_PARAM_INVALID;
    }
    if (!c->has_run) {
        sim_ctx_error(c, "rknn_outputs_get: no completed rknn_run yet");
        return RKNN_ERR_FAIL;
    }
    for (uint32_t i = 0; i < n_outputs; i++) {
        rknn_output *o = &outputs[i];
        if (o->index >= c->m->n_out) {
            sim_ctx_error(c, "rknn_outputs_get: output %u has index %u, the model has %u", i, o->index, c->m->n_out);
            return RKNN_ERR_PARAM_INVALID;
        }
        const sim_tensor *t = &c->m->g.tensors[c->m->outs[o->index].tensor];
        uint32_t type = o->want_float ? RKNN_TENSOR_FLOAT32 : t->dtype;
        uint64_t need = sim_output_bytes(c, o->index, type);
        if (o->is_prealloc) {
            if (o->buf == NULL || o->size < need) {
                sim_ctx_error(c, "rknn_outputs_get: preallocated buffer for output %u is %u bytes, %llu needed", i,
                              o->size, (unsigned long long)need);
                return RKNN_ERR_PARAM_INVALID;
            }
        } else {
            sim_outbuf *ob = calloc(1, sizeof(*ob));
            void *p = malloc((size_t)need ? (size_t)need : 1);
            if (ob == NULL || p == NULL) {
                free(ob);
                free(p);
                return RKNN_ERR_MALLOC_FAIL;
            }
            ob->ptr = p;
            ob->next = c->outbufs;
            c->outbufs = ob;
            o->buf = p;
            o->size = (uint32_t)need;
        }
        int rc = sim_output_convert(c, o->index, o->buf, need, type, RKNN_TENSOR_NCHW);
        if (rc != RKNN_SUCC)
            return rc;
    }
    if (extend)
        extend->frame_id = c->frame_id;
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_outputs_get(rknn_context context, uint32_t n_outputs, rknn_output outputs[],
                                 rknn_output_extend *extend)
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = outputs_get_locked(c, n_outputs, outputs, extend);
    unlock_ctx(c);
    return rc;
}

RKNN_EXPORT int rknn_outputs_release(rknn_context context, uint32_t n_outputs, rknn_output outputs[])
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    if (outputs == NULL && n_outputs > 0) {
        unlock_ctx(c);
        return RKNN_ERR_PARAM_INVALID;
    }
    for (uint32_t i = 0; i < n_outputs; i++) {
        if (outputs[i].is_prealloc || outputs[i].buf == NULL)
            continue;
        for (sim_outbuf **pp = &c->outbufs; *pp; pp = &(*pp)->next) {
            if ((*pp)->ptr == outputs[i].buf) {
                sim_outbuf *dead = *pp;
                *pp = dead->next;
                free(dead->ptr);
                free(dead);
                outputs[i].buf = NULL;
                break;
            }
        }
    }
    unlock_ctx(c);
    return RKNN_SUCC;
}

/* ---- cores ---- */
RKNN_EXPORT int rknn_set_core_mask(rknn_context context, rknn_core_mask core_mask)
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = RKNN_SUCC;
    const char *tg = c->m->target;
    uint32_t mask = (uint32_t)core_mask;
    const sim_platform *pf = sim_platform_lookup(tg); /* the platform table (platforms.c) */
    uint32_t cores = pf ? pf->cores : 0;
    if (cores < 2) {
        /* single-core SoCs: the vendor runtime answers with RKNN_ERR_TARGET_PLATFORM_UNMATCH */
        sim_ctx_error(c, "rknn_set_core_mask: not supported on %s (only rk3588 and rk3576 have several NPU cores)",
                      tg[0] ? tg : "this platform");
        unlock_ctx(c);
        return RKNN_ERR_TARGET_PLATFORM_UNMATCH;
    }
    /* AUTO, ALL, one core, or the masks 0_1 / 0_1_2 that fit the platform's cores */
    int ok = mask == 0 || mask == 0xFFFF || ((mask == 1 || mask == 2 || mask == 4) && mask < (1u << cores)) ||
             mask == 3 || (mask == 7 && cores >= 3);
    if (!ok) {
        sim_ctx_error(c, "rknn_set_core_mask: Not support core mask: %x on %s", mask, tg);
        rc = RKNN_ERR_FAIL;
    } else {
        c->core_mask = mask;
    }
    unlock_ctx(c);
    return rc;
}

RKNN_EXPORT int rknn_set_batch_core_num(rknn_context context, int core_num)
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = RKNN_SUCC, max = 0;
    const sim_platform *pf = sim_platform_lookup(c->m->target);
    if (pf && pf->cores > 1)
        max = (int)pf->cores;
    if (max == 0) {
        sim_ctx_error(c, "rknn_set_batch_core_num: not supported on %s", c->m->target);
        rc = RKNN_ERR_TARGET_PLATFORM_UNMATCH;
    } else if (core_num < 1 || core_num > max) {
        sim_ctx_error(c, "rknn_set_batch_core_num: %d cores requested, %s has %d", core_num, c->m->target, max);
        rc = RKNN_ERR_PARAM_INVALID;
    } else {
        c->batch_core_num = core_num;
    }
    unlock_ctx(c);
    return rc;
}

/* ---- memory ---- */
static rknn_tensor_mem *mem_new(uint64_t size, int no_context)
{
    if (size == 0 || size > UINT32_MAX)
        return NULL;
    sim_mem *m = calloc(1, sizeof(*m));
    void *buf = NULL;
    if (m == NULL || posix_memalign(&buf, 64, (size_t)size) != 0) {
        free(m);
        return NULL;
    }
    memset(buf, 0, (size_t)size);
    m->pub.virt_addr = buf;
    m->pub.phys_addr = 0;
    m->pub.fd = -1;
    m->pub.offset = 0;
    m->pub.size = (uint32_t)size;
    m->pub.flags = RKNN_TENSOR_MEMORY_FLAGS_ALLOC_INSIDE;
    m->pub.priv_data = NULL;
    m->magic = MEM_MAGIC;
    m->no_context = (uint32_t)no_context;
    return &m->pub;
}

RKNN_EXPORT rknn_tensor_mem *rknn_create_mem(rknn_context ctx, uint32_t size)
{
    sim_ctx *c = lock_ctx(ctx);
    if (c == NULL)
        return NULL;
    rknn_tensor_mem *r = mem_new(size, 0);
    if (r == NULL)
        sim_ctx_error(c, "rknn_create_mem: cannot allocate %u bytes", size);
    unlock_ctx(c);
    return r;
}

RKNN_EXPORT rknn_tensor_mem *rknn_create_mem2(rknn_context ctx, uint64_t size, uint64_t alloc_flags)
{
    if (alloc_flags & RKNN_MEM_FLAG_ALLOC_NO_CONTEXT) {
        if (ctx != 0 && !handle_valid(ctx))
            return NULL;
        return mem_new(size, 1);
    }
    sim_ctx *c = lock_ctx(ctx);
    if (c == NULL)
        return NULL;
    rknn_tensor_mem *r = mem_new(size, 0);
    if (r == NULL)
        sim_ctx_error(c, "rknn_create_mem2: cannot allocate %llu bytes", (unsigned long long)size);
    unlock_ctx(c);
    return r;
}

RKNN_EXPORT rknn_tensor_mem *rknn_create_mem_from_phys(rknn_context ctx, uint64_t phys_addr, void *virt_addr,
                                                       uint32_t size)
{
    (void)ctx; (void)phys_addr; (void)virt_addr; (void)size;
    sim_log(SIM_LOG_ERROR, "rknn_create_mem_from_phys: physical memory does not exist in the simulator");
    return NULL;
}

RKNN_EXPORT rknn_tensor_mem *rknn_create_mem_from_fd(rknn_context ctx, int32_t fd, void *virt_addr, uint32_t size,
                                                     int32_t offset)
{
    (void)ctx; (void)fd; (void)virt_addr; (void)size; (void)offset;
    sim_log(SIM_LOG_ERROR, "rknn_create_mem_from_fd: DMA-buf file descriptors are not supported by the simulator");
    return NULL;
}

RKNN_EXPORT rknn_tensor_mem *rknn_create_mem_from_mb_blk(rknn_context ctx, void *mb_blk, int32_t offset)
{
    (void)ctx; (void)mb_blk; (void)offset;
    sim_log(SIM_LOG_ERROR, "rknn_create_mem_from_mb_blk: not supported");
    return NULL;
}

static void unbind(sim_ctx *c, rknn_tensor_mem *mem)
{
    if (c->in_mem)
        for (uint32_t i = 0; i < c->m->n_in; i++)
            if (c->in_mem[i].mem == mem)
                c->in_mem[i].mem = NULL;
    if (c->out_mem)
        for (uint32_t i = 0; i < c->m->n_out; i++)
            if (c->out_mem[i].mem == mem)
                c->out_mem[i].mem = NULL;
}

RKNN_EXPORT int rknn_destroy_mem(rknn_context ctx, rknn_tensor_mem *mem)
{
    sim_mem *sm = mem_of(mem);
    if (sm == NULL)
        return RKNN_ERR_PARAM_INVALID;
    if (ctx == 0 && !sm->no_context)
        return RKNN_ERR_CTX_INVALID;
    if (ctx != 0) {
        sim_ctx *c = lock_ctx(ctx);
        if (c == NULL)
            return RKNN_ERR_CTX_INVALID;
        unbind(c, mem);
        unlock_ctx(c);
    }
    sm->magic = 0;
    free(sm->pub.virt_addr);
    free(sm);
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_set_weight_mem(rknn_context ctx, rknn_tensor_mem *mem)
{
    (void)mem;
    sim_ctx *c = lock_ctx(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    sim_ctx_error(c, "rknn_set_weight_mem: user-allocated weight memory is not supported by the simulator");
    unlock_ctx(c);
    return RKNN_ERR_FAIL;
}

RKNN_EXPORT int rknn_set_internal_mem(rknn_context ctx, rknn_tensor_mem *mem)
{
    (void)mem;
    sim_ctx *c = lock_ctx(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    sim_ctx_error(c, "rknn_set_internal_mem: user-allocated internal memory is not supported by the simulator");
    unlock_ctx(c);
    return RKNN_ERR_FAIL;
}

static int set_io_mem_locked(sim_ctx *c, rknn_tensor_mem *mem, rknn_tensor_attr *attr)
{
    sim_model *m = c->m;
    if (c->info_only)
        return RKNN_ERR_FAIL;
    if (mem_of(mem) == NULL || attr == NULL) {
        sim_ctx_error(c, "rknn_set_io_mem: mem is not from rknn_create_mem/rknn_create_mem2, or attr is NULL");
        return RKNN_ERR_PARAM_INVALID;
    }
    if (mem->offset < 0 || (uint32_t)mem->offset > mem->size) {
        sim_ctx_error(c, "rknn_set_io_mem: mem offset %d outside its %u bytes", mem->offset, mem->size);
        return RKNN_ERR_PARAM_INVALID;
    }
    char name[RKNN_MAX_NAME_LEN];
    memcpy(name, attr->name, sizeof(name));
    name[sizeof(name) - 1] = 0;
    uint64_t avail = (uint64_t)mem->size - (uint64_t)mem->offset;
    for (uint32_t i = 0; i < m->n_in; i++) {
        const sim_tensor *t = &m->g.tensors[m->ins[i].tensor];
        if (strcmp(t->name, name) != 0)
            continue;
        uint32_t type = (uint32_t)attr->type;
        uint64_t es = attr->pass_through ? sim_dtype_size(t->dtype)
                      : type == RKNN_TENSOR_FLOAT32 ? 4 : type == RKNN_TENSOR_FLOAT16 ? 2
                      : (type == RKNN_TENSOR_INT8 || type == RKNN_TENSOR_UINT8) ? 1 : 0;
        if (es == 0 || (attr->pass_through && type != t->dtype)) {
            sim_ctx_error(c, "rknn_set_io_mem: input '%s' cannot take type %u (pass_through %u)", name, type,
                          attr->pass_through);
            return RKNN_ERR_PARAM_INVALID;
        }
        if (!attr->pass_through && t->n_dims == 4 && attr->fmt != RKNN_TENSOR_NHWC && attr->fmt != RKNN_TENSOR_NCHW) {
            sim_ctx_error(c, "rknn_set_io_mem: input '%s' format %u not supported", name, (unsigned)attr->fmt);
            return RKNN_ERR_PARAM_INVALID;
        }
        if (avail < (uint64_t)t->n_elems * es) {
            sim_ctx_error(c, "rknn_set_io_mem: input '%s' needs %llu bytes, mem holds %llu", name,
                          (unsigned long long)((uint64_t)t->n_elems * es), (unsigned long long)avail);
            return RKNN_ERR_PARAM_INVALID;
        }
        c->in_mem[i].mem = mem;
        c->in_mem[i].attr = *attr;
        if (attr->pass_through) /* the whole native tensor is exactly what the mem holds */
            c->in_mem[i].attr.type = (rknn_tensor_type)t->dtype;
        return RKNN_SUCC;
    }
    for (uint32_t i = 0; i < m->n_out; i++) {
        const sim_tensor *t = &m->g.tensors[m->outs[i].tensor];
        if (strcmp(t->name, name) != 0)
            continue;
        uint32_t type = (uint32_t)attr->type;
        if (type != RKNN_TENSOR_FLOAT32 && type != t->dtype) {
            sim_ctx_error(c, "rknn_set_io_mem: output '%s' can be FLOAT32 or its native type %u, not %u", name,
                          t->dtype, type);
            return RKNN_ERR_PARAM_INVALID;
        }
        if (avail < sim_output_bytes(c, i, type)) {
            sim_ctx_error(c, "rknn_set_io_mem: output '%s' needs %llu bytes, mem holds %llu", name,
                          (unsigned long long)sim_output_bytes(c, i, type), (unsigned long long)avail);
            return RKNN_ERR_PARAM_INVALID;
        }
        c->out_mem[i].mem = mem;
        c->out_mem[i].attr = *attr;
        return RKNN_SUCC;
    }
    sim_ctx_error(c, "rknn_set_io_mem: no input or output named '%s' (query the attr first)", name);
    return RKNN_ERR_PARAM_INVALID;
}

RKNN_EXPORT int rknn_set_io_mem(rknn_context ctx, rknn_tensor_mem *mem, rknn_tensor_attr *attr)
{
    sim_ctx *c = lock_ctx(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = set_io_mem_locked(c, mem, attr);
    unlock_ctx(c);
    return rc;
}

RKNN_EXPORT int rknn_set_input_shape(rknn_context ctx, rknn_tensor_attr *attr)
{
    (void)attr;
    sim_ctx *c = lock_ctx(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    sim_ctx_error(c, "rknn_set_input_shape is unavailable (deprecated); the model has static shapes");
    unlock_ctx(c);
    return RKNN_ERR_FAIL;
}

RKNN_EXPORT int rknn_set_input_shapes(rknn_context ctx, uint32_t n_inputs, rknn_tensor_attr attr[])
{
    sim_ctx *c = lock_ctx(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = sim_shapes_select(c, n_inputs, attr);
    unlock_ctx(c);
    return rc;
}

RKNN_EXPORT int rknn_mem_sync(rknn_context context, rknn_tensor_mem *mem, rknn_mem_sync_mode mode)
{
    sim_ctx *c = lock_ctx(context);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = RKNN_SUCC;
    if (mem_of(mem) == NULL || mode < RKNN_MEMORY_SYNC_TO_DEVICE || mode > RKNN_MEMORY_SYNC_BIDIRECTIONAL) {
        sim_ctx_error(c, "rknn_mem_sync: unknown memory or sync mode %d", (int)mode);
        rc = RKNN_ERR_PARAM_INVALID;
    }
    unlock_ctx(c);
    return rc;
}
