// AVX2 + FMA GEMM: fp32 6 x 16 tile (12 ymm accumulators), fp64 6 x 8.
#if defined(__x86_64__)
#include "gemm.h"
#include "../vec/isa_avx2.h"

#define FUSEDOPS_ISA_NAME "avx2 fp32 6x16 / fp64 6x8"
#define FUSEDOPS_MR_F32 6
#define FUSEDOPS_NV_F32 2
#define FUSEDOPS_MR_F64 6
#define FUSEDOPS_NV_F64 2
#include "gemm_isa.h"
#endif
