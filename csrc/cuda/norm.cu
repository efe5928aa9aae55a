// CUDA bindings of layer_norm, layer_norm_stats, layer_norm_backward, add_layer_norm,
// add_layer_norm_stats, add_layer_norm_backward and the rms_norm counterparts (the logic, shared with the simulator, is in
// norm_impl.h).
#include <torch/library.h>

#include "cuda/norm_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_NORM_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
