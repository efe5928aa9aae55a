/* Dropout, forward and backward, torch-free: y[i] = keep(i) ? x[i] * scale : 0 over n contiguous
   elements, keep(i) the counter-based hash of contracts/attention_rng.h at counter offset + i,
   as the CPU kernel (cpu/kernels/dropout.h): the same mask on both, and the backward (the same
   kernel on the incoming gradient) regenerates it. Grid-stride loop, one element per thread
   step; fp32 math (fp64 for double). */
#pragma once
#include "../../contracts/attention_rng.h"
#include "gemm.cuh"
#include "limits.cuh"

namespace fusedops::FUSEDOPS_CUDA_NS {
namespace dropout_detail {

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 8192;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(int64_t n, const T* x, T* y, gemm_acc_t<T> scale, uint64_t key, uint64_t thr, uint64_t offset) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const bool keep = attention_keep(key, offset + uint64_t(i), thr);
    y[i] = gemm_detail::from_acc<T>(keep ? gemm_detail::to_acc(x[i]) * scale : gemm_acc_t<T>(0));
  }
}

}  // namespace dropout_detail

inline LaunchPlan dropout_plan(int64_t n) {
  using namespace dropout_detail;
  LaunchPlan plan;
  plan.grid = dim3(grid_stride_blocks(n, kThreads, kMaxGrid), 1, 1);
  plan.block = dim3(kThreads, 1, 1);
  plan.name = "dropout";
  return plan;
}

template <typename T>
void dropout_launch(const LaunchPlan& plan, int64_t n, const T* x, T* y, double p, uint64_t seed, uint64_t offset,
                    cudaStream_t stream) {
  using namespace dropout_detail;
  if (n <= 0) return;
  const gemm_acc_t<T> scale = p >= 1.0 ? gemm_acc_t<T>(0) : gemm_acc_t<T>(1.0 / (1.0 - p));
  LAUNCH((dropout_kernel<T>), plan.grid, plan.block, 0, stream, n, x, y, scale, attention_seed_key(seed),
         attention_drop_threshold(p), offset);
}

inline void dropout_instantiate_all_() {
  (void)&dropout_launch<__half>;
  (void)&dropout_launch<__nv_bfloat16>;
  (void)&dropout_launch<float>;
  (void)&dropout_launch<double>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
