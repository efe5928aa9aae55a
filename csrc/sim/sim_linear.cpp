// fusedops_sim: linear / matmul on the simulated CUDA kernels (see sim_ops.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "sim/cuda_sim.h"
// The simulator's kernels get their own namespace so they can never be confused with the
// CUDA build's when both live in one library.
#define FUSEDOPS_CUDA_NS cuda_sim
#include "cuda/linear_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops_sim, CPU, m) {
  m.impl("linear", &linear);
  m.impl("linear_act", &linear_act);
  m.impl("linear_backward", &linear_backward);
  m.impl("matmul", &matmul);
  m.impl("matmul_backward", &matmul_backward);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
