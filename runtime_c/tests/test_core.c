/* C tests of the simulator core through the public ABI (rknn_api.h + rknnlink_sim.h). */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rknn_api.h"
#include "rknnlink_sim.h"
#include "test_models.h"

static int g_fail, g_checks;
#define CHECK(cond, ...) do { g_checks++; if (!(cond)) { g_fail++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fprintf(stderr, "\n"); } } while (0)
#define CHECK_RC(expr, want) do { int rc_ = (expr); CHECK(rc_ == (want), "%s = %d, want %d", #expr, rc_, (int)(want)); } while (0)

static float h2f(uint16_t h)
{
    uint32_t s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0 ? ldexpf((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexpf((float)(m | 1024), (int)e - 25);
    return s ? -v : v;
}

static uint16_t f2h(float f) /* round to nearest even, normal range only is enough for these tests */
{
    uint16_t best = 0;
    float bd = INFINITY;
    for (uint32_t h = 0; h < 0x7C00; h++) {
        float v = h2f((uint16_t)h);
        float d = fabsf(v - fabsf(f));
        if (d < bd || (d == bd && (h & 1) == 0)) { bd = d; best = (uint16_t)h; }
    }
    return (uint16_t)(best | (f < 0 ? 0x8000 : 0));
}

static int8_t q8(float x, float s, int zp)
{
    float v = x / s;
    float r = v >= 0 ? floorf(v + 0.5f) : ceilf(v - 0.5f);
    r += (float)zp;
    return (int8_t)(r > 127 ? 127 : r < -128 ? -128 : r);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    if (d) closedir(d);
    return n;
}

static void test_model_a_basic(void)
{
    size_t n;
    uint8_t *buf = test_model_a("rk3588", &n, 1);
    rknn_context ctx = 0;
    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), 0);
    CHECK(ctx != 0, "context handle is 0");

    rknn_input_output_num io;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &io, sizeof(io)), 0);
    CHECK(io.n_input == 1 && io.n_output == 1, "io num %u %u", io.n_input, io.n_output);
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &io, 4), RKNN_ERR_PARAM_INVALID);
    CHECK_RC(rknn_query(ctx, (rknn_query_cmd)99, &io, sizeof(io)), RKNN_ERR_PARAM_INVALID);
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_INPUT_DYNAMIC_RANGE, &io, sizeof(io)), RKNN_ERR_PARAM_INVALID);

    rknn_tensor_attr a;
    memset(&a, 0, sizeof(a));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_INPUT_ATTR, &a, sizeof(a)), 0);
    CHECK(a.fmt == RKNN_TENSOR_NHWC && a.n_dims == 4 && a.dims[0] == 1 && a.dims[1] == 2 && a.dims[2] == 2 &&
          a.dims[3] == 3, "input attr fmt %d dims %u,%u,%u,%u", a.fmt, a.dims[0], a.dims[1], a.dims[2], a.dims[3]);
    CHECK(a.type == RKNN_TENSOR_FLOAT32 && a.n_elems == 12 && a.size == 48 && a.size_with_stride == 48 &&
          a.w_stride == 2 && strcmp(a.name, "in") == 0, "input attr fields");
    a.index = 1;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_INPUT_ATTR, &a, sizeof(a)), RKNN_ERR_PARAM_INVALID);
    memset(&a, 0, sizeof(a));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_OUTPUT_ATTR, &a, sizeof(a)), 0);
    CHECK(a.fmt == RKNN_TENSOR_NCHW && a.dims[1] == 3 && strcmp(a.name, "out") == 0, "output attr");
    memset(&a, 0, sizeof(a));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_NATIVE_INPUT_ATTR, &a, sizeof(a)), 0);
    CHECK(a.fmt == RKNN_TENSOR_NHWC && a.dims[3] == 3, "native input attr follows the IO layout (NHWC)");
    memset(&a, 0, sizeof(a));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_NATIVE_NHWC_OUTPUT_ATTR, &a, sizeof(a)), 0);
    CHECK(a.fmt == RKNN_TENSOR_NHWC && a.dims[3] == 3, "native nhwc output attr");
    memset(&a, 0, sizeof(a));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_CURRENT_OUTPUT_ATTR, &a, sizeof(a)), 0);
    CHECK(a.fmt == RKNN_TENSOR_NCHW, "current output attr");

    rknn_sdk_version v;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_SDK_VERSION, &v, sizeof(v)), 0);
    CHECK(strncmp(v.api_version, "2.3.2 (rknnlink-sim 0.1.0@", 26) == 0, "api_version '%s'", v.api_version);
    CHECK(strcmp(v.drv_version, "rknnlink-sim 0.1.0") == 0, "drv_version '%s'", v.drv_version);
    rknn_mem_size ms;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_MEM_SIZE, &ms, sizeof(ms)), 0);
    CHECK(ms.total_weight_size == 48, "weight size %u", ms.total_weight_size);
    CHECK(ms.total_internal_size == 64, "internal size %u (one 48-byte fp32 tensor, 64-aligned)",
          ms.total_internal_size);
    CHECK(ms.total_dma_allocated_size == 48 + 64 + 96, "dma size %llu", (unsigned long long)ms.total_dma_allocated_size);
    rknn_custom_string cs;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_CUSTOM_STRING, &cs, sizeof(cs)), 0);
    CHECK(strcmp(cs.string, "hello custom") == 0, "custom string '%s'", cs.string);
    rknn_perf_detail pd;
    CHECK(rknn_query(ctx, RKNN_QUERY_PERF_DETAIL, &pd, sizeof(pd)) != 0, "PERF_DETAIL without the flag must fail");

    /* run before inputs are set */
    CHECK_RC(rknn_run(ctx, NULL), RKNN_ERR_INPUT_INVALID);
    rknn_output o0;
    memset(&o0, 0, sizeof(o0));
    o0.want_float = 1;
    CHECK(rknn_outputs_get(ctx, 1, &o0, NULL) != 0, "outputs_get before a run must fail");

    float x[12], want[12];
    for (int i = 0; i < 12; i++)
        x[i] = (float)(i * 7 % 50);
    test_a_expect(x, want);
    rknn_input in;
    memset(&in, 0, sizeof(in));
    in.index = 0;
    in.buf = x;
    in.size = sizeof(x);
    in.type = RKNN_TENSOR_FLOAT32;
    in.fmt = RKNN_TENSOR_NHWC;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), 0);
    rknn_run_extend re;
    memset(&re, 0, sizeof(re));
    CHECK_RC(rknn_run(ctx, &re), 0);
    CHECK(re.frame_id == 1, "frame id %llu", (unsigned long long)re.frame_id);
    rknn_output o;
    memset(&o, 0, sizeof(o));
    o.want_float = 1;
    CHECK_RC(rknn_outputs_get(ctx, 1, &o, NULL), 0);
    CHECK(o.buf != NULL && o.size == 48, "output buffer %p size %u", o.buf, o.size);
    for (int i = 0; o.buf && i < 12; i++)
        CHECK(fabsf(((float *)o.buf)[i] - want[i]) < 1e-6f, "out[%d] = %g want %g", i, ((float *)o.buf)[i], want[i]);
    CHECK_RC(rknn_outputs_release(ctx, 1, &o), 0);
    CHECK(o.buf == NULL, "release clears buf");

    /* NCHW uint8 input gives the same result as the same values in NHWC float */
    uint8_t xu[12];
    for (int c = 0; c < 3; c++)
        for (int s = 0; s < 4; s++)
            xu[c * 4 + s] = (uint8_t)x[s * 3 + c];
    in.buf = xu;
    in.size = sizeof(xu);
    in.type = RKNN_TENSOR_UINT8;
    in.fmt = RKNN_TENSOR_NCHW;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), 0);
    CHECK_RC(rknn_run(ctx, NULL), 0);
    float pre[12];
    rknn_output op;
    memset(&op, 0, sizeof(op));
    op.want_float = 1;
    op.is_prealloc = 1;
    op.buf = pre;
    op.size = sizeof(pre);
    CHECK_RC(rknn_outputs_get(ctx, 1, &op, NULL), 0);
    for (int i = 0; i < 12; i++)
        CHECK(fabsf(pre[i] - want[i]) < 1e-6f, "uint8 NCHW out[%d] = %g want %g", i, pre[i], want[i]);
    op.size = 8;
    CHECK_RC(rknn_outputs_get(ctx, 1, &op, NULL), RKNN_ERR_PARAM_INVALID);
    op.size = sizeof(pre);
    op.index = 3;
    CHECK_RC(rknn_outputs_get(ctx, 1, &op, NULL), RKNN_ERR_PARAM_INVALID);
    op.index = 0;

    /* bad inputs */
    in.size = 5;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), RKNN_ERR_PARAM_INVALID);
    CHECK(strstr(rknnlink_sim_last_error(ctx), "param input size(5) < model input size(12)") != NULL,
          "vendor-style size message: %s", rknnlink_sim_last_error(ctx));
    in.size = sizeof(xu);
    in.type = RKNN_TENSOR_INT64;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), RKNN_ERR_PARAM_INVALID);
    in.type = RKNN_TENSOR_UINT8;
    in.fmt = RKNN_TENSOR_NC1HWC2;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), RKNN_ERR_PARAM_INVALID);
    in.fmt = RKNN_TENSOR_NCHW;
    in.index = 1;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), RKNN_ERR_PARAM_INVALID);
    CHECK_RC(rknn_inputs_set(ctx, 2, &in), RKNN_ERR_PARAM_INVALID);
    CHECK_RC(rknn_inputs_set(ctx, 1, NULL), RKNN_ERR_PARAM_INVALID);
    CHECK(strlen(rknnlink_sim_last_error(ctx)) > 0, "last error is set after a failure");

    /* pass_through: the native layout is NHWC float32, normalisation is not applied */
    float pt[12];
    for (int i = 0; i < 12; i++)
        pt[i] = (float)i - 5.0f;
    in.index = 0;
    in.buf = pt;
    in.size = sizeof(pt);
    in.type = RKNN_TENSOR_FLOAT32;
    in.pass_through = 1;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), 0);
    CHECK_RC(rknn_run(ctx, NULL), 0);
    CHECK_RC(rknn_outputs_get(ctx, 1, &op, NULL), 0);
    for (int c = 0; c < 3; c++)
        for (int s = 0; s < 4; s++) {
            float w = pt[s * 3 + c] + test_a_bias(c * 4 + s);
            w = w > 0 ? w : 0;
            CHECK(fabsf(pre[c * 4 + s] - w) < 1e-6f, "pass_through out[%d] = %g want %g", c * 4 + s, pre[c * 4 + s], w);
        }
    in.size = sizeof(pt) + 4;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), RKNN_ERR_PARAM_INVALID);
    in.size = sizeof(pt);
    in.type = RKNN_TENSOR_FLOAT16;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), RKNN_ERR_PARAM_INVALID);

    /* core mask on rk3588 */
    CHECK_RC(rknn_set_core_mask(ctx, RKNN_NPU_CORE_0_1_2), 0);
    CHECK_RC(rknn_set_core_mask(ctx, (rknn_core_mask)8), RKNN_ERR_FAIL);
    CHECK_RC(rknn_set_batch_core_num(ctx, 3), 0);
    CHECK_RC(rknn_set_batch_core_num(ctx, 4), RKNN_ERR_PARAM_INVALID);
    CHECK_RC(rknn_wait(ctx, NULL), 0);
    CHECK(rknn_set_input_shapes(ctx, 1, &a) != 0, "set_input_shapes on a static model fails");
    CHECK(rknn_set_weight_mem(ctx, NULL) != 0, "set_weight_mem unsupported");

    /* layer info */
    uint32_t nl = 0;
    CHECK_RC(rknnlink_sim_layer_count(ctx, &nl), 0);
    CHECK(nl == 2, "layer count %u", nl);
    rknnlink_layer_info li;
    CHECK_RC(rknnlink_sim_layer_info(ctx, 0, &li, sizeof(li)), 0);
    CHECK(strcmp(li.name, "add0") == 0 && strcmp(li.onnx_type, "Add") == 0 && li.n_dims == 4 && li.dims[1] == 3 &&
          li.est_time_us > 0 && li.measured_time_us > 0, "layer info %s %s est %g meas %g", li.name, li.onnx_type,
          li.est_time_us, li.measured_time_us);
    CHECK_RC(rknnlink_sim_layer_info(ctx, 2, &li, sizeof(li)), RKNN_ERR_PARAM_INVALID);
    CHECK_RC(rknnlink_sim_layer_info(ctx, 0, &li, 100), RKNN_ERR_PARAM_INVALID);
    CHECK(rknnlink_sim_version() == 1, "ext version");

    CHECK_RC(rknn_destroy(ctx), 0);
    free(buf);

    /* rk3566: no core mask */
    buf = test_model_a("rk3566", &n, 0);
    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), 0);
    CHECK_RC(rknn_set_core_mask(ctx, RKNN_NPU_CORE_0), RKNN_ERR_TARGET_PLATFORM_UNMATCH);
    CHECK_RC(rknn_set_batch_core_num(ctx, 1), RKNN_ERR_TARGET_PLATFORM_UNMATCH);
    CHECK_RC(rknn_destroy(ctx), 0);
    free(buf);
}

static void test_model_b_int8(void)
{
    size_t n;
    uint8_t *buf = test_model_b(&n);
    rknn_context ctx;
    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), 0);
    rknn_tensor_attr a;
    memset(&a, 0, sizeof(a));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_INPUT_ATTR, &a, sizeof(a)), 0);
    CHECK(a.type == RKNN_TENSOR_INT8 && a.qnt_type == RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC && a.zp == 1 &&
          a.scale == 0.5f && a.fmt == RKNN_TENSOR_UNDEFINED && a.size == 8, "int8 input attr");
    float x[8] = {-3.0f, -0.3f, 0.0f, 0.26f, 1.0f, 2.5f, 10.0f, 70.0f};
    rknn_input in;
    memset(&in, 0, sizeof(in));
    in.buf = x;
    in.size = sizeof(x);
    in.type = RKNN_TENSOR_FLOAT32;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), 0);
    CHECK_RC(rknn_run(ctx, NULL), 0);
    int8_t raw[8];
    float fl[8];
    rknn_output o[2];
    memset(o, 0, sizeof(o));
    o[0].is_prealloc = 1;
    o[0].buf = raw;
    o[0].size = sizeof(raw);
    CHECK_RC(rknn_outputs_get(ctx, 1, o, NULL), 0);
    o[0].want_float = 1;
    o[0].buf = fl;
    o[0].size = sizeof(fl);
    CHECK_RC(rknn_outputs_get(ctx, 1, o, NULL), 0);
    const int8_t cq[8] = {-4, -2, 0, 2, 4, 6, 8, 10};
    for (int i = 0; i < 8; i++) {
        int8_t qi = q8(x[i], 0.5f, 1);
        float xi = 0.5f * (float)(qi - 1);
        int8_t qm = q8(xi > 0 ? xi : 0, 0.25f, -3);
        float m = 0.25f * (float)(qm + 3);
        int8_t qo = q8(m + 0.125f * (float)cq[i], 0.1f, 0);
        CHECK(raw[i] == qo, "int8 out[%d] = %d want %d", i, raw[i], qo);
        CHECK(fabsf(fl[i] - 0.1f * (float)qo) < 1e-6f, "int8 float out[%d] = %g", i, fl[i]);
    }
    /* pass_through int8 */
    int8_t xq[8] = {-128, -1, 0, 1, 2, 3, 50, 127};
    in.buf = xq;
    in.size = sizeof(xq);
    in.type = RKNN_TENSOR_INT8;
    in.pass_through = 1;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), 0);
    CHECK_RC(rknn_run(ctx, NULL), 0);
    o[0].want_float = 0;
    o[0].buf = raw;
    o[0].size = sizeof(raw);
    CHECK_RC(rknn_outputs_get(ctx, 1, o, NULL), 0);
    for (int i = 0; i < 8; i++) {
        float xi = 0.5f * (float)(xq[i] - 1);
        int8_t qm = q8(xi > 0 ? xi : 0, 0.25f, -3);
        int8_t qo = q8(0.25f * (float)(qm + 3) + 0.125f * (float)cq[i], 0.1f, 0);
        CHECK(raw[i] == qo, "pass_through int8 out[%d] = %d want %d", i, raw[i], qo);
    }
    CHECK_RC(rknn_destroy(ctx), 0);
    free(buf);
}

static void test_model_c_fp16(void)
{
    size_t n;
    uint8_t *buf = test_model_c(&n);
    rknn_context ctx;
    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), 0);
    float x[6] = {1.0001f, 3.14159f, -2.5f, 7.0f, 1000.3f, 0.3333f};
    uint16_t k[6] = {0x3C00, 0x3555, 0x4200, 0xBC00, 0x3E00, 0x2E66};
    rknn_input in;
    memset(&in, 0, sizeof(in));
    in.buf = x;
    in.size = sizeof(x);
    in.type = RKNN_TENSOR_FLOAT32;
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), 0);
    CHECK_RC(rknn_run(ctx, NULL), 0);
    uint16_t h[6];
    float f[6];
    rknn_output o;
    memset(&o, 0, sizeof(o));
    CHECK_RC(rknn_outputs_get(ctx, 1, &o, NULL), 0);
    CHECK(o.size == 12, "fp16 native output size %u", o.size);
    memcpy(h, o.buf, sizeof(h));
    CHECK_RC(rknn_outputs_release(ctx, 1, &o), 0);
    o.want_float = 1;
    o.is_prealloc = 1;
    o.buf = f;
    o.size = sizeof(f);
    CHECK_RC(rknn_outputs_get(ctx, 1, &o, NULL), 0);
    for (int i = 0; i < 6; i++) {
        float xi = h2f(f2h(x[i]));
        uint16_t want = f2h(xi * h2f(k[i]));
        CHECK(h[i] == want, "fp16 out[%d] = 0x%04x want 0x%04x", i, h[i], want);
        CHECK(f[i] == h2f(want), "fp16 float out[%d] = %g want %g", i, f[i], h2f(want));
    }
    rknn_tensor_attr a;
    memset(&a, 0, sizeof(a));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_OUTPUT_ATTR, &a, sizeof(a)), 0);
    CHECK(a.type == RKNN_TENSOR_FLOAT16 && a.size == 12 && a.fmt == RKNN_TENSOR_UNDEFINED, "fp16 output attr");
    CHECK_RC(rknn_destroy(ctx), 0);
    free(buf);
}

static void test_invalid_models(void)
{
    rknn_context ctx = 0;
    uint8_t vendor[256];
    memset(vendor, 0, sizeof(vendor));
    memcpy(vendor, "RKNN", 4);
    CHECK_RC(rknn_init(&ctx, vendor, sizeof(vendor), 0, NULL), RKNN_ERR_MODEL_INVALID);
    CHECK(strstr(rknnlink_sim_init_error(), "board") && strstr(rknnlink_sim_init_error(), "init_runtime(target="),
          "vendor model message: %s", rknnlink_sim_init_error());
    memcpy(vendor, "CYPTRKNN", 8);
    CHECK_RC(rknn_init(&ctx, vendor, sizeof(vendor), 0, NULL), RKNN_ERR_MODEL_INVALID);
    CHECK(strstr(rknnlink_sim_init_error(), "encrypted") != NULL, "encrypted message: %s", rknnlink_sim_init_error());
    CHECK_RC(rknn_init(&ctx, NULL, 10, 0, NULL), RKNN_ERR_PARAM_INVALID);
    CHECK_RC(rknn_init(NULL, vendor, 10, 0, NULL), RKNN_ERR_PARAM_INVALID);
    CHECK(rknn_init(&ctx, (void *)"/nonexistent/model.rknn", 0, 0, NULL) != 0, "missing file fails");

    size_t n;
    uint8_t *buf = test_model_a("rk3588", &n, 1);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        int rc = rknn_init(&ctx, buf, (uint32_t)(len ? len : 1), 0, NULL);
        if (rc != RKNN_ERR_MODEL_INVALID) {
            bad++;
            if (rc == 0)
                rknn_destroy(ctx);
        }
    }
    CHECK(bad == 0, "%d truncations were not rejected with -6", bad);
    /* single-byte mutations past the header: CRC catches all of them */
    uint8_t *mut = malloc(n);
    unsigned seed = 12345;
    bad = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(mut, buf, n);
        seed = seed * 1103515245u + 12345u;
        size_t pos = 64 + (seed >> 8) % (n - 64);
        mut[pos] ^= (uint8_t)(1u << ((seed >> 4) % 8));
        int rc = rknn_init(&ctx, mut, (uint32_t)n, 0, NULL);
        if (rc != RKNN_ERR_MODEL_INVALID) {
            bad++;
            if (rc == 0)
                rknn_destroy(ctx);
        }
    }
    CHECK(bad == 0, "%d CRC-protected mutations were accepted", bad);
    free(buf);
    /* without CRC, mutations must never crash; whatever parses must run */
    buf = test_model_a("rk3588", &n, 0);
    int ok = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(mut, buf, n);
        for (int k = 0; k < 3; k++) {
            seed = seed * 1103515245u + 12345u;
            mut[(seed >> 8) % n] = (uint8_t)(seed >> 3);
        }
        int rc = rknn_init(&ctx, mut, (uint32_t)n, 0, NULL);
        CHECK(rc == 0 || rc == RKNN_ERR_MODEL_INVALID, "mutated model rc %d", rc);
        if (rc == 0) {
            ok++;
            rknn_input_output_num io;
            if (rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &io, sizeof(io)) == 0) {
                rknn_tensor_attr a;
                memset(&a, 0, sizeof(a));
                rknn_query(ctx, RKNN_QUERY_INPUT_ATTR, &a, sizeof(a));
                float *x = calloc(a.n_elems ? a.n_elems : 1, sizeof(float));
                rknn_input in;
                memset(&in, 0, sizeof(in));
                in.buf = x;
                in.size = a.n_elems * 4;
                in.type = RKNN_TENSOR_FLOAT32;
                in.fmt = RKNN_TENSOR_NHWC;
                if (rknn_inputs_set(ctx, 1, &in) == 0)
                    rknn_run(ctx, NULL);
                free(x);
            }
            rknn_destroy(ctx);
        }
    }
    CHECK(ok > 0, "some mutated models should still parse (got %d)", ok);
    free(mut);
    free(buf);

    /* an unknown operator type is named in the error */
    mw *w = mw_new("rk3588", 0);
    uint32_t d[1] = {4};
    uint32_t i0 = mw_tensor(w, "i", 0, 1, d, 2, 0, 0, 0);
    uint32_t o0 = mw_tensor(w, "o", 0, 1, d, 3, 0, 0, 0);
    mw_op(w, 127, "weird", 1, &i0, 1, &o0, 0, 0, 0);
    mw_io(w, i0, 0, 0, 0, NULL, NULL, 0);
    mw_io(w, o0, 1, 0, 0, NULL, NULL, 0);
    buf = mw_finish(w, &n, 0);
    mw_free(w);
    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), RKNN_ERR_MODEL_INVALID);
    CHECK(strstr(rknnlink_sim_init_error(), "weird") && strstr(rknnlink_sim_init_error(), "127"),
          "unknown op message: %s", rknnlink_sim_init_error());
    free(buf);

#ifndef SIM_STAND_IN_KERNELS
    /* a refused GroupNormalization names num_groups (its error path once read the freed private state) */
    {
        uint32_t d4[4] = {1, 4, 2, 2};
        w = mw_new("rk3588", 0);
        i0 = mw_tensor(w, "x", 0, 4, d4, 2, 0, 0, 0);
        o0 = mw_tensor(w, "y", 0, 4, d4, 3, 0, 0, 0);
        mw_attr_int(w, "num_groups", 3);
        mw_op(w, 52 /* SIM_OP_GROUP_NORM */, "gn", 1, &i0, 1, &o0, 0, 0, 0);
        mw_io(w, i0, 0, 0, 0, NULL, NULL, 0);
        mw_io(w, o0, 1, 0, 0, NULL, NULL, 0);
        buf = mw_finish(w, &n, 0);
        mw_free(w);
        CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), RKNN_ERR_MODEL_INVALID);
        CHECK(strstr(rknnlink_sim_init_error(), "num_groups 3") != NULL, "group norm message: %s",
              rknnlink_sim_init_error());
        free(buf);
    }
#endif

    /* reading a tensor before it is produced */
    w = mw_new("rk3588", 0);
    i0 = mw_tensor(w, "i", 0, 1, d, 2, 0, 0, 0);
    uint32_t mid = mw_tensor(w, "m", 0, 1, d, 0, 0, 0, 0);
    o0 = mw_tensor(w, "o", 0, 1, d, 3, 0, 0, 0);
    mw_op(w, 10, "second", 1, &mid, 1, &o0, 0, 0, 0);
    mw_op(w, 10, "first", 1, &i0, 1, &mid, 0, 0, 0);
    mw_io(w, i0, 0, 0, 0, NULL, NULL, 0);
    mw_io(w, o0, 1, 0, 0, NULL, NULL, 0);
    buf = mw_finish(w, &n, 0);
    mw_free(w);
    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), RKNN_ERR_MODEL_INVALID);
    CHECK(strstr(rknnlink_sim_init_error(), "topological") != NULL, "order message: %s", rknnlink_sim_init_error());
    free(buf);

    /* invalid UTF-8 in a name; an input and an output with the same name */
    static const char *const names[3][2] = {{"bad\xff", "o"}, {"same", "same"}, {"two\nlines", "two\nlines"}};
    static const char *const reasons[3] = {"UTF-8", "share the name", "two?lines"};
    for (int k = 0; k < 3; k++) {
        w = mw_new("rk3588", 0);
        i0 = mw_tensor(w, names[k][0], 0, 1, d, 2, 0, 0, 0);
        o0 = mw_tensor(w, names[k][1], 0, 1, d, 3, 0, 0, 0);
        mw_op(w, 10, "r", 1, &i0, 1, &o0, 0, 0, 0);
        mw_io(w, i0, 0, 0, 0, NULL, NULL, 0);
        mw_io(w, o0, 1, 0, 0, NULL, NULL, 0);
        buf = mw_finish(w, &n, 0);
        mw_free(w);
        CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), RKNN_ERR_MODEL_INVALID);
        CHECK(strstr(rknnlink_sim_init_error(), reasons[k]) != NULL, "message: %s", rknnlink_sim_init_error());
        free(buf);
    }
}

static void test_path_info_only_perf_dump(void)
{
    size_t n;
    uint8_t *buf = test_model_a("rk3588", &n, 1);
    char path[] = "/tmp/rknnlink_test_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    FILE *f = fdopen(fd, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    rknn_context ctx;
    CHECK_RC(rknn_init(&ctx, path, 0, 0, NULL), 0);
    CHECK_RC(rknn_destroy(ctx), 0);

    CHECK_RC(rknn_init(&ctx, path, 0, RKNN_FLAG_COLLECT_MODEL_INFO_ONLY, NULL), 0);
    rknn_mem_size ms;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_MEM_SIZE, &ms, sizeof(ms)), 0);
    CHECK(ms.total_weight_size == 48, "info-only mem size");
    rknn_input_output_num io;
    CHECK(rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &io, sizeof(io)) != 0, "info-only answers only MEM_SIZE");
    CHECK(rknn_run(ctx, NULL) != 0, "info-only cannot run");
    CHECK_RC(rknn_destroy(ctx), 0);
    remove(path);

    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, RKNN_FLAG_COLLECT_PERF_MASK | RKNN_FLAG_ASYNC_MASK, NULL), 0);
    float x[12] = {0};
    rknn_input in;
    memset(&in, 0, sizeof(in));
    in.buf = x;
    in.size = sizeof(x);
    in.type = RKNN_TENSOR_FLOAT32;
    in.fmt = RKNN_TENSOR_NHWC;
    CHECK_RC(rknnlink_sim_set_dump(ctx, 1), 0);
    CHECK_RC(rknn_inputs_set(ctx, 1, &in), 0);
    CHECK_RC(rknn_run(ctx, NULL), 0);
    rknn_perf_detail pd;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_PERF_DETAIL, &pd, sizeof(pd)), 0);
    rknn_perf_run pr;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_PERF_RUN, &pr, sizeof(pr)), 0);
    CHECK(pd.perf_data && pd.data_len == strlen(pd.perf_data), "perf detail text");
    if (pd.perf_data) {
        CHECK(strstr(pd.perf_data, "ID   OpType             DataType Target InputShape                               "
                                   "OutputShape            Cycles(DDR/NPU/Total)    Time(us)     MacUsage(%)          "
                                   "WorkLoad(0/1/2)      RW(KB)       FullName") != NULL, "perf header");
        char tot[96];
        snprintf(tot, sizeof(tot), "Total Operator Elapsed Per Frame Time(us): %lld\n", (long long)pr.run_duration);
        CHECK(strstr(pd.perf_data, tot) != NULL, "PERF_RUN %lld equals the table total", (long long)pr.run_duration);
        CHECK(strstr(pd.perf_data, "InputOperator") && strstr(pd.perf_data, "OutputOperator:out") &&
              strstr(pd.perf_data, "Add:add0") && strstr(pd.perf_data, "Operator Time Consuming Ranking Table") &&
              strstr(pd.perf_data, "\nTotal "), "perf rows");
    }
    uint32_t nd = 0;
    CHECK_RC(rknnlink_sim_dump_count(ctx, &nd), 0);
    CHECK(nd == 3, "dump count %u (input + two layer outputs)", nd);
    rknnlink_dump_info di;
    CHECK_RC(rknnlink_sim_dump_info(ctx, 2, &di, sizeof(di)), 0);
    CHECK(strcmp(di.name, "out") == 0 && di.layer_index == 1 && di.n_elems == 12, "dump info");
    float df[12], want[12];
    CHECK_RC(rknnlink_sim_dump_read(ctx, 2, df, 12, NULL, 0), 0);
    CHECK_RC(rknnlink_sim_dump_read(ctx, 2, df, 11, NULL, 0), RKNN_ERR_PARAM_INVALID);
    test_a_expect(x, want);
    for (int i = 0; i < 12; i++)
        CHECK(fabsf(df[i] - want[i]) < 1e-6f, "dump[%d]", i);
    CHECK_RC(rknnlink_sim_set_dump(ctx, 0), 0);
    CHECK_RC(rknnlink_sim_dump_count(ctx, &nd), 0);
    CHECK(nd == 0, "dumps dropped");
    CHECK_RC(rknn_destroy(ctx), 0);
    free(buf);
}

/* A destroyed or made-up handle is refused (no read through it: the old handle was the context's address,
 * so this was a use-after-free under ASan); a new context never answers to an old handle. */
static void test_stale_handles(void)
{
    size_t n;
    uint8_t *buf = test_model_a("rk3588", &n, 0);
    rknn_context ctx = 0, again = 0;
    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), 0);
    CHECK_RC(rknn_destroy(ctx), 0);
    rknn_input_output_num io;
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &io, sizeof(io)), RKNN_ERR_CTX_INVALID);
    CHECK_RC(rknn_run(ctx, NULL), RKNN_ERR_CTX_INVALID);
    CHECK_RC(rknn_destroy(ctx), RKNN_ERR_CTX_INVALID);
    CHECK_RC(rknnlink_sim_set_dump(ctx, 1), RKNN_ERR_CTX_INVALID);
    CHECK(strcmp(rknnlink_sim_last_error(ctx), "invalid context") == 0, "last_error of a stale handle");
    CHECK_RC(rknn_init(&again, buf, (uint32_t)n, 0, NULL), 0); /* may reuse the slot: a new generation */
    CHECK(again != ctx, "a new context got the destroyed one's handle");
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &io, sizeof(io)), RKNN_ERR_CTX_INVALID);
    CHECK_RC(rknn_query(again, RKNN_QUERY_IN_OUT_NUM, &io, sizeof(io)), 0);
    rknn_context made_up = (rknn_context)0x5a5a5a5a12345678ull;
    CHECK_RC(rknn_query(made_up, RKNN_QUERY_IN_OUT_NUM, &io, sizeof(io)), RKNN_ERR_CTX_INVALID);
    CHECK_RC(rknn_destroy(made_up), RKNN_ERR_CTX_INVALID);
    CHECK(rknn_create_mem2(made_up, 16, RKNN_MEM_FLAG_ALLOC_NO_CONTEXT) == NULL, "no-context mem with a bad handle");
    CHECK_RC(rknn_destroy(again), 0);
    free(buf);
}

static void test_mem(void)
{
    size_t n;
    uint8_t *buf = test_model_a("rk3588", &n, 1);
    rknn_context ctx;
    CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), 0);
    int fd0 = count_fds();
    for (int i = 0; i < 2000; i++) {
        rknn_tensor_mem *m = rknn_create_mem2(0, 4096, RKNN_MEM_FLAG_ALLOC_NO_CONTEXT);
        CHECK(m != NULL && m->size == 4096 && m->virt_addr, "create_mem2 no context");
        if (!m)
            break;
        CHECK_RC(rknn_destroy_mem(i % 2 ? ctx : 0, m), 0);
    }
    CHECK(count_fds() == fd0, "fd count changed: %d -> %d", fd0, count_fds());
    CHECK(rknn_create_mem2(0, 64, 0) == NULL, "create_mem2 without a context needs the flag");
    CHECK(rknn_create_mem(0, 64) == NULL, "create_mem needs a context");
    CHECK(rknn_create_mem_from_fd(ctx, 3, NULL, 64, 0) == NULL, "from_fd unsupported");

    rknn_tensor_attr ia, oa;
    memset(&ia, 0, sizeof(ia));
    memset(&oa, 0, sizeof(oa));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_NATIVE_INPUT_ATTR, &ia, sizeof(ia)), 0);
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_NATIVE_OUTPUT_ATTR, &oa, sizeof(oa)), 0);
    ia.type = RKNN_TENSOR_FLOAT32;
    ia.pass_through = 0;
    oa.type = RKNN_TENSOR_FLOAT32;
    rknn_tensor_mem *im = rknn_create_mem(ctx, ia.n_elems * 4);
    rknn_tensor_mem *om = rknn_create_mem(ctx, oa.n_elems * 4);
    CHECK(im && om, "create_mem");
    float x[12], want[12];
    for (int i = 0; i < 12; i++)
        x[i] = (float)(i * 3 % 40);
    memcpy(im->virt_addr, x, sizeof(x));
    test_a_expect(x, want);
    CHECK_RC(rknn_set_io_mem(ctx, im, &ia), 0);
    CHECK_RC(rknn_set_io_mem(ctx, om, &oa), 0);
    CHECK_RC(rknn_mem_sync(ctx, im, RKNN_MEMORY_SYNC_TO_DEVICE), 0);
    CHECK_RC(rknn_run(ctx, NULL), 0);
    CHECK_RC(rknn_mem_sync(ctx, om, RKNN_MEMORY_SYNC_FROM_DEVICE), 0);
    CHECK_RC(rknn_mem_sync(ctx, om, (rknn_mem_sync_mode)9), RKNN_ERR_PARAM_INVALID);
    for (int i = 0; i < 12; i++)
        CHECK(fabsf(((float *)om->virt_addr)[i] - want[i]) < 1e-6f, "zero-copy out[%d]", i);
    /* pass_through binding on memory larger than the native tensor */
    rknn_tensor_attr pa;
    memset(&pa, 0, sizeof(pa));
    CHECK_RC(rknn_query(ctx, RKNN_QUERY_NATIVE_INPUT_ATTR, &pa, sizeof(pa)), 0);
    pa.pass_through = 1;
    rknn_tensor_mem *big = rknn_create_mem(ctx, pa.size + 256);
    float nat[12];
    for (int i = 0; i < 12; i++)
        nat[i] = (float)i - 6.0f;
    memcpy(big->virt_addr, nat, sizeof(nat));
    CHECK_RC(rknn_set_io_mem(ctx, big, &pa), 0);
    CHECK_RC(rknn_run(ctx, NULL), 0);
    for (int c = 0; c < 3; c++)
        for (int s = 0; s < 4; s++) {
            float w = nat[s * 3 + c] + test_a_bias(c * 4 + s);
            w = w > 0 ? w : 0;
            CHECK(fabsf(((float *)om->virt_addr)[c * 4 + s] - w) < 1e-6f, "pass_through zero-copy out[%d]", c * 4 + s);
        }
    CHECK_RC(rknn_set_io_mem(ctx, im, &ia), 0);
    CHECK_RC(rknn_destroy_mem(ctx, big), 0);
    rknn_tensor_attr bad = ia;
    strcpy(bad.name, "nope");
    CHECK_RC(rknn_set_io_mem(ctx, im, &bad), RKNN_ERR_PARAM_INVALID);
    rknn_tensor_mem *small = rknn_create_mem(ctx, 8);
    CHECK_RC(rknn_set_io_mem(ctx, small, &ia), RKNN_ERR_PARAM_INVALID);
    CHECK_RC(rknn_destroy_mem(ctx, small), 0);
    CHECK_RC(rknn_destroy_mem(ctx, im), 0);
    CHECK_RC(rknn_destroy_mem(ctx, om), 0);
    CHECK_RC(rknn_run(ctx, NULL), RKNN_ERR_INPUT_INVALID); /* the input binding went away with its memory */
    CHECK_RC(rknn_destroy(ctx), 0);
    free(buf);
}

typedef struct thr_arg {
    rknn_context ctx;
    int shared;
    float scale;
    int errors;
} thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    float x[12], want[12], out[12];
    for (int i = 0; i < 12; i++)
        x[i] = a->scale * (float)i;
    test_a_expect(x, want);
    for (int it = 0; it < 300; it++) {
        rknn_input in;
        memset(&in, 0, sizeof(in));
        in.buf = x;
        in.size = sizeof(x);
        in.type = RKNN_TENSOR_FLOAT32;
        in.fmt = RKNN_TENSOR_NHWC;
        rknn_output o;
        memset(&o, 0, sizeof(o));
        o.want_float = 1;
        o.is_prealloc = 1;
        o.buf = out;
        o.size = sizeof(out);
        if (!a->shared && rknn_inputs_set(a->ctx, 1, &in) != 0)
            a->errors++;
        if (rknn_run(a->ctx, NULL) != 0 || rknn_outputs_get(a->ctx, 1, &o, NULL) != 0) {
            a->errors++;
            continue;
        }
        for (int i = 0; i < 12; i++)
            if (fabsf(out[i] - want[i]) > 1e-6f)
                a->errors++;
        rknn_output_extend oe;
        rknn_output o2;
        memset(&o2, 0, sizeof(o2));
        if (rknn_outputs_get(a->ctx, 1, &o2, &oe) != 0 || rknn_outputs_release(a->ctx, 1, &o2) != 0)
            a->errors++;
    }
    return NULL;
}

static void test_threads_and_dup(void)
{
    size_t n;
    uint8_t *buf = test_model_a("rk3588", &n, 1);
    rknn_context c1, c2;
    CHECK_RC(rknn_init(&c1, buf, (uint32_t)n, 0, NULL), 0);
    free(buf); /* the runtime keeps its own copy */
    CHECK_RC(rknn_dup_context(&c1, &c2), 0);
    CHECK(c1 != c2, "dup gives a new handle");
    /* independent contexts (sharing one model) in parallel */
    thr_arg a1 = {c1, 0, 1.0f, 0}, a2 = {c2, 0, 2.0f, 0};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, thr_main, &a1);
    pthread_create(&t2, NULL, thr_main, &a2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(a1.errors == 0 && a2.errors == 0, "parallel contexts: %d / %d errors", a1.errors, a2.errors);
    CHECK_RC(rknn_destroy(c1), 0); /* the dup keeps the model alive */
    /* one context from two threads: the input is set once, runs are serialised */
    float x[12];
    for (int i = 0; i < 12; i++)
        x[i] = 3.0f * (float)i;
    rknn_input in;
    memset(&in, 0, sizeof(in));
    in.buf = x;
    in.size = sizeof(x);
    in.type = RKNN_TENSOR_FLOAT32;
    in.fmt = RKNN_TENSOR_NHWC;
    CHECK_RC(rknn_inputs_set(c2, 1, &in), 0);
    thr_arg s1 = {c2, 1, 3.0f, 0}, s2 = {c2, 1, 3.0f, 0};
    pthread_create(&t1, NULL, thr_main, &s1);
    pthread_create(&t2, NULL, thr_main, &s2);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    CHECK(s1.errors == 0 && s2.errors == 0, "shared context: %d / %d errors", s1.errors, s2.errors);
    CHECK_RC(rknn_destroy(c2), 0);
    rknn_context bogus = 0;
    CHECK_RC(rknn_dup_context(&bogus, &c2), RKNN_ERR_CTX_INVALID);
    CHECK_RC(rknn_run(0, NULL), RKNN_ERR_CTX_INVALID);
}

/* A chain of Relus: intermediates alive one step apart share memory (ping-pong), so the arena holds two. */
static void test_memory_plan(void)
{
    for (int dt = 0; dt < 2; dt++) {
        mw *w = mw_new("rk3588", dt ? 1 : 0);
        uint32_t d[2] = {1, 100};
        uint32_t dtype = dt ? 1 : 0, esz = dt ? 2 : 4;
        uint32_t prev = mw_tensor(w, "x", dtype, 2, d, 2, 0, 0, 0), first = prev;
        for (int k = 0; k < 6; k++) {
            char name[16];
            snprintf(name, sizeof(name), "t%d", k);
            uint32_t next = mw_tensor(w, name, dtype, 2, d, k == 5 ? 3 : 0, 0, 0, 0);
            mw_op(w, 10, name, 1, &prev, 1, &next, 0, 0, 0);
            prev = next;
        }
        mw_io(w, first, 0, 0, 0, NULL, NULL, 0);
        mw_io(w, prev, 1, 0, 0, NULL, NULL, 0);
        size_t n;
        uint8_t *buf = mw_finish(w, &n, 1);
        mw_free(w);
        rknn_context ctx;
        CHECK_RC(rknn_init(&ctx, buf, (uint32_t)n, 0, NULL), 0);
        rknn_mem_size ms;
        CHECK_RC(rknn_query(ctx, RKNN_QUERY_MEM_SIZE, &ms, sizeof(ms)), 0);
        uint32_t one = (100 * esz + 63) / 64 * 64;
        CHECK(ms.total_internal_size == 2 * one, "chain of 5 intermediates: internal %u, want %u",
              ms.total_internal_size, 2 * one);
        CHECK(ms.total_weight_size == 0 && ms.total_dma_allocated_size == 2 * one + 2 * 100 * esz, "dma %llu",
              (unsigned long long)ms.total_dma_allocated_size);
        float x[100], y[100];
        for (int i = 0; i < 100; i++)
            x[i] = (float)(i - 50) * 0.37f;
        rknn_input in;
        memset(&in, 0, sizeof(in));
        in.buf = x;
        in.size = sizeof(x);
        in.type = RKNN_TENSOR_FLOAT32;
        CHECK_RC(rknn_inputs_set(ctx, 1, &in), 0);
        CHECK_RC(rknnlink_sim_set_dump(ctx, 1), 0);
        CHECK_RC(rknn_run(ctx, NULL), 0);
        rknn_output o;
        memset(&o, 0, sizeof(o));
        o.want_float = 1;
        o.is_prealloc = 1;
        o.buf = y;
        o.size = sizeof(y);
        CHECK_RC(rknn_outputs_get(ctx, 1, &o, NULL), 0);
        for (int i = 0; i < 100; i++) {
            float want = x[i] > 0 ? x[i] : 0;
            if (dt)
                want = h2f(f2h(want));
            CHECK(y[i] == want, "chain out[%d] = %g want %g", i, y[i], want);
        }
        /* every intermediate was dumped correctly although they shared memory */
        uint32_t nd = 0;
        CHECK_RC(rknnlink_sim_dump_count(ctx, &nd), 0);
        CHECK(nd == 7, "dumps %u", nd);
        for (uint32_t k = 1; k < nd; k++) {
            float f[100];
            uint16_t raw[200];
            CHECK_RC(rknnlink_sim_dump_read(ctx, k, f, 100, raw, sizeof(raw)), 0);
            for (int i = 0; i < 100; i++) {
                float want = x[i] > 0 ? x[i] : 0;
                if (dt) {
                    want = h2f(f2h(want));
                    CHECK(raw[i] == f2h(want), "fp16 raw dump %u[%d]", k, i);
                }
                CHECK(f[i] == want, "dump %u[%d] = %g want %g", k, i, f[i], want);
            }
        }
        CHECK_RC(rknn_destroy(ctx), 0);
        free(buf);
    }
}

/* ---- worker pool: same bytes for 1 and 2 threads, parallel contexts each with their own pool ---- */
#ifndef SIM_STAND_IN_KERNELS
static float lcg_unit(uint32_t *st)
{
    *st = *st * 1664525u + 1013904223u;
    return (float)(*st >> 8) / 16777216.0f - 0.5f;
}

static uint32_t pool_const(mw *w, const char *name, uint32_t mode, uint32_t nd, const uint32_t *d, uint32_t n,
                           float amp, uint32_t *st)
{
    if (mode == 2) { /* int8 weights, scale amp / 64 */
        int8_t *q = malloc(n);
        for (uint32_t i = 0; i < n; i++)
            q[i] = (int8_t)(int)(lcg_unit(st) * 200.0f);
        uint32_t t = mw_const(w, name, 2, nd, d, q, n, 2, amp / 64.0f, 0);
        free(q);
        return t;
    }
    if (mode == 1) {
        uint16_t *h = malloc(n * 2u);
        for (uint32_t i = 0; i < n; i++)
            h[i] = f2h(lcg_unit(st) * amp);
        uint32_t t = mw_const(w, name, 1, nd, d, h, n * 2u, 0, 0, 0);
        free(h);
        return t;
    }
    float *f = malloc(n * 4u);
    for (uint32_t i = 0; i < n; i++)
        f[i] = lcg_unit(st) * amp;
    uint32_t t = mw_const(w, name, 0, nd, d, f, n * 4u, 0, 0, 0);
    free(f);
    return t;
}

/* x[1,16,24,24] -> Conv3x3 16->32 Relu -> depthwise 3x3 s2 Clip -> Conv1x1 32->48 -> y; mode 0 fp32, 1 fp16,
 * 2 int8. Big enough that every conv kernel splits its work. */
static uint8_t *pool_model(uint32_t mode, size_t *size)
{
    uint32_t st = 7u + mode;
    uint32_t dt = mode == 0 ? 0 : (mode == 1 ? 1 : 2), qn = mode == 2 ? 2 : 0;
    mw *w = mw_new("rk3588", mode);
    uint32_t dx[4] = {1, 16, 24, 24}, d1[4] = {1, 32, 24, 24}, d2[4] = {1, 32, 12, 12}, dy[4] = {1, 48, 12, 12};
    uint32_t x = mw_tensor(w, "x", dt, 4, dx, 2, qn, 0.02f, 3);
    uint32_t t1 = mw_tensor(w, "t1", dt, 4, d1, 0, qn, 0.03f, -5);
    uint32_t t2 = mw_tensor(w, "t2", dt, 4, d2, 0, qn, 0.025f, -2);
    uint32_t y = mw_tensor(w, "y", dt, 4, dy, 3, qn, 0.04f, 1);
    uint32_t w1d[4] = {32, 16, 3, 3}, w2d[4] = {32, 1, 3, 3}, w3d[4] = {48, 32, 1, 1}, bd[1] = {32}, b3d[1] = {48};
    uint32_t w1 = pool_const(w, "w1", mode, 4, w1d, 32 * 16 * 9, 0.5f, &st);
    uint32_t w2 = pool_const(w, "w2", mode, 4, w2d, 32 * 9, 0.8f, &st);
    uint32_t w3 = pool_const(w, "w3", mode, 4, w3d, 48 * 32, 0.5f, &st);
    int64_t k3[2] = {3, 3}, p1[4] = {1, 1, 1, 1}, s2[2] = {2, 2};
    mw_attr_ints(w, "kernel_shape", k3, 2);
    mw_attr_ints(w, "pads", p1, 4);
    if (mode != 2) {
        uint32_t b1 = pool_const(w, "b1", mode, 1, bd, 32, 0.2f, &st);
        uint32_t ins[3] = {x, w1, b1};
        mw_op(w, 1, "conv1", 3, ins, 1, &t1, 1, 0, 0);
    } else {
        uint32_t ins[2] = {x, w1};
        mw_op(w, 1, "conv1", 2, ins, 1, &t1, 1, 0, 0);
    }
    mw_attr_ints(w, "kernel_shape", k3, 2);
    mw_attr_ints(w, "pads", p1, 4);
    mw_attr_ints(w, "strides", s2, 2);
    mw_attr_int(w, "group", 32);
    uint32_t ins2[2] = {t1, w2};
    mw_op(w, 1, "dw", 2, ins2, 1, &t2, 2, 0.0f, 6.0f);
    if (mode != 2) {
        uint32_t b3 = pool_const(w, "b3", mode, 1, b3d, 48, 0.2f, &st);
        uint32_t ins3[3] = {t2, w3, b3};
        mw_op(w, 1, "pw", 3, ins3, 1, &y, 0, 0, 0);
    } else {
        uint32_t ins3[2] = {t2, w3};
        mw_op(w, 1, "pw", 2, ins3, 1, &y, 0, 0, 0);
    }
    mw_io(w, x, 0, 0, 0, NULL, NULL, 0);
    mw_io(w, y, 1, 0, 0, NULL, NULL, 0);
    uint8_t *p = mw_finish(w, size, 1);
    mw_free(w);
    return p;
}

#define POOL_NX (16 * 24 * 24)
#define POOL_NY (48 * 12 * 12)

static int pool_run_once(rknn_context ctx, const float *x, float *y)
{
    rknn_input in;
    memset(&in, 0, sizeof(in));
    in.buf = (void *)x;
    in.size = POOL_NX * sizeof(float);
    in.type = RKNN_TENSOR_FLOAT32;
    in.fmt = RKNN_TENSOR_NCHW;
    rknn_output o;
    memset(&o, 0, sizeof(o));
    o.want_float = 1;
    o.is_prealloc = 1;
    o.buf = y;
    o.size = POOL_NY * sizeof(float);
    if (rknn_inputs_set(ctx, 1, &in) != 0 || rknn_run(ctx, NULL) != 0 || rknn_outputs_get(ctx, 1, &o, NULL) != 0)
        return -1;
    return 0;
}

typedef struct pool_arg {
    rknn_context ctx;
    const float *x, *want;
    int errors;
} pool_arg;

static void *pool_thr(void *p)
{
    pool_arg *a = p;
    float *y = malloc(POOL_NY * sizeof(float));
    for (int it = 0; it < 20; it++)
        if (pool_run_once(a->ctx, a->x, y) != 0 || memcmp(y, a->want, POOL_NY * sizeof(float)) != 0)
            a->errors++;
    free(y);
    return NULL;
}

static void test_pool_bit_identical(void)
{
    float *x = malloc(POOL_NX * sizeof(float)), *y1 = malloc(POOL_NY * sizeof(float));
    float *y2 = malloc(POOL_NY * sizeof(float));
    uint32_t st = 99u;
    for (int i = 0; i < POOL_NX; i++)
        x[i] = lcg_unit(&st) * 4.0f;
    for (uint32_t mode = 0; mode < 3; mode++) {
        size_t n;
        uint8_t *buf = pool_model(mode, &n);
        rknn_context c1, c2, c3;
        setenv("RKNNLINK_SIM_THREADS", "1", 1);
        CHECK_RC(rknn_init(&c1, buf, (uint32_t)n, 0, NULL), 0);
        setenv("RKNNLINK_SIM_THREADS", "2", 1);
        CHECK_RC(rknn_init(&c2, buf, (uint32_t)n, 0, NULL), 0);
        CHECK_RC(rknn_dup_context(&c2, &c3), 0);
        unsetenv("RKNNLINK_SIM_THREADS");
        free(buf);
        CHECK(pool_run_once(c1, x, y1) == 0 && pool_run_once(c2, x, y2) == 0, "pool model %u runs", mode);
        CHECK(memcmp(y1, y2, POOL_NY * sizeof(float)) == 0, "pool model %u: 1 and 2 threads differ", mode);
        int nonzero = 0;
        for (int i = 0; i < POOL_NY; i++)
            nonzero += y1[i] != 0.0f;
        CHECK(nonzero > POOL_NY / 4, "pool model %u: output mostly zero (%d)", mode, nonzero);
        /* two multi-threaded contexts (one a dup) running at once, each with its own workers */
        pool_arg a2 = {c2, x, y1, 0}, a3 = {c3, x, y1, 0};
        pthread_t t2, t3;
        pthread_create(&t2, NULL, pool_thr, &a2);
        pthread_create(&t3, NULL, pool_thr, &a3);
        pthread_join(t2, NULL);
        pthread_join(t3, NULL);
        CHECK(a2.errors == 0 && a3.errors == 0, "pool model %u parallel: %d / %d errors", mode, a2.errors, a3.errors);
        CHECK_RC(rknn_destroy(c2), 0);
        CHECK_RC(rknn_destroy(c3), 0);
        CHECK_RC(rknn_destroy(c1), 0);
    }
    free(x);
    free(y1);
    free(y2);
}
#endif

int main(int argc, char **argv)
{
    /* "threads": only the concurrency tests (the ThreadSanitizer run) */
    int only_threads = argc > 1 && strcmp(argv[1], "threads") == 0;
    if (!only_threads) {
        test_model_a_basic();
        test_model_b_int8();
        test_model_c_fp16();
        test_invalid_models();
        test_path_info_only_perf_dump();
        test_mem();
        test_stale_handles();
    }
    test_threads_and_dup();
#ifndef SIM_STAND_IN_KERNELS /* the stand-in registry of asan-core has no Conv */
    test_pool_bit_identical();
#endif
    if (!only_threads)
        test_memory_plan();
    printf("%d checks, %d failures\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
