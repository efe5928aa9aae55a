// Row-parallel pointwise kernels that sit beside the GEMM in linear layers, instantiated per
// instruction set by gemm_<isa>.cpp (see gemm_isa.h for the scheme).
#pragma once

#include "activation_impl.h"

namespace fusedops::cpu::FUSEDOPS_ISA_NS {

// For a [M, N] gradient g (strides rsg, csg; expanded gradients have stride 0):
//   dz = g * act'(z)        when act != none (z: [M, N] row-major with ldz; dz row-major, N)
//   db[n] = sum_m dz[m, n]  when db != nullptr (dz taken as g when act == none)
// Rows are split into chunks fixed by M and N (parallel.h); each chunk sums its rows into its
// own row of partial sums, and the chunks' rows are added in order: the same bits for any
// thread count.
template <class V>
void bias_act_backward(int64_t M, int64_t N, const typename V::T* g, int64_t rsg, int64_t csg,
                       const typename V::T* z, int64_t ldz, typename V::T* dz, Activation act,
                       typename V::T* db) {
  using T = typename V::T;
  if (M <= 0 || N <= 0) {
    if (db) std::fill(db, db + std::max<int64_t>(N, 0), T(0));
    return;
  }
  const int nt = threads_for_work(double(M) * double(N), 16384);
  const int64_t chunks = reduction_chunks(M, N);
  std::vector<T> partial(db ? size_t(chunks) * N : 0, T(0));
  parallel_items(nt, chunks, [&](int64_t c) {
    T* acc = db ? partial.data() + size_t(c) * N : nullptr;
    std::vector<T> row;
    for (int64_t m = chunk_start(c, chunks, M), m1 = chunk_start(c + 1, chunks, M); m < m1; ++m) {
      const T* src = g + m * rsg;
      int64_t cs = csg;
      if (act != Activation::none) {
        T* out = dz + m * N;
        act_backward_row<V>(src, csg, z + m * ldz, out, N, act);
        src = out;
        cs = 1;
      }
      if (!acc) continue;
      if (cs != 1) {  // strided or expanded gradient: gather the row once
        row.resize(N);
        for (int64_t n = 0; n < N; ++n) row[n] = src[n * cs];
        src = row.data();
      }
      int64_t n = 0;
      for (; n + V::W <= N; n += V::W) V::storeu(acc + n, V::add(V::loadu(acc + n), V::loadu(src + n)));
      for (; n < N; ++n) acc[n] += src[n];
    }
  });
  if (db) sum_partials(nt, chunks, N, partial.data(), N, db);
}

// Sustained FMA rate of this instruction set: independent accumulator chains in registers,
// `threads` threads for about `seconds`. Returns GFLOP/s.
template <class V>
double fma_peak(int threads, double seconds) {
  using R = typename V::R;
  using T = typename V::T;
  double total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    R acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = V::set1(T(i) * T(0.01));
    const R b = V::set1(T(0.999)), c = V::set1(T(0.001));
    int64_t iters = 0;
    const double t0 = omp_get_wtime();
    double t1 = t0;
    while (t1 - t0 < seconds) {
      for (int rep = 0; rep < 100000; ++rep) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) acc[i] = V::fmadd(acc[i], b, c);
      }
      iters += 100000;
      t1 = omp_get_wtime();
    }
    T sink = T(0);
    for (int i = 0; i < 12; ++i) sink += V::hsum(acc[i]);
    // Keep the chains alive without printing: a NaN sum would make the rate 0.
    total += (sink == sink) ? double(iters) * 12 * 2 * V::W / (t1 - t0) / 1e9 : 0.0;
  }
  return total;
}

}  // namespace fusedops::cpu::FUSEDOPS_ISA_NS
