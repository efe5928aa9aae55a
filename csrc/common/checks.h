// Input checks for op bindings. Every message names the op, the argument, what was expected
// and what came: "fusedops.linear: weight must be 2-D [out_features, in_features], got shape
// [3, 4, 5]".
#pragma once
#include <ATen/ATen.h>

#include <sstream>
#include <string>

namespace fusedops {

inline std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

#define FUSEDOPS_CHECK(cond, op, ...) TORCH_CHECK(cond, "fusedops.", op, ": ", __VA_ARGS__)

// Sizes derived from user arguments (padded extents, dilated kernels, products of dimensions)
// in overflow-checked int64 arithmetic. mul_add_fits: *r = a * b + c, false when that
// overflows int64.
inline bool mul_add_fits(int64_t a, int64_t b, int64_t c, int64_t* r) {
  return !__builtin_mul_overflow(a, b, r) && !__builtin_add_overflow(*r, c, r);
}

// The product of sizes; "fusedops.<op>: <what> [sizes]: the product overflows int64" when it
// does not fit. (torch checks a tensor's sizes from the first one up to a zero: the sizes
// after a zero, as in [0, 2^40, 2^40], can overflow.)
inline int64_t checked_product(at::IntArrayRef sizes, const char* op, const char* what) {
  int64_t n = 1;
  for (int64_t s : sizes)
    FUSEDOPS_CHECK(mul_add_fits(n, s, 0, &n), op, what, " ", shape_str(sizes),
                   ": the product overflows int64");
  return n;
}

// float32 or float64 on the CPU.
inline void check_cpu_float(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "fusedops.",
                   op, ": ", arg, " must be float32 or float64, got ", t.scalar_type());
  FUSEDOPS_CHECK(t.device().is_cpu(), op, arg, " must be a CPU tensor, got device ", t.device());
}

// float32, float64 or bfloat16 on the CPU (the ops with bf16 kernels).
inline void check_cpu_float_or_bf16(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble || t.scalar_type() == at::kBFloat16,
                   "fusedops.", op, ": ", arg, " must be float32, float64 or bfloat16, got ", t.scalar_type());
  FUSEDOPS_CHECK(t.device().is_cpu(), op, arg, " must be a CPU tensor, got device ", t.device());
}

// A bf16 input's companion (a weight, a bias): bf16, or an fp32 master copy read in place.
inline void check_bf16_or_master(const at::Tensor& t, const char* op, const char* arg, const char* ref_arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kFloat, "fusedops.", op, ": ", arg,
                   " must be bfloat16 or float32 when ", ref_arg, " is bfloat16, got ", t.scalar_type());
}

inline void check_same_dtype(const at::Tensor& t, const at::Tensor& ref, const char* op,
                             const char* arg, const char* ref_arg) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "fusedops.", op, ": ", arg,
                   " must have the dtype of ", ref_arg, " (", ref.scalar_type(), "), got ",
                   t.scalar_type());
}

// A parameter (weight, bias) of `input` on the CPU: bf16 or an fp32 master copy for a bf16
// input, the input's dtype otherwise.
inline void check_param_dtype(const at::Tensor& p, const at::Tensor& input, const char* op, const char* arg) {
  check_cpu_float_or_bf16(p, op, arg);
  if (input.scalar_type() == at::kBFloat16) check_bf16_or_master(p, op, arg, "input");
  else check_same_dtype(p, input, op, arg, "input");
}

}  // namespace fusedops
