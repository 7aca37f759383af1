list(APPEND NATTN_SOURCES
  src/cpu/na/cpu_backend.cpp)
