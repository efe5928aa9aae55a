// AVX2 + FMA flash attention: fp32 6 x 16 tile (12 ymm accumulators), 96 query x 48 key blocks;
// fp64 6 x 8, 48 x 48 blocks.
#if defined(__x86_64__)
#include "attention.h"
#include "vec/isa_avx2.h"

#define FUSEDOPS_ATTN_MR_F32 6
#define FUSEDOPS_ATTN_NV_F32 2
#define FUSEDOPS_ATTN_BM_F32 96
#define FUSEDOPS_ATTN_BN_F32 48
#define FUSEDOPS_ATTN_MR_F64 6
#define FUSEDOPS_ATTN_NV_F64 2
#define FUSEDOPS_ATTN_BM_F64 48
#define FUSEDOPS_ATTN_BN_F64 48
#include "attention_isa.h"
#endif
