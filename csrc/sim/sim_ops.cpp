// fusedops_sim::<op>: every CUDA kernel, executed on CPU tensors by the CUDA simulator, under
// the schema of fusedops::<op>. The bindings are the CUDA build's own (csrc/cuda/*_impl.h):
// same checks, launch plans and launches, so the tests here cover what runs on a GPU.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops.h"
#include "sim/cuda_sim.h"
// The simulator's kernels get their own namespace so they can never be confused with the
// CUDA build's when both live in one library.
#define FUSEDOPS_CUDA_NS cuda_sim
#include "cuda/linear_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY(fusedops_sim, m) { fusedops::define_schemas(m); }

TORCH_LIBRARY_IMPL(fusedops_sim, CPU, m) {
  m.impl("linear", &linear);
  m.impl("linear_act", &linear_act);
  m.impl("linear_backward", &linear_backward);
  m.impl("matmul", &matmul);
  m.impl("matmul_backward", &matmul_backward);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
