/* Small CUDA kernels that exercise the CUDA simulator (csrc/sim/cuda_sim.h) feature by
   feature; used only by tests/sim. They are ordinary CUDA and also compile with nvcc
   (tests/sim/nvcc_check.cu). Each kernel's comment says which simulator feature it covers.

   CUDASIM_SELFTEST_RACE adds a kernel with a missing __syncthreads (ThreadSanitizer must
   report it); CUDASIM_SELFTEST_OOB adds one that writes past the end of its output
   (AddressSanitizer must report it). */
#pragma once
#include "../../csrc/cuda/kernels/ptx.cuh"

#ifdef __CUDACC__
#include <mma.h>  // nvcuda::wmma (the simulator defines its own)
#endif

#include <cstdint>
#include <type_traits>

namespace sim_selftest {

// ---- warp helpers -------------------------------------------------------------------------
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return __shfl_sync(0xffffffffu, v, 0);
}

// ---- C[M,N] = A[M,K] B[K,N], all row-major fp32 ---------------------------------------------
// Shared-memory tiles (SMEM_ARRAY) + two __syncthreads per K step; 2-D blocks and grids.
template <int TILE>
__global__ void __launch_bounds__(TILE * TILE)
    sgemm_tiled(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
  SMEM_ARRAY(float, As, TILE, TILE);
  SMEM_ARRAY(float, Bs, TILE, TILE + 1);
  const int ty = threadIdx.y, tx = threadIdx.x;
  const int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
  float acc = 0.f;
  for (int k0 = 0; k0 < K; k0 += TILE) {
    As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.f;
    Bs[ty][tx] = (k0 + ty < K && col < N) ? B[(k0 + ty) * N + col] : 0.f;
    __syncthreads();
    for (int k = 0; k < TILE; ++k) acc += As[ty][k] * Bs[k][tx];
    __syncthreads();
  }
  if (row < M && col < N) C[row * N + col] = acc;
}

// ---- y[r, :] = softmax(x[r, :]), one warp per row -------------------------------------------
// Shuffle reductions; warps past the last row return early (barrier drop-out).
__global__ void softmax_rows(const float* __restrict__ x, float* __restrict__ y, int rows, int cols) {
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float* xr = x + (size_t)row * cols;
  float m = -INFINITY;
  for (int c = lane; c < cols; c += 32) m = fmaxf(m, xr[c]);
  m = warp_max(m);
  float s = 0.f;
  for (int c = lane; c < cols; c += 32) s += __expf(xr[c] - m);
  const float inv = __frcp_rn(warp_sum(s));
  for (int c = lane; c < cols; c += 32) y[(size_t)row * cols + c] = __expf(xr[c] - m) * inv;
}

// ---- *sum += sum(x), *positives += count(x > 0) -----------------------------------------------
// Dynamic shared memory (DYN_SMEM), tree reduction, __syncthreads_count, global atomics.
__global__ void block_reduce(const float* __restrict__ x, int n, float* sum, int* positives) {
  DYN_SMEM(float, partial);
  float v = 0.f;
  int pos = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    v += x[i];
    pos += x[i] > 0.f;
  }
  partial[threadIdx.x] = v;
  const int block_pos = __syncthreads_count(pos);  // per-thread counts are 0/1 when n <= grid size
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(sum, partial[0]);
    atomicAdd(positives, block_pos);
  }
}

// ---- y = a*x + y in __half and __nv_bfloat16, fp32 math --------------------------------------
__global__ void axpy_16bit(float a, const __half* xh, __half* yh, const __nv_bfloat16* xb, __nv_bfloat16* yb,
                           int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  yh[i] = __float2half(a * __half2float(xh[i]) + __half2float(yh[i]));
  yb[i] = __float2bfloat16(a * __bfloat162float(xb[i]) + __bfloat162float(yb[i]));
}

// ---- every shuffle flavour and vote, recorded per lane ---------------------------------------
// out[lane * 12 + k] for one warp of 32 threads; `width` applies to the four shuffles.
__global__ void warp_ops(int* out, int width, int src) {
  const int lane = threadIdx.x;
  int* o = out + lane * 12;
  const int v = 100 + lane;
  o[0] = __shfl_sync(0xffffffffu, v, src, width);
  o[1] = __shfl_up_sync(0xffffffffu, v, 3, width);
  o[2] = __shfl_down_sync(0xffffffffu, v, 3, width);
  o[3] = __shfl_xor_sync(0xffffffffu, v, 5, width);
  o[4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
  o[5] = __any_sync(0xffffffffu, lane == 7);
  o[6] = __all_sync(0xffffffffu, lane < 32);
  o[7] = __all_sync(0xffffffffu, lane < 31);
  // Partial masks: the low and the high half-warp shuffle separately.
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  o[8] = __shfl_xor_sync(half, v, 1);
  o[9] = (int)__ballot_sync(half, lane & 1);
  __syncwarp();
  o[10] = (int)__activemask();
  const double d = 0.5 * lane;  // 8-byte shuffle
  o[11] = (int)(2.0 * __shfl_sync(0xffffffffu, d, 31 - lane));
}

// ---- threads that return early drop out of block and warp barriers -------------------------
// Threads with id >= live return at once; the others loop over barriers and warp votes.
__global__ void early_exit(int* out, int live, int rounds) {
  const int t = threadIdx.x;
  if (t >= live) return;
  SMEM_ARRAY(int, counter, 1);
  if (t == 0) counter[0] = 0;
  __syncthreads();
  for (int r = 0; r < rounds; ++r) {
    atomicAdd(&counter[0], 1);
    __syncthreads();
    const unsigned active = __activemask();
    const int warp_live = __popc(__ballot_sync(active, 1));
    if (t == 0) out[r] = counter[0] * 100 + warp_live;
    __syncthreads();
  }
}

// ---- atomics on every supported type ---------------------------------------------------------
// fi[0..6] ints, fu[0..1] unsigned, ff[0..3] floats (ff[3] read-only), fd[0..1] doubles,
// fh[0] __half.
__global__ void atomics(int* fi, unsigned* fu, float* ff, double* fd, __half* fh) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&fi[0], 1);
  atomicSub(&fi[1], 2);
  atomicMin(&fi[2], -t);
  atomicMax(&fi[3], t);
  atomicCAS(&fi[4], t, t + 1);  // walks 0 -> 1 -> 2 ... only for values that match the caller
  if (atomicExch(&fi[5], t) == -1) atomicAdd(&fi[6], 1);  // exactly one thread sees the initial -1
  atomicAdd(&fu[0], 3u);
  atomicMax(&fu[1], (unsigned)t * 7u);
  atomicAdd(&ff[0], 0.5f);
  atomicExch(&ff[1], 2.0f);
  atomicAdd(&fd[0], 0.25);
  atomicAdd(&fd[1], (double)t);
  atomicAdd(&fh[0], __float2half(1.0f));
  __threadfence();
  atomicAdd(&ff[2], __ldg(&ff[3]));
}

// ---- 3-D geometry: every thread writes its coordinates ----------------------------------------
__global__ void geometry(unsigned* out) {
  const unsigned block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const unsigned thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
  out[block * nthreads + thread] = (blockIdx.x << 24) | (blockIdx.y << 20) | (blockIdx.z << 16) |
                                   (threadIdx.x << 8) | (threadIdx.y << 4) | threadIdx.z;
}

// ---- shared memory is 0xFF (NaN) at block start: read before writing -------------------------
__global__ void smem_fill(unsigned* out) {
  SMEM_ARRAY(unsigned, st, 64);
  DYN_SMEM(unsigned, dyn);
  out[blockIdx.x * 128 + threadIdx.x] = st[threadIdx.x];
  out[blockIdx.x * 128 + 64 + threadIdx.x] = dyn[threadIdx.x];
  __syncthreads();
  st[threadIdx.x] = 0;  // the next block must see the fill again, not these zeros
  dyn[threadIdx.x] = 0;
}

// ---- misuse that the simulator must report as an error (never a hang) ------------------------
__global__ void divergent_syncthreads(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}
__global__ void barrier_deadlock(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x == 0) __syncthreads();  // waits for lanes that wait for it in the shuffle
  else v = __shfl_sync(0xffffffffu, v, 0);
  out[threadIdx.x] = v;
}
__global__ void mismatched_masks(int* out) {
  const unsigned lane = threadIdx.x;
  out[lane] = __shfl_sync(lane == 0 ? 0x3u : 0xffffffffu, (int)lane, 0);
}
__global__ void traps(int* out) {
  if (blockIdx.x == 1 && threadIdx.x == 5) __trap();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

// ---- tensor cores: ldmatrix fragments, recorded per lane --------------------------------------
// src: 4 row-major 8x8 matrices of 16-bit values, stacked [32][8]; out[lane * 4 + i].
template <int N, bool TRANS>
__global__ void ldmatrix_fragments(const std::uint16_t* src, std::uint32_t* out) {
  SMEM_ARRAY(std::uint16_t, tile, 32, 8);
  const int lane = threadIdx.x;
  for (int i = 0; i < 8; ++i) tile[lane][i] = src[lane * 8 + i];
  __syncwarp();
  std::uint32_t r[4] = {0, 0, 0, 0};
  const std::uint16_t* row = &tile[lane][0];
  if constexpr (N == 4) {
    TRANS ? ldmatrix_x4_trans(r, row) : ldmatrix_x4(r, row);
  } else if constexpr (N == 2) {
    std::uint32_t q[2];
    TRANS ? ldmatrix_x2_trans(q, row) : ldmatrix_x2(q, row);
    r[0] = q[0];
    r[1] = q[1];
  } else {
    TRANS ? ldmatrix_x1_trans(r[0], row) : ldmatrix_x1(r[0], row);
  }
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
}

// ---- C[16,8] = A[16,16] B[16,8] on one warp: cp.async -> ldmatrix -> mma ------------------
// T = __half or __nv_bfloat16; A, B row-major; C row-major fp32.
template <class T>
__global__ void mma_16x8x16(const T* A, const T* B, float* C) {
  SMEM_ARRAY(T, As, 16, 16);
  SMEM_ARRAY(T, Bs, 16, 8);
  const int lane = threadIdx.x;
  // 16 rows of A (32 B each) and 16 rows of B (16 B each) in 16-byte pieces: 48 copies.
  for (int p = lane; p < 48; p += 32) {
    if (p < 32) cp_async<16>(&As[p / 2][(p % 2) * 8], A + (p / 2) * 16 + (p % 2) * 8);
    else cp_async<16>(&Bs[p - 32][0], B + (p - 32) * 8);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncwarp();
  std::uint32_t a[4], b[2];
  const int mat = lane / 8, r = lane % 8;
  ldmatrix_x4(a, &As[(mat % 2) * 8 + r][(mat / 2) * 8]);
  ldmatrix_x2_trans(b, &Bs[lane % 16][0]);
  float c[4] = {1.f, 1.f, 1.f, 1.f};  // C starts at 1 to check the accumulator input
  if constexpr (std::is_same_v<T, __half>) mma_m16n8k16_f16(c, a, b, c);
  else mma_m16n8k16_bf16(c, a, b, c);
  const int g = lane / 4, t = lane % 4;
  C[g * 8 + 2 * t] = c[0];
  C[g * 8 + 2 * t + 1] = c[1];
  C[(g + 8) * 8 + 2 * t] = c[2];
  C[(g + 8) * 8 + 2 * t + 1] = c[3];
}

// ---- C[16,8] = A[16,8] B[8,8] in tf32, fragments loaded straight from global ---------------
// C[16,16] = A[16,16] (row-major) @ B[16,16] (column-major) through nvcuda::wmma, one warp;
// the accumulator is loaded from C first, so C is added to.
__global__ void wmma_16x16x16(const __half* A, const __half* B, float* C) {
  namespace wmma = nvcuda::wmma;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
  wmma::load_matrix_sync(c, C, 16, wmma::mem_row_major);
  wmma::load_matrix_sync(a, A, 16);
  wmma::load_matrix_sync(b, B, 16);
  for (int i = 0; i < c.num_elements; ++i) c.x[i] *= 0.5f;  // layout-free elementwise use
  wmma::mma_sync(c, a, b, c);
  wmma::store_matrix_sync(C, c, 16, wmma::mem_row_major);
}

__global__ void mma_16x8x8_tf32(const float* A, const float* B, float* C) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  const std::uint32_t a[4] = {float_to_tf32(A[g * 8 + t]), float_to_tf32(A[(g + 8) * 8 + t]),
                              float_to_tf32(A[g * 8 + t + 4]), float_to_tf32(A[(g + 8) * 8 + t + 4])};
  const std::uint32_t b[2] = {float_to_tf32(B[t * 8 + g]), float_to_tf32(B[(t + 4) * 8 + g])};
  const float zero[4] = {0.f, 0.f, 0.f, 0.f};
  float d[4];
  mma_m16n8k8_tf32(d, a, b, zero);
  C[g * 8 + 2 * t] = d[0];
  C[g * 8 + 2 * t + 1] = d[1];
  C[(g + 8) * 8 + 2 * t] = d[2];
  C[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// ---- double-buffered cp.async pipeline: out[c] = sum over rows of src[r, c] -----------------
// src is [rows, 256] fp32, one row per stage; 64 threads copy 16 bytes each per row. Rows past
// `rows_valid` are zero-filled (pred = false). WAIT = false omits cp_async_wait: the reads see
// the 0xFF fill (NaN) in the simulator.
template <bool WAIT>
__global__ void cp_async_pipeline(const float* src, int rows, int rows_valid, float* out) {
  DYN_SMEM(float, buf);  // [2][256]
  const int t = threadIdx.x;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  auto issue = [&](int row) {
    const bool valid = row < rows_valid;
    cp_async<16>(&buf[(row % 2) * 256 + t * 4], src + (size_t)(valid ? row : 0) * 256 + t * 4, valid);
    cp_async_commit();
  };
  issue(0);
  for (int row = 0; row < rows; ++row) {
    if (row + 1 < rows) issue(row + 1);
    if (WAIT) {
      if (row + 1 < rows) cp_async_wait<1>();
      else cp_async_wait<0>();
    }
    __syncthreads();
    for (int i = 0; i < 4; ++i) acc[i] += buf[(row % 2) * 256 + t * 4 + i];
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i) out[t * 4 + i] = acc[i];
}

// ---- cp.async of 4 and 8 bytes; sources at or past n are zero-filled -------------------------
// One warp: out[0..31] via 4-byte copies, out[32..95] via 8-byte copies.
__global__ void cp_async_small(const float* src, float* out, int n) {
  SMEM_ARRAY(float, s, 96);
  const int t = threadIdx.x;
  cp_async<4>(&s[t], src + t, t < n);
  cp_async<8>(&s[32 + 2 * t], src + 32 + 2 * t, 32 + 2 * t < n);
  cp_async_commit();
  cp_async_wait<0>();
  __syncwarp();
  for (int i = t; i < 96; i += 32) out[i] = s[i];
}

// ---- launch-overhead probe: `rounds` __syncthreads per thread --------------------------------
__global__ void sync_rounds(int* out, int rounds) {
  for (int r = 0; r < rounds; ++r) __syncthreads();
  if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = rounds;
}

#if defined(CUDASIM_SELFTEST_RACE)
// ---- BUG ON PURPOSE: reverse through shared memory without __syncthreads ----------------------
__global__ void racy_reverse(const float* in, float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = in[blockIdx.x * 64 + threadIdx.x];
  out[blockIdx.x * 64 + threadIdx.x] = s[63 - threadIdx.x];  // RACE: a __syncthreads is missing
}
#endif

#if defined(CUDASIM_SELFTEST_OOB)
// ---- BUG ON PURPOSE: the last thread writes one element past the end of out ------------------
__global__ void out_of_bounds(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.f;  // OOB: should be i < n
}
#endif

}  // namespace sim_selftest
