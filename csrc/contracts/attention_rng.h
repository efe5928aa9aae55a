// The dropout decision of fused attention, shared by the CPU kernels and the CUDA kernels
// (host and device): a counter-based hash, so the forward and the backward (and the CPU and
// the GPU) regenerate the same mask from (seed, offset, b, i, j) without storing it.
//
// counter = offset + (b * L + i) * S + j; two rounds of the splitmix64 finaliser over
// counter ^ mix(seed) give 64 random bits, of which the top 32 are compared with
// p * 2^32: the element is kept with probability 1 - p.
#pragma once
#include <cstdint>

#include "hd.h"

namespace fusedops {

FUSEDOPS_HD inline uint64_t attention_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Threshold on the top 32 bits: kept iff bits >= threshold (p in [0, 1]).
FUSEDOPS_HD inline uint64_t attention_drop_threshold(double p) {
  if (!(p > 0.0)) return 0;
  if (p >= 1.0) return uint64_t(1) << 32;
  return uint64_t(p * 4294967296.0);
}

FUSEDOPS_HD inline uint64_t attention_seed_key(uint64_t seed) {
  return attention_mix64(seed + 0x9E3779B97F4A7C15ull);
}

FUSEDOPS_HD inline bool attention_keep(uint64_t seed_key, uint64_t counter, uint64_t threshold) {
  const uint64_t h = attention_mix64(attention_mix64(counter ^ seed_key) + seed_key);
  return (h >> 32) >= threshold;
}

}  // namespace fusedops
