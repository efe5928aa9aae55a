// Argument rules of dropout, embedding and batch_norm, shared by the CPU, CUDA and simulator
// bindings (dtype and device checks of the data are each backend's).
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <optional>

#include "common/checks.h"
#include "common/fresh_output.h"

namespace fusedops {

// ---- dropout ----

struct DropoutRng {
  uint64_t seed = 0, offset = 0;
};

// p in [0, 1]; rng a CPU int64 tensor (seed, offset).
inline DropoutRng dropout_args(double p, const at::Tensor& rng, const char* op) {
  FUSEDOPS_CHECK(p >= 0.0 && p <= 1.0, op, "p must be in [0, 1], got ", p);
  FUSEDOPS_CHECK(rng.scalar_type() == at::kLong && rng.numel() == 2 && rng.device().is_cpu(), op,
                 "rng must be a CPU int64 tensor of 2 elements (seed, offset), got ", rng.scalar_type(),
                 " of shape ", shape_str(rng.sizes()), " on ", rng.device());
  const at::Tensor r = rng.contiguous();
  const int64_t* v = r.data_ptr<int64_t>();
  return {uint64_t(v[0]), uint64_t(v[1])};
}

// ---- embedding ----

// An embedding problem: n indices into a table of V rows of D elements.
struct EmbeddingShape {
  int64_t n = 0, V = 0, D = 0;
  int64_t padding_idx = -1;  // normalised to [0, V), or -1 for none
};

inline void check_indices_dtype(const at::Tensor& input, const char* op) {
  TORCH_CHECK_TYPE(input.scalar_type() == at::kLong || input.scalar_type() == at::kInt, "fusedops.", op,
                   ": input must hold int64 or int32 indices, got ", input.scalar_type());
}

// padding_idx in [-V, V) (negative counts from the end, as torch), or None.
inline int64_t embedding_padding(std::optional<int64_t> padding_idx, int64_t V, const char* op) {
  if (!padding_idx.has_value()) return -1;
  const int64_t p = *padding_idx;
  FUSEDOPS_CHECK(p >= -V && p < V, op, "padding_idx must be within num_embeddings (", V, "), got ", p);
  return p < 0 ? p + V : p;
}

inline EmbeddingShape embedding_shape(const at::Tensor& input, const at::Tensor& weight,
                                      std::optional<int64_t> padding_idx, const char* op) {
  check_indices_dtype(input, op);
  FUSEDOPS_CHECK(weight.dim() == 2, op, "weight must be 2-D [num_embeddings, embedding_dim], got shape ",
                 shape_str(weight.sizes()));
  EmbeddingShape s;
  s.n = input.numel();
  s.V = weight.size(0);
  s.D = weight.size(1);
  s.padding_idx = embedding_padding(padding_idx, s.V, op);
  return s;
}

// The error for an index outside [0, V): names the op, the argument, the range and the value.
[[noreturn]] inline void bad_index(int64_t pos, int64_t value, int64_t V, const char* op) {
  TORCH_CHECK_INDEX(false, "fusedops.", op, ": input must hold indices in [0, ", V,
                    ") (num_embeddings), got ", value, " at flat position ", pos);
}

// ---- batch_norm ----

// The input as [N, C, S] (S: the product of the spatial dimensions) with its strides; the
// kernels take "planar" (S contiguous: NCHW / NCL) and "interleaved" (C contiguous: NHWC,
// channels-last) layouts; anything else is copied to planar first by the binding.
struct BatchNormShape {
  int64_t N = 0, C = 0, S = 1;
  bool channels_last = false;
};

inline BatchNormShape batch_norm_shape(const at::Tensor& input, const char* op) {
  FUSEDOPS_CHECK(input.dim() >= 2, op, "input must have at least 2 dimensions [N, C, ...], got shape ",
                 shape_str(input.sizes()));
  BatchNormShape s;
  s.N = input.size(0);
  s.C = input.size(1);
  s.S = checked_product(input.sizes().slice(2), op, "input's spatial dimensions");
  // channels-last, and not plain contiguous too (then the planar path serves)
  s.channels_last = input.dim() == 4 && !input.is_contiguous() &&
                    input.is_contiguous(at::MemoryFormat::ChannelsLast);
  return s;
}

// The [C] vectors: weight, bias, running statistics.
inline void check_channel_vector(const std::optional<at::Tensor>& t, int64_t C, const char* op, const char* arg) {
  if (!t.has_value()) return;
  FUSEDOPS_CHECK(t->dim() == 1 && t->size(0) == C, op, arg, " must have shape [", C,
                 "] (the input's channels), got ", shape_str(t->sizes()));
}

// The input (or a gradient of its shape) in the layout the kernels read: channels-last as it
// is, anything else contiguous; and a new tensor in that layout.
inline at::Tensor batch_norm_layout(const at::Tensor& t, bool channels_last) {
  return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
}

inline at::Tensor batch_norm_empty(const at::Tensor& like, bool channels_last) {
  if (channels_last) return at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::ChannelsLast));
  return empty_output(like.sizes(), like.options());
}

// batch_norm_backward past its backend's dtype and device checks: grad_output's shape, the
// gradients the mask asks for (grad_input in the input's layout), and the operands as the
// kernels read them. `any` is false when the mask asks for nothing.
struct BatchNormBackwardIo {
  std::optional<at::Tensor> dx, dw, db;
  at::Tensor x, g, mean, rstd, weight;  // weight undefined when there is none
  bool any = false;
};

inline BatchNormBackwardIo batch_norm_backward_io(const at::Tensor& grad_output, const at::Tensor& input,
                                                  const at::Tensor& mean, const at::Tensor& rstd,
                                                  const std::optional<at::Tensor>& weight,
                                                  const BatchNormShape& s, std::array<bool, 3> mask) {
  BatchNormBackwardIo io;
  if (mask[0]) io.dx = batch_norm_empty(input, s.channels_last);
  if (mask[1]) io.dw = at::empty({s.C}, input.options());
  if (mask[2]) io.db = at::empty({s.C}, input.options());
  io.any = mask[0] || mask[1] || mask[2];
  if (!io.any) return io;
  io.x = batch_norm_layout(input, s.channels_last);
  io.g = batch_norm_layout(grad_output, s.channels_last);
  io.mean = mean.contiguous(), io.rstd = rstd.contiguous();
  if (weight.has_value()) io.weight = weight->contiguous();
  return io;
}

}  // namespace fusedops
