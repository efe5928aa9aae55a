// Argument rules of the pointwise activation ops shared by the CPU, CUDA and simulator
// bindings (dtype and device are each backend's).
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "common/checks.h"
#include "contracts/activation.h"

namespace fusedops {

// gelu's `approximate` argument ("none" or "tanh") as the kernels' function.
inline Pointwise gelu_kind(c10::string_view approximate, const char* op) {
  if (approximate == "none") return Pointwise::gelu;
  if (approximate == "tanh") return Pointwise::gelu_tanh;
  FUSEDOPS_CHECK(false, op, "approximate must be 'none' or 'tanh', got '",
                 std::string(approximate.data(), approximate.size()), "'");
  return Pointwise::gelu;
}

}  // namespace fusedops
