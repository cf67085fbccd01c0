/*
 * librknnrt_double.so: a test double of Rockchip's librknnrt, for testing rknnlink's vendor path (upload of
 * a vendor .rknn, routing to the vendor backend, per-layer dumps, storage errors) without a board.
 *
 * It implements the ABI functions the daemon's worker calls (rknn_init, rknn_query, rknn_inputs_set, rknn_run,
 * rknn_outputs_get/release, rknn_destroy, rknn_set_core_mask, rknn_dup_context) with the vendor's structs
 * and error codes (runtime_c/include/rknn_api.h). It accepts only vendor containers: magic "RKNN", a u64
 * version, a u64 payload length, the payload, a u64 JSON length and the JSON model description
 * (rknn-c-abi.md section 6). The payload (the vendor's compiled NPU graph) is not interpreted; inputs and
 * outputs come from the JSON's norm_tensor list (the first input_num entries are the inputs).
 *
 * Arithmetic (documented so tests can check it): output j, element k = 0.5 * sum over inputs i of
 * x_i[k mod n_i] + 0.25 * j, with inputs in the model's NCHW order (NHWC inputs are transposed first).
 *
 * Dumps follow the vendor runtime: RKNN_LOG_LEVEL >= 5, read at rknn_init, makes every rknn_run write one
 * .npy per tensor into RKNN_DUMP_DIR (default /userdata/dumps), named
 * NNN_<Op>_<tensor name>_shape_<d0>_<d1>..._<dtype>.npy, logging "dump npy tensor to: PATH" and, when the
 * file cannot be written, "failed open dump path: PATH" (the run itself still succeeds, as on a board).
 * All state lives in the context; the handle is the context's address.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "rknn_api.h"

#define DOUBLE_MAGIC 0x52444231u /* "RDB1" */
#define MAX_TENSORS 16
#define DOUBLE_VERSION "2.5.0 (rknnlink-vendor-double)"

/* Embedded like the vendor's version string, so `strings | grep "librknnrt version"` finds it. */
RKNN_EXPORT const char rknnlink_double_version_string[] = "librknnrt version: " DOUBLE_VERSION;

typedef struct {
    char name[RKNN_MAX_NAME_LEN];
    uint32_t n_dims;
    uint32_t dims[RKNN_MAX_DIMS];  /* the model's order (NCHW for 4-D) */
    rknn_tensor_type type;
    uint32_t n_elems;
    float *data;                   /* NCHW float32 values of the last set/run */
} dbl_tensor;

typedef struct {
    uint32_t magic;
    uint32_t n_in, n_out;
    dbl_tensor in[MAX_TENSORS], out[MAX_TENSORS];
    int inputs_ready;
    int log_level;
    char dump_dir[1024];
    uint64_t payload_size;
    int64_t last_run_us;
    uint32_t core_mask;
    char perf_text[4096];
    void *released[MAX_TENSORS];   /* runtime-allocated output buffers until outputs_release */
} dbl_ctx;

static void dbl_log(const dbl_ctx *ctx, int level, const char *fmt, ...) {
    int threshold = ctx ? ctx->log_level : 0;
    if (level > threshold) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char prefix = level == 0 ? 'E' : level == 1 ? 'W' : level == 2 ? 'I' : 'D';
    fprintf(stderr, "%c RKNN: [%02d:%02d:%02d.%03ld] ", prefix, tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000L);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static dbl_ctx *get_ctx(rknn_context handle) {
    dbl_ctx *ctx = (dbl_ctx *)(uintptr_t)handle;
    if (!ctx || ctx->magic != DOUBLE_MAGIC) return NULL;
    return ctx;
}

static uint64_t read_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static size_t type_size(rknn_tensor_type t) {
    switch (t) {
    case RKNN_TENSOR_FLOAT32: case RKNN_TENSOR_INT32: case RKNN_TENSOR_UINT32: return 4;
    case RKNN_TENSOR_FLOAT16: case RKNN_TENSOR_INT16: case RKNN_TENSOR_UINT16: return 2;
    case RKNN_TENSOR_INT64: return 8;
    default: return 1;
    }
}

/* norm_tensor dtype.vx_type: RKNN-Toolkit2 2.5.0 writes "int8" for quantized models and "" for float16 ones. */
static rknn_tensor_type type_from_name(const char *s) {
    if (!strcmp(s, "float32")) return RKNN_TENSOR_FLOAT32;
    if (!strcmp(s, "float16") || !*s) return RKNN_TENSOR_FLOAT16;
    if (!strcmp(s, "uint8")) return RKNN_TENSOR_UINT8;
    if (!strcmp(s, "int16")) return RKNN_TENSOR_INT16;
    if (!strcmp(s, "int32")) return RKNN_TENSOR_INT32;
    return RKNN_TENSOR_INT8;
}

static const char *dump_type_name(rknn_tensor_type t) {
    return t == RKNN_TENSOR_UINT8 ? "uint8" : t == RKNN_TENSOR_INT8 ? "int8" : "float";
}

/* IEEE half <-> float, enough for test data (no rounding subtleties needed beyond round-to-nearest). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (exp == 0) v = ldexpf((float)man, -24);
    else if (exp == 31) v = man ? NAN : INFINITY;
    else v = ldexpf((float)(man | 0x400), (int)exp - 25);
    return sign ? -v : v;
}

static uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    float a = fabsf(f);
    if (isnan(f)) return (uint16_t)(sign | 0x7e00);
    if (a >= 65520.0f) return (uint16_t)(sign | 0x7c00);
    if (a < 6.103515625e-05f) return (uint16_t)(sign | (uint16_t)lrintf(a * 16777216.0f));
    int e;
    float m = frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    uint32_t man = (uint32_t)lrintf((m * 2.0f - 1.0f) * 1024.0f);
    int exp = e - 1 + 15;
    if (man == 1024) { man = 0; exp++; }
    return (uint16_t)(sign | (uint16_t)(exp << 10) | (uint16_t)man);
}

static void free_ctx(dbl_ctx *ctx) {
    for (uint32_t i = 0; i < MAX_TENSORS; i++) {
        free(ctx->in[i].data);
        free(ctx->out[i].data);
        free(ctx->released[i]);
    }
    ctx->magic = 0;
    free(ctx);
}

static int read_tensor(const json_doc *doc, int node, dbl_tensor *t) {
    if (json_copy_string(doc, json_get(doc, node, "url"), t->name, sizeof(t->name)) != 0) return -1;
    int size = json_get(doc, node, "size");
    int n = json_length(doc, size);
    if (n < 1 || n > RKNN_MAX_DIMS) return -1;
    t->n_dims = (uint32_t)n;
    uint64_t elems = 1;
    for (int d = 0; d < n; d++) {
        int dim = json_at(doc, size, d);
        if (dim < 0 || doc->nodes[dim].type != JSON_NUMBER) return -1;
        double v = doc->nodes[dim].number;
        if (v < 1 || v > (1 << 24)) return -1;
        t->dims[d] = (uint32_t)v;
        elems *= t->dims[d];
        if (elems > (1u << 28)) return -1;
    }
    t->n_elems = (uint32_t)elems;
    char type[32] = "";
    int dtype = json_get(doc, node, "dtype");
    json_copy_string(doc, json_get(doc, dtype, "vx_type"), type, sizeof(type));
    t->type = type_from_name(type);
    t->data = calloc(t->n_elems, sizeof(float));
    return t->data ? 0 : -1;
}

/* Parse the container and its JSON; 0 or an RKNN error code. */
static int load_model(dbl_ctx *ctx, const uint8_t *m, uint64_t size) {
    if (size >= 8 && !memcmp(m, "RKLNKSIM", 8)) {
        dbl_log(ctx, 0, "this is an rknnlink simulator model, not a model from RKNN-Toolkit2");
        return RKNN_ERR_MODEL_INVALID;
    }
    if (size < 24 || memcmp(m, "RKNN", 4) != 0) {
        dbl_log(ctx, 0, "Invalid RKNN model: bad magic");
        return RKNN_ERR_MODEL_INVALID;
    }
    uint64_t version = read_u64(m + 8), payload = read_u64(m + 16);
    uint64_t header = (version & 0xff) <= 1 ? 24 : 64;
    if ((version & 0xff) > 6 || header > size || payload > size - header || size - header - payload < 8) {
        dbl_log(ctx, 0, "Invalid RKNN model version %llu or truncated file", (unsigned long long)version);
        return RKNN_ERR_MODEL_INVALID;
    }
    const uint8_t *j = m + header + payload;
    uint64_t json_len = read_u64(j);
    if (json_len > size - header - payload - 8) {
        dbl_log(ctx, 0, "Invalid RKNN model: model description runs past the end of the file");
        return RKNN_ERR_MODEL_INVALID;
    }
    json_doc doc;
    if (json_parse(&doc, (const char *)j + 8, (size_t)json_len) != 0) {
        dbl_log(ctx, 0, "Invalid RKNN model: unreadable model description");
        return RKNN_ERR_MODEL_INVALID;
    }
    int rc = RKNN_ERR_MODEL_INVALID;
    int in_num = json_get(&doc, 0, "input_num"), out_num = json_get(&doc, 0, "output_num");
    int tensors = json_get(&doc, 0, "norm_tensor");
    if (in_num >= 0 && out_num >= 0) {
        double ni = doc.nodes[in_num].number, no = doc.nodes[out_num].number;
        if (ni >= 1 && no >= 1 && ni <= MAX_TENSORS && no <= MAX_TENSORS && json_length(&doc, tensors) >= ni + no) {
            ctx->n_in = (uint32_t)ni;
            ctx->n_out = (uint32_t)no;
            rc = RKNN_SUCC;
            for (uint32_t i = 0; i < ctx->n_in + ctx->n_out && rc == RKNN_SUCC; i++) {
                dbl_tensor *t = i < ctx->n_in ? &ctx->in[i] : &ctx->out[i - ctx->n_in];
                if (read_tensor(&doc, json_at(&doc, tensors, (int)i), t) != 0) rc = RKNN_ERR_MODEL_INVALID;
            }
        }
    }
    json_free(&doc);
    if (rc != RKNN_SUCC) dbl_log(ctx, 0, "Invalid RKNN model: inputs/outputs missing from the model description");
    ctx->payload_size = payload;
    return rc;
}

RKNN_EXPORT int rknn_init(rknn_context *context, void *model, uint32_t size, uint32_t flag, rknn_init_extend *extend) {
    (void)flag;
    (void)extend;
    if (!context || !model) return RKNN_ERR_PARAM_INVALID;
    dbl_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) return RKNN_ERR_MALLOC_FAIL;
    ctx->magic = DOUBLE_MAGIC;
    const char *level = getenv("RKNN_LOG_LEVEL");
    ctx->log_level = level ? atoi(level) : 0;
    const char *dir = getenv("RKNN_DUMP_DIR");
    snprintf(ctx->dump_dir, sizeof(ctx->dump_dir), "%s", dir && *dir ? dir : "/userdata/dumps");
    uint8_t *bytes = model;
    uint64_t length = size;
    if (size == 0) { /* a path */
        FILE *f = fopen((const char *)model, "rb");
        if (!f) {
            dbl_log(ctx, 0, "cannot open model file %s: %s", (const char *)model, strerror(errno));
            free_ctx(ctx);
            return RKNN_ERR_MODEL_INVALID;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        bytes = n > 0 ? malloc((size_t)n) : NULL;
        length = bytes && fread(bytes, 1, (size_t)n, f) == (size_t)n ? (uint64_t)n : 0;
        fclose(f);
    }
    int rc = length ? load_model(ctx, bytes, length) : RKNN_ERR_MODEL_INVALID;
    if (bytes != model) free(bytes);
    if (rc != RKNN_SUCC) {
        free_ctx(ctx);
        return rc;
    }
    dbl_log(ctx, 2, "RKNN Runtime Information, librknnrt version: %s", DOUBLE_VERSION);
    *context = (rknn_context)(uintptr_t)ctx;
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_dup_context(rknn_context *context_in, rknn_context *context_out) {
    dbl_ctx *src = context_in ? get_ctx(*context_in) : NULL;
    if (!src || !context_out) return RKNN_ERR_CTX_INVALID;
    dbl_ctx *ctx = malloc(sizeof(*ctx));
    if (!ctx) return RKNN_ERR_MALLOC_FAIL;
    memcpy(ctx, src, sizeof(*ctx));
    memset(ctx->released, 0, sizeof(ctx->released));
    for (uint32_t i = 0; i < MAX_TENSORS; i++) {
        dbl_tensor *ts[2] = {&ctx->in[i], &ctx->out[i]};
        for (int k = 0; k < 2; k++) {
            if (!ts[k]->data) continue;
            float *copy = calloc(ts[k]->n_elems, sizeof(float));
            ts[k]->data = copy;
            if (!copy) { free_ctx(ctx); return RKNN_ERR_MALLOC_FAIL; }
        }
    }
    *context_out = (rknn_context)(uintptr_t)ctx;
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_destroy(rknn_context context) {
    dbl_ctx *ctx = get_ctx(context);
    if (!ctx) return RKNN_ERR_CTX_INVALID;
    free_ctx(ctx);
    return RKNN_SUCC;
}

static void fill_attr(const dbl_tensor *t, uint32_t index, int is_input, rknn_tensor_attr *a) {
    memset(a, 0, sizeof(*a));
    a->index = index;
    a->n_dims = t->n_dims;
    int nhwc = is_input && t->n_dims == 4;
    for (uint32_t d = 0; d < t->n_dims; d++) a->dims[d] = t->dims[d];
    if (nhwc) { /* the runtime presents 4-D inputs as NHWC */
        a->dims[1] = t->dims[2];
        a->dims[2] = t->dims[3];
        a->dims[3] = t->dims[1];
    }
    snprintf(a->name, sizeof(a->name), "%s", t->name);
    a->n_elems = t->n_elems;
    a->size = (uint32_t)(t->n_elems * type_size(t->type));
    a->fmt = nhwc ? RKNN_TENSOR_NHWC : (t->n_dims == 4 ? RKNN_TENSOR_NCHW : RKNN_TENSOR_UNDEFINED);
    a->type = t->type;
    int quantized = t->type == RKNN_TENSOR_INT8 || t->type == RKNN_TENSOR_UINT8;
    a->qnt_type = quantized ? RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC : RKNN_TENSOR_QNT_NONE;
    a->scale = 1.0f;
    a->size_with_stride = a->size;
}

RKNN_EXPORT int rknn_query(rknn_context context, rknn_query_cmd cmd, void *info, uint32_t size) {
    dbl_ctx *ctx = get_ctx(context);
    if (!ctx) return RKNN_ERR_CTX_INVALID;
    if (!info) return RKNN_ERR_PARAM_INVALID;
    switch (cmd) {
    case RKNN_QUERY_IN_OUT_NUM: {
        if (size < sizeof(rknn_input_output_num)) return RKNN_ERR_PARAM_INVALID;
        rknn_input_output_num *n = info;
        n->n_input = ctx->n_in;
        n->n_output = ctx->n_out;
        return RKNN_SUCC;
    }
    case RKNN_QUERY_INPUT_ATTR: case RKNN_QUERY_OUTPUT_ATTR:
    case RKNN_QUERY_NATIVE_INPUT_ATTR: case RKNN_QUERY_NATIVE_OUTPUT_ATTR: {
        if (size < sizeof(rknn_tensor_attr)) return RKNN_ERR_PARAM_INVALID;
        rknn_tensor_attr *a = info;
        int is_input = cmd == RKNN_QUERY_INPUT_ATTR || cmd == RKNN_QUERY_NATIVE_INPUT_ATTR;
        uint32_t index = a->index, count = is_input ? ctx->n_in : ctx->n_out;
        if (index >= count) return RKNN_ERR_PARAM_INVALID;
        fill_attr(is_input ? &ctx->in[index] : &ctx->out[index], index, is_input, a);
        return RKNN_SUCC;
    }
    case RKNN_QUERY_SDK_VERSION: {
        if (size < sizeof(rknn_sdk_version)) return RKNN_ERR_PARAM_INVALID;
        rknn_sdk_version *v = info;
        snprintf(v->api_version, sizeof(v->api_version), "%s", DOUBLE_VERSION);
        snprintf(v->drv_version, sizeof(v->drv_version), "%s", "0.9.8");
        return RKNN_SUCC;
    }
    case RKNN_QUERY_PERF_RUN: {
        if (size < sizeof(rknn_perf_run)) return RKNN_ERR_PARAM_INVALID;
        ((rknn_perf_run *)info)->run_duration = ctx->last_run_us;
        return RKNN_SUCC;
    }
    case RKNN_QUERY_PERF_DETAIL: {
        if (size < sizeof(rknn_perf_detail)) return RKNN_ERR_PARAM_INVALID;
        rknn_perf_detail *p = info;
        p->perf_data = ctx->perf_text;
        p->data_len = strlen(ctx->perf_text);
        return RKNN_SUCC;
    }
    case RKNN_QUERY_MEM_SIZE: {
        if (size < sizeof(rknn_mem_size)) return RKNN_ERR_PARAM_INVALID;
        rknn_mem_size *m = info;
        memset(m, 0, sizeof(*m));
        uint64_t internal = 0, io = 0;
        for (uint32_t i = 0; i < ctx->n_out; i++) internal += ctx->out[i].n_elems * type_size(ctx->out[i].type);
        for (uint32_t i = 0; i < ctx->n_in; i++) io += ctx->in[i].n_elems * type_size(ctx->in[i].type);
        m->total_weight_size = (uint32_t)ctx->payload_size;
        m->total_internal_size = (uint32_t)internal;
        m->total_dma_allocated_size = ctx->payload_size + internal + io + internal;
        return RKNN_SUCC;
    }
    case RKNN_QUERY_CUSTOM_STRING: {
        if (size < sizeof(rknn_custom_string)) return RKNN_ERR_PARAM_INVALID;
        memset(info, 0, sizeof(rknn_custom_string));
        return RKNN_SUCC;
    }
    default:
        return RKNN_ERR_PARAM_INVALID;
    }
}

static int convert_input(const rknn_input *src, dbl_tensor *t) {
    rknn_tensor_type type = src->pass_through ? t->type : src->type;
    size_t esize = type_size(type);
    if (!src->buf || (uint64_t)src->size < (uint64_t)t->n_elems * esize) return RKNN_ERR_INPUT_INVALID;
    int nhwc = t->n_dims == 4 && src->fmt == RKNN_TENSOR_NHWC;
    uint32_t c = t->n_dims == 4 ? t->dims[1] : 1, hw = t->n_dims == 4 ? t->dims[2] * t->dims[3] : 1;
    for (uint32_t k = 0; k < t->n_elems; k++) {
        const uint8_t *p = (const uint8_t *)src->buf + (size_t)k * esize;
        float v;
        switch (type) {
        case RKNN_TENSOR_FLOAT32: memcpy(&v, p, 4); break;
        case RKNN_TENSOR_FLOAT16: { uint16_t h; memcpy(&h, p, 2); v = half_to_float(h); break; }
        case RKNN_TENSOR_UINT8: v = (float)*p; break;
        case RKNN_TENSOR_INT8: v = (float)(int8_t)*p; break;
        default: return RKNN_ERR_INPUT_INVALID;
        }
        uint32_t dst = k;
        if (nhwc) { /* k indexes N,H,W,C: move to N,C,H,W */
            uint32_t n = k / (hw * c), rest = k % (hw * c), pix = rest / c, ch = rest % c;
            dst = n * c * hw + ch * hw + pix;
        }
        t->data[dst] = v;
    }
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_inputs_set(rknn_context context, uint32_t n_inputs, rknn_input inputs[]) {
    dbl_ctx *ctx = get_ctx(context);
    if (!ctx) return RKNN_ERR_CTX_INVALID;
    if (!inputs || n_inputs != ctx->n_in) {
        dbl_log(ctx, 0, "rknn_inputs_set: the model has %u inputs, got %u", ctx->n_in, n_inputs);
        return RKNN_ERR_PARAM_INVALID;
    }
    for (uint32_t i = 0; i < n_inputs; i++) {
        if (inputs[i].index >= ctx->n_in) return RKNN_ERR_PARAM_INVALID;
        int rc = convert_input(&inputs[i], &ctx->in[inputs[i].index]);
        if (rc != RKNN_SUCC) {
            dbl_log(ctx, 0, "rknn_inputs_set: input %u has a bad buffer, size or type", inputs[i].index);
            return rc;
        }
    }
    ctx->inputs_ready = 1;
    return RKNN_SUCC;
}

/* One .npy file (format 1.0) holding `t`'s float32 values; 0 on success. */
static int write_npy(dbl_ctx *ctx, unsigned index, const char *op, const dbl_tensor *t) {
    char name[RKNN_MAX_NAME_LEN], shape[256] = "", dims[256] = "", path[2048];
    size_t n = 0;
    for (const char *s = t->name; *s && n + 1 < sizeof(name); s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
        name[n++] = ok ? c : '_';
    }
    name[n] = '\0';
    for (uint32_t d = 0; d < t->n_dims; d++) {
        size_t used = strlen(shape), dused = strlen(dims);
        snprintf(shape + used, sizeof(shape) - used, "%s%u", d ? "_" : "", t->dims[d]);
        snprintf(dims + dused, sizeof(dims) - dused, "%u,%s", t->dims[d], t->n_dims == 1 ? "" : " ");
    }
    snprintf(path, sizeof(path), "%s/%03u_%s_%s_shape_%s_%s.npy", ctx->dump_dir, index, op, name, shape,
             dump_type_name(RKNN_TENSOR_FLOAT32));
    dbl_log(ctx, 3, "dump npy tensor to: %s", path);
    FILE *f = fopen(path, "wb");
    if (!f) {
        dbl_log(ctx, 0, "failed open dump path: %s", path);
        return -1;
    }
    char header[512];
    int len = snprintf(header, sizeof(header), "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", dims);
    if (len < 0 || (size_t)len + 16 >= sizeof(header)) { fclose(f); return -1; }
    size_t total = 10 + (size_t)len + 1;
    size_t pad = (64 - total % 64) % 64;
    memset(header + len, ' ', pad);
    header[len + pad] = '\n';
    uint16_t hlen = (uint16_t)(len + pad + 1);
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};
    int ok = fwrite(pre, 1, sizeof(pre), f) == sizeof(pre) && fwrite(header, 1, hlen, f) == hlen &&
             fwrite(t->data, sizeof(float), t->n_elems, f) == t->n_elems;
    ok = (fclose(f) == 0) && ok;
    if (!ok) dbl_log(ctx, 0, "failed write dump path: %s (%s)", path, strerror(errno));
    return ok ? 0 : -1;
}

static void dump_tensors(dbl_ctx *ctx) {
    unsigned index = 0;
    for (uint32_t i = 0; i < ctx->n_in; i++) write_npy(ctx, index++, "InputOperator", &ctx->in[i]);
    for (uint32_t j = 0; j < ctx->n_out; j++) write_npy(ctx, index++, "OutputOperator", &ctx->out[j]);
}

RKNN_EXPORT int rknn_run(rknn_context context, rknn_run_extend *extend) {
    (void)extend;
    dbl_ctx *ctx = get_ctx(context);
    if (!ctx) return RKNN_ERR_CTX_INVALID;
    if (!ctx->inputs_ready) {
        dbl_log(ctx, 0, "rknn_run: inputs are not set");
        return RKNN_ERR_INPUT_INVALID;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint32_t j = 0; j < ctx->n_out; j++) {
        dbl_tensor *o = &ctx->out[j];
        for (uint32_t k = 0; k < o->n_elems; k++) {
            float sum = 0.0f;
            for (uint32_t i = 0; i < ctx->n_in; i++) sum += ctx->in[i].data[k % ctx->in[i].n_elems];
            o->data[k] = 0.5f * sum + 0.25f * (float)j;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ctx->last_run_us = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000;
    snprintf(ctx->perf_text, sizeof(ctx->perf_text),
             "ID   OpType           DataType Target InputShape  OutputShape  Time(us)\n"
             "1    NNBG             INT8     NPU    -           -            %lld\n"
             "Total Operator Elapse Time(us): %lld\n", (long long)ctx->last_run_us, (long long)ctx->last_run_us);
    if (ctx->log_level >= 5) dump_tensors(ctx);
    return RKNN_SUCC;
}

static void store_output(const dbl_tensor *t, int want_float, void *buf) {
    for (uint32_t k = 0; k < t->n_elems; k++) {
        float v = t->data[k];
        if (want_float || t->type == RKNN_TENSOR_FLOAT32) { memcpy((float *)buf + k, &v, 4); continue; }
        switch (t->type) {
        case RKNN_TENSOR_FLOAT16: { uint16_t h = float_to_half(v); memcpy((uint16_t *)buf + k, &h, 2); break; }
        case RKNN_TENSOR_UINT8: ((uint8_t *)buf)[k] = (uint8_t)fminf(fmaxf(lrintf(v), 0.0f), 255.0f); break;
        default: ((int8_t *)buf)[k] = (int8_t)fminf(fmaxf(lrintf(v), -128.0f), 127.0f); break;
        }
    }
}

RKNN_EXPORT int rknn_outputs_get(rknn_context context, uint32_t n_outputs, rknn_output outputs[],
                                 rknn_output_extend *extend) {
    (void)extend;
    dbl_ctx *ctx = get_ctx(context);
    if (!ctx) return RKNN_ERR_CTX_INVALID;
    if (!outputs || n_outputs > ctx->n_out) return RKNN_ERR_PARAM_INVALID;
    for (uint32_t j = 0; j < n_outputs; j++) {
        rknn_output *o = &outputs[j];
        if (o->index >= ctx->n_out) return RKNN_ERR_PARAM_INVALID;
        const dbl_tensor *t = &ctx->out[o->index];
        size_t need = (size_t)t->n_elems * (o->want_float ? 4 : type_size(t->type));
        if (o->is_prealloc) {
            if (!o->buf || o->size < need) {
                dbl_log(ctx, 0, "rknn_outputs_get: output %u buffer holds %u bytes, needs %zu", o->index, o->size,
                        need);
                return RKNN_ERR_OUTPUT_INVALID;
            }
        } else {
            free(ctx->released[j]);
            ctx->released[j] = malloc(need);
            if (!ctx->released[j]) return RKNN_ERR_MALLOC_FAIL;
            o->buf = ctx->released[j];
            o->size = (uint32_t)need;
        }
        store_output(t, o->want_float, o->buf);
    }
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_outputs_release(rknn_context context, uint32_t n_outputs, rknn_output outputs[]) {
    dbl_ctx *ctx = get_ctx(context);
    if (!ctx) return RKNN_ERR_CTX_INVALID;
    for (uint32_t j = 0; j < n_outputs && j < MAX_TENSORS; j++) {
        if (outputs && !outputs[j].is_prealloc && outputs[j].buf == ctx->released[j]) outputs[j].buf = NULL;
        free(ctx->released[j]);
        ctx->released[j] = NULL;
    }
    return RKNN_SUCC;
}

RKNN_EXPORT int rknn_set_core_mask(rknn_context context, rknn_core_mask core_mask) {
    dbl_ctx *ctx = get_ctx(context);
    if (!ctx) return RKNN_ERR_CTX_INVALID;
    switch ((int)core_mask) {
    case 0: case 1: case 2: case 4: case 3: case 7: case 0xffff:
        ctx->core_mask = (uint32_t)core_mask;
        return RKNN_SUCC;
    default:
        dbl_log(ctx, 0, "rknn_set_core_mask: invalid core mask %d", (int)core_mask);
        return RKNN_ERR_PARAM_INVALID;
    }
}
