# Benchmarks (not tests): nattn_bench_cpu times the cpu backend against the reference and against the
# FP32 FMA peak it measures itself (bench/README.md).
add_executable(nattn_bench_cpu bench/bench_cpu.cpp bench/fma_peak.cpp)
target_include_directories(nattn_bench_cpu PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/bench)
target_link_libraries(nattn_bench_cpu PRIVATE nattn OpenMP::OpenMP_CXX nattn_warnings)
