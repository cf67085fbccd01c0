/* Kernel unit tests: every op family against reference loops. Exit status 1 on any failure. */
#include "harness.h"

void test_numeric(void);
void test_conv(void);
void test_gemm(void);
void test_eltwise(void);
void test_unary(void);
void test_pool(void);
void test_norm(void);
void test_shape(void);
void test_int8(void);
void test_act_lut(void);
void test_sigmoid_fast(void);
void test_act_lut_rows(void);
void test_act_tile_sweep(void);
void test_requant_cols(void);
void test_gemm_i8_percol(void);
void test_gemm_i8_isa(void);
void test_act_trans(void);
void test_act_trans_cols(void);
void test_graph_fast(void);
void test_gemm_avx512(void);
void test_i8_fast(void);

int main(void)
{
    test_numeric();
    test_conv();
    test_gemm();
    test_eltwise();
    test_unary();
    test_pool();
    test_norm();
    test_shape();
    test_int8();
    test_act_lut();
    test_sigmoid_fast();
    test_act_lut_rows();
    test_act_tile_sweep();
    test_requant_cols();
    test_gemm_i8_percol();
    test_gemm_i8_isa();
    test_act_trans();
    test_act_trans_cols();
    test_graph_fast();
    test_gemm_avx512();
    test_i8_fast();
    printf("%d checks, %d failures\n", tg_checks, tg_failures);
    return tg_failures ? 1 : 0;
}
