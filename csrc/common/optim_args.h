// Argument rules of the optimizer ops shared by the CPU, CUDA and simulator bindings: list
// lengths, per-tensor shape/layout checks (dtype and device are each backend's), the step
// counters and Adam's bias corrections, and the element layout the kernels rely on.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "common/checks.h"

namespace fusedops {

inline void check_list_length(at::TensorList list, size_t want, const char* op, const char* name,
                              const char* why) {
  FUSEDOPS_CHECK(list.size() == want, op, name, " must hold ", want, " tensors (", why,
                 "), got ", list.size());
}

// grad or state `t` of params[k]: same shape, strided (not sparse).
inline void check_like_param(const at::Tensor& t, const at::Tensor& p, size_t k, const char* op,
                             const char* name) {
  FUSEDOPS_CHECK(t.layout() == at::kStrided, op, name, "[", k,
                 "] must be a dense (strided) tensor, got layout ", t.layout(),
                 " (sparse gradients are not supported)");
  FUSEDOPS_CHECK(t.sizes() == p.sizes(), op, name, "[", k, "] must have the shape of params[", k,
                 "] ", shape_str(p.sizes()), ", got ", shape_str(t.sizes()));
}

// One parameter's tensors lined up element by element for a kernel that treats each as a flat
// array: used in place when the parameter is dense and every tensor shares its strides (any
// memory order: the update is elementwise), otherwise through contiguous copies that
// write_back() returns to the originals.
struct LinedUp {
  std::vector<at::Tensor> tensors;    // as the kernel sees them
  std::vector<at::Tensor> originals;  // what was passed
  void write_back() {
    for (size_t i = 0; i < tensors.size(); ++i)
      if (!tensors[i].is_same(originals[i])) originals[i].copy_(tensors[i]);
  }
};

inline LinedUp line_up(std::vector<at::Tensor> ts) {
  LinedUp out;
  out.originals = ts;
  const at::Tensor& p = ts[0];
  bool same = p.is_non_overlapping_and_dense();
  for (const at::Tensor& t : ts)
    if (t.strides() != p.strides()) same = false;
  if (same) {
    out.tensors = std::move(ts);
  } else {
    for (const at::Tensor& t : ts) out.tensors.push_back(t.contiguous());
  }
  return out;
}

// step += 1 on a 1-element counter (float32 as torch keeps it, or float64); returns the new
// value as torch reads it (the counter's own precision, as a double).
inline double advance_step(const at::Tensor& step, size_t k, const char* op) {
  FUSEDOPS_CHECK(step.numel() == 1 && (step.scalar_type() == at::kFloat ||
                                       step.scalar_type() == at::kDouble),
                 op, "state_steps[", k, "] must be a 1-element float32 or float64 tensor, got ",
                 step.scalar_type(), " of shape ", shape_str(step.sizes()));
  if (step.device().is_cpu()) {
    if (step.scalar_type() == at::kFloat) {
      float* s = step.data_ptr<float>();
      *s += 1.0f;
      return double(*s);
    }
    double* s = step.data_ptr<double>();
    *s += 1.0;
    return *s;
  }
  step.add_(1);  // a counter on the device: read back (a sync), as torch's non-capturable path
  return step.item<double>();
}

// Adam's per-tensor scalars after the step count is advanced, computed in double as torch's
// Python code does: step_size = lr / (1 - beta1^step), bc2_sqrt = (1 - beta2^step)^0.5.
struct AdamScalars {
  double step_size, bc2_sqrt;
};

inline AdamScalars adam_scalars(double step, double lr, double beta1, double beta2) {
  const double bc1 = 1.0 - std::pow(beta1, step);
  const double bc2 = 1.0 - std::pow(beta2, step);
  return {lr / bc1, std::pow(bc2, 0.5)};
}

}  // namespace fusedops
