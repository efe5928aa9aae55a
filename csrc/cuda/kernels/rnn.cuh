/* Recurrent layers on CUDA, torch-free: the pointwise kernels of one time step and the row
   moves around them. The GEMMs (input projections of all steps, the recurrent product of each
   step, the gradients) are gemm.cuh's; the binding (cuda/rnn_impl.h) sequences them exactly as
   the CPU binding does, with the same step descriptions (contracts/rnn.h) and workspace
   layout, so a workspace saved by one backend means the same to the other.

   Gate kernels: one thread per (row, hidden unit), a grid-stride loop over rows * H; each
   thread reads its unit's gate pre-activations (coalesced along the unit), computes in fp32
   (fp64 for double) and writes the gate values, the state and h. Differences from the CPU
   kernels: `b_hh`, when given, is added to the hidden side in every mode (the CPU adds it to
   the input GEMM's bias except for gru), and `gout`, when given, is added to dh first. */
#pragma once
#include "gemm.cuh"

#include "../../contracts/rnn.h"

namespace fusedops::FUSEDOPS_CUDA_NS {

namespace rnn_detail {

using gemm_detail::exp_;
using gemm_detail::from_acc;
using gemm_detail::tanh_;
using gemm_detail::to_acc;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

template <typename A>
__device__ __forceinline__ A sigmoid_(A x) {
  return A(1) / (A(1) + exp_(-x));
}

inline dim3 grid_for(int64_t n) { return dim3(grid_stride_blocks(n, kThreads, kMaxBlocks)); }

#define RNN_FOR_EACH(e, n) \
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < (n); e += int64_t(gridDim.x) * kThreads)

template <typename T>
__global__ void __launch_bounds__(kThreads) step_forward_kernel(RnnStepForward<T> a) {
  using Acc = gemm_acc_t<T>;
  const int64_t H = a.H;
  RNN_FOR_EACH(e, a.rows * H) {
    const int64_t r = e / H, j = e - r * H;
    T* w = a.ws + r * a.ldw;
    const T* gh = a.gh ? a.gh + r * a.ldgh : nullptr;
    // the hidden side of gate k: h_prev W_hh^T (when separate) plus b_hh
    auto hid = [&](int64_t k) {
      Acc v = gh ? to_acc(gh[k * H + j]) : Acc(0);
      if (a.b_hh) v += to_acc(a.b_hh[k * H + j]);
      return v;
    };
    Acc h;
    switch (a.mode) {
      case RnnMode::rnn_tanh:
      case RnnMode::rnn_relu: {
        const Acc x = to_acc(w[j]) + hid(0);
        w[j] = from_acc<T>(x);
        h = a.mode == RnnMode::rnn_relu ? (x > Acc(0) ? x : Acc(0)) : tanh_(x);
        break;
      }
      case RnnMode::lstm: {
        const Acc i = sigmoid_(to_acc(w[j]) + hid(0)), f = sigmoid_(to_acc(w[H + j]) + hid(1));
        const Acc g = tanh_(to_acc(w[2 * H + j]) + hid(2)), o = sigmoid_(to_acc(w[3 * H + j]) + hid(3));
        T* c = a.c + r * H + j;
        const Acc cn = f * to_acc(*c) + i * g;
        w[j] = from_acc<T>(i), w[H + j] = from_acc<T>(f), w[2 * H + j] = from_acc<T>(g);
        w[3 * H + j] = from_acc<T>(o), w[4 * H + j] = from_acc<T>(cn), *c = from_acc<T>(cn);
        h = o * tanh_(cn);
        break;
      }
      default: {  // gru
        const Acc rr = sigmoid_(to_acc(w[j]) + hid(0)), z = sigmoid_(to_acc(w[H + j]) + hid(1));
        const Acc hn = hid(2);
        const Acc nn = tanh_(to_acc(w[2 * H + j]) + rr * hn);
        h = (Acc(1) - z) * nn + z * to_acc(a.h_prev[r * a.ldhp + j]);
        w[j] = from_acc<T>(rr), w[H + j] = from_acc<T>(z), w[2 * H + j] = from_acc<T>(nn);
        w[3 * H + j] = from_acc<T>(hn);
        break;
      }
    }
    const T ht = from_acc<T>(h);
    a.out[r * a.ldo + j] = ht;
    if (a.out2) a.out2[r * a.ldo2 + j] = ht;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) step_backward_kernel(RnnStepBackward<T> a) {
  using Acc = gemm_acc_t<T>;
  const int64_t H = a.H;
  RNN_FOR_EACH(e, a.rows * H) {
    const int64_t r = e / H, j = e - r * H;
    const T* w = a.ws + r * a.ldw;
    T* dh = a.dh + r * a.lddh + j;
    T* dg = a.dgi + r * a.ldgi;
    const Acc g = to_acc(*dh);
    switch (a.mode) {
      case RnnMode::rnn_tanh:
      case RnnMode::rnn_relu: {
        const Acc y = to_acc(a.h[r * a.ldh + j]);
        dg[j] = from_acc<T>(a.mode == RnnMode::rnn_relu ? (y > Acc(0) ? g : Acc(0)) : g * (Acc(1) - y * y));
        break;
      }
      case RnnMode::lstm: {
        const Acc i = to_acc(w[j]), f = to_acc(w[H + j]), gg = to_acc(w[2 * H + j]), o = to_acc(w[3 * H + j]);
        const Acc tc = tanh_(to_acc(w[4 * H + j]));
        T* dc = a.dc + r * H + j;
        const Acc dct = g * o * (Acc(1) - tc * tc) + to_acc(*dc);
        *dc = from_acc<T>(dct * f);
        dg[j] = from_acc<T>(dct * gg * (i * (Acc(1) - i)));
        dg[H + j] = from_acc<T>(dct * to_acc(a.prev[r * a.ldp + j]) * (f * (Acc(1) - f)));
        dg[2 * H + j] = from_acc<T>(dct * i * (Acc(1) - gg * gg));
        dg[3 * H + j] = from_acc<T>(g * tc * (o * (Acc(1) - o)));
        break;
      }
      default: {  // gru
        const Acc rr = to_acc(w[j]), z = to_acc(w[H + j]), nn = to_acc(w[2 * H + j]), hn = to_acc(w[3 * H + j]);
        const Acc dnp = g * (Acc(1) - z) * (Acc(1) - nn * nn);
        const Acc drp = dnp * hn * (rr * (Acc(1) - rr));
        const Acc dzp = g * (to_acc(a.prev[r * a.ldp + j]) - nn) * (z * (Acc(1) - z));
        T* dgh = a.dgh + r * a.ldgh;
        dg[j] = from_acc<T>(drp), dg[H + j] = from_acc<T>(dzp), dg[2 * H + j] = from_acc<T>(dnp);
        dgh[j] = from_acc<T>(drp), dgh[H + j] = from_acc<T>(dzp), dgh[2 * H + j] = from_acc<T>(dnp * rr);
        *dh = from_acc<T>(g * z);
        break;
      }
    }
  }
}

// dst[r, :cols] = src[r, :cols] (+ dst[r, :cols] when accumulate).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    rows_update_kernel(int64_t rows, int64_t cols, const T* src, int64_t lds, T* dst, int64_t ldd, bool accumulate) {
  RNN_FOR_EACH(e, rows * cols) {
    const int64_t r = e / cols, j = e - r * cols;
    const gemm_acc_t<T> v = to_acc(src[r * lds + j]);
    dst[r * ldd + j] = from_acc<T>(accumulate ? v + to_acc(dst[r * ldd + j]) : v);
  }
}

// dst[n, :D] = source row of n: seq[s] when s = index[n] >= 0, else init[-1 - s].
template <typename T>
__global__ void __launch_bounds__(kThreads) gather_rows_kernel(int64_t N, int64_t D, const int64_t* index,
                                                               const T* seq, int64_t ld_seq, const T* init,
                                                               int64_t ld_init, T* dst) {
  RNN_FOR_EACH(e, N * D) {
    const int64_t n = e / D, j = e - n * D, s = index[n];
    dst[e] = s >= 0 ? seq[s * ld_seq + j] : init[(-1 - s) * ld_init + j];
  }
}

// lstm: m = o * tanh(c) from workspace rows.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    lstm_cell_output_kernel(int64_t rows, int64_t H, const T* ws, int64_t ldw, T* m, int64_t ldm) {
  RNN_FOR_EACH(e, rows * H) {
    const int64_t r = e / H, j = e - r * H;
    const T* w = ws + r * ldw;
    m[r * ldm + j] = from_acc<T>(to_acc(w[3 * H + j]) * tanh_(to_acc(w[4 * H + j])));
  }
}

#undef RNN_FOR_EACH

}  // namespace rnn_detail

template <typename T>
void rnn_step_forward_launch(const RnnStepForward<T>& a, cudaStream_t s) {
  using namespace rnn_detail;
  if (a.rows * a.H <= 0) return;
  LAUNCH(step_forward_kernel<T>, grid_for(a.rows * a.H), dim3(kThreads), 0, s, a);
}

template <typename T>
void rnn_step_backward_launch(const RnnStepBackward<T>& a, cudaStream_t s) {
  using namespace rnn_detail;
  if (a.rows * a.H <= 0) return;
  LAUNCH(step_backward_kernel<T>, grid_for(a.rows * a.H), dim3(kThreads), 0, s, a);
}

template <typename T>
void rnn_rows_update_launch(int64_t rows, int64_t cols, const T* src, int64_t lds, T* dst, int64_t ldd,
                            bool accumulate, cudaStream_t s) {
  using namespace rnn_detail;
  if (rows * cols <= 0) return;
  LAUNCH(rows_update_kernel<T>, grid_for(rows * cols), dim3(kThreads), 0, s, rows, cols, src, lds, dst, ldd,
         accumulate);
}

template <typename T>
void rnn_gather_rows_launch(int64_t N, int64_t D, const int64_t* index, const T* seq, int64_t ld_seq,
                            const T* init, int64_t ld_init, T* dst, cudaStream_t s) {
  using namespace rnn_detail;
  if (N * D <= 0) return;
  LAUNCH(gather_rows_kernel<T>, grid_for(N * D), dim3(kThreads), 0, s, N, D, index, seq, ld_seq, init, ld_init,
         dst);
}

template <typename T>
void lstm_cell_output_launch(int64_t rows, int64_t H, const T* ws, int64_t ldw, T* m, int64_t ldm, cudaStream_t s) {
  using namespace rnn_detail;
  if (rows * H <= 0) return;
  LAUNCH(lstm_cell_output_kernel<T>, grid_for(rows * H), dim3(kThreads), 0, s, rows, H, ws, ldw, m, ldm);
}

inline void rnn_instantiate_all_() {
  (void)&rnn_step_forward_launch<__half>;
  (void)&rnn_step_forward_launch<__nv_bfloat16>;
  (void)&rnn_step_forward_launch<float>;
  (void)&rnn_step_forward_launch<double>;
  (void)&rnn_step_backward_launch<__half>;
  (void)&rnn_step_backward_launch<__nv_bfloat16>;
  (void)&rnn_step_backward_launch<float>;
  (void)&rnn_step_backward_launch<double>;
  (void)&rnn_rows_update_launch<float>;
  (void)&rnn_gather_rows_launch<float>;
  (void)&lstm_cell_output_launch<float>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
