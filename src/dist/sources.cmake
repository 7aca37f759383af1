# Multi-GPU NA (src/dist, issue 6). Included by the top CMakeLists.txt after the `nattn` target and
# src/cuda/cuda.cmake. The halo plan (host-only, no NCCL) is always part of `nattn`; with
# NATTN_ENABLE_NCCL=ON (requires NATTN_ENABLE_CUDA) the NCCL ops and their pack kernels are added
# and NATTN_WITH_NCCL is defined.
#
# NCCL is searched in NCCL_ROOT (cache or environment), CUDAToolkit's include/lib folders, then the
# Python wheel folder nvidia/nccl of python3's site-packages (PyTorch's NCCL); a libnccl.so.2 without
# the unversioned symlink is accepted. Results: NATTN_NCCL_INCLUDE_DIR, NATTN_NCCL_LIBRARY.
option(NATTN_ENABLE_NCCL "Build multi-GPU NA over NCCL (src/dist; requires NATTN_ENABLE_CUDA)" OFF)

target_sources(nattn PRIVATE ${PROJECT_SOURCE_DIR}/src/dist/halo_plan.cpp)

if(NATTN_ENABLE_NCCL)
  if(NOT NATTN_ENABLE_CUDA)
    message(FATAL_ERROR "nattn: NATTN_ENABLE_NCCL=ON requires NATTN_ENABLE_CUDA=ON")
  endif()
  set(NCCL_ROOT "$ENV{NCCL_ROOT}" CACHE PATH "NCCL installation (include/nccl.h, lib/libnccl.so[.2])")
  set(_nattn_nccl_roots "")
  if(NCCL_ROOT)
    list(APPEND _nattn_nccl_roots "${NCCL_ROOT}")
  endif()
  get_filename_component(_nattn_cuda_root "${CUDAToolkit_LIBRARY_DIR}" DIRECTORY)
  list(APPEND _nattn_nccl_roots ${CUDAToolkit_TARGET_DIR} ${_nattn_cuda_root})
  find_package(Python3 COMPONENTS Interpreter QUIET)
  if(Python3_Interpreter_FOUND)
    execute_process(COMMAND ${Python3_EXECUTABLE} -c
      "import os, site, sysconfig; p = [sysconfig.get_paths()[k] for k in ('purelib', 'platlib')]; p += site.getsitepackages() if hasattr(site, 'getsitepackages') else []; print(';'.join(os.path.join(x, 'nvidia', 'nccl') for x in p))"
      OUTPUT_VARIABLE _nattn_wheel_roots OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    list(APPEND _nattn_nccl_roots ${_nattn_wheel_roots})
  endif()
  find_path(NATTN_NCCL_INCLUDE_DIR nccl.h HINTS ${_nattn_nccl_roots} ${CUDAToolkit_INCLUDE_DIRS}
    PATH_SUFFIXES include NO_DEFAULT_PATH)
  find_path(NATTN_NCCL_INCLUDE_DIR nccl.h)
  find_library(NATTN_NCCL_LIBRARY NAMES nccl libnccl.so.2 HINTS ${_nattn_nccl_roots} ${CUDAToolkit_LIBRARY_DIR}
    PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  find_library(NATTN_NCCL_LIBRARY NAMES nccl libnccl.so.2)
  if(NOT NATTN_NCCL_INCLUDE_DIR OR NOT NATTN_NCCL_LIBRARY)
    message(FATAL_ERROR "nattn: NATTN_ENABLE_NCCL=ON but NCCL was not found (nccl.h: ${NATTN_NCCL_INCLUDE_DIR}, "
      "libnccl: ${NATTN_NCCL_LIBRARY}). Set -DNCCL_ROOT=<folder with include/nccl.h and lib/libnccl.so*>, e.g. "
      "<site-packages>/nvidia/nccl of PyTorch's environment.")
  endif()
  file(STRINGS "${NATTN_NCCL_INCLUDE_DIR}/nccl.h" _nattn_nccl_ver REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
  string(REGEX REPLACE "#define NCCL_[A-Z]+ +" "" _nattn_nccl_ver "${_nattn_nccl_ver}")
  string(REPLACE ";" "." _nattn_nccl_ver "${_nattn_nccl_ver}")
  message(STATUS "nattn: NCCL ${_nattn_nccl_ver}: ${NATTN_NCCL_INCLUDE_DIR}, ${NATTN_NCCL_LIBRARY}")

  target_sources(nattn_cuda_kernels PRIVATE ${PROJECT_SOURCE_DIR}/src/dist/halo_kernels.cu)
  target_sources(nattn PRIVATE ${PROJECT_SOURCE_DIR}/src/dist/nccl_na.cpp)
  target_include_directories(nattn SYSTEM PRIVATE ${NATTN_NCCL_INCLUDE_DIR})
  target_link_libraries(nattn PRIVATE ${NATTN_NCCL_LIBRARY})
  target_compile_definitions(nattn PRIVATE NATTN_WITH_NCCL=1)
endif()
