// The operations. Every op validates its arguments (throwing ValueError / NotImplementedError with
// the argument, its value and what is allowed), selects a backend (or uses the one named in
// RunOptions), and writes into caller-provided outputs. Outputs are never allocated here; some
// CUDA paths take stream-ordered scratch memory for the duration of the call (cudaMallocAsync,
// freed on the same stream): the cutlass backward's delta and, with deterministic = false, its
// fp32 dQ accumulator (B x tokens x H x head dim), and hopper-fna's permuted copies.
//
// Layout is heads-last: Q [B, *S, H, D], K [B, *S, Hkv, D], V [B, *S, Hkv, Dv], O [B, *S, H, Dv],
// LSE [B, *S, H] float32 (natural log). Any int64 strides are accepted, except that the last axis
// (head dim) must be contiguous (stride 1). Outputs must not overlap inputs.
//
// The gradient of the returned LSE is not propagated by na_backward / fmha_backward (as in NATTEN).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "nattn/problem.h"
#include "nattn/tensor.h"

namespace nattn {

struct RunOptions {
  std::string backend;               // "" selects automatically
  std::optional<TileConfig> config;  // forward config for forward ops, backward config for backward
  int num_threads = 0;               // CPU backends: 0 uses every hardware thread
  void* stream = nullptr;            // cudaStream_t for CUDA backends
  bool deterministic = true;         // CUDA backward: false permits atomics / KV parallelism
  bool requires_grad = false;        // forward: a backward will follow (selection avoids
                                     // backends without a backward pass)
};

struct NaForwardArgs {
  TensorView query;                            // [B, *S, H, D]
  TensorView key;                              // [B, *S, Hkv, D]
  TensorView value;                            // [B, *S, Hkv, Dv]
  TensorView out;                              // [B, *S, H, Dv], same dtype as query
  std::optional<TensorView> lse;               // [B, *S, H], f32
  std::optional<TensorView> additional_keys;   // [B, N, Hkv, D]
  std::optional<TensorView> additional_values; // [B, N, Hkv, Dv]
  NaParams params;
  std::optional<double> scale;                 // default D^-0.5; 0.0 is a valid scale
  // Sub-domain NA (problem.h): query is then [B, *Sq, H, D] and key/value [B, *Skv, Hkv, D*] with
  // their own spatial extents; out/lse follow the query. Backends: reference and cutlass-fna.
  std::optional<SubDomain> sub_domain;
};

struct NaBackwardArgs {
  TensorView query, key, value;   // as in forward
  TensorView out;                 // forward output
  TensorView lse;                 // forward LSE (f32), including additional keys if any
  TensorView dout;                // [B, *S, H, Dv]
  TensorView dquery, dkey, dvalue;  // outputs, shapes of query/key/value
  std::optional<TensorView> additional_keys, additional_values;
  std::optional<TensorView> dadditional_keys, dadditional_values;
  NaParams params;
  std::optional<double> scale;
  // Sub-domain NA, as in forward. dquery covers the local queries; dkey/dvalue get every local
  // key's gradient from the LOCAL queries only (the caller adds halo gradients into their owners).
  std::optional<SubDomain> sub_domain;
};

void na_forward(const NaForwardArgs& args, const RunOptions& options = {});
void na_backward(const NaBackwardArgs& args, const RunOptions& options = {});

// Standard attention. Varlen: B == 1, packed rows, int32 cumulative offsets starting at 0
// (cu_seqlens_q[b]..cu_seqlens_q[b+1] are the query rows of sequence b), on the tensors' device.
// Rows of out/lse not covered by any sequence are set to zero.
struct FmhaForwardArgs {
  TensorView query;   // [B, Sq, H, D]
  TensorView key;     // [B, Skv, Hkv, D]
  TensorView value;   // [B, Skv, Hkv, Dv]
  TensorView out;     // [B, Sq, H, Dv]
  std::optional<TensorView> lse;  // [B, Sq, H] f32
  bool is_causal = false;         // top-left aligned: query i sees keys j <= i
  std::optional<double> scale;
  std::optional<TensorView> cu_seqlens_q, cu_seqlens_kv;  // int32 [nseq + 1]
  int64_t max_seqlen_q = 0, max_seqlen_kv = 0;            // optional hints for varlen
};

struct FmhaBackwardArgs {
  TensorView query, key, value, out, lse, dout;
  TensorView dquery, dkey, dvalue;
  bool is_causal = false;
  std::optional<double> scale;
  std::optional<TensorView> cu_seqlens_q, cu_seqlens_kv;
  int64_t max_seqlen_q = 0, max_seqlen_kv = 0;
};

void fmha_forward(const FmhaForwardArgs& args, const RunOptions& options = {});
void fmha_backward(const FmhaBackwardArgs& args, const RunOptions& options = {});

// Merge attention outputs computed over disjoint key sets: L = log sum exp(L_i),
// O = sum exp(L_i - L) O_i. outputs: >= 2 tensors [B, S, H, Dv] of one shape and dtype;
// lses: [B, S, H] f32. `out` may alias outputs[0] and `lse` may alias lses[0].
void merge_attentions(const std::vector<TensorView>& outputs, const std::vector<TensorView>& lses,
                      TensorView out, TensorView lse, const RunOptions& options = {});

// Token permutation (shared/spec/semantics.md): input [B, *S, H, D] -> output
// [B * prod(dilation), prod(per-group padded extent), H, D], padding zero-filled.
// token_permute_shape gives the output shape.
std::vector<int64_t> token_permute_shape(const std::vector<int64_t>& input_shape,
                                         const std::vector<int64_t>& tile_shape,
                                         const std::vector<int64_t>& dilation);
void token_permute(const TensorView& input, TensorView output, const std::vector<int64_t>& tile_shape,
                   const std::vector<int64_t>& dilation, bool flip_tiled_dims,
                   const RunOptions& options = {});
// Inverse: input [B * prod(d), prod(padded), H, D] -> output [B, *S, H, D] (padding dropped).
void token_unpermute(const TensorView& input, TensorView output, const std::vector<int64_t>& tile_shape,
                     const std::vector<int64_t>& dilation, bool flip_tiled_dims,
                     const RunOptions& options = {});

// Problem descriptions of the arguments (what selection and the finders see). They validate the
// arguments first (ValueError as the ops would raise).
NaProblem describe(const NaForwardArgs& args);
NaProblem describe(const NaBackwardArgs& args);
FmhaProblem describe(const FmhaForwardArgs& args);
FmhaProblem describe(const FmhaBackwardArgs& args);

}  // namespace nattn
