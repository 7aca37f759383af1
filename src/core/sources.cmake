list(APPEND NATTN_SOURCES
  src/core/tensor.cpp
  src/core/problem.cpp
  src/core/log.cpp
  src/core/validation.cpp
  src/core/capabilities.cpp
  src/core/configs.cpp
  src/core/registry.cpp
  src/core/ops.cpp)
