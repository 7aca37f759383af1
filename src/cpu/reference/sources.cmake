list(APPEND NATTN_SOURCES
  src/cpu/reference/reference_backend.cpp
  src/cpu/reference/reference_engine.cpp)
