// Recurrent layers' step descriptions, shared by the CPU kernels (cpu/kernels/rnn.h), the CUDA
// kernels (cuda/kernels/rnn.cuh) and the argument checks (common/rnn_args.h): the mode, the
// gate count and workspace layout, and the arguments of one time step's pointwise kernels. The
// layout is the same on every backend, so a workspace saved by one means the same to another.
//
// Gate order and formulas are torch's:
//   rnn:  h = tanh|relu(x W_ih^T + b_ih + h_prev W_hh^T + b_hh)
//   lstm: i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of the 4H pre-activations;
//         c = f * c_prev + i * g;  h = o * tanh(c)  (then h = h W_hr^T with a projection)
//   gru:  r, z = sigmoid(gi_rz + gh_rz + b_hrz);  hn = gh_n + b_hn;  n = tanh(gi_n + r * hn);
//         h = (1 - z) * n + z * h_prev   (gi = x W_ih^T + b_ih, gh = h_prev W_hh^T)
// Every row pointer below is the first of `rows` rows with the given leading dimension.
#pragma once
#include <cstdint>
#include <vector>

#include "hd.h"

namespace fusedops {

enum class RnnMode : int { rnn_tanh = 0, rnn_relu = 1, lstm = 2, gru = 3 };

FUSEDOPS_HD constexpr int rnn_gate_count(RnnMode m) {
  return m == RnnMode::lstm ? 4 : m == RnnMode::gru ? 3 : 1;
}
// Columns of a workspace row: lstm i, f, g, o, c; gru r, z, n, hn; rnn the pre-activation.
FUSEDOPS_HD constexpr int rnn_workspace_width(RnnMode m) {
  return m == RnnMode::lstm ? 5 : m == RnnMode::gru ? 4 : 1;
}

template <typename T>
struct RnnStepForward {
  RnnMode mode = RnnMode::lstm;
  int64_t rows = 0, H = 0;
  // In: the gate pre-activations (rnn/lstm: everything summed; gru: gi only) in the first G*H
  // columns. Out: the workspace row (see rnn_workspace_width).
  T* ws = nullptr;
  int64_t ldw = 0;
  const T* gh = nullptr;  // h_prev W_hh^T without bias, [rows, G*H]: gru always; rnn / lstm
                          // optionally (added to the pre-activations, else already in them)
  int64_t ldgh = 0;
  const T* b_hh = nullptr;  // gru: the hidden bias [3H] or nullptr
  const T* h_prev = nullptr;  // gru: the state the step starts from (may alias out2)
  int64_t ldhp = 0;
  T* c = nullptr;  // lstm: [rows, H] contiguous, c_prev in, c out
  T* out = nullptr;  // h (lstm with a projection: o * tanh(c), before W_hr)
  int64_t ldo = 0;
  T* out2 = nullptr;  // optional second copy of out (the state buffer)
  int64_t ldo2 = 0;
};

template <typename T>
struct RnnStepBackward {
  RnnMode mode = RnnMode::lstm;
  int64_t rows = 0, H = 0;
  const T* ws = nullptr;  // the forward's workspace rows
  int64_t ldw = 0;
  T* dh = nullptr;  // in: d loss / d h (lstm: d / d (o * tanh c)); gru out: dh * z
  int64_t lddh = 0;
  const T* h = nullptr;  // rnn: the step's output h
  int64_t ldh = 0;
  T* dc = nullptr;  // lstm: [rows, H] contiguous, d / d c from later steps in, d / d c_prev out
  const T* prev = nullptr;  // lstm: c_prev; gru: h_prev
  int64_t ldp = 0;
  T* dgi = nullptr;  // d / d pre-activations of the input side, [rows, G*H]
  int64_t ldgi = 0;
  T* dgh = nullptr;  // gru: d / d (h_prev W_hh^T), [rows, 3H] (others: equal to dgi)
  int64_t ldgh = 0;
};

// The sizes of one layer call (host code: the bindings fill it from the tensors, common/rnn_args.h).
struct RnnDims {
  RnnMode mode = RnnMode::lstm;
  int64_t G = 4;         // gates
  int64_t T = 0, B = 0;  // steps, batch (rows of the first step)
  int64_t N = 0;         // rows in all: T * B, or the packed total
  int64_t I = 0, H = 0, P = 0;  // input, hidden and output (projected) sizes
  int64_t W = 0;         // workspace columns
  bool packed = false;
  std::vector<int64_t> bs, off;  // rows of step t: off[t] .. off[t] + bs[t]
  // The step processed k-th (reverse layers run T-1 .. 0).
  int64_t step(int64_t k, bool reverse) const { return reverse ? T - 1 - k : k; }
  // The row that step t's row b started from: the previous step's row of the same sequence
  // where that sequence had one (>= 0), else -1 - b (row b of the initial state).
  int64_t prev_row(int64_t t, int64_t b, bool reverse) const {
    const int64_t tp = reverse ? t + 1 : t - 1;
    const int64_t n_seq = (tp >= 0 && tp < T) ? (bs[t] < bs[tp] ? bs[t] : bs[tp]) : 0;
    return b < n_seq ? off[tp] + b : -1 - b;
  }
};

// A layer's forward over all its steps (cpu/kernels/rnn_layer.h, cuda/kernels/rnn_layer.cuh).
template <typename T>
struct RnnLayerForward {
  const T *x, *w_ih, *w_hh;  // x [N, I], w_ih [G*H, I], w_hh [G*H, P], contiguous
  const T* bias;             // [G*H] added to Gi (rnn / lstm: b_ih + b_hh; gru: b_ih), or nullptr
  const T* b_hh;             // gru only: [G*H], inside r * (.), else nullptr
  const T* w_hr;             // [P, H] projection, or nullptr
  T *out, *hy, *cy, *ws;     // out [N, P]; hy [B, P], cy [B, H] (lstm) seeded with the initial
                             // state; ws [N, W] the workspace the backward reads
};

// A layer's backward over all its steps (cpu/kernels/rnn_layer.h, cuda/kernels/rnn_layer.cuh):
// what it reads, and the gradients it writes.
template <typename T>
struct RnnLayerBackwardIn {
  const T *x, *h0, *c0, *w_ih, *w_hh, *w_hr, *out, *ws, *gout;  // c0, w_hr, gout may be nullptr
};

template <typename T>
struct RnnLayerBackwardOut {
  // dh0 / dc0 (lstm) are required, seeded with grad_hy / grad_cy or zeros; the rest may be
  // nullptr
  T *dx, *dh0, *dc0, *dw_ih, *dw_hh, *db_ih, *db_hh, *dw_hr;
};

}  // namespace fusedops
