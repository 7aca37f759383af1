// The tensors a profile run needs: random heads-last inputs and the outputs, owned here, with the
// argument structs of the ops pointing at them. They live on the problem's device: host memory for
// the CPU, GPU memory for CUDA (inputs filled on the host and copied up, outputs zeroed there).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "nattn/cuda_device.h"
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
  // Allocates and fills every tensor of `problem` on problem.device (inputs uniform in [-1, 1),
  // or standard normal with `normal_inputs`, from `seed`, the same values on either device). With `with_backward`, also dout (random) and
  // the gradient outputs. Throws ValueError when the problem is too large to index with int64,
  // RuntimeError when the device cannot hold it or a CUDA call fails.
  Workspace(const NaProblem& problem, bool with_backward, bool normal_inputs = false, uint64_t seed = 1234);

  const NaForwardArgs& forward_args() const { return forward_; }
  const NaBackwardArgs& backward_args() const { return backward_; }
  int64_t total_bytes() const { return total_bytes_; }
  const Device& device() const { return device_; }

 private:
  TensorView input(DType dtype, const std::vector<int64_t>& shape, uint64_t seed);  // see normal_
  TensorView output(DType dtype, const std::vector<int64_t>& shape);                // zeros

  Device device_;
  bool normal_ = false;  // inputs standard normal, else uniform [-1, 1)
  std::vector<HostBuffer> host_;              // the tensors on the CPU
  std::vector<DeviceBuffer> device_buffers_;  // the tensors on the GPU
  int64_t total_bytes_ = 0;
  NaForwardArgs forward_;
  NaBackwardArgs backward_;
};

// Effective forward flops: 2 * B * N * H * (window volume + additional KV) * (D + Dv), i.e. one
// multiply-add for each Q.K and P.V product over the attended keys. For causal axes this is an
// upper bound (windows near the start hold fewer keys).
double forward_flops(const NaProblem& problem);

}  // namespace nattn::cli::profile
