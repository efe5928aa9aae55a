// Rotary embedding entry points: dispatch on the instruction set in force.
#include "rotary.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(RotaryKernels, rotary_table, rotary_kernels)
template const RotaryKernels<float>& rotary_kernels<float>(Isa);
template const RotaryKernels<double>& rotary_kernels<double>(Isa);
template const RotaryKernels<bf16_t>& rotary_kernels<bf16_t>(Isa);

}  // namespace fusedops::cpu
