// Argument rules of the optimizer ops shared by the CPU, CUDA and simulator bindings: list
// lengths, per-tensor shape/layout checks (dtype and device are each backend's), the step
// counters and Adam's bias corrections, and the element layout the kernels rely on.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "common/checks.h"
#include "contracts/optim.h"

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

// ---- adam_step_ and sgd_step_: what every backend does before its own checks ------------------

// One grad, exp_avg, exp_avg_sq and step counter per param; one max_exp_avg_sq each with
// amsgrad, none without.
inline void check_adam_lists(size_t n, at::TensorList grads, at::TensorList exp_avgs,
                             at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                             at::TensorList state_steps, bool amsgrad, const char* op) {
  check_list_length(grads, n, op, "grads", "one per param");
  check_list_length(exp_avgs, n, op, "exp_avgs", "one per param");
  check_list_length(exp_avg_sqs, n, op, "exp_avg_sqs", "one per param");
  check_list_length(state_steps, n, op, "state_steps", "one per param");
  check_list_length(max_exp_avg_sqs, amsgrad ? n : 0, op, "max_exp_avg_sqs",
                    amsgrad ? "one per param with amsgrad" : "none without amsgrad");
}

// param k's tensors lined up: p, g, exp_avg, exp_avg_sq (and max_exp_avg_sq with amsgrad).
inline std::vector<LinedUp> line_up_adam(at::TensorList params, at::TensorList grads,
                                         at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                                         at::TensorList max_exp_avg_sqs, bool amsgrad) {
  std::vector<LinedUp> lined;
  lined.reserve(params.size());
  for (size_t k = 0; k < params.size(); ++k) {
    std::vector<at::Tensor> ts{params[k], grads[k], exp_avgs[k], exp_avg_sqs[k]};
    if (amsgrad) ts.push_back(max_exp_avg_sqs[k]);
    lined.push_back(line_up(std::move(ts)));
  }
  return lined;
}

inline AdamHyper adam_hyper(double lr, double beta1, double beta2, double weight_decay, double eps,
                            bool amsgrad, bool maximize, bool decoupled_weight_decay) {
  AdamHyper h;
  h.lr = lr, h.beta1 = beta1, h.beta2 = beta2, h.weight_decay = weight_decay, h.eps = eps;
  h.amsgrad = amsgrad, h.maximize = maximize, h.decoupled = decoupled_weight_decay;
  return h;
}

// One grad per param; one momentum buffer each with momentum (has_buf), none without, and a
// fresh flag per buffer.
inline void check_sgd_lists(size_t n, at::TensorList grads, at::TensorList momentum_buffers,
                            const c10::List<bool>& fresh_buffers, bool has_buf, const char* op) {
  check_list_length(grads, n, op, "grads", "one per param");
  check_list_length(momentum_buffers, has_buf ? n : 0, op, "momentum_buffers",
                    has_buf ? "one per param with momentum" : "none without momentum");
  FUSEDOPS_CHECK(fresh_buffers.size() == momentum_buffers.size(), op,
                 "fresh_buffers must have one flag per momentum buffer (",
                 momentum_buffers.size(), "), got ", fresh_buffers.size());
}

// param k's tensors lined up: p, g (and the momentum buffer with has_buf).
inline std::vector<LinedUp> line_up_sgd(at::TensorList params, at::TensorList grads,
                                        at::TensorList momentum_buffers, bool has_buf) {
  std::vector<LinedUp> lined;
  lined.reserve(params.size());
  for (size_t k = 0; k < params.size(); ++k) {
    std::vector<at::Tensor> ts{params[k], grads[k]};
    if (has_buf) ts.push_back(momentum_buffers[k]);
    lined.push_back(line_up(std::move(ts)));
  }
  return lined;
}

inline SgdHyper sgd_hyper(double lr, double momentum, double dampening, double weight_decay,
                          bool nesterov, bool maximize) {
  SgdHyper h;
  h.lr = lr, h.momentum = momentum, h.dampening = dampening, h.weight_decay = weight_decay;
  h.nesterov = nesterov, h.maximize = maximize;
  return h;
}

}  // namespace fusedops
