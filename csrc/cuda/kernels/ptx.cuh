/* Project wrappers around the PTX instructions our kernels use: tensor-core mma.sync,
   ldmatrix and cp.async. Kernels call these instead of writing inline asm.

   CUDA build (__CUDA_ARCH__): one inline-PTX statement each (sm_80+).
   Simulator build (CUDASIM):  mma and ldmatrix are warp collectives that gather the 32
   lanes' registers in the documented PTX fragment layouts, compute, and scatter the result;
   cp.async is queued per thread and performed at cp_async_wait, so a missing wait reads
   stale shared memory (the simulator's 0xFF fill).

   Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k*"), with g = lane / 4 and
   t = lane % 4; a 32-bit register holds two 16-bit elements, the lower column/row in the low
   half:
     m16n8k16 f16/bf16  A 16x16 row-major: a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
                                           a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
                        B 16x8 (k x n):    b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
     m16n8k8 tf32       A 16x8:            a[0] = A[g][t]  a[1] = A[g+8][t]  a[2] = A[g][t+4]
                                           a[3] = A[g+8][t+4]
                        B 8x8 (k x n):     b[0] = B[t][g]  b[1] = B[t+4][g]
     C/D 16x8 f32 (both shapes):           c[0..1] = C[g][2t..2t+1]  c[2..3] = C[g+8][2t..2t+1]
     ldmatrix m8n8 b16: lanes 8i..8i+7 give the row addresses of matrix i (16-byte aligned
     rows of 8 elements); lane l receives r[i] = M_i[l/4][2(l%4)..2(l%4)+1], or with .trans
     M_i[2(l%4)][l/4] and M_i[2(l%4)+1][l/4]. */
#pragma once
#include "../../sim/cuda_sim.h"

#include <cstdint>
#include <cstring>

// Kernels live in fusedops::cuda in CUDA builds; the simulator build of the torch ops
// (csrc/sim/sim_<family>.cpp) sets fusedops::cuda_sim so the two builds' symbols never meet.
#ifndef FUSEDOPS_CUDA_NS
#define FUSEDOPS_CUDA_NS cuda
#endif

#if defined(CUDASIM)
#define PTX_SITE_PARAM , ::cudasim::Site site = ::cudasim::Site::current()
#else
#define PTX_SITE_PARAM
#endif

#if defined(CUDASIM)
namespace cudasim {

// ---- element access for the simulator --------------------------------------------------
inline float half_bits_to_float(std::uint16_t h) { return __half2float(std::bit_cast<__half>(h)); }
inline float bf16_bits_to_float(std::uint16_t h) { return __bfloat162float(std::bit_cast<__nv_bfloat16>(h)); }
inline float tf32_bits_to_float(std::uint32_t v) {  // the tensor core ignores the low 13 bits
  return std::bit_cast<float>(v & 0xffffe000u);
}

struct MmaArgs {
  float* d;
  const std::uint32_t* a;
  const std::uint32_t* b;
  const float* c;
};

template <class Lanes>
inline void require_full_warp(const char* name, Lanes lanes) {
  for (int l = 0; l < 32; ++l)
    if (!lanes[l]) throw Error(std::string(name) + ": all 32 lanes must take part (.aligned)");
}

// D = A * B + C for one warp; K = 16 (f16/bf16) or 8 (tf32).
template <int K, float (*Elem)(std::uint32_t reg, int half)>
inline void run_mma(void* const* lanes) {
  require_full_warp(K == 16 ? "mma.m16n8k16" : "mma.m16n8k8", lanes);
  float A[16][K], B[K][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const auto* x = static_cast<const MmaArgs*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    if constexpr (K == 16) {
      for (int h = 0; h < 2; ++h) {
        A[g][2 * t + h] = Elem(x->a[0], h);
        A[g + 8][2 * t + h] = Elem(x->a[1], h);
        A[g][2 * t + 8 + h] = Elem(x->a[2], h);
        A[g + 8][2 * t + 8 + h] = Elem(x->a[3], h);
        B[2 * t + h][g] = Elem(x->b[0], h);
        B[2 * t + 8 + h][g] = Elem(x->b[1], h);
      }
    } else {
      A[g][t] = Elem(x->a[0], 0);
      A[g + 8][t] = Elem(x->a[1], 0);
      A[g][t + 4] = Elem(x->a[2], 0);
      A[g + 8][t + 4] = Elem(x->a[3], 0);
      B[t][g] = Elem(x->b[0], 0);
      B[t + 4][g] = Elem(x->b[1], 0);
    }
    for (int h = 0; h < 2; ++h) {
      C[g][2 * t + h] = x->c[h];
      C[g + 8][2 * t + h] = x->c[2 + h];
    }
  }
  float D[16][8];
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      float acc = C[i][j];
      for (int k = 0; k < K; ++k) acc = std::fma(A[i][k], B[k][j], acc);
      D[i][j] = acc;
    }
  for (int l = 0; l < 32; ++l) {  // every input was gathered first, so d may alias c
    const auto* x = static_cast<const MmaArgs*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int h = 0; h < 2; ++h) {
      x->d[h] = D[g][2 * t + h];
      x->d[2 + h] = D[g + 8][2 * t + h];
    }
  }
}
inline float elem_f16(std::uint32_t r, int h) { return half_bits_to_float(std::uint16_t(r >> (16 * h))); }
inline float elem_bf16(std::uint32_t r, int h) { return bf16_bits_to_float(std::uint16_t(r >> (16 * h))); }
inline float elem_tf32(std::uint32_t r, int) { return tf32_bits_to_float(r); }
inline constexpr Op op_mma_f16{"mma_m16n8k16_f16", run_mma<16, elem_f16>};
inline constexpr Op op_mma_bf16{"mma_m16n8k16_bf16", run_mma<16, elem_bf16>};
inline constexpr Op op_mma_tf32{"mma_m16n8k8_tf32", run_mma<8, elem_tf32>};

struct LdmatrixArgs {
  std::uint32_t* r;
  const void* row;
};
template <int NMAT, bool TRANS>
inline void run_ldmatrix(void* const* lanes) {
  require_full_warp("ldmatrix", lanes);
  std::uint16_t M[NMAT][8][8];
  for (int i = 0; i < NMAT; ++i)
    for (int row = 0; row < 8; ++row) {
      const void* p = static_cast<const LdmatrixArgs*>(lanes[8 * i + row])->row;
      if (reinterpret_cast<std::uintptr_t>(p) % 16)
        throw Error("ldmatrix: row address of lane " + std::to_string(8 * i + row) + " is not 16-byte aligned");
      std::memcpy(M[i][row], p, 16);
    }
  for (int l = 0; l < 32; ++l) {
    auto* x = static_cast<const LdmatrixArgs*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < NMAT; ++i) {
      const std::uint16_t lo = TRANS ? M[i][2 * t][g] : M[i][g][2 * t];
      const std::uint16_t hi = TRANS ? M[i][2 * t + 1][g] : M[i][g][2 * t + 1];
      x->r[i] = std::uint32_t(lo) | (std::uint32_t(hi) << 16);
    }
  }
}
template <int NMAT, bool TRANS>
inline constexpr Op op_ldmatrix{TRANS ? "ldmatrix.trans" : "ldmatrix", run_ldmatrix<NMAT, TRANS>};

template <int NMAT, bool TRANS>
inline void ldmatrix(std::uint32_t* r, const void* smem_row, const Site& site) {
  LdmatrixArgs a{r, smem_row};
  warp_collective(op_ldmatrix<NMAT, TRANS>, 0xffffffffu, &a, site);
}
inline void mma(const Op& op, float* d, const std::uint32_t* a, const std::uint32_t* b, const float* c,
                const Site& site) {
  MmaArgs x{d, a, b, c};
  warp_collective(op, 0xffffffffu, &x, site);
}

}  // namespace cudasim
#endif  // CUDASIM

// ---- tensor-core mma: D = A * B + C, fp32 accumulators ------------------------------------
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const std::uint32_t (&a)[4],
                                                 const std::uint32_t (&b)[2], const float (&c)[4] PTX_SITE_PARAM) {
#if defined(CUDASIM)
  cudasim::mma(cudasim::op_mma_f16, d, a, b, c, site);
#elif defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const std::uint32_t (&a)[4],
                                                  const std::uint32_t (&b)[2], const float (&c)[4] PTX_SITE_PARAM) {
#if defined(CUDASIM)
  cudasim::mma(cudasim::op_mma_bf16, d, a, b, c, site);
#elif defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
}

// a and b hold fp32 bit patterns; the low 13 mantissa bits are ignored (round with
// float_to_tf32 first for round-to-nearest).
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const std::uint32_t (&a)[4],
                                                 const std::uint32_t (&b)[2], const float (&c)[4] PTX_SITE_PARAM) {
#if defined(CUDASIM)
  cudasim::mma(cudasim::op_mma_tf32, d, a, b, c, site);
#elif defined(__CUDA_ARCH__)
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#endif
}

// fp32 -> tf32 bit pattern, rounded to nearest (ties away from zero), like cvt.rna.tf32.f32.
__device__ __forceinline__ std::uint32_t float_to_tf32(float x) {
#if defined(__CUDA_ARCH__)
  std::uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
#else
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u += 0x1000u;  // finite: round half away from zero
  return u & 0xffffe000u;
#endif
}

// ---- ldmatrix: 8x8 b16 matrices from shared memory into mma fragments ---------------------
template <int N, bool TRANS>
__device__ __forceinline__ void ldmatrix_impl(std::uint32_t* r, const void* smem_row PTX_SITE_PARAM) {
#if defined(CUDASIM)
  cudasim::ldmatrix<N, TRANS>(r, smem_row, site);
#elif defined(__CUDA_ARCH__)
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  if constexpr (N == 1 && !TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
  else if constexpr (N == 2 && !TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(a));
  else if constexpr (N == 4 && !TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
  else if constexpr (N == 1)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(a));
  else if constexpr (N == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(a));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#endif
}
#if defined(CUDASIM)
#define PTX_SITE_ARG , site
#else
#define PTX_SITE_ARG
#endif
// smem_row: this lane's row address (lanes 0-7 for x1, 0-15 for x2, all for x4).
__device__ __forceinline__ void ldmatrix_x1(std::uint32_t& r, const void* smem_row PTX_SITE_PARAM) {
  ldmatrix_impl<1, false>(&r, smem_row PTX_SITE_ARG);
}
__device__ __forceinline__ void ldmatrix_x2(std::uint32_t (&r)[2], const void* smem_row PTX_SITE_PARAM) {
  ldmatrix_impl<2, false>(r, smem_row PTX_SITE_ARG);
}
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem_row PTX_SITE_PARAM) {
  ldmatrix_impl<4, false>(r, smem_row PTX_SITE_ARG);
}
__device__ __forceinline__ void ldmatrix_x1_trans(std::uint32_t& r, const void* smem_row PTX_SITE_PARAM) {
  ldmatrix_impl<1, true>(&r, smem_row PTX_SITE_ARG);
}
__device__ __forceinline__ void ldmatrix_x2_trans(std::uint32_t (&r)[2], const void* smem_row PTX_SITE_PARAM) {
  ldmatrix_impl<2, true>(r, smem_row PTX_SITE_ARG);
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem_row PTX_SITE_PARAM) {
  ldmatrix_impl<4, true>(r, smem_row PTX_SITE_ARG);
}
#undef PTX_SITE_ARG

// ---- cp.async: asynchronous global -> shared copies of 4, 8 or 16 bytes -------------------
// With pred == false nothing is read and the destination is zero-filled (src-size 0).
template <int BYTES>
__device__ __forceinline__ void cp_async(void* smem_dst, const void* gmem_src, bool pred = true) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(CUDASIM)
  cudasim::async_copy(smem_dst, gmem_src, BYTES, !pred);
#elif defined(__CUDA_ARCH__)
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = pred ? BYTES : 0;
  if constexpr (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(gmem_src), "n"(BYTES),
                 "r"(src_bytes)
                 : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(gmem_src), "n"(BYTES),
                 "r"(src_bytes)
                 : "memory");
#endif
}

// Close the group of cp.async issued since the previous commit.
__device__ __forceinline__ void cp_async_commit() {
#if defined(CUDASIM)
  cudasim::async_commit();
#elif defined(__CUDA_ARCH__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until at most N of this thread's committed groups are pending. Other threads' copies
// are visible only after a following __syncthreads.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(CUDASIM)
  cudasim::async_wait(N);
#elif defined(__CUDA_ARCH__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

#undef PTX_SITE_PARAM
