// AVX-512 GEMM: fp32 14 x 32 tile (28 zmm accumulators), fp64 14 x 16.
#if defined(__x86_64__)
#include "gemm.h"
#include "../vec/isa_avx512.h"

#define FUSEDOPS_ISA_NAME "avx512 fp32 14x32 / fp64 14x16"
#define FUSEDOPS_MR_F32 14
#define FUSEDOPS_NV_F32 2
#define FUSEDOPS_MR_F64 14
#define FUSEDOPS_NV_F64 2
#define FUSEDOPS_ALT_MR_F32 8  // a second fp32 tile, 8 x 48 (gemm_isa.h)
#define FUSEDOPS_ALT_NV_F32 3
#include "gemm_isa.h"
#endif
