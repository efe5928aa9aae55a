// CPU bindings of scaled_dot_product_attention and its backward: argument checks, output
// allocation, operand offsets and strides handed to the flash kernels (no copies of
// transposed, broadcast or grouped-query operands), dispatch on dtype. The math is in
// kernels/attention_isa.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <array>
#include <optional>

#include "common/threads.h"
#include "common/attention_args.h"
#include "common/checks.h"
#include "cpu/dtype.h"
#include "cpu/kernels/attention.h"
#include "common/register.h"

namespace fusedops {
namespace {

using cpu::AttentionArgs;

// The log-sum-exp is float32 for a bf16 query (the kernels' arithmetic type).
at::ScalarType lse_dtype(const at::Tensor& query) {
  return query.scalar_type() == at::kBFloat16 ? at::kFloat : query.scalar_type();
}

using Prepared = AttentionOperands;

Prepared prepare(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
                 const std::optional<at::Tensor>& attn_mask, double dropout_p,
                 std::optional<double> scale, bool enable_gqa,
                 const std::optional<at::Tensor>& rng, const char* op) {
  check_cpu_float_or_bf16(query, op, "query");
  check_cpu_float_or_bf16(key, op, "key");
  check_cpu_float_or_bf16(value, op, "value");
  check_same_dtype(key, query, op, "key", "query");
  check_same_dtype(value, query, op, "value", "query");
  if (attn_mask.has_value())
    FUSEDOPS_CHECK(attn_mask->device().is_cpu(), op, "attn_mask must be a CPU tensor, got device ",
                   attn_mask->device());
  check_attention_shapes(query, key, value, attn_mask, enable_gqa, dropout_p, op);
  return attention_operands(query, key, value, attn_mask, dropout_p, scale, enable_gqa, rng, op);
}

template <typename T>
AttentionArgs<T> kernel_args(const Prepared& p, double dropout_p, bool is_causal) {
  const AttentionLayout& lay = p.lay;
  AttentionArgs<T> a;
  a.batch = lay.batch;
  a.L = lay.L;
  a.S = lay.S;
  a.E = lay.E;
  a.Ev = lay.Ev;
  a.q = kptr<T>(p.q);
  a.k = kptr<T>(p.k);
  a.v = kptr<T>(p.v);
  a.q_off = lay.q_off.data();
  a.k_off = lay.k_off.data();
  a.v_off = lay.v_off.data();
  a.q_rs = p.q.stride(-2);
  a.k_rs = p.k.stride(-2);
  a.v_rs = p.v.stride(-2);
  if (p.mask.defined()) {
    if (p.mask.scalar_type() == at::kBool) {
      a.mask = AttnMask::boolean;
      a.mask_bool = reinterpret_cast<const uint8_t*>(p.mask.data_ptr<bool>());
    } else {
      a.mask = AttnMask::additive;
      a.mask_add = kptr<T>(p.mask);
    }
    a.m_off = lay.m_off.data();
    a.m_rs = lay.m_rs;
    a.m_cs = lay.m_cs;
  }
  a.causal = is_causal;
  a.scale = cpu::compute_t<T>(lay.scale);
  a.dropout_p = dropout_p;
  a.seed = p.seed;
  a.offset = p.offset;
  return a;
}

std::vector<int64_t> batch_with(const AttentionLayout& lay, std::initializer_list<int64_t> tail) {
  std::vector<int64_t> s = lay.batch_shape;
  s.insert(s.end(), tail);
  return s;
}

std::tuple<at::Tensor, at::Tensor> scaled_dot_product_attention_cpu(const at::Tensor& query, const at::Tensor& key,
                                            const at::Tensor& value,
                                            const std::optional<at::Tensor>& attn_mask,
                                            double dropout_p, bool is_causal,
                                            std::optional<double> scale, bool enable_gqa,
                                            const std::optional<at::Tensor>& rng) {
  const char* op = "scaled_dot_product_attention";
  Prepared p = prepare(query, key, value, attn_mask, dropout_p, scale, enable_gqa, rng, op);
  const AttentionLayout& lay = p.lay;
  at::Tensor out = at::empty(batch_with(lay, {lay.L, lay.Ev}), query.options());
  at::Tensor lse = at::empty(batch_with(lay, {lay.L}), query.options().dtype(lse_dtype(query)));
  FUSEDOPS_DISPATCH_CPU_FLOAT(query.scalar_type(), op, [&] {
    AttentionArgs<kernel_t> a = kernel_args<kernel_t>(p, dropout_p, is_causal);
    a.out = kptr<kernel_t>(out);
    a.lse = kptr<cpu::compute_t<kernel_t>>(lse);
    cpu::attention_kernels<kernel_t>().attention_forward(a);
  });
  return {out, lse};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
scaled_dot_product_attention_backward_cpu(const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
                  const at::Tensor& value, const at::Tensor& out, const at::Tensor& logsumexp,
                  const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal,
                  std::optional<double> scale, bool enable_gqa,
                  const std::optional<at::Tensor>& rng, std::array<bool, 3> mask) {
  const char* op = "scaled_dot_product_attention_backward";
  Prepared p = prepare(query, key, value, attn_mask, dropout_p, scale, enable_gqa, rng, op);
  const AttentionLayout& lay = p.lay;
  const auto out_shape = batch_with(lay, {lay.L, lay.Ev});
  const auto lse_shape = batch_with(lay, {lay.L});
  for (const at::Tensor* t : {&grad_out, &out, &logsumexp}) {
    const char* name = t == &grad_out ? "grad_out" : t == &out ? "out" : "logsumexp";
    if (t == &logsumexp) {
      TORCH_CHECK_TYPE(t->scalar_type() == lse_dtype(query), "fusedops.", op, ": logsumexp must be ",
                       lse_dtype(query), " for a ", query.scalar_type(), " query, got ", t->scalar_type());
    } else {
      check_cpu_float_or_bf16(*t, op, name);
      check_same_dtype(*t, query, op, name, "query");
    }
    const auto& want = t == &logsumexp ? lse_shape : out_shape;
    FUSEDOPS_CHECK(t->sizes().vec() == want, op, name, " must have shape ", shape_str(want),
                   ", got ", shape_str(t->sizes()));
  }
  const at::Tensor go = grad_out.contiguous(), o = out.contiguous(), lse = logsumexp.contiguous();
  std::optional<at::Tensor> dq, dk, dv;
  at::Tensor dk_all, dv_all;
  if (mask[0]) dq = at::empty(batch_with(lay, {lay.L, lay.E}), query.options());
  if (mask[1]) dk_all = at::empty(batch_with(lay, {lay.S, lay.E}), query.options());
  if (mask[2]) dv_all = at::empty(batch_with(lay, {lay.S, lay.Ev}), query.options());
  if (mask[0] || mask[1] || mask[2]) {
    FUSEDOPS_DISPATCH_CPU_FLOAT(query.scalar_type(), op, [&] {
      AttentionArgs<kernel_t> a = kernel_args<kernel_t>(p, dropout_p, is_causal);
      a.out = kptr<kernel_t>(o);
      a.lse = kptr<cpu::compute_t<kernel_t>>(lse);
      a.dout = kptr<kernel_t>(go);
      a.dq = mask[0] ? kptr<kernel_t>(*dq) : nullptr;
      a.dk = mask[1] ? kptr<kernel_t>(dk_all) : nullptr;
      a.dv = mask[2] ? kptr<kernel_t>(dv_all) : nullptr;
      cpu::attention_kernels<kernel_t>().attention_backward(a);
    });
  }
  if (mask[1]) dk = lay.kv_shared ? reduce_kv_grad(dk_all, key, enable_gqa) : dk_all;
  if (mask[2]) dv = lay.kv_shared ? reduce_kv_grad(dv_all, value, enable_gqa) : dv_all;
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedops, CPU, m) { FUSEDOPS_ATTENTION_OPS(FUSEDOPS_IMPL_CPU) }

}  // namespace fusedops
