// fusedops_sim: layer_norm / add_layer_norm / rms_norm / add_rms_norm on the simulated CUDA kernels (see sim_ops.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "sim/cuda_sim.h"
#define FUSEDOPS_CUDA_NS cuda_sim
#include "cuda/norm_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops_sim, CPU, m) { FUSEDOPS_NORM_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
