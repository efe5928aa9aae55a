// Flash attention entry points: dispatch on the instruction set in force.
#include "attention.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(AttentionKernels, attention_table, attention_kernels)
template const AttentionKernels<float>& attention_kernels<float>(Isa);
template const AttentionKernels<double>& attention_kernels<double>(Isa);
template const AttentionKernels<bf16_t>& attention_kernels<bf16_t>(Isa);

}  // namespace fusedops::cpu
