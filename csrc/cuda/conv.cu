// CUDA bindings of conv2d, conv2d_backward, max_pool2d_with_indices, max_pool2d_backward
// (the logic, shared with the simulator, is in conv_impl.h).
#include <torch/library.h>

#include "cuda/conv_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_CONV_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
