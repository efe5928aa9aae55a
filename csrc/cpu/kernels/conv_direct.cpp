// Direct convolution kernels: dispatch on the instruction set in force.
#include "conv_direct.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(ConvDirectKernels, conv_direct_table, conv_direct_kernels)
template const ConvDirectKernels<float>& conv_direct_kernels<float>(Isa);
template const ConvDirectKernels<double>& conv_direct_kernels<double>(Isa);

}  // namespace fusedops::cpu
