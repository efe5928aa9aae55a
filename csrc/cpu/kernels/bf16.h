// bfloat16 storage and its scalar conversions, torch-free. A bf16 value is the high half of an
// fp32 one; kernels keep bf16 tensors as uint16_t bits and compute in fp32.
#pragma once
#include <cstdint>
#include <cstring>

namespace fusedops::cpu {

// A bf16 tensor's elements as kernels see them: the raw bits.
using bf16_t = uint16_t;

// The arithmetic type of a storage type: a kernel on bf16 tensors computes in fp32, and takes
// its parameters and statistics (LayerNorm's weight, mean, rstd, a loss) in fp32.
template <typename S> struct ComputeOf { using type = S; };
template <> struct ComputeOf<bf16_t> { using type = float; };
template <typename S> using compute_t = typename ComputeOf<S>::type;

// Element type of a mixed-precision operand.
enum class DType : uint8_t { f32 = 0, bf16 = 1 };

inline float bf16_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch's BFloat16 and the AVX512-BF16 conversions; a NaN stays a
// (quiet) NaN of the same sign.
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Element i of an operand of type t as fp32.
inline float load_as_float(const void* p, DType t, int64_t i) {
  return t == DType::bf16 ? bf16_to_float(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

inline void store_from_float(void* p, DType t, int64_t i, float v) {
  if (t == DType::bf16) static_cast<uint16_t*>(p)[i] = float_to_bf16(v);
  else static_cast<float*>(p)[i] = v;
}

}  // namespace fusedops::cpu
