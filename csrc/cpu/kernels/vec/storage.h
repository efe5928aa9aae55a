// Storage types: a kernel written over a register trait V (fp32 or fp64 arithmetic) and a
// storage type S of its tensors reads and writes S through these, so one template serves
// fp32, fp64 and bf16 tensors. S is V::T (no conversion) or bf16 bits (uint16_t, fp32 traits
// only): loads widen exactly, stores round to nearest even. Statistics, sums and parameters a
// kernel keeps in V::T stay there; only the tensors it streams take S.
#pragma once
#include <type_traits>

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

template <class V, class S>
inline constexpr bool is_bf16_storage = !std::is_same_v<S, typename V::T>;

template <class V, class S>
inline typename V::R ld(const S* p) {
  if constexpr (is_bf16_storage<V, S>) return V::load_bf16(p);
  else return V::loadu(p);
}
// The first n (< W) elements, the other lanes zero.
template <class V, class S>
inline typename V::R ld_part(const S* p, int n) {
  if constexpr (is_bf16_storage<V, S>) return V::load_bf16_partial(p, n);
  else return V::load_partial(p, n);
}
template <class V, class S>
inline void st(S* p, typename V::R r) {
  if constexpr (is_bf16_storage<V, S>) V::store_bf16(p, r);
  else V::storeu(p, r);
}
template <class V, class S>
inline void st_part(S* p, typename V::R r, int n) {
  if constexpr (is_bf16_storage<V, S>) V::store_bf16_partial(p, r, n);
  else V::store_partial(p, r, n);
}
// n elements (1 <= n <= W): whole or partial.
template <class V, class S>
inline typename V::R ld_n(const S* p, int64_t n) {
  return n >= V::W ? ld<V>(p) : ld_part<V>(p, int(n));
}
template <class V, class S>
inline void st_n(S* p, typename V::R r, int64_t n) {
  if (n >= V::W) st<V>(p, r);
  else st_part<V>(p, r, int(n));
}

// Scalars: an element as the arithmetic type T, and back.
template <class T, class S>
inline T to_t(S v) {
  if constexpr (std::is_same_v<S, T>) return v;
  else if constexpr (std::is_same_v<S, uint16_t>) return T(bf16_to_float(v));
  else return T(v);
}
template <class S, class T>
inline S from_t(T v) {
  if constexpr (std::is_same_v<S, T>) return v;
  else if constexpr (std::is_same_v<S, uint16_t>) return float_to_bf16(float(v));
  else return S(v);
}

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
