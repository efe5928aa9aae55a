// fusedops_sim: scaled_dot_product_attention on the simulated CUDA kernels (see sim_ops.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "sim/cuda_sim.h"
// The simulator's kernels get their own namespace so they can never be confused with the
// CUDA build's when both live in one library.
#define FUSEDOPS_CUDA_NS cuda_sim
#include "cuda/attention_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops_sim, CPU, m) { FUSEDOPS_ATTENTION_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
