# CUDA backends of nattn (cutlass-fna, cutlass-fmha). Included by the top CMakeLists.txt right after
# the `nattn` target when NATTN_ENABLE_CUDA is ON; nothing here is read otherwise.
#
# Options:
#   NATTN_CUDA_ARCHS       compute capabilities to build for, e.g. "80;86;90" (default: the GPU
#                          present). 75, 80, 86, 89 build native code; 90 builds the SM80-level code
#                          for the H100/H200 (-gencode arch=compute_80,code=sm_90). PTX of the
#                          highest listed level is embedded too.
#   NATTN_CUDA_DTYPES      kernel dtypes to instantiate (default "f32;f16;bf16")
#   NATTN_CUDA_HEAD_DIMS   padded head dims to instantiate (default "32;64;128;256"); a problem of
#                          head dim D runs on the smallest instantiated one >= D.
#   NATTN_CUTLASS_INCLUDE  folder holding cute/ and cutlass/ (default: the pip package
#                          nvidia-cutlass==4.2.0.0, site-packages/cutlass_library/source/include)
cmake_minimum_required(VERSION 3.22)

# ---- architectures -----------------------------------------------------------------------------
set(NATTN_CUDA_ARCHS "" CACHE STRING "Compute capabilities to build (75;80;86;89;90); empty = the GPU present")
if(NATTN_CUDA_ARCHS STREQUAL "")
  find_program(NATTN_NVIDIA_SMI nvidia-smi)
  if(NATTN_NVIDIA_SMI)
    execute_process(COMMAND ${NATTN_NVIDIA_SMI} --query-gpu=compute_cap --format=csv,noheader
      OUTPUT_VARIABLE _nattn_caps RESULT_VARIABLE _nattn_smi_rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_nattn_smi_rc EQUAL 0 AND _nattn_caps)
      string(REPLACE "." "" _nattn_caps "${_nattn_caps}")
      string(REPLACE "\n" ";" _nattn_caps "${_nattn_caps}")
      list(REMOVE_DUPLICATES _nattn_caps)
      set(NATTN_CUDA_ARCHS "${_nattn_caps}")
    endif()
  endif()
  if(NATTN_CUDA_ARCHS STREQUAL "")
    message(FATAL_ERROR "nattn: NATTN_ENABLE_CUDA=ON but no GPU was found to pick the CUDA architectures. "
      "Set -DNATTN_CUDA_ARCHS=\"75;80;86;89;90\" (the full list) or the subset you need.")
  endif()
  message(STATUS "nattn: NATTN_CUDA_ARCHS not set; building for the GPU present: ${NATTN_CUDA_ARCHS}")
endif()

set(_nattn_gencode "")
set(_nattn_max_ptx 0)
set(_nattn_has_sm80 OFF)
foreach(_arch IN LISTS NATTN_CUDA_ARCHS)
  if(_arch STREQUAL "75" OR _arch STREQUAL "80" OR _arch STREQUAL "86" OR _arch STREQUAL "89")
    list(APPEND _nattn_gencode "-gencode=arch=compute_${_arch},code=sm_${_arch}")
    set(_ptx ${_arch})
  elseif(_arch STREQUAL "90" OR _arch STREQUAL "100" OR _arch STREQUAL "120")
    # The portable kernels are SM80-level code; compile them for the newer chip.
    list(APPEND _nattn_gencode "-gencode=arch=compute_80,code=sm_${_arch}")
    set(_ptx 80)
  else()
    message(FATAL_ERROR "nattn: unsupported entry '${_arch}' in NATTN_CUDA_ARCHS (allowed: 75;80;86;89;90;100;120)")
  endif()
  if(_ptx GREATER _nattn_max_ptx)
    set(_nattn_max_ptx ${_ptx})
  endif()
  if(NOT _arch STREQUAL "75")
    set(_nattn_has_sm80 ON)
  endif()
endforeach()
list(APPEND _nattn_gencode "-gencode=arch=compute_${_nattn_max_ptx},code=compute_${_nattn_max_ptx}")

# CMake's own architecture handling is off: the -gencode flags above say everything.
set(CMAKE_CUDA_ARCHITECTURES OFF)
enable_language(CUDA)
set(CMAKE_CUDA_ARCHITECTURES OFF)
find_package(CUDAToolkit REQUIRED)

# ---- CUTLASS / CuTe headers (pip package nvidia-cutlass==4.2.0.0; never committed) -------------
set(NATTN_CUTLASS_INCLUDE "" CACHE PATH "Folder holding cute/ and cutlass/ (CUTLASS 4.2 headers)")
if(NATTN_CUTLASS_INCLUDE STREQUAL "")
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))"
    OUTPUT_VARIABLE _nattn_cutlass_inc RESULT_VARIABLE _rc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(NOT _rc EQUAL 0 OR NOT EXISTS "${_nattn_cutlass_inc}/cute/arch/mma_sm80.hpp")
    message(FATAL_ERROR "nattn: CUTLASS headers not found. Install them with "
      "`${Python3_EXECUTABLE} -m pip install nvidia-cutlass==4.2.0.0` or set NATTN_CUTLASS_INCLUDE.")
  endif()
  set(NATTN_CUTLASS_INCLUDE "${_nattn_cutlass_inc}" CACHE PATH "Folder holding cute/ and cutlass/" FORCE)
endif()
message(STATUS "nattn: CUTLASS headers: ${NATTN_CUTLASS_INCLUDE}")

# ---- the kernel table: ONE list of instantiations (kind:dtype:head_dim[:q_tile_volume]) --------
# kind simt = fp32-accumulating SIMT kernel (every dtype, SM75+, 64 queries per CTA); mma = mma.sync
# m16n8k16 (fp16/bf16, SM80+) with 64 or 128 queries per CTA (the Q tile volume; a 128-query config
# without its entry runs as two 64-query halves). Each entry becomes one small translation unit.
set(NATTN_CUDA_DTYPES "f32;f16;bf16" CACHE STRING "Kernel dtypes to instantiate")
set(NATTN_CUDA_HEAD_DIMS "32;64;128;256" CACHE STRING "Padded head dims to instantiate")
set(NATTN_FNA_FWD_TABLE
  simt:f32:32 simt:f32:64 simt:f32:128 simt:f32:256
  simt:f16:32 simt:f16:64 simt:f16:128 simt:f16:256
  simt:bf16:32 simt:bf16:64 simt:bf16:128 simt:bf16:256
  mma:f16:32:64 mma:f16:64:64 mma:f16:128:64 mma:f16:256:64
  mma:bf16:32:64 mma:bf16:64:64 mma:bf16:128:64 mma:bf16:256:64
  mma:f16:32:128 mma:f16:64:128 mma:f16:128:128
  mma:bf16:32:128 mma:bf16:64:128 mma:bf16:128:128)

set(_nattn_gen_dir "${CMAKE_CURRENT_BINARY_DIR}/nattn_cuda_gen")
file(MAKE_DIRECTORY "${_nattn_gen_dir}")

# Helpers of the two tables below. Generated files are rewritten only when their text changes, so
# a reconfigure does not rebuild every kernel.
function(_nattn_write_if_changed file text)
  set(_old "")
  if(EXISTS "${file}")
    file(READ "${file}" _old)
  endif()
  if(NOT _old STREQUAL text)
    file(WRITE "${file}" "${text}")
  endif()
endfunction()

# Splits a table entry kind:dtype:head_dim[:extra]; sets _kind, _dtype, _hd, _extra (empty if
# absent), _ctype (the CUDA element type) and _enabled (the entry passes the dtype / head dim /
# architecture filters) in the caller.
function(_nattn_table_entry entry)
  string(REPLACE ":" ";" _parts "${entry}")
  list(GET _parts 0 _kind)
  list(GET _parts 1 _dtype)
  list(GET _parts 2 _hd)
  list(LENGTH _parts _n)
  set(_extra "")
  if(_n GREATER 3)
    list(GET _parts 3 _extra)
  endif()
  set(_enabled ON)
  if(NOT _dtype IN_LIST NATTN_CUDA_DTYPES OR NOT _hd IN_LIST NATTN_CUDA_HEAD_DIMS)
    set(_enabled OFF)
  endif()
  if(_kind STREQUAL "mma" AND NOT _nattn_has_sm80)
    set(_enabled OFF)
  endif()
  if(_dtype STREQUAL "f32")
    set(_ctype "float")
  elseif(_dtype STREQUAL "f16")
    set(_ctype "__half")
  else()
    set(_ctype "__nv_bfloat16")
  endif()
  foreach(_v _kind _dtype _hd _extra _ctype _enabled)
    set(${_v} "${${_v}}" PARENT_SCOPE)
  endforeach()
endfunction()

# ---- forward: one TU per entry of NATTN_FNA_FWD_TABLE (kind:dtype:head_dim[:queries per CTA]) ----
set(_nattn_table_inc "// Generated by src/cuda/cuda.cmake: the compiled forward kernels.\n")
set(_nattn_kernel_sources "")
foreach(_entry IN LISTS NATTN_FNA_FWD_TABLE)
  _nattn_table_entry("${_entry}")
  if(NOT _enabled)
    continue()
  endif()
  if(_extra STREQUAL "")
    set(_bm 64)
    set(_targs "${_hd}")
  else()
    set(_bm ${_extra})
    set(_targs "${_hd}, ${_bm}")
  endif()
  set(_name "fna_fwd_${_kind}_${_dtype}_hd${_hd}_q${_bm}")
  set(_file "${_nattn_gen_dir}/${_name}.cu")
  _nattn_write_if_changed("${_file}" "// Generated by src/cuda/cuda.cmake (table NATTN_FNA_FWD_TABLE): one kernel instantiation.\n#include \"cuda/sm80/fna_fwd/fna_fwd_${_kind}.cuh\"\nnamespace nattn::cuda::fna {\nvoid ${_name}(const FwdParams& p, dim3 grid, cudaStream_t s) { launch_${_kind}<${_ctype}, ${_targs}>(p, s, grid); }\n}  // namespace nattn::cuda::fna\n")
  list(APPEND _nattn_kernel_sources "${_file}")
  string(APPEND _nattn_table_inc "NATTN_FNA_FWD_KERNEL(${_kind}, ${_dtype}, ${_hd}, ${_bm})\n")
endforeach()
_nattn_write_if_changed("${_nattn_gen_dir}/fna_fwd_table.inc" "${_nattn_table_inc}")

# ---- the BACKWARD kernel table (src/cuda/sm80/fna_bwd): kind:dtype:head_dim --------------------
# Same kinds and filtering as the forward table. Each entry becomes one translation unit holding the
# dq and dkdv kernels of that (kind, dtype, head dim). Head dims above 128 are not instantiated:
# the dK/dV accumulators do not fit the register file (the host rejects them with a clear error).
set(NATTN_FNA_BWD_TABLE
  simt:f32:32 simt:f32:64 simt:f32:128
  simt:f16:32 simt:f16:64 simt:f16:128
  simt:bf16:32 simt:bf16:64 simt:bf16:128
  mma:f16:32 mma:f16:64 mma:f16:128
  mma:bf16:32 mma:bf16:64 mma:bf16:128)
set(_nattn_bwd_table_inc "// Generated by src/cuda/cuda.cmake: the compiled backward kernels.\n")
set(_nattn_bwd_kernel_sources "")
foreach(_entry IN LISTS NATTN_FNA_BWD_TABLE)
  _nattn_table_entry("${_entry}")
  if(NOT _enabled)
    continue()
  endif()
  set(_name "fna_bwd_${_kind}_${_dtype}_hd${_hd}")
  set(_file "${_nattn_gen_dir}/${_name}.cu")
  _nattn_write_if_changed("${_file}" "// Generated by src/cuda/cuda.cmake (table NATTN_FNA_BWD_TABLE): one kernel instantiation.\n#include \"cuda/sm80/fna_bwd/bwd_${_kind}.cuh\"\nnamespace nattn::cuda::fna_bwd {\nvoid ${_name}(const BwdParams& p, bool dkdv, int stages, dim3 grid, cudaStream_t s) { launch_${_kind}<${_ctype}, ${_hd}>(p, dkdv, stages, grid, s); }\n}  // namespace nattn::cuda::fna_bwd\n")
  list(APPEND _nattn_bwd_kernel_sources "${_file}")
  string(APPEND _nattn_bwd_table_inc "NATTN_FNA_BWD_KERNEL(${_kind}, ${_dtype}, ${_hd})\n")
endforeach()
_nattn_write_if_changed("${_nattn_gen_dir}/fna_bwd_table.inc" "${_nattn_bwd_table_inc}")

option(NATTN_CUDA_RESOURCE_USAGE "Print registers, shared memory and spills of every kernel (-Xptxas -v)" OFF)

# ---- targets -----------------------------------------------------------------------------------
# Device code is an object library (no host warning flags: nvcc takes other ones); its objects and
# the host-side backend sources go into `nattn`.
add_library(nattn_cuda_kernels OBJECT
  ${_nattn_kernel_sources}
  ${PROJECT_SOURCE_DIR}/src/cuda/sm80/fna_fwd/aux_kernels.cu)
target_include_directories(nattn_cuda_kernels PRIVATE
  ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src ${NATTN_CUTLASS_INCLUDE})
target_compile_options(nattn_cuda_kernels PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-DNDEBUG --expt-relaxed-constexpr -std=c++17 ${_nattn_gencode}>)
if(NATTN_CUDA_RESOURCE_USAGE)
  target_compile_options(nattn_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v>)
endif()
set_target_properties(nattn_cuda_kernels PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_STANDARD 17
  CUDA_ARCHITECTURES OFF)

target_sources(nattn PRIVATE
  $<TARGET_OBJECTS:nattn_cuda_kernels>
  ${PROJECT_SOURCE_DIR}/src/cuda/common/device.cpp
  ${PROJECT_SOURCE_DIR}/src/cuda/cuda_backend.cpp
  ${PROJECT_SOURCE_DIR}/src/cuda/sm80/fna_fwd/fna_fwd_dispatch.cpp)
target_include_directories(nattn PRIVATE "${_nattn_gen_dir}")
target_compile_definitions(nattn PRIVATE NATTN_WITH_CUDA=1)
set_target_properties(nattn PROPERTIES CUDA_ARCHITECTURES OFF)
target_link_libraries(nattn PRIVATE CUDA::cudart)


# Backward kernels (table NATTN_FNA_BWD_TABLE above) and their host side.
target_sources(nattn_cuda_kernels PRIVATE
  ${_nattn_bwd_kernel_sources}
  ${PROJECT_SOURCE_DIR}/src/cuda/sm80/fna_bwd/bwd_aux.cu)
target_sources(nattn PRIVATE ${PROJECT_SOURCE_DIR}/src/cuda/sm80/fna_bwd/fna_bwd_dispatch.cpp)

# Token permutation kernels (src/cuda/common/token_permute.cu): plain copies, every architecture.
target_sources(nattn_cuda_kernels PRIVATE ${PROJECT_SOURCE_DIR}/src/cuda/common/token_permute.cu)

# ================================================================================================
# Hopper forward (src/cuda/sm90/fmha_fwd, backends `hopper-fmha` and `hopper-fna`): one sm_90a kernel
# template (wgmma, setmaxnreg) in FMHA and NA modes, built when NATTN_CUDA_ARCHS contains 90. Table
# dtype:head_dim, filtered by NATTN_CUDA_DTYPES / NATTN_CUDA_HEAD_DIMS; per entry one generated TU
# per mode (FMHA and NA), listed in sm90_fmha_fwd_table.inc / sm90_na_fwd_table.inc (always written, empty
# without 90) for the host dispatch.
set(NATTN_SM90_FWD_TABLE f16:32 f16:64 f16:128 f16:256 bf16:32 bf16:64 bf16:128 bf16:256)
set(_nattn_sm90_inc_fmha "// Generated by src/cuda/cuda.cmake: the compiled Hopper FMHA forward kernels.\n")
set(_nattn_sm90_inc_na "// Generated by src/cuda/cuda.cmake: the compiled Hopper NA forward kernels.\n")
set(_nattn_sm90_sources "")
if("90" IN_LIST NATTN_CUDA_ARCHS)
  foreach(_entry IN LISTS NATTN_SM90_FWD_TABLE)
    string(REPLACE ":" ";" _parts "${_entry}")
    list(GET _parts 0 _dtype)
    list(GET _parts 1 _hd)
    if(NOT _dtype IN_LIST NATTN_CUDA_DTYPES OR NOT _hd IN_LIST NATTN_CUDA_HEAD_DIMS)
      continue()
    endif()
    if(_dtype STREQUAL "f16")
      set(_ctype "cutlass::half_t")
    else()
      set(_ctype "cutlass::bfloat16_t")
    endif()
    set(_head "// Generated by src/cuda/cuda.cmake (table NATTN_SM90_FWD_TABLE): one kernel instantiation.\n#include \"cuda/sm90/fmha_fwd/fmha_fwd_launch.cuh\"\nnamespace nattn::cuda::sm90 {\n")
    set(_tail "}  // namespace nattn::cuda::sm90\n")
    set(_name "fmha_fwd_sm90_${_dtype}_hd${_hd}")
    _nattn_write_if_changed("${_nattn_gen_dir}/${_name}.cu" "${_head}void ${_name}(const FmhaFwdParams& p, cudaStream_t s) { launch_fmha_fwd_sm90<${_ctype}, ${_hd}>(p, s); }\n${_tail}")
    list(APPEND _nattn_sm90_sources "${_nattn_gen_dir}/${_name}.cu")
    string(APPEND _nattn_sm90_inc_fmha "NATTN_SM90_FMHA_FWD_KERNEL(${_dtype}, ${_hd})\n")
    set(_name "na_fwd_sm90_${_dtype}_hd${_hd}")
    _nattn_write_if_changed("${_nattn_gen_dir}/${_name}.cu" "${_head}void ${_name}(const FmhaFwdParams& p, const NaGeom& g, cudaStream_t s) { launch_na_fwd_sm90<${_ctype}, ${_hd}>(p, g, s); }\n${_tail}")
    list(APPEND _nattn_sm90_sources "${_nattn_gen_dir}/${_name}.cu")
    string(APPEND _nattn_sm90_inc_na "NATTN_SM90_NA_FWD_KERNEL(${_dtype}, ${_hd})\n")
  endforeach()
endif()
_nattn_write_if_changed("${_nattn_gen_dir}/sm90_fmha_fwd_table.inc" "${_nattn_sm90_inc_fmha}")
_nattn_write_if_changed("${_nattn_gen_dir}/sm90_na_fwd_table.inc" "${_nattn_sm90_inc_na}")
if(_nattn_sm90_sources)
  add_library(nattn_cuda_sm90 OBJECT ${_nattn_sm90_sources})
  target_include_directories(nattn_cuda_sm90 PRIVATE
    ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/src ${NATTN_CUTLASS_INCLUDE})
  target_compile_options(nattn_cuda_sm90 PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-DNDEBUG --expt-relaxed-constexpr -std=c++17 -gencode=arch=compute_90a,code=sm_90a>)
  if(NATTN_CUDA_RESOURCE_USAGE)
    target_compile_options(nattn_cuda_sm90 PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v>)
  endif()
  set_target_properties(nattn_cuda_sm90 PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_STANDARD 17
    CUDA_ARCHITECTURES OFF)
  target_sources(nattn PRIVATE $<TARGET_OBJECTS:nattn_cuda_sm90>)
endif()
target_sources(nattn PRIVATE ${PROJECT_SOURCE_DIR}/src/cuda/sm90/fmha_fwd/fmha_fwd_sm90.cpp
  ${PROJECT_SOURCE_DIR}/src/cuda/sm90/fmha_fwd/na_fwd_sm90.cpp)
# hopper-fna's LSE merge with the additional-KV part: a plain CUDA kernel, every architecture.
target_sources(nattn_cuda_kernels PRIVATE ${PROJECT_SOURCE_DIR}/src/cuda/sm90/fmha_fwd/attn_merge.cu)
# ============================================================= end of the Hopper forward kernels
