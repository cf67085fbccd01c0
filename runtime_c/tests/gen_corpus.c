/* Writes the test models (tests/test_models.h) as fuzz seeds into the directory given as argv[1]. */
#include <stdio.h>
#include <stdlib.h>

#include "test_models.h"

static int save(const char *dir, const char *name, uint8_t *buf, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t w = fwrite(buf, 1, n, f);
    fclose(f);
    free(buf);
    return w == n ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR\n");
        return 2;
    }
    size_t n = 0;
    int rc = 0;
    uint8_t *b = test_model_a("rk3588", &n, 0);
    rc |= save(argv[1], "model_a_rk3588.rknn", b, n);
    b = test_model_a("rk3566", &n, 1);
    rc |= save(argv[1], "model_a_rk3566_crc.rknn", b, n);
    b = test_model_b(&n);
    rc |= save(argv[1], "model_b_int8.rknn", b, n);
    b = test_model_c(&n);
    rc |= save(argv[1], "model_c_fp16.rknn", b, n);
    return rc ? 1 : 0;
}
