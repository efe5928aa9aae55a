// CUDA bindings of layer_norm, layer_norm_stats, layer_norm_backward, add_layer_norm,
// add_layer_norm_stats, add_layer_norm_backward and the rms_norm counterparts (the logic, shared with the simulator, is in
// norm_impl.h).
#include <torch/library.h>

#include "cuda/norm_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) {
  m.impl("layer_norm", &layer_norm);
  m.impl("layer_norm_stats", &layer_norm_stats);
  m.impl("layer_norm_backward", &layer_norm_backward);
  m.impl("add_layer_norm", &add_layer_norm);
  m.impl("add_layer_norm_stats", &add_layer_norm_stats);
  m.impl("add_layer_norm_backward", &add_layer_norm_backward);
  FUSEDOPS_RMS_NORM_IMPLS(m);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
