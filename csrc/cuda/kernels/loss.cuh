/* Loss kernels, torch-free: the fused classifier (cross-entropy loss and its gradient in one
   kernel), target checks, deterministic reductions, gradient scaling, column sums, MSE and
   BCE-with-logits.

   Fused classifier (llm.c-style): one block of 256 threads per row of logits. Pass 1 streams
   the row once with 16-byte loads where the row allows, each thread keeping an online
   (max, sum of exp) pair plus the sums label smoothing / probability targets need; the pairs
   meet through warp shuffles and shared memory. Thread 0 forms the row's loss; pass 2 rereads
   the row (L2-resident) and writes scale * d loss / d logits, which may overwrite the logits in
   place (linear_cross_entropy). fp32 math for fp16/bf16/fp32 (fp64 for double). A target out
   of range sets a flag (the binding raises) and its row is never indexed by it.
   Reductions of row losses run in a fixed order (one block): results are deterministic. */
#pragma once
#include "gemm.cuh"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fusedops::FUSEDOPS_CUDA_NS {

struct CrossEntropyParams {
  int64_t N = 0, C = 0;
  const void* x = nullptr;  // logits [N, C], row stride ldx (unit column stride)
  int64_t ldx = 0;
  const int64_t* target = nullptr;  // class indices [N] or nullptr with probs
  const void* probs = nullptr;      // [N, C], row stride ldp
  int64_t ldp = 0;
  const void* weight = nullptr;  // [C] or nullptr
  int64_t ignore_index = -100;
  double label_smoothing = 0;
  void* loss_rows = nullptr;         // optional [N] of T (reduction "none")
  void* loss_acc = nullptr;          // optional [N] of the accumulator type (for the reduction)
  void* grad = nullptr;              // optional [N, C] row stride ldg; may equal x
  int64_t ldg = 0;
  const void* scale_ptr = nullptr;   // optional: one accumulator-typed value: grads *= 1 / *p
  double scale = 1;                  // grads *= scale
  const void* row_scale = nullptr;   // optional [N] of T: grads of row i *= row_scale[i]
};

namespace loss_detail {

using gemm_detail::from_acc;
using gemm_detail::to_acc;
constexpr int kThreads = 256, kWarps = kThreads / 32;

template <typename Acc>
__device__ __forceinline__ Acc exp_acc(Acc x) {
  if constexpr (std::is_same_v<Acc, double>) return exp(x);
  else return expf(x);
}
template <typename Acc>
__device__ __forceinline__ Acc log_acc(Acc x) {
  if constexpr (std::is_same_v<Acc, double>) return log(x);
  else return logf(x);
}
template <typename Acc>
__device__ __forceinline__ Acc neg_inf() {
  return Acc(-INFINITY);
}

// (m, s) <- the log-sum-exp pair of both; -inf blocks add nothing, NaN propagates through s.
template <typename Acc>
__device__ __forceinline__ void lse_merge(Acc& m, Acc& s, Acc m2, Acc s2) {
  if (m2 > m) {
    s = s * exp_acc(m - m2) + s2;
    m = m2;
  } else if (m2 == m) {
    s += s2;
  } else {
    s += s2 * exp_acc(m2 - m);
  }
}

template <typename Acc>
__device__ __forceinline__ void lse_add(Acc& m, Acc& s, Acc v) {
  if (v > m) {
    s = s * exp_acc(m - v) + Acc(1);
    m = v;
  } else if (v != neg_inf<Acc>()) {
    s += exp_acc(v - m);  // NaN v or m: NaN
  }
}

template <typename Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Elements per 16-byte pack.
template <typename T>
constexpr int kPack = 16 / int(sizeof(T));

template <typename T>
__device__ __forceinline__ void load_pack(const T* p, T (&v)[kPack<T>]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  memcpy(static_cast<void*>(&v[0]), &raw, 16);
}

// Whether rows can be read in 16-byte packs: aligned base and row strides.
template <typename T>
__device__ __forceinline__ bool packable(const void* p, int64_t ld, int64_t C) {
  return (reinterpret_cast<uintptr_t>(p) % 16 == 0) && ((ld * int64_t(sizeof(T))) % 16 == 0) &&
         C >= kPack<T>;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) cross_entropy_kernel(CrossEntropyParams p, int* bad) {
  using Acc = gemm_acc_t<T>;
  SMEM_ARRAY(Acc, red, 5, kWarps);  // m, s, a, b, c
  SMEM_ARRAY(Acc, row, 6);
  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t C = p.C;
  const T* x = static_cast<const T*>(p.x) + i * p.ldx;
  const T* q = p.probs ? static_cast<const T*>(p.probs) + i * p.ldp : nullptr;
  const T* w = static_cast<const T*>(p.weight);
  T* g = p.grad ? static_cast<T*>(p.grad) + i * p.ldg : nullptr;
  const Acc ls = Acc(p.label_smoothing);
  int64_t t = -1;
  if (p.target) {
    t = p.target[i];
    const bool ignored = t == p.ignore_index;
    if (!ignored && (t < 0 || t >= C)) {  // never indexed: flag it, NaN loss, zero gradient
      if (tid == 0) atomicExch(bad, 1);
    }
    if (ignored || t < 0 || t >= C) {
      const Acc l = ignored ? Acc(0) : Acc(NAN);
      if (tid == 0) {
        if (p.loss_rows) static_cast<T*>(p.loss_rows)[i] = from_acc<T>(l);
        if (p.loss_acc) static_cast<Acc*>(p.loss_acc)[i] = l;
      }
      if (g)
        for (int64_t j = tid; j < C; j += kThreads) g[j] = from_acc<T>(Acc(0));
      return;  // uniform across the block
    }
  }
  const bool smooth = !q && ls > Acc(0);
  const Acc keep = Acc(1) - ls, add = ls / Acc(C);
  // reference point for the weighted sums: the row's first logit when finite
  Acc r = to_acc(x[0]);
  if (!(r > neg_inf<Acc>() && r < -neg_inf<Acc>())) r = Acc(0);
  // a: sum w (x - r) or sum w q'; b: sum w q' (x - r); c: sum w (label smoothing)
  Acc m = neg_inf<Acc>(), s = 0, a = 0, b = 0, c = 0;
  auto visit = [&](int64_t j, Acc v) {
    lse_add(m, s, v);
    const Acc wj = w ? to_acc(w[j]) : Acc(1);
    if (smooth) a += wj * (v - r), c += wj;
    if (q) {
      const Acc qq = (to_acc(q[j]) * keep + add) * wj;
      a += qq;
      b += qq * (v - r);
    }
  };
  constexpr int P = kPack<T>;
  const bool packed = packable<T>(x, p.ldx, C);
  if (packed) {
    const int64_t packs = C / P;
    for (int64_t k = tid; k < packs; k += kThreads) {
      T v[P];
      load_pack<T>(x + k * P, v);
      for (int e = 0; e < P; ++e) visit(k * P + e, to_acc(v[e]));
    }
    for (int64_t j = packs * P + tid; j < C; j += kThreads) visit(j, to_acc(x[j]));
  } else {
    for (int64_t j = tid; j < C; j += kThreads) visit(j, to_acc(x[j]));
  }
  // block reduction: warps by shuffles, then warp 0 over the warps' results
  for (int o = 16; o > 0; o >>= 1) {
    const Acc m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    lse_merge(m, s, m2, s2);
  }
  a = warp_sum(a);
  b = warp_sum(b);
  c = warp_sum(c);
  if (lane == 0)
    red[0][warp] = m, red[1][warp] = s, red[2][warp] = a, red[3][warp] = b, red[4][warp] = c;
  __syncthreads();
  if (warp == 0) {
    m = lane < kWarps ? red[0][lane] : neg_inf<Acc>();
    s = lane < kWarps ? red[1][lane] : Acc(0);
    a = lane < kWarps ? red[2][lane] : Acc(0);
    b = lane < kWarps ? red[3][lane] : Acc(0);
    c = lane < kWarps ? red[4][lane] : Acc(0);
    for (int o = 16; o > 0; o >>= 1) {
      const Acc m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      lse_merge(m, s, m2, s2);
    }
    a = warp_sum(a);
    b = warp_sum(b);
    c = warp_sum(c);
    if (lane == 0) {
      if (s != s) m = s;
      const Acc log_s = log_acc(s);
      Acc loss, ga;
      if (q) {
        loss = a * ((m - r) + log_s) - b;
        ga = a;
      } else {
        const Acc wt = w ? to_acc(w[t]) : Acc(1);
        const Acc nll = (m - to_acc(x[t])) + log_s;
        if (smooth) {
          loss = keep * wt * nll + add * (c * ((m - r) + log_s) - a);
          ga = keep * wt + add * c;
        } else {
          loss = wt * nll;
          ga = wt;
        }
      }
      if (p.loss_rows) static_cast<T*>(p.loss_rows)[i] = from_acc<T>(loss);
      if (p.loss_acc) static_cast<Acc*>(p.loss_acc)[i] = loss;
      Acc sc = Acc(p.scale);
      if (p.scale_ptr) sc /= *static_cast<const Acc*>(p.scale_ptr);
      if (p.row_scale) sc *= to_acc(static_cast<const T*>(p.row_scale)[i]);
      row[0] = m, row[1] = ga / s, row[2] = sc;
      row[3] = t >= 0 ? keep * (w ? to_acc(w[t]) : Acc(1)) : Acc(0);
    }
  }
  __syncthreads();
  if (!g) return;
  const Acc mm = row[0], pa = row[1], sc = row[2], gt = row[3];
  auto grad_of = [&](int64_t j, Acc v) {
    const Acc wj = w ? to_acc(w[j]) : Acc(1);
    Acc sub;
    if (q) sub = (to_acc(q[j]) * keep + add) * wj;
    else sub = (smooth ? add * wj : Acc(0)) + (j == t ? gt : Acc(0));
    return from_acc<T>((pa * exp_acc(v - mm) - sub) * sc);
  };
  const bool gpacked = packed && packable<T>(g, p.ldg, C);
  if (gpacked) {
    const int64_t packs = C / P;
    for (int64_t k = tid; k < packs; k += kThreads) {
      T v[P], o[P];
      load_pack<T>(x + k * P, v);
      for (int e = 0; e < P; ++e) o[e] = grad_of(k * P + e, to_acc(v[e]));
      uint4 raw;
      memcpy(&raw, static_cast<const void*>(&o[0]), 16);
      *reinterpret_cast<uint4*>(g + k * P) = raw;
    }
    for (int64_t j = packs * P + tid; j < C; j += kThreads) g[j] = grad_of(j, to_acc(x[j]));
  } else {
    for (int64_t j = tid; j < C; j += kThreads) g[j] = grad_of(j, to_acc(x[j]));
  }
}

// Checks class-index targets and sums weight[t] over the rows kept: *out = that sum, *bad = 1
// when a target is out of range. One block.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    targets_kernel(int64_t N, int64_t C, const int64_t* target, const T* weight,
                   int64_t ignore_index, gemm_acc_t<T>* out, int* bad) {
  using Acc = gemm_acc_t<T>;
  SMEM_ARRAY(Acc, red, kWarps);
  const int tid = threadIdx.x;
  Acc sum = 0;
  for (int64_t i = tid; i < N; i += kThreads) {
    const int64_t t = target[i];
    if (t == ignore_index) continue;
    if (t < 0 || t >= C) {
      atomicExch(bad, 1);
      continue;
    }
    sum += weight ? to_acc(weight[t]) : Acc(1);
  }
  sum = warp_sum(sum);
  if ((tid & 31) == 0) red[tid >> 5] = sum;
  __syncthreads();
  if (tid == 0) {
    Acc total = 0;
    for (int k = 0; k < kWarps; ++k) total += red[k];
    *out = total;
  }
}

// out = sum(v[0..n)) * mul / (div ? *div : 1), in a fixed order. One block.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    reduce_kernel(int64_t n, const gemm_acc_t<T>* v, const gemm_acc_t<T>* div, double mul, T* out) {
  using Acc = gemm_acc_t<T>;
  SMEM_ARRAY(Acc, red, kWarps);
  const int tid = threadIdx.x;
  Acc sum = 0;
  for (int64_t i = tid; i < n; i += kThreads) sum += v[i];
  sum = warp_sum(sum);
  if ((tid & 31) == 0) red[tid >> 5] = sum;
  __syncthreads();
  if (tid == 0) {
    Acc total = 0;
    for (int k = 0; k < kWarps; ++k) total += red[k];
    total *= Acc(mul);
    if (div) total /= *div;
    *out = from_acc<T>(total);
  }
}

// out[i, j] = g[i, j] * s[i * ss] over [N, C] contiguous (out may equal g).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    scale_kernel(int64_t N, int64_t C, const T* g, const T* s, int64_t ss, T* out) {
  const int64_t n = N * C;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * kThreads) {
    const int64_t i = e / C;
    out[e] = from_acc<T>(to_acc(g[e]) * to_acc(s[i * ss]));
  }
}

// out[j] (+)= sum_i g[i, j] (one thread per column, rows in order); accumulate: add to out.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    column_sums_kernel(int64_t N, int64_t C, const T* g, int64_t ldg, T* out, bool accumulate) {
  using Acc = gemm_acc_t<T>;
  const int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (j >= C) return;
  Acc s = accumulate ? to_acc(out[j]) : Acc(0);
  for (int64_t i = 0; i < N; ++i) s += to_acc(g[i * ldg + j]);
  out[j] = from_acc<T>(s);
}

template <typename Acc>
__device__ __forceinline__ Acc log_sigmoid(Acc x) {
  const Acc e = exp_acc(-(x < Acc(0) ? -x : x));
  if constexpr (std::is_same_v<Acc, double>) return (x < 0 ? x : 0) - log1p(e);
  else return (x < 0.f ? x : 0.f) - log1pf(e);
}

// kind 0: MSE, 1: BCE with logits. Per-element loss into rows (T) and/or acc (Acc).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    pointwise_loss_kernel(int kind, int64_t n, const T* x, const T* y, const T* w, const T* pw,
                          T* rows, gemm_acc_t<T>* acc) {
  using Acc = gemm_acc_t<T>;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * kThreads) {
    const Acc xv = to_acc(x[e]), yv = to_acc(y[e]);
    Acc l;
    if (kind == 0) {
      l = (xv - yv) * (xv - yv);
    } else {
      const Acc lw = pw ? (to_acc(pw[e]) - Acc(1)) * yv + Acc(1) : Acc(1);
      l = (Acc(1) - yv) * xv - lw * log_sigmoid(xv);
      if (w) l *= to_acc(w[e]);
    }
    if (rows) rows[e] = from_acc<T>(l);
    if (acc) acc[e] = l;
  }
}

// Gradients: s = scale * g[e * gs] (* w); MSE gx = 2 s (x - y); BCE gx = s ((1-y) - lw sigmoid(-x)),
// gy = s (-x - (pw - 1) log_sigmoid(x)).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    pointwise_loss_backward_kernel(int kind, int64_t n, const T* g, int64_t gs, double scale,
                                   const T* x, const T* y, const T* w, const T* pw, T* gx, T* gy) {
  using Acc = gemm_acc_t<T>;
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * kThreads) {
    const Acc xv = to_acc(x[e]), yv = to_acc(y[e]);
    Acc s = Acc(scale) * to_acc(g[e * gs]);
    if (kind == 0) {
      const Acc d = Acc(2) * s * (xv - yv);
      if (gx) gx[e] = from_acc<T>(d);
      if (gy) gy[e] = from_acc<T>(-d);
      continue;
    }
    if (w) s *= to_acc(w[e]);
    const Acc pwm1 = pw ? to_acc(pw[e]) - Acc(1) : Acc(0);
    if (gx) {
      const Acc sig_neg = Acc(1) / (Acc(1) + exp_acc(xv));
      gx[e] = from_acc<T>(s * ((Acc(1) - yv) - (pwm1 * yv + Acc(1)) * sig_neg));
    }
    if (gy) gy[e] = from_acc<T>(s * (-xv - pwm1 * log_sigmoid(xv)));
  }
}

constexpr int64_t kMaxBlocks = 65535;  // a grid-stride loop takes the rest

inline unsigned flat_blocks(int64_t n) { return grid_stride_blocks(n, kThreads, kMaxBlocks); }

}  // namespace loss_detail

// ---- plans and launches ---------------------------------------------------------------------

inline LaunchPlan cross_entropy_plan(int64_t N) {
  LaunchPlan plan;
  plan.grid = dim3(unsigned(N > 0 ? N : 1));
  plan.block = dim3(loss_detail::kThreads);
  plan.name = "cross_entropy_fused";
  return plan;
}

template <typename T>
void cross_entropy_launch(const CrossEntropyParams& p, int* bad, cudaStream_t s) {
  if (p.N <= 0) return;
  LAUNCH(loss_detail::cross_entropy_kernel<T>, cross_entropy_plan(p.N).grid, dim3(loss_detail::kThreads), 0, s,
         p, bad);
}

template <typename T>
void targets_launch(int64_t N, int64_t C, const int64_t* target, const T* weight, int64_t ignore_index,
                    gemm_acc_t<T>* out, int* bad, cudaStream_t s) {
  LAUNCH(loss_detail::targets_kernel<T>, dim3(1), dim3(loss_detail::kThreads), 0, s, N, C, target, weight,
         ignore_index, out, bad);
}

template <typename T>
void reduce_launch(int64_t n, const gemm_acc_t<T>* v, const gemm_acc_t<T>* div, double mul, T* out,
                   cudaStream_t s) {
  LAUNCH(loss_detail::reduce_kernel<T>, dim3(1), dim3(loss_detail::kThreads), 0, s, n, v, div, mul, out);
}

template <typename T>
void scale_launch(int64_t N, int64_t C, const T* g, const T* sc, int64_t ss, T* out, cudaStream_t s) {
  if (N * C <= 0) return;
  LAUNCH(loss_detail::scale_kernel<T>, dim3(loss_detail::flat_blocks(N * C)), dim3(loss_detail::kThreads), 0, s,
         N, C, g, sc, ss, out);
}

template <typename T>
void column_sums_launch(int64_t N, int64_t C, const T* g, int64_t ldg, T* out, bool accumulate,
                        cudaStream_t s) {
  if (C <= 0) return;
  LAUNCH(loss_detail::column_sums_kernel<T>, dim3(unsigned((C + loss_detail::kThreads - 1) / loss_detail::kThreads)),
         dim3(loss_detail::kThreads), 0, s, N, C, g, ldg, out, accumulate);
}

template <typename T>
void pointwise_loss_launch(int kind, int64_t n, const T* x, const T* y, const T* w, const T* pw, T* rows,
                           gemm_acc_t<T>* acc, cudaStream_t s) {
  if (n <= 0) return;
  LAUNCH(loss_detail::pointwise_loss_kernel<T>, dim3(loss_detail::flat_blocks(n)), dim3(loss_detail::kThreads), 0,
         s, kind, n, x, y, w, pw, rows, acc);
}

template <typename T>
void pointwise_loss_backward_launch(int kind, int64_t n, const T* g, int64_t gs, double scale, const T* x,
                                    const T* y, const T* w, const T* pw, T* gx, T* gy, cudaStream_t s) {
  if (n <= 0) return;
  LAUNCH(loss_detail::pointwise_loss_backward_kernel<T>, dim3(loss_detail::flat_blocks(n)),
         dim3(loss_detail::kThreads), 0, s, kind, n, g, gs, scale, x, y, w, pw, gx, gy);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
