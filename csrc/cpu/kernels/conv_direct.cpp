// Direct convolution kernels: dispatch on the instruction set in force.
#include "conv_direct.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

#define FUSEDOPS_DECLARE_ISA(ns)                                                                  \
  namespace ns {                                                                                  \
  template <typename T>                                                                           \
  void conv_direct_forward_run(const Conv2dShape&, const T*, const T*, const T*, T*, int64_t,     \
                               int64_t, int);                                                     \
  template <typename T>                                                                           \
  void conv_direct_weight_run(const Conv2dShape&, const T*, const T*, T*, int64_t, int64_t, int,   \
                              bool);                                                              \
  }
FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_ISA)
#undef FUSEDOPS_DECLARE_ISA

template <typename T>
void conv_direct_forward(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y,
                         int64_t n, int64_t k0, int kb) {
  FUSEDOPS_DISPATCH(conv_direct_forward_run, s, x, w, bias, y, n, k0, kb);
}

template <typename T>
void conv_direct_weight(const Conv2dShape& s, const T* gy, const T* x, T* gw, int64_t n,
                        int64_t k0, int kb, bool accumulate) {
  FUSEDOPS_DISPATCH(conv_direct_weight_run, s, gy, x, gw, n, k0, kb, accumulate);
}

#define FUSEDOPS_INSTANTIATE(T)                                                                   \
  template void conv_direct_forward<T>(const Conv2dShape&, const T*, const T*, const T*, T*,      \
                                       int64_t, int64_t, int);                                    \
  template void conv_direct_weight<T>(const Conv2dShape&, const T*, const T*, T*, int64_t,        \
                                      int64_t, int, bool);
FUSEDOPS_INSTANTIATE(float)
FUSEDOPS_INSTANTIATE(double)
#undef FUSEDOPS_INSTANTIATE

}  // namespace fusedops::cpu
