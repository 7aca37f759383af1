nattn_add_test(test_cli_profile tools tools/test_cli_profile.cpp)
# The test runs the built CLI; what it expects of `--device cuda` depends on whether that CLI has CUDA.
target_compile_definitions(test_cli_profile PRIVATE NATTN_TEST_CLI_CUDA=$<BOOL:${NATTN_ENABLE_CUDA}>)
if(TARGET nattn_cli)
  add_dependencies(test_cli_profile nattn_cli)
endif()

if(NATTN_ENABLE_CUDA)
  # `nattn profile` on the GPU (ctest label cuda: needs a GPU, skips without one).
  nattn_add_test(test_cli_profile_cuda cuda tools/test_cli_profile_cuda.cpp)
  target_link_libraries(test_cli_profile_cuda PRIVATE CUDA::cudart)
  if(TARGET nattn_cli)
    add_dependencies(test_cli_profile_cuda nattn_cli)
  endif()
endif()
