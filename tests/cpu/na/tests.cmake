nattn_add_test(test_cpu_golden cpu cpu/na/test_cpu_golden.cpp)
nattn_add_test(test_cpu_sweep cpu cpu/na/test_cpu_sweep.cpp)
nattn_add_test(test_cpu_forward_large cpu cpu/na/test_cpu_forward_large.cpp)
