// CPU bindings of adam_step_, sgd_step_, total_norm, clip_scale_: argument checks, the step
// counters and bias corrections, the tensors lined up element by element, dispatch on dtype.
// The math is in kernels/optim.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "common/threads.h"
#include "common/checks.h"
#include "common/optim_args.h"
#include "cpu/dtype.h"
#include "cpu/kernels/optim.h"
#include "common/register.h"

namespace fusedops {
namespace {

void check_param(const at::Tensor& p, const at::Tensor& first, size_t k, const char* op) {
  check_cpu_float_or_bf16(p, op, "params");
  TORCH_CHECK_TYPE(p.scalar_type() == first.scalar_type(), "fusedops.", op, ": params[", k,
                   "] must have the dtype of params[0] (", first.scalar_type(), "), got ",
                   p.scalar_type(), " (call once per dtype)");
}

// The optimizer state of a bf16 parameter is float32 (the update computed in fp32, the
// parameter rounded once); other parameters' state has their dtype. Gradients: the param's.
void check_state(const at::Tensor& t, const at::Tensor& p, size_t k, const char* op,
                 const char* name, bool is_grad = false) {
  check_like_param(t, p, k, op, name);
  FUSEDOPS_CHECK(t.device().is_cpu(), op, name, "[", k, "] must be a CPU tensor, got device ",
                 t.device());
  const bool bf16_state = !is_grad && p.scalar_type() == at::kBFloat16;
  const at::ScalarType want = bf16_state ? at::kFloat : p.scalar_type();
  TORCH_CHECK_TYPE(t.scalar_type() == want, "fusedops.", op, ": ", name, "[", k, "] must be ", want,
                   bf16_state ? " for a bfloat16 param" : " (the dtype of the param)", " (params[", k,
                   "] is ", p.scalar_type(), "), got ", t.scalar_type());
}

// ---- adam_step_ -------------------------------------------------------------------------------

void adam_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                   at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                   at::TensorList state_steps, double lr, double beta1, double beta2,
                   double weight_decay, double eps, bool amsgrad, bool maximize,
                   bool decoupled_weight_decay) {
  const char* op = "adam_step_";
  const size_t n = params.size();
  check_adam_lists(n, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad, op);
  if (n == 0) return;
  for (size_t k = 0; k < n; ++k) {
    check_param(params[k], params[0], k, op);
    check_state(grads[k], params[k], k, op, "grads", true);
    check_state(exp_avgs[k], params[k], k, op, "exp_avgs");
    check_state(exp_avg_sqs[k], params[k], k, op, "exp_avg_sqs");
    if (amsgrad) check_state(max_exp_avg_sqs[k], params[k], k, op, "max_exp_avg_sqs");
  }
  const AdamHyper h =
      adam_hyper(lr, beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled_weight_decay);
  std::vector<LinedUp> lined =
      line_up_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, amsgrad);
  FUSEDOPS_DISPATCH_CPU_FLOAT(params[0].scalar_type(), op, [&] {
    using A = cpu::compute_t<kernel_t>;
    std::vector<cpu::AdamTensor<kernel_t>> ts(n);
    for (size_t k = 0; k < n; ++k) {
      const auto& t = lined[k].tensors;
      const AdamScalars s = adam_scalars(advance_step(state_steps[k], k, op), lr, beta1, beta2);
      ts[k].p = kptr<kernel_t>(t[0]);
      ts[k].g = kptr<kernel_t>(t[1]);
      ts[k].m = kptr<A>(t[2]);
      ts[k].v = kptr<A>(t[3]);
      ts[k].vmax = amsgrad ? kptr<A>(t[4]) : nullptr;
      ts[k].n = t[0].numel();
      ts[k].step_size = s.step_size;
      ts[k].bc2_sqrt = s.bc2_sqrt;
    }
    cpu::optim_kernels<kernel_t>().adam_step(ts.data(), int64_t(n), h);
  });
  for (LinedUp& l : lined) l.write_back();
}

// ---- sgd_step_ --------------------------------------------------------------------------------

void sgd_step_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                  const c10::List<bool>& fresh_buffers, double lr, double momentum, double dampening,
                  double weight_decay, bool nesterov, bool maximize) {
  const char* op = "sgd_step_";
  const size_t n = params.size();
  const bool has_buf = momentum != 0;
  check_sgd_lists(n, grads, momentum_buffers, fresh_buffers, has_buf, op);
  if (n == 0) return;
  for (size_t k = 0; k < n; ++k) {
    check_param(params[k], params[0], k, op);
    check_state(grads[k], params[k], k, op, "grads", true);
    if (has_buf) check_state(momentum_buffers[k], params[k], k, op, "momentum_buffers");
  }
  const SgdHyper h = sgd_hyper(lr, momentum, dampening, weight_decay, nesterov, maximize);
  std::vector<LinedUp> lined = line_up_sgd(params, grads, momentum_buffers, has_buf);
  FUSEDOPS_DISPATCH_CPU_FLOAT(params[0].scalar_type(), op, [&] {
    std::vector<cpu::SgdTensor<kernel_t>> ts(n);
    for (size_t k = 0; k < n; ++k) {
      const auto& t = lined[k].tensors;
      ts[k].p = kptr<kernel_t>(t[0]);
      ts[k].g = kptr<kernel_t>(t[1]);
      ts[k].buf = has_buf ? kptr<cpu::compute_t<kernel_t>>(t[2]) : nullptr;
      ts[k].n = t[0].numel();
      ts[k].fresh = has_buf && fresh_buffers.get(k);
    }
    cpu::optim_kernels<kernel_t>().sgd_step(ts.data(), int64_t(n), h);
  });
  for (LinedUp& l : lined) l.write_back();
}

// ---- total_norm / clip_scale_ -------------------------------------------------------------------

void check_norm_inputs(at::TensorList tensors, const char* op) {
  for (size_t k = 0; k < tensors.size(); ++k) {
    check_cpu_float_or_bf16(tensors[k], op, "tensors");
    FUSEDOPS_CHECK(tensors[k].layout() == at::kStrided, op, "tensors[", k,
                   "] must be a dense (strided) tensor, got layout ", tensors[k].layout());
    TORCH_CHECK_TYPE(tensors[k].scalar_type() == tensors[0].scalar_type(), "fusedops.", op,
                     ": tensors[", k, "] must have the dtype of tensors[0] (",
                     tensors[0].scalar_type(), "), got ", tensors[k].scalar_type());
  }
}

at::Tensor total_norm_cpu(at::TensorList tensors, double norm_type) {
  const char* op = "total_norm";
  FUSEDOPS_CHECK(tensors.size() > 0, op,
                 "tensors must not be empty (the dtype of the result comes from them)");
  check_norm_inputs(tensors, op);
  const size_t n = tensors.size();
  at::Tensor out = at::empty({}, tensors[0].options());
  std::vector<at::Tensor> dense(n);
  std::vector<int64_t> sizes(n);
  for (size_t k = 0; k < n; ++k) {  // any dense layout is read in memory order, as is
    dense[k] = tensors[k].is_non_overlapping_and_dense() ? tensors[k] : tensors[k].contiguous();
    sizes[k] = dense[k].numel();
  }
  FUSEDOPS_DISPATCH_CPU_FLOAT(tensors[0].scalar_type(), op, [&] {
    std::vector<const kernel_t*> ptrs(n);
    for (size_t k = 0; k < n; ++k) ptrs[k] = kptr<kernel_t>(dense[k]);
    const double r = cpu::optim_kernels<kernel_t>().total_norm(ptrs.data(), sizes.data(), int64_t(n), norm_type);
    out.fill_(double(cpu::compute_t<kernel_t>(r)));  // rounded as the tensors' dtype
  });
  return out;
}

void clip_scale_cpu(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  const char* op = "clip_scale_";
  check_norm_inputs(tensors, op);
  FUSEDOPS_CHECK(total_norm.numel() == 1, op, "total_norm must have one element, got shape ",
                 shape_str(total_norm.sizes()));
  if (tensors.empty()) return;
  const size_t n = tensors.size();
  std::vector<LinedUp> lined;
  for (size_t k = 0; k < n; ++k) lined.push_back(line_up({tensors[k]}));
  FUSEDOPS_DISPATCH_CPU_FLOAT(tensors[0].scalar_type(), op, [&] {
    // torch: max_norm / (total_norm + 1e-6) clamped at 1, in the gradients' dtype (in fp32 for
    // bf16 gradients, which are then scaled in fp32 and rounded once)
    using A = cpu::compute_t<kernel_t>;
    const A norm = total_norm.to(at::kCPU).to(at::kDouble).item<double>();
    A coef = A(max_norm) / (norm + A(1e-6));
    coef = coef > A(1) ? A(1) : coef;  // NaN stays NaN, as torch.clamp
    std::vector<kernel_t*> ptrs(n);
    std::vector<int64_t> sizes(n);
    for (size_t k = 0; k < n; ++k) {
      ptrs[k] = kptr<kernel_t>(lined[k].tensors[0]);
      sizes[k] = lined[k].tensors[0].numel();
    }
    cpu::optim_kernels<kernel_t>().scale_all(ptrs.data(), sizes.data(), int64_t(n), coef);
  });
  for (LinedUp& l : lined) l.write_back();
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_OPTIM_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
