// `nattn profile` on the GPU: the tensors live on cuda:0, the CUDA backends are timed (ctest label
// cuda; built with NATTN_ENABLE_CUDA, skips without a CUDA device). Problems use fp16 and head dim
// 32, which every kernel filter (NATTN_CUDA_DTYPES / NATTN_CUDA_HEAD_DIMS) of the GPU builds keeps.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "tools/cli_test_util.h"

namespace {

using namespace nattn::test::cli;

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

int gpu_cc() {
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  return major * 10 + minor;
}

// A small 2-D fp16 problem.
std::vector<std::string> gpu_problem(std::vector<std::string> extra) {
  std::vector<std::string> args{"-i", "16", "12", "-w", "5", "3", "-b", "2", "-n", "2", "-d", "32",
                                "--dtype", "fp16", "--warmup-steps", "2", "--iterations", "5", "--no-progress"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

Json run_json(const std::vector<std::string>& extra, const std::string& name, CliResult& r) {
  const std::string path = temp_path(name);
  std::remove(path.c_str());
  std::vector<std::string> args = gpu_problem(extra);
  args.insert(args.end(), {"--json", path});
  r = run_profile(args);
  Json json;
  if (r.exit_code != 0) return json;
  const std::string text = read_file(path);
  EXPECT_NO_THROW(json = JsonParser(text).parse()) << text;
  return json;
}

class CliProfileCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CliProfileCuda, CutlassFnaForwardRunsOnCuda0) {
  CliResult r;
  const Json json = run_json({"--backend", "cutlass-fna"}, "cutlass_fwd.json", r);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "device cuda:0 (")) << r.out;
  EXPECT_TRUE(contains(r.out, "(wall clock, cudaDeviceSynchronize before and after each call)")) << r.out;
  EXPECT_TRUE(contains(r.out, "| cutlass-fna")) << r.out;
  EXPECT_FALSE(contains(r.out, "Threads: ")) << r.out;  // a CPU-only setting

  EXPECT_EQ(json.at("device").text, "cuda:0");
  EXPECT_EQ(json.at("compute_capability").number, gpu_cc());
  EXPECT_FALSE(json.at("device_name").text.empty());
  EXPECT_TRUE(contains(json.at("timing").text, "cudaDeviceSynchronize")) << json.at("timing").text;
  EXPECT_EQ(json.at("backend").at("forward").text, "cutlass-fna");
  const Json& ops = json.at("operations");
  ASSERT_EQ(ops.items.size(), 1u) << r.out;
  EXPECT_EQ(ops.items[0].at("operation").text, "NaForward");
  EXPECT_EQ(ops.items[0].at("calls").number, 5);
  EXPECT_GT(ops.items[0].at("median_us").number, 0);
  EXPECT_GT(ops.items[0].at("min_us").number, 0);
  EXPECT_GT(json.at("gflops").at("forward").number, 0);
}

TEST_F(CliProfileCuda, CutlassFnaBackpropWithAdditionalKv) {
  CliResult r;
  const Json json = run_json({"--backend", "cutlass-fna", "--backprop", "--add-kv", "4"}, "cutlass_bwd.json", r);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(json.at("device").text, "cuda:0");
  const Json& ops = json.at("operations");
  ASSERT_EQ(ops.items.size(), 2u) << r.out;
  EXPECT_EQ(ops.items[1].at("operation").text, "NaBackward");
  for (const Json& op : ops.items) EXPECT_GT(op.at("median_us").number, 0) << op.at("operation").text;
}

TEST_F(CliProfileCuda, AutomaticChoiceIsACudaBackend) {
  CliResult r;
  const Json json = run_json({}, "auto.json", r);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(json.at("device").text, "cuda:0");
  const std::string backend = json.at("backend").at("forward").text;
  EXPECT_TRUE(backend.rfind("cutlass-", 0) == 0 || backend.rfind("hopper-", 0) == 0) << backend;
  EXPECT_TRUE(contains(r.out, "cpu: rejected")) << r.out;  // the CPU backends on a CUDA problem
}

TEST_F(CliProfileCuda, DeviceCpuStaysOnTheHost) {
  CliResult r;
  const Json json = run_json({"--device", "cpu"}, "cpu.json", r);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(json.at("device").text, "cpu");
  EXPECT_EQ(json.at("backend").at("forward").text, "cpu");
}

TEST_F(CliProfileCuda, HopperFnaOnSm90) {
  if (gpu_cc() != 90) GTEST_SKIP() << "hopper-fna needs compute capability 9.0";
  CliResult r;
  const Json json = run_json({"--backend", "hopper-fna"}, "hopper.json", r);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(json.at("device").text, "cuda:0");
  EXPECT_EQ(json.at("backend").at("forward").text, "hopper-fna");
  EXPECT_GT(json.at("operations").items.at(0).at("median_us").number, 0);
}

TEST_F(CliProfileCuda, OptimizeSearchesCutlassConfigs) {
  const CliResult r = run_profile(
      gpu_problem({"--backend", "cutlass-fna", "--optimize", "--optimize-warmup-steps", "1", "--backprop"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, " forward pass configs")) << r.out;
  EXPECT_TRUE(contains(r.out, " backward pass configs")) << r.out;
  EXPECT_TRUE(contains(r.out, "Best configuration")) << r.out;
  EXPECT_TRUE(contains(r.out, "| device ")) << r.out;
  EXPECT_TRUE(contains(r.out, "| cuda:0 ")) << r.out;
  EXPECT_TRUE(contains(r.out, "NaBackward")) << r.out;
}

TEST_F(CliProfileCuda, DryRunListsCudaBackends) {
  const CliResult r = run_profile({"-i", "16", "16", "-w", "5", "--dtype", "fp16", "-d", "32", "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "device cuda:0")) << r.out;
  EXPECT_TRUE(contains(r.out, "cutlass-fna: compatible")) << r.out;
  EXPECT_TRUE(contains(r.out, "Backend: cutlass-fna / Forward pass configurations")) << r.out;
}

}  // namespace
