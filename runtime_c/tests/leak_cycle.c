/*
 * Leak check: N init/inputs_set/run/outputs_get/release/destroy cycles (plus a dup_context and a
 * context-free create_mem2/destroy_mem each time) in one process. Prints the open fd count and VmRSS
 * after a warm-up and at the end as "fds_before fds_after rss_kb_before rss_kb_after"; exits 1 if fds
 * changed or RSS grew by more than 4 MiB.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rknn_api.h"
#include "test_models.h"

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

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

static int cycle(const uint8_t *buf, size_t n)
{
    rknn_context ctx, dup;
    if (rknn_init(&ctx, (void *)buf, (uint32_t)n, RKNN_FLAG_COLLECT_PERF_MASK, NULL) != 0)
        return -1;
    if (rknn_dup_context(&ctx, &dup) != 0)
        return -1;
    float x[12];
    for (int i = 0; i < 12; i++)
        x[i] = (float)i;
    rknn_input in;
    memset(&in, 0, sizeof(in));
    in.buf = x;
    in.size = sizeof(x);
    in.type = RKNN_TENSOR_FLOAT32;
    in.fmt = RKNN_TENSOR_NHWC;
    rknn_output o;
    memset(&o, 0, sizeof(o));
    o.want_float = 1;
    rknn_perf_detail pd;
    if (rknn_inputs_set(ctx, 1, &in) || rknn_run(ctx, NULL) || rknn_outputs_get(ctx, 1, &o, NULL) ||
        rknn_query(ctx, RKNN_QUERY_PERF_DETAIL, &pd, sizeof(pd)) || rknn_outputs_release(ctx, 1, &o))
        return -1;
    rknn_output o2;
    memset(&o2, 0, sizeof(o2));
    if (rknn_inputs_set(dup, 1, &in) || rknn_run(dup, NULL) || rknn_outputs_get(dup, 1, &o2, NULL))
        return -1; /* not released on purpose: rknn_destroy frees it */
    rknn_tensor_mem *m = rknn_create_mem2(0, 1 << 16, RKNN_MEM_FLAG_ALLOC_NO_CONTEXT);
    if (m == NULL || rknn_destroy_mem(0, m) != 0)
        return -1;
    if (rknn_destroy(dup) || rknn_destroy(ctx))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    int n_cycles = argc > 1 ? atoi(argv[1]) : 10000;
    size_t n;
    uint8_t *buf = test_model_a("rk3588", &n, 1);
    for (int i = 0; i < 300; i++)
        if (cycle(buf, n) != 0) {
            fprintf(stderr, "warm-up cycle %d failed\n", i);
            return 2;
        }
    int fd0 = count_fds();
    long rss0 = rss_kb();
    for (int i = 0; i < n_cycles; i++)
        if (cycle(buf, n) != 0) {
            fprintf(stderr, "cycle %d failed\n", i);
            return 2;
        }
    int fd1 = count_fds();
    long rss1 = rss_kb();
    free(buf);
    printf("%d %d %ld %ld\n", fd0, fd1, rss0, rss1);
    return (fd0 != fd1 || rss1 - rss0 > 4096) ? 1 : 0;
}
