// `nattn verify`: runs the built CLI (NATTN_CLI_PATH) on the golden cases, on a corrupted copy of
// some of them, and with bad usage, and checks its output lines and exit codes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "golden/json.h"
#include "tools/cli_test_util.h"

namespace {

namespace fs = std::filesystem;

using nattn::test::cli::CliResult;
using nattn::test::cli::read_file;

// A scratch directory private to this process.
fs::path scratch_dir() {
  static const fs::path dir = [] {
    fs::path d = fs::path(::testing::TempDir()) / ("nattn_verify_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

CliResult run_verify(const std::vector<std::string>& args) { return nattn::test::cli::run_cli("verify", args); }

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string last_line(const std::string& text) {
  const std::vector<std::string> all = lines(text);
  return all.empty() ? std::string() : all.back();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The line of `text` that starts with `prefix`, or "".
std::string line_starting(const std::string& text, const std::string& prefix) {
  for (const std::string& line : lines(text)) {
    if (line.rfind(prefix, 0) == 0) return line;
  }
  return {};
}

const std::string kGolden = NATTN_GOLDEN_DIR;

// Copies case NNN (json + bin) of the golden set into `dir`.
void copy_case(const std::string& name, const fs::path& dir) {
  fs::copy_file(fs::path(kGolden) / (name + ".json"), dir / (name + ".json"), fs::copy_options::overwrite_existing);
  fs::copy_file(fs::path(kGolden) / (name + ".bin"), dir / (name + ".bin"), fs::copy_options::overwrite_existing);
  // The golden files may be read-only; the copies are edited.
  for (const char* ext : {".json", ".bin"}) {
    fs::permissions(dir / (name + ext), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  }
}

// Adds `delta` to element `index` of array `array` in the .bin of case `name` in `dir`.
void perturb(const fs::path& dir, const std::string& name, const std::string& array, int64_t index, float delta) {
  const std::string json_path = (dir / (name + ".json")).string();
  const nattn::golden::Json root = nattn::golden::parse_json(read_file(json_path), json_path);
  const nattn::golden::Json* entry = root.find("arrays")->find(array);
  ASSERT_NE(entry, nullptr) << array;
  const auto offset = static_cast<std::streamoff>(entry->find("offset")->number) + index * 4;
  std::fstream bin((dir / (name + ".bin")).string(), std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(bin.good());
  float value;
  bin.seekg(offset);
  bin.read(reinterpret_cast<char*>(&value), 4);
  value += delta;
  bin.seekp(offset);
  bin.write(reinterpret_cast<const char*>(&value), 4);
  ASSERT_TRUE(bin.good());
}

TEST(CliVerify, GoldenCasesPassOnReference) {
  const CliResult r = run_verify({kGolden, "--backend", "reference"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(last_line(r.out), "72 passed, 0 failed");
  EXPECT_FALSE(contains(r.out, "FAILED")) << r.out;
  EXPECT_FALSE(contains(r.out, "forward only")) << r.out;  // the reference has a backward
}

TEST(CliVerify, SixteenBitRunsPassOnReference) {
  for (const char* dtype : {"fp16", "bf16"}) {
    const CliResult r = run_verify({kGolden, "--backend=reference", "--dtype", dtype, "--threads", "2", "--quiet"});
    EXPECT_EQ(r.exit_code, 0) << dtype << "\n" << r.out << r.err;
    EXPECT_EQ(r.out, "72 passed, 0 failed\n") << dtype;  // --quiet: nothing but the summary
  }
}

TEST(CliVerify, CorruptedCasesFailAndAreNamed) {
  const fs::path dir = scratch_dir() / "corrupted";
  fs::create_directories(dir);
  for (const char* name : {"case_000", "case_005", "case_017", "case_030"}) copy_case(name, dir);
  perturb(dir, "case_005", "out", 3, 0.05f);   // expected forward output off by 5e-2
  perturb(dir, "case_017", "dk", 0, -0.5f);    // expected gradient off by 5e-1
  {
    std::ofstream broken(dir / "case_030.json", std::ios::trunc);  // malformed description
    broken << "{\"rank\": 1, \"spatial\": [10,";
  }
  const CliResult r = run_verify({dir.string(), "--backend", "reference"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(last_line(r.out), "1 passed, 3 failed") << r.out;

  const std::string forward = line_starting(r.out, "case_005 FAILED");
  // (backward starts from the expected out, so the corruption may show there as well)
  EXPECT_TRUE(contains(forward, "case_005 FAILED (forward")) << forward;
  EXPECT_TRUE(contains(forward, "out max err 5.0e-02 > tol 1.0e-04")) << forward;
  EXPECT_FALSE(contains(forward, "lse max err")) << forward;
  const std::string backward = line_starting(r.out, "case_017 FAILED");
  EXPECT_TRUE(contains(backward, "(backward): dk max err 5.0e-01 > tol 1.0e-03")) << backward;
  const std::string load = line_starting(r.out, "case_030 FAILED");
  EXPECT_TRUE(contains(load, "(load)")) << load;
  EXPECT_TRUE(contains(load, "malformed JSON")) << load;
  EXPECT_TRUE(line_starting(r.out, "case_000").empty()) << r.out;  // passing cases print nothing
}

TEST(CliVerify, MissingArrayIsAFailureNotACrash) {
  const fs::path dir = scratch_dir() / "truncated";
  fs::create_directories(dir);
  copy_case("case_001", dir);
  fs::resize_file(dir / "case_001.bin", 100);  // arrays now lie past the end of the file
  const CliResult r = run_verify({dir.string(), "--backend", "reference", "--quiet"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(line_starting(r.out, "case_001 FAILED (load)"), "has only 100 bytes")) << r.out;
  EXPECT_EQ(last_line(r.out), "0 passed, 1 failed");
}

TEST(CliVerify, BadUsageExitsWithTwo) {
  struct Bad {
    std::vector<std::string> args;
    std::string message;  // part of the error naming the value
  };
  const std::vector<Bad> bad = {
      {{}, "missing DIR"},
      {{kGolden, "--frobnicate"}, "unknown option '--frobnicate'"},
      {{(scratch_dir() / "no_such_dir").string()}, "does not exist"},
      {{kGolden, "--dtype", "fp64"}, "--dtype 'fp64' is not allowed; allowed: fp32, fp16, bf16"},
      {{kGolden, "--dtype"}, "--dtype needs a value"},
      {{kGolden, "--backend", "warp-drive"}, "unknown --backend 'warp-drive'"},
      {{kGolden, "--threads", "many"}, "--threads 'many'"},
      {{kGolden, kGolden}, "expected one DIR"},
  };
  for (const Bad& b : bad) {
    const CliResult r = run_verify(b.args);
    EXPECT_EQ(r.exit_code, 2) << b.message << "\n" << r.out << r.err;
    EXPECT_TRUE(contains(r.err, b.message)) << r.err;
  }
  // A directory without cases is a usage error too.
  const fs::path empty = scratch_dir() / "empty";
  fs::create_directories(empty);
  const CliResult r = run_verify({empty.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "no golden cases")) << r.err;
}

TEST(CliVerify, HelpListsTolerances) {
  const CliResult r = run_verify({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(contains(r.out, "usage: nattn verify DIR")) << r.out;
  EXPECT_TRUE(contains(r.out, "fp16:")) << r.out;
  EXPECT_TRUE(contains(r.out, "bf16:")) << r.out;
  EXPECT_TRUE(contains(r.out, "1.0e-04")) << r.out;
}

}  // namespace
