// CPU bindings of layer_norm, layer_norm_stats, layer_norm_backward, add_layer_norm,
// add_layer_norm_stats, add_layer_norm_backward and their RMSNorm counterparts (rms_norm, ...,
// add_rms_norm_backward: the same paths with rms set, no bias, no mean): argument checks, output allocation (outputs
// contiguous; non-contiguous operands are copied once), dispatch on dtype. The math is in
// kernels/norm.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <cmath>
#include <optional>
#include <tuple>

#include "common/threads.h"
#include "common/checks.h"
#include "common/fresh_output.h"
#include "common/norm_args.h"
#include "cpu/dtype.h"
#include "cpu/kernels/norm.h"
#include "common/register.h"

namespace fusedops {
namespace {

using OptTensor = std::optional<at::Tensor>;

at::Tensor contiguous_or_empty(const OptTensor& t) { return t.has_value() ? t->contiguous() : at::Tensor(); }

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}
template <typename T>
T* mut_or_null(const at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

void check_affine(const at::Tensor& input, const OptTensor& weight, const OptTensor& bias, const char* op) {
  check_cpu_float_or_bf16(input, op, "input");
  if (weight.has_value()) check_param_dtype(*weight, input, op, "weight");
  if (bias.has_value()) check_param_dtype(*bias, input, op, "bias");
}

void check_like_input(const at::Tensor& t, const at::Tensor& input, const char* op, const char* arg) {
  check_cpu_float_or_bf16(t, op, arg);
  check_same_dtype(t, input, op, arg, "input");
  check_shape_is(t, input.sizes(), op, arg, "the input's shape");
}

// A parameter as the kernel reads it: contiguous, in the arithmetic dtype (fp32 for bf16).
at::Tensor param_for_kernel(const OptTensor& p, const at::Tensor& input) {
  if (!p.has_value()) return at::Tensor();
  return p->to(norm_stat_dtype(input)).contiguous();
}

// out, sum (residual given), mean (stats, not rms) and rstd (stats).
std::array<at::Tensor, 4> forward(const char* op, const at::Tensor& input, const at::Tensor* residual,
                                  at::IntArrayRef normalized_shape, const OptTensor& weight,
                                  const OptTensor& bias, double eps, bool stats, bool rms = false) {
  check_affine(input, weight, bias, op);
  if (residual) check_like_input(*residual, input, op, "residual");
  const NormRows r = norm_rows(input, normalized_shape, weight, bias, op);
  const at::Tensor x = input.contiguous(), res = residual ? residual->contiguous() : at::Tensor();
  const at::Tensor w = param_for_kernel(weight, input), b = param_for_kernel(bias, input);
  at::Tensor out = empty_output(input.sizes(), input.options());
  at::Tensor sum = residual ? empty_output(input.sizes(), input.options()) : at::Tensor();
  at::Tensor mean, rstd;
  if (stats) {
    const auto so = input.options().dtype(norm_stat_dtype(input));
    if (!rms) mean = at::empty(r.stat_shape, so);
    rstd = at::empty(r.stat_shape, so);
    if (r.N == 0) {  // the mean of nothing
      if (!rms) mean.fill_(NAN);
      rstd.fill_(NAN);
    }
  }
  FUSEDOPS_DISPATCH_CPU_FLOAT(input.scalar_type(), op, [&] {
    using C = cpu::compute_t<kernel_t>;
    if (rms) {
      cpu::norm_kernels<kernel_t>().rms_norm_forward(
          r.M, r.N, kptr<kernel_t>(x), ptr_or_null<kernel_t>(res), mut_or_null<kernel_t>(sum),
          ptr_or_null<C>(w), C(eps), kptr<kernel_t>(out), mut_or_null<C>(rstd));
      return;
    }
    cpu::norm_kernels<kernel_t>().layer_norm_forward(
        r.M, r.N, kptr<kernel_t>(x), ptr_or_null<kernel_t>(res), mut_or_null<kernel_t>(sum),
        ptr_or_null<C>(w), ptr_or_null<C>(b), C(eps), kptr<kernel_t>(out), mut_or_null<C>(mean),
        mut_or_null<C>(rstd));
  });
  return {out, sum, mean, rstd};
}

using Grads = std::tuple<OptTensor, OptTensor, OptTensor>;

// The weight and bias gradients come back in the weight's dtype (the input's without one).
// mean nullptr: RMSNorm (mask[2], the bias gradient, is false).
Grads backward(const char* op, const at::Tensor& grad_output, const OptTensor& grad_sum,
               const at::Tensor& input, at::IntArrayRef normalized_shape, const at::Tensor* mean,
               const at::Tensor& rstd, const OptTensor& weight, std::array<bool, 3> mask) {
  check_affine(input, weight, std::nullopt, op);
  check_like_input(grad_output, input, op, "grad_output");
  if (grad_sum.has_value()) check_like_input(*grad_sum, input, op, "grad_sum");
  const NormRows r = norm_rows(input, normalized_shape, weight, std::nullopt, op);
  check_norm_stats(mean, rstd, input, r, op);
  const at::Tensor g = grad_output.contiguous(), x = input.contiguous();
  const at::Tensor mu = mean ? mean->contiguous() : at::Tensor(), rs = rstd.contiguous();
  const at::Tensor w = param_for_kernel(weight, input);
  const at::Tensor ga = mask[0] ? contiguous_or_empty(grad_sum) : at::Tensor();
  const auto po = input.options().dtype(norm_stat_dtype(input));
  const at::ScalarType param_dtype = weight.has_value() ? weight->scalar_type() : input.scalar_type();
  OptTensor dx, dw, db;
  if (mask[0]) dx = empty_output(input.sizes(), input.options());
  if (mask[1]) dw = at::empty(normalized_shape, po);
  if (mask[2]) db = at::empty(normalized_shape, po);
  if (!(mask[0] || mask[1] || mask[2])) return {dx, dw, db};
  FUSEDOPS_DISPATCH_CPU_FLOAT(input.scalar_type(), op, [&] {
    using C = cpu::compute_t<kernel_t>;
    if (!mean) {
      cpu::norm_kernels<kernel_t>().rms_norm_backward(
          r.M, r.N, kptr<kernel_t>(g), kptr<kernel_t>(x), kptr<C>(rs), ptr_or_null<C>(w),
          ptr_or_null<kernel_t>(ga), dx ? kptr<kernel_t>(*dx) : nullptr, dw ? kptr<C>(*dw) : nullptr);
      return;
    }
    cpu::norm_kernels<kernel_t>().layer_norm_backward(
        r.M, r.N, kptr<kernel_t>(g), kptr<kernel_t>(x), kptr<C>(mu), kptr<C>(rs), ptr_or_null<C>(w),
        ptr_or_null<kernel_t>(ga), dx ? kptr<kernel_t>(*dx) : nullptr, dw ? kptr<C>(*dw) : nullptr,
        db ? kptr<C>(*db) : nullptr);
  });
  if (dw && dw->scalar_type() != param_dtype) dw = dw->to(param_dtype);
  if (db && db->scalar_type() != param_dtype) db = db->to(param_dtype);
  return {dx, dw, db};
}

// ---- the ops ----------------------------------------------------------------------------------

at::Tensor layer_norm_cpu(const at::Tensor& input, at::IntArrayRef normalized_shape,
                          const OptTensor& weight, const OptTensor& bias, double eps) {
  return forward("layer_norm", input, nullptr, normalized_shape, weight, bias, eps, false)[0];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_stats_cpu(
    const at::Tensor& input, at::IntArrayRef normalized_shape, const OptTensor& weight,
    const OptTensor& bias, double eps) {
  auto o = forward("layer_norm_stats", input, nullptr, normalized_shape, weight, bias, eps, true);
  return {o[0], o[2], o[3]};
}

Grads layer_norm_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                              at::IntArrayRef normalized_shape, const at::Tensor& mean,
                              const at::Tensor& rstd, const OptTensor& weight, std::array<bool, 3> mask) {
  return backward("layer_norm_backward", grad_output, std::nullopt, input, normalized_shape, &mean,
                  rstd, weight, mask);
}

std::tuple<at::Tensor, at::Tensor> add_layer_norm_cpu(const at::Tensor& input, const at::Tensor& residual,
                                                      at::IntArrayRef normalized_shape,
                                                      const OptTensor& weight, const OptTensor& bias,
                                                      double eps) {
  auto o = forward("add_layer_norm", input, &residual, normalized_shape, weight, bias, eps, false);
  return {o[0], o[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> add_layer_norm_stats_cpu(
    const at::Tensor& input, const at::Tensor& residual, at::IntArrayRef normalized_shape,
    const OptTensor& weight, const OptTensor& bias, double eps) {
  auto o = forward("add_layer_norm_stats", input, &residual, normalized_shape, weight, bias, eps, true);
  return {o[0], o[1], o[2], o[3]};
}

Grads add_layer_norm_backward_cpu(const at::Tensor& grad_output, const OptTensor& grad_sum,
                                  const at::Tensor& sum, at::IntArrayRef normalized_shape,
                                  const at::Tensor& mean, const at::Tensor& rstd,
                                  const OptTensor& weight, std::array<bool, 3> mask) {
  return backward("add_layer_norm_backward", grad_output, grad_sum, sum, normalized_shape, &mean,
                  rstd, weight, mask);
}

// ---- RMSNorm ----------------------------------------------------------------------------------

using OptShape = at::OptionalIntArrayRef;
using RmsGrads = std::tuple<OptTensor, OptTensor>;

std::array<at::Tensor, 4> rms_forward(const char* op, const at::Tensor& input, const at::Tensor* residual,
                                      const OptTensor& weight, std::optional<double> eps,
                                      OptShape normalized_shape, bool stats) {
  const std::vector<int64_t> shape = rms_normalized_shape(input, weight, normalized_shape, op);
  return forward(op, input, residual, shape, weight, std::nullopt, rms_eps(input, eps), stats, true);
}

RmsGrads rms_backward(const char* op, const at::Tensor& grad_output, const OptTensor& grad_sum,
                      const at::Tensor& input, const at::Tensor& rstd, const OptTensor& weight,
                      OptShape normalized_shape, std::array<bool, 2> mask) {
  const std::vector<int64_t> shape = rms_normalized_shape(input, weight, normalized_shape, op);
  auto [dx, dw, db] = backward(op, grad_output, grad_sum, input, shape, nullptr, rstd, weight,
                               {mask[0], mask[1], false});
  return {dx, dw};
}

at::Tensor rms_norm_cpu(const at::Tensor& input, const OptTensor& weight, std::optional<double> eps,
                        OptShape normalized_shape) {
  return rms_forward("rms_norm", input, nullptr, weight, eps, normalized_shape, false)[0];
}

std::tuple<at::Tensor, at::Tensor> rms_norm_stats_cpu(const at::Tensor& input, const OptTensor& weight,
                                                      std::optional<double> eps, OptShape normalized_shape) {
  auto o = rms_forward("rms_norm_stats", input, nullptr, weight, eps, normalized_shape, true);
  return {o[0], o[3]};
}

RmsGrads rms_norm_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rstd,
                               const OptTensor& weight, OptShape normalized_shape, std::array<bool, 2> mask) {
  return rms_backward("rms_norm_backward", grad_output, std::nullopt, input, rstd, weight, normalized_shape, mask);
}

std::tuple<at::Tensor, at::Tensor> add_rms_norm_cpu(const at::Tensor& input, const at::Tensor& residual,
                                                    const OptTensor& weight, std::optional<double> eps,
                                                    OptShape normalized_shape) {
  auto o = rms_forward("add_rms_norm", input, &residual, weight, eps, normalized_shape, false);
  return {o[0], o[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_stats_cpu(
    const at::Tensor& input, const at::Tensor& residual, const OptTensor& weight, std::optional<double> eps,
    OptShape normalized_shape) {
  auto o = rms_forward("add_rms_norm_stats", input, &residual, weight, eps, normalized_shape, true);
  return {o[0], o[1], o[3]};
}

RmsGrads add_rms_norm_backward_cpu(const at::Tensor& grad_output, const OptTensor& grad_sum,
                                   const at::Tensor& sum, const at::Tensor& rstd, const OptTensor& weight,
                                   OptShape normalized_shape, std::array<bool, 2> mask) {
  return rms_backward("add_rms_norm_backward", grad_output, grad_sum, sum, rstd, weight, normalized_shape, mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_NORM_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
