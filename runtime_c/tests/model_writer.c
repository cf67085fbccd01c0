/* Test-only model writer: builds the sections in memory and lays them out as docs/model-format.md says. */
#include "model_writer.h"

#include <stdlib.h>
#include <string.h>

typedef struct bytes {
    uint8_t *p;
    size_t n, cap;
} bytes;

struct mw {
    bytes meta, strings, tensors, ops, attrs, indices, weights, io, attrdata;
    uint32_t n_tensors, n_attrs, attrs_mark, n_indices;
    char target[64];
    char custom[1024];
    uint32_t build_mode;
};

static void put(bytes *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 256;
        while (c < b->n + n)
            c *= 2;
        b->p = realloc(b->p, c);
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void pad_to(bytes *b, size_t align)
{
    static const uint8_t z[64] = {0};
    while (b->n % align)
        put(b, z, 1);
}

static void u32(bytes *b, uint32_t v) { put(b, &v, 4); }
static void u64(bytes *b, uint64_t v) { put(b, &v, 8); }
static void f32(bytes *b, float v) { put(b, &v, 4); }
static void zeros(bytes *b, size_t n) { static const uint8_t z[64] = {0}; while (n) { size_t k = n > 64 ? 64 : n; put(b, z, k); n -= k; } }

static void strref(mw *w, bytes *b, const char *s)
{
    uint32_t len = s ? (uint32_t)strlen(s) : 0;
    if (len == 0) {
        u32(b, 0);
        u32(b, 0);
        return;
    }
    u32(b, (uint32_t)w->strings.n);
    u32(b, len);
    put(&w->strings, s, len);
    put(&w->strings, "", 1);
}

mw *mw_new(const char *target, uint32_t build_mode)
{
    mw *w = calloc(1, sizeof(*w));
    strncpy(w->target, target, sizeof(w->target) - 1);
    w->build_mode = build_mode;
    return w;
}

void mw_custom_string(mw *w, const char *s)
{
    strncpy(w->custom, s, sizeof(w->custom) - 1);
}

void mw_free(mw *w)
{
    bytes *all[] = {&w->meta, &w->strings, &w->tensors, &w->ops, &w->attrs, &w->indices, &w->weights, &w->io,
                    &w->attrdata};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        free(all[i]->p);
    free(w);
}

static uint32_t tensor_rec(mw *w, const char *name, uint32_t dtype, uint32_t n_dims, const uint32_t *dims,
                           uint32_t kind, uint32_t qnt, float scale, int32_t zp, uint64_t d_off, uint64_t d_size)
{
    bytes *b = &w->tensors;
    strref(w, b, name);
    u32(b, dtype);
    u32(b, n_dims);
    for (uint32_t i = 0; i < 8; i++)
        u32(b, i < n_dims ? dims[i] : 0);
    u32(b, kind);
    u32(b, qnt);
    f32(b, qnt == 2 ? scale : 0.0f);
    put(b, &zp, 4);
    int32_t axis = -1;
    put(b, &axis, 4);
    u32(b, 0);
    u64(b, 0);
    u64(b, d_off);
    u64(b, d_size);
    zeros(b, 32);
    return w->n_tensors++;
}

uint32_t mw_tensor(mw *w, const char *name, uint32_t dtype, uint32_t n_dims, const uint32_t *dims, uint32_t kind,
                   uint32_t qnt, float scale, int32_t zp)
{
    return tensor_rec(w, name, dtype, n_dims, dims, kind, qnt, scale, zp, 0, 0);
}

uint32_t mw_const(mw *w, const char *name, uint32_t dtype, uint32_t n_dims, const uint32_t *dims, const void *data,
                  size_t size, uint32_t qnt, float scale, int32_t zp)
{
    pad_to(&w->weights, 64);
    uint64_t off = w->weights.n;
    put(&w->weights, data, size);
    return tensor_rec(w, name, dtype, n_dims, dims, 1, qnt, scale, zp, off, size);
}

static void attr_rec(mw *w, const char *name, uint32_t type, uint32_t count, const void *data, size_t size)
{
    pad_to(&w->attrdata, 8);
    uint64_t off = size ? w->attrdata.n : 0;
    put(&w->attrdata, data, size);
    strref(w, &w->attrs, name);
    u32(&w->attrs, type);
    u32(&w->attrs, count);
    u64(&w->attrs, off);
    w->n_attrs++;
}

void mw_attr_int(mw *w, const char *name, int64_t v) { attr_rec(w, name, 1, 1, &v, 8); }
void mw_attr_float(mw *w, const char *name, float v) { attr_rec(w, name, 2, 1, &v, 4); }
void mw_attr_ints(mw *w, const char *name, const int64_t *v, uint32_t n) { attr_rec(w, name, 3, n, v, 8u * n); }

void mw_op(mw *w, uint32_t type, const char *name, uint32_t n_in, const uint32_t *ins, uint32_t n_out,
           const uint32_t *outs, uint32_t act, float p0, float p1)
{
    uint32_t in_s = w->n_indices;
    for (uint32_t i = 0; i < n_in; i++)
        u32(&w->indices, ins[i]);
    uint32_t out_s = in_s + n_in;
    for (uint32_t i = 0; i < n_out; i++)
        u32(&w->indices, outs[i]);
    w->n_indices += n_in + n_out;
    bytes *b = &w->ops;
    u32(b, type);
    u32(b, 0);
    strref(w, b, name);
    u32(b, in_s);
    u32(b, n_in);
    u32(b, out_s);
    u32(b, n_out);
    u32(b, w->attrs_mark);
    u32(b, w->n_attrs - w->attrs_mark);
    u32(b, act);
    f32(b, p0);
    f32(b, p1);
    zeros(b, 12);
    w->attrs_mark = w->n_attrs;
}

void mw_io(mw *w, uint32_t tensor, uint32_t is_output, uint32_t reverse, uint32_t n_norm, const float *mean,
           const float *std, uint32_t layout)
{
    bytes *b = &w->io;
    u32(b, tensor);
    u32(b, is_output);
    u32(b, reverse);
    u32(b, n_norm);
    for (uint32_t i = 0; i < 16; i++)
        f32(b, i < n_norm ? mean[i] : 0.0f);
    for (uint32_t i = 0; i < 16; i++)
        f32(b, i < n_norm ? std[i] : 0.0f);
    u32(b, layout);
    zeros(b, 12);
}

static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc & 1u) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
    }
    return crc ^ 0xFFFFFFFFu;
}

uint8_t *mw_finish(mw *w, size_t *size, int with_crc)
{
    bytes meta = {0};
    strref(w, &meta, w->target);
    strref(w, &meta, w->custom);
    strref(w, &meta, "rknnlink-test 0.1.0");
    strref(w, &meta, "test-model");
    u32(&meta, w->build_mode);
    u32(&meta, 1);
    zeros(&meta, 24);
    struct { uint32_t kind; bytes *b; } secs[] = {
        {1, &meta}, {2, &w->strings}, {3, &w->tensors}, {4, &w->ops}, {5, &w->attrs}, {6, &w->indices},
        {8, &w->io}, {9, &w->attrdata}, {7, &w->weights}};
    uint32_t nsec = 0;
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++)
        if (secs[i].b->n > 0 || secs[i].kind <= 4 || secs[i].kind == 8)
            nsec++;
    bytes out = {0};
    zeros(&out, 64 + 24u * nsec);
    uint64_t table = 64;
    uint32_t k = 0;
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++) {
        if (!(secs[i].b->n > 0 || secs[i].kind <= 4 || secs[i].kind == 8))
            continue;
        pad_to(&out, secs[i].kind == 7 ? 64 : 8);
        uint64_t off = out.n, sz = secs[i].b->n;
        put(&out, secs[i].b->p, sz);
        uint8_t *e = out.p + table + 24u * k++;
        memcpy(e, &secs[i].kind, 4);
        memset(e + 4, 0, 4);
        memcpy(e + 8, &off, 8);
        memcpy(e + 16, &sz, 8);
    }
    free(meta.p);
    memcpy(out.p, "RKLNKSIM", 8);
    uint16_t major = 1, minor = 0;
    memcpy(out.p + 8, &major, 2);
    memcpy(out.p + 10, &minor, 2);
    uint32_t hs = 64;
    memcpy(out.p + 12, &hs, 4);
    uint64_t fs = out.n;
    memcpy(out.p + 16, &fs, 8);
    memcpy(out.p + 24, &nsec, 4);
    memcpy(out.p + 32, &table, 8);
    uint32_t crc = with_crc ? crc32_ieee(out.p + 64, out.n - 64) : 0;
    memcpy(out.p + 40, &crc, 4);
    *size = out.n;
    return out.p;
}
