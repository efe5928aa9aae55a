// CPU bindings of rnn_layer and rnn_layer_backward: checks, allocation and the sequence of
// GEMMs and gate kernels (the algorithm of common/rnn_args.h's callers, see DESIGN.md):
//   forward:  Gi = X W_ih^T + bias for every row in one GEMM, straight into the workspace;
//             per step one recurrent GEMM (accumulated into the step's workspace rows; gru into
//             a scratch Gh) and one fused gate kernel; with a projection h = m W_hr^T.
//   backward: per step (last first) the gate kernel turns d h (and d c) into the gate
//             gradients, and one GEMM carries them back to the previous state; then the input
//             gradient and the weight gradients are single GEMMs over all steps.
// The state buffers hy / cy (dhx / dcx) hold the running state: step t updates their rows
// [0, batch_sizes[t]), which gives each packed sequence's own final state.
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
#include "cpu/kernels/gemm/gemm.h"
#include "cpu/kernels/rnn.h"

namespace fusedops {
namespace {

using OptTensor = std::optional<at::Tensor>;
using cpu::GemmArgs;

template <typename T>
const T* cptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

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

// Uninitialized scratch of n elements (large ones from the block pool: see fresh_output.h); the
// tensor owns the memory.
template <typename T>
T* scratch(at::Tensor& holder, int64_t n) {
  holder = pooled_empty({std::max<int64_t>(n, 0)}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  return holder.data_ptr<T>();
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

// dst[N, D]: for each row, the state its step started from: the previous step's row of `seq`
// (ld_seq) where that sequence had one, else its row of `init` (ld_init).
template <typename T>
void gather_prev(const RnnDims& d, bool reverse, const T* seq, int64_t ld_seq, const T* init,
                 int64_t ld_init, int64_t D, T* dst) {
  for (int64_t t = 0; t < d.T; ++t) {
    const int64_t tp = reverse ? t + 1 : t - 1;
    const int64_t n_seq = (tp >= 0 && tp < d.T) ? std::min(d.bs[t], d.bs[tp]) : 0;
    for (int64_t b = 0; b < d.bs[t]; ++b) {
      const T* src = b < n_seq ? seq + (d.off[tp] + b) * ld_seq : init + b * ld_init;
      std::memcpy(dst + (d.off[t] + b) * D, src, size_t(D) * sizeof(T));
    }
  }
}

// ---- forward --------------------------------------------------------------------------------

template <typename T>
void forward(const RnnDims& d, bool reverse, const T* x, const T* w_ih, const T* w_hh,
             const T* bias, const T* b_hh, const T* w_hr, T* out, T* hy, T* cy, T* ws) {
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, W = d.W;
  const bool gru = d.mode == RnnMode::gru, proj = w_hr != nullptr;
  std::vector<T> scratch(size_t(d.B) * (proj ? H : 0)), hgates(size_t(d.B) * GH);
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
    cpu::rnn_kernels<T>().rnn_step_forward(a);
    if (proj) {
      whr.times(rows, scratch.data(), H, T(0), out + r0 * P, P);
      std::memcpy(hy, out + r0 * P, size_t(rows * P) * sizeof(T));
    }
  }
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
  const bool gru = d.mode == RnnMode::gru;
  // rnn / lstm add both biases to Gi; gru keeps b_hh for the kernel (b_hn sits inside r * (.)).
  at::Tensor bias = bi;
  if (!gru && bh.defined()) bias = bi.defined() ? bi + bh : bh;
  at::Tensor out = d.packed ? empty_output({d.N, d.P}, input.options())
                            : empty_output({d.T, d.B, d.P}, input.options());
  at::Tensor hy = hx.contiguous().clone();
  at::Tensor cy = d.mode == RnnMode::lstm ? cx->contiguous().clone() : at::empty({0}, input.options());
  at::Tensor ws = pooled_empty({d.N, d.W}, input.options());  // saved for the backward only
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.rnn_layer", [&] {
    forward<scalar_t>(d, reverse, x.data_ptr<scalar_t>(), wi.data_ptr<scalar_t>(),
                      wh.data_ptr<scalar_t>(), cptr<scalar_t>(bias), gru ? cptr<scalar_t>(bh) : nullptr,
                      cptr<scalar_t>(wr), out.data_ptr<scalar_t>(), hy.data_ptr<scalar_t>(),
                      cy.numel() ? cy.data_ptr<scalar_t>() : nullptr, ws.data_ptr<scalar_t>());
  });
  return {out, hy, cy, ws};
}

// ---- backward -------------------------------------------------------------------------------

template <typename T>
struct BackwardIn {
  const T *x, *h0, *c0, *w_ih, *w_hh, *w_hr, *out, *ws, *gout;
};

template <typename T>
struct BackwardOut {
  T *dx, *dh0, *dc0, *dw_ih, *dw_hh, *db_ih, *db_hh, *dw_hr;
};

template <typename T>
void backward(const RnnDims& d, bool reverse, const BackwardIn<T>& in, const BackwardOut<T>& o) {
  const int64_t GH = d.G * d.H, H = d.H, P = d.P, W = d.W, N = d.N;
  const bool gru = d.mode == RnnMode::gru, lstm = d.mode == RnnMode::lstm, proj = in.w_hr != nullptr;
  // dh0 / dc0 are the running state gradients (seeded by the caller with grad_hy / grad_cy).
  T* dh = o.dh0;
  T* dc = o.dc0;
  at::Tensor t_dgi, t_dgh, t_hprev, t_cprev, t_dH, t_dm;
  T* const dGi = scratch<T>(t_dgi, N * GH);
  T* const dGh = gru ? scratch<T>(t_dgh, N * GH) : dGi;
  T* const hprev = (o.dw_hh || gru) ? scratch<T>(t_hprev, N * P) : nullptr;
  T* const cprev = lstm ? scratch<T>(t_cprev, N * H) : nullptr;
  if (hprev) gather_prev<T>(d, reverse, in.out, P, in.h0, P, P, hprev);
  if (lstm) gather_prev<T>(d, reverse, in.ws + 4 * H, W, in.c0, H, H, cprev);
  T* const dH = proj ? scratch<T>(t_dH, N * P) : nullptr;
  T* const dm = proj ? scratch<T>(t_dm, d.B * H) : nullptr;
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
    cpu::rnn_kernels<T>().rnn_step_backward(a);
    // d h_prev = dGh W_hh (gru: plus the dh * z the kernel left in dh).
    whh.times(rows, dGh + r0 * GH, GH, gru ? T(1) : T(0), dh, P);
  }

  if (o.dx) gemm<T>(N, d.I, GH, dGi, GH, 1, in.w_ih, d.I, 1, T(0), o.dx, d.I);
  if (o.dw_ih) gemm<T>(GH, d.I, N, dGi, 1, GH, in.x, d.I, 1, T(0), o.dw_ih, d.I);
  if (o.dw_hh) gemm<T>(GH, P, N, dGh, 1, GH, hprev, P, 1, T(0), o.dw_hh, P);
  if (o.db_ih) cpu::bias_act_backward<T>(N, GH, dGi, GH, 1, nullptr, 0, nullptr, Activation::none, o.db_ih);
  if (o.db_hh) {
    if (gru || !o.db_ih)
      cpu::bias_act_backward<T>(N, GH, dGh, GH, 1, nullptr, 0, nullptr, Activation::none, o.db_hh);
    else
      std::memcpy(o.db_hh, o.db_ih, size_t(GH) * sizeof(T));
  }
  if (o.dw_hr) {
    at::Tensor t_m;
    T* const m = scratch<T>(t_m, N * H);
    cpu::rnn_kernels<T>().lstm_cell_output(N, H, in.ws, W, m, H);
    gemm<T>(P, H, N, dH, 1, P, m, H, 1, T(0), o.dw_hr, H);
  }
}

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
    BackwardIn<T> in{x.data_ptr<T>(), h0.data_ptr<T>(), cptr<T>(c0), wi.data_ptr<T>(), wh.data_ptr<T>(),
                     cptr<T>(wr), out.data_ptr<T>(), ws.data_ptr<T>(), cptr<T>(go)};
    BackwardOut<T> ot{mp(dx), mp(dh0), mp(dc0), mp(dwi), mp(dwh), mp(dbi), mp(dbh), mp(dwr)};
    backward<T>(d, reverse, in, ot);
  });
  auto ret = [](bool want, const at::Tensor& t) { return want ? OptTensor(t) : OptTensor(); };
  return {ret(mask[0], dx), ret(mask[1], dh0), ret(mask[2], dc0), ret(mask[3], dwi),
          ret(mask[4], dwh), ret(mask[5], dbi), ret(mask[6], dbh), ret(mask[7], dwr)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) {
  m.impl("rnn_layer", FUSEDOPS_CPU(rnn_layer_cpu));
  m.impl("rnn_layer_backward", FUSEDOPS_CPU(rnn_layer_backward_cpu));
}

}  // namespace fusedops
