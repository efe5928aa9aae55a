// conv2d / max_pool2d bindings on the CUDA kernels, shared by the CUDA build (conv.cu) and the
// simulator build (sim/sim_conv.cpp). Same checks and shape rules as the CPU binding
// (common/conv_args.h). The backwards reuse the forward kernel (tensor cores for 16-bit): the
// stride-1 input gradient as the transposed convolution, the weight gradient as the forward
// with batch and channels exchanged. Include after defining FUSEDOPS_CUDA_NS in a simulator build.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/conv_args.h"
#include "cuda/kernels/conv.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

inline at::Tensor nchw4(const at::Tensor& t) { return (t.dim() == 3 ? t.unsqueeze(0) : t).contiguous(); }

// The bias gradient runs a block per output channel along grid.x (kMaxGridX = 2^31 - 1), and the
// forward's (channel tile, group) pairs, at most K (C in the input gradient's transposed
// convolution), fill grid.y x grid.z (kMaxGridYZ^2): channels up to 2^31 - 1.
inline void check_channels(const Conv2dShape& s, const char* op) {
  FUSEDOPS_CHECK(s.C <= kMaxGridX && s.K <= kMaxGridX, op,
                 "at most 2^31 - 1 input and output channels are supported on this backend, got ",
                 s.C, " and ", s.K);
}

inline at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  check_tensor(input, input, op, "input", "input");
  check_tensor(weight, input, op, "weight", "input");
  if (bias.has_value()) check_tensor(*bias, input, op, "bias", "input");
  const Conv2dShape s = conv2d_shape(input, weight, bias, stride, padding, dilation, groups, op);
  check_channels(s, op);
  DeviceGuard guard(input);
  at::Tensor out = conv2d_output(input, weight, s);
  const bool cl = !out.is_contiguous();
  at::Tensor y = cl ? at::empty(out.sizes(), out.options().memory_format(at::MemoryFormat::Contiguous)) : out;
  const at::Tensor x = nchw4(input), w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  dispatch(input.scalar_type(), [&](auto t) {
    using T = decltype(t);
    launch(op, [&] {
      k::conv2d_forward_launch<T>(s, ptr<T>(x), ptr<T>(w), b.defined() ? ptr<T>(b) : nullptr,
                                  ptr<T>(y), stream_for(input));
    });
  });
  if (cl) out.copy_(y);
  return input.dim() == 3 ? out.squeeze(0) : out;
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
conv2d_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                int64_t groups, std::array<bool, 3> mask) {
  const char* op = "conv2d_backward";
  check_tensor(input, input, op, "input", "input");
  check_tensor(weight, input, op, "weight", "input");
  check_tensor(grad_output, input, op, "grad_output", "input");
  const Conv2dShape s =
      conv2d_shape(input, weight, std::nullopt, stride, padding, dilation, groups, op);
  check_channels(s, op);
  const std::vector<int64_t> want = input.dim() == 4 ? std::vector<int64_t>{s.N, s.K, s.OH, s.OW}
                                                     : std::vector<int64_t>{s.K, s.OH, s.OW};
  FUSEDOPS_CHECK(grad_output.sizes().vec() == want, op, "grad_output must have shape ",
                 shape_str(want), ", got ", shape_str(grad_output.sizes()));
  DeviceGuard guard(input);
  std::optional<at::Tensor> gx, gw, gb;
  const at::Tensor gy = nchw4(grad_output);
  const cudaStream_t st = stream_for(input);
  dispatch(input.scalar_type(), [&](auto t) {
    using T = decltype(t);
    const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
    if (mask[0]) {
      gx = at::empty(input.sizes(), input.options());
      if (s.sh == 1 && s.sw == 1 && s.ph <= s.dh * (s.R - 1) && s.pw <= s.dw * (s.S - 1) && s.K > 0) {
        // Stride 1: the forward kernel (tensor cores for 16-bit) on the transposed convolution:
        // gy padded by dilation * (kernel - 1) - padding, the weight flipped with its channel
        // axes swapped, wt[g * Cg + c, k, R-1-r, S-1-q] = w[g * Kg + k, c, r, q].
        const at::Tensor wt = weight.reshape({s.groups, Kg, Cg, s.R, s.S})
                                  .flip({3, 4})
                                  .transpose(1, 2)
                                  .reshape({s.C, Kg, s.R, s.S})
                                  .contiguous();
        Conv2dShape t = s;
        t.C = s.K, t.H = s.OH, t.W = s.OW, t.K = s.C, t.OH = s.H, t.OW = s.W;
        t.ph = s.dh * (s.R - 1) - s.ph, t.pw = s.dw * (s.S - 1) - s.pw;
        launch(op, [&] { k::conv2d_forward_launch<T>(t, ptr<T>(gy), ptr<T>(wt), nullptr, ptr<T>(*gx), st); });
      } else {
        const at::Tensor w = weight.contiguous();
        launch(op, [&] { k::conv2d_backward_input_launch<T>(s, ptr<T>(gy), ptr<T>(w), ptr<T>(*gx), st); });
      }
    }
    if (mask[1]) {
      gw = at::empty(weight.sizes(), weight.options());
      if (s.N == 0 || s.OH * s.OW == 0) {
        gw->zero_();
      } else {
        // The forward kernel (tensor cores for 16-bit) with batch and channels swapped: per group,
        // out[c, k, r, q] = sum over n, i, j of x[n, c, i*sh - ph + r*dh, j*sw - pw + q*dw] *
        // gy[n, k, i, j], a convolution of x^T [Cg, N, H, W] by gy^T [Kg, N, OH, OW] with stride
        // and dilation exchanged; its first R x S outputs, transposed, are the weight gradient.
        const at::Tensor x = nchw4(input);
        for (int64_t g = 0; g < s.groups; ++g) {
          const at::Tensor xt = x.narrow(1, g * Cg, Cg).transpose(0, 1).contiguous();
          const at::Tensor gyt = gy.narrow(1, g * Kg, Kg).transpose(0, 1).contiguous();
          Conv2dShape u;
          u.N = Cg, u.C = s.N, u.H = s.H, u.W = s.W, u.K = Kg, u.R = s.OH, u.S = s.OW;
          u.sh = s.dh, u.sw = s.dw, u.dh = s.sh, u.dw = s.sw, u.ph = s.ph, u.pw = s.pw, u.groups = 1;
          u.OH = (s.H + 2 * s.ph - s.sh * (s.OH - 1) - 1) / s.dh + 1;
          u.OW = (s.W + 2 * s.pw - s.sw * (s.OW - 1) - 1) / s.dw + 1;
          at::Tensor out = at::empty({Cg, Kg, u.OH, u.OW}, input.options());
          launch(op, [&] { k::conv2d_forward_launch<T>(u, ptr<T>(xt), ptr<T>(gyt), nullptr, ptr<T>(out), st); });
          gw->narrow(0, g * Kg, Kg).copy_(out.narrow(2, 0, s.R).narrow(3, 0, s.S).transpose(0, 1));
        }
      }
    }
    if (mask[2]) {
      gb = at::empty({s.K}, input.options());
      launch(op, [&] { k::conv2d_backward_bias_launch<T>(s, ptr<T>(gy), ptr<T>(*gb), st); });
    }
  });
  return {gx, gw, gb};
}

inline std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices(
    const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d";
  check_tensor(input, input, op, "input", "input");
  const Pool2dShape s = max_pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  DeviceGuard guard(input);
  const auto sizes = pool_output_sizes(input, s);
  const auto fmt = input.dim() == 4 ? input.suggest_memory_format() : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty(sizes, input.options().memory_format(fmt));
  at::Tensor idx = at::empty(sizes, input.options().dtype(at::kLong).memory_format(fmt));
  const bool cl = fmt != at::MemoryFormat::Contiguous;
  at::Tensor y = cl ? at::empty(sizes, input.options()) : out;
  at::Tensor i = cl ? at::empty(sizes, idx.options().memory_format(at::MemoryFormat::Contiguous)) : idx;
  const at::Tensor x = input.contiguous();
  dispatch(input.scalar_type(), [&](auto t) {
    using T = decltype(t);
    launch(op, [&] {
      k::max_pool2d_forward_launch<T>(s, ptr<T>(x), ptr<T>(y), i.data_ptr<int64_t>(), stream_for(input));
    });
  });
  if (cl) out.copy_(y), idx.copy_(i);
  return {out, idx};
}

inline at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                      const at::Tensor& indices, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  check_tensor(input, input, op, "input", "input");
  check_tensor(grad_output, input, op, "grad_output", "input");
  const Pool2dShape s =
      max_pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  check_pool_grad(grad_output, indices, input, s, op);
  DeviceGuard guard(input);
  check_pool_indices(indices, s, op);  // (the kernel would drop an index outside its plane)
  at::Tensor gx = at::empty(input.sizes(), input.options());
  const at::Tensor gy = grad_output.contiguous(), i = indices.contiguous();
  dispatch(input.scalar_type(), [&](auto t) {
    using T = decltype(t);
    launch(op, [&] {
      k::max_pool2d_backward_launch<T>(s, ptr<T>(gy), i.data_ptr<int64_t>(), ptr<T>(gx), stream_for(input));
    });
  });
  return gx;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
