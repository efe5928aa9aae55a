// Activation, SwiGLU and softmax ops, torch-free: the API of the activation_ops kernels
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
  // SwiGLU y = silu(a) * b over M rows of N elements, row i of a at a + i * lda (likewise b, y):
  // the two halves of one projection are read in place.
  void (*swiglu_forward)(int64_t M, int64_t N, const T* a, int64_t lda, const T* b, int64_t ldb, T* y,
                         int64_t ldy);
  // da = g * b * silu'(a), silu'(a) = sig(a) (1 + a (1 - sig(a))), and db = g * silu(a), recomputed
  // from a and b in one pass; da and db ([M, N], leading dimension N) may each be nullptr.
  void (*swiglu_backward)(int64_t M, int64_t N, const T* g, int64_t ldg, const T* a, int64_t lda,
                          const T* b, int64_t ldb, T* da, T* db);
};

// The kernels of an instruction set (default: the one in force), filled once.
template <typename T>
const ActivationKernels<T>& activation_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
