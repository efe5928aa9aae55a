// AVX2 + FMA GEMM: fp32 6 x 16 tile (12 ymm accumulators), fp64 6 x 8.
#if defined(__x86_64__)
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <immintrin.h>
#include <omp.h>

#include "gemm.h"

#pragma GCC target("avx2,fma")
#define FUSEDOPS_WITH_AVX2 1
#define FUSEDOPS_ISA_NS avx2
#define FUSEDOPS_ISA_NAME "avx2 fp32 6x16 / fp64 6x8"
#define FUSEDOPS_VEC_F32 VecF32Avx2
#define FUSEDOPS_VEC_F64 VecF64Avx2
#define FUSEDOPS_MR_F32 6
#define FUSEDOPS_NV_F32 2
#define FUSEDOPS_MR_F64 6
#define FUSEDOPS_NV_F64 2
#include "gemm_isa.h"
#endif
