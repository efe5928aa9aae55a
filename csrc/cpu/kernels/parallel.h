// Work splitting that gives the same bits for any number of threads and stays right for any
// team OpenMP actually starts.
//
// A parallel region may get fewer threads than it asked for (OMP_THREAD_LIMIT, OMP_DYNAMIC, a
// region nested in the caller's), so work is split inside the region by the team it got
// (omp_get_num_threads()), never by the count asked for. Sums that cross rows are computed
// per chunk, the chunks fixed by the problem's sizes alone, and the chunks' partial sums are
// added in chunk order: the thread count changes who computes a chunk, never what is added
// to what.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace fusedops::cpu {

// The one thread-count rule of the CPU kernels. Every parallel region asks for
// threads_for_work(...) or pool_threads(), never omp_get_max_threads() itself, so the
// per-family cut-offs are named constants passed in here (kMinPerThread, ...).
//
// The whole pool (torch's thread setting, applied per calling thread: common/threads.h), or one
// inside a parallel region (ours or the caller's).
inline int pool_threads() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

// Threads to ask for: one per `per_thread` units of work, at most `max_items` (the count of
// independent items: rows, panels, chunks) and at most the pool; at least one, and one inside a
// parallel region.
inline int threads_for_work(double work, double per_thread, int64_t max_items = INT64_MAX) {
  if (omp_in_parallel()) return 1;
  const double want = std::min(work / per_thread, double(max_items));
  return want < 2 ? 1 : int(std::min<double>(omp_get_max_threads(), want));
}

// Chunks of a reduction over `rows` rows of `cols` values: about `per_chunk` values each, at
// most `max_chunks`, never more than rows. By the sizes alone.
inline int64_t reduction_chunks(int64_t rows, int64_t cols, int64_t per_chunk = 16384,
                                int64_t max_chunks = 16) {
  if (rows <= 1) return 1;
  const int64_t by_work = std::max<int64_t>(1, rows * std::max<int64_t>(cols, 1) / per_chunk);
  return std::clamp<int64_t>(by_work, 1, std::min(rows, max_chunks));
}

// First row of chunk c of `chunks` over `rows` rows.
inline int64_t chunk_start(int64_t c, int64_t chunks, int64_t rows) { return rows * c / chunks; }

// body(i) for every i in [0, n), contiguous ranges handed to the threads of the team that
// actually started (up to nt asked for).
template <class F>
void parallel_items(int nt, int64_t n, F&& body) {
  nt = int(std::min<int64_t>(nt, n));
  if (nt <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), k = omp_get_num_threads();
    for (int64_t i = n * t / k, e = n * (t + 1) / k; i < e; ++i) body(i);
  }
}

// out[j] = sum over c in order of part[c * ld + j], j < cols, columns split between threads.
template <typename T>
void sum_partials(int nt, int64_t chunks, int64_t cols, const T* part, int64_t ld, T* out) {
  const int64_t blocks = (cols + 255) / 256;
  parallel_items(cols * chunks >= 65536 ? nt : 1, blocks, [&](int64_t b) {
    const int64_t j1 = std::min(cols, (b + 1) * 256);
    for (int64_t j = b * 256; j < j1; ++j) {
      T s = part[j];
      for (int64_t c = 1; c < chunks; ++c) s += part[c * ld + j];
      out[j] = s;
    }
  });
}

}  // namespace fusedops::cpu
