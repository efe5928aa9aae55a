// Shape rules of layer_norm / add_layer_norm, rms_norm / add_rms_norm and of the activations and softmax, shared by the
// CPU, CUDA and simulator bindings (dtype and device checks are each backend's).
#pragma once
#include <ATen/ATen.h>

#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "common/checks.h"

namespace fusedops {

// A LayerNorm problem as the kernels see it: M rows of N elements; the per-row statistics
// have the input's leading shape.
struct NormRows {
  int64_t M = 1, N = 1;
  std::vector<int64_t> stat_shape;
};

inline void check_shape_is(const at::Tensor& t, at::IntArrayRef want, const char* op, const char* arg,
                           const char* what) {
  FUSEDOPS_CHECK(t.sizes() == want, op, arg, " must have ", what, " ", shape_str(want), ", got ",
                 shape_str(t.sizes()));
}

inline NormRows norm_rows(const at::Tensor& input, at::IntArrayRef normalized_shape,
                          const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias, const char* op) {
  const int64_t k = int64_t(normalized_shape.size());
  FUSEDOPS_CHECK(k >= 1, op, "normalized_shape must have at least 1 dimension, got []");
  for (int64_t d : normalized_shape)
    FUSEDOPS_CHECK(d >= 0, op, "normalized_shape must not hold negative sizes, got ",
                   shape_str(normalized_shape));
  const int64_t lead = input.dim() - k;
  FUSEDOPS_CHECK(lead >= 0 && input.sizes().slice(lead) == normalized_shape, op,
                 "input's trailing dimensions must equal normalized_shape ",
                 shape_str(normalized_shape), ", got input shape ", shape_str(input.sizes()));
  if (weight.has_value()) check_shape_is(*weight, normalized_shape, op, "weight", "shape normalized_shape");
  if (bias.has_value()) check_shape_is(*bias, normalized_shape, op, "bias", "shape normalized_shape");
  NormRows r;
  r.stat_shape.assign(input.sizes().begin(), input.sizes().begin() + lead);
  r.M = checked_product(r.stat_shape, op, "input's leading dimensions");
  r.N = checked_product(normalized_shape, op, "normalized_shape");
  return r;
}

// RMSNorm's normalized shape: normalized_shape when given, else the weight's shape, else the
// input's last dimension (torch.nn.functional.rms_norm takes it from the module's weight).
inline std::vector<int64_t> rms_normalized_shape(const at::Tensor& input,
                                                 const std::optional<at::Tensor>& weight,
                                                 at::OptionalIntArrayRef normalized_shape,
                                                 const char* op) {
  if (normalized_shape.has_value()) return normalized_shape->vec();
  if (weight.has_value()) return weight->sizes().vec();
  FUSEDOPS_CHECK(input.dim() >= 1, op, "input must have at least 1 dimension, got a 0-d tensor");
  return {input.size(-1)};
}

// RMSNorm's eps: the given one, else the machine epsilon of the arithmetic type (fp32's for
// bf16 and fp16 inputs), as torch.nn.functional.rms_norm.
inline double rms_eps(const at::Tensor& input, std::optional<double> eps) {
  if (eps.has_value()) return *eps;
  return input.scalar_type() == at::kDouble ? std::numeric_limits<double>::epsilon()
                                            : double(std::numeric_limits<float>::epsilon());
}

// Statistics (mean, rstd) are float32 for every input dtype but float64.
inline at::ScalarType norm_stat_dtype(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// mean: nullptr for RMSNorm (rstd only).
inline void check_norm_stats(const at::Tensor* mean, const at::Tensor& rstd, const at::Tensor& input,
                             const NormRows& r, const char* op) {
  for (const at::Tensor* t : {mean, &rstd}) {
    if (!t) continue;
    const char* arg = t == mean ? "mean" : "rstd";
    TORCH_CHECK_TYPE(t->scalar_type() == norm_stat_dtype(input), "fusedops.", op, ": ", arg,
                     " must be ", norm_stat_dtype(input), " for a ", input.scalar_type(),
                     " input, got ", t->scalar_type());
    check_shape_is(*t, r.stat_shape, op, arg, "the input's leading shape");
    FUSEDOPS_CHECK(t->device() == input.device(), op, arg, " must be on the input's device (",
                   input.device(), "), got ", t->device());
  }
}

// The dimension `dim` of softmax / log_softmax, wrapped, as [outer, D, inner] of the
// contiguous tensor (a 0-d tensor counts as [1]).
struct SoftmaxSplit {
  int64_t outer = 1, D = 1, inner = 1;
};

inline SoftmaxSplit softmax_split(const at::Tensor& t, int64_t dim, const char* op) {
  const int64_t nd = std::max<int64_t>(t.dim(), 1);
  FUSEDOPS_CHECK(dim >= -nd && dim < nd, op, "dim must be in [", -nd, ", ", nd - 1,
                 "] for a tensor of shape ", shape_str(t.sizes()), ", got ", dim);
  if (t.dim() == 0) return {};
  const int64_t d0 = dim < 0 ? dim + nd : dim;
  SoftmaxSplit s;
  s.outer = checked_product(t.sizes().slice(0, d0), op, "the dimensions before dim");
  s.D = t.size(d0);
  s.inner = checked_product(t.sizes().slice(d0 + 1), op, "the dimensions after dim");
  return s;
}

}  // namespace fusedops
