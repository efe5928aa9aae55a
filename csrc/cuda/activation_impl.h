// gelu / relu / sigmoid / tanh / softmax / log_softmax / swiglu bindings on the CUDA kernels, shared by
// the CUDA build (activation.cu) and the simulator build (sim/sim_activation.cpp): same checks,
// plans and launches. Softmax over a dimension other than the last runs on a transposed
// contiguous copy. Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

#include "common/activation_args.h"
#include "common/checks.h"
#include "common/norm_args.h"
#include "cuda/kernels/activation.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace activation_bind {

inline bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

inline at::Tensor forward(const char* op, Pointwise f, const at::Tensor& input) {
  check_tensor(input, input, op, "input", "input");
  DeviceGuard guard(input);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(input.sizes(), input.options());
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::pointwise_plan<T>(x.numel(), aligned16(x) && aligned16(y));
    launch(op, [&] { k::pointwise_launch<T>(plan, x.numel(), f, ptr<T>(x), nullptr, ptr<T>(y), stream_for(x)); });
  });
  return y;
}

inline at::Tensor backward(const char* op, Pointwise f, const at::Tensor& grad_output, const at::Tensor& saved,
                           const char* saved_name) {
  check_tensor(saved, saved, op, saved_name, saved_name);
  check_tensor(grad_output, saved, op, "grad_output", saved_name);
  FUSEDOPS_CHECK(grad_output.sizes() == saved.sizes(), op, "grad_output must have the shape of ", saved_name, " ",
                 shape_str(saved.sizes()), ", got ", shape_str(grad_output.sizes()));
  DeviceGuard guard(saved);
  const at::Tensor g = grad_output.contiguous(), s = saved.contiguous();
  at::Tensor dx = at::empty(saved.sizes(), saved.options());
  dispatch(saved.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::pointwise_plan<T>(s.numel(), aligned16(g) && aligned16(s) && aligned16(dx));
    launch(op, [&] { k::pointwise_launch<T>(plan, s.numel(), f, ptr<T>(g), ptr<T>(s), ptr<T>(dx), stream_for(s)); });
  });
  return dx;
}

// t with dimension `dim` moved last, contiguous (a view of t when dim already is last).
inline at::Tensor last_dim(const at::Tensor& t, int64_t dim) {
  return t.dim() == 0 ? t.reshape({1}) : t.movedim(dim, -1).contiguous();
}

// The result computed on last_dim(...) back in the layout of `like` (contiguous).
inline at::Tensor restore(const at::Tensor& r, const at::Tensor& like, int64_t dim) {
  if (like.dim() == 0) return r.reshape({});
  return r.movedim(-1, dim).contiguous();
}

inline at::Tensor softmax_forward(const char* op, const at::Tensor& input, int64_t dim, bool log) {
  check_tensor(input, input, op, "input", "input");
  const SoftmaxSplit s = softmax_split(input, dim, op);
  DeviceGuard guard(input);
  const at::Tensor x = last_dim(input, dim);
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t M = s.outer * s.inner;
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::softmax_plan<T>(M, s.D, aligned16(x) && aligned16(y));
    launch(op, [&] { k::softmax_forward_launch<T>(plan, M, s.D, ptr<T>(x), ptr<T>(y), log, stream_for(x)); });
  });
  return restore(y, input, dim);
}

inline at::Tensor softmax_backward(const char* op, const at::Tensor& grad_output, const at::Tensor& output,
                                   int64_t dim, bool log) {
  check_tensor(output, output, op, "output", "output");
  check_tensor(grad_output, output, op, "grad_output", "output");
  FUSEDOPS_CHECK(grad_output.sizes() == output.sizes(), op, "grad_output must have the shape of output ",
                 shape_str(output.sizes()), ", got ", shape_str(grad_output.sizes()));
  const SoftmaxSplit s = softmax_split(output, dim, op);
  DeviceGuard guard(output);
  const at::Tensor g = last_dim(grad_output, dim), y = last_dim(output, dim);
  at::Tensor dx = at::empty(y.sizes(), y.options());
  const int64_t M = s.outer * s.inner;
  dispatch(output.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::softmax_plan<T>(M, s.D, aligned16(g) && aligned16(y) && aligned16(dx));
    launch(op, [&] {
      k::softmax_backward_launch<T>(plan, M, s.D, ptr<T>(g), ptr<T>(y), ptr<T>(dx), log, stream_for(y));
    });
  });
  return restore(dx, output, dim);
}

inline at::Tensor swiglu(const at::Tensor& a, const at::Tensor& b) {
  const char* op = "swiglu";
  check_tensor(a, a, op, "a", "a");
  check_tensor(b, a, op, "b", "a");
  check_swiglu_pair(a, b, op);
  DeviceGuard guard(a);
  const RowView av = row_view(a), bv = row_view(b);
  at::Tensor y = at::empty(a.sizes(), a.options());
  dispatch(a.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::swiglu_plan<T>(av.M);
    launch(op, [&] {
      k::swiglu_forward_launch<T>(plan, av.M, av.N, ptr<T>(av.t), av.ld, ptr<T>(bv.t), bv.ld, ptr<T>(y), stream_for(a));
    });
  });
  return y;
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> swiglu_backward(
    const at::Tensor& grad_output, const at::Tensor& a, const at::Tensor& b, std::array<bool, 2> mask) {
  const char* op = "swiglu_backward";
  check_tensor(a, a, op, "a", "a");
  check_tensor(b, a, op, "b", "a");
  check_tensor(grad_output, a, op, "grad_output", "a");
  check_swiglu_pair(a, b, op);
  check_swiglu_pair(a, grad_output, op, "grad_output");
  DeviceGuard guard(a);
  std::optional<at::Tensor> da, db;
  if (mask[0]) da = at::empty(a.sizes(), a.options());
  if (mask[1]) db = at::empty(a.sizes(), a.options());
  if (!mask[0] && !mask[1]) return {da, db};
  const RowView gv = row_view(grad_output), av = row_view(a), bv = row_view(b);
  dispatch(a.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const k::LaunchPlan plan = k::swiglu_plan<T>(av.M);
    launch(op, [&] {
      k::swiglu_backward_launch<T>(plan, av.M, av.N, ptr<T>(gv.t), gv.ld, ptr<T>(av.t), av.ld, ptr<T>(bv.t), bv.ld,
                                   da ? ptr<T>(*da) : nullptr, db ? ptr<T>(*db) : nullptr, stream_for(a));
    });
  });
  return {da, db};
}

}  // namespace activation_bind

using activation_bind::swiglu;
using activation_bind::swiglu_backward;

inline at::Tensor gelu(const at::Tensor& input, c10::string_view approximate) {
  return activation_bind::forward("gelu", gelu_kind(approximate, "gelu"), input);
}
inline at::Tensor gelu_backward(const at::Tensor& grad_output, const at::Tensor& input, c10::string_view approximate) {
  return activation_bind::backward("gelu_backward", gelu_kind(approximate, "gelu_backward"),
                                   grad_output, input, "input");
}
inline at::Tensor relu(const at::Tensor& input) { return activation_bind::forward("relu", Pointwise::relu, input); }
inline at::Tensor relu_backward(const at::Tensor& grad_output, const at::Tensor& output) {
  return activation_bind::backward("relu_backward", Pointwise::relu, grad_output, output, "output");
}
inline at::Tensor sigmoid(const at::Tensor& input) {
  return activation_bind::forward("sigmoid", Pointwise::sigmoid, input);
}
inline at::Tensor sigmoid_backward(const at::Tensor& grad_output, const at::Tensor& output) {
  return activation_bind::backward("sigmoid_backward", Pointwise::sigmoid, grad_output, output, "output");
}
inline at::Tensor tanh(const at::Tensor& input) { return activation_bind::forward("tanh", Pointwise::tanh, input); }
inline at::Tensor tanh_backward(const at::Tensor& grad_output, const at::Tensor& output) {
  return activation_bind::backward("tanh_backward", Pointwise::tanh, grad_output, output, "output");
}
inline at::Tensor softmax(const at::Tensor& input, int64_t dim) {
  return activation_bind::softmax_forward("softmax", input, dim, false);
}
inline at::Tensor softmax_backward(const at::Tensor& grad_output, const at::Tensor& output, int64_t dim) {
  return activation_bind::softmax_backward("softmax_backward", grad_output, output, dim, false);
}
inline at::Tensor log_softmax(const at::Tensor& input, int64_t dim) {
  return activation_bind::softmax_forward("log_softmax", input, dim, true);
}
inline at::Tensor log_softmax_backward(const at::Tensor& grad_output, const at::Tensor& output, int64_t dim) {
  return activation_bind::softmax_backward("log_softmax_backward", grad_output, output, dim, true);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind

