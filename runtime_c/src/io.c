/*
 * Conversions between the caller's buffers and the simulator's tensors, and the tensor attributes the
 * API reports. Inside, every tensor is NCHW (model dims); 4-D tensors are shown to callers as the
 * vendor does: inputs NHWC, outputs NCHW.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"

static size_t user_type_size(uint32_t type)
{
    switch (type) {
    case RKNN_TENSOR_FLOAT32: return 4;
    case RKNN_TENSOR_FLOAT16: return 2;
    case RKNN_TENSOR_INT8: return 1;
    case RKNN_TENSOR_UINT8: return 1;
    default: return 0;
    }
}

static float read_user(const void *buf, uint32_t type, size_t i)
{
    switch (type) {
    case RKNN_TENSOR_FLOAT32: { float v; memcpy(&v, (const unsigned char *)buf + 4 * i, 4); return v; }
    case RKNN_TENSOR_FLOAT16: { uint16_t h; memcpy(&h, (const unsigned char *)buf + 2 * i, 2); return sim_f16_to_f32(h); }
    case RKNN_TENSOR_INT8: return (float)((const int8_t *)buf)[i];
    default: return (float)((const uint8_t *)buf)[i];
    }
}

/* n values of a user buffer starting at element base with stride step, as float. */
static void gather_plane(const void *buf, uint32_t type, uint64_t base, uint64_t step, uint64_t n, float *out)
{
    switch (type) {
    case RKNN_TENSOR_FLOAT32: {
        const unsigned char *p = (const unsigned char *)buf + 4 * base;
        for (uint64_t i = 0; i < n; i++)
            memcpy(&out[i], p + 4 * i * step, 4);
        break;
    }
    case RKNN_TENSOR_FLOAT16: {
        const unsigned char *p = (const unsigned char *)buf + 2 * base;
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i * step, 2);
            out[i] = sim_f16_to_f32(h);
        }
        break;
    }
    case RKNN_TENSOR_INT8: {
        const int8_t *p = (const int8_t *)buf + base;
        for (uint64_t i = 0; i < n; i++)
            out[i] = (float)p[i * step];
        break;
    }
    default: {
        const uint8_t *p = (const uint8_t *)buf + base;
        for (uint64_t i = 0; i < n; i++)
            out[i] = (float)p[i * step];
        break;
    }
    }
}

/* Split the NCHW shape into outer (N), channels (C) and inner (spatial) extents. */
static void shape3(const sim_tensor *t, uint64_t *outer, uint64_t *ch, uint64_t *inner)
{
    if (t->n_dims < 2) {
        *outer = (uint64_t)t->n_elems;
        *ch = 1;
        *inner = 1;
        return;
    }
    *outer = (uint64_t)t->dims[0];
    *ch = (uint64_t)t->dims[1];
    uint64_t in = 1;
    for (uint32_t d = 2; d < t->n_dims; d++)
        in *= (uint64_t)t->dims[d];
    *inner = in;
}

int sim_input_convert(sim_ctx *c, uint32_t idx, const void *buf, uint64_t size, uint32_t type, uint32_t fmt,
                      int pass_through)
{
    const sim_model *m = c->m;
    const sim_io *io = &m->ins[idx];
    const sim_tensor *t = &m->g.tensors[io->tensor];
    void *dst = c->io_bufs[io->tensor];
    uint64_t n = (uint64_t)t->n_elems;
    uint64_t outer, ch, inner;
    shape3(t, &outer, &ch, &inner);
    int nhwc;
    if (pass_through) {
        if (type != t->dtype) {
            sim_ctx_error(c, "input %u '%s': pass_through needs the native type %u, got %u", idx, t->name,
                          t->dtype, type);
            return RKNN_ERR_PARAM_INVALID;
        }
        uint64_t need = n * sim_dtype_size(t->dtype);
        if (size != need) {
            sim_ctx_error(c, "rknn_inputs_set, param input size(%llu) != model input size(%llu) (input %u '%s', "
                          "pass_through needs exactly the native tensor)", (unsigned long long)size,
                          (unsigned long long)need, idx, t->name);
            return RKNN_ERR_PARAM_INVALID;
        }
        nhwc = t->n_dims == 4 && io->layout == 1;
        for (uint64_t o = 0; o < outer; o++)
            for (uint64_t cc = 0; cc < ch; cc++)
                for (uint64_t s = 0; s < inner; s++) {
                    uint64_t di = (o * ch + cc) * inner + s;
                    uint64_t si = nhwc ? (o * inner + s) * ch + cc : di;
                    if (t->dtype == SIM_I8)
                        ((int8_t *)dst)[di] = ((const int8_t *)buf)[si];
                    else
                        ((float *)dst)[di] = read_user(buf, type, si);
                }
        return RKNN_SUCC;
    }
    size_t es = user_type_size(type);
    if (es == 0) {
        sim_ctx_error(c, "input %u '%s': unsupported buffer type %u (use UINT8, INT8, FLOAT16 or FLOAT32)", idx,
                      t->name, type);
        return RKNN_ERR_PARAM_INVALID;
    }
    if (t->n_dims == 4 && fmt != RKNN_TENSOR_NHWC && fmt != RKNN_TENSOR_NCHW) {
        sim_ctx_error(c, "input %u '%s': format %u not supported for a 4-D input (use NHWC or NCHW)", idx,
                      t->name, fmt);
        return RKNN_ERR_PARAM_INVALID;
    }
    uint64_t need = n * es;
    if (size < need) {
        sim_ctx_error(c, "rknn_inputs_set, param input size(%llu) < model input size(%llu) (input %u '%s', type %u)",
                      (unsigned long long)size, (unsigned long long)need, idx, t->name, type);
        return RKNN_ERR_PARAM_INVALID;
    }
    nhwc = t->n_dims == 4 && fmt == RKNN_TENSOR_NHWC;
    /* One channel plane at a time: gather (strided for NHWC), normalise, then round/quantise with the
     * vectorised array helpers. INT8 models need a float plane to quantise from. */
    float *tmp = NULL;
    if (t->dtype == SIM_I8) {
        tmp = malloc((size_t)inner * sizeof(float) + 1);
        if (tmp == NULL)
            return RKNN_ERR_MALLOC_FAIL;
    }
    for (uint64_t o = 0; o < outer; o++)
        for (uint64_t cc = 0; cc < ch; cc++) {
            uint64_t sc = io->reverse_channels ? ch - 1 - cc : cc;
            uint64_t base = nhwc ? o * inner * ch + sc : (o * ch + sc) * inner;
            uint64_t step = nhwc ? ch : 1;
            uint64_t doff = (o * ch + cc) * inner;
            float *plane = t->dtype == SIM_I8 ? tmp : (float *)dst + doff;
            gather_plane(buf, type, base, step, inner, plane);
            if (io->n_norm) {
                uint32_t k = io->n_norm == 1 ? 0 : (uint32_t)cc;
                float mean = io->mean[k], sd = io->std[k];
                for (uint64_t s2 = 0; s2 < inner; s2++)
                    plane[s2] = (plane[s2] - mean) / sd;
            }
            if (t->dtype == SIM_I8)
                sim_quant_array(plane, (int8_t *)dst + doff, (size_t)inner, t->scale, t->zp);
            else if (t->dtype == SIM_F16)
                sim_round_f16_array(plane, (size_t)inner);
        }
    free(tmp);
    return RKNN_SUCC;
}

uint64_t sim_output_bytes(const sim_ctx *c, uint32_t idx, uint32_t type)
{
    const sim_tensor *t = &c->m->g.tensors[c->m->outs[idx].tensor];
    return (uint64_t)t->n_elems * (type == RKNN_TENSOR_FLOAT32 ? 4u : sim_dtype_size(t->dtype));
}

int sim_output_convert(sim_ctx *c, uint32_t idx, void *buf, uint64_t size, uint32_t type, uint32_t fmt)
{
    const sim_tensor *t = &c->m->g.tensors[c->m->outs[idx].tensor];
    if (type != RKNN_TENSOR_FLOAT32 && type != t->dtype) {
        sim_ctx_error(c, "output %u '%s': type %u is neither FLOAT32 nor the native type %u", idx, t->name, type,
                      t->dtype);
        return RKNN_ERR_PARAM_INVALID;
    }
    uint64_t need = sim_output_bytes(c, idx, type);
    if (size < need) {
        sim_ctx_error(c, "output %u '%s': buffer of %llu bytes, %llu needed", idx, t->name,
                      (unsigned long long)size, (unsigned long long)need);
        return RKNN_ERR_PARAM_INVALID;
    }
    const void *src = c->io_bufs[c->m->outs[idx].tensor];
    uint64_t outer, ch, inner;
    shape3(t, &outer, &ch, &inner);
    int nhwc = t->n_dims == 4 && fmt == RKNN_TENSOR_NHWC;
    size_t n = (size_t)t->n_elems;
    if (!nhwc && type == RKNN_TENSOR_FLOAT32) { /* the common case, without per-element dispatch */
        if (t->dtype == SIM_I8)
            sim_dequant_array(src, buf, n, t->scale, t->zp);
        else
            memcpy(buf, src, n * sizeof(float));
        return RKNN_SUCC;
    }
    if (!nhwc && t->dtype == SIM_I8) {
        memcpy(buf, src, n);
        return RKNN_SUCC;
    }
    for (uint64_t o = 0; o < outer; o++)
        for (uint64_t cc = 0; cc < ch; cc++)
            for (uint64_t s = 0; s < inner; s++) {
                uint64_t si = (o * ch + cc) * inner + s;
                uint64_t di = nhwc ? (o * inner + s) * ch + cc : si;
                float v;
                if (t->dtype == SIM_I8) {
                    int8_t q = ((const int8_t *)src)[si];
                    if (type != RKNN_TENSOR_FLOAT32) {
                        ((int8_t *)buf)[di] = q;
                        continue;
                    }
                    v = t->scale * (float)(q - t->zp);
                } else {
                    v = ((const float *)src)[si];
                }
                if (type == RKNN_TENSOR_FLOAT16) {
                    uint16_t h = sim_f32_to_f16(v);
                    memcpy((unsigned char *)buf + 2 * di, &h, 2);
                } else {
                    memcpy((unsigned char *)buf + 4 * di, &v, 4);
                }
            }
    return RKNN_SUCC;
}

void sim_fill_attr(const sim_model *m, int is_output, uint32_t idx, int variant, rknn_tensor_attr *a)
{
    const sim_io *io = is_output ? &m->outs[idx] : &m->ins[idx];
    const sim_tensor *t = &m->g.tensors[io->tensor];
    memset(a, 0, sizeof(*a));
    a->index = idx;
    snprintf(a->name, sizeof(a->name), "%s", t->name);
    a->n_dims = t->n_dims;
    for (uint32_t d = 0; d < t->n_dims; d++)
        a->dims[d] = (uint32_t)t->dims[d];
    int nhwc = 0;
    if (t->n_dims == 4) {
        if (is_output)
            nhwc = variant == 2;
        else
            nhwc = variant == 1 ? io->layout == 1 : 1;
        a->fmt = nhwc ? RKNN_TENSOR_NHWC : RKNN_TENSOR_NCHW;
        if (nhwc) {
            a->dims[1] = (uint32_t)t->dims[2];
            a->dims[2] = (uint32_t)t->dims[3];
            a->dims[3] = (uint32_t)t->dims[1];
        }
        a->w_stride = nhwc ? a->dims[2] : a->dims[3];
    } else {
        a->fmt = RKNN_TENSOR_UNDEFINED;
    }
    a->n_elems = (uint32_t)t->n_elems;
    a->type = (rknn_tensor_type)t->dtype;
    a->size = (uint32_t)((uint64_t)t->n_elems * sim_dtype_size(t->dtype));
    if (t->dtype == SIM_I8) {
        a->qnt_type = RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC;
        a->zp = t->zp;
        a->scale = t->scale;
    } else {
        a->qnt_type = RKNN_TENSOR_QNT_NONE;
        a->zp = 0;
        a->scale = 1.0f;
    }
    a->size_with_stride = a->size;
    a->pass_through = 0;
    a->h_stride = 0;
}
