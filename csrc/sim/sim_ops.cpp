// The fusedops_sim library: every CUDA kernel, executed on CPU tensors by the CUDA simulator,
// under the schema of fusedops::<op>. Each op family registers its kernels in its own
// translation unit, csrc/sim/sim_<family>.cpp, with the CUDA build's own bindings
// (csrc/cuda/<family>_impl.h): same checks, launch plans and launches, so the tests here cover
// what runs on a GPU.
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(fusedops_sim, m) { fusedops::define_schemas(m); }
