nattn_add_test(test_cli_verify tools tools/test_cli_verify.cpp)
