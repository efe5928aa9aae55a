// rnn_layer / rnn_layer_backward bindings on the CUDA kernels, shared by the CUDA build
// (rnn.cu) and the simulator build (sim/sim_rnn.cpp): checks (common/rnn_args.h, as on the
// CPU), outputs and scratch, then the time loops of cuda/kernels/rnn_layer.cuh.
// Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include "common/checks.h"
#include "common/rnn_args.h"
#include "cuda/gemm_launch.h"
#include "cuda/kernels/rnn_layer.cuh"

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

// For each row the row its step started from (k::prev_rows), on the input's device.
inline at::Tensor prev_rows(const RnnDims& d, bool reverse, const at::Tensor& like) {
  std::vector<int64_t> idx(size_t(d.N));
  k::prev_rows(d, reverse, idx.data());
  return at::tensor(idx, at::TensorOptions().dtype(at::kLong)).to(like.device());
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
  at::Tensor bias, b_step;  // (not a structured binding: the dispatch lambda captures them)
  std::tie(bias, b_step) = rnn_gate_biases(d.mode, bi, bh);
  dispatch(input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    RnnLayerForward<T> p{ptr<T>(x), ptr<T>(wi), ptr<T>(wh), optr<T>(bias), optr<T>(b_step), optr<T>(wr),
                         ptr<T>(out), ptr<T>(hy), optr<T>(cy), ptr<T>(ws)};
    k::RnnLayerForwardScratch<T> sc{optr<T>(hgates), optr<T>(m), tf32_allowed()};
    launch(op, [&] { k::rnn_layer_forward_launch<T>(d, reverse, p, sc, s); });
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
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, N = d.N;
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
  at::Tensor mm = mask[7] ? at::empty({N, H}, o) : at::Tensor();
  dispatch(input.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const size_t cs_bytes = (mask[5] || mask[6]) ? k::rnn_colsum_workspace_bytes<T>(N, GH) : 0;
    at::Tensor cs_ws = cs_bytes ? at::empty({int64_t(cs_bytes / sizeof(float)) + 1}, o.dtype(at::kFloat))
                                : at::Tensor();
    RnnLayerBackwardIn<T> in;
    in.x = ptr<T>(x), in.h0 = ptr<T>(h0), in.c0 = optr<T>(c0), in.w_ih = ptr<T>(wi), in.w_hh = ptr<T>(wh);
    in.w_hr = optr<T>(wr), in.out = ptr<T>(out), in.ws = ptr<T>(ws), in.gout = optr<T>(go);
    RnnLayerBackwardOut<T> g;
    g.dx = optr<T>(dx), g.dh0 = ptr<T>(dh0), g.dc0 = optr<T>(dc0), g.dw_ih = optr<T>(dwi);
    g.dw_hh = optr<T>(dwh), g.db_ih = optr<T>(dbi), g.db_hh = optr<T>(dbh), g.dw_hr = optr<T>(dwr);
    k::RnnLayerBackwardScratch<T> sc;
    sc.dgi = ptr<T>(dGi), sc.dgh = ptr<T>(dGh), sc.prev = idx.defined() ? ptr<int64_t>(idx) : nullptr;
    sc.hprev = optr<T>(hprev), sc.cprev = optr<T>(cprev), sc.dH = optr<T>(dH), sc.dm = optr<T>(dm);
    sc.mm = optr<T>(mm), sc.colsum_ws = cs_ws.defined() ? ptr<float>(cs_ws) : nullptr;
    sc.allow_tf32 = tf32_allowed();
    launch(op, [&] { k::rnn_layer_backward_launch<T>(d, reverse, in, g, sc, s); });
  });
  auto ret = [](bool want, const at::Tensor& t) { return want ? std::optional<at::Tensor>(t) : std::nullopt; };
  return {ret(mask[0], dx), ret(mask[1], dh0), ret(mask[2], dc0), ret(mask[3], dwi),
          ret(mask[4], dwh), ret(mask[5], dbi), ret(mask[6], dbh), ret(mask[7], dwr)};
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
