// Activation forward/derivative on registers and on rows, written once over a register trait.
// fp32 SIMD traits use the vector math of math.h; other traits go element by element through
// <cmath> (include <cmath> before selecting the instruction set).
#pragma once

#include "../activation.h"
#include "math.h"
#include "vec.h"

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

template <class V>
inline typename V::R act_vec(typename V::R x, Activation a) {
  using R = typename V::R;
  const R half = V::set1(0.5f), one = V::set1(1.0f);
  switch (a) {
    case Activation::relu: return V::max(V::zero(), x);  // max(0, NaN) is NaN, as torch
    case Activation::gelu:
      return V::mul(V::mul(half, x), V::add(one, verf<V>(V::mul(x, V::set1(float(kSqrtHalf))))));
    case Activation::gelu_tanh: {
      R x3 = V::mul(V::mul(x, x), x);
      R u = V::mul(V::set1(float(kSqrt2OverPi)), V::fmadd(V::set1(float(kGeluTanhC)), x3, x));
      return V::mul(V::mul(half, x), V::add(one, vtanh<V>(u)));
    }
    default: return x;
  }
}

template <class V>
inline typename V::R act_grad_vec(typename V::R z, Activation a) {
  using R = typename V::R;
  const R half = V::set1(0.5f), one = V::set1(1.0f);
  switch (a) {
    case Activation::relu: return V::select(V::gt(z, V::zero()), one, V::zero());
    case Activation::gelu: {
      R cdf = V::mul(half, V::add(one, verf<V>(V::mul(z, V::set1(float(kSqrtHalf))))));
      R pdf = V::mul(V::set1(float(kInvSqrt2Pi)), vexp<V>(V::mul(V::set1(-0.5f), V::mul(z, z))));
      return V::fmadd(z, pdf, cdf);
    }
    case Activation::gelu_tanh: {
      R z2 = V::mul(z, z);
      R u = V::mul(V::set1(float(kSqrt2OverPi)), V::fmadd(V::mul(V::set1(float(kGeluTanhC)), z2), z, z));
      R t = vtanh<V>(u);
      R du = V::mul(V::set1(float(kSqrt2OverPi)), V::fmadd(V::set1(float(3 * kGeluTanhC)), z2, one));
      R left = V::mul(half, V::add(one, t));
      R right = V::mul(V::mul(V::mul(half, z), V::sub(one, V::mul(t, t))), du);
      return V::add(left, right);
    }
    default: return one;
  }
}

// Row epilogue of a GEMM tile: c[j] += bias (a column vector `bias_col`, else the scalar
// `bias_row`); pre[j] = c[j] when `pre` is given; c[j] = act(c[j]).
template <class V>
inline void epilogue_row(typename V::T* c, int n, const typename V::T* bias_col,
                         typename V::T bias_row, Activation act, typename V::T* pre) {
  using T = typename V::T;
  using R = typename V::R;
  if constexpr (V::fast_math) {
    int j = 0;
    auto body = [&](T* cp, const T* bp, T* pp) {
      R x = V::loadu(cp);
      x = V::add(x, bp ? V::loadu(bp) : V::set1(bias_row));
      if (pp) V::storeu(pp, x);
      V::storeu(cp, act_vec<V>(x, act));
    };
    for (; j + V::W <= n; j += V::W)
      body(c + j, bias_col ? bias_col + j : nullptr, pre ? pre + j : nullptr);
    if (j < n) {  // tail through a full-width scratch so it sees the same approximations
      alignas(64) T cs[V::W] = {}, bs[V::W] = {}, ps[V::W];
      const int r = n - j;
      for (int t = 0; t < r; ++t) {
        cs[t] = c[j + t];
        if (bias_col) bs[t] = bias_col[j + t];
      }
      body(cs, bias_col ? bs : nullptr, pre ? ps : nullptr);
      for (int t = 0; t < r; ++t) {
        c[j + t] = cs[t];
        if (pre) pre[j + t] = ps[t];
      }
    }
  } else {
    for (int j = 0; j < n; ++j) {
      T x = c[j] + (bias_col ? bias_col[j] : bias_row);
      if (pre) pre[j] = x;
      c[j] = activation_reference<T>(x, act);
    }
  }
}

// dz[j] = g[j * gs] * act'(z[j]) over a row; g may be strided (expanded gradients have gs 0).
template <class V>
inline void act_backward_row(const typename V::T* g, int64_t gs, const typename V::T* z,
                             typename V::T* dz, int64_t n, Activation act) {
  using T = typename V::T;
  if constexpr (V::fast_math) {
    int64_t j = 0;
    if (gs == 1) {
      for (; j + V::W <= n; j += V::W)
        V::storeu(dz + j, V::mul(V::loadu(g + j), act_grad_vec<V>(V::loadu(z + j), act)));
    }
    for (; j < n; j += V::W) {
      alignas(64) T gsr[V::W] = {}, zs[V::W] = {}, out[V::W];
      const int64_t r = n - j < V::W ? n - j : V::W;
      for (int64_t t = 0; t < r; ++t) {
        gsr[t] = g[(j + t) * gs];
        zs[t] = z[j + t];
      }
      V::store(out, V::mul(V::load(gsr), act_grad_vec<V>(V::load(zs), act)));
      for (int64_t t = 0; t < r; ++t) dz[j + t] = out[t];
    }
  } else {
    for (int64_t j = 0; j < n; ++j) dz[j] = g[j * gs] * activation_grad_reference<T>(z[j], act);
  }
}

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
