// Shape rules of conv2d and max_pool2d shared by the CPU, CUDA and simulator bindings:
// argument checks (dtype and device are each backend's), output shapes and memory formats.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "common/checks.h"
#include "contracts/conv.h"

namespace fusedops {

inline void check_pair(at::IntArrayRef v, const char* op, const char* arg) {
  FUSEDOPS_CHECK(v.size() == 2, op, arg, " must have 2 elements (height, width), got ", v.size());
}

// The conv2d geometry of a 4-D input [N, C, H, W] (3-D [C, H, W] counts as N = 1).
inline Conv2dShape conv2d_shape(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups, const char* op) {
  FUSEDOPS_CHECK(input.dim() == 3 || input.dim() == 4, op,
                 "input must be 3-D [C, H, W] or 4-D [N, C, H, W], got shape ",
                 shape_str(input.sizes()));
  FUSEDOPS_CHECK(weight.dim() == 4, op,
                 "weight must be 4-D [out_channels, in_channels / groups, kH, kW], got shape ",
                 shape_str(weight.sizes()));
  FUSEDOPS_CHECK(weight.size(2) > 0 && weight.size(3) > 0, op,
                 "weight's kernel size (kH, kW) must be positive, got weight shape ",
                 shape_str(weight.sizes()));
  check_pair(stride, op, "stride");
  check_pair(padding, op, "padding");
  check_pair(dilation, op, "dilation");
  FUSEDOPS_CHECK(stride[0] > 0 && stride[1] > 0, op, "stride must be positive, got ",
                 shape_str(stride));
  FUSEDOPS_CHECK(dilation[0] > 0 && dilation[1] > 0, op, "dilation must be positive, got ",
                 shape_str(dilation));
  FUSEDOPS_CHECK(padding[0] >= 0 && padding[1] >= 0, op, "padding must be non-negative, got ",
                 shape_str(padding));
  FUSEDOPS_CHECK(groups > 0, op, "groups must be positive, got ", groups);
  const bool batched = input.dim() == 4;
  Conv2dShape s;
  s.N = batched ? input.size(0) : 1;
  s.C = input.size(batched ? 1 : 0);
  s.H = input.size(batched ? 2 : 1);
  s.W = input.size(batched ? 3 : 2);
  s.K = weight.size(0), s.R = weight.size(2), s.S = weight.size(3);
  FUSEDOPS_CHECK(s.C % groups == 0, op, "groups (", groups, ") must divide the input channels (",
                 s.C, ")");
  FUSEDOPS_CHECK(s.K % groups == 0, op, "groups (", groups,
                 ") must divide the output channels (weight.size(0) = ", s.K, ")");
  FUSEDOPS_CHECK(weight.size(1) * groups == s.C, op, "input has ", s.C,
                 " channels but weight expects in_channels / groups = ", weight.size(1),
                 " with groups = ", groups, " (", weight.size(1) * groups,
                 " channels); weight shape ", shape_str(weight.sizes()));
  if (bias.has_value())
    FUSEDOPS_CHECK(bias->dim() == 1 && bias->size(0) == s.K, op,
                   "bias must be 1-D [out_channels] = [", s.K, "], got shape ",
                   shape_str(bias->sizes()));
  s.sh = stride[0], s.sw = stride[1], s.ph = padding[0], s.pw = padding[1];
  s.dh = dilation[0], s.dw = dilation[1], s.groups = groups;
  // The padded input C x Hp x Wp (the CPU kernels' padded images) and the dilated kernel
  // (a dilation of 2^62 + 1 over 5 taps would wrap to 5) in checked arithmetic.
  int64_t Hp, Wp, padded, kh, kw;
  FUSEDOPS_CHECK(mul_add_fits(2, s.ph, s.H, &Hp) && mul_add_fits(2, s.pw, s.W, &Wp) &&
                     mul_add_fits(Hp, Wp, 0, &padded) && mul_add_fits(padded, s.C, 0, &padded),
                 op, "padding ", shape_str(padding),
                 " overflows int64: the padded input C x (H + 2 * padding[0]) x (W + 2 * "
                 "padding[1]) has more than 2^63 elements; input shape ", shape_str(input.sizes()));
  FUSEDOPS_CHECK(mul_add_fits(s.dh, s.R - 1, 1, &kh) && mul_add_fits(s.dw, s.S - 1, 1, &kw), op,
                 "dilation ", shape_str(dilation),
                 " overflows int64: the dilated kernel dilation * (kernel_size - 1) + 1 exceeds "
                 "2^63 - 1; weight shape ", shape_str(weight.sizes()));
  FUSEDOPS_CHECK(Hp >= kh && Wp >= kw, op, "output size must be positive: input (padded) ", Hp,
                 " x ", Wp, " is smaller than the dilated kernel ", kh, " x ", kw,
                 "; input shape ", shape_str(input.sizes()), ", weight shape ",
                 shape_str(weight.sizes()));
  s.OH = (Hp - kh) / s.sh + 1;
  s.OW = (Wp - kw) / s.sw + 1;
  return s;
}

// Output [N, K, OH, OW] (or [K, OH, OW]) in the memory format torch's conv gives: channels
// last when the input or the weight is.
inline at::Tensor conv2d_output(const at::Tensor& input, const at::Tensor& weight,
                                const Conv2dShape& s) {
  const bool cl = input.dim() == 4 && (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                                       weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({s.N, s.K, s.OH, s.OW}, input.options().memory_format(
                                                       cl ? at::MemoryFormat::ChannelsLast
                                                          : at::MemoryFormat::Contiguous));
  return out;
}

// Output size of one pooled dimension from the padded input and the dilated kernel extents,
// torch's floor((padded - span + (ceil_mode ? stride - 1 : 0)) / stride) + 1 without forming
// the sum (a stride near 2^63 would overflow it); with ceil_mode a last window that would
// start in the right padding is dropped.
inline int64_t pool_out_size(int64_t in, int64_t padded, int64_t span, int64_t pad, int64_t stride,
                             bool ceil_mode) {
  const int64_t num = padded - span;  // both positive: no overflow
  const int64_t floor = num >= 0 ? num / stride : -((-num - 1) / stride) - 1;
  int64_t out = floor + (ceil_mode && num % stride != 0) + 1;
  int64_t last;  // where the last window starts, counted from the padded edge
  if (ceil_mode && (__builtin_mul_overflow(out - 1, stride, &last) || last >= in + pad)) --out;
  return out;
}

// The first output of a pooled dimension whose window holds no input element, or -1. Only a
// window starting in the padding can be empty (its first tap at or after 0 is
// start + ceil(-start / dil) * dil, before `in` unless dil > in); torch returns -inf there, with
// an index outside the input that its own backward writes through.
inline int64_t empty_pool_window(int64_t in, int64_t out, int64_t pad, int64_t stride, int64_t dil) {
  if (dil <= in) return -1;
  for (int64_t o = 0; o < out && o * stride < pad; ++o) {
    const int64_t start = o * stride - pad;
    if (start + ((-start - 1) / dil + 1) * dil >= in) return o;
  }
  return -1;
}

inline Pool2dShape max_pool2d_shape(const at::Tensor& input, at::IntArrayRef kernel_size,
                                         at::IntArrayRef stride, at::IntArrayRef padding,
                                         at::IntArrayRef dilation, bool ceil_mode, const char* op) {
  FUSEDOPS_CHECK(input.dim() == 3 || input.dim() == 4, op,
                 "input must be 3-D [C, H, W] or 4-D [N, C, H, W], got shape ",
                 shape_str(input.sizes()));
  check_pair(kernel_size, op, "kernel_size");
  check_pair(stride, op, "stride");
  check_pair(padding, op, "padding");
  check_pair(dilation, op, "dilation");
  FUSEDOPS_CHECK(kernel_size[0] > 0 && kernel_size[1] > 0, op,
                 "kernel_size must be positive, got ", shape_str(kernel_size));
  FUSEDOPS_CHECK(stride[0] > 0 && stride[1] > 0, op, "stride must be positive, got ",
                 shape_str(stride));
  FUSEDOPS_CHECK(dilation[0] > 0 && dilation[1] > 0, op, "dilation must be positive, got ",
                 shape_str(dilation));
  FUSEDOPS_CHECK(padding[0] >= 0 && padding[1] >= 0, op, "padding must be non-negative, got ",
                 shape_str(padding));
  FUSEDOPS_CHECK(padding[0] <= kernel_size[0] / 2 && padding[1] <= kernel_size[1] / 2, op,
                 "padding must be at most half the kernel size, got padding ",
                 shape_str(padding), " with kernel_size ", shape_str(kernel_size));
  const bool batched = input.dim() == 4;
  Pool2dShape s;
  const int64_t C = input.size(batched ? 1 : 0);
  s.planes = (batched ? input.size(0) : 1) * C;
  s.H = input.size(batched ? 2 : 1);
  s.W = input.size(batched ? 3 : 2);
  FUSEDOPS_CHECK(C > 0 && s.H > 0 && s.W > 0, op,
                 "input must have non-zero channels, height and width, got shape ",
                 shape_str(input.sizes()));
  s.kh = kernel_size[0], s.kw = kernel_size[1], s.sh = stride[0], s.sw = stride[1];
  s.ph = padding[0], s.pw = padding[1], s.dh = dilation[0], s.dw = dilation[1];
  int64_t Hp, Wp, kh, kw;  // padded input and dilated kernel extents, in checked arithmetic
  FUSEDOPS_CHECK(mul_add_fits(2, s.ph, s.H, &Hp) && mul_add_fits(2, s.pw, s.W, &Wp), op,
                 "padding ", shape_str(padding),
                 " overflows int64: the padded input (H + 2 * padding[0]) x (W + 2 * padding[1]) "
                 "exceeds 2^63 - 1; input shape ", shape_str(input.sizes()));
  FUSEDOPS_CHECK(mul_add_fits(s.dh, s.kh - 1, 1, &kh) && mul_add_fits(s.dw, s.kw - 1, 1, &kw), op,
                 "dilation ", shape_str(dilation),
                 " overflows int64: the dilated kernel dilation * (kernel_size - 1) + 1 exceeds "
                 "2^63 - 1 with kernel_size ", shape_str(kernel_size));
  s.OH = pool_out_size(s.H, Hp, kh, s.ph, s.sh, ceil_mode);
  s.OW = pool_out_size(s.W, Wp, kw, s.pw, s.sw, ceil_mode);
  FUSEDOPS_CHECK(s.OH > 0 && s.OW > 0, op, "output size must be positive, got ", s.OH, " x ",
                 s.OW, " for input shape ", shape_str(input.sizes()), " and kernel_size ",
                 shape_str(kernel_size));
  if (s.planes > 0) {
    const int64_t eh = empty_pool_window(s.H, s.OH, s.ph, s.sh, s.dh);
    const int64_t ew = empty_pool_window(s.W, s.OW, s.pw, s.sw, s.dw);
    FUSEDOPS_CHECK(eh < 0 && ew < 0, op,
                   "every pooling window must hold an input element, but the window of output ",
                   eh >= 0 ? "row " : "column ", eh >= 0 ? eh : ew,
                   " lies entirely in the padding; input shape ", shape_str(input.sizes()),
                   ", kernel_size ", shape_str(kernel_size), ", padding ", shape_str(padding),
                   ", dilation ", shape_str(dilation));
  }
  return s;
}

// Output shape of max_pool2d with the batch dimension of the input.
inline std::vector<int64_t> pool_output_sizes(const at::Tensor& input, const Pool2dShape& s) {
  std::vector<int64_t> sizes(input.sizes().begin(), input.sizes().end());
  sizes[sizes.size() - 2] = s.OH;
  sizes[sizes.size() - 1] = s.OW;
  return sizes;
}

inline void check_pool_grad(const at::Tensor& grad_output, const at::Tensor& indices,
                            const at::Tensor& input, const Pool2dShape& s, const char* op) {
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, "fusedops.", op,
                   ": indices must be int64, got ", indices.scalar_type());
  const auto want = pool_output_sizes(input, s);
  FUSEDOPS_CHECK(grad_output.sizes().vec() == want && indices.sizes().vec() == want, op,
                 "grad_output and indices must have the pooled shape ", shape_str(want), ", got ",
                 shape_str(grad_output.sizes()), " and ", shape_str(indices.sizes()));
  FUSEDOPS_CHECK(indices.device() == input.device(), op, "indices must be on the device of input (",
                 input.device(), "), got ", indices.device());
}

// Every index must lie in its plane, [0, H * W): one reduction over the indices and, on a GPU,
// one device-to-host copy (a synchronisation) per call.
inline void check_pool_indices(const at::Tensor& indices, const Pool2dShape& s, const char* op) {
  if (indices.numel() == 0) return;
  const auto [mn, mx] = at::aminmax(indices);
  const at::Tensor range = at::stack({mn, mx}).cpu();
  const int64_t lo = range.data_ptr<int64_t>()[0], hi = range.data_ptr<int64_t>()[1];
  FUSEDOPS_CHECK(lo >= 0 && hi < s.H * s.W, op, "indices must lie in [0, ", s.H * s.W,
                 "), got values in [", lo, ", ", hi, "]");
}

}  // namespace fusedops
