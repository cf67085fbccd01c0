void test_norm(void); void test_norm(void) {}
