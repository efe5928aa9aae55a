// CUDA bindings of linear, linear_act, linear_backward, matmul, matmul_backward
// (the logic, shared with the simulator, is in linear_impl.h).
#include <torch/library.h>

#include "cuda/linear_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) {
  m.impl("linear", &linear);
  m.impl("linear_act", &linear_act);
  m.impl("linear_backward", &linear_backward);
  m.impl("matmul", &matmul);
  m.impl("matmul_backward", &matmul_backward);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
