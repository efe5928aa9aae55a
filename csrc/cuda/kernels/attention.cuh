/* Flash attention on CUDA, torch-free: softmax(scale * Q K^T + mask) V with the softmax computed
   online over tiles of 32 keys, the log-sum-exp saved; the backward recomputes the
   probabilities tile by tile. No L x S matrix exists. Same operand description as the CPU
   kernels (cpu/kernels/attention.h): a flattened (batch, head) index b with per-operand
   element offsets (device arrays), row strides, contiguous last dimensions; head dims <= 256.
   Blocks take kWarps rows along grid.x and a (batch, head) pair numbered over grid.y and z.

   SIMT kernels for every dtype (fp32 / fp64 / fp16 / bf16, math in fp32, fp64 for double),
   one warp per row:
     forward   a warp per query row: lanes own 32 keys of a tile (scores) and the output
               columns (accumulators), probabilities broadcast by shuffles.
     delta     D = rowsum(dO * O) per query row.
     dk_dv     a warp per key row (FlashAttention-2 order: no atomics): lanes own 32 queries of a
               tile (P, dP, dS) and the columns of dK and dV.
     dq        a warp per query row: lanes own 32 keys of a tile, then the columns of dQ.
   Dropout: the counter-based hash of contracts/attention_rng.h, so the CPU op, the
   simulator and a GPU drop exactly the same elements.
   fp16 / bf16 forwards with E % 16 == 0, Ev % 8 == 0 (both <= 128) run on tensor cores instead:
   forward_tc, FlashAttention-2 with mma.sync m16n8k16 (a warp per 16 query rows, fragments
   gathered from global memory, no shared-memory staging yet). Their backwards with E and Ev
   multiples of 16 (<= 128) run dk_dv_tc (a warp per 16 keys) and dq_tc (a warp per 16
   queries) on tensor cores too; the delta pass stays SIMT. */
#pragma once
#include "gemm.cuh"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../../contracts/attention.h"
#include "../../contracts/attention_rng.h"

namespace fusedops::FUSEDOPS_CUDA_NS {

template <typename T>
struct AttentionParams {
  using Acc = gemm_acc_t<T>;
  int64_t batch = 0, L = 0, S = 0, E = 0, Ev = 0;
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  const int64_t* off = nullptr;  // device: [4][batch] offsets of q, k, v, mask
  int64_t q_rs = 0, k_rs = 0, v_rs = 0;
  AttnMask mask_kind = AttnMask::none;
  const T* mask_add = nullptr;
  const uint8_t* mask_bool = nullptr;
  int64_t m_rs = 0, m_cs = 0;
  bool causal = false;
  Acc scale = 1;
  double dropout_p = 0.0;
  uint64_t seed = 0, offset = 0;
  T* out = nullptr;        // [batch, L, Ev]
  Acc* lse = nullptr;      // [batch, L]
  const T* dout = nullptr; // [batch, L, Ev]
  Acc* delta = nullptr;    // [batch, L] workspace
  T* dq = nullptr;         // [batch, L, E]
  T* dk = nullptr;         // [batch, S, E] (per query batch)
  T* dv = nullptr;         // [batch, S, Ev]
};

namespace attention_detail {

constexpr int kWarps = 4;     // rows per block
constexpr int kMaxDim = 256;  // head dims
constexpr int kPer = kMaxDim / 32;

// The (batch, head) pair of this block, numbered over grid.y and grid.z (see attention_plan);
// blocks past the last pair have none. 32-bit arithmetic (at most 65535^2): the 64-bit product
// made the SIMT forward spill on sm_80.
__device__ __forceinline__ int64_t pair_index() { return int64_t(blockIdx.z * gridDim.y + blockIdx.y); }

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }

template <typename A>
__device__ __forceinline__ A warp_max(A x) {
  for (int o = 16; o > 0; o >>= 1) {
    const A y = __shfl_xor_sync(0xffffffffu, x, o);
    x = y > x ? y : x;
  }
  return x;
}
template <typename A>
__device__ __forceinline__ A warp_sum(A x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// The scaled, masked score of (row, col), or -inf when not visible.
template <typename T>
__device__ __forceinline__ gemm_acc_t<T> score(const AttentionParams<T>& p, int64_t b, int64_t row,
                                               int64_t col, gemm_acc_t<T> dot) {
  using Acc = gemm_acc_t<T>;
  using gemm_detail::to_acc;
  const Acc ninf = -Acc(INFINITY);
  if (p.causal && col > row) return ninf;
  const int64_t mo = p.off[3 * p.batch + b] + row * p.m_rs + col * p.m_cs;
  if (p.mask_kind == AttnMask::boolean && !p.mask_bool[mo]) return ninf;
  Acc s = dot * p.scale;
  if (p.mask_kind == AttnMask::additive) s += to_acc(p.mask_add[mo]);
  return s;
}

template <typename T>
__device__ __forceinline__ bool keep(const AttentionParams<T>& p, int64_t b, int64_t row, int64_t col) {
  if (!(p.dropout_p > 0.0)) return true;
  return attention_keep(attention_seed_key(p.seed),
                        p.offset + uint64_t((b * p.L + row) * p.S + col),
                        attention_drop_threshold(p.dropout_p));
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) forward_kernel(AttentionParams<T> p) {
  using Acc = gemm_acc_t<T>;
  using gemm_detail::from_acc;
  using gemm_detail::to_acc;
  SMEM_ARRAY(Acc, qs, kWarps, kMaxDim);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = pair_index(), row = int64_t(blockIdx.x) * kWarps + warp;
  if (b >= p.batch || row >= p.L) return;  // uniform across the warp
  const T* q = p.q + p.off[b] + row * p.q_rs;
  const T* k = p.k + p.off[p.batch + b];
  const T* v = p.v + p.off[2 * p.batch + b];
  for (int64_t e = lane; e < p.E; e += 32) qs[warp][e] = to_acc(q[e]);
  __syncwarp();
  const Acc ninf = -Acc(INFINITY);
  const Acc inv_keep = p.dropout_p < 1.0 ? Acc(1.0 / (1.0 - p.dropout_p)) : Acc(0);
  Acc o[kPer];
  for (int t = 0; t < kPer; ++t) o[t] = 0;
  Acc m = ninf, l = 0;
  const int64_t kend = p.causal ? (row + 1 < p.S ? row + 1 : p.S) : p.S;
  for (int64_t j0 = 0; j0 < kend; j0 += 32) {
    const int64_t j = j0 + lane;
    Acc s = ninf;
    if (j < kend) {
      Acc dot = 0;
      const T* kr = k + j * p.k_rs;
      for (int64_t e = 0; e < p.E; ++e) dot += qs[warp][e] * to_acc(kr[e]);
      s = score(p, b, row, j, dot);
    }
    const Acc tmax = warp_max(s);
    const Acc mnew = tmax > m ? tmax : m;
    if (mnew == ninf) continue;  // nothing visible yet (uniform)
    const Acc pr = s == ninf ? Acc(0) : acc_exp(s - mnew);
    const Acc corr = m == ninf ? Acc(0) : acc_exp(m - mnew);
    l = l * corr + warp_sum(pr);
    m = mnew;
    const Acc pu = (j < kend && keep(p, b, row, j)) ? pr * inv_keep : Acc(0);
    for (int t = 0; t < kPer; ++t) o[t] *= corr;
    const int64_t n = kend - j0 < 32 ? kend - j0 : 32;
    for (int jj = 0; jj < 32; ++jj) {
      const Acc pj = __shfl_sync(0xffffffffu, pu, jj);
      if (jj >= n) continue;
      const T* vr = v + (j0 + jj) * p.v_rs;
      for (int t = 0; t < kPer; ++t) {
        const int64_t c = lane + 32 * t;
        if (c < p.Ev) o[t] += pj * to_acc(vr[c]);
      }
    }
  }
  const Acc inv = l > Acc(0) ? Acc(1) / l : Acc(0);
  T* out = p.out + (b * p.L + row) * p.Ev;
  for (int t = 0; t < kPer; ++t) {
    const int64_t c = lane + 32 * t;
    if (c < p.Ev) out[c] = from_acc<T>(o[t] * inv);
  }
  if (lane == 0) p.lse[b * p.L + row] = l > Acc(0) ? m + acc_log(l) : Acc(INFINITY);
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) delta_kernel(AttentionParams<T> p) {
  using Acc = gemm_acc_t<T>;
  using gemm_detail::to_acc;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = pair_index(), row = int64_t(blockIdx.x) * kWarps + warp;
  if (b >= p.batch || row >= p.L) return;
  const T* o = p.out + (b * p.L + row) * p.Ev;
  const T* d = p.dout + (b * p.L + row) * p.Ev;
  Acc s = 0;
  for (int64_t c = lane; c < p.Ev; c += 32) s += to_acc(o[c]) * to_acc(d[c]);
  s = warp_sum(s);
  if (lane == 0) p.delta[b * p.L + row] = s;
}

// P, and dS = P * (dP' - D) where dP' is dP through the dropout, of (row, col).
template <typename T>
__device__ __forceinline__ void probs(const AttentionParams<T>& p, int64_t b, int64_t row, int64_t col,
                                      gemm_acc_t<T> dot_qk, gemm_acc_t<T> dot_dov, gemm_acc_t<T>* pd,
                                      gemm_acc_t<T>* ds) {
  using Acc = gemm_acc_t<T>;
  const Acc s = score(p, b, row, col, dot_qk);
  const Acc l = p.lse[b * p.L + row];
  const Acc pr = (s == -Acc(INFINITY) || l == Acc(INFINITY)) ? Acc(0) : acc_exp(s - l);
  const Acc inv_keep = p.dropout_p < 1.0 ? Acc(1.0 / (1.0 - p.dropout_p)) : Acc(0);
  const bool kept = keep(p, b, row, col);
  const Acc f = p.dropout_p > 0.0 ? (kept ? inv_keep : Acc(0)) : Acc(1);
  *pd = pr * f;
  *ds = pr * (dot_dov * f - p.delta[b * p.L + row]);
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) dk_dv_kernel(AttentionParams<T> p) {
  using Acc = gemm_acc_t<T>;
  using gemm_detail::from_acc;
  using gemm_detail::to_acc;
  SMEM_ARRAY(Acc, ks, kWarps, kMaxDim);
  SMEM_ARRAY(Acc, vs, kWarps, kMaxDim);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = pair_index(), col = int64_t(blockIdx.x) * kWarps + warp;
  if (b >= p.batch || col >= p.S) return;
  const T* q = p.q + p.off[b];
  const T* kr = p.k + p.off[p.batch + b] + col * p.k_rs;
  const T* vr = p.v + p.off[2 * p.batch + b] + col * p.v_rs;
  for (int64_t e = lane; e < p.E; e += 32) ks[warp][e] = to_acc(kr[e]);
  for (int64_t c = lane; c < p.Ev; c += 32) vs[warp][c] = to_acc(vr[c]);
  __syncwarp();
  Acc dk[kPer], dv[kPer];
  for (int t = 0; t < kPer; ++t) dk[t] = dv[t] = 0;
  const T* dO = p.dout + b * p.L * p.Ev;
  for (int64_t i0 = p.causal ? col : 0; i0 < p.L; i0 += 32) {
    const int64_t i = i0 + lane;
    Acc pd = 0, ds = 0;
    if (i < p.L) {
      Acc dqk = 0, ddv = 0;
      const T* qr = q + i * p.q_rs;
      for (int64_t e = 0; e < p.E; ++e) dqk += to_acc(qr[e]) * ks[warp][e];
      const T* dr = dO + i * p.Ev;
      for (int64_t c = 0; c < p.Ev; ++c) ddv += to_acc(dr[c]) * vs[warp][c];
      probs(p, b, i, col, dqk, ddv, &pd, &ds);
    }
    const int64_t n = p.L - i0 < 32 ? p.L - i0 : 32;
    for (int ii = 0; ii < 32; ++ii) {
      const Acc pi = __shfl_sync(0xffffffffu, pd, ii);
      const Acc si = __shfl_sync(0xffffffffu, ds, ii);
      if (ii >= n) continue;
      const T* qr = q + (i0 + ii) * p.q_rs;
      const T* dr = dO + (i0 + ii) * p.Ev;
      for (int t = 0; t < kPer; ++t) {
        const int64_t c = lane + 32 * t;
        if (c < p.Ev) dv[t] += pi * to_acc(dr[c]);
        if (c < p.E) dk[t] += si * to_acc(qr[c]);
      }
    }
  }
  for (int t = 0; t < kPer; ++t) {
    const int64_t c = lane + 32 * t;
    if (p.dk && c < p.E) p.dk[(b * p.S + col) * p.E + c] = from_acc<T>(dk[t] * p.scale);
    if (p.dv && c < p.Ev) p.dv[(b * p.S + col) * p.Ev + c] = from_acc<T>(dv[t]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) dq_kernel(AttentionParams<T> p) {
  using Acc = gemm_acc_t<T>;
  using gemm_detail::from_acc;
  using gemm_detail::to_acc;
  SMEM_ARRAY(Acc, qs, kWarps, kMaxDim);
  SMEM_ARRAY(Acc, ds_, kWarps, kMaxDim);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t b = pair_index(), row = int64_t(blockIdx.x) * kWarps + warp;
  if (b >= p.batch || row >= p.L) return;
  const T* qr = p.q + p.off[b] + row * p.q_rs;
  const T* dr = p.dout + (b * p.L + row) * p.Ev;
  for (int64_t e = lane; e < p.E; e += 32) qs[warp][e] = to_acc(qr[e]);
  for (int64_t c = lane; c < p.Ev; c += 32) ds_[warp][c] = to_acc(dr[c]);
  __syncwarp();
  const T* k = p.k + p.off[p.batch + b];
  const T* v = p.v + p.off[2 * p.batch + b];
  Acc dq[kPer];
  for (int t = 0; t < kPer; ++t) dq[t] = 0;
  const int64_t kend = p.causal ? (row + 1 < p.S ? row + 1 : p.S) : p.S;
  for (int64_t j0 = 0; j0 < kend; j0 += 32) {
    const int64_t j = j0 + lane;
    Acc pd = 0, ds = 0;
    if (j < kend) {
      Acc dqk = 0, ddv = 0;
      const T* kr = k + j * p.k_rs;
      for (int64_t e = 0; e < p.E; ++e) dqk += qs[warp][e] * to_acc(kr[e]);
      const T* vr = v + j * p.v_rs;
      for (int64_t c = 0; c < p.Ev; ++c) ddv += ds_[warp][c] * to_acc(vr[c]);
      probs(p, b, row, j, dqk, ddv, &pd, &ds);
    }
    const int64_t n = kend - j0 < 32 ? kend - j0 : 32;
    for (int jj = 0; jj < 32; ++jj) {
      const Acc sj = __shfl_sync(0xffffffffu, ds, jj);
      if (jj >= n) continue;
      const T* kr = k + (j0 + jj) * p.k_rs;
      for (int t = 0; t < kPer; ++t) {
        const int64_t c = lane + 32 * t;
        if (c < p.E) dq[t] += sj * to_acc(kr[c]);
      }
    }
  }
  for (int t = 0; t < kPer; ++t) {
    const int64_t c = lane + 32 * t;
    if (c < p.E) p.dq[(b * p.L + row) * p.E + c] = from_acc<T>(dq[t] * p.scale);
  }
}

// ---- tensor cores (fp16 / bf16): FlashAttention-2 forward with mma.sync m16n8k16 ----------
// A warp owns 16 query rows; per tile of 16 keys: S = Q K^T (E/16 mma per 8-key half), the
// online softmax on the accumulator fragments (a lane holds rows g and g + 8, g = lane / 4,
// reduced over the 4 lanes of a quad), then P (the accumulators re-packed as an A fragment)
// times V. Fragments are gathered from global memory (L1/L2 resident); E % 16 == 0,
// Ev % 8 == 0, both <= 128.
constexpr int kTcRows = 16;

template <typename T>
__device__ __forceinline__ std::uint32_t pack2(T lo, T hi) {
  std::uint16_t a, b;
  memcpy(&a, &lo, 2);
  memcpy(&b, &hi, 2);
  return std::uint32_t(a) | (std::uint32_t(b) << 16);
}

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>) mma_m16n8k16_f16(d, a, b, d);
  else mma_m16n8k16_bf16(d, a, b, d);
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) forward_tc_kernel(AttentionParams<T> p) {
  using gemm_detail::from_acc;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t b = pair_index(), row0 = (int64_t(blockIdx.x) * kWarps + warp) * kTcRows;
  if (b >= p.batch || row0 >= p.L) return;  // uniform across the warp
  const T* q = p.q + p.off[b];
  const T* k = p.k + p.off[p.batch + b];
  const T* v = p.v + p.off[2 * p.batch + b];
  const T zero = from_acc<T>(0.f);
  const int64_t r[2] = {row0 + g, row0 + g + 8};
  // Q fragments for the whole head dim (rows past L read as 0)
  std::uint32_t qf[128 / 16][4];
  const int kcs = int(p.E / 16);
  GEMM_UNROLL
  for (int kc = 0; kc < 128 / 16; ++kc) {
    if (kc >= kcs) break;
    GEMM_UNROLL
    for (int h = 0; h < 4; ++h) {
      const int64_t row = r[h & 1];
      const int64_t e = kc * 16 + 2 * t + (h >> 1) * 8;
      const T* qr = q + row * p.q_rs + e;
      qf[kc][h] = row < p.L ? pack2<T>(qr[0], qr[1]) : pack2<T>(zero, zero);
    }
  }
  const float ninf = -INFINITY;
  const float inv_keep = p.dropout_p < 1.0 ? float(1.0 / (1.0 - p.dropout_p)) : 0.f;
  float o[128 / 8][4];
  GEMM_UNROLL
  for (int dt = 0; dt < 128 / 8; ++dt)
    GEMM_UNROLL
    for (int c = 0; c < 4; ++c) o[dt][c] = 0.f;
  float m[2] = {ninf, ninf}, l[2] = {0.f, 0.f};
  const int dts = int(p.Ev / 8);
  const int64_t last = row0 + kTcRows - 1 < p.L - 1 ? row0 + kTcRows - 1 : p.L - 1;
  const int64_t kend = p.causal ? (last + 1 < p.S ? last + 1 : p.S) : p.S;
  for (int64_t j0 = 0; j0 < kend; j0 += 16) {
    float sc[2][4];
    GEMM_UNROLL
    for (int nt = 0; nt < 2; ++nt) {
      GEMM_UNROLL
      for (int c = 0; c < 4; ++c) sc[nt][c] = 0.f;
      const int64_t key = j0 + nt * 8 + g;
      GEMM_UNROLL
      for (int kc = 0; kc < 128 / 16; ++kc) {
        if (kc >= kcs) break;
        std::uint32_t bf[2];
        GEMM_UNROLL
        for (int h = 0; h < 2; ++h) {
          const T* kr = k + key * p.k_rs + kc * 16 + 2 * t + h * 8;
          bf[h] = key < p.S ? pack2<T>(kr[0], kr[1]) : pack2<T>(zero, zero);
        }
        mma16816<T>(sc[nt], qf[kc], bf);
      }
    }
    // scores -> probabilities, per row half h (c = 2h, 2h + 1)
    float pu[2][4];
    GEMM_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int64_t row = r[h];
      float mx = ninf;
      GEMM_UNROLL
      for (int nt = 0; nt < 2; ++nt)
        GEMM_UNROLL
        for (int c = 0; c < 2; ++c) {
          const int64_t col = j0 + nt * 8 + 2 * t + c;
          float& x = sc[nt][2 * h + c];
          x = (row < p.L && col < kend) ? score(p, b, row, col, x) : ninf;
          mx = x > mx ? x : mx;
        }
      GEMM_UNROLL
      for (int o_ = 1; o_ < 4; o_ <<= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, mx, o_);
        mx = y > mx ? y : mx;
      }
      const float mnew = mx > m[h] ? mx : m[h];
      const float corr = (m[h] == ninf || mnew == ninf) ? 0.f : acc_exp(m[h] - mnew);
      float sum = 0.f;
      GEMM_UNROLL
      for (int nt = 0; nt < 2; ++nt)
        GEMM_UNROLL
        for (int c = 0; c < 2; ++c) {
          const float x = sc[nt][2 * h + c];
          const float pr = (x == ninf) ? 0.f : acc_exp(x - mnew);
          sum += pr;
          const int64_t col = j0 + nt * 8 + 2 * t + c;
          pu[nt][2 * h + c] = (x != ninf && keep(p, b, row, col)) ? pr * (p.dropout_p > 0.0 ? inv_keep : 1.f) : 0.f;
        }
      GEMM_UNROLL
      for (int o_ = 1; o_ < 4; o_ <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o_);
      l[h] = l[h] * corr + sum;
      m[h] = mnew;
      GEMM_UNROLL
      for (int dt = 0; dt < 128 / 8; ++dt) {
        if (dt >= dts) break;
        o[dt][2 * h] *= corr;
        o[dt][2 * h + 1] *= corr;
      }
    }
    std::uint32_t af[4] = {pack2<T>(from_acc<T>(pu[0][0]), from_acc<T>(pu[0][1])),
                           pack2<T>(from_acc<T>(pu[0][2]), from_acc<T>(pu[0][3])),
                           pack2<T>(from_acc<T>(pu[1][0]), from_acc<T>(pu[1][1])),
                           pack2<T>(from_acc<T>(pu[1][2]), from_acc<T>(pu[1][3]))};
    GEMM_UNROLL
      for (int dt = 0; dt < 128 / 8; ++dt) {
        if (dt >= dts) break;
      const int64_t n = dt * 8 + g;
      std::uint32_t bf[2];
      GEMM_UNROLL
      for (int h = 0; h < 2; ++h) {
        const int64_t key = j0 + 2 * t + h * 8;
        const T v0 = key < p.S ? v[key * p.v_rs + n] : zero;
        const T v1 = key + 1 < p.S ? v[(key + 1) * p.v_rs + n] : zero;
        bf[h] = pack2<T>(v0, v1);
      }
      mma16816<T>(o[dt], af, bf);
    }
  }
  GEMM_UNROLL
  for (int h = 0; h < 2; ++h) {
    const int64_t row = r[h];
    if (row >= p.L) continue;
    const float inv = l[h] > 0.f ? 1.f / l[h] : 0.f;
    T* out = p.out + (b * p.L + row) * p.Ev;
    GEMM_UNROLL
      for (int dt = 0; dt < 128 / 8; ++dt) {
        if (dt >= dts) break;
      out[dt * 8 + 2 * t] = from_acc<T>(o[dt][2 * h] * inv);
      out[dt * 8 + 2 * t + 1] = from_acc<T>(o[dt][2 * h + 1] * inv);
    }
    if (t == 0) p.lse[b * p.L + row] = l[h] > 0.f ? m[h] + acc_log(l[h]) : INFINITY;
  }
}

// ---- tensor cores (fp16 / bf16): FlashAttention-2 backward with mma.sync m16n8k16 ---------
// Same fragment conventions as forward_tc (a lane holds rows g and g + 8 of an accumulator
// tile, columns 2t and 2t + 1 of each 8-wide n tile). P and dS are rounded to T to enter the
// products, as in FlashAttention-2. E % 16 == 0 and Ev % 16 == 0, both <= 128.

// The A fragments of a 16 x D tile of rows r[0..1] (row g and g + 8) of `base` (row stride rs),
// zero past `rows`; D / 16 fragments.
template <typename T>
__device__ __forceinline__ void load_a_frags(std::uint32_t (&f)[128 / 16][4], const T* base, int64_t rs,
                                             const int64_t (&r)[2], int64_t rows, int D, int t) {
  const T zero = gemm_detail::from_acc<T>(0.f);
  GEMM_UNROLL
  for (int kc = 0; kc < 128 / 16; ++kc) {
    if (kc >= D / 16) break;
    GEMM_UNROLL
    for (int h = 0; h < 4; ++h) {
      const int64_t row = r[h & 1];
      const T* x = base + row * rs + kc * 16 + 2 * t + (h >> 1) * 8;
      f[kc][h] = row < rows ? pack2<T>(x[0], x[1]) : pack2<T>(zero, zero);
    }
  }
}

// acc[nt] (two 16 x 8 tiles) = A (16 x D fragments) @ X^T, where X's rows x0 + nt * 8 + g
// (row stride rs, zero past `rows`) are the 8 columns of tile nt: the B fragment of a
// row-major X read along its contiguous dimension.
template <typename T>
__device__ __forceinline__ void times_rows_t(float (&acc)[2][4], const std::uint32_t (&a)[128 / 16][4], const T* base,
                                             int64_t rs, int64_t x0, int64_t rows, int D, int g, int t) {
  const T zero = gemm_detail::from_acc<T>(0.f);
  GEMM_UNROLL
  for (int nt = 0; nt < 2; ++nt) {
    GEMM_UNROLL
    for (int c = 0; c < 4; ++c) acc[nt][c] = 0.f;
    const int64_t row = x0 + nt * 8 + g;
    GEMM_UNROLL
    for (int kc = 0; kc < 128 / 16; ++kc) {
      if (kc >= D / 16) break;
      std::uint32_t bf[2];
      GEMM_UNROLL
      for (int h = 0; h < 2; ++h) {
        const T* x = base + row * rs + kc * 16 + 2 * t + h * 8;
        bf[h] = row < rows ? pack2<T>(x[0], x[1]) : pack2<T>(zero, zero);
      }
      mma16816<T>(acc[nt], a[kc], bf);
    }
  }
}

// out[dt] (16 x D) += A (a 16 x 16 tile in A fragments) @ X, X the 16 rows x0.. of `base` (row
// stride rs, zero past `rows`): B fragments gathered down X's columns.
template <typename T>
__device__ __forceinline__ void accumulate_times(float (&out)[128 / 8][4], const std::uint32_t (&a)[4], const T* base,
                                                 int64_t rs, int64_t x0, int64_t rows, int D, int g, int t) {
  const T zero = gemm_detail::from_acc<T>(0.f);
  GEMM_UNROLL
  for (int dt = 0; dt < 128 / 8; ++dt) {
    if (dt >= D / 8) break;
    const int64_t n = dt * 8 + g;
    std::uint32_t bf[2];
    GEMM_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int64_t x = x0 + 2 * t + h * 8;
      const T v0 = x < rows ? base[x * rs + n] : zero;
      const T v1 = x + 1 < rows ? base[(x + 1) * rs + n] : zero;
      bf[h] = pack2<T>(v0, v1);
    }
    mma16816<T>(out[dt], a, bf);
  }
}

// Two 16 x 8 accumulator tiles as the A fragment of a 16 x 16 tile, rounded to T.
template <typename T>
__device__ __forceinline__ void to_a_frag(std::uint32_t (&af)[4], const float (&x)[2][4]) {
  using gemm_detail::from_acc;
  af[0] = pack2<T>(from_acc<T>(x[0][0]), from_acc<T>(x[0][1]));
  af[1] = pack2<T>(from_acc<T>(x[0][2]), from_acc<T>(x[0][3]));
  af[2] = pack2<T>(from_acc<T>(x[1][0]), from_acc<T>(x[1][1]));
  af[3] = pack2<T>(from_acc<T>(x[1][2]), from_acc<T>(x[1][3]));
}

// A warp owns 16 keys; per tile of 16 queries: S^T = K Q^T and dP'^T = V dO^T on tensor cores,
// P and dS per element (probs), then dV += P^T dO and dK += dS^T Q. No atomics.
template <typename T>
__global__ void __launch_bounds__(kWarps * 32) dk_dv_tc_kernel(AttentionParams<T> p) {
  using gemm_detail::from_acc;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t b = pair_index(), col0 = (int64_t(blockIdx.x) * kWarps + warp) * kTcRows;
  if (b >= p.batch || col0 >= p.S) return;  // uniform across the warp
  const T* q = p.q + p.off[b];
  const T* k = p.k + p.off[p.batch + b];
  const T* v = p.v + p.off[2 * p.batch + b];
  const T* dO = p.dout + b * p.L * p.Ev;
  const int64_t r[2] = {col0 + g, col0 + g + 8};
  const int E = int(p.E), Ev = int(p.Ev);
  std::uint32_t kf[128 / 16][4], vf[128 / 16][4];
  load_a_frags<T>(kf, k, p.k_rs, r, p.S, E, t);
  load_a_frags<T>(vf, v, p.v_rs, r, p.S, Ev, t);
  float dk[128 / 8][4], dv[128 / 8][4];
  GEMM_UNROLL
  for (int dt = 0; dt < 128 / 8; ++dt)
    GEMM_UNROLL
    for (int c = 0; c < 4; ++c) dk[dt][c] = dv[dt][c] = 0.f;
  for (int64_t i0 = p.causal ? col0 : 0; i0 < p.L; i0 += 16) {
    float st[2][4], dpt[2][4], pd[2][4], ds[2][4];
    times_rows_t<T>(st, kf, q, p.q_rs, i0, p.L, E, g, t);
    times_rows_t<T>(dpt, vf, dO, p.Ev, i0, p.L, Ev, g, t);
    GEMM_UNROLL
    for (int nt = 0; nt < 2; ++nt)
      GEMM_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int64_t key = r[c >> 1], query = i0 + nt * 8 + 2 * t + (c & 1);
        float x = 0.f, y = 0.f;
        if (key < p.S && query < p.L) probs(p, b, query, key, st[nt][c], dpt[nt][c], &x, &y);
        pd[nt][c] = x, ds[nt][c] = y;
      }
    std::uint32_t pf[4], sf[4];
    to_a_frag<T>(pf, pd);
    to_a_frag<T>(sf, ds);
    accumulate_times<T>(dv, pf, dO, p.Ev, i0, p.L, Ev, g, t);
    accumulate_times<T>(dk, sf, q, p.q_rs, i0, p.L, E, g, t);
  }
  GEMM_UNROLL
  for (int h = 0; h < 2; ++h) {
    const int64_t key = r[h];
    if (key >= p.S) continue;
    GEMM_UNROLL
    for (int dt = 0; dt < 128 / 8; ++dt) {
      const int64_t c = dt * 8 + 2 * t;
      if (p.dk && dt < E / 8) {
        T* o = p.dk + (b * p.S + key) * p.E + c;
        o[0] = from_acc<T>(dk[dt][2 * h] * p.scale), o[1] = from_acc<T>(dk[dt][2 * h + 1] * p.scale);
      }
      if (p.dv && dt < Ev / 8) {
        T* o = p.dv + (b * p.S + key) * p.Ev + c;
        o[0] = from_acc<T>(dv[dt][2 * h]), o[1] = from_acc<T>(dv[dt][2 * h + 1]);
      }
    }
  }
}

// A warp owns 16 queries; per tile of 16 keys: S = Q K^T and dP' = dO V^T on tensor cores,
// dS per element, then dQ += dS K.
template <typename T>
__global__ void __launch_bounds__(kWarps * 32) dq_tc_kernel(AttentionParams<T> p) {
  using gemm_detail::from_acc;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t b = pair_index(), row0 = (int64_t(blockIdx.x) * kWarps + warp) * kTcRows;
  if (b >= p.batch || row0 >= p.L) return;  // uniform across the warp
  const T* q = p.q + p.off[b];
  const T* k = p.k + p.off[p.batch + b];
  const T* v = p.v + p.off[2 * p.batch + b];
  const T* dO = p.dout + b * p.L * p.Ev;
  const int64_t r[2] = {row0 + g, row0 + g + 8};
  const int E = int(p.E), Ev = int(p.Ev);
  std::uint32_t qf[128 / 16][4], of[128 / 16][4];
  load_a_frags<T>(qf, q, p.q_rs, r, p.L, E, t);
  load_a_frags<T>(of, dO, p.Ev, r, p.L, Ev, t);
  float dq[128 / 8][4];
  GEMM_UNROLL
  for (int dt = 0; dt < 128 / 8; ++dt)
    GEMM_UNROLL
    for (int c = 0; c < 4; ++c) dq[dt][c] = 0.f;
  const int64_t last = row0 + kTcRows - 1 < p.L - 1 ? row0 + kTcRows - 1 : p.L - 1;
  const int64_t kend = p.causal ? (last + 1 < p.S ? last + 1 : p.S) : p.S;
  for (int64_t j0 = 0; j0 < kend; j0 += 16) {
    float sc[2][4], dp[2][4], ds[2][4];
    times_rows_t<T>(sc, qf, k, p.k_rs, j0, p.S, E, g, t);
    times_rows_t<T>(dp, of, v, p.v_rs, j0, p.S, Ev, g, t);
    GEMM_UNROLL
    for (int nt = 0; nt < 2; ++nt)
      GEMM_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int64_t query = r[c >> 1], key = j0 + nt * 8 + 2 * t + (c & 1);
        float x = 0.f, y = 0.f;
        if (key < p.S && query < p.L) probs(p, b, query, key, sc[nt][c], dp[nt][c], &x, &y);
        ds[nt][c] = y;
      }
    std::uint32_t sf[4];
    to_a_frag<T>(sf, ds);
    accumulate_times<T>(dq, sf, k, p.k_rs, j0, p.S, E, g, t);
  }
  GEMM_UNROLL
  for (int h = 0; h < 2; ++h) {
    const int64_t row = r[h];
    if (row >= p.L) continue;
    GEMM_UNROLL
    for (int dt = 0; dt < 128 / 8; ++dt) {
      if (dt >= E / 8) break;
      T* o = p.dq + (b * p.L + row) * p.E + dt * 8 + 2 * t;
      o[0] = from_acc<T>(dq[dt][2 * h] * p.scale), o[1] = from_acc<T>(dq[dt][2 * h + 1] * p.scale);
    }
  }
}

template <typename T>
inline bool use_tensor_cores_backward(const AttentionParams<T>& p) {
  return (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) && p.E % 16 == 0 &&
         p.Ev % 16 == 0 && p.E > 0 && p.Ev > 0 && p.E <= 128 && p.Ev <= 128;
}

template <typename T>
inline bool use_tensor_cores(const AttentionParams<T>& p) {
  return (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) && p.E % 16 == 0 &&
         p.Ev % 8 == 0 && p.E > 0 && p.Ev > 0 && p.E <= 128 && p.Ev <= 128;
}

}  // namespace attention_detail

// One block of kWarps rows; grid (row blocks, pairs): the (batch, head) pairs fill grid.y up to
// max_y (CUDA's limit; tests pass less) and go on along grid.z, so up to 65535^2 pairs. `rows`
// is L (forward, delta, dq) or S (dk_dv).
inline LaunchPlan attention_plan(int64_t rows, int64_t batch, int64_t max_y = kMaxGridYZ) {
  using namespace attention_detail;
  LaunchPlan plan;
  const int64_t z = (batch + max_y - 1) / max_y, y = z > 0 ? (batch + z - 1) / z : 0;  // fewest idle blocks
  plan.grid = dim3(unsigned((rows + kWarps - 1) / kWarps), unsigned(y), unsigned(z));
  plan.block = dim3(kWarps * 32, 1, 1);
  plan.name = "attention_simt";
  return plan;
}

template <typename T>
void attention_forward_launch(const AttentionParams<T>& p, cudaStream_t s, int64_t max_y = kMaxGridYZ) {
  using namespace attention_detail;
  if (p.batch <= 0 || p.L <= 0) return;
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    if (use_tensor_cores(p)) {
      const LaunchPlan plan = attention_plan((p.L + kTcRows - 1) / kTcRows, p.batch, max_y);
      LAUNCH(forward_tc_kernel<T>, plan.grid, plan.block, 0, s, p);
      return;
    }
  }
  const LaunchPlan plan = attention_plan(p.L, p.batch, max_y);
  LAUNCH(forward_kernel<T>, plan.grid, plan.block, 0, s, p);
}

template <typename T>
void attention_backward_launch(const AttentionParams<T>& p, cudaStream_t s, int64_t max_y = kMaxGridYZ) {
  using namespace attention_detail;
  if (p.batch <= 0) return;
  if (p.L > 0) {
    const LaunchPlan rows = attention_plan(p.L, p.batch, max_y);
    LAUNCH(delta_kernel<T>, rows.grid, rows.block, 0, s, p);
  }
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    if (use_tensor_cores_backward(p)) {
      if (p.dq && p.L > 0) {
        const LaunchPlan rows = attention_plan((p.L + kTcRows - 1) / kTcRows, p.batch, max_y);
        LAUNCH(dq_tc_kernel<T>, rows.grid, rows.block, 0, s, p);
      }
      if ((p.dk || p.dv) && p.S > 0) {
        const LaunchPlan cols = attention_plan((p.S + kTcRows - 1) / kTcRows, p.batch, max_y);
        LAUNCH(dk_dv_tc_kernel<T>, cols.grid, cols.block, 0, s, p);
      }
      return;
    }
  }
  if (p.dq && p.L > 0) {
    const LaunchPlan rows = attention_plan(p.L, p.batch, max_y);
    LAUNCH(dq_kernel<T>, rows.grid, rows.block, 0, s, p);
  }
  if ((p.dk || p.dv) && p.S > 0) {
    const LaunchPlan cols = attention_plan(p.S, p.batch, max_y);
    LAUNCH(dk_dv_kernel<T>, cols.grid, cols.block, 0, s, p);
  }
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
