// Backend registry, selection with reasons, config finders and their tables.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "core/tables.h"
#include "nattn/backends.h"
#include "nattn/errors.h"

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
    // cutlass-* are built when CUDA is enabled; hopper/blackwell/flex are not built by this library yet.
    if (b.name.rfind("cutlass-", 0) != 0) {
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

TEST(Registry, CudaProblemsWithoutABuiltBackendAreRejectedWithReasons) {
  const NaProblem p = na_problem({16, 16}, DType::bf16, kCuda, 90);
  const Selection sel = choose_backend(p, Pass::forward);
  EXPECT_EQ(reject_reason("hopper-fna", p, Pass::forward), "hopper-fna is not built into this library");
  EXPECT_NE(reject_reason("cpu", p, Pass::forward).find("CPU tensors only"), std::string::npos);
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
  // hopper: fp16/bf16 only, head dims 32/64/128/256, cc 90, forward only.
  NaProblem p = na_problem({16, 16}, DType::f32, kCuda, 90);
  EXPECT_NE(reject_reason("hopper-fna", p, Pass::forward).find("does not support dtype fp32"), std::string::npos);
  p.dtype = DType::f16;
  p.head_dim = p.head_dim_v = 80;
  EXPECT_NE(reject_reason("hopper-fna", p, Pass::forward).find("head_dim 32/64/128/256 (got 80)"), std::string::npos);
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

TEST(Finders, CutlassTablesMatchTheSpec) {
  // natten-reference.md §4.3: forward group counts 1/1/1, 12/5/10, 36/10/30 (64x128 omitted on
  // cc 86/89); backward pools 64x64 1/25/100, 128x64 1/30/150, 128x128 1/36/225.
  const detail::BackendSpec& fna = *detail::find_spec("cutlass-fna");
  const size_t fwd80[4] = {0, 3, 27, 76}, fwd86[4] = {0, 2, 17, 46};
  const size_t bwd16[4] = {0, 2, 61, 325}, bwd32_80[4] = {0, 2, 55, 250}, bwd32_75[4] = {0, 1, 25, 100};
  for (int rank = 1; rank <= 3; ++rank) {
    std::vector<int64_t> spatial(static_cast<size_t>(rank), 16);
    NaProblem p = na_problem(spatial, DType::f16, kCuda, 80);
    const auto f80 = detail::config_table(fna, p, Pass::forward);
    EXPECT_EQ(f80.size(), fwd80[rank]) << rank;
    EXPECT_EQ(detail::config_table(fna, p, Pass::backward).size(), bwd16[rank]) << rank;
    p.compute_capability = 86;
    EXPECT_EQ(detail::config_table(fna, p, Pass::forward).size(), fwd86[rank]) << rank;
    p.dtype = DType::f32;
    EXPECT_EQ(detail::config_table(fna, p, Pass::backward).size(), bwd32_75[rank]) << rank;  // cc 86
    p.compute_capability = 80;
    EXPECT_EQ(detail::config_table(fna, p, Pass::backward).size(), bwd32_80[rank]) << rank;
    p.compute_capability = 75;
    EXPECT_EQ(detail::config_table(fna, p, Pass::backward).size(), bwd32_75[rank]) << rank;
    // No duplicates, no axis of 1, Q/KV ranks match.
    for (size_t i = 0; i < f80.size(); ++i) {
      EXPECT_EQ(static_cast<int>(f80[i].q_tile.size()), rank);
      EXPECT_EQ(static_cast<int>(f80[i].kv_tile.size()), rank);
      for (int64_t t : f80[i].q_tile) EXPECT_GE(t, 2);
      for (size_t j = i + 1; j < f80.size(); ++j) EXPECT_FALSE(f80[i] == f80[j]) << f80[i].describe();
    }
  }
  // Defaults first, then the 32x128 group in descending order: ((16, 2), (64, 2)) leads in 2-D.
  const NaProblem p2 = na_problem({16, 16}, DType::f16, kCuda, 80);
  const auto f2 = detail::config_table(fna, p2, Pass::forward);
  EXPECT_EQ(f2[0], (TileConfig{{8, 8}, {8, 8}, KernelSchedule::none}));
  EXPECT_EQ(f2[1], (TileConfig{{16, 2}, {64, 2}, KernelSchedule::none}));
  const NaProblem p1 = na_problem({128}, DType::f16, kCuda, 80);
  const auto f1 = detail::config_table(fna, p1, Pass::forward);
  EXPECT_EQ(f1[0], (TileConfig{{64}, {64}, KernelSchedule::none}));
  EXPECT_EQ(f1[1], (TileConfig{{32}, {128}, KernelSchedule::none}));
  EXPECT_EQ(f1[2], (TileConfig{{64}, {128}, KernelSchedule::none}));
}

TEST(Finders, HopperBlackwellFlexTables) {
  NaProblem p = na_problem({16, 16}, DType::bf16, kCuda, 90);
  p.head_dim = p.head_dim_v = 128;
  const auto h = detail::config_table(*detail::find_spec("hopper-fna"), p, Pass::forward);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0], (TileConfig{{16, 8}, {16, 8}, KernelSchedule::cooperative}));
  EXPECT_EQ(h[1], (TileConfig{{16, 8}, {16, 8}, KernelSchedule::pingpong}));
  p.spatial = {8, 16, 16};
  p.params = NaParams::uniform(3, 3);
  p.head_dim = p.head_dim_v = 64;
  const auto h3 = detail::config_table(*detail::find_spec("hopper-fna"), p, Pass::forward);
  ASSERT_EQ(h3.size(), 2u);
  EXPECT_EQ(h3[0], (TileConfig{{4, 4, 4}, {4, 4, 8}, KernelSchedule::non_persistent}));
  const auto b3 = detail::config_table(*detail::find_spec("blackwell-fna"), p, Pass::forward);
  EXPECT_EQ(b3.size(), 7u);
  EXPECT_EQ(b3[0], (TileConfig{{8, 4, 8}, {4, 4, 8}, KernelSchedule::none}));
  EXPECT_EQ(detail::config_table(*detail::find_spec("blackwell-fna"), p, Pass::backward).size(), 9u);
  const auto fx = detail::config_table(*detail::find_spec("flex-fna"), p, Pass::forward);
  EXPECT_EQ(fx.size(), 3u);
  const FmhaProblem f = fmha_problem(kCuda, 80, DType::f16);
  const auto cf = detail::config_table(*detail::find_spec("cutlass-fmha"), f, Pass::forward);
  ASSERT_EQ(cf.size(), 3u);
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
