// Optimizer kernel entry points: dispatch on the instruction set in force.
#include "optim.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(OptimKernels, optim_table, optim_kernels)
template const OptimKernels<float>& optim_kernels<float>(Isa);
template const OptimKernels<double>& optim_kernels<double>(Isa);
template const OptimKernels<bf16_t>& optim_kernels<bf16_t>(Isa);

}  // namespace fusedops::cpu
