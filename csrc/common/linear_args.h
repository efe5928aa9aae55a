// Shape rules of linear and matmul shared by the CPU, CUDA and simulator bindings: argument
// checks (dtype and device are each backend's), output shapes, and operands viewed as
// (batches of) strided matrices for the GEMMs.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "common/checks.h"
#include "contracts/activation.h"

namespace fusedops {

// The activation argument (None, "relu", "gelu", "gelu_tanh") as the kernels' enum.
inline Activation activation_arg(const std::optional<c10::string_view>& name, const char* op) {
  Activation act = Activation::none;
  if (name.has_value()) {
    std::string s(name->data(), name->size());
    FUSEDOPS_CHECK(parse_activation(s.c_str(), &act), op,
                   "activation must be None, \"relu\", \"gelu\" or \"gelu_tanh\", got \"", s, "\"");
  }
  return act;
}

inline void check_linear_shapes(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const char* op) {
  FUSEDOPS_CHECK(input.dim() >= 1, op,
                 "input must have at least 1 dimension [..., in_features], got a 0-d tensor");
  FUSEDOPS_CHECK(weight.dim() == 2, op, "weight must be 2-D [out_features, in_features], got shape ",
                 shape_str(weight.sizes()));
  FUSEDOPS_CHECK(input.size(-1) == weight.size(1), op, "input's last dimension (", input.size(-1),
                 ") must equal weight's in_features (", weight.size(1), "); input shape ",
                 shape_str(input.sizes()), ", weight shape ", shape_str(weight.sizes()));
  if (bias.has_value())
    FUSEDOPS_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op,
                   "bias must be 1-D [out_features] = [", weight.size(0), "], got shape ",
                   shape_str(bias->sizes()));
}

// input [..., K] -> [M, K] (a view when the strides allow).
inline at::Tensor rows_of(const at::Tensor& t) {
  int64_t M = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) M *= t.size(d);
  return t.reshape({M, t.size(-1)});
}

inline std::vector<int64_t> with_last(at::IntArrayRef sizes, int64_t last) {
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out.back() = last;
  return out;
}

// Checks of linear_backward beyond check_linear_shapes.
inline void check_linear_backward_shapes(const at::Tensor& grad_output, const at::Tensor& input,
                                         const at::Tensor& weight,
                                         const std::optional<at::Tensor>& act_input,
                                         bool needs_act_input, const char* op) {
  const auto out_shape = with_last(input.sizes(), weight.size(0));
  FUSEDOPS_CHECK(grad_output.sizes().vec() == out_shape, op, "grad_output must have shape ",
                 shape_str(out_shape), ", got ", shape_str(grad_output.sizes()));
  if (!needs_act_input) return;
  FUSEDOPS_CHECK(act_input.has_value(), op, "act_input is required when activation is set");
  FUSEDOPS_CHECK(act_input->sizes().vec() == out_shape, op, "act_input must have shape ",
                 shape_str(out_shape), ", got ", shape_str(act_input->sizes()));
}

inline void check_matmul_shapes(const at::Tensor& a, const at::Tensor& b, const char* op) {
  FUSEDOPS_CHECK(a.dim() == 2 || a.dim() == 3, op, "input must be 2-D or 3-D, got shape ",
                 shape_str(a.sizes()));
  FUSEDOPS_CHECK(b.dim() == 2 || b.dim() == 3, op, "other must be 2-D or 3-D, got shape ",
                 shape_str(b.sizes()));
  FUSEDOPS_CHECK(a.size(-1) == b.size(-2), op, "input's last dimension (", a.size(-1),
                 ") must equal other's second-to-last (", b.size(-2), "); input shape ",
                 shape_str(a.sizes()), ", other shape ", shape_str(b.sizes()));
  if (a.dim() == 3 && b.dim() == 3)
    FUSEDOPS_CHECK(a.size(0) == b.size(0) || a.size(0) == 1 || b.size(0) == 1, op,
                   "batch sizes must match or be 1, got input shape ", shape_str(a.sizes()),
                   " and other shape ", shape_str(b.sizes()));
}

inline std::vector<int64_t> matmul_shape(const at::Tensor& a, const at::Tensor& b) {
  if (a.dim() == 2 && b.dim() == 2) return {a.size(0), b.size(1)};
  // A batch of 1 broadcasts against any other, 0 included.
  const int64_t batch = a.dim() == 2   ? b.size(0)
                        : b.dim() == 2 ? a.size(0)
                        : a.size(0) == 1 ? b.size(0)
                                         : a.size(0);
  return {batch, a.size(-2), b.size(-1)};
}

// A 2-D or 3-D operand as a batch of strided matrices; bs (batch stride) is 0 when the
// operand has no batch or a batch of 1 that broadcasts.
struct Batched {
  int64_t batch, rows, cols, rs, cs, bs;
};

inline Batched batched(const at::Tensor& t) {
  if (t.dim() == 2) return {1, t.size(0), t.size(1), t.stride(0), t.stride(1), 0};
  return {t.size(0), t.size(1), t.size(2), t.stride(1), t.stride(2),
          t.size(0) == 1 ? 0 : t.stride(0)};
}

// [B, M, K] whose rows stack evenly -> [B*M, K] view, so [B, M, K] @ [K, N] is one GEMM.
inline bool rows_stack(const at::Tensor& t) {
  return t.dim() == 3 && t.stride(0) == t.size(1) * t.stride(1);
}

// [B, M, K] -> [B*M, K] (a view when the rows stack; sizes explicit so K == 0 works).
inline at::Tensor stack_rows(const at::Tensor& t) {
  return t.reshape({t.size(0) * t.size(1), t.size(2)});
}

}  // namespace fusedops
