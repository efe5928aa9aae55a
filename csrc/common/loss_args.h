// Argument rules of the losses shared by the CPU, CUDA and simulator bindings.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "common/checks.h"

namespace fusedops {

enum class Reduction { none, mean, sum };

inline Reduction reduction_arg(c10::string_view r, const char* op) {
  if (r == "mean") return Reduction::mean;
  if (r == "sum") return Reduction::sum;
  FUSEDOPS_CHECK(r == "none", op, "reduction must be \"mean\", \"sum\" or \"none\", got \"",
                 std::string(r.data(), r.size()), "\"");
  return Reduction::none;
}

inline void check_label_smoothing(double ls, const char* op) {
  FUSEDOPS_CHECK(ls >= 0.0 && ls <= 1.0, op, "label_smoothing must be between 0.0 and 1.0, got ",
                 ls);
}

// Shapes of cross_entropy's operands (input [N, C]; target [N] int64 or probabilities [N, C];
// weight [C]); dtypes and devices are each backend's. Returns whether target holds
// probabilities.
inline bool check_cross_entropy_shapes(const at::Tensor& input, const at::Tensor& target,
                                       const std::optional<at::Tensor>& weight,
                                       int64_t ignore_index, const char* op) {
  FUSEDOPS_CHECK(input.dim() == 2, op, "input must be 2-D [N, C] here, got shape ",
                 shape_str(input.sizes()));
  const int64_t N = input.size(0), C = input.size(1);
  const bool probs = at::isFloatingType(target.scalar_type());
  if (probs) {
    FUSEDOPS_CHECK(target.sizes() == input.sizes(), op,
                   "probability target must have the input's shape ", shape_str(input.sizes()),
                   ", got ", shape_str(target.sizes()));
    FUSEDOPS_CHECK(ignore_index < 0, op,
                   "ignore_index is not supported for probability (floating point) targets");
  } else {
    TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "fusedops.", op,
                     ": class-index target must be int64, got ", target.scalar_type());
    FUSEDOPS_CHECK(target.dim() == 1 && target.size(0) == N, op, "target must have shape [", N,
                   "] (one class per row of input), got ", shape_str(target.sizes()));
  }
  FUSEDOPS_CHECK(C > 0 || N == 0, op, "input must have at least one class, got shape ",
                 shape_str(input.sizes()));
  if (weight.has_value())
    FUSEDOPS_CHECK(weight->dim() == 1 && weight->size(0) == C, op,
                   "weight must be 1-D [C] = [", C, "] (one weight per class), got shape ",
                   shape_str(weight->sizes()));
  return probs;
}

}  // namespace fusedops
