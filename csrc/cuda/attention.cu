// CUDA bindings of scaled_dot_product_attention and its backward (the logic, shared with the
// simulator, is in attention_impl.h).
#include <torch/library.h>

#include "cuda/attention_impl.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) {
  m.impl("scaled_dot_product_attention", &scaled_dot_product_attention);
  m.impl("scaled_dot_product_attention_backward", &scaled_dot_product_attention_backward);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
