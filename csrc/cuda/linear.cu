// CUDA bindings of linear, linear_act, linear_backward, matmul, matmul_backward
// (the logic, shared with the simulator, is in linear_impl.h).
#include <torch/library.h>

#include "cuda/linear_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_LINEAR_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
