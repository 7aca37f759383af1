# Multi-GPU NA (src/dist): the halo plan on the CPU (always), and with NATTN_ENABLE_NCCL the sharded
# forward/backward over NCCL against single-GPU cutlass-fna (one process drives every visible GPU;
# skips below 2 GPUs) and its benchmark. ctest label `dist`.
nattn_add_test(test_halo_plan dist dist/test_halo_plan.cpp)

if(NATTN_ENABLE_NCCL)
  add_executable(test_nccl_sharded ${PROJECT_SOURCE_DIR}/tests/dist/test_nccl_sharded.cpp)
  target_include_directories(test_nccl_sharded PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  target_include_directories(test_nccl_sharded SYSTEM PRIVATE ${NATTN_NCCL_INCLUDE_DIR})
  target_link_libraries(test_nccl_sharded PRIVATE nattn GTest::gtest GTest::gtest_main CUDA::cudart
    ${NATTN_NCCL_LIBRARY} Threads::Threads nattn_warnings)
  add_test(NAME test_nccl_sharded COMMAND test_nccl_sharded)
  set_tests_properties(test_nccl_sharded PROPERTIES LABELS dist TIMEOUT 900)

  add_executable(bench_nccl_na ${PROJECT_SOURCE_DIR}/bench/dist/bench_nccl_na.cpp)
  target_include_directories(bench_nccl_na PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_include_directories(bench_nccl_na SYSTEM PRIVATE ${NATTN_NCCL_INCLUDE_DIR})
  target_link_libraries(bench_nccl_na PRIVATE nattn CUDA::cudart ${NATTN_NCCL_LIBRARY} Threads::Threads
    nattn_warnings)
endif()
