// LayerNorm entry points: dispatch on the instruction set in force.
#include "norm.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

#define FUSEDOPS_DECLARE_ISA(ns)                                                              \
  namespace ns {                                                                              \
  template <typename T>                                                                       \
  void layer_norm_forward_run(int64_t, int64_t, const T*, const T*, T*, const T*, const T*, T, \
                              T*, T*, T*);                                                    \
  template <typename T>                                                                       \
  void layer_norm_backward_run(int64_t, int64_t, const T*, const T*, const T*, const T*,      \
                               const T*, const T*, T*, T*, T*);                               \
  }
FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_ISA)
#undef FUSEDOPS_DECLARE_ISA

template <typename T>
void layer_norm_forward(int64_t M, int64_t N, const T* x, const T* residual, T* sum_out,
                        const T* w, const T* b, T eps, T* y, T* mean, T* rstd) {
#if defined(__x86_64__)
  const Isa isa = active_isa();
  if (isa == Isa::avx512)
    return avx512::layer_norm_forward_run<T>(M, N, x, residual, sum_out, w, b, eps, y, mean, rstd);
  if (isa == Isa::avx2)
    return avx2::layer_norm_forward_run<T>(M, N, x, residual, sum_out, w, b, eps, y, mean, rstd);
#endif
  generic::layer_norm_forward_run<T>(M, N, x, residual, sum_out, w, b, eps, y, mean, rstd);
}

template <typename T>
void layer_norm_backward(int64_t M, int64_t N, const T* g, const T* x, const T* mean,
                         const T* rstd, const T* w, const T* grad_add, T* dx, T* dw, T* db) {
#if defined(__x86_64__)
  const Isa isa = active_isa();
  if (isa == Isa::avx512)
    return avx512::layer_norm_backward_run<T>(M, N, g, x, mean, rstd, w, grad_add, dx, dw, db);
  if (isa == Isa::avx2)
    return avx2::layer_norm_backward_run<T>(M, N, g, x, mean, rstd, w, grad_add, dx, dw, db);
#endif
  generic::layer_norm_backward_run<T>(M, N, g, x, mean, rstd, w, grad_add, dx, dw, db);
}

#define FUSEDOPS_INSTANTIATE(T)                                                               \
  template void layer_norm_forward<T>(int64_t, int64_t, const T*, const T*, T*, const T*,     \
                                      const T*, T, T*, T*, T*);                               \
  template void layer_norm_backward<T>(int64_t, int64_t, const T*, const T*, const T*,        \
                                       const T*, const T*, const T*, T*, T*, T*);
FUSEDOPS_INSTANTIATE(float)
FUSEDOPS_INSTANTIATE(double)
#undef FUSEDOPS_INSTANTIATE

}  // namespace fusedops::cpu
