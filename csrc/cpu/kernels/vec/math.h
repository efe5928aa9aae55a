// Vectorised exp / erf / tanh and the activation functions built on them, written once over a
// register trait (vec.h). fp32 only: the float traits set `fast_math`; double and the portable
// path use <cmath> element by element (fp64 exists for gradient checks, not speed).
//
// Accuracy (checked against <cmath> in tests/csrc/test_gemm.cpp): exp within 2 ulp on
// [-87, 88], erf within 4e-7 absolute, tanh within 2e-7 absolute.
#pragma once

#ifndef FUSEDOPS_ISA_NS
#error "define FUSEDOPS_ISA_NS before including math.h"
#endif

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

// exp(x): x = n ln2 + r with |r| <= ln2/2, a degree-6 polynomial for exp(r), 2^n from the
// exponent bits. Inputs below -87.3 (and -inf) give 0, inputs above 88.7 (and +inf) give +inf,
// NaN gives NaN (the clamps take x as the operand that max/min pass through on NaN).
template <class V>
inline typename V::R vexp(typename V::R x) {
  using R = typename V::R;
  const R lo = V::set1(-87.33654f), hi = V::set1(88.0f);
  R xc = V::min(hi, V::max(lo, x));
  R n = V::round(V::mul(xc, V::set1(1.44269504088896341f)));
  R r = V::fmadd(n, V::set1(-0.693359375f), xc);
  r = V::fmadd(n, V::set1(2.12194440e-4f), r);
  R p = V::set1(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
  p = V::fmadd(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  R y = V::mul(p, V::pow2i(n));
  y = V::select(V::gt(x, V::set1(88.72283f)), V::set1(__builtin_inff()), y);
  return V::select(V::gt(lo, x), V::zero(), y);
}

// erf(x): odd rational approximation x P(x^2) / Q(x^2) on [-4, 4] (erf is +-1 to fp32
// precision beyond).
template <class V>
inline typename V::R verf(typename V::R x) {
  using R = typename V::R;
  R xc = V::min(V::set1(4.0f), V::max(V::set1(-4.0f), x));  // NaN passes through
  R x2 = V::mul(xc, xc);
  R p = V::set1(-2.72614225801306e-10f);
  p = V::fmadd(p, x2, V::set1(2.77068142495902e-08f));
  p = V::fmadd(p, x2, V::set1(-2.10102402082508e-06f));
  p = V::fmadd(p, x2, V::set1(-5.69250639462346e-05f));
  p = V::fmadd(p, x2, V::set1(-7.34990630326855e-04f));
  p = V::fmadd(p, x2, V::set1(-2.95459980854025e-03f));
  p = V::fmadd(p, x2, V::set1(-1.60960333262415e-02f));
  p = V::mul(p, xc);
  R q = V::set1(-1.45660718464996e-05f);
  q = V::fmadd(q, x2, V::set1(-2.13374055278905e-04f));
  q = V::fmadd(q, x2, V::set1(-1.68282697438203e-03f));
  q = V::fmadd(q, x2, V::set1(-7.37332916720468e-03f));
  q = V::fmadd(q, x2, V::set1(-1.42647390514189e-02f));
  return V::div(p, q);
}

// tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)).
template <class V>
inline typename V::R vtanh(typename V::R x) {
  using R = typename V::R;
  R e = vexp<V>(V::mul(V::abs(x), V::set1(2.0f)));
  R t = V::sub(V::set1(1.0f), V::div(V::set1(2.0f), V::add(e, V::set1(1.0f))));
  return V::copysign(t, x);
}

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
