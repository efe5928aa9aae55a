// GEMM entry points: dispatch on the instruction set in force, and the reference oracle.
#include "gemm.h"
#include "../parallel.h"
#include "../vec/dispatch.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(GemmKernels, gemm_table, gemm_kernels)

template <typename T>
void gemm_with_isa(Isa isa, const GemmArgs<T>& args) {
  gemm_kernels<T>(isa).run(args);
}

template <typename T>
void gemm(const GemmArgs<T>& args) {
  gemm_kernels<T>(args.packed_b ? args.packed_isa : active_isa()).run(args);
}

template <typename T>
void gemm_offset_b(const GemmArgs<T>& args, const T* X, const int64_t* boff, int64_t batch, int64_t x_stride,
                   int64_t c_stride) {
  gemm_kernels<T>().offset_b(args, X, boff, batch, x_stride, c_stride);
}

template <typename T>
void gemm_offset_c(const GemmArgs<T>& args, const T* X, const int64_t* boff, T* Y, const int64_t* coff,
                   int64_t row_group, int64_t batch, int64_t x_stride, int64_t y_stride) {
  gemm_kernels<T>().offset_c(args, X, boff, Y, coff, row_group, batch, x_stride, y_stride);
}

template <typename T>
void gemm_offset_a(const GemmArgs<T>& args, const T* X, const int64_t* aoff, int64_t run, int64_t stride) {
  gemm_kernels<T>().offset_a(args, X, aoff, run, stride);
}

template <typename T>
const T* gemm_pack_b(const GemmArgs<T>& args, std::vector<T>& storage, Isa* packed_isa) {
  *packed_isa = active_isa();
  const GemmKernels<T>& k = gemm_kernels<T>(*packed_isa);
  const size_t pad = 64 / sizeof(T);
  storage.resize(size_t(std::max<int64_t>(k.packed_b_size(args.M, args.N, args.K), 0)) + pad);
  auto p = reinterpret_cast<uintptr_t>(storage.data());
  T* dst = reinterpret_cast<T*>((p + 63) & ~uintptr_t(63));
  k.pack_b(args, dst);
  return dst;
}

template <typename T>
void gemm_batched(const GemmArgs<T>& args, int64_t batch, int64_t stride_a, int64_t stride_b,
                  int64_t stride_c) {
  auto at = [&](int64_t b) {
    GemmArgs<T> g = args;
    g.A += b * stride_a;
    g.B += b * stride_b;
    g.C += b * stride_c;
    return g;
  };
  if (stride_c == 0) {  // reduction into one C: in order, each product parallel inside
    if (batch <= 0) {     // an empty sum: C = beta * C (+ epilogue)
      GemmArgs<T> g = args;
      g.K = 0;
      gemm<T>(g);
    }
    for (int64_t b = 0; b < batch; ++b) {
      GemmArgs<T> g = at(b);
      if (b > 0) g.beta = T(1);
      gemm<T>(g);
    }
    return;
  }
  const double flops = 2.0 * double(args.M) * double(args.N) * double(args.K);
  const int nt = pool_threads();
  if (batch >= nt && flops < 4e6) {
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t b = 0; b < batch; ++b) gemm<T>(at(b));  // nested: each runs single-threaded
    return;
  }
  for (int64_t b = 0; b < batch; ++b) gemm<T>(at(b));
}

template <typename T>
MicrokernelInfo microkernel_info(Isa isa) {
  return gemm_kernels<T>(isa).info;
}

template <typename T>
void bias_act_backward(int64_t M, int64_t N, const T* g, int64_t rsg, int64_t csg, const T* z,
                       int64_t ldz, T* dz, Activation act, T* db) {
  gemm_kernels<T>().bias_act_backward(M, N, g, rsg, csg, z, ldz, dz, act, db);
}

double fma_peak_gflops(int threads, double seconds) { return gemm_kernels<float>().fma_peak(threads, seconds); }

template <typename T>
void gemm_reference(const GemmArgs<T>& g) {
  if (g.pack_b) {  // the implicit operand, materialized one column at a time
    std::vector<T> col(size_t(std::max<int64_t>(g.K, 1)));
    for (int64_t j = 0; j < g.N; ++j) {
      g.pack_b(g.pack_b_ctx, 0, g.K, j, 1, 1, col.data());
      GemmArgs<T> c = g;
      c.pack_b = nullptr;
      c.N = 1, c.B = col.data(), c.rsb = 1, c.csb = 0, c.C = g.C + j;
      c.bias = g.bias_mode == BiasMode::per_col ? g.bias + j : g.bias;
      c.preact = g.preact ? g.preact + j : nullptr;
      gemm_reference<T>(c);
    }
    return;
  }
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; ++j) {
      long double acc = 0;
      for (int64_t k = 0; k < g.K; ++k)
        acc += (long double)g.A[i * g.rsa + k * g.csa] * (long double)g.B[k * g.rsb + j * g.csb];
      T* c = g.C + i * g.ldc + j;
      T v = T(g.alpha * acc) + (g.beta == T(0) ? T(0) : g.beta * *c);
      if (g.bias_mode == BiasMode::per_col) v += g.bias[j];
      if (g.bias_mode == BiasMode::per_row) v += g.bias[i];
      if (g.preact) g.preact[i * g.ld_preact + j] = v;
      *c = activation_reference(v, g.act);
    }
}

#define FUSEDOPS_INSTANTIATE(T)                                                          \
  template void gemm<T>(const GemmArgs<T>&);                                             \
  template void gemm_offset_b<T>(const GemmArgs<T>&, const T*, const int64_t*, int64_t, int64_t, int64_t); \
  template void gemm_offset_c<T>(const GemmArgs<T>&, const T*, const int64_t*, T*, const int64_t*, int64_t, \
                                 int64_t, int64_t, int64_t);                                              \
  template void gemm_offset_a<T>(const GemmArgs<T>&, const T*, const int64_t*, int64_t, int64_t); \
  template const T* gemm_pack_b<T>(const GemmArgs<T>&, std::vector<T>&, Isa*);                 \
  template void gemm_with_isa<T>(Isa, const GemmArgs<T>&);                               \
  template void gemm_batched<T>(const GemmArgs<T>&, int64_t, int64_t, int64_t, int64_t);  \
  template void gemm_reference<T>(const GemmArgs<T>&);                                   \
  template MicrokernelInfo microkernel_info<T>(Isa);                                     \
  template const GemmKernels<T>& gemm_kernels<T>(Isa);                                   \
  template void bias_act_backward<T>(int64_t, int64_t, const T*, int64_t, int64_t, const T*, \
                                     int64_t, T*, Activation, T*);
FUSEDOPS_INSTANTIATE(float)
FUSEDOPS_INSTANTIATE(double)
#undef FUSEDOPS_INSTANTIATE

}  // namespace fusedops::cpu
