// conv2d / max_pool2d bindings on the CUDA kernels, shared by the CUDA build (conv.cu) and the
// simulator build (sim/sim_conv.cpp). Same checks and shape rules as the CPU binding
// (common/conv_args.h). Include after defining FUSEDOPS_CUDA_NS in a simulator build.
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

inline at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  check_tensor(input, input, op, "input", "input");
  check_tensor(weight, input, op, "weight", "input");
  if (bias.has_value()) check_tensor(*bias, input, op, "bias", "input");
  const cpu::Conv2dShape s = conv2d_shape(input, weight, bias, stride, padding, dilation, groups, op);
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
  const cpu::Conv2dShape s =
      conv2d_shape(input, weight, std::nullopt, stride, padding, dilation, groups, op);
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
    if (mask[0]) {
      gx = at::empty(input.sizes(), input.options());
      const at::Tensor w = weight.contiguous();
      launch(op, [&] { k::conv2d_backward_input_launch<T>(s, ptr<T>(gy), ptr<T>(w), ptr<T>(*gx), st); });
    }
    if (mask[1]) {
      gw = at::empty(weight.sizes(), weight.options());
      const at::Tensor x = nchw4(input);
      launch(op, [&] { k::conv2d_backward_weight_launch<T>(s, ptr<T>(gy), ptr<T>(x), ptr<T>(*gw), st); });
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
  const cpu::Pool2dShape s = max_pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode, op);
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
  const cpu::Pool2dShape s =
      max_pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  check_pool_grad(grad_output, indices, input, s, op);
  DeviceGuard guard(input);
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
