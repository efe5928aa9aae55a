// Activation and softmax ops, torch-free: the API of the activation_ops kernels
// (activation_ops_isa.h holds the math, instantiated per instruction set by
// activation_ops_<isa>.cpp; activation_ops.cpp dispatches on active_isa()). Not to be confused
// with activation.h, the activations that GEMM epilogues fuse. Pointwise, the
// function a pointwise kernel applies, is in contracts/activation.h.
#pragma once
#include <cstdint>

#include "../../contracts/activation.h"
#include "bf16.h"
#include "cpu_features.h"

namespace fusedops::cpu {

// Activation and softmax kernels, one table per instruction set (vec/dispatch.h) and storage
// type: float, double, or bf16_t (bf16 tensors, fp32 arithmetic, each output rounded once).
template <typename T>
struct ActivationKernels {
  // y[i] = f(x[i]) over n contiguous elements.
  void (*pointwise_forward)(Pointwise f, int64_t n, const T* x, T* y);
  // dx[i] = g[i] * f'(.) over n contiguous elements, where `saved` is what the backward reads:
  // the input x for gelu / gelu_tanh (recomputed, one pass), the output y for relu
  // (g where y > 0 or y is NaN, as torch's threshold_backward), sigmoid (y (1 - y)) and
  // tanh (1 - y^2).
  void (*pointwise_backward)(Pointwise f, int64_t n, const T* g, const T* saved, T* dx);
  // softmax (log = false) or log_softmax (log = true) over the middle dimension of a contiguous
  // [outer, D, inner] tensor. A row holding NaN gives NaN, as do rows whose maximum is +inf or
  // -inf (all -inf), as in torch.
  void (*softmax_forward)(int64_t outer, int64_t D, int64_t inner, const T* x, T* y, bool log);
  // Gradient from the saved output y: softmax dx = y (g - sum_d(g y)); log_softmax
  // dx = g - exp(y) sum_d(g).
  void (*softmax_backward)(int64_t outer, int64_t D, int64_t inner, const T* g, const T* y, T* dx,
                           bool log);
};

// The kernels of an instruction set (default: the one in force), filled once.
template <typename T>
const ActivationKernels<T>& activation_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
