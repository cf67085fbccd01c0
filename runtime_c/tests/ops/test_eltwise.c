void test_eltwise(void); void test_eltwise(void) {}
