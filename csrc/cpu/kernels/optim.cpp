// Optimizer kernel entry points: dispatch on the instruction set in force.
#include "optim.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

#define FUSEDOPS_DECLARE_ISA(ns)                                                            \
  namespace ns {                                                                            \
  template <typename T> void adam_step_run(const AdamTensor<T>*, int64_t, const AdamHyper&); \
  template <typename T> void sgd_step_run(const SgdTensor<T>*, int64_t, const SgdHyper&);    \
  template <typename T> double total_norm_run(const T* const*, const int64_t*, int64_t, double); \
  template <typename T> void scale_all_run(T* const*, const int64_t*, int64_t, T);          \
  }
FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_ISA)
#undef FUSEDOPS_DECLARE_ISA

#if defined(__x86_64__)
#define FUSEDOPS_ISA_CALL(fn, ...)                                    \
  do {                                                                \
    const Isa isa = active_isa();                                     \
    if (isa == Isa::avx512) return avx512::fn(__VA_ARGS__);           \
    if (isa == Isa::avx2) return avx2::fn(__VA_ARGS__);               \
    return generic::fn(__VA_ARGS__);                                  \
  } while (0)
#else
#define FUSEDOPS_ISA_CALL(fn, ...) return generic::fn(__VA_ARGS__)
#endif

template <typename T>
void adam_step(const AdamTensor<T>* tensors, int64_t count, const AdamHyper& h) {
  FUSEDOPS_ISA_CALL(adam_step_run<T>, tensors, count, h);
}

template <typename T>
void sgd_step(const SgdTensor<T>* tensors, int64_t count, const SgdHyper& h) {
  FUSEDOPS_ISA_CALL(sgd_step_run<T>, tensors, count, h);
}

template <typename T>
double total_norm(const T* const* data, const int64_t* sizes, int64_t count, double p) {
  FUSEDOPS_ISA_CALL(total_norm_run<T>, data, sizes, count, p);
}

template <typename T>
void scale_all(T* const* data, const int64_t* sizes, int64_t count, T scale) {
  FUSEDOPS_ISA_CALL(scale_all_run<T>, data, sizes, count, scale);
}
#undef FUSEDOPS_ISA_CALL

#define FUSEDOPS_OPTIM_INSTANTIATE(T)                                                   \
  template void adam_step<T>(const AdamTensor<T>*, int64_t, const AdamHyper&);          \
  template void sgd_step<T>(const SgdTensor<T>*, int64_t, const SgdHyper&);             \
  template double total_norm<T>(const T* const*, const int64_t*, int64_t, double);      \
  template void scale_all<T>(T* const*, const int64_t*, int64_t, T);
FUSEDOPS_OPTIM_INSTANTIATE(float)
FUSEDOPS_OPTIM_INSTANTIATE(double)
#undef FUSEDOPS_OPTIM_INSTANTIATE

}  // namespace fusedops::cpu
