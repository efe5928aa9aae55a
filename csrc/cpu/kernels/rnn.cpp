// Recurrent gate kernels: dispatch on the instruction set in force.
#include "rnn.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

#define FUSEDOPS_DECLARE_ISA(ns)                                                              \
  namespace ns {                                                                              \
  template <typename T> void rnn_step_forward_run(const RnnStepForward<T>&);                  \
  template <typename T> void rnn_step_backward_run(const RnnStepBackward<T>&);                \
  template <typename T>                                                                       \
  void lstm_cell_output_run(int64_t, int64_t, const T*, int64_t, T*, int64_t);                \
  }
FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_ISA)
#undef FUSEDOPS_DECLARE_ISA

template <typename T>
void rnn_step_forward(const RnnStepForward<T>& a) {
  FUSEDOPS_DISPATCH(rnn_step_forward_run, a);
}

template <typename T>
void rnn_step_backward(const RnnStepBackward<T>& a) {
  FUSEDOPS_DISPATCH(rnn_step_backward_run, a);
}

template <typename T>
void lstm_cell_output(int64_t rows, int64_t H, const T* ws, int64_t ldw, T* m, int64_t ldm) {
  FUSEDOPS_DISPATCH(lstm_cell_output_run, rows, H, ws, ldw, m, ldm);
}

#define FUSEDOPS_INSTANTIATE(T)                                                               \
  template void rnn_step_forward<T>(const RnnStepForward<T>&);                                \
  template void rnn_step_backward<T>(const RnnStepBackward<T>&);                              \
  template void lstm_cell_output<T>(int64_t, int64_t, const T*, int64_t, T*, int64_t);
FUSEDOPS_INSTANTIATE(float)
FUSEDOPS_INSTANTIATE(double)
#undef FUSEDOPS_INSTANTIATE

}  // namespace fusedops::cpu
