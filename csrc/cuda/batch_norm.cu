// CUDA bindings of batch_norm and batch_norm_backward (the logic, shared with the simulator, is in
// batch_norm_impl.h).
#include <torch/library.h>

#include "cuda/batch_norm_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_BATCH_NORM_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
