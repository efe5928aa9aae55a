// fusedops_sim: layer_norm / add_layer_norm / rms_norm / add_rms_norm on the simulated CUDA kernels (see sim_ops.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "sim/cuda_sim.h"
#define FUSEDOPS_CUDA_NS cuda_sim
#include "cuda/norm_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops_sim, CPU, m) {
  m.impl("layer_norm", &layer_norm);
  m.impl("layer_norm_stats", &layer_norm_stats);
  m.impl("layer_norm_backward", &layer_norm_backward);
  m.impl("add_layer_norm", &add_layer_norm);
  m.impl("add_layer_norm_stats", &add_layer_norm_stats);
  m.impl("add_layer_norm_backward", &add_layer_norm_backward);
  FUSEDOPS_RMS_NORM_IMPLS(m);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
