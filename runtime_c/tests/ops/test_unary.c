void test_unary(void); void test_unary(void) {}
