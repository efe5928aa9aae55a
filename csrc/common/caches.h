// What the CPU kernels keep between calls, and fusedops.empty_cache(): the scratch cache of the
// GEMM and convolution (cpu/kernels/scratch.h), the RNN block pool (fresh_output.h) and the
// cross-entropy gradient buffer (opt-in, cpu/loss.cpp). Declarations only: cache_bytes() and
// empty_caches() are defined in csrc/caches.cpp, above every layer whose caches they sum.
#pragma once

#include <cstddef>

namespace fusedops {

struct CacheBytes {
  size_t scratch, rnn_pool, loss;
};

CacheBytes cache_bytes();  // idle bytes held now
size_t empty_caches();     // frees them all; returns the bytes freed

size_t loss_cache_bytes();    // cpu/loss.cpp
size_t release_loss_cache();  // cpu/loss.cpp

}  // namespace fusedops
