nattn_add_test(test_semantics core core/test_semantics.cpp)
nattn_add_test(test_permutation_math core core/test_permutation_math.cpp)
nattn_add_test(test_validation core core/test_validation.cpp)
nattn_add_test(test_registry core core/test_registry.cpp)
