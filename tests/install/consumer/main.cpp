// Runs a tiny 1-D NA forward through the installed library and checks one output row by hand.
#include <cmath>
#include <cstdio>
#include <vector>

#include <nattn/nattn.h>

int main() {
  const int64_t L = 5, D = 2;
  std::vector<float> q(L * D), k(L * D), v(L * D), out(L * D, NAN);
  for (int64_t i = 0; i < L * D; ++i) {
    q[i] = 0.1f * static_cast<float>(i + 1);
    k[i] = 0.05f * static_cast<float>(L * D - i);
    v[i] = static_cast<float>(i % 7) - 3.0f;
  }
  nattn::NaForwardArgs a;
  a.query = nattn::TensorView(q.data(), nattn::DType::f32, {1, L, 1, D});
  a.key = nattn::TensorView(k.data(), nattn::DType::f32, {1, L, 1, D});
  a.value = nattn::TensorView(v.data(), nattn::DType::f32, {1, L, 1, D});
  a.out = nattn::TensorView(out.data(), nattn::DType::f32, {1, L, 1, D});
  a.params = nattn::NaParams::uniform(1, 3);
  nattn::na_forward(a);
  // Query 0 sees keys {0, 1, 2} (window shifted inward at the border).
  const double scale = 1.0 / std::sqrt(2.0);
  double w[3], sum = 0;
  for (int j = 0; j < 3; ++j) {
    w[j] = std::exp(scale * (q[0] * k[j * D] + q[1] * k[j * D + 1]));
    sum += w[j];
  }
  double expect = 0;
  for (int j = 0; j < 3; ++j) expect += w[j] / sum * v[j * D];
  if (std::fabs(expect - out[0]) > 1e-5) {
    std::printf("mismatch: %f vs %f\n", expect, out[0]);
    return 1;
  }
  std::printf("consumer ok: %s\n", NATTN_VERSION_STRING);
  return 0;
}
