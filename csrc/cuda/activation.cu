// CUDA bindings of gelu, relu, sigmoid, tanh, softmax, log_softmax and their backward ops (the
// logic, shared with the simulator, is in activation_impl.h).
#include <torch/library.h>

#include "cuda/activation_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_ACTIVATION_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
