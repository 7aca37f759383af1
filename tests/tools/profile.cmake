nattn_add_test(test_cli_profile tools tools/test_cli_profile.cpp)
