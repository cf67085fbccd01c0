/*
 * libFuzzer target: rknn_init on arbitrary bytes; when the bytes parse, every query, inputs_set (normal
 * and pass_through), run, outputs_get (float and native), perf text, layer info and dumps.
 * Built by `make fuzz` with clang-14 -fsanitize=fuzzer,address,undefined.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rknn_api.h"
#include "rknnlink_sim.h"

#define MAX_BYTES (4u << 20)
#define MAX_MACS 5000000ull

static void exercise(rknn_context ctx)
{
    rknn_input_output_num io;
    if (rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &io, sizeof(io)) != 0)
        return;
    uint32_t nl = 0;
    uint64_t macs = 0;
    rknnlink_sim_layer_count(ctx, &nl);
    for (uint32_t i = 0; i < nl; i++) {
        rknnlink_layer_info li;
        if (rknnlink_sim_layer_info(ctx, i, &li, sizeof(li)) == 0)
            macs += li.macs;
    }
    static const rknn_query_cmd cmds[] = {RKNN_QUERY_SDK_VERSION, RKNN_QUERY_MEM_SIZE, RKNN_QUERY_CUSTOM_STRING,
                                          RKNN_QUERY_PERF_RUN};
    union { rknn_sdk_version v; rknn_mem_size m; rknn_custom_string s; rknn_perf_run r; } u;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        rknn_query(ctx, cmds[i], &u, sizeof(u));
    static const rknn_query_cmd attrs[] = {RKNN_QUERY_OUTPUT_ATTR, RKNN_QUERY_NATIVE_OUTPUT_ATTR,
                                           RKNN_QUERY_NATIVE_NHWC_OUTPUT_ATTR};
    for (uint32_t o = 0; o < io.n_output; o++)
        for (size_t k = 0; k < 3; k++) {
            rknn_tensor_attr a;
            memset(&a, 0, sizeof(a));
            a.index = o;
            rknn_query(ctx, attrs[k], &a, sizeof(a));
        }
    if (macs > MAX_MACS)
        return;
    rknnlink_sim_set_dump(ctx, 1);
    for (int pass = 0; pass < 2; pass++) {
        int ok = 1;
        for (uint32_t i = 0; i < io.n_input && ok; i++) {
            rknn_tensor_attr a;
            memset(&a, 0, sizeof(a));
            a.index = i;
            if (rknn_query(ctx, pass ? RKNN_QUERY_NATIVE_INPUT_ATTR : RKNN_QUERY_INPUT_ATTR, &a, sizeof(a)) != 0)
                return;
            uint32_t bytes = pass ? a.size : a.n_elems * 4u;
            void *buf = calloc(bytes ? bytes : 1, 1);
            if (buf == NULL)
                return;
            rknn_input in;
            memset(&in, 0, sizeof(in));
            in.index = i;
            in.buf = buf;
            in.size = bytes;
            in.pass_through = (uint8_t)pass;
            in.type = pass ? a.type : RKNN_TENSOR_FLOAT32;
            in.fmt = a.fmt;
            ok = rknn_inputs_set(ctx, 1, &in) == 0;
            free(buf);
        }
        if (!ok || rknn_run(ctx, NULL) != 0)
            continue;
        for (uint32_t o = 0; o < io.n_output; o++) {
            rknn_output out;
            memset(&out, 0, sizeof(out));
            out.index = o;
            out.want_float = (uint8_t)(pass == 0);
            if (rknn_outputs_get(ctx, 1, &out, NULL) == 0)
                rknn_outputs_release(ctx, 1, &out);
        }
        rknn_perf_detail pd;
        rknn_query(ctx, RKNN_QUERY_PERF_DETAIL, &pd, sizeof(pd));
        uint32_t nd = 0;
        rknnlink_sim_dump_count(ctx, &nd);
        for (uint32_t d = 0; d < nd; d++) {
            rknnlink_dump_info di;
            if (rknnlink_sim_dump_info(ctx, d, &di, sizeof(di)) == 0 && di.n_elems <= (1u << 20)) {
                float *f = malloc((size_t)di.n_elems * 4 + 4);
                unsigned char *r = malloc((size_t)di.n_elems * 8 + 8);
                if (f && r)
                    rknnlink_sim_dump_read(ctx, d, f, di.n_elems, r, di.n_elems * 8);
                free(f);
                free(r);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > UINT32_MAX)
        return 0;
    rknn_context ctx;
    if (rknn_init(&ctx, (void *)data, (uint32_t)size, RKNN_FLAG_COLLECT_MODEL_INFO_ONLY, NULL) != 0)
        return 0;
    rknn_mem_size ms;
    memset(&ms, 0, sizeof(ms));
    int rc = rknn_query(ctx, RKNN_QUERY_MEM_SIZE, &ms, sizeof(ms));
    rknn_destroy(ctx);
    if (rc != 0 || ms.total_dma_allocated_size > MAX_BYTES)
        return 0;
    if (rknn_init(&ctx, (void *)data, (uint32_t)size, RKNN_FLAG_COLLECT_PERF_MASK, NULL) != 0)
        abort(); /* parsed once, must parse again */
    rknn_context dup;
    if (rknn_dup_context(&ctx, &dup) == 0)
        rknn_destroy(dup);
    exercise(ctx);
    rknn_destroy(ctx);
    return 0;
}
