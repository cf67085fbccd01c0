void test_shape(void); void test_shape(void) {}
