// Recurrent gate kernels: dispatch on the instruction set in force.
#include "rnn.h"
#include "vec/dispatch.h"

namespace fusedops::cpu {

FUSEDOPS_KERNEL_TABLE(RnnKernels, rnn_table, rnn_kernels)
template const RnnKernels<float>& rnn_kernels<float>(Isa);
template const RnnKernels<double>& rnn_kernels<double>(Isa);

}  // namespace fusedops::cpu
