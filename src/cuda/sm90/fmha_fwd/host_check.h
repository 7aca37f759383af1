// Argument-check results of the Hopper host entries (fmha_fwd_sm90.cpp, na_fwd_sm90.cpp): one check
// gives both the registry's reason string and the error the op raises, so the two always agree.
#pragma once

#include <string>

#include "cuda/common/device.h"
#include "nattn/errors.h"
#include "nattn/tensor.h"

namespace nattn::cuda::sm90 {

enum class Verdict { ok, value_error, not_implemented };

struct Check {
  Verdict verdict = Verdict::ok;
  std::string message;  // prefixed with the backend name; empty when ok
};

inline Check check_failed(const char* backend, Verdict v, const std::string& what) {
  return {v, std::string(backend) + ": " + what};
}

// The sm_90a cubins run on compute capability 9.0 only; checked on the tensors' device.
inline Check check_sm90_device(const char* backend, const Device& device) {
  const DeviceProps& props = device_props(device.index);
  if (props.cc != 90)
    return check_failed(backend, Verdict::not_implemented,
                        "needs a compute capability 9.0 device (sm_90a), " + device_name(device) + " is " +
                            std::to_string(props.cc));
  return {};
}

// Throws the check's error (ValueError / NotImplementedError); returns when it passed.
inline void raise(const Check& c) {
  if (c.verdict == Verdict::value_error) throw ValueError(c.message);
  if (c.verdict == Verdict::not_implemented) throw NotImplementedError(c.message);
}

}  // namespace nattn::cuda::sm90
