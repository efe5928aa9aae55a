// Batch-norm entry points: dispatch on the instruction set in force.
#include "batch_norm.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(BatchNormKernels, batch_norm_table, batch_norm_kernels)
template const BatchNormKernels<float>& batch_norm_kernels<float>(Isa);
template const BatchNormKernels<double>& batch_norm_kernels<double>(Isa);

}  // namespace fusedops::cpu
