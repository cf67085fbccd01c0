void test_pool(void); void test_pool(void) {}
