/* Batch normalisation over [N, C, S] per channel, forward and backward, torch-free.

   Layout as the CPU kernels (cpu/kernels/batch_norm.h): planar x[(n C + c) S + s] or
   interleaved (channels-last) x[r C + c] for the M = N S rows.
   forward   one block per channel (256 threads), each thread walking the channel's elements
             with a block stride. Training: a block reduction of sum(x - x0) (x0 the channel's
             first element) for the mean, a second of sum((x - mean)^2) for the biased variance,
             then y; the passes after the first find the channel in L2 while it fits. Thread
             sums in fp32 (fp64 for double), the block reduction in fp64, in a fixed tree order:
             deterministic. Eval: mean and rstd given, y only.
   backward  one block per channel: a block reduction of sum(g) and sum(g (x - mean)), then
             dw, db and dx (training: through the batch statistics; eval: w rstd g).
   mean, rstd, var: [C] in the accumulator type (float, or double for double). One block per
   channel keeps every sum in one block (no atomics, no second kernel); with few channels on a
   large GPU, a split of each channel over several blocks would fill it better. */
#pragma once
#include "gemm.cuh"
#include "limits.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS {
namespace batch_norm_detail {

using gemm_detail::from_acc;
using gemm_detail::to_acc;

constexpr int kThreads = 256;

__device__ __forceinline__ int64_t bn_index(int64_t e, int64_t c, int64_t C, int64_t S, bool il) {
  if (il) return e * C + c;
  const int64_t n = e / S;
  return (n * C + c) * S + (e - n * S);
}

// The block's sum of v (and of v2 when two), in a fixed order; every thread gets the result.
// red: the kernel's shared [2][kThreads] scratch.
__device__ __forceinline__ void block_sum2(double (*red)[kThreads], double& v, double& v2) {
  const int tid = int(threadIdx.x);
  red[0][tid] = v;
  red[1][tid] = v2;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (tid < o) {
      red[0][tid] += red[0][tid + o];
      red[1][tid] += red[1][tid + o];
    }
    __syncthreads();
  }
  v = red[0][0];
  v2 = red[1][0];
  __syncthreads();  // red is reused by the next call
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    batch_norm_forward_kernel(int64_t N, int64_t C, int64_t S, bool il, const T* x, const T* w, const T* b,
                              double eps, bool training, gemm_acc_t<T>* mean, gemm_acc_t<T>* rstd,
                              gemm_acc_t<T>* var, T* y) {
  using Acc = gemm_acc_t<T>;
  SMEM_ARRAY(double, red, 2, kThreads);
  const int64_t c = blockIdx.x, M = N * S;
  const int tid = int(threadIdx.x);
  Acc mu, rs;
  if (training) {
    if (M == 0) {
      if (tid == 0) mean[c] = var[c] = rstd[c] = Acc(NAN);
      return;
    }
    const Acc x0 = to_acc(x[bn_index(0, c, C, S, il)]);
    Acc s = 0;
    for (int64_t e = tid; e < M; e += kThreads) s += to_acc(x[bn_index(e, c, C, S, il)]) - x0;
    double d1 = double(s), unused = 0;
    block_sum2(red, d1, unused);
    mu = Acc(double(x0) + d1 / double(M));
    Acc q = 0;
    for (int64_t e = tid; e < M; e += kThreads) {
      const Acc d = to_acc(x[bn_index(e, c, C, S, il)]) - mu;
      q += d * d;
    }
    double d2 = double(q);
    block_sum2(red, d2, unused);
    const double v = d2 / double(M);
    rs = Acc(1.0 / sqrt(v + eps));
    if (tid == 0) {
      mean[c] = mu;
      var[c] = Acc(v);
      rstd[c] = rs;
    }
  } else {
    mu = mean[c];
    rs = rstd[c];
  }
  const Acc sc = rs * (w ? to_acc(w[c]) : Acc(1)), sh = b ? to_acc(b[c]) : Acc(0);
  for (int64_t e = tid; e < M; e += kThreads) {
    const int64_t i = bn_index(e, c, C, S, il);
    y[i] = from_acc<T>((to_acc(x[i]) - mu) * sc + sh);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    batch_norm_backward_kernel(int64_t N, int64_t C, int64_t S, bool il, const T* g, const T* x,
                               const gemm_acc_t<T>* mean, const gemm_acc_t<T>* rstd, const T* w, bool training,
                               T* dx, T* dw, T* db) {
  using Acc = gemm_acc_t<T>;
  SMEM_ARRAY(double, red, 2, kThreads);
  const int64_t c = blockIdx.x, M = N * S;
  const int tid = int(threadIdx.x);
  const Acc mu = mean[c], rs = rstd[c], wc = w ? to_acc(w[c]) : Acc(1);
  double sg = 0, sgd = 0;
  if (dw || db || (dx && training)) {
    Acc a = 0, q = 0;
    for (int64_t e = tid; e < M; e += kThreads) {
      const int64_t i = bn_index(e, c, C, S, il);
      const Acc gv = to_acc(g[i]);
      a += gv;
      q += gv * (to_acc(x[i]) - mu);
    }
    sg = double(a);
    sgd = double(q);
    block_sum2(red, sg, sgd);
  }
  if (tid == 0) {
    if (dw) dw[c] = from_acc<T>(Acc(sgd * double(rs)));
    if (db) db[c] = from_acc<T>(Acc(sg));
  }
  if (!dx) return;
  const Acc k1 = wc * rs;
  const Acc mg = training && M > 0 ? Acc(sg / double(M)) : Acc(0);
  const Acc kx = training && M > 0 ? Acc(double(rs) * double(rs) * sgd / double(M)) : Acc(0);
  for (int64_t e = tid; e < M; e += kThreads) {
    const int64_t i = bn_index(e, c, C, S, il);
    dx[i] = from_acc<T>(k1 * ((to_acc(g[i]) - mg) - (to_acc(x[i]) - mu) * kx));
  }
}

}  // namespace batch_norm_detail

// One block per channel; the binding checks C against grid.x's limit.
inline LaunchPlan batch_norm_plan(int64_t C) {
  using namespace batch_norm_detail;
  LaunchPlan plan;
  plan.grid = dim3(unsigned(C > 0 ? C : 1), 1, 1);
  plan.block = dim3(kThreads, 1, 1);
  plan.name = "batch_norm";
  return plan;
}

template <typename T>
void batch_norm_forward_launch(const LaunchPlan& plan, int64_t N, int64_t C, int64_t S, bool il, const T* x,
                               const T* w, const T* b, double eps, bool training, gemm_acc_t<T>* mean,
                               gemm_acc_t<T>* rstd, gemm_acc_t<T>* var, T* y, cudaStream_t stream) {
  using namespace batch_norm_detail;
  if (C <= 0) return;
  LAUNCH((batch_norm_forward_kernel<T>), plan.grid, plan.block, 0, stream, N, C, S, il, x, w, b, eps, training,
         mean, rstd, var, y);
}

template <typename T>
void batch_norm_backward_launch(const LaunchPlan& plan, int64_t N, int64_t C, int64_t S, bool il, const T* g,
                                const T* x, const gemm_acc_t<T>* mean, const gemm_acc_t<T>* rstd, const T* w,
                                bool training, T* dx, T* dw, T* db, cudaStream_t stream) {
  using namespace batch_norm_detail;
  if (C <= 0) return;
  LAUNCH((batch_norm_backward_kernel<T>), plan.grid, plan.block, 0, stream, N, C, S, il, g, x, mean, rstd, w,
         training, dx, dw, db);
}

inline void batch_norm_instantiate_all_() {
  (void)&batch_norm_forward_launch<__half>;
  (void)&batch_norm_forward_launch<__nv_bfloat16>;
  (void)&batch_norm_forward_launch<float>;
  (void)&batch_norm_forward_launch<double>;
  (void)&batch_norm_backward_launch<__half>;
  (void)&batch_norm_backward_launch<__nv_bfloat16>;
  (void)&batch_norm_backward_launch<float>;
  (void)&batch_norm_backward_launch<double>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
