// Sub-domain NA on the reference backend (issue 6): R ranks simulated in one process. The global
// token grid is split into slabs along one or more axes (uneven sizes too); each rank gets its
// slab's queries and the key/value slab plus the halo given by sem::halo_range, runs the
// sub-domain forward and backward, and the results are assembled (out, LSE and dQ concatenate;
// dK/dV and the additional-KV gradients are summed into their global positions). The assembled
// result must equal the single-domain reference result:
//   - out, LSE, dQ: bitwise (each query row sums the same keys in the same order, in fp64);
//   - dK, dV, d(additional KV): every rank adds a partial sum, so only to rounding: 1e-12 relative
//     for fp64 tensors, 1e-6 relative for fp32 ones (each partial is rounded to fp32 first).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"
#include "nattn/semantics.h"

namespace {

using nattn::DType;
using nattn::NaParams;
using nattn::SubDomain;
using nattn::TensorView;
using nattn::test::HostTensor;
using Shape = std::vector<int64_t>;

double get(const HostTensor& t, int64_t i) {
  if (t.view.dtype == DType::f64) return static_cast<const double*>(t.view.data)[i];
  return static_cast<double>(t.get(i));
}
void set(HostTensor& t, int64_t i, double v) {
  if (t.view.dtype == DType::f64) {
    static_cast<double*>(t.view.data)[i] = v;
    return;
  }
  t.set(i, static_cast<float>(v));
}

HostTensor random(DType dtype, Shape shape, std::mt19937_64& rng) {
  HostTensor t(dtype, std::move(shape));
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (int64_t i = 0; i < t.numel(); ++i) set(t, i, dist(rng));
  return t;
}
HostTensor filled(DType dtype, Shape shape, double value) {
  HostTensor t(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) set(t, i, value);
  return t;
}
HostTensor poison(DType dtype, Shape shape) { return filled(dtype, std::move(shape), std::nan("")); }

// Element `i` of a contiguous tensor of shape `local` whose spatial axes 1..rank start at `lo` in a
// contiguous tensor of shape `global`: its index there.
int64_t global_index(int64_t i, const Shape& local, const Shape& global, const std::array<int64_t, 3>& lo, int rank) {
  Shape c(local.size());
  for (size_t a = local.size(); a-- > 0;) {
    c[a] = i % local[a];
    i /= local[a];
  }
  int64_t g = 0;
  for (size_t a = 0; a < global.size(); ++a) {
    const bool spatial = a >= 1 && a <= static_cast<size_t>(rank);
    g = g * global[a] + c[a] + (spatial ? lo[a - 1] : 0);
  }
  return g;
}

// The box [lo, lo + extent) of the spatial axes of a global tensor, as a new contiguous tensor.
HostTensor slice(const HostTensor& g, const std::array<int64_t, 3>& lo, const std::array<int64_t, 3>& extent,
                 int rank) {
  Shape shape = g.view.shape;
  for (int a = 0; a < rank; ++a) shape[static_cast<size_t>(1 + a)] = extent[static_cast<size_t>(a)];
  HostTensor out(g.view.dtype, shape);
  for (int64_t i = 0; i < out.numel(); ++i) set(out, i, get(g, global_index(i, shape, g.view.shape, lo, rank)));
  return out;
}

// g[box] = local (copy) or g[box] += local (accumulate).
void place(HostTensor& g, const HostTensor& local, const std::array<int64_t, 3>& lo, int rank, bool accumulate) {
  for (int64_t i = 0; i < local.numel(); ++i) {
    const int64_t at = global_index(i, local.view.shape, g.view.shape, lo, rank);
    set(g, at, (accumulate ? get(g, at) : 0.0) + get(local, i));
  }
}

void expect_bitwise(const HostTensor& got, const HostTensor& want, const std::string& what) {
  ASSERT_EQ(got.view.shape, want.view.shape) << what;
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double a = get(got, i), b = get(want, i);
    if (!(a == b) || std::signbit(a) != std::signbit(b)) {
      if (first < 0) first = i;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << want.numel() << " elements differ, first at " << first
                    << " (" << (first >= 0 ? get(got, first) : 0.0) << " vs " << (first >= 0 ? get(want, first) : 0.0)
                    << ")";
}

void expect_close(const HostTensor& got, const HostTensor& want, double rel, const std::string& what) {
  ASSERT_EQ(got.view.shape, want.view.shape) << what;
  double scale = 0, worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i) scale = std::fmax(scale, std::fabs(get(want, i)));
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double d = std::fabs(get(got, i) - get(want, i));
    worst = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::fmax(worst, d);
  }
  EXPECT_GT(scale, 0.0) << what << " is all zero: the comparison would be vacuous";
  EXPECT_LE(worst, rel * scale) << what << ": max |diff| " << worst << " vs max |ref| " << scale;
}

// Elements of a [B, *S, H, C] tensor whose token is held by a single rank (exact_token) must be
// bitwise equal: only one rank adds a partial sum there. (Small grids may have no such token.)
void expect_bitwise_where(const HostTensor& got, const HostTensor& want, const std::vector<bool>& exact_token,
                          const std::string& what) {
  ASSERT_EQ(got.view.shape, want.view.shape) << what;
  const int64_t per_token = want.view.shape[want.view.shape.size() - 1] * want.view.shape[want.view.shape.size() - 2];
  const int64_t tokens = static_cast<int64_t>(exact_token.size());
  int64_t bad = 0, checked = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    if (!exact_token[static_cast<size_t>((i / per_token) % tokens)]) continue;
    ++checked;
    bad += get(got, i) == get(want, i) ? 0 : 1;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " elements of keys held by one rank only differ";
}

struct Case {
  Case(std::string n, Shape s, NaParams p) : name(std::move(n)), spatial(std::move(s)), params(p) {}
  std::string name;
  Shape spatial;
  NaParams params;
  int64_t batch = 2, heads = 2, heads_kv = 2, dim = 4, dim_v = 4, extra = 0;
  std::vector<Shape> splits;  // per axis: slab sizes summing to the extent, or empty (not split)
  int64_t widen = 0;          // extra key/value tokens beyond the halo on each side (clipped)
  DType dtype = DType::f64;
};

NaParams params(int rank, std::array<int64_t, 3> k, std::array<int64_t, 3> s, std::array<int64_t, 3> d,
                std::array<bool, 3> causal) {
  NaParams p;
  p.rank = rank;
  p.kernel_size = k;
  p.stride = s;
  p.dilation = d;
  p.is_causal = causal;
  return p;
}

struct Full {
  HostTensor out, lse, dq, dk, dv, dak, dav;
};

// Runs forward + backward of one (sub-)domain on the reference backend.
Full run(const HostTensor& q, const HostTensor& k, const HostTensor& v, const HostTensor& dout, const HostTensor* ak,
         const HostTensor* av, const NaParams& p, const std::optional<SubDomain>& sd) {
  const DType dt = q.view.dtype;
  Shape out_shape = q.view.shape;
  out_shape.back() = v.view.shape.back();
  Shape lse_shape(q.view.shape.begin(), q.view.shape.end() - 1);
  Full r;
  r.out = poison(dt, out_shape);
  r.lse = poison(dt == DType::f64 ? DType::f64 : DType::f32, lse_shape);
  nattn::RunOptions options;
  options.backend = "reference";
  options.num_threads = 1;  // tiny problems: threads only add overhead
  nattn::NaForwardArgs f;
  f.query = q.view;
  f.key = k.view;
  f.value = v.view;
  f.out = r.out.view;
  f.lse = r.lse.view;
  if (ak) {
    f.additional_keys = ak->view;
    f.additional_values = av->view;
  }
  f.params = p;
  f.sub_domain = sd;
  nattn::na_forward(f, options);

  r.dq = poison(dt, q.view.shape);
  r.dk = poison(dt, k.view.shape);
  r.dv = poison(dt, v.view.shape);
  nattn::NaBackwardArgs b;
  b.query = q.view;
  b.key = k.view;
  b.value = v.view;
  b.out = r.out.view;
  b.lse = r.lse.view;
  b.dout = dout.view;
  b.dquery = r.dq.view;
  b.dkey = r.dk.view;
  b.dvalue = r.dv.view;
  if (ak) {
    r.dak = poison(dt, ak->view.shape);
    r.dav = poison(dt, av->view.shape);
    b.additional_keys = ak->view;
    b.additional_values = av->view;
    b.dadditional_keys = r.dak.view;
    b.dadditional_values = r.dav.view;
  }
  b.params = p;
  b.sub_domain = sd;
  nattn::na_backward(b, options);
  return r;
}

// One rank: the global query box [q_lo, q_lo + q_ext) and key box [kv_lo, kv_lo + kv_ext).
struct Rank {
  std::array<int64_t, 3> q_lo{0, 0, 0}, q_ext{1, 1, 1}, kv_lo{0, 0, 0}, kv_ext{1, 1, 1};
};

std::vector<Rank> partition(const Case& c) {
  const int rank = c.params.rank;
  // Per axis, the slabs [start, end) of queries.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> slabs(static_cast<size_t>(rank));
  for (int a = 0; a < rank; ++a) {
    const size_t i = static_cast<size_t>(a);
    const Shape sizes = i < c.splits.size() && !c.splits[i].empty() ? c.splits[i] : Shape{c.spatial[i]};
    int64_t at = 0;
    for (int64_t s : sizes) {
      slabs[i].push_back({at, at + s});
      at += s;
    }
    EXPECT_EQ(at, c.spatial[i]) << c.name << ": splits of axis " << a << " do not cover the extent";
  }
  std::vector<Rank> ranks;
  std::array<size_t, 3> n{1, 1, 1}, idx{0, 0, 0};
  for (int a = 0; a < rank; ++a) n[static_cast<size_t>(a)] = slabs[static_cast<size_t>(a)].size();
  for (idx[0] = 0; idx[0] < n[0]; ++idx[0])
    for (idx[1] = 0; idx[1] < n[1]; ++idx[1])
      for (idx[2] = 0; idx[2] < n[2]; ++idx[2]) {
        Rank r;
        for (int a = 0; a < rank; ++a) {
          const size_t i = static_cast<size_t>(a);
          const auto [lo, hi] = slabs[i][idx[i]];
          const nattn::sem::Range halo =
              nattn::sem::halo_range(lo, hi, c.spatial[i], c.params.kernel_size[i], c.params.stride[i],
                                     c.params.dilation[i], c.params.is_causal[i]);
          const int64_t kv_lo = std::max<int64_t>(halo.start - c.widen, 0);
          const int64_t kv_hi = std::min<int64_t>(halo.end + c.widen, c.spatial[i]);
          r.q_lo[i] = lo;
          r.q_ext[i] = hi - lo;
          r.kv_lo[i] = kv_lo;
          r.kv_ext[i] = kv_hi - kv_lo;
        }
        ranks.push_back(r);
      }
  return ranks;
}

void check_case(const Case& c) {
  SCOPED_TRACE(c.name);
  const int rank = c.params.rank;
  ASSERT_EQ(static_cast<int>(c.spatial.size()), rank);
  std::mt19937_64 rng(12345);
  auto shape = [&](int64_t heads, int64_t dim) {
    Shape s{c.batch};
    s.insert(s.end(), c.spatial.begin(), c.spatial.end());
    s.push_back(heads);
    s.push_back(dim);
    return s;
  };
  const HostTensor q = random(c.dtype, shape(c.heads, c.dim), rng);
  const HostTensor k = random(c.dtype, shape(c.heads_kv, c.dim), rng);
  const HostTensor v = random(c.dtype, shape(c.heads_kv, c.dim_v), rng);
  const HostTensor dout = random(c.dtype, shape(c.heads, c.dim_v), rng);
  HostTensor ak, av;
  if (c.extra > 0) {
    ak = random(c.dtype, {c.batch, c.extra, c.heads_kv, c.dim}, rng);
    av = random(c.dtype, {c.batch, c.extra, c.heads_kv, c.dim_v}, rng);
  }
  const HostTensor* akp = c.extra > 0 ? &ak : nullptr;
  const HostTensor* avp = c.extra > 0 ? &av : nullptr;

  const Full want = run(q, k, v, dout, akp, avp, c.params, std::nullopt);

  Full got;
  got.out = poison(want.out.view.dtype, want.out.view.shape);
  got.lse = poison(want.lse.view.dtype, want.lse.view.shape);
  got.dq = poison(want.dq.view.dtype, want.dq.view.shape);
  got.dk = filled(want.dk.view.dtype, want.dk.view.shape, 0.0);
  got.dv = filled(want.dv.view.dtype, want.dv.view.shape, 0.0);
  if (akp) {
    got.dak = filled(want.dak.view.dtype, want.dak.view.shape, 0.0);
    got.dav = filled(want.dav.view.dtype, want.dav.view.shape, 0.0);
  }
  const std::vector<Rank> ranks = partition(c);
  int with_halo = 0;
  // How many ranks hold each global key token.
  int64_t tokens = 1;
  for (int64_t e : c.spatial) tokens *= e;
  std::vector<int> holders(static_cast<size_t>(tokens), 0);
  for (const Rank& r : ranks) {
    for (int64_t t = 0; t < tokens; ++t) {
      int64_t rest = t;
      bool inside = true;
      for (int a = rank - 1; a >= 0; --a) {
        const size_t i = static_cast<size_t>(a);
        const int64_t x = rest % c.spatial[i];
        rest /= c.spatial[i];
        inside = inside && r.kv_lo[i] <= x && x < r.kv_lo[i] + r.kv_ext[i];
      }
      holders[static_cast<size_t>(t)] += inside ? 1 : 0;
    }
  }
  std::vector<bool> exact(holders.size());
  for (size_t t = 0; t < holders.size(); ++t) exact[t] = holders[t] == 1;
  for (const Rank& r : ranks) {
    SubDomain sd;
    for (int a = 0; a < rank; ++a) {
      const size_t i = static_cast<size_t>(a);
      sd.global_extent[i] = c.spatial[i];
      sd.q_origin[i] = r.q_lo[i];
      sd.kv_origin[i] = r.kv_lo[i];
      with_halo += r.kv_ext[i] != r.q_ext[i] ? 1 : 0;
    }
    const HostTensor lq = slice(q, r.q_lo, r.q_ext, rank);
    const HostTensor ldo = slice(dout, r.q_lo, r.q_ext, rank);
    const HostTensor lk = slice(k, r.kv_lo, r.kv_ext, rank);
    const HostTensor lv = slice(v, r.kv_lo, r.kv_ext, rank);
    const Full part = run(lq, lk, lv, ldo, akp, avp, c.params, sd);
    place(got.out, part.out, r.q_lo, rank, false);
    place(got.lse, part.lse, r.q_lo, rank, false);
    place(got.dq, part.dq, r.q_lo, rank, false);
    place(got.dk, part.dk, r.kv_lo, rank, true);
    place(got.dv, part.dv, r.kv_lo, rank, true);
    if (akp) {
      place(got.dak, part.dak, {0, 0, 0}, 1, true);
      place(got.dav, part.dav, {0, 0, 0}, 1, true);
    }
  }
  EXPECT_GT(ranks.size(), 1u);
  EXPECT_GT(with_halo, 0) << "no rank needed a halo: the case tests nothing";
  expect_bitwise(got.out, want.out, "out");
  expect_bitwise(got.lse, want.lse, "lse");
  expect_bitwise(got.dq, want.dq, "dquery");
  const double rel = c.dtype == DType::f64 ? 1e-12 : 1e-6;
  expect_close(got.dk, want.dk, rel, "dkey");
  expect_close(got.dv, want.dv, rel, "dvalue");
  expect_bitwise_where(got.dk, want.dk, exact, "dkey");
  expect_bitwise_where(got.dv, want.dv, exact, "dvalue");
  if (akp) {
    expect_close(got.dak, want.dak, rel, "dadditional_keys");
    expect_close(got.dav, want.dav, rel, "dadditional_values");
  }
}

// ---- 1-D --------------------------------------------------------------------------------------------

TEST(ReferenceSubDomain, OneDimEvenAndUneven) {
  for (DType dt : {DType::f64, DType::f32}) {
    const NaParams p = params(1, {5, 1, 1}, {1, 1, 1}, {1, 1, 1}, {false, false, false});
    for (const Shape& split : {Shape{10, 10}, Shape{7, 7, 6}, Shape{5, 5, 5, 5}, Shape{3, 9, 8}, Shape{1, 2, 16, 1}}) {
      Case c{"1-D k=5 split " + std::to_string(split.size()), {20}, p};
      c.splits = {split};
      c.dtype = dt;
      check_case(c);
    }
  }
}

TEST(ReferenceSubDomain, OneDimStrideDilationCausal) {
  for (bool causal : {false, true}) {
    for (int64_t s : {1, 2, 3}) {
      for (int64_t d : {1, 2, 3}) {
        const NaParams p = params(1, {4, 1, 1}, {s, 1, 1}, {d, 1, 1}, {causal, false, false});
        for (const Shape& split : {Shape{12, 11}, Shape{5, 10, 8}, Shape{6, 6, 6, 5}}) {
          Case c{"1-D k=4 s=" + std::to_string(s) + " d=" + std::to_string(d) + (causal ? " causal" : "") + " R=" +
                     std::to_string(split.size()),
                 {23}, p};
          c.splits = {split};
          check_case(c);
        }
      }
    }
  }
}

TEST(ReferenceSubDomain, OneDimGqaAdditionalKvWiderHalo) {
  const NaParams p = params(1, {6, 1, 1}, {2, 1, 1}, {2, 1, 1}, {false, false, false});
  for (int64_t widen : {0, 1, 3}) {
    for (DType dt : {DType::f64, DType::f32}) {
      Case c{"1-D GQA extra=3 widen=" + std::to_string(widen), {26}, p};
      c.heads = 4;
      c.heads_kv = 2;
      c.dim = 5;
      c.dim_v = 3;
      c.extra = 3;
      c.widen = widen;
      c.splits = {{9, 8, 9}};
      c.dtype = dt;
      check_case(c);
    }
  }
}

// ---- 2-D and 3-D ------------------------------------------------------------------------------------

TEST(ReferenceSubDomain, TwoDimOneAxisThenTwoAxes) {
  const NaParams p = params(2, {3, 4, 1}, {2, 1, 1}, {1, 2, 1}, {true, false, false});
  const std::vector<std::vector<Shape>> splits = {
      {{6, 6}, {}}, {{4, 5, 3}, {}}, {{}, {3, 3, 2, 2}}, {{5, 7}, {6, 4}}, {{3, 4, 5}, {2, 8}}};
  for (const auto& s : splits) {
    Case c{"2-D", {12, 10}, p};
    c.splits = s;
    c.heads = 3;
    c.heads_kv = 1;
    c.extra = 2;
    check_case(c);
  }
  // Non-causal with stride on both axes, fp32.
  Case c{"2-D fp32", {11, 9}, params(2, {4, 3, 1}, {3, 2, 1}, {2, 1, 1}, {false, true, false})};
  c.splits = {{4, 4, 3}, {5, 4}};
  c.dtype = DType::f32;
  check_case(c);
}

TEST(ReferenceSubDomain, ThreeDim) {
  const NaParams p = params(3, {3, 3, 2}, {1, 2, 1}, {2, 1, 1}, {false, true, false});
  const std::vector<std::vector<Shape>> splits = {{{3, 3}, {}, {}}, {{}, {}, {2, 2, 1}}, {{2, 4}, {}, {3, 2}},
                                                  {{2, 2, 2}, {4, 3}, {1, 4}}};
  for (const auto& s : splits) {
    Case c{"3-D", {6, 7, 5}, p};
    c.splits = s;
    c.heads = 2;
    c.heads_kv = 1;
    c.dim = 3;
    c.dim_v = 2;
    c.batch = 1;
    c.extra = 1;
    check_case(c);
  }
}

// ---- errors -----------------------------------------------------------------------------------------

TEST(ReferenceSubDomain, OtherBackendsReject) {
  std::mt19937_64 rng(1);
  const HostTensor q = random(DType::f32, {1, 4, 1, 4}, rng);
  const HostTensor k = random(DType::f32, {1, 8, 1, 4}, rng);
  HostTensor out(DType::f32, {1, 4, 1, 4});
  nattn::NaForwardArgs f;
  f.query = q.view;
  f.key = k.view;
  f.value = k.view;
  f.out = out.view;
  f.params = params(1, {3, 1, 1}, {1, 1, 1}, {1, 1, 1}, {false, false, false});
  SubDomain sd;
  sd.global_extent = {16, 1, 1};
  sd.q_origin = {4, 1, 1};
  sd.kv_origin = {2, 0, 0};
  f.sub_domain = sd;
  nattn::RunOptions options;
  options.backend = "cpu";
  try {
    nattn::na_forward(f, options);
    FAIL() << "the cpu backend ran a sub-domain problem";
  } catch (const nattn::NotImplementedError& e) {
    EXPECT_NE(std::string(e.what()).find("sub-domain NA runs on the reference and cutlass-fna backends only"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("sub_domain(global_extent=(16,) q_origin=(4,) kv_origin=(2,))"),
              std::string::npos)
        << e.what();
  }
  // Automatic selection skips the fast backends and runs the oracle.
  options.backend = "";
  nattn::na_forward(f, options);
  EXPECT_EQ(nattn::reject_reason("cpu", nattn::describe(f), nattn::Pass::forward),
            "sub-domain NA runs on the reference and cutlass-fna backends only (and on hopper-fna forward)");
  EXPECT_EQ(nattn::reject_reason("reference", nattn::describe(f), nattn::Pass::forward), "");
  const nattn::Selection sel = nattn::choose_backend(nattn::describe(f), nattn::Pass::forward);
  EXPECT_EQ(sel.backend, "reference");
}

}  // namespace
