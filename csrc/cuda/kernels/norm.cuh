/* LayerNorm and RMSNorm forward and backward, torch-free. Rows of N contiguous elements; fp32 math (fp64
   for double); per-row mean/rstd in the accumulator type (float, or double).

   forward   one warp per row, 4 rows per block. Three passes over the row (the second and
             third hit L1/L2): the mean of s - s[0] (shifted, so a large common offset costs no
             precision; s = x + residual is written out here when a residual is given), the
             centred variance, the output. 16-byte loads when N and every pointer allow.
   backward  one block per row, rows_per_block consecutive rows per block. Per row: a block
             reduction of sum(g w) and sum(g w xhat), then dx. Each thread owns fixed columns,
             so it adds g * xhat and g into its own slots of the block's weight/bias partial
             (shared memory when 2 N accumulators fit, else the block's row of the global
             workspace): no atomics. A second kernel sums the per-block partials column by
             column in block order. The result depends only on (M, N): deterministic run to
             run and between the simulator and a GPU.
   RMSNorm   the same kernels with the mean fixed at zero: the forward (template flag Rms) sums
             squares in its first pass and skips the variance pass; the backward takes a null
             mean (the mean term of dx drops out) and no bias gradient. */
#pragma once
#include "gemm.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS {
namespace norm_detail {

using gemm_detail::from_acc;
using gemm_detail::to_acc;

constexpr int kFwdWarps = 4;
constexpr int kBwdMaxThreads = 256;
constexpr int kMaxBlocks = 1024;

template <typename T>
constexpr int kVec = 16 / int(sizeof(T));

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ void load_pack(const T* p, gemm_acc_t<T> (&out)[V]) {
  const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
  for (int k = 0; k < V; ++k) out[k] = to_acc(pk.v[k]);
}

template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const gemm_acc_t<T> (&in)[V]) {
  Pack<T, V> pk;
  for (int k = 0; k < V; ++k) pk.v[k] = from_acc<T>(in[k]);
  *reinterpret_cast<Pack<T, V>*>(p) = pk;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename A>
__device__ __forceinline__ A sqrt_(A x) {
  if constexpr (std::is_same_v<A, float>) return sqrtf(x);
  else return sqrt(x);
}

// grid: ceil(M / kFwdWarps) blocks of 32 * kFwdWarps threads. sum_out: [M, N] when res.
// Rms: RMSNorm (b and mean unused).
template <typename T, int V, bool Rms>
__global__ void __launch_bounds__(32 * kFwdWarps)
    layer_norm_forward_kernel(int64_t M, int64_t N, const T* x, const T* res, T* sum_out, const T* w, const T* b,
                              gemm_acc_t<T> eps, T* y, gemm_acc_t<T>* mean, gemm_acc_t<T>* rstd) {
  using Acc = gemm_acc_t<T>;
  const int lane = int(threadIdx.x) % 32;
  const int64_t row = int64_t(blockIdx.x) * kFwdWarps + int(threadIdx.x) / 32;
  if (row >= M) return;  // whole warps
  const T* xr = x + row * N;
  const T* rr = res ? res + row * N : nullptr;
  T* sr = res ? sum_out + row * N : nullptr;
  // the shift: s[0] as it is stored (rounded to T)
  const Acc c = Rms ? Acc(0) : (rr ? to_acc(from_acc<T>(to_acc(xr[0]) + to_acc(rr[0]))) : to_acc(xr[0]));
  Acc v[V];
  Acc s1 = 0;
  for (int64_t j = int64_t(lane) * V; j < N; j += 32 * V) {
    load_pack<T, V>(xr + j, v);
    if (rr) {
      Acc r[V];
      load_pack<T, V>(rr + j, r);
      for (int k = 0; k < V; ++k) v[k] = to_acc(from_acc<T>(v[k] + r[k]));  // the stored sum
      store_pack<T, V>(sr + j, v);
    }
    if constexpr (Rms)
      for (int k = 0; k < V; ++k) s1 += v[k] * v[k];
    else
      for (int k = 0; k < V; ++k) s1 += v[k] - c;
  }
  const T* src = rr ? sr : xr;  // this lane reads back only what it wrote
  Acc mu = 0, s2 = 0;
  if constexpr (Rms) {
    s2 = s1;
  } else {
    mu = c + warp_sum(s1) / Acc(N);
    for (int64_t j = int64_t(lane) * V; j < N; j += 32 * V) {
      load_pack<T, V>(src + j, v);
      for (int k = 0; k < V; ++k) s2 += (v[k] - mu) * (v[k] - mu);
    }
  }
  const Acc rs = Acc(1) / sqrt_(warp_sum(s2) / Acc(N) + eps);
  if (lane == 0 && mean) mean[row] = mu;
  if (lane == 0 && rstd) rstd[row] = rs;
  T* yr = y + row * N;
  for (int64_t j = int64_t(lane) * V; j < N; j += 32 * V) {
    load_pack<T, V>(src + j, v);
    Acc wv[V], bv[V];
    if (w) load_pack<T, V>(w + j, wv);
    if (b) load_pack<T, V>(b + j, bv);
    for (int k = 0; k < V; ++k) v[k] = (v[k] - mu) * rs * (w ? wv[k] : Acc(1)) + (b ? bv[k] : Acc(0));
    store_pack<T, V>(yr + j, v);
  }
}

// grid: ceil(M / rows_per_block) blocks; dynamic shared memory: 2 N accumulators when the
// plan found room (smem_acc), else the partials live in the workspace. partial: [grid, 2, N]
// (nullptr when neither dw nor db is wanted). mean nullptr: RMSNorm.
template <typename T, int V>
__global__ void __launch_bounds__(kBwdMaxThreads)
    layer_norm_backward_kernel(int64_t M, int64_t N, const T* g, const T* x, const gemm_acc_t<T>* mean,
                               const gemm_acc_t<T>* rstd, const T* w, const T* ga, T* dx, gemm_acc_t<T>* partial,
                               int64_t rows_per_block, bool smem_acc) {
  using Acc = gemm_acc_t<T>;
  DYN_SMEM(Acc, acc_smem);
  SMEM_ARRAY(Acc, red, 2, kBwdMaxThreads / 32);
  const int tid = int(threadIdx.x), nthreads = int(blockDim.x), warps = nthreads / 32;
  const int64_t r0 = int64_t(blockIdx.x) * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < M ? r0 + rows_per_block : M;
  Acc* accw = partial ? (smem_acc ? acc_smem : partial + int64_t(blockIdx.x) * 2 * N) : nullptr;
  Acc* accb = accw ? accw + N : nullptr;
  if (accw)
    for (int64_t j = int64_t(tid) * V; j < N; j += int64_t(nthreads) * V)
      for (int k = 0; k < V; ++k) accw[j + k] = 0, accb[j + k] = 0;
  for (int64_t row = r0; row < r1; ++row) {
    const T* gr = g + row * N;
    const T* xr = x + row * N;
    const Acc mu = mean ? mean[row] : Acc(0), rs = rstd[row];
    Acc s1 = 0, s2 = 0;
    for (int64_t j = int64_t(tid) * V; j < N; j += int64_t(nthreads) * V) {
      Acc gv[V], xv[V], wv[V];
      load_pack<T, V>(gr + j, gv);
      load_pack<T, V>(xr + j, xv);
      if (w) load_pack<T, V>(w + j, wv);
      for (int k = 0; k < V; ++k) {
        const Acc xh = (xv[k] - mu) * rs, gw = gv[k] * (w ? wv[k] : Acc(1));
        s1 += gw;
        s2 += gw * xh;
        if (accw) accw[j + k] += gv[k] * xh, accb[j + k] += gv[k];
      }
    }
    s1 = warp_sum(s1);
    s2 = warp_sum(s2);
    if (tid % 32 == 0) red[0][tid / 32] = s1, red[1][tid / 32] = s2;
    __syncthreads();
    s1 = 0, s2 = 0;
    for (int i = 0; i < warps; ++i) s1 += red[0][i], s2 += red[1][i];
    __syncthreads();  // red is rewritten by the next row
    if (!dx) continue;
    const Acc c2 = mean ? s1 / Acc(N) : Acc(0), c1 = s2 / Acc(N);
    for (int64_t j = int64_t(tid) * V; j < N; j += int64_t(nthreads) * V) {
      Acc gv[V], xv[V], wv[V], av[V];
      load_pack<T, V>(gr + j, gv);
      load_pack<T, V>(xr + j, xv);
      if (w) load_pack<T, V>(w + j, wv);
      if (ga) load_pack<T, V>(ga + row * N + j, av);
      for (int k = 0; k < V; ++k) {
        const Acc xh = (xv[k] - mu) * rs;
        gv[k] = rs * (gv[k] * (w ? wv[k] : Acc(1)) - c2 - xh * c1) + (ga ? av[k] : Acc(0));
      }
      store_pack<T, V>(dx + row * N + j, gv);
    }
  }
  if (accw && smem_acc) {
    Acc* out = partial + int64_t(blockIdx.x) * 2 * N;
    for (int64_t j = int64_t(tid) * V; j < N; j += int64_t(nthreads) * V)
      for (int k = 0; k < V; ++k) out[j + k] = accw[j + k], out[N + j + k] = accb[j + k];
  }
}

// dw[n] = sum over blocks of partial[blk, 0, n], db[n] likewise with [blk, 1, n], in block order.
template <typename T>
__global__ void __launch_bounds__(256)
    layer_norm_param_grad_kernel(int64_t N, int64_t blocks, const gemm_acc_t<T>* partial, T* dw, T* db) {
  using Acc = gemm_acc_t<T>;
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  Acc sw = 0, sb = 0;
  for (int64_t i = 0; i < blocks; ++i) sw += partial[i * 2 * N + n], sb += partial[i * 2 * N + N + n];
  if (dw) dw[n] = from_acc<T>(sw);
  if (db) db[n] = from_acc<T>(sb);
}

inline bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace norm_detail

// variant: the vector width (elements per 16-byte load, or 1).
template <typename T>
LaunchPlan layer_norm_forward_plan(int64_t M, int64_t N, bool aligned) {
  using namespace norm_detail;
  LaunchPlan plan;
  plan.variant = (aligned && N % kVec<T> == 0) ? kVec<T> : 1;
  plan.block = dim3(32 * kFwdWarps, 1, 1);
  plan.grid = dim3(unsigned((M + kFwdWarps - 1) / kFwdWarps > 0 ? (M + kFwdWarps - 1) / kFwdWarps : 1), 1, 1);
  plan.name = plan.variant > 1 ? "layer_norm_forward_vec" : "layer_norm_forward";
  return plan;
}

template <typename T>
void layer_norm_forward_launch(const LaunchPlan& plan, int64_t M, int64_t N, const T* x, const T* res, T* sum_out,
                               const T* w, const T* b, double eps, T* y, gemm_acc_t<T>* mean,
                               gemm_acc_t<T>* rstd, cudaStream_t stream) {
  using namespace norm_detail;
  using Acc = gemm_acc_t<T>;
  if (M <= 0 || N <= 0) return;
  if (plan.variant > 1)
    LAUNCH((layer_norm_forward_kernel<T, kVec<T>, false>), plan.grid, plan.block, 0, stream, M, N, x, res, sum_out,
           w, b, Acc(eps), y, mean, rstd);
  else
    LAUNCH((layer_norm_forward_kernel<T, 1, false>), plan.grid, plan.block, 0, stream, M, N, x, res, sum_out, w, b,
           Acc(eps), y, mean, rstd);
}

// RMSNorm forward on layer_norm_forward_plan's plan; rstd: [M] or nullptr.
template <typename T>
void rms_norm_forward_launch(const LaunchPlan& plan, int64_t M, int64_t N, const T* x, const T* res, T* sum_out,
                             const T* w, double eps, T* y, gemm_acc_t<T>* rstd, cudaStream_t stream) {
  using namespace norm_detail;
  using Acc = gemm_acc_t<T>;
  if (M <= 0 || N <= 0) return;
  if (plan.variant > 1)
    LAUNCH((layer_norm_forward_kernel<T, kVec<T>, true>), plan.grid, plan.block, 0, stream, M, N, x, res, sum_out,
           w, static_cast<const T*>(nullptr), Acc(eps), y, static_cast<Acc*>(nullptr), rstd);
  else
    LAUNCH((layer_norm_forward_kernel<T, 1, true>), plan.grid, plan.block, 0, stream, M, N, x, res, sum_out, w,
           static_cast<const T*>(nullptr), Acc(eps), y, static_cast<Acc*>(nullptr), rstd);
}

// launch.grid.x blocks of launch.block.x threads (one per 16-byte vector of a row, 32..256),
// each taking rows_per_block consecutive rows (at most kMaxBlocks blocks);
// launch.workspace_bytes: the [grid, 2, N] partials (when dw or db is wanted);
// launch.smem_bytes: 2 N accumulators when they fit in 48 KB, else 0 (partials accumulate in the
// workspace).
struct LayerNormBackwardPlan {
  LaunchPlan launch;
  int vec = 1;
  int64_t rows_per_block = 1;
};

template <typename T>
LayerNormBackwardPlan layer_norm_backward_plan(int64_t M, int64_t N, bool aligned, bool param_grads) {
  using namespace norm_detail;
  using Acc = gemm_acc_t<T>;
  LayerNormBackwardPlan p;
  p.vec = (aligned && N % kVec<T> == 0) ? kVec<T> : 1;
  const int64_t vecs = (N + p.vec - 1) / p.vec;
  int64_t threads = (vecs + 31) / 32 * 32;
  threads = threads < 32 ? 32 : (threads > kBwdMaxThreads ? kBwdMaxThreads : threads);
  p.rows_per_block = M > kMaxBlocks ? (M + kMaxBlocks - 1) / kMaxBlocks : 1;
  const int64_t blocks = M > 0 ? (M + p.rows_per_block - 1) / p.rows_per_block : 0;
  p.launch.grid = dim3(unsigned(blocks > 0 ? blocks : 1), 1, 1);
  p.launch.block = dim3(unsigned(threads), 1, 1);
  p.launch.variant = p.vec;
  const size_t acc_bytes = size_t(2) * size_t(N) * sizeof(Acc);
  p.launch.smem_bytes = param_grads && acc_bytes <= kDefaultSmemBytes ? acc_bytes : 0;
  p.launch.workspace_bytes = param_grads ? size_t(blocks) * acc_bytes : 0;
  p.launch.name = p.vec > 1 ? "layer_norm_backward_vec" : "layer_norm_backward";
  return p;
}

// workspace: plan.launch.workspace_bytes (needed when dw or db is wanted and M > 0). mean
// nullptr: the RMSNorm backward (db must be nullptr).
template <typename T>
void layer_norm_backward_launch(const LayerNormBackwardPlan& p, int64_t M, int64_t N, const T* g, const T* x,
                                const gemm_acc_t<T>* mean, const gemm_acc_t<T>* rstd, const T* w, const T* ga,
                                T* dx, T* dw, T* db, gemm_acc_t<T>* workspace, cudaStream_t stream) {
  using namespace norm_detail;
  using Acc = gemm_acc_t<T>;
  if (N <= 0) return;
  const bool params = dw != nullptr || db != nullptr;
  const int64_t blocks = M > 0 ? p.launch.grid.x : 0;
  if (M > 0 && (dx || params)) {
    Acc* partial = params ? workspace : nullptr;
    const bool smem = params && p.launch.smem_bytes > 0;
    const size_t smem_bytes = smem ? p.launch.smem_bytes : 0;
    if (p.vec > 1)
      LAUNCH((layer_norm_backward_kernel<T, kVec<T>>), p.launch.grid, p.launch.block, smem_bytes, stream, M, N, g,
             x, mean, rstd, w, ga, dx, partial, p.rows_per_block, smem);
    else
      LAUNCH((layer_norm_backward_kernel<T, 1>), p.launch.grid, p.launch.block, smem_bytes, stream, M, N, g, x,
             mean, rstd, w, ga, dx, partial, p.rows_per_block, smem);
  }
  if (params)
    LAUNCH(layer_norm_param_grad_kernel<T>, dim3(unsigned((N + 255) / 256)), dim3(256), 0, stream, N, blocks,
           static_cast<const Acc*>(workspace), dw, db);
}

inline void layer_norm_instantiate_all_() {
  (void)&layer_norm_forward_launch<__half>;
  (void)&layer_norm_forward_launch<__nv_bfloat16>;
  (void)&layer_norm_forward_launch<float>;
  (void)&layer_norm_forward_launch<double>;
  (void)&layer_norm_backward_launch<__half>;
  (void)&layer_norm_backward_launch<__nv_bfloat16>;
  (void)&layer_norm_backward_launch<float>;
  (void)&layer_norm_backward_launch<double>;
  (void)&rms_norm_forward_launch<__half>;
  (void)&rms_norm_forward_launch<__nv_bfloat16>;
  (void)&rms_norm_forward_launch<float>;
  (void)&rms_norm_forward_launch<double>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
