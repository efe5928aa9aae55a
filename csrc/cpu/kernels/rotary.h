// Rotary position embedding, torch-free: the API of the rotary kernels (rotary_isa.h holds the
// math, instantiated per instruction set by rotary_<isa>.cpp; rotary.cpp dispatches on
// active_isa()). The convention and the geometry are in contracts/rotary.h.
#pragma once
#include <cstdint>

#include "../../contracts/rotary.h"
#include "bf16.h"
#include "cpu_features.h"

namespace fusedops::cpu {

// One table per instruction set (vec/dispatch.h) and storage type T of x, y, cos and sin:
// float, double, or bf16_t (fp32 arithmetic, each output rounded once).
template <typename T>
struct RotaryKernels {
  // y = rotate(x) (inverse: the transposed rotation) over the B * H * T rows of g; y may be x
  // (in place: each row is read before it is written). Rows split over threads; each output
  // depends on its row alone, so the bits do not depend on the thread count.
  void (*rotary)(const RotaryGeometry& g, const T* x, T* y, const T* cos, const T* sin, bool inverse);
};

template <typename T>
const RotaryKernels<T>& rotary_kernels(Isa isa = active_isa());

}  // namespace fusedops::cpu
