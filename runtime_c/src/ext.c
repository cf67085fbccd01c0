/* rknnlink_sim_* extensions (include/rknnlink_sim.h): layer info, dumps and last errors. */
#include <stdio.h>
#include <string.h>

#include "handles.h"
#include "sim_core.h"

static sim_ctx *ext_lock(rknn_context h)
{
    sim_ctx *c = sim_handle_acquire(h);
    if (c != NULL)
        pthread_mutex_lock(&c->lock);
    return c;
}

static void ext_unlock(sim_ctx *c)
{
    rknn_context h = c->handle;
    pthread_mutex_unlock(&c->lock);
    sim_handle_release(h);
}

RKNN_EXPORT int rknnlink_sim_version(void)
{
    return RKNNLINK_SIM_EXT_VERSION;
}

RKNN_EXPORT int rknnlink_sim_layer_count(rknn_context ctx, uint32_t *count)
{
    if (count == NULL)
        return RKNN_ERR_PARAM_INVALID;
    sim_ctx *c = ext_lock(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    *count = c->m->g.n_ops;
    ext_unlock(c);
    return RKNN_SUCC;
}

RKNN_EXPORT int rknnlink_sim_layer_info(rknn_context ctx, uint32_t index, rknnlink_layer_info *info, uint32_t size)
{
    if (info == NULL || size != sizeof(rknnlink_layer_info))
        return RKNN_ERR_PARAM_INVALID;
    sim_ctx *c = ext_lock(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    const sim_model *m = c->m;
    int rc = RKNN_SUCC;
    if (index >= m->g.n_ops) {
        rc = RKNN_ERR_PARAM_INVALID;
    } else {
        const sim_op *op = &m->g.ops[index];
        const sim_layer_static *L = &m->layers[index];
        const sim_tensor *out = &m->g.tensors[op->outputs[0]];
        memset(info, 0, sizeof(*info));
        info->index = index;
        info->n_outputs = op->n_outputs;
        snprintf(info->name, sizeof(info->name), "%s", op->name);
        snprintf(info->op_type, sizeof(info->op_type), "%s", L->npu_type);
        snprintf(info->onnx_type, sizeof(info->onnx_type), "%s", m->defs[index]->onnx_name ? m->defs[index]->onnx_name : "");
        info->dtype = out->dtype;
        info->n_dims = out->n_dims;
        for (uint32_t d = 0; d < out->n_dims; d++)
            info->dims[d] = (uint32_t)out->dims[d];
        info->macs = L->macs;
        info->bytes_rw = L->bytes_rw;
        info->est_time_us = sim_cost_layer_us(m->platform, L, sim_cost_cores(m->platform, c->core_mask));
        info->cost_class = L->cost_class;
        info->act_elems = L->act_elems;
        info->measured_time_us = c->measured_us ? c->measured_us[index] : 0.0;
    }
    ext_unlock(c);
    return rc;
}

RKNN_EXPORT int rknnlink_sim_set_dump(rknn_context ctx, int enable)
{
    sim_ctx *c = ext_lock(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    c->dump_enabled = enable != 0;
    if (!c->dump_enabled)
        sim_ctx_drop_dumps(c);
    ext_unlock(c);
    return RKNN_SUCC;
}

static int dumps_ready(const sim_ctx *c)
{
    return c->dump_enabled && c->dumps != NULL && c->has_run;
}

RKNN_EXPORT int rknnlink_sim_dump_count(rknn_context ctx, uint32_t *count)
{
    if (count == NULL)
        return RKNN_ERR_PARAM_INVALID;
    sim_ctx *c = ext_lock(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    *count = dumps_ready(c) ? c->n_dumps : 0;
    ext_unlock(c);
    return RKNN_SUCC;
}

RKNN_EXPORT int rknnlink_sim_dump_info(rknn_context ctx, uint32_t index, rknnlink_dump_info *info, uint32_t size)
{
    if (info == NULL || size != sizeof(rknnlink_dump_info))
        return RKNN_ERR_PARAM_INVALID;
    sim_ctx *c = ext_lock(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = RKNN_SUCC;
    if (!dumps_ready(c) || index >= c->n_dumps) {
        rc = RKNN_ERR_PARAM_INVALID;
    } else {
        const sim_dump *d = &c->dumps[index];
        const sim_tensor *t = &c->m->g.tensors[d->tensor];
        memset(info, 0, sizeof(*info));
        info->layer_index = d->layer_index;
        info->output_slot = d->output_slot;
        snprintf(info->name, sizeof(info->name), "%s", t->name);
        info->dtype = t->dtype;
        info->qnt_type = t->dtype == SIM_I8 ? RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC : RKNN_TENSOR_QNT_NONE;
        info->scale = t->dtype == SIM_I8 ? t->scale : 1.0f;
        info->zp = t->dtype == SIM_I8 ? t->zp : 0;
        info->n_dims = t->n_dims;
        for (uint32_t k = 0; k < t->n_dims; k++)
            info->dims[k] = (uint32_t)t->dims[k];
        info->n_elems = (uint32_t)t->n_elems;
    }
    ext_unlock(c);
    return rc;
}

RKNN_EXPORT int rknnlink_sim_dump_read(rknn_context ctx, uint32_t index, float *f32, uint32_t f32_count, void *raw,
                                       uint32_t raw_size)
{
    sim_ctx *c = ext_lock(ctx);
    if (c == NULL)
        return RKNN_ERR_CTX_INVALID;
    int rc = RKNN_SUCC;
    if (!dumps_ready(c) || index >= c->n_dumps) {
        rc = RKNN_ERR_PARAM_INVALID;
    } else {
        const sim_dump *d = &c->dumps[index];
        const sim_tensor *t = &c->m->g.tensors[d->tensor];
        uint64_t n = (uint64_t)t->n_elems, rb = n * sim_dtype_size(t->dtype);
        if ((f32 && f32_count < n) || (raw && raw_size < rb)) {
            rc = RKNN_ERR_PARAM_INVALID;
        } else {
            if (f32)
                memcpy(f32, d->f32, (size_t)n * sizeof(float));
            if (raw)
                memcpy(raw, d->raw, (size_t)rb);
        }
    }
    ext_unlock(c);
    return rc;
}

RKNN_EXPORT const char *rknnlink_sim_last_error(rknn_context ctx)
{
    if (ctx == 0)
        return "";
    sim_ctx *c = sim_handle_acquire(ctx);
    if (c == NULL)
        return "invalid context";
    const char *text = c->last_error; /* valid until the context is destroyed */
    sim_handle_release(ctx);
    return text;
}
