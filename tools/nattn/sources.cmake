add_executable(nattn_cli
  tools/nattn/main.cpp
  tools/nattn/cuda_device.cpp
  tools/nattn/verify.cpp)
include(tools/nattn/profile/sources.cmake)
set_target_properties(nattn_cli PROPERTIES OUTPUT_NAME nattn)
target_include_directories(nattn_cli PRIVATE ${PROJECT_SOURCE_DIR}/tools ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(nattn_cli PRIVATE nattn nattn_golden nattn_warnings)
if(NATTN_ENABLE_CUDA)
  # `nattn verify --backend cutlass-*` stages the golden tensors on the GPU, and `nattn profile`
  # allocates its tensors there (tools/nattn/cuda_device.h).
  target_compile_definitions(nattn_cli PRIVATE NATTN_WITH_CUDA=1)
  target_link_libraries(nattn_cli PRIVATE CUDA::cudart)
endif()
