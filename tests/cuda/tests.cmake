# GPU tests of the CUDA backends (ctest label `cuda`), included by tests/CMakeLists.txt when
# NATTN_ENABLE_CUDA is ON. They need a GPU: run them with scripts/test_gpu.sh (or `ctest -L cuda`).
add_executable(test_cuda_forward ${PROJECT_SOURCE_DIR}/tests/cuda/test_cuda_forward.cpp)
target_include_directories(test_cuda_forward PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_cuda_forward PRIVATE nattn nattn_golden GTest::gtest GTest::gtest_main CUDA::cudart
  nattn_warnings)
target_compile_definitions(test_cuda_forward PRIVATE NATTN_GOLDEN_DIR="${NATTN_GOLDEN_DIR}")
add_test(NAME test_cuda_forward COMMAND test_cuda_forward)
set_tests_properties(test_cuda_forward PROPERTIES LABELS cuda)

add_executable(bench_cuda_fna ${PROJECT_SOURCE_DIR}/bench/cuda/bench_cuda_fna.cpp)
target_include_directories(bench_cuda_fna PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(bench_cuda_fna PRIVATE nattn CUDA::cudart nattn_warnings)

add_executable(test_cuda_backward ${PROJECT_SOURCE_DIR}/tests/cuda/test_cuda_backward.cpp)
target_include_directories(test_cuda_backward PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_cuda_backward PRIVATE nattn nattn_golden GTest::gtest GTest::gtest_main CUDA::cudart
  nattn_warnings)
target_compile_definitions(test_cuda_backward PRIVATE NATTN_GOLDEN_DIR="${NATTN_GOLDEN_DIR}")
add_test(NAME test_cuda_backward COMMAND test_cuda_backward)
set_tests_properties(test_cuda_backward PROPERTIES LABELS cuda)

add_executable(bench_cuda_bwd ${PROJECT_SOURCE_DIR}/bench/cuda/bench_cuda_bwd.cpp)
target_include_directories(bench_cuda_bwd PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(bench_cuda_bwd PRIVATE nattn CUDA::cudart nattn_warnings)

# GPU token permutation vs the CPU implementation, and its bandwidth benchmark.
add_executable(test_cuda_token_permute ${PROJECT_SOURCE_DIR}/tests/cuda/test_cuda_token_permute.cpp)
target_include_directories(test_cuda_token_permute PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_cuda_token_permute PRIVATE nattn GTest::gtest GTest::gtest_main CUDA::cudart nattn_warnings)
add_test(NAME test_cuda_token_permute COMMAND test_cuda_token_permute)
set_tests_properties(test_cuda_token_permute PROPERTIES LABELS cuda)
add_executable(bench_token_permute ${PROJECT_SOURCE_DIR}/bench/cuda/bench_token_permute.cpp)
target_link_libraries(bench_token_permute PRIVATE nattn CUDA::cudart nattn_warnings)

# Sub-domain NA (multi-device halos) on cutlass-fna vs the reference, and slabs reassembled.
add_executable(test_cuda_subdomain ${PROJECT_SOURCE_DIR}/tests/cuda/test_cuda_subdomain.cpp)
target_include_directories(test_cuda_subdomain PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_cuda_subdomain PRIVATE nattn GTest::gtest GTest::gtest_main CUDA::cudart nattn_warnings)
add_test(NAME test_cuda_subdomain COMMAND test_cuda_subdomain)
set_tests_properties(test_cuda_subdomain PROPERTIES LABELS cuda)

# ================================================================================================
# Hopper (sm_90a) FMHA forward (src/cuda/sm90/fmha_fwd): test vs the reference (skips without a
# compute capability 9.0 GPU or when no instantiation is compiled) and its benchmark.
add_executable(test_hopper_fmha ${PROJECT_SOURCE_DIR}/tests/cuda/test_hopper_fmha.cpp)
target_include_directories(test_hopper_fmha PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_hopper_fmha PRIVATE nattn GTest::gtest GTest::gtest_main CUDA::cudart nattn_warnings)
add_test(NAME test_hopper_fmha COMMAND test_hopper_fmha)
set_tests_properties(test_hopper_fmha PROPERTIES LABELS cuda)
add_executable(bench_hopper_fmha ${PROJECT_SOURCE_DIR}/bench/cuda/bench_hopper_fmha.cpp)
target_include_directories(bench_hopper_fmha PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(bench_hopper_fmha PRIVATE nattn CUDA::cudart nattn_warnings)
# ================================================================ end of the Hopper FMHA forward

# ================================================================================================
# Hopper (sm_90a) NA forward (hopper-fna, src/cuda/sm90/fmha_fwd/na_fwd_sm90.cpp): test vs the
# reference and the golden cases (skips without a compute capability 9.0 GPU or when no
# instantiation is compiled) and its benchmark (vs cutlass-fna in the same process).
add_executable(test_hopper_fna ${PROJECT_SOURCE_DIR}/tests/cuda/test_hopper_fna.cpp
  ${PROJECT_SOURCE_DIR}/tests/cuda/test_hopper_fna_walk.cpp)
target_include_directories(test_hopper_fna PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
target_link_libraries(test_hopper_fna PRIVATE nattn nattn_golden GTest::gtest GTest::gtest_main CUDA::cudart
  nattn_warnings)
target_compile_definitions(test_hopper_fna PRIVATE NATTN_GOLDEN_DIR="${NATTN_GOLDEN_DIR}")
add_test(NAME test_hopper_fna COMMAND test_hopper_fna)
set_tests_properties(test_hopper_fna PROPERTIES LABELS cuda)
add_executable(bench_hopper_fna ${PROJECT_SOURCE_DIR}/bench/cuda/bench_hopper_fna.cpp)
target_include_directories(bench_hopper_fna PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(bench_hopper_fna PRIVATE nattn CUDA::cudart nattn_warnings)
# ================================================================ end of the Hopper NA forward

# Host checks of the portable kernels' element-mask bit words (no GPU: not labelled `cuda`, so CI
# runs them).
add_executable(test_tile_mask ${PROJECT_SOURCE_DIR}/tests/cuda/test_tile_mask.cpp)
target_include_directories(test_tile_mask PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(test_tile_mask PRIVATE GTest::gtest GTest::gtest_main CUDA::cudart nattn_warnings)
add_test(NAME test_tile_mask COMMAND test_tile_mask)

# Host check of the forward launch's walk bound (which tensor-core kernel lists the whole NA walk);
# no GPU: not labelled `cuda`, so CI runs it.
add_executable(test_fwd_walk_bound ${PROJECT_SOURCE_DIR}/tests/cuda/test_fwd_walk_bound.cpp)
target_include_directories(test_fwd_walk_bound PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(test_fwd_walk_bound PRIVATE GTest::gtest GTest::gtest_main CUDA::cudart nattn_warnings)
add_test(NAME test_fwd_walk_bound COMMAND test_fwd_walk_bound)
