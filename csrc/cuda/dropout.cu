// CUDA bindings of dropout and dropout_backward (the logic, shared with the simulator, is in
// dropout_impl.h).
#include <torch/library.h>

#include "cuda/dropout_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_DROPOUT_IMPLS(m); }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
