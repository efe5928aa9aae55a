/* Linear cross-entropy over chunks of rows on the CUDA kernels, torch-free: the loop the CUDA
   and simulator bindings (cuda/loss_impl.h) run for every dtype, reachable from the simulator's
   C++ tests (tests/sim/sim_tests.cu). The CPU's loop is cpu/kernels/lce.h.

   Each chunk of rows: logits = x W^T + b into the caller's [rows, V] buffer (the GEMM); the
   fused classifier (loss.cuh) turns them into the loss and, in place, into dlogits; then
   dx = dlogits W, dW (+)= dlogits^T x and db (+)= the column sums of dlogits, the first chunk
   writing and the later ones adding (so dW and db need no clearing). The [N, V] logits never
   exist whole. Every launch goes on one stream, in order; launch errors are left for the
   caller's one check after the loop (a CUDA error stays set until read). */
#pragma once
#include "gemm.cuh"
#include "loss.cuh"

#include <cstdint>

namespace fusedops::FUSEDOPS_CUDA_NS {

template <typename T>
struct LceChunkArgs {
  using Acc = gemm_acc_t<T>;
  int64_t N = 0, K = 0, V = 0;
  const T* x = nullptr;  // [N, K] contiguous
  const T* w = nullptr;  // [V, K]: w(v, k) = w[v * rsw + k * csw]
  int64_t rsw = 0, csw = 0;
  const T* bias = nullptr;          // [V] contiguous, or nullptr
  const int64_t* target = nullptr;  // [N], checked first by targets_launch
  int64_t ignore_index = -100;
  double label_smoothing = 0.0;
  Acc* loss_acc = nullptr;         // [N] row losses in Acc (for the reduction), or nullptr
  T* loss_rows = nullptr;          // [N] row losses (reduction "none"), or nullptr
  const Acc* denom = nullptr;      // gradient divisor on the device (the mean), or nullptr
  double scale = 1.0;              // gradient scale
  const T* row_scale = nullptr;    // [N] per-row gradient scales, or nullptr
  T* gx = nullptr;                 // [N, K] contiguous, or nullptr
  T* gw = nullptr;                 // [V, K] contiguous, or nullptr
  T* gb = nullptr;                 // [V], or nullptr
  int* bad = nullptr;              // the classifier's out-of-range target flag
  T* buf = nullptr;                // [chunk_rows, V] scratch
  int64_t chunk_rows = 0;          // rows per chunk (lce_chunk_rows)
  bool allow_tf32 = false;
};

// Rows per chunk: about 64 MB of logits, at least 128 rows, at most N (forced > 0 overrides).
inline int64_t lce_chunk_rows(int64_t N, int64_t V, int64_t elem, int64_t forced = 0) {
  int64_t rows = (int64_t(64) << 20) / (V * elem > 0 ? V * elem : 1);
  rows = rows < 128 ? 128 : rows;
  if (forced > 0) rows = forced;
  return rows < N ? rows : (N > 0 ? N : 1);
}

template <typename T>
void lce_chunks_launch(const LceChunkArgs<T>& a, cudaStream_t s) {
  const bool grads = a.gx || a.gw || a.gb;
  const int64_t rows = a.chunk_rows > 0 ? a.chunk_rows : 1;
  // With no rows the loop below never runs: dW and db are still written (zeros).
  if (a.N == 0) {
    if (a.gw) {
      GemmParams<T> p;
      p.M = a.V, p.N = a.K, p.K = 0, p.C = a.gw, p.ldc = a.K, p.batch_stride_c = a.V * a.K;
      gemm_run<T>(p, s);
    }
    if (a.gb) column_sums_launch<T>(0, a.V, a.gb, a.V, a.gb, false, s);
    return;
  }
  for (int64_t r0 = 0; r0 < a.N; r0 += rows) {
    const int64_t bm = rows < a.N - r0 ? rows : a.N - r0;
    const bool first = r0 == 0;
    {
      GemmParams<T> p;
      p.M = bm, p.N = a.V, p.K = a.K;
      p.A = a.x + r0 * a.K, p.rsa = a.K, p.csa = 1;
      p.B = a.w, p.rsb = a.csw, p.csb = a.rsw;
      p.C = a.buf, p.ldc = a.V, p.batch_stride_c = bm * a.V;
      if (a.bias) p.bias = a.bias, p.bias_mode = BiasMode::per_col;
      p.allow_tf32 = a.allow_tf32;
      gemm_run<T>(p, s);
    }
    CrossEntropyParams c;
    c.N = bm, c.C = a.V, c.x = a.buf, c.ldx = a.V;
    c.target = a.target + r0;
    c.ignore_index = a.ignore_index;
    c.label_smoothing = a.label_smoothing;
    c.loss_acc = a.loss_acc ? a.loss_acc + r0 : nullptr;
    c.loss_rows = a.loss_rows ? a.loss_rows + r0 : nullptr;
    if (grads) c.grad = a.buf, c.ldg = a.V;
    c.scale_ptr = a.denom;
    c.scale = a.scale;
    c.row_scale = a.row_scale ? a.row_scale + r0 : nullptr;
    cross_entropy_launch<T>(c, a.bad, s);
    if (a.gx) {
      GemmParams<T> p;
      p.M = bm, p.N = a.K, p.K = a.V;
      p.A = a.buf, p.rsa = a.V, p.csa = 1;
      p.B = a.w, p.rsb = a.rsw, p.csb = a.csw;
      p.C = a.gx + r0 * a.K, p.ldc = a.K, p.batch_stride_c = bm * a.K;
      p.allow_tf32 = a.allow_tf32;
      gemm_run<T>(p, s);
    }
    if (a.gw) {
      GemmParams<T> p;
      p.M = a.V, p.N = a.K, p.K = bm;
      p.A = a.buf, p.rsa = 1, p.csa = a.V;
      p.B = a.x + r0 * a.K, p.rsb = a.K, p.csb = 1;
      p.C = a.gw, p.ldc = a.K, p.batch_stride_c = a.V * a.K;
      p.beta = first ? 0 : 1;
      p.allow_tf32 = a.allow_tf32;
      gemm_run<T>(p, s);
    }
    if (a.gb) column_sums_launch<T>(bm, a.V, a.buf, a.V, a.gb, !first, s);
  }
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
