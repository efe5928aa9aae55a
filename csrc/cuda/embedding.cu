// CUDA bindings of embedding and embedding_backward (the logic, shared with the simulator, is in
// embedding_impl.h).
#include <torch/library.h>

#include "cuda/embedding_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_EMBEDDING_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
