#include "rnn_layer.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm/gemm.h"
#include "rnn.h"
#include "scratch.h"

namespace fusedops::cpu {
namespace {

// C[M, N] (ldc) = alpha * A @ B + beta * C with A(i, k) = A[i * rsa + k * csa],
// B(k, j) = B[k * rsb + j * csb].
template <typename T>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t rsa, int64_t csa, const T* B,
          int64_t rsb, int64_t csb, T beta, T* C, int64_t ldc, const T* bias = nullptr) {
  GemmArgs<T> g;
  g.M = M, g.N = N, g.K = K;
  g.A = A, g.rsa = rsa, g.csa = csa;
  g.B = B, g.rsb = rsb, g.csb = csb;
  g.beta = beta, g.C = C, g.ldc = ldc;
  if (bias) g.bias = bias, g.bias_mode = BiasMode::per_col;
  cpu::gemm<T>(g);
}

// A GEMM operand B(k, j) = B[k * rsb + j * csb] of N columns and K rows, packed once and
// reused by the product of every time step when there are several (`uses`), of at most M rows
// each (the batch); a single product (a cell) reads it in place, which the GEMM's small-M path
// does without packing.
template <typename T>
struct PackedWeight {
  std::vector<T> storage;
  const T* B;
  int64_t rsb, csb, N, K, M;
  const T* data = nullptr;
  Isa isa = Isa::generic;  // the instruction set `data` was packed for
  PackedWeight(const T* B_, int64_t rsb_, int64_t csb_, int64_t N_, int64_t K_, int64_t M_, int64_t uses)
      : B(B_), rsb(rsb_), csb(csb_), N(N_), K(K_), M(M_) {
    if (uses < 2) return;
    GemmArgs<T> g;
    g.M = M, g.N = N, g.K = K, g.B = B, g.rsb = rsb, g.csb = csb;
    data = cpu::gemm_pack_b<T>(g, storage, &isa);
  }
  // C[M, N] (ldc) = A[M, K] (row stride rsa) @ B + beta * C.
  void times(int64_t M, const T* A, int64_t rsa, T beta, T* C, int64_t ldc, const T* bias = nullptr) const {
    GemmArgs<T> g;
    if (bias) g.bias = bias, g.bias_mode = BiasMode::per_col;
    g.M = M, g.N = N, g.K = K;
    g.A = A, g.rsa = rsa, g.csa = 1;
    if (data) g.packed_b = data, g.packed_m = this->M, g.packed_isa = isa;
    else g.B = B, g.rsb = rsb, g.csb = csb;
    g.beta = beta, g.C = C, g.ldc = ldc;
    cpu::gemm<T>(g);
  }
};

// dst[N, D]: for each row, the state its step started from: the previous step's row of `seq`
// (ld_seq) where that sequence had one, else its row of `init` (ld_init).
template <typename T>
void gather_prev(const RnnDims& d, bool reverse, const T* seq, int64_t ld_seq, const T* init,
                 int64_t ld_init, int64_t D, T* dst) {
  for (int64_t t = 0; t < d.T; ++t)
    for (int64_t b = 0; b < d.bs[t]; ++b) {
      const int64_t r = d.prev_row(t, b, reverse);
      const T* src = r >= 0 ? seq + r * ld_seq : init + b * ld_init;
      std::memcpy(dst + (d.off[t] + b) * D, src, size_t(D) * sizeof(T));
    }
}

}  // namespace

template <typename T>
void rnn_layer_forward(const RnnDims& d, bool reverse, const RnnLayerForward<T>& p) {
  const T *x = p.x, *w_ih = p.w_ih, *w_hh = p.w_hh, *bias = p.bias, *b_hh = p.b_hh, *w_hr = p.w_hr;
  T *out = p.out, *hy = p.hy, *cy = p.cy, *ws = p.ws;
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, W = d.W;
  const bool gru = d.mode == RnnMode::gru, proj = w_hr != nullptr;
  ScratchVec<T> scratch(size_t(d.B) * (proj ? H : 0)), hgates(size_t(d.B) * GH);
  const PackedWeight<T> whh(w_hh, 1, P, GH, P, d.B, d.T);  // B(k, j) = w_hh[j, k]
  const PackedWeight<T> whr(w_hr, 1, H, proj ? P : 0, proj ? H : 0, d.B, d.T);
  // The input projections of all steps: Gi = X W_ih^T + bias, one GEMM. (Chunks of ~4 MB just
  // ahead of the recurrence, to find them in cache, measured no faster here.)
  gemm<T>(d.N, GH, d.I, x, d.I, 1, w_ih, 1, d.I, T(0), ws, W, bias);
  for (int64_t k = 0; k < d.T; ++k) {
    const int64_t t = d.step(k, reverse), rows = d.bs[t], r0 = d.off[t];
    T* wsr = ws + r0 * W;
    RnnStepForward<T> a;
    a.mode = d.mode, a.rows = rows, a.H = H, a.ws = wsr, a.ldw = W;
    // The recurrent product into a small buffer that stays in cache; the gate kernel adds it.
    whh.times(rows, hy, P, T(0), hgates.data(), GH);
    a.gh = hgates.data(), a.ldgh = GH;
    if (gru) a.b_hh = b_hh, a.h_prev = hy, a.ldhp = P;
    a.c = cy;
    if (proj) {
      a.out = scratch.data(), a.ldo = H;
    } else {
      a.out = out + r0 * P, a.ldo = P, a.out2 = hy, a.ldo2 = P;
    }
    rnn_kernels<T>().rnn_step_forward(a);
    if (proj) {
      whr.times(rows, scratch.data(), H, T(0), out + r0 * P, P);
      std::memcpy(hy, out + r0 * P, size_t(rows * P) * sizeof(T));
    }
  }
}

template <typename T>
void rnn_layer_backward(const RnnDims& d, bool reverse, const RnnLayerBackwardIn<T>& in,
                        const RnnLayerBackwardOut<T>& o) {
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, W = d.W, N = d.N;
  const bool gru = d.mode == RnnMode::gru, lstm = d.mode == RnnMode::lstm, proj = in.w_hr != nullptr;
  // dh0 / dc0 are the running state gradients (seeded by the caller with grad_hy / grad_cy).
  T* dh = o.dh0;
  T* dc = o.dc0;
  ScratchVec<T> s_dgi, s_dgh, s_hprev, s_cprev, s_dH, s_dm;
  const auto take = [](ScratchVec<T>& v, int64_t n) { v.resize(size_t(std::max<int64_t>(n, 1))); return v.data(); };
  T* const dGi = take(s_dgi, N * GH);
  T* const dGh = gru ? take(s_dgh, N * GH) : dGi;
  T* const hprev = (o.dw_hh || gru) ? take(s_hprev, N * P) : nullptr;
  T* const cprev = lstm ? take(s_cprev, N * H) : nullptr;
  if (hprev) gather_prev<T>(d, reverse, in.out, P, in.h0, P, P, hprev);
  if (lstm) gather_prev<T>(d, reverse, in.ws + 4 * H, W, in.c0, H, H, cprev);
  T* const dH = proj ? take(s_dH, N * P) : nullptr;
  T* const dm = proj ? take(s_dm, d.B * H) : nullptr;
  const PackedWeight<T> whh(in.w_hh, P, 1, P, GH, d.B, d.T);  // B(k, j) = w_hh[k, j]
  const PackedWeight<T> whr(in.w_hr, H, 1, proj ? H : 0, proj ? P : 0, d.B, d.T);

  for (int64_t k = d.T - 1; k >= 0; --k) {
    const int64_t t = d.step(k, reverse), rows = d.bs[t], r0 = d.off[t];
    if (in.gout) {
      const T* g = in.gout + r0 * P;
      for (int64_t i = 0; i < rows * P; ++i) dh[i] += g[i];
    }
    T* dgate_in = dh;
    int64_t ld_in = P;
    if (proj) {
      std::memcpy(dH + r0 * P, dh, size_t(rows * P) * sizeof(T));
      whr.times(rows, dh, P, T(0), dm, H);
      dgate_in = dm, ld_in = H;
    }
    RnnStepBackward<T> a;
    a.mode = d.mode, a.rows = rows, a.H = H, a.ws = in.ws + r0 * W, a.ldw = W;
    a.dh = dgate_in, a.lddh = ld_in, a.h = in.out + r0 * P, a.ldh = P, a.dc = dc;
    if (lstm) a.prev = cprev + r0 * H, a.ldp = H;
    if (gru) a.prev = hprev + r0 * P, a.ldp = P;
    a.dgi = dGi + r0 * GH, a.ldgi = GH, a.dgh = dGh + r0 * GH, a.ldgh = GH;
    rnn_kernels<T>().rnn_step_backward(a);
    // d h_prev = dGh W_hh (gru: plus the dh * z the kernel left in dh).
    whh.times(rows, dGh + r0 * GH, GH, gru ? T(1) : T(0), dh, P);
  }

  if (o.dx) gemm<T>(N, d.I, GH, dGi, GH, 1, in.w_ih, d.I, 1, T(0), o.dx, d.I);
  if (o.dw_ih) gemm<T>(GH, d.I, N, dGi, 1, GH, in.x, d.I, 1, T(0), o.dw_ih, d.I);
  if (o.dw_hh) gemm<T>(GH, P, N, dGh, 1, GH, hprev, P, 1, T(0), o.dw_hh, P);
  if (o.db_ih) bias_act_backward<T>(N, GH, dGi, GH, 1, nullptr, 0, nullptr, Activation::none, o.db_ih);
  if (o.db_hh) {
    if (gru || !o.db_ih)
      bias_act_backward<T>(N, GH, dGh, GH, 1, nullptr, 0, nullptr, Activation::none, o.db_hh);
    else
      std::memcpy(o.db_hh, o.db_ih, size_t(GH) * sizeof(T));
  }
  if (o.dw_hr) {
    ScratchVec<T> s_m;
    T* const m = take(s_m, N * H);
    rnn_kernels<T>().lstm_cell_output(N, H, in.ws, W, m, H);
    gemm<T>(P, H, N, dH, 1, P, m, H, 1, T(0), o.dw_hr, H);
  }
}

template void rnn_layer_forward<float>(const RnnDims&, bool, const RnnLayerForward<float>&);
template void rnn_layer_forward<double>(const RnnDims&, bool, const RnnLayerForward<double>&);
template void rnn_layer_backward<float>(const RnnDims&, bool, const RnnLayerBackwardIn<float>&,
                                        const RnnLayerBackwardOut<float>&);
template void rnn_layer_backward<double>(const RnnDims&, bool, const RnnLayerBackwardIn<double>&,
                                         const RnnLayerBackwardOut<double>&);

}  // namespace fusedops::cpu
