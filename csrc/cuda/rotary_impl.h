// rotary_embedding / rotary_embedding_ / rotary_embedding_backward bindings on the CUDA kernel,
// shared by the CUDA build (rotary.cu) and the simulator build (sim/sim_rotary.cpp): same checks
// (common/rotary_args.h), plan and launches. q and k are read through their strides. Include
// after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/rotary_args.h"
#include "cuda/kernels/rotary.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace rotary_bind {

inline void check_all(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
                      const char* op, const char* q_name, const char* k_name) {
  check_tensor(q, q, op, q_name, q_name);
  check_tensor(k, q, op, k_name, q_name);
  check_tensor(cos, q, op, "cos", q_name);
  check_tensor(sin, q, op, "sin", q_name);
}

inline void run(const RotaryArgs& a, const at::Tensor& x, const at::Tensor& y, bool inverse, const char* op) {
  const RotaryGeometry g = rotary_for(a.g, x, y);
  dispatch(x.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::rotary_plan(g.B * g.H * g.T);
    launch(op, [&] {
      k::rotary_launch<T>(plan, g, ptr<T>(x), ptr<T>(y), ptr<T>(a.cos3), ptr<T>(a.sin3), inverse, stream_for(x));
    });
  });
}

inline at::Tensor rotated(const RotaryArgs& a, const at::Tensor& x, bool inverse, const char* op) {
  at::Tensor y = at::empty(x.sizes(), x.options());
  run(a, rows_readable(x), y, inverse, op);
  return y;
}

inline void rotate_in_place(const RotaryArgs& a, const at::Tensor& x, const char* op) {
  if (x.size(3) <= 1 || x.stride(3) == 1) return run(a, x, x, false, op);
  const at::Tensor c = x.contiguous();
  run(a, c, c, false, op);
  x.copy_(c);
}

}  // namespace rotary_bind

inline std::tuple<at::Tensor, at::Tensor> rotary_embedding(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& cos, const at::Tensor& sin) {
  const char* op = "rotary_embedding";
  rotary_bind::check_all(q, k, cos, sin, op, "q", "k");
  const RotaryArgs a = rotary_args(q, k, cos, sin, op);
  DeviceGuard guard(q);
  return {rotary_bind::rotated(a, q, false, op), rotary_bind::rotated(a, k, false, op)};
}

inline void rotary_embedding_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin) {
  const char* op = "rotary_embedding_";
  rotary_bind::check_all(q, k, cos, sin, op, "q", "k");
  const RotaryArgs a = rotary_args(q, k, cos, sin, op);
  check_rotary_in_place(q, k, op);
  DeviceGuard guard(q);
  rotary_bind::rotate_in_place(a, q, op);
  rotary_bind::rotate_in_place(a, k, op);
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> rotary_embedding_backward(
    const std::optional<at::Tensor>& grad_q, const std::optional<at::Tensor>& grad_k, const at::Tensor& cos,
    const at::Tensor& sin) {
  const char* op = "rotary_embedding_backward";
  FUSEDOPS_CHECK(grad_q.has_value() || grad_k.has_value(), op, "grad_q and grad_k must not both be None");
  const at::Tensor& gq = grad_q.has_value() ? *grad_q : *grad_k;
  const at::Tensor& gk = grad_k.has_value() ? *grad_k : *grad_q;
  rotary_bind::check_all(gq, gk, cos, sin, op, "grad_q", "grad_k");
  const RotaryArgs a = rotary_args(gq, gk, cos, sin, op, "grad_q", "grad_k");
  DeviceGuard guard(gq);
  std::optional<at::Tensor> dq, dk;
  if (grad_q.has_value()) dq = rotary_bind::rotated(a, *grad_q, true, op);
  if (grad_k.has_value()) dk = rotary_bind::rotated(a, *grad_k, true, op);
  return {dq, dk};
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind

