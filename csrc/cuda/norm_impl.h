// layer_norm / add_layer_norm and rms_norm / add_rms_norm bindings on the CUDA kernels, shared by the CUDA build (norm.cu,
// CUDA tensors, the current stream) and the simulator build (sim/sim_norm.cpp, CPU tensors):
// same checks, plans and launches. Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/norm_args.h"
#include "cuda/kernels/norm.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

using OptTensor = std::optional<at::Tensor>;
using NormGrads = std::tuple<OptTensor, OptTensor, OptTensor>;

namespace norm_bind {

inline at::Tensor contiguous_or_empty(const OptTensor& t) { return t.has_value() ? t->contiguous() : at::Tensor(); }

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

inline bool aligned(std::initializer_list<const at::Tensor*> ts) {
  for (const at::Tensor* t : ts)
    if (t->defined() && reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 != 0) return false;
  return true;
}

inline void check_like_input(const at::Tensor& t, const at::Tensor& input, const char* op, const char* arg) {
  check_tensor(t, input, op, arg, "input");
  check_shape_is(t, input.sizes(), op, arg, "the input's shape");
}

// out, sum (residual given), mean (stats, not rms) and rstd (stats).
inline std::array<at::Tensor, 4> forward(const char* op, const at::Tensor& input, const at::Tensor* residual,
                                         at::IntArrayRef normalized_shape, const OptTensor& weight,
                                         const OptTensor& bias, double eps, bool stats, bool rms = false) {
  check_tensor(input, input, op, "input", "input");
  if (weight.has_value()) check_tensor(*weight, input, op, "weight", "input");
  if (bias.has_value()) check_tensor(*bias, input, op, "bias", "input");
  if (residual) check_like_input(*residual, input, op, "residual");
  const NormRows r = norm_rows(input, normalized_shape, weight, bias, op);
  DeviceGuard guard(input);
  const at::Tensor x = input.contiguous(), res = residual ? residual->contiguous() : at::Tensor();
  const at::Tensor w = contiguous_or_empty(weight), b = contiguous_or_empty(bias);
  at::Tensor out = at::empty(input.sizes(), input.options());
  at::Tensor sum = residual ? at::empty(input.sizes(), input.options()) : at::Tensor();
  at::Tensor mean, rstd;
  if (stats) {
    const auto opts = input.options().dtype(norm_stat_dtype(input));
    if (!rms) mean = at::empty(r.stat_shape, opts);
    rstd = at::empty(r.stat_shape, opts);
    if (r.N == 0) {  // the mean of nothing
      if (!rms) mean.fill_(NAN);
      rstd.fill_(NAN);
    }
  }
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = k::gemm_acc_t<T>;
    const k::LaunchPlan plan = k::layer_norm_forward_plan<T>(r.M, r.N, aligned({&x, &res, &sum, &w, &b, &out}));
    launch(op, [&] {
      if (rms)
        return k::rms_norm_forward_launch<T>(plan, r.M, r.N, ptr<T>(x), ptr_or_null<T>(res), ptr_or_null<T>(sum),
                                             ptr_or_null<T>(w), eps, ptr<T>(out), ptr_or_null<Acc>(rstd),
                                             stream_for(input));
      k::layer_norm_forward_launch<T>(plan, r.M, r.N, ptr<T>(x), ptr_or_null<T>(res), ptr_or_null<T>(sum),
                                      ptr_or_null<T>(w), ptr_or_null<T>(b), eps, ptr<T>(out),
                                      ptr_or_null<Acc>(mean), ptr_or_null<Acc>(rstd), stream_for(input));
    });
  });
  return {out, sum, mean, rstd};
}

// mean nullptr: RMSNorm (mask[2] false).
inline NormGrads backward(const char* op, const at::Tensor& grad_output, const OptTensor& grad_sum,
                          const at::Tensor& input, at::IntArrayRef normalized_shape, const at::Tensor* mean,
                          const at::Tensor& rstd, const OptTensor& weight, std::array<bool, 3> mask) {
  check_tensor(input, input, op, "input", "input");
  if (weight.has_value()) check_tensor(*weight, input, op, "weight", "input");
  check_like_input(grad_output, input, op, "grad_output");
  if (grad_sum.has_value()) check_like_input(*grad_sum, input, op, "grad_sum");
  const NormRows r = norm_rows(input, normalized_shape, weight, std::nullopt, op);
  check_norm_stats(mean, rstd, input, r, op);
  DeviceGuard guard(input);
  const at::Tensor g = grad_output.contiguous(), x = input.contiguous();
  const at::Tensor mu = mean ? mean->contiguous() : at::Tensor(), rs = rstd.contiguous();
  const at::Tensor w = contiguous_or_empty(weight);
  const at::Tensor ga = mask[0] ? contiguous_or_empty(grad_sum) : at::Tensor();
  OptTensor dx, dw, db;
  if (mask[0]) dx = at::empty(input.sizes(), input.options());
  if (mask[1]) dw = at::empty(normalized_shape, input.options());
  if (mask[2]) db = at::empty(normalized_shape, input.options());
  if (!(mask[0] || mask[1] || mask[2])) return {dx, dw, db};
  const at::Tensor dxt = dx ? *dx : at::Tensor();
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = k::gemm_acc_t<T>;
    const auto plan = k::layer_norm_backward_plan<T>(r.M, r.N, aligned({&g, &x, &w, &ga, &dxt}), mask[1] || mask[2]);
    at::Tensor ws;
    if (plan.launch.workspace_bytes > 0)
      ws = at::empty({int64_t(plan.launch.workspace_bytes / sizeof(Acc))}, input.options().dtype(norm_stat_dtype(input)));
    launch(op, [&] {
      k::layer_norm_backward_launch<T>(plan, r.M, r.N, ptr<T>(g), ptr<T>(x), ptr_or_null<Acc>(mu), ptr<Acc>(rs),
                                       ptr_or_null<T>(w), ptr_or_null<T>(ga), dx ? ptr<T>(*dx) : nullptr,
                                       dw ? ptr<T>(*dw) : nullptr, db ? ptr<T>(*db) : nullptr,
                                       ptr_or_null<Acc>(ws), stream_for(input));
    });
  });
  return {dx, dw, db};
}

}  // namespace norm_bind

// ---- the ops ----------------------------------------------------------------------------------

inline at::Tensor layer_norm(const at::Tensor& input, at::IntArrayRef normalized_shape, const OptTensor& weight,
                             const OptTensor& bias, double eps) {
  return norm_bind::forward("layer_norm", input, nullptr, normalized_shape, weight, bias, eps, false)[0];
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_stats(const at::Tensor& input,
                                                                       at::IntArrayRef normalized_shape,
                                                                       const OptTensor& weight,
                                                                       const OptTensor& bias, double eps) {
  auto o = norm_bind::forward("layer_norm_stats", input, nullptr, normalized_shape, weight, bias, eps, true);
  return {o[0], o[2], o[3]};
}

inline NormGrads layer_norm_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                     at::IntArrayRef normalized_shape, const at::Tensor& mean,
                                     const at::Tensor& rstd, const OptTensor& weight, std::array<bool, 3> mask) {
  return norm_bind::backward("layer_norm_backward", grad_output, std::nullopt, input, normalized_shape, &mean,
                             rstd, weight, mask);
}

inline std::tuple<at::Tensor, at::Tensor> add_layer_norm(const at::Tensor& input, const at::Tensor& residual,
                                                         at::IntArrayRef normalized_shape,
                                                         const OptTensor& weight, const OptTensor& bias,
                                                         double eps) {
  auto o = norm_bind::forward("add_layer_norm", input, &residual, normalized_shape, weight, bias, eps, false);
  return {o[0], o[1]};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> add_layer_norm_stats(
    const at::Tensor& input, const at::Tensor& residual, at::IntArrayRef normalized_shape,
    const OptTensor& weight, const OptTensor& bias, double eps) {
  auto o = norm_bind::forward("add_layer_norm_stats", input, &residual, normalized_shape, weight, bias, eps, true);
  return {o[0], o[1], o[2], o[3]};
}

inline NormGrads add_layer_norm_backward(const at::Tensor& grad_output, const OptTensor& grad_sum,
                                         const at::Tensor& sum, at::IntArrayRef normalized_shape,
                                         const at::Tensor& mean, const at::Tensor& rstd, const OptTensor& weight,
                                         std::array<bool, 3> mask) {
  return norm_bind::backward("add_layer_norm_backward", grad_output, grad_sum, sum, normalized_shape, &mean, rstd,
                             weight, mask);
}

// ---- RMSNorm ----------------------------------------------------------------------------------

using OptShape = at::OptionalIntArrayRef;
using RmsGrads = std::tuple<OptTensor, OptTensor>;

namespace norm_bind {

inline std::array<at::Tensor, 4> rms_forward(const char* op, const at::Tensor& input, const at::Tensor* residual,
                                             const OptTensor& weight, std::optional<double> eps,
                                             OptShape normalized_shape, bool stats) {
  const std::vector<int64_t> shape = rms_normalized_shape(input, weight, normalized_shape, op);
  return forward(op, input, residual, shape, weight, std::nullopt, rms_eps(input, eps), stats, true);
}

inline RmsGrads rms_backward(const char* op, const at::Tensor& grad_output, const OptTensor& grad_sum,
                             const at::Tensor& input, const at::Tensor& rstd, const OptTensor& weight,
                             OptShape normalized_shape, std::array<bool, 2> mask) {
  const std::vector<int64_t> shape = rms_normalized_shape(input, weight, normalized_shape, op);
  auto [dx, dw, db] = backward(op, grad_output, grad_sum, input, shape, nullptr, rstd, weight, {mask[0], mask[1], false});
  return {dx, dw};
}

}  // namespace norm_bind

inline at::Tensor rms_norm(const at::Tensor& input, const OptTensor& weight, std::optional<double> eps,
                           OptShape normalized_shape) {
  return norm_bind::rms_forward("rms_norm", input, nullptr, weight, eps, normalized_shape, false)[0];
}

inline std::tuple<at::Tensor, at::Tensor> rms_norm_stats(const at::Tensor& input, const OptTensor& weight,
                                                         std::optional<double> eps, OptShape normalized_shape) {
  auto o = norm_bind::rms_forward("rms_norm_stats", input, nullptr, weight, eps, normalized_shape, true);
  return {o[0], o[3]};
}

inline RmsGrads rms_norm_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& rstd,
                                  const OptTensor& weight, OptShape normalized_shape, std::array<bool, 2> mask) {
  return norm_bind::rms_backward("rms_norm_backward", grad_output, std::nullopt, input, rstd, weight,
                                 normalized_shape, mask);
}

inline std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& input, const at::Tensor& residual,
                                                       const OptTensor& weight, std::optional<double> eps,
                                                       OptShape normalized_shape) {
  auto o = norm_bind::rms_forward("add_rms_norm", input, &residual, weight, eps, normalized_shape, false);
  return {o[0], o[1]};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> add_rms_norm_stats(const at::Tensor& input,
                                                                         const at::Tensor& residual,
                                                                         const OptTensor& weight,
                                                                         std::optional<double> eps,
                                                                         OptShape normalized_shape) {
  auto o = norm_bind::rms_forward("add_rms_norm_stats", input, &residual, weight, eps, normalized_shape, true);
  return {o[0], o[1], o[3]};
}

inline RmsGrads add_rms_norm_backward(const at::Tensor& grad_output, const OptTensor& grad_sum, const at::Tensor& sum,
                                      const at::Tensor& rstd, const OptTensor& weight, OptShape normalized_shape,
                                      std::array<bool, 2> mask) {
  return norm_bind::rms_backward("add_rms_norm_backward", grad_output, grad_sum, sum, rstd, weight,
                                 normalized_shape, mask);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind

