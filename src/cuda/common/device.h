// Cached properties of CUDA devices (queried once per device with cudaDeviceGetAttribute; CUDA 13
// removed the deprecated cudaDeviceProp fields). Host code only; thread-safe.
#pragma once

namespace nattn::cuda {

struct DeviceProps {
  int index = 0;
  int cc = 0;                  // compute capability, e.g. 90
  int sm_count = 0;
  int max_smem_optin = 0;      // bytes of dynamic shared memory a block may opt in to
  int max_grid_y = 65535;
  int max_grid_z = 65535;
};

// Properties of device `index`; throws RuntimeError for an invalid index or a CUDA failure.
const DeviceProps& device_props(int index);

// The device the calling thread works on (cudaGetDevice).
int current_device();

// Makes `index` the calling thread's current device for the guard's lifetime and restores the
// previous one afterwards (best effort in the destructor). Throws RuntimeError if switching fails.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

// Shared memory per block (opt-in) by compute capability, for selection before any device is
// touched: 75: 64 KiB, 80: 163 KiB, 86/89: 99 KiB, 90: 227 KiB; others: 48 KiB.
int smem_optin_for_cc(int cc);

}  // namespace nattn::cuda
