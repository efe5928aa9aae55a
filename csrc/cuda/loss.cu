// CUDA bindings of the losses (the logic, shared with the simulator, is in loss_impl.h).
#include <torch/library.h>

#include "cuda/loss_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_LOSS_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
