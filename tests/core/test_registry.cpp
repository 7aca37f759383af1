// Backend registry, selection with reasons, config finders and their tables.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "core/tables.h"
#include "nattn/backends.h"
#include "nattn/errors.h"
#include "nattn/ops.h"

namespace nattn {
namespace {

NaProblem na_problem(std::vector<int64_t> spatial, DType dtype = DType::f32, Device device = {}, int cc = 0) {
  NaProblem p;
  p.batch = 1;
  p.spatial = spatial;
  p.heads = 4;
  p.heads_kv = 4;
  p.head_dim = 64;
  p.head_dim_v = 64;
  p.dtype = dtype;
  p.device = device;
  p.compute_capability = cc;
  p.params = NaParams::uniform(static_cast<int>(spatial.size()), 3);
  return p;
}

FmhaProblem fmha_problem(Device device = {}, int cc = 0, DType dtype = DType::f32) {
  FmhaProblem p;
  p.seqlen_q = p.seqlen_kv = 128;
  p.device = device;
  p.compute_capability = cc;
  p.dtype = dtype;
  return p;
}

const Device kCuda{DeviceKind::cuda, 0};

TEST(Registry, ListsEveryPlannedBackendOnce) {
  const auto backends = list_backends();
  std::set<std::string> names;
  for (const auto& b : backends) names.insert(b.name);
  const std::set<std::string> expected = {"reference",     "cpu",          "cutlass-fna", "cutlass-fmha",
                                          "hopper-fna",    "hopper-fmha",  "blackwell-fna",
                                          "blackwell-fmha", "flex-fna",    "flex-fmha"};
  EXPECT_EQ(names, expected);
  EXPECT_EQ(backends.size(), expected.size());
  for (const auto& b : backends) {
    EXPECT_EQ(b.device, b.name == "cpu" || b.name == "reference" ? DeviceKind::cpu : DeviceKind::cuda) << b.name;
    // cutlass-* are built when CUDA is enabled, hopper-* when the CUDA archs include 90;
    // blackwell-* and flex-* are not built by this library.
    if (b.name.rfind("cutlass-", 0) != 0 && b.name.rfind("hopper-", 0) != 0) {
      EXPECT_EQ(b.built, b.name == "cpu" || b.name == "reference") << b.name;
    }
    EXPECT_TRUE(b.supports_na || b.supports_fmha) << b.name;
    EXPECT_FALSE(b.description.empty()) << b.name;
  }
  EXPECT_TRUE(is_known_backend("cpu"));
  EXPECT_FALSE(is_known_backend("natten"));
}

TEST(Registry, CpuProblemsChooseCpuAndExplainEveryRejection) {
  for (int rank = 1; rank <= 3; ++rank) {
    const Selection sel = choose_backend(na_problem(std::vector<int64_t>(static_cast<size_t>(rank), 8)), Pass::forward);
    EXPECT_EQ(sel.backend, "cpu");
    bool saw_reference = false;
    for (const auto& v : sel.considered) {
      if (v.backend == "cpu" || v.backend == "reference") {
        EXPECT_TRUE(v.reason.empty()) << v.backend << ": " << v.reason;
        saw_reference = saw_reference || v.backend == "reference";
      } else {
        EXPECT_FALSE(v.reason.empty()) << v.backend;
      }
    }
    EXPECT_TRUE(saw_reference);
    const std::string text = sel.explain();
    EXPECT_NE(text.find("cpu: chosen"), std::string::npos) << text;
    EXPECT_NE(text.find("hopper-fna: rejected: hopper-fna runs on CUDA tensors only"), std::string::npos) << text;
    EXPECT_NE(text.find("reference: compatible"), std::string::npos) << text;
  }
  // FMHA selection only considers FMHA-capable backends.
  const Selection fsel = choose_backend(fmha_problem(), Pass::backward);
  EXPECT_EQ(fsel.backend, "cpu");
  for (const auto& v : fsel.considered) EXPECT_EQ(v.backend.find("-fna"), std::string::npos) << v.backend;
}

bool built(const std::string& name) {
  for (const auto& b : list_backends())
    if (b.name == name) return b.built;
  return false;
}

// A softmax scale <= 0 (the Hopper kernels take the row max before scaling): validation records it,
// hopper-* reject it with a reason, and automatic selection takes the portable backend.
TEST(Registry, NonPositiveScaleSkipsTheHopperBackends) {
  std::vector<float> buf(2 * 8 * 8 * 2 * 16, 0.5f), out(buf.size());
  NaForwardArgs a;
  a.query = a.key = a.value = TensorView(buf.data(), DType::f32, {2, 8, 8, 2, 16});
  a.out = TensorView(out.data(), DType::f32, {2, 8, 8, 2, 16});
  a.params = NaParams::uniform(2, 3);
  EXPECT_TRUE(describe(a).scale_positive);
  a.scale = -0.25;
  EXPECT_FALSE(describe(a).scale_positive);
  a.scale = 0.0;
  EXPECT_FALSE(describe(a).scale_positive);
  NaProblem p = na_problem({16, 16}, DType::bf16, kCuda, 90);
  p.scale_positive = false;
  if (!built("hopper-fna")) GTEST_SKIP() << "hopper-fna is not built into this library";
  EXPECT_NE(reject_reason("hopper-fna", p, Pass::forward).find("needs a softmax scale > 0"), std::string::npos);
  EXPECT_EQ(choose_backend(p, Pass::forward).backend, "cutlass-fna");
}

TEST(Registry, CudaProblemsWithoutABuiltBackendAreRejectedWithReasons) {
  const NaProblem p = na_problem({16, 16}, DType::bf16, kCuda, 90);
  const Selection sel = choose_backend(p, Pass::forward);
  EXPECT_NE(reject_reason("cpu", p, Pass::forward).find("CPU tensors only"), std::string::npos);
  if (built("hopper-fna")) {  // a CUDA build with sm_90a kernels: the Hopper backend comes first on SM90
    EXPECT_EQ(reject_reason("hopper-fna", p, Pass::forward), "");
    EXPECT_EQ(sel.backend, "hopper-fna") << sel.explain();
    EXPECT_NE(reject_reason("hopper-fna", p, Pass::backward).find("no backward"), std::string::npos);
    EXPECT_EQ(choose_backend(p, Pass::backward).backend, "cutlass-fna");
    return;
  }
  EXPECT_EQ(reject_reason("hopper-fna", p, Pass::forward), "hopper-fna is not built into this library");
  if (built("cutlass-fna")) {  // a CUDA build: the portable backend takes it
    EXPECT_EQ(sel.backend, "cutlass-fna") << sel.explain();
    return;
  }
  EXPECT_TRUE(sel.backend.empty());
  for (const auto& v : sel.considered) EXPECT_FALSE(v.reason.empty()) << v.backend;
  try {
    resolve_backend("", p, Pass::forward);
    FAIL() << "expected NotImplementedError";
  } catch (const NotImplementedError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no backend can run"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cutlass-fna: rejected"), std::string::npos) << msg;
  }
}

TEST(Registry, CapabilityRules) {
  // hopper: fp16/bf16 only, cc 90, forward only; head dims 32/64/128/256 (hopper-fmha), multiples of 8
  // up to 256 with Dv free (hopper-fna, zero-padded).
  NaProblem p = na_problem({16, 16}, DType::f32, kCuda, 90);
  EXPECT_NE(reject_reason("hopper-fna", p, Pass::forward).find("does not support dtype fp32"), std::string::npos);
  p.dtype = DType::f16;
  p.head_dim = p.head_dim_v = 264;
  EXPECT_NE(reject_reason("hopper-fna", p, Pass::forward).find("multiples of 8 in [8, 256] (got head_dim=264"),
            std::string::npos);
  p.head_dim = 12;
  p.head_dim_v = 16;
  EXPECT_NE(reject_reason("hopper-fna", p, Pass::forward).find("multiples of 8 in [8, 256]"), std::string::npos);
  FmhaProblem hf = fmha_problem(kCuda, 90, DType::f16);
  hf.head_dim = hf.head_dim_v = 80;
  EXPECT_NE(reject_reason("hopper-fmha", hf, Pass::forward).find("head_dim 32/64/128/256 (got 80)"), std::string::npos);
  p.head_dim = p.head_dim_v = 128;
  EXPECT_NE(reject_reason("hopper-fna", p, Pass::backward).find("no backward"), std::string::npos);
  p.compute_capability = 80;
  EXPECT_NE(reject_reason("hopper-fna", p, Pass::forward).find("compute capability 90 (got 80)"), std::string::npos);
  // cutlass: multiples of 8 up to 256, cc >= 75.
  p.head_dim = 12;
  EXPECT_NE(reject_reason("cutlass-fna", p, Pass::forward).find("multiples of 8"), std::string::npos);
  p.head_dim = 64;
  p.compute_capability = 70;
  EXPECT_NE(reject_reason("cutlass-fna", p, Pass::forward).find(">= 75"), std::string::npos);
  // flex: power-of-two head dims, no causal FMHA.
  p.head_dim = p.head_dim_v = 96;
  EXPECT_NE(reject_reason("flex-fna", p, Pass::forward).find("power-of-two"), std::string::npos);
  FmhaProblem f = fmha_problem(kCuda, 90, DType::bf16);
  f.is_causal = true;
  EXPECT_NE(reject_reason("flex-fmha", f, Pass::forward).find("causal"), std::string::npos);
  // An NA backend asked for FMHA and vice versa.
  EXPECT_NE(reject_reason("cutlass-fna", f, Pass::forward).find("neighborhood attention only"), std::string::npos);
  EXPECT_THROW(reject_reason("natten", f, Pass::forward), NotImplementedError);
}

// ---- cutlass-fna / cutlass-fmha tables ------------------------------------------------------------
// Restated here from natten-reference.md §4.3 and from check_config in
// src/cuda/sm80/fna_{fwd,bwd}/*_dispatch.cpp, independently of src/core/configs.cpp.

using Shape = std::vector<int64_t>;
using Configs = std::vector<TileConfig>;

// The tables as plain lists (detail::config_table shares one immutable list).
template <typename Problem>
Configs table(const detail::BackendSpec& spec, const Problem& p, Pass pass) {
  return *detail::config_table(spec, p, pass);
}

TileConfig tc(Shape q, Shape kv) { return TileConfig{std::move(q), std::move(kv), KernelSchedule::none}; }

int64_t volume(const Shape& s) {
  int64_t v = 1;
  for (int64_t t : s) v *= t;
  return v;
}

// Every shape of `rank` axes, each a power of two in [min_axis, 128], of the given volume.
std::vector<Shape> shapes_of_volume(int rank, int64_t vol, int64_t min_axis = 2) {
  std::vector<Shape> out;
  std::vector<int> e(static_cast<size_t>(rank), 0);  // exponents, 0..7
  while (true) {
    Shape s;
    for (int x : e) s.push_back(int64_t{1} << x);
    if (volume(s) == vol && *std::min_element(s.begin(), s.end()) >= min_axis) out.push_back(s);
    size_t i = 0;
    while (i < e.size() && ++e[i] == 8) e[i++] = 0;
    if (i == e.size()) break;
  }
  return out;
}

// The kernels' constraints (check_config): `rank` axes of powers of two; forward Q and KV volume
// 64 or 128, backward Q and KV volume 64; no kernel schedule.
bool kernels_take(const TileConfig& c, int rank, Pass pass) {
  auto pow2_axes = [rank](const Shape& s) {
    if (static_cast<int>(s.size()) != rank) return false;
    for (int64_t t : s)
      if (t < 1 || (t & (t - 1)) != 0) return false;
    return true;
  };
  if (!pow2_axes(c.q_tile) || !pow2_axes(c.kv_tile) || c.schedule != KernelSchedule::none) return false;
  const int64_t q = volume(c.q_tile), kv = volume(c.kv_tile);
  if (pass == Pass::backward) return q == 64 && kv == 64;
  return (q == 64 || q == 128) && (kv == 64 || kv == 128);
}

// Descending lexicographic order by (q_tile, kv_tile), as within each of NATTEN's groups.
Configs sorted_desc(Configs g) {
  std::sort(g.begin(), g.end(), [](const TileConfig& a, const TileConfig& b) {
    return a.q_tile != b.q_tile ? a.q_tile > b.q_tile : a.kv_tile > b.kv_tile;
  });
  return g;
}

// kv = q with exactly one axis multiplied by `factor` (2: doubled; a halving is the same with q
// and kv swapped).
bool one_axis_scaled(const Shape& q, const Shape& kv, int64_t factor) {
  int changed = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    if (kv[i] == q[i]) continue;
    if (kv[i] != q[i] * factor) return false;
    ++changed;
  }
  return changed == 1;
}

struct NattenForward {
  Configs g32x128, g64x64, g64x128;
};

NattenForward natten_forward_groups(int rank) {
  NattenForward n;
  for (const auto& q : shapes_of_volume(rank, 32))
    for (const auto& kv : shapes_of_volume(rank, 128)) {
      bool divides = true;
      for (size_t i = 0; i < q.size(); ++i) divides = divides && kv[i] % q[i] == 0;
      if (divides) n.g32x128.push_back(tc(q, kv));
    }
  for (const auto& q : shapes_of_volume(rank, 64)) {
    n.g64x64.push_back(tc(q, q));
    for (const auto& kv : shapes_of_volume(rank, 128))
      if (one_axis_scaled(q, kv, 2)) n.g64x128.push_back(tc(q, kv));
  }
  n.g32x128 = sorted_desc(n.g32x128);
  n.g64x64 = sorted_desc(n.g64x64);
  n.g64x128 = sorted_desc(n.g64x128);
  return n;
}

Configs all_pairs(int rank, int64_t qv, int64_t kvv) {
  Configs g;
  for (const auto& q : shapes_of_volume(rank, qv))
    for (const auto& kv : shapes_of_volume(rank, kvv)) g.push_back(tc(q, kv));
  return sorted_desc(g);
}

TileConfig rank_default(int rank) {
  if (rank == 1) return tc({64}, {64});
  if (rank == 2) return tc({8, 8}, {8, 8});
  return tc({4, 4, 4}, {4, 4, 4});
}

// nattn's own 128-query forward tiles (SM90+): Q volume 128, KV = Q with one axis halved, no axis of
// 1 in a multi-axis KV tile. The 16-bit default there (what the dispatcher uses without a config).
Configs q128_group(int rank) {
  Configs g;
  for (const auto& q : shapes_of_volume(rank, 128))
    for (const auto& kv : shapes_of_volume(rank, 64, rank > 1 ? 2 : 1))
      if (one_axis_scaled(kv, q, 2)) g.push_back(tc(q, kv));
  return sorted_desc(g);
}

TileConfig q128_default(int rank) {
  if (rank == 1) return tc({128}, {64});
  if (rank == 2) return tc({16, 8}, {8, 8});
  return tc({4, 4, 8}, {2, 4, 8});
}

bool is16(DType t) { return t == DType::f16 || t == DType::bf16; }

// KV tiles the forward kernel walks over the whole problem, by brute force (stride 1, dilation 1,
// non-causal; batch, heads and sub-domains left out): every Q tile of the grid, the box of its
// queries' windows (window start clamp(i - k / 2, 0, n - k)), tiled from the box's first key.
double walked_kv_tiles(const NaProblem& p, const TileConfig& c) {
  const int rank = p.rank();
  std::vector<int64_t> tiles_per_axis(static_cast<size_t>(rank));
  for (int i = 0; i < rank; ++i)
    tiles_per_axis[static_cast<size_t>(i)] = (p.spatial[static_cast<size_t>(i)] + c.q_tile[static_cast<size_t>(i)] - 1) /
                                             c.q_tile[static_cast<size_t>(i)];
  double total = 0;
  std::vector<int64_t> t(static_cast<size_t>(rank), 0);
  while (true) {
    double tiles = 1;
    for (int i = 0; i < rank; ++i) {
      const size_t s = static_cast<size_t>(i);
      const int64_t n = p.spatial[s], k = p.params.kernel_size[s];
      int64_t lo = n, hi = 0;
      for (int64_t q = t[s] * c.q_tile[s]; q < std::min(n, (t[s] + 1) * c.q_tile[s]); ++q) {
        const int64_t start = std::min(std::max<int64_t>(q - k / 2, 0), n - k);
        lo = std::min(lo, start);
        hi = std::max(hi, start + k);
      }
      tiles *= static_cast<double>((hi - lo + c.kv_tile[s] - 1) / c.kv_tile[s]);
    }
    total += tiles;
    size_t i = 0;
    while (i < t.size() && ++t[i] == tiles_per_axis[i]) t[i++] = 0;
    if (i == t.size()) break;
  }
  return total;
}

// The forward default: on SM90+ in 16 bits, the 128-query pair that walks the fewest KV tiles (rank
// >= 2; ties keep q128_default); otherwise the fixed defaults.
TileConfig expected_forward_default(const NaProblem& p) {
  const int rank = p.rank(), cc = p.compute_capability;
  if (!(cc >= 90 && is16(p.dtype))) return rank_default(rank);
  TileConfig best = q128_default(rank);
  if (rank == 1) return best;
  double best_tiles = walked_kv_tiles(p, best);
  for (const TileConfig& c : q128_group(rank)) {
    const double tiles = walked_kv_tiles(p, c);
    if (tiles < best_tiles) {
      best = c;
      best_tiles = tiles;
    }
  }
  return best;
}

Configs move_to_front(Configs list, const TileConfig& def) {
  auto it = std::find(list.begin(), list.end(), def);
  EXPECT_NE(it, list.end()) << "default " << def.describe() << " is not in the list";
  if (it != list.end()) std::rotate(list.begin(), it, it + 1);
  return list;
}

Configs keep_runnable(const Configs& list, int rank, Pass pass) {
  Configs out;
  for (const auto& c : list)
    if (kernels_take(c, rank, pass)) out.push_back(c);
  return out;
}

// NATTEN's forward list: its groups in order (its default is moved first by expected_forward).
Configs natten_forward(int rank, int cc) {
  const NattenForward n = natten_forward_groups(rank);
  Configs all = n.g32x128;
  all.insert(all.end(), n.g64x64.begin(), n.g64x64.end());
  if (cc != 86 && cc != 89) all.insert(all.end(), n.g64x128.begin(), n.g64x128.end());
  return all;
}

// What the finder must list: NATTEN's entries the kernels take, our 128-query tiles on SM90+,
// the default first.
Configs expected_forward(const NaProblem& p) {
  const int rank = p.rank(), cc = p.compute_capability;
  Configs all = natten_forward(rank, cc);
  if (cc >= 90) {
    const Configs extra = q128_group(rank);
    all.insert(all.end(), extra.begin(), extra.end());
  }
  return move_to_front(keep_runnable(all, rank, Pass::forward), expected_forward_default(p));
}

// NATTEN's backward pools by dtype / cc / head dim (§4.3 table), in order.
Configs natten_backward(int rank, int cc, DType dtype, int64_t head_dim) {
  Configs all = all_pairs(rank, 64, 64);
  const bool big = cc == 80 || cc == 90 || cc == 100 || cc == 103;
  Configs more;
  if (big) more = all_pairs(rank, 128, is16(dtype) && head_dim <= 128 ? 128 : 64);
  all.insert(all.end(), more.begin(), more.end());
  return all;
}

Configs expected_backward(int rank, int cc, DType dtype, int64_t head_dim) {
  return move_to_front(keep_runnable(natten_backward(rank, cc, dtype, head_dim), rank, Pass::backward),
                       rank_default(rank));
}

NaProblem cuda_problem(int rank, int cc, DType dtype, int64_t head_dim = 64) {
  NaProblem p = na_problem(std::vector<int64_t>(static_cast<size_t>(rank), 16), dtype, kCuda, cc);
  p.head_dim = p.head_dim_v = head_dim;
  return p;
}

const int kCcs[] = {75, 80, 86, 89, 90, 100, 103, 120};
const DType kDtypes[] = {DType::f32, DType::f16, DType::bf16};

TEST(Finders, NattenCutlassListsAsRestatedHereMatchTheSpec) {
  // The test's own NATTEN lists against §4.3: forward groups 1/1/1, 12/5/10, 36/10/30; backward
  // pools 64x64 1/25/100, 128x64 1/30/150, 128x128 1/36/225; 2-D 32x128 led by ((16, 2), (64, 2)).
  const size_t g32[4] = {0, 1, 12, 36}, g64[4] = {0, 1, 5, 10}, g64x128[4] = {0, 1, 10, 30};
  const size_t p64[4] = {0, 1, 25, 100}, p128x64[4] = {0, 1, 30, 150}, p128[4] = {0, 1, 36, 225};
  for (int rank = 1; rank <= 3; ++rank) {
    const NattenForward n = natten_forward_groups(rank);
    EXPECT_EQ(n.g32x128.size(), g32[rank]) << rank;
    EXPECT_EQ(n.g64x64.size(), g64[rank]) << rank;
    EXPECT_EQ(n.g64x128.size(), g64x128[rank]) << rank;
    EXPECT_EQ(all_pairs(rank, 64, 64).size(), p64[rank]) << rank;
    EXPECT_EQ(all_pairs(rank, 128, 64).size(), p128x64[rank]) << rank;
    EXPECT_EQ(all_pairs(rank, 128, 128).size(), p128[rank]) << rank;
  }
  EXPECT_EQ(natten_forward_groups(1).g32x128[0], tc({32}, {128}));
  EXPECT_EQ(natten_forward_groups(2).g32x128[0], tc({16, 2}, {64, 2}));
  EXPECT_EQ(natten_forward_groups(2).g64x128.back(), tc({2, 32}, {2, 64}));
  EXPECT_EQ(q128_group(1), (Configs{tc({128}, {64})}));
  EXPECT_EQ(q128_group(2).size(), 10u);
  EXPECT_EQ(q128_group(3).size(), 30u);
  // The kernels' constraints reject what they must.
  EXPECT_FALSE(kernels_take(tc({16, 2}, {64, 2}), 2, Pass::forward));  // 32 queries
  EXPECT_FALSE(kernels_take(tc({8, 8}, {16, 16}), 2, Pass::forward));  // 256 keys
  EXPECT_FALSE(kernels_take(tc({8, 8}, {8, 8, 1}), 2, Pass::forward));  // rank
  EXPECT_FALSE(kernels_take(tc({12, 8}, {8, 8}), 2, Pass::forward));  // not a power of two
  EXPECT_FALSE(kernels_take(tc({16, 8}, {8, 8}), 2, Pass::backward));  // 128 queries
  EXPECT_TRUE(kernels_take(tc({16, 8}, {16, 8}), 2, Pass::forward));
  EXPECT_TRUE(kernels_take(tc({1, 64}, {64, 1}), 2, Pass::backward));
}

TEST(Finders, CutlassListsOnlyShapesTheKernelsRun) {
  const detail::BackendSpec& fna = *detail::find_spec("cutlass-fna");
  const detail::BackendSpec& fmha = *detail::find_spec("cutlass-fmha");
  for (int rank = 1; rank <= 3; ++rank)
    for (int cc : kCcs)
      for (DType dtype : kDtypes)
        for (int64_t hd : {64, 256}) {
          const NaProblem p = cuda_problem(rank, cc, dtype, hd);
          FmhaProblem f = fmha_problem(kCuda, cc, dtype);
          f.head_dim = f.head_dim_v = hd;
          const std::string where = "rank " + std::to_string(rank) + " cc " + std::to_string(cc) + " " +
                                    dtype_name(dtype) + " hd " + std::to_string(hd);
          for (Pass pass : {Pass::forward, Pass::backward}) {
            const Configs na = table(fna, p, pass);
            ASSERT_FALSE(na.empty()) << where;
            for (size_t i = 0; i < na.size(); ++i) {
              EXPECT_TRUE(kernels_take(na[i], rank, pass)) << where << ": " << na[i].describe();
              for (size_t j = i + 1; j < na.size(); ++j) EXPECT_FALSE(na[i] == na[j]) << where << na[i].describe();
            }
            if (rank == 1) {  // FMHA lists are the 1-D NA lists
              const Configs fm = table(fmha, f, pass);
              EXPECT_EQ(fm, na) << where;
              for (const auto& c : fm) EXPECT_TRUE(kernels_take(c, 1, pass)) << where << ": " << c.describe();
            }
          }
        }
}

TEST(Finders, CutlassListsAreNattensRunnableEntries) {
  const detail::BackendSpec& fna = *detail::find_spec("cutlass-fna");
  for (int rank = 1; rank <= 3; ++rank)
    for (int cc : kCcs)
      for (DType dtype : kDtypes)
        for (int64_t hd : {64, 256}) {
          const NaProblem p = cuda_problem(rank, cc, dtype, hd);
          const std::string where = "rank " + std::to_string(rank) + " cc " + std::to_string(cc) + " " +
                                    dtype_name(dtype) + " hd " + std::to_string(hd);
          const Configs fwd = table(fna, p, Pass::forward);
          EXPECT_EQ(fwd, expected_forward(p)) << where;
          EXPECT_EQ(table(fna, p, Pass::backward), expected_backward(rank, cc, dtype, hd)) << where;
          // Every entry is NATTEN's, except our 128-query tiles on SM90+.
          const Configs natten = natten_forward(rank, cc);
          for (const auto& c : fwd)
            if (std::find(natten.begin(), natten.end(), c) == natten.end()) {
              EXPECT_GE(cc, 90) << where << ": " << c.describe();
              EXPECT_EQ(volume(c.q_tile), 128) << where << ": " << c.describe();
            }
        }
  // The sizes (NATTEN's: forward 3/27/76 on cc 80, 2/17/46 on cc 86/89; backward up to 2/61/325).
  const size_t fwd80[4] = {0, 2, 15, 40}, fwd86[4] = {0, 1, 5, 10}, fwd90[4] = {0, 3, 25, 70};
  const size_t bwd[4] = {0, 1, 25, 100};
  for (int rank = 1; rank <= 3; ++rank) {
    EXPECT_EQ(table(fna, cuda_problem(rank, 80, DType::f16), Pass::forward).size(), fwd80[rank]);
    EXPECT_EQ(table(fna, cuda_problem(rank, 75, DType::f32), Pass::forward).size(), fwd80[rank]);
    EXPECT_EQ(table(fna, cuda_problem(rank, 86, DType::f16), Pass::forward).size(), fwd86[rank]);
    EXPECT_EQ(table(fna, cuda_problem(rank, 89, DType::bf16), Pass::forward).size(), fwd86[rank]);
    EXPECT_EQ(table(fna, cuda_problem(rank, 90, DType::bf16), Pass::forward).size(), fwd90[rank]);
    EXPECT_EQ(table(fna, cuda_problem(rank, 90, DType::f32), Pass::forward).size(), fwd90[rank]);
    EXPECT_EQ(table(fna, cuda_problem(rank, 80, DType::f16), Pass::backward).size(), bwd[rank]);
    EXPECT_EQ(table(fna, cuda_problem(rank, 80, DType::f32), Pass::backward).size(), bwd[rank]);
  }
  // NATTEN's shapes the kernels do not take are gone; the familiar runnable ones stay.
  const Configs f2 = table(fna, cuda_problem(2, 80, DType::f16), Pass::forward);
  EXPECT_EQ(std::find(f2.begin(), f2.end(), tc({16, 2}, {64, 2})), f2.end());
  EXPECT_EQ(std::find(f2.begin(), f2.end(), tc({4, 8}, {8, 16})), f2.end());
  EXPECT_NE(std::find(f2.begin(), f2.end(), tc({8, 8}, {16, 8})), f2.end());
  EXPECT_NE(std::find(f2.begin(), f2.end(), tc({4, 16}, {4, 16})), f2.end());
  const Configs b2 = table(fna, cuda_problem(2, 80, DType::f16), Pass::backward);
  EXPECT_EQ(std::find(b2.begin(), b2.end(), tc({8, 16}, {8, 16})), b2.end());
  EXPECT_NE(std::find(b2.begin(), b2.end(), tc({2, 32}, {16, 4})), b2.end());
  EXPECT_EQ((table(fna, cuda_problem(1, 80, DType::f16), Pass::forward)),
            (Configs{tc({64}, {64}), tc({64}, {128})}));
  EXPECT_EQ((table(fna, cuda_problem(1, 90, DType::f16), Pass::forward)),
            (Configs{tc({128}, {64}), tc({64}, {64}), tc({64}, {128})}));
}

TEST(Finders, CutlassDefaultsComeFirst) {
  // The dispatcher runs list.front() when no config is given: these are its defaults.
  const detail::BackendSpec& fna = *detail::find_spec("cutlass-fna");
  const detail::BackendSpec& fmha = *detail::find_spec("cutlass-fmha");
  for (int rank = 1; rank <= 3; ++rank)
    for (int cc : kCcs)
      for (DType dtype : kDtypes) {
        const NaProblem p = cuda_problem(rank, cc, dtype);
        const TileConfig fwd_def = cc >= 90 && is16(dtype) ? q128_default(rank) : rank_default(rank);
        EXPECT_EQ(table(fna, p, Pass::forward).front(), expected_forward_default(p)) << rank << " " << cc;
        EXPECT_EQ(table(fna, p, Pass::backward).front(), rank_default(rank)) << rank << " " << cc;
        if (rank == 1) {
          const FmhaProblem f = fmha_problem(kCuda, cc, dtype);
          EXPECT_EQ(table(fmha, f, Pass::forward).front(), fwd_def) << cc;
          EXPECT_EQ(table(fmha, f, Pass::backward).front(), rank_default(1)) << cc;
        }
      }
}

TEST(Finders, CutlassForwardDefaultWalksTheFewestKvTiles) {
  // The two 3-D video problems of shared/design/anchors.md: the tile-walk count picks the configs
  // measured fastest there (bench/RESULTS.md), not the fixed default (4,4,8)/(2,4,8).
  const detail::BackendSpec& fna = *detail::find_spec("cutlass-fna");
  struct Case {
    Shape spatial, kernel;
    TileConfig want;
  };
  const Case cases[] = {{{16, 44, 80}, {8, 16, 24}, tc({4, 4, 8}, {4, 4, 4})},
                        {{30, 48, 80}, {18, 24, 24}, tc({2, 8, 8}, {2, 4, 8})},
                        {{16, 16, 16}, {16, 16, 16}, q128_default(3)}};  // one box for every Q tile: a tie
  for (const Case& c : cases) {
    NaProblem p = na_problem(c.spatial, DType::bf16, kCuda, 90);
    p.head_dim = p.head_dim_v = 128;
    for (size_t i = 0; i < c.kernel.size(); ++i) p.params.kernel_size[i] = c.kernel[i];
    EXPECT_EQ(expected_forward_default(p), c.want) << p.describe();
    EXPECT_EQ(table(fna, p, Pass::forward).front(), c.want) << p.describe();
    // Below SM90 and in fp32 the fixed defaults stay.
    p.compute_capability = 80;
    EXPECT_EQ(table(fna, p, Pass::forward).front(), rank_default(3)) << p.describe();
    p.compute_capability = 90;
    p.dtype = DType::f32;
    EXPECT_EQ(table(fna, p, Pass::forward).front(), rank_default(3)) << p.describe();
  }
  // The cached list is per problem: a second problem of the same rank gets its own default.
  NaProblem a = na_problem({16, 44, 80}, DType::bf16, kCuda, 90), b = a;
  for (size_t i = 0; i < 3; ++i) a.params.kernel_size[i] = Shape{8, 16, 24}[i];
  for (size_t i = 0; i < 3; ++i) b.params.kernel_size[i] = 3;
  EXPECT_EQ(table(fna, a, Pass::forward).front(), expected_forward_default(a));
  EXPECT_EQ(table(fna, b, Pass::forward).front(), expected_forward_default(b));
  EXPECT_EQ(table(fna, a, Pass::forward).front(), expected_forward_default(a));
}

TEST(Finders, CutlassResolveConfigRejectsUnlistedShapes) {
  const NaProblem p = cuda_problem(2, 80, DType::f16);
  if (get_configs("cutlass-fna", p).empty() || get_bwd_configs("cutlass-fna", p).empty())
    GTEST_SKIP() << "cutlass-fna (fp16, head dim 64) is not built: resolve_config has nothing to resolve";
  EXPECT_EQ(resolve_config("cutlass-fna", p, Pass::forward, std::nullopt), tc({8, 8}, {8, 8}));
  EXPECT_EQ(resolve_config("cutlass-fna", p, Pass::backward, std::nullopt), tc({8, 8}, {8, 8}));
  EXPECT_EQ(resolve_config("cutlass-fna", p, Pass::forward, tc({8, 8}, {16, 8})), tc({8, 8}, {16, 8}));
  const NaProblem p90 = cuda_problem(2, 90, DType::bf16);
  if (!get_configs("cutlass-fna", p90).empty()) {  // bf16 may be left out of the build
    EXPECT_EQ(resolve_config("cutlass-fna", p90, Pass::forward, std::nullopt), expected_forward_default(p90));
  }
  struct Case {
    Pass pass;
    TileConfig config;
    const char* text;
    const char* finder;
  };
  // NATTEN lists these; the kernels do not run them.
  const Case cases[] = {{Pass::forward, tc({4, 8}, {8, 16}), "q_tile=(4, 8) kv_tile=(8, 16)", "get_configs"},
                        {Pass::backward, tc({8, 16}, {8, 16}), "q_tile=(8, 16) kv_tile=(8, 16)", "get_bwd_configs"}};
  for (const Case& c : cases) {
    try {
      resolve_config("cutlass-fna", p, c.pass, c.config);
      ADD_FAILURE() << "expected ValueError for " << c.text;
    } catch (const ValueError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(c.text), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string(c.finder) + " "), std::string::npos) << msg;
      EXPECT_NE(msg.find("cutlass-fna"), std::string::npos) << msg;
    }
  }
}

TEST(Finders, HopperBlackwellFlexTables) {
  NaProblem p = na_problem({16, 16}, DType::bf16, kCuda, 90);
  p.head_dim = p.head_dim_v = 128;
  // hopper-fna: Q tile = every power-of-two shape of volume 128 with axes >= 2, KV tile = every one
  // with axes >= 1, ping-pong; the same pairs for every problem of a rank, fewest walked tiles first;
  // then the cooperative schedule of the q == kv pairs, in the same order.
  const auto h = table(*detail::find_spec("hopper-fna"), p, Pass::forward);
  ASSERT_EQ(h.size(), 48u + 6u);  // 6 Q shapes (2,64) .. (64,2) x 8 KV shapes (1,128) .. (128,1); 6 coop
  std::vector<TileConfig> pp_same;
  for (size_t i = 0; i < h.size(); ++i) {
    const TileConfig& c = h[i];
    EXPECT_EQ(c.q_tile[0] * c.q_tile[1], 128);
    EXPECT_GE(std::min(c.q_tile[0], c.q_tile[1]), 2);
    EXPECT_EQ(c.kv_tile[0] * c.kv_tile[1], 128);
    EXPECT_EQ(c.schedule, i < 48 ? KernelSchedule::pingpong : KernelSchedule::cooperative) << i;
    if (i < 48 && c.q_tile == c.kv_tile) pp_same.push_back(c);
    if (i >= 48) {
      EXPECT_EQ(c.q_tile, c.kv_tile);
      EXPECT_EQ(c.q_tile, pp_same[i - 48].q_tile);  // the ping-pong entries' order
    }
  }
  EXPECT_TRUE(table(*detail::find_spec("hopper-fna"), p, Pass::backward).empty());
  p.spatial = {8, 16, 16};
  p.params = NaParams::uniform(3, 3);
  p.head_dim = p.head_dim_v = 64;
  auto h3 = table(*detail::find_spec("hopper-fna"), p, Pass::forward);
  ASSERT_EQ(h3.size(), 540u + 15u);  // Q: exponents >= 1 summing to 7 over 3 axes, C(6, 2) = 15; KV: C(9, 2) = 36
  // The 3-D video problem (anchors.md): at stride 1 one-plane KV tiles (1, 4, 32) walk the fewest
  // tiles but all of them masked, (2, 8, 8) a few more with many unmasked (the faster one on the
  // H100); the block-sparse stride 16x8x8 takes KV tiles (2, 8, 8), which tile its 18x24x24 windows
  // exactly.
  p.spatial = {30, 48, 80};
  p.params.kernel_size = {18, 24, 24};
  p.head_dim = p.head_dim_v = 128;
  auto video = table(*detail::find_spec("hopper-fna"), p, Pass::forward);
  EXPECT_EQ(video[0], (TileConfig{{2, 8, 8}, {2, 8, 8}, KernelSchedule::pingpong}));
  EXPECT_EQ(video[540], (TileConfig{{2, 8, 8}, {2, 8, 8}, KernelSchedule::cooperative}));
  p.params.stride = {16, 8, 8};
  auto sparse = table(*detail::find_spec("hopper-fna"), p, Pass::forward);
  EXPECT_EQ(sparse[0].kv_tile, (std::vector<int64_t>{2, 8, 8}));
  // Same pairs whatever the problem, only the order differs.
  for (auto* list : {&h3, &video, &sparse}) std::sort(list->begin(), list->end(), [](const TileConfig& a, const TileConfig& b) {
      return a.describe() < b.describe();
    });
  EXPECT_EQ(h3, video);
  EXPECT_EQ(h3, sparse);
  // Head dim 256 (or a head dim padded to it) runs KV tiles of 64 tokens: Q 15 shapes x KV C(8, 2) = 28
  // shapes, the same pairs for every problem; cooperative: the 15 pairs with NATTEN's KV tile (4, 4, 4).
  p.params = NaParams::uniform(3, 3);
  p.spatial = {8, 16, 16};
  p.head_dim = 256;
  p.head_dim_v = 192;
  auto h256 = table(*detail::find_spec("hopper-fna"), p, Pass::forward);
  ASSERT_EQ(h256.size(), 420u + 15u);
  for (size_t i = 0; i < h256.size(); ++i) {
    const TileConfig& c = h256[i];
    EXPECT_EQ(c.q_tile[0] * c.q_tile[1] * c.q_tile[2], 128);
    EXPECT_EQ(c.kv_tile[0] * c.kv_tile[1] * c.kv_tile[2], 64) << c.describe();
    if (i >= 420) {
      EXPECT_EQ(c, (TileConfig{c.q_tile, {4, 4, 4}, KernelSchedule::cooperative}));
    }
  }
  p.spatial = {30, 48, 80};
  p.params.kernel_size = {18, 24, 24};
  p.head_dim = p.head_dim_v = 256;
  auto video256 = table(*detail::find_spec("hopper-fna"), p, Pass::forward);
  std::sort(video256.begin(), video256.end(), [](const TileConfig& a, const TileConfig& b) {
    return a.describe() < b.describe();
  });
  std::sort(h256.begin(), h256.end(), [](const TileConfig& a, const TileConfig& b) { return a.describe() < b.describe(); });
  EXPECT_EQ(h256, video256);
  p.spatial = {8, 16, 16};
  p.head_dim = p.head_dim_v = 64;
  p.params = NaParams::uniform(3, 3);
  const FmhaProblem hf = fmha_problem(kCuda, 90, DType::bf16);
  const auto hfl = table(*detail::find_spec("hopper-fmha"), hf, Pass::forward);
  ASSERT_EQ(hfl.size(), 2u);
  EXPECT_EQ(hfl[0], (TileConfig{{128}, {128}, KernelSchedule::pingpong}));
  EXPECT_EQ(hfl[1], (TileConfig{{128}, {128}, KernelSchedule::cooperative}));
  FmhaProblem hf256 = hf;  // head dim 256 runs 64-key tiles
  hf256.head_dim = hf256.head_dim_v = 256;
  const auto hfl256 = table(*detail::find_spec("hopper-fmha"), hf256, Pass::forward);
  ASSERT_EQ(hfl256.size(), 2u);
  EXPECT_EQ(hfl256[0], (TileConfig{{128}, {64}, KernelSchedule::pingpong}));
  EXPECT_EQ(hfl256[1], (TileConfig{{128}, {64}, KernelSchedule::cooperative}));
  const auto b3 = table(*detail::find_spec("blackwell-fna"), p, Pass::forward);
  EXPECT_EQ(b3.size(), 7u);
  EXPECT_EQ(b3[0], (TileConfig{{8, 4, 8}, {4, 4, 8}, KernelSchedule::none}));
  EXPECT_EQ(table(*detail::find_spec("blackwell-fna"), p, Pass::backward).size(), 9u);
  const auto fx = table(*detail::find_spec("flex-fna"), p, Pass::forward);
  EXPECT_EQ(fx.size(), 3u);
  const FmhaProblem f = fmha_problem(kCuda, 80, DType::f16);
  const auto cf = table(*detail::find_spec("cutlass-fmha"), f, Pass::forward);
  ASSERT_EQ(cf.size(), 2u);  // NATTEN's (32, 128) is not run by the kernels
  EXPECT_EQ(cf[0], (TileConfig{{64}, {64}, KernelSchedule::none}));
}

TEST(Finders, CpuAndReferenceConfigs) {
  for (int rank = 1; rank <= 3; ++rank) {
    const NaProblem p = na_problem(std::vector<int64_t>(static_cast<size_t>(rank), 8));
    const auto cpu = get_configs("cpu", p);
    ASSERT_FALSE(cpu.empty());
    for (const auto& c : cpu) EXPECT_EQ(static_cast<int>(c.q_tile.size()), rank) << c.describe();
    EXPECT_EQ(get_bwd_configs("cpu", p).size(), cpu.size());
    const auto ref = get_configs("reference", p);
    ASSERT_EQ(ref.size(), 1u);
    EXPECT_TRUE(ref[0].q_tile.empty());
    EXPECT_TRUE(get_configs("hopper-fna", p).empty());  // cannot run a CPU problem
  }
  // flex-* live in the Python package: their finders answer from the capability table.
  NaProblem flex = na_problem({16, 16}, DType::bf16, kCuda, 90);
  EXPECT_EQ(get_configs("flex-fna", flex).size(), 3u);
  flex.head_dim = flex.head_dim_v = 48;
  EXPECT_TRUE(get_configs("flex-fna", flex).empty());
  EXPECT_THROW(get_configs("nope", na_problem({8})), NotImplementedError);
}

TEST(Finders, ResolveConfigChecksTheList) {
  const NaProblem p = na_problem({16, 16});
  const auto list = get_configs("cpu", p);
  EXPECT_EQ(resolve_config("cpu", p, Pass::forward, std::nullopt), list.front());
  EXPECT_EQ(resolve_config("cpu", p, Pass::forward, list.back()), list.back());
  try {
    resolve_config("cpu", p, Pass::forward, TileConfig{{3, 5}, {}, KernelSchedule::none});
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("q_tile=(3, 5)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("get_configs"), std::string::npos) << msg;
    EXPECT_NE(msg.find(list.front().describe()), std::string::npos) << msg;
  }
}

TEST(Finders, ShapesWithoutAScheduleTakeTheListedSchedule) {
  NaProblem p = na_problem({16, 16}, DType::bf16, kCuda, 90);
  p.head_dim = p.head_dim_v = 64;
  if (!built("hopper-fna") || get_configs("hopper-fna", p).empty())
    GTEST_SKIP() << "hopper-fna (bf16, head dim 64) is not built";
  const TileConfig got = resolve_config("hopper-fna", p, Pass::forward, TileConfig{{8, 16}, {8, 16}, KernelSchedule::none});
  EXPECT_EQ(got, (TileConfig{{8, 16}, {8, 16}, KernelSchedule::pingpong}));
  // A schedule alone takes the default shapes (NATTEN): "coop" is listed for them, "non" is not.
  const TileConfig def = get_configs("hopper-fna", p).front();
  EXPECT_EQ(resolve_config("hopper-fna", p, Pass::forward, TileConfig{{}, {}, KernelSchedule::cooperative}),
            (TileConfig{def.q_tile, def.kv_tile, KernelSchedule::cooperative}));
  EXPECT_THROW(resolve_config("hopper-fna", p, Pass::forward, TileConfig{{}, {}, KernelSchedule::non_persistent}),
               ValueError);
  EXPECT_THROW(resolve_config("hopper-fna", p, Pass::forward, TileConfig{{8, 8}, {8, 8}, KernelSchedule::none}),
               ValueError);  // volume 64: not listed with any schedule
}

TEST(Selection, NamedBackendMustExistAndFit) {
  const NaProblem p = na_problem({16, 16});
  EXPECT_EQ(resolve_backend("reference", p, Pass::backward), "reference");
  try {
    resolve_backend("natten-cpu", p, Pass::forward);
    FAIL();
  } catch (const NotImplementedError& e) {
    EXPECT_NE(std::string(e.what()).find("known backends: "), std::string::npos) << e.what();
  }
  try {
    resolve_backend("cutlass-fna", p, Pass::forward);
    FAIL();
  } catch (const NotImplementedError& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA tensors only"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nattn
