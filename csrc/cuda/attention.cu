// CUDA bindings of scaled_dot_product_attention and its backward (the logic, shared with the
// simulator, is in attention_impl.h).
#include <torch/library.h>

#include "cuda/attention_impl.h"
#include "common/register.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

TORCH_LIBRARY_IMPL(fusedops, CUDA, m) { FUSEDOPS_ATTENTION_OPS(FUSEDOPS_IMPL_BIND) }

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
