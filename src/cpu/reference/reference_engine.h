// The attention engine of the reference backend: a naive fp64 computation over explicit key lists.
//
// Every problem the reference runs (NA with or without additional keys, FMHA, varlen FMHA) is
// reduced to the same shape: query rows (batch, token, head) and key rows (batch, token, kv head),
// plus a Pattern that says which key tokens a query token attends and, for backward, which query
// tokens attend a key token. The engine does the rest with one softmax per query row, so NA, the
// additional keys and FMHA all share one code path.
#pragma once

#include <cstdint>
#include <vector>

#include "nattn/tensor.h"

namespace nattn::detail::reference {

// A tensor addressed as (batch, token, head, channel). The spatial axes of a heads-last tensor
// are flattened row-major into `token`; each token's element offset is precomputed so any strides
// work.
struct RowTensor {
  void* data = nullptr;
  DType dtype = DType::f32;
  int64_t batch_stride = 0;
  std::vector<int64_t> token_offset;  // element offset of each token
  int64_t head_stride = 0;
  int64_t channel_stride = 1;
  int64_t channels = 1;  // head dim; 1 for an LSE tensor

  int64_t tokens() const { return static_cast<int64_t>(token_offset.size()); }
  int64_t offset(int64_t b, int64_t t, int64_t h) const {
    return b * batch_stride + token_offset[static_cast<size_t>(t)] + h * head_stride;
  }
};

// `view` is [B, *S, H, C] (has_channels) or [B, *S, H] (an LSE), with `spatial_rank` axes in S.
RowTensor make_rows(const TensorView& view, int spatial_rank, bool has_channels);

// Which key tokens each query token attends. Key tokens >= the main KV token count are the
// additional keys (Problem::key_extra).
class Pattern {
 public:
  virtual ~Pattern() = default;
  // Fills `keys` with the key tokens query token t of batch b attends (any order, no duplicates).
  // Returns false when the row belongs to no problem (varlen rows outside every sequence): its
  // output and LSE are then zero. A true return with no keys means the row attends nothing
  // (output 0, LSE -inf).
  virtual bool keys_of(int64_t b, int64_t t, std::vector<int64_t>& keys) const = 0;
  // Fills `queries` with the query tokens of batch b that attend key token u: the exact inverse
  // of keys_of.
  virtual void queries_of(int64_t b, int64_t u, std::vector<int64_t>& queries) const = 0;
};

struct Problem {
  RowTensor query, key, value;           // key/value: the main KV tokens
  RowTensor key_extra, value_extra;      // additional keys/values (no tokens when absent)
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t heads_kv = 1;
  double scale = 1.0;
  const Pattern* pattern = nullptr;
  int num_threads = 0;  // <= 0: every OpenMP thread

  int64_t query_tokens() const { return query.tokens(); }
  int64_t key_tokens() const { return key.tokens() + key_extra.tokens(); }
};

// out [B, Tq, H, Dv] and lse [B, Tq, H] (optional) are fully written.
void forward(const Problem& problem, const RowTensor& out, const RowTensor* lse);

struct Gradients {
  RowTensor dquery, dkey, dvalue;
  RowTensor dkey_extra, dvalue_extra;  // written when they have tokens
};

// out/lse are the forward results (lse over every attended key); every gradient element is written.
void backward(const Problem& problem, const RowTensor& out, const RowTensor& lse,
              const RowTensor& dout, const Gradients& grads);

}  // namespace nattn::detail::reference
