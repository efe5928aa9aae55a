// CUDA bindings of dropout and dropout_backward (the logic, shared with the simulator, is in
// dropout_impl.h).
#include <torch/library.h>

#include "cuda/dropout_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_DROPOUT_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
