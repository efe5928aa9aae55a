// Loss kernels written once over a register trait V (vec.h), instantiated per instruction set
// by loss_<isa>.cpp (see vec/isa_generic.h for the scheme).
#pragma once

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

template <class V>
inline typename V::R exp_vec(typename V::R x) {
  if constexpr (V::fast_math) {
    return vexp<V>(x);
  } else {
    using T = typename V::T;
    alignas(64) T t[V::W];
    V::storeu(t, x);
    for (int i = 0; i < V::W; ++i) t[i] = std::exp(t[i]);
    return V::loadu(t);
  }
}

template <typename T>
inline T exp_scalar(T x) {
  return std::exp(x);
}

// Threads for `work` elements of streaming work; one when already inside a parallel region.
inline int loss_threads(int64_t rows, double work) {
  return threads_for_work(work, 32768.0, rows);
}

// sum of f(i) over [0, rows), in double: per chunk fixed by the sizes (parallel.h), the
// chunks added in order, so the same bits for any thread count.
template <class F>
double chunked_sum(int nt, int64_t rows, int64_t cols, F&& f) {
  const int64_t chunks = reduction_chunks(rows, cols, 16384, 64);
  std::vector<double> part(size_t(std::max<int64_t>(chunks, 1)), 0.0);
  parallel_items(nt, rows > 0 ? chunks : 0, [&](int64_t c) {
    double s = 0;
    for (int64_t i = chunk_start(c, chunks, rows), e = chunk_start(c + 1, chunks, rows); i < e; ++i) s += f(i);
    part[size_t(c)] = s;
  });
  double total = 0;
  for (double p : part) total += p;
  return total;
}

// One row of cross-entropy: loss, and the scaled gradient when g != nullptr.
// S: the storage type of the logits, probabilities and gradient (bf16 widens on load and rounds
// the gradient once on store); class weights, row scales and losses are in T.
template <class V, class S = typename V::T>
struct CrossEntropyRow {
  using T = typename V::T;
  using R = typename V::R;
  static constexpr int64_t kBlock = 2048;  // elements per L1 block of the online log-sum-exp

  const CrossEntropyArgs<S>& a;
  double wsum = 0;  // sum of the class weights (C without weights)

  // max of x[0, n) (NaN may be skipped: it reaches the loss through the sum of exps)
  static T block_max(const S* x, int64_t n) {
    const T ninf = -std::numeric_limits<T>::infinity();
    R m0 = V::set1(ninf), m1 = V::set1(ninf);
    int64_t j = 0;
    for (; j + 2 * V::W <= n; j += 2 * V::W) {
      m0 = V::max(m0, ld<V>(x + j));
      m1 = V::max(m1, ld<V>(x + j + V::W));
    }
    for (; j + V::W <= n; j += V::W) m0 = V::max(m0, ld<V>(x + j));
    T m = V::hmax(V::max(m0, m1));
    for (; j < n; ++j) m = to_t<T>(x[j]) > m ? to_t<T>(x[j]) : m;
    return m;
  }

  // sum exp(x - m) over [0, n)
  static T block_sumexp(const S* x, int64_t n, T m) {
    R s0 = V::zero(), s1 = V::zero();
    const R mv = V::set1(m);
    int64_t j = 0;
    for (; j + 2 * V::W <= n; j += 2 * V::W) {
      s0 = V::add(s0, exp_vec<V>(V::sub(ld<V>(x + j), mv)));
      s1 = V::add(s1, exp_vec<V>(V::sub(ld<V>(x + j + V::W), mv)));
    }
    for (; j + V::W <= n; j += V::W) s0 = V::add(s0, exp_vec<V>(V::sub(ld<V>(x + j), mv)));
    T s = V::hsum(V::add(s0, s1));
    for (; j < n; ++j) s += exp_scalar<T>(to_t<T>(x[j]) - m);
    return s;
  }

  // sum w[j] (x[j] - r) over [0, n) (w == nullptr: weights 1)
  static T block_wx(const S* x, const T* w, int64_t n, T r) {
    R s0 = V::zero(), s1 = V::zero();
    const R rv = V::set1(r);
    int64_t j = 0;
    if (w) {
      for (; j + V::W <= n; j += V::W) s0 = V::fmadd(V::loadu(w + j), V::sub(ld<V>(x + j), rv), s0);
    } else {
      for (; j + 2 * V::W <= n; j += 2 * V::W) {
        s0 = V::add(s0, V::sub(ld<V>(x + j), rv));
        s1 = V::add(s1, V::sub(ld<V>(x + j + V::W), rv));
      }
      for (; j + V::W <= n; j += V::W) s0 = V::add(s0, V::sub(ld<V>(x + j), rv));
    }
    T s = V::hsum(V::add(s0, s1));
    for (; j < n; ++j) s += (w ? w[j] : T(1)) * (to_t<T>(x[j]) - r);
    return s;
  }

  // For probability targets q' = (1 - ls) q + ls / C:
  //   *sq += sum w q',   *sqx += sum w q' (x - r)
  static void block_q(const S* x, const S* q, const T* w, int64_t n, T r, T keep, T add, T* sq,
                      T* sqx) {
    R a0 = V::zero(), b0 = V::zero();
    const R rv = V::set1(r), kv = V::set1(keep), av = V::set1(add);
    int64_t j = 0;
    for (; j + V::W <= n; j += V::W) {
      R qq = V::fmadd(ld<V>(q + j), kv, av);
      if (w) qq = V::mul(qq, V::loadu(w + j));
      a0 = V::add(a0, qq);
      b0 = V::fmadd(qq, V::sub(ld<V>(x + j), rv), b0);
    }
    T s = V::hsum(a0), t = V::hsum(b0);
    for (; j < n; ++j) {
      T qq = to_t<T>(q[j]) * keep + add;
      if (w) qq *= w[j];
      s += qq;
      t += qq * (to_t<T>(x[j]) - r);
    }
    *sq += s;
    *sqx += t;
  }

  // Returns the loss of row i; writes the gradient row when a.grad is set.
  T run(int64_t i) const {
    const int64_t C = a.C;
    const S* x = a.x + i * a.ldx;
    S* g = a.grad ? a.grad + i * a.ldg : nullptr;
    const T* w = a.weight;
    const double ls = a.label_smoothing;
    int64_t t = -1;
    if (a.target) {
      t = a.target[i];
      if (t == a.ignore_index) {
        if (g) std::fill(g, g + C, from_t<S>(T(0)));
        return T(0);
      }
    }
    const S* q = a.probs ? a.probs + i * a.ldp : nullptr;
    const T ninf = -std::numeric_limits<T>::infinity();
    const T keep = T(1.0 - ls), add = T(ls / double(C));
    const bool smooth = !q && ls > 0;
    // pass 1: online log-sum-exp over L1 blocks, and the sums relative to r
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    T r = 0;
    double swx = 0, sq = 0, sqx = 0;
    for (int64_t j0 = 0; j0 < C; j0 += kBlock) {
      const int64_t n = std::min(kBlock, C - j0);
      const S* xb = x + j0;
      const T mb = block_max(xb, n);
      if (j0 == 0) r = std::isfinite(mb) ? mb : T(0);
      if (mb != ninf) {  // a block of -inf adds nothing (and would give NaN)
        const T sb = block_sumexp(xb, n, mb);
        if (double(mb) > m || m != m) {
          s = s * std::exp(m - double(mb)) + double(sb);
          m = mb;
        } else {
          s += double(sb) * std::exp(double(mb) - m);
        }
      }
      if (smooth) swx += block_wx(xb, w ? w + j0 : nullptr, n, r);
      if (q) {
        T bq = 0, bqx = 0;
        block_q(xb, q + j0, w ? w + j0 : nullptr, n, r, keep, add, &bq, &bqx);
        sq += bq;
        sqx += bqx;
      }
    }
    if (s != s) m = s;  // NaN somewhere in the row
    const double log_s = std::log(s);
    double loss;
    double ga = 0;  // gradient: g_j = ga * p_j - (per-class part), before scaling
    if (q) {
      // loss = sum w q' (lse - x) = sq (m - r + log s) - sqx
      loss = sq * ((m - double(r)) + log_s) - sqx;
      ga = sq;
    } else {
      const double wt = w ? double(w[t]) : 1.0;
      const double nll = (m - double(to_t<T>(x[t]))) + log_s;
      if (smooth) {
        loss = (1.0 - ls) * wt * nll + ls / double(C) * (wsum * ((m - double(r)) + log_s) - swx);
        ga = (1.0 - ls) * wt + ls / double(C) * wsum;
      } else {
        loss = wt * nll;
        ga = wt;
      }
    }
    if (g) {
      const double sc = a.scale * (a.row_scale ? double(a.row_scale[i * a.row_scale_stride]) : 1.0);
      // softmax p_j = exp(x_j - m) / s
      const T pa = T(sc * ga / s), mm = T(m);
      const T gt = t >= 0 ? T(sc * (1.0 - ls) * (w ? double(w[t]) : 1.0)) : T(0);
      const T gadd = T(sc * ls / double(C));  // class-index smoothing: - gadd * w_j
      const T xt = t >= 0 ? to_t<T>(x[t]) : T(0);  // read before an in-place write
      const R pav = V::set1(pa), mv = V::set1(mm);
      int64_t j = 0;
      if (q) {  // g = sc (sq p - w q'), q' rounded as in pass 1 (exact 0 where p = q')
        const T pq = T(ga / s);
        const R kv = V::set1(keep), av = V::set1(add), pqv = V::set1(pq), scv = V::set1(T(sc));
        for (; j + V::W <= C; j += V::W) {
          R p = V::mul(pqv, exp_vec<V>(V::sub(ld<V>(x + j), mv)));
          R qq = V::fmadd(ld<V>(q + j), kv, av);
          if (w) qq = V::mul(qq, V::loadu(w + j));
          st<V>(g + j, V::mul(V::sub(p, qq), scv));
        }
        for (; j < C; ++j) {
          T qq = to_t<T>(q[j]) * keep + add;
          if (w) qq *= w[j];
          g[j] = from_t<S>((pq * exp_scalar<T>(to_t<T>(x[j]) - mm) - qq) * T(sc));
        }
      } else {
        const R gav = V::set1(gadd);
        if (smooth && w) {
          for (; j + V::W <= C; j += V::W)
            st<V>(g + j, V::sub(V::mul(pav, exp_vec<V>(V::sub(ld<V>(x + j), mv))),
                                V::mul(gav, V::loadu(w + j))));
        } else {
          for (; j + V::W <= C; j += V::W)
            st<V>(g + j, V::sub(V::mul(pav, exp_vec<V>(V::sub(ld<V>(x + j), mv))), gav));
        }
        for (; j < C; ++j)
          g[j] = from_t<S>(pa * exp_scalar<T>(to_t<T>(x[j]) - mm) - gadd * (w && smooth ? w[j] : T(1)));
        // the target's own term; its softmax value from the saved logit (g may alias x)
        g[t] = from_t<S>(pa * exp_scalar<T>(xt - mm) - gadd * (w && smooth ? w[t] : T(1)) - gt);
      }
    }
    return T(loss);
  }
};

template <class V, class S = typename V::T>
void cross_entropy_run(const CrossEntropyArgs<S>& a) {
  using T = typename V::T;
  CrossEntropyRow<V, S> row{a};
  if (a.weight && a.label_smoothing > 0) {
    double ws = 0;
    for (int64_t c = 0; c < a.C; ++c) ws += a.weight[c];
    row.wsum = ws;
  } else {
    row.wsum = double(a.C);
  }
  const int nt = loss_threads(a.N, double(a.N) * double(a.C));
  const double total = chunked_sum(nt, a.N, a.C, [&](int64_t i) {
    const T l = row.run(i);
    if (a.loss_rows) a.loss_rows[i] = l;
    return double(l);
  });
  if (a.loss_sum) *a.loss_sum = total;
}

template <class V, class S = typename V::T>
void scale_rows_run(int64_t N, int64_t C, S* g, int64_t ldg, const typename V::T* s,
                    int64_t s_stride) {
  using T = typename V::T;
  if (N <= 0 || C <= 0) return;
  if (s_stride == 0 && s[0] == T(1)) return;  // loss.backward(): nothing to scale
  auto scale = [](S* p, int64_t n, T f) {
    const typename V::R fv = V::set1(f);
    int64_t j = 0;
    for (; j + V::W <= n; j += V::W) st<V>(p + j, V::mul(ld<V>(p + j), fv));
    for (; j < n; ++j) p[j] = from_t<S>(to_t<T>(p[j]) * f);
  };
  if (s_stride == 0 && ldg == C) {  // one flat range, split evenly (also one huge row)
    const int64_t n = N * C;
    const int nt = loss_threads(n, double(n));
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
      const int64_t b = n * tid / nth, e = n * (tid + 1) / nth;
      scale(g + b, e - b, s[0]);
    }
    return;
  }
  const int nt = loss_threads(N, double(N) * double(C));
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t i = 0; i < N; ++i) scale(g + i * ldg, C, s[i * s_stride]);
}

template <class V>
void add_column_sums_run(int64_t N, int64_t C, const typename V::T* g, int64_t ldg,
                         typename V::T* out) {
  using T = typename V::T;
  const int nt = loss_threads(C / 64 + 1, double(N) * double(C));
  // columns split between threads: each thread owns a slice of out
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    int64_t c0 = C * tid / nth, c1 = C * (tid + 1) / nth;
    for (int64_t i = 0; i < N; ++i) {
      const T* row = g + i * ldg;
      int64_t j = c0;
      for (; j + V::W <= c1; j += V::W)
        V::storeu(out + j, V::add(V::loadu(out + j), V::loadu(row + j)));
      for (; j < c1; ++j) out[j] += row[j];
    }
  }
}

// ---- elementwise losses: per-thread ranges, double partial sums -----------------------------

template <typename T, class F>
void elementwise_reduce(int64_t n, T* loss_rows, double* loss_sum, F f) {
  const int nt = loss_threads(n, double(n) * 4);
  const double total = chunked_sum(nt, n, 4, [&](int64_t i) {
    const T l = f(i);
    if (loss_rows) loss_rows[i] = l;
    return double(l);
  });
  if (loss_sum) *loss_sum = total;
}

template <class V>
void mse_forward_run(int64_t n, const typename V::T* x, const typename V::T* y,
                     typename V::T* loss_rows, double* loss_sum) {
  using T = typename V::T;
  elementwise_reduce<T>(n, loss_rows, loss_sum, [&](int64_t i) {
    const T d = x[i] - y[i];
    return d * d;
  });
}

template <class V>
void mse_backward_run(int64_t n, const typename V::T* g, int64_t gs, double scale,
                      const typename V::T* x, const typename V::T* y, typename V::T* gx) {
  using T = typename V::T;
  const int nt = loss_threads(n, double(n));
  const T two = T(2.0 * scale);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t i = 0; i < n; ++i) gx[i] = two * g[i * gs] * (x[i] - y[i]);
}

// log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))
template <typename T>
inline T log_sigmoid(T x) {
  return std::min(x, T(0)) - std::log1p(std::exp(-std::abs(x)));
}

template <class V>
void bce_logits_forward_run(int64_t n, const typename V::T* x, const typename V::T* y,
                            const typename V::T* w, const typename V::T* pw,
                            typename V::T* loss_rows, double* loss_sum) {
  using T = typename V::T;
  elementwise_reduce<T>(n, loss_rows, loss_sum, [&](int64_t i) {
    const T lw = pw ? (pw[i] - T(1)) * y[i] + T(1) : T(1);
    T l = (T(1) - y[i]) * x[i] - lw * log_sigmoid(x[i]);
    return w ? l * w[i] : l;
  });
}

template <class V>
void bce_logits_backward_run(int64_t n, const typename V::T* g, int64_t gs, double scale,
                             const typename V::T* x, const typename V::T* y,
                             const typename V::T* w, const typename V::T* pw, typename V::T* gx,
                             typename V::T* gy) {
  using T = typename V::T;
  const int nt = loss_threads(n, double(n) * 4);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (int64_t i = 0; i < n; ++i) {
    T s = T(scale) * g[i * gs];
    if (w) s *= w[i];
    if (gx) {
      const T sig_neg = T(1) / (T(1) + std::exp(x[i]));  // sigmoid(-x)
      const T lw = pw ? (pw[i] - T(1)) * y[i] + T(1) : T(1);
      gx[i] = s * ((T(1) - y[i]) - lw * sig_neg);
    }
    if (gy) {
      T d = -x[i];
      if (pw) d -= (pw[i] - T(1)) * log_sigmoid(x[i]);
      gy[i] = s * d;
    }
  }
}

// ---- entry points of this instruction set -----------------------------------------------

template <typename T>
using VecOf = std::conditional_t<sizeof(compute_t<T>) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>;

template <typename T>
void loss_cross_entropy(const CrossEntropyArgs<T>& a) { cross_entropy_run<VecOf<T>, T>(a); }
template <typename T>
void loss_scale_rows(int64_t N, int64_t C, T* g, int64_t ldg, const compute_t<T>* s, int64_t ss) {
  scale_rows_run<VecOf<T>, T>(N, C, g, ldg, s, ss);
}
template <typename T>
void loss_add_column_sums(int64_t N, int64_t C, const T* g, int64_t ldg, T* out) {
  add_column_sums_run<VecOf<T>>(N, C, g, ldg, out);
}
template <typename T>
void loss_mse_forward(int64_t n, const T* x, const T* y, T* lr, double* ls) {
  mse_forward_run<VecOf<T>>(n, x, y, lr, ls);
}
template <typename T>
void loss_mse_backward(int64_t n, const T* g, int64_t gs, double sc, const T* x, const T* y, T* gx) {
  mse_backward_run<VecOf<T>>(n, g, gs, sc, x, y, gx);
}
template <typename T>
void loss_bce_forward(int64_t n, const T* x, const T* y, const T* w, const T* pw, T* lr, double* ls) {
  bce_logits_forward_run<VecOf<T>>(n, x, y, w, pw, lr, ls);
}
template <typename T>
void loss_bce_backward(int64_t n, const T* g, int64_t gs, double sc, const T* x, const T* y,
                       const T* w, const T* pw, T* gx, T* gy) {
  bce_logits_backward_run<VecOf<T>>(n, g, gs, sc, x, y, w, pw, gx, gy);
}

// bf16 logits: cross-entropy and the scaling of its gradient; the other losses have no bf16
// kernels (their entries are null).
template <typename T>
LossKernels<T> loss_table() {
  if constexpr (std::is_same_v<T, bf16_t>) {
    LossKernels<T> k{};
    k.cross_entropy = &loss_cross_entropy<T>;
    k.scale_rows = &loss_scale_rows<T>;
    return k;
  } else {
    return {&loss_cross_entropy<T>, &loss_scale_rows<T>,  &loss_add_column_sums<T>, &loss_mse_forward<T>,
            &loss_mse_backward<T>,  &loss_bce_forward<T>, &loss_bce_backward<T>};
  }
}
template LossKernels<float> loss_table<float>();
template LossKernels<double> loss_table<double>();
template LossKernels<bf16_t> loss_table<bf16_t>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
