// fusedops_sim: rotary_embedding / rotary_embedding_ / rotary_embedding_backward on the simulated
// CUDA kernel (see sim_ops.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "sim/cuda_sim.h"
#define FUSEDOPS_CUDA_NS cuda_sim
#include "cuda/rotary_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops_sim, CPU, m) { FUSEDOPS_ROTARY_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
