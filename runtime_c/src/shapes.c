/*
 * Dynamic input shapes (config(dynamic_input=...) in the toolkit; rknn_set_input_shapes in the C API).
 *
 * The toolkit compiles one graph per listed shape set into a single model; the runtime starts on the
 * first set and rknn_set_input_shapes switches between them. Here the model file is a bundle of ordinary
 * simulator models, one per shape set:
 *
 *     "RKNLDYN1"  u32 count  u32 reserved(0)  u64 size[count]  model bytes, in order
 *
 * All models must have the same inputs and outputs (count, names, types); only the shapes differ. A
 * context keeps every parsed model and points c->m at the selected one; switching re-allocates the
 * runtime buffers for the new shapes (zero-copy bindings and dumps of the old shapes are dropped).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"

#define SHAPES_MAGIC "RKNLDYN1"
#define SHAPES_HEADER 16u

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

int sim_shapes_is_bundle(const unsigned char *bytes, uint64_t size)
{
    return size >= SHAPES_HEADER && memcmp(bytes, SHAPES_MAGIC, 8) == 0;
}

static void unref_all(sim_model **models, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (models[i] != NULL)
            sim_model_unref(models[i]);
    free(models);
}

/* Same inputs/outputs (names, types, ranks) as the first model: only shapes may differ. */
static int same_interface(const sim_model *a, const sim_model *b, uint32_t which, char *err, size_t err_len)
{
    if (a->n_in != b->n_in || a->n_out != b->n_out) {
        snprintf(err, err_len, "shape set %u has %u inputs/%u outputs but set 0 has %u/%u", which, b->n_in, b->n_out,
                 a->n_in, a->n_out);
        return -1;
    }
    for (int out = 0; out < 2; out++) {
        uint32_t n = out ? a->n_out : a->n_in;
        for (uint32_t i = 0; i < n; i++) {
            const sim_tensor *ta = &a->g.tensors[(out ? a->outs : a->ins)[i].tensor];
            const sim_tensor *tb = &b->g.tensors[(out ? b->outs : b->ins)[i].tensor];
            if (strcmp(ta->name, tb->name) != 0 || ta->dtype != tb->dtype || ta->n_dims != tb->n_dims) {
                snprintf(err, err_len, "shape set %u: %s %u ('%s') differs from set 0 ('%s') in name, type or rank",
                         which, out ? "output" : "input", i, tb->name, ta->name);
                return -1;
            }
        }
    }
    return 0;
}

int sim_shapes_load(const unsigned char *bytes, uint64_t size, sim_model ***models_out, uint32_t *count_out,
                    char *err, size_t err_len)
{
    uint32_t count = rd32(bytes + 8);
    if (count == 0 || count > RKNN_MAX_DYNAMIC_SHAPE_NUM || rd32(bytes + 12) != 0) {
        snprintf(err, err_len, "dynamic-shape bundle: %u shape sets (1..%d allowed) or a non-zero reserved field",
                 count, RKNN_MAX_DYNAMIC_SHAPE_NUM);
        return -1;
    }
    uint64_t offset = SHAPES_HEADER + (uint64_t)count * 8;
    if (offset > size) {
        snprintf(err, err_len, "dynamic-shape bundle: truncated size table (%u sets, %llu bytes)", count,
                 (unsigned long long)size);
        return -1;
    }
    sim_model **models = calloc(count, sizeof(*models));
    if (models == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint64_t len = rd64(bytes + SHAPES_HEADER + (uint64_t)i * 8);
        if (len > size - offset) {
            snprintf(err, err_len, "dynamic-shape bundle: model %u (%llu bytes) runs past the end of the file", i,
                     (unsigned long long)len);
            unref_all(models, count);
            return -1;
        }
        char inner[SIM_ERR_LEN];
        inner[0] = 0;
        models[i] = sim_model_load(bytes + offset, len, inner, sizeof(inner));
        if (models[i] == NULL) {
            snprintf(err, err_len, "dynamic-shape bundle: shape set %u: %s", i, inner);
            unref_all(models, count);
            return -1;
        }
        if (i > 0 && same_interface(models[0], models[i], i, err, err_len) != 0) {
            unref_all(models, count);
            return -1;
        }
        offset += len;
    }
    if (offset != size) {
        snprintf(err, err_len, "dynamic-shape bundle: %llu trailing bytes", (unsigned long long)(size - offset));
        unref_all(models, count);
        return -1;
    }
    *models_out = models;
    *count_out = count;
    return 0;
}

void sim_shapes_share(sim_ctx *dst, const sim_ctx *src)
{
    if (src->shape_models == NULL)
        return;
    dst->shape_models = calloc(src->n_shape_models, sizeof(*dst->shape_models));
    if (dst->shape_models == NULL)
        return; /* the copy then behaves as a static-shape context on the current set */
    for (uint32_t i = 0; i < src->n_shape_models; i++) {
        sim_model_ref(src->shape_models[i]);
        dst->shape_models[i] = src->shape_models[i];
    }
    dst->n_shape_models = src->n_shape_models;
}

void sim_shapes_free(sim_ctx *c)
{
    if (c->shape_models != NULL)
        unref_all(c->shape_models, c->n_shape_models);
    c->shape_models = NULL;
    c->n_shape_models = 0;
}

/* Does attr (NHWC dims of input attr->index, or NCHW when attr->fmt says so) name model m's shape? */
static int attr_matches(const sim_model *m, const rknn_tensor_attr *attr)
{
    rknn_tensor_attr want;
    sim_fill_attr(m, 0, attr->index, 0, &want); /* 4-D inputs: NHWC, as RKNN_QUERY_INPUT_ATTR reports */
    if (want.n_dims != attr->n_dims)
        return 0;
    uint32_t dims[RKNN_MAX_DIMS];
    memcpy(dims, attr->dims, sizeof(uint32_t) * attr->n_dims);
    if (attr->n_dims == 4 && attr->fmt == RKNN_TENSOR_NCHW) {
        dims[1] = attr->dims[2];
        dims[2] = attr->dims[3];
        dims[3] = attr->dims[1];
    }
    return memcmp(want.dims, dims, sizeof(uint32_t) * attr->n_dims) == 0;
}

int sim_shapes_select(sim_ctx *c, uint32_t n_inputs, const rknn_tensor_attr *attrs)
{
    if (c->shape_models == NULL) {
        sim_ctx_error(c, "rknn_set_input_shapes: the model has static input shapes (not built with dynamic_input)");
        return RKNN_ERR_FAIL;
    }
    if (attrs == NULL || n_inputs != c->m->n_in) {
        sim_ctx_error(c, "rknn_set_input_shapes: give one attr per input (%u), got %u", c->m->n_in, n_inputs);
        return RKNN_ERR_PARAM_INVALID;
    }
    for (uint32_t i = 0; i < n_inputs; i++) {
        if (attrs[i].index >= c->m->n_in || attrs[i].n_dims == 0 || attrs[i].n_dims > RKNN_MAX_DIMS) {
            sim_ctx_error(c, "rknn_set_input_shapes: attr %u has index %u and %u dims", i, attrs[i].index,
                          attrs[i].n_dims);
            return RKNN_ERR_PARAM_INVALID;
        }
    }
    for (uint32_t s = 0; s < c->n_shape_models; s++) {
        sim_model *m = c->shape_models[s];
        uint32_t ok = 0;
        for (uint32_t i = 0; i < n_inputs; i++)
            ok += (uint32_t)attr_matches(m, &attrs[i]);
        if (ok != n_inputs)
            continue;
        if (m == c->m)
            return RKNN_SUCC;
        sim_ctx_free_runtime(c);
        sim_model_ref(m); /* c->m holds a reference of its own (dropped by ctx_free), besides the set's */
        sim_model_unref(c->m);
        c->m = m;
        c->has_run = 0;
        if (!c->info_only && sim_ctx_alloc_runtime(c) != RKNN_SUCC) {
            sim_ctx_error(c, "rknn_set_input_shapes: out of memory allocating buffers for shape set %u", s);
            return RKNN_ERR_MALLOC_FAIL;
        }
        return RKNN_SUCC;
    }
    char shape[96];
    size_t used = 0;
    shape[0] = 0;
    for (uint32_t d = 0; d < attrs[0].n_dims && used < sizeof(shape); d++)
        used += (size_t)snprintf(shape + used, sizeof(shape) - used, "%s%u", d ? "," : "", attrs[0].dims[d]);
    sim_ctx_error(c, "rknn_set_input_shapes: no shape set of this model has input 0 = [%s] (with the other "
                     "inputs given); query RKNN_QUERY_INPUT_DYNAMIC_RANGE for the %u built sets", shape,
                  c->n_shape_models);
    return RKNN_ERR_PARAM_INVALID;
}

int sim_shapes_query_range(sim_ctx *c, rknn_input_range *r)
{
    if (r->index >= c->m->n_in) {
        sim_ctx_error(c, "rknn_query: input index %u out of range (the model has %u)", r->index, c->m->n_in);
        return RKNN_ERR_PARAM_INVALID;
    }
    uint32_t index = r->index;
    sim_model *only = c->m;
    sim_model **models = c->shape_models != NULL ? c->shape_models : &only;
    uint32_t n = c->shape_models != NULL ? c->n_shape_models : 1;
    memset(r, 0, sizeof(*r));
    r->index = index;
    r->shape_number = n;
    for (uint32_t s = 0; s < n; s++) {
        rknn_tensor_attr a;
        sim_fill_attr(models[s], 0, index, 0, &a);
        if (s == 0) {
            r->fmt = a.fmt;
            r->n_dims = a.n_dims;
            snprintf(r->name, sizeof(r->name), "%s", a.name);
        }
        memcpy(r->dyn_range[s], a.dims, sizeof(uint32_t) * a.n_dims);
    }
    return RKNN_SUCC;
}
