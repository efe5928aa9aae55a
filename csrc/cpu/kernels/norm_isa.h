// LayerNorm and RMSNorm kernels written once over a register trait V (vec.h), instantiated per
// instruction set by norm_<isa>.cpp (see vec/isa_generic.h for the scheme).
//
// Forward, per row of N elements: one pass reading x (and the residual, writing their sum)
// that sums the row, a second pass over the row (now in L1/L2) for the centred variance, a
// third writing y. Backward, per row: one pass forming the two row sums of the input gradient
// (and adding g * xhat, g into the weight/bias partials), a second writing dx. Rows are split
// into one contiguous range per thread; the weight/bias partials are summed per thread in
// blocks of kBlockRows rows (keeping float sums short), then across threads in thread order.
// RMSNorm runs the same row loops with the mean fixed at zero (template flag Rms in the forward,
// a null mean in the backward): its forward is two passes (the sum of squares, then y).
#pragma once
// (standard headers come from vec/isa_std.h, before the instruction set is selected)

namespace fusedops::cpu::FUSEDOPS_ISA_NS {
namespace norm_detail {

constexpr int64_t kBlockRows = 64;      // rows summed into a block partial before the thread's
constexpr int64_t kMinPerThread = 16384;  // elements per thread below which one thread runs

inline int threads_for(int64_t M, int64_t N) {
  return threads_for_work(double(M) * double(N), double(kMinPerThread), M);
}

// The mean of one row (s = x + r stored to s_out when r is given). The sum is taken of s - s[0]
// so that a large common offset costs no precision; the tail (< W elements) goes element by
// element. With bf16 storage the stored sum is rounded to bf16 and the statistics are those of
// the rounded sum, which is what the backward reads back.
template <class V, class S>
inline typename V::T row_mean(int64_t N, const S* x, const S* r, S* s_out) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  constexpr bool round_sum = is_bf16_storage<V, S>;
  auto sum_at = [&](int64_t j) {  // s[j] as stored
    const S v = from_t<S>(to_t<T>(x[j]) + to_t<T>(r[j]));
    s_out[j] = v;
    return to_t<T>(v);
  };
  const T c = r ? sum_at(0) : to_t<T>(x[0]);
  const R cv = V::set1(c);
  R a0 = V::zero(), a1 = V::zero();
  T at = T(0);
  int64_t j = 0;
  if (r) {
    auto add_store = [&](int64_t k) {
      R v = V::add(ld<V>(x + k), ld<V>(r + k));
      st<V>(s_out + k, v);
      if constexpr (round_sum) v = ld<V>(s_out + k);
      return v;
    };
    for (; j + 2 * W <= N; j += 2 * W) {
      const R v0 = add_store(j), v1 = add_store(j + W);
      a0 = V::add(a0, V::sub(v0, cv));
      a1 = V::add(a1, V::sub(v1, cv));
    }
    for (; j + W <= N; j += W) a0 = V::add(a0, V::sub(add_store(j), cv));
    for (; j < N; ++j) at += sum_at(j) - c;
  } else {
    for (; j + 2 * W <= N; j += 2 * W) {
      a0 = V::add(a0, V::sub(ld<V>(x + j), cv));
      a1 = V::add(a1, V::sub(ld<V>(x + j + W), cv));
    }
    for (; j + W <= N; j += W) a0 = V::add(a0, V::sub(ld<V>(x + j), cv));
    for (; j < N; ++j) at += to_t<T>(x[j]) - c;
  }
  return c + (V::hsum(V::add(a0, a1)) + at) / T(N);
}

// sum_j (s_j - mu)^2 over a row.
template <class V, class S>
inline typename V::T row_sq_dev(int64_t N, const S* s, typename V::T mu) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const R m = V::set1(mu);
  R a0 = V::zero(), a1 = V::zero();
  int64_t j = 0;
  for (; j + 2 * W <= N; j += 2 * W) {
    const R d0 = V::sub(ld<V>(s + j), m), d1 = V::sub(ld<V>(s + j + W), m);
    a0 = V::fmadd(d0, d0, a0);
    a1 = V::fmadd(d1, d1, a1);
  }
  for (; j + W <= N; j += W) {
    const R d = V::sub(ld<V>(s + j), m);
    a0 = V::fmadd(d, d, a0);
  }
  T acc = V::hsum(V::add(a0, a1));
  for (; j < N; ++j) {  // the tail: zero lanes would add mu^2
    const T d = to_t<T>(s[j]) - mu;
    acc += d * d;
  }
  return acc;
}

// sum_j s_j^2 over a row with s = x + r stored to s_out (the squares of the stored, rounded
// sum with bf16 storage, as the backward reads it back).
template <class V, class S>
inline typename V::T row_sq_store(int64_t N, const S* x, const S* r, S* s_out) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  constexpr bool round_sum = is_bf16_storage<V, S>;
  auto add_store = [&](int64_t k) {
    R v = V::add(ld<V>(x + k), ld<V>(r + k));
    st<V>(s_out + k, v);
    if constexpr (round_sum) v = ld<V>(s_out + k);
    return v;
  };
  R a0 = V::zero(), a1 = V::zero();
  int64_t j = 0;
  for (; j + 2 * W <= N; j += 2 * W) {
    const R v0 = add_store(j), v1 = add_store(j + W);
    a0 = V::fmadd(v0, v0, a0);
    a1 = V::fmadd(v1, v1, a1);
  }
  for (; j + W <= N; j += W) {
    const R v = add_store(j);
    a0 = V::fmadd(v, v, a0);
  }
  T acc = V::hsum(V::add(a0, a1));
  for (; j < N; ++j) {
    const S v = from_t<S>(to_t<T>(x[j]) + to_t<T>(r[j]));
    s_out[j] = v;
    acc += to_t<T>(v) * to_t<T>(v);
  }
  return acc;
}

// Rms: RMSNorm (mean fixed at zero, b unused, mean not stored).
template <class V, bool Rms, class S>
void forward_rows(int64_t r0, int64_t r1, int64_t N, const S* x, const S* res, S* sum_out,
                  const typename V::T* w, const typename V::T* b, typename V::T eps, S* y,
                  typename V::T* mean, typename V::T* rstd) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  for (int64_t i = r0; i < r1; ++i) {
    const S* xr = x + i * N;
    S* s = res ? sum_out + i * N : nullptr;
    const S* src = res ? s : xr;
    T mu = T(0), var;
    if constexpr (Rms) {
      var = (res ? row_sq_store<V>(N, xr, res + i * N, s) : row_sq_dev<V>(N, xr, T(0))) / T(N);
    } else {
      mu = row_mean<V>(N, xr, res ? res + i * N : nullptr, s);
      var = row_sq_dev<V>(N, src, mu) / T(N);
    }
    const T rs = T(1) / std::sqrt(var + eps);
    if (mean) mean[i] = mu;
    if (rstd) rstd[i] = rs;
    S* yr = y + i * N;
    const R m = V::set1(mu), sc = V::set1(rs), one = V::set1(T(1));
    for (int64_t j = 0; j < N; j += W) {
      const int64_t n = std::min<int64_t>(W, N - j);
      const R v = ld_n<V>(src + j, n);
      const R wv = w ? ld_n<V>(w + j, n) : one;
      const R bv = b ? ld_n<V>(b + j, n) : V::zero();
      st_n<V>(yr + j, V::fmadd(V::mul(V::sub(v, m), sc), wv, bv), n);
    }
  }
}

// One row of the backward (see norm.h). acc_w/acc_b: the block partials (or nullptr). rms:
// RMSNorm (mu is zero and the mean term of dx drops out).
template <class V, class S>
inline void backward_row(int64_t N, const S* g, const S* x, typename V::T mu, typename V::T rs,
                         const typename V::T* w, const S* ga, S* dx, typename V::T* acc_w,
                         typename V::T* acc_b, bool rms) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const R m = V::set1(mu), sc = V::set1(rs), one = V::set1(T(1));
  R s1 = V::zero(), s2 = V::zero();
  for (int64_t j = 0; j < N; j += W) {  // pass 1: row sums, weight/bias partials
    const int64_t n = std::min<int64_t>(W, N - j);
    const R gv = ld_n<V>(g + j, n);
    const R xh = V::mul(V::sub(ld_n<V>(x + j, n), m), sc);
    const R wv = w ? ld_n<V>(w + j, n) : one;
    const R gw = V::mul(gv, wv);  // zero in tail lanes (g is)
    s1 = V::add(s1, gw);
    s2 = V::fmadd(gw, xh, s2);
    if (acc_w) st_n<V>(acc_w + j, V::fmadd(gv, xh, ld_n<V>(acc_w + j, n)), n);
    if (acc_b) st_n<V>(acc_b + j, V::add(gv, ld_n<V>(acc_b + j, n)), n);
  }
  if (!dx) return;
  const R c2 = V::set1(rms ? T(0) : V::hsum(s1) / T(N)), c1 = V::set1(V::hsum(s2) / T(N));
  for (int64_t j = 0; j < N; j += W) {  // pass 2: dx
    const int64_t n = std::min<int64_t>(W, N - j);
    const R gv = ld_n<V>(g + j, n);
    const R xh = V::mul(V::sub(ld_n<V>(x + j, n), m), sc);
    const R wv = w ? ld_n<V>(w + j, n) : one;
    // rstd * (g w - c2 - xhat c1)
    R out = V::mul(sc, V::sub(V::sub(V::mul(gv, wv), c2), V::mul(xh, c1)));
    if (ga) out = V::add(out, ld_n<V>(ga + j, n));
    st_n<V>(dx + j, out, n);
  }
}

}  // namespace norm_detail

template <class V, class S>
void layer_norm_forward(int64_t M, int64_t N, const S* x, const S* res, S* sum_out,
                        const typename V::T* w, const typename V::T* b, typename V::T eps, S* y,
                        typename V::T* mean, typename V::T* rstd) {
  if (M <= 0 || N <= 0) return;
  const int nt = norm_detail::threads_for(M, N);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    norm_detail::forward_rows<V, false>(t * M / n, (t + 1) * M / n, N, x, res, sum_out, w, b,
                                        eps, y, mean, rstd);
  }
}

template <class V, class S>
void rms_norm_forward(int64_t M, int64_t N, const S* x, const S* res, S* sum_out,
                      const typename V::T* w, typename V::T eps, S* y, typename V::T* rstd) {
  if (M <= 0 || N <= 0) return;
  const int nt = norm_detail::threads_for(M, N);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    norm_detail::forward_rows<V, true>(t * M / n, (t + 1) * M / n, N, x, res, sum_out, w, nullptr,
                                       eps, y, nullptr, rstd);
  }
}

// mean nullptr: the RMSNorm backward (mean zero; db must be nullptr).
template <class V, class S>
void layer_norm_backward(int64_t M, int64_t N, const S* g, const S* x, const typename V::T* mean,
                         const typename V::T* rstd, const typename V::T* w, const S* ga, S* dx,
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
        norm_detail::backward_row<V>(N, g + i * N, x + i * N, mean ? mean[i] : T(0), rstd[i], w,
                                     ga ? ga + i * N : nullptr, dx ? dx + i * N : nullptr, bw,
                                     mean ? bb : nullptr, !mean);
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

// Entry points for norm.cpp, one set per instruction set and storage type (bf16 tensors
// compute on the fp32 trait, with fp32 parameters and statistics).
template <typename T>
using NormVec = std::conditional_t<sizeof(compute_t<T>) == 4, FUSEDOPS_VEC_F32, FUSEDOPS_VEC_F64>;

template <typename T, typename C = compute_t<T>>
void layer_norm_forward_run(int64_t M, int64_t N, const T* x, const T* res, T* sum_out,
                            const C* w, const C* b, C eps, T* y, C* mean, C* rstd) {
  layer_norm_forward<NormVec<T>>(M, N, x, res, sum_out, w, b, eps, y, mean, rstd);
}

template <typename T, typename C = compute_t<T>>
void layer_norm_backward_run(int64_t M, int64_t N, const T* g, const T* x, const C* mean,
                             const C* rstd, const C* w, const T* ga, T* dx, C* dw, C* db) {
  layer_norm_backward<NormVec<T>>(M, N, g, x, mean, rstd, w, ga, dx, dw, db);
}

template <typename T, typename C = compute_t<T>>
void rms_norm_forward_run(int64_t M, int64_t N, const T* x, const T* res, T* sum_out, const C* w,
                          C eps, T* y, C* rstd) {
  rms_norm_forward<NormVec<T>>(M, N, x, res, sum_out, w, eps, y, rstd);
}

template <typename T, typename C = compute_t<T>>
void rms_norm_backward_run(int64_t M, int64_t N, const T* g, const T* x, const C* rstd, const C* w,
                           const T* ga, T* dx, C* dw) {
  layer_norm_backward<NormVec<T>>(M, N, g, x, nullptr, rstd, w, ga, dx, dw, nullptr);
}

template <typename T>
NormKernels<T> norm_table() {
  return {&layer_norm_forward_run<T>, &layer_norm_backward_run<T>, &rms_norm_forward_run<T>,
          &rms_norm_backward_run<T>};
}
template NormKernels<float> norm_table<float>();
template NormKernels<double> norm_table<double>();
template NormKernels<bf16_t> norm_table<bf16_t>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
