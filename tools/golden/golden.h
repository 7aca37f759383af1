// Reader of the golden neighborhood-attention cases (shared/testdata/golden/README.md) and the
// tolerances a backend is held to on them. Used by `nattn verify` and by the tests.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "nattn/problem.h"
#include "nattn/tensor.h"

namespace nattn::golden {

// An owning float32 array, row-major.
struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
};

struct Case {
  std::string name;       // "case_017"
  std::string json_path;  // .../case_017.json
  std::string bin_path;   // .../case_017.bin

  int rank = 1;
  std::vector<int64_t> spatial;
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 1;
  int64_t head_dim_v = 1;  // from the shape of `v`
  std::vector<int64_t> kernel_size, stride, dilation;
  std::vector<bool> is_causal;
  int64_t additional_kv = 0;  // number of additional KV tokens
  double scale = 1.0;

  // Inputs q, k, v, dout (+ additional_keys/values); expected out, lse (+ dq, dk, dv,
  // d_additional_keys/values when the case has a backward).
  std::map<std::string, Array> arrays;

  bool has(const std::string& array_name) const { return arrays.count(array_name) != 0; }
  // Throws ValueError naming the case and the missing array.
  const Array& array(const std::string& array_name) const;
  bool has_backward() const { return has("dq"); }
  NaParams na_params() const;
};

// Loads `case_NNN.json` and the `.bin` beside it, checking every field, the array shapes against
// the parameters, and that each array lies inside the .bin file. Throws RuntimeError when a file
// cannot be read and ValueError when the content is malformed.
Case load_case(const std::string& json_path);

// The `case_*.json` files of a directory, sorted by name. Throws ValueError when `dir` is not a
// readable directory.
std::vector<std::string> list_cases(const std::string& dir);

// ---- tolerances ---------------------------------------------------------------------------------

// Allowed max |got - expected| for one tensor: `rel * max|expected| + abs`. fp32 runs use the
// absolute tolerances of the golden README (rel = 0); fp16/bf16 runs compare against the fp32
// golden values with tolerances relative to the magnitude of the expected tensor.
struct Tolerance {
  double rel = 0;
  double abs = 0;
  double allowed(double max_abs_expected) const { return rel * max_abs_expected + abs; }
};

struct Tolerances {
  Tolerance out, lse, grad;
};

// Tolerances for runs whose inputs and outputs have `dtype` (f32, f16, bf16; others throw
// ValueError). See tools/golden/README.md for how they were chosen.
Tolerances tolerances_for(DType dtype);
std::string describe(const Tolerances& tolerances);  // one line per tensor class

struct Comparison {
  double max_error = 0;     // max |got - expected|; +inf when got has a NaN/inf or sizes differ
  double max_expected = 0;  // max |expected|
  double allowed = 0;       // the tolerance at that magnitude
  bool passed() const { return max_error <= allowed; }
};

Comparison compare(const std::vector<float>& got, const Array& expected, const Tolerance& tolerance);

}  // namespace nattn::golden
