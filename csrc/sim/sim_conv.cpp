// fusedops_sim: conv2d / max_pool2d on the simulated CUDA kernels (see sim_ops.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "sim/cuda_sim.h"
#define FUSEDOPS_CUDA_NS cuda_sim
#include "cuda/conv_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops_sim, CPU, m) {
  m.impl("conv2d", &conv2d);
  m.impl("conv2d_backward", &conv2d_backward);
  m.impl("max_pool2d_with_indices", &max_pool2d_with_indices);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
