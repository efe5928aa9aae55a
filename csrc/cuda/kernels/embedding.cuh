/* Embedding, forward and backward, torch-free. Indices are checked by the binding first.

   forward   grid-stride loop over the n * D outputs: y[t, j] = w[idx[t] * ldw + j].
   backward  deterministic, no atomics: block (rb, cb) owns rows [rb R, rb R + R) and columns
             [cb B, cb B + B) of dw (R = 32 rows, B = 128 threads, one column each). Every
             thread walks all n indices in token order and adds g[t, its column] into its own
             shared-memory slot of the token's row when the row is the block's; thread 0 counts
             the rows' tokens (scale_grad_by_freq). So each element of dw is the sum of its
             tokens in token order, as on the CPU: the same bits for fp32 and fp64. The indices
             are read once per block (ceil(V / R) * ceil(D / B) blocks); a sorted-bucket variant
             would read them once in all, and is the next step when a GPU benchmark asks. */
#pragma once
#include "gemm.cuh"
#include "limits.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS {
namespace embedding_detail {

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 8192;
constexpr int kRows = 32;
constexpr int kCols = 128;

template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    embedding_forward_kernel(int64_t n, int64_t D, const I* idx, const T* w, int64_t ldw, T* y) {
  const int64_t total = n * D, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += stride) {
    const int64_t t = e / D, j = e - t * D;
    y[e] = w[int64_t(idx[t]) * ldw + j];
  }
}

template <typename T, typename I>
__global__ void __launch_bounds__(kCols)
    embedding_backward_kernel(int64_t n, int64_t V, int64_t D, const I* idx, const T* g, int64_t padding_idx,
                              bool scale_by_freq, T* dw) {
  using Acc = gemm_acc_t<T>;
  SMEM_ARRAY(Acc, acc, kRows, kCols);
  SMEM_ARRAY(int64_t, count, kRows);
  const int tid = int(threadIdx.x);
  const int64_t r0 = int64_t(blockIdx.x) * kRows, col = int64_t(blockIdx.y) * kCols + tid;
  for (int r = 0; r < kRows; ++r) acc[r][tid] = Acc(0);
  if (tid < kRows) count[tid] = 0;
  __syncthreads();
  for (int64_t t = 0; t < n; ++t) {
    const int64_t r = int64_t(idx[t]) - r0;
    if (r < 0 || r >= kRows) continue;
    if (col < D) acc[r][tid] += gemm_detail::to_acc(g[t * D + col]);
    if (tid == 0) ++count[r];
  }
  __syncthreads();
  if (col >= D) return;
  for (int r = 0; r < kRows && r0 + r < V; ++r) {
    const int64_t v = r0 + r;
    Acc a = v == padding_idx ? Acc(0) : acc[r][tid];
    if (scale_by_freq && count[r] > 0) a *= Acc(1) / Acc(count[r]);
    dw[v * D + col] = gemm_detail::from_acc<T>(a);
  }
}

}  // namespace embedding_detail

inline LaunchPlan embedding_forward_plan(int64_t n, int64_t D) {
  using namespace embedding_detail;
  LaunchPlan plan;
  plan.grid = dim3(grid_stride_blocks(n * D, kThreads, kMaxGrid), 1, 1);
  plan.block = dim3(kThreads, 1, 1);
  plan.name = "embedding_forward";
  return plan;
}

template <typename T, typename I>
void embedding_forward_launch(const LaunchPlan& plan, int64_t n, int64_t D, const I* idx, const T* w, int64_t ldw,
                              T* y, cudaStream_t stream) {
  using namespace embedding_detail;
  if (n <= 0 || D <= 0) return;
  LAUNCH((embedding_forward_kernel<T, I>), plan.grid, plan.block, 0, stream, n, D, idx, w, ldw, y);
}

// grid: (row tiles, column tiles); the binding checks grid.y against kMaxGridYZ.
inline LaunchPlan embedding_backward_plan(int64_t V, int64_t D) {
  using namespace embedding_detail;
  LaunchPlan plan;
  plan.grid = dim3(unsigned((V + kRows - 1) / kRows), unsigned((D + kCols - 1) / kCols), 1);
  plan.block = dim3(kCols, 1, 1);
  plan.name = "embedding_backward";
  return plan;
}

template <typename T, typename I>
void embedding_backward_launch(const LaunchPlan& plan, int64_t n, int64_t V, int64_t D, const I* idx, const T* g,
                               int64_t padding_idx, bool scale_by_freq, T* dw, cudaStream_t stream) {
  using namespace embedding_detail;
  if (V <= 0 || D <= 0) return;
  LAUNCH((embedding_backward_kernel<T, I>), plan.grid, plan.block, 0, stream, n, V, D, idx, g, padding_idx,
         scale_by_freq, dw);
}

inline void embedding_instantiate_all_() {
  (void)&embedding_forward_launch<float, int64_t>;
  (void)&embedding_forward_launch<double, int64_t>;
  (void)&embedding_forward_launch<__half, int64_t>;
  (void)&embedding_forward_launch<__nv_bfloat16, int64_t>;
  (void)&embedding_backward_launch<float, int64_t>;
  (void)&embedding_backward_launch<double, int64_t>;
  (void)&embedding_backward_launch<__half, int64_t>;
  (void)&embedding_backward_launch<__nv_bfloat16, int64_t>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
