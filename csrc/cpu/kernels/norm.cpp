// LayerNorm entry points: dispatch on the instruction set in force.
#include "norm.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(NormKernels, norm_table, norm_kernels)
template const NormKernels<float>& norm_kernels<float>(Isa);
template const NormKernels<double>& norm_kernels<double>(Isa);
template const NormKernels<bf16_t>& norm_kernels<bf16_t>(Isa);

}  // namespace fusedops::cpu
