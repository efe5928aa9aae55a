// linear / matmul bindings on the CUDA kernels, shared by the CUDA build (linear.cu, CUDA
// tensors, the current stream) and the simulator build (sim/sim_linear.cpp, CPU tensors, the
// kernels executed by csrc/sim/cuda_sim.h). Same checks, same plans, same launches: what the
// simulator tests is what runs on a GPU. Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/linear_args.h"
#include "cuda/gemm_launch.h"
#include "cuda/kernels/pointwise.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace k = fusedops::FUSEDOPS_CUDA_NS;

// ---- linear ---------------------------------------------------------------------------------

inline void check_linear(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, const char* op) {
  check_tensor(input, input, op, "input", "input");
  check_tensor(weight, input, op, "weight", "input");
  if (bias.has_value()) check_tensor(*bias, input, op, "bias", "input");
  check_linear_shapes(input, weight, bias, op);
}

inline void linear_into(const char* op, const at::Tensor& x2, const at::Tensor& w,
                        const std::optional<at::Tensor>& bias, Activation act,
                        at::Tensor& out2, at::Tensor* pre2) {
  const at::Tensor bias_c = bias.has_value() ? bias->contiguous() : at::Tensor();
  dispatch(x2.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    k::GemmParams<T> p;
    p.M = x2.size(0), p.N = w.size(0), p.K = x2.size(1);
    p.A = ptr<T>(x2), p.rsa = x2.stride(0), p.csa = x2.stride(1);
    p.B = ptr<T>(w), p.rsb = w.stride(1), p.csb = w.stride(0);  // B(k, n) = w[n, k]
    p.C = ptr<T>(out2), p.ldc = p.N, p.batch_stride_c = p.M * p.N;
    if (bias_c.defined()) p.bias = ptr<T>(bias_c), p.bias_mode = BiasMode::per_col;
    p.act = act;
    if (pre2) p.preact = ptr<T>(*pre2), p.ld_preact = p.N, p.batch_stride_preact = p.M * p.N;
    p.allow_tf32 = tf32_allowed();
    run_gemm<T>(op, p, stream_for(x2));
  });
}

inline at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias,
                         std::optional<c10::string_view> activation) {
  check_linear(input, weight, bias, "linear");
  const Activation act = activation_arg(activation, "linear");
  DeviceGuard guard(input);
  const at::Tensor x2 = rows_of(input);
  at::Tensor out = at::empty(with_last(input.sizes(), weight.size(0)), input.options());
  at::Tensor out2 = out.view({x2.size(0), weight.size(0)});
  linear_into("linear", x2, weight, bias, act, out2, nullptr);
  return out;
}

inline std::tuple<at::Tensor, at::Tensor> linear_act(const at::Tensor& input,
                                                     const at::Tensor& weight,
                                                     const std::optional<at::Tensor>& bias,
                                                     c10::string_view activation) {
  check_linear(input, weight, bias, "linear_act");
  const Activation act = activation_arg(activation, "linear_act");
  DeviceGuard guard(input);
  const at::Tensor x2 = rows_of(input);
  const auto shape = with_last(input.sizes(), weight.size(0));
  at::Tensor out = at::empty(shape, input.options()), pre = at::empty(shape, input.options());
  at::Tensor out2 = out.view({x2.size(0), weight.size(0)});
  at::Tensor pre2 = pre.view({x2.size(0), weight.size(0)});
  linear_into("linear_act", x2, weight, bias, act, out2, &pre2);
  return {out, pre};
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                const std::optional<at::Tensor>& act_input,
                std::optional<c10::string_view> activation, std::array<bool, 3> mask) {
  const char* op = "linear_backward";
  check_linear(input, weight, std::nullopt, op);
  check_tensor(grad_output, input, op, "grad_output", "input");
  const Activation act = activation_arg(activation, op);
  const bool has_act = act != Activation::none;
  check_linear_backward_shapes(grad_output, input, weight, act_input, has_act, op);
  if (has_act) check_tensor(*act_input, input, op, "act_input", "input");
  DeviceGuard guard(input);
  const at::Tensor x2 = rows_of(input);
  const int64_t M = x2.size(0), K = x2.size(1), N = weight.size(0);
  const at::Tensor g2 = grad_output.reshape({M, N});
  std::optional<at::Tensor> gx, gw, gb;
  if (mask[0]) gx = at::empty(input.sizes(), input.options());
  if (mask[1]) gw = at::empty({N, K}, input.options());
  if (mask[2]) gb = at::empty({N}, input.options());
  const cudaStream_t s = stream_for(input);
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const T* dz = ptr<T>(g2);
    int64_t rs = g2.stride(0), cs = g2.stride(1);
    at::Tensor dz_buf, z2;
    if ((has_act && (mask[0] || mask[1] || mask[2])) || gb) {
      if (has_act) {
        z2 = act_input->reshape({M, N}).contiguous();
        dz_buf = at::empty({M, N}, input.options());
      }
      const k::LaunchPlan plan = k::bias_act_backward_plan<T>(M, N);
      at::Tensor ws;
      if (plan.workspace_bytes > 0)
        ws = at::empty({int64_t(plan.workspace_bytes / sizeof(float)) + 1},
                       input.options().dtype(at::kFloat));
      launch(op, [&] {
        k::bias_act_backward_launch<T>(plan, M, N, dz, rs, cs, has_act ? ptr<T>(z2) : nullptr, N,
                                       has_act ? ptr<T>(dz_buf) : nullptr,
                                       act,
                                       gb ? ptr<T>(*gb) : nullptr,
                                       ws.defined() ? ptr<float>(ws) : nullptr, s);
      });
      if (has_act) dz = ptr<T>(dz_buf), rs = N, cs = 1;
    }
    if (gx) {  // [M, K] = dz @ w
      k::GemmParams<T> p;
      p.M = M, p.N = K, p.K = N;
      p.A = dz, p.rsa = rs, p.csa = cs;
      p.B = ptr<T>(weight), p.rsb = weight.stride(0), p.csb = weight.stride(1);
      p.C = ptr<T>(*gx), p.ldc = K, p.batch_stride_c = M * K;
      p.allow_tf32 = tf32_allowed();
      run_gemm<T>(op, p, s);
    }
    if (gw) {  // [N, K] = dz.T @ x
      k::GemmParams<T> p;
      p.M = N, p.N = K, p.K = M;
      p.A = dz, p.rsa = cs, p.csa = rs;
      p.B = ptr<T>(x2), p.rsb = x2.stride(0), p.csb = x2.stride(1);
      p.C = ptr<T>(*gw), p.ldc = K, p.batch_stride_c = N * K;
      p.allow_tf32 = tf32_allowed();
      run_gemm<T>(op, p, s);
    }
  });
  return {gx, gw, gb};
}

// ---- matmul ---------------------------------------------------------------------------------

inline void check_matmul(const at::Tensor& a, const at::Tensor& b, const char* op) {
  check_tensor(a, a, op, "input", "input");
  check_tensor(b, a, op, "other", "input");
  check_matmul_shapes(a, b, op);
}

inline at::Tensor matmul(const at::Tensor& self, const at::Tensor& other) {
  check_matmul(self, other, "matmul");
  DeviceGuard guard(self);
  const auto shape = matmul_shape(self, other);
  at::Tensor out = at::empty(shape, self.options());
  if (out.numel() == 0) return out;
  const int64_t batch = shape.size() == 3 ? shape[0] : 1;
  at::Tensor a = self;
  if (other.dim() == 2 && rows_stack(self)) a = stack_rows(self);
  dispatch(self.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const Batched A = batched(a), B = batched(other);
    k::GemmParams<T> p;
    p.M = A.rows, p.N = B.cols, p.K = A.cols;
    p.A = ptr<T>(a), p.rsa = A.rs, p.csa = A.cs;
    p.B = ptr<T>(other), p.rsb = B.rs, p.csb = B.cs;
    p.C = ptr<T>(out), p.ldc = p.N, p.batch_stride_c = p.M * p.N;
    p.allow_tf32 = tf32_allowed();
    if (!(a.dim() == 2 && other.dim() == 2)) {
      p.batch = batch;
      p.batch_stride_a = A.bs, p.batch_stride_b = B.bs;
    }
    run_gemm<T>("matmul", p, stream_for(self));
  });
  return out;
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> matmul_backward(
    const at::Tensor& grad_output, const at::Tensor& self, const at::Tensor& other,
    std::array<bool, 2> mask) {
  const char* op = "matmul_backward";
  check_matmul(self, other, op);
  check_tensor(grad_output, self, op, "grad_output", "input");
  const auto shape = matmul_shape(self, other);
  FUSEDOPS_CHECK(grad_output.sizes().vec() == shape, op, "grad_output must have shape ",
                 shape_str(shape), ", got ", shape_str(grad_output.sizes()));
  DeviceGuard guard(self);
  std::optional<at::Tensor> ga, gb;
  if (mask[0]) ga = at::empty(self.sizes(), self.options());
  if (mask[1]) gb = at::empty(other.sizes(), other.options());
  const int64_t batch = shape.size() == 3 ? shape[0] : 1;
  auto reduces = [&](const at::Tensor& t) { return batch != 1 && (t.dim() == 2 || t.size(0) == 1); };
  const cudaStream_t s = stream_for(self);
  dispatch(self.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    const Batched G = batched(grad_output), A = batched(self), B = batched(other);
    if (ga && ga->numel() > 0) {  // dA = dC @ B.T
      k::GemmParams<T> p;
      p.M = A.rows, p.N = A.cols, p.K = B.cols;
      p.A = ptr<T>(grad_output), p.rsa = G.rs, p.csa = G.cs, p.batch_stride_a = G.bs;
      p.B = ptr<T>(other), p.rsb = B.cs, p.csb = B.rs, p.batch_stride_b = B.bs;
      p.C = ptr<T>(*ga), p.ldc = p.N, p.batch_stride_c = p.M * p.N;
      p.allow_tf32 = tf32_allowed();
      if (reduces(self)) {
        run_gemm_reduce<T>(op, p, batch, s);
      } else {
        p.batch = batch;
        run_gemm<T>(op, p, s);
      }
    }
    if (gb && gb->numel() > 0) {  // dB = A.T @ dC
      at::Tensor a = self, gr = grad_output;
      int64_t nb = batch;
      if (reduces(other) && self.dim() == 3 && self.size(0) == batch) {
        // sum_b A_b.T dC_b = [B*M, K].T @ [B*M, N]: one GEMM with a long K.
        a = stack_rows(self);
        gr = stack_rows(grad_output);
        nb = 1;
      }
      const Batched A2 = batched(a), G2 = batched(gr);
      k::GemmParams<T> p;
      p.M = B.rows, p.N = B.cols, p.K = A2.rows;
      p.A = ptr<T>(a), p.rsa = A2.cs, p.csa = A2.rs, p.batch_stride_a = nb > 1 ? A2.bs : 0;
      p.B = ptr<T>(gr), p.rsb = G2.rs, p.csb = G2.cs, p.batch_stride_b = nb > 1 ? G2.bs : 0;
      p.C = ptr<T>(*gb), p.ldc = p.N, p.batch_stride_c = p.M * p.N;
      p.allow_tf32 = tf32_allowed();
      if (reduces(other)) {
        run_gemm_reduce<T>(op, p, nb, s);
      } else {
        p.batch = nb;
        run_gemm<T>(op, p, s);
      }
    }
  });
  return {ga, gb};
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
