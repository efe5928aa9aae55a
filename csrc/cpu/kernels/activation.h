// Activation functions that kernels fuse into their epilogues (GEMM, later conv): the scalar
// formulas of the modes in contracts/activation.h.
#pragma once
#include <cmath>
#include <cstdint>

#include "../../contracts/activation.h"

namespace fusedops::cpu {

// Scalar definitions through <cmath>: the portable path and the test oracle.
template <typename T>
inline T activation_reference(T x, Activation a) {
  switch (a) {
    case Activation::relu: return x > T(0) || x != x ? x : T(0);  // NaN stays NaN, as torch
    case Activation::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(kSqrtHalf)));
    case Activation::gelu_tanh:
      return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(kGeluTanhC) * x * x * x)));
    default: return x;
  }
}

// d act(z) / dz
template <typename T>
inline T activation_grad_reference(T z, Activation a) {
  switch (a) {
    case Activation::relu: return z > T(0) ? T(1) : T(0);
    case Activation::gelu:
      return T(0.5) * (T(1) + std::erf(z * T(kSqrtHalf))) +
             z * T(kInvSqrt2Pi) * std::exp(T(-0.5) * z * z);
    case Activation::gelu_tanh: {
      T t = std::tanh(T(kSqrt2OverPi) * (z + T(kGeluTanhC) * z * z * z));
      return T(0.5) * (T(1) + t) +
             T(0.5) * z * (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3 * kGeluTanhC) * z * z);
    }
    default: return T(1);
  }
}

}  // namespace fusedops::cpu
