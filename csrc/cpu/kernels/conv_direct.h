// Direct convolution kernels for thin products (few input channels per output, e.g. the first
// layer of an image network), torch-free, SIMD over output columns. conv.cpp picks them where
// the implicit GEMM's K (Cg * R * S) would be too short to fill its microkernel.
// conv_direct_isa.h holds the loops, instantiated per instruction set by conv_direct_<isa>.cpp;
// conv_direct.cpp dispatches on active_isa(). Layouts as conv.h.
#pragma once
#include <cstdint>

#include "cpu_features.h"
#include "conv.h"

namespace fusedops::cpu {

// Direct convolution kernels, one table per instruction set (vec/dispatch.h).
template <typename T>
struct ConvDirectKernels {
  // Output planes (n, k0 .. k0 + kb - 1) of one group, kb <= 4: y = bias + sum over (c, r, s).
  void (*conv_direct_forward)(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y,
                              int64_t n, int64_t k0, int kb);
  // gw[k0 .. k0 + kb - 1] (= or += when accumulate) the contribution of image n to those output
  // channels' weights (one group, kb <= 4).
  void (*conv_direct_weight)(const Conv2dShape& s, const T* gy, const T* x, T* gw, int64_t n,
                             int64_t k0, int kb, bool accumulate);
};

// The kernels of an instruction set (default: the one in force), filled once.
template <typename T>
const ConvDirectKernels<T>& conv_direct_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
