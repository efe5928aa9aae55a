// CPU bindings of conv2d, conv2d_backward, max_pool2d_with_indices, max_pool2d_backward:
// argument checks, allocation, dispatch on dtype. The kernels take NCHW contiguous tensors;
// channels-last or strided inputs are made contiguous here, and the output is returned in the
// memory format torch gives. The math is in kernels/conv.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>

#include "common/threads.h"
#include "common/checks.h"
#include "common/conv_args.h"
#include "cpu/dtype.h"
#include "cpu/kernels/conv.h"
#include "common/register.h"

namespace fusedops {
namespace {

void check_conv_tensors(const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias, const char* op) {
  if (input.scalar_type() == at::kBFloat16) {  // a bf16 input: bf16 or fp32 (master) parameters
    check_cpu_float_or_bf16(input, op, "input");
    check_bf16_or_master(weight, op, "weight", "input");
    if (bias.has_value()) check_bf16_or_master(*bias, op, "bias", "input");
    return;
  }
  check_cpu_float(input, op, "input");
  check_cpu_float(weight, op, "weight");
  check_same_dtype(weight, input, op, "weight", "input");
  if (bias.has_value()) {
    check_cpu_float(*bias, op, "bias");
    check_same_dtype(*bias, input, op, "bias", "input");
  }
}

// The 4-D NCHW-contiguous view the kernels read.
at::Tensor nchw(const at::Tensor& t) { return (t.dim() == 3 ? t.unsqueeze(0) : t).contiguous(); }

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  check_conv_tensors(input, weight, bias, op);
  if (input.scalar_type() == at::kBFloat16) {
    // bf16: widened to fp32 (exact) for the fp32 kernels, the output rounded once. Correct and
    // bf16 in, bf16 out, but no faster than fp32: the conv kernels have no bf16 packing yet.
    const std::optional<at::Tensor> b32 = bias.has_value() ? std::optional<at::Tensor>(bias->to(at::kFloat)) : std::nullopt;
    return conv2d_cpu(input.to(at::kFloat), weight.to(at::kFloat), b32, stride, padding, dilation, groups)
        .to(at::kBFloat16);
  }
  const Conv2dShape s = conv2d_shape(input, weight, bias, stride, padding, dilation, groups, op);
  at::Tensor out = conv2d_output(input, weight, s);
  const bool cl = !out.is_contiguous();
  at::Tensor y = cl ? at::empty(out.sizes(), out.options().memory_format(at::MemoryFormat::Contiguous)) : out;
  const at::Tensor x = nchw(input), w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.conv2d", [&] {
    cpu::conv2d_forward<scalar_t>(s, x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                  b.defined() ? b.data_ptr<scalar_t>() : nullptr,
                                  y.data_ptr<scalar_t>());
  });
  if (cl) out.copy_(y);
  return input.dim() == 3 ? out.squeeze(0) : out;
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
conv2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                    int64_t groups, std::array<bool, 3> mask) {
  const char* op = "conv2d_backward";
  check_conv_tensors(input, weight, std::nullopt, op);
  if (input.scalar_type() == at::kBFloat16) {  // widened, as the forward; the weight and bias
    check_cpu_float_or_bf16(grad_output, op, "grad_output");  // gradients in the weight's dtype
    check_same_dtype(grad_output, input, op, "grad_output", "input");
    auto [gx, gw, gb] = conv2d_backward_cpu(grad_output.to(at::kFloat), input.to(at::kFloat),
                                            weight.to(at::kFloat), stride, padding, dilation, groups, mask);
    if (gx) gx = gx->to(at::kBFloat16);
    if (gw) gw = gw->to(weight.scalar_type());
    if (gb) gb = gb->to(weight.scalar_type());
    return {gx, gw, gb};
  }
  check_cpu_float(grad_output, op, "grad_output");
  check_same_dtype(grad_output, input, op, "grad_output", "input");
  const Conv2dShape s =
      conv2d_shape(input, weight, std::nullopt, stride, padding, dilation, groups, op);
  const std::vector<int64_t> want =
      input.dim() == 4 ? std::vector<int64_t>{s.N, s.K, s.OH, s.OW} : std::vector<int64_t>{s.K, s.OH, s.OW};
  FUSEDOPS_CHECK(grad_output.sizes().vec() == want, op, "grad_output must have shape ",
                 shape_str(want), ", got ", shape_str(grad_output.sizes()));
  std::optional<at::Tensor> gx, gw, gb;
  const at::Tensor gy = nchw(grad_output);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.conv2d_backward", [&] {
    if (mask[0]) {
      gx = at::empty(input.sizes(), input.options());
      cpu::conv2d_backward_input<scalar_t>(s, gy.data_ptr<scalar_t>(),
                                           weight.contiguous().data_ptr<scalar_t>(),
                                           gx->data_ptr<scalar_t>());
    }
    if (mask[1]) {
      gw = at::empty(weight.sizes(), weight.options());
      const at::Tensor x = nchw(input);
      cpu::conv2d_backward_weight<scalar_t>(s, gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                            gw->data_ptr<scalar_t>());
    }
    if (mask[2]) {
      gb = at::empty({s.K}, input.options());
      cpu::conv2d_backward_bias<scalar_t>(s, gy.data_ptr<scalar_t>(), gb->data_ptr<scalar_t>());
    }
  });
  return {gx, gw, gb};
}

std::tuple<at::Tensor, at::Tensor> max_pool2d_with_indices_cpu(
    const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d";
  check_cpu_float_or_bf16(input, op, "input");
  const Pool2dShape s =
      max_pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  const auto sizes = pool_output_sizes(input, s);
  const auto fmt = input.dim() == 4 ? input.suggest_memory_format() : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty(sizes, input.options().memory_format(fmt));
  at::Tensor idx = at::empty(sizes, input.options().dtype(at::kLong).memory_format(fmt));
  const bool cl = fmt != at::MemoryFormat::Contiguous;
  at::Tensor y = cl ? at::empty(sizes, input.options()) : out;
  at::Tensor i = cl ? at::empty(sizes, idx.options().memory_format(at::MemoryFormat::Contiguous)) : idx;
  const at::Tensor x = input.contiguous();
  FUSEDOPS_DISPATCH_CPU_FLOAT(input.scalar_type(), op, [&] {
    cpu::max_pool2d_forward<kernel_t>(s, kptr<kernel_t>(x), kptr<kernel_t>(y), i.data_ptr<int64_t>());
  });
  if (cl) out.copy_(y), idx.copy_(i);
  return {out, idx};
}

at::Tensor max_pool2d_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& indices, at::IntArrayRef kernel_size,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  check_cpu_float_or_bf16(input, op, "input");
  check_cpu_float_or_bf16(grad_output, op, "grad_output");
  check_same_dtype(grad_output, input, op, "grad_output", "input");
  const Pool2dShape s =
      max_pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode, op);
  check_pool_grad(grad_output, indices, input, s, op);
  check_pool_indices(indices, s, op);
  at::Tensor gx = at::empty(input.sizes(), input.options());
  const at::Tensor gy = grad_output.contiguous(), i = indices.contiguous();
  FUSEDOPS_DISPATCH_CPU_FLOAT(input.scalar_type(), op, [&] {
    cpu::max_pool2d_backward<kernel_t>(s, kptr<kernel_t>(gy), i.data_ptr<int64_t>(), kptr<kernel_t>(gx));
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_CONV_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
