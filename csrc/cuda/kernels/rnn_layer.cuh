/* A recurrent layer over its time steps on the CUDA kernels, torch-free: the sequence of GEMMs
   and step kernels the CUDA and simulator bindings (cuda/rnn_impl.h) run, reachable from the
   simulator's C++ tests (tests/sim/sim_tests.cu). The algorithm and the workspace layout are
   the CPU's (cpu/kernels/rnn_layer.h, contracts/rnn.h):
     forward:  Gi = X W_ih^T + bias for every row in one GEMM, straight into the workspace;
               per step one recurrent GEMM (rnn / lstm: added into the step's workspace rows;
               gru: into a [B, G*H] buffer, as b_hn sits inside r * (.)) and one gate kernel
               (gru: adding b_hh); with a projection h = m W_hr^T.
     backward: per step (last first) the gate kernel turns d h (and d c) into the gate
               gradients and one GEMM carries them back to the previous state; then the input
               and weight gradients are single GEMMs over all steps, the bias gradients column
               sums.
   The operands are contracts/rnn.h's RnnLayerForward and RnnLayerBackwardIn / Out; the caller
   allocates every buffer, the scratch too (sizes beside each pointer), and copies prev_rows()
   to the device. All launches go on one stream, in order; launch errors are left
   for the caller's one check after the loop (a CUDA error stays set until read). */
#pragma once
#include "gemm.cuh"
#include "pointwise.cuh"
#include "rnn.cuh"

#include <cstdint>

#include "../../contracts/rnn.h"

namespace fusedops::FUSEDOPS_CUDA_NS {

// The forward's scratch, and whether fp32 products may use TF32.
template <typename T>
struct RnnLayerForwardScratch {
  T* hgates;  // gru: [B, G*H], else unused
  T* m;       // with w_hr: [B, H], else unused
  bool allow_tf32;
};

// The backward's scratch, sizes in elements of T unless said.
template <typename T>
struct RnnLayerBackwardScratch {
  T* dgi;                   // [N, G*H]
  T* dgh;                   // gru: [N, G*H] (other modes use dgi)
  const int64_t* prev;      // [N] prev_rows(), on the device: needed for lstm, gru or dw_hh
  T *hprev, *cprev;         // [N, P] when gru or dw_hh; [N, H] for lstm
  T *dH, *dm;               // with w_hr: [N, P] and [B, H]
  T* mm;                    // with dw_hr: [N, H]
  float* colsum_ws;         // rnn_colsum_workspace_bytes<T>(N, G*H) bytes, when db_* is wanted
  bool allow_tf32;
};

// For each row n (step t, sequence b) of the layer, the row its step started from
// (RnnDims::prev_row): idx[n], n in [0, N).
inline void prev_rows(const RnnDims& d, bool reverse, int64_t* idx) {
  for (int64_t t = 0; t < d.T; ++t)
    for (int64_t b = 0; b < d.bs[t]; ++b) idx[d.off[t] + b] = d.prev_row(t, b, reverse);
}

template <typename T>
size_t rnn_colsum_workspace_bytes(int64_t N, int64_t C) {
  return bias_act_backward_plan<T>(N, C).workspace_bytes;
}

namespace rnn_layer_detail {

// C[M, N] (ldc) = A @ B + beta * C (+ bias per column), A(i, k) = A[i * rsa + k * csa],
// B(k, j) = B[k * rsb + j * csb].
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rsa, int64_t csa, const T* B, int64_t rsb,
          int64_t csb, float beta, T* C, int64_t ldc, const T* bias, bool tf32, cudaStream_t s) {
  GemmParams<T> p;
  p.M = M, p.N = N, p.K = K;
  p.A = A, p.rsa = rsa, p.csa = csa;
  p.B = B, p.rsb = rsb, p.csb = csb;
  p.C = C, p.ldc = ldc, p.beta = beta;
  if (bias) p.bias = bias, p.bias_mode = BiasMode::per_col;
  p.allow_tf32 = tf32;
  gemm_run<T>(p, s);
}

}  // namespace rnn_layer_detail

template <typename T>
void rnn_layer_forward_launch(const RnnDims& d, bool reverse, const RnnLayerForward<T>& p,
                              const RnnLayerForwardScratch<T>& sc, cudaStream_t s) {
  using rnn_layer_detail::gemm;
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, W = d.W;
  const bool gru = d.mode == RnnMode::gru, proj = p.w_hr != nullptr;
  const bool tf = sc.allow_tf32;
  gemm<T>(d.N, GH, d.I, p.x, d.I, 1, p.w_ih, 1, d.I, 0.f, p.ws, W, p.bias, tf, s);
  for (int64_t kk = 0; kk < d.T; ++kk) {
    const int64_t t = d.step(kk, reverse), rows = d.bs[t], r0 = d.off[t];
    T* const wsr = p.ws + r0 * W;
    RnnStepForward<T> a;
    a.mode = d.mode, a.rows = rows, a.H = H, a.ws = wsr, a.ldw = W, a.b_hh = p.b_hh;
    if (gru) {
      gemm<T>(rows, GH, P, p.hy, P, 1, p.w_hh, 1, P, 0.f, sc.hgates, GH, nullptr, tf, s);
      a.gh = sc.hgates, a.ldgh = GH, a.h_prev = p.hy, a.ldhp = P;
    } else {
      gemm<T>(rows, GH, P, p.hy, P, 1, p.w_hh, 1, P, 1.f, wsr, W, nullptr, tf, s);
    }
    a.c = p.cy;
    if (proj) a.out = sc.m, a.ldo = H;
    else a.out = p.out + r0 * P, a.ldo = P, a.out2 = p.hy, a.ldo2 = P;
    rnn_step_forward_launch<T>(a, s);
    if (proj) {
      gemm<T>(rows, P, H, sc.m, H, 1, p.w_hr, 1, H, 0.f, p.out + r0 * P, P, nullptr, tf, s);
      rnn_rows_update_launch<T>(rows, P, p.out + r0 * P, P, p.hy, P, false, s);
    }
  }
}

template <typename T>
void rnn_layer_backward_launch(const RnnDims& d, bool reverse, const RnnLayerBackwardIn<T>& in,
                               const RnnLayerBackwardOut<T>& o, const RnnLayerBackwardScratch<T>& sc,
                               cudaStream_t s) {
  using rnn_layer_detail::gemm;
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, W = d.W, N = d.N;
  const bool lstm = d.mode == RnnMode::lstm, gru = d.mode == RnnMode::gru, proj = in.w_hr != nullptr;
  const bool tf = sc.allow_tf32;
  T* const dh = o.dh0;
  T* const dgi = sc.dgi;
  T* const dgh = gru ? sc.dgh : sc.dgi;
  if (o.dw_hh || gru) rnn_gather_rows_launch<T>(N, P, sc.prev, in.out, P, in.h0, P, sc.hprev, s);
  if (lstm) rnn_gather_rows_launch<T>(N, H, sc.prev, in.ws + 4 * H, W, in.c0, H, sc.cprev, s);
  for (int64_t kk = d.T - 1; kk >= 0; --kk) {
    const int64_t t = d.step(kk, reverse), rows = d.bs[t], r0 = d.off[t];
    if (in.gout) rnn_rows_update_launch<T>(rows, P, in.gout + r0 * P, P, dh, P, true, s);
    T* dgate_in = dh;
    int64_t ld_in = P;
    if (proj) {
      rnn_rows_update_launch<T>(rows, P, dh, P, sc.dH + r0 * P, P, false, s);
      gemm<T>(rows, H, P, dh, P, 1, in.w_hr, H, 1, 0.f, sc.dm, H, nullptr, tf, s);
      dgate_in = sc.dm, ld_in = H;
    }
    RnnStepBackward<T> a;
    a.mode = d.mode, a.rows = rows, a.H = H, a.ws = in.ws + r0 * W, a.ldw = W;
    a.dh = dgate_in, a.lddh = ld_in, a.h = in.out + r0 * P, a.ldh = P, a.dc = o.dc0;
    if (lstm) a.prev = sc.cprev + r0 * H, a.ldp = H;
    if (gru) a.prev = sc.hprev + r0 * P, a.ldp = P;
    a.dgi = dgi + r0 * GH, a.ldgi = GH, a.dgh = dgh + r0 * GH, a.ldgh = GH;
    rnn_step_backward_launch<T>(a, s);
    // d h_prev = dGh W_hh (gru: plus the dh * z the kernel left in dh).
    gemm<T>(rows, P, GH, dgh + r0 * GH, GH, 1, in.w_hh, P, 1, gru ? 1.f : 0.f, dh, P, nullptr, tf, s);
  }
  if (o.dx) gemm<T>(N, d.I, GH, dgi, GH, 1, in.w_ih, d.I, 1, 0.f, o.dx, d.I, nullptr, tf, s);
  if (o.dw_ih) gemm<T>(GH, d.I, N, dgi, 1, GH, in.x, d.I, 1, 0.f, o.dw_ih, d.I, nullptr, tf, s);
  if (o.dw_hh) gemm<T>(GH, P, N, dgh, 1, GH, sc.hprev, P, 1, 0.f, o.dw_hh, P, nullptr, tf, s);
  const LaunchPlan cs = bias_act_backward_plan<T>(N, GH);
  if (o.db_ih)
    bias_act_backward_launch<T>(cs, N, GH, dgi, GH, 1, nullptr, 0, nullptr, Activation::none, o.db_ih,
                                sc.colsum_ws, s);
  if (o.db_hh)
    bias_act_backward_launch<T>(cs, N, GH, dgh, GH, 1, nullptr, 0, nullptr, Activation::none, o.db_hh,
                                sc.colsum_ws, s);
  if (o.dw_hr) {
    lstm_cell_output_launch<T>(N, H, in.ws, W, sc.mm, H, s);
    gemm<T>(P, H, N, sc.dH, 1, P, sc.mm, H, 1, 0.f, o.dw_hr, H, nullptr, tf, s);
  }
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
