// CUDA bindings of rnn_layer and rnn_layer_backward (the logic, shared with the simulator, is in
// rnn_impl.h).
#include <torch/library.h>

#include "cuda/rnn_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) {
  m.impl("rnn_layer", &rnn_layer);
  m.impl("rnn_layer_backward", &rnn_layer_backward);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
