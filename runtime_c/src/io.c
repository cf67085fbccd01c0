/*
 * Conversions between the caller's buffers and the simulator's tensors, and the tensor attributes the
 * API reports. Inside, every tensor is NCHW (model dims); 4-D tensors are shown to callers as the
 * vendor does: inputs NHWC, outputs NCHW.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

/* ---- input conversion ----
 * The caller's buffer becomes the model's NCHW tensor in blocks of IO_BLOCK pixels: every channel of a block
 * is gathered as float (the AVX2 NHWC de-interleave of 3 channels, bytes or float32, reads the block once for
 * all channels), then each channel plane is normalised ((v - mean) / std), rounded to binary16 (FLOAT16
 * models) or quantised (INT8 models, from a float scratch plane). A block's planes stay in L1 between the
 * steps. The AVX2 path does the same IEEE operations per element in the same order (an exact int/float
 * conversion or a copy of the bits, one subtraction, one division, then the shared round/quantise helpers), so
 * its results are bit-identical to the portable path's; RKNNLINK_SIM_ISA=generic (read per call) keeps the
 * portable path, for tests and A/B timing. Byte buffers into INT8 models take tables instead (below). */
#define IO_BLOCK 512

#if defined(__x86_64__) && defined(__GNUC__) && !defined(SIM_FORCE_GENERIC)
#define IO_HAVE_AVX2 1
#endif

static int io_use_avx2(void)
{
#ifdef IO_HAVE_AVX2
    return sim_isa_env() != SIM_ISA_ENV_GENERIC && __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

static void normalise_plane(float *x, uint64_t n, float mean, float sd)
{
    for (uint64_t i = 0; i < n; i++)
        x[i] = (x[i] - mean) / sd;
}

#ifdef IO_HAVE_AVX2
/* n bytes (unsigned or signed) to float. */
__attribute__((target("avx2"))) static void bytes_to_float_avx2(const void *src, int is_signed, uint64_t n, float *out)
{
    const unsigned char *p = src;
    uint64_t i = 0;
    if (is_signed) {
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p + i)));
            _mm256_storeu_ps(out + i, _mm256_cvtepi32_ps(w));
        }
        for (; i < n; i++)
            out[i] = (float)(int8_t)p[i];
    } else {
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p + i)));
            _mm256_storeu_ps(out + i, _mm256_cvtepi32_ps(w));
        }
        for (; i < n; i++)
            out[i] = (float)p[i];
    }
}

/* 16 bytes to two runs of 8 floats. */
__attribute__((target("avx2"), always_inline)) static inline void store16_avx2(__m128i v, int is_signed, float *out)
{
    __m256i lo = is_signed ? _mm256_cvtepi8_epi32(v) : _mm256_cvtepu8_epi32(v);
    __m128i h = _mm_srli_si128(v, 8);
    __m256i hi = is_signed ? _mm256_cvtepi8_epi32(h) : _mm256_cvtepu8_epi32(h);
    _mm256_storeu_ps(out, _mm256_cvtepi32_ps(lo));
    _mm256_storeu_ps(out + 8, _mm256_cvtepi32_ps(hi));
}

/* n pixels of 3 interleaved byte channels (p[3 s + k]) to three float planes out[k][s]: 16 pixels (48 bytes)
 * at a time, each channel picked out of the three 16-byte loads with one shuffle per load. */
__attribute__((target("avx2"))) static void deinterleave3_avx2(const void *src, int is_signed, uint64_t n,
                                                               float *const out[3])
{
    const unsigned char *p = src;
    unsigned char sel[3][3][16]; /* sel[k][r][j]: byte of load r that is output j of channel k (0x80: none) */
    for (int k = 0; k < 3; k++)
        for (int r = 0; r < 3; r++)
            for (int j = 0; j < 16; j++) {
                int b = 3 * j + k;
                sel[k][r][j] = (unsigned char)(b / 16 == r ? b % 16 : 0x80);
            }
    __m128i m[3][3];
    for (int k = 0; k < 3; k++)
        for (int r = 0; r < 3; r++)
            m[k][r] = _mm_loadu_si128((const __m128i *)(const void *)sel[k][r]);
    uint64_t s = 0;
    for (; s + 16 <= n; s += 16) {
        const unsigned char *q = p + 3 * s;
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)q);
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(q + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(q + 32));
        for (int k = 0; k < 3; k++) {
            __m128i v = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(a, m[k][0]), _mm_shuffle_epi8(b, m[k][1])),
                                     _mm_shuffle_epi8(c, m[k][2]));
            store16_avx2(v, is_signed, out[k] + s);
        }
    }
    for (; s < n; s++)
        for (int k = 0; k < 3; k++)
            out[k][s] = is_signed ? (float)(int8_t)p[3 * s + k] : (float)p[3 * s + k];
}

/* n pixels of 3 interleaved floats to three planes, 8 pixels (three 8-float loads) at a time: the 8 values of
 * channel k sit at distinct lane positions (3 j + k) % 8 of the three loads, so two blends gather them into one
 * register and a lane permute puts them in order. Moves bits only, like the portable memcpy. */
__attribute__((target("avx2"))) static void deinterleave3_f32_avx2(const float *p, uint64_t n, float *const out[3])
{
    const __m256i perm0 = _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5);
    const __m256i perm1 = _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6);
    const __m256i perm2 = _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7);
    uint64_t s = 0, n8 = n - n % 8;
    for (; s < n8; s += 8) {
        const float *q = p + 3 * s;
        __m256 a = _mm256_loadu_ps(q), b = _mm256_loadu_ps(q + 8), c = _mm256_loadu_ps(q + 16);
        __m256 t0 = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x92), c, 0x24); /* b: lanes 1 4 7, c: 2 5 */
        __m256 t1 = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x24), c, 0x49); /* b: 2 5, c: 0 3 6 */
        __m256 t2 = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x49), c, 0x92); /* b: 0 3 6, c: 1 4 7 */
        _mm256_storeu_ps(out[0] + s, _mm256_permutevar8x32_ps(t0, perm0));
        _mm256_storeu_ps(out[1] + s, _mm256_permutevar8x32_ps(t1, perm1));
        _mm256_storeu_ps(out[2] + s, _mm256_permutevar8x32_ps(t2, perm2));
    }
    for (; s < n; s++)
        for (int k = 0; k < 3; k++)
            memcpy(&out[k][s], &p[3 * s + (uint64_t)k], sizeof(float));
}

__attribute__((target("avx2"))) static void normalise_plane_avx2(float *x, uint64_t n, float mean, float sd)
{
    __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(sd);
    uint64_t i = 0, n8 = n - n % 8;
    for (; i < n8; i += 8)
        _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vs));
    for (; i < n; i++)
        x[i] = (x[i] - mean) / sd;
}
#endif

typedef struct in_conv {
    const void *buf;
    uint32_t type;
    int nhwc;
    int avx2;
    uint64_t ch, inner;
    const sim_io *io;
    const sim_tensor *t;
    void *dst;
} in_conv;

/* Pixels [s0, s0 + nb) of image o, every channel, as float: plane[cc] receives model channel cc. */
static void gather_block(const in_conv *v, uint64_t o, uint64_t s0, uint64_t nb, float *const *plane)
{
    uint64_t ch = v->ch;
    int bytes = v->type == RKNN_TENSOR_UINT8 || v->type == RKNN_TENSOR_INT8;
    int is_signed = v->type == RKNN_TENSOR_INT8;
    (void)bytes;
    (void)is_signed;
#ifdef IO_HAVE_AVX2
    if (v->avx2 && bytes && v->nhwc && ch == 3) {
        const unsigned char *p = (const unsigned char *)v->buf + (o * v->inner + s0) * 3;
        int rev = v->io->reverse_channels != 0;
        float *const out[3] = {plane[rev ? 2 : 0], plane[1], plane[rev ? 0 : 2]}; /* out[k]: source channel k */
        deinterleave3_avx2(p, is_signed, nb, out);
        return;
    }
    if (v->avx2 && v->type == RKNN_TENSOR_FLOAT32 && v->nhwc && ch == 3) {
        const float *p = (const float *)v->buf + (o * v->inner + s0) * 3;
        int rev = v->io->reverse_channels != 0;
        float *const out[3] = {plane[rev ? 2 : 0], plane[1], plane[rev ? 0 : 2]}; /* out[k]: source channel k */
        deinterleave3_f32_avx2(p, nb, out);
        return;
    }
#endif
    for (uint64_t cc = 0; cc < ch; cc++) {
        uint64_t sc = v->io->reverse_channels ? ch - 1 - cc : cc;
        uint64_t base = v->nhwc ? (o * v->inner + s0) * ch + sc : (o * ch + sc) * v->inner + s0;
        uint64_t step = v->nhwc && ch > 1 ? ch : 1;
#ifdef IO_HAVE_AVX2
        if (v->avx2 && bytes && step == 1) {
            bytes_to_float_avx2((const unsigned char *)v->buf + base, is_signed, nb, plane[cc]);
            continue;
        }
#endif
        gather_plane(v->buf, v->type, base, step, nb, plane[cc]);
    }
}

/* Normalise, round or quantise channel cc's plane of nb pixels (INT8 models: into q). */
static void finish_plane(const in_conv *v, uint64_t cc, float *plane, uint64_t nb, int8_t *q)
{
    const sim_io *io = v->io;
    if (io->n_norm) {
        uint32_t k = io->n_norm == 1 ? 0 : (uint32_t)cc;
#ifdef IO_HAVE_AVX2
        if (v->avx2)
            normalise_plane_avx2(plane, nb, io->mean[k], io->std[k]);
        else
#endif
            normalise_plane(plane, nb, io->mean[k], io->std[k]);
    }
    if (v->t->dtype == SIM_I8)
        sim_quant_array(plane, q, (size_t)nb, v->t->scale, v->t->zp);
    else if (v->t->dtype == SIM_F16)
        sim_round_f16_array(plane, (size_t)nb);
}

/* Byte buffers (UINT8, INT8) hold one of 256 values, so for INT8 models (whose quantisation costs a division
 * and a rounding per element after the mean/std) every channel's result for every byte is computed once, by the
 * same finish_plane as the element-wise path, into a table; the image is then looked up. Equal by construction;
 * used when the image has enough pixels per channel to pay for the table. (For float models the element-wise
 * AVX2 path measured faster than a float table's lookups: bench/bench_input_convert.py.) */
#define IO_LUT_MIN_PIXELS 2048
#define IO_LUT_MAX_CHANNELS 16

static int lut_wanted(const in_conv *v)
{
    int bytes = v->type == RKNN_TENSOR_UINT8 || v->type == RKNN_TENSOR_INT8;
    return bytes && v->t->dtype == SIM_I8 && v->ch <= IO_LUT_MAX_CHANNELS && v->inner >= IO_LUT_MIN_PIXELS;
}

/* ch tables of 256 entries, indexed by the buffer's byte. */
static void build_lut(const in_conv *v, int8_t *lut)
{
    float vals[256];
    for (uint64_t cc = 0; cc < v->ch; cc++) {
        for (int b = 0; b < 256; b++)
            vals[b] = v->type == RKNN_TENSOR_INT8 ? (float)(int8_t)(uint8_t)b : (float)b;
        finish_plane(v, cc, vals, 256, lut + 256 * cc);
    }
}

/* Image o through the tables: model channel cc of pixel s is table cc at the byte of source channel sc. */
static void lut_image(const in_conv *v, uint64_t o, const int8_t *lut)
{
    uint64_t ch = v->ch, inner = v->inner;
    const uint8_t *src = (const uint8_t *)v->buf + o * ch * inner;
    for (uint64_t cc = 0; cc < ch; cc++) {
        uint64_t sc = v->io->reverse_channels ? ch - 1 - cc : cc;
        const uint8_t *restrict p = v->nhwc ? src + sc : src + sc * inner;
        uint64_t step = v->nhwc ? ch : 1;
        const int8_t *restrict l = lut + 256 * cc;
        int8_t *restrict d = (int8_t *)v->dst + (o * ch + cc) * inner;
        /* 8 look-ups, then one store: a byte store before each next load stalled the loop when source and
         * destination planes sit a multiple of 4 KiB apart (NCHW: 2x slower than NHWC) */
        uint64_t s = 0, n8 = inner - inner % 8;
        for (; s < n8; s += 8) {
            int8_t t[8];
            for (int j = 0; j < 8; j++)
                t[j] = l[p[(s + (uint64_t)j) * step]];
            memcpy(d + s, t, sizeof t);
        }
        for (; s < inner; s++)
            d[s] = l[p[s * step]];
    }
}

static int convert_input(const in_conv *v, uint64_t outer)
{
    uint64_t ch = v->ch, inner = v->inner;
    int i8 = v->t->dtype == SIM_I8;
    if (lut_wanted(v)) {
        int8_t lut[256 * IO_LUT_MAX_CHANNELS];
        build_lut(v, lut);
        for (uint64_t o = 0; o < outer; o++)
            lut_image(v, o, lut);
        return RKNN_SUCC;
    }
    /* INT8 models quantise from a float block; float models gather straight into the tensor. */
    float *tmp = NULL;
    float **plane = malloc((size_t)ch * sizeof(*plane));
    if (plane == NULL)
        return RKNN_ERR_MALLOC_FAIL;
    uint64_t blk = inner < IO_BLOCK ? inner : IO_BLOCK;
    if (i8) {
        tmp = malloc((size_t)(ch * blk) * sizeof(float) + 1);
        if (tmp == NULL) {
            free(plane);
            return RKNN_ERR_MALLOC_FAIL;
        }
    }
    for (uint64_t o = 0; o < outer; o++)
        for (uint64_t s0 = 0; s0 < inner; s0 += blk) {
            uint64_t nb = inner - s0 < blk ? inner - s0 : blk;
            for (uint64_t cc = 0; cc < ch; cc++)
                plane[cc] = i8 ? tmp + cc * blk : (float *)v->dst + (o * ch + cc) * inner + s0;
            gather_block(v, o, s0, nb, plane);
            for (uint64_t cc = 0; cc < ch; cc++)
                finish_plane(v, cc, plane[cc], nb, i8 ? (int8_t *)v->dst + (o * ch + cc) * inner + s0 : NULL);
        }
    free(tmp);
    free(plane);
    return RKNN_SUCC;
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
    in_conv v = {.buf = buf, .type = type, .nhwc = t->n_dims == 4 && fmt == RKNN_TENSOR_NHWC,
                 .avx2 = io_use_avx2(), .ch = ch, .inner = inner, .io = io, .t = t, .dst = dst};
    if (t->n_dims < 2) { /* one run of n values (no channels: neither per-channel mean nor reversal) */
        outer = 1;
        v.ch = 1;
        v.inner = n;
    }
    return convert_input(&v, outer);
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
