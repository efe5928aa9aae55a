// CPU bindings of the losses: cross_entropy (+ its in-place gradient scaling), the chunked
// linear_cross_entropy, mse_loss and binary_cross_entropy_with_logits. Argument checks, output
// allocation, dispatch on dtype; the math is in kernels/loss and kernels/gemm.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <optional>
#include <string>

#include "common/threads.h"
#include "common/caches.h"
#include "common/checks.h"
#include "common/linear_args.h"
#include "common/loss_args.h"
#include "common/tuning.h"
#include "cpu/kernels/gemm/gemm.h"
#include "cpu/dtype.h"
#include "cpu/kernels/gemm/gemm_bf16.h"
#include "cpu/kernels/lce.h"
#include "cpu/kernels/loss.h"
#include "common/register.h"

namespace fusedops {
namespace {

// The gradient buffer of cross_entropy: 800 MB for 4096 x 50304 logits, written once. Fresh
// memory costs a page fault per page (a fill of new memory measured 11x slower than of touched
// memory here). With FUSEDOPS_CE_GRAD_CACHE=1 the last large buffer is kept and handed out
// again once nothing but this cache refers to it (the previous step's gradient has been
// consumed) — one slot per process, like a caching allocator's; a buffer still referenced
// anywhere is never reused. Off by default: it holds the buffer after every tensor is gone
// (fusedops.empty_cache() drops it).
std::mutex grad_cache_mutex;
at::Tensor grad_cache;

bool grad_cache_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("FUSEDOPS_CE_GRAD_CACHE");
    return e && *e && std::string(e) != "0";
  }();
  return on;
}

at::Tensor empty_grad(at::IntArrayRef sizes, const at::TensorOptions& opt) {
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  const bool large = grad_cache_enabled() &&
                     numel * int64_t(c10::elementSize(c10::typeMetaToScalarType(opt.dtype()))) >= (int64_t(64) << 20);
  if (large) {
    std::lock_guard<std::mutex> lock(grad_cache_mutex);
    if (grad_cache.defined() && grad_cache.use_count() == 1 &&
        grad_cache.unsafeGetTensorImpl()->storage().use_count() == 1 && grad_cache.numel() == numel &&
        grad_cache.dtype() == opt.dtype() && !grad_cache.is_inference()) {
      // a new tensor (not a view) on the cached storage
      at::Tensor g = at::empty({0}, opt);
      g.set_(grad_cache.storage(), 0, sizes, c10::contiguous_strides(sizes));
      return g;
    }
  }
  // (madvise(MADV_HUGEPAGE) was tried: with this machine's defrag setting the faults then wait
  // for compaction, and a fresh 800 MB buffer took 3-9 s instead of 1.8 s.)
  at::Tensor g = at::empty(sizes, opt);
  if (large) {
    std::lock_guard<std::mutex> lock(grad_cache_mutex);
    grad_cache = at::empty({0}, opt);
    grad_cache.set_(g.storage(), 0, {numel}, {1});
  }
  return g;
}

}  // namespace

size_t loss_cache_bytes() {
  std::lock_guard<std::mutex> lock(grad_cache_mutex);
  return grad_cache.defined() ? grad_cache.nbytes() : 0;
}

size_t release_loss_cache() {
  std::lock_guard<std::mutex> lock(grad_cache_mutex);
  const size_t bytes = grad_cache.defined() ? grad_cache.nbytes() : 0;
  grad_cache = at::Tensor();
  return bytes;
}

namespace {

// Class-index targets: int64 of `shape`; every value ignore_index or in [0, C). Returns the
// weighted count of the rows not ignored.
template <typename T>
double check_targets(const at::Tensor& target, int64_t C, const T* weight, int64_t ignore_index,
                     const char* op) {
  double ws = 0;
  const int64_t bad = cpu::cross_entropy_targets<T>(target.numel(), C, target.data_ptr<int64_t>(),
                                                    weight, ignore_index, &ws);
  if (bad >= 0) {
    TORCH_CHECK_INDEX(false, "fusedops.", op, ": target ", target.data_ptr<int64_t>()[bad],
                      " (at flat position ", bad, ") is out of bounds: expected a class in [0, ", C,
                      ") or ignore_index (", ignore_index, ")");
  }
  return ws;
}

void check_class_target(const at::Tensor& target, int64_t N, const char* op) {
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "fusedops.", op,
                   ": class-index target must be int64, got ", target.scalar_type());
  FUSEDOPS_CHECK(target.device().is_cpu(), op, "target must be a CPU tensor, got device ",
                 target.device());
  FUSEDOPS_CHECK(target.dim() == 1 && target.size(0) == N, op, "target must have shape [", N,
                 "] (one class per row of input), got ", shape_str(target.sizes()));
}

void check_weight(const std::optional<at::Tensor>& weight, const at::Tensor& input, int64_t C,
                  const char* op) {
  if (!weight.has_value()) return;
  check_param_dtype(*weight, input, op, "weight");
  FUSEDOPS_CHECK(weight->dim() == 1 && weight->size(0) == C, op,
                 "weight must be 1-D [C] = [", C, "] (one weight per class), got shape ",
                 shape_str(weight->sizes()));
}

// Scalar tensor of a double (NaN for 0 / 0, as torch's mean of nothing).
at::Tensor scalar_loss(double v, const at::TensorOptions& opt) {
  return at::full({}, v, opt);
}

// ---- cross_entropy --------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> cross_entropy_cpu(const at::Tensor& input,
                                                     const at::Tensor& target,
                                                     const std::optional<at::Tensor>& weight,
                                                     int64_t ignore_index, c10::string_view reduction,
                                                     double label_smoothing, bool compute_grad) {
  const char* op = "cross_entropy";
  check_cpu_float_or_bf16(input, op, "input");
  FUSEDOPS_CHECK(input.dim() == 2, op, "input must be 2-D [N, C] here, got shape ",
                 shape_str(input.sizes()));
  const Reduction red = reduction_arg(reduction, op);
  check_label_smoothing(label_smoothing, op);
  const int64_t N = input.size(0), C = input.size(1);
  const bool probs = at::isFloatingType(target.scalar_type());
  if (probs) {
    check_cpu_float_or_bf16(target, op, "target");
    check_same_dtype(target, input, op, "target", "input");
    FUSEDOPS_CHECK(target.sizes() == input.sizes(), op,
                   "probability target must have the input's shape ", shape_str(input.sizes()),
                   ", got ", shape_str(target.sizes()));
    FUSEDOPS_CHECK(ignore_index < 0, op,
                   "ignore_index is not supported for probability (floating point) targets");
  } else {
    check_class_target(target, N, op);
  }
  FUSEDOPS_CHECK(C > 0 || N == 0, op, "input must have at least one class, got shape ",
                 shape_str(input.sizes()));
  check_weight(weight, input, C, op);
  const at::Tensor x = input.stride(1) == 1 ? input : input.contiguous();
  const at::Tensor tgt = target.contiguous();
  // bf16 logits: class weights and row losses in fp32 (the loss comes back in bf16, as torch's)
  const bool bf16 = input.scalar_type() == at::kBFloat16;
  const auto arith = input.options().dtype(bf16 ? at::kFloat : input.scalar_type());
  const at::Tensor w = weight.has_value() ? weight->to(arith.dtype()).contiguous() : at::Tensor();
  at::Tensor loss_rows = red == Reduction::none ? at::empty({N}, arith) : at::Tensor();
  at::Tensor grad = compute_grad ? empty_grad({N, C}, input.options()) : at::empty({0}, input.options());
  double total = 0, denom = double(N);
  FUSEDOPS_DISPATCH_CPU_FLOAT(input.scalar_type(), op, [&] {
    using A = cpu::compute_t<kernel_t>;
    const A* wp = w.defined() ? w.data_ptr<A>() : nullptr;
    if (!probs) denom = check_targets<A>(tgt, C, wp, ignore_index, op);
    cpu::CrossEntropyArgs<kernel_t> a;
    a.N = N, a.C = C;
    a.x = kptr<kernel_t>(x), a.ldx = x.stride(0);
    if (probs) a.probs = kptr<kernel_t>(tgt), a.ldp = C;
    else a.target = tgt.data_ptr<int64_t>();
    a.weight = wp;
    a.ignore_index = ignore_index;
    a.label_smoothing = label_smoothing;
    a.loss_rows = loss_rows.defined() ? loss_rows.data_ptr<A>() : nullptr;
    a.loss_sum = &total;
    if (compute_grad) a.grad = kptr<kernel_t>(grad), a.ldg = C;
    a.scale = red == Reduction::mean ? 1.0 / denom : 1.0;
    cpu::loss_kernels<kernel_t>().cross_entropy(a);
  });
  if (red == Reduction::none) return {loss_rows.to(input.scalar_type()), grad};
  return {scalar_loss(red == Reduction::mean ? total / denom : total, input.options()), grad};
}

// grad_output as a contiguous vector of grad's dtype: one value, or one per row of grad.
at::Tensor grad_scales(const at::Tensor& grad_output, const at::Tensor& grad, const char* op) {
  FUSEDOPS_CHECK(grad_output.device().is_cpu(), op, "grad_output must be a CPU tensor, got device ",
                 grad_output.device());
  const bool one = grad_output.numel() == 1 && grad_output.dim() <= 1;
  FUSEDOPS_CHECK(one || (grad.dim() >= 1 && grad_output.dim() == 1 &&
                         grad_output.size(0) == grad.size(0)),
                 op, "grad_output must be 0-d or [N] = [", grad.dim() ? grad.size(0) : 0,
                 "] (one per row of the gradient), got shape ", shape_str(grad_output.sizes()));
  // bf16 gradients are scaled by fp32 factors (rounded once)
  const auto dt = grad.scalar_type() == at::kBFloat16 ? at::kFloat : grad.scalar_type();
  return grad_output.to(dt).contiguous();
}

void scale_into(at::Tensor& grad, const at::Tensor& s) {
  if (grad.numel() == 0) return;
  const int64_t N = s.numel() == 1 ? 1 : grad.size(0);
  const int64_t C = grad.numel() / N;
  FUSEDOPS_DISPATCH_CPU_FLOAT(grad.scalar_type(), "loss_grad_scale", [&] {
    cpu::loss_kernels<kernel_t>().scale_rows(N, C, kptr<kernel_t>(grad), C,
                                             s.data_ptr<cpu::compute_t<kernel_t>>(), s.numel() == 1 ? 0 : 1);
  });
}

at::Tensor cross_entropy_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad) {
  const char* op = "cross_entropy_backward";
  check_cpu_float_or_bf16(grad, op, "grad");
  const at::Tensor s = grad_scales(grad_output, grad, op);
  at::Tensor out = grad.clone(at::MemoryFormat::Contiguous);
  scale_into(out, s);
  return out;
}

void loss_grad_scale_cpu(at::Tensor& grad, const at::Tensor& grad_output) {
  const char* op = "loss_grad_scale";
  check_cpu_float_or_bf16(grad, op, "grad");
  FUSEDOPS_CHECK(grad.is_contiguous(), op, "grad must be contiguous");
  const at::Tensor s = grad_scales(grad_output, grad, op);
  scale_into(grad, s);
}

// ---- linear_cross_entropy ---------------------------------------------------------------------

// The tensors of linear_cross_entropy into the chunk loop (cpu/kernels/lce.h). bf16 hidden
// states (weight and bias bf16 or fp32 masters) run with fp32 arithmetic: the row losses and
// the gradient of a bf16 weight or bias are computed in fp32 and rounded once at the end.
cpu::DType mixed_type(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? cpu::DType::bf16 : cpu::DType::f32;
}

struct LceOutputs {
  double scale;                  // gradient scale (1/denominator for the mean, x grad_output)
  const at::Tensor* row_scale;   // [N] of the arithmetic type, or nullptr
  at::Tensor* loss_rows;         // [N] or nullptr
  double* loss_sum;              // or nullptr
  at::Tensor *gx2, *gw, *gb;     // each may be nullptr
};

struct LceInputs {
  at::Tensor x2, w, bias, target;
  int64_t N, K, V;
};

LceInputs check_lce(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& target,
                    const std::optional<at::Tensor>& bias, double ls, const char* op) {
  // bf16 hidden states take a bf16 or fp32 (master) weight and bias
  check_cpu_float_or_bf16(input, op, "input");
  check_param_dtype(weight, input, op, "weight");
  if (bias.has_value()) check_param_dtype(*bias, input, op, "bias");
  check_linear_shapes(input, weight, bias, op);
  check_label_smoothing(ls, op);
  LceInputs r;
  r.x2 = rows_of(input);
  r.N = r.x2.size(0), r.K = r.x2.size(1), r.V = weight.size(0);
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "fusedops.", op,
                   ": target must be int64 class indices, got ", target.scalar_type());
  const auto lead = input.sizes().slice(0, input.dim() - 1);
  FUSEDOPS_CHECK(target.sizes() == lead, op, "target must have shape ", shape_str(lead),
                 " (input's shape without its last dimension), got ", shape_str(target.sizes()));
  FUSEDOPS_CHECK(r.V > 0 || r.N == 0, op, "weight must have at least one class (row)");
  r.target = target.contiguous();
  r.w = weight;
  if (bias.has_value()) r.bias = bias->contiguous();
  return r;
}

template <typename Acc>
void lce_run(const LceInputs& in, int64_t ignore_index, double label_smoothing, const LceOutputs& o) {
  constexpr auto acc = c10::CppTypeToScalarType<Acc>::value;
  // an output of another dtype (bf16) is computed in Acc, then rounded
  const auto in_acc = [&](const at::Tensor* t) {
    if (!t) return at::Tensor();
    return t->scalar_type() == acc ? *t : at::empty(t->sizes(), t->options().dtype(acc));
  };
  at::Tensor loss = in_acc(o.loss_rows), gw = in_acc(o.gw), gb = in_acc(o.gb);
  cpu::LceArgs<Acc> a;
  a.N = in.N, a.K = in.K, a.V = in.V;
  a.x = in.x2.data_ptr(), a.x_type = mixed_type(in.x2), a.rsx = in.x2.stride(0), a.csx = in.x2.stride(1);
  a.w = in.w.data_ptr(), a.w_type = mixed_type(in.w), a.rsw = in.w.stride(0), a.csw = in.w.stride(1);
  if (in.bias.defined()) a.bias = in.bias.data_ptr(), a.bias_type = mixed_type(in.bias);
  a.target = in.target.data_ptr<int64_t>();
  a.ignore_index = ignore_index;
  a.label_smoothing = label_smoothing;
  a.scale = o.scale;
  if (o.row_scale) a.row_scale = o.row_scale->data_ptr<Acc>();
  if (loss.defined()) a.loss_rows = loss.data_ptr<Acc>();
  a.loss_sum = o.loss_sum;
  if (o.gx2) a.gx = o.gx2->data_ptr();
  if (gw.defined()) a.gw = gw.data_ptr<Acc>();
  if (gb.defined()) a.gb = gb.data_ptr<Acc>();
  a.chunk_rows = lce_chunk_rows_setting().load();
  cpu::linear_cross_entropy(a);
  if (o.loss_rows && !loss.is_same(*o.loss_rows)) o.loss_rows->copy_(loss);
  if (o.gw && !gw.is_same(*o.gw)) o.gw->copy_(gw);
  if (o.gb && !gb.is_same(*o.gb)) o.gb->copy_(gb);
}

// fp64 tensors in double; fp32 and bf16 ones with fp32 arithmetic
void lce_dispatch(const LceInputs& in, int64_t ignore_index, double label_smoothing, const LceOutputs& o) {
  if (in.x2.scalar_type() == at::kDouble)
    lce_run<double>(in, ignore_index, label_smoothing, o);
  else
    lce_run<float>(in, ignore_index, label_smoothing, o);
}

std::tuple<at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_cross_entropy_cpu(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& target,
                         const std::optional<at::Tensor>& bias, int64_t ignore_index,
                         c10::string_view reduction, double label_smoothing,
                         std::array<bool, 3> mask) {
  const char* op = "linear_cross_entropy";
  const Reduction red = reduction_arg(reduction, op);
  LceInputs in = check_lce(input, weight, target, bias, label_smoothing, op);
  // the loss in the promoted dtype of input and weight: bf16 for bf16 tensors, fp32 for bf16
  // hidden states over an fp32 master weight (autocast's case)
  const auto loss_opt = input.options().dtype(at::promote_types(input.scalar_type(), weight.scalar_type()));
  std::optional<at::Tensor> gx, gw, gb;
  if (mask[0]) gx = at::empty(input.sizes(), input.options());
  if (mask[1]) gw = at::empty(weight.sizes(), weight.options());
  if (mask[2] && bias.has_value()) gb = at::empty({in.V}, bias->options());
  at::Tensor loss_rows = red == Reduction::none ? at::empty(target.sizes(), loss_opt) : at::Tensor();
  double total = 0, denom = 0;
  denom = check_targets<float>(in.target, in.V, nullptr, ignore_index, op);
  at::Tensor gx2 = gx ? gx->view({in.N, in.K}) : at::Tensor();
  lce_dispatch(in, ignore_index, label_smoothing,
               {red == Reduction::mean ? 1.0 / denom : 1.0, nullptr, loss_rows.defined() ? &loss_rows : nullptr,
                &total, gx ? &gx2 : nullptr, gw ? &*gw : nullptr, gb ? &*gb : nullptr});
  if (red == Reduction::none) return {loss_rows, gx, gw, gb};
  return {scalar_loss(red == Reduction::mean ? total / denom : total, loss_opt), gx, gw, gb};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_cross_entropy_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& weight, const at::Tensor& target,
                                  const std::optional<at::Tensor>& bias, int64_t ignore_index,
                                  c10::string_view reduction, double label_smoothing,
                                  std::array<bool, 3> mask) {
  const char* op = "linear_cross_entropy_backward";
  const Reduction red = reduction_arg(reduction, op);
  LceInputs in = check_lce(input, weight, target, bias, label_smoothing, op);
  check_cpu_float_or_bf16(grad_output, op, "grad_output");
  if (red == Reduction::none) {
    FUSEDOPS_CHECK(grad_output.sizes() == target.sizes(), op, "grad_output must have shape ",
                   shape_str(target.sizes()), " for reduction \"none\", got ",
                   shape_str(grad_output.sizes()));
  } else {
    FUSEDOPS_CHECK(grad_output.numel() == 1, op, "grad_output must be 0-d, got shape ",
                   shape_str(grad_output.sizes()));
  }
  std::optional<at::Tensor> gx, gw, gb;
  if (mask[0]) gx = at::empty(input.sizes(), input.options());
  if (mask[1]) gw = at::empty(weight.sizes(), weight.options());
  if (mask[2] && bias.has_value()) gb = at::empty({in.V}, bias->options());
  if (!gx && !gw && !gb) return {gx, gw, gb};
  const bool bf16 = input.scalar_type() == at::kBFloat16;
  // the per-row scales in the arithmetic type (fp32 for bf16 hidden states)
  const at::Tensor go = grad_output.to(bf16 ? at::kFloat : input.scalar_type()).contiguous().view({-1});
  const double denom = check_targets<float>(in.target, in.V, nullptr, ignore_index, op);
  double scale = 1.0;
  if (red != Reduction::none) {
    const double g0 = go.to(at::kDouble).item<double>();
    scale = red == Reduction::mean ? g0 / denom : g0;
  }
  at::Tensor gx2 = gx ? gx->view({in.N, in.K}) : at::Tensor();
  lce_dispatch(in, ignore_index, label_smoothing,
               {scale, red == Reduction::none ? &go : nullptr, nullptr, nullptr, gx ? &gx2 : nullptr,
                gw ? &*gw : nullptr, gb ? &*gb : nullptr});
  return {gx, gw, gb};
}

// ---- mse_loss, binary_cross_entropy_with_logits -------------------------------------------
// bf16 tensors are widened to fp32 for these elementwise losses (exact) and the results rounded
// once to bf16: bf16 in, bf16 out, no faster than fp32 (no bf16 kernels of their own).

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }
at::Tensor f32(const at::Tensor& t) { return t.to(at::kFloat); }
std::optional<at::Tensor> f32(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->to(at::kFloat)) : std::nullopt;
}
std::optional<at::Tensor> bf16(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->to(at::kBFloat16)) : std::nullopt;
}

void check_pair(const at::Tensor& input, const at::Tensor& target, const char* op) {
  check_cpu_float_or_bf16(input, op, "input");
  check_cpu_float_or_bf16(target, op, "target");
  check_same_dtype(target, input, op, "target", "input");
  FUSEDOPS_CHECK(target.sizes() == input.sizes(), op, "target must have the input's shape ",
                 shape_str(input.sizes()), ", got ", shape_str(target.sizes()));
}

double mean_scale(Reduction red, int64_t n) { return red == Reduction::mean ? 1.0 / double(n) : 1.0; }

at::Tensor reduced(Reduction red, double total, int64_t n, at::Tensor rows, const at::TensorOptions& opt) {
  if (red == Reduction::none) return rows;
  return scalar_loss(red == Reduction::mean ? total / double(n) : total, opt);
}

at::Tensor mse_loss_cpu(const at::Tensor& input, const at::Tensor& target, c10::string_view reduction) {
  const char* op = "mse_loss";
  const Reduction red = reduction_arg(reduction, op);
  check_pair(input, target, op);
  if (is_bf16(input)) return mse_loss_cpu(f32(input), f32(target), reduction).to(at::kBFloat16);
  const at::Tensor x = input.contiguous(), y = target.contiguous();
  at::Tensor rows = red == Reduction::none ? at::empty(input.sizes(), input.options()) : at::Tensor();
  double total = 0;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.mse_loss", [&] {
    cpu::loss_kernels<scalar_t>().mse_forward(x.numel(), x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                               rows.defined() ? rows.data_ptr<scalar_t>() : nullptr, &total);
  });
  return reduced(red, total, x.numel(), rows, input.options());
}

// grad_output: 0-d for "mean"/"sum", the input's shape for "none" (returned with stride 1 or 0).
at::Tensor grad_output_arg(const at::Tensor& g, const at::Tensor& input, Reduction red,
                           const char* op, int64_t* stride) {
  check_cpu_float(g, op, "grad_output");
  if (red == Reduction::none) {
    FUSEDOPS_CHECK(g.sizes() == input.sizes(), op, "grad_output must have the input's shape ",
                   shape_str(input.sizes()), " for reduction \"none\", got ", shape_str(g.sizes()));
    *stride = 1;
  } else {
    FUSEDOPS_CHECK(g.numel() == 1, op, "grad_output must be 0-d, got shape ", shape_str(g.sizes()));
    *stride = 0;
  }
  return g.to(input.scalar_type()).contiguous();
}

at::Tensor mse_loss_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                 const at::Tensor& target, c10::string_view reduction) {
  const char* op = "mse_loss_backward";
  const Reduction red = reduction_arg(reduction, op);
  check_pair(input, target, op);
  if (is_bf16(input))
    return mse_loss_backward_cpu(f32(grad_output), f32(input), f32(target), reduction).to(at::kBFloat16);
  int64_t gs = 0;
  const at::Tensor g = grad_output_arg(grad_output, input, red, op, &gs);
  const at::Tensor x = input.contiguous(), y = target.contiguous();
  at::Tensor gx = at::empty(input.sizes(), input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.mse_loss_backward", [&] {
    cpu::loss_kernels<scalar_t>().mse_backward(x.numel(), g.data_ptr<scalar_t>(), gs, mean_scale(red, x.numel()),
                                x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                gx.data_ptr<scalar_t>());
  });
  return gx;
}

// weight / pos_weight broadcast to the input's shape, contiguous (undefined when absent).
at::Tensor expanded(const std::optional<at::Tensor>& t, const at::Tensor& input, const char* op,
                    const char* arg) {
  if (!t.has_value()) return at::Tensor();
  check_cpu_float(*t, op, arg);
  check_same_dtype(*t, input, op, arg, "input");
  FUSEDOPS_CHECK(at::is_expandable_to(t->sizes(), input.sizes()), op, arg,
                 " must broadcast to the input's shape ", shape_str(input.sizes()), ", got ",
                 shape_str(t->sizes()));
  return t->expand(input.sizes()).contiguous();
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

at::Tensor bce_with_logits_cpu(const at::Tensor& input, const at::Tensor& target,
                               const std::optional<at::Tensor>& weight,
                               const std::optional<at::Tensor>& pos_weight,
                               c10::string_view reduction) {
  const char* op = "binary_cross_entropy_with_logits";
  const Reduction red = reduction_arg(reduction, op);
  check_pair(input, target, op);
  if (is_bf16(input))
    return bce_with_logits_cpu(f32(input), f32(target), f32(weight), f32(pos_weight), reduction).to(at::kBFloat16);
  const at::Tensor x = input.contiguous(), y = target.contiguous();
  const at::Tensor w = expanded(weight, input, op, "weight");
  const at::Tensor pw = expanded(pos_weight, input, op, "pos_weight");
  at::Tensor rows = red == Reduction::none ? at::empty(input.sizes(), input.options()) : at::Tensor();
  double total = 0;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.binary_cross_entropy_with_logits", [&] {
    cpu::loss_kernels<scalar_t>().bce_logits_forward(x.numel(), x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                      ptr_or_null<scalar_t>(w), ptr_or_null<scalar_t>(pw),
                                      rows.defined() ? rows.data_ptr<scalar_t>() : nullptr, &total);
  });
  return reduced(red, total, x.numel(), rows, input.options());
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>> bce_with_logits_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& target,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& pos_weight,
    c10::string_view reduction, std::array<bool, 2> mask) {
  const char* op = "binary_cross_entropy_with_logits_backward";
  const Reduction red = reduction_arg(reduction, op);
  check_pair(input, target, op);
  if (is_bf16(input)) {
    auto [gx, gy] = bce_with_logits_backward_cpu(f32(grad_output), f32(input), f32(target), f32(weight),
                                                 f32(pos_weight), reduction, mask);
    return {bf16(gx), bf16(gy)};
  }
  int64_t gs = 0;
  const at::Tensor g = grad_output_arg(grad_output, input, red, op, &gs);
  const at::Tensor x = input.contiguous(), y = target.contiguous();
  const at::Tensor w = expanded(weight, input, op, "weight");
  const at::Tensor pw = expanded(pos_weight, input, op, "pos_weight");
  std::optional<at::Tensor> gx, gy;
  if (mask[0]) gx = at::empty(input.sizes(), input.options());
  if (mask[1]) gy = at::empty(input.sizes(), input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fusedops.binary_cross_entropy_with_logits_backward", [&] {
    cpu::loss_kernels<scalar_t>().bce_logits_backward(x.numel(), g.data_ptr<scalar_t>(), gs,
                                       mean_scale(red, x.numel()), x.data_ptr<scalar_t>(),
                                       y.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(w),
                                       ptr_or_null<scalar_t>(pw),
                                       gx ? gx->data_ptr<scalar_t>() : nullptr,
                                       gy ? gy->data_ptr<scalar_t>() : nullptr);
  });
  return {gx, gy};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_LOSS_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
