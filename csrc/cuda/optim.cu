// CUDA bindings of adam_step_, sgd_step_, total_norm, clip_scale_ (the logic, shared with the
// simulator, is in optim_impl.h).
#include <torch/library.h>

#include "cuda/optim_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) {
  m.impl("adam_step_", &adam_step);
  m.impl("sgd_step_", &sgd_step);
  m.impl("total_norm", &total_norm);
  m.impl("clip_scale_", &clip_scale);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
