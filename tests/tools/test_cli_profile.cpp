// `nattn profile`: runs the built CLI (NATTN_CLI_PATH) and checks its tables, JSON and errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "tools/cli_test_util.h"

namespace {

using namespace nattn::test::cli;

// ---- normal mode -------------------------------------------------------------------------------

TEST(CliProfile, ForwardOnCpuPrintsTableWithForwardAndTotalRows) {
  const CliResult r = run_profile(small_problem({"--backend", "cpu"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "Profiler results"));
  EXPECT_TRUE(contains(r.out, "| Backend")) << r.out;
  EXPECT_TRUE(contains(r.out, "| Operation")) << r.out;
  EXPECT_TRUE(contains(r.out, "# calls")) << r.out;
  EXPECT_TRUE(contains(r.out, "Runtime")) << r.out;
  EXPECT_TRUE(contains(r.out, "| cpu")) << r.out;
  EXPECT_TRUE(contains(r.out, "NaForward")) << r.out;
  EXPECT_TRUE(contains(r.out, "Total")) << r.out;
  EXPECT_FALSE(contains(r.out, "NaBackward")) << r.out;
  EXPECT_TRUE(contains(r.out, "GFLOP/s")) << r.out;
  EXPECT_TRUE(contains(r.out, "window (3, 5)")) << r.out;
  EXPECT_TRUE(contains(r.out, "Inputs: uniform in [-1, 1)")) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;  // no progress line when stderr is not a terminal
}

TEST(CliProfile, BackpropAddsBackwardRow) {
  const CliResult r = run_profile(small_problem({"--backend", "cpu", "--backprop"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "NaForward")) << r.out;
  EXPECT_TRUE(contains(r.out, "NaBackward")) << r.out;
  EXPECT_TRUE(contains(r.out, "Total")) << r.out;
  EXPECT_TRUE(contains(r.out, "backward counted as 2.5x")) << r.out;
}

TEST(CliProfile, NormalInputsRunForwardAndBackward) {
  const CliResult r = run_profile(small_problem({"--backend", "cpu", "--backprop", "--inputs", "normal"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "NaForward")) << r.out;
  EXPECT_TRUE(contains(r.out, "NaBackward")) << r.out;
  EXPECT_TRUE(contains(r.out, "Inputs: standard normal")) << r.out;
}

TEST(CliProfile, ReferenceBackendWithGqaCausalAndAdditionalKv) {
  const CliResult r = run_profile({"-i", "9", "-w", "4", "-s", "2", "-c", "yes", "-n", "4", "--heads-kv", "2",
                                   "-d", "8", "--dim-value", "16", "--add-kv", "3", "--backend", "reference",
                                   "--backprop", "--warmup-steps", "0", "--iterations", "1", "--no-progress"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "| reference")) << r.out;
  EXPECT_TRUE(contains(r.out, "NaBackward")) << r.out;
  EXPECT_TRUE(contains(r.out, "upper bound")) << r.out;  // causal
  EXPECT_TRUE(contains(r.out, "causal (true)")) << r.out;
  EXPECT_TRUE(contains(r.out, "additional KV 3")) << r.out;
}

TEST(CliProfile, AutomaticSelectionIsExplained) {
  // --device cpu: the automatic choice is among the CPU backends on any machine.
  const CliResult r = run_profile(small_problem({"--fmha-backend", "cutlass-fmha", "--device", "cpu"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "(automatic)")) << r.out;
  EXPECT_TRUE(contains(r.out, "chosen")) << r.out;
  EXPECT_TRUE(contains(r.out, "rejected:")) << r.out;  // the CUDA backends on a CPU problem
  EXPECT_TRUE(contains(r.out, "device cpu")) << r.out;
  EXPECT_TRUE(contains(r.out, "FMHA backend: cutlass-fmha (unused")) << r.out;
}

TEST(CliProfile, SelfAttentionIsNoted) {
  const CliResult r = run_profile({"-i", "16", "-d", "8", "--backend", "cpu", "--warmup-steps", "0",
                                   "--iterations", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "self-attention")) << r.out;
  EXPECT_TRUE(contains(r.out, "NaForward")) << r.out;
}

TEST(CliProfile, HelpExitsZero) {
  const CliResult r = run_profile({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "usage: nattn profile"));
  EXPECT_TRUE(contains(r.out, "--dtype {fp32,fp16,bf16}"));
  EXPECT_TRUE(contains(r.out, "--optimize"));
  EXPECT_TRUE(contains(r.out, "--device {cpu,cuda}"));
  EXPECT_TRUE(contains(r.out, "Built in this nattn:"));
  EXPECT_FALSE(contains(r.out, "built in this version run on the CPU")) << r.out;  // stale before GPU tensors
#if NATTN_TEST_CLI_CUDA
  EXPECT_TRUE(contains(r.out, "cutlass-fna")) << r.out;
#else
  EXPECT_TRUE(contains(r.out, "CUDA: none")) << r.out;
#endif
}

// ---- dry run and optimize ----------------------------------------------------------------------

TEST(CliProfile, DryRunListsBackendsAndConfigs) {
  const CliResult r = run_profile({"-i", "16", "16", "-w", "5", "--dry-run", "--device", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "cpu: compatible")) << r.out;
  EXPECT_TRUE(contains(r.out, "reference: compatible")) << r.out;
  EXPECT_TRUE(contains(r.out, "cutlass-fna: rejected: ")) << r.out;
  EXPECT_TRUE(contains(r.out, "Use case is compatible with backend cpu.")) << r.out;
  EXPECT_TRUE(contains(r.out, "Backend: cpu / Forward pass configurations")) << r.out;
  EXPECT_TRUE(contains(r.out, "Backend: cpu / Backward pass configurations")) << r.out;
  EXPECT_TRUE(contains(r.out, "| q_tile")) << r.out;
  EXPECT_FALSE(contains(r.out, "Profiler results")) << r.out;  // nothing is timed
}

TEST(CliProfile, DryRunRestrictsToOneBackendAndCutsAtMaxConfigs) {
  const CliResult r = run_profile({"-i", "16", "16", "-w", "5", "--dry-run", "--backend", "cpu", "--max-configs", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "Backend: cpu / Forward pass configurations")) << r.out;
  EXPECT_FALSE(contains(r.out, "reference")) << r.out;
  EXPECT_TRUE(contains(r.out, "| ...")) << r.out;
  EXPECT_TRUE(contains(r.out, "not shown")) << r.out;
}

TEST(CliProfile, OptimizeSearchesConfigsThenProfiles) {
  const CliResult r = run_profile(small_problem({"--backend", "cpu", "--optimize", "--optimize-warmup-steps", "0",
                                                 "--backprop"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "Searching ")) << r.out;
  EXPECT_TRUE(contains(r.out, " forward pass configs")) << r.out;
  EXPECT_TRUE(contains(r.out, " backward pass configs")) << r.out;
  EXPECT_TRUE(contains(r.out, "Best configuration")) << r.out;
  EXPECT_TRUE(contains(r.out, "q_tile_shape")) << r.out;
  EXPECT_TRUE(contains(r.out, "backward_q_tile_shape")) << r.out;
  EXPECT_TRUE(contains(r.out, "NaBackward")) << r.out;
}

// ---- JSON --------------------------------------------------------------------------------------

TEST(CliProfile, JsonHasProblemBackendTimesAndGflops) {
  const std::string path = temp_path("result.json");
  std::remove(path.c_str());
  const CliResult r = run_profile(small_problem({"--backend", "cpu", "--backprop", "--json", path}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string text = read_file(path);
  ASSERT_FALSE(text.empty()) << "no JSON written to " << path;
  Json json;
  ASSERT_NO_THROW(json = JsonParser(text).parse()) << text;
  ASSERT_EQ(json.type, Json::Type::object);
  EXPECT_EQ(json.at("mode").text, "profile");
  EXPECT_EQ(json.at("device").text, "cpu");
  EXPECT_EQ(json.at("timing").text, "wall clock");

  const Json& problem = json.at("problem");
  ASSERT_EQ(problem.type, Json::Type::object) << text;
  ASSERT_EQ(problem.at("input_size").items.size(), 2u);
  EXPECT_EQ(problem.at("input_size").items[0].number, 12);
  EXPECT_EQ(problem.at("window_size").items[1].number, 5);
  EXPECT_EQ(problem.at("heads").number, 2);
  EXPECT_EQ(problem.at("dim").number, 16);
  EXPECT_EQ(problem.at("dtype").text, "fp32");
  EXPECT_EQ(problem.at("inputs").text, "uniform");
  EXPECT_TRUE(problem.at("backprop").boolean);

  EXPECT_EQ(json.at("backend").at("forward").text, "cpu");
  EXPECT_EQ(json.at("backend").at("backward").text, "cpu");
  EXPECT_EQ(json.at("backend").at("selection").text, "requested");

  const Json& ops = json.at("operations");
  ASSERT_EQ(ops.type, Json::Type::array) << text;
  ASSERT_EQ(ops.items.size(), 2u) << text;
  EXPECT_EQ(ops.items[0].at("operation").text, "NaForward");
  EXPECT_EQ(ops.items[1].at("operation").text, "NaBackward");
  for (const Json& op : ops.items) {
    EXPECT_EQ(op.at("calls").number, 3);
    EXPECT_EQ(op.at("samples_us").items.size(), 3u);
    EXPECT_GT(op.at("median_us").number, 0);
    EXPECT_LE(op.at("min_us").number, op.at("median_us").number);
  }
  EXPECT_GT(json.at("total_median_us").number, 0);
  EXPECT_GT(json.at("gflops").at("forward").number, 0);
  EXPECT_GT(json.at("gflops").at("forward_flops").number, 0);
  EXPECT_FALSE(json.at("gflops").at("upper_bound").boolean);
}

TEST(CliProfile, DryRunJsonListsBackends) {
  const std::string path = temp_path("dry.json");
  std::remove(path.c_str());
  const CliResult r = run_profile({"-i", "20", "-w", "7", "--dry-run", "--device", "cpu", "--json", path});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json json;
  ASSERT_NO_THROW(json = JsonParser(read_file(path)).parse());
  EXPECT_EQ(json.at("mode").text, "dry-run");
  EXPECT_EQ(json.at("device").text, "cpu");
  ASSERT_EQ(json.at("backends").type, Json::Type::array);
  bool saw_cpu = false;
  for (const Json& b : json.at("backends").items) {
    if (b.at("name").text != "cpu") continue;
    saw_cpu = true;
    EXPECT_TRUE(b.at("compatible").boolean);
    EXPECT_FALSE(b.at("forward_configs").items.empty());
  }
  EXPECT_TRUE(saw_cpu);
}

TEST(CliProfile, UnwritableJsonPathIsARuntimeError) {
  const CliResult r = run_profile(small_problem({"--backend", "reference", "--json", "/nonexistent-dir/x.json"}));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "--json")) << r.err;
}

// ---- validation --------------------------------------------------------------------------------

struct BadCase {
  std::vector<std::string> args;
  std::vector<std::string> message_parts;  // each must appear in stderr
};

TEST(CliProfile, EveryValidationErrorExitsTwoNamingTheOption) {
  const std::vector<BadCase> cases = {
      {{"-n", "2"}, {"--input-size", "required"}},
      {{"-i", "4", "4", "4", "4"}, {"--input-size", "4 values"}},
      {{"-i", "8", "8", "-w", "3", "3", "3"}, {"--window-size", "3 values"}},
      {{"-i", "8", "8", "-w", "9", "3"}, {"--window-size", "9", "exceeds the input size 8"}},
      {{"-i", "8", "-w", "3", "-s", "4"}, {"--stride", "4", "exceeds the window size 3"}},
      {{"-i", "8", "8", "-w", "3", "--dilation", "3"}, {"--dilation", "9"}},
      {{"-i", "8", "-w", "3", "-s", "1", "2"}, {"--stride", "2 values"}},
      {{"-i", "8", "8", "-w", "3", "-c", "maybe"}, {"--causal", "maybe", "true/false"}},
      {{"-i", "8", "8", "-w", "3", "-c", "true", "false", "true"}, {"--causal", "3 values"}},
      {{"-i", "8", "-w", "3", "--dry-run", "--optimize"}, {"--dry-run", "--optimize"}},
      {{"-i", "8", "8", "-w", "3", "--kv-tile", "8", "8"}, {"--kv-tile", "without --q-tile"}},
      {{"-i", "8", "8", "-w", "3", "--backward-kv-tile", "8", "8"}, {"--backward-kv-tile"}},
      {{"-i", "8", "8", "-w", "3", "--backend", "reference", "--q-tile", "8", "8"}, {"--q-tile"}},
      {{"-i", "8", "8", "-w", "3", "--backend", "cpu", "--q-tile", "8", "7"}, {"--q-tile", "not valid"}},
      {{"-i", "8", "8", "-w", "3", "--q-tile", "8"}, {"--q-tile", "1 values"}},
      {{"-i", "8", "-w", "3", "--backend", "nope"}, {"--backend", "nope", "cpu"}},
      {{"-i", "8", "-w", "3", "--fmha-backend", "cpu-fna"}, {"--fmha-backend", "cpu-fna"}},
      {{"-i", "8", "-w", "3", "--dtype", "fp64"}, {"--dtype", "fp64", "fp32, fp16, bf16"}},
      {{"-i", "8", "-w", "3", "--dtype", "e4m3"}, {"--dtype", "e4m3"}},
      {{"-i", "8", "-w", "1"}, {"--window-size", "1"}},
      {{"-i", "8", "-w", "x3"}, {"--window-size", "x3", "not an integer"}},
      {{"-i", "8", "-n", "4", "--heads-kv", "3"}, {"--heads-kv", "3"}},
      {{"-i", "8", "-b", "0"}, {"--batch-size", "0"}},
      {{"-i", "8", "--iterations", "0"}, {"--iterations", "0"}},
      {{"-i", "8", "--threads", "-1"}, {"--threads", "-1"}},
      {{"-i", "8", "--schedule", "fast"}, {"--schedule", "fast", "non, coop, pp"}},
      {{"-i", "8", "--inputs", "gaussian"}, {"--inputs", "gaussian", "uniform, normal"}},
      {{"-i", "8", "--frobnicate"}, {"--frobnicate", "unknown option"}},
      {{"stray", "-i", "8"}, {"stray", "unexpected argument"}},
      {{"-i", "8", "stray"}, {"--input-size", "stray", "not an integer"}},
      {{"-i", "8", "--dtype"}, {"--dtype", "expects a value"}},
      {{"-i", "8", "--backprop=yes"}, {"--backprop", "takes no value"}},
      {{"-i", "8", "--device", "gpu"}, {"--device", "'gpu'", "allowed: cpu, cuda"}},
      {{"-i", "8", "--device", "cuda:1"}, {"--device", "'cuda:1'", "allowed: cpu, cuda"}},
      {{"-i", "8", "--device"}, {"--device", "expects a value"}},
      {{"-i", "8", "--device", "cpu", "--backend", "cutlass-fna"},
       {"--device", "'cpu'", "conflicts", "cutlass-fna", "allowed: cuda"}},
      {{"-i", "8", "--device", "cuda", "--backend", "cpu"}, {"--device", "'cuda'", "conflicts", "--backend cpu"}},
      {{"-i", "8", "--backend", "hopper-fna", "--device=cpu", "--dry-run"}, {"--device", "conflicts", "hopper-fna"}},
  };
  for (const BadCase& c : cases) {
    std::string joined;
    for (const std::string& a : c.args) joined += a + " ";
    const CliResult r = run_profile(c.args);
    EXPECT_EQ(r.exit_code, 2) << "args: " << joined << "\nstdout: " << r.out << "\nstderr: " << r.err;
    EXPECT_TRUE(contains(r.err, "nattn profile: error: ")) << "args: " << joined << "\nstderr: " << r.err;
    for (const std::string& part : c.message_parts)
      EXPECT_TRUE(contains(r.err, part)) << "args: " << joined << "\nmissing '" << part << "' in: " << r.err;
  }
}

TEST(CliProfile, CausalWordsAreParsedNotTruthy) {
  // NATTEN's type=bool made "False" mean True; here it is False.
  const CliResult r = run_profile({"-i", "8", "8", "-w", "3", "-c", "False", "YES", "--dry-run", "--backend", "cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "causal (false, true)")) << r.out;
  const CliResult r2 = run_profile({"-i", "8", "8", "-w", "3", "-c", "0", "--dry-run", "--backend", "cpu"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_TRUE(contains(r2.out, "causal (false, false)")) << r2.out;
}

TEST(CliProfile, ListsAcceptCommasAndEqualsSign) {
  const CliResult r = run_profile({"--input-size=8,6", "-w", "3,5", "--dry-run", "--backend=cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "input size (8, 6)")) << r.out;
  EXPECT_TRUE(contains(r.out, "window (3, 5)")) << r.out;
}

TEST(CliProfile, BackendThatCannotRunIsARuntimeFailure) {
  // hopper-fna is known but runs fp16/bf16 only: not a usage error, exit code 1 (on a machine
  // without CUDA, because it needs CUDA; with a GPU, because of the dtype).
  const CliResult r = run_profile({"-i", "8", "-w", "3", "--backend", "hopper-fna", "--dtype", "fp32",
                                   "--iterations", "1", "--warmup-steps", "0"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "hopper-fna")) << r.err;
}

// ---- device ------------------------------------------------------------------------------------

// What `--device cuda` / a CUDA --backend says where it cannot run. Returns false (and the test
// skips) when this CLI has CUDA and a GPU is present, so that the command ran.
bool expect_cuda_unavailable(const CliResult& r, const std::string& option, const std::string& value) {
  if (NATTN_TEST_CLI_CUDA && r.exit_code == 0) return false;
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "nattn profile: error: " + option + ": '" + value + "'")) << r.err;
  EXPECT_TRUE(contains(r.err, NATTN_TEST_CLI_CUDA ? "no CUDA device was found" : "built without CUDA")) << r.err;
  EXPECT_TRUE(contains(r.err, "allowed here: ")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;  // refused before anything is printed or allocated
  return true;
}

TEST(CliProfile, DeviceCudaWithoutCudaIsAClearError) {
  const CliResult r = run_profile(small_problem({"--device", "cuda", "--dtype", "fp16"}));
  if (!expect_cuda_unavailable(r, "--device", "cuda")) GTEST_SKIP() << "a GPU is present: --device cuda ran";
  EXPECT_TRUE(contains(r.err, "--device cpu")) << r.err;
}

TEST(CliProfile, CudaBackendWithoutCudaIsAClearError) {
  const CliResult r = run_profile(small_problem({"--backend", "cutlass-fna", "--dtype", "fp16"}));
  if (!expect_cuda_unavailable(r, "--backend", "cutlass-fna")) GTEST_SKIP() << "a GPU is present: cutlass-fna ran";
  EXPECT_TRUE(contains(r.err, "runs on CUDA tensors")) << r.err;
  EXPECT_TRUE(contains(r.err, "--backend reference or cpu")) << r.err;
}

TEST(CliProfile, DryRunOnCudaWithoutCudaIsAClearError) {
  // fp16 and head dim 32: a problem every CUDA build has a kernel for, so that with a GPU it runs.
  const CliResult r =
      run_profile({"-i", "16", "16", "-w", "5", "--dtype", "fp16", "-d", "32", "--dry-run", "--device", "cuda"});
  if (!expect_cuda_unavailable(r, "--device", "cuda")) GTEST_SKIP() << "a GPU is present: the dry run ran";
}

TEST(CliProfile, CpuDeviceIsShownInHeaderFootnoteAndPlan) {
  const CliResult r = run_profile(small_problem({"--device", "cpu"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "-D neighborhood attention, device cpu\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "Threads: ")) << r.out;
  EXPECT_TRUE(contains(r.out, "Runtime: median of the timed calls of each operation (wall clock)")) << r.out;
  EXPECT_FALSE(contains(r.out, "cuda:0")) << r.out;
}

TEST(CliProfile, AutomaticDeviceIsCpuWithoutCuda) {
  if (NATTN_TEST_CLI_CUDA) GTEST_SKIP() << "this CLI has CUDA: the automatic device depends on the machine";
  const std::string path = temp_path("auto_device.json");
  std::remove(path.c_str());
  const CliResult r = run_profile(small_problem({"--json", path}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "device cpu")) << r.out;
  EXPECT_TRUE(contains(r.out, "Forward backend: cpu (automatic)")) << r.out;
  Json json;
  ASSERT_NO_THROW(json = JsonParser(read_file(path)).parse());
  EXPECT_EQ(json.at("device").text, "cpu");
}

}  // namespace
