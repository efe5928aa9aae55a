// CPU bindings of rnn_layer and rnn_layer_backward: checks and allocation; the layer's steps
// (GEMMs and gate kernels in sequence) run in cpu/kernels/rnn_layer.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#include "common/threads.h"
#include "common/fresh_output.h"
#include "common/rnn_args.h"
#include "cpu/kernels/rnn_layer.h"
#include "common/register.h"

namespace fusedops {
namespace {

using OptTensor = std::optional<at::Tensor>;

template <typename T>
const T* cptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

void check_cpu(std::initializer_list<std::pair<const char*, const at::Tensor*>> ts, const char* op) {
  for (auto& [name, t] : ts)
    if (t && t->defined()) check_cpu_float(*t, op, name);
}

at::Tensor opt(const OptTensor& t) { return t.has_value() ? t->contiguous() : at::Tensor(); }

void check_args(const RnnDims&, const at::Tensor& input, const at::Tensor& hx, const OptTensor& cx,
                const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                const OptTensor& b_hh, const OptTensor& w_hr, const char* op) {
  const at::Tensor cx_ = opt(cx), b_ih_ = opt(b_ih), b_hh_ = opt(b_hh), w_hr_ = opt(w_hr);
  check_cpu({{"input", &input}, {"hx", &hx}, {"cx", &cx_}, {"w_ih", &w_ih}, {"w_hh", &w_hh},
             {"b_ih", &b_ih_}, {"b_hh", &b_hh_}, {"w_hr", &w_hr_}}, op);
  check_rnn_dtypes({{"hx", &hx}, {"cx", &cx_}, {"w_ih", &w_ih}, {"w_hh", &w_hh}, {"b_ih", &b_ih_},
                    {"b_hh", &b_hh_}, {"w_hr", &w_hr_}}, input, op);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer_cpu(
    c10::string_view mode, const at::Tensor& input, const at::Tensor& hx, const OptTensor& cx,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    const OptTensor& w_hr, const OptTensor& batch_sizes, bool reverse) {
  const char* op = "rnn_layer";
  const RnnDims d = rnn_dims(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, op);
  check_args(d, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, op);
  const at::Tensor x = input.contiguous(), wi = w_ih.contiguous(), wh = w_hh.contiguous();
  const at::Tensor wr = opt(w_hr), bi = opt(b_ih), bh = opt(b_hh);
  at::Tensor bias, b_step;  // (not a structured binding: the dispatch lambda captures them)
  std::tie(bias, b_step) = rnn_gate_biases(d.mode, bi, bh);
  at::Tensor out = d.packed ? empty_output({d.N, d.P}, input.options())
                            : empty_output({d.T, d.B, d.P}, input.options());
  at::Tensor hy = hx.contiguous().clone();
  at::Tensor cy = d.mode == RnnMode::lstm ? cx->contiguous().clone() : at::empty({0}, input.options());
  at::Tensor ws = pooled_empty({d.N, d.W}, input.options());  // saved for the backward only
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.rnn_layer", [&] {
    using T = scalar_t;
    cpu::rnn_layer_forward<T>(d, reverse,
                              {x.data_ptr<T>(), wi.data_ptr<T>(), wh.data_ptr<T>(), cptr<T>(bias),
                               cptr<T>(b_step), cptr<T>(wr), out.data_ptr<T>(), hy.data_ptr<T>(),
                               cy.numel() ? cy.data_ptr<T>() : nullptr, ws.data_ptr<T>()});
  });
  return {out, hy, cy, ws};
}

// ---- backward -------------------------------------------------------------------------------

using Grads = std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor, OptTensor, OptTensor, OptTensor>;

Grads rnn_layer_backward_cpu(c10::string_view mode, const OptTensor& grad_output,
                             const OptTensor& grad_hy, const OptTensor& grad_cy,
                             const at::Tensor& input, const at::Tensor& hx, const OptTensor& cx,
                             const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                             const OptTensor& b_hh, const OptTensor& w_hr,
                             const OptTensor& batch_sizes, bool reverse, const at::Tensor& output,
                             const at::Tensor& workspace, std::array<bool, 8> mask) {
  const char* op = "rnn_layer_backward";
  const RnnDims d = rnn_dims(mode, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, op);
  check_args(d, input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr, op);
  check_rnn_backward(d, input, output, workspace, grad_output, grad_hy, grad_cy, op);
  const at::Tensor go = opt(grad_output), ghy = opt(grad_hy), gcy = opt(grad_cy), out_ = output;
  check_cpu({{"grad_output", &go}, {"grad_hy", &ghy}, {"grad_cy", &gcy}, {"output", &out_},
             {"workspace", &workspace}}, op);
  check_rnn_dtypes({{"grad_output", &go}, {"grad_hy", &ghy}, {"grad_cy", &gcy}, {"output", &out_},
                    {"workspace", &workspace}}, input, op);
  const bool lstm = d.mode == RnnMode::lstm;
  FUSEDOPS_CHECK(!mask[2] || lstm, op, "output_mask[2] (grad_cx) is only for mode \"lstm\"");
  FUSEDOPS_CHECK(!mask[5] || b_ih.has_value(), op, "output_mask[5] asks for grad_b_ih, but b_ih is None");
  FUSEDOPS_CHECK(!mask[6] || b_hh.has_value(), op, "output_mask[6] asks for grad_b_hh, but b_hh is None");
  FUSEDOPS_CHECK(!mask[7] || w_hr.has_value(), op, "output_mask[7] asks for grad_w_hr, but w_hr is None");

  const at::Tensor x = input.contiguous(), h0 = hx.contiguous(), c0 = opt(cx);
  const at::Tensor wi = w_ih.contiguous(), wh = w_hh.contiguous(), wr = opt(w_hr);
  const at::Tensor out = output.contiguous(), ws = workspace.contiguous();
  const auto o = input.options();
  // The running state gradients are always needed; returned only when asked.
  at::Tensor dh0 = ghy.defined() ? ghy.clone() : at::zeros({d.B, d.P}, o);
  at::Tensor dc0 = lstm ? (gcy.defined() ? gcy.clone() : at::zeros({d.B, d.H}, o)) : at::Tensor();
  at::Tensor dx = mask[0] ? empty_output(input.sizes(), o) : at::Tensor();
  at::Tensor dwi = mask[3] ? at::empty(w_ih.sizes(), o) : at::Tensor();
  at::Tensor dwh = mask[4] ? at::empty(w_hh.sizes(), o) : at::Tensor();
  at::Tensor dbi = mask[5] ? at::empty({d.G * d.H}, o) : at::Tensor();
  at::Tensor dbh = mask[6] ? at::empty({d.G * d.H}, o) : at::Tensor();
  at::Tensor dwr = mask[7] ? at::empty(w_hr->sizes(), o) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.rnn_layer_backward", [&] {
    using T = scalar_t;
    auto mp = [](at::Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
    cpu::rnn_layer_backward<T>(d, reverse,
                               {x.data_ptr<T>(), h0.data_ptr<T>(), cptr<T>(c0), wi.data_ptr<T>(), wh.data_ptr<T>(),
                                cptr<T>(wr), out.data_ptr<T>(), ws.data_ptr<T>(), cptr<T>(go)},
                               {mp(dx), mp(dh0), mp(dc0), mp(dwi), mp(dwh), mp(dbi), mp(dbh), mp(dwr)});
  });
  auto ret = [](bool want, const at::Tensor& t) { return want ? OptTensor(t) : OptTensor(); };
  return {ret(mask[0], dx), ret(mask[1], dh0), ret(mask[2], dc0), ret(mask[3], dwi),
          ret(mask[4], dwh), ret(mask[5], dbi), ret(mask[6], dbh), ret(mask[7], dwr)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_RNN_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
