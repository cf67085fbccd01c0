/*
 * Parser of the rknnlink simulator model format (docs/model-format.md) into a sim_graph.
 *
 * Every offset, count and length is checked before use with 64-bit arithmetic that cannot overflow
 * (all file quantities are at most 2^64-1 and are compared against the buffer size before any
 * multiplication that could wrap). Any inconsistency yields NULL with a one-line reason; the caller
 * maps it to RKNN_ERR_MODEL_INVALID.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_core.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the model reader assumes a little-endian host"
#endif

enum { K_META = 1, K_STRINGS, K_TENSORS, K_OPS, K_ATTRS, K_INDICES, K_WEIGHTS, K_IO, K_ATTRDATA, K_LIMIT };

#define TENSOR_REC 128u
#define OP_REC 64u
#define ATTR_REC 24u
#define IO_REC 160u
#define META_REC 64u

typedef struct section {
    int present;
    uint64_t off, size;
} section;

typedef struct parser {
    const uint8_t *b;
    uint64_t n;
    section s[K_LIMIT];
    char *err;
    size_t err_len;
    sim_model *m;
    uint32_t n_attr_recs, n_indices;
    sim_attr *attrs;
    uint32_t *indices;
} parser;

static int fail(parser *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parser *P, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->err, P->err_len, fmt, ap);
    va_end(ap);
    sim_one_line(P->err);
    return -1;
}

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static int32_t rdi32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static float rdf(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

/* [off, off+len) lies inside [0, limit) */
static int in_range(uint64_t off, uint64_t len, uint64_t limit)
{
    return off <= limit && len <= limit - off;
}

static const uint8_t *sect_ptr(parser *P, int kind) { return P->b + P->s[kind].off; }

/* Well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF). */
static int utf8_ok(const uint8_t *s, uint32_t n)
{
    uint32_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint32_t len, cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1Fu; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0Fu; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07u; }
        else return 0;
        if (n - i < len)
            return 0;
        for (uint32_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0u) != 0x80u)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += len;
    }
    return 1;
}

/* Copy a strref from STRINGS into the pool as a NUL-terminated string. */
static int get_str(parser *P, const uint8_t *ref, uint32_t max_len, const char **out, const char *what)
{
    uint32_t off = rd32(ref), len = rd32(ref + 4);
    const section *st = &P->s[K_STRINGS];
    if (!in_range(off, len, st->size))
        return fail(P, "%s: string reference (offset %u, length %u) outside STRINGS (%llu bytes)", what, off,
                    len, (unsigned long long)st->size);
    if (len > max_len)
        return fail(P, "%s: string of %u bytes is longer than the limit of %u", what, len, max_len);
    const uint8_t *s = sect_ptr(P, K_STRINGS) + off;
    if (len > 0 && memchr(s, 0, len) != NULL)
        return fail(P, "%s: string contains a NUL byte", what);
    if (!utf8_ok(s, len))
        return fail(P, "%s: string is not valid UTF-8", what);
    char *c = sim_pool_alloc(&P->m->pool, (size_t)len + 1);
    if (c == NULL)
        return fail(P, "out of memory copying %s", what);
    memcpy(c, s, len);
    c[len] = 0;
    *out = c;
    return 0;
}

static int check_header(parser *P)
{
    const uint8_t *b = P->b;
    if (P->n >= 8 && memcmp(b, "CYPTRKNN", 8) == 0)
        return fail(P, "this is an encrypted .rknn model compiled by Rockchip's RKNN-Toolkit2; the rknnlink "
                       "simulator cannot execute it: connect a board and use init_runtime(target=...)");
    if (P->n >= 8 && memcmp(b, "RKNLSEG1", 8) == 0)
        return fail(P, "this model has custom operators (an rknnlink bundle of NPU sub-graphs and custom nodes, "
                       "written by export_rknn after reg_custom_op); the C runtime cannot run it: run it from "
                       "Python (load_rknn, reg_custom_op, init_runtime), see docs/toolkit-compatibility.md");
    if (P->n >= 4 && memcmp(b, "RKNN", 4) == 0)
        return fail(P, "this .rknn model was compiled by Rockchip's RKNN-Toolkit2 for a real NPU; the rknnlink "
                       "simulator cannot execute it: connect a board and use init_runtime(target=...)");
    if (P->n < 64)
        return fail(P, "model truncated: %llu bytes, the header alone is 64", (unsigned long long)P->n);
    if (memcmp(b, "RKLNKSIM", 8) != 0)
        return fail(P, "not an rknnlink simulator model (magic is not RKLNKSIM)");
    uint16_t major = rd16(b + 8);
    if (major != 1)
        return fail(P, "unsupported model format major version %u (this runtime reads 1.x)", major);
    if (rd32(b + 12) != 64)
        return fail(P, "header_size is %u, expected 64", rd32(b + 12));
    uint64_t fsize = rd64(b + 16);
    if (fsize != P->n)
        return fail(P, "file_size field says %llu bytes but the buffer holds %llu (truncated or padded model)",
                    (unsigned long long)fsize, (unsigned long long)P->n);
    uint32_t nsec = rd32(b + 24);
    if (nsec < 1 || nsec > 32)
        return fail(P, "section_count %u outside 1..32", nsec);
    if (rd32(b + 28) != 0)
        return fail(P, "header flags 0x%x are not zero", rd32(b + 28));
    uint64_t toff = rd64(b + 32);
    if (toff % 8 != 0 || toff < 64 || !in_range(toff, (uint64_t)nsec * 24u, P->n))
        return fail(P, "section table at offset %llu (%u entries) is misaligned or outside the file",
                    (unsigned long long)toff, nsec);
    uint32_t crc = rd32(b + 40);
    if (crc != 0) {
        uint32_t got = sim_crc32(b + 64, (size_t)(P->n - 64));
        if (got != crc)
            return fail(P, "CRC-32 mismatch (header 0x%08x, data 0x%08x): the model is corrupted", crc, got);
    }
    /* sections */
    uint64_t starts[32], ends[32];
    for (uint32_t i = 0; i < nsec; i++) {
        const uint8_t *e = b + toff + (uint64_t)i * 24u;
        uint32_t kind = rd32(e);
        uint64_t off = rd64(e + 8), size = rd64(e + 16);
        if (!in_range(off, size, P->n))
            return fail(P, "section %u (kind %u) at %llu+%llu lies outside the file", i, kind,
                        (unsigned long long)off, (unsigned long long)size);
        if (size > 0 && (off < 64 || (off < toff + (uint64_t)nsec * 24u && toff < off + size)))
            return fail(P, "section %u (kind %u) overlaps the header or the section table", i, kind);
        starts[i] = off;
        ends[i] = off + size;
        for (uint32_t j = 0; j < i; j++)
            if (size > 0 && ends[j] > starts[j] && starts[i] < ends[j] && starts[j] < ends[i])
                return fail(P, "sections %u and %u overlap", j, i);
        if (kind >= 1 && kind < K_LIMIT) {
            if (P->s[kind].present)
                return fail(P, "section kind %u appears twice", kind);
            P->s[kind].present = 1;
            P->s[kind].off = off;
            P->s[kind].size = size;
        }
        /* unknown kinds: added by a newer minor version, ignored */
    }
    static const struct { int kind; const char *name; } req[] = {
        {K_META, "META"}, {K_STRINGS, "STRINGS"}, {K_TENSORS, "TENSORS"}, {K_OPS, "OPS"}, {K_IO, "IO"}};
    for (size_t i = 0; i < sizeof(req) / sizeof(req[0]); i++)
        if (!P->s[req[i].kind].present)
            return fail(P, "required section %s is missing", req[i].name);
    if (P->s[K_META].size != META_REC)
        return fail(P, "META section is %llu bytes, expected %u", (unsigned long long)P->s[K_META].size, META_REC);
    static const struct { int kind; uint32_t rec; const char *name; } recs[] = {
        {K_TENSORS, TENSOR_REC, "TENSORS"}, {K_OPS, OP_REC, "OPS"}, {K_ATTRS, ATTR_REC, "ATTRS"},
        {K_INDICES, 4, "INDICES"}, {K_IO, IO_REC, "IO"}};
    for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
        const section *s = &P->s[recs[i].kind];
        if (s->present && s->size % recs[i].rec != 0)
            return fail(P, "%s section size %llu is not a multiple of its record size %u", recs[i].name,
                        (unsigned long long)s->size, recs[i].rec);
    }
    if (P->s[K_WEIGHTS].present && P->s[K_WEIGHTS].off % 64 != 0)
        return fail(P, "WEIGHTS section offset %llu is not aligned to 64", (unsigned long long)P->s[K_WEIGHTS].off);
    if (P->s[K_TENSORS].size / TENSOR_REC > 0x7FFFFFFFu || P->s[K_OPS].size / OP_REC > 0x7FFFFFFFu)
        return fail(P, "too many records");
    if (P->s[K_TENSORS].size == 0)
        return fail(P, "the model has no tensors");
    if (P->s[K_OPS].size == 0)
        return fail(P, "the model has no operators");
    return 0;
}

static int parse_meta(parser *P)
{
    const uint8_t *r = sect_ptr(P, K_META);
    sim_model *m = P->m;
    const char *target = NULL;
    if (get_str(P, r, 31, &target, "META target_platform") ||
        get_str(P, r + 8, 1023, &m->custom_string, "META custom_string") ||
        get_str(P, r + 16, 4096, &m->producer, "META producer") ||
        get_str(P, r + 24, 4096, &m->model_name, "META model name"))
        return -1;
    snprintf(m->target, sizeof(m->target), "%s", target);
    m->build_mode = rd32(r + 32);
    m->batch = rd32(r + 36);
    if (m->build_mode > 2)
        return fail(P, "META build mode %u is not 0 (fp32), 1 (fp16) or 2 (int8)", m->build_mode);
    if (m->batch < 1)
        return fail(P, "META batch size is 0");
    return 0;
}

static int valid_dtype(uint32_t t)
{
    return t == SIM_F32 || t == SIM_F16 || t == SIM_I8 || t == SIM_U8 || t == SIM_I16 || t == SIM_I32 ||
           t == SIM_I64 || t == SIM_BOOL;
}

static int zp_in_range(uint32_t dtype, int32_t zp)
{
    switch (dtype) {
    case SIM_I8: return zp >= -128 && zp <= 127;
    case SIM_U8: return zp >= 0 && zp <= 255;
    case SIM_I16: return zp >= -32768 && zp <= 32767;
    case SIM_I32: return 1;
    default: return 0;
    }
}

static int parse_tensors(parser *P)
{
    sim_model *m = P->m;
    uint32_t n = (uint32_t)(P->s[K_TENSORS].size / TENSOR_REC);
    m->g.n_tensors = n;
    m->g.tensors = sim_pool_alloc(&m->pool, (size_t)n * sizeof(sim_tensor));
    if (m->g.tensors == NULL)
        return fail(P, "out of memory for %u tensors", n);
    const section *w = &P->s[K_WEIGHTS];
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *r = sect_ptr(P, K_TENSORS) + (uint64_t)i * TENSOR_REC;
        sim_tensor *t = &m->g.tensors[i];
        char what[64];
        snprintf(what, sizeof(what), "tensor %u name", i);
        if (get_str(P, r, 4096, &t->name, what))
            return -1;
        t->dtype = rd32(r + 8);
        t->n_dims = rd32(r + 12);
        t->kind = rd32(r + 48);
        t->qnt = rd32(r + 52);
        t->scale = rdf(r + 56);
        t->zp = rdi32(r + 60);
        t->q_axis = rdi32(r + 64);
        t->q_count = rd32(r + 68);
        uint64_t q_off = rd64(r + 72), d_off = rd64(r + 80), d_size = rd64(r + 88);
        if (!valid_dtype(t->dtype))
            return fail(P, "tensor %u '%s': unknown data type %u", i, t->name, t->dtype);
        if (t->n_dims > SIM_MAX_DIMS)
            return fail(P, "tensor %u '%s': %u dimensions (at most 8)", i, t->name, t->n_dims);
        if (t->kind > SIM_T_OUTPUT)
            return fail(P, "tensor %u '%s': unknown kind %u", i, t->name, t->kind);
        uint64_t elems = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint32_t v = rd32(r + 16 + 4 * d);
            if (v < 1)
                return fail(P, "tensor %u '%s': dimension %u is 0", i, t->name, d);
            elems *= v;
            if (elems >= (1ull << 31))
                return fail(P, "tensor %u '%s': element count exceeds 2^31", i, t->name);
            t->dims[d] = v;
        }
        t->n_elems = (int64_t)elems;
        int is_const = t->kind == SIM_T_CONST;
        if (!is_const) {
            if (t->dtype != SIM_F32 && t->dtype != SIM_F16 && t->dtype != SIM_I8)
                return fail(P, "tensor %u '%s': activations must be FLOAT32, FLOAT16 or INT8 (got type %u)", i,
                            t->name, t->dtype);
            if (t->dtype == SIM_I8 && t->qnt != SIM_Q_AFFINE)
                return fail(P, "tensor %u '%s': INT8 activation needs per-tensor affine quantization", i, t->name);
            if (t->qnt == SIM_Q_CHANNEL)
                return fail(P, "tensor %u '%s': per-channel quantization is only allowed on constants", i, t->name);
            if (d_size != 0)
                return fail(P, "tensor %u '%s': non-constant tensor with data_size %llu", i, t->name,
                            (unsigned long long)d_size);
        }
        if (t->qnt != SIM_Q_NONE && t->qnt != SIM_Q_AFFINE && t->qnt != SIM_Q_CHANNEL)
            return fail(P, "tensor %u '%s': unknown quantization type %u", i, t->name, t->qnt);
        if (t->qnt != SIM_Q_NONE && !(t->dtype == SIM_I8 || t->dtype == SIM_U8 || t->dtype == SIM_I16 ||
                                      t->dtype == SIM_I32))
            return fail(P, "tensor %u '%s': quantization on a non-integer type %u", i, t->name, t->dtype);
        if (t->qnt == SIM_Q_AFFINE) {
            if (!(t->scale > 0.0f) || !isfinite(t->scale))
                return fail(P, "tensor %u '%s': scale %g must be positive and finite", i, t->name, (double)t->scale);
            if (!zp_in_range(t->dtype, t->zp))
                return fail(P, "tensor %u '%s': zero point %d outside the range of its type", i, t->name, t->zp);
        }
        if (t->qnt == SIM_Q_CHANNEL) {
            if (t->q_axis < 0 || (uint32_t)t->q_axis >= t->n_dims)
                return fail(P, "tensor %u '%s': quant_axis %d outside 0..%u", i, t->name, t->q_axis,
                            t->n_dims ? t->n_dims - 1 : 0);
            if ((int64_t)t->q_count != t->dims[t->q_axis])
                return fail(P, "tensor %u '%s': quant_count %u differs from dims[%d] = %lld", i, t->name,
                            t->q_count, t->q_axis, (long long)t->dims[t->q_axis]);
            if (!w->present || q_off % 4 != 0 || !in_range(q_off, (uint64_t)t->q_count * 8u, w->size))
                return fail(P, "tensor %u '%s': quantization table outside WEIGHTS or misaligned", i, t->name);
            float *sc = sim_pool_alloc(&m->pool, (size_t)t->q_count * 4u);
            int32_t *zp = sim_pool_alloc(&m->pool, (size_t)t->q_count * 4u);
            if (!sc || !zp)
                return fail(P, "out of memory for quantization tables");
            const uint8_t *q = sect_ptr(P, K_WEIGHTS) + q_off;
            for (uint32_t c = 0; c < t->q_count; c++) {
                sc[c] = rdf(q + 4u * c);
                zp[c] = rdi32(q + 4u * t->q_count + 4u * c);
                if (!(sc[c] > 0.0f) || !isfinite(sc[c]))
                    return fail(P, "tensor %u '%s': channel %u scale %g must be positive and finite", i, t->name,
                                c, (double)sc[c]);
                if (!zp_in_range(t->dtype, zp[c]))
                    return fail(P, "tensor %u '%s': channel %u zero point %d out of range", i, t->name, c, zp[c]);
            }
            t->q_scales = sc;
            t->q_zps = zp;
        } else {
            if (t->q_axis != -1 || t->q_count != 0)
                return fail(P, "tensor %u '%s': quant_axis/quant_count set without per-channel quantization", i,
                            t->name);
        }
        if (is_const) {
            size_t es = sim_dtype_size(t->dtype);
            uint64_t need = elems * es;
            if (d_size != need)
                return fail(P, "tensor %u '%s': data_size %llu but %llu elements of %zu bytes need %llu", i,
                            t->name, (unsigned long long)d_size, (unsigned long long)elems, es,
                            (unsigned long long)need);
            if (!w->present || d_off % es != 0 || !in_range(d_off, d_size, w->size))
                return fail(P, "tensor %u '%s': constant data (offset %llu, %llu bytes) outside WEIGHTS or "
                               "misaligned", i, t->name, (unsigned long long)d_off, (unsigned long long)d_size);
            void *data = sim_pool_alloc(&m->pool, (size_t)d_size);
            if (data == NULL)
                return fail(P, "out of memory for constant '%s'", t->name);
            memcpy(data, sect_ptr(P, K_WEIGHTS) + d_off, (size_t)d_size);
            t->data = data;
            m->weight_size += d_size;
        }
    }
    return 0;
}

/* Float32 view of a constant: widen f16, dequantise per tensor/per channel, convert integers. */
static int build_fdata(parser *P, sim_tensor *t)
{
    size_t n = (size_t)t->n_elems;
    if (t->dtype == SIM_F32) {
        t->fdata = (const float *)t->data;
        return 0;
    }
    float *f = sim_pool_alloc(&P->m->pool, n * sizeof(float));
    if (f == NULL)
        return fail(P, "out of memory for the float view of '%s'", t->name);
    const uint8_t *d = t->data;
    uint64_t inner = 1;
    if (t->qnt == SIM_Q_CHANNEL)
        for (uint32_t k = (uint32_t)t->q_axis + 1; k < t->n_dims; k++)
            inner *= (uint64_t)t->dims[k];
    for (size_t i = 0; i < n; i++) {
        double v;
        switch (t->dtype) {
        case SIM_F16: { uint16_t h; memcpy(&h, d + 2 * i, 2); f[i] = sim_f16_to_f32(h); continue; }
        case SIM_I8: v = (int8_t)d[i]; break;
        case SIM_U8: v = d[i]; break;
        case SIM_I16: { int16_t x; memcpy(&x, d + 2 * i, 2); v = x; break; }
        case SIM_I32: { int32_t x; memcpy(&x, d + 4 * i, 4); v = x; break; }
        case SIM_I64: { int64_t x; memcpy(&x, d + 8 * i, 8); v = (double)x; break; }
        case SIM_BOOL: v = d[i] != 0; break;
        default: v = 0; break;
        }
        if (t->qnt == SIM_Q_AFFINE) {
            v = (double)t->scale * (v - t->zp);
        } else if (t->qnt == SIM_Q_CHANNEL) {
            uint64_t c = ((uint64_t)i / inner) % (uint64_t)t->q_count;
            v = (double)t->q_scales[c] * (v - t->q_zps[c]);
        }
        f[i] = (float)v;
    }
    t->fdata = f;
    return 0;
}

static int parse_attrs(parser *P)
{
    sim_model *m = P->m;
    const section *a = &P->s[K_ATTRS], *ad = &P->s[K_ATTRDATA];
    P->n_attr_recs = a->present ? (uint32_t)(a->size / ATTR_REC) : 0;
    if (a->present && a->size / ATTR_REC > 0x7FFFFFFFu)
        return fail(P, "too many attributes");
    if (P->n_attr_recs == 0)
        return 0;
    P->attrs = sim_pool_alloc(&m->pool, (size_t)P->n_attr_recs * sizeof(sim_attr));
    if (P->attrs == NULL)
        return fail(P, "out of memory for attributes");
    for (uint32_t i = 0; i < P->n_attr_recs; i++) {
        const uint8_t *r = sect_ptr(P, K_ATTRS) + (uint64_t)i * ATTR_REC;
        sim_attr *at = &P->attrs[i];
        char what[64];
        snprintf(what, sizeof(what), "attribute %u name", i);
        if (get_str(P, r, 256, &at->name, what))
            return -1;
        at->type = rd32(r + 8);
        at->count = rd32(r + 12);
        uint64_t off = rd64(r + 16);
        uint64_t es;
        switch (at->type) {
        case SIM_A_INT: case SIM_A_INTS: es = 8; break;
        case SIM_A_FLOAT: case SIM_A_FLOATS: es = 4; break;
        case SIM_A_STRING: es = 1; break;
        default: return fail(P, "attribute %u '%s': unknown type %u", i, at->name, at->type);
        }
        if ((at->type == SIM_A_INT || at->type == SIM_A_FLOAT) && at->count != 1)
            return fail(P, "attribute %u '%s': scalar with count %u", i, at->name, at->count);
        uint64_t bytes = (uint64_t)at->count * es;
        if (bytes > 0) {
            if (!ad->present || off % 8 != 0 || !in_range(off, bytes, ad->size))
                return fail(P, "attribute %u '%s': value (offset %llu, %llu bytes) outside ATTRDATA or not "
                               "8-aligned", i, at->name, (unsigned long long)off, (unsigned long long)bytes);
        }
        const uint8_t *src = ad->present ? sect_ptr(P, K_ATTRDATA) + (bytes ? off : 0) : NULL;
        if (at->type == SIM_A_STRING) {
            char *s = sim_pool_alloc(&m->pool, (size_t)bytes + 1);
            if (s == NULL)
                return fail(P, "out of memory");
            if (bytes)
                memcpy(s, src, (size_t)bytes);
            at->str = s;
        } else if (es == 8) {
            int64_t *v = sim_pool_alloc(&m->pool, (size_t)bytes + 8);
            if (v == NULL)
                return fail(P, "out of memory");
            if (bytes)
                memcpy(v, src, (size_t)bytes);
            at->ints = v;
        } else {
            float *v = sim_pool_alloc(&m->pool, (size_t)bytes + 4);
            if (v == NULL)
                return fail(P, "out of memory");
            if (bytes)
                memcpy(v, src, (size_t)bytes);
            at->floats = v;
        }
    }
    return 0;
}

static int parse_ops(parser *P)
{
    sim_model *m = P->m;
    const section *ix = &P->s[K_INDICES];
    P->n_indices = ix->present ? (uint32_t)(ix->size / 4) : 0;
    if (ix->present && ix->size / 4 > 0x7FFFFFFFu)
        return fail(P, "too many indices");
    if (P->n_indices) {
        P->indices = sim_pool_alloc(&m->pool, (size_t)P->n_indices * 4u);
        if (P->indices == NULL)
            return fail(P, "out of memory for indices");
        memcpy(P->indices, sect_ptr(P, K_INDICES), (size_t)P->n_indices * 4u);
    }
    uint32_t n = (uint32_t)(P->s[K_OPS].size / OP_REC);
    uint32_t nt = m->g.n_tensors;
    m->g.n_ops = n;
    m->g.ops = sim_pool_alloc(&m->pool, (size_t)n * sizeof(sim_op));
    m->defs = sim_pool_alloc(&m->pool, (size_t)n * sizeof(*m->defs));
    uint32_t *producer = malloc((size_t)nt * sizeof(uint32_t));
    if (!m->g.ops || !m->defs || !producer) {
        free(producer);
        return fail(P, "out of memory for %u operators", n);
    }
    for (uint32_t t = 0; t < nt; t++)
        producer[t] = SIM_NONE;
    int rc = 0;
    for (uint32_t k = 0; k < n && rc == 0; k++) {
        const uint8_t *r = sect_ptr(P, K_OPS) + (uint64_t)k * OP_REC;
        sim_op *op = &m->g.ops[k];
        char what[64];
        snprintf(what, sizeof(what), "operator %u name", k);
        if ((rc = get_str(P, r + 8, 4096, &op->name, what)) != 0)
            break;
        op->type = rd32(r);
        op->index = k;
        uint32_t flags = rd32(r + 4);
        uint32_t in_s = rd32(r + 16), in_n = rd32(r + 20), out_s = rd32(r + 24), out_n = rd32(r + 28);
        uint32_t at_s = rd32(r + 32), at_n = rd32(r + 36);
        op->act = rd32(r + 40);
        op->act_p0 = rdf(r + 44);
        op->act_p1 = rdf(r + 48);
        if (flags != 0) { rc = fail(P, "operator %u '%s': flags 0x%x are not zero", k, op->name, flags); break; }
        if (in_n > 16 || out_n < 1 || out_n > 16) {
            rc = fail(P, "operator %u '%s': %u inputs / %u outputs (limits 0..16 / 1..16)", k, op->name, in_n, out_n);
            break;
        }
        if (!in_range(in_s, in_n, P->n_indices) || !in_range(out_s, out_n, P->n_indices)) {
            rc = fail(P, "operator %u '%s': input/output index range outside INDICES (%u entries)", k, op->name,
                      P->n_indices);
            break;
        }
        if (!in_range(at_s, at_n, P->n_attr_recs)) {
            rc = fail(P, "operator %u '%s': attribute range %u+%u outside ATTRS (%u records)", k, op->name, at_s,
                      at_n, P->n_attr_recs);
            break;
        }
        if (op->act > SIM_ACT_TANH) { rc = fail(P, "operator %u '%s': unknown fused activation %u", k, op->name, op->act); break; }
        if (isnan(op->act_p0) || isnan(op->act_p1)) { rc = fail(P, "operator %u '%s': NaN activation parameter", k, op->name); break; }
        op->n_inputs = in_n;
        op->n_outputs = out_n;
        op->inputs = in_n ? P->indices + in_s : NULL;
        op->outputs = P->indices + out_s;
        op->n_attrs = at_n;
        op->attrs = at_n ? P->attrs + at_s : NULL;
        m->defs[k] = sim_op_find(op->type);
        if (m->defs[k] == NULL) {
            rc = fail(P, "operator %u '%s': unsupported operator type %u", k, op->name, op->type);
            break;
        }
        for (uint32_t i = 0; i < in_n && rc == 0; i++) {
            uint32_t t = op->inputs[i];
            if (t == SIM_NONE)
                continue;
            if (t >= nt) { rc = fail(P, "operator %u '%s': input %u refers to tensor %u of %u", k, op->name, i, t, nt); break; }
            uint32_t kind = m->g.tensors[t].kind;
            if ((kind == SIM_T_INTERMEDIATE || kind == SIM_T_OUTPUT) && producer[t] == SIM_NONE)
                rc = fail(P, "operator %u '%s' reads tensor '%s' before any operator produces it (not in "
                             "topological order)", k, op->name, m->g.tensors[t].name);
        }
        for (uint32_t i = 0; i < out_n && rc == 0; i++) {
            uint32_t t = op->outputs[i];
            if (t >= nt) { rc = fail(P, "operator %u '%s': output %u refers to tensor %u of %u", k, op->name, i, t, nt); break; }
            uint32_t kind = m->g.tensors[t].kind;
            if (kind != SIM_T_INTERMEDIATE && kind != SIM_T_OUTPUT)
                rc = fail(P, "operator %u '%s' writes tensor '%s', which is a constant or graph input", k,
                          op->name, m->g.tensors[t].name);
            else if (producer[t] != SIM_NONE)
                rc = fail(P, "tensor '%s' is produced by more than one operator", m->g.tensors[t].name);
            else
                producer[t] = k;
        }
    }
    for (uint32_t t = 0; t < nt && rc == 0; t++) {
        uint32_t kind = m->g.tensors[t].kind;
        if ((kind == SIM_T_INTERMEDIATE || kind == SIM_T_OUTPUT) && producer[t] == SIM_NONE)
            rc = fail(P, "tensor %u '%s' is never produced by any operator", t, m->g.tensors[t].name);
    }
    free(producer);
    return rc;
}

static int parse_io(parser *P)
{
    sim_model *m = P->m;
    uint32_t n = (uint32_t)(P->s[K_IO].size / IO_REC);
    uint32_t nt = m->g.n_tensors;
    uint32_t n_in = 0, n_out = 0;
    for (uint32_t t = 0; t < nt; t++) {
        if (m->g.tensors[t].kind == SIM_T_INPUT) n_in++;
        if (m->g.tensors[t].kind == SIM_T_OUTPUT) n_out++;
    }
    if (n_in == 0 || n_out == 0)
        return fail(P, "the model needs at least one graph input and one graph output tensor");
    if (n != n_in + n_out)
        return fail(P, "IO section has %u records but the model has %u inputs and %u outputs", n, n_in, n_out);
    m->n_in = n_in;
    m->n_out = n_out;
    m->ins = sim_pool_alloc(&m->pool, n_in * sizeof(sim_io));
    m->outs = sim_pool_alloc(&m->pool, n_out * sizeof(sim_io));
    uint8_t *seen = calloc(nt, 1);
    if (!m->ins || !m->outs || !seen) {
        free(seen);
        return fail(P, "out of memory for IO records");
    }
    uint32_t ci = 0, co = 0;
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        const uint8_t *r = sect_ptr(P, K_IO) + (uint64_t)i * IO_REC;
        uint32_t t = rd32(r), is_out = rd32(r + 4);
        if (t >= nt) { rc = fail(P, "IO record %u refers to tensor %u of %u", i, t, nt); break; }
        const sim_tensor *ts = &m->g.tensors[t];
        if (seen[t]) { rc = fail(P, "IO record %u: tensor '%s' listed twice", i, ts->name); break; }
        seen[t] = 1;
        if (is_out > 1) { rc = fail(P, "IO record %u: is_output %u", i, is_out); break; }
        if (is_out == 0 && ci != i) { rc = fail(P, "IO record %u: graph inputs must precede outputs", i); break; }
        if (ts->kind != (is_out ? SIM_T_OUTPUT : SIM_T_INPUT)) {
            rc = fail(P, "IO record %u: tensor '%s' has kind %u, not a graph %s", i, ts->name, ts->kind,
                      is_out ? "output" : "input");
            break;
        }
        sim_io *io = is_out ? &m->outs[co++] : &m->ins[ci++];
        io->tensor = t;
        io->reverse_channels = rd32(r + 8);
        io->n_norm = rd32(r + 12);
        io->layout = rd32(r + 144);
        if (io->reverse_channels > 1 || (is_out && io->reverse_channels))
            { rc = fail(P, "IO record %u ('%s'): invalid reverse_channels %u", i, ts->name, io->reverse_channels); break; }
        if (io->n_norm > 16 || (is_out && io->n_norm))
            { rc = fail(P, "IO record %u ('%s'): invalid n_norm %u", i, ts->name, io->n_norm); break; }
        if (io->layout > 1) { rc = fail(P, "IO record %u ('%s'): unknown layout %u", i, ts->name, io->layout); break; }
        if (io->reverse_channels && ts->n_dims < 2)
            { rc = fail(P, "IO record %u ('%s'): channel reversal needs a channel axis", i, ts->name); break; }
        if (io->n_norm > 1 && (ts->n_dims < 2 || ts->dims[1] != (int64_t)io->n_norm))
            { rc = fail(P, "IO record %u ('%s'): %u mean/std values for a tensor whose channel axis has %lld entries",
                        i, ts->name, io->n_norm, ts->n_dims >= 2 ? (long long)ts->dims[1] : 0LL); break; }
        for (uint32_t c = 0; c < io->n_norm; c++) {
            io->mean[c] = rdf(r + 16 + 4 * c);
            io->std[c] = rdf(r + 80 + 4 * c);
            if (!isfinite(io->mean[c]) || !isfinite(io->std[c]) || !(io->std[c] > 0.0f))
                { rc = fail(P, "IO record %u ('%s'): mean/std %u must be finite with std > 0", i, ts->name, c); break; }
        }
    }
    free(seen);
    /* the API finds inputs and outputs by name (rknn_set_io_mem): names must tell them apart */
    for (uint32_t i = 0; rc == 0 && i < n_in + n_out; i++)
        for (uint32_t j = 0; rc == 0 && j < i; j++) {
            const sim_io *a = i < n_in ? &m->ins[i] : &m->outs[i - n_in];
            const sim_io *b = j < n_in ? &m->ins[j] : &m->outs[j - n_in];
            if (strcmp(m->g.tensors[a->tensor].name, m->g.tensors[b->tensor].name) == 0)
                rc = fail(P, "graph inputs/outputs share the name '%s'", m->g.tensors[a->tensor].name);
        }
    return rc;
}

static int prepare_ops(parser *P)
{
    sim_model *m = P->m;
    for (uint32_t k = 0; k < m->g.n_ops; k++) {
        sim_op *op = &m->g.ops[k];
        char kerr[SIM_ERR_LEN] = {0};
        if (m->defs[k]->prepare) {
            int rc = m->defs[k]->prepare(&m->g, op, kerr, sizeof(kerr));
            if (rc != 0)
                return fail(P, "operator %u '%s' (%s): %s", k, op->name, m->defs[k]->onnx_name ? m->defs[k]->onnx_name : "?",
                            kerr[0] ? kerr : "rejected by the kernel");
        }
        m->n_prepared = k + 1;
    }
    return 0;
}

static void model_free(sim_model *m)
{
    if (m == NULL)
        return;
    for (uint32_t k = 0; k < m->n_prepared; k++)
        if (m->defs[k] && m->defs[k]->release)
            m->defs[k]->release(&m->g.ops[k]);
    sim_pool_free(&m->pool);
    free(m);
}

sim_model *sim_model_load(const void *data, uint64_t size, char *err, size_t err_len)
{
    sim_model *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    m->refs = 1;
    parser P;
    memset(&P, 0, sizeof(P));
    P.b = data;
    P.n = size;
    P.err = err;
    P.err_len = err_len;
    P.m = m;
    if (data == NULL) {
        fail(&P, "model pointer is NULL");
        model_free(m);
        return NULL;
    }
    int rc = check_header(&P);
    if (!rc) rc = parse_meta(&P);
    if (!rc) rc = parse_tensors(&P);
    if (!rc) rc = parse_attrs(&P);
    if (!rc) rc = parse_ops(&P);
    if (!rc) rc = parse_io(&P);
    for (uint32_t t = 0; !rc && t < m->g.n_tensors; t++)
        if (m->g.tensors[t].kind == SIM_T_CONST)
            rc = build_fdata(&P, &m->g.tensors[t]);
    if (!rc) rc = prepare_ops(&P);
    if (!rc) rc = sim_plan_memory(m, err, err_len);
    if (rc) {
        model_free(m);
        return NULL;
    }
    m->platform = sim_platform_find(m->target);
    sim_cost_model(m);
    return m;
}

void sim_model_ref(sim_model *m)
{
    __atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
}

void sim_model_unref(sim_model *m)
{
    if (m && __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0)
        model_free(m);
}
