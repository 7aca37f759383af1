// The tensors a profile run needs: random heads-last inputs and the outputs, owned here, with the
// argument structs of the ops pointing at them.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "nattn/ops.h"
#include "nattn/problem.h"

namespace nattn::cli::profile {

// One 64-byte aligned host buffer with a contiguous view over it.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(DType dtype, std::vector<int64_t> shape);
  const TensorView& view() const { return view_; }
  int64_t bytes() const { return bytes_; }

 private:
  struct AlignedDelete {
    void operator()(unsigned char* p) const;
  };
  std::unique_ptr<unsigned char, AlignedDelete> storage_;
  int64_t bytes_ = 0;
  TensorView view_;
};

class Workspace {
 public:
  // Allocates and fills every tensor of `problem` (inputs uniform in [-1, 1] from `seed`). With
  // `with_backward`, also dout (random) and the gradient outputs. Throws ValueError when the
  // problem is too large to index with int64 or to allocate.
  Workspace(const NaProblem& problem, bool with_backward, uint64_t seed = 1234);

  const NaForwardArgs& forward_args() const { return forward_; }
  const NaBackwardArgs& backward_args() const { return backward_; }
  int64_t total_bytes() const;

 private:
  HostBuffer query_, key_, value_, out_, lse_, add_key_, add_value_;
  HostBuffer dout_, dquery_, dkey_, dvalue_, dadd_key_, dadd_value_;
  NaForwardArgs forward_;
  NaBackwardArgs backward_;
};

// Effective forward flops: 2 * B * N * H * (window volume + additional KV) * (D + Dv), i.e. one
// multiply-add for each Q.K and P.V product over the attended keys. For causal axes this is an
// upper bound (windows near the start hold fewer keys).
double forward_flops(const NaProblem& problem);

}  // namespace nattn::cli::profile
