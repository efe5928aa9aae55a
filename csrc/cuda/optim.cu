// CUDA bindings of adam_step_, sgd_step_, total_norm, clip_scale_ (the logic, shared with the
// simulator, is in optim_impl.h).
#include <torch/library.h>

#include "cuda/optim_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_OPTIM_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
