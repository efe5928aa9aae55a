// Argument rules of the pointwise activation ops and SwiGLU shared by the CPU, CUDA and simulator
// bindings (dtype and device are each backend's).
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "common/checks.h"
#include "contracts/activation.h"

namespace fusedops {

// gelu's `approximate` argument ("none" or "tanh") as the kernels' function.
inline Pointwise gelu_kind(c10::string_view approximate, const char* op) {
  if (approximate == "none") return Pointwise::gelu;
  if (approximate == "tanh") return Pointwise::gelu_tanh;
  FUSEDOPS_CHECK(false, op, "approximate must be 'none' or 'tanh', got '",
                 std::string(approximate.data(), approximate.size()), "'");
  return Pointwise::gelu;
}

// A tensor as M rows of its last dimension (N elements, contiguous) at a uniform row stride ld,
// read in place: a slice of a wider row (x.chunk(2, -1)) or a transposed view collapses so. A
// tensor whose leading dimensions do not collapse to one stride, or whose last dimension is
// strided, is copied once (contiguous, ld = N).
struct RowView {
  at::Tensor t;  // the tensor read (the input itself, or its contiguous copy)
  int64_t M = 1, N = 1, ld = 1;
};

inline RowView row_view(const at::Tensor& x) {
  RowView v;
  v.N = x.dim() == 0 ? 1 : x.size(-1);
  v.M = v.N == 0 ? 0 : x.numel() / v.N;
  bool ok = x.dim() >= 1 && (x.stride(-1) == 1 || v.N <= 1) && v.M > 0;
  int64_t ld = v.N, span = 0;  // span: rows covered by the leading dims seen so far
  for (int64_t d = x.dim() - 2; ok && d >= 0; --d) {
    if (x.size(d) == 1) continue;
    if (span == 0) ld = x.stride(d), span = 1;  // the innermost leading dim of size > 1
    else if (x.stride(d) != span * ld) ok = false;
    span *= x.size(d);
  }
  if (ok && ld < v.N && v.M > 1) ok = false;  // overlapping rows (a stride-0 dim): copy
  v.t = ok ? x : x.contiguous();
  v.ld = ok ? ld : v.N;
  return v;
}

inline void check_swiglu_pair(const at::Tensor& a, const at::Tensor& b, const char* op, const char* b_name = "b") {
  FUSEDOPS_CHECK(a.dim() >= 1, op, "a must have at least 1 dimension, got a 0-d tensor");
  FUSEDOPS_CHECK(b.sizes() == a.sizes(), op, b_name, " must have the shape of a ", shape_str(a.sizes()), ", got ",
                 shape_str(b.sizes()));
}

}  // namespace fusedops
