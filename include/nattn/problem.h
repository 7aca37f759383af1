// Problem descriptions: NA parameters, the shape-level description of an NA or FMHA problem that
// backend selection and the config finders work on, and tile configurations.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nattn/tensor.h"

namespace nattn {

// Per-axis NA parameters. Entries beyond `rank` are ignored.
struct NaParams {
  int rank = 1;
  std::array<int64_t, 3> kernel_size{2, 2, 2};
  std::array<int64_t, 3> stride{1, 1, 1};
  std::array<int64_t, 3> dilation{1, 1, 1};
  std::array<bool, 3> is_causal{false, false, false};

  // Same value on every axis.
  static NaParams uniform(int rank, int64_t kernel_size, int64_t stride = 1, int64_t dilation = 1,
                          bool is_causal = false);
  std::string describe() const;  // "kernel_size=(7, 7) stride=(1, 1) dilation=(1, 1) is_causal=(0, 0)"
};

// NA on a sub-domain of a larger token grid (multi-device NA): the local query tensor holds the
// global queries q_origin + [0, Sq) per axis, the local key/value tensors hold the global keys
// kv_origin + [0, Skv). Windows (border shift, stride and dilation groups, causality) are those of
// the global grid of extent global_extent, so sharded results equal the single-device ones.
// sem::halo_range gives the key range the local queries need. Entries beyond the rank are ignored.
struct SubDomain {
  std::array<int64_t, 3> global_extent{1, 1, 1};
  std::array<int64_t, 3> q_origin{0, 0, 0};   // global coordinate of local query index 0
  std::array<int64_t, 3> kv_origin{0, 0, 0};  // global coordinate of local key/value index 0

  std::string describe(int rank) const;  // "global_extent=(16,) q_origin=(4,) kv_origin=(1,)"
};

enum class Pass : int { forward = 0, backward = 1 };

// Hopper-style kernel schedule; other backends use `none`.
enum class KernelSchedule : int { none = 0, non_persistent = 1, cooperative = 2, pingpong = 3 };
const char* schedule_name(KernelSchedule s);  // "", "non", "coop", "pp"
KernelSchedule parse_schedule(const std::string& s);  // throws ValueError

// One tile configuration of a backend. Empty shapes mean "the backend has no tile parameter".
struct TileConfig {
  std::vector<int64_t> q_tile;
  std::vector<int64_t> kv_tile;
  KernelSchedule schedule = KernelSchedule::none;

  bool operator==(const TileConfig& o) const {
    return q_tile == o.q_tile && kv_tile == o.kv_tile && schedule == o.schedule;
  }
  std::string describe() const;  // "q_tile=(8, 8) kv_tile=(8, 8)" (+ " schedule=coop")
};

// Shape-level description of an NA problem: what selection and the finders look at.
struct NaProblem {
  int64_t batch = 1;
  std::vector<int64_t> spatial;  // rank = spatial.size()
  int64_t heads = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 64;
  int64_t head_dim_v = 64;
  int64_t additional_kv = 0;
  DType dtype = DType::f32;
  Device device{};
  int compute_capability = 0;  // e.g. 90 for an H100; 0 on the CPU
  NaParams params;
  bool requires_grad = false;
  bool deterministic = false;
  bool scale_positive = true;  // the softmax scale is > 0 (the hopper-* kernels need it)
  std::optional<SubDomain> sub_domain;  // set for sub-domain NA; `spatial` is then the local query extent

  int rank() const { return static_cast<int>(spatial.size()); }
  int64_t tokens() const;  // prod(spatial)
  std::string describe() const;
};

// Shape-level description of a standard attention (FMHA) problem.
struct FmhaProblem {
  int64_t batch = 1;
  int64_t seqlen_q = 1;
  int64_t seqlen_kv = 1;
  int64_t heads = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 64;
  int64_t head_dim_v = 64;
  DType dtype = DType::f32;
  Device device{};
  int compute_capability = 0;
  bool is_causal = false;
  bool is_varlen = false;
  bool requires_grad = false;
  bool deterministic = false;
  bool scale_positive = true;  // the softmax scale is > 0 (the hopper-* kernels need it)

  std::string describe() const;
};

}  // namespace nattn
