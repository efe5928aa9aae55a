// LayerNorm kernels written once over a register trait V (vec.h), instantiated per instruction
// set by norm_<isa>.cpp (see vec/isa_generic.h for the scheme).
//
// Forward, per row of N elements: one pass reading x (and the residual, writing their sum)
// that sums the row, a second pass over the row (now in L1/L2) for the centred variance, a
// third writing y. Backward, per row: one pass forming the two row sums of the input gradient
// (and adding g * xhat, g into the weight/bias partials), a second writing dx. Rows are split
// into one contiguous range per thread; the weight/bias partials are summed per thread in
// blocks of kBlockRows rows (keeping float sums short), then across threads in thread order.
#pragma once
// (standard headers come from vec/isa_std.h, before the instruction set is selected)

namespace fusedops::cpu::FUSEDOPS_ISA_NS {
namespace norm_detail {

constexpr int64_t kBlockRows = 64;      // rows summed into a block partial before the thread's
constexpr int64_t kMinPerThread = 16384;  // elements per thread below which one thread runs

inline int threads_for(int64_t M, int64_t N) {
  if (omp_in_parallel()) return 1;
  const int64_t by_work = std::max<int64_t>(1, M * N / kMinPerThread);
  return int(std::max<int64_t>(1, std::min<int64_t>({int64_t(omp_get_max_threads()), by_work, M})));
}

// The first n (< W) lanes of p; the others zero.
template <class V>
inline typename V::R tail(const typename V::T* p, int64_t n) {
  return V::load_partial(p, int(n));
}

// The mean of one row (s = x + r stored to s_out when r is given). The sum is taken of s - s[0]
// so that a large common offset costs no precision; the tail (< W elements) goes element by
// element.
template <class V>
inline typename V::T row_mean(int64_t N, const typename V::T* x, const typename V::T* r,
                              typename V::T* s_out) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const T c = r ? x[0] + r[0] : x[0];
  const R cv = V::set1(c);
  R a0 = V::zero(), a1 = V::zero();
  T at = T(0);
  int64_t j = 0;
  if (r) {
    for (; j + 2 * W <= N; j += 2 * W) {
      const R v0 = V::add(V::loadu(x + j), V::loadu(r + j));
      const R v1 = V::add(V::loadu(x + j + W), V::loadu(r + j + W));
      V::storeu(s_out + j, v0);
      V::storeu(s_out + j + W, v1);
      a0 = V::add(a0, V::sub(v0, cv));
      a1 = V::add(a1, V::sub(v1, cv));
    }
    for (; j + W <= N; j += W) {
      const R v = V::add(V::loadu(x + j), V::loadu(r + j));
      V::storeu(s_out + j, v);
      a0 = V::add(a0, V::sub(v, cv));
    }
    for (; j < N; ++j) {
      s_out[j] = x[j] + r[j];
      at += s_out[j] - c;
    }
  } else {
    for (; j + 2 * W <= N; j += 2 * W) {
      a0 = V::add(a0, V::sub(V::loadu(x + j), cv));
      a1 = V::add(a1, V::sub(V::loadu(x + j + W), cv));
    }
    for (; j + W <= N; j += W) a0 = V::add(a0, V::sub(V::loadu(x + j), cv));
    for (; j < N; ++j) at += x[j] - c;
  }
  return c + (V::hsum(V::add(a0, a1)) + at) / T(N);
}

// sum_j (s_j - mu)^2 over a row.
template <class V>
inline typename V::T row_sq_dev(int64_t N, const typename V::T* s, typename V::T mu) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const R m = V::set1(mu);
  R a0 = V::zero(), a1 = V::zero();
  int64_t j = 0;
  for (; j + 2 * W <= N; j += 2 * W) {
    const R d0 = V::sub(V::loadu(s + j), m), d1 = V::sub(V::loadu(s + j + W), m);
    a0 = V::fmadd(d0, d0, a0);
    a1 = V::fmadd(d1, d1, a1);
  }
  for (; j + W <= N; j += W) {
    const R d = V::sub(V::loadu(s + j), m);
    a0 = V::fmadd(d, d, a0);
  }
  T acc = V::hsum(V::add(a0, a1));
  for (; j < N; ++j) acc += (s[j] - mu) * (s[j] - mu);  // the tail: zero lanes would add mu^2
  return acc;
}

template <class V>
void forward_rows(int64_t r0, int64_t r1, int64_t N, const typename V::T* x,
                  const typename V::T* res, typename V::T* sum_out, const typename V::T* w,
                  const typename V::T* b, typename V::T eps, typename V::T* y,
                  typename V::T* mean, typename V::T* rstd) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  for (int64_t i = r0; i < r1; ++i) {
    const T* xr = x + i * N;
    T* s = res ? sum_out + i * N : nullptr;
    const T mu = row_mean<V>(N, xr, res ? res + i * N : nullptr, s);
    const T* src = res ? s : xr;
    const T var = row_sq_dev<V>(N, src, mu) / T(N);
    const T rs = T(1) / std::sqrt(var + eps);
    if (mean) mean[i] = mu;
    if (rstd) rstd[i] = rs;
    T* yr = y + i * N;
    const R m = V::set1(mu), sc = V::set1(rs), one = V::set1(T(1));
    for (int64_t j = 0; j < N; j += W) {
      const int64_t n = std::min<int64_t>(W, N - j);
      const bool full = n == W;
      const R v = full ? V::loadu(src + j) : tail<V>(src + j, n);
      const R wv = w ? (full ? V::loadu(w + j) : tail<V>(w + j, n)) : one;
      const R bv = b ? (full ? V::loadu(b + j) : tail<V>(b + j, n)) : V::zero();
      const R out = V::fmadd(V::mul(V::sub(v, m), sc), wv, bv);
      if (full) V::storeu(yr + j, out);
      else V::store_partial(yr + j, out, int(n));
    }
  }
}

// One row of the backward (see norm.h). acc_w/acc_b: the block partials (or nullptr).
template <class V>
inline void backward_row(int64_t N, const typename V::T* g, const typename V::T* x,
                         typename V::T mu, typename V::T rs, const typename V::T* w,
                         const typename V::T* ga, typename V::T* dx, typename V::T* acc_w,
                         typename V::T* acc_b) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const R m = V::set1(mu), sc = V::set1(rs), one = V::set1(T(1));
  R s1 = V::zero(), s2 = V::zero();
  for (int64_t j = 0; j < N; j += W) {  // pass 1: row sums, weight/bias partials
    const int64_t n = std::min<int64_t>(W, N - j);
    const bool full = n == W;
    const R gv = full ? V::loadu(g + j) : tail<V>(g + j, n);
    const R xh = V::mul(V::sub(full ? V::loadu(x + j) : tail<V>(x + j, n), m), sc);
    const R wv = w ? (full ? V::loadu(w + j) : tail<V>(w + j, n)) : one;
    const R gw = V::mul(gv, wv);  // zero in tail lanes (g is)
    s1 = V::add(s1, gw);
    s2 = V::fmadd(gw, xh, s2);
    if (acc_w) {
      if (full) {
        V::storeu(acc_w + j, V::fmadd(gv, xh, V::loadu(acc_w + j)));
        V::storeu(acc_b + j, V::add(gv, V::loadu(acc_b + j)));
      } else {
        V::store_partial(acc_w + j, V::fmadd(gv, xh, tail<V>(acc_w + j, n)), int(n));
        V::store_partial(acc_b + j, V::add(gv, tail<V>(acc_b + j, n)), int(n));
      }
    }
  }
  if (!dx) return;
  const R c2 = V::set1(V::hsum(s1) / T(N)), c1 = V::set1(V::hsum(s2) / T(N));
  for (int64_t j = 0; j < N; j += W) {  // pass 2: dx
    const int64_t n = std::min<int64_t>(W, N - j);
    const bool full = n == W;
    const R gv = full ? V::loadu(g + j) : tail<V>(g + j, n);
    const R xh = V::mul(V::sub(full ? V::loadu(x + j) : tail<V>(x + j, n), m), sc);
    const R wv = w ? (full ? V::loadu(w + j) : tail<V>(w + j, n)) : one;
    // rstd * (g w - c2 - xhat c1)
    R out = V::mul(sc, V::sub(V::sub(V::mul(gv, wv), c2), V::mul(xh, c1)));
    if (ga) out = V::add(out, full ? V::loadu(ga + j) : tail<V>(ga + j, n));
    if (full) V::storeu(dx + j, out);
    else V::store_partial(dx + j, out, int(n));
  }
}

}  // namespace norm_detail

template <class V>
void layer_norm_forward(int64_t M, int64_t N, const typename V::T* x, const typename V::T* res,
                        typename V::T* sum_out, const typename V::T* w, const typename V::T* b,
                        typename V::T eps, typename V::T* y, typename V::T* mean,
                        typename V::T* rstd) {
  if (M <= 0 || N <= 0) return;
  const int nt = norm_detail::threads_for(M, N);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    norm_detail::forward_rows<V>(t * M / n, (t + 1) * M / n, N, x, res, sum_out, w, b, eps, y,
                                 mean, rstd);
  }
}

template <class V>
void layer_norm_backward(int64_t M, int64_t N, const typename V::T* g, const typename V::T* x,
                         const typename V::T* mean, const typename V::T* rstd,
                         const typename V::T* w, const typename V::T* ga, typename V::T* dx,
                         typename V::T* dw, typename V::T* db) {
  using T = typename V::T;
  constexpr int W = V::W;
  if (N <= 0) return;
  const bool wb = dw || db;
  if (M <= 0) {  // an empty sum
    if (dw) std::fill(dw, dw + N, T(0));
    if (db) std::fill(db, db + N, T(0));
    return;
  }
  const int nt = norm_detail::threads_for(M, N);
  // Rows in chunks fixed by M and N; per chunk its partial sums [2, N] and its block sums
  // [2, N]; the chunks' sums added in chunk order (parallel.h).
  const int64_t chunks = reduction_chunks(M, N);
  std::vector<T> part(wb ? size_t(chunks) * 4 * N : 0, T(0));
  parallel_items(nt, chunks, [&](int64_t c) {
    const int64_t r0 = chunk_start(c, chunks, M), r1 = chunk_start(c + 1, chunks, M);
    T* pw = wb ? part.data() + size_t(c) * 4 * N : nullptr;
    T* pb = wb ? pw + N : nullptr;
    T* bw = wb ? pw + 2 * N : nullptr;
    T* bb = wb ? pw + 3 * N : nullptr;
    for (int64_t i0 = r0; i0 < r1; i0 += norm_detail::kBlockRows) {
      const int64_t i1 = std::min(r1, i0 + norm_detail::kBlockRows);
      for (int64_t i = i0; i < i1; ++i)
        norm_detail::backward_row<V>(N, g + i * N, x + i * N, mean[i], rstd[i], w,
                                     ga ? ga + i * N : nullptr, dx ? dx + i * N : nullptr, bw, bb);
      if (!wb) continue;
      int64_t j = 0;
      for (; j + W <= N; j += W) {
        V::storeu(pw + j, V::add(V::loadu(pw + j), V::loadu(bw + j)));
        V::storeu(pb + j, V::add(V::loadu(pb + j), V::loadu(bb + j)));
        V::storeu(bw + j, V::zero());
        V::storeu(bb + j, V::zero());
      }
      for (; j < N; ++j) {
        pw[j] += bw[j], pb[j] += bb[j];
        bw[j] = bb[j] = T(0);
      }
    }
  });
  if (dw) sum_partials(nt, chunks, N, part.data(), 4 * N, dw);
  if (db) sum_partials(nt, chunks, N, part.data() + N, 4 * N, db);
}

// Entry points for norm.cpp, one set per instruction set.
template <typename T>
void layer_norm_forward_run(int64_t M, int64_t N, const T* x, const T* res, T* sum_out,
                            const T* w, const T* b, T eps, T* y, T* mean, T* rstd) {
  if constexpr (sizeof(T) == 4)
    layer_norm_forward<FUSEDOPS_VEC_F32>(M, N, x, res, sum_out, w, b, eps, y, mean, rstd);
  else
    layer_norm_forward<FUSEDOPS_VEC_F64>(M, N, x, res, sum_out, w, b, eps, y, mean, rstd);
}

template <typename T>
void layer_norm_backward_run(int64_t M, int64_t N, const T* g, const T* x, const T* mean,
                             const T* rstd, const T* w, const T* ga, T* dx, T* dw, T* db) {
  if constexpr (sizeof(T) == 4)
    layer_norm_backward<FUSEDOPS_VEC_F32>(M, N, g, x, mean, rstd, w, ga, dx, dw, db);
  else
    layer_norm_backward<FUSEDOPS_VEC_F64>(M, N, g, x, mean, rstd, w, ga, dx, dw, db);
}

template <typename T>
NormKernels<T> norm_table() {
  return {&layer_norm_forward_run<T>, &layer_norm_backward_run<T>};
}
template NormKernels<float> norm_table<float>();
template NormKernels<double> norm_table<double>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
