// Batch-norm kernels written once over a register trait V (vec.h), instantiated per instruction
// set by batch_norm_<isa>.cpp (see vec/isa_generic.h for the scheme; the algorithm is described
// in batch_norm.h). Planar reductions use V explicitly (a float sum does not vectorise by
// itself); the interleaved passes are loops over the contiguous channels, which the compiler
// vectorises with this translation unit's instruction set.
#pragma once
// (standard headers come from vec/isa_std.h, before the instruction set is selected)

namespace fusedops::cpu::FUSEDOPS_ISA_NS {
namespace bn_detail {

constexpr int64_t kBlock = 4096;        // planar: elements summed in T lanes before a double
constexpr int64_t kBlockRows = 64;      // interleaved: rows summed in T before a double
constexpr int64_t kMinPerThread = 32768;  // elements per thread below which one thread runs

// A per-call buffer from the scratch cache.
template <typename U>
struct Buf {
  U* p;
  explicit Buf(int64_t n) : p(static_cast<U*>(scratch_take(size_t(std::max<int64_t>(n, 1)) * sizeof(U)))) {}
  ~Buf() { scratch_give(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// sum over p[0, n) of (p - c) (Sq false) or (p - c)^2 (Sq true): T lanes per block of kBlock,
// block totals added in double.
template <class V, bool Sq>
inline double seg_sum(const typename V::T* p, int64_t n, typename V::T c) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const R cv = V::set1(c);
  double total = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
    const int64_t j1 = std::min(n, j0 + kBlock);
    R a0 = V::zero(), a1 = V::zero();
    int64_t j = j0;
    for (; j + 2 * W <= j1; j += 2 * W) {
      const R d0 = V::sub(V::loadu(p + j), cv), d1 = V::sub(V::loadu(p + j + W), cv);
      a0 = Sq ? V::fmadd(d0, d0, a0) : V::add(a0, d0);
      a1 = Sq ? V::fmadd(d1, d1, a1) : V::add(a1, d1);
    }
    for (; j + W <= j1; j += W) {
      const R d = V::sub(V::loadu(p + j), cv);
      a0 = Sq ? V::fmadd(d, d, a0) : V::add(a0, d);
    }
    T t = V::hsum(V::add(a0, a1));
    for (; j < j1; ++j) {
      const T d = p[j] - c;
      t += Sq ? d * d : d;
    }
    total += double(t);
  }
  return total;
}

// (sum g, sum g (x - mu)) over a segment, two-level as seg_sum.
template <class V>
inline void seg_sum_grad(const typename V::T* g, const typename V::T* x, int64_t n, typename V::T mu, double* sg,
                         double* sgd) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const R m = V::set1(mu);
  for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
    const int64_t j1 = std::min(n, j0 + kBlock);
    R a = V::zero(), b = V::zero();
    int64_t j = j0;
    for (; j + W <= j1; j += W) {
      const R gv = V::loadu(g + j);
      a = V::add(a, gv);
      b = V::fmadd(gv, V::sub(V::loadu(x + j), m), b);
    }
    T ta = V::hsum(a), tb = V::hsum(b);
    for (; j < j1; ++j) {
      ta += g[j];
      tb += g[j] * (x[j] - mu);
    }
    *sg += double(ta);
    *sgd += double(tb);
  }
}

// out[j] = (in[j] - mu) * sc + sh over a segment (y = (x - mean) rstd w + b).
template <class V>
inline void seg_affine(const typename V::T* in, int64_t n, typename V::T mu, typename V::T sc, typename V::T sh,
                       typename V::T* out) {
  using R = typename V::R;
  constexpr int W = V::W;
  const R m = V::set1(mu), s = V::set1(sc), h = V::set1(sh);
  int64_t j = 0;
  for (; j + W <= n; j += W) V::storeu(out + j, V::fmadd(V::sub(V::loadu(in + j), m), s, h));
  for (; j < n; ++j) out[j] = (in[j] - mu) * sc + sh;
}

// ---- planar --------------------------------------------------------------------------------

template <class V>
void planar_forward(int64_t N, int64_t C, int64_t S, const typename V::T* x, const typename V::T* w,
                    const typename V::T* b, typename V::T eps, bool training, typename V::T* mean,
                    typename V::T* rstd, typename V::T* var, typename V::T* y) {
  using T = typename V::T;
  const int64_t M = N * S;
  const int nt = threads_for_work(double(N) * double(C) * double(S), kMinPerThread);
  parallel_items(nt, C, [&](int64_t c) {
    T mu, rs;
    if (training) {
      if (M == 0) {
        mean[c] = var[c] = rstd[c] = std::numeric_limits<T>::quiet_NaN();
        return;
      }
      const T x0 = x[c * S];
      double s1 = 0;
      for (int64_t n = 0; n < N; ++n) s1 += seg_sum<V, false>(x + (n * C + c) * S, S, x0);
      mu = T(double(x0) + s1 / double(M));
      double s2 = 0;
      for (int64_t n = 0; n < N; ++n) s2 += seg_sum<V, true>(x + (n * C + c) * S, S, mu);
      const double v = s2 / double(M);
      mean[c] = mu;
      var[c] = T(v);
      rs = rstd[c] = T(1.0 / std::sqrt(v + double(eps)));
    } else {
      mu = mean[c];
      rs = rstd[c];
    }
    const T sc = rs * (w ? w[c] : T(1)), sh = b ? b[c] : T(0);
    for (int64_t n = 0; n < N; ++n) seg_affine<V>(x + (n * C + c) * S, S, mu, sc, sh, y + (n * C + c) * S);
  });
}

template <class V>
void planar_backward(int64_t N, int64_t C, int64_t S, const typename V::T* g, const typename V::T* x,
                     const typename V::T* mean, const typename V::T* rstd, const typename V::T* w, bool training,
                     typename V::T* dx, typename V::T* dw, typename V::T* db) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int W = V::W;
  const int64_t M = N * S;
  const int nt = threads_for_work(double(N) * double(C) * double(S), kMinPerThread);
  parallel_items(nt, C, [&](int64_t c) {
    const T mu = mean[c], rs = rstd[c], wc = w ? w[c] : T(1);
    double sg = 0, sgd = 0;
    if (dw || db || (dx && training))
      for (int64_t n = 0; n < N; ++n) seg_sum_grad<V>(g + (n * C + c) * S, x + (n * C + c) * S, S, mu, &sg, &sgd);
    if (dw) dw[c] = T(sgd * double(rs));
    if (db) db[c] = T(sg);
    if (!dx) return;
    // dx = k1 (g - mg - (x - mu) kx); eval: k1 g
    const T k1 = wc * rs;
    const T mg = training && M > 0 ? T(sg / double(M)) : T(0);
    const T kx = training && M > 0 ? T(double(rs) * double(rs) * sgd / double(M)) : T(0);
    const R vk1 = V::set1(k1), vmg = V::set1(mg), vkx = V::set1(kx), vmu = V::set1(mu);
    for (int64_t n = 0; n < N; ++n) {
      const T* gs = g + (n * C + c) * S;
      const T* xs = x + (n * C + c) * S;
      T* ds = dx + (n * C + c) * S;
      int64_t j = 0;
      for (; j + W <= S; j += W) {
        const R t = V::sub(V::sub(V::loadu(gs + j), vmg), V::mul(V::sub(V::loadu(xs + j), vmu), vkx));
        V::storeu(ds + j, V::mul(vk1, t));
      }
      for (; j < S; ++j) ds[j] = k1 * ((gs[j] - mg) - (xs[j] - mu) * kx);
    }
  });
}

// ---- interleaved (rows of C contiguous channels) ---------------------------------------------

// part[k C + j] = sum over chunk k's rows of f(row, j), summed in T over blocks of kBlockRows
// rows and in double over the blocks; f writes its terms into blk.
template <typename T, class F>
void chunk_sums(int nt, int64_t chunks, int64_t M, int64_t C, double* part, F&& add_row) {
  parallel_items(nt, chunks, [&](int64_t k) {
    const int64_t r0 = chunk_start(k, chunks, M), r1 = chunk_start(k + 1, chunks, M);
    double* pk = part + k * C;
    Buf<T> blk(C);
    for (int64_t j = 0; j < C; ++j) pk[j] = 0;
    for (int64_t rb = r0; rb < r1; rb += kBlockRows) {
      for (int64_t j = 0; j < C; ++j) blk.p[j] = T(0);
      for (int64_t r = rb, re = std::min(r1, rb + kBlockRows); r < re; ++r) add_row(r, blk.p);
      for (int64_t j = 0; j < C; ++j) pk[j] += double(blk.p[j]);
    }
  });
}

// out[j] = sum over chunks in order of part[k C + j].
inline void combine(int64_t chunks, int64_t C, const double* part, double* out) {
  for (int64_t j = 0; j < C; ++j) {
    double s = part[j];
    for (int64_t k = 1; k < chunks; ++k) s += part[k * C + j];
    out[j] = s;
  }
}

template <typename T>
void interleaved_forward(int64_t M, int64_t C, const T* x, const T* w, const T* b, T eps, bool training, T* mean,
                         T* rstd, T* var, T* y) {
  const int nt = threads_for_work(double(M) * double(C), kMinPerThread);
  if (training) {
    if (M == 0) {
      for (int64_t j = 0; j < C; ++j) mean[j] = var[j] = rstd[j] = std::numeric_limits<T>::quiet_NaN();
      return;
    }
    const int64_t chunks = reduction_chunks(M, C);
    Buf<double> part(chunks * C), tot(C);
    const T* x0 = x;  // the first row: the shift of the mean pass
    chunk_sums<T>(nt, chunks, M, C, part.p, [&](int64_t r, T* blk) {
      const T* xr = x + r * C;
      for (int64_t j = 0; j < C; ++j) blk[j] += xr[j] - x0[j];
    });
    combine(chunks, C, part.p, tot.p);
    for (int64_t j = 0; j < C; ++j) mean[j] = T(double(x0[j]) + tot.p[j] / double(M));
    chunk_sums<T>(nt, chunks, M, C, part.p, [&](int64_t r, T* blk) {
      const T* xr = x + r * C;
      for (int64_t j = 0; j < C; ++j) {
        const T d = xr[j] - mean[j];
        blk[j] += d * d;
      }
    });
    combine(chunks, C, part.p, tot.p);
    for (int64_t j = 0; j < C; ++j) {
      const double v = tot.p[j] / double(M);
      var[j] = T(v);
      rstd[j] = T(1.0 / std::sqrt(v + double(eps)));
    }
  }
  Buf<T> sc(C), sh(C);
  for (int64_t j = 0; j < C; ++j) {
    sc.p[j] = rstd[j] * (w ? w[j] : T(1));
    sh.p[j] = b ? b[j] : T(0);
  }
  const int64_t blocks = (M + kBlockRows - 1) / kBlockRows;
  parallel_items(nt, blocks, [&](int64_t rb) {
    for (int64_t r = rb * kBlockRows, re = std::min(M, r + kBlockRows); r < re; ++r) {
      const T* xr = x + r * C;
      T* yr = y + r * C;
      for (int64_t j = 0; j < C; ++j) yr[j] = (xr[j] - mean[j]) * sc.p[j] + sh.p[j];
    }
  });
}

template <typename T>
void interleaved_backward(int64_t M, int64_t C, const T* g, const T* x, const T* mean, const T* rstd, const T* w,
                          bool training, T* dx, T* dw, T* db) {
  const int nt = threads_for_work(double(M) * double(C), kMinPerThread);
  Buf<double> sg(C), sgd(C);
  if (dw || db || (dx && training)) {
    const int64_t chunks = reduction_chunks(M, C);
    Buf<double> part(chunks * C);
    chunk_sums<T>(nt, chunks, M, C, part.p, [&](int64_t r, T* blk) {
      const T* gr = g + r * C;
      for (int64_t j = 0; j < C; ++j) blk[j] += gr[j];
    });
    combine(chunks, C, part.p, sg.p);
    chunk_sums<T>(nt, chunks, M, C, part.p, [&](int64_t r, T* blk) {
      const T* gr = g + r * C;
      const T* xr = x + r * C;
      for (int64_t j = 0; j < C; ++j) blk[j] += gr[j] * (xr[j] - mean[j]);
    });
    combine(chunks, C, part.p, sgd.p);
  } else {
    for (int64_t j = 0; j < C; ++j) sg.p[j] = sgd.p[j] = 0;
  }
  for (int64_t j = 0; j < C; ++j) {
    if (dw) dw[j] = T(sgd.p[j] * double(rstd[j]));
    if (db) db[j] = T(sg.p[j]);
  }
  if (!dx) return;
  Buf<T> k1(C), mg(C), kx(C);
  for (int64_t j = 0; j < C; ++j) {
    const double rs = double(rstd[j]);
    k1.p[j] = T(rs * double(w ? w[j] : T(1)));
    mg.p[j] = training && M > 0 ? T(sg.p[j] / double(M)) : T(0);
    kx.p[j] = training && M > 0 ? T(rs * rs * sgd.p[j] / double(M)) : T(0);
  }
  const int64_t blocks = (M + kBlockRows - 1) / kBlockRows;
  parallel_items(nt, blocks, [&](int64_t rb) {
    for (int64_t r = rb * kBlockRows, re = std::min(M, r + kBlockRows); r < re; ++r) {
      const T* gr = g + r * C;
      const T* xr = x + r * C;
      T* dr = dx + r * C;
      for (int64_t j = 0; j < C; ++j) dr[j] = k1.p[j] * ((gr[j] - mg.p[j]) - (xr[j] - mean[j]) * kx.p[j]);
    }
  });
}

template <class V>
void forward(int64_t N, int64_t C, int64_t S, bool interleaved, const typename V::T* x, const typename V::T* w,
             const typename V::T* b, typename V::T eps, bool training, typename V::T* mean, typename V::T* rstd,
             typename V::T* var, typename V::T* y) {
  if (interleaved || S == 1) interleaved_forward(N * S, C, x, w, b, eps, training, mean, rstd, var, y);
  else planar_forward<V>(N, C, S, x, w, b, eps, training, mean, rstd, var, y);
}

template <class V>
void backward(int64_t N, int64_t C, int64_t S, bool interleaved, const typename V::T* g, const typename V::T* x,
              const typename V::T* mean, const typename V::T* rstd, const typename V::T* w, bool training,
              typename V::T* dx, typename V::T* dw, typename V::T* db) {
  if (interleaved || S == 1) interleaved_backward(N * S, C, g, x, mean, rstd, w, training, dx, dw, db);
  else planar_backward<V>(N, C, S, g, x, mean, rstd, w, training, dx, dw, db);
}

}  // namespace bn_detail

template <typename T>
void batch_norm_forward_run(int64_t N, int64_t C, int64_t S, bool il, const T* x, const T* w, const T* b, T eps,
                            bool training, T* mean, T* rstd, T* var, T* y) {
  if constexpr (sizeof(T) == 4)
    bn_detail::forward<FUSEDOPS_VEC_F32>(N, C, S, il, x, w, b, eps, training, mean, rstd, var, y);
  else
    bn_detail::forward<FUSEDOPS_VEC_F64>(N, C, S, il, x, w, b, eps, training, mean, rstd, var, y);
}

template <typename T>
void batch_norm_backward_run(int64_t N, int64_t C, int64_t S, bool il, const T* g, const T* x, const T* mean,
                             const T* rstd, const T* w, bool training, T* dx, T* dw, T* db) {
  if constexpr (sizeof(T) == 4)
    bn_detail::backward<FUSEDOPS_VEC_F32>(N, C, S, il, g, x, mean, rstd, w, training, dx, dw, db);
  else
    bn_detail::backward<FUSEDOPS_VEC_F64>(N, C, S, il, g, x, mean, rstd, w, training, dx, dw, db);
}

template <typename T>
BatchNormKernels<T> batch_norm_table() {
  return {&batch_norm_forward_run<T>, &batch_norm_backward_run<T>};
}
template BatchNormKernels<float> batch_norm_table<float>();
template BatchNormKernels<double> batch_norm_table<double>();

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
