// Loss bindings on the CUDA kernels, shared by the CUDA build (loss.cu) and the simulator build
// (sim/sim_loss.cpp): cross_entropy (fused classifier), its gradient scaling, the chunked
// linear_cross_entropy on the CUDA GEMM, mse_loss and binary_cross_entropy_with_logits. A
// class-index target out of range is flagged by the kernels and raised here (one device
// synchronisation per call that has class-index targets).
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <cstdlib>
#include <optional>
#include <tuple>

#include "common/checks.h"
#include "common/linear_args.h"
#include "common/loss_args.h"
#include "common/tuning.h"
#include "cuda/kernels/lce.cuh"
#include "cuda/kernels/loss.cuh"
#include "cuda/gemm_launch.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

inline at::ScalarType acc_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline void raise_if_bad(const at::Tensor& flag, int64_t C, int64_t ignore_index, const char* op) {
  TORCH_CHECK_INDEX(flag.item<int>() == 0, "fusedops.", op,
                    ": a target is out of bounds: expected a class in [0, ", C,
                    ") or ignore_index (", ignore_index, ")");
}

// The row losses reduced to a 0-d tensor: sum * mul / (*div when given).
template <typename T>
at::Tensor reduce_rows(const char* op, const at::Tensor& acc, const at::Tensor* div, double mul,
                       const at::Tensor& like, cudaStream_t s) {
  using Acc = k::gemm_acc_t<T>;
  at::Tensor out = at::empty({}, like.options());
  launch(op, [&] {
    k::reduce_launch<T>(acc.numel(), ptr<Acc>(acc), div ? ptr<Acc>(*div) : nullptr, mul,
                        ptr<T>(out), s);
  });
  return out;
}

inline std::tuple<at::Tensor, at::Tensor> cross_entropy(const at::Tensor& input,
                                                        const at::Tensor& target,
                                                        const std::optional<at::Tensor>& weight,
                                                        int64_t ignore_index,
                                                        c10::string_view reduction,
                                                        double label_smoothing, bool compute_grad) {
  const char* op = "cross_entropy";
  check_tensor(input, input, op, "input", "input");
  const Reduction red = reduction_arg(reduction, op);
  check_label_smoothing(label_smoothing, op);
  const bool probs = check_cross_entropy_shapes(input, target, weight, ignore_index, op);
  if (probs) check_tensor(target, input, op, "target", "input");
  else FUSEDOPS_CHECK(on_device(target), op, "target must be ", kDevice, ", got ", target.device());
  if (weight.has_value()) check_tensor(*weight, input, op, "weight", "input");
  DeviceGuard guard(input);
  const int64_t N = input.size(0), C = input.size(1);
  const at::Tensor x = input.stride(1) == 1 ? input : input.contiguous();
  const at::Tensor tgt = target.contiguous();
  const at::Tensor w = weight.has_value() ? weight->contiguous() : at::Tensor();
  at::Tensor loss_rows = red == Reduction::none ? at::empty({N}, input.options()) : at::Tensor();
  at::Tensor acc = at::empty({N}, input.options().dtype(acc_dtype(input)));
  at::Tensor grad = compute_grad ? at::empty({N, C}, input.options()) : at::empty({0}, input.options());
  at::Tensor flag = at::zeros({1}, input.options().dtype(at::kInt));
  at::Tensor denom = at::empty({1}, acc.options());
  const cudaStream_t s = stream_for(input);
  at::Tensor loss;
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = k::gemm_acc_t<T>;
    if (!probs) {
      launch(op, [&] {
        k::targets_launch<T>(N, C, tgt.data_ptr<int64_t>(), w.defined() ? ptr<T>(w) : nullptr,
                             ignore_index, ptr<Acc>(denom), ptr<int>(flag), s);
      });
      raise_if_bad(flag, C, ignore_index, op);
    } else {
      denom.fill_(double(N));
    }
    k::CrossEntropyParams p;
    p.N = N, p.C = C, p.x = ptr<T>(x), p.ldx = x.stride(0);
    if (probs) p.probs = ptr<T>(tgt), p.ldp = C;
    else p.target = tgt.data_ptr<int64_t>();
    p.weight = w.defined() ? ptr<T>(w) : nullptr;
    p.ignore_index = ignore_index;
    p.label_smoothing = label_smoothing;
    p.loss_rows = loss_rows.defined() ? ptr<T>(loss_rows) : nullptr;
    p.loss_acc = ptr<Acc>(acc);
    if (compute_grad) p.grad = ptr<T>(grad), p.ldg = C;
    if (red == Reduction::mean) p.scale_ptr = ptr<Acc>(denom);
    launch(op, [&] { k::cross_entropy_launch<T>(p, ptr<int>(flag), s); });
    if (red != Reduction::none)
      loss = reduce_rows<T>(op, acc, red == Reduction::mean ? &denom : nullptr, 1.0, input, s);
  });
  if (red == Reduction::none) return {loss_rows, grad};
  return {loss, grad};
}

// out = grad * grad_output (0-d, or one value per row of grad); out may be grad.
inline void scale_grad(const char* op, const at::Tensor& grad, const at::Tensor& grad_output,
                       at::Tensor& out) {
  check_tensor(grad, grad, op, "grad", "grad");
  FUSEDOPS_CHECK(grad.is_contiguous(), op, "grad must be contiguous");
  const bool one = grad_output.numel() == 1 && grad_output.dim() <= 1;
  FUSEDOPS_CHECK(one || (grad.dim() >= 1 && grad_output.dim() == 1 &&
                         grad_output.size(0) == grad.size(0)),
                 op, "grad_output must be 0-d or [N] = [", grad.dim() ? grad.size(0) : 0,
                 "] (one per row of the gradient), got shape ", shape_str(grad_output.sizes()));
  FUSEDOPS_CHECK(on_device(grad_output), op, "grad_output must be ", kDevice);
  if (grad.numel() == 0) return;
  DeviceGuard guard(grad);
  const at::Tensor sc = grad_output.to(grad.scalar_type()).contiguous();
  const int64_t N = one ? 1 : grad.size(0), C = grad.numel() / N;
  dispatch(grad.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    launch(op, [&] {
      k::scale_launch<T>(N, C, ptr<T>(grad), ptr<T>(sc), one ? 0 : 1, ptr<T>(out),
                         stream_for(grad));
    });
  });
}

inline at::Tensor cross_entropy_backward(const at::Tensor& grad_output, const at::Tensor& grad) {
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  scale_grad("cross_entropy_backward", grad.contiguous(), grad_output, out);
  return out;
}

inline void loss_grad_scale(at::Tensor& grad, const at::Tensor& grad_output) {
  scale_grad("loss_grad_scale", grad, grad_output, grad);
}

// ---- linear_cross_entropy: chunks of rows through the CUDA GEMM ------------------------------

struct LceRun {
  at::Tensor x2, w, bias, target;
  int64_t N, K, V;
};

inline LceRun lce_inputs(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& target,
                         const std::optional<at::Tensor>& bias, double ls, const char* op) {
  check_tensor(input, input, op, "input", "input");
  check_tensor(weight, input, op, "weight", "input");
  if (bias.has_value()) check_tensor(*bias, input, op, "bias", "input");
  check_linear_shapes(input, weight, bias, op);
  check_label_smoothing(ls, op);
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "fusedops.", op,
                   ": target must be int64 class indices, got ", target.scalar_type());
  FUSEDOPS_CHECK(on_device(target), op, "target must be ", kDevice, ", got ", target.device());
  const auto lead = input.sizes().slice(0, input.dim() - 1);
  FUSEDOPS_CHECK(target.sizes() == lead, op, "target must have shape ", shape_str(lead),
                 " (input's shape without its last dimension), got ", shape_str(target.sizes()));
  LceRun r;
  r.x2 = rows_of(input).contiguous();
  r.N = r.x2.size(0), r.K = r.x2.size(1), r.V = weight.size(0);
  FUSEDOPS_CHECK(r.V > 0 || r.N == 0, op, "weight must have at least one class (row)");
  r.w = weight;
  r.target = target.contiguous().view({-1});
  if (bias.has_value()) r.bias = bias->contiguous();
  return r;
}

// Loss rows into acc (Acc [N]) and/or loss_rows (T [N]); gradients (scaled by 1 / *denom when
// given, by scale, and per row by row_scale) into gx / gw / gb when defined: the chunk loop of
// cuda/kernels/lce.cuh over a [rows, V] buffer (common/tuning.h's setting, when set, gives the
// rows).
template <typename T>
void lce_run(const char* op, const LceRun& R, int64_t ignore_index, double ls, at::Tensor* acc,
             at::Tensor* loss_rows, const at::Tensor* denom, double scale, const at::Tensor* row_scale,
             at::Tensor* gx, at::Tensor* gw, at::Tensor* gb, const at::Tensor& flag, cudaStream_t s) {
  using Acc = k::gemm_acc_t<T>;
  k::LceChunkArgs<T> a;
  a.N = R.N, a.K = R.K, a.V = R.V;
  a.x = ptr<T>(R.x2);
  a.w = ptr<T>(R.w), a.rsw = R.w.stride(0), a.csw = R.w.stride(1);
  a.bias = R.bias.defined() ? ptr<T>(R.bias) : nullptr;
  a.target = R.target.data_ptr<int64_t>();
  a.ignore_index = ignore_index;
  a.label_smoothing = ls;
  a.loss_acc = acc ? ptr<Acc>(*acc) : nullptr;
  a.loss_rows = loss_rows ? ptr<T>(*loss_rows) : nullptr;
  a.denom = denom ? ptr<Acc>(*denom) : nullptr;
  a.scale = scale;
  a.row_scale = row_scale ? ptr<T>(*row_scale) : nullptr;
  a.gx = gx ? ptr<T>(*gx) : nullptr;
  a.gw = gw ? ptr<T>(*gw) : nullptr;
  a.gb = gb ? ptr<T>(*gb) : nullptr;
  a.bad = ptr<int>(flag);
  a.chunk_rows = k::lce_chunk_rows(R.N, R.V, int64_t(sizeof(T)), lce_chunk_rows_setting().load());
  a.allow_tf32 = tf32_allowed();
  at::Tensor buf = at::empty({R.N > 0 ? a.chunk_rows : 0, R.V}, R.x2.options());
  a.buf = ptr<T>(buf);
  launch(op, [&] { k::lce_chunks_launch<T>(a, s); });
}

inline std::tuple<at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>,
                  std::optional<at::Tensor>>
linear_cross_entropy(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& target,
                     const std::optional<at::Tensor>& bias, int64_t ignore_index,
                     c10::string_view reduction, double label_smoothing, std::array<bool, 3> mask) {
  const char* op = "linear_cross_entropy";
  const Reduction red = reduction_arg(reduction, op);
  LceRun R = lce_inputs(input, weight, target, bias, label_smoothing, op);
  DeviceGuard guard(input);
  const cudaStream_t s = stream_for(input);
  std::optional<at::Tensor> gx, gw, gb;
  if (mask[0]) gx = at::empty(input.sizes(), input.options());
  if (mask[1]) gw = at::empty(weight.sizes(), weight.options());
  if (mask[2] && bias.has_value()) gb = at::empty({R.V}, input.options());
  at::Tensor loss_rows = red == Reduction::none ? at::empty(target.sizes(), input.options()) : at::Tensor();
  at::Tensor acc = at::empty({R.N}, input.options().dtype(acc_dtype(input)));
  at::Tensor flag = at::zeros({1}, input.options().dtype(at::kInt));
  at::Tensor denom = at::empty({1}, acc.options());
  at::Tensor loss;
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = k::gemm_acc_t<T>;
    launch(op, [&] {
      k::targets_launch<T>(R.N, R.V, R.target.data_ptr<int64_t>(), nullptr, ignore_index,
                           ptr<Acc>(denom), ptr<int>(flag), s);
    });
    raise_if_bad(flag, R.V, ignore_index, op);
    at::Tensor gx2 = gx ? gx->view({R.N, R.K}) : at::Tensor();
    at::Tensor lr2 = loss_rows.defined() ? loss_rows.view({-1}) : at::Tensor();
    lce_run<T>(op, R, ignore_index, label_smoothing, &acc, lr2.defined() ? &lr2 : nullptr,
               red == Reduction::mean ? &denom : nullptr, 1.0, nullptr, gx ? &gx2 : nullptr,
               gw ? &*gw : nullptr, gb ? &*gb : nullptr, flag, s);
    if (red != Reduction::none)
      loss = reduce_rows<T>(op, acc, red == Reduction::mean ? &denom : nullptr, 1.0, input, s);
  });
  if (red == Reduction::none) return {loss_rows, gx, gw, gb};
  return {loss, gx, gw, gb};
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_cross_entropy_backward(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& weight, const at::Tensor& target,
                              const std::optional<at::Tensor>& bias, int64_t ignore_index,
                              c10::string_view reduction, double label_smoothing,
                              std::array<bool, 3> mask) {
  const char* op = "linear_cross_entropy_backward";
  const Reduction red = reduction_arg(reduction, op);
  LceRun R = lce_inputs(input, weight, target, bias, label_smoothing, op);
  check_tensor(grad_output, input, op, "grad_output", "input");
  if (red == Reduction::none) {
    FUSEDOPS_CHECK(grad_output.sizes() == target.sizes(), op, "grad_output must have shape ",
                   shape_str(target.sizes()), " for reduction \"none\", got ",
                   shape_str(grad_output.sizes()));
  } else {
    FUSEDOPS_CHECK(grad_output.numel() == 1, op, "grad_output must be 0-d, got shape ",
                   shape_str(grad_output.sizes()));
  }
  DeviceGuard guard(input);
  const cudaStream_t s = stream_for(input);
  std::optional<at::Tensor> gx, gw, gb;
  if (mask[0]) gx = at::empty(input.sizes(), input.options());
  if (mask[1]) gw = at::empty(weight.sizes(), weight.options());
  if (mask[2] && bias.has_value()) gb = at::empty({R.V}, input.options());
  if (!gx && !gw && !gb) return {gx, gw, gb};
  at::Tensor flag = at::zeros({1}, input.options().dtype(at::kInt));
  at::Tensor denom = at::empty({1}, input.options().dtype(acc_dtype(input)));
  // per-row scales: grad_output for "none", else grad_output broadcast over the rows
  at::Tensor go = grad_output.contiguous().view({-1});
  if (red != Reduction::none) go = go.expand({R.N}).contiguous();
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = k::gemm_acc_t<T>;
    launch(op, [&] {
      k::targets_launch<T>(R.N, R.V, R.target.data_ptr<int64_t>(), nullptr, ignore_index,
                           ptr<Acc>(denom), ptr<int>(flag), s);
    });
    raise_if_bad(flag, R.V, ignore_index, op);
    at::Tensor gx2 = gx ? gx->view({R.N, R.K}) : at::Tensor();
    lce_run<T>(op, R, ignore_index, label_smoothing, nullptr, nullptr,
               red == Reduction::mean ? &denom : nullptr, 1.0, &go, gx ? &gx2 : nullptr,
               gw ? &*gw : nullptr, gb ? &*gb : nullptr, flag, s);
  });
  return {gx, gw, gb};
}

// ---- mse_loss, binary_cross_entropy_with_logits -------------------------------------------

inline void check_pair(const at::Tensor& input, const at::Tensor& target, const char* op) {
  check_tensor(input, input, op, "input", "input");
  check_tensor(target, input, op, "target", "input");
  FUSEDOPS_CHECK(target.sizes() == input.sizes(), op, "target must have the input's shape ",
                 shape_str(input.sizes()), ", got ", shape_str(target.sizes()));
}

inline at::Tensor expanded_arg(const std::optional<at::Tensor>& t, const at::Tensor& input,
                               const char* op, const char* arg) {
  if (!t.has_value()) return at::Tensor();
  check_tensor(*t, input, op, arg, "input");
  FUSEDOPS_CHECK(at::is_expandable_to(t->sizes(), input.sizes()), op, arg,
                 " must broadcast to the input's shape ", shape_str(input.sizes()), ", got ",
                 shape_str(t->sizes()));
  return t->expand(input.sizes()).contiguous();
}

template <typename T>
const T* opt_ptr(const at::Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

inline at::Tensor pointwise_loss(int kind, const char* op, const at::Tensor& input,
                                 const at::Tensor& target, const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& pos_weight,
                                 c10::string_view reduction) {
  const Reduction red = reduction_arg(reduction, op);
  check_pair(input, target, op);
  DeviceGuard guard(input);
  const at::Tensor x = input.contiguous(), y = target.contiguous();
  const at::Tensor w = expanded_arg(weight, input, op, "weight");
  const at::Tensor pw = expanded_arg(pos_weight, input, op, "pos_weight");
  const int64_t n = x.numel();
  at::Tensor rows = red == Reduction::none ? at::empty(input.sizes(), input.options()) : at::Tensor();
  at::Tensor acc = red == Reduction::none ? at::Tensor()
                                          : at::empty({n}, input.options().dtype(acc_dtype(input)));
  const cudaStream_t s = stream_for(input);
  at::Tensor out;
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    using Acc = k::gemm_acc_t<T>;
    launch(op, [&] {
      k::pointwise_loss_launch<T>(kind, n, ptr<T>(x), ptr<T>(y), opt_ptr<T>(w), opt_ptr<T>(pw),
                                  rows.defined() ? ptr<T>(rows) : nullptr,
                                  acc.defined() ? ptr<Acc>(acc) : nullptr, s);
    });
    if (red != Reduction::none)
      out = reduce_rows<T>(op, acc, nullptr, red == Reduction::mean ? 1.0 / double(n) : 1.0,
                           input, s);
  });
  return red == Reduction::none ? rows : out;
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> pointwise_loss_backward(
    int kind, const char* op, const at::Tensor& grad_output, const at::Tensor& input,
    const at::Tensor& target, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& pos_weight, c10::string_view reduction,
    std::array<bool, 2> mask) {
  const Reduction red = reduction_arg(reduction, op);
  check_pair(input, target, op);
  check_tensor(grad_output, input, op, "grad_output", "input");
  if (red == Reduction::none) {
    FUSEDOPS_CHECK(grad_output.sizes() == input.sizes(), op,
                   "grad_output must have the input's shape ", shape_str(input.sizes()),
                   " for reduction \"none\", got ", shape_str(grad_output.sizes()));
  } else {
    FUSEDOPS_CHECK(grad_output.numel() == 1, op, "grad_output must be 0-d, got shape ",
                   shape_str(grad_output.sizes()));
  }
  DeviceGuard guard(input);
  const at::Tensor x = input.contiguous(), y = target.contiguous(), g = grad_output.contiguous();
  const at::Tensor w = expanded_arg(weight, input, op, "weight");
  const at::Tensor pw = expanded_arg(pos_weight, input, op, "pos_weight");
  const int64_t n = x.numel();
  std::optional<at::Tensor> gx, gy;
  if (mask[0]) gx = at::empty(input.sizes(), input.options());
  if (mask[1]) gy = at::empty(input.sizes(), input.options());
  dispatch(input.scalar_type(), [&](auto zero) {
    using T = decltype(zero);
    launch(op, [&] {
      k::pointwise_loss_backward_launch<T>(
          kind, n, ptr<T>(g), red == Reduction::none ? 1 : 0,
          red == Reduction::mean ? 1.0 / double(n) : 1.0, ptr<T>(x), ptr<T>(y), opt_ptr<T>(w),
          opt_ptr<T>(pw), gx ? ptr<T>(*gx) : nullptr, gy ? ptr<T>(*gy) : nullptr,
          stream_for(input));
    });
  });
  return {gx, gy};
}

inline at::Tensor mse_loss(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  return pointwise_loss(0, "mse_loss", input, target, std::nullopt, std::nullopt, reduction);
}

inline at::Tensor mse_loss_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& target, c10::string_view reduction) {
  return *std::get<0>(pointwise_loss_backward(0, "mse_loss_backward", grad_output, input, target,
                                              std::nullopt, std::nullopt, reduction, {true, false}));
}

inline at::Tensor bce_with_logits(const at::Tensor& input, const at::Tensor& target,
                                  const std::optional<at::Tensor>& weight,
                                  const std::optional<at::Tensor>& pos_weight,
                                  c10::string_view reduction) {
  return pointwise_loss(1, "binary_cross_entropy_with_logits", input, target, weight, pos_weight,
                        reduction);
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> bce_with_logits_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& pos_weight,
    c10::string_view reduction, std::array<bool, 2> mask) {
  return pointwise_loss_backward(1, "binary_cross_entropy_with_logits_backward", grad_output,
                                 input, target, weight, pos_weight, reduction, mask);
}


}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
