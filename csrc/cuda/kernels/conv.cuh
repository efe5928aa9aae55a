/* Convolution and max pooling on CUDA, torch-free. NCHW contiguous tensors, weights
   [K, C / groups, R, S]; math in float (double for double).

   conv2d forward: implicit GEMM per group, y[Kg, N*OH*OW] = w[Kg, Cg*R*S] @ im2col(x): 64 x 64
   output tiles, 16-deep K slices; the im2col tile is gathered into shared memory straight from
   x (zero padding, stride, dilation), never stored. fp32/fp64: 256 threads, 4 x 4 outputs
   each (SIMT); fp16/bf16: tensor cores (mma.sync m16n8k16, fp32 accumulation).
   Backward input (strides other than 1; the binding runs stride 1 as the forward of the
   transposed convolution): one thread per input element gathering the outputs it reached (no
   atomics). The weight gradient is the forward kernel with batch and channels exchanged (see
   cuda/conv_impl.h); the bias gradient one block per channel reducing over batch and pixels in
   a fixed order (deterministic). Max pooling: forward one thread per output (NaN propagates,
   first maximum wins), backward one thread per input element collecting the outputs whose
   index points at it. */
#pragma once
#include <cmath>
#include <cstring>

#include "gemm.cuh"
#include "../../contracts/conv.h"

namespace fusedops::FUSEDOPS_CUDA_NS {
namespace conv_detail {

using gemm_detail::from_acc;
using gemm_detail::to_acc;

__host__ __device__ inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;

// The forward's (output-channel tile, group) pair, tile-major within a group, numbered over
// grid.y and grid.z (see conv2d_forward_plan), in 32-bit arithmetic (at most 65535^2); blocks
// past the last pair have none.
__device__ __forceinline__ int64_t forward_tile() { return int64_t(blockIdx.z * gridDim.y + blockIdx.y); }

template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv2d_forward_kernel(Conv2dShape s, const T* x, const T* w, const T* bias, T* y) {
  using Acc = gemm_acc_t<T>;
  SMEM_ARRAY(Acc, As, kBK, kBM);
  SMEM_ARRAY(Acc, Bs, kBK, kBN);
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, P = s.OH * s.OW, RS = s.R * s.S;
  const int64_t CRS = Cg * RS, cols = s.N * P, mt = (Kg + kBM - 1) / kBM, tile = forward_tile();
  if (tile >= mt * s.groups) return;  // uniform across the block
  const int64_t g = tile / mt, m0 = tile % mt * kBM, j0 = int64_t(blockIdx.x) * kBN;
  const T* wg = w + g * Kg * CRS;
  Acc acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);
  for (int64_t k0 = 0; k0 < CRS; k0 += kBK) {
    for (int q = 0; q < kBM * kBK / kThreads; ++q) {
      const int e = tid + q * kThreads, m = e / kBK, kk = e % kBK;
      const int64_t row = m0 + m, col = k0 + kk;
      As[kk][m] = row < Kg && col < CRS ? to_acc(wg[row * CRS + col]) : Acc(0);
    }
    for (int q = 0; q < kBN * kBK / kThreads; ++q) {
      const int e = tid + q * kThreads, kk = e / kBN, j = e % kBN;
      const int64_t col = j0 + j, crs = k0 + kk;
      Acc v = Acc(0);
      if (col < cols && crs < CRS) {
        const int64_t n = col / P, pix = col % P, oh = pix / s.OW, ow = pix % s.OW;
        const int64_t c = crs / RS, r = (crs % RS) / s.S, q2 = crs % s.S;
        const int64_t ih = oh * s.sh - s.ph + r * s.dh, iw = ow * s.sw - s.pw + q2 * s.dw;
        if (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W)
          v = to_acc(x[((n * s.C + g * Cg + c) * s.H + ih) * s.W + iw]);
      }
      Bs[kk][j] = v;
    }
    __syncthreads();
    for (int kk = 0; kk < kBK; ++kk) {
      Acc a[4], b[4];
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= Kg) continue;
    const Acc b = bias ? to_acc(bias[g * Kg + m]) : Acc(0);
    for (int j = 0; j < 4; ++j) {
      const int64_t col = j0 + tx + 16 * j;
      if (col >= cols) continue;
      const int64_t n = col / P, pix = col % P;
      y[(n * s.K + g * Kg + m) * P + pix] = from_acc<T>(acc[i][j] + b);
    }
  }
}

// fp16 / bf16: the same tiles on tensor cores. 8 warps as 4 (rows) x 2 (columns), each warp
// 16 x 32 outputs = four m16n8k16 products per 16-deep slice, fragments read from shared
// memory in the documented mma layout (row g / g + 8, k pairs 2t, 2t + 8; g = lane / 4,
// t = lane % 4). Both tiles are stored k-contiguous so a fragment register is one 32-bit read.
constexpr int kPadK = kBK + 8;  // row stride of the k-contiguous tiles (16-bit elements)

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const std::uint32_t (&a)[4],
                                         const std::uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>) mma_m16n8k16_f16(d, a, b, d);
  else mma_m16n8k16_bf16(d, a, b, d);
}

// Two adjacent 16-bit elements as one 32-bit fragment register: one aligned load (memcpy, as
// the host compiler's strict aliasing forbids reading them through a uint32_t pointer).
template <typename T>
__device__ __forceinline__ std::uint32_t pair_bits(const T* p) {
  std::uint32_t r;
  memcpy(&r, __builtin_assume_aligned(p, 4), 4);
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv2d_forward_tc_kernel(Conv2dShape s, const T* x, const T* w, const T* bias, T* y) {
  SMEM_ARRAY(T, As, kBM, kPadK);  // [m][k]
  SMEM_ARRAY(T, Bs, kBN, kPadK);  // [column][k]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % 4, wn = warp / 4, g = lane / 4, t = lane % 4;
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, P = s.OH * s.OW, RS = s.R * s.S;
  const int64_t CRS = Cg * RS, cols = s.N * P, mt = (Kg + kBM - 1) / kBM, tile = forward_tile();
  if (tile >= mt * s.groups) return;  // uniform across the block
  const int64_t grp = tile / mt, m0 = tile % mt * kBM, j0 = int64_t(blockIdx.x) * kBN;
  const T* wg = w + grp * Kg * CRS;
  const T zero = from_acc<T>(0.f);
  float acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  for (int64_t k0 = 0; k0 < CRS; k0 += kBK) {
    for (int q = 0; q < kBM * kBK / kThreads; ++q) {
      const int e = tid + q * kThreads, m = e / kBK, kk = e % kBK;
      const int64_t row = m0 + m, col = k0 + kk;
      As[m][kk] = row < Kg && col < CRS ? wg[row * CRS + col] : zero;
    }
    for (int q = 0; q < kBN * kBK / kThreads; ++q) {
      const int e = tid + q * kThreads, kk = e / kBN, j = e % kBN;
      const int64_t col = j0 + j, crs = k0 + kk;
      T v = zero;
      if (col < cols && crs < CRS) {
        const int64_t n = col / P, pix = col % P, oh = pix / s.OW, ow = pix % s.OW;
        const int64_t c = crs / RS, r = (crs % RS) / s.S, q2 = crs % s.S;
        const int64_t ih = oh * s.sh - s.ph + r * s.dh, iw = ow * s.sw - s.pw + q2 * s.dw;
        if (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W)
          v = x[((n * s.C + grp * Cg + c) * s.H + ih) * s.W + iw];
      }
      Bs[j][kk] = v;
    }
    __syncthreads();
    const int ar = wm * 16 + g;
    std::uint32_t a[4];
    a[0] = pair_bits(&As[ar][2 * t]);
    a[1] = pair_bits(&As[ar + 8][2 * t]);
    a[2] = pair_bits(&As[ar][2 * t + 8]);
    a[3] = pair_bits(&As[ar + 8][2 * t + 8]);
    for (int nt = 0; nt < 4; ++nt) {
      const int bc = wn * 32 + nt * 8 + g;
      std::uint32_t b[2];
      b[0] = pair_bits(&Bs[bc][2 * t]);
      b[1] = pair_bits(&Bs[bc][2 * t + 8]);
      mma16816<T>(acc[nt], a, b);
    }
    __syncthreads();
  }
  for (int nt = 0; nt < 4; ++nt)
    for (int h = 0; h < 4; ++h) {
      const int64_t m = m0 + wm * 16 + g + (h >= 2 ? 8 : 0);
      const int64_t col = j0 + wn * 32 + nt * 8 + 2 * t + (h & 1);
      if (m >= Kg || col >= cols) continue;
      const float b = bias ? to_acc(bias[grp * Kg + m]) : 0.f;
      const int64_t n = col / P, pix = col % P;
      y[(n * s.K + grp * Kg + m) * P + pix] = from_acc<T>(acc[nt][h] + b);
    }
}

// gx[n, c, ih, iw] = sum over (k in c's group, r, q) with an output position that reads it.
template <typename T>
__global__ void __launch_bounds__(256)
    conv2d_backward_input_kernel(Conv2dShape s, const T* gy, const T* w, T* gx) {
  using Acc = gemm_acc_t<T>;
  const int64_t total = s.N * s.C * s.H * s.W;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= total) return;
  const int64_t iw = e % s.W, ih = (e / s.W) % s.H, c = (e / (s.W * s.H)) % s.C,
                n = e / (s.W * s.H * s.C);
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, g = c / Cg, cl = c % Cg;
  const int64_t P = s.OH * s.OW, RS = s.R * s.S;
  Acc acc = Acc(0);
  for (int64_t r = 0; r < s.R; ++r) {
    const int64_t th = ih + s.ph - r * s.dh;
    if (th < 0 || th % s.sh != 0 || th / s.sh >= s.OH) continue;
    const int64_t oh = th / s.sh;
    for (int64_t q = 0; q < s.S; ++q) {
      const int64_t tw = iw + s.pw - q * s.dw;
      if (tw < 0 || tw % s.sw != 0 || tw / s.sw >= s.OW) continue;
      const int64_t ow = tw / s.sw;
      for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k)
        acc += to_acc(w[(k * Cg + cl) * RS + r * s.S + q]) *
               to_acc(gy[(n * s.K + k) * P + oh * s.OW + ow]);
    }
  }
  gx[e] = from_acc<T>(acc);
}

template <typename Acc>
__device__ Acc block_sum(Acc v, Acc* red) {
  const int tid = threadIdx.x;
  red[tid] = v;
  __syncthreads();
  for (int h = 128; h > 0; h >>= 1) {
    if (tid < h) red[tid] += red[tid + h];
    __syncthreads();
  }
  return red[0];
}

template <typename T>
__global__ void __launch_bounds__(256) conv2d_backward_bias_kernel(Conv2dShape s, const T* gy, T* gb) {
  using Acc = gemm_acc_t<T>;
  SMEM_ARRAY(Acc, red, 256);
  const int64_t P = s.OH * s.OW, k = blockIdx.x;
  Acc acc = Acc(0);
  for (int64_t j = threadIdx.x; j < s.N * P; j += 256)
    acc += to_acc(gy[((j / P) * s.K + k) * P + j % P]);
  const Acc total = block_sum(acc, &red[0]);
  if (threadIdx.x == 0) gb[k] = from_acc<T>(total);
}

template <typename T>
__global__ void __launch_bounds__(256)
    max_pool2d_forward_kernel(Pool2dShape s, const T* x, T* y, int64_t* idx) {
  using Acc = gemm_acc_t<T>;
  const int64_t P = s.OH * s.OW, total = s.planes * P;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= total) return;
  const int64_t p = e / P, oh = (e % P) / s.OW, ow = e % s.OW;
  const T* xp = x + p * s.H * s.W;
  int64_t h0 = oh * s.sh - s.ph, w0 = ow * s.sw - s.pw;
  const int64_t h1 = imin(h0 + (s.kh - 1) * s.dh + 1, s.H), w1 = imin(w0 + (s.kw - 1) * s.dw + 1, s.W);
  while (h0 < 0) h0 += s.dh;
  while (w0 < 0) w0 += s.dw;
  int64_t best = h0 * s.W + w0;
  T bestv = T{};
  bool any = false;
  Acc m = -INFINITY;
  for (int64_t ih = h0; ih < h1; ih += s.dh)
    for (int64_t iw = w0; iw < w1; iw += s.dw) {
      const T raw = xp[ih * s.W + iw];
      const Acc v = to_acc(raw);
      if (v > m || v != v) m = v, best = ih * s.W + iw, bestv = raw, any = true;
    }
  y[e] = any ? bestv : from_acc<T>(m);
  idx[e] = best;
}

// gx[p, i] = sum of gy[p, o] over the outputs o whose window holds i and whose index is i.
template <typename T>
__global__ void __launch_bounds__(256)
    max_pool2d_backward_kernel(Pool2dShape s, const T* gy, const int64_t* idx, T* gx) {
  using Acc = gemm_acc_t<T>;
  const int64_t HW = s.H * s.W, total = s.planes * HW, P = s.OH * s.OW;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= total) return;
  const int64_t p = e / HW, pos = e % HW, ih = pos / s.W, iw = pos % s.W;
  // outputs whose window rows span ih: oh * sh - ph <= ih <= oh * sh - ph + (kh - 1) * dh
  const int64_t span_h = (s.kh - 1) * s.dh, span_w = (s.kw - 1) * s.dw;
  int64_t oh0 = ih + s.ph - span_h;
  oh0 = oh0 <= 0 ? 0 : (oh0 + s.sh - 1) / s.sh;
  const int64_t oh1 = imin((ih + s.ph) / s.sh, s.OH - 1);
  int64_t ow0 = iw + s.pw - span_w;
  ow0 = ow0 <= 0 ? 0 : (ow0 + s.sw - 1) / s.sw;
  const int64_t ow1 = imin((iw + s.pw) / s.sw, s.OW - 1);
  Acc acc = Acc(0);
  for (int64_t oh = oh0; oh <= oh1; ++oh)
    for (int64_t ow = ow0; ow <= ow1; ++ow) {
      const int64_t o = p * P + oh * s.OW + ow;
      if (idx[o] == pos) acc += to_acc(gy[o]);
    }
  gx[e] = from_acc<T>(acc);
}

inline dim3 blocks_for(int64_t n, int per) { return dim3(unsigned((n + per - 1) / per)); }

}  // namespace conv_detail

// grid.x: column tiles; the (output-channel tile, group) pairs fill grid.y up to max_y (CUDA's
// limit; tests pass less) and go on along grid.z, so depthwise layers of more than 65535
// channels fit. There are at most K pairs, and the bindings allow 2^31 - 1 channels (< 65535^2).
inline LaunchPlan conv2d_forward_plan(const Conv2dShape& s, int64_t max_y = kMaxGridYZ) {
  using namespace conv_detail;
  LaunchPlan plan;
  const int64_t cols = s.N * s.OH * s.OW, Kg = s.K / s.groups;
  const int64_t pairs = (Kg + kBM - 1) / kBM * s.groups;
  const int64_t z = (pairs + max_y - 1) / max_y, y = z > 0 ? (pairs + z - 1) / z : 0;  // fewest idle blocks
  plan.grid = dim3(unsigned((cols + kBN - 1) / kBN), unsigned(y), unsigned(z));
  plan.block = dim3(kThreads);
  plan.name = "conv2d_forward";
  return plan;
}

template <typename T>
void conv2d_forward_launch(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y,
                           cudaStream_t st, int64_t max_y = kMaxGridYZ) {
  using namespace conv_detail;
  if (s.N * s.OH * s.OW == 0 || s.K == 0) return;
  const LaunchPlan plan = conv2d_forward_plan(s, max_y);
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>)
    LAUNCH((conv2d_forward_tc_kernel<T>), plan.grid, plan.block, 0, st, s, x, w, bias, y);
  else
    LAUNCH((conv2d_forward_kernel<T>), plan.grid, plan.block, 0, st, s, x, w, bias, y);
}

template <typename T>
void conv2d_backward_input_launch(const Conv2dShape& s, const T* gy, const T* w, T* gx,
                                  cudaStream_t st) {
  using namespace conv_detail;
  const int64_t total = s.N * s.C * s.H * s.W;
  if (total == 0) return;
  LAUNCH((conv2d_backward_input_kernel<T>), blocks_for(total, 256), dim3(256), 0, st, s, gy, w, gx);
}

template <typename T>
void conv2d_backward_bias_launch(const Conv2dShape& s, const T* gy, T* gb, cudaStream_t st) {
  using namespace conv_detail;
  if (s.K == 0) return;
  LAUNCH((conv2d_backward_bias_kernel<T>), dim3(unsigned(s.K)), dim3(256), 0, st, s, gy, gb);
}

template <typename T>
void max_pool2d_forward_launch(const Pool2dShape& s, const T* x, T* y, int64_t* idx,
                               cudaStream_t st) {
  using namespace conv_detail;
  const int64_t total = s.planes * s.OH * s.OW;
  if (total == 0) return;
  LAUNCH((max_pool2d_forward_kernel<T>), blocks_for(total, 256), dim3(256), 0, st, s, x, y, idx);
}

template <typename T>
void max_pool2d_backward_launch(const Pool2dShape& s, const T* gy, const int64_t* idx, T* gx,
                                cudaStream_t st) {
  using namespace conv_detail;
  const int64_t total = s.planes * s.H * s.W;
  if (total == 0) return;
  LAUNCH((max_pool2d_backward_kernel<T>), blocks_for(total, 256), dim3(256), 0, st, s, gy, idx, gx);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
