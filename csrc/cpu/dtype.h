// Element-type dispatch of the CPU bindings: a tensor's dtype as the kernels' storage type
// (float, double, or cpu::bf16_t: bf16 bits, computed in fp32) and its data as that type.
#pragma once
#include <ATen/ATen.h>

#include "cpu/kernels/bf16.h"

namespace fusedops {

// Runs the lambda given last (pasted into each case, as AT_DISPATCH_* do) with `kernel_t` the storage type of `dtype`.
#define FUSEDOPS_DISPATCH_CPU_FLOAT(dtype, op, ...)                               \
  [&] {                                                                            \
    switch (dtype) {                                                               \
      case at::kFloat: { using kernel_t = float; return __VA_ARGS__(); }                  \
      case at::kDouble: { using kernel_t = double; return __VA_ARGS__(); }                \
      case at::kBFloat16: { using kernel_t = ::fusedops::cpu::bf16_t; return __VA_ARGS__(); } \
      default: TORCH_CHECK_TYPE(false, "fusedops.", op, ": unsupported dtype ", dtype); \
    }                                                                              \
  }()

template <typename K>
inline K* kptr(const at::Tensor& t) { return static_cast<K*>(t.data_ptr()); }
template <typename K>
inline const K* kptr_or_null(const at::Tensor* t) { return t ? static_cast<const K*>(t->data_ptr()) : nullptr; }

}  // namespace fusedops
