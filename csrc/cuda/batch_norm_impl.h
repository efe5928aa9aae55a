// batch_norm / batch_norm_backward bindings on the CUDA kernels, shared by the CUDA build
// (batch_norm.cu) and the simulator build (sim/sim_batch_norm.cpp): same checks, plan and
// launches. Channels-last inputs are read in place (and give channels-last outputs); other
// layouts are made contiguous. Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/layers_args.h"
#include "cuda/kernels/batch_norm.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace batch_norm_bind {

using OptTensor = std::optional<at::Tensor>;

inline at::ScalarType stat_dtype(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_param(const OptTensor& t, const at::Tensor& input, int64_t C, const char* op, const char* arg) {
  if (!t.has_value()) return;
  check_tensor(*t, input, op, arg, "input");
  check_channel_vector(t, C, op, arg);
}

template <typename T>
T* opt_ptr(const at::Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

}  // namespace batch_norm_bind

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm(
    const at::Tensor& input, const std::optional<at::Tensor>& running_mean,
    const std::optional<at::Tensor>& running_var, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, bool training, double eps) {
  using namespace batch_norm_bind;
  const char* op = "batch_norm";
  check_tensor(input, input, op, "input", "input");
  const BatchNormShape s = batch_norm_shape(input, op);
  check_param(weight, input, s.C, op, "weight");
  check_param(bias, input, s.C, op, "bias");
  for (const OptTensor* t : {&running_mean, &running_var}) {
    const char* arg = t == &running_mean ? "running_mean" : "running_var";
    if (t->has_value())
      FUSEDOPS_CHECK((*t)->device() == input.device(), op, arg, " must be on the input's device (", input.device(),
                     "), got ", (*t)->device());
    check_channel_vector(*t, s.C, op, arg);
  }
  FUSEDOPS_CHECK(training || (running_mean.has_value() && running_var.has_value()), op,
                 "running_mean and running_var are needed when training=False");
  FUSEDOPS_CHECK(eps >= 0, op, "eps must be >= 0, got ", eps);
  FUSEDOPS_CHECK(s.C <= k::kMaxGridX, op, "too many channels for the kernel: ", s.C);
  DeviceGuard guard(input);
  const auto so = input.options().dtype(stat_dtype(input));
  const at::Tensor x = batch_norm_layout(input, s.channels_last);
  at::Tensor y = batch_norm_empty(input, s.channels_last);
  at::Tensor mean, rstd, var;
  if (training) {
    mean = at::empty({s.C}, so);
    rstd = at::empty({s.C}, so);
    var = at::empty({s.C}, so);
  } else {
    mean = running_mean->to(stat_dtype(input)).contiguous().clone();
    var = running_var->to(stat_dtype(input)).contiguous().clone();
    rstd = at::rsqrt(var + eps);
  }
  const at::Tensor w = weight.has_value() ? weight->contiguous() : at::Tensor();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = k::gemm_acc_t<T>;
    const k::LaunchPlan plan = k::batch_norm_plan(s.C);
    launch(op, [&] {
      k::batch_norm_forward_launch<T>(plan, s.N, s.C, s.S, s.channels_last, ptr<T>(x), opt_ptr<T>(w), opt_ptr<T>(b),
                                      eps, training, ptr<Acc>(mean), ptr<Acc>(rstd), ptr<Acc>(var), ptr<T>(y),
                                      stream_for(x));
    });
  });
  return {y, mean, rstd, var};
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
batch_norm_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean,
                    const at::Tensor& rstd, const std::optional<at::Tensor>& weight, bool training,
                    std::array<bool, 3> mask) {
  using namespace batch_norm_bind;
  const char* op = "batch_norm_backward";
  check_tensor(input, input, op, "input", "input");
  check_tensor(grad_output, input, op, "grad_output", "input");
  FUSEDOPS_CHECK(grad_output.sizes() == input.sizes(), op, "grad_output must have the input's shape ",
                 shape_str(input.sizes()), ", got ", shape_str(grad_output.sizes()));
  const BatchNormShape s = batch_norm_shape(input, op);
  check_param(weight, input, s.C, op, "weight");
  for (const at::Tensor* t : {&mean, &rstd}) {
    const char* arg = t == &mean ? "mean" : "rstd";
    TORCH_CHECK_TYPE(t->scalar_type() == stat_dtype(input), "fusedops.", op, ": ", arg, " must be ",
                     stat_dtype(input), " for a ", input.scalar_type(), " input, got ", t->scalar_type());
    FUSEDOPS_CHECK(t->device() == input.device(), op, arg, " must be on the input's device (", input.device(),
                   "), got ", t->device());
    check_channel_vector(*t, s.C, op, arg);
  }
  DeviceGuard guard(input);
  const BatchNormBackwardIo io = batch_norm_backward_io(grad_output, input, mean, rstd, weight, s, mask);
  if (!io.any) return {io.dx, io.dw, io.db};
  const at::Tensor &x = io.x, &g = io.g, &mu = io.mean, &rs = io.rstd, &w = io.weight;
  const OptTensor &dx = io.dx, &dw = io.dw, &db = io.db;
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = k::gemm_acc_t<T>;
    const k::LaunchPlan plan = k::batch_norm_plan(s.C);
    launch(op, [&] {
      k::batch_norm_backward_launch<T>(plan, s.N, s.C, s.S, s.channels_last, ptr<T>(g), ptr<T>(x), ptr<Acc>(mu),
                                       ptr<Acc>(rs), opt_ptr<T>(w), training, dx ? ptr<T>(*dx) : nullptr,
                                       dw ? ptr<T>(*dw) : nullptr, db ? ptr<T>(*db) : nullptr, stream_for(x));
    });
  });
  return {io.dx, io.dw, io.db};
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind

