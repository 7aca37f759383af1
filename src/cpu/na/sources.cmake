# The fast `cpu` backend (src/cpu/na/README.md). The kernels are compiled three times, for AVX-512,
# AVX2 and the baseline ISA, and chosen at run time (driver.cpp); only those files get ISA flags.
list(APPEND NATTN_SOURCES
  src/cpu/na/cpu_backend.cpp
  src/cpu/na/plan.cpp
  src/cpu/na/driver.cpp
  src/cpu/na/isa_avx512.cpp
  src/cpu/na/isa_avx2.cpp
  src/cpu/na/isa_generic.cpp)

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  # -fno-tree-loop-distribute-patterns: short zero-fill loops stay vector stores instead of
  # becoming memset calls (measurably slower for the 64-byte paddings of packed lines)
  set_source_files_properties(src/cpu/na/isa_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mfma;-mf16c;-fno-tree-loop-distribute-patterns")
  set_source_files_properties(src/cpu/na/isa_avx2.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-fno-tree-loop-distribute-patterns")
  set_source_files_properties(src/cpu/na/driver.cpp PROPERTIES COMPILE_DEFINITIONS NATTN_CPU_X86_KERNELS)
endif()
