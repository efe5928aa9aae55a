// Batch normalisation over [N, C, S] per channel, torch-free: the API of the batch-norm kernels
// (batch_norm_isa.h holds the math, instantiated per instruction set by batch_norm_<isa>.cpp;
// batch_norm.cpp dispatches on active_isa()).
//
// Layouts: planar (x[n, c, s] at (n C + c) S + s: NCHW, NCL) or interleaved (x[r, c] at r C + c
// for the M = N S rows: channels-last NHWC, and every S == 1 input such as BatchNorm1d's [N, C]).
// mean, rstd, var: [C] in T (float for fp32, double for fp64).
//
// Statistics (training): the mean of x - x0 (x0: the channel's first element, so a large common
// offset costs no precision), then the centred sum of squares around that mean; both are
// two-level sums: T lanes over blocks of at most kBlock elements (planar) or kBlockRows rows
// (interleaved), each block's total added into a double. var is the biased variance.
//   planar       one channel at a time per thread (channels split over threads): the mean pass
//                reads the channel from memory, the variance and output passes find it in L2
//                while it fits (N S elements; 401 KB for N32 56x56 fp32): one pass over memory.
//   interleaved  rows in chunks fixed by the sizes, per-chunk double partials added in chunk
//                order; three passes over the data (mean, variance, output).
// Backward: one pass for the per-channel sums of g and g (x - mean), one writing dx; planar
// channels are again in L2 for the second. Every sum's order depends on the sizes alone: the
// same bits for any thread count.
#pragma once
#include <cstdint>

#include "cpu_features.h"

namespace fusedops::cpu {

template <typename T>
struct BatchNormKernels {
  // training: mean, var (biased) and rstd = 1 / sqrt(var + eps) written, then y from them;
  // else mean and rstd are inputs (from the running statistics) and var is unused.
  // y = (x - mean) * rstd * w + b; w, b: [C] or nullptr (1 and 0).
  void (*forward)(int64_t N, int64_t C, int64_t S, bool interleaved, const T* x, const T* w, const T* b, T eps,
                  bool training, T* mean, T* rstd, T* var, T* y);
  // xhat = (x - mean) rstd; dw = sum g xhat, db = sum g per channel; dx = w rstd (g - mean(g)
  // - xhat mean(g xhat)) in training, w rstd g otherwise. Any of dx, dw, db may be nullptr.
  void (*backward)(int64_t N, int64_t C, int64_t S, bool interleaved, const T* g, const T* x, const T* mean,
                   const T* rstd, const T* w, bool training, T* dx, T* dw, T* db);
};

template <typename T>
const BatchNormKernels<T>& batch_norm_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
