// dropout / dropout_backward bindings on the CUDA kernel, shared by the CUDA build (dropout.cu)
// and the simulator build (sim/sim_dropout.cpp): same checks, plan and launch. Include after
// the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include "common/checks.h"
#include "common/layers_args.h"
#include "cuda/kernels/dropout.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace dropout_bind {

inline at::Tensor run(const char* op, const at::Tensor& input, double p, const at::Tensor& rng) {
  check_tensor(input, input, op, "input", "input");
  const DropoutRng r = dropout_args(p, rng, op);
  DeviceGuard guard(input);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(input.sizes(), input.options());
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::dropout_plan(x.numel());
    launch(op, [&] { k::dropout_launch<T>(plan, x.numel(), ptr<T>(x), ptr<T>(y), p, r.seed, r.offset, stream_for(x)); });
  });
  return y;
}

}  // namespace dropout_bind

inline at::Tensor dropout(const at::Tensor& input, double p, const at::Tensor& rng) {
  return dropout_bind::run("dropout", input, p, rng);
}
inline at::Tensor dropout_backward(const at::Tensor& grad_output, double p, const at::Tensor& rng) {
  return dropout_bind::run("dropout_backward", grad_output, p, rng);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind

