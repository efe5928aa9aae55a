// AVX-512 flash attention: fp32 8 x 32 tile (16 zmm accumulators), 64 x 64 blocks;
// fp64 8 x 16, 64 x 64 blocks.
#if defined(__x86_64__)
#include "attention.h"
#include "vec/isa_avx512.h"

#define FUSEDOPS_ATTN_MR_F32 8
#define FUSEDOPS_ATTN_NV_F32 2
#define FUSEDOPS_ATTN_BM_F32 64
#define FUSEDOPS_ATTN_BN_F32 64
#define FUSEDOPS_ATTN_MR_F64 8
#define FUSEDOPS_ATTN_NV_F64 2
#define FUSEDOPS_ATTN_BM_F64 64
#define FUSEDOPS_ATTN_BN_F64 64
#include "attention_isa.h"
#endif
