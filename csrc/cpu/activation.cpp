// CPU bindings of gelu, relu, sigmoid, tanh, softmax, log_softmax, swiglu and their backward
// ops: argument checks, output allocation (contiguous outputs; non-contiguous operands are
// copied once, except swiglu's, read in place when each row is contiguous), dispatch on dtype. The math is in kernels/activation_ops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

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

// ---- SwiGLU -----------------------------------------------------------------------------------

at::Tensor swiglu_cpu(const at::Tensor& a, const at::Tensor& b) {
  const char* op = "swiglu";
  check_cpu_float_or_bf16(a, op, "a");
  check_cpu_float_or_bf16(b, op, "b");
  check_same_dtype(b, a, op, "b", "a");
  check_swiglu_pair(a, b, op);
  const RowView av = row_view(a), bv = row_view(b);
  at::Tensor y = empty_output(a.sizes(), a.options());
  FUSEDOPS_DISPATCH_CPU_FLOAT(a.scalar_type(), op, [&] {
    cpu::activation_kernels<kernel_t>().swiglu_forward(av.M, av.N, kptr<kernel_t>(av.t), av.ld, kptr<kernel_t>(bv.t),
                                                       bv.ld, kptr<kernel_t>(y), av.N);
  });
  return y;
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> swiglu_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& a, const at::Tensor& b, std::array<bool, 2> mask) {
  const char* op = "swiglu_backward";
  check_cpu_float_or_bf16(grad_output, op, "grad_output");
  check_cpu_float_or_bf16(a, op, "a");
  check_cpu_float_or_bf16(b, op, "b");
  check_same_dtype(b, a, op, "b", "a");
  check_same_dtype(grad_output, a, op, "grad_output", "a");
  check_swiglu_pair(a, b, op);
  check_swiglu_pair(a, grad_output, op, "grad_output");
  std::optional<at::Tensor> da, db;
  if (mask[0]) da = empty_output(a.sizes(), a.options());
  if (mask[1]) db = empty_output(a.sizes(), a.options());
  if (!mask[0] && !mask[1]) return {da, db};
  const RowView gv = row_view(grad_output), av = row_view(a), bv = row_view(b);
  FUSEDOPS_DISPATCH_CPU_FLOAT(a.scalar_type(), op, [&] {
    cpu::activation_kernels<kernel_t>().swiglu_backward(
        av.M, av.N, kptr<kernel_t>(gv.t), gv.ld, kptr<kernel_t>(av.t), av.ld, kptr<kernel_t>(bv.t), bv.ld,
        da ? kptr<kernel_t>(*da) : nullptr, db ? kptr<kernel_t>(*db) : nullptr);
  });
  return {da, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_ACTIVATION_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
