/* The int8 element-wise fast paths against their portable forms, bit for bit. */
#include "harness.h"
#include "ops/act_lut.h"

/* Every form of sim_lut_i8 the CPU runs against the portable loop: random tables, every length up to
 * 300 (the masked tails of the 64-code vectors), misaligned, in place. */
static void lut_isa_case(int isa)
{
    int8_t tab[256], x[1300], a[1300], b[1300];
    int same = 1;
    for (int rep = 0; rep < 4; rep++) {
        for (int i = 0; i < 256; i++) tab[i] = (int8_t)(int)(tg_randf() * 128.0f);
        for (int i = 0; i < 1300; i++) x[i] = (int8_t)(i < 256 ? i - 128 : (int)(tg_randf() * 128.0f));
        for (size_t n = 0; n <= 300; n++) {
            memset(a, 0x55, sizeof a);
            memset(b, 0x55, sizeof b);
            sim_lut_i8_isa(isa, tab, x + 1 + rep, a + 3, n);
            sim_lut_i8_c(tab, x + 1 + rep, b + 3, n);
            same &= memcmp(a, b, sizeof a) == 0;
        }
        sim_lut_i8_isa(isa, tab, x, a, 1300);
        for (int i = 0; i < 256; i++) same &= a[i] == tab[i];
        sim_lut_i8_c(tab, x, b, 1300);
        memcpy(a, x, sizeof a);
        sim_lut_i8_isa(isa, tab, a, a, 1300);
        same &= memcmp(a, b, sizeof a) == 0;
    }
    char what[96];
    snprintf(what, sizeof what, "sim_lut_i8 form %d vs the portable loop (lengths 0-300, 1300, in place)", isa);
    tg_check_true(what, same);
}

void test_i8_fast(void)
{
    int best = sim_lut_i8_best_isa();
    for (int isa = SIM_LUT_ISA_C; isa <= best; isa++) lut_isa_case(isa);
}
