/* Activations (relu, sigmoid, tanh, gelu, gelu_tanh) and softmax / log_softmax over the last
   dimension, forward and backward, torch-free. fp32 math (fp64 for double).

   pointwise  grid-stride loop over 16-byte vectors (when n and the pointers allow), the n % V
              tail elements by the first threads. GELU's backward recomputes from the input.
   softmax    one warp per row, 4 rows per block; three passes over the row (the later ones hit
              L1/L2): the maximum, the sum of exp(x - max), the output (exponentials recomputed,
              so 16-bit outputs are rounded once). A NaN in the row, or an infinite maximum,
              gives NaN through the sum, as torch. Backward: one pass for the row sum
              (sum g y, or sum g for log_softmax), one for dx.
   swiglu     silu(a) * b over M rows of N (each operand at its own row stride, so the halves of
              one projection are read in place): blocks take rows in a grid-stride loop, the
              threads of a block stride over the row. Backward recomputes silu from a. */
#pragma once
#include "gemm.cuh"
#include "norm.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS {

namespace activation_detail {

using gemm_detail::act_grad;
using gemm_detail::apply_act;
using gemm_detail::exp_;
using gemm_detail::from_acc;
using gemm_detail::to_acc;
using gemm_detail::tanh_;
using norm_detail::kVec;
using norm_detail::load_pack;
using norm_detail::store_pack;

constexpr int kThreads = 256;
constexpr int kSoftmaxWarps = 4;
constexpr int64_t kMaxGrid = 8192;

template <typename A>
__device__ __forceinline__ A log_(A x) {
  if constexpr (std::is_same_v<A, float>) return logf(x);
  else return log(x);
}

template <typename A>
__device__ __forceinline__ A forward(Pointwise f, A x) {
  switch (f) {
    case Pointwise::relu: return apply_act(x, Activation::relu);
    case Pointwise::sigmoid: return A(1) / (A(1) + exp_(-x));
    case Pointwise::tanh: return tanh_(x);
    case Pointwise::gelu: return apply_act(x, Activation::gelu);
    default: return apply_act(x, Activation::gelu_tanh);
  }
}

// s: the input for gelu, else the output.
template <typename A>
__device__ __forceinline__ A backward(Pointwise f, A g, A s) {
  switch (f) {
    case Pointwise::relu: return (s > A(0) || s != s) ? g : A(0);  // as torch's threshold_backward
    case Pointwise::sigmoid: return g * (s * (A(1) - s));
    case Pointwise::tanh: return g * (A(1) - s * s);
    case Pointwise::gelu: return g * act_grad(s, Activation::gelu);
    default: return g * act_grad(s, Activation::gelu_tanh);
  }
}

// out = f(a) (forward, b == nullptr) or backward(f, a, b) elementwise over n.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    pointwise_kernel(int64_t n, Pointwise f, const T* a, const T* b, T* out) {
  using Acc = gemm_acc_t<T>;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t nv = n / V;
  for (int64_t i = tid; i < nv; i += stride) {
    Acc av[V], bv[V];
    load_pack<T, V>(a + i * V, av);
    if (b) {
      load_pack<T, V>(b + i * V, bv);
      for (int k = 0; k < V; ++k) av[k] = backward(f, av[k], bv[k]);
    } else {
      for (int k = 0; k < V; ++k) av[k] = forward(f, av[k]);
    }
    store_pack<T, V>(out + i * V, av);
  }
  const int64_t i = nv * V + tid;
  if (i < n) {
    const Acc av = gemm_detail::to_acc(a[i]);
    out[i] = gemm_detail::from_acc<T>(b ? backward(f, av, gemm_detail::to_acc(b[i])) : forward(f, av));
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(32 * kSoftmaxWarps)
    softmax_forward_kernel(int64_t M, int64_t D, const T* x, T* y, bool log) {
  using Acc = gemm_acc_t<T>;
  const int lane = int(threadIdx.x) % 32;
  const int64_t row = int64_t(blockIdx.x) * kSoftmaxWarps + int(threadIdx.x) / 32;
  if (row >= M) return;  // whole warps
  const T* xr = x + row * D;
  T* yr = y + row * D;
  Acc v[V];
  Acc m = -INFINITY;
  for (int64_t j = int64_t(lane) * V; j < D; j += 32 * V) {
    load_pack<T, V>(xr + j, v);
    for (int k = 0; k < V; ++k) m = v[k] > m ? v[k] : m;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const Acc other = __shfl_xor_sync(0xffffffffu, m, o);
    m = other > m ? other : m;
  }
  Acc s = 0;  // NaN when the row holds NaN (skipped by the comparisons above) or m is infinite
  for (int64_t j = int64_t(lane) * V; j < D; j += 32 * V) {
    load_pack<T, V>(xr + j, v);
    for (int k = 0; k < V; ++k) s += exp_(v[k] - m);
  }
  s = norm_detail::warp_sum(s);
  const Acc ls = log_(s), inv = Acc(1) / s;
  for (int64_t j = int64_t(lane) * V; j < D; j += 32 * V) {
    load_pack<T, V>(xr + j, v);
    for (int k = 0; k < V; ++k) v[k] = log ? (v[k] - m) - ls : exp_(v[k] - m) * inv;
    store_pack<T, V>(yr + j, v);
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(32 * kSoftmaxWarps)
    softmax_backward_kernel(int64_t M, int64_t D, const T* g, const T* y, T* dx, bool log) {
  using Acc = gemm_acc_t<T>;
  const int lane = int(threadIdx.x) % 32;
  const int64_t row = int64_t(blockIdx.x) * kSoftmaxWarps + int(threadIdx.x) / 32;
  if (row >= M) return;
  const T* gr = g + row * D;
  const T* yr = y + row * D;
  Acc gv[V], yv[V];
  Acc s = 0;
  for (int64_t j = int64_t(lane) * V; j < D; j += 32 * V) {
    load_pack<T, V>(gr + j, gv);
    if (!log) load_pack<T, V>(yr + j, yv);
    for (int k = 0; k < V; ++k) s += log ? gv[k] : gv[k] * yv[k];
  }
  s = norm_detail::warp_sum(s);
  for (int64_t j = int64_t(lane) * V; j < D; j += 32 * V) {
    load_pack<T, V>(gr + j, gv);
    load_pack<T, V>(yr + j, yv);
    for (int k = 0; k < V; ++k) gv[k] = log ? gv[k] - exp_(yv[k]) * s : yv[k] * (gv[k] - s);
    store_pack<T, V>(dx + row * D + j, gv);
  }
}

// grid-stride over rows; y: [M, N] contiguous.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_kernel(int64_t M, int64_t N, const T* a, int64_t lda, const T* b, int64_t ldb, T* y) {
  using Acc = gemm_acc_t<T>;
  for (int64_t i = blockIdx.x; i < M; i += gridDim.x)
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
      const Acc av = to_acc(a[i * lda + j]);
      const Acc sg = Acc(1) / (Acc(1) + exp_(-av));
      y[i * N + j] = from_acc<T>(av * sg * to_acc(b[i * ldb + j]));
    }
}

// da = g b sig (1 + a (1 - sig)), db = g a sig; da, db: [M, N] contiguous or nullptr.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(int64_t M, int64_t N, const T* g, int64_t ldg, const T* a, int64_t lda, const T* b,
                           int64_t ldb, T* da, T* db) {
  using Acc = gemm_acc_t<T>;
  for (int64_t i = blockIdx.x; i < M; i += gridDim.x)
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
      const Acc gv = to_acc(g[i * ldg + j]), av = to_acc(a[i * lda + j]);
      const Acc sg = Acc(1) / (Acc(1) + exp_(-av));
      if (db) db[i * N + j] = from_acc<T>(gv * (av * sg));
      if (da) da[i * N + j] = from_acc<T>(gv * to_acc(b[i * ldb + j]) * (sg * (av * (Acc(1) - sg) + Acc(1))));
    }
}

}  // namespace activation_detail

// variant: the vector width (elements per 16-byte load, or 1).
template <typename T>
LaunchPlan pointwise_plan(int64_t n, bool aligned) {
  using namespace activation_detail;
  LaunchPlan plan;
  plan.variant = aligned ? kVec<T> : 1;
  const int64_t vecs = n / plan.variant + 1;
  plan.grid = dim3(grid_stride_blocks(vecs, kThreads, kMaxGrid), 1, 1);
  plan.block = dim3(kThreads, 1, 1);
  plan.name = plan.variant > 1 ? "pointwise_vec" : "pointwise";
  return plan;
}

// saved == nullptr: y = f(x); else dx = g * f'(saved) with x = g.
template <typename T>
void pointwise_launch(const LaunchPlan& plan, int64_t n, Pointwise f, const T* x_or_g, const T* saved, T* out,
                      cudaStream_t stream) {
  using namespace activation_detail;
  if (n <= 0) return;
  if (plan.variant > 1)
    LAUNCH((pointwise_kernel<T, kVec<T>>), plan.grid, plan.block, 0, stream, n, f, x_or_g, saved, out);
  else
    LAUNCH((pointwise_kernel<T, 1>), plan.grid, plan.block, 0, stream, n, f, x_or_g, saved, out);
}

template <typename T>
LaunchPlan softmax_plan(int64_t M, int64_t D, bool aligned) {
  using namespace activation_detail;
  LaunchPlan plan;
  plan.variant = (aligned && D % kVec<T> == 0) ? kVec<T> : 1;
  const int64_t blocks = (M + kSoftmaxWarps - 1) / kSoftmaxWarps;
  plan.grid = dim3(unsigned(blocks > 0 ? blocks : 1), 1, 1);
  plan.block = dim3(32 * kSoftmaxWarps, 1, 1);
  plan.name = plan.variant > 1 ? "softmax_vec" : "softmax";
  return plan;
}

// y = (log_)softmax(x) over rows of D; with g: dx from (g, y).
template <typename T>
void softmax_forward_launch(const LaunchPlan& plan, int64_t M, int64_t D, const T* x, T* y, bool log,
                            cudaStream_t stream) {
  using namespace activation_detail;
  if (M <= 0 || D <= 0) return;
  if (plan.variant > 1)
    LAUNCH((softmax_forward_kernel<T, kVec<T>>), plan.grid, plan.block, 0, stream, M, D, x, y, log);
  else
    LAUNCH((softmax_forward_kernel<T, 1>), plan.grid, plan.block, 0, stream, M, D, x, y, log);
}

template <typename T>
void softmax_backward_launch(const LaunchPlan& plan, int64_t M, int64_t D, const T* g, const T* y, T* dx, bool log,
                             cudaStream_t stream) {
  using namespace activation_detail;
  if (M <= 0 || D <= 0) return;
  if (plan.variant > 1)
    LAUNCH((softmax_backward_kernel<T, kVec<T>>), plan.grid, plan.block, 0, stream, M, D, g, y, dx, log);
  else
    LAUNCH((softmax_backward_kernel<T, 1>), plan.grid, plan.block, 0, stream, M, D, g, y, dx, log);
}

template <typename T>
LaunchPlan swiglu_plan(int64_t M) {
  using namespace activation_detail;
  LaunchPlan plan;
  plan.grid = dim3(unsigned(M < 1 ? 1 : (M > kMaxGrid ? kMaxGrid : M)), 1, 1);
  plan.block = dim3(kThreads, 1, 1);
  plan.name = "swiglu";
  return plan;
}

template <typename T>
void swiglu_forward_launch(const LaunchPlan& plan, int64_t M, int64_t N, const T* a, int64_t lda, const T* b,
                           int64_t ldb, T* y, cudaStream_t stream) {
  using namespace activation_detail;
  if (M <= 0 || N <= 0) return;
  LAUNCH(swiglu_forward_kernel<T>, plan.grid, plan.block, 0, stream, M, N, a, lda, b, ldb, y);
}

template <typename T>
void swiglu_backward_launch(const LaunchPlan& plan, int64_t M, int64_t N, const T* g, int64_t ldg, const T* a,
                            int64_t lda, const T* b, int64_t ldb, T* da, T* db, cudaStream_t stream) {
  using namespace activation_detail;
  if (M <= 0 || N <= 0 || (!da && !db)) return;
  LAUNCH(swiglu_backward_kernel<T>, plan.grid, plan.block, 0, stream, M, N, g, ldg, a, lda, b, ldb, da, db);
}

inline void activation_instantiate_all_() {
  (void)&swiglu_forward_launch<__half>;
  (void)&swiglu_forward_launch<__nv_bfloat16>;
  (void)&swiglu_forward_launch<float>;
  (void)&swiglu_forward_launch<double>;
  (void)&swiglu_backward_launch<__half>;
  (void)&swiglu_backward_launch<__nv_bfloat16>;
  (void)&swiglu_backward_launch<float>;
  (void)&swiglu_backward_launch<double>;
  (void)&pointwise_launch<__half>;
  (void)&pointwise_launch<__nv_bfloat16>;
  (void)&pointwise_launch<float>;
  (void)&pointwise_launch<double>;
  (void)&softmax_forward_launch<__half>;
  (void)&softmax_forward_launch<__nv_bfloat16>;
  (void)&softmax_forward_launch<float>;
  (void)&softmax_forward_launch<double>;
  (void)&softmax_backward_launch<__half>;
  (void)&softmax_backward_launch<__nv_bfloat16>;
  (void)&softmax_backward_launch<float>;
  (void)&softmax_backward_launch<double>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
