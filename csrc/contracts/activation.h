// Activation modes shared by the CPU and CUDA kernels: the GEMM epilogue's (the activation
// applied to each output, fused into linear, and where the bias comes from) and the pointwise
// ops'. The CPU's scalar
// reference formulas are in cpu/kernels/activation.h, the CUDA ones in cuda/kernels/gemm.cuh;
// both use the constants below.
#pragma once
#include <cstring>

namespace fusedops {

enum class Activation : int { none = 0, relu = 1, gelu = 2, gelu_tanh = 3 };

enum class BiasMode : int { none = 0, per_col = 1, per_row = 2 };  // bias[n] or bias[m]

// The standalone elementwise ops (fusedops.ops.relu, sigmoid, tanh, gelu): which function a
// pointwise kernel applies, forward or backward.
enum class Pointwise : int { relu = 0, sigmoid = 1, tanh = 2, gelu = 3, gelu_tanh = 4 };

// Names as the Python API spells them: None (nullptr), "relu", "gelu", "gelu_tanh" (host only).
inline bool parse_activation(const char* name, Activation* out) {
  if (name == nullptr || std::strcmp(name, "none") == 0) *out = Activation::none;
  else if (std::strcmp(name, "relu") == 0) *out = Activation::relu;
  else if (std::strcmp(name, "gelu") == 0) *out = Activation::gelu;
  else if (std::strcmp(name, "gelu_tanh") == 0) *out = Activation::gelu_tanh;
  else return false;
  return true;
}

// GELU: 0.5 x (1 + erf(x / sqrt 2)); the tanh form 0.5 x (1 + tanh(sqrt(2 / pi) (x + c x^3))).
constexpr double kSqrtHalf = 0.70710678118654752440;     // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1 / sqrt(2 pi)
constexpr double kSqrt2OverPi = 0.79788456080286535588;  // sqrt(2 / pi)
constexpr double kGeluTanhC = 0.044715;

}  // namespace fusedops
