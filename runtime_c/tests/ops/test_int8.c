void test_int8(void); void test_int8(void) {}
