add_executable(nattn_bench_cpu bench/bench_cpu.cpp)
target_include_directories(nattn_bench_cpu PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(nattn_bench_cpu PRIVATE nattn OpenMP::OpenMP_CXX nattn_warnings)
