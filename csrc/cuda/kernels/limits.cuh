/* CUDA's launch limits (compute capability 8.0 and 9.0) that the plans and the bindings check
   against, named once; and the block count of a grid-stride launch. Torch-free. */
#pragma once
#include "ptx.cuh"

#include <cstddef>
#include <cstdint>

namespace fusedops::FUSEDOPS_CUDA_NS {

constexpr int64_t kMaxGridX = 2147483647;  // grid.x: 2^31 - 1 blocks
constexpr int64_t kMaxGridYZ = 65535;      // grid.y and grid.z
// Dynamic shared memory a launch gets without opting in (cudaFuncAttributeMaxDynamicSharedMemorySize).
constexpr size_t kDefaultSmemBytes = 48 * 1024;

// Blocks of `threads` threads for a grid-stride loop over n items: enough to cover them, at
// least 1, at most max_blocks (later items are taken by the loop).
inline unsigned grid_stride_blocks(int64_t n, int64_t threads, int64_t max_blocks) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : b > max_blocks ? max_blocks : b);
}

}  // namespace fusedops::FUSEDOPS_CUDA_NS
