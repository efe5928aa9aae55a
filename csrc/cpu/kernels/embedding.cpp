// Embedding kernels (see embedding.h). Portable code: copies and adds of whole rows, which the
// compiler vectorises; both passes are bound by memory.
#include "embedding.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fusedops::cpu {
namespace {

// bytes zeros at p with streaming stores where the CPU has them (SSE2, every x86-64): the rows
// no token touches are most of a large table's gradient, and written around the caches they
// cost no read of the line first (the gain was lost in the noise of a loaded machine here).
inline void zero_bytes(void* p, size_t bytes) {
#if defined(__x86_64__)
  char* c = static_cast<char*>(p);
  const size_t head = std::min(bytes, size_t((16 - reinterpret_cast<uintptr_t>(c) % 16) % 16));
  std::memset(c, 0, head);
  c += head;
  bytes -= head;
  const __m128i z = _mm_setzero_si128();
  for (; bytes >= 16; bytes -= 16, c += 16) _mm_stream_si128(reinterpret_cast<__m128i*>(c), z);
  std::memset(c, 0, bytes);
#else
  std::memset(p, 0, bytes);
#endif
}

inline void store_fence() {
#if defined(__x86_64__)
  _mm_sfence();
#endif
}

}  // namespace

template <typename I>
int64_t embedding_first_bad_index(int64_t n, const I* idx, int64_t V) {
  for (int64_t t = 0; t < n; ++t)
    if (int64_t(idx[t]) < 0 || int64_t(idx[t]) >= V) return t;
  return -1;
}

template <typename I>
void embedding_forward(int64_t n, int64_t D, const I* idx, const void* w, int64_t ldw, void* y, int64_t elem) {
  if (n <= 0 || D <= 0) return;
  const size_t row = size_t(D * elem);
  const char* wb = static_cast<const char*>(w);
  char* yb = static_cast<char*>(y);
  const int nt = threads_for_work(double(n) * double(D), 1 << 16);
  parallel_items(nt, n, [&](int64_t t) {
    std::memcpy(yb + size_t(t) * row, wb + size_t(int64_t(idx[t]) * ldw * elem), row);
  });
}

template <typename T, typename I>
void embedding_backward(int64_t n, int64_t V, int64_t D, const I* idx, const T* g, int64_t padding_idx,
                        bool scale_by_freq, T* dw) {
  if (V <= 0 || D <= 0) return;
  // start[v]..start[v + 1]: the positions of row v's tokens in `order`, in token order
  std::vector<int64_t> start(size_t(V) + 1, 0), order(size_t(std::max<int64_t>(n, 1)));
  for (int64_t t = 0; t < n; ++t) ++start[size_t(idx[t]) + 1];
  for (int64_t v = 0; v < V; ++v) start[v + 1] += start[v];
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t t = 0; t < n; ++t) order[size_t(fill[size_t(idx[t])]++)] = t;
  }
  auto do_row = [&](int64_t v) {
    T* out = dw + v * D;
    const int64_t s0 = start[v], s1 = start[v + 1];
    if (s0 == s1 || v == padding_idx) {
      zero_bytes(out, size_t(D) * sizeof(T));
      return;
    }
    std::memcpy(out, g + order[s0] * D, size_t(D) * sizeof(T));
    for (int64_t s = s0 + 1; s < s1; ++s) {
      const T* src = g + order[s] * D;
      for (int64_t j = 0; j < D; ++j) out[j] += src[j];
    }
    if (scale_by_freq) {
      const T inv = T(1) / T(s1 - s0);
      for (int64_t j = 0; j < D; ++j) out[j] *= inv;
    }
  };
  // rows split by work (a row's zeros or first copy, plus one add per further token): the
  // range a thread gets never changes what a row's sum is
  const int64_t total = V + n;
  auto row_at = [&](int64_t w) {  // the first row v with v + start[v] >= w
    int64_t lo = 0, hi = V;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (mid + start[mid] >= w) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  };
  const int nt = threads_for_work(double(total) * double(D), 1 << 16);
  if (nt <= 1) {
    for (int64_t v = 0; v < V; ++v) do_row(v);
    store_fence();
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), k = omp_get_num_threads();
    const int64_t v1 = t + 1 == k ? V : row_at(total * (t + 1) / k);
    for (int64_t v = row_at(total * t / k); v < v1; ++v) do_row(v);
    store_fence();  // the streaming stores are visible before the region ends
  }
}

template int64_t embedding_first_bad_index<int64_t>(int64_t, const int64_t*, int64_t);
template int64_t embedding_first_bad_index<int32_t>(int64_t, const int32_t*, int64_t);
template void embedding_forward<int64_t>(int64_t, int64_t, const int64_t*, const void*, int64_t, void*, int64_t);
template void embedding_forward<int32_t>(int64_t, int64_t, const int32_t*, const void*, int64_t, void*, int64_t);
template void embedding_backward<float, int64_t>(int64_t, int64_t, int64_t, const int64_t*, const float*, int64_t,
                                                 bool, float*);
template void embedding_backward<float, int32_t>(int64_t, int64_t, int64_t, const int32_t*, const float*, int64_t,
                                                 bool, float*);
template void embedding_backward<double, int64_t>(int64_t, int64_t, int64_t, const int64_t*, const double*,
                                                  int64_t, bool, double*);
template void embedding_backward<double, int32_t>(int64_t, int64_t, int64_t, const int32_t*, const double*,
                                                  int64_t, bool, double*);

}  // namespace fusedops::cpu
