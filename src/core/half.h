// Scalar conversions between float and the 16-bit storage types (IEEE fp16, bfloat16), and typed
// element access for host backends. Round-to-nearest-even in both directions.
#pragma once

#include <cstdint>
#include <cstring>

#include "nattn/tensor.h"

namespace nattn::detail {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float fp16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // subnormal: normalise
    int e = -1;
    do { mant <<= 1; ++e; } while ((mant & 0x400u) == 0);
    mant &= 0x3ffu;
    return bits_to_float(sign | (static_cast<uint32_t>(112 - e) << 23) | (mant << 13));
  }
  return bits_to_float(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t float_to_fp16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // nan
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {  // subnormal or zero in fp16
    // value * 2^24 rounded to nearest even, as an integer mantissa
    const float scaled = bits_to_float(abs) * 16777216.0f;  // exact: power-of-two scaling
    uint32_t m = static_cast<uint32_t>(scaled);
    const float rem = scaled - static_cast<float>(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t r = abs + 0xfffu + ((abs >> 13) & 1u);  // round mantissa to 10 bits
  return static_cast<uint16_t>(sign | (((r >> 23) - 112) << 10) | ((r >> 13) & 0x3ffu));
}

// Element `offset` (in elements) of a buffer of dtype f32/f16/bf16/f64, as float (f64 is rounded:
// code that keeps fp64 precision reads doubles itself).
inline float load_float(const void* base, int64_t offset, DType dtype) {
  switch (dtype) {
    case DType::f16: return fp16_to_float(static_cast<const uint16_t*>(base)[offset]);
    case DType::bf16: return bf16_to_float(static_cast<const uint16_t*>(base)[offset]);
    case DType::f64: return static_cast<float>(static_cast<const double*>(base)[offset]);
    default: return static_cast<const float*>(base)[offset];
  }
}

inline void store_float(void* base, int64_t offset, DType dtype, float value) {
  switch (dtype) {
    case DType::f16: static_cast<uint16_t*>(base)[offset] = float_to_fp16(value); break;
    case DType::bf16: static_cast<uint16_t*>(base)[offset] = float_to_bf16(value); break;
    case DType::f64: static_cast<double*>(base)[offset] = value; break;
    default: static_cast<float*>(base)[offset] = value; break;
  }
}

}  // namespace nattn::detail
