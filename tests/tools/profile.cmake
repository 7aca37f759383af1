nattn_add_test(test_cli_profile tools tools/test_cli_profile.cpp)
# The test runs the built CLI.
if(TARGET nattn_cli)
  add_dependencies(test_cli_profile nattn_cli)
endif()
