// Instantiates the GEMM of gemm_impl.h for one instruction set. Included once by each
// gemm_<isa>.cpp after it defines FUSEDOPS_ISA_NS, the traits and tiles, and selects the
// instruction set:
//   FUSEDOPS_VEC_F32 / FUSEDOPS_VEC_F64: register traits; FUSEDOPS_MR_F32, FUSEDOPS_NV_F32,
//   FUSEDOPS_MR_F64, FUSEDOPS_NV_F64: microkernel tiles (rows, registers per row).
#pragma once

#include "../vec/pointwise_isa.h"
#include "gemm_impl.h"

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

using GemmF32 = Gemm<FUSEDOPS_VEC_F32, FUSEDOPS_MR_F32, FUSEDOPS_NV_F32>;
using GemmF64 = Gemm<FUSEDOPS_VEC_F64, FUSEDOPS_MR_F64, FUSEDOPS_NV_F64>;

// fp32 products may also run on a second tile, FUSEDOPS_ALT_MR_F32 x FUSEDOPS_ALT_NV_F32
// registers, where it wastes less of its tiles on the product's M and N: a batch of 32, 64 or
// 128 rows, a layer's 32 or 64 output channels, are whole 8-row tiles, not 14-row ones. The
// wider tile runs about as fast per FMA as the main one (fewer loads per FMA, fewer
// accumulators).
#ifdef FUSEDOPS_ALT_MR_F32
using GemmF32Alt = Gemm<FUSEDOPS_VEC_F32, FUSEDOPS_ALT_MR_F32, FUSEDOPS_ALT_NV_F32>;
#endif

// Fraction of the MR x NR tiles covering M x N (per batch entry) that is real work.
inline double tile_fill(int64_t M, int64_t N, int MR, int NR) {
  return double(M) * double(N) / (double((M + MR - 1) / MR * MR) * double((N + NR - 1) / NR * NR));
}

// Whether an fp32 M x N product runs on the second tile.
inline bool use_alt_f32(int64_t M, int64_t N) {
#ifdef FUSEDOPS_ALT_MR_F32
  return M > 0 && N > 0 &&
         tile_fill(M, N, GemmF32Alt::kMR, GemmF32Alt::NR) > tile_fill(M, N, GemmF32::kMR, GemmF32::NR) * 1.02;
#else
  (void)M, (void)N;
  return false;
#endif
}

// A B packed ahead was packed for the tile of packed_m rows (gemm_pack_b's M); other products
// pick theirs by M, except the small-M path (its own tiles, on the main kernel).
template <typename T>
bool use_alt(const GemmArgs<T>& g) {
  if constexpr (sizeof(T) != 4) {
    return false;
  } else {
    if (g.packed_b) return use_alt_f32(g.packed_m, g.N);
    return !GemmF32::small_m(g) && use_alt_f32(g.M, g.N);
  }
}

// f(kernel) with the kernel for T: fp64's, or fp32's main or (with `alt`) second tile.
template <typename T, class F>
decltype(auto) with_kernel(bool alt, F&& f) {
  if constexpr (sizeof(T) == 4) {
#ifdef FUSEDOPS_ALT_MR_F32
    if (alt) return f(GemmF32Alt{});
#endif
    (void)alt;
    return f(GemmF32{});
  } else {
    (void)alt;
    return f(GemmF64{});
  }
}

template <typename T>
void gemm_run(const GemmArgs<T>& args) {
  with_kernel<T>(use_alt(args), [&](auto k) { decltype(k)::run(args); });
}

template <typename T>
void gemm_offset_b_run(const GemmArgs<T>& args, const T* X, const int64_t* boff, int64_t batch, int64_t xs,
                       int64_t cs) {
  with_kernel<T>(use_alt_f32(args.M, args.N),
                 [&](auto k) { decltype(k)::run_offset_b(args, X, boff, batch, xs, cs); });
}

template <typename T>
void gemm_offset_c_run(const GemmArgs<T>& args, const T* X, const int64_t* boff, T* Y, const int64_t* coff,
                       int64_t group, int64_t batch, int64_t xs, int64_t ys) {
  with_kernel<T>(use_alt_f32(args.M, args.N),
                 [&](auto k) { decltype(k)::run_offset_c(args, X, boff, Y, coff, group, batch, xs, ys); });
}

template <typename T>
void gemm_offset_a_run(const GemmArgs<T>& args, const T* X, const int64_t* aoff, int64_t run, int64_t stride) {
  with_kernel<T>(false, [&](auto k) { decltype(k)::run_offset_a(args, X, aoff, run, stride); });
}

template <typename T>
int64_t packed_b_size_run(int64_t M, int64_t N, int64_t K) {
  return with_kernel<T>(use_alt_f32(M, N), [&](auto k) { return decltype(k)::packed_b_size(N, K); });
}

template <typename T>
void pack_b_run(const GemmArgs<T>& args, T* dst) {
  with_kernel<T>(use_alt_f32(args.M, args.N), [&](auto k) { decltype(k)::pack_b_whole(args, dst); });
}

template <typename T>
MicrokernelInfo info() {
  if constexpr (sizeof(T) == 4) return {FUSEDOPS_MR_F32, GemmF32::NR, FUSEDOPS_ISA_NAME};
  else return {FUSEDOPS_MR_F64, GemmF64::NR, FUSEDOPS_ISA_NAME};
}

template <typename T>
void bias_act_backward_run(int64_t M, int64_t N, const T* g, int64_t rsg, int64_t csg, const T* z,
                           int64_t ldz, T* dz, Activation act, T* db) {
  if constexpr (sizeof(T) == 4)
    bias_act_backward<FUSEDOPS_VEC_F32>(M, N, g, rsg, csg, z, ldz, dz, act, db);
  else
    bias_act_backward<FUSEDOPS_VEC_F64>(M, N, g, rsg, csg, z, ldz, dz, act, db);
}

double fma_peak_run(int threads, double seconds) {
  return fma_peak<FUSEDOPS_VEC_F32>(threads, seconds);
}

template <typename T>
GemmKernels<T> gemm_table() {
  return {&gemm_run<T>,     &gemm_offset_b_run<T>, &gemm_offset_c_run<T>, &gemm_offset_a_run<T>,
          &packed_b_size_run<T>, &pack_b_run<T>, &bias_act_backward_run<T>, &fma_peak_run, info<T>()};
}
template GemmKernels<float> gemm_table<float>();
template GemmKernels<double> gemm_table<double>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
