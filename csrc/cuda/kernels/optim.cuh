/* Multi-tensor optimizer kernels, torch-free: Adam/AdamW, SGD, the total gradient norm and the
   clipping scale, each one launch over all tensors of a call.

   Work list: the tensors' elements are cut into chunks of at most kChunk elements (a tensor
   spans whole chunks, a chunk never spans two tensors); a table in device memory holds one
   OptimEntry per tensor (pointers, size, per-tensor scalars, alignment flag) followed by one
   OptimChunk per chunk; block b works on chunk b. The binding builds the table on the host
   (build_optim_table) and copies it to the device with one asynchronous copy.

   Per element (one pass over memory: Adam reads p, g, m, v and writes p, m, v): parameters and
   gradients in T (float, double, __half, __nv_bfloat16), state in S (T, or float for 16-bit
   parameters), math in float (double for double). Threads handle 4 consecutive elements,
   loaded and stored as one vector (16 bytes of float) when every array of the tensor is
   aligned for it, element by element otherwise and at the chunk's tail.

   Adam follows torch.optim's formula order (see cpu/kernels/optim.h): p *= 1 - lr wd
   (decoupled) or g += wd p; m = lerp(m, g, 1 - beta1); v = beta2 v + (1 - beta2) g g;
   p += -step_size m / (sqrt(v) / bc2_sqrt + eps), with step_size and bc2_sqrt per tensor.

   Norm: deterministic two stages. Stage 1: block b reduces chunk b (per-thread partials,
   warp shuffles, then the warps through shared memory, in a fixed tree) into partial[b];
   stage 2: one block reduces the partials in double in a fixed order and writes the norm.
   Same inputs, same chunking: the same bits, run after run. */
#pragma once
#include "ptx.cuh"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../../contracts/optim.h"

// `#pragma unroll` for nvcc only (g++ -Wall would warn about an unknown pragma). Every loop over
// a thread's kOptimVec elements is unrolled with constant indices, so its arrays stay in
// registers (a runtime bound would put them in local memory).
#if defined(__CUDACC__)
#define OPTIM_UNROLL _Pragma("unroll")
#else
#define OPTIM_UNROLL
#endif

namespace fusedops::FUSEDOPS_CUDA_NS {

// ---- the work table (host and device) ----------------------------------------------------------

constexpr int64_t kOptimChunk = 64 * 1024;  // elements per block
constexpr int kOptimThreads = 256;
constexpr int kOptimVec = 4;  // elements per thread and iteration

struct OptimEntry {
  void* p = nullptr;         // parameter (or the tensor to scale / reduce)
  const void* g = nullptr;   // gradient
  void* s0 = nullptr;        // exp_avg | momentum_buffer
  void* s1 = nullptr;        // exp_avg_sq
  void* s2 = nullptr;        // max_exp_avg_sq (amsgrad)
  int64_t n = 0;
  double step_size = 0;      // Adam: lr / (1 - beta1^step)
  double bc2_sqrt = 1;       // Adam: (1 - beta2^step)^0.5
  int32_t aligned = 0;       // every array of the entry is aligned for kOptimVec-element vectors
  int32_t fresh = 0;         // SGD: the momentum buffer becomes the gradient
};

struct OptimChunk {
  int64_t begin = 0, end = 0;  // element range within the entry
  int64_t entry = 0;
};

struct OptimTable {
  std::vector<unsigned char> bytes;  // entries, then chunks
  int64_t entries = 0, chunks = 0;
  size_t chunk_offset = 0;  // byte offset of the chunks
};

// The table for `entries` (their n filled in); chunks of at most chunk_elems elements
// (a multiple of kOptimVec).
inline OptimTable build_optim_table(const std::vector<OptimEntry>& entries,
                                    int64_t chunk_elems = kOptimChunk) {
  std::vector<OptimChunk> chunks;
  for (size_t k = 0; k < entries.size(); ++k)
    for (int64_t b = 0; b < entries[k].n; b += chunk_elems) {
      OptimChunk c;
      c.begin = b;
      c.end = b + chunk_elems < entries[k].n ? b + chunk_elems : entries[k].n;
      c.entry = int64_t(k);
      chunks.push_back(c);
    }
  OptimTable t;
  t.entries = int64_t(entries.size());
  t.chunks = int64_t(chunks.size());
  t.chunk_offset = entries.size() * sizeof(OptimEntry);
  t.bytes.resize(t.chunk_offset + chunks.size() * sizeof(OptimChunk));
  if (!entries.empty()) std::memcpy(t.bytes.data(), entries.data(), t.chunk_offset);
  if (!chunks.empty())
    std::memcpy(t.bytes.data() + t.chunk_offset, chunks.data(), chunks.size() * sizeof(OptimChunk));
  return t;
}

inline bool optim_aligned(const void* ptr, size_t elem_bytes) {
  return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % (elem_bytes * kOptimVec) == 0;
}

// AdamHyper, SgdHyper, NormKind and norm_kind(p): contracts/optim.h.

namespace optim_detail {

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(float(v));
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(float(v));
  else return T(v);
}

// kOptimVec elements as one aligned vector access.
template <typename T>
struct alignas(sizeof(T) * kOptimVec) Pack {
  T v[kOptimVec];
};

template <typename T, typename A>
__device__ __forceinline__ void load_vec(const T* p, A* out) {
  const Pack<T> x = *reinterpret_cast<const Pack<T>*>(p);
  OPTIM_UNROLL
  for (int j = 0; j < kOptimVec; ++j) out[j] = A(to_acc(x.v[j]));
}

template <typename T, typename A>
__device__ __forceinline__ void store_vec(T* p, const A* in) {
  Pack<T> x;
  OPTIM_UNROLL
  for (int j = 0; j < kOptimVec; ++j) x.v[j] = from_acc<T>(in[j]);
  *reinterpret_cast<Pack<T>*>(p) = x;
}

__device__ __forceinline__ float sqrt_acc(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_acc(double x) { return sqrt(x); }
__device__ __forceinline__ float fma_acc(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fma_acc(double a, double b, double c) { return fma(a, b, c); }

// Elements [i, i + cnt) of a chunk: vector access when the entry is aligned and cnt is
// kOptimVec, else one by one (lanes from cnt on read as 0 and are not stored).
template <typename A, typename T>
__device__ __forceinline__ void load_n(const T* p, int64_t i, int cnt, bool vec, A* r) {
  if (vec) return load_vec(p + i, r);
  OPTIM_UNROLL
  for (int j = 0; j < kOptimVec; ++j) r[j] = j < cnt ? A(to_acc(p[i + j])) : A(0);
}

template <typename A, typename T>
__device__ __forceinline__ void store_n(T* p, int64_t i, int cnt, bool vec, const A* r) {
  if (vec) return store_vec(p + i, r);
  OPTIM_UNROLL
  for (int j = 0; j < kOptimVec; ++j)
    if (j < cnt) p[i + j] = from_acc<T>(r[j]);
}

// ---- Adam ------------------------------------------------------------------------------------

template <typename T, typename S>
__global__ void __launch_bounds__(kOptimThreads)
    adam_kernel(const OptimEntry* entries, const OptimChunk* chunks, AdamHyper args) {
  using A = acc_t<T>;
  const OptimChunk c = chunks[blockIdx.x];
  const OptimEntry e = entries[c.entry];
  T* p = static_cast<T*>(e.p);
  const T* g = static_cast<const T*>(e.g);
  S* m = static_cast<S*>(e.s0);
  S* v = static_cast<S*>(e.s1);
  S* vm = static_cast<S*>(e.s2);
  // torch's lerp: m + w (g - m) for |w| < 0.5, else g + (w - 1) (g - m), w rounded to A
  const A w = A(1.0 - args.beta1);
  const bool small = (w < A(0) ? -w : w) < A(0.5);
  const A lerp_coef = small ? w : A(w - A(1));
  const A beta2 = A(args.beta2), c2 = A(1.0 - args.beta2);
  const A decay = A(1.0 - args.lr * args.weight_decay), wd = A(args.weight_decay);
  const A bc2 = A(e.bc2_sqrt), eps = A(args.eps), neg_step = A(-e.step_size);
  const bool has_wd = args.weight_decay != 0;
  for (int64_t i = c.begin + int64_t(threadIdx.x) * kOptimVec; i < c.end;
       i += int64_t(blockDim.x) * kOptimVec) {
    const int cnt = c.end - i < kOptimVec ? int(c.end - i) : kOptimVec;
    const bool vec = e.aligned && cnt == kOptimVec;
    A rp[kOptimVec], rg[kOptimVec], rm[kOptimVec], rv[kOptimVec], rvm[kOptimVec] = {};
    load_n(p, i, cnt, vec, rp);
    load_n(g, i, cnt, vec, rg);
    load_n(m, i, cnt, vec, rm);
    load_n(v, i, cnt, vec, rv);
    if (args.amsgrad) load_n(vm, i, cnt, vec, rvm);
    OPTIM_UNROLL
    for (int j = 0; j < kOptimVec; ++j) {  // lanes past cnt compute on zeros, never stored
      A gj = args.maximize ? -rg[j] : rg[j];
      if (has_wd) {
        if (args.decoupled) rp[j] = rp[j] * decay;
        else gj = fma_acc(rp[j], wd, gj);
      }
      rm[j] = fma_acc(lerp_coef, gj - rm[j], small ? rm[j] : gj);
      rv[j] = fma_acc(c2 * gj, gj, rv[j] * beta2);
      A second = rv[j];
      if (args.amsgrad) {
        rvm[j] = rvm[j] > rv[j] || rvm[j] != rvm[j] ? rvm[j] : rv[j];
        second = rvm[j];
      }
      const A denom = sqrt_acc(second) / bc2 + eps;
      rp[j] = rp[j] + (neg_step * rm[j]) / denom;
    }
    store_n(p, i, cnt, vec, rp);
    store_n(m, i, cnt, vec, rm);
    store_n(v, i, cnt, vec, rv);
    if (args.amsgrad) store_n(vm, i, cnt, vec, rvm);
  }
}

// ---- SGD -------------------------------------------------------------------------------------

template <typename T, typename S>
__global__ void __launch_bounds__(kOptimThreads)
    sgd_kernel(const OptimEntry* entries, const OptimChunk* chunks, SgdHyper args) {
  using A = acc_t<T>;
  const OptimChunk c = chunks[blockIdx.x];
  const OptimEntry e = entries[c.entry];
  T* p = static_cast<T*>(e.p);
  const T* g = static_cast<const T*>(e.g);
  S* buf = static_cast<S*>(e.s0);
  const A wd = A(args.weight_decay), mom = A(args.momentum);
  const A keep = A(1.0 - args.dampening), neg_lr = A(-args.lr);
  const bool has_wd = args.weight_decay != 0, has_mom = args.momentum != 0;
  for (int64_t i = c.begin + int64_t(threadIdx.x) * kOptimVec; i < c.end;
       i += int64_t(blockDim.x) * kOptimVec) {
    const int cnt = c.end - i < kOptimVec ? int(c.end - i) : kOptimVec;
    const bool vec = e.aligned && cnt == kOptimVec;
    A rp[kOptimVec], rg[kOptimVec], rb[kOptimVec] = {};
    load_n(p, i, cnt, vec, rp);
    load_n(g, i, cnt, vec, rg);
    if (has_mom && !e.fresh) load_n(buf, i, cnt, vec, rb);
    OPTIM_UNROLL
    for (int j = 0; j < kOptimVec; ++j) {  // lanes past cnt compute on zeros, never stored
      A gj = args.maximize ? -rg[j] : rg[j];
      if (has_wd) gj = fma_acc(rp[j], wd, gj);
      if (has_mom) {
        rb[j] = e.fresh ? gj : fma_acc(gj, keep, rb[j] * mom);
        gj = args.nesterov ? fma_acc(rb[j], mom, gj) : rb[j];
      }
      rp[j] = fma_acc(gj, neg_lr, rp[j]);
    }
    store_n(p, i, cnt, vec, rp);
    if (has_mom) store_n(buf, i, cnt, vec, rb);
  }
}

// ---- norm --------------------------------------------------------------------------------------

template <typename A>
__device__ __forceinline__ A norm_term(A x, NormKind kind, A p) {
  const A a = x < A(0) ? -x : x;
  switch (kind) {
    case NormKind::two: return x * x;
    case NormKind::zero: return a != A(0) ? A(1) : A(0);
    case NormKind::general:
      if constexpr (std::is_same_v<A, float>) return powf(a, p);
      else return pow(a, p);
    default: return a;  // one, inf, -inf
  }
}

// Combine two partials; NaN wins for max and min (torch's norms propagate it).
template <typename A>
__device__ __forceinline__ A norm_combine(A x, A y, NormKind kind) {
  if (kind == NormKind::inf) return x > y || x != x ? x : y;
  if (kind == NormKind::neg_inf) return x < y || x != x ? x : y;
  return x + y;
}

template <typename A>
__device__ __forceinline__ A norm_identity(NormKind kind) {
  return kind == NormKind::neg_inf ? A(INFINITY) : A(0);
}

// Block-wide combine in a fixed tree (warp shuffles, then warp results through shared memory);
// the result is valid in thread 0.
template <typename A>
__device__ A block_combine(A x, NormKind kind) {
  SMEM_ARRAY(A, warp_part, 32);
  for (int off = 16; off > 0; off /= 2) x = norm_combine(x, __shfl_down_sync(0xffffffffu, x, off), kind);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  const int warps = int(blockDim.x) / 32;
  if (lane == 0) warp_part[warp] = x;
  __syncthreads();
  if (warp == 0) {
    x = lane < warps ? warp_part[lane] : norm_identity<A>(kind);
    for (int off = 16; off > 0; off /= 2) x = norm_combine(x, __shfl_down_sync(0xffffffffu, x, off), kind);
  }
  return x;
}

// Stage 1: partial[b] = the reduction of chunk b (in A: float, double for double).
template <typename T>
__global__ void __launch_bounds__(kOptimThreads)
    norm_partial_kernel(const OptimEntry* entries, const OptimChunk* chunks, NormKind kind,
                        double p, acc_t<T>* partial) {
  using A = acc_t<T>;
  const OptimChunk c = chunks[blockIdx.x];
  const OptimEntry e = entries[c.entry];
  const T* x = static_cast<const T*>(e.p);
  const A pa = A(p);
  A acc = norm_identity<A>(kind);
  for (int64_t i = c.begin + int64_t(threadIdx.x) * kOptimVec; i < c.end;
       i += int64_t(blockDim.x) * kOptimVec) {
    const int cnt = c.end - i < kOptimVec ? int(c.end - i) : kOptimVec;
    A r[kOptimVec];
    load_n(x, i, cnt, e.aligned && cnt == kOptimVec, r);
    OPTIM_UNROLL
    for (int j = 0; j < kOptimVec; ++j)
      if (j < cnt) acc = norm_combine(acc, norm_term(r[j], kind, pa), kind);
  }
  acc = block_combine(acc, kind);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Stage 2 (one block): out = finish(reduction of partial[0, count)), in double.
template <typename T>
__global__ void __launch_bounds__(kOptimThreads)
    norm_final_kernel(const acc_t<T>* partial, int64_t count, NormKind kind, double p, T* out) {
  double acc = norm_identity<double>(kind);
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x)
    acc = norm_combine(acc, double(partial[i]), kind);
  acc = block_combine(acc, kind);
  if (threadIdx.x == 0) {
    if (count == 0) acc = 0;  // no elements: 0, for every kind
    else if (kind == NormKind::two) acc = sqrt(acc);
    else if (kind == NormKind::general) acc = pow(acc, 1.0 / p);
    *out = from_acc<T>(acc_t<T>(acc));
  }
}

// ---- scale ---------------------------------------------------------------------------------------

// x *= min(max_norm / (norm + 1e-6), 1), each step rounded to T as torch computes it in the
// norm's dtype; NaN stays NaN.
template <typename T>
__global__ void __launch_bounds__(kOptimThreads)
    clip_scale_kernel(const OptimEntry* entries, const OptimChunk* chunks, const T* norm,
                      double max_norm) {
  using A = acc_t<T>;
  const OptimChunk c = chunks[blockIdx.x];
  const OptimEntry e = entries[c.entry];
  T* x = static_cast<T*>(e.p);
  const A denom = to_acc(from_acc<T>(to_acc(*norm) + A(1e-6)));
  A coef = to_acc(from_acc<T>(A(max_norm) / denom));
  coef = coef > A(1) ? A(1) : coef;
  for (int64_t i = c.begin + int64_t(threadIdx.x) * kOptimVec; i < c.end;
       i += int64_t(blockDim.x) * kOptimVec) {
    const int cnt = c.end - i < kOptimVec ? int(c.end - i) : kOptimVec;
    const bool vec = e.aligned && cnt == kOptimVec;
    A r[kOptimVec];
    load_n(x, i, cnt, vec, r);
    OPTIM_UNROLL
    for (int j = 0; j < kOptimVec; ++j) r[j] = r[j] * coef;
    store_n(x, i, cnt, vec, r);
  }
}

}  // namespace optim_detail

// ---- plans and launches ------------------------------------------------------------------------

struct OptimPlan {
  dim3 grid, block;
  const char* name = "";
};

inline OptimPlan optim_plan(const OptimTable& t, const char* name) {
  OptimPlan plan;
  plan.grid = dim3(unsigned(t.chunks > 0 ? t.chunks : 1), 1, 1);
  plan.block = dim3(kOptimThreads, 1, 1);
  plan.name = name;
  return plan;
}

// `table`: the bytes of build_optim_table, in device memory (host memory for the simulator).
template <typename T, typename S>
void adam_launch(const OptimPlan& plan, const OptimTable& t, const unsigned char* table,
                 const AdamHyper& args, cudaStream_t stream) {
  if (t.chunks == 0) return;
  LAUNCH((optim_detail::adam_kernel<T, S>), plan.grid, plan.block, 0, stream,
         reinterpret_cast<const OptimEntry*>(table),
         reinterpret_cast<const OptimChunk*>(table + t.chunk_offset), args);
}

template <typename T, typename S>
void sgd_launch(const OptimPlan& plan, const OptimTable& t, const unsigned char* table,
                const SgdHyper& args, cudaStream_t stream) {
  if (t.chunks == 0) return;
  LAUNCH((optim_detail::sgd_kernel<T, S>), plan.grid, plan.block, 0, stream,
         reinterpret_cast<const OptimEntry*>(table),
         reinterpret_cast<const OptimChunk*>(table + t.chunk_offset), args);
}

// partial: t.chunks elements of acc_t<T> scratch; out: one T. An empty table writes the
// identity's norm (0).
template <typename T>
void norm_launch(const OptimPlan& plan, const OptimTable& t, const unsigned char* table, double p,
                 optim_detail::acc_t<T>* partial, T* out, cudaStream_t stream) {
  const NormKind kind = norm_kind(p);
  if (t.chunks > 0)
    LAUNCH((optim_detail::norm_partial_kernel<T>), plan.grid, plan.block, 0, stream,
           reinterpret_cast<const OptimEntry*>(table),
           reinterpret_cast<const OptimChunk*>(table + t.chunk_offset), kind, p, partial);
  LAUNCH((optim_detail::norm_final_kernel<T>), dim3(1), dim3(kOptimThreads), 0, stream,
         static_cast<const optim_detail::acc_t<T>*>(partial), t.chunks, kind, p, out);
}

template <typename T>
void clip_scale_launch(const OptimPlan& plan, const OptimTable& t, const unsigned char* table,
                       const T* norm, double max_norm, cudaStream_t stream) {
  if (t.chunks == 0) return;
  LAUNCH((optim_detail::clip_scale_kernel<T>), plan.grid, plan.block, 0, stream,
         reinterpret_cast<const OptimEntry*>(table),
         reinterpret_cast<const OptimChunk*>(table + t.chunk_offset), norm, max_norm);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
