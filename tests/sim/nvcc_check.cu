/* Compile check of the simulator self-test kernels and the PTX wrappers with real nvcc:
     nvcc -std=c++20 -arch=sm_80 -Werror all-warnings -c tests/sim/nvcc_check.cu
   Every kernel is launched once through LAUNCH so that every template is instantiated. */
#define CUDASIM_SELFTEST_RACE 1
#define CUDASIM_SELFTEST_OOB 1
#include "sim_selftest.cuh"

using namespace sim_selftest;

void launch_all(cudaStream_t s, float* f, int* i, unsigned* u, double* d, __half* h, __nv_bfloat16* b,
                std::uint16_t* u16, std::uint32_t* u32) {
  LAUNCH(sgemm_tiled<16>, dim3(2, 2), dim3(16, 16), 0, s, f, f, f, 32, 32, 32);
  LAUNCH(softmax_rows, dim3(1), dim3(256), 0, s, f, f, 8, 100);
  LAUNCH(block_reduce, dim3(8), dim3(128), 128 * sizeof(float), s, f, 1000, f, i);
  LAUNCH(axpy_16bit, dim3(1), dim3(128), 0, s, 2.f, h, h, b, b, 128);
  LAUNCH(warp_ops, dim3(1), dim3(32), 0, s, i, 32, 0);
  LAUNCH(early_exit, dim3(1), dim3(256), 0, s, i, 200, 4);
  LAUNCH(atomics, dim3(1), dim3(64), 0, s, i, u, f, d, h);
  LAUNCH(geometry, dim3(2, 2, 2), dim3(4, 4, 2), 0, s, u);
  LAUNCH(smem_fill, dim3(1), dim3(64), 256, s, u);
  LAUNCH(divergent_syncthreads, dim3(1), dim3(64), 0, s, i);
  LAUNCH(barrier_deadlock, dim3(1), dim3(64), 0, s, i);
  LAUNCH(mismatched_masks, dim3(1), dim3(32), 0, s, i);
  LAUNCH(traps, dim3(1), dim3(32), 0, s, i);
  LAUNCH((ldmatrix_fragments<1, false>), dim3(1), dim3(32), 0, s, u16, u32);
  LAUNCH((ldmatrix_fragments<2, false>), dim3(1), dim3(32), 0, s, u16, u32);
  LAUNCH((ldmatrix_fragments<4, false>), dim3(1), dim3(32), 0, s, u16, u32);
  LAUNCH((ldmatrix_fragments<1, true>), dim3(1), dim3(32), 0, s, u16, u32);
  LAUNCH((ldmatrix_fragments<2, true>), dim3(1), dim3(32), 0, s, u16, u32);
  LAUNCH((ldmatrix_fragments<4, true>), dim3(1), dim3(32), 0, s, u16, u32);
  LAUNCH(mma_16x8x16<__half>, dim3(1), dim3(32), 0, s, h, h, f);
  LAUNCH(mma_16x8x16<__nv_bfloat16>, dim3(1), dim3(32), 0, s, b, b, f);
  LAUNCH(mma_16x8x8_tf32, dim3(1), dim3(32), 0, s, f, f, f);
  LAUNCH(cp_async_pipeline<true>, dim3(1), dim3(64), 2048, s, f, 5, 4, f);
  LAUNCH(cp_async_pipeline<false>, dim3(1), dim3(64), 2048, s, f, 5, 4, f);
  LAUNCH(cp_async_small, dim3(1), dim3(32), 0, s, f, f, 50);
  LAUNCH(sync_rounds, dim3(1), dim3(256), 0, s, i, 10);
  LAUNCH(racy_reverse, dim3(1), dim3(64), 0, s, f, f);
  LAUNCH(out_of_bounds, dim3(1), dim3(128), 0, s, f, 100);
}
