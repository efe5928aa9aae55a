// Activation and softmax entry points: dispatch on the instruction set in force.
#include "activation_ops.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

#define FUSEDOPS_DECLARE_ISA(ns)                                                              \
  namespace ns {                                                                              \
  template <typename T> void pointwise_forward_run(Pointwise, int64_t, const T*, T*);         \
  template <typename T>                                                                       \
  void pointwise_backward_run(Pointwise, int64_t, const T*, const T*, T*);                    \
  template <typename T>                                                                       \
  void softmax_forward_run(int64_t, int64_t, int64_t, const T*, T*, bool);                    \
  template <typename T>                                                                       \
  void softmax_backward_run(int64_t, int64_t, int64_t, const T*, const T*, T*, bool);         \
  }
FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_ISA)
#undef FUSEDOPS_DECLARE_ISA

template <typename T>
void pointwise_forward(Pointwise f, int64_t n, const T* x, T* y) {
  FUSEDOPS_DISPATCH(pointwise_forward_run, f, n, x, y);
}

template <typename T>
void pointwise_backward(Pointwise f, int64_t n, const T* g, const T* saved, T* dx) {
  FUSEDOPS_DISPATCH(pointwise_backward_run, f, n, g, saved, dx);
}

template <typename T>
void softmax_forward(int64_t outer, int64_t D, int64_t inner, const T* x, T* y, bool log) {
  FUSEDOPS_DISPATCH(softmax_forward_run, outer, D, inner, x, y, log);
}

template <typename T>
void softmax_backward(int64_t outer, int64_t D, int64_t inner, const T* g, const T* y, T* dx,
                      bool log) {
  FUSEDOPS_DISPATCH(softmax_backward_run, outer, D, inner, g, y, dx, log);
}

#define FUSEDOPS_INSTANTIATE(T)                                                               \
  template void pointwise_forward<T>(Pointwise, int64_t, const T*, T*);                       \
  template void pointwise_backward<T>(Pointwise, int64_t, const T*, const T*, T*);            \
  template void softmax_forward<T>(int64_t, int64_t, int64_t, const T*, T*, bool);            \
  template void softmax_backward<T>(int64_t, int64_t, int64_t, const T*, const T*, T*, bool);
FUSEDOPS_INSTANTIATE(float)
FUSEDOPS_INSTANTIATE(double)
#undef FUSEDOPS_INSTANTIATE

}  // namespace fusedops::cpu
