// rnn_layer / rnn_layer_backward bindings on the CUDA kernels, shared by the CUDA build
// (rnn.cu) and the simulator build (sim/sim_rnn.cpp). The algorithm and the workspace are the
// CPU binding's (cpu/rnn.cpp): one GEMM for the input projections of every step, then per step
// one recurrent GEMM and one gate kernel (cuda/kernels/rnn.cuh); backward per step one gate
// kernel and one GEMM, then the input and weight gradients as single GEMMs over all steps.
// Shapes are checked by common/rnn_args.h, as on the CPU. Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/rnn_args.h"
#include "cuda/kernels/rnn.cuh"
#include "cuda/gemm_launch.h"
#include "cuda/kernels/pointwise.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

namespace rnn_bind {

using OptTensor = std::optional<at::Tensor>;

inline at::Tensor opt(const OptTensor& t) { return t.has_value() ? t->contiguous() : at::Tensor(); }

template <typename T>
T* optr(const at::Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

inline void check_all(std::initializer_list<std::pair<const char*, const at::Tensor*>> ts,
                      const at::Tensor& input, const char* op) {
  for (auto& [name, t] : ts)
    if (t && t->defined()) check_tensor(*t, input, op, name, "input");
}

// C[M, N] (ldc) = A @ B + beta * C with A(i, k) = A[i * rsa + k * csa], B(k, j) = B[k * rsb + j * csb].
template <typename T>
void gemm(const char* op, int64_t M, int64_t N, int64_t K, const T* A, int64_t rsa, int64_t csa, const T* B,
          int64_t rsb, int64_t csb, float beta, T* C, int64_t ldc, const T* bias, cudaStream_t s) {
  k::GemmParams<T> p;
  p.M = M, p.N = N, p.K = K;
  p.A = A, p.rsa = rsa, p.csa = csa;
  p.B = B, p.rsb = rsb, p.csb = csb;
  p.C = C, p.ldc = ldc, p.beta = beta;
  if (bias) p.bias = bias, p.bias_mode = BiasMode::per_col;
  p.allow_tf32 = tf32_allowed();
  run_gemm<T>(op, p, s);
}

// For each row n (step t, sequence b) the row its step started from: the previous step's row
// of the same sequence where there is one (>= 0), else -1 - b (the initial state's row b).
inline at::Tensor prev_rows(const RnnDims& d, bool reverse, const at::Tensor& like) {
  std::vector<int64_t> idx(size_t(d.N));
  for (int64_t t = 0; t < d.T; ++t) {
    const int64_t tp = reverse ? t + 1 : t - 1;
    const int64_t n_seq = (tp >= 0 && tp < d.T) ? std::min(d.bs[t], d.bs[tp]) : 0;
    for (int64_t b = 0; b < d.bs[t]; ++b) idx[size_t(d.off[t] + b)] = b < n_seq ? d.off[tp] + b : -1 - b;
  }
  return at::tensor(idx, at::TensorOptions().dtype(at::kLong)).to(like.device());
}

// Column sums of g [N, C] into out [C].
template <typename T>
void column_sums(const char* op, int64_t N, int64_t C, const T* g, T* out, const at::Tensor& like, cudaStream_t s) {
  const k::LaunchPlan plan = k::bias_act_backward_plan<T>(N, C);
  at::Tensor ws;
  if (plan.workspace_bytes > 0)
    ws = at::empty({int64_t(plan.workspace_bytes / sizeof(float)) + 1}, like.options().dtype(at::kFloat));
  launch(op, [&] {
    k::bias_act_backward_launch<T>(plan, N, C, g, C, 1, nullptr, 0, nullptr, Activation::none, out,
                                   ws.defined() ? ptr<float>(ws) : nullptr, s);
  });
}

}  // namespace rnn_bind

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer(
    c10::string_view mode, const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr,
    const std::optional<at::Tensor>& batch_sizes, bool reverse) {
  using namespace rnn_bind;
  const char* op = "rnn_layer";
  const RnnDims d = rnn_dims(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, op);
  const at::Tensor x = input.contiguous(), wi = w_ih.contiguous(), wh = w_hh.contiguous();
  const at::Tensor c0 = opt(cx), wr = opt(w_hr), bi = opt(b_ih), bh = opt(b_hh);
  check_all({{"input", &x}, {"hx", &hx}, {"cx", &c0}, {"w_ih", &wi}, {"w_hh", &wh}, {"b_ih", &bi},
             {"b_hh", &bh}, {"w_hr", &wr}}, input, op);
  DeviceGuard guard(input);
  const cudaStream_t s = stream_for(input);
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, W = d.W;
  const bool gru = d.mode == RnnMode::gru, proj = wr.defined();
  const auto o = input.options();
  at::Tensor out = d.packed ? at::empty({d.N, P}, o) : at::empty({d.T, d.B, P}, o);
  at::Tensor hy = hx.contiguous().clone();
  at::Tensor cy = d.mode == RnnMode::lstm ? c0.clone() : at::empty({0}, o);
  at::Tensor ws = at::empty({d.N, W}, o);
  // gru: h_prev W_hh^T apart (b_hn sits inside r * (.)); rnn / lstm accumulate it into the
  // step's workspace rows.
  at::Tensor hgates = gru ? at::empty({d.B, GH}, o) : at::Tensor();
  at::Tensor m = proj ? at::empty({d.B, H}, o) : at::Tensor();
  dispatch(input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    T* const wsp = ptr<T>(ws);
    T* const hyp = ptr<T>(hy);
    T* const outp = ptr<T>(out);
    gemm<T>(op, d.N, GH, d.I, ptr<T>(x), d.I, 1, ptr<T>(wi), 1, d.I, 0.f, wsp, W, optr<T>(bi), s);
    for (int64_t kk = 0; kk < d.T; ++kk) {
      const int64_t t = d.step(kk, reverse), rows = d.bs[t], r0 = d.off[t];
      T* const wsr = wsp + r0 * W;
      RnnStepForward<T> a;
      a.mode = d.mode, a.rows = rows, a.H = H, a.ws = wsr, a.ldw = W, a.b_hh = optr<T>(bh);
      if (gru) {
        gemm<T>(op, rows, GH, P, hyp, P, 1, ptr<T>(wh), 1, P, 0.f, ptr<T>(hgates), GH, nullptr, s);
        a.gh = ptr<T>(hgates), a.ldgh = GH, a.h_prev = hyp, a.ldhp = P;
      } else {
        gemm<T>(op, rows, GH, P, hyp, P, 1, ptr<T>(wh), 1, P, 1.f, wsr, W, nullptr, s);
      }
      a.c = optr<T>(cy);
      if (proj) a.out = ptr<T>(m), a.ldo = H;
      else a.out = outp + r0 * P, a.ldo = P, a.out2 = hyp, a.ldo2 = P;
      launch(op, [&] { k::rnn_step_forward_launch<T>(a, s); });
      if (proj) {
        gemm<T>(op, rows, P, H, ptr<T>(m), H, 1, ptr<T>(wr), 1, H, 0.f, outp + r0 * P, P, nullptr, s);
        launch(op, [&] { k::rnn_rows_update_launch<T>(rows, P, outp + r0 * P, P, hyp, P, false, s); });
      }
    }
  });
  return {out, hy, cy, ws};
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>,
                  std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>,
                  std::optional<at::Tensor>, std::optional<at::Tensor>>
rnn_layer_backward(c10::string_view mode, const std::optional<at::Tensor>& grad_output,
                   const std::optional<at::Tensor>& grad_hy, const std::optional<at::Tensor>& grad_cy,
                   const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                   const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr,
                   const std::optional<at::Tensor>& batch_sizes, bool reverse, const at::Tensor& output,
                   const at::Tensor& workspace, std::array<bool, 8> mask) {
  using namespace rnn_bind;
  const char* op = "rnn_layer_backward";
  const RnnDims d = rnn_dims(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, op);
  check_rnn_backward(d, input, output, workspace, grad_output, grad_hy, grad_cy, op);
  const at::Tensor x = input.contiguous(), h0 = hx.contiguous(), c0 = opt(cx);
  const at::Tensor wi = w_ih.contiguous(), wh = w_hh.contiguous(), wr = opt(w_hr);
  const at::Tensor out = output.contiguous(), ws = workspace.contiguous();
  const at::Tensor go = opt(grad_output), ghy = opt(grad_hy), gcy = opt(grad_cy);
  const at::Tensor bi = opt(b_ih), bh = opt(b_hh);
  check_all({{"input", &x}, {"hx", &h0}, {"cx", &c0}, {"w_ih", &wi}, {"w_hh", &wh}, {"b_ih", &bi},
             {"b_hh", &bh}, {"w_hr", &wr}, {"grad_output", &go}, {"grad_hy", &ghy}, {"grad_cy", &gcy},
             {"output", &out}, {"workspace", &ws}}, input, op);
  const bool lstm = d.mode == RnnMode::lstm, gru = d.mode == RnnMode::gru, proj = wr.defined();
  FUSEDOPS_CHECK(!mask[2] || lstm, op, "output_mask[2] (grad_cx) is only for mode \"lstm\"");
  FUSEDOPS_CHECK(!mask[5] || bi.defined(), op, "output_mask[5] asks for grad_b_ih, but b_ih is None");
  FUSEDOPS_CHECK(!mask[6] || bh.defined(), op, "output_mask[6] asks for grad_b_hh, but b_hh is None");
  FUSEDOPS_CHECK(!mask[7] || proj, op, "output_mask[7] asks for grad_w_hr, but w_hr is None");
  DeviceGuard guard(input);
  const cudaStream_t s = stream_for(input);
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, W = d.W, N = d.N;
  const auto o = input.options();
  // The running state gradients are always needed; returned only when asked.
  at::Tensor dh0 = ghy.defined() ? ghy.clone() : at::zeros({d.B, P}, o);
  at::Tensor dc0 = lstm ? (gcy.defined() ? gcy.clone() : at::zeros({d.B, H}, o)) : at::Tensor();
  at::Tensor dx = mask[0] ? at::empty(input.sizes(), o) : at::Tensor();
  at::Tensor dwi = mask[3] ? at::empty(w_ih.sizes(), o) : at::Tensor();
  at::Tensor dwh = mask[4] ? at::empty(w_hh.sizes(), o) : at::Tensor();
  at::Tensor dbi = mask[5] ? at::empty({GH}, o) : at::Tensor();
  at::Tensor dbh = mask[6] ? at::empty({GH}, o) : at::Tensor();
  at::Tensor dwr = mask[7] ? at::empty(w_hr->sizes(), o) : at::Tensor();
  at::Tensor dGi = at::empty({N, GH}, o);
  at::Tensor dGh = gru ? at::empty({N, GH}, o) : dGi;
  const bool need_hprev = mask[4] || gru;
  at::Tensor idx = (need_hprev || lstm) ? prev_rows(d, reverse, input) : at::Tensor();
  at::Tensor hprev = need_hprev ? at::empty({N, P}, o) : at::Tensor();
  at::Tensor cprev = lstm ? at::empty({N, H}, o) : at::Tensor();
  at::Tensor dH = proj ? at::empty({N, P}, o) : at::Tensor();
  at::Tensor dm = proj ? at::empty({d.B, H}, o) : at::Tensor();
  dispatch(input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* const wsp = ptr<T>(ws);
    const T* const outp = ptr<T>(out);
    T* const dh = ptr<T>(dh0);
    T* const dgi = ptr<T>(dGi);
    T* const dgh = ptr<T>(dGh);
    if (need_hprev)
      launch(op, [&] { k::rnn_gather_rows_launch<T>(N, P, ptr<int64_t>(idx), outp, P, ptr<T>(h0), P, ptr<T>(hprev), s); });
    if (lstm)
      launch(op, [&] { k::rnn_gather_rows_launch<T>(N, H, ptr<int64_t>(idx), wsp + 4 * H, W, ptr<T>(c0), H, ptr<T>(cprev), s); });
    for (int64_t kk = d.T - 1; kk >= 0; --kk) {
      const int64_t t = d.step(kk, reverse), rows = d.bs[t], r0 = d.off[t];
      if (go.defined())
        launch(op, [&] { k::rnn_rows_update_launch<T>(rows, P, ptr<T>(go) + r0 * P, P, dh, P, true, s); });
      T* dgate_in = dh;
      int64_t ld_in = P;
      if (proj) {
        launch(op, [&] { k::rnn_rows_update_launch<T>(rows, P, dh, P, ptr<T>(dH) + r0 * P, P, false, s); });
        gemm<T>(op, rows, H, P, dh, P, 1, ptr<T>(wr), H, 1, 0.f, ptr<T>(dm), H, nullptr, s);
        dgate_in = ptr<T>(dm), ld_in = H;
      }
      RnnStepBackward<T> a;
      a.mode = d.mode, a.rows = rows, a.H = H, a.ws = wsp + r0 * W, a.ldw = W;
      a.dh = dgate_in, a.lddh = ld_in, a.h = outp + r0 * P, a.ldh = P, a.dc = optr<T>(dc0);
      if (lstm) a.prev = ptr<T>(cprev) + r0 * H, a.ldp = H;
      if (gru) a.prev = ptr<T>(hprev) + r0 * P, a.ldp = P;
      a.dgi = dgi + r0 * GH, a.ldgi = GH, a.dgh = dgh + r0 * GH, a.ldgh = GH;
      launch(op, [&] { k::rnn_step_backward_launch<T>(a, s); });
      // d h_prev = dGh W_hh (gru: plus the dh * z the kernel left in dh).
      gemm<T>(op, rows, P, GH, dgh + r0 * GH, GH, 1, ptr<T>(wh), P, 1, gru ? 1.f : 0.f, dh, P, nullptr, s);
    }
    if (mask[0]) gemm<T>(op, N, d.I, GH, dgi, GH, 1, ptr<T>(wi), d.I, 1, 0.f, ptr<T>(dx), d.I, nullptr, s);
    if (mask[3]) gemm<T>(op, GH, d.I, N, dgi, 1, GH, ptr<T>(x), d.I, 1, 0.f, ptr<T>(dwi), d.I, nullptr, s);
    if (mask[4]) gemm<T>(op, GH, P, N, dgh, 1, GH, ptr<T>(hprev), P, 1, 0.f, ptr<T>(dwh), P, nullptr, s);
    if (mask[5]) column_sums<T>(op, N, GH, dgi, ptr<T>(dbi), input, s);
    if (mask[6]) column_sums<T>(op, N, GH, dgh, ptr<T>(dbh), input, s);
    if (mask[7]) {
      at::Tensor mm = at::empty({N, H}, o);
      launch(op, [&] { k::lstm_cell_output_launch<T>(N, H, wsp, W, ptr<T>(mm), H, s); });
      gemm<T>(op, P, H, N, ptr<T>(dH), 1, P, ptr<T>(mm), H, 1, 0.f, ptr<T>(dwr), H, nullptr, s);
    }
  });
  auto ret = [](bool want, const at::Tensor& t) { return want ? std::optional<at::Tensor>(t) : std::nullopt; };
  return {ret(mask[0], dx), ret(mask[1], dh0), ret(mask[2], dc0), ret(mask[3], dwi),
          ret(mask[4], dwh), ret(mask[5], dbi), ret(mask[6], dbh), ret(mask[7], dwr)};
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
