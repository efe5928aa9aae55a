// Activation and softmax kernels written once over a register trait V (vec.h), instantiated per
// instruction set by activation_ops_<isa>.cpp (see vec/isa_generic.h for the scheme).
//
// fp32 SIMD traits (V::fast_math) use the vector exp/erf/tanh of vec/math.h, with a polynomial
// tanh near zero where 1 - 2/(e^2x + 1) would lose relative accuracy; other traits go element
// by element through <cmath>. Pointwise ops split the elements into one contiguous chunk per
// thread. Softmax over the last dimension (inner == 1) reads a row three times while it sits
// in L1/L2: its maximum, the sum of exp(x - max) (softmax stores the exponentials then), and
// the output. Over another dimension (inner > 1) the same three passes run over D strided
// vectors of W adjacent inner positions, so the SIMD lanes are independent softmaxes.
#pragma once
// (standard headers come from vec/isa_std.h, before the instruction set is selected)

#include "activation_ops.h"
#include "vec/activation_impl.h"

namespace fusedops::cpu::FUSEDOPS_ISA_NS {
namespace act_detail {

constexpr int64_t kMinPerThread = 32768;  // elements per thread below which one thread runs

inline int threads_for(int64_t work) {
  return threads_for_work(double(work), double(kMinPerThread));
}

// Runs body(i0, i1) over [0, n) split into one chunk per thread, chunk edges on 64 elements.
template <class F>
void parallel_chunks(int64_t n, F&& body) {
  const int nt = threads_for(n);
  if (nt <= 1) return body(int64_t(0), n);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), nth = omp_get_num_threads();
    auto edge = [&](int u) { return std::min(n, (u * n / nth + 63) / 64 * 64); };
    body(edge(t), edge(t + 1));
  }
}

// tanh with relative accuracy near zero: an odd Taylor polynomial for |x| < 0.4 (truncation
// below 4e-9 relative there), 1 - 2 / (exp(2|x|) + 1) beyond.
template <class V>
inline typename V::R tanh_accurate(typename V::R x) {
  using R = typename V::R;
  const R x2 = V::mul(x, x);
  R p = V::set1(0.0035921280365724811f);  // 21844 / 6081075
  p = V::fmadd(p, x2, V::set1(-0.0088632355299021966f));
  p = V::fmadd(p, x2, V::set1(0.021869488536155203f));
  p = V::fmadd(p, x2, V::set1(-0.053968253968253968f));
  p = V::fmadd(p, x2, V::set1(0.13333333333333333f));
  p = V::fmadd(p, x2, V::set1(-0.33333333333333333f));
  const R small = V::fmadd(V::mul(p, x2), x, x);
  return V::select(V::gt(V::set1(0.4f), V::abs(x)), small, vtanh<V>(x));
}

template <class V>
inline typename V::R forward_vec(Pointwise f, typename V::R x) {
  const typename V::R one = V::set1(1.0f);
  switch (f) {
    case Pointwise::relu: return act_vec<V>(x, Activation::relu);
    case Pointwise::sigmoid: return V::div(one, V::add(one, vexp<V>(V::sub(V::zero(), x))));
    case Pointwise::tanh: return tanh_accurate<V>(x);
    case Pointwise::gelu: return act_vec<V>(x, Activation::gelu);
    default: return act_vec<V>(x, Activation::gelu_tanh);
  }
}

template <class V>
inline typename V::R backward_vec(Pointwise f, typename V::R g, typename V::R s) {
  using R = typename V::R;
  const R one = V::set1(1.0f);
  switch (f) {
    case Pointwise::relu: {
      // pass g where y > 0 or y is NaN: max(0, y) keeps NaN (the second operand wins when
      // unordered), min(., 1) then turns NaN into 1 and leaves 0 at 0.
      const R step = V::min(V::max(V::zero(), s), one);
      return V::select(V::gt(step, V::zero()), g, V::zero());
    }
    case Pointwise::sigmoid: return V::mul(g, V::mul(s, V::sub(one, s)));
    case Pointwise::tanh: return V::mul(g, V::sub(one, V::mul(s, s)));
    case Pointwise::gelu: return V::mul(g, act_grad_vec<V>(s, Activation::gelu));
    default: return V::mul(g, act_grad_vec<V>(s, Activation::gelu_tanh));
  }
}

template <typename T>
inline T forward_scalar(Pointwise f, T x) {
  switch (f) {
    case Pointwise::relu: return activation_reference<T>(x, Activation::relu);
    case Pointwise::sigmoid: return T(1) / (T(1) + std::exp(-x));
    case Pointwise::tanh: return std::tanh(x);
    case Pointwise::gelu: return activation_reference<T>(x, Activation::gelu);
    default: return activation_reference<T>(x, Activation::gelu_tanh);
  }
}

template <typename T>
inline T backward_scalar(Pointwise f, T g, T s) {
  switch (f) {
    case Pointwise::relu: return (s > T(0) || s != s) ? g : T(0);
    case Pointwise::sigmoid: return g * (s * (T(1) - s));
    case Pointwise::tanh: return g * (T(1) - s * s);
    case Pointwise::gelu: return g * activation_grad_reference<T>(s, Activation::gelu);
    default: return g * activation_grad_reference<T>(s, Activation::gelu_tanh);
  }
}

}  // namespace act_detail

template <class V, class S>
void pointwise_forward(Pointwise f, int64_t n, const S* x, S* y) {
  using T = typename V::T;
  constexpr int W = V::W;
  act_detail::parallel_chunks(n, [&](int64_t i0, int64_t i1) {
    if constexpr (V::fast_math) {
      int64_t i = i0;
      for (; i + W <= i1; i += W) st<V>(y + i, act_detail::forward_vec<V>(f, ld<V>(x + i)));
      if (i < i1) {
        const int r = int(i1 - i);
        st_part<V>(y + i, act_detail::forward_vec<V>(f, ld_part<V>(x + i, r)), r);
      }
    } else {
      for (int64_t i = i0; i < i1; ++i) y[i] = from_t<S>(act_detail::forward_scalar<T>(f, to_t<T>(x[i])));
    }
  });
}

template <class V, class S>
void pointwise_backward(Pointwise f, int64_t n, const S* g, const S* s, S* dx) {
  using T = typename V::T;
  constexpr int W = V::W;
  act_detail::parallel_chunks(n, [&](int64_t i0, int64_t i1) {
    if constexpr (V::fast_math) {
      int64_t i = i0;
      for (; i + W <= i1; i += W)
        st<V>(dx + i, act_detail::backward_vec<V>(f, ld<V>(g + i), ld<V>(s + i)));
      if (i < i1) {
        const int r = int(i1 - i);
        st_part<V>(dx + i, act_detail::backward_vec<V>(f, ld_part<V>(g + i, r), ld_part<V>(s + i, r)), r);
      }
    } else {
      for (int64_t i = i0; i < i1; ++i)
        dx[i] = from_t<S>(act_detail::backward_scalar<T>(f, to_t<T>(g[i]), to_t<T>(s[i])));
    }
  });
}

namespace act_detail {

// Runs body(u) for u in [0, units), one contiguous range of units per thread.
template <class F>
void parallel_units(int64_t units, int64_t work, F&& body) {
  const int nt = std::min<int64_t>(threads_for(work), std::max<int64_t>(units, 1));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), nth = omp_get_num_threads();
    for (int64_t u = t * units / nth, e = (t + 1) * units / nth; u < e; ++u) body(u);
  }
}

// Loads `lanes` (<= W) adjacent elements, the other lanes set to `fill`.
template <class V, class S>
inline typename V::R load_fill(const S* p, int lanes, typename V::T fill) {
  if (lanes == V::W) return ld<V>(p);
  alignas(64) typename V::T buf[V::W];
  for (int l = 0; l < V::W; ++l) buf[l] = l < lanes ? to_t<typename V::T>(p[l]) : fill;
  return V::load(buf);
}

// Softmax of W side-by-side vectors of length D at x[d * stride + lane] (lanes <= W valid;
// stride 1 and lanes 1 for no vector across rows: then the row itself is vectorised by
// softmax_row). Vector path for fp32 SIMD traits. With fp32/fp64 storage softmax keeps the
// exponentials in y between passes; with bf16 storage it recomputes them in the last pass, so
// that each output is rounded once.
template <class V, class S>
void softmax_cols(int64_t D, int64_t stride, int lanes, const S* x, S* y, bool log) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr bool keep = !is_bf16_storage<V, S>;
  const T ninf = -std::numeric_limits<T>::infinity();
  R m = V::set1(ninf);
  for (int64_t d = 0; d < D; ++d) m = V::max(m, load_fill<V>(x + d * stride, lanes, ninf));
  R s = V::zero();
  for (int64_t d = 0; d < D; ++d) {
    const R e = vexp<V>(V::sub(load_fill<V>(x + d * stride, lanes, ninf), m));
    if (!log && keep) st_n<V>(y + d * stride, e, lanes);
    s = V::add(s, e);
  }
  if (log) {
    alignas(64) T sb[V::W];
    V::store(sb, s);
    for (int l = 0; l < V::W; ++l) sb[l] = std::log(sb[l]);
    const R ls = V::load(sb);
    for (int64_t d = 0; d < D; ++d)
      st_n<V>(y + d * stride, V::sub(V::sub(load_fill<V>(x + d * stride, lanes, T(0)), m), ls), lanes);
  } else {
    const R inv = V::div(V::set1(T(1)), s);
    for (int64_t d = 0; d < D; ++d) {
      const R e = keep ? load_fill<V>(y + d * stride, lanes, T(0))
                       : vexp<V>(V::sub(load_fill<V>(x + d * stride, lanes, ninf), m));
      st_n<V>(y + d * stride, V::mul(e, inv), lanes);
    }
  }
}

// Softmax of one contiguous row, vectorised along it.
template <class V, class S>
void softmax_row(int64_t D, const S* x, S* y, bool log) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  constexpr bool keep = !is_bf16_storage<V, S>;
  const T ninf = -std::numeric_limits<T>::infinity();
  R mv = V::set1(ninf);
  int64_t j = 0;
  for (; j + W <= D; j += W) mv = V::max(mv, ld<V>(x + j));
  T m = V::hmax(mv);
  for (; j < D; ++j) m = to_t<T>(x[j]) > m ? to_t<T>(x[j]) : m;
  const R mb = V::set1(m);
  R s0 = V::zero(), s1 = V::zero();
  for (j = 0; j + 2 * W <= D; j += 2 * W) {
    const R e0 = vexp<V>(V::sub(ld<V>(x + j), mb)), e1 = vexp<V>(V::sub(ld<V>(x + j + W), mb));
    if (!log && keep) st<V>(y + j, e0), st<V>(y + j + W, e1);
    s0 = V::add(s0, e0);
    s1 = V::add(s1, e1);
  }
  for (; j < D; j += W) {
    const int lanes = int(std::min<int64_t>(W, D - j));
    const R e = vexp<V>(V::sub(load_fill<V>(x + j, lanes, ninf), mb));
    if (!log && keep) st_n<V>(y + j, e, lanes);
    s0 = V::add(s0, e);
  }
  const T s = V::hsum(V::add(s0, s1));
  if (log) {
    const R ls = V::set1(std::log(s));
    for (j = 0; j < D; j += W) {
      const int lanes = int(std::min<int64_t>(W, D - j));
      st_n<V>(y + j, V::sub(V::sub(load_fill<V>(x + j, lanes, T(0)), mb), ls), lanes);
    }
  } else {
    const R inv = V::set1(T(1) / s);
    for (j = 0; j < D; j += W) {
      const int lanes = int(std::min<int64_t>(W, D - j));
      const R e = keep ? load_fill<V>(y + j, lanes, T(0)) : vexp<V>(V::sub(load_fill<V>(x + j, lanes, ninf), mb));
      st_n<V>(y + j, V::mul(e, inv), lanes);
    }
  }
}

// Softmax of one vector of length D at x[d * stride], element by element (<cmath>).
template <typename T, class S>
void softmax_scalar(int64_t D, int64_t stride, const S* x, S* y, bool log) {
  auto xv = [&](int64_t d) { return to_t<T>(x[d * stride]); };
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t d = 0; d < D; ++d) m = xv(d) > m ? xv(d) : m;
  T s = T(0);  // NaN when the row holds NaN (which the comparisons above skip): exp(NaN) is NaN
  for (int64_t d = 0; d < D; ++d) s += std::exp(xv(d) - m);
  if (log) {
    const T ls = std::log(s);
    for (int64_t d = 0; d < D; ++d) y[d * stride] = from_t<S>((xv(d) - m) - ls);
  } else {
    const T inv = T(1) / s;
    for (int64_t d = 0; d < D; ++d) y[d * stride] = from_t<S>(std::exp(xv(d) - m) * inv);
  }
}

// Gradient of W side-by-side vectors (or one contiguous row with stride 1, lanes W: then
// `row` walks it in steps of W).
template <class V, class S>
void softmax_backward_vec(int64_t D, int64_t stride, int lanes, const S* g, const S* y, S* dx,
                          bool log, bool row) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const int64_t n = row ? (D + W - 1) / W : D;  // vectors
  const int64_t step = row ? W : stride;
  auto lanes_at = [&](int64_t k) { return row ? int(std::min<int64_t>(W, D - k * W)) : lanes; };
  R s = V::zero();
  for (int64_t k = 0; k < n; ++k) {
    const int l = lanes_at(k);
    const R gv = load_fill<V>(g + k * step, l, T(0));
    s = log ? V::add(s, gv) : V::fmadd(gv, load_fill<V>(y + k * step, l, T(0)), s);
  }
  if (row) s = V::set1(V::hsum(s));
  for (int64_t k = 0; k < n; ++k) {
    const int l = lanes_at(k);
    const R gv = load_fill<V>(g + k * step, l, T(0)), yv = load_fill<V>(y + k * step, l, T(0));
    const R out = log ? V::sub(gv, V::mul(vexp<V>(yv), s)) : V::mul(yv, V::sub(gv, s));
    st_n<V>(dx + k * step, out, l);
  }
}

template <typename T, class S>
void softmax_backward_scalar(int64_t D, int64_t stride, const S* g, const S* y, S* dx, bool log) {
  auto gv = [&](int64_t d) { return to_t<T>(g[d * stride]); };
  auto yv = [&](int64_t d) { return to_t<T>(y[d * stride]); };
  T s = T(0);
  for (int64_t d = 0; d < D; ++d) s += log ? gv(d) : gv(d) * yv(d);
  for (int64_t d = 0; d < D; ++d)
    dx[d * stride] = from_t<S>(log ? gv(d) - std::exp(yv(d)) * s : yv(d) * (gv(d) - s));
}

}  // namespace act_detail

template <class V, class S>
void softmax_forward(int64_t outer, int64_t D, int64_t inner, const S* x, S* y, bool log) {
  constexpr int W = V::W;
  if (outer <= 0 || D <= 0 || inner <= 0) return;
  const int64_t work = outer * D * inner;
  if constexpr (V::fast_math) {
    if (inner == 1)
      return act_detail::parallel_units(outer, work, [&](int64_t o) {
        act_detail::softmax_row<V>(D, x + o * D, y + o * D, log);
      });
    const int64_t blocks = (inner + W - 1) / W;
    act_detail::parallel_units(outer * blocks, work, [&](int64_t u) {
      const int64_t o = u / blocks, j = (u % blocks) * W;
      const int64_t off = o * D * inner + j;
      act_detail::softmax_cols<V>(D, inner, int(std::min<int64_t>(W, inner - j)), x + off, y + off, log);
    });
  } else {
    act_detail::parallel_units(outer * inner, work, [&](int64_t u) {
      const int64_t off = (u / inner) * D * inner + u % inner;
      act_detail::softmax_scalar<typename V::T>(D, inner, x + off, y + off, log);
    });
  }
}

template <class V, class S>
void softmax_backward(int64_t outer, int64_t D, int64_t inner, const S* g, const S* y, S* dx,
                      bool log) {
  constexpr int W = V::W;
  if (outer <= 0 || D <= 0 || inner <= 0) return;
  const int64_t work = outer * D * inner;
  if constexpr (V::fast_math) {
    if (inner == 1)
      return act_detail::parallel_units(outer, work, [&](int64_t o) {
        const int64_t off = o * D;
        act_detail::softmax_backward_vec<V>(D, 1, W, g + off, y + off, dx + off, log, true);
      });
    const int64_t blocks = (inner + W - 1) / W;
    act_detail::parallel_units(outer * blocks, work, [&](int64_t u) {
      const int64_t o = u / blocks, j = (u % blocks) * W;
      const int64_t off = o * D * inner + j;
      act_detail::softmax_backward_vec<V>(D, inner, int(std::min<int64_t>(W, inner - j)), g + off,
                                          y + off, dx + off, log, false);
    });
  } else {
    act_detail::parallel_units(outer * inner, work, [&](int64_t u) {
      const int64_t off = (u / inner) * D * inner + u % inner;
      act_detail::softmax_backward_scalar<typename V::T>(D, inner, g + off, y + off, dx + off, log);
    });
  }
}

// ---- SwiGLU ---------------------------------------------------------------------------------
// Rows split over threads in contiguous ranges; each element is independent, so the result is
// the same for any thread count. fp32 SIMD traits use vexp; others <cmath>.

namespace act_detail {

template <class V>
inline typename V::R sigmoid_vec(typename V::R a) {
  const typename V::R one = V::set1(1.0f);
  return V::div(one, V::add(one, vexp<V>(V::sub(V::zero(), a))));
}

template <class V, class S>
inline void swiglu_row(int64_t N, const S* a, const S* b, S* y) {
  using T = typename V::T;
  constexpr int W = V::W;
  if constexpr (V::fast_math) {
    for (int64_t j = 0; j < N; j += W) {
      const int64_t n = std::min<int64_t>(W, N - j);
      const typename V::R av = ld_n<V>(a + j, n);
      st_n<V>(y + j, V::mul(V::mul(av, sigmoid_vec<V>(av)), ld_n<V>(b + j, n)), n);
    }
  } else {
    for (int64_t j = 0; j < N; ++j) {
      const T av = to_t<T>(a[j]);
      y[j] = from_t<S>(av / (T(1) + std::exp(-av)) * to_t<T>(b[j]));
    }
  }
}

template <class V, class S>
inline void swiglu_backward_row(int64_t N, const S* g, const S* a, const S* b, S* da, S* db) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  if constexpr (V::fast_math) {
    const R one = V::set1(1.0f);
    for (int64_t j = 0; j < N; j += W) {
      const int64_t n = std::min<int64_t>(W, N - j);
      const R gv = ld_n<V>(g + j, n), av = ld_n<V>(a + j, n), sg = sigmoid_vec<V>(av);
      if (db) st_n<V>(db + j, V::mul(gv, V::mul(av, sg)), n);
      if (da) {
        // g b sig (1 + a (1 - sig))
        const R d = V::mul(sg, V::fmadd(av, V::sub(one, sg), one));
        st_n<V>(da + j, V::mul(V::mul(gv, ld_n<V>(b + j, n)), d), n);
      }
    }
  } else {
    for (int64_t j = 0; j < N; ++j) {
      const T gv = to_t<T>(g[j]), av = to_t<T>(a[j]), sg = T(1) / (T(1) + std::exp(-av));
      if (db) db[j] = from_t<S>(gv * (av * sg));
      if (da) da[j] = from_t<S>(gv * to_t<T>(b[j]) * (sg * (av * (T(1) - sg) + T(1))));
    }
  }
}

}  // namespace act_detail

template <class V, class S>
void swiglu_forward(int64_t M, int64_t N, const S* a, int64_t lda, const S* b, int64_t ldb, S* y,
                    int64_t ldy) {
  if (M <= 0 || N <= 0) return;
  act_detail::parallel_units(M, M * N, [&](int64_t i) {
    act_detail::swiglu_row<V>(N, a + i * lda, b + i * ldb, y + i * ldy);
  });
}

template <class V, class S>
void swiglu_backward(int64_t M, int64_t N, const S* g, int64_t ldg, const S* a, int64_t lda,
                     const S* b, int64_t ldb, S* da, S* db) {
  if (M <= 0 || N <= 0 || (!da && !db)) return;
  act_detail::parallel_units(M, M * N, [&](int64_t i) {
    act_detail::swiglu_backward_row<V>(N, g + i * ldg, a + i * lda, b + i * ldb,
                                       da ? da + i * N : nullptr, db ? db + i * N : nullptr);
  });
}

// Entry points for activation_ops.cpp, one set per instruction set and storage type (bf16
// tensors compute on the fp32 trait).
#define FUSEDOPS_ACT_VEC(T) \
  std::conditional_t<sizeof(compute_t<T>) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>

template <typename T>
void pointwise_forward_run(Pointwise f, int64_t n, const T* x, T* y) {
  pointwise_forward<FUSEDOPS_ACT_VEC(T)>(f, n, x, y);
}
template <typename T>
void pointwise_backward_run(Pointwise f, int64_t n, const T* g, const T* s, T* dx) {
  pointwise_backward<FUSEDOPS_ACT_VEC(T)>(f, n, g, s, dx);
}
template <typename T>
void softmax_forward_run(int64_t outer, int64_t D, int64_t inner, const T* x, T* y, bool log) {
  softmax_forward<FUSEDOPS_ACT_VEC(T)>(outer, D, inner, x, y, log);
}
template <typename T>
void softmax_backward_run(int64_t outer, int64_t D, int64_t inner, const T* g, const T* y, T* dx,
                          bool log) {
  softmax_backward<FUSEDOPS_ACT_VEC(T)>(outer, D, inner, g, y, dx, log);
}
template <typename T>
void swiglu_forward_run(int64_t M, int64_t N, const T* a, int64_t lda, const T* b, int64_t ldb, T* y,
                        int64_t ldy) {
  swiglu_forward<FUSEDOPS_ACT_VEC(T)>(M, N, a, lda, b, ldb, y, ldy);
}
template <typename T>
void swiglu_backward_run(int64_t M, int64_t N, const T* g, int64_t ldg, const T* a, int64_t lda,
                         const T* b, int64_t ldb, T* da, T* db) {
  swiglu_backward<FUSEDOPS_ACT_VEC(T)>(M, N, g, ldg, a, lda, b, ldb, da, db);
}
#undef FUSEDOPS_ACT_VEC

template <typename T>
ActivationKernels<T> activation_table() {
  return {&pointwise_forward_run<T>, &pointwise_backward_run<T>, &softmax_forward_run<T>,
          &softmax_backward_run<T>,  &swiglu_forward_run<T>,    &swiglu_backward_run<T>};
}
template ActivationKernels<float> activation_table<float>();
template ActivationKernels<double> activation_table<double>();
template ActivationKernels<bf16_t> activation_table<bf16_t>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
