/* Rotary position embedding (contracts/rotary.h), torch-free: y = rotate(x) or its transpose
   over the rows of a strided [B, H, T, D] tensor, y possibly x (in place). fp32 math (fp64 for
   double); each output one FMA over the other, rounded product (x1 c1 - (x2 s1)), as the CPU
   kernel rounds it.

   One warp per row, kWarps rows per block, blocks in a grid-stride loop over the B * H * T rows;
   lane l takes the pairs (j, j + R/2) for j = l, l + 32, ... (reads of both before the writes,
   so in place is safe), then the pass-through features R..D-1 when y is not x. */
#pragma once
#include "gemm.cuh"
#include "../../contracts/rotary.h"

namespace fusedops::FUSEDOPS_CUDA_NS {
namespace rotary_detail {

using gemm_detail::from_acc;
using gemm_detail::to_acc;

constexpr int kWarps = 4;
constexpr int64_t kMaxGrid = 8192;

// x * c + p in one rounding (the simulator: std::fma)
template <typename A>
__device__ __forceinline__ A fma_(A x, A c, A p) {
  if constexpr (std::is_same_v<A, float>) return __fmaf_rn(x, c, p);
  else return __fma_rn(x, c, p);
}

// a product rounded on its own: never contracted into a following add
template <typename A>
__device__ __forceinline__ A mul_rn(A a, A b) {
  if constexpr (std::is_same_v<A, float>) return __fmul_rn(a, b);
#ifdef CUDASIM
  else return a * b;  // the simulator: a host multiply
#else
  else return __dmul_rn(a, b);
#endif
}

template <typename T>
__global__ void __launch_bounds__(32 * kWarps)
    rotary_kernel(RotaryGeometry g, const T* x, T* y, const T* cos, const T* sin, bool inverse) {
  using Acc = gemm_acc_t<T>;
  const int lane = int(threadIdx.x) % 32;
  const int64_t rows = g.B * g.H * g.T, h = g.R / 2;
  for (int64_t r = int64_t(blockIdx.x) * kWarps + int(threadIdx.x) / 32; r < rows; r += int64_t(gridDim.x) * kWarps) {
    const int64_t b = r / (g.H * g.T), hd = (r / g.T) % g.H, t = r % g.T;
    const T* xr = x + b * g.xb + hd * g.xh + t * g.xt;
    T* yr = y + b * g.yb + hd * g.yh + t * g.yt;
    const T* c = cos + b * g.cb + t * g.ct;
    const T* s = sin + b * g.sb + t * g.st;
    for (int64_t j = lane; j < h; j += 32) {
      const Acc x1 = to_acc(xr[j]), x2 = to_acc(xr[h + j]);
      const Acc c1 = to_acc(c[j]), c2 = to_acc(c[h + j]), s1 = to_acc(s[j]), s2 = to_acc(s[h + j]);
      Acc y1, y2;
      if (!inverse) {
        y1 = fma_(x1, c1, -mul_rn(x2, s1));
        y2 = fma_(x2, c2, mul_rn(x1, s2));
      } else {
        y1 = fma_(x1, c1, mul_rn(x2, s2));
        y2 = fma_(x2, c2, -mul_rn(x1, s1));
      }
      yr[j] = from_acc<T>(y1);
      yr[h + j] = from_acc<T>(y2);
    }
    if (yr != xr)
      for (int64_t j = g.R + lane; j < g.D; j += 32) yr[j] = xr[j];
  }
}

}  // namespace rotary_detail

inline LaunchPlan rotary_plan(int64_t rows) {
  using namespace rotary_detail;
  LaunchPlan plan;
  const int64_t blocks = (rows + kWarps - 1) / kWarps;
  plan.grid = dim3(unsigned(blocks < 1 ? 1 : (blocks > kMaxGrid ? kMaxGrid : blocks)), 1, 1);
  plan.block = dim3(32 * kWarps, 1, 1);
  plan.name = "rotary";
  return plan;
}

template <typename T>
void rotary_launch(const LaunchPlan& plan, const RotaryGeometry& g, const T* x, T* y, const T* cos, const T* sin,
                   bool inverse, cudaStream_t stream) {
  using namespace rotary_detail;
  if (g.B * g.H * g.T <= 0 || g.D <= 0) return;
  LAUNCH(rotary_kernel<T>, plan.grid, plan.block, 0, stream, g, x, y, cos, sin, inverse);
}

inline void rotary_instantiate_all_() {
  (void)&rotary_launch<__half>;
  (void)&rotary_launch<__nv_bfloat16>;
  (void)&rotary_launch<float>;
  (void)&rotary_launch<double>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
