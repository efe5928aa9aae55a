// CPU convolution and max pooling, torch-free. Tensors are NCHW contiguous (the binding makes
// them so); weights [K, C / groups, R, S] contiguous.
//
// conv2d is an implicit GEMM on the foundation GEMM (gemm/gemm.h): per image and group,
// y[Kg, OH*OW] = w[Kg, Cg*R*S] @ im2col(x)[Cg*R*S, OH*OW], where the im2col operand is never
// stored: the GEMM's B-packing callback gathers each KC x NR micro-panel from the image
// (zero padding, stride, dilation included). The weight gradient is the same GEMM with the
// gathered operand transposed (gw[Kg, Cg*R*S] += gy[Kg, P] @ im2col(x)^T), the input gradient
// a convolution of gy with the flipped, transposed weight when the stride is 1 and otherwise
// a GEMM into an L2-sized tile of columns followed by a col2im scatter-add.
#pragma once
#include <cstdint>

#include "../../contracts/conv.h"
#include "bf16.h"

namespace fusedops::cpu {

// y[N, K, OH, OW] = conv(x[N, C, H, W], w[K, C/groups, R, S]) + bias[K] (bias may be null).
template <typename T>
void conv2d_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y);

// gx[N, C, H, W] = d(sum gy * y) / dx.
template <typename T>
void conv2d_backward_input(const Conv2dShape& s, const T* gy, const T* w, T* gx);

// gw[K, C/groups, R, S] = d(sum gy * y) / dw.
template <typename T>
void conv2d_backward_weight(const Conv2dShape& s, const T* gy, const T* x, T* gw);

// gb[K] = sum of gy over batch and pixels.
template <typename T>
void conv2d_backward_bias(const Conv2dShape& s, const T* gy, T* gb);

// y[p, oh, ow] = max over the window (NaN propagates, the first maximum wins); idx receives
// the flat position ih * W + iw of the maximum in its plane, as torch's indices.
template <typename T>
void max_pool2d_forward(const Pool2dShape& s, const T* x, T* y, int64_t* idx);

// gx = 0, then gx[p, idx] += gy[p, o] for every output o.
template <typename T>
void max_pool2d_backward(const Pool2dShape& s, const T* gy, const int64_t* idx, T* gx);

}  // namespace fusedops::cpu
