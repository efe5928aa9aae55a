// embedding / embedding_backward bindings on the CUDA kernels, shared by the CUDA build
// (embedding.cu) and the simulator build (sim/sim_embedding.cpp): same checks, plans and
// launches. Indices go to the kernels as int64; an index out of range is found (with ATen ops)
// before a kernel runs. Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "common/checks.h"
#include "common/layers_args.h"
#include "cuda/kernels/embedding.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace embedding_bind {

// The indices as contiguous int64, checked to lie in [0, V).
inline at::Tensor checked_indices(const at::Tensor& input, const at::Tensor& ref, int64_t V, const char* op) {
  check_indices_dtype(input, op);
  FUSEDOPS_CHECK(input.device() == ref.device(), op, "input must be on the device of weight (", ref.device(),
                 "), got ", input.device());
  const at::Tensor idx = input.to(at::kLong).contiguous();
  if (idx.numel() > 0) {
    const at::Tensor bad = at::logical_or(idx < 0, idx >= V).flatten();
    if (bad.any().item<bool>()) {
      const int64_t pos = at::argmax(bad.to(at::kInt)).item<int64_t>();
      bad_index(pos, idx.flatten()[pos].item<int64_t>(), V, op);
    }
  }
  return idx;
}

}  // namespace embedding_bind

inline at::Tensor embedding(const at::Tensor& input, const at::Tensor& weight, std::optional<int64_t> padding_idx,
                            std::optional<double> max_norm, double norm_type, bool scale_grad_by_freq, bool sparse) {
  const char* op = "embedding";
  check_tensor(weight, weight, op, "weight", "weight");
  const EmbeddingShape s = embedding_shape(input, weight, padding_idx, op);
  FUSEDOPS_CHECK(!max_norm.has_value(), op, "max_norm is not supported (renormalising rows in the forward); ",
                 "got max_norm=", max_norm.value_or(0.0), ". Use max_norm=None");
  FUSEDOPS_CHECK(!sparse, op, "sparse=True is not supported (the gradient is a dense tensor); use sparse=False");
  (void)norm_type;
  (void)scale_grad_by_freq;
  DeviceGuard guard(weight);
  const at::Tensor idx = embedding_bind::checked_indices(input, weight, s.V, op);
  const at::Tensor w = weight.stride(1) == 1 ? weight : weight.contiguous();
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.push_back(s.D);
  at::Tensor y = at::empty(shape, weight.options());
  dispatch(weight.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::embedding_forward_plan(s.n, s.D);
    launch(op, [&] {
      k::embedding_forward_launch<T, int64_t>(plan, s.n, s.D, ptr<int64_t>(idx), ptr<T>(w), w.stride(0), ptr<T>(y),
                                              stream_for(w));
    });
  });
  return y;
}

inline at::Tensor embedding_backward(const at::Tensor& grad_output, const at::Tensor& input, int64_t num_weights,
                                     std::optional<int64_t> padding_idx, bool scale_grad_by_freq) {
  const char* op = "embedding_backward";
  check_tensor(grad_output, grad_output, op, "grad_output", "grad_output");
  FUSEDOPS_CHECK(num_weights >= 0, op, "num_weights must be >= 0, got ", num_weights);
  FUSEDOPS_CHECK(grad_output.dim() == input.dim() + 1 && grad_output.sizes().slice(0, input.dim()) == input.sizes(),
                 op, "grad_output must have shape input.shape + [embedding_dim] (input ",
                 shape_str(input.sizes()), "), got ", shape_str(grad_output.sizes()));
  const int64_t D = grad_output.size(-1), pad = embedding_padding(padding_idx, num_weights, op);
  DeviceGuard guard(grad_output);
  const at::Tensor idx = embedding_bind::checked_indices(input, grad_output, num_weights, op);
  const at::Tensor g = grad_output.contiguous();
  at::Tensor dw = at::empty({num_weights, D}, grad_output.options());
  const k::LaunchPlan plan = k::embedding_backward_plan(num_weights, D);
  FUSEDOPS_CHECK(int64_t(plan.grid.y) <= k::kMaxGridYZ, op, "embedding_dim ", D, " is too large for the kernel");
  dispatch(grad_output.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    launch(op, [&] {
      k::embedding_backward_launch<T, int64_t>(plan, idx.numel(), num_weights, D, ptr<int64_t>(idx), ptr<T>(g), pad,
                                               scale_grad_by_freq, ptr<T>(dw), stream_for(g));
    });
  });
  return dw;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind

