// Embedding, torch-free.
//
// forward   y[t, :] = w[idx[t], :] for the n indices (rows of D elements; w's rows ldw apart,
//           y contiguous): row copies, indices split over the threads. Element-size generic.
// backward  dw[v, :] = sum over t with idx[t] == v of g[t, :] (times 1 / count(v) with
//           scale_by_freq), dw[padding_idx, :] = 0. A stable counting sort buckets the token
//           positions by row (O(n + V), serial: a few microseconds for 8192 tokens); then each
//           thread owns a range of rows and writes each of them once: zeros, or the sum of its
//           tokens' gradient rows in token order. No atomics, and since every row is summed by
//           one thread in token order, the same bits for any thread count (the ranges are only
//           balanced by work: rows plus tokens).
#pragma once
#include <cstdint>

namespace fusedops::cpu {

// The first position t with idx[t] outside [0, V), or -1 when all are in range. I: int64_t or
// int32_t.
template <typename I>
int64_t embedding_first_bad_index(int64_t n, const I* idx, int64_t V);

// Indices must be in range (embedding_first_bad_index). elem: bytes per element.
template <typename I>
void embedding_forward(int64_t n, int64_t D, const I* idx, const void* w, int64_t ldw, void* y, int64_t elem);

// g: [n, D] contiguous; dw: [V, D] contiguous, every element written. padding_idx < 0: none.
template <typename T, typename I>
void embedding_backward(int64_t n, int64_t V, int64_t D, const I* idx, const T* g, int64_t padding_idx,
                        bool scale_by_freq, T* dw);

}  // namespace fusedops::cpu
