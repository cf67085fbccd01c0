/*
 * The double's ABI under ASan/UBSan (built with the double's sources by tests/vendor/test_vendor_double_c.py):
 * init from bytes and from a path, refusals, attributes, NHWC input, outputs in every requested type,
 * runtime-allocated outputs, dup_context, perf text, dumps when RKNN_LOG_LEVEL >= 5. Usage: check_double MODEL.
 * The model has one float32 input [1,3,8,8] and outputs float32, int8 and float16 of the same shape.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rknn_api.h"

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
                                        exit(1); } } while (0)

int main(int argc, char **argv) {
    CHECK(argc == 2);
    FILE *f = fopen(argv[1], "rb");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *model = malloc((size_t)n);
    CHECK(model && fread(model, 1, (size_t)n, f) == (size_t)n);
    fclose(f);

    rknn_context ctx = 0, other = 0;
    CHECK(rknn_init(&ctx, model, (uint32_t)n, 0, NULL) == RKNN_SUCC);
    for (long cut = 0; cut < n; cut += 7) CHECK(rknn_init(&other, model, (uint32_t)cut, 0, NULL) != RKNN_SUCC || cut == 0);
    CHECK(rknn_init(&other, "RKLNKSIM-not-a-vendor-file", 26, 0, NULL) == RKNN_ERR_MODEL_INVALID);
    CHECK(rknn_init(&other, argv[1], 0, 0, NULL) == RKNN_SUCC);
    CHECK(rknn_destroy(other) == RKNN_SUCC);

    rknn_input_output_num num;
    CHECK(rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &num, sizeof(num)) == RKNN_SUCC);
    CHECK(num.n_input == 1 && num.n_output == 3);
    CHECK(rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &num, 4) == RKNN_ERR_PARAM_INVALID);
    rknn_tensor_attr attr;
    memset(&attr, 0, sizeof(attr));
    attr.index = 3;
    CHECK(rknn_query(ctx, RKNN_QUERY_OUTPUT_ATTR, &attr, sizeof(attr)) == RKNN_ERR_PARAM_INVALID);
    attr.index = 0;
    CHECK(rknn_query(ctx, RKNN_QUERY_INPUT_ATTR, &attr, sizeof(attr)) == RKNN_SUCC);
    CHECK(attr.fmt == RKNN_TENSOR_NHWC && attr.dims[3] == 3 && attr.n_elems == 192);

    float x[192];
    for (int i = 0; i < 192; i++) x[i] = (float)i * 0.125f - 10.0f;   /* NHWC */
    rknn_input in;
    memset(&in, 0, sizeof(in));
    in.buf = x;
    in.size = 100; /* too small */
    in.type = RKNN_TENSOR_FLOAT32;
    in.fmt = RKNN_TENSOR_NHWC;
    CHECK(rknn_inputs_set(ctx, 1, &in) == RKNN_ERR_INPUT_INVALID);
    CHECK(rknn_run(ctx, NULL) == RKNN_ERR_INPUT_INVALID);
    in.size = sizeof(x);
    CHECK(rknn_inputs_set(ctx, 1, &in) == RKNN_SUCC);
    CHECK(rknn_run(ctx, NULL) == RKNN_SUCC);

    float f32[192];
    int8_t i8[192];
    uint16_t f16[192];
    rknn_output out[3];
    memset(out, 0, sizeof(out));
    out[0].index = 0; out[0].want_float = 1; out[0].is_prealloc = 1; out[0].buf = f32; out[0].size = sizeof(f32);
    out[1].index = 1; out[1].is_prealloc = 1; out[1].buf = i8; out[1].size = sizeof(i8);
    out[2].index = 2; out[2].is_prealloc = 1; out[2].buf = f16; out[2].size = 10; /* too small */
    CHECK(rknn_outputs_get(ctx, 3, out, NULL) == RKNN_ERR_OUTPUT_INVALID);
    out[2].size = sizeof(f16);
    CHECK(rknn_outputs_get(ctx, 3, out, NULL) == RKNN_SUCC);
    /* element (c=1, h=0, w=0) in NCHW is input index 1 in NHWC */
    CHECK(fabsf(f32[64] - 0.5f * x[1]) < 1e-6f);
    CHECK(i8[0] == (int8_t)lrintf(0.5f * x[0] + 0.25f));
    CHECK(rknn_outputs_release(ctx, 3, out) == RKNN_SUCC);

    rknn_output mine;
    memset(&mine, 0, sizeof(mine));
    mine.index = 2;
    mine.want_float = 1;
    CHECK(rknn_outputs_get(ctx, 1, &mine, NULL) == RKNN_SUCC);
    CHECK(mine.buf != NULL && mine.size == sizeof(f32));
    CHECK(fabsf(((float *)mine.buf)[0] - (0.5f * x[0] + 0.5f)) < 1e-6f);
    CHECK(rknn_outputs_release(ctx, 1, &mine) == RKNN_SUCC);

    CHECK(rknn_dup_context(&ctx, &other) == RKNN_SUCC);
    CHECK(rknn_inputs_set(other, 1, &in) == RKNN_SUCC && rknn_run(other, NULL) == RKNN_SUCC);
    CHECK(rknn_destroy(other) == RKNN_SUCC);
    CHECK(rknn_set_core_mask(ctx, RKNN_NPU_CORE_0_1) == RKNN_SUCC);
    CHECK(rknn_set_core_mask(ctx, (rknn_core_mask)8) == RKNN_ERR_PARAM_INVALID);
    rknn_perf_detail perf;
    CHECK(rknn_query(ctx, RKNN_QUERY_PERF_DETAIL, &perf, sizeof(perf)) == RKNN_SUCC);
    CHECK(perf.perf_data && strstr(perf.perf_data, "Total Operator Elapse Time(us)"));
    rknn_sdk_version ver;
    CHECK(rknn_query(ctx, RKNN_QUERY_SDK_VERSION, &ver, sizeof(ver)) == RKNN_SUCC);
    CHECK(strstr(ver.api_version, "rknnlink-vendor-double") != NULL);
    CHECK(rknn_destroy(ctx) == RKNN_SUCC);
    free(model);
    puts("double ok");
    return 0;
}
