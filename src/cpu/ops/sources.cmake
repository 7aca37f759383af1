# CPU implementations of the device-dispatched ops (merge_attentions, token permutation).
list(APPEND NATTN_SOURCES
  src/cpu/ops/merge.cpp
  src/cpu/ops/token_permute.cpp)
