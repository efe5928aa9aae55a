// CPU bindings of gelu, relu, sigmoid, tanh, softmax, log_softmax and their backward ops:
// argument checks, output allocation (contiguous outputs; non-contiguous operands are copied
// once), dispatch on dtype. The math is in kernels/activation_ops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "common/threads.h"
#include "common/activation_args.h"
#include "common/checks.h"
#include "common/fresh_output.h"
#include "common/norm_args.h"
#include "cpu/dtype.h"
#include "cpu/kernels/activation_ops.h"
#include "common/register.h"

namespace fusedops {
namespace {

at::Tensor forward(const char* op, Pointwise f, const at::Tensor& input) {
  check_cpu_float_or_bf16(input, op, "input");
  const at::Tensor x = input.contiguous();
  at::Tensor y = empty_output(input.sizes(), input.options());
  FUSEDOPS_DISPATCH_CPU_FLOAT(input.scalar_type(), "fusedops.activation", [&] {
    cpu::activation_kernels<kernel_t>().pointwise_forward(f, x.numel(), kptr<kernel_t>(x), kptr<kernel_t>(y));
  });
  return y;
}

// saved: the input (gelu) or the output (the others), named `saved_name` in messages.
at::Tensor backward(const char* op, Pointwise f, const at::Tensor& grad_output, const at::Tensor& saved,
                    const char* saved_name) {
  check_cpu_float_or_bf16(saved, op, saved_name);
  check_cpu_float_or_bf16(grad_output, op, "grad_output");
  check_same_dtype(grad_output, saved, op, "grad_output", saved_name);
  FUSEDOPS_CHECK(grad_output.sizes() == saved.sizes(), op, "grad_output must have the shape of ",
                 saved_name, " ", shape_str(saved.sizes()), ", got ", shape_str(grad_output.sizes()));
  const at::Tensor g = grad_output.contiguous(), s = saved.contiguous();
  at::Tensor dx = empty_output(saved.sizes(), saved.options());
  FUSEDOPS_DISPATCH_CPU_FLOAT(saved.scalar_type(), "fusedops.activation_backward", [&] {
    cpu::activation_kernels<kernel_t>().pointwise_backward(f, s.numel(), kptr<kernel_t>(g), kptr<kernel_t>(s),
                                      kptr<kernel_t>(dx));
  });
  return dx;
}

at::Tensor gelu_cpu(const at::Tensor& input, c10::string_view approximate) {
  return forward("gelu", gelu_kind(approximate, "gelu"), input);
}
at::Tensor gelu_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                             c10::string_view approximate) {
  return backward("gelu_backward", gelu_kind(approximate, "gelu_backward"), grad_output, input, "input");
}
at::Tensor relu_cpu(const at::Tensor& input) { return forward("relu", Pointwise::relu, input); }
at::Tensor relu_backward_cpu(const at::Tensor& grad_output, const at::Tensor& output) {
  return backward("relu_backward", Pointwise::relu, grad_output, output, "output");
}
at::Tensor sigmoid_cpu(const at::Tensor& input) { return forward("sigmoid", Pointwise::sigmoid, input); }
at::Tensor sigmoid_backward_cpu(const at::Tensor& grad_output, const at::Tensor& output) {
  return backward("sigmoid_backward", Pointwise::sigmoid, grad_output, output, "output");
}
at::Tensor tanh_cpu(const at::Tensor& input) { return forward("tanh", Pointwise::tanh, input); }
at::Tensor tanh_backward_cpu(const at::Tensor& grad_output, const at::Tensor& output) {
  return backward("tanh_backward", Pointwise::tanh, grad_output, output, "output");
}

// ---- softmax ----------------------------------------------------------------------------------

at::Tensor softmax_forward(const char* op, const at::Tensor& input, int64_t dim, bool log) {
  check_cpu_float_or_bf16(input, op, "input");
  const SoftmaxSplit s = softmax_split(input, dim, op);
  const at::Tensor x = input.contiguous();
  at::Tensor y = empty_output(input.sizes(), input.options());
  FUSEDOPS_DISPATCH_CPU_FLOAT(input.scalar_type(), "fusedops.softmax", [&] {
    cpu::activation_kernels<kernel_t>().softmax_forward(s.outer, s.D, s.inner, kptr<kernel_t>(x), kptr<kernel_t>(y), log);
  });
  return y;
}

at::Tensor softmax_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& output,
                            int64_t dim, bool log) {
  check_cpu_float_or_bf16(output, op, "output");
  check_cpu_float_or_bf16(grad_output, op, "grad_output");
  check_same_dtype(grad_output, output, op, "grad_output", "output");
  FUSEDOPS_CHECK(grad_output.sizes() == output.sizes(), op, "grad_output must have the shape of output ",
                 shape_str(output.sizes()), ", got ", shape_str(grad_output.sizes()));
  const SoftmaxSplit s = softmax_split(output, dim, op);
  const at::Tensor g = grad_output.contiguous(), y = output.contiguous();
  at::Tensor dx = empty_output(output.sizes(), output.options());
  FUSEDOPS_DISPATCH_CPU_FLOAT(output.scalar_type(), "fusedops.softmax_backward", [&] {
    cpu::activation_kernels<kernel_t>().softmax_backward(s.outer, s.D, s.inner, kptr<kernel_t>(g), kptr<kernel_t>(y),
                                    kptr<kernel_t>(dx), log);
  });
  return dx;
}

at::Tensor softmax_cpu(const at::Tensor& input, int64_t dim) {
  return softmax_forward("softmax", input, dim, false);
}
at::Tensor softmax_backward_cpu(const at::Tensor& grad_output, const at::Tensor& output, int64_t dim) {
  return softmax_backward("softmax_backward", grad_output, output, dim, false);
}
at::Tensor log_softmax_cpu(const at::Tensor& input, int64_t dim) {
  return softmax_forward("log_softmax", input, dim, true);
}
at::Tensor log_softmax_backward_cpu(const at::Tensor& grad_output, const at::Tensor& output, int64_t dim) {
  return softmax_backward("log_softmax_backward", grad_output, output, dim, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_ACTIVATION_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
