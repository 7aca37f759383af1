nattn_add_test(test_cli_verify tools tools/test_cli_verify.cpp)
# The test runs the CLI, so build it first.
add_dependencies(test_cli_verify nattn_cli)
