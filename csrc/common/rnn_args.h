// Shape rules of rnn_layer / rnn_layer_backward shared by the CPU, CUDA and simulator bindings:
// the mode, the sizes (T, B, N, I, H, P), the packed batch sizes and their row offsets, and the
// argument checks (dtype and device are each backend's).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/checks.h"
#include "contracts/rnn.h"

namespace fusedops {

// The biases as RnnLayerForward takes them: {added to Gi, kept for the step kernel}. rnn / lstm
// add both to Gi; gru keeps b_hh apart (b_hn sits inside r * (.)). Either may be undefined.
inline std::pair<at::Tensor, at::Tensor> rnn_gate_biases(RnnMode mode, const at::Tensor& b_ih,
                                                         const at::Tensor& b_hh) {
  if (mode == RnnMode::gru) return {b_ih, b_hh};
  if (!b_hh.defined()) return {b_ih, at::Tensor()};
  return {b_ih.defined() ? b_ih + b_hh : b_hh, at::Tensor()};
}

inline RnnMode parse_rnn_mode(c10::string_view mode, const char* op) {
  if (mode == "rnn_tanh") return RnnMode::rnn_tanh;
  if (mode == "rnn_relu") return RnnMode::rnn_relu;
  if (mode == "lstm") return RnnMode::lstm;
  if (mode == "gru") return RnnMode::gru;
  FUSEDOPS_CHECK(false, op, "mode must be \"rnn_tanh\", \"rnn_relu\", \"lstm\" or \"gru\", got \"",
                 std::string(mode), "\"");
  return RnnMode::lstm;
}

inline void check_rnn_shape(const at::Tensor& t, std::vector<int64_t> want, const char* op,
                            const char* arg, const char* what) {
  FUSEDOPS_CHECK(t.sizes().vec() == want, op, arg, " must have shape ", shape_str(want), " ", what,
                 ", got ", shape_str(t.sizes()));
}

// Checks every shape and returns the sizes; `ref` gives the dtype every tensor must share.
inline RnnDims rnn_dims(c10::string_view mode, const at::Tensor& input, const at::Tensor& hx,
                        const std::optional<at::Tensor>& cx, const at::Tensor& w_ih,
                        const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                        const std::optional<at::Tensor>& b_hh, const std::optional<at::Tensor>& w_hr,
                        const std::optional<at::Tensor>& batch_sizes, const char* op) {
  RnnDims d;
  d.mode = parse_rnn_mode(mode, op);
  d.G = rnn_gate_count(d.mode);
  const bool lstm = d.mode == RnnMode::lstm;
  d.packed = batch_sizes.has_value();
  if (d.packed) {
    FUSEDOPS_CHECK(input.dim() == 2, op, "a packed input (batch_sizes given) must be 2-D [N, input_size], got shape ",
                   shape_str(input.sizes()));
    const at::Tensor& b = *batch_sizes;
    FUSEDOPS_CHECK(b.dim() == 1 && b.scalar_type() == at::kLong && b.device().is_cpu(), op,
                   "batch_sizes must be a 1-D int64 CPU tensor (PackedSequence.batch_sizes), got ",
                   b.scalar_type(), " of shape ", shape_str(b.sizes()), " on ", b.device());
    const at::Tensor bc = b.contiguous();
    const int64_t* p = bc.data_ptr<int64_t>();
    d.T = b.size(0);
    int64_t total = 0;
    for (int64_t t = 0; t < d.T; ++t) {
      FUSEDOPS_CHECK(p[t] > 0 && (t == 0 || p[t] <= p[t - 1]), op,
                     "batch_sizes must be positive and non-increasing, got ", shape_str(at::IntArrayRef(p, d.T)));
      d.bs.push_back(p[t]);
      d.off.push_back(total);
      FUSEDOPS_CHECK(!__builtin_add_overflow(total, p[t], &total), op,
                     "batch_sizes overflow int64: their sum has more than 2^63 rows");
    }
    FUSEDOPS_CHECK(total == input.size(0), op, "batch_sizes must sum to the packed input's rows (",
                   input.size(0), "), got ", total);
    d.B = d.T ? p[0] : hx.dim() == 2 ? hx.size(0) : 0;
    d.N = total;
  } else {
    FUSEDOPS_CHECK(input.dim() == 3, op, "input must be 3-D [seq_len, batch, input_size], got shape ",
                   shape_str(input.sizes()));
    d.T = input.size(0);
    d.B = input.size(1);
    d.N = d.T * d.B;
    for (int64_t t = 0; t < d.T; ++t) d.bs.push_back(d.B), d.off.push_back(t * d.B);
  }
  d.I = input.size(input.dim() - 1);
  FUSEDOPS_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2, op,
                 "w_ih and w_hh must be 2-D [gates * hidden_size, input_size] and "
                 "[gates * hidden_size, hidden_size], got shapes ",
                 shape_str(w_ih.sizes()), " and ", shape_str(w_hh.sizes()));
  FUSEDOPS_CHECK(w_hh.size(0) % d.G == 0, op, "w_hh must have ", d.G, " * hidden_size rows for mode \"",
                 std::string(mode), "\", got ", w_hh.size(0));
  d.H = w_hh.size(0) / d.G;
  FUSEDOPS_CHECK(w_ih.size(0) == d.G * d.H, op, "w_ih must have as many rows as w_hh (", d.G * d.H,
                 "), got ", w_ih.size(0));
  FUSEDOPS_CHECK(w_ih.size(1) == d.I, op, "input has ", d.I,
                 " features but w_ih expects input_size ", w_ih.size(1));
  if (w_hr.has_value()) {
    FUSEDOPS_CHECK(lstm, op, "w_hr (a projection) is only for mode \"lstm\", got mode \"",
                   std::string(mode), "\"");
    FUSEDOPS_CHECK(w_hr->dim() == 2 && w_hr->size(1) == d.H, op,
                   "w_hr must be 2-D [proj_size, hidden_size] with hidden_size ", d.H, ", got shape ",
                   shape_str(w_hr->sizes()));
    d.P = w_hr->size(0);
  } else {
    d.P = d.H;
  }
  FUSEDOPS_CHECK(w_hh.size(1) == d.P, op, "w_hh must have ", d.P,
                 w_hr.has_value() ? " (proj_size)" : " (hidden_size)", " columns, got ", w_hh.size(1));
  for (auto [name, b] : {std::pair{"b_ih", &b_ih}, std::pair{"b_hh", &b_hh}})
    if (b->has_value()) check_rnn_shape(**b, {d.G * d.H}, op, name, "(gates * hidden_size)");
  check_rnn_shape(hx, {d.B, d.P}, op, "hx", "[batch, hidden_size (proj_size with a projection)]");
  if (lstm) {
    FUSEDOPS_CHECK(cx.has_value(), op, "cx (the initial cell state) is required for mode \"lstm\"");
    check_rnn_shape(*cx, {d.B, d.H}, op, "cx", "[batch, hidden_size]");
  } else {
    FUSEDOPS_CHECK(!cx.has_value(), op, "cx is only for mode \"lstm\", got mode \"", std::string(mode), "\"");
  }
  d.W = checked_product({int64_t(rnn_workspace_width(d.mode)), d.H}, op,
                        "the workspace row (columns per hidden unit, hidden_size)");
  return d;
}

// The dtype rule: every tensor argument has the input's dtype.
inline void check_rnn_dtypes(std::initializer_list<std::pair<const char*, const at::Tensor*>> ts,
                             const at::Tensor& input, const char* op) {
  for (auto& [name, t] : ts)
    if (t && t->defined()) check_same_dtype(*t, input, op, name, "input");
}

// Shapes of the saved tensors and incoming gradients of rnn_layer_backward.
inline void check_rnn_backward(const RnnDims& d, const at::Tensor& input, const at::Tensor& output,
                               const at::Tensor& workspace, const std::optional<at::Tensor>& grad_output,
                               const std::optional<at::Tensor>& grad_hy,
                               const std::optional<at::Tensor>& grad_cy, const char* op) {
  std::vector<int64_t> out_shape = d.packed ? std::vector<int64_t>{d.N, d.P}
                                            : std::vector<int64_t>{d.T, d.B, d.P};
  check_rnn_shape(output, out_shape, op, "output", "(the forward's output)");
  check_rnn_shape(workspace, {d.N, d.W}, op, "workspace", "(the forward's workspace)");
  if (grad_output) check_rnn_shape(*grad_output, out_shape, op, "grad_output", "(the output's shape)");
  if (grad_hy) check_rnn_shape(*grad_hy, {d.B, d.P}, op, "grad_hy", "(hy's shape)");
  if (grad_cy) {
    FUSEDOPS_CHECK(d.mode == RnnMode::lstm, op, "grad_cy is only for mode \"lstm\"");
    check_rnn_shape(*grad_cy, {d.B, d.H}, op, "grad_cy", "(cy's shape)");
  }
  (void)input;
}

}  // namespace fusedops
