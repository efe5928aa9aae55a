// Flash attention entry points: dispatch on the instruction set in force.
#include "attention.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

#define FUSEDOPS_DECLARE_ISA(ns)                                                 \
  namespace ns {                                                                 \
  template <typename T> void attention_forward_run(const AttentionArgs<T>&);     \
  template <typename T> void attention_backward_run(const AttentionArgs<T>&);    \
  }
FUSEDOPS_FOR_EACH_ISA(FUSEDOPS_DECLARE_ISA)
#undef FUSEDOPS_DECLARE_ISA

template <typename T>
void attention_forward(const AttentionArgs<T>& args) {
#if defined(__x86_64__)
  const Isa isa = active_isa();
  if (isa == Isa::avx512) return avx512::attention_forward_run<T>(args);
  if (isa == Isa::avx2) return avx2::attention_forward_run<T>(args);
#endif
  generic::attention_forward_run<T>(args);
}

template <typename T>
void attention_backward(const AttentionArgs<T>& args) {
#if defined(__x86_64__)
  const Isa isa = active_isa();
  if (isa == Isa::avx512) return avx512::attention_backward_run<T>(args);
  if (isa == Isa::avx2) return avx2::attention_backward_run<T>(args);
#endif
  generic::attention_backward_run<T>(args);
}

template void attention_forward<float>(const AttentionArgs<float>&);
template void attention_forward<double>(const AttentionArgs<double>&);
template void attention_backward<float>(const AttentionArgs<float>&);
template void attention_backward<double>(const AttentionArgs<double>&);

}  // namespace fusedops::cpu
