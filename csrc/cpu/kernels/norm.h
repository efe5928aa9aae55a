// LayerNorm and RMSNorm over rows, torch-free: the API of the norm kernels (norm_isa.h holds the math,
// instantiated per instruction set by norm_<isa>.cpp; norm.cpp dispatches on active_isa()).
//
// Shapes: M rows of N contiguous elements (row-major, leading dimension N). mean/rstd are
// per-row [M] in the arithmetic type (float for fp32 and bf16, double for fp64). RMSNorm is
// LayerNorm with the mean fixed at zero and no bias: the same passes and the same backward.
#pragma once
#include <cstdint>

#include "bf16.h"
#include "cpu_features.h"

namespace fusedops::cpu {

// LayerNorm kernels, one table per instruction set (vec/dispatch.h) and storage type T of the
// tensors (x, residual, sum, y, g, grad_add, dx): float, double, or bf16_t. The parameters, the
// statistics and the weight/bias gradients are in C, the arithmetic type (fp32 for bf16).
template <typename T>
struct NormKernels {
  using C = compute_t<T>;
  // y = (s - mean) * rstd * w + b per row, with s = x + residual when `residual` is given
  // (written to `sum_out`), else s = x. mean = sum(s) / N, rstd = 1 / sqrt(var + eps) with the
  // biased variance (two passes over the row while it sits in L1/L2). w, b: [N] or nullptr
  // (1 and 0); mean, rstd: [M] or nullptr (not stored).
  void (*layer_norm_forward)(int64_t M, int64_t N, const T* x, const T* residual, T* sum_out,
                             const C* w, const C* b, C eps, T* y, C* mean, C* rstd);
  // Gradients of layer_norm for an incoming gradient g [M, N] and the saved mean/rstd of the
  // normalized input x [M, N] (the sum x + residual for add_layer_norm):
  //   xhat = (x - mean) * rstd,  gw = g * w,
  //   dx = rstd * (gw - mean_row(gw) - xhat * mean_row(gw * xhat)) (+ grad_add)
  //   dw = sum_rows(g * xhat),  db = sum_rows(g)
  // Any of dx, dw, db may be nullptr (not computed); w nullptr means 1; grad_add ([M, N] or
  // nullptr) is added to dx (the gradient reaching add_layer_norm's sum output). dw/db are summed
  // per chunk of rows (chunks fixed by M and N) in blocks, then over the chunks in order: the
  // same bits for any thread count.
  void (*layer_norm_backward)(int64_t M, int64_t N, const T* g, const T* x, const C* mean,
                              const C* rstd, const C* w, const T* grad_add, T* dx, C* dw, C* db);
  // y = s * rstd * w per row, rstd = 1 / sqrt(mean_row(s^2) + eps), s = x + residual when
  // `residual` is given (written to `sum_out`), else s = x. Two passes over a row: the sum of
  // squares (adding and storing the residual), then y. w: [N] or nullptr (1); rstd: [M] or
  // nullptr (not stored).
  void (*rms_norm_forward)(int64_t M, int64_t N, const T* x, const T* residual, T* sum_out,
                           const C* w, C eps, T* y, C* rstd);
  // Gradients of rms_norm: layer_norm_backward with the mean at zero,
  //   xhat = x * rstd,  dx = rstd * (g w - xhat * mean_row(g w xhat)) (+ grad_add),
  //   dw = sum_rows(g * xhat), with the same deterministic partial sums.
  void (*rms_norm_backward)(int64_t M, int64_t N, const T* g, const T* x, const C* rstd, const C* w,
                            const T* grad_add, T* dx, C* dw);
};

// The kernels of an instruction set (default: the one in force), filled once.
template <typename T>
const NormKernels<T>& norm_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
