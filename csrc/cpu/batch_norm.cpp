// CPU bindings of batch_norm and batch_norm_backward: argument checks, output allocation
// (channels-last inputs are read in place and give channels-last outputs; other inputs are
// made contiguous once), dispatch on dtype. The math is in kernels/batch_norm.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/fresh_output.h"
#include "common/layers_args.h"
#include "common/threads.h"
#include "cpu/kernels/batch_norm.h"
#include "common/register.h"

namespace fusedops {
namespace {

using OptTensor = std::optional<at::Tensor>;

void check_param(const OptTensor& t, const at::Tensor& input, int64_t C, const char* op, const char* arg) {
  if (!t.has_value()) return;
  check_cpu_float(*t, op, arg);
  check_same_dtype(*t, input, op, arg, "input");
  check_channel_vector(t, C, op, arg);
}

at::Tensor stat(const OptTensor& t, const at::Tensor& input) {
  return t->to(input.scalar_type()).contiguous().clone();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_cpu(
    const at::Tensor& input, const OptTensor& running_mean, const OptTensor& running_var, const OptTensor& weight,
    const OptTensor& bias, bool training, double eps) {
  const char* op = "batch_norm";
  check_cpu_float(input, op, "input");
  const BatchNormShape s = batch_norm_shape(input, op);
  check_param(weight, input, s.C, op, "weight");
  check_param(bias, input, s.C, op, "bias");
  for (const OptTensor* t : {&running_mean, &running_var}) {
    const char* arg = t == &running_mean ? "running_mean" : "running_var";
    if (t->has_value()) check_cpu_float(**t, op, arg);
    check_channel_vector(*t, s.C, op, arg);
  }
  FUSEDOPS_CHECK(training || (running_mean.has_value() && running_var.has_value()), op,
                 "running_mean and running_var are needed when training=False");
  FUSEDOPS_CHECK(eps >= 0, op, "eps must be >= 0, got ", eps);
  const at::Tensor x = batch_norm_layout(input, s.channels_last);
  at::Tensor y = batch_norm_empty(input, s.channels_last);
  at::Tensor mean, rstd, var;
  if (training) {
    mean = at::empty({s.C}, input.options());
    rstd = at::empty({s.C}, input.options());
    var = at::empty({s.C}, input.options());
  } else {
    mean = stat(running_mean, input);
    var = stat(running_var, input);
    rstd = at::rsqrt(var + eps);
  }
  const at::Tensor w = weight.has_value() ? weight->contiguous() : at::Tensor();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.batch_norm", [&] {
    cpu::batch_norm_kernels<scalar_t>().forward(
        s.N, s.C, s.S, s.channels_last, x.data_ptr<scalar_t>(), w.defined() ? w.data_ptr<scalar_t>() : nullptr,
        b.defined() ? b.data_ptr<scalar_t>() : nullptr, scalar_t(eps), training, mean.data_ptr<scalar_t>(),
        rstd.data_ptr<scalar_t>(), var.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
  });
  return {y, mean, rstd, var};
}

std::tuple<OptTensor, OptTensor, OptTensor> batch_norm_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& rstd,
    const OptTensor& weight, bool training, std::array<bool, 3> mask) {
  const char* op = "batch_norm_backward";
  check_cpu_float(input, op, "input");
  check_cpu_float(grad_output, op, "grad_output");
  check_same_dtype(grad_output, input, op, "grad_output", "input");
  FUSEDOPS_CHECK(grad_output.sizes() == input.sizes(), op, "grad_output must have the input's shape ",
                 shape_str(input.sizes()), ", got ", shape_str(grad_output.sizes()));
  const BatchNormShape s = batch_norm_shape(input, op);
  check_param(weight, input, s.C, op, "weight");
  for (const at::Tensor* t : {&mean, &rstd}) {
    const char* arg = t == &mean ? "mean" : "rstd";
    check_cpu_float(*t, op, arg);
    check_same_dtype(*t, input, op, arg, "input");
    check_channel_vector(*t, s.C, op, arg);
  }
  const BatchNormBackwardIo io = batch_norm_backward_io(grad_output, input, mean, rstd, weight, s, mask);
  if (!io.any) return {io.dx, io.dw, io.db};
  const at::Tensor &x = io.x, &g = io.g, &mu = io.mean, &rs = io.rstd, &w = io.weight;
  const OptTensor &dx = io.dx, &dw = io.dw, &db = io.db;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.batch_norm_backward", [&] {
    cpu::batch_norm_kernels<scalar_t>().backward(
        s.N, s.C, s.S, s.channels_last, g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), mu.data_ptr<scalar_t>(),
        rs.data_ptr<scalar_t>(), w.defined() ? w.data_ptr<scalar_t>() : nullptr, training,
        dx ? dx->data_ptr<scalar_t>() : nullptr, dw ? dw->data_ptr<scalar_t>() : nullptr,
        db ? db->data_ptr<scalar_t>() : nullptr);
  });
  return {io.dx, io.dw, io.db};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_BATCH_NORM_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
