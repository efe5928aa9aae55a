// fusedops_sim: adam_step_, sgd_step_, total_norm, clip_scale_ on the simulated CUDA kernels
// (see sim_ops.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "sim/cuda_sim.h"
// The simulator's kernels get their own namespace so they can never be confused with the
// CUDA build's when both live in one library.
#define FUSEDOPS_CUDA_NS cuda_sim
#include "cuda/optim_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops_sim, CPU, m) {
  m.impl("adam_step_", &adam_step);
  m.impl("sgd_step_", &sgd_step);
  m.impl("total_norm", &total_norm);
  m.impl("clip_scale_", &clip_scale);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
