// AVX-512 GEMM: fp32 14 x 32 tile (28 zmm accumulators), fp64 14 x 16.
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

// GCC 12's AVX-512 intrinsics use self-initialised "undefined" registers that trip these.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define FUSEDOPS_WITH_AVX512 1
#define FUSEDOPS_ISA_NS avx512
#define FUSEDOPS_ISA_NAME "avx512 fp32 14x32 / fp64 14x16"
#define FUSEDOPS_VEC_F32 VecF32Avx512
#define FUSEDOPS_VEC_F64 VecF64Avx512
#define FUSEDOPS_MR_F32 14
#define FUSEDOPS_NV_F32 2
#define FUSEDOPS_MR_F64 14
#define FUSEDOPS_NV_F64 2
#include "gemm_isa.h"
#endif
