// Activation and softmax entry points: dispatch on the instruction set in force.
#include "activation_ops.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(ActivationKernels, activation_table, activation_kernels)
template const ActivationKernels<float>& activation_kernels<float>(Isa);
template const ActivationKernels<double>& activation_kernels<double>(Isa);
template const ActivationKernels<bf16_t>& activation_kernels<bf16_t>(Isa);

}  // namespace fusedops::cpu
