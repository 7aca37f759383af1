nattn_add_test(test_reference_golden cpu cpu/reference/test_reference_golden.cpp)
nattn_add_test(test_reference_na cpu cpu/reference/test_reference_na.cpp)
nattn_add_test(test_reference_fmha cpu cpu/reference/test_reference_fmha.cpp)
nattn_add_test(test_reference_fp64 cpu cpu/reference/test_reference_fp64.cpp)
