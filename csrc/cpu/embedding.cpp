// CPU bindings of embedding and embedding_backward: argument checks (indices in range, before
// anything is written), output allocation, dispatch on the index and element dtypes. The math
// is in kernels/embedding.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>

#include "common/checks.h"
#include "common/fresh_output.h"
#include "common/layers_args.h"
#include "common/threads.h"
#include "cpu/kernels/embedding.h"
#include "common/register.h"

namespace fusedops {
namespace {

template <class F>
void dispatch_index(const at::Tensor& idx, F&& f) {
  if (idx.scalar_type() == at::kLong) f(idx.data_ptr<int64_t>());
  else f(idx.data_ptr<int32_t>());
}

void check_in_range(const at::Tensor& idx, int64_t V, const char* op) {
  dispatch_index(idx, [&](auto* p) {
    const int64_t bad = cpu::embedding_first_bad_index(idx.numel(), p, V);
    if (bad >= 0) bad_index(bad, int64_t(p[bad]), V, op);
  });
}

at::Tensor embedding_cpu(const at::Tensor& input, const at::Tensor& weight, std::optional<int64_t> padding_idx,
                         std::optional<double> max_norm, double norm_type, bool scale_grad_by_freq, bool sparse) {
  const char* op = "embedding";
  check_cpu_float(weight, op, "weight");
  FUSEDOPS_CHECK(input.device().is_cpu(), op, "input must be a CPU tensor, got device ", input.device());
  const EmbeddingShape s = embedding_shape(input, weight, padding_idx, op);
  FUSEDOPS_CHECK(!max_norm.has_value(), op, "max_norm is not supported (renormalising rows in the forward); ",
                 "got max_norm=", max_norm.value_or(0.0), ". Use max_norm=None");
  FUSEDOPS_CHECK(!sparse, op, "sparse=True is not supported (the gradient is a dense tensor); use sparse=False");
  (void)norm_type;
  (void)scale_grad_by_freq;  // only changes the backward
  const at::Tensor idx = input.contiguous();
  check_in_range(idx, s.V, op);
  // rows may be apart by any stride; elements within a row must be contiguous
  const at::Tensor w = weight.stride(1) == 1 ? weight : weight.contiguous();
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.push_back(s.D);
  at::Tensor y = empty_output(shape, weight.options());
  dispatch_index(idx, [&](auto* p) {
    cpu::embedding_forward(s.n, s.D, p, w.data_ptr(), w.stride(0), y.data_ptr(), int64_t(w.element_size()));
  });
  return y;
}

at::Tensor embedding_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input, int64_t num_weights,
                                  std::optional<int64_t> padding_idx, bool scale_grad_by_freq) {
  const char* op = "embedding_backward";
  check_cpu_float(grad_output, op, "grad_output");
  check_indices_dtype(input, op);
  FUSEDOPS_CHECK(input.device().is_cpu(), op, "input must be a CPU tensor, got device ", input.device());
  FUSEDOPS_CHECK(num_weights >= 0, op, "num_weights must be >= 0, got ", num_weights);
  FUSEDOPS_CHECK(grad_output.dim() == input.dim() + 1 && grad_output.sizes().slice(0, input.dim()) == input.sizes(),
                 op, "grad_output must have shape input.shape + [embedding_dim] (input ",
                 shape_str(input.sizes()), "), got ", shape_str(grad_output.sizes()));
  const int64_t D = grad_output.size(-1), pad = embedding_padding(padding_idx, num_weights, op);
  const at::Tensor idx = input.contiguous(), g = grad_output.contiguous();
  check_in_range(idx, num_weights, op);
  at::Tensor dw = empty_output({num_weights, D}, grad_output.options());
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "fusedops.embedding_backward", [&] {
    dispatch_index(idx, [&](auto* p) {
      cpu::embedding_backward<scalar_t>(idx.numel(), num_weights, D, p, g.data_ptr<scalar_t>(), pad,
                                        scale_grad_by_freq, dw.data_ptr<scalar_t>());
    });
  });
  return dw;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_EMBEDDING_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
