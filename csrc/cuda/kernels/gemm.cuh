/* CUDA GEMM: C = act(alpha * A @ B + beta * C + bias), torch-free.

   A(i,k) = A[i*rsa + k*csa], B(k,j) = B[k*rsb + j*csb] (any strides, 0 included), C row-major
   with leading dimension ldc; batches over blockIdx.z with per-operand batch strides (0
   broadcasts A or B). beta == 0 never reads C. Accumulation in fp32 (fp64 for double).

   Variants (gemm_plan picks one; the same plan drives the CUDA build and the simulator):
     tc     fp16 / bf16: mma.sync m16n8k16, fp32 accumulators; fp32 with allow_tf32:
            mma.sync m16n8k8 on tf32 (round-to-nearest conversion when fragments are read).
            Block tile 128x128 (8 warps, warp tile 64x32) or 64x64 (4 warps, 32x32) for small
            problems; K step 32 (16-bit) or 16 (fp32); 3-stage cp.async pipeline into padded
            shared tiles (row pads chosen so that ldmatrix / fragment reads are conflict-free).
            Each operand's tile is stored K-major or MN-major, following its contiguous
            dimension; 16-byte chunks come by cp.async when the operand is contiguous along that
            dimension with 16-byte aligned rows ("fast"), otherwise (any stride, alignment, or
            a chunk straddling the matrix edge) by guarded element-wise loads. ldmatrix(.trans)
            builds the 16-bit fragments; tf32 fragments are read element-wise.
     simt   fp32 without tf32, and double: 128x64 block tile, K step 8, 256 threads with 8x4
            outputs each, register-staged double-buffered shared tiles (one barrier per step).
   Tiles are numbered along grid.x in groups of 8 tile rows (L2 reuse of B panels); batches
   beyond kMaxGridYZ (65535) loop over blockIdx.z. */
#pragma once
#include "ptx.cuh"
#include "limits.cuh"

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../../contracts/activation.h"

// `#pragma unroll` and __noinline__ for nvcc only (g++ -Wall would warn about an unknown pragma;
// the simulator leaves __noinline__ undefined).
#if defined(__CUDACC__)
#define GEMM_UNROLL _Pragma("unroll")
#define GEMM_NOINLINE __noinline__
#else
#define GEMM_UNROLL
#define GEMM_NOINLINE
#endif

namespace fusedops::FUSEDOPS_CUDA_NS {

// Accumulator / scalar type: double for double, float otherwise.
template <typename T>
using gemm_acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>  // T: float, double, __half, __nv_bfloat16
struct GemmParams {
  int64_t M = 0, N = 0, K = 0, batch = 1;
  const T* A = nullptr;
  int64_t rsa = 0, csa = 0, batch_stride_a = 0;  // A(i,k) = A[i*rsa + k*csa]; batch stride 0 broadcasts
  const T* B = nullptr;
  int64_t rsb = 0, csb = 0, batch_stride_b = 0;  // B(k,j) = B[k*rsb + j*csb]
  T* C = nullptr;
  int64_t ldc = 0, batch_stride_c = 0;  // C(i,j) = C[i*ldc + j], batch_stride_c > 0
  gemm_acc_t<T> alpha = 1, beta = 0;    // float, or double for T = double; beta == 0 never reads C
  const T* bias = nullptr;              // unbatched
  BiasMode bias_mode = BiasMode::none;
  Activation act = Activation::none;
  T* preact = nullptr;  // optional: alpha*AB + beta*C + bias, before the activation
  int64_t ld_preact = 0, batch_stride_preact = 0;
  bool allow_tf32 = false;  // T = float: tensor cores with tf32 inputs allowed
};

struct LaunchPlan {
  dim3 grid, block;
  size_t smem_bytes = 0;  // dynamic shared memory
  int variant = 0;
  const char* name = "";
  size_t workspace_bytes = 0;  // global scratch the launch needs (bias_act_backward)
};

namespace gemm_detail {

// ---- scalar helpers ------------------------------------------------------------------------
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

template <typename T>
__device__ __forceinline__ T from_acc(gemm_acc_t<T> v) {
  if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
  else return v;
}
template <typename T>
__device__ __forceinline__ T zero() {
  return from_acc<T>(gemm_acc_t<T>(0));
}

template <typename A>
__device__ __forceinline__ A erf_(A x) {
  if constexpr (std::is_same_v<A, float>) return erff(x);
  else return erf(x);
}
template <typename A>
__device__ __forceinline__ A tanh_(A x) {
  if constexpr (std::is_same_v<A, float>) return tanhf(x);
  else return tanh(x);
}
template <typename A>
__device__ __forceinline__ A exp_(A x) {
  if constexpr (std::is_same_v<A, float>) return expf(x);
  else return exp(x);
}

template <typename A>
__device__ __forceinline__ A apply_act(A x, Activation act) {
  switch (act) {
    case Activation::relu: return (x > A(0) || x != x) ? x : A(0);  // NaN stays NaN
    case Activation::gelu: return A(0.5) * x * (A(1) + erf_(x * A(kSqrtHalf)));
    case Activation::gelu_tanh:
      return A(0.5) * x * (A(1) + tanh_(A(kSqrt2OverPi) * (x + A(kGeluTanhC) * x * x * x)));
    default: return x;
  }
}
// d act(z) / dz; relu uses z > 0, so z may be relu's output as well as its input.
template <typename A>
__device__ __forceinline__ A act_grad(A z, Activation act) {
  switch (act) {
    case Activation::relu: return z > A(0) ? A(1) : A(0);
    case Activation::gelu:
      return A(0.5) * (A(1) + erf_(z * A(kSqrtHalf))) + z * A(kInvSqrt2Pi) * exp_(A(-0.5) * z * z);
    case Activation::gelu_tanh: {
      const A t = tanh_(A(kSqrt2OverPi) * (z + A(kGeluTanhC) * z * z * z));
      return A(0.5) * (A(1) + t) + A(0.5) * z * (A(1) - t * t) * A(kSqrt2OverPi) * (A(1) + A(3 * kGeluTanhC) * z * z);
    }
    default: return A(1);
  }
}

// One output element: v = alpha*acc + beta*C + bias -> preact; C = act(v).
template <typename T>
__device__ __forceinline__ void store_out(const GemmParams<T>& p, T* C, T* pre, int64_t i, int64_t j,
                                          gemm_acc_t<T> acc) {
  using Acc = gemm_acc_t<T>;
  T* c = C + i * p.ldc + j;
  Acc v = p.alpha * acc;
  if (p.beta != Acc(0)) v += p.beta * to_acc(*c);
  if (p.bias_mode == BiasMode::per_col) v += to_acc(p.bias[j]);
  else if (p.bias_mode == BiasMode::per_row) v += to_acc(p.bias[i]);
  if (pre) pre[i * p.ld_preact + j] = from_acc<T>(v);
  *c = from_acc<T>(apply_act(v, p.act));
}

// Tile numbering: groups of 8 tile rows walk the columns, so co-resident blocks share B panels.
struct TileCoord {
  int64_t tm, tn;
};
__device__ __forceinline__ TileCoord tile_coord(int64_t pid, int64_t tiles_m, int64_t tiles_n) {
  constexpr int64_t G = 8;
  const int64_t per_group = G * tiles_n;
  const int64_t group = pid / per_group, first = group * G;
  const int64_t rows = tiles_m - first < G ? tiles_m - first : G;
  const int64_t r = pid - group * per_group;
  return {first + r % rows, r / rows};
}

// =============================================================================================
// SIMT kernel (fp32 without tf32, double)
// =============================================================================================
constexpr int kSimtBM = 128, kSimtBN = 64, kSimtBK = 8, kSimtThreads = 256;

template <typename T>
__device__ __forceinline__ void load_row(const T* src, gemm_acc_t<T>* dst, int n) {
  // n consecutive elements from a 16-byte aligned shared row
  if constexpr (std::is_same_v<T, float>) {
    GEMM_UNROLL
    for (int v = 0; v < n; v += 4) {
      const float4 x = *reinterpret_cast<const float4*>(src + v);
      dst[v] = x.x, dst[v + 1] = x.y, dst[v + 2] = x.z, dst[v + 3] = x.w;
    }
  } else {
    GEMM_UNROLL
    for (int v = 0; v < n; v += 2) {
      const double2 x = *reinterpret_cast<const double2*>(src + v);
      dst[v] = x.x, dst[v + 1] = x.y;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kSimtThreads) gemm_simt_kernel(GemmParams<T> p, int64_t tiles_m, int64_t tiles_n) {
  using Acc = gemm_acc_t<T>;
  constexpr int BM = kSimtBM, BN = kSimtBN, BK = kSimtBK, TM = 8, TN = 4;
  constexpr int AP = BM + 4, BP = BN + 4;  // row pads: conflict-free transposing stores
  SMEM_ARRAY(T, As, 2, BK, AP);             // As[buf][k][m]
  SMEM_ARRAY(T, Bs, 2, BK, BP);             // Bs[buf][k][n]
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const TileCoord tc = tile_coord(blockIdx.x, tiles_m, tiles_n);
  const int64_t m0 = tc.tm * BM, n0 = tc.tn * BN;
  const int64_t M = p.M, N = p.N, K = p.K;

  // Load mapping: consecutive threads walk the operand's smaller-stride dimension (coalescing).
  const bool a_kfast = (p.csa < 0 ? -p.csa : p.csa) <= (p.rsa < 0 ? -p.rsa : p.rsa);
  const bool b_nfast = (p.csb < 0 ? -p.csb : p.csb) <= (p.rsb < 0 ? -p.rsb : p.rsb);
  int am[4], ak[4], bk[2], bn[2];
  GEMM_UNROLL
  for (int r = 0; r < 4; ++r) {
    const int idx = tid + r * kSimtThreads;
    am[r] = a_kfast ? idx / BK : idx % BM;
    ak[r] = a_kfast ? idx % BK : idx / BM;
  }
  GEMM_UNROLL
  for (int r = 0; r < 2; ++r) {
    const int idx = tid + r * kSimtThreads;
    bn[r] = b_nfast ? idx % BN : idx / BK;
    bk[r] = b_nfast ? idx / BN : idx % BK;
  }

  for (int64_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
    const T* A = p.A + b * p.batch_stride_a;
    const T* B = p.B + b * p.batch_stride_b;
    T ra[4], rb[2];
    auto load = [&](int64_t k0) {
      GEMM_UNROLL
      for (int r = 0; r < 4; ++r) {
        const int64_t gm = m0 + am[r], gk = k0 + ak[r];
        ra[r] = (gm < M && gk < K) ? A[gm * p.rsa + gk * p.csa] : T(0);
      }
      GEMM_UNROLL
      for (int r = 0; r < 2; ++r) {
        const int64_t gk = k0 + bk[r], gn = n0 + bn[r];
        rb[r] = (gk < K && gn < N) ? B[gk * p.rsb + gn * p.csb] : T(0);
      }
    };
    auto store = [&](int buf) {
      GEMM_UNROLL
      for (int r = 0; r < 4; ++r) As[buf][ak[r]][am[r]] = ra[r];
      GEMM_UNROLL
      for (int r = 0; r < 2; ++r) Bs[buf][bk[r]][bn[r]] = rb[r];
    };

    Acc acc[TM][TN];
    GEMM_UNROLL
    for (int i = 0; i < TM; ++i)
      GEMM_UNROLL
      for (int j = 0; j < TN; ++j) acc[i][j] = Acc(0);

    const int64_t KT = (K + BK - 1) / BK;
    load(0);
    store(0);
    __syncthreads();
    for (int64_t kt = 0; kt < KT; ++kt) {
      const int buf = int(kt & 1);
      const bool more = kt + 1 < KT;
      if (more) load((kt + 1) * BK);
      GEMM_UNROLL
      for (int k = 0; k < BK; ++k) {
        Acc a[TM], bv[TN];
        load_row<T>(&As[buf][k][ty * TM], a, TM);
        load_row<T>(&Bs[buf][k][tx * TN], bv, TN);
        GEMM_UNROLL
        for (int i = 0; i < TM; ++i)
          GEMM_UNROLL
          for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], bv[j], acc[i][j]);
      }
      if (more) store(buf ^ 1);
      __syncthreads();  // the buffer just read is rewritten next step
    }

    T* C = p.C + b * p.batch_stride_c;
    T* pre = p.preact ? p.preact + b * p.batch_stride_preact : nullptr;
    GEMM_UNROLL
    for (int i = 0; i < TM; ++i) {
      const int64_t gi = m0 + ty * TM + i;
      GEMM_UNROLL
      for (int j = 0; j < TN; ++j) {
        const int64_t gj = n0 + tx * TN + j;
        if (gi < M && gj < N) store_out(p, C, pre, gi, gj, acc[i][j]);
      }
    }
  }
}

// =============================================================================================
// Tensor-core kernel (fp16, bf16: m16n8k16; fp32 as tf32: m16n8k8)
// =============================================================================================
template <typename T>
struct TcTraits {
  static constexpr bool tf32 = std::is_same_v<T, float>;
  static constexpr int VEC = 16 / int(sizeof(T));  // elements per 16-byte chunk
  static constexpr int BK = tf32 ? 16 : 32;        // K per pipeline stage
  static constexpr int KS = tf32 ? 8 : 16;         // K per mma
  static constexpr int KPAD = BK + VEC;            // K-major row: 80 bytes
  static constexpr int STAGES = 3;
  static constexpr int MNPAD = 8;  // MN-major row: MN + 8
};

template <typename T, int BM, int BN, bool AK, bool BKM>
struct TcSmem {
  using Tr = TcTraits<T>;
  static constexpr int A_ELEMS = AK ? BM * Tr::KPAD : Tr::BK * (BM + Tr::MNPAD);
  static constexpr int B_ELEMS = BKM ? BN * Tr::KPAD : Tr::BK * (BN + Tr::MNPAD);
  static constexpr int STAGE = A_ELEMS + B_ELEMS;
  static constexpr size_t bytes = size_t(STAGE) * Tr::STAGES * sizeof(T);
  static_assert((A_ELEMS * sizeof(T)) % 16 == 0 && (STAGE * sizeof(T)) % 16 == 0, "16-byte aligned tiles");
};

// VEC elements one by one, zero outside the matrix (generic strides, edges). Out of line: it
// is the cold path of the fast variants and keeps the main loop's register count down.
template <typename T>
__device__ GEMM_NOINLINE void load_chunk_guarded(T* d, const T* src, int64_t so, int64_t si, int64_t go, int64_t on,
                                                 int64_t gi, int64_t in) {
  GEMM_UNROLL
  for (int e = 0; e < TcTraits<T>::VEC; ++e) d[e] = (go < on && gi + e < in) ? src[go * so + (gi + e) * si] : zero<T>();
}

// Copies one operand tile (R rows along the stored-major dimension x C chunks of VEC
// contiguous elements) into shared memory. Stored element (r, c*VEC+e) is the operand element
// at (outer = o0 + r, inner = i0 + c*VEC + e), found at src[outer*so + inner*si]; fast: si == 1
// and 16-byte aligned chunks may use cp.async.
template <typename T, int ROWS, int COLS, int LD, int NT>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t so, int64_t si, int64_t o0, int64_t on,
                                          int64_t i0, int64_t in, bool fast, int tid) {
  constexpr int VEC = TcTraits<T>::VEC, CPR = COLS / VEC, CHUNKS = ROWS * CPR;
  static_assert(CHUNKS % NT == 0, "whole chunks per thread");
  GEMM_UNROLL
  for (int it = 0; it < CHUNKS / NT; ++it) {
    const int c = tid + it * NT;
    const int r = c / CPR, cc = (c % CPR) * VEC;
    const int64_t go = o0 + r, gi = i0 + cc;
    T* d = dst + r * LD + cc;
    if (fast && go < on && gi + VEC <= in) cp_async<16>(d, src + go * so + gi);
    else load_chunk_guarded(d, src, so, si, go, on, gi, in);
  }
}

template <typename T, int BM, int BN, int WM, int WN, bool AK, bool BKM>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
    gemm_tc_kernel(GemmParams<T> p, int64_t tiles_m, int64_t tiles_n, int fast_a, int fast_b) {
  using Tr = TcTraits<T>;
  using Sm = TcSmem<T, BM, BN, AK, BKM>;
  constexpr int NT = (BM / WM) * (BN / WN) * 32, WARPS_N = BN / WN;
  constexpr int BK = Tr::BK, KS = Tr::KS, S = Tr::STAGES, VEC = Tr::VEC;
  constexpr int MT = WM / 16, NTL = WN / 8;  // mma tiles per warp
  constexpr int LDA = AK ? Tr::KPAD : (BM + Tr::MNPAD), LDB = BKM ? Tr::KPAD : (BN + Tr::MNPAD);
  static_assert(NTL % 2 == 0, "B fragments come in pairs of n8 tiles");
  (void)VEC;
  DYN_SMEM(T, smem);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm0 = (warp / WARPS_N) * WM, wn0 = (warp % WARPS_N) * WN;
  const int g = lane / 4, t = lane % 4;
  const TileCoord tc = tile_coord(blockIdx.x, tiles_m, tiles_n);
  const int64_t m0 = tc.tm * BM, n0 = tc.tn * BN;
  const int64_t M = p.M, N = p.N, K = p.K;
  const int64_t KT = (K + BK - 1) / BK;

  for (int64_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
    const T* A = p.A + b * p.batch_stride_a;
    const T* B = p.B + b * p.batch_stride_b;

    auto load_stage = [&](int stage, int64_t kt) {
      T* As = smem + stage * Sm::STAGE;
      T* Bs = As + Sm::A_ELEMS;
      const int64_t k0 = kt * BK;
      if constexpr (AK)  // rows m, chunks along k
        load_tile<T, BM, BK, LDA, NT>(As, A, p.rsa, p.csa, m0, M, k0, K, fast_a, tid);
      else  // rows k, chunks along m
        load_tile<T, BK, BM, LDA, NT>(As, A, p.csa, p.rsa, k0, K, m0, M, fast_a, tid);
      if constexpr (BKM)  // rows n, chunks along k
        load_tile<T, BN, BK, LDB, NT>(Bs, B, p.csb, p.rsb, n0, N, k0, K, fast_b, tid);
      else  // rows k, chunks along n
        load_tile<T, BK, BN, LDB, NT>(Bs, B, p.rsb, p.csb, k0, K, n0, N, fast_b, tid);
    };

    float acc[MT][NTL][4];
    GEMM_UNROLL
    for (int i = 0; i < MT; ++i)
      GEMM_UNROLL
      for (int j = 0; j < NTL; ++j)
        GEMM_UNROLL
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    GEMM_UNROLL
    for (int s = 0; s < S - 1; ++s) {
      if (s < KT) load_stage(s, s);
      cp_async_commit();
    }
    for (int64_t kt = 0; kt < KT; ++kt) {
      cp_async_wait<S - 2>();
      __syncthreads();  // tile kt is visible; every warp is done with tile kt-1's stage
      {
        const int64_t nk = kt + S - 1;
        if (nk < KT) load_stage(int(nk % S), nk);
        cp_async_commit();
      }
      const T* As = smem + int(kt % S) * Sm::STAGE;
      const T* Bs = As + Sm::A_ELEMS;
      GEMM_UNROLL
      for (int ks = 0; ks < BK; ks += KS) {
        std::uint32_t af[MT][4], bf[NTL][2];
        if constexpr (Tr::tf32) {
          GEMM_UNROLL
          for (int i = 0; i < MT; ++i) {
            const int m = wm0 + i * 16 + g, k = ks + t;
            auto at = [&](int mm, int kk) { return AK ? As[mm * LDA + kk] : As[kk * LDA + mm]; };
            af[i][0] = float_to_tf32(at(m, k));
            af[i][1] = float_to_tf32(at(m + 8, k));
            af[i][2] = float_to_tf32(at(m, k + 4));
            af[i][3] = float_to_tf32(at(m + 8, k + 4));
          }
          GEMM_UNROLL
          for (int j = 0; j < NTL; ++j) {
            const int n = wn0 + j * 8 + g, k = ks + t;
            auto bt = [&](int kk, int nn) { return BKM ? Bs[nn * LDB + kk] : Bs[kk * LDB + nn]; };
            bf[j][0] = float_to_tf32(bt(k, n));
            bf[j][1] = float_to_tf32(bt(k + 4, n));
          }
        } else {
          GEMM_UNROLL
          for (int i = 0; i < MT; ++i) {
            const int mb = wm0 + i * 16;
            if constexpr (AK) {
              const int m = mb + (lane & 15), k = ks + (lane >> 4) * 8;
              ldmatrix_x4(af[i], As + m * LDA + k);
            } else {
              const int k = ks + (lane & 7) + (lane >> 4) * 8, m = mb + ((lane >> 3) & 1) * 8;
              ldmatrix_x4_trans(af[i], As + k * LDA + m);
            }
          }
          GEMM_UNROLL
          for (int j = 0; j < NTL; j += 2) {
            const int nb = wn0 + j * 8;
            std::uint32_t r[4];
            if constexpr (BKM) {
              const int n = nb + (lane & 7) + (lane >> 4) * 8, k = ks + ((lane >> 3) & 1) * 8;
              ldmatrix_x4(r, Bs + n * LDB + k);
            } else {
              const int k = ks + (lane & 7) + ((lane >> 3) & 1) * 8, n = nb + (lane >> 4) * 8;
              ldmatrix_x4_trans(r, Bs + k * LDB + n);
            }
            bf[j][0] = r[0], bf[j][1] = r[1], bf[j + 1][0] = r[2], bf[j + 1][1] = r[3];
          }
        }
        GEMM_UNROLL
        for (int i = 0; i < MT; ++i)
          GEMM_UNROLL
          for (int j = 0; j < NTL; ++j) {
            if constexpr (Tr::tf32) mma_m16n8k8_tf32(acc[i][j], af[i], bf[j], acc[i][j]);
            else if constexpr (std::is_same_v<T, __half>) mma_m16n8k16_f16(acc[i][j], af[i], bf[j], acc[i][j]);
            else mma_m16n8k16_bf16(acc[i][j], af[i], bf[j], acc[i][j]);
          }
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the next batch's prologue rewrites the stages

    T* C = p.C + b * p.batch_stride_c;
    T* pre = p.preact ? p.preact + b * p.batch_stride_preact : nullptr;
    GEMM_UNROLL
    for (int i = 0; i < MT; ++i)
      GEMM_UNROLL
      for (int h = 0; h < 2; ++h) {
        const int64_t gi = m0 + wm0 + i * 16 + g + h * 8;
        if (gi >= M) continue;
        GEMM_UNROLL
        for (int j = 0; j < NTL; ++j) {
          const int64_t gj = n0 + wn0 + j * 8 + 2 * t;
          if (gj < N) store_out(p, C, pre, gi, gj, acc[i][j][2 * h]);
          if (gj + 1 < N) store_out(p, C, pre, gi, gj + 1, acc[i][j][2 * h + 1]);
        }
      }
  }
}

// ---- host side -------------------------------------------------------------------------------
// variant bits: 0 tc (else simt), 1 small tile, 2 A K-major, 3 B K-major, 4 A fast, 5 B fast
enum : int { kVarTc = 1, kVarSmall = 2, kVarAK = 4, kVarBK = 8, kVarFastA = 16, kVarFastB = 32 };

template <typename T>
constexpr const char* type_name() {
  if constexpr (std::is_same_v<T, __half>) return "f16";
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
  else if constexpr (std::is_same_v<T, float>) return "f32";
  else return "f64";
}

inline bool aligned16(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; }

template <typename T, int BM, int BN, int WM, int WN, bool AK, bool BKM>
void launch_tc(const GemmParams<T>& p, const LaunchPlan& plan, int64_t tm, int64_t tn, cudaStream_t stream) {
#if !defined(CUDASIM)
  if (plan.smem_bytes > kDefaultSmemBytes)
    cudaFuncSetAttribute(gemm_tc_kernel<T, BM, BN, WM, WN, AK, BKM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         int(plan.smem_bytes));
#endif
  LAUNCH((gemm_tc_kernel<T, BM, BN, WM, WN, AK, BKM>), plan.grid, plan.block, plan.smem_bytes, stream, p, tm, tn,
         int(bool(plan.variant & kVarFastA)), int(bool(plan.variant & kVarFastB)));
}
template <typename T, int BM, int BN, int WM, int WN>
void launch_tc_layout(const GemmParams<T>& p, const LaunchPlan& plan, cudaStream_t stream) {
  const int64_t tm = (p.M + BM - 1) / BM, tn = (p.N + BN - 1) / BN;
  switch (plan.variant & (kVarAK | kVarBK)) {
    case kVarAK | kVarBK: launch_tc<T, BM, BN, WM, WN, true, true>(p, plan, tm, tn, stream); break;
    case kVarAK: launch_tc<T, BM, BN, WM, WN, true, false>(p, plan, tm, tn, stream); break;
    case kVarBK: launch_tc<T, BM, BN, WM, WN, false, true>(p, plan, tm, tn, stream); break;
    default: launch_tc<T, BM, BN, WM, WN, false, false>(p, plan, tm, tn, stream); break;
  }
}

template <typename T>
constexpr size_t tc_smem_bytes(bool small, bool ak, bool bk) {
  constexpr int L = 128, Sml = 64;
  if (small) {
    if (ak) return bk ? TcSmem<T, Sml, Sml, true, true>::bytes : TcSmem<T, Sml, Sml, true, false>::bytes;
    return bk ? TcSmem<T, Sml, Sml, false, true>::bytes : TcSmem<T, Sml, Sml, false, false>::bytes;
  }
  if (ak) return bk ? TcSmem<T, L, L, true, true>::bytes : TcSmem<T, L, L, true, false>::bytes;
  return bk ? TcSmem<T, L, L, false, true>::bytes : TcSmem<T, L, L, false, false>::bytes;
}

inline const char* tc_name(int type, bool small) {  // type: 0 f16, 1 bf16, 2 tf32
  static const char* const names[3][2] = {{"gemm_tc_f16_128x128", "gemm_tc_f16_64x64"},
                                          {"gemm_tc_bf16_128x128", "gemm_tc_bf16_64x64"},
                                          {"gemm_tc_tf32_128x128", "gemm_tc_tf32_64x64"}};
  return names[type][small ? 1 : 0];
}

}  // namespace gemm_detail

// Picks the variant and geometry. M, N or batch == 0: an empty grid (gemm_launch does nothing).
template <typename T>
LaunchPlan gemm_plan(const GemmParams<T>& p) {
  using namespace gemm_detail;
  LaunchPlan plan;
  const int64_t batch_blocks = p.batch < kMaxGridYZ ? p.batch : kMaxGridYZ;
  const bool tc = !std::is_same_v<T, double> && (!std::is_same_v<T, float> || p.allow_tf32);
  if (!tc) {
    const int64_t tm = (p.M + kSimtBM - 1) / kSimtBM, tn = (p.N + kSimtBN - 1) / kSimtBN;
    plan.grid = dim3(unsigned(tm * tn), 1, unsigned(batch_blocks));
    plan.block = dim3(kSimtThreads);
    plan.variant = 0;
    plan.name = std::is_same_v<T, double> ? "gemm_simt_f64_128x64" : "gemm_simt_f32_128x64";
    return plan;
  }
  constexpr int VEC = TcTraits<T>::VEC;
  auto abs64 = [](int64_t v) { return v < 0 ? -v : v; };
  // Operand layout in shared memory follows its contiguous dimension; "fast" when that
  // dimension has stride 1 and every row and batch starts on a 16-byte boundary.
  auto choose = [&](const T* ptr, int64_t s_k, int64_t s_mn, int64_t bs, bool& kmajor, bool& fast) {
    const bool base_ok = aligned16(ptr) && bs % VEC == 0;
    if (s_k == 1 && s_mn % VEC == 0 && base_ok) kmajor = true, fast = true;
    else if (s_mn == 1 && s_k % VEC == 0 && base_ok) kmajor = false, fast = true;
    else kmajor = abs64(s_k) <= abs64(s_mn), fast = false;
  };
  bool ak, bk, fa, fb;
  choose(p.A, p.csa, p.rsa, p.batch_stride_a, ak, fa);
  choose(p.B, p.rsb, p.csb, p.batch_stride_b, bk, fb);
  const int64_t big_tiles = ((p.M + 127) / 128) * ((p.N + 127) / 128) * batch_blocks;
  const bool small = big_tiles < 96;  // too few 128x128 tiles to fill a GPU: 64x64
  const int bm = small ? 64 : 128, bn = bm;
  const int64_t tm = (p.M + bm - 1) / bm, tn = (p.N + bn - 1) / bn;
  plan.grid = dim3(unsigned(tm * tn), 1, unsigned(batch_blocks));
  plan.block = dim3(small ? 128 : 256);
  plan.smem_bytes = tc_smem_bytes<T>(small, ak, bk);
  plan.variant = kVarTc | (small ? kVarSmall : 0) | (ak ? kVarAK : 0) | (bk ? kVarBK : 0) | (fa ? kVarFastA : 0) |
                 (fb ? kVarFastB : 0);
  plan.name = tc_name(std::is_same_v<T, __half> ? 0 : std::is_same_v<T, __nv_bfloat16> ? 1 : 2, small);
  return plan;
}

template <typename T>
void gemm_launch(const GemmParams<T>& p, const LaunchPlan& plan, cudaStream_t stream) {
  using namespace gemm_detail;
  if (p.M <= 0 || p.N <= 0 || p.batch <= 0) return;
  if (!(plan.variant & kVarTc)) {
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      const int64_t tm = (p.M + kSimtBM - 1) / kSimtBM, tn = (p.N + kSimtBN - 1) / kSimtBN;
      LAUNCH(gemm_simt_kernel<T>, plan.grid, plan.block, 0, stream, p, tm, tn);
    }
    return;
  }
  if constexpr (!std::is_same_v<T, double>) {
    if (plan.variant & kVarSmall) launch_tc_layout<T, 64, 64, 32, 32>(p, plan, stream);
    else launch_tc_layout<T, 128, 128, 64, 32>(p, plan, stream);
  }
}

// Plans and launches one product: what a host loop over products (lce.cuh, rnn_layer.cuh) runs.
template <typename T>
void gemm_run(const GemmParams<T>& p, cudaStream_t stream) {
  gemm_launch<T>(p, gemm_plan<T>(p), stream);
}

// Instantiates every kernel (so that a compile of this header alone builds and reports them).
inline void gemm_instantiate_all_() {
  (void)&gemm_launch<__half>;
  (void)&gemm_launch<__nv_bfloat16>;
  (void)&gemm_launch<float>;
  (void)&gemm_launch<double>;
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
