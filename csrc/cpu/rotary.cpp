// CPU bindings of rotary_embedding, rotary_embedding_ (in place) and rotary_embedding_backward:
// argument checks (common/rotary_args.h), output allocation, dispatch on dtype. q and k are read
// through their strides (a [B, T, H, D] projection viewed as [B, H, T, D] is not copied); only a
// strided last dimension is copied. The math is in kernels/rotary.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/fresh_output.h"
#include "common/rotary_args.h"
#include "common/threads.h"
#include "cpu/dtype.h"
#include "cpu/kernels/rotary.h"
#include "common/register.h"

namespace fusedops {
namespace {

void check_dtypes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
                  const char* op, const char* q_name, const char* k_name) {
  check_cpu_float_or_bf16(q, op, q_name);
  check_cpu_float_or_bf16(k, op, k_name);
  check_cpu_float_or_bf16(cos, op, "cos");
  check_cpu_float_or_bf16(sin, op, "sin");
}

// y = rotate(x) (x and y may be one tensor).
void run(const RotaryArgs& a, const at::Tensor& x, const at::Tensor& y, bool inverse, const char* op) {
  const RotaryGeometry g = rotary_for(a.g, x, y);
  FUSEDOPS_DISPATCH_CPU_FLOAT(x.scalar_type(), op, [&] {
    cpu::rotary_kernels<kernel_t>().rotary(g, kptr<kernel_t>(x), kptr<kernel_t>(y), kptr<kernel_t>(a.cos3),
                                           kptr<kernel_t>(a.sin3), inverse);
  });
}

at::Tensor rotated(const RotaryArgs& a, const at::Tensor& x, bool inverse, const char* op) {
  at::Tensor y = empty_output(x.sizes(), x.options());
  run(a, rows_readable(x), y, inverse, op);
  return y;
}

std::tuple<at::Tensor, at::Tensor> rotary_embedding_cpu(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& cos, const at::Tensor& sin) {
  const char* op = "rotary_embedding";
  check_dtypes(q, k, cos, sin, op, "q", "k");
  const RotaryArgs a = rotary_args(q, k, cos, sin, op);
  return {rotated(a, q, false, op), rotated(a, k, false, op)};
}

void rotate_in_place(const RotaryArgs& a, const at::Tensor& x, const char* op) {
  if (x.size(3) <= 1 || x.stride(3) == 1) return run(a, x, x, false, op);
  const at::Tensor c = x.contiguous();  // a strided last dimension: rotate a copy, write it back
  run(a, c, c, false, op);
  x.copy_(c);
}

void rotary_embedding_inplace_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos,
                                  const at::Tensor& sin) {
  const char* op = "rotary_embedding_";
  check_dtypes(q, k, cos, sin, op, "q", "k");
  const RotaryArgs a = rotary_args(q, k, cos, sin, op);
  check_rotary_in_place(q, k, op);
  rotate_in_place(a, q, op);
  rotate_in_place(a, k, op);
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> rotary_embedding_backward_cpu(
    const std::optional<at::Tensor>& grad_q, const std::optional<at::Tensor>& grad_k, const at::Tensor& cos,
    const at::Tensor& sin) {
  const char* op = "rotary_embedding_backward";
  FUSEDOPS_CHECK(grad_q.has_value() || grad_k.has_value(), op, "grad_q and grad_k must not both be None");
  // a missing gradient is checked as its partner (the shapes that matter are shared)
  const at::Tensor& gq = grad_q.has_value() ? *grad_q : *grad_k;
  const at::Tensor& gk = grad_k.has_value() ? *grad_k : *grad_q;
  check_dtypes(gq, gk, cos, sin, op, "grad_q", "grad_k");
  const RotaryArgs a = rotary_args(gq, gk, cos, sin, op, "grad_q", "grad_k");
  std::optional<at::Tensor> dq, dk;
  if (grad_q.has_value()) dq = rotated(a, *grad_q, true, op);
  if (grad_k.has_value()) dk = rotated(a, *grad_k, true, op);
  return {dq, dk};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_ROTARY_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
