// CUDA bindings of rotary_embedding, rotary_embedding_ and rotary_embedding_backward (the logic,
// shared with the simulator, is in rotary_impl.h).
#include <torch/library.h>

#include "cuda/rotary_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_ROTARY_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
