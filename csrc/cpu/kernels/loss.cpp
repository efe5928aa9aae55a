// Loss kernel entry points: target checks, and dispatch on the instruction set in force.
#include "loss.h"
#include "vec/dispatch.h"

#include <cstdint>

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(LossKernels, loss_table, loss_kernels)
template const LossKernels<float>& loss_kernels<float>(Isa);
template const LossKernels<double>& loss_kernels<double>(Isa);
template const LossKernels<bf16_t>& loss_kernels<bf16_t>(Isa);

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

template int64_t cross_entropy_targets<float>(int64_t, int64_t, const int64_t*, const float*, int64_t,
                                              double*);
template int64_t cross_entropy_targets<double>(int64_t, int64_t, const int64_t*, const double*, int64_t,
                                               double*);

}  // namespace fusedops::cpu
