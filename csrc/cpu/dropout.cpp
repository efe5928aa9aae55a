// CPU bindings of dropout and dropout_backward: argument checks, output allocation (contiguous;
// a non-contiguous operand is copied once, so the mask follows the logical element order),
// dispatch on dtype. The math is in kernels/dropout.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/fresh_output.h"
#include "common/layers_args.h"
#include "common/threads.h"
#include "cpu/kernels/dropout.h"
#include "common/register.h"

namespace fusedops {
namespace {

at::Tensor run(const char* op, const at::Tensor& input, double p, const at::Tensor& rng) {
  check_cpu_float_or_bf16(input, op, "input");
  const DropoutRng r = dropout_args(p, rng, op);
  const at::Tensor x = input.contiguous();
  at::Tensor y = empty_output(input.sizes(), input.options());
  switch (input.scalar_type()) {
    case at::kFloat:
      cpu::dropout<float>(x.numel(), x.data_ptr<float>(), y.data_ptr<float>(), p, r.seed, r.offset);
      break;
    case at::kDouble:
      cpu::dropout<double>(x.numel(), x.data_ptr<double>(), y.data_ptr<double>(), p, r.seed, r.offset);
      break;
    default:
      cpu::dropout<uint16_t>(x.numel(), static_cast<const uint16_t*>(x.data_ptr()),
                             static_cast<uint16_t*>(y.data_ptr()), p, r.seed, r.offset);
  }
  return y;
}

at::Tensor dropout_cpu(const at::Tensor& input, double p, const at::Tensor& rng) {
  return run("dropout", input, p, rng);
}

at::Tensor dropout_backward_cpu(const at::Tensor& grad_output, double p, const at::Tensor& rng) {
  return run("dropout_backward", grad_output, p, rng);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_DROPOUT_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
