// Shape rules of scaled_dot_product_attention shared by the CPU, CUDA and simulator bindings:
// argument checks (dtype and device are each backend's), the flattened (batch, head) index
// with each operand's element offset per index (broadcast batch dimensions and grouped-query
// heads need no copies), and the reduction of per-query-head key/value gradients.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <vector>

#include "common/checks.h"

namespace fusedops {

struct AttentionLayout {
  std::vector<int64_t> batch_shape;  // query's dimensions before [L, E]
  int64_t batch = 1, L = 0, S = 0, E = 0, Ev = 0;
  std::vector<int64_t> q_off, k_off, v_off, m_off;
  int64_t m_rs = 0, m_cs = 0;
  bool kv_shared = false;  // some key/value head serves several query (batch, head) pairs
  double scale = 1.0;
};

// q [..., L, E], k [..., S, E], v [..., S, Ev]; k and v batch dimensions equal to q's or 1
// (and, with enable_gqa, a head count (dim -3) dividing q's); mask broadcastable to
// [..., L, S].
inline void check_attention_shapes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const std::optional<at::Tensor>& mask, bool enable_gqa,
                                   double dropout_p, const char* op) {
  FUSEDOPS_CHECK(q.dim() >= 2, op, "query must have at least 2 dimensions [..., L, E], got shape ",
                 shape_str(q.sizes()));
  FUSEDOPS_CHECK(k.dim() == q.dim() && v.dim() == q.dim(), op,
                 "query, key and value must have the same number of dimensions, got shapes ",
                 shape_str(q.sizes()), ", ", shape_str(k.sizes()), " and ", shape_str(v.sizes()));
  FUSEDOPS_CHECK(k.size(-1) == q.size(-1), op, "key's head dim (", k.size(-1),
                 ") must equal query's (", q.size(-1), "); query shape ", shape_str(q.sizes()),
                 ", key shape ", shape_str(k.sizes()));
  FUSEDOPS_CHECK(v.size(-2) == k.size(-2), op, "value's sequence length (", v.size(-2),
                 ") must equal key's (", k.size(-2), "); key shape ", shape_str(k.sizes()),
                 ", value shape ", shape_str(v.sizes()));
  const int64_t nd = q.dim();
  for (int64_t d = 0; d + 2 < nd; ++d) {
    const bool head = enable_gqa && d == nd - 3;
    for (const at::Tensor* t : {&k, &v}) {
      const char* name = t == &k ? "key" : "value";
      if (head) {
        FUSEDOPS_CHECK(t->size(d) > 0 && q.size(d) % t->size(d) == 0, op, "with enable_gqa, ",
                       name, "'s head count (", t->size(d), ") must divide query's (", q.size(d),
                       "); query shape ", shape_str(q.sizes()), ", ", name, " shape ",
                       shape_str(t->sizes()));
      } else {
        FUSEDOPS_CHECK(t->size(d) == q.size(d) || t->size(d) == 1, op, name, "'s dimension ", d,
                       " (", t->size(d), ") must equal query's (", q.size(d),
                       ") or be 1; query shape ", shape_str(q.sizes()), ", ", name, " shape ",
                       shape_str(t->sizes()),
                       (d == nd - 3 ? " (different head counts need enable_gqa=True)" : ""));
      }
    }
  }
  FUSEDOPS_CHECK(dropout_p >= 0.0 && dropout_p <= 1.0, op, "dropout_p must be in [0, 1], got ",
                 dropout_p);
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK_TYPE(m.scalar_type() == at::kBool || m.scalar_type() == q.scalar_type(),
                     "fusedops.", op, ": attn_mask must be bool or have query's dtype (",
                     q.scalar_type(), "), got ", m.scalar_type());
    std::vector<int64_t> target(q.sizes().begin(), q.sizes().end());
    target.back() = k.size(-2);
    bool ok = m.dim() <= nd;
    for (int64_t i = 1; ok && i <= m.dim(); ++i) {
      const int64_t s = m.size(m.dim() - i), t = target[size_t(nd - i)];
      ok = s == t || s == 1;
    }
    FUSEDOPS_CHECK(ok, op, "attn_mask of shape ", shape_str(m.sizes()),
                   " does not broadcast to [..., L, S] = ", shape_str(target));
  }
}

inline int64_t offset_of(const at::Tensor& t, const std::vector<int64_t>& idx) {
  int64_t off = 0;
  for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * t.stride(int64_t(d));
  return off;
}

// The layout of checked operands; q, k, v must have a contiguous last dimension, and the mask
// (if any) is expanded to [..., L, S] first (stride 0 where it broadcasts).
inline AttentionLayout attention_layout(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor* mask_expanded,
                                        bool enable_gqa, std::optional<double> scale) {
  AttentionLayout lay;
  const int64_t nd = q.dim();
  lay.batch_shape.assign(q.sizes().begin(), q.sizes().end() - 2);
  lay.L = q.size(-2);
  lay.E = q.size(-1);
  lay.S = k.size(-2);
  lay.Ev = v.size(-1);
  lay.scale = scale.has_value() ? *scale : (lay.E > 0 ? 1.0 / std::sqrt(double(lay.E)) : 1.0);
  for (int64_t s : lay.batch_shape) lay.batch *= s;
  lay.q_off.resize(size_t(lay.batch));
  lay.k_off.resize(size_t(lay.batch));
  lay.v_off.resize(size_t(lay.batch));
  if (mask_expanded) {
    lay.m_off.resize(size_t(lay.batch));
    lay.m_rs = mask_expanded->stride(-2);
    lay.m_cs = mask_expanded->stride(-1);
  }
  const size_t nbd = lay.batch_shape.size();
  for (size_t d = 0; d < nbd; ++d) {
    const bool head = enable_gqa && int64_t(d) == nd - 3;
    if (k.size(int64_t(d)) != q.size(int64_t(d)) || v.size(int64_t(d)) != q.size(int64_t(d)) ||
        (head && (k.size(int64_t(d)) != q.size(int64_t(d)))))
      lay.kv_shared = true;
  }
  std::vector<int64_t> idx(nbd, 0), ki(nbd), vi(nbd);
  for (int64_t b = 0; b < lay.batch; ++b) {
    for (size_t d = 0; d < nbd; ++d) {
      const int64_t qs = q.size(int64_t(d)), ks = k.size(int64_t(d)), vs = v.size(int64_t(d));
      const bool head = enable_gqa && int64_t(d) == nd - 3;
      ki[d] = head ? idx[d] / (qs / ks) : (ks == 1 ? 0 : idx[d]);
      vi[d] = head ? idx[d] / (qs / vs) : (vs == 1 ? 0 : idx[d]);
    }
    lay.q_off[size_t(b)] = offset_of(q, idx);
    lay.k_off[size_t(b)] = offset_of(k, ki);
    lay.v_off[size_t(b)] = offset_of(v, vi);
    if (mask_expanded) lay.m_off[size_t(b)] = offset_of(*mask_expanded, idx);
    for (size_t d = nbd; d-- > 0;) {  // next multi-index
      if (++idx[d] < lay.batch_shape[d]) break;
      idx[d] = 0;
    }
  }
  return lay;
}

// Gradient [batch..., S, X] per query (batch, head) -> the shape of `like` (key or value):
// summed over the query heads of a group, then over broadcast dimensions.
inline at::Tensor reduce_kv_grad(const at::Tensor& per_query, const at::Tensor& like,
                                 bool enable_gqa) {
  at::Tensor g = per_query;
  const int64_t nd = like.dim();
  if (enable_gqa && nd >= 3 && like.size(-3) != g.size(-3)) {
    std::vector<int64_t> s(g.sizes().begin(), g.sizes().end());
    const int64_t hk = like.size(-3), group = s[size_t(nd - 3)] / hk;
    s[size_t(nd - 3)] = group;
    s.insert(s.begin() + (nd - 3), hk);
    g = g.view(s).sum(nd - 2);
  }
  if (g.sizes() != like.sizes()) g = g.sum_to_size(like.sizes());
  return g.contiguous();
}

// The operands as both backends' kernels read them: q, k and v with a contiguous last dimension
// (copied only where it is strided; other strides are the layout's offsets), the mask expanded
// to [..., L, S] (stride 0 where it broadcasts), their layout, and the dropout stream (seed,
// offset) read from the rng tensor. Call after check_attention_shapes.
struct AttentionOperands {
  at::Tensor q, k, v, mask;  // mask undefined when there is none
  AttentionLayout lay;
  uint64_t seed = 0, offset = 0;
};

inline AttentionOperands attention_operands(const at::Tensor& query, const at::Tensor& key,
                                            const at::Tensor& value, const std::optional<at::Tensor>& attn_mask,
                                            double dropout_p, std::optional<double> scale, bool enable_gqa,
                                            const std::optional<at::Tensor>& rng, const char* op) {
  const auto rows_contiguous = [](const at::Tensor& t) {
    return t.size(-1) <= 1 || t.stride(-1) == 1 ? t : t.contiguous();
  };
  AttentionOperands p;
  p.q = rows_contiguous(query);
  p.k = rows_contiguous(key);
  p.v = rows_contiguous(value);
  if (attn_mask.has_value()) {
    std::vector<int64_t> target(query.sizes().begin(), query.sizes().end());
    target.back() = key.size(-2);
    p.mask = attn_mask->expand(target);
  }
  p.lay = attention_layout(p.q, p.k, p.v, p.mask.defined() ? &p.mask : nullptr, enable_gqa, scale);
  if (dropout_p > 0.0) {
    FUSEDOPS_CHECK(rng.has_value(), op, "dropout_p > 0 needs the rng tensor (seed, offset)");
    FUSEDOPS_CHECK(rng->scalar_type() == at::kLong && rng->numel() == 2 && rng->device().is_cpu(),
                   op, "rng must be a CPU int64 tensor of 2 elements (seed, offset), got ",
                   rng->scalar_type(), " of shape ", shape_str(rng->sizes()), " on ", rng->device());
    const at::Tensor r = rng->contiguous();
    p.seed = uint64_t(r.data_ptr<int64_t>()[0]);
    p.offset = uint64_t(r.data_ptr<int64_t>()[1]);
  }
  return p;
}

}  // namespace fusedops
