// Dropout, torch-free: y[i] = keep(i) ? x[i] * scale : 0 over n contiguous elements, with
// scale = 1 / (1 - p) (0 when p = 1). keep(i) is the counter-based hash of
// contracts/attention_rng.h at counter = offset + i under `seed`: nothing is stored, so the
// backward (dx = keep(i) ? g[i] * scale : 0, the same function of g) regenerates the mask, and
// the CUDA kernel, which uses the same hash and counters, draws the same mask.
//
// Elements are independent, so the result is the same bits for any thread count.
#pragma once
#include <cstdint>

namespace fusedops::cpu {

// T: float, double, or uint16_t holding bfloat16 bits (computed in fp32, rounded once).
template <typename T>
void dropout(int64_t n, const T* x, T* y, double p, uint64_t seed, uint64_t offset);

}  // namespace fusedops::cpu
