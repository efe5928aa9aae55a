// scaled_dot_product_attention bindings on the CUDA kernels, shared by the CUDA build
// (attention.cu, CUDA tensors, the current stream) and the simulator build
// (sim/sim_attention.cpp, CPU tensors, the kernels run by csrc/sim/cuda_sim.h): same checks,
// plans and launches. Shape rules and operand offsets are the CPU op's (common/attention_args.h).
// The log-sum-exp is float32 for fp16/bf16/fp32 inputs and float64 for float64.
#pragma once
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "common/attention_args.h"
#include "common/checks.h"
#include "cuda/kernels/attention.cuh"
#include "cuda/binding_common.h"

namespace fusedops::FUSEDOPS_CUDA_NS::bind {

struct AttnPrepared : AttentionOperands {
  at::Tensor offsets;  // int64 [4, batch] on the device
};

inline AttnPrepared attn_prepare(const at::Tensor& query, const at::Tensor& key,
                                 const at::Tensor& value, const std::optional<at::Tensor>& attn_mask,
                                 double dropout_p, std::optional<double> scale, bool enable_gqa,
                                 const std::optional<at::Tensor>& rng, const char* op) {
  check_tensor(query, query, op, "query", "query");
  check_tensor(key, query, op, "key", "query");
  check_tensor(value, query, op, "value", "query");
  if (attn_mask.has_value())
    FUSEDOPS_CHECK(attn_mask->device() == query.device(), op,
                   "attn_mask must be on the device of query (", query.device(), "), got ",
                   attn_mask->device());
  check_attention_shapes(query, key, value, attn_mask, enable_gqa, dropout_p, op);
  FUSEDOPS_CHECK(query.size(-1) <= 256 && value.size(-1) <= 256, op,
                 "head dims up to 256 are supported on this backend, got E = ", query.size(-1),
                 ", Ev = ", value.size(-1));
  AttnPrepared p;
  static_cast<AttentionOperands&>(p) =
      attention_operands(query, key, value, attn_mask, dropout_p, scale, enable_gqa, rng, op);
  FUSEDOPS_CHECK(p.lay.batch <= k::kMaxGridYZ * k::kMaxGridYZ, op, "at most 65535^2 (batch, head) "
                 "pairs (grid.y x grid.z) are supported on this backend, got ", p.lay.batch);
  std::vector<int64_t> off;
  off.reserve(size_t(4 * p.lay.batch));
  for (const auto* v : {&p.lay.q_off, &p.lay.k_off, &p.lay.v_off}) off.insert(off.end(), v->begin(), v->end());
  if (p.mask.defined()) off.insert(off.end(), p.lay.m_off.begin(), p.lay.m_off.end());
  else off.resize(size_t(4 * p.lay.batch), 0);
  p.offsets = at::tensor(off, at::TensorOptions().dtype(at::kLong)).to(query.device());
  return p;
}

template <typename T>
k::AttentionParams<T> attn_params(const AttnPrepared& a, double dropout_p, bool is_causal) {
  k::AttentionParams<T> p;
  const AttentionLayout& lay = a.lay;
  p.batch = lay.batch;
  p.L = lay.L;
  p.S = lay.S;
  p.E = lay.E;
  p.Ev = lay.Ev;
  p.q = ptr<T>(a.q);
  p.k = ptr<T>(a.k);
  p.v = ptr<T>(a.v);
  p.off = a.offsets.data_ptr<int64_t>();
  p.q_rs = a.q.stride(-2);
  p.k_rs = a.k.stride(-2);
  p.v_rs = a.v.stride(-2);
  if (a.mask.defined()) {
    if (a.mask.scalar_type() == at::kBool) {
      p.mask_kind = AttnMask::boolean;
      p.mask_bool = reinterpret_cast<const uint8_t*>(a.mask.data_ptr());
    } else {
      p.mask_kind = AttnMask::additive;
      p.mask_add = ptr<T>(a.mask);
    }
    p.m_rs = lay.m_rs;
    p.m_cs = lay.m_cs;
  }
  p.causal = is_causal;
  p.scale = gemm_acc_t<T>(lay.scale);
  p.dropout_p = dropout_p;
  p.seed = a.seed;
  p.offset = a.offset;
  return p;
}

inline at::ScalarType lse_dtype(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

inline std::vector<int64_t> attn_shape(const AttentionLayout& lay, std::initializer_list<int64_t> tail) {
  std::vector<int64_t> s = lay.batch_shape;
  s.insert(s.end(), tail);
  return s;
}

inline std::tuple<at::Tensor, at::Tensor> scaled_dot_product_attention(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal,
    std::optional<double> scale, bool enable_gqa, const std::optional<at::Tensor>& rng) {
  const char* op = "scaled_dot_product_attention";
  AttnPrepared a = attn_prepare(query, key, value, attn_mask, dropout_p, scale, enable_gqa, rng, op);
  DeviceGuard guard(query);
  const AttentionLayout& lay = a.lay;
  at::Tensor out = at::empty(attn_shape(lay, {lay.L, lay.Ev}), query.options());
  at::Tensor lse = at::empty(attn_shape(lay, {lay.L}), query.options().dtype(lse_dtype(query.scalar_type())));
  if (lay.batch > 0 && lay.L > 0) {
    dispatch(query.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      k::AttentionParams<T> p = attn_params<T>(a, dropout_p, is_causal);
      p.out = ptr<T>(out);
      p.lse = reinterpret_cast<gemm_acc_t<T>*>(lse.data_ptr());
      launch(op, [&] { k::attention_forward_launch<T>(p, stream_for(query)); });
    });
  }
  return {out, lse};
}

inline std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
scaled_dot_product_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& logsumexp,
    const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal,
    std::optional<double> scale, bool enable_gqa, const std::optional<at::Tensor>& rng,
    std::array<bool, 3> mask) {
  const char* op = "scaled_dot_product_attention_backward";
  AttnPrepared a = attn_prepare(query, key, value, attn_mask, dropout_p, scale, enable_gqa, rng, op);
  DeviceGuard guard(query);
  const AttentionLayout& lay = a.lay;
  const auto out_shape = attn_shape(lay, {lay.L, lay.Ev});
  const auto lse_shape = attn_shape(lay, {lay.L});
  check_tensor(grad_out, query, op, "grad_out", "query");
  check_tensor(out, query, op, "out", "query");
  FUSEDOPS_CHECK(grad_out.sizes().vec() == out_shape && out.sizes().vec() == out_shape, op,
                 "grad_out and out must have shape ", shape_str(out_shape), ", got ",
                 shape_str(grad_out.sizes()), " and ", shape_str(out.sizes()));
  FUSEDOPS_CHECK(logsumexp.sizes().vec() == lse_shape &&
                     logsumexp.scalar_type() == lse_dtype(query.scalar_type()) &&
                     logsumexp.device() == query.device(),
                 op, "logsumexp must be ", lse_dtype(query.scalar_type()), " of shape ",
                 shape_str(lse_shape), " on ", query.device(), ", got ", logsumexp.scalar_type(),
                 " of shape ", shape_str(logsumexp.sizes()), " on ", logsumexp.device());
  const at::Tensor go = grad_out.contiguous(), o = out.contiguous(), lse = logsumexp.contiguous();
  std::optional<at::Tensor> dq, dk, dv;
  at::Tensor dk_all, dv_all;
  if (mask[0]) dq = at::empty(attn_shape(lay, {lay.L, lay.E}), query.options());
  if (mask[1]) dk_all = at::empty(attn_shape(lay, {lay.S, lay.E}), query.options());
  if (mask[2]) dv_all = at::empty(attn_shape(lay, {lay.S, lay.Ev}), query.options());
  if ((mask[0] || mask[1] || mask[2]) && lay.batch > 0) {
    at::Tensor delta = at::empty({lay.batch * lay.L}, lse.options());
    dispatch(query.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      k::AttentionParams<T> p = attn_params<T>(a, dropout_p, is_causal);
      p.out = const_cast<T*>(ptr<T>(o));
      p.lse = reinterpret_cast<gemm_acc_t<T>*>(lse.data_ptr());
      p.dout = ptr<T>(go);
      p.delta = reinterpret_cast<gemm_acc_t<T>*>(delta.data_ptr());
      p.dq = mask[0] ? ptr<T>(*dq) : nullptr;
      p.dk = mask[1] ? ptr<T>(dk_all) : nullptr;
      p.dv = mask[2] ? ptr<T>(dv_all) : nullptr;
      launch(op, [&] { k::attention_backward_launch<T>(p, stream_for(query)); });
    });
  }
  if (mask[1]) dk = lay.kv_shared ? reduce_kv_grad(dk_all, key, enable_gqa) : dk_all;
  if (mask[2]) dv = lay.kv_shared ? reduce_kv_grad(dv_all, value, enable_gqa) : dv_all;
  return {dq, dk, dv};
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS::bind
