// Mixed-precision GEMM entry points (gemm_bf16.h): the native AVX512-BF16 kernel where it
// runs, else the widening path over the fp32 GEMM; and the oracle.
#include "gemm_bf16.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "../parallel.h"
#include "../scratch.h"

namespace fusedops::cpu {
namespace {

float* aligned(ScratchVec<float>& buf, size_t n) {
  if (buf.size() < n + 16) buf.resize(n + 16);
  auto p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

// dst[i * cols + j] = src(i * rs + j * cs) as fp32, rows in parallel.
void widen_matrix(const void* src, DType t, int64_t rows, int64_t cols, int64_t rs, int64_t cs, float* dst) {
  const int nt = threads_for_work(double(rows) * double(cols), 65536);
  parallel_items(nt, rows, [&](int64_t i) {
    for (int64_t j = 0; j < cols; ++j) dst[i * cols + j] = load_as_float(src, t, i * rs + j * cs);
  });
}

void narrow_matrix(const float* src, int64_t rows, int64_t cols, void* dst, DType t, int64_t ld) {
  const int nt = threads_for_work(double(rows) * double(cols), 65536);
  parallel_items(nt, rows, [&](int64_t i) {
    for (int64_t j = 0; j < cols; ++j) store_from_float(dst, t, i * ld + j, src[i * cols + j]);
  });
}

// GemmArgs<float>::pack_b over a bf16 B: widened while it is packed.
void pack_b_widened(const void* ctx, int64_t k0, int64_t kc, int64_t j0, int64_t nr, int NR, float* Bp) {
  const auto& g = *static_cast<const GemmMixedArgs*>(ctx);
  for (int64_t k = 0; k < kc; ++k)
    for (int j = 0; j < NR; ++j)
      Bp[k * NR + j] = j < nr ? load_as_float(g.B, g.b_type, (k0 + k) * g.rsb + (j0 + j) * g.csb) : 0.0f;
}

}  // namespace

namespace {
// vdpbf16ps's rate against the fp32 FMA's on one thread, measured once.
bool bf16_dot_is_fast() {
#if defined(__x86_64__)
  static const bool fast = [] {
    double dot = 0, fma = 0;
    for (int rep = 0; rep < 3; ++rep) {  // the best of three short runs of each
      dot = std::max(dot, avx512bf16::dot_peak_gflops(1, 0.001));
      fma = std::max(fma, gemm_kernels<float>(Isa::avx512).fma_peak(1, 0.001));
    }
    return dot > 1.25 * fma;
  }();
  return fast;
#else
  return false;
#endif
}
}  // namespace

Bf16Kernel bf16_kernel() {
  const Bf16Mode mode = bf16_mode();
  if (mode == Bf16Mode::widen || !cpu_info().avx512_bf16 || active_isa() != Isa::avx512) return Bf16Kernel::widened;
#if defined(__x86_64__)
  if (mode != Bf16Mode::avx512_bf16 && avx512bf16::amx_available()) return Bf16Kernel::amx;
#endif
  if (mode != Bf16Mode::automatic || bf16_dot_is_fast()) return Bf16Kernel::dot;
  return Bf16Kernel::widened;
}

bool bf16_native() { return bf16_kernel() != Bf16Kernel::widened; }

const char* bf16_path() {
  if (!cpu_info().avx512_bf16) return "widened to fp32: the CPU lacks AVX512-BF16";
  if (active_isa() != Isa::avx512) return "widened to fp32: the instruction set in force is below avx512";
  if (bf16_mode() == Bf16Mode::widen) return "widened to fp32: FUSEDOPS_BF16=widen";
  switch (bf16_kernel()) {
    case Bf16Kernel::amx: return "native: amx (tdpbf16ps)";
    case Bf16Kernel::dot: return "native: avx512_bf16 (vdpbf16ps)";
    default: return "widened to fp32: vdpbf16ps is slower than the fp32 FMA on this CPU";
  }
}

double bf16_peak_gflops(int threads, double seconds) {
#if defined(__x86_64__)
  switch (bf16_kernel()) {
    case Bf16Kernel::amx: return avx512bf16::amx_peak_gflops(threads, seconds);
    case Bf16Kernel::dot: return avx512bf16::dot_peak_gflops(threads, seconds);
    default: break;
  }
#endif
  return gemm_kernels<float>().fma_peak(threads, seconds);
}

void gemm_mixed_widened(const GemmMixedArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  GemmArgs<float> f;
  f.M = g.M, f.N = g.N, f.K = g.K;
  f.alpha = g.alpha, f.beta = g.beta;
  f.max_threads = g.max_threads;
  ScratchVec<float> abuf, cbuf, pbuf, biasbuf;
  if (g.a_type == DType::f32) {
    f.A = static_cast<const float*>(g.A), f.rsa = g.rsa, f.csa = g.csa;
  } else {
    float* a = aligned(abuf, size_t(g.M * std::max<int64_t>(g.K, 1)));
    widen_matrix(g.A, g.a_type, g.M, g.K, g.rsa, g.csa, a);
    f.A = a, f.rsa = g.K, f.csa = 1;
  }
  if (g.b_type == DType::f32) {
    f.B = static_cast<const float*>(g.B), f.rsb = g.rsb, f.csb = g.csb;
  } else {
    f.pack_b = &pack_b_widened;
    f.pack_b_ctx = &g;
  }
  f.bias_mode = g.bias_mode;
  f.act = g.act;
  if (g.bias_mode != BiasMode::none) {
    if (g.bias_type == DType::f32) {
      f.bias = static_cast<const float*>(g.bias);
    } else {
      const int64_t n = g.bias_mode == BiasMode::per_col ? g.N : g.M;
      float* b = aligned(biasbuf, size_t(n));
      widen_matrix(g.bias, g.bias_type, 1, n, 0, 1, b);
      f.bias = b;
    }
  }
  if (g.c_type == DType::f32) {
    f.C = static_cast<float*>(g.C), f.ldc = g.ldc;
    f.preact = static_cast<float*>(g.preact), f.ld_preact = g.ld_preact;
    gemm<float>(f);
    return;
  }
  float* c = aligned(cbuf, size_t(g.M * g.N));
  if (g.beta != 0.0f) widen_matrix(g.C, g.c_type, g.M, g.N, g.ldc, 1, c);
  f.C = c, f.ldc = g.N;
  if (g.preact) f.preact = aligned(pbuf, size_t(g.M * g.N)), f.ld_preact = g.N;
  gemm<float>(f);
  narrow_matrix(c, g.M, g.N, g.C, g.c_type, g.ldc);
  if (g.preact) narrow_matrix(f.preact, g.M, g.N, g.preact, g.c_type, g.ld_preact);
}

void gemm_mixed(const GemmMixedArgs& g) {
#if defined(__x86_64__)
  switch (bf16_kernel()) {
    case Bf16Kernel::amx: return avx512bf16::gemm_mixed_amx(g);
    case Bf16Kernel::dot: return avx512bf16::gemm_mixed(g);
    default: break;
  }
#endif
  gemm_mixed_widened(g);
}

void gemm_mixed_reference(const GemmMixedArgs& g) {
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; ++j) {
      long double s = 0;
      for (int64_t k = 0; k < g.K; ++k)
        s += (long double)load_as_float(g.A, g.a_type, i * g.rsa + k * g.csa) *
             (long double)load_as_float(g.B, g.b_type, k * g.rsb + j * g.csb);
      long double v = (long double)g.alpha * s;
      if (g.beta != 0.0f) v += (long double)g.beta * load_as_float(g.C, g.c_type, i * g.ldc + j);
      if (g.bias_mode == BiasMode::per_col) v += load_as_float(g.bias, g.bias_type, j);
      if (g.bias_mode == BiasMode::per_row) v += load_as_float(g.bias, g.bias_type, i);
      if (g.preact) store_from_float(g.preact, g.c_type, i * g.ld_preact + j, float(v));
      store_from_float(g.C, g.c_type, i * g.ldc + j, float(activation_reference<long double>(v, g.act)));
    }
}

}  // namespace fusedops::cpu
