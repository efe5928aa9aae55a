// Loss kernel entry points: target checks, and dispatch on the instruction set in force.
#include "loss.h"
#include "vec/dispatch.h"

#include <cstdint>

namespace fusedops::cpu {

#define FUSEDOPS_DECLARE_ISA(ns)                                                               \
  namespace ns {                                                                               \
  template <typename T> void loss_cross_entropy(const CrossEntropyArgs<T>&);                   \
  template <typename T> void loss_scale_rows(int64_t, int64_t, T*, int64_t, const T*, int64_t); \
  template <typename T> void loss_add_column_sums(int64_t, int64_t, const T*, int64_t, T*);    \
  template <typename T> void loss_mse_forward(int64_t, const T*, const T*, T*, double*);       \
  template <typename T>                                                                        \
  void loss_mse_backward(int64_t, const T*, int64_t, double, const T*, const T*, T*);          \
  template <typename T>                                                                        \
  void loss_bce_forward(int64_t, const T*, const T*, const T*, const T*, T*, double*);         \
  template <typename T>                                                                        \
  void loss_bce_backward(int64_t, const T*, int64_t, double, const T*, const T*, const T*,     \
                         const T*, T*, T*);                                                    \
  }
FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_ISA)
#undef FUSEDOPS_DECLARE_ISA

template <typename T>
int64_t cross_entropy_targets(int64_t N, int64_t C, const int64_t* target, const T* weight,
                              int64_t ignore_index, double* weight_sum) {
  double ws = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = target[i];
    if (t == ignore_index) continue;
    if (t < 0 || t >= C) return i;
    ws += weight ? double(weight[t]) : 1.0;
  }
  *weight_sum = ws;
  return -1;
}

template <typename T>
void cross_entropy(const CrossEntropyArgs<T>& a) { FUSEDOPS_DISPATCH(loss_cross_entropy, a); }

template <typename T>
void scale_rows(int64_t N, int64_t C, T* g, int64_t ldg, const T* s, int64_t ss) {
  FUSEDOPS_DISPATCH(loss_scale_rows, N, C, g, ldg, s, ss);
}

template <typename T>
void add_column_sums(int64_t N, int64_t C, const T* g, int64_t ldg, T* out) {
  FUSEDOPS_DISPATCH(loss_add_column_sums, N, C, g, ldg, out);
}

template <typename T>
void mse_forward(int64_t n, const T* x, const T* y, T* lr, double* ls) {
  FUSEDOPS_DISPATCH(loss_mse_forward, n, x, y, lr, ls);
}

template <typename T>
void mse_backward(int64_t n, const T* g, int64_t gs, double sc, const T* x, const T* y, T* gx) {
  FUSEDOPS_DISPATCH(loss_mse_backward, n, g, gs, sc, x, y, gx);
}

template <typename T>
void bce_logits_forward(int64_t n, const T* x, const T* y, const T* w, const T* pw, T* lr,
                        double* ls) {
  FUSEDOPS_DISPATCH(loss_bce_forward, n, x, y, w, pw, lr, ls);
}

template <typename T>
void bce_logits_backward(int64_t n, const T* g, int64_t gs, double sc, const T* x, const T* y,
                         const T* w, const T* pw, T* gx, T* gy) {
  FUSEDOPS_DISPATCH(loss_bce_backward, n, g, gs, sc, x, y, w, pw, gx, gy);
}

#define FUSEDOPS_INSTANTIATE(T)                                                                \
  template int64_t cross_entropy_targets<T>(int64_t, int64_t, const int64_t*, const T*, int64_t, \
                                            double*);                                          \
  template void cross_entropy<T>(const CrossEntropyArgs<T>&);                                  \
  template void scale_rows<T>(int64_t, int64_t, T*, int64_t, const T*, int64_t);               \
  template void add_column_sums<T>(int64_t, int64_t, const T*, int64_t, T*);                   \
  template void mse_forward<T>(int64_t, const T*, const T*, T*, double*);                      \
  template void mse_backward<T>(int64_t, const T*, int64_t, double, const T*, const T*, T*);   \
  template void bce_logits_forward<T>(int64_t, const T*, const T*, const T*, const T*, T*,     \
                                      double*);                                                \
  template void bce_logits_backward<T>(int64_t, const T*, int64_t, double, const T*, const T*, \
                                       const T*, const T*, T*, T*);
FUSEDOPS_INSTANTIATE(float)
FUSEDOPS_INSTANTIATE(double)
#undef FUSEDOPS_INSTANTIATE

}  // namespace fusedops::cpu
