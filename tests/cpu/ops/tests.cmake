nattn_add_test(test_merge cpu cpu/ops/test_merge.cpp)
nattn_add_test(test_token_permute cpu cpu/ops/test_token_permute.cpp)
