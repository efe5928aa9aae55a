// Rotary position embedding geometry, shared by the CPU and CUDA kernels (torch-free, host and
// device). The rotate-half convention (GPT-NeoX, Hugging Face Llama): with h = R / 2,
//   forward  y[j]     = x[j] cos[j]         - x[j + h] sin[j]
//            y[j + h] = x[j + h] cos[j + h] + x[j] sin[j + h]          (j < h)
//   inverse  y[j]     = x[j] cos[j]         + x[j + h] sin[j + h]
//            y[j + h] = x[j + h] cos[j + h] - x[j] sin[j]
// The inverse is the transpose of the forward (the rotation by -theta when cos and sin repeat
// over the two halves, as Hugging Face builds them): the gradient of the forward. Features
// R..D-1 (partial rotary) pass through unchanged.
#pragma once
#include <cstdint>

namespace fusedops {

struct RotaryGeometry {
  int64_t B = 0, H = 0, T = 0, D = 0, R = 0;  // x, y: [B, H, T, D]; the first R features rotate
  int64_t xb = 0, xh = 0, xt = 0;             // strides of x (its last dimension contiguous)
  int64_t yb = 0, yh = 0, yt = 0;             // strides of y (y may be x: in place)
  int64_t cb = 0, ct = 0;                     // strides of cos [B or 1, T, R] (cb 0: broadcast)
  int64_t sb = 0, st = 0;                     // strides of sin
};

}  // namespace fusedops
