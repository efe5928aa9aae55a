// CUDA bindings of rnn_layer and rnn_layer_backward (the logic, shared with the simulator, is in
// rnn_impl.h).
#include <torch/library.h>

#include "cuda/rnn_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_RNN_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
