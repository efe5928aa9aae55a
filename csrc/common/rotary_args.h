// Argument rules of rotary_embedding, rotary_embedding_ and rotary_embedding_backward, shared by
// the CPU, CUDA and simulator bindings (dtype and device are each backend's).
#pragma once
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include "common/checks.h"
#include "contracts/rotary.h"

namespace fusedops {

// cos or sin as [Bc, T, R] (Bc 1 or B) with a contiguous last dimension (copied if not).
inline at::Tensor rotary_table_3d(const at::Tensor& t, int64_t B, int64_t T, int64_t D, const char* op,
                                  const char* arg) {
  FUSEDOPS_CHECK(t.dim() >= 2 && t.dim() <= 4 && (t.dim() != 4 || t.size(1) == 1), op, arg,
                 " must have shape [T, R], [B, T, R] or [B, 1, T, R], got ", shape_str(t.sizes()));
  at::Tensor c = t.dim() == 2 ? t.unsqueeze(0) : (t.dim() == 4 ? t.select(1, 0) : t);
  const int64_t R = c.size(2);
  FUSEDOPS_CHECK((c.size(0) == 1 || c.size(0) == B) && c.size(1) == T, op, arg, " must have batch 1 or ", B,
                 " and ", T, " positions (q's), got shape ", shape_str(t.sizes()));
  FUSEDOPS_CHECK(R % 2 == 0 && R >= 2 && R <= D, op, arg,
                 "'s last dimension (the rotary dimension) must be even, at least 2 and at most the head "
                 "dimension ", D, ", got ", R);
  return c.stride(2) == 1 ? c : c.contiguous();
}

// q [B, Hq, T, D] and k [B, Hk, T, D]; returns the geometry of q's rotation (k's differs in H
// and the x strides) with cos3 / sin3 the [Bc, T, R] tables. grad names: the op's argument names.
struct RotaryArgs {
  RotaryGeometry g;
  at::Tensor cos3, sin3;
};

inline RotaryArgs rotary_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& cos, const at::Tensor& sin,
                              const char* op, const char* q_name = "q", const char* k_name = "k") {
  FUSEDOPS_CHECK(q.dim() == 4, op, q_name, " must be 4-D [batch, heads, positions, head_dim], got shape ",
                 shape_str(q.sizes()));
  FUSEDOPS_CHECK(k.dim() == 4 && k.size(0) == q.size(0) && k.size(2) == q.size(2) && k.size(3) == q.size(3), op,
                 k_name, " must be 4-D [batch, kv_heads, positions, head_dim] with ", q_name,
                 "'s batch, positions and head_dim ", shape_str(q.sizes()), ", got shape ", shape_str(k.sizes()));
  FUSEDOPS_CHECK(cos.sizes() == sin.sizes(), op, "sin must have the shape of cos ", shape_str(cos.sizes()),
                 ", got ", shape_str(sin.sizes()));
  check_same_dtype(k, q, op, k_name, q_name);
  check_same_dtype(cos, q, op, "cos", q_name);
  check_same_dtype(sin, q, op, "sin", q_name);
  RotaryArgs a;
  a.g.B = q.size(0), a.g.T = q.size(2), a.g.D = q.size(3);
  a.cos3 = rotary_table_3d(cos, a.g.B, a.g.T, a.g.D, op, "cos");
  a.sin3 = rotary_table_3d(sin, a.g.B, a.g.T, a.g.D, op, "sin");
  a.g.R = a.cos3.size(2);
  a.g.cb = a.cos3.size(0) == 1 ? 0 : a.cos3.stride(0), a.g.ct = a.cos3.stride(1);
  a.g.sb = a.sin3.size(0) == 1 ? 0 : a.sin3.stride(0), a.g.st = a.sin3.stride(1);
  return a;
}

// g with x's heads and strides (x [B, H, T, D] with a contiguous last dimension) and y's strides.
inline RotaryGeometry rotary_for(RotaryGeometry g, const at::Tensor& x, const at::Tensor& y) {
  g.H = x.size(1);
  g.xb = x.stride(0), g.xh = x.stride(1), g.xt = x.stride(2);
  g.yb = y.stride(0), g.yh = y.stride(1), g.yt = y.stride(2);
  return g;
}

// rotary_embedding_ writes q and k: each element of each once.
inline void check_rotary_in_place(const at::Tensor& q, const at::Tensor& k, const char* op) {
  FUSEDOPS_CHECK(at::has_internal_overlap(q) != at::MemOverlap::Yes, op,
                 "q must not have elements sharing memory (an expanded tensor) to be written in place");
  FUSEDOPS_CHECK(at::has_internal_overlap(k) != at::MemOverlap::Yes, op,
                 "k must not have elements sharing memory (an expanded tensor) to be written in place");
  FUSEDOPS_CHECK(at::get_overlap_status(q, k) == at::MemOverlapStatus::No, op,
                 "q and k must not share memory to be written in place");
}

// x itself when its last dimension is contiguous, else a contiguous copy.
inline at::Tensor rows_readable(const at::Tensor& x) {
  return x.size(3) <= 1 || x.stride(3) == 1 ? x : x.contiguous();
}

}  // namespace fusedops
