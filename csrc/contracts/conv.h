// Convolution and pooling geometry, shared by the CPU kernels (cpu/kernels/conv.h), the CUDA
// kernels (cuda/kernels/conv.cuh) and the argument checks that fill it (common/conv_args.h).
// Tensors are NCHW; weights [K, C / groups, R, S].
#pragma once
#include <cstdint>

namespace fusedops {

struct Conv2dShape {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t K = 0, R = 0, S = 0;         // output channels, kernel height and width
  int64_t OH = 0, OW = 0;              // output height and width
  int64_t sh = 1, sw = 1;              // stride
  int64_t ph = 0, pw = 0;              // padding before the first row / column
  int64_t dh = 1, dw = 1;              // dilation
  int64_t groups = 1;
};

struct Pool2dShape {
  int64_t planes = 0, H = 0, W = 0;  // planes = N * C
  int64_t OH = 0, OW = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
};

}  // namespace fusedops
