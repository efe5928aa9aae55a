// adam_step_, sgd_step_, total_norm, clip_scale_ on the multi-tensor CUDA kernels, shared by
// the CUDA build (optim.cu: CUDA tensors, the current stream, the work table copied to the
// device from pinned memory without a sync) and the simulator build (sim/sim_optim.cpp: CPU
// tensors, the table read where it is built). Include after the kernel headers.
#pragma once
#include <ATen/ATen.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "common/checks.h"
#include "common/optim_args.h"
#include "cuda/kernels/optim.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

// The table's bytes where the kernels can read them (an empty tensor when there is no chunk).
inline at::Tensor upload_table(const k::OptimTable& t, const at::Tensor& like) {
  if (t.chunks == 0) return at::Tensor();
  auto opts = at::TensorOptions().dtype(at::kByte);
#ifndef CUDASIM
  opts = opts.pinned_memory(true);  // torch's caching host allocator: reused, copied async
#endif
  at::Tensor host = at::empty({int64_t(t.bytes.size())}, opts);
  std::memcpy(host.data_ptr(), t.bytes.data(), t.bytes.size());
#ifdef CUDASIM
  (void)like;
  return host;
#else
  return host.to(like.device(), /*non_blocking=*/true);
#endif
}

inline const unsigned char* table_ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<const unsigned char*>(t.data_ptr()) : nullptr;
}

inline bool is_16bit(at::ScalarType st) { return st == at::kHalf || st == at::kBFloat16; }

// State tensors: the parameter's dtype, or float32 for 16-bit parameters; one dtype per call.
inline void check_state(const at::Tensor& s, const at::Tensor& p, const at::Tensor& first_state,
                        size_t k, const char* op, const char* name) {
  check_like_param(s, p, k, op, name);
  FUSEDOPS_CHECK(on_device(s) && s.device() == p.device(), op, name, "[", k,
                 "] must be on the device of params[", k, "] (", p.device(), "), got ", s.device());
  const bool ok = s.scalar_type() == p.scalar_type() ||
                  (s.scalar_type() == at::kFloat && is_16bit(p.scalar_type()));
  TORCH_CHECK_TYPE(ok, "fusedops.", op, ": ", name, "[", k, "] must have the dtype of params[", k,
                   "] (", p.scalar_type(), ") or float32 for 16-bit params, got ", s.scalar_type());
  TORCH_CHECK_TYPE(s.scalar_type() == first_state.scalar_type(), "fusedops.", op, ": ", name, "[",
                   k, "] must have the dtype of the other states (", first_state.scalar_type(),
                   "), got ", s.scalar_type());
}

inline void check_params_grads(at::TensorList params, at::TensorList grads, const char* op) {
  for (size_t k = 0; k < params.size(); ++k) {
    check_tensor(params[k], params[0], op, "params", "params[0]");
    check_like_param(grads[k], params[k], k, op, "grads");
    check_tensor(grads[k], params[k], op, "grads", "params");
  }
}

// Calls f(T{}, S{}) with the element types of the parameters and of the states.
template <class F>
void dispatch_param_state(at::ScalarType param, at::ScalarType state, F&& f) {
  dispatch(param, [&](auto zp) {
    using T = decltype(zp);
    if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
      if (state == at::kFloat) return f(T{}, float{});
    }
    f(T{}, T{});
  });
}

template <typename T, typename S>
bool entry_aligned(const k::OptimEntry& e) {
  return k::optim_aligned(e.p, sizeof(T)) && k::optim_aligned(e.g, sizeof(T)) &&
         k::optim_aligned(e.s0, sizeof(S)) && k::optim_aligned(e.s1, sizeof(S)) &&
         k::optim_aligned(e.s2, sizeof(S));
}

// ---- adam_step_ -------------------------------------------------------------------------------

inline void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                      at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs,
                      at::TensorList state_steps, double lr, double beta1, double beta2,
                      double weight_decay, double eps, bool amsgrad, bool maximize,
                      bool decoupled_weight_decay) {
  const char* op = "adam_step_";
  const size_t n = params.size();
  check_adam_lists(n, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad, op);
  if (n == 0) return;
  check_params_grads(params, grads, op);
  for (size_t k = 0; k < n; ++k) {
    check_state(exp_avgs[k], params[k], exp_avgs[0], k, op, "exp_avgs");
    check_state(exp_avg_sqs[k], params[k], exp_avgs[0], k, op, "exp_avg_sqs");
    if (amsgrad) check_state(max_exp_avg_sqs[k], params[k], exp_avgs[0], k, op, "max_exp_avg_sqs");
  }
  DeviceGuard guard(params[0]);
  std::vector<LinedUp> lined =
      line_up_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, amsgrad);
  const AdamHyper args =
      adam_hyper(lr, beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled_weight_decay);
  dispatch_param_state(params[0].scalar_type(), exp_avgs[0].scalar_type(), [&](auto zt, auto zs) {
    using T = decltype(zt);
    using S = decltype(zs);
    std::vector<k::OptimEntry> entries(n);
    for (size_t i = 0; i < n; ++i) {
      const auto& t = lined[i].tensors;
      const AdamScalars s = adam_scalars(advance_step(state_steps[i], i, op), lr, beta1, beta2);
      k::OptimEntry& e = entries[i];
      e.p = t[0].data_ptr(), e.g = t[1].data_ptr(), e.s0 = t[2].data_ptr();
      e.s1 = t[3].data_ptr(), e.s2 = amsgrad ? t[4].data_ptr() : nullptr;
      e.n = t[0].numel(), e.step_size = s.step_size, e.bc2_sqrt = s.bc2_sqrt;
      e.aligned = entry_aligned<T, S>(e);
    }
    const k::OptimTable table = k::build_optim_table(entries);
    const at::Tensor dev_table = upload_table(table, params[0]);
    const k::OptimPlan plan = k::optim_plan(table, "adam");
    launch(op, [&] {
      k::adam_launch<T, S>(plan, table, table_ptr(dev_table), args, stream_for(params[0]));
    });
  });
  for (LinedUp& l : lined) l.write_back();
}

// ---- sgd_step_ --------------------------------------------------------------------------------

inline void sgd_step(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                     const c10::List<bool>& fresh_buffers, double lr, double momentum,
                     double dampening, double weight_decay, bool nesterov, bool maximize) {
  const char* op = "sgd_step_";
  const size_t n = params.size();
  const bool has_buf = momentum != 0;
  check_sgd_lists(n, grads, momentum_buffers, fresh_buffers, has_buf, op);
  if (n == 0) return;
  check_params_grads(params, grads, op);
  if (has_buf)
    for (size_t k = 0; k < n; ++k)
      check_state(momentum_buffers[k], params[k], momentum_buffers[0], k, op, "momentum_buffers");
  DeviceGuard guard(params[0]);
  std::vector<LinedUp> lined = line_up_sgd(params, grads, momentum_buffers, has_buf);
  const SgdHyper args = sgd_hyper(lr, momentum, dampening, weight_decay, nesterov, maximize);
  const at::ScalarType state_type =
      has_buf ? momentum_buffers[0].scalar_type() : params[0].scalar_type();
  dispatch_param_state(params[0].scalar_type(), state_type, [&](auto zt, auto zs) {
    using T = decltype(zt);
    using S = decltype(zs);
    std::vector<k::OptimEntry> entries(n);
    for (size_t i = 0; i < n; ++i) {
      const auto& t = lined[i].tensors;
      k::OptimEntry& e = entries[i];
      e.p = t[0].data_ptr(), e.g = t[1].data_ptr();
      e.s0 = has_buf ? t[2].data_ptr() : nullptr;
      e.n = t[0].numel();
      e.fresh = has_buf && fresh_buffers.get(i);
      e.aligned = entry_aligned<T, S>(e);
    }
    const k::OptimTable table = k::build_optim_table(entries);
    const at::Tensor dev_table = upload_table(table, params[0]);
    const k::OptimPlan plan = k::optim_plan(table, "sgd");
    launch(op, [&] {
      k::sgd_launch<T, S>(plan, table, table_ptr(dev_table), args, stream_for(params[0]));
    });
  });
  for (LinedUp& l : lined) l.write_back();
}

// ---- total_norm / clip_scale_ -------------------------------------------------------------------

inline std::vector<k::OptimEntry> norm_entries(const std::vector<at::Tensor>& dense,
                                               size_t elem) {
  std::vector<k::OptimEntry> entries(dense.size());
  for (size_t i = 0; i < dense.size(); ++i) {
    entries[i].p = dense[i].data_ptr();
    entries[i].n = dense[i].numel();
    entries[i].aligned = k::optim_aligned(entries[i].p, elem);
  }
  return entries;
}

inline void check_norm_tensors(at::TensorList tensors, const char* op) {
  for (size_t k = 0; k < tensors.size(); ++k) {
    check_tensor(tensors[k], tensors[0], op, "tensors", "tensors[0]");
    FUSEDOPS_CHECK(tensors[k].layout() == at::kStrided, op, "tensors[", k,
                   "] must be a dense (strided) tensor, got layout ", tensors[k].layout());
  }
}

inline at::Tensor total_norm(at::TensorList tensors, double norm_type) {
  const char* op = "total_norm";
  FUSEDOPS_CHECK(tensors.size() > 0, op,
                 "tensors must not be empty (the dtype of the result comes from them)");
  check_norm_tensors(tensors, op);
  DeviceGuard guard(tensors[0]);
  std::vector<at::Tensor> dense;
  for (const at::Tensor& t : tensors)
    dense.push_back(t.is_non_overlapping_and_dense() ? t : t.contiguous());
  at::Tensor out = at::empty({}, tensors[0].options());
  dispatch(tensors[0].scalar_type(), [&](auto zt) {
    using T = decltype(zt);
    using A = k::optim_detail::acc_t<T>;
    const k::OptimTable table = k::build_optim_table(norm_entries(dense, sizeof(T)));
    const at::Tensor dev_table = upload_table(table, tensors[0]);
    const at::Tensor partial =
        at::empty({table.chunks > 0 ? table.chunks : 1},
                  tensors[0].options().dtype(std::is_same_v<A, double> ? at::kDouble : at::kFloat));
    const k::OptimPlan plan = k::optim_plan(table, "norm");
    launch(op, [&] {
      k::norm_launch<T>(plan, table, table_ptr(dev_table), norm_type, ptr<A>(partial), ptr<T>(out),
                        stream_for(tensors[0]));
    });
  });
  return out;
}

inline void clip_scale(at::TensorList tensors, const at::Tensor& total_norm, double max_norm) {
  const char* op = "clip_scale_";
  check_norm_tensors(tensors, op);
  FUSEDOPS_CHECK(total_norm.numel() == 1, op, "total_norm must have one element, got shape ",
                 shape_str(total_norm.sizes()));
  if (tensors.empty()) return;
  DeviceGuard guard(tensors[0]);
  std::vector<LinedUp> lined;
  std::vector<at::Tensor> dense;
  for (const at::Tensor& t : tensors) {
    lined.push_back(line_up({t}));
    dense.push_back(lined.back().tensors[0]);
  }
  const at::Tensor norm = total_norm.reshape({}).to(tensors[0].options());  // read on the device
  dispatch(tensors[0].scalar_type(), [&](auto zt) {
    using T = decltype(zt);
    const k::OptimTable table = k::build_optim_table(norm_entries(dense, sizeof(T)));
    const at::Tensor dev_table = upload_table(table, tensors[0]);
    const k::OptimPlan plan = k::optim_plan(table, "clip_scale");
    launch(op, [&] {
      k::clip_scale_launch<T>(plan, table, table_ptr(dev_table), ptr<T>(norm), max_norm,
                              stream_for(tensors[0]));
    });
  });
  for (LinedUp& l : lined) l.write_back();
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
